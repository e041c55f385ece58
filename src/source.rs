//! Sources: fetching every page of a legacy booking API and turning it into records
//! (id + document). All pages or an error: the caller commits nothing unless this returns `Ok`.
//!
//! The HTTP side (auth, timeouts, size cap, no redirects) lives here; the pure parts (finding
//! items and ids in a page, deciding the next page) are separate functions with unit tests.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use serde_json::Value;
use url::Url;

use crate::config::{PageStop, Pagination, SourceAuth, SourceConfig};
use crate::diff::{fingerprint, scalar_string};

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
    /// The body exceeded `max_response_bytes`.
    #[error("page {page}: response larger than max_response_bytes ({limit} bytes)")]
    TooLarge {
        /// Page number.
        page: u32,
        /// The cap.
        limit: u64,
    },
    /// Not JSON.
    #[error("page {page}: response is not valid JSON: {reason}")]
    Json {
        /// Page number.
        page: u32,
        /// Parser message.
        reason: String,
    },
    /// The items pointer does not lead to an array.
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
}

/// An HTTP client bound to one source's configuration.
#[derive(Debug, Clone)]
pub struct SourceClient {
    http: reqwest::Client,
    headers: HeaderMap,
}

fn redact(url: &Url) -> String {
    let mut u = url.clone();
    u.set_query(None);
    u.set_fragment(None);
    let _ = u.set_password(None);
    u.to_string()
}

