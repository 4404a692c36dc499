//! What imgpack writes, read by independent tools: skopeo, umoci and runc.
//! Under IMGPACK_E2E=1 (cargo xtask ci) a missing tool fails these tests.

use std::path::Path;
use std::process::Command;

use imgpack_e2e::runtime::{bundle_config, prepare_for_runc, runc_allowed, unpack};
use imgpack_e2e::*;
use serde_json::Value;

fn tools(names: &[&str]) -> bool {
    names.iter().all(|name| have_tool(name))
}

fn run_ok(command: &mut Command) -> String {
    String::from_utf8(run_expect(command, true).stdout).unwrap()
}

fn skopeo(args: &[&str]) -> String {
    run_ok(Command::new("skopeo").args(args))
}

/// Builds the probe for amd64 and arm64 into `oci:<dir>/out:v1`; returns the index digest.
fn build_probe_image(dir: &Path, extra: &[&str]) -> Option<String> {
    let amd64 = probe_binary(Arch::Amd64)?;
    let arm64 = probe_binary(Arch::Arm64)?;
    let output = run_expect(
        imgpack()
            .current_dir(dir)
            .arg("build")
            .arg("--binary")
            .arg(format!("linux/amd64={}", amd64.display()))
            .arg("--binary")
            .arg(format!("linux/arm64={}", arm64.display()))
            .args(["--output", "oci:out:v1"])
            .args(extra),
        true,
    );
    Some(printed_digest(&output))
}

