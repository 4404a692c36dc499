//! The layer cache and parallel compression through imgpack's command line:
//! the same digest for any `--threads`, layers taken from the cache when
//! nothing changed and written when anything did, builds sharing one cache at
//! once, a damaged entry rebuilt, and `imgpack cache`.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use imgpack_e2e::*;

/// A binary that compresses like code (several 128 KiB gzip blocks, long
/// repeats) with a little noise, so blocks really refer back into each other.
fn binary(dir: &Path, seed: u64) {
    let mut payload = Vec::new();
    for round in 0..12u64 {
        payload.extend(b"func main() { http.ListenAndServe(\":8080\", router) }\n".repeat(2_000));
        payload.extend(noise(20_000, seed + round));
    }
    write_static_elf(&dir.join("api"), Arch::Amd64, &payload);
}

fn build_in(dir: &Path, cache: &Path, args: &[&str]) -> Command {
    let mut command = imgpack();
    command
        .current_dir(dir)
        .env("IMGPACK_CACHE_DIR", cache)
        // Layouts are compared blob for blob: provenance records each build's real times.
        .args([
            "build",
            "--provenance",
            "false",
            "--binary",
            "linux/amd64=api",
        ])
        .args(args);
    command
}

fn build(dir: &Path, cache: &Path, args: &[&str]) -> Output {
    run_expect(&mut build_in(dir, cache, args), true)
}

/// How many layers the build took from the cache and how many it wrote.
fn cached_and_written(output: &Output) -> (usize, usize) {
    let log = stderr(output);
    let count = |what: &str| {
        log.lines()
            .filter(|line| line.starts_with("imgpack: layer ") && line.contains(what))
            .count()
    };
    (count(" bytes, cached): "), count(" bytes, written): "))
}

#[test]
fn thread_counts_give_the_same_image() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    binary(d, 1);
    let cache = d.join("cache");
    for compression in ["gzip", "zstd"] {
        let digests: Vec<String> = ["1", "2", "8"]
            .iter()
            .map(|threads| {
                let layout = format!("oci:{compression}-{threads}");
                let output = build(
                    d,
                    &cache,
                    &[
                        "--no-cache",
                        "--threads",
                        threads,
                        "--compression",
                        compression,
                        "-o",
                        &layout,
                    ],
                );
                assert_eq!(
                    cached_and_written(&output).0,
                    0,
                    "--no-cache used the cache"
                );
                printed_digest(&output)
            })
            .collect();
        assert!(
            digests.iter().all(|d| *d == digests[0]),
            "{compression}: {digests:?}"
        );
    }
    // IMGPACK_THREADS is --threads too.
    let output = run_expect(
        build_in(d, &cache, &["--no-cache", "-o", "oci:env"]).env("IMGPACK_THREADS", "3"),
        true,
    );
    let gzip_one = build(
        d,
        &cache,
        &["--no-cache", "--threads", "1", "-o", "oci:again"],
    );
    assert_eq!(printed_digest(&output), printed_digest(&gzip_one));
    let err =
        one_error_line(build_in(d, &cache, &["-o", "oci:bad"]).env("IMGPACK_THREADS", "many"));
    assert!(
        err.contains("IMGPACK_THREADS=many is not a thread count"),
        "{err}"
    );

    // The multi-block gzip layers are plain gzip to other readers: GNU gzip, and Go's reader.
    let layout = Layout::new(d.join("gzip-8"));
    let app_layer = app_layer_digest(&layout);
    let blob = layout
        .dir
        .join("blobs/sha256")
        .join(app_layer.strip_prefix("sha256:").unwrap());
    assert!(std::fs::metadata(&blob).unwrap().len() > 3 * 128 * 1024 / 10);
    let status = Command::new("gzip")
        .arg("-t")
        .stdin(std::fs::File::open(&blob).unwrap())
        .status()
        .unwrap();
    assert!(status.success(), "gzip -t rejects the layer");
    if have_tool("go") {
        go_reads_gzip(d, &blob);
    }
}

