//! Writing a layer: contents → sorted tar with fixed headers → compressor →
//! blob, with the diffID and the digest computed in the same pass.

use std::fs::File;
use std::io::{self, Read};

use anyhow::{Context, Result};
use imgpack_blob::{BlobInfo, BlobStore, Digest, DigestWriter};

use crate::{Compression, Contents, Entry, EntryKind, LayerContents, Workers};

/// How layers are written: everything but the contents that decides their bytes
/// (compression, time), and the threads that compress them (which does not).
#[derive(Clone, Debug)]
pub struct LayerOptions {
    pub compression: Compression,
    /// The modification time of every entry (`SOURCE_DATE_EPOCH`, else 0).
    pub mtime: u64,
    pub workers: Workers,
}

impl LayerOptions {
    /// Compression on the caller's thread only: for tests and small layers.
    pub fn single_threaded(compression: Compression, mtime: u64) -> Self {
        Self {
            compression,
            mtime,
            workers: Workers::single(),
        }
    }
}

/// A written layer: the compressed blob and the digest of its uncompressed tar.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Layer {
    pub blob: BlobInfo,
    pub diff_id: Digest,
    pub compression: Compression,
}

/// Streams `contents` as a tar through the compressor into a new blob of `store`.
///
/// One pass: tar → (sha256 of the tar = diffID) → compressor → (sha256 and size of
/// the blob) → temporary file, renamed to its digest at the end. Memory stays flat
/// whatever the size of the files, and a failure leaves no blob behind.
pub fn write_layer(
    store: &BlobStore,
    contents: &LayerContents,
    options: &LayerOptions,
) -> Result<Layer> {
    let blob = store.writer()?;
    let encoder = options
        .compression
        .encoder(blob, &options.workers)
        .context("cannot start the compressor")?;
    let mut tar = tar::Builder::new(DigestWriter::new(encoder));
    for (path, entry) in contents.entries() {
        append_entry(&mut tar, path, entry, options.mtime)
            .with_context(|| format!("cannot add /{path} to the layer"))?;
    }
    let (encoder, diff_id, _) = tar
        .into_inner()
        .context("cannot finish the layer tar")?
        .finish();
    let blob = encoder
        .finish()
        .context("cannot finish compressing the layer")?;
    Ok(Layer {
        blob: blob.commit()?,
        diff_id,
        compression: options.compression,
    })
}

fn append_entry<W: io::Write>(
    tar: &mut tar::Builder<W>,
    path: &str,
    entry: &Entry,
    mtime: u64,
) -> Result<()> {
    let mut header = tar::Header::new_gnu();
    header.set_mode(entry.mode);
    header.set_uid(entry.uid);
    header.set_gid(entry.gid);
    header.set_mtime(mtime);
    header.set_size(0);
    match &entry.kind {
        EntryKind::Dir => {
            header.set_entry_type(tar::EntryType::Directory);
            tar.append_data(&mut header, format!("{path}/"), io::empty())?;
        }
        EntryKind::Symlink(target) => {
            header.set_entry_type(tar::EntryType::Symlink);
            tar.append_link(&mut header, path, target)?;
        }
        EntryKind::HardLink(target) => {
            header.set_entry_type(tar::EntryType::Link);
            tar.append_link(&mut header, path, target)?;
        }
        EntryKind::File(Contents::Bytes(bytes)) => {
            header.set_entry_type(tar::EntryType::Regular);
            header.set_size(bytes.len() as u64);
            tar.append_data(&mut header, path, &bytes[..])?;
        }
        EntryKind::File(Contents::File(source)) => {
            let file =
                File::open(source).with_context(|| format!("cannot open {}", source.display()))?;
            let size = file.metadata()?.len();
            header.set_entry_type(tar::EntryType::Regular);
            header.set_size(size);
            let reader = ExactReader {
                inner: file.take(size),
                remaining: size,
            };
            tar.append_data(&mut header, path, reader)
                .with_context(|| format!("cannot read {}", source.display()))?;
        }
    }
    Ok(())
}

/// Reads exactly the size announced in the tar header: a file that shrinks
/// while it is read is an error instead of a corrupt archive.
struct ExactReader<R> {
    inner: R,
    remaining: u64,
}

