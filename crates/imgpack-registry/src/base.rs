//! Base images: the manifest for each requested platform, its config and
//! layers, fetched once into imgpack's cache (by digest) so that a rebuild
//! works offline and a pinned `base@sha256:…` is never fetched twice. Every
//! document is checked ([`parse_document`]), every blob is bounded by its
//! descriptor and its digest, and the config's diff IDs must match the layers.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use imgpack_blob::{BlobInfo, BlobStore, Digest};
use imgpack_image::{BaseLayers, BlobRef};
use imgpack_platform::Platform;
use oci_spec::distribution::Reference;
use serde_json::Value;

use crate::limits::DOCUMENT_LIMIT;
use crate::locations::{cache_dir, create_private_dir};
use crate::manifest::{parse_document, Descriptor, Document, DOCKER_MANIFEST, OCI_MANIFEST};
use crate::progress::Reporter;
use crate::retry::with_retries;
use crate::runtime::block_on;
use crate::{
    connect, find_credentials, hub, BlobLocations, RegistryClient, RetryPolicy, TransportOptions,
};

/// First contact with the base's registry when the tag's last answer is
/// cached: three tries within about two seconds (a registry restarting or a
/// dropped first packet), then the cached digest.
const CACHED_FIRST_CONTACT: RetryPolicy = RetryPolicy {
    max_elapsed: Duration::from_secs(3),
    first_contact: Duration::from_secs(3),
    max_tries: 3,
    min_delay: Duration::from_millis(250),
};

/// Resolves the base image `reference` for each of `platforms` (from the
/// cache when possible) and brings its layers into `into`, the build's store.
/// Returns one [`BaseLayers`] per platform, in the order of `platforms`.
pub fn resolve_base(
    reference: &str,
    platforms: &[Platform],
    transport: &TransportOptions,
    into: &BlobStore,
) -> Result<Vec<BaseLayers>> {
    block_on(resolve(reference, platforms, transport, into))
}

/// The way out of a refusal of the cache for base images (`--no-cache` is
/// about layers: base images are always kept).
const BASE_CACHE_WAY_OUT: &str = "or set IMGPACK_CACHE_DIR to a directory of your own";

struct Source<'a> {
    reference: Reference,
    transport: &'a TransportOptions,
    client: Option<RegistryClient>,
    store: BlobStore,
    refs_dir: PathBuf,
    diff_ids_dir: PathBuf,
    reporter: Reporter,
}

async fn resolve(
    text: &str,
    platforms: &[Platform],
    transport: &TransportOptions,
    into: &BlobStore,
) -> Result<Vec<BaseLayers>> {
    let reference = crate::reference::parse_reference(text).with_context(|| {
        format!("bad base image reference '{text}': use REGISTRY/REPOSITORY[:TAG][@sha256:…]")
    })?;
    let cache = cache_dir().context("no cache directory for base images: set IMGPACK_CACHE_DIR")?;
    // Base layers may hold private code: the cache is its owner's only, and
    // one that others can write is refused (they could swap the base's layers).
    for dir in ["base/blobs/sha256", "base-refs", "base-diffids"] {
        if let Err(err) = create_private_dir(&cache.join(dir)) {
            bail!(
                "the cache directory {} cannot be used for base images ({err:#}): set \
                 IMGPACK_CACHE_DIR to a directory you can write",
                cache.display()
            );
        }
    }
    imgpack_blob::check_private_cache(&cache, BASE_CACHE_WAY_OUT)?;
    let mut source = Source {
        store: BlobStore::open(cache.join("base"))?,
        refs_dir: cache.join("base-refs"),
        diff_ids_dir: cache.join("base-diffids"),
        reference,
        transport,
        client: None,
        reporter: Reporter::new(transport.quiet),
    };
    let root_digest = source.root_digest().await?;
    let manifests = match source.document(&root_digest).await? {
        Document::Index { manifests } => platforms
            .iter()
            .map(|platform| select(&manifests, platform, text))
            .collect::<Result<Vec<_>>>()?,
        Document::Manifest { .. } => platforms.iter().map(|_| root_digest.clone()).collect(),
    };
    let name = display_name(&source.reference);
    let mut resolved = Vec::new();
    for (platform, digest) in platforms.iter().zip(manifests) {
        let layers = source.platform(platform, digest, &name).await?;
        for layer in &layers.layers {
            into.import(&source.store, &layer.blob)?;
        }
        resolved.push(layers);
    }
    source.record_locations(&resolved);
    Ok(resolved)
}

