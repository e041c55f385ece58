//! Applying configured credentials to outgoing requests (sources and endpoints): static
//! credentials, and access tokens obtained by OAuth2 client credentials or by a refresh-token
//! login (Beds24 v2).
//!
//! Tokens are cached in memory and in a [`TokenCache`] (the state file: a restart does not mint a
//! new one, as some APIs cap tokens per day), reused until shortly before expiry, dropped on a
//! 401, and never logged.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use reqwest::RequestBuilder;

use super::redact;
use crate::clock::Clock;
use crate::config::Auth;

/// Why a token could not be obtained. Never contains a secret or a token.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// The token endpoint could not be reached.
    #[error("token request to {url} failed: {reason}")]
    Request {
        /// Token URL without its query.
        url: String,
        /// Transport error.
        reason: String,
    },
    /// The token endpoint refused.
    #[error("token request to {url} answered HTTP {status}")]
    Status {
        /// Token URL without its query.
        url: String,
        /// HTTP status.
        status: u16,
    },
    /// The answer had no token.
    #[error("token answer from {url} has no token at {pointer}")]
    NoToken {
        /// Token URL without its query.
        url: String,
        /// The pointer looked at.
        pointer: String,
    },
}

/// Refresh this long before a token expires.
pub const REFRESH_MARGIN: Duration = Duration::from_secs(60);
/// Lifetime assumed when a token answer does not say.
pub const DEFAULT_TOKEN_LIFETIME: Duration = Duration::from_secs(3600);

/// An access token and when it expires. `Debug` hides the token.
#[derive(Clone, PartialEq, Eq)]
pub struct Token {
    /// The token.
    pub token: String,
    /// When it expires (ms since epoch).
    pub expires_ms: i64,
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Token(<redacted>, expires_ms: {})", self.expires_ms)
    }
}

/// Where minted tokens are kept across restarts (the state file). Blocking: called from the
/// blocking pool.
pub trait TokenCache: Send + Sync + 'static {
    /// The cached token under `key`.
    fn get(&self, key: &str) -> Result<Option<Token>, String>;
    /// Caches a token under `key`, or forgets it with `None`.
    fn put(&self, key: &str, token: Option<&Token>) -> Result<(), String>;
}

/// A cache that keeps nothing (tests, and `check --probe` before a state file exists).
#[derive(Debug, Default)]
pub struct NoCache;

impl TokenCache for NoCache {
    fn get(&self, _key: &str) -> Result<Option<Token>, String> {
        Ok(None)
    }
    fn put(&self, _key: &str, _token: Option<&Token>) -> Result<(), String> {
        Ok(())
    }
}

/// Applies one [`Auth`] to requests, minting and caching tokens as needed.
pub struct Authorizer {
    auth: Auth,
    cache_key: String,
    cache: Arc<dyn TokenCache>,
    clock: Clock,
    http: reqwest::Client,
    cached: tokio::sync::Mutex<Option<Token>>,
}

impl std::fmt::Debug for Authorizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Authorizer({})", self.cache_key)
    }
}

impl Authorizer {
    /// `cache_key` names the token in the store (e.g. `source:hotel`).
    pub fn new(
        auth: Auth,
        cache_key: String,
        cache: Arc<dyn TokenCache>,
        clock: Clock,
        timeout: Duration,
    ) -> Result<Self, String> {
        let http = super::client(timeout.min(Duration::from_secs(10)), timeout)?;
        Ok(Authorizer {
            auth,
            cache_key,
            cache,
            clock,
            http,
            cached: tokio::sync::Mutex::new(None),
        })
    }

    async fn cache_get(&self) -> Result<Option<Token>, String> {
        let (cache, key) = (self.cache.clone(), self.cache_key.clone());
        tokio::task::spawn_blocking(move || cache.get(&key))
            .await
            .map_err(|e| e.to_string())?
    }

    async fn cache_put(&self, token: Option<Token>) -> Result<(), String> {
        let (cache, key) = (self.cache.clone(), self.cache_key.clone());
        tokio::task::spawn_blocking(move || cache.put(&key, token.as_ref()))
            .await
            .map_err(|e| e.to_string())?
    }

