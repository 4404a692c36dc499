//! imgpack build through its command line: the image it writes, the knobs,
//! reproducibility and the errors a user can hit.

use std::path::Path;
use std::process::Command;

use imgpack_e2e::*;
use serde_json::Value;

fn build(dir: &Path, args: &[&str]) -> std::process::Output {
    run_expect(imgpack().current_dir(dir).arg("build").args(args), true)
}

fn fail(dir: &Path, args: &[&str]) -> String {
    let output = run_expect(
        imgpack()
            .current_dir(dir)
            .args(["build", "--quiet"])
            .args(args),
        false,
    );
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    let err = stderr(&output);
    assert!(err.starts_with("error: "), "{err}");
    assert_eq!(
        err.trim_end().lines().count(),
        1,
        "error is not one line: {err}"
    );
    assert!(!err.contains("panicked"), "{err}");
    err
}

fn two_binaries(dir: &Path) {
    write_static_elf(&dir.join("api-amd64"), Arch::Amd64, b"amd64 code");
    write_static_elf(&dir.join("api-arm64"), Arch::Arm64, b"arm64 code");
}

#[test]
fn two_platforms_give_an_index_sharing_the_platform_independent_layers() {
    let dir = tempfile::tempdir().unwrap();
    two_binaries(dir.path());
    let output = build(
        dir.path(),
        &[
            "--binary",
            "linux/amd64=api-amd64",
            "--binary",
            "linux/arm64=api-arm64",
            "--output",
            "oci:out:v1",
        ],
    );
    let digest = printed_digest(&output);
    let layout = Layout::new(dir.path().join("out"));
    layout.verified_blobs();
    let entry = layout.entry("v1");
    assert_eq!(entry["digest"], digest);
    assert_eq!(
        entry["mediaType"],
        "application/vnd.oci.image.index.v1+json"
    );
    let index = layout.json(&digest);
    let platforms: Vec<(&str, &str)> = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["platform"]["os"].as_str().unwrap(),
                m["platform"]["architecture"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(platforms, [("linux", "amd64"), ("linux", "arm64")]);

    let manifests = layout.manifests(&entry);
    let layer_digests = |m: &Value| -> Vec<String> {
        m["layers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l["digest"].as_str().unwrap().to_owned())
            .collect()
    };
    let (amd, arm) = (layer_digests(&manifests[0]), layer_digests(&manifests[1]));
    assert_eq!(amd.len(), 4);
    assert_eq!(
        amd[..3],
        arm[..3],
        "rootfs, certs and tzdata differ between platforms"
    );
    assert_ne!(amd[3], arm[3]);

    let config = layout.json(manifests[1]["config"]["digest"].as_str().unwrap());
    assert_eq!(config["architecture"], "arm64");
    assert_eq!(config["os"], "linux");
    assert_eq!(
        config["config"]["Entrypoint"],
        serde_json::json!(["/app/api"])
    );
    assert_eq!(config["config"]["User"], "65532:65532");
    assert_eq!(config["created"], "1970-01-01T00:00:00Z");
    assert_eq!(config["rootfs"]["diff_ids"].as_array().unwrap().len(), 4);
    assert_eq!(config["history"].as_array().unwrap().len(), 4);
    let env = strings(&config["config"]["Env"]);
    assert!(
        env.iter()
            .any(|e| e.starts_with("PATH=") && e.ends_with(":/app")),
        "{env:?}"
    );
    assert!(
        env.contains(&"SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt"),
        "{env:?}"
    );
}

#[test]
fn layers_hold_the_rootfs_certs_zones_and_app_with_fixed_ownership() {
    let dir = tempfile::tempdir().unwrap();
    write_static_elf(&dir.path().join("api"), Arch::Amd64, b"code");
    let output = build(
        dir.path(),
        &[
            "--binary",
            "linux/amd64=api",
            "--zones",
            "Europe/Berlin,UTC",
            "--output",
            "oci:out",
        ],
    );
    let layout = Layout::new(dir.path().join("out"));
    let manifest = layout.json(&printed_digest(&output));
    let layers: Vec<String> = manifest["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["digest"].as_str().unwrap().to_owned())
        .collect();

    let rootfs = layout.layer_entries(&layers[0]);
    let find = |entries: &[(String, u32, u64, tar::EntryType)], path: &str| {
        entries
            .iter()
            .find(|e| e.0 == path)
            .unwrap_or_else(|| panic!("{path} missing: {entries:?}"))
            .clone()
    };
    assert_eq!(find(&rootfs, "tmp/").1, 0o1777);
    let home = find(&rootfs, "home/nonroot/");
    assert_eq!((home.1, home.2), (0o700, 65532));
    find(&rootfs, "etc/passwd");
    find(&rootfs, "etc/group");
    find(&rootfs, "etc/nsswitch.conf");

    let certs = layout.layer_entries(&layers[1]);
    assert_eq!(find(&certs, "etc/ssl/certs/ca-certificates.crt").1, 0o644);

    let zones: Vec<String> = layout
        .layer_entries(&layers[2])
        .into_iter()
        .map(|e| e.0)
        .collect();
    assert!(
        zones.contains(&"usr/share/zoneinfo/Europe/Berlin".to_owned()),
        "{zones:?}"
    );
    assert!(
        zones.contains(&"usr/share/zoneinfo/UTC".to_owned()),
        "{zones:?}"
    );
    assert!(!zones.iter().any(|z| z.contains("America")), "{zones:?}");

    let app = layout.layer_entries(&layers[3]);
    let binary = find(&app, "app/api");
    assert_eq!((binary.1, binary.2), (0o755, 0));

    let paths: Vec<&String> = rootfs.iter().map(|e| &e.0).collect();
    let mut sorted = paths.clone();
    sorted.sort();
    assert_eq!(paths, sorted, "tar entries are not sorted");
}

#[test]
fn image_knobs_reach_the_config_and_manifest() {
    let dir = tempfile::tempdir().unwrap();
    write_static_elf(&dir.path().join("server"), Arch::Amd64, b"code");
    let output = build(
        dir.path(),
        &[
            "--binary",
            "linux/amd64=server",
            "--name",
            "api",
            "--entrypoint",
            "/app/api",
            "--entrypoint",
            "serve",
            "--cmd",
            "--port",
            "--cmd",
            "8080",
            "--env",
            "GIN_MODE=release",
            "--env",
            "PATH=/app",
            "--user",
            "1000:1000",
            "--workdir",
            "/data",
            "--expose",
            "8080",
            "--expose",
            "53/udp",
            "--label",
            "team=core",
            "--annotation",
            "org.opencontainers.image.revision=abc",
            "--ca-certs",
            "none",
            "--tzdata",
            "none",
            "--output",
            "oci:out",
        ],
    );
    let layout = Layout::new(dir.path().join("out"));
    let manifest = layout.json(&printed_digest(&output));
    assert_eq!(
        manifest["annotations"]["org.opencontainers.image.revision"],
        "abc"
    );
    assert_eq!(
        manifest["layers"].as_array().unwrap().len(),
        2,
        "none should drop the certs and tzdata layers"
    );
    let config = layout.json(manifest["config"]["digest"].as_str().unwrap())["config"].clone();
    assert_eq!(
        config["Entrypoint"],
        serde_json::json!(["/app/api", "serve"])
    );
    assert_eq!(config["Cmd"], serde_json::json!(["--port", "8080"]));
    assert_eq!(
        config["Env"],
        serde_json::json!(["PATH=/app", "GIN_MODE=release"])
    );
    assert_eq!(config["User"], "1000:1000");
    assert_eq!(config["WorkingDir"], "/data");
    assert_eq!(
        config["ExposedPorts"],
        serde_json::json!({"53/udp": {}, "8080/tcp": {}})
    );
    assert_eq!(config["Labels"], serde_json::json!({"team": "core"}));
    let app_layer = manifest["layers"][1]["digest"].as_str().unwrap().to_owned();
    assert!(layout
        .layer_entries(&app_layer)
        .iter()
        .any(|e| e.0 == "app/api"));
}

#[test]
fn docker_format_and_zstd_use_their_media_types() {
    let dir = tempfile::tempdir().unwrap();
    write_static_elf(&dir.path().join("api"), Arch::Amd64, b"code");
    let docker = build(
        dir.path(),
        &[
            "--binary",
            "linux/amd64=api",
            "--format",
            "docker",
            "--output",
            "oci:out:docker",
        ],
    );
    let layout = Layout::new(dir.path().join("out"));
    let manifest = layout.json(&printed_digest(&docker));
    assert_eq!(
        manifest["mediaType"],
        "application/vnd.docker.distribution.manifest.v2+json"
    );
    assert_eq!(
        manifest["config"]["mediaType"],
        "application/vnd.docker.container.image.v1+json"
    );
    assert_eq!(
        manifest["layers"][0]["mediaType"],
        "application/vnd.docker.image.rootfs.diff.tar.gzip"
    );

    let zstd = build(
        dir.path(),
        &[
            "--binary",
            "linux/amd64=api",
            "--compression",
            "zstd",
            "--output",
            "oci:out:zstd",
        ],
    );
    let manifest = layout.json(&printed_digest(&zstd));
    assert_eq!(
        manifest["layers"][0]["mediaType"],
        "application/vnd.oci.image.layer.v1.tar+zstd"
    );
    let blob = layout.blob(manifest["layers"][0]["digest"].as_str().unwrap());
    assert_eq!(&blob[..4], &[0x28, 0xb5, 0x2f, 0xfd], "not a zstd frame");
    // Both tags live side by side in one layout.
    layout.entry("docker");
    layout.entry("zstd");
}

#[test]
fn a_second_tag_keeps_the_first_and_retagging_replaces_it() {
    let dir = tempfile::tempdir().unwrap();
    write_static_elf(&dir.path().join("api"), Arch::Amd64, b"one");
    let first = printed_digest(&build(
        dir.path(),
        &["--binary", "linux/amd64=api", "--output", "oci:out:v1"],
    ));
    write_static_elf(&dir.path().join("api"), Arch::Amd64, b"two");
    let second = printed_digest(&build(
        dir.path(),
        &["--binary", "linux/amd64=api", "--output", "oci:out:v2"],
    ));
    assert_ne!(first, second);
    let layout = Layout::new(dir.path().join("out"));
    assert_eq!(layout.entry("v1")["digest"], first);
    assert_eq!(layout.entry("v2")["digest"], second);
    build(
        dir.path(),
        &["--binary", "linux/amd64=api", "--output", "oci:out:v1"],
    );
    assert_eq!(layout.entry("v1")["digest"], second);
    assert_eq!(layout.index()["manifests"].as_array().unwrap().len(), 2);
}

/// Same inputs, different directory, time, umask, TZ and file metadata: same bytes.
#[test]
fn builds_are_reproducible_across_directories_umask_and_time_zone() {
    let build_in = |umask: &str, tz: &str| -> (String, Vec<String>) {
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("nested/dir");
        std::fs::create_dir_all(&bin).unwrap();
        write_static_elf(&bin.join("api-amd64"), Arch::Amd64, b"same code");
        write_static_elf(&bin.join("api-arm64"), Arch::Arm64, b"same code");
        let script = format!(
            "umask {umask}; exec \"$0\" build --binary linux/amd64=nested/dir/api-amd64 \
             --binary linux/arm64=nested/dir/api-arm64 --output oci:out"
        );
        let output = run_expect(
            Command::new("sh")
                .args(["-c", &script])
                .arg0_imgpack()
                .current_dir(dir.path())
                .env("TZ", tz)
                .env_remove("SOURCE_DATE_EPOCH"),
            true,
        );
        (
            printed_digest(&output),
            Layout::new(dir.path().join("out")).verified_blobs(),
        )
    };
    let first = build_in("022", "UTC");
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let second = build_in("077", "Asia/Tokyo");
    assert_eq!(first, second);
}

trait Arg0 {
    fn arg0_imgpack(&mut self) -> &mut Self;
}

impl Arg0 for Command {
    /// Passes the imgpack binary as `$0` of a `sh -c` script.
    fn arg0_imgpack(&mut self) -> &mut Self {
        self.arg(imgpack_bin())
    }
}

#[test]
fn source_date_epoch_sets_created_and_changes_the_digest() {
    let dir = tempfile::tempdir().unwrap();
    write_static_elf(&dir.path().join("api"), Arch::Amd64, b"code");
    let plain = printed_digest(&build(
        dir.path(),
        &["--binary", "linux/amd64=api", "--output", "oci:out:plain"],
    ));
    let output = run_expect(
        imgpack()
            .current_dir(dir.path())
            .env("SOURCE_DATE_EPOCH", "1700000000")
            .args([
                "build",
                "--binary",
                "linux/amd64=api",
                "--output",
                "oci:out:dated",
            ]),
        true,
    );
    let dated = printed_digest(&output);
    assert_ne!(plain, dated);
    let layout = Layout::new(dir.path().join("out"));
    let manifest = layout.json(&dated);
    let config = layout.json(manifest["config"]["digest"].as_str().unwrap());
    assert_eq!(config["created"], "2023-11-14T22:13:20Z");
    let err = run_expect(
        imgpack()
            .current_dir(dir.path())
            .env("SOURCE_DATE_EPOCH", "yesterday")
            .args([
                "build",
                "--binary",
                "linux/amd64=api",
                "--output",
                "oci:out",
            ]),
        false,
    );
    assert!(
        stderr(&err).contains("SOURCE_DATE_EPOCH"),
        "{}",
        stderr(&err)
    );
}

/// Catches any accidental change of bytes: a dependency upgrade, a switch of
/// flate2's backend, a change in tar headers or JSON serialisation. If the
/// change is intended, update the digests and say why in the commit.
#[test]
fn golden_digests() {
    let dir = tempfile::tempdir().unwrap();
    write_static_elf(&dir.path().join("api-amd64"), Arch::Amd64, b"golden amd64");
    write_static_elf(&dir.path().join("api-arm64"), Arch::Arm64, b"golden arm64");
    let cases: [(&[&str], &str); 3] = [
        (
            &[
                "--binary",
                "linux/amd64=api-amd64",
                "--binary",
                "linux/arm64=api-arm64",
            ],
            GOLDEN_INDEX,
        ),
        (
            &["--binary", "linux/amd64=api-amd64", "--compression", "zstd"],
            GOLDEN_ZSTD,
        ),
        (
            &["--binary", "linux/amd64=api-amd64", "--format", "docker"],
            GOLDEN_DOCKER,
        ),
    ];
    let (mut actual, mut expected) = (Vec::new(), Vec::new());
    for (args, golden) in cases {
        let output = build(dir.path(), &[args, &["--output", "oci:golden"]].concat());
        actual.push(printed_digest(&output));
        expected.push(golden);
    }
    assert_eq!(actual, expected, "image digests changed");
}

const GOLDEN_INDEX: &str =
    "sha256:ff478b75a1daac3f5359c0eac1e17b802f8cc708a2c5404e34f1644bea5655ac";
const GOLDEN_ZSTD: &str = "sha256:a84bb9b31e66bc6532dfb073a59670cf3fda3bc847597d5437e933dffd1885c1";
const GOLDEN_DOCKER: &str =
    "sha256:6596899c4da9c2f4f66e34398252792c099b04eb6a5e67088165ad877cb80f62";

#[test]
fn bad_input_gets_one_clear_line() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write_static_elf(&d.join("api"), Arch::Amd64, b"code");
    write_static_elf(&d.join("api-arm64"), Arch::Arm64, b"code");
    std::fs::write(
        d.join("dynamic"),
        ElfBuilder::new(Arch::Amd64)
            .interpreter("/lib64/ld-linux-x86-64.so.2")
            .dynamic(&["libc.so.6"])
            .build(),
    )
    .unwrap();

    let cases: [(&[&str], &str); 13] = [
        (
            &[
                "--binary",
                "linux/amd64=api",
                "--features",
                "x",
                "--output",
                "oci:o",
            ],
            "--features applies when imgpack compiles",
        ),
        (
            &["--binary", "linux/amd64=missing", "--output", "oci:o"],
            "missing: cannot read it",
        ),
        (
            &["--binary", "linux/amd64=dynamic", "--output", "oci:o"],
            "libc.so.6",
        ),
        (
            &["--binary", "linux/amd64=api-arm64", "--output", "oci:o"],
            "built for arm64 but was given for linux/amd64",
        ),
        (
            &["--binary", "linux/amd65=api", "--output", "oci:o"],
            "unknown architecture 'amd65'",
        ),
        (
            &["--binary", "amd64=api", "--output", "oci:o"],
            "bad platform",
        ),
        (&["--binary", "api", "--output", "oci:o"], "PLATFORM=PATH"),
        (
            &["--binary", "linux/amd64=api", "--output", "tarball:o"],
            "unknown output type",
        ),
        (
            &["--binary", "linux/amd64=api", "--output", "oci:o:bad tag"],
            "bad tag",
        ),
        (
            &[
                "--binary",
                "linux/amd64=api",
                "--binary",
                "linux/arm64=api-arm64",
                "--output",
                "docker-archive:a.tar",
            ],
            "add --platform",
        ),
        (
            &[
                "--binary",
                "linux/amd64=api",
                "--format",
                "docker",
                "--compression",
                "zstd",
                "--output",
                "oci:o",
            ],
            "no zstd",
        ),
        (
            &[
                "--binary",
                "linux/amd64=api",
                "--zones",
                "Mars/Olympus",
                "--output",
                "oci:o",
            ],
            "unknown time zone",
        ),
        (
            &[
                "--binary",
                "linux/amd64=api",
                "--ca-certs",
                "nowhere.pem",
                "--output",
                "oci:o",
            ],
            "nowhere.pem",
        ),
    ];
    for (args, expected) in cases {
        let err = fail(d, args);
        assert!(
            err.contains(expected),
            "{args:?}: expected '{expected}' in: {err}"
        );
    }
    let err = fail(d, &["--binary", "linux/amd64=dynamic", "--output", "oci:o"]);
    assert!(
        err.contains("CGO_ENABLED=0") && err.contains("musl"),
        "{err}"
    );
    // Nothing was written by any failed build.
    assert!(!d.join("o").exists());
    assert!(!d.join("a.tar").exists());
}

#[test]
fn unwritable_output_and_foreign_directory_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    write_static_elf(&dir.path().join("api"), Arch::Amd64, b"code");
    std::fs::create_dir(dir.path().join("notes")).unwrap();
    std::fs::write(dir.path().join("notes/todo.txt"), "x").unwrap();
    let err = fail(
        dir.path(),
        &["--binary", "linux/amd64=api", "--output", "oci:notes"],
    );
    assert!(err.contains("not an OCI layout"), "{err}");
    std::fs::write(dir.path().join("file"), "x").unwrap();
    let err = fail(
        dir.path(),
        &[
            "--binary",
            "linux/amd64=api",
            "--output",
            "oci-archive:file/sub/x.tar",
        ],
    );
    assert!(
        err.contains("cannot write oci-archive:file/sub/x.tar:latest: cannot create file/sub: file is not a directory"),
        "{err}"
    );
}

#[test]
fn archives_create_their_directory_and_bad_output_paths_fail_before_any_work() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write_static_elf(&d.join("api"), Arch::Amd64, b"code");
    // In a fresh project, as oci: does: the parents of every output are created.
    build(
        d,
        &[
            "--binary",
            "linux/amd64=api",
            "--output",
            "oci-archive:./out/oci/api.tar",
            "--output",
            "docker-archive:./out/docker/api.tar:api:v1",
            "--output",
            "oci:./out/layout/api:v1",
        ],
    );
    for written in [
        "out/oci/api.tar",
        "out/docker/api.tar",
        "out/layout/api/index.json",
    ] {
        assert!(d.join(written).is_file(), "no {written}");
    }
    // An output that cannot be written fails before the binaries are even read
    // (this one is missing), so before any layer is built.
    std::fs::write(d.join("file"), "x").unwrap();
    for output in [
        "oci:file/layout",
        "oci-archive:file/api.tar",
        "docker-archive:file/api.tar",
        "oci-archive:out",
    ] {
        let err = fail(d, &["--binary", "linux/amd64=missing", "--output", output]);
        assert!(
            err.contains("cannot write") && !err.contains("missing"),
            "{output}: {err}"
        );
    }
    let err = fail(
        d,
        &[
            "--binary",
            "linux/amd64=missing",
            "--push",
            "127.0.0.1:9/x:v1",
            "--image-refs",
            "file/refs.txt",
        ],
    );
    assert!(
        err.contains("cannot write --image-refs file/refs.txt"),
        "{err}"
    );
}

