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

/// Issue 19, item 5: a cache anyone but its user can write could hand a
/// build any layer, so a group-writable cache directory, or one under it
/// owned by someone else, is refused with one line that names it and the fix.
#[test]
fn a_cache_others_can_write_is_refused_with_the_fix() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    binary(d, 7);
    let cache = d.join("cache");
    build(d, &cache, &["-o", "oci:first"]);
    let set_mode = |path: &Path, mode| {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap()
    };

    set_mode(&cache, 0o775);
    let line = one_error_line(&mut build_in(d, &cache, &["-q", "-o", "oci:second"]));
    assert!(
        line.contains(&format!(
            "the cache directory {} is writable by group or others (mode 0775): run 'chmod go-w {}'",
            cache.display(),
            cache.display()
        )) && line.contains("IMGPACK_CACHE_DIR")
            && line.contains("--no-cache"),
        "{line}"
    );
    assert!(!d.join("second").exists(), "an output was written");
    // The way out the message names works.
    build(d, &cache, &["--no-cache", "-o", "oci:third"]);
    set_mode(&cache, 0o700);

    let entries = cache.join("layers/entries");
    match std::os::unix::fs::chown(&entries, Some(65534), Some(65534)) {
        Ok(()) => {}
        Err(err) if !tools_required() => {
            eprintln!("skipping the other-owner case: cannot chown ({err}); run as root");
            return;
        }
        Err(err) => panic!(
            "cannot chown {}: {err} (the test runs as root in CI)",
            entries.display()
        ),
    }
    let line = one_error_line(&mut build_in(d, &cache, &["-q", "-o", "oci:fourth"]));
    assert!(
        line.contains(&format!(
            "the cache directory {} belongs to uid 65534, not to you (uid 0)",
            entries.display()
        )) && line.contains("chown")
            && line.contains("--no-cache"),
        "{line}"
    );
    std::os::unix::fs::chown(&entries, Some(0), Some(0)).unwrap();
    build(d, &cache, &["-o", "oci:fifth"]);
}

/// Issue 19, item 5: an entry that names an intact blob (its digest
/// matches) whose content is not the layer's diff ID, as someone who could
/// write the cache would plant, is not used: the layer is written again.
#[test]
fn a_planted_blob_whose_digest_matches_but_diff_id_does_not_is_not_used() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    binary(d, 11);
    let cache = d.join("cache");
    build(d, &cache, &["-o", "oci:first"]);
    let first = Layout::new(d.join("first"));
    let app = app_layer_digest(&first);
    let manifest = first.json(first.index()["manifests"][0]["digest"].as_str().unwrap());
    let other = &manifest["layers"][0];
    let (other_digest, other_size) = (
        other["digest"].as_str().unwrap(),
        other["size"].as_u64().unwrap(),
    );
    assert_ne!(other_digest, app);
    // The app layer's entry now names another cached blob, under the app layer's diff ID.
    let entry = std::fs::read_dir(cache.join("layers/entries"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|path| std::fs::read_to_string(path).unwrap().contains(&app))
        .expect("no entry for the app layer");
    let text = std::fs::read_to_string(&entry).unwrap();
    let planted: String = text
        .lines()
        .filter(|line| !line.starts_with("checked "))
        .map(|line| match line {
            l if l.starts_with("blob ") => format!("blob {other_digest}\n"),
            l if l.starts_with("size ") => format!("size {other_size}\n"),
            l => format!("{l}\n"),
        })
        .collect();
    std::fs::write(&entry, planted).unwrap();

    let output = build(d, &cache, &["-o", "oci:second"]);
    let second = Layout::new(d.join("second"));
    assert_eq!(app_layer_digest(&second), app, "the planted blob was used");
    assert_eq!(cached_and_written(&output).1, 1, "{}", stderr(&output));
    let config = |layout: &Layout| {
        let manifest = layout.json(layout.index()["manifests"][0]["digest"].as_str().unwrap());
        layout.json(manifest["config"]["digest"].as_str().unwrap())["rootfs"].clone()
    };
    assert_eq!(config(&second), config(&first));
    second.verified_blobs();
}

