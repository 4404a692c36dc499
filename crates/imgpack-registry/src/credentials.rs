//! Registry credentials: found where docker and podman keep them, stored
//! where `docker login` would, and never shown in a log or an error.

use std::fmt;
use std::fs;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
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
    let lookups: [(Option<PathBuf>, &str, &Lookup); 2] = [
        (
            docker_config_path(),
            "~/.docker/config.json",
            &docker_credential::get_credential,
        ),
        (
            podman_auth_path(),
            "podman auth.json",
            &docker_credential::get_podman_credential,
        ),
    ];
    for (path, default_name, lookup) in lookups {
        let source = path
            .as_ref()
            .map_or(default_name.to_owned(), |p| p.display().to_string());
        // The lookup reads the file itself: first make sure it is a regular
        // file of a credentials file's size (a FIFO would block it forever).
        if let Some(refused) = path.as_deref().and_then(unusable_credentials_file) {
            found.tried.push(format!("{source} (not read: {refused})"));
            continue;
        }
        let source = source.as_str();
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

/// Why the credentials file at `path` is not to be read, if it is not: a
/// FIFO, a device, a file too large. A missing file is fine (nothing is there).
fn unusable_credentials_file(path: &std::path::Path) -> Option<String> {
    match imgpack_blob::open_regular(path, &imgpack_blob::local_file::CREDENTIALS_FILE) {
        Err(err) if !err.is_not_found() && err.io_error().is_none() => Some(err.to_string()),
        _ => None,
    }
}

/// Where `imgpack login` put the credentials, for its closing line.
#[derive(Debug, PartialEq, Eq)]
pub enum StoredIn {
    /// docker's config.json (base64 `auth`, mode 0600).
    File(PathBuf),
    /// The credential helper config.json names (`credHelpers` or `credsStore`).
    Helper(String),
}

impl fmt::Display for StoredIn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoredIn::File(path) => write!(f, "{}", path.display()),
            StoredIn::Helper(helper) => write!(f, "credential helper docker-credential-{helper}"),
        }
    }
}

/// Stores `username`/`password` under `key` as `docker login` does: through
/// the credential helper docker's config.json names for it (`credHelpers`,
/// else `credsStore`), otherwise in config.json itself (base64 `auth`, mode
/// 0600, its directory created 0700, a symlinked config.json written through),
/// keeping everything else in the file.
pub fn store_login(key: &str, username: &str, password: &str) -> Result<StoredIn> {
    let path = docker_config_path()
        .context("cannot find docker's config directory: set DOCKER_CONFIG or HOME")?;
    store_login_in(path, key, username, password)
}

fn store_login_in(path: PathBuf, key: &str, username: &str, password: &str) -> Result<StoredIn> {
    // A symlinked config.json (dotfiles) is written where it points, not replaced.
    let path = fs::canonicalize(&path).unwrap_or(path);
    let kind = imgpack_blob::local_file::CREDENTIALS_FILE;
    let mut config: Value = match imgpack_blob::read_local_file(&path, &kind) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .with_context(|| format!("{} is not valid JSON", path.display()))?,
        Err(err) if err.is_not_found() => json!({}),
        Err(err) => return Err(err.into()),
    };
    if let Some(helper) = helper_for(&config, key) {
        store_with_helper(&helper, key, username, password)?;
        return Ok(StoredIn::Helper(helper));
    }
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("{username}:{password}"));
    let root = config
        .as_object_mut()
        .with_context(|| format!("{} is not a JSON object", path.display()))?;
    let auths = root.entry("auths").or_insert_with(|| json!({}));
    let auths = auths
        .as_object_mut()
        .with_context(|| format!("'auths' in {} is not an object", path.display()))?;
    auths.insert(key.to_owned(), json!({ "auth": auth }));
    let dir = path.parent().context("config.json has no directory")?;
    crate::locations::create_private_dir(dir)?;
    // Only its owner can read it: it holds secrets.
    imgpack_blob::write_atomically(&path, &serde_json::to_vec_pretty(&config)?, 0o600)?;
    Ok(StoredIn::File(path))
}

