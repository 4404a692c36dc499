//! An image's SBOM: its parts (binaries with what they link, CA bundle,
//! tzdata, rootfs, base image) as one list of components, written as SPDX 2.3
//! JSON or CycloneDX 1.6 JSON. Only inputs go in (no clock, no randomness):
//! the same image gives the same bytes.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use serde_json::{json, Value};
use sha2::{Digest as _, Sha256};

use crate::cargo::{Crate, CrateGraph};
use crate::gobuild::{GoBuildInfo, GoModule};

/// `--sbom`: which document, or none.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SbomFormat {
    Spdx,
    CycloneDx,
}

impl SbomFormat {
    /// `spdx`, `cyclonedx` or `none` (→ `None`).
    pub fn parse(value: &str) -> Result<Option<Self>, String> {
        match value {
            "spdx" => Ok(Some(SbomFormat::Spdx)),
            "cyclonedx" => Ok(Some(SbomFormat::CycloneDx)),
            "none" => Ok(None),
            other => Err(format!(
                "unknown --sbom '{other}': use spdx, cyclonedx or none"
            )),
        }
    }

    /// The artifact type of the referrer and the media type of its layer.
    pub fn media_type(self) -> &'static str {
        match self {
            SbomFormat::Spdx => "application/spdx+json",
            SbomFormat::CycloneDx => "application/vnd.cyclonedx+json",
        }
    }
}

/// What a binary in the image was built from.
#[derive(Clone, Debug)]
pub enum Linked {
    Go(GoBuildInfo),
    Rust(CrateGraph),
    /// Neither Go build information nor a cargo-auditable list: only the file is known.
    Unknown,
}

/// One executable in the image.
#[derive(Clone, Debug)]
pub struct BinaryPart {
    /// Its path in the image, e.g. `/app/api`.
    pub path: String,
    /// SHA-256 of the file, hex.
    pub sha256: String,
    pub linked: Linked,
}

/// What kind of thing a non-binary part is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PartKind {
    /// Files such as the CA bundle or zone files.
    Data,
    /// imgpack's minimal root file system.
    OperatingSystem,
    /// A base image.
    Container,
}

/// A part of the image that is not a binary: CA bundle, tzdata, rootfs, base image.
#[derive(Clone, Debug)]
pub struct ImagePart {
    pub name: String,
    pub version: String,
    pub kind: PartKind,
    pub purl: Option<String>,
    pub sha256: Option<String>,
    pub license: Option<String>,
    pub comment: String,
}

/// Everything one platform manifest's SBOM says.
#[derive(Clone, Debug)]
pub struct SbomInput {
    /// The image's name: the pushed repository or the binary's name.
    pub name: String,
    /// The platform manifest the SBOM describes, `sha256:…`.
    pub manifest_digest: String,
    /// `linux/arm64`.
    pub platform: String,
    /// RFC 3339, the image's `created` (SOURCE_DATE_EPOCH, else 1970).
    pub created: String,
    /// imgpack's version.
    pub tool_version: String,
    pub binaries: Vec<BinaryPart>,
    pub parts: Vec<ImagePart>,
}

/// SPDX `primaryPackagePurpose` / CycloneDX `type`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Purpose {
    Container,
    Application,
    Library,
    Data,
    OperatingSystem,
}

/// One component in either format.
#[derive(Clone, Debug)]
struct Component {
    id: String,
    name: String,
    version: String,
    purpose: Purpose,
    purl: Option<String>,
    sha256: Option<String>,
    license: Option<String>,
    download: Option<String>,
    comment: Option<String>,
}

/// Components and edges: `contains` from the image, `depends` between the others.
struct Inventory {
    image: Component,
    components: Vec<Component>,
    contains: Vec<String>,
    depends: Vec<(String, Vec<String>)>,
}

/// The SBOM document for `input`.
pub fn sbom(input: &SbomInput, format: SbomFormat) -> Vec<u8> {
    let inventory = inventory(input);
    let document = match format {
        SbomFormat::Spdx => spdx(input, &inventory),
        SbomFormat::CycloneDx => cyclonedx(input, &inventory),
    };
    let mut bytes = serde_json::to_vec_pretty(&document).expect("JSON values serialise");
    bytes.push(b'\n');
    bytes
}

