//! Base images: a base pushed to the registry on 127.0.0.1 and used with
//! --base (config merged, layers mounted on push, cached for an offline
//! rebuild), and a cgo binary on a base that has glibc's loader.

use std::path::Path;
use std::process::Command;

use imgpack_e2e::proxy::Proxy;
use imgpack_e2e::registry::{Registry, Setup};
use imgpack_e2e::runtime::{bundle_config, prepare_for_runc, runc_allowed, unpack};
use imgpack_e2e::*;
use serde_json::Value;

/// A base image with glibc's loader and libc (from this machine), a user and
/// an environment of its own, built by imgpack from an imgpack.toml.
fn push_glibc_base(dir: &Path, host: &str) -> Option<String> {
    let probe = probe_binary(Arch::Amd64)?;
    let base_dir = dir.join("base");
    std::fs::create_dir_all(&base_dir).unwrap();
    std::fs::write(
        base_dir.join("imgpack.toml"),
        r#"
user = "1000:1000"
workdir = "/data"
env = { BASE_VAR = "from-the-base" }
labels = { base = "glibc" }

[[files]]
src = "/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2"
allow_outside_project = true
dst = "/lib/x86_64-linux-gnu/"

[[files]]
src = "/lib/x86_64-linux-gnu/libc.so.6"
allow_outside_project = true
dst = "/lib/x86_64-linux-gnu/"

[[files]]
src = "/lib64/ld-linux-x86-64.so.2"
allow_outside_project = true
dst = "/lib64/"
"#,
    )
    .unwrap();
    let target = format!("{host}/base/glibc:v1");
    let output = run_expect(
        imgpack()
            .current_dir(&base_dir)
            .args([
                "build",
                "-q",
                "--name",
                "base-probe",
                "--push",
                &target,
                "--binary",
            ])
            .arg(format!("linux/amd64={}", probe.display())),
        true,
    );
    Some(String::from_utf8_lossy(&output.stdout).trim().to_owned())
}

fn manifest_and_config(layout: &Layout, digest: &str) -> (Value, Value) {
    let manifest = layout.json(digest);
    let config = layout.json(manifest["config"]["digest"].as_str().unwrap());
    (manifest, config)
}

#[test]
fn a_base_is_merged_mounted_on_push_and_cached_for_offline_rebuilds() {
    if !have_tool("skopeo") {
        return;
    }
    let Some(mut registry) = Registry::start(Setup::Plain) else {
        return;
    };
    let proxy = Proxy::start(&registry.host());
    let host = proxy.host();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let Some(base_ref) = push_glibc_base(d, &host) else {
        return;
    };
    let base_digest = base_ref.split('@').nth(1).unwrap().to_owned();
    write_static_elf(&d.join("api"), Arch::Amd64, b"app code");

    // Build on the base and push to another repository: base layers are mounted, not uploaded.
    proxy.reset_counts();
    let output = run_expect(
        imgpack().current_dir(d).args([
            "build",
            "-q",
            "--binary",
            "linux/amd64=api",
            "--base",
            &format!("{host}/base/glibc:v1"),
            "--env",
            "APP_VAR=1",
            "--output",
            "oci:layout:v1",
            "--push",
            &format!("{host}/team/api:v1"),
            // Uploads are counted below; attachments are tests/tests/attest.rs's.
            "--sbom",
            "none",
            "--provenance",
            "false",
        ]),
        true,
    );
    let layout = Layout::new(d.join("layout"));
    let digest = layout.entry("v1")["digest"].as_str().unwrap().to_owned();
    assert!(String::from_utf8_lossy(&output.stdout)
        .trim()
        .ends_with(&digest));
    let (manifest, config) = manifest_and_config(&layout, &digest);
    let layers = manifest["layers"].as_array().unwrap();
    // Base: rootfs, certs, tzdata, files (3 entries in one layer), app; ours: app only.
    assert_eq!(layers.len(), 6, "{manifest}");
    assert_eq!(proxy.count("POST", "mount="), 5, "{:?}", proxy.requests());
    let uploaded = proxy.count("PUT", "digest=");
    assert_eq!(
        uploaded,
        2,
        "only the app layer and the config go up: {:?}",
        proxy.requests()
    );
    assert_eq!(
        manifest["annotations"]["org.opencontainers.image.base.name"],
        format!("{host}/base/glibc:v1")
    );
    assert_eq!(
        manifest["annotations"]["org.opencontainers.image.base.digest"],
        base_digest
    );
    let c = &config["config"];
    assert_eq!(c["User"], "1000:1000", "the base's user");
    assert_eq!(c["WorkingDir"], "/data");
    assert_eq!(c["Entrypoint"], serde_json::json!(["/app/api"]));
    assert_eq!(c["Labels"]["base"], "glibc");
    let env = strings(&c["Env"]);
    assert!(
        env.contains(&"BASE_VAR=from-the-base") && env.contains(&"APP_VAR=1"),
        "{env:?}"
    );
    assert_eq!(
        env.iter().filter(|e| e.starts_with("PATH=")).count(),
        1,
        "{env:?}"
    );
    assert_eq!(config["rootfs"]["diff_ids"].as_array().unwrap().len(), 6);
    assert_eq!(config["history"].as_array().unwrap().len(), 6);

    // A platform the base lacks is an error listing what it has.
    write_static_elf(&d.join("api-arm64"), Arch::Arm64, b"app code");
    let output = run_expect(
        imgpack().current_dir(d).args([
            "build",
            "--binary",
            "linux/arm64=api-arm64",
            "--base",
            &format!("{host}/base/glibc:v1"),
            "--output",
            "oci:x",
        ]),
        false,
    );
    assert!(
        stderr(&output).contains("no linux/arm64 in the base image")
            && stderr(&output).contains("(it has linux/amd64)"),
        "{}",
        stderr(&output)
    );

    // The base went into this test's own cache (never one another test or the home directory
    // filled), so what the offline rebuild below finds was cached by this very test.
    let cache = test_cache_dir();
    let cached_base = cache
        .join("base/blobs/sha256")
        .join(base_digest.trim_start_matches("sha256:"));
    assert!(
        cached_base.is_file(),
        "the base is not in {}",
        cache.display()
    );
    assert!(cache.join("blob-locations.json").is_file());

    // With the registry gone, the tag and the pinned digest still build from the cache.
    registry.stop();
    for base in [
        format!("{host}/base/glibc:v1"),
        format!("{host}/base/glibc@{base_digest}"),
    ] {
        let output = run_expect(
            imgpack().current_dir(d).args([
                "build",
                "-q",
                "--binary",
                "linux/amd64=api",
                "--base",
                &base,
                "--env",
                "APP_VAR=1",
                "--output",
                "oci:offline:v1",
            ]),
            true,
        );
        let offline = Layout::new(d.join("offline"));
        offline.verified_blobs();
        let (rebuilt, _) = manifest_and_config(&offline, &printed_digest(&output));
        assert_eq!(rebuilt["layers"], manifest["layers"], "{base}");
    }
}

