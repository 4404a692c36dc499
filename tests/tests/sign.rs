//! Cosign-compatible signatures on a real registry (distribution 2.8), checked by an
//! independent implementation: sigstore-rs makes the keys in cosign's format and verifies what
//! imgpack pushed with its cosign verification API; skopeo copies the `.sig` tags. Then
//! `imgpack verify` accepts what is signed and refuses, in one line, an unsigned image, another
//! key, another repository and a tag moved to an unsigned manifest.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use imgpack_e2e::registry::{Registry, Setup};
use imgpack_e2e::*;
use serde_json::Value;
use sigstore::cosign::verification_constraint::{PublicKeyVerifier, VerificationConstraintVec};
use sigstore::cosign::{verify_constraints, ClientBuilder, CosignCapabilities};
use sigstore::crypto::signing_key::ecdsa::{ECDSAKeys, EllipticCurve};
use sigstore::crypto::signing_key::SigStoreKeyPair;
use sigstore::crypto::SigningScheme;
use sigstore::registry::{Auth, ClientConfig, ClientProtocol, OciReference};

fn start() -> Option<Registry> {
    if !have_tool("skopeo") {
        return None;
    }
    Registry::start(Setup::Plain)
}

/// A P-256 key pair made by sigstore-rs, the private key in cosign's encrypted format:
/// (private key file, public key file).
fn sigstore_key(dir: &Path, name: &str, password: &str) -> (PathBuf, PathBuf) {
    let pair = SigStoreKeyPair::ECDSA(ECDSAKeys::new(EllipticCurve::P256).unwrap());
    let private = dir.join(format!("{name}.key"));
    let public = dir.join(format!("{name}.pub"));
    let pem = pair
        .private_key_to_encrypted_pem(password.as_bytes())
        .unwrap();
    std::fs::write(&private, pem.as_bytes()).unwrap();
    std::fs::write(&public, pair.public_key_to_pem().unwrap()).unwrap();
    (private, public)
}

/// Two synthetic static binaries (amd64, arm64) whose contents differ by `version`.
fn binaries(dir: &Path, version: &str) -> Vec<String> {
    for (arch, name) in [(Arch::Amd64, "amd64"), (Arch::Arm64, "arm64")] {
        let payload = format!("{name} {version}");
        write_static_elf(&dir.join(format!("app-{name}")), arch, payload.as_bytes());
    }
    [
        "--binary",
        "linux/amd64=app-amd64",
        "--binary",
        "linux/arm64=app-arm64",
    ]
    .map(String::from)
    .to_vec()
}

/// `imgpack build` of the two-platform image `version`, pushed to `reference`, with `extra`
/// flags and environment; returns the pushed `REPO@sha256:…`.
fn push(
    dir: &Path,
    version: &str,
    reference: &str,
    extra: &[&str],
    env: &[(&str, &str)],
) -> String {
    let mut command = imgpack();
    command
        .current_dir(dir)
        .env_remove("COSIGN_PASSWORD")
        .env_remove("IMGPACK_SIGN_PASSWORD")
        .env_remove("IMGPACK_SIGN_KEY")
        .arg("build")
        .args(binaries(dir, version))
        .args(["--push", reference, "-q"])
        .args(extra);
    for (name, value) in env {
        command.env(name, value);
    }
    let output = run_expect(&mut command, true);
    String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .last()
        .unwrap()
        .to_owned()
}

fn digest_of(pushed: &str) -> String {
    pushed.split_once('@').unwrap().1.to_owned()
}

fn verify(reference: &str, public: &Path) -> Output {
    imgpack()
        .args(["verify", reference, "--key"])
        .arg(public)
        .output()
        .unwrap()
}

fn refused(reference: &str, public: &Path) -> String {
    let output = verify(reference, public);
    error_line(&output)
}

fn skopeo_raw(reference: &str) -> Value {
    let output = run_expect(
        Command::new("skopeo")
            .args(["inspect", "--raw", "--tls-verify=false"])
            .arg(format!("docker://{reference}")),
        true,
    );
    serde_json::from_slice(&output.stdout).unwrap()
}

