//! Getting exactly one revision of a repository into an empty directory:
//! a shallow fetch over HTTPS or SSH where the server allows it (a full one
//! when the revision is an abbreviated commit id or the server refuses to
//! hand out a commit by id), or, for `file://`, the repository's objects read
//! in place as `git clone --shared` does, so a read-only mount is enough.

use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use gix::remote::fetch::Shallow;
use gix::ObjectId;

use crate::budget::{Budget, Exceeded, Limits};
use crate::checkout::{check_empty, checkout};
use crate::credentials::{self, GitAuth, Login, Origin};
use crate::spec::{GitSource, Transport};

/// A checked-out revision.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Checkout {
    /// The work tree: the repository's root.
    pub root: PathBuf,
    /// The project to build: `root` joined with the source's directory.
    pub project_dir: PathBuf,
    /// The full id of the commit checked out.
    pub commit: String,
    /// The URL without credentials.
    pub url: String,
    /// Whether only the commit itself was fetched.
    pub shallow: bool,
    /// Pack bytes received and file bytes written.
    pub bytes: u64,
}

/// Fetches `source` into the empty (or missing) directory `dest` and checks
/// out its revision; `auth` says which credentials may go to its host.
pub fn fetch(source: &GitSource, dest: &Path, limits: Limits, auth: &GitAuth) -> Result<Checkout> {
    check_empty(dest)?;
    let budget = Budget::new(limits);
    let result = fetch_within_budget(source, dest, &budget, auth);
    budget.check_size();
    if let Some(err) = over_budget(source, &budget) {
        return Err(err);
    }
    let (commit, shallow) = result?;
    let project_dir = match &source.subdir {
        Some(subdir) => dest.join(subdir),
        None => dest.to_owned(),
    };
    if !project_dir.is_dir() {
        bail!(
            "{source}: commit {commit} has no directory {}: check the path after '#'",
            source.subdir.as_deref().unwrap_or(Path::new(".")).display()
        );
    }
    Ok(Checkout {
        root: dest.to_owned(),
        project_dir,
        commit: commit.to_string(),
        url: source.public_url(),
        shallow,
        bytes: budget.bytes(),
    })
}

/// Fetches and checks out on a thread of its own while this one watches the
/// budget. gix polls the interrupt flag while it reads a pack or writes
/// files, but not while it waits for a server's answer (the ref
/// advertisement at connect, a negotiation round, an ssh handshake): a wait
/// like that still going on [`GRACE`](crate::budget::GRACE) after the time
/// is up is abandoned, and its thread ends on its own transport's timeout,
/// which is never longer than the budget ([`http_options`], [`ssh_command`]).
fn fetch_within_budget(
    source: &GitSource,
    dest: &Path,
    budget: &Arc<Budget>,
    auth: &GitAuth,
) -> Result<(ObjectId, bool)> {
    let (send, receive) = mpsc::channel();
    let (source, dest, budget_of_thread) = (source.clone(), dest.to_owned(), budget.clone());
    let auth = auth.clone();
    std::thread::Builder::new()
        .name("imgpack-git".into())
        .spawn(move || {
            let result = match source.transport {
                Transport::File => local(&source, &dest, &budget_of_thread),
                Transport::Http | Transport::Ssh => {
                    remote(&source, &dest, &budget_of_thread, &auth)
                }
            };
            let _ = send.send(result);
        })
        .context("cannot start a thread for the git fetch")?;
    loop {
        match receive.recv_timeout(Duration::from_millis(50)) {
            Ok(result) => return result,
            Err(RecvTimeoutError::Disconnected) => bail!("the git fetch ended without a result"),
            Err(RecvTimeoutError::Timeout) => {}
        }
        budget.check();
        if budget.overdue() {
            // The caller reports the time limit (over_budget).
            bail!("the git fetch did not stop when its time was up");
        }
    }
}

/// The error to report when a limit, not the server, ended the fetch.
fn over_budget(source: &GitSource, budget: &Budget) -> Option<anyhow::Error> {
    let limits = budget.limits();
    Some(match budget.exceeded()? {
        Exceeded::Size => anyhow::anyhow!(
            "{source}: the repository is larger than {} MiB: raise IMGPACK_GIT_MAX_MIB",
            limits.max_bytes >> 20
        ),
        Exceeded::Time => anyhow::anyhow!(
            "{source}: fetching took longer than {} s: raise IMGPACK_GIT_TIMEOUT or check the network",
            limits.timeout.as_secs()
        ),
    })
}

