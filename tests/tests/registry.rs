//! Pushing to real registries on 127.0.0.1: the reference registry in plain
//! HTTP, basic-auth, TLS and bearer-token setups, and behind a proxy that
//! counts requests and injects faults. Under IMGPACK_E2E=1 a missing
//! docker-registry or skopeo fails these tests.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use imgpack_e2e::http::refusing_host;
use imgpack_e2e::proxy::{Fault, Proxy};
use imgpack_e2e::registry::{Registry, Setup, TOKEN_PASSWORD, TOKEN_USER};
use imgpack_e2e::*;
use serde_json::{json, Value};

fn start(setup: Setup) -> Option<Registry> {
    if !have_tool("skopeo") {
        return None;
    }
    Registry::start(setup)
}

/// Two synthetic static binaries (amd64, arm64) whose app layers differ by `version`.
fn binaries(dir: &Path, version: &str) -> [String; 4] {
    write_static_elf(
        &dir.join("app-amd64"),
        Arch::Amd64,
        format!("amd64 {version}").as_bytes(),
    );
    write_static_elf(
        &dir.join("app-arm64"),
        Arch::Arm64,
        format!("arm64 {version}").as_bytes(),
    );
    [
        "--binary".into(),
        "linux/amd64=app-amd64".into(),
        "--binary".into(),
        "linux/arm64=app-arm64".into(),
    ]
}

fn imgpack_in(dir: &Path) -> Command {
    let mut command = imgpack();
    command.current_dir(dir);
    command
}

/// imgpack with no SBOM or provenance, for tests that count exactly which
/// blobs go up (attachments are tests/tests/attest.rs's; a provenance differs
/// on every push). The flags go last, after the subcommand's own.
fn plain_push(dir: &Path) -> PlainPush {
    PlainPush(imgpack_in(dir))
}

struct PlainPush(Command);

impl PlainPush {
    fn args<I, S>(mut self, args: I) -> Command
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        self.0
            .args(args)
            .args(["--sbom", "none", "--provenance", "false"]);
        self.0
    }
}

fn ok(command: &mut Command) -> Output {
    run_expect(command, true)
}

/// Runs an imgpack subcommand (`build`, `push`…) with `-q` that must fail; returns its one
/// line of error (the whole of its stderr).
fn fails(command: &mut Command) -> String {
    one_error_line(command.arg("-q"))
}

/// The error line that ends the stderr of a failed run that printed progress.
fn last_error(output: &Output) -> String {
    let err = stderr(output);
    assert!(!output.status.success(), "{err}");
    let last = err.lines().last().unwrap_or_default().to_owned();
    assert!(last.starts_with("error: "), "{err}");
    last
}

fn last_line(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .last()
        .unwrap_or_default()
        .to_owned()
}

fn skopeo(args: &[&str]) -> Output {
    Command::new("skopeo")
        .args(args)
        .output()
        .expect("skopeo runs")
}

