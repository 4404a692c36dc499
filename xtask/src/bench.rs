//! `cargo xtask bench …`: the whole suite, see `bench_suite`.
//!
//! `cargo xtask bench assemble [--size-mb N] [--runs N]`: time and peak
//! memory of `imgpack build` around a large static binary, next to
//! `tar --sort=name … | gzip -6 | sha256sum` on the same file, on the same
//! machine. Speed is reported as a ratio to that reference, never asserted,
//! because absolute numbers say more about the machine than about imgpack.
//!
//! `cargo xtask bench push [--size-mb N] [--runs N]`: see `bench_push`.
//! `cargo xtask bench docker [--size-mb N] [--runs N]`: see `bench_docker`.
//! `cargo xtask bench load [--size-mb N] [--runs N]`: see `bench_load`.

use std::fs::{self, File};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, ensure, Context, Result};
use imgpack_e2e::{Arch, ElfBuilder};

/// Name of the generated binary, both in the temp dir and under /app.
const BINARY_NAME: &str = "bench-app";

/// The shell pipeline imgpack is compared with: a reproducible tar of the
/// binary, gzipped at imgpack's default level, then digested. `$1` is the
/// directory and `$2` the file, so no path needs quoting.
const REFERENCE_SCRIPT: &str = "set -o pipefail; \
    tar --sort=name --owner=0 --group=0 --numeric-owner --mtime=@0 -cf - -C \"$1\" \"$2\" \
    | gzip -6 | sha256sum >/dev/null";

pub(crate) struct Options {
    pub(crate) size_mb: u64,
    pub(crate) runs: usize,
}

/// What one command cost: wall-clock seconds and max RSS in KiB, as GNU time reports them.
#[derive(Clone, Copy)]
struct Sample {
    seconds: f64,
    max_rss_kib: u64,
}

/// One table row: the median time and the largest RSS over all runs.
struct Row {
    name: &'static str,
    seconds: f64,
    max_rss_kib: u64,
}

impl Row {
    // GNU time has 10 ms resolution: floor the divisors so a tiny run cannot divide by zero.
    fn time_ratio(&self, reference: &Row) -> f64 {
        self.seconds / reference.seconds.max(0.01)
    }

    fn rss_ratio(&self, reference: &Row) -> f64 {
        self.max_rss_kib as f64 / reference.max_rss_kib.max(1) as f64
    }
}

/// `bench push …`, `bench docker …` and `bench assemble …` run one benchmark;
/// plain `bench …` the suite.
pub fn run(args: &[String]) -> Result<()> {
    match args.first().map(String::as_str) {
        Some("push") => crate::bench_push::run(&args[1..]),
        Some("docker") => crate::bench_docker::run(&args[1..]),
        Some("load") => crate::bench_load::run(&args[1..]),
        Some("assemble") => run_assemble(&args[1..]),
        _ => crate::bench_suite::run(args),
    }
}

fn run_assemble(args: &[String]) -> Result<()> {
    let options = parse_args(args, 100)?;
    check_tools()?;
    let imgpack = build_imgpack()?;

    let temp = TempDir::create()?;
    let binary = temp.0.join(BINARY_NAME);
    let size = options.size_mb * 1_000_000;
    write_fake_binary(&binary, size, Arch::Amd64, 0)?;

    let layout = temp.0.join("layout");
    let imgpack_command = |compression: &str| {
        let mut command = Command::new(&imgpack);
        command
            .arg("build")
            .arg(format!("--binary=linux/amd64={}", binary.display()))
            .arg(format!("--output=oci:{}:bench", layout.display()))
            .args(["--compression", compression, "--quiet"]);
        command
    };
    let reference_command = || {
        let mut command = Command::new("bash");
        command.args(["-c", REFERENCE_SCRIPT, "bash"]);
        command.arg(&temp.0).arg(BINARY_NAME);
        command
    };

    // The reference runs first so each imgpack row can be compared with it.
    let reference = measure(
        "tar|gzip -6|sha256sum",
        options.runs,
        &layout,
        reference_command,
    )?;
    let gzip = measure("imgpack gzip", options.runs, &layout, || {
        imgpack_command("gzip")
    })?;
    let zstd = measure("imgpack zstd", options.runs, &layout, || {
        imgpack_command("zstd")
    })?;

    print_report(&options, size, &[&reference, &gzip, &zstd]);
    println!(
        "bench: imgpack gzip {:.2}x the time of tar|gzip|sha256sum, peak RSS {:.1} MiB (ratio {:.1}x)",
        gzip.time_ratio(&reference),
        mib(gzip.max_rss_kib),
        gzip.rss_ratio(&reference),
    );
    Ok(())
}

