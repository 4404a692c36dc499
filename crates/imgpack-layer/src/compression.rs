//! Layer compression (`--compression`, `--compression-level`): gzip or zstd,
//! with the fixed headers that keep the compressed bytes reproducible.

use std::io::{self, Write};

use anyhow::{bail, Result};

/// How layer tars are compressed. Same algorithm, level and library version
/// give the same bytes, which is why the libraries are pinned exactly.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compression {
    Gzip { level: u32 },
    Zstd { level: i32 },
}

impl Compression {
    pub const DEFAULT_GZIP_LEVEL: u32 = 6;
    pub const DEFAULT_ZSTD_LEVEL: i32 = 3;

    /// `gzip` or `zstd`, at `level` or the algorithm's default.
    pub fn from_name(name: &str, level: Option<i32>) -> Result<Self> {
        match name {
            "gzip" => {
                let level = level.unwrap_or(Self::DEFAULT_GZIP_LEVEL as i32);
                if !(0..=9).contains(&level) {
                    bail!("--compression-level {level} is out of range for gzip: use 0 to 9");
                }
                Ok(Compression::Gzip {
                    level: level as u32,
                })
            }
            "zstd" => {
                let level = level.unwrap_or(Self::DEFAULT_ZSTD_LEVEL);
                if !(1..=22).contains(&level) {
                    bail!("--compression-level {level} is out of range for zstd: use 1 to 22");
                }
                Ok(Compression::Zstd { level })
            }
            other => bail!("unknown compression '{other}': use gzip or zstd"),
        }
    }

    /// `gzip` or `zstd`: the suffix of the layer media types.
    pub fn name(self) -> &'static str {
        match self {
            Compression::Gzip { .. } => "gzip",
            Compression::Zstd { .. } => "zstd",
        }
    }

    pub(crate) fn encoder<W: Write>(self, inner: W) -> io::Result<Encoder<W>> {
        Ok(match self {
            // No file name, mtime 0 and OS "unknown": nothing of the host in the header.
            Compression::Gzip { level } => Encoder::Gzip(
                flate2::GzBuilder::new()
                    .mtime(0)
                    .operating_system(255)
                    .write(inner, flate2::Compression::new(level)),
            ),
            Compression::Zstd { level } => {
                let mut encoder = zstd::stream::write::Encoder::new(inner, level)?;
                encoder.include_checksum(false)?;
                encoder.include_contentsize(false)?;
                Encoder::Zstd(encoder)
            }
        })
    }
}

pub(crate) enum Encoder<W: Write> {
    Gzip(flate2::write::GzEncoder<W>),
    Zstd(zstd::stream::write::Encoder<'static, W>),
}

impl<W: Write> Encoder<W> {
    /// Writes the stream's trailer and returns the inner writer.
    pub(crate) fn finish(self) -> io::Result<W> {
        match self {
            Encoder::Gzip(encoder) => encoder.finish(),
            Encoder::Zstd(encoder) => encoder.finish(),
        }
    }
}

impl<W: Write> Write for Encoder<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Encoder::Gzip(encoder) => encoder.write(buf),
            Encoder::Zstd(encoder) => encoder.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Encoder::Gzip(encoder) => encoder.flush(),
            Encoder::Zstd(encoder) => encoder.flush(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_are_checked_per_algorithm() {
        assert_eq!(
            Compression::from_name("gzip", None).unwrap(),
            Compression::Gzip { level: 6 }
        );
        assert_eq!(
            Compression::from_name("zstd", Some(19)).unwrap(),
            Compression::Zstd { level: 19 }
        );
        assert!(Compression::from_name("gzip", Some(10)).is_err());
        assert!(Compression::from_name("zstd", Some(0)).is_err());
        let err = Compression::from_name("xz", None).unwrap_err().to_string();
        assert!(err.contains("gzip or zstd"), "{err}");
    }

    /// The deflate backend decides the bytes of every gzip layer. If feature
    /// unification or an upgrade switches flate2's backend, this digest moves.
    #[test]
    fn gzip_backend_is_the_pinned_one() {
        let input: Vec<u8> = (0..200_000u32)
            .map(|i| (i % 251) as u8 ^ (i / 997) as u8)
            .collect();
        let mut encoder = Compression::Gzip { level: 6 }.encoder(Vec::new()).unwrap();
        encoder.write_all(&input).unwrap();
        let compressed = encoder.finish().unwrap();
        assert_eq!(&compressed[..10], &[0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 255]);
        assert_eq!(
            imgpack_blob::Digest::of_bytes(&compressed).to_string(),
            GOLDEN_GZIP_DIGEST,
            "gzip output changed: was flate2's backend or version changed? Pin it back in Cargo.toml"
        );
    }

    const GOLDEN_GZIP_DIGEST: &str =
        "sha256:66cbac4fefbce60b03d89db217d38d5a34ed7f3e294966229b3dd9cc06c13223";
}
