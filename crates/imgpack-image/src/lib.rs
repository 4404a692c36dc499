//! The image model: configs, manifests and indexes built canonically from
//! written layers, and the [`Sink`] trait every output implements.
//!
//! An [`Image`] is a root descriptor (an index, or a manifest for a single
//! platform) plus what each platform's manifest references; all its blobs live
//! in one [`BlobStore`]. Sinks only read it: nothing upstream knows where the
//! image goes.

mod base;
mod build;
mod media;
mod model;
mod referrer;
mod settings;
mod tag;

pub use base::{BaseLayers, BASE_DIGEST_ANNOTATION, BASE_NAME_ANNOTATION};
pub use build::{build_image, descriptor, LayerSet};
pub use media::Format;
pub use model::{BlobRef, Image, PlatformManifest, Sink, REF_NAME_ANNOTATION};
pub use referrer::{
    attach, lists_all, merge_referrers, referrers_tag, Referrer, EMPTY_JSON, EMPTY_MEDIA_TYPE,
    OCI_INDEX,
};
pub use settings::{created_timestamp, ImageSettings, DEFAULT_PATH, DEFAULT_USER};
pub use tag::validate_tag;
