//! `oci:DIR[:TAG]`: an OCI image layout directory, created or added to, with
//! blobs first and index.json last.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use imgpack_blob::{check_dir_path, local_file, read_local_file, write_atomically, BlobStore};
use imgpack_image::{validate_tag, Image, Sink};

use crate::index::index_with_tag;
use crate::OCI_LAYOUT;

/// `oci:DIR[:TAG]`: an OCI image layout directory, created or added to.
#[derive(Clone, Debug)]
pub struct OciLayoutSink {
    dir: PathBuf,
    tag: String,
}

impl OciLayoutSink {
    pub fn new(dir: impl Into<PathBuf>, tag: &str) -> Result<Self> {
        validate_tag(tag)?;
        Ok(Self {
            dir: dir.into(),
            tag: tag.to_owned(),
        })
    }

    /// Parses `DIR[:TAG]` (what follows `oci:`); the tag defaults to `latest`.
    pub fn parse(spec: &str) -> Result<Self> {
        let (dir, tag) = split_path_and_tag(spec);
        if dir.is_empty() {
            bail!("oci: needs a directory, as in oci:./out/image:v1");
        }
        Self::new(dir, tag.unwrap_or("latest"))
    }
}

/// Splits `PATH:TAG` at the last colon when what follows looks like a tag
/// (no slash), so `oci:./out/image:v1` and `oci:./out/image` both work.
pub(crate) fn split_path_and_tag(spec: &str) -> (&str, Option<&str>) {
    match spec.rsplit_once(':') {
        Some((path, tag)) if !tag.contains('/') && !path.is_empty() => (path, Some(tag)),
        _ => (spec, None),
    }
}

impl Sink for OciLayoutSink {
    fn describe(&self) -> String {
        format!("oci:{}:{}", self.dir.display(), self.tag)
    }

    fn check(&self) -> Result<()> {
        check_layout_dir(&self.dir)
    }

    fn write(&self, image: &Image) -> Result<()> {
        prepare_layout_dir(&self.dir)?;
        let store = BlobStore::open(&self.dir)?;
        for blob in image
            .blobs_in_dependency_order()
            .into_iter()
            .chain(image.referrer_blobs_in_dependency_order())
        {
            store.import(&image.store, &blob.blob)?;
        }
        // index.json last: the tag appears only once everything it names is on disk.
        let index_path = self.dir.join("index.json");
        let existing = match read_local_file(&index_path, &local_file::LAYOUT_DOCUMENT) {
            Ok(bytes) => Some(bytes),
            Err(err) if err.is_not_found() => None,
            Err(err) => return Err(err.into()),
        };
        let index = index_with_tag(existing.as_deref(), image, &self.tag)
            .with_context(|| format!("cannot update {}", index_path.display()))?;
        write_atomically(&index_path, &index, 0o644)
    }
}

/// Checks that `dir` is a layout, an empty directory, or can be created; creates nothing.
fn check_layout_dir(dir: &Path) -> Result<()> {
    if !dir.exists() {
        return check_dir_path(dir);
    }
    if !dir.is_dir() {
        bail!(
            "{} exists and is not a directory: choose another path for oci:",
            dir.display()
        );
    }
    if !dir.join("oci-layout").is_file() {
        let empty = fs::read_dir(dir)
            .with_context(|| format!("cannot read {}", dir.display()))?
            .next()
            .is_none();
        if !empty {
            bail!(
                "{} is not empty and not an OCI layout (it has no oci-layout file): \
                 choose a new or empty directory",
                dir.display()
            );
        }
    }
    check_dir_path(dir)
}

/// Creates `dir` as a layout, or checks that an existing one is a layout.
fn prepare_layout_dir(dir: &Path) -> Result<()> {
    check_layout_dir(dir)?;
    let marker = dir.join("oci-layout");
    if marker.is_file() {
        return Ok(());
    }
    fs::create_dir_all(dir).with_context(|| {
        format!(
            "cannot create output directory {}: check that it is writable",
            dir.display()
        )
    })?;
    write_atomically(&marker, OCI_LAYOUT, 0o644)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_splits_at_a_trailing_tag() {
        assert_eq!(
            split_path_and_tag("./out/image:v1"),
            ("./out/image", Some("v1"))
        );
        assert_eq!(split_path_and_tag("./out/image"), ("./out/image", None));
        assert_eq!(split_path_and_tag("/a:b/image"), ("/a:b/image", None));
        assert!(OciLayoutSink::parse("./x:bad tag").is_err());
        assert!(OciLayoutSink::parse("").is_err());
    }
}
