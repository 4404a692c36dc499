//! The layer cache: finished layers (compressed blob, diffID, size) kept under
//! the digest of their complete recipe, so an unchanged layer costs one hash
//! of its inputs instead of a compression.
//!
//! Layout, under `<cache dir>/layers` (private to the user, 0700):
//! `blobs/sha256/<hex>` the compressed blobs (a [`BlobStore`]), and
//! `entries/<recipe hex>` one small text file per recipe naming its blob.
//! Every file appears by an atomic rename, so several imgpack processes can
//! share the cache: the worst a race does is write the same entry twice. An
//! entry's modification time is its last use, which pruning goes by.

use std::collections::BTreeSet;
use std::fs::{self, File};
use std::io::{self, Write};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use anyhow::{bail, Context, Result};
use imgpack_blob::{local_file, BlobInfo, BlobStore, Digest, DigestWriter};

use crate::writer::LayerOptions;
use crate::{write_layer, Contents, EntryKind, Layer, LayerContents};

/// Part of every recipe: bump it whenever imgpack writes the same contents as
/// other bytes (tar headers, block size, compressor settings), so old entries
/// are never used for the new format.
const LAYER_FORMAT: &str =
    "imgpack layer format 3 (tar gnu, gzip 128 KiB blocks, zstd mt 1 MiB jobs)";
/// The libraries that decide the compressed bytes, as pinned in Cargo.toml
/// (a test checks this against Cargo.lock).
const COMPRESSION_LIBRARIES: &str = "flate2 1.1.11, zlib-rs 0.6.8, zstd-sys 2.1.3+zstd.1.5.7";
/// The first line of an entry file.
const ENTRY_HEADER: &str = "imgpack layer cache entry 1";

/// The default bound on the layers' total size (`IMGPACK_CACHE_MAX_SIZE`).
pub const DEFAULT_MAX_SIZE: u64 = 10 << 30;

/// Finished layers by recipe; see the module documentation.
#[derive(Clone, Debug)]
pub struct LayerCache {
    store: BlobStore,
    entries: PathBuf,
}

/// What a build got from [`LayerCache::layer`]: the layer and whether it was in the cache.
#[derive(Debug)]
pub struct CachedLayer {
    pub layer: Layer,
    pub hit: bool,
}

/// The cache's size: entries and the bytes of their blobs.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct CacheUsage {
    pub entries: usize,
    pub blobs: usize,
    pub bytes: u64,
}

impl LayerCache {
    /// Opens (creating it, owner-only) the layer cache in `cache_dir`, which
    /// must be private to the user ([`imgpack_blob::check_private_cache`]).
    pub fn open(cache_dir: &Path) -> Result<Self> {
        let root = cache_dir.join("layers");
        let entries = root.join("entries");
        // Layers may hold private code: like the base images, the owner's only
        // (directories that already exist are left as they are), whatever the umask.
        for dir in [&entries, &root.join("blobs/sha256")] {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .with_context(|| format!("cannot create the layer cache {}", dir.display()))?;
        }
        imgpack_blob::check_private_cache(cache_dir, imgpack_blob::LAYER_CACHE_WAY_OUT)?;
        Ok(Self {
            store: BlobStore::open(&root)?,
            entries,
        })
    }

    /// The layer `contents` makes with `options`: from the cache when an
    /// intact entry has its recipe, else written into `store` and cached.
    pub fn layer(
        &self,
        store: &BlobStore,
        contents: &LayerContents,
        options: &LayerOptions,
    ) -> Result<CachedLayer> {
        let recipe = Recipe::of(contents, options)?;
        if let Some(layer) = self.lookup(&recipe.key, store, options)? {
            return Ok(CachedLayer { layer, hit: true });
        }
        let layer = write_layer(store, contents, options)?;
        // A file that changed while it was read would file the layer under
        // the wrong recipe: then the layer is used but not cached.
        if recipe.sources_unchanged() {
            self.insert(&recipe.key, &layer, store)?;
        }
        Ok(CachedLayer { layer, hit: false })
    }

