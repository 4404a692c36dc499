//! `imgpack build`: from flags (and an imgpack.toml) to a checked plan
//! (`plan`), binaries (compiled by a frontend or given), layers (`layers`),
//! the image, and its outputs and push.

mod attest;
mod layers;
mod plan;
mod users;

use layers::{resolve_base_for, write_layers};
pub(crate) use plan::NoRepository;
use plan::{check_push_is_not_a_path, plan, BuildPlan, Inputs};

use std::path::Path;

use anyhow::{bail, Context, Result};
use imgpack_blob::BlobStore;
use imgpack_frontend::SourceBuild;
use imgpack_image::{build_image, Sink};
use imgpack_layer::common_app_name;
use imgpack_platform::Binary;

use crate::cli::BuildArgs;
use crate::registry::{check_image_refs, pushed_reference, write_image_refs};

/// `imgpack build`: the image the flags describe or, with an imgpack.toml,
/// every image it describes (flags over the file), one after another.
pub fn run(args: BuildArgs) -> Result<()> {
    let image_refs = args.push_flags.image_refs.clone();
    let lines = build_all(args)?;
    if let Some(path) = image_refs {
        write_image_refs(&path, &lines)?;
    }
    // The digests (or pushed references) are all there is on stdout, so scripts can capture them.
    for line in lines {
        println!("{line}");
    }
    Ok(())
}

/// Builds every image `args` (and an imgpack.toml) describe; returns, per
/// image, the pushed `REPOSITORY@sha256:…` or, without a push, the digest.
pub fn build_all(mut args: BuildArgs) -> Result<Vec<String>> {
    // First: with the project taken for the reference, the config file is looked for elsewhere.
    check_push_is_not_a_path(&args)?;
    check_image_refs(&args.push_flags)?;
    // A git source becomes its checkout before the config file is looked for in it.
    let checkout = crate::git_source::check_out(&mut args)?;
    let config = crate::config::load(&args)?;
    // After the file's own paths, which name the link more precisely.
    if let (Some((_, name)), Some(root)) = (&checkout, &args.checkout_root) {
        if !args.trust_source_config {
            crate::config::check_checkout(name, root)?;
        }
    }
    let builds = match config {
        Some(config) => config.builds(&args)?,
        None => vec![args],
    };
    if builds.len() > 1
        && builds
            .iter()
            .any(|b| b.push.as_deref().is_some_and(|r| !r.is_empty()))
    {
        bail!(
            "--push REF names one image but the config file describes {}: use --push without a \
             reference (to `repository` in the file or $IMGPACK_REPO)",
            builds.len()
        );
    }
    if builds.len() > 1 && builds.iter().any(|b| !b.outputs.is_empty()) {
        bail!(
            "--output writes one image but the config file describes {}: push them with --push, \
             or build one with imgpack build PATH",
            builds.len()
        );
    }
    let plans = builds.into_iter().map(plan).collect::<Result<Vec<_>>>()?;
    plans.into_iter().map(run_plan).collect()
}

fn run_plan(plan: BuildPlan) -> Result<String> {
    let staging = crate::staging::create(plan.tmpdir.as_deref())?;
    let store = BlobStore::open(staging.path())?;
    let (binaries, extras) = compile(&plan, staging.path())?;
    // Only now, with the project's code (build scripts, cgo compilers) done:
    // the decrypted key is never in memory while it runs.
    if let Some(key) = plan.push.as_ref().and_then(|push| push.signer.as_ref()) {
        key.unlock()?;
    }
    let app_name = common_app_name(plan.name.as_deref(), &binaries)?;
    let push = match &plan.push {
        Some(push) => Some(push.sink(&app_name, plan.quiet)?),
        None => None,
    };
    // Before any layer is written: a sink may take layers while they are compressed.
    let outputs = plan.outputs.iter().map(|output| &*output.sink);
    for sink in outputs.chain(push.iter().map(|(sink, _)| sink as &dyn Sink)) {
        sink.prepare(&store)
            .with_context(|| format!("cannot write {}", sink.describe()))?;
    }
    let base = resolve_base_for(&plan, &binaries, &store)?;
    if let (Some(user), Some(base)) = (&plan.settings.user, &base) {
        let bases = if users::files_write_etc(&plan.files) {
            &[][..]
        } else {
            &base[..]
        };
        for platform_base in bases {
            users::check_user_in_base(user, platform_base, &store)?;
        }
    }
    let sets = write_layers(
        &plan,
        &binaries,
        &extras,
        &app_name,
        &store,
        base.as_deref(),
    )?;
    let image = build_image(&store, &sets, &plan.settings)?;
    // Named as it is pushed; an image only written out is named after its binary.
    let subject_name = push
        .as_ref()
        .map_or(app_name.clone(), |(_, target)| target.repository_ref());
    let wants_referrers =
        push.is_some() || plan.outputs.iter().any(|output| output.holds_referrers);
    let mut with_referrers = image.clone();
    if wants_referrers && plan.attest.wanted() {
        let in_image = binaries_in_image(&binaries, &extras, &app_name)?;
        with_referrers.referrers =
            attest::referrers(&plan, &image, &in_image, base.as_deref(), &subject_name)?;
    }
    for output in &plan.outputs {
        let written = if output.holds_referrers {
            &with_referrers
        } else {
            &image
        };
        output
            .sink
            .write(written)
            .with_context(|| format!("cannot write {}", output.sink.describe()))?;
        status(&plan, &format!("wrote {}", output.sink.describe()));
    }
    match push {
        Some((sink, target)) => {
            sink.write(&with_referrers)
                .with_context(|| format!("cannot push to {}", sink.describe()))?;
            Ok(pushed_reference(&target, image.root.digest()))
        }
        None => Ok(image.root.digest().to_string()),
    }
}

/// Per platform (in the order of the image's manifests), each binary with its path in the image.
fn binaries_in_image<'a>(
    binaries: &'a [Binary],
    extras: &'a [Binary],
    app_name: &str,
) -> Result<Vec<attest::PlatformBinaries<'a>>> {
    binaries
        .iter()
        .map(|main| {
            let mut in_image = vec![(imgpack_layer::app_path(app_name), main)];
            for extra in extras.iter().filter(|e| e.platform == main.platform) {
                let name = imgpack_layer::extra_app_name(&extra.path)?;
                in_image.push((imgpack_layer::app_path(name), extra));
            }
            Ok(attest::PlatformBinaries { in_image })
        })
        .collect()
}

/// The main binary per platform, and the extra binaries (`paths` beyond the first).
fn compile(plan: &BuildPlan, staging: &Path) -> Result<(Vec<Binary>, Vec<Binary>)> {
    let request = match &plan.inputs {
        Inputs::Prebuilt(binaries) => return Ok((binaries.clone(), Vec::new())),
        Inputs::Source(request) => request,
    };
    let mut built = Vec::new();
    for (index, path) in std::iter::once(&request.path)
        .chain(&plan.more_paths)
        .enumerate()
    {
        let request = SourceBuild {
            path: path.clone(),
            out_dir: staging.join("bin").join(index.to_string()),
            ..(**request).clone()
        };
        built.push(imgpack_frontend::build(&request)?);
    }
    let main = built.remove(0);
    Ok((main, built.into_iter().flatten().collect()))
}

pub(super) fn status(plan: &BuildPlan, message: &str) {
    if !plan.quiet {
        eprintln!("imgpack: {message}");
    }
}
