//! Supply-chain attestations attached to images: SBOMs, SLSA provenance and
//! the DSSE envelopes that carry (and may sign) in-toto statements.

pub mod dsse;

pub use dsse::{envelope, pae, DsseSigner, Envelope, EnvelopeSignature};