    /// The cached layer of `key`, copied into `store`. The copy is hashed
    /// against the entry's blob digest on every use; the blob's diff ID is
    /// checked by decompressing it whenever the blob's stamp differs from the
    /// one recorded when both were last checked. A damaged, half-pruned or
    /// tampered entry is dropped and rebuilt, never used.
    fn lookup(
        &self,
        key: &Digest,
        store: &BlobStore,
        options: &LayerOptions,
    ) -> Result<Option<Layer>> {
        let path = self.entry_path(key);
        let text = match imgpack_blob::read_local_text(&path, &local_file::CACHE_RECORD) {
            Ok(text) => text,
            Err(err) if err.is_not_found() => return Ok(None),
            // A FIFO, a link or a huge file where an entry should be: not ours.
            Err(_) => {
                let _ = fs::remove_file(&path);
                return Ok(None);
            }
        };
        let Some(entry) = parse_entry(&text) else {
            let _ = fs::remove_file(&path);
            return Ok(None);
        };
        let cached = self.store.path(&entry.blob.digest);
        let drop_entry = || {
            let _ = fs::remove_file(&cached);
            let _ = fs::remove_file(&path);
        };
        let Some(stamp) = BlobStamp::of(&cached) else {
            drop_entry();
            return Ok(None);
        };
        if entry.checked.as_ref() != Some(&stamp) {
            match check(&cached, &entry, options.compression) {
                Check::Intact => {}
                Check::Damaged => {
                    drop_entry();
                    return Ok(None);
                }
                // The blob is what its name says; the entry is what is wrong.
                Check::OtherDiffId => {
                    let _ = fs::remove_file(&path);
                    return Ok(None);
                }
            }
            // Checked as it stands: the next use decompresses it only if it changed.
            if stamp.settled() {
                let _ = write_entry(&path, &entry.blob, &entry.diff_id, Some(&stamp));
            }
        }
        // A copy, not a link: the cached file's stamp stays as it was, and
        // what the image gets is hashed against the blob digest as it goes.
        if store.copy_checked(&self.store, &entry.blob).is_err() {
            drop_entry();
            return Ok(None);
        }
        // Last use, for pruning; a read-only cache still serves.
        let _ = File::options()
            .append(true)
            .open(&path)
            .and_then(|file| file.set_modified(SystemTime::now()));
        Ok(Some(Layer {
            blob: entry.blob,
            diff_id: entry.diff_id,
            compression: options.compression,
        }))
    }

    fn insert(&self, key: &Digest, layer: &Layer, from: &BlobStore) -> Result<()> {
        self.store
            .import(from, &layer.blob)
            .context("cannot copy a layer into the cache")?;
        // No stamp yet: the blob was just written, so its time is not settled.
        write_entry(&self.entry_path(key), &layer.blob, &layer.diff_id, None)
    }

    fn entry_path(&self, key: &Digest) -> PathBuf {
        self.entries.join(key.hex())
    }

    /// Entries and blob bytes now in the cache.
    pub fn usage(&self) -> Result<CacheUsage> {
        let entries = self.list_entries()?;
        let blobs = self.list_blobs()?;
        Ok(CacheUsage {
            entries: entries.len(),
            blobs: blobs.len(),
            bytes: blobs.iter().map(|(_, size)| size).sum(),
        })
    }

    /// Drops the least recently used entries until the blobs take at most
    /// `max_bytes`, then every blob no entry names. Returns the usage after.
    pub fn prune(&self, max_bytes: u64) -> Result<CacheUsage> {
        let mut entries = self.list_entries()?;
        // Oldest use first.
        entries.sort_by_key(|entry| entry.used);
        let blob_sizes: std::collections::BTreeMap<String, u64> =
            self.list_blobs()?.into_iter().collect();
        let size_of = |entries: &[ListedEntry]| -> u64 {
            let named: BTreeSet<&str> = entries.iter().filter_map(|e| e.blob.as_deref()).collect();
            named.iter().filter_map(|hex| blob_sizes.get(*hex)).sum()
        };
        let mut keep = entries.len();
        while keep > 0 && size_of(&entries[entries.len() - keep..]) > max_bytes {
            keep -= 1;
        }
        let (dropped, kept) = entries.split_at(entries.len() - keep);
        for entry in dropped {
            let _ = fs::remove_file(&entry.path);
        }
        let named: BTreeSet<&str> = kept.iter().filter_map(|e| e.blob.as_deref()).collect();
        for hex in blob_sizes
            .keys()
            .filter(|hex| !named.contains(hex.as_str()))
        {
            let _ = fs::remove_file(self.store.root().join("blobs/sha256").join(hex));
        }
        self.usage()
    }

