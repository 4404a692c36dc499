//! Writing a commit's tree into a repository's work tree, with an index, so
//! the result is a clean checkout that git and Go see as such.

use std::path::Path;

use anyhow::{bail, Context, Result};
use gix::ObjectId;

use crate::budget::Budget;

/// Points HEAD at `commit` (detached) and writes its tree into the work tree.
pub(crate) fn checkout(
    repo: &gix::Repository,
    commit: ObjectId,
    budget: &std::sync::Arc<Budget>,
) -> Result<()> {
    detach_head(repo, commit)?;
    let workdir = repo
        .workdir()
        .context("the repository for the checkout has no work tree")?;
    let tree = repo
        .find_commit(commit)
        .with_context(|| format!("commit {commit} is not in the repository"))?
        .tree_id()
        .with_context(|| format!("commit {commit} has no tree"))?;
    let mut index = repo
        .index_from_tree(&tree)
        .with_context(|| format!("cannot read the tree of commit {commit}"))?;
    let mut options = repo
        .checkout_options(gix::worktree::stack::state::attributes::Source::IdMapping)
        .context("cannot read the repository's checkout settings")?;
    options.destination_is_initially_empty = true;
    let objects = repo
        .objects
        .clone()
        .into_arc()
        .context("cannot share the object database")?;
    let files = budget.meter();
    let bytes = budget.byte_meter();
    let outcome = gix::worktree::state::checkout(
        &mut index,
        workdir,
        objects,
        &files,
        &bytes,
        &budget.interrupt,
        options,
    )
    .with_context(|| format!("cannot check out commit {commit}"))?;
    if budget.interrupt.load(std::sync::atomic::Ordering::SeqCst) {
        bail!("the checkout was interrupted");
    }
    if let Some(failed) = outcome.errors.first() {
        bail!("cannot check out {}: {}", failed.path, failed.error);
    }
    if let Some(collision) = outcome.collisions.first() {
        bail!(
            "cannot check out {}: another path in the commit has the same name on this file system",
            collision.path
        );
    }
    index
        .write(Default::default(), Default::default())
        .context("cannot write the checkout's index")?;
    Ok(())
}

fn detach_head(repo: &gix::Repository, commit: ObjectId) -> Result<()> {
    use gix::refs::transaction::{Change, LogChange, PreviousValue, RefEdit, RefLog};
    // The reflog entry needs a committer; like a clone, use a stand-in if none is configured.
    let mut repo = repo.clone();
    repo.committer_or_set_generic_fallback()
        .context("cannot set a committer for the reflog")?;
    repo.edit_reference(RefEdit {
        change: Change::Update {
            log: LogChange {
                mode: RefLog::AndReference,
                force_create_reflog: false,
                message: "imgpack: checkout".into(),
            },
            expected: PreviousValue::Any,
            new: gix::refs::Target::Object(commit),
        },
        name: "HEAD".try_into().expect("HEAD is a valid name"),
        deref: false,
    })
    .context("cannot point HEAD at the commit")?;
    Ok(())
}

/// Refuses a destination that holds anything: a checkout starts from nothing.
pub(crate) fn check_empty(dest: &Path) -> Result<()> {
    let has_entries = std::fs::read_dir(dest).is_ok_and(|mut entries| entries.next().is_some());
    if has_entries {
        bail!(
            "{} is not empty: a checkout needs an empty directory",
            dest.display()
        );
    }
    Ok(())
}
