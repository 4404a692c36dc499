//! Bad inputs from issue 8's table: each ends in one clear line that names the problem and
//! the fix, a non-zero exit, no panic, and nothing half-written left behind.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use imgpack_e2e::*;

/// imgpack in `dir`, with a cache of its own and no IMGPACK_REPO.
fn imgpack_in(dir: &Path) -> Command {
    let mut command = imgpack();
    command
        .current_dir(dir)
        .env("IMGPACK_CACHE_DIR", dir.join("cache"))
        .env_remove("IMGPACK_REPO")
        .stdin(Stdio::null());
    command
}

/// Runs imgpack in `dir` with `args`; returns its one error line.
fn fails_in(dir: &Path, args: &[&str]) -> String {
    fails_with(imgpack_in(dir).args(args))
}

/// Runs `command`; returns its one error line.
fn fails_with(command: &mut Command) -> String {
    let args: Vec<String> = command
        .get_args()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    let output = command.output().unwrap();
    let err = stderr(&output);
    assert_eq!(output.status.code(), Some(1), "{args:?}: {err}");
    assert!(!err.contains("panicked"), "{err}");
    let lines: Vec<&str> = err.trim_end().lines().collect();
    let last = lines.last().copied().unwrap_or_default().to_owned();
    assert!(last.starts_with("error: "), "{args:?}: {err}");
    assert!(
        last.len() < 450,
        "{args:?}: a {}-character line: {last}",
        last.len()
    );
    last
}

fn project() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    write_static_elf(&dir.path().join("app"), Arch::Amd64, b"bad inputs");
    dir
}

#[test]
fn flags_and_values_are_refused_with_the_reason() {
    let dir = project();
    let d = dir.path();
    fn with<'a>(extra: &[&'a str]) -> Vec<&'a str> {
        [&["build", "--binary", "linux/amd64=app"][..], extra].concat()
    }

    let err = fails_in(d, &with(&["--entrypoint", "", "-o", "oci:out"]));
    assert!(err.contains("names no program"), "{err}");
    let err = fails_in(d, &with(&["--user", "postgres", "-o", "oci:out"]));
    assert!(
        err.contains("no user 'postgres'") && err.contains("nonroot"),
        "{err}"
    );
    let err = fails_in(d, &with(&["--label", "a\nb=c", "-o", "oci:out"]));
    assert!(
        err.contains("control characters") && !err.contains("a\nb"),
        "{err}"
    );
    let err = fails_in(
        d,
        &[
            "build",
            "--platform",
            "linux/amd64,linux/x86_64",
            "-o",
            "oci:out",
        ],
    );
    assert!(err.contains("linux/amd64 twice"), "{err}");
    let err = fails_in(d, &["build", "--platform", "linux/arm/v9", "-o", "oci:out"]);
    assert!(err.contains("v5, v6, v7"), "{err}");
    for (flag, value) in [
        ("--retry-timeout", "-1"),
        ("--retry-timeout", "99999999999"),
        ("--chunk-size", "18446744073709551615"),
    ] {
        let output = imgpack()
            .current_dir(d)
            .args(with(&[
                "--push",
                "127.0.0.1:9/a/b:v1",
                &format!("{flag}={value}"),
            ]))
            .output()
            .unwrap();
        let err = stderr(&output);
        assert_eq!(output.status.code(), Some(2), "{flag} {value}: {err}");
        assert!(err.contains(flag) && !err.contains("panicked"), "{err}");
    }
    let err = fails_in(
        d,
        &with(&["--push", "Registry.example.com:abc/Team/App:v1"]),
    );
    assert!(err.contains("not a number"), "{err}");
    let err = fails_in(d, &with(&["--push", "registry.example.com/Team/App:v1"]));
    assert!(err.contains("lowercase (use team/app)"), "{err}");
    assert!(!d.join("out").exists(), "an output was written");
}

#[test]
fn a_fifo_or_pipe_as_binary_is_not_a_regular_file() {
    let dir = project();
    let fifo = dir.path().join("fifo");
    assert!(Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap()
        .success());
    let err = fails_in(
        dir.path(),
        &["build", "--binary", "linux/amd64=fifo", "-o", "oci:out"],
    );
    assert!(err.contains("not a regular file"), "{err}");
    let err = fails_in(
        dir.path(),
        &[
            "build",
            "--binary",
            "linux/amd64=/dev/stdin",
            "-o",
            "oci:out",
        ],
    );
    assert!(err.contains("not a regular file"), "{err}");
}