fn display_name(reference: &Reference) -> String {
    let mut name = format!("{}/{}", reference.registry(), reference.repository());
    if let Some(tag) = reference.tag() {
        name.push_str(&format!(":{tag}"));
    }
    if let Some(digest) = reference.digest() {
        name.push_str(&format!("@{digest}"));
    }
    name
}

/// The index entry for `platform`, or an error listing the base's platforms.
fn select(children: &[Descriptor], platform: &Platform, name: &str) -> Result<Digest> {
    let found = children.iter().find(|child| {
        child
            .platform
            .as_deref()
            .and_then(|p| p.parse::<Platform>().ok())
            .as_ref()
            == Some(platform)
    });
    match found {
        Some(child) if matches!(child.media_type.as_str(), OCI_MANIFEST | DOCKER_MANIFEST) => {
            Ok(child.blob.digest.clone())
        }
        Some(child) => bail!(
            "the base image {name} lists {platform} as {}, not an image manifest: imgpack reads one level of index",
            crate::errors::printable(&child.media_type)
        ),
        None => {
            let available: Vec<&str> = children
                .iter()
                .filter_map(|c| c.platform.as_deref())
                .collect();
            bail!(
                "no {platform} in the base image {name} (it has {})",
                crate::errors::printable(&available.join(", "))
            )
        }
    }
}

