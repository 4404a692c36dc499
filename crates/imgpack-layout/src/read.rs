//! Reading an image back from an OCI layout (for `imgpack push`), checking
//! that every blob it references is there.

use std::path::Path;

use anyhow::{bail, Context, Result};
use imgpack_blob::{BlobInfo, BlobStore, Digest};
use imgpack_image::{BlobRef, Image, PlatformManifest, Referrer, REF_NAME_ANNOTATION};
use imgpack_platform::Platform;
use serde_json::Value;

use crate::dir::split_path_and_tag;

/// Reads the image tagged `TAG` (default `latest`) from `DIR[:TAG]`, checking
/// that every blob it references is present.
pub fn read_layout_image(spec: &str) -> Result<Image> {
    let (dir, tag) = split_path_and_tag(spec);
    let tag = tag.unwrap_or("latest");
    let dir = Path::new(dir);
    let index: Value = read_json(&dir.join("index.json"))
        .with_context(|| format!("{} is not an OCI layout", dir.display()))?;
    let entries = index["manifests"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default();
    let tagged: Vec<&Value> = entries
        .iter()
        .filter(|e| e["annotations"][REF_NAME_ANNOTATION] == tag)
        .collect();
    if tagged.len() > 1 {
        let digests: Vec<String> = tagged
            .iter()
            .map(|e| match e["digest"].as_str().and_then(Digest::parse) {
                Some(digest) => digest.to_string(),
                None => "(no sha256 digest)".to_owned(),
            })
            .collect();
        bail!(
            "{}: index.json gives the tag '{tag}' to {} manifests ({}): a tag names one image; \
             remove the extra entries or write the layout again",
            dir.display(),
            tagged.len(),
            digests.join(", ")
        );
    }
    let Some(entry) = tagged.first().copied() else {
        let tags: Vec<&str> = entries
            .iter()
            .filter_map(|e| e["annotations"][REF_NAME_ANNOTATION].as_str())
            .collect();
        bail!(
            "no tag '{tag}' in {} (it has: {})",
            dir.display(),
            tags.join(", ")
        );
    };
    let store = BlobStore::open(dir)?;
    let root = blob_ref(&store, entry)?;
    let document: Value = serde_json::from_slice(&read_checked(&store, root.digest())?)?;
    let manifests = match document["manifests"].as_array() {
        Some(children) => children
            .iter()
            .map(|child| platform_manifest(&store, blob_ref(&store, child)?, platform_of(child)?))
            .collect::<Result<Vec<_>>>()?,
        None => {
            let config: Value =
                serde_json::from_slice(&read_checked(&store, &config_digest(&document)?)?)?;
            let platform = platform_of(&serde_json::json!({ "platform": config }))?;
            vec![platform_manifest(&store, root.clone(), platform)?]
        }
    };
    let mut subjects = vec![&root];
    subjects.extend(manifests.iter().map(|m| &m.manifest));
    let referrers = layout_referrers(&store, entries, &subjects)?;
    Ok(Image {
        store,
        root,
        manifests,
        referrers,
    })
}

/// The referrers of `digest` listed in the layout `dir`'s index.json: the
/// descriptors of the artifact manifests whose subject it is (what the
/// registry's referrers API answers), each with its `artifactType`.
pub fn list_layout_referrers(dir: &Path, digest: &Digest) -> Result<Vec<Value>> {
    let index: Value = read_json(&dir.join("index.json"))
        .with_context(|| format!("{} is not an OCI layout", dir.display()))?;
    let store = BlobStore::open(dir)?;
    let entries = index["manifests"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default();
    let mut found = Vec::new();
    for entry in entries.iter().filter(|e| e["artifactType"].is_string()) {
        let Some((manifest, _)) = artifact_manifest(&store, entry)? else {
            continue;
        };
        if manifest["subject"]["digest"].as_str() == Some(&digest.to_string()) {
            found.push(entry.clone());
        }
    }
    Ok(found)
}

/// An index entry's artifact manifest and its descriptor, if it is one.
fn artifact_manifest(store: &BlobStore, entry: &Value) -> Result<Option<(Value, BlobRef)>> {
    let descriptor = blob_ref(store, entry)?;
    let manifest: Value = serde_json::from_slice(&read_checked(store, descriptor.digest())?)?;
    Ok(manifest["subject"]
        .is_object()
        .then_some((manifest, descriptor)))
}

/// The referrers in `entries` whose subject is one of `subjects`, with every blob checked present.
fn layout_referrers(
    store: &BlobStore,
    entries: &[Value],
    subjects: &[&BlobRef],
) -> Result<Vec<Referrer>> {
    let mut referrers = Vec::new();
    for entry in entries.iter().filter(|e| e["artifactType"].is_string()) {
        let Some((manifest, descriptor)) = artifact_manifest(store, entry)? else {
            continue;
        };
        let Some(subject) = subjects
            .iter()
            .find(|s| manifest["subject"]["digest"].as_str() == Some(&s.digest().to_string()))
        else {
            continue;
        };
        let mut blobs = vec![blob_ref(store, &manifest["config"])?];
        for layer in manifest["layers"].as_array().into_iter().flatten() {
            blobs.push(blob_ref(store, layer)?);
        }
        let annotations = manifest["annotations"]
            .as_object()
            .into_iter()
            .flatten()
            .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_owned())))
            .collect();
        referrers.push(Referrer {
            subject: (*subject).clone(),
            artifact_type: entry["artifactType"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
            manifest: descriptor,
            blobs,
            annotations,
        });
    }
    Ok(referrers)
}

