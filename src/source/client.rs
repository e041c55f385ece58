//! The HTTP client of one source: static headers, credentials, timeouts, the size cap, and
//! politeness (one request at a time, a minimum gap, in-cycle retries with backoff,
//! `Retry-After` and rate-limit headers). It sends one request and hands back the decoded page;
//! walking the pages is [`super::paginate`]'s job.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use serde_json::Value;
use url::Url;

use super::paginate::Pager;
use super::request::{self, Parts};
use super::{PollKind, SourceError};
use crate::clock::Clock;
use crate::config::{ResponseFormat, SourceConfig};
use crate::http::{self, Authorizer, ReadError, SendError, TokenCache};
use crate::text::Escaped;

/// One page as it arrived: not decoded yet.
#[derive(Debug)]
pub struct RawPage {
    /// Its 1-based number in the poll.
    pub number: u32,
    /// The response headers (for the source's clock: `Date`, or a configured header).
    pub headers: HeaderMap,
    /// The body, at most `max_response_bytes`.
    pub body: Vec<u8>,
    /// When it arrived (ms since epoch).
    pub arrived_ms: i64,
}

/// An HTTP client bound to one source's configuration.
pub struct SourceClient {
    http: reqwest::Client,
    headers: HeaderMap,
    auth: Authorizer,
    clock: Clock,
    pacing: tokio::sync::Mutex<Pacing>,
}

impl std::fmt::Debug for SourceClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SourceClient")
    }
}

#[derive(Default)]
struct Pacing {
    last_end: Option<Instant>,
    pause_until: Option<Instant>,
}

impl SourceClient {
    /// Builds the client: timeouts on, redirects off, static headers prepared, credentials
    /// applied per request (tokens cached in `tokens`).
    pub fn new(
        cfg: &SourceConfig,
        tokens: Arc<dyn TokenCache>,
        clock: Clock,
    ) -> Result<SourceClient, String> {
        let mut headers = HeaderMap::new();
        for (k, v) in &cfg.headers {
            let name = HeaderName::from_bytes(k.as_bytes())
                .map_err(|_| format!("sources.{}.headers: `{k}` is not a header name", cfg.name))?;
            let value = HeaderValue::from_str(v).map_err(|_| {
                format!("sources.{}.headers.{k}: not a valid header value", cfg.name)
            })?;
            headers.insert(name, value);
        }
        let http = http::client(cfg.timeout.min(Duration::from_secs(10)), cfg.timeout)?;
        let auth = Authorizer::new(
            cfg.auth.clone(),
            format!("source:{}", cfg.name),
            tokens,
            clock.clone(),
            cfg.timeout,
        )?;
        Ok(SourceClient {
            http,
            headers,
            auth,
            clock,
            pacing: tokio::sync::Mutex::new(Pacing::default()),
        })
    }

