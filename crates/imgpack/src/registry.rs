//! The commands that only talk to a registry (`imgpack push`, `imgpack
//! login`), and the registry sink a push uses, built from the push flags.

use std::io::Read;
use std::path::Path;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use imgpack_blob::Digest;
use imgpack_image::Sink;
use imgpack_registry::{ImageRef, PushOptions, RegistrySink, TransportOptions};
use imgpack_sign::Signer;

use crate::cli::{LoginArgs, PushArgs, PushFlags, RegistryArgs, RetryArgs};

/// A registry sink for `target` and the parsed reference, from the push
/// flags; `jobs` blobs are uploaded at once.
pub fn registry_sink(
    target: &str,
    tags: &[String],
    flags: &PushFlags,
    jobs: usize,
    quiet: bool,
    signer: Option<Arc<dyn Signer>>,
) -> Result<(RegistrySink, ImageRef)> {
    let target = ImageRef::parse_push_target(target)?;
    for tag in tags {
        imgpack_image::validate_tag(tag).context("--tag")?;
    }
    let sink = RegistrySink::new(
        target.clone(),
        tags.to_vec(),
        transport(&flags.registry, flags.retry, Some(flags), quiet),
        PushOptions { jobs, quiet },
        signer,
    );
    Ok((sink, target))
}

/// How to reach registries: the registry flags, the retry budget, and a push's chunk size.
pub fn transport(
    args: &RegistryArgs,
    retry: RetryArgs,
    push: Option<&PushFlags>,
    quiet: bool,
) -> TransportOptions {
    TransportOptions {
        insecure_registries: args.insecure_registries.clone(),
        ca_files: args.registry_ca.clone(),
        chunk_size: push.map_or(0, |flags| flags.chunk_size << 20),
        retry: retry.policy(),
        quiet,
    }
}

/// `REPOSITORY@sha256:…`: what a push prints, for scripts and `kubectl set image`.
pub fn pushed_reference(target: &ImageRef, digest: &Digest) -> String {
    format!("{}@{digest}", target.repository_ref())
}

/// `imgpack push oci:DIR[:TAG] REF`.
pub fn run_push(args: PushArgs) -> Result<()> {
    let Some(layout) = args.source.strip_prefix("oci:") else {
        bail!(
            "bad source '{}': imgpack push reads an OCI layout, oci:DIR[:TAG]",
            args.source
        );
    };
    check_image_refs(&args.push)?;
    let signer = crate::sign::load_signer(&args.push, &crate::cli::FileOnly::default())?;
    if let Some(key) = &signer {
        key.unlock()?;
    }
    let signer = signer.map(|key| key as Arc<dyn Signer>);
    let (sink, target) = registry_sink(
        &args.target,
        &args.push.tags,
        &args.push,
        args.parallelism.jobs(),
        args.quiet,
        signer.clone(),
    )?;
    let mut image = imgpack_layout::read_layout_image(layout)?;
    if let Some(signer) = &signer {
        crate::sign::sign_layout_provenance(&mut image, signer.clone())?;
    }
    sink.write(&image)
        .with_context(|| format!("cannot push to {}", sink.describe()))?;
    let line = pushed_reference(&target, image.root.digest());
    if let Some(path) = &args.push.image_refs {
        write_image_refs(path, std::slice::from_ref(&line))?;
    }
    println!("{line}");
    Ok(())
}

/// Checks before any work that `--image-refs FILE` can be written.
pub fn check_image_refs(flags: &PushFlags) -> Result<()> {
    match &flags.image_refs {
        Some(path) => imgpack_blob::check_file_path(path)
            .with_context(|| format!("cannot write --image-refs {}", path.display())),
        None => Ok(()),
    }
}

/// `--image-refs FILE`: the pushed `REPOSITORY@sha256:…` lines, one per
/// image, written beside the file and renamed onto it, so a reader (a
/// deploy step polling for it) sees the old file or the whole new one.
pub fn write_image_refs(path: &Path, lines: &[String]) -> Result<()> {
    let text: String = lines.iter().map(|line| format!("{line}\n")).collect();
    std::fs::create_dir_all(imgpack_blob::parent_or_dot(path))
        .map_err(anyhow::Error::from)
        .and_then(|()| imgpack_blob::write_atomically(path, text.as_bytes(), 0o644))
        .with_context(|| format!("cannot write --image-refs {}", path.display()))
}

/// `imgpack login SERVER -u USER --password-stdin`: checks the credentials
/// against the registry, then stores them in docker's config.json.
pub fn run_login(args: LoginArgs) -> Result<()> {
    // A password or token is at most a few KiB: bounded like a key file.
    let limit = imgpack_blob::local_file::KEY_FILE.limit;
    let mut password = String::new();
    std::io::stdin()
        .take(limit + 1)
        .read_to_string(&mut password)
        .context("cannot read the password from standard input")?;
    if password.len() as u64 > limit {
        bail!(
            "standard input holds more than {} KiB, too much for a password: pipe in the password or token alone",
            limit >> 10
        );
    }
    let password = password.trim_end_matches(['\n', '\r']).to_owned();
    if password.is_empty() {
        bail!("no password on standard input: pipe it in, e.g. imgpack login {} -u USER --password-stdin < token.txt", args.server);
    }
    let stored = imgpack_registry::login(
        &args.server,
        &args.username,
        &password,
        &transport(&args.registry, RetryArgs::default(), None, false),
    )?;
    eprintln!(
        "imgpack: login to {} succeeded; credentials saved in {stored}",
        args.server
    );
    Ok(())
}
