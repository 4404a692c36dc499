//! OpenSSH's sshd on 127.0.0.1 for the git-source tests: a host key and one
//! client key made for the test, public-key login only, so `ssh://` and
//! scp-style git URLs reach `git-upload-pack` as they would on a git host.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const SSHD: &str = "/usr/sbin/sshd";

pub struct SshServer {
    child: Child,
    pub port: u16,
    /// The client's private key.
    pub key: PathBuf,
    /// A known_hosts file that trusts the server's host key.
    pub known_hosts: PathBuf,
}

impl SshServer {
    /// `None` (a skip) without sshd, unless IMGPACK_E2E=1.
    pub fn start(dir: &Path) -> Option<SshServer> {
        if !Path::new(SSHD).is_file() {
            assert!(
                !crate::tools_required(),
                "sshd is missing: apt-get install openssh-server (cargo xtask ci installs it)"
            );
            return None;
        }
        std::fs::create_dir_all(dir).unwrap();
        // sshd refuses to start without its privilege separation directory.
        std::fs::create_dir_all("/run/sshd").unwrap();
        let keygen = |path: &Path| {
            let status = Command::new("ssh-keygen")
                .args(["-q", "-t", "ed25519", "-N", "", "-f"])
                .arg(path)
                .status()
                .expect("ssh-keygen runs");
            assert!(status.success());
        };
        let host_key = dir.join("host_key");
        let key = dir.join("client_key");
        keygen(&host_key);
        keygen(&key);
        std::fs::copy(dir.join("client_key.pub"), dir.join("authorized_keys")).unwrap();
        let port = crate::http::free_port();
        let host_public = std::fs::read_to_string(dir.join("host_key.pub")).unwrap();
        let known_hosts = dir.join("known_hosts");
        std::fs::write(&known_hosts, format!("[127.0.0.1]:{port} {host_public}")).unwrap();
        let config = dir.join("sshd_config");
        std::fs::write(
            &config,
            format!(
                "Port {port}\nListenAddress 127.0.0.1\nHostKey {}\nAuthorizedKeysFile {}\n\
                 PermitRootLogin prohibit-password\nPasswordAuthentication no\n\
                 KbdInteractiveAuthentication no\nUsePAM no\nStrictModes no\n\
                 PidFile {}\nSetEnv PATH=/usr/local/bin:/usr/bin:/bin\n",
                host_key.display(),
                dir.join("authorized_keys").display(),
                dir.join("sshd.pid").display()
            ),
        )
        .unwrap();
        let child = Command::new(SSHD)
            .args(["-D", "-e", "-f"])
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("sshd.log")).unwrap())
            .spawn()
            .expect("sshd starts");
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "sshd did not listen on {port}");
            std::thread::sleep(Duration::from_millis(50));
        }
        Some(SshServer {
            child,
            port,
            key,
            known_hosts,
        })
    }
}

impl Drop for SshServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
