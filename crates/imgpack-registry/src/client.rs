//! One registry over its resolved scheme: every request goes through
//! [`RegistryClient::send`], which decides what each hop may carry.
//! Credentials go to the registry's own origin only; a redirect or an upload
//! `Location` elsewhere is followed without them, and an https registry is
//! never continued over plain HTTP.

use std::io::{Read, Seek, SeekFrom, Write};
use std::sync::Arc;

use futures_util::TryStreamExt;
use imgpack_blob::{BlobInfo, BlobStore, Digest, GrowingBlob};
use indicatif::ProgressBar;
use reqwest::header::{
    HeaderValue, AUTHORIZATION, CONTENT_LENGTH, CONTENT_RANGE, CONTENT_TYPE, LOCATION,
    WWW_AUTHENTICATE,
};
use reqwest::{Body, Method, RequestBuilder, Response, StatusCode};
use tokio::io::AsyncReadExt;
use tokio_util::io::ReaderStream;
use url::Url;

use crate::auth::Authenticator;
use crate::errors::{
    error_codes, is_transient, printable, status_error, transport_error, RequestError,
};
use crate::limits::{read_limited, Progress, ERROR_BODY_LIMIT, REQUEST_DEADLINE};
use crate::progress::Reporter;
use crate::transport::Clients;
use crate::RetryPolicy;

/// Redirects followed for one GET or HEAD.
const MAX_REDIRECTS: usize = 5;

/// How a cross-repository mount went.
pub(crate) enum Mount {
    Mounted,
    /// The registry declined (202) and opened an upload session instead.
    Declined {
        location: Url,
    },
    /// The source was not usable (no access, unknown blob): upload instead.
    Unavailable,
}

/// How a manifest PUT by digest went.
pub(crate) enum DigestPut {
    Stored,
    /// Refused with 400 or 405: the registry stores manifests under tags only.
    TagsOnly(RequestError),
}

/// How long a request may take.
#[derive(Clone, Copy)]
pub(crate) enum Timing<'a> {
    /// [`REQUEST_DEADLINE`] from connecting to the last byte of the answer.
    Short,
    /// [`REQUEST_DEADLINE`] for the answer's head; the caller bounds its body.
    Head,
    /// A blob body going up: stalls are watched by its [`Progress`].
    Upload(&'a Progress, &'a str),
}

/// One registry, reached over its resolved scheme, with its authenticator.
pub struct RegistryClient {
    pub(crate) clients: Clients,
    /// `https://host:port/` or `http://host:port/`.
    pub(crate) base: Url,
    pub(crate) registry: String,
    pub(crate) auth: Authenticator,
    /// Bytes per PATCH for large blobs; 0 streams the whole blob in one PATCH.
    pub(crate) chunk_size: u64,
    pub(crate) retry: RetryPolicy,
    pub(crate) reporter: Reporter,
}

pub(crate) fn push_scope(repository: &str) -> String {
    format!("repository:{repository}:pull,push")
}

impl RegistryClient {
    pub fn registry(&self) -> &str {
        &self.registry
    }

    /// `path` (no leading `/`) on the registry, e.g. `v2/team/app/manifests/v1`.
    pub(crate) fn endpoint(&self, path: &str) -> Url {
        self.base
            .join(path)
            .expect("registry paths are relative references")
    }

    fn is_own(&self, url: &Url) -> bool {
        url.origin() == self.base.origin()
    }

    /// Where a `Location` (absolute or relative, RFC 3986) of an answer to
    /// `request` points; refused when it would leave HTTPS.
    pub(crate) fn resolve_location(
        &self,
        request: &Url,
        location: &str,
    ) -> Result<Url, RequestError> {
        let next = request.join(location).map_err(|err| {
            RequestError::fatal(format!(
                "registry {} sent a bad Location '{}': {err}",
                self.registry,
                printable(location)
            ))
        })?;
        let downgrade = self.base.scheme() == "https" && next.scheme() != "https";
        if downgrade || !matches!(next.scheme(), "http" | "https") {
            return Err(RequestError::fatal(format!(
                "registry {} sent imgpack on to {}, which is not HTTPS: refused, an HTTPS registry is \
                 never continued over another scheme",
                self.registry,
                printable(next.as_str())
            )));
        }
        Ok(next)
    }