#[test]
fn a_cgo_binary_runs_on_a_base_with_its_libc_and_is_refused_without() {
    for tool in ["go", "skopeo", "umoci", "runc"] {
        if !have_tool(tool) {
            return;
        }
    }
    let Some(registry) = Registry::start(Setup::Plain) else {
        return;
    };
    let host = registry.host();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let Some(_) = push_glibc_base(d, &host) else {
        return;
    };
    let app = d.join("cgo");
    std::fs::create_dir_all(&app).unwrap();
    std::fs::write(app.join("go.mod"), "module example.com/cgo\n\ngo 1.19\n").unwrap();
    std::fs::write(
        app.join("main.go"),
        "package main\n\n// #include <stdlib.h>\n// static int answer(void) { return abs(-42); }\nimport \"C\"\n\nimport \"fmt\"\n\nfunc main() { fmt.Printf(\"cgo says %d\\n\", int(C.answer())) }\n",
    )
    .unwrap();
    let build = |extra: &[&str]| {
        let mut command = imgpack();
        command
            .arg("build")
            .arg(&app)
            .args(["--platform", "linux/amd64", "--output", "oci:layout:v1"])
            .args(extra)
            .current_dir(d)
            .env("CGO_ENABLED", "1")
            .env("GOFLAGS", "-mod=mod");
        command.output().unwrap()
    };

    let refused = build(&[]);
    assert!(!refused.status.success());
    assert!(
        stderr(&refused).contains("dynamically linked"),
        "{}",
        stderr(&refused)
    );

    let built = build(&["--base", &format!("{host}/base/glibc:v1")]);
    assert!(built.status.success(), "{}", stderr(&built));
    assert!(
        stderr(&built).contains("the base provides /lib64/ld-linux-x86-64.so.2"),
        "{}",
        stderr(&built)
    );

    let bundle = unpack(
        &format!("oci:{}:v1", d.join("layout").display()),
        &[],
        "amd64",
        d,
    );
    assert_eq!(bundle_config(&bundle)["process"]["user"]["uid"], 1000);
    if !runc_allowed() {
        return;
    }
    prepare_for_runc(&bundle, false, &[]);
    let output = run_expect(
        Command::new("runc")
            .arg("--root")
            .arg(d.join("runc"))
            .args(["run", "--bundle"])
            .arg(&bundle)
            .arg(format!("e2e-cgo-{}", std::process::id()))
            .stdin(std::process::Stdio::null()),
        true,
    );
    assert_eq!(
        String::from_utf8_lossy(&output.stdout).trim(),
        "cgo says 42"
    );
}