    fn list_entries(&self) -> Result<Vec<ListedEntry>> {
        let mut listed = Vec::new();
        for entry in read_dir(&self.entries)? {
            let path = entry.path();
            let Ok(metadata) = entry.metadata() else {
                continue;
            };
            let blob = imgpack_blob::read_local_text(&path, &local_file::CACHE_RECORD)
                .ok()
                .and_then(|text| parse_entry(&text))
                .map(|entry| entry.blob.digest.hex().to_owned());
            listed.push(ListedEntry {
                used: metadata.modified().unwrap_or(SystemTime::UNIX_EPOCH),
                path,
                blob,
            });
        }
        Ok(listed)
    }

    fn list_blobs(&self) -> Result<Vec<(String, u64)>> {
        let dir = self.store.root().join("blobs/sha256");
        let mut blobs = Vec::new();
        for entry in read_dir(&dir)? {
            let name = entry.file_name().to_string_lossy().into_owned();
            if let Ok(metadata) = entry.metadata() {
                blobs.push((name, metadata.len()));
            }
        }
        Ok(blobs)
    }
}

struct ListedEntry {
    path: PathBuf,
    used: SystemTime,
    /// The hex digest of its blob; `None` for an unreadable entry.
    blob: Option<String>,
}

/// The directory's entries, without the temporary files (`.name`) of writers.
fn read_dir(dir: &Path) -> Result<Vec<fs::DirEntry>> {
    let listing = fs::read_dir(dir).with_context(|| format!("cannot list {}", dir.display()))?;
    Ok(listing
        .flatten()
        .filter(|entry| !entry.file_name().to_string_lossy().starts_with('.'))
        .collect())
}

/// An entry file: the blob it names, its diffID, and the blob's stamp when it
/// was last hashed intact.
struct Entry {
    blob: BlobInfo,
    diff_id: Digest,
    checked: Option<BlobStamp>,
}

fn parse_entry(text: &str) -> Option<Entry> {
    let mut lines = text.lines();
    if lines.next()? != ENTRY_HEADER {
        return None;
    }
    let mut field = |name: &str| lines.next()?.strip_prefix(name)?.strip_prefix(' ');
    let digest = Digest::parse(field("blob")?)?;
    let size = field("size")?.parse().ok()?;
    let diff_id = Digest::parse(field("diff_id")?)?;
    let checked = field("checked").and_then(BlobStamp::parse);
    Some(Entry {
        blob: BlobInfo { digest, size },
        diff_id,
        checked,
    })
}

fn write_entry(
    path: &Path,
    blob: &BlobInfo,
    diff_id: &Digest,
    checked: Option<&BlobStamp>,
) -> Result<()> {
    let mut text = format!(
        "{ENTRY_HEADER}\nblob {}\nsize {}\ndiff_id {diff_id}\n",
        blob.digest, blob.size
    );
    if let Some(stamp) = checked {
        text.push_str(&format!("checked {}\n", stamp.format()));
    }
    imgpack_blob::write_atomically(path, text.as_bytes(), 0o600)
}

/// A cached blob as the file system sees it: inode, size, modification and
/// change time. Any write to the file gives it a new change time, which
/// (unlike the modification time) nobody can set back; so a blob whose stamp
/// is the one it had when its digest and diff ID were last checked is not
/// decompressed again. Builds copy cached blobs rather than link them, so
/// using a layer leaves its stamp as it was.
#[derive(Clone, Debug, PartialEq, Eq)]
struct BlobStamp {
    inode: u64,
    size: u64,
    modified_ns: i128,
    changed_ns: i128,
}

