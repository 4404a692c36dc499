//! A hostile fake registry for the end-to-end tests, beside the real one: a small in-memory
//! distribution API (ping, blobs, uploads, manifests, basic auth, optional TLS) that misbehaves
//! on request: it sends upload `Location`s to another origin or over plain HTTP, names a
//! plain-HTTP token realm, serves endless or ambiguous manifests, dribbles or never answers,
//! stops reading uploads, and sends odd `OCI-Chunk-Min-Length` headers. Its [`Quirks`] play
//! the ways real registries differ from the reference one (challenges only on the ping, no
//! `Docker-Content-Digest`, no mounts, tags only, no indexes, 200/202/204 for 201/202, no
//! monolithic PUT, unannounced chunk minimums) and the hosted ones (ECR's and Artifact
//! Registry's missing repositories, GHCR's 4 MiB request limit, Docker Hub's `OCI-Subject`
//! without a referrers API, GitLab's digest-like tags). Every request is
//! recorded with the Authorization it carried. A [`Recorder`] is the "other origin": it records
//! what reaches it and answers 401 Basic, as a server fishing for credentials would.

use std::collections::HashMap;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use imgpack_blob::Digest;

use crate::http::{read_head, Head};
use crate::token_server::basic_credentials;

/// How the fake registry misbehaves. `Default` is a working registry without auth.
#[derive(Clone, Debug, Default)]
pub struct Hostility {
    /// Speak HTTPS with a certificate of a fresh test CA ([`FakeRegistry::ca_pem`]).
    pub tls: bool,
    /// Require these basic credentials.
    pub basic_auth: Option<(String, String)>,
    /// Challenge with `Bearer realm="…"` instead of serving (nothing is served after it).
    pub bearer_realm: Option<String>,
    /// Open uploads with this `Location` (absolute) instead of one of its own.
    pub upload_location: Option<String>,
    /// Send this `OCI-Chunk-Min-Length` when opening an upload.
    pub chunk_min_length: Option<String>,
    /// Accept connections and never answer.
    pub silent: bool,
    /// Send every answer's head but the ping's one byte at a time, this far apart.
    pub dribble: Option<Duration>,
    /// Read an upload's head, then never read its body nor answer.
    pub stall_uploads: bool,
    /// Serve manifests as an endless chunked stream.
    pub endless_manifests: bool,
    /// Implement the OCI 1.1 referrers API: answer a manifest PUT that has a
    /// `subject` with `OCI-Subject`, and serve `GET /v2/<name>/referrers/<digest>`.
    pub referrers_api: bool,
    /// Quirks of real registries, each spec-legal or seen in use (docs/registries.md names
    /// who has which).
    pub quirks: Quirks,
}

/// How real registries differ from the reference implementation, one switch each.
#[derive(Clone, Debug, Default)]
pub struct Quirks {
    /// With `basic_auth`: only the `GET /v2/` ping's 401 carries a `WWW-Authenticate`
    /// challenge; every other 401 is bare.
    pub challenge_only_on_ping: bool,
    /// With `basic_auth`: no 401 carries a challenge, the ping's neither.
    pub no_challenge: bool,
    /// No answer carries `Docker-Content-Digest`.
    pub no_content_digest: bool,
    /// A cross-repository mount (`POST …?mount=`) is answered with this status, no upload
    /// session opened (without it, a mount opens a session with 202, as a registry that
    /// does not mount does).
    pub refuse_mounts: Option<u16>,
    /// A manifest PUT by digest is refused with 400: manifests are stored under tags only.
    pub tags_only: bool,
    /// A manifest PUT of an image index is refused with 400.
    pub no_indexes: bool,
    /// Manifest PUTs answer this status instead of 201 (200 and 202 are in use).
    pub manifest_put_status: Option<u16>,
    /// PATCHes answer this status instead of 202 (204 is in use).
    pub patch_status: Option<u16>,
    /// A blob upload's closing PUT with a body is refused with 500.
    pub no_monolithic_put: bool,
    /// Every PATCH but an upload's last must be at least this long, and no header says so:
    /// the closing PUT of an upload with a shorter one is refused with 400.
    pub unannounced_chunk_min: Option<usize>,
    /// The first manifest PUT by digest is answered 400 DIGEST_INVALID, as
    /// distribution 2.x answers when it reads a layer link another push is rewriting.
    pub racing_link_once: bool,
    /// This repository does not exist, and the registry does not create it on push.
    pub missing_repository: Option<(String, Missing)>,
    /// This repository can be read but not pushed to: writes get Artifact Registry's 403.
    pub read_only_repository: Option<String>,
    /// A request body (PATCH or PUT) longer than this is refused with GHCR's 416
    /// `REQUESTED_RANGE_NOT_SATISFIABLE` "exceeds the maximum permissible limit".
    pub max_request_body: Option<usize>,
    /// A manifest PUT with a `subject` is answered with `OCI-Subject`, but there is no
    /// referrers API (`GET …/referrers/…` answers 404), as Docker Hub does.
    pub subject_header_without_api: bool,
    /// `GET …/manifests/sha256-<hex>` of a tag that does not exist serves the manifest
    /// `sha256:<hex>` itself, as GitLab's registry does.
    pub digest_tags_resolve: bool,
}