    /// Sends `method url` decorated by `decorate`: with the registry's
    /// credentials for `scopes` when `url` is the registry's own origin (one
    /// 401 challenge answered by authenticating and sending it again), and
    /// without them anywhere else. GETs and HEADs follow redirects, each hop
    /// judged on its own.
    pub(crate) async fn send(
        &self,
        scopes: &[String],
        method: Method,
        url: Url,
        timing: Timing<'_>,
        decorate: impl Fn(RequestBuilder) -> Result<RequestBuilder, RequestError>,
    ) -> Result<Response, RequestError> {
        let mut url = url;
        let mut challenged = false;
        let mut redirects = 0;
        loop {
            let own = self.is_own(&url);
            let mut request = decorate(
                self.clients
                    .for_url(&url)?
                    .request(method.clone(), url.clone()),
            )?;
            let authorization = match own {
                true => self.authorization(scopes).await?,
                false => None,
            };
            let sent_credentials = authorization.is_some();
            if let Some(value) = authorization {
                request = request.header(AUTHORIZATION, value);
            }
            if let Timing::Upload(progress, _) = timing {
                progress.reset();
            }
            let response = self.dispatch(request, timing).await?;
            let status = response.status();
            let follows = method == Method::GET || method == Method::HEAD;
            if status.is_redirection() && follows {
                if let Some(location) = header(&response, LOCATION) {
                    redirects += 1;
                    if redirects > MAX_REDIRECTS {
                        return Err(RequestError::fatal(format!(
                            "registry {} redirected imgpack more than {MAX_REDIRECTS} times",
                            self.registry
                        )));
                    }
                    url = self.resolve_location(&url, &location)?;
                    continue;
                }
            }
            // A challenge from any other origin never replaces the registry's.
            if status != StatusCode::UNAUTHORIZED || challenged || !own {
                return Ok(response);
            }
            challenged = true;
            let challenge = header(&response, WWW_AUTHENTICATE);
            let again = self
                .auth
                .challenged(challenge.as_deref(), scopes, sent_credentials)
                .await
                .map_err(|err| RequestError::fatal(format!("{err:#}")))?;
            if !again {
                return Ok(response);
            }
        }
    }

    async fn authorization(&self, scopes: &[String]) -> Result<Option<HeaderValue>, RequestError> {
        self.auth
            .authorization(scopes)
            .await
            .map_err(|err| RequestError {
                message: format!("{err:#}"),
                // A token service that did not answer may answer next time; one that refused will not.
                transient: err
                    .downcast_ref::<RequestError>()
                    .is_some_and(|e| e.transient),
                retry_after: None,
            })
    }

    async fn dispatch(
        &self,
        request: RequestBuilder,
        timing: Timing<'_>,
    ) -> Result<Response, RequestError> {
        let transport = |err: reqwest::Error| transport_error(&self.registry, &err);
        match timing {
            Timing::Short => request
                .timeout(REQUEST_DEADLINE)
                .send()
                .await
                .map_err(transport),
            Timing::Head => match tokio::time::timeout(REQUEST_DEADLINE, request.send()).await {
                Ok(sent) => sent.map_err(transport),
                Err(_) => Err(RequestError::transient(format!(
                    "registry {} stopped answering (nothing within {}s)",
                    self.registry,
                    REQUEST_DEADLINE.as_secs()
                ))),
            },
            Timing::Upload(progress, what) => tokio::select! {
                sent = request.send() => sent.map_err(transport),
                stall = progress.stalled() => Err(stall.error(&self.registry, what)),
            },
        }
    }

    pub(crate) async fn status_error(&self, response: Response, what: &str) -> RequestError {
        status_error(
            &self.registry,
            response,
            what,
            &self.auth.credentials.describe(),
        )
        .await
    }

    pub(crate) async fn blob_exists(
        &self,
        repository: &str,
        digest: &Digest,
    ) -> Result<bool, RequestError> {
        let url = self.endpoint(&format!("v2/{repository}/blobs/{digest}"));
        let response = self
            .send(
                &[push_scope(repository)],
                Method::HEAD,
                url,
                Timing::Short,
                Ok,
            )
            .await?;
        match response.status() {
            StatusCode::OK => Ok(true),
            StatusCode::NOT_FOUND => Ok(false),
            _ => Err(self
                .push_refused(response, "checking whether the blob exists", repository)
                .await),
        }
    }

