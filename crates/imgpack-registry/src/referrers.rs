//! OCI 1.1 referrers (SBOMs, provenance) on a registry. A registry with the
//! referrers API says so by answering the artifact manifest's PUT with
//! `OCI-Subject`; for one without it (distribution 2.8, most registries
//! today) imgpack keeps the distribution spec's fallback, the `sha256-<hex>`
//! tag holding an index of the subject's referrers.
//!
//! The fallback index is read, merged (no entry already there is dropped)
//! and put back. The distribution API has no conditional PUT, so a push
//! racing ours can overwrite our update: after the put imgpack reads the
//! index again, twice with a pause between, and merges again whenever one of
//! its entries is gone.

use std::time::Duration;

use anyhow::{bail, Context, Result};
use imgpack_blob::{canonical_json, Digest};
use imgpack_image::{lists_all, merge_referrers, referrers_tag, Image, Referrer, OCI_INDEX};
use reqwest::header::ACCEPT;
use reqwest::{Method, StatusCode};
use serde_json::Value;

use crate::client::{push_scope, Timing};
use crate::limits::{read_limited, DOCUMENT_LIMIT};
use crate::progress::Reporter;
use crate::pull::pull_scope;
use crate::retry::with_retries;
use crate::runtime::block_on;
use crate::{connect, find_credentials, ImageRef, RegistryClient, RequestError, TransportOptions};

/// Merges tried before giving up on the fallback tag.
const MERGE_ATTEMPTS: usize = 6;
/// The pause before the second check that the merged index stayed must be
/// long enough for a racing push that read the index before our put to land
/// its own: that push's read and put take about as long as ours did, so the
/// pause is a few times ours, within these bounds (a fixed 300 ms was most of
/// a loopback push's time).
const SETTLE_PER_MERGE: u32 = 3;
const SETTLE_MIN: Duration = Duration::from_millis(10);
const SETTLE_MAX: Duration = Duration::from_secs(2);

/// The pause after a merge that took `merge`.
fn settle_after(merge: Duration) -> Duration {
    (merge * SETTLE_PER_MERGE).clamp(SETTLE_MIN, SETTLE_MAX)
}

/// Whether the registry implements the referrers API, as learnt from a PUT.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReferrersSupport {
    /// It answered with `OCI-Subject`: it indexes the referrers itself.
    Api,
    /// It did not: imgpack maintains the `sha256-<hex>` tag.
    TagFallback,
}

/// Pushes the image's referrers: their blobs, their manifests by digest, and
/// (for a registry without the referrers API) each subject's fallback tag.
pub(crate) async fn push_referrers(
    client: &RegistryClient,
    repository: &str,
    image: &Image,
    reporter: &Reporter,
) -> Result<Option<ReferrersSupport>> {
    if image.referrers.is_empty() {
        return Ok(None);
    }
    // The referrer manifests go up at once; their blobs are already there.
    let puts = image.referrers.iter().map(|referrer| async move {
        let bytes = image.store.read_small(referrer.manifest.digest())?;
        let reference = referrer.manifest.digest().to_string();
        let what = format!(
            "pushing referrer {reference} to {}/{repository}",
            client.registry()
        );
        let answered = with_retries(&client.retry, reporter, &what, || {
            client.put_manifest_with_subject(
                repository,
                &reference,
                &bytes,
                &referrer.manifest.media_type,
            )
        })
        .await?;
        Ok::<_, anyhow::Error>(answered.as_deref() == Some(&referrer.subject.digest().to_string()))
    });
    let indexed = futures_util::future::try_join_all(puts).await?;
    let groups = by_subject(&image.referrers);
    // Docker Hub answers with `OCI-Subject` but serves no referrers API: the
    // header is believed only once the API lists what was put.
    let support = if indexed.iter().all(|indexed| *indexed)
        && api_lists_all(client, repository, &groups, reporter).await?
    {
        ReferrersSupport::Api
    } else {
        ReferrersSupport::TagFallback
    };
    if support == ReferrersSupport::TagFallback {
        // One tag per subject, updated at once: each waits out its own settle pause.
        let updates = groups.iter().map(|(subject, descriptors)| {
            update_referrers_tag(client, repository, subject, descriptors, reporter)
        });
        futures_util::future::try_join_all(updates).await?;
    }
    Ok(Some(support))
}

