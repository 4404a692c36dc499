//! Pushing an image: blobs (skipped, mounted or uploaded), then manifests by
//! digest, then tags, so a tag never points at anything missing. Blobs go up
//! several at a time, and each platform's manifest as soon as its blobs are in.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use anyhow::{anyhow, Context as _, Result};
use futures_util::StreamExt;
use imgpack_blob::Digest;
use imgpack_image::{BlobRef, Image};
use imgpack_sign::Signer;

use crate::client::{verify_local_blob, DigestPut, Mount};
use crate::early::EarlyUploads;
use crate::progress::Reporter;
use crate::retry::with_retries;
use crate::signatures::sign_manifests;
use crate::RequestError;
use crate::{BlobLocations, ImageRef, RegistryClient};

/// Blobs up to this size are checked against their digest before their first
/// byte goes up (a second read costs nothing there); larger ones as they go up.
const VERIFY_FIRST: u64 = 4 << 20;

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
    UploadedEarly,
}

/// Pushes `image` to `target` and its extra `tags`; returns the root digest.
///
/// Order: every blob (skipped when present, mounted from another repository
/// of the registry where imgpack pushed it before, else uploaded); each
/// platform's manifest by digest as soon as its own blobs are there; then,
/// once all are, the root under each tag. A tag never points at anything
/// missing, and an interrupted push is finished by running it again: what
/// is there is skipped.
pub async fn push_image(
    client: &RegistryClient,
    target: &ImageRef,
    tags: &[String],
    image: &Image,
    options: &PushOptions,
    signer: Option<&dyn Signer>,
) -> Result<Digest> {
    let early = EarlyUploads::default();
    push_after(client, target, tags, image, options, signer, &early).await
}