/// How old a blob's times must be before its stamp is trusted: a write
/// within the same tick of the file system's clock would leave the times as
/// they were (git's "racy clean" files), so a fresh time proves nothing.
const SETTLED: std::time::Duration = std::time::Duration::from_secs(2);

impl BlobStamp {
    /// The stamp of the regular file at `path` (a link there has none).
    fn of(path: &Path) -> Option<Self> {
        use std::os::unix::fs::MetadataExt;
        let metadata = fs::symlink_metadata(path).ok()?;
        let nanos = |secs: i64, nsec: i64| i128::from(secs) * 1_000_000_000 + i128::from(nsec);
        metadata.is_file().then(|| Self {
            inode: metadata.ino(),
            size: metadata.size(),
            modified_ns: nanos(metadata.mtime(), metadata.mtime_nsec()),
            changed_ns: nanos(metadata.ctime(), metadata.ctime_nsec()),
        })
    }

    /// Whether both times are old enough to tell later writes apart.
    fn settled(&self) -> bool {
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as i128);
        let settled = SETTLED.as_nanos() as i128;
        now - self.modified_ns >= settled && now - self.changed_ns >= settled
    }

    fn format(&self) -> String {
        format!(
            "{} {} {} {}",
            self.inode, self.size, self.modified_ns, self.changed_ns
        )
    }

    /// A stamp of four fields; older entries' three-field stamps parse as
    /// none, so their blobs are checked again.
    fn parse(text: &str) -> Option<Self> {
        let mut parts = text.split(' ');
        let stamp = Self {
            inode: parts.next()?.parse().ok()?,
            size: parts.next()?.parse().ok()?,
            modified_ns: parts.next()?.parse().ok()?,
            changed_ns: parts.next()?.parse().ok()?,
        };
        parts.next().is_none().then_some(stamp)
    }
}

/// What a cached blob turned out to be, against its entry.
enum Check {
    Intact,
    /// Not the entry's blob (digest or size), or it does not decompress.
    Damaged,
    /// The entry's blob, but it decompresses to another diff ID than the
    /// entry says: an image config would claim a diff ID its layer lacks.
    OtherDiffId,
}

/// Checks the cached blob at `path` against its entry: digest and size,
/// then the diff ID of what it decompresses to.
fn check(path: &Path, entry: &Entry, compression: crate::Compression) -> Check {
    if !digest_of_file(path).is_ok_and(|blob| blob == entry.blob) {
        return Check::Damaged;
    }
    let Ok((file, _)) = imgpack_blob::open_regular(path, &local_file::STORED_BLOB) else {
        return Check::Damaged;
    };
    match crate::diff_id(file, compression.name()) {
        Ok(diff_id) if diff_id == entry.diff_id => Check::Intact,
        Ok(_) => Check::OtherDiffId,
        Err(_) => Check::Damaged,
    }
}

fn digest_of_file(path: &Path) -> Result<BlobInfo> {
    imgpack_blob::digest_of_file(path).with_context(|| format!("cannot read {}", path.display()))
}

/// A layer's complete recipe, hashed: what decides its bytes, and nothing else
/// (the thread count does not).
struct Recipe {
    key: Digest,
    /// Size and modification time of each source file when it was hashed.
    sources: Vec<(PathBuf, Option<(u64, SystemTime)>)>,
}

