//! The real-registry test support against distribution 2.8 and skopeo: every registry setup
//! takes a push and serves it back, the token server runs the bearer flow, and the proxy
//! forwards, counts and injects faults. container-registry 0.3.1 takes a push too, and has
//! the quirks the fake registry plays for it. Under IMGPACK_E2E=1 a missing tool fails these tests.

use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use imgpack_e2e::http::{self, exchange, Response};
use imgpack_e2e::proxy::{Fault, Proxy};
use imgpack_e2e::registry::{
    Implementation, Registry, Setup, TOKEN_PASSWORD, TOKEN_SERVICE, TOKEN_USER,
};
use imgpack_e2e::*;

fn tools(names: &[&str]) -> bool {
    names.iter().all(|name| have_tool(name))
}

/// Builds a one-platform image into `oci:<dir>/out:v1`; returns its manifest digest.
fn build_image(dir: &Path) -> String {
    write_static_elf(&dir.join("api"), Arch::Amd64, b"selftest code");
    let output = run_expect(
        imgpack().current_dir(dir).args([
            "build",
            "--binary",
            "linux/amd64=api",
            "--output",
            "oci:out:v1",
            // The tests compare the registry's blobs with the layout's: skopeo copies
            // the image, not the layout's SBOM and provenance.
            "--sbom",
            "none",
            "--provenance",
            "false",
        ]),
        true,
    );
    printed_digest(&output)
}

fn skopeo(args: &[String], success: bool) -> Output {
    run_expect(Command::new("skopeo").args(args), success)
}

fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|a| a.to_string()).collect()
}

/// `skopeo copy [flags] oci:<dir>/out:v1 docker://<host>/<reference>`.
fn push(dir: &Path, flags: &[&str], host: &str, reference: &str, success: bool) -> Output {
    let mut args = strings(&["copy", "--quiet"]);
    args.extend(strings(flags));
    args.push(format!("oci:{}:v1", dir.join("out").display()));
    args.push(format!("docker://{host}/{reference}"));
    skopeo(&args, success)
}

/// `skopeo inspect --raw [flags] docker://<host>/<reference>`.
fn inspect_raw(flags: &[&str], host: &str, reference: &str, success: bool) -> Output {
    let mut args = strings(&["inspect", "--raw"]);
    args.extend(strings(flags));
    args.push(format!("docker://{host}/{reference}"));
    skopeo(&args, success)
}

fn digest_of(output: &Output) -> String {
    imgpack_blob::Digest::of_bytes(&output.stdout).to_string()
}

fn request(host: &str, method: &str, target: &str, headers: &[&str], body: &[u8]) -> Response {
    http::request(host, method, target, headers, body)
        .unwrap_or_else(|err| panic!("{method} {target} on {host}: {err}"))
}

fn parse(raw: &[u8]) -> Response {
    Response::parse(raw).unwrap_or_else(|err| panic!("{err}: {:?}", String::from_utf8_lossy(raw)))
}

/// The path and query of an absolute `Location` URL on `host`.
fn location_path(response: &Response, host: &str) -> String {
    let location = response.header("location").expect("no Location");
    location
        .strip_prefix(&format!("http://{host}"))
        .unwrap_or_else(|| panic!("Location {location} is not on {host}"))
        .to_owned()
}

const MANIFEST_ACCEPT: &str = "Accept: application/vnd.oci.image.manifest.v1+json, \
     application/vnd.oci.image.index.v1+json, \
     application/vnd.docker.distribution.manifest.v2+json";