/// The manifest bytes a registry serves for `reference`, fetched by skopeo.
fn raw_manifest(reference: &str, flags: &[&str]) -> Vec<u8> {
    let output = skopeo(
        &[
            &["inspect", "--raw"],
            flags,
            &[&format!("docker://{reference}")],
        ]
        .concat(),
    );
    assert!(
        output.status.success(),
        "skopeo inspect {reference}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    output.stdout
}

fn digest_of(bytes: &[u8]) -> String {
    imgpack_blob::Digest::of_bytes(bytes).to_string()
}

/// The digests in `?digest=` of the PUTs that completed blob uploads, as the proxy saw them.
fn uploaded(proxy: &Proxy) -> BTreeSet<String> {
    proxy
        .requests()
        .into_iter()
        .filter(|(method, target)| method == "PUT" && target.contains("/blobs/uploads/"))
        .filter_map(|(_, target)| {
            target
                .split("digest=")
                .nth(1)
                .map(|d| d.split('&').next().unwrap().replace("%3A", ":"))
        })
        .collect()
}

/// Layer and config digests of every manifest in a layout entry.
fn content_digests(layout: &Layout, tag: &str) -> Vec<(Vec<String>, String)> {
    layout
        .manifests(&layout.entry(tag))
        .iter()
        .map(|m| {
            let layers = m["layers"]
                .as_array()
                .unwrap()
                .iter()
                .map(|l| l["digest"].as_str().unwrap().to_owned())
                .collect();
            (layers, m["config"]["digest"].as_str().unwrap().to_owned())
        })
        .collect()
}

#[test]
fn a_two_platform_push_is_read_back_exactly_and_stores_shared_layers_once() {
    let Some(registry) = start(Setup::Plain) else {
        return;
    };
    let (Some(amd64), Some(arm64)) = (probe_binary(Arch::Amd64), probe_binary(Arch::Arm64)) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let host = registry.host();
    let target = format!("{host}/team/probe:v1");
    let output = ok(imgpack_in(d)
        .args([
            "build",
            "--output",
            "oci:layout:v1",
            "--push",
            &target,
            "--tag",
            "latest",
            "--image-refs",
            "refs.txt",
        ])
        .arg("--binary")
        .arg(format!("linux/amd64={}", amd64.display()))
        .arg("--binary")
        .arg(format!("linux/arm64={}", arm64.display())));
    let pushed = last_line(&output);
    let layout = Layout::new(d.join("layout"));
    let digest = layout.entry("v1")["digest"].as_str().unwrap().to_owned();
    assert_eq!(pushed, format!("{host}/team/probe@{digest}"));
    assert_eq!(
        std::fs::read_to_string(d.join("refs.txt")).unwrap(),
        format!("{pushed}\n")
    );

    // The registry serves exactly the bytes whose digest imgpack printed, under both tags.
    for tag in ["v1", "latest"] {
        let raw = raw_manifest(&format!("{host}/team/probe:{tag}"), &["--tls-verify=false"]);
        assert_eq!(digest_of(&raw), digest);
    }
    // Every platform comes back.
    let copy = skopeo(&[
        "copy",
        "--all",
        "--src-tls-verify=false",
        &format!("docker://{target}"),
        &format!("oci:{}:pulled", d.join("pulled").display()),
    ]);
    assert!(
        copy.status.success(),
        "{}",
        String::from_utf8_lossy(&copy.stderr)
    );
    let pulled = Layout::new(d.join("pulled"));
    pulled.verified_blobs();
    assert_eq!(pulled.manifests(&pulled.entry("pulled")).len(), 2);
    // 3 shared layers + 2 app layers + 2 configs + 2 manifests + 1 index, each stored once;
    // per platform an SBOM, a provenance, their artifact manifests and the referrers
    // index; the artifacts' empty config once.
    assert_eq!(registry.blob_count(), 10 + 2 * 5 + 1);

    // `imgpack push` of the layout to another tag gives the same digest.
    let output = ok(imgpack_in(d).args([
        "push",
        "-q",
        "oci:layout:v1",
        &format!("{host}/team/probe:copy"),
    ]));
    assert_eq!(
        String::from_utf8_lossy(&output.stdout).trim(),
        format!("{host}/team/probe@{digest}")
    );
    // The layout's referrers went up again, identical: nothing new is stored.
    assert_eq!(registry.blob_count(), 10 + 2 * 5 + 1);
}

#[test]
fn pushes_skip_existing_blobs_upload_only_what_changed_and_mount_across_repositories() {
    let Some(registry) = start(Setup::Plain) else {
        return;
    };
    let proxy = Proxy::start(&registry.host());
    let host = proxy.host();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();

    let v1 = binaries(d, "one");
    ok(plain_push(d)
        .args([
            "build",
            "-q",
            "--output",
            "oci:layout:v1",
            "--push",
            &format!("{host}/team/app:v1"),
        ])
        .args(&v1));
    let layout = Layout::new(d.join("layout"));
    let all_v1: BTreeSet<String> = content_digests(&layout, "v1")
        .into_iter()
        .flat_map(|(l, c)| l.into_iter().chain([c]))
        .collect();
    assert_eq!(all_v1.len(), 7, "3 shared layers, 2 app layers, 2 configs");
    assert_eq!(uploaded(&proxy), all_v1);

    // The same image again: nothing is uploaded.
    proxy.reset_counts();
    ok(plain_push(d)
        .args(["build", "-q", "--push", &format!("{host}/team/app:v1")])
        .args(&v1));
    assert!(uploaded(&proxy).is_empty(), "{:?}", proxy.requests());
    assert_eq!(proxy.count("POST", "/blobs/uploads/"), 0);
    assert_eq!(proxy.count("PATCH", ""), 0);

    // A new version: only its app layers and configs go up.
    proxy.reset_counts();
    let v2 = binaries(d, "two");
    ok(plain_push(d)
        .args([
            "build",
            "-q",
            "--output",
            "oci:layout:v2",
            "--push",
            &format!("{host}/team/app:v2"),
        ])
        .args(&v2));
    let expected: BTreeSet<String> = content_digests(&layout, "v2")
        .into_iter()
        .flat_map(|(layers, config)| [layers[3].clone(), config])
        .collect();
    assert_eq!(uploaded(&proxy), expected);

    // Another repository on the same registry: every blob is mounted, none uploaded.
    proxy.reset_counts();
    ok(plain_push(d)
        .args(["build", "-q", "--push", &format!("{host}/other/app:v2")])
        .args(&v2));
    assert!(uploaded(&proxy).is_empty(), "{:?}", proxy.requests());
    assert_eq!(proxy.count("POST", "mount="), 7, "{:?}", proxy.requests());
    let raw = raw_manifest(
        &format!("{}/other/app:v2", registry.host()),
        &["--tls-verify=false"],
    );
    assert_eq!(
        digest_of(&raw),
        layout.entry("v2")["digest"].as_str().unwrap()
    );
}

/// Writes docker's config.json with `content` in a fresh directory; returns the directory.
fn docker_config(dir: &Path, name: &str, content: Value) -> PathBuf {
    let config_dir = dir.join(name);
    std::fs::create_dir_all(&config_dir).unwrap();
    std::fs::write(config_dir.join("config.json"), content.to_string()).unwrap();
    config_dir
}

fn basic_auth(user: &str, password: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
}

/// An environment in which imgpack finds no credentials but those a test gives it: its own
/// HOME, and none of docker's and podman's variables.
fn without_credentials<'a>(command: &'a mut Command, home: &Path) -> &'a mut Command {
    std::fs::create_dir_all(home).unwrap();
    command
        .env("HOME", home)
        .env_remove("DOCKER_CONFIG")
        .env_remove("REGISTRY_AUTH_FILE")
        .env_remove("XDG_RUNTIME_DIR")
        .env_remove("XDG_CONFIG_HOME")
}