    /// Fetches one booking by id through the `lookup` request. `Ok(None)`: the API does not
    /// know it (an empty answer or a 404).
    pub async fn lookup(
        &self,
        cfg: &SourceConfig,
        id: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<Value>, SourceError> {
        self.lookup_by_id(cfg, id, now)
            .await
            .map_err(|e| e.redact(&cfg.redactor))
    }

    async fn lookup_by_id(
        &self,
        cfg: &SourceConfig,
        id: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<Value>, SourceError> {
        let Some(lookup) = &cfg.lookup else {
            return Ok(None);
        };
        let parts = request::lookup(cfg, lookup, id, now)?;
        let raw = match self.request(cfg, lookup.url.clone(), &parts, 1).await {
            Ok(r) => r,
            Err(SourceError::Status {
                status: 404 | 410, ..
            }) => return Ok(None),
            Err(e) => return Err(e),
        };
        let mut found = None;
        super::decode::page(cfg, &lookup.items, &raw.body, 1, &mut |r| {
            if r.id == id {
                found = Some(r.doc);
            }
            Ok(())
        })?;
        Ok(found)
    }

    /// Fetches the page `pager` stands at (status checked, size capped; not decoded).
    pub async fn fetch(
        &self,
        cfg: &SourceConfig,
        pager: &Pager,
        kind: PollKind,
        now: DateTime<Utc>,
    ) -> Result<RawPage, SourceError> {
        let (url, parts) = pager
            .request(cfg, kind, now)
            .map_err(|e| e.redact(&cfg.redactor))?;
        self.request(cfg, url, &parts, pager.next_page())
            .await
            .map_err(|e| e.redact(&cfg.redactor))
    }

    /// Waits as politeness requires before a request.
    async fn pace(&self, cfg: &SourceConfig) {
        let wait_until = {
            let p = self.pacing.lock().await;
            let gap = p.last_end.map(|t| t + cfg.politeness.min_gap);
            match (gap, p.pause_until) {
                (Some(a), Some(b)) => Some(a.max(b)),
                (a, b) => a.or(b),
            }
        };
        if let Some(t) = wait_until {
            tokio::time::sleep_until(tokio::time::Instant::from_std(t)).await;
        }
    }

    /// Notes the end of a request and pauses when the rate-limit budget is used up.
    async fn finished(&self, cfg: &SourceConfig, headers: Option<&HeaderMap>) {
        let mut p = self.pacing.lock().await;
        p.last_end = Some(Instant::now());
        let Some(headers) = headers else { return };
        let find = |names: &[String]| -> Option<i64> {
            names.iter().find_map(|n| {
                headers
                    .get(n.as_str())
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.trim().parse::<f64>().ok())
                    .map(|f| f as i64)
            })
        };
        if let Some(remaining) = find(&cfg.politeness.remaining_headers)
            && remaining <= 0
        {
            let reset = find(&cfg.politeness.reset_headers).unwrap_or(60).max(1) as u64;
            let wait = Duration::from_secs(reset).min(cfg.politeness.max_retry_after);
            tracing::warn!(source = %cfg.name, wait_secs = wait.as_secs(), "rate-limit budget used up; pausing requests");
            p.pause_until = Some(Instant::now() + wait);
        }
    }

    /// Sends one request (with politeness, auth, in-cycle retries), checks the status and reads
    /// the body up to the size cap.
    async fn request(
        &self,
        cfg: &SourceConfig,
        mut url: Url,
        parts: &Parts,
        page: u32,
    ) -> Result<RawPage, SourceError> {
        if !parts.query.is_empty() {
            url.query_pairs_mut().extend_pairs(parts.query.iter());
        }
        let shown = cfg.redactor.redact(&http::redact(&url));
        let transport = |reason: String| SourceError::Transport {
            page,
            url: shown.clone(),
            reason,
        };
        let body = request::encode_body(parts.body.as_ref(), cfg.body_format)?;
        let accept = match cfg.format {
            ResponseFormat::Json => "application/json",
            ResponseFormat::Xml => "application/xml, text/xml",
        };
        let make = || {
            let mut req = match body {
                Some(_) => self.http.post(url.clone()),
                None => self.http.get(url.clone()),
            }
            .headers(self.headers.clone())
            .header("accept", accept);
            if let Some((ct, bytes)) = &body {
                req = req.header("content-type", *ct).body(bytes.clone());
            }
            req
        };
        let pol = &cfg.politeness;
        let mut attempt = 0u32;
        let (status, headers, raw) = loop {
            let backoff = pol.retry_backoff.saturating_mul(1 << attempt.min(10));
            let sent = http::send_authorized(&self.auth, make, |req| {
                Box::pin(async move {
                    self.pace(cfg).await;
                    let r = req.send().await;
                    self.finished(cfg, r.as_ref().ok().map(|r| r.headers()))
                        .await;
                    r
                })
            })
            .await;
            let resp = match sent {
                Ok(r) => r,
                Err(SendError::Auth(e)) => return Err(transport(e.to_string())),
                Err(SendError::Transport(reason)) => {
                    if attempt < pol.retries {
                        tracing::warn!(source = %cfg.name, page, attempt = attempt + 1, error = %Escaped(cfg.redactor.redact(&reason)), "request failed; retrying");
                        attempt += 1;
                        tokio::time::sleep(backoff).await;
                        continue;
                    }
                    return Err(transport(reason));
                }
            };
            let status = resp.status();
            let code = status.as_u16();
            if matches!(code, 429 | 500 | 502 | 503 | 504) && attempt < pol.retries {
                let wait = match (code, http::retry_after(&resp, self.clock.now())) {
                    (429 | 503, Some(ra)) if ra > pol.max_retry_after => {
                        return Err(SourceError::Throttled {
                            page,
                            status: code,
                            wait_secs: ra.as_secs(),
                        });
                    }
                    (429 | 503, Some(ra)) => ra,
                    _ => backoff,
                };
                tracing::warn!(source = %cfg.name, page, status = code, wait_ms = wait.as_millis() as u64, "transient failure; retrying within this cycle");
                attempt += 1;
                tokio::time::sleep(wait).await;
                continue;
            }
            let headers = resp.headers().clone();
            let raw = http::read_capped(resp, cfg.max_response_bytes)
                .await
                .map_err(|e| match e {
                    ReadError::TooLarge(limit) => SourceError::TooLarge { page, limit },
                    ReadError::Transport(reason) => transport(reason),
                })?;
            break (status, headers, raw);
        };
        let (status, headers, body) = (status, headers, raw);
        if !status.is_success() {
            return Err(SourceError::Status {
                page,
                url: shown,
                status: status.as_u16(),
                // The whole body was read, so a secret across the cut is seen whole.
                body: cfg.redactor.snippet(&body, 200),
            });
        }
        Ok(RawPage {
            number: page,
            headers,
            body,
            arrived_ms: self.clock.now_ms(),
        })
    }
}