/// What REV asks for, in the terms of a fetch.
enum Wanted<'a> {
    /// The remote's HEAD, a full ref name or a full commit id.
    Revision(&'a str),
    /// A branch or tag name.
    RefName(&'a str),
}

fn wanted(rev: Option<&str>) -> Wanted<'_> {
    match rev {
        None => Wanted::Revision("HEAD"),
        Some(rev) if rev.starts_with("refs/") || is_full_id(rev) => Wanted::Revision(rev),
        Some(rev) => Wanted::RefName(rev),
    }
}

fn is_full_id(rev: &str) -> bool {
    rev.len() == 40 && rev.bytes().all(|b| b.is_ascii_hexdigit())
}

fn is_abbreviated_id(rev: &str) -> bool {
    (4..40).contains(&rev.len()) && rev.bytes().all(|b| b.is_ascii_hexdigit())
}

fn remote(
    source: &GitSource,
    dest: &Path,
    budget: &Arc<Budget>,
    auth: &GitAuth,
) -> Result<(ObjectId, bool)> {
    let rev = source.rev.as_deref();
    match clone(source, dest, budget, auth, Some(wanted(rev))) {
        Ok(repo) => {
            let commit = head_commit(&repo, source)?;
            checkout(&repo, commit, budget)?;
            Ok((commit, true))
        }
        // Abbreviated ids cannot be asked for, and some servers refuse a
        // commit by id: fetch everything and look the revision up here.
        Err(err)
            if budget.exceeded().is_none()
                && rev.is_some_and(|r| is_full_id(r) || is_abbreviated_id(r))
                && is_missing_revision(&err) =>
        {
            let repo = clone(source, dest, budget, auth, None)?;
            let commit = resolve(&repo, rev.expect("checked"), source)?;
            checkout(&repo, commit, budget)?;
            Ok((commit, false))
        }
        Err(err) => Err(describe(err, source, auth)),
    }
}

/// A clone without checkout: shallow, of `wanted` only; or, without it, of every branch and tag.
fn clone(
    source: &GitSource,
    dest: &Path,
    budget: &Arc<Budget>,
    auth: &GitAuth,
    wanted: Option<Wanted<'_>>,
) -> std::result::Result<gix::Repository, gix::error::Error> {
    // reqwest (gix's HTTPS client) is built without a crypto provider of its
    // own: ring, the workspace's one (see its Cargo.toml), unless one is set.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let public_url = source.public_url();
    let login = source.host().and_then(|host| {
        credentials::find(source.connect_url(), &host, auth).map(|found| (host, found))
    });
    let wait = budget.remaining().min(MAX_WAIT);
    let mut prepare = gix::prepare_clone(public_url.as_str(), dest)?
        .with_in_memory_config_overrides(ssh_overrides(wait))
        .configure_connection(move |connection| {
            connection.set_credentials(credentials_for(login.clone()));
            connection.set_transport_options(Box::new(http_options(wait)));
            Ok(())
        });
    prepare = match wanted {
        Some(Wanted::Revision(revision)) => prepare
            .with_revision(Some(revision))?
            .with_shallow(Shallow::DepthAtRemote(1.try_into().expect("non-zero"))),
        Some(Wanted::RefName(name)) => prepare
            .with_ref_name(Some(name))?
            .with_shallow(Shallow::DepthAtRemote(1.try_into().expect("non-zero"))),
        None => prepare,
    };
    let (repo, _outcome) = prepare.fetch_only(budget.meter(), &budget.interrupt)?;
    Ok(repo)
}

/// The credential callback: the login found for the URL's host, to that host only.
fn credentials_for(
    login: Option<(String, (Login, Origin))>,
) -> impl FnMut(
    gix::credentials::helper::Action,
) -> gix::error::Result<Option<gix::credentials::protocol::Outcome>> {
    move |action| {
        let gix::credentials::helper::Action::Get(mut context) = action else {
            return Ok(None); // nothing is stored or erased
        };
        let Some((host, (login, _))) = &login else {
            return Ok(None);
        };
        // gix hands over the URL it is at: after a redirect, maybe another host, which gets nothing.
        if context.host.is_none() && context.destructure_url_in_place(false).is_err() {
            return Ok(None);
        }
        if context.host.as_deref() != Some(host.as_str()) {
            return Ok(None);
        }
        Ok(Some(gix::credentials::protocol::Outcome {
            credentials: gix::sec::identity::Credentials::UsernamePassword {
                username: login.username.clone(),
                password: login.password.clone(),
                oauth_refresh_token: None,
            },
            next: context.into(),
        }))
    }
}

