//! Property tests of every parser of untrusted input: references and platforms, manifests and
//! indexes, `WWW-Authenticate` challenges, the base-layer tar reader (and diff IDs), ELF headers,
//! and imgpack.toml (through the binary, so every check after parsing is covered too; also as
//! the untrusted file of a git source, whose accepted forms set no refused key). Inputs
//! are seeds from tests/fuzz/corpus (or built in code, for binary formats) mutated at random:
//! no input may panic, hang or be accepted in a form the caller cannot trust.
//!
//! Each target runs a bounded number of cases (a few seconds in CI); IMGPACK_FUZZ_CASES=N sets
//! N cases per target for a longer local run. Failures are saved in tests/fuzz/regressions and
//! replayed first on every run; a failure found is also kept as a named regression test below.

use std::path::{Path, PathBuf};

use imgpack_e2e::*;
use imgpack_layer::LayerPaths;
use imgpack_platform::Platform;
use imgpack_registry::{
    parse_challenge, parse_document, Challenge, Document, ImageRef, LAYER_TYPES,
};
use proptest::prelude::*;
use proptest::test_runner::{Config, FileFailurePersistence};

fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus")
}

fn corpus_file(name: &str) -> Vec<u8> {
    std::fs::read(corpus_dir().join(name)).unwrap_or_else(|err| panic!("corpus {name}: {err}"))
}

fn corpus_lines(name: &str) -> Vec<Vec<u8>> {
    String::from_utf8(corpus_file(name))
        .unwrap()
        .lines()
        .map(|line| line.as_bytes().to_vec())
        .collect()
}

/// The longest one case may take before it counts as a hang and fails (far above what any
/// case takes on a loaded machine; a parser in a loop never ends). Proptest runs the cases of a
/// target with a timeout in a child process, so a hang is found, shrunk and saved like any
/// failure instead of stopping the test binary.
const CASE_TIMEOUT_MS: u32 = 30_000;

/// The runner config of target `name`: `cases` cases (or IMGPACK_FUZZ_CASES), each within
/// [`CASE_TIMEOUT_MS`], failures saved in tests/fuzz/regressions/NAME.txt.
fn config(name: &'static str, cases: u32) -> Config {
    let cases = std::env::var("IMGPACK_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(cases);
    let file: &'static str = Box::leak(format!("fuzz/regressions/{name}.txt").into_boxed_str());
    Config {
        cases,
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct(file))),
        timeout: CASE_TIMEOUT_MS,
        ..Config::default()
    }
}

/// Tokens worth splicing into structured text.
const TOKENS: &[&[u8]] = &[
    b"\"",
    b"{",
    b"}",
    b"[",
    b"]",
    b",",
    b":",
    b"=",
    b"\0",
    b"\n",
    b"\x1b[2J",
    b"-1",
    b"1e999",
    b"null",
    b"\"mediaType\"",
    b"\"manifests\"",
    b"\"layers\"",
    b"\"config\"",
    b"sha256:",
    b"realm=",
    b"service=",
    b"Bearer ",
    b"Basic ",
    b"@sha256:",
    b"//",
    b"..",
    b"/",
    b"[[files]]",
    b"\xff\xfe",
    b"\xe2\x80\xae",
];

#[derive(Clone, Debug)]
enum Mutation {
    Flip(u16, u8),
    Insert(u16, u8),
    Delete(u16, u16),
    Duplicate(u16, u16),
    Truncate(u16),
    Splice(u16, usize),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<u16>(), any::<u8>()).prop_map(|(p, b)| Mutation::Flip(p, b)),
        (any::<u16>(), any::<u8>()).prop_map(|(p, b)| Mutation::Insert(p, b)),
        (any::<u16>(), any::<u16>()).prop_map(|(p, n)| Mutation::Delete(p, n % 64)),
        (any::<u16>(), any::<u16>()).prop_map(|(p, n)| Mutation::Duplicate(p, n % 256)),
        any::<u16>().prop_map(Mutation::Truncate),
        (any::<u16>(), 0..TOKENS.len()).prop_map(|(p, t)| Mutation::Splice(p, t)),
    ]
}

