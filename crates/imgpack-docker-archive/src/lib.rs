//! `docker-archive:FILE[:NAME:TAG]`: the tarball that `docker load` and
//! `podman load` accept: `manifest.json`, the config and the layers. It holds
//! one platform, like `docker save`. `docker:NAME[:TAG]` streams the same
//! tarball into the local Docker Engine (the `daemon` module).
//!
//! Layers are stored compressed, as they are in the image (both `docker load`
//! and containers/image decompress them); files are named
//! `blobs/sha256/<hex>` as Docker 25's `docker save` names them.

mod daemon;

use std::io::Write;
use std::path::PathBuf;

use anyhow::{bail, Result};
use imgpack_image::{validate_tag, BlobRef, Image, PlatformManifest, Sink};
use imgpack_layout::{append_bytes, append_file, write_tar_atomically};
use serde_json::json;

#[derive(Clone, Debug)]
pub struct DockerArchiveSink {
    file: PathBuf,
    /// `name:tag` recorded in RepoTags, so `docker load` tags the image.
    reference: Option<String>,
}

impl DockerArchiveSink {
    /// Parses what follows `docker-archive:`: `FILE` or `FILE:NAME[:TAG]`.
    /// A path may hold colons: a spec ending in `.tar` is all file
    /// (`DIR/my:image.tar`), and otherwise the file ends at the first `.tar:`
    /// (`out/a:b.tar:api:v1`); a path without `.tar` ends at its first colon.
    pub fn parse(spec: &str) -> Result<Self> {
        let (file, reference) = match split_file(spec) {
            (file, Some(reference)) => (file, Some(normalise_reference(reference)?)),
            (file, None) => (file, None),
        };
        if file.is_empty() {
            bail!("docker-archive: needs a file, as in docker-archive:./out/api.tar:api:v1");
        }
        Ok(Self {
            file: file.into(),
            reference,
        })
    }
}

/// The file and the `NAME[:TAG]` after it, if any (see [`DockerArchiveSink::parse`]).
fn split_file(spec: &str) -> (&str, Option<&str>) {
    if spec.ends_with(".tar") {
        return (spec, None);
    }
    if let Some(end) = spec.find(".tar:") {
        let file_end = end + ".tar".len();
        return (&spec[..file_end], Some(&spec[file_end + 1..]));
    }
    match spec.split_once(':') {
        Some((file, reference)) => (file, Some(reference)),
        None => (spec, None),
    }
}

pub use daemon::DockerDaemonSink;

/// `api` → `api:latest`; checks the name and tag like `docker tag` would.
fn normalise_reference(reference: &str) -> Result<String> {
    let (name, tag) = match reference.rsplit_once(':') {
        Some((name, tag)) if !tag.contains('/') => (name, tag),
        _ => (reference, "latest"),
    };
    let parts: Vec<&str> = name.split('/').collect();
    let name_ok = parts.iter().enumerate().all(|(i, part)| {
        // Only a registry host (the first of several parts) may carry a :port.
        let allowed = if i == 0 && parts.len() > 1 {
            "._-:"
        } else {
            "._-"
        };
        !part.is_empty()
            && part
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || allowed.contains(c))
    });
    if !name_ok {
        bail!("bad image name '{name}': use lowercase letters, digits, '.', '_', '-' and '/'");
    }
    validate_tag(tag)?;
    Ok(format!("{name}:{tag}"))
}

impl Sink for DockerArchiveSink {
    fn describe(&self) -> String {
        match &self.reference {
            Some(reference) => format!("docker-archive:{}:{reference}", self.file.display()),
            None => format!("docker-archive:{}", self.file.display()),
        }
    }

    fn check(&self) -> Result<()> {
        imgpack_blob::check_file_path(&self.file)
    }

    fn write(&self, image: &Image) -> Result<()> {
        let [manifest] = image.manifests.as_slice() else {
            let platforms: Vec<String> = image
                .manifests
                .iter()
                .map(|m| m.platform.to_string())
                .collect();
            bail!(
                "docker-archive holds one platform but the image has {}: add --platform with one of them",
                platforms.join(", ")
            );
        };
        write_tar_atomically(&self.file, |tar| {
            append_archive(tar, image, manifest, self.reference.as_deref())
        })
    }
}

/// Appends the docker-archive of one platform's manifest to `tar`: the
/// layers and config, streamed from the store, then `manifest.json` naming
/// `reference` (if any) in RepoTags.
pub(crate) fn append_archive<W: Write>(
    tar: &mut tar::Builder<W>,
    image: &Image,
    manifest: &PlatformManifest,
    reference: Option<&str>,
) -> Result<()> {
    let blob_path = |blob: &BlobRef| format!("blobs/sha256/{}", blob.digest().hex());
    let manifest_json = serde_json::to_vec(&json!([{
        "Config": blob_path(&manifest.config),
        "RepoTags": reference.into_iter().collect::<Vec<_>>(),
        "Layers": manifest.layers.iter().map(blob_path).collect::<Vec<_>>(),
    }]))?;
    let mut written = std::collections::HashSet::new();
    for blob in manifest.layers.iter().chain([&manifest.config]) {
        if written.insert(blob.digest().clone()) {
            let file = image.store.open_blob(blob.digest())?;
            append_file(tar, &blob_path(blob), blob.blob.size, file)?;
        }
    }
    append_bytes(tar, "manifest.json", &manifest_json)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_with_colons_stay_whole() {
        assert_eq!(split_file("out/my:image.tar"), ("out/my:image.tar", None));
        assert_eq!(
            split_file("out/a:b.tar:api:v1"),
            ("out/a:b.tar", Some("api:v1"))
        );
        assert_eq!(
            split_file("./out/api.tar:api"),
            ("./out/api.tar", Some("api"))
        );
        assert_eq!(split_file("image:api:v1"), ("image", Some("api:v1")));
        assert_eq!(split_file("image"), ("image", None));
        let sink = DockerArchiveSink::parse("dir/my:image.tar").unwrap();
        assert_eq!(sink.file, std::path::PathBuf::from("dir/my:image.tar"));
        assert_eq!(sink.reference, None);
    }

    #[test]
    fn references_get_a_default_tag_and_are_checked() {
        assert_eq!(normalise_reference("api").unwrap(), "api:latest");
        assert_eq!(normalise_reference("team/api:v1").unwrap(), "team/api:v1");
        assert_eq!(
            normalise_reference("localhost:5000/api").unwrap(),
            "localhost:5000/api:latest"
        );
        assert!(normalise_reference("Api").is_err());
        assert!(DockerArchiveSink::parse("").is_err());
        assert!(DockerArchiveSink::parse("out.tar")
            .unwrap()
            .reference
            .is_none());
    }
}
