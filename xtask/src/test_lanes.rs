//! The test run of `cargo xtask ci`: every test binary of the workspace, a few
//! at a time. Most end-to-end binaries spend their time waiting (on retry
//! timeouts, registries, SIGKILLed pushes), so running them side by side
//! cuts the run to a fraction of `cargo test`'s one-after-the-other, on 2
//! cores as on 16. Each binary's output is printed whole when it ends, so
//! logs never interleave; the run goes on past a failure and names every
//! failing binary at the end. A binary that runs longer than its timeout
//! (IMGPACK_CI_TEST_TIMEOUT seconds, default 15 minutes) is killed with its
//! whole process group and counted as failed, so a hang fails CI instead of
//! stopping it; the slowest binaries are listed at the end of every run.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// The binaries that took longest in CI (each over 30 s), started first so
/// that the run does not end with one of them alone.
const SLOW_FIRST: [&str; 7] = [
    "soak",
    "hostile",
    "registry",
    "base",
    "git_source",
    "frontend",
    "job_source",
];

/// One compiled test binary and where cargo would run it.
#[derive(Clone, Debug)]
pub struct TestBinary {
    /// `tests/NAME.rs` or `PACKAGE (unit tests)`, as printed.
    pub label: String,
    /// The integration test's name, empty for unit tests.
    pub test_name: String,
    executable: PathBuf,
    package_dir: PathBuf,
    package: String,
}

/// `cargo test --no-run` with `args`: compiles every test binary and lists them.
pub fn compile(mut cargo: Command) -> Result<Vec<TestBinary>> {
    cargo
        .args(["--no-run", "--message-format=json-render-diagnostics"])
        .stdout(Stdio::piped());
    eprintln!("xtask: running {cargo:?}");
    let mut child = cargo.spawn().context("cannot start cargo test --no-run")?;
    let stdout = child.stdout.take().expect("piped stdout");
    let mut binaries = Vec::new();
    for line in BufReader::new(stdout).lines() {
        let message: serde_json::Value = match serde_json::from_str(&line?) {
            Ok(message) => message,
            Err(_) => continue,
        };
        if let Some(binary) = test_binary(&message) {
            binaries.push(binary);
        }
    }
    let status = child.wait()?;
    if !status.success() {
        bail!("compiling the tests failed with {status}");
    }
    Ok(binaries)
}

/// The test binary a cargo `compiler-artifact` message describes, if any.
fn test_binary(message: &serde_json::Value) -> Option<TestBinary> {
    if message["reason"] != "compiler-artifact" || message["profile"]["test"] != true {
        return None;
    }
    let executable = PathBuf::from(message["executable"].as_str()?);
    let target = &message["target"];
    let name = target["name"].as_str()?.to_owned();
    let manifest = PathBuf::from(message["manifest_path"].as_str()?);
    let package = message["package_id"]
        .as_str()
        .and_then(package_name)
        .unwrap_or(&name)
        .to_owned();
    let is_integration_test = target["kind"]
        .as_array()
        .is_some_and(|kinds| kinds.iter().any(|k| k == "test"));
    let (label, test_name) = if is_integration_test {
        (format!("tests/{name}.rs"), name)
    } else {
        (format!("{package} (unit tests of {name})"), String::new())
    };
    Some(TestBinary {
        label,
        test_name,
        executable,
        package_dir: manifest.parent()?.to_owned(),
        package,
    })
}

/// `imgpack-blob` in `path+file:///work/crates/imgpack-blob#0.1.0` or
/// `path+file:///work/crates/imgpack#imgpack-blob@0.1.0`.
fn package_name(id: &str) -> Option<&str> {
    let after_hash = id.rsplit_once('#').map_or(id, |(_, tail)| tail);
    match after_hash.split_once('@') {
        Some((name, _)) => Some(name),
        None => id
            .rsplit_once('#')
            .and_then(|(path, _)| path.rsplit('/').next()),
    }
}

/// The longest a test binary may run when IMGPACK_CI_TEST_TIMEOUT does not say: three times
/// the slowest binary's time on a loaded 2-core machine.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(15 * 60);

/// How many of the slowest binaries the end of a run lists.
const SLOWEST_SHOWN: usize = 10;