/// A position in `len` bytes from a 16-bit fraction.
fn at(fraction: u16, len: usize) -> usize {
    fraction as usize * (len + 1) / 65536
}

fn apply(mut bytes: Vec<u8>, mutations: &[Mutation]) -> Vec<u8> {
    for mutation in mutations {
        let len = bytes.len();
        match *mutation {
            Mutation::Flip(p, b) if len > 0 => bytes[at(p, len - 1)] ^= b | 1,
            Mutation::Insert(p, b) => bytes.insert(at(p, len), b),
            Mutation::Delete(p, n) => {
                let start = at(p, len);
                bytes.drain(start..(start + n as usize).min(len));
            }
            Mutation::Duplicate(p, n) => {
                let start = at(p, len);
                let piece = bytes[start..(start + n as usize).min(len)].to_vec();
                bytes.splice(start..start, piece);
            }
            Mutation::Truncate(p) => bytes.truncate(at(p, len)),
            Mutation::Splice(p, t) => {
                let start = at(p, len);
                bytes.splice(start..start, TOKENS[t].iter().copied());
            }
            Mutation::Flip(..) => {}
        }
    }
    bytes
}

/// A seed from `seeds`, mutated 0 to 8 times.
fn mutated(seeds: Vec<Vec<u8>>) -> impl Strategy<Value = Vec<u8>> {
    assert!(!seeds.is_empty());
    (0..seeds.len(), prop::collection::vec(mutation(), 0..8))
        .prop_map(move |(seed, mutations)| apply(seeds[seed].clone(), &mutations))
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

const CONTENT_TYPES: [Option<&str>; 5] = [
    None,
    Some("application/vnd.oci.image.manifest.v1+json"),
    Some("application/vnd.oci.image.index.v1+json"),
    Some("application/json"),
    Some("text/html; charset=utf-8"),
];

fn manifest_seeds() -> Vec<Vec<u8>> {
    [
        "oci-manifest.json",
        "oci-index.json",
        "docker-manifest.json",
        "docker-list.json",
    ]
    .map(corpus_file)
    .to_vec()
}

proptest! {
    #![proptest_config(config("manifests", 3000))]
    #[test]
    fn manifests_are_checked_or_refused(bytes in mutated(manifest_seeds()), ct in 0..CONTENT_TYPES.len()) {
        if let Ok(document) = parse_document(&bytes, CONTENT_TYPES[ct]) {
            let value: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
            // Never both an index and a manifest, and only layers imgpack can read.
            prop_assert!(!(value.get("manifests").is_some() && value.get("layers").is_some()));
            if let Document::Manifest { layers, .. } = document {
                for layer in layers {
                    prop_assert!(LAYER_TYPES.contains(&layer.media_type.as_str()), "{}", layer.media_type);
                }
            }
        }
    }
}

proptest! {
    #![proptest_config(config("challenges", 3000))]
    #[test]
    fn challenges_parse_without_panics(bytes in mutated(corpus_lines("challenges.txt"))) {
        let _ = parse_challenge(&text(&bytes));
    }

    #[test]
    fn well_formed_bearer_challenges_keep_realm_and_service(
        realm in "https://[a-z]{1,10}(\\.[a-z]{2,5})?(:[0-9]{1,5})?/[a-z/,=]{0,20}",
        service in "[a-zA-Z0-9._:-]{1,30}",
        scope_first in any::<bool>(),
    ) {
        let header = match scope_first {
            true => format!("Bearer scope=\"repository:a/b:pull,push\",realm=\"{realm}\",service=\"{service}\""),
            false => format!("Bearer realm=\"{realm}\", service=\"{service}\""),
        };
        prop_assert_eq!(
            parse_challenge(&header),
            Some(Challenge::Bearer { realm, service: Some(service) })
        );
    }
}

proptest! {
    #![proptest_config(config("references", 3000))]
    #[test]
    fn references_parse_or_are_refused_with_a_line(bytes in mutated(corpus_lines("references.txt"))) {
        let input = text(&bytes);
        match ImageRef::parse_push_target(&input) {
            Ok(reference) => {
                prop_assert!(!reference.repository().is_empty());
                prop_assert!(!reference.repository().chars().any(|c| c.is_ascii_uppercase()));
                prop_assert!(!reference.tag().is_empty());
            }
            Err(err) => {
                let line = format!("{err:#}");
                prop_assert!(!line.contains('\n'), "{}", line);
            }
        }
    }

    #[test]
    fn platforms_parse_or_are_refused(bytes in mutated(corpus_lines("references.txt"))) {
        if let Ok(platform) = text(&bytes).parse::<Platform>() {
            // What parses prints back as a platform that parses to itself.
            prop_assert_eq!(platform.to_string().parse::<Platform>().ok(), Some(platform));
        }
    }
}

/// A base layer as registries send them: files, directories, symlinks (one a loop), a long
/// name, whiteouts and an opaque directory.
fn tar_seed() -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    let mut add = |path: &str, kind: tar::EntryType, link: Option<&str>, data: &[u8]| {
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(kind);
        header.set_size(data.len() as u64);
        header.set_mode(0o755);
        if let Some(link) = link {
            header.set_link_name(link).unwrap();
        }
        builder.append_data(&mut header, path, data).unwrap();
    };
    add(
        "usr/lib/x86_64-linux-gnu",
        tar::EntryType::Directory,
        None,
        b"",
    );
    add(
        "usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2",
        tar::EntryType::Regular,
        None,
        b"ld",
    );
    add("lib64", tar::EntryType::Symlink, Some("usr/lib64"), b"");
    add(
        "usr/lib64/ld-linux-x86-64.so.2",
        tar::EntryType::Symlink,
        Some("../lib/x86_64-linux-gnu/ld-linux-x86-64.so.2"),
        b"",
    );
    add("loop/a", tar::EntryType::Symlink, Some("/loop/a"), b"");
    add(
        &format!("{}/file", "d".repeat(200)),
        tar::EntryType::Regular,
        None,
        b"x",
    );
    add("etc/.wh..wh..opq", tar::EntryType::Regular, None, b"");
    add("usr/.wh.share", tar::EntryType::Regular, None, b"");
    builder.into_inner().unwrap()
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    encoder.write_all(bytes).unwrap();
    encoder.finish().unwrap()
}

