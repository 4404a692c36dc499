//! The registry tests that make sense on any registry, run against two independent
//! implementations on 127.0.0.1, both with basic auth: distribution 2.8 (the reference) and
//! crates.io container-registry 0.3.1. Push, re-push with no uploads, pull back with skopeo,
//! a base image pulled, a two-platform index, login, a wrong password and no credentials.
//! Where the two differ (container-registry keeps no manifests by digest and no indexes), the
//! test says what imgpack does instead. Under IMGPACK_E2E=1 a missing docker-registry,
//! container-registry or skopeo fails these tests.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use imgpack_e2e::proxy::Proxy;
use imgpack_e2e::registry::{Implementation, Registry, Setup};
use imgpack_e2e::*;
use serde_json::json;

const USER: &str = "interop-bot";
const PASSWORD: &str = "interop-Pa55word";
const WRONG_PASSWORD: &str = "not-the-Pa55word";

/// Each implementation, started with basic auth for [`USER`]; None (skip) when a tool is
/// missing outside IMGPACK_E2E=1.
fn registries() -> Option<Vec<Registry>> {
    if !have_tool("skopeo") {
        return None;
    }
    Implementation::ALL
        .into_iter()
        .map(|implementation| {
            Registry::start_as(
                implementation,
                Setup::Basic {
                    user: USER.into(),
                    password: PASSWORD.into(),
                },
            )
        })
        .collect()
}

/// A docker config dir `name` holding `password` for `host`.
fn docker_config(dir: &Path, name: &str, host: &str, password: &str) -> PathBuf {
    use base64::Engine as _;
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("{USER}:{password}"));
    let config = dir.join(name);
    std::fs::create_dir_all(&config).unwrap();
    std::fs::write(
        config.join("config.json"),
        json!({ "auths": { host: { "auth": auth } } }).to_string(),
    )
    .unwrap();
    config
}

/// `imgpack build` without SBOM or provenance: the tests count exactly which
/// blobs go up (attachments are tests/tests/attest.rs's).
fn build_in(dir: &Path, config: Option<&Path>) -> Command {
    let mut command = imgpack_in(dir, config);
    command.args(["build", "--sbom", "none", "--provenance", "false"]);
    command
}

/// imgpack in `dir` with no credentials but those of `config` (None: none at all).
fn imgpack_in(dir: &Path, config: Option<&Path>) -> Command {
    let home = dir.join("home");
    std::fs::create_dir_all(&home).unwrap();
    let mut command = imgpack();
    command
        .current_dir(dir)
        .env("HOME", &home)
        .env_remove("DOCKER_CONFIG")
        .env_remove("REGISTRY_AUTH_FILE")
        .env_remove("XDG_RUNTIME_DIR")
        .env_remove("XDG_CONFIG_HOME");
    if let Some(config) = config {
        command.env("DOCKER_CONFIG", config);
    }
    command
}

fn ok(command: &mut Command) -> Output {
    run_expect(command, true)
}

fn skopeo(args: &[&str]) -> Output {
    Command::new("skopeo")
        .args(args)
        .output()
        .expect("skopeo runs")
}

