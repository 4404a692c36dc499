//! imgpack.toml: settings from the file, flags over the file, several images
//! in one run, several binaries in one image, extra files, and bad files.

use std::path::Path;
use std::process::Command;

use imgpack_e2e::registry::{Registry, Setup};
use imgpack_e2e::*;
use serde_json::Value;

/// A repository holding the rust-hello and probe fixtures (both std-only Rust).
fn repository_with_two_projects(root: &Path) -> bool {
    if probe_binary(Arch::Amd64).is_none() {
        return false;
    }
    copy_project(
        &workspace_root().join("fixtures/rust-hello"),
        &root.join("services/hello"),
    );
    copy_project(
        &workspace_root().join("fixtures/probe"),
        &root.join("tools/probe"),
    );
    std::fs::create_dir_all(root.join("static/css")).unwrap();
    std::fs::write(root.join("static/index.html"), "<h1>hi</h1>").unwrap();
    std::fs::write(root.join("static/css/site.css"), "h1{}").unwrap();
    true
}

fn config_of(layout: &Layout, manifest: &Value) -> Value {
    layout.json(manifest["config"]["digest"].as_str().unwrap())
}

#[test]
fn settings_come_from_the_file_and_flags_override_them() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    if !repository_with_two_projects(root) {
        return;
    }
    std::fs::write(
        root.join("imgpack.toml"),
        r#"
path = "services/hello"
platforms = ["linux/amd64"]
cmd = ["--verbose"]
user = "1000:1000"
workdir = "/app"
ports = ["8080"]
env = { GREETING = "hello", PORT = "8080" }
labels = { team = "core" }
zones = ["Europe/Berlin", "UTC"]

[[files]]
src = "static"
dst = "/app/static"
mode = "0640"
uid = 65532
gid = 65532
"#,
    )
    .unwrap();
    let output = run_expect(
        imgpack().current_dir(root).args([
            "build",
            "-q",
            "--user",
            "2000",
            "--output",
            "oci:out:v1",
        ]),
        true,
    );
    let layout = Layout::new(root.join("out"));
    let manifest = layout.json(&printed_digest(&output));
    let config = config_of(&layout, &manifest)["config"].clone();
    assert_eq!(config["User"], "2000", "the flag wins over the file");
    assert_eq!(config["Cmd"], serde_json::json!(["--verbose"]));
    assert_eq!(config["WorkingDir"], "/app");
    assert_eq!(config["ExposedPorts"], serde_json::json!({"8080/tcp": {}}));
    assert_eq!(config["Labels"], serde_json::json!({"team": "core"}));
    let env = strings(&config["Env"]);
    assert!(
        env.contains(&"GREETING=hello") && env.contains(&"PORT=8080"),
        "{env:?}"
    );
    assert_eq!(
        config["Entrypoint"],
        serde_json::json!(["/app/rust-hello"]),
        "named after the cargo binary"
    );

    // rootfs, certs, tzdata, files, app.
    let layers: Vec<String> = manifest["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["digest"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(layers.len(), 5);
    let files = layout.layer_entries(&layers[3]);
    let find = |path: &str| {
        files
            .iter()
            .find(|e| e.0 == path)
            .unwrap_or_else(|| panic!("{path}: {files:?}"))
            .clone()
    };
    assert_eq!(
        (
            find("app/static/index.html").1,
            find("app/static/index.html").2
        ),
        (0o640, 65532)
    );
    find("app/static/css/site.css");
    let app = layout.layer_entries(&layers[4]);
    assert!(app.iter().any(|e| e.0 == "app/rust-hello"), "{app:?}");
}

#[test]
fn image_entries_build_and_push_several_images_in_one_run() {
    if !have_tool("skopeo") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    if !repository_with_two_projects(root) {
        return;
    }
    let Some(registry) = Registry::start(Setup::Plain) else {
        return;
    };
    std::fs::write(
        root.join("imgpack.toml"),
        format!(
            r#"
repository = "{}/team"
platforms = ["linux/amd64", "linux/arm64"]
tags = ["v1", "latest"]

[[image]]
path = "services/hello"

[[image]]
name = "toolbox"
paths = ["tools/probe", "services/hello"]
cmd = ["from-the-entry"]
"#,
            registry.host()
        ),
    )
    .unwrap();
    let output = run_expect(
        imgpack()
            .current_dir(root)
            .args(["build", "-q", "--push"])
            .env_remove("IMGPACK_REPO"),
        true,
    );
    let lines: Vec<String> = String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(str::to_owned)
        .collect();
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert!(
        lines[0].starts_with(&format!("{}/team/rust-hello@sha256:", registry.host())),
        "{lines:?}"
    );
    assert!(
        lines[1].starts_with(&format!("{}/team/toolbox@sha256:", registry.host())),
        "{lines:?}"
    );

    let pulled = root.join("pulled");
    let copy = Command::new("skopeo")
        .args(["copy", "--all", "--src-tls-verify=false"])
        .arg(format!("docker://{}/team/toolbox:latest", registry.host()))
        .arg(format!("oci:{}:toolbox", pulled.display()))
        .output()
        .unwrap();
    assert!(
        copy.status.success(),
        "{}",
        String::from_utf8_lossy(&copy.stderr)
    );
    let layout = Layout::new(&pulled);
    let manifests = layout.manifests(&layout.entry("toolbox"));
    assert_eq!(manifests.len(), 2);
    for manifest in &manifests {
        let config = config_of(&layout, manifest);
        assert_eq!(
            config["config"]["Entrypoint"],
            serde_json::json!(["/app/toolbox"])
        );
        assert_eq!(
            config["config"]["Cmd"],
            serde_json::json!(["from-the-entry"])
        );
        let app = manifest["layers"].as_array().unwrap().last().unwrap()["digest"]
            .as_str()
            .unwrap()
            .to_owned();
        let names: Vec<String> = layout
            .layer_entries(&app)
            .into_iter()
            .map(|e| e.0)
            .collect();
        assert_eq!(
            names,
            ["app/", "app/rust-hello", "app/toolbox"],
            "both binaries in one image"
        );
    }
}

