//! `cargo xtask bench [--size-mb N] [--push-size-mb N] [--runs N] [--imgpack PATH] [--no-docs]`:
//! the whole story in one process, interleaved (every route once per round,
//! round after round), each figure the median of the rounds:
//!
//! - assembly of one image around an N MB binary against `tar | gzip -6 | sha256sum`
//!   (with 1 thread, 2 and all threads: the thread scaling);
//! - build + push against `buildah bud` (vfs, `FROM scratch` + `COPY`) + `buildah push`;
//! - the no-op rebuild + push of the same binary (cache warm, registry has it)
//!   against the same with `--no-cache`;
//! - `imgpack push` of a two-platform layout against `skopeo copy --all`;
//! - the peak memory of each (GNU time's `%M`, the wait4 `ru_maxrss` of the command).
//!
//! It prints one table of medians and ratios and writes it, with an SVG chart
//! and the machine's CPUs, into docs/benchmarks.md (between markers) and
//! docs/benchmarks.svg. Nothing is asserted: the targets are printed beside
//! the ratios. `--imgpack PATH` times another imgpack binary (an older
//! release, for a before/after); routes it has no flags for are left out.

use std::fs;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{bail, ensure, Context, Result};
use imgpack_e2e::registry::{Registry, Setup};
use imgpack_e2e::Arch;

use crate::bench::{self, TempDir};

const APP: &str = "bench-app";
const BEGIN_MARKER: &str = "<!-- cargo xtask bench: begin -->";
const END_MARKER: &str = "<!-- cargo xtask bench: end -->";

struct Options {
    size_mb: u64,
    push_size_mb: u64,
    runs: usize,
    imgpack: Option<PathBuf>,
    write_docs: bool,
}

fn parse_args(args: &[String]) -> Result<Options> {
    let mut options = Options {
        size_mb: 100,
        push_size_mb: 50,
        runs: 5,
        imgpack: None,
        write_docs: true,
    };
    let mut args = args.iter();
    while let Some(flag) = args.next() {
        let mut value = || {
            args.next()
                .with_context(|| format!("{flag} needs a value"))
                .cloned()
        };
        let number = |text: String| {
            text.parse::<u64>()
                .ok()
                .filter(|n| *n > 0)
                .with_context(|| format!("{flag} needs a positive whole number"))
        };
        match flag.as_str() {
            "--size-mb" => options.size_mb = number(value()?)?,
            "--push-size-mb" => options.push_size_mb = number(value()?)?,
            "--runs" => options.runs = number(value()?)? as usize,
            "--imgpack" => options.imgpack = Some(PathBuf::from(value()?)),
            "--no-docs" => options.write_docs = false,
            other => bail!(
                "unknown bench argument '{other}': use --size-mb N, --push-size-mb N, --runs N, \
                 --imgpack PATH, --no-docs (or the subcommands assemble, push, docker)"
            ),
        }
    }
    Ok(options)
}

/// One measured run: wall time and the peak RSS of the largest process.
#[derive(Clone, Copy, Default)]
struct Sample {
    seconds: f64,
    max_rss_kib: u64,
}

impl Sample {
    /// Two commands one after the other (build, then push).
    fn then(self, next: Sample) -> Sample {
        Sample {
            seconds: self.seconds + next.seconds,
            max_rss_kib: self.max_rss_kib.max(next.max_rss_kib),
        }
    }
}

/// A route: how to run it once, and what it is compared with.
struct Route<'a> {
    name: String,
    /// The route this one is a ratio of, by index, with the target ratio.
    compared_with: Option<(usize, &'static str)>,
    run: Box<dyn FnMut() -> Result<Sample> + 'a>,
    samples: Vec<Sample>,
}

impl Route<'_> {
    fn median(&self) -> f64 {
        let mut seconds: Vec<f64> = self.samples.iter().map(|s| s.seconds).collect();
        seconds.sort_by(f64::total_cmp);
        let n = seconds.len();
        if n % 2 == 1 {
            seconds[n / 2]
        } else {
            (seconds[n / 2 - 1] + seconds[n / 2]) / 2.0
        }
    }

    fn peak_mib(&self) -> f64 {
        self.samples
            .iter()
            .map(|s| s.max_rss_kib)
            .max()
            .unwrap_or(0) as f64
            / 1024.0
    }
}

/// What the timed imgpack binary can do (an older one has no cache or threads).
struct Features {
    threads: bool,
    no_cache: bool,
    attachments: bool,
}