    /// [`Self::status_error`] for a request of a push to `repository`; a 403
    /// with credentials says which of two things it likely is, as Artifact
    /// Registry's "permission denied … (or it may not exist)" does not: if the
    /// same credentials can read the repository, they lack push access; if
    /// not, the repository most likely does not exist.
    pub(crate) async fn push_refused(
        &self,
        response: Response,
        what: &str,
        repository: &str,
    ) -> RequestError {
        let credentials = &self.auth.credentials;
        if response.status() != StatusCode::FORBIDDEN || credentials.credential.is_none() {
            return self.status_error(response, what).await;
        }
        let body = read_limited(response, ERROR_BODY_LIMIT, "an error body")
            .await
            .unwrap_or_default();
        let codes = error_codes(&body);
        let detail = match codes.is_empty() {
            true => String::new(),
            false => format!(": {codes}"),
        };
        let advice = match self.can_read(repository).await {
            Some(true) => format!(
                "they can read {repository} but not push to it: grant them push access \
                 (Artifact Registry: the role roles/artifactregistry.writer)"
            ),
            Some(false) => format!(
                "they cannot read {repository} either, so it most likely does not exist: {}",
                create_repository_hint(&self.registry, repository)
            ),
            None => format!("check them or run `imgpack login {}`", self.registry),
        };
        RequestError::fatal(format!(
            "registry {} refused {what} (403 Forbidden{detail}) with {}: {advice}",
            self.registry,
            credentials.describe()
        ))
    }

    /// Whether these credentials may read `repository`: a manifest `HEAD`
    /// answered (200, or 404 for a tag it lacks) or refused (401, 403).
    async fn can_read(&self, repository: &str) -> Option<bool> {
        let url = self.endpoint(&format!("v2/{repository}/manifests/latest"));
        let scopes = [crate::pull::pull_scope(repository)];
        let response = self
            .send(&scopes, Method::HEAD, url, Timing::Short, Ok)
            .await
            .ok()?;
        match response.status() {
            StatusCode::OK | StatusCode::NOT_FOUND => Some(true),
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => Some(false),
            _ => None,
        }
    }

    pub(crate) async fn mount_blob(
        &self,
        repository: &str,
        digest: &Digest,
        from: &str,
    ) -> Result<Mount, RequestError> {
        let mut url = self.endpoint(&format!("v2/{repository}/blobs/uploads/"));
        url.query_pairs_mut()
            .append_pair("mount", &digest.to_string())
            .append_pair("from", from);
        let scopes = [push_scope(repository), format!("repository:{from}:pull")];
        let sent = self
            .send(&scopes, Method::POST, url.clone(), Timing::Short, |r| {
                Ok(r.header(CONTENT_LENGTH, 0))
            })
            .await;
        let response = match sent {
            // ECR hangs up on a repository it does not have: the upload says so.
            Err(err) if is_dropped(&err) => return Ok(Mount::Unavailable),
            sent => sent?,
        };
        // 201 is a mount; another success with a Location is an upload session
        // the registry opened instead (202, as container-registry and registries
        // without cross-repository mounts answer); a refusal means: upload.
        match response.status() {
            StatusCode::CREATED => Ok(Mount::Mounted),
            status if status.is_success() && header(&response, LOCATION).is_some() => {
                Ok(Mount::Declined {
                    location: self.upload_location(&url, &response)?,
                })
            }
            status if is_transient(status) => Err(self
                .status_error(response, &format!("mounting it from {from}"))
                .await),
            _ => Ok(Mount::Unavailable),
        }
    }

    /// Opens an upload session: its URL and the registry's minimum chunk size, if it has one.
    async fn start_upload(&self, repository: &str) -> Result<(Url, Option<u64>), RequestError> {
        let url = self.endpoint(&format!("v2/{repository}/blobs/uploads/"));
        let scopes = [push_scope(repository)];
        let post = || {
            self.send(&scopes, Method::POST, url.clone(), Timing::Short, |r| {
                Ok(r.header(CONTENT_LENGTH, 0))
            })
        };
        // ECR hangs up on an upload to a repository it does not have: once
        // may be the network, twice in a row from a registry that answers
        // everything else is that.
        let response = match post().await {
            Err(err) if is_dropped(&err) => post().await.map_err(|err| match is_dropped(&err) {
                true => RequestError::fatal(format!(
                    "registry {} closed the connection twice when starting an upload to \
                     {repository}, as ECR does for a repository that does not exist: {}",
                    self.registry,
                    create_repository_hint(&self.registry, repository)
                )),
                false => err,
            })?,
            sent => sent?,
        };
        // The spec says 202; any success with a Location opens a session.
        if !response.status().is_success() {
            let not_found = response.status() == StatusCode::NOT_FOUND;
            let mut err = self
                .push_refused(response, "starting an upload", repository)
                .await;
            if not_found {
                err.message.push_str(&format!(
                    ": it has no repository {repository} to push to: {}",
                    create_repository_hint(&self.registry, repository)
                ));
            }
            return Err(err);
        }
        // OCI distribution 1.1: chunks must be at least this long (a bad value is ignored).
        let min_chunk = header(&response, "OCI-Chunk-Min-Length")
            .and_then(|v| v.trim().parse::<u64>().ok())
            .filter(|&min| min > 0);
        Ok((self.upload_location(&url, &response)?, min_chunk))
    }

