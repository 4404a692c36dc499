//! gzip in independent blocks, compressed on every thread (the pigz scheme),
//! with bytes that do not depend on the number of threads.
//!
//! The input is cut into fixed 128 KiB blocks. Each block is compressed on
//! its own as raw deflate, primed with the 32 KiB of input before it as the
//! dictionary, and ends with a sync flush (the last block with the final
//! bit), so the blocks simply concatenate into one deflate stream after one
//! gzip header. The trailer's CRC32 is combined from the blocks' CRCs. Every
//! block is compressed the same way whichever thread does it, so 1, 2 or 64
//! threads give the same bytes. The price against one stream is a few bytes
//! per block (a sync marker, matches that would reach further back).

use std::collections::VecDeque;
use std::io::{self, Write};
use std::sync::mpsc;
use std::sync::Arc;

use flate2::{Compress, FlushCompress, Status};

use crate::Workers;

/// Input bytes per block. Part of the layer format: changing it changes every digest.
pub(crate) const BLOCK_SIZE: usize = 128 * 1024;
/// Deflate's window: how much earlier input a block may refer back to.
const DICTIONARY_SIZE: usize = 32 * 1024;
/// Blocks queued or being compressed per stream, per thread: enough to keep
/// every thread busy while the oldest is written, and a bound on memory.
const BLOCKS_IN_FLIGHT_PER_THREAD: usize = 2;

/// One compressed block: its deflate bytes, and the CRC and length of its input.
struct Compressed {
    deflate: Vec<u8>,
    crc: crc32fast::Hasher,
}

type Pending = mpsc::Receiver<io::Result<Compressed>>;

/// A gzip stream written through the [`Workers`]; [`finish`](Self::finish) writes the trailer.
pub(crate) struct ParallelGzip<W: Write> {
    inner: W,
    level: u32,
    workers: Workers,
    block: Vec<u8>,
    dictionary: Arc<Vec<u8>>,
    in_flight: VecDeque<Pending>,
    max_in_flight: usize,
    crc: crc32fast::Hasher,
    total_in: u64,
}

impl<W: Write> ParallelGzip<W> {
    pub(crate) fn new(mut inner: W, level: u32, workers: Workers) -> io::Result<Self> {
        inner.write_all(&header(level))?;
        let max_in_flight = BLOCKS_IN_FLIGHT_PER_THREAD * workers.threads().get();
        Ok(Self {
            inner,
            level,
            workers,
            block: Vec::with_capacity(BLOCK_SIZE),
            dictionary: Arc::new(Vec::new()),
            in_flight: VecDeque::new(),
            max_in_flight,
            crc: crc32fast::Hasher::new(),
            total_in: 0,
        })
    }

    /// Compresses what is left as the last block, writes everything and the
    /// trailer (CRC32 and length mod 2^32, little-endian); returns the inner writer.
    pub(crate) fn finish(mut self) -> io::Result<W> {
        self.dispatch(true)?;
        while !self.in_flight.is_empty() {
            self.write_oldest()?;
        }
        let mut trailer = [0u8; 8];
        trailer[..4].copy_from_slice(&self.crc.clone().finalize().to_le_bytes());
        trailer[4..].copy_from_slice(&(self.total_in as u32).to_le_bytes());
        self.inner.write_all(&trailer)?;
        Ok(self.inner)
    }

    /// Hands the current block to a thread; waits for the oldest ones first if
    /// too many are in flight.
    fn dispatch(&mut self, last: bool) -> io::Result<()> {
        while self.in_flight.len() >= self.max_in_flight {
            self.write_oldest()?;
        }
        let block = std::mem::replace(&mut self.block, Vec::with_capacity(BLOCK_SIZE));
        self.total_in += block.len() as u64;
        let tail = block.len().saturating_sub(DICTIONARY_SIZE);
        let next_dictionary = Arc::new(block[tail..].to_vec());
        let dictionary = std::mem::replace(&mut self.dictionary, next_dictionary);
        let level = self.level;
        let (sender, receiver) = mpsc::sync_channel(1);
        self.workers.run(move || {
            let result = compress_block(level, &dictionary, &block, last).map(|deflate| {
                let mut crc = crc32fast::Hasher::new();
                crc.update(&block);
                Compressed { deflate, crc }
            });
            // The stream may be gone (its writer failed); then nobody needs the block.
            let _ = sender.send(result);
        });
        self.in_flight.push_back(receiver);
        Ok(())
    }

