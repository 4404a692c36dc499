//! Fetching from `file://` repositories made with the `git` executable, and
//! reading a clone's facts: the results must match what git itself says.

use std::path::Path;
use std::process::Command;

use imgpack_git::{fetch, GitAuth, GitSource, HeadFacts, Limits};

fn git(dir: &Path, args: &[&str]) -> String {
    let output = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args([
            "-c",
            "user.name=t",
            "-c",
            "user.email=t@t",
            "-c",
            "init.defaultBranch=main",
        ])
        .args(args)
        .env("GIT_COMMITTER_DATE", "2024-05-01T12:00:00Z")
        .env("GIT_AUTHOR_DATE", "2024-05-01T12:00:00Z")
        .output()
        .expect("git runs");
    assert!(
        output.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap().trim().to_owned()
}

/// A repository with two commits on main, a tag on the first, an executable
/// and a symlink in a subdirectory.
fn repository(root: &Path) -> (std::path::PathBuf, String, String) {
    let repo = root.join("origin");
    std::fs::create_dir_all(repo.join("cmd/api")).unwrap();
    git(&repo, &["init", "-q"]);
    std::fs::write(repo.join("cmd/api/main.go"), "package main\n").unwrap();
    std::fs::write(repo.join("cmd/api/run.sh"), "#!/bin/sh\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(
        repo.join("cmd/api/run.sh"),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    std::os::unix::fs::symlink("main.go", repo.join("cmd/api/link.go")).unwrap();
    git(&repo, &["add", "-A"]);
    git(&repo, &["commit", "-q", "-m", "one"]);
    let first = git(&repo, &["rev-parse", "HEAD"]);
    git(&repo, &["tag", "-a", "-m", "release", "v1"]);
    std::fs::write(repo.join("cmd/api/main.go"), "package main // two\n").unwrap();
    git(&repo, &["commit", "-q", "-am", "two"]);
    let second = git(&repo, &["rev-parse", "HEAD"]);
    (repo, first, second)
}

#[test]
fn a_file_url_checks_out_exactly_the_revision() {
    let dir = tempfile::tempdir().unwrap();
    let (origin, first, second) = repository(dir.path());
    let url = format!("git+file://{}", origin.display());

    let head = GitSource::parse(&format!("{url}#cmd/api")).unwrap();
    let checkout = fetch(
        &head,
        &dir.path().join("head"),
        Limits::default(),
        &GitAuth::default(),
    )
    .unwrap();
    assert_eq!(checkout.commit, second);
    assert_eq!(checkout.project_dir, dir.path().join("head/cmd/api"));
    assert_eq!(
        std::fs::read_to_string(checkout.project_dir.join("main.go")).unwrap(),
        "package main // two\n"
    );
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(checkout.project_dir.join("run.sh"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o111, 0o111, "the execute bit is kept");
    assert_eq!(
        std::fs::read_link(checkout.project_dir.join("link.go")).unwrap(),
        Path::new("main.go")
    );
    // git itself sees a clean checkout of that commit whose origin is the URL.
    assert_eq!(git(&checkout.root, &["status", "--porcelain"]), "");
    assert_eq!(git(&checkout.root, &["rev-parse", "HEAD"]), second);
    assert_eq!(
        git(&checkout.root, &["remote", "get-url", "origin"]),
        format!("file://{}", origin.display())
    );

    for rev in ["v1", &first[..], &first[..8]] {
        let source = GitSource::parse(&format!("{url}@{rev}")).unwrap();
        let dest = dir.path().join(format!("at-{rev}"));
        let checkout = fetch(&source, &dest, Limits::default(), &GitAuth::default()).unwrap();
        assert_eq!(checkout.commit, first, "{rev}");
        assert_eq!(
            std::fs::read_to_string(dest.join("cmd/api/main.go")).unwrap(),
            "package main\n"
        );
    }
}

#[test]
fn facts_match_what_git_says() {
    let dir = tempfile::tempdir().unwrap();
    let (origin, first, _) = repository(dir.path());
    let clone = dir.path().join("clone");
    git(
        dir.path(),
        &[
            "clone",
            "-q",
            &format!("file://{}", origin.display()),
            "clone",
        ],
    );
    git(&clone, &["checkout", "-q", "v1"]);
    git(
        &clone,
        &[
            "remote",
            "set-url",
            "origin",
            "https://bot:token@git.example/team/app.git",
        ],
    );
    git(&clone, &["tag", "a-lightweight-one"]);
    let facts = HeadFacts::of(&clone.join("cmd/api")).unwrap();
    assert_eq!(facts.commit, first);
    assert_eq!(
        facts.tag.as_deref(),
        Some("v1"),
        "annotated tags win, as with git describe"
    );
    assert_eq!(
        facts.remote.as_deref(),
        Some("https://git.example/team/app.git")
    );
    let seconds: i64 = git(&clone, &["log", "-1", "--format=%ct"]).parse().unwrap();
    assert_eq!(facts.commit_time, Some(seconds));
    assert!(HeadFacts::of(&dir.path().join("nowhere")).is_none());
}

#[test]
fn missing_revisions_and_directories_are_one_line_each() {
    let dir = tempfile::tempdir().unwrap();
    let (origin, _, _) = repository(dir.path());
    let url = format!("git+file://{}", origin.display());
    let error = |spec: &str, dest: &str| {
        let source = GitSource::parse(spec).unwrap();
        let err = fetch(
            &source,
            &dir.path().join(dest),
            Limits::default(),
            &GitAuth::default(),
        )
        .unwrap_err();
        format!("{err:#}")
    };
    let err = error(&format!("{url}@no-such-branch"), "a");
    assert!(err.contains("no such revision 'no-such-branch'"), "{err}");
    assert!(!err.contains('\n'));
    let err = error(&format!("{url}#cmd/web"), "b");
    assert!(err.contains("has no directory cmd/web"), "{err}");
    let err = error(&format!("git+file://{}/nothing", dir.path().display()), "c");
    assert!(err.contains("is not a git repository"), "{err}");
}

#[test]
fn a_checkout_larger_than_the_limit_stops() {
    let dir = tempfile::tempdir().unwrap();
    let (origin, _, _) = repository(dir.path());
    let source = GitSource::parse(&format!("git+file://{}", origin.display())).unwrap();
    let limits = Limits {
        max_bytes: 10,
        ..Limits::default()
    };
    let err = fetch(
        &source,
        &dir.path().join("small"),
        limits,
        &GitAuth::default(),
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("larger than 0 MiB") && err.contains("IMGPACK_GIT_MAX_MIB"),
        "{err}"
    );
}
