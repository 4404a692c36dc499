//! What an untrusted git source's checkout tells go and cargo, beyond
//! imgpack.toml: a committed symlink out of the checkout (go compiles a
//! linked `.go` file), a go.mod or go.work `replace`/`use` of a directory
//! outside it, and cargo or rustup configuration that names a program to run
//! or a file of the builder's. Each is refused with one line, unless
//! `--trust-source-config`.
//!
//! A Rust repository's build scripts and proc macros still run, as cargo
//! runs them anywhere: they are the repository's own code (docs/configuration.md).

use std::path::{Path, PathBuf};

use anyhow::{bail, Result};
use toml::{Table, Value};

use super::trust::TRUST_FLAG;
use crate::confine::{check_inside, Escape};

/// Checks every directory of the checkout at `root` (`.git` aside): one
/// line for the first thing refused. `source` names the git source.
pub(crate) fn check_checkout(source: &str, root: &Path) -> Result<()> {
    let mut pending = vec![root.to_path_buf()];
    while let Some(dir) = pending.pop() {
        if let Some(what) = refused_in(root, &dir, &mut pending)? {
            bail!(
                "{source}: {what}: a git source may not reach the builder's files or programs: \
                 remove it from the repository, or add {TRUST_FLAG} to trust it"
            );
        }
    }
    Ok(())
}

/// What `dir` holds that is refused; its subdirectories go to `pending`.
fn refused_in(root: &Path, dir: &Path, pending: &mut Vec<PathBuf>) -> Result<Option<String>> {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)?
        .map(|entry| entry.map(|e| e.path()))
        .collect::<std::io::Result<_>>()?;
    entries.sort();
    for path in entries.into_iter().rev() {
        if dir == root && path.file_name().is_some_and(|name| name == ".git") {
            continue;
        }
        let meta = std::fs::symlink_metadata(&path)?;
        if meta.is_symlink() {
            if let Err(Escape::Link { target, .. }) = check_inside(root, &path) {
                return Ok(Some(format!(
                    "the symlink {} -> {} leads out of the repository",
                    shown(root, &path),
                    target.display()
                )));
            }
        } else if meta.is_dir() {
            pending.push(path);
        }
    }
    for (file, directive) in go_directives(dir) {
        if let Some((line, path)) = local_module_outside(root, dir, &directive) {
            return Ok(Some(format!(
                "{}:{line} names the directory {path}, outside the repository",
                shown(root, &dir.join(&file))
            )));
        }
    }
    for file in [".cargo/config.toml", ".cargo/config"] {
        let path = dir.join(file);
        if let Some(key) = read_toml(&path).and_then(|t| cargo_key_that_runs(&t)) {
            return Ok(Some(format!(
                "{} sets `{key}`, which runs a program or reads a file of the builder",
                shown(root, &path)
            )));
        }
    }
    for file in ["rust-toolchain.toml", "rust-toolchain"] {
        let path = dir.join(file);
        if toolchain_is_a_path(&path) {
            return Ok(Some(format!(
                "{} names a toolchain by its path",
                shown(root, &path)
            )));
        }
    }
    Ok(None)
}

fn shown(root: &Path, path: &Path) -> String {
    path.strip_prefix(root)
        .unwrap_or(path)
        .display()
        .to_string()
}

/// The `replace` lines of `go.mod` and the `replace` and `use` lines of
/// `go.work` in `dir`, numbered, comments removed: (file name, (line, text)).
fn go_directives(dir: &Path) -> Vec<(String, (usize, String))> {
    let mut found = Vec::new();
    for (file, wanted) in [
        ("go.mod", &["replace"][..]),
        ("go.work", &["replace", "use"]),
    ] {
        let Ok(text) = std::fs::read_to_string(dir.join(file)) else {
            continue;
        };
        let mut block: Option<&str> = None;
        for (index, line) in text.lines().enumerate() {
            let line = line.split("//").next().unwrap_or_default().trim();
            let directive = match block {
                Some(_) if line == ")" => {
                    block = None;
                    continue;
                }
                Some(name) => Some((name, line)),
                None => wanted.iter().find_map(|name| {
                    let rest = line.strip_prefix(name)?;
                    rest.starts_with([' ', '\t', '('])
                        .then(|| (*name, rest.trim()))
                }),
            };
            let Some((name, rest)) = directive else {
                continue;
            };
            if rest == "(" {
                block = Some(name);
            } else if !rest.is_empty() {
                let body = if name == "use" {
                    rest.to_owned()
                } else {
                    rest.split_once("=>")
                        .map(|(_, to)| to.trim().to_owned())
                        .unwrap_or_default()
                };
                found.push((file.to_owned(), (index + 1, body)));
            }
        }
    }
    found
}

