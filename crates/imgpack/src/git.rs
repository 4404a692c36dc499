//! What the git repository around a project says about the image: tag
//! templates (`{git_sha}`…) and the `org.opencontainers.image.*` source annotations.

use std::path::Path;

use anyhow::{bail, Context, Result};

/// Facts about HEAD of the repository holding a directory.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GitInfo {
    pub sha: String,
    pub short_sha: String,
    /// A tag pointing exactly at HEAD.
    pub tag: Option<String>,
    /// `origin`'s URL with any credentials removed.
    pub remote: Option<String>,
    /// HEAD's commit time, RFC 3339 in UTC.
    pub commit_time: Option<String>,
}

impl GitInfo {
    /// `None` outside a git repository. Read with imgpack-git, so no `git`
    /// executable is needed (an image holding imgpack builds from git alone).
    pub fn of(dir: &Path) -> Option<GitInfo> {
        let facts = imgpack_git::HeadFacts::of(dir)?;
        let commit_time = facts
            .commit_time
            .and_then(|seconds| jiff::Timestamp::from_second(seconds).ok())
            .map(|time| time.to_string());
        Some(GitInfo {
            short_sha: facts.commit.chars().take(7).collect(),
            sha: facts.commit,
            tag: facts.tag,
            remote: facts.remote,
            commit_time,
        })
    }

    /// The annotations an image built from this repository carries.
    pub fn annotations(&self) -> Vec<(String, String)> {
        let mut annotations = vec![(
            "org.opencontainers.image.revision".to_owned(),
            self.sha.clone(),
        )];
        if let Some(remote) = &self.remote {
            annotations.push(("org.opencontainers.image.source".to_owned(), remote.clone()));
        }
        if let Some(time) = &self.commit_time {
            annotations.push(("org.opencontainers.image.created".to_owned(), time.clone()));
        }
        annotations
    }
}

/// Expands `{git_sha}`, `{git_short_sha}`, `{git_tag}` and `{date}` (UTC, YYYYMMDD) in a tag.
pub fn expand_tag(template: &str, git: Option<&GitInfo>) -> Result<String> {
    let mut out = String::new();
    let mut rest = template;
    while let Some(start) = rest.find('{') {
        out.push_str(&rest[..start]);
        let end = rest[start..]
            .find('}')
            .with_context(|| format!("unclosed '{{' in tag '{template}'"))?
            + start;
        let name = &rest[start + 1..end];
        let needs_git = || {
            git.with_context(|| {
                format!(
                    "tag '{template}' uses {{{name}}} but the project is not in a git repository"
                )
            })
        };
        let value = match name {
            "git_sha" => needs_git()?.sha.clone(),
            "git_short_sha" => needs_git()?.short_sha.clone(),
            "git_tag" => needs_git()?
                .tag
                .clone()
                .with_context(|| format!("tag '{template}' uses {{git_tag}} but no git tag points at HEAD"))?,
            "date" => jiff::Timestamp::now().strftime("%Y%m%d").to_string(),
            other => bail!("unknown placeholder {{{other}}} in tag '{template}': use {{git_sha}}, {{git_short_sha}}, {{git_tag}} or {{date}}"),
        };
        out.push_str(&value);
        rest = &rest[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    fn info() -> GitInfo {
        GitInfo {
            sha: "3f2c1e9aa".into(),
            short_sha: "3f2c1e9".into(),
            tag: Some("v1.2.0".into()),
            ..GitInfo::default()
        }
    }

    #[test]
    fn templates_expand() {
        assert_eq!(
            expand_tag("{git_short_sha}", Some(&info())).unwrap(),
            "3f2c1e9"
        );
        assert_eq!(
            expand_tag("build-{git_sha}-x", Some(&info())).unwrap(),
            "build-3f2c1e9aa-x"
        );
        assert_eq!(expand_tag("{git_tag}", Some(&info())).unwrap(), "v1.2.0");
        assert_eq!(expand_tag("{date}", None).unwrap().len(), 8);
        assert_eq!(expand_tag("latest", None).unwrap(), "latest");
        assert!(expand_tag("{git_sha}", None)
            .unwrap_err()
            .to_string()
            .contains("not in a git repository"));
        assert!(expand_tag("{branch}", Some(&info()))
            .unwrap_err()
            .to_string()
            .contains("unknown placeholder"));
        let untagged = GitInfo {
            tag: None,
            ..info()
        };
        assert!(expand_tag("{git_tag}", Some(&untagged)).is_err());
        assert!(expand_tag("{git_sha", Some(&info())).is_err());
    }

    #[test]
    fn a_repository_is_read() {
        let dir = tempfile::tempdir().unwrap();
        let git = |args: &[&str]| {
            let status = Command::new("git")
                .arg("-C")
                .arg(dir.path())
                .args(args)
                .status()
                .unwrap();
            assert!(status.success());
        };
        git(&["init", "-q"]);
        git(&[
            "-c",
            "user.name=t",
            "-c",
            "user.email=t@t",
            "commit",
            "-q",
            "--allow-empty",
            "-m",
            "x",
        ]);
        git(&[
            "remote",
            "add",
            "origin",
            "https://bot:token@example.invalid/team/app.git",
        ]);
        git(&["tag", "v9"]);
        let info = GitInfo::of(dir.path()).unwrap();
        assert_eq!(info.sha.len(), 40);
        assert_eq!(info.tag.as_deref(), Some("v9"));
        assert_eq!(
            info.remote.as_deref(),
            Some("https://example.invalid/team/app.git")
        );
        assert!(info.commit_time.unwrap().ends_with('Z'));
        assert!(GitInfo::of(&dir.path().join("nowhere")).is_none());
    }
}
