//! A built image as the sinks see it: blobs with media types, one manifest per
//! platform, and the root (index or manifest).

use anyhow::Result;
use imgpack_blob::{BlobInfo, BlobStore, Digest};
use imgpack_platform::Platform;

use crate::Referrer;

/// The annotation naming a tag in an OCI layout's index.json.
pub const REF_NAME_ANNOTATION: &str = "org.opencontainers.image.ref.name";

/// A blob with its media type: the parts of a descriptor every sink needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BlobRef {
    pub media_type: String,
    pub blob: BlobInfo,
}

impl BlobRef {
    pub fn digest(&self) -> &Digest {
        &self.blob.digest
    }
}

/// One platform's manifest and the blobs it references.
#[derive(Clone, Debug)]
pub struct PlatformManifest {
    pub platform: Platform,
    pub manifest: BlobRef,
    pub config: BlobRef,
    pub layers: Vec<BlobRef>,
}

/// A built image: every blob is in `store`.
#[derive(Clone, Debug)]
pub struct Image {
    pub store: BlobStore,
    /// The index for several platforms; the manifest itself for one.
    pub root: BlobRef,
    pub manifests: Vec<PlatformManifest>,
    /// Artifacts (SBOMs, provenance) whose subject is one of the manifests:
    /// written beside the image by the sinks that can hold them.
    pub referrers: Vec<Referrer>,
}

impl Image {
    pub fn is_index(&self) -> bool {
        self.manifests.len() != 1 || self.root != self.manifests[0].manifest
    }

    /// Every blob once, leaves first (layers, configs, manifests, then the
    /// root): the order in which a sink can write them so that nothing ever
    /// references a blob that is not there yet.
    pub fn blobs_in_dependency_order(&self) -> Vec<&BlobRef> {
        let layers = self.manifests.iter().flat_map(|m| &m.layers);
        let configs = self.manifests.iter().map(|m| &m.config);
        let manifests = self.manifests.iter().map(|m| &m.manifest);
        let mut seen = std::collections::HashSet::new();
        layers
            .chain(configs)
            .chain(manifests)
            .chain([&self.root])
            .filter(|blob| seen.insert(blob.digest().clone()))
            .collect()
    }

    /// Layers and configs, each once: the blobs a registry needs before any manifest.
    pub fn layer_and_config_blobs(&self) -> Vec<&BlobRef> {
        let layers = self.manifests.iter().flat_map(|m| &m.layers);
        let configs = self.manifests.iter().map(|m| &m.config);
        let mut seen = std::collections::HashSet::new();
        layers
            .chain(configs)
            .filter(|blob| seen.insert(blob.digest().clone()))
            .collect()
    }

    /// The referrers' blobs (configs and documents), each once, then their manifests.
    pub fn referrer_blobs_in_dependency_order(&self) -> Vec<&BlobRef> {
        let blobs = self.referrers.iter().flat_map(|r| &r.blobs);
        let manifests = self.referrers.iter().map(|r| &r.manifest);
        let mut seen = std::collections::HashSet::new();
        blobs
            .chain(manifests)
            .filter(|blob| seen.insert(blob.digest().clone()))
            .collect()
    }

    pub fn manifest_for(&self, platform: &Platform) -> Option<&PlatformManifest> {
        self.manifests.iter().find(|m| &m.platform == platform)
    }
}

/// Where a built image goes: an OCI layout, an archive, a registry.
pub trait Sink: Send + Sync {
    /// How the sink is named to the user, e.g. `oci:./out/image:v1`.
    fn describe(&self) -> String;

    /// Checks, before any work, what can be checked without writing: that an
    /// output path can be created. A bad path then fails before anything is
    /// compiled or built.
    fn check(&self) -> Result<()> {
        Ok(())
    }

    /// Checks, before any work, that the sink can take an image of these
    /// platforms (a Docker daemon loads only its own).
    fn check_platforms(&self, platforms: &[Platform]) -> Result<()> {
        let _ = platforms;
        Ok(())
    }

    /// Called once before the image's blobs are written into `store`: a sink
    /// that can take blobs while they are still being written (a registry
    /// uploads a layer while it is compressed) starts following the store
    /// here. [`write`](Self::write) is still called with the finished image,
    /// and finishes what this started. Most sinks need nothing early.
    fn prepare(&self, store: &BlobStore) -> Result<()> {
        let _ = store;
        Ok(())
    }

    /// Writes the image. Blobs first, anything that names the image (a tag,
    /// index.json, the archive file) last, so an interrupted write leaves no
    /// name pointing at missing content and can simply be run again.
    fn write(&self, image: &Image) -> Result<()>;
}
