//! The simple-signing payload: what a cosign signature signs. It names one
//! manifest by digest and the repository it was pushed to, so a signature
//! cannot be moved to another image or another repository.

use anyhow::{Context, Result};
use imgpack_blob::Digest;
use serde::{Deserialize, Serialize};

/// `critical.type` of every cosign image signature.
pub const SIGNATURE_TYPE: &str = "cosign container image signature";

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SimpleSigning {
    pub critical: Critical,
    /// Free-form claims; imgpack writes none (`null`), as `cosign sign` without `-a`.
    pub optional: Option<serde_json::Map<String, serde_json::Value>>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Critical {
    pub identity: Identity,
    pub image: ImageClaim,
    #[serde(rename = "type")]
    pub kind: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    #[serde(rename = "docker-reference")]
    pub docker_reference: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageClaim {
    #[serde(rename = "docker-manifest-digest")]
    pub docker_manifest_digest: String,
}

/// The payload bytes for `digest` pushed to `repository` (`registry/path`,
/// no tag): the same JSON, field for field, that `cosign sign` writes.
pub fn simple_signing_payload(repository: &str, digest: &Digest) -> Vec<u8> {
    let payload = SimpleSigning {
        critical: Critical {
            identity: Identity {
                docker_reference: repository.to_owned(),
            },
            image: ImageClaim {
                docker_manifest_digest: digest.to_string(),
            },
            kind: SIGNATURE_TYPE.to_owned(),
        },
        optional: None,
    };
    serde_json::to_vec(&payload).expect("plain strings serialise")
}

impl SimpleSigning {
    pub fn parse(bytes: &[u8]) -> Result<Self> {
        serde_json::from_slice(bytes).context("the signed payload is not a simple-signing document")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_payload_is_what_cosign_writes() {
        let digest = Digest::of_bytes(b"manifest");
        let payload = simple_signing_payload("127.0.0.1:5000/team/app", &digest);
        let expected = format!(
            "{{\"critical\":{{\"identity\":{{\"docker-reference\":\"127.0.0.1:5000/team/app\"}},\
             \"image\":{{\"docker-manifest-digest\":\"{digest}\"}},\
             \"type\":\"cosign container image signature\"}},\"optional\":null}}"
        );
        assert_eq!(String::from_utf8(payload.clone()).unwrap(), expected);
        let parsed = SimpleSigning::parse(&payload).unwrap();
        assert_eq!(
            parsed.critical.image.docker_manifest_digest,
            digest.to_string()
        );
    }
}