#[test]
fn a_bad_config_file_is_one_line_naming_file_line_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let cases = [
        (
            "platforms = [\"linux/amd64\"]\nentrypont = [\"/app/x\"]\n",
            "imgpack.toml:2",
            "unknown field `entrypont`",
        ),
        (
            "ports = [\"80/http\"]\n",
            "imgpack.toml:1: key `ports`",
            "bad --expose",
        ),
        ("user = 5\n", "imgpack.toml:1: key `user`", "invalid type"),
        (
            "[[files]]\nsrc = \"x\"\ndst = \"relative\"\n",
            "[[files]] entry 1",
            "absolute",
        ),
    ];
    for (text, place, problem) in cases {
        std::fs::write(root.join("imgpack.toml"), text).unwrap();
        let output = run_expect(
            imgpack()
                .current_dir(root)
                .args(["build", "--output", "oci:out"]),
            false,
        );
        let err = stderr(&output);
        assert_eq!(err.trim_end().lines().count(), 1, "{err}");
        assert!(
            err.contains(place) && err.contains(problem),
            "{text:?}: {err}"
        );
    }
    let output = run_expect(
        imgpack().current_dir(root).args([
            "build",
            "--config",
            "missing.toml",
            "--output",
            "oci:out",
        ]),
        false,
    );
    assert!(
        stderr(&output).contains("cannot read the config file missing.toml"),
        "{}",
        stderr(&output)
    );
}

#[test]
fn tags_in_the_file_configure_pushes_and_do_not_block_other_outputs() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    write_static_elf(&root.join("api"), Arch::Amd64, b"code");
    let build = |args: &[&str], success: bool| {
        run_expect(
            imgpack()
                .current_dir(root)
                .args([
                    "build",
                    "-q",
                    "--binary",
                    "linux/amd64=api",
                    "--output",
                    "oci:out:v1",
                ])
                .args(args),
            success,
        )
    };
    // The flag was typed for this run: without a push it would do nothing.
    let flag = stderr(&build(&["--tag", "v1"], false));
    assert!(
        flag.contains("--tag applies to a push: add --push"),
        "{flag}"
    );
    assert!(
        !root.join("out").exists(),
        "a refused build wrote its output"
    );
    // The file's tags (and compiler settings, which prebuilt binaries do not use) are left unused.
    std::fs::write(
        root.join("imgpack.toml"),
        "user = \"1000\"\ntags = [\"{git_short_sha}\", \"latest\"]\nlang = \"go\"\n\
         [go]\nldflags = \"-X main.v=1\"\n[rust]\nprofile = \"dev\"\n",
    )
    .unwrap();
    build(&[], true);
    let layout = Layout::new(root.join("out"));
    let index = layout.index();
    let tags: Vec<&str> = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|m| m["annotations"]["org.opencontainers.image.ref.name"].as_str())
        .collect();
    assert_eq!(tags, ["v1"], "only the output's tag");
}

/// `--compression gzip` over the file's zstd and its level: the level went with zstd.
#[test]
fn a_flags_algorithm_drops_the_files_level_for_the_other_one() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    write_static_elf(&root.join("api"), Arch::Amd64, b"code");
    std::fs::write(
        root.join("imgpack.toml"),
        "compression = \"zstd\"\ncompression_level = 10\n",
    )
    .unwrap();
    let build = |args: &[&str]| {
        run_expect(
            imgpack()
                .current_dir(root)
                .args([
                    "build",
                    "-q",
                    "--binary",
                    "linux/amd64=api",
                    "--output",
                    "oci:out:v1",
                ])
                .args(args),
            true,
        )
    };
    let gzip = printed_digest(&build(&["--compression", "gzip"]));
    let plain_gzip = printed_digest(&build(&[
        "--compression",
        "gzip",
        "--compression-level",
        "6",
    ]));
    assert_eq!(gzip, plain_gzip, "gzip at its default level 6");
    let zstd = printed_digest(&build(&[]));
    let zstd_10 = printed_digest(&build(&[
        "--compression",
        "zstd",
        "--compression-level",
        "10",
    ]));
    assert_eq!(zstd, zstd_10, "the file's own algorithm keeps its level");
}