/// A directive's directory (`../x`, `/abs`, `./x`) when it leads out of `root`.
fn local_module_outside(
    root: &Path,
    dir: &Path,
    (line, body): &(usize, String),
) -> Option<(usize, String)> {
    let path = body.split_whitespace().next()?.trim_matches('"');
    let local = path.starts_with("./")
        || path.starts_with("../")
        || path.starts_with('/')
        || matches!(path, "." | "..");
    (local && check_inside(root, &dir.join(path)).is_err()).then(|| (*line, path.to_owned()))
}

fn read_toml(path: &Path) -> Option<Table> {
    std::fs::read_to_string(path).ok()?.parse::<Table>().ok()
}

fn table(value: Option<&Value>) -> Option<&Table> {
    value.and_then(Value::as_table)
}

/// The first key of a cargo config file that runs a program named by the
/// file or points cargo at the builder's files.
fn cargo_key_that_runs(config: &Table) -> Option<String> {
    if let Some(build) = table(config.get("build")) {
        for key in [
            "rustc",
            "rustc-wrapper",
            "rustc-workspace-wrapper",
            "rustdoc",
            "target-dir",
        ] {
            if build.contains_key(key) {
                return Some(format!("build.{key}"));
            }
        }
        if risky_rustflags(build.get("rustflags")) {
            return Some("build.rustflags".into());
        }
    }
    for (name, target) in table(config.get("target")).into_iter().flatten() {
        let Some(target) = target.as_table() else {
            continue;
        };
        for (key, value) in target {
            // A table under a target overrides a build script's links: paths of the builder.
            let runs = matches!(key.as_str(), "linker" | "runner" | "ar") || value.is_table();
            if runs || (key == "rustflags" && risky_rustflags(Some(value))) {
                return Some(format!("target.{name}.{key}"));
            }
        }
    }
    if config.contains_key("paths") {
        return Some("paths".into());
    }
    if let Some(registry) = table(config.get("registry")) {
        for key in ["credential-provider", "global-credential-providers"] {
            if registry.contains_key(key) {
                return Some(format!("registry.{key}"));
            }
        }
    }
    if config.contains_key("credential-alias") {
        return Some("credential-alias".into());
    }
    for (name, registry) in table(config.get("registries")).into_iter().flatten() {
        if registry.get("credential-provider").is_some() {
            return Some(format!("registries.{name}.credential-provider"));
        }
    }
    for (name, source) in table(config.get("source")).into_iter().flatten() {
        for key in ["directory", "local-registry"] {
            let absolute = source
                .get(key)
                .and_then(Value::as_str)
                .is_some_and(|path| path.starts_with('/') || path.contains(".."));
            if absolute {
                return Some(format!("source.{name}.{key}"));
            }
        }
    }
    None
}

/// rustflags that choose a linker, pass it arguments or read an argument file.
fn risky_rustflags(value: Option<&Value>) -> bool {
    let flags: Vec<&str> = match value {
        Some(Value::String(text)) => text.split_whitespace().collect(),
        Some(Value::Array(items)) => items.iter().filter_map(Value::as_str).collect(),
        _ => return false,
    };
    flags
        .iter()
        .any(|flag| flag.starts_with('@') || flag.contains("linker") || flag.contains("link-arg"))
}

