//! Where blobs were pushed before, and imgpack's cache directory.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// How many repositories are remembered per blob: enough to find a mount source.
const REPOSITORIES_PER_BLOB: usize = 4;

/// Where blobs were pushed before, per registry: the sources imgpack tries to
/// mount from instead of uploading (docker keeps the same record). Losing or
/// failing to read the file only costs an upload.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct BlobLocations {
    #[serde(skip)]
    path: Option<PathBuf>,
    /// Whether anything was recorded since loading: an unchanged file is not written again.
    #[serde(skip)]
    changed: bool,
    registries: BTreeMap<String, BTreeMap<String, Vec<String>>>,
}

impl BlobLocations {
    /// Loads `blob-locations.json` from imgpack's cache directory
    /// (`$IMGPACK_CACHE_DIR`, `$XDG_CACHE_HOME/imgpack` or `~/.cache/imgpack`).
    pub fn load() -> Self {
        let Some(dir) = cache_dir() else {
            return Self::default();
        };
        // A record others could write is neither read nor written: it only
        // saves uploads, and a build that uses the cache says what is wrong.
        if dir.exists() && imgpack_blob::check_private_cache(&dir, "").is_err() {
            return Self::default();
        }
        let path = dir.join("blob-locations.json");
        // Not through a link planted at the path, bounded, never a FIFO.
        let kind = imgpack_blob::local_file::CACHE_LOCATIONS;
        let mut locations: Self = imgpack_blob::read_local_file(&path, &kind)
            .ok()
            .and_then(|bytes| serde_json::from_slice(&bytes).ok())
            .unwrap_or_default();
        locations.path = Some(path);
        locations
    }

    /// Repositories of `registry` other than `except` known to hold `digest`, most recent first.
    pub fn sources(&self, registry: &str, digest: &str, except: &str) -> Vec<String> {
        self.registries
            .get(registry)
            .and_then(|blobs| blobs.get(digest))
            .map(|repos| repos.iter().filter(|r| *r != except).cloned().collect())
            .unwrap_or_default()
    }

    pub fn record(&mut self, registry: &str, digest: &str, repository: &str) {
        let repos = self
            .registries
            .entry(registry.to_owned())
            .or_default()
            .entry(digest.to_owned())
            .or_default();
        if repos.first().is_some_and(|r| r == repository) {
            return;
        }
        repos.retain(|r| r != repository);
        repos.insert(0, repository.to_owned());
        repos.truncate(REPOSITORIES_PER_BLOB);
        self.changed = true;
    }

    /// Writes the record back if it changed; a failure is reported by the
    /// caller as a warning. Written to a new file of its own (never through
    /// a name someone else could have planted, such as a symbolic link) and
    /// renamed into place, which replaces whatever stood at the path.
    pub fn save(&self) -> anyhow::Result<()> {
        let (Some(path), true) = (&self.path, self.changed) else {
            return Ok(());
        };
        let dir = path.parent().expect("cache file has a parent");
        create_private_dir(dir)?;
        imgpack_blob::write_atomically(path, &serde_json::to_vec(self)?, 0o600)
    }
}

/// Creates `dir` (and missing parents) readable by its owner only, as docker
/// does for ~/.docker; an existing directory is left as it is.
pub(crate) fn create_private_dir(dir: &std::path::Path) -> anyhow::Result<()> {
    use anyhow::Context;
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("cannot create {}", dir.display()))
}

pub(crate) fn cache_dir() -> Option<PathBuf> {
    imgpack_blob::cache_dir()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_exclude_the_target_and_are_bounded() {
        let mut locations = BlobLocations::default();
        for repo in ["a", "b", "c", "d", "e"] {
            locations.record("reg:5000", "sha256:x", repo);
        }
        assert_eq!(
            locations.sources("reg:5000", "sha256:x", "e"),
            ["d", "c", "b"]
        );
        assert!(locations.sources("other", "sha256:x", "e").is_empty());
        locations.record("reg:5000", "sha256:x", "b");
        assert_eq!(
            locations.sources("reg:5000", "sha256:x", "none"),
            ["b", "e", "d", "c"]
        );
    }

    #[test]
    fn an_unchanged_record_is_not_written_again() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cache/blob-locations.json");
        let mut locations = BlobLocations {
            path: Some(path.clone()),
            ..Default::default()
        };
        locations.save().unwrap();
        assert!(!path.exists(), "nothing recorded, yet the file was written");
        locations.record("reg:5000", "sha256:x", "a");
        locations.save().unwrap();
        let saved: BlobLocations = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        assert_eq!(saved.sources("reg:5000", "sha256:x", "b"), ["a"]);
        // The same repository again, already first: nothing changes.
        let mut again = BlobLocations {
            path: Some(path.clone()),
            ..saved
        };
        again.record("reg:5000", "sha256:x", "a");
        assert!(!again.changed);
        assert_eq!(
            std::fs::read_dir(dir.path().join("cache")).unwrap().count(),
            1
        );
    }
}