/// `--size-mb N` (default `default_size_mb`) and `--runs N` (default 3).
pub(crate) fn parse_args(args: &[String], default_size_mb: u64) -> Result<Options> {
    let mut options = Options {
        size_mb: default_size_mb,
        runs: 3,
    };
    let mut args = args.iter();
    while let Some(flag) = args.next() {
        let mut value = || {
            args.next()
                .with_context(|| format!("{flag} needs a number"))?
                .parse::<u64>()
                .with_context(|| format!("{flag} needs a positive whole number"))
        };
        match flag.as_str() {
            "--size-mb" => options.size_mb = value()?,
            "--runs" => options.runs = value()? as usize,
            other => bail!("unknown bench argument '{other}': use --size-mb N and --runs N"),
        }
    }
    ensure!(options.size_mb > 0, "--size-mb must be at least 1");
    ensure!(options.runs > 0, "--runs must be at least 1");
    Ok(options)
}

/// Fails early, naming the package to install, rather than in the middle of a run.
fn check_tools() -> Result<()> {
    if !Path::new("/usr/bin/time").is_file() {
        bail!("/usr/bin/time (GNU time) is missing: apt-get install time");
    }
    for (tool, package) in [
        ("bash", "bash"),
        ("tar", "tar"),
        ("gzip", "gzip"),
        ("sha256sum", "coreutils"),
    ] {
        if !crate::on_path(tool) {
            bail!("{tool} is not on PATH: apt-get install {package}");
        }
    }
    Ok(())
}

/// Builds imgpack in release mode and returns the path of the binary.
pub(crate) fn build_imgpack() -> Result<PathBuf> {
    let root = crate::workspace_root();
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    crate::run(
        Command::new(cargo)
            .args(["build", "--release", "-p", "imgpack"])
            .current_dir(&root),
    )?;
    // A relative CARGO_TARGET_DIR is relative to where cargo ran: the root.
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(|dir| root.join(dir))
        .unwrap_or_else(|| root.join("target"));
    let imgpack = target.join("release").join("imgpack");
    ensure!(imgpack.is_file(), "{} was not built", imgpack.display());
    Ok(imgpack)
}

/// The bench's scratch directory, removed when dropped, even after an error.
pub(crate) struct TempDir(pub(crate) PathBuf);

