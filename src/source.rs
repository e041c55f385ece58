//! Sources: fetching every page of a legacy booking API and turning it into records
//! (id + document). All pages or an error: the caller commits nothing unless this returns `Ok`.
//!
//! The HTTP side (templated requests, auth, timeouts, size cap, no redirects, politeness:
//! one request at a time, a minimum gap, retries with backoff, `Retry-After` and rate-limit
//! headers) lives here; the pure parts (finding items and ids in a page, success checks, the next
//! link) are separate functions with unit tests.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use serde_json::{Map, Value};
use url::Url;

use crate::auth::Authorizer;
use crate::config::{
    ArrayStyle, BodyFormat, ItemsShape, PageStop, Pagination, ParamIn, ParamValue, ResponseFormat,
    SourceConfig, SourceMethod, SuccessCheck,
};
use crate::diff::{fingerprint, scalar_string};
use crate::store::Store;
use crate::template::{self, Escape, Val};

/// One booking as polled.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    /// Its id (composite ids joined with `:`), always a string.
    pub id: String,
    /// The booking as the source returned it.
    pub doc: Value,
}

/// A complete poll result.
#[derive(Debug, Clone, Default)]
pub struct Fetched {
    /// Every record, in the order the API returned them (a repeated id keeps its last copy).
    pub records: Vec<Record>,
    /// Pages fetched.
    pub pages: u32,
}

/// What kind of poll to make.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PollKind {
    /// Everything in scope (the base request).
    Full,
    /// What changed since the watermark (base request plus the incremental parameters).
    Incremental {
        /// The stored watermark, ms since epoch (the overlap is subtracted when rendering).
        watermark_ms: i64,
    },
}

/// Why a poll cycle was abandoned. Messages never include secrets or query strings.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// Connection, timeout or protocol failure.
    #[error("page {page}: request to {url} failed: {reason}")]
    Transport {
        /// Page number (1-based count).
        page: u32,
        /// URL without its query.
        url: String,
        /// What went wrong.
        reason: String,
    },
    /// A non-2xx status.
    #[error("page {page}: {url} answered HTTP {status}: {body}")]
    Status {
        /// Page number.
        page: u32,
        /// URL without its query.
        url: String,
        /// HTTP status.
        status: u16,
        /// Start of the body.
        body: String,
    },
    /// The API asked to wait longer than `max_retry_after`.
    #[error(
        "page {page}: the API asked to wait {wait_secs}s (HTTP {status}), longer than max_retry_after; trying again at the next tick"
    )]
    Throttled {
        /// Page number.
        page: u32,
        /// Status (429 or 503).
        status: u16,
        /// Requested wait.
        wait_secs: u64,
    },
    /// The body exceeded `max_response_bytes`.
    #[error("page {page}: response larger than max_response_bytes ({limit} bytes)")]
    TooLarge {
        /// Page number.
        page: u32,
        /// The cap.
        limit: u64,
    },
    /// Not JSON / not XML.
    #[error("page {page}: response is not valid {format}: {reason}")]
    Decode {
        /// Page number.
        page: u32,
        /// "JSON" or "XML".
        format: &'static str,
        /// Parser message.
        reason: String,
    },
    /// The success check failed (e.g. `success: false` with HTTP 200).
    #[error("page {page}: the API reported a failure: {detail}")]
    Unsuccessful {
        /// Page number.
        page: u32,
        /// What the check saw.
        detail: String,
    },
    /// The items pointer does not lead to bookings.
    #[error("page {page}: `items` pointer `{pointer}` does not lead to a list of bookings")]
    NotAList {
        /// Page number.
        page: u32,
        /// The pointer.
        pointer: String,
    },
    /// A record lacks an id.
    #[error(
        "page {page}: booking #{index} has no id at `{pointer}` (ids must be strings or numbers)"
    )]
    MissingId {
        /// Page number.
        page: u32,
        /// Index within the page.
        index: usize,
        /// The id pointer that failed.
        pointer: String,
    },
    /// More pages than `max_pages`.
    #[error("more than max_pages ({0}) pages; raise max_pages if the API really has that many")]
    TooManyPages(u32),
    /// The API returned the same page again.
    #[error("page {0} repeats the previous page: the API ignores the page parameter or loops")]
    PageLoop(u32),
    /// A next link that is unusable or points elsewhere.
    #[error("page {page}: next-page link rejected: {reason}")]
    BadNextLink {
        /// Page number.
        page: u32,
        /// Why.
        reason: String,
    },
    /// A request template could not be rendered.
    #[error("cannot build the request: {0}")]
    Template(String),
}

