//! Layer compression (`--compression`, `--compression-level`, `--threads`):
//! gzip or zstd, with fixed headers and bytes that depend neither on the
//! host nor on the number of threads.

use std::io::{self, Write};

use anyhow::{bail, Result};

use crate::gzip::ParallelGzip;
use crate::Workers;

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

    /// The level: part of a layer's recipe, as the algorithm is.
    pub fn level(self) -> i32 {
        match self {
            Compression::Gzip { level } => level as i32,
            Compression::Zstd { level } => level,
        }
    }

    /// A compressor on `workers`' threads. The bytes are the same for any
    /// number of threads: gzip is cut into fixed blocks (see `gzip`), and
    /// zstd always runs in its multithreaded mode, whose output depends on
    /// the level and not on the worker count (its single-threaded mode,
    /// 0 workers, gives other bytes, so it is never used).
    pub(crate) fn encoder<W: Write>(self, inner: W, workers: &Workers) -> io::Result<Encoder<W>> {
        Ok(match self {
            Compression::Gzip { level } => {
                Encoder::Gzip(ParallelGzip::new(inner, level, workers.clone())?)
            }
            Compression::Zstd { level } => {
                let mut encoder = zstd::stream::write::Encoder::new(inner, level)?;
                encoder.include_checksum(false)?;
                encoder.include_contentsize(false)?;
                encoder.multithread(zstd_workers(level, workers.threads()))?;
                encoder.set_parameter(zstd::stream::raw::CParameter::JobSize(ZSTD_JOB_SIZE))?;
                Encoder::Zstd(encoder)
            }
        })
    }
}

/// The input of one zstd job. zstd cuts its multithreaded frames into jobs
/// compressed on their own (each primed with the end of the job before), so
/// the job size, unlike the worker count, is part of the bytes. zstd's own
/// choice (4 windows: 8 MiB at level 3) holds some 17 MiB per worker, in and
/// out; 1 MiB jobs hold about 3 MiB. Measured on a 275 MB debug binary at
/// level 3: 8 workers peak at 41 MiB instead of 139 MiB, for a layer 1.3%
/// larger.
/// Part of the layer format: changing it changes every zstd digest.
const ZSTD_JOB_SIZE: u32 = 1024 * 1024;
/// zstd workers at most, whatever `--threads` says: at 8 workers zstd
/// outruns the tar and digest work that feeds it, so more would add memory,
/// not speed. The bytes do not depend on it.
const ZSTD_MAX_WORKERS: usize = 8;
/// What zstd's workers may hold together, so that a build stays under 64 MiB:
/// higher levels have larger match tables and windows, so fewer workers.
const ZSTD_MEMORY_BUDGET: usize = 40 * 1024 * 1024;

/// zstd's worker count for `threads` at `level`: at least 1 (0 would be its
/// single-threaded mode, which gives other bytes), at most
/// [`ZSTD_MAX_WORKERS`], and as many as [`ZSTD_MEMORY_BUDGET`] holds by
/// zstd's own estimate of one worker's state plus its job's input and output.
/// At level 19 one worker alone needs more (zstd estimates 83 MiB).
fn zstd_workers(level: i32, threads: std::num::NonZeroUsize) -> u32 {
    // SAFETY: a pure function of its argument; it touches no memory of ours.
    let state = unsafe { zstd_sys::ZSTD_estimateCCtxSize(level) };
    let per_worker = state + 2 * ZSTD_JOB_SIZE as usize;
    let by_memory = (ZSTD_MEMORY_BUDGET / per_worker).max(1);
    threads.get().min(ZSTD_MAX_WORKERS).min(by_memory) as u32
}

pub(crate) enum Encoder<W: Write> {
    Gzip(ParallelGzip<W>),
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

