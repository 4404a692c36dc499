//! imgpack compiling projects: the Gin service, a stdlib Go service and a
//! std-only Rust service, each built for linux/amd64 and linux/arm64, pushed
//! to a registry on 127.0.0.1, pulled back, unpacked and run (amd64 under
//! runc, arm64 under qemu-user), answering /ping and /selfcheck.

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use imgpack_e2e::fixtures::{check_service_with, project, Project, SERVICES};
use imgpack_e2e::http::{free_port, get_when_up, Response};
use imgpack_e2e::registry::{Registry, Setup};
use imgpack_e2e::runtime::{prepare_for_runc, runc_allowed, unpack, Service};
use imgpack_e2e::*;
use serde_json::Value;

/// How long a service may take to answer its first request (Gin under qemu on a busy machine).
const SERVICE_PATIENCE: Duration = Duration::from_secs(90);

fn build(project: &Project, args: &[&str]) -> Output {
    run_expect(
        imgpack()
            .arg("build")
            .arg(&project.dir)
            .args(["--platform", "linux/amd64,linux/arm64"])
            .args(args)
            .envs(project.env.iter().map(|(k, v)| (k, v))),
        true,
    )
}

fn get(port: u16, path: &str) -> Response {
    get_when_up(&format!("127.0.0.1:{port}"), path, SERVICE_PATIENCE)
}

fn check_service(port: u16, what: &str) {
    check_service_with(|path| get(port, path), what);
}

/// Builds `fixture` for two platforms, pushes it, pulls it back and runs both platforms.
fn build_push_pull_run(fixture: &'static str) {
    for tool in ["skopeo", "umoci", "runc", "qemu-aarch64-static"] {
        if !have_tool(tool) {
            return;
        }
    }
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    let Some(project) = project(fixture, w) else {
        return;
    };
    let Some(registry) = Registry::start(Setup::Plain) else {
        return;
    };
    let target = format!("{}/fixtures/{fixture}:v1", registry.host());
    let output = build(&project, &["--push", &target]);
    let pushed = String::from_utf8_lossy(&output.stdout).trim().to_owned();
    assert!(
        pushed.starts_with(&format!("{}/fixtures/{fixture}@sha256:", registry.host())),
        "{pushed}"
    );

    let pulled = format!("oci:{}:v1", w.join("pulled").display());
    run_expect(
        Command::new("skopeo").args([
            "copy",
            "--all",
            "--src-tls-verify=false",
            &format!("docker://{target}"),
            &pulled,
        ]),
        true,
    );

    // amd64 under runc, in the host's network so the test can reach it.
    let amd64 = unpack(&pulled, &[], "amd64", w);
    let port = free_port();
    let config = prepare_for_runc(&amd64, true, &[("PORT", &port.to_string())]);
    assert_eq!(
        config["process"]["args"][0],
        format!("/app/{}", project.name)
    );
    if runc_allowed() {
        let _service = Service::runc(
            &amd64,
            &w.join("runc"),
            &format!("e2e-{fixture}-{}", std::process::id()),
        );
        check_service(port, &format!("{fixture} linux/amd64"));
    }

    // arm64 under qemu-user, with the image's files as its whole root file system.
    let arm64 = unpack(&pulled, &[], "arm64", w);
    let port = free_port();
    let service = Service::arm64_isolated(&arm64, &[("PORT", &port.to_string())]);
    check_service(port, &format!("{fixture} linux/arm64"));
    drop(service);

    // The same binary in an image without CA certificates fails its /selfcheck: the host's
    // bundle is out of reach, so what passed above came from the image.
    let binary = arm64.join("rootfs/app").join(project.name);
    let bare = w.join("bare");
    run_expect(
        imgpack()
            .args(["build", "-q", "--ca-certs", "none", "--name", project.name])
            .arg(format!("--binary=linux/arm64={}", binary.display()))
            .arg(format!("--output=oci:{}:bare", bare.display())),
        true,
    );
    let bare = unpack(
        &format!("oci:{}:bare", bare.display()),
        &[],
        "arm64",
        &w.join("unpacked-bare"),
    );
    let port = free_port();
    let _service = Service::arm64_isolated(&bare, &[("PORT", &port.to_string())]);
    assert_eq!(
        get(port, "/ping").status,
        200,
        "{fixture} without CA certificates"
    );
    let selfcheck = get(port, "/selfcheck");
    assert_eq!(
        selfcheck.status,
        500,
        "{fixture} linux/arm64 without CA certificates passed /selfcheck: {}",
        selfcheck.text()
    );
}

#[test]
fn gin_app_builds_pushes_and_serves_on_amd64_and_arm64() {
    build_push_pull_run("gin-app");
}