#[test]
fn basic_auth_credentials_come_from_login_docker_helpers_and_podman_and_never_leak() {
    let (user, password) = ("ci-bot", "s3cr3t-Pa55word");
    // Wrong passwords are secrets too: a user may have typed a real one for another registry.
    let (wrong_login, wrong_stored) = ("n0t-the-Pa55word", "wr0ng-st0red-Pa55");
    let Some(registry) = start(Setup::Basic {
        user: user.into(),
        password: password.into(),
    }) else {
        return;
    };
    let host = registry.host();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let bins = binaries(d, "auth");
    let secrets: Vec<String> = [password, wrong_login, wrong_stored]
        .iter()
        .flat_map(|secret| secret_forms(user, secret))
        .collect();
    let home = d.join("home");
    // Every run is searched, line by line, on both streams; none runs with -q.
    let run = |what: &str, command: &mut Command| -> Output {
        let output = command.output().unwrap();
        assert_no_secrets(what, &output, &secrets);
        output
    };
    // Each step adds the one source of credentials it is about.
    let push = |tag: &str| {
        let mut command = imgpack_in(d);
        without_credentials(&mut command, &home)
            .args(["build", "--push", &format!("{host}/team/app:{tag}")])
            .args(&bins);
        command
    };

    // No credentials at all: a clear refusal naming where imgpack looked.
    let output = run("push without credentials", &mut push("v1"));
    let err = last_error(&output);
    assert!(
        err.contains(&format!("registry {host} refused")) && err.contains("no credentials found"),
        "{err}"
    );

    // login: a wrong password is refused and nothing is saved.
    let docker = d.join("docker");
    let login = |what: &str, secret: &str| {
        let mut command = imgpack_in(d);
        without_credentials(&mut command, &home)
            .args(["login", &host, "-u", user, "--password-stdin"])
            .env("DOCKER_CONFIG", &docker)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = command.spawn().unwrap();
        std::io::Write::write_all(
            &mut child.stdin.take().unwrap(),
            format!("{secret}\n").as_bytes(),
        )
        .unwrap();
        let output = child.wait_with_output().unwrap();
        assert_no_secrets(what, &output, &secrets);
        output
    };
    let wrong = login("login with a wrong password", wrong_login);
    assert!(
        last_error(&wrong).contains("refused logging in"),
        "{}",
        stderr(&wrong)
    );
    assert!(!docker.join("config.json").exists());

    // The right one is saved like docker login does, readable only by its owner.
    let right = login("login", password);
    assert!(right.status.success(), "{}", stderr(&right));
    let config_path = docker.join("config.json");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&config_path)
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o600
    );
    let config: Value = serde_json::from_slice(&std::fs::read(&config_path).unwrap()).unwrap();
    assert_eq!(config["auths"][&host]["auth"], basic_auth(user, password));
    let output = run(
        "push with the login's config",
        push("v1").env("DOCKER_CONFIG", &docker),
    );
    assert!(output.status.success(), "{}", stderr(&output));
    let creds = format!("{user}:{password}");
    raw_manifest(
        &format!("{host}/team/app:v1"),
        &["--tls-verify=false", "--creds", &creds],
    );

    // A credential helper named in credHelpers: it is asked, for this registry, and it leaves
    // a marker saying so.
    let helper_dir = d.join("helpers");
    std::fs::create_dir_all(&helper_dir).unwrap();
    let marker = d.join("helper-calls");
    let helper = helper_dir.join("docker-credential-imgpacktest");
    std::fs::write(
        &helper,
        format!(
            "#!/bin/sh\nread -r server\nprintf '%s %s\\n' \"$1\" \"$server\" >> '{}'\n\
             echo '{{\"ServerURL\":\"{host}\",\"Username\":\"{user}\",\"Secret\":\"{password}\"}}'\n",
            marker.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&helper, std::fs::Permissions::from_mode(0o755)).unwrap();
    let helpers_config = docker_config(
        d,
        "docker-helper",
        json!({"credHelpers": {&host: "imgpacktest"}}),
    );
    let path = format!(
        "{}:{}",
        helper_dir.display(),
        std::env::var("PATH").unwrap()
    );
    let output = run(
        "push with a credential helper",
        push("helper")
            .env("DOCKER_CONFIG", &helpers_config)
            .env("PATH", path),
    );
    assert!(output.status.success(), "{}", stderr(&output));
    let calls = std::fs::read_to_string(&marker).expect("the credential helper was not run");
    assert!(
        !calls.is_empty() && calls.lines().all(|call| call == format!("get {host}")),
        "{calls:?}"
    );

    // Podman's auth.json when docker has nothing: named by REGISTRY_AUTH_FILE, or in
    // $XDG_RUNTIME_DIR/containers. Without it the same environment has no credentials (above).
    // The runs above (login among them) may have written into their HOME: these get a fresh one,
    // empty, so that only the auth.json can have let them in.
    let home = d.join("home-podman");
    let push = |tag: &str| {
        let mut command = imgpack_in(d);
        without_credentials(&mut command, &home)
            .args(["build", "--push", &format!("{host}/team/app:{tag}")])
            .args(&bins);
        command
    };
    let runtime_dir = d.join("run");
    std::fs::create_dir_all(runtime_dir.join("containers")).unwrap();
    let auth_file = runtime_dir.join("containers/auth.json");
    std::fs::write(
        &auth_file,
        json!({"auths": {&host: {"auth": basic_auth(user, password)}}}).to_string(),
    )
    .unwrap();
    let output = run(
        "push with REGISTRY_AUTH_FILE",
        push("podman").env("REGISTRY_AUTH_FILE", &auth_file),
    );
    assert!(output.status.success(), "{}", stderr(&output));
    let output = run(
        "push with podman's runtime auth.json",
        push("podman-runtime").env("XDG_RUNTIME_DIR", &runtime_dir),
    );
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(
        std::fs::read_dir(&home).unwrap().count(),
        0,
        "the podman runs' HOME is not empty"
    );

    // Wrong stored credentials: the error says which source was used.
    let bad = docker_config(
        d,
        "docker-bad",
        json!({"auths": {&host: {"auth": basic_auth(user, wrong_stored)}}}),
    );
    let output = run(
        "push with wrong stored credentials",
        push("bad").env("DOCKER_CONFIG", &bad),
    );
    let err = last_error(&output);
    assert!(
        err.contains("401")
            && err.contains(&format!(
                "credentials from {}",
                bad.join("config.json").display()
            )),
        "{err}"
    );
}

