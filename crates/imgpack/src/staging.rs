//! Staging directories of builds (`TMPDIR/imgpack-PID-XXXX`): removed when the
//! build ends, on SIGINT, SIGTERM and SIGHUP, and, for a run that was killed
//! (SIGKILL), by the next run, which finds the directory's lock free. The lock
//! (an flock the build holds on its directory), not the process id, says
//! whether a directory is in use: a TMPDIR shared by containers holds
//! directories of processes in other PID namespaces.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use anyhow::{Context, Result};

/// Staging directories of this process that are still in use.
static LIVE: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

/// A staging directory, removed when dropped.
pub struct Staging {
    dir: tempfile::TempDir,
    /// The directory, opened and locked while the build uses it.
    _lock: std::fs::File,
}

impl Staging {
    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        let mut live = LIVE.lock().unwrap_or_else(|e| e.into_inner());
        live.retain(|dir| dir != self.dir.path());
    }
}

fn prefix(pid: u32) -> String {
    format!("imgpack-{pid}-")
}

/// Creates a staging directory in `tmpdir` (default: the system's), after
/// removing those that killed runs left there.
pub fn create(tmpdir: Option<&Path>) -> Result<Staging> {
    let parent = tmpdir.map_or_else(std::env::temp_dir, Path::to_path_buf);
    sweep(&parent);
    let dir = tempfile::Builder::new()
        .prefix(&prefix(std::process::id()))
        .tempdir_in(&parent)
        .map_err(imgpack_blob::without_temp_path)
        // Every command that stages honours both variables (build's --tmpdir is IMGPACK_TMPDIR).
        .with_context(|| {
            format!(
                "cannot create a temporary directory in {}: set IMGPACK_TMPDIR or TMPDIR to a \
                 writable directory",
                parent.display()
            )
        })?;
    let lock = imgpack_blob::held::open_and_hold(dir.path())
        .with_context(|| format!("cannot lock {}", dir.path().display()))?;
    LIVE.lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(dir.path().to_owned());
    Ok(Staging { dir, _lock: lock })
}

/// Removes the `imgpack-PID-*` directories in `parent` that no build holds.
fn sweep(parent: &Path) {
    let Ok(entries) = std::fs::read_dir(parent) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let staging = name
            .to_str()
            .and_then(|n| n.strip_prefix("imgpack-"))
            .and_then(|rest| rest.split_once('-'))
            .is_some_and(|(pid, _)| pid.parse::<u32>().is_ok());
        let is_dir = entry.file_type().is_ok_and(|t| t.is_dir());
        if staging && is_dir {
            if let Some(_lock) = imgpack_blob::held::take_abandoned(&entry.path()) {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
    }
}

/// On SIGINT, SIGTERM or SIGHUP: remove the live staging directories and exit
/// as a shell reports a signal (130).
pub fn clean_up_on_signals() {
    let _ = ctrlc::set_handler(|| {
        let live = LIVE.lock().map(|l| l.clone()).unwrap_or_default();
        for dir in live {
            // Other threads may still be writing into it: try until it is gone.
            for _ in 0..50 {
                if std::fs::remove_dir_all(&dir).is_ok() || !dir.exists() {
                    break;
                }
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
        }
        eprintln!("imgpack: interrupted; temporary files removed");
        std::process::exit(130);
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Sets a directory's modification time a minute back.
    fn age(dir: &Path) {
        std::fs::File::open(dir)
            .unwrap()
            .set_modified(std::time::SystemTime::now() - std::time::Duration::from_secs(60))
            .unwrap();
    }

    #[test]
    fn dirs_of_dead_runs_are_swept_and_live_ones_kept() {
        let parent = tempfile::tempdir().unwrap();
        let dead = parent.path().join("imgpack-999999999-abc");
        let other = parent.path().join("imgpack-registry-xyz");
        // Another container's build: a process id this one cannot see, its lock held.
        let held = parent.path().join("imgpack-999999998-def");
        std::fs::create_dir_all(dead.join("blobs")).unwrap();
        std::fs::create_dir_all(&other).unwrap();
        std::fs::create_dir_all(&held).unwrap();
        let holder = imgpack_blob::held::open_and_hold(&held).unwrap();
        for dir in [&dead, &other, &held] {
            age(dir);
        }
        let staging = create(Some(parent.path())).unwrap();
        assert!(!dead.exists(), "a dead run's directory was kept");
        assert!(
            other.exists(),
            "a directory that is not a staging one was removed"
        );
        assert!(held.exists(), "a directory another build holds was removed");
        drop(holder);
        let path = staging.path().to_owned();
        assert!(path
            .file_name()
            .unwrap()
            .to_str()
            .unwrap()
            .starts_with(&prefix(std::process::id())));
        // A second build of this (live) process keeps the first one's directory.
        let second = create(Some(parent.path())).unwrap();
        assert!(path.exists());
        drop((staging, second));
        assert!(!path.exists());
    }
}