    fn upload_location(&self, request: &Url, response: &Response) -> Result<Url, RequestError> {
        let location = header(response, LOCATION).ok_or_else(|| {
            RequestError::fatal(format!(
                "registry {} opened an upload without a Location header",
                self.registry
            ))
        })?;
        self.resolve_location(request, &location)
    }

    /// Uploads a blob from `store`, streaming it from disk: PATCH (in chunks
    /// where configured or required), then an empty PUT with the digest, as
    /// docker, skopeo and go-containerregistry do. A body on the closing PUT
    /// (a "monolithic" upload) is in the spec but not everywhere: container-registry
    /// answers it with 500. `session` is an upload already opened by a declined mount.
    /// A failed upload's session is cancelled, so the registry can drop it.
    pub(crate) async fn upload_blob(
        &self,
        repository: &str,
        store: &BlobStore,
        blob: &BlobInfo,
        session: Option<Url>,
        bar: &ProgressBar,
    ) -> Result<(), RequestError> {
        bar.set_position(0);
        let (mut location, min_chunk) = match session {
            Some(location) => (location, None),
            None => self.start_upload(repository).await?,
        };
        let chunk = chunk_length(self.chunk_size, min_chunk, blob.size);
        let mut result = self
            .send_blob(repository, store, blob, &mut location, chunk, bar)
            .await;
        if let Err(Failure::TooLarge(_)) = &result {
            if chunk > SMALL_CHUNK {
                // GHCR refuses any request over 4 MiB (416): the same blob in
                // chunks under that, in a new session.
                self.cancel_upload(repository, &location).await;
                self.reporter.line(&format!(
                    "registry {} refused a {chunk}-byte request: sending blob {} in {} MiB chunks",
                    self.registry,
                    blob.digest,
                    SMALL_CHUNK >> 20
                ));
                bar.set_position(0);
                location = self.start_upload(repository).await?.0;
                result = self
                    .send_blob(repository, store, blob, &mut location, SMALL_CHUNK, bar)
                    .await;
            }
        }
        if result.is_err() {
            self.cancel_upload(repository, &location).await;
        }
        result.map_err(|failure| failure.into_error(chunk.min(SMALL_CHUNK)))
    }

