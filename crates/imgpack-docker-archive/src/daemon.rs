//! `docker:NAME[:TAG]` (also `docker-daemon:`): loads the image into the
//! local Docker Engine through its API socket, as `ko build --local` does.
//! The docker-archive tarball is streamed to `POST /images/load` while it is
//! written, never held in memory; the daemon's own platform is the one loaded.

use std::io::{self, Write};
use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use imgpack_image::{Image, PlatformManifest, Sink};
use imgpack_platform::Platform;
use serde::Deserialize;
use tokio::sync::mpsc;

use crate::{append_archive, normalise_reference};

/// Where the Docker Engine listens when DOCKER_HOST is not set.
const DEFAULT_SOCKET: &str = "/var/run/docker.sock";
/// Bound on connecting and on each quick request (`/_ping`, `/version`).
const QUICK_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest silence while the daemon loads: it reads the tar as it comes and
/// answers once the layers are registered.
const LOAD_IDLE_TIMEOUT: Duration = Duration::from_secs(300);
/// What we read at most of any answer of the daemon.
const MAX_ANSWER: usize = 1 << 20;
/// Bytes of the tar sent as one piece of the request body.
const CHUNK: usize = 256 * 1024;
/// Pieces in flight between the tar writer and the request.
const CHUNKS_IN_FLIGHT: usize = 8;
/// The first Docker Engine that reads zstd layers.
const ZSTD_SINCE_MAJOR: u32 = 23;

/// Loads the image into the Docker Engine behind a unix socket.
#[derive(Debug)]
pub struct DockerDaemonSink {
    /// `name:tag`, as `docker images` will list it.
    reference: String,
    socket: PathBuf,
    /// What `/version` said, asked once by [`Sink::check`].
    daemon: OnceLock<Daemon>,
}

/// The facts of `GET /version` that decide what to load.
#[derive(Clone, Debug, Deserialize)]
struct Daemon {
    #[serde(rename = "Os")]
    os: String,
    #[serde(rename = "Arch")]
    arch: String,
    #[serde(rename = "Version", default)]
    version: String,
}

impl Daemon {
    fn platform(&self) -> String {
        format!("{}/{}", self.os, self.arch)
    }

    fn runs(&self, platform: &Platform) -> bool {
        platform.os() == self.os && platform.arch.name() == self.arch
    }

    /// Docker Engine 20.10 fails on zstd layers (`failed to register layer: … unexpected EOF`).
    fn reads_zstd(&self) -> bool {
        let major = self
            .version
            .split('.')
            .next()
            .and_then(|m| m.parse::<u32>().ok());
        major.is_none_or(|major| major >= ZSTD_SINCE_MAJOR)
    }
}

impl DockerDaemonSink {
    /// Parses what follows `docker:`: `NAME[:TAG]`; reads DOCKER_HOST.
    pub fn parse(spec: &str) -> Result<Self> {
        if spec.is_empty() {
            bail!("docker: needs an image name, as in --output docker:api:v1");
        }
        Ok(Self {
            reference: normalise_reference(spec)?,
            socket: socket_from(std::env::var("DOCKER_HOST").ok().as_deref())?,
            daemon: OnceLock::new(),
        })
    }

    fn client(&self, idle_timeout: Duration) -> Result<reqwest::Client> {
        // reqwest is built without a crypto provider of its own (see the
        // workspace's Cargo.toml), and wants one even for a unix socket: ring,
        // unless one is already installed.
        let _ = rustls::crypto::ring::default_provider().install_default();
        reqwest::Client::builder()
            .unix_socket(self.socket.clone())
            .connect_timeout(QUICK_TIMEOUT)
            .read_timeout(idle_timeout)
            .redirect(reqwest::redirect::Policy::none())
            .http1_only()
            .build()
            .context("cannot set up an HTTP client for the Docker socket")
    }

    /// Reaches the daemon (`/_ping`) and asks its platform (`/version`).
    async fn ask_daemon(&self) -> Result<Daemon> {
        let client = self.client(QUICK_TIMEOUT)?;
        let ping = client
            .get(api_url("/_ping"))
            .timeout(QUICK_TIMEOUT)
            .send()
            .await
            .map_err(|err| self.unreachable(&err))?;
        let (status, body) = bounded_body(ping).await?;
        if !status.is_success() {
            bail!(
                "the Docker daemon at {} answered /_ping with {status}: {}",
                self.socket.display(),
                daemon_message(&body)
            );
        }
        let version = client
            .get(api_url("/version"))
            .timeout(QUICK_TIMEOUT)
            .send()
            .await
            .map_err(|err| self.unreachable(&err))?;
        let (status, body) = bounded_body(version).await?;
        if !status.is_success() {
            bail!(
                "the Docker daemon at {} answered /version with {status}: {}",
                self.socket.display(),
                daemon_message(&body)
            );
        }
        serde_json::from_slice(&body).with_context(|| {
            format!(
                "the Docker daemon at {} sent a /version without Os and Arch: is it a Docker Engine?",
                self.socket.display()
            )
        })
    }

