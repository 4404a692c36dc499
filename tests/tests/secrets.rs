//! imgpack's secrets stay with imgpack (issue 19, items 3 and 4): a Rust
//! build script and a Go cgo `CC` wrapper that dump their environment and
//! every ancestor's /proc/PID/environ find no password or token; the key
//! unlocked after the compile still signs, from a password file too, and the
//! two-step Job (build to a layout, push and sign it) verifies; a git token
//! reaches only the hosts it is for (a second git server on another
//! 127.0.0.1 port stands for an attacker's host named in resolve's YAML); and
//! a password in a git URL shows in no message or written file.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use imgpack_e2e::git_server::{publish, GitServer};
use imgpack_e2e::registry::{Registry, Setup};
use imgpack_e2e::*;

const SIGN_PASSWORD: &str = "Sign-Pa55word-for-ci";
const GIT_USER: &str = "ci-bot";
const GIT_TOKEN: &str = "ghp_T0kenOfTheBuilder";
const URL_PASSWORD: &str = "PASSWORD-in-the-url";

/// The secrets set in imgpack's environment, and every form in which they could leak.
fn secret_env() -> Vec<(&'static str, &'static str)> {
    vec![
        ("COSIGN_PASSWORD", SIGN_PASSWORD),
        ("IMGPACK_SIGN_PASSWORD", SIGN_PASSWORD),
        ("IMGPACK_GIT_TOKEN", GIT_TOKEN),
        ("IMGPACK_GIT_USERNAME", GIT_USER),
    ]
}

fn all_secret_forms() -> Vec<String> {
    let mut forms = secret_forms(GIT_USER, GIT_TOKEN);
    forms.extend(secret_forms("x-access-token", GIT_TOKEN));
    forms.extend(secret_forms("", SIGN_PASSWORD));
    forms.sort();
    forms.dedup();
    forms
}

/// A key pair made by `imgpack keygen`, encrypted with [`SIGN_PASSWORD`].
fn keygen(dir: &Path) -> (PathBuf, PathBuf) {
    run_expect(
        imgpack()
            .args(["keygen", "--output-key-prefix"])
            .arg(dir.join("ci"))
            .env("COSIGN_PASSWORD", SIGN_PASSWORD),
        true,
    );
    (dir.join("ci.key"), dir.join("ci.pub"))
}

/// What the dumping programs write: their own environment, then each
/// ancestor's /proc/PID/environ (or that it could not be read), up the ppid chain.
const DUMP_SHELL: &str = r#"out="$DUMP_DIR/cc-$$.txt"
env > "$out"
pid=$$
while [ "$pid" -gt 1 ]; do
  pid=$(awk '/^PPid:/ {print $2}' /proc/$pid/status)
  [ -n "$pid" ] || break
  echo "== /proc/$pid/environ" >> "$out"
  { tr '\0' '\n' < /proc/$pid/environ >> "$out"; } 2>/dev/null || echo "unreadable" >> "$out"
done
"#;

const BUILD_RS: &str = r#"use std::io::Write;
fn main() {
    let dir = std::env::var("DUMP_DIR").expect("DUMP_DIR");
    let mut out = std::fs::File::create(format!("{dir}/build-rs-{}.txt", std::process::id())).unwrap();
    for (key, value) in std::env::vars_os() {
        writeln!(out, "{}={}", key.to_string_lossy(), value.to_string_lossy()).unwrap();
    }
    let mut pid = std::process::id().to_string();
    loop {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        let Some(ppid) = status.lines().find_map(|l| l.strip_prefix("PPid:")) else { break };
        pid = ppid.trim().to_owned();
        if pid == "0" || pid == "1" { break }
        writeln!(out, "== /proc/{pid}/environ").unwrap();
        match std::fs::read(format!("/proc/{pid}/environ")) {
            Ok(bytes) => out.write_all(&bytes).unwrap(),
            Err(_) => writeln!(out, "unreadable").unwrap(),
        }
        writeln!(out).unwrap();
    }
    println!("cargo:rerun-if-changed=build.rs");
}
"#;

