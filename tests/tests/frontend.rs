//! imgpack compiling projects: the Gin service, a stdlib Go service and a
//! std-only Rust service, each built for linux/amd64 and linux/arm64, pushed
//! to a registry on 127.0.0.1, pulled back, unpacked and run (amd64 under
//! runc, arm64 under qemu-user), answering /ping and /selfcheck.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use imgpack_e2e::registry::{Registry, Setup};
use imgpack_e2e::runtime::{check_service, free_port, is_root, prepare_for_runc, unpack, Service};
use imgpack_e2e::*;
use serde_json::Value;

/// A fixture ready to build: where its package is and the environment it needs.
struct Project {
    dir: PathBuf,
    env: Vec<(String, String)>,
    /// The binary's name, so /app/<name> is the entrypoint.
    name: &'static str,
}

/// Copies fixture `name` under `work` and returns how to build it. The Gin
/// app builds offline in GOPATH mode against Debian's Gin in /usr/share/gocode;
/// its import path is fixed (example.com/gin-app) wherever the copy lives.
fn project(name: &'static str, work: &Path) -> Option<Project> {
    let fixture = workspace_root().join("fixtures").join(name);
    match name {
        "gin-app" => {
            if !have_tool("go")
                || !Path::new("/usr/share/gocode/src/github.com/gin-gonic/gin").is_dir()
            {
                assert!(
                    std::env::var("IMGPACK_E2E").as_deref() != Ok("1"),
                    "Gin from golang-github-gin-gonic-gin-dev is missing"
                );
                return None;
            }
            let gopath = work.join("gopath");
            let dir = gopath.join("src/example.com/gin-app");
            copy_project(&fixture, &dir);
            let env = vec![
                ("GO111MODULE".into(), "off".into()),
                (
                    "GOPATH".into(),
                    format!("{}:/usr/share/gocode", gopath.display()),
                ),
            ];
            Some(Project {
                dir,
                env,
                name: "gin-app",
            })
        }
        "go-hello" => {
            if !have_tool("go") {
                return None;
            }
            let dir = work.join("go-hello");
            copy_project(&fixture, &dir);
            let env = vec![
                ("GOFLAGS".into(), "-mod=mod".into()),
                ("GOPROXY".into(), "off".into()),
            ];
            Some(Project {
                dir,
                env,
                name: "go-hello",
            })
        }
        "rust-hello" => {
            probe_binary(Arch::Arm64)?; // makes sure the musl targets are installed
            let dir = work.join("rust-hello");
            copy_project(&fixture, &dir);
            Some(Project {
                dir,
                env: Vec::new(),
                name: "rust-hello",
            })
        }
        other => panic!("no fixture {other}"),
    }
}

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
    if is_root() {
        let _service = Service::runc(
            &amd64,
            &w.join("runc"),
            &format!("e2e-{fixture}-{}", std::process::id()),
        );
        check_service(port, &format!("{fixture} linux/amd64"));
    } else {
        assert!(
            std::env::var("IMGPACK_E2E").as_deref() != Ok("1"),
            "runc needs root"
        );
    }

    // arm64 under qemu-user, reading the image's files through -L.
    let arm64 = unpack(&pulled, &[], "arm64", w);
    let env: Vec<String> = imgpack_e2e::runtime::bundle_config(&arm64)["process"]["env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_owned())
        .chain([format!("PORT={}", free_port())])
        .collect();
    let port: u16 = env
        .last()
        .unwrap()
        .trim_start_matches("PORT=")
        .parse()
        .unwrap();
    let _service = Service::qemu_aarch64(
        &arm64.join("rootfs"),
        &format!("/app/{}", project.name),
        &env,
    );
    check_service(port, &format!("{fixture} linux/arm64"));
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
    for fixture in ["gin-app", "go-hello", "rust-hello"] {
        let digests: Vec<String> = (0..2)
            .map(|_| {
                let work = tempfile::tempdir().unwrap();
                let Some(project) = project(fixture, work.path()) else {
                    return String::new();
                };
                let layout = format!("oci:{}:v1", work.path().join("out").display());
                printed_digest(&build(&project, &["-q", "--output", &layout]))
            })
            .collect();
        assert_eq!(digests[0], digests[1], "{fixture} built in two directories");
    }
}

fn write(dir: &Path, files: &[(&str, &str)]) {
    for (path, text) in files {
        let path = dir.join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }
}

fn fails(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> String {
    let output = run_expect(
        imgpack()
            .arg("build")
            .arg(dir)
            .args(args)
            .args(["--output", "oci:/dev/null/never"])
            .envs(env.iter().copied()),
        false,
    );
    let err = stderr(&output);
    assert!(
        err.trim_end()
            .lines()
            .last()
            .unwrap()
            .starts_with("error: "),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");
    err
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
        assert!(err.contains("go build for linux/arm64 failed"), "{err}");
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
        let err = fails(&w.join("multi"), &["--platform", "linux/amd64"], &[]);
        assert!(
            err.contains("several binaries (api, worker): choose one with --bin"),
            "{err}"
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
    git(&[
        "-c",
        "user.name=ci",
        "-c",
        "user.email=ci@example.invalid",
        "commit",
        "-q",
        "-m",
        "init",
    ]);
    git(&[
        "remote",
        "add",
        "origin",
        "https://ci-bot:s3cret-token@git.example.invalid/team/rust-hello.git",
    ]);
    let sha = git(&["rev-parse", "HEAD"]);

    let repo = format!("{}/team", registry.host());
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
                "-q",
            ])
            .env("IMGPACK_REPO", &repo),
        true,
    );
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
        assert!(annotations["org.opencontainers.image.created"]
            .as_str()
            .unwrap()
            .ends_with('Z'));
    }
    assert!(!String::from_utf8_lossy(&output.stderr).contains("s3cret-token"));

    let err = stderr(&run_expect(
        imgpack()
            .arg("build")
            .arg(&project.dir)
            .args(["--push"])
            .env_remove("IMGPACK_REPO"),
        false,
    ));
    assert!(err.contains("set IMGPACK_REPO"), "{err}");
    let err = stderr(&run_expect(
        imgpack()
            .arg("build")
            .arg(&project.dir)
            .args(["--push", "--tag", "{branch}"])
            .env("IMGPACK_REPO", &repo),
        false,
    ));
    assert!(err.contains("unknown placeholder {branch}"), "{err}");
}
