//! Credentials for HTTPS remotes, found where git users keep them: in the
//! URL (`https://user:token@host/…`, GitLab CI's habit), in `IMGPACK_GIT_TOKEN`
//! (a token from a Kubernetes Secret or CI variable), or in `~/.netrc`
//! (`$NETRC`), which curl and thus git read. SSH keys are ssh's business:
//! `IMGPACK_GIT_SSH_KEY`, `GIT_SSH_COMMAND` or `~/.ssh`.
//!
//! Whatever is found is only ever handed to the host the URL names.

use std::path::PathBuf;

/// A user name and a password or token.
#[derive(Clone, PartialEq, Eq)]
pub struct Login {
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for Login {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Login({}, ***)", self.username)
    }
}

/// Where the credentials came from, for the message when they are refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    Url,
    Environment,
    Netrc,
}

impl Origin {
    pub fn describe(self) -> &'static str {
        match self {
            Origin::Url => "the credentials in the URL",
            Origin::Environment => "IMGPACK_GIT_TOKEN",
            Origin::Netrc => "the credentials in .netrc",
        }
    }
}

/// The user name sent with `IMGPACK_GIT_TOKEN` unless `IMGPACK_GIT_USERNAME` says
/// otherwise; GitHub accepts it for every kind of token.
const DEFAULT_TOKEN_USER: &str = "x-access-token";

/// The login for `host` (the URL's host, without port), looked up in order:
/// URL, environment, netrc.
pub fn find(url: &str, host: &str) -> Option<(Login, Origin)> {
    if let Some(login) = from_url(url) {
        return Some((login, Origin::Url));
    }
    if let Some(token) = env_nonempty("IMGPACK_GIT_TOKEN") {
        let username =
            env_nonempty("IMGPACK_GIT_USERNAME").unwrap_or_else(|| DEFAULT_TOKEN_USER.to_owned());
        return Some((
            Login {
                username,
                password: token,
            },
            Origin::Environment,
        ));
    }
    let netrc = netrc_path()?;
    // Bounded, and a FIFO or device there is refused rather than waited on.
    let text =
        imgpack_blob::read_local_text(&netrc, &imgpack_blob::local_file::CREDENTIALS_FILE).ok()?;
    from_netrc(&text, host).map(|login| (login, Origin::Netrc))
}

fn env_nonempty(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

/// `https://user:pass@host/…` → the login, percent-decoded.
fn from_url(url: &str) -> Option<Login> {
    let parsed = crate::spec::parse_url(url).ok()?;
    let username = parsed.user()?.to_owned();
    let password = parsed.password()?.to_owned();
    Some(Login {
        username: percent_decode(&username),
        password: percent_decode(&password),
    })
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `$NETRC`, else `~/.netrc`.
fn netrc_path() -> Option<PathBuf> {
    if let Some(path) = env_nonempty("NETRC") {
        return Some(PathBuf::from(path));
    }
    env_nonempty("HOME").map(|home| PathBuf::from(home).join(".netrc"))
}

/// The `machine HOST login U password P` entry for `host`, else the `default` entry.
fn from_netrc(text: &str, host: &str) -> Option<Login> {
    let mut tokens = text.split_whitespace();
    let mut found: Option<Login> = None;
    let mut default: Option<Login> = None;
    let mut current: Option<(bool, bool)> = None; // (is this host, is default)
    let (mut login, mut password) = (None::<String>, None::<String>);
    let mut finish =
        |entry: Option<(bool, bool)>, login: &mut Option<String>, password: &mut Option<String>| {
            if let (Some((is_host, is_default)), Some(username), Some(secret)) =
                (entry, login.take(), password.take())
            {
                let entry = Login {
                    username,
                    password: secret,
                };
                if is_host && found.is_none() {
                    found = Some(entry);
                } else if is_default && default.is_none() {
                    default = Some(entry);
                }
            }
            *login = None;
            *password = None;
        };
    while let Some(token) = tokens.next() {
        match token {
            "machine" => {
                finish(current, &mut login, &mut password);
                let name = tokens.next().unwrap_or_default();
                current = Some((name.eq_ignore_ascii_case(host), false));
            }
            "default" => {
                finish(current, &mut login, &mut password);
                current = Some((false, true));
            }
            "login" => login = tokens.next().map(str::to_owned),
            "password" => password = tokens.next().map(str::to_owned),
            "macdef" => break, // macros end the useful part of the file
            _ => {}
        }
    }
    finish(current, &mut login, &mut password);
    found.or(default)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn netrc_entries_are_found_by_host() {
        let text = "machine other.example login a password b\n\
                    machine git.example\n  login ci\n  password s3cret\n\
                    default login anon password guest\n";
        assert_eq!(
            from_netrc(text, "git.example"),
            Some(Login {
                username: "ci".into(),
                password: "s3cret".into()
            })
        );
        assert_eq!(
            from_netrc(text, "nowhere.example").unwrap().username,
            "anon"
        );
        assert_eq!(from_netrc("machine x login y", "x"), None);
    }

    #[test]
    fn url_credentials_are_decoded_and_never_printed() {
        let login = from_url("https://ci%40corp:p%2Fss@git.example/x.git").unwrap();
        assert_eq!(login.username, "ci@corp");
        assert_eq!(login.password, "p/ss");
        assert!(!format!("{login:?}").contains("p/ss"));
        assert_eq!(from_url("https://git.example/x.git"), None);
    }
}
