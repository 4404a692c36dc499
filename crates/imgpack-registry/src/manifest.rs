//! Manifests and indexes a registry sends, checked rather than guessed: the
//! Content-Type and the document's `mediaType` must agree, a document is an
//! index or a manifest but never both (the CVE-2021-41190 class), every
//! descriptor has a sha256 digest and a size, and only layer types imgpack
//! can read are accepted.

use anyhow::{bail, Context, Result};
use imgpack_blob::{BlobInfo, Digest};
use serde_json::Value;

use crate::errors::printable;

pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";

/// Layer media types imgpack reads (to check a base's files and diff IDs).
pub const LAYER_TYPES: [&str; 5] = [
    "application/vnd.oci.image.layer.v1.tar",
    "application/vnd.oci.image.layer.v1.tar+gzip",
    "application/vnd.oci.image.layer.v1.tar+zstd",
    "application/vnd.docker.image.rootfs.diff.tar",
    "application/vnd.docker.image.rootfs.diff.tar.gzip",
];

/// More entries than any real image has: a bound on what one document may list.
const MAX_ENTRIES: usize = 4096;

/// A descriptor: what a document says about a blob it points at.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Descriptor {
    pub media_type: String,
    pub blob: BlobInfo,
    /// `os/architecture[/variant]` of an index entry.
    pub platform: Option<String>,
}

/// A checked document.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Document {
    Index {
        manifests: Vec<Descriptor>,
    },
    Manifest {
        config: Descriptor,
        layers: Vec<Descriptor>,
    },
}

/// Checks `bytes` served with `content_type` (None for a cached document).
pub fn parse_document(bytes: &[u8], content_type: Option<&str>) -> Result<Document> {
    let value: Value =
        serde_json::from_slice(bytes).context("the registry sent a manifest that is not JSON")?;
    let Some(object) = value.as_object() else {
        bail!("the registry sent a manifest that is not a JSON object");
    };
    let has_manifests = object.contains_key("manifests");
    let has_image = object.contains_key("layers") || object.contains_key("config");
    if has_manifests && has_image {
        bail!("the registry sent a document that is both an index and a manifest (it has `manifests` and `layers`/`config`): refused as ambiguous");
    }
    let declared = object
        .get("mediaType")
        .map(|v| v.as_str().unwrap_or("(not a string)"));
    let served = content_type
        .map(|t| t.split(';').next().unwrap_or("").trim())
        .filter(|t| !t.is_empty() && !is_generic(t));
    let media_type = match (declared, served) {
        (Some(declared), Some(served)) if declared != served => bail!(
            "the registry served a manifest as {} whose mediaType says {}: refused, they must agree",
            printable(served),
            printable(declared)
        ),
        (Some(declared), _) => declared,
        (None, Some(served)) => served,
        // OCI allows leaving mediaType out: the structure decides.
        (None, None) if has_manifests => OCI_INDEX,
        (None, None) => OCI_MANIFEST,
    };
    match media_type {
        OCI_INDEX | DOCKER_LIST => {
            if has_image {
                bail!("the registry sent an index ({media_type}) with layers: refused");
            }
            Ok(Document::Index {
                manifests: descriptors(&value["manifests"], "manifests")?,
            })
        }
        OCI_MANIFEST | DOCKER_MANIFEST => {
            if has_manifests {
                bail!("the registry sent a manifest ({media_type}) with `manifests`: refused");
            }
            image_manifest(&value)
        }
        other if other.starts_with("application/vnd.docker.distribution.manifest.v1") => bail!(
            "the base is a Docker schema 1 image ({other}), which imgpack does not read: push it again with a current docker, skopeo or crane"
        ),
        other => bail!(
            "the registry sent a document of type {}, not an image manifest or index",
            printable(other)
        ),
    }
}

/// Content types that say nothing about the manifest (some proxies send them).
fn is_generic(content_type: &str) -> bool {
    matches!(
        content_type,
        "application/json" | "application/octet-stream" | "text/plain"
    )
}

fn image_manifest(value: &Value) -> Result<Document> {
    let config = descriptor(&value["config"]).context("the base manifest's config")?;
    if !matches!(config.media_type.as_str(), OCI_CONFIG | DOCKER_CONFIG) {
        bail!(
            "the base manifest's config has media type {}, not an image config: it is not a container image",
            printable(&config.media_type)
        );
    }
    let layers = descriptors(&value["layers"], "layers")?;
    for (index, layer) in layers.iter().enumerate() {
        if !LAYER_TYPES.contains(&layer.media_type.as_str()) {
            bail!(
                "layer {} of the base has media type {}, which imgpack cannot read (it reads tar, tar+gzip and tar+zstd layers)",
                index + 1,
                printable(&layer.media_type)
            );
        }
    }
    Ok(Document::Manifest { config, layers })
}

