//! Content-addressed blobs: the one place where bytes become digests.
//!
//! A [`BlobStore`] is a directory laid out like an OCI image layout's
//! `blobs/sha256/<hex>`, so the staging area of a build and an output layout
//! share one format. Every write goes to a temporary file in the same
//! directory and is renamed into place only after its digest is known: an
//! interrupted build never leaves a partial blob under a digest name.

mod atomic;
mod cache_dir;
mod digest;
mod file_digest;
mod growing;
pub mod held;
mod json;
pub mod local_file;
mod store;
mod temp_errors;
mod writable;
mod writeback;

pub use atomic::{write_atomically, AtomicFile};
pub use cache_dir::{cache_dir, check_private_cache, LAYER_CACHE_WAY_OUT};
pub use digest::{Digest, DigestWriter};
pub use file_digest::digest_of_file;
pub use growing::{GrowingBlob, GrowingReader, Growth, StagingWatcher};
pub use json::canonical_json;
pub use local_file::{open_regular, read_local_file, read_local_text, FileKind, LocalFileError};
pub use store::{BlobInfo, BlobStore, BlobWriter};
pub use temp_errors::without_temp_path;
pub use writable::{check_dir_path, check_file_path, parent_or_dot};