/// The platform manifest digests of the index at `reference`.
fn platform_digests(reference: &str) -> Vec<String> {
    skopeo_raw(reference)["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["digest"].as_str().unwrap().to_owned())
        .collect()
}

/// sigstore-rs's cosign verification of `reference` (tag or digest) with the public key at
/// `public`: the signature layers it trusts must satisfy a PublicKeyVerifier, and one of them
/// must name `digest` and `repository`.
fn sigstore_verifies(
    reference: &str,
    public: &Path,
    repository: &str,
    digest: &str,
) -> Result<(), String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let config = ClientConfig {
            protocol: ClientProtocol::Http,
            ..ClientConfig::default()
        };
        let mut client = ClientBuilder::default()
            .with_oci_client_config(config)
            .build()
            .map_err(|e| e.to_string())?;
        let image: OciReference = reference.parse().map_err(|e| format!("{e:?}"))?;
        let layers = client
            .trusted_signature_layers(&Auth::Anonymous, &image)
            .await
            .map_err(|e| e.to_string())?;
        let key = std::fs::read(public).unwrap();
        let verifier = PublicKeyVerifier::new(&key, &SigningScheme::ECDSA_P256_SHA256_ASN1)
            .map_err(|e| e.to_string())?;
        let constraints: VerificationConstraintVec = vec![Box::new(verifier)];
        verify_constraints(&layers, constraints.iter()).map_err(|e| format!("{e:?}"))?;
        let names_it = layers.iter().any(|layer| {
            let critical = &layer.simple_signing.critical;
            critical.image.docker_manifest_digest == digest
                && critical.identity.docker_reference == repository
        });
        match names_it {
            true => Ok(()),
            false => Err(format!("no layer names {repository}@{digest}")),
        }
    })
}

#[test]
fn a_signed_push_verifies_with_sigstore_rs_and_imgpack_and_skopeo_copies_it() {
    let Some(registry) = start() else { return };
    let work = tempfile::tempdir().unwrap();
    let dir = work.path();
    let (private, public) = sigstore_key(dir, "ci", "correct horse");
    let repository = format!("{}/team/signed", registry.host());
    let reference = format!("{repository}:v1");
    let pushed = push(
        dir,
        "1",
        &reference,
        &["--sign-key", private.to_str().unwrap()],
        &[("COSIGN_PASSWORD", "correct horse")],
    );
    let index = digest_of(&pushed);

    // The independent verifier: the index by tag, and every platform manifest by digest.
    sigstore_verifies(&reference, &public, &repository, &index).unwrap();
    let platforms = platform_digests(&reference);
    assert_eq!(platforms.len(), 2);
    for digest in &platforms {
        sigstore_verifies(
            &format!("{repository}@{digest}"),
            &public,
            &repository,
            digest,
        )
        .unwrap();
    }
    // Another key does not satisfy it: the check can fail.
    let (_, other_public) = sigstore_key(dir, "other", "");
    assert!(sigstore_verifies(&reference, &other_public, &repository, &index).is_err());

    // The .sig image is cosign's: one simple-signing layer with the signature annotation.
    let tag = format!("sha256-{}.sig", index.trim_start_matches("sha256:"));
    let signature = skopeo_raw(&format!("{repository}:{tag}"));
    assert_eq!(
        signature["mediaType"],
        "application/vnd.oci.image.manifest.v1+json"
    );
    let layers = signature["layers"].as_array().unwrap();
    assert_eq!(layers.len(), 1);
    assert_eq!(
        layers[0]["mediaType"],
        "application/vnd.dev.cosign.simplesigning.v1+json"
    );
    assert!(layers[0]["annotations"]["dev.cosignproject.cosign/signature"].is_string());

    // The registry holds everything: skopeo copies the image and each .sig tag.
    let out = dir.join("copy");
    for (source, name) in [
        (reference.clone(), "image".to_owned()),
        (format!("{repository}:{tag}"), "sig".to_owned()),
    ] {
        run_expect(
            Command::new("skopeo")
                .args(["copy", "--all", "--src-tls-verify=false"])
                .arg(format!("docker://{source}"))
                .arg(format!("oci:{}:{name}", out.display())),
            true,
        );
    }

    let output = verify(&reference, &public);
    assert!(output.status.success(), "{}", stderr(&output));
    let stdout = String::from_utf8(output.stdout).unwrap();
    assert_eq!(
        stdout
            .lines()
            .filter(|l| l.starts_with("verified "))
            .count(),
        3,
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!("verified {repository}@{index} (index)")),
        "{stdout}"
    );
    assert!(stdout.contains("(linux/arm64)"), "{stdout}");

    // The SBOM and the provenance (its DSSE envelope signed with the same key) of each
    // platform manifest are attached, and listed with their subjects.
    let output = imgpack()
        .args(["verify", &reference, "--sbom", "--provenance", "--key"])
        .arg(&public)
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", stderr(&output));
    let stdout = String::from_utf8(output.stdout).unwrap();
    for digest in &platforms {
        for kind in ["application/spdx+json", "application/vnd.in-toto+json"] {
            assert!(
                stdout
                    .lines()
                    .any(|l| l.starts_with(&format!("attached {kind} "))
                        && l.contains(&format!("to {digest}"))),
                "{stdout}"
            );
        }
    }
    let line = error_line(
        &imgpack()
            .args(["verify", &reference, "--provenance", "--key"])
            .arg(&other_public)
            .output()
            .unwrap(),
    );
    assert!(line.contains("none made with this key"), "{line}");
}

