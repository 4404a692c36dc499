//! The Rust packages linked into a binary: from `cargo metadata`'s resolved
//! graph for the target, platform and features that were built (normal
//! dependencies only), or, for a prebuilt binary, from the list
//! `cargo auditable` embeds in its `.dep-v0` section.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};

use goblin::elf::Elf;
use serde::Deserialize;
use serde_json::Value;

/// crates.io as cargo metadata names it.
const CRATES_IO: &str = "registry+https://github.com/rust-lang/crates.io-index";
/// The most a `.dep-v0` section may inflate to.
const MAX_AUDIT_JSON: u64 = 8 << 20;

/// A source id as an SBOM may show it: a git dependency's URL can hold a
/// token (`git+https://user:token@host/…`), which never leaves the build.
fn public_source(source: &str) -> String {
    imgpack_redact::strip_userinfo(source).into_owned()
}

/// One Rust package in a binary.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Crate {
    pub name: String,
    pub version: String,
    /// cargo's source id (`registry+https://…`, `git+https://…#rev`), `None` for a path package.
    pub source: Option<String>,
    /// SPDX expression from Cargo.toml's `license`, when it has one.
    pub license: Option<String>,
    /// SHA-256 of the `.crate` file, from Cargo.lock.
    pub checksum: Option<String>,
}

impl Crate {
    pub fn from_crates_io(&self) -> bool {
        self.source.as_deref() == Some(CRATES_IO)
    }
}

/// The root package of a binary and the packages it links.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CrateGraph {
    pub root: Crate,
    /// Every package the root links, once, sorted.
    pub deps: Vec<Crate>,
    /// Direct normal dependencies of each package (by index into `deps`; the root is `None`).
    pub edges: BTreeMap<Option<usize>, BTreeSet<usize>>,
}

/// What a Rust build was asked for: it selects the resolved graph.
#[derive(Clone, Debug, Default)]
pub struct CargoSelection<'a> {
    pub package: Option<&'a str>,
    pub bin: Option<&'a str>,
    pub features: &'a [String],
    pub no_default_features: bool,
    /// The rustc target, e.g. `aarch64-unknown-linux-musl`.
    pub target: &'a str,
}

/// Runs `cargo metadata` for `project` as it was built and takes the graph of
/// the package that owns the binary. After a build the index is local: offline.
pub fn cargo_graph(project: &Path, selection: &CargoSelection) -> Result<CrateGraph, String> {
    let mut command = Command::new("cargo");
    command
        .current_dir(project)
        .args(["metadata", "--format-version", "1", "--offline"])
        .args(["--filter-platform", selection.target])
        .arg("--manifest-path")
        .arg(project.join("Cargo.toml"))
        .stdin(Stdio::null());
    if !selection.features.is_empty() {
        command.args(["--features", &selection.features.join(",")]);
    }
    if selection.no_default_features {
        command.arg("--no-default-features");
    }
    let output = command
        .output()
        .map_err(|err| format!("cannot run cargo metadata: {err}"))?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let last = stderr.lines().rfind(|l| !l.trim().is_empty()).unwrap_or("");
        return Err(format!("cargo metadata failed: {}", last.trim()));
    }
    let metadata: Value = serde_json::from_slice(&output.stdout)
        .map_err(|err| format!("cargo metadata printed no JSON: {err}"))?;
    let lock = metadata["workspace_root"]
        .as_str()
        .map(|root| Path::new(root).join("Cargo.lock"))
        // The project's own file: bounded, and a FIFO there is skipped, not waited on.
        .and_then(|path| {
            imgpack_blob::read_local_text(&path, &imgpack_blob::local_file::LOCK_FILE).ok()
        })
        .map(|text| lock_checksums(&text))
        .unwrap_or_default();
    graph_from_metadata(&metadata, selection, &lock)
}