#[test]
fn tls_registries_need_their_ca() {
    let Some(registry) = start(Setup::Tls) else {
        return;
    };
    let host = registry.host();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let bins = binaries(d, "tls");
    let err = fails(
        imgpack_in(d)
            .args(["build", "--push", &format!("{host}/team/app:v1")])
            .args(&bins),
    );
    assert!(
        err.contains("TLS") && err.contains("--registry-ca"),
        "{err}"
    );

    let ca = registry.ca_cert_path().unwrap();
    let output = ok(imgpack_in(d)
        .args([
            "build",
            "--push",
            &format!("{host}/team/app:v1"),
            "--registry-ca",
        ])
        .arg(&ca)
        .args(&bins));
    let pushed = last_line(&output);
    let cert_dir = registry.cert_dir().unwrap();
    let raw = raw_manifest(
        &format!("{host}/team/app:v1"),
        &["--cert-dir", cert_dir.to_str().unwrap()],
    );
    assert!(pushed.ends_with(&digest_of(&raw)), "{pushed}");

    // --insecure-registry skips verification for the host it names only: not for the same
    // address on another port, nor for another name of the same server.
    let port = host.rsplit_once(':').unwrap().1;
    for other in [refusing_host(), format!("localhost:{port}")] {
        let err = fails(
            imgpack_in(d)
                .args(["build", "--push", &format!("{host}/team/app:v2")])
                .args(["--insecure-registry", &other])
                .args(&bins),
        );
        assert!(err.contains("TLS"), "--insecure-registry {other}: {err}");
    }
    ok(imgpack_in(d)
        .args([
            "build",
            "-q",
            "--push",
            &format!("{host}/team/app:v2"),
            "--insecure-registry",
            &host,
        ])
        .args(&bins));
}