#[test]
fn an_imgpack_keygen_key_loads_in_sigstore_rs_and_its_signatures_verify() {
    let Some(registry) = start() else { return };
    let work = tempfile::tempdir().unwrap();
    let dir = work.path();
    let keygen = |prefix: &str, password: Option<&str>| {
        let mut command = imgpack();
        command
            .current_dir(dir)
            .env_remove("COSIGN_PASSWORD")
            .env_remove("IMGPACK_SIGN_PASSWORD")
            .args(["keygen", "--output-key-prefix", prefix]);
        if let Some(password) = password {
            command.env("COSIGN_PASSWORD", password);
        }
        command.output().unwrap()
    };
    let made = keygen("release", Some("s3cret"));
    assert!(made.status.success(), "{}", stderr(&made));
    let private = dir.join("release.key");
    let public = dir.join("release.pub");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&private).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let pem = std::fs::read_to_string(&private).unwrap();
    assert!(
        pem.starts_with("-----BEGIN ENCRYPTED SIGSTORE PRIVATE KEY-----"),
        "{pem}"
    );

    // sigstore-rs (cosign's format, independently implemented) opens it: same public key.
    let pair = SigStoreKeyPair::from_encrypted_pem(pem.as_bytes(), b"s3cret").unwrap();
    // (sigstore-rs writes CRLF line ends, cosign and imgpack LF.)
    let theirs = pair.public_key_to_pem().unwrap().replace("\r\n", "\n");
    assert_eq!(theirs, std::fs::read_to_string(&public).unwrap());
    assert!(SigStoreKeyPair::from_encrypted_pem(pem.as_bytes(), b"wrong").is_err());

    // Never over an existing key, and never without a password set (empty is one).
    let again = error_line(&keygen("release", Some("x")));
    assert!(again.contains("release.key exists"), "{again}");
    assert_eq!(std::fs::read_to_string(&private).unwrap(), pem);
    let unset = error_line(&keygen("nopass", None));
    assert!(unset.contains("COSIGN_PASSWORD"), "{unset}");
    assert!(!dir.join("nopass.key").exists());
    assert!(keygen("empty", Some("")).status.success());

    // Its signatures, pushed through IMGPACK_SIGN_KEY, verify with sigstore-rs and imgpack.
    let repository = format!("{}/team/keygen", registry.host());
    let reference = format!("{repository}:v1");
    let pushed = push(
        dir,
        "k",
        &reference,
        &[],
        &[
            ("IMGPACK_SIGN_KEY", private.to_str().unwrap()),
            ("IMGPACK_SIGN_PASSWORD", "s3cret"),
        ],
    );
    sigstore_verifies(&reference, &public, &repository, &digest_of(&pushed)).unwrap();
    assert!(verify(&reference, &public).status.success());
    // The wrong password fails before anything is pushed, in one line that holds no secret.
    let mut command = imgpack();
    let line = error_line(&run_expect(
        command
            .current_dir(dir)
            .env("COSIGN_PASSWORD", "not-it")
            .env_remove("IMGPACK_SIGN_PASSWORD")
            .arg("build")
            .args(binaries(dir, "w"))
            .args(["--push", &format!("{repository}:wrong"), "-q", "--sign-key"])
            .arg(&private),
        false,
    ));
    assert!(
        line.contains("wrong password") && !line.contains("not-it"),
        "{line}"
    );
    assert!(registry.manifest_digest("team/keygen", "wrong").is_none());
}

