//! A git source is someone else's repository: its imgpack.toml may describe the image but not
//! reach the builder's files or run programs on it (keys refused unless --trust-source-config),
//! and no path it names (#SUBDIR, the config file, `path`, `[[files]] src`) may lead out of the
//! checkout through a committed symlink. Each attack gets one error line, and nothing is written.

use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::Command;

use imgpack_e2e::git_server::{git, publish, GitServer};
use imgpack_e2e::*;

/// A repository at `dir/work` holding go-hello at its root, the `files` given and the
/// `links` (name, target) committed as symlinks; returns it and its commit.
fn repository(dir: &Path, files: &[(&str, &str)], links: &[(&str, &Path)]) -> (PathBuf, String) {
    let repo = dir.join("work");
    std::fs::create_dir_all(&repo).unwrap();
    git(&repo, &["init", "-q"]);
    copy_project(&workspace_root().join("fixtures/go-hello"), &repo);
    for (name, text) in files {
        let path = repo.join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }
    for (name, target) in links {
        symlink(target, repo.join(name)).unwrap();
    }
    git(&repo, &["add", "-A"]);
    git(&repo, &["commit", "-q", "-m", "attack"]);
    let commit = git(&repo, &["rev-parse", "HEAD"]);
    (repo, commit)
}

/// A directory of the builder's that no repository should reach: a Go project (so a build that
/// escapes into it succeeds) and a secret file.
fn host_dir(dir: &Path) -> PathBuf {
    let host = dir.join("host");
    copy_project(&workspace_root().join("fixtures/go-hello"), &host);
    std::fs::write(host.join("secret.txt"), "host secret\n").unwrap();
    host
}

fn source(repo: &Path, commit: &str, subdir: &str) -> String {
    format!("git+file://{}@{commit}{subdir}", repo.display())
}

/// `imgpack build SOURCE` to `dir/out`, staging under `dir/tmp`, Go offline.
fn build(dir: &Path, source: &str) -> Command {
    std::fs::create_dir_all(dir.join("tmp")).unwrap();
    let mut command = imgpack();
    command
        .current_dir(dir)
        .args(["build", source, "--platform", "linux/amd64", "-q"])
        .arg("--tmpdir")
        .arg(dir.join("tmp"))
        .arg("--output")
        .arg(format!("oci:{}:v1", dir.join("out").display()))
        .env("GOFLAGS", "-mod=mod")
        .env("GOPROXY", "off")
        .env("GOTOOLCHAIN", "local")
        .env("GOCACHE", dir.join("gocache"))
        .env_remove("GIT_DIR");
    command
}

/// The build fails with exactly `expected` and writes nothing.
fn assert_refused(dir: &Path, command: &mut Command, expected: &str) {
    assert_eq!(one_error_line(command), expected);
    assert!(
        !dir.join("out").exists(),
        "the refused build wrote an output"
    );
}

fn tools() -> bool {
    have_tool("go") && have_tool("git")
}

#[test]
fn a_committed_config_cannot_copy_host_files_into_the_image() {
    if !tools() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let host = host_dir(d);
    let toml = format!(
        "[[files]]\nsrc = \"{}\"\ndst = \"/leak/hostname\"\nallow_outside_project = true\n",
        host.join("secret.txt").display()
    );
    let (repo, commit) = repository(d, &[("imgpack.toml", &toml)], &[]);
    // Over git's own HTTP server, as a CI runner fetches.
    let served = d.join("served");
    publish(&repo, &served, "app");
    let server = GitServer::start(&served, None);
    let source = format!("git+{}@{commit}", server.url("app.git"));
    assert_refused(
        d,
        &mut build(d, &source),
        "error: imgpack.toml:4: key `[[files]] allow_outside_project` = true: a config file from \
         a git source may not copy files from outside the checkout: add --trust-source-config to \
         trust this file",
    );

    // Trusted on the command line, the file works as it does in a local working tree.
    run_expect(build(d, &source).arg("--trust-source-config"), true);
    let layout = Layout::new(d.join("out"));
    let manifest = layout.json(layout.entry("v1")["digest"].as_str().unwrap());
    let copied = manifest["layers"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|layer| layout.layer_entries(layer["digest"].as_str().unwrap()))
        .any(|(path, ..)| path == "leak/hostname");
    assert!(
        copied,
        "--trust-source-config restores the file's [[files]]"
    );
}

