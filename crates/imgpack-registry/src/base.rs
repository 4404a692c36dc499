//! Base images: the manifest for each requested platform, its config and
//! layers, fetched once into imgpack's cache (by digest) so that a rebuild
//! works offline and a pinned `base@sha256:…` is never fetched twice.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use imgpack_blob::{BlobInfo, BlobStore, Digest};
use imgpack_image::BlobRef;
use imgpack_platform::Platform;
use oci_spec::distribution::Reference;
use serde_json::Value;

use crate::locations::cache_dir;
use crate::progress::Reporter;
use crate::retry::with_retries;
use crate::{
    connect, find_credentials, BlobLocations, RegistryClient, RetryPolicy, TransportOptions,
};

/// One platform of a base image, with its blobs in the cache store.
#[derive(Clone, Debug)]
pub struct BasePlatform {
    pub platform: Platform,
    pub manifest_digest: Digest,
    pub config: Value,
    pub layers: Vec<BlobRef>,
}

/// A resolved base image.
#[derive(Clone, Debug)]
pub struct BaseImage {
    /// `registry/repository[:tag][@digest]`, for the base.name annotation.
    pub name: String,
    pub platforms: Vec<BasePlatform>,
    /// The cache holding every blob of `platforms`.
    pub store: BlobStore,
}

/// Finds `reference` for each of `platforms`, from the cache when possible.
pub fn resolve_base(
    reference: &str,
    platforms: &[Platform],
    transport: &TransportOptions,
    quiet: bool,
) -> Result<BaseImage> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(resolve(reference, platforms, transport, quiet))
}

struct Source<'a> {
    reference: Reference,
    transport: &'a TransportOptions,
    client: Option<RegistryClient>,
    store: BlobStore,
    refs_dir: PathBuf,
    reporter: Reporter,
}

