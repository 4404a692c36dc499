//! `imgpack build git+URL[@REV][#SUBDIR]`: the image of a git source is the
//! image of a local clone at the same commit; over git's own smart HTTP
//! server (`git http-backend`) the fetch is shallow, credentials come from
//! the environment or .netrc and never show, and each failure is one line.

use std::path::{Path, PathBuf};
use std::process::Command;

use imgpack_e2e::git_server::{git, publish, GitServer};
use imgpack_e2e::*;

/// A repository holding go-hello under services/hello, with two commits
/// (the first tagged v1) and a branch `next` with a third; returns it and
/// the first commit.
fn repository(dir: &Path) -> (PathBuf, String) {
    let repo = dir.join("work");
    std::fs::create_dir_all(&repo).unwrap();
    git(&repo, &["init", "-q"]);
    copy_project(
        &workspace_root().join("fixtures/go-hello"),
        &repo.join("services/hello"),
    );
    git(&repo, &["add", "-A"]);
    git(&repo, &["commit", "-q", "-m", "hello"]);
    let first = git(&repo, &["rev-parse", "HEAD"]);
    git(&repo, &["tag", "-a", "-m", "first release", "v1"]);
    std::fs::write(repo.join("README"), "two\n").unwrap();
    git(&repo, &["add", "-A"]);
    git(&repo, &["commit", "-q", "-m", "two"]);
    git(&repo, &["checkout", "-q", "-b", "next"]);
    std::fs::write(repo.join("README"), "three\n").unwrap();
    git(&repo, &["commit", "-q", "-am", "three"]);
    git(&repo, &["checkout", "-q", "main"]);
    (repo, first)
}

fn go_build(dir: &Path, source: &str, out: &str) -> Command {
    let mut command = imgpack();
    command
        .current_dir(dir)
        .args(["build", source, "--platform", "linux/amd64", "--output"])
        .arg(format!("oci:{}:v1", dir.join(out).display()))
        .env("GOFLAGS", "-mod=mod")
        .env("GOPROXY", "off")
        .env("GOTOOLCHAIN", "local")
        .env("GOCACHE", dir.join("gocache"))
        .env_remove("GIT_DIR");
    command
}

fn annotations(dir: &Path, out: &str) -> serde_json::Value {
    let layout = Layout::new(dir.join(out));
    let entry = layout.entry("v1");
    let manifest = layout.json(entry["digest"].as_str().unwrap());
    manifest["annotations"].clone()
}

