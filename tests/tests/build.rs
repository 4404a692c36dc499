//! imgpack build through its command line: the image it writes, the knobs,
//! reproducibility and the errors a user can hit.

use std::path::Path;
use std::process::Command;

use imgpack_e2e::registry::{Registry, Setup};
use imgpack_e2e::*;
use serde_json::Value;

fn build(dir: &Path, args: &[&str]) -> std::process::Output {
    run_expect(imgpack().current_dir(dir).arg("build").args(args), true)
}

fn fail(dir: &Path, args: &[&str]) -> String {
    one_error_line(
        imgpack()
            .current_dir(dir)
            .args(["build", "--quiet"])
            .args(args),
    )
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
    // Two tags; the other entries are the images' SBOM and provenance referrers.
    let tagged = layout.index()["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|entry| entry["annotations"]["org.opencontainers.image.ref.name"].is_string())
        .count();
    assert_eq!(tagged, 2);
}

/// Host metadata of one build's inputs: permission bits of the binaries and of the
/// `[[files]]` sources, and the modification time of everything.
struct InputMetadata {
    binary_mode: u32,
    file_mode: u32,
    script_mode: u32,
    dir_mode: u32,
    mtime: std::time::SystemTime,
}

/// Writes two binaries and a `[[files]]` tree under `dir` with `metadata`.
fn inputs_with(dir: &Path, metadata: &InputMetadata) {
    use std::os::unix::fs::PermissionsExt;
    let bin = dir.join("nested/dir");
    std::fs::create_dir_all(bin.join("static/css")).unwrap();
    write_static_elf(&bin.join("api-amd64"), Arch::Amd64, b"same code");
    write_static_elf(&bin.join("api-arm64"), Arch::Arm64, b"same code");
    std::fs::write(bin.join("static/index.html"), "<h1>same</h1>").unwrap();
    std::fs::write(bin.join("static/css/site.css"), "h1{}").unwrap();
    std::fs::write(bin.join("static/run.sh"), "#!/bin/sh\n").unwrap();
    std::fs::write(
        dir.join("imgpack.toml"),
        "[[files]]\nsrc = \"nested/dir/static\"\ndst = \"/srv/static\"\n",
    )
    .unwrap();
    let modes = [
        ("api-amd64", metadata.binary_mode),
        ("api-arm64", metadata.binary_mode),
        ("static/index.html", metadata.file_mode),
        ("static/css/site.css", metadata.file_mode),
        ("static/run.sh", metadata.script_mode),
        ("static/css", metadata.dir_mode),
        ("static", metadata.dir_mode),
    ];
    for (path, mode) in modes {
        let path = bin.join(path);
        std::fs::File::open(&path)
            .unwrap()
            .set_modified(metadata.mtime)
            .unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
    }
}

/// Same inputs, different directory, time, umask, TZ and file metadata: same bytes.
#[test]
fn builds_are_reproducible_across_directories_umask_and_time_zone() {
    let build_in = |umask: &str, tz: &str, metadata: &InputMetadata| -> (String, Vec<String>) {
        let dir = tempfile::tempdir().unwrap();
        inputs_with(dir.path(), metadata);
        let script = format!(
            "umask {umask}; exec \"$0\" build --binary linux/amd64=nested/dir/api-amd64 \
             --binary linux/arm64=nested/dir/api-arm64 --output oci:out --provenance=false"
        );
        // The SBOM is compared too; the provenance records when the build ran
        // (reproducible only with SOURCE_DATE_EPOCH, as tests/tests/attest.rs checks).

        let output = run_expect(
            Command::new("sh")
                .args(["-c", &script])
                .arg0_imgpack()
                .current_dir(dir.path())
                .env("TZ", tz)
                // A cache of each build's own, empty: a shared one would hand the second build
                // the first one's layers, and nothing it reads from the host could show.
                .env("IMGPACK_CACHE_DIR", dir.path().join("cache"))
                .env_remove("SOURCE_DATE_EPOCH"),
            true,
        );
        let layout = Layout::new(dir.path().join("out"));
        let digest = printed_digest(&output);
        let manifests = layout.manifests(&layout.entry("latest"));
        // rootfs, certs, tzdata, the [[files]] of imgpack.toml, the app.
        assert_eq!(manifests[0]["layers"].as_array().unwrap().len(), 5);
        // Every layer of both platforms was written by this build, none taken from a cache.
        let err = stderr(&output);
        assert!(!err.contains(", cached): "), "{err}");
        assert!(err.contains(", written): "), "{err}");
        (digest, layout.verified_blobs())
    };
    let first = build_in(
        "022",
        "UTC",
        &InputMetadata {
            binary_mode: 0o755,
            file_mode: 0o644,
            script_mode: 0o755,
            dir_mode: 0o755,
            mtime: std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_000_000_000),
        },
    );
    // A second later on the clock, whatever imgpack might read from it.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let second = build_in(
        "077",
        "Asia/Tokyo",
        &InputMetadata {
            binary_mode: 0o700,
            file_mode: 0o600,
            script_mode: 0o700,
            dir_mode: 0o700,
            mtime: std::time::SystemTime::now(),
        },
    );
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
/// flate2's backend, a change in tar headers, JSON serialisation or archive
/// layout. If the change is intended, update the digests and say why in the commit.
#[test]
fn golden_digests() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write_static_elf(&d.join("api-amd64"), Arch::Amd64, b"golden amd64");
    write_static_elf(&d.join("api-arm64"), Arch::Arm64, b"golden arm64");
    let (mut actual, mut expected) = (Vec::new(), Vec::new());
    let mut pin = |what: &str, digest: String, golden: &str| {
        actual.push(format!("{what}: {digest}"));
        expected.push(format!("{what}: {golden}"));
    };
    let cases: [(&str, &[&str], &str); 3] = [
        (
            "index",
            &[
                "--binary",
                "linux/amd64=api-amd64",
                "--binary",
                "linux/arm64=api-arm64",
            ],
            GOLDEN_INDEX,
        ),
        (
            "zstd",
            &["--binary", "linux/amd64=api-amd64", "--compression", "zstd"],
            GOLDEN_ZSTD,
        ),
        (
            "docker",
            &["--binary", "linux/amd64=api-amd64", "--format", "docker"],
            GOLDEN_DOCKER,
        ),
    ];
    for (what, args, golden) in cases {
        let output = build(d, &[args, &["--output", "oci:golden"]].concat());
        pin(what, printed_digest(&output), golden);
    }

    // SOURCE_DATE_EPOCH: the config's created and every layer's mtimes.
    let output = run_expect(
        imgpack()
            .current_dir(d)
            .env("SOURCE_DATE_EPOCH", "1700000000")
            .args([
                "build",
                "--binary",
                "linux/amd64=api-amd64",
                "--output",
                "oci:golden",
            ]),
        true,
    );
    pin("SOURCE_DATE_EPOCH", printed_digest(&output), GOLDEN_EPOCH);

    // [[files]] from an imgpack.toml, and both archives (their bytes, not only the image).
    let project = d.join("with-files");
    std::fs::create_dir_all(project.join("static/css")).unwrap();
    for (path, text) in [
        ("static/index.html", "<h1>golden</h1>"),
        ("static/css/site.css", "h1{}"),
    ] {
        std::fs::write(project.join(path), text).unwrap();
    }
    std::fs::write(
        project.join("imgpack.toml"),
        "[[files]]\nsrc = \"static\"\ndst = \"/srv/static\"\nmode = \"0644\"\n",
    )
    .unwrap();
    let output = build(
        &project,
        &[
            "--binary",
            "linux/amd64=../api-amd64",
            "--output",
            "oci:golden",
            "--output",
            "oci-archive:golden-oci.tar:v1",
            "--output",
            "docker-archive:golden-docker.tar:team/api:v1",
            // The archive holds the SBOM; the provenance records the build's time.
            "--provenance=false",
        ],
    );
    pin("[[files]]", printed_digest(&output), GOLDEN_FILES);
    pin(
        "oci-archive",
        file_digest(&project.join("golden-oci.tar")).to_string(),
        GOLDEN_OCI_ARCHIVE,
    );
    pin(
        "docker-archive",
        file_digest(&project.join("golden-docker.tar")).to_string(),
        GOLDEN_DOCKER_ARCHIVE,
    );

    // On a base image (itself built by imgpack, so its digests are fixed too) from a registry
    // on a random port: the manifest is pinned without the base.name annotation naming it.
    if let Some(registry) = Registry::start(Setup::Plain) {
        let base = format!("{}/golden/base:v1", registry.host());
        build(
            d,
            &["-q", "--binary", "linux/amd64=api-amd64", "--push", &base],
        );
        let output = build(
            d,
            &[
                "--binary",
                "linux/amd64=api-amd64",
                "--name",
                "on-base",
                "--base",
                &base,
                "--env",
                "ON_BASE=1",
                "--output",
                "oci:golden-base",
            ],
        );
        let layout = Layout::new(d.join("golden-base"));
        let mut manifest = layout.json(&printed_digest(&output));
        let annotations = manifest["annotations"].as_object_mut().unwrap();
        assert_eq!(
            annotations.remove("org.opencontainers.image.base.name"),
            Some(Value::String(base))
        );
        let without_name = serde_json::to_vec(&manifest).unwrap();
        pin(
            "on a base",
            imgpack_blob::Digest::of_bytes(&without_name).to_string(),
            GOLDEN_ON_BASE,
        );
    }
    assert_eq!(actual, expected, "image digests changed");
}

