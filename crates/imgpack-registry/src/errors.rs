//! What went wrong talking to a registry, as one line for the user, and
//! whether trying again may help: decided from the connection failure or the
//! status, never from message text a registry controls.

use std::time::Duration;

use reqwest::header::RETRY_AFTER;
use reqwest::{Response, StatusCode};
use serde::Deserialize;

use crate::limits::{read_limited, ERROR_BODY_LIMIT};

/// A failed request: what happened, and whether trying again may help.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct RequestError {
    pub message: String,
    pub transient: bool,
    pub retry_after: Option<Duration>,
}

impl RequestError {
    pub(crate) fn fatal(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            transient: false,
            retry_after: None,
        }
    }

    pub(crate) fn transient(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            transient: true,
            retry_after: None,
        }
    }

    /// A local failure (reading a blob, writing the cache): never the registry's fault.
    pub(crate) fn local(err: anyhow::Error) -> Self {
        Self::fatal(format!("{err:#}"))
    }
}

/// 408, 429 and 5xx may pass; other statuses will not change on their own.
pub(crate) fn is_transient(status: StatusCode) -> bool {
    status == StatusCode::REQUEST_TIMEOUT
        || status == StatusCode::TOO_MANY_REQUESTS
        || status.is_server_error()
}

/// What `imgpack login` does, for [`status_error`].
pub(crate) const LOGGING_IN: &str = "logging in";

/// An unexpected answer of `registry` as one line: what failed, the status
/// and the registry's error codes; for 401/403 which credentials were used.
pub(crate) async fn status_error(
    registry: &str,
    response: Response,
    what: &str,
    credentials: &str,
) -> RequestError {
    let status = response.status();
    let retry_after = retry_after(&response);
    let body = read_limited(response, ERROR_BODY_LIMIT, "an error body")
        .await
        .unwrap_or_default();
    let codes = error_codes(&body);
    let detail = if codes.is_empty() {
        String::new()
    } else {
        format!(": {codes}")
    };
    // A refused login is not helped by running `imgpack login` again.
    let advice = if what == LOGGING_IN {
        "check the user name and the password or token".to_owned()
    } else {
        format!("check them or run `imgpack login {registry}`")
    };
    let message = match status {
        StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => format!(
            "registry {registry} refused {what} ({status}{detail}) with {credentials}: {advice}"
        ),
        _ => format!("registry {registry} answered {status} when {what}{detail}"),
    };
    RequestError {
        message,
        transient: is_transient(status),
        retry_after,
    }
}

/// `Retry-After` in seconds (the HTTP-date form is rare from registries), at most 10 minutes.
fn retry_after(response: &Response) -> Option<Duration> {
    response
        .headers()
        .get(RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(|seconds| Duration::from_secs(seconds.min(600)))
}

/// Connection-level failures, told apart for the user: refused, unknown host, TLS, timeouts, other.
pub(crate) fn transport_error(registry: &str, err: &reqwest::Error) -> RequestError {
    let chain = printable(&error_chain(err));
    let lower = chain.to_ascii_lowercase();
    let certificate = lower.contains("certificate") || lower.contains("unknownissuer");
    let message = if certificate || lower.contains("handshake") {
        format!(
            "TLS connection to registry {registry} failed ({chain}): pass --registry-ca FILE with the CA that \
             signed its certificate, or --insecure-registry {registry} to skip verification"
        )
    } else if lower.contains("dns error")
        || lower.contains("failed to lookup")
        || lower.contains("name or service not known")
    {
        format!("unknown registry host {registry} ({chain}): check the name")
    } else if lower.contains("connection refused") {
        format!("cannot connect to registry {registry}: connection refused: is it running, and are host and port right?")
    } else if err.is_timeout() {
        format!("registry {registry} stopped answering (no answer within the request's deadline)")
    } else {
        format!("request to registry {registry} failed: {chain}")
    };
    // A certificate or name-resolution failure will not fix itself within a retry
    // budget; a refused or reset connection may (a registry restarting).
    let transient =
        !(certificate || lower.contains("dns error") || lower.contains("failed to lookup"));
    RequestError {
        message,
        transient,
        retry_after: None,
    }
}

/// Whether nothing accepted the connection (ECONNREFUSED), read from the
/// I/O error under reqwest's, not from its text.
pub(crate) fn is_refused(err: &reqwest::Error) -> bool {
    let mut current: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(cause) = current {
        if cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::ConnectionRefused)
        {
            return true;
        }
        current = cause.source();
    }
    false
}

