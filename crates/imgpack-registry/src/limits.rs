//! Bounds on everything a registry sends: how many bytes imgpack reads of a
//! document, an error or a token reply, how long a short request may take,
//! and how slowly a blob may move before the transfer counts as stalled.
//! A dribbling or endless registry ends in an error, never a hang or a
//! growing heap.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures_util::StreamExt;
use reqwest::Response;

use crate::errors::RequestError;

/// Manifests, indexes and image configs (containerd's limit).
pub(crate) const DOCUMENT_LIMIT: u64 = 4 << 20;
/// Error bodies: enough for any registry's error JSON.
pub(crate) const ERROR_BODY_LIMIT: u64 = 64 << 10;
/// Token service replies.
pub(crate) const TOKEN_LIMIT: u64 = 1 << 20;

/// `GET /v2/` at first contact, one scheme at a time.
pub(crate) const PING_DEADLINE: Duration = Duration::from_secs(10);
/// Every request that moves no blob (HEADs, tokens, documents, upload
/// sessions), from connecting to the last byte of the answer.
pub(crate) const REQUEST_DEADLINE: Duration = Duration::from_secs(30);
/// A blob transfer is stalled when fewer than [`MIN_BYTES_PER_WINDOW`] move
/// in one window (about 4 KiB/s)...
pub(crate) const TRANSFER_WINDOW: Duration = Duration::from_secs(15);
pub(crate) const MIN_BYTES_PER_WINDOW: u64 = 64 << 10;
/// ...or when the registry has not answered this long after the last byte.
pub(crate) const ANSWER_DEADLINE: Duration = REQUEST_DEADLINE;

/// Reads a response body of at most `limit` bytes within [`REQUEST_DEADLINE`];
/// `what` names it in errors ("the manifest team/app:v1 of registry X").
pub(crate) async fn read_limited(
    response: Response,
    limit: u64,
    what: &str,
) -> Result<Vec<u8>, RequestError> {
    let too_large = || {
        RequestError::fatal(format!(
            "{what} is larger than {}, the most imgpack reads",
            human(limit)
        ))
    };
    if response
        .content_length()
        .is_some_and(|length| length > limit)
    {
        return Err(too_large());
    }
    let read = async {
        let mut body = Vec::new();
        let mut stream = response.bytes_stream();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|err| {
                RequestError::transient(format!(
                    "{what} was cut off: {}",
                    crate::errors::printable(&err.to_string())
                ))
            })?;
            if body.len() as u64 + chunk.len() as u64 > limit {
                return Err(too_large());
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    };
    match tokio::time::timeout(REQUEST_DEADLINE, read).await {
        Ok(result) => result,
        Err(_) => Err(RequestError::transient(format!(
            "{what} did not arrive within {}s",
            REQUEST_DEADLINE.as_secs()
        ))),
    }
}

fn human(bytes: u64) -> String {
    if bytes >= 1 << 20 {
        format!("{} MiB", bytes >> 20)
    } else {
        format!("{} KiB", bytes >> 10)
    }
}

/// The bytes of one blob transfer moved so far, watched for stalls.
#[derive(Debug)]
pub(crate) struct Progress {
    moved: AtomicU64,
    total: u64,
}

/// How a transfer broke the rules of [`Progress::stalled`].
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Stall {
    /// Fewer than [`MIN_BYTES_PER_WINDOW`] moved in a [`TRANSFER_WINDOW`].
    TooSlow { moved: u64, total: u64 },
    /// Every byte moved, but no answer came within [`ANSWER_DEADLINE`].
    NoAnswer,
}

impl Progress {
    pub(crate) fn new(total: u64) -> Self {
        Self {
            moved: AtomicU64::new(0),
            total,
        }
    }

    /// Starts counting again (the same body sent again after a challenge).
    pub(crate) fn reset(&self) {
        self.moved.store(0, Ordering::Relaxed);
    }

    pub(crate) fn add(&self, bytes: u64) {
        self.moved.fetch_add(bytes, Ordering::Relaxed);
    }

    pub(crate) fn moved(&self) -> u64 {
        self.moved.load(Ordering::Relaxed)
    }

    /// Resolves when the transfer stalls; raced against the transfer itself.
    pub(crate) async fn stalled(&self) -> Stall {
        self.stalled_with(TRANSFER_WINDOW, MIN_BYTES_PER_WINDOW, ANSWER_DEADLINE)
            .await
    }

    async fn stalled_with(&self, window: Duration, min_bytes: u64, answer: Duration) -> Stall {
        loop {
            if self.moved() >= self.total {
                tokio::time::sleep(answer).await;
                return Stall::NoAnswer;
            }
            let start = self.moved();
            tokio::time::sleep(window).await;
            let now = self.moved();
            if now < self.total && now - start < min_bytes {
                return Stall::TooSlow {
                    moved: now,
                    total: self.total,
                };
            }
        }
    }
}

impl Stall {
    /// The error for a transfer of `what` to or from `registry` that stalled.
    pub(crate) fn error(&self, registry: &str, what: &str) -> RequestError {
        RequestError::transient(match self {
            Stall::TooSlow { moved, total } if *total == u64::MAX => format!(
                "registry {registry} stopped answering while {what} ({moved} bytes moved; \
                 less than {} KiB in {}s)",
                MIN_BYTES_PER_WINDOW >> 10,
                TRANSFER_WINDOW.as_secs()
            ),
            Stall::TooSlow { moved, total } => format!(
                "registry {registry} stopped answering while {what} ({moved} of {total} bytes moved; \
                 less than {} KiB in {}s)",
                MIN_BYTES_PER_WINDOW >> 10,
                TRANSFER_WINDOW.as_secs()
            ),
            Stall::NoAnswer => format!(
                "registry {registry} stopped answering while {what} (no answer {}s after the last byte)",
                ANSWER_DEADLINE.as_secs()
            ),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_dribbling_transfer_stalls_and_a_steady_one_does_not() {
        let window = Duration::from_secs(15);
        let dribble = Progress::new(1 << 20);
        let watch = dribble.stalled_with(window, 1024, window);
        let feed = async {
            loop {
                dribble.add(1);
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
        };
        let stall = tokio::select! { stall = watch => stall, _ = feed => unreachable!() };
        assert!(
            matches!(stall, Stall::TooSlow { total: 1048576, .. }),
            "{stall:?}"
        );

        let steady = Progress::new(100 << 10);
        let started = tokio::time::Instant::now();
        let watch = steady.stalled_with(window, 1024, window);
        let feed = async {
            for _ in 0..100 {
                steady.add(1024);
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            std::future::pending::<()>().await
        };
        let stall = tokio::select! { stall = watch => stall, _ = feed => unreachable!() };
        // All bytes moved after 50 s; then the answer had 15 s to come.
        assert_eq!(stall, Stall::NoAnswer);
        assert!(
            started.elapsed() >= Duration::from_secs(60),
            "{:?}",
            started.elapsed()
        );
    }
}