/// What the whole run came to.
pub struct Outcome {
    pub passed: u64,
    pub failed: u64,
    pub failing: Vec<String>,
    /// Every binary that ran (or was given up on) and how long it took.
    pub times: Vec<(String, Duration)>,
}

impl Outcome {
    /// The `SLOWEST_SHOWN` slowest binaries, slowest first, one line each.
    pub fn slowest(&self) -> Vec<String> {
        let mut times = self.times.clone();
        times.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        times
            .iter()
            .take(SLOWEST_SHOWN)
            .map(|(label, took)| format!("{:>7.1} s  {label}", took.as_secs_f64()))
            .collect()
    }
}

/// The per-binary timeout: IMGPACK_CI_TEST_TIMEOUT (seconds), else [`DEFAULT_TIMEOUT`].
pub fn timeout() -> Result<Duration> {
    match std::env::var("IMGPACK_CI_TEST_TIMEOUT") {
        Err(_) => Ok(DEFAULT_TIMEOUT),
        Ok(text) => match text.trim().parse::<u64>() {
            Ok(seconds) if seconds > 0 => Ok(Duration::from_secs(seconds)),
            _ => bail!(
                "IMGPACK_CI_TEST_TIMEOUT={text} is not a number of seconds: give one above 0, \
                 such as 900"
            ),
        },
    }
}

/// A gate that binaries needing something built alongside the tests wait on.
#[derive(Clone, Default)]
pub struct Gate(Arc<(Mutex<Option<bool>>, Condvar)>);

impl Gate {
    /// Opens the gate: `ready` says whether what it waited for succeeded.
    pub fn open(&self, ready: bool) {
        let (state, changed) = &*self.0;
        *state.lock().expect("not poisoned") = Some(ready);
        changed.notify_all();
    }

    fn wait(&self) -> bool {
        let (state, changed) = &*self.0;
        let state = changed
            .wait_while(state.lock().expect("not poisoned"), |s| s.is_none())
            .expect("not poisoned");
        state.unwrap_or(false)
    }
}

/// Runs `binaries` on `lanes` at once, each for at most `timeout`; those that
/// `waits` accepts start only once `gate` is open, and fail without running if
/// it opened on a failure.
pub fn run(
    mut binaries: Vec<TestBinary>,
    lanes: usize,
    timeout: Duration,
    cargo: &str,
    gate: &Gate,
    waits: impl Fn(&TestBinary) -> bool + Sync,
) -> Outcome {
    binaries.sort_by_key(|b| {
        (
            waits(b),
            SLOW_FIRST
                .iter()
                .position(|slow| *slow == b.test_name)
                .unwrap_or(SLOW_FIRST.len()),
        )
    });
    forward_interrupts();
    let queue = Mutex::new(VecDeque::from(binaries));
    let (results, finished) = mpsc::channel::<(String, Duration, Result<(u64, u64)>)>();
    std::thread::scope(|scope| {
        for _ in 0..lanes.max(1) {
            let results = results.clone();
            let (queue, waits) = (&queue, &waits);
            scope.spawn(move || loop {
                let Some(binary) = queue.lock().expect("not poisoned").pop_front() else {
                    return;
                };
                if waits(&binary) && !gate.wait() {
                    let not_run =
                        anyhow::anyhow!("not run: what it needs was not built (see above)");
                    let _ = results.send((binary.label.clone(), Duration::ZERO, Err(not_run)));
                    continue;
                }
                let started = Instant::now();
                let result = run_one(&binary, cargo, timeout);
                let _ = results.send((binary.label.clone(), started.elapsed(), result));
            });
        }
        drop(results);
        let mut outcome = Outcome {
            passed: 0,
            failed: 0,
            failing: Vec::new(),
            times: Vec::new(),
        };
        for (label, took, result) in finished {
            if took > Duration::ZERO {
                outcome.times.push((label.clone(), took));
            }
            match result {
                Ok((passed, failed)) => {
                    outcome.passed += passed;
                    outcome.failed += failed;
                    if failed > 0 {
                        outcome.failing.push(label);
                    }
                }
                Err(err) => {
                    println!("xtask: {label}: {err:#}");
                    outcome.failed += 1;
                    outcome.failing.push(label);
                }
            }
        }
        outcome
    })
}

