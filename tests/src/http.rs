//! The one HTTP/1.1 kit of the test support: free ports on 127.0.0.1, the message-head parser
//! the proxy and the token server read requests with, and a tiny client (one request per
//! connection, `Connection: close`, the answer read to EOF) for probing registries and services.

use std::io::{self, BufRead, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use serde_json::Value;

/// A port of 127.0.0.1 that was free a moment ago: bound, then closed. Until someone binds it
/// again it refuses connections, which is also what a test needs from a registry that is down.
/// A caller that binds it retries if another process took it in between.
pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("cannot bind 127.0.0.1:0");
    listener.local_addr().unwrap().port()
}

/// `127.0.0.1:PORT` of a port that nobody listens on (see [`free_port`]).
pub fn refusing_host() -> String {
    format!("127.0.0.1:{}", free_port())
}

/// An HTTP/1.x message head: the start line, the header fields, and its raw bytes.
#[derive(Clone, Debug)]
pub struct Head {
    pub start: String,
    pub headers: Vec<(String, String)>,
    pub raw: Vec<u8>,
}

impl Head {
    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    }

    /// Whether some `name` header lists `token` (comma-separated, case-insensitive).
    pub fn has_token(&self, name: &str, token: &str) -> bool {
        self.headers
            .iter()
            .filter(|(key, _)| key.eq_ignore_ascii_case(name))
            .flat_map(|(_, value)| value.split(','))
            .any(|item| item.trim().eq_ignore_ascii_case(token))
    }

    /// The status code of a response head (`HTTP/1.1 404 Not Found` gives 404).
    pub fn status(&self) -> Option<u16> {
        let mut parts = self.start.split(' ');
        let version = parts.next()?;
        if !version.starts_with("HTTP/") {
            return None;
        }
        parts.next()?.parse().ok()
    }
}

const MAX_HEAD: usize = 256 * 1024;

/// Reads one message head up to its empty line; None at EOF before the first byte.
pub fn read_head(reader: &mut impl BufRead) -> io::Result<Option<Head>> {
    let mut raw = Vec::new();
    let mut start = None;
    let mut headers = Vec::new();
    loop {
        let before = raw.len();
        let read = reader
            .by_ref()
            .take((MAX_HEAD - before) as u64)
            .read_until(b'\n', &mut raw)?;
        if read == 0 {
            if raw.is_empty() {
                return Ok(None);
            }
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "connection closed inside a message head",
            ));
        }
        if !raw.ends_with(b"\n") {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "message head too large",
            ));
        }
        let line = String::from_utf8_lossy(&raw[before..]);
        let line = line.trim_end_matches(['\r', '\n']);
        if start.is_none() {
            start = Some(line.to_owned());
        } else if line.is_empty() {
            break;
        } else if let Some((name, value)) = line.split_once(':') {
            headers.push((name.trim().to_owned(), value.trim().to_owned()));
        }
    }
    Ok(Some(Head {
        start: start.unwrap_or_default(),
        headers,
        raw,
    }))
}

/// A whole response: its head and its body (chunked framing removed).
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub head: Head,
    pub body: Vec<u8>,
}

impl Response {
    /// Parses a response read to EOF.
    pub fn parse(raw: &[u8]) -> io::Result<Response> {
        let mut reader = raw;
        let head = read_head(&mut reader)?
            .ok_or_else(|| io::Error::new(io::ErrorKind::UnexpectedEof, "no response at all"))?;
        let status = head.status().ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("not an HTTP response: {:?}", head.start),
            )
        })?;
        let body = if head.has_token("transfer-encoding", "chunked") {
            dechunk(reader)?
        } else {
            reader.to_vec()
        };
        Ok(Response { status, head, body })
    }

    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.head.header(name)
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body as JSON; panics (with the body) when it is not.
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|err| panic!("not JSON ({err}): {}", self.text()))
    }
}

