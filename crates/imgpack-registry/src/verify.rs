//! `imgpack verify`: resolves a reference to its manifest (and, for an
//! index, each platform's), and checks each one's cosign signatures against
//! a public key and the repository's identity.

use anyhow::{bail, Context, Result};
use imgpack_blob::Digest;
use imgpack_sign::{check_signatures, PublicKey, Refusal};
use oci_spec::distribution::Reference;
use serde_json::Value;

use crate::limits::DOCUMENT_LIMIT;
use crate::retry::with_retries;
use crate::runtime::block_on;
use crate::{connect, find_credentials, hub, RegistryClient, TransportOptions};

/// Most platform manifests one index may list for verify.
const MAX_PLATFORMS: usize = 256;

/// One checked manifest.
#[derive(Clone, Debug)]
pub struct Checked {
    pub digest: Digest,
    /// `os/architecture[/variant]` of an index entry; None for the root.
    pub platform: Option<String>,
    /// How many valid signatures, or why there is none.
    pub outcome: std::result::Result<usize, Refusal>,
}

/// A referrer of a platform manifest (an SBOM, a provenance attestation).
#[derive(Clone, Debug)]
pub struct Attachment {
    /// The platform manifest it is listed for, and that manifest's platform.
    pub subject: Digest,
    pub platform: Option<String>,
    pub artifact_type: String,
    /// The artifact manifest's digest (checked against what the registry sent).
    pub manifest: Digest,
    /// Whether the artifact manifest's own `subject` is the manifest it is listed for.
    pub names_subject: bool,
    /// For in-toto attachments, the first layer (the DSSE envelope), digest-checked.
    pub document: Option<Vec<u8>>,
}

/// What `imgpack verify` found.
#[derive(Clone, Debug)]
pub struct Verification {
    /// `registry/repository`: the identity signatures must name.
    pub repository: String,
    pub root: Digest,
    /// The root first, then each platform manifest of an index.
    pub manifests: Vec<Checked>,
    /// The referrers of each platform manifest.
    pub attachments: Vec<Attachment>,
}

/// The artifact type whose documents are read (DSSE envelopes to check).
const IN_TOTO: &str = "application/vnd.in-toto+json";

/// Verifies the signatures of `reference` (by tag or digest) with `key`.
pub fn verify_signatures(
    reference: &str,
    key: &PublicKey,
    transport: &TransportOptions,
) -> Result<Verification> {
    block_on(verify(reference, key, transport))
}

async fn verify(text: &str, key: &PublicKey, transport: &TransportOptions) -> Result<Verification> {
    let reference: Reference = text.parse().with_context(|| {
        format!(
            "bad image reference '{}': use REGISTRY/REPOSITORY:TAG or @sha256:…",
            text.escape_debug()
        )
    })?;
    let repository = reference.repository().to_owned();
    let identity = format!("{}/{}", reference.registry(), repository);
    let credentials = find_credentials(&hub::credential_keys(reference.registry()));
    let client = connect(reference.resolve_registry(), transport, credentials).await?;
    let wanted = reference
        .digest()
        .map(str::to_owned)
        .unwrap_or_else(|| reference.tag().unwrap_or("latest").to_owned());
    let (root, entries) = resolve(&client, &repository, &wanted).await?;
    if let Some(pinned) = reference.digest() {
        if root.to_string() != pinned {
            bail!(
                "registry {} sent a manifest hashing to {root} for {pinned}: refused",
                client.registry()
            );
        }
    }
    let platforms: Vec<(Digest, Option<String>)> = match entries.is_empty() {
        true => vec![(root.clone(), None)],
        false => entries.clone(),
    };
    let mut manifests = Vec::new();
    for (digest, platform) in std::iter::once((root.clone(), None)).chain(entries) {
        let signed = crate::signatures::read_signatures(&client, &repository, &digest).await?;
        let outcome = check_signatures(&signed, key, &identity, &digest);
        manifests.push(Checked {
            digest,
            platform,
            outcome,
        });
    }
    let mut attachments = Vec::new();
    for (subject, platform) in platforms {
        let listed = crate::referrers::list_referrers(&client, &repository, &subject, None).await?;
        for descriptor in listed {
            let attachment = attachment(&client, &repository, &subject, &descriptor).await?;
            attachments.push(Attachment {
                platform: platform.clone(),
                ..attachment
            });
        }
    }
    Ok(Verification {
        repository: identity,
        root,
        manifests,
        attachments,
    })
}