#[test]
fn docker_archive_paths_keep_their_colons() {
    let dir = project();
    let output = imgpack()
        .current_dir(dir.path())
        .args([
            "build",
            "--binary",
            "linux/amd64=app",
            "-o",
            "docker-archive:my:image.tar",
        ])
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(dir.path().join("my:image.tar").is_file());
    assert!(!dir.path().join("my").exists());
}

#[test]
fn resolve_of_a_directory_without_yaml_says_so() {
    let dir = project();
    std::fs::create_dir(dir.path().join("k8s")).unwrap();
    std::fs::write(dir.path().join("k8s/README.md"), "not yaml").unwrap();
    let err = fails_in(dir.path(), &["resolve", "-f", "k8s"]);
    assert!(
        err.contains("no .yaml, .yml or .json file in k8s") && err.contains("-R"),
        "{err}"
    );
}

#[test]
fn a_changed_layout_blob_is_named_before_the_push() {
    let dir = project();
    let d = dir.path();
    let output = imgpack()
        .current_dir(d)
        .args([
            "build",
            "--binary",
            "linux/amd64=app",
            "-o",
            "oci:layout:v1",
        ])
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", stderr(&output));
    // Change the largest blob (a layer) without changing its size.
    let blobs = d.join("layout/blobs/sha256");
    let largest = std::fs::read_dir(&blobs)
        .unwrap()
        .map(|e| e.unwrap().path())
        .max_by_key(|p| std::fs::metadata(p).unwrap().len())
        .unwrap();
    let mut bytes = std::fs::read(&largest).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    std::fs::write(&largest, &bytes).unwrap();
    let registry = imgpack_e2e::fake_registry::FakeRegistry::start(Default::default());
    let target = format!("{}/team/app:v1", registry.host());
    let err = fails_in(d, &["push", "oci:layout:v1", &target]);
    let name = largest.file_name().unwrap().to_str().unwrap();
    assert!(err.contains("is corrupt") && err.contains(name), "{err}");
    assert_eq!(
        registry.count("PUT", "/manifests/"),
        0,
        "a manifest was pushed"
    );
}

/// A plain HTTP server that answers every request 404, as a web server that is not a registry.
fn not_a_registry() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let host = listener.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let mut stream = stream;
            let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
            let mut buffer = [0u8; 4096];
            let _ = stream.read(&mut buffer);
            let _ = stream.write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 9\r\nConnection: close\r\n\r\nnot found");
        }
    });
    host
}

#[test]
fn a_web_server_that_is_not_a_registry_is_named_as_such() {
    let dir = project();
    let host = not_a_registry();
    let err = fails_in(
        dir.path(),
        &[
            "build",
            "--binary",
            "linux/amd64=app",
            "--push",
            &format!("{host}/team/app:v1"),
        ],
    );
    assert!(
        err.contains("is not a registry") && err.contains("404"),
        "{err}"
    );
    assert!(!err.contains("InvalidContentType"), "{err}");
}

#[test]
fn config_file_problems_point_at_their_line_before_any_work() {
    let dir = project();
    let d = dir.path();
    let cases = [
        (
            "name = \"x\"\nplatforms = [\"linux/amd64\"\ncompression = \"gzip\"\n",
            "imgpack.toml:2: key `platforms`",
        ),
        (
            "[[files]]\nsrc = \"missing\"\ndst = \"/a\"\n",
            "imgpack.toml:1: [[files]] entry 1: src 'missing' does not exist",
        ),
        (
            "name = \"x\"\n\n[[files]]\nsrc = \"app\"\ndst = \"/../etc/x\"\n",
            "imgpack.toml:3: [[files]] entry 1: dst '/../etc/x' contains '..'",
        ),
        (
            "[[files]]\nsrc = \"/etc/passwd\"\ndst = \"/etc/passwd\"\n",
            "outside the project directory",
        ),
    ];
    for (text, expected) in cases {
        std::fs::write(d.join("imgpack.toml"), text).unwrap();
        let err = fails_in(
            d,
            &["build", "--binary", "linux/amd64=app", "-o", "oci:out"],
        );
        assert!(err.contains(expected), "{text}: {err}");
    }
}