#[test]
fn a_git_source_builds_the_image_of_a_local_clone() {
    if !have_tool("go") || !have_tool("git") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (repo, first) = repository(d);
    let url = format!("file://{}", repo.display());

    // What a developer does: clone, check out the commit, build the directory.
    git(d, &["clone", "-q", &url, "clone"]);
    git(&d.join("clone"), &["checkout", "-q", &first]);
    let local = printed_digest(&run_expect(
        &mut go_build(d, "./clone/services/hello", "local"),
        true,
    ));
    for rev in [first.as_str(), "v1", &first[..10]] {
        let out = format!("git-{rev}");
        let built = run_expect(
            &mut go_build(d, &format!("git+{url}@{rev}#./services/hello/"), &out),
            true,
        );
        assert_eq!(printed_digest(&built), local, "git+…@{rev}");
    }
    let annotations = annotations(d, "local");
    assert_eq!(
        annotations["org.opencontainers.image.revision"],
        first.as_str()
    );
    assert_eq!(annotations["org.opencontainers.image.source"], url.as_str());

    // The default is the remote's HEAD: main, a commit later, another image.
    let head = run_expect(
        &mut go_build(d, &format!("git+{url}#services/hello"), "head"),
        true,
    );
    assert_ne!(printed_digest(&head), local);
    let main = git(&repo, &["rev-parse", "main"]);
    assert_eq!(annotations_of(d, "head"), main);

    let missing = run_expect(
        &mut go_build(d, &format!("git+{url}@no-such-tag#services/hello"), "x"),
        false,
    );
    let err = stderr(&missing);
    assert!(err.contains("no such revision 'no-such-tag'"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
}

/// A repository with the Go module at its root: the binary is named after the
/// directory, so the checkout must be named as `git clone URL` names it.
#[test]
fn a_root_module_is_named_after_the_repository_as_a_clone_is() {
    if !have_tool("go") || !have_tool("git") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let work = d.join("work");
    copy_project(&workspace_root().join("fixtures/go-hello"), &work);
    git(&work, &["init", "-q"]);
    git(&work, &["add", "-A"]);
    git(&work, &["commit", "-q", "-m", "hello"]);
    let commit = git(&work, &["rev-parse", "HEAD"]);
    std::fs::create_dir(d.join("srv")).unwrap();
    git(d, &["clone", "-q", "--bare", "work", "srv/hello-svc.git"]);
    let url = format!("file://{}", d.join("srv/hello-svc.git").display());

    git(d, &["clone", "-q", &url]);
    // Staging under the test's own directory: nothing else on the machine tidies it.
    let tmp = d.join("tmp");
    std::fs::create_dir(&tmp).unwrap();
    let cloned = printed_digest(&run_expect(
        go_build(d, "./hello-svc", "clone").env("TMPDIR", &tmp),
        true,
    ));
    let fetched = printed_digest(&run_expect(
        go_build(d, &format!("git+{url}@{commit}"), "git").env("TMPDIR", &tmp),
        true,
    ));
    assert_eq!(fetched, cloned, "git+URL@REV and a clone give one image");
    let layout = Layout::new(d.join("git"));
    let manifest = layout.json(layout.entry("v1")["digest"].as_str().unwrap());
    let config = layout.json(manifest["config"]["digest"].as_str().unwrap());
    assert_eq!(config["config"]["Entrypoint"][0], "/app/hello-svc");
}

fn annotations_of(dir: &Path, out: &str) -> String {
    annotations(dir, out)["org.opencontainers.image.revision"]
        .as_str()
        .unwrap()
        .to_owned()
}

#[test]
fn an_http_remote_is_fetched_shallow_with_credentials_that_never_show() {
    if !have_tool("go") || !have_tool("git") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (repo, first) = repository(d);
    let served = d.join("served");
    std::fs::create_dir(&served).unwrap();
    publish(&repo, &served, "team/app");
    let token = "glpat-s3cret-t0ken";
    let server = GitServer::start(&served, Some(("ci", token)));
    let url = server.url("team/app.git");
    // The token, and the basic Authorization header git sends with it, in any form.
    let secrets = secret_forms("ci", token);
    // The `deepen` lines of the fetch since the last call (at the server, not from our log):
    // `deepen 1` asks for one commit's objects, no `deepen` for the whole history.
    let deepens = || {
        let bodies = server.take_upload_packs();
        assert!(
            !bodies.is_empty(),
            "no upload-pack request reached the server"
        );
        let lines: Vec<String> = bodies
            .iter()
            .flat_map(|body| {
                body.split(['\n', '\0'])
                    .map(str::to_owned)
                    .collect::<Vec<_>>()
            })
            .filter_map(|line| Some(line[line.find("deepen")?..].trim().to_owned()))
            .collect();
        lines
    };

    // Without credentials: refused, one line, with the fix.
    let refused = run_expect(
        &mut go_build(d, &format!("git+{url}@v1#services/hello"), "a"),
        false,
    );
    let err = stderr(&refused);
    assert!(err.contains("authentication refused by 127.0.0.1"), "{err}");
    assert!(err.contains("IMGPACK_GIT_TOKEN"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");

    // A wrong token is refused too, and not printed.
    let wrong = run_expect(
        go_build(d, &format!("git+{url}@v1#services/hello"), "b")
            .env("IMGPACK_GIT_TOKEN", "wrong-t0ken")
            .env("IMGPACK_GIT_USERNAME", "ci"),
        false,
    );
    let err = stderr(&wrong);
    assert!(err.contains("IMGPACK_GIT_TOKEN were refused"), "{err}");
    assert!(!err.contains("wrong-t0ken"));

    // The token from the environment, a tag, shallow: one commit's objects.
    server.take_upload_packs();
    let by_env = run_expect(
        go_build(d, &format!("git+{url}@v1#services/hello"), "env")
            .env("IMGPACK_GIT_TOKEN", token)
            .env("IMGPACK_GIT_USERNAME", "ci"),
        true,
    );
    assert_eq!(deepens(), ["deepen 1"], "a tag is fetched with `deepen 1`");
    assert_eq!(annotations_of(d, "env"), first);
    let annotations = annotations(d, "env");
    assert_eq!(annotations["org.opencontainers.image.source"], url.as_str());

    // .netrc, a branch; and credentials in the URL, a full commit id: the same
    // image as the token's for the same commit, and the secrets stay out of it.
    let home = d.join("home");
    std::fs::create_dir(&home).unwrap();
    std::fs::write(
        home.join(".netrc"),
        format!("machine 127.0.0.1 login ci password {token}\n"),
    )
    .unwrap();
    let by_netrc = run_expect(
        go_build(d, &format!("git+{url}@next#services/hello"), "netrc").env("HOME", &home),
        true,
    );
    let status = stderr(&by_netrc);
    assert!(
        status.contains(", shallow"),
        "a branch is fetched shallow: {status}"
    );
    assert_eq!(
        deepens(),
        ["deepen 1"],
        "a branch is fetched with `deepen 1`"
    );
    assert_eq!(
        annotations_of(d, "netrc"),
        git(&repo, &["rev-parse", "next"])
    );
    let with_userinfo = url.replace("http://", &format!("http://ci:{token}@"));
    let by_url = run_expect(
        &mut go_build(
            d,
            &format!("git+{with_userinfo}@{first}#services/hello"),
            "url",
        ),
        true,
    );
    assert_eq!(
        deepens(),
        ["deepen 1"],
        "a commit id is fetched with `deepen 1`"
    );
    assert_eq!(printed_digest(&by_url), printed_digest(&by_env));
    for out in ["env", "netrc", "url"] {
        let layout = Layout::new(d.join(out));
        for digest in layout.verified_blobs() {
            let blob = layout.blob(&format!("sha256:{digest}"));
            for secret in &secrets {
                assert!(
                    !blob.windows(secret.len()).any(|w| w == secret.as_bytes()),
                    "{out}: the token ({secret}) is in {digest}"
                );
            }
        }
    }
    assert!(stderr(&by_url).contains(", shallow"), "a commit id too");
    // An abbreviated id cannot be asked for: the whole history is fetched, the id looked up.
    let by_abbreviation = run_expect(
        go_build(
            d,
            &format!("git+{url}@{}#services/hello", &first[..9]),
            "abbrev",
        )
        .env("IMGPACK_GIT_TOKEN", token)
        .env("IMGPACK_GIT_USERNAME", "ci"),
        true,
    );
    assert_eq!(printed_digest(&by_abbreviation), printed_digest(&by_env));
    assert!(!stderr(&by_abbreviation).contains(", shallow"));
    assert_eq!(
        deepens(),
        Vec::<String>::new(),
        "an abbreviated id needs the whole history"
    );
    for (what, output) in [
        ("refused", &refused),
        ("wrong token", &wrong),
        ("token", &by_env),
        ("url", &by_url),
        (".netrc", &by_netrc),
        ("abbreviation", &by_abbreviation),
    ] {
        assert_no_secrets(what, output, &secrets);
    }

    // Unreachable: nothing listens on the port any more.
    let closed = imgpack_e2e::http::refusing_host();
    let unreachable = run_expect(
        &mut go_build(
            d,
            &format!("git+http://{closed}/team/app.git#services/hello"),
            "c",
        ),
        false,
    );
    let err = stderr(&unreachable);
    assert!(err.contains(&format!("cannot reach {closed}")), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");

    // No such revision on the server.
    let missing = run_expect(
        go_build(d, &format!("git+{url}@v9#services/hello"), "d")
            .env("IMGPACK_GIT_TOKEN", token)
            .env("IMGPACK_GIT_USERNAME", "ci"),
        false,
    );
    let err = stderr(&missing);
    assert!(err.contains("no such revision 'v9'"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
}

/// `imgpack build -q SOURCE --output oci:out:v1` in `dir`.
fn build_source(dir: &Path, source: &str) -> Command {
    let mut command = imgpack();
    command
        .current_dir(dir)
        .args(["build", "-q", source, "--output", "oci:out:v1"]);
    command
}

#[test]
fn a_missing_repository_a_host_file_url_and_a_bad_limit_are_named_as_such() {
    if !have_tool("git") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (repo, _) = repository(d);
    let served = d.join("served");
    std::fs::create_dir(&served).unwrap();
    publish(&repo, &served, "team/app");
    let server = GitServer::start(&served, None);

    // The server answers 404: there is no repository there, whatever the revision.
    let url = server.url("team/nothing.git");
    for source in [format!("git+{url}"), format!("git+{url}@v1")] {
        let err = one_error_line(&mut build_source(d, &source));
        assert!(
            err.contains(&format!("no git repository at {url}")) && err.contains("404"),
            "{source}: {err}"
        );
        assert!(!err.contains("no such revision"), "{source}: {err}");
    }

    // file://git/repo: git would ignore the host and read /repo.
    let err = one_error_line(&mut build_source(d, "git+file://git/repo"));
    assert!(
        err.contains("file://HOST/PATH is not supported: use file:///ABSOLUTE/PATH"),
        "{err}"
    );
    assert!(!err.contains("not a git repository"), "{err}");

    // Each limit's error suggests its own default.
    let local = format!("git+file://{}", repo.display());
    for (variable, default, other) in [
        ("IMGPACK_GIT_MAX_MIB", "4096", "600"),
        ("IMGPACK_GIT_TIMEOUT", "600", "4096"),
    ] {
        let err = one_error_line(build_source(d, &local).env(variable, "lots"));
        assert!(
            err.contains(&format!("{variable}='lots' is not a whole number"))
                && err.contains(&format!("e.g. {default}")),
            "{err}"
        );
        assert!(!err.contains(other), "{err}");
    }
    assert!(!d.join("out").exists(), "an output was written");
}

#[test]
fn ssh_and_scp_style_remotes_use_the_key_and_known_hosts_given() {
    if !have_tool("go") || !have_tool("git") {
        return;
    }
    if !imgpack_e2e::runtime::is_root() {
        // sshd's public-key login is set up for root.
        assert!(
            !tools_required(),
            "the ssh test needs root, and IMGPACK_E2E=1 requires it"
        );
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let Some(server) = imgpack_e2e::ssh_server::SshServer::start(&d.join("ssh")) else {
        return;
    };
    let (repo, first) = repository(d);
    let served = d.join("served");
    std::fs::create_dir(&served).unwrap();
    let bare = publish(&repo, &served, "app");
    let port = server.port;

    // ssh://, with the key and known_hosts from the environment (a mounted Secret in a Job).
    let url = format!("ssh://root@127.0.0.1:{port}{}", bare.display());
    let by_key = run_expect(
        go_build(d, &format!("git+{url}@v1#services/hello"), "by-ssh")
            .env("IMGPACK_GIT_SSH_KEY", &server.key)
            .env("IMGPACK_GIT_SSH_KNOWN_HOSTS", &server.known_hosts),
        true,
    );
    assert_eq!(annotations_of(d, "by-ssh"), first);
    assert!(stderr(&by_key).contains(", shallow"), "{}", stderr(&by_key));
    let annotations = annotations(d, "by-ssh");
    assert_eq!(
        annotations["org.opencontainers.image.source"],
        format!("ssh://127.0.0.1:{port}{}", bare.display()),
        "the user name is left out of the source annotation, as for any URL"
    );

    // scp-style through GIT_SSH_COMMAND and an ssh config naming the host.
    let config = d.join("ssh_config");
    std::fs::write(
        &config,
        format!(
            "Host gitserver\n  HostName 127.0.0.1\n  Port {port}\n  User root\n  IdentityFile {}\n  \
             IdentitiesOnly yes\n  UserKnownHostsFile {}\n  BatchMode yes\n",
            server.key.display(),
            server.known_hosts.display()
        ),
    )
    .unwrap();
    let scp = format!("git+gitserver:{}@{first}#services/hello", bare.display());
    run_expect(
        go_build(d, &scp, "scp").env("GIT_SSH_COMMAND", format!("ssh -F {}", config.display())),
        true,
    );
    assert_eq!(annotations_of(d, "scp"), first);

    // A host key nobody vouched for is refused, in one line.
    let strange = d.join("empty_known_hosts");
    std::fs::write(&strange, "").unwrap();
    let refused = run_expect(
        go_build(d, &format!("git+{url}@v1#services/hello"), "x")
            .env("IMGPACK_GIT_SSH_KEY", &server.key)
            .env("IMGPACK_GIT_SSH_KNOWN_HOSTS", &strange),
        false,
    );
    // ssh says why in its own line; imgpack's line says what to do.
    let err = stderr(&refused);
    assert!(err.contains("Host key verification failed"), "{err}");
    let last = err.trim().lines().last().unwrap();
    assert!(last.contains("the ssh connection to 127.0.0.1"), "{err}");
    assert!(last.contains("IMGPACK_GIT_SSH_KNOWN_HOSTS"), "{err}");
    assert_eq!(err.trim().lines().count(), 2, "{err}");

    // A key the server does not know is refused, in one line.
    let stranger = d.join("stranger_key");
    assert!(Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(&stranger)
        .status()
        .unwrap()
        .success());
    let denied = run_expect(
        go_build(d, &format!("git+{url}@v1#services/hello"), "y")
            .env("IMGPACK_GIT_SSH_KEY", &stranger)
            .env("IMGPACK_GIT_SSH_KNOWN_HOSTS", &server.known_hosts),
        false,
    );
    let err = stderr(&denied);
    assert!(err.contains("authentication refused by 127.0.0.1"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
}
