//! The test run of `cargo xtask ci`: every test binary of the workspace, a few
//! at a time. Most end-to-end binaries spend their time waiting (on retry
//! timeouts, registries, SIGKILLed pushes), so running them side by side
//! cuts the run to a fraction of `cargo test`'s one-after-the-other, on 2
//! cores as on 16. Each binary's output is printed whole when it ends, so
//! logs never interleave; the run goes on past a failure and names every
//! failing binary at the end.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Instant;

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

/// What the whole run came to.
pub struct Outcome {
    pub passed: u64,
    pub failed: u64,
    pub failing: Vec<String>,
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

/// Runs `binaries` on `lanes` at once; those that `waits` accepts start only
/// once `gate` is open, and fail without running if it opened on a failure.
pub fn run(
    mut binaries: Vec<TestBinary>,
    lanes: usize,
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
    let queue = Mutex::new(VecDeque::from(binaries));
    let (results, finished) = mpsc::channel::<(String, Result<(u64, u64)>)>();
    std::thread::scope(|scope| {
        for _ in 0..lanes.max(1) {
            let results = results.clone();
            let (queue, waits) = (&queue, &waits);
            scope.spawn(move || loop {
                let Some(binary) = queue.lock().expect("not poisoned").pop_front() else {
                    return;
                };
                let result = if waits(&binary) && !gate.wait() {
                    Err(anyhow::anyhow!(
                        "not run: what it needs was not built (see above)"
                    ))
                } else {
                    run_one(&binary, cargo)
                };
                let _ = results.send((binary.label.clone(), result));
            });
        }
        drop(results);
        let mut outcome = Outcome {
            passed: 0,
            failed: 0,
            failing: Vec::new(),
        };
        for (label, result) in finished {
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
/// cargo's variables), then prints its whole output. Returns the counts of
/// its `test result:` line.
fn run_one(binary: &TestBinary, cargo: &str) -> Result<(u64, u64)> {
    let started = Instant::now();
    let mut output = tempfile::tempfile()?;
    let status = Command::new(&binary.executable)
        .current_dir(&binary.package_dir)
        .env("CARGO", cargo)
        .env("CARGO_MANIFEST_DIR", &binary.package_dir)
        .env("CARGO_PKG_NAME", &binary.package)
        // This is CI's run: a missing external tool fails a test instead of skipping it.
        .env("IMGPACK_E2E", "1")
        .stdin(Stdio::null())
        .stdout(output.try_clone()?)
        .stderr(output.try_clone()?)
        .status()
        .with_context(|| format!("cannot start {}", binary.executable.display()))?;
    let mut text = String::new();
    output.seek(SeekFrom::Start(0))?;
    output.read_to_string(&mut text)?;
    println!(
        "xtask: {} ({:.1} s)\n{}",
        binary.label,
        started.elapsed().as_secs_f64(),
        text.trim_end()
    );
    let (passed, failed) = counts(&text);
    if !status.success() && failed == 0 {
        bail!("exited with {status} before reporting a failing test");
    }
    Ok((passed, failed))
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