#[test]
fn an_interrupted_build_leaves_no_staging_directory() {
    let dir = project();
    let tmp = dir.path().join("tmp");
    std::fs::create_dir(&tmp).unwrap();
    // A staging directory a SIGKILLed run left behind a while ago: nobody holds its
    // lock, and it is older than the grace a new directory gets before its lock.
    std::fs::create_dir(tmp.join("imgpack-999999999-left")).unwrap();
    std::fs::File::open(tmp.join("imgpack-999999999-left"))
        .unwrap()
        .set_modified(std::time::SystemTime::now() - Duration::from_secs(3600))
        .unwrap();
    // A build slowed down by a large binary, interrupted with SIGTERM.
    let big = dir.path().join("big");
    write_static_elf(&big, Arch::Amd64, b"big");
    std::fs::File::options()
        .write(true)
        .open(&big)
        .unwrap()
        .set_len(4 << 30)
        .unwrap();
    let child = imgpack()
        .current_dir(dir.path())
        .env("TMPDIR", &tmp)
        .args(["build", "--binary", "linux/amd64=big", "-o", "oci:out"])
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let started = std::time::Instant::now();
    let staging_prefix = format!("imgpack-{}-", child.id());
    let has_staging = || {
        std::fs::read_dir(&tmp).unwrap().any(|e| {
            e.unwrap()
                .file_name()
                .to_string_lossy()
                .starts_with(&staging_prefix)
        })
    };
    while !has_staging() && started.elapsed() < Duration::from_secs(30) {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(has_staging(), "the build made no staging directory");
    assert!(
        !tmp.join("imgpack-999999999-left").exists(),
        "the killed run's directory is still there"
    );
    std::thread::sleep(Duration::from_millis(300));
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
    let output = child.wait_with_output().unwrap();
    assert!(!output.status.success());
    let left: Vec<_> = std::fs::read_dir(&tmp)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}

/// `command` bound by file modes even when run as root (CI is): without
/// CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH, as any other user is.
fn without_root_override(command: &mut Command) -> &mut Command {
    use std::os::unix::process::CommandExt;
    // SAFETY: prctl is async-signal-safe; nothing else runs between fork and exec.
    unsafe {
        command.pre_exec(|| {
            // Fails harmlessly for a user who is not root, whom the modes bind anyway.
            for capability in [1, 2] {
                libc::prctl(libc::PR_CAPBSET_DROP, capability, 0, 0, 0);
            }
            Ok(())
        })
    }
}

fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

#[test]
fn a_file_error_gives_the_os_error_once_and_advice_that_fits_it() {
    let dir = project();
    let d = dir.path();
    let err = fails_in(
        d,
        &["build", "--binary", "linux/amd64=missing", "-o", "oci:out"],
    );
    assert_eq!(err.matches("No such file or directory").count(), 1, "{err}");
    assert!(err.contains("check the path"), "{err}");

    let denied = |err: &str| {
        assert_eq!(err.matches("Permission denied").count(), 1, "{err}");
        assert!(
            !err.contains("check the path") && !err.contains("does not exist"),
            "{err}"
        );
    };
    set_mode(&d.join("app"), 0o000);
    denied(&fails_with(without_root_override(imgpack_in(d).args([
        "build",
        "--binary",
        "linux/amd64=app",
        "-o",
        "oci:out",
    ]))));
    set_mode(&d.join("app"), 0o755);
    std::fs::write(d.join("ca.pem"), "-----BEGIN CERTIFICATE-----\n").unwrap();
    set_mode(&d.join("ca.pem"), 0o000);
    denied(&fails_with(without_root_override(imgpack_in(d).args([
        "build",
        "--binary",
        "linux/amd64=app",
        "--ca-certs",
        "ca.pem",
        "-o",
        "oci:out",
    ]))));
    std::fs::create_dir(d.join("locked")).unwrap();
    std::fs::write(d.join("locked/file"), "x").unwrap();
    set_mode(&d.join("locked"), 0o000);
    std::fs::write(
        d.join("imgpack.toml"),
        "[[files]]\nsrc = \"locked/file\"\ndst = \"/file\"\n",
    )
    .unwrap();
    denied(&fails_with(without_root_override(imgpack_in(d).args([
        "build",
        "--binary",
        "linux/amd64=app",
        "-o",
        "oci:out",
    ]))));
    set_mode(&d.join("locked"), 0o755);
    assert!(!d.join("out").exists(), "an output was written");
}

#[test]
fn temporary_names_stay_out_of_messages_and_resolve_suggests_only_its_own_flags() {
    let dir = project();
    let d = dir.path();
    let locked = d.join("locked-tmp");
    std::fs::create_dir(&locked).unwrap();
    set_mode(&locked, 0o555);
    let err = fails_with(without_root_override(
        imgpack_in(d).env("IMGPACK_TMPDIR", &locked).args([
            "build",
            "--binary",
            "linux/amd64=app",
            "-o",
            "oci:out",
        ]),
    ));
    assert!(
        err.contains("cannot create a temporary directory in") && err.contains("Permission denied"),
        "{err}"
    );
    assert!(
        !err.contains("at path") && !err.contains("locked-tmp/imgpack-"),
        "{err}"
    );

    // resolve builds from source only: no --tmpdir, --binary or --lang to suggest.
    std::fs::create_dir(d.join("empty")).unwrap();
    std::fs::write(d.join("deploy.yaml"), "image: imgpack://./empty\n").unwrap();
    let resolve = |tmpdir: &Path| {
        fails_with(without_root_override(
            imgpack_in(d)
                .env("IMGPACK_REPO", "127.0.0.1:9/team")
                .env("IMGPACK_TMPDIR", tmpdir)
                .args(["resolve", "-f", "deploy.yaml"]),
        ))
    };
    let err = resolve(&locked);
    assert!(
        err.contains("temporary directory") && !err.contains("--tmpdir"),
        "{err}"
    );
    let err = resolve(d);
    assert!(
        err.contains("neither Go files nor a Cargo.toml")
            && !err.contains("--binary")
            && !err.contains("--lang"),
        "{err}"
    );
    let err = fails_with(
        imgpack_in(d)
            .env("IMGPACK_REPO", "127.0.0.1:9/team")
            .env("IMGPACK_CONFIG", "missing.toml")
            .args(["resolve", "-f", "deploy.yaml"]),
    );
    assert!(
        err.contains("check IMGPACK_CONFIG") && !err.contains("--config"),
        "{err}"
    );
    set_mode(&locked, 0o755);
}

#[test]
fn a_base_the_registry_lacks_is_named_once() {
    let dir = project();
    let registry = imgpack_e2e::fake_registry::FakeRegistry::start(Default::default());
    let digest = format!("sha256:{}", "0".repeat(64));
    for base in [
        format!("{}/team/base@{digest}", registry.host()),
        format!("{}/team/base:missing", registry.host()),
    ] {
        let err = fails_in(
            dir.path(),
            &[
                "build",
                "--binary",
                "linux/amd64=app",
                "--base",
                &base,
                "-o",
                "oci:out",
            ],
        );
        assert!(err.contains(&base) && err.contains("404"), "{err}");
        let reference = base.rsplit(['@', ':']).next().unwrap();
        assert_eq!(err.matches(reference).count(), 1, "{err}");
    }
    assert!(!dir.path().join("out").exists(), "an output was written");
}

#[test]
fn a_login_that_cannot_store_names_the_directory_not_a_temporary_file() {
    let dir = project();
    let registry = imgpack_e2e::fake_registry::FakeRegistry::start(Default::default());
    let config = dir.path().join("docker");
    std::fs::create_dir(&config).unwrap();
    set_mode(&config, 0o555);
    let mut login = imgpack_in(dir.path());
    login
        .env("DOCKER_CONFIG", &config)
        .args(["login", &registry.host(), "-u", "ci", "--password-stdin"])
        .stdin(std::fs::File::open(write_password(dir.path())).unwrap());
    let err = fails_with(without_root_override(&mut login));
    set_mode(&config, 0o755);
    assert!(
        err.contains(&config.display().to_string()) && err.contains("Permission denied"),
        "{err}"
    );
    assert!(
        !err.contains(".imgpack-") && !err.contains("at path"),
        "{err}"
    );
    assert!(!config.join("config.json").exists());
}

fn write_password(dir: &Path) -> std::path::PathBuf {
    let path = dir.join("password");
    std::fs::write(&path, "secret\n").unwrap();
    path
}

#[test]
fn a_refused_login_says_where_the_password_came_from_and_not_to_log_in() {
    let dir = project();
    let registry =
        imgpack_e2e::fake_registry::FakeRegistry::start(imgpack_e2e::fake_registry::Hostility {
            basic_auth: Some(("ci".into(), "right".into())),
            ..Default::default()
        });
    let err = fails_with(
        imgpack_in(dir.path())
            .env("DOCKER_CONFIG", dir.path().join("docker"))
            .args(["login", &registry.host(), "-u", "ci", "--password-stdin"])
            .stdin(std::fs::File::open(write_password(dir.path())).unwrap()),
    );
    assert!(
        err.contains("401")
            && err.contains("from standard input")
            && !err.contains("command line")
            && !err.contains("run `imgpack login"),
        "{err}"
    );
    assert!(
        !err.contains("secret"),
        "the password is in the message: {err}"
    );
    assert!(!dir.path().join("docker/config.json").exists());
}

// Issue 19, item 8: the smaller defects.

/// A `.go.buildinfo` section as Go ≥ 1.18 writes it: magic, flags, then the Go version and
/// the module text (framed by 16-byte sentinels) as varint-prefixed strings.
fn go_buildinfo(modinfo: &str) -> Vec<u8> {
    let mut blob = b"\xff Go buildinf:".to_vec();
    blob.extend_from_slice(&[8, 2]);
    blob.resize(32, 0);
    let framed = [&[0x30u8; 16][..], modinfo.as_bytes(), &[0xf9; 16]].concat();
    for string in [&b"go1.22.0"[..], &framed] {
        let mut len = string.len();
        while len >= 0x80 {
            blob.push((len as u8 & 0x7f) | 0x80);
            len >>= 7;
        }
        blob.push(len as u8);
        blob.extend_from_slice(string);
    }
    blob
}

/// A `.dep-v0` section: cargo auditable's zlib-compressed JSON.
fn dep_v0(json: &serde_json::Value) -> Vec<u8> {
    let mut encoder = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(json.to_string().as_bytes()).unwrap();
    encoder.finish().unwrap()
}

#[test]
fn crafted_build_information_in_a_binary_gets_one_printable_line() {
    let dir = project();
    let d = dir.path();
    let escape = "\u{1b}]0;owned\u{7}\u{1b}[2J";
    let go = ElfBuilder::new(Arch::Amd64)
        .payload(b"go".to_vec())
        .section(
            ".go.buildinfo",
            go_buildinfo(&format!(
                "path\texample.com/app\nmod\texample.com/app\t(devel)\t\n{escape}\tx\n"
            )),
        );
    // The root lists itself as its own dependency: once a panic (an index out of range).
    let rust = ElfBuilder::new(Arch::Amd64).payload(b"rust".to_vec()).section(
        ".dep-v0",
        dep_v0(&serde_json::json!({"packages": [
            {"name": "app", "version": "0.1.0", "source": "local", "dependencies": [0], "root": true},
        ]})),
    );
    for (name, binary, expected) in [
        (
            "go-app",
            go,
            "unexpected build information line '\\u{1b}]0;owned\\u{7}\\u{1b}[2J",
        ),
        ("rust-app", rust, "depends on the root package app 0.1.0"),
    ] {
        std::fs::write(d.join(name), binary.build()).unwrap();
        let output = imgpack_in(d)
            .args(["build", "-q", "--binary", &format!("linux/amd64={name}")])
            .args(["-o", &format!("oci:out-{name}:v1")])
            .output()
            .unwrap();
        let err = error_line(&output);
        assert!(
            !stderr(&output).chars().any(|c| c.is_control() && c != '\n'),
            "{name}: {:?}",
            stderr(&output)
        );
        assert!(
            err.contains(expected) && err.contains("--sbom none"),
            "{name}: {err}"
        );
        assert!(
            !d.join(format!("out-{name}")).exists(),
            "{name}: an output was written"
        );
    }
}

/// `project()`'s image in oci:layout:v1, with an SBOM attached; returns index.json's path.
fn layout_with_sbom(dir: &Path) -> std::path::PathBuf {
    let output = imgpack_in(dir)
        .args([
            "build",
            "-q",
            "--binary",
            "linux/amd64=app",
            "-o",
            "oci:layout:v1",
        ])
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", stderr(&output));
    dir.join("layout/index.json")
}

#[test]
fn two_index_entries_with_one_tag_get_one_clear_line() {
    let dir = project();
    let d = dir.path();
    let index_path = layout_with_sbom(d);
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&index_path).unwrap()).unwrap();
    let entries = index["manifests"].as_array().unwrap();
    let image = entries
        .iter()
        .find(|e| e["annotations"]["org.opencontainers.image.ref.name"] == "v1")
        .unwrap()
        .clone();
    let mut sbom = entries
        .iter()
        .find(|e| e["artifactType"].is_string())
        .expect("an SBOM entry")
        .clone();
    sbom["annotations"] = serde_json::json!({"org.opencontainers.image.ref.name": "v1"});
    let mut other = image.clone();
    other["digest"] = serde_json::json!(format!("sha256:{}", "0".repeat(64)));
    // Image first: the other was silently ignored; SBOM first: "bad platform '/'".
    for (case, first, second) in [
        ("image first", &image, &other),
        ("SBOM first", &sbom, &image),
    ] {
        let mut crafted = index.clone();
        crafted["manifests"] = serde_json::json!([first, second]);
        std::fs::write(&index_path, crafted.to_string()).unwrap();
        let err = fails_in(
            d,
            &["push", "-q", "oci:layout:v1", "127.0.0.1:1/team/app:v1"],
        );
        assert!(
            err.contains("gives the tag 'v1' to 2 manifests")
                && err.contains(first["digest"].as_str().unwrap())
                && err.contains(second["digest"].as_str().unwrap()),
            "{case}: {err}"
        );
        assert!(!err.contains("bad platform"), "{case}: {err}");
    }
}