    async fn send_blob(
        &self,
        repository: &str,
        store: &BlobStore,
        blob: &BlobInfo,
        location: &mut Url,
        chunk: u64,
        bar: &ProgressBar,
    ) -> Result<(), Failure> {
        let scopes = [push_scope(repository)];
        let path = store.path(&blob.digest);
        let what = "uploading the blob";
        // Hashed as it goes up, checked before the closing PUT: the file is read once.
        let mut hashed = Hasher::new(std::io::sink());
        let mut offset = 0;
        while offset < blob.size {
            let len = chunk.min(blob.size - offset);
            let progress = Arc::new(Progress::new(len));
            let timing = Timing::Upload(&progress, what);
            // Each attempt (a challenge sends the chunk again) hashes from where the last chunk ended.
            let attempt = std::sync::Mutex::new(None);
            let response = self
                .send(&scopes, Method::PATCH, location.clone(), timing, |r| {
                    let hasher = Arc::new(std::sync::Mutex::new(hashed.clone()));
                    *attempt.lock().expect("not poisoned") = Some(hasher.clone());
                    let body = file_body(&path, offset, len, bar, &progress, Some(hasher))?;
                    Ok(r.header(CONTENT_TYPE, "application/octet-stream")
                        .header(CONTENT_LENGTH, len)
                        .header(CONTENT_RANGE, format!("{offset}-{}", offset + len - 1))
                        .body(body))
                })
                .await
                .map_err(Failure::Other)?;
            // 202 in the spec; some registries answer 204 or 201.
            let status = response.status();
            if !status.is_success() {
                let error = self.status_error(response, what).await;
                // 416 to a range that starts where the upload stands (0 for the
                // first chunk) can only be about the request's size; 413 says so.
                let too_large = status == StatusCode::PAYLOAD_TOO_LARGE
                    || (status == StatusCode::RANGE_NOT_SATISFIABLE && offset == 0);
                return Err(match too_large {
                    true => Failure::TooLarge(error),
                    false => Failure::Other(error),
                });
            }
            if header(&response, LOCATION).is_some() {
                *location = self
                    .upload_location(location, &response)
                    .map_err(Failure::Other)?;
            }
            let sent = attempt.lock().expect("not poisoned").take();
            hashed = sent.map_or(hashed, |h| h.lock().expect("not poisoned").clone());
            offset += len;
        }
        let (digest, size) = hashed.digest_so_far();
        if digest != blob.digest || size != blob.size {
            return Err(Failure::Other(corrupt_blob(store, &digest, size)));
        }
        let mut url = location.clone();
        url.query_pairs_mut()
            .append_pair("digest", &blob.digest.to_string());
        let progress = Arc::new(Progress::new(0));
        let response = self
            .send(
                &scopes,
                Method::PUT,
                url,
                Timing::Upload(&progress, what),
                |r| {
                    Ok(r.header(CONTENT_TYPE, "application/octet-stream")
                        .header(CONTENT_LENGTH, 0))
                },
            )
            .await
            .map_err(Failure::Other)?;
        if !response.status().is_success() {
            let status = response.status();
            let mut error = self.status_error(response, "finishing the upload").await;
            if status == StatusCode::BAD_REQUEST && chunk < blob.size {
                // ECR takes parts of at least 5 MiB (but the last), and says nothing until now.
                error.message.push_str(&format!(
                    ": it may need larger chunks than {} MiB (ECR: at least 5 MiB): pass \
                     --chunk-size 5 or more, or 0 for one request",
                    chunk.div_ceil(1 << 20)
                ));
            }
            return Err(Failure::Other(error));
        }
        check_digest(&self.registry, &response, &blob.digest).map_err(Failure::Other)
    }

    /// Uploads a blob that is still being written: one PATCH whose body
    /// follows the staged file as it grows (no length, so chunked), then the
    /// PUT with the digest the blob turned out to have. Returns that blob. A
    /// failed upload's session is cancelled; the blob can be uploaded again
    /// from the store once it is complete.
    pub(crate) async fn stream_upload(
        &self,
        repository: &str,
        blob: GrowingBlob,
        bar: &ProgressBar,
    ) -> Result<BlobInfo, RequestError> {
        let (mut location, _) = self.start_upload(repository).await?;
        let result = self
            .stream_patch_and_put(repository, blob, &mut location, bar)
            .await;
        if result.is_err() {
            self.cancel_upload(repository, &location).await;
        }
        result
    }

    async fn stream_patch_and_put(
        &self,
        repository: &str,
        blob: GrowingBlob,
        location: &mut Url,
        bar: &ProgressBar,
    ) -> Result<BlobInfo, RequestError> {
        let scopes = [push_scope(repository)];
        let what = "uploading the blob while it is written";
        // The length is known only at the end: the stall watch counts bytes until then.
        let progress = Arc::new(Progress::new(u64::MAX));
        let (body, committed) = growing_body(blob, bar, &progress);
        // The body can be sent once: a second attempt (after a challenge) has none.
        let body = std::sync::Mutex::new(Some(body));
        let response = self
            .send(
                &scopes,
                Method::PATCH,
                location.clone(),
                Timing::Upload(&progress, what),
                |r| {
                    let body = body.lock().expect("not poisoned").take().ok_or_else(|| {
                        RequestError::transient(format!(
                            "registry {} asked for credentials again mid-upload",
                            self.registry
                        ))
                    })?;
                    Ok(r.header(CONTENT_TYPE, "application/octet-stream")
                        .body(body))
                },
            )
            .await?;
        // 202 in the spec; ECR answers 201, others 204.
        if !response.status().is_success() {
            return Err(self.status_error(response, what).await);
        }
        if header(&response, LOCATION).is_some() {
            *location = self.upload_location(location, &response)?;
        }
        let blob = committed.await.ok().flatten().ok_or_else(|| {
            RequestError::fatal("the blob was not finished when its upload ended")
        })?;
        let mut url = location.clone();
        url.query_pairs_mut()
            .append_pair("digest", &blob.digest.to_string());
        let response = self
            .send(&scopes, Method::PUT, url, Timing::Short, |r| {
                Ok(r.header(CONTENT_TYPE, "application/octet-stream")
                    .header(CONTENT_LENGTH, 0))
            })
            .await?;
        if !response.status().is_success() {
            return Err(self.status_error(response, "finishing the upload").await);
        }
        check_digest(&self.registry, &response, &blob.digest)?;
        Ok(blob)
    }