fn inventory(input: &SbomInput) -> Inventory {
    let mut ids = IdMaker::default();
    let image = Component {
        id: ids.make("Image", &input.name),
        name: input.name.clone(),
        version: input.manifest_digest.clone(),
        purpose: Purpose::Container,
        purl: Some(oci_purl(
            &input.name,
            &input.manifest_digest,
            Some(&input.platform),
        )),
        sha256: input
            .manifest_digest
            .strip_prefix("sha256:")
            .map(str::to_owned),
        license: None,
        download: None,
        comment: Some(format!("the image manifest for {}", input.platform)),
    };
    let mut inventory = Inventory {
        image,
        components: Vec::new(),
        contains: Vec::new(),
        depends: Vec::new(),
    };
    for binary in &input.binaries {
        add_binary(&mut inventory, &mut ids, binary);
    }
    for part in &input.parts {
        let component = Component {
            id: ids.make("Part", &part.name),
            name: part.name.clone(),
            version: part.version.clone(),
            purpose: match part.kind {
                PartKind::Data => Purpose::Data,
                PartKind::OperatingSystem => Purpose::OperatingSystem,
                PartKind::Container => Purpose::Container,
            },
            purl: part.purl.clone(),
            sha256: part.sha256.clone(),
            license: part.license.clone(),
            download: None,
            comment: Some(part.comment.clone()),
        };
        inventory.contains.push(component.id.clone());
        inventory.components.push(component);
    }
    inventory
}

fn add_binary(inventory: &mut Inventory, ids: &mut IdMaker, binary: &BinaryPart) {
    let file_name = binary.path.rsplit('/').next().unwrap_or(&binary.path);
    let mut app = Component {
        id: ids.make("Binary", file_name),
        name: file_name.to_owned(),
        version: String::new(),
        purpose: Purpose::Application,
        purl: None,
        sha256: Some(binary.sha256.clone()),
        license: None,
        download: None,
        comment: Some(format!("{} in the image", binary.path)),
    };
    let mut deps = Vec::new();
    let mut edges = Vec::new();
    match &binary.linked {
        Linked::Go(info) => {
            if let Some(main) = &info.main {
                app.name = main.path.clone();
                app.version = main.version.clone();
                app.purl = Some(go_purl(&main.path, &main.version));
            }
            for module in &info.deps {
                deps.push(go_component(ids, module));
            }
            if let Some(version) = info.go_version.strip_prefix("go") {
                deps.push(Component {
                    id: ids.make("Go", "stdlib"),
                    name: "stdlib".into(),
                    version: info.go_version.clone(),
                    purpose: Purpose::Library,
                    purl: Some(format!("pkg:golang/stdlib@{version}")),
                    sha256: None,
                    license: Some("BSD-3-Clause".into()),
                    download: None,
                    comment: Some("the Go standard library and runtime".into()),
                });
            }
            let all = deps.iter().map(|d| d.id.clone()).collect();
            edges.push((app.id.clone(), all));
        }
        Linked::Rust(graph) => {
            app.name = graph.root.name.clone();
            app.version = graph.root.version.clone();
            app.purl = Some(cargo_purl(&graph.root));
            app.license = graph.root.license.clone();
            deps = graph.deps.iter().map(|c| crate_component(ids, c)).collect();
            for (from, children) in &graph.edges {
                let from = match from {
                    Some(index) => deps[*index].id.clone(),
                    None => app.id.clone(),
                };
                let to: Vec<String> = children.iter().map(|c| deps[*c].id.clone()).collect();
                if !to.is_empty() {
                    edges.push((from, to));
                }
            }
        }
        Linked::Unknown => {}
    }
    inventory.contains.push(app.id.clone());
    inventory.components.push(app);
    inventory.components.extend(deps);
    inventory.depends.extend(edges);
}

fn go_component(ids: &mut IdMaker, module: &GoModule) -> Component {
    // A module replaced by another module is that module; one replaced by a
    // directory keeps its required version, and the comment says where it came from.
    let (linked, comment) = match module.replace.as_deref() {
        Some(replacement) if !is_directory(replacement) => (
            replacement,
            Some(format!("replaces {} {}", module.path, module.version)),
        ),
        Some(directory) => (
            module,
            Some(format!("replaced by the directory {}", directory.path)),
        ),
        None => (module, None),
    };
    Component {
        id: ids.make("Go", &linked.path),
        name: linked.path.clone(),
        version: linked.version.clone(),
        purpose: Purpose::Library,
        purl: Some(go_purl(&linked.path, &linked.version)),
        sha256: h1_to_hex(&linked.sum),
        license: None,
        download: None,
        comment,
    }
}

