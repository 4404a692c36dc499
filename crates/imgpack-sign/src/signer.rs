//! The signer interface a push signs through, the key-based signer, and the
//! check `imgpack verify` makes.
//!
//! Keyless signing plugs in as another [`Signer`]: it would make an
//! ephemeral P-256 key, trade the CI's OIDC token and a proof of possession
//! for a short-lived Fulcio certificate, sign, upload the signature to Rekor
//! and return the certificate, its chain and Rekor's bundle in
//! [`Signature`]; the `.sig` image carries them as cosign's annotations.
//! Nothing else in the push changes. It is not built: Fulcio and Rekor
//! cannot be reached from where imgpack is developed, and a signer that
//! cannot be tested against them would be a fake.

use anyhow::Result;
use imgpack_blob::Digest;

use crate::cosign::SignatureLayer;
use crate::keys::{PrivateKey, PublicKey};
use crate::payload::{SimpleSigning, SIGNATURE_TYPE};

/// What a signer returns for one payload.
#[derive(Clone, Debug, Default)]
pub struct Signature {
    /// ASN.1 DER ECDSA signature of SHA-256(payload).
    pub signature: Vec<u8>,
    /// Keyless: the signing certificate (PEM), its chain (PEM), Rekor's bundle (JSON).
    pub certificate: Option<String>,
    pub chain: Option<String>,
    pub bundle: Option<String>,
}

/// Signs payloads for a push.
pub trait Signer: Send + Sync {
    /// For progress lines: which key or identity signs.
    fn describe(&self) -> String;
    /// Signs `payload` (a simple-signing document, or a DSSE PAE).
    fn sign(&self, payload: &[u8]) -> Result<Signature>;
    /// The fixed public key, when there is one: a payload already signed by
    /// it is not signed again (cosign's duplicate check). None for keyless.
    fn public_key(&self) -> Option<PublicKey>;
}

/// Signs with a key from a file (`--sign-key`).
pub struct KeySigner {
    key: PrivateKey,
    source: String,
}

impl KeySigner {
    /// `source` names the key in messages (its path), never its content.
    pub fn new(key: PrivateKey, source: impl Into<String>) -> Self {
        Self {
            key,
            source: source.into(),
        }
    }

    pub fn key(&self) -> &PrivateKey {
        &self.key
    }
}

impl Signer for KeySigner {
    fn describe(&self) -> String {
        format!(
            "key {} ({})",
            self.source,
            self.key.public_key().fingerprint()
        )
    }

    fn sign(&self, payload: &[u8]) -> Result<Signature> {
        Ok(Signature {
            signature: self.key.sign(payload),
            ..Signature::default()
        })
    }

    fn public_key(&self) -> Option<PublicKey> {
        Some(self.key.public_key())
    }
}

/// Why the signatures of a manifest were not accepted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// No `.sig` tag, or one without simple-signing layers.
    Unsigned,
    /// Signatures exist, none by the key.
    OtherKey { signatures: usize },
    /// Signed by the key for another repository.
    OtherRepository { signed_for: String },
    /// Signed by the key for another manifest (a copied `.sig`).
    OtherImage { signed_for: String },
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::Unsigned => write!(f, "has no signature"),
            Refusal::OtherKey { signatures } => {
                write!(f, "has {signatures} signature(s), none made with this key")
            }
            Refusal::OtherRepository { signed_for } => write!(
                f,
                "is signed with this key for another repository, {signed_for}"
            ),
            Refusal::OtherImage { signed_for } => write!(
                f,
                "carries a signature with this key for another manifest, {signed_for}"
            ),
        }
    }
}

/// Checks the signatures of the manifest `digest` pushed to `repository`:
/// `signed` holds each simple-signing layer with its payload bytes (already
/// checked against the layer's digest). Accepted when one signature is
/// `key`'s over a payload naming this digest, this repository and cosign's
/// type; returns how many did.
pub fn check_signatures(
    signed: &[(SignatureLayer, Vec<u8>)],
    key: &PublicKey,
    repository: &str,
    digest: &Digest,
) -> Result<usize, Refusal> {
    let mut valid = 0;
    let mut refusal = None;
    for (layer, payload) in signed {
        let by_key = layer
            .signature()
            .is_some_and(|signature| key.verifies(payload, &signature));
        if !by_key {
            continue;
        }
        let Ok(claims) = SimpleSigning::parse(payload) else {
            continue;
        };
        let critical = &claims.critical;
        if critical.kind != SIGNATURE_TYPE {
            continue;
        }
        if critical.image.docker_manifest_digest != digest.to_string() {
            refusal = Some(Refusal::OtherImage {
                signed_for: critical.image.docker_manifest_digest.clone(),
            });
        } else if critical.identity.docker_reference != repository {
            refusal.get_or_insert(Refusal::OtherRepository {
                signed_for: critical.identity.docker_reference.clone(),
            });
        } else {
            valid += 1;
        }
    }
    match (valid, refusal) {
        (0, Some(refusal)) => Err(refusal),
        (0, None) if signed.is_empty() => Err(Refusal::Unsigned),
        (0, None) => Err(Refusal::OtherKey {
            signatures: signed.len(),
        }),
        (valid, _) => Ok(valid),
    }
}

#[cfg(test)]
mod tests {
    use imgpack_blob::BlobInfo;

    use super::*;
    use crate::payload::simple_signing_payload;

    fn signed(signer: &KeySigner, repository: &str, digest: &Digest) -> (SignatureLayer, Vec<u8>) {
        let payload = simple_signing_payload(repository, digest);
        let blob = BlobInfo {
            digest: Digest::of_bytes(&payload),
            size: payload.len() as u64,
        };
        let layer = SignatureLayer::new(blob, &signer.sign(&payload).unwrap());
        (layer, payload)
    }

    #[test]
    fn only_this_key_this_repository_and_this_manifest_pass() {
        let ours = KeySigner::new(PrivateKey::generate().unwrap(), "ours");
        let theirs = KeySigner::new(PrivateKey::generate().unwrap(), "theirs");
        let key = ours.public_key().unwrap();
        let (repo, digest) = ("reg/team/app", Digest::of_bytes(b"m"));
        let check =
            |layers: &[(SignatureLayer, Vec<u8>)]| check_signatures(layers, &key, repo, &digest);

        assert_eq!(check(&[]), Err(Refusal::Unsigned));
        assert_eq!(check(&[signed(&ours, repo, &digest)]), Ok(1));
        assert_eq!(
            check(&[signed(&theirs, repo, &digest)]),
            Err(Refusal::OtherKey { signatures: 1 })
        );
        // Another key's signature beside ours does not matter.
        assert_eq!(
            check(&[signed(&theirs, repo, &digest), signed(&ours, repo, &digest)]),
            Ok(1)
        );
        assert_eq!(
            check(&[signed(&ours, "reg/other", &digest)]),
            Err(Refusal::OtherRepository {
                signed_for: "reg/other".into()
            })
        );
        let other = Digest::of_bytes(b"other");
        assert_eq!(
            check(&[signed(&ours, repo, &other)]),
            Err(Refusal::OtherImage {
                signed_for: other.to_string()
            })
        );
        // A payload changed after signing fails as a foreign signature would.
        let (layer, mut payload) = signed(&ours, repo, &digest);
        payload[0] = b' ';
        assert_eq!(
            check(&[(layer, payload)]),
            Err(Refusal::OtherKey { signatures: 1 })
        );
    }
}
