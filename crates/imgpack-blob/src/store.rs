//! A content-addressed blob directory (`blobs/sha256/<hex>`), written through
//! hashing, atomic writers.

use std::fs::{self, File};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use anyhow::{bail, Context, Result};
use tempfile::NamedTempFile;

use crate::growing::{AnnouncedFile, Announcer};
use crate::writeback::Writeback;
use crate::{Digest, DigestWriter, StagingWatcher};

/// A blob's digest and size: what a descriptor needs besides its media type.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BlobInfo {
    pub digest: Digest,
    pub size: u64,
}

/// A directory of blobs at `<root>/blobs/sha256/<hex>`.
#[derive(Clone, Debug)]
pub struct BlobStore {
    root: PathBuf,
    blob_dir: PathBuf,
    /// Shared by every clone: who follows the blobs this store writes.
    watchers: Watchers,
}

#[derive(Clone, Default)]
struct Watchers(Arc<Mutex<Vec<Arc<dyn StagingWatcher>>>>);

impl std::fmt::Debug for Watchers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let count = self.0.lock().expect("not poisoned").len();
        write!(f, "{count} watchers")
    }
}

impl BlobStore {
    /// Opens (creating if needed) the store rooted at `root`.
    pub fn open(root: impl Into<PathBuf>) -> Result<Self> {
        let root = root.into();
        let blob_dir = root.join("blobs").join("sha256");
        fs::create_dir_all(&blob_dir)
            .with_context(|| format!("cannot create blob directory {}", blob_dir.display()))?;
        sweep_dead_writers(&blob_dir);
        Ok(Self {
            root,
            blob_dir,
            watchers: Watchers::default(),
        })
    }

