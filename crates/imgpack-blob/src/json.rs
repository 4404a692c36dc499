//! Canonical JSON (sorted keys, no whitespace), so configs and manifests hash
//! the same wherever they are built.

use serde::Serialize;
use serde_json::{Map, Value};

/// Serialises `value` as compact JSON with every object's keys sorted.
///
/// Config, manifest and index digests must not depend on HashMap iteration
/// order (oci-spec keeps labels and annotations in HashMaps) nor on whether
/// some crate in the build enables serde_json's `preserve_order` feature, so
/// keys are sorted explicitly rather than relying on `Value`'s map type.
pub fn canonical_json<T: Serialize>(value: &T) -> serde_json::Result<Vec<u8>> {
    let value = sort_keys(serde_json::to_value(value)?);
    serde_json::to_vec(&value)
}

fn sort_keys(value: Value) -> Value {
    match value {
        Value::Object(map) => {
            let mut entries: Vec<(String, Value)> = map.into_iter().collect();
            entries.sort_by(|a, b| a.0.cmp(&b.0));
            let sorted: Map<String, Value> = entries
                .into_iter()
                .map(|(key, value)| (key, sort_keys(value)))
                .collect();
            Value::Object(sorted)
        }
        Value::Array(items) => Value::Array(items.into_iter().map(sort_keys).collect()),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    #[test]
    fn keys_are_sorted_at_every_depth() {
        let mut inner = HashMap::new();
        for key in ["zeta", "alpha", "mid"] {
            inner.insert(key.to_owned(), 1);
        }
        let value = serde_json::json!({"b": [inner], "a": {"y": 1, "x": 2}});
        let text = String::from_utf8(canonical_json(&value).unwrap()).unwrap();
        assert_eq!(
            text,
            r#"{"a":{"x":2,"y":1},"b":[{"alpha":1,"mid":1,"zeta":1}]}"#
        );
    }
}
