//! How registries are reached: which scheme (HTTPS, or plain HTTP where
//! allowed), which TLS trust, and which HTTP client may carry a request to
//! which origin. Only the registry's own origin ever gets relaxed TLS.

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use reqwest::header::WWW_AUTHENTICATE;
use reqwest::StatusCode;
use url::Url;

use crate::auth::Authenticator;
use crate::errors::{is_not_tls, is_refused, is_transient, transport_error, RequestError};
use crate::limits::{PING_DEADLINE, REQUEST_DEADLINE};
use crate::progress::Reporter;
use crate::retry::with_retries;
use crate::{Credentials, RegistryClient, RetryPolicy};

/// How to reach registries: extra CA certificates, hosts allowed to skip TLS, retries.
#[derive(Clone, Debug, Default)]
pub struct TransportOptions {
    /// `--insecure-registry HOST[:PORT]`: plain HTTP or unverified TLS for exactly these.
    pub insecure_registries: Vec<String>,
    /// `--registry-ca FILE`: PEM certificates trusted besides the system's roots.
    pub ca_files: Vec<PathBuf>,
    /// Bytes per PATCH for large blobs (0: one streamed PATCH per blob).
    pub chunk_size: u64,
    /// How long and how often failed requests are tried again, first contact included.
    pub retry: RetryPolicy,
    /// No "trying again" lines.
    pub quiet: bool,
}

impl TransportOptions {
    /// `--insecure-registry` names exactly this host and port (a HOST alone: the default port).
    fn is_insecure(&self, registry: &str) -> bool {
        self.insecure_registries
            .iter()
            .any(|entry| entry.eq_ignore_ascii_case(registry))
    }
}

fn host_of(registry: &str) -> &str {
    if let Some(rest) = registry.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    registry.rsplit_once(':').map_or(registry, |(host, _)| host)
}

/// Like docker, loopback registries may speak plain HTTP without a flag.
fn is_loopback(registry: &str) -> bool {
    let host = host_of(registry);
    host == "localhost" || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// The HTTP clients of one registry: `strict` verifies TLS for every origin;
/// `relaxed` (for an `--insecure-registry`) skips verification and is used
/// for that registry's own origin only, never for its token realm or a
/// `Location` elsewhere; `plain` carries plain-HTTP requests, which have no
/// TLS to verify. Neither follows redirects by itself: the client follows
/// them, deciding per hop what may be sent. `strict` is built on first use:
/// loading the system's CA roots costs tens of milliseconds that a
/// plain-HTTP registry never needs. Clones share the clients and their
/// connection pools.
#[derive(Clone)]
pub(crate) struct Clients {
    strict: Arc<OnceLock<Result<reqwest::Client, String>>>,
    relaxed: Option<reqwest::Client>,
    plain: reqwest::Client,
    /// `--registry-ca` certificates, for `strict` when it is built.
    certificates: Arc<Vec<reqwest::Certificate>>,
    /// The registry's origin (scheme, host, port), once its scheme is known.
    registry: Option<url::Origin>,
}

impl Clients {
    pub(crate) fn new(options: &TransportOptions, insecure: bool) -> Result<Self> {
        let certificates = ca_certificates(options)?;
        let relaxed = insecure
            .then(|| http_client(&certificates, Trust::Anything))
            .transpose()?;
        Ok(Self {
            strict: Arc::new(OnceLock::new()),
            relaxed,
            plain: http_client(&[], Trust::Nothing)?,
            certificates: Arc::new(certificates),
            registry: None,
        })
    }

    /// The client allowed to carry a request to `url`.
    pub(crate) fn for_url(&self, url: &Url) -> Result<&reqwest::Client, RequestError> {
        Ok(match (&self.relaxed, &self.registry) {
            _ if url.scheme() == "http" => &self.plain,
            (Some(relaxed), Some(origin)) if url.origin() == *origin => relaxed,
            (Some(relaxed), None) => relaxed,
            _ => self.strict()?,
        })
    }

    fn strict(&self) -> Result<&reqwest::Client, RequestError> {
        let built = self.strict.get_or_init(|| {
            http_client(&self.certificates, Trust::Verified).map_err(|err| format!("{err:#}"))
        });
        built
            .as_ref()
            .map_err(|err| RequestError::fatal(err.clone()))
    }
}

/// Which TLS certificates a client accepts.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Trust {
    /// The system's roots and `--registry-ca`.
    Verified,
    /// Any certificate: `--insecure-registry`.
    Anything,
    /// None at all: the client for plain HTTP, which never needs a root.
    Nothing,
}