impl Recipe {
    fn of(contents: &LayerContents, options: &LayerOptions) -> Result<Self> {
        let mut hasher = DigestWriter::new(io::sink());
        let mut sources = Vec::new();
        let field = |hasher: &mut DigestWriter<io::Sink>, value: &[u8]| {
            // Length-prefixed, so no two recipes write the same stream.
            hasher.write_all(&(value.len() as u64).to_le_bytes())?;
            hasher.write_all(value)
        };
        field(&mut hasher, LAYER_FORMAT.as_bytes())?;
        field(&mut hasher, COMPRESSION_LIBRARIES.as_bytes())?;
        let compression = options.compression;
        field(&mut hasher, compression.name().as_bytes())?;
        field(&mut hasher, &compression.level().to_le_bytes())?;
        field(&mut hasher, &options.mtime.to_le_bytes())?;
        for (path, entry) in contents.entries() {
            field(&mut hasher, path.as_bytes())?;
            field(&mut hasher, &entry.mode.to_le_bytes())?;
            field(&mut hasher, &entry.uid.to_le_bytes())?;
            field(&mut hasher, &entry.gid.to_le_bytes())?;
            let (kind, value): (&[u8], Vec<u8>) = match &entry.kind {
                EntryKind::Dir => (b"dir", Vec::new()),
                EntryKind::Symlink(target) => (b"symlink", target.as_bytes().to_vec()),
                EntryKind::HardLink(target) => (b"link", target.as_bytes().to_vec()),
                EntryKind::File(Contents::Bytes(bytes)) => {
                    (b"file", Digest::of_bytes(bytes).to_string().into_bytes())
                }
                EntryKind::File(Contents::File(source)) => {
                    let before = file_stamp(source);
                    let digest = digest_of_file(source)?;
                    sources.push((source.clone(), before));
                    (
                        b"file",
                        format!("{} {}", digest.digest, digest.size).into_bytes(),
                    )
                }
            };
            field(&mut hasher, kind)?;
            field(&mut hasher, &value)?;
        }
        let (_, key, _) = hasher.finish();
        Ok(Self { key, sources })
    }

    fn sources_unchanged(&self) -> bool {
        self.sources
            .iter()
            .all(|(path, stamp)| stamp.is_some() && file_stamp(path) == *stamp)
    }
}

fn file_stamp(path: &Path) -> Option<(u64, SystemTime)> {
    let metadata = fs::metadata(path).ok()?;
    Some((metadata.len(), metadata.modified().ok()?))
}

/// `10GiB`, `500MB`, `1.5G`, `0`: a size in bytes (K, M, G, T are powers of
/// 1024 with or without `iB`; `KB`, `MB`… powers of 1000).
pub fn parse_size(text: &str) -> Result<u64> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let multiplier: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kib" => 1 << 10,
        "m" | "mib" => 1 << 20,
        "g" | "gib" => 1 << 30,
        "t" | "tib" => 1 << 40,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        "tb" => 1_000_000_000_000,
        _ => bail!("bad size '{text}': use a number with an optional unit, such as 500MiB or 10GB"),
    };
    let Ok(number) = number.parse::<f64>() else {
        bail!("bad size '{text}': use a number with an optional unit, such as 500MiB or 10GB");
    };
    Ok((number * multiplier as f64) as u64)
}

#[cfg(test)]
mod tests {
    use std::num::NonZeroUsize;

    use super::*;
    use crate::{tzdata_layer, Compression, Tzdata, Workers};

    struct Setup {
        dir: tempfile::TempDir,
        binary: PathBuf,
    }

    impl Setup {
        fn new() -> Self {
            let dir = tempfile::tempdir().unwrap();
            let binary = dir.path().join("api");
            let bytes: Vec<u8> = (0..300_000u32)
                .map(|i| (i % 251) as u8 ^ (i >> 12) as u8)
                .collect();
            fs::write(&binary, bytes).unwrap();
            Self { dir, binary }
        }

        fn cache(&self) -> LayerCache {
            LayerCache::open(&self.dir.path().join("cache")).unwrap()
        }

        /// A new build's store: nothing carries over between builds but the cache.
        fn store(&self, name: &str) -> BlobStore {
            BlobStore::open(self.dir.path().join(name)).unwrap()
        }

        fn contents(&self, mode: u32) -> LayerContents {
            let mut contents = LayerContents::new();
            contents
                .add_file("app/api", Contents::File(self.binary.clone()), mode)
                .unwrap();
            contents
        }
    }

    fn options(compression: Compression) -> LayerOptions {
        LayerOptions::single_threaded(compression, 0)
    }

