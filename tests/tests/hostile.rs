//! imgpack against a hostile fake registry (tests/src/fake_registry.rs): credentials never
//! leave the registry's origin or HTTPS, an endless manifest costs bounded memory, silent,
//! dribbling and stalling registries end a push within `--retry-timeout` plus a minute with
//! a line naming the registry, ambiguous or mislabelled manifests are refused, and odd
//! `OCI-Chunk-Min-Length` headers never cause tiny PATCHes. These need no external tool
//! except skopeo for reading a pushed image back and GNU time for imgpack's own peak memory.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use imgpack_e2e::fake_registry::{FakeRegistry, Hostility, Recorder};
use imgpack_e2e::*;
use serde_json::json;

const USER: &str = "ci";
const PASSWORD: &str = "s3cret-for-the-fake";

/// A project dir with one synthetic amd64 binary `app` (payload `payload`).
fn project(payload: &[u8]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    write_static_elf(&dir.path().join("app"), Arch::Amd64, payload);
    dir
}

/// imgpack in `dir` with a docker config holding the fake's credentials and its own cache.
fn imgpack_in(dir: &Path, registry: &str) -> Command {
    let config = dir.join("docker");
    std::fs::create_dir_all(&config).unwrap();
    let auth = base64_auth(USER, PASSWORD);
    std::fs::write(
        config.join("config.json"),
        json!({"auths": {registry: {"auth": auth}}}).to_string(),
    )
    .unwrap();
    let mut command = imgpack();
    command
        .current_dir(dir)
        .env("DOCKER_CONFIG", &config)
        .env("IMGPACK_CACHE_DIR", dir.join("cache"));
    command
}

fn base64_auth(user: &str, password: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
}

/// The last line of a failed run (progress and retry lines may come before it), an error.
fn last_error_line(output: &Output) -> String {
    assert!(
        !output.status.success(),
        "it succeeded:\n{}",
        stderr(output)
    );
    let err = stderr(output);
    assert!(!err.contains("panicked"), "{err}");
    let last = err.trim_end().lines().last().unwrap_or_default().to_owned();
    assert!(last.starts_with("error: "), "{err}");
    last
}

fn push_args(target: &str) -> Vec<String> {
    ["build", "--binary", "linux/amd64=app", "--push", target]
        .map(String::from)
        .to_vec()
}

#[test]
fn credentials_never_follow_a_location_to_another_origin() {
    let elsewhere = Recorder::start();
    let registry = FakeRegistry::start(Hostility {
        basic_auth: Some((USER.into(), PASSWORD.into())),
        upload_location: Some(format!(
            "{}/v2/team/app/blobs/uploads/stolen",
            elsewhere.url()
        )),
        ..Hostility::default()
    });
    let dir = project(b"foreign location");
    let host = registry.host();
    let output = imgpack_in(dir.path(), &host)
        .args(push_args(&format!("{host}/team/app:v1")))
        .output()
        .unwrap();
    let err = last_error_line(&output);
    assert!(err.contains("401"), "{err}");
    // The registry got the credentials; the other origin got requests, never an Authorization.
    assert!(registry.seen().iter().any(|s| s.authorization.is_some()));
    let stolen = elsewhere.seen();
    assert!(!stolen.is_empty(), "imgpack never followed the Location");
    for seen in &stolen {
        assert_eq!(
            seen.authorization, None,
            "{} {} carried credentials",
            seen.method, seen.target
        );
    }
    assert!(!stderr(&output).contains(PASSWORD));
}

/// A TLS fake registry and a --registry-ca file for it.
fn tls_registry(dir: &Path, hostility: Hostility) -> (FakeRegistry, String) {
    let registry = FakeRegistry::start(Hostility {
        tls: true,
        ..hostility
    });
    let ca = dir.join("ca.pem");
    std::fs::write(&ca, registry.ca_pem().unwrap()).unwrap();
    (registry, ca.display().to_string())
}

/// `build --push HOST/team/app:v1` trusting the CA in `ca`.
fn push_with_ca(dir: &Path, host: &str, ca: &str) -> Output {
    imgpack_in(dir, host)
        .args(push_args(&format!("{host}/team/app:v1")))
        .args(["--registry-ca", ca])
        .output()
        .unwrap()
}