#[test]
fn plain_registry_stores_a_push_serves_it_back_and_stops() {
    if !tools(&["skopeo"]) {
        return;
    }
    let Some(mut registry) = Registry::start(Setup::Plain) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let digest = build_image(dir.path());
    let host = registry.host();
    assert!(host.starts_with("127.0.0.1:"), "{host}");
    assert_eq!(registry.blob_count(), 0);
    assert!(registry.cert_dir().is_none() && registry.token_server().is_none());

    push(
        dir.path(),
        &["--dest-tls-verify=false"],
        &host,
        "test/app:v1",
        true,
    );
    let raw = inspect_raw(&["--tls-verify=false"], &host, "test/app:v1", true);
    assert_eq!(
        digest_of(&raw),
        digest,
        "the registry serves the pushed bytes"
    );

    // Manifest, config and every layer are stored as blobs, nothing else.
    let layout = Layout::new(dir.path().join("out"));
    assert_eq!(registry.blob_count(), layout.verified_blobs().len());
    assert!(registry
        .data_dir()
        .join("docker/registry/v2/repositories/test/app/_manifests/tags/v1")
        .is_dir());

    // Go answers a `Connection: close` request with `Connection: close`.
    let ping = request(&host, "GET", "/v2/", &[], b"");
    assert_eq!(ping.status, 200);
    assert_eq!(ping.header("connection"), Some("close"));

    registry.stop();
    assert!(
        TcpStream::connect(&host).is_err(),
        "a stopped registry refuses connections"
    );
}

#[test]
fn basic_auth_registry_wants_the_credentials() {
    if !tools(&["skopeo"]) {
        return;
    }
    let Some(registry) = Registry::start(Setup::Basic {
        user: "alice".into(),
        password: "s3cret pass".into(),
    }) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let digest = build_image(dir.path());
    let host = registry.host();

    let creds = "alice:s3cret pass";
    push(
        dir.path(),
        &["--dest-tls-verify=false", "--dest-creds", creds],
        &host,
        "test/app:v1",
        true,
    );
    let raw = inspect_raw(
        &["--tls-verify=false", "--creds", creds],
        &host,
        "test/app:v1",
        true,
    );
    assert_eq!(digest_of(&raw), digest);

    let anonymous = inspect_raw(&["--tls-verify=false"], &host, "test/app:v1", false);
    assert!(
        stderr(&anonymous).contains("authentication required"),
        "{}",
        stderr(&anonymous)
    );
    inspect_raw(
        &["--tls-verify=false", "--creds", "alice:wrong"],
        &host,
        "test/app:v1",
        false,
    );
    push(
        dir.path(),
        &[
            "--dest-tls-verify=false",
            "--dest-creds",
            "mallory:s3cret pass",
        ],
        &host,
        "test/app:v2",
        false,
    );
    let challenge = request(&host, "GET", "/v2/", &[], b"");
    assert_eq!(challenge.status, 401);
    assert_eq!(
        challenge.header("www-authenticate"),
        Some("Basic realm=\"basic-realm\"")
    );
}

