//! `cargo xtask ci`: install what the tests need, then format check, clippy and every test.
//! `cargo xtask bench`: time and memory of imgpack against a shell pipeline doing the same work.
//! `cargo xtask dist`: static release binaries for linux/amd64 and linux/arm64, man pages,
//! completions and SHA256SUMS in target/dist.
//! `cargo xtask image`: both binaries, packed into one two-platform image by imgpack itself;
//! with `--toolchain go|rust`, a builder image holding a compiler too.

mod bench;
mod bench_docker;
mod bench_load;
mod bench_push;
mod bench_suite;
mod builder_image;
mod ci;
mod dist;
mod image;
mod sbom_venv;
mod test_lanes;

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use anyhow::{bail, Context, Result};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("ci") => ci::run_ci(),
        Some("bench") => bench::run(&args[1..]),
        Some("dist") => dist::run_dist(&args[1..]),
        Some("image") if args.iter().any(|a| a == "--toolchain") => {
            builder_image::run_builder_image(&args[1..])
        }
        Some("image") => image::run_image(&args[1..]),
        _ => {
            eprintln!("usage: cargo xtask ci | bench | dist | image");
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("xtask: error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// The workspace root (xtask lives one level below it).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask is inside the workspace")
        .to_owned()
}

/// Runs `command`, echoing it, and fails if it fails.
pub fn run(command: &mut Command) -> Result<()> {
    eprintln!("xtask: running {command:?}");
    let status = command
        .status()
        .with_context(|| format!("cannot start {command:?}"))?;
    if !status.success() {
        bail!("{command:?} failed with {status}");
    }
    Ok(())
}

pub fn on_path(tool: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(tool).is_file()))
}