#[test]
fn an_https_registry_is_never_continued_over_plain_http() {
    let dir = project(b"downgrade");
    // First a working TLS registry: the CA file is right and the push succeeds.
    let (registry, ca) = tls_registry(dir.path(), Hostility::default());
    let host = registry.host();
    let output = push_with_ca(dir.path(), &host, &ca);
    assert!(output.status.success(), "{}", stderr(&output));

    // An upload Location on the same host and port, but http://: refused before it is sent.
    let (registry, ca) = tls_registry(
        dir.path(),
        Hostility {
            basic_auth: Some((USER.into(), PASSWORD.into())),
            ..Hostility::default()
        },
    );
    let host = registry.host();
    registry
        .set(|h| h.upload_location = Some(format!("http://{host}/v2/team/app/blobs/uploads/1")));
    let output = push_with_ca(dir.path(), &host, &ca);
    let err = last_error_line(&output);
    assert!(err.contains("not HTTPS"), "{err}");
    // A loopback registry is first asked `GET /v2/` over plain HTTP, with no credentials; a TLS
    // one refuses that, and nothing else may ever go over plain HTTP.
    let plain: Vec<_> = registry
        .seen()
        .into_iter()
        .filter(|s| s.plain_on_tls)
        .collect();
    assert!(
        plain
            .iter()
            .all(|s| s.method == "GET" && s.target == "/v2/" && s.authorization.is_none()),
        "a request went over plain HTTP: {plain:?}"
    );

    // A token realm over plain HTTP for an HTTPS registry: refused, the realm never asked.
    let realm = Recorder::start();
    let (registry, ca) = tls_registry(
        dir.path(),
        Hostility {
            bearer_realm: Some(format!("{}/token", realm.url())),
            ..Hostility::default()
        },
    );
    let host = registry.host();
    let output = push_with_ca(dir.path(), &host, &ca);
    let err = last_error_line(&output);
    assert!(err.contains("over plain HTTP"), "{err}");
    assert!(
        realm.seen().is_empty(),
        "the plain-HTTP realm was asked for a token"
    );
}

#[test]
fn an_endless_manifest_fails_with_bounded_memory() {
    let registry = FakeRegistry::start(Hostility {
        endless_manifests: true,
        ..Hostility::default()
    });
    let dir = project(b"endless");
    let host = registry.host();
    // The peak of imgpack alone: this process, whose fake registry holds what it serves, is
    // not counted (see PeakRss).
    let Some(mut measured) = PeakRss::new(
        imgpack_in(dir.path(), &host)
            .args(["build", "--binary", "linux/amd64=app", "-o", "oci:out"])
            .args(["--base", &format!("{host}/team/base:v1")]),
    ) else {
        return;
    };
    let started = Instant::now();
    let output = measured
        .command()
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    let (code, err, peak_kib) = (output.status.code(), stderr(&output), measured.peak_kib());
    eprintln!(
        "endless manifest: exit {code:?}, peak RSS {peak_kib} KiB, {:.1}s",
        started.elapsed().as_secs_f64()
    );
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("larger than 4 MiB"), "{err}");
    assert!(peak_kib < 64 * 1024, "peak RSS {peak_kib} KiB");
    assert!(!dir.path().join("out").exists(), "an output was written");
}

/// Runs `command`, returning its output and how long it took.
fn timed(command: &mut Command) -> (Output, Duration) {
    let started = Instant::now();
    let output = command.output().unwrap();
    (output, started.elapsed())
}

/// `--retry-timeout` plus a minute: the bound issue 8 sets, with a little slack for a busy CI.
fn bound(retry_timeout: u64) -> Duration {
    Duration::from_secs(retry_timeout + 60 + 10)
}

#[test]
fn a_silent_registry_ends_push_build_and_login_in_bounded_time() {
    let registry = FakeRegistry::start(Hostility {
        silent: true,
        ..Hostility::default()
    });
    let host = registry.host();
    let dir = project(b"silent");
    let d = dir.path().to_owned();
    ok_layout(&d);
    let target = format!("{host}/team/app:v1");
    // Each command is made here, on the test's thread (whose name keys its cache), and run on
    // a thread of its own, all three at once.
    let mut build_push = imgpack_in(&d, &host);
    build_push
        .args(push_args(&target))
        .args(["--retry-timeout", "5"]);
    let mut push = imgpack_in(&d, &host);
    push.args(["push", "oci:layout:v1", &target, "--retry-timeout", "5"]);
    let mut login = imgpack_in(&d, &host);
    login
        .args(["login", &host, "-u", USER, "--password-stdin"])
        .stdin(std::fs::File::open(write_password(&d)).unwrap());
    let runs: Vec<(&str, std::thread::JoinHandle<(Output, Duration)>)> = [
        ("build --push", build_push),
        ("push", push),
        ("login", login),
    ]
    .into_iter()
    .map(|(name, mut command)| (name, std::thread::spawn(move || timed(&mut command))))
    .collect();
    for (name, run) in runs {
        let (output, took) = run.join().unwrap();
        let err = last_error_line(&output);
        eprintln!(
            "silent registry, {name}: gave up after {:.1}s: {err}",
            took.as_secs_f64()
        );
        assert!(took < bound(20), "{name} took {took:?}");
        assert!(
            err.contains(&host) && err.contains("stopped answering"),
            "{name}: {err}"
        );
    }
}

