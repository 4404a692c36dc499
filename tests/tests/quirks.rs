//! Known quirks of real registries, played by the fake registry's [`Quirks`]
//! (tests/src/fake_registry.rs; docs/registries.md names who has each): imgpack assumes
//! nothing beyond the distribution spec. A challenge sent only on the `GET /v2/` ping is
//! applied to every later request, a registry that never challenges gets one clear line, and
//! pushes and base pulls work without `Docker-Content-Digest`, mounts, `tags/list`, 201s or a
//! monolithic PUT, under an unannounced chunk minimum, and on a registry that stores manifests
//! under tags only (an index there is refused before any tag). The hosted registries a user
//! meets each get a test: ECR, GHCR, Docker Hub, GitLab and Google Artifact Registry, where a
//! push works or fails with one line that says what to do.

use std::path::Path;
use std::process::{Command, Output};

use imgpack_blob::Digest;
use imgpack_e2e::fake_registry::{FakeRegistry, Hostility, Missing, Quirks};
use imgpack_e2e::*;
use serde_json::json;

const USER: &str = "ci";
const PASSWORD: &str = "quirky-Pa55word";

/// imgpack in `dir` with a docker config holding the fake's credentials (or none).
fn imgpack_in(dir: &Path, registry: &str, with_credentials: bool) -> Command {
    use base64::Engine as _;
    let config = dir.join("docker");
    std::fs::create_dir_all(&config).unwrap();
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("{USER}:{PASSWORD}"));
    let auths = match with_credentials {
        true => json!({ registry: { "auth": auth } }),
        false => json!({}),
    };
    std::fs::write(
        config.join("config.json"),
        json!({ "auths": auths }).to_string(),
    )
    .unwrap();
    let mut command = imgpack();
    command
        .current_dir(dir)
        .env("DOCKER_CONFIG", &config)
        .env_remove("REGISTRY_AUTH_FILE")
        .env_remove("XDG_RUNTIME_DIR");
    command
}

fn basic(quirks: Quirks) -> FakeRegistry {
    FakeRegistry::start(Hostility {
        basic_auth: Some((USER.into(), PASSWORD.into())),
        quirks,
        ..Hostility::default()
    })
}

fn push(dir: &Path, host: &str, binary: &str, target: &str) -> Output {
    imgpack_in(dir, host, true)
        .args(["build", "-q", "--binary", binary])
        .args(["--output", "oci:layout:v1", "--push", target])
        // These tests count uploads and mounts; attachments are tests/tests/attest.rs's.
        .args(["--sbom", "none", "--provenance", "false"])
        .output()
        .unwrap()
}

