//! A bearer-token server for distribution's `auth: token`: the flow Docker Hub, GHCR, ECR and
//! Harbor use, on 127.0.0.1 with std threads.
//!
//! - `GET /token?service=…&scope=…&scope=…` with HTTP basic auth (docker's token spec). A request
//!   without credentials gets an anonymous token with empty `access`; wrong credentials get 401.
//! - `POST /token` with a form body (docker's OAuth2 spec): `grant_type=refresh_token` with the
//!   server's [`TokenServer::refresh_token`], or `grant_type=password` with the user's password.
//!
//! Answers `{"token", "access_token", "expires_in", "issued_at"}` (plus `refresh_token` when the
//! client asks for one: `offline_token=true` on GET, `access_type=offline` on POST). The JWT is
//! ES256, signed with a key whose self-signed certificate ([`TokenServer::signing_cert_pem`]) is
//! the registry's `rootcertbundle` and sits in the header's `x5c`. Authenticated tokens grant
//! exactly the requested actions of every requested `type:name:actions` scope.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use serde_json::{json, Value};

use crate::http::{read_head, Head};

/// A running token server; stops accepting when dropped.
pub struct TokenServer {
    port: u16,
    state: Arc<State>,
    cert_pem: String,
    shutdown: Arc<AtomicBool>,
    accept: Option<JoinHandle<()>>,
}

struct State {
    service: String,
    issuer: String,
    user: String,
    password: String,
    refresh_token: String,
    /// PKCS#8 DER of the ES256 signing key.
    key_der: Vec<u8>,
    /// Base64 (standard alphabet) DER of the signing certificate, for the `x5c` header.
    cert_b64: String,
    expires_in: AtomicU64,
    requests: AtomicUsize,
    next_jti: AtomicU64,
}

impl TokenServer {
    /// Starts a token server on a free port of 127.0.0.1 issuing tokens for `service` (the JWT
    /// `aud`) as `issuer` (`iss`), accepting `user`/`password` and its own refresh token.
    pub fn start(service: &str, issuer: &str, user: &str, password: &str) -> TokenServer {
        let key = rcgen::KeyPair::generate().expect("cannot generate the token signing key");
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "imgpack test token signer");
        params.key_usages = vec![rcgen::KeyUsagePurpose::DigitalSignature];
        let cert = params
            .self_signed(&key)
            .expect("cannot self-sign the token signing certificate");

        let listener = TcpListener::bind("127.0.0.1:0").expect("cannot bind the token server");
        let port = listener.local_addr().unwrap().port();
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let state = Arc::new(State {
            service: service.to_owned(),
            issuer: issuer.to_owned(),
            user: user.to_owned(),
            password: password.to_owned(),
            refresh_token: format!("imgpack-test-refresh-{port}-{nanos:x}"),
            key_der: key.serialize_der(),
            cert_b64: base64::engine::general_purpose::STANDARD.encode(cert.der()),
            expires_in: AtomicU64::new(300),
            requests: AtomicUsize::new(0),
            next_jti: AtomicU64::new(1),
        });
        let shutdown = Arc::new(AtomicBool::new(false));
        let accept = {
            let state = state.clone();
            let shutdown = shutdown.clone();
            std::thread::Builder::new()
                .name(format!("token-server-{port}"))
                .spawn(move || {
                    for connection in listener.incoming() {
                        if shutdown.load(Ordering::SeqCst) {
                            break;
                        }
                        let Ok(connection) = connection else { continue };
                        let state = state.clone();
                        std::thread::spawn(move || serve(connection, &state));
                    }
                })
                .unwrap()
        };
        TokenServer {
            port,
            state,
            cert_pem: cert.pem(),
            shutdown,
            accept: Some(accept),
        }
    }

    /// The token endpoint, the registry's `realm`: `http://127.0.0.1:PORT/token`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/token", self.port)
    }

    /// How many requests reached `/token` (granted or refused).
    pub fn requests(&self) -> usize {
        self.state.requests.load(Ordering::SeqCst)
    }

    /// Lifetime of the tokens issued from now on (`expires_in` and `exp - iat`); 300 s at start.
    pub fn set_expires_in(&self, seconds: u64) {
        self.state.expires_in.store(seconds, Ordering::SeqCst);
    }

    /// An identity (refresh) token the server accepts with `grant_type=refresh_token`, as docker
    /// stores in `auths.<registry>.identitytoken`.
    pub fn refresh_token(&self) -> &str {
        &self.state.refresh_token
    }

    /// PEM of the self-signed certificate whose key signs the tokens (the `rootcertbundle`).
    pub fn signing_cert_pem(&self) -> &str {
        &self.cert_pem
    }
}

