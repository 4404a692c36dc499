//! Which keys an imgpack.toml from a git source may not set: the one table of
//! them, and the check that refuses a file setting one. Such a file is the
//! repository's, not the user's: it may describe the image, but not reach
//! the builder's files, choose its keys, or change the programs the build runs.

use std::path::Path;

use anyhow::{bail, Result};

use super::{Config, FilesEntry, Section};

/// The flag that makes a git source's imgpack.toml as trusted as a local one.
pub(crate) const TRUST_FLAG: &str = "--trust-source-config";

/// Where a config file came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Trust {
    /// The user's: a local working tree, or named by `--config`/IMGPACK_CONFIG.
    Trusted,
    /// Found in a git source's checkout, without `--trust-source-config`.
    Untrusted,
}

/// One key a file from a git source may not set.
pub(super) struct UntrustedKey {
    /// The key as the file spells it (`[go] env`, `[[files]] src`).
    pub(super) key: &'static str,
    /// Ends "a config file from a git source …": what the key would do.
    pub(super) refused: &'static str,
    /// The refused value of the key in a section, if it sets one (quoted for the message).
    pub(super) set_in: fn(&Section) -> Option<String>,
}

/// Every key an untrusted file may not set, checked in this order in the top
/// level and in each `[[image]]` entry. A new key that reaches outside the
/// checkout or runs a program gets a row here.
pub(super) const UNTRUSTED_KEYS: &[UntrustedKey] = &[
    UntrustedKey {
        key: "[[files]] allow_outside_project",
        refused: "may not copy files from outside the checkout",
        set_in: allow_outside_project,
    },
    UntrustedKey {
        key: "[[files]] src",
        refused: "may not copy files from outside the checkout",
        set_in: absolute_files_src,
    },
    UntrustedKey {
        key: "ca_certs",
        refused: "may not read a file of the builder (only embedded, host or none)",
        set_in: ca_certs_file,
    },
    UntrustedKey {
        key: "tzdata",
        refused: "may not read a directory of the builder (only embedded, host or none)",
        set_in: tzdata_dir,
    },
    UntrustedKey {
        key: "sign_key",
        refused: "may not choose the key pushes are signed with",
        set_in: sign_key,
    },
    UntrustedKey {
        key: "sign_password_file",
        refused: "may not read a file of the builder as the signing key's password",
        set_in: sign_password_file,
    },
    UntrustedKey {
        key: "base",
        refused: "may not read a base image from the builder's files",
        set_in: local_base,
    },
    UntrustedKey {
        key: "[go] env",
        refused:
            "may not set the environment of go build (CC, GOFLAGS, PATH and the like run programs)",
        set_in: go_env,
    },
    UntrustedKey {
        key: "[go] ldflags",
        refused:
            "may not pass linker flags that run or read programs and files (only -X, -s and -w)",
        set_in: go_ldflags,
    },
];

fn files(section: &Section) -> impl Iterator<Item = &FilesEntry> {
    section.files.iter().flatten()
}

fn allow_outside_project(section: &Section) -> Option<String> {
    files(section)
        .any(|entry| entry.allow_outside_project == Some(true))
        .then(|| "true".to_owned())
}

fn absolute_files_src(section: &Section) -> Option<String> {
    files(section)
        .find(|entry| Path::new(&entry.src).is_absolute())
        .map(|entry| format!("{:?}", entry.src))
}

/// `embedded`, `host` and `none` name no file: the image gets public data.
fn names_a_path(value: &Option<String>) -> Option<String> {
    value
        .as_deref()
        .filter(|v| !matches!(*v, "embedded" | "host" | "none"))
        .map(|v| format!("{v:?}"))
}

fn ca_certs_file(section: &Section) -> Option<String> {
    names_a_path(&section.ca_certs)
}

fn tzdata_dir(section: &Section) -> Option<String> {
    names_a_path(&section.tzdata)
}

fn sign_key(section: &Section) -> Option<String> {
    section.sign_key.as_ref().map(|key| format!("{key:?}"))
}

fn sign_password_file(section: &Section) -> Option<String> {
    section
        .sign_password_file
        .as_ref()
        .map(|file| format!("{file:?}"))
}

/// A registry reference is the repository's to choose; a path or a layout is not.
fn local_base(section: &Section) -> Option<String> {
    let base = section.base.as_deref()?;
    let local = base.starts_with(['/', '.', '~'])
        || ["oci:", "oci-archive:", "docker-archive:", "file:"]
            .iter()
            .any(|scheme| base.starts_with(scheme));
    local.then(|| format!("{base:?}"))
}