/// Every dump in `dir`: (file name, text); there must be at least one of each `kind`.
fn dumps(dir: &Path, kind: &str) -> Vec<(String, Vec<u8>)> {
    let found: Vec<(String, Vec<u8>)> = std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| {
            path.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with(kind)
        })
        .map(|path| {
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read(&path).unwrap())
        })
        .collect();
    assert!(!found.is_empty(), "no {kind} dump in {}", dir.display());
    found
}

/// The dumps hold an environment and walked up to imgpack and beyond, and no secret.
fn assert_dumps_clean(dumps: &[(String, Vec<u8>)]) {
    for (name, bytes) in dumps {
        let text = String::from_utf8_lossy(bytes);
        assert!(text.contains("DUMP_DIR="), "{name} holds no environment");
        assert!(
            text.matches("== /proc/").count() >= 2,
            "{name} did not walk up the process tree:\n{text}"
        );
        for secret in all_secret_forms() {
            assert!(
                !bytes.windows(secret.len()).any(|w| w == secret.as_bytes()),
                "{name}: a secret ({secret:?}) is in what the project's code could read:\n{text}"
            );
        }
    }
}

fn verify(reference: &str, public: &Path) -> Output {
    run_expect(
        imgpack()
            .args(["verify", reference, "--key"])
            .arg(public)
            .arg("-q"),
        true,
    )
}

fn pushed_line(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .last()
        .unwrap_or_default()
        .to_owned()
}

#[test]
fn a_build_script_sees_no_secret_and_the_key_still_signs() {
    if !have_tool("cargo") {
        return;
    }
    let Some(registry) = Registry::start(Setup::Plain) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (key, public) = keygen(d);
    let project = d.join("leaky");
    std::fs::create_dir_all(project.join("src")).unwrap();
    std::fs::write(
        project.join("Cargo.toml"),
        "[package]\nname = \"leaky\"\nversion = \"0.1.0\"\nedition = \"2021\"\nbuild = \"build.rs\"\n\n[workspace]\n",
    )
    .unwrap();
    std::fs::write(project.join("src/main.rs"), "fn main() {}\n").unwrap();
    std::fs::write(project.join("build.rs"), BUILD_RS).unwrap();
    let dump_dir = d.join("dumps");
    std::fs::create_dir(&dump_dir).unwrap();

    let reference = format!("{}/leaky:v1", registry.host());
    let output = run_expect(
        imgpack()
            .current_dir(d)
            .args([
                "build",
                "leaky",
                "--platform",
                "linux/amd64",
                "--push",
                &reference,
            ])
            .arg("--sign-key")
            .arg(&key)
            .envs(secret_env())
            .env("DUMP_DIR", &dump_dir)
            .env("CARGO_TARGET_DIR", d.join("target")),
        true,
    );
    assert_no_secrets("imgpack build", &output, &all_secret_forms());
    assert_dumps_clean(&dumps(&dump_dir, "build-rs-"));
    // Unlocked after the compile, the key signed what was pushed.
    verify(&pushed_line(&output), &public);
}