impl Drop for TokenServer {
    fn drop(&mut self) {
        self.shutdown.store(true, Ordering::SeqCst);
        // Unblock accept(); the loop sees the flag and ends.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        if let Some(accept) = self.accept.take() {
            let _ = accept.join();
        }
    }
}

/// One request per connection, answered with `Connection: close`.
fn serve(stream: TcpStream, state: &State) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
    let _ = stream.set_write_timeout(Some(Duration::from_secs(10)));
    let Ok(read_half) = stream.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(read_half);
    let (status, body, extra) = match read_request(&mut reader) {
        Ok(Some((head, body))) => answer(state, &head, &body),
        Ok(None) => return,
        Err(_) => (400, error_body("bad request"), None),
    };
    let reason = match status {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        404 => "Not Found",
        405 => "Method Not Allowed",
        _ => "Error",
    };
    let body = body.to_string();
    let mut response = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    if let Some(header) = extra {
        response.push_str(&header);
        response.push_str("\r\n");
    }
    response.push_str("\r\n");
    response.push_str(&body);
    let mut stream = stream;
    let _ = stream.write_all(response.as_bytes());
    let _ = stream.flush();
    let _ = stream.shutdown(Shutdown::Write);
    // Read what is left so closing does not reset the connection under the response.
    let _ = std::io::copy(&mut reader.take(1 << 20), &mut std::io::sink());
}

fn read_request(reader: &mut impl BufRead) -> std::io::Result<Option<(Head, Vec<u8>)>> {
    let Some(head) = read_head(reader)? else {
        return Ok(None);
    };
    let length: usize = head
        .header("content-length")
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    if length > 1 << 20 {
        return Err(std::io::Error::other("body too large"));
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body)?;
    Ok(Some((head, body)))
}

fn error_body(message: &str) -> Value {
    json!({"errors": [{"code": "UNAUTHORIZED", "message": message, "detail": null}]})
}