/// The payload of a chunked body.
fn dechunk(mut reader: &[u8]) -> io::Result<Vec<u8>> {
    let bad = |what: &str| io::Error::new(io::ErrorKind::InvalidData, what.to_owned());
    let mut body = Vec::new();
    loop {
        let mut line = Vec::new();
        reader.read_until(b'\n', &mut line)?;
        let text = String::from_utf8_lossy(&line);
        let size = text.split([';', '\r', '\n']).next().unwrap_or("").trim();
        let size = usize::from_str_radix(size, 16).map_err(|_| bad("bad chunk size"))?;
        if size == 0 {
            return Ok(body);
        }
        if reader.len() < size + 2 {
            return Err(bad("chunk cut short"));
        }
        body.extend_from_slice(&reader[..size]);
        reader = &reader[size + 2..];
    }
}

/// Sends `request` (raw bytes) to `host` on a new connection and reads the answer to EOF.
pub fn exchange(host: &str, request: &[u8]) -> io::Result<Vec<u8>> {
    let address: SocketAddr = host
        .to_socket_addrs()?
        .next()
        .ok_or_else(|| io::Error::other(format!("no address for {host}")))?;
    let mut stream = TcpStream::connect_timeout(&address, Duration::from_secs(5))?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    stream.set_write_timeout(Some(Duration::from_secs(30)))?;
    stream.write_all(request)?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response)?;
    Ok(response)
}

/// One request to `host` (`127.0.0.1:PORT`) with `Connection: close`: `headers` are whole
/// lines (`Accept: …`) and a non-empty `body` gets its `Content-Length`.
pub fn request(
    host: &str,
    method: &str,
    target: &str,
    headers: &[&str],
    body: &[u8],
) -> io::Result<Response> {
    let mut raw = format!("{method} {target} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n");
    for header in headers {
        raw.push_str(header);
        raw.push_str("\r\n");
    }
    if !body.is_empty() {
        raw.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    raw.push_str("\r\n");
    let mut raw = raw.into_bytes();
    raw.extend_from_slice(body);
    Response::parse(&exchange(host, &raw)?)
}

/// `GET path` on `host`, tried again until the server answers at all (a service still starting
/// up), for `patience` at most; panics with the last error after that.
pub fn get_when_up(host: &str, path: &str, patience: Duration) -> Response {
    let deadline = Instant::now() + patience;
    loop {
        match request(host, "GET", path, &[], b"") {
            Ok(response) => return response,
            Err(err) if Instant::now() < deadline => {
                let _ = err;
                std::thread::sleep(Duration::from_millis(100));
            }
            Err(err) => panic!("GET {path} on {host}: no answer within {patience:?}: {err}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_heads_and_bodies() {
        let raw = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nX-A: 1, two\r\n\r\nhello";
        let response = Response::parse(raw).unwrap();
        assert_eq!(response.status, 200);
        assert_eq!(response.header("content-type"), Some("text/plain"));
        assert!(response.head.has_token("x-a", "TWO"));
        assert_eq!(response.body, b"hello");

        let chunked =
            b"HTTP/1.1 404 Not Found\r\nTransfer-Encoding: chunked\r\n\r\n3;x=1\r\nabc\r\n2\r\nde\r\n0\r\n\r\n";
        let response = Response::parse(chunked).unwrap();
        assert_eq!((response.status, &response.body[..]), (404, &b"abcde"[..]));

        assert!(Response::parse(b"").is_err());
        assert!(Response::parse(b"SSH-2.0-OpenSSH\r\n\r\n").is_err());
        let mut request = &b"GET / HTTP/1.1\r\nHost: x\r\n\r\nrest"[..];
        let head = read_head(&mut request).unwrap().unwrap();
        assert_eq!(
            (head.start.as_str(), head.status()),
            ("GET / HTTP/1.1", None)
        );
        assert_eq!(request, b"rest");
    }

    #[test]
    fn a_free_port_refuses_connections() {
        let host = refusing_host();
        let err = request(&host, "GET", "/", &[], b"").unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::ConnectionRefused, "{err}");
    }
}
