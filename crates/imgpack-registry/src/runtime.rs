//! The one way into the async registry code from blocking callers (the CLI,
//! the image sinks): a small runtime per call, so no caller builds its own.

use std::future::Future;

use anyhow::{Context, Result};

/// Runs `future` to completion on a fresh two-thread runtime (uploads run
/// concurrently; two threads keep them moving while one hashes or reads).
pub(crate) fn block_on<T>(future: impl Future<Output = Result<T>>) -> Result<T> {
    runtime()?.block_on(future)
}

/// A fresh two-thread runtime, for work that outlives one call (a push that
/// starts while the layers are still being written).
pub(crate) fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}
