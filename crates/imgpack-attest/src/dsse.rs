//! DSSE (Dead Simple Signing Envelope, secure-systems-lab/dsse v1): the
//! envelope in-toto statements travel in, signed over the pre-authentication
//! encoding (PAE) of payload type and payload, never over the JSON itself.
//!
//! Signing keys live elsewhere (the signing crate implements [`DsseSigner`]);
//! this module only knows how to frame what gets signed and how to store it.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use serde::{Deserialize, Serialize};

/// Something that can sign a DSSE PAE message, e.g. a cosign ECDSA P-256 key.
pub trait DsseSigner {
    /// The `keyid` recorded next to the signature (may be empty: DSSE allows it).
    fn key_id(&self) -> String;
    /// Signs `message` (the PAE bytes) and returns the signature as the
    /// algorithm encodes it, e.g. DER ECDSA for cosign keys.
    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, String>;
}

/// A DSSE envelope as JSON: `payload` and each `sig` are standard base64.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    #[serde(rename = "payloadType")]
    pub payload_type: String,
    pub payload: String,
    pub signatures: Vec<EnvelopeSignature>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnvelopeSignature {
    #[serde(default)]
    pub keyid: String,
    pub sig: String,
}

impl Envelope {
    /// The decoded payload bytes.
    pub fn payload_bytes(&self) -> Result<Vec<u8>, String> {
        STANDARD
            .decode(&self.payload)
            .map_err(|err| format!("DSSE payload is not valid base64: {err}"))
    }

    /// The PAE message each signature of this envelope signs.
    pub fn signed_message(&self) -> Result<Vec<u8>, String> {
        Ok(pae(&self.payload_type, &self.payload_bytes()?))
    }

    /// The decoded bytes of every signature, in envelope order.
    pub fn signature_bytes(&self) -> Result<Vec<Vec<u8>>, String> {
        self.signatures
            .iter()
            .map(|signature| {
                STANDARD
                    .decode(&signature.sig)
                    .map_err(|err| format!("DSSE signature is not valid base64: {err}"))
            })
            .collect()
    }

    /// The envelope as compact JSON, fields in a fixed order (so the same
    /// payload and signatures always give the same bytes and digest).
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("an envelope of strings always serialises")
    }
}

/// DSSE v1 pre-authentication encoding:
/// `"DSSEv1" SP LEN(type) SP type SP LEN(payload) SP payload`, lengths in ASCII decimal.
pub fn pae(payload_type: &str, payload: &[u8]) -> Vec<u8> {
    let mut message = Vec::with_capacity(payload_type.len() + payload.len() + 32);
    message.extend_from_slice(b"DSSEv1 ");
    message.extend_from_slice(payload_type.len().to_string().as_bytes());
    message.push(b' ');
    message.extend_from_slice(payload_type.as_bytes());
    message.push(b' ');
    message.extend_from_slice(payload.len().to_string().as_bytes());
    message.push(b' ');
    message.extend_from_slice(payload);
    message
}

/// Wraps `payload` in an envelope, signed by `signer` when there is one
/// (no signer: an envelope with an empty signature list, which DSSE readers
/// such as cosign's treat as unsigned).
pub fn envelope(
    payload_type: &str,
    payload: &[u8],
    signer: Option<&dyn DsseSigner>,
) -> Result<Envelope, String> {
    let mut signatures = Vec::new();
    if let Some(signer) = signer {
        let signature = signer.sign(&pae(payload_type, payload))?;
        signatures.push(EnvelopeSignature {
            keyid: signer.key_id(),
            sig: STANDARD.encode(signature),
        });
    }
    Ok(Envelope {
        payload_type: payload_type.to_owned(),
        payload: STANDARD.encode(payload),
        signatures,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A signer that "signs" by reversing the message, so tests can check
    /// exactly which bytes were handed to it.
    struct Reverser;

    impl DsseSigner for Reverser {
        fn key_id(&self) -> String {
            "test-key".to_owned()
        }
        fn sign(&self, message: &[u8]) -> Result<Vec<u8>, String> {
            Ok(message.iter().rev().copied().collect())
        }
    }

    struct Failing;

    impl DsseSigner for Failing {
        fn key_id(&self) -> String {
            String::new()
        }
        fn sign(&self, _: &[u8]) -> Result<Vec<u8>, String> {
            Err("key is locked".to_owned())
        }
    }

    #[test]
    fn pae_matches_the_dsse_spec_example() {
        // The worked example of the DSSE protocol document.
        assert_eq!(
            pae("http://example.com/HelloWorld", b"hello world"),
            b"DSSEv1 29 http://example.com/HelloWorld 11 hello world".to_vec()
        );
        assert_eq!(pae("", b""), b"DSSEv1 0  0 ".to_vec());
    }

    #[test]
    fn unsigned_envelope_has_no_signatures() {
        let built = envelope("application/vnd.in-toto+json", b"{}", None).unwrap();
        assert!(built.signatures.is_empty());
        assert_eq!(built.payload, "e30=");
        assert_eq!(
            String::from_utf8(built.to_json()).unwrap(),
            r#"{"payloadType":"application/vnd.in-toto+json","payload":"e30=","signatures":[]}"#
        );
    }

    #[test]
    fn signer_signs_the_pae_and_round_trips() {
        let built = envelope("t", b"body", Some(&Reverser)).unwrap();
        assert_eq!(built.signatures[0].keyid, "test-key");
        let parsed: Envelope = serde_json::from_slice(&built.to_json()).unwrap();
        let message = parsed.signed_message().unwrap();
        assert_eq!(message, b"DSSEv1 1 t 4 body".to_vec());
        let reversed: Vec<u8> = message.iter().rev().copied().collect();
        assert_eq!(parsed.signature_bytes().unwrap(), vec![reversed]);
    }

    #[test]
    fn signer_errors_are_passed_on() {
        assert_eq!(
            envelope("t", b"x", Some(&Failing)).unwrap_err(),
            "key is locked"
        );
    }
}
