//! The Docker Engine as a consumer: `docker load` of imgpack's docker-archive
//! output and `docker pull` of a two-platform image pushed to a registry on
//! 127.0.0.1, each platform picked by `--platform`. The image ID docker
//! computes must be the config digest imgpack wrote, and the amd64 image runs
//! with `docker run --network none` as the fixture service (rust-hello),
//! answering /ping and /selfcheck inside its own network namespace.
//! Under IMGPACK_E2E=1 a missing docker or an unreachable daemon is a failure.

use std::path::Path;

use imgpack_e2e::docker::{docker, docker_available, docker_stdout, Container, Images};
use imgpack_e2e::fixtures::check_service_with;
use imgpack_e2e::registry::{Registry, Setup};
use imgpack_e2e::runtime::is_root;
use imgpack_e2e::*;
use serde_json::Value;

/// The port rust-hello listens on without PORT.
const SERVICE_PORT: u16 = 8080;

/// Docker, a musl toolchain for the fixture and root (to enter the container's
/// network namespace) are all there; under IMGPACK_E2E=1 each must be.
fn ready() -> bool {
    if !docker_available() || probe_binary(Arch::Arm64).is_none() {
        return false;
    }
    if !is_root() {
        assert!(
            std::env::var("IMGPACK_E2E").as_deref() != Ok("1"),
            "entering a container's network namespace needs root"
        );
        return false;
    }
    true
}

/// A name no other test or helper running at the same time uses.
/// A name no other test of this run uses: the tests of one binary share a
/// process id and run in parallel, so a counter tells them apart.
fn unique(what: &str) -> String {
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("imgpack-e2e-{what}-{}-{n}", std::process::id())
}