#[test]
fn a_project_given_as_the_push_reference_is_refused_with_the_right_order() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::create_dir_all(d.join("fixtures/go-hello")).unwrap();
    std::fs::write(d.join("fixtures/go-hello/main.go"), "package main\n").unwrap();
    // `--push` takes an optional value: the project became the reference, and
    // the current directory (no project at all here) would be compiled.
    let err = fail(d, &["--push", "fixtures/go-hello"]);
    assert!(
        err.contains("--push fixtures/go-hello names a directory, not a registry reference")
            && err.contains("`imgpack build fixtures/go-hello --push`"),
        "{err}"
    );
    write_static_elf(&d.join("api"), Arch::Amd64, b"code");
    let err = fail(d, &["--binary", "linux/amd64=api", "--push", "./out"]);
    assert!(
        err.contains("--push ./out is a path, not a registry reference")
            && err.contains("--output oci:./out"),
        "{err}"
    );
}

#[test]
fn archives_hold_the_same_image() {
    let dir = tempfile::tempdir().unwrap();
    write_static_elf(&dir.path().join("api"), Arch::Amd64, b"code");
    let output = build(
        dir.path(),
        &[
            "--binary",
            "linux/amd64=api",
            "--output",
            "oci-archive:image.tar:v3",
            "--output",
            "docker-archive:docker.tar:team/api:v3",
        ],
    );
    let digest = printed_digest(&output);
    let unpacked = dir.path().join("unpacked");
    tar::Archive::new(std::fs::File::open(dir.path().join("image.tar")).unwrap())
        .unpack(&unpacked)
        .unwrap();
    let layout = Layout::new(&unpacked);
    layout.verified_blobs();
    assert_eq!(layout.entry("v3")["digest"], digest);

    let mut archive =
        tar::Archive::new(std::fs::File::open(dir.path().join("docker.tar")).unwrap());
    let mut manifest_json = None;
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        if entry.path().unwrap().to_str() == Some("manifest.json") {
            let mut text = String::new();
            std::io::Read::read_to_string(&mut entry, &mut text).unwrap();
            manifest_json = Some(text);
        }
    }
    let manifest: Value = serde_json::from_str(&manifest_json.expect("no manifest.json")).unwrap();
    assert_eq!(manifest[0]["RepoTags"], serde_json::json!(["team/api:v3"]));
    assert_eq!(manifest[0]["Layers"].as_array().unwrap().len(), 4);
}