#[test]
fn re_signing_with_another_key_keeps_the_first_signature() {
    let Some(registry) = start() else { return };
    let work = tempfile::tempdir().unwrap();
    let dir = work.path();
    let (first, first_public) = sigstore_key(dir, "first", "");
    let (second, second_public) = sigstore_key(dir, "second", "");
    let repository = format!("{}/team/twice", registry.host());
    let reference = format!("{repository}:v1");
    let sign_with = |key: &Path| {
        push(
            dir,
            "same",
            &reference,
            &["--sign-key", key.to_str().unwrap()],
            &[("COSIGN_PASSWORD", "")],
        )
    };
    let pushed = sign_with(&first);
    assert_eq!(sign_with(&second), pushed);
    // The same key again adds nothing, as cosign's duplicate check.
    assert_eq!(sign_with(&first), pushed);
    let tag = format!(
        "sha256-{}.sig",
        digest_of(&pushed).trim_start_matches("sha256:")
    );
    let signature = skopeo_raw(&format!("{repository}:{tag}"));
    assert_eq!(
        signature["layers"].as_array().unwrap().len(),
        2,
        "{signature}"
    );
    for public in [&first_public, &second_public] {
        sigstore_verifies(&reference, public, &repository, &digest_of(&pushed)).unwrap();
        assert!(verify(&reference, public).status.success());
    }
}

#[test]
fn verify_refuses_unsigned_other_key_other_repository_and_a_moved_tag() {
    let Some(registry) = start() else { return };
    let work = tempfile::tempdir().unwrap();
    let dir = work.path();
    let (private, public) = sigstore_key(dir, "ours", "pw");
    let (_, other_public) = sigstore_key(dir, "theirs", "pw");
    let host = registry.host();
    let sign = ["--sign-key", private.to_str().unwrap()];
    let password = [("COSIGN_PASSWORD", "pw")];

    // Unsigned.
    let unsigned = format!("{host}/team/plain:v1");
    let pushed = push(dir, "u", &unsigned, &[], &[]);
    let line = refused(&unsigned, &public);
    assert!(
        line.contains(&digest_of(&pushed)) && line.contains("has no signature"),
        "{line}"
    );

    // Signed, but checked with another key.
    let signed = format!("{host}/team/signed:v1");
    push(dir, "s", &signed, &sign, &password);
    assert!(verify(&signed, &public).status.success());
    let line = refused(&signed, &other_public);
    assert!(line.contains("none made with this key"), "{line}");

    // The image and its signatures copied to another repository: signed for the first one.
    let copy = format!("{host}/team/copy");
    let signed_digest = registry.manifest_digest("team/signed", "v1").unwrap();
    let tag = format!("sha256-{}.sig", signed_digest.trim_start_matches("sha256:"));
    for (from, to) in [
        (signed.clone(), format!("{copy}:v1")),
        (format!("{host}/team/signed:{tag}"), format!("{copy}:{tag}")),
    ] {
        run_expect(
            Command::new("skopeo")
                .args([
                    "copy",
                    "--all",
                    "--preserve-digests",
                    "--src-tls-verify=false",
                    "--dest-tls-verify=false",
                ])
                .arg(format!("docker://{from}"))
                .arg(format!("docker://{to}")),
            true,
        );
    }
    let line = refused(&format!("{copy}:v1"), &public);
    assert!(
        line.contains(&format!("for another repository, {host}/team/signed")),
        "{line}"
    );

    // Signed, but without the attachments --sbom and --provenance require.
    let bare = format!("{host}/team/bare:v1");
    push(
        dir,
        "b",
        &bare,
        &[&sign[..], &["--sbom", "none", "--provenance=false"]].concat(),
        &password,
    );
    assert!(verify(&bare, &public).status.success());
    for (flag, missing) in [
        ("--sbom", "has no SBOM attached"),
        ("--provenance", "has no provenance attached"),
    ] {
        let output = imgpack()
            .args(["verify", &bare, flag, "--key"])
            .arg(&public)
            .output()
            .unwrap();
        let line = error_line(&output);
        assert!(line.contains(missing), "{line}");
    }

    // The tag moved to an image pushed without signing.
    let moved = push(dir, "moved", &signed, &[], &[]);
    assert_ne!(digest_of(&moved), signed_digest);
    let line = refused(&signed, &public);
    assert!(
        line.contains(&digest_of(&moved)) && line.contains("has no signature"),
        "{line}"
    );
    // The signed manifest itself still verifies by digest.
    assert!(
        verify(&format!("{host}/team/signed@{signed_digest}"), &public)
            .status
            .success()
    );
}