impl Features {
    fn of(imgpack: &Path) -> Result<Self> {
        let help = Command::new(imgpack).args(["build", "--help"]).output()?;
        let help = String::from_utf8_lossy(&help.stdout);
        Ok(Self {
            threads: help.contains("--threads"),
            no_cache: help.contains("--no-cache"),
            attachments: help.contains("--sbom"),
        })
    }
}

pub fn run(args: &[String]) -> Result<()> {
    let options = parse_args(args)?;
    check_tools()?;
    let imgpack = match &options.imgpack {
        Some(path) => path.clone(),
        None => bench::build_imgpack()?,
    };
    let features = Features::of(&imgpack)?;
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let load_before = load_average();

    let temp = TempDir::create()?;
    let inputs = Inputs::write(&temp.0, &options, &imgpack)?;
    let buildah = Buildah::configure(&temp.0)?;
    // One registry that already holds the image, for the no-op rebuilds.
    let noop_registry = start_registry()?;
    let noop_target = format!("{}/bench/noop:v1", noop_registry.host());
    let noop_cache = temp.0.join("noop-cache");
    run_quiet(imgpack_build(&imgpack, &inputs.binary, &noop_cache).args(["--push", &noop_target]))?;

    let build_out = temp.0.join("assembly");
    let mut routes: Vec<Route> = Vec::new();
    let reference = add(&mut routes, "tar | gzip -6 | sha256sum", None, || {
        timed(
            Command::new("bash")
                .args(["-c", bench_reference_script(), "bash"])
                .arg(&inputs.context)
                .arg(APP),
        )
    });
    let assemble = |threads: Option<usize>| {
        let imgpack = &imgpack;
        let inputs = &inputs;
        let build_out = &build_out;
        let no_cache = features.no_cache;
        move || {
            let _ = fs::remove_dir_all(build_out);
            let mut command = imgpack_build(
                imgpack,
                &inputs.binary,
                &inputs.scratch.join("assembly-cache"),
            );
            command.arg(format!("--output=oci:{}", build_out.display()));
            if no_cache {
                command.arg("--no-cache");
            }
            if let Some(threads) = threads {
                command.arg(format!("--threads={threads}"));
            }
            timed(&mut command)
        }
    };
    if features.threads {
        add(
            &mut routes,
            "imgpack build, 1 thread",
            Some((reference, "")),
            assemble(Some(1)),
        );
        if cpus > 2 {
            add(
                &mut routes,
                "imgpack build, 2 threads",
                Some((reference, "")),
                assemble(Some(2)),
            );
        }
        add(
            &mut routes,
            &format!("imgpack build, {cpus} threads (all)"),
            Some((reference, "≤ 0.25")),
            assemble(None),
        );
    } else {
        add(
            &mut routes,
            "imgpack build",
            Some((reference, "≤ 0.25")),
            assemble(None),
        );
    }

    let buildah_route = add(&mut routes, "buildah bud + buildah push", None, || {
        buildah.build_and_push(&inputs.context)
    });
    add(
        &mut routes,
        "imgpack build --push",
        Some((buildah_route, "≤ 0.4")),
        || {
            let registry = start_registry()?;
            let cache = inputs.scratch.join("fresh-cache");
            let _ = fs::remove_dir_all(&cache);
            let target = format!("{}/bench/app:v1", registry.host());
            let mut command = imgpack_build(&imgpack, &inputs.binary, &cache);
            command.args(["--push", &target]);
            if features.no_cache {
                command.arg("--no-cache");
            }
            timed(&mut command)
        },
    );

    // With SOURCE_DATE_EPOCH the provenance is the same every time, so the
    // rebuild has nothing new to send; without it each build's provenance
    // records its own times and goes up as a new referrer (as buildx's does).
    let noop = |no_cache: bool, epoch: bool| {
        let (imgpack, inputs, noop_cache, noop_target) =
            (&imgpack, &inputs, &noop_cache, &noop_target);
        move || {
            let mut command = imgpack_build(imgpack, &inputs.binary, noop_cache);
            command.args(["--push", noop_target]);
            if no_cache {
                command.arg("--no-cache");
            }
            if epoch {
                command.env("SOURCE_DATE_EPOCH", "1700000000");
            }
            timed(&mut command)
        }
    };
    if features.no_cache {
        let full = add(
            &mut routes,
            "no-op rebuild + push, --no-cache",
            None,
            noop(true, false),
        );
        add(
            &mut routes,
            "no-op rebuild + push (layer cache)",
            Some((full, "≤ 0.1")),
            noop(false, false),
        );
        add(
            &mut routes,
            "no-op, layer cache, SOURCE_DATE_EPOCH",
            Some((full, "≤ 0.1")),
            noop(false, true),
        );
    } else {
        add(
            &mut routes,
            "no-op rebuild + push (no cache)",
            None,
            noop(false, false),
        );
    }

    let skopeo = add(&mut routes, "skopeo copy --all", None, || {
        let registry = start_registry()?;
        timed(
            Command::new("skopeo")
                .args([
                    "copy",
                    "-q",
                    "--all",
                    "--dest-tls-verify=false",
                    &inputs.push_source,
                ])
                .arg(format!("docker://{}/bench/push:v1", registry.host())),
        )
    });
    add(
        &mut routes,
        "imgpack push",
        Some((skopeo, "≤ 0.7")),
        || {
            let registry = start_registry()?;
            let cache = inputs.scratch.join("push-cache");
            let _ = fs::remove_dir_all(&cache);
            timed(
                Command::new(&imgpack)
                    .args(["push", "-q", &inputs.push_source])
                    .arg(format!("{}/bench/push:v1", registry.host()))
                    .env("IMGPACK_CACHE_DIR", &cache),
            )
        },
    );

    for round in 1..=options.runs {
        for route in &mut routes {
            let sample =
                (route.run)().with_context(|| format!("{} (round {round})", route.name))?;
            eprintln!(
                "xtask: round {round}/{}: {}: {:.2} s, {:.1} MiB",
                options.runs,
                route.name,
                sample.seconds,
                sample.max_rss_kib as f64 / 1024.0
            );
            route.samples.push(sample);
        }
    }
    drop(noop_registry);

    let report = Report {
        routes: &routes,
        machine: Machine {
            cpus,
            model: cpu_model(),
            load: format!("{load_before} before, {} after", load_average()),
        },
        size_mb: options.size_mb,
        push_size_mb: options.push_size_mb,
        push_compressed_mb: inputs.push_compressed as f64 / 1e6,
        runs: options.runs,
        imgpack: imgpack.display().to_string(),
    };
    let table = report.table();
    println!("\n{}\n{table}", report.context());
    if options.write_docs {
        let docs = crate::workspace_root().join("docs");
        fs::write(docs.join("benchmarks.svg"), report.chart())?;
        update_docs_page(&docs.join("benchmarks.md"), &report.markdown())?;
        eprintln!("xtask: wrote docs/benchmarks.md and docs/benchmarks.svg");
    }
    Ok(())
}