    /// From now on, `watcher` is told about every blob [`writer`](Self::writer)
    /// starts, and can follow it while it is written. Blobs whose bytes are
    /// known up front ([`write_bytes`](Self::write_bytes), [`import`](Self::import))
    /// are not announced: a sink takes them when the image is done.
    pub fn watch(&self, watcher: Arc<dyn StagingWatcher>) {
        self.watchers.0.lock().expect("not poisoned").push(watcher);
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn path(&self, digest: &Digest) -> PathBuf {
        self.blob_dir.join(digest.hex())
    }

    pub fn contains(&self, digest: &Digest) -> bool {
        self.path(digest).is_file()
    }

    pub fn open_blob(&self, digest: &Digest) -> Result<File> {
        let path = self.path(digest);
        File::open(&path).with_context(|| format!("cannot open blob {}", path.display()))
    }

    /// Starts a streaming write; nothing is visible under a digest until [`BlobWriter::commit`].
    pub fn writer(&self) -> Result<BlobWriter> {
        self.writer_announced(true)
    }

    fn writer_announced(&self, announced: bool) -> Result<BlobWriter> {
        let temp = tempfile::Builder::new()
            .prefix(".partial-")
            .tempfile_in(&self.blob_dir)
            .map_err(crate::without_temp_path)
            .with_context(|| format!("cannot create a file in {}", self.blob_dir.display()))?;
        // Held until the blob is committed or dropped: a sweep by another
        // process (another container sharing the cache) leaves it alone.
        crate::held::hold(temp.as_file())
            .map_err(crate::without_temp_path)
            .with_context(|| format!("cannot lock a file in {}", self.blob_dir.display()))?;
        let file = temp
            .reopen()
            .map_err(crate::without_temp_path)
            .with_context(|| format!("cannot write in {}", self.blob_dir.display()))?;
        let announcer = match announced {
            true => {
                let watchers = self.watchers.0.lock().expect("not poisoned").clone();
                Announcer::new(&watchers, &file)
                    .with_context(|| format!("cannot write in {}", self.blob_dir.display()))?
            }
            false => Announcer::silent(),
        };
        let file = AnnouncedFile {
            file,
            announcer,
            writeback: Writeback::default(),
        };
        Ok(BlobWriter {
            store: self.clone(),
            temp,
            writer: DigestWriter::new(BufWriter::with_capacity(256 * 1024, file)),
        })
    }

    pub fn write_bytes(&self, bytes: &[u8]) -> Result<BlobInfo> {
        let info = BlobInfo {
            digest: Digest::of_bytes(bytes),
            size: bytes.len() as u64,
        };
        if !self.contains(&info.digest) {
            let mut writer = self.writer_announced(false)?;
            writer.write_all(bytes).context("cannot write blob")?;
            writer.commit()?;
        }
        Ok(info)
    }

    /// Brings a blob of `source` into this store: a hard link where the two share a
    /// file system, otherwise a copy that is checked against its digest.
    pub fn import(&self, source: &BlobStore, blob: &BlobInfo) -> Result<()> {
        let target = self.path(&blob.digest);
        if target.is_file() {
            return Ok(());
        }
        let from = source.path(&blob.digest);
        // A link to a temporary name, then a rename: the target never exists half-written.
        // The name is unique per process and call: threads may import the same blob at once.
        static IMPORTS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let temp_name = self.blob_dir.join(format!(
            ".link-{}-{}-{}",
            blob.digest.hex(),
            std::process::id(),
            IMPORTS.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ));
        let _ = fs::remove_file(&temp_name);
        if fs::hard_link(&from, &temp_name).is_ok() {
            return fs::rename(&temp_name, &target)
                .with_context(|| format!("cannot write {}", target.display()));
        }
        self.copy_checked(source, blob)
    }

    /// Copies a blob of `source` into this store, hashing it on the way: a
    /// copy that is not `blob` is refused and not stored. (Unlike a hard
    /// link, it also leaves the source's file untouched, change time included.)
    pub fn copy_checked(&self, source: &BlobStore, blob: &BlobInfo) -> Result<()> {
        let from = source.path(&blob.digest);
        let (mut reader, _) = crate::open_regular(&from, &crate::local_file::STORED_BLOB)
            .map_err(|err| anyhow::anyhow!("{err}"))?;
        let mut writer = self.writer_announced(false)?;
        io::copy(&mut reader, &mut writer).with_context(|| {
            format!(
                "cannot copy {} into {}",
                from.display(),
                self.root.display()
            )
        })?;
        let written = writer.digest_so_far();
        if written != *blob {
            bail!(
                "blob {} changed while it was copied (now {}); run the build again",
                blob.digest,
                written.digest
            );
        }
        writer.commit()?;
        Ok(())
    }

    /// Reads a small blob (a config or manifest) whole, bounded, and checks
    /// it against its digest: what is on disk may have changed since it was
    /// written (a shared cache, a layout edited by hand).
    pub fn read_small(&self, digest: &Digest) -> Result<Vec<u8>> {
        let bytes =
            crate::read_local_file(&self.path(digest), &crate::local_file::CACHED_DOCUMENT)?;
        let actual = Digest::of_bytes(&bytes);
        if actual != *digest {
            bail!(
                "blob {digest} in {} is corrupt: it hashes to {actual}",
                self.root.display()
            );
        }
        Ok(bytes)
    }
}

/// Removes the temporary files of writers that are gone: what a killed run
/// left behind. A `.partial-*` file is its writer's while the writer holds
/// its lock (any process, in any container sharing the directory); a
/// `.link-*` name lives for one rename, so one left for a while is abandoned.
fn sweep_dead_writers(blob_dir: &Path) {
    let Ok(entries) = fs::read_dir(blob_dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let path = entry.path();
        if name.starts_with(".partial-") {
            if let Some(_lock) = crate::held::take_abandoned(&path) {
                let _ = fs::remove_file(&path);
            }
        } else if name.starts_with(".link-") && crate::held::changed_long_ago(&path) {
            let _ = fs::remove_file(&path);
        }
    }
}

#[cfg(unix)]
fn set_readable(file: &File) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    file.set_permissions(fs::Permissions::from_mode(0o644))
        .context("cannot set blob permissions")
}

#[cfg(not(unix))]
fn set_readable(_file: &File) -> Result<()> {
    Ok(())
}

