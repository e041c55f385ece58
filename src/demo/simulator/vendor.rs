//! What the vendor routes share: the route and vendor enums, request decoding, the vendor state (tokens, credits, faults, request log, concurrency gauge), Beds24 credit headers, and the response, date and paging helpers several vendors use.
//!
//! Each vendor file is a view of the one booking store; each route cites the section of
//! /work/shared/reference/booking-apis.md ("ref §n") whose published shape and traps it models.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};
use serde_json::{Value, json};

use super::{Shared, SimState, error_response};
use crate::demo::Captured;

const DEFAULT_VENDOR_PAGE_SIZE: usize = 100;
const DEFAULT_TOKEN_TTL_SECS: u64 = 3600;
const BEDS24_CREDIT_LIMIT: i64 = 100;
const BEDS24_CREDIT_WINDOW: Duration = Duration::from_secs(300);
/// Largest Smoobu `pageSize` and Hostaway `limit` (ref §4.3 says Hostaway `limit` <= 100; the
/// Smoobu cap is a guess).
const VENDOR_MAX_LIMIT: usize = 100;

/// One request to a vendor route, as [`Simulator::vendor_requests`](super::Simulator::vendor_requests)
/// tells it.
#[derive(Debug, Clone)]
pub struct SimRequest {
    /// The request. Its fields and lookups (`path`, `query_param(..)`, ...) are also reachable
    /// directly on `SimRequest`.
    pub request: Captured,
    /// When it arrived.
    pub at: std::time::Instant,
}

impl std::ops::Deref for SimRequest {
    type Target = Captured;
    fn deref(&self) -> &Captured {
        &self.request
    }
}

/// Vendor-route state: tokens, credits, faults, the request log and the concurrency gauge.
pub(super) struct VendorState {
    pub(super) page_size: usize,
    pub(super) token_ttl: u64,
    /// Beds24 v2 token -> when it expires.
    pub(super) beds24_tokens: HashMap<String, std::time::Instant>,
    pub(super) beds24_minted: u32,
    pub(super) hostaway_tokens: HashSet<String>,
    pub(super) hostaway_minted: u32,
    pub(super) credits: i64,
    credit_window_start: std::time::Instant,
    pub(super) throttle_remaining: u32,
    pub(super) throttle_retry_after: u32,
    /// `None`: each vendor's own throttling status.
    pub(super) throttle_status: Option<StatusCode>,
    pub(super) soft_fail_remaining: u32,
    pub(super) latency: Duration,
    pub(super) log: Vec<SimRequest>,
    pub(super) in_flight: usize,
    pub(super) max_in_flight: usize,
}

/// What one Beds24 v2 request did to the credit budget.
#[derive(Debug, Clone, Copy)]
struct Credit {
    remaining: i64,
    resets_in: u64,
    blocked: bool,
}

impl VendorState {
    pub(super) fn new() -> VendorState {
        VendorState {
            page_size: DEFAULT_VENDOR_PAGE_SIZE,
            token_ttl: DEFAULT_TOKEN_TTL_SECS,
            beds24_tokens: HashMap::new(),
            beds24_minted: 0,
            hostaway_tokens: HashSet::new(),
            hostaway_minted: 0,
            credits: BEDS24_CREDIT_LIMIT,
            credit_window_start: std::time::Instant::now(),
            throttle_remaining: 0,
            throttle_retry_after: 1,
            throttle_status: None,
            soft_fail_remaining: 0,
            latency: Duration::ZERO,
            log: Vec::new(),
            in_flight: 0,
            max_in_flight: 0,
        }
    }

    /// Charges one credit, after refilling the budget if its five-minute window is over.
    fn take_credit(&mut self) -> Credit {
        let now = std::time::Instant::now();
        let mut elapsed = now.saturating_duration_since(self.credit_window_start);
        if elapsed >= BEDS24_CREDIT_WINDOW {
            self.credit_window_start = now;
            self.credits = BEDS24_CREDIT_LIMIT;
            elapsed = Duration::ZERO;
        }
        let left = BEDS24_CREDIT_WINDOW - elapsed;
        let resets_in = left.as_secs() + u64::from(left.subsec_nanos() > 0);
        let blocked = self.credits <= 0;
        if !blocked {
            self.credits -= 1;
        }
        Credit {
            remaining: self.credits,
            resets_in,
            blocked,
        }
    }

