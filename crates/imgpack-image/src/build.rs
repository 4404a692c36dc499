//! Layers and settings to an image: each platform's config and manifest, and
//! an index for several platforms, merged over a base image's config.

use std::collections::{BTreeMap, HashMap};

use anyhow::{Context, Result};
use imgpack_blob::{canonical_json, BlobStore};
use imgpack_layer::Layer;
use imgpack_platform::Platform;
use oci_spec::image::{
    self as oci, ConfigBuilder, DescriptorBuilder, HistoryBuilder, ImageConfigurationBuilder,
    ImageIndexBuilder, ImageManifestBuilder, MediaType, PlatformBuilder, RootFsBuilder,
};

use crate::base::{layer_media_type, union};
use crate::{
    BaseLayers, BlobRef, Format, Image, ImageSettings, PlatformManifest, BASE_DIGEST_ANNOTATION,
    BASE_NAME_ANNOTATION,
};
use serde_json::Value;

/// One platform's layers, in image order, each with its history line.
#[derive(Clone, Debug)]
pub struct LayerSet {
    pub platform: Platform,
    /// The binary's name under /app, for the default entrypoint.
    pub app_name: String,
    pub layers: Vec<(Layer, String)>,
    /// The base image's layers and config, under imgpack's layers.
    pub base: Option<BaseLayers>,
}

/// Writes each platform's config and manifest, and an index when there are
/// several platforms, into `store`. Every JSON document is serialised
/// canonically (sorted keys, no whitespace), so the digests depend only on
/// the inputs.
pub fn build_image(
    store: &BlobStore,
    sets: &[LayerSet],
    settings: &ImageSettings,
) -> Result<Image> {
    let created = crate::created_timestamp(settings.epoch)?;
    let manifests = sets
        .iter()
        .map(|set| build_manifest(store, set, settings, &created))
        .collect::<Result<Vec<_>>>()?;
    let root = match manifests.as_slice() {
        [single] => single.manifest.clone(),
        _ => build_index(store, &manifests, settings)?,
    };
    Ok(Image {
        store: store.clone(),
        root,
        manifests,
        referrers: Vec::new(),
    })
}

