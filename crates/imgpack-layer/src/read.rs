//! Reading base layers, which a registry sent and so are untrusted: which
//! paths a stack of layers holds (to find a dynamic binary's interpreter) and
//! a layer's diff ID. Names, link targets, extension headers and the number of
//! entries are bounded, and whiteouts cost no more than the entries they remove.

use std::collections::{BTreeMap, VecDeque};
use std::io::{self, BufReader, Read};

use anyhow::{bail, Context, Result};
use imgpack_blob::{Digest, DigestWriter};

/// Longest path or link target accepted (Linux's PATH_MAX).
const MAX_NAME: u64 = 4096;
/// Largest PAX extended header accepted.
const MAX_PAX: u64 = 64 << 10;
/// Entries across every layer of a stack (distro images hold tens of thousands).
const MAX_ENTRIES: usize = 1_000_000;
/// Largest file kept for [`LayerPaths::file`] (an /etc/passwd is a few KiB).
const MAX_KEPT_FILE: u64 = 1 << 20;

/// The uncompressed stream of a layer of `media_type`; unknown compressions are refused.
fn decompressed<'a>(file: impl Read + 'a, media_type: &str) -> Result<Box<dyn Read + 'a>> {
    Ok(if media_type.ends_with("gzip") {
        Box::new(flate2::read::GzDecoder::new(BufReader::new(file)))
    } else if media_type.ends_with("zstd") {
        Box::new(zstd::stream::read::Decoder::new(file).context("cannot read a zstd layer")?)
    } else if media_type.ends_with(".tar") || media_type.ends_with("diff.tar") {
        Box::new(BufReader::new(file))
    } else {
        bail!("layer media type {media_type} has a compression imgpack cannot read")
    })
}

/// The diff ID of a layer: the digest of its uncompressed tar.
pub fn diff_id(file: impl Read, media_type: &str) -> Result<Digest> {
    let mut reader = decompressed(file, media_type)?;
    let mut writer = DigestWriter::new(io::sink());
    io::copy(&mut reader, &mut writer).context("the layer does not decompress")?;
    Ok(writer.finish().1)
}

/// The paths of a stack of layers, as the image's file system has them:
/// later layers win, whiteouts remove, symlinks are kept with their targets.
/// Used to check that a base image holds a dynamic binary's interpreter.
#[derive(Debug, Default)]
pub struct LayerPaths {
    /// Path (no leading `/`) → symlink target, or `None` for files and directories.
    entries: BTreeMap<String, Option<String>>,
    /// Paths whose content is kept as layers are added (see [`LayerPaths::keeping`]).
    kept_paths: Vec<String>,
    /// Kept path → its content, `None` when it is not a regular file of at most [`MAX_KEPT_FILE`].
    kept: BTreeMap<String, Option<Vec<u8>>>,
}

/// A file of a stack of layers, as [`LayerPaths::file`] finds it.
#[derive(Debug, PartialEq, Eq)]
pub enum LayerFile<'a> {
    /// No layer has it, or a whiteout removed it.
    Absent,
    Content(&'a [u8]),
    /// There, but a link, not a regular file, or too large to keep.
    Unreadable,
}

/// One layer's changes: what it deletes from the layers below, what it adds.
#[derive(Default)]
struct LayerChanges {
    /// `.wh.NAME`: the path and everything under it.
    removed: Vec<String>,
    /// `.wh..wh..opq`: everything under the directory, not the directory.
    emptied: Vec<String>,
    added: Vec<(String, Option<String>)>,
    /// Entries of kept paths, with their content when they are small regular files.
    kept: Vec<(String, Option<Vec<u8>>)>,
}

impl LayerPaths {
    /// Paths that also keep the content of `files` (e.g. `etc/passwd`), for [`LayerPaths::file`].
    pub fn keeping(files: &[&str]) -> Self {
        Self {
            kept_paths: files.iter().map(|f| clean(f)).collect(),
            ..Self::default()
        }
    }

