//! Tags: the grammar registries and Docker accept.

use anyhow::{bail, Result};

/// Checks a tag against the grammar registries and Docker use:
/// `[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}`.
pub fn validate_tag(tag: &str) -> Result<()> {
    let mut chars = tag.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_');
    let rest_ok = chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if !first_ok || !rest_ok || tag.len() > 128 {
        bail!(
            "bad tag '{}': a tag is 1 to 128 letters, digits, '_', '.' or '-', not starting with '.' or '-'",
            tag.escape_debug()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_follow_the_registry_grammar() {
        for good in ["latest", "v1.2.3", "3f2c1e9", "_x", "a-b_c.d"] {
            validate_tag(good).unwrap();
        }
        for bad in ["", ".x", "-x", "a/b", "a:b", &"x".repeat(129)] {
            assert!(validate_tag(bad).is_err(), "{bad}");
        }
    }
}
