//! A fault-injecting, request-counting HTTP proxy in front of a plain-HTTP registry.
//!
//! Every client connection carries exactly one request: the proxy reads its head (and body, by
//! `Content-Length` or passing `Transfer-Encoding: chunked` through up to the last chunk),
//! records `(method, path?query)`, applies the first matching [`Fault`], and forwards the request
//! to the upstream on a new connection with `Connection: close`. The upstream response is copied
//! back byte for byte until the upstream closes (a `Connection: close` header is inserted if the
//! upstream did not send one; distribution does), then the client connection is closed.
//!
//! The `Host` header is forwarded unchanged, so the registry's absolute `Location` URLs (upload
//! sessions) point back at the proxy. A request with `Expect: 100-continue` gets the
//! `100 Continue` from the proxy itself; the header is not forwarded.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::http::{read_head, Head};

/// A fault the proxy injects into matching requests. A request matches when its method equals
/// `method` and its path-and-query contains `path_contains`.
#[derive(Clone, Debug)]
pub enum Fault {
    /// Answer `status` (with an OCI error JSON body and, if set, a `Retry-After: secs` header)
    /// instead of forwarding, to requests whose method matches and whose path contains
    /// `path_contains`; `times` times, or forever with None. The request body is read first
    /// (unless the client waits for `100 Continue`) and never reaches the upstream.
    Status {
        method: &'static str,
        path_contains: &'static str,
        status: u16,
        retry_after: Option<u64>,
        times: Option<usize>,
    },
    /// Forward the request but reset the client connection (SO_LINGER 0, then close) and close
    /// the upstream one after forwarding `after_bytes` bytes of its body (payload bytes, not
    /// counting chunk framing); `times` times. A body no longer than `after_bytes` is forwarded
    /// whole and the connection is reset before any response byte reaches the client.
    ResetDuringBody {
        method: &'static str,
        path_contains: &'static str,
        after_bytes: u64,
        times: usize,
    },
    /// Forward bodies of matching requests at most `bytes_per_sec` (to make an upload slow
    /// enough to kill it midway). Applies forever.
    Throttle {
        method: &'static str,
        path_contains: &'static str,
        bytes_per_sec: u64,
    },
    /// Hold a matching request for `seconds` after reading its head, then forward it (a slow
    /// registry) or, with `then_close`, close the connection without an answer (a registry that
    /// went away mid-request); `times` times.
    Stall {
        method: &'static str,
        path_contains: &'static str,
        seconds: f64,
        then_close: bool,
        times: usize,
    },
}

impl Fault {
    fn matches(&self, method: &str, target: &str) -> bool {
        let (m, p) = match self {
            Fault::Status {
                method,
                path_contains,
                ..
            }
            | Fault::ResetDuringBody {
                method,
                path_contains,
                ..
            }
            | Fault::Throttle {
                method,
                path_contains,
                ..
            }
            | Fault::Stall {
                method,
                path_contains,
                ..
            } => (method, path_contains),
        };
        *m == method && target.contains(p)
    }
}

struct ActiveFault {
    fault: Fault,
    /// None: forever.
    remaining: Option<usize>,
    /// How many requests this fault was applied to.
    served: usize,
    /// Only requests whose `Content-Length` is at least this match (0: any request).
    min_length: u64,
}

/// One request as the proxy received it.
struct Recorded {
    method: String,
    target: String,
    /// The body's `Content-Length` (0 without a body), None when chunked.
    length: Option<u64>,
}

/// Names a fault added with [`Proxy::add_fault`], to ask how often it was served.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FaultId(usize);

struct Shared {
    upstream: String,
    faults: Mutex<Vec<ActiveFault>>,
    requests: Mutex<Vec<Recorded>>,
    /// Faults applied so far (throttled requests not counted).
    injected: std::sync::atomic::AtomicUsize,
}

/// What to do with one request.
enum Action {
    Forward {
        bytes_per_sec: Option<u64>,
    },
    Status {
        status: u16,
        retry_after: Option<u64>,
    },
    Reset {
        after_bytes: u64,
    },
    Stall {
        seconds: f64,
        then_close: bool,
    },
}

