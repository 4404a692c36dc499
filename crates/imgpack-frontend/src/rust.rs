//! The Rust frontend: one `cargo build` for every platform's musl target,
//! linked with rust-lld when cross-compiling, with paths remapped.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};
use imgpack_platform::{Arch, Binary, Platform};
use serde_json::Value;

use crate::command::{on_path, require_tool, run_prefixed};
use crate::SourceBuild;

/// The musl target of a platform: static by default, no libc needed in the image.
pub fn musl_target(platform: &Platform) -> Result<&'static str> {
    Ok(match (platform.arch, platform.variant) {
        (Arch::Amd64, None) => "x86_64-unknown-linux-musl",
        (Arch::Arm64, None) => "aarch64-unknown-linux-musl",
        (Arch::Arm, Some("v7")) => "armv7-unknown-linux-musleabihf",
        (Arch::Arm, Some("v6")) => "arm-unknown-linux-musleabihf",
        (Arch::I386, None) => "i686-unknown-linux-musl",
        (Arch::Riscv64, None) => "riscv64gc-unknown-linux-musl",
        (Arch::Ppc64le, None) => "powerpc64le-unknown-linux-musl",
        _ => bail!(
            "Rust builds support linux/amd64, linux/arm64, linux/arm/v7, linux/arm/v6, linux/386, \
             linux/riscv64 and linux/ppc64le, not {platform}"
        ),
    })
}

/// One `cargo build` for all platforms (cargo schedules the targets itself
/// and holds one lock on the target directory, so separate runs would only queue).
pub(crate) fn build(request: &SourceBuild) -> Result<Vec<Binary>> {
    require_tool(
        "cargo",
        "install Rust with rustup, or pass prebuilt binaries with --binary",
        "install Rust with rustup",
    )?;
    let project = request
        .path
        .canonicalize()
        .with_context(|| format!("cannot find the Cargo project {}", request.path.display()))?;
    let targets: Vec<(&Platform, &str)> = request
        .platforms
        .iter()
        .map(|platform| Ok((platform, musl_target(platform)?)))
        .collect::<Result<_>>()?;
    if request.rust.bin.is_none() {
        if let Some(metadata) = cargo_metadata(&project) {
            check_binary_targets(&metadata, &project, request.rust.package.as_deref())?;
        }
    }
    for (_, target) in &targets {
        ensure_target_installed(target, request.quiet)?;
    }
    let mut command = cargo_command(request, &project, &targets)?;
    let platforms: Vec<String> = targets.iter().map(|(p, _)| p.to_string()).collect();
    let prefix = format!("cargo {}", platforms.join(","));
    let (status, stdout) = run_prefixed(&mut command, &prefix, true, request.quiet)?;
    if !status.success() {
        // cargo's exit code (101) says nothing its messages do not; a signal does.
        let killed = match status.code() {
            Some(_) => String::new(),
            None => format!(" ({status})"),
        };
        bail!(
            "cargo build for {} failed{killed}: the compiler's output is above",
            platforms.join(", ")
        );
    }
    executables(&stdout, &targets, request.rust.bin.is_some())
}

fn cargo_command(
    request: &SourceBuild,
    project: &Path,
    targets: &[(&Platform, &str)],
) -> Result<Command> {
    let options = &request.rust;
    let mut command = Command::new("cargo");
    command
        .current_dir(project)
        .arg("build")
        .arg("--manifest-path")
        .arg(project.join("Cargo.toml"))
        .args(["--message-format", "json-render-diagnostics"])
        .args(["--profile", options.profile.as_deref().unwrap_or("release")]);
    for (_, target) in targets {
        command.args(["--target", target]);
    }
    if let Some(bin) = &options.bin {
        command.args(["--bin", bin]);
    }
    if let Some(package) = &options.package {
        command.args(["--package", package]);
    }
    if !options.features.is_empty() {
        command.args(["--features", &options.features.join(",")]);
    }
    if options.no_default_features {
        command.arg("--no-default-features");
    }
    add_path_remapping(&mut command, project);
    let host = host_target();
    for (_, target) in targets {
        if Some(*target) != host.as_deref() && !linker_configured(target, project) {
            // rustc ships lld: a std-only crate links for any musl target with no C cross toolchain.
            command.env(linker_variable(target), "rust-lld");
        }
    }
    Ok(command)
}

