//! `imgpack.toml`: the project's build settings. Every key sets the default
//! of the flag of the same meaning; flags given on the command line win.
//! `[[image]]` entries describe several images built in one run, each on top
//! of the file's top-level settings.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use imgpack_layer::FileSpec;
use serde::Deserialize;

mod tools;
mod trust;
pub(crate) use tools::check_checkout;
use trust::Trust;

use crate::cli::BuildArgs;
use crate::confine::{check_inside, Escape};
use crate::values::{check_env_name, check_port, check_user, check_workdir, octal_mode};

/// One image's settings: the top level of the file, or an `[[image]]` entry.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Section {
    name: Option<String>,
    base: Option<String>,
    path: Option<String>,
    paths: Option<Vec<String>>,
    lang: Option<String>,
    platforms: Option<Vec<String>>,
    repository: Option<String>,
    tags: Option<Vec<String>>,
    entrypoint: Option<Vec<String>>,
    cmd: Option<Vec<String>>,
    env: Option<BTreeMap<String, String>>,
    user: Option<String>,
    workdir: Option<String>,
    ports: Option<Vec<String>>,
    labels: Option<BTreeMap<String, String>>,
    annotations: Option<BTreeMap<String, String>>,
    format: Option<String>,
    compression: Option<String>,
    compression_level: Option<i32>,
    sbom: Option<String>,
    provenance: Option<bool>,
    ca_certs: Option<String>,
    tzdata: Option<String>,
    zones: Option<Vec<String>>,
    /// The key pushes are signed with (`--sign-key`), relative to the file.
    sign_key: Option<String>,
    /// The file holding `sign_key`'s password, relative to the file.
    sign_password_file: Option<String>,
    go: Option<GoSection>,
    rust: Option<RustSection>,
    files: Option<Vec<FilesEntry>>,
    /// Only at the top level.
    image: Option<Vec<Section>>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct GoSection {
    ldflags: Option<String>,
    tags: Option<Vec<String>>,
    env: Option<BTreeMap<String, String>>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RustSection {
    bin: Option<String>,
    package: Option<String>,
    features: Option<Vec<String>>,
    no_default_features: Option<bool>,
    profile: Option<String>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FilesEntry {
    src: String,
    dst: String,
    /// Octal, as a string: `"0644"`.
    mode: Option<String>,
    dir_mode: Option<String>,
    uid: Option<u64>,
    gid: Option<u64>,
    /// A `src` outside the project directory is refused unless this is true.
    allow_outside_project: Option<bool>,
}

/// A loaded `imgpack.toml`.
pub struct Config {
    path: PathBuf,
    /// The path messages name: relative to the checkout for a git source's file.
    shown: PathBuf,
    text: String,
    top: Section,
    trust: Trust,
    /// The checkout of the git source the file came from: its paths stay inside.
    checkout: Option<PathBuf>,
}

/// Finds the config file: `--config`/`IMGPACK_CONFIG`, else `imgpack.toml` in
/// the project directory or the current one. A file named explicitly must exist.
/// One found in a git source's checkout is untrusted unless `--trust-source-config`
/// ([`trust`]), and must not be a link out of the checkout.
pub fn load(args: &BuildArgs) -> Result<Option<Config>> {
    let path = match &args.config {
        Some(path) => path.clone(),
        None => {
            let dir = args.source.clone().unwrap_or_else(|| PathBuf::from("."));
            let here = args.checkout_root.clone().unwrap_or_default();
            match [dir.join("imgpack.toml"), here.join("imgpack.toml")]
                .into_iter()
                .find(|p| p.is_file())
            {
                Some(path) => path,
                None => return Ok(None),
            }
        }
    };
    // A file named on the command line or by IMGPACK_CONFIG is the user's own.
    let checkout = args.checkout_root.clone().filter(|_| args.config.is_none());
    let shown = checkout
        .as_ref()
        .and_then(|root| path.strip_prefix(root).ok())
        .map_or_else(|| path.clone(), Path::to_path_buf);
    if let Some(root) = &checkout {
        if let Err(escape) = check_inside(root, &path) {
            bail!(
                "{}: the config file leaves the repository {}: commit the file itself",
                shown.display(),
                escape.describe()
            );
        }
    }
    let trust = match &checkout {
        Some(_) if !args.trust_source_config => Trust::Untrusted,
        _ => Trust::Trusted,
    };
    let text = imgpack_blob::read_local_text(&path, &imgpack_blob::local_file::CONFIG_FILE)
        .map_err(|err| match err.io_error() {
            Some(io) => anyhow::anyhow!(
                "cannot read the config file {} ({io}): {}",
                path.display(),
                read_advice(io, &path)
            ),
            None => anyhow::anyhow!("the config file {err}"),
        })?;
    let top: Section = toml::from_str(&text).map_err(|err| parse_error(&shown, &text, &err))?;
    let config = Config {
        path,
        shown,
        text,
        top,
        trust,
        checkout,
    };
    if config.trust == Trust::Untrusted {
        config.check_trusted_keys()?;
    }
    config.validate()?;
    Ok(Some(config))
}

/// What to do about a config file that cannot be read: a missing one was
/// named by IMGPACK_CONFIG or by --config (which `imgpack resolve` does not have).
fn read_advice(err: &std::io::Error, path: &Path) -> &'static str {
    let from_env = std::env::var_os(crate::cli::CONFIG_ENV).is_some_and(|v| Path::new(&v) == path);
    match err.kind() {
        std::io::ErrorKind::PermissionDenied => "make it readable by this user",
        std::io::ErrorKind::NotFound if from_env => "check IMGPACK_CONFIG",
        std::io::ErrorKind::NotFound => "check --config",
        _ => "name a readable TOML file",
    }
}

/// `imgpack.toml:12: key `ports`: invalid type…`: one line, with the line number.
fn parse_error(path: &Path, text: &str, err: &toml::de::Error) -> anyhow::Error {
    let message = err.message().replace('\n', " ");
    match err.span() {
        Some(span) => {
            let mut start = span.start.min(text.len());
            // A syntax error inside an array that runs on past its line is the
            // array's: point at the line where it was opened, not the next key.
            let line_of = |offset: usize| text[..offset].matches('\n').count() + 1;
            if let Some(open) = unclosed_array(&text[..start]) {
                if line_of(open) < line_of(start) {
                    start = open;
                }
            }
            let line = line_of(start);
            let key = text
                .lines()
                .nth(line - 1)
                .and_then(|l| l.split_once('='))
                .map(|(k, _)| k.trim());
            match key {
                Some(key) if !key.starts_with('[') => {
                    anyhow::anyhow!("{}:{line}: key `{key}`: {message}", path.display())
                }
                _ => anyhow::anyhow!("{}:{line}: {message}", path.display()),
            }
        }
        None => anyhow::anyhow!("{}: {message}", path.display()),
    }
}

/// The offset of the last `[` in `text` not closed by a `]` (strings and comments skipped).
fn unclosed_array(text: &str) -> Option<usize> {
    let mut open = Vec::new();
    let mut chars = text.char_indices();
    while let Some((at, c)) = chars.next() {
        match c {
            '[' => open.push(at),
            ']' => {
                open.pop();
            }
            '#' => {
                chars.by_ref().find(|(_, c)| *c == '\n');
            }
            '"' | '\'' => {
                let mut escaped = false;
                for (_, inner) in chars.by_ref() {
                    match inner {
                        '\\' if c == '"' && !escaped => escaped = true,
                        inner if inner == c && !escaped => break,
                        '\n' => break,
                        _ => escaped = false,
                    }
                }
            }
            _ => {}
        }
    }
    open.pop()
}

impl Config {
    /// The directory relative paths in the file are resolved against.
    fn dir(&self) -> PathBuf {
        self.path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."))
            .to_owned()
    }

    /// `imgpack.toml:LINE: key `KEY``, for a value that fails a check.
    fn locate(&self, key: &str) -> String {
        let line = self.text.lines().position(|line| {
            line.trim_start()
                .strip_prefix(key)
                .is_some_and(|rest| rest.trim_start().starts_with('='))
        });
        match line {
            Some(index) => format!("{}:{}: key `{key}`", self.shown.display(), index + 1),
            None => format!("{}: key `{key}`", self.shown.display()),
        }
    }

    /// `imgpack.toml:LINE: [[TABLE]] entry N`: the header line of the `index`th
    /// `[[TABLE]]` (or `[[image.TABLE]]`) entry, in file order.
    fn locate_entry(&self, table: &str, index: usize, _key: &str) -> String {
        let headers = [format!("[[{table}]]"), format!("[[image.{table}]]")];
        let line = self
            .text
            .lines()
            .enumerate()
            .filter(|(_, line)| headers.iter().any(|h| line.trim() == h))
            .nth(index)
            .map(|(number, _)| number + 1);
        match line {
            Some(line) => format!(
                "{}:{line}: [[{table}]] entry {}",
                self.shown.display(),
                index + 1
            ),
            None => format!("{}: [[{table}]] entry {}", self.shown.display(), index + 1),
        }
    }

    /// Checks every value the way its flag is checked, naming file, line and key.
    fn validate(&self) -> Result<()> {
        let sections = std::iter::once(&self.top).chain(self.top.image.iter().flatten());
        for (index, section) in sections.enumerate() {
            if index > 0 && section.image.is_some() {
                bail!(
                    "{}: [[image]] entries cannot hold [[image]] entries",
                    self.locate("image")
                );
            }
            self.validate_section(section)?;
        }
        Ok(())
    }

    fn validate_section(&self, s: &Section) -> Result<()> {
        let at = |key: &str| self.locate(key);
        for platform in s.platforms.iter().flatten() {
            platform
                .parse::<imgpack_platform::Platform>()
                .with_context(|| at("platforms"))?;
        }
        if let Some(lang) = &s.lang {
            imgpack_frontend::Lang::parse(lang).with_context(|| at("lang"))?;
        }
        for port in s.ports.iter().flatten() {
            check_port(port).with_context(|| at("ports"))?;
        }
        if let Some(user) = &s.user {
            check_user(user).with_context(|| at("user"))?;
        }
        if let Some(workdir) = &s.workdir {
            check_workdir(workdir).with_context(|| at("workdir"))?;
        }
        if let Some(format) = &s.format {
            imgpack_image::Format::parse(format).with_context(|| at("format"))?;
        }
        if s.compression.is_some() || s.compression_level.is_some() {
            let name = s.compression.as_deref().unwrap_or("gzip");
            imgpack_layer::Compression::from_name(name, s.compression_level)
                .with_context(|| at("compression_level"))?;
        }
        if let Some(sbom) = &s.sbom {
            imgpack_attest::SbomFormat::parse(sbom)
                .map_err(anyhow::Error::msg)
                .with_context(|| at("sbom"))?;
        }
        if let Some(name) = &s.name {
            imgpack_layer::validate_app_name(name).with_context(|| at("name"))?;
        }
        if s.path.is_some() && s.paths.is_some() {
            bail!("{}: give either `path` or `paths`", at("paths"));
        }
        self.check_projects_inside(s)?;
        for key in s.env.iter().flat_map(|m| m.keys()) {
            check_env_name(key).with_context(|| at("env"))?;
        }
        for (index, entry) in s.files.iter().flatten().enumerate() {
            self.file_spec(entry)
                .with_context(|| self.locate_entry("files", index, "src"))?;
        }
        Ok(())
    }

    fn file_spec(&self, entry: &FilesEntry) -> Result<FileSpec> {
        let octal = |value: &Option<String>, key: &str| -> Result<Option<u32>> {
            value
                .as_deref()
                .map(|text| octal_mode(text, key))
                .transpose()
        };
        if !entry.dst.starts_with('/') {
            bail!("dst '{}' must be an absolute path in the image", entry.dst);
        }
        if entry.dst.split('/').any(|part| part == "..") {
            bail!(
                "dst '{}' contains '..': name the path in the image directly",
                entry.dst
            );
        }
        let src = self.dir().join(&entry.src);
        // First: a link out of the project is refused before its target is looked at.
        if entry.allow_outside_project != Some(true) {
            if let Err(escape) = check_inside(&self.dir(), &src) {
                bail!("{}", self.outside_project(&entry.src, &escape));
            }
        }
        match src.canonicalize() {
            Ok(_) => {}
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => bail!(
                "src '{}' does not exist (it is relative to {})",
                entry.src,
                self.dir().display()
            ),
            Err(err) => bail!(
                "cannot read src '{}' ({err}; it is relative to {}): make it readable by this user",
                entry.src,
                self.dir().display()
            ),
        };
        Ok(FileSpec {
            src,
            dst: entry.dst.clone(),
            mode: octal(&entry.mode, "mode")?,
            dir_mode: octal(&entry.dir_mode, "dir_mode")?,
            uid: entry.uid.unwrap_or(0),
            gid: entry.gid.unwrap_or(0),
        })
    }

    /// Why a `[[files]] src` outside the file's directory is refused, and what to do.
    fn outside_project(&self, src: &str, escape: &Escape) -> String {
        let link = match escape {
            Escape::Link { .. } => format!(" {}", escape.describe()),
            Escape::Named => String::new(),
        };
        let advice = match self.trust {
            Trust::Untrusted => "copy the files into the repository",
            Trust::Trusted => {
                "copy it into the project, or set allow_outside_project = true in this entry"
            }
        };
        match &self.checkout {
            Some(_) => format!(
                "src '{src}' is outside the directory of {}{link}: {advice}",
                self.shown.display()
            ),
            None => {
                let project = self.dir().canonicalize().unwrap_or_else(|_| self.dir());
                format!(
                    "src '{src}' is outside the project directory {}{link}: {advice}",
                    project.display()
                )
            }
        }
    }

    /// In a git source, `path` and `paths` name directories of the checkout:
    /// a symlink or `..` out of it is refused.
    fn check_projects_inside(&self, s: &Section) -> Result<()> {
        let Some(root) = &self.checkout else {
            return Ok(());
        };
        let (key, paths) = match (&s.path, &s.paths) {
            (Some(path), _) => ("path", std::slice::from_ref(path)),
            (None, Some(paths)) => ("paths", paths.as_slice()),
            (None, None) => return Ok(()),
        };
        for path in paths {
            if let Err(escape) = check_inside(root, &self.dir().join(path)) {
                bail!(
                    "{}: '{path}' leaves the repository {}: name a directory inside the repository",
                    self.locate(key),
                    escape.describe()
                );
            }
        }
        Ok(())
    }

    /// The builds this file asks for: each `[[image]]` entry (all of them when
    /// the command line names no project), or the top level alone.
    pub fn builds(&self, cli: &BuildArgs) -> Result<Vec<BuildArgs>> {
        let entries = self.top.image.as_deref().unwrap_or_default();
        if cli.source.is_none() && cli.binaries.is_empty() && !entries.is_empty() {
            return entries.iter().map(|entry| self.apply(cli, entry)).collect();
        }
        // A project named on the command line uses its [[image]] entry, if it has one.
        let wanted = cli.source.as_ref().and_then(|p| p.canonicalize().ok());
        let entry = entries
            .iter()
            .find(|e| {
                let first = e.path.as_ref().or(e.paths.as_ref().and_then(|p| p.first()));
                wanted.is_some()
                    && first.and_then(|p| self.dir().join(p).canonicalize().ok()) == wanted
            })
            .cloned()
            .unwrap_or_default();
        Ok(vec![self.apply(cli, &entry)?])
    }

    /// Flags as given, then the entry, then the top level: the first that sets a value wins.
    fn apply(&self, cli: &BuildArgs, entry: &Section) -> Result<BuildArgs> {
        let mut args = cli.clone();
        for section in [entry, &self.top] {
            self.fill(&mut args, section)?;
        }
        Ok(args)
    }

    fn fill(&self, args: &mut BuildArgs, s: &Section) -> Result<()> {
        fn set<T: Clone>(slot: &mut Option<T>, value: &Option<T>) {
            if slot.is_none() {
                slot.clone_from(value);
            }
        }
        fn set_list(slot: &mut Vec<String>, value: &Option<Vec<String>>) {
            if slot.is_empty() {
                slot.extend(value.iter().flatten().cloned());
            }
        }
        let pairs = |map: &Option<BTreeMap<String, String>>| -> Option<Vec<String>> {
            map.as_ref()
                .map(|m| m.iter().map(|(k, v)| format!("{k}={v}")).collect())
        };
        let paths: Vec<String> = s
            .paths
            .clone()
            .or_else(|| s.path.clone().map(|p| vec![p]))
            .unwrap_or_default();
        if let Some((first, more)) = paths.split_first() {
            let more: Vec<PathBuf> = more.iter().map(|p| self.dir().join(p)).collect();
            if args.source.is_none() && args.binaries.is_empty() {
                args.source = Some(self.dir().join(first));
                args.from_file.more_paths = more;
            } else if args.from_file.more_paths.is_empty() && self.names_first(args, first) {
                // `imgpack build cmd/worker` and `imgpack://./cmd/worker` build the
                // entry's whole image, as `imgpack build --push` does.
                args.from_file.more_paths = more;
            }
        }
        set(&mut args.name, &s.name);
        set(&mut args.base, &s.base);
        set_list(&mut args.platforms, &s.platforms);
        set(&mut args.from_file.repository, &s.repository);
        // `tags` configure pushes; a build that does not push leaves them unused
        // (unlike --tag, which was typed for this run).
        if args.push.is_some() {
            set_list(&mut args.push_flags.tags, &s.tags);
        }
        // Compiler settings matter only to a compiled project: the file may set
        // them for other builds without making this one an error.
        set_list(&mut args.entrypoint, &s.entrypoint);
        set_list(&mut args.cmd, &s.cmd);
        set_list(&mut args.env, &pairs(&s.env));
        set(&mut args.user, &s.user);
        set(&mut args.workdir, &s.workdir);
        set_list(&mut args.expose, &s.ports);
        set_list(&mut args.label, &pairs(&s.labels));
        set_list(&mut args.annotation, &pairs(&s.annotations));
        set(&mut args.format, &s.format);
        // A level set beside another algorithm than the one chosen (`--compression gzip`
        // over the file's zstd and its level 10) belonged to that algorithm: it is dropped.
        let level_fits = match (&args.compression, &s.compression) {
            (Some(chosen), Some(own)) => chosen.eq_ignore_ascii_case(own),
            _ => true,
        };
        set(&mut args.compression, &s.compression);
        if level_fits {
            set(&mut args.compression_level, &s.compression_level);
        }
        set(&mut args.sbom, &s.sbom);
        set(&mut args.provenance, &s.provenance);
        set(&mut args.ca_certs, &s.ca_certs);
        set(&mut args.tzdata, &s.tzdata);
        set(&mut args.zones, &s.zones);
        if args.from_file.sign_key.is_none() {
            args.from_file.sign_key = s.sign_key.as_ref().map(|key| self.dir().join(key));
        }
        if args.from_file.sign_password_file.is_none() {
            args.from_file.sign_password_file = s
                .sign_password_file
                .as_ref()
                .map(|file| self.dir().join(file));
        }
        self.fill_files(args, s)?;
        if !args.binaries.is_empty() {
            return Ok(());
        }
        set(&mut args.lang, &s.lang);
        if let Some(go) = &s.go {
            set(&mut args.ldflags, &go.ldflags);
            set_list(&mut args.go_tags, &go.tags);
            if args.from_file.go_env.is_empty() {
                args.from_file.go_env = go
                    .env
                    .iter()
                    .flatten()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect();
            }
        }
        if let Some(rust) = &s.rust {
            set(&mut args.bin, &rust.bin);
            set(&mut args.package, &rust.package);
            set_list(&mut args.features, &rust.features);
            args.no_default_features |= rust.no_default_features.unwrap_or(false);
            set(&mut args.profile, &rust.profile);
        }
        Ok(())
    }

    /// Whether the project given on the command line is `first`, the first of a section's paths.
    fn names_first(&self, args: &BuildArgs, first: &str) -> bool {
        let given = args.source.as_ref().and_then(|p| p.canonicalize().ok());
        given.is_some() && given == self.dir().join(first).canonicalize().ok()
    }

    fn fill_files(&self, args: &mut BuildArgs, s: &Section) -> Result<()> {
        if args.from_file.files.is_empty() {
            args.from_file.files = s
                .files
                .iter()
                .flatten()
                .map(|e| self.file_spec(e))
                .collect::<Result<_>>()?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::cli::{Cli, Command};

    fn cli(args: &[&str]) -> BuildArgs {
        let full: Vec<&str> = ["imgpack", "build"].iter().chain(args).copied().collect();
        match Cli::parse_from(full).command {
            Command::Build(args) => *args,
            _ => unreachable!(),
        }
    }

    fn load_text(text: &str) -> (tempfile::TempDir, Result<Option<Config>>) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("imgpack.toml");
        std::fs::write(&path, text).unwrap();
        let result = load(&cli(&[
            "--config",
            path.to_str().unwrap(),
            "--output",
            "oci:x",
        ]));
        (dir, result)
    }

    fn error(text: &str) -> String {
        format!("{:#}", load_text(text).1.err().expect("an error"))
    }

    #[test]
    fn bad_files_name_the_line_and_key() {
        let err = error("user = \"1000\"\nentrypont = [\"/app/x\"]\n");
        assert!(
            err.contains("imgpack.toml:2") && err.contains("unknown field `entrypont`"),
            "{err}"
        );
        let err = error("ports = \"8080\"\n");
        assert!(
            err.contains("imgpack.toml:1: key `ports`") && err.contains("invalid type"),
            "{err}"
        );
        let err = error(
            "platforms = [\"linux/amd64\"]\n\n[[image]]\nname = \"api\"\nports = [\"80/http\"]\n",
        );
        assert!(
            err.contains("imgpack.toml:5: key `ports`") && err.contains("bad --expose"),
            "{err}"
        );
        let err = error("[[files]]\nsrc = \"static\"\ndst = \"app/static\"\n");
        assert!(
            err.contains("imgpack.toml:1: [[files]] entry 1") && err.contains("absolute"),
            "{err}"
        );
        // Found when the file is loaded, before any work, with the entry's line.
        let err = error("name = \"x\"\n\n[[files]]\nsrc = \".\"\ndst = \"/a\"\n\n[[files]]\nsrc = \".\"\ndst = \"/app/../etc\"\n");
        assert!(
            err.contains("imgpack.toml:7: [[files]] entry 2") && err.contains("'..'"),
            "{err}"
        );
        let err = error("[[files]]\nsrc = \"missing.txt\"\ndst = \"/a\"\n");
        assert!(err.contains("src 'missing.txt' does not exist"), "{err}");
        let err = error("[[files]]\nsrc = \"/etc/passwd\"\ndst = \"/a\"\n");
        assert!(
            err.contains("outside the project directory") && err.contains("allow_outside_project"),
            "{err}"
        );
        assert!(load_text(
            "[[files]]\nsrc = \"/etc/passwd\"\ndst = \"/a\"\nallow_outside_project = true\n"
        )
        .1
        .is_ok());
        let err = error("[go]\nldflag = \"-X a=b\"\n");
        assert!(
            err.contains("imgpack.toml:2") && err.contains("unknown field `ldflag`"),
            "{err}"
        );
        let err = error("compression = \"zstd\"\ncompression_level = 99\n");
        assert!(err.contains("key `compression_level`"), "{err}");
        // An unclosed array is reported where it starts, not at the next key.
        let err = error("name = \"x\"\nplatforms = [\"linux/amd64\"\ncompression = \"gzip\"\n");
        assert!(err.contains("imgpack.toml:2: key `platforms`"), "{err}");
        let err = error("workdir = \"relative\"\n");
        assert!(err.contains("imgpack.toml:1: key `workdir`"), "{err}");
        let err = error("this is not toml\n");
        assert!(err.contains("imgpack.toml:1"), "{err}");
    }

    #[test]
    fn a_symlink_out_of_a_local_project_is_named() {
        let dir = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink("/etc", dir.path().join("etc-link")).unwrap();
        let path = dir.path().join("imgpack.toml");
        std::fs::write(
            &path,
            "[[files]]\nsrc = \"etc-link/hostname\"\ndst = \"/h\"\n",
        )
        .unwrap();
        let err = load(&cli(&[
            "--config",
            path.to_str().unwrap(),
            "--output",
            "oci:x",
        ]))
        .err()
        .expect("refused");
        let project = dir.path().canonicalize().unwrap();
        assert_eq!(
            format!("{err:#}"),
            format!(
                "{}:1: [[files]] entry 1: src 'etc-link/hostname' is outside the project directory \
                 {} through the symlink etc-link -> /etc: copy it into the project, or set \
                 allow_outside_project = true in this entry",
                path.display(),
                project.display()
            )
        );
    }

    #[test]
    fn flags_override_the_file_and_entries_override_the_top_level() {
        let text = "user = \"1000:1000\"\ncmd = [\"serve\"]\nplatforms = [\"linux/amd64\", \"linux/arm64\"]\n\
                    env = { GIN_MODE = \"release\" }\n[go]\nldflags = \"-X main.v=1\"\n\n\
                    [[image]]\nname = \"api\"\npath = \"cmd/api\"\nuser = \"2000\"\n\n\
                    [[image]]\nname = \"worker\"\npaths = [\"cmd/worker\", \"cmd/migrate\"]\n";
        let (dir, config) = load_text(text);
        let config = config.unwrap().unwrap();
        let builds = config
            .builds(&cli(&["--cmd", "run", "--output", "oci:x"]))
            .unwrap();
        assert_eq!(builds.len(), 2);
        assert_eq!(builds[0].name.as_deref(), Some("api"));
        assert_eq!(builds[0].user.as_deref(), Some("2000"));
        assert_eq!(builds[1].user.as_deref(), Some("1000:1000"));
        assert_eq!(builds[0].cmd, ["run"], "the flag wins over the file");
        assert_eq!(builds[0].platforms, ["linux/amd64", "linux/arm64"]);
        assert_eq!(builds[0].env, ["GIN_MODE=release"]);
        assert_eq!(builds[0].ldflags.as_deref(), Some("-X main.v=1"));
        assert_eq!(
            builds[0].source.as_deref(),
            Some(dir.path().join("cmd/api").as_path())
        );
        assert_eq!(
            builds[1].from_file.more_paths,
            [dir.path().join("cmd/migrate")]
        );
    }

    #[test]
    fn sign_key_is_relative_to_the_file_and_kept_apart_from_the_flag() {
        let (dir, config) =
            load_text("sign_key = \"keys/ci.key\"\nsign_password_file = \"keys/ci.password\"\n");
        let config = config.unwrap().unwrap();
        let build = &config.builds(&cli(&["--output", "oci:x"])).unwrap()[0];
        assert_eq!(
            build.from_file.sign_key,
            Some(dir.path().join("keys/ci.key"))
        );
        assert_eq!(
            build.from_file.sign_password_file,
            Some(dir.path().join("keys/ci.password"))
        );
        assert!(build.push_flags.sign_password_file.is_none());
        // The flag stays unset: the environment (IMGPACK_SIGN_KEY) goes between the two.
        assert!(build.push_flags.sign_key.is_none());
    }

    #[test]
    fn push_and_compiler_settings_apply_only_where_they_mean_something() {
        let text = "tags = [\"v1\"]\nlang = \"rust\"\n[rust]\nbin = \"server\"\n";
        let (_dir, config) = load_text(text);
        let config = config.unwrap().unwrap();
        let unpushed = &config.builds(&cli(&["--output", "oci:x"])).unwrap()[0];
        assert!(
            unpushed.push_flags.tags.is_empty(),
            "tags configure pushes and do not block other outputs"
        );
        let plain = &config
            .builds(&cli(&["--output", "oci:x", "--push", "r/a"]))
            .unwrap()[0];
        assert_eq!(plain.push_flags.tags, ["v1"]);
        assert_eq!(plain.bin.as_deref(), Some("server"));
        let prebuilt = &config
            .builds(&cli(&["--binary", "linux/amd64=x", "--push", "r/a"]))
            .unwrap()[0];
        assert_eq!(prebuilt.push_flags.tags, ["v1"]);
        assert!(
            prebuilt.bin.is_none() && prebuilt.lang.is_none(),
            "compiler settings with --binary"
        );
    }

    #[test]
    fn a_level_set_for_another_algorithm_than_the_flags_is_dropped() {
        let (_dir, config) = load_text("compression = \"zstd\"\ncompression_level = 10\n");
        let config = config.unwrap().unwrap();
        let gzip = &config
            .builds(&cli(&["--output", "oci:x", "--compression", "gzip"]))
            .unwrap()[0];
        assert_eq!(gzip.compression.as_deref(), Some("gzip"));
        assert_eq!(gzip.compression_level, None, "zstd's level left with zstd");
        let zstd = &config.builds(&cli(&["--output", "oci:x"])).unwrap()[0];
        assert_eq!(zstd.compression_level, Some(10));
        let both = &config
            .builds(&cli(&[
                "--output",
                "oci:x",
                "--compression",
                "gzip",
                "--compression-level",
                "9",
            ]))
            .unwrap()[0];
        assert_eq!(both.compression_level, Some(9));
    }

    #[test]
    fn a_missing_explicit_file_is_an_error_and_an_implicit_one_is_not() {
        let err = load(&cli(&[
            "--config",
            "/nonexistent/imgpack.toml",
            "--output",
            "oci:x",
        ]))
        .err()
        .unwrap();
        assert!(
            err.to_string().contains("cannot read the config file"),
            "{err}"
        );
        let empty = tempfile::tempdir().unwrap();
        assert!(
            load(&cli(&[empty.path().to_str().unwrap(), "--output", "oci:x"]))
                .unwrap()
                .is_none()
        );
    }
}