#[test]
fn a_cgo_compiler_sees_no_secret_and_the_key_still_signs() {
    if !have_tool("go") || !have_tool("gcc") {
        return;
    }
    let Some(registry) = Registry::start(Setup::Plain) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (key, public) = keygen(d);
    let project = d.join("cgo");
    std::fs::create_dir(&project).unwrap();
    std::fs::write(
        project.join("go.mod"),
        "module example.com/cgo\n\ngo 1.21\n",
    )
    .unwrap();
    std::fs::write(
        project.join("main.go"),
        "package main\n\n// static int answer(void) { return 42; }\nimport \"C\"\n\nimport \"fmt\"\n\nfunc main() { fmt.Println(C.answer()) }\n",
    )
    .unwrap();
    let wrapper = d.join("cc-wrapper");
    std::fs::write(
        &wrapper,
        format!("#!/bin/sh\n{DUMP_SHELL}exec gcc \"$@\"\n"),
    )
    .unwrap();
    run_expect(Command::new("chmod").arg("755").arg(&wrapper), true);
    let dump_dir = d.join("dumps");
    std::fs::create_dir(&dump_dir).unwrap();

    let reference = format!("{}/cgo:v1", registry.host());
    let output = run_expect(
        imgpack()
            .current_dir(d)
            .args([
                "build",
                "cgo",
                "--platform",
                "linux/amd64",
                "--push",
                &reference,
            ])
            .args(["--ldflags", "-linkmode=external -extldflags=-static"])
            .arg("--sign-key")
            .arg(&key)
            .envs(secret_env())
            .env("DUMP_DIR", &dump_dir)
            .env("CGO_ENABLED", "1")
            .env("CC", &wrapper)
            .env("GOFLAGS", "-mod=mod")
            .env("GOPROXY", "off")
            .env("GOTOOLCHAIN", "local")
            .env("GOCACHE", d.join("gocache")),
        true,
    );
    assert_no_secrets("imgpack build", &output, &all_secret_forms());
    assert_dumps_clean(&dumps(&dump_dir, "cc-"));
    verify(&pushed_line(&output), &public);
}

#[test]
fn the_two_step_job_builds_without_secrets_then_pushes_and_signs() {
    let Some(registry) = Registry::start(Setup::Plain) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (key, public) = keygen(d);
    write_static_elf(&d.join("app"), Arch::Amd64, b"two steps");
    // Container 1: no secret mounted, the image to a shared directory.
    run_expect(
        imgpack().current_dir(d).args([
            "build",
            "--binary",
            "linux/amd64=app",
            "--output",
            "oci:out/img",
            "-q",
        ]),
        true,
    );
    // Container 2: the key and its password file, push and sign.
    let password_file = d.join("password");
    std::fs::write(&password_file, format!("{SIGN_PASSWORD}\n")).unwrap();
    let reference = format!("{}/two-step:v1", registry.host());
    let pushed = run_expect(
        imgpack()
            .current_dir(d)
            .args(["push", "oci:out/img", &reference, "-q", "--sign-key"])
            .arg(&key)
            .arg("--sign-password-file")
            .arg(&password_file)
            // The file wins over the variables, which hold a wrong password here.
            .env("COSIGN_PASSWORD", "not-the-password")
            .env("IMGPACK_SIGN_PASSWORD", "not-the-password"),
        true,
    );
    // The provenance the build wrote unsigned is signed by the push.
    run_expect(
        imgpack()
            .args([
                "verify",
                &pushed_line(&pushed),
                "--sbom",
                "--provenance",
                "-q",
                "--key",
            ])
            .arg(&public),
        true,
    );

    // A password file that is not one: one line each, nothing pushed.
    let fifo = d.join("fifo");
    run_expect(Command::new("mkfifo").arg(&fifo), true);
    for (file, problem) in [
        (fifo.clone(), "is a FIFO, not a regular file"),
        (d.to_owned(), "is a directory, not a regular file"),
        (d.join("missing"), "cannot read"),
    ] {
        let line = one_error_line(
            imgpack()
                .current_dir(d)
                .args([
                    "push",
                    "oci:out/img",
                    &format!("{}/refused:v1", registry.host()),
                ])
                .args(["-q", "--sign-key"])
                .arg(&key)
                .arg("--sign-password-file")
                .arg(&file),
        );
        assert!(line.contains(problem), "{line}");
        assert!(line.contains("--sign-password-file"), "{line}");
    }
    // A password file without a key would sign nothing: refused.
    let line = one_error_line(
        imgpack()
            .current_dir(d)
            .args([
                "push",
                "oci:out/img",
                &format!("{}/refused:v1", registry.host()),
            ])
            .args(["-q", "--sign-password-file"])
            .arg(&password_file)
            .env_remove("IMGPACK_SIGN_KEY"),
    );
    assert!(line.contains("no key is given: add --sign-key"), "{line}");
    assert!(registry.manifest_digest("refused", "v1").is_none());
}