/// Runs one test binary as cargo test would (in its package's directory, with
/// cargo's variables), in a process group of its own, then prints its whole
/// output. Returns the counts of its `test result:` line. One still running
/// after `timeout` is killed with everything it started (registries, imgpack
/// runs) and is an error.
fn run_one(binary: &TestBinary, cargo: &str, timeout: Duration) -> Result<(u64, u64)> {
    let started = Instant::now();
    let mut output = tempfile::tempfile()?;
    let child = Command::new(&binary.executable)
        .current_dir(&binary.package_dir)
        .env("CARGO", cargo)
        .env("CARGO_MANIFEST_DIR", &binary.package_dir)
        .env("CARGO_PKG_NAME", &binary.package)
        // This is CI's run: a missing external tool fails a test instead of skipping it.
        .env("IMGPACK_E2E", "1")
        .stdin(Stdio::null())
        .stdout(output.try_clone()?)
        .stderr(output.try_clone()?)
        // Its own group, so that a timeout can kill what it started along with it.
        .process_group(0)
        .spawn()
        .with_context(|| format!("cannot start {}", binary.executable.display()))?;
    let status = wait_or_kill(child, timeout)?;
    let mut text = String::new();
    output.seek(SeekFrom::Start(0))?;
    output.read_to_string(&mut text)?;
    println!(
        "xtask: {} ({:.1} s)\n{}",
        binary.label,
        started.elapsed().as_secs_f64(),
        text.trim_end()
    );
    let Some(status) = status else {
        bail!(
            "timed out: still running after {} s, killed with its process group \
             (IMGPACK_CI_TEST_TIMEOUT sets the limit in seconds)",
            timeout.as_secs()
        );
    };
    let (passed, failed) = counts(&text);
    if !status.success() && failed == 0 {
        bail!("exited with {status} before reporting a failing test");
    }
    Ok((passed, failed))
}

/// Waits for `child`, the leader of its own process group; after `timeout`,
/// SIGKILLs the whole group and returns None.
fn wait_or_kill(mut child: Child, timeout: Duration) -> Result<Option<ExitStatus>> {
    let deadline = Instant::now() + timeout;
    let _registered = Running::register(child.id());
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(Some(status));
        }
        if Instant::now() >= deadline {
            kill_group(child.id());
            child.wait()?;
            return Ok(None);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The process groups of the test binaries running now. In groups of their
/// own they no longer get the terminal's Ctrl-C, so an interrupt of xtask is
/// passed on to them by [`forward_interrupts`]'s handler, which may only read
/// atomics.
static RUNNING: [AtomicI32; 64] = [const { AtomicI32::new(0) }; 64];

/// A group's slot in [`RUNNING`], emptied when dropped.
struct Running(Option<usize>);

impl Running {
    fn register(group: u32) -> Running {
        let slot = RUNNING.iter().position(|slot| {
            slot.compare_exchange(0, group as i32, Ordering::SeqCst, Ordering::SeqCst)
                .is_ok()
        });
        Running(slot)
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(slot) = self.0 {
            RUNNING[slot].store(0, Ordering::SeqCst);
        }
    }
}

/// On SIGINT or SIGTERM, kills every running test binary's group, then dies
/// of the signal as it would have.
fn forward_interrupts() {
    extern "C" fn on_signal(signal: libc::c_int) {
        for slot in &RUNNING {
            let group = slot.load(Ordering::SeqCst);
            if group > 0 {
                // SAFETY: kill(2) is async-signal-safe.
                unsafe { libc::kill(-group, libc::SIGKILL) };
            }
        }
        // SAFETY: signal(2) and raise(3) are async-signal-safe.
        unsafe {
            libc::signal(signal, libc::SIG_DFL);
            libc::raise(signal);
        }
    }
    for signal in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: installs a handler that only reads atomics and makes async-signal-safe calls.
        unsafe {
            libc::signal(
                signal,
                on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t,
            )
        };
    }
}

/// SIGKILL to every process in group `leader` (the binary, the registries and
/// imgpack runs it started, unless one made a group of its own).
fn kill_group(leader: u32) {
    // SAFETY: kill(2) with a negative pid signals that process group; no memory is involved.
    unsafe {
        libc::kill(-(leader as libc::pid_t), libc::SIGKILL);
    }
}

