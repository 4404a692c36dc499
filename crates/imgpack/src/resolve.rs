//! `imgpack resolve`: builds and pushes every `imgpack://PATH` named in
//! Kubernetes YAML and prints the YAML with `REPOSITORY@sha256:…` in place.
//!
//! References are replaced in the text itself, so everything else (comments,
//! key order, quoting, document separators) comes out byte for byte.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use anyhow::{bail, Context, Result};

use crate::cli::{BuildArgs, PushFlags, ResolveArgs};
use crate::registry::{check_image_refs, write_image_refs};

const SCHEME: &str = "imgpack://";

pub fn run(args: ResolveArgs) -> Result<()> {
    check_image_refs(&args.push)?;
    let documents = read_inputs(&args.filenames, args.recursive)?;
    let paths = referenced_paths(&documents);
    if let Some(path) = paths.iter().find(|p| p.starts_with('-')) {
        bail!("imgpack://{path}: a path cannot start with '-' (it would read as a flag): write imgpack://./{path}");
    }
    // `./cmd/api` and `cmd/api` are one project: build it once.
    let mut by_project: BTreeMap<PathBuf, Vec<String>> = BTreeMap::new();
    for path in paths {
        let key = Path::new(&path)
            .canonicalize()
            .unwrap_or_else(|_| PathBuf::from(&path));
        by_project.entry(key).or_default().push(path);
    }
    let to_build: Vec<String> = by_project
        .values()
        .map(|spellings| spellings[0].clone())
        .collect();
    let built = build_each(&to_build, &args)?;
    if let Some(path) = &args.push.image_refs {
        // One line per image built, in the order of the paths.
        write_image_refs(path, &built.values().cloned().collect::<Vec<_>>())?;
    }
    let references: BTreeMap<String, String> = by_project
        .values()
        .flat_map(|spellings| {
            spellings
                .iter()
                .map(|s| (s.clone(), built[&spellings[0]].clone()))
        })
        .collect();
    let mut out = String::new();
    for (index, text) in documents.iter().enumerate() {
        if index > 0 && !text.trim_start().starts_with("---") {
            out.push_str("---\n");
        }
        out.push_str(&replace(text, &references));
        if !out.ends_with('\n') {
            out.push('\n');
        }
    }
    print!("{out}");
    Ok(())
}

/// The text of every input: `-` is standard input; a directory means its
/// .yaml/.yml/.json files (in sorted order; with `-R`, its subdirectories' too).
fn read_inputs(inputs: &[PathBuf], recursive: bool) -> Result<Vec<String>> {
    let mut texts = Vec::new();
    for input in inputs {
        if input.as_os_str() == "-" {
            let mut text = String::new();
            let limit = imgpack_blob::local_file::RESOLVE_INPUT.limit;
            std::io::stdin()
                .take(limit + 1)
                .read_to_string(&mut text)
                .context("cannot read YAML from standard input")?;
            if text.len() as u64 > limit {
                bail!(
                    "standard input holds more than the {} MiB imgpack resolve reads: split the manifests",
                    limit >> 20
                );
            }
            texts.push(text);
        } else if input.is_dir() {
            let files = manifest_files(input, recursive)?;
            if files.is_empty() {
                let hint = if recursive {
                    ""
                } else {
                    " (add -R to read its subdirectories)"
                };
                bail!(
                    "no .yaml, .yml or .json file in {}{hint}: give -f the directory of your manifests",
                    input.display()
                );
            }
            for file in files {
                texts.push(read(&file)?);
            }
        } else {
            texts.push(read(input)?);
        }
    }
    Ok(texts)
}

fn read(path: &Path) -> Result<String> {
    imgpack_blob::read_local_text(path, &imgpack_blob::local_file::RESOLVE_INPUT).map_err(|err| {
        match err.io_error() {
            Some(io) => anyhow::anyhow!("cannot read {} ({io}): check -f", path.display()),
            None => anyhow::anyhow!("{err}"),
        }
    })
}

fn manifest_files(dir: &Path, recursive: bool) -> Result<Vec<PathBuf>> {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("cannot list {}", dir.display()))?
        .map(|entry| entry.map(|e| e.path()))
        .collect::<std::io::Result<_>>()?;
    entries.sort();
    let mut files = Vec::new();
    for path in entries {
        if path.is_dir() {
            if recursive {
                files.extend(manifest_files(&path, true)?);
            }
        } else if path
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| matches!(e, "yaml" | "yml" | "json"))
        {
            files.push(path);
        }
    }
    Ok(files)
}

/// Characters of a path after `imgpack://`: what may appear unquoted in YAML.
fn is_path_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '/' | '_' | '-' | '~' | '+' | '@')
}