/// A bare repository `NAME.git` under `root` with one commit holding `README`.
fn small_repository(dir: &Path, root: &Path, name: &str) {
    let work = dir.join(format!("work-{name}"));
    std::fs::create_dir_all(&work).unwrap();
    let git = |args: &[&str]| {
        run_expect(
            Command::new("git")
                .arg("-C")
                .arg(&work)
                .args(["-c", "user.name=t", "-c", "user.email=t@t"])
                .args(["-c", "init.defaultBranch=main"])
                .args(args),
            true,
        )
    };
    git(&["init", "-q"]);
    std::fs::write(work.join("README"), "hello\n").unwrap();
    git(&["add", "-A"]);
    git(&["commit", "-q", "-m", "one"]);
    publish(&work, root, name);
}

/// `imgpack resolve` of one YAML naming `reference`, pushing nowhere reachable
/// (the fetch comes first and is all these tests need).
fn resolve(dir: &Path, reference: &str) -> Command {
    let yaml = dir.join("deploy.yaml");
    std::fs::write(&yaml, format!("image: imgpack://{reference}\n")).unwrap();
    let mut command = imgpack();
    command
        .current_dir(dir)
        .args(["resolve", "-q", "-f"])
        .arg(&yaml)
        .env("IMGPACK_REPO", http::refusing_host() + "/team")
        .env("HOME", dir.join("home"))
        .env_remove("NETRC")
        .env_remove("IMGPACK_GIT_TOKEN_HOSTS");
    command
}

fn build_git(dir: &Path, source: &str) -> Command {
    let mut command = imgpack();
    command
        .current_dir(dir)
        .args(["build", source, "-q", "--output", "oci:out"])
        .env("HOME", dir.join("home"))
        .env_remove("NETRC")
        .env_remove("IMGPACK_GIT_TOKEN_HOSTS");
    command
}

fn assert_no_token(server: &GitServer, what: &str) {
    let forms = all_secret_forms();
    for header in server.authorizations() {
        for form in &forms {
            assert!(
                !header.contains(form.as_str()),
                "{what}: the token reached {}: {header}",
                server.host()
            );
        }
    }
}

