//! Pushing an image: blobs (skipped, mounted or uploaded), then manifests by
//! digest, then tags, so a tag never points at anything missing.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use anyhow::{bail, Context, Result};
use futures_util::{StreamExt, TryStreamExt};
use imgpack_blob::Digest;
use imgpack_image::{BlobRef, Image};
use imgpack_sign::Signer;

use crate::client::{verify_local_blob, DigestPut, Mount};
use crate::progress::Reporter;
use crate::retry::with_retries;
use crate::signatures::sign_manifests;
use crate::{BlobLocations, ImageRef, RegistryClient};

/// How many other repositories are tried as mount sources before uploading.
const MOUNT_ATTEMPTS: usize = 2;

/// How a push runs (retries are the client's: [`crate::TransportOptions::retry`]).
#[derive(Clone, Debug)]
pub struct PushOptions {
    /// Blobs pushed at once.
    pub jobs: usize,
    /// No progress output.
    pub quiet: bool,
}

impl Default for PushOptions {
    fn default() -> Self {
        Self {
            jobs: 4,
            quiet: false,
        }
    }
}

enum Outcome {
    Existed,
    Mounted(String),
    Uploaded,
}

/// Pushes `image` to `target` and its extra `tags`, signed by `signer` if
/// given; returns the root digest.
///
/// Order: every blob (skipped when present, mounted from another repository
/// of the registry where imgpack pushed it before, else uploaded), then each
/// platform's manifest by digest, then the index by digest, then the
/// signatures of each, then the tags. A tag never points at anything
/// missing or, with a signer, unsigned, and an interrupted push is finished
/// by running it again: what is there is skipped.
pub async fn push_image(
    client: &RegistryClient,
    target: &ImageRef,
    tags: &[String],
    image: &Image,
    options: &PushOptions,
    signer: Option<&dyn Signer>,
) -> Result<Digest> {
    let reporter = Reporter::new(options.quiet);
    let locations = Mutex::new(BlobLocations::load());
    let blobs = push_blobs(client, target, image, options, &reporter, &locations).await;
    if let Err(err) = locations.lock().expect("not poisoned").save() {
        reporter.line(&format!(
            "warning: cannot save the blob location cache: {err:#}"
        ));
    }
    blobs?;

    let repository = target.repository();
    let mut manifests: Vec<&BlobRef> = Vec::new();
    if image.is_index() {
        manifests.extend(image.manifests.iter().map(|m| &m.manifest));
    }
    manifests.push(&image.root);
    let mut tags_only = false;
    for manifest in manifests {
        if let DigestPut::TagsOnly(refusal) =
            put_by_digest(client, repository, image, manifest, &reporter).await?
        {
            if image.is_index() {
                bail!(
                    "{refusal}: {} stores manifests only under tags, so it cannot hold a \
                     multi-platform index, whose platform manifests are stored by digest; push a \
                     single-platform image to it, or use another registry",
                    client.registry()
                );
            }
            tags_only = true;
            // Its blobs are all there: the first tag cannot point at anything missing.
            reporter.line(&format!(
                "registry {} stores manifests only under tags: tagging directly",
                client.registry()
            ));
        }
    }
    // Referrers after their subjects, before the tags: a tag appears only
    // once the image's SBOM and provenance can be found from it.
    if tags_only && !image.referrers.is_empty() {
        // Artifact manifests are stored by digest, which this registry refuses.
        reporter.line(&format!(
            "warning: registry {} stores manifests only under tags, so the SBOM and provenance \
             (referrers, stored by digest) are not attached",
            client.registry()
        ));
    } else if !image.referrers.is_empty() {
        let blobs = push_blob_list(
            client,
            target,
            image,
            image.referrers.iter().flat_map(|r| &r.blobs).collect(),
            options,
            &reporter,
            &locations,
        )
        .await;
        blobs?;
        match crate::referrers::push_referrers(client, repository, image, &reporter).await? {
            Some(crate::ReferrersSupport::Api) => reporter.line(&format!(
                "attached {} referrers (referrers API)",
                image.referrers.len()
            )),
            Some(crate::ReferrersSupport::TagFallback) => reporter.line(&format!(
                "attached {} referrers (sha256-<digest> referrers tags)",
                image.referrers.len()
            )),
            None => {}
        }
    }
    if let Some(signer) = signer {
        let mut digests: Vec<Digest> = image
            .manifests
            .iter()
            .map(|m| m.manifest.digest().clone())
            .collect();
        if image.is_index() {
            digests.push(image.root.digest().clone());
        }
        let identity = target.repository_ref();
        sign_manifests(
            client,
            repository,
            &identity,
            &digests,
            signer,
            &image.store,
            &reporter,
        )
        .await?;
    }
    for tag in std::iter::once(target.tag()).chain(tags.iter().map(String::as_str)) {
        put_manifest(client, repository, tag, image, &image.root, &reporter).await?;
        reporter.line(&format!("tagged {}:{tag}", target.repository_ref()));
    }
    Ok(image.root.digest().clone())
}