fn pushed(output: &Output) -> String {
    assert!(output.status.success(), "{}", stderr(output));
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

#[test]
fn a_challenge_sent_only_on_the_ping_is_applied_to_every_request() {
    // container-registry 0.3.1: `Basic` on GET /v2/, a bare 401 on everything else.
    let registry = basic(Quirks {
        challenge_only_on_ping: true,
        ..Quirks::default()
    });
    let host = registry.host();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write_static_elf(&d.join("app"), Arch::Amd64, b"ping only");
    let printed = pushed(&push(
        d,
        &host,
        "linux/amd64=app",
        &format!("{host}/team/app:v1"),
    ));
    let digest = printed.split('@').nth(1).unwrap().to_owned();
    let manifest = registry.manifest("team/app", "v1").expect("tagged");
    assert_eq!(Digest::of_bytes(&manifest).to_string(), digest);
    // After the ping, every request carried the credentials: none was refused first.
    let seen = registry.seen();
    let after_ping: Vec<_> = seen.iter().filter(|s| s.target != "/v2/").collect();
    assert!(!after_ping.is_empty());
    for request in after_ping {
        assert!(
            request.authorization.is_some(),
            "{} {} went without credentials",
            request.method,
            request.target
        );
    }

    // No credentials for it: one line saying none were found, not a challenge puzzle.
    let err = one_error_line(
        imgpack_in(d, &host, false)
            .args(["build", "-q", "--binary", "linux/amd64=app"])
            .args(["--push", &format!("{host}/team/app:v2")]),
    );
    assert!(
        err.contains(&format!("registry {host} refused")) && err.contains("no credentials"),
        "{err}"
    );
    assert!(!err.contains("challenge"), "{err}");
    assert_eq!(registry.manifest("team/app", "v2"), None);
}

#[test]
fn a_registry_that_requires_auth_but_never_challenges_gets_one_clear_line() {
    let registry = basic(Quirks {
        no_challenge: true,
        ..Quirks::default()
    });
    let host = registry.host();
    let dir = tempfile::tempdir().unwrap();
    write_static_elf(&dir.path().join("app"), Arch::Amd64, b"no challenge");
    let err = one_error_line(
        imgpack_in(dir.path(), &host, true)
            .args(["build", "-q", "--binary", "linux/amd64=app"])
            .args(["--push", &format!("{host}/team/app:v1")]),
    );
    assert!(
        err.contains(&format!("registry {host} requires authentication"))
            && err.contains("no WWW-Authenticate challenge"),
        "{err}"
    );
    // No guess: the credentials were never sent.
    assert!(registry.seen().iter().all(|s| s.authorization.is_none()));
    assert_eq!(registry.manifest("team/app", "v1"), None);
}

#[test]
fn pushes_and_base_pulls_need_nothing_beyond_the_spec() {
    // Every optional header and endpoint gone at once, and each "success" a different one.
    let registry = basic(Quirks {
        no_content_digest: true,
        refuse_mounts: Some(404),
        manifest_put_status: Some(202),
        patch_status: Some(204),
        no_monolithic_put: true,
        unannounced_chunk_min: Some(5 << 20),
        ..Quirks::default()
    });
    let host = registry.host();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // Larger than the unannounced minimum: it must go up in one PATCH. Pushed from the
    // layout: a build --push streams that layer while writing it, which this does not count.
    write_static_elf(&d.join("app"), Arch::Amd64, &noise(6 << 20, 13));
    let built = imgpack_in(d, &host, true)
        .args([
            "build",
            "-q",
            "--binary",
            "linux/amd64=app",
            "--output",
            "oci:layout:v1",
        ])
        .args(["--sbom", "none", "--provenance", "false"])
        .output()
        .unwrap();
    assert!(built.status.success(), "{}", stderr(&built));
    let printed = pushed(
        &imgpack_in(d, &host, true)
            .args(["push", "oci:layout:v1", &format!("{host}/team/app:v1")])
            .output()
            .unwrap(),
    );
    let layout = Layout::new(d.join("layout"));
    let digest = layout.entry("v1")["digest"].as_str().unwrap().to_owned();
    assert_eq!(printed, format!("{host}/team/app@{digest}"));
    assert_eq!(
        Digest::of_bytes(&registry.manifest("team/app", "v1").unwrap()).to_string(),
        digest
    );
    let blobs = registry.count("PUT", "digest=");
    assert_eq!(blobs, registry.blob_count());
    assert_eq!(registry.count("PATCH", "/blobs/uploads/"), blobs);
    assert_eq!(registry.count("GET", "/tags/list"), 0);

    // Another repository, its blobs hidden: each mount imgpack tries is refused (404), and
    // the blob is uploaded instead.
    registry.forget_blobs();
    let uploads_before = registry.count("PUT", "digest=");
    pushed(&push(
        d,
        &host,
        "linux/amd64=app",
        &format!("{host}/other/app:v1"),
    ));
    assert_eq!(registry.count("POST", "mount="), blobs);
    assert_eq!(registry.count("PUT", "digest=") - uploads_before, blobs);
    assert!(registry.manifest("other/app", "v1").is_some());

    // A base from it, with no Docker-Content-Digest anywhere: digests computed locally.
    write_static_elf(&d.join("on-base"), Arch::Amd64, b"on the quirky base");
    let output = imgpack_in(d, &host, true)
        .args(["build", "-q", "--binary", "linux/amd64=on-base"])
        .args(["--base", &format!("{host}/team/app:v1")])
        .args(["--output", "oci:built:v1"])
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", stderr(&output));
    let built = Layout::new(d.join("built"));
    let manifest = &built.manifests(&built.entry("v1"))[0];
    assert_eq!(
        manifest["annotations"]["org.opencontainers.image.base.digest"],
        digest.as_str()
    );
}

#[test]
fn a_mount_answered_with_an_upload_session_uploads_through_it() {
    let registry = basic(Quirks::default());
    let host = registry.host();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write_static_elf(&d.join("app"), Arch::Amd64, b"mount declined");
    pushed(&push(
        d,
        &host,
        "linux/amd64=app",
        &format!("{host}/team/app:v1"),
    ));
    // The fake's HEAD finds every blob by digest in any repository; hide them, so the second
    // push tries the mounts imgpack remembers, which the fake answers with 202 and a session.
    let before = registry.count("POST", "mount=");
    registry.forget_blobs();
    pushed(&push(
        d,
        &host,
        "linux/amd64=app",
        &format!("{host}/other/app:v1"),
    ));
    let mounts = registry.count("POST", "mount=") - before;
    assert!(mounts > 0, "{:?}", registry.seen());
    // Each declined mount's session carried the upload: no second POST for those blobs.
    let posts = registry.count("POST", "/other/app/blobs/uploads/");
    assert_eq!(posts, mounts, "{:?}", registry.seen());
    assert!(registry.manifest("other/app", "v1").is_some());
}

#[test]
fn a_manifest_refused_as_digest_invalid_while_another_push_links_its_layers_is_put_again() {
    let registry = basic(Quirks {
        racing_link_once: true,
        ..Quirks::default()
    });
    let host = registry.host();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write_static_elf(&d.join("app"), Arch::Amd64, b"racing link");
    let printed = pushed(&push(
        d,
        &host,
        "linux/amd64=app",
        &format!("{host}/team/app:v1"),
    ));
    let digest = printed.split('@').nth(1).unwrap().to_owned();
    // Put by digest twice (refused, then stored), then tagged: not taken for a tags-only registry.
    assert_eq!(
        registry.count("PUT", &format!("/manifests/{digest}")),
        2,
        "{:?}",
        registry.seen()
    );
    assert!(registry.manifest("team/app", "v1").is_some());
}

#[test]
fn a_tags_only_registry_takes_one_platform_by_tag_and_refuses_an_index_before_any_tag() {
    // container-registry 0.3.1: manifests PUT by digest and image indexes are refused (400).
    let registry = basic(Quirks {
        tags_only: true,
        no_indexes: true,
        ..Quirks::default()
    });
    let host = registry.host();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write_static_elf(&d.join("app-amd64"), Arch::Amd64, b"tags only amd64");
    write_static_elf(&d.join("app-arm64"), Arch::Arm64, b"tags only arm64");
    let printed = pushed(&push(
        d,
        &host,
        "linux/amd64=app-amd64",
        &format!("{host}/team/app:v1"),
    ));
    let digest = printed.split('@').nth(1).unwrap().to_owned();
    assert_eq!(
        Digest::of_bytes(&registry.manifest("team/app", "v1").unwrap()).to_string(),
        digest
    );

    let err = one_error_line(
        imgpack_in(d, &host, true)
            .args(["build", "-q", "--push", &format!("{host}/team/app:v2")])
            .args(["--binary", "linux/amd64=app-amd64"])
            .args(["--binary", "linux/arm64=app-arm64"]),
    );
    assert!(
        err.contains("stores manifests only under tags") && err.contains("multi-platform"),
        "{err}"
    );
    assert_eq!(registry.manifest("team/app", "v2"), None);
}

/// The artifact types listed by the `sha256-<hex>` referrers tag of `subject` (a digest).
fn fallback_tag_types(registry: &FakeRegistry, repository: &str, subject: &str) -> Vec<String> {
    let tag = subject.replace(':', "-");
    let index = registry
        .manifest(repository, &tag)
        .unwrap_or_else(|| panic!("no referrers tag {tag}: {:?}", registry.seen()));
    let index: serde_json::Value = serde_json::from_slice(&index).unwrap();
    let mut types: Vec<String> = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["artifactType"].as_str().unwrap_or("none").to_owned())
        .collect();
    types.sort();
    types
}

