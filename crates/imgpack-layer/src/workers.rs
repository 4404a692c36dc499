//! The threads that compress layers (`--threads`): one pool per build, shared
//! by every layer written at once, so N threads means N busy cores at most.

use std::num::NonZeroUsize;
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::thread;

use anyhow::{Context, Result};

type Job = Box<dyn FnOnce() + Send>;

/// Compression threads at most, whatever `--threads` says: the bound on
/// memory. Each busy thread holds some 3 MiB (a new deflate state per block,
/// as a reset one was seen to give other bytes, its blocks in flight, and
/// what its malloc arena keeps): a 275 MB binary peaked at 49 MiB with 12
/// threads and at 72 MiB with 16. On 2 cores the producer is the limit long
/// before 12. The bytes do not depend on it.
pub const MAX_THREADS: usize = 12;

/// A handle on the compression threads. With one thread there is no pool:
/// blocks are compressed on the caller's thread, in the same way, so the bytes
/// never depend on the thread count.
#[derive(Clone)]
pub struct Workers {
    threads: NonZeroUsize,
    jobs: Option<Arc<Sender<Job>>>,
}

impl std::fmt::Debug for Workers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Workers({})", self.threads)
    }
}

impl Workers {
    /// Starts `threads` compression threads (none for 1), at most
    /// [`MAX_THREADS`]. They stop when the last handle is dropped.
    pub fn new(threads: NonZeroUsize) -> Result<Self> {
        let threads = threads.min(NonZeroUsize::new(MAX_THREADS).expect("not zero"));
        if threads.get() == 1 {
            return Ok(Self::single());
        }
        let (sender, receiver) = mpsc::channel::<Job>();
        let receiver = Arc::new(Mutex::new(receiver));
        for index in 0..threads.get() {
            let receiver = Arc::clone(&receiver);
            thread::Builder::new()
                .name(format!("imgpack-compress-{index}"))
                .spawn(move || run_jobs(&receiver))
                .context("cannot start a compression thread")?;
        }
        Ok(Self {
            threads,
            jobs: Some(Arc::new(sender)),
        })
    }

    /// Everything on the caller's thread.
    pub fn single() -> Self {
        Self {
            threads: NonZeroUsize::MIN,
            jobs: None,
        }
    }

    pub fn threads(&self) -> NonZeroUsize {
        self.threads
    }

    /// Runs `job` on a pool thread, or here and now without a pool.
    pub(crate) fn run(&self, job: impl FnOnce() + Send + 'static) {
        match &self.jobs {
            Some(jobs) => {
                // The threads only stop once every sender is gone, so this cannot fail
                // while `self` exists; if it did, the job's result channel closing
                // reports it to the caller.
                let _ = jobs.send(Box::new(job));
            }
            None => job(),
        }
    }
}

fn run_jobs(receiver: &Mutex<Receiver<Job>>) {
    loop {
        // The lock is held only while waiting for the next job, not while running it.
        let job = match receiver.lock() {
            Ok(receiver) => receiver.recv(),
            Err(_) => return,
        };
        match job {
            Ok(job) => job(),
            Err(_) => return,
        }
    }
}

/// The CPUs this process may use: its affinity mask and its cgroup's CPU
/// quota (a Kubernetes `resources.limits.cpu`), which the standard library
/// reads on Linux (cgroup v1 and v2), rounded down, at least 1.
pub fn available_threads() -> NonZeroUsize {
    thread::available_parallelism().unwrap_or(NonZeroUsize::MIN)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jobs_run_on_the_pool_and_inline() {
        for threads in [1, 3] {
            let workers = Workers::new(NonZeroUsize::new(threads).unwrap()).unwrap();
            let (sender, receiver) = mpsc::channel();
            for n in 0..10 {
                let sender = sender.clone();
                workers.run(move || sender.send(n * n).unwrap());
            }
            drop(sender);
            let mut squares: Vec<i32> = receiver.iter().collect();
            squares.sort();
            assert_eq!(squares, [0, 1, 4, 9, 16, 25, 36, 49, 64, 81]);
        }
    }
}