/// The last layer of the image's one manifest: the app layer.
fn app_layer_digest(layout: &Layout) -> String {
    let manifest = layout.json(layout.index()["manifests"][0]["digest"].as_str().unwrap());
    let layers = manifest["layers"].as_array().unwrap();
    layers.last().unwrap()["digest"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// Go's compress/gzip (what skopeo, umoci and containerd use) reads the
/// layer whole, with its CRC and length, to the same bytes as flate2.
fn go_reads_gzip(dir: &Path, blob: &Path) {
    let program = dir.join("gunzip.go");
    std::fs::write(
        &program,
        "package main\n\nimport (\n\t\"compress/gzip\"\n\t\"crypto/sha256\"\n\t\"fmt\"\n\t\"io\"\n\t\"os\"\n)\n\n\
         func main() {\n\tr, err := gzip.NewReader(os.Stdin)\n\tif err != nil {\n\t\tpanic(err)\n\t}\n\
         \tr.Multistream(false)\n\th := sha256.New()\n\tif _, err := io.Copy(h, r); err != nil {\n\t\tpanic(err)\n\t}\n\
         \tif err := r.Close(); err != nil {\n\t\tpanic(err)\n\t}\n\tfmt.Printf(\"sha256:%x\\n\", h.Sum(nil))\n}\n",
    )
    .unwrap();
    let output = run_expect(
        Command::new("go")
            .args(["run", "gunzip.go"])
            .current_dir(dir)
            .env("GO111MODULE", "off")
            .env("GOCACHE", dir.join("gocache"))
            .env("GOFLAGS", "")
            .stdin(std::fs::File::open(blob).unwrap()),
        true,
    );
    let go_digest = String::from_utf8(output.stdout).unwrap().trim().to_owned();
    let mut tar = Vec::new();
    std::io::Read::read_to_end(
        &mut flate2::read::GzDecoder::new(std::fs::File::open(blob).unwrap()),
        &mut tar,
    )
    .unwrap();
    assert_eq!(go_digest, imgpack_blob::Digest::of_bytes(&tar).to_string());
}

#[test]
fn unchanged_layers_come_from_the_cache_and_changed_ones_are_written() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    binary(d, 2);
    let cache = d.join("cache");
    let first = build(d, &cache, &["-o", "oci:first"]);
    assert_eq!(cached_and_written(&first), (0, 4), "{}", stderr(&first));
    let again = build(d, &cache, &["-o", "oci:again"]);
    assert_eq!(cached_and_written(&again), (4, 0), "{}", stderr(&again));
    assert_eq!(printed_digest(&again), printed_digest(&first));
    // The layout is complete and every blob matches its name.
    assert_eq!(
        Layout::new(d.join("again")).verified_blobs(),
        Layout::new(d.join("first")).verified_blobs()
    );

    let no_cache = build(d, &cache, &["--no-cache", "-o", "oci:no-cache"]);
    assert_eq!(cached_and_written(&no_cache), (0, 4));
    assert_eq!(printed_digest(&no_cache), printed_digest(&first));

    // One byte of the binary: only the app layer is written again.
    let mut bytes = std::fs::read(d.join("api")).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    std::fs::write(d.join("api"), bytes).unwrap();
    let edited = build(d, &cache, &["-o", "oci:edited"]);
    assert_eq!(cached_and_written(&edited), (3, 1), "{}", stderr(&edited));
    assert_ne!(printed_digest(&edited), printed_digest(&first));

    // The compression level and a SOURCE_DATE_EPOCH are part of every layer's recipe.
    let level = build(d, &cache, &["--compression-level", "5", "-o", "oci:level"]);
    assert_eq!(cached_and_written(&level), (0, 4));
    let epoch = run_expect(
        build_in(d, &cache, &["-o", "oci:epoch"]).env("SOURCE_DATE_EPOCH", "1700000000"),
        true,
    );
    assert_eq!(cached_and_written(&epoch), (0, 4));

    // imgpack cache shows it; --clear empties it; the next build writes everything.
    let shown = run_expect(
        imgpack().env("IMGPACK_CACHE_DIR", &cache).arg("cache"),
        true,
    );
    let shown = String::from_utf8(shown.stdout).unwrap();
    assert!(shown.contains("layers: 13 entries"), "{shown}");
    run_expect(
        imgpack()
            .env("IMGPACK_CACHE_DIR", &cache)
            .args(["cache", "--clear"]),
        true,
    );
    let shown = run_expect(
        imgpack().env("IMGPACK_CACHE_DIR", &cache).arg("cache"),
        true,
    );
    assert!(String::from_utf8(shown.stdout)
        .unwrap()
        .contains("layers: 0 entries, 0 B"));
    assert_eq!(
        cached_and_written(&build(d, &cache, &["-o", "oci:after"])),
        (0, 4)
    );
}

/// The CPU time (user + system, from wait4) of one build, and its digest.
fn build_cpu(dir: &Path, cache: &Path, args: &[&str]) -> (Duration, String) {
    let mut child = build_in(dir, cache, args)
        .arg("-q")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let mut printed = String::new();
    // The one short line fits the pipe: read once the child is gone.
    let (code, usage) = wait_with_usage(child);
    std::io::Read::read_to_string(&mut stdout, &mut printed).unwrap();
    assert_eq!(code, 0, "{args:?} failed");
    (cpu_time(&usage), printed.trim().to_owned())
}

/// A hit skips the work, seen from outside the build rather than in its log: with an app layer
/// of 32 MiB that gzip cannot shrink, a build that takes every layer from the cache costs a
/// fraction of the CPU time of one that compresses them (with and without a cache).
#[test]
fn a_cache_hit_costs_a_fraction_of_the_cpu_of_a_miss() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write_static_elf(&d.join("api"), Arch::Amd64, &noise(32 << 20, 6));
    let cache = d.join("cache");
    let (miss, digest) = build_cpu(d, &cache, &["-o", "oci:miss"]);
    let (hit, hit_digest) = build_cpu(d, &cache, &["-o", "oci:hit"]);
    let (no_cache, no_cache_digest) = build_cpu(d, &cache, &["--no-cache", "-o", "oci:none"]);
    eprintln!("CPU time: miss {miss:?}, hit {hit:?}, --no-cache {no_cache:?}");
    assert_eq!(hit_digest, digest);
    assert_eq!(no_cache_digest, digest);
    // Hashing the binary (the cache key) and copying the cached blob are what a hit costs;
    // compressing 32 MiB costs many times that.
    for (what, work) in [("the first build", miss), ("--no-cache", no_cache)] {
        assert!(
            hit * 4 < work,
            "a cache hit took {hit:?} of CPU, {what} {work:?}: not a quarter"
        );
    }
}