    /// True when a 401 may be cured by minting a new token.
    pub fn uses_tokens(&self) -> bool {
        matches!(self.auth, Auth::OAuth2 { .. } | Auth::TokenRefresh { .. })
    }

    /// Adds the credentials to a request.
    pub async fn apply(&self, req: RequestBuilder) -> Result<RequestBuilder, AuthError> {
        Ok(match &self.auth {
            Auth::None => req,
            Auth::Header {
                name,
                prefix,
                value,
            } => req.header(
                name.as_str(),
                sensitive(&format!("{prefix}{}", value.expose())),
            ),
            Auth::Query { name, value } => req.query(&[(name.as_str(), value.expose())]),
            Auth::Basic { username, password } => {
                let raw = format!("{username}:{}", password.expose());
                let b64 = base64::engine::general_purpose::STANDARD.encode(raw);
                req.header("authorization", sensitive(&format!("Basic {b64}")))
            }
            Auth::Bearer { token } => req.header(
                "authorization",
                sensitive(&format!("Bearer {}", token.expose())),
            ),
            Auth::OAuth2 { .. } => {
                let t = self.token().await?;
                req.header("authorization", sensitive(&format!("Bearer {t}")))
            }
            Auth::TokenRefresh { header, .. } => {
                let t = self.token().await?;
                req.header(header.as_str(), sensitive(&t))
            }
        })
    }

    /// Forgets the current token (after a 401), so the next [`Authorizer::apply`] mints one.
    pub async fn invalidate(&self) {
        let mut cached = self.cached.lock().await;
        *cached = None;
        if let Err(e) = self.cache_put(None).await {
            tracing::warn!(error = %e, "cannot forget a cached token");
        }
    }

    /// The current access token, minting one if none is cached or it is about to expire.
    pub async fn token(&self) -> Result<String, AuthError> {
        let now = self.clock.now_ms();
        let fresh = |t: &Token| t.expires_ms - now > REFRESH_MARGIN.as_millis() as i64;
        let mut cached = self.cached.lock().await;
        if let Some(t) = cached.as_ref().filter(|t| fresh(t)) {
            return Ok(t.token.clone());
        }
        if let Ok(Some(t)) = self.cache_get().await
            && fresh(&t)
        {
            let token = t.token.clone();
            *cached = Some(t);
            return Ok(token);
        }
        let t = self.mint().await?;
        let token = t.token.clone();
        if let Err(e) = self.cache_put(Some(t.clone())).await {
            tracing::warn!(error = %e, "cannot persist a new token; it will be minted again after a restart");
        }
        *cached = Some(t);
        Ok(token)
    }

    async fn mint(&self) -> Result<Token, AuthError> {
        let (url, req, token_pointer, expires_pointer) = match &self.auth {
            Auth::OAuth2 {
                token_url,
                client_id,
                secret,
                scope,
            } => {
                let mut form = vec![
                    ("grant_type", "client_credentials".to_string()),
                    ("client_id", client_id.clone()),
                    ("client_secret", secret.expose().to_string()),
                ];
                if let Some(s) = scope {
                    form.push(("scope", s.clone()));
                }
                let body = url::form_urlencoded::Serializer::new(String::new())
                    .extend_pairs(form)
                    .finish();
                let req = self
                    .http
                    .post(token_url.clone())
                    .header("content-type", "application/x-www-form-urlencoded")
                    .header("accept", "application/json")
                    .body(body);
                (token_url, req, "/access_token", "/expires_in")
            }
            Auth::TokenRefresh {
                token_url,
                refresh_header,
                secret,
                token_pointer,
                expires_pointer,
                ..
            } => {
                let req = self
                    .http
                    .get(token_url.clone())
                    .header(refresh_header.as_str(), sensitive(secret.expose()))
                    .header("accept", "application/json");
                (
                    token_url,
                    req,
                    token_pointer.as_str(),
                    expires_pointer.as_str(),
                )
            }
            _ => {
                return Err(AuthError::NoToken {
                    url: String::new(),
                    pointer: String::new(),
                });
            }
        };
        let resp = req.send().await.map_err(|e| AuthError::Request {
            url: redact(url),
            reason: super::describe(e),
        })?;
        let status = resp.status();
        if !status.is_success() {
            return Err(AuthError::Status {
                url: redact(url),
                status: status.as_u16(),
            });
        }
        let body = super::read_capped(resp, 1024 * 1024)
            .await
            .map_err(|e| AuthError::Request {
                url: redact(url),
                reason: e.to_string(),
            })?;
        let doc: serde_json::Value =
            serde_json::from_slice(&body).map_err(|_| AuthError::NoToken {
                url: redact(url),
                pointer: token_pointer.to_string(),
            })?;
        let token = doc
            .pointer(token_pointer)
            .and_then(|v| v.as_str())
            .filter(|s| !s.is_empty())
            .ok_or_else(|| AuthError::NoToken {
                url: redact(url),
                pointer: token_pointer.to_string(),
            })?
            .to_string();
        let lifetime = doc
            .pointer(expires_pointer)
            .and_then(|v| {
                v.as_u64()
                    .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
            })
            .map(Duration::from_secs)
            .unwrap_or(DEFAULT_TOKEN_LIFETIME);
        tracing::info!(auth = %self.cache_key, lifetime_secs = lifetime.as_secs(), "obtained a new access token");
        Ok(Token {
            token,
            expires_ms: self.clock.now_ms() + lifetime.as_millis() as i64,
        })
    }
}

