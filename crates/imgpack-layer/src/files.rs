//! User-specified extra files: the `[[files]]` entries of imgpack.toml.

use std::collections::BTreeMap;
use std::fs::{self, Metadata};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use crate::{Contents, DescribedContents, LayerContents};

const FILE_MODE: u32 = 0o644;
const EXECUTABLE_MODE: u32 = 0o755;
const DIR_MODE: u32 = 0o755;

/// One `[[files]]` entry: copy `src` (a file or a directory, recursively) to `dst` in the image.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileSpec {
    /// A file, a directory or a symlink; relative paths are relative to the project root.
    pub src: PathBuf,
    /// An absolute path in the image. A file `src` goes to exactly `dst`, or to
    /// `dst/<name>` when `dst` ends with `/`; a directory `src` has its contents
    /// copied under `dst` (like `cp -r src/. dst`).
    pub dst: String,
    /// The mode of every regular file. `None`: 0644, or 0755 for a file with
    /// any execute bit set on the host.
    pub mode: Option<u32>,
    /// The mode of every directory copied from `src`. `None`: 0755.
    pub dir_mode: Option<u32>,
    /// Owner of everything this entry writes (files, symlinks and directories).
    pub uid: u64,
    pub gid: u64,
}

/// The layer with every spec's files; `base_dir` resolves relative `src` paths (the project root).
///
/// Nothing but the bytes of regular files, the names, the symlink targets and
/// the execute bit (only when `mode` is `None`) comes from the host: modes and
/// owners are the spec's, and the writer sets the time. Files are streamed when
/// the layer is written, never loaded here.
pub fn files_layer(specs: &[FileSpec], base_dir: &Path) -> Result<Option<DescribedContents>> {
    if specs.is_empty() {
        return Ok(None);
    }
    let mut layer = FilesLayer::default();
    let mut summaries = Vec::with_capacity(specs.len());
    for (index, spec) in specs.iter().enumerate() {
        let count = layer.add_spec(spec, index + 1, base_dir)?;
        let plural = if count == 1 { "" } else { "s" };
        summaries.push(format!(
            "{} → {} ({count} file{plural})",
            spec.src.display(),
            spec.dst
        ));
    }
    Ok(Some(DescribedContents {
        contents: layer.contents,
        description: format!("imgpack files: {}", summaries.join(", ")),
    }))
}

/// What an image path holds and which entry (numbered from 1) put it there.
#[derive(Clone, Copy)]
struct Claim {
    entry: usize,
    is_dir: bool,
}

#[derive(Default)]
struct FilesLayer {
    contents: LayerContents,
    /// Every path written so far, parents included. `LayerContents` refuses a
    /// file written twice, but would let a directory replace a file, or put a
    /// file under a file or a symlink: these are refused here, naming both entries.
    claims: BTreeMap<String, Claim>,
}

/// One spec being copied: its number and the modes and owner it gives.
struct SpecCopy<'a> {
    number: usize,
    spec: &'a FileSpec,
    dir_mode: u32,
    files: usize,
}

impl FilesLayer {
    /// Adds one spec; returns how many files and symlinks it wrote.
    fn add_spec(&mut self, spec: &FileSpec, number: usize, base_dir: &Path) -> Result<usize> {
        let (dst, dst_is_dir) = parse_dst(&spec.dst, number)?;
        for (what, mode) in [("mode", spec.mode), ("dir_mode", spec.dir_mode)] {
            if let Some(mode) = mode.filter(|mode| *mode > 0o7777) {
                bail!("files entry {number}: {what} {mode:o} is not a permission mode (at most 7777, octal)");
            }
        }
        // `./x` joined to `.` would read `././x`: name the path once, and the
        // place looked in only when it differs from what the entry says.
        let src = if base_dir == Path::new(".") {
            spec.src.clone()
        } else {
            base_dir.join(&spec.src)
        };
        let looked_in = if src == spec.src {
            String::new()
        } else {
            format!(" (looked for {})", src.display())
        };
        let metadata = fs::symlink_metadata(&src).map_err(|err| {
            let src = spec.src.display();
            if err.kind() == std::io::ErrorKind::NotFound {
                anyhow::anyhow!("files entry {number}: src '{src}' does not exist{looked_in}")
            } else {
                anyhow::Error::new(err).context(format!(
                    "files entry {number}: cannot read src '{src}'{looked_in}"
                ))
            }
        })?;
        let mut copy = SpecCopy {
            number,
            spec,
            dir_mode: spec.dir_mode.unwrap_or(DIR_MODE),
            files: 0,
        };
        if metadata.is_dir() {
            // The contents go under dst; dst "/" is the image's root, which has no entry.
            if !dst.is_empty() {
                self.add_dir(&copy, &dst)?;
            }
            self.add_tree(&mut copy, &src, &dst)?;
        } else {
            let image_path = if dst_is_dir {
                join(&dst, host_name(&src, number)?)
            } else {
                dst
            };
            self.add_host_path(&mut copy, &src, &metadata, &image_path)?;
        }
        Ok(copy.files)
    }