fn write_password(dir: &Path) -> std::path::PathBuf {
    let path = dir.join("password.txt");
    std::fs::write(&path, PASSWORD).unwrap();
    path
}

/// Writes the project's image to oci:layout:v1, for `imgpack push`.
fn ok_layout(dir: &Path) {
    let output = imgpack()
        .current_dir(dir)
        .args([
            "build",
            "--binary",
            "linux/amd64=app",
            "-o",
            "oci:layout:v1",
        ])
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", stderr(&output));
}

#[test]
fn dribbling_and_stalling_registries_end_the_push_in_bounded_time() {
    // Every answer after the ping arrives one byte per second.
    let dribbling = FakeRegistry::start(Hostility {
        dribble: Some(Duration::from_secs(1)),
        ..Hostility::default()
    });
    // Uploads are never read: 6 MB goes up as a PATCH that stops moving.
    let stalling = FakeRegistry::start(Hostility {
        stall_uploads: true,
        ..Hostility::default()
    });
    let dir = tempfile::tempdir().unwrap();
    write_static_elf(&dir.path().join("app"), Arch::Amd64, &noise(6_000_000, 1));
    let runs: Vec<_> = [&dribbling, &stalling]
        .into_iter()
        .map(|registry| {
            let host = registry.host();
            let mut command = imgpack_in(dir.path(), &host);
            command
                .args(push_args(&format!("{host}/team/app:v1")))
                .args(["--retry-timeout", "10"]);
            std::thread::spawn(move || {
                let (output, took) = timed(&mut command);
                (host, output, took)
            })
        })
        .collect();
    for run in runs {
        let (host, output, took) = run.join().unwrap();
        let err = last_error_line(&output);
        eprintln!("gave up on {host} after {:.1}s: {err}", took.as_secs_f64());
        assert!(took < bound(10), "{took:?}");
        assert!(
            err.contains(&host) && err.contains("stopped answering"),
            "{err}"
        );
    }
    // The push reached the stalling registry's uploads (a PATCH arrived and was never read), so
    // the line above is about the stall, not about anything that failed before it.
    let patches = stalling.count("PATCH", "/blobs/uploads/");
    assert!(
        patches >= 1,
        "no upload reached the stalling registry: {:?}",
        stalling
            .seen()
            .iter()
            .map(|seen| format!("{} {}", seen.method, seen.target))
            .collect::<Vec<_>>()
    );
    assert_eq!(
        stalling.count("PUT", "/manifests/"),
        0,
        "a manifest was put"
    );
    assert_eq!(
        dribbling.count("PUT", "/manifests/"),
        0,
        "a manifest was put"
    );
}

/// A base image on the fake registry: one layer, a config, and `manifest` built from them.
struct FakeBase {
    config: serde_json::Value,
    layer: serde_json::Value,
}

fn fake_base(registry: &FakeRegistry) -> FakeBase {
    let tar = {
        let mut builder = tar::Builder::new(Vec::new());
        let mut header = tar::Header::new_gnu();
        header.set_size(2);
        header.set_mode(0o644);
        builder
            .append_data(&mut header, "etc/hostname", &b"x\n"[..])
            .unwrap();
        builder.into_inner().unwrap()
    };
    let diff_id = imgpack_blob::Digest::of_bytes(&tar).to_string();
    let layer_digest = registry.put_blob(&tar);
    let config = json!({"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": [diff_id]}, "config": {}});
    let config_bytes = config.to_string().into_bytes();
    let config_digest = registry.put_blob(&config_bytes);
    FakeBase {
        config: json!({"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": config_bytes.len()}),
        layer: json!({"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": layer_digest, "size": tar.len()}),
    }
}