/// `build --push` of a single-platform image of `binary` with its SBOM (no provenance).
fn push_with_sbom(dir: &Path, host: &str, binary: &str, target: &str) -> Output {
    imgpack_in(dir, host, true)
        .args(["build", "-q", "--binary", binary, "--push", target])
        .args(["--provenance", "false", "--retry-timeout", "5"])
        .output()
        .unwrap()
}

const SPDX: &str = "application/spdx+json";

#[test]
fn ecr_streamed_layers_take_its_201_and_a_missing_repository_names_the_command_that_creates_it() {
    let registry = basic(Quirks {
        patch_status: Some(201),
        unannounced_chunk_min: Some(5 << 20),
        missing_repository: Some(("team/missing".into(), Missing::DropConnection)),
        ..Quirks::default()
    });
    let host = registry.host();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // Large enough to go up while it is written (one streamed PATCH), and over ECR's 5 MiB.
    write_static_elf(&d.join("app"), Arch::Amd64, &noise(6 << 20, 23));
    let output = imgpack_in(d, &host, true)
        .args([
            "build",
            "--binary",
            "linux/amd64=app",
            "--output",
            "oci:layout:v1",
        ])
        .args(["--push", &format!("{host}/team/app:v1")])
        .args(["--sbom", "none", "--provenance", "false"])
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(registry.manifest("team/app", "v1").is_some());
    // The streamed upload's 201 was taken as the success it is: nothing cancelled, nothing
    // sent twice.
    assert!(
        !stderr(&output).contains("goes up again"),
        "{}",
        stderr(&output)
    );
    assert_eq!(registry.count("DELETE", "/blobs/uploads/"), 0);
    assert_eq!(registry.count("PUT", "digest="), registry.blob_count());

    // Chunks under its minimum: the closing PUT is refused, and the line says what to pass.
    registry.forget_blobs();
    let err = one_error_line(
        imgpack_in(d, &host, true)
            .args(["push", "-q", "--chunk-size", "1", "oci:layout:v1"])
            .arg(format!("{host}/team/chunked:v1")),
    );
    assert!(err.contains("--chunk-size 5"), "{err}");

    // A repository ECR does not have: it hangs up on the upload; one line with the command.
    let err = one_error_line(
        imgpack_in(d, &host, true)
            .args(["push", "-q", "oci:layout:v1"])
            .arg(format!("{host}/team/missing:v1")),
    );
    assert!(
        err.contains("aws ecr create-repository --repository-name team/missing"),
        "{err}"
    );
    // Or it answers NAME_UNKNOWN.
    registry.set(|h| {
        h.quirks.missing_repository = Some(("team/gone".into(), Missing::NameUnknown));
    });
    let err = one_error_line(
        imgpack_in(d, &host, true)
            .args(["push", "-q", "oci:layout:v1"])
            .arg(format!("{host}/team/gone:v1")),
    );
    assert!(
        err.contains("NAME_UNKNOWN")
            && err.contains("aws ecr create-repository --repository-name team/gone"),
        "{err}"
    );
}