proptest! {
    #![proptest_config(config("layer_tar", 600))]
    #[test]
    fn base_layers_are_read_without_panics_or_loops(
        bytes in mutated(vec![tar_seed()]),
        compressed in any::<bool>(),
        path in "/[a-z0-9./]{0,40}",
    ) {
        let (bytes, media_type) = match compressed {
            true => (gzip(&bytes), "application/vnd.oci.image.layer.v1.tar+gzip"),
            false => (bytes, "application/vnd.oci.image.layer.v1.tar"),
        };
        let mut paths = LayerPaths::default();
        if paths.add_layer(&bytes[..], media_type).is_ok() {
            let _ = paths.resolves(&path);
            let _ = paths.resolves("/lib64/ld-linux-x86-64.so.2");
            let _ = paths.resolves("/loop/a");
        }
        let _ = imgpack_layer::diff_id(&bytes[..], media_type);
    }
}

fn elf_seeds() -> Vec<Vec<u8>> {
    vec![
        ElfBuilder::new(Arch::Amd64)
            .payload(b"static".to_vec())
            .build(),
        ElfBuilder::new(Arch::Arm64).pie().build(),
        ElfBuilder::new(Arch::Amd64)
            .interpreter("/lib64/ld-linux-x86-64.so.2")
            .dynamic(&["libc.so.6"])
            .build(),
    ]
}

proptest! {
    #![proptest_config(config("elf", 600))]
    #[test]
    fn elf_headers_are_read_without_panics(bytes in mutated(elf_seeds())) {
        let file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(file.path(), &bytes).unwrap();
        let _ = imgpack_platform::inspect_elf(file.path());
        let _ = imgpack_platform::check_binary(file.path(), &"linux/amd64".parse().unwrap());
    }
}

/// The error of a build in a directory with no project, whatever config it accepted.
const NO_PROJECT: &str = "error: . holds neither Go files nor a Cargo.toml";