/// Reads the artifact manifest a referrers listing names: its digest
/// checked, its subject compared, and for in-toto its document fetched.
async fn attachment(
    client: &RegistryClient,
    repository: &str,
    subject: &Digest,
    descriptor: &Value,
) -> Result<Attachment> {
    let digest = descriptor
        .get("digest")
        .and_then(Value::as_str)
        .and_then(Digest::parse)
        .with_context(|| format!("a referrer of {subject} has no sha256 digest"))?;
    let artifact_type = descriptor
        .get("artifactType")
        .and_then(Value::as_str)
        .unwrap_or("(none)")
        .to_owned();
    let reporter = &client.reporter;
    let what = format!("fetching referrer {digest}");
    let reference = digest.to_string();
    let (bytes, _) = with_retries(&client.retry, reporter, &what, || {
        client.get_manifest(repository, &reference)
    })
    .await?;
    if Digest::of_bytes(&bytes) != digest {
        bail!(
            "registry {} sent a referrer manifest that does not hash to {digest}: refused",
            client.registry()
        );
    }
    let manifest: Value =
        serde_json::from_slice(&bytes).with_context(|| format!("referrer {digest} is not JSON"))?;
    let names_subject = manifest["subject"]["digest"].as_str() == Some(&subject.to_string());
    let mut document = None;
    if artifact_type == IN_TOTO {
        let layer = &manifest["layers"][0];
        let blob = layer["digest"]
            .as_str()
            .and_then(Digest::parse)
            .zip(layer["size"].as_u64())
            .map(|(digest, size)| imgpack_blob::BlobInfo { digest, size })
            .with_context(|| format!("referrer {digest} has no layer with a digest and a size"))?;
        if blob.size > DOCUMENT_LIMIT {
            bail!("the provenance of {subject} is larger than the 4 MiB imgpack reads");
        }
        let what = format!("fetching the provenance {}", blob.digest);
        document = Some(
            with_retries(&client.retry, reporter, &what, || {
                client.small_blob(repository, &blob)
            })
            .await?,
        );
    }
    Ok(Attachment {
        subject: subject.clone(),
        platform: None,
        artifact_type,
        manifest: digest,
        names_subject,
        document,
    })
}

/// The root manifest's digest (computed here, not taken from the registry)
/// and, for an index, its entries with their platforms.
async fn resolve(
    client: &RegistryClient,
    repository: &str,
    reference: &str,
) -> Result<(Digest, Vec<(Digest, Option<String>)>)> {
    let reporter = &client.reporter;
    let what = format!("fetching {repository}:{reference}");
    let (bytes, _) = with_retries(&client.retry, reporter, &what, || {
        client.get_manifest(repository, reference)
    })
    .await?;
    let root = Digest::of_bytes(&bytes);
    let value: Value = serde_json::from_slice(&bytes)
        .with_context(|| format!("the manifest of {repository}:{reference} is not JSON"))?;
    let Some(entries) = value.get("manifests").and_then(Value::as_array) else {
        return Ok((root, Vec::new()));
    };
    if entries.len() > MAX_PLATFORMS {
        bail!("the index of {repository}:{reference} lists {} manifests, more than the {MAX_PLATFORMS} imgpack verifies", entries.len());
    }
    let mut manifests = Vec::new();
    for entry in entries {
        let digest = entry
            .get("digest")
            .and_then(Value::as_str)
            .and_then(Digest::parse)
            .with_context(|| {
                format!("an entry of the index of {repository}:{reference} has no sha256 digest")
            })?;
        let platform = entry.get("platform").map(|p| {
            let part = |name: &str| {
                p.get(name)
                    .and_then(Value::as_str)
                    .unwrap_or("?")
                    .to_owned()
            };
            let mut text = format!("{}/{}", part("os"), part("architecture"));
            if let Some(variant) = p.get("variant").and_then(Value::as_str) {
                text = format!("{text}/{variant}");
            }
            text
        });
        manifests.push((
            digest,
            Some(platform.unwrap_or_else(|| "unknown platform".into())),
        ));
    }
    Ok((root, manifests))
}