fn crate_component(ids: &mut IdMaker, krate: &Crate) -> Component {
    Component {
        id: ids.make("Crate", &format!("{}-{}", krate.name, krate.version)),
        name: krate.name.clone(),
        version: krate.version.clone(),
        purpose: Purpose::Library,
        purl: Some(cargo_purl(krate)),
        sha256: krate.checksum.clone(),
        license: krate.license.clone(),
        download: krate.from_crates_io().then(|| {
            format!(
                "https://crates.io/api/v1/crates/{}/{}/download",
                krate.name, krate.version
            )
        }),
        comment: match (&krate.source, krate.from_crates_io()) {
            (Some(source), false) => Some(format!("from {source}")),
            (None, _) => Some("a path dependency".into()),
            _ => None,
        },
    }
}

/// A replacement by a directory (`=> ../lib`, which Go records with no
/// version or `(devel)`), as opposed to one by another module version.
fn is_directory(replacement: &GoModule) -> bool {
    replacement.path.starts_with(['.', '/'])
        || matches!(replacement.version.as_str(), "" | "(devel)")
}

/// `pkg:golang/github.com/gin-gonic/gin@v1.8.1` (no version for `(devel)`).
pub fn go_purl(path: &str, version: &str) -> String {
    match version {
        "" | "(devel)" => format!("pkg:golang/{path}"),
        version => format!("pkg:golang/{path}@{version}"),
    }
}

/// `pkg:cargo/serde@1.0.200`.
pub fn cargo_purl(krate: &Crate) -> String {
    format!("pkg:cargo/{}@{}", krate.name, krate.version)
}

/// `pkg:oci/app@sha256%3A…?repository_url=…&arch=…`.
pub fn oci_purl(name: &str, digest: &str, platform: Option<&str>) -> String {
    let (repository, last) = match name.rsplit_once('/') {
        Some((_, last)) => (Some(name), last),
        None => (None, name),
    };
    let mut purl = format!(
        "pkg:oci/{}@{}",
        last.to_ascii_lowercase(),
        digest.replace(':', "%3A")
    );
    let mut qualifiers = Vec::new();
    if let Some(arch) = platform.and_then(|p| p.split('/').nth(1)) {
        qualifiers.push(format!("arch={arch}"));
    }
    if let Some(repository) = repository {
        qualifiers.push(format!("repository_url={}", repository.replace(':', "%3A")));
    }
    if !qualifiers.is_empty() {
        purl.push('?');
        purl.push_str(&qualifiers.join("&"));
    }
    purl
}

/// A Go `h1:` sum is base64 SHA-256 (of the module's file list): as hex, the
/// form SPDX and CycloneDX checksums take, as syft records it too.
fn h1_to_hex(sum: &str) -> Option<String> {
    let bytes = STANDARD.decode(sum.strip_prefix("h1:")?).ok()?;
    (bytes.len() == 32).then(|| hex::encode(bytes))
}

/// Unique ids made of `[A-Za-z0-9.-]` (what SPDXRef- ids allow).
#[derive(Default)]
struct IdMaker {
    used: std::collections::HashSet<String>,
}

impl IdMaker {
    fn make(&mut self, kind: &str, name: &str) -> String {
        let clean: String = name
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                    c
                } else {
                    '-'
                }
            })
            .collect();
        let base = format!("SPDXRef-{kind}-{clean}");
        let mut id = base.clone();
        let mut n = 2;
        while !self.used.insert(id.clone()) {
            id = format!("{base}-{n}");
            n += 1;
        }
        id
    }
}

fn spdx(input: &SbomInput, inventory: &Inventory) -> Value {
    let packages: Vec<Value> = std::iter::once(&inventory.image)
        .chain(&inventory.components)
        .map(spdx_package)
        .collect();
    let mut relationships = vec![json!({
        "spdxElementId": "SPDXRef-DOCUMENT",
        "relationshipType": "DESCRIBES",
        "relatedSpdxElement": inventory.image.id,
    })];
    for id in &inventory.contains {
        relationships.push(json!({
            "spdxElementId": inventory.image.id,
            "relationshipType": "CONTAINS",
            "relatedSpdxElement": id,
        }));
    }
    for (from, to) in &inventory.depends {
        for id in to {
            relationships.push(json!({
                "spdxElementId": from,
                "relationshipType": "DEPENDS_ON",
                "relatedSpdxElement": id,
            }));
        }
    }
    json!({
        "spdxVersion": "SPDX-2.3",
        "dataLicense": "CC0-1.0",
        "SPDXID": "SPDXRef-DOCUMENT",
        "name": format!("{}@{} ({})", input.name, input.manifest_digest, input.platform),
        "documentNamespace": format!(
            "https://spdx.org/spdxdocs/imgpack/{}/{}",
            input.name.replace(|c: char| !c.is_ascii_alphanumeric() && c != '.' && c != '-', "-"),
            input.manifest_digest.trim_start_matches("sha256:")
        ),
        "creationInfo": {
            "created": input.created,
            "creators": [format!("Tool: imgpack-{}", input.tool_version)],
        },
        "packages": packages,
        "relationships": relationships,
    })
}

