//! SBOMs and provenance (issue 9, items 1-3): what they list, checked against
//! `go version -m`, Cargo.lock and independent SPDX/CycloneDX validators;
//! how they are attached (the referrers tag of the reference registry, the
//! referrers API of the fake one, the OCI layout's index), and that skopeo
//! copies all of it. Under IMGPACK_E2E=1 a missing tool fails these tests.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use base64::Engine as _;
use imgpack_blob::Digest;
use imgpack_e2e::fake_registry::{FakeRegistry, Hostility};
use imgpack_e2e::registry::{Registry, Setup};
use imgpack_e2e::*;
use serde_json::Value;

const SPDX: &str = "application/spdx+json";
const CYCLONEDX: &str = "application/vnd.cyclonedx+json";
const IN_TOTO: &str = "application/vnd.in-toto+json";

/// The Python of the venv `cargo xtask ci` makes with the SBOM validators.
fn validator_python() -> Option<PathBuf> {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"));
    let python = target.join("sbom-venv/bin/python");
    if python.is_file() {
        return Some(python);
    }
    assert!(
        !tools_required(),
        "{} is missing: cargo xtask ci installs the SBOM validators",
        python.display()
    );
    eprintln!(
        "skipping the schema checks: {} is missing",
        python.display()
    );
    None
}

/// Validates `document` as `kind` (spdx or cyclonedx) with tests/sbom_validate.py.
fn assert_valid(kind: &str, document: &[u8]) {
    let Some(python) = validator_python() else {
        return;
    };
    // spdx-tools picks its parser by the file name's extension.
    let file = tempfile::Builder::new().suffix(".json").tempfile().unwrap();
    std::fs::write(file.path(), document).unwrap();
    let output = Command::new(python)
        .arg(workspace_root().join("tests/sbom_validate.py"))
        .arg(kind)
        .arg(file.path())
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "the {kind} validator refused imgpack's SBOM: {}{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
        String::from_utf8_lossy(document)
    );
}

/// The referrers a layout lists for `subject`: (artifact type, manifest, document bytes).
fn layout_referrers(layout: &Layout, subject: &str) -> Vec<(String, Value, Vec<u8>)> {
    let index = layout.index();
    let mut found = Vec::new();
    for entry in index["manifests"].as_array().unwrap() {
        let Some(artifact_type) = entry["artifactType"].as_str() else {
            continue;
        };
        let manifest = layout.json(entry["digest"].as_str().unwrap());
        if manifest["subject"]["digest"] != subject {
            continue;
        }
        assert_eq!(manifest["artifactType"], artifact_type);
        let document = layout.blob(manifest["layers"][0]["digest"].as_str().unwrap());
        found.push((artifact_type.to_owned(), manifest, document));
    }
    found
}

/// The platform manifest digests of the image tagged `tag` in a layout.
fn platform_manifests(layout: &Layout, tag: &str) -> Vec<String> {
    let entry = layout.entry(tag);
    let root = layout.json(entry["digest"].as_str().unwrap());
    match root["manifests"].as_array() {
        Some(children) => children
            .iter()
            .map(|c| c["digest"].as_str().unwrap().to_owned())
            .collect(),
        None => vec![entry["digest"].as_str().unwrap().to_owned()],
    }
}

fn one_of<'a>(referrers: &'a [(String, Value, Vec<u8>)], kind: &str) -> &'a [u8] {
    let matching: Vec<_> = referrers.iter().filter(|(t, _, _)| t == kind).collect();
    assert_eq!(matching.len(), 1, "one {kind} referrer expected");
    &matching[0].2
}

/// (name, version, purl) of every SPDX package with a purl.
fn spdx_packages(document: &[u8]) -> Vec<(String, String, String)> {
    let document: Value = serde_json::from_slice(document).unwrap();
    document["packages"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| {
            let purl = p["externalRefs"][0]["referenceLocator"].as_str()?;
            Some((
                p["name"].as_str()?.to_owned(),
                p["versionInfo"].as_str().unwrap_or("").to_owned(),
                purl.to_owned(),
            ))
        })
        .collect()
}