fn add<'a>(
    routes: &mut Vec<Route<'a>>,
    name: &str,
    compared_with: Option<(usize, &'static str)>,
    run: impl FnMut() -> Result<Sample> + 'a,
) -> usize {
    routes.push(Route {
        name: name.to_owned(),
        compared_with,
        run: Box::new(run),
        samples: Vec::new(),
    });
    routes.len() - 1
}

fn bench_reference_script() -> &'static str {
    "set -o pipefail; \
     tar --sort=name --owner=0 --group=0 --numeric-owner --mtime=@0 -cf - -C \"$1\" \"$2\" \
     | gzip -6 | sha256sum >/dev/null"
}

/// `imgpack build -q --binary linux/amd64=BINARY` with its own cache directory.
fn imgpack_build(imgpack: &Path, binary: &Path, cache: &Path) -> Command {
    let mut command = Command::new(imgpack);
    command
        .args(["build", "-q", "--name", APP])
        .arg(format!("--binary=linux/amd64={}", binary.display()))
        .env("IMGPACK_CACHE_DIR", cache);
    command
}

/// The files every route reads.
struct Inputs {
    /// Scratch space for caches and outputs (outside the build context).
    scratch: PathBuf,
    /// The build context: the binary and a Containerfile.
    context: PathBuf,
    binary: PathBuf,
    /// `oci:DIR:bench`, two platforms, for the push routes.
    push_source: String,
    push_compressed: u64,
}

