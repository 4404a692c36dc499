//! Running the compilers: finding a tool on PATH, and copying its output to
//! stderr behind a `[platform]` prefix.

use std::io::{BufRead, BufReader};
use std::process::{Command, ExitStatus, Stdio};
use std::thread;

use anyhow::{Context, Result};

/// Whether `tool` can be found on PATH.
pub(crate) fn on_path(tool: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(tool).is_file()))
}

/// `tool` on PATH, else an error that says how to install it (`install`)
/// or, where the command takes them, to pass prebuilt binaries instead.
pub(crate) fn require_tool(tool: &str, advice: &'static str, install: &'static str) -> Result<()> {
    if !on_path(tool) {
        return Err(crate::SourceError {
            problem: format!("`{tool}` is not on PATH"),
            advice,
            plain_advice: install,
        }
        .into());
    }
    Ok(())
}

/// Runs `command`, copying its stderr (and, unless captured, its stdout) to
/// our stderr line by line behind `[prefix]`, so the output of builds that
/// run at once stays readable; URLs lose their credentials (cargo names a git
/// dependency's URL as Cargo.toml spells it). Returns the exit status and captured stdout lines.
pub(crate) fn run_prefixed(
    command: &mut Command,
    prefix: &str,
    capture_stdout: bool,
    quiet: bool,
) -> Result<(ExitStatus, Vec<String>)> {
    let program = command.get_program().to_string_lossy().into_owned();
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot run {program}"))?;
    let stderr = child.stderr.take().expect("piped stderr");
    let stdout = child.stdout.take().expect("piped stdout");
    let echo = |line: &str| {
        if !quiet {
            eprintln!("[{prefix}] {}", imgpack_redact::redact_urls(line));
        }
    };
    let (captured, status) = thread::scope(|scope| {
        let errors = scope.spawn(|| {
            // Compiler errors are shown even when quiet: they are why a build failed.
            let mut lines = Vec::new();
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                echo(&line);
                lines.push(line);
            }
            lines
        });
        let mut captured = Vec::new();
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if capture_stdout {
                captured.push(line);
            } else {
                echo(&line);
            }
        }
        let error_lines = errors.join().unwrap_or_default();
        let status = child.wait();
        if quiet && !matches!(status, Ok(s) if s.success()) {
            for line in &error_lines {
                eprintln!("[{prefix}] {}", imgpack_redact::redact_urls(line));
            }
        }
        (captured, status)
    });
    Ok((
        status.with_context(|| format!("{program} did not finish"))?,
        captured,
    ))
}