    fn add_tree(&mut self, copy: &mut SpecCopy, dir: &Path, image_dir: &str) -> Result<()> {
        let number = copy.number;
        let listing = fs::read_dir(dir)
            .with_context(|| format!("files entry {number}: cannot list {}", dir.display()))?;
        let mut children = Vec::new();
        for child in listing {
            let child = child
                .with_context(|| format!("files entry {number}: cannot list {}", dir.display()))?;
            children.push(child.path());
        }
        // The layer's order never depends on the listing's, but the first error should not either.
        children.sort();
        for path in children {
            let metadata = fs::symlink_metadata(&path)
                .with_context(|| format!("files entry {number}: cannot read {}", path.display()))?;
            let image_path = join(image_dir, host_name(&path, number)?);
            if metadata.is_dir() {
                self.add_dir(copy, &image_path)?;
                self.add_tree(copy, &path, &image_path)?;
            } else {
                self.add_host_path(copy, &path, &metadata, &image_path)?;
            }
        }
        Ok(())
    }

    /// A regular file or a symlink (kept as one, target unchanged); anything else is refused.
    fn add_host_path(
        &mut self,
        copy: &mut SpecCopy,
        path: &Path,
        metadata: &Metadata,
        image_path: &str,
    ) -> Result<()> {
        let number = copy.number;
        let file_type = metadata.file_type();
        if file_type.is_symlink() {
            let target = fs::read_link(path).with_context(|| {
                format!(
                    "files entry {number}: cannot read the symlink {}",
                    path.display()
                )
            })?;
            let Some(target) = target.to_str() else {
                bail!(
                    "files entry {number}: the target of the symlink {} is not UTF-8",
                    path.display()
                );
            };
            self.claim(number, image_path, false)?;
            self.contents
                .add_symlink(image_path, target)
                .and_then(|()| {
                    self.contents
                        .set_owner(image_path, copy.spec.uid, copy.spec.gid)
                })
                .with_context(|| format!("files entry {number}"))?;
        } else if file_type.is_file() {
            let mode = copy.spec.mode.unwrap_or_else(|| {
                if metadata.permissions().mode() & 0o111 != 0 {
                    EXECUTABLE_MODE
                } else {
                    FILE_MODE
                }
            });
            self.claim(number, image_path, false)?;
            self.contents
                .add_file(image_path, Contents::File(path.to_owned()), mode)
                .and_then(|()| {
                    self.contents
                        .set_owner(image_path, copy.spec.uid, copy.spec.gid)
                })
                .with_context(|| format!("files entry {number}"))?;
        } else {
            let kind = if file_type.is_fifo() {
                "a named pipe (fifo)"
            } else if file_type.is_socket() {
                "a socket"
            } else if file_type.is_block_device() || file_type.is_char_device() {
                "a device"
            } else {
                "not a regular file"
            };
            bail!(
                "files entry {number}: {} is {kind}: only regular files, directories and symlinks can be copied into an image",
                path.display()
            );
        }
        copy.files += 1;
        Ok(())
    }

    fn add_dir(&mut self, copy: &SpecCopy, image_path: &str) -> Result<()> {
        let number = copy.number;
        self.claim(number, image_path, true)?;
        self.contents
            .add_dir(image_path, copy.dir_mode, copy.spec.uid, copy.spec.gid)
            .with_context(|| format!("files entry {number}"))
    }