#[test]
fn container_registry_takes_a_push_and_has_the_quirks_the_fake_plays() {
    if !tools(&["skopeo"]) {
        return;
    }
    let Some(registry) = Registry::start_as(
        Implementation::ContainerRegistry,
        Setup::Basic {
            user: "alice".into(),
            password: "s3cret pass".into(),
        },
    ) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let digest = build_image(dir.path());
    let host = registry.host();
    let creds = "alice:s3cret pass";
    push(
        dir.path(),
        &["--dest-tls-verify=false", "--dest-creds", creds],
        &host,
        "test/app:v1",
        true,
    );
    let raw = inspect_raw(
        &["--tls-verify=false", "--creds", creds],
        &host,
        "test/app:v1",
        true,
    );
    assert_eq!(digest_of(&raw), digest);
    assert_eq!(
        registry.manifest_digest("test/app", "v1"),
        Some(digest.clone())
    );
    // One password, any user name; a wrong password is refused.
    let other_user = "mallory:s3cret pass";
    inspect_raw(
        &["--tls-verify=false", "--creds", other_user],
        &host,
        "test/app:v1",
        true,
    );
    inspect_raw(
        &["--tls-verify=false", "--creds", "alice:wrong"],
        &host,
        "test/app:v1",
        false,
    );

    // The challenge comes with the ping only; every other 401 is bare.
    let ping = request(&host, "GET", "/v2/", &[], b"");
    assert_eq!(ping.status, 401);
    assert_eq!(
        ping.header("www-authenticate"),
        Some("Basic realm=\"ContainerRegistry\"")
    );
    let bare = request(&host, "HEAD", "/v2/test/app/manifests/v1", &[], b"");
    assert_eq!(bare.status, 401);
    assert_eq!(bare.header("www-authenticate"), None);

    use base64::Engine as _;
    let encoded = base64::engine::general_purpose::STANDARD.encode(creds);
    let auth = format!("Authorization: Basic {encoded}");
    // No Docker-Content-Digest on a manifest, no tags/list.
    let manifest = request(
        &host,
        "GET",
        "/v2/test/app/manifests/v1",
        &[&auth, MANIFEST_ACCEPT],
        b"",
    );
    assert_eq!(manifest.status, 200);
    assert_eq!(manifest.header("docker-content-digest"), None);
    let tags = request(&host, "GET", "/v2/test/app/tags/list", &[&auth], b"");
    assert_eq!(tags.status, 404);
    // Manifests under tags only, and no index.
    let oci_manifest = "Content-Type: application/vnd.oci.image.manifest.v1+json";
    let by_digest = request(
        &host,
        "PUT",
        &format!("/v2/test/app/manifests/{digest}"),
        &[&auth, oci_manifest],
        &manifest.body,
    );
    assert_eq!(by_digest.status, 400);
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": digest,
            "size": manifest.body.len(),
        }],
    });
    let put_index = request(
        &host,
        "PUT",
        "/v2/test/app/manifests/multi",
        &[
            &auth,
            "Content-Type: application/vnd.oci.image.index.v1+json",
        ],
        index.to_string().as_bytes(),
    );
    assert_eq!(put_index.status, 400);
    // A cross-repository mount opens a plain upload session; a body on the closing PUT of an
    // upload is refused with 500.
    let config = &serde_json::from_slice::<serde_json::Value>(&manifest.body).unwrap()["config"];
    let mount = request(
        &host,
        "POST",
        &format!(
            "/v2/other/app/blobs/uploads/?mount={}&from=test/app",
            config["digest"].as_str().unwrap()
        ),
        &[&auth, "Content-Length: 0"],
        b"",
    );
    assert_eq!(mount.status, 202);
    let session = mount
        .header("location")
        .expect("an upload session")
        .to_owned();
    let monolithic = request(
        &host,
        "PUT",
        &format!("{session}?digest={}", digest_of_bytes(b"one blob")),
        &[&auth],
        b"one blob",
    );
    assert_eq!(monolithic.status, 500);
}

#[test]
fn tls_registry_is_trusted_through_the_test_ca_only() {
    if !tools(&["skopeo"]) {
        return;
    }
    let Some(registry) = Registry::start(Setup::Tls) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let digest = build_image(dir.path());
    let host = registry.host();
    let cert_dir = registry.cert_dir().unwrap();
    let ca = registry.ca_cert_path().unwrap();
    assert_eq!(ca, cert_dir.join("ca.crt"));
    assert!(std::fs::read_to_string(&ca)
        .unwrap()
        .starts_with("-----BEGIN CERTIFICATE-----"));
    let cert_dir = cert_dir.display().to_string();

    push(
        dir.path(),
        &["--dest-cert-dir", &cert_dir],
        &host,
        "test/app:v1",
        true,
    );
    let raw = inspect_raw(&["--cert-dir", &cert_dir], &host, "test/app:v1", true);
    assert_eq!(digest_of(&raw), digest);
    // The same server by its DNS name.
    let port = host.rsplit_once(':').unwrap().1;
    let raw = inspect_raw(
        &["--cert-dir", &cert_dir],
        &format!("localhost:{port}"),
        "test/app:v1",
        true,
    );
    assert_eq!(digest_of(&raw), digest);

    let untrusted = inspect_raw(&[], &host, "test/app:v1", false);
    assert!(
        stderr(&untrusted).contains("certificate"),
        "{}",
        stderr(&untrusted)
    );
    let raw = inspect_raw(&["--tls-verify=false"], &host, "test/app:v1", true);
    assert_eq!(digest_of(&raw), digest);
}

