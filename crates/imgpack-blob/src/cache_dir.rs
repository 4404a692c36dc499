//! Where imgpack keeps what outlives a build: layers, base images and the
//! blob-location record.

use std::path::PathBuf;

/// `$IMGPACK_CACHE_DIR`, else `$XDG_CACHE_HOME/imgpack`, else
/// `~/.cache/imgpack`; `None` with none of them set (an empty one counts as unset).
pub fn cache_dir() -> Option<PathBuf> {
    let var = |name| {
        std::env::var_os(name)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    var("IMGPACK_CACHE_DIR")
        .or_else(|| var("XDG_CACHE_HOME").map(|dir| dir.join("imgpack")))
        .or_else(|| var("HOME").map(|home| home.join(".cache/imgpack")))
}
