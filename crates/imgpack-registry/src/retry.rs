//! Retries: transient failures back off and try again within a time budget.

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{anyhow, Result};
use backon::{ExponentialBuilder, Retryable};

use crate::errors::RequestError;
use crate::progress::Reporter;

/// How long and how often a failed request is tried again.
#[derive(Clone, Debug)]
pub struct RetryPolicy {
    /// Upper bound on the time spent retrying one operation (a blob, a manifest).
    pub max_elapsed: Duration,
    /// Hard bound on first contact (`GET /v2/`, tries and waits together): a
    /// registry that has not answered by then is down or not there, and the
    /// user hears so instead of waiting out `max_elapsed`.
    pub first_contact: Duration,
    pub max_tries: usize,
    pub min_delay: Duration,
}

/// Retrying one blob or manifest (`--retry-timeout` when not given).
pub const DEFAULT_MAX_ELAPSED: Duration = Duration::from_secs(120);
/// First contact when `--retry-timeout` is not given: three 10 s pings of
/// an HTTPS registry, or one over each scheme of a loopback one, with backoff.
pub const DEFAULT_FIRST_CONTACT: Duration = Duration::from_secs(30);

impl RetryPolicy {
    /// The policy of a `--retry-timeout` given on the command line: it bounds
    /// first contact too.
    pub fn with_timeout(timeout: Duration) -> Self {
        Self {
            max_elapsed: timeout,
            first_contact: timeout,
            ..Self::default()
        }
    }
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_elapsed: DEFAULT_MAX_ELAPSED,
            first_contact: DEFAULT_FIRST_CONTACT,
            max_tries: 8,
            min_delay: Duration::from_millis(250),
        }
    }
}

/// Runs `operation` until it succeeds, fails with a permanent error, or the
/// policy's tries or time run out. Transient failures (connection errors,
/// timeouts, 408, 429, 5xx) back off exponentially with jitter; a
/// `Retry-After` from the registry replaces the computed delay.
pub(crate) async fn with_retries<T, F, Fut>(
    policy: &RetryPolicy,
    reporter: &Reporter,
    what: &str,
    mut operation: F,
) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, RequestError>>,
{
    let deadline = Instant::now() + policy.max_elapsed;
    // Atomic, not a Cell: a push's futures run on a multi-threaded runtime.
    let tries = AtomicUsize::new(0);
    let backoff = ExponentialBuilder::default()
        .with_jitter()
        .with_min_delay(policy.min_delay)
        .with_max_delay(Duration::from_secs(10))
        .with_max_times(policy.max_tries.saturating_sub(1))
        .with_total_delay(Some(policy.max_elapsed));
    let result = (|| {
        tries.fetch_add(1, Ordering::Relaxed);
        operation()
    })
    .retry(backoff)
    .sleep(tokio::time::sleep)
    .when(|err: &RequestError| err.transient && Instant::now() < deadline)
    .adjust(|err: &RequestError, delay| {
        let remaining = deadline.saturating_duration_since(Instant::now());
        delay.map(|delay| err.retry_after.unwrap_or(delay).min(remaining))
    })
    .notify(|err: &RequestError, delay| {
        reporter.line(&format!(
            "{what}: {err}; trying again in {:.1}s",
            delay.as_secs_f64()
        ));
    })
    .await;
    result.map_err(|err| match tries.load(Ordering::Relaxed) {
        1 => anyhow!("{what} failed: {err}"),
        n => anyhow!("{what} failed after {n} tries: {err}"),
    })
}