    /// The page size a paginated vendor serves when the client asks for `requested`.
    pub(super) fn capped(&self, requested: usize) -> usize {
        requested.min(self.page_size).clamp(1, VENDOR_MAX_LIMIT)
    }
}

/// Keeps [`VendorState::in_flight`] right even when the client goes away mid-response.
pub(super) struct InFlight(pub(super) Arc<Shared>);

impl Drop for InFlight {
    fn drop(&mut self) {
        let mut st = self.0.lock();
        st.vendor.in_flight = st.vendor.in_flight.saturating_sub(1);
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Route {
    Beds24V2Token,
    Beds24V2Bookings,
    Beds24V1GetBookings,
    SmoobuReservations,
    CheckfrontIndex,
    HostawayToken,
    HostawayReservations,
    Rezgo,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Vendor {
    Beds24V2,
    Beds24V1,
    Smoobu,
    Checkfront,
    Hostaway,
    Rezgo,
}

impl Route {
    pub(super) fn vendor(self) -> Vendor {
        match self {
            Route::Beds24V2Token | Route::Beds24V2Bookings => Vendor::Beds24V2,
            Route::Beds24V1GetBookings => Vendor::Beds24V1,
            Route::SmoobuReservations => Vendor::Smoobu,
            Route::CheckfrontIndex => Vendor::Checkfront,
            Route::HostawayToken | Route::HostawayReservations => Vendor::Hostaway,
            Route::Rezgo => Vendor::Rezgo,
        }
    }
}

/// One vendor request, decoded once.
pub(super) struct VendorRequest {
    method: Method,
    path: String,
    pub(super) query: Vec<(String, String)>,
    headers: HeaderMap,
    pub(super) body: Bytes,
}

impl VendorRequest {
    pub(super) fn new(method: Method, uri: &Uri, headers: HeaderMap, body: Bytes) -> VendorRequest {
        VendorRequest {
            method,
            path: uri.path().to_string(),
            query: Captured::query_of(uri),
            headers,
            body,
        }
    }

    pub(super) fn to_log(&self) -> SimRequest {
        SimRequest {
            request: Captured {
                method: self.method.to_string(),
                path: self.path.clone(),
                query: self.query.clone(),
                headers: Captured::headers_of(&self.headers),
                body: self.body.to_vec(),
            },
            at: std::time::Instant::now(),
        }
    }

    /// All values of parameter `name`, accepting both `name=a&name=b` and PHP's `name[]=a`.
    pub(super) fn params(&self, name: &str) -> Vec<&str> {
        self.query
            .iter()
            .filter(|(k, _)| k.split_once('[').map_or(k.as_str(), |(base, _)| base) == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// The first non-empty value of parameter `name`.
    pub(super) fn param(&self, name: &str) -> Option<&str> {
        self.params(name).into_iter().find(|v| !v.trim().is_empty())
    }

    pub(super) fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// A positive integer parameter, `default` if absent.
    pub(super) fn positive(&self, name: &str, default: usize) -> Result<usize, String> {
        match self.param(name) {
            None => Ok(default),
            Some(v) => match v.trim().parse::<usize>() {
                Ok(n) if n > 0 => Ok(n),
                _ => Err(format!("invalid {name}: {v:?}")),
            },
        }
    }

    /// A non-negative integer parameter, `default` if absent.
    pub(super) fn unsigned(&self, name: &str, default: usize) -> Result<usize, String> {
        match self.param(name) {
            None => Ok(default),
            Some(v) => v
                .trim()
                .parse::<usize>()
                .map_err(|_| format!("invalid {name}: {v:?}")),
        }
    }

    pub(super) fn date(&self, name: &str) -> Result<Option<NaiveDate>, String> {
        self.param(name)
            .map(|v| parse_date(v).ok_or_else(|| format!("invalid {name}: {v:?} (YYYY-MM-DD)")))
            .transpose()
    }

    pub(super) fn ids(&self, name: &str) -> Result<Vec<u64>, String> {
        self.params(name)
            .into_iter()
            .flat_map(|v| v.split(','))
            .filter(|v| !v.trim().is_empty())
            .map(|v| {
                v.trim()
                    .parse::<u64>()
                    .map_err(|_| format!("invalid {name}: {v:?}"))
            })
            .collect()
    }
}

pub(super) fn json_response(status: StatusCode, body: Value) -> Response {
    (status, axum::Json(body)).into_response()
}

pub(super) fn xml_response(body: String) -> Response {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "text/xml; charset=utf-8")],
        body,
    )
        .into_response()
}

pub(super) fn rezgo_error(message: &str) -> String {
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<response><error>{}</error></response>\n",
        xml_escape(message)
    )
}

/// Smoobu's error body (an API-problem object; the exact shape is a guess, ref §4.2 has none).
pub(super) fn smoobu_problem(status: StatusCode, detail: &str) -> Value {
    json!({
        "status": status.as_u16(),
        "title": status.canonical_reason().unwrap_or("Error"),
        "detail": detail,
    })
}

pub(super) fn parse_date(s: &str) -> Option<NaiveDate> {
    NaiveDate::parse_from_str(s.trim(), "%Y-%m-%d").ok()
}

/// `<date> HH:MM:SS` in UTC, the date parsed by `date`; `date_only` also takes a bare date as
/// its midnight.
pub(super) fn parse_datetime_with(
    s: &str,
    sep: char,
    date: fn(&str) -> Option<NaiveDate>,
    date_only: bool,
) -> Option<DateTime<Utc>> {
    let s = s.trim().trim_end_matches('Z');
    match s.split_once(sep) {
        Some((d, t)) => {
            let time = chrono::NaiveTime::parse_from_str(t.trim(), "%H:%M:%S").ok()?;
            Some(NaiveDateTime::new(date(d)?, time).and_utc())
        }
        None if date_only => Some(date(s)?.and_hms_opt(0, 0, 0)?.and_utc()),
        None => None,
    }
}

pub(super) fn unix_of_date(d: NaiveDate) -> i64 {
    d.and_hms_opt(0, 0, 0)
        .map_or(0, |t| t.and_utc().timestamp())
}

pub(super) fn ymd(d: NaiveDate) -> String {
    d.format("%Y-%m-%d").to_string()
}

pub(super) fn ymd_hms(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M:%S").to_string()
}

pub(super) fn money(x: f64) -> String {
    format!("{x:.2}")
}

pub(super) fn pages_for(total: usize, size: usize) -> usize {
    total.div_ceil(size.max(1))
}

/// The `[start, start + size)` slice of `items` (empty past the end).
pub(super) fn page_of<T: Clone>(items: &[T], start: usize, size: usize) -> Vec<T> {
    items.iter().skip(start).take(size).cloned().collect()
}

pub(super) fn xml_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
    out
}

