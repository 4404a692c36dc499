//! Reading layers back: the file system a stack of (base image) layers gives,
//! to check that it holds a dynamic binary's interpreter.

use std::collections::{HashMap, VecDeque};
use std::fs::File;
use std::io::{BufReader, Read};

use anyhow::{Context, Result};

/// The paths of a stack of layers, as the image's file system has them:
/// later layers win, whiteouts remove, symlinks are kept with their targets.
/// Used to check that a base image holds a dynamic binary's interpreter.
#[derive(Debug, Default)]
pub struct LayerPaths {
    /// Path (no leading `/`) → symlink target, or `None` for files and directories.
    entries: HashMap<String, Option<String>>,
}

impl LayerPaths {
    /// Adds a layer on top of those read so far (`media_type` tells its compression).
    pub fn add_layer(&mut self, file: File, media_type: &str) -> Result<()> {
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
            let path = clean(
                &entry
                    .path()
                    .context("a base layer entry has a bad path")?
                    .to_string_lossy(),
            );
            let (dir, name) = path.rsplit_once('/').unwrap_or(("", path.as_str()));
            if name == ".wh..wh..opq" {
                self.remove_under(dir);
            } else if let Some(hidden) = name.strip_prefix(".wh.") {
                let removed = if dir.is_empty() {
                    hidden.to_owned()
                } else {
                    format!("{dir}/{hidden}")
                };
                self.entries.remove(&removed);
                self.remove_under(&removed);
            } else {
                let target = match entry.header().entry_type() {
                    tar::EntryType::Symlink => {
                        entry.link_name()?.map(|t| t.to_string_lossy().into_owned())
                    }
                    _ => None,
                };
                self.add_parents(&path);
                self.entries.insert(path, target);
            }
        }
        Ok(())
    }

    fn remove_under(&mut self, dir: &str) {
        let prefix = format!("{dir}/");
        self.entries.retain(|path, _| !path.starts_with(&prefix));
    }

    fn add_parents(&mut self, path: &str) {
        let mut end = 0;
        while let Some(slash) = path[end..].find('/') {
            end += slash;
            self.entries.entry(path[..end].to_owned()).or_insert(None);
            end += 1;
        }
    }

    /// Whether `path` exists, following symlinks in every component (as the
    /// kernel does, at most 40 of them): `/lib64/ld-linux-x86-64.so.2` is found
    /// where /lib64 links to usr/lib64 or the loader itself is a link.
    pub fn resolves(&self, path: &str) -> bool {
        let mut pending: VecDeque<String> = components(path).collect();
        let mut resolved: Vec<String> = Vec::new();
        let mut hops = 0;
        while let Some(component) = pending.pop_front() {
            if component == ".." {
                resolved.pop();
                continue;
            }
            let mut candidate = resolved.clone();
            candidate.push(component.clone());
            match self.entries.get(&candidate.join("/")) {
                None => return false,
                Some(None) => resolved.push(component),
                Some(Some(target)) => {
                    hops += 1;
                    if hops > 40 {
                        return false;
                    }
                    if target.starts_with('/') {
                        resolved.clear();
                    }
                    for part in components(target).rev() {
                        pending.push_front(part);
                    }
                }
            }
        }
        true
    }
}

fn components(path: &str) -> impl DoubleEndedIterator<Item = String> + '_ {
    path.split('/')
        .filter(|c| !c.is_empty() && *c != ".")
        .map(str::to_owned)
}

fn clean(path: &str) -> String {
    components(path).collect::<Vec<_>>().join("/")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{write_layer, Compression, Contents, LayerContents};
    use imgpack_blob::BlobStore;

    fn layer(store: &BlobStore, contents: &LayerContents) -> File {
        let layer = write_layer(store, contents, Compression::Gzip { level: 1 }, 0).unwrap();
        store.open_blob(&layer.blob.digest).unwrap()
    }

    #[test]
    fn paths_resolve_through_symlinked_directories_and_links() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(dir.path()).unwrap();
        // A merged-/usr base: /lib64 -> usr/lib64, the loader a link to the real file.
        let mut base = LayerContents::new();
        base.add_symlink("lib64", "usr/lib64").unwrap();
        base.add_symlink(
            "usr/lib64/ld-linux-x86-64.so.2",
            "../lib/x86_64-linux-gnu/ld-linux-x86-64.so.2",
        )
        .unwrap();
        base.add_file(
            "usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2",
            Contents::Bytes(b"ld"[..].into()),
            0o755,
        )
        .unwrap();
        base.add_symlink("loop/a", "/loop/a").unwrap();
        let mut paths = LayerPaths::default();
        paths.add_layer(layer(&store, &base), "x+gzip").unwrap();
        assert!(paths.resolves("/lib64/ld-linux-x86-64.so.2"));
        assert!(paths.resolves("/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2"));
        assert!(!paths.resolves("/lib/ld-musl-x86_64.so.1"));
        assert!(
            !paths.resolves("/loop/a"),
            "a symlink loop does not resolve"
        );

        // A later layer deleting the loader (whiteout) hides it.
        let mut upper = LayerContents::new();
        upper
            .add_file(
                "usr/lib/x86_64-linux-gnu/.wh.ld-linux-x86-64.so.2",
                Contents::Bytes(b""[..].into()),
                0o644,
            )
            .unwrap();
        paths.add_layer(layer(&store, &upper), "x+gzip").unwrap();
        assert!(!paths.resolves("/lib64/ld-linux-x86-64.so.2"));
    }

    #[test]
    fn zstd_layers_are_read() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(dir.path()).unwrap();
        let mut contents = LayerContents::new();
        contents
            .add_file("etc/hostname", Contents::Bytes(b"x"[..].into()), 0o644)
            .unwrap();
        let layer = write_layer(&store, &contents, Compression::Zstd { level: 1 }, 0).unwrap();
        let mut paths = LayerPaths::default();
        paths
            .add_layer(store.open_blob(&layer.blob.digest).unwrap(), "x+zstd")
            .unwrap();
        assert!(paths.resolves("/etc/hostname") && paths.resolves("/etc"));
    }
}
