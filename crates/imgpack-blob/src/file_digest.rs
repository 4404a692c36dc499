//! The digest of a file on disk, computed once per process: a build reads a
//! 100 MB binary's digest for the layer cache's recipe and again for the
//! SBOM, and hashing is most of a no-op rebuild's time.

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::{Mutex, OnceLock};

use crate::{BlobInfo, DigestWriter};

/// What identifies one version of a file: device, inode, size, and the
/// modification and change times (nanoseconds). Any write changes the ctime,
/// which no one can set back.
type Version = (u64, u64, u64, i64, i64, i64, i64);

fn version(metadata: &fs::Metadata) -> Version {
    (
        metadata.dev(),
        metadata.ino(),
        metadata.size(),
        metadata.mtime(),
        metadata.mtime_nsec(),
        metadata.ctime(),
        metadata.ctime_nsec(),
    )
}

/// Bytes read at a time.
const READ_SIZE: usize = 1024 * 1024;

static KNOWN: OnceLock<Mutex<HashMap<Version, BlobInfo>>> = OnceLock::new();

/// The digest and size of the file at `path`, hashed only if this process has
/// not hashed this version of it yet. A file that changes while it is hashed
/// is not remembered.
pub fn digest_of_file(path: &Path) -> io::Result<BlobInfo> {
    let mut file = File::open(path)?;
    let before = version(&file.metadata()?);
    let known = KNOWN.get_or_init(Default::default);
    if let Some(info) = known.lock().expect("not poisoned").get(&before) {
        return Ok(info.clone());
    }
    let mut hasher = DigestWriter::new(io::sink());
    // io::copy's 8 KiB reads would be 12,000 system calls for a 100 MB binary.
    let mut buffer = vec![0u8; READ_SIZE];
    loop {
        match file.read(&mut buffer) {
            Ok(0) => break,
            Ok(read) => hasher.write_all(&buffer[..read])?,
            Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
            Err(err) => return Err(err),
        }
    }
    let (_, digest, size) = hasher.finish();
    let info = BlobInfo { digest, size };
    if version(&file.metadata()?) == before {
        known
            .lock()
            .expect("not poisoned")
            .insert(before, info.clone());
    }
    Ok(info)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Digest;

    #[test]
    fn a_changed_file_is_hashed_again() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        fs::write(&path, b"one").unwrap();
        assert_eq!(
            digest_of_file(&path).unwrap().digest,
            Digest::of_bytes(b"one")
        );
        assert_eq!(
            digest_of_file(&path).unwrap().digest,
            Digest::of_bytes(b"one")
        );
        // Same size, written in place: the change time moves on.
        std::thread::sleep(std::time::Duration::from_millis(10));
        File::options()
            .write(true)
            .open(&path)
            .unwrap()
            .write_all(b"two")
            .unwrap();
        assert_eq!(
            digest_of_file(&path).unwrap().digest,
            Digest::of_bytes(b"two")
        );
    }
}
