//! `imgpack build git+URL[@REV][#SUBDIR]`: the revision is fetched and
//! checked out first (imgpack-git), then built like `imgpack build ./SUBDIR`
//! run at the root of a clone: the checkout is a git repository whose origin
//! is the URL, so tags, annotations and the image are those of a local clone.

use std::time::Duration;

use anyhow::{Context, Result};
use imgpack_git::{GitSource, Limits};

use crate::cli::BuildArgs;
use crate::staging::Staging;

/// Replaces a git source in `args` by its checkout; the checkout lives as
/// long as the returned directory.
pub(crate) fn check_out(args: &mut BuildArgs) -> Result<Option<Staging>> {
    let Some(spec) = args
        .source
        .as_deref()
        .and_then(|s| s.to_str())
        .filter(|s| GitSource::is_git_source(s))
    else {
        return Ok(None);
    };
    let source = GitSource::parse(spec)?;
    let limits = limits()?;
    // A staging directory: removed at the end, on a signal, or by the next run after a kill.
    let dir = crate::staging::create(args.tmpdir.as_deref())?;
    // Named as `git clone URL` names it: a Go binary takes its directory's name.
    let clone_dir = dir.path().join(source.clone_dir_name());
    let checkout = imgpack_git::fetch(&source, &clone_dir, limits)?;
    if !args.quiet {
        eprintln!(
            "imgpack: checked out {source} at {}{} ({} KiB)",
            &checkout.commit[..12],
            if checkout.shallow { ", shallow" } else { "" },
            checkout.bytes >> 10
        );
    }
    args.source = Some(checkout.project_dir);
    args.checkout_root = Some(checkout.root);
    Ok(Some(dir))
}

/// IMGPACK_GIT_TIMEOUT (seconds) and IMGPACK_GIT_MAX_MIB over the defaults.
fn limits() -> Result<Limits> {
    let mut limits = Limits::default();
    if let Some(seconds) = env_number("IMGPACK_GIT_TIMEOUT")? {
        limits.timeout = Duration::from_secs(seconds);
    }
    if let Some(mib) = env_number("IMGPACK_GIT_MAX_MIB")? {
        limits.max_bytes = mib.saturating_mul(1 << 20);
    }
    Ok(limits)
}

fn env_number(name: &str) -> Result<Option<u64>> {
    match std::env::var(name) {
        Ok(value) if !value.trim().is_empty() => {
            value.trim().parse().map(Some).with_context(|| {
                format!("{name}='{value}' is not a whole number: set it to e.g. 600")
            })
        }
        _ => Ok(None),
    }
}
