//! imgpack's own secrets (the signing key's password, the git token), read
//! once at start-up and taken out of the environment before any thread or
//! child process starts, so that go, cargo, build scripts, rustc, ssh and
//! credential helpers inherit none of them; and the password file of
//! `--sign-password-file`.

use std::path::Path;
use std::sync::OnceLock;

use anyhow::{bail, Result};
use imgpack_sign::PASSWORD_ENVS;
use zeroize::Zeroizing;

/// The variable that holds a token for git hosts.
pub const GIT_TOKEN_ENV: &str = "IMGPACK_GIT_TOKEN";
/// The `host[:port]` entries `IMGPACK_GIT_TOKEN` is sent to.
pub const GIT_TOKEN_HOSTS_ENV: &str = "IMGPACK_GIT_TOKEN_HOSTS";
/// The user name sent with the token unless IMGPACK_GIT_USERNAME says
/// otherwise; GitHub accepts it for every kind of token.
const DEFAULT_TOKEN_USER: &str = "x-access-token";

/// Every secret variable imgpack reads: removed from its environment at start-up.
const SECRET_ENVS: [&str; 3] = [PASSWORD_ENVS[0], PASSWORD_ENVS[1], GIT_TOKEN_ENV];

/// The secrets taken from the environment.
#[derive(Default)]
pub struct Secrets {
    /// The first of [`PASSWORD_ENVS`] that was set (empty is a password
    /// too), with its name; `Err` when it was not UTF-8.
    sign_password: Option<(&'static str, Result<Zeroizing<String>, ()>)>,
    git_token: Option<Zeroizing<String>>,
}

static SECRETS: OnceLock<Secrets> = OnceLock::new();

/// Reads the secret variables, then removes them from the environment and
/// overwrites their values in the original environment block (which
/// /proc/PID/environ shows even after unsetenv), and makes this process
/// non-dumpable, so a process of the same user can read neither its
/// environ nor its memory (where the unlocked key will be).
///
/// Must run first in `main`, while this is the only thread.
pub fn take_from_environment() {
    let mut secrets = Secrets::default();
    for name in PASSWORD_ENVS {
        if let Some(value) = std::env::var_os(name) {
            let value = value.into_string().map(Zeroizing::new).map_err(|_| ());
            secrets.sign_password = Some((name, value));
            break;
        }
    }
    secrets.git_token = std::env::var(GIT_TOKEN_ENV)
        .ok()
        .filter(|token| !token.trim().is_empty())
        .map(Zeroizing::new);
    for name in SECRET_ENVS {
        scrub(name);
    }
    forbid_inspection();
    // Only ever set here; a second call keeps the first.
    let _ = SECRETS.set(secrets);
}

/// The secrets taken at start-up (none in unit tests, which never take them).
pub fn get() -> &'static Secrets {
    SECRETS.get_or_init(Secrets::default)
}

impl Secrets {
    /// The signing key's password from the environment, or an error naming
    /// the variables and the flag.
    pub fn sign_password(&self) -> Result<Zeroizing<String>> {
        match &self.sign_password {
            Some((_, Ok(password))) => Ok(password.clone()),
            Some((name, Err(()))) => bail!("{name} is not valid UTF-8"),
            None => bail!(
                "the key is encrypted and no password is set: put it in COSIGN_PASSWORD (or \
                 IMGPACK_SIGN_PASSWORD), or in a file given with --sign-password-file; set it \
                 empty for a key made with an empty password"
            ),
        }
    }

    pub fn has_sign_password(&self) -> bool {
        self.sign_password.is_some()
    }

    /// What git hosts may be sent: the token (and its user name) and the
    /// hosts it is for, for a URL that came from `url_origin`.
    pub fn git_auth(&self, url_origin: imgpack_git::UrlOrigin) -> Result<imgpack_git::GitAuth> {
        let token = self.git_token.as_ref().map(|token| imgpack_git::Login {
            username: std::env::var("IMGPACK_GIT_USERNAME")
                .ok()
                .filter(|name| !name.trim().is_empty())
                .unwrap_or_else(|| DEFAULT_TOKEN_USER.to_owned()),
            password: token.to_string(),
        });
        Ok(imgpack_git::GitAuth {
            token,
            token_hosts: token_hosts()?,
            url_origin,
        })
    }
}

/// IMGPACK_GIT_TOKEN_HOSTS: comma-separated `host[:port]`; `None` when unset or empty.
fn token_hosts() -> Result<Option<Vec<String>>> {
    match std::env::var(GIT_TOKEN_HOSTS_ENV) {
        Ok(text) if !text.trim().is_empty() => parse_token_hosts(&text).map(Some),
        _ => Ok(None),
    }
}