/// Whether the referrers API lists every descriptor of `groups` under its subject.
async fn api_lists_all(
    client: &RegistryClient,
    repository: &str,
    groups: &[(Digest, Vec<Value>)],
    reporter: &Reporter,
) -> Result<bool> {
    for (subject, descriptors) in groups {
        let what = format!("checking the referrers API for {repository}@{subject}");
        let answered = with_retries(&client.retry, reporter, &what, || {
            client.referrers_api(repository, subject)
        })
        .await?;
        let listed = answered
            .and_then(|bytes| parse_index(&bytes).ok())
            .is_some_and(|index| lists_all(&index, descriptors));
        if !listed {
            reporter.line(&format!(
                "registry {} answered OCI-Subject but its referrers API does not list the \
                 referrers: keeping the sha256-<hex> tag too",
                client.registry()
            ));
            return Ok(false);
        }
    }
    Ok(true)
}

/// The referrers' descriptors grouped by subject, in first-seen order.
fn by_subject(referrers: &[Referrer]) -> Vec<(Digest, Vec<Value>)> {
    let mut groups: Vec<(Digest, Vec<Value>)> = Vec::new();
    for referrer in referrers {
        let subject = referrer.subject.digest().clone();
        match groups.iter_mut().find(|(s, _)| *s == subject) {
            Some((_, descriptors)) => descriptors.push(referrer.descriptor()),
            None => groups.push((subject, vec![referrer.descriptor()])),
        }
    }
    groups
}

/// Adds `descriptors` to the subject's `sha256-<hex>` index, keeping what is
/// there, and checks after the put that a racing push did not drop them.
async fn update_referrers_tag(
    client: &RegistryClient,
    repository: &str,
    subject: &Digest,
    descriptors: &[Value],
    reporter: &Reporter,
) -> Result<()> {
    let tag = referrers_tag(subject);
    let what = format!("updating the referrers tag {repository}:{tag}");
    for _ in 0..MERGE_ATTEMPTS {
        let merge_started = std::time::Instant::now();
        let existing =
            read_index(client, &push_scope(repository), repository, &tag, reporter).await?;
        let (index, added) = merge_referrers(existing.as_ref(), descriptors);
        if !added {
            // Listed already, and nothing was written that a racing push could undo.
            return Ok(());
        }
        let bytes = canonical_json(&index)?;
        with_retries(&client.retry, reporter, &what, || {
            client.put_manifest(repository, &tag, &bytes, OCI_INDEX)
        })
        .await?;
        if still_listed(client, repository, &tag, descriptors, reporter).await? {
            tokio::time::sleep(settle_after(merge_started.elapsed())).await;
            if still_listed(client, repository, &tag, descriptors, reporter).await? {
                return Ok(());
            }
        }
        reporter.line(&format!(
            "{repository}:{tag} changed under imgpack (another push?): merging again"
        ));
    }
    bail!(
        "the referrers tag {repository}:{tag} kept losing imgpack's entries to other pushes \
         ({MERGE_ATTEMPTS} merges): push again once the other pushes are done"
    )
}

async fn still_listed(
    client: &RegistryClient,
    repository: &str,
    tag: &str,
    descriptors: &[Value],
    reporter: &Reporter,
) -> Result<bool> {
    let now = read_index(client, &push_scope(repository), repository, tag, reporter).await?;
    Ok(now.is_some_and(|index| lists_all(&index, descriptors)))
}

/// The index at `tag`, `None` when there is no such tag.
async fn read_index(
    client: &RegistryClient,
    scope: &str,
    repository: &str,
    tag: &str,
    reporter: &Reporter,
) -> Result<Option<Value>> {
    let what = format!("reading the referrers tag {repository}:{tag}");
    let bytes = with_retries(&client.retry, reporter, &what, || {
        client.get_optional_index(scope, repository, tag)
    })
    .await?;
    // GitLab reads an absent `sha256-<hex>` tag as the digest `sha256:<hex>`:
    // the subject itself is no list of its referrers.
    let is_subject = |bytes: &Vec<u8>| referrers_tag(&Digest::of_bytes(bytes)) == tag;
    bytes
        .filter(|bytes| !is_subject(bytes))
        .map(|bytes| parse_index(&bytes))
        .transpose()
        .with_context(|| format!("{repository}:{tag} on registry {}", client.registry()))
}

