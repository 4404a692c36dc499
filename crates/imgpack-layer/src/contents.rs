//! What a layer holds: its entries (files, directories, symlinks, hard links)
//! with explicit owners and modes, kept in the byte order they are written in.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{bail, Result};

/// Where a regular file's bytes come from.
#[derive(Clone, Debug)]
pub enum Contents {
    Bytes(Cow<'static, [u8]>),
    /// Streamed from disk when the layer is written, never loaded whole.
    File(PathBuf),
}

#[derive(Clone, Debug)]
pub enum EntryKind {
    Dir,
    File(Contents),
    Symlink(String),
    /// A hard link to an earlier entry of the same layer (a path in the layer).
    HardLink(String),
}

/// One tar entry. Ownership and mode are explicit: nothing comes from the host.
#[derive(Clone, Debug)]
pub struct Entry {
    pub kind: EntryKind,
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
}

/// The entries of one layer, keyed by their path inside the image (no leading `/`).
///
/// Keys are kept in byte order, which is the order the tar is written in, so
/// the layer's bytes never depend on the order things were added or on how a
/// host directory lists them. Parent directories are added automatically.
#[derive(Clone, Debug, Default)]
pub struct LayerContents {
    entries: BTreeMap<String, Entry>,
}

impl LayerContents {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn add_dir(&mut self, path: &str, mode: u32, uid: u64, gid: u64) -> Result<()> {
        self.insert(
            path,
            Entry {
                kind: EntryKind::Dir,
                mode,
                uid,
                gid,
            },
        )
    }

    pub fn add_file(&mut self, path: &str, contents: Contents, mode: u32) -> Result<()> {
        self.insert(
            path,
            Entry {
                kind: EntryKind::File(contents),
                mode,
                uid: 0,
                gid: 0,
            },
        )
    }

    pub fn add_symlink(&mut self, path: &str, target: &str) -> Result<()> {
        self.insert(
            path,
            Entry {
                kind: EntryKind::Symlink(target.to_owned()),
                mode: 0o777,
                uid: 0,
                gid: 0,
            },
        )
    }

    /// Adds `path` as a hard link to `target`, which must already be a file of this layer.
    pub fn add_hard_link(&mut self, path: &str, target: &str) -> Result<()> {
        let target = normalise(target)?;
        let Some(existing) = self.entries.get(&target) else {
            bail!("cannot link {path} to {target}: {target} is not in the layer");
        };
        let mode = existing.mode;
        self.insert(
            path,
            Entry {
                kind: EntryKind::HardLink(target),
                mode,
                uid: 0,
                gid: 0,
            },
        )
    }

    /// Sets the owner of an entry already added (files and symlinks are added as root's).
    pub fn set_owner(&mut self, path: &str, uid: u64, gid: u64) -> Result<()> {
        let path = normalise(path)?;
        let Some(entry) = self.entries.get_mut(&path) else {
            bail!("cannot set the owner of /{path}: it is not in the layer");
        };
        entry.uid = uid;
        entry.gid = gid;
        Ok(())
    }

    pub fn entries(&self) -> impl Iterator<Item = (&str, &Entry)> {
        self.entries
            .iter()
            .map(|(path, entry)| (path.as_str(), entry))
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    fn insert(&mut self, path: &str, entry: Entry) -> Result<()> {
        let path = normalise(path)?;
        self.add_parents(&path);
        if matches!(entry.kind, EntryKind::Dir) {
            // An explicit directory replaces one that was only implied by a child.
            self.entries.insert(path, entry);
        } else if self.entries.insert(path.clone(), entry).is_some() {
            bail!("/{path} is added to the same layer twice");
        }
        Ok(())
    }

    fn add_parents(&mut self, path: &str) {
        let mut end = 0;
        while let Some(slash) = path[end..].find('/') {
            end += slash;
            self.entries.entry(path[..end].to_owned()).or_insert(Entry {
                kind: EntryKind::Dir,
                mode: 0o755,
                uid: 0,
                gid: 0,
            });
            end += 1;
        }
    }
}

/// `/etc//passwd/` → `etc/passwd`; refuses `..` and empty paths so nothing escapes the root.
fn normalise(path: &str) -> Result<String> {
    let parts: Vec<&str> = path
        .split('/')
        .filter(|p| !p.is_empty() && *p != ".")
        .collect();
    if parts.is_empty() {
        bail!("empty path '{path}' in a layer");
    }
    if parts.contains(&"..") {
        bail!("path '{path}' contains '..': layer paths must stay inside the image");
    }
    Ok(parts.join("/"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_are_sorted_with_parents_added() {
        let mut contents = LayerContents::new();
        contents
            .add_file(
                "/usr/share/zoneinfo/UTC",
                Contents::Bytes(b"x"[..].into()),
                0o644,
            )
            .unwrap();
        contents.add_dir("/tmp/", 0o1777, 0, 0).unwrap();
        contents
            .add_file("etc/passwd", Contents::Bytes(b"p"[..].into()), 0o644)
            .unwrap();
        let paths: Vec<&str> = contents.entries().map(|(path, _)| path).collect();
        assert_eq!(
            paths,
            [
                "etc",
                "etc/passwd",
                "tmp",
                "usr",
                "usr/share",
                "usr/share/zoneinfo",
                "usr/share/zoneinfo/UTC"
            ]
        );
    }

    #[test]
    fn escaping_and_duplicate_paths_are_refused() {
        let mut contents = LayerContents::new();
        assert!(contents.add_dir("../etc", 0o755, 0, 0).is_err());
        assert!(contents.add_dir("/", 0o755, 0, 0).is_err());
        contents.add_symlink("a/b", "c").unwrap();
        assert!(contents.add_symlink("a/b", "d").is_err());
        assert!(contents.add_hard_link("a/e", "missing").is_err());
    }
}
