//! The `.sig` image cosign stores beside a signed manifest: tag
//! `sha256-<hex>.sig` in the same repository, an OCI image manifest whose
//! every layer is one simple-signing payload, with the base64 signature in
//! the layer's `dev.cosignproject.cosign/signature` annotation. This is what
//! `cosign verify`, sigstore-rs and containers/image (with
//! `use-sigstore-attachments`) read. Signing again appends a layer, as
//! cosign does, so signatures by other keys stay.

use std::collections::BTreeMap;

use anyhow::{bail, Context, Result};
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use imgpack_blob::{BlobInfo, Digest};
use serde_json::{json, Value};

use crate::envelope::printable;
use crate::signer::Signature;

pub const SIMPLE_SIGNING_MEDIA_TYPE: &str = "application/vnd.dev.cosign.simplesigning.v1+json";
pub const SIGNATURE_ANNOTATION: &str = "dev.cosignproject.cosign/signature";
/// Keyless signatures carry the Fulcio certificate, its chain and the Rekor bundle.
pub const CERTIFICATE_ANNOTATION: &str = "dev.sigstore.cosign/certificate";
pub const CHAIN_ANNOTATION: &str = "dev.sigstore.cosign/chain";
pub const BUNDLE_ANNOTATION: &str = "dev.sigstore.cosign/bundle";
pub const MANIFEST_MEDIA_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";
const CONFIG_MEDIA_TYPE: &str = "application/vnd.oci.image.config.v1+json";
/// More signatures than any image collects; a bound on what a registry may send.
const MAX_LAYERS: usize = 1000;
/// A payload is a few hundred bytes; a signature layer larger than this is refused unread.
pub const MAX_PAYLOAD_SIZE: u64 = 64 << 10;

/// `sha256-<hex>.sig`: the tag holding the signatures of `digest`.
pub fn signature_tag(digest: &Digest) -> String {
    format!("sha256-{}.sig", digest.hex())
}

/// One signature: its payload blob and annotations. Layers read from a
/// registry keep their descriptor as it was, so re-signing changes nothing
/// of what others wrote.
#[derive(Clone, Debug)]
pub struct SignatureLayer {
    pub blob: BlobInfo,
    pub media_type: String,
    pub annotations: BTreeMap<String, String>,
    /// The descriptor exactly as read (None for a new layer).
    original: Option<Value>,
}

impl SignatureLayer {
    /// A new layer for `payload`'s blob signed with `signature`.
    pub fn new(payload: BlobInfo, signature: &Signature) -> Self {
        let mut annotations = BTreeMap::new();
        annotations.insert(
            SIGNATURE_ANNOTATION.to_owned(),
            BASE64.encode(&signature.signature),
        );
        let extras = [
            (CERTIFICATE_ANNOTATION, &signature.certificate),
            (CHAIN_ANNOTATION, &signature.chain),
            (BUNDLE_ANNOTATION, &signature.bundle),
        ];
        for (name, value) in extras {
            annotations.extend(value.clone().map(|value| (name.to_owned(), value)));
        }
        Self {
            blob: payload,
            media_type: SIMPLE_SIGNING_MEDIA_TYPE.to_owned(),
            annotations,
            original: None,
        }
    }

    /// The DER signature, if the layer has a readable one.
    pub fn signature(&self) -> Option<Vec<u8>> {
        let text = self.annotations.get(SIGNATURE_ANNOTATION)?;
        BASE64.decode(text.trim()).ok()
    }

    pub fn is_simple_signing(&self) -> bool {
        self.media_type == SIMPLE_SIGNING_MEDIA_TYPE
    }

    fn descriptor(&self) -> Value {
        if let Some(original) = &self.original {
            return original.clone();
        }
        json!({
            "mediaType": self.media_type,
            "size": self.blob.size,
            "digest": self.blob.digest.to_string(),
            "annotations": self.annotations,
        })
    }
}

/// The signatures of one manifest, as the `.sig` image holds them.
#[derive(Clone, Debug, Default)]
pub struct SignatureImage {
    pub layers: Vec<SignatureLayer>,
}

impl SignatureImage {
    /// Reads a `.sig` manifest a registry sent. Layers are checked for a
    /// sha256 digest and a size; their content is read (and digest-checked)
    /// by whoever needs it.
    pub fn parse(bytes: &[u8]) -> Result<Self> {
        let value: Value =
            serde_json::from_slice(bytes).context("the signature manifest is not JSON")?;
        let Some(layers) = value.get("layers").and_then(Value::as_array) else {
            bail!("the signature manifest has no list of layers");
        };
        if layers.len() > MAX_LAYERS {
            bail!(
                "the signature manifest lists {} layers, more than the {MAX_LAYERS} imgpack reads",
                layers.len()
            );
        }
        let layers = layers
            .iter()
            .enumerate()
            .map(|(index, layer)| {
                read_layer(layer).with_context(|| format!("signature layer {}", index + 1))
            })
            .collect::<Result<_>>()?;
        Ok(Self { layers })
    }

