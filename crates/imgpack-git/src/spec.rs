//! `git+URL[@REV][#SUBDIR]`, the way pip spells a git source: which
//! repository, which revision, which directory inside it.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use imgpack_redact::strip_userinfo;

const PREFIX: &str = "git+";

/// How imgpack reaches a repository.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    /// `https://`, or `http://` to a loopback host.
    Http,
    /// `ssh://` or scp-style `[user@]host:path`, through the `ssh` program.
    Ssh,
    /// `file:///path`: the repository's objects are read in place.
    File,
}

/// A parsed `git+URL[@REV][#SUBDIR]`.
#[derive(Clone, PartialEq, Eq)]
pub struct GitSource {
    /// The URL as given, credentials included: used to connect, never shown.
    url: String,
    pub transport: Transport,
    /// A branch, a tag, a full or abbreviated commit id; `None`: the remote's HEAD.
    pub rev: Option<String>,
    /// The project inside the repository, relative and normalised (`None`: the root).
    pub subdir: Option<PathBuf>,
}

impl std::fmt::Debug for GitSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.to_string())
    }
}

/// The spec without credentials, as it may appear in messages.
impl std::fmt::Display for GitSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{PREFIX}{}", self.public_url())?;
        if let Some(rev) = &self.rev {
            write!(f, "@{rev}")?;
        }
        if let Some(subdir) = &self.subdir {
            write!(f, "#{}", subdir.display())?;
        }
        Ok(())
    }
}

impl GitSource {
    /// Whether `text` names a git source rather than a local path.
    pub fn is_git_source(text: &str) -> bool {
        text.starts_with(PREFIX)
    }

    pub fn parse(text: &str) -> Result<GitSource> {
        // Messages quote the spec as given, but never its credentials.
        let shown = strip_userinfo(text);
        let rest = text.strip_prefix(PREFIX).with_context(|| {
            format!("'{shown}' is not a git source: write git+URL[@REV][#SUBDIR]")
        })?;
        let (rest, subdir) = match rest.rsplit_once('#') {
            Some((rest, subdir)) => (rest, Some(parse_subdir(subdir, &shown)?)),
            None => (rest, None),
        };
        let path_start = path_start(rest);
        let (url, rev) = match rest[path_start..].rfind('@') {
            Some(at) => (&rest[..path_start + at], Some(&rest[path_start + at + 1..])),
            None => (rest, None),
        };
        if let Some(rev) = rev {
            check_rev(rev, &shown)?;
        }
        let transport = transport(url, &shown)?;
        Ok(GitSource {
            url: url.to_owned(),
            transport,
            rev: rev.map(str::to_owned),
            subdir: subdir.flatten(),
        })
    }

    /// The URL with any user name and password removed: what annotations name.
    pub fn public_url(&self) -> String {
        strip_userinfo(&self.url).into_owned()
    }

    /// The directory `git clone URL` would create: the URL's last path element
    /// without `.git` (`https://h/team/api.git` → `api`); `repository` when
    /// the URL ends in nothing usable. A Go binary is named after its
    /// directory, so a build from this source and a build of a clone agree.
    pub fn clone_dir_name(&self) -> String {
        let url = self.public_url();
        let path = url.trim_end_matches('/');
        let last = path.rsplit(['/', ':']).next().unwrap_or_default();
        let name = last.strip_suffix(".git").unwrap_or(last);
        let usable =
            !name.is_empty() && name != "." && name != ".." && !name.contains(['\\', '\0']);
        if usable {
            name.to_owned()
        } else {
            "repository".to_owned()
        }
    }

    /// The URL as given, credentials included: only to connect with.
    pub(crate) fn connect_url(&self) -> &str {
        &self.url
    }

    /// The host (and port) of a network URL.
    pub(crate) fn host(&self) -> Option<String> {
        let url = parse_url(&self.url).ok()?;
        let host = url.host()?.to_owned();
        Some(match url.port {
            Some(port) => format!("{host}:{port}"),
            None => host,
        })
    }
}

/// gix's URL parser (scp-style included) over a `&str`.
pub(crate) fn parse_url(text: &str) -> Result<gix::Url> {
    gix::url::parse(gix::bstr::BStr::new(text)).map_err(|err| anyhow::anyhow!("{err}"))
}