    /// The content of a file named to [`LayerPaths::keeping`], as the image's file system has it.
    pub fn file(&self, path: &str) -> LayerFile<'_> {
        match self.kept.get(&clean(path)) {
            None => LayerFile::Absent,
            Some(Some(content)) => LayerFile::Content(content),
            Some(None) => LayerFile::Unreadable,
        }
    }

    /// Adds a layer on top of those read so far (`media_type` tells its compression).
    pub fn add_layer(&mut self, file: impl Read, media_type: &str) -> Result<()> {
        let changes = read_changes(
            decompressed(file, media_type)?,
            self.entries.len(),
            &self.kept_paths,
        )?;
        // Whiteouts apply to the layers below: entries of this layer survive them.
        for path in &changes.removed {
            self.entries.remove(path);
            self.remove_under(path);
        }
        for dir in &changes.emptied {
            self.remove_under(dir);
        }
        for (path, target) in changes.added {
            self.add_parents(&path);
            self.entries.insert(path, target);
        }
        // What this layer's whiteouts removed is gone; what it added replaces the lower copy.
        let entries = &self.entries;
        self.kept.retain(|path, _| entries.contains_key(path));
        self.kept.extend(changes.kept);
        if self.entries.len() > MAX_ENTRIES {
            bail!("the base image holds more than {MAX_ENTRIES} files: refused");
        }
        Ok(())
    }

    /// Removes every path under `dir` (not `dir`): one range of the sorted map.
    fn remove_under(&mut self, dir: &str) {
        let prefix = if dir.is_empty() {
            String::new()
        } else {
            format!("{dir}/")
        };
        let doomed: Vec<String> = self
            .entries
            .range(prefix.clone()..)
            .take_while(|(path, _)| path.starts_with(&prefix))
            .map(|(path, _)| path.clone())
            .collect();
        for path in doomed {
            self.entries.remove(&path);
        }
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

/// Reads a layer's tar entries with extension headers handled here, bounded:
/// GNU long names and PAX `path`/`linkpath` records apply to the next entry.
/// The content of entries whose path is in `kept` is read too (bounded).
fn read_changes(tar: impl Read, already: usize, kept: &[String]) -> Result<LayerChanges> {
    let mut changes = LayerChanges::default();
    let mut archive = tar::Archive::new(tar);
    let mut long_name: Option<Vec<u8>> = None;
    let mut long_link: Option<Vec<u8>> = None;
    let mut pax: Vec<(String, Vec<u8>)> = Vec::new();
    let entries = archive
        .entries()
        .context("cannot read a base layer")?
        .raw(true);
    for entry in entries {
        let mut entry = entry.context("cannot read a base layer")?;
        let kind = entry.header().entry_type();
        let size = entry
            .header()
            .entry_size()
            .context("a base layer entry has a bad size")?;
        match kind {
            tar::EntryType::GNULongName => {
                long_name = Some(read_bounded(&mut entry, size, MAX_NAME, "a file name")?);
                continue;
            }
            tar::EntryType::GNULongLink => {
                long_link = Some(read_bounded(&mut entry, size, MAX_NAME, "a link target")?);
                continue;
            }
            tar::EntryType::XHeader => {
                pax = pax_records(&read_bounded(&mut entry, size, MAX_PAX, "a PAX header")?);
                continue;
            }
            tar::EntryType::XGlobalHeader => {
                read_bounded(&mut entry, size, MAX_PAX, "a PAX global header")?;
                continue;
            }
            _ => {}
        }
        let pax_value = |key: &str| {
            pax.iter()
                .rev()
                .find(|(k, _)| k == key)
                .map(|(_, v)| v.clone())
        };
        let name = pax_value("path")
            .or(long_name.take())
            .unwrap_or_else(|| entry.path_bytes().into_owned());
        let link = pax_value("linkpath")
            .or(long_link.take())
            .or_else(|| entry.link_name_bytes().map(|l| l.into_owned()));
        pax.clear();
        if name.len() as u64 > MAX_NAME || link.as_ref().is_some_and(|l| l.len() as u64 > MAX_NAME)
        {
            bail!("a base layer entry has a name longer than {MAX_NAME} bytes: refused");
        }
        if already + changes.added.len() + changes.removed.len() >= MAX_ENTRIES {
            bail!("the base image holds more than {MAX_ENTRIES} files: refused");
        }
        let path = clean(&String::from_utf8_lossy(trim_nul(&name)));
        let (dir, file) = path.rsplit_once('/').unwrap_or(("", path.as_str()));
        if file == ".wh..wh..opq" {
            changes.emptied.push(dir.to_owned());
        } else if let Some(hidden) = file.strip_prefix(".wh.") {
            changes.removed.push(if dir.is_empty() {
                hidden.to_owned()
            } else {
                format!("{dir}/{hidden}")
            });
        } else if !path.is_empty() {
            let target = match kind {
                tar::EntryType::Symlink => {
                    link.map(|l| String::from_utf8_lossy(trim_nul(&l)).into_owned())
                }
                _ => None,
            };
            if kept.contains(&path) {
                let content = match kind {
                    tar::EntryType::Regular | tar::EntryType::Continuous
                        if size <= MAX_KEPT_FILE =>
                    {
                        Some(read_bounded(&mut entry, size, MAX_KEPT_FILE, "a file")?)
                    }
                    _ => None,
                };
                changes.kept.push((path.clone(), content));
            }
            changes.added.push((path, target));
        }
    }
    Ok(changes)
}

/// An extension entry's content, refused beyond `limit` bytes.
fn read_bounded(entry: &mut impl Read, size: u64, limit: u64, what: &str) -> Result<Vec<u8>> {
    if size > limit {
        bail!(
            "a base layer has {what} of {size} bytes, more than the {limit} imgpack reads: refused"
        );
    }
    let mut bytes = Vec::with_capacity(size as usize);
    entry
        .take(limit)
        .read_to_end(&mut bytes)
        .context("cannot read a base layer")?;
    Ok(bytes)
}

/// `LEN key=value\n` records of a PAX extended header; malformed records end the list.
fn pax_records(bytes: &[u8]) -> Vec<(String, Vec<u8>)> {
    let mut records = Vec::new();
    let mut rest = bytes;
    while !rest.is_empty() {
        let Some(space) = rest.iter().position(|&b| b == b' ') else {
            break;
        };
        let Some(len) = std::str::from_utf8(&rest[..space])
            .ok()
            .and_then(|n| n.parse::<usize>().ok())
            .filter(|&len| len > space + 1 && len <= rest.len())
        else {
            break;
        };
        let record = &rest[space + 1..len];
        let record = record.strip_suffix(b"\n").unwrap_or(record);
        if let Some(eq) = record.iter().position(|&b| b == b'=') {
            let key = String::from_utf8_lossy(&record[..eq]).into_owned();
            records.push((key, record[eq + 1..].to_vec()));
        }
        rest = &rest[len..];
    }
    records
}

fn trim_nul(bytes: &[u8]) -> &[u8] {
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    &bytes[..end]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{write_layer, Compression, Contents, LayerContents};
    use imgpack_blob::BlobStore;
    use std::fs::File;

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

    /// A plain tar of (path, type, link target) entries, built by hand.
    fn tar_of(entries: &[(&str, tar::EntryType, Option<&str>)]) -> Vec<u8> {
        let mut builder = tar::Builder::new(Vec::new());
        for (path, kind, link) in entries {
            let mut header = tar::Header::new_gnu();
            header.set_entry_type(*kind);
            header.set_size(0);
            header.set_mode(0o644);
            if let Some(link) = link {
                header.set_link_name(link).unwrap();
            }
            builder.append_data(&mut header, path, &b""[..]).unwrap();
        }
        builder.into_inner().unwrap()
    }

    #[test]
    fn whiteouts_hide_lower_layers_only() {
        use tar::EntryType::{Directory, Regular};
        let mut paths = LayerPaths::default();
        let lower = tar_of(&[
            ("etc/a", Regular, None),
            ("etc/b", Regular, None),
            ("x", Regular, None),
        ]);
        paths
            .add_layer(&lower[..], "application/vnd.oci.image.layer.v1.tar")
            .unwrap();
        // The opaque marker comes after this layer's own etc/c: it hides etc/a, etc/b only.
        let upper = tar_of(&[
            ("etc/c", Regular, None),
            ("etc/.wh..wh..opq", Regular, None),
            (".wh.x", Regular, None),
            ("x/y", Directory, None),
        ]);
        paths
            .add_layer(&upper[..], "application/vnd.oci.image.layer.v1.tar")
            .unwrap();
        assert!(paths.resolves("/etc/c") && paths.resolves("/etc"));
        assert!(!paths.resolves("/etc/a") && !paths.resolves("/etc/b"));
        assert!(
            paths.resolves("/x/y"),
            "re-created in the same layer as its whiteout"
        );
    }

    /// A plain tar of (path, content) regular files.
    fn tar_with(files: &[(&str, &[u8])]) -> Vec<u8> {
        let mut builder = tar::Builder::new(Vec::new());
        for (path, content) in files {
            let mut header = tar::Header::new_gnu();
            header.set_size(content.len() as u64);
            header.set_mode(0o644);
            builder.append_data(&mut header, path, *content).unwrap();
        }
        builder.into_inner().unwrap()
    }

    #[test]
    fn kept_files_are_the_top_layer_copy_until_a_whiteout() {
        let mut paths = LayerPaths::keeping(&["/etc/passwd"]);
        assert_eq!(paths.file("/etc/passwd"), LayerFile::Absent);
        let lower = tar_with(&[
            ("etc/passwd", &b"root:x:0:0::/:\n"[..]),
            ("etc/group", &b"g"[..]),
        ]);
        paths.add_layer(&lower[..], "x.tar").unwrap();
        assert_eq!(
            paths.file("/etc/passwd"),
            LayerFile::Content(b"root:x:0:0::/:\n")
        );
        assert_eq!(paths.file("/etc/group"), LayerFile::Absent, "not kept");
        let upper = tar_with(&[("./etc/passwd", &b"app:x:1:1::/:\n"[..])]);
        paths.add_layer(&upper[..], "x.tar").unwrap();
        assert_eq!(
            paths.file("etc/passwd"),
            LayerFile::Content(b"app:x:1:1::/:\n")
        );
        let symlink = tar_of(&[("etc/passwd", tar::EntryType::Symlink, Some("x"))]);
        paths.add_layer(&symlink[..], "x.tar").unwrap();
        assert_eq!(paths.file("/etc/passwd"), LayerFile::Unreadable);
        paths
            .add_layer(&tar_with(&[("etc/.wh.passwd", &b""[..])])[..], "x.tar")
            .unwrap();
        assert_eq!(paths.file("/etc/passwd"), LayerFile::Absent);
    }

    #[test]
    fn many_whiteouts_cost_only_what_they_remove() {
        use tar::EntryType::Regular;
        let names: Vec<String> = (0..20_000).map(|i| format!("d{}/f{i}", i % 100)).collect();
        let lower: Vec<_> = names.iter().map(|n| (n.as_str(), Regular, None)).collect();
        let mut paths = LayerPaths::default();
        paths.add_layer(&tar_of(&lower)[..], "x.tar").unwrap();
        let whiteouts: Vec<String> = (0..20_000)
            .map(|i| format!("d{}/.wh.f{i}", i % 100))
            .collect();
        let upper: Vec<_> = whiteouts
            .iter()
            .map(|n| (n.as_str(), Regular, None))
            .collect();
        paths.add_layer(&tar_of(&upper)[..], "x.tar").unwrap();
        assert!(!paths.resolves("/d7/f7") && paths.resolves("/d7"));
        assert_eq!(paths.entries.len(), 100);
    }

    #[test]
    fn long_names_and_pax_headers_are_bounded() {
        // A GNU long name within the limit is used; beyond it the layer is refused.
        let name = format!("{}/ld.so", "d".repeat(300));
        let mut builder = tar::Builder::new(Vec::new());
        let mut header = tar::Header::new_gnu();
        header.set_size(0);
        builder.append_data(&mut header, &name, &b""[..]).unwrap();
        let layer = builder.into_inner().unwrap();
        let mut paths = LayerPaths::default();
        paths.add_layer(&layer[..], "x.tar").unwrap();
        assert!(paths.resolves(&format!("/{name}")));

        let huge = "d/".repeat(3000);
        let mut builder = tar::Builder::new(Vec::new());
        let mut header = tar::Header::new_gnu();
        header.set_size(0);
        builder.append_data(&mut header, &huge, &b""[..]).unwrap();
        let err = LayerPaths::default()
            .add_layer(&builder.into_inner().unwrap()[..], "x.tar")
            .unwrap_err();
        assert!(err.to_string().contains("4096"), "{err}");

        let records = pax_records(b"19 path=etc/passwd\n12 bad=no\n");
        assert_eq!(records, vec![("path".into(), b"etc/passwd".to_vec())]);
        assert!(pax_records(b"999999999 path=x\n").is_empty());
    }

    #[test]
    fn diff_ids_are_digests_of_the_uncompressed_tar() {
        let tar = tar_of(&[("a", tar::EntryType::Regular, None)]);
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut gz, &tar).unwrap();
        let gz = gz.finish().unwrap();
        assert_eq!(
            diff_id(&gz[..], "application/vnd.oci.image.layer.v1.tar+gzip").unwrap(),
            Digest::of_bytes(&tar)
        );
        assert_eq!(
            diff_id(&tar[..], "application/vnd.oci.image.layer.v1.tar").unwrap(),
            Digest::of_bytes(&tar)
        );
        assert!(diff_id(&tar[..], "application/x-unknown").is_err());
    }
}