    /// Whether a layer already holds `payload` signed in a way `accepts` approves.
    pub fn holds(&self, payload: &BlobInfo, accepts: impl Fn(&[u8]) -> bool) -> bool {
        self.layers.iter().any(|layer| {
            layer.blob == *payload && layer.signature().is_some_and(|sig| accepts(&sig))
        })
    }

    pub fn push(&mut self, layer: SignatureLayer) {
        self.layers.push(layer);
    }

    /// The image config: every layer's digest as its diff ID (payloads are
    /// not compressed), as cosign's config lists them.
    pub fn config(&self) -> Vec<u8> {
        let diff_ids: Vec<String> = self
            .layers
            .iter()
            .map(|l| l.blob.digest.to_string())
            .collect();
        let history: Vec<Value> = self
            .layers
            .iter()
            .map(|_| json!({"created": "0001-01-01T00:00:00Z"}))
            .collect();
        let config = json!({
            "architecture": "",
            "created": "0001-01-01T00:00:00Z",
            "history": history,
            "os": "",
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
            "config": {},
        });
        serde_json::to_vec(&config).expect("JSON values serialise")
    }

    /// The manifest over `config` (the blob of [`Self::config`]'s bytes).
    pub fn manifest(&self, config: &BlobInfo) -> Vec<u8> {
        let layers: Vec<Value> = self.layers.iter().map(SignatureLayer::descriptor).collect();
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": MANIFEST_MEDIA_TYPE,
            "config": {
                "mediaType": CONFIG_MEDIA_TYPE,
                "size": config.size,
                "digest": config.digest.to_string(),
            },
            "layers": layers,
        });
        serde_json::to_vec(&manifest).expect("JSON values serialise")
    }
}

fn read_layer(layer: &Value) -> Result<SignatureLayer> {
    let media_type = layer
        .get("mediaType")
        .and_then(Value::as_str)
        .context("it has no mediaType")?;
    let digest = layer
        .get("digest")
        .and_then(Value::as_str)
        .and_then(Digest::parse)
        .context("it has no sha256 digest")?;
    let size = layer
        .get("size")
        .and_then(Value::as_u64)
        .context("it has no size")?;
    let mut annotations = BTreeMap::new();
    if let Some(map) = layer.get("annotations").and_then(Value::as_object) {
        for (name, value) in map {
            let Some(value) = value.as_str() else {
                bail!("its annotation {} is not a string", printable(name));
            };
            annotations.insert(name.clone(), value.to_owned());
        }
    }
    Ok(SignatureLayer {
        blob: BlobInfo { digest, size },
        media_type: media_type.to_owned(),
        annotations,
        original: Some(layer.clone()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layer(payload: &[u8], signature: &[u8]) -> SignatureLayer {
        let blob = BlobInfo {
            digest: Digest::of_bytes(payload),
            size: payload.len() as u64,
        };
        SignatureLayer::new(
            blob,
            &Signature {
                signature: signature.to_vec(),
                ..Signature::default()
            },
        )
    }

    #[test]
    fn a_second_signature_keeps_the_first_byte_for_byte() {
        let mut image = SignatureImage::default();
        image.push(layer(b"one", b"sig1"));
        let config = BlobInfo {
            digest: Digest::of_bytes(&image.config()),
            size: image.config().len() as u64,
        };
        let first = image.manifest(&config);
        let mut read = SignatureImage::parse(&first).unwrap();
        read.push(layer(b"two", b"sig2"));
        let value: Value = serde_json::from_slice(&read.manifest(&config)).unwrap();
        let before: Value = serde_json::from_slice(&first).unwrap();
        assert_eq!(value["layers"][0], before["layers"][0]);
        assert_eq!(
            value["layers"][1]["annotations"][SIGNATURE_ANNOTATION],
            BASE64.encode(b"sig2")
        );
        assert_eq!(value["layers"][1]["mediaType"], SIMPLE_SIGNING_MEDIA_TYPE);
        let config: Value = serde_json::from_slice(&read.config()).unwrap();
        assert_eq!(config["rootfs"]["diff_ids"].as_array().unwrap().len(), 2);
    }

    #[test]
    fn hostile_manifests_are_refused() {
        assert!(SignatureImage::parse(b"[]").is_err());
        let no_digest = br#"{"layers":[{"mediaType":"x","size":1}]}"#;
        let err = format!("{:#}", SignatureImage::parse(no_digest).unwrap_err());
        assert!(err.contains("layer 1") && err.contains("digest"), "{err}");
        let many: Vec<Value> = (0..=MAX_LAYERS)
            .map(|_| json!({"mediaType": "x", "size": 1, "digest": Digest::of_bytes(b"").to_string()}))
            .collect();
        let bytes = serde_json::to_vec(&json!({"layers": many})).unwrap();
        assert!(SignatureImage::parse(&bytes).is_err());
    }

    #[test]
    fn the_tag_is_cosigns() {
        let digest = Digest::of_bytes(b"m");
        assert_eq!(
            signature_tag(&digest),
            format!("sha256-{}.sig", digest.hex())
        );
    }
}