/// The longest a fetch waits for a server's answer, or for the next bytes of one.
const MAX_WAIT: Duration = Duration::from_secs(60);

/// Connecting, each answer's head and each read of a body may take `wait`
/// (a minute, or less when less of the budget is left): a server that stops
/// sending cannot hang a build, nor keep an abandoned fetch going long.
fn http_options(wait: Duration) -> gix::protocol::transport::client::blocking_io::http::Options {
    let wait = wait.max(Duration::from_secs(1));
    let reqwest = gix::protocol::transport::client::blocking_io::http::reqwest::Options {
        configure_client: Some(Box::new(move |builder| {
            Ok(builder.timeout(wait).connect_timeout(wait))
        })),
        configure_request: None,
    };
    gix::protocol::transport::client::blocking_io::http::Options {
        backend: Some(Arc::new(std::sync::Mutex::new(reqwest))),
        user_agent: Some(format!("imgpack/{}", env!("CARGO_PKG_VERSION"))),
        ..Default::default()
    }
}

/// The ssh command, unless GIT_SSH_COMMAND gives one: batch mode (no prompt
/// that would hang a Job), bounded connection time, and the key and
/// known_hosts file that `IMGPACK_GIT_SSH_KEY` and `IMGPACK_GIT_SSH_KNOWN_HOSTS`
/// name (a Secret mounted in a Job, typically).
fn ssh_overrides(wait: Duration) -> Vec<String> {
    if std::env::var_os("GIT_SSH_COMMAND").is_some() {
        return Vec::new();
    }
    let env = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    vec![format!(
        "core.sshCommand={}",
        ssh_command(
            env("IMGPACK_GIT_SSH_KEY"),
            env("IMGPACK_GIT_SSH_KNOWN_HOSTS"),
            wait
        )
    )]
}

/// ssh's connection and handshake get at most 20 s, or `wait` when less is left.
fn ssh_command(key: Option<String>, known_hosts: Option<String>, wait: Duration) -> String {
    let quote = |path: &str| format!("'{}'", path.replace('\'', "'\\''"));
    let connect = wait.as_secs().clamp(1, 20);
    let mut command =
        format!("ssh -o BatchMode=yes -o ConnectTimeout={connect} -o ServerAliveInterval=15");
    if let Some(key) = key {
        command.push_str(&format!(" -o IdentitiesOnly=yes -i {}", quote(&key)));
    }
    if let Some(known_hosts) = known_hosts {
        command.push_str(&format!(" -o UserKnownHostsFile={}", quote(&known_hosts)));
    }
    command
}

fn head_commit(repo: &gix::Repository, source: &GitSource) -> Result<ObjectId> {
    Ok(repo
        .head_commit()
        .with_context(|| format!("{source}: the fetched revision is not a commit"))?
        .id)
}

/// A revision to a commit id, in a repository that holds it.
fn resolve(repo: &gix::Repository, rev: &str, source: &GitSource) -> Result<ObjectId> {
    let no_such = || {
        anyhow::anyhow!(
            "{source}: no such revision '{rev}': give a branch, a tag or a commit id that the repository has"
        )
    };
    let id = repo.rev_parse_single(rev).map_err(|_| no_such())?;
    let commit = id
        .object()
        .map_err(|_| no_such())?
        .peel_to_commit()
        .map_err(|_| anyhow::anyhow!("{source}: revision '{rev}' is not a commit"))?;
    Ok(commit.id)
}

fn is_missing_revision(err: &gix::error::Error) -> bool {
    let missing = err.classify().is_not_found()
        || mentions(
            err,
            &["didn't have the requested", "not our ref", "not found"],
        );
    missing && !is_no_repository(err)
}

/// gix's error as one line naming the problem and the fix.
fn describe(err: gix::error::Error, source: &GitSource, auth: &GitAuth) -> anyhow::Error {
    let host = source.host().unwrap_or_else(|| source.public_url());
    let rev = source.rev.as_deref().unwrap_or("HEAD");
    if is_refused(&err) {
        return refused(source, &host, auth);
    }
    if is_unreachable(&err) {
        return anyhow::anyhow!(
            "{source}: cannot reach {host} ({}): check the URL and the network",
            root_cause(&err)
        );
    }
    if source.transport == Transport::Ssh && ended_early(&err) {
        // ssh said why on stderr, which gix passes through: mostly a host
        // key that is not in known_hosts.
        return anyhow::anyhow!(
            "{source}: the ssh connection to {host} closed before git answered: see ssh's message \
             above (trust the host key with IMGPACK_GIT_SSH_KNOWN_HOSTS, give a key with IMGPACK_GIT_SSH_KEY)"
        );
    }
    if is_no_repository(&err) {
        return anyhow::anyhow!(
            "{source}: no git repository at {} ({host} answered HTTP 404): check the URL",
            source.public_url()
        );
    }
    if is_missing_revision(&err) {
        return anyhow::anyhow!(
            "{source}: no such revision '{rev}': give a branch, a tag or a commit id that the repository has"
        );
    }
    anyhow::anyhow!("{source}: cannot fetch: {}", root_cause(&err))
}

