//! Registry authentication: parses `WWW-Authenticate` challenges and answers
//! them with basic credentials or bearer tokens from the realm the registry
//! named (never a plain-HTTP realm for an HTTPS registry), bounded in size and time.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use base64::Engine as _;
use reqwest::header::HeaderValue;
use serde::Deserialize;
use tokio::sync::Mutex;
use url::Url;

use crate::errors::{is_transient, printable, transport_error, RequestError};
use crate::limits::{read_limited, REQUEST_DEADLINE, TOKEN_LIMIT};
use crate::transport::Clients;
use crate::{Credential, Credentials};

/// What a registry asked for in `WWW-Authenticate`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Challenge {
    Basic,
    Bearer {
        realm: String,
        service: Option<String>,
    },
}

/// Parses `Basic realm="x"` or `Bearer realm="https://…",service="…",scope="…"`.
pub fn parse_challenge(header: &str) -> Option<Challenge> {
    let (scheme, params) = header.trim().split_once(' ').unwrap_or((header.trim(), ""));
    if scheme.eq_ignore_ascii_case("basic") {
        return Some(Challenge::Basic);
    }
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let params = parse_params(params);
    Some(Challenge::Bearer {
        realm: params.get("realm")?.clone(),
        service: params.get("service").cloned(),
    })
}

/// `key="value", key2=value2`: values may be quoted and hold commas.
fn parse_params(text: &str) -> HashMap<String, String> {
    let mut params = HashMap::new();
    let mut rest = text.trim();
    while let Some((key, after)) = rest.split_once('=') {
        let key = key
            .trim()
            .trim_start_matches(',')
            .trim()
            .to_ascii_lowercase();
        let after = after.trim_start();
        let (value, remaining) = if let Some(quoted) = after.strip_prefix('"') {
            let end = quoted.find('"').unwrap_or(quoted.len());
            (
                quoted[..end].to_owned(),
                quoted.get(end + 1..).unwrap_or(""),
            )
        } else {
            let end = after.find(',').unwrap_or(after.len());
            (after[..end].trim().to_owned(), &after[end..])
        };
        params.insert(key, value);
        rest = remaining.trim_start().trim_start_matches(',');
    }
    params
}

struct Token {
    value: String,
    expires_at: Instant,
}

impl Token {
    /// Refreshed a little before it expires, so a long push never sends a stale one.
    fn is_fresh(&self) -> bool {
        Instant::now() + Duration::from_secs(5) < self.expires_at
    }
}

#[derive(Deserialize)]
struct TokenResponse {
    token: Option<String>,
    access_token: Option<String>,
    expires_in: Option<u64>,
}

/// Answers registry challenges: basic credentials, or bearer tokens fetched
/// per set of scopes from the realm, cached until shortly before they expire.
pub(crate) struct Authenticator {
    clients: Clients,
    /// The registry's base URL: a realm must not be less secure than it.
    base: Url,
    registry: String,
    pub(crate) credentials: Credentials,
    challenge: Mutex<Option<Challenge>>,
    tokens: Mutex<HashMap<String, Token>>,
}

impl Authenticator {
    pub(crate) fn new(
        clients: Clients,
        base: Url,
        registry: &str,
        credentials: Credentials,
    ) -> Self {
        Self {
            clients,
            base,
            registry: registry.to_owned(),
            credentials,
            challenge: Mutex::new(None),
            tokens: Mutex::new(HashMap::new()),
        }
    }

    /// The Authorization header for a request needing `scopes`, once a challenge is known.
    pub(crate) async fn authorization(&self, scopes: &[String]) -> Result<Option<HeaderValue>> {
        let challenge = self.challenge.lock().await.clone();
        let value = match challenge {
            None => return Ok(None),
            Some(Challenge::Basic) => match &self.credentials.credential {
                Some(Credential::Basic { username, password }) => {
                    format!("Basic {}", basic(username, password))
                }
                _ => return Ok(None),
            },
            Some(Challenge::Bearer { realm, service }) => {
                format!(
                    "Bearer {}",
                    self.token(&realm, service.as_deref(), scopes).await?
                )
            }
        };
        let mut header = HeaderValue::from_str(&value)
            .context("credential holds characters not allowed in a header")?;
        header.set_sensitive(true);
        Ok(Some(header))
    }