/// How a registry answers for a repository it does not have.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Missing {
    /// ECR: starting an upload drops the connection without an answer.
    DropConnection,
    /// ECR: 404 `NAME_UNKNOWN` "The repository with name … does not exist".
    NameUnknown,
    /// Artifact Registry: 403 `DENIED` "Permission … denied on resource … (or it may not exist)",
    /// for reads and writes alike.
    PermissionDenied,
}

/// One request as the fake registry saw it.
#[derive(Clone, Debug)]
pub struct Seen {
    pub method: String,
    pub target: String,
    pub authorization: Option<String>,
    /// Arrived in plain HTTP at a TLS registry.
    pub plain_on_tls: bool,
    /// Headers of the request, for tests that check one (Content-Range…).
    pub headers: Vec<(String, String)>,
}

#[derive(Default)]
struct Store {
    blobs: HashMap<String, Vec<u8>>,
    uploads: HashMap<u64, Vec<u8>>,
    /// Each upload's PATCH lengths, in order.
    chunks: HashMap<u64, Vec<usize>>,
    next_upload: u64,
    /// (repository, tag or digest) → (media type, bytes).
    manifests: HashMap<(String, String), (String, Vec<u8>)>,
    /// (repository, subject digest) → descriptors of its referrers (referrers API only).
    referrers: HashMap<(String, String), Vec<serde_json::Value>>,
    /// `racing_link_once` has answered.
    raced: bool,
}

struct Shared {
    hostility: Mutex<Hostility>,
    store: Mutex<Store>,
    seen: Mutex<Vec<Seen>>,
    tls: Option<Arc<rustls::ServerConfig>>,
    port: u16,
    stop: AtomicBool,
}

/// A running fake registry on a free port of 127.0.0.1; stops accepting when dropped.
pub struct FakeRegistry {
    shared: Arc<Shared>,
    ca_pem: Option<String>,
}

impl FakeRegistry {
    pub fn start(hostility: Hostility) -> FakeRegistry {
        let listener = TcpListener::bind("127.0.0.1:0").expect("cannot bind the fake registry");
        let port = listener.local_addr().unwrap().port();
        let (tls, ca_pem) = if hostility.tls {
            let (ca, config) = tls_config();
            (Some(config), Some(ca))
        } else {
            (None, None)
        };
        let shared = Arc::new(Shared {
            hostility: Mutex::new(hostility),
            store: Mutex::new(Store::default()),
            seen: Mutex::new(Vec::new()),
            tls,
            port,
            stop: AtomicBool::new(false),
        });
        let accepting = shared.clone();
        std::thread::spawn(move || {
            for connection in listener.incoming() {
                if accepting.stop.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(connection) = connection else { continue };
                let shared = accepting.clone();
                std::thread::spawn(move || {
                    let _ = serve(connection, &shared);
                });
            }
        });
        FakeRegistry { shared, ca_pem }
    }