#[test]
fn go_hello_builds_pushes_and_serves_on_amd64_and_arm64() {
    build_push_pull_run("go-hello");
}

#[test]
fn rust_hello_builds_pushes_and_serves_on_amd64_and_arm64() {
    build_push_pull_run("rust-hello");
}

#[test]
fn a_copy_in_another_directory_gives_the_same_index_digest() {
    for fixture in SERVICES {
        let mut digests = Vec::new();
        for _copy in 0..2 {
            let work = tempfile::tempdir().unwrap();
            // None is a skip notice (a panic under IMGPACK_E2E=1): nothing to compare.
            let Some(project) = project(fixture, work.path()) else {
                break;
            };
            let layout = format!("oci:{}:v1", work.path().join("out").display());
            digests.push(printed_digest(&build(
                &project,
                &["-q", "--output", &layout],
            )));
        }
        match &digests[..] {
            [first, second] => assert_eq!(first, second, "{fixture} built in two directories"),
            [] => eprintln!("skipping {fixture}: its toolchain is missing"),
            _ => panic!("{fixture} could be built in one directory only"),
        }
    }
}

fn write(dir: &Path, files: &[(&str, &str)]) {
    for (path, text) in files {
        let path = dir.join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }
}

/// The whole stderr of a failed build of `dir` (run with -q): exit code 1, as for every build
/// error, nothing written, and one error line after the compiler's output, if any.
fn fails(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> String {
    let out = tempfile::tempdir().unwrap();
    let output = run_expect(
        imgpack()
            .args(["build", "-q"])
            .arg(dir)
            .args(args)
            .arg("--output")
            .arg(format!("oci:{}", out.path().join("never").display()))
            .envs(env.iter().copied()),
        false,
    );
    assert!(!out.path().join("never").exists(), "a failed build wrote");
    error_line(&output);
    stderr(&output)
}

#[test]
fn frontend_errors_are_clear() {
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    let go_main = "package main\n\nfunc main() {}\n";
    write(
        w,
        &[
            ("ok/main.go", go_main),
            ("ok/go.mod", "module example.com/ok\n\ngo 1.19\n"),
        ],
    );
    let empty = w.join("empty-path");
    std::fs::create_dir(&empty).unwrap();

    // No go on PATH.
    let err = fails(&w.join("ok"), &[], &[("PATH", empty.to_str().unwrap())]);
    assert!(err.contains("`go` is not on PATH"), "{err}");
    // Neither Go nor Rust.
    let err = fails(&empty, &[], &[]);
    assert!(err.contains("neither Go files nor a Cargo.toml"), "{err}");
    // Unknown platform string.
    let err = fails(&w.join("ok"), &["--platform", "linux/sparc"], &[]);
    assert!(err.contains("unknown architecture 'sparc'"), "{err}");

    if have_tool("go") {
        // A compile error shows the compiler's own message.
        write(
            w,
            &[
                (
                    "broken/main.go",
                    "package main\n\nfunc main() { undefined_thing() }\n",
                ),
                ("broken/go.mod", "module example.com/broken\n\ngo 1.19\n"),
            ],
        );
        let err = fails(
            &w.join("broken"),
            &["--platform", "linux/arm64"],
            &[("GOFLAGS", "-mod=mod")],
        );
        assert!(err.contains("undefined: undefined_thing"), "{err}");
        assert!(
            err.contains("error: go build failed for linux/arm64: the compiler's output is above"),
            "{err}"
        );
        // Every failed platform is named, in the order given.
        let err = fails(
            &w.join("broken"),
            &["--platform", "linux/arm64,linux/amd64,linux/386"],
            &[("GOFLAGS", "-mod=mod")],
        );
        assert!(
            err.contains("error: go build failed for linux/arm64, linux/amd64 and linux/386:"),
            "{err}"
        );
        // cgo makes a dynamic binary: refused, saying why and what to change.
        write(w, &[("cgo/main.go", "package main\n\n// int one() { return 1; }\nimport \"C\"\n\nfunc main() { _ = C.one() }\n"), ("cgo/go.mod", "module example.com/cgo\n\ngo 1.19\n")]);
        let err = fails(
            &w.join("cgo"),
            &["--platform", "linux/amd64"],
            &[("CGO_ENABLED", "1"), ("GOFLAGS", "-mod=mod")],
        );
        assert!(
            err.contains("dynamically linked") && err.contains("CGO_ENABLED=0"),
            "{err}"
        );
    }

    if probe_binary(Arch::Amd64).is_some() {
        let manifest =
            "[package]\nname = \"multi\"\nversion = \"0.1.0\"\nedition = \"2021\"\n\n[workspace]\n";
        write(
            w,
            &[
                ("multi/Cargo.toml", manifest),
                ("multi/src/bin/api.rs", "fn main() {}\n"),
                ("multi/src/bin/worker.rs", "fn main() {}\n"),
            ],
        );
        // Found from `cargo metadata`, before cargo compiles anything.
        let target_dir = w.join("multi-target");
        let err = fails(
            &w.join("multi"),
            &["--platform", "linux/amd64"],
            &[("CARGO_TARGET_DIR", target_dir.to_str().unwrap())],
        );
        assert!(
            err.contains("several binaries (api, worker): choose one with --bin"),
            "{err}"
        );
        assert!(
            !target_dir.exists(),
            "cargo built before the binaries were counted"
        );
        let err = fails(&w.join("multi"), &["--platform", "linux/s390x"], &[]);
        assert!(
            err.contains("Rust builds support") && err.contains("not linux/s390x"),
            "{err}"
        );
    }
}

#[test]
fn imgpack_repo_tag_templates_and_source_annotations_come_from_git() {
    if !have_tool("skopeo") || !have_tool("git") {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let Some(project) = project("rust-hello", work.path()) else {
        return;
    };
    let Some(registry) = Registry::start(Setup::Plain) else {
        return;
    };
    let git = |args: &[&str]| {
        let output = Command::new("git")
            .arg("-C")
            .arg(&project.dir)
            .args(args)
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "git {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).unwrap().trim().to_owned()
    };
    git(&["init", "-q"]);
    git(&["add", "."]);
    // The commit time is not now and not the author time: `created` must be the commit's.
    let commit = Command::new("git")
        .arg("-C")
        .arg(&project.dir)
        .args(["-c", "user.name=ci", "-c", "user.email=ci@example.invalid"])
        .args(["commit", "-q", "-m", "init"])
        .env("GIT_AUTHOR_DATE", "2019-01-02T03:04:05Z")
        .env("GIT_COMMITTER_DATE", "2021-03-04T05:06:07Z")
        .status()
        .unwrap();
    assert!(commit.success(), "git commit failed");
    git(&[
        "remote",
        "add",
        "origin",
        "https://ci-bot:s3cret-token@git.example.invalid/team/rust-hello.git",
    ]);
    let sha = git(&["rev-parse", "HEAD"]);

    let repo = format!("{}/team", registry.host());
    // Not quiet: every progress line is searched for the remote's token below.
    let output = run_expect(
        imgpack()
            .arg("build")
            .arg(&project.dir)
            .args([
                "--platform",
                "linux/amd64",
                "--push",
                "--tag",
                "{git_short_sha}",
                "--tag",
                "latest",
            ])
            .env("IMGPACK_REPO", &repo),
        true,
    );
    let secrets = secret_forms("ci-bot", "s3cret-token");
    assert_no_secrets("imgpack build --push", &output, &secrets);
    let pushed = String::from_utf8_lossy(&output.stdout).trim().to_owned();
    assert!(
        pushed.starts_with(&format!("{repo}/rust-hello@sha256:")),
        "{pushed}"
    );
    for tag in [&sha[..7], "latest"] {
        let raw = Command::new("skopeo")
            .args([
                "inspect",
                "--raw",
                "--tls-verify=false",
                &format!("docker://{repo}/rust-hello:{tag}"),
            ])
            .output()
            .unwrap();
        assert!(raw.status.success(), "tag {tag} missing");
        let manifest: Value = serde_json::from_slice(&raw.stdout).unwrap();
        let annotations = &manifest["annotations"];
        assert_eq!(annotations["org.opencontainers.image.revision"], sha);
        assert_eq!(
            annotations["org.opencontainers.image.source"],
            "https://git.example.invalid/team/rust-hello.git"
        );
        assert_eq!(
            annotations["org.opencontainers.image.created"], "2021-03-04T05:06:07Z",
            "created is the commit time"
        );
    }

    let failed = run_expect(
        imgpack()
            .args(["build", "-q"])
            .arg(&project.dir)
            .args(["--push"])
            .env_remove("IMGPACK_REPO"),
        false,
    );
    assert_no_secrets("build --push without IMGPACK_REPO", &failed, &secrets);
    let err = error_line(&failed);
    assert!(err.contains("set IMGPACK_REPO"), "{err}");
    let failed = run_expect(
        imgpack()
            .args(["build", "-q"])
            .arg(&project.dir)
            .args(["--push", "--tag", "{branch}"])
            .env("IMGPACK_REPO", &repo),
        false,
    );
    assert_no_secrets("build --push --tag {branch}", &failed, &secrets);
    let err = error_line(&failed);
    assert!(err.contains("unknown placeholder {branch}"), "{err}");
}