/// rustup runs a toolchain named by a path (`[toolchain] path`, or a path in
/// the one-line legacy file) from wherever it points.
fn toolchain_is_a_path(path: &Path) -> bool {
    let Ok(text) = std::fs::read_to_string(path) else {
        return false;
    };
    match text.parse::<Table>() {
        Ok(config) => config
            .get("toolchain")
            .and_then(Value::as_table)
            .is_some_and(|toolchain| toolchain.contains_key("path")),
        Err(_) => text.trim().contains('/'),
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::symlink;

    use super::*;

    fn refused(root: &Path) -> String {
        check_checkout("git+file:///r", root)
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn links_modules_and_tool_configs_out_of_the_checkout_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("src");
        let project = root.join("cmd/api");
        std::fs::create_dir_all(&project).unwrap();
        std::fs::create_dir_all(root.join(".git/objects")).unwrap();
        symlink("/etc", root.join(".git/objects/elsewhere")).unwrap();
        symlink("../api", root.join("cmd/also")).unwrap();
        assert!(check_checkout("s", &root).is_ok());

        std::fs::write(
            root.join("go.mod"),
            "module x\n\nreplace (\n\tex.com/a => ./a // in\n\tex.com/b v1 => ../../b\n)\n",
        )
        .unwrap();
        assert!(
            refused(&root).contains("go.mod:5 names the directory ../../b"),
            "{}",
            refused(&root)
        );
        std::fs::write(root.join("go.mod"), "module x\nreplace ex.com/a => ./a\n").unwrap();
        std::fs::write(project.join("go.work"), "go 1.22\nuse /srv/other\n").unwrap();
        assert!(refused(&root).contains("cmd/api/go.work:2 names the directory /srv/other"));
        std::fs::remove_file(project.join("go.work")).unwrap();

        std::fs::create_dir_all(root.join(".cargo")).unwrap();
        for (text, key) in [
            ("[build]\nrustc-wrapper = \"sh\"\n", "build.rustc-wrapper"),
            (
                "[target.x86_64-unknown-linux-musl]\nlinker = \"/bin/sh\"\n",
                "target.x86_64-unknown-linux-musl.linker",
            ),
            (
                "[target.'cfg(unix)']\nrunner = \"sh\"\n",
                "target.cfg(unix).runner",
            ),
            (
                "[build]\nrustflags = [\"-C\", \"linker=/bin/sh\"]\n",
                "build.rustflags",
            ),
            ("paths = [\"/srv/crate\"]\n", "paths"),
            (
                "[registries.x]\ncredential-provider = \"sh\"\n",
                "registries.x.credential-provider",
            ),
            (
                "[source.v]\ndirectory = \"/srv/vendor\"\n",
                "source.v.directory",
            ),
        ] {
            std::fs::write(root.join(".cargo/config.toml"), text).unwrap();
            let err = refused(&root);
            assert!(
                err.contains(&format!(".cargo/config.toml sets `{key}`")),
                "{err}"
            );
        }
        std::fs::write(
            root.join(".cargo/config.toml"),
            "[build]\nrustflags = [\"-C\", \"target-feature=+crt-static\"]\n[env]\nA = \"1\"\n",
        )
        .unwrap();
        assert!(check_checkout("s", &root).is_ok());

        std::fs::write(
            root.join("rust-toolchain.toml"),
            "[toolchain]\npath = \"/opt/x\"\n",
        )
        .unwrap();
        assert!(refused(&root).contains("rust-toolchain.toml names a toolchain by its path"));
        std::fs::write(
            root.join("rust-toolchain.toml"),
            "[toolchain]\nchannel = \"1.80\"\n",
        )
        .unwrap();
        assert!(check_checkout("s", &root).is_ok());

        symlink("../../../outside.go", project.join("evil.go")).unwrap();
        let err = refused(&root);
        assert_eq!(
            err,
            "git+file:///r: the symlink cmd/api/evil.go -> ../../../outside.go leads out of the \
             repository: a git source may not reach the builder's files or programs: remove it \
             from the repository, or add --trust-source-config to trust it"
        );
    }
}