fn ca_certificates(options: &TransportOptions) -> Result<Vec<reqwest::Certificate>> {
    let mut certificates = Vec::new();
    for path in &options.ca_files {
        let pem = imgpack_blob::read_local_file(path, &imgpack_blob::local_file::CA_BUNDLE)
            .map_err(|err| anyhow::anyhow!("--registry-ca: {err}"))?;
        let parsed = reqwest::Certificate::from_pem_bundle(&pem).with_context(|| {
            format!(
                "--registry-ca: {} is not a PEM certificate bundle",
                path.display()
            )
        })?;
        if parsed.is_empty() {
            bail!("--registry-ca: {} holds no certificate", path.display());
        }
        certificates.extend(parsed);
    }
    Ok(certificates)
}

fn http_client(certificates: &[reqwest::Certificate], trust: Trust) -> Result<reqwest::Client> {
    install_crypto_provider();
    let builder = reqwest::Client::builder()
        .user_agent(concat!("imgpack/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(PING_DEADLINE)
        // A backstop under the deadlines each request sets for itself.
        .read_timeout(2 * REQUEST_DEADLINE)
        .redirect(reqwest::redirect::Policy::none());
    let builder = match trust {
        Trust::Verified => builder.tls_certs_merge(certificates.to_vec()),
        Trust::Anything => builder
            .tls_certs_merge(certificates.to_vec())
            .tls_danger_accept_invalid_certs(true),
        // No roots: an https URL given to this client fails verification.
        Trust::Nothing => builder.tls_certs_only(Vec::new()),
    };
    builder.build().context("cannot set up the HTTP client")
}

/// Makes ring rustls's process-wide crypto provider, once: reqwest is built
/// without one of its own (see the workspace's Cargo.toml). Another one
/// installed first (a test's) is kept.
pub(crate) fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Connects to `registry` (host[:port]) the way docker does: HTTPS with
/// verified TLS; for `--insecure-registry` hosts unverified TLS, then plain
/// HTTP; for loopback hosts verified TLS, then plain HTTP. First contact is
/// retried like any other request.
pub async fn connect(
    registry: &str,
    options: &TransportOptions,
    credentials: Credentials,
) -> Result<RegistryClient> {
    let insecure = options.is_insecure(registry);
    let mut clients = Clients::new(options, insecure)?;
    let plain_allowed = insecure || is_loopback(registry);
    let reporter = Reporter::new(options.quiet);
    let (base, challenge) =
        first_contact(&clients, registry, plain_allowed, &options.retry, &reporter).await?;
    clients.registry = Some(base.origin());
    let auth = Authenticator::new(clients.clone(), base.clone(), registry, credentials);
    if let Some(challenge) = challenge {
        // The ping's challenge is the registry's: known now, the first requests carry credentials.
        let _ = auth.challenged(Some(&challenge), &[], false).await;
    }
    Ok(RegistryClient {
        auth,
        clients,
        base,
        registry: registry.to_owned(),
        chunk_size: options.chunk_size,
        retry: options.retry.clone(),
        reporter,
    })
}

/// After this long without an answer at first contact, a line says what imgpack waits for.
const SLOW_CONTACT: Duration = Duration::from_secs(5);

/// First contact, tried again on transient failures within its own budget
/// ([`RetryPolicy::first_contact`]), which is a hard deadline: a try still
/// waiting for an answer is cut off too. With no budget (`--retry-timeout 0`),
/// one try, bounded by the ping's deadlines. A registry that keeps imgpack
/// waiting hears about it after [`SLOW_CONTACT`].
async fn first_contact(
    clients: &Clients,
    registry: &str,
    plain_allowed: bool,
    retry: &RetryPolicy,
    reporter: &Reporter,
) -> Result<(Url, Option<String>)> {
    let what = format!("contacting registry {registry}");
    let budget = retry.first_contact;
    let policy = RetryPolicy {
        max_elapsed: budget,
        ..retry.clone()
    };
    let deadline = tokio::time::Instant::now() + budget;
    let contact = with_retries(&policy, reporter, &what, || async {
        let probing = probe(clients, registry, plain_allowed);
        if budget.is_zero() {
            return probing.await;
        }
        tokio::time::timeout_at(deadline, probing)
            .await
            .unwrap_or_else(|_| Err(silent(registry, budget)))
    });
    tokio::pin!(contact);
    tokio::select! {
        result = &mut contact => result,
        () = tokio::time::sleep(SLOW_CONTACT) => {
            let limit = match budget.is_zero() {
                true => String::new(),
                false => format!(" (up to {}s in all; --retry-timeout sets it)", budget.as_secs()),
            };
            reporter.line(&format!(
                "registry {registry} has not answered GET /v2/ for {}s; still trying{limit}",
                SLOW_CONTACT.as_secs()
            ));
            contact.await
        }
    }
}

/// A registry that never answered within first contact's budget: final, the time is up.
fn silent(registry: &str, budget: Duration) -> RequestError {
    RequestError::fatal(format!(
        "registry {registry} stopped answering (no answer to GET /v2/ within {}s; \
         --retry-timeout sets how long to wait)",
        budget.as_secs()
    ))
}

/// One first contact: HTTPS, then plain HTTP where allowed; a loopback
/// registry plain HTTP first. Returns the base URL and the ping's challenge,
/// if it answered 401.
async fn probe(
    clients: &Clients,
    registry: &str,
    plain_allowed: bool,
) -> Result<(Url, Option<String>), RequestError> {
    if is_loopback(registry) {
        return probe_plain_first(clients, registry).await;
    }
    let https = base_url("https", registry)?;
    let tls_failure = match ping(clients, &https, registry).await {
        Ok(challenge) => return Ok((https, challenge)),
        Err(failure) if plain_allowed => failure,
        Err(failure) => return Err(failure.error),
    };
    let http = base_url("http", registry)?;
    match ping(clients, &http, registry).await {
        Ok(challenge) => Ok((http, challenge)),
        Err(plain_failure) => Err(real_failure(tls_failure, plain_failure)),
    }
}

/// A loopback registry is tried over plain HTTP first (a TLS one answers
/// that with 400, and HTTPS follows): the connection never leaves the
/// machine, and a plain-HTTP registry, the usual local one, then costs no
/// TLS setup and no failed handshake.
async fn probe_plain_first(
    clients: &Clients,
    registry: &str,
) -> Result<(Url, Option<String>), RequestError> {
    let http = base_url("http", registry)?;
    let plain_failure = match ping(clients, &http, registry).await {
        Ok(challenge) => return Ok((http, challenge)),
        Err(failure) => failure,
    };
    let https = base_url("https", registry)?;
    match ping(clients, &https, registry).await {
        Ok(challenge) => Ok((https, challenge)),
        Err(tls_failure) => Err(real_failure(tls_failure, plain_failure)),
    }
}

fn base_url(scheme: &str, registry: &str) -> Result<Url, RequestError> {
    Url::parse(&format!("{scheme}://{registry}/"))
        .map_err(|err| RequestError::fatal(format!("bad registry address '{registry}': {err}")))
}

/// A failed ping, and whether an HTTP server answered it at all.
struct PingFailure {
    error: RequestError,
    answered: Option<StatusCode>,
}

/// Of a loopback registry's failed HTTPS and HTTP pings, the one that says
/// what is wrong: an HTTP answer (a server that is not a registry) over a
/// TLS error, unless that answer is a TLS server's 400 to plain HTTP after a
/// certificate it could not verify; a plain-HTTP failure over a TLS
/// handshake with a server that does not speak TLS.
fn real_failure(tls: PingFailure, plain: PingFailure) -> RequestError {
    let tls_server = tls.answered.is_some() || !is_not_tls(&tls.error);
    match plain.answered {
        Some(StatusCode::BAD_REQUEST) if tls_server => tls.error,
        Some(_) => plain.error,
        None if tls.answered.is_some() => tls.error,
        None => plain.error,
    }
}

/// `GET /v2/` must answer like a registry: 200, or 401 (with its challenge).
async fn ping(
    clients: &Clients,
    base: &Url,
    registry: &str,
) -> Result<Option<String>, PingFailure> {
    let url = base.join("v2/").expect("a valid path");
    let client = clients.for_url(&url).map_err(|error| PingFailure {
        error,
        answered: None,
    })?;
    let response = client
        .get(url.clone())
        .timeout(PING_DEADLINE)
        .send()
        .await
        .map_err(|err| PingFailure {
            error: first_contact_error(registry, &err),
            answered: None,
        })?;
    let status = response.status();
    match status {
        StatusCode::OK => Ok(None),
        StatusCode::UNAUTHORIZED => Ok(response
            .headers()
            .get(WWW_AUTHENTICATE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)),
        _ if is_transient(status) => Err(PingFailure {
            error: RequestError::transient(format!(
                "registry {registry} answered {status} to GET {url}"
            )),
            answered: Some(status),
        }),
        _ => Err(PingFailure {
            error: RequestError::fatal(format!(
                "{registry} is not a registry: GET {url} answered {status} (a registry answers 200 or 401); \
                 check the host and port"
            )),
            answered: Some(status),
        }),
    }
}

/// A failed ping. A refused connection is final here, unlike later in a
/// push: at first contact nothing listens at that address (a wrong host or
/// port, a registry not started), and retrying only delays saying so. A
/// registry that restarts mid-push refuses too, and is retried there.
fn first_contact_error(registry: &str, err: &reqwest::Error) -> RequestError {
    if is_refused(err) {
        return RequestError::fatal(format!(
            "cannot connect to registry {registry}: connection refused (nothing listens there): \
             is it running, and are host and port right?"
        ));
    }
    transport_error(registry, err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_and_insecure_hosts() {
        assert!(is_loopback("localhost:5000"));
        assert!(is_loopback("127.0.0.1:5000"));
        assert!(is_loopback("127.3.2.1"));
        assert!(is_loopback("[::1]:5000"));
        assert!(!is_loopback("registry.example.com"));
        assert!(!is_loopback("10.0.0.1:5000"));
        let options = TransportOptions {
            insecure_registries: vec!["reg.local".into(), "other.local:5000".into()],
            ..Default::default()
        };
        assert!(options.is_insecure("reg.local"));
        assert!(options.is_insecure("other.local:5000"));
        // Exactly that host and port.
        assert!(!options.is_insecure("reg.local:5000"));
        assert!(!options.is_insecure("other.local"));
        assert!(!options.is_insecure("other.local:5001"));
    }

    fn failure(message: &str, answered: Option<u16>) -> PingFailure {
        PingFailure {
            error: RequestError::fatal(message),
            answered: answered.map(|s| StatusCode::from_u16(s).unwrap()),
        }
    }

    /// A loopback port where nothing listens (bound, then released).
    fn nobody() -> String {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().to_string()
    }

    #[tokio::test]
    async fn a_refused_first_contact_is_final_and_said_so() {
        let registry = nobody();
        let options = TransportOptions {
            quiet: true,
            ..Default::default()
        };
        let started = std::time::Instant::now();
        let err = connect(&registry, &options, Credentials::default())
            .await
            .err()
            .expect("nothing listens");
        let text = format!("{err:#}");
        assert!(
            text.contains("connection refused (nothing listens there)"),
            "{text}"
        );
        assert!(!text.contains("tries"), "it was tried again: {text}");
        assert!(started.elapsed() < Duration::from_secs(5), "{text}");
    }

    #[tokio::test]
    async fn first_contact_has_a_hard_deadline() {
        // Accepts connections (the kernel's backlog) and never answers.
        let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let registry = silent.local_addr().unwrap().to_string();
        let options = TransportOptions {
            quiet: true,
            retry: RetryPolicy::with_timeout(Duration::from_secs(1)),
            ..Default::default()
        };
        let started = std::time::Instant::now();
        let err = connect(&registry, &options, Credentials::default())
            .await
            .err()
            .expect("nothing answers");
        let text = format!("{err:#}");
        // The ping's own deadline is 10 s; the budget cuts it.
        assert!(started.elapsed() < Duration::from_secs(5), "{text}");
        assert!(
            text.contains(&format!("registry {registry} stopped answering"))
                && text.contains("within 1s"),
            "{text}"
        );
    }

    #[test]
    fn the_real_failure_of_a_loopback_registry_is_shown() {
        let not_tls = "TLS connection to registry r failed (received corrupt message of type InvalidContentType)";
        let bad_cert =
            "TLS connection to registry r failed (invalid peer certificate: UnknownIssuer)";
        // A plain web server that is not a registry.
        let shown = real_failure(
            failure(not_tls, None),
            failure("r is not a registry: 404", Some(404)),
        );
        assert!(
            shown.message.contains("not a registry"),
            "{}",
            shown.message
        );
        // A TLS registry with an unknown CA: its 400 to plain HTTP is not the story.
        let shown = real_failure(failure(bad_cert, None), failure("answered 400", Some(400)));
        assert_eq!(shown.message, bad_cert);
        // A plain registry that reset the connection: the reset, not the TLS noise.
        let shown = real_failure(failure(not_tls, None), failure("connection reset", None));
        assert_eq!(shown.message, "connection reset");
    }
}