/// Every `imgpack://PATH` in the texts, once each.
fn referenced_paths(texts: &[String]) -> Vec<String> {
    let mut paths: Vec<String> = texts
        .iter()
        .flat_map(|text| {
            scalar_references(text)
                .into_iter()
                .map(|(_, path)| path.to_owned())
        })
        .collect();
    paths.sort();
    paths.dedup();
    paths
}

/// The path after `imgpack://`; a git source (`git+URL@REV#SUBDIR`) may also hold `:`, `#`, `%` and `=`.
fn path_at(rest: &str) -> &str {
    let git = imgpack_git::GitSource::is_git_source(rest);
    let end = rest
        .find(|c: char| !(is_path_char(c) || git && matches!(c, ':' | '#' | '%' | '=')))
        .unwrap_or(rest.len());
    &rest[..end]
}

/// The `imgpack://PATH` values of `text` (offset of `imgpack://`, PATH): only
/// where one is a whole YAML scalar (a mapping value, a list item, a flow
/// entry; plain or quoted), never inside a comment or in the middle of a string.
fn scalar_references(text: &str) -> Vec<(usize, &str)> {
    let mut found = Vec::new();
    let mut line_start = 0;
    for line in text.split_inclusive('\n') {
        let content = line.trim_end_matches(['\n', '\r']);
        for (at, _) in content.match_indices(SCHEME) {
            let path = path_at(&content[at + SCHEME.len()..]);
            if !path.is_empty() && is_whole_scalar(content, at, SCHEME.len() + path.len()) {
                found.push((line_start + at, path));
            }
        }
        line_start += line.len();
    }
    found
}

/// Whether `line[at..at + len]` is a whole scalar value of the line.
fn is_whole_scalar(line: &str, at: usize, len: usize) -> bool {
    let before = &line[..at];
    let quote = before.chars().last().filter(|c| matches!(c, '"' | '\''));
    let before = quote.map_or(before, |q| &before[..before.len() - q.len_utf8()]);
    let in_comment = before.starts_with('#') || before.contains(" #") || before.contains("\t#");
    let lead = before.trim_end();
    let spaced = lead.len() < before.len() || quote.is_some();
    let leads_value = (lead.ends_with(':') && spaced)
        || lead.ends_with(['[', ',', '{'])
        || lead.trim_start() == "-"
        || lead.ends_with(" -");
    let after = &line[at + len..];
    let rest = match quote {
        Some(q) => match after.strip_prefix(q) {
            Some(rest) => rest,
            None => return false,
        },
        None if after.is_empty() => after,
        // A plain scalar ends at whitespace or, in a flow collection, at `,` `]` `}`.
        None if after.starts_with([' ', '\t', ',', ']', '}']) => after,
        None => return false,
    };
    let rest = rest.trim_start();
    let ends_value = rest.is_empty() || rest.starts_with(['#', ',', ']', '}']);
    !in_comment && leads_value && ends_value
}

fn replace(text: &str, references: &BTreeMap<String, String>) -> String {
    let mut out = String::with_capacity(text.len());
    let mut copied = 0;
    for (at, path) in scalar_references(text) {
        if let Some(reference) = references.get(path) {
            out.push_str(&text[copied..at]);
            out.push_str(reference);
            copied = at + SCHEME.len() + path.len();
        }
    }
    out.push_str(&text[copied..]);
    out
}

/// Builds and pushes each path, several at once; returns path → reference.
fn build_each(paths: &[String], args: &ResolveArgs) -> Result<BTreeMap<String, String>> {
    let queue = Mutex::new(paths.iter().collect::<Vec<_>>());
    let results = Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for _ in 0..args.parallelism.jobs().clamp(1, paths.len().max(1)) {
            scope.spawn(|| loop {
                let Some(path) = queue.lock().expect("not poisoned").pop() else {
                    break;
                };
                let result = build_one(path, args)
                    .with_context(|| format!("imgpack://{}", imgpack_redact::redact_urls(path)));
                results
                    .lock()
                    .expect("not poisoned")
                    .push((path.clone(), result));
            });
        }
    });
    let mut references = BTreeMap::new();
    let mut results = results.into_inner().expect("not poisoned");
    results.sort_by(|a, b| a.0.cmp(&b.0));
    for (path, result) in results {
        references.insert(path, result?);
    }
    Ok(references)
}

/// `imgpack build PATH --push` (to $IMGPACK_REPO/NAME) with resolve's flags.
fn build_one(path: &str, args: &ResolveArgs) -> Result<String> {
    let mut lines = crate::build::build_all(build_args(path, args)).map_err(|err| {
        if err.downcast_ref::<crate::build::NoRepository>().is_some() {
            return anyhow::anyhow!(
                "imgpack resolve pushes to $IMGPACK_REPO/NAME: set IMGPACK_REPO (e.g. \
                 registry.example.com/team), or `repository` in the project's imgpack.toml"
            );
        }
        // Build's advice names --binary and --lang, which resolve does not have.
        match err
            .chain()
            .find_map(|e| e.downcast_ref::<imgpack_frontend::SourceError>())
        {
            Some(source) => anyhow::anyhow!(source.without_flags()),
            None => err,
        }
    })?;
    if lines.len() != 1 {
        bail!(
            "{} describes {} images: imgpack:// must name one",
            imgpack_redact::redact_urls(path),
            lines.len()
        );
    }
    Ok(lines.remove(0))
}