#[test]
fn bearer_tokens_are_fetched_per_scope_cached_and_refreshed() {
    let Some(registry) = start(Setup::Token) else {
        return;
    };
    let tokens = registry.token_server().unwrap();
    let host = registry.host();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let bins = binaries(d, "token");
    let config = docker_config(
        d,
        "docker",
        json!({"auths": {&host: {"auth": basic_auth(TOKEN_USER, TOKEN_PASSWORD)}}}),
    );
    let push = |repo: &str, config: &Path| {
        ok(imgpack_in(d)
            .env("DOCKER_CONFIG", config)
            .args(["build", "-q", "--push", &format!("{host}/{repo}:v1")])
            .args(&bins))
    };

    let before = tokens.requests();
    let pushed = last_line(&push("team/app", &config));
    let cached = tokens.requests() - before;
    // One scope (push on team/app), one token, however many uploads run at once.
    assert_eq!(
        cached, 1,
        "token requests for one push with long-lived tokens"
    );
    let creds = format!("{TOKEN_USER}:{TOKEN_PASSWORD}");
    let raw = raw_manifest(
        &format!("{host}/team/app:v1"),
        &["--tls-verify=false", "--creds", &creds],
    );
    assert!(pushed.ends_with(&digest_of(&raw)));

    // Tokens that expire at once are fetched again for every request.
    tokens.set_expires_in(1);
    let before = tokens.requests();
    push("team/refresh", &config);
    let refreshed = tokens.requests() - before;
    assert!(
        refreshed > cached + 5,
        "{refreshed} token requests with expiring tokens vs {cached}"
    );
    tokens.set_expires_in(300);

    // An identity token (docker login to an OAuth2 registry) is exchanged at the token endpoint.
    let identity = docker_config(
        d,
        "docker-identity",
        json!({"auths": {&host: {"identitytoken": tokens.refresh_token()}}}),
    );
    push("team/identity", &identity);

    // Wrong credentials: refused by the token service, with a clear line, after one token
    // request: a refusal is final, so it is neither retried nor asked again per blob.
    let wrong = "wr0ng-t0ken-pass";
    let bad = docker_config(
        d,
        "docker-bad",
        json!({"auths": {&host: {"auth": basic_auth(TOKEN_USER, wrong)}}}),
    );
    let before = tokens.requests();
    let output = imgpack_in(d)
        .env("DOCKER_CONFIG", &bad)
        .args(["build", "--push", &format!("{host}/team/app:v2")])
        .args(&bins)
        .output()
        .unwrap();
    assert_no_secrets(
        "push with wrong credentials",
        &output,
        &secret_forms(TOKEN_USER, wrong),
    );
    let err = last_error(&output);
    assert!(
        err.contains("token service refused") && err.contains("credentials from"),
        "{err}"
    );
    assert_eq!(
        tokens.requests() - before,
        1,
        "token requests for one push with wrong credentials"
    );
}

/// A blob at least this large takes long enough at a throttled proxy to be cut or killed
/// in the middle (every blob goes up as PATCH requests, then an empty PUT).
const LARGE_BLOB: u64 = 4 << 20;

/// A static amd64 binary of `size` bytes that gzip cannot shrink, so its app layer is about
/// as large.
fn incompressible_binary(path: &Path, size: usize, seed: u64) {
    write_static_elf(path, Arch::Amd64, &noise(size, seed));
}

/// The (digest, size) of layer `index` of the first manifest of a layout entry.
fn layer(layout: &Layout, tag: &str, index: usize) -> (String, u64) {
    let manifest = &layout.manifests(&layout.entry(tag))[0];
    let layer = &manifest["layers"][index];
    (
        layer["digest"].as_str().unwrap().to_owned(),
        layer["size"].as_u64().unwrap(),
    )
}

/// A proxy fault's path filter lives as long as the proxy; a test names a digest with this.
fn leak(text: &str) -> &'static str {
    Box::leak(text.to_owned().into_boxed_str())
}