/// The passed and failed counts of `test result:` lines in `output`.
fn counts(output: &str) -> (u64, u64) {
    output
        .lines()
        .filter_map(|line| line.strip_prefix("test result: "))
        .fold((0, 0), |(passed, failed), summary| {
            (
                passed + count_before(summary, " passed"),
                failed + count_before(summary, " failed"),
            )
        })
}

/// In `ok. 7 passed; 0 failed; …`, the number before `label`.
fn count_before(summary: &str, label: &str) -> u64 {
    summary
        .split(';')
        .map(|part| {
            part.trim()
                .trim_start_matches("ok. ")
                .trim_start_matches("FAILED. ")
        })
        .find_map(|part| part.strip_suffix(label))
        .and_then(|number| number.trim().parse().ok())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_are_read_from_result_lines() {
        let output = "running 3 tests\n\
            test result: FAILED. 2 passed; 1 failed; 0 ignored; 0 measured; 0 filtered out\n";
        assert_eq!(counts(output), (2, 1));
        assert_eq!(counts("no summary at all"), (0, 0));
    }

    #[test]
    fn the_slowest_ten_come_first() {
        let outcome = Outcome {
            passed: 0,
            failed: 0,
            failing: Vec::new(),
            times: (1..=12)
                .map(|n| (format!("tests/t{n}.rs"), Duration::from_secs(n)))
                .collect(),
        };
        let slowest = outcome.slowest();
        assert_eq!(slowest.len(), 10);
        assert_eq!(slowest[0], "   12.0 s  tests/t12.rs");
        assert_eq!(slowest[9], "    3.0 s  tests/t3.rs");
    }

    #[test]
    fn a_binary_that_hangs_is_killed_with_its_group_and_fails() {
        // A shell that starts a grandchild in its group, then hangs: both must go.
        let marker = tempfile::NamedTempFile::new().unwrap();
        let script = format!(
            "sleep 300 & echo $! > {}; echo 'running 1 test'; sleep 300",
            marker.path().display()
        );
        let dir = tempfile::tempdir().unwrap();
        let binary = TestBinary {
            label: "tests/hang.rs".into(),
            test_name: "hang".into(),
            executable: dir.path().join("hang"),
            package_dir: dir.path().to_owned(),
            package: "hang".into(),
        };
        std::fs::write(&binary.executable, format!("#!/bin/sh\n{script}\n")).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&binary.executable, std::fs::Permissions::from_mode(0o755))
            .unwrap();
        let started = Instant::now();
        let err = run_one(&binary, "cargo", Duration::from_secs(1)).unwrap_err();
        assert!(started.elapsed() < Duration::from_secs(30));
        assert!(
            format!("{err}").starts_with("timed out: still running after 1 s"),
            "{err}"
        );
        let grandchild = std::fs::read_to_string(marker.path()).unwrap();
        let alive = std::path::Path::new("/proc").join(grandchild.trim());
        // Killed and reaped by init: gone, or a zombie for an instant.
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::fs::read_to_string(alive.join("stat")).is_ok_and(|stat| !stat.contains(") Z ")) {
            assert!(Instant::now() < deadline, "the grandchild still runs");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    #[test]
    fn package_names_come_from_both_id_forms() {
        assert_eq!(
            package_name("path+file:///w/crates/imgpack-blob#0.1.0"),
            Some("imgpack-blob")
        );
        assert_eq!(
            package_name("path+file:///w/tests#imgpack-e2e@0.1.0"),
            Some("imgpack-e2e")
        );
    }

    #[test]
    fn only_test_artifacts_are_binaries() {
        let message = serde_json::json!({
            "reason": "compiler-artifact",
            "package_id": "path+file:///w/tests#imgpack-e2e@0.1.0",
            "manifest_path": "/w/tests/Cargo.toml",
            "target": {"name": "soak", "kind": ["test"]},
            "profile": {"test": true},
            "executable": "/w/target/debug/deps/soak-1234"
        });
        let binary = test_binary(&message).unwrap();
        assert_eq!(binary.label, "tests/soak.rs");
        assert_eq!(binary.test_name, "soak");
        assert_eq!(binary.package_dir, PathBuf::from("/w/tests"));
        let mut library = message.clone();
        library["profile"]["test"] = false.into();
        assert!(test_binary(&library).is_none());
    }
}