fn spdx_package(component: &Component) -> Value {
    let mut package = json!({
        "SPDXID": component.id,
        "name": component.name,
        "downloadLocation": component.download.as_deref().unwrap_or("NOASSERTION"),
        "filesAnalyzed": false,
        "licenseConcluded": "NOASSERTION",
        "licenseDeclared": component.license.as_deref().unwrap_or("NOASSERTION"),
        "copyrightText": "NOASSERTION",
        "primaryPackagePurpose": match component.purpose {
            Purpose::Container => "CONTAINER",
            Purpose::Application => "APPLICATION",
            Purpose::Library => "LIBRARY",
            Purpose::Data => "FILE",
            Purpose::OperatingSystem => "OPERATING-SYSTEM",
        },
    });
    if !component.version.is_empty() {
        package["versionInfo"] = json!(component.version);
    }
    if let Some(sha256) = &component.sha256 {
        package["checksums"] = json!([{"algorithm": "SHA256", "checksumValue": sha256}]);
    }
    if let Some(purl) = &component.purl {
        package["externalRefs"] = json!([{
            "referenceCategory": "PACKAGE-MANAGER",
            "referenceType": "purl",
            "referenceLocator": purl,
        }]);
    }
    if let Some(comment) = &component.comment {
        package["comment"] = json!(comment);
    }
    package
}

fn cyclonedx(input: &SbomInput, inventory: &Inventory) -> Value {
    let components: Vec<Value> = inventory
        .components
        .iter()
        .map(cyclonedx_component)
        .collect();
    let mut dependencies =
        vec![json!({"ref": inventory.image.id, "dependsOn": inventory.contains})];
    for (from, to) in &inventory.depends {
        dependencies.push(json!({"ref": from, "dependsOn": to}));
    }
    json!({
        "bomFormat": "CycloneDX",
        "specVersion": "1.6",
        "serialNumber": serial_number(&input.manifest_digest, &input.name),
        "version": 1,
        "metadata": {
            "timestamp": input.created,
            "tools": {"components": [{
                "type": "application",
                "name": "imgpack",
                "version": input.tool_version,
            }]},
            "component": cyclonedx_component(&inventory.image),
        },
        "components": components,
        "dependencies": dependencies,
    })
}

fn cyclonedx_component(component: &Component) -> Value {
    let mut value = json!({
        "type": match component.purpose {
            Purpose::Container => "container",
            Purpose::Application => "application",
            Purpose::Library => "library",
            Purpose::Data => "data",
            Purpose::OperatingSystem => "operating-system",
        },
        "bom-ref": component.id,
        "name": component.name,
    });
    if !component.version.is_empty() {
        value["version"] = json!(component.version);
    }
    if let Some(purl) = &component.purl {
        value["purl"] = json!(purl);
    }
    if let Some(sha256) = &component.sha256 {
        value["hashes"] = json!([{"alg": "SHA-256", "content": sha256}]);
    }
    if let Some(license) = component.license.as_deref().filter(|l| *l != "NOASSERTION") {
        value["licenses"] = json!([{"expression": license}]);
    }
    if let Some(comment) = &component.comment {
        value["description"] = json!(comment);
    }
    if component.purpose == Purpose::Data {
        // CycloneDX requires `data` components to say what the data is.
        value["data"] = json!([{"type": "dataset", "name": component.name}]);
    }
    value
}