impl Source<'_> {
    fn repository(&self) -> &str {
        self.reference.repository()
    }

    /// Connects on first use: a fully cached base needs no network.
    async fn client(&mut self) -> Result<&RegistryClient> {
        self.connect_within(self.transport.retry.clone()).await
    }

    /// [`Self::client`], first contact retried under `retry` (later requests
    /// keep the transport's own policy).
    async fn connect_within(&mut self, retry: RetryPolicy) -> Result<&RegistryClient> {
        if self.client.is_none() {
            let registry = self.reference.resolve_registry().to_owned();
            let keys = hub::credential_keys(self.reference.registry());
            let first_contact = TransportOptions {
                retry,
                ..self.transport.clone()
            };
            let mut client = connect(&registry, &first_contact, find_credentials(&keys)).await?;
            client.retry = self.transport.retry.clone();
            self.client = Some(client);
        }
        Ok(self.client.as_ref().expect("just connected"))
    }

    /// The digest the tag named when it was last resolved, if that document is still cached.
    fn cached_root(&self) -> Option<Digest> {
        read_record(&self.ref_file())
            .and_then(|d| Digest::parse(d.trim()))
            .filter(|digest| self.store.contains(digest))
    }

    fn ref_file(&self) -> PathBuf {
        let tag = self.reference.tag().unwrap_or("latest");
        self.refs_dir
            .join(self.reference.registry().replace(':', "_"))
            .join(self.repository())
            .join(tag)
    }

    /// The digest the reference names: pinned, asked of the registry, or
    /// (when the registry cannot be reached) what the tag named last time.
    async fn root_digest(&mut self) -> Result<Digest> {
        if let Some(digest) = self.reference.digest() {
            return Digest::parse(digest).context("the base image's digest is not sha256");
        }
        // Only an unreachable registry falls back to the cache: a tag the
        // registry answers for (or refuses) is never replaced by an old one.
        // With a cached answer to fall back on, an unreachable registry is
        // given seconds, not the full retry budget of a push (~40 s offline).
        let cached = self.cached_root();
        let first_contact = match cached {
            Some(_) => CACHED_FIRST_CONTACT,
            None => self.transport.retry.clone(),
        };
        if let Err(err) = self.connect_within(first_contact).await {
            return match cached {
                Some(digest) => {
                    self.reporter.line(&format!(
                        "cannot reach the base's registry ({err:#}); using the cached {digest}"
                    ));
                    Ok(digest)
                }
                None => Err(err),
            };
        }
        let tag = self.reference.tag().unwrap_or("latest").to_owned();
        let digest = self.fetch_document(&tag, None).await?;
        let file = self.ref_file();
        create_private_dir(file.parent().expect("has a parent"))?;
        imgpack_blob::write_atomically(&file, digest.to_string().as_bytes(), 0o644)?;
        Ok(digest)
    }

    /// GETs a manifest or index, checks it (and, when asked by digest, its
    /// digest) and only then stores it in the cache; returns its digest.
    async fn fetch_document(
        &mut self,
        reference: &str,
        expected: Option<&Digest>,
    ) -> Result<Digest> {
        let repository = self.repository().to_owned();
        // The error's context names the base as the user wrote it: add only a
        // platform manifest's digest, which it does not hold.
        let what = match expected {
            Some(digest) if self.reference.digest() != Some(reference) => {
                format!("fetching its platform manifest {digest}")
            }
            _ => "fetching its manifest".to_owned(),
        };
        let retry = self.transport.retry.clone();
        let client = self.client().await?;
        let (bytes, content_type) = with_retries(&retry, &client.reporter, &what, || {
            client.get_manifest(&repository, reference)
        })
        .await?;
        let digest = Digest::of_bytes(&bytes);
        if let Some(expected) = expected.filter(|e| **e != digest) {
            bail!("the registry sent content hashing to {digest} for the base manifest {expected}: refused");
        }
        parse_document(&bytes, content_type.as_deref()).with_context(|| {
            format!(
                "the base manifest {}/{repository}:{reference}",
                self.reference.registry()
            )
        })?;
        self.store.write_bytes(&bytes)?;
        Ok(digest)
    }

    /// A checked manifest or index by digest, from the cache or the registry.
    async fn document(&mut self, digest: &Digest) -> Result<Document> {
        let bytes = match self.cached(digest) {
            Some(bytes) => bytes,
            None => {
                self.fetch_document(&digest.to_string(), Some(digest))
                    .await?;
                self.store.read_small(digest)?
            }
        };
        parse_document(&bytes, None).with_context(|| format!("the cached base manifest {digest}"))
    }

    /// A manifest or config from the cache, hashed again as it is read: one
    /// that no longer matches its digest (damaged, or replaced by someone who
    /// could write the cache) is dropped, and fetched again by the caller.
    fn cached(&self, digest: &Digest) -> Option<Vec<u8>> {
        if !self.store.contains(digest) {
            return None;
        }
        let read = self.store.read_small(digest);
        if read.is_err() {
            let _ = std::fs::remove_file(self.store.path(digest));
        }
        read.ok()
    }

    /// The blob a descriptor names, in the cache: fetched (bounded by its
    /// size, checked against its digest) unless it is there already.
    async fn blob(&mut self, blob: &BlobInfo) -> Result<()> {
        if self.store.contains(&blob.digest) {
            return Ok(());
        }
        self.fetch_blob(blob).await
    }

    async fn fetch_blob(&mut self, blob: &BlobInfo) -> Result<()> {
        let repository = self.repository().to_owned();
        let store = self.store.clone();
        let what = format!("fetching base blob {}", blob.digest);
        let retry = self.transport.retry.clone();
        let client = self.client().await?;
        with_retries(&retry, &client.reporter, &what, || {
            client.fetch_blob(&repository, blob, &store)
        })
        .await?;
        self.reporter.line(&format!(
            "fetched base blob {} ({} bytes)",
            blob.digest, blob.size
        ));
        Ok(())
    }

    async fn platform(
        &mut self,
        platform: &Platform,
        digest: Digest,
        name: &str,
    ) -> Result<BaseLayers> {
        let Document::Manifest { config, layers } = self.document(&digest).await? else {
            bail!("the base image {name} has an index where the manifest of {platform} should be");
        };
        if config.blob.size > DOCUMENT_LIMIT {
            bail!(
                "the config of the base image {name} is {} bytes, more than the {} MiB imgpack reads",
                config.blob.size,
                DOCUMENT_LIMIT >> 20
            );
        }
        let config_bytes = match self.cached(&config.blob.digest) {
            Some(bytes) => bytes,
            None => {
                self.fetch_blob(&config.blob).await?;
                self.store.read_small(&config.blob.digest)?
            }
        };
        let config_json: Value = serde_json::from_slice(&config_bytes)
            .with_context(|| format!("the config of the base image {name} is not JSON"))?;
        check_platform(&config_json, platform, name)?;
        for layer in &layers {
            self.blob(&layer.blob).await?;
        }
        let layers: Vec<BlobRef> = layers
            .into_iter()
            .map(|layer| BlobRef {
                media_type: layer.media_type,
                blob: layer.blob,
            })
            .collect();
        self.check_diff_ids(&config_json, &layers, name)?;
        Ok(BaseLayers {
            name: name.to_owned(),
            manifest_digest: digest.to_string(),
            config: config_json,
            layers,
        })
    }

    /// The config's `rootfs.diff_ids` must be the digests of the uncompressed layers.
    fn check_diff_ids(&self, config: &Value, layers: &[BlobRef], name: &str) -> Result<()> {
        let listed: Vec<&str> = config["rootfs"]["diff_ids"]
            .as_array()
            .map(|ids| ids.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        if listed.len() != layers.len() {
            bail!(
                "the base image {name} is inconsistent: its config lists {} diff IDs for {} layers; refused",
                listed.len(),
                layers.len()
            );
        }
        for (index, (layer, listed)) in layers.iter().zip(listed).enumerate() {
            let actual = self.diff_id(layer)?;
            if actual.to_string() != listed {
                bail!(
                    "the base image {name} is inconsistent: layer {} uncompresses to {actual} but its config says {}; refused",
                    index + 1,
                    crate::errors::printable(listed)
                );
            }
        }
        Ok(())
    }

    /// A layer's diff ID, computed once and remembered beside the cache.
    fn diff_id(&self, layer: &BlobRef) -> Result<Digest> {
        let remembered = self.diff_ids_dir.join(layer.digest().hex());
        if let Some(digest) = read_record(&remembered).and_then(|text| Digest::parse(text.trim())) {
            return Ok(digest);
        }
        let file = self.store.open_blob(layer.digest())?;
        let digest = imgpack_layer::diff_id(file, &layer.media_type)
            .with_context(|| format!("cannot read base layer {}", layer.digest()))?;
        create_private_dir(&self.diff_ids_dir)?;
        imgpack_blob::write_atomically(&remembered, digest.to_string().as_bytes(), 0o644)?;
        Ok(digest)
    }

    /// On push, these layers are mounted from the base's repository when it is the same registry.
    fn record_locations(&self, resolved: &[BaseLayers]) {
        let mut locations = BlobLocations::load();
        for layer in resolved.iter().flat_map(|p| &p.layers) {
            locations.record(
                self.reference.resolve_registry(),
                &layer.digest().to_string(),
                self.reference.repository(),
            );
        }
        if let Err(err) = locations.save() {
            self.reporter.line(&format!(
                "warning: cannot save the blob location cache: {err:#}"
            ));
        }
    }
}

/// A single-platform base must be the platform asked for.
fn check_platform(config: &Value, platform: &Platform, name: &str) -> Result<()> {
    let arch = config["architecture"].as_str().unwrap_or("?");
    let os = config["os"].as_str().unwrap_or("linux");
    if arch != platform.arch.name() || os != platform.os() {
        bail!(
            "no {platform} in the base image {name} (it has {}/{})",
            crate::errors::printable(os),
            crate::errors::printable(arch)
        );
    }
    Ok(())
}

/// A small record the cache keeps (a tag's digest, a layer's diff ID), if it
/// is there and readable: bounded, and never read through a planted link.
fn read_record(path: &std::path::Path) -> Option<String> {
    imgpack_blob::read_local_text(path, &imgpack_blob::local_file::CACHE_RECORD).ok()
}