#[test]
fn a_git_token_reaches_only_the_hosts_it_is_for() {
    if !have_tool("git") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let home = d.join("home");
    std::fs::create_dir(&home).unwrap();
    let served = d.join("served");
    std::fs::create_dir(&served).unwrap();
    small_repository(d, &served, "app");
    // The builder's own host, and one named by YAML someone else wrote (it
    // asks for credentials, as a server collecting them would).
    let own = GitServer::start(&served, Some((GIT_USER, GIT_TOKEN)));
    let attacker = GitServer::start(&served, Some(("anyone", "anything")));
    let token_env = [
        ("IMGPACK_GIT_TOKEN", GIT_TOKEN),
        ("IMGPACK_GIT_USERNAME", GIT_USER),
    ];
    let attacker_source = format!("git+{}@main", attacker.url("app.git"));

    // From YAML, IMGPACK_GIT_TOKEN_HOSTS unset: the token goes nowhere.
    let line = one_error_line(resolve(d, &attacker_source).envs(token_env));
    assert!(attacker.requests.load(std::sync::atomic::Ordering::SeqCst) > 0);
    assert_no_token(&attacker, "resolve, hosts unset");
    assert!(
        line.contains(&format!("authentication refused by {}", attacker.host())),
        "{line}"
    );
    assert!(
        line.contains(&format!(
            "IMGPACK_GIT_TOKEN is not sent to {}, which came from YAML: list the host in \
             IMGPACK_GIT_TOKEN_HOSTS",
            attacker.host()
        )),
        "{line}"
    );

    // Listed hosts: the own host only, from YAML and from the command line.
    let listed = [("IMGPACK_GIT_TOKEN_HOSTS", own.host())];
    let line = one_error_line(
        resolve(d, &attacker_source)
            .envs(token_env)
            .envs(listed.clone()),
    );
    assert!(
        line.contains("which IMGPACK_GIT_TOKEN_HOSTS does not list"),
        "{line}"
    );
    run_expect(
        build_git(d, &attacker_source)
            .envs(token_env)
            .envs(listed.clone()),
        false,
    );
    assert_no_token(&attacker, "hosts listed");
    let line = one_error_line(
        resolve(d, &format!("git+{}@main#no/such/dir", own.url("app.git")))
            .envs(token_env)
            .envs(listed.clone()),
    );
    assert!(line.contains("has no directory no/such/dir"), "{line}");
    let expected = secret_forms(GIT_USER, GIT_TOKEN)[1].clone();
    assert!(
        own.authorizations().iter().any(|h| h.contains(&expected)),
        "the listed host got no token: {:?}",
        own.authorizations()
    );

    // A netrc `default` entry is never sent to a host named by YAML.
    std::fs::write(
        home.join(".netrc"),
        format!("default login {GIT_USER} password {GIT_TOKEN}\n"),
    )
    .unwrap();
    run_expect(&mut resolve(d, &attacker_source), false);
    assert_no_token(&attacker, "netrc default");
    std::fs::remove_file(home.join(".netrc")).unwrap();

    // Typed on the command line, hosts unset: the URL's host is the one meant.
    let before = own.authorizations().len();
    let line = one_error_line(
        build_git(d, &format!("git+{}@main#no/such/dir", own.url("app.git"))).envs(token_env),
    );
    assert!(line.contains("has no directory no/such/dir"), "{line}");
    assert!(own.authorizations().len() > before);
}

/// A static C program for amd64 whose `.dep-v0` section (cargo auditable)
/// lists a git dependency with `alice:PASSWORD@` in its source URL.
fn auditable_binary(path: &Path) -> bool {
    if !have_tool("objcopy") || !have_tool("gcc") {
        return false;
    }
    let source = path.with_extension("c");
    std::fs::write(&source, "int main(void) { return 0; }\n").unwrap();
    run_expect(
        Command::new("gcc")
            .args(["-static", "-Os", "-o"])
            .arg(path)
            .arg(&source),
        true,
    );
    let json = format!(
        r#"{{"packages":[{{"name":"app","version":"0.1.0","source":"local","dependencies":[1],"root":true}},{{"name":"dep","version":"1.0.0","source":"git+https://alice:{URL_PASSWORD}@git.example/dep.git?rev=v1#0123abcd"}}]}}"#
    );
    let mut encoder = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
    std::io::Write::write_all(&mut encoder, json.as_bytes()).unwrap();
    let section = path.with_extension("dep-v0");
    std::fs::write(&section, encoder.finish().unwrap()).unwrap();
    let added = Command::new("objcopy")
        .arg(format!("--add-section=.dep-v0={}", section.display()))
        .arg(path)
        .status()
        .unwrap();
    assert!(added.success(), "objcopy --add-section failed");
    true
}

/// Every file under `dir`, read.
fn files_under(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return found;
    };
    for entry in entries {
        let path = entry.unwrap().path();
        if path.is_dir() {
            found.extend(files_under(&path));
        } else if let Ok(bytes) = std::fs::read(&path) {
            found.push((path, bytes));
        }
    }
    found
}

