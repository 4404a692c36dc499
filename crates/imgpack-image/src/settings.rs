use std::collections::BTreeMap;

use anyhow::{Context, Result};

use crate::Format;

/// PATH of the image: the usual directories plus /app, where the binary is.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin:/app";
/// nonroot, as in distroless images.
pub const DEFAULT_USER: &str = "65532:65532";

/// Everything about the image besides its layers.
#[derive(Clone, Debug)]
pub struct ImageSettings {
    pub format: Format,
    /// `None`: run the binary, `["/app/<name>"]`.
    pub entrypoint: Option<Vec<String>>,
    pub cmd: Vec<String>,
    /// `K=V` entries imgpack sets itself (PATH, SSL_CERT_FILE).
    pub default_env: Vec<String>,
    /// `K=V` entries from the user; a key given here replaces a default.
    pub env: Vec<String>,
    pub user: String,
    pub workdir: Option<String>,
    /// `8080/tcp` style.
    pub exposed_ports: Vec<String>,
    pub labels: BTreeMap<String, String>,
    /// Set on every manifest and on the index.
    pub annotations: BTreeMap<String, String>,
    /// Seconds since the epoch for `created` and history (SOURCE_DATE_EPOCH or 0).
    pub epoch: u64,
}

impl Default for ImageSettings {
    fn default() -> Self {
        Self {
            format: Format::Oci,
            entrypoint: None,
            cmd: Vec::new(),
            default_env: vec![format!("PATH={DEFAULT_PATH}")],
            env: Vec::new(),
            user: DEFAULT_USER.to_owned(),
            workdir: None,
            exposed_ports: Vec::new(),
            labels: BTreeMap::new(),
            annotations: BTreeMap::new(),
            epoch: 0,
        }
    }
}

impl ImageSettings {
    /// Defaults first, each replaced by a user entry of the same key, then the user's new keys.
    pub fn merged_env(&self) -> Vec<String> {
        let key = |entry: &str| entry.split('=').next().unwrap_or_default().to_owned();
        let mut merged: Vec<String> = self.default_env.clone();
        for entry in &self.env {
            match merged
                .iter_mut()
                .find(|existing| key(existing) == key(entry))
            {
                Some(existing) => *existing = entry.clone(),
                None => merged.push(entry.clone()),
            }
        }
        merged
    }
}

/// RFC 3339 time of `epoch`, as image configs record it.
pub fn created_timestamp(epoch: u64) -> Result<String> {
    let seconds = i64::try_from(epoch).context("SOURCE_DATE_EPOCH is too large")?;
    let timestamp = jiff::Timestamp::from_second(seconds).with_context(|| {
        format!("SOURCE_DATE_EPOCH {epoch} is out of range: use seconds since 1970")
    })?;
    Ok(timestamp.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_env_replaces_defaults_by_key_and_keeps_order() {
        let settings = ImageSettings {
            default_env: vec!["PATH=/bin".into(), "SSL_CERT_FILE=/x".into()],
            env: vec!["GIN_MODE=release".into(), "PATH=/app".into()],
            ..ImageSettings::default()
        };
        assert_eq!(
            settings.merged_env(),
            ["PATH=/app", "SSL_CERT_FILE=/x", "GIN_MODE=release"]
        );
    }

    #[test]
    fn created_is_rfc3339_utc() {
        assert_eq!(created_timestamp(0).unwrap(), "1970-01-01T00:00:00Z");
        assert_eq!(
            created_timestamp(1_700_000_000).unwrap(),
            "2023-11-14T22:13:20Z"
        );
        assert!(created_timestamp(u64::MAX).is_err());
    }
}