/// Issue 19, item 5: two containers sharing one cache or TMPDIR see each
/// other's process ids as dead. A partial blob or staging directory another
/// build holds (its flock) is kept, however old and whatever its name says;
/// one nobody holds is removed.
#[test]
fn builds_sharing_a_cache_or_tmpdir_never_remove_each_others_partial_files() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    binary(d, 13);
    let cache = d.join("cache");
    let tmp = d.join("tmp");
    build(d, &cache, &["-o", "oci:first"]);
    std::fs::create_dir_all(&tmp).unwrap();
    let long_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(3600);
    let blobs = cache.join("layers/blobs/sha256");
    let held_partial = blobs.join(".partial-999999999-other");
    let stale_partial = blobs.join(".partial-999999998-stale");
    let held_staging = tmp.join("imgpack-999999999-other");
    let stale_staging = tmp.join("imgpack-999999998-stale");
    for file in [&held_partial, &stale_partial] {
        std::fs::write(file, b"half a layer").unwrap();
    }
    for staging in [&held_staging, &stale_staging] {
        std::fs::create_dir_all(staging.join("blobs")).unwrap();
    }
    // "Another container": this process holds the locks, as that build would.
    let holders = [
        std::fs::File::open(&held_partial).unwrap(),
        std::fs::File::open(&held_staging).unwrap(),
    ];
    for holder in &holders {
        holder.lock().unwrap();
    }
    for path in [&held_partial, &stale_partial, &held_staging, &stale_staging] {
        std::fs::File::open(path)
            .unwrap()
            .set_modified(long_ago)
            .unwrap();
    }
    run_expect(
        build_in(d, &cache, &["-o", "oci:second"]).env("IMGPACK_TMPDIR", &tmp),
        true,
    );
    assert!(
        held_partial.exists(),
        "a partial blob another build holds was removed"
    );
    assert!(
        held_staging.exists(),
        "a staging directory another build holds was removed"
    );
    assert!(
        !stale_partial.exists(),
        "an abandoned partial blob was kept"
    );
    assert!(
        !stale_staging.exists(),
        "an abandoned staging directory was kept"
    );
    drop(holders);
}

/// Issue 19, item 5: the blob-location record is never read or written
/// through a symbolic link planted at its path: a record pointing pushes at
/// another repository (a mount from it) is not taken from elsewhere.
#[test]
fn a_link_planted_at_the_blob_location_record_is_not_followed() {
    use imgpack_e2e::fake_registry::FakeRegistry;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    binary(d, 17);
    let cache = d.join("cache");
    build(d, &cache, &["--no-cache", "-o", "oci:layout:v1"]);
    let registry = FakeRegistry::start(Default::default());
    let host = registry.host();
    let app = app_layer_digest(&Layout::new(d.join("layout")));
    let planted = d.join("planted.json");
    let record = serde_json::json!({ "registries": { &host: { &app: ["evil/source"] } } });
    std::fs::write(&planted, record.to_string()).unwrap();
    std::fs::create_dir_all(&cache).unwrap();
    let link = cache.join("blob-locations.json");
    std::os::unix::fs::symlink(&planted, &link).unwrap();
    let mut push = imgpack();
    push.current_dir(d).env("IMGPACK_CACHE_DIR", &cache).args([
        "push",
        "oci:layout:v1",
        &format!("{host}/team/app:v1"),
    ]);
    run_expect(&mut push, true);
    let mounts: Vec<String> = registry
        .seen()
        .into_iter()
        .filter(|seen| seen.method == "POST" && seen.target.contains("from="))
        .map(|seen| seen.target)
        .collect();
    assert!(
        !mounts.iter().any(|target| target.contains("from=evil")),
        "a mount source was read through the link: {mounts:?}"
    );
    assert_eq!(
        std::fs::read_to_string(&planted).unwrap(),
        record.to_string()
    );
}
