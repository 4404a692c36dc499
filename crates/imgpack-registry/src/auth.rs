use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use base64::Engine as _;
use reqwest::header::HeaderValue;
use serde::Deserialize;
use tokio::sync::Mutex;

use crate::{Credential, Credentials};

/// What a registry asked for in `WWW-Authenticate`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Challenge {
    Basic,
    Bearer {
        realm: String,
        service: Option<String>,
    },
}

/// Parses `Basic realm="x"` or `Bearer realm="https://…",service="…",scope="…"`.
pub(crate) fn parse_challenge(header: &str) -> Option<Challenge> {
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
    http: reqwest::Client,
    registry: String,
    pub(crate) credentials: Credentials,
    challenge: Mutex<Option<Challenge>>,
    tokens: Mutex<HashMap<String, Token>>,
}

impl Authenticator {
    pub(crate) fn new(http: reqwest::Client, registry: &str, credentials: Credentials) -> Self {
        Self {
            http,
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

    /// Records the challenge of a 401. A token is forgotten only when the refused
    /// request carried one: requests sent before any challenge was known all come
    /// back 401, and must not throw away the token the first of them fetched.
    pub(crate) async fn challenged(
        &self,
        www_authenticate: Option<&str>,
        scopes: &[String],
        sent_credentials: bool,
    ) -> Result<()> {
        let Some(challenge) = www_authenticate.and_then(parse_challenge) else {
            bail!(
                "registry {} answered 401 without a usable WWW-Authenticate challenge",
                self.registry
            );
        };
        *self.challenge.lock().await = Some(challenge);
        if sent_credentials {
            self.tokens.lock().await.remove(&scopes.join(" "));
        }
        Ok(())
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
                self.http.post(realm).form(&form)
            }
            Some(Credential::Basic { username, password }) => {
                self.http.get(realm).query(&query).header(
                    "Authorization",
                    sensitive(&format!("Basic {}", basic(username, password)))?,
                )
            }
            None => self.http.get(realm).query(&query),
        };
        let response = request.send().await.with_context(|| {
            format!(
                "cannot reach the token service of {} at {realm}",
                self.registry
            )
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
            bail!("the token service of {} answered {status}", self.registry);
        }
        let body: TokenResponse = response.json().await.with_context(|| {
            format!(
                "the token service of {} sent a malformed answer",
                self.registry
            )
        })?;
        let value = body
            .token
            .or(body.access_token)
            .context("the token service sent no token")?;
        // The distribution spec: no expires_in means 60 seconds.
        let lifetime = Duration::from_secs(body.expires_in.unwrap_or(60).max(1));
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
