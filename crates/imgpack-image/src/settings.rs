//! The image's settings besides its layers (entrypoint, env, user, ports,
//! labels, annotations, time), with their defaults and how env is merged.

use std::collections::BTreeMap;

use anyhow::{Context, Result};

use imgpack_layer::APP_DIR;

use crate::Format;

/// PATH of the image: the usual directories plus /app (`APP_DIR`), where the binary is.
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
    /// `None`: the base image's user, or nonroot without a base.
    pub user: Option<String>,
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
            user: None,
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
        replace_by_key(Vec::new(), self.default_env.iter().chain(&self.env))
    }

    /// The base image's environment with /app added to its PATH, then
    /// imgpack's defaults but PATH, then the user's entries, each replacing by key.
    pub fn merged_env_with_base(&self, base_env: Vec<String>) -> Vec<String> {
        let mut env = base_env;
        match env.iter_mut().find(|e| e.starts_with("PATH=")) {
            Some(path) if !path["PATH=".len()..].split(':').any(|dir| dir == APP_DIR) => {
                path.push(':');
                path.push_str(APP_DIR);
            }
            Some(_) => {}
            None => env.push(format!("PATH={DEFAULT_PATH}")),
        }
        let defaults = self.default_env.iter().filter(|e| !e.starts_with("PATH="));
        replace_by_key(env, defaults.chain(&self.env))
    }
}

/// `env` with each of `entries` replacing the entry of the same key, or appended.
fn replace_by_key<'a>(
    mut env: Vec<String>,
    entries: impl IntoIterator<Item = &'a String>,
) -> Vec<String> {
    let key = |entry: &str| entry.split('=').next().unwrap_or_default().to_owned();
    for entry in entries {
        match env.iter_mut().find(|existing| key(existing) == key(entry)) {
            Some(existing) => existing.clone_from(entry),
            None => env.push(entry.clone()),
        }
    }
    env
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
    fn a_base_path_gains_app_and_keeps_the_rest() {
        let settings = ImageSettings {
            default_env: vec![format!("PATH={DEFAULT_PATH}"), "SSL_CERT_FILE=/x".into()],
            env: vec!["LANG=C".into()],
            ..ImageSettings::default()
        };
        let base = vec!["PATH=/usr/bin:/bin".into(), "LANG=en_US.UTF-8".into()];
        assert_eq!(
            settings.merged_env_with_base(base),
            ["PATH=/usr/bin:/bin:/app", "LANG=C", "SSL_CERT_FILE=/x"]
        );
        assert_eq!(
            settings.merged_env_with_base(Vec::new())[0],
            format!("PATH={DEFAULT_PATH}")
        );
    }

    #[test]
    fn the_default_path_ends_with_the_app_dir() {
        assert!(DEFAULT_PATH.ends_with(&format!(":{APP_DIR}")));
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