impl Inputs {
    fn write(dir: &Path, options: &Options, imgpack: &Path) -> Result<Self> {
        let context = dir.join("context");
        fs::create_dir_all(&context)?;
        let binary = context.join(APP);
        bench::write_fake_binary(&binary, options.size_mb * 1_000_000, Arch::Amd64, 0)?;
        fs::write(
            context.join("Containerfile"),
            format!("FROM scratch\nCOPY {APP} /app/{APP}\nENTRYPOINT [\"/app/{APP}\"]\n"),
        )?;
        let push_size = options.push_size_mb * 1_000_000;
        let amd64 = dir.join(format!("{APP}-amd64"));
        let arm64 = dir.join(format!("{APP}-arm64"));
        bench::write_fake_binary(&amd64, push_size, Arch::Amd64, 0)?;
        bench::write_fake_binary(&arm64, push_size, Arch::Arm64, push_size)?;
        let layout = dir.join("push-layout");
        let push_source = format!("oci:{}:bench", layout.display());
        let mut build = Command::new(imgpack);
        build
            .args(["build", "-q"])
            .arg(format!("--binary=linux/amd64={}", amd64.display()))
            .arg(format!("--binary=linux/arm64={}", arm64.display()))
            .arg(format!("--output={push_source}"))
            .env("IMGPACK_CACHE_DIR", dir.join("layout-cache"));
        // skopeo copies the tagged image only: a layout without SBOM and
        // provenance gives both pushes the same blobs and manifests to send.
        if Features::of(imgpack)?.attachments {
            build.args(["--sbom", "none", "--provenance", "false"]);
        }
        run_quiet(&mut build)?;
        let mut push_compressed = 0;
        for entry in fs::read_dir(layout.join("blobs/sha256"))? {
            push_compressed += entry?.metadata()?.len();
        }
        Ok(Self {
            scratch: dir.to_owned(),
            context,
            binary,
            push_source,
            push_compressed,
        })
    }
}

/// Debian's buildah with the vfs driver and its configuration in a temp directory.
struct Buildah {
    env: Vec<(&'static str, PathBuf)>,
}

impl Buildah {
    fn configure(dir: &Path) -> Result<Self> {
        let root = dir.join("buildah");
        for sub in ["graph", "run", "xdg"] {
            fs::create_dir_all(root.join(sub))?;
        }
        let storage = root.join("storage.conf");
        fs::write(
            &storage,
            format!(
                "[storage]\ndriver = \"vfs\"\ngraphroot = \"{}\"\nrunroot = \"{}\"\n",
                root.join("graph").display(),
                root.join("run").display()
            ),
        )?;
        let containers = root.join("containers.conf");
        fs::write(
            &containers,
            "[containers]\nnetns = \"host\"\ndefault_ulimits = [\"nofile=1024:1024\", \"nproc=1024:1024\"]\n\
             [engine]\nruntime = \"runc\"\ncgroup_manager = \"cgroupfs\"\n",
        )?;
        let registries = root.join("registries.conf");
        fs::write(&registries, "unqualified-search-registries = []\n")?;
        Ok(Self {
            env: vec![
                ("CONTAINERS_STORAGE_CONF", storage),
                ("CONTAINERS_CONF", containers),
                ("CONTAINERS_REGISTRIES_CONF", registries),
                ("XDG_RUNTIME_DIR", root.join("xdg")),
            ],
        })
    }

    fn command(&self) -> Command {
        let mut command = Command::new("buildah");
        command
            .args(["--storage-driver", "vfs"])
            .envs(self.env.iter().map(|(k, v)| (k, v)));
        command
    }