    /// Best effort: tells the registry an upload session is abandoned.
    async fn cancel_upload(&self, repository: &str, location: &Url) {
        let scopes = [push_scope(repository)];
        let cancel = self.send(&scopes, Method::DELETE, location.clone(), Timing::Short, Ok);
        let _ = tokio::time::timeout(std::time::Duration::from_secs(5), cancel).await;
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
        let response = self
            .send_manifest(repository, reference, bytes, media_type)
            .await?;
        self.manifest_stored(response, reference, bytes, media_type)
            .await
    }

    /// [`Self::put_manifest`], returning the `OCI-Subject` header of the answer:
    /// a registry with the referrers API names the subject of an artifact manifest there.
    pub(crate) async fn put_manifest_with_subject(
        &self,
        repository: &str,
        reference: &str,
        bytes: &[u8],
        media_type: &str,
    ) -> Result<Option<String>, RequestError> {
        let response = self
            .send_manifest(repository, reference, bytes, media_type)
            .await?;
        let subject = header(&response, "OCI-Subject");
        self.manifest_stored(response, reference, bytes, media_type)
            .await?;
        Ok(subject)
    }

    /// Puts manifest `bytes` under its digest. A 400 or 405 says the registry
    /// keeps manifests under tags only (container-registry 0.3.1 answers 400):
    /// the caller decides whether tagging directly is still safe.
    pub(crate) async fn put_manifest_by_digest(
        &self,
        repository: &str,
        bytes: &[u8],
        media_type: &str,
    ) -> Result<DigestPut, RequestError> {
        let reference = Digest::of_bytes(bytes).to_string();
        let response = self
            .send_manifest(repository, &reference, bytes, media_type)
            .await?;
        let status = response.status();
        if status == StatusCode::BAD_REQUEST || status == StatusCode::METHOD_NOT_ALLOWED {
            let what = format!("putting manifest {reference} ({media_type})");
            let error = racing_link_is_transient(self.status_error(response, &what).await);
            if error.transient {
                return Err(error);
            }
            return Ok(DigestPut::TagsOnly(error));
        }
        self.manifest_stored(response, &reference, bytes, media_type)
            .await
            .map(|()| DigestPut::Stored)
    }

    async fn send_manifest(
        &self,
        repository: &str,
        reference: &str,
        bytes: &[u8],
        media_type: &str,
    ) -> Result<Response, RequestError> {
        let url = self.endpoint(&format!("v2/{repository}/manifests/{reference}"));
        let body = bytes.to_vec();
        self.send(
            &[push_scope(repository)],
            Method::PUT,
            url,
            Timing::Short,
            |r| Ok(r.header(CONTENT_TYPE, media_type).body(body.clone())),
        )
        .await
    }

    async fn manifest_stored(
        &self,
        response: Response,
        reference: &str,
        bytes: &[u8],
        media_type: &str,
    ) -> Result<(), RequestError> {
        // 201 in the spec; 200 and 202 come from registries in use (go-containerregistry takes all three).
        if !response.status().is_success() {
            let what = format!("putting manifest {reference} ({media_type})");
            return Err(racing_link_is_transient(
                self.status_error(response, &what).await,
            ));
        }
        check_digest(&self.registry, &response, &Digest::of_bytes(bytes))
    }

    /// Checks that the credentials are accepted for `GET /v2/` (what `docker login` does).
    pub async fn check_login(&self) -> Result<(), RequestError> {
        let url = self.endpoint("v2/");
        let response = self.send(&[], Method::GET, url, Timing::Short, Ok).await?;
        if response.status().is_success() {
            return Ok(());
        }
        Err(self.status_error(response, crate::errors::LOGGING_IN).await)
    }
}

/// A manifest put answered DIGEST_INVALID, although its digest is computed
/// from the very bytes sent: distribution 2.x answers that when it reads a
/// layer's link file while another push of the same layer rewrites it (its
/// file system driver writes links in place), so two pushes of one image at
/// once fail now and then. Tried again, the link is whole.
fn racing_link_is_transient(mut error: RequestError) -> RequestError {
    if error.message.contains("DIGEST_INVALID") {
        error.transient = true;
    }
    error
}

