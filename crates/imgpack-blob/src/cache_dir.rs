//! Where imgpack keeps what outlives a build: layers, base images and the
//! blob-location record.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

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

/// Checks that nobody but the current user can change what the cache at
/// `root` holds: `root` and every directory and file under it belong to the
/// user and are not writable by group or others, and nothing in it is a
/// symbolic link, FIFO, socket or device (imgpack writes none of these). A
/// cache someone else can write could hand a build any layer (its entries
/// say which blob a recipe gives), so it is refused, as ssh refuses a key
/// file others can read, with the fix in the message. Checked once per
/// process and root.
pub fn check_private_cache(root: &Path, way_out: &str) -> anyhow::Result<()> {
    static CHECKED: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());
    if CHECKED
        .lock()
        .expect("not poisoned")
        .iter()
        .any(|p| p == root)
    {
        return Ok(());
    }
    // SAFETY: geteuid has no preconditions and cannot fail.
    let uid = unsafe { libc::geteuid() };
    // The root itself may be a link (a cache on another disk): its target is checked.
    let metadata = fs::metadata(root).map_err(|err| {
        anyhow::anyhow!(
            "cannot use the cache directory {} ({err}): check it, {way_out}",
            root.display()
        )
    })?;
    check_entry(root, &metadata, uid, way_out)?;
    check_tree(root, uid, way_out)?;
    CHECKED.lock().expect("not poisoned").push(root.to_owned());
    Ok(())
}

/// The way out of a refusal for a build's layer cache.
pub const LAYER_CACHE_WAY_OUT: &str =
    "or set IMGPACK_CACHE_DIR to a directory of your own, or pass --no-cache";

fn check_tree(dir: &Path, uid: u32, way_out: &str) -> anyhow::Result<()> {
    let cannot_list = |err| {
        anyhow::anyhow!(
            "cannot list the cache directory {} ({err}): check it, {way_out}",
            dir.display()
        )
    };
    for entry in fs::read_dir(dir).map_err(cannot_list)? {
        let entry = entry.map_err(cannot_list)?;
        let path = entry.path();
        // Gone since it was listed (another build pruned it): nothing to check.
        let Ok(metadata) = fs::symlink_metadata(&path) else {
            continue;
        };
        check_entry(&path, &metadata, uid, way_out)?;
        if metadata.is_dir() {
            check_tree(&path, uid, way_out)?;
        }
    }
    Ok(())
}

fn check_entry(
    path: &Path,
    metadata: &fs::Metadata,
    uid: u32,
    way_out: &str,
) -> anyhow::Result<()> {
    let what = match metadata.is_dir() {
        true => "the cache directory",
        false => "the cache file",
    };
    let shown = path.display();
    if !metadata.is_dir() && !metadata.is_file() {
        let found = crate::local_file::describe(metadata.file_type()).unwrap_or("not a file");
        anyhow::bail!(
            "{what} {shown} is {found}, not a regular file or directory: remove it, {way_out}"
        );
    }
    if metadata.uid() != uid {
        anyhow::bail!(
            "{what} {shown} belongs to uid {}, not to you (uid {uid}): run 'chown -R {uid} {shown}', {way_out}",
            metadata.uid()
        );
    }
    let mode = metadata.mode() & 0o7777;
    if mode & 0o022 != 0 {
        anyhow::bail!(
            "{what} {shown} is writable by group or others (mode {mode:04o}): run 'chmod go-w {shown}', {way_out}"
        );
    }
    Ok(())
}