proptest! {
    #![proptest_config(config("imgpack_toml", 120))]
    #[test]
    fn imgpack_toml_gets_one_error_line_never_a_panic(bytes in mutated(vec![corpus_file("imgpack.toml")])) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("imgpack.toml"), &bytes).unwrap();
        let output = imgpack()
            .current_dir(dir.path())
            .env("IMGPACK_CACHE_DIR", dir.path().join("cache"))
            .args(["build", "-o", "oci:out"])
            .output()
            .unwrap();
        let err = stderr(&output);
        prop_assert!(!err.contains("panicked"), "{}", err);
        // No project here: whatever the file says, the build ends in one error line.
        prop_assert_eq!(output.status.code(), Some(1), "{}", err);
        let last = err.trim_end().lines().last().unwrap_or_default();
        prop_assert!(last.starts_with("error: "), "{}", err);
        // A file imgpack refuses is named (with its line) in that error; one it accepts leaves
        // the build to fail on the empty directory, which is all the line may say then.
        prop_assert!(
            last.contains("imgpack.toml") || last.starts_with(NO_PROJECT),
            "{}",
            err
        );
    }
}

/// What a generated imgpack.toml line may say: a safe form and an untrusted one of each key
/// of the table in crates/imgpack/src/config/trust.rs, and keys that are always fine.
const TOML_LINES: &[&str] = &[
    "name = \"api\"",
    "ca_certs = \"embedded\"",
    "ca_certs = \"/etc/ssl/private/ca.pem\"",
    "tzdata = \"host\"",
    "tzdata = \"zoneinfo\"",
    "sign_key = \"keys/cosign.key\"",
    "base = \"registry.example.com/base:1\"",
    "base = \"oci:/var/lib/base\"",
    "user = \"65532\"",
    "env = { A = \"1\" }",
    "[go]\nldflags = \"-X main.v=1 -s -w\"",
    "[go]\nldflags = \"-X main.v=1 -extldflags=-static\"",
    "[go]\ntags = [\"netgo\"]",
    "[go]\nenv = { GOFLAGS = \"-toolexec=/bin/sh\" }",
    "[rust]\nprofile = \"release\"",
    "[[files]]\nsrc = \"imgpack.toml\"\ndst = \"/etc/a\"",
    "[[files]]\nsrc = \"/etc/hostname\"\ndst = \"/etc/h\"",
    "[[files]]\nsrc = \"imgpack.toml\"\ndst = \"/etc/b\"\nallow_outside_project = true",
    "[[files]]\nsrc = \"imgpack.toml\"\ndst = \"/etc/c\"\nallow_outside_project = false",
    "[[image]]\nname = \"w\"\nsign_key = \"k\"",
    "[[image]]\nname = \"v\"",
];

/// A file of random lines of [`TOML_LINES`]: tables last, so every key lands where it says.
fn generated_toml() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(0..TOML_LINES.len(), 0..6).prop_map(|mut picks| {
        picks.sort_by_key(|&i| TOML_LINES[i].starts_with('['));
        picks.dedup();
        let lines: Vec<&str> = picks.iter().map(|&i| TOML_LINES[i]).collect();
        format!("{}\n", lines.join("\n")).into_bytes()
    })
}