#[test]
fn a_damaged_cache_entry_is_rebuilt_not_used() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    binary(d, 3);
    let cache = d.join("cache");
    let first = build(d, &cache, &["-o", "oci:first"]);
    let app_layer = app_layer_digest(&Layout::new(d.join("first")));
    let cached = cache
        .join("layers/blobs/sha256")
        .join(app_layer.strip_prefix("sha256:").unwrap());
    let mut bytes = std::fs::read(&cached).unwrap();
    bytes[1000] ^= 0x55;
    // The blob may be a hard link shared with the first layout: write a new file.
    std::fs::remove_file(&cached).unwrap();
    std::fs::write(&cached, bytes).unwrap();

    let second = build(d, &cache, &["-o", "oci:second"]);
    assert_eq!(cached_and_written(&second), (3, 1), "{}", stderr(&second));
    assert_eq!(printed_digest(&second), printed_digest(&first));
    Layout::new(d.join("second")).verified_blobs();
    assert_eq!(
        file_digest(&cached).to_string(),
        app_layer,
        "the entry was not written again"
    );
}

#[test]
fn builds_sharing_a_cache_at_once_agree() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    binary(d, 4);
    let cache = d.join("cache");
    let children: Vec<_> = (0..4)
        .map(|n| {
            build_in(
                d,
                &cache,
                &["--threads", "2", "-o", &format!("oci:out-{n}")],
            )
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
        })
        .collect();
    let digests: Vec<String> = children
        .into_iter()
        .map(|child| {
            let output = child.wait_with_output().unwrap();
            assert!(output.status.success(), "{}", stderr(&output));
            printed_digest(&output)
        })
        .collect();
    assert!(digests.iter().all(|d| *d == digests[0]), "{digests:?}");
    for n in 0..4 {
        Layout::new(d.join(format!("out-{n}"))).verified_blobs();
    }
    let after = build(d, &cache, &["-o", "oci:after"]);
    assert_eq!(cached_and_written(&after), (4, 0), "{}", stderr(&after));
    assert_eq!(printed_digest(&after), digests[0]);
}