fn with_credit_headers(mut resp: Response, credit: Credit) -> Response {
    let h = resp.headers_mut();
    h.insert(
        HeaderName::from_static("x-fivemincreditlimit"),
        HeaderValue::from(BEDS24_CREDIT_LIMIT),
    );
    h.insert(
        HeaderName::from_static("x-fivemincreditlimit-remaining"),
        HeaderValue::from(credit.remaining),
    );
    h.insert(
        HeaderName::from_static("x-fivemincreditlimit-resetsin"),
        HeaderValue::from(credit.resets_in),
    );
    h.insert(
        HeaderName::from_static("x-requestcost"),
        HeaderValue::from(u16::from(!credit.blocked)),
    );
    resp
}

/// Charges a credit and answers `f`, or 429 when the five-minute budget is spent (ref §1.3: "when
/// credits run out the account is hard-blocked until the window resets"; the 429 is a guess).
pub(super) fn with_credits(shared: &Shared, f: impl FnOnce(&mut SimState) -> Response) -> Response {
    let mut st = shared.lock();
    let credit = st.vendor.take_credit();
    let resp = if credit.blocked {
        let mut r = error_response(429, "Credit limit exceeded");
        r.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(credit.resets_in));
        r
    } else {
        f(&mut st)
    };
    drop(st);
    with_credit_headers(resp, credit)
}

#[cfg(test)]
mod tests {
    use super::super::test_support::client;
    use super::super::test_support::vendors::{
        b24_list, b24_token, b24_v1, checkfront, hostaway, hostaway_token, rezgo, send, send_json,
        sim, smoobu, stored, xml_values,
    };
    use super::super::{SMOOBU_API_KEY, Simulator};
    use super::*;

