//! Local files imgpack reads whole are bounded like a registry's answers
//! (issue 19, item 6): a FIFO where a key, a certificate bundle, a config,
//! an index.json or a cache entry should be ends the run at once with one
//! line instead of blocking it forever, and a 1 GiB (sparse) index.json or
//! imgpack.toml is refused without reading it into memory.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use imgpack_e2e::*;

/// Long enough for a loaded CI machine, far shorter than "forever".
const HANG: Duration = Duration::from_secs(60);

fn mkfifo(path: &Path) {
    let c_path = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c_path.as_ptr(), 0o600) }, 0);
}

/// What a run's error line must say.
type Check<'a> = &'a dyn Fn(&str) -> bool;

/// Runs every command at once; each must exit within [`HANG`] (it is killed
/// otherwise) with one error line, which `check` must accept. Every case is
/// reported, so a failure names all the files that blocked.
fn all_refused_in_time(cases: Vec<(&str, Command, Check)>) {
    let mut running: Vec<_> = cases
        .into_iter()
        .map(|(what, mut command, check)| {
            let child = command
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap();
            (what, child, check)
        })
        .collect();
    let started = Instant::now();
    while started.elapsed() < HANG
        && running
            .iter_mut()
            .any(|(_, child, _)| child.try_wait().unwrap().is_none())
    {
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut failures = Vec::new();
    for (what, mut child, check) in running {
        if child.try_wait().unwrap().is_none() {
            let _ = child.kill();
            let _ = child.wait();
            failures.push(format!(
                "{what}: still running after {HANG:?} (blocked on a FIFO?)"
            ));
            continue;
        }
        let line = error_line(&child.wait_with_output().unwrap());
        if !check(&line) {
            failures.push(format!("{what}: {line}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

fn project() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    write_static_elf(&dir.path().join("app"), Arch::Amd64, b"local files");
    dir
}

fn build_in(dir: &Path) -> Command {
    let mut command = imgpack();
    command
        .current_dir(dir)
        .args(["build", "-q", "--binary", "linux/amd64=app"]);
    command
}

#[test]
fn a_fifo_where_a_file_is_read_ends_the_run_at_once_with_one_line() {
    let dir = project();
    let d = dir.path();
    mkfifo(&d.join("fifo"));
    // A layout whose index.json is a FIFO, read by push and added to by build.
    std::fs::create_dir_all(d.join("layout")).unwrap();
    std::fs::write(
        d.join("layout/oci-layout"),
        r#"{"imageLayoutVersion":"1.0.0"}"#,
    )
    .unwrap();
    mkfifo(&d.join("layout/index.json"));
    let names_the_fifo = |line: &str| line.contains("fifo is a FIFO, not a regular file");
    let names_the_index = |line: &str| line.contains("index.json is a FIFO, not a regular file");
    let ca_certs = |line: &str| line.contains("--ca-certs") && names_the_fifo(line);
    let with = |mut command: Command, args: &[&str]| {
        command.current_dir(d).args(args);
        command
    };
    all_refused_in_time(vec![
        (
            "--ca-certs FIFO",
            with(build_in(d), &["--ca-certs", "fifo", "-o", "oci:out1"]),
            &ca_certs,
        ),
        (
            "--sign-key FIFO",
            with(
                build_in(d),
                &["--push", "127.0.0.1:1/team/app:v1", "--sign-key", "fifo"],
            ),
            &names_the_fifo,
        ),
        (
            "verify --key FIFO",
            with(
                imgpack(),
                &["verify", "-q", "127.0.0.1:1/team/app:v1", "--key", "fifo"],
            ),
            &names_the_fifo,
        ),
        (
            "--config FIFO",
            with(build_in(d), &["--config", "fifo", "-o", "oci:out2"]),
            &names_the_fifo,
        ),
        (
            "push of a layout with a FIFO index.json",
            with(
                imgpack(),
                &["push", "-q", "oci:layout:v1", "127.0.0.1:1/team/app:v1"],
            ),
            &names_the_index,
        ),
        (
            "build into a layout with a FIFO index.json",
            with(build_in(d), &["-o", "oci:layout:v2"]),
            &names_the_index,
        ),
    ]);
    assert!(
        !d.join("out1").exists() && !d.join("out2").exists(),
        "an output was written"
    );
}

#[test]
fn a_cache_entry_replaced_by_a_fifo_ends_the_build_at_once_with_one_line() {
    let dir = project();
    let d = dir.path();
    let cache = d.join("cache");
    run_expect(
        build_in(d)
            .env("IMGPACK_CACHE_DIR", &cache)
            .args(["-o", "oci:first"]),
        true,
    );
    let entries = cache.join("layers/entries");
    let entry = std::fs::read_dir(&entries)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    std::fs::remove_file(&entry).unwrap();
    mkfifo(&entry);
    let mut second = build_in(d);
    second
        .env("IMGPACK_CACHE_DIR", &cache)
        .args(["-o", "oci:second"]);
    let names_the_entry = |line: &str| {
        line.contains(&format!("{} is a FIFO", entry.display())) && line.contains("--no-cache")
    };
    all_refused_in_time(vec![(
        "a FIFO in the layer cache",
        second,
        &names_the_entry,
    )]);
}

/// A sparse file of 1 GiB: no disk, but a reader that trusts its size
/// allocates all of it.
fn sparse_gib(path: &Path) {
    let file = std::fs::File::create(path).unwrap();
    file.set_len(1 << 30).unwrap();
}

/// Runs `command` and returns its exit code, stderr and peak RSS in KiB: imgpack's own
/// peak, measured by GNU time (see PeakRss), not this test process's.
/// None (a skip) without GNU time outside IMGPACK_E2E=1.
fn run_measured(command: &mut Command) -> Option<(i32, String, u64)> {
    let mut measured = PeakRss::new(command)?;
    let output = measured
        .command()
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&output.stderr).into_owned();
    Some((output.status.code().unwrap_or(-1), err, measured.peak_kib()))
}

#[test]
fn a_gib_index_json_or_config_is_refused_in_bounded_memory() {
    let dir = project();
    let d = dir.path();
    std::fs::create_dir_all(d.join("layout")).unwrap();
    std::fs::write(
        d.join("layout/oci-layout"),
        r#"{"imageLayoutVersion":"1.0.0"}"#,
    )
    .unwrap();
    sparse_gib(&d.join("layout/index.json"));
    sparse_gib(&d.join("big.toml"));
    let runs: [(&str, Command); 2] = [
        ("push of a layout with a 1 GiB index.json", {
            let mut command = imgpack();
            command
                .current_dir(d)
                .args(["push", "-q", "oci:layout:v1", "127.0.0.1:1/team/app:v1"]);
            command
        }),
        ("--config of 1 GiB", {
            let mut command = build_in(d);
            command.args(["--config", "big.toml", "-o", "oci:out"]);
            command
        }),
    ];
    let mut failures = Vec::new();
    for (what, mut command) in runs {
        let Some((code, err, peak_kib)) = run_measured(&mut command) else {
            return;
        };
        eprintln!("{what}: exit {code}, peak RSS {peak_kib} KiB");
        if code != 1 || !err.contains("is 1073741824 bytes, more than the") {
            failures.push(format!("{what}: exit {code}: {err}"));
        }
        if peak_kib >= 64 * 1024 {
            failures.push(format!("{what}: peak RSS {peak_kib} KiB"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert!(!d.join("out").exists(), "an output was written");
}