    /// `buildah bud` then `buildah push` to a fresh registry; the image is removed after.
    fn build_and_push(&self, context: &Path) -> Result<Sample> {
        let registry = start_registry()?;
        let result = timed(
            self.command()
                .args(["bud", "-q", "--layers=false", "-t", "localhost/bench:v1"])
                .arg(context),
        )
        .and_then(|build| {
            let push = timed(
                self.command()
                    .args(["push", "-q", "--tls-verify=false", "localhost/bench:v1"])
                    .arg(format!("docker://{}/bench/app:v1", registry.host())),
            )?;
            Ok(build.then(push))
        });
        let _ = self
            .command()
            .args(["rmi", "-a", "-f"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        result
    }
}

fn check_tools() -> Result<()> {
    if !Path::new("/usr/bin/time").is_file() {
        bail!("/usr/bin/time (GNU time) is missing: apt-get install time");
    }
    for (tool, package) in [
        ("bash", "bash"),
        ("tar", "tar"),
        ("gzip", "gzip"),
        ("sha256sum", "coreutils"),
        ("docker-registry", "docker-registry"),
        ("skopeo", "skopeo"),
    ] {
        if !crate::on_path(tool) {
            bail!("{tool} is not on PATH: apt-get install {package}");
        }
    }
    // A bench-only tool, so `cargo xtask ci` does not install it: the bench does.
    if !crate::on_path("buildah") {
        crate::run(Command::new("apt-get").args([
            "install",
            "-y",
            "--no-install-recommends",
            "buildah",
        ]))
        .context("buildah is missing and apt-get could not install it: apt-get install buildah")?;
    }
    Ok(())
}

fn start_registry() -> Result<Registry> {
    Registry::try_start(Setup::Plain).map_err(anyhow::Error::msg)
}

fn run_quiet(command: &mut Command) -> Result<()> {
    let output = command
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("cannot start {command:?}"))?;
    ensure!(
        output.status.success(),
        "{command:?} failed with {}:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(())
}

/// Runs `command` (output discarded, stderr kept for errors) and measures its
/// wall time and its peak RSS. The peak comes from GNU time (`%M`, its child's
/// wait4 `ru_maxrss`), not from this process's own wait4: a child of this
/// large process inherits its high-water mark at exec, so every figure would
/// read at least this process's size.
fn timed(command: &mut Command) -> Result<Sample> {
    let mut stderr = tempfile::tempfile()?;
    let rss_file = tempfile::NamedTempFile::new()?;
    let mut wrapped = Command::new("/usr/bin/time");
    wrapped
        .args(["-f", "%M", "-o"])
        .arg(rss_file.path())
        .arg(command.get_program())
        .args(command.get_args())
        .envs(
            command
                .get_envs()
                .filter_map(|(key, value)| Some((key, value?))),
        )
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(stderr.try_clone()?);
    if let Some(dir) = command.get_current_dir() {
        wrapped.current_dir(dir);
    }
    let start = Instant::now();
    let status = wrapped
        .status()
        .with_context(|| format!("cannot start {command:?}"))?;
    let seconds = start.elapsed().as_secs_f64();
    if !status.success() {
        let mut text = String::new();
        stderr.seek(SeekFrom::Start(0))?;
        stderr.read_to_string(&mut text).ok();
        bail!("{command:?} failed with {status}:\n{text}");
    }
    let rss = fs::read_to_string(rss_file.path())?;
    let max_rss_kib = rss
        .lines()
        .rev()
        .find_map(|line| line.trim().parse().ok())
        .with_context(|| format!("no peak RSS from /usr/bin/time: {rss}"))?;
    Ok(Sample {
        seconds,
        max_rss_kib,
    })
}

struct Machine {
    cpus: usize,
    model: String,
    load: String,
}

fn cpu_model() -> String {
    fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find(|line| line.starts_with("model name"))
                .and_then(|line| line.split_once(':'))
                .map(|(_, model)| model.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into())
}

fn load_average() -> String {
    fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|text| text.split_whitespace().next().map(str::to_owned))
        .unwrap_or_else(|| "?".into())
}

struct Report<'a> {
    routes: &'a [Route<'a>],
    machine: Machine,
    size_mb: u64,
    push_size_mb: u64,
    push_compressed_mb: f64,
    runs: usize,
    imgpack: String,
}