impl Shared {
    fn action(&self, method: &str, target: &str, length: Option<u64>) -> Action {
        let mut faults = self.faults.lock().unwrap();
        for active in faults.iter_mut() {
            let long_enough = active.min_length == 0 || length >= Some(active.min_length);
            if active.remaining == Some(0) || !active.fault.matches(method, target) || !long_enough
            {
                continue;
            }
            if let Some(remaining) = &mut active.remaining {
                *remaining -= 1;
            }
            if !matches!(active.fault, Fault::Throttle { .. }) {
                self.injected.fetch_add(1, Ordering::SeqCst);
            }
            active.served += 1;
            return match active.fault {
                Fault::Status {
                    status,
                    retry_after,
                    ..
                } => Action::Status {
                    status,
                    retry_after,
                },
                Fault::ResetDuringBody { after_bytes, .. } => Action::Reset { after_bytes },
                Fault::Throttle { bytes_per_sec, .. } => Action::Forward {
                    bytes_per_sec: Some(bytes_per_sec),
                },
                Fault::Stall {
                    seconds,
                    then_close,
                    ..
                } => Action::Stall {
                    seconds,
                    then_close,
                },
            };
        }
        Action::Forward {
            bytes_per_sec: None,
        }
    }
}

/// A running proxy; stops accepting when dropped (connections in flight finish on their own).
pub struct Proxy {
    port: u16,
    shared: Arc<Shared>,
    shutdown: Arc<AtomicBool>,
    accept: Option<JoinHandle<()>>,
}

impl Proxy {
    /// Starts a proxy on a free port of 127.0.0.1 in front of `upstream` (`127.0.0.1:PORT`).
    pub fn start(upstream: &str) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("cannot bind the proxy");
        let port = listener.local_addr().unwrap().port();
        let shared = Arc::new(Shared {
            upstream: upstream.to_owned(),
            faults: Mutex::new(Vec::new()),
            requests: Mutex::new(Vec::new()),
            injected: std::sync::atomic::AtomicUsize::new(0),
        });
        let shutdown = Arc::new(AtomicBool::new(false));
        let accept = {
            let shared = shared.clone();
            let shutdown = shutdown.clone();
            std::thread::Builder::new()
                .name(format!("proxy-{port}"))
                .spawn(move || {
                    for connection in listener.incoming() {
                        if shutdown.load(Ordering::SeqCst) {
                            break;
                        }
                        let Ok(connection) = connection else { continue };
                        let shared = shared.clone();
                        std::thread::spawn(move || {
                            let _ = handle(connection, &shared);
                        });
                    }
                })
                .unwrap()
        };
        Proxy {
            port,
            shared,
            shutdown,
            accept: Some(accept),
        }
    }

    /// `127.0.0.1:PORT`, to use in place of the upstream's host.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Adds a fault after the existing ones (the first matching fault with uses left applies).
    pub fn add_fault(&self, fault: Fault) -> FaultId {
        self.add_fault_for_bodies_of(0, fault)
    }

    /// Adds a fault that only requests with a `Content-Length` of at least `min_length` match:
    /// a test aims it at one large blob's PATCH (whose path names no digest) this way.
    pub fn add_fault_for_bodies_of(&self, min_length: u64, fault: Fault) -> FaultId {
        let remaining = match &fault {
            Fault::Status { times, .. } => *times,
            Fault::ResetDuringBody { times, .. } => Some(*times),
            Fault::Throttle { .. } => None,
            Fault::Stall { times, .. } => Some(*times),
        };
        let mut faults = self.shared.faults.lock().unwrap();
        faults.push(ActiveFault {
            fault,
            remaining,
            served: 0,
            min_length,
        });
        FaultId(faults.len() - 1)
    }

    /// How many requests fault `id` was applied to so far: a test proves with it that the
    /// fault it set up was really met, not just that the run survived.
    pub fn served(&self, id: FaultId) -> usize {
        self.shared
            .faults
            .lock()
            .unwrap()
            .get(id.0)
            .map_or(0, |active| active.served)
    }

    /// Removes every fault; [`FaultId`]s given out before no longer name anything.
    pub fn clear_faults(&self) {
        self.shared.faults.lock().unwrap().clear();
    }

    /// `(method, path?query)` of every request received, in arrival order (faulted ones too).
    pub fn requests(&self) -> Vec<(String, String)> {
        self.shared
            .requests
            .lock()
            .unwrap()
            .iter()
            .map(|request| (request.method.clone(), request.target.clone()))
            .collect()
    }

    /// How many recorded requests have `method` and a path-and-query containing `path_contains`.
    pub fn count(&self, method: &str, path_contains: &str) -> usize {
        self.count_bodies_of(0, method, path_contains)
    }

    /// Like [`Proxy::count`], counting only requests with a `Content-Length` of at least
    /// `min_length` (all of them with 0).
    pub fn count_bodies_of(&self, min_length: u64, method: &str, path_contains: &str) -> usize {
        self.shared
            .requests
            .lock()
            .unwrap()
            .iter()
            .filter(|request| request.method == method && request.target.contains(path_contains))
            .filter(|request| min_length == 0 || request.length >= Some(min_length))
            .count()
    }

    /// How many faults were applied (every status, reset and stall; throttling not counted).
    pub fn injected(&self) -> usize {
        self.shared.injected.load(Ordering::SeqCst)
    }

    /// Forgets the recorded requests.
    pub fn reset_counts(&self) {
        self.shared.requests.lock().unwrap().clear();
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.shutdown.store(true, Ordering::SeqCst);
        // Unblock accept(); the loop sees the flag and ends.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        if let Some(accept) = self.accept.take() {
            let _ = accept.join();
        }
    }
}

