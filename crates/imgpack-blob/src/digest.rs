//! `sha256:` digests, and a writer that hashes and counts what passes through.

use std::fmt;
use std::io::{self, Write};

use sha2::{Digest as _, Sha256};

/// A `sha256:<hex>` content digest.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest {
    hex: String,
}

impl Digest {
    pub fn of_bytes(bytes: &[u8]) -> Self {
        Self::from_hasher(Sha256::new_with_prefix(bytes))
    }

    fn from_hasher(hasher: Sha256) -> Self {
        Self {
            hex: hex::encode(hasher.finalize()),
        }
    }

    /// Parses `sha256:<64 lowercase hex>`; other algorithms are not used by imgpack.
    pub fn parse(text: &str) -> Option<Self> {
        let hex = text.strip_prefix("sha256:")?;
        let valid = hex.len() == 64 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
        valid.then(|| Self {
            hex: hex.to_owned(),
        })
    }

    /// The hex part, which is also the blob's file name.
    pub fn hex(&self) -> &str {
        &self.hex
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", self.hex)
    }
}

/// Passes writes through to `inner` while hashing and counting them, so a
/// stream's digest and size come out of the same single pass that writes it.
#[derive(Clone)]
pub struct DigestWriter<W> {
    inner: W,
    hasher: Sha256,
    written: u64,
}

impl<W: Write> DigestWriter<W> {
    pub fn new(inner: W) -> Self {
        Self {
            inner,
            hasher: Sha256::new(),
            written: 0,
        }
    }

    /// The digest and byte count of everything written so far.
    pub fn digest_so_far(&self) -> (Digest, u64) {
        (Digest::from_hasher(self.hasher.clone()), self.written)
    }

    /// Returns the inner writer with the digest and byte count of everything written.
    pub fn finish(self) -> (W, Digest, u64) {
        (self.inner, Digest::from_hasher(self.hasher), self.written)
    }
}

impl<W: Write> Write for DigestWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let written = self.inner.write(buf)?;
        self.hasher.update(&buf[..written]);
        self.written += written as u64;
        Ok(written)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digest_of_empty_input_is_the_well_known_one() {
        assert_eq!(
            Digest::of_bytes(b"").to_string(),
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }

    #[test]
    fn writer_digest_matches_digest_of_bytes() {
        let mut writer = DigestWriter::new(Vec::new());
        writer.write_all(b"hello ").unwrap();
        writer.write_all(b"world").unwrap();
        let (bytes, digest, size) = writer.finish();
        assert_eq!(bytes, b"hello world");
        assert_eq!(size, 11);
        assert_eq!(digest, Digest::of_bytes(b"hello world"));
    }

    #[test]
    fn parse_accepts_only_sha256_lowercase_hex() {
        let text = format!("sha256:{}", "a".repeat(64));
        assert_eq!(Digest::parse(&text).unwrap().to_string(), text);
        assert!(Digest::parse(&format!("sha512:{}", "a".repeat(64))).is_none());
        assert!(Digest::parse(&format!("sha256:{}", "A".repeat(64))).is_none());
        assert!(Digest::parse("sha256:abc").is_none());
        assert!(Digest::parse(&format!("sha256:../{}", "a".repeat(61))).is_none());
    }
}