    fn write_oldest(&mut self) -> io::Result<()> {
        let Some(pending) = self.in_flight.pop_front() else {
            return Ok(());
        };
        let compressed = pending
            .recv()
            .map_err(|_| io::Error::other("a compression thread stopped"))??;
        self.crc.combine(&compressed.crc);
        self.inner.write_all(&compressed.deflate)
    }
}

impl<W: Write> Write for ParallelGzip<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        // A full block goes out only once more input shows it is not the last.
        if self.block.len() == BLOCK_SIZE {
            self.dispatch(false)?;
        }
        let take = buf.len().min(BLOCK_SIZE - self.block.len());
        self.block.extend_from_slice(&buf[..take]);
        Ok(take)
    }

    /// Flushes only what is already compressed: cutting a block short would
    /// make the bytes depend on when callers flush.
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// The gzip header: no name, mtime 0, OS "unknown" (nothing of the host), and
/// the extra flags gzip sets for its fastest and best levels.
fn header(level: u32) -> [u8; 10] {
    let extra_flags = match level {
        9 => 2,
        1 => 4,
        _ => 0,
    };
    [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, extra_flags, 255]
}

/// One block as raw deflate, primed with `dictionary`; ends byte-aligned with
/// a sync flush, or with the final block when `last`. Each block gets a new
/// deflate state: a state reset and reused for the next block (of any layer)
/// was measured to give other bytes from run to run, so the output would
/// depend on which blocks a thread compressed before.
fn compress_block(level: u32, dictionary: &[u8], input: &[u8], last: bool) -> io::Result<Vec<u8>> {
    let mut compress = Compress::new(flate2::Compression::new(level), false);
    deflate_block(&mut compress, dictionary, input, last)
}

fn deflate_block(
    compress: &mut Compress,
    dictionary: &[u8],
    input: &[u8],
    last: bool,
) -> io::Result<Vec<u8>> {
    if !dictionary.is_empty() {
        compress
            .set_dictionary(dictionary)
            .map_err(io::Error::other)?;
    }
    let flush = if last {
        FlushCompress::Finish
    } else {
        FlushCompress::Sync
    };
    // Stored blocks are the worst case: 5 bytes per 16 KiB or so, plus the flush.
    let mut out = Vec::with_capacity(input.len() + input.len() / 64 + 64);
    loop {
        let consumed = compress.total_in() as usize;
        let status = compress
            .compress_vec(&input[consumed..], &mut out, flush)
            .map_err(io::Error::other)?;
        let all_in = compress.total_in() as usize == input.len();
        // Deflate is done with a flush when it stops short of filling the output.
        let done = match status {
            Status::StreamEnd => true,
            Status::Ok | Status::BufError => !last && all_in && out.len() < out.capacity(),
        };
        if done {
            return Ok(out);
        }
        out.reserve(out.capacity() / 2 + 1024);
    }
}

#[cfg(test)]
mod tests {
    use std::io::Read;
    use std::num::NonZeroUsize;

    use super::*;

    fn sample(len: usize) -> Vec<u8> {
        // Text-like with long repeats, so blocks refer back into their dictionary.
        (0..len)
            .map(|i| {
                b"the quick brown fox jumps over the lazy dog 0123456789\n"[(i * 7 / 5) % 55]
                    ^ ((i / 40_000) as u8 & 3)
            })
            .collect()
    }