fn platform_manifest(
    store: &BlobStore,
    manifest: BlobRef,
    platform: Platform,
) -> Result<PlatformManifest> {
    let document: Value = serde_json::from_slice(&read_checked(store, manifest.digest())?)?;
    let config = blob_ref(store, &document["config"])?;
    let layers = document["layers"]
        .as_array()
        .context("a manifest has no layers list")?
        .iter()
        .map(|layer| blob_ref(store, layer))
        .collect::<Result<Vec<_>>>()?;
    Ok(PlatformManifest {
        platform,
        manifest,
        config,
        layers,
    })
}

fn config_digest(manifest: &Value) -> Result<Digest> {
    manifest["config"]["digest"]
        .as_str()
        .and_then(Digest::parse)
        .context("a manifest has no config digest")
}

/// A descriptor as a [`BlobRef`], after checking that its blob is in the layout.
fn blob_ref(store: &BlobStore, descriptor: &Value) -> Result<BlobRef> {
    let digest = descriptor["digest"]
        .as_str()
        .and_then(Digest::parse)
        .context("a descriptor has no sha256 digest")?;
    let size = descriptor["size"]
        .as_u64()
        .context("a descriptor has no size")?;
    let media_type = descriptor["mediaType"]
        .as_str()
        .context("a descriptor has no media type")?
        .to_owned();
    let on_disk = std::fs::metadata(store.path(&digest)).map(|m| m.len()).ok();
    if on_disk != Some(size) {
        bail!(
            "blob {digest} is missing or has the wrong size in {}",
            store.root().display()
        );
    }
    Ok(BlobRef {
        media_type,
        blob: BlobInfo { digest, size },
    })
}

/// The platform of an index entry (or, for a lone manifest, of its config).
fn platform_of(entry: &Value) -> Result<Platform> {
    let platform = &entry["platform"];
    let os = platform["os"].as_str().unwrap_or_default();
    let arch = platform["architecture"].as_str().unwrap_or_default();
    let text = match platform["variant"].as_str() {
        Some(variant) => format!("{os}/{arch}/{variant}"),
        None => format!("{os}/{arch}"),
    };
    Ok(text.parse()?)
}

/// A manifest, index or config of the layout, checked against its digest.
fn read_checked(store: &BlobStore, digest: &Digest) -> Result<Vec<u8>> {
    store
        .read_small(digest)
        .map_err(|err| anyhow::anyhow!("{err:#}: write the layout again"))
}

fn read_json(path: &Path) -> Result<Value> {
    let bytes = imgpack_blob::read_local_file(path, &imgpack_blob::local_file::LAYOUT_DOCUMENT)?;
    serde_json::from_slice(&bytes).with_context(|| format!("{} is not valid JSON", path.display()))
}