impl SourceClient {
    /// Builds the client: timeouts on, redirects off, static headers and auth headers prepared.
    pub fn new(cfg: &SourceConfig) -> Result<SourceClient, String> {
        let mut headers = HeaderMap::new();
        for (k, v) in &cfg.headers {
            let name = HeaderName::from_bytes(k.as_bytes())
                .map_err(|_| format!("sources.{}.headers: `{k}` is not a header name", cfg.name))?;
            let value = HeaderValue::from_str(v).map_err(|_| {
                format!("sources.{}.headers.{k}: not a valid header value", cfg.name)
            })?;
            headers.insert(name, value);
        }
        let mut secret_header = |name: &str, value: &str| -> Result<(), String> {
            let n = HeaderName::from_bytes(name.as_bytes()).map_err(|_| {
                format!(
                    "sources.{}.auth.name: `{name}` is not a header name",
                    cfg.name
                )
            })?;
            let mut v = HeaderValue::from_str(value).map_err(|_| {
                format!("sources.{}.auth.secret: not a valid header value", cfg.name)
            })?;
            v.set_sensitive(true);
            headers.insert(n, v);
            Ok(())
        };
        match &cfg.auth {
            SourceAuth::Header { name, value } => secret_header(name, value.expose())?,
            SourceAuth::Bearer { token } => {
                secret_header("authorization", &format!("Bearer {}", token.expose()))?
            }
            SourceAuth::Basic { username, password } => {
                use base64::Engine as _;
                let raw = format!("{username}:{}", password.expose());
                let b64 = base64::engine::general_purpose::STANDARD.encode(raw);
                secret_header("authorization", &format!("Basic {b64}"))?
            }
            SourceAuth::None | SourceAuth::Query { .. } => {}
        }
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(cfg.timeout.min(Duration::from_secs(10)))
            .timeout(cfg.timeout)
            .user_agent(concat!("pollhook/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| format!("cannot build HTTP client: {e}"))?;
        Ok(SourceClient { http, headers })
    }

    /// Fetches every page. Any failure aborts the whole cycle.
    pub async fn fetch_all(&self, cfg: &SourceConfig) -> Result<Fetched, SourceError> {
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
        match &cfg.pagination {
            Pagination::None => {
                let doc = self.get(cfg, cfg.url.clone(), 1).await?;
                out.pages = 1;
                add(extract(cfg, &doc, 1)?, &mut out);
            }
            Pagination::Page {
                param,
                start,
                size,
                stop,
            } => {
                let mut prev_print: Option<String> = None;
                let mut number = *start;
                loop {
                    let page = out.pages + 1;
                    if page > cfg.max_pages {
                        return Err(SourceError::TooManyPages(cfg.max_pages));
                    }
                    let mut url = cfg.url.clone();
                    {
                        let mut q = url.query_pairs_mut();
                        q.append_pair(param, &number.to_string());
                        if let Some((p, n)) = size {
                            q.append_pair(p, &n.to_string());
                        }
                    }
                    let doc = self.get(cfg, url, page).await?;
                    out.pages = page;
                    let records = extract(cfg, &doc, page)?;
                    if records.is_empty() && matches!(stop, PageStop::EmptyPage) {
                        break;
                    }
                    if !records.is_empty() {
                        let print = fingerprint(&Value::Array(
                            records.iter().map(|r| r.doc.clone()).collect(),
                        ));
                        if prev_print.as_deref() == Some(print.as_str()) {
                            return Err(SourceError::PageLoop(page));
                        }
                        prev_print = Some(print);
                    }
                    let empty = records.is_empty();
                    add(records, &mut out);
                    let more = match stop {
                        PageStop::EmptyPage => true,
                        PageStop::HasMore(p) => {
                            doc.pointer(p).is_some_and(|v| v == &Value::Bool(true))
                                || doc.pointer(p).and_then(scalar_string).as_deref() == Some("1")
                        }
                        PageStop::TotalPages(p) => {
                            let total = doc
                                .pointer(p)
                                .and_then(scalar_string)
                                .and_then(|s| s.parse::<u64>().ok())
                                .unwrap_or(0);
                            number + 1 - start < total
                        }
                    };
                    if !more || (empty && !matches!(stop, PageStop::EmptyPage)) {
                        break;
                    }
                    number += 1;
                }
            }
            Pagination::NextLink { pointer } => {
                let mut url = cfg.url.clone();
                let mut visited: HashSet<String> = HashSet::new();
                loop {
                    let page = out.pages + 1;
                    if page > cfg.max_pages {
                        return Err(SourceError::TooManyPages(cfg.max_pages));
                    }
                    visited.insert(url.to_string());
                    let doc = self.get(cfg, url.clone(), page).await?;
                    out.pages = page;
                    add(extract(cfg, &doc, page)?, &mut out);
                    match next_link(&cfg.url, &url, &doc, pointer, page)? {
                        None => break,
                        Some(next) if visited.contains(next.as_str()) => {
                            return Err(SourceError::PageLoop(page + 1));
                        }
                        Some(next) => url = next,
                    }
                }
            }
        }
        Ok(out)
    }

    async fn get(&self, cfg: &SourceConfig, mut url: Url, page: u32) -> Result<Value, SourceError> {
        {
            let mut q = url.query_pairs_mut();
            for (k, v) in &cfg.query {
                q.append_pair(k, v);
            }
            if let SourceAuth::Query { name, value } = &cfg.auth {
                q.append_pair(name, value.expose());
            }
        }
        if url.query() == Some("") {
            url.set_query(None);
        }
        let shown = redact(&url);
        let transport = |e: reqwest::Error| SourceError::Transport {
            page,
            url: shown.clone(),
            reason: describe_reqwest(e),
        };
        let mut resp = self
            .http
            .get(url)
            .headers(self.headers.clone())
            .header("accept", "application/json")
            .send()
            .await
            .map_err(transport)?;
        let status = resp.status();
        let limit = cfg.max_response_bytes;
        if resp.content_length().is_some_and(|n| n > limit) {
            return Err(SourceError::TooLarge { page, limit });
        }
        let mut body = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(transport)? {
            if (body.len() + chunk.len()) as u64 > limit {
                return Err(SourceError::TooLarge { page, limit });
            }
            body.extend_from_slice(&chunk);
        }
        if !status.is_success() {
            return Err(SourceError::Status {
                page,
                url: shown,
                status: status.as_u16(),
                body: snippet(&body, 200),
            });
        }
        serde_json::from_slice(&body).map_err(|e| SourceError::Json {
            page,
            reason: e.to_string(),
        })
    }
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

/// Finds the bookings in one page and their ids.
pub fn extract(cfg: &SourceConfig, doc: &Value, page: u32) -> Result<Vec<Record>, SourceError> {
    let list = if cfg.items.is_empty() {
        Some(doc)
    } else {
        doc.pointer(&cfg.items)
    };
    let items = match list {
        Some(Value::Array(a)) => a,
        // An empty result is often `null` or absent rather than `[]`.
        Some(Value::Null) | None if !cfg.items.is_empty() && doc.is_object() => {
            return Ok(Vec::new());
        }
        _ => {
            return Err(SourceError::NotAList {
                page,
                pointer: cfg.items.clone(),
            });
        }
    };
    let mut out = Vec::with_capacity(items.len());
    for (index, item) in items.iter().enumerate() {
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
            .unwrap()
            .sources
            .remove(0)
    }

    #[test]
    fn extracts_items_and_ids_as_strings() {
        let c = cfg("items = \"/data\"");
        let r = extract(&c, &json!({"data": [{"id": 7}, {"id": "x"}]}), 1).unwrap();
        assert_eq!(r[0].id, "7");
        assert_eq!(r[1].id, "x");
    }

    #[test]
    fn composite_ids_join_parts() {
        let c = cfg("id = [\"/propertyId\", \"/id\"]");
        let r = extract(&c, &json!([{"propertyId": 3, "id": 7}]), 1).unwrap();
        assert_eq!(r[0].id, "3:7");
    }

    #[test]
    fn missing_id_is_an_error() {
        let c = cfg("items = \"/data\"");
        let e = extract(&c, &json!({"data": [{"id": 1}, {"name": "x"}]}), 2).unwrap_err();
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
    fn items_must_be_a_list() {
        let c = cfg("items = \"/data\"");
        assert!(extract(&c, &json!({"data": {"a": 1}}), 1).is_err());
        assert!(extract(&c, &json!([1]), 1).is_err());
        assert!(extract(&c, &json!({"data": null}), 1).unwrap().is_empty());
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