    /// Records `path` (and its parents, as directories) for entry `number`, refusing
    /// a second writer of a file or symlink and anything under a file or symlink.
    fn claim(&mut self, number: usize, path: &str, is_dir: bool) -> Result<()> {
        let by = |entry: usize| {
            if entry == number {
                "twice by the same entry".to_owned()
            } else {
                format!("by files entry {entry}")
            }
        };
        for (end, _) in path.match_indices('/') {
            let parent = &path[..end];
            let claim = *self.claims.entry(parent.to_owned()).or_insert(Claim {
                entry: number,
                is_dir: true,
            });
            if !claim.is_dir {
                bail!(
                    "files entry {number}: cannot write /{path}: /{parent} is already written as a file or symlink {}",
                    by(claim.entry)
                );
            }
        }
        if let Some(claim) = self.claims.get(path) {
            // Directories merge, like `cp -r` into an existing directory.
            if !(is_dir && claim.is_dir) {
                bail!(
                    "files entry {number}: /{path} is already written {}",
                    by(claim.entry)
                );
            }
        }
        self.claims.insert(
            path.to_owned(),
            Claim {
                entry: number,
                is_dir,
            },
        );
        Ok(())
    }
}

/// `/app//static/` → (`app/static`, true); `/` → (``, true). Must be absolute, no `..`.
fn parse_dst(dst: &str, number: usize) -> Result<(String, bool)> {
    if !dst.starts_with('/') {
        bail!("files entry {number}: dst '{dst}' must be an absolute path (starting with /)");
    }
    let parts: Vec<&str> = dst
        .split('/')
        .filter(|part| !part.is_empty() && *part != ".")
        .collect();
    if parts.contains(&"..") {
        bail!(
            "files entry {number}: dst '{dst}' contains '..': name the path in the image directly"
        );
    }
    if dst.contains('\0') {
        bail!("files entry {number}: dst '{dst}' contains a NUL byte");
    }
    Ok((parts.join("/"), dst.ends_with('/') || parts.is_empty()))
}

/// The last component of a host path, which becomes a name in the image.
fn host_name(path: &Path, number: usize) -> Result<&str> {
    let Some(name) = path.file_name() else {
        bail!(
            "files entry {number}: {} has no file name to copy it under",
            path.display()
        );
    };
    name.to_str().with_context(|| {
        format!(
            "files entry {number}: the name of {} is not UTF-8",
            path.display()
        )
    })
}

