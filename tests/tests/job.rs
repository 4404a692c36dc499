//! What a Kubernetes Job running imgpack does, on one machine: imgpack's own
//! image (built by `cargo xtask image`, imgpack packing itself) runs under
//! runc as uid 65532 with a read-only root file system, only /tmp writable,
//! credentials from a mounted docker config directory, and pushes an image
//! built from a prebuilt binary to a registry on 127.0.0.1. The image holds
//! linux/amd64 and linux/arm64: the arm64 imgpack from it, under qemu-user
//! (an arm64 node), pushes an arm64 image with the same credentials.

use std::path::Path;
use std::process::Command;

use imgpack_e2e::registry::{Registry, Setup};
use imgpack_e2e::runtime::{prepare_for_runc, runc_allowed, unpack};
use imgpack_e2e::*;
use serde_json::{json, Value};

#[test]
fn imgpack_runs_as_a_rootless_read_only_job_and_pushes() {
    // python3 runs zig (PyPI ziglang), the C compiler of imgpack's musl builds.
    for tool in ["skopeo", "umoci", "runc", "python3", "qemu-aarch64-static"] {
        if !have_tool(tool) {
            return;
        }
    }
    if !runc_allowed() {
        return;
    }
    let password = "job-s3cret";
    let Some(registry) = Registry::start(Setup::Basic {
        user: "builder".into(),
        password: password.into(),
    }) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();

    // imgpack's own image, as `cargo xtask image` makes it. The dev-static profile keeps
    // the test short (no LTO); `cargo xtask ci` has built both musl targets in it (dist).
    let image_layout = d.join("imgpack-image");
    let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .current_dir(workspace_root())
        .args([
            "xtask",
            "image",
            "--profile",
            "dev-static",
            "-q",
            "--output",
        ])
        .arg(format!("oci:{}:job", image_layout.display()))
        .status()
        .unwrap();
    assert!(status.success(), "cargo xtask image failed");
    let bundle = unpack(
        &format!("oci:{}:job", image_layout.display()),
        &[],
        "amd64",
        d,
    );

    // What the Job mounts: a docker-config Secret and the binary to pack.
    let secret = d.join("secret");
    std::fs::create_dir(&secret).unwrap();
    use base64::Engine as _;
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("builder:{password}"));
    std::fs::write(
        secret.join("config.json"),
        json!({"auths": {registry.host(): {"auth": auth}}}).to_string(),
    )
    .unwrap();
    let input = d.join("input");
    std::fs::create_dir(&input).unwrap();
    write_static_elf(&input.join("app"), Arch::Amd64, b"the job's app");
    // Secrets are mounted readable by the pod's user (defaultMode / fsGroup).
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(
        secret.join("config.json"),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();

    let target = format!("{}/team/app:v1", registry.host());
    let mut config = prepare_for_runc(
        &bundle,
        true,
        &[
            ("DOCKER_CONFIG", "/var/run/secrets/registry"),
            ("IMGPACK_TMPDIR", "/tmp"),
            ("IMGPACK_CACHE_DIR", "/tmp/cache"),
        ],
    );
    assert_eq!(
        config["process"]["user"]["uid"], 65532,
        "the image runs as nonroot"
    );
    config["root"]["readonly"] = Value::Bool(true);
    // Not quiet: every progress line is searched for the password below.
    config["process"]["args"] = json!([
        "/app/imgpack",
        "build",
        "--binary",
        "linux/amd64=/in/app",
        "--push",
        target
    ]);
    let mounts = config["mounts"].as_array_mut().unwrap();
    mounts.retain(|m| m["destination"] != "/tmp");
    mounts.push(json!({"destination": "/tmp", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "nodev", "mode=1777"]}));
    mounts.push(json!({"destination": "/var/run/secrets/registry", "type": "bind", "source": secret, "options": ["rbind", "ro"]}));
    mounts.push(
        json!({"destination": "/in", "type": "bind", "source": input, "options": ["rbind", "ro"]}),
    );
    std::fs::write(
        bundle.join("config.json"),
        serde_json::to_vec(&config).unwrap(),
    )
    .unwrap();

    let output = Command::new("runc")
        .arg("--root")
        .arg(d.join("runc"))
        .args(["run", "--bundle"])
        .arg(&bundle)
        .arg(format!("e2e-job-{}", std::process::id()))
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).trim().to_owned();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(
        output.status.success(),
        "the job failed:\n{stdout}\n{stderr}"
    );
    assert!(
        stderr.contains("tagged"),
        "the job printed no progress:\n{stderr}"
    );
    assert_no_secrets("the job", &output, &secret_forms("builder", password));
    let prefix = format!("{}/team/app@sha256:", registry.host());
    assert!(stdout.starts_with(&prefix), "{stdout}");

    let raw = Command::new("skopeo")
        .args([
            "inspect",
            "--raw",
            "--tls-verify=false",
            "--creds",
            &format!("builder:{password}"),
        ])
        .arg(format!("docker://{target}"))
        .output()
        .unwrap();
    assert!(
        raw.status.success(),
        "{}",
        String::from_utf8_lossy(&raw.stderr)
    );
    assert_eq!(
        format!(
            "{}@{}",
            prefix.trim_end_matches("@sha256:"),
            imgpack_blob::Digest::of_bytes(&raw.stdout)
        ),
        stdout
    );

    let image = format!("oci:{}:job", image_layout.display());
    assert_eq!(
        platforms_of(&image),
        ["linux/amd64", "linux/arm64"],
        "imgpack's image runs on amd64 and arm64 nodes"
    );
    let output = arm64_imgpack_pushes_under_qemu(&image, &secret, &input, &registry, d);
    assert_no_secrets("the arm64 job", &output, &secret_forms("builder", password));
    let pushed = String::from_utf8_lossy(&output.stdout).trim().to_owned();
    assert_eq!(
        pushed,
        format!(
            "{}/team/app@{}",
            registry.host(),
            pushed_digest(&format!("{}/team/app:arm64", registry.host()), password)
        )
    );
}