/// The server answered 404 to the first request (the ref advertisement):
/// no repository is at that URL, which is not the same as a missing revision.
fn is_no_repository(err: &gix::error::Error) -> bool {
    // reqwest's "HTTP status client error (404 <reason>)": servers word the reason differently.
    mentions(err, &["error (404 ", "404 Not Found"])
}

fn is_refused(err: &gix::error::Error) -> bool {
    err.classify().is_unauthenticated()
        || err.classify().is_permission_denied()
        || mentions(err, &["401", "403", "authentication", "Permission denied"])
}

/// Authentication refused: which credentials were tried, and where to give them.
fn refused(source: &GitSource, host: &str, auth: &GitAuth) -> anyhow::Error {
    if source.transport == Transport::Ssh {
        return anyhow::anyhow!(
            "{source}: authentication refused by {host} (the ssh key was refused): give the key \
             with IMGPACK_GIT_SSH_KEY or GIT_SSH_COMMAND"
        );
    }
    let given = match credentials::find(source.connect_url(), host, auth) {
        Some((_, origin)) => format!("{} were refused", origin.describe()),
        None => auth
            .withheld_from(host)
            .unwrap_or_else(|| "no credentials were found".to_owned()),
    };
    anyhow::anyhow!(
        "{source}: authentication refused by {host} ({given}): give a token in IMGPACK_GIT_TOKEN \
         (and IMGPACK_GIT_USERNAME), the URL or ~/.netrc"
    )
}

fn ended_early(err: &gix::error::Error) -> bool {
    err.classify()
        .into_iter()
        .any(|c| c.io_kind() == Some(std::io::ErrorKind::UnexpectedEof))
        || mentions(err, &["failed to fill whole buffer"])
}

fn mentions(err: &gix::error::Error, needles: &[&str]) -> bool {
    err.iter_errors().any(|e| {
        let text = e.to_string();
        needles.iter().any(|n| text.contains(n))
    })
}

fn is_unreachable(err: &gix::error::Error) -> bool {
    use std::io::ErrorKind;
    let by_kind = err.classify().into_iter().any(|c| {
        matches!(
            c.io_kind(),
            Some(
                ErrorKind::ConnectionRefused
                    | ErrorKind::TimedOut
                    | ErrorKind::HostUnreachable
                    | ErrorKind::NetworkUnreachable
            )
        )
    });
    by_kind
        || mentions(
            err,
            &[
                "Connection refused",
                "dns error",
                "failed to lookup address",
                "Could not resolve hostname",
                "No route to host",
                "error sending request",
                "client error (Connect)",
                "Connection timed out",
            ],
        )
}

/// The innermost error's text, on one line.
fn root_cause(err: &gix::error::Error) -> String {
    err.iter_errors()
        .last()
        .map(|e| e.to_string())
        .unwrap_or_else(|| err.to_string())
        .replace('\n', " ")
}

/// `file://`: a repository on this machine, read where it is.
fn local(source: &GitSource, dest: &Path, budget: &Arc<Budget>) -> Result<(ObjectId, bool)> {
    let path = file_path(source)?;
    let origin = gix::open_opts(&path, isolated()).map_err(|err| {
        anyhow::anyhow!(
            "{source}: {} is not a git repository: {}",
            path.display(),
            root_cause_any(&err)
        )
    })?;
    let rev = source.rev.as_deref().unwrap_or("HEAD");
    let commit = resolve(&origin, rev, source)?;
    std::fs::create_dir_all(dest).with_context(|| format!("cannot create {}", dest.display()))?;
    let repo = gix::init(dest)
        .with_context(|| format!("cannot create a repository in {}", dest.display()))?;
    let git_dir = repo.git_dir().to_owned();
    share_objects(&origin, &git_dir)?;
    remember_origin(&git_dir, &source.public_url())?;
    let repo = gix::open_opts(dest, isolated())
        .with_context(|| format!("cannot open the checkout in {}", dest.display()))?;
    copy_tag(&origin, &repo, rev)?;
    checkout(&repo, commit, budget)?;
    Ok((commit, false))
}