/// An HTTP client bound to one source's configuration.
pub struct SourceClient {
    http: reqwest::Client,
    headers: HeaderMap,
    auth: Authorizer,
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

fn redact(url: &Url) -> String {
    let mut u = url.clone();
    u.set_query(None);
    u.set_fragment(None);
    let _ = u.set_password(None);
    u.to_string()
}

/// Reads a response body, refusing more than `limit` bytes.
pub async fn read_capped(mut resp: reqwest::Response, limit: u64) -> Result<Vec<u8>, String> {
    if resp.content_length().is_some_and(|n| n > limit) {
        return Err(format!("response larger than {limit} bytes"));
    }
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(describe_reqwest)? {
        if (body.len() + chunk.len()) as u64 > limit {
            return Err(format!("response larger than {limit} bytes"));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// The start of a body as text, for error messages.
pub fn snippet(body: &[u8], max: usize) -> String {
    let s = String::from_utf8_lossy(&body[..body.len().min(max)]).to_string();
    s.replace(['\n', '\r'], " ")
}

/// A reqwest error with its cause chain, without the URL (which may hold a query secret).
pub fn describe_reqwest(e: reqwest::Error) -> String {
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

/// The values templates in a source request can use.
struct RequestContext<'a> {
    now: DateTime<Utc>,
    tz: chrono_tz::Tz,
    watermark: Option<DateTime<Utc>>,
    id: Option<String>,
    secrets: Option<&'a std::collections::BTreeMap<String, crate::config::Secret>>,
    paging: Paging,
}

/// Where pagination stands, for templates (`{{ page }}`, `{{ offset }}`, `{{ limit }}`,
/// `{{ cursor }}`).
#[derive(Debug, Clone, Default, PartialEq)]
struct Paging {
    page: Option<u64>,
    offset: Option<u64>,
    limit: Option<u64>,
    cursor: Option<String>,
}

impl template::Context for RequestContext<'_> {
    fn now(&self) -> DateTime<Utc> {
        self.now
    }
    fn default_tz(&self) -> chrono_tz::Tz {
        self.tz
    }
    fn name(&self, name: &str) -> Option<Val> {
        match name {
            "watermark" => self.watermark.map(Val::Time),
            "id" => self.id.clone().map(|s| Val::Json(Value::String(s))),
            "page" => self.paging.page.map(|n| Val::Json(Value::from(n))),
            "offset" => self.paging.offset.map(|n| Val::Json(Value::from(n))),
            "limit" => self.paging.limit.map(|n| Val::Json(Value::from(n))),
            "cursor" => self
                .paging
                .cursor
                .clone()
                .map(|c| Val::Json(Value::String(c))),
            other => {
                let name = other.strip_prefix("secret.")?;
                let secret = self.secrets?.get(name)?;
                Some(Val::Json(Value::String(secret.expose().to_string())))
            }
        }
    }
    fn pointer(&self, _root: &str, _pointer: &str) -> Option<Value> {
        None
    }
}

/// One request: query pairs and an optional body.
#[derive(Debug, Clone, Default, PartialEq)]
struct Parts {
    query: Vec<(String, String)>,
    body: Option<Map<String, Value>>,
}

fn render_params(
    params: &[(String, ParamValue)],
    style: ArrayStyle,
    ctx: &RequestContext,
    out: &mut Vec<(String, String)>,
) -> Result<(), SourceError> {
    let one = |t: &template::Template| {
        t.render(ctx, Escape::None)
            .map_err(|e| SourceError::Template(e.to_string()))
    };
    for (name, v) in params {
        match v {
            ParamValue::One(t) => out.push((name.clone(), one(t)?)),
            ParamValue::Many(ts) => {
                let values = ts.iter().map(one).collect::<Result<Vec<_>, _>>()?;
                match style {
                    ArrayStyle::Repeat => out.extend(values.into_iter().map(|v| (name.clone(), v))),
                    ArrayStyle::Brackets => {
                        out.extend(values.into_iter().map(|v| (format!("{name}[]"), v)))
                    }
                    ArrayStyle::Comma => out.push((name.clone(), values.join(","))),
                }
            }
        }
    }
    Ok(())
}

fn render_body(
    tree: &Value,
    ctx: &RequestContext,
    into: &mut Map<String, Value>,
) -> Result<(), SourceError> {
    let rendered =
        template::render_tree(tree, ctx).map_err(|e| SourceError::Template(e.to_string()))?;
    if let Value::Object(m) = rendered {
        into.extend(m);
    }
    Ok(())
}

fn params_in_body(cfg: &SourceConfig) -> bool {
    matches!(
        cfg.pagination,
        Pagination::Page {
            param_in: ParamIn::Body,
            ..
        } | Pagination::Offset {
            param_in: ParamIn::Body,
            ..
        } | Pagination::Cursor {
            param_in: ParamIn::Body,
            ..
        }
    )
}

impl SourceClient {
    /// Builds the client: timeouts on, redirects off, static headers prepared, credentials
    /// applied per request (tokens cached in `store`).
    pub fn new(cfg: &SourceConfig, store: Store) -> Result<SourceClient, String> {
        let mut headers = HeaderMap::new();
        for (k, v) in &cfg.headers {
            let name = HeaderName::from_bytes(k.as_bytes())
                .map_err(|_| format!("sources.{}.headers: `{k}` is not a header name", cfg.name))?;
            let value = HeaderValue::from_str(v).map_err(|_| {
                format!("sources.{}.headers.{k}: not a valid header value", cfg.name)
            })?;
            headers.insert(name, value);
        }
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(cfg.timeout.min(Duration::from_secs(10)))
            .timeout(cfg.timeout)
            .user_agent(concat!("pollhook/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| format!("cannot build HTTP client: {e}"))?;
        let auth = Authorizer::new(
            cfg.auth.clone(),
            format!("source:{}", cfg.name),
            store,
            cfg.timeout,
        )?;
        Ok(SourceClient {
            http,
            headers,
            auth,
            pacing: tokio::sync::Mutex::new(Pacing::default()),
        })
    }

    /// The base request of a poll: configured query and body, plus the incremental parameters.
    fn base(
        &self,
        cfg: &SourceConfig,
        kind: PollKind,
        now: DateTime<Utc>,
        paging: Paging,
    ) -> Result<Parts, SourceError> {
        let ctx = RequestContext {
            now,
            tz: cfg.tz,
            watermark: match (kind, &cfg.incremental) {
                (PollKind::Incremental { watermark_ms }, Some(inc)) => {
                    DateTime::<Utc>::from_timestamp_millis(
                        watermark_ms - inc.overlap.as_millis() as i64,
                    )
                }
                _ => None,
            },
            id: None,
            secrets: Some(&cfg.secrets),
            paging,
        };
        let mut parts = Parts::default();
        render_params(&cfg.query, cfg.array_style, &ctx, &mut parts.query)?;
        let mut body = Map::new();
        if let Some(b) = &cfg.body {
            render_body(b, &ctx, &mut body)?;
        }
        if let (PollKind::Incremental { .. }, Some(inc)) = (kind, &cfg.incremental) {
            render_params(&inc.query, cfg.array_style, &ctx, &mut parts.query)?;
            if let Some(b) = &inc.body {
                render_body(b, &ctx, &mut body)?;
            }
        }
        if cfg.method == SourceMethod::Post || !body.is_empty() || params_in_body(cfg) {
            parts.body = Some(body);
        }
        Ok(parts)
    }

    /// Fetches every page. Any failure aborts the whole cycle.
    pub async fn fetch_all(
        &self,
        cfg: &SourceConfig,
        kind: PollKind,
        now: DateTime<Utc>,
    ) -> Result<Fetched, SourceError> {
        let base = |paging: Paging| self.base(cfg, kind, now, paging);
        let mut out = Fetched::default();
        let mut seen_ids: HashMap<String, usize> = HashMap::new();
        let mut add = |records: Vec<Record>, out: &mut Fetched| {
            for r in records {
                match seen_ids.get(&r.id) {
                    // Data shifting between pages can repeat a booking; its later copy wins.
                    Some(&i) => out.records[i] = r,
                    None => {
                        seen_ids.insert(r.id.clone(), out.records.len());
                        out.records.push(r);
                    }
                }
            }
        };
        let with_param = |parts: Parts, param_in: ParamIn, extra: &[(String, Value)]| -> Parts {
            let mut p = parts;
            // An empty parameter name means "only through templates".
            for (k, v) in extra.iter().filter(|(k, _)| !k.is_empty()) {
                match param_in {
                    ParamIn::Query => p
                        .query
                        .push((k.clone(), scalar_string(v).unwrap_or_default())),
                    ParamIn::Body => {
                        p.body
                            .get_or_insert_with(Map::new)
                            .insert(k.clone(), v.clone());
                    }
                }
            }
            p
        };
        let guard_pages = |out: &Fetched| -> Result<u32, SourceError> {
            let page = out.pages + 1;
            if page > cfg.max_pages {
                return Err(SourceError::TooManyPages(cfg.max_pages));
            }
            Ok(page)
        };
        match &cfg.pagination {
            Pagination::None => {
                let doc = self
                    .request(cfg, cfg.url.clone(), &base(Paging::default())?, 1)
                    .await?;
                out.pages = 1;
                add(extract(cfg, &cfg.items, &doc, 1)?, &mut out);
            }
            Pagination::Page { .. } | Pagination::Offset { .. } => {
                // Numbered pages and offsets share one loop: request, stop at an empty page,
                // refuse a repeated page, then decide from the stop rule whether to go on.
                let mut prev_print: Option<String> = None;
                let mut number = match &cfg.pagination {
                    Pagination::Page { start, .. } => *start,
                    _ => 0,
                };
                let mut offset = 0u64;
                loop {
                    let page = guard_pages(&out)?;
                    let (extra, paging, param_in) = match &cfg.pagination {
                        Pagination::Page {
                            param,
                            size,
                            param_in,
                            ..
                        } => {
                            let mut extra = vec![(param.clone(), Value::from(number))];
                            if let Some((p, n)) = size {
                                extra.push((p.clone(), Value::from(*n)));
                            }
                            let limit = size.as_ref().map(|s| s.1);
                            (
                                extra,
                                Paging {
                                    page: Some(number),
                                    limit,
                                    ..Paging::default()
                                },
                                *param_in,
                            )
                        }
                        Pagination::Offset {
                            param,
                            size,
                            param_in,
                            ..
                        } => (
                            vec![
                                (param.clone(), Value::from(offset)),
                                (size.0.clone(), Value::from(size.1)),
                            ],
                            Paging {
                                offset: Some(offset),
                                limit: Some(size.1),
                                ..Paging::default()
                            },
                            *param_in,
                        ),
                        _ => break,
                    };
                    let parts = with_param(base(paging)?, param_in, &extra);
                    let doc = self.request(cfg, cfg.url.clone(), &parts, page).await?;
                    out.pages = page;
                    let records = extract(cfg, &cfg.items, &doc, page)?;
                    if records.is_empty() {
                        break;
                    }
                    check_loop(&records, &mut prev_print, page)?;
                    let got = records.len() as u64;
                    add(records, &mut out);
                    offset += got;
                    let more = match &cfg.pagination {
                        Pagination::Page {
                            start, size, stop, ..
                        } => match stop {
                            PageStop::EmptyPage => size.as_ref().is_none_or(|(_, n)| got >= *n),
                            PageStop::HasMore(p) => truthy(doc.pointer(p)),
                            PageStop::TotalPages(p) => {
                                let total = doc.pointer(p).and_then(as_u64).unwrap_or(0);
                                number + 1 - start < total
                            }
                        },
                        Pagination::Offset { size, total, .. } => match total {
                            Some(p) => offset < doc.pointer(p).and_then(as_u64).unwrap_or(0),
                            None => got >= size.1,
                        },
                        _ => false,
                    };
                    if !more {
                        break;
                    }
                    number += 1;
                }
            }
            Pagination::Cursor {
                param,
                next,
                param_in,
            } => {
                let mut cursors: HashSet<String> = HashSet::new();
                let mut parts = base(Paging::default())?;
                loop {
                    let page = guard_pages(&out)?;
                    let doc = self.request(cfg, cfg.url.clone(), &parts, page).await?;
                    out.pages = page;
                    add(extract(cfg, &cfg.items, &doc, page)?, &mut out);
                    let cursor = match doc.pointer(next) {
                        None | Some(Value::Null) | Some(Value::Bool(false)) => break,
                        Some(v) => scalar_string(v).unwrap_or_default(),
                    };
                    if cursor.is_empty() {
                        break;
                    }
                    if !cursors.insert(cursor.clone()) {
                        return Err(SourceError::PageLoop(page + 1));
                    }
                    let paging = Paging {
                        cursor: Some(cursor.clone()),
                        ..Paging::default()
                    };
                    parts = with_param(
                        base(paging)?,
                        *param_in,
                        &[(param.clone(), Value::String(cursor))],
                    );
                }
            }
            Pagination::NextLink { pointer } => {
                let mut url = cfg.url.clone();
                let mut parts = base(Paging::default())?;
                let mut visited: HashSet<String> = HashSet::new();
                loop {
                    let page = guard_pages(&out)?;
                    visited.insert(url.to_string());
                    let doc = self.request(cfg, url.clone(), &parts, page).await?;
                    out.pages = page;
                    add(extract(cfg, &cfg.items, &doc, page)?, &mut out);
                    match next_link(&cfg.url, &url, &doc, pointer, page)? {
                        None => break,
                        Some(next) if visited.contains(next.as_str()) => {
                            return Err(SourceError::PageLoop(page + 1));
                        }
                        Some(next) => {
                            url = next;
                            // The link carries its own query; the body (for POST) is sent again.
                            parts.query.clear();
                        }
                    }
                }
            }
        }
        Ok(out)
    }

    /// Fetches one booking by id through the `lookup` request. `Ok(None)`: the API does not
    /// know it (an empty answer or a 404).
    pub async fn lookup(
        &self,
        cfg: &SourceConfig,
        id: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<Value>, SourceError> {
        let Some(lookup) = &cfg.lookup else {
            return Ok(None);
        };
        let ctx = RequestContext {
            now,
            tz: cfg.tz,
            watermark: None,
            id: Some(id.to_string()),
            secrets: Some(&cfg.secrets),
            paging: Paging::default(),
        };
        // The lookup request is self-contained: the list request's filters (date windows,
        // status sets) must not hide the very booking being looked up.
        let mut parts = Parts::default();
        render_params(&lookup.query, cfg.array_style, &ctx, &mut parts.query)?;
        if cfg.method == SourceMethod::Post || lookup.body.is_some() {
            let mut body = Map::new();
            if let Some(b) = &lookup.body {
                render_body(b, &ctx, &mut body)?;
            }
            parts.body = Some(body);
        }
        let doc = match self.request(cfg, lookup.url.clone(), &parts, 1).await {
            Ok(doc) => doc,
            Err(SourceError::Status {
                status: 404 | 410, ..
            }) => return Ok(None),
            Err(e) => return Err(e),
        };
        let records = extract(cfg, &lookup.items, &doc, 1)?;
        Ok(records.into_iter().find(|r| r.id == id).map(|r| r.doc))
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

    /// Sends one request (with politeness, auth, in-cycle retries), checks the status, decodes
    /// and applies the success check.
    async fn request(
        &self,
        cfg: &SourceConfig,
        mut url: Url,
        parts: &Parts,
        page: u32,
    ) -> Result<Value, SourceError> {
        if !parts.query.is_empty() {
            url.query_pairs_mut().extend_pairs(parts.query.iter());
        }
        let shown = redact(&url);
        let transport = |reason: String| SourceError::Transport {
            page,
            url: shown.clone(),
            reason,
        };
        let body = match (&parts.body, cfg.body_format) {
            (None, _) => None,
            (Some(b), BodyFormat::Json) => Some((
                "application/json",
                serde_json::to_vec(b).unwrap_or_default(),
            )),
            (Some(b), BodyFormat::Form) => {
                let mut ser = url::form_urlencoded::Serializer::new(String::new());
                for (k, v) in b {
                    match v {
                        Value::Array(items) => {
                            for i in items {
                                ser.append_pair(
                                    k,
                                    &scalar_string(i).unwrap_or_else(|| i.to_string()),
                                );
                            }
                        }
                        other => {
                            ser.append_pair(
                                k,
                                &scalar_string(other).unwrap_or_else(|| other.to_string()),
                            );
                        }
                    }
                }
                Some((
                    "application/x-www-form-urlencoded",
                    ser.finish().into_bytes(),
                ))
            }
        };
        let accept = match cfg.format {
            ResponseFormat::Json => "application/json",
            ResponseFormat::Xml => "application/xml, text/xml",
        };
        let pol = &cfg.politeness;
        let mut attempt = 0u32;
        let mut retried_auth = false;
        let (status, raw) = loop {
            self.pace(cfg).await;
            let mut req = match body {
                Some(_) => self.http.post(url.clone()),
                None => self.http.get(url.clone()),
            }
            .headers(self.headers.clone())
            .header("accept", accept);
            if let Some((ct, bytes)) = &body {
                req = req.header("content-type", *ct).body(bytes.clone());
            }
            let req = self
                .auth
                .apply(req)
                .await
                .map_err(|e| transport(e.to_string()))?;
            let backoff = pol.retry_backoff.saturating_mul(1 << attempt.min(10));
            let resp = match req.send().await {
                Ok(r) => r,
                Err(e) => {
                    self.finished(cfg, None).await;
                    let reason = describe_reqwest(e);
                    if attempt < pol.retries {
                        tracing::warn!(source = %cfg.name, page, attempt = attempt + 1, error = %reason, "request failed; retrying");
                        attempt += 1;
                        tokio::time::sleep(backoff).await;
                        continue;
                    }
                    return Err(transport(reason));
                }
            };
            self.finished(cfg, Some(resp.headers())).await;
            let status = resp.status();
            if status == reqwest::StatusCode::UNAUTHORIZED
                && self.auth.uses_tokens()
                && !retried_auth
            {
                // The token may have been revoked or expired early: mint a new one, once.
                retried_auth = true;
                self.auth.invalidate().await;
                continue;
            }
            let code = status.as_u16();
            if matches!(code, 429 | 500 | 502 | 503 | 504) && attempt < pol.retries {
                let asked = resp
                    .headers()
                    .get("retry-after")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| crate::delivery::parse_retry_after(v, Utc::now()));
                let wait = match (code, asked) {
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
            let raw = read_capped(resp, cfg.max_response_bytes)
                .await
                .map_err(|reason| {
                    if reason.starts_with("response larger") {
                        SourceError::TooLarge {
                            page,
                            limit: cfg.max_response_bytes,
                        }
                    } else {
                        transport(reason)
                    }
                })?;
            break (status, raw);
        };
        if !status.is_success() {
            return Err(SourceError::Status {
                page,
                url: shown,
                status: status.as_u16(),
                body: snippet(&raw, 200),
            });
        }
        let doc = decode(cfg.format, &raw, page)?;
        check_success(cfg.success.as_ref(), &doc, page)?;
        Ok(doc)
    }
}

fn as_u64(v: &Value) -> Option<u64> {
    scalar_string(v).and_then(|s| s.trim().parse::<u64>().ok())
}

fn truthy(v: Option<&Value>) -> bool {
    match v {
        Some(Value::Bool(b)) => *b,
        Some(Value::Number(n)) => n.as_f64().is_some_and(|f| f != 0.0),
        Some(Value::String(s)) => matches!(s.as_str(), "true" | "1" | "yes"),
        _ => false,
    }
}

fn check_loop(records: &[Record], prev: &mut Option<String>, page: u32) -> Result<(), SourceError> {
    let print = fingerprint(&Value::Array(
        records.iter().map(|r| r.doc.clone()).collect(),
    ));
    if prev.as_deref() == Some(print.as_str()) {
        return Err(SourceError::PageLoop(page));
    }
    *prev = Some(print);
    Ok(())
}

/// Decodes a response body (JSON, or XML into the same tree).
pub fn decode(format: ResponseFormat, raw: &[u8], page: u32) -> Result<Value, SourceError> {
    match format {
        ResponseFormat::Json => serde_json::from_slice(raw).map_err(|e| SourceError::Decode {
            page,
            format: "JSON",
            reason: e.to_string(),
        }),
        ResponseFormat::Xml => crate::xml::to_json(raw, 64).map_err(|e| SourceError::Decode {
            page,
            format: "XML",
            reason: e.to_string(),
        }),
    }
}

/// Applies the configured success check to a decoded page.
pub fn check_success(
    check: Option<&SuccessCheck>,
    doc: &Value,
    page: u32,
) -> Result<(), SourceError> {
    // Compare as strings too, so `equals = true` accepts "true" and `not_equals = "fail"` works
    // whatever the API's types.
    let same = |a: Option<&Value>, b: &Value| match a {
        Some(a) => a == b || scalar_string(a).is_some_and(|s| Some(s) == scalar_string(b)),
        None => false,
    };
    let fail = |detail: String| Err(SourceError::Unsuccessful { page, detail });
    match check {
        None => Ok(()),
        Some(SuccessCheck::Equals(p, v)) if !same(doc.pointer(p), v) => fail(format!(
            "{p} is {}, expected {v}{}",
            doc.pointer(p)
                .map(Value::to_string)
                .unwrap_or_else(|| "missing".into()),
            error_hint(doc)
        )),
        Some(SuccessCheck::NotEquals(p, v)) if same(doc.pointer(p), v) => {
            fail(format!("{p} is {v}{}", error_hint(doc)))
        }
        Some(SuccessCheck::Absent(p)) if doc.pointer(p).is_some_and(|v| !v.is_null()) => {
            fail(format!(
                "{p} is present: {}",
                doc.pointer(p)
                    .map(|v| snippet(v.to_string().as_bytes(), 200))
                    .unwrap_or_default()
            ))
        }
        Some(_) => Ok(()),
    }
}

fn error_hint(doc: &Value) -> String {
    for p in ["/error", "/message", "/errors", "/result"] {
        if let Some(v) = doc.pointer(p).filter(|v| !v.is_null()) {
            return format!(" ({}: {})", &p[1..], snippet(v.to_string().as_bytes(), 200));
        }
    }
    String::new()
}

/// Finds the bookings in one page and their ids.
pub fn extract(
    cfg: &SourceConfig,
    items_ptr: &str,
    doc: &Value,
    page: u32,
) -> Result<Vec<Record>, SourceError> {
    let list = if items_ptr.is_empty() {
        Some(doc)
    } else {
        doc.pointer(items_ptr)
    };
    let not_a_list = || SourceError::NotAList {
        page,
        pointer: items_ptr.to_string(),
    };
    let items: Vec<&Value> = match (cfg.items_shape, list) {
        // An empty result is often `null` rather than `[]`.
        (_, Some(Value::Null)) if !items_ptr.is_empty() => Vec::new(),
        // In XML an empty list is simply no element. In JSON a missing member is not "no
        // bookings": it is usually an error answer (with HTTP 200), and reading it as empty
        // could turn into cancellations.
        (_, None) if !items_ptr.is_empty() && cfg.format == ResponseFormat::Xml => Vec::new(),
        (ItemsShape::List, Some(Value::Array(a))) => a.iter().collect(),
        // One element where a list was expected (XML with a single child; some JSON APIs).
        (ItemsShape::List, Some(o @ Value::Object(_))) if !items_ptr.is_empty() => vec![o],
        (ItemsShape::Keyed, Some(Value::Object(m))) => m.values().collect(),
        // PHP encodes an empty keyed list as `[]`.
        (ItemsShape::Keyed, Some(Value::Array(a))) => a.iter().collect(),
        _ => return Err(not_a_list()),
    };
    let mut out = Vec::with_capacity(items.len());
    for (index, item) in items.into_iter().enumerate() {
        let mut parts = Vec::with_capacity(cfg.id.len());
        for p in &cfg.id {
            match item.pointer(p).and_then(scalar_string) {
                Some(s) if !s.is_empty() => parts.push(s),
                _ => {
                    return Err(SourceError::MissingId {
                        page,
                        index,
                        pointer: p.clone(),
                    });
                }
            }
        }
        out.push(Record {
            id: parts.join(":"),
            doc: item.clone(),
        });
    }
    Ok(out)
}

/// The next page's URL from a next-link response, resolved against the current URL and held to
/// the same scheme, host and port as the configured URL.
pub fn next_link(
    base: &Url,
    current: &Url,
    doc: &Value,
    pointer: &str,
    page: u32,
) -> Result<Option<Url>, SourceError> {
    let link = match doc.pointer(pointer) {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::String(s)) if s.trim().is_empty() => return Ok(None),
        Some(Value::Bool(false)) => return Ok(None),
        Some(Value::String(s)) => s.trim().to_string(),
        Some(other) => {
            return Err(SourceError::BadNextLink {
                page,
                reason: format!("expected a URL string, found {other}"),
            });
        }
    };
    let next = current.join(&link).map_err(|e| SourceError::BadNextLink {
        page,
        reason: e.to_string(),
    })?;
    if next.origin() != base.origin() {
        return Err(SourceError::BadNextLink {
            page,
            reason: format!(
                "it points to {} but the source is {}; links to other hosts are never followed",
                next.origin().ascii_serialization(),
                base.origin().ascii_serialization()
            ),
        });
    }
    Ok(Some(next))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use serde_json::json;

    fn cfg(extra: &str) -> SourceConfig {
        let text = format!(
            "[sources.s]\nurl = \"http://api.test/v2/bookings\"\nevery = \"1m\"\n{extra}\n"
        );
        Config::from_toml_str(&text, "t.toml")
            .unwrap_or_else(|e| panic!("{e}"))
            .sources
            .remove(0)
    }

    fn ex(c: &SourceConfig, doc: &Value) -> Result<Vec<Record>, SourceError> {
        extract(c, &c.items, doc, 1)
    }

    #[test]
    fn extracts_items_and_ids_as_strings() {
        let c = cfg("items = \"/data\"");
        let r = ex(&c, &json!({"data": [{"id": 7}, {"id": "x"}]})).unwrap();
        assert_eq!(r[0].id, "7");
        assert_eq!(r[1].id, "x");
    }

    #[test]
    fn composite_ids_join_parts() {
        let c = cfg("id = [\"/propertyId\", \"/id\"]");
        let r = ex(&c, &json!([{"propertyId": 3, "id": 7}])).unwrap();
        assert_eq!(r[0].id, "3:7");
    }

    #[test]
    fn missing_id_is_an_error() {
        let c = cfg("items = \"/data\"");
        let e = extract(
            &c,
            &c.items,
            &json!({"data": [{"id": 1}, {"name": "x"}]}),
            2,
        )
        .unwrap_err();
        assert!(
            matches!(
                e,
                SourceError::MissingId {
                    page: 2,
                    index: 1,
                    ..
                }
            ),
            "{e}"
        );
    }

    #[test]
    fn items_must_be_a_list_or_a_single_object() {
        let c = cfg("items = \"/data\"");
        assert_eq!(
            ex(&c, &json!({"data": {"id": 1}})).unwrap().len(),
            1,
            "one XML element"
        );
        assert!(ex(&c, &json!({"data": 5})).is_err());
        assert!(ex(&c, &json!({"data": null})).unwrap().is_empty());
        assert!(ex(&c, &json!({"data": []})).unwrap().is_empty());
        let e = ex(&c, &json!({"error": "token expired"})).unwrap_err();
        assert!(
            matches!(e, SourceError::NotAList { .. }),
            "a JSON answer without the items member is an error, not an empty page: {e}"
        );
        let root = cfg("");
        assert!(
            ex(&root, &json!({"id": 1})).is_err(),
            "the root must be a list"
        );
    }

    #[test]
    fn keyed_items_are_the_object_values() {
        let c = cfg("items = \"/booking~1index\"\nitems_shape = \"keyed\"\nid = \"/booking_id\"");
        let doc = json!({"booking/index": {"2": {"booking_id": 2}, "5": {"booking_id": 5}}});
        let mut ids: Vec<String> = ex(&c, &doc).unwrap().into_iter().map(|r| r.id).collect();
        ids.sort();
        assert_eq!(ids, ["2", "5"]);
        assert!(ex(&c, &json!({"booking/index": []})).unwrap().is_empty());
    }

    #[test]
    fn success_checks() {
        let eq = SuccessCheck::Equals("/success".into(), json!(true));
        assert!(check_success(Some(&eq), &json!({"success": true}), 1).is_ok());
        let e = check_success(
            Some(&eq),
            &json!({"success": false, "error": "bad token"}),
            3,
        )
        .unwrap_err();
        assert!(
            e.to_string().contains("bad token") && e.to_string().contains("page 3"),
            "{e}"
        );
        let ne = SuccessCheck::NotEquals("/status".into(), json!("fail"));
        assert!(check_success(Some(&ne), &json!({"status": "success"}), 1).is_ok());
        assert!(check_success(Some(&ne), &json!({"status": "fail"}), 1).is_err());
        let absent = SuccessCheck::Absent("/error".into());
        assert!(check_success(Some(&absent), &json!([{"bookId": "1"}]), 1).is_ok());
        assert!(check_success(Some(&absent), &json!({"error": "Unauthorized"}), 1).is_err());
    }

    #[test]
    fn beds24_legacy_xml_ids_in_attributes_and_text_statuses() {
        let c = cfg(
            "format = \"xml\"\nitems = \"/bookings/booking\"\nid = \"/@id\"\nstatus = \"/status\"\ncancelled_values = [\"Cancelled\"]",
        );
        let doc = decode(
            c.format,
            br#"<bookings datefrom="2019-08-01"><booking id="13300894" action=""><status>Confirmed</status></booking><booking id="13300895"><status>Cancelled</status></booking></bookings>"#,
            1,
        )
        .unwrap();
        let r = ex(&c, &doc).unwrap();
        assert_eq!(
            r.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(),
            ["13300894", "13300895"]
        );
        let policy = crate::diff::Policy {
            status: c.status.clone(),
            cancelled_values: c.cancelled_values.clone(),
            ..Default::default()
        };
        assert!(!policy.is_cancelled(&r[0].doc));
        assert!(policy.is_cancelled(&r[1].doc));
    }

    #[test]
    fn xml_pages_decode_into_the_same_tree() {
        let c = cfg("format = \"xml\"\nitems = \"/response/booking\"\nid = \"/trans_num\"");
        let one = decode(
            c.format,
            b"<response><total>1</total><booking><trans_num>A1</trans_num></booking></response>",
            1,
        )
        .unwrap();
        assert_eq!(ex(&c, &one).unwrap()[0].id, "A1");
        let none = decode(c.format, b"<response><total>0</total></response>", 1).unwrap();
        assert!(ex(&c, &none).unwrap().is_empty());
        assert!(decode(c.format, b"<response><booking>", 1).is_err());
    }

    #[test]
    fn query_templates_and_array_styles() {
        let now = DateTime::parse_from_rfc3339("2026-03-29T10:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let ctx = RequestContext {
            now,
            tz: chrono_tz::UTC,
            watermark: None,
            id: None,
            secrets: None,
            paging: Paging::default(),
        };
        for (style, expected) in [
            (
                "repeat",
                vec![
                    ("status", "new"),
                    ("status", "cancelled"),
                    ("from", "2026-03-28"),
                ],
            ),
            (
                "brackets",
                vec![
                    ("status[]", "new"),
                    ("status[]", "cancelled"),
                    ("from", "2026-03-28"),
                ],
            ),
            (
                "comma",
                vec![("status", "new,cancelled"), ("from", "2026-03-28")],
            ),
        ] {
            let c = cfg(&format!(
                "array_style = \"{style}\"\nquery = {{ status = [\"new\", \"cancelled\"], from = \"{{{{ today - 1d }}}}\" }}"
            ));
            let mut out = Vec::new();
            render_params(&c.query, c.array_style, &ctx, &mut out).unwrap();
            let got: Vec<(&str, &str)> =
                out.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
            let mut want = expected.clone();
            want.sort();
            let mut got_sorted = got.clone();
            got_sorted.sort();
            assert_eq!(got_sorted, want, "{style}");
        }
    }

    #[test]
    fn incremental_polls_add_the_watermark_with_overlap() {
        let c = cfg(
            "sync = \"incremental\"\n[sources.s.incremental]\noverlap = \"10m\"\nquery = { modifiedFrom = \"{{ watermark | %Y-%m-%dT%H:%M:%S }}\" }",
        );
        let client_store = tempfile::tempdir().unwrap();
        let store = Store::open(&client_store.path().join("t.redb")).unwrap();
        let client = SourceClient::new(&c, store).unwrap();
        let now = DateTime::parse_from_rfc3339("2026-03-29T10:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let full = client
            .base(&c, PollKind::Full, now, Paging::default())
            .unwrap();
        assert!(full.query.is_empty());
        let wm = DateTime::parse_from_rfc3339("2026-03-29T09:00:00Z")
            .unwrap()
            .timestamp_millis();
        let inc = client
            .base(
                &c,
                PollKind::Incremental { watermark_ms: wm },
                now,
                Paging::default(),
            )
            .unwrap();
        assert_eq!(
            inc.query,
            vec![(
                "modifiedFrom".to_string(),
                "2026-03-29T08:50:00".to_string()
            )]
        );
    }

    #[test]
    fn next_links_resolve_and_stay_on_host() {
        let base = Url::parse("http://api.test/v2/bookings").unwrap();
        let doc = |l: Value| json!({"pages": {"next": l}});
        let p = "/pages/next";
        let n = next_link(&base, &base, &doc(json!("?page=2")), p, 1)
            .unwrap()
            .unwrap();
        assert_eq!(n.as_str(), "http://api.test/v2/bookings?page=2");
        let n = next_link(
            &base,
            &base,
            &doc(json!("http://api.test/v2/bookings?page=3")),
            p,
            1,
        )
        .unwrap()
        .unwrap();
        assert_eq!(n.query(), Some("page=3"));
        assert!(
            next_link(&base, &base, &doc(json!(null)), p, 1)
                .unwrap()
                .is_none()
        );
        assert!(
            next_link(&base, &base, &doc(json!("")), p, 1)
                .unwrap()
                .is_none()
        );
        assert!(next_link(&base, &base, &doc(json!("http://evil.test/x")), p, 1).is_err());
        assert!(next_link(&base, &base, &doc(json!("https://api.test/x")), p, 1).is_err());
        assert!(next_link(&base, &base, &doc(json!(5)), p, 1).is_err());
    }
}
