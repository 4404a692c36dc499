use std::fmt;
use std::fs;
use std::path::PathBuf;

use anyhow::{Context, Result};
use base64::Engine as _;
use docker_credential::{CredentialRetrievalError, DockerCredential};
use serde_json::{json, Value};

/// A secret for one registry. `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub enum Credential {
    Basic {
        username: String,
        password: String,
    },
    /// An OAuth2 refresh token from `docker login` to registries that issue them.
    IdentityToken(String),
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Credential::Basic { username, .. } => write!(f, "Basic({username}, <redacted>)"),
            Credential::IdentityToken(_) => f.write_str("IdentityToken(<redacted>)"),
        }
    }
}

/// The credential found for a registry, and where it was looked for.
#[derive(Clone, Debug, Default)]
pub struct Credentials {
    pub credential: Option<Credential>,
    /// Where the credential came from, for error messages.
    pub source: Option<String>,
    /// Every place looked at, for the error when none worked.
    pub tried: Vec<String>,
}

impl Credentials {
    pub fn anonymous() -> Self {
        Self::default()
    }

    /// "credentials from X" or "no credentials (looked in A, B)": for 401/403 messages.
    pub fn describe(&self) -> String {
        match (&self.credential, &self.source) {
            (Some(_), Some(source)) => format!("credentials from {source}"),
            _ if self.tried.is_empty() => "no credentials".to_owned(),
            _ => format!("no credentials found (looked in {})", self.tried.join(", ")),
        }
    }
}

/// `$DOCKER_CONFIG/config.json`, else `~/.docker/config.json`.
pub fn docker_config_path() -> Option<PathBuf> {
    std::env::var_os("DOCKER_CONFIG")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".docker")))
        .map(|dir| dir.join("config.json"))
}

/// Podman's auth file: `$REGISTRY_AUTH_FILE`, else `$XDG_RUNTIME_DIR/containers/auth.json`.
fn podman_auth_path() -> Option<PathBuf> {
    std::env::var_os("REGISTRY_AUTH_FILE")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("XDG_RUNTIME_DIR")
                .map(|dir| PathBuf::from(dir).join("containers/auth.json"))
        })
}

type Lookup = dyn Fn(&str) -> Result<DockerCredential, CredentialRetrievalError>;

/// Looks for a credential the way docker, then podman, would: docker's
/// config.json (`auths`, `credHelpers`, `credsStore`), then podman's auth.json.
pub fn find_credentials(keys: &[String]) -> Credentials {
    let mut found = Credentials::default();
    let docker = docker_config_path()
        .map(|p| p.display().to_string())
        .unwrap_or("~/.docker/config.json".into());
    let podman = podman_auth_path()
        .map(|p| p.display().to_string())
        .unwrap_or("podman auth.json".into());
    let lookups: [(&str, &Lookup); 2] = [
        (&docker, &docker_credential::get_credential),
        (&podman, &docker_credential::get_podman_credential),
    ];
    for (source, lookup) in lookups {
        found.tried.push(source.to_owned());
        for key in keys {
            match lookup(key) {
                Ok(credential) => {
                    found.credential = Some(match credential {
                        DockerCredential::UsernamePassword(username, password) => {
                            Credential::Basic { username, password }
                        }
                        DockerCredential::IdentityToken(token) => Credential::IdentityToken(token),
                    });
                    found.source = Some(source.to_owned());
                    return found;
                }
                // A helper's output can hold secrets: say only that it failed.
                Err(CredentialRetrievalError::HelperFailure { helper, .. }) => {
                    found.tried.push(format!(
                        "credential helper docker-credential-{helper} (it failed)"
                    ));
                }
                Err(_) => {}
            }
        }
    }
    found
}

/// Stores `username`/`password` for `server` in docker's config.json, as
/// `docker login` does (base64 `auth`, file mode 0600), keeping everything
/// else in the file. Returns the file's path.
pub fn write_docker_login(server: &str, username: &str, password: &str) -> Result<PathBuf> {
    let path = docker_config_path()
        .context("cannot find docker's config directory: set DOCKER_CONFIG or HOME")?;
    let dir = path.parent().expect("config.json has a parent");
    fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let mut config: Value = match fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .with_context(|| format!("{} is not valid JSON", path.display()))?,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => json!({}),
        Err(err) => return Err(err).with_context(|| format!("cannot read {}", path.display())),
    };
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("{username}:{password}"));
    let root = config
        .as_object_mut()
        .with_context(|| format!("{} is not a JSON object", path.display()))?;
    let auths = root.entry("auths").or_insert_with(|| json!({}));
    let auths = auths
        .as_object_mut()
        .with_context(|| format!("'auths' in {} is not an object", path.display()))?;
    auths.insert(server.to_owned(), json!({ "auth": auth }));
    // Only its owner can read it: it holds secrets.
    imgpack_blob::write_atomically(&path, &serde_json::to_vec_pretty(&config)?, 0o600)?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_secrets() {
        let basic = Credential::Basic {
            username: "ci".into(),
            password: "hunter2".into(),
        };
        let token = Credential::IdentityToken("tok-123".into());
        let shown = format!("{basic:?} {token:?}");
        assert!(
            !shown.contains("hunter2") && !shown.contains("tok-123"),
            "{shown}"
        );
    }
}
