//! `imgpack build git+URL[@REV][#SUBDIR]`: the revision is fetched and
//! checked out first (imgpack-git), then built like `imgpack build ./SUBDIR`
//! run at the root of a clone: the checkout is a git repository whose origin
//! is the URL, so tags, annotations and the image are those of a local clone.

use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use imgpack_git::{GitSource, Limits};

use crate::cli::BuildArgs;
use crate::staging::Staging;

/// Replaces a git source in `args` by its checkout; the checkout lives as
/// long as the returned directory, returned with the source's name (no credentials).
pub(crate) fn check_out(args: &mut BuildArgs) -> Result<Option<(Staging, String)>> {
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
    let auth = crate::secrets::get().git_auth(args.url_origin)?;
    // Named as `git clone URL` names it: a Go binary takes its directory's name.
    let clone_dir = dir.path().join(source.clone_dir_name());
    let checkout = imgpack_git::fetch(&source, &clone_dir, limits, &auth)?;
    if !args.quiet {
        eprintln!(
            "imgpack: checked out {source} at {}{} ({} KiB)",
            &checkout.commit[..12],
            if checkout.shallow { ", shallow" } else { "" },
            checkout.bytes >> 10
        );
    }
    // The checkout is the repository's: `#SUBDIR` may not lead out of it through a link.
    if let Err(escape) = crate::confine::check_inside(&checkout.root, &checkout.project_dir) {
        let subdir = source.subdir.as_deref().unwrap_or(Path::new("."));
        bail!(
            "{source}: #{} leaves the repository {}: name a directory inside the repository",
            subdir.display(),
            escape.describe()
        );
    }
    args.source = Some(checkout.project_dir);
    args.checkout_root = Some(checkout.root);
    Ok(Some((dir, source.to_string())))
}

/// IMGPACK_GIT_TIMEOUT (seconds) and IMGPACK_GIT_MAX_MIB over the defaults.
fn limits() -> Result<Limits> {
    let mut limits = Limits::default();
    let default_mib = limits.max_bytes >> 20;
    if let Some(seconds) = env_number("IMGPACK_GIT_TIMEOUT", limits.timeout.as_secs())? {
        limits.timeout = Duration::from_secs(seconds);
    }
    if let Some(mib) = env_number("IMGPACK_GIT_MAX_MIB", default_mib)? {
        limits.max_bytes = mib.saturating_mul(1 << 20);
    }
    Ok(limits)
}

/// A whole number from `name`; its error suggests `default`, that variable's own default.
fn env_number(name: &str, default: u64) -> Result<Option<u64>> {
    match std::env::var(name) {
        Ok(value) if !value.trim().is_empty() => {
            value.trim().parse().map(Some).with_context(|| {
                format!(
                    "{name}='{}' is not a whole number: set it to e.g. {default} (the default)",
                    value.escape_debug()
                )
            })
        }
        _ => Ok(None),
    }
}