/// The helper config.json names for `key`: `credHelpers[key]`, else `credsStore`.
fn helper_for(config: &Value, key: &str) -> Option<String> {
    let named = |value: &Value| {
        value
            .as_str()
            .filter(|name| !name.trim().is_empty())
            .map(str::to_owned)
    };
    config["credHelpers"]
        .get(key)
        .and_then(named)
        .or_else(|| named(&config["credsStore"]))
}

/// `docker-credential-HELPER store` with the credential as JSON on its standard input.
fn store_with_helper(helper: &str, key: &str, username: &str, password: &str) -> Result<()> {
    use std::io::Write as _;
    use std::process::{Command, Stdio};
    let program = format!("docker-credential-{helper}");
    let mut child = Command::new(&program)
        .arg("store")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| {
            format!(
                "docker's config.json stores credentials with {program}, which cannot be run: \
                 install it or remove credsStore/credHelpers from config.json"
            )
        })?;
    let request = json!({"ServerURL": key, "Username": username, "Secret": password});
    let mut stdin = child.stdin.take().context("no stdin for the helper")?;
    // A helper that exits early closes the pipe; its exit status says what went wrong.
    let _ = stdin.write_all(request.to_string().as_bytes());
    drop(stdin);
    let status = child
        .wait()
        .with_context(|| format!("{program} did not finish"))?;
    if !status.success() {
        // Its output may echo the secret: only the status is shown.
        bail!("{program} store failed ({status}): check the helper, or remove credsStore/credHelpers from config.json");
    }
    Ok(())
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

    #[test]
    fn logins_go_through_symlinks_into_a_private_directory() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let docker = dir.path().join("home/.docker");
        let stored = store_login_in(docker.join("config.json"), "reg:5000", "ci", "pw").unwrap();
        assert_eq!(stored, StoredIn::File(docker.join("config.json")));
        let mode = |p: &std::path::Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&docker), 0o700);
        assert_eq!(mode(&docker.join("config.json")), 0o600);

        // A dotfiles-style symlink stays a symlink; the file it points at gets the login.
        let real = dir.path().join("dotfiles/docker.json");
        fs::create_dir_all(real.parent().unwrap()).unwrap();
        fs::write(&real, r#"{"auths": {"other": {"auth": "eDp5"}}, "x": 1}"#).unwrap();
        let link = dir.path().join("linked/config.json");
        fs::create_dir_all(link.parent().unwrap()).unwrap();
        std::os::unix::fs::symlink(&real, &link).unwrap();
        store_login_in(link.clone(), "reg:5000", "ci", "pw").unwrap();
        assert!(fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink());
        let written: Value = serde_json::from_slice(&fs::read(&real).unwrap()).unwrap();
        assert_eq!(written["x"], 1);
        assert_eq!(written["auths"]["other"]["auth"], "eDp5");
        assert!(written["auths"]["reg:5000"]["auth"].is_string());
    }

    #[test]
    fn a_configured_helper_is_used_for_its_registry() {
        let config = json!({"credsStore": "pass", "credHelpers": {"gcr.io": "gcloud", "x": ""}});
        assert_eq!(helper_for(&config, "gcr.io").as_deref(), Some("gcloud"));
        assert_eq!(helper_for(&config, "reg:5000").as_deref(), Some("pass"));
        assert_eq!(helper_for(&config, "x").as_deref(), Some("pass"));
        assert_eq!(helper_for(&json!({"auths": {}}), "reg:5000"), None);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.json");
        fs::write(&path, r#"{"credsStore": "imgpack-test-missing-helper"}"#).unwrap();
        let err = store_login_in(path.clone(), "reg:5000", "ci", "secret-pw").unwrap_err();
        let text = format!("{err:#}");
        assert!(
            text.contains("docker-credential-imgpack-test-missing-helper"),
            "{text}"
        );
        assert!(!text.contains("secret-pw"));
        assert!(
            !fs::read_to_string(&path).unwrap().contains("auths"),
            "no plain password written"
        );
    }
}
