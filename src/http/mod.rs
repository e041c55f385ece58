//! Outbound HTTP, shared by sources, endpoints and token endpoints: the client builder (timeouts
//! on, redirects off), sending with one token refresh on a 401, the capped body read, error
//! descriptions without URLs, the one URL redactor, `Retry-After` parsing. It imports only config
//! types (for [`auth`]) and leaves.

pub mod auth;

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use chrono::{DateTime, Utc};
use reqwest::{RequestBuilder, Response};
use url::Url;

pub use auth::{Authorizer, Token, TokenCache};

/// The `user-agent` of every request pollhook makes.
pub const USER_AGENT: &str = concat!("pollhook/", env!("CARGO_PKG_VERSION"));

/// Builds a client for one peer: both timeouts set, redirects never followed, TLS verification
/// on (reqwest's default, never turned off).
pub fn client(connect_timeout: Duration, timeout: Duration) -> Result<reqwest::Client, String> {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(connect_timeout)
        .timeout(timeout)
        .user_agent(USER_AGENT)
        .build()
        .map_err(|e| format!("cannot build HTTP client: {e}"))
}

/// Why a request failed before a usable response arrived.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// Credentials could not be obtained (token endpoint down or refusing).
    #[error(transparent)]
    Auth(#[from] auth::AuthError),
    /// Connection, timeout or protocol failure (described without the URL).
    #[error("{0}")]
    Transport(String),
}

/// A request on its way (what the `send` step of [`send_authorized`] returns).
pub type Sending<'a> = Pin<Box<dyn Future<Output = Result<Response, reqwest::Error>> + Send + 'a>>;

/// The plain `send` step: just send.
pub fn plain(req: RequestBuilder) -> Sending<'static> {
    Box::pin(req.send())
}

/// Sends a request built by `make` with `auth`'s credentials through `send` (which may pace or
/// record the response). A 401 while token-based credentials are in use drops the cached token
/// and tries once more with a fresh one: a token can be revoked or expire early.
pub async fn send_authorized<'a>(
    auth: &Authorizer,
    make: impl Fn() -> RequestBuilder,
    send: impl Fn(RequestBuilder) -> Sending<'a>,
) -> Result<Response, SendError> {
    let mut refreshed = false;
    loop {
        let req = auth.apply(make()).await?;
        match send(req).await {
            Ok(resp)
                if resp.status() == reqwest::StatusCode::UNAUTHORIZED
                    && auth.uses_tokens()
                    && !refreshed =>
            {
                refreshed = true;
                auth.invalidate().await;
            }
            Ok(resp) => return Ok(resp),
            Err(e) => return Err(SendError::Transport(describe(e))),
        }
    }
}

/// Why a body could not be read in full.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// More than the cap.
    #[error("response larger than {0} bytes")]
    TooLarge(u64),
    /// The connection failed while reading.
    #[error("{0}")]
    Transport(String),
}

/// Reads a response body, refusing more than `limit` bytes (before reading, when the length is
/// announced, and while reading otherwise).
pub async fn read_capped(mut resp: Response, limit: u64) -> Result<Vec<u8>, ReadError> {
    if resp.content_length().is_some_and(|n| n > limit) {
        return Err(ReadError::TooLarge(limit));
    }
    let mut body = Vec::new();
    while let Some(chunk) = resp
        .chunk()
        .await
        .map_err(|e| ReadError::Transport(describe(e)))?
    {
        if (body.len() + chunk.len()) as u64 > limit {
            return Err(ReadError::TooLarge(limit));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// Reads at most `cap` bytes of a body (the rest is left unread), for keeping the start of a
/// receiver's answer.
pub async fn read_prefix(mut resp: Response, cap: usize) -> Vec<u8> {
    let mut body = Vec::new();
    while body.len() < cap {
        match resp.chunk().await {
            Ok(Some(c)) => body.extend_from_slice(&c[..c.len().min(cap - body.len())]),
            _ => break,
        }
    }
    body
}

/// The start of a body as one line of text, for error messages and attempt records.
pub fn snippet(body: &[u8], max: usize) -> String {
    let s = String::from_utf8_lossy(&body[..body.len().min(max)]).to_string();
    s.replace(['\n', '\r'], " ")
}

/// A reqwest error with its cause chain, without the URL (which may hold a query secret).
pub fn describe(e: reqwest::Error) -> String {
    let e = e.without_url();
    let mut msg = if e.is_timeout() {
        "timed out".to_string()
    } else if e.is_connect() {
        "connection failed".to_string()
    } else {
        e.to_string()
    };
    let mut src = std::error::Error::source(&e);
    while let Some(s) = src {
        msg.push_str(": ");
        msg.push_str(&s.to_string());
        src = s.source();
    }
    msg
}

/// A URL as it may be shown: no query, no fragment, no password.
pub fn redact(url: &Url) -> String {
    let mut u = url.clone();
    u.set_query(None);
    u.set_fragment(None);
    let _ = u.set_password(None);
    u.to_string()
}

/// Parses `Retry-After` (delta seconds or an HTTP date) relative to `now`.
pub fn parse_retry_after(value: &str, now: DateTime<Utc>) -> Option<Duration> {
    let v = value.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = chrono::DateTime::parse_from_rfc2822(v).ok()?;
    (at.with_timezone(&Utc) - now)
        .to_std()
        .ok()
        .or(Some(Duration::ZERO))
}

/// The `Retry-After` of a response, if it has a readable one.
pub fn retry_after(resp: &Response, now: DateTime<Utc>) -> Option<Duration> {
    resp.headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| parse_retry_after(v, now))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn retry_after_forms() {
        let now = Utc.with_ymd_and_hms(2015, 10, 21, 7, 28, 0).unwrap();
        assert_eq!(
            parse_retry_after("120", now),
            Some(Duration::from_secs(120))
        );
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:30:00 GMT", now),
            Some(Duration::from_secs(120))
        );
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:00:00 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon", now), None);
    }

    #[test]
    fn redaction_drops_query_fragment_and_password() {
        let u = Url::parse("https://user:pw@api.test/v2/x?key=secret#frag").unwrap();
        assert_eq!(redact(&u), "https://user@api.test/v2/x");
    }

    #[test]
    fn snippets_are_one_line() {
        assert_eq!(snippet(b"a\nb\r\nc", 100), "a b  c");
        assert_eq!(snippet(b"abcdef", 3), "abc");
    }
}
