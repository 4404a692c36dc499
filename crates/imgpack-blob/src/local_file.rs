//! Files imgpack reads whole from the local disk (imgpack.toml, keys,
//! certificates, credentials, a layout's documents, the cache's records):
//! bounded like a registry's answers, and refused at once when they are not
//! regular files, since opening a FIFO would wait for a writer forever.

use std::fmt;
use std::fs::{self, File};
use std::io::{self, Read};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// What a file is for, and how many bytes of it imgpack reads at most.
#[derive(Clone, Copy, Debug)]
pub struct FileKind {
    /// For messages: "a key file", "an imgpack.toml".
    pub what: &'static str,
    pub limit: u64,
    /// Whether a symbolic link at the path is followed. The cache's own
    /// records are not: a link planted there must not be read through.
    pub follow_symlinks: bool,
}

const fn kind(what: &'static str, limit: u64) -> FileKind {
    FileKind {
        what,
        limit,
        follow_symlinks: true,
    }
}

/// `--config` / imgpack.toml.
pub const CONFIG_FILE: FileKind = kind("an imgpack.toml", 1 << 20);
/// `--ca-certs` and `--registry-ca` PEM bundles (Mozilla's is about 220 KB).
pub const CA_BUNDLE: FileKind = kind("a PEM certificate bundle", 8 << 20);
/// `--sign-key`, `verify --key`: a PEM key is well under a kilobyte.
pub const KEY_FILE: FileKind = kind("a key file", 64 << 10);
/// A signing key's password (`--sign-password-file`): one line.
pub const PASSWORD_FILE: FileKind = kind("a password file", 4 << 10);
/// docker's config.json, podman's auth.json, ~/.netrc.
pub const CREDENTIALS_FILE: FileKind = kind("a credentials file", 4 << 20);
/// An OCI layout's index.json and its manifests and configs: the limit
/// imgpack (and containerd) sets on the same documents from a registry.
pub const LAYOUT_DOCUMENT: FileKind = kind("an OCI layout's document", 4 << 20);
/// `imgpack resolve -f` inputs (YAML or JSON manifests).
pub const RESOLVE_INPUT: FileKind = kind("a manifest file for imgpack resolve", 16 << 20);
/// A project's Cargo.lock (for the SBOM's checksums).
pub const LOCK_FILE: FileKind = kind("a Cargo.lock", 16 << 20);
/// A TZif zone file (the largest in tzdata is a few KiB).
pub const ZONE_FILE: FileKind = kind("a TZif zone file", 1 << 20);
/// The cache's small records: layer entries, base-image tags and diff IDs.
pub const CACHE_RECORD: FileKind = FileKind {
    what: "a cache record",
    limit: 64 << 10,
    follow_symlinks: false,
};
/// The cache's blob-location record (`blob-locations.json`).
pub const CACHE_LOCATIONS: FileKind = FileKind {
    what: "the blob-location record",
    limit: 16 << 20,
    follow_symlinks: false,
};
/// A manifest, index or config stored as a blob (a layout's, the cache's):
/// the limit imgpack sets on the same documents from a registry.
pub const CACHED_DOCUMENT: FileKind = kind("a manifest or config", 4 << 20);

/// A blob copied out of a store: opened, never read whole, so no limit, and
/// never through a link.
pub const STORED_BLOB: FileKind = FileKind {
    what: "a blob",
    limit: u64::MAX - 1,
    follow_symlinks: false,
};

/// Why a local file was not read.
#[derive(Debug)]
pub enum LocalFileError {
    /// The open or read failed: the system's error, for the caller's own advice.
    Io { path: PathBuf, error: io::Error },
    /// A FIFO, socket, device, directory (or, where links are not followed, a link).
    NotRegular {
        path: PathBuf,
        found: &'static str,
        kind: FileKind,
    },
    TooLarge {
        path: PathBuf,
        size: u64,
        kind: FileKind,
    },
}

impl LocalFileError {
    /// The system's error, when there is one (`NotFound`, `PermissionDenied`…).
    pub fn io_error(&self) -> Option<&io::Error> {
        match self {
            Self::Io { error, .. } => Some(error),
            _ => None,
        }
    }

    pub fn is_not_found(&self) -> bool {
        self.io_error()
            .is_some_and(|err| err.kind() == io::ErrorKind::NotFound)
    }
}

impl fmt::Display for LocalFileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Io { path, error } => write!(f, "cannot read {}: {error}", path.display()),
            Self::NotRegular { path, found, kind } => write!(
                f,
                "{} is {found}, not a regular file: give {} as a regular file",
                path.display(),
                kind.what
            ),
            Self::TooLarge { path, size, kind } => write!(
                f,
                "{} is {size} bytes, more than the {} imgpack reads of {}: check the path",
                path.display(),
                human_size(kind.limit),
                kind.what
            ),
        }
    }
}

impl std::error::Error for LocalFileError {}

fn human_size(bytes: u64) -> String {
    match bytes {
        b if b >= 1 << 20 && b % (1 << 20) == 0 => format!("{} MiB", b >> 20),
        b if b >= 1 << 10 && b % (1 << 10) == 0 => format!("{} KiB", b >> 10),
        b => format!("{b} bytes"),
    }
}

