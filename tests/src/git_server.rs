//! A git server on 127.0.0.1 for the git-source tests: git's own smart HTTP
//! server, `git http-backend`, run as a CGI program behind a few lines of
//! HTTP/1.1, optionally behind basic auth. It serves the repositories under
//! one directory, as `http://127.0.0.1:PORT/NAME.git`, and keeps what clients
//! asked `git-upload-pack` for (a shallow fetch says `deepen 1`).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

pub struct GitServer {
    port: u16,
    /// Requests answered, for tests that check what was asked.
    pub requests: Arc<AtomicUsize>,
    /// The `Authorization` header of every request that sent one, for tests
    /// that check which credentials reached this host.
    pub authorizations: Arc<Mutex<Vec<String>>>,
    /// The bodies of the authorized `POST …/git-upload-pack` requests (the fetch negotiation,
    /// pkt-lines such as `want …` and `deepen 1`), ungzipped, in arrival order.
    upload_packs: Arc<Mutex<Vec<Vec<u8>>>>,
}

impl GitServer {
    /// Serves `root` (holding bare repositories); with `login`, only to that user and password.
    pub fn start(root: &Path, login: Option<(&str, &str)>) -> GitServer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1");
        let port = listener.local_addr().unwrap().port();
        let root = root.to_owned();
        let expected = login.map(|(user, password)| {
            use base64::Engine as _;
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
            )
        });
        let requests = Arc::new(AtomicUsize::new(0));
        let authorizations = Arc::new(Mutex::new(Vec::new()));
        let seen = authorizations.clone();
        let upload_packs = Arc::new(Mutex::new(Vec::new()));
        let (counter, recorded) = (requests.clone(), upload_packs.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let root = root.clone();
                let expected = expected.clone();
                let (counter, recorded) = (counter.clone(), recorded.clone());
                let seen = seen.clone();
                std::thread::spawn(move || {
                    counter.fetch_add(1, Ordering::SeqCst);
                    let _ = serve(stream, &root, expected.as_deref(), &seen, &recorded);
                });
            }
        });
        GitServer {
            port,
            requests,
            authorizations,
            upload_packs,
        }
    }

    /// Every `Authorization` header received so far.
    pub fn authorizations(&self) -> Vec<String> {
        self.authorizations.lock().unwrap().clone()
    }

    /// `127.0.0.1:PORT`.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The upload-pack request bodies received since the last call (as text: pkt-lines are
    /// ASCII), forgetting them.
    pub fn take_upload_packs(&self) -> Vec<String> {
        std::mem::take(&mut *self.upload_packs.lock().unwrap())
            .iter()
            .map(|body| String::from_utf8_lossy(body).into_owned())
            .collect()
    }

    /// `http://127.0.0.1:PORT/NAME`.
    pub fn url(&self, name: &str) -> String {
        format!("http://127.0.0.1:{}/{name}", self.port)
    }
}

struct Request {
    method: String,
    path: String,
    query: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Request {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    }
}

fn serve(
    stream: TcpStream,
    root: &Path,
    expected: Option<&str>,
    seen: &Mutex<Vec<String>>,
    upload_packs: &Mutex<Vec<Vec<u8>>>,
) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream.try_clone()?);
    let request = read_request(&mut reader)?;
    if let Some(authorization) = request.header("authorization") {
        seen.lock().unwrap().push(authorization.to_owned());
    }
    let mut out = stream;
    if let Some(expected) = expected {
        if request.header("authorization") != Some(expected) {
            return out.write_all(
                b"HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Basic realm=\"git\"\r\n\
                  Content-Length: 0\r\nConnection: close\r\n\r\n",
            );
        }
    }
    if request.method == "POST" && request.path.ends_with("/git-upload-pack") {
        upload_packs.lock().unwrap().push(plain_body(&request));
    }
    let cgi = run_backend(&request, root)?;
    let split = cgi
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|at| (at, 4))
        .or_else(|| cgi.windows(2).position(|w| w == b"\n\n").map(|at| (at, 2)));
    let Some((at, gap)) = split else {
        return out.write_all(b"HTTP/1.1 500 Bad CGI\r\nConnection: close\r\n\r\n");
    };
    let head = String::from_utf8_lossy(&cgi[..at]).into_owned();
    let mut status = "200 OK".to_owned();
    let mut headers = String::new();
    for line in head.lines() {
        match line.split_once(':') {
            Some((key, value)) if key.eq_ignore_ascii_case("status") => {
                status = value.trim().to_owned()
            }
            Some(_) => headers.push_str(&format!("{line}\r\n")),
            None => {}
        }
    }
    let body = &cgi[at + gap..];
    write!(
        out,
        "HTTP/1.1 {status}\r\n{headers}Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )?;
    out.write_all(body)
}