    /// `127.0.0.1:PORT`.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.shared.port)
    }

    /// The PEM of the CA that signed a TLS fake registry's certificate.
    pub fn ca_pem(&self) -> Option<&str> {
        self.ca_pem.as_deref()
    }

    /// Changes how it misbehaves from now on.
    pub fn set(&self, change: impl FnOnce(&mut Hostility)) {
        change(&mut self.shared.hostility.lock().unwrap());
    }

    /// Serves `bytes` as manifest `reference` (a tag or digest) of `repository`.
    pub fn put_manifest(&self, repository: &str, reference: &str, media_type: &str, bytes: &[u8]) {
        self.shared.store.lock().unwrap().manifests.insert(
            (repository.to_owned(), reference.to_owned()),
            (media_type.to_owned(), bytes.to_vec()),
        );
    }

    /// Serves `bytes` as a blob; returns its digest.
    pub fn put_blob(&self, bytes: &[u8]) -> String {
        let digest = Digest::of_bytes(bytes).to_string();
        let mut store = self.shared.store.lock().unwrap();
        store.blobs.insert(digest.clone(), bytes.to_vec());
        digest
    }

    /// The manifest stored under `repository:reference`, if any.
    pub fn manifest(&self, repository: &str, reference: &str) -> Option<Vec<u8>> {
        let store = self.shared.store.lock().unwrap();
        store
            .manifests
            .get(&(repository.to_owned(), reference.to_owned()))
            .map(|(_, bytes)| bytes.clone())
    }

    /// Drops every stored blob, so that the next push finds none (and tries its mounts).
    pub fn forget_blobs(&self) {
        self.shared.store.lock().unwrap().blobs.clear();
    }

    pub fn blob_count(&self) -> usize {
        self.shared.store.lock().unwrap().blobs.len()
    }

    /// Every request received, in order.
    pub fn seen(&self) -> Vec<Seen> {
        self.shared.seen.lock().unwrap().clone()
    }

    /// How many requests had `method` and a target containing `target`.
    pub fn count(&self, method: &str, target: &str) -> usize {
        self.seen()
            .iter()
            .filter(|s| s.method == method && s.target.contains(target))
            .count()
    }
}

impl Drop for FakeRegistry {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.shared.port));
    }
}

/// Any byte stream a request can arrive on: TCP, or TLS over TCP.
trait Stream: Read + Write + Send {}
impl<T: Read + Write + Send> Stream for T {}

fn serve(tcp: TcpStream, shared: &Shared) -> io::Result<()> {
    tcp.set_read_timeout(Some(Duration::from_secs(60)))?;
    tcp.set_write_timeout(Some(Duration::from_secs(60)))?;
    let mut hostility = shared.hostility.lock().unwrap().clone();
    if hostility.silent {
        // Hold the connection open, read nothing, say nothing.
        std::thread::sleep(Duration::from_secs(120));
        return Ok(());
    }
    let mut first = [0u8; 1];
    let peeked = tcp.peek(&mut first)?;
    let plain_on_tls = shared.tls.is_some() && peeked == 1 && first[0] != 0x16;
    if shared.tls.is_none() && peeked == 1 && !first[0].is_ascii_alphabetic() {
        // A TLS ClientHello at a plain-HTTP port: answer like Go's server does.
        let mut tcp = tcp;
        return tcp.write_all(
            b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        );
    }
    let stream: Box<dyn Stream> = match (&shared.tls, plain_on_tls) {
        (Some(config), false) => {
            let connection =
                rustls::ServerConnection::new(config.clone()).map_err(io::Error::other)?;
            Box::new(rustls::StreamOwned::new(connection, tcp))
        }
        _ => Box::new(tcp),
    };
    let mut reader = BufReader::new(stream);
    let Some(head) = read_head(&mut reader)? else {
        return Ok(());
    };
    let mut start = head.start.split(' ');
    let method = start.next().unwrap_or_default().to_owned();
    let target = start.next().unwrap_or_default().to_owned();
    shared.seen.lock().unwrap().push(Seen {
        method: method.clone(),
        target: target.clone(),
        authorization: head.header("authorization").map(str::to_owned),
        plain_on_tls,
        headers: head.headers.clone(),
    });
    // The ping answers at once: the dribbling starts once a client is past first contact.
    if target == "/v2/" {
        hostility.dribble = None;
    }
    if plain_on_tls {
        return respond(
            &mut reader,
            &hostility,
            400,
            &[],
            b"plain HTTP to a TLS port",
        );
    }
    let is_upload_body =
        matches!(method.as_str(), "PATCH" | "PUT") && target.contains("/blobs/uploads/");
    if hostility.stall_uploads && is_upload_body {
        std::thread::sleep(Duration::from_secs(120));
        return Ok(());
    }
    let body = read_body(&mut reader, &head)?;
    if let Some(realm) = &hostility.bearer_realm {
        let challenge = format!("Bearer realm=\"{realm}\",service=\"fake\"");
        return respond(
            &mut reader,
            &hostility,
            401,
            &[("WWW-Authenticate", &challenge)],
            b"{}",
        );
    }
    if let Some((user, password)) = &hostility.basic_auth {
        let given = head.header("authorization").and_then(basic_credentials);
        if given.as_ref() != Some(&(user.clone(), password.clone())) {
            let quirks = &hostility.quirks;
            let challenges =
                !quirks.no_challenge && (target == "/v2/" || !quirks.challenge_only_on_ping);
            let challenge = [("WWW-Authenticate", "Basic realm=\"fake-registry\"")];
            let headers: &[(&str, &str)] = if challenges { &challenge } else { &[] };
            return respond(&mut reader, &hostility, 401, headers, b"{}");
        }
    }
    if hostility.endless_manifests && method == "GET" && target.contains("/manifests/") {
        return endless(&mut reader);
    }
    let answer = match refusal(&hostility.quirks, &method, &target, body.len()) {
        Some(Refusal::Drop) => return Ok(()),
        Some(Refusal::Answer(answer)) => answer,
        None => route(shared, &hostility, &method, &target, body),
    };
    let headers: Vec<(&str, &str)> = answer
        .headers
        .iter()
        .filter(|(k, _)| !(hostility.quirks.no_content_digest && k == "Docker-Content-Digest"))
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let body = if method == "HEAD" {
        Vec::new()
    } else {
        answer.body
    };
    respond_sized(
        &mut reader,
        &hostility,
        answer.status,
        &headers,
        &body,
        answer.length,
    )
}

struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    /// Content-Length when it differs from the body (HEAD).
    length: Option<usize>,
}

fn answer(status: u16) -> Answer {
    Answer {
        status,
        headers: Vec::new(),
        body: Vec::new(),
        length: None,
    }
}

/// What a quirk says instead of the distribution API.
enum Refusal {
    /// Close the connection without a word.
    Drop,
    Answer(Answer),
}

/// An error answer with a distribution-spec error body.
fn error_answer(status: u16, code: &str, message: &str) -> Answer {
    let mut a = answer(status);
    a.headers
        .push(("Content-Type".into(), "application/json".into()));
    a.body = serde_json::to_vec(&serde_json::json!({
        "errors": [{"code": code, "message": message}]
    }))
    .unwrap();
    a
}

/// The repository a `/v2/<name>/…` target names.
fn repository_of(target: &str) -> Option<&str> {
    let path = target.split('?').next()?.strip_prefix("/v2/")?;
    ["/blobs/", "/manifests/", "/referrers/", "/tags/"]
        .iter()
        .find_map(|marker| path.split_once(marker).map(|(name, _)| name))
}

/// The answer of a registry that does not have the repository, cannot take
/// the body, or lets it be read only, if one of those quirks applies.
fn refusal(quirks: &Quirks, method: &str, target: &str, body_len: usize) -> Option<Refusal> {
    let repository = repository_of(target)?;
    let write = matches!(method, "POST" | "PATCH" | "PUT" | "DELETE");
    let gar_denied = |permission: &str| {
        let message = format!(
            "Permission \"artifactregistry.repositories.{permission}\" denied on resource \
             \"projects/fake/locations/local/repositories/{repository}\" (or it may not exist)"
        );
        Some(Refusal::Answer(error_answer(403, "DENIED", &message)))
    };
    if let Some((missing, how)) = &quirks.missing_repository {
        if missing == repository {
            return match how {
                Missing::DropConnection if method == "POST" => Some(Refusal::Drop),
                Missing::DropConnection => None,
                Missing::NameUnknown => {
                    let message = format!(
                        "The repository with name '{repository}' does not exist in the registry \
                         with id '123456789012'"
                    );
                    Some(Refusal::Answer(error_answer(404, "NAME_UNKNOWN", &message)))
                }
                Missing::PermissionDenied if write => gar_denied("uploadArtifacts"),
                Missing::PermissionDenied => gar_denied("downloadArtifacts"),
            };
        }
    }
    if quirks.read_only_repository.as_deref() == Some(repository) && write {
        return gar_denied("uploadArtifacts");
    }
    if quirks.max_request_body.is_some_and(|max| body_len > max) {
        return Some(Refusal::Answer(error_answer(
            416,
            "REQUESTED_RANGE_NOT_SATISFIABLE",
            "the request body is too large and exceeds the maximum permissible limit of 4.00MiB",
        )));
    }
    None
}