/// Builds fixtures/rust-hello (a copy under `work`) for `platforms` with `outputs`.
fn build_rust_hello(work: &Path, platforms: &str, outputs: &[&str]) -> String {
    let project = work.join("rust-hello");
    copy_project(&workspace_root().join("fixtures/rust-hello"), &project);
    let output = run_expect(
        imgpack()
            .current_dir(work)
            .arg("build")
            .arg(&project)
            .args(["--platform", platforms, "-q"])
            .args(outputs),
        true,
    );
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

/// The config digest of each platform's manifest in the layout's `tag`, by architecture.
fn config_digests(layout: &Layout, tag: &str) -> Vec<(String, String)> {
    let entry = layout.entry(tag);
    let document = layout.json(entry["digest"].as_str().unwrap());
    let children = match document["manifests"].as_array() {
        Some(children) => children.clone(),
        None => vec![entry.clone()],
    };
    children
        .iter()
        .map(|child| {
            let manifest = layout.json(child["digest"].as_str().unwrap());
            let arch = child["platform"]["architecture"]
                .as_str()
                .map(str::to_owned)
                .unwrap_or_else(|| {
                    layout.json(manifest["config"]["digest"].as_str().unwrap())["architecture"]
                        .as_str()
                        .unwrap()
                        .to_owned()
                });
            (
                arch,
                manifest["config"]["digest"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

fn inspect(reference: &str) -> Value {
    let text = docker_stdout(&["image", "inspect", reference]);
    let list: Value = serde_json::from_str(&text).unwrap();
    list[0].clone()
}

/// Runs `image` with no network and checks the service from inside the container.
fn run_and_check(image: &str, what: &str) {
    let container = Container::run(&unique("run"), &[], image);
    let get = |path: &str| container.get(SERVICE_PORT, path);
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        check_service_with(get, what);
    }));
    if let Err(panic) = result {
        eprintln!("container log:\n{}", container.logs());
        std::panic::resume_unwind(panic);
    }
}

#[test]
fn docker_loads_the_docker_archive_and_runs_it_without_network() {
    if !ready() {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    let mut images = Images::default();
    let name = images.add(format!("{}:v1", unique("archive")));
    build_rust_hello(
        w,
        "linux/amd64",
        &[
            "--output",
            &format!("docker-archive:hello.tar:{name}"),
            "--output",
            "oci:layout:v1",
        ],
    );

    let loaded = docker_stdout(&["load", "--input", w.join("hello.tar").to_str().unwrap()]);
    assert_eq!(loaded, format!("Loaded image: {name}"));
    let image = inspect(&name);
    let configs = config_digests(&Layout::new(w.join("layout")), "v1");
    assert_eq!(
        image["Id"], configs[0].1,
        "docker's image ID is the config digest"
    );
    assert_eq!(image["Architecture"], "amd64");
    assert_eq!(image["Os"], "linux");
    assert_eq!(image["Config"]["User"], "65532:65532");
    assert_eq!(image["Config"]["Entrypoint"][0], "/app/rust-hello");
    run_and_check(&name, "docker-archive under docker run");
}

#[test]
fn docker_pulls_each_platform_of_a_pushed_index_and_runs_amd64() {
    if !ready() {
        return;
    }
    let Some(registry) = Registry::start(Setup::Plain) else {
        return;
    };
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    let reference = format!("{}/e2e/{}:v1", registry.host(), unique("pull"));
    let pushed = build_rust_hello(
        w,
        "linux/amd64,linux/arm64",
        &["--push", &reference, "--output", "oci:layout:v1"],
    );
    let index_digest = pushed.rsplit_once('@').unwrap().1.to_owned();
    let configs = config_digests(&Layout::new(w.join("layout")), "v1");
    let config_of = |arch: &str| {
        configs
            .iter()
            .find(|(a, _)| a == arch)
            .unwrap_or_else(|| panic!("no {arch} in {configs:?}"))
            .1
            .clone()
    };

    let mut images = Images::default();
    // 127.0.0.0/8 is an insecure registry for the engine by default: plain HTTP.
    images.add(&reference);
    docker(&["pull", "--quiet", "--platform", "linux/amd64", &reference]);
    let image = inspect(&reference);
    assert_eq!(image["Architecture"], "amd64");
    assert_eq!(image["Id"], config_of("amd64"));
    let repository = reference.rsplit_once(':').unwrap().0;
    assert!(
        image["RepoDigests"]
            .as_array()
            .unwrap()
            .iter()
            .any(|d| d == &format!("{repository}@{index_digest}")),
        "the pulled image names the pushed index: {}",
        image["RepoDigests"]
    );
    run_and_check(&reference, "pulled linux/amd64 under docker run");

    // arm64 cannot run here (the engine has no binfmt_misc for qemu): the
    // pull must pick the arm64 manifest and give its config.
    docker(&["image", "rm", &reference]);
    docker(&["pull", "--quiet", "--platform", "linux/arm64", &reference]);
    let image = inspect(&reference);
    assert_eq!(image["Architecture"], "arm64");
    assert_eq!(image["Id"], config_of("arm64"));
}

#[test]
fn output_docker_loads_the_daemons_platform_of_a_two_platform_build_and_it_runs() {
    if !ready() {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    let mut images = Images::default();
    let name = images.add(format!("{}:v1", unique("daemon")));
    let digest = build_rust_hello(
        w,
        "linux/arm64,linux/amd64",
        &[
            "--output",
            &format!("docker:{name}"),
            "--output",
            "oci:layout:v1",
        ],
    );
    assert!(digest.starts_with("sha256:"), "{digest}");
    let image = inspect(&name);
    let configs = config_digests(&Layout::new(w.join("layout")), "v1");
    let amd64 = configs.iter().find(|(arch, _)| arch == "amd64").unwrap();
    assert_eq!(
        image["Id"], amd64.1,
        "the daemon's platform (amd64) was loaded, and its image ID is imgpack's config digest"
    );
    assert_eq!(image["Architecture"], "amd64");
    run_and_check(&name, "docker: output under docker run");

    // The alias, with DOCKER_HOST naming the same socket, and the default tag.
    let alias = unique("alias");
    images.add(format!("{alias}:latest"));
    let project = w.join("rust-hello");
    run_expect(
        imgpack()
            .env("DOCKER_HOST", "unix:///var/run/docker.sock")
            .args(["build", "-q", "--platform", "linux/amd64"])
            .arg(&project)
            .args(["--output", &format!("docker-daemon:{alias}")]),
        true,
    );
    assert_eq!(inspect(&format!("{alias}:latest"))["Id"], amd64.1);
}

/// One clear line, exit 1, before anything is compiled (a compile would print
/// go's lines, and take seconds).
fn refused_before_work(env: &[(&str, &str)], args: &[&str]) -> String {
    let mut command = imgpack();
    command
        .arg("build")
        .arg(workspace_root().join("fixtures/go-hello"))
        .env("GOTOOLCHAIN", "local")
        .env("GOPROXY", "off")
        .args(args);
    for (key, value) in env {
        command.env(key, value);
    }
    let output = run_expect(&mut command, false);
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
    assert!(output.stdout.is_empty());
    stderr
}

#[test]
fn output_docker_refuses_what_the_daemon_cannot_take_before_any_work() {
    if !docker_available() {
        return;
    }
    let err = refused_before_work(
        &[("DOCKER_HOST", "tcp://user:hunter2@10.0.0.1:2376")],
        &["--output", "docker:x"],
    );
    assert!(
        err.contains("DOCKER_HOST is a tcp:// address") && !err.contains("hunter2"),
        "{err}"
    );
    let err = refused_before_work(
        &[("DOCKER_HOST", "unix:///nonexistent/docker.sock")],
        &["--output", "docker:x"],
    );
    assert!(
        err.contains("cannot reach the Docker daemon at /nonexistent/docker.sock")
            && err.contains("start Docker"),
        "{err}"
    );
    let err = refused_before_work(&[], &["--platform", "linux/arm64", "--output", "docker:x"]);
    assert!(
        err.contains("the Docker daemon runs linux/amd64 but the image is for linux/arm64: add --platform linux/amd64"),
        "{err}"
    );
    let err = refused_before_work(&[], &["--output", "docker:Bad"]);
    assert!(err.contains("bad image name 'Bad'"), "{err}");
}

#[test]
fn output_docker_refuses_zstd_layers_on_an_engine_before_23() {
    if !ready() {
        return;
    }
    let version = docker_stdout(&["version", "--format", "{{.Server.Version}}"]);
    let major: u32 = version.split('.').next().unwrap().parse().unwrap();
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    let project = w.join("rust-hello");
    copy_project(&workspace_root().join("fixtures/rust-hello"), &project);
    let mut images = Images::default();
    let name = images.add(format!("{}:v1", unique("zstd")));
    let output = run_expect(
        imgpack()
            .args(["build", "-q", "--platform", "linux/amd64"])
            .arg(&project)
            .args([
                "--compression",
                "zstd",
                "--output",
                &format!("docker:{name}"),
            ]),
        major >= 23,
    );
    if major < 23 {
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            stderr.contains(&format!("Docker Engine {version} cannot read zstd layers"))
                && stderr.contains("--compression gzip"),
            "{stderr}"
        );
        let listed = docker_stdout(&["images", "--quiet", &name]);
        assert!(listed.is_empty(), "nothing loaded: {listed}");
    }
}