#[test]
fn token_registry_runs_the_bearer_flow() {
    if !tools(&["skopeo"]) {
        return;
    }
    let Some(registry) = Registry::start(Setup::Token) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let digest = build_image(dir.path());
    let host = registry.host();
    let tokens = registry.token_server().unwrap();
    assert_eq!(tokens.requests(), 0);

    // The registry's challenge points at the token server.
    let challenge = request(&host, "GET", "/v2/", &[], b"");
    assert_eq!(challenge.status, 401);
    assert_eq!(
        challenge.header("www-authenticate").unwrap(),
        format!(
            "Bearer realm=\"{}\",service=\"{TOKEN_SERVICE}\"",
            tokens.url()
        )
    );

    let creds = format!("{TOKEN_USER}:{TOKEN_PASSWORD}");
    push(
        dir.path(),
        &["--dest-tls-verify=false", "--dest-creds", &creds],
        &host,
        "test/app:v1",
        true,
    );
    assert!(tokens.requests() >= 1);
    let raw = inspect_raw(
        &["--tls-verify=false", "--creds", &creds],
        &host,
        "test/app:v1",
        true,
    );
    assert_eq!(digest_of(&raw), digest);

    let before = tokens.requests();
    let refused = inspect_raw(
        &["--tls-verify=false", "--creds", "tokenuser:wrong"],
        &host,
        "test/app:v1",
        false,
    );
    assert!(tokens.requests() > before, "skopeo asked the token server");
    assert!(
        stderr(&refused).contains("401") || stderr(&refused).contains("unauthorized"),
        "{}",
        stderr(&refused)
    );

    // The token endpoint directly: every grant, and what the registry makes of the tokens.
    let token_host = tokens
        .url()
        .strip_prefix("http://")
        .unwrap()
        .strip_suffix("/token")
        .unwrap()
        .to_owned();
    let manifest_with = |token: &str| {
        request(
            &host,
            "GET",
            "/v2/test/app/manifests/v1",
            &[MANIFEST_ACCEPT, &format!("Authorization: Bearer {token}")],
            b"",
        )
    };
    let scope = format!("service={TOKEN_SERVICE}&scope=repository%3Atest%2Fapp%3Apull");
    let form = "Content-Type: application/x-www-form-urlencoded";

    tokens.set_expires_in(120);
    let refreshed = request(
        &token_host,
        "POST",
        "/token",
        &[form],
        format!(
            "grant_type=refresh_token&client_id=selftest&refresh_token={}&{scope}",
            tokens.refresh_token()
        )
        .as_bytes(),
    );
    assert_eq!(refreshed.status, 200);
    let answer = refreshed.json();
    assert_eq!(answer["expires_in"], 120);
    assert_eq!(answer["token"], answer["access_token"]);
    assert!(answer["issued_at"].as_str().unwrap().ends_with('Z'));
    let granted = manifest_with(answer["token"].as_str().unwrap());
    assert_eq!(granted.status, 200);
    assert_eq!(digest_of_bytes(&granted.body), digest);

    let password = request(
        &token_host,
        "POST",
        "/token",
        &[form],
        format!(
            "grant_type=password&username={TOKEN_USER}&password={TOKEN_PASSWORD}\
             &access_type=offline&{scope}"
        )
        .as_bytes(),
    );
    assert_eq!(password.status, 200);
    assert_eq!(password.json()["refresh_token"], tokens.refresh_token());
    assert_eq!(
        manifest_with(password.json()["token"].as_str().unwrap()).status,
        200
    );

    let bad_refresh = request(
        &token_host,
        "POST",
        "/token",
        &[form],
        format!("grant_type=refresh_token&refresh_token=nope&{scope}").as_bytes(),
    );
    assert_eq!(bad_refresh.status, 401);

    // Anonymous: a token with no access, which the registry refuses for the repository.
    let anonymous = request(&token_host, "GET", &format!("/token?{scope}"), &[], b"");
    assert_eq!(anonymous.status, 200);
    assert_eq!(
        manifest_with(anonymous.json()["token"].as_str().unwrap()).status,
        401
    );
    // Pull granted is not push granted: a token for another repository does not reach this one.
    let other = request(
        &token_host,
        "GET",
        &format!("/token?service={TOKEN_SERVICE}&scope=repository%3Aother%2Frepo%3Apull%2Cpush"),
        &["Authorization: Basic dG9rZW51c2VyOnRva2VucGFzcw=="],
        b"",
    );
    assert_eq!(other.status, 200);
    assert_eq!(
        manifest_with(other.json()["token"].as_str().unwrap()).status,
        401
    );
}