enum Body {
    Empty,
    Length(u64),
    Chunked,
}

impl Body {
    fn of(head: &Head) -> io::Result<Body> {
        if head.has_token("transfer-encoding", "chunked") {
            return Ok(Body::Chunked);
        }
        match head.header("content-length") {
            None => Ok(Body::Empty),
            Some(value) => match value.trim().parse::<u64>() {
                Ok(0) => Ok(Body::Empty),
                Ok(length) => Ok(Body::Length(length)),
                Err(_) => Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "bad Content-Length",
                )),
            },
        }
    }
}

/// Paces and cuts a body copy.
struct Pacer {
    /// Payload bytes still allowed through before the cut.
    budget: Option<u64>,
    bytes_per_sec: Option<u64>,
    started: Instant,
    sent: u64,
}

impl Pacer {
    fn new(budget: Option<u64>, bytes_per_sec: Option<u64>) -> Pacer {
        Pacer {
            budget,
            bytes_per_sec: bytes_per_sec.map(|rate| rate.max(1)),
            started: Instant::now(),
            sent: 0,
        }
    }

    /// The largest piece to move next (0: cut now).
    fn piece(&self, wanted: u64) -> u64 {
        let mut piece = wanted.min(64 * 1024);
        if let Some(rate) = self.bytes_per_sec {
            piece = piece.min((rate / 20).max(1));
        }
        if let Some(budget) = self.budget {
            piece = piece.min(budget);
        }
        piece
    }

    /// Sleeps until `amount` more bytes fit the rate, then accounts for them.
    fn pass(&mut self, amount: u64) {
        self.sent += amount;
        if let Some(budget) = &mut self.budget {
            *budget -= amount;
        }
        if let Some(rate) = self.bytes_per_sec {
            let due = self.started + Duration::from_secs_f64(self.sent as f64 / rate as f64);
            let now = Instant::now();
            if due > now {
                std::thread::sleep(due - now);
            }
        }
    }
}

/// Copies a request body; Ok(true) when the pacer's budget cut it short.
fn copy_body(
    reader: &mut impl BufRead,
    out: &mut impl Write,
    body: &Body,
    pacer: &mut Pacer,
) -> io::Result<bool> {
    match body {
        Body::Empty => Ok(false),
        Body::Length(length) => copy_data(reader, out, *length, pacer),
        Body::Chunked => loop {
            let mut line = Vec::new();
            reader.by_ref().take(4096).read_until(b'\n', &mut line)?;
            if !line.ends_with(b"\n") {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "bad chunk header",
                ));
            }
            let text = String::from_utf8_lossy(&line);
            let size = text.split([';', '\r', '\n']).next().unwrap_or("").trim();
            let size = u64::from_str_radix(size, 16)
                .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "bad chunk size"))?;
            out.write_all(&line)?;
            if size == 0 {
                // Trailer fields up to the empty line.
                loop {
                    let mut trailer = Vec::new();
                    reader.by_ref().take(4096).read_until(b'\n', &mut trailer)?;
                    if !trailer.ends_with(b"\n") {
                        return Err(io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            "bad chunked trailer",
                        ));
                    }
                    out.write_all(&trailer)?;
                    if trailer == b"\r\n" || trailer == b"\n" {
                        out.flush()?;
                        return Ok(false);
                    }
                }
            }
            if copy_data(reader, out, size, pacer)? {
                return Ok(true);
            }
            let mut crlf = Vec::new();
            reader.by_ref().take(2).read_until(b'\n', &mut crlf)?;
            out.write_all(&crlf)?;
        },
    }
}