/// A request body without its `Content-Encoding: gzip` (git compresses larger requests).
fn plain_body(request: &Request) -> Vec<u8> {
    match request.header("content-encoding") {
        Some(encoding) if encoding.eq_ignore_ascii_case("gzip") => {
            let mut plain = Vec::new();
            match flate2::read::GzDecoder::new(&request.body[..]).read_to_end(&mut plain) {
                Ok(_) => plain,
                Err(_) => request.body.clone(),
            }
        }
        _ => request.body.clone(),
    }
}

fn read_request(reader: &mut BufReader<TcpStream>) -> std::io::Result<Request> {
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or_default().to_owned();
    let target = parts.next().unwrap_or_default().to_owned();
    let (path, query) = target.split_once('?').unwrap_or((&target, ""));
    let mut headers = Vec::new();
    loop {
        let mut line = String::new();
        reader.read_line(&mut line)?;
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some((key, value)) = line.split_once(':') {
            headers.push((key.trim().to_owned(), value.trim().to_owned()));
        }
    }
    let mut request = Request {
        method,
        path: path.to_owned(),
        query: query.to_owned(),
        headers,
        body: Vec::new(),
    };
    if let Some(length) = request.header("content-length") {
        let mut body = vec![0; length.parse().unwrap_or(0)];
        reader.read_exact(&mut body)?;
        request.body = body;
    } else if request
        .header("transfer-encoding")
        .is_some_and(|t| t.eq_ignore_ascii_case("chunked"))
    {
        request.body = read_chunked(reader)?;
    }
    Ok(request)
}

fn read_chunked(reader: &mut BufReader<TcpStream>) -> std::io::Result<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let mut size = String::new();
        reader.read_line(&mut size)?;
        let size =
            usize::from_str_radix(size.trim().split(';').next().unwrap_or("0"), 16).unwrap_or(0);
        let mut chunk = vec![0; size + 2]; // and its CRLF
        reader.read_exact(&mut chunk)?;
        if size == 0 {
            return Ok(body);
        }
        body.extend_from_slice(&chunk[..size]);
    }
}

fn run_backend(request: &Request, root: &Path) -> std::io::Result<Vec<u8>> {
    let mut command = Command::new("git");
    command
        .arg("http-backend")
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("GIT_PROJECT_ROOT", root)
        .env("GIT_HTTP_EXPORT_ALL", "1")
        .env("REQUEST_METHOD", &request.method)
        .env("PATH_INFO", &request.path)
        .env("QUERY_STRING", &request.query)
        .env("CONTENT_LENGTH", request.body.len().to_string())
        .env("REMOTE_ADDR", "127.0.0.1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    for (header, variable) in [
        ("content-type", "CONTENT_TYPE"),
        ("git-protocol", "GIT_PROTOCOL"),
        ("content-encoding", "HTTP_CONTENT_ENCODING"),
    ] {
        if let Some(value) = request.header(header) {
            command.env(variable, value);
        }
    }
    let mut child = command.spawn()?;
    let mut stdin = child.stdin.take().expect("piped");
    let body = request.body.clone();
    let writer = std::thread::spawn(move || stdin.write_all(&body));
    let output = child.wait_with_output()?;
    let _ = writer.join();
    Ok(output.stdout)
}

/// A bare copy of `repo` under `root` as `NAME.git`, served by a [`GitServer`] on `root`.
pub fn publish(repo: &Path, root: &Path, name: &str) -> PathBuf {
    let bare = root.join(format!("{name}.git"));
    let status = Command::new("git")
        .args(["clone", "-q", "--bare", "--no-local"])
        .arg(repo)
        .arg(&bare)
        .status()
        .expect("git runs");
    assert!(status.success(), "git clone --bare failed");
    bare
}

/// Runs git in `dir` as a test's fixed author at a fixed time; returns its trimmed stdout.
pub fn git(dir: &Path, args: &[&str]) -> String {
    let output = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args([
            "-c",
            "user.name=t",
            "-c",
            "user.email=t@t",
            "-c",
            "init.defaultBranch=main",
        ])
        .args(args)
        .env("GIT_COMMITTER_DATE", "2024-05-01T12:00:00Z")
        .env("GIT_AUTHOR_DATE", "2024-05-01T12:00:00Z")
        .output()
        .expect("git runs");
    assert!(
        output.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap().trim().to_owned()
}
