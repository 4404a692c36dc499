//! A real registry for the end-to-end tests: distribution 2.8 (`docker-registry`, Debian package
//! docker-registry) as a child process on a free port of 127.0.0.1, with filesystem storage in a
//! temporary directory, in one of four [`Setup`]s: plain HTTP, basic auth, TLS (a test CA), or
//! bearer tokens from a [`TokenServer`]. A second, independent [`Implementation`] runs the same
//! way: crates.io `container-registry` 0.3.1 (plain HTTP with basic auth only), which
//! `cargo xtask ci` installs under target/toolchains.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::http::{free_port, request};
use crate::token_server::TokenServer;
use crate::{have_tool, tools_required, workspace_root};

/// The user the [`Setup::Token`] token server accepts.
pub const TOKEN_USER: &str = "tokenuser";
/// The password of [`TOKEN_USER`].
pub const TOKEN_PASSWORD: &str = "tokenpass";
/// The `service` of [`Setup::Token`] (the registry's challenge and the tokens' `aud`).
pub const TOKEN_SERVICE: &str = "imgpack-test-registry";
/// The `issuer` of [`Setup::Token`] (the tokens' `iss`).
pub const TOKEN_ISSUER: &str = "imgpack-test-issuer";

/// How the registry authenticates and what it speaks.
#[derive(Clone, Debug)]
pub enum Setup {
    /// Plain HTTP, no authentication.
    Plain,
    /// Plain HTTP with basic auth (bcrypt htpasswd) for one user.
    Basic { user: String, password: String },
    /// HTTPS with a certificate for IP 127.0.0.1 and DNS localhost, issued by a fresh test CA
    /// ([`Registry::ca_cert_path`], [`Registry::cert_dir`]); no authentication.
    Tls,
    /// Plain HTTP with bearer tokens from a [`TokenServer`] ([`Registry::token_server`]) that
    /// accepts [`TOKEN_USER`]/[`TOKEN_PASSWORD`].
    Token,
}

/// Which registry runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Implementation {
    /// The reference implementation, distribution 2.8 (Debian's `docker-registry`).
    Distribution,
    /// crates.io `container-registry` 0.3.1, an independent one (Rust, axum): basic auth with
    /// one password and any user name, repositories of exactly two parts (`team/app`).
    ContainerRegistry,
}

impl Implementation {
    pub const ALL: [Implementation; 2] = [
        Implementation::Distribution,
        Implementation::ContainerRegistry,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Implementation::Distribution => "distribution 2.8",
            Implementation::ContainerRegistry => "container-registry 0.3.1",
        }
    }
}

/// The version of crates.io `container-registry` the tests run; `cargo xtask ci` installs it.
pub const CONTAINER_REGISTRY_VERSION: &str = "0.3.1";

/// Where `cargo xtask ci` installs `container-registry` (`cargo install --root`).
pub fn container_registry_root() -> PathBuf {
    workspace_root()
        .join("target/toolchains")
        .join(format!("container-registry-{CONTAINER_REGISTRY_VERSION}"))
}

fn container_registry_bin() -> Option<PathBuf> {
    let bin = container_registry_root().join("bin/container-registry");
    if bin.is_file() {
        return Some(bin);
    }
    assert!(
        !tools_required(),
        "{} is missing and IMGPACK_E2E=1 requires it (cargo xtask ci installs it)",
        bin.display()
    );
    eprintln!(
        "skipping: container-registry is not installed at {} (cargo xtask ci installs it)",
        bin.display()
    );
    None
}

/// A running registry; stopped (killed) on drop with its token server and temporary directory.
pub struct Registry {
    dir: tempfile::TempDir,
    child: Option<Child>,
    port: u16,
    cert_dir: Option<PathBuf>,
    token: Option<TokenServer>,
    implementation: Implementation,
    /// `Authorization` of the probes ([`Registry::has_blob`]…) when it requires basic auth.
    probe_auth: Option<String>,
}

enum Startup {
    Ready(Child),
    PortTaken,
}

impl Registry {
    /// Starts a registry; None when `docker-registry` is missing and IMGPACK_E2E is not 1 (a
    /// skip notice is printed; under IMGPACK_E2E=1 a missing tool panics). Panics with the
    /// registry's output when it does not answer `GET /v2/` in time.
    pub fn start(setup: Setup) -> Option<Registry> {
        Registry::start_as(Implementation::Distribution, setup)
    }