impl TempDir {
    pub(crate) fn create() -> Result<Self> {
        let dir = std::env::temp_dir().join(format!("imgpack-bench-{}", std::process::id()));
        fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
        Ok(Self(dir))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// Writes a static ELF executable for `arch` of exactly `size` bytes: the test support's
/// headers (imgpack_platform::test_elf), then a payload of real machine code (the files of
/// /usr/bin, concatenated, starting `skip` bytes into that stream and wrapping around), so
/// that it compresses like a real binary rather than like zeros or random bytes. The payload
/// is streamed, so a large binary costs no memory.
pub(crate) fn write_fake_binary(path: &Path, size: u64, arch: Arch, skip: u64) -> Result<()> {
    let elf = ElfBuilder::new(arch);
    let header_len = elf.headers(0).len() as u64;
    ensure!(size >= header_len, "the binary must hold its ELF headers");
    let mut out = BufWriter::new(File::create(path)?);
    out.write_all(&elf.headers(size - header_len))?;
    let mut left = size - header_len;
    let mut skip = skip;

    let sources = usr_bin_files()?;
    while left > 0 {
        let mut readable = 0u64;
        for source in &sources {
            // A file that vanished or is unreadable is skipped, not fatal.
            let Ok(bytes) = fs::read(source) else {
                continue;
            };
            readable += bytes.len() as u64;
            if skip >= bytes.len() as u64 {
                skip -= bytes.len() as u64;
                continue;
            }
            let bytes = &bytes[skip as usize..];
            skip = 0;
            let take = left.min(bytes.len() as u64) as usize;
            out.write_all(&bytes[..take])?;
            left -= take as u64;
            if left == 0 {
                break;
            }
        }
        ensure!(
            readable > 0,
            "no readable file in /usr/bin to fill the binary with"
        );
        // A skip longer than all of /usr/bin wraps around.
        skip %= readable;
    }
    out.flush()?;
    eprintln!("xtask: wrote {} ({size} bytes)", path.display());
    Ok(())
}

/// Regular files of /usr/bin, sorted by name so the payload is the same on every run.
fn usr_bin_files() -> Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = fs::read_dir("/usr/bin")
        .context("cannot list /usr/bin")?
        .filter_map(|entry| entry.ok())
        // file_type does not follow symlinks, so links to other files are skipped.
        .filter(|entry| entry.file_type().is_ok_and(|t| t.is_file()))
        .map(|entry| entry.path())
        .collect();
    files.sort();
    Ok(files)
}

/// Runs the command `runs` times under GNU time, each time into an empty
/// layout so no run reuses blobs written by the one before.
fn measure(
    name: &'static str,
    runs: usize,
    layout: &Path,
    command: impl Fn() -> Command,
) -> Result<Row> {
    let mut samples = Vec::with_capacity(runs);
    for run in 1..=runs {
        if layout.exists() {
            fs::remove_dir_all(layout)?;
        }
        let sample = time_command(command())?;
        eprintln!(
            "xtask: {name} run {run}/{runs}: {:.2} s, {:.1} MiB",
            sample.seconds,
            mib(sample.max_rss_kib)
        );
        samples.push(sample);
    }
    samples.sort_by(|a, b| a.seconds.total_cmp(&b.seconds));
    Ok(Row {
        name,
        seconds: samples[samples.len() / 2].seconds,
        max_rss_kib: samples.iter().map(|s| s.max_rss_kib).max().unwrap_or(0),
    })
}

/// Runs `command` under `/usr/bin/time -f '%e %M'` and parses the last line of stderr,
/// which GNU time writes after anything the command itself printed there.
fn time_command(command: Command) -> Result<Sample> {
    let mut timed = Command::new("/usr/bin/time");
    timed
        .args(["-f", "%e %M"])
        .arg(command.get_program())
        .args(command.get_args());
    let output = timed
        .output()
        .with_context(|| format!("cannot start {timed:?}"))?;
    let stderr = String::from_utf8_lossy(&output.stderr);
    if !output.status.success() {
        bail!("{timed:?} failed with {}:\n{stderr}", output.status);
    }
    let last = stderr
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("");
    let parsed = last
        .split_once(' ')
        .and_then(|(secs, rss)| Some((secs.parse().ok()?, rss.trim().parse().ok()?)));
    let Some((seconds, max_rss_kib)) = parsed else {
        bail!("cannot read '%e %M' from /usr/bin/time's output:\n{stderr}");
    };
    Ok(Sample {
        seconds,
        max_rss_kib,
    })
}

fn print_report(options: &Options, size: u64, rows: &[&Row]) {
    let reference = rows[0];
    println!();
    println!(
        "input: {} MB static x86_64 ELF ({size} bytes), cpus (nproc): {}, runs: {} (median time, max RSS)",
        options.size_mb,
        nproc(),
        options.runs
    );
    println!(
        "{:<22} {:>9} {:>9} {:>13} {:>11} {:>10}",
        "name", "median s", "MB/s", "peak RSS MiB", "time ratio", "RSS ratio"
    );
    for row in rows {
        println!(
            "{:<22} {:>9.2} {:>9.1} {:>13.1} {:>10.2}x {:>9.2}x",
            row.name,
            row.seconds,
            size as f64 / 1e6 / row.seconds.max(0.01),
            mib(row.max_rss_kib),
            row.time_ratio(reference),
            row.rss_ratio(reference),
        );
    }
    println!(
        "note: the pipeline's peak RSS is that of its largest process (GNU time reports the max \
         over bash's children), not the sum of tar, gzip and sha256sum."
    );
    println!();
}

/// The CPU count `nproc` reports, which bounds any parallel compression.
pub(crate) fn nproc() -> String {
    Command::new("nproc")
        .output()
        .ok()
        .map(|out| String::from_utf8_lossy(&out.stdout).trim().to_owned())
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| "?".into())
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}
