//! The Go frontend: one `go build` per platform (CGO off, -trimpath, stripped,
//! no build ID), several at once.

use std::collections::VecDeque;
use std::path::Path;
use std::process::{Command, ExitStatus};
use std::sync::Mutex;
use std::thread;

use anyhow::{bail, Context, Result};
use imgpack_platform::{Arch, Binary, Platform};

use crate::command::{require_tool, run_prefixed};
use crate::{slug, SourceBuild};

/// Flags that make a Go binary small and identical wherever it is built.
const BASE_LDFLAGS: &str = "-s -w -buildid=";

/// `go build` of the package at `request.path` for every platform, several at once.
pub(crate) fn build(request: &SourceBuild) -> Result<Vec<Binary>> {
    require_tool(
        "go",
        "install Go, or pass prebuilt binaries with --binary",
        "install Go",
    )?;
    let package_dir = request
        .path
        .canonicalize()
        .with_context(|| format!("cannot find the Go package {}", request.path.display()))?;
    let name = package_dir
        .file_name()
        .and_then(|n| n.to_str())
        .context("the Go package directory has no usable name: pass --name")?
        .to_owned();
    for platform in &request.platforms {
        go_env(platform)?;
    }
    let queue = Mutex::new(request.platforms.iter().collect::<VecDeque<_>>());
    let results = Mutex::new(Vec::new());
    thread::scope(|scope| {
        for _ in 0..request.jobs.clamp(1, request.platforms.len().max(1)) {
            scope.spawn(|| loop {
                let Some(platform) = queue.lock().expect("not poisoned").pop_front() else {
                    break;
                };
                let result = build_one(request, &package_dir, &name, platform);
                results
                    .lock()
                    .expect("not poisoned")
                    .push((platform.clone(), result));
            });
        }
    });
    // Report failures in platform order, after every build has finished.
    let mut results = results.into_inner().expect("not poisoned");
    results.sort_by_key(|(platform, _)| request.platforms.iter().position(|p| p == platform));
    let mut binaries = Vec::new();
    let mut failed = Vec::new();
    for (platform, result) in results {
        match result? {
            Ok(binary) => binaries.push(binary),
            Err(status) => failed.push((platform, status)),
        }
    }
    if !failed.is_empty() {
        bail!(
            "go build failed for {}: the compiler's output is above",
            describe_failures(&failed)
        );
    }
    Ok(binaries)
}

/// `linux/amd64 and linux/arm64`; a build killed by a signal says so.
fn describe_failures(failed: &[(Platform, ExitStatus)]) -> String {
    let names: Vec<String> = failed
        .iter()
        .map(|(platform, status)| match status.code() {
            // go's own exit code says nothing the compiler's messages do not.
            Some(_) => platform.to_string(),
            None => format!("{platform} ({status})"),
        })
        .collect();
    match names.as_slice() {
        [] => String::new(),
        [one] => one.clone(),
        [rest @ .., last] => format!("{} and {last}", rest.join(", ")),
    }
}