/// A UUID-shaped serial number derived from the subject: stable across builds of the same image.
fn serial_number(digest: &str, name: &str) -> String {
    let hash = hex::encode(Sha256::digest(format!("{name}\n{digest}")));
    format!(
        "urn:uuid:{}-{}-{}-{}-{}",
        &hash[0..8],
        &hash[8..12],
        &hash[12..16],
        &hash[16..20],
        &hash[20..32]
    )
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use super::*;
    use crate::gobuild::parse_modinfo;

    fn input() -> SbomInput {
        let mut go = parse_modinfo(
            "path\texample.com/app\nmod\texample.com/app\t(devel)\t\n\
             dep\texample.com/lib\tv0.0.0-00010101000000-000000000000\t\n=>\t../lib\t(devel)\t\n\
             dep\tgolang.org/x/text\tv0.3.7\th1:olpwvP2KacW1ZWvsR7uQhoyTYvKAupfQrRGBFM352Gk=\n",
        )
        .unwrap();
        go.go_version = "go1.19.8".into();
        let serde = Crate {
            name: "serde".into(),
            version: "1.0.200".into(),
            source: Some("registry+https://github.com/rust-lang/crates.io-index".into()),
            license: Some("MIT OR Apache-2.0".into()),
            checksum: Some("cd".repeat(32)),
        };
        let rust = CrateGraph {
            root: Crate {
                name: "tool".into(),
                version: "0.1.0".into(),
                source: None,
                license: None,
                checksum: None,
            },
            deps: vec![serde],
            edges: BTreeMap::from([(None, BTreeSet::from([0])), (Some(0), BTreeSet::new())]),
        };
        SbomInput {
            name: "127.0.0.1:5000/team/app".into(),
            manifest_digest: format!("sha256:{}", "ab".repeat(32)),
            platform: "linux/arm64".into(),
            created: "1970-01-01T00:00:00Z".into(),
            tool_version: "0.1.0".into(),
            binaries: vec![
                BinaryPart {
                    path: "/app/app".into(),
                    sha256: "01".repeat(32),
                    linked: Linked::Go(go),
                },
                BinaryPart {
                    path: "/app/tool".into(),
                    sha256: "02".repeat(32),
                    linked: Linked::Rust(rust),
                },
            ],
            parts: vec![ImagePart {
                name: "tzdata".into(),
                version: "2026f".into(),
                kind: PartKind::Data,
                purl: None,
                sha256: None,
                license: None,
                comment: "zone files".into(),
            }],
        }
    }

    fn packages(document: &Value) -> Vec<(String, String)> {
        document["packages"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|p| {
                let purl = p["externalRefs"][0]["referenceLocator"].as_str()?;
                Some((p["name"].as_str()?.to_owned(), purl.to_owned()))
            })
            .collect()
    }

    #[test]
    fn spdx_lists_modules_crates_and_parts() {
        let document: Value = serde_json::from_slice(&sbom(&input(), SbomFormat::Spdx)).unwrap();
        let found = packages(&document);
        for (name, purl) in [
            ("example.com/app", "pkg:golang/example.com/app"),
            (
                "example.com/lib",
                "pkg:golang/example.com/lib@v0.0.0-00010101000000-000000000000",
            ),
            ("golang.org/x/text", "pkg:golang/golang.org/x/text@v0.3.7"),
            ("stdlib", "pkg:golang/stdlib@1.19.8"),
            ("serde", "pkg:cargo/serde@1.0.200"),
            ("tool", "pkg:cargo/tool@0.1.0"),
        ] {
            assert!(
                found.contains(&(name.to_owned(), purl.to_owned())),
                "{name} {purl} in {found:?}"
            );
        }
        let text = document.to_string();
        assert!(text.contains(&"cd".repeat(32)));
        // h1:olpw… as hex
        assert!(text.contains("a25a70bcfd8a69c5b5656bec47bb90868c9362f280ba97d0ad118114cdf9d869"));
        assert!(text.contains("replaced by the directory ../lib"));
        assert!(text.contains(r#""relationshipType":"DEPENDS_ON""#));
    }

    #[test]
    fn cyclonedx_has_the_same_components_and_a_stable_serial() {
        let bytes = sbom(&input(), SbomFormat::CycloneDx);
        assert_eq!(bytes, sbom(&input(), SbomFormat::CycloneDx));
        let document: Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(document["specVersion"], "1.6");
        let purls: Vec<&str> = document["components"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|c| c["purl"].as_str())
            .collect();
        assert!(purls.contains(&"pkg:cargo/serde@1.0.200"), "{purls:?}");
        assert!(
            purls.contains(&"pkg:golang/golang.org/x/text@v0.3.7"),
            "{purls:?}"
        );
        let serial = document["serialNumber"].as_str().unwrap();
        assert_eq!(serial.len(), "urn:uuid:".len() + 36);
    }

    #[test]
    fn ids_are_unique_and_clean() {
        let mut ids = IdMaker::default();
        assert_eq!(ids.make("Go", "a/b@c"), "SPDXRef-Go-a-b-c");
        assert_eq!(ids.make("Go", "a/b@c"), "SPDXRef-Go-a-b-c-2");
    }

    #[test]
    fn oci_purls_name_the_repository_and_arch() {
        assert_eq!(
            oci_purl("127.0.0.1:5000/team/App", "sha256:ab", Some("linux/arm64")),
            "pkg:oci/app@sha256%3Aab?arch=arm64&repository_url=127.0.0.1%3A5000/team/App"
        );
        assert_eq!(
            oci_purl("api", "sha256:ab", None),
            "pkg:oci/api@sha256%3Aab"
        );
    }
}
