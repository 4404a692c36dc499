//! OCI 1.1 referrers: artifact manifests (an SBOM, a provenance statement)
//! whose `subject` is one of the image's manifests. They are not part of the
//! image (its digest does not change); sinks that can hold them store them
//! beside it and make them findable from the subject.

use std::collections::BTreeMap;

use anyhow::Result;
use imgpack_blob::{canonical_json, BlobStore, Digest};
use serde_json::{json, Value};

use crate::BlobRef;

/// OCI's empty descriptor: the config of an artifact manifest that has none.
pub const EMPTY_MEDIA_TYPE: &str = "application/vnd.oci.empty.v1+json";
pub const EMPTY_JSON: &[u8] = b"{}";
const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// The OCI index type, used for the referrers tag and the referrers API's answers.
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";

/// One artifact attached to a manifest of the image.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Referrer {
    /// The manifest it describes.
    pub subject: BlobRef,
    pub artifact_type: String,
    /// The artifact manifest.
    pub manifest: BlobRef,
    /// Its config (the empty blob) and its one layer, the document.
    pub blobs: Vec<BlobRef>,
    pub annotations: BTreeMap<String, String>,
}

impl Referrer {
    /// The descriptor of the artifact manifest as a referrers index lists it
    /// (with `artifactType` and the manifest's annotations).
    pub fn descriptor(&self) -> Value {
        let mut descriptor = json!({
            "mediaType": self.manifest.media_type,
            "digest": self.manifest.digest().to_string(),
            "size": self.manifest.blob.size,
            "artifactType": self.artifact_type,
        });
        if !self.annotations.is_empty() {
            descriptor["annotations"] = json!(self.annotations);
        }
        descriptor
    }
}

/// Writes `document` and an artifact manifest for it (type `artifact_type`,
/// layer type `layer_media_type`, `subject` = `subject`) into `store`.
pub fn attach(
    store: &BlobStore,
    subject: &BlobRef,
    artifact_type: &str,
    layer_media_type: &str,
    document: &[u8],
    annotations: BTreeMap<String, String>,
) -> Result<Referrer> {
    let config = BlobRef {
        media_type: EMPTY_MEDIA_TYPE.to_owned(),
        blob: store.write_bytes(EMPTY_JSON)?,
    };
    let layer = BlobRef {
        media_type: layer_media_type.to_owned(),
        blob: store.write_bytes(document)?,
    };
    let plain = |blob: &BlobRef| {
        json!({
            "mediaType": blob.media_type,
            "digest": blob.digest().to_string(),
            "size": blob.blob.size,
        })
    };
    let mut manifest = json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": artifact_type,
        "config": plain(&config),
        "layers": [plain(&layer)],
        "subject": plain(subject),
    });
    if !annotations.is_empty() {
        manifest["annotations"] = json!(annotations);
    }
    let manifest = BlobRef {
        media_type: OCI_MANIFEST.to_owned(),
        blob: store.write_bytes(&canonical_json(&manifest)?)?,
    };
    Ok(Referrer {
        subject: subject.clone(),
        artifact_type: artifact_type.to_owned(),
        manifest,
        blobs: vec![config, layer],
        annotations,
    })
}

/// The referrers tag of the distribution spec's fallback: `sha256-<hex>`.
pub fn referrers_tag(subject: &Digest) -> String {
    format!("sha256-{}", subject.hex())
}

/// Adds `descriptors` to a referrers index (`existing`, or a new one),
/// keeping every entry already there and adding none twice (by digest).
/// Returns the index and whether anything was added.
pub fn merge_referrers(existing: Option<&Value>, descriptors: &[Value]) -> (Value, bool) {
    let mut index = match existing {
        Some(value) if value["manifests"].is_array() => value.clone(),
        _ => json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": []}),
    };
    let manifests = index["manifests"].as_array_mut().expect("checked above");
    let mut added = false;
    for descriptor in descriptors {
        if !manifests
            .iter()
            .any(|m| m["digest"] == descriptor["digest"])
        {
            manifests.push(descriptor.clone());
            added = true;
        }
    }
    (index, added)
}

/// Whether every descriptor (by digest) is listed in `index`.
pub fn lists_all(index: &Value, descriptors: &[Value]) -> bool {
    let listed = index["manifests"].as_array();
    descriptors.iter().all(|d| {
        listed.is_some_and(|manifests| manifests.iter().any(|m| m["digest"] == d["digest"]))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_artifact_manifest_names_its_subject_and_type() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(dir.path()).unwrap();
        let subject = BlobRef {
            media_type: OCI_MANIFEST.into(),
            blob: store.write_bytes(b"{\"a\":1}").unwrap(),
        };
        let referrer = attach(
            &store,
            &subject,
            "application/spdx+json",
            "application/spdx+json",
            b"{}",
            BTreeMap::new(),
        )
        .unwrap();
        let manifest: Value =
            serde_json::from_slice(&store.read_small(referrer.manifest.digest()).unwrap()).unwrap();
        assert_eq!(manifest["artifactType"], "application/spdx+json");
        assert_eq!(manifest["subject"]["digest"], subject.digest().to_string());
        assert_eq!(manifest["config"]["mediaType"], EMPTY_MEDIA_TYPE);
        assert_eq!(
            manifest["config"]["digest"],
            "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"
        );
        assert_eq!(
            referrer.descriptor()["artifactType"],
            "application/spdx+json"
        );
    }

    #[test]
    fn merging_keeps_entries_and_adds_none_twice() {
        let a = json!({"digest": "sha256:a", "mediaType": OCI_MANIFEST, "size": 1});
        let b = json!({"digest": "sha256:b", "mediaType": OCI_MANIFEST, "size": 1});
        let (first, added) = merge_referrers(None, std::slice::from_ref(&a));
        assert!(added);
        let (second, added) = merge_referrers(Some(&first), &[a.clone(), b.clone()]);
        assert!(added);
        assert_eq!(second["manifests"].as_array().unwrap().len(), 2);
        let (_, added) = merge_referrers(Some(&second), std::slice::from_ref(&b));
        assert!(!added);
        assert!(lists_all(&second, &[a, b.clone()]));
        assert!(!lists_all(&first, &[b]));
    }
}