/// Status, JSON body and one optional extra header line for a request.
fn answer(state: &State, head: &Head, body: &[u8]) -> (u16, Value, Option<String>) {
    let mut parts = head.start.split(' ');
    let method = parts.next().unwrap_or_default();
    let target = parts.next().unwrap_or_default();
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    if path != "/token" {
        return (404, json!({"error": "not found"}), None);
    }
    state.requests.fetch_add(1, Ordering::SeqCst);
    let unauthorized = || {
        (
            401,
            error_body("invalid credentials"),
            Some("WWW-Authenticate: Basic realm=\"imgpack-test-token\"".to_owned()),
        )
    };
    let (params, subject, offline) = match method {
        "GET" => {
            let params = parse_form(query);
            let subject = match head.header("authorization").and_then(basic_credentials) {
                None => None,
                Some((user, password)) if user == state.user && password == state.password => {
                    Some(user)
                }
                Some(_) => return unauthorized(),
            };
            let offline = param(&params, "offline_token") == Some("true");
            (params, subject, offline)
        }
        "POST" => {
            let params = parse_form(&String::from_utf8_lossy(body));
            let subject = match param(&params, "grant_type") {
                Some("refresh_token") => {
                    if param(&params, "refresh_token") != Some(state.refresh_token.as_str()) {
                        return unauthorized();
                    }
                    state.user.clone()
                }
                Some("password") => {
                    if param(&params, "username") != Some(state.user.as_str())
                        || param(&params, "password") != Some(state.password.as_str())
                    {
                        return unauthorized();
                    }
                    state.user.clone()
                }
                _ => return (400, json!({"error": "unsupported_grant_type"}), None),
            };
            let offline = param(&params, "access_type") == Some("offline");
            (params, Some(subject), offline)
        }
        _ => return (405, json!({"error": "method not allowed"}), None),
    };

    let access: Vec<Value> = match subject {
        None => Vec::new(),
        Some(_) => params
            .iter()
            .filter(|(name, _)| name == "scope")
            .flat_map(|(_, value)| value.split(' '))
            .filter_map(parse_scope)
            .collect(),
    };
    let expires_in = state.expires_in.load(Ordering::SeqCst);
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let jti = state.next_jti.fetch_add(1, Ordering::SeqCst);
    let claims = json!({
        "iss": state.issuer,
        "sub": subject.clone().unwrap_or_default(),
        "aud": state.service,
        "exp": now + expires_in,
        "nbf": now,
        "iat": now,
        "jti": format!("imgpack-test-{jti}"),
        "access": access,
    });
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
    header.x5c = Some(vec![state.cert_b64.clone()]);
    let token = jsonwebtoken::encode(
        &header,
        &claims,
        &jsonwebtoken::EncodingKey::from_ec_der(&state.key_der),
    )
    .expect("cannot sign a token");
    let mut answer = json!({
        "token": token,
        "access_token": token,
        "expires_in": expires_in,
        "issued_at": rfc3339(now),
    });
    if offline && subject.is_some() {
        answer["refresh_token"] = json!(state.refresh_token);
    }
    (200, answer, None)
}

/// `repository:NAME:pull,push` as a claim entry; the name may hold `:` (a `type(class)` too).
fn parse_scope(scope: &str) -> Option<Value> {
    let (kind, rest) = scope.split_once(':')?;
    let (name, actions) = rest.rsplit_once(':')?;
    let actions: Vec<&str> = actions.split(',').filter(|a| !a.is_empty()).collect();
    Some(json!({"type": kind, "name": name, "actions": actions}))
}

fn param<'a>(params: &'a [(String, String)], name: &str) -> Option<&'a str> {
    params
        .iter()
        .find(|(key, _)| key == name)
        .map(|(_, value)| value.as_str())
}

/// `a=1&b=x+y%3A` as decoded pairs, in order (repeated names kept).
pub(crate) fn parse_form(form: &str) -> Vec<(String, String)> {
    form.split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(key), percent_decode(value))
        })
        .collect()
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                (Some(high), Some(low)) => {
                    out.push(high << 4 | low);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            byte => out.push(byte),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex(digit: u8) -> Option<u8> {
    (digit as char).to_digit(16).map(|value| value as u8)
}

pub(crate) fn basic_credentials(header: &str) -> Option<(String, String)> {
    let (scheme, encoded) = header.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let decoded = String::from_utf8(decoded).ok()?;
    let (user, password) = decoded.split_once(':')?;
    Some((user.to_owned(), password.to_owned()))
}

/// Unix seconds as `YYYY-MM-DDTHH:MM:SSZ`.
fn rfc3339(unix: u64) -> String {
    let days = (unix / 86_400) as i64;
    let secs = unix % 86_400;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_rfc3339() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_700_000_000), "2023-11-14T22:13:20Z");
    }

    #[test]
    fn decodes_forms_and_scopes() {
        assert_eq!(
            parse_form("scope=repository%3Aa%2Fb%3Apull&scope=x+y&bad=%zz&end=%4"),
            [
                ("scope".to_owned(), "repository:a/b:pull".to_owned()),
                ("scope".to_owned(), "x y".to_owned()),
                ("bad".to_owned(), "%zz".to_owned()),
                ("end".to_owned(), "%4".to_owned()),
            ]
        );
        assert_eq!(
            parse_scope("repository:127.0.0.1:5000/a:pull,push").unwrap(),
            json!({"type": "repository", "name": "127.0.0.1:5000/a", "actions": ["pull", "push"]})
        );
        assert!(parse_scope("registry").is_none());
    }
}
