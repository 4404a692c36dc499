//! SLSA provenance v1: an in-toto Statement per platform manifest saying who
//! built it (imgpack and its version), from what (the project, its git
//! revision, the base image, the toolchains) and with which settings.

use std::collections::BTreeMap;

use serde_json::{json, Value};

/// The in-toto statement type and the SLSA predicate type.
pub const STATEMENT_TYPE: &str = "https://in-toto.io/Statement/v1";
pub const SLSA_PREDICATE_TYPE: &str = "https://slsa.dev/provenance/v1";
/// What the statement is, as a DSSE payload type and a referrer's artifact type.
pub const IN_TOTO_MEDIA_TYPE: &str = "application/vnd.in-toto+json";
/// The layer holding the DSSE envelope (what cosign attestations use too).
pub const DSSE_MEDIA_TYPE: &str = "application/vnd.dsse.envelope.v1+json";
/// The annotation naming the predicate on the referrer, so it can be found without reading it.
pub const PREDICATE_TYPE_ANNOTATION: &str = "in-toto.io/predicate-type";
/// imgpack's build type: documented in docs/supply-chain.md.
pub const BUILD_TYPE: &str = "https://imgpack.dev/build/v1";
/// The builder id: imgpack itself (it runs where it is invoked, like buildx's local builder).
pub const BUILDER_ID: &str = "https://imgpack.dev/imgpack";

/// One input the build resolved: a git revision, a base image, a toolchain.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResolvedDependency {
    pub uri: String,
    /// e.g. `{"gitCommit": "…"}` or `{"sha256": "…"}`; may be empty (a toolchain known by version).
    pub digest: BTreeMap<String, String>,
    pub name: Option<String>,
}

/// Everything one platform manifest's provenance says.
#[derive(Clone, Debug)]
pub struct ProvenanceInput {
    /// The image's name: the pushed repository or the binary's name.
    pub subject_name: String,
    /// The platform manifest, `sha256:…`.
    pub manifest_digest: String,
    pub tool_version: String,
    /// The project, platforms, flags and imgpack.toml settings that shaped the build.
    pub external_parameters: Value,
    /// Settings that were not the user's choice (the platform this statement is for).
    pub internal_parameters: Value,
    pub dependencies: Vec<ResolvedDependency>,
    /// RFC 3339.
    pub started_on: String,
    pub finished_on: String,
}

/// The statement as JSON bytes: the DSSE payload.
pub fn provenance_statement(input: &ProvenanceInput) -> Vec<u8> {
    let dependencies: Vec<Value> = input
        .dependencies
        .iter()
        .map(|dependency| {
            let mut value = json!({"uri": dependency.uri});
            if !dependency.digest.is_empty() {
                value["digest"] = json!(dependency.digest);
            }
            if let Some(name) = &dependency.name {
                value["name"] = json!(name);
            }
            value
        })
        .collect();
    let statement = json!({
        "_type": STATEMENT_TYPE,
        "subject": [{
            "name": input.subject_name,
            "digest": {"sha256": input.manifest_digest.trim_start_matches("sha256:")},
        }],
        "predicateType": SLSA_PREDICATE_TYPE,
        "predicate": {
            "buildDefinition": {
                "buildType": BUILD_TYPE,
                "externalParameters": input.external_parameters,
                "internalParameters": input.internal_parameters,
                "resolvedDependencies": dependencies,
            },
            "runDetails": {
                "builder": {
                    "id": BUILDER_ID,
                    "version": {"imgpack": input.tool_version},
                },
                "metadata": {
                    "startedOn": input.started_on,
                    "finishedOn": input.finished_on,
                },
            },
        },
    });
    serde_json::to_vec(&statement).expect("JSON values serialise")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statement_names_subject_builder_and_dependencies() {
        let input = ProvenanceInput {
            subject_name: "127.0.0.1:5000/app".into(),
            manifest_digest: format!("sha256:{}", "ab".repeat(32)),
            tool_version: "0.1.0".into(),
            external_parameters: json!({"platforms": ["linux/amd64"]}),
            internal_parameters: json!({"platform": "linux/amd64"}),
            dependencies: vec![ResolvedDependency {
                uri: "git+https://example.com/app".into(),
                digest: BTreeMap::from([("gitCommit".into(), "cafe".into())]),
                name: None,
            }],
            started_on: "1970-01-01T00:00:00Z".into(),
            finished_on: "1970-01-01T00:00:00Z".into(),
        };
        let statement: Value = serde_json::from_slice(&provenance_statement(&input)).unwrap();
        assert_eq!(statement["_type"], STATEMENT_TYPE);
        assert_eq!(statement["subject"][0]["digest"]["sha256"], "ab".repeat(32));
        let predicate = &statement["predicate"];
        assert_eq!(
            predicate["runDetails"]["builder"]["version"]["imgpack"],
            "0.1.0"
        );
        assert_eq!(
            predicate["buildDefinition"]["resolvedDependencies"][0]["digest"]["gitCommit"],
            "cafe"
        );
    }
}