fn copy_data(
    reader: &mut impl BufRead,
    out: &mut impl Write,
    mut length: u64,
    pacer: &mut Pacer,
) -> io::Result<bool> {
    let mut buffer = vec![0; 64 * 1024];
    while length > 0 {
        let piece = pacer.piece(length);
        if piece == 0 {
            out.flush()?;
            return Ok(true);
        }
        let read = reader.read(&mut buffer[..piece as usize])?;
        if read == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "client closed inside the body",
            ));
        }
        pacer.pass(read as u64);
        out.write_all(&buffer[..read])?;
        length -= read as u64;
    }
    out.flush()?;
    Ok(false)
}

/// Closes `stream` with a TCP reset instead of an orderly FIN.
fn reset(stream: TcpStream) {
    use std::os::fd::AsRawFd;
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: a valid socket descriptor and a correctly sized linger struct.
    unsafe {
        libc::setsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&linger as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        );
    }
    drop(stream);
}

fn reason(status: u16) -> &'static str {
    match status {
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        408 => "Request Timeout",
        409 => "Conflict",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Injected Fault",
    }
}

/// A complete `Connection: close` response with an OCI error body (no body for HEAD).
fn error_response(method: &str, status: u16, retry_after: Option<u64>) -> Vec<u8> {
    let code = match status {
        401 => "UNAUTHORIZED",
        403 => "DENIED",
        429 => "TOOMANYREQUESTS",
        503 => "UNAVAILABLE",
        _ => "UNKNOWN",
    };
    let body = serde_json::json!({"errors": [{
        "code": code,
        "message": format!("fault injected by the imgpack test proxy ({status})"),
        "detail": null,
    }]})
    .to_string();
    let mut head = format!(
        "HTTP/1.1 {status} {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n",
        reason(status),
        body.len()
    );
    if let Some(seconds) = retry_after {
        head.push_str(&format!("Retry-After: {seconds}\r\n"));
    }
    head.push_str("Connection: close\r\n\r\n");
    let mut response = head.into_bytes();
    if method != "HEAD" {
        response.extend_from_slice(body.as_bytes());
    }
    response
}

