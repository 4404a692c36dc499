//! What a base image contributes to each platform's image: its layers and its
//! config, and the annotations that name it.

use serde_json::{Map, Value};

use crate::{BlobRef, Format};

/// A base image's contribution to one platform's image: its layers (already in
/// the image's store) and its config, which imgpack's settings are merged into.
#[derive(Clone, Debug)]
pub struct BaseLayers {
    /// The base as the user named it, for `org.opencontainers.image.base.name`.
    pub name: String,
    /// Digest of the base's manifest for this platform (`…base.digest`).
    pub manifest_digest: String,
    /// The base's image config, as JSON.
    pub config: Value,
    pub layers: Vec<BlobRef>,
}

pub const BASE_NAME_ANNOTATION: &str = "org.opencontainers.image.base.name";
pub const BASE_DIGEST_ANNOTATION: &str = "org.opencontainers.image.base.digest";

impl BaseLayers {
    pub fn diff_ids(&self) -> Vec<Value> {
        self.config["rootfs"]["diff_ids"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    pub fn history(&self) -> Vec<Value> {
        self.config["history"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// `config.<key>` of the base (Env, User, WorkingDir, ExposedPorts, Labels).
    pub fn setting(&self, key: &str) -> Option<&Value> {
        self.config["config"].get(key).filter(|v| !v.is_null())
    }

    pub fn env(&self) -> Vec<String> {
        self.setting("Env")
            .and_then(Value::as_array)
            .map(|entries| {
                entries
                    .iter()
                    .filter_map(|e| e.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// The media type a base layer gets in an image of `format`: the same
/// compression, named the OCI or the Docker way.
pub(crate) fn layer_media_type(media_type: &str, format: Format) -> anyhow::Result<String> {
    let compression = match media_type {
        "application/vnd.oci.image.layer.v1.tar+gzip"
        | "application/vnd.docker.image.rootfs.diff.tar.gzip" => "gzip",
        "application/vnd.oci.image.layer.v1.tar+zstd"
        | "application/vnd.docker.image.rootfs.diff.tar.zstd" => "zstd",
        "application/vnd.oci.image.layer.v1.tar"
        | "application/vnd.docker.image.rootfs.diff.tar" => "none",
        // Foreign or non-distributable layers keep what the base says.
        other => return Ok(other.to_owned()),
    };
    Ok(match (format, compression) {
        (Format::Oci, "gzip") => "application/vnd.oci.image.layer.v1.tar+gzip",
        (Format::Oci, "zstd") => "application/vnd.oci.image.layer.v1.tar+zstd",
        (Format::Oci, _) => "application/vnd.oci.image.layer.v1.tar",
        (Format::Docker, "gzip") => "application/vnd.docker.image.rootfs.diff.tar.gzip",
        (Format::Docker, "zstd") => anyhow::bail!(
            "the base image has zstd layers, which --format docker cannot name: use --format oci"
        ),
        (Format::Docker, _) => "application/vnd.docker.image.rootfs.diff.tar",
    }
    .to_owned())
}

/// Merges two JSON objects (`ExposedPorts`, `Labels`): `ours` wins on a shared key.
pub(crate) fn union(base: Option<&Value>, ours: Option<&Value>) -> Option<Value> {
    let mut merged: Map<String, Value> =
        base.and_then(Value::as_object).cloned().unwrap_or_default();
    if let Some(ours) = ours.and_then(Value::as_object) {
        merged.extend(ours.clone());
    }
    (!merged.is_empty()).then_some(Value::Object(merged))
}
