use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use reqwest::StatusCode;

use crate::auth::Authenticator;
use crate::client::{transport_error, RequestError};
use crate::{Credentials, RegistryClient};

/// How to reach registries: extra CA certificates, hosts allowed to skip TLS.
#[derive(Clone, Debug, Default)]
pub struct TransportOptions {
    /// `--insecure-registry HOST[:PORT]`: plain HTTP or unverified TLS for these hosts only.
    pub insecure_registries: Vec<String>,
    /// `--registry-ca FILE`: PEM certificates trusted besides the system's roots.
    pub ca_files: Vec<PathBuf>,
    /// Bytes per PATCH for large blobs (0: one streamed PATCH per blob).
    pub chunk_size: u64,
}

impl TransportOptions {
    fn is_insecure(&self, registry: &str) -> bool {
        let host = host_of(registry);
        self.insecure_registries
            .iter()
            .any(|entry| entry == registry || entry == host)
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

fn http_client(options: &TransportOptions, accept_invalid_certs: bool) -> Result<reqwest::Client> {
    let mut certificates = Vec::new();
    for path in &options.ca_files {
        let pem = std::fs::read(path)
            .with_context(|| format!("--registry-ca: cannot read {}", path.display()))?;
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
    reqwest::Client::builder()
        .user_agent(concat!("imgpack/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(Duration::from_secs(30))
        .read_timeout(Duration::from_secs(300))
        .tls_certs_merge(certificates)
        .tls_danger_accept_invalid_certs(accept_invalid_certs)
        .build()
        .context("cannot set up the HTTP client")
}

/// Connects to `registry` (host[:port]) the way docker does: HTTPS with
/// verified TLS; for `--insecure-registry` hosts unverified TLS, then plain
/// HTTP; for loopback hosts verified TLS, then plain HTTP.
pub async fn connect(
    registry: &str,
    options: &TransportOptions,
    credentials: Credentials,
) -> Result<RegistryClient> {
    let insecure = options.is_insecure(registry);
    let http = http_client(options, insecure)?;
    let https = format!("https://{registry}");
    let base = match ping(&http, &https, registry).await {
        Ok(()) => https,
        Err(tls_error) if insecure || is_loopback(registry) => {
            let plain = format!("http://{registry}");
            match ping(&http, &plain, registry).await {
                Ok(()) => plain,
                // A TLS server answers plain HTTP with 400: the HTTPS error is the one to show.
                Err(_) => bail!("{}", tls_error.message),
            }
        }
        Err(err) => bail!("{}", err.message),
    };
    Ok(RegistryClient {
        auth: Authenticator::new(http.clone(), registry, credentials),
        http,
        base,
        registry: registry.to_owned(),
        chunk_size: options.chunk_size,
    })
}

/// `GET /v2/` must answer like a registry: 200, or 401 with a challenge.
async fn ping(http: &reqwest::Client, base: &str, registry: &str) -> Result<(), RequestError> {
    let response = http
        .get(format!("{base}/v2/"))
        .send()
        .await
        .map_err(|err| transport_error(registry, &err))?;
    let status = response.status();
    if status == StatusCode::OK || status == StatusCode::UNAUTHORIZED {
        return Ok(());
    }
    Err(RequestError {
        message: format!("{base} does not answer like a registry (GET /v2/ gave {status})"),
        transient: false,
        retry_after: None,
    })
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
            insecure_registries: vec!["reg.local".into()],
            ..Default::default()
        };
        assert!(options.is_insecure("reg.local:5000"));
        assert!(options.is_insecure("reg.local"));
        assert!(!options.is_insecure("other.local"));
    }
}