fn skopeo_ok(args: &[&str]) -> Output {
    let output = skopeo(args);
    assert!(
        output.status.success(),
        "skopeo {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

fn creds() -> String {
    format!("{USER}:{PASSWORD}")
}

/// The digests in `?digest=` of the PUTs that completed blob uploads, as the proxy saw them.
fn uploaded(proxy: &Proxy) -> BTreeSet<String> {
    proxy
        .requests()
        .into_iter()
        .filter(|(method, target)| method == "PUT" && target.contains("digest="))
        .filter_map(|(_, target)| {
            let digest = target.split("digest=").nth(1)?;
            Some(digest.split('&').next()?.replace("%3A", ":"))
        })
        .collect()
}

/// Layer and config digests of every manifest of a layout entry.
fn blobs_of(layout: &Layout, tag: &str) -> BTreeSet<String> {
    layout
        .manifests(&layout.entry(tag))
        .iter()
        .flat_map(|manifest| {
            let layers = manifest["layers"].as_array().unwrap().clone();
            layers
                .into_iter()
                .map(|layer| layer["digest"].as_str().unwrap().to_owned())
                .chain([manifest["config"]["digest"].as_str().unwrap().to_owned()])
        })
        .collect()
}

#[test]
fn push_re_push_and_pull_back_with_skopeo_on_both_registries() {
    let Some(registries) = registries() else {
        return;
    };
    for registry in &registries {
        let name = registry.implementation().name();
        let proxy = Proxy::start(&registry.host());
        let host = proxy.host();
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let config = docker_config(d, "docker", &host, PASSWORD);
        write_static_elf(&d.join("app"), Arch::Amd64, name.as_bytes());
        let push = |tag: &str| {
            let mut command = imgpack_in(d, Some(&config));
            command.args([
                "build",
                "--sbom",
                "none",
                "--provenance",
                "false",
                "-q",
                "--binary",
                "linux/amd64=app",
                "--output",
                &format!("oci:layout:{tag}"),
                "--push",
                &format!("{host}/team/app:{tag}"),
            ]);
            command
        };
        let output = ok(&mut push("v1"));
        let layout = Layout::new(d.join("layout"));
        let digest = layout.entry("v1")["digest"].as_str().unwrap().to_owned();
        assert_eq!(
            String::from_utf8_lossy(&output.stdout).trim(),
            format!("{host}/team/app@{digest}"),
            "{name}"
        );
        let blobs = blobs_of(&layout, "v1");
        assert_eq!(uploaded(&proxy), blobs, "{name}: {:?}", proxy.requests());
        assert_eq!(
            registry.manifest_digest("team/app", "v1").as_deref(),
            Some(digest.as_str()),
            "{name}"
        );
        // imgpack never needs the optional tags/list endpoint (container-registry has none).
        assert_eq!(proxy.count("GET", "/tags/list"), 0, "{name}");

        // The same image again: every blob is found, nothing goes up.
        proxy.reset_counts();
        ok(&mut push("v1"));
        assert!(
            uploaded(&proxy).is_empty(),
            "{name}: {:?}",
            proxy.requests()
        );
        assert_eq!(proxy.count("POST", "/blobs/uploads/"), 0, "{name}");
        assert_eq!(proxy.count("PATCH", ""), 0, "{name}");

        // skopeo reads back exactly what imgpack wrote.
        let pulled = d.join("pulled");
        skopeo_ok(&[
            "copy",
            "--src-tls-verify=false",
            "--src-creds",
            &creds(),
            &format!("docker://{}/team/app:v1", registry.host()),
            &format!("oci:{}:v1", pulled.display()),
        ]);
        let theirs = Layout::new(&pulled);
        theirs.verified_blobs();
        assert_eq!(theirs.entry("v1")["digest"], digest.as_str(), "{name}");
        assert_eq!(blobs_of(&theirs, "v1"), blobs, "{name}");

        // A one-part repository name: distribution takes it; container-registry routes only
        // two-part names, and its 404 is explained in one line.
        let mut one_part = build_in(d, Some(&config));
        one_part.args(["-q", "--binary", "linux/amd64=app"]);
        one_part.args(["--push", &format!("{host}/app:v1")]);
        match registry.implementation() {
            Implementation::Distribution => drop(ok(&mut one_part)),
            Implementation::ContainerRegistry => {
                let err = one_error_line(&mut one_part);
                assert!(
                    err.contains("404") && err.contains("it has no repository app to push to"),
                    "{name}: {err}"
                );
            }
        }
    }
}

#[test]
fn a_base_image_is_pulled_from_both_registries() {
    let Some(registries) = registries() else {
        return;
    };
    for registry in &registries {
        let name = registry.implementation().name();
        let host = registry.host();
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        // Each registry's builds have a cache of their own: the same base bytes pulled from the
        // first registry must not serve the second one's pull.
        let cache = d.join("cache");
        let config = docker_config(d, "docker", &host, PASSWORD);
        write_static_elf(&d.join("base-app"), Arch::Amd64, b"the base's own binary");
        ok(build_in(d, Some(&config))
            .env("IMGPACK_CACHE_DIR", &cache)
            .args([
                "-q",
                "--binary",
                "linux/amd64=base-app",
                "--output",
                "oci:base-layout:v1",
                "--push",
                &format!("{host}/base/tools:v1"),
            ]));
        let base = Layout::new(d.join("base-layout"));
        let base_manifest = &base.manifests(&base.entry("v1"))[0];

        // Pulled through a counting proxy: every base blob must come from this registry.
        let proxy = Proxy::start(&host);
        let proxy_config = docker_config(d, "docker-proxy", &proxy.host(), PASSWORD);
        write_static_elf(&d.join("app"), Arch::Amd64, b"the app on the base");
        ok(build_in(d, Some(&proxy_config))
            .env("IMGPACK_CACHE_DIR", &cache)
            .args([
                "-q",
                "--binary",
                "linux/amd64=app",
                "--base",
                &format!("{}/base/tools:v1", proxy.host()),
                "--output",
                "oci:layout:v1",
            ]));
        let base_blobs: Vec<&str> = base_manifest["layers"]
            .as_array()
            .unwrap()
            .iter()
            .chain([&base_manifest["config"]])
            .map(|blob| blob["digest"].as_str().unwrap())
            .collect();
        for digest in &base_blobs {
            assert_eq!(
                proxy.count("GET", &format!("/v2/base/tools/blobs/{digest}")),
                1,
                "{name}: base blob {digest} was not fetched once from the registry: {:?}",
                proxy.requests()
            );
        }
        let layout = Layout::new(d.join("layout"));
        layout.verified_blobs();
        let manifest = &layout.manifests(&layout.entry("v1"))[0];
        let base_layers = base_manifest["layers"].as_array().unwrap();
        let layers = manifest["layers"].as_array().unwrap();
        assert_eq!(layers.len(), base_layers.len() + 1, "{name}: {manifest}");
        assert_eq!(
            &layers[..base_layers.len()],
            base_layers.as_slice(),
            "{name}"
        );
        assert_eq!(
            manifest["annotations"]["org.opencontainers.image.base.digest"],
            base.entry("v1")["digest"],
            "{name}"
        );
    }
}

#[test]
fn a_two_platform_index_is_pushed_or_refused_before_any_tag() {
    let Some(registries) = registries() else {
        return;
    };
    for registry in &registries {
        let name = registry.implementation().name();
        let host = registry.host();
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let config = docker_config(d, "docker", &host, PASSWORD);
        write_static_elf(&d.join("app-amd64"), Arch::Amd64, b"amd64 index");
        write_static_elf(&d.join("app-arm64"), Arch::Arm64, b"arm64 index");
        let target = format!("{host}/team/multi:v1");
        let output = build_in(d, Some(&config))
            .args(["-q", "--output", "oci:layout:v1", "--push", &target])
            .args(["--binary", "linux/amd64=app-amd64"])
            .args(["--binary", "linux/arm64=app-arm64"])
            .output()
            .unwrap();
        let layout = Layout::new(d.join("layout"));
        let digest = layout.entry("v1")["digest"].as_str().unwrap().to_owned();
        match registry.implementation() {
            Implementation::Distribution => {
                assert!(output.status.success(), "{name}: {}", stderr(&output));
                let pulled = d.join("pulled");
                skopeo_ok(&[
                    "copy",
                    "--all",
                    "--src-tls-verify=false",
                    "--src-creds",
                    &creds(),
                    &format!("docker://{target}"),
                    &format!("oci:{}:v1", pulled.display()),
                ]);
                let theirs = Layout::new(&pulled);
                theirs.verified_blobs();
                assert_eq!(theirs.entry("v1")["digest"], digest.as_str());
                assert_eq!(theirs.manifests(&theirs.entry("v1")).len(), 2);
            }
            // It stores manifests under tags only and no index at all: one clear line, and
            // no tag written.
            Implementation::ContainerRegistry => {
                let err = error_line(&output);
                assert!(
                    err.contains("stores manifests only under tags")
                        && err.contains("multi-platform index")
                        && err.contains("400"),
                    "{name}: {err}"
                );
                assert_eq!(registry.manifest_digest("team/multi", "v1"), None);
            }
        }
    }
}

#[test]
fn login_a_wrong_password_and_no_credentials_on_both_registries() {
    let Some(registries) = registries() else {
        return;
    };
    let secrets: Vec<String> = [PASSWORD, WRONG_PASSWORD]
        .iter()
        .flat_map(|secret| secret_forms(USER, secret))
        .collect();
    for registry in &registries {
        let name = registry.implementation().name();
        let host = registry.host();
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        write_static_elf(&d.join("app"), Arch::Amd64, b"auth");
        let push = |config: Option<&Path>, tag: &str| {
            let mut command = build_in(d, config);
            command.args([
                "-q",
                "--binary",
                "linux/amd64=app",
                "--push",
                &format!("{host}/team/auth:{tag}"),
            ]);
            let output = command.output().unwrap();
            assert_no_secrets(&format!("{name}: push {tag}"), &output, &secrets);
            output
        };

        // No credentials: the registry challenges on GET /v2/ only (container-registry) or
        // on every request (distribution); either way one line naming where imgpack looked.
        let err = error_line(&push(None, "none"));
        assert!(
            err.contains(&format!("registry {host} refused"))
                && err.contains("no credentials found"),
            "{name}: {err}"
        );

        // A wrong stored password: refused, naming the source, not a challenge puzzle.
        let wrong = docker_config(d, "docker-wrong", &host, WRONG_PASSWORD);
        let err = error_line(&push(Some(&wrong), "wrong"));
        assert!(
            err.contains("401")
                && err.contains(&format!(
                    "credentials from {}",
                    wrong.join("config.json").display()
                )),
            "{name}: {err}"
        );

        // login: a wrong password saves nothing; the right one is saved and pushes.
        let saved = d.join("login-config");
        let login = |secret: &str| {
            let mut child = imgpack_in(d, Some(&saved))
                .args(["login", &host, "-u", USER, "--password-stdin"])
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap();
            std::io::Write::write_all(
                &mut child.stdin.take().unwrap(),
                format!("{secret}\n").as_bytes(),
            )
            .unwrap();
            let output = child.wait_with_output().unwrap();
            assert_no_secrets(&format!("{name}: login"), &output, &secrets);
            output
        };
        let refused = login(WRONG_PASSWORD);
        assert!(
            stderr(&refused).contains("refused logging in"),
            "{name}: {}",
            stderr(&refused)
        );
        assert!(!saved.join("config.json").exists(), "{name}");
        let accepted = login(PASSWORD);
        assert!(accepted.status.success(), "{name}: {}", stderr(&accepted));
        let output = push(Some(&saved), "v1");
        assert!(output.status.success(), "{name}: {}", stderr(&output));
        assert!(
            registry.manifest_digest("team/auth", "v1").is_some(),
            "{name}"
        );
        assert_eq!(
            registry.manifest_digest("team/auth", "wrong"),
            None,
            "{name}"
        );
    }
}