/// The platforms of an image index, as skopeo reads them.
fn platforms_of(image: &str) -> Vec<String> {
    let raw = run_expect(
        Command::new("skopeo").args(["inspect", "--raw", image]),
        true,
    );
    let index: Value = serde_json::from_slice(&raw.stdout).unwrap();
    index["manifests"]
        .as_array()
        .unwrap_or_else(|| panic!("not an index: {index}"))
        .iter()
        .map(|m| {
            format!(
                "{}/{}",
                m["platform"]["os"].as_str().unwrap(),
                m["platform"]["architecture"].as_str().unwrap()
            )
        })
        .collect()
}

/// Runs the arm64 imgpack of `image` under qemu-user with the job's
/// credentials: it packs an arm64 binary and pushes it to team/app:arm64 over
/// plain HTTP. `-L` puts the image's files first; the job reads host paths
/// (the secret, the input) that the image lacks, which is why this is not
/// the isolated arm64 runner of the service tests. Returns imgpack's output.
fn arm64_imgpack_pushes_under_qemu(
    image: &str,
    secret: &Path,
    input: &Path,
    registry: &Registry,
    d: &Path,
) -> std::process::Output {
    let bundle = unpack(image, &[], "arm64", d);
    let rootfs = bundle.join("rootfs");
    write_static_elf(
        &input.join("app-arm64"),
        Arch::Arm64,
        b"the arm64 job's app",
    );
    let tmp = d.join("qemu-tmp");
    std::fs::create_dir(&tmp).unwrap();
    let output = Command::new("qemu-aarch64-static")
        .arg("-L")
        .arg(&rootfs)
        .arg(rootfs.join("app/imgpack"))
        .args(["build", "-q", "--binary"])
        .arg(format!("linux/arm64={}", input.join("app-arm64").display()))
        .arg("--push")
        .arg(format!("{}/team/app:arm64", registry.host()))
        .env_clear()
        .env("DOCKER_CONFIG", secret)
        .env("IMGPACK_TMPDIR", &tmp)
        .env("IMGPACK_CACHE_DIR", tmp.join("cache"))
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "the arm64 imgpack failed under qemu:\n{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// The digest of the manifest at `reference`, read back with skopeo.
fn pushed_digest(reference: &str, password: &str) -> imgpack_blob::Digest {
    let raw = run_expect(
        Command::new("skopeo")
            .args(["inspect", "--raw", "--tls-verify=false", "--creds"])
            .arg(format!("builder:{password}"))
            .arg(format!("docker://{reference}")),
        true,
    );
    imgpack_blob::Digest::of_bytes(&raw.stdout)
}
