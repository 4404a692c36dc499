//! Every network wait is bounded and explained (issue 19, item 7): a connection refused at
//! first contact ends at once with one line (push, build --push, verify, login); a registry
//! that accepts connections and never answers ends within a minute by default, and within
//! `--retry-timeout` when one is given, for `imgpack verify` as for a push, with a line saying
//! what imgpack waits for; a git server that never answers ends at IMGPACK_GIT_TIMEOUT.
//! The silent servers are the fake registry's silent mode (tests/src/fake_registry.rs).

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use imgpack_e2e::fake_registry::{FakeRegistry, Hostility};
use imgpack_e2e::*;

/// Nothing listens on port 1 of the loopback address.
const NOBODY: &str = "127.0.0.1:1";

/// A directory with a synthetic binary `app`, its image in `oci:layout:v1`, and a key pair
/// (`cosign.pub` for verify).
fn workdir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write_static_elf(&d.join("app"), Arch::Amd64, b"waits");
    run_expect(
        imgpack_in(d).args([
            "build",
            "-q",
            "--binary",
            "linux/amd64=app",
            "-o",
            "oci:layout:v1",
        ]),
        true,
    );
    run_expect(
        imgpack_in(d).args(["keygen"]).env("COSIGN_PASSWORD", ""),
        true,
    );
    dir
}

/// imgpack in `dir` with a cache and a docker config of its own, stdin closed.
fn imgpack_in(dir: &Path) -> Command {
    let mut command = imgpack();
    command
        .current_dir(dir)
        .env("IMGPACK_CACHE_DIR", dir.join("cache"))
        .env("DOCKER_CONFIG", dir.join("docker"))
        .env_remove("IMGPACK_REPO")
        .stdin(Stdio::null());
    command
}

/// The commands that contact `host` first: build --push, push, verify and login.
fn contacting(host: &str, extra: &[&str]) -> Vec<(&'static str, Vec<String>)> {
    let target = format!("{host}/team/app:v1");
    let with = |args: &[&str]| -> Vec<String> {
        args.iter()
            .chain(extra)
            .map(|arg| arg.to_string())
            .collect()
    };
    vec![
        (
            "build --push",
            with(&["build", "--binary", "linux/amd64=app", "--push", &target]),
        ),
        ("push", with(&["push", "oci:layout:v1", &target])),
        ("verify", with(&["verify", &target, "--key", "cosign.pub"])),
    ]
}