async fn resolve(
    text: &str,
    platforms: &[Platform],
    transport: &TransportOptions,
    quiet: bool,
) -> Result<BaseImage> {
    let reference: Reference = text.parse().with_context(|| {
        format!("bad base image reference '{text}': use REGISTRY/REPOSITORY[:TAG][@sha256:…]")
    })?;
    let cache = cache_dir().context("no cache directory for base images: set IMGPACK_CACHE_DIR")?;
    let mut source = Source {
        store: BlobStore::open(cache.join("base"))?,
        refs_dir: cache.join("base-refs"),
        reference,
        transport,
        client: None,
        reporter: Reporter::new(quiet),
    };
    let root_digest = source.root_digest().await?;
    let root = source.manifest(&root_digest).await?;
    let manifests = match root["manifests"].as_array() {
        Some(children) => platforms
            .iter()
            .map(|platform| {
                select(children, platform, text).map(|digest| (platform.clone(), digest))
            })
            .collect::<Result<Vec<_>>>()?,
        None => platforms
            .iter()
            .map(|p| (p.clone(), root_digest.clone()))
            .collect(),
    };
    let mut resolved = Vec::new();
    for (platform, digest) in manifests {
        resolved.push(source.platform(platform, digest, text).await?);
    }
    // On push, these layers are mounted from the base's repository when it is the same registry.
    let mut locations = BlobLocations::load();
    for layer in resolved.iter().flat_map(|p| &p.layers) {
        locations.record(
            source.reference.resolve_registry(),
            &layer.digest().to_string(),
            source.reference.repository(),
        );
    }
    if let Err(err) = locations.save() {
        source.reporter.line(&format!(
            "warning: cannot save the blob location cache: {err:#}"
        ));
    }
    Ok(BaseImage {
        name: display_name(&source.reference),
        platforms: resolved,
        store: source.store,
    })
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
fn select(children: &[Value], platform: &Platform, name: &str) -> Result<Digest> {
    let platform_of = |child: &Value| -> Option<(String, Option<Platform>)> {
        let p = &child["platform"];
        let text = match p["variant"].as_str() {
            Some(variant) => format!(
                "{}/{}/{variant}",
                p["os"].as_str()?,
                p["architecture"].as_str()?
            ),
            None => format!("{}/{}", p["os"].as_str()?, p["architecture"].as_str()?),
        };
        Some((text.clone(), text.parse().ok()))
    };
    let found = children
        .iter()
        .find(|child| platform_of(child).and_then(|(_, p)| p).as_ref() == Some(platform));
    match found
        .and_then(|child| child["digest"].as_str())
        .and_then(Digest::parse)
    {
        Some(digest) => Ok(digest),
        None => {
            let available: Vec<String> = children
                .iter()
                .filter_map(platform_of)
                .map(|(text, _)| text)
                .collect();
            bail!(
                "no {platform} in the base image {name} (it has {})",
                available.join(", ")
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
        if self.client.is_none() {
            let registry = self.reference.resolve_registry().to_owned();
            let keys = if self.reference.registry() == "docker.io" {
                vec![
                    "https://index.docker.io/v1/".to_owned(),
                    "docker.io".to_owned(),
                ]
            } else {
                vec![self.reference.registry().to_owned()]
            };
            let client = connect(&registry, self.transport, find_credentials(&keys)).await?;
            self.client = Some(client);
        }
        Ok(self.client.as_ref().expect("just connected"))
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
        if let Err(err) = self.client().await {
            let cached = std::fs::read_to_string(self.ref_file())
                .ok()
                .and_then(|d| Digest::parse(d.trim()));
            return match cached.filter(|digest| self.store.contains(digest)) {
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
        let digest = self.fetch_manifest(&tag).await?;
        let file = self.ref_file();
        std::fs::create_dir_all(file.parent().expect("has a parent"))?;
        imgpack_blob::write_atomically(&file, digest.to_string().as_bytes(), 0o644)?;
        Ok(digest)
    }

    /// GETs a manifest into the cache; returns its digest.
    async fn fetch_manifest(&mut self, reference: &str) -> Result<Digest> {
        let repository = self.repository().to_owned();
        let what = format!(
            "fetching the base manifest {}:{reference}",
            self.reference.registry()
        );
        let policy = RetryPolicy::default();
        let client = self.client().await?;
        let (bytes, _) = with_retries(&policy, &Reporter::new(true), &what, || {
            client.get_manifest(&repository, reference)
        })
        .await?;
        Ok(self.store.write_bytes(&bytes)?.digest)
    }

    /// A manifest or index by digest, from the cache or the registry.
    async fn manifest(&mut self, digest: &Digest) -> Result<Value> {
        if !self.store.contains(digest) {
            let fetched = self.fetch_manifest(&digest.to_string()).await?;
            if fetched != *digest {
                bail!("the registry sent {fetched} for the base manifest {digest}");
            }
        }
        serde_json::from_slice(&self.store.read_small(digest)?)
            .context("the base manifest is not JSON")
    }

    async fn blob(&mut self, digest: &Digest) -> Result<BlobInfo> {
        if self.store.contains(digest) {
            let size = std::fs::metadata(self.store.path(digest))?.len();
            return Ok(BlobInfo {
                digest: digest.clone(),
                size,
            });
        }
        let repository = self.repository().to_owned();
        let store = self.store.clone();
        let what = format!("fetching base blob {digest}");
        let policy = RetryPolicy::default();
        let reporter = Reporter::new(true);
        let client = self.client().await?;
        let info = with_retries(&policy, &reporter, &what, || {
            client.fetch_blob(&repository, digest, &store)
        })
        .await?;
        self.reporter
            .line(&format!("fetched base blob {digest} ({} bytes)", info.size));
        Ok(info)
    }

    async fn platform(
        &mut self,
        platform: Platform,
        digest: Digest,
        name: &str,
    ) -> Result<BasePlatform> {
        let manifest = self.manifest(&digest).await?;
        let config_digest = manifest["config"]["digest"]
            .as_str()
            .and_then(Digest::parse)
            .context("the base manifest has no config")?;
        self.blob(&config_digest).await?;
        let config: Value = serde_json::from_slice(&self.store.read_small(&config_digest)?)?;
        if manifest.get("manifests").is_none() && config["architecture"] != platform.arch.name() {
            bail!(
                "no {platform} in the base image {name} (it has linux/{})",
                config["architecture"].as_str().unwrap_or("?")
            );
        }
        let mut layers = Vec::new();
        for layer in manifest["layers"]
            .as_array()
            .context("the base manifest has no layers")?
        {
            let digest = layer["digest"]
                .as_str()
                .and_then(Digest::parse)
                .context("a base layer has no digest")?;
            let media_type = layer["mediaType"]
                .as_str()
                .unwrap_or("application/vnd.oci.image.layer.v1.tar+gzip")
                .to_owned();
            let blob = self.blob(&digest).await?;
            layers.push(BlobRef { media_type, blob });
        }
        Ok(BasePlatform {
            platform,
            manifest_digest: digest,
            config,
            layers,
        })
    }
}
