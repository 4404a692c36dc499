//! `cargo xtask bench load [--size-mb N] [--runs N]`: getting an image into
//! the local Docker Engine, for one static N MB linux/amd64 binary:
//! `imgpack build --output docker:NAME` (the archive streamed to the engine's
//! socket) against `imgpack build --output docker-archive:FILE` then
//! `docker load -i FILE`. Each run has a fresh layer cache and a name of its
//! own, removed from the engine afterwards. Times are reported with their
//! ratio, never asserted.

use std::path::Path;
use std::process::Command;

use anyhow::Result;
use imgpack_e2e::Arch;

use crate::bench::{self, TempDir};
use crate::bench_docker::{print_ratios, time, Route};

/// The binary's name in the image: /app/bench-app.
const APP: &str = "bench-app";

pub fn run(args: &[String]) -> Result<()> {
    let options = bench::parse_args(args, 50)?;
    crate::ci::check_docker()?;
    let imgpack = bench::build_imgpack()?;
    let temp = TempDir::create()?;
    let binary = temp.0.join(APP);
    bench::write_fake_binary(&binary, options.size_mb * 1_000_000, Arch::Amd64, 0)?;

    let mut archive_route = Route::new("docker-archive + load");
    let mut daemon_route = Route::new("--output docker:");
    for run in 1..=options.runs {
        let name = format!("imgpack-bench-load-{}-{run}", std::process::id());
        let archive = temp.0.join(format!("image-{run}.tar"));
        let result = (|| -> Result<()> {
            let build = time(
                imgpack_build(&imgpack, &binary, &temp.0, run, "a").arg(format!(
                    "--output=docker-archive:{}:{name}:a",
                    archive.display()
                )),
            )?;
            let load = time(
                Command::new("docker")
                    .args(["load", "-q", "-i"])
                    .arg(&archive),
            )?;
            archive_route
                .runs
                .push(vec![("build", build), ("docker load", load)]);
            let direct = time(
                imgpack_build(&imgpack, &binary, &temp.0, run, "d")
                    .arg(format!("--output=docker:{name}:d")),
            )?;
            daemon_route.runs.push(vec![("build and load", direct)]);
            eprintln!(
                "xtask: run {run}/{}: archive {build:.2} s + load {load:.2} s; docker: {direct:.2} s",
                options.runs
            );
            Ok(())
        })();
        for tag in ["a", "d"] {
            let _ = Command::new("docker")
                .args(["image", "rm", "--force", &format!("{name}:{tag}")])
                .output();
        }
        std::fs::remove_file(&archive).ok();
        result?;
    }
    println!();
    println!(
        "input: 1 static ELF binary (linux/amd64) of {} MB, into the local Docker Engine",
        options.size_mb
    );
    println!(
        "cpus (nproc): {}, runs: {} (a fresh layer cache for every build)",
        bench::nproc(),
        options.runs
    );
    print_ratios(&[&archive_route, &daemon_route]);
    println!(
        "archive steps (median s): build {:.2}, docker load {:.2}",
        archive_route.median(Some("build")),
        archive_route.median(Some("docker load"))
    );
    println!();
    Ok(())
}

/// `imgpack build` of the binary with a layer cache of its own for this run and route.
fn imgpack_build(imgpack: &Path, binary: &Path, temp: &Path, run: usize, route: &str) -> Command {
    let cache = temp.join(format!("cache-{route}-{run}"));
    let mut command = Command::new(imgpack);
    command
        .args(["build", "-q", "--name", APP])
        .arg(format!("--binary=linux/amd64={}", binary.display()))
        .env("IMGPACK_CACHE_DIR", cache);
    command
}
