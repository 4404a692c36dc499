//! The registry sink: pushes an [`Image`](imgpack_image::Image) straight to a
//! registry over the OCI distribution API, with no daemon.
//!
//! Why not oci-client's push path: oci-client 0.18 uploads a blob either whole
//! from memory or as one PATCH per stream item, treats a spec-legal 202 answer
//! to a cross-repository mount as an error, retries nothing (so no
//! Retry-After), re-serialises manifests in `push_manifest` and hides the
//! response headers needed to check the registry's digest. imgpack needs each
//! of these, so pushing is written here on reqwest (the HTTP client oci-client
//! itself uses); reference parsing comes from oci-spec's distribution module,
//! which oci-client re-exports.

//!
//! Everything a registry sends is untrusted: credentials go only to the
//! registry's own origin and the token realm it names (`client`, `auth`),
//! every read is bounded in size and time (`limits`), documents are checked
//! rather than guessed (`manifest`), and blobs are checked against their
//! digests before they are stored.

mod auth;
mod base;
mod client;
mod credentials;
mod early;
mod errors;
pub mod hub;
mod limits;
mod locations;
mod login;
mod manifest;
mod progress;
mod pull;
mod push;
mod reference;
mod referrers;
mod retry;
mod runtime;
mod signatures;
mod sink;
mod transport;
mod verify;

pub use auth::{parse_challenge, Challenge};
pub use base::resolve_base;
pub use client::RegistryClient;
pub use credentials::{find_credentials, store_login, Credential, Credentials, StoredIn};
pub use errors::RequestError;
pub use locations::BlobLocations;
pub use login::login;
pub use manifest::{parse_document, Descriptor, Document, LAYER_TYPES};
pub use push::{push_image, PushOptions};
pub use reference::{parse_reference, ImageRef};
pub use referrers::{list_referrers, referrers_of, ReferrersSupport};
pub use retry::RetryPolicy;
pub use signatures::read_signatures;
pub use sink::RegistrySink;
pub use transport::{connect, TransportOptions};
pub use verify::{verify_signatures, Attachment, Checked, Verification};
