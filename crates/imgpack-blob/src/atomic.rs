//! Files written beside their final path and renamed into place, so a reader
//! never sees half a file.

use std::fs::{self, File};
use std::io::{self, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use tempfile::NamedTempFile;

use crate::without_temp_path;

/// A file written beside its final path and renamed onto it only when
/// complete: readers see the old file or the whole new one, never a part.
pub struct AtomicFile {
    temp: NamedTempFile,
    path: PathBuf,
}

impl AtomicFile {
    pub fn create(path: &Path) -> Result<Self> {
        let parent = crate::parent_or_dot(path);
        let temp = tempfile::Builder::new()
            .prefix(".imgpack-")
            .tempfile_in(parent)
            .map_err(without_temp_path)
            .with_context(|| {
                format!(
                    "cannot write in {}: check that it exists and is writable",
                    parent.display()
                )
            })?;
        Ok(Self {
            temp,
            path: path.to_owned(),
        })
    }

    /// Another handle on the file, for writers that take ownership of one.
    pub fn reopen(&self) -> Result<File> {
        Ok(self.temp.reopen().map_err(without_temp_path)?)
    }

    /// Syncs `file` (this file's content), sets `mode` and renames it into place.
    pub fn commit(self, file: &File, mode: u32) -> Result<()> {
        file.sync_all()?;
        file.set_permissions(fs::Permissions::from_mode(mode))?;
        // The rename's own error, once: PersistError would repeat it as its source.
        self.temp
            .persist(&self.path)
            .map_err(|err| err.error)
            .with_context(|| format!("cannot write {}", self.path.display()))?;
        Ok(())
    }
}

impl Write for AtomicFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.temp.write(buf).map_err(without_temp_path)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.temp.flush().map_err(without_temp_path)
    }
}

/// Writes `bytes` to `path` atomically with permissions `mode`.
pub fn write_atomically(path: &Path, bytes: &[u8], mode: u32) -> Result<()> {
    let mut file = AtomicFile::create(path)?;
    file.write_all(bytes)
        .with_context(|| format!("cannot write {}", path.display()))?;
    let handle = file.reopen()?;
    file.commit(&handle, mode)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_file_appears_whole_with_its_mode() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.json");
        write_atomically(&path, b"{}", 0o600).unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"{}");
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let abandoned = AtomicFile::create(&dir.path().join("other")).unwrap();
        drop(abandoned);
        assert_eq!(
            fs::read_dir(dir.path()).unwrap().count(),
            1,
            "an abandoned write left a file"
        );
    }
}