#[test]
fn an_unusable_cache_directory_names_the_variable_and_no_cache() {
    let dir = project();
    let d = dir.path();
    // A file where the cache directory should be.
    std::fs::write(d.join("not-a-dir"), "x").unwrap();
    let build = [
        "build",
        "-q",
        "--binary",
        "linux/amd64=app",
        "-o",
        "oci:out:v1",
    ];
    let err = fails_with(
        imgpack_in(d)
            .env("IMGPACK_CACHE_DIR", d.join("not-a-dir"))
            .args(build),
    );
    assert!(
        err.contains("IMGPACK_CACHE_DIR") && err.contains("--no-cache"),
        "{err}"
    );
    assert!(
        err.contains(&d.join("not-a-dir").display().to_string()),
        "{err}"
    );
    assert!(!d.join("out").exists(), "an output was written");
    let output = imgpack_in(d)
        .env("IMGPACK_CACHE_DIR", d.join("not-a-dir"))
        .args(build)
        .arg("--no-cache")
        .output()
        .unwrap();
    assert!(output.status.success(), "--no-cache: {}", stderr(&output));
}

#[test]
fn keygen_with_a_directory_prefix_writes_the_default_name_there() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::create_dir(d.join("keys")).unwrap();
    let output = imgpack_in(d)
        .args(["keygen", "--output-key-prefix", "keys/"])
        .env("COSIGN_PASSWORD", "")
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", stderr(&output));
    let mut written: Vec<String> = std::fs::read_dir(d.join("keys"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    written.sort();
    // Not the hidden keys/.key and keys/.pub.
    assert_eq!(written, ["cosign.key", "cosign.pub"]);
    assert!(
        stderr(&output).contains("keys/cosign.key"),
        "{}",
        stderr(&output)
    );
}

#[test]
fn image_refs_are_replaced_whole_never_rewritten_in_place() {
    let dir = project();
    let d = dir.path();
    layout_with_sbom(d);
    let registry = imgpack_e2e::fake_registry::FakeRegistry::start(Default::default());
    let refs = d.join("refs/image.txt");
    std::fs::create_dir(d.join("refs")).unwrap();
    std::fs::write(&refs, "old\n").unwrap();
    // A second name for the old file: a rewrite in place would show through it.
    std::fs::hard_link(&refs, d.join("old.txt")).unwrap();
    let target = format!("{}/team/app:v1", registry.host());
    let output = imgpack_in(d)
        .args([
            "push",
            "-q",
            "oci:layout:v1",
            &target,
            "--image-refs",
            "refs/image.txt",
        ])
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", stderr(&output));
    let printed = String::from_utf8(output.stdout).unwrap();
    assert_eq!(std::fs::read_to_string(&refs).unwrap(), printed);
    assert_eq!(std::fs::read_to_string(d.join("old.txt")).unwrap(), "old\n");
    let names: Vec<_> = std::fs::read_dir(d.join("refs")).unwrap().collect();
    assert_eq!(names.len(), 1, "a temporary file was left: {names:?}");
}