/// The distribution API, just enough for imgpack and skopeo.
fn route(
    shared: &Shared,
    hostility: &Hostility,
    method: &str,
    target: &str,
    body: Vec<u8>,
) -> Answer {
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let param = |key: &str| {
        query
            .split('&')
            .filter_map(|pair| pair.split_once('='))
            .find(|(k, _)| *k == key)
            .map(|(_, v)| v.replace("%3A", ":").replace("%3a", ":"))
    };
    let quirks = &hostility.quirks;
    let mut store = shared.store.lock().unwrap();
    if path == "/v2/" {
        return answer(200);
    }
    let Some(rest) = path.strip_prefix("/v2/") else {
        return answer(404);
    };
    if let Some((_, upload)) = rest.split_once("/blobs/uploads/") {
        if method == "POST" {
            if let (Some(status), Some(_)) = (quirks.refuse_mounts, param("mount")) {
                return answer(status);
            }
            store.next_upload += 1;
            let id = store.next_upload;
            store.uploads.insert(id, Vec::new());
            let location = hostility.upload_location.clone().unwrap_or_else(|| {
                format!(
                    "/v2/{}/blobs/uploads/{id}",
                    rest.split("/blobs/").next().unwrap()
                )
            });
            let mut a = answer(202);
            a.headers.push(("Location".into(), location));
            if let Some(min) = &hostility.chunk_min_length {
                a.headers.push(("OCI-Chunk-Min-Length".into(), min.clone()));
            }
            return a;
        }
        let Ok(id) = upload.parse::<u64>() else {
            return answer(404);
        };
        let Some(data) = store.uploads.get_mut(&id) else {
            return answer(404);
        };
        let monolithic = method == "PUT" && !body.is_empty();
        data.extend_from_slice(&body);
        match method {
            "PATCH" => {
                let range = format!("0-{}", data.len().saturating_sub(1));
                store.chunks.entry(id).or_default().push(body.len());
                let mut a = answer(quirks.patch_status.unwrap_or(202));
                a.headers.push(("Location".into(), path.to_owned()));
                a.headers.push(("Range".into(), range));
                a
            }
            "PUT" => {
                let data = store.uploads.remove(&id).unwrap();
                let chunks = store.chunks.remove(&id).unwrap_or_default();
                if monolithic && quirks.no_monolithic_put {
                    return answer(500);
                }
                if let Some(min) = quirks.unannounced_chunk_min {
                    let but_last = &chunks[..chunks.len().saturating_sub(1)];
                    if but_last.iter().any(|&len| len < min) {
                        return answer(400);
                    }
                }
                let digest = Digest::of_bytes(&data).to_string();
                if param("digest").as_deref() != Some(digest.as_str()) {
                    return answer(400);
                }
                store.blobs.insert(digest.clone(), data);
                let mut a = answer(201);
                a.headers.push(("Docker-Content-Digest".into(), digest));
                a
            }
            "DELETE" => answer(204),
            _ => answer(405),
        }
    } else if let Some((_, digest)) = rest.split_once("/blobs/") {
        match store.blobs.get(digest) {
            Some(data) => {
                let mut a = answer(200);
                a.headers
                    .push(("Docker-Content-Digest".into(), digest.to_owned()));
                a.headers
                    .push(("Content-Type".into(), "application/octet-stream".into()));
                a.length = Some(data.len());
                a.body = data.clone();
                a
            }
            None => answer(404),
        }
    } else if let Some((repository, subject)) = rest.split_once("/referrers/") {
        if !hostility.referrers_api || quirks.subject_header_without_api || method != "GET" {
            return answer(404);
        }
        let key = (repository.to_owned(), subject.to_owned());
        let manifests = store.referrers.get(&key).cloned().unwrap_or_default();
        let index = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": manifests,
        });
        let mut a = answer(200);
        a.headers.push((
            "Content-Type".into(),
            "application/vnd.oci.image.index.v1+json".into(),
        ));
        a.body = serde_json::to_vec(&index).unwrap();
        a
    } else if let Some((repository, reference)) = rest.split_once("/manifests/") {
        let key = (repository.to_owned(), reference.to_owned());
        match method {
            "PUT" => {
                let is_index = serde_json::from_slice::<serde_json::Value>(&body)
                    .is_ok_and(|doc| doc.get("manifests").is_some());
                if (quirks.tags_only && reference.starts_with("sha256:"))
                    || (quirks.no_indexes && is_index)
                {
                    return answer(400);
                }
                if quirks.racing_link_once && reference.starts_with("sha256:") && !store.raced {
                    store.raced = true;
                    let mut a = answer(400);
                    a.body = br#"{"errors":[{"code":"DIGEST_INVALID","message":"provided digest did not match uploaded content"}]}"#.to_vec();
                    return a;
                }
                let digest = Digest::of_bytes(&body).to_string();
                let subject = serde_json::from_slice::<serde_json::Value>(&body)
                    .ok()
                    .filter(|_| hostility.referrers_api || quirks.subject_header_without_api)
                    .and_then(|manifest| {
                        let subject = manifest["subject"]["digest"].as_str()?.to_owned();
                        let descriptor = serde_json::json!({
                            "mediaType": manifest["mediaType"],
                            "digest": digest,
                            "size": body.len(),
                            "artifactType": manifest["artifactType"],
                        });
                        Some((subject, descriptor))
                    });
                let mut subject_header = None;
                if let Some((subject, descriptor)) = subject {
                    let listed = store
                        .referrers
                        .entry((repository.to_owned(), subject.clone()))
                        .or_default();
                    if !listed.iter().any(|d| d["digest"] == descriptor["digest"]) {
                        listed.push(descriptor);
                    }
                    subject_header = Some(subject);
                }
                let media_type = "application/vnd.oci.image.manifest.v1+json".to_owned();
                store.manifests.insert(
                    (repository.to_owned(), digest.clone()),
                    (media_type.clone(), body.clone()),
                );
                store.manifests.insert(key, (media_type, body));
                let mut a = answer(quirks.manifest_put_status.unwrap_or(201));
                a.headers.push(("Docker-Content-Digest".into(), digest));
                if let Some(subject) = subject_header {
                    a.headers.push(("OCI-Subject".into(), subject));
                }
                a
            }
            _ => match store.manifests.get(&key).or_else(|| {
                // GitLab: an absent `sha256-<hex>` tag is read as the digest `sha256:<hex>`.
                let digest = reference
                    .strip_prefix("sha256-")
                    .filter(|_| quirks.digest_tags_resolve)?;
                store
                    .manifests
                    .get(&(repository.to_owned(), format!("sha256:{digest}")))
            }) {
                Some((media_type, bytes)) => {
                    let mut a = answer(200);
                    a.headers.push(("Content-Type".into(), media_type.clone()));
                    a.headers.push((
                        "Docker-Content-Digest".into(),
                        Digest::of_bytes(bytes).to_string(),
                    ));
                    a.length = Some(bytes.len());
                    a.body = bytes.clone();
                    a
                }
                None => answer(404),
            },
        }
    } else {
        answer(404)
    }
}

