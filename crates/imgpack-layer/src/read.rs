use std::fs::File;
use std::io::{BufReader, Read};

use anyhow::{Context, Result};

/// Whether the layer tar in `file` (compressed as its `media_type` says) has an
/// entry at `path` (absolute or not); used to check that a base image holds a
/// dynamic binary's interpreter. Symlinks count: distributions link the loader.
pub fn layer_has_path(file: File, media_type: &str, path: &str) -> Result<bool> {
    let wanted = path.trim_start_matches('/').trim_end_matches('/');
    let reader: Box<dyn Read> = if media_type.ends_with("gzip") {
        Box::new(flate2::read::GzDecoder::new(BufReader::new(file)))
    } else if media_type.ends_with("zstd") {
        Box::new(zstd::stream::read::Decoder::new(file).context("cannot read a zstd layer")?)
    } else {
        Box::new(BufReader::new(file))
    };
    let mut archive = tar::Archive::new(reader);
    for entry in archive.entries().context("cannot read a base layer")? {
        let entry = entry.context("cannot read a base layer")?;
        let entry_path = entry.path().context("a base layer entry has a bad path")?;
        let text = entry_path.to_string_lossy();
        if text.trim_start_matches("./").trim_end_matches('/') == wanted {
            return Ok(true);
        }
    }
    Ok(false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{write_layer, Compression, Contents, LayerContents};
    use imgpack_blob::BlobStore;

    #[test]
    fn paths_are_found_in_written_layers() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(dir.path()).unwrap();
        let mut contents = LayerContents::new();
        contents
            .add_symlink(
                "lib64/ld-linux-x86-64.so.2",
                "/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2",
            )
            .unwrap();
        contents
            .add_file("etc/hostname", Contents::Bytes(b"x"[..].into()), 0o644)
            .unwrap();
        for (compression, media_type) in [
            (Compression::Gzip { level: 1 }, "x+gzip"),
            (Compression::Zstd { level: 1 }, "x+zstd"),
        ] {
            let layer = write_layer(&store, &contents, compression, 0).unwrap();
            let open = || store.open_blob(&layer.blob.digest).unwrap();
            assert!(layer_has_path(open(), media_type, "/lib64/ld-linux-x86-64.so.2").unwrap());
            assert!(layer_has_path(open(), media_type, "/etc").unwrap());
            assert!(!layer_has_path(open(), media_type, "/lib/ld-musl-x86_64.so.1").unwrap());
        }
    }
}