#[test]
fn transient_faults_are_retried_and_the_pushed_image_is_intact() {
    let Some(registry) = start(Setup::Plain) else {
        return;
    };
    let proxy = Proxy::start(&registry.host());
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // amd64's app layer is large, so a cut PATCH is cut in the middle of a blob.
    incompressible_binary(&d.join("app-amd64"), 6 << 20, 4);
    write_static_elf(&d.join("app-arm64"), Arch::Arm64, b"arm64 faults");
    let bins = [
        "--binary",
        "linux/amd64=app-amd64",
        "--binary",
        "linux/arm64=app-arm64",
    ];
    // The same build without a registry first, to name the blobs the faults aim at.
    ok(plain_push(d)
        .args(["build", "-q", "--output", "oci:plain:v1"])
        .args(bins));
    let plain = Layout::new(d.join("plain"));
    let (certs, certs_size) = layer(&plain, "v1", 1);
    let (big, big_size) = layer(&plain, "v1", 3);
    assert!(
        certs_size > 20_000,
        "the certificates layer is {certs_size} bytes"
    );
    assert!(big_size > LARGE_BLOB, "the app layer is {big_size} bytes");
    let certs_hex = leak(certs.trim_start_matches("sha256:"));

    let post_500 = proxy.add_fault(Fault::Status {
        method: "POST",
        path_contains: "/blobs/uploads/",
        status: 500,
        retry_after: None,
        times: Some(2),
    });
    let head_429 = proxy.add_fault(Fault::Status {
        method: "HEAD",
        path_contains: "/blobs/",
        status: 429,
        retry_after: Some(1),
        times: Some(1),
    });
    // The closing (empty) PUT of the certificates fails: the blob goes up again.
    let cut_put = proxy.add_fault(Fault::Status {
        method: "PUT",
        path_contains: certs_hex,
        status: 503,
        retry_after: None,
        times: Some(1),
    });
    // The large blob's PATCH (the only body over 4 MiB: a PATCH's path names no digest), cut
    // after 1 MiB, in the middle of the blob.
    let cut_patch = proxy.add_fault_for_bodies_of(
        LARGE_BLOB,
        Fault::ResetDuringBody {
            method: "PATCH",
            path_contains: "/blobs/uploads/",
            after_bytes: 1 << 20,
            times: 1,
        },
    );
    let manifest_503 = proxy.add_fault(Fault::Status {
        method: "PUT",
        path_contains: "/manifests/",
        status: 503,
        retry_after: None,
        times: Some(1),
    });
    // From the layout: a build would stream the large layer while writing it, racing the faults.
    let output = ok(imgpack_in(d).args([
        "push",
        "oci:plain:v1",
        &format!("{}/team/app:v1", proxy.host()),
    ]));
    // Every fault was met, and each cost one retry.
    let served = [post_500, head_429, cut_put, cut_patch, manifest_503].map(|f| proxy.served(f));
    assert_eq!(served, [2, 1, 1, 1, 1], "{:?}", proxy.requests());
    let retries = stderr(&output).matches("trying again").count();
    assert_eq!(retries, 6, "{}", stderr(&output));
    // The failed blobs went up again in new sessions: the certificates finished by two PUTs,
    // the large blob sent whole twice (cut, then again) and finished by one, and two PATCHes
    // more than the seven blobs (the certificates' again, the large one's).
    assert_eq!(proxy.count("PUT", certs_hex), 2, "{:?}", proxy.requests());
    assert_eq!(
        proxy.count_bodies_of(big_size, "PATCH", "/blobs/uploads/"),
        2,
        "{:?}",
        proxy.requests()
    );
    assert_eq!(
        proxy.count("PATCH", "/blobs/uploads/"),
        9,
        "{:?}",
        proxy.requests()
    );
    assert_eq!(
        proxy.count("PUT", big.trim_start_matches("sha256:")),
        1,
        "{:?}",
        proxy.requests()
    );
    assert!(registry.has_blob("team/app", &big));

    let pulled = d.join("pulled");
    let copy = skopeo(&[
        "copy",
        "--all",
        "--src-tls-verify=false",
        &format!("docker://{}/team/app:v1", registry.host()),
        &format!("oci:{}:v1", pulled.display()),
    ]);
    assert!(
        copy.status.success(),
        "{}",
        String::from_utf8_lossy(&copy.stderr)
    );
    let theirs = Layout::new(&pulled);
    theirs.verified_blobs();
    assert_eq!(theirs.entry("v1")["digest"], plain.entry("v1")["digest"]);
    assert_eq!(
        content_digests(&theirs, "v1"),
        content_digests(&plain, "v1")
    );
}

