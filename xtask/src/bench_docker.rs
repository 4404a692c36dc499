//! `cargo xtask bench docker [--size-mb N] [--runs N]`: the Dockerfile route
//! against imgpack, for one static N MB linux/amd64 binary pushed to a loopback
//! `docker-registry`. The Dockerfile route is what a Go team runs today:
//! `docker build` of `FROM scratch` + `COPY` + `ENTRYPOINT` (the Docker
//! Engine's builder, with `--no-cache`) then `docker push`; imgpack's is one
//! `imgpack build --push` with a fresh cache. Every run of either route gets a
//! fresh, empty registry, so nothing is skipped as already present. Times are
//! reported with their ratio, never asserted.

use std::fs;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use imgpack_e2e::registry::{Registry, Setup};
use imgpack_e2e::Arch;

use crate::bench::{self, TempDir};

/// The binary's name in both images: /app/bench-app.
const APP: &str = "bench-app";

/// Wall-clock seconds of the runs of one route, split into its steps.
pub(crate) struct Route {
    pub(crate) name: &'static str,
    /// Per run: (step name, seconds) in order.
    pub(crate) runs: Vec<Vec<(&'static str, f64)>>,
}

impl Route {
    pub(crate) fn new(name: &'static str) -> Self {
        Self {
            name,
            runs: Vec::new(),
        }
    }

    fn totals(&self) -> Vec<f64> {
        self.runs
            .iter()
            .map(|steps| steps.iter().map(|(_, s)| s).sum())
            .collect()
    }

    /// The median over the runs of one step, or of the whole route for None.
    pub(crate) fn median(&self, step: Option<&str>) -> f64 {
        let values: Vec<f64> = match step {
            None => self.totals(),
            Some(name) => self
                .runs
                .iter()
                .filter_map(|steps| steps.iter().find(|(n, _)| *n == name).map(|(_, s)| *s))
                .collect(),
        };
        median(values)
    }
}

/// Each route's median time and its ratio to the first route's.
pub(crate) fn print_ratios(routes: &[&Route]) {
    println!("{:<24} {:>9} {:>11}", "route", "median s", "time ratio");
    let reference = routes[0].median(None).max(0.001);
    for route in routes {
        println!(
            "{:<24} {:>9.2} {:>10.2}x",
            route.name,
            route.median(None),
            route.median(None) / reference
        );
    }
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    match n {
        0 => 0.0,
        _ if n % 2 == 1 => values[n / 2],
        _ => (values[n / 2 - 1] + values[n / 2]) / 2.0,
    }
}

pub fn run(args: &[String]) -> Result<()> {
    let options = bench::parse_args(args, 50)?;
    check_tools()?;
    let imgpack = bench::build_imgpack()?;

    let temp = TempDir::create()?;
    let context = temp.0.join("context");
    fs::create_dir_all(&context)?;
    let binary = context.join(APP);
    bench::write_fake_binary(&binary, options.size_mb * 1_000_000, Arch::Amd64, 0)?;
    fs::write(
        context.join("Dockerfile"),
        format!("FROM scratch\nCOPY {APP} /app/{APP}\nENTRYPOINT [\"/app/{APP}\"]\n"),
    )?;

    let mut docker_route = Route::new("docker build + push");
    let mut imgpack_route = Route::new("imgpack build --push");
    for run in 1..=options.runs {
        let registry = start_registry()?;
        docker_route
            .runs
            .push(time_dockerfile_route(&context, &registry, run)?);
        drop(registry);

        let registry = start_registry()?;
        let cache = temp.0.join(format!("imgpack-cache-{run}"));
        let target = format!("{}/bench/imgpack-{}:v1", registry.host(), run);
        let mut command = Command::new(&imgpack);
        command
            .args(["build", "-q", "--name", APP])
            .arg(format!("--binary=linux/amd64={}", binary.display()))
            .args(["--push", &target])
            .env("IMGPACK_CACHE_DIR", &cache);
        let seconds = time(&mut command)?;
        fs::remove_dir_all(&cache).ok();
        imgpack_route.runs.push(vec![("build --push", seconds)]);
        eprintln!("xtask: imgpack run {run}/{}: {seconds:.2} s", options.runs);
    }
    print_report(options.size_mb, options.runs, &docker_route, &imgpack_route);
    Ok(())
}

/// A fresh plain-HTTP registry on 127.0.0.1 (the engine trusts 127.0.0.0/8 over HTTP).
fn start_registry() -> Result<Registry> {
    Registry::start(Setup::Plain)
        .context("docker-registry is missing: apt-get install docker-registry")
}

/// `docker build --no-cache` then `docker push` to `registry`; the image is
/// removed from the engine afterwards. Returns both steps' times.
fn time_dockerfile_route(
    context: &Path,
    registry: &Registry,
    run: usize,
) -> Result<Vec<(&'static str, f64)>> {
    let reference = format!(
        "{}/bench/docker-{}-{run}:v1",
        registry.host(),
        std::process::id()
    );
    let result = time(
        Command::new("docker")
            .args(["build", "--no-cache", "-q", "-t", &reference])
            .arg(context),
    )
    .and_then(|build| {
        let push = time(Command::new("docker").args(["push", "-q", &reference]))?;
        Ok((build, push))
    });
    // Removed by name, also after a failure: other users of the engine keep theirs.
    let _ = Command::new("docker")
        .args(["image", "rm", "--force", &reference])
        .output();
    let (build, push) = result?;
    eprintln!("xtask: docker run {run}: build {build:.2} s, push {push:.2} s");
    Ok(vec![("build", build), ("push", push)])
}

/// Runs `command` (output captured) and returns its wall time; fails with its stderr.
pub(crate) fn time(command: &mut Command) -> Result<f64> {
    command.stdin(Stdio::null());
    let start = Instant::now();
    let output = command
        .output()
        .with_context(|| format!("cannot start {command:?}"))?;
    let seconds = start.elapsed().as_secs_f64();
    if !output.status.success() {
        bail!(
            "{command:?} failed with {}: {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(seconds)
}

fn check_tools() -> Result<()> {
    if !crate::on_path("docker-registry") {
        bail!("docker-registry is not on PATH: apt-get install docker-registry");
    }
    crate::ci::check_docker()
}

fn print_report(size_mb: u64, runs: usize, docker: &Route, imgpack: &Route) {
    println!();
    println!("input: 1 static ELF binary (linux/amd64) of {size_mb} MB");
    println!(
        "cpus (nproc): {}, runs: {runs} (a fresh loopback docker-registry for every run of each route)",
        bench::nproc()
    );
    print_ratios(&[docker, imgpack]);
    println!(
        "docker steps (median s): build {:.2}, push {:.2}",
        docker.median(Some("build")),
        docker.median(Some("push"))
    );
    println!("imgpack's image also holds CA certificates, tzdata and a rootfs layer; docker's only the binary.");
    println!();
}