/// Where the path of a URL starts: after the authority of `scheme://authority/`,
/// after the `:` of scp-style `user@host:path`. A REV's `@` can only be after it.
fn path_start(url: &str) -> usize {
    if let Some(scheme_end) = url.find("://") {
        let authority = scheme_end + 3;
        return url[authority..]
            .find('/')
            .map_or(url.len(), |slash| authority + slash);
    }
    url.find(':').map_or(0, |colon| colon + 1)
}

/// `text` is the whole spec as messages may show it (without credentials).
fn transport(url: &str, text: &str) -> Result<Transport> {
    let shown = strip_userinfo(url);
    let url = shown.as_ref();
    let parsed = parse_url(url).map_err(|err| anyhow::anyhow!("bad git URL in '{text}': {err}"))?;
    match parsed.scheme {
        gix::url::Scheme::Https => Ok(Transport::Http),
        gix::url::Scheme::Http => {
            let host = parsed.host().unwrap_or_default();
            if !is_loopback(host) {
                bail!(
                    "git+{url}: plain http:// would send the repository and any credentials \
                     unencrypted; use https:// (http:// is allowed for localhost and 127.0.0.0/8 only)"
                );
            }
            Ok(Transport::Http)
        }
        gix::url::Scheme::Ssh => Ok(Transport::Ssh),
        gix::url::Scheme::File => {
            if !url.starts_with("file://") {
                bail!(
                    "'{text}' names a local path: write it as git+file:///ABSOLUTE/PATH, \
                     or build the directory itself"
                );
            }
            // git ignores the host of file://HOST/PATH: `file://git/repo` would read /repo.
            if parsed
                .host()
                .is_some_and(|host| !host.is_empty() && host != "localhost")
            {
                bail!(
                    "git+{url}: file://HOST/PATH is not supported: use file:///ABSOLUTE/PATH \
                     (three slashes)"
                );
            }
            if !parsed.path.starts_with(b"/") {
                bail!("git+{url}: a file:// URL needs an absolute path, e.g. git+file:///src/repo");
            }
            Ok(Transport::File)
        }
        other => bail!(
            "git+{url}: the {} scheme is not supported: use https://, ssh://, \
             user@host:path or file://",
            other.as_str()
        ),
    }
}

