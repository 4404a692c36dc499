use std::io::{Seek, SeekFrom};
use std::time::Duration;

use anyhow::Result;
use futures_util::TryStreamExt;
use imgpack_blob::{BlobInfo, BlobStore, Digest};
use indicatif::ProgressBar;
use reqwest::header::{
    CONTENT_LENGTH, CONTENT_RANGE, CONTENT_TYPE, LOCATION, RETRY_AFTER, WWW_AUTHENTICATE,
};
use reqwest::{Body, RequestBuilder, Response, StatusCode};
use serde::Deserialize;
use tokio::io::AsyncReadExt;
use tokio_util::io::ReaderStream;

use crate::auth::Authenticator;

/// Blobs up to this size go up in one PUT; larger ones as PATCH then PUT.
const MONOLITHIC_LIMIT: u64 = 4 << 20;

/// A failed request: what happened, and whether trying again may help.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct RequestError {
    pub message: String,
    pub transient: bool,
    pub retry_after: Option<Duration>,
}

impl RequestError {
    fn fatal(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            transient: false,
            retry_after: None,
        }
    }
}

/// How a cross-repository mount went.
pub(crate) enum Mount {
    Mounted,
    /// The registry declined (202) and opened an upload session instead.
    Declined {
        location: String,
    },
    /// The source was not usable (no access, unknown blob): upload instead.
    Unavailable,
}

/// One registry, reached over its resolved scheme, with its authenticator.
pub struct RegistryClient {
    pub(crate) http: reqwest::Client,
    /// `https://host:port` or `http://host:port`.
    pub(crate) base: String,
    pub(crate) registry: String,
    pub(crate) auth: Authenticator,
    /// Bytes per PATCH for large blobs; 0 streams the whole blob in one PATCH.
    pub(crate) chunk_size: u64,
}

pub(crate) fn push_scope(repository: &str) -> String {
    format!("repository:{repository}:pull,push")
}

impl RegistryClient {
    pub fn registry(&self) -> &str {
        &self.registry
    }