/// [`push_image`] after `early` uploads (made while the layers were
/// written): the blobs they confirmed are not sent again, the others are
/// pushed from the store like any blob.
pub(crate) async fn push_after(
    client: &RegistryClient,
    target: &ImageRef,
    tags: &[String],
    image: &Image,
    options: &PushOptions,
    signer: Option<&dyn Signer>,
    early: &EarlyUploads,
) -> Result<Digest> {
    let reporter = Reporter::new(options.quiet);
    for failure in &early.failures {
        reporter.line(&format!(
            "an upload while its layer was written failed ({failure}); it goes up again from the staged blob"
        ));
    }
    let locations = Mutex::new(BlobLocations::load());
    let context = Context {
        client,
        target,
        image,
        reporter: &reporter,
        locations: &locations,
        early,
    };
    let pushed = push_blobs_and_manifests(&context, options).await;
    if let Err(err) = locations.lock().expect("not poisoned").save() {
        reporter.line(&format!(
            "warning: cannot save the blob location cache: {err:#}"
        ));
    }
    pushed?;

    // The root last, under each tag: a tag names it only once everything it references is there.
    let repository = target.repository();
    let mut tags_only = false;
    if let DigestPut::TagsOnly(refusal) =
        put_by_digest(client, repository, image, &image.root, &reporter).await?
    {
        if image.is_index() {
            return Err(tags_only_index(client, &refusal));
        }
        tags_only = true;
        // Its blobs are all there: the first tag cannot point at anything missing.
        reporter.line(&format!(
            "registry {} stores manifests only under tags: tagging directly",
            client.registry()
        ));
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
        let referrer_blobs = image.referrers.iter().flat_map(|r| &r.blobs).collect();
        push_blob_list(&context, referrer_blobs, options).await?;
        match crate::referrers::push_referrers(client, repository, image, &reporter).await? {
            Some(crate::ReferrersSupport::Api) => reporter.line(&format!(
                "attached {} referrers (referrers API)",
                image.referrers.len()
            )),
            Some(crate::ReferrersSupport::TagFallback) => {
                let mut tags: Vec<String> = Vec::new();
                for referrer in &image.referrers {
                    let tag = imgpack_image::referrers_tag(referrer.subject.digest());
                    if !tags.contains(&tag) {
                        tags.push(tag);
                    }
                }
                reporter.line(&format!(
                    "attached {} referrers (referrers tags {})",
                    image.referrers.len(),
                    tags.join(", ")
                ))
            }
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
    let tags: Vec<&str> = std::iter::once(target.tag())
        .chain(tags.iter().map(String::as_str))
        .collect();
    futures_util::future::try_join_all(
        tags.iter()
            .map(|tag| put_manifest(client, repository, tag, image, &image.root, &reporter)),
    )
    .await?;
    for tag in tags {
        reporter.line(&format!("tagged {}:{tag}", target.repository_ref()));
    }
    Ok(image.root.digest().clone())
}

/// Pushes `blobs` of the image's store (each once), `options.jobs` at a time.
async fn push_blob_list(
    context: &Context<'_>,
    blobs: Vec<&BlobRef>,
    options: &PushOptions,
) -> Result<()> {
    let mut seen = HashSet::new();
    let blobs: Vec<&BlobRef> = blobs
        .into_iter()
        .filter(|blob| seen.insert(blob.digest().clone()))
        .collect();
    let mut pushes = futures_util::stream::iter(blobs)
        .map(|blob| push_blob(context, blob))
        .buffer_unordered(options.jobs.max(1));
    while let Some(pushed) = pushes.next().await {
        pushed?;
    }
    Ok(())
}

/// What every blob push of one image shares.
struct Context<'a> {
    client: &'a RegistryClient,
    target: &'a ImageRef,
    image: &'a Image,
    reporter: &'a Reporter,
    locations: &'a Mutex<BlobLocations>,
    early: &'a EarlyUploads,
}

/// Pushes the blobs, `jobs` at a time; for an index, each platform's
/// manifest goes up (by digest) as soon as its layers and config are there,
/// while the other platforms' blobs are still moving.
async fn push_blobs_and_manifests(context: &Context<'_>, options: &PushOptions) -> Result<()> {
    let image = context.image;
    let mut missing: Vec<HashSet<&Digest>> = match image.is_index() {
        true => image
            .manifests
            .iter()
            .map(|m| {
                m.layers
                    .iter()
                    .chain([&m.config])
                    .map(BlobRef::digest)
                    .collect()
            })
            .collect(),
        // One manifest is the root: it goes up under its tags at the end.
        false => Vec::new(),
    };
    let mut blobs = futures_util::stream::iter(image.layer_and_config_blobs())
        .map(|blob| async move { push_blob(context, blob).await.map(|()| blob.digest()) })
        .buffer_unordered(options.jobs.max(1));
    let mut manifests = futures_util::stream::FuturesUnordered::new();
    let repository = context.target.repository();
    loop {
        tokio::select! {
            Some(pushed) = blobs.next() => {
                let digest = pushed?;
                for (platform, waiting) in missing.iter_mut().enumerate() {
                    if waiting.remove(digest) && waiting.is_empty() {
                        let manifest = &image.manifests[platform].manifest;
                        manifests.push(async move {
                            let client = context.client;
                            match put_by_digest(client, repository, image, manifest, context.reporter).await? {
                                DigestPut::Stored => Ok(()),
                                DigestPut::TagsOnly(refusal) => Err(tags_only_index(client, &refusal)),
                            }
                        });
                    }
                }
            }
            Some(put) = manifests.next() => put?,
            else => return Ok(()),
        }
    }
}

async fn push_blob(context: &Context<'_>, blob: &BlobRef) -> Result<()> {
    let Context {
        client,
        target,
        image,
        reporter,
        locations,
        early,
    } = *context;
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
        if early.uploaded.contains(digest) {
            return Ok(Outcome::UploadedEarly);
        }
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
        // Checked once, before the first byte goes up (larger blobs: while they go up).
        if blob.blob.size <= VERIFY_FIRST && !verified.swap(true, Ordering::Relaxed) {
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
        Outcome::UploadedEarly => format!("{short} uploaded while it was written ({size})"),
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
        .map_err(|err| err.context("cannot read a manifest to push"))?;
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

/// A registry that stores manifests under tags only cannot hold an index.
fn tags_only_index(client: &RegistryClient, refusal: &RequestError) -> anyhow::Error {
    anyhow!(
        "{refusal}: {} stores manifests only under tags, so it cannot hold a multi-platform \
         index, whose platform manifests are stored by digest; push a single-platform image to \
         it, or use another registry",
        client.registry()
    )
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
