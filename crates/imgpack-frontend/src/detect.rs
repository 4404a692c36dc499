//! Which language a project is (`--lang`, or detected from its directory).

use std::path::Path;

use anyhow::{bail, Result};

/// The language of a project (`--lang`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lang {
    Go,
    Rust,
}

impl Lang {
    pub fn parse(value: &str) -> Result<Self> {
        match value {
            "go" => Ok(Lang::Go),
            "rust" => Ok(Lang::Rust),
            other => bail!("unknown --lang '{other}': use go or rust"),
        }
    }
}

/// Go when the directory holds .go files (a package, in a module or in
/// GOPATH mode), Rust when it holds a Cargo.toml.
pub fn detect_lang(path: &Path) -> Result<Lang> {
    check_project_dir(path)?;
    if path.join("Cargo.toml").is_file() {
        return Ok(Lang::Rust);
    }
    let has_go_files = std::fs::read_dir(path)?
        .filter_map(|entry| entry.ok())
        .any(|entry| {
            entry
                .file_name()
                .to_str()
                .is_some_and(|n| n.ends_with(".go") && !n.ends_with("_test.go"))
        });
    if has_go_files {
        return Ok(Lang::Go);
    }
    Err(crate::SourceError {
        problem: format!(
            "{} holds neither Go files nor a Cargo.toml",
            path.display()
        ),
        advice: "pass the package or project directory, --lang go|rust, or prebuilt binaries with --binary",
        plain_advice: "name a Go package directory or a Cargo project directory",
    }
    .into())
}

/// A project to compile must be a directory: checked before anything else
/// (git, tags, the compiler) looks at it, so a typo is named as such.
pub fn check_project_dir(path: &Path) -> Result<()> {
    if !path.is_dir() {
        bail!(
            "{} is not a directory: pass a Go package directory or a Cargo project directory",
            path.display()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn projects_are_recognised_by_their_files() {
        let dir = tempfile::tempdir().unwrap();
        let go = dir.path().join("go");
        std::fs::create_dir(&go).unwrap();
        std::fs::write(go.join("main.go"), "package main").unwrap();
        assert_eq!(detect_lang(&go).unwrap(), Lang::Go);
        let rust = dir.path().join("rust");
        std::fs::create_dir(&rust).unwrap();
        std::fs::write(rust.join("Cargo.toml"), "[package]").unwrap();
        assert_eq!(detect_lang(&rust).unwrap(), Lang::Rust);
        let empty = dir.path().join("empty");
        std::fs::create_dir(&empty).unwrap();
        assert!(detect_lang(&empty)
            .unwrap_err()
            .to_string()
            .contains("neither Go files nor a Cargo.toml"));
        assert!(detect_lang(&dir.path().join("missing")).is_err());
    }
}
