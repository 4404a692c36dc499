//! Credentials for HTTPS remotes, found where git users keep them: in the
//! URL (`https://user:token@host/…`, GitLab CI's habit), in `IMGPACK_GIT_TOKEN`
//! (a token from a Kubernetes Secret or CI variable, bound to the hosts of
//! `IMGPACK_GIT_TOKEN_HOSTS`), or in `~/.netrc` (`$NETRC`), which curl and thus
//! git read. SSH keys are ssh's business: `IMGPACK_GIT_SSH_KEY`,
//! `GIT_SSH_COMMAND` or `~/.ssh`.
//!
//! Whatever is found is only ever handed to the host the URL names, and a URL
//! read from YAML gets neither the token (unless its host is listed) nor the
//! netrc `default` entry.

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

/// Where a git URL came from, which decides what may be sent to its host.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum UrlOrigin {
    /// Typed by the user (`imgpack build git+URL`): its host is the one they meant.
    #[default]
    CommandLine,
    /// Read from a file someone else may write (the YAML `imgpack resolve`
    /// reads): its host gets a token only where the user listed it.
    Manifest,
}

/// What imgpack may send to git hosts besides the credentials a URL holds
/// itself. The command fills it in (the token is read once at start-up and
/// never left in the environment of the processes imgpack starts).
#[derive(Clone, Default)]
pub struct GitAuth {
    /// `IMGPACK_GIT_TOKEN` and the user name sent with it.
    pub token: Option<Login>,
    /// `IMGPACK_GIT_TOKEN_HOSTS`: the `host[:port]` entries the token is for;
    /// `None` when unset (then: the host of a URL typed on the command line).
    pub token_hosts: Option<Vec<String>>,
    pub url_origin: UrlOrigin,
}

impl std::fmt::Debug for GitAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GitAuth")
            .field("token", &self.token)
            .field("token_hosts", &self.token_hosts)
            .field("url_origin", &self.url_origin)
            .finish()
    }
}

impl GitAuth {
    /// Whether the token may go to `host` (`name[:port]` as the URL writes it).
    fn token_is_for(&self, host: &str) -> bool {
        match &self.token_hosts {
            Some(hosts) => hosts.iter().any(|entry| entry.eq_ignore_ascii_case(host)),
            None => self.url_origin == UrlOrigin::CommandLine,
        }
    }

    /// Why the token was kept from `host`, when there is a token and it was.
    pub(crate) fn withheld_from(&self, host: &str) -> Option<String> {
        if self.token.is_none() || self.token_is_for(host) {
            return None;
        }
        Some(match self.token_hosts {
            Some(_) => format!("IMGPACK_GIT_TOKEN is not sent to {host}, which IMGPACK_GIT_TOKEN_HOSTS does not list"),
            None => format!(
                "IMGPACK_GIT_TOKEN is not sent to {host}, which came from YAML: list the host in IMGPACK_GIT_TOKEN_HOSTS"
            ),
        })
    }
}

/// The login for `host` (the URL's `name[:port]`), looked up in order: the
/// URL itself; `IMGPACK_GIT_TOKEN` where [`GitAuth`] lets it go; a netrc
/// `machine` entry for the name; the netrc `default` entry, only for a URL
/// typed on the command line.
pub fn find(url: &str, host: &str, auth: &GitAuth) -> Option<(Login, Origin)> {
    if let Some(login) = from_url(url) {
        return Some((login, Origin::Url));
    }
    if let Some(token) = auth.token.as_ref().filter(|_| auth.token_is_for(host)) {
        return Some((token.clone(), Origin::Environment));
    }
    let name = host.rsplit_once(':').map_or(host, |(name, _)| name);
    let netrc = netrc_path()?;
    // Bounded, and a FIFO or device there is refused rather than waited on.
    let text =
        imgpack_blob::read_local_text(&netrc, &imgpack_blob::local_file::CREDENTIALS_FILE).ok()?;
    let with_default = auth.url_origin == UrlOrigin::CommandLine;
    from_netrc(&text, name, with_default).map(|login| (login, Origin::Netrc))
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

/// The `machine HOST login U password P` entry for `host`, else (when
/// `with_default`) the `default` entry.
fn from_netrc(text: &str, host: &str, with_default: bool) -> Option<Login> {
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
    found.or(default.filter(|_| with_default))
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
            from_netrc(text, "git.example", false),
            Some(Login {
                username: "ci".into(),
                password: "s3cret".into()
            })
        );
        assert_eq!(
            from_netrc(text, "nowhere.example", true).unwrap().username,
            "anon"
        );
        assert_eq!(from_netrc(text, "nowhere.example", false), None);
        assert_eq!(from_netrc("machine x login y", "x", true), None);
    }

    fn token_auth(hosts: Option<&[&str]>, url_origin: UrlOrigin) -> GitAuth {
        GitAuth {
            token: Some(Login {
                username: "x-access-token".into(),
                password: "TOKEN".into(),
            }),
            token_hosts: hosts.map(|h| h.iter().map(|s| s.to_string()).collect()),
            url_origin,
        }
    }

    #[test]
    fn the_token_goes_only_to_the_hosts_it_is_for() {
        let typed = token_auth(None, UrlOrigin::CommandLine);
        assert!(typed.token_is_for("git.example"));
        assert!(typed.withheld_from("git.example").is_none());
        let from_yaml = token_auth(None, UrlOrigin::Manifest);
        assert!(!from_yaml.token_is_for("git.example"));
        assert!(from_yaml
            .withheld_from("git.example")
            .unwrap()
            .contains("IMGPACK_GIT_TOKEN_HOSTS"));
        let listed = token_auth(
            Some(&["Git.Example", "127.0.0.1:8080"]),
            UrlOrigin::Manifest,
        );
        assert!(listed.token_is_for("git.example"));
        assert!(listed.token_is_for("127.0.0.1:8080"));
        assert!(!listed.token_is_for("127.0.0.1:8081"));
        assert!(!listed.token_is_for("git.example:8443"));
        let typed_unlisted = token_auth(Some(&["git.example"]), UrlOrigin::CommandLine);
        assert!(!typed_unlisted.token_is_for("other.example"));
        // Credentials in the URL are the URL's own: they go to its host.
        let (_, origin) = find(
            "https://a:b@other.example/x.git",
            "other.example",
            &from_yaml,
        )
        .unwrap();
        assert_eq!(origin, Origin::Url);
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