    /// Starts `implementation` in `setup`, like [`Registry::start`]. container-registry
    /// speaks plain HTTP with basic auth only: it takes [`Setup::Basic`] (any user name).
    pub fn start_as(implementation: Implementation, setup: Setup) -> Option<Registry> {
        match implementation {
            Implementation::Distribution => {
                if !have_tool("docker-registry") {
                    return None;
                }
                Some(Registry::try_start(setup).unwrap_or_else(|err| panic!("{err}")))
            }
            Implementation::ContainerRegistry => {
                let Setup::Basic { user, password } = setup else {
                    panic!("container-registry runs with Setup::Basic only, not {setup:?}");
                };
                let bin = container_registry_bin()?;
                Some(
                    Registry::start_container_registry(&bin, &user, &password)
                        .unwrap_or_else(|err| panic!("{err}")),
                )
            }
        }
    }

    fn start_container_registry(
        bin: &Path,
        user: &str,
        password: &str,
    ) -> Result<Registry, String> {
        let dir = tempfile::Builder::new()
            .prefix("imgpack-container-registry-")
            .tempdir()
            .map_err(|err| format!("cannot create the registry directory: {err}"))?;
        let data = dir.path().join("data");
        std::fs::create_dir_all(&data).unwrap();
        let log_path = dir.path().join("registry.log");
        for _attempt in 0..5 {
            let port = free_port();
            let log = File::create(&log_path).unwrap();
            let child = Command::new(bin)
                .arg("--bind")
                .arg(format!("127.0.0.1:{port}"))
                .arg("--storage")
                .arg(&data)
                .arg("--password")
                .arg(password)
                .stdin(Stdio::null())
                .stdout(log.try_clone().unwrap())
                .stderr(log)
                .spawn()
                .map_err(|err| format!("cannot run {}: {err}", bin.display()))?;
            // Its ping challenges with this realm; nothing else on the port would.
            let ours = |response: &crate::http::Response| {
                response.header("www-authenticate") == Some("Basic realm=\"ContainerRegistry\"")
            };
            match wait_ready(child, port, &log_path, "container-registry", ours)? {
                Startup::Ready(child) => {
                    return Ok(Registry {
                        dir,
                        child: Some(child),
                        port,
                        cert_dir: None,
                        token: None,
                        implementation: Implementation::ContainerRegistry,
                        probe_auth: Some(basic_header(user, password)),
                    })
                }
                Startup::PortTaken => continue,
            }
        }
        Err("container-registry found no free port in 5 attempts".to_owned())
    }

    /// Starts a registry, or says in one message why it could not (for callers that are not
    /// tests, such as `cargo xtask bench`).
    pub fn try_start(setup: Setup) -> Result<Registry, String> {
        let dir = tempfile::Builder::new()
            .prefix("imgpack-registry-")
            .tempdir()
            .map_err(|err| format!("cannot create the registry directory: {err}"))?;
        let root = dir.path();
        let data = root.join("data");
        std::fs::create_dir_all(&data).unwrap();

        let mut auth = None;
        let mut probe_auth = None;
        let mut tls = None;
        let mut cert_dir = None;
        let mut token = None;
        match &setup {
            Setup::Plain => {}
            Setup::Basic { user, password } => {
                assert!(!user.contains(':'), "an htpasswd user name holds no ':'");
                let hash = bcrypt::hash_with_result(password, 5)
                    .expect("cannot hash the password")
                    .format_for_version(bcrypt::Version::TwoY);
                let htpasswd = root.join("htpasswd");
                std::fs::write(&htpasswd, format!("{user}:{hash}\n")).unwrap();
                auth = Some(json!({"htpasswd": {"realm": "basic-realm", "path": htpasswd}}));
                probe_auth = Some(basic_header(user, password));
            }
            Setup::Tls => {
                let certs = root.join("certs");
                std::fs::create_dir_all(&certs).unwrap();
                let (ca_pem, server_pem, server_key_pem) = tls_material();
                std::fs::write(certs.join("ca.crt"), ca_pem).unwrap();
                let server_crt = root.join("server.crt");
                let server_key = root.join("server.key");
                std::fs::write(&server_crt, server_pem).unwrap();
                std::fs::write(&server_key, server_key_pem).unwrap();
                tls = Some(json!({"certificate": server_crt, "key": server_key}));
                cert_dir = Some(certs);
            }
            Setup::Token => {
                let server =
                    TokenServer::start(TOKEN_SERVICE, TOKEN_ISSUER, TOKEN_USER, TOKEN_PASSWORD);
                let bundle = root.join("token-signer.crt");
                std::fs::write(&bundle, server.signing_cert_pem()).unwrap();
                auth = Some(json!({"token": {
                    "realm": server.url(),
                    "service": TOKEN_SERVICE,
                    "issuer": TOKEN_ISSUER,
                    "rootcertbundle": bundle,
                }}));
                token = Some(server);
            }
        }

        for _attempt in 0..5 {
            let port = free_port();
            let mut http =
                json!({"addr": format!("127.0.0.1:{port}"), "secret": "imgpack-test-only"});
            if let Some(tls) = &tls {
                http["tls"] = tls.clone();
            }
            let mut config = json!({
                "version": "0.1",
                "log": {"level": "warn", "accesslog": {"disabled": true}},
                "storage": {
                    "filesystem": {"rootdirectory": data},
                    "delete": {"enabled": true},
                    "maintenance": {"uploadpurging": {"enabled": false}},
                },
                "http": http,
            });
            if let Some(auth) = &auth {
                config["auth"] = auth.clone();
            }
            // YAML is a superset of JSON: the registry reads this as its config.yml.
            let config_path = root.join("config.yml");
            std::fs::write(&config_path, serde_json::to_vec_pretty(&config).unwrap()).unwrap();
            let log_path = root.join("registry.log");
            let log = File::create(&log_path).unwrap();
            let mut command = Command::new("docker-registry");
            command
                .arg("serve")
                .arg(&config_path)
                .current_dir(root)
                .stdin(Stdio::null())
                .stdout(log.try_clone().unwrap())
                .stderr(log);
            // REGISTRY_* variables override the config file.
            for (name, _) in std::env::vars_os() {
                if name.to_string_lossy().starts_with("REGISTRY_") {
                    command.env_remove(name);
                }
            }
            let child = command
                .spawn()
                .map_err(|err| format!("cannot run docker-registry: {err}"))?;
            let tls = tls.is_some();
            // Over TLS the plain request still gets Go's `400 … HTTP request to an HTTPS
            // server`, which proves the server is up.
            let ours = |response: &crate::http::Response| {
                tls || response.header("docker-distribution-api-version") == Some("registry/2.0")
            };
            match wait_ready(child, port, &log_path, "docker-registry", ours)? {
                Startup::Ready(child) => {
                    return Ok(Registry {
                        dir,
                        child: Some(child),
                        port,
                        cert_dir,
                        token,
                        implementation: Implementation::Distribution,
                        probe_auth,
                    })
                }
                Startup::PortTaken => continue,
            }
        }
        Err("docker-registry found no free port in 5 attempts".to_owned())
    }