/// The body of a request: by Content-Length, or chunked; at most 64 MiB.
fn read_body(reader: &mut impl BufRead, head: &Head) -> io::Result<Vec<u8>> {
    let chunked = head
        .header("transfer-encoding")
        .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"));
    let mut body = Vec::new();
    if !chunked {
        let length: u64 = head
            .header("content-length")
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0);
        reader.take(length.min(64 << 20)).read_to_end(&mut body)?;
        return Ok(body);
    }
    loop {
        let mut line = String::new();
        reader.read_line(&mut line)?;
        let size = usize::from_str_radix(line.trim().split(';').next().unwrap_or(""), 16)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "bad chunk size"))?;
        if size == 0 {
            let mut trailer = String::new();
            while reader.read_line(&mut trailer)? > 2 {
                trailer.clear();
            }
            return Ok(body);
        }
        let start = body.len();
        body.resize(start + size, 0);
        reader.read_exact(&mut body[start..])?;
        let mut crlf = [0u8; 2];
        reader.read_exact(&mut crlf)?;
    }
}

fn respond(
    reader: &mut BufReader<Box<dyn Stream>>,
    hostility: &Hostility,
    status: u16,
    headers: &[(&str, &str)],
    body: &[u8],
) -> io::Result<()> {
    respond_sized(reader, hostility, status, headers, body, None)
}

