//! Temporary files and directories in places several imgpack processes may
//! share (a cache or TMPDIR mounted into several containers): the writer holds
//! an flock on each for as long as it works on it, and a sweep removes only
//! those nobody holds. A process id says nothing here: another container's
//! processes live in another PID namespace, where our /proc cannot see them.

use std::fs::{self, File, TryLockError};
use std::io;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;
use std::time::{Duration, SystemTime};

/// How long a temporary file must have been left unchanged before a sweep
/// may take it: it covers the moment between its creation and its lock.
pub const GRACE: Duration = Duration::from_secs(10);

/// Takes the exclusive lock on `file` (a temporary file, or a directory
/// opened for reading); it is held until the last handle on it is closed,
/// also when the process is killed.
pub fn hold(file: &File) -> io::Result<()> {
    match file.try_lock() {
        Ok(()) => Ok(()),
        Err(TryLockError::WouldBlock) => Err(io::Error::new(
            io::ErrorKind::WouldBlock,
            "another process holds it",
        )),
        Err(TryLockError::Error(err)) => Err(err),
    }
}

/// Opens `path` (a file or a directory, never through a symbolic link) and
/// holds its lock: see [`hold`].
pub fn open_and_hold(path: &Path) -> io::Result<File> {
    let file = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)?;
    hold(&file)?;
    Ok(file)
}

/// The lock on the abandoned temporary file or directory at `path`, if it is
/// one: nobody holds its lock and it was not modified within [`GRACE`]. Keep
/// the returned handle while removing it.
pub fn take_abandoned(path: &Path) -> Option<File> {
    let file = open_and_hold(path).ok()?;
    let modified = file.metadata().ok()?.modified().ok()?;
    older_than_grace(modified).then_some(file)
}

/// Whether a temporary name that no process can lock (a hard link, which
/// shares its blob's inode) was left alone for [`GRACE`]: the change time,
/// which a link or a rename moves on and nobody can set back.
pub fn changed_long_ago(path: &Path) -> bool {
    fs::symlink_metadata(path).is_ok_and(|metadata| {
        let changed = SystemTime::UNIX_EPOCH
            + Duration::new(
                metadata.ctime().max(0) as u64,
                metadata.ctime_nsec().clamp(0, 999_999_999) as u32,
            );
        older_than_grace(changed)
    })
}

fn older_than_grace(time: SystemTime) -> bool {
    SystemTime::now()
        .duration_since(time)
        .is_ok_and(|age| age >= GRACE)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set_old(path: &Path) {
        File::options()
            .append(true)
            .open(path)
            .unwrap()
            .set_modified(SystemTime::now() - Duration::from_secs(60))
            .unwrap();
    }

    #[test]
    fn a_held_file_is_never_taken_and_a_released_one_is() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(".partial-x");
        fs::write(&path, b"half").unwrap();
        let writer = open_and_hold(&path).unwrap();
        set_old(&path);
        assert!(take_abandoned(&path).is_none(), "a held file was taken");
        drop(writer);
        assert!(take_abandoned(&path).is_some());
    }

    #[test]
    fn a_fresh_file_is_not_taken_before_its_writer_locks_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(".partial-y");
        fs::write(&path, b"").unwrap();
        assert!(take_abandoned(&path).is_none());
        assert!(!changed_long_ago(&path));
    }
}