/// The graph below the binary's package in a `cargo metadata` document.
pub fn graph_from_metadata(
    metadata: &Value,
    selection: &CargoSelection,
    checksums: &HashMap<(String, String), String>,
) -> Result<CrateGraph, String> {
    let packages: HashMap<&str, &Value> = metadata["packages"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| Some((p["id"].as_str()?, p)))
        .collect();
    let nodes: HashMap<&str, &Value> = metadata["resolve"]["nodes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|n| Some((n["id"].as_str()?, n)))
        .collect();
    let root_id = root_package(metadata, &packages, selection)?;
    let crate_of = |id: &str| {
        let package = packages[id];
        let text = |key: &str| package[key].as_str().map(str::to_owned);
        let name = text("name").unwrap_or_default();
        let version = text("version").unwrap_or_default();
        Crate {
            checksum: checksums.get(&(name.clone(), version.clone())).cloned(),
            license: text("license").map(|l| spdx_expression(&l)),
            source: text("source").map(|source| public_source(&source)),
            name,
            version,
        }
    };
    // Breadth-first over normal edges; proc-macros run in the compiler and are not linked.
    let mut reached: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    let mut queue = vec![root_id];
    while let Some(id) = queue.pop() {
        if reached.contains_key(id) {
            continue;
        }
        let mut children = BTreeSet::new();
        for dep in nodes
            .get(id)
            .and_then(|n| n["deps"].as_array())
            .into_iter()
            .flatten()
        {
            let Some(child) = dep["pkg"].as_str() else {
                continue;
            };
            let normal = dep["dep_kinds"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|kind| kind["kind"].is_null());
            // A cycle back to the root cannot be built; cargo never reports one.
            let linked = child != root_id && packages.get(child).is_some_and(|p| !is_proc_macro(p));
            if normal && linked {
                children.insert(child);
                queue.push(child);
            }
        }
        reached.insert(id, children);
    }
    let mut deps: Vec<(Crate, &str)> = reached
        .keys()
        .filter(|id| **id != root_id)
        .map(|id| (crate_of(id), *id))
        .collect();
    deps.sort();
    let index: HashMap<&str, usize> = deps
        .iter()
        .enumerate()
        .map(|(i, (_, id))| (*id, i))
        .collect();
    let edges = reached
        .iter()
        .map(|(id, children)| {
            let from = index.get(id).copied();
            (from, children.iter().map(|c| index[c]).collect())
        })
        .collect();
    Ok(CrateGraph {
        root: crate_of(root_id),
        deps: deps.into_iter().map(|(c, _)| c).collect(),
        edges,
    })
}

/// The package that owns the binary: `--package`, else the one with the
/// `--bin` target, else the project's own package, else the one workspace
/// member with a binary.
fn root_package<'a>(
    metadata: &'a Value,
    packages: &HashMap<&'a str, &'a Value>,
    selection: &CargoSelection,
) -> Result<&'a str, String> {
    let members: Vec<&str> = metadata["workspace_members"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    let has_bin = |id: &&str, name: Option<&str>| {
        packages[id]["targets"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|t| {
                t["kind"]
                    .as_array()
                    .is_some_and(|k| k.iter().any(|k| k == "bin"))
                    && name.is_none_or(|name| t["name"] == name)
            })
    };
    let found = if let Some(package) = selection.package {
        members
            .iter()
            .find(|id| packages[**id]["name"] == package)
            .copied()
    } else if let Some(bin) = selection.bin {
        members.iter().find(|id| has_bin(id, Some(bin))).copied()
    } else if let Some(root) = metadata["resolve"]["root"].as_str() {
        Some(root)
    } else {
        let with_bins: Vec<&str> = members
            .iter()
            .filter(|id| has_bin(id, None))
            .copied()
            .collect();
        match with_bins.as_slice() {
            [one] => Some(*one),
            _ => None,
        }
    };
    found
        .filter(|id| packages.contains_key(id))
        .ok_or_else(|| "cannot tell which workspace package the binary belongs to".to_owned())
}

fn is_proc_macro(package: &Value) -> bool {
    package["targets"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|t| {
            t["kind"]
                .as_array()
                .is_some_and(|kinds| kinds.iter().any(|k| k == "proc-macro"))
        })
}

