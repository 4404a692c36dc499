//! `cargo xtask image`: imgpack packing itself (the dogfood case). Builds
//! imgpack as a static musl binary and runs that very binary to put it into
//! an image, so what ships is what was tested.
//!
//! cargo xtask image [--profile release|dev] [--output SPEC]... [--push REF [--tag T]...]
//! Prints the image's digest (or pushed reference) as the last line.

use std::path::PathBuf;
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::{on_path, run, workspace_root};

const TARGET: &str = "x86_64-unknown-linux-musl";

pub fn run_image(args: &[String]) -> Result<()> {
    let mut profile = "release".to_owned();
    let mut pack_args: Vec<String> = Vec::new();
    let mut rest = args.iter();
    while let Some(arg) = rest.next() {
        match arg.as_str() {
            "--profile" => profile = rest.next().context("--profile needs a value")?.clone(),
            "--output"
            | "-o"
            | "--push"
            | "--tag"
            | "--image-refs"
            | "--insecure-registry"
            | "--registry-ca" => {
                pack_args.push(arg.clone());
                pack_args.push(
                    rest.next()
                        .with_context(|| format!("{arg} needs a value"))?
                        .clone(),
                );
            }
            "-q" | "--quiet" => pack_args.push(arg.clone()),
            other => bail!(
                "unknown argument '{other}': use --profile, --output, --push, --tag, --image-refs, \
                 --insecure-registry, --registry-ca or -q"
            ),
        }
    }
    if !pack_args
        .iter()
        .any(|a| a == "--output" || a == "-o" || a == "--push")
    {
        let default = workspace_root().join("target/imgpack-image");
        pack_args.extend([
            "--output".to_owned(),
            format!("oci:{}:latest", default.display()),
        ]);
    }
    let binary = build_static(&profile)?;
    // The static binary runs here too: it packs itself.
    run(Command::new(&binary)
        .args(["build", "--name", "imgpack", "--binary"])
        .arg(format!("linux/amd64={}", binary.display()))
        .args(&pack_args))
}

/// `cargo build --target x86_64-unknown-linux-musl -p imgpack`; returns the binary.
pub(crate) fn build_static(profile: &str) -> Result<PathBuf> {
    let root = workspace_root();
    let mut cargo = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cargo.current_dir(&root).args([
        "build",
        "-p",
        "imgpack",
        "--target",
        TARGET,
        "--profile",
        profile,
    ]);
    // aws-lc and zstd are C: they need a C compiler for musl (Debian: musl-tools).
    let cc_variable = "CC_x86_64_unknown_linux_musl";
    if std::env::var_os(cc_variable).is_none() {
        if !on_path("musl-gcc") {
            bail!("building imgpack for {TARGET} needs musl-gcc for its C dependencies: apt-get install musl-tools");
        }
        cargo.env(cc_variable, "musl-gcc");
    }
    run(&mut cargo)?;
    let target_dir = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"));
    let profile_dir = if profile == "dev" { "debug" } else { profile };
    Ok(target_dir.join(TARGET).join(profile_dir).join("imgpack"))
}
