//! The Docker Engine as a consumer in the end-to-end tests: the engine's
//! presence check, images and containers removed by name when a test ends
//! (also when it fails), and HTTP to a container started with `--network
//! none`, reached from inside its own network namespace so nothing listens on
//! the host.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::process::{Command, Output};
use std::time::Duration;

use crate::http::{get_when_up, Response};
use crate::{have_tool, run_expect, tools_required};

/// How long a container's service may take to answer its first request.
const SERVICE_PATIENCE: Duration = Duration::from_secs(60);

/// True when the docker CLI is installed and its daemon answers `docker info`.
/// Under IMGPACK_E2E=1 either missing is a failure, with docker's own error.
pub fn docker_available() -> bool {
    if !have_tool("docker") {
        return false;
    }
    let info = Command::new("docker")
        .args(["info", "--format", "{{.ServerVersion}}"])
        .output()
        .expect("cannot run docker");
    if info.status.success() {
        return true;
    }
    let error = String::from_utf8_lossy(&info.stderr);
    assert!(
        !tools_required(),
        "the Docker daemon does not answer `docker info` and IMGPACK_E2E=1 requires it: {error}"
    );
    eprintln!("skipping: the Docker daemon does not answer: {error}");
    false
}

/// `docker ARGS…`, which must succeed; returns its output.
pub fn docker(args: &[&str]) -> Output {
    run_expect(Command::new("docker").args(args), true)
}

/// `docker ARGS…`'s standard output, trimmed.
pub fn docker_stdout(args: &[&str]) -> String {
    String::from_utf8_lossy(&docker(args).stdout)
        .trim()
        .to_owned()
}

/// Image references a test created in the engine, removed by name on drop.
/// Never by ID: another test may hold the same content under its own name.
#[derive(Default)]
pub struct Images(Vec<String>);

impl Images {
    /// Remembers `reference` for removal; returns it.
    pub fn add(&mut self, reference: impl Into<String>) -> String {
        let reference = reference.into();
        self.0.push(reference.clone());
        reference
    }
}

impl Drop for Images {
    fn drop(&mut self) {
        for reference in &self.0 {
            let _ = Command::new("docker")
                .args(["image", "rm", "--force", reference])
                .output();
        }
    }
}

/// A detached container, removed (with `--force`) on drop.
pub struct Container {
    pub name: String,
}

impl Container {
    /// `docker run --detach --network none --name NAME ARGS… IMAGE`.
    pub fn run(name: &str, args: &[&str], image: &str) -> Container {
        let mut command = Command::new("docker");
        command
            .args(["run", "--detach", "--network", "none", "--name", name])
            .args(args)
            .arg(image);
        run_expect(&mut command, true);
        Container {
            name: name.to_owned(),
        }
    }

    /// The container's first process as the host sees it.
    pub fn pid(&self) -> u32 {
        docker_stdout(&["inspect", "--format", "{{.State.Pid}}", &self.name])
            .parse()
            .unwrap_or_else(|err| panic!("no pid for container {}: {err}", self.name))
    }

    /// `GET path` on 127.0.0.1:port inside the container's network namespace,
    /// tried again while the service starts.
    pub fn get(&self, port: u16, path: &str) -> Response {
        let namespace = File::open(format!("/proc/{}/ns/net", self.pid()))
            .expect("cannot open the container's network namespace (needs root)");
        // setns changes only the calling thread: a thread of its own enters, asks and ends.
        std::thread::scope(|scope| {
            scope
                .spawn(|| {
                    // SAFETY: setns on a valid namespace fd; it affects only this thread.
                    let entered = unsafe { libc::setns(namespace.as_raw_fd(), libc::CLONE_NEWNET) };
                    assert_eq!(
                        entered,
                        0,
                        "setns into container {}: {}",
                        self.name,
                        std::io::Error::last_os_error()
                    );
                    get_when_up(&format!("127.0.0.1:{port}"), path, SERVICE_PATIENCE)
                })
                .join()
                .unwrap()
        })
    }

    /// The container's log, for failure messages.
    pub fn logs(&self) -> String {
        let output = Command::new("docker")
            .args(["logs", &self.name])
            .output()
            .expect("cannot run docker logs");
        format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        )
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        let _ = Command::new("docker")
            .args(["rm", "--force", &self.name])
            .output();
    }
}
