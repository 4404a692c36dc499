//! What a repository says about its HEAD, read without a `git` executable:
//! the commit, its time, a tag on it and `origin`'s URL. The same facts for a
//! local clone and for a git source's checkout, so both get the same image.

use std::path::Path;

/// Facts about HEAD of the repository holding a directory.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HeadFacts {
    /// The full commit id.
    pub commit: String,
    /// Committer time, seconds since the epoch.
    pub commit_time: Option<i64>,
    /// A tag pointing exactly at HEAD (an annotated one if there are several).
    pub tag: Option<String>,
    /// `origin`'s URL with any credentials removed.
    pub remote: Option<String>,
}

impl HeadFacts {
    /// `None` outside a git repository or on an unborn HEAD.
    pub fn of(dir: &Path) -> Option<HeadFacts> {
        let repo = gix::ThreadSafeRepository::discover_opts(
            dir,
            gix::discover::upwards::Options::default(),
            |_, _| gix::open::Options::isolated(),
        )
        .ok()?
        .to_thread_local();
        let commit = repo.head_commit().ok()?;
        let commit_time = commit.committer().ok().map(|c| c.seconds());
        Some(HeadFacts {
            commit: commit.id.to_string(),
            commit_time,
            tag: tag_at(&repo, commit.id),
            remote: origin_url(&repo),
        })
    }
}

/// Like `git describe --tags --exact-match`: annotated tags first, then by name.
fn tag_at(repo: &gix::Repository, commit: gix::ObjectId) -> Option<String> {
    let platform = repo.references().ok()?;
    let mut found: Vec<(bool, String)> = Vec::new();
    for mut reference in platform.tags().ok()?.flatten() {
        let annotated = reference
            .target()
            .try_id()
            .and_then(|id| repo.find_object(id).ok())
            .is_some_and(|object| object.kind == gix::object::Kind::Tag);
        if reference.peel_to_id().is_ok_and(|id| id == commit) {
            let name = reference.name().shorten().to_string();
            found.push((!annotated, name));
        }
    }
    found.sort();
    found.into_iter().next().map(|(_, name)| name)
}

fn origin_url(repo: &gix::Repository) -> Option<String> {
    let remote = repo.find_remote("origin").ok()?;
    let url = remote.url(gix::remote::Direction::Fetch)?;
    Some(imgpack_redact::strip_userinfo(&url.to_bstring().to_string()).into_owned())
}
