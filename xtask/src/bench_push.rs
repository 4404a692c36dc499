//! `cargo xtask bench push [--size-mb N] [--runs N]`: wall time of
//! `imgpack push` of a two-platform image (linux/amd64 and linux/arm64, one
//! N MB static binary each) from an OCI layout to a loopback
//! `docker-registry`, next to `skopeo copy --all` of the same layout to the
//! same kind of registry. Every run of either tool gets a fresh, empty
//! registry (the end-to-end tests' harness, imgpack_e2e::registry), so nothing
//! is skipped as already present. Speed is reported as a ratio to skopeo, never
//! asserted.

use std::fs;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use imgpack_e2e::registry::{Registry, Setup};
use imgpack_e2e::Arch;

use crate::bench::{self, Options, TempDir};

/// Repository and tag both tools push to.
const TARGET_REPOSITORY: &str = "bench/app";
const TARGET_TAG: &str = "v1";

/// Wall-clock times of one tool over all runs, and what it pushed.
struct Row {
    name: &'static str,
    seconds: Vec<f64>,
    /// `Docker-Content-Digest` of the pushed tag, from the last run.
    digest: String,
}

impl Row {
    fn new(name: &'static str) -> Self {
        Self {
            name,
            seconds: Vec::new(),
            digest: String::new(),
        }
    }