    /// `127.0.0.1:PORT`.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn implementation(&self) -> Implementation {
        self.implementation
    }

    /// The test CA certificate (PEM) that issued the server certificate, for [`Setup::Tls`].
    pub fn ca_cert_path(&self) -> Option<PathBuf> {
        self.cert_dir.as_ref().map(|dir| dir.join("ca.crt"))
    }

    /// A directory holding only `ca.crt` (the test CA), for `skopeo --cert-dir`; [`Setup::Tls`].
    pub fn cert_dir(&self) -> Option<PathBuf> {
        self.cert_dir.clone()
    }

    /// The token server of [`Setup::Token`].
    pub fn token_server(&self) -> Option<&TokenServer> {
        self.token.as_ref()
    }

    /// The storage root (`docker/registry/v2/...` lives below it).
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// How many blobs are stored: `docker/registry/v2/blobs/sha256/*/*/data` files
    /// (distribution), the files of `blobs/` (container-registry, which keeps manifests apart).
    pub fn blob_count(&self) -> usize {
        if self.implementation == Implementation::ContainerRegistry {
            return std::fs::read_dir(self.data_dir().join("blobs"))
                .map(|entries| entries.flatten().count())
                .unwrap_or(0);
        }
        let blobs = self.data_dir().join("docker/registry/v2/blobs/sha256");
        let Ok(prefixes) = std::fs::read_dir(blobs) else {
            return 0;
        };
        prefixes
            .flatten()
            .filter_map(|prefix| std::fs::read_dir(prefix.path()).ok())
            .flat_map(|digests| digests.flatten())
            .filter(|digest| digest.path().join("data").is_file())
            .count()
    }

    /// The bytes the largest upload in progress in `repository` holds so far, as distribution
    /// stores it (`_uploads/<id>/data`): a test sees a blob's upload under way at the registry
    /// itself. Distribution only.
    pub fn largest_upload(&self, repository: &str) -> u64 {
        assert_eq!(
            self.implementation,
            Implementation::Distribution,
            "uploads are read from distribution's storage"
        );
        let uploads = self
            .data_dir()
            .join("docker/registry/v2/repositories")
            .join(repository)
            .join("_uploads");
        let Ok(sessions) = std::fs::read_dir(uploads) else {
            return 0;
        };
        sessions
            .flatten()
            .filter_map(|session| std::fs::metadata(session.path().join("data")).ok())
            .map(|data| data.len())
            .max()
            .unwrap_or(0)
    }

    /// The digest the registry serves for `repository:reference` (a tag or a digest), asked
    /// with every manifest type accepted; None when it has no such manifest. Distribution is
    /// asked with `HEAD` (its Docker-Content-Digest); container-registry, which sends no such
    /// header, with `GET`, and the bytes it serves are hashed. Plain HTTP ([`Setup::Plain`] or
    /// [`Setup::Basic`]) only.
    pub fn manifest_digest(&self, repository: &str, reference: &str) -> Option<String> {
        let path = format!("/v2/{repository}/manifests/{reference}");
        let by_get = self.implementation == Implementation::ContainerRegistry;
        let method = if by_get { "GET" } else { "HEAD" };
        let response = self.probe(method, &path, &[MANIFEST_ACCEPT]);
        match response.status {
            200 if by_get => Some(imgpack_blob::Digest::of_bytes(&response.body).to_string()),
            200 => Some(
                response
                    .header("docker-content-digest")
                    .expect("a manifest HEAD answers Docker-Content-Digest")
                    .to_owned(),
            ),
            404 => None,
            other => panic!("{method} of manifest {repository}:{reference} answered {other}"),
        }
    }

    /// Whether the registry holds blob `digest` in `repository` (plain HTTP only).
    pub fn has_blob(&self, repository: &str, digest: &str) -> bool {
        let response = self.probe("HEAD", &format!("/v2/{repository}/blobs/{digest}"), &[]);
        match response.status {
            200 => true,
            404 => false,
            other => panic!("HEAD of blob {digest} in {repository} answered {other}"),
        }
    }

    fn probe(&self, method: &str, path: &str, headers: &[&str]) -> crate::http::Response {
        let authorization = self
            .probe_auth
            .as_ref()
            .map(|value| format!("Authorization: {value}"));
        let mut headers = headers.to_vec();
        headers.extend(authorization.as_deref());
        request(&self.host(), method, path, &headers, b"")
            .unwrap_or_else(|err| panic!("{method} {path} on {}: {err}", self.host()))
    }

    /// The registry's own output so far (warnings and errors; access logs are off).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default()
    }

    /// Kills the registry (also done on drop); from then on its port refuses connections.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Every manifest type, so that an index comes back as itself rather than as one platform.
