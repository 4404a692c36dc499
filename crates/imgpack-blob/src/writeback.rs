//! Early writeback: a blob is synced to disk before it is renamed into place
//! (a crash never leaves a digest name over missing bytes), but an fsync of a
//! 50 MB layer that has sat in the page cache costs a quarter of a second here.
//! So the kernel is asked to start writing each few MiB out as soon as they
//! are written, while compression goes on; the final fsync then has little
//! left to wait for.

use std::fs::File;

/// Bytes written before their writeback is started.
const WINDOW: u64 = 8 * 1024 * 1024;

/// Follows one file's writes and starts their writeback a window at a time.
#[derive(Default)]
pub(crate) struct Writeback {
    written: u64,
    started: u64,
}

impl Writeback {
    /// Notes `bytes` more written at the end of `file`.
    pub(crate) fn wrote(&mut self, file: &File, bytes: usize) {
        self.written += bytes as u64;
        if self.written - self.started >= WINDOW {
            start_writeback(file, self.started, self.written - self.started);
            self.started = self.written;
        }
    }
}

/// Asks the kernel to start writing the range out without waiting for it. Only
/// a hint: if it fails, the fsync at commit does all the work, as without it.
#[cfg(target_os = "linux")]
fn start_writeback(file: &File, offset: u64, len: u64) {
    use std::os::fd::AsRawFd;
    let (Ok(offset), Ok(len)) = (i64::try_from(offset), i64::try_from(len)) else {
        return;
    };
    // SAFETY: the descriptor is open for the whole call (borrowed from `file`);
    // sync_file_range reads no memory of ours.
    unsafe {
        libc::sync_file_range(file.as_raw_fd(), offset, len, libc::SYNC_FILE_RANGE_WRITE);
    }
}

#[cfg(not(target_os = "linux"))]
fn start_writeback(_file: &File, _offset: u64, _len: u64) {}
