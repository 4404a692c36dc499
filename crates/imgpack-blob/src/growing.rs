//! Blobs followed while they are being written: a sink can send a layer on
//! while the compressor is still producing it, whatever compressor writes it,
//! by reading the staged file up to what has reached it so far.

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::unix::fs::FileExt;
use std::sync::{Arc, Condvar, Mutex};

use crate::writeback::Writeback;
use crate::BlobInfo;

/// Told about every blob a [`BlobStore`](crate::BlobStore) starts writing
/// through [`writer`](crate::BlobStore::writer) once it is watched.
pub trait StagingWatcher: Send + Sync {
    /// A blob started being written; `blob` follows it. Called on the
    /// writer's thread: hand the work to another thread and return.
    fn staging(&self, blob: GrowingBlob);
}

/// Where a blob being written stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Growth {
    /// Still being written; this many bytes are in the file so far.
    Writing(u64),
    /// Complete under this digest.
    Committed(BlobInfo),
    /// The writer gave up (the build failed): no blob will come of it.
    Abandoned,
}

struct Shared {
    growth: Mutex<Growth>,
    changed: Condvar,
}

impl Shared {
    fn update(&self, change: impl FnOnce(&mut Growth)) {
        change(&mut self.growth.lock().expect("not poisoned"));
        self.changed.notify_all();
    }
}

/// A blob being written, followed from another thread.
pub struct GrowingBlob {
    file: File,
    shared: Arc<Shared>,
}

impl GrowingBlob {
    /// Waits until at least `bytes` are in the file or the writer is done.
    pub fn wait_for(&self, bytes: u64) -> Growth {
        let growth = self.shared.growth.lock().expect("not poisoned");
        let growth = self
            .shared
            .changed
            .wait_while(growth, |g| matches!(g, Growth::Writing(n) if *n < bytes))
            .expect("not poisoned");
        growth.clone()
    }

    /// Reads the blob from its start as it is written: a read waits for
    /// bytes that are not there yet, the end comes when the writer commits,
    /// and a writer that gives up is an error.
    pub fn into_reader(self) -> GrowingReader {
        GrowingReader {
            blob: self,
            position: 0,
        }
    }
}

/// The reader of [`GrowingBlob::into_reader`].
pub struct GrowingReader {
    blob: GrowingBlob,
    position: u64,
}

impl GrowingReader {
    /// The finished blob, once the writer committed it.
    pub fn committed(&self) -> Option<BlobInfo> {
        match &*self.blob.shared.growth.lock().expect("not poisoned") {
            Growth::Committed(info) => Some(info.clone()),
            _ => None,
        }
    }
}

impl Read for GrowingReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let available = match self.blob.wait_for(self.position + 1) {
            Growth::Writing(written) => written,
            Growth::Committed(info) => info.size,
            Growth::Abandoned => {
                return Err(io::Error::other(
                    "the blob was abandoned while it was being written",
                ))
            }
        };
        let wanted = (available.saturating_sub(self.position)).min(buf.len() as u64) as usize;
        if wanted == 0 {
            return Ok(0);
        }
        let read = self.blob.file.read_at(&mut buf[..wanted], self.position)?;
        self.position += read as u64;
        Ok(read)
    }
}

/// The writer's side: counts what reaches the file and tells the followers.
pub(crate) struct Announcer {
    shared: Option<Arc<Shared>>,
}

impl Announcer {
    /// An announcer for a blob written to `file`; each watcher gets its own
    /// follower, reading through its own handle on the file.
    pub(crate) fn new(watchers: &[Arc<dyn StagingWatcher>], file: &File) -> io::Result<Self> {
        if watchers.is_empty() {
            return Ok(Self::silent());
        }
        let shared = Arc::new(Shared {
            growth: Mutex::new(Growth::Writing(0)),
            changed: Condvar::new(),
        });
        for watcher in watchers {
            watcher.staging(GrowingBlob {
                file: file.try_clone()?,
                shared: shared.clone(),
            });
        }
        Ok(Self {
            shared: Some(shared),
        })
    }

    pub(crate) fn silent() -> Self {
        Self { shared: None }
    }

    fn wrote(&self, bytes: usize) {
        if let Some(shared) = &self.shared {
            shared.update(|growth| {
                if let Growth::Writing(written) = growth {
                    *written += bytes as u64;
                }
            });
        }
    }

    pub(crate) fn committed(mut self, info: &BlobInfo) {
        if let Some(shared) = self.shared.take() {
            shared.update(|growth| *growth = Growth::Committed(info.clone()));
        }
    }
}

impl Drop for Announcer {
    fn drop(&mut self) {
        if let Some(shared) = self.shared.take() {
            shared.update(|growth| *growth = Growth::Abandoned);
        }
    }
}

/// The staged file under the writer's buffer: every write that reaches it is announced.
pub(crate) struct AnnouncedFile {
    pub(crate) file: File,
    pub(crate) announcer: Announcer,
    pub(crate) writeback: Writeback,
}

impl Write for AnnouncedFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let written = self.file.write(buf)?;
        self.writeback.wrote(&self.file, written);
        self.announcer.wrote(written);
        Ok(written)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc;

    use super::*;
    use crate::{BlobStore, Digest};

    /// Hands each announced blob to the test.
    struct Collect(Mutex<mpsc::Sender<GrowingBlob>>);

    impl StagingWatcher for Collect {
        fn staging(&self, blob: GrowingBlob) {
            self.0.lock().unwrap().send(blob).unwrap();
        }
    }

    fn watched_store(dir: &std::path::Path) -> (BlobStore, mpsc::Receiver<GrowingBlob>) {
        let store = BlobStore::open(dir).unwrap();
        let (sender, receiver) = mpsc::channel();
        store.watch(Arc::new(Collect(Mutex::new(sender))));
        (store, receiver)
    }

    #[test]
    fn a_follower_reads_the_whole_blob_while_it_is_written() {
        let dir = tempfile::tempdir().unwrap();
        let (store, announced) = watched_store(dir.path());
        let pieces: Vec<Vec<u8>> = (0..40u8).map(|i| vec![i; 100_000]).collect();
        let expected = Digest::of_bytes(&pieces.concat());
        let mut writer = store.writer().unwrap();
        let follower = std::thread::spawn(move || {
            let mut reader = announced.recv().unwrap().into_reader();
            let mut bytes = Vec::new();
            reader.read_to_end(&mut bytes).unwrap();
            (Digest::of_bytes(&bytes), reader.committed())
        });
        for piece in &pieces {
            writer.write_all(piece).unwrap();
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        let info = writer.commit().unwrap();
        let (followed, committed) = follower.join().unwrap();
        assert_eq!(followed, expected);
        assert_eq!(committed, Some(info));
    }

    #[test]
    fn an_abandoned_blob_is_an_error_and_known_blobs_are_not_announced() {
        let dir = tempfile::tempdir().unwrap();
        let (store, announced) = watched_store(dir.path());
        let mut writer = store.writer().unwrap();
        writer.write_all(&[1; 300_000]).unwrap();
        let blob = announced.recv().unwrap();
        assert!(matches!(blob.wait_for(1), Growth::Writing(n) if n > 0));
        drop(writer);
        assert_eq!(blob.wait_for(u64::MAX), Growth::Abandoned);
        let mut bytes = Vec::new();
        assert!(blob.into_reader().read_to_end(&mut bytes).is_err());
        store.write_bytes(b"config").unwrap();
        assert!(announced.try_recv().is_err());
    }
}
