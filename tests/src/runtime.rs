//! Running what imgpack builds: unpacking an image with skopeo and umoci,
//! running it under runc or (for arm64) qemu-user, and talking HTTP to it
//! (the fixtures' /ping and /selfcheck).

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::run_expect;

/// Copies one platform (`amd64`, `arm64`) of `image` (a skopeo source such as
/// `oci:/dir:tag` or `docker://host/repo:tag`) into a single-manifest layout
/// and unpacks it with `umoci unpack --rootless`; returns the bundle directory.
/// umoci takes a single manifest, which is why skopeo selects the platform first.
pub fn unpack(image: &str, source_flags: &[&str], arch: &str, work: &Path) -> PathBuf {
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

    /// Runs an arm64 binary of an unpacked image under qemu-user, with `-L`
    /// pointing at the image's root so its absolute paths (/etc/ssl, /usr/share/zoneinfo)
    /// are looked up in the image first.
    pub fn qemu_aarch64(rootfs: &Path, program: &str, env: &[String]) -> Service {
        let child = Command::new("qemu-aarch64-static")
            .arg("-L")
            .arg(rootfs)
            .arg(rootfs.join(program.trim_start_matches('/')))
            .env_clear()
            .envs(env.iter().filter_map(|e| e.split_once('=')))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("qemu-aarch64-static runs");
        Service { child, runc: None }
    }
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

/// The JSON object in an HTTP body.
fn json_body(body: &str) -> Value {
    let start = body
        .find('{')
        .unwrap_or_else(|| panic!("no JSON in {body:?}"));
    let end = body.rfind('}').unwrap();
    serde_json::from_str(&body[start..=end]).unwrap_or_else(|err| panic!("{err}: {body:?}"))
}

/// /ping and /selfcheck of a fixture service on 127.0.0.1:port.
pub fn check_service(port: u16, what: &str) {
    check_service_with(|path| http_get(port, path), what);
}

/// /ping and /selfcheck as the fixtures define them, asked through `get`
/// (path to status and body): the zone's real offsets and the number of CA
/// roots found in the image.
pub fn check_service_with(get: impl Fn(&str) -> (u16, String), what: &str) {
    let (status, body) = get("/ping");
    assert_eq!(status, 200, "{what} /ping: {body}");
    assert_eq!(
        json_body(&body),
        serde_json::json!({"message": "pong"}),
        "{what}"
    );
    let (status, body) = get("/selfcheck");
    assert_eq!(status, 200, "{what} /selfcheck: {body}");
    let check = json_body(&body);
    assert_eq!(check["zone"], "Europe/Berlin", "{what}: {check}");
    assert_eq!(check["winter_offset"], 3600, "{what}: {check}");
    assert_eq!(check["summer_offset"], 7200, "{what}: {check}");
    let roots = check["roots"].as_u64().unwrap_or(0);
    assert!(roots > 100, "{what}: only {roots} CA roots in the image");
}

/// A port on 127.0.0.1 that was free a moment ago.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `GET path` on 127.0.0.1:port, retried until the service answers (30 s at most).
pub fn http_get(port: u16, path: &str) -> (u16, String) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match try_get(port, path) {
            Ok(answer) => return answer,
            Err(err) if Instant::now() < deadline => {
                let _ = err;
                std::thread::sleep(Duration::from_millis(100));
            }
            Err(err) => panic!("GET {path} on port {port}: {err}"),
        }
    }
}

fn try_get(port: u16, path: &str) -> std::io::Result<(u16, String)> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n"
    )?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("not an HTTP response: {response:?}")))?;
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_owned())
        .unwrap_or_default();
    Ok((status, body))
}