fn build_manifest(
    store: &BlobStore,
    set: &LayerSet,
    settings: &ImageSettings,
    created: &str,
) -> Result<PlatformManifest> {
    let format = settings.format;
    let config_json = canonical_json(&image_config(set, settings, created)?)?;
    let base_layers = set
        .base
        .iter()
        .flat_map(|base| &base.layers)
        .map(|layer| {
            Ok(BlobRef {
                media_type: layer_media_type(&layer.media_type, format)?,
                blob: layer.blob.clone(),
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let config = BlobRef {
        media_type: format.config().to_owned(),
        blob: store.write_bytes(&config_json)?,
    };
    let own_layers = set.layers.iter().map(|(layer, _)| {
        Ok(BlobRef {
            media_type: format.layer(layer.compression)?.to_owned(),
            blob: layer.blob.clone(),
        })
    });
    let layers = base_layers
        .into_iter()
        .map(Ok)
        .chain(own_layers)
        .collect::<Result<Vec<_>>>()?;

    let mut manifest = ImageManifestBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::from(format.manifest()))
        .config(descriptor(&config, None)?)
        .layers(
            layers
                .iter()
                .map(|l| descriptor(l, None))
                .collect::<Result<Vec<_>>>()?,
        );
    let mut annotations = settings.annotations.clone();
    if let (Some(base), Format::Oci) = (&set.base, format) {
        annotations
            .entry(BASE_NAME_ANNOTATION.to_owned())
            .or_insert_with(|| base.name.clone());
        annotations
            .entry(BASE_DIGEST_ANNOTATION.to_owned())
            .or_insert_with(|| base.manifest_digest.clone());
    }
    if !annotations.is_empty() {
        manifest = manifest.annotations(hash_map(&annotations));
    }
    let manifest_json = canonical_json(&manifest.build()?)?;
    Ok(PlatformManifest {
        platform: set.platform.clone(),
        manifest: BlobRef {
            media_type: format.manifest().to_owned(),
            blob: store.write_bytes(&manifest_json)?,
        },
        config,
        layers,
    })
}

/// imgpack's config, merged over the base's when there is one: the base's
/// layers, history, environment (PATH gains /app), user, working directory,
/// ports and labels stay unless a setting replaces them; entrypoint and cmd are imgpack's.
fn image_config(set: &LayerSet, settings: &ImageSettings, created: &str) -> Result<Value> {
    let mut config = serde_json::to_value(own_config(set, settings, created)?)?;
    let Some(base) = &set.base else {
        return Ok(config);
    };
    let diff_ids = config["rootfs"]["diff_ids"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    config["rootfs"]["diff_ids"] =
        Value::Array(base.diff_ids().into_iter().chain(diff_ids).collect());
    let history = config["history"].as_array().cloned().unwrap_or_default();
    config["history"] = Value::Array(base.history().into_iter().chain(history).collect());
    let ours = config["config"]
        .as_object_mut()
        .context("an image config has a config section")?;
    ours.insert(
        "Env".into(),
        serde_json::json!(settings.merged_env_with_base(base.env())),
    );
    for key in ["User", "WorkingDir"] {
        if !ours.contains_key(key) {
            if let Some(value) = base.setting(key) {
                ours.insert(key.into(), value.clone());
            }
        }
    }
    for key in ["ExposedPorts", "Labels"] {
        if let Some(merged) = union(base.setting(key), ours.get(key)) {
            ours.insert(key.into(), merged);
        }
    }
    Ok(config)
}

fn own_config(
    set: &LayerSet,
    settings: &ImageSettings,
    created: &str,
) -> Result<oci::ImageConfiguration> {
    let entrypoint = settings
        .entrypoint
        .clone()
        .unwrap_or_else(|| vec![imgpack_layer::app_path(&set.app_name)]);
    let mut config = ConfigBuilder::default()
        .env(settings.merged_env())
        .entrypoint(entrypoint);
    match (&settings.user, &set.base) {
        (Some(user), _) => config = config.user(user.clone()),
        (None, None) => config = config.user(crate::DEFAULT_USER.to_owned()),
        (None, Some(_)) => {} // the base's user
    }
    if !settings.cmd.is_empty() {
        config = config.cmd(settings.cmd.clone());
    }
    if let Some(workdir) = &settings.workdir {
        config = config.working_dir(workdir.clone());
    }
    if !settings.exposed_ports.is_empty() {
        config = config.exposed_ports(settings.exposed_ports.clone());
    }
    if !settings.labels.is_empty() {
        config = config.labels(hash_map(&settings.labels));
    }
    let history = set
        .layers
        .iter()
        .map(|(_, description)| {
            HistoryBuilder::default()
                .created(created.to_owned())
                .created_by(description.clone())
                .build()
        })
        .collect::<Result<Vec<_>, _>>()?;
    let diff_ids = set
        .layers
        .iter()
        .map(|(layer, _)| layer.diff_id.to_string())
        .collect::<Vec<_>>();
    let mut builder = ImageConfigurationBuilder::default()
        .created(created.to_owned())
        .architecture(oci::Arch::from(set.platform.arch.name()))
        .os(oci::Os::Linux)
        .config(config.build()?)
        .rootfs(
            RootFsBuilder::default()
                .typ("layers")
                .diff_ids(diff_ids)
                .build()?,
        )
        .history(history);
    if let Some(variant) = set.platform.variant {
        builder = builder.variant(variant);
    }
    builder.build().context("cannot build the image config")
}

fn build_index(
    store: &BlobStore,
    manifests: &[PlatformManifest],
    settings: &ImageSettings,
) -> Result<BlobRef> {
    let format = settings.format;
    let descriptors = manifests
        .iter()
        .map(|m| descriptor(&m.manifest, Some(&m.platform)))
        .collect::<Result<Vec<_>>>()?;
    let mut index = ImageIndexBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::from(format.index()))
        .manifests(descriptors);
    if !settings.annotations.is_empty() {
        index = index.annotations(hash_map(&settings.annotations));
    }
    let index_json = canonical_json(&index.build()?)?;
    Ok(BlobRef {
        media_type: format.index().to_owned(),
        blob: store.write_bytes(&index_json)?,
    })
}

/// An oci-spec descriptor for `blob`, with a platform for index entries.
pub fn descriptor(blob: &BlobRef, platform: Option<&Platform>) -> Result<oci::Descriptor> {
    let digest: oci::Digest = blob.digest().to_string().parse()?;
    let mut builder = DescriptorBuilder::default()
        .media_type(MediaType::from(blob.media_type.as_str()))
        .digest(digest)
        .size(blob.blob.size);
    if let Some(platform) = platform {
        let mut oci_platform = PlatformBuilder::default()
            .architecture(oci::Arch::from(platform.arch.name()))
            .os(oci::Os::Linux);
        if let Some(variant) = platform.variant {
            oci_platform = oci_platform.variant(variant);
        }
        builder = builder.platform(oci_platform.build()?);
    }
    Ok(builder.build()?)
}

fn hash_map(map: &BTreeMap<String, String>) -> HashMap<String, String> {
    map.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
}
