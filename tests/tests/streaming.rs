//! Layers stream: memory stays flat in the binary's size, building and pushing, and an
//! interrupted build leaves no partial blob under a digest name and can simply be rerun.

use std::fs::File;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use imgpack_e2e::registry::{Registry, Setup};
use imgpack_e2e::*;

/// A static ELF header followed by `size` bytes of zeros, without writing them
/// (a sparse file): a huge binary costs no disk and reads fast.
fn sparse_binary(path: &Path, size: u64) {
    write_static_elf(path, Arch::Amd64, b"header");
    File::options()
        .write(true)
        .open(path)
        .unwrap()
        .set_len(size)
        .unwrap();
}

/// A static ELF followed by noise, `size` bytes in all, written a piece at a time (the file is
/// larger than the memory bound it is used to check).
fn incompressible_binary(path: &Path, size: usize) {
    const PIECE: usize = 1 << 20;
    write_static_elf(path, Arch::Amd64, &noise(PIECE, 0));
    let mut file = File::options().append(true).open(path).unwrap();
    let mut written = std::fs::metadata(path).unwrap().len() as usize;
    for seed in 1.. {
        if written >= size {
            break;
        }
        let piece = noise(PIECE.min(size - written), seed);
        file.write_all(&piece).unwrap();
        written += piece.len();
    }
}

/// Runs `command` and returns its own peak RSS in MiB (see [`PeakRss`]), after checking it
/// succeeded.
fn peak_rss_mib(command: &mut Command) -> u64 {
    let mut measured = PeakRss::new(command).expect("GNU time is installed");
    let status = measured.command().stdout(Stdio::null()).status().unwrap();
    assert!(status.success(), "{command:?} failed");
    measured.peak_kib() / 1024
}

/// Far below the layer's size: a copy of the blob (compressed or not) in memory cannot fit.
const RSS_BOUND_MIB: u64 = 96;

#[test]
fn memory_stays_flat_for_a_large_binary_built_and_pushed() {
    if !have_tool("time") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let binary = dir.path().join("big");
    // Noise: the compressed layer is as large as the binary, so buffering either one shows.
    let size: usize = 256 << 20;
    incompressible_binary(&binary, size);
    let peak_mib = peak_rss_mib(
        imgpack()
            .current_dir(dir.path())
            .args([
                "build",
                "--quiet",
                "--compression-level",
                "1",
                "--binary",
                "linux/amd64=big",
                "--output",
                "oci:out:v1",
            ])
            .env("IMGPACK_TMPDIR", dir.path()),
    );
    let layout = Layout::new(dir.path().join("out"));
    let blobs = layout.verified_blobs();
    assert!(blobs.len() >= 6);
    let manifest = layout.json(layout.entry("v1")["digest"].as_str().unwrap());
    let app_layer = manifest["layers"][3]["size"].as_u64().unwrap();
    assert!(
        app_layer >= size as u64,
        "the app layer shrank to {app_layer} bytes"
    );
    eprintln!(
        "build: peak RSS {peak_mib} MiB for a {} MiB layer",
        app_layer >> 20
    );
    assert!(
        peak_mib < RSS_BOUND_MIB,
        "imgpack build: peak RSS {peak_mib} MiB grows with the {} MiB layer",
        app_layer >> 20
    );

    // The push streams the layer from the layout to the registry.
    let Some(registry) = Registry::start(Setup::Plain) else {
        return;
    };
    let target = format!("{}/team/big:v1", registry.host());
    let peak_mib = peak_rss_mib(imgpack().current_dir(dir.path()).args([
        "push",
        "--quiet",
        "oci:out:v1",
        &target,
    ]));
    assert_eq!(
        registry.manifest_digest("team/big", "v1").as_deref(),
        layout.entry("v1")["digest"].as_str()
    );
    eprintln!(
        "push: peak RSS {peak_mib} MiB for a {} MiB layer",
        app_layer >> 20
    );
    assert!(
        peak_mib < RSS_BOUND_MIB,
        "imgpack push: peak RSS {peak_mib} MiB grows with the {} MiB layer",
        app_layer >> 20
    );
}

#[test]
fn an_interrupted_build_leaves_no_partial_blob_and_can_be_rerun() {
    let dir = tempfile::tempdir().unwrap();
    let staging = dir.path().join("staging");
    std::fs::create_dir(&staging).unwrap();
    sparse_binary(&dir.path().join("big"), 4 << 30);
    let args = [
        "build",
        "--quiet",
        "--binary",
        "linux/amd64=big",
        "--output",
        "oci:out:v1",
    ];

    let mut child = imgpack()
        .current_dir(dir.path())
        .args(args)
        .env("IMGPACK_TMPDIR", &staging)
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    // Kill it once the app layer is being compressed into a partial blob.
    let deadline = Instant::now() + Duration::from_secs(60);
    while !partial_blob_growing(&staging) {
        assert!(
            child.try_wait().unwrap().is_none(),
            "the build finished before it could be interrupted"
        );
        assert!(Instant::now() < deadline, "no partial blob appeared");
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();

    // No tag, no index.json pointing at anything missing; whatever blobs exist are whole.
    let out = dir.path().join("out");
    assert!(
        !out.join("index.json").exists(),
        "a killed build left an index.json"
    );
    for leftover in walk(&staging) {
        let name = leftover.file_name().unwrap().to_str().unwrap().to_owned();
        if leftover.parent().unwrap().ends_with("blobs/sha256") && !name.starts_with('.') {
            let bytes = std::fs::read(&leftover).unwrap();
            assert_eq!(imgpack_blob::Digest::of_bytes(&bytes).hex(), name);
        }
    }

    // Rerun with a small binary in its place: completes, layout whole.
    sparse_binary(&dir.path().join("big"), 1 << 20);
    let output = run_expect(
        imgpack()
            .current_dir(dir.path())
            .args(args)
            .env("IMGPACK_TMPDIR", &staging),
        true,
    );
    let layout = Layout::new(&out);
    layout.verified_blobs();
    assert_eq!(layout.entry("v1")["digest"], printed_digest(&output));
}

fn partial_blob_growing(staging: &Path) -> bool {
    walk(staging).iter().any(|path| {
        path.file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with(".partial-"))
            && std::fs::metadata(path).is_ok_and(|m| m.len() > 64 * 1024)
    })
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut found = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                found.extend(walk(&path));
            } else {
                found.push(path);
            }
        }
    }
    found
}
