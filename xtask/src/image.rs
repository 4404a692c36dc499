//! `cargo xtask image`: imgpack packing itself (the dogfood case). Builds
//! imgpack as static musl binaries for linux/amd64 and linux/arm64 (see
//! `dist`) and runs the amd64 one to put both into one two-platform image,
//! so what ships is what was tested, and a Kubernetes Job runs on arm64 nodes too.
//!
//! cargo xtask image [--profile release|dev] [--output SPEC]... [--push REF [--tag T]...]
//! Without --output or --push: an OCI layout at target/imgpack-image (tag latest).
//! Prints the image's digest (or pushed reference) as the last line.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::dist::{self, Built};
use crate::run;

/// The flags of `imgpack build` that `cargo xtask image` passes through, with a value.
const PASSED_WITH_VALUE: [&str; 7] = [
    "--output",
    "-o",
    "--push",
    "--tag",
    "--image-refs",
    "--insecure-registry",
    "--registry-ca",
];

pub fn run_image(args: &[String]) -> Result<()> {
    let mut profile = "release".to_owned();
    let mut pack_args: Vec<String> = Vec::new();
    let mut rest = args.iter();
    while let Some(arg) = rest.next() {
        match arg.as_str() {
            "--profile" => profile = rest.next().context("--profile needs a value")?.clone(),
            flag if PASSED_WITH_VALUE.contains(&flag) => {
                let value = rest
                    .next()
                    .with_context(|| format!("{arg} needs a value"))?;
                pack_args.extend([arg.clone(), value.clone()]);
            }
            "-q" | "--quiet" => pack_args.push(arg.clone()),
            other => bail!(
                "unknown argument '{other}': use --profile, {} or -q",
                PASSED_WITH_VALUE.join(", ")
            ),
        }
    }
    if !pack_args
        .iter()
        .any(|a| a == "--output" || a == "-o" || a == "--push")
    {
        pack_args.extend(["--output".to_owned(), default_output()]);
    }
    let built = dist::build_static(&profile)?;
    let binaries: Vec<(String, PathBuf)> = built
        .iter()
        .map(|b| (b.target.platform(), b.path.clone()))
        .collect();
    pack(native(&built)?, "imgpack", &binaries, &pack_args)
}

/// `oci:target/imgpack-image:latest`.
pub fn default_output() -> String {
    format!(
        "oci:{}:latest",
        dist::target_dir().join("imgpack-image").display()
    )
}

/// The build that runs on this machine (amd64), which packs the image.
pub fn native(built: &[Built]) -> Result<&Path> {
    built
        .iter()
        .find(|b| b.target.arch == imgpack_platform::Arch::Amd64)
        .map(|b| b.path.as_path())
        .context("no linux/amd64 build of imgpack to run")
}

/// Runs `imgpack build --name NAME --binary PLATFORM=PATH… EXTRA…` with the
/// given imgpack: one image, one platform per binary, /app/NAME the
/// entrypoint. `extra` holds the outputs and any further image flags
/// (`--base`, `--env`, `--label`, …).
pub fn pack(
    imgpack: &Path,
    name: &str,
    binaries: &[(String, PathBuf)],
    extra: &[String],
) -> Result<()> {
    run(pack_command(imgpack, name, binaries).args(extra))
}

/// `imgpack build --name NAME --binary PLATFORM=PATH…`, for callers that add
/// their own flags, directory or environment.
pub fn pack_command(imgpack: &Path, name: &str, binaries: &[(String, PathBuf)]) -> Command {
    let mut command = Command::new(imgpack);
    command.args(["build", "--name", name]);
    for (platform, path) in binaries {
        command
            .arg("--binary")
            .arg(format!("{platform}={}", path.display()));
    }
    command
}