    /// One line for a socket that does not answer, with what to do.
    fn unreachable(&self, err: &reqwest::Error) -> anyhow::Error {
        let cause = root_cause(err);
        let advice = if cause.contains("ermission denied") {
            "run as a member of the docker group, or use sudo"
        } else {
            "start Docker, or set DOCKER_HOST=unix:///PATH/TO/docker.sock"
        };
        anyhow::anyhow!(
            "cannot reach the Docker daemon at {} ({cause}): {advice}",
            self.socket.display()
        )
    }

    /// The daemon's facts: asked by `check`, or now if it was not called.
    fn daemon(&self, runtime: &tokio::runtime::Runtime) -> Result<&Daemon> {
        if let Some(daemon) = self.daemon.get() {
            return Ok(daemon);
        }
        let daemon = runtime.block_on(self.ask_daemon())?;
        Ok(self.daemon.get_or_init(|| daemon))
    }

    /// The manifest of the daemon's platform, or a line saying which to build.
    fn pick<'a>(&self, daemon: &Daemon, image: &'a Image) -> Result<&'a PlatformManifest> {
        let platforms: Vec<&Platform> = image.manifests.iter().map(|m| &m.platform).collect();
        check_runs(daemon, &platforms)?;
        let manifest = image
            .manifests
            .iter()
            .find(|m| daemon.runs(&m.platform))
            .expect("checked above");
        let zstd = manifest
            .layers
            .iter()
            .any(|l| l.media_type.contains("zstd"));
        if zstd && !daemon.reads_zstd() {
            bail!(
                "Docker Engine {} cannot read zstd layers (docker run fails with `failed to register \
                 layer: … unexpected EOF`): build with --compression gzip",
                daemon.version
            );
        }
        Ok(manifest)
    }

    /// Streams the docker-archive of `manifest` to `POST /images/load`.
    async fn load(&self, image: &Image, manifest: &PlatformManifest) -> Result<()> {
        let (sender, mut receiver) = mpsc::channel::<io::Result<Vec<u8>>>(CHUNKS_IN_FLIGHT);
        let image = image.clone();
        let manifest = manifest.clone();
        let reference = self.reference.clone();
        // The tar is written on its own thread, a piece at a time, while the request sends it.
        let writer = std::thread::spawn(move || -> Result<()> {
            let mut tar = tar::Builder::new(ChannelWriter::new(sender.clone()));
            let written = append_archive(&mut tar, &image, &manifest, Some(reference.as_str()))
                .and_then(|()| Ok(tar.into_inner()?.finish()?));
            if let Err(err) = &written {
                // Ends the request body with an error, so the daemon does not load half an image.
                let _ = sender.blocking_send(Err(io::Error::other(err.to_string())));
            }
            written
        });
        let body = reqwest::Body::wrap_stream(futures_util::stream::poll_fn(move |cx| {
            receiver.poll_recv(cx)
        }));
        let sent = self
            .client(LOAD_IDLE_TIMEOUT)?
            .post(api_url("/images/load?quiet=1"))
            .header("Content-Type", "application/x-tar")
            .body(body)
            .send()
            .await;
        let answer = match sent {
            Ok(response) => bounded_body(response).await,
            Err(err) => Err(self.unreachable(&err)),
        };
        // Joined off the runtime's thread, which may still have to drive the connection.
        let written = tokio::task::spawn_blocking(move || writer.join())
            .await
            .ok()
            .and_then(|joined| joined.ok())
            .unwrap_or_else(|| Err(anyhow::anyhow!("the archive writer panicked")));
        // A refusal explains itself best; then our own failure to read a blob; then a lost connection.
        if let Ok((status, answer)) = &answer {
            if !status.is_success() {
                bail!(
                    "the Docker daemon refused the image ({status}): {}",
                    daemon_message(answer)
                );
            }
        }
        written.context("cannot write the archive for the Docker daemon")?;
        let (_, answer) = answer?;
        check_load_answer(&answer)
    }
}