#[test]
fn ghcr_takes_a_large_layer_in_chunks_under_its_request_limit_and_keeps_the_referrers_tag() {
    // GHCR: no request over 4 MiB, no referrers API.
    let registry = basic(Quirks {
        max_request_body: Some(4 << 20),
        ..Quirks::default()
    });
    let host = registry.host();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write_static_elf(&d.join("app"), Arch::Amd64, &noise(9 << 20, 29));
    let output = push_with_sbom(d, &host, "linux/amd64=app", &format!("{host}/team/app:v1"));
    let digest = pushed(&output).split('@').nth(1).unwrap().to_owned();
    assert_eq!(
        Digest::of_bytes(&registry.manifest("team/app", "v1").unwrap()).to_string(),
        digest
    );
    // The large layer went up in PATCHes of 4 MiB at most.
    let patches: Vec<usize> = registry
        .seen()
        .iter()
        .filter(|s| s.method == "PATCH")
        .filter_map(|s| {
            s.headers
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
                .and_then(|(_, v)| v.parse().ok())
        })
        .collect();
    assert!(
        patches.iter().filter(|&&len| len == 4 << 20).count() >= 2,
        "{patches:?}"
    );
    assert_eq!(fallback_tag_types(&registry, "team/app", &digest), [SPDX]);
}