/// Cargo's old `MIT/Apache-2.0` means `MIT OR Apache-2.0`; anything that is not
/// made of SPDX expression characters is left out rather than passed on wrong.
pub fn spdx_expression(license: &str) -> String {
    let expression = license
        .split('/')
        .map(str::trim)
        .collect::<Vec<_>>()
        .join(" OR ");
    let valid = !expression.is_empty()
        && expression
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || " .+-():".contains(c));
    if valid {
        expression
    } else {
        "NOASSERTION".to_owned()
    }
}

#[derive(Deserialize)]
struct Lockfile {
    #[serde(default)]
    package: Vec<LockedPackage>,
}

#[derive(Deserialize)]
struct LockedPackage {
    name: String,
    version: String,
    checksum: Option<String>,
}

/// (name, version) → checksum from Cargo.lock (v3/v4 keep it per package).
pub fn lock_checksums(text: &str) -> HashMap<(String, String), String> {
    let Ok(lock) = toml::from_str::<Lockfile>(text) else {
        return HashMap::new();
    };
    lock.package
        .into_iter()
        .filter_map(|p| Some(((p.name, p.version), p.checksum?)))
        .collect()
}

#[derive(Deserialize)]
struct AuditData {
    packages: Vec<AuditPackage>,
}

#[derive(Deserialize)]
struct AuditPackage {
    name: String,
    version: String,
    source: String,
    #[serde(default)]
    kind: Option<String>,
    #[serde(default)]
    dependencies: Vec<usize>,
    #[serde(default)]
    root: bool,
}

/// The dependency list `cargo auditable` embeds (`.dep-v0`: zlib-compressed
/// JSON); `Ok(None)` for a binary without one. Build dependencies are left out.
pub fn read_auditable(bytes: &[u8]) -> Result<Option<CrateGraph>, String> {
    let Ok(elf) = Elf::parse(bytes) else {
        return Ok(None);
    };
    let Some(section) = elf
        .section_headers
        .iter()
        .find(|s| elf.shdr_strtab.get_at(s.sh_name) == Some(".dep-v0"))
    else {
        return Ok(None);
    };
    let start = section.sh_offset as usize;
    let compressed = start
        .checked_add(section.sh_size as usize)
        .and_then(|end| bytes.get(start..end))
        .ok_or("its .dep-v0 section lies outside the file")?;
    parse_auditable_section(compressed).map(Some)
}

/// Parses the contents of a `.dep-v0` section.
pub fn parse_auditable_section(compressed: &[u8]) -> Result<CrateGraph, String> {
    let mut json = Vec::new();
    flate2::read::ZlibDecoder::new(compressed)
        .take(MAX_AUDIT_JSON)
        .read_to_end(&mut json)
        .map_err(|err| format!("its .dep-v0 section is not zlib data: {err}"))?;
    let data: AuditData = serde_json::from_slice(&json)
        .map_err(|err| format!("its .dep-v0 section is not cargo-auditable JSON: {err}"))?;
    graph_from_audit(&data)
}