    fn compress(input: &[u8], level: u32, threads: usize, chunk: usize) -> Vec<u8> {
        let workers = Workers::new(NonZeroUsize::new(threads).unwrap()).unwrap();
        let mut gzip = ParallelGzip::new(Vec::new(), level, workers).unwrap();
        for piece in input.chunks(chunk.max(1)) {
            gzip.write_all(piece).unwrap();
            gzip.flush().unwrap();
        }
        gzip.finish().unwrap()
    }

    fn gunzip(bytes: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        // MultiGzDecoder would hide a second member; one member is the format.
        flate2::read::GzDecoder::new(bytes)
            .read_to_end(&mut out)
            .unwrap();
        out
    }

    #[test]
    fn bytes_do_not_depend_on_threads_or_write_sizes() {
        let input = sample(3 * BLOCK_SIZE + 12_345);
        let one = compress(&input, 6, 1, 1 << 20);
        for (threads, chunk) in [(2, 4096), (8, 777), (3, BLOCK_SIZE)] {
            assert_eq!(
                compress(&input, 6, threads, chunk),
                one,
                "{threads} threads"
            );
        }
        assert_eq!(gunzip(&one), input);
    }

    /// The pool is shared by every layer of a build: a thread's earlier blocks
    /// (other data, other levels) must leave no trace in the next one's bytes.
    #[test]
    fn bytes_do_not_depend_on_what_the_threads_compressed_before() {
        let mut state = 0x9e37_79b9_u32;
        let mut noise = |len: usize| -> Vec<u8> {
            (0..len)
                .map(|_| {
                    state ^= state << 13;
                    state ^= state >> 17;
                    state ^= state << 5;
                    (state % 7) as u8 + b'a'
                })
                .collect()
        };
        let mut input = sample(2 * BLOCK_SIZE);
        input.extend(noise(3 * BLOCK_SIZE));
        input.extend(sample(BLOCK_SIZE));
        let fresh = compress(&input, 6, 1, 1 << 20);
        let workers = Workers::new(NonZeroUsize::new(2).unwrap()).unwrap();
        for (level, before) in [
            (9, noise(4 * BLOCK_SIZE)),
            (1, sample(5 * BLOCK_SIZE)),
            (6, noise(BLOCK_SIZE)),
        ] {
            let mut other = ParallelGzip::new(Vec::new(), level, workers.clone()).unwrap();
            other.write_all(&before).unwrap();
            other.finish().unwrap();
            let mut gzip = ParallelGzip::new(Vec::new(), 6, workers.clone()).unwrap();
            gzip.write_all(&input).unwrap();
            assert!(
                gzip.finish().unwrap() == fresh,
                "after a level {level} stream"
            );
        }
    }

    #[test]
    fn every_level_and_edge_size_round_trips() {
        for len in [
            0,
            1,
            BLOCK_SIZE - 1,
            BLOCK_SIZE,
            BLOCK_SIZE + 1,
            2 * BLOCK_SIZE,
        ] {
            let input = sample(len);
            for level in [0, 1, 6, 9] {
                let gzip = compress(&input, level, 2, 50_000);
                assert_eq!(gunzip(&gzip), input, "len {len} level {level}");
                let trailer = &gzip[gzip.len() - 8..];
                assert_eq!(trailer[4..], (len as u32).to_le_bytes());
            }
        }
    }

    #[test]
    fn blocks_use_the_previous_input_as_dictionary() {
        // 20 KB of noise ends the first block and starts the second: only the
        // dictionary lets the second copy become back-references.
        let mut state = 0x2545_f491_u32;
        let noise: Vec<u8> = (0..20_000)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 17;
                state ^= state << 5;
                state as u8
            })
            .collect();
        let mut input = vec![0u8; BLOCK_SIZE - noise.len()];
        input.extend_from_slice(&noise);
        input.extend_from_slice(&noise);
        let compressed = compress(&input, 6, 2, 1 << 20);
        assert_eq!(gunzip(&compressed), input);
        assert!(
            compressed.len() < noise.len() + 2_000,
            "{} bytes",
            compressed.len()
        );
    }
}