fn go_packages(document: &[u8]) -> Vec<(String, String, String)> {
    let mut packages: Vec<_> = spdx_packages(document)
        .into_iter()
        .filter(|(_, _, purl)| purl.starts_with("pkg:golang/"))
        .collect();
    packages.sort();
    packages
}

fn write(dir: &Path, files: &[(&str, &str)]) {
    for (path, text) in files {
        let path = dir.join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }
}

/// A Go module using a local module through a `replace` directive: builds offline.
fn go_module_with_a_local_dependency(work: &Path) -> PathBuf {
    write(
        work,
        &[
            ("lib/go.mod", "module example.com/lib\n\ngo 1.19\n"),
            (
                "lib/lib.go",
                "package lib\n\nfunc Greeting() string { return \"hello\" }\n",
            ),
            (
                "app/go.mod",
                "module example.com/app\n\ngo 1.19\n\nrequire example.com/lib v0.1.0\n\n\
                 replace example.com/lib => ../lib\n",
            ),
            (
                "app/main.go",
                "package main\n\nimport (\n\t\"fmt\"\n\n\t\"example.com/lib\"\n)\n\n\
                 func main() { fmt.Println(lib.Greeting()) }\n",
            ),
        ],
    );
    work.join("app")
}

const GO_ENV: [(&str, &str); 3] = [
    ("GOFLAGS", "-mod=mod"),
    ("GOPROXY", "off"),
    ("CGO_ENABLED", "0"),
];

/// The app binary of a layout entry's first platform, taken from its last layer (the app
/// layer, gzip) and written to `to`.
fn extract_app_binary(layout: &Layout, tag: &str, to: &Path) {
    let manifest = &layout.manifests(&layout.entry(tag))[0];
    let app_layer = manifest["layers"].as_array().unwrap().last().unwrap()["digest"]
        .as_str()
        .unwrap()
        .to_owned();
    let blob = layout.blob(&app_layer);
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(&blob[..]));
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        if entry.header().entry_type().is_file() && entry.path().unwrap().starts_with("app") {
            entry.unpack(to).unwrap();
            return;
        }
    }
    panic!("no file under /app in layer {app_layer}");
}

/// `go version -m BIN`'s dependency lines: (path, version).
fn go_version_m(binary: &Path) -> Vec<(String, String)> {
    let output = Command::new("go")
        .arg("version")
        .arg("-m")
        .arg(binary)
        .output()
        .unwrap();
    assert!(output.status.success(), "go version -m failed");
    String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.trim().split('\t').collect();
            match fields.as_slice() {
                ["dep", path, version, ..] => Some(((*path).to_owned(), (*version).to_owned())),
                _ => None,
            }
        })
        .collect()
}