    /// Records the challenge of a 401 and says whether sending the request
    /// again can help. A token is forgotten only when the refused request
    /// carried one: requests sent before any challenge was known all come
    /// back 401, and must not throw away the token the first of them fetched.
    ///
    /// Like docker and skopeo, a 401 without a usable challenge falls back to
    /// the one the registry gave before (on the `GET /v2/` ping or an earlier
    /// request): some registries challenge only there. With none known at all,
    /// imgpack cannot tell how to authenticate, and says so instead of guessing.
    pub(crate) async fn challenged(
        &self,
        www_authenticate: Option<&str>,
        scopes: &[String],
        sent_credentials: bool,
    ) -> Result<bool> {
        if let Some(challenge) = www_authenticate.and_then(parse_challenge) {
            if let Challenge::Bearer { realm, .. } = &challenge {
                self.check_realm(realm)?;
            }
            *self.challenge.lock().await = Some(challenge);
            if sent_credentials {
                self.tokens.lock().await.remove(&scopes.join(" "));
            }
            return Ok(true);
        }
        let known = self.challenge.lock().await.clone();
        match known {
            // A refused token may have expired early or been revoked: one fresh one is worth a try.
            Some(Challenge::Bearer { .. }) if sent_credentials => {
                self.tokens.lock().await.remove(&scopes.join(" "));
                Ok(true)
            }
            // Basic credentials refused (or none to send): the same request would be refused again.
            Some(_) => Ok(false),
            None => match www_authenticate {
                Some(other) => bail!(
                    "registry {} asks for an authentication imgpack does not speak \
                     (WWW-Authenticate: {}); imgpack answers Basic and Bearer challenges",
                    self.registry,
                    printable(other)
                ),
                None => bail!(
                    "registry {} requires authentication but sent no WWW-Authenticate challenge, \
                     neither on GET /v2/ nor on the refused request, so imgpack cannot tell \
                     whether it wants Basic credentials or a Bearer token: the registry breaks \
                     the distribution spec here; ask its operator",
                    self.registry
                ),
            },
        }
    }

    /// A realm is an http(s) URL, and HTTPS when the registry is.
    fn check_realm(&self, realm: &str) -> Result<Url> {
        let url = Url::parse(realm)
            .ok()
            .filter(|u| matches!(u.scheme(), "http" | "https"));
        let Some(url) = url else {
            bail!(
                "registry {} named the token service '{}', which is not an http(s) URL",
                self.registry,
                printable(realm)
            );
        };
        if self.base.scheme() == "https" && url.scheme() != "https" {
            bail!(
                "registry {} named the token service {} over plain HTTP: refused, imgpack sends \
                 credentials for an HTTPS registry only over HTTPS",
                self.registry,
                printable(realm)
            );
        }
        Ok(url)
    }

    async fn token(&self, realm: &str, service: Option<&str>, scopes: &[String]) -> Result<String> {
        // Held across the fetch: concurrent uploads needing the same scopes wait
        // for one token instead of each asking the token service.
        let mut tokens = self.tokens.lock().await;
        let key = scopes.join(" ");
        if let Some(token) = tokens.get(&key).filter(|t| t.is_fresh()) {
            return Ok(token.value.clone());
        }
        let token = self.fetch_token(realm, service, scopes).await?;
        let value = token.value.clone();
        tokens.insert(key, token);
        Ok(value)
    }

    async fn fetch_token(
        &self,
        realm: &str,
        service: Option<&str>,
        scopes: &[String],
    ) -> Result<Token> {
        let realm_url = self.check_realm(realm)?;
        let http = self.clients.for_url(&realm_url)?;
        let mut query: Vec<(&str, &str)> = scopes.iter().map(|s| ("scope", s.as_str())).collect();
        if let Some(service) = service {
            query.push(("service", service));
        }
        let request = match &self.credentials.credential {
            // Identity tokens are exchanged with the OAuth2 refresh-token grant, as docker does.
            Some(Credential::IdentityToken(refresh)) => {
                let scope = scopes.join(" ");
                let mut form = vec![
                    ("grant_type", "refresh_token"),
                    ("refresh_token", refresh.as_str()),
                    ("client_id", "imgpack"),
                ];
                if let Some(service) = service {
                    form.push(("service", service));
                }
                if !scope.is_empty() {
                    form.push(("scope", scope.as_str()));
                }
                http.post(realm_url).form(&form)
            }
            Some(Credential::Basic { username, password }) => {
                http.get(realm_url).query(&query).header(
                    "Authorization",
                    sensitive(&format!("Basic {}", basic(username, password)))?,
                )
            }
            None => http.get(realm_url).query(&query),
        };
        let service_name = format!(
            "the token service of {} ({})",
            self.registry,
            printable(realm)
        );
        let response = request
            .timeout(REQUEST_DEADLINE)
            .send()
            .await
            .map_err(|err| {
                let failed = transport_error(&self.registry, &err);
                RequestError {
                    message: format!("cannot reach {service_name}: {failed}"),
                    ..failed
                }
            })?;
        let status = response.status();
        if status == reqwest::StatusCode::UNAUTHORIZED || status == reqwest::StatusCode::FORBIDDEN {
            bail!(
                "authentication to {} failed: its token service refused {} ({status})",
                self.registry,
                self.credentials.describe()
            );
        }
        if !status.is_success() {
            return Err(RequestError {
                message: format!("{service_name} answered {status}"),
                transient: is_transient(status),
                retry_after: None,
            }
            .into());
        }
        let body = read_limited(
            response,
            TOKEN_LIMIT,
            &format!("the answer of {service_name}"),
        )
        .await?;
        let body: TokenResponse = serde_json::from_slice(&body)
            .with_context(|| format!("{service_name} sent a malformed answer"))?;
        let value = body
            .token
            .or(body.access_token)
            .filter(|t| !t.is_empty())
            .with_context(|| format!("{service_name} sent no token"))?;
        // The distribution spec: no expires_in means 60 seconds.
        let lifetime = Duration::from_secs(body.expires_in.unwrap_or(60).clamp(1, 86_400));
        Ok(Token {
            value,
            expires_at: Instant::now() + lifetime,
        })
    }
}

