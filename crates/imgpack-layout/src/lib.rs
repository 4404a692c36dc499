//! OCI image layout sinks: `oci:DIR[:TAG]` writes (or adds a tag to) a layout
//! directory; `oci-archive:FILE[:TAG]` writes the same layout as one tar.

mod archive;
mod dir;
mod index;
mod read;

pub use archive::{append_bytes, append_file, write_tar_atomically, OciArchiveSink};
pub use dir::OciLayoutSink;
pub use read::{list_layout_referrers, read_layout_image};

/// Content of the `oci-layout` file.
const OCI_LAYOUT: &[u8] = br#"{"imageLayoutVersion":"1.0.0"}"#;