fn respond_sized(
    reader: &mut BufReader<Box<dyn Stream>>,
    hostility: &Hostility,
    status: u16,
    headers: &[(&str, &str)],
    body: &[u8],
    length: Option<usize>,
) -> io::Result<()> {
    let mut head = format!("HTTP/1.1 {status} Fake\r\n");
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str(&format!(
        "Content-Length: {}\r\nConnection: close\r\n\r\n",
        length.unwrap_or(body.len())
    ));
    let stream = reader.get_mut();
    match hostility.dribble {
        Some(interval) => {
            for byte in head.as_bytes() {
                stream.write_all(&[*byte])?;
                stream.flush()?;
                std::thread::sleep(interval);
            }
        }
        None => stream.write_all(head.as_bytes())?,
    }
    stream.write_all(body)?;
    stream.flush()
}

/// A manifest that never ends: `{"layers": [` and then padding, chunk after chunk.
fn endless(reader: &mut BufReader<Box<dyn Stream>>) -> io::Result<()> {
    let stream = reader.get_mut();
    stream.write_all(
        b"HTTP/1.1 200 OK\r\nContent-Type: application/vnd.oci.image.manifest.v1+json\r\n\
          Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n",
    )?;
    let chunk = vec![b' '; 64 * 1024];
    let framed = [format!("{:x}\r\n", chunk.len()).as_bytes(), &chunk, b"\r\n"].concat();
    stream.write_all(b"c\r\n{\"layers\": [\r\n")?;
    // Up to 1 GiB: far past any limit, and an end even for a client that has none.
    for _ in 0..(1 << 14) {
        stream.write_all(&framed)?;
    }
    stream.write_all(b"0\r\n\r\n")?;
    stream.flush()
}

/// A fresh CA, and a server config with a certificate it signed for 127.0.0.1.
fn tls_config() -> (String, Arc<rustls::ServerConfig>) {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let (ca, cert, key) = crate::registry::tls_material();
    let certs = vec![CertificateDer::from_pem_slice(cert.as_bytes()).unwrap()];
    let key = PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap();
    // ring, the workspace's provider: the tests' build also holds aws-lc
    // (through sigstore), so rustls cannot pick a default by itself.
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap();
    (ca, Arc::new(config))
}

/// Another origin: records every request's method, target and Authorization, answers 401 Basic.
pub struct Recorder {
    port: u16,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl Recorder {
    pub fn start() -> Recorder {
        let listener = TcpListener::bind("127.0.0.1:0").expect("cannot bind the recorder");
        let port = listener.local_addr().unwrap().port();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let recorded = seen.clone();
        std::thread::spawn(move || {
            for connection in listener.incoming() {
                let Ok(connection) = connection else { continue };
                let recorded = recorded.clone();
                std::thread::spawn(move || {
                    let _ = record(connection, &recorded);
                });
            }
        });
        Recorder { port, seen }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

fn record(connection: TcpStream, seen: &Mutex<Vec<Seen>>) -> io::Result<()> {
    connection.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut reader = BufReader::new(connection.try_clone()?);
    let Some(head) = read_head(&mut reader)? else {
        return Ok(());
    };
    let mut start = head.start.split(' ');
    seen.lock().unwrap().push(Seen {
        method: start.next().unwrap_or_default().to_owned(),
        target: start.next().unwrap_or_default().to_owned(),
        authorization: head.header("authorization").map(str::to_owned),
        plain_on_tls: false,
        headers: head.headers.clone(),
    });
    let mut connection = connection;
    connection.write_all(
        b"HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Basic realm=\"elsewhere\"\r\n\
          Content-Length: 0\r\nConnection: close\r\n\r\n",
    )?;
    // Drain what the client still sends, so closing does not reset the answer away.
    let _ = io::copy(&mut reader.take(64 << 20), &mut io::sink());
    Ok(())
}