/// Runs each command in `dir` at once (a thread each; each command is made on
/// the test's own thread, whose name keys its cache); returns name, output and
/// time taken.
fn run_all(
    dir: &Path,
    commands: Vec<(&'static str, Vec<String>)>,
) -> Vec<(&'static str, Output, Duration)> {
    let runs: Vec<(&str, JoinHandle<(Output, Duration)>)> = commands
        .into_iter()
        .map(|(name, args)| {
            let mut command = imgpack_in(dir);
            command.args(&args);
            (name, std::thread::spawn(move || timed(&mut command)))
        })
        .collect();
    runs.into_iter()
        .map(|(name, run)| {
            let (output, took) = run.join().unwrap();
            (name, output, took)
        })
        .collect()
}

fn timed(command: &mut Command) -> (Output, Duration) {
    let started = Instant::now();
    let output = command.output().unwrap();
    (output, started.elapsed())
}

/// `imgpack login HOST` with a password on stdin (no progress of its own).
fn login_command(dir: &Path, host: &str) -> Command {
    let password = dir.join("password.txt");
    std::fs::write(&password, "secret").unwrap();
    let mut command = imgpack_in(dir);
    command
        .args(["login", host, "-u", "ci", "--password-stdin"])
        .stdin(std::fs::File::open(password).unwrap());
    command
}

fn login(dir: &Path, host: &str) -> (Output, Duration) {
    timed(&mut login_command(dir, host))
}

#[test]
fn a_refused_first_contact_ends_at_once_with_one_line() {
    let dir = workdir();
    let d = dir.path();
    let mut results = run_all(d, contacting(NOBODY, &["-q"]));
    let (output, took) = login(d, NOBODY);
    results.push(("login", output, took));
    for (name, output, took) in results {
        let err = error_line(&output);
        eprintln!("{name} to {NOBODY}: {:.1}s: {err}", took.as_secs_f64());
        // Today's retries took 34 s; one try takes milliseconds.
        assert!(took < Duration::from_secs(10), "{name} took {took:?}");
        assert!(
            err.contains(NOBODY) && err.contains("connection refused"),
            "{name}: {err}"
        );
        assert!(err.contains("is it running"), "{name}: {err}");
    }
}

#[test]
fn a_silent_registry_ends_within_a_minute_by_default() {
    let registry = FakeRegistry::start(Hostility {
        silent: true,
        ..Hostility::default()
    });
    let host = registry.host();
    let dir = workdir();
    let d = dir.path();
    let login = {
        let mut command = login_command(d, &host);
        std::thread::spawn(move || timed(&mut command))
    };
    let mut results = run_all(d, contacting(&host, &[]));
    let (output, took) = login.join().unwrap();
    results.push(("login", output, took));
    for (name, output, took) in results {
        let err = stderr(&output);
        let last = err.trim_end().lines().last().unwrap_or_default();
        eprintln!(
            "{name} to a silent registry: {:.1}s: {last}",
            took.as_secs_f64()
        );
        assert!(!output.status.success(), "{name}: {err}");
        // Today 120 s and more (the retry timeout, then one more try).
        assert!(took < Duration::from_secs(55), "{name} took {took:?}");
        assert!(
            last.starts_with("error: ")
                && last.contains(&host)
                && last.contains("stopped answering"),
            "{name}: {err}"
        );
        // Not a silent wait: a line says what imgpack waits for.
        if name != "login" {
            assert!(
                err.contains(&format!("registry {host} has not answered GET /v2/")),
                "{name}: {err}"
            );
        }
    }
}

#[test]
fn verify_takes_a_retry_timeout_and_says_what_it_waits_for() {
    let registry = FakeRegistry::start(Hostility {
        silent: true,
        ..Hostility::default()
    });
    let host = registry.host();
    let dir = workdir();
    let d = dir.path();
    let mut commands = contacting(&host, &["--retry-timeout", "7"]);
    let (_, quiet) = commands
        .iter()
        .find(|(name, _)| *name == "verify")
        .cloned()
        .unwrap();
    commands.push(("verify -q", [quiet, vec!["-q".into()]].concat()));
    for (name, output, took) in run_all(d, commands) {
        let err = stderr(&output);
        eprintln!(
            "{name} --retry-timeout 7: {:.1}s: {err}",
            took.as_secs_f64()
        );
        // Today verify has no --retry-timeout and waits 130 s in silence.
        assert!(took < Duration::from_secs(20), "{name} took {took:?}");
        let last = match name {
            "verify -q" => error_line(&output),
            _ => err.trim_end().lines().last().unwrap_or_default().to_owned(),
        };
        assert!(
            last.contains(&host) && last.contains("stopped answering"),
            "{name}: {err}"
        );
        assert!(last.contains("within 7s"), "{name}: {err}");
        if name != "verify -q" {
            assert!(
                err.contains("has not answered GET /v2/ for 5s; still trying (up to 7s in all"),
                "{name}: {err}"
            );
        }
    }
}

/// `imgpack build git+http://HOST/…` with IMGPACK_GIT_TIMEOUT=`seconds`.
fn build_from_git(dir: &Path, host: &str, seconds: &str) -> Command {
    let mut command = imgpack_in(dir);
    command
        .args(["build", "-q", &format!("git+http://{host}/team/app.git")])
        .args(["--output", "oci:out:v1"])
        .env("IMGPACK_GIT_TIMEOUT", seconds);
    command
}

#[test]
fn a_silent_git_server_ends_at_the_git_timeout() {
    let server = FakeRegistry::start(Hostility {
        silent: true,
        ..Hostility::default()
    });
    let dir = tempfile::tempdir().unwrap();
    let (output, took) = timed(&mut build_from_git(dir.path(), &server.host(), "5"));
    let err = error_line(&output);
    eprintln!(
        "silent git server, IMGPACK_GIT_TIMEOUT=5: {:.1}s: {err}",
        took.as_secs_f64()
    );
    // Today the ref advertisement waits out its own 60 s.
    assert!(took < Duration::from_secs(15), "took {took:?}");
    assert!(
        took >= Duration::from_secs(5),
        "it gave up before its time: {took:?}"
    );
    assert!(
        err.contains("fetching took longer than 5 s") && err.contains("IMGPACK_GIT_TIMEOUT"),
        "{err}"
    );
    assert!(!dir.path().join("out").exists(), "an output was written");
}
