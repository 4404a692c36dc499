//! `cargo xtask bench push [--size-mb N] [--runs N]`: wall time of
//! `imgpack push` of a two-platform image (linux/amd64 and linux/arm64, one
//! N MB static binary each) from an OCI layout to a loopback
//! `docker-registry`, next to `skopeo copy --all` of the same layout to the
//! same kind of registry. Every run of either tool gets a fresh, empty
//! registry, so nothing is skipped as already present. Speed is reported as a
//! ratio to skopeo, never asserted.

use std::fs::{self, File};
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::bench::{self, Options, TempDir, EM_AARCH64, EM_X86_64};

/// Repository and tag both tools push to.
const TARGET_REPOSITORY: &str = "bench/app";
const TARGET_TAG: &str = "v1";

/// How long a fresh registry may take to answer `GET /v2/`.
const REGISTRY_START_TIMEOUT: Duration = Duration::from_secs(10);

/// Manifest types asked for when checking what was pushed: an index must come
/// back as itself, not as the registry's pick of one platform.
const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.index.v1+json, \
    application/vnd.docker.distribution.manifest.list.v2+json, \
    application/vnd.oci.image.manifest.v1+json, \
    application/vnd.docker.distribution.manifest.v2+json";

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
    bench::write_fake_binary(&amd64, size, EM_X86_64, 0)?;
    // The arm64 payload starts where the amd64 one ends, so the layers differ.
    bench::write_fake_binary(&arm64, size, EM_AARCH64, size)?;

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
        time_push(&temp.0, run, options.runs, &mut imgpack_row, |target| {
            let mut command = Command::new(&imgpack);
            command
                .args(["push", "-q", &source, target])
                // A fresh cache: no remembered blob locations, so no mount shortcut.
                .env("IMGPACK_CACHE_DIR", &imgpack_cache);
            command
        })?;
        fs::remove_dir_all(&imgpack_cache)?;

        time_push(&temp.0, run, options.runs, &mut skopeo_row, |target| {
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
/// there, then stops the registry and deletes its storage.
fn time_push(
    temp: &Path,
    run: usize,
    runs: usize,
    row: &mut Row,
    command: impl FnOnce(&str) -> Command,
) -> Result<()> {
    let tool = row.name.split(' ').next().unwrap_or("tool");
    let dir = temp.join(format!("registry-{tool}-{run}"));
    let registry = Registry::start(&dir)?;
    let target = format!(
        "127.0.0.1:{}/{TARGET_REPOSITORY}:{TARGET_TAG}",
        registry.port
    );
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
            registry.log_tail(),
        );
    }
    row.digest = registry.manifest_digest()?;
    eprintln!(
        "xtask: {} run {run}/{runs}: {seconds:.2} s (pushed {})",
        row.name, row.digest
    );
    row.seconds.push(seconds);

    drop(registry);
    fs::remove_dir_all(&dir).with_context(|| format!("cannot remove {}", dir.display()))?;
    Ok(())
}

/// A `docker-registry serve` on 127.0.0.1, killed when dropped, even after an error.
struct Registry {
    child: Child,
    port: u16,
    log: PathBuf,
}

impl Registry {
    /// Writes a config storing under `dir`, starts the registry on a free
    /// port and waits until it answers `GET /v2/`.
    fn start(dir: &Path) -> Result<Self> {
        let storage = dir.join("storage");
        fs::create_dir_all(&storage)
            .with_context(|| format!("cannot create {}", storage.display()))?;
        let port = free_port()?;
        let config = dir.join("config.yml");
        let storage = storage
            .to_str()
            .context("the temp directory needs a UTF-8 path")?;
        fs::write(
            &config,
            format!(
                "version: 0.1\n\
                 log:\n  level: warn\n  accesslog:\n    disabled: true\n\
                 storage:\n  filesystem:\n    rootdirectory: {storage:?}\n  delete:\n    enabled: true\n\
                 http:\n  addr: 127.0.0.1:{port}\n  secret: bench\n"
            ),
        )?;
        let log = dir.join("registry.log");
        let log_file = File::create(&log)?;
        let mut command = Command::new("docker-registry");
        command
            .arg("serve")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(log_file.try_clone()?)
            .stderr(log_file);
        // REGISTRY_* variables override the config file: keep the bench's own.
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("REGISTRY_") {
                command.env_remove(name);
            }
        }
        let child = command
            .spawn()
            .with_context(|| format!("cannot start {command:?}"))?;
        let mut registry = Self { child, port, log };
        registry.wait_ready()?;
        Ok(registry)
    }

    fn wait_ready(&mut self) -> Result<()> {
        let deadline = Instant::now() + REGISTRY_START_TIMEOUT;
        loop {
            if let Some(status) = self.child.try_wait()? {
                bail!(
                    "docker-registry on port {} exited with {status} before answering{}",
                    self.port,
                    self.log_tail()
                );
            }
            if let Ok((200, _)) = http_request(self.port, "GET", "/v2/", "") {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!(
                    "docker-registry on port {} did not answer GET /v2/ within {} s{}",
                    self.port,
                    REGISTRY_START_TIMEOUT.as_secs(),
                    self.log_tail()
                );
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// The digest the registry serves for the pushed tag: proof the push landed.
    fn manifest_digest(&self) -> Result<String> {
        let path = format!("/v2/{TARGET_REPOSITORY}/manifests/{TARGET_TAG}");
        let (status, head) = http_request(
            self.port,
            "HEAD",
            &path,
            &format!("Accept: {MANIFEST_ACCEPT}\r\n"),
        )?;
        if status != 200 {
            bail!(
                "HEAD {path} answered {status} after the push:\n{head}{}",
                self.log_tail()
            );
        }
        head.lines()
            .find_map(|line| {
                let (name, value) = line.split_once(':')?;
                name.eq_ignore_ascii_case("docker-content-digest")
                    .then(|| value.trim().to_owned())
            })
            .with_context(|| format!("HEAD {path} answered without Docker-Content-Digest"))
    }

    /// The end of the registry's log, for error messages.
    fn log_tail(&self) -> String {
        let log = fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        let tail = lines[lines.len().saturating_sub(20)..].join("\n");
        if tail.is_empty() {
            String::new()
        } else {
            format!("\ndocker-registry log ({}):\n{tail}", self.log.display())
        }
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A port nobody listens on right now (the OS picks it; the registry binds it just after).
fn free_port() -> Result<u16> {
    let listener =
        TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).context("cannot bind a port on 127.0.0.1")?;
    Ok(listener.local_addr()?.port())
}

/// One HTTP/1.0 request to 127.0.0.1:`port`; returns the status and the
/// response head. HTTP/1.0 makes the server close the connection, so the
/// response ends at EOF. `headers` are extra lines, each ending in CRLF.
fn http_request(port: u16, method: &str, path: &str, headers: &str) -> Result<(u16, String)> {
    let address = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let mut stream = TcpStream::connect_timeout(&address, Duration::from_secs(1))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    stream.set_write_timeout(Some(Duration::from_secs(5)))?;
    write!(
        stream,
        "{method} {path} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\n{headers}\r\n"
    )?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response)?;
    let response = String::from_utf8_lossy(&response);
    let head = response
        .split("\r\n\r\n")
        .next()
        .unwrap_or_default()
        .to_owned();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .with_context(|| format!("not an HTTP response from 127.0.0.1:{port}: {head:?}"))?;
    Ok((status, head))
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
