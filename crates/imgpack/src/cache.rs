//! `imgpack cache`: where the cache is, what it holds, and pruning it; and the
//! cache settings a build reads (`--no-cache`, `IMGPACK_CACHE_MAX_SIZE`).

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use imgpack_layer::{parse_size, LayerCache, DEFAULT_MAX_SIZE};

use crate::cli::CacheArgs;

/// Environment variable bounding the layer cache's size.
pub const MAX_SIZE_ENV: &str = "IMGPACK_CACHE_MAX_SIZE";

/// The cache directory, or an error saying how to name one.
pub fn dir() -> Result<PathBuf> {
    imgpack_blob::cache_dir()
        .context("no cache directory: set IMGPACK_CACHE_DIR (or HOME, or XDG_CACHE_HOME)")
}

/// `IMGPACK_CACHE_MAX_SIZE`, else 10 GiB.
pub fn max_size() -> Result<u64> {
    match std::env::var(MAX_SIZE_ENV) {
        Ok(text) if !text.is_empty() => {
            parse_size(&text).with_context(|| format!("{MAX_SIZE_ENV}={text}"))
        }
        _ => Ok(DEFAULT_MAX_SIZE),
    }
}

pub fn run(args: CacheArgs) -> Result<()> {
    let dir = dir()?;
    let layers = LayerCache::open(&dir)?;
    let limit = match (args.clear, args.prune, &args.max_size) {
        (true, ..) => Some(0),
        (false, true, Some(text)) => {
            Some(parse_size(text).with_context(|| format!("--max-size {text}"))?)
        }
        (false, true, None) => Some(max_size()?),
        (false, false, _) => None,
    };
    if let Some(limit) = limit {
        let before = layers.usage()?;
        let after = layers.prune(limit)?;
        println!(
            "pruned {} layers ({})",
            before.entries - after.entries.min(before.entries),
            human(before.bytes.saturating_sub(after.bytes))
        );
    }
    let usage = layers.usage()?;
    println!("cache: {}", dir.display());
    println!(
        "layers: {} entries, {} in {} blobs (pruned to {} after each build; {MAX_SIZE_ENV})",
        usage.entries,
        human(usage.bytes),
        usage.blobs,
        human(max_size()?)
    );
    println!("base images: {}", human(dir_size(&dir.join("base"))));
    Ok(())
}

/// The bytes of the files under `dir` (0 if it does not exist).
fn dir_size(dir: &Path) -> u64 {
    let Ok(listing) = fs::read_dir(dir) else {
        return 0;
    };
    listing
        .flatten()
        .map(|entry| match entry.file_type() {
            Ok(kind) if kind.is_dir() => dir_size(&entry.path()),
            Ok(_) => entry.metadata().map_or(0, |m| m.len()),
            Err(_) => 0,
        })
        .sum()
}

fn human(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}