/// `unix://PATH` or nothing: the socket; any other DOCKER_HOST is refused.
fn socket_from(docker_host: Option<&str>) -> Result<PathBuf> {
    let host = docker_host.map(str::trim).unwrap_or_default();
    if host.is_empty() {
        return Ok(PathBuf::from(DEFAULT_SOCKET));
    }
    match host.strip_prefix("unix://") {
        Some(path) if !path.is_empty() => Ok(PathBuf::from(path)),
        _ => {
            // Only the scheme is shown: the rest may hold a user name or a token.
            let scheme = host.split_once("://").map_or("(no scheme)", |(s, _)| s);
            bail!(
                "DOCKER_HOST is a {scheme}:// address, but --output docker: loads through a local \
                 unix socket only: set DOCKER_HOST=unix:///var/run/docker.sock (or unset it), or write \
                 --output docker-archive:FILE and run `docker load -i FILE`"
            )
        }
    }
}

/// The daemon must run one of the image's platforms.
fn check_runs(daemon: &Daemon, platforms: &[&Platform]) -> Result<()> {
    if platforms.iter().any(|p| daemon.runs(p)) {
        return Ok(());
    }
    let names: Vec<String> = platforms.iter().map(|p| p.to_string()).collect();
    bail!(
        "the Docker daemon runs {} but the image is for {}: add --platform {} (docker run loads only the daemon's platform)",
        daemon.platform(),
        names.join(", "),
        daemon.platform()
    )
}

/// The API path on the socket (the host name is not used).
fn api_url(path: &str) -> String {
    format!("http://docker{path}")
}

/// Status and at most [`MAX_ANSWER`] bytes of the body.
async fn bounded_body(mut response: reqwest::Response) -> Result<(reqwest::StatusCode, Vec<u8>)> {
    let status = response.status();
    let mut body = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .context("the Docker daemon stopped answering")?
    {
        if body.len() + chunk.len() > MAX_ANSWER {
            bail!("the Docker daemon's answer is larger than {MAX_ANSWER} bytes: is DOCKER_HOST a Docker Engine?");
        }
        body.extend_from_slice(&chunk);
    }
    Ok((status, body))
}

/// `{"message": …}` of an error answer, else its text, on one line.
fn daemon_message(body: &[u8]) -> String {
    #[derive(Deserialize)]
    struct Message {
        message: String,
    }
    let text = match serde_json::from_slice::<Message>(body) {
        Ok(message) => message.message,
        Err(_) => String::from_utf8_lossy(body).into_owned(),
    };
    one_line(&text)
}

/// `/images/load` answers 200 and then reports in a stream of JSON lines:
/// `{"stream":"Loaded image: api:v1\n"}`, or `{"error": …}` when it failed.
fn check_load_answer(answer: &[u8]) -> Result<()> {
    #[derive(Deserialize)]
    struct Line {
        stream: Option<String>,
        error: Option<String>,
    }
    let text = String::from_utf8_lossy(answer);
    let mut loaded = false;
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let Ok(line) = serde_json::from_str::<Line>(line) else {
            continue;
        };
        if let Some(error) = line.error {
            bail!(
                "the Docker daemon could not load the image: {}",
                one_line(&error)
            );
        }
        loaded |= line.stream.is_some_and(|s| s.contains("Loaded image"));
    }
    if !loaded {
        bail!(
            "the Docker daemon did not say it loaded the image (it answered: {})",
            one_line(&text)
        );
    }
    Ok(())
}

fn one_line(text: &str) -> String {
    let line = text.split_whitespace().collect::<Vec<_>>().join(" ");
    match line.char_indices().nth(300) {
        Some((at, _)) => format!("{}…", &line[..at]),
        None => line,
    }
}

/// The innermost cause of a request error (e.g. "No such file or directory").
fn root_cause(err: &reqwest::Error) -> String {
    let mut source: &dyn std::error::Error = err;
    while let Some(next) = source.source() {
        source = next;
    }
    source.to_string()
}

/// The tar's bytes in pieces of [`CHUNK`], sent to the request body.
struct ChannelWriter {
    sender: mpsc::Sender<io::Result<Vec<u8>>>,
    piece: Vec<u8>,
}

impl ChannelWriter {
    fn new(sender: mpsc::Sender<io::Result<Vec<u8>>>) -> Self {
        Self {
            sender,
            piece: Vec::with_capacity(CHUNK),
        }
    }