fn root_cause_any(err: &dyn std::error::Error) -> String {
    let mut cause: &dyn std::error::Error = err;
    while let Some(next) = cause.source() {
        cause = next;
    }
    cause.to_string().replace('\n', " ")
}

/// The path of a `file://` URL, percent escapes decoded.
fn file_path(source: &GitSource) -> Result<PathBuf> {
    let url = crate::spec::parse_url(source.connect_url())
        .map_err(|err| anyhow::anyhow!("{source}: {err}"))?;
    gix::path::from_bstring(url.path)
        .map_err(|_| anyhow::anyhow!("{source}: the path is not valid on this system"))
}

/// Open with only the repository's own settings (and, when another user owns
/// it, as on a read-only mount in a Job, without the sensitive ones): only
/// objects and refs are read.
fn isolated() -> gix::open::Options {
    gix::open::Options::isolated()
}

/// `objects/info/alternates`: the new repository reads the origin's objects where they are.
fn share_objects(origin: &gix::Repository, git_dir: &Path) -> Result<()> {
    let objects = origin.common_dir().join("objects");
    let objects = objects.canonicalize().unwrap_or(objects);
    let info = git_dir.join("objects").join("info");
    std::fs::create_dir_all(&info)?;
    std::fs::write(info.join("alternates"), format!("{}\n", objects.display()))
        .context("cannot write objects/info/alternates")?;
    if let Ok(shallow) = std::fs::read(origin.common_dir().join("shallow")) {
        std::fs::write(git_dir.join("shallow"), shallow)?;
    }
    Ok(())
}

/// `origin` as `git clone` would set it, so the checkout names its source like a clone does.
fn remember_origin(git_dir: &Path, url: &str) -> Result<()> {
    use std::io::Write as _;
    let quoted = url.replace('\\', "\\\\").replace('"', "\\\"");
    let mut config = std::fs::OpenOptions::new()
        .append(true)
        .open(git_dir.join("config"))
        .context("cannot open the checkout's git config")?;
    write!(
        config,
        "[remote \"origin\"]\n\turl = \"{quoted}\"\n\tfetch = +refs/heads/*:refs/remotes/origin/*\n"
    )
    .context("cannot write the checkout's git config")
}

/// A tag named by REV is kept, so `{git_tag}` works as in a clone.
fn copy_tag(origin: &gix::Repository, repo: &gix::Repository, rev: &str) -> Result<()> {
    let name = format!("refs/tags/{rev}");
    let Ok(Some(mut tag)) = origin.try_find_reference(name.as_str()) else {
        return Ok(());
    };
    let Ok(target) = tag.peel_to_id() else {
        return Ok(());
    };
    let target = tag
        .target()
        .try_id()
        .map(ToOwned::to_owned)
        .unwrap_or(target.detach());
    repo.reference(
        name.as_str(),
        target,
        gix::refs::transaction::PreviousValue::Any,
        "imgpack: tag",
    )
    .with_context(|| format!("cannot keep the tag {rev}"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ssh_command_quotes_its_paths() {
        assert_eq!(
            ssh_command(
                Some("/ssh/it's key".into()),
                Some("/ssh/known_hosts".into()),
                MAX_WAIT
            ),
            "ssh -o BatchMode=yes -o ConnectTimeout=20 -o ServerAliveInterval=15 \
             -o IdentitiesOnly=yes -i '/ssh/it'\\''s key' -o UserKnownHostsFile='/ssh/known_hosts'"
        );
        // Less time left than ssh's own 20 s: ssh gives up sooner.
        assert!(ssh_command(None, None, Duration::from_secs(5)).contains("ConnectTimeout=5 "));
        assert!(ssh_command(None, None, Duration::ZERO).contains("ConnectTimeout=1 "));
    }

    #[test]
    fn revisions_are_told_apart() {
        assert!(matches!(wanted(None), Wanted::Revision("HEAD")));
        assert!(matches!(wanted(Some("refs/tags/v1")), Wanted::Revision(_)));
        let id = "0123456789abcdef0123456789abcdef01234567";
        assert!(matches!(wanted(Some(id)), Wanted::Revision(_)));
        assert!(matches!(wanted(Some("main")), Wanted::RefName("main")));
        assert!(
            is_abbreviated_id("0123abc") && !is_abbreviated_id("main") && !is_abbreviated_id(id)
        );
    }
}