async fn push_blobs(
    client: &RegistryClient,
    target: &ImageRef,
    image: &Image,
    options: &PushOptions,
    reporter: &Reporter,
    locations: &Mutex<BlobLocations>,
) -> Result<()> {
    push_blob_list(
        client,
        target,
        image,
        image.layer_and_config_blobs(),
        options,
        reporter,
        locations,
    )
    .await
}

/// Pushes `blobs` of `image`'s store, `options.jobs` at once.
async fn push_blob_list(
    client: &RegistryClient,
    target: &ImageRef,
    image: &Image,
    blobs: Vec<&BlobRef>,
    options: &PushOptions,
    reporter: &Reporter,
    locations: &Mutex<BlobLocations>,
) -> Result<()> {
    let mut seen = std::collections::HashSet::new();
    let blobs: Vec<&BlobRef> = blobs
        .into_iter()
        .filter(|blob| seen.insert(blob.digest().clone()))
        .collect();
    futures_util::stream::iter(blobs)
        .map(|blob| push_blob(client, target, image, blob, reporter, locations))
        .buffer_unordered(options.jobs.max(1))
        .try_collect::<Vec<()>>()
        .await?;
    Ok(())
}

async fn push_blob(
    client: &RegistryClient,
    target: &ImageRef,
    image: &Image,
    blob: &BlobRef,
    reporter: &Reporter,
    locations: &Mutex<BlobLocations>,
) -> Result<()> {
    let repository = target.repository();
    let digest = blob.digest();
    let short = short_digest(digest);
    let sources = locations.lock().expect("not poisoned").sources(
        client.registry(),
        &digest.to_string(),
        repository,
    );
    let bar = reporter.bar(&short, blob.blob.size);
    let what = format!("pushing blob {digest} to {}", target.repository_ref());
    let verified = AtomicBool::new(false);
    let outcome = with_retries(&client.retry, reporter, &what, || async {
        if client.blob_exists(repository, digest).await? {
            return Ok(Outcome::Existed);
        }
        let mut session = None;
        for source in sources.iter().take(MOUNT_ATTEMPTS) {
            match client.mount_blob(repository, digest, source).await? {
                Mount::Mounted => return Ok(Outcome::Mounted(source.clone())),
                Mount::Declined { location } => {
                    session = Some(location);
                    break;
                }
                Mount::Unavailable => {}
            }
        }
        // Checked once, before the first byte goes up.
        if !verified.swap(true, Ordering::Relaxed) {
            verify_local_blob(&image.store, &blob.blob)?;
        }
        client
            .upload_blob(repository, &image.store, &blob.blob, session, &bar)
            .await?;
        Ok(Outcome::Uploaded)
    })
    .await;
    bar.finish_and_clear();
    let outcome = outcome?;
    locations.lock().expect("not poisoned").record(
        client.registry(),
        &digest.to_string(),
        repository,
    );
    let size = human_size(blob.blob.size);
    reporter.line(&match outcome {
        Outcome::Existed => format!("{short} exists ({size})"),
        Outcome::Mounted(source) => format!("{short} mounted from {source} ({size})"),
        Outcome::Uploaded => format!("{short} uploaded ({size})"),
    });
    Ok(())
}

async fn put_manifest(
    client: &RegistryClient,
    repository: &str,
    reference: &str,
    image: &Image,
    manifest: &BlobRef,
    reporter: &Reporter,
) -> Result<()> {
    let bytes = image
        .store
        .read_small(manifest.digest())
        .context("cannot read a manifest to push")?;
    let what = format!(
        "pushing manifest {reference} to {}/{repository}",
        client.registry()
    );
    with_retries(&client.retry, reporter, &what, || {
        client.put_manifest(repository, reference, &bytes, &manifest.media_type)
    })
    .await
}

async fn put_by_digest(
    client: &RegistryClient,
    repository: &str,
    image: &Image,
    manifest: &BlobRef,
    reporter: &Reporter,
) -> Result<DigestPut> {
    let bytes = image
        .store
        .read_small(manifest.digest())
        .context("cannot read a manifest to push")?;
    let what = format!(
        "pushing manifest {} to {}/{repository}",
        manifest.digest(),
        client.registry()
    );
    with_retries(&client.retry, reporter, &what, || {
        client.put_manifest_by_digest(repository, &bytes, &manifest.media_type)
    })
    .await
}

fn short_digest(digest: &Digest) -> String {
    format!("sha256:{}", &digest.hex()[..12])
}

fn human_size(bytes: u64) -> String {
    match bytes {
        b if b >= 1 << 20 => format!("{:.1} MiB", b as f64 / (1 << 20) as f64),
        b if b >= 1 << 10 => format!("{:.1} KiB", b as f64 / (1 << 10) as f64),
        b => format!("{b} B"),
    }
}