fn parse_index(bytes: &[u8]) -> Result<Value> {
    let index: Value = serde_json::from_slice(bytes).context("it is not JSON")?;
    if !index["manifests"].is_array() {
        bail!("it is not an image index, so it cannot list referrers: delete the tag or push elsewhere");
    }
    Ok(index)
}

impl RegistryClient {
    /// `GET` of a tag or digest that may not exist: `None` on 404. `scope`:
    /// what the token is for (a push asks for pull,push once for all its requests).
    pub(crate) async fn get_optional_index(
        &self,
        scope: &str,
        repository: &str,
        reference: &str,
    ) -> Result<Option<Vec<u8>>, RequestError> {
        let url = self.endpoint(&format!("v2/{repository}/manifests/{reference}"));
        let what = format!("manifest {repository}:{reference}");
        self.get_document(scope, url, &what).await
    }

    async fn get_document(
        &self,
        scope: &str,
        url: url::Url,
        what: &str,
    ) -> Result<Option<Vec<u8>>, RequestError> {
        let scopes = [scope.to_owned()];
        let response = self
            .send(&scopes, Method::GET, url, Timing::Short, |r| {
                Ok(r.header(ACCEPT, OCI_INDEX))
            })
            .await?;
        match response.status() {
            StatusCode::OK => {}
            StatusCode::NOT_FOUND => return Ok(None),
            _ => {
                return Err(self
                    .status_error(response, &format!("fetching {what}"))
                    .await)
            }
        }
        let name = format!("the {what} from registry {}", self.registry);
        Ok(Some(read_limited(response, DOCUMENT_LIMIT, &name).await?))
    }

    /// The referrers API (`GET /v2/<name>/referrers/<digest>`): the index it
    /// answers, `None` when the registry does not implement it (404).
    pub(crate) async fn referrers_api(
        &self,
        repository: &str,
        subject: &Digest,
    ) -> Result<Option<Vec<u8>>, RequestError> {
        let url = self.endpoint(&format!("v2/{repository}/referrers/{subject}"));
        let what = format!("referrers of {repository}@{subject}");
        self.get_document(&pull_scope(repository), url, &what).await
    }
}

/// The referrers of `subject` in `repository`: the descriptors (with
/// `artifactType` and annotations) from the referrers API, or from the
/// `sha256-<hex>` fallback tag on a registry without it; `artifact_type`
/// filters them.
pub async fn list_referrers(
    client: &RegistryClient,
    repository: &str,
    subject: &Digest,
    artifact_type: Option<&str>,
) -> Result<Vec<Value>> {
    let reporter = &client.reporter;
    let what = format!("listing the referrers of {repository}@{subject}");
    let from_api = with_retries(&client.retry, reporter, &what, || {
        client.referrers_api(repository, subject)
    })
    .await?;
    let index = match from_api {
        Some(bytes) => Some(parse_index(&bytes).with_context(|| what.clone())?),
        None => {
            let tag = referrers_tag(subject);
            read_index(client, &pull_scope(repository), repository, &tag, reporter).await?
        }
    };
    let manifests = index
        .and_then(|index| index["manifests"].as_array().cloned())
        .unwrap_or_default();
    Ok(manifests
        .into_iter()
        .filter(|m| artifact_type.is_none_or(|wanted| m["artifactType"] == wanted))
        .collect())
}

/// [`list_referrers`] for `reference`'s repository, connecting with the
/// stored credentials: what `imgpack verify` reads.
pub fn referrers_of(
    reference: &ImageRef,
    subject: &Digest,
    artifact_type: Option<&str>,
    transport: &TransportOptions,
) -> Result<Vec<Value>> {
    block_on(async {
        let credentials = find_credentials(&reference.credential_keys());
        let client = connect(reference.api_host(), transport, credentials).await?;
        list_referrers(&client, reference.repository(), subject, artifact_type).await
    })
}