/// "a FIFO", "a socket"…: what stands where a regular file should.
pub(crate) fn describe(file_type: fs::FileType) -> Option<&'static str> {
    if file_type.is_file() {
        None
    } else if file_type.is_fifo() {
        Some("a FIFO")
    } else if file_type.is_socket() {
        Some("a socket")
    } else if file_type.is_char_device() {
        Some("a character device")
    } else if file_type.is_block_device() {
        Some("a block device")
    } else if file_type.is_dir() {
        Some("a directory")
    } else if file_type.is_symlink() {
        Some("a symbolic link")
    } else {
        Some("not a file")
    }
}

/// Opens `path` for reading if it is a regular file of at most `kind.limit`
/// bytes; returns it with its size. The type is checked before the open (a
/// device is never opened) and again on the open file (O_NONBLOCK: a FIFO
/// swapped in between cannot block the open).
pub fn open_regular(path: &Path, kind: &FileKind) -> Result<(File, u64), LocalFileError> {
    let io = |error| LocalFileError::Io {
        path: path.to_owned(),
        error,
    };
    let not_regular = |found| LocalFileError::NotRegular {
        path: path.to_owned(),
        found,
        kind: *kind,
    };
    let before = match kind.follow_symlinks {
        true => fs::metadata(path),
        false => fs::symlink_metadata(path),
    }
    .map_err(io)?;
    if let Some(found) = describe(before.file_type()) {
        return Err(not_regular(found));
    }
    let mut flags = libc::O_NONBLOCK | libc::O_NOCTTY;
    if !kind.follow_symlinks {
        flags |= libc::O_NOFOLLOW;
    }
    let file = match fs::OpenOptions::new()
        .read(true)
        .custom_flags(flags)
        .open(path)
    {
        Err(err) if err.raw_os_error() == Some(libc::ELOOP) && !kind.follow_symlinks => {
            return Err(not_regular("a symbolic link"))
        }
        other => other.map_err(io)?,
    };
    let metadata = file.metadata().map_err(io)?;
    if let Some(found) = describe(metadata.file_type()) {
        return Err(not_regular(found));
    }
    if metadata.len() > kind.limit {
        return Err(LocalFileError::TooLarge {
            path: path.to_owned(),
            size: metadata.len(),
            kind: *kind,
        });
    }
    Ok((file, metadata.len()))
}

/// The whole of the regular file at `path`, at most `kind.limit` bytes (see
/// [`open_regular`]). A file that grows past the limit while it is read is
/// refused too: no more than the limit and one byte is ever read.
pub fn read_local_file(path: &Path, kind: &FileKind) -> Result<Vec<u8>, LocalFileError> {
    let (file, size) = open_regular(path, kind)?;
    let mut bytes = Vec::with_capacity(size as usize);
    file.take(kind.limit + 1)
        .read_to_end(&mut bytes)
        .map_err(|error| LocalFileError::Io {
            path: path.to_owned(),
            error,
        })?;
    if bytes.len() as u64 > kind.limit {
        return Err(LocalFileError::TooLarge {
            path: path.to_owned(),
            size: bytes.len() as u64,
            kind: *kind,
        });
    }
    Ok(bytes)
}

/// [`read_local_file`] as UTF-8 text.
pub fn read_local_text(path: &Path, kind: &FileKind) -> Result<String, LocalFileError> {
    let bytes = read_local_file(path, kind)?;
    String::from_utf8(bytes).map_err(|_| LocalFileError::Io {
        path: path.to_owned(),
        error: io::Error::new(io::ErrorKind::InvalidData, "it is not UTF-8 text"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SMALL: FileKind = kind("a test file", 8);

    #[test]
    fn a_regular_file_within_its_limit_is_read_whole() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        fs::write(&path, b"12345678").unwrap();
        assert_eq!(read_local_file(&path, &SMALL).unwrap(), b"12345678");
        fs::write(&path, b"123456789").unwrap();
        let err = read_local_file(&path, &SMALL).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "{} is 9 bytes, more than the 8 bytes imgpack reads of a test file: check the path",
                path.display()
            )
        );
    }

    #[test]
    fn a_fifo_is_refused_without_blocking() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("fifo");
        let c_path = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c_path.as_ptr(), 0o600) }, 0);
        let err = read_local_file(&path, &SMALL).unwrap_err();
        assert!(
            err.to_string()
                .starts_with(&format!("{} is a FIFO, not a regular file", path.display())),
            "{err}"
        );
        let err = read_local_file(dir.path(), &SMALL).unwrap_err();
        assert!(err.to_string().contains("is a directory"), "{err}");
        let err = read_local_file(Path::new("/dev/null"), &SMALL).unwrap_err();
        assert!(err.to_string().contains("character device"), "{err}");
    }

    #[test]
    fn links_are_followed_only_where_the_kind_allows() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("target");
        fs::write(&target, b"x").unwrap();
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        assert_eq!(read_local_file(&link, &SMALL).unwrap(), b"x");
        let err = read_local_file(&link, &CACHE_RECORD).unwrap_err();
        assert!(err.to_string().contains("is a symbolic link"), "{err}");
        assert!(read_local_file(&dir.path().join("none"), &SMALL)
            .unwrap_err()
            .is_not_found());
    }
}