#[test]
fn docker_hubs_oci_subject_without_a_referrers_api_still_gets_the_referrers_tag() {
    let registry = basic(Quirks {
        subject_header_without_api: true,
        ..Quirks::default()
    });
    let host = registry.host();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write_static_elf(&d.join("app"), Arch::Amd64, b"docker hub");
    let output = push_with_sbom(d, &host, "linux/amd64=app", &format!("{host}/team/app:v1"));
    let digest = pushed(&output).split('@').nth(1).unwrap().to_owned();
    assert!(
        registry.count("GET", "/referrers/") > 0,
        "the API was asked"
    );
    assert_eq!(fallback_tag_types(&registry, "team/app", &digest), [SPDX]);
}

#[test]
fn gitlabs_digest_for_an_absent_referrers_tag_is_not_taken_for_a_list_of_referrers() {
    // GitLab: no referrers API, and `sha256-<hex>` reads as `sha256:<hex>` until it is a tag.
    let registry = basic(Quirks {
        digest_tags_resolve: true,
        ..Quirks::default()
    });
    let host = registry.host();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write_static_elf(&d.join("app"), Arch::Amd64, b"gitlab");
    let output = push_with_sbom(d, &host, "linux/amd64=app", &format!("{host}/team/app:v1"));
    let digest = pushed(&output).split('@').nth(1).unwrap().to_owned();
    assert_eq!(fallback_tag_types(&registry, "team/app", &digest), [SPDX]);
}

#[test]
fn artifact_registrys_permission_denied_says_whether_the_repository_is_missing_or_read_only() {
    let registry = basic(Quirks {
        missing_repository: Some(("proj/repo/gone".into(), Missing::PermissionDenied)),
        read_only_repository: Some("proj/repo/locked".into()),
        ..Quirks::default()
    });
    let host = registry.host();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write_static_elf(&d.join("app"), Arch::Amd64, b"artifact registry");
    let push_to = |repository: &str| {
        one_error_line(
            imgpack_in(d, &host, true)
                .args(["build", "-q", "--binary", "linux/amd64=app"])
                .args(["--push", &format!("{host}/{repository}:v1")])
                .args(["--sbom", "none", "--provenance", "false"]),
        )
    };
    let err = push_to("proj/repo/gone");
    // Refused first on a HEAD, whose answer has no body to quote: the diagnosis stands alone.
    assert!(
        err.contains("403 Forbidden")
            && err.contains("cannot read proj/repo/gone either, so it most likely does not exist")
            && err.contains("gcloud artifacts repositories create"),
        "{err}"
    );
    let err = push_to("proj/repo/locked");
    assert!(
        err.contains("can read proj/repo/locked but not push to it")
            && err.contains("roles/artifactregistry.writer"),
        "{err}"
    );
}