fn graph_from_audit(data: &AuditData) -> Result<CrateGraph, String> {
    let root = data
        .packages
        .iter()
        .position(|p| p.root)
        .ok_or("its .dep-v0 list has no root package")?;
    let to_crate = |p: &AuditPackage| Crate {
        name: p.name.clone(),
        version: p.version.clone(),
        source: match p.source.as_str() {
            "crates.io" => Some(CRATES_IO.to_owned()),
            "local" => None,
            other => Some(public_source(other)),
        },
        license: None,
        checksum: None,
    };
    // Walk from the root so that build-only packages (and what only they use) stay out.
    let mut reached: BTreeMap<usize, BTreeSet<usize>> = BTreeMap::new();
    let mut queue = vec![root];
    while let Some(at) = queue.pop() {
        if reached.contains_key(&at) {
            continue;
        }
        let children: BTreeSet<usize> = data.packages[at]
            .dependencies
            .iter()
            .copied()
            .filter(|&c| {
                data.packages
                    .get(c)
                    .is_some_and(|p| p.kind.as_deref() != Some("build"))
            })
            .collect();
        queue.extend(children.iter().copied());
        reached.insert(at, children);
    }
    if let Some((&at, _)) = reached
        .iter()
        .find(|(_, children)| children.contains(&root))
    {
        return Err(format!(
            "its .dep-v0 list is malformed: {} depends on the root package {}, a cycle \
             cargo never builds",
            describe(&data.packages[at]),
            describe(&data.packages[root])
        ));
    }
    let mut deps: Vec<(Crate, usize)> = reached
        .keys()
        .filter(|&&i| i != root)
        .map(|&i| (to_crate(&data.packages[i]), i))
        .collect();
    deps.sort();
    let index: HashMap<usize, usize> = deps.iter().enumerate().map(|(n, (_, i))| (*i, n)).collect();
    let edges = reached
        .iter()
        .map(|(at, children)| {
            (
                index.get(at).copied(),
                children.iter().map(|c| index[c]).collect(),
            )
        })
        .collect();
    Ok(CrateGraph {
        root: to_crate(&data.packages[root]),
        deps: deps.into_iter().map(|(c, _)| c).collect(),
        edges,
    })
}