fn diff_ids(config: &Value) -> Vec<String> {
    config["rootfs"]["diff_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d.as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn skopeo_reads_the_layout_and_converts_it_to_other_formats_and_back() {
    if !tools(&["skopeo"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let Some(index_digest) = build_probe_image(d, &[]) else {
        return;
    };
    let layout = Layout::new(d.join("out"));
    let at = |path: &str| d.join(path).display().to_string();

    // --raw returns exactly the bytes whose digest imgpack printed.
    let raw = skopeo(&["inspect", "--raw", &format!("oci:{}:v1", at("out"))]);
    assert_eq!(
        imgpack_blob::Digest::of_bytes(raw.as_bytes()).to_string(),
        index_digest
    );

    let ours: Vec<Value> = layout.manifests(&layout.entry("v1"));
    for (arch, manifest) in ["amd64", "arm64"].iter().zip(&ours) {
        let inspected: Value = serde_json::from_str(&skopeo(&[
            "inspect",
            "--override-arch",
            arch,
            &format!("oci:{}:v1", at("out")),
        ]))
        .unwrap();
        assert_eq!(inspected["Architecture"], *arch);
        let our_layers: Vec<&Value> = manifest["layers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| &l["digest"])
            .collect();
        let their_layers: Vec<&Value> = inspected["Layers"].as_array().unwrap().iter().collect();
        assert_eq!(our_layers, their_layers);
    }

    // Every platform into a dir: copy and back into a fresh layout.
    skopeo(&[
        "copy",
        "--all",
        &format!("oci:{}:v1", at("out")),
        &format!("dir:{}", at("dircopy")),
    ]);
    skopeo(&[
        "copy",
        "--all",
        &format!("dir:{}", at("dircopy")),
        &format!("oci:{}:back", at("roundtrip")),
    ]);
    let back = Layout::new(d.join("roundtrip"));
    back.verified_blobs();
    assert_eq!(
        back.entry("back")["digest"],
        index_digest,
        "a lossless round trip keeps the index digest"
    );

    // Through a docker-archive (one platform) and back: the layer contents (diffIDs) survive.
    let ours_config = layout.json(ours[0]["config"]["digest"].as_str().unwrap());
    skopeo(&[
        "copy",
        "--override-arch",
        "amd64",
        &format!("oci:{}:v1", at("out")),
        &format!("docker-archive:{}:probe:v1", at("probe.tar")),
    ]);
    skopeo(&[
        "copy",
        &format!("docker-archive:{}", at("probe.tar")),
        &format!("oci:{}:fromdocker", at("converted")),
    ]);
    let converted: Value = serde_json::from_str(&skopeo(&[
        "inspect",
        "--config",
        &format!("oci:{}:fromdocker", at("converted")),
    ]))
    .unwrap();
    assert_eq!(diff_ids(&converted), diff_ids(&ours_config));
    assert_eq!(
        converted["config"]["Entrypoint"],
        ours_config["config"]["Entrypoint"]
    );
}

#[test]
fn skopeo_reads_imgpack_archives() {
    if !tools(&["skopeo"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write_static_elf(&d.join("api"), Arch::Amd64, b"code");
    let output = run_expect(
        imgpack().current_dir(d).args([
            "build",
            "--binary",
            "linux/amd64=api",
            "--output",
            "oci:out:v1",
            "--output",
            "docker-archive:api.tar:api:v1",
            "--output",
            "oci-archive:api-oci.tar:v1",
        ]),
        true,
    );
    let digest = printed_digest(&output);
    let at = |path: &str| d.join(path).display().to_string();
    let layout = Layout::new(d.join("out"));
    let manifest = layout.json(&digest);
    let config = layout.json(manifest["config"]["digest"].as_str().unwrap());

    skopeo(&[
        "copy",
        &format!("docker-archive:{}", at("api.tar")),
        &format!("oci:{}:loaded", at("from-docker")),
    ]);
    let loaded: Value = serde_json::from_str(&skopeo(&[
        "inspect",
        "--config",
        &format!("oci:{}:loaded", at("from-docker")),
    ]))
    .unwrap();
    assert_eq!(diff_ids(&loaded), diff_ids(&config));
    assert_eq!(loaded["config"]["User"], "65532:65532");

    let raw = skopeo(&[
        "inspect",
        "--raw",
        &format!("oci-archive:{}:v1", at("api-oci.tar")),
    ]);
    assert_eq!(
        imgpack_blob::Digest::of_bytes(raw.as_bytes()).to_string(),
        digest
    );
}

#[test]
fn umoci_unpacks_every_platform_and_runc_runs_the_amd64_image_as_nonroot() {
    if !tools(&["skopeo", "umoci", "runc"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    if build_probe_image(d, &["--cmd", "hello", "--workdir", "/tmp"]).is_none() {
        return;
    }

    let image = format!("oci:{}:v1", d.join("out").display());
    let arm = unpack(&image, &[], "arm64", d);
    let arm_binary = std::fs::read(arm.join("rootfs/app/probe")).unwrap();
    assert_eq!(
        u16::from_le_bytes([arm_binary[18], arm_binary[19]]),
        183,
        "arm64 image holds an aarch64 binary"
    );

    let bundle = unpack(&image, &[], "amd64", d);
    let rootfs = bundle.join("rootfs");
    for path in [
        "etc/passwd",
        "etc/group",
        "etc/nsswitch.conf",
        "etc/ssl/certs/ca-certificates.crt",
        "usr/share/zoneinfo/Europe/Berlin",
        "app/probe",
        "home/nonroot",
        "tmp",
    ] {
        assert!(
            rootfs.join(path).exists(),
            "{path} missing from the unpacked image"
        );
    }
    let config = bundle_config(&bundle);
    assert_eq!(config["process"]["user"]["uid"], 65532);
    assert_eq!(
        config["process"]["args"],
        serde_json::json!(["/app/probe", "hello"])
    );

    if !runc_allowed() {
        return;
    }
    prepare_for_runc(&bundle, false, &[]);
    // /tmp must be writable by nonroot, as in a real runtime that honours the layer's 1777.
    let name = format!("imgpack-e2e-{}", std::process::id());
    let output = run_expect(
        Command::new("runc")
            .arg("--root")
            .arg(d.join("runc-state"))
            .args(["run", "--bundle"])
            .arg(&bundle)
            .arg(&name)
            .stdin(std::process::Stdio::null()),
        true,
    );
    let report = String::from_utf8(output.stdout).unwrap();
    for expected in [
        "uid=65532",
        "gid=65532",
        "berlin=CET-1CEST,M3.5.0,M10.5.0/3",
        "utc=UTC0",
        "tmp=writable",
        "cwd=/tmp",
        "args=hello",
    ] {
        assert!(
            report.lines().any(|line| line == expected),
            "'{expected}' not in probe report:\n{report}"
        );
    }
    let certs: usize = report
        .lines()
        .find_map(|l| l.strip_prefix("certs="))
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        certs > 100,
        "only {certs} CA certificates found in the image"
    );
}

/// docs/building.md, "Look inside a zstd image": umoci 0.4.7 cannot unpack
/// zstd layers, and the skopeo command given there makes a copy it can.
#[test]
fn umoci_unpacks_a_zstd_image_once_skopeo_recompresses_it_as_the_docs_say() {
    if !tools(&["skopeo", "umoci"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write_static_elf(&d.join("api-amd64"), Arch::Amd64, b"amd64 code");
    write_static_elf(&d.join("api-arm64"), Arch::Arm64, b"arm64 code");
    run_expect(
        imgpack().current_dir(d).args([
            "build",
            "-q",
            "--binary",
            "linux/amd64=api-amd64",
            "--binary",
            "linux/arm64=api-arm64",
            "--compression",
            "zstd",
            "--output",
            "oci:./out/api:v1",
        ]),
        true,
    );
    let umoci = |image: &str, bundle: &str| {
        Command::new("umoci")
            .current_dir(d)
            .args(["unpack", "--rootless", "--image", image, bundle])
            .output()
            .unwrap()
    };
    // The limitation the docs name, on one platform copied as it is (zstd).
    run_ok(Command::new("skopeo").current_dir(d).args([
        "copy",
        "--override-arch",
        "arm64",
        "oci:./out/api:v1",
        "oci:./out/api-zstd:v1",
    ]));
    let refused = umoci("./out/api-zstd:v1", "./zstd-bundle");
    assert!(
        !refused.status.success()
            && stderr(&refused).contains(
                "blob is not correct mediatype: application/vnd.oci.image.layer.v1.tar+zstd"
            ),
        "umoci reads zstd now: update docs/building.md ({})",
        stderr(&refused)
    );
    // The documented way round it.
    run_ok(Command::new("skopeo").current_dir(d).args([
        "copy",
        "--override-arch",
        "arm64",
        "--dest-compress-format",
        "gzip",
        "oci:./out/api:v1",
        "oci:./out/api-gzip:v1",
    ]));
    let unpacked = umoci("./out/api-gzip:v1", "./bundle");
    assert!(unpacked.status.success(), "{}", stderr(&unpacked));
    let app = std::fs::read(d.join("bundle/rootfs/app/api")).unwrap();
    assert!(app.ends_with(b"arm64 code"), "not the arm64 binary");
}