/// `--remap-path-prefix` for $CARGO_HOME and the project, so paths compiled
/// into the binary (panic locations of dependencies) are the same on every machine.
fn add_path_remapping(command: &mut Command, project: &Path) {
    let cargo_home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cargo")));
    let mut flags = Vec::new();
    if let Some(home) = cargo_home {
        flags.push(format!("--remap-path-prefix={}=/cargo", home.display()));
    }
    flags.push(format!("--remap-path-prefix={}=/src", project.display()));
    if let Ok(encoded) = std::env::var("CARGO_ENCODED_RUSTFLAGS") {
        // The highest-precedence source: extend it (its separator is 0x1f).
        let mut all: Vec<String> = encoded
            .split('\x1f')
            .filter(|f| !f.is_empty())
            .map(str::to_owned)
            .collect();
        all.extend(flags);
        command.env("CARGO_ENCODED_RUSTFLAGS", all.join("\x1f"));
        return;
    }
    match std::env::var("RUSTFLAGS") {
        // RUSTFLAGS replaces config rustflags entirely: extend it rather than lose them.
        Ok(existing) => {
            command.env("RUSTFLAGS", format!("{existing} {}", flags.join(" ")));
        }
        // Arrays given with --config are merged with the user's build.rustflags.
        Err(_) => {
            let quoted: Vec<String> = flags
                .iter()
                .map(|f| serde_json::to_string(f).expect("a string"))
                .collect();
            command.args([
                "--config",
                &format!("build.rustflags=[{}]", quoted.join(",")),
            ]);
        }
    }
}

fn host_target() -> Option<String> {
    let output = Command::new("rustc").arg("-vV").output().ok()?;
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .find_map(|line| line.strip_prefix("host: "))
        .map(|host| host.replace("-gnu", "-musl"))
}

fn linker_variable(target: &str) -> String {
    format!(
        "CARGO_TARGET_{}_LINKER",
        target.to_ascii_uppercase().replace('-', "_")
    )
}

/// Whether the user chose a linker for `target`: in the environment, or in a
/// cargo config file of the project, its parents or $CARGO_HOME.
fn linker_configured(target: &str, project: &Path) -> bool {
    if std::env::var_os(linker_variable(target)).is_some() {
        return true;
    }
    let mut config_files: Vec<PathBuf> = project
        .ancestors()
        .flat_map(|dir| [dir.join(".cargo/config.toml"), dir.join(".cargo/config")])
        .collect();
    if let Some(home) = std::env::var_os("CARGO_HOME")
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".cargo").into()))
    {
        config_files.push(Path::new(&home).join("config.toml"));
    }
    config_files.iter().any(|file| {
        // The project's own files: bounded, and a FIFO there is skipped, not waited on.
        imgpack_blob::read_local_text(file, &imgpack_blob::local_file::CONFIG_FILE)
            .ok()
            .and_then(|text| text.parse::<toml::Table>().ok())
            .is_some_and(|config| {
                config
                    .get("target")
                    .and_then(|t| t.get(target))
                    .and_then(|t| t.get("linker"))
                    .is_some()
            })
    })
}

/// Adds a missing rustup target, or says how to.
fn ensure_target_installed(target: &str, quiet: bool) -> Result<()> {
    let sysroot = Command::new("rustc")
        .args(["--print", "sysroot"])
        .output()
        .context("cannot run rustc")?;
    let sysroot = PathBuf::from(String::from_utf8_lossy(&sysroot.stdout).trim());
    if sysroot.join("lib/rustlib").join(target).is_dir() {
        return Ok(());
    }
    if !on_path("rustup") {
        bail!(
            "the Rust target {target} is not installed: add it with `rustup target add {target}`"
        );
    }
    if !quiet {
        eprintln!("imgpack: adding the Rust target {target} (rustup target add {target})");
    }
    let mut rustup = Command::new("rustup");
    rustup.args(["target", "add", target]);
    if quiet {
        rustup
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
    }
    let status = rustup.status().context("cannot run rustup")?;
    if !status.success() {
        bail!("`rustup target add {target}` failed ({status})");
    }
    Ok(())
}