/// One platform's `go build`: the binary, or the exit status of a build that
/// failed (an error only when go could not be run at all).
fn build_one(
    request: &SourceBuild,
    package_dir: &Path,
    name: &str,
    platform: &Platform,
) -> Result<Result<Binary, ExitStatus>> {
    let out = request.out_dir.join("go").join(slug(platform)).join(name);
    let mut ldflags = BASE_LDFLAGS.to_owned();
    if let Some(extra) = &request.go.ldflags {
        ldflags.push(' ');
        ldflags.push_str(extra);
    }
    let mut command = Command::new("go");
    command
        .current_dir(package_dir)
        .args(["build", "-trimpath", "-ldflags", &ldflags]);
    if !request.go.tags.is_empty() {
        command.args(["-tags", &request.go.tags.join(",")]);
    }
    // Go stamps the commit only where a `git` executable happens to be
    // installed, so the same commit would give different binaries on a
    // laptop and in a Job. The image's annotations carry the commit instead;
    // GOFLAGS=-buildvcs=true asks for the stamp.
    if !chooses_buildvcs(request) {
        command.arg("-buildvcs=false");
    }
    command.arg("-o").arg(&out).arg(".");
    // The user's environment (GOFLAGS, GOPATH, GO111MODULE, GOPROXY, …) is kept;
    // only what selects the target is set, and cgo is off unless asked for.
    command.envs(request.go.env.iter().map(|(k, v)| (k, v)));
    for (key, value) in go_env(platform)? {
        command.env(key, value);
    }
    let cgo_chosen = request.go.env.iter().any(|(k, _)| k == "CGO_ENABLED");
    if std::env::var_os("CGO_ENABLED").is_none() && !cgo_chosen {
        command.env("CGO_ENABLED", "0");
    }
    let (status, _) = run_prefixed(&mut command, &platform.to_string(), false, request.quiet)?;
    if !status.success() {
        return Ok(Err(status));
    }
    Ok(Ok(Binary {
        platform: platform.clone(),
        path: out,
    }))
}

/// Whether GOFLAGS (the environment's or imgpack.toml's) sets -buildvcs itself.
fn chooses_buildvcs(request: &SourceBuild) -> bool {
    let from_file = request
        .go
        .env
        .iter()
        .find(|(key, _)| key == "GOFLAGS")
        .map(|(_, value)| value.clone());
    from_file
        .or_else(|| std::env::var("GOFLAGS").ok())
        .is_some_and(|flags| flags.contains("-buildvcs"))
}

/// GOOS, GOARCH and the variant's GOARM or GOAMD64.
fn go_env(platform: &Platform) -> Result<Vec<(&'static str, String)>> {
    let mut env = vec![
        ("GOOS", "linux".to_owned()),
        ("GOARCH", platform.arch.name().to_owned()),
    ];
    match (platform.arch, platform.variant) {
        (Arch::Arm, Some(variant)) => {
            env.push(("GOARM", variant.trim_start_matches('v').to_owned()))
        }
        (Arch::Amd64, Some(variant)) => env.push(("GOAMD64", variant.to_owned())),
        (_, None) => {}
        (arch, Some(variant)) => bail!("Go has no variant {variant} for {arch}"),
    }
    Ok(env)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(platform: &str) -> Vec<(&'static str, String)> {
        go_env(&platform.parse().unwrap()).unwrap()
    }

    #[test]
    fn every_failed_platform_is_named() {
        use std::os::unix::process::ExitStatusExt;
        let exited = ExitStatus::from_raw(2 << 8);
        let killed = ExitStatus::from_raw(9);
        let failed = |list: &[(&str, ExitStatus)]| {
            let list: Vec<(Platform, ExitStatus)> =
                list.iter().map(|(p, s)| (p.parse().unwrap(), *s)).collect();
            describe_failures(&list)
        };
        assert_eq!(failed(&[("linux/arm64", exited)]), "linux/arm64");
        assert_eq!(
            failed(&[
                ("linux/amd64", exited),
                ("linux/arm64", exited),
                ("linux/386", killed)
            ]),
            "linux/amd64, linux/arm64 and linux/386 (signal: 9 (SIGKILL))"
        );
    }

    #[test]
    fn variants_become_goarm_and_goamd64() {
        assert_eq!(
            env("linux/arm64"),
            [("GOOS", "linux".into()), ("GOARCH", "arm64".into())]
        );
        assert_eq!(env("linux/arm/v6")[2], ("GOARM", "6".into()));
        assert_eq!(env("linux/arm")[2], ("GOARM", "7".into()));
        assert_eq!(env("linux/amd64/v3")[2], ("GOAMD64", "v3".into()));
        assert_eq!(env("linux/386")[1], ("GOARCH", "386".into()));
    }
}