/// Two platforms, amd64's app layer 32 MiB of noise (long enough to compress that its upload
/// starts before it is finished), arm64's small; built once without a registry to name the
/// blobs. Returns the build flags and the plain layout.
fn streaming_project(d: &Path) -> ([&'static str; 4], Layout) {
    incompressible_binary(&d.join("app-amd64"), 32 << 20, 21);
    write_static_elf(&d.join("app-arm64"), Arch::Arm64, b"arm64 streamed");
    let bins = [
        "--binary",
        "linux/amd64=app-amd64",
        "--binary",
        "linux/arm64=app-arm64",
    ];
    ok(plain_push(d)
        .args(["build", "-q", "--output", "oci:plain:v1"])
        .args(bins));
    (bins, Layout::new(d.join("plain")))
}

/// The image in the registry, copied out by skopeo, is the one built without a registry.
fn assert_pushed_image_is(registry: &Registry, repository: &str, plain: &Layout, d: &Path) {
    let pulled = d.join(format!("pulled-{}", repository.replace('/', "-")));
    let copy = skopeo(&[
        "copy",
        "--all",
        "--src-tls-verify=false",
        &format!("docker://{}/{repository}:v1", registry.host()),
        &format!("oci:{}:v1", pulled.display()),
    ]);
    assert!(
        copy.status.success(),
        "{}",
        String::from_utf8_lossy(&copy.stderr)
    );
    let theirs = Layout::new(&pulled);
    theirs.verified_blobs();
    assert_eq!(theirs.entry("v1")["digest"], plain.entry("v1")["digest"]);
    assert_eq!(content_digests(&theirs, "v1"), content_digests(plain, "v1"));
}

#[test]
fn a_layer_uploads_while_it_is_compressed_and_arrives_with_its_digest() {
    let Some(registry) = start(Setup::Plain) else {
        return;
    };
    let proxy = Proxy::start(&registry.host());
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (bins, plain) = streaming_project(d);
    let (big, big_size) = layer(&plain, "v1", 3);
    assert!(big_size > 30 << 20, "the app layer is {big_size} bytes");

    // --no-cache: the layout build above cached every layer, and a cached layer is not written.
    let output = ok(imgpack_in(d)
        .args([
            "build",
            "--no-cache",
            "--push",
            &format!("{}/team/stream:v1", proxy.host()),
        ])
        .args(bins));
    let err = stderr(&output);
    let short = &big["sha256:".len()..][..12];
    assert!(
        err.contains(&format!("sha256:{short} uploaded while it was written")),
        "{err}"
    );
    // One upload, closed by the one PUT that names the digest found at the end.
    assert_eq!(
        proxy.count("PUT", big.trim_start_matches("sha256:")),
        1,
        "{:?}",
        proxy.requests()
    );
    assert!(registry.has_blob("team/stream", &big));
    // Platforms pushed at once: the same index as the build without a registry, every blob intact.
    let digest = plain.entry("v1")["digest"].as_str().unwrap().to_owned();
    assert_eq!(
        last_line(&output),
        format!("{}/team/stream@{digest}", proxy.host())
    );
    assert_pushed_image_is(&registry, "team/stream", &plain, d);
}

#[test]
fn a_streamed_upload_cut_midway_goes_up_again_from_the_staged_blob() {
    let Some(registry) = start(Setup::Plain) else {
        return;
    };
    let proxy = Proxy::start(&registry.host());
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (bins, plain) = streaming_project(d);
    let (big, _) = layer(&plain, "v1", 3);

    // First a registry that never takes the large layer, streamed or not: the push fails and
    // no tag names the image.
    let refuse = proxy.add_fault(Fault::Status {
        method: "PATCH",
        path_contains: "/blobs/uploads/",
        status: 503,
        retry_after: None,
        times: None,
    });
    let err = fails(
        imgpack_in(d)
            .args(["build", "--no-cache", "--retry-timeout", "3"])
            .args(["--push", &format!("{}/team/cut:v1", proxy.host())])
            .args(bins),
    );
    assert!(err.contains("503"), "{err}");
    assert!(proxy.served(refuse) >= 2, "{:?}", proxy.requests());
    // arm64's manifest may be in (by digest: its blobs all are), but no tag and no index.
    assert_eq!(
        proxy.count("PUT", "/manifests/v1"),
        0,
        "{:?}",
        proxy.requests()
    );
    assert_eq!(registry.manifest_digest("team/cut", "v1"), None);
    let index = plain.entry("v1")["digest"].as_str().unwrap().to_owned();
    assert_eq!(proxy.count("PUT", leak(&format!("/manifests/{index}"))), 0);
    assert!(!registry.has_blob("team/cut", &big));

    // Then the upload that follows the layer as it is written (the first PATCH) is cut.
    proxy.clear_faults();
    proxy.reset_counts();
    let cut = proxy.add_fault(Fault::ResetDuringBody {
        method: "PATCH",
        path_contains: "/blobs/uploads/",
        after_bytes: 2 << 20,
        times: 1,
    });
    let output = ok(imgpack_in(d)
        .args(["build", "--no-cache"])
        .args(["--push", &format!("{}/team/cut:v1", proxy.host())])
        .args(bins));
    assert_eq!(proxy.served(cut), 1);
    let err = stderr(&output);
    assert!(err.contains("goes up again from the staged blob"), "{err}");
    // The finished blob went up again from the store; one PUT completed it.
    assert_eq!(
        proxy.count("PUT", big.trim_start_matches("sha256:")),
        1,
        "{:?}",
        proxy.requests()
    );
    assert_pushed_image_is(&registry, "team/cut", &plain, d);
}

#[test]
fn a_registry_that_never_recovers_fails_in_bounded_time_and_writes_no_tag() {
    let Some(registry) = start(Setup::Plain) else {
        return;
    };
    let proxy = Proxy::start(&registry.host());
    proxy.add_fault(Fault::Status {
        method: "POST",
        path_contains: "/blobs/uploads/",
        status: 503,
        retry_after: None,
        times: None,
    });
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let bins = binaries(d, "down");
    // Built first, so that only the push is timed.
    ok(imgpack_in(d)
        .args(["build", "-q", "--output", "oci:layout:v1"])
        .args(&bins));
    let started = Instant::now();
    let err = fails(imgpack_in(d).args([
        "push",
        "--retry-timeout",
        "3",
        "oci:layout:v1",
        &format!("{}/team/app:v1", proxy.host()),
    ]));
    let took = started.elapsed();
    // Every request is answered at once here (an injected 503), so no try waits out a request
    // deadline: the push gives up 3 s after its first refusal, plus the time to start and to
    // read the layout. The bound leaves a loaded machine 7 s for that; the default timeout
    // would still be backing off (8 tries over at least 25 s).
    assert!(
        took < Duration::from_secs(3 + 7),
        "gave up only after {took:?}: {err}"
    );
    // It stopped on time, not on running out of tries.
    let tries: usize = err
        .split("failed after ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|number| number.parse().ok())
        .unwrap_or_else(|| panic!("no try count in: {err}"));
    assert!((2..8).contains(&tries), "{tries} tries: {err}");
    assert!(err.contains("tries") && err.contains("503"), "{err}");
    assert_eq!(
        proxy.count("PUT", "/manifests/"),
        0,
        "a manifest or tag was written"
    );
    let inspect = skopeo(&[
        "inspect",
        "--raw",
        "--tls-verify=false",
        &format!("docker://{}/team/app:v1", registry.host()),
    ]);
    assert!(
        !inspect.status.success(),
        "the tag exists although the push failed"
    );
}

#[test]
fn a_push_killed_mid_upload_completes_when_run_again() {
    let Some(registry) = start(Setup::Plain) else {
        return;
    };
    let proxy = Proxy::start(&registry.host());
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // 6 MiB that gzip cannot shrink: at 1 MB/s the app layer takes six seconds to go up,
    // plenty of time to kill it in.
    incompressible_binary(&d.join("big"), 6 << 20, 7);
    let target = format!("{}/team/big:v1", proxy.host());
    let build = [
        "build",
        "-q",
        "--binary",
        "linux/amd64=big",
        "--output",
        "oci:layout:v1",
    ];
    let args = [&build[..], &["--push", &target]].concat();
    // Built first without a registry, to know the large layer's digest.
    ok(imgpack_in(d).args(build));
    let (big, big_size) = layer(&Layout::new(d.join("layout")), "v1", 3);
    assert!(big_size > LARGE_BLOB, "the app layer is {big_size} bytes");

    proxy.add_fault(Fault::Throttle {
        method: "PATCH",
        path_contains: "/blobs/uploads/",
        bytes_per_sec: 1_000_000,
    });
    let mut child = imgpack_in(d)
        .args(&args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Killed once the large blob's upload is under way at the registry itself: its PATCH (the
    // one body as large as the blob) went through the proxy, and the registry's upload session
    // holds a megabyte of it. The other blobs are a few KiB at most, so this is the large one.
    let deadline = Instant::now() + Duration::from_secs(120);
    while proxy.count_bodies_of(big_size, "PATCH", "/blobs/uploads/") == 0
        || registry.largest_upload("team/big") < 1 << 20
    {
        assert!(
            child.try_wait().unwrap().is_none(),
            "the push ended before the large blob was under way"
        );
        assert!(
            Instant::now() < deadline,
            "the large blob's upload never got under way: {:?}, {} bytes at the registry",
            proxy.requests(),
            registry.largest_upload("team/big")
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        child.try_wait().unwrap().is_none(),
        "the push ended before it could be killed"
    );
    child.kill().unwrap();
    child.wait().unwrap();
    let started = registry.largest_upload("team/big");
    assert!(
        (1 << 20..big_size).contains(&started),
        "the registry holds {started} bytes of the {big_size}-byte blob"
    );
    // Killed during the large blob: it never arrived, and no tag names an incomplete image.
    assert!(
        !registry.has_blob("team/big", &big),
        "the large blob arrived whole"
    );
    assert_eq!(registry.manifest_digest("team/big", "v1"), None);

    // Run again: it completes, sending the large blob once more, whole.
    proxy.clear_faults();
    proxy.reset_counts();
    let output = ok(imgpack_in(d).args(&args));
    let digest = Layout::new(d.join("layout")).entry("v1")["digest"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        last_line(&output),
        format!("{}/team/big@{digest}", proxy.host())
    );
    assert_eq!(
        proxy.count("PUT", big.trim_start_matches("sha256:")),
        1,
        "{:?}",
        proxy.requests()
    );
    assert!(registry.has_blob("team/big", &big));
    let direct = format!("{}/team/big:v1", registry.host());
    assert_eq!(
        digest_of(&raw_manifest(&direct, &["--tls-verify=false"])),
        digest
    );
}

#[test]
fn push_errors_are_one_clear_line() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let bins = binaries(d, "errors");
    let digest_ref = format!("{}/app@sha256:{}", refusing_host(), "a".repeat(64));
    let err = fails(
        imgpack_in(d)
            .args(["build", "--push", &digest_ref])
            .args(&bins),
    );
    assert!(err.contains("names a digest"), "{err}");
    // A port that was just bound and closed: nothing listens there.
    let down = refusing_host();
    let err = fails(
        imgpack_in(d)
            .args(["build", "--push", &format!("{down}/team/app:v1")])
            .args(&bins),
    );
    assert!(
        err.contains(&format!("cannot connect to registry {down}")) && err.contains("refused"),
        "{err}"
    );
    let err = fails(
        imgpack_in(d)
            .args(["build", "--push", &format!("{down}/team/app:v1")])
            .args(["--tag", "bad tag"])
            .args(&bins),
    );
    assert!(err.contains("bad tag"), "{err}");
    let err = fails(
        imgpack_in(d)
            .args(["build", "--output", "oci:out", "--tag", "v2"])
            .args(&bins),
    );
    assert!(err.contains("--tag applies to a push"), "{err}");
    let err = fails(imgpack_in(d).args(["push", "oci:missing:v1", &format!("{down}/team/app:v1")]));
    assert!(err.contains("not an OCI layout"), "{err}");

    // A registry that rejects the manifest: the line names the media type and the registry's code.
    let Some(registry) = start(Setup::Plain) else {
        return;
    };
    let proxy = Proxy::start(&registry.host());
    proxy.add_fault(Fault::Status {
        method: "PUT",
        path_contains: "/manifests/",
        status: 415,
        retry_after: None,
        times: None,
    });
    let err = fails(
        imgpack_in(d)
            .args(["build", "--push", &format!("{}/team/app:v1", proxy.host())])
            .args(&bins),
    );
    assert!(
        err.contains("415") && err.contains("application/vnd.oci.image"),
        "{err}"
    );
}
