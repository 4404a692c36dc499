//! Media types (`--format`): OCI or Docker v2 schema 2 names for manifests,
//! configs, indexes and layers.

use anyhow::{bail, Result};
use imgpack_layer::Compression;

/// Which family of media types the image uses (`--format`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Oci,
    /// Docker image manifest v2 schema 2, for registries and tools that predate OCI.
    Docker,
}

impl Format {
    pub fn parse(value: &str) -> Result<Self> {
        match value {
            "oci" => Ok(Format::Oci),
            "docker" => Ok(Format::Docker),
            other => bail!("unknown --format '{other}': use oci or docker"),
        }
    }

    pub fn manifest(self) -> &'static str {
        match self {
            Format::Oci => "application/vnd.oci.image.manifest.v1+json",
            Format::Docker => "application/vnd.docker.distribution.manifest.v2+json",
        }
    }

    pub fn index(self) -> &'static str {
        match self {
            Format::Oci => "application/vnd.oci.image.index.v1+json",
            Format::Docker => "application/vnd.docker.distribution.manifest.list.v2+json",
        }
    }

    pub fn config(self) -> &'static str {
        match self {
            Format::Oci => "application/vnd.oci.image.config.v1+json",
            Format::Docker => "application/vnd.docker.container.image.v1+json",
        }
    }

    /// The layer media type; Docker's schema has no zstd layers.
    pub fn layer(self, compression: Compression) -> Result<&'static str> {
        Ok(match (self, compression) {
            (Format::Oci, Compression::Gzip { .. }) => {
                "application/vnd.oci.image.layer.v1.tar+gzip"
            }
            (Format::Oci, Compression::Zstd { .. }) => {
                "application/vnd.oci.image.layer.v1.tar+zstd"
            }
            (Format::Docker, Compression::Gzip { .. }) => {
                "application/vnd.docker.image.rootfs.diff.tar.gzip"
            }
            (Format::Docker, Compression::Zstd { .. }) => {
                bail!("--format docker has no zstd layers: use --compression gzip or --format oci")
            }
        })
    }
}