    const GZIP: Compression = Compression::Gzip { level: 6 };

    #[test]
    fn an_unchanged_layer_comes_from_the_cache_into_a_new_store() {
        let setup = Setup::new();
        let cache = setup.cache();
        let first = cache
            .layer(&setup.store("a"), &setup.contents(0o755), &options(GZIP))
            .unwrap();
        assert!(!first.hit);
        let store = setup.store("b");
        let second = cache
            .layer(&store, &setup.contents(0o755), &options(GZIP))
            .unwrap();
        assert!(second.hit);
        assert_eq!(second.layer, first.layer);
        assert_eq!(
            digest_of_file(&store.path(&first.layer.blob.digest)).unwrap(),
            first.layer.blob
        );
        // More threads, same bytes: the thread count is not part of the recipe.
        let threaded = LayerOptions {
            workers: Workers::new(NonZeroUsize::new(4).unwrap()).unwrap(),
            ..options(GZIP)
        };
        assert!(
            cache
                .layer(&setup.store("c"), &setup.contents(0o755), &threaded)
                .unwrap()
                .hit
        );
        assert_eq!(
            cache.usage().unwrap(),
            CacheUsage {
                entries: 1,
                blobs: 1,
                bytes: first.layer.blob.size
            }
        );
    }

    #[test]
    fn any_change_to_the_recipe_is_a_new_layer() {
        let setup = Setup::new();
        let cache = setup.cache();
        let store = setup.store("s");
        let build = |contents: &LayerContents, options: &LayerOptions| {
            cache.layer(&store, contents, options).unwrap()
        };
        let original = build(&setup.contents(0o755), &options(GZIP));

        let mode = build(&setup.contents(0o700), &options(GZIP));
        let level = build(
            &setup.contents(0o755),
            &options(Compression::Gzip { level: 5 }),
        );
        let zstd = build(
            &setup.contents(0o755),
            &options(Compression::Zstd { level: 3 }),
        );
        let time = build(
            &setup.contents(0o755),
            &LayerOptions::single_threaded(GZIP, 1),
        );
        for changed in [&mode, &level, &zstd, &time] {
            assert!(!changed.hit);
            assert_ne!(changed.layer.blob.digest, original.layer.blob.digest);
        }

        // One byte of the binary, same size and (as far as a coarse clock goes) same time.
        let mut bytes = fs::read(&setup.binary).unwrap();
        bytes[123_456] ^= 1;
        fs::write(&setup.binary, bytes).unwrap();
        let edited = build(&setup.contents(0o755), &options(GZIP));
        assert!(!edited.hit);
        assert_ne!(edited.layer.diff_id, original.layer.diff_id);
        assert!(build(&setup.contents(0o755), &options(GZIP)).hit);
    }

    #[test]
    fn a_new_tzdata_version_is_a_new_layer() {
        let setup = Setup::new();
        let cache = setup.cache();
        let store = setup.store("s");
        let zoneinfo = |name: &str, tzif: &[u8]| {
            let dir = setup.dir.path().join(name);
            fs::create_dir_all(&dir).unwrap();
            fs::write(dir.join("UTC"), tzif).unwrap();
            tzdata_layer(&Tzdata::Dir(dir), None)
                .unwrap()
                .unwrap()
                .contents
        };
        // Two releases of the same zone: the same name, other transitions.
        let old = zoneinfo("2025a", &tzif(0));
        let new = zoneinfo("2025b", &tzif(3600));
        let first = cache.layer(&store, &old, &options(GZIP)).unwrap();
        assert!(cache.layer(&store, &old, &options(GZIP)).unwrap().hit);
        let second = cache.layer(&store, &new, &options(GZIP)).unwrap();
        assert!(!second.hit);
        assert_ne!(first.layer.diff_id, second.layer.diff_id);
    }