const GOLDEN_INDEX: &str =
    "sha256:c8334fad0b4075be6f4764a7a4df1df06ce85cae8fb5676f5d07cfa96484a44d";
const GOLDEN_ZSTD: &str = "sha256:a84bb9b31e66bc6532dfb073a59670cf3fda3bc847597d5437e933dffd1885c1";
const GOLDEN_DOCKER: &str =
    "sha256:f50d4a6ca4fb7ee60748edf5a28a6507c8e641394de054c606b77e9e6420dfcb";
const GOLDEN_EPOCH: &str =
    "sha256:36e4ed7a6f5202508e6a0590624c7e0d9864d9a0e6d540909899f456990c5dc3";
const GOLDEN_FILES: &str =
    "sha256:37b49730c44b85e5ae012e7eda04552ab713edc412c7546058d806257757c04f";
const GOLDEN_OCI_ARCHIVE: &str =
    "sha256:ed075e01bfbcb888c3b5659e25f76e70e1072c18a1cae53912f3632e77d24317";
const GOLDEN_DOCKER_ARCHIVE: &str =
    "sha256:fa0379b48e5a4a422e7ad94ab15e0908fdddc4d7976d72feba2f1e1bcf3b8ae0";
const GOLDEN_ON_BASE: &str =
    "sha256:4d1db331e72ae69e85a3ef1e216e7f2fbfa1e2734a98dec66b05c5d072c17a61";

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
    let down = format!("{}/x:v1", imgpack_e2e::http::refusing_host());
    let err = fail(
        d,
        &[
            "--binary",
            "linux/amd64=missing",
            "--push",
            &down,
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