/// Whether a TLS attempt failed because the server does not speak TLS at all
/// (a plain-HTTP server answering a ClientHello), rather than a bad certificate.
pub(crate) fn is_not_tls(err: &RequestError) -> bool {
    let lower = err.message.to_ascii_lowercase();
    lower.contains("invalidcontenttype")
        || lower.contains("corrupt message")
        || lower.contains("wrong version number")
        || lower.contains("invalid http version")
}

/// The innermost causes of an error, without reqwest's URL-bearing outer text repeated.
fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut current = err.source();
    while let Some(cause) = current {
        let text = cause.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        current = cause.source();
    }
    if parts.is_empty() {
        parts.push(err.to_string());
    }
    parts.join(": ")
}

#[derive(Deserialize)]
struct ErrorBody {
    errors: Vec<ErrorEntry>,
}

#[derive(Deserialize)]
struct ErrorEntry {
    code: Option<String>,
    message: Option<String>,
}

/// `CODE message; CODE message` from an OCI error body, printable and short.
pub(crate) fn error_codes(body: &[u8]) -> String {
    let Ok(parsed) = serde_json::from_slice::<ErrorBody>(body) else {
        return String::new();
    };
    let summary = parsed
        .errors
        .iter()
        .take(3)
        .map(|e| {
            format!(
                "{} {}",
                e.code.as_deref().unwrap_or(""),
                e.message.as_deref().unwrap_or("")
            )
            .trim()
            .to_owned()
        })
        .collect::<Vec<_>>()
        .join("; ");
    printable(&summary)
}

/// Longest text from a registry that a message quotes.
const QUOTE_LIMIT: usize = 300;

/// Text a registry sent, made safe to print: control characters (terminal
/// escapes, newlines) become `?`, and it is cut at [`QUOTE_LIMIT`] characters.
pub(crate) fn printable(text: &str) -> String {
    let mut out: String = text
        .chars()
        .take(QUOTE_LIMIT)
        .map(|c| if c.is_control() { '?' } else { c })
        .collect();
    if text.chars().count() > QUOTE_LIMIT {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_error_bodies_are_summarised() {
        let body =
            r#"{"errors":[{"code":"MANIFEST_INVALID","message":"manifest invalid","detail":{}}]}"#;
        assert_eq!(
            error_codes(body.as_bytes()),
            "MANIFEST_INVALID manifest invalid"
        );
        assert_eq!(error_codes(b"<html>"), "");
    }

    #[test]
    fn registry_text_cannot_drive_the_terminal() {
        let body =
            "{\"errors\":[{\"code\":\"X\",\"message\":\"\\u001b]0;owned\\u0007\\nnext line\"}]}";
        let shown = error_codes(body.as_bytes());
        assert!(!shown.chars().any(char::is_control), "{shown:?}");
        assert_eq!(shown, "X ?]0;owned??next line");
        let long = "a".repeat(1000);
        assert_eq!(printable(&long).chars().count(), QUOTE_LIMIT + 1);
    }

    #[test]
    fn transient_statuses() {
        for status in [408, 429, 500, 502, 503] {
            assert!(is_transient(StatusCode::from_u16(status).unwrap()));
        }
        for status in [400, 401, 403, 404, 415] {
            assert!(!is_transient(StatusCode::from_u16(status).unwrap()));
        }
    }
}