impl<R: Read> Read for ExactReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let read = self.inner.read(buf)?;
        if read == 0 && self.remaining > 0 && !buf.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the file got shorter while it was read",
            ));
        }
        self.remaining -= read as u64;
        Ok(read)
    }
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use super::*;

    fn sample_contents(dir: &std::path::Path) -> LayerContents {
        let binary = dir.join("bin");
        std::fs::write(&binary, vec![7u8; 100_000]).unwrap();
        let mut contents = LayerContents::new();
        contents
            .add_file("app/api", Contents::File(binary), 0o755)
            .unwrap();
        contents
            .add_file("etc/hostname", Contents::Bytes(b"x\n"[..].into()), 0o644)
            .unwrap();
        contents.add_dir("tmp", 0o1777, 0, 0).unwrap();
        contents
            .add_symlink("etc/localtime", "/usr/share/zoneinfo/UTC")
            .unwrap();
        contents.add_hard_link("app/api2", "app/api").unwrap();
        contents
    }

    fn unpack(store: &BlobStore, layer: &Layer) -> Vec<u8> {
        let mut tar = Vec::new();
        let file = store.open_blob(&layer.blob.digest).unwrap();
        match layer.compression {
            Compression::Gzip { .. } => flate2::read::GzDecoder::new(file)
                .read_to_end(&mut tar)
                .unwrap(),
            Compression::Zstd { .. } => zstd::stream::read::Decoder::new(file)
                .unwrap()
                .read_to_end(&mut tar)
                .unwrap(),
        };
        tar
    }

    #[test]
    fn digests_describe_the_blob_and_the_tar() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(dir.path().join("store")).unwrap();
        for compression in [
            Compression::Gzip { level: 6 },
            Compression::Zstd { level: 3 },
        ] {
            let layer = write_layer(
                &store,
                &sample_contents(dir.path()),
                &LayerOptions::single_threaded(compression, 0),
            )
            .unwrap();
            let blob = std::fs::read(store.path(&layer.blob.digest)).unwrap();
            assert_eq!(Digest::of_bytes(&blob), layer.blob.digest);
            assert_eq!(blob.len() as u64, layer.blob.size);
            assert_eq!(Digest::of_bytes(&unpack(&store, &layer)), layer.diff_id);
        }
    }

    #[test]
    fn tar_headers_are_fixed_and_sorted() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(dir.path().join("store")).unwrap();
        let layer = write_layer(
            &store,
            &sample_contents(dir.path()),
            &LayerOptions::single_threaded(Compression::Gzip { level: 1 }, 1_700_000_000),
        )
        .unwrap();
        let tar = unpack(&store, &layer);
        let mut archive = tar::Archive::new(&tar[..]);
        let mut seen = Vec::new();
        for entry in archive.entries().unwrap() {
            let entry = entry.unwrap();
            let header = entry.header();
            assert_eq!(header.mtime().unwrap(), 1_700_000_000);
            assert_eq!(header.username().unwrap(), Some(""));
            assert_eq!(header.groupname().unwrap(), Some(""));
            seen.push((
                entry.path().unwrap().display().to_string(),
                header.mode().unwrap(),
                header.entry_type(),
            ));
        }
        let names: Vec<&str> = seen.iter().map(|(name, ..)| name.as_str()).collect();
        assert_eq!(
            names,
            [
                "app/",
                "app/api",
                "app/api2",
                "etc/",
                "etc/hostname",
                "etc/localtime",
                "tmp/"
            ]
        );
        assert_eq!(seen[1].1, 0o755);
        assert_eq!(seen[2].2, tar::EntryType::Link);
        assert_eq!(seen[6].1, 0o1777);
    }

    #[test]
    fn same_contents_give_the_same_blob_in_another_directory() {
        let first = tempfile::tempdir().unwrap();
        let second = tempfile::tempdir().unwrap();
        let write = |dir: &std::path::Path| {
            let store = BlobStore::open(dir.join("store")).unwrap();
            write_layer(
                &store,
                &sample_contents(dir),
                &LayerOptions::single_threaded(Compression::Gzip { level: 6 }, 0),
            )
            .unwrap()
        };
        assert_eq!(write(first.path()), write(second.path()));
    }

    #[test]
    fn missing_source_file_fails_and_leaves_no_blob() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(dir.path().join("store")).unwrap();
        let mut contents = LayerContents::new();
        contents
            .add_file("app/api", Contents::File(dir.path().join("gone")), 0o755)
            .unwrap();
        let err = write_layer(
            &store,
            &contents,
            &LayerOptions::single_threaded(Compression::Gzip { level: 6 }, 0),
        )
        .unwrap_err();
        assert!(format!("{err:#}").contains("gone"), "{err:#}");
        assert_eq!(
            std::fs::read_dir(store.root().join("blobs/sha256"))
                .unwrap()
                .count(),
            0
        );
    }
}