/// The build of one referenced path: resolve's platforms, push flags, `--jobs`
/// and `-q`. `--image-refs` is resolve's to write, for every image at once.
fn build_args(path: &str, args: &ResolveArgs) -> BuildArgs {
    BuildArgs {
        platforms: args.platforms.clone(),
        parallelism: args.parallelism,
        push_flags: PushFlags {
            image_refs: None,
            ..args.push.clone()
        },
        quiet: args.quiet,
        // The YAML may come from someone else: its git hosts are not the user's word.
        url_origin: imgpack_git::UrlOrigin::Manifest,
        trust_source_config: args.trust_source_config,
        ..BuildArgs::push_project(path)
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::cli::{Cli, Command};

    #[test]
    fn each_path_is_built_as_imgpack_build_path_push_would_be() {
        let flags = [
            "--platform",
            "linux/amd64,linux/arm64",
            "--jobs",
            "3",
            "--tag",
            "{git_short_sha}",
            "--retry-timeout",
            "9",
            "--insecure-registry",
            "reg:5000",
            "--trust-source-config",
            "-q",
        ];
        let argv = |command: &[&str]| -> Vec<String> {
            ["imgpack"]
                .iter()
                .chain(command)
                .chain(&flags)
                .map(|s| s.to_string())
                .collect()
        };
        let Command::Resolve(resolve) = Cli::parse_from(argv(&["resolve", "-f", "-"])).command
        else {
            unreachable!()
        };
        let Command::Build(mut build) =
            Cli::parse_from(argv(&["build", "cmd/api", "--push"])).command
        else {
            unreachable!()
        };
        // The one difference: a git URL from YAML is not the user's word.
        build.url_origin = imgpack_git::UrlOrigin::Manifest;
        assert_eq!(
            format!("{:?}", build_args("cmd/api", &resolve)),
            format!("{build:?}")
        );
    }

    #[test]
    fn references_are_found_and_replaced_in_place() {
        let yaml = "# keep me\nimage: imgpack://./cmd/api\n---\nimage: \"imgpack://cmd/worker\" # too\nenv: [imgpack://./cmd/api]\n";
        let texts = vec![yaml.to_owned()];
        assert_eq!(referenced_paths(&texts), ["./cmd/api", "cmd/worker"]);
        let references = BTreeMap::from([
            ("./cmd/api".to_owned(), "reg/api@sha256:1".to_owned()),
            ("cmd/worker".to_owned(), "reg/worker@sha256:2".to_owned()),
        ]);
        assert_eq!(
            replace(yaml, &references),
            "# keep me\nimage: reg/api@sha256:1\n---\nimage: \"reg/worker@sha256:2\" # too\nenv: [reg/api@sha256:1]\n"
        );
        assert_eq!(replace("no references\n", &references), "no references\n");
        let git = "image: imgpack://git+https://git.example/app.git@v1#cmd/api\n  x: \"imgpack://git+git@h:a.git\"\n";
        assert_eq!(
            referenced_paths(&[git.to_owned()]),
            [
                "git+git@h:a.git",
                "git+https://git.example/app.git@v1#cmd/api"
            ]
        );
    }

    #[test]
    fn only_whole_scalar_values_are_replaced() {
        let yaml = "\
# image: imgpack://./cmd/api in a comment
image: imgpack://./cmd/api # built
args: [\"--x\", 'imgpack://./cmd/api', imgpack://./cmd/api]
  - imgpack://./cmd/api
description: see imgpack://./cmd/api for details
note: \"run imgpack://./cmd/api\"
url: imgpack://./cmd/api#frag
glued:imgpack://./cmd/api
{\"image\": \"imgpack://./cmd/api\"}
";
        let references = BTreeMap::from([("./cmd/api".to_owned(), "reg/api@sha256:1".to_owned())]);
        assert_eq!(
            replace(yaml, &references),
            "\
# image: imgpack://./cmd/api in a comment
image: reg/api@sha256:1 # built
args: [\"--x\", 'reg/api@sha256:1', reg/api@sha256:1]
  - reg/api@sha256:1
description: see imgpack://./cmd/api for details
note: \"run imgpack://./cmd/api\"
url: imgpack://./cmd/api#frag
glued:imgpack://./cmd/api
{\"image\": \"reg/api@sha256:1\"}
"
        );
        assert_eq!(referenced_paths(&[yaml.to_owned()]), ["./cmd/api"]);
        assert!(referenced_paths(&["description: see imgpack://x here\n".to_owned()]).is_empty());
    }
}