fn go_env(section: &Section) -> Option<String> {
    let env = section.go.as_ref()?.env.as_ref()?;
    // The names alone: a value may be long, and is the repository's anyway.
    let names: Vec<String> = env
        .keys()
        .map(|name| format!("{} = …", name.escape_debug()))
        .collect();
    (!names.is_empty()).then(|| format!("{{ {} }}", names.join(", ")))
}

fn go_ldflags(section: &Section) -> Option<String> {
    let ldflags = section.go.as_ref()?.ldflags.as_deref()?;
    unsafe_ldflag(ldflags).map(|flag| format!("{flag:?}"))
}

/// The first flag in `ldflags` other than `-X`, `-s` and `-w` (`-extld`,
/// `-extldflags`, `-linkmode`, `-tmpdir`… run or read programs and files).
fn unsafe_ldflag(ldflags: &str) -> Option<String> {
    let mut words = split_quoted(ldflags).into_iter();
    while let Some(word) = words.next() {
        let Some(flag) = word.strip_prefix('-') else {
            continue;
        };
        let flag = flag.strip_prefix('-').unwrap_or(flag);
        let (name, value) = flag
            .split_once('=')
            .map_or((flag, None), |(n, v)| (n, Some(v)));
        match name {
            "X" if value.is_none() => {
                words.next();
            }
            "X" | "s" | "w" => {}
            _ => return Some(word),
        }
    }
    None
}

/// Words the way go splits -ldflags: on spaces, with '…' and "…" quoting.
fn split_quoted(text: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut word: Option<String> = None;
    let mut quote = None;
    for c in text.chars() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), c) => word.get_or_insert_with(String::new).push(c),
            (None, '\'' | '"') => {
                quote = Some(c);
                word.get_or_insert_with(String::new);
            }
            (None, c) if c.is_whitespace() => words.extend(word.take()),
            (None, c) => word.get_or_insert_with(String::new).push(c),
        }
    }
    words.extend(word);
    words
}

impl Config {
    /// Refuses a file from a git source that sets a key of [`UNTRUSTED_KEYS`]:
    /// one line naming the file, the key and the flag that trusts it.
    pub(super) fn check_trusted_keys(&self) -> Result<()> {
        let sections = std::iter::once(&self.top).chain(self.top.image.iter().flatten());
        for section in sections {
            for row in UNTRUSTED_KEYS {
                if let Some(value) = (row.set_in)(section) {
                    bail!(
                        "{} = {value}: a config file from a git source {}: add {TRUST_FLAG} to \
                         trust this file",
                        self.locate_nested(row.key, &value),
                        row.refused
                    );
                }
            }
        }
        Ok(())
    }

    /// `FILE:LINE: key `[go] env``: the line of `KEY =` inside the key's table
    /// (any table when the key has none), preferably the one holding `value`.
    fn locate_nested(&self, key: &str, value: &str) -> String {
        let (table, leaf) = match key.rsplit_once(' ') {
            Some((table, leaf)) => (Some(table.trim_matches(['[', ']'])), leaf),
            None => (None, key),
        };
        let headers: Vec<String> = table
            .map(|t| {
                vec![
                    format!("[{t}]"),
                    format!("[image.{t}]"),
                    format!("[[{t}]]"),
                    format!("[[image.{t}]]"),
                ]
            })
            .unwrap_or_default();
        let mut in_table = table.is_none();
        let mut lines = Vec::new();
        for (index, line) in self.text.lines().enumerate() {
            let line = line.trim();
            if table.is_some() && line.starts_with('[') {
                in_table = headers.iter().any(|h| line == h);
            }
            let sets_key = line
                .strip_prefix(leaf)
                .is_some_and(|rest| rest.trim_start().starts_with('='));
            if in_table && sets_key {
                lines.push((index, line));
            }
        }
        let unquoted = value.trim_matches('"');
        let line = lines
            .iter()
            .find(|(_, line)| line.contains(unquoted))
            .or(lines.first())
            .map(|(index, _)| index + 1);
        let file = self.shown.display();
        match line {
            Some(line) => format!("{file}:{line}: key `{key}`"),
            None => format!("{file}: key `{key}`"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_ldflags_pass() {
        assert_eq!(unsafe_ldflag("-X main.v=1 -s -w"), None);
        assert_eq!(unsafe_ldflag("-X 'main.msg=hello -extld' -X=a.b=c"), None);
        assert_eq!(
            unsafe_ldflag("-X main.v=1 -extld=/bin/sh"),
            Some("-extld=/bin/sh".into())
        );
        assert_eq!(
            unsafe_ldflag("--linkmode external"),
            Some("--linkmode".into())
        );
        assert_eq!(unsafe_ldflag("'-tmpdir' /x"), Some("-tmpdir".into()));
    }
}
