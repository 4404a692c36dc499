//! Cosign signatures on a registry: signing pushed manifests (payload blob,
//! config, then the `sha256-<hex>.sig` manifest, appending to what is
//! there) and reading them back for `imgpack verify`. Every byte read is
//! bounded and checked against its digest.

use anyhow::{Context, Result};
use imgpack_blob::{BlobInfo, BlobStore, Digest};
use imgpack_sign::cosign::{MANIFEST_MEDIA_TYPE, MAX_PAYLOAD_SIZE};
use imgpack_sign::{signature_tag, simple_signing_payload, SignatureImage, SignatureLayer, Signer};
use indicatif::ProgressBar;
use reqwest::header::ACCEPT;
use reqwest::{Method, StatusCode};

use crate::client::{push_scope, Timing};
use crate::errors::RequestError;
use crate::limits::{read_limited, DOCUMENT_LIMIT};
use crate::progress::Reporter;
use crate::pull::pull_scope;
use crate::retry::with_retries;
use crate::RegistryClient;

/// Signs each of `digests` (manifests already in `repository`) for the
/// identity `identity` (`registry/repository`); `store` holds the new blobs
/// on their way up. A manifest already signed by the signer's key is left
/// as it is.
pub(crate) async fn sign_manifests(
    client: &RegistryClient,
    repository: &str,
    identity: &str,
    digests: &[Digest],
    signer: &dyn Signer,
    store: &BlobStore,
    reporter: &Reporter,
) -> Result<()> {
    for digest in digests {
        let tag = signature_tag(digest);
        let what = format!("reading the signatures of {digest}");
        let existing = with_retries(&client.retry, reporter, &what, || {
            client.signature_image(repository, &tag, true)
        })
        .await?;
        let mut image = existing.unwrap_or_default();
        let payload = simple_signing_payload(identity, digest);
        let payload_blob = store.write_bytes(&payload)?;
        if let Some(key) = signer.public_key() {
            if image.holds(&payload_blob, |signature| key.verifies(&payload, signature)) {
                reporter.line(&format!("{} already signed with this key", short(digest)));
                continue;
            }
        }
        let signature = signer
            .sign(&payload)
            .with_context(|| format!("cannot sign {digest}"))?;
        image.push(SignatureLayer::new(payload_blob.clone(), &signature));
        let config = store.write_bytes(&image.config())?;
        for blob in [&payload_blob, &config] {
            push_small_blob(client, repository, store, blob, reporter).await?;
        }
        let manifest = image.manifest(&config);
        let what = format!(
            "pushing signature {tag} to {}/{repository}",
            client.registry()
        );
        with_retries(&client.retry, reporter, &what, || {
            client.put_manifest(repository, &tag, &manifest, MANIFEST_MEDIA_TYPE)
        })
        .await?;
        reporter.line(&format!(
            "signed {} with {} ({tag})",
            short(digest),
            signer.describe()
        ));
    }
    Ok(())
}

async fn push_small_blob(
    client: &RegistryClient,
    repository: &str,
    store: &BlobStore,
    blob: &BlobInfo,
    reporter: &Reporter,
) -> Result<()> {
    let what = format!("pushing signature blob {}", blob.digest);
    with_retries(&client.retry, reporter, &what, || async {
        if client.blob_exists(repository, &blob.digest).await? {
            return Ok(());
        }
        let bar = ProgressBar::hidden();
        client
            .upload_blob(repository, store, blob, None, &bar)
            .await
    })
    .await
}

/// The simple-signing layers of `digest`'s `.sig` image with their payloads
/// (empty when it has none), for [`imgpack_sign::check_signatures`].
pub async fn read_signatures(
    client: &RegistryClient,
    repository: &str,
    digest: &Digest,
) -> Result<Vec<(SignatureLayer, Vec<u8>)>> {
    let tag = signature_tag(digest);
    let reporter = &client.reporter;
    let what = format!("reading the signatures of {digest}");
    let Some(image) = with_retries(&client.retry, reporter, &what, || {
        client.signature_image(repository, &tag, false)
    })
    .await?
    else {
        return Ok(Vec::new());
    };
    let mut signed = Vec::new();
    for layer in image
        .layers
        .into_iter()
        .filter(SignatureLayer::is_simple_signing)
    {
        if layer.blob.size > MAX_PAYLOAD_SIZE {
            // Not a payload cosign would write; never read.
            continue;
        }
        let what = format!("reading signature payload {}", layer.blob.digest);
        let payload = with_retries(&client.retry, reporter, &what, || {
            client.small_blob(repository, &layer.blob)
        })
        .await?;
        signed.push((layer, payload));
    }
    Ok(signed)
}

impl RegistryClient {
    /// The `.sig` image at `tag`, or None when the tag does not exist; read
    /// with push rights when it is about to be extended.
    async fn signature_image(
        &self,
        repository: &str,
        tag: &str,
        for_push: bool,
    ) -> Result<Option<SignatureImage>, RequestError> {
        let url = self.endpoint(&format!("v2/{repository}/manifests/{tag}"));
        let scope = match for_push {
            true => push_scope(repository),
            false => pull_scope(repository),
        };
        let response = self
            .send(&[scope], Method::GET, url, Timing::Short, |r| {
                Ok(r.header(ACCEPT, MANIFEST_MEDIA_TYPE))
            })
            .await?;
        match response.status() {
            StatusCode::OK => {}
            StatusCode::NOT_FOUND => return Ok(None),
            _ => {
                let what = format!("fetching signature manifest {repository}:{tag}");
                return Err(self.status_error(response, &what).await);
            }
        }
        let name = format!(
            "the signature manifest {repository}:{tag} from registry {}",
            self.registry
        );
        let bytes = read_limited(response, DOCUMENT_LIMIT, &name).await?;
        SignatureImage::parse(&bytes)
            .map(Some)
            .map_err(|err| RequestError::fatal(format!("registry {}: {err:#}", self.registry)))
    }

    /// A small blob, read whole: at most its descriptor's size, and only
    /// when it hashes to its digest.
    pub(crate) async fn small_blob(
        &self,
        repository: &str,
        blob: &BlobInfo,
    ) -> Result<Vec<u8>, RequestError> {
        let url = self.endpoint(&format!("v2/{repository}/blobs/{}", blob.digest));
        let response = self
            .send(
                &[pull_scope(repository)],
                Method::GET,
                url,
                Timing::Short,
                Ok,
            )
            .await?;
        if response.status() != StatusCode::OK {
            return Err(self
                .status_error(response, "fetching a signature payload")
                .await);
        }
        let name = format!("blob {} from registry {}", blob.digest, self.registry);
        let bytes = read_limited(response, blob.size, &name).await?;
        if Digest::of_bytes(&bytes) != blob.digest {
            return Err(RequestError::fatal(format!(
                "registry {} sent content for {} that hashes to something else: refused",
                self.registry, blob.digest
            )));
        }
        Ok(bytes)
    }
}

fn short(digest: &Digest) -> String {
    format!("sha256:{}", &digest.hex()[..12])
}