fn basic(username: &str, password: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(format!("{username}:{password}"))
}

fn sensitive(value: &str) -> Result<HeaderValue> {
    let mut header = HeaderValue::from_str(value)
        .context("credential holds characters not allowed in a header")?;
    header.set_sensitive(true);
    Ok(header)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenges_parse() {
        assert_eq!(
            parse_challenge(r#"Basic realm="Registry Realm""#),
            Some(Challenge::Basic)
        );
        assert_eq!(
            parse_challenge(
                r#"Bearer realm="https://auth.example.com/token",service="registry.example.com",scope="repository:a/b:pull,push""#
            ),
            Some(Challenge::Bearer {
                realm: "https://auth.example.com/token".into(),
                service: Some("registry.example.com".into())
            })
        );
        assert_eq!(
            parse_challenge("bearer realm=http://127.0.0.1:9/token, service=reg"),
            Some(Challenge::Bearer {
                realm: "http://127.0.0.1:9/token".into(),
                service: Some("reg".into())
            })
        );
        assert_eq!(parse_challenge("Negotiate abc"), None);
        assert_eq!(parse_challenge(r#"Bearer service="x""#), None);
    }

    fn authenticator() -> Authenticator {
        let clients = Clients::new(&crate::TransportOptions::default(), false).unwrap();
        let base = Url::parse("http://127.0.0.1:5000/").unwrap();
        Authenticator::new(clients, base, "127.0.0.1:5000", Credentials::default())
    }

    #[tokio::test]
    async fn a_bare_401_falls_back_to_the_challenge_known_before() {
        let scopes = ["repository:a/b:pull,push".to_owned()];
        // Nothing known: no guess, one line saying no challenge came.
        let auth = authenticator();
        let err = auth.challenged(None, &scopes, false).await.unwrap_err();
        assert!(
            format!("{err}").contains("sent no WWW-Authenticate challenge"),
            "{err}"
        );
        let err = auth
            .challenged(Some("Negotiate abc"), &scopes, false)
            .await
            .unwrap_err();
        assert!(format!("{err}").contains("Negotiate abc"), "{err}");
        // The ping's Basic challenge: a bare 401 is the credentials' refusal, not worth a retry.
        assert!(auth
            .challenged(Some(r#"Basic realm="r""#), &[], false)
            .await
            .unwrap());
        assert!(!auth.challenged(None, &scopes, true).await.unwrap());
        assert!(!auth.challenged(None, &scopes, false).await.unwrap());
        assert_eq!(*auth.challenge.lock().await, Some(Challenge::Basic));
        // A Bearer challenge known: a bare 401 to a token drops it and tries once more.
        let realm = r#"Bearer realm="http://127.0.0.1:9/token",service="s""#;
        assert!(auth.challenged(Some(realm), &[], false).await.unwrap());
        auth.tokens.lock().await.insert(
            scopes.join(" "),
            Token {
                value: "t".into(),
                expires_at: Instant::now() + Duration::from_secs(60),
            },
        );
        assert!(auth.challenged(None, &scopes, true).await.unwrap());
        assert!(auth.tokens.lock().await.is_empty());
    }

    #[test]
    fn tokens_are_refreshed_before_they_expire() {
        let fresh = Token {
            value: "a".into(),
            expires_at: Instant::now() + Duration::from_secs(60),
        };
        let almost = Token {
            value: "b".into(),
            expires_at: Instant::now() + Duration::from_secs(2),
        };
        assert!(fresh.is_fresh());
        assert!(!almost.is_fresh());
    }
}
