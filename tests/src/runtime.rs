//! Running what imgpack builds: unpacking an image with skopeo and umoci, and
//! running it under runc or (for arm64) qemu-user, seeing only the image's files.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::{run_expect, tools_required};

/// Copies one platform (`amd64`, `arm64`) of `image` (a skopeo source such as
/// `oci:/dir:tag` or `docker://host/repo:tag`) into a single-manifest layout
/// and unpacks it with `umoci unpack --rootless`; returns the bundle directory.
/// umoci takes a single manifest, which is why skopeo selects the platform first.
pub fn unpack(image: &str, source_flags: &[&str], arch: &str, work: &Path) -> PathBuf {
    std::fs::create_dir_all(work).unwrap();
    let single = work.join(format!("single-{arch}"));
    let bundle = work.join(format!("bundle-{arch}"));
    run_expect(
        Command::new("skopeo")
            .args(["copy", "--override-arch", arch])
            .args(source_flags)
            .arg(image)
            .arg(format!("oci:{}:image", single.display())),
        true,
    );
    run_expect(
        Command::new("umoci")
            .args(["unpack", "--rootless", "--image"])
            .arg(format!("{}:image", single.display()))
            .arg(&bundle),
        true,
    );
    bundle
}

pub fn bundle_config(bundle: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(bundle.join("config.json")).unwrap()).unwrap()
}

/// Adapts umoci's rootless runtime config for running as root in the tests:
/// umoci maps only the unpacking user, so the user namespace goes (uid 65532
/// then exists); no TTY; optionally the host's network, so a service can be
/// reached on 127.0.0.1; and extra environment variables.
pub fn prepare_for_runc(bundle: &Path, host_network: bool, env: &[(&str, &str)]) -> Value {
    let mut config = bundle_config(bundle);
    config["process"]["terminal"] = Value::Bool(false);
    let linux = config["linux"].as_object_mut().unwrap();
    linux.remove("uidMappings");
    linux.remove("gidMappings");
    let namespaces = config["linux"]["namespaces"].as_array_mut().unwrap();
    namespaces.retain(|ns| ns["type"] != "user" && !(host_network && ns["type"] == "network"));
    let environment = config["process"]["env"].as_array_mut().unwrap();
    for (key, value) in env {
        environment.push(Value::String(format!("{key}={value}")));
    }
    std::fs::write(
        bundle.join("config.json"),
        serde_json::to_vec(&config).unwrap(),
    )
    .unwrap();
    config
}

/// Whether runc may run images here: it needs root. When not root this is a skip notice, and
/// a failure under IMGPACK_E2E=1 (CI runs as root), never a silent pass.
pub fn runc_allowed() -> bool {
    if is_root() {
        return true;
    }
    assert!(
        !tools_required(),
        "running images under runc needs root, and IMGPACK_E2E=1 requires it"
    );
    eprintln!("skipping the runc run: not root");
    false
}

pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .map(|l| l.split_whitespace().nth(1) == Some("0"))
        })
        .unwrap_or(false)
}

/// A process serving HTTP from an image, stopped (and cleaned up) on drop.
pub struct Service {
    child: Child,
    runc: Option<(PathBuf, String)>,
}

impl Service {
    /// Runs the bundle under runc (prepared with [`prepare_for_runc`]).
    pub fn runc(bundle: &Path, state: &Path, name: &str) -> Service {
        let child = Command::new("runc")
            .arg("--root")
            .arg(state)
            .args(["run", "--bundle"])
            .arg(bundle)
            .arg(name)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("runc runs");
        Service {
            child,
            runc: Some((state.to_owned(), name.to_owned())),
        }
    }

    /// Runs the process of an unpacked arm64 bundle (its config.json's args, env and cwd, plus
    /// `extra_env`) so that it sees the image's files and nothing of the host's: in a user and
    /// mount namespace of its own whose root is the bundle's rootfs. binfmt_misc is mounted and
    /// qemu-aarch64-static registered in that namespace only (the host's stays untouched); the
    /// F flag opens the interpreter before the root changes, so it need not be in the image.
    /// The process keeps the host's network, so the test reaches it on 127.0.0.1, and runs as
    /// root of its namespace (only the caller's uid is mapped, not the image's user).
    ///
    /// (`qemu-aarch64-static -L ROOTFS` would not do: a path missing under ROOTFS falls back
    /// to the host's, so the host's CA bundle and zone files could stand in for the image's.)
    pub fn arm64_isolated(bundle: &Path, extra_env: &[(&str, &str)]) -> Service {
        let config = bundle_config(bundle);
        let process = &config["process"];
        let rootfs = bundle.join(config["root"]["path"].as_str().unwrap_or("rootfs"));
        let mut exec: Vec<String> = strings(&process["env"]);
        exec.extend(
            extra_env
                .iter()
                .map(|(key, value)| format!("{key}={value}")),
        );
        exec.push("/usr/bin/unshare".to_owned());
        exec.push(format!("--root={}", rootfs.display()));
        exec.push(format!("--wd={}", process["cwd"].as_str().unwrap_or("/")));
        exec.extend(strings(&process["args"]));
        let child = Command::new("unshare")
            .args([
                "--user",
                "--map-root-user",
                "--mount",
                "--fork",
                "--kill-child",
            ])
            .args([
                "sh",
                "-c",
                PRIVATE_BINFMT_SCRIPT,
                "sh",
                &aarch64_registration(),
            ])
            .args(&exec)
            .env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("unshare runs");
        Service { child, runc: None }
    }
}

/// Mounts a binfmt_misc of the namespace's own, registers `$1`, then runs the rest of the
/// arguments as `env -i VAR=VALUE… PROGRAM ARGS…` (the program being `unshare --root`).
const PRIVATE_BINFMT_SCRIPT: &str = "set -e
mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc
printf '%s' \"$1\" > /proc/sys/fs/binfmt_misc/register
shift
exec env -i \"$@\"";

/// A binfmt_misc rule running ELF64 little-endian aarch64 executables (ET_EXEC and ET_DYN)
/// with qemu-aarch64-static, opened at registration (flag F).
fn aarch64_registration() -> String {
    let qemu = std::env::var_os("PATH")
        .and_then(|path| {
            std::env::split_paths(&path)
                .map(|dir| dir.join("qemu-aarch64-static"))
                .find(|candidate| candidate.is_file())
        })
        .expect("qemu-aarch64-static is on PATH");
    let magic = r"\x7fELF\x02\x01\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02\x00\xb7\x00";
    let mask = r"\xff\xff\xff\xff\xff\xff\xff\x00\xff\xff\xff\xff\xff\xff\xff\xff\xfe\xff\xff\xff";
    format!(
        ":imgpack-e2e-aarch64:M::{magic}:{mask}:{}:F",
        qemu.display()
    )
}

fn strings(value: &Value) -> Vec<String> {
    crate::strings(value)
        .into_iter()
        .map(str::to_owned)
        .collect()
}

impl Drop for Service {
    fn drop(&mut self) {
        if let Some((state, name)) = &self.runc {
            let runc = |args: &[&str]| {
                let _ = Command::new("runc")
                    .arg("--root")
                    .arg(state)
                    .args(args)
                    .arg(name)
                    .output();
            };
            runc(&["kill", "--all"]);
            std::thread::sleep(Duration::from_millis(100));
            runc(&["delete", "--force"]);
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
