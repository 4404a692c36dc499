//! index.json of a layout: adding or replacing one tag and keeping every other
//! entry as it is.

use anyhow::{Context, Result};
use imgpack_blob::canonical_json;
use imgpack_image::{descriptor, Image, REF_NAME_ANNOTATION};
use serde_json::{json, Value};

/// index.json with `image` under `tag`, keeping every other entry of `existing`.
///
/// Entries are handled as JSON values, so fields imgpack does not know (from
/// other tools writing the same layout) survive untouched.
pub(crate) fn index_with_tag(existing: Option<&[u8]>, image: &Image, tag: &str) -> Result<Vec<u8>> {
    let mut index: Value = match existing {
        Some(bytes) => serde_json::from_slice(bytes).context("index.json is not valid JSON")?,
        None => json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": [],
        }),
    };
    let manifests = index
        .get_mut("manifests")
        .and_then(Value::as_array_mut)
        .context("index.json has no manifests list")?;
    manifests.retain(|entry| {
        entry
            .pointer("/annotations/org.opencontainers.image.ref.name")
            .and_then(Value::as_str)
            != Some(tag)
    });

    let mut entry = serde_json::to_value(descriptor(&image.root, None)?)?;
    entry["annotations"] = json!({ REF_NAME_ANNOTATION: tag });
    manifests.push(entry);
    // Referrers are listed untagged, as the image-layout spec lists any
    // manifest; one listed before (a rebuild) is not listed twice.
    for referrer in &image.referrers {
        let descriptor = referrer.descriptor();
        if !manifests
            .iter()
            .any(|m| m["digest"] == descriptor["digest"])
        {
            manifests.push(descriptor);
        }
    }
    Ok(canonical_json(&index)?)
}