fn is_loopback(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// A revision is a ref name or a commit id; refuse what git would read as an option or a range.
fn check_rev(rev: &str, text: &str) -> Result<()> {
    let bad = rev.is_empty()
        || rev.starts_with('-')
        || rev.contains("..")
        || rev.chars().any(|c| c.is_whitespace() || c.is_control())
        || rev.contains(['~', '^', ':', '?', '*', '[', '\\']);
    if bad {
        bail!("bad revision '{rev}' in '{text}': give a branch, a tag or a commit id after '@'");
    }
    Ok(())
}

/// `./cmd/api/` → `cmd/api`; `""` and `.` → the root (`None`). Never outside the checkout.
fn parse_subdir(subdir: &str, text: &str) -> Result<Option<PathBuf>> {
    if subdir.starts_with('/') {
        bail!("bad directory '#{subdir}' in '{text}': give a path relative to the repository root");
    }
    let mut path = PathBuf::new();
    for part in subdir.split('/') {
        match part {
            "" | "." => {}
            ".." => bail!("bad directory '#{subdir}' in '{text}': '..' would leave the repository"),
            part => path.push(part),
        }
    }
    Ok((!path.as_os_str().is_empty()).then_some(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> GitSource {
        GitSource::parse(text).unwrap()
    }

    fn error(text: &str) -> String {
        GitSource::parse(text).unwrap_err().to_string()
    }

    #[test]
    fn the_checkout_is_named_as_git_clone_names_it() {
        let name = |text: &str| parse(text).clone_dir_name();
        assert_eq!(
            name("git+https://ci:tok@git.example/team/api.git@v1#cmd/x"),
            "api"
        );
        assert_eq!(name("git+https://git.example/team/api@v1"), "api");
        assert_eq!(name("git+file:///srv/git/hello-go.git/"), "hello-go");
        assert_eq!(name("git+git@git.example:api.git"), "api");
        assert_eq!(name("git+ssh://git@git.example/team/a.b.git@main"), "a.b");
        assert_eq!(name("git+file:///srv/.git"), "repository");
    }

    #[test]
    fn urls_revisions_and_directories_are_split() {
        let source = parse("git+https://ci:tok@git.example/team/app.git@v1.2#./cmd/api/");
        assert_eq!(source.transport, Transport::Http);
        assert_eq!(source.public_url(), "https://git.example/team/app.git");
        assert_eq!(
            source.connect_url(),
            "https://ci:tok@git.example/team/app.git"
        );
        assert_eq!(source.rev.as_deref(), Some("v1.2"));
        assert_eq!(source.subdir, Some(PathBuf::from("cmd/api")));
        assert_eq!(source.host().as_deref(), Some("git.example"));
        assert_eq!(
            source.to_string(),
            "git+https://git.example/team/app.git@v1.2#cmd/api"
        );
        assert!(!format!("{source:?}").contains("tok"));

        let scp = parse("git+git@git.example:team/app.git@feature/x");
        assert_eq!(scp.transport, Transport::Ssh);
        assert_eq!(scp.public_url(), "git@git.example:team/app.git");
        assert_eq!(scp.rev.as_deref(), Some("feature/x"));
        assert_eq!(scp.subdir, None);

        let ssh = parse("git+ssh://git@git.example:2222/team/app.git");
        assert_eq!(ssh.transport, Transport::Ssh);
        assert_eq!(ssh.rev, None);
        assert_eq!(ssh.host().as_deref(), Some("git.example:2222"));

        let file = parse("git+file:///src/repo.git@0123456789abcdef0123456789abcdef01234567#.");
        assert_eq!(file.transport, Transport::File);
        assert_eq!(file.subdir, None);
        assert_eq!(file.rev.as_deref().map(str::len), Some(40));

        let local = parse("git+http://127.0.0.1:8080/repo.git");
        assert_eq!(local.transport, Transport::Http);
        assert_eq!(local.host().as_deref(), Some("127.0.0.1:8080"));
    }

    #[test]
    fn bad_specs_get_one_clear_line() {
        assert!(error("https://x/y.git").contains("write git+URL"));
        assert!(error("git+http://git.example/x.git").contains("use https://"));
        assert!(error("git+ftp://git.example/x.git").contains("not supported"));
        assert!(error("git+file:///repo#../etc").contains("'..' would leave"));
        assert!(error("git+file:///repo#/etc").contains("relative to the repository root"));
        assert!(error("git+file:///repo@").contains("bad revision"));
        assert!(error("git+file:///repo@main..dev").contains("bad revision"));
        assert!(error("git+file:///repo@-x").contains("bad revision"));
        assert!(error("git+/src/repo").contains("git+file:///"));
        for hosted in ["git+file://git/repo", "git+file://host:22/src/repo@v1"] {
            let err = error(hosted);
            assert!(err.contains("file://HOST/PATH is not supported"), "{err}");
        }
        let local = parse("git+file://localhost/src/repo");
        assert_eq!(local.transport, Transport::File);
        assert!(GitSource::is_git_source("git+https://x/y"));
        assert!(!GitSource::is_git_source("./cmd/git+x"));
    }

    #[test]
    fn spec_errors_never_show_credentials() {
        for spec in [
            "git+https://alice:PASSWORD@git.example/x.git@a..b",
            "git+https://alice:PASSWORD@git.example/x.git#/abs",
            "git+https://alice:PASSWORD@git.example/x.git#../up",
            "git+http://alice:PASSWORD@git.example/x.git",
            "git+ftp://alice:PASSWORD@git.example/x.git",
            "git+https://alice:PASSWORD@git.example:99999/x.git",
        ] {
            let message = error(spec);
            assert!(!message.contains("PASSWORD"), "{message}");
            assert!(message.contains("git.example"), "{message}");
        }
        assert_eq!(
            parse("git+https://alice:PASSWORD@git.example/x.git@v1").to_string(),
            "git+https://git.example/x.git@v1"
        );
    }
}
