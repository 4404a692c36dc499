//! The sample projects under fixtures/ made ready to build: copied to a scratch directory with
//! the environment that builds each offline, the way the end-to-end tests build them.

use std::path::{Path, PathBuf};

use crate::{copy_project, have_tool, probe_binary, tools_required, workspace_root, Arch};

/// Where Debian's golang-github-gin-gonic-gin-dev puts Gin (in GOPATH layout).
const GIN_SOURCE: &str = "/usr/share/gocode/src/github.com/gin-gonic/gin";

/// A fixture ready to build: where its package is and the environment it needs.
pub struct Project {
    pub dir: PathBuf,
    pub env: Vec<(String, String)>,
    /// The binary's name, so /app/<name> is the entrypoint.
    pub name: &'static str,
}

/// The fixtures imgpack compiles: two Go services (one with Gin) and a std-only Rust one.
pub const SERVICES: [&str; 3] = ["gin-app", "go-hello", "rust-hello"];

/// Copies fixture `name` under `work` and returns how to build it; None (a skip, or a panic
/// under IMGPACK_E2E=1) when its toolchain is missing. The Gin app builds offline in GOPATH
/// mode against Debian's Gin in /usr/share/gocode; its import path is fixed
/// (example.com/gin-app) wherever the copy lives.
pub fn project(name: &'static str, work: &Path) -> Option<Project> {
    let fixture = workspace_root().join("fixtures").join(name);
    let (dir, env) = match name {
        "gin-app" => {
            if !have_tool("go") {
                return None;
            }
            if !Path::new(GIN_SOURCE).is_dir() {
                assert!(
                    !tools_required(),
                    "Gin from golang-github-gin-gonic-gin-dev is missing"
                );
                eprintln!("skipping: {GIN_SOURCE} is missing");
                return None;
            }
            let gopath = work.join("gopath");
            let env = vec![
                ("GO111MODULE".into(), "off".into()),
                (
                    "GOPATH".into(),
                    format!("{}:/usr/share/gocode", gopath.display()),
                ),
            ];
            (gopath.join("src/example.com/gin-app"), env)
        }
        "go-hello" => {
            if !have_tool("go") {
                return None;
            }
            let env = vec![
                ("GOFLAGS".into(), "-mod=mod".into()),
                ("GOPROXY".into(), "off".into()),
            ];
            (work.join("go-hello"), env)
        }
        "rust-hello" | "probe" => {
            probe_binary(Arch::Arm64)?; // makes sure the musl targets are installed
            (work.join(name), Vec::new())
        }
        other => panic!("no fixture {other}"),
    };
    copy_project(&fixture, &dir);
    Some(Project { dir, env, name })
}

/// Checks /ping and /selfcheck of a running service fixture, asked through `get` (a path to
/// the response): the zone's real offsets and the number of CA roots found in the image.
pub fn check_service_with(get: impl Fn(&str) -> crate::http::Response, what: &str) {
    let ping = get("/ping");
    assert_eq!(ping.status, 200, "{what} /ping: {}", ping.text());
    assert_eq!(
        ping.json(),
        serde_json::json!({"message": "pong"}),
        "{what}"
    );
    let selfcheck = get("/selfcheck");
    assert_eq!(
        selfcheck.status,
        200,
        "{what} /selfcheck: {}",
        selfcheck.text()
    );
    let check = selfcheck.json();
    assert_eq!(check["zone"], "Europe/Berlin", "{what}: {check}");
    assert_eq!(check["winter_offset"], 3600, "{what}: {check}");
    assert_eq!(check["summer_offset"], 7200, "{what}: {check}");
    let roots = check["roots"].as_u64().unwrap_or(0);
    assert!(roots > 100, "{what}: only {roots} CA roots in the image");
}