#[test]
fn ambiguous_and_mislabelled_base_manifests_are_refused() {
    let registry = FakeRegistry::start(Hostility::default());
    let host = registry.host();
    let base = fake_base(&registry);
    let manifest_type = "application/vnd.oci.image.manifest.v1+json";
    let index_type = "application/vnd.oci.image.index.v1+json";
    let good = json!({"schemaVersion": 2, "mediaType": manifest_type, "config": base.config, "layers": [base.layer]});
    let mut both = good.clone();
    both["manifests"] = json!([]);
    let mut zip = good.clone();
    zip["layers"][0]["mediaType"] = json!("application/zip");
    let cases = [
        ("good", manifest_type, good.clone(), None),
        (
            "both",
            manifest_type,
            both,
            Some("both an index and a manifest"),
        ),
        ("mislabelled", index_type, good, Some("must agree")),
        ("zip", manifest_type, zip, Some("cannot read")),
    ];
    for (tag, content_type, document, expected) in cases {
        registry.put_manifest(
            "team/base",
            tag,
            content_type,
            document.to_string().as_bytes(),
        );
        let dir = project(b"base");
        let output = imgpack_in(dir.path(), &host)
            .args(["build", "--binary", "linux/amd64=app", "-o", "oci:out"])
            .args(["--base", &format!("{host}/team/base:{tag}")])
            .output()
            .unwrap();
        match expected {
            None => assert!(output.status.success(), "{tag}: {}", stderr(&output)),
            Some(expected) => {
                let err = last_error_line(&output);
                assert!(err.contains(expected), "{tag}: {err}");
                assert!(
                    !dir.path().join("out").exists(),
                    "{tag}: an output was written"
                );
            }
        }
    }
}

#[test]
fn a_base_whose_config_does_not_match_its_layers_is_refused() {
    let registry = FakeRegistry::start(Hostility::default());
    let host = registry.host();
    let base = fake_base(&registry);
    // A config claiming another diff ID for the same layer.
    let config = json!({"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": [format!("sha256:{}", "0".repeat(64))]}});
    let bytes = config.to_string().into_bytes();
    let digest = registry.put_blob(&bytes);
    let document = json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": digest, "size": bytes.len()},
        "layers": [base.layer]});
    registry.put_manifest(
        "team/base",
        "v1",
        "application/vnd.oci.image.manifest.v1+json",
        document.to_string().as_bytes(),
    );
    let dir = project(b"diff ids");
    let output = imgpack_in(dir.path(), &host)
        .args(["build", "--binary", "linux/amd64=app", "-o", "oci:out"])
        .args(["--base", &format!("{host}/team/base:v1")])
        .output()
        .unwrap();
    let err = last_error_line(&output);
    assert!(
        err.contains("uncompresses to") && err.contains("inconsistent"),
        "{err}"
    );
}

#[test]
fn odd_chunk_minimums_never_cause_tiny_patches() {
    if !have_tool("skopeo") {
        return;
    }
    let registry = FakeRegistry::start(Hostility::default());
    let host = registry.host();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    for (round, minimum) in ["1", "abc", "99999999999999999999999", "0"]
        .into_iter()
        .enumerate()
    {
        registry.set(|h| h.chunk_min_length = Some(minimum.to_owned()));
        // 5 MB that gzip cannot shrink: a blob that chunking could cut into many PATCHes.
        write_static_elf(
            &d.join("app"),
            Arch::Amd64,
            &noise(5_000_000, 100 + 2 * round as u64),
        );
        let patches_before = registry.count("PATCH", "/blobs/uploads/");
        let uploads_before = registry.count("PUT", "digest=");
        let target = format!("{host}/team/chunks:v{round}");
        let output = imgpack_in(d, &host)
            .args(push_args(&target))
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "minimum {minimum}: {}",
            stderr(&output)
        );
        // Every blob goes up as PATCH then PUT: one PATCH per uploaded blob, the large one too.
        let patches = registry.count("PATCH", "/blobs/uploads/") - patches_before;
        let uploads = registry.count("PUT", "digest=") - uploads_before;
        assert!(uploads >= 2, "minimum {minimum}: {uploads} uploads");
        assert_eq!(
            patches, uploads,
            "minimum {minimum}: {patches} PATCHes for {uploads} blobs"
        );
        let printed = String::from_utf8_lossy(&output.stdout).trim().to_owned();
        let inspect = Command::new("skopeo")
            .args([
                "inspect",
                "--raw",
                "--tls-verify=false",
                &format!("docker://{target}"),
            ])
            .output()
            .unwrap();
        assert!(
            inspect.status.success(),
            "{}",
            String::from_utf8_lossy(&inspect.stderr)
        );
        let digest = imgpack_blob::Digest::of_bytes(&inspect.stdout).to_string();
        assert!(printed.ends_with(&digest), "{printed} vs {digest}");
    }
}