/// `cargo metadata` of the workspace's own packages: no build, no network.
/// `None` when it fails: `cargo build` then reports the problem itself.
fn cargo_metadata(project: &Path) -> Option<Value> {
    let output = Command::new("cargo")
        .current_dir(project)
        .args([
            "metadata",
            "--no-deps",
            "--offline",
            "--format-version",
            "1",
        ])
        .arg("--manifest-path")
        .arg(project.join("Cargo.toml"))
        .stdin(std::process::Stdio::null())
        .output()
        .ok()?;
    output
        .status
        .success()
        .then(|| serde_json::from_slice(&output.stdout).ok())
        .flatten()
}

/// Refuses, before anything is compiled, a build without `--bin` whose
/// packages have several binaries (or none). A binary with
/// `required-features` may or may not be built, so it never counts towards
/// "several"; the check of what cargo reports after the build still catches it.
fn check_binary_targets(metadata: &Value, project: &Path, package: Option<&str>) -> Result<()> {
    let packages = built_packages(metadata, project, package);
    if packages.is_empty() {
        return Ok(());
    }
    let bin_targets: Vec<&Value> = packages
        .iter()
        .flat_map(|p| p["targets"].as_array().into_iter().flatten())
        .filter(|t| {
            t["kind"]
                .as_array()
                .is_some_and(|k| k.iter().any(|k| k == "bin"))
        })
        .collect();
    let mut always_built: Vec<&str> = bin_targets
        .iter()
        .filter(|t| t["required-features"].as_array().is_none_or(Vec::is_empty))
        .filter_map(|t| t["name"].as_str())
        .collect();
    always_built.sort_unstable();
    always_built.dedup();
    if always_built.len() > 1 {
        bail!(
            "the project has several binaries ({}): choose one with --bin",
            always_built.join(", ")
        );
    }
    if bin_targets.is_empty() {
        bail!(
            "{} has no binary target (src/main.rs or a [[bin]] section): imgpack packs an executable",
            project.display()
        );
    }
    Ok(())
}

/// The packages `cargo build` builds in `project`: the `--package`, else the
/// project's own package or, at a workspace root, its default members.
fn built_packages<'a>(
    metadata: &'a Value,
    project: &Path,
    package: Option<&str>,
) -> Vec<&'a Value> {
    let packages = metadata["packages"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default();
    if let Some(name) = package {
        // A dependency's name is not in the list: then cargo decides.
        return packages.iter().filter(|p| p["name"] == name).collect();
    }
    let manifest = project.join("Cargo.toml");
    let own = packages
        .iter()
        .filter(|p| p["manifest_path"].as_str().map(Path::new) == Some(manifest.as_path()));
    let at_root = metadata["workspace_root"].as_str().map(Path::new) == Some(project);
    match metadata["workspace_default_members"].as_array() {
        Some(ids) if at_root => packages.iter().filter(|p| ids.contains(&p["id"])).collect(),
        _ => own.collect(),
    }
}

