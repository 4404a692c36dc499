//! `oci-archive:`: an OCI layout as one tar file, written atomically; tar
//! helpers shared with the docker-archive sink.

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use imgpack_blob::{check_file_path, parent_or_dot, AtomicFile};
use imgpack_image::{validate_tag, Image, Sink};

use crate::dir::split_path_and_tag;
use crate::index::index_with_tag;
use crate::OCI_LAYOUT;

/// `oci-archive:FILE[:TAG]`: an OCI layout packed into one tar file.
#[derive(Clone, Debug)]
pub struct OciArchiveSink {
    file: PathBuf,
    tag: String,
}

impl OciArchiveSink {
    pub fn parse(spec: &str) -> Result<Self> {
        let (file, tag) = split_path_and_tag(spec);
        if file.is_empty() {
            bail!("oci-archive: needs a file, as in oci-archive:./out/image.tar");
        }
        let tag = tag.unwrap_or("latest");
        validate_tag(tag)?;
        Ok(Self {
            file: file.into(),
            tag: tag.to_owned(),
        })
    }
}

impl Sink for OciArchiveSink {
    fn describe(&self) -> String {
        format!("oci-archive:{}:{}", self.file.display(), self.tag)
    }

    fn check(&self) -> Result<()> {
        check_file_path(&self.file)
    }

    fn write(&self, image: &Image) -> Result<()> {
        let index = index_with_tag(None, image, &self.tag)?;
        write_tar_atomically(&self.file, |tar| {
            append_bytes(tar, "oci-layout", OCI_LAYOUT)?;
            append_dir(tar, "blobs/")?;
            append_dir(tar, "blobs/sha256/")?;
            let referrer_blobs = image.referrer_blobs_in_dependency_order();
            for blob in image
                .blobs_in_dependency_order()
                .into_iter()
                .chain(referrer_blobs)
            {
                let path = format!("blobs/sha256/{}", blob.digest().hex());
                append_file(
                    tar,
                    &path,
                    blob.blob.size,
                    image.store.open_blob(blob.digest())?,
                )?;
            }
            append_bytes(tar, "index.json", &index)
        })
    }
}

/// Builds a tar in a temporary file beside `path` and renames it into place
/// when complete: a reader never sees half an archive. Missing parent
/// directories are created, as `oci:` creates its directory.
pub fn write_tar_atomically(
    path: &Path,
    fill: impl FnOnce(&mut tar::Builder<BufWriter<File>>) -> Result<()>,
) -> Result<()> {
    let parent = parent_or_dot(path);
    std::fs::create_dir_all(parent)
        .with_context(|| format!("cannot create the directory {}", parent.display()))?;
    let temp = AtomicFile::create(path)?;
    let mut tar = tar::Builder::new(BufWriter::with_capacity(256 * 1024, temp.reopen()?));
    fill(&mut tar)?;
    let file = tar
        .into_inner()?
        .into_inner()
        .map_err(|err| err.into_error())
        .with_context(|| format!("cannot write {}", path.display()))?;
    temp.commit(&file, 0o644)
}

fn header(kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(kind);
    header.set_mode(mode);
    header.set_size(size);
    header.set_mtime(0);
    header.set_uid(0);
    header.set_gid(0);
    header
}

fn append_dir<W: Write>(tar: &mut tar::Builder<W>, path: &str) -> Result<()> {
    tar.append_data(
        &mut header(tar::EntryType::Directory, 0o755, 0),
        path,
        io::empty(),
    )?;
    Ok(())
}

pub fn append_bytes<W: Write>(tar: &mut tar::Builder<W>, path: &str, bytes: &[u8]) -> Result<()> {
    append_file(tar, path, bytes.len() as u64, bytes)
}

/// Streams `size` bytes of `reader` as the file `path`.
pub fn append_file<W: Write>(
    tar: &mut tar::Builder<W>,
    path: &str,
    size: u64,
    reader: impl io::Read,
) -> Result<()> {
    let mut header = header(tar::EntryType::Regular, 0o644, size);
    tar.append_data(&mut header, path, reader.take(size))
        .with_context(|| format!("cannot add {path} to the archive"))?;
    Ok(())
}