fn digest_of_bytes(bytes: &[u8]) -> String {
    imgpack_blob::Digest::of_bytes(bytes).to_string()
}

#[test]
fn proxy_counts_a_push_and_serves_status_faults() {
    if !tools(&["skopeo"]) {
        return;
    }
    let Some(registry) = Registry::start(Setup::Plain) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let digest = build_image(dir.path());
    let proxy = Proxy::start(&registry.host());
    let host = proxy.host();
    let insecure = ["--dest-tls-verify=false"];

    push(dir.path(), &insecure, &host, "test/app:v1", true);
    assert!(
        proxy.count("PUT", "/manifests/") >= 1,
        "{:?}",
        proxy.requests()
    );
    assert!(proxy.count("GET", "/v2/") >= 1);
    assert!(proxy
        .requests()
        .iter()
        .any(|(method, path)| method == "PUT" && path.contains("/blobs/uploads/")));
    assert_eq!(
        registry.blob_count(),
        Layout::new(dir.path().join("out")).verified_blobs().len()
    );
    let raw = inspect_raw(&["--tls-verify=false"], &host, "test/app:v1", true);
    assert_eq!(digest_of(&raw), digest);

    // One 500 on the ping: skopeo gives up (it does not retry a 500), the next push gets through.
    proxy.reset_counts();
    let ping_fault = proxy.add_fault(Fault::Status {
        method: "GET",
        path_contains: "/v2/",
        status: 500,
        retry_after: None,
        times: Some(1),
    });
    assert_eq!(proxy.served(ping_fault), 0);
    let failed = push(dir.path(), &insecure, &host, "test/app:v2", false);
    assert_eq!(proxy.served(ping_fault), 1);
    assert!(stderr(&failed).contains("500"), "{}", stderr(&failed));
    assert_eq!(proxy.count("PUT", "/manifests/"), 0);
    assert_eq!(proxy.requests()[0], ("GET".to_owned(), "/v2/".to_owned()));
    push(dir.path(), &insecure, &host, "test/app:v2", true);
    assert_eq!(proxy.count("PUT", "/manifests/v2"), 1);
    assert_eq!(
        proxy.served(ping_fault),
        1,
        "a used-up fault is served no more"
    );

    // A 429 with Retry-After: skopeo waits the second and asks again.
    proxy.clear_faults();
    proxy.reset_counts();
    proxy.add_fault(Fault::Status {
        method: "GET",
        path_contains: "/manifests/v1",
        status: 429,
        retry_after: Some(1),
        times: Some(1),
    });
    let started = Instant::now();
    let raw = inspect_raw(&["--tls-verify=false"], &host, "test/app:v1", true);
    assert_eq!(digest_of(&raw), digest);
    assert!(started.elapsed() >= Duration::from_secs(1));
    assert_eq!(
        proxy.count("GET", "/manifests/v1"),
        2,
        "{:?}",
        proxy.requests()
    );

    // Faults answered directly, with the OCI error body and Retry-After.
    proxy.clear_faults();
    proxy.add_fault(Fault::Status {
        method: "GET",
        path_contains: "/tags/list",
        status: 503,
        retry_after: Some(7),
        times: None,
    });
    for _ in 0..2 {
        let answer = request(&host, "GET", "/v2/test/app/tags/list", &[], b"");
        assert_eq!(answer.status, 503);
        assert_eq!(answer.header("retry-after"), Some("7"));
        assert_eq!(answer.json()["errors"][0]["code"], "UNAVAILABLE");
    }
    proxy.clear_faults();
    let answer = request(&host, "GET", "/v2/test/app/tags/list", &[], b"");
    assert_eq!(answer.status, 200);
    assert_eq!(answer.json()["tags"], serde_json::json!(["v1", "v2"]));
}