    #[tokio::test]
    async fn request_log_latency_and_concurrency() {
        let sim = sim(1).await;
        let c = client();
        sim.set_latency(Duration::from_millis(150));
        let started = std::time::Instant::now();
        let _ = hostaway_token(&c, &sim).await;
        assert!(started.elapsed() >= Duration::from_millis(150));
        assert_eq!(sim.max_concurrent_requests(), 1);

        let get = |page: &'static str| send(smoobu(&c, &sim).query(&[("page", page)]));
        let (a, b, d) = tokio::join!(get("1"), get("2"), get("3"));
        assert_eq!((a.0, b.0, d.0), (200, 200, 200));
        assert_eq!(sim.max_concurrent_requests(), 3);

        let log = sim.vendor_requests();
        assert_eq!(log.len(), 4);
        let mint = &log[0];
        assert_eq!(
            (mint.method.as_str(), mint.path.as_str()),
            ("POST", "/hostaway/v1/accessTokens")
        );
        let body = String::from_utf8_lossy(&mint.body);
        assert!(body.contains("grant_type=client_credentials"), "{body}");
        assert_eq!(
            mint.header("Content-Type"),
            Some("application/x-www-form-urlencoded")
        );
        let mut pages: Vec<&str> = Vec::new();
        for r in &log[1..] {
            assert_eq!(
                (r.method.as_str(), r.path.as_str()),
                ("GET", "/smoobu/api/reservations")
            );
            assert_eq!(r.header("api-key"), Some(SMOOBU_API_KEY));
            assert!(r.body.is_empty());
            assert!(r.at >= mint.at);
            pages.push(r.query_param("page").expect("page"));
        }
        pages.sort_unstable();
        assert_eq!(pages, ["1", "2", "3"]);

        // One at a time stays at one.
        let serial = sim_with_latency().await;
        for _ in 0..3 {
            let (status, _, _) = send(smoobu(&c, &serial)).await;
            assert_eq!(status, 200);
        }
        assert_eq!(serial.max_concurrent_requests(), 1);
        assert_eq!(serial.vendor_requests().len(), 3);
    }

    async fn sim_with_latency() -> Simulator {
        let s = sim(1).await;
        s.set_latency(Duration::from_millis(30));
        s
    }

    #[tokio::test]
    async fn every_vendor_is_a_view_of_the_same_store() {
        let sim = sim(0).await;
        let c = client();
        let id = sim.create_booking();
        assert!(sim.set_guest_name(id, "Ada", "Lovelace"));
        let b = stored(&sim, id);
        let b24 = b24_token(&c, &sim).await;
        let ha = hostaway_token(&c, &sim).await;

        let (_, _, v2) = send_json(b24_list(&c, &sim, &b24)).await;
        assert_eq!(v2["data"][0]["lastName"], "Lovelace");
        assert_eq!(v2["data"][0]["arrival"], b["arrival"]);
        let (_, _, v1) = send_json(b24_v1(&c, &sim, json!({}))).await;
        assert_eq!(
            (v1[0]["bookId"].clone(), v1[0]["guestName"].clone()),
            (json!(id.to_string()), json!("Lovelace"))
        );
        let (_, _, sm) = send_json(smoobu(&c, &sim)).await;
        assert_eq!(sm["bookings"][0]["guest-name"], "Ada Lovelace");
        let (_, _, cf) = send_json(checkfront(&c, &sim)).await;
        assert_eq!(
            cf["booking/index"][id.to_string()]["customer_name"],
            "Ada Lovelace"
        );
        let (_, _, hw) = send_json(hostaway(&c, &sim, &ha)).await;
        assert_eq!(hw["result"][0]["guestLastName"], "Lovelace");
        let (_, _, rz) = send(rezgo(&c, &sim, &[("q", &format!("SIM{id}"))])).await;
        assert_eq!(xml_values(&rz, "last_name"), ["Lovelace"]);

        assert!(sim.remove_booking(id));
        let (_, _, v2) = send_json(b24_list(&c, &sim, &b24)).await;
        assert_eq!(v2["count"], 0);
        let (_, _, cf) = send_json(checkfront(&c, &sim)).await;
        assert_eq!(cf["booking/index"], json!([]));
        let (_, _, hw) = send_json(hostaway(&c, &sim, &ha)).await;
        assert_eq!(hw["count"], 0);
        let (_, _, rz) = send(rezgo(&c, &sim, &[("q", &format!("SIM{id}"))])).await;
        assert!(rz.contains("<total>0</total>"));
        // The existing route is untouched by the vendor routes.
        assert_eq!(sim.requests(), 0);
    }
}