/// A request the registry's end of the connection closed without an answer.
fn is_dropped(err: &RequestError) -> bool {
    let lower = err.message.to_ascii_lowercase();
    lower.contains("connection closed before message completed")
        || lower.contains("connection reset")
}

/// What to do about a repository the registry does not have: the command
/// that creates it on registries that never create one on push (ECR,
/// Artifact Registry), else check the name.
pub(crate) fn create_repository_hint(registry: &str, repository: &str) -> String {
    let host = registry.split(':').next().unwrap_or(registry);
    if host.contains(".dkr.ecr.") {
        return format!(
            "create it with `aws ecr create-repository --repository-name {repository}`, or check the name"
        );
    }
    if let Some(location) = host.strip_suffix("-docker.pkg.dev") {
        let mut parts = repository.splitn(3, '/');
        let (project, repo) = (
            parts.next().unwrap_or("PROJECT"),
            parts.next().unwrap_or("REPOSITORY"),
        );
        return format!(
            "create it with `gcloud artifacts repositories create {repo} --repository-format=docker \
             --location={location} --project={project}`, or check the name"
        );
    }
    format!(
        "create it first where the registry wants that (ECR: `aws ecr create-repository \
         --repository-name {repository}`; a GitLab or Harbor project; Artifact Registry: `gcloud \
         artifacts repositories create`), or check the name (some registries want names of a \
         fixed depth such as namespace/name)"
    )
}

/// Chunks that every registry takes: GHCR refuses requests over 4 MiB.
const SMALL_CHUNK: u64 = 4 << 20;

/// Why a blob upload failed: the registry refused a request for its size, or anything else.
enum Failure {
    TooLarge(RequestError),
    Other(RequestError),
}

impl Failure {
    /// The error, with what to do when even `chunk`-byte requests were too large.
    fn into_error(self, chunk: u64) -> RequestError {
        match self {
            Failure::TooLarge(mut error) => {
                error.message.push_str(&format!(
                    ": it refuses requests of {} MiB: pass a smaller --chunk-size",
                    chunk.div_ceil(1 << 20)
                ));
                error
            }
            Failure::Other(error) => error,
        }
    }
}

/// Bytes per PATCH: the configured chunk size (0: the whole blob), never below
/// the registry's minimum, never 0, never beyond the blob.
fn chunk_length(configured: u64, registry_min: Option<u64>, blob_size: u64) -> u64 {
    let wanted = match configured {
        0 => blob_size,
        size => size.max(registry_min.unwrap_or(0)),
    };
    wanted.clamp(1, blob_size.max(1))
}