/// The executables cargo reported, one per platform; several without `--bin` is an error.
fn executables(
    messages: &[String],
    targets: &[(&Platform, &str)],
    bin_chosen: bool,
) -> Result<Vec<Binary>> {
    let mut found: BTreeMap<&str, Vec<PathBuf>> = BTreeMap::new();
    for line in messages {
        let Ok(message) = serde_json::from_str::<Value>(line) else {
            continue;
        };
        if message["reason"] != "compiler-artifact" {
            continue;
        }
        let Some(executable) = message["executable"].as_str() else {
            continue;
        };
        if let Some((_, target)) = targets
            .iter()
            .find(|(_, t)| executable.contains(&format!("/{t}/")))
        {
            found
                .entry(target)
                .or_default()
                .push(PathBuf::from(executable));
        }
    }
    targets
        .iter()
        .map(|(platform, target)| {
            let paths = found.remove(target).unwrap_or_default();
            match paths.as_slice() {
                [path] => Ok(Binary { platform: (*platform).clone(), path: path.clone() }),
                [] => bail!("cargo built no executable for {target}: does the package have a binary target?"),
                several if !bin_chosen => {
                    let mut names: Vec<String> = several
                        .iter()
                        .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
                        .collect();
                    names.sort();
                    bail!("the project has several binaries ({}): choose one with --bin", names.join(", "))
                }
                _ => bail!("cargo reported several executables for {target} although --bin was given"),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn platform(text: &str) -> Platform {
        text.parse().unwrap()
    }

    #[test]
    fn platforms_map_to_musl_targets() {
        assert_eq!(
            musl_target(&platform("linux/amd64")).unwrap(),
            "x86_64-unknown-linux-musl"
        );
        assert_eq!(
            musl_target(&platform("linux/arm64")).unwrap(),
            "aarch64-unknown-linux-musl"
        );
        assert_eq!(
            musl_target(&platform("linux/arm/v7")).unwrap(),
            "armv7-unknown-linux-musleabihf"
        );
        assert!(musl_target(&platform("linux/s390x"))
            .unwrap_err()
            .to_string()
            .contains("not linux/s390x"));
        assert_eq!(
            linker_variable("aarch64-unknown-linux-musl"),
            "CARGO_TARGET_AARCH64_UNKNOWN_LINUX_MUSL_LINKER"
        );
    }

    #[test]
    fn executables_are_taken_from_compiler_artifacts() {
        let amd = platform("linux/amd64");
        let targets = [(&amd, "x86_64-unknown-linux-musl")];
        let artifact = |name: &str| {
            serde_json::json!({
                "reason": "compiler-artifact",
                "executable": format!("/p/target/x86_64-unknown-linux-musl/release/{name}"),
            })
            .to_string()
        };
        let lib =
            serde_json::json!({"reason": "compiler-artifact", "executable": null}).to_string();
        let one = executables(&[lib.clone(), artifact("server")], &targets, false).unwrap();
        assert_eq!(
            one[0].path,
            PathBuf::from("/p/target/x86_64-unknown-linux-musl/release/server")
        );
        let err =
            executables(&[artifact("server"), artifact("worker")], &targets, false).unwrap_err();
        assert!(
            err.to_string()
                .contains("several binaries (server, worker): choose one with --bin"),
            "{err}"
        );
        assert!(executables(&[lib], &targets, false).is_err());
    }

    #[test]
    fn binaries_are_counted_from_the_metadata_before_building() {
        let metadata = |root: &str, default_members: &[&str]| {
            let bin = |name: &str, features: &[&str]| serde_json::json!({"name": name, "kind": ["bin"], "required-features": features});
            let lib = serde_json::json!({"name": "core", "kind": ["lib"]});
            serde_json::json!({
                "workspace_root": root,
                "workspace_default_members": default_members,
                "packages": [
                    {"id": "multi", "name": "multi", "manifest_path": "/w/Cargo.toml",
                     "targets": [bin("api", &[]), bin("worker", &[]), bin("gated", &["x"])]},
                    {"id": "one", "name": "one", "manifest_path": "/w/one/Cargo.toml",
                     "targets": [lib.clone(), bin("one", &[]), bin("gated", &["x"])]},
                    {"id": "lib", "name": "lib", "manifest_path": "/w/lib/Cargo.toml",
                     "targets": [lib]},
                ],
            })
        };
        let m = metadata("/w", &["multi"]);
        let err = check_binary_targets(&m, Path::new("/w"), None).unwrap_err();
        assert_eq!(
            err.to_string(),
            "the project has several binaries (api, worker): choose one with --bin"
        );
        // A member directory, or -p, selects that package; a gated binary is not counted.
        assert!(check_binary_targets(&m, Path::new("/w/one"), None).is_ok());
        assert!(check_binary_targets(&m, Path::new("/w"), Some("one")).is_ok());
        let err = check_binary_targets(&m, Path::new("/w/lib"), None).unwrap_err();
        assert!(err.to_string().contains("has no binary target"), "{err}");
        // A virtual workspace builds its default members.
        let virtual_root = metadata("/w", &["one", "lib"]);
        assert!(check_binary_targets(&virtual_root, Path::new("/w"), None).is_ok());
        let both = metadata("/w", &["one", "multi"]);
        assert!(check_binary_targets(&both, Path::new("/w"), None).is_err());
        // A package cargo metadata does not list (a dependency): cargo decides.
        assert!(check_binary_targets(&m, Path::new("/w"), Some("serde")).is_ok());
    }

    #[test]
    fn a_linker_in_the_project_config_is_respected() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join(".cargo")).unwrap();
        std::fs::write(
            dir.path().join(".cargo/config.toml"),
            "[target.aarch64-unknown-linux-musl]\nlinker = \"aarch64-linux-gnu-gcc\"\n",
        )
        .unwrap();
        assert!(linker_configured("aarch64-unknown-linux-musl", dir.path()));
        assert!(!linker_configured(
            "armv7-unknown-linux-musleabihf",
            dir.path()
        ));
    }
}