/// `name version` of a listed package, quoted safely: the list comes from the binary.
fn describe(package: &AuditPackage) -> String {
    crate::printable(&format!("{} {}", package.name, package.version))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn package(id: &str, kinds: &[&str], license: &str) -> Value {
        let name = id.split('@').next().unwrap();
        json!({"id": id, "name": name, "version": "1.0.0", "license": license,
               "source": CRATES_IO, "targets": [{"name": name, "kind": kinds}]})
    }

    fn dep(pkg: &str, kind: Option<&str>) -> Value {
        json!({"pkg": pkg, "dep_kinds": [{"kind": kind, "target": null}]})
    }

    #[test]
    fn only_linked_packages_are_in_the_graph() {
        let metadata = json!({
            "workspace_members": ["app@1.0.0"],
            "packages": [
                package("app@1.0.0", &["bin"], "MIT"),
                package("serde@1.0.0", &["lib"], "MIT/Apache-2.0"),
                package("derive@1.0.0", &["proc-macro"], "MIT"),
                package("syn@1.0.0", &["lib"], "MIT"),
                package("cc@1.0.0", &["lib"], "MIT"),
                package("testlib@1.0.0", &["lib"], "MIT"),
            ],
            "resolve": {"root": "app@1.0.0", "nodes": [
                {"id": "app@1.0.0", "deps": [dep("serde@1.0.0", None), dep("derive@1.0.0", None),
                                              dep("cc@1.0.0", Some("build")), dep("testlib@1.0.0", Some("dev"))]},
                {"id": "derive@1.0.0", "deps": [dep("syn@1.0.0", None)]},
                {"id": "serde@1.0.0", "deps": []},
            ]}
        });
        let checksums =
            HashMap::from([(("serde".to_owned(), "1.0.0".to_owned()), "ab".repeat(32))]);
        let selection = CargoSelection {
            target: "x86_64-unknown-linux-musl",
            ..Default::default()
        };
        let graph = graph_from_metadata(&metadata, &selection, &checksums).unwrap();
        assert_eq!(graph.root.name, "app");
        let names: Vec<&str> = graph.deps.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["serde"]);
        assert_eq!(graph.deps[0].license.as_deref(), Some("MIT OR Apache-2.0"));
        assert_eq!(graph.deps[0].checksum, Some("ab".repeat(32)));
        assert_eq!(graph.edges[&None], BTreeSet::from([0]));
    }

    #[test]
    fn auditable_lists_skip_build_dependencies() {
        let data: AuditData = serde_json::from_value(json!({"packages": [
            {"name": "app", "version": "0.1.0", "source": "local", "dependencies": [1, 2], "root": true},
            {"name": "itoa", "version": "1.0.9", "source": "crates.io"},
            {"name": "cc", "version": "1.0.0", "source": "crates.io", "kind": "build"},
        ]}))
        .unwrap();
        let graph = graph_from_audit(&data).unwrap();
        assert_eq!(graph.root.source, None);
        assert_eq!(graph.deps.len(), 1);
        assert!(graph.deps[0].from_crates_io());
        assert_eq!(graph.deps[0].version, "1.0.9");
    }

    #[test]
    fn git_source_ids_lose_their_credentials() {
        let data: AuditData = serde_json::from_value(json!({"packages": [
            {"name": "app", "version": "0.1.0", "source": "local", "dependencies": [1], "root": true},
            {"name": "dep", "version": "1.0.0",
             "source": "git+https://alice:PASSWORD@git.example/dep.git?rev=v1#0123abcd"},
        ]}))
        .unwrap();
        let graph = graph_from_audit(&data).unwrap();
        assert_eq!(
            graph.deps[0].source.as_deref(),
            Some("git+https://git.example/dep.git?rev=v1#0123abcd")
        );
    }

    #[test]
    fn an_auditable_list_whose_root_depends_on_itself_is_refused() {
        for packages in [
            json!([{"name": "app", "version": "0.1.0", "source": "local", "dependencies": [0], "root": true}]),
            json!([
                {"name": "app", "version": "0.1.0", "source": "local", "dependencies": [1], "root": true},
                {"name": "lib\u{1b}[2J", "version": "1.0.0", "source": "crates.io", "dependencies": [0]},
            ]),
        ] {
            let data: AuditData = serde_json::from_value(json!({ "packages": packages })).unwrap();
            let err = graph_from_audit(&data).unwrap_err();
            assert!(
                err.contains("depends on the root package app 0.1.0"),
                "{err}"
            );
            assert!(!err.chars().any(char::is_control), "{err:?}");
        }
    }

    #[test]
    fn a_metadata_cycle_back_to_the_root_is_not_followed() {
        let metadata = json!({
            "workspace_members": ["app@1.0.0"],
            "packages": [package("app@1.0.0", &["bin"], "MIT"), package("lib@1.0.0", &["lib"], "MIT")],
            "resolve": {"root": "app@1.0.0", "nodes": [
                {"id": "app@1.0.0", "deps": [dep("app@1.0.0", None), dep("lib@1.0.0", None)]},
                {"id": "lib@1.0.0", "deps": [dep("app@1.0.0", None)]},
            ]}
        });
        let selection = CargoSelection {
            target: "x86_64-unknown-linux-musl",
            ..Default::default()
        };
        let graph = graph_from_metadata(&metadata, &selection, &HashMap::new()).unwrap();
        assert_eq!(graph.deps.len(), 1);
        assert_eq!(graph.edges[&None], BTreeSet::from([0]));
        assert_eq!(graph.edges[&Some(0)], BTreeSet::new());
    }

    #[test]
    fn licenses_become_spdx_expressions_or_noassertion() {
        assert_eq!(spdx_expression("MIT/Apache-2.0"), "MIT OR Apache-2.0");
        assert_eq!(
            spdx_expression("Apache-2.0 WITH LLVM-exception"),
            "Apache-2.0 WITH LLVM-exception"
        );
        assert_eq!(spdx_expression("see LICENSE, please"), "NOASSERTION");
    }

    #[test]
    fn lock_checksums_are_read() {
        let lock = "version = 4\n[[package]]\nname = \"itoa\"\nversion = \"1.0.9\"\nsource = \"x\"\nchecksum = \"cafe\"\n\n[[package]]\nname = \"app\"\nversion = \"0.1.0\"\n";
        let sums = lock_checksums(lock);
        assert_eq!(sums.len(), 1);
        assert_eq!(sums[&("itoa".to_owned(), "1.0.9".to_owned())], "cafe");
    }
}