/// A base whose /etc/passwd (from [[files]], over imgpack's own) has root and postgres.
fn push_base_with_users(dir: &Path, host: &str) -> String {
    let base_dir = dir.join("users-base");
    std::fs::create_dir_all(&base_dir).unwrap();
    write_static_elf(&base_dir.join("db"), Arch::Amd64, b"base with users");
    std::fs::write(
        base_dir.join("passwd"),
        "root:x:0:0:root:/root:/sbin/nologin\npostgres:x:999:999::/var/lib/postgresql:/sbin/nologin\n",
    )
    .unwrap();
    std::fs::write(
        base_dir.join("imgpack.toml"),
        "[[files]]\nsrc = \"passwd\"\ndst = \"/etc/passwd\"\n",
    )
    .unwrap();
    let target = format!("{host}/base/users:v1");
    run_expect(
        imgpack().current_dir(&base_dir).args([
            "build",
            "-q",
            "--binary",
            "linux/amd64=db",
            "--push",
            &target,
        ]),
        true,
    );
    target
}

#[test]
fn a_user_name_is_checked_against_the_base_images_own_passwd() {
    let Some(registry) = Registry::start(Setup::Plain) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let base = push_base_with_users(d, &registry.host());
    write_static_elf(&d.join("api"), Arch::Amd64, b"app code");
    let build = |user: &str, layout: &str| {
        imgpack()
            .current_dir(d)
            .args([
                "build",
                "-q",
                "--binary",
                "linux/amd64=api",
                "--base",
                &base,
            ])
            .args(["--user", user, "--output", &format!("oci:{layout}:v1")])
            .output()
            .unwrap()
    };

    // A name the base has, and numeric IDs, which need no lookup.
    for (user, layout) in [("postgres", "named"), ("1234:1234", "numeric")] {
        let output = build(user, layout);
        assert!(output.status.success(), "{user}: {}", stderr(&output));
        let layout = Layout::new(d.join(layout));
        let (_, config) = manifest_and_config(&layout, &printed_digest(&output));
        assert_eq!(config["config"]["User"], user);
    }

    // imgpack's own rootfs has nonroot, but this base's /etc/passwd does not.
    for (user, expected) in [
        (
            "nonroot",
            "has no user 'nonroot' (it has root and postgres)",
        ),
        ("mysql", "has no user 'mysql' (it has root and postgres)"),
        (
            "postgres:dba",
            "has no group 'dba' (it has root, nonroot and nobody)",
        ),
    ] {
        let output = build(user, "refused");
        let err = stderr(&output);
        assert_eq!(output.status.code(), Some(1), "{user}: {err}");
        let last = err.trim_end().lines().last().unwrap_or_default();
        assert!(
            last.starts_with("error: --user ") && last.contains(expected) && last.contains(&base),
            "{user}: {err}"
        );
        assert!(!d.join("refused").exists(), "{user}: an output was written");
    }

    // [[files]] that write /etc bring their own users: imgpack does not guess.
    std::fs::write(
        d.join("passwd"),
        "mysql:x:27:27::/var/lib/mysql:/sbin/nologin\n",
    )
    .unwrap();
    std::fs::write(
        d.join("imgpack.toml"),
        "[[files]]\nsrc = \"passwd\"\ndst = \"/etc/passwd\"\n",
    )
    .unwrap();
    let output = build("mysql", "own-passwd");
    assert!(output.status.success(), "{}", stderr(&output));
}

#[test]
fn a_cached_base_whose_registry_refuses_connections_is_used_within_seconds() {
    // The registry itself, no proxy: once it is stopped, its port refuses connections.
    let Some(mut registry) = Registry::start(Setup::Plain) else {
        return;
    };
    let host = registry.host();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write_static_elf(&d.join("base-app"), Arch::Amd64, b"a small base");
    write_static_elf(&d.join("api"), Arch::Amd64, b"app on the small base");
    let base = format!("{host}/base/small:v1");
    run_expect(
        imgpack()
            .current_dir(d)
            .args(["build", "-q", "--binary", "linux/amd64=base-app"])
            .args(["--push", &base, "--sbom", "none", "--provenance", "false"]),
        true,
    );
    let build_on_base = |output: &str| {
        let mut command = imgpack();
        command
            .current_dir(d)
            .args(["build", "--binary", "linux/amd64=api", "--base", &base])
            .args(["--output", output]);
        command
    };
    let online = run_expect(&mut build_on_base("oci:online:v1"), true);

    registry.stop();
    let started = std::time::Instant::now();
    let offline = run_expect(&mut build_on_base("oci:offline:v1"), true);
    let took = started.elapsed();
    let log = stderr(&offline);
    assert!(
        log.contains("connection refused") && log.contains("using the cached sha256:"),
        "{log}"
    );
    assert_eq!(printed_digest(&offline), printed_digest(&online));
    // A loose bound for a loaded machine: the push's retry budget took ~37 s here.
    assert!(
        took < std::time::Duration::from_secs(15),
        "the offline rebuild took {took:?}:\n{log}"
    );
}
