//! Checks, before any work, that an output path can be written, so a bad
//! `--output` fails at once rather than after every layer is built.

use std::path::Path;

use anyhow::{bail, Result};

/// Checks that a file can be written at `path`: it is not a directory, and
/// its directory is writable or can be created.
pub fn check_file_path(path: &Path) -> Result<()> {
    if path.is_dir() {
        bail!("{} is a directory: name a file", path.display());
    }
    check_dir_path(parent_or_dot(path))
}

/// Checks that `dir` is a writable directory, or can be created because its
/// nearest existing ancestor is one. Creates nothing.
pub fn check_dir_path(dir: &Path) -> Result<()> {
    let existing = dir
        .ancestors()
        .map(|a| {
            if a.as_os_str().is_empty() {
                Path::new(".")
            } else {
                a
            }
        })
        .find(|a| a.exists())
        .unwrap_or(Path::new("/"));
    if !existing.is_dir() {
        bail!(
            "cannot create {}: {} is not a directory",
            dir.display(),
            existing.display()
        );
    }
    // Creating an unnamed file is the one test that sees read-only mounts,
    // ACLs and root alike; it leaves nothing behind.
    if let Err(err) = tempfile::tempfile_in(existing) {
        bail!(
            "cannot write in {} ({err}): choose a writable directory",
            existing.display()
        );
    }
    Ok(())
}

/// The directory a file is in; `.` for a bare file name.
pub fn parent_or_dot(path: &Path) -> &Path {
    path.parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_checked_without_creating_anything() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        check_file_path(&d.join("new/deeper/image.tar")).unwrap();
        check_dir_path(&d.join("new/layout")).unwrap();
        assert!(!d.join("new").exists(), "a check created a directory");
        std::fs::write(d.join("file"), "x").unwrap();
        let err = check_file_path(&d.join("file/sub/x.tar")).unwrap_err();
        assert!(
            err.to_string().ends_with("file is not a directory"),
            "{err}"
        );
        let err = check_file_path(d).unwrap_err();
        assert!(err.to_string().contains("is a directory"), "{err}");
        assert_eq!(parent_or_dot(Path::new("x.tar")), Path::new("."));
    }
}