#[test]
fn a_password_in_a_git_url_shows_nowhere() {
    if !have_tool("git") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::create_dir(d.join("home")).unwrap();
    let served = d.join("served");
    std::fs::create_dir(&served).unwrap();
    small_repository(d, &served, "app");
    let server = GitServer::start(&served, Some(("alice", URL_PASSWORD)));
    let with_password =
        |url: &str| url.replace("http://", &format!("http://alice:{URL_PASSWORD}@"));
    let good = with_password(&server.url("app.git"));
    let closed = with_password(&format!("http://{}/app.git", http::refusing_host()));
    let wrong = server
        .url("app.git")
        .replace("http://", "http://alice:WRONG-PASSWORD-x@");

    let sources = [
        format!("git+{closed}@v1"),             // unreachable host
        format!("git+{good}@v9"),               // no such revision
        format!("git+{good}@main#no/such/dir"), // no such directory
        format!("git+{wrong}@main"),            // refused
        format!("git+{good}@a..b"),             // bad revision (spec)
        format!("git+{good}#/etc"),             // bad directory (spec)
        format!("git+{good}#../up"),            // leaves the repository (spec)
        format!("git+http://alice:{URL_PASSWORD}@git.example/x.git"), // plain http (spec)
        format!("git+ftp://alice:{URL_PASSWORD}@git.example/x.git"), // scheme (spec)
        format!("git+https://alice:{URL_PASSWORD}@git.example:99999/x.git"), // bad URL (spec)
    ];
    let mut forms = secret_forms("alice", URL_PASSWORD);
    forms.extend(secret_forms("alice", "WRONG-PASSWORD-x"));
    for source in &sources {
        // Typed on the command line, and read by resolve from YAML (whose
        // error line starts with the reference).
        for (what, mut command) in [
            ("imgpack build", build_git(d, source)),
            ("imgpack resolve", resolve(d, source)),
        ] {
            let output = run_expect(&mut command, false);
            let line = error_line(&output);
            assert_no_secrets(&format!("{what} {source}"), &output, &forms);
            assert!(line.contains("alice") || line.contains("git"), "{line}");
        }
    }
    // A successful fetch with progress lines (no -q): the password is in no
    // message and no file imgpack wrote.
    let output = run_expect(
        imgpack()
            .current_dir(d)
            .args([
                "build",
                &format!("git+{good}@main#no/such/dir"),
                "--output",
                "oci:progress",
            ])
            .env("HOME", d.join("home")),
        false,
    );
    assert_no_secrets("imgpack build with progress", &output, &forms);

    // The SBOM of a binary whose cargo-auditable list names a git
    // dependency by a URL with a password.
    let binary = d.join("audited");
    if auditable_binary(&binary) {
        let output = run_expect(
            imgpack().current_dir(d).args([
                "build",
                "--binary",
                "linux/amd64=audited",
                "--output",
                "oci:sbom",
            ]),
            true,
        );
        assert_no_secrets("imgpack build --binary", &output, &forms);
        let files = files_under(&d.join("sbom"));
        let sbom_names_dep = files.iter().any(|(_, bytes)| {
            let text = String::from_utf8_lossy(bytes);
            text.contains("git.example/dep.git")
        });
        assert!(sbom_names_dep, "the SBOM does not name the git dependency");
    }
    // Every file imgpack wrote: outputs, its cache.
    let mut written = files_under(d);
    written.extend(files_under(&test_cache_dir()));
    for (path, bytes) in written {
        let inputs = [d.join("served"), d.join("work-app"), d.join("deploy.yaml")];
        if inputs.iter().any(|input| path.starts_with(input))
            || path.extension().is_some_and(|e| e == "dep-v0" || e == "c")
            || path == binary
        {
            continue; // the test's own input
        }
        for form in &forms {
            assert!(
                !bytes.windows(form.len()).any(|w| w == form.as_bytes()),
                "{}: holds a secret ({form:?})",
                path.display()
            );
        }
    }
}
