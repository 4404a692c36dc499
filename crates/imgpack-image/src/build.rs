use std::collections::{BTreeMap, HashMap};

use anyhow::{Context, Result};
use imgpack_blob::{canonical_json, BlobStore};
use imgpack_layer::Layer;
use imgpack_platform::Platform;
use oci_spec::image::{
    self as oci, ConfigBuilder, DescriptorBuilder, HistoryBuilder, ImageConfigurationBuilder,
    ImageIndexBuilder, ImageManifestBuilder, MediaType, PlatformBuilder, RootFsBuilder,
};

use crate::{BlobRef, Image, ImageSettings, PlatformManifest};

/// One platform's layers, in image order, each with its history line.
#[derive(Clone, Debug)]
pub struct LayerSet {
    pub platform: Platform,
    /// The binary's name under /app, for the default entrypoint.
    pub app_name: String,
    pub layers: Vec<(Layer, String)>,
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
    let config = BlobRef {
        media_type: format.config().to_owned(),
        blob: store.write_bytes(&config_json)?,
    };
    let layers = set
        .layers
        .iter()
        .map(|(layer, _)| {
            Ok(BlobRef {
                media_type: format.layer(layer.compression)?.to_owned(),
                blob: layer.blob.clone(),
            })
        })
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
    if !settings.annotations.is_empty() {
        manifest = manifest.annotations(hash_map(&settings.annotations));
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

fn image_config(
    set: &LayerSet,
    settings: &ImageSettings,
    created: &str,
) -> Result<oci::ImageConfiguration> {
    let entrypoint = settings
        .entrypoint
        .clone()
        .unwrap_or_else(|| vec![format!("{}/{}", imgpack_layer::APP_DIR, set.app_name)]);
    let mut config = ConfigBuilder::default()
        .user(settings.user.clone())
        .env(settings.merged_env())
        .entrypoint(entrypoint);
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
