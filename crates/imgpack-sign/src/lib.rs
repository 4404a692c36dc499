//! Signatures that cosign, sigstore-rs and containers/image read: ECDSA
//! P-256 keys in cosign's formats ([`keys`]), the simple-signing payload
//! that names a manifest and its repository ([`payload`]), the `.sig` image
//! cosign stores next to a manifest ([`cosign`]), and the [`Signer`]
//! interface a push signs through, so keyless signing (Fulcio, Rekor) can be
//! added beside [`KeySigner`] without touching the push.
//!
//! Nothing here talks to a registry: imgpack-registry moves the bytes.

pub mod cosign;
mod envelope;
pub mod keys;
pub mod payload;
mod signer;

pub use cosign::{signature_tag, SignatureImage, SignatureLayer};
pub use keys::{LockedKey, PrivateKey, PublicKey, PASSWORD_ENVS};
pub use payload::{simple_signing_payload, SimpleSigning};
pub use signer::{check_signatures, KeySigner, Refusal, Signature, Signer};