impl Report<'_> {
    fn ratio(&self, route: &Route) -> Option<(f64, &str, &'static str)> {
        let (index, target) = route.compared_with?;
        let reference = &self.routes[index];
        Some((
            route.median() / reference.median().max(0.001),
            reference.name.as_str(),
            target,
        ))
    }

    fn context(&self) -> String {
        format!(
            "{} CPUs usable ({}); load average {}; {} interleaved rounds, median time, peak RSS \
             of the largest process; a {} MB static binary (assembly, build + push, no-op), a \
             two-platform layout of {} MB binaries ({:.1} MB compressed) for the push; {}",
            self.machine.cpus,
            self.machine.model,
            self.machine.load,
            self.runs,
            self.size_mb,
            self.push_size_mb,
            self.push_compressed_mb,
            self.imgpack,
        )
    }

    fn rows(&self) -> Vec<[String; 6]> {
        self.routes
            .iter()
            .map(|route| {
                let (ratio, against, target) = match self.ratio(route) {
                    Some((ratio, against, target)) => (
                        format!("{ratio:.2}×"),
                        against.to_owned(),
                        target.to_owned(),
                    ),
                    None => (String::new(), String::new(), String::new()),
                };
                [
                    route.name.clone(),
                    format!("{:.2}", route.median()),
                    format!("{:.1}", route.peak_mib()),
                    against,
                    ratio,
                    target,
                ]
            })
            .collect()
    }

    const HEADERS: [&'static str; 6] = [
        "Route",
        "Median s",
        "Peak MiB",
        "Compared with",
        "Ratio",
        "Target",
    ];

    fn table(&self) -> String {
        let mut out = format!(
            "{:<40} {:>9} {:>9}  {:<32} {:>7} {:>7}\n",
            Self::HEADERS[0],
            Self::HEADERS[1],
            Self::HEADERS[2],
            Self::HEADERS[3],
            Self::HEADERS[4],
            Self::HEADERS[5]
        );
        for row in self.rows() {
            out.push_str(&format!(
                "{:<40} {:>9} {:>9}  {:<32} {:>7} {:>7}\n",
                row[0], row[1], row[2], row[3], row[4], row[5]
            ));
        }
        out
    }

    fn markdown(&self) -> String {
        let mut out = String::new();
        out.push_str(&format!(
            "Generated by `cargo xtask bench`: {}.\n\n",
            self.context()
        ));
        out.push_str(&format!("| {} |\n", Self::HEADERS.join(" | ")));
        out.push_str("|---|--:|--:|---|--:|--:|\n");
        for row in self.rows() {
            let row: Vec<String> = row.iter().map(|cell| cell.replace('|', "\\|")).collect();
            out.push_str(&format!("| {} |\n", row.join(" | ")));
        }
        out.push_str("\n![Ratios against the reference routes](benchmarks.svg)\n");
        out
    }

    /// Horizontal bars, one per compared route: its ratio, with 1.0 (as fast
    /// as the reference) and its target marked.
    fn chart(&self) -> String {
        let compared: Vec<(&Route, f64, &'static str)> = self
            .routes
            .iter()
            .filter_map(|route| {
                self.ratio(route)
                    .map(|(ratio, _, target)| (route, ratio, target))
            })
            .collect();
        let (label_width, bar_width, row_height) = (300.0, 400.0, 28.0);
        let max_ratio = compared.iter().map(|(_, r, _)| *r).fold(1.2f64, f64::max);
        let scale = bar_width / max_ratio;
        let height = 40.0 + row_height * compared.len() as f64;
        let mut svg = format!(
            "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{height}\" font-family=\"sans-serif\" font-size=\"13\">\n\
             <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n\
             <text x=\"10\" y=\"18\">Time as a ratio of the reference route (shorter is faster; | = target)</text>\n",
            w = label_width + bar_width + 80.0
        );
        for (row, (route, ratio, target)) in compared.iter().enumerate() {
            let y = 30.0 + row_height * row as f64;
            svg.push_str(&format!(
                "<text x=\"10\" y=\"{:.0}\">{}</text>\n<rect x=\"{label_width}\" y=\"{y:.0}\" width=\"{:.1}\" height=\"18\" fill=\"#4878a8\"/>\n\
                 <text x=\"{:.1}\" y=\"{:.0}\">{ratio:.2}×</text>\n",
                y + 14.0,
                escape(&route.name),
                ratio * scale,
                label_width + ratio * scale + 6.0,
                y + 14.0
            ));
            if let Ok(value) = target.trim_start_matches("≤ ").parse::<f64>() {
                let x = label_width + value * scale;
                svg.push_str(&format!(
                    "<line x1=\"{x:.1}\" x2=\"{x:.1}\" y1=\"{:.0}\" y2=\"{:.0}\" stroke=\"#c03030\" stroke-width=\"2\"/>\n",
                    y - 2.0,
                    y + 20.0
                ));
            }
        }
        let one = label_width + scale;
        svg.push_str(&format!(
            "<line x1=\"{one:.1}\" x2=\"{one:.1}\" y1=\"26\" y2=\"{:.0}\" stroke=\"#888\" stroke-dasharray=\"4 3\"/>\n</svg>\n",
            height - 4.0
        ));
        svg
    }
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// Replaces what is between the markers of `page` with `section`.
fn update_docs_page(page: &Path, section: &str) -> Result<()> {
    let text =
        fs::read_to_string(page).with_context(|| format!("cannot read {}", page.display()))?;
    let (Some(begin), Some(end)) = (text.find(BEGIN_MARKER), text.find(END_MARKER)) else {
        bail!(
            "{} has no {BEGIN_MARKER} … {END_MARKER} section",
            page.display()
        );
    };
    let updated = format!(
        "{}{BEGIN_MARKER}\n{section}{}",
        &text[..begin],
        &text[end..]
    );
    fs::write(page, updated).with_context(|| format!("cannot write {}", page.display()))
}