/// The keys of the trust table a parsed file sets, judged here on their own (not by imgpack's
/// code): where a section sets one, a git source's file must be refused.
fn untrusted_keys_set(file: &toml::Table) -> Vec<String> {
    let mut found = Vec::new();
    let images = file
        .get("image")
        .and_then(|v| v.as_array())
        .cloned()
        .unwrap_or_default();
    let sections =
        std::iter::once(file.clone()).chain(images.iter().filter_map(|v| v.as_table().cloned()));
    for section in sections {
        let text = |key: &str| section.get(key).and_then(|v| v.as_str()).map(str::to_owned);
        for key in ["ca_certs", "tzdata"] {
            if text(key).is_some_and(|v| !["embedded", "host", "none"].contains(&v.as_str())) {
                found.push(key.to_owned());
            }
        }
        if section.contains_key("sign_key") {
            found.push("sign_key".into());
        }
        let local_schemes = ["oci:", "oci-archive:", "docker-archive:", "file:"];
        if text("base").is_some_and(|b| {
            b.starts_with(['/', '.', '~']) || local_schemes.iter().any(|s| b.starts_with(s))
        }) {
            found.push("base".into());
        }
        if let Some(go) = section.get("go").and_then(|v| v.as_table()) {
            if go
                .get("env")
                .and_then(|v| v.as_table())
                .is_some_and(|env| !env.is_empty())
            {
                found.push("[go] env".into());
            }
            // Quoted words are go's to split; a file with quotes is judged by the other keys.
            let ldflags = go
                .get("ldflags")
                .and_then(|v| v.as_str())
                .unwrap_or_default();
            let mut words = ldflags.split_whitespace();
            while let Some(word) = words.next().filter(|_| !ldflags.contains(['\'', '"'])) {
                let name = word.trim_start_matches('-');
                match name.split_once('=').map_or(name, |(name, _)| name) {
                    _ if !word.starts_with('-') => {}
                    "X" if !name.contains('=') => {
                        words.next();
                    }
                    "X" | "s" | "w" => {}
                    _ => found.push("[go] ldflags".into()),
                }
            }
        }
        for entry in section
            .get("files")
            .and_then(|v| v.as_array())
            .into_iter()
            .flatten()
        {
            if entry.get("allow_outside_project").and_then(|v| v.as_bool()) == Some(true) {
                found.push("[[files]] allow_outside_project".into());
            }
            if entry
                .get("src")
                .and_then(|v| v.as_str())
                .is_some_and(|s| s.starts_with('/'))
            {
                found.push("[[files]] src".into());
            }
        }
    }
    found
}

/// Runs `command`, killed after a minute: a hang is a failure, not a stuck test run.
fn output_within_a_minute(command: &mut std::process::Command) -> std::process::Output {
    let mut child = command
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while child.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > deadline {
            child.kill().unwrap();
            panic!("imgpack did not finish within a minute: {command:?}");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

proptest! {
    #![proptest_config(config("imgpack_toml_git", 40))]
    #[test]
    fn imgpack_toml_from_a_git_source_is_accepted_only_without_untrusted_keys(
        bytes in prop_oneof![
            mutated(vec![corpus_file("imgpack-untrusted.toml"), corpus_file("imgpack.toml")]),
            generated_toml(),
        ]
    ) {
        use imgpack_e2e::git_server::git;
        if !have_tool("git") {
            return Ok(());
        }
        // A repository holding only the file: once the file is accepted, the build stops at
        // "no project", so every run is quick.
        let dir = tempfile::tempdir().unwrap();
        let repo = dir.path().join("repo");
        std::fs::create_dir_all(&repo).unwrap();
        git(&repo, &["init", "-q"]);
        std::fs::write(repo.join("imgpack.toml"), &bytes).unwrap();
        git(&repo, &["add", "-A"]);
        git(&repo, &["commit", "-q", "-m", "fuzz"]);
        let output = output_within_a_minute(
            imgpack()
                .current_dir(dir.path())
                .args(["build", &format!("git+file://{}", repo.display()), "-q", "-o", "oci:out"]),
        );
        let err = stderr(&output);
        prop_assert!(!err.contains("panicked"), "{}", err);
        prop_assert_eq!(output.status.code(), Some(1), "{}", err);
        let last = err.trim_end().lines().last().unwrap_or_default();
        prop_assert!(last.starts_with("error: "), "{}", err);
        prop_assert!(!dir.path().join("out").exists());
        // Every refusal of the file names it; any other error comes after it was accepted.
        let accepted = !last.contains("imgpack.toml");
        if accepted {
            let parsed = std::str::from_utf8(&bytes).ok().and_then(|t| t.parse::<toml::Table>().ok());
            let set = parsed.as_ref().map(untrusted_keys_set).unwrap_or_default();
            prop_assert!(set.is_empty(), "accepted a file that sets {:?}: {}\n{}", set, last, text(&bytes));
        } else if last.contains("--trust-source-config") {
            prop_assert!(last.starts_with("error: imgpack.toml:"), "{}", last);
        }
    }
}