    /// Never flushes the compressor: a flush ends a zstd job (or would cut a
    /// gzip block) early, which would make the bytes depend on who flushed when.
    fn flush(&mut self) -> io::Result<()> {
        match self {
            Encoder::Gzip(encoder) => encoder.flush(),
            Encoder::Zstd(encoder) => encoder.get_mut().flush(),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::Read;

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
        let compressed = compress(Compression::Gzip { level: 6 }, &input, 1);
        assert_eq!(&compressed[..10], &[0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 255]);
        assert_eq!(
            imgpack_blob::Digest::of_bytes(&compressed).to_string(),
            GOLDEN_GZIP_DIGEST,
            "gzip output changed: was flate2's backend or version changed? Pin it back in Cargo.toml"
        );
    }

    /// zstd's bytes depend on libzstd's version and on its multithreaded mode being used.
    #[test]
    fn zstd_workers_fit_the_memory_budget() {
        let threads = std::num::NonZeroUsize::new(64).unwrap();
        assert_eq!(zstd_workers(3, threads), ZSTD_MAX_WORKERS as u32);
        assert_eq!(zstd_workers(3, std::num::NonZeroUsize::MIN), 1);
        assert!(zstd_workers(9, threads) < zstd_workers(3, threads));
        assert_eq!(zstd_workers(19, threads), 1);
    }

    #[test]
    fn zstd_library_and_mode_are_the_pinned_ones() {
        let input: Vec<u8> = (0..200_000u32)
            .map(|i| (i % 251) as u8 ^ (i / 997) as u8)
            .collect();
        let compressed = compress(Compression::Zstd { level: 3 }, &input, 1);
        assert_eq!(
            imgpack_blob::Digest::of_bytes(&compressed).to_string(),
            GOLDEN_ZSTD_DIGEST,
            "zstd output changed: was zstd-sys upgraded or its multithreaded mode (zstdmt) lost?"
        );
    }

    fn compress(compression: Compression, input: &[u8], threads: usize) -> Vec<u8> {
        let workers = Workers::new(std::num::NonZeroUsize::new(threads).unwrap()).unwrap();
        let mut encoder = compression.encoder(Vec::new(), &workers).unwrap();
        for chunk in input.chunks(100_003) {
            encoder.write_all(chunk).unwrap();
            encoder.flush().unwrap();
        }
        encoder.finish().unwrap()
    }

    /// zstd's multithreaded mode cuts the input into jobs of ZSTD_JOB_SIZE,
    /// whatever the worker count. 20 MB is many jobs, so the workers really
    /// do run at once; 16 threads are capped at ZSTD_MAX_WORKERS.
    #[test]
    fn zstd_bytes_do_not_depend_on_the_worker_count() {
        let input: Vec<u8> = (0..20_000_000u32)
            .map(|i| ((i % 251) as u8 ^ (i / 997) as u8).wrapping_mul((i >> 16) as u8 | 1))
            .collect();
        for level in [1, 3] {
            let one = compress(Compression::Zstd { level }, &input, 1);
            for threads in [2, 8, 16] {
                assert!(
                    compress(Compression::Zstd { level }, &input, threads) == one,
                    "zstd level {level}: {threads} workers differ from 1"
                );
            }
            let mut decoded = Vec::new();
            zstd::stream::read::Decoder::new(&one[..])
                .unwrap()
                .read_to_end(&mut decoded)
                .unwrap();
            assert!(decoded == input);
        }
    }

    #[test]
    fn gzip_bytes_do_not_depend_on_the_thread_count() {
        let input: Vec<u8> = (0..1_000_000u32)
            .map(|i| (i % 251) as u8 ^ (i / 997) as u8)
            .collect();
        let one = compress(Compression::Gzip { level: 6 }, &input, 1);
        assert!(compress(Compression::Gzip { level: 6 }, &input, 2) == one);
        assert!(compress(Compression::Gzip { level: 6 }, &input, 8) == one);
    }

    const GOLDEN_GZIP_DIGEST: &str =
        "sha256:92debb0e9c574b7b2c75c025f8c3d2f9d5283c2ca06897174a9aaaa847270856";
    const GOLDEN_ZSTD_DIGEST: &str =
        "sha256:50c68c5346734fa89e6e931020beccda89186f761b051bbecb3fafbacbe2c2a0";
}