/// A header's value as text, if it has one.
pub(crate) fn header(
    response: &Response,
    name: impl reqwest::header::AsHeaderName,
) -> Option<String> {
    response
        .headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

fn check_digest(
    registry: &str,
    response: &Response,
    expected: &Digest,
) -> Result<(), RequestError> {
    let Some(returned) = header(response, "Docker-Content-Digest") else {
        return Ok(());
    };
    if returned != expected.to_string() {
        return Err(RequestError::fatal(format!(
            "registry {registry} stored {} but imgpack sent {expected}: the content was changed on the way",
            printable(&returned)
        )));
    }
    Ok(())
}

/// Hashes what a blob upload sent.
type Hasher = imgpack_blob::DigestWriter<std::io::Sink>;

/// `len` bytes of the file at `offset`, streamed, counting into `bar` and
/// `progress` and, if given, hashed into `hasher`.
fn file_body(
    path: &std::path::Path,
    offset: u64,
    len: u64,
    bar: &ProgressBar,
    progress: &Arc<Progress>,
    hasher: Option<Arc<std::sync::Mutex<Hasher>>>,
) -> Result<Body, RequestError> {
    let cannot_read = |err: std::io::Error| {
        RequestError::fatal(format!("cannot read blob {}: {err}", path.display()))
    };
    let mut file = std::fs::File::open(path).map_err(cannot_read)?;
    file.seek(SeekFrom::Start(offset)).map_err(cannot_read)?;
    let reader = tokio::fs::File::from_std(file).take(len);
    let (bar, progress) = (bar.clone(), progress.clone());
    let stream = ReaderStream::with_capacity(reader, 256 * 1024).inspect_ok(move |chunk| {
        if let Some(hasher) = &hasher {
            let _ = hasher.lock().expect("not poisoned").write_all(chunk);
        }
        bar.inc(chunk.len() as u64);
        progress.add(chunk.len() as u64);
    });
    Ok(Body::wrap_stream(stream))
}

/// The body of a blob still being written: a thread reads the staged file
/// as it grows and hands the pieces over; the receiver gets the finished
/// blob once every byte went out (nothing, if the writer gave up).
fn growing_body(
    blob: GrowingBlob,
    bar: &ProgressBar,
    progress: &Arc<Progress>,
) -> (Body, tokio::sync::oneshot::Receiver<Option<BlobInfo>>) {
    const PIECE: usize = 256 * 1024;
    let (pieces, receiver) = tokio::sync::mpsc::channel::<std::io::Result<Vec<u8>>>(4);
    let (done, committed) = tokio::sync::oneshot::channel();
    tokio::task::spawn_blocking(move || {
        let mut reader = blob.into_reader();
        loop {
            let mut piece = vec![0; PIECE];
            let read = match reader.read(&mut piece) {
                Ok(0) => break,
                Ok(read) => read,
                Err(err) => {
                    let _ = pieces.blocking_send(Err(err));
                    return;
                }
            };
            piece.truncate(read);
            if pieces.blocking_send(Ok(piece)).is_err() {
                // The upload ended (failed): nobody reads further.
                return;
            }
        }
        // Before the body ends, so the PUT that follows the PATCH knows the digest.
        let _ = done.send(reader.committed());
    });
    let (bar, progress) = (bar.clone(), progress.clone());
    let stream = futures_util::stream::unfold(receiver, |mut receiver| async move {
        receiver.recv().await.map(|piece| (piece, receiver))
    })
    .inspect_ok(move |piece| {
        bar.inc(piece.len() as u64);
        progress.add(piece.len() as u64);
    });
    (Body::wrap_stream(stream), committed)
}

/// Checks a local blob against its digest before it is uploaded in one PUT:
/// a blob changed on disk is named here, not discovered by the registry
/// later. Larger blobs are checked as they go up, before their closing PUT.
pub(crate) fn verify_local_blob(store: &BlobStore, blob: &BlobInfo) -> Result<(), RequestError> {
    let path = store.path(&blob.digest);
    let cannot_read = |err: std::io::Error| {
        RequestError::fatal(format!("cannot read blob {}: {err}", path.display()))
    };
    let file = std::fs::File::open(&path).map_err(cannot_read)?;
    let mut writer = imgpack_blob::DigestWriter::new(std::io::sink());
    std::io::copy(&mut file.take(blob.size + 1), &mut writer).map_err(cannot_read)?;
    let (_, digest, size) = writer.finish();
    if digest != blob.digest || size != blob.size {
        return Err(corrupt_blob(store, &digest, size));
    }
    Ok(())
}

fn corrupt_blob(store: &BlobStore, digest: &Digest, size: u64) -> RequestError {
    RequestError::fatal(format!(
        "its local copy in {} is corrupt ({size} bytes hashing to sha256:{}…): write the image \
         again or restore the file",
        store.root().display(),
        &digest.hex()[..12]
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_respect_the_registry_minimum_without_tiny_patches() {
        // Without --chunk-size: one PATCH, whatever minimum the registry names.
        assert_eq!(chunk_length(0, None, 10 << 20), 10 << 20);
        assert_eq!(chunk_length(0, Some(1), 10 << 20), 10 << 20);
        // A minimum raises a smaller configured chunk, and is capped by the blob.
        assert_eq!(chunk_length(1 << 20, Some(5 << 20), 10 << 20), 5 << 20);
        assert_eq!(chunk_length(1 << 20, Some(u64::MAX), 10 << 20), 10 << 20);
        assert_eq!(chunk_length(8 << 20, Some(1), 10 << 20), 8 << 20);
        assert_eq!(chunk_length(0, None, 0), 1);
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
    fn a_changed_local_blob_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(dir.path()).unwrap();
        let blob = store.write_bytes(b"layer bytes").unwrap();
        verify_local_blob(&store, &blob).unwrap();
        std::fs::write(store.path(&blob.digest), b"LAYER BYTES").unwrap();
        let err = verify_local_blob(&store, &blob).unwrap_err();
        assert!(err.message.contains("is corrupt"), "{}", err.message);
    }
}