    /// A minimal version-1 TZif file with one zone type at `offset` seconds.
    fn tzif(offset: i32) -> Vec<u8> {
        let mut bytes = b"TZif".to_vec();
        bytes.push(0);
        bytes.extend([0u8; 15]);
        // isutcnt, isstdcnt, leapcnt, timecnt, typecnt, charcnt
        for count in [0u32, 0, 0, 0, 1, 4] {
            bytes.extend(count.to_be_bytes());
        }
        bytes.extend(offset.to_be_bytes());
        bytes.extend([0u8, 0]);
        bytes.extend(b"UTC\0");
        bytes
    }

    #[test]
    fn a_damaged_entry_is_rebuilt_not_used() {
        let setup = Setup::new();
        let cache = setup.cache();
        let first = cache
            .layer(&setup.store("a"), &setup.contents(0o755), &options(GZIP))
            .unwrap();
        let cached_blob = setup
            .dir
            .path()
            .join("cache/layers/blobs/sha256")
            .join(first.layer.blob.digest.hex());
        let mut bytes = fs::read(&cached_blob).unwrap();
        bytes[100] ^= 0xff;
        fs::write(&cached_blob, bytes).unwrap();

        let store = setup.store("b");
        let rebuilt = cache
            .layer(&store, &setup.contents(0o755), &options(GZIP))
            .unwrap();
        assert!(!rebuilt.hit);
        assert_eq!(rebuilt.layer, first.layer);
        assert_eq!(
            digest_of_file(&store.path(&first.layer.blob.digest)).unwrap(),
            first.layer.blob
        );
        // And cached again, intact.
        assert!(
            cache
                .layer(&setup.store("c"), &setup.contents(0o755), &options(GZIP))
                .unwrap()
                .hit
        );

        // An entry file that is not one is a miss too.
        for entry in read_dir(&setup.dir.path().join("cache/layers/entries")).unwrap() {
            fs::write(entry.path(), "garbage").unwrap();
        }
        assert!(
            !cache
                .layer(&setup.store("d"), &setup.contents(0o755), &options(GZIP))
                .unwrap()
                .hit
        );
    }

    /// A blob checked (digest and diff ID) once its times settled is not
    /// decompressed again while its stamp holds. Any write to it changes its
    /// change time, even with the modification time set back: the next use
    /// checks it again, finds it damaged and rebuilds it.
    #[test]
    fn a_settled_blob_is_trusted_by_its_stamp_until_written() {
        let setup = Setup::new();
        let cache = setup.cache();
        let build = |store: &str| {
            cache
                .layer(&setup.store(store), &setup.contents(0o755), &options(GZIP))
                .unwrap()
        };
        let first = build("a");
        let cached_blob = setup
            .dir
            .path()
            .join("cache/layers/blobs/sha256")
            .join(first.layer.blob.digest.hex());
        let long_ago = SystemTime::now() - std::time::Duration::from_secs(60);
        let set_time = |time| {
            File::options()
                .append(true)
                .open(&cached_blob)
                .unwrap()
                .set_modified(time)
                .unwrap()
        };
        set_time(long_ago);
        // The change time cannot be set back: wait for it to settle.
        std::thread::sleep(SETTLED + std::time::Duration::from_millis(100));
        assert!(build("b").hit, "checked, intact: the stamp is recorded");
        let entry = read_dir(&setup.dir.path().join("cache/layers/entries")).unwrap();
        let text = fs::read_to_string(entry[0].path()).unwrap();
        assert!(text.contains("\nchecked "), "{text}");
        assert!(build("c").hit, "used on its stamp");

        let mut bytes = fs::read(&cached_blob).unwrap();
        bytes[100] ^= 0xff;
        File::options()
            .write(true)
            .open(&cached_blob)
            .unwrap()
            .write_all(&bytes)
            .unwrap();
        set_time(long_ago);
        let rebuilt = build("d");
        assert!(!rebuilt.hit);
        assert_eq!(rebuilt.layer, first.layer);
    }

