//! Binaries to layers: the base image, the checks on each binary, and the
//! layers written in parallel.

use std::path::Path;
use std::thread;

use anyhow::{bail, Context, Result};
use imgpack_blob::BlobStore;
use imgpack_image::{BaseLayers, LayerSet};
use imgpack_layer::{
    app_layer, ca_certs_layer, extra_app_name, files_layer, rootfs_layer, tzdata_layer,
    write_layer, DescribedContents, Layer, LayerCache, LayerOptions, LayerPaths, Workers,
};
use imgpack_platform::{check_binary, inspect_elf, Binary, BinaryError};

use super::plan::BuildPlan;
use super::status;

/// The base image's layers for each binary's platform, brought (linked) from
/// the base cache into this build's store.
pub(super) fn resolve_base_for(
    plan: &BuildPlan,
    binaries: &[Binary],
    store: &BlobStore,
) -> Result<Option<Vec<BaseLayers>>> {
    let Some(reference) = &plan.base else {
        return Ok(None);
    };
    let platforms: Vec<_> = binaries.iter().map(|b| b.platform.clone()).collect();
    let base = imgpack_registry::resolve_base(reference, &platforms, &plan.transport, store)
        .with_context(|| format!("cannot use the base image {reference}"))?;
    for (platform, layers) in platforms.iter().zip(&base) {
        status(
            plan,
            &format!(
                "{platform}: base {} ({} layers)",
                layers.manifest_digest,
                layers.layers.len()
            ),
        );
    }
    Ok(Some(base))
}

/// Checks a binary: static, or dynamic with its interpreter in the base image (the cgo case).
fn check_binary_for(
    binary: &Binary,
    base: Option<&BaseLayers>,
    store: &BlobStore,
) -> Result<String> {
    let path = binary.path.as_path();
    let err = match check_binary(path, &binary.platform) {
        Ok(info) => {
            return Ok(format!(
                "a static {} executable",
                info.arch().map_or("?", |a| a.name())
            ))
        }
        Err(err) => err,
    };
    let (BinaryError::Dynamic { .. }, Some(base)) = (&err, base) else {
        return Err(err.into());
    };
    let info = inspect_elf(path)?;
    let Some(interpreter) = info.interpreter.clone() else {
        return Err(err.into());
    };
    let mut paths = LayerPaths::default();
    for layer in &base.layers {
        paths.add_layer(store.open_blob(layer.digest())?, &layer.media_type)?;
    }
    if paths.resolves(&interpreter) {
        return Ok(format!(
            "dynamically linked; the base provides {interpreter}"
        ));
    }
    bail!(
        "binary {} needs the interpreter {interpreter}, which the base image {} does not have: \
         use a base with that libc, or build statically",
        path.display(),
        base.name
    )
}

fn status_warning(message: &str) {
    eprintln!("imgpack: warning: {message}");
}

/// The three platform-independent layers are written once and shared by
/// every platform (same digest, stored and uploaded once); the app layers
/// are written in parallel, one per platform.
pub(super) fn write_layers(
    plan: &BuildPlan,
    binaries: &[Binary],
    extras: &[Binary],
    app_name: &str,
    store: &BlobStore,
    base: Option<&[BaseLayers]>,
) -> Result<Vec<LayerSet>> {
    let base_for = |platform: &imgpack_platform::Platform| {
        let index = binaries.iter().position(|b| b.platform == *platform)?;
        base.and_then(|layers| layers.get(index))
    };
    for binary in binaries.iter().chain(extras) {
        let what = check_binary_for(binary, base_for(&binary.platform), store)?;
        status(
            plan,
            &format!("{}: {} is {what}", binary.platform, binary.path.display()),
        );
    }
    // A base image has its own users and directories: imgpack's rootfs would replace them.
    let mut shared_contents = if base.is_some() {
        Vec::new()
    } else {
        vec![rootfs_layer()?]
    };
    shared_contents.extend(ca_certs_layer(&plan.ca_certs)?);
    shared_contents.extend(tzdata_layer(&plan.tzdata, plan.zones.as_deref())?);
    shared_contents.extend(files_layer(&plan.files, Path::new("."))?);
    let app_contents = binaries
        .iter()
        .map(|main| {
            let mut layer_binaries = vec![(main.path.as_path(), app_name)];
            for extra in extras.iter().filter(|e| e.platform == main.platform) {
                layer_binaries.push((extra.path.as_path(), extra_app_name(&extra.path)?));
            }
            app_layer(&layer_binaries)
        })
        .collect::<Result<Vec<_>>>()?;

    // One pool for every layer written at once: --threads busy cores at most.
    let options = LayerOptions {
        compression: plan.compression,
        mtime: plan.settings.epoch,
        workers: Workers::new(plan.threads)?,
    };
    let cache = plan
        .cache
        .as_ref()
        .map(|cache| LayerCache::open(&cache.dir))
        .transpose()?;
    let write = |described: &DescribedContents| -> Result<(Layer, String, &'static str)> {
        let (layer, from) = match &cache {
            Some(cache) => {
                let cached = cache.layer(store, &described.contents, &options)?;
                (cached.layer, if cached.hit { "cached" } else { "written" })
            }
            None => (
                write_layer(store, &described.contents, &options)?,
                "written",
            ),
        };
        Ok((layer, described.description.clone(), from))
    };
    let (shared, apps) = thread::scope(|scope| {
        let apps: Vec<_> = app_contents
            .iter()
            .map(|c| scope.spawn(move || write(c)))
            .collect();
        let shared = shared_contents
            .iter()
            .map(write)
            .collect::<Result<Vec<_>>>();
        let apps = apps
            .into_iter()
            .map(|handle| {
                handle
                    .join()
                    .unwrap_or_else(|_| bail!("a layer writer thread panicked"))
            })
            .collect::<Result<Vec<_>>>();
        (shared, apps)
    });
    let (shared, apps) = (shared?, apps?);
    if let (Some(cache), Some(cache_plan)) = (&cache, &plan.cache) {
        // Pruning only costs a listing; a failure costs disk space, not the build.
        if let Err(err) = cache.prune(cache_plan.max_size) {
            status_warning(&format!("cannot prune the layer cache: {err:#}"));
        }
    }
    for (layer, description, from) in shared.iter().chain(&apps) {
        status(
            plan,
            &format!(
                "layer {} ({} bytes, {from}): {description}",
                layer.blob.digest, layer.blob.size
            ),
        );
    }
    let without_source = |written: Vec<(Layer, String, &str)>| -> Vec<(Layer, String)> {
        written
            .into_iter()
            .map(|(layer, description, _)| (layer, description))
            .collect()
    };
    let (shared, apps) = (without_source(shared), without_source(apps));
    Ok(binaries
        .iter()
        .zip(apps)
        .map(|(binary, app)| {
            let mut layers = shared.clone();
            layers.push(app);
            LayerSet {
                platform: binary.platform.clone(),
                app_name: app_name.to_owned(),
                layers,
                base: base_for(&binary.platform).cloned(),
            }
        })
        .collect())
}