fn sensitive(v: &str) -> reqwest::header::HeaderValue {
    match reqwest::header::HeaderValue::from_str(v) {
        Ok(mut h) => {
            h.set_sensitive(true);
            h
        }
        // Validated at config time; an invalid value cannot reach here, but never panic.
        Err(_) => reqwest::header::HeaderValue::from_static(""),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    /// The auth of a source configured with `auth` (the secret read from a file holding `t0k`).
    fn source_auth(auth: &str) -> Auth {
        let dir = tempfile::tempdir().unwrap();
        let secret = dir.path().join("token");
        std::fs::write(&secret, "t0k\n").unwrap();
        let auth = auth.replace(
            "SECRET",
            &format!("{{ file = {:?} }}", secret.display().to_string()),
        );
        let text =
            format!("[sources.s]\nurl = \"http://127.0.0.1:1/b\"\nevery = \"1m\"\nauth = {auth}\n");
        let c = Config::from_toml_str(&text, "t.toml").unwrap_or_else(|e| panic!("{e}"));
        c.sources[0].auth.clone()
    }

    async fn sent_headers(auth: Auth) -> reqwest::header::HeaderMap {
        let a = Authorizer::new(
            auth,
            "source:s".into(),
            Arc::new(NoCache),
            Clock::system(),
            Duration::from_secs(1),
        )
        .unwrap();
        let req = reqwest::Client::new().get("http://127.0.0.1:1/b");
        a.apply(req)
            .await
            .unwrap()
            .build()
            .unwrap()
            .headers()
            .clone()
    }

    #[tokio::test]
    async fn header_auth_sends_its_prefix_before_the_secret() {
        let h = sent_headers(source_auth(
            "{ type = \"header\", name = \"Authorization\", prefix = \"Token \", secret = SECRET }",
        ))
        .await;
        assert_eq!(h["authorization"], "Token t0k");
        assert!(h["authorization"].is_sensitive());
        let h = sent_headers(source_auth(
            "{ type = \"header\", name = \"token\", secret = SECRET }",
        ))
        .await;
        assert_eq!(h["token"], "t0k", "without a prefix, the secret alone");
    }

    #[test]
    fn a_prefix_only_applies_to_header_auth_and_must_be_sendable() {
        let problems = |auth: &str| {
            let text = format!(
                "[sources.s]\nurl = \"http://127.0.0.1:1/b\"\nevery = \"1m\"\nauth = {auth}\n"
            );
            match Config::from_toml_str(&text, "t.toml") {
                Err(crate::config::ConfigError::Invalid { problems, .. }) => problems,
                other => panic!("expected problems, got {other:?}"),
            }
        };
        let p = problems("{ type = \"bearer\", prefix = \"Token \", secret = { env = \"PATH\" } }");
        assert_eq!(p[0].key, "sources.s.auth.prefix", "{p:?}");
        let p = problems(
            "{ type = \"header\", name = \"x\", prefix = \"bad\\n\", secret = { env = \"PATH\" } }",
        );
        assert_eq!(p[0].key, "sources.s.auth.prefix", "{p:?}");
    }
}