/// A blob being written; dropped without [`commit`](Self::commit), it leaves nothing behind.
pub struct BlobWriter {
    store: BlobStore,
    temp: NamedTempFile,
    writer: DigestWriter<BufWriter<AnnouncedFile>>,
}

impl BlobWriter {
    /// The digest and size of what was written so far: a download checks it
    /// before committing, so a blob that is not what was asked for is never stored.
    pub fn digest_so_far(&self) -> BlobInfo {
        let (digest, size) = self.writer.digest_so_far();
        BlobInfo { digest, size }
    }

    /// Flushes to disk and renames the file to its digest.
    pub fn commit(self) -> Result<BlobInfo> {
        let (buffered, digest, size) = self.writer.finish();
        let AnnouncedFile {
            file, announcer, ..
        } = buffered
            .into_inner()
            .map_err(|err| err.into_error())
            .context("cannot write blob")?;
        file.sync_all().context("cannot sync blob to disk")?;
        // Temporary files are created 0600; a blob is as readable as any file the user writes.
        set_readable(&file)?;
        let target = self.store.path(&digest);
        self.temp
            .persist(&target)
            .map_err(|err| err.error)
            .with_context(|| format!("cannot move blob into place at {}", target.display()))?;
        let info = BlobInfo { digest, size };
        announcer.committed(&info);
        Ok(info)
    }
}

impl Write for BlobWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.writer.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.writer.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store_files(store: &BlobStore) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(store.root().join("blobs/sha256"))
            .unwrap()
            .map(|entry| entry.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn committed_blob_is_named_by_its_digest() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(dir.path()).unwrap();
        let mut writer = store.writer().unwrap();
        writer.write_all(b"layer bytes").unwrap();
        let info = writer.commit().unwrap();
        assert_eq!(info.digest, Digest::of_bytes(b"layer bytes"));
        assert_eq!(info.size, 11);
        assert_eq!(store.read_small(&info.digest).unwrap(), b"layer bytes");
        assert_eq!(store_files(&store), vec![info.digest.hex().to_owned()]);
    }

    #[test]
    fn abandoned_write_leaves_no_file() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(dir.path()).unwrap();
        let mut writer = store.writer().unwrap();
        writer.write_all(b"half a layer").unwrap();
        drop(writer);
        assert!(store_files(&store).is_empty());
    }

    #[test]
    fn temporary_files_of_gone_writers_are_removed_on_open_and_held_ones_kept() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(dir.path()).unwrap();
        let blobs = dir.path().join("blobs/sha256");
        let abandoned = blobs.join(".partial-999999999-abc");
        fs::write(&abandoned, b"half").unwrap();
        File::options()
            .append(true)
            .open(&abandoned)
            .unwrap()
            .set_modified(std::time::SystemTime::now() - std::time::Duration::from_secs(60))
            .unwrap();
        let live = store.writer().unwrap();
        let live_name = store_files(&store)
            .into_iter()
            .find(|name| name.as_str() != ".partial-999999999-abc")
            .unwrap();
        // Even a live writer's file whose time is old is kept: it is held.
        File::options()
            .append(true)
            .open(blobs.join(&live_name))
            .unwrap()
            .set_modified(std::time::SystemTime::now() - std::time::Duration::from_secs(60))
            .unwrap();
        BlobStore::open(dir.path()).unwrap();
        assert_eq!(store_files(&store), vec![live_name]);
        drop(live);
    }

    #[test]
    fn import_links_or_copies_between_stores() {
        let dir = tempfile::tempdir().unwrap();
        let source = BlobStore::open(dir.path().join("a")).unwrap();
        let target = BlobStore::open(dir.path().join("b")).unwrap();
        let info = source.write_bytes(b"config").unwrap();
        target.import(&source, &info).unwrap();
        assert_eq!(target.read_small(&info.digest).unwrap(), b"config");
        assert_eq!(store_files(&target), vec![info.digest.hex().to_owned()]);
    }
}