    /// An entry whose blob is intact but whose diff ID is another one (what a
    /// writer of the cache could plant) is not used: the image would name a
    /// diff ID its layer does not have.
    #[test]
    fn an_entry_whose_diff_id_is_not_its_blobs_is_not_used() {
        let setup = Setup::new();
        let cache = setup.cache();
        let first = cache
            .layer(&setup.store("a"), &setup.contents(0o755), &options(GZIP))
            .unwrap();
        let entry = read_dir(&setup.dir.path().join("cache/layers/entries")).unwrap();
        let forged = Digest::of_bytes(b"another layer");
        write_entry(&entry[0].path(), &first.layer.blob, &forged, None).unwrap();
        let rebuilt = cache
            .layer(&setup.store("b"), &setup.contents(0o755), &options(GZIP))
            .unwrap();
        assert!(!rebuilt.hit, "an entry with a forged diff ID was used");
        assert_eq!(rebuilt.layer, first.layer);
    }

    #[test]
    fn builds_sharing_the_cache_at_once_agree() {
        let setup = Setup::new();
        let layers: Vec<Layer> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..6)
                .map(|n| {
                    let setup = &setup;
                    scope.spawn(move || {
                        // Each its own handle, as separate processes have.
                        let cache = setup.cache();
                        cache
                            .layer(
                                &setup.store(&format!("s{n}")),
                                &setup.contents(0o755),
                                &options(GZIP),
                            )
                            .unwrap()
                            .layer
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert!(layers.windows(2).all(|pair| pair[0] == pair[1]));
        let cache = setup.cache();
        assert_eq!(cache.usage().unwrap().entries, 1);
        assert!(
            cache
                .layer(&setup.store("last"), &setup.contents(0o755), &options(GZIP))
                .unwrap()
                .hit
        );
    }

    #[test]
    fn pruning_drops_the_least_recently_used_first() {
        let setup = Setup::new();
        let cache = setup.cache();
        let store = setup.store("s");
        let mut sizes = Vec::new();
        for mode in [0o700, 0o750, 0o755] {
            sizes.push(
                cache
                    .layer(&store, &setup.contents(mode), &options(GZIP))
                    .unwrap()
                    .layer
                    .blob
                    .size,
            );
            // Entry times are compared: keep them apart on coarse clocks.
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        // Use the oldest again: now 0o750 is the least recently used.
        assert!(
            cache
                .layer(&store, &setup.contents(0o700), &options(GZIP))
                .unwrap()
                .hit
        );
        let usage = cache.prune(sizes[0] + sizes[2]).unwrap();
        assert_eq!(usage.entries, 2);
        assert_eq!(usage.bytes, sizes[0] + sizes[2]);
        assert!(
            !cache
                .layer(&store, &setup.contents(0o750), &options(GZIP))
                .unwrap()
                .hit
        );
        assert_eq!(cache.prune(0).unwrap(), CacheUsage::default());
    }

    #[test]
    fn the_cache_is_private() {
        use std::os::unix::fs::PermissionsExt;
        let setup = Setup::new();
        setup.cache();
        for dir in ["cache", "cache/layers", "cache/layers/entries"] {
            let mode = fs::metadata(setup.dir.path().join(dir))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o700, "{dir}");
        }
    }

    #[test]
    fn the_pinned_libraries_are_the_ones_in_the_recipe() {
        let lock =
            fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../Cargo.lock")).unwrap();
        for library in COMPRESSION_LIBRARIES.split(", ") {
            let (name, version) = library.split_once(' ').unwrap();
            let entry = format!("name = \"{name}\"\nversion = \"{version}\"");
            assert!(lock.contains(&entry), "Cargo.lock has no {library}: update COMPRESSION_LIBRARIES (and LAYER_FORMAT if bytes change)");
        }
    }

    #[test]
    fn sizes_parse_with_units() {
        assert_eq!(parse_size("10GiB").unwrap(), 10 << 30);
        assert_eq!(parse_size("500MB").unwrap(), 500_000_000);
        assert_eq!(parse_size("1.5G").unwrap(), 3 << 29);
        assert_eq!(parse_size("0").unwrap(), 0);
        assert!(parse_size("lots").is_err());
        assert!(parse_size("5 parsecs").is_err());
    }
}