    /// The middle time, or the mean of the two middle ones for an even count.
    fn median(&self) -> f64 {
        let mut sorted = self.seconds.clone();
        sorted.sort_by(f64::total_cmp);
        let n = sorted.len();
        if n % 2 == 1 {
            sorted[n / 2]
        } else {
            (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0
        }
    }

    fn min(&self) -> f64 {
        self.seconds.iter().copied().fold(f64::INFINITY, f64::min)
    }
}

/// The blobs of the layout: what either tool has to upload.
struct LayoutSize {
    blobs: usize,
    total: u64,
    /// The two largest blobs: the app layers of the two platforms.
    largest: Vec<u64>,
}

pub fn run(args: &[String]) -> Result<()> {
    let options = bench::parse_args(args, 50)?;
    check_tools()?;
    let imgpack = bench::build_imgpack()?;

    let temp = TempDir::create()?;
    let size = options.size_mb * 1_000_000;
    // Names that differ only by a platform suffix, so the image runs /app/bench-app.
    let amd64 = temp.0.join("bench-app-amd64");
    let arm64 = temp.0.join("bench-app-arm64");
    bench::write_fake_binary(&amd64, size, Arch::Amd64, 0)?;
    // The arm64 payload starts where the amd64 one ends, so the layers differ.
    bench::write_fake_binary(&arm64, size, Arch::Arm64, size)?;

    let layout = temp.0.join("layout");
    let source = format!("oci:{}:bench", layout.display());
    crate::run(
        Command::new(&imgpack)
            .args(["build", "-q"])
            .arg(format!("--binary=linux/amd64={}", amd64.display()))
            .arg(format!("--binary=linux/arm64={}", arm64.display()))
            .arg(format!("--output={source}"))
            // -q prints the digest: keep it out of the report.
            .stdout(Stdio::null()),
    )?;
    let layout_size = layout_size(&layout)?;

    let mut imgpack_row = Row::new("imgpack push");
    let mut skopeo_row = Row::new("skopeo copy --all");
    for run in 1..=options.runs {
        let imgpack_cache = temp.0.join(format!("imgpack-cache-{run}"));
        fs::create_dir_all(&imgpack_cache)?;
        time_push(run, options.runs, &mut imgpack_row, |target| {
            let mut command = Command::new(&imgpack);
            command
                .args(["push", "-q", &source, target])
                // A fresh cache: no remembered blob locations, so no mount shortcut.
                .env("IMGPACK_CACHE_DIR", &imgpack_cache);
            command
        })?;
        fs::remove_dir_all(&imgpack_cache)?;

        time_push(run, options.runs, &mut skopeo_row, |target| {
            let mut command = Command::new("skopeo");
            command
                .args(["copy", "-q", "--all", "--dest-tls-verify=false", &source])
                .arg(format!("docker://{target}"));
            command
        })?;
    }

    print_report(&options, size, &layout_size, &imgpack_row, &skopeo_row);
    println!(
        "bench push: imgpack {:.2}x the time of skopeo copy --all (median {:.2} s vs {:.2} s; \
         2 platforms x {} MB binary, {:.1} MB compressed; {} runs)",
        imgpack_row.median() / skopeo_row.median().max(0.001),
        imgpack_row.median(),
        skopeo_row.median(),
        options.size_mb,
        layout_size.total as f64 / 1e6,
        options.runs,
    );
    Ok(())
}

/// Fails early, naming the Debian package to install, rather than mid-run.
fn check_tools() -> Result<()> {
    for (tool, package) in [("docker-registry", "docker-registry"), ("skopeo", "skopeo")] {
        if !crate::on_path(tool) {
            bail!("{tool} is not on PATH: apt-get install {package}");
        }
    }
    Ok(())
}

/// Starts a fresh registry, times `command` pushing to it, checks the tag is
/// there, then stops the registry (its storage goes with it).
fn time_push(
    run: usize,
    runs: usize,
    row: &mut Row,
    command: impl FnOnce(&str) -> Command,
) -> Result<()> {
    let registry = Registry::try_start(Setup::Plain).map_err(anyhow::Error::msg)?;
    let target = format!("{}/{TARGET_REPOSITORY}:{TARGET_TAG}", registry.host());
    let mut command = command(&target);
    command.stdin(Stdio::null());

    let start = Instant::now();
    let output = command
        .output()
        .with_context(|| format!("cannot start {command:?}"))?;
    let seconds = start.elapsed().as_secs_f64();
    if !output.status.success() {
        bail!(
            "{command:?} failed with {}:\n{}{}",
            output.status,
            String::from_utf8_lossy(&output.stderr),
            log_tail(&registry),
        );
    }
    row.digest = registry
        .manifest_digest(TARGET_REPOSITORY, TARGET_TAG)
        .with_context(|| {
            format!(
                "{target} is not in the registry after the push{}",
                log_tail(&registry)
            )
        })?;
    eprintln!(
        "xtask: {} run {run}/{runs}: {seconds:.2} s (pushed {})",
        row.name, row.digest
    );
    row.seconds.push(seconds);
    Ok(())
}

/// The end of the registry's log, for error messages.
fn log_tail(registry: &Registry) -> String {
    let log = registry.log();
    let lines: Vec<&str> = log.lines().collect();
    let tail = lines[lines.len().saturating_sub(20)..].join("\n");
    if tail.is_empty() {
        String::new()
    } else {
        format!("\ndocker-registry log:\n{tail}")
    }
}

/// Counts the blobs of an OCI layout and their sizes.
fn layout_size(layout: &Path) -> Result<LayoutSize> {
    let blobs = layout.join("blobs").join("sha256");
    let mut sizes = Vec::new();
    for entry in fs::read_dir(&blobs).with_context(|| format!("cannot list {}", blobs.display()))? {
        sizes.push(entry?.metadata()?.len());
    }
    sizes.sort_unstable_by(|a, b| b.cmp(a));
    Ok(LayoutSize {
        blobs: sizes.len(),
        total: sizes.iter().sum(),
        largest: sizes.iter().copied().take(2).collect(),
    })
}

fn print_report(options: &Options, size: u64, layout: &LayoutSize, imgpack: &Row, skopeo: &Row) {
    let mb = |bytes: u64| bytes as f64 / 1e6;
    let largest: Vec<String> = layout
        .largest
        .iter()
        .map(|&bytes| format!("{:.1}", mb(bytes)))
        .collect();
    println!();
    println!(
        "input: 2 static ELF binaries (linux/amd64, linux/arm64) of {} MB ({size} bytes) each",
        options.size_mb
    );
    println!(
        "compressed: {} blobs, {:.1} MB in all (app layers {} MB), gzip",
        layout.blobs,
        mb(layout.total),
        largest.join(" + ")
    );
    println!(
        "cpus (nproc): {}, runs: {} (a fresh loopback docker-registry for every run of each tool)",
        bench::nproc(),
        options.runs
    );
    println!(
        "{:<20} {:>9} {:>9} {:>9} {:>11}",
        "name", "median s", "min s", "MB/s", "time ratio"
    );
    let reference = skopeo.median().max(0.001);
    for row in [skopeo, imgpack] {
        println!(
            "{:<20} {:>9.2} {:>9.2} {:>9.1} {:>10.2}x",
            row.name,
            row.median(),
            row.min(),
            mb(layout.total) / row.median().max(0.001),
            row.median() / reference,
        );
    }
    println!("MB/s: compressed bytes uploaded per second of median wall time.");
    if imgpack.digest == skopeo.digest {
        println!("both pushed the same index: {}", imgpack.digest);
    } else {
        println!(
            "the pushed digests differ: imgpack {}, skopeo {}",
            imgpack.digest, skopeo.digest
        );
    }
    println!();
}