#[test]
fn proxy_passes_chunked_bodies_resets_and_throttles() {
    let Some(registry) = Registry::start(Setup::Plain) else {
        return;
    };
    let proxy = Proxy::start(&registry.host());
    let host = proxy.host();
    let start_upload = |repo: &str| {
        let started = request(
            &host,
            "POST",
            &format!("/v2/{repo}/blobs/uploads/"),
            &[],
            b"",
        );
        assert_eq!(started.status, 202);
        location_path(&started, &host)
    };

    // A chunked PATCH goes through whole; the upstream's answer comes back with Connection: close.
    let blob = b"hello chunked world";
    let blob_digest = digest_of_bytes(blob);
    let upload = start_upload("test/raw");
    let mut patch = format!(
        "PATCH {upload} HTTP/1.1\r\nHost: {host}\r\nTransfer-Encoding: chunked\r\n\
         Content-Type: application/octet-stream\r\n\r\n"
    )
    .into_bytes();
    patch.extend_from_slice(b"6\r\nhello \r\n7;ext=1\r\nchunked\r\n6\r\n world\r\n0\r\n\r\n");
    let patched = parse(&exchange(&host, &patch).unwrap());
    assert_eq!(patched.status, 202, "{}", patched.head.start);
    assert_eq!(patched.header("range"), Some("0-18"));
    assert_eq!(patched.header("connection"), Some("close"));
    let upload = location_path(&patched, &host);
    let put = request(
        &host,
        "PUT",
        &format!("{upload}&digest={blob_digest}"),
        &[],
        b"",
    );
    assert_eq!(put.status, 201, "{}", put.head.start);
    let fetched = request(
        &host,
        "GET",
        &format!("/v2/test/raw/blobs/{blob_digest}"),
        &[],
        b"",
    );
    assert_eq!(fetched.body, blob);
    assert_eq!(registry.blob_count(), 1);

    // A reset after 5 body bytes: no response reaches the client, the next attempt goes through.
    let reset = proxy.add_fault(Fault::ResetDuringBody {
        method: "PATCH",
        path_contains: "/blobs/uploads/",
        after_bytes: 5,
        times: 1,
    });
    let upload = start_upload("test/reset");
    let body = b"0123456789abcdef";
    let mut patch = format!(
        "PATCH {upload} HTTP/1.1\r\nHost: {host}\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    patch.extend_from_slice(body);
    // A reset, not an orderly close: the client must see ECONNRESET.
    match exchange(&host, &patch) {
        Ok(response) => panic!(
            "a reset connection was closed in order and gave {:?}",
            String::from_utf8_lossy(&response)
        ),
        Err(err) => assert_eq!(err.kind(), std::io::ErrorKind::ConnectionReset, "{err}"),
    }
    assert_eq!(proxy.served(reset), 1);
    let upload = start_upload("test/reset");
    let patched = request(&host, "PATCH", &upload, &[], body);
    assert_eq!(patched.status, 202);
    assert_eq!(proxy.count("PATCH", "/v2/test/reset/blobs/uploads/"), 2);

    // Throttled to 4000 B/s, 2000 bytes take at least half a second (no upper bound that a
    // busy machine could break, beyond the generous one that says the body was not stuck).
    proxy.add_fault(Fault::Throttle {
        method: "PATCH",
        path_contains: "/test/slow/",
        bytes_per_sec: 4000,
    });
    let upload = start_upload("test/slow");
    let started = Instant::now();
    let patched = request(&host, "PATCH", &upload, &[], &[7u8; 2000]);
    let elapsed = started.elapsed();
    assert_eq!(patched.status, 202);
    assert!(
        elapsed >= Duration::from_millis(450) && elapsed < Duration::from_secs(60),
        "{elapsed:?}"
    );

    // Non-HTTP bytes (a TLS ClientHello) get a 400 and are not recorded.
    let before = proxy.requests().len();
    let answer = exchange(&host, &[0x16, 0x03, 0x01, 0x00, 0x05, 1, 2, 3, 4, 5]).unwrap();
    assert!(answer.starts_with(b"HTTP/1.1 400"));
    assert_eq!(proxy.requests().len(), before);

    // A dropped proxy stops accepting.
    drop(proxy);
    assert!(TcpStream::connect(&host).is_err());
}