fn handle(client: TcpStream, shared: &Shared) -> io::Result<()> {
    client.set_read_timeout(Some(Duration::from_secs(30)))?;
    client.set_write_timeout(Some(Duration::from_secs(30)))?;
    let _ = client.set_nodelay(true);
    let mut reader = BufReader::new(client.try_clone()?);
    let mut client = client;

    // Not HTTP (a TLS ClientHello from a client trying https first): answer like Go does.
    let first = reader.fill_buf()?;
    if first.is_empty() {
        return Ok(());
    }
    if !first[0].is_ascii_alphabetic() {
        client.write_all(
            b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        )?;
        let _ = client.shutdown(Shutdown::Both);
        return Ok(());
    }
    let Some(head) = read_head(&mut reader)? else {
        return Ok(());
    };
    let mut start = head.start.split(' ');
    let method = start.next().unwrap_or_default().to_owned();
    let target = start.next().unwrap_or_default().to_owned();
    // An absolute-form target (`http://host/path`) is recorded as its path and query.
    let path = match target.split_once("://") {
        Some((_, rest)) => rest.find('/').map_or("/", |i| &rest[i..]).to_owned(),
        None => target.clone(),
    };
    let body = Body::of(&head);
    let length = match &body {
        Ok(Body::Empty) => Some(0),
        Ok(Body::Length(length)) => Some(*length),
        _ => None,
    };
    shared.requests.lock().unwrap().push(Recorded {
        method: method.clone(),
        target: path.clone(),
        length,
    });
    let body = match body {
        Ok(body) => body,
        Err(_) => {
            client.write_all(&error_response(&method, 400, None))?;
            return Ok(());
        }
    };
    let expects_continue = head.has_token("expect", "100-continue");
    let has_body = !matches!(body, Body::Empty);

    let mut action = shared.action(&method, &path, length);
    if let Action::Stall {
        seconds,
        then_close,
    } = action
    {
        std::thread::sleep(Duration::from_secs_f64(seconds));
        if then_close {
            return Ok(());
        }
        action = Action::Forward {
            bytes_per_sec: None,
        };
    }
    match action {
        Action::Stall { .. } => unreachable!("handled above"),
        Action::Status {
            status,
            retry_after,
        } => {
            if !expects_continue {
                copy_body(
                    &mut reader,
                    &mut io::sink(),
                    &body,
                    &mut Pacer::new(None, None),
                )?;
            }
            client.write_all(&error_response(&method, status, retry_after))?;
            client.flush()?;
            let _ = client.shutdown(Shutdown::Both);
            Ok(())
        }
        Action::Reset { after_bytes } => {
            let mut upstream = connect_upstream(shared, &mut client, &method)?;
            forward_head(&head, &mut upstream)?;
            if expects_continue && has_body {
                client.write_all(b"HTTP/1.1 100 Continue\r\n\r\n")?;
            }
            let _ = copy_body(
                &mut reader,
                &mut upstream,
                &body,
                &mut Pacer::new(Some(after_bytes), None),
            );
            // The reader holds the last other descriptor of the client socket: close it first
            // so dropping `client` (with SO_LINGER 0) really sends the reset now.
            drop(reader);
            reset(client);
            let _ = upstream.shutdown(Shutdown::Both);
            Ok(())
        }
        Action::Forward { bytes_per_sec } => {
            let mut upstream = connect_upstream(shared, &mut client, &method)?;
            forward_head(&head, &mut upstream)?;
            if expects_continue && has_body {
                client.write_all(b"HTTP/1.1 100 Continue\r\n\r\n")?;
            }
            // The body goes up on its own thread so an early upstream answer (a 401 before the
            // body) still reaches the client.
            let mut upstream_writer = upstream.try_clone()?;
            let body_thread = std::thread::spawn(move || {
                let result = copy_body(
                    &mut reader,
                    &mut upstream_writer,
                    &body,
                    &mut Pacer::new(None, bytes_per_sec),
                );
                // Keep the client socket open until the body is consumed or abandoned.
                drop(reader);
                result
            });
            let relayed = relay_response(upstream, &mut client);
            let _ = client.shutdown(Shutdown::Write);
            drop(client);
            // When the upstream answered without reading the body, the client may stop sending:
            // the read timeout bounds the thread.
            let _ = body_thread.join();
            relayed
        }
    }
}

fn connect_upstream(
    shared: &Shared,
    client: &mut TcpStream,
    method: &str,
) -> io::Result<TcpStream> {
    match TcpStream::connect(&shared.upstream) {
        Ok(upstream) => {
            upstream.set_read_timeout(Some(Duration::from_secs(60)))?;
            upstream.set_write_timeout(Some(Duration::from_secs(30)))?;
            let _ = upstream.set_nodelay(true);
            Ok(upstream)
        }
        Err(err) => {
            let _ = client.write_all(&error_response(method, 502, None));
            Err(err)
        }
    }
}

/// The request head with `Connection: close` instead of any hop-by-hop connection headers.
fn forward_head(head: &Head, upstream: &mut TcpStream) -> io::Result<()> {
    let mut out = format!("{}\r\n", head.start);
    for (name, value) in &head.headers {
        let hop = ["connection", "keep-alive", "proxy-connection", "expect"]
            .iter()
            .any(|h| name.eq_ignore_ascii_case(h));
        if !hop {
            out.push_str(&format!("{name}: {value}\r\n"));
        }
    }
    out.push_str("Connection: close\r\n\r\n");
    upstream.write_all(out.as_bytes())?;
    upstream.flush()
}

/// Copies the upstream response to the client until the upstream closes.
fn relay_response(upstream: TcpStream, client: &mut TcpStream) -> io::Result<()> {
    let mut reader = BufReader::new(upstream);
    loop {
        let Some(head) = read_head(&mut reader)? else {
            return Ok(());
        };
        let status = head.status().unwrap_or(0);
        if (100..200).contains(&status) {
            // An interim response (100 Continue): pass it on, the final one follows.
            client.write_all(&head.raw)?;
            continue;
        }
        if head.has_token("connection", "close") {
            client.write_all(&head.raw)?;
        } else {
            let end = head.raw.len()
                - if head.raw.ends_with(b"\r\n\r\n") {
                    2
                } else {
                    1
                };
            client.write_all(&head.raw[..end])?;
            client.write_all(b"Connection: close\r\n")?;
            client.write_all(&head.raw[end..])?;
        }
        break;
    }
    io::copy(&mut reader, client)?;
    client.flush()
}