fn descriptors(value: &Value, field: &str) -> Result<Vec<Descriptor>> {
    let Some(items) = value.as_array() else {
        bail!("the document's `{field}` is not a list");
    };
    if items.len() > MAX_ENTRIES {
        bail!(
            "the document lists {} {field}, more than the {MAX_ENTRIES} imgpack accepts",
            items.len()
        );
    }
    items
        .iter()
        .enumerate()
        .map(|(index, item)| {
            descriptor(item).with_context(|| format!("entry {} of `{field}`", index + 1))
        })
        .collect()
}

fn descriptor(value: &Value) -> Result<Descriptor> {
    let text = |key: &str| value.get(key).and_then(Value::as_str);
    let digest = text("digest").context("no digest")?;
    let digest = Digest::parse(digest)
        .with_context(|| format!("digest {} is not sha256:<64 hex>", printable(digest)))?;
    let size = value
        .get("size")
        .and_then(Value::as_u64)
        .context("no size (a non-negative integer)")?;
    let media_type = text("mediaType").context("no mediaType")?.to_owned();
    let platform = value.get("platform").and_then(|p| {
        let part = |key: &str| p.get(key).and_then(Value::as_str);
        let base = format!("{}/{}", part("os")?, part("architecture")?);
        Some(match part("variant") {
            Some(variant) => format!("{base}/{variant}"),
            None => base,
        })
    });
    Ok(Descriptor {
        media_type,
        blob: BlobInfo { digest, size },
        platform,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn digest(n: u8) -> String {
        format!("sha256:{}", hex_of(n))
    }

    fn hex_of(n: u8) -> String {
        format!("{n:02x}").repeat(32)
    }

    fn manifest() -> Value {
        json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": OCI_CONFIG, "digest": digest(1), "size": 10},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": digest(2), "size": 20}],
        })
    }

    fn parse(value: &Value, content_type: Option<&str>) -> Result<Document> {
        parse_document(value.to_string().as_bytes(), content_type)
    }

    fn err(value: &Value, content_type: Option<&str>) -> String {
        format!("{:#}", parse(value, content_type).unwrap_err())
    }

    #[test]
    fn manifests_and_indexes_parse() {
        let Document::Manifest { config, layers } = parse(&manifest(), Some(OCI_MANIFEST)).unwrap()
        else {
            panic!("not a manifest");
        };
        assert_eq!(config.blob.size, 10);
        assert_eq!(layers[0].blob.digest.to_string(), digest(2));
        let index = json!({"schemaVersion": 2, "manifests": [
            {"mediaType": OCI_MANIFEST, "digest": digest(3), "size": 5, "platform": {"os": "linux", "architecture": "arm", "variant": "v7"}}
        ]});
        let Document::Index { manifests } =
            parse(&index, Some(&format!("{OCI_INDEX}; charset=utf-8"))).unwrap()
        else {
            panic!("not an index");
        };
        assert_eq!(manifests[0].platform.as_deref(), Some("linux/arm/v7"));
        // Without mediaType or Content-Type, the structure decides.
        assert!(matches!(
            parse(&index, None).unwrap(),
            Document::Index { .. }
        ));
    }

    #[test]
    fn content_type_and_media_type_must_agree() {
        let text = err(&manifest(), Some(OCI_INDEX));
        assert!(text.contains("must agree"), "{text}");
        let mut undeclared = manifest();
        undeclared.as_object_mut().unwrap().remove("mediaType");
        let text = err(&undeclared, Some(OCI_INDEX));
        assert!(text.contains("with layers"), "{text}");
        // A generic Content-Type says nothing either way.
        parse(&manifest(), Some("application/json")).unwrap();
    }

    #[test]
    fn ambiguous_documents_are_refused() {
        let mut both = manifest();
        both["manifests"] = json!([]);
        let text = err(&both, None);
        assert!(text.contains("both an index and a manifest"), "{text}");
    }

    #[test]
    fn unknown_layers_configs_and_bad_descriptors_are_refused() {
        let mut foreign = manifest();
        foreign["layers"][0]["mediaType"] =
            json!("application/vnd.docker.image.rootfs.foreign.diff.tar.gzip");
        assert!(err(&foreign, None).contains("cannot read"));
        let mut helm = manifest();
        helm["config"]["mediaType"] = json!("application/vnd.cncf.helm.config.v1+json");
        assert!(err(&helm, None).contains("not a container image"));
        let mut negative = manifest();
        negative["layers"][0]["size"] = json!(-1);
        assert!(err(&negative, None).contains("no size"));
        let mut bad = manifest();
        bad["config"]["digest"] = json!("sha256:../../etc/passwd");
        assert!(err(&bad, None).contains("is not sha256"));
        let schema1 = json!({"schemaVersion": 1, "mediaType": "application/vnd.docker.distribution.manifest.v1+prettyjws"});
        assert!(err(&schema1, None).contains("schema 1"));
        assert!(parse_document(b"[1]", None).is_err());
    }
}