    fn send_piece(&mut self) -> io::Result<()> {
        if self.piece.is_empty() {
            return Ok(());
        }
        let piece = std::mem::replace(&mut self.piece, Vec::with_capacity(CHUNK));
        self.sender.blocking_send(Ok(piece)).map_err(|_| {
            io::Error::new(
                io::ErrorKind::BrokenPipe,
                "the Docker daemon closed the connection",
            )
        })
    }

    /// Sends what is left; dropping the writer then ends the body.
    fn finish(mut self) -> io::Result<()> {
        self.send_piece()
    }
}

impl Write for ChannelWriter {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        let room = CHUNK - self.piece.len();
        let taken = bytes.len().min(room);
        self.piece.extend_from_slice(&bytes[..taken]);
        if self.piece.len() == CHUNK {
            self.send_piece()?;
        }
        Ok(taken)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Sink for DockerDaemonSink {
    fn describe(&self) -> String {
        format!("docker:{}", self.reference)
    }

    fn check(&self) -> Result<()> {
        let runtime = runtime()?;
        self.daemon(&runtime).map(|_| ())
    }

    fn check_platforms(&self, platforms: &[Platform]) -> Result<()> {
        let runtime = runtime()?;
        let daemon = self.daemon(&runtime)?;
        check_runs(daemon, &platforms.iter().collect::<Vec<_>>())
    }

    fn write(&self, image: &Image) -> Result<()> {
        let runtime = runtime()?;
        let daemon = self.daemon(&runtime)?.clone();
        let manifest = self.pick(&daemon, image)?;
        runtime.block_on(self.load(image, manifest))
    }
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the runtime for the Docker socket")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_host_names_a_unix_socket_or_is_refused() {
        assert_eq!(socket_from(None).unwrap(), PathBuf::from(DEFAULT_SOCKET));
        assert_eq!(
            socket_from(Some("")).unwrap(),
            PathBuf::from(DEFAULT_SOCKET)
        );
        assert_eq!(
            socket_from(Some("unix:///run/user/1000/docker.sock")).unwrap(),
            PathBuf::from("/run/user/1000/docker.sock")
        );
        let err = socket_from(Some("tcp://user:secret@10.0.0.1:2376"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("DOCKER_HOST is a tcp:// address"), "{err}");
        assert!(!err.contains("secret"), "{err}");
        assert!(socket_from(Some("unix://")).is_err());
    }

    #[test]
    fn the_load_answer_is_read_for_errors() {
        assert!(check_load_answer(b"{\"stream\":\"Loaded image: api:v1\\n\"}\r\n").is_ok());
        let err = check_load_answer(
            b"{\"errorDetail\":{\"message\":\"unexpected EOF\"},\"error\":\"unexpected EOF\"}\n",
        )
        .unwrap_err()
        .to_string();
        assert_eq!(
            err,
            "the Docker daemon could not load the image: unexpected EOF"
        );
        assert!(check_load_answer(b"").is_err());
        assert_eq!(
            daemon_message(b"{\"message\":\"page not\\nfound\"}"),
            "page not found"
        );
    }

    #[test]
    fn the_daemon_platform_is_required_and_zstd_needs_engine_23() {
        let daemon = Daemon {
            os: "linux".into(),
            arch: "amd64".into(),
            version: "20.10.24".into(),
        };
        let amd64: Platform = "linux/amd64".parse().unwrap();
        let arm64: Platform = "linux/arm64".parse().unwrap();
        assert!(check_runs(&daemon, &[&arm64, &amd64]).is_ok());
        let err = check_runs(&daemon, &[&arm64]).unwrap_err().to_string();
        assert_eq!(
            err,
            "the Docker daemon runs linux/amd64 but the image is for linux/arm64: add --platform \
             linux/amd64 (docker run loads only the daemon's platform)"
        );
        assert!(!daemon.reads_zstd());
        let newer = Daemon {
            version: "27.3.1".into(),
            ..daemon
        };
        assert!(newer.reads_zstd());
    }

    #[test]
    fn the_writer_sends_whole_pieces_then_the_rest() {
        let (sender, mut receiver) = mpsc::channel(64);
        let mut writer = ChannelWriter::new(sender);
        let data = vec![7u8; CHUNK * 2 + 10];
        writer.write_all(&data).unwrap();
        writer.finish().unwrap();
        let mut sizes = Vec::new();
        while let Ok(piece) = receiver.try_recv() {
            sizes.push(piece.unwrap().len());
        }
        assert_eq!(sizes, [CHUNK, CHUNK, 10]);
    }
}