#[test]
fn go_sbom_lists_the_replaced_module_matches_go_version_m_and_is_reproducible() {
    if !have_tool("go") {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    let app = go_module_with_a_local_dependency(w);
    let build = |output: &str, extra: &[&str]| {
        run_expect(
            imgpack()
                .current_dir(w)
                .arg("build")
                .arg(&app)
                .args(["-q", "--platform", "linux/amd64", "--output", output])
                .args(extra)
                .envs(GO_ENV),
            true,
        )
    };
    build("oci:out:v1", &[]);
    let layout = Layout::new(w.join("out"));
    let subject = platform_manifests(&layout, "v1").remove(0);
    let referrers = layout_referrers(&layout, &subject);
    let spdx = one_of(&referrers, SPDX);
    assert_valid("spdx", spdx);
    let packages = go_packages(spdx);
    assert!(
        packages.contains(&(
            "example.com/lib".into(),
            "v0.1.0".into(),
            "pkg:golang/example.com/lib@v0.1.0".into()
        )),
        "{packages:?}"
    );
    let text = String::from_utf8_lossy(spdx);
    assert!(text.contains("replaced by the directory ../lib"), "{text}");
    assert!(
        text.contains("webpki-root-certs") && text.contains("tzdata"),
        "{text}"
    );

    // Go's own reading of the binary in the image lists exactly the SBOM's Go modules, but for
    // the main module and the standard library, which `go version -m` names apart.
    let binary = w.join("app-amd64");
    extract_app_binary(&layout, "v1", &binary);
    let from_go: BTreeSet<(String, String)> = go_version_m(&binary).into_iter().collect();
    assert!(
        from_go.contains(&("example.com/lib".to_owned(), "v0.1.0".to_owned())),
        "{from_go:?}"
    );
    let from_sbom: BTreeSet<(String, String)> = packages
        .iter()
        .filter(|(name, _, purl)| {
            name != "example.com/app" && !purl.starts_with("pkg:golang/stdlib")
        })
        .map(|(name, version, _)| (name.clone(), version.clone()))
        .collect();
    assert_eq!(
        from_sbom, from_go,
        "the SBOM's Go modules against go version -m of the image's binary"
    );

    // The same binary given prebuilt: the same Go packages.
    run_expect(
        imgpack()
            .current_dir(w)
            .args(["build", "-q", "--name", "app", "--output", "oci:pre:v1"])
            .arg(format!("--binary=linux/amd64={}", binary.display())),
        true,
    );
    let prebuilt = Layout::new(w.join("pre"));
    let pre_subject = platform_manifests(&prebuilt, "v1").remove(0);
    let pre_referrers = layout_referrers(&prebuilt, &pre_subject);
    assert_eq!(go_packages(one_of(&pre_referrers, SPDX)), packages);

    // Built again: the same SBOM bytes.
    build("oci:again:v1", &[]);
    let again = Layout::new(w.join("again"));
    let again_referrers = layout_referrers(&again, &subject);
    assert_eq!(
        one_of(&again_referrers, SPDX),
        spdx,
        "two builds, two SBOMs"
    );

    // CycloneDX on request, valid against the published 1.6 schema.
    build("oci:cdx:v1", &["--sbom", "cyclonedx", "--provenance=false"]);
    let cdx_layout = Layout::new(w.join("cdx"));
    let cdx_referrers = layout_referrers(&cdx_layout, &subject);
    assert_eq!(cdx_referrers.len(), 1, "only the CycloneDX SBOM");
    let cdx = one_of(&cdx_referrers, CYCLONEDX);
    assert_valid("cyclonedx", cdx);
    assert!(String::from_utf8_lossy(cdx).contains("pkg:golang/example.com/lib@v0.1.0"));
}

#[test]
fn provenance_is_an_unsigned_dsse_envelope_of_a_slsa_statement_about_the_manifest() {
    if !have_tool("go") {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    let app = go_module_with_a_local_dependency(w);
    run_expect(
        imgpack()
            .current_dir(w)
            .arg("build")
            .arg(&app)
            .args([
                "-q",
                "--platform",
                "linux/amd64,linux/arm64",
                "--output",
                "oci:out:v1",
            ])
            .env("SOURCE_DATE_EPOCH", "1700000000")
            .envs(GO_ENV),
        true,
    );
    let layout = Layout::new(w.join("out"));
    let subjects = platform_manifests(&layout, "v1");
    assert_eq!(subjects.len(), 2);
    for subject in &subjects {
        let referrers = layout_referrers(&layout, subject);
        assert_eq!(
            referrers.len(),
            2,
            "an SBOM and a provenance per platform manifest"
        );
        let (_, manifest, envelope) = referrers.iter().find(|(t, _, _)| t == IN_TOTO).unwrap();
        assert_eq!(
            manifest["layers"][0]["mediaType"],
            "application/vnd.dsse.envelope.v1+json"
        );
        assert_eq!(
            manifest["annotations"]["in-toto.io/predicate-type"],
            "https://slsa.dev/provenance/v1"
        );
        let envelope: Value = serde_json::from_slice(envelope).unwrap();
        assert_eq!(envelope["payloadType"], IN_TOTO);
        assert_eq!(envelope["signatures"], serde_json::json!([]));
        let payload = base64::engine::general_purpose::STANDARD
            .decode(envelope["payload"].as_str().unwrap())
            .unwrap();
        let statement: Value = serde_json::from_slice(&payload).unwrap();
        assert_eq!(statement["_type"], "https://in-toto.io/Statement/v1");
        assert_eq!(
            format!(
                "sha256:{}",
                statement["subject"][0]["digest"]["sha256"]
                    .as_str()
                    .unwrap()
            ),
            *subject
        );
        let predicate = &statement["predicate"];
        let metadata = &predicate["runDetails"]["metadata"];
        assert_eq!(metadata["startedOn"], "2023-11-14T22:13:20Z");
        assert_eq!(metadata["finishedOn"], "2023-11-14T22:13:20Z");
        let definition = &predicate["buildDefinition"];
        assert_eq!(
            definition["externalParameters"]["platforms"],
            serde_json::json!(["linux/amd64", "linux/arm64"])
        );
        let dependencies = definition["resolvedDependencies"].to_string();
        assert!(
            dependencies.contains("pkg:golang/toolchain@go"),
            "{dependencies}"
        );
    }
}

/// Version and checksum of a crate in the workspace's Cargo.lock: in the local
/// cargo cache, so the test project resolves and builds offline.
fn locked(name: &str) -> (String, String) {
    let lock = std::fs::read_to_string(workspace_root().join("Cargo.lock")).unwrap();
    let entry = format!("name = \"{name}\"\nversion = \"");
    let at = lock.find(&entry).expect("the workspace locks the crate");
    let rest = &lock[at..];
    let version = rest.split('"').nth(3).unwrap().to_owned();
    let checksum_at = rest.find("checksum = \"").unwrap();
    let checksum = rest[checksum_at..].split('"').nth(1).unwrap().to_owned();
    (version, checksum)
}

#[test]
fn rust_sbom_lists_the_crates_io_dependency_with_version_checksum_and_license() {
    // probe_binary makes sure the musl targets are there (or skips).
    if probe_binary(Arch::Amd64).is_none() {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    let (version, checksum) = locked("itoa");
    let (hex_version, _) = locked("hex");
    let cargo_toml = format!(
        "[package]\nname = \"counter\"\nversion = \"0.3.0\"\nedition = \"2021\"\n\
         license = \"MIT\"\n\n[dependencies]\nitoa = \"={version}\"\n\n\
         [dev-dependencies]\nhex = \"={hex_version}\"\n\n\
         [workspace]\n"
    );
    write(
        w,
        &[
            ("counter/Cargo.toml", &cargo_toml),
            (
                "counter/src/main.rs",
                "fn main() { println!(\"{}\", itoa::Buffer::new().format(42)); }\n",
            ),
        ],
    );
    run_expect(
        imgpack()
            .current_dir(w)
            .args(["build", "counter", "-q", "--platform", "linux/amd64"])
            .args(["--output", "oci:out:v1", "--provenance=false"])
            .env("CARGO_NET_OFFLINE", "true"),
        true,
    );
    let layout = Layout::new(w.join("out"));
    let subject = platform_manifests(&layout, "v1").remove(0);
    let referrers = layout_referrers(&layout, &subject);
    let spdx = one_of(&referrers, SPDX);
    assert_valid("spdx", spdx);
    let packages = spdx_packages(spdx);
    assert!(
        packages.contains(&(
            "itoa".into(),
            version.clone(),
            format!("pkg:cargo/itoa@{version}")
        )),
        "{packages:?}"
    );
    assert!(packages.contains(&(
        "counter".into(),
        "0.3.0".into(),
        "pkg:cargo/counter@0.3.0".into()
    )));
    let text = String::from_utf8_lossy(spdx);
    assert!(
        text.contains(&checksum),
        "the Cargo.lock checksum of itoa: {text}"
    );
    assert!(text.contains("MIT OR Apache-2.0"), "itoa's license: {text}");
    assert!(
        !packages.iter().any(|(n, _, _)| n == "hex"),
        "a dev-dependency is not linked: {packages:?}"
    );
}

fn skopeo(args: &[&str]) -> Vec<u8> {
    run_expect(Command::new("skopeo").args(args), true).stdout
}

/// Two platforms' synthetic binaries: the same image on every push.
fn binaries(dir: &Path) -> Vec<String> {
    write_static_elf(&dir.join("app-amd64"), Arch::Amd64, b"attest amd64");
    write_static_elf(&dir.join("app-arm64"), Arch::Arm64, b"attest arm64");
    vec![
        "--binary=linux/amd64=app-amd64".into(),
        "--binary=linux/arm64=app-arm64".into(),
    ]
}

fn push(dir: &Path, target: &str, extra: &[&str]) -> std::process::Output {
    run_expect(
        imgpack()
            .current_dir(dir)
            .args(["build", "-q", "--name", "app", "--push", target])
            .args(binaries(dir))
            .args(extra),
        true,
    )
}

fn artifact_types(index: &Value) -> Vec<String> {
    let mut types: Vec<String> = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["artifactType"].as_str().unwrap().to_owned())
        .collect();
    types.sort();
    types
}

/// The platform manifests of the image at `reference`, as skopeo reads them.
fn pushed_platform_manifests(reference: &str) -> Vec<String> {
    let index: Value = serde_json::from_slice(&skopeo(&[
        "inspect",
        "--raw",
        "--tls-verify=false",
        reference,
    ]))
    .unwrap();
    index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["digest"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn two_pushes_leave_both_artifacts_in_the_referrers_tag_and_skopeo_copies_everything() {
    if !have_tool("skopeo") {
        return;
    }
    let Some(registry) = Registry::start(Setup::Plain) else {
        return;
    };
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    let target = format!("{}/team/app:v1", registry.host());
    push(w, &target, &["--provenance=false"]);
    push(w, &target, &["--sbom", "cyclonedx", "--provenance=false"]);
    let image = format!("docker://{target}");
    let subjects = pushed_platform_manifests(&image);
    assert_eq!(subjects.len(), 2);
    for subject in &subjects {
        let digest = Digest::parse(subject).unwrap();
        let tag = format!(
            "docker://{}/team/app:sha256-{}",
            registry.host(),
            digest.hex()
        );
        let index: Value =
            serde_json::from_slice(&skopeo(&["inspect", "--raw", "--tls-verify=false", &tag]))
                .unwrap();
        assert_eq!(artifact_types(&index), [SPDX, CYCLONEDX]);
        // imgpack's own listing (what `imgpack verify` reads) finds both through the tag.
        let reference = imgpack_registry::ImageRef::parse_push_target(&target).unwrap();
        let listed = imgpack_registry::referrers_of(
            &reference,
            &digest,
            None,
            &imgpack_registry::TransportOptions::default(),
        )
        .unwrap();
        assert_eq!(listed.len(), 2, "{listed:?}");
        // skopeo copies the referrers tag (an index of artifact manifests) with every blob.
        let copy = w.join(format!("copy-{}", &digest.hex()[..8]));
        skopeo(&[
            "copy",
            "--all",
            "--src-tls-verify=false",
            &tag,
            &format!("oci:{}:referrers", copy.display()),
        ]);
        let copied = Layout::new(&copy);
        assert!(
            copied.verified_blobs().len() >= 5,
            "index, 2 manifests, empty config, 2 SBOMs"
        );
    }
    // And the image itself, as always.
    skopeo(&[
        "copy",
        "--all",
        "--src-tls-verify=false",
        &image,
        &format!("oci:{}:v1", w.join("image").display()),
    ]);
}

#[test]
fn racing_pushes_of_different_artifacts_lose_no_referrer() {
    if !have_tool("skopeo") {
        return;
    }
    let Some(registry) = Registry::start(Setup::Plain) else {
        return;
    };
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    binaries(w);
    let target = format!("{}/team/race:v1", registry.host());
    // The same image, different SBOM formats; each provenance has its own times.
    let spawn = |sbom: &str| {
        imgpack()
            .current_dir(w)
            .args([
                "build", "-q", "--name", "app", "--push", &target, "--sbom", sbom,
            ])
            .args(binaries(w))
            .env_remove("SOURCE_DATE_EPOCH")
            .spawn()
            .unwrap()
    };
    let mut first = spawn("spdx");
    let mut second = spawn("cyclonedx");
    assert!(first.wait().unwrap().success());
    assert!(second.wait().unwrap().success());
    for subject in pushed_platform_manifests(&format!("docker://{target}")) {
        let digest = Digest::parse(&subject).unwrap();
        let tag = format!(
            "docker://{}/team/race:sha256-{}",
            registry.host(),
            digest.hex()
        );
        let index: Value =
            serde_json::from_slice(&skopeo(&["inspect", "--raw", "--tls-verify=false", &tag]))
                .unwrap();
        let types = artifact_types(&index);
        assert_eq!(types.len(), 4, "{types:?}");
        assert!(types.contains(&SPDX.to_owned()) && types.contains(&CYCLONEDX.to_owned()));
    }
}

#[test]
fn a_registry_with_the_referrers_api_gets_no_referrers_tag() {
    let fake = FakeRegistry::start(Hostility {
        referrers_api: true,
        ..Hostility::default()
    });
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    let target = format!("{}/team/app:v1", fake.host());
    push(w, &target, &[]);
    let index: Value = serde_json::from_slice(&fake.manifest("team/app", "v1").unwrap()).unwrap();
    let reference = imgpack_registry::ImageRef::parse_push_target(&target).unwrap();
    for child in index["manifests"].as_array().unwrap() {
        let digest = Digest::parse(child["digest"].as_str().unwrap()).unwrap();
        let tag = format!("sha256-{}", digest.hex());
        assert!(
            fake.manifest("team/app", &tag).is_none(),
            "no fallback tag with the API"
        );
        let listed = imgpack_registry::referrers_of(
            &reference,
            &digest,
            None,
            &imgpack_registry::TransportOptions::default(),
        )
        .unwrap();
        let mut types: Vec<&str> = listed
            .iter()
            .map(|d| d["artifactType"].as_str().unwrap())
            .collect();
        types.sort();
        assert_eq!(types, [SPDX, IN_TOTO]);
        assert_eq!(
            fake.count("GET", &format!("/v2/team/app/referrers/{digest}")),
            2,
            "checked by the push (the API lists what was put), then listed through the API"
        );
    }

    // The same fake without the API: imgpack keeps the fallback tag there.
    let plain = FakeRegistry::start(Hostility::default());
    let target = format!("{}/team/app:v1", plain.host());
    push(w, &target, &["--provenance=false"]);
    let index: Value = serde_json::from_slice(&plain.manifest("team/app", "v1").unwrap()).unwrap();
    let first = Digest::parse(index["manifests"][0]["digest"].as_str().unwrap()).unwrap();
    let tagged = plain
        .manifest("team/app", &format!("sha256-{}", first.hex()))
        .unwrap();
    let tagged: Value = serde_json::from_slice(&tagged).unwrap();
    assert_eq!(artifact_types(&tagged), [SPDX]);
}

#[test]
fn sbom_none_and_docker_archives_attach_nothing() {
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    run_expect(
        imgpack()
            .current_dir(w)
            .args(["build", "-q", "--name", "app", "--output", "oci:out:v1"])
            .args(["--sbom", "none", "--provenance=false"])
            .args(binaries(w)),
        true,
    );
    let index = Layout::new(w.join("out")).index();
    assert_eq!(index["manifests"].as_array().unwrap().len(), 1, "{index}");
    let error = one_error_line(
        imgpack()
            .current_dir(w)
            .args([
                "build", "-q", "--name", "app", "--output", "oci:x:v1", "--sbom", "spdx3",
            ])
            .args(binaries(w)),
    );
    assert!(error.contains("spdx, cyclonedx or none"), "{error}");
}