fn join(dir: &str, name: &str) -> String {
    if dir.is_empty() {
        name.to_owned()
    } else {
        format!("{dir}/{name}")
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::os::unix::fs::symlink;
    use std::time::{Duration, SystemTime};

    use imgpack_blob::BlobStore;

    use super::*;
    use crate::{write_layer, Compression, Entry, EntryKind, LayerOptions};

    fn spec(src: &str, dst: &str) -> FileSpec {
        FileSpec {
            src: PathBuf::from(src),
            dst: dst.to_owned(),
            mode: None,
            dir_mode: None,
            uid: 0,
            gid: 0,
        }
    }

    fn chmod(path: &Path, mode: u32) {
        fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
    }

    /// static/{index.html, css/site.css, bin/run.sh (executable), current -> css/site.css, empty/}
    /// and config.toml, with `file_mode` on the plain files and `dir_mode` on static/css.
    fn make_project(root: &Path, file_mode: u32, dir_mode: u32) {
        fs::create_dir_all(root.join("static/css")).unwrap();
        fs::create_dir_all(root.join("static/bin")).unwrap();
        fs::create_dir_all(root.join("static/empty")).unwrap();
        fs::write(root.join("static/index.html"), b"<h1>hi</h1>\n").unwrap();
        fs::write(root.join("static/css/site.css"), b"h1 { color: red }\n").unwrap();
        fs::write(root.join("static/bin/run.sh"), b"#!/bin/sh\nexec true\n").unwrap();
        symlink("css/site.css", root.join("static/current")).unwrap();
        fs::write(root.join("config.toml"), b"port = 8080\n").unwrap();
        chmod(&root.join("static/bin/run.sh"), 0o700);
        for file in ["static/index.html", "static/css/site.css", "config.toml"] {
            chmod(&root.join(file), file_mode);
        }
        chmod(&root.join("static/css"), dir_mode);
    }

    fn entries(layer: &DescribedContents) -> HashMap<String, Entry> {
        layer
            .contents
            .entries()
            .map(|(path, entry)| (path.to_owned(), entry.clone()))
            .collect()
    }

    #[test]
    fn no_specs_no_layer() {
        assert!(files_layer(&[], Path::new("/nonexistent"))
            .unwrap()
            .is_none());
    }

    #[test]
    fn directory_tree_and_single_file_are_copied() {
        let root = tempfile::tempdir().unwrap();
        make_project(root.path(), 0o600, 0o700);
        let specs = [
            spec("static/", "/app/static"),
            spec("config.toml", "/etc/app/"),
        ];
        let layer = files_layer(&specs, root.path()).unwrap().unwrap();
        assert_eq!(
            layer.description,
            "imgpack files: static/ → /app/static (4 files), config.toml → /etc/app/ (1 file)"
        );
        let paths: Vec<&str> = layer.contents.entries().map(|(path, _)| path).collect();
        assert_eq!(
            paths,
            [
                "app",
                "app/static",
                "app/static/bin",
                "app/static/bin/run.sh",
                "app/static/css",
                "app/static/css/site.css",
                "app/static/current",
                "app/static/empty",
                "app/static/index.html",
                "etc",
                "etc/app",
                "etc/app/config.toml",
            ]
        );
        let entries = entries(&layer);
        for dir in [
            "app",
            "app/static",
            "app/static/css",
            "app/static/empty",
            "etc/app",
        ] {
            assert!(matches!(entries[dir].kind, EntryKind::Dir), "{dir}");
            assert_eq!(entries[dir].mode, 0o755, "{dir}");
        }
        let file = |path: &str| match &entries[path].kind {
            EntryKind::File(Contents::File(source)) => source.clone(),
            other => panic!("{path} is {other:?}"),
        };
        assert_eq!(
            file("app/static/css/site.css"),
            root.path().join("static/css/site.css")
        );
        assert_eq!(file("etc/app/config.toml"), root.path().join("config.toml"));
        file("app/static/index.html");
        assert_eq!(entries["app/static/index.html"].mode, 0o644);
        assert_eq!(entries["app/static/bin/run.sh"].mode, 0o755);
        assert_eq!(entries["etc/app/config.toml"].mode, 0o644);
        assert!(
            matches!(&entries["app/static/current"].kind, EntryKind::Symlink(t) if t == "css/site.css")
        );
        assert!(entries.values().all(|e| e.uid == 0 && e.gid == 0));
    }

    #[test]
    fn modes_from_the_spec_apply_to_every_file_and_directory() {
        let root = tempfile::tempdir().unwrap();
        make_project(root.path(), 0o644, 0o755);
        let mut static_spec = spec("static", "/srv/");
        static_spec.mode = Some(0o640);
        static_spec.dir_mode = Some(0o750);
        let mut config = spec("config.toml", "/etc/app.toml");
        config.mode = Some(0o600);
        let layer = files_layer(&[static_spec, config], root.path())
            .unwrap()
            .unwrap();
        let entries = entries(&layer);
        assert_eq!(entries["srv"].mode, 0o750);
        assert_eq!(entries["srv/css"].mode, 0o750);
        assert_eq!(entries["srv/index.html"].mode, 0o640);
        assert_eq!(entries["srv/bin/run.sh"].mode, 0o640);
        assert_eq!(entries["etc/app.toml"].mode, 0o600);
        assert_eq!(entries["etc"].mode, 0o755);
    }

    #[test]
    fn top_level_symlink_is_kept_and_dst_root_takes_a_directory() {
        let root = tempfile::tempdir().unwrap();
        make_project(root.path(), 0o644, 0o755);
        symlink("/etc/ssl/certs", root.path().join("certs-link")).unwrap();
        let specs = [
            spec("certs-link", "/etc/"),
            // An absolute src ignores the base directory.
            spec(root.path().join("static/css").to_str().unwrap(), "/"),
        ];
        let layer = files_layer(&specs, root.path()).unwrap().unwrap();
        let entries = entries(&layer);
        assert!(
            matches!(&entries["etc/certs-link"].kind, EntryKind::Symlink(t) if t == "/etc/ssl/certs")
        );
        assert!(matches!(entries["site.css"].kind, EntryKind::File(_)));
        assert_eq!(layer.contents.len(), 3);
    }

    #[test]
    fn host_permissions_and_times_do_not_change_the_layer() {
        let write = |file_mode: u32, dir_mode: u32, age: Duration| {
            let dir = tempfile::tempdir().unwrap();
            let root = dir.path().join("project");
            make_project(&root, file_mode, dir_mode);
            let old = SystemTime::now() - age;
            for file in ["static/index.html", "config.toml"] {
                fs::File::options()
                    .write(true)
                    .open(root.join(file))
                    .unwrap()
                    .set_modified(old)
                    .unwrap();
            }
            let mut static_spec = spec("static", "/app/static");
            static_spec.mode = Some(0o644);
            // No mode: 0600 and 0644 on the host both give 0644.
            let config = spec("config.toml", "/etc/app/");
            let layer = files_layer(&[static_spec, config], &root).unwrap().unwrap();
            let store = BlobStore::open(dir.path().join("store")).unwrap();
            let written = write_layer(
                &store,
                &layer.contents,
                &LayerOptions::single_threaded(Compression::Gzip { level: 6 }, 1_700_000_000),
            )
            .unwrap();
            (written, layer.description)
        };
        let first = write(0o600, 0o700, Duration::from_secs(86_400 * 365));
        let second = write(0o644, 0o755, Duration::ZERO);
        assert_eq!(first, second);
    }

    fn error(specs: &[FileSpec], base_dir: &Path) -> String {
        format!("{:#}", files_layer(specs, base_dir).err().unwrap())
    }

    #[test]
    fn bad_entries_are_errors_naming_the_entry() {
        let root = tempfile::tempdir().unwrap();
        make_project(root.path(), 0o644, 0o755);

        let err = error(
            &[spec("config.toml", "/etc/a"), spec("static", "app/x")],
            root.path(),
        );
        assert!(
            err.contains("files entry 2: dst 'app/x' must be an absolute path"),
            "{err}"
        );

        let err = error(&[spec("statik/", "/app/static")], root.path());
        assert!(
            err.contains("files entry 1: src 'statik/' does not exist"),
            "{err}"
        );
        // Resolved by imgpack.toml already and read from `.`: one path, said once.
        let err = error(&[spec("./missing", "/app/x")], Path::new("."));
        assert_eq!(err, "files entry 1: src './missing' does not exist");

        let err = error(&[spec("static", "/app/../etc")], root.path());
        assert!(
            err.contains("files entry 1: dst '/app/../etc' contains '..'"),
            "{err}"
        );

        let mut bad_mode = spec("config.toml", "/etc/a");
        bad_mode.mode = Some(0o100644);
        let err = error(&[bad_mode], root.path());
        assert!(err.contains("files entry 1: mode 100644"), "{err}");
    }

    #[test]
    fn files_get_the_owner_of_their_entry() {
        let root = tempfile::tempdir().unwrap();
        make_project(root.path(), 0o644, 0o755);
        let mut owned = spec("config.toml", "/etc/app/config.toml");
        owned.uid = 65532;
        owned.gid = 65532;
        let layer = files_layer(&[owned], root.path()).unwrap().unwrap();
        let entry = layer
            .contents
            .entries()
            .find(|(path, _)| *path == "etc/app/config.toml")
            .unwrap()
            .1;
        assert_eq!((entry.uid, entry.gid), (65532, 65532));
    }

    #[test]
    fn fifo_is_an_error_naming_its_path() {
        let root = tempfile::tempdir().unwrap();
        make_project(root.path(), 0o644, 0o755);
        let fifo = root.path().join("static/css/pipe");
        let status = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap();
        assert!(status.success());
        let err = error(
            &[spec("config.toml", "/a"), spec("static", "/app")],
            root.path(),
        );
        assert!(
            err.contains(&format!(
                "files entry 2: {} is a named pipe (fifo)",
                fifo.display()
            )),
            "{err}"
        );
        let err = error(&[spec("static/css/pipe", "/a")], root.path());
        assert!(err.contains("is a named pipe (fifo)"), "{err}");
    }

    #[test]
    fn two_entries_writing_the_same_path_are_an_error() {
        let root = tempfile::tempdir().unwrap();
        make_project(root.path(), 0o644, 0o755);

        // The same file twice.
        let err = error(
            &[
                spec("static", "/app/static"),
                spec("config.toml", "/app/static/index.html"),
            ],
            root.path(),
        );
        assert!(
            err.contains(
                "files entry 2: /app/static/index.html is already written by files entry 1"
            ),
            "{err}"
        );

        // A directory over a file.
        let err = error(
            &[spec("config.toml", "/app/x"), spec("static", "/app/x")],
            root.path(),
        );
        assert!(
            err.contains("files entry 2: /app/x is already written by files entry 1"),
            "{err}"
        );

        // A file under a symlink.
        let err = error(
            &[
                spec("static", "/app/static"),
                spec("config.toml", "/app/static/current/"),
            ],
            root.path(),
        );
        assert!(
            err.contains("files entry 2: cannot write /app/static/current/config.toml: /app/static/current is already written as a file or symlink by files entry 1"),
            "{err}"
        );

        // Directories merge.
        let layer = files_layer(
            &[spec("static", "/app"), spec("config.toml", "/app/css/")],
            root.path(),
        )
        .unwrap()
        .unwrap();
        assert!(entries(&layer).contains_key("app/css/config.toml"));
    }
}