/// A cgo file and `[go] env` that would run the command as the C compiler.
#[test]
fn a_committed_config_cannot_choose_the_c_compiler() {
    if !tools() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let marker = d.join("cc-ran");
    let toml = format!(
        "[go]\nenv = {{ CGO_ENABLED = \"1\", CC = \"sh -c 'touch {}'\" }}\n",
        marker.display()
    );
    let cgo = "package main\n\n/*\nstatic int answer(void) { return 42; }\n*/\nimport \"C\"\n\n\
               func init() { _ = C.answer() }\n";
    let (repo, commit) = repository(d, &[("imgpack.toml", &toml), ("cgo.go", cgo)], &[]);
    assert_refused(
        d,
        &mut build(d, &source(&repo, &commit, "")),
        "error: imgpack.toml:2: key `[go] env` = { CC = …, CGO_ENABLED = … }: a config file from \
         a git source may not set the environment of go build (CC, GOFLAGS, PATH and the like run \
         programs): add --trust-source-config to trust this file",
    );
    assert!(!marker.exists(), "the repository's CC ran on the builder");
}

#[test]
fn a_committed_config_cannot_wrap_the_go_tools() {
    if !tools() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let marker = d.join("toolexec-ran");
    let wrapper = d.join("wrap.sh");
    std::fs::write(
        &wrapper,
        format!("#!/bin/sh\ntouch {}\nexec \"$@\"\n", marker.display()),
    )
    .unwrap();
    std::fs::set_permissions(
        &wrapper,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let toml = format!(
        "[go]\nenv = {{ GOFLAGS = \"-mod=mod -toolexec={}\" }}\n",
        wrapper.display()
    );
    let (repo, commit) = repository(d, &[("imgpack.toml", &toml)], &[]);
    assert_refused(
        d,
        &mut build(d, &source(&repo, &commit, "")),
        "error: imgpack.toml:2: key `[go] env` = { GOFLAGS = … }: a config file from a git source \
         may not set the environment of go build (CC, GOFLAGS, PATH and the like run programs): \
         add --trust-source-config to trust this file",
    );
    assert!(!marker.exists(), "the -toolexec program ran on the builder");
}

#[test]
fn subdir_cannot_leave_the_checkout_through_a_committed_symlink() {
    if !tools() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let host = host_dir(d);
    // An absolute link, and a relative one that climbs out of the staging directory
    // (the checkout is DIR/tmp/STAGING/src, so ../../../host is DIR/host).
    let (repo, commit) = repository(
        d,
        &[],
        &[("evil", &host), ("up", Path::new("../../../host"))],
    );
    let evil = source(&repo, &commit, "#evil");
    assert_refused(
        d,
        &mut build(d, &evil),
        &format!(
            "error: {evil}: #evil leaves the repository through the symlink evil -> {}: name a \
             directory inside the repository",
            host.display()
        ),
    );
    let up = source(&repo, &commit, "#up");
    assert_refused(
        d,
        &mut build(d, &up),
        &format!(
            "error: {up}: #up leaves the repository through the symlink up -> ../../../host: \
             name a directory inside the repository"
        ),
    );
}

#[test]
fn config_paths_cannot_leave_the_checkout_through_a_committed_symlink() {
    if !tools() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let host = host_dir(d);
    std::fs::write(host.join("imgpack.toml"), "name = \"host\"\n").unwrap();
    let (repo, commit) = repository(
        d,
        &[(
            "imgpack.toml",
            "[[files]]\nsrc = \"static/secret.txt\"\ndst = \"/static/\"\n",
        )],
        &[("static", &host)],
    );
    assert_refused(
        d,
        &mut build(d, &source(&repo, &commit, "")),
        &format!(
            "error: imgpack.toml:1: [[files]] entry 1: src 'static/secret.txt' is outside the \
             directory of imgpack.toml through the symlink static -> {}: copy the files into the \
             repository",
            host.display()
        ),
    );

    // `path` naming a linked host project.
    let other = d.join("other");
    std::fs::create_dir_all(&other).unwrap();
    let (repo, commit) = repository(
        &other,
        &[("imgpack.toml", "path = \"evil\"\n")],
        &[("evil", &host)],
    );
    assert_refused(
        d,
        &mut build(d, &source(&repo, &commit, "")),
        &format!(
            "error: imgpack.toml:1: key `path`: 'evil' leaves the repository through the symlink \
             evil -> {}: name a directory inside the repository",
            host.display()
        ),
    );

    // The config file itself linked to one of the builder's.
    let third = d.join("third");
    std::fs::create_dir_all(&third).unwrap();
    let (repo, commit) = repository(&third, &[], &[("imgpack.toml", &host.join("imgpack.toml"))]);
    assert_refused(
        d,
        &mut build(d, &source(&repo, &commit, "")),
        &format!(
            "error: imgpack.toml: the config file leaves the repository through the symlink \
             imgpack.toml -> {}: commit the file itself",
            host.join("imgpack.toml").display()
        ),
    );
}

/// `go build` compiles a `.go` file wherever its symlink points: a committed link to one of
/// the builder's files is refused before anything is compiled.
#[test]
fn a_committed_symlink_out_of_the_checkout_is_refused() {
    if !tools() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let host = host_dir(d);
    let outside = host.join("extra.go");
    std::fs::write(
        &outside,
        "package main\n\nvar fromTheHost = \"host secret\"\n",
    )
    .unwrap();
    let (repo, commit) = repository(d, &[], &[("extra.go", &outside)]);
    let source = source(&repo, &commit, "");
    assert_refused(
        d,
        &mut build(d, &source),
        &format!(
            "error: {source}: the symlink extra.go -> {} leads out of the repository: a git \
             source may not reach the builder's files or programs: remove it from the \
             repository, or add --trust-source-config to trust it",
            outside.display()
        ),
    );
}

/// Every key of the table, each alone, refused before anything is fetched or compiled; the
/// same file is fine locally.
#[test]
fn every_untrusted_key_is_refused_with_one_line() {
    if !have_tool("git") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let refused = |key: &str, value: &str, why: &str| {
        format!(
            "key `{key}` = {value}: a config file from a git source {why}: add \
             --trust-source-config to trust this file"
        )
    };
    let cases = [
        (
            "[[files]]\nsrc = \"/etc/hostname\"\ndst = \"/h\"\n",
            format!(
                "imgpack.toml:2: {}",
                refused(
                    "[[files]] src",
                    "\"/etc/hostname\"",
                    "may not copy files from outside the checkout"
                )
            ),
        ),
        (
            "ca_certs = \"/etc/ssl/private/ca.pem\"\n",
            format!(
                "imgpack.toml:1: {}",
                refused(
                    "ca_certs",
                    "\"/etc/ssl/private/ca.pem\"",
                    "may not read a file of the builder (only embedded, host or none)"
                )
            ),
        ),
        (
            "tzdata = \"../../..\"\n",
            format!(
                "imgpack.toml:1: {}",
                refused(
                    "tzdata",
                    "\"../../..\"",
                    "may not read a directory of the builder (only embedded, host or none)"
                )
            ),
        ),
        (
            "[[image]]\nname = \"a\"\nsign_key = \"/run/secrets/cosign.key\"\n",
            format!(
                "imgpack.toml:3: {}",
                refused(
                    "sign_key",
                    "\"/run/secrets/cosign.key\"",
                    "may not choose the key pushes are signed with"
                )
            ),
        ),
        (
            "sign_password_file = \"/run/secrets/cosign.password\"\n",
            format!(
                "imgpack.toml:1: {}",
                refused(
                    "sign_password_file",
                    "\"/run/secrets/cosign.password\"",
                    "may not read a file of the builder as the signing key's password"
                )
            ),
        ),
        (
            "base = \"oci:/var/lib/images/internal\"\n",
            format!(
                "imgpack.toml:1: {}",
                refused(
                    "base",
                    "\"oci:/var/lib/images/internal\"",
                    "may not read a base image from the builder's files"
                )
            ),
        ),
        (
            "[go]\nldflags = \"-X main.v=1 -linkmode=external -extld=/bin/sh\"\n",
            format!(
                "imgpack.toml:2: {}",
                refused(
                    "[go] ldflags",
                    "\"-linkmode=external\"",
                    "may not pass linker flags that run or read programs and files (only -X, -s \
                     and -w)"
                )
            ),
        ),
    ];
    for (index, (toml, expected)) in cases.iter().enumerate() {
        let case = d.join(index.to_string());
        std::fs::create_dir_all(&case).unwrap();
        let (repo, commit) = repository(&case, &[("imgpack.toml", toml)], &[]);
        assert_refused(
            &case,
            &mut build(&case, &source(&repo, &commit, "")),
            &format!("error: {expected}"),
        );
    }
}

/// `imgpack resolve` of `imgpack://git+…`: the same refusal, before any registry is asked.
#[test]
fn resolve_refuses_the_same_keys() {
    if !have_tool("git") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (repo, commit) = repository(
        d,
        &[("imgpack.toml", "sign_key = \"/k/cosign.key\"\n")],
        &[],
    );
    let reference = source(&repo, &commit, "");
    let yaml = d.join("deploy.yaml");
    std::fs::write(&yaml, format!("image: imgpack://{reference}\n")).unwrap();
    let mut resolve = imgpack();
    resolve
        .args(["resolve", "-q", "-f"])
        .arg(&yaml)
        .env("IMGPACK_REPO", "127.0.0.1:1/team");
    assert_eq!(
        one_error_line(&mut resolve),
        format!(
            "error: imgpack://{reference}: imgpack.toml:1: key `sign_key` = \"/k/cosign.key\": a \
             config file from a git source may not choose the key pushes are signed with: add \
             --trust-source-config to trust this file"
        )
    );
}