    /// Sends a request built by `build`, answering one 401 challenge by
    /// authenticating for `scopes` and sending it again.
    pub(crate) async fn send(
        &self,
        scopes: &[String],
        build: impl Fn(&reqwest::Client) -> Result<RequestBuilder, RequestError>,
    ) -> Result<Response, RequestError> {
        let mut challenged = false;
        loop {
            let mut request = build(&self.http)?;
            let authorization = self
                .auth
                .authorization(scopes)
                .await
                .map_err(|err| RequestError::fatal(format!("{err:#}")))?;
            let sent_credentials = authorization.is_some();
            if let Some(value) = authorization {
                request = request.header(reqwest::header::AUTHORIZATION, value);
            }
            let response = request
                .send()
                .await
                .map_err(|err| transport_error(&self.registry, &err))?;
            if response.status() != StatusCode::UNAUTHORIZED || challenged {
                return Ok(response);
            }
            challenged = true;
            let header = response
                .headers()
                .get(WWW_AUTHENTICATE)
                .and_then(|v| v.to_str().ok());
            self.auth
                .challenged(header, scopes, sent_credentials)
                .await
                .map_err(|err| RequestError::fatal(format!("{err:#}")))?;
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Resolves an upload Location (absolute, or relative to the registry).
    fn location_url(&self, location: &str) -> String {
        if location.starts_with("http://") || location.starts_with("https://") {
            location.to_owned()
        } else {
            self.url(location)
        }
    }

    pub(crate) async fn blob_exists(
        &self,
        repository: &str,
        digest: &Digest,
    ) -> Result<bool, RequestError> {
        let url = self.url(&format!("/v2/{repository}/blobs/{digest}"));
        let response = self
            .send(&[push_scope(repository)], |http| Ok(http.head(&url)))
            .await?;
        match response.status() {
            StatusCode::OK => Ok(true),
            StatusCode::NOT_FOUND => Ok(false),
            _ => Err(self
                .status_error(response, &format!("checking blob {digest}"))
                .await),
        }
    }

    pub(crate) async fn mount_blob(
        &self,
        repository: &str,
        digest: &Digest,
        from: &str,
    ) -> Result<Mount, RequestError> {
        let url = self.url(&format!(
            "/v2/{repository}/blobs/uploads/?mount={digest}&from={from}"
        ));
        let scopes = [push_scope(repository), format!("repository:{from}:pull")];
        let response = self
            .send(&scopes, |http| {
                Ok(http.post(&url).header(CONTENT_LENGTH, 0))
            })
            .await?;
        match response.status() {
            StatusCode::CREATED => Ok(Mount::Mounted),
            StatusCode::ACCEPTED => Ok(Mount::Declined {
                location: location(&response)?,
            }),
            status if is_transient(status) => Err(self
                .status_error(response, &format!("mounting blob {digest}"))
                .await),
            _ => Ok(Mount::Unavailable),
        }
    }

    async fn start_upload(&self, repository: &str) -> Result<(String, Option<u64>), RequestError> {
        let url = self.url(&format!("/v2/{repository}/blobs/uploads/"));
        let response = self
            .send(&[push_scope(repository)], |http| {
                Ok(http.post(&url).header(CONTENT_LENGTH, 0))
            })
            .await?;
        if response.status() != StatusCode::ACCEPTED {
            return Err(self.status_error(response, "starting an upload").await);
        }
        // A registry that needs chunks of a minimum size says so (OCI distribution 1.1).
        let min_chunk = response
            .headers()
            .get("OCI-Chunk-Min-Length")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok());
        Ok((location(&response)?, min_chunk))
    }

    /// Uploads a blob from `store`, streaming it from disk: one PUT for small
    /// blobs, PATCH (in chunks where configured or required) then PUT for large ones.
    /// `session` is an upload already opened by a declined mount.
    pub(crate) async fn upload_blob(
        &self,
        repository: &str,
        store: &BlobStore,
        blob: &BlobInfo,
        session: Option<String>,
        bar: &ProgressBar,
    ) -> Result<(), RequestError> {
        bar.set_position(0);
        let (mut location, min_chunk) = match session {
            Some(location) => (location, None),
            None => self.start_upload(repository).await?,
        };
        let scopes = [push_scope(repository)];
        let path = store.path(&blob.digest);
        let monolithic = blob.size <= MONOLITHIC_LIMIT && min_chunk.is_none();
        if !monolithic {
            let chunk = match (self.chunk_size, min_chunk) {
                (0, None) => blob.size.max(1),
                (size, min) => size.max(min.unwrap_or(0)).max(1),
            };
            let mut offset = 0;
            while offset < blob.size {
                let len = chunk.min(blob.size - offset);
                let url = self.location_url(&location);
                let response = self
                    .send(&scopes, |http| {
                        Ok(http
                            .patch(&url)
                            .header(CONTENT_TYPE, "application/octet-stream")
                            .header(CONTENT_LENGTH, len)
                            .header(CONTENT_RANGE, format!("{offset}-{}", offset + len - 1))
                            .body(file_body(&path, offset, len, bar)?))
                    })
                    .await?;
                if response.status() != StatusCode::ACCEPTED {
                    return Err(self
                        .status_error(response, &format!("uploading blob {}", blob.digest))
                        .await);
                }
                location = location_of(&response).unwrap_or(location);
                offset += len;
            }
        }
        let url = with_query(
            &self.location_url(&location),
            "digest",
            &blob.digest.to_string(),
        );
        let response = self
            .send(&scopes, |http| {
                let request = http
                    .put(&url)
                    .header(CONTENT_TYPE, "application/octet-stream");
                Ok(if monolithic {
                    request
                        .header(CONTENT_LENGTH, blob.size)
                        .body(file_body(&path, 0, blob.size, bar)?)
                } else {
                    request.header(CONTENT_LENGTH, 0)
                })
            })
            .await?;
        if response.status() != StatusCode::CREATED {
            return Err(self
                .status_error(
                    response,
                    &format!("finishing the upload of blob {}", blob.digest),
                )
                .await);
        }
        check_digest(&self.registry, &response, &blob.digest)
    }

    /// Puts manifest `bytes` under `reference` (a digest or a tag), exactly as
    /// given, and checks the digest the registry computed against ours.
    pub(crate) async fn put_manifest(
        &self,
        repository: &str,
        reference: &str,
        bytes: &[u8],
        media_type: &str,
    ) -> Result<(), RequestError> {
        let url = self.url(&format!("/v2/{repository}/manifests/{reference}"));
        let body = bytes.to_vec();
        let response = self
            .send(&[push_scope(repository)], |http| {
                Ok(http
                    .put(&url)
                    .header(CONTENT_TYPE, media_type)
                    .body(body.clone()))
            })
            .await?;
        if response.status() != StatusCode::CREATED {
            let what = format!("putting manifest {reference} ({media_type})");
            return Err(self.status_error(response, &what).await);
        }
        check_digest(&self.registry, &response, &Digest::of_bytes(bytes))
    }

    /// Checks that the credentials are accepted for `GET /v2/` (what `docker login` does).
    pub async fn check_login(&self) -> Result<(), RequestError> {
        let url = self.url("/v2/");
        let response = self.send(&[], |http| Ok(http.get(&url))).await?;
        if response.status().is_success() {
            return Ok(());
        }
        Err(self.status_error(response, "logging in").await)
    }

    /// Turns an unexpected answer into one line: what failed, the status,
    /// the registry's error codes, and for 401/403 which credentials were used.
    pub(crate) async fn status_error(&self, response: Response, what: &str) -> RequestError {
        let status = response.status();
        let retry_after = response
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let body = response.text().await.unwrap_or_default();
        let codes = error_codes(&body);
        let detail = if codes.is_empty() {
            String::new()
        } else {
            format!(": {codes}")
        };
        let message = match status {
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => format!(
                "registry {} refused {what} ({status}{detail}) with {}: check them or run `imgpack login {}`",
                self.registry,
                self.auth.credentials.describe(),
                self.registry
            ),
            _ => format!("registry {} answered {status} when {what}{detail}", self.registry),
        };
        RequestError {
            message,
            transient: is_transient(status),
            retry_after,
        }
    }
}

fn is_transient(status: StatusCode) -> bool {
    status == StatusCode::REQUEST_TIMEOUT
        || status == StatusCode::TOO_MANY_REQUESTS
        || status.is_server_error()
}

/// Connection-level failures, told apart for the user: refused, unknown host, TLS, other.
pub(crate) fn transport_error(registry: &str, err: &reqwest::Error) -> RequestError {
    let chain = error_chain(err);
    let lower = chain.to_ascii_lowercase();
    let message = if lower.contains("certificate")
        || lower.contains("tls")
        || lower.contains("handshake")
    {
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
    } else {
        format!("request to registry {registry} failed: {chain}")
    };
    // A certificate or name-resolution failure will not fix itself within a retry
    // budget; a refused or reset connection may (a registry restarting).
    let transient = !(lower.contains("certificate")
        || lower.contains("dns error")
        || lower.contains("failed to lookup"));
    RequestError {
        message,
        transient,
        retry_after: None,
    }
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

/// `CODE message; CODE message` from an OCI error body.
fn error_codes(body: &str) -> String {
    let Ok(parsed) = serde_json::from_str::<ErrorBody>(body) else {
        return String::new();
    };
    parsed
        .errors
        .iter()
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
        .join("; ")
}

fn location_of(response: &Response) -> Option<String> {
    response
        .headers()
        .get(LOCATION)?
        .to_str()
        .ok()
        .map(str::to_owned)
}

fn location(response: &Response) -> Result<String, RequestError> {
    location_of(response).ok_or_else(|| {
        RequestError::fatal("the registry opened an upload without a Location header")
    })
}

fn with_query(url: &str, key: &str, value: &str) -> String {
    let separator = if url.contains('?') { '&' } else { '?' };
    format!("{url}{separator}{key}={value}")
}

fn check_digest(
    registry: &str,
    response: &Response,
    expected: &Digest,
) -> Result<(), RequestError> {
    let Some(returned) = response
        .headers()
        .get("Docker-Content-Digest")
        .and_then(|v| v.to_str().ok())
    else {
        return Ok(());
    };
    if returned != expected.to_string() {
        return Err(RequestError::fatal(format!(
            "registry {registry} stored {returned} but imgpack sent {expected}: the content was changed on the way"
        )));
    }
    Ok(())
}

/// `len` bytes of the file at `offset`, streamed, counting into `bar`.
fn file_body(
    path: &std::path::Path,
    offset: u64,
    len: u64,
    bar: &ProgressBar,
) -> Result<Body, RequestError> {
    let mut file = std::fs::File::open(path).map_err(|err| {
        RequestError::fatal(format!("cannot read blob {}: {err}", path.display()))
    })?;
    file.seek(SeekFrom::Start(offset)).map_err(|err| {
        RequestError::fatal(format!("cannot read blob {}: {err}", path.display()))
    })?;
    let reader = tokio::fs::File::from_std(file).take(len);
    let bar = bar.clone();
    let stream = ReaderStream::with_capacity(reader, 256 * 1024)
        .inspect_ok(move |chunk| bar.inc(chunk.len() as u64));
    Ok(Body::wrap_stream(stream))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_error_bodies_are_summarised() {
        let body =
            r#"{"errors":[{"code":"MANIFEST_INVALID","message":"manifest invalid","detail":{}}]}"#;
        assert_eq!(error_codes(body), "MANIFEST_INVALID manifest invalid");
        assert_eq!(error_codes("<html>"), "");
    }

    #[test]
    fn upload_urls_get_the_digest_query() {
        assert_eq!(
            with_query("http://r/v2/a/blobs/uploads/x", "digest", "d"),
            "http://r/v2/a/blobs/uploads/x?digest=d"
        );
        assert_eq!(
            with_query("http://r/u?_state=s", "digest", "d"),
            "http://r/u?_state=s&digest=d"
        );
    }

    #[test]
    fn a_digest_the_registry_computed_differently_is_an_error() {
        let ours = Digest::of_bytes(b"manifest");
        let answer = |digest: &str| {
            let response = http::Response::builder()
                .status(201)
                .header("Docker-Content-Digest", digest)
                .body("")
                .unwrap();
            Response::from(response)
        };
        check_digest("reg:5000", &answer(&ours.to_string()), &ours).unwrap();
        let other = Digest::of_bytes(b"other").to_string();
        let err = check_digest("reg:5000", &answer(&other), &ours).unwrap_err();
        assert!(!err.transient);
        assert!(
            err.message.contains(&other) && err.message.contains(&ours.to_string()),
            "{}",
            err.message
        );
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
