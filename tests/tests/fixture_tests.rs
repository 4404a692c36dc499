//! The fixtures' own unit tests, run the way the end-to-end tests build the fixtures: `go test`
//! in GOPATH mode against Debian's Gin for gin-app, as an offline module for go-hello, and
//! `cargo test` for the Rust ones. A fixture that is wrong makes every test built on it lie.

use std::process::Command;

use imgpack_e2e::fixtures::{project, SERVICES};
use imgpack_e2e::*;

#[test]
fn every_fixture_passes_its_own_unit_tests() {
    let work = tempfile::tempdir().unwrap();
    for name in SERVICES.into_iter().chain(["probe"]) {
        let Some(project) = project(name, work.path()) else {
            continue;
        };
        let mut command = if project.dir.join("Cargo.toml").is_file() {
            let mut cargo = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
            cargo
                .args(["test", "--quiet", "--locked", "--manifest-path"])
                .arg(project.dir.join("Cargo.toml"))
                // One target directory for every run, so a rerun compiles nothing.
                .arg("--target-dir")
                .arg(workspace_root().join("target/fixtures"));
            cargo
        } else {
            let mut go = Command::new("go");
            // The flags of imgpack's own Go builds, so the packages come from the build cache.
            go.args(["test", "-trimpath", "."]).env("CGO_ENABLED", "0");
            go
        };
        let output = command
            .current_dir(&project.dir)
            .envs(project.env.iter().map(|(key, value)| (key, value)))
            .output()
            .unwrap_or_else(|err| panic!("cannot run the tests of {name}: {err}"));
        let report = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(
            output.status.success(),
            "{name}'s unit tests failed:\n{report}"
        );
        assert!(
            !report.contains("no test files") && !report.contains("running 0 tests"),
            "{name} has no unit tests to run:\n{report}"
        );
        eprintln!("{name}: unit tests passed");
    }
}