fn parse_token_hosts(text: &str) -> Result<Vec<String>> {
    let hosts: Vec<String> = text
        .split(',')
        .map(str::trim)
        .filter(|host| !host.is_empty())
        .map(str::to_owned)
        .collect();
    if let Some(bad) = hosts
        .iter()
        .find(|host| host.contains(['/', '@']) || host.chars().any(char::is_whitespace))
    {
        bail!(
            "{GIT_TOKEN_HOSTS_ENV} holds '{}', which is not HOST[:PORT]: list hosts such as \
             github.com,git.example.com:8443, without scheme or path",
            imgpack_redact::redact_urls(bad)
        );
    }
    Ok(hosts)
}

/// Unsets `name` after overwriting its value where the kernel shows it.
fn scrub(name: &str) {
    let Ok(c_name) = std::ffi::CString::new(name) else {
        return;
    };
    // SAFETY: called from `take_from_environment` while no other thread
    // exists, so nothing reads or changes the environment meanwhile. The
    // value getenv returns lies in the process's environment strings (the
    // block the kernel set up, or one setenv allocated), which are writable;
    // its length is bounded by the NUL that strlen finds.
    unsafe {
        let value = libc::getenv(c_name.as_ptr());
        if !value.is_null() {
            let len = libc::strlen(value);
            std::ptr::write_bytes(value, 0, len);
        }
    }
    // Still the only thread (see above): nothing reads the environment meanwhile.
    std::env::remove_var(name);
}

/// PR_SET_DUMPABLE 0: /proc/PID/environ, mem and maps of this process are
/// readable by root (CAP_SYS_PTRACE) only, and no core dump holds the key.
/// The children imgpack starts are dumpable again (execve resets the flag).
fn forbid_inspection() {
    // SAFETY: prctl with PR_SET_DUMPABLE takes plain integers.
    unsafe {
        libc::prctl(
            libc::PR_SET_DUMPABLE,
            0 as libc::c_ulong,
            0 as libc::c_ulong,
            0 as libc::c_ulong,
            0 as libc::c_ulong,
        );
    }
}

/// The password in `path` (`--sign-password-file`, `sign_password_file`):
/// a regular file of at most 4 KiB, its one trailing newline removed.
pub fn read_password_file(path: &Path, what: &str) -> Result<Zeroizing<String>> {
    // The one bounded reader of local files: a FIFO, a directory or a large
    // file is refused before anything is read.
    let bytes = Zeroizing::new(
        imgpack_blob::read_local_file(path, &imgpack_blob::local_file::PASSWORD_FILE)
            .map_err(|err| anyhow::anyhow!("the password file ({what}): {err}"))?,
    );
    let mut end = bytes.len();
    if bytes[..end].ends_with(b"\n") {
        end -= 1;
        if bytes[..end].ends_with(b"\r") {
            end -= 1;
        }
    }
    match std::str::from_utf8(&bytes[..end]) {
        Ok(text) => Ok(Zeroizing::new(text.to_owned())),
        Err(_) => bail!(
            "the password file {} ({what}) is not UTF-8 text",
            path.display()
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_hosts_are_host_and_port_only() {
        assert_eq!(
            parse_token_hosts(" github.com, git.example.com:8443 ,").unwrap(),
            ["github.com", "git.example.com:8443"]
        );
        for bad in [
            "https://github.com",
            "github.com/team",
            "tok@github.com",
            "a b",
        ] {
            let err = parse_token_hosts(bad).unwrap_err().to_string();
            assert!(err.contains("is not HOST[:PORT]"), "{err}");
        }
        let err = parse_token_hosts("https://u:SECRET@h")
            .unwrap_err()
            .to_string();
        assert!(!err.contains("SECRET"), "{err}");
    }

    #[test]
    fn a_password_file_is_one_line_of_a_small_regular_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("password");
        for (content, expected) in [
            ("s3cret\n", "s3cret"),
            ("s3cret\r\n", "s3cret"),
            ("s3cret", "s3cret"),
            ("two words \n\n", "two words \n"),
            ("\n", ""),
        ] {
            std::fs::write(&file, content).unwrap();
            assert_eq!(
                read_password_file(&file, "--sign-password-file")
                    .unwrap()
                    .as_str(),
                expected
            );
        }
        std::fs::write(&file, "x".repeat(5000)).unwrap();
        let err = read_password_file(&file, "--sign-password-file").unwrap_err();
        assert!(
            format!("{err:#}").contains("more than the 4 KiB"),
            "{err:#}"
        );
        let err = read_password_file(dir.path(), "--sign-password-file").unwrap_err();
        assert!(format!("{err:#}").contains("not a regular file"), "{err:#}");
        let fifo = dir.path().join("fifo");
        let c_path = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c_path.as_ptr(), 0o600) }, 0);
        let err = read_password_file(&fifo, "--sign-password-file").unwrap_err();
        assert!(format!("{err:#}").contains("not a regular file"), "{err:#}");
    }
}