const MANIFEST_ACCEPT: &str = "Accept: application/vnd.oci.image.index.v1+json, \
    application/vnd.docker.distribution.manifest.list.v2+json, \
    application/vnd.oci.image.manifest.v1+json, \
    application/vnd.docker.distribution.manifest.v2+json";

/// How long a registry may take to answer `GET /v2/` (it takes ~0.1 s on an idle machine).
const START_PATIENCE: Duration = Duration::from_secs(30);

/// `Basic base64(user:password)`.
fn basic_header(user: &str, password: &str) -> String {
    use base64::Engine as _;
    let encoded = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    format!("Basic {encoded}")
}

/// Polls `GET /v2/` until the registry `name` answers in a way only it would (`ours`).
fn wait_ready(
    mut child: Child,
    port: u16,
    log: &Path,
    name: &str,
    ours: impl Fn(&crate::http::Response) -> bool,
) -> Result<Startup, String> {
    let deadline = Instant::now() + START_PATIENCE;
    let host = format!("127.0.0.1:{port}");
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            let output = std::fs::read_to_string(log).unwrap_or_default();
            if output.contains("address already in use")
                || output.contains("Address already in use")
            {
                return Ok(Startup::PortTaken);
            }
            return Err(format!(
                "{name} exited with {status} before answering:\n{output}"
            ));
        }
        if let Ok(response) = request(&host, "GET", "/v2/", &[], b"") {
            // Another process that took the port would answer too: ours must still be running.
            if ours(&response) {
                if let Ok(None) = child.try_wait() {
                    return Ok(Startup::Ready(child));
                }
                continue;
            }
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            let output = std::fs::read_to_string(log).unwrap_or_default();
            return Err(format!(
                "{name} did not answer GET /v2/ on port {port} within {START_PATIENCE:?}:\n{output}"
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A test CA and a server certificate it issued for IP 127.0.0.1 and DNS localhost:
/// (CA PEM, server certificate PEM, server key PKCS#8 PEM).
pub(crate) fn tls_material() -> (String, String, String) {
    use rcgen::{
        BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose,
        IsCa, Issuer, KeyPair, KeyUsagePurpose,
    };
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.distinguished_name = DistinguishedName::new();
    ca.distinguished_name
        .push(DnType::CommonName, "imgpack test CA");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca, ca_key);

    let server_key = KeyPair::generate().unwrap();
    let mut server =
        CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()]).unwrap();
    server.distinguished_name = DistinguishedName::new();
    server
        .distinguished_name
        .push(DnType::CommonName, "127.0.0.1");
    server.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    server.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    server.use_authority_key_identifier_extension = true;
    let server_cert = server.signed_by(&server_key, &issuer).unwrap();
    (ca_cert.pem(), server_cert.pem(), server_key.serialize_pem())
}
