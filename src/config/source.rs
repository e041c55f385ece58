//! The validated form of a `[sources.NAME]` table: what to request, how pages and items are
//! shaped, what counts as a change, and politeness.

use std::collections::BTreeMap;
use std::time::Duration;

use url::Url;

use super::{Auth, Secret};
use crate::schedule::Schedule;
use crate::template::Template;
use crate::text::Redactor;

/// How a source's result set is split into pages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pagination {
    /// One request returns everything.
    None,
    /// A page-number parameter, incremented until the stop condition.
    Page {
        /// Query parameter carrying the page number.
        param: String,
        /// The first page's number.
        start: u64,
        /// Optional page-size parameter and value.
        size: Option<(String, u64)>,
        /// When to stop.
        stop: PageStop,
        /// Where the parameters go.
        param_in: ParamIn,
    },
    /// An offset parameter advanced by the page size.
    Offset {
        /// Offset parameter.
        param: String,
        /// Page-size parameter and value.
        size: (String, u64),
        /// Total-count pointer; without it, stop at a short or empty page.
        total: Option<String>,
        /// Where the parameters go.
        param_in: ParamIn,
    },
    /// An opaque cursor from each response, sent back as a parameter.
    Cursor {
        /// Cursor parameter.
        param: String,
        /// JSON Pointer to the next cursor; missing, null or empty means last page.
        next: String,
        /// Where the parameter goes.
        param_in: ParamIn,
    },
    /// The response carries the URL of the next page (absolute or relative, same host only).
    NextLink {
        /// JSON Pointer to the next URL; missing, null or empty means last page.
        pointer: String,
    },
}

/// Where pagination parameters go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParamIn {
    /// The query string.
    Query,
    /// The top level of the (JSON or form) body.
    Body,
}

/// When page-number pagination stops.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PageStop {
    /// At the first page with no items.
    EmptyPage,
    /// When the boolean at this pointer is false (or absent).
    HasMore(String),
    /// After the page count found at this pointer.
    TotalPages(String),
}

/// What the first successful poll of a source does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FirstPoll {
    /// Record what exists and send nothing.
    Baseline,
    /// Send a `new` event for every booking found.
    EmitNew,
}

/// What it means when a known booking is missing from a full poll.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnDisappear {
    /// Nothing: it may merely have left the date window.
    Ignore,
    /// Treat it as cancelled (subject to the mass-disappearance guard).
    Cancel,
    /// Fetch it by id: gone or cancelled means cancel; present and active means it left the
    /// window and nothing is emitted (subject to the guard).
    Lookup,
}

/// HTTP method of a source request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceMethod {
    /// GET with query parameters.
    Get,
    /// POST with a body (and query parameters).
    Post,
}

/// Body encoding for POST sources.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyFormat {
    /// `application/json`.
    Json,
    /// `application/x-www-form-urlencoded` (top-level keys; lists repeat the key).
    Form,
}

/// How list-valued query parameters are encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArrayStyle {
    /// `status=a&status=b`.
    Repeat,
    /// `status[]=a&status[]=b`.
    Brackets,
    /// `status=a,b`.
    Comma,
}

/// Response body format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResponseFormat {
    /// JSON.
    Json,
    /// XML, turned into the same tree (see the `xml` module).
    Xml,
}

/// How the bookings sit at the `items` pointer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ItemsShape {
    /// An array (a single object counts as a list of one).
    List,
    /// An object keyed by id: its values are the bookings (an empty array also means none).
    Keyed,
}

/// A success check on every response besides the HTTP status.
#[derive(Debug, Clone, PartialEq)]
pub enum SuccessCheck {
    /// The value at the pointer must equal this.
    Equals(String, serde_json::Value),
    /// The value at the pointer must not equal this.
    NotEquals(String, serde_json::Value),
    /// Nothing may be at the pointer (e.g. an `error` member).
    Absent(String),
}

/// A request parameter value: one or several templates.
#[derive(Debug, Clone, PartialEq)]
pub enum ParamValue {
    /// One value.
    One(Template),
    /// Several values, encoded by the array style.
    Many(Vec<Template>),
}

/// Sync mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncMode {
    /// Every poll returns everything in scope.
    Full,
    /// Polls ask for what changed since the watermark (with an overlap); full passes as configured.
    Incremental,
}

/// Incremental polling settings.
#[derive(Debug, Clone, PartialEq)]
pub struct Incremental {
    /// Extra query parameters on incremental polls (may use `{{ watermark }}`).
    pub query: Vec<(String, ParamValue)>,
    /// Extra top-level body members on incremental polls.
    pub body: Option<serde_json::Value>,
    /// Subtracted from the watermark.
    pub overlap: Duration,
    /// A full pass at least this often (None: only the first poll).
    pub full_every: Option<Duration>,
    /// Where the next watermark comes from.
    pub watermark: WatermarkFrom,
}

/// Where an incremental poll's next watermark comes from: the time from which the next poll asks
/// for changes (minus the overlap).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatermarkFrom {
    /// pollhook's clock when the poll started (the overlap must cover clock skew and the poll's
    /// own duration).
    PollStart,
    /// The `Date` header of the poll's first response: the source's own clock.
    DateHeader,
    /// A response header of the poll's first page holding a time (pretix: `X-Page-Generated`).
    Header(String),
    /// The newest time found at this pointer in the bookings of the poll (e.g. `/modifiedTime`).
    Pointer(String),
}

/// Fetching one booking by id (for `on_disappear = "lookup"`).
#[derive(Debug, Clone, PartialEq)]
pub struct Lookup {
    /// URL (default: the source URL).
    pub url: Url,
    /// Query parameters (may use `{{ id }}`).
    pub query: Vec<(String, ParamValue)>,
    /// Body members for POST sources (may use `{{ id }}`).
    pub body: Option<serde_json::Value>,
    /// Items pointer in the answer (default: the source's).
    pub items: String,
}

/// Politeness towards the polled API.
#[derive(Debug, Clone, PartialEq)]
pub struct Politeness {
    /// Least time between the end of one request and the start of the next.
    pub min_gap: Duration,
    /// Transient failures (connection errors, timeouts, 429, 5xx) retried within a cycle.
    pub retries: u32,
    /// First backoff delay (doubles each retry).
    pub retry_backoff: Duration,
    /// Longest `Retry-After` or rate-limit reset waited for inside a cycle.
    pub max_retry_after: Duration,
    /// Headers giving the remaining request budget (first present wins).
    pub remaining_headers: Vec<String>,
    /// Headers giving seconds until the budget resets.
    pub reset_headers: Vec<String>,
}

/// One source to poll.
#[derive(Debug, Clone)]
pub struct SourceConfig {
    /// Unique name (the table key in the config).
    pub name: String,
    /// The list endpoint.
    pub url: Url,
    /// When to poll.
    pub schedule: Schedule,
    /// GET or POST.
    pub method: SourceMethod,
    /// JSON or XML.
    pub format: ResponseFormat,
    /// Query parameters (templates).
    pub query: Vec<(String, ParamValue)>,
    /// List encoding in query strings.
    pub array_style: ArrayStyle,
    /// POST body (a JSON tree whose strings may be templates).
    pub body: Option<serde_json::Value>,
    /// POST body encoding.
    pub body_format: BodyFormat,
    /// Shape of the items.
    pub items_shape: ItemsShape,
    /// Success check besides the HTTP status.
    pub success: Option<SuccessCheck>,
    /// Full or incremental.
    pub sync: SyncMode,
    /// Incremental settings (when `sync` is incremental).
    pub incremental: Option<Incremental>,
    /// By-id lookup (when `on_disappear` is lookup).
    pub lookup: Option<Lookup>,
    /// Politeness settings.
    pub politeness: Politeness,
    /// Time zone for `today` in templates and for cron schedules.
    pub tz: chrono_tz::Tz,
    /// Named secrets for request templates (`{{ secret.NAME }}`), e.g. credentials that an API
    /// wants inside the body.
    pub secrets: BTreeMap<String, Secret>,
    /// Static, non-secret headers.
    pub headers: Vec<(String, String)>,
    /// Authentication.
    pub auth: Auth,
    /// JSON Pointer to the array of bookings ("" = the document itself).
    pub items: String,
    /// JSON Pointers whose values together form the booking id.
    pub id: Vec<String>,
    /// JSON Pointer to the status, if the API has one.
    pub status: Option<String>,
    /// Status values (compared as strings) that mean cancelled.
    pub cancelled_values: Vec<String>,
    /// Fields that never count as a change.
    pub ignore_fields: Vec<String>,
    /// If non-empty, only these fields count as a change.
    pub only_fields: Vec<String>,
    /// What the first poll does.
    pub first_poll: FirstPoll,
    /// What a missing booking means.
    pub on_disappear: OnDisappear,
    /// Largest share of known active bookings that may be cancelled by disappearance in one poll.
    pub max_disappear_share: f64,
    /// Per-request timeout.
    pub timeout: Duration,
    /// Largest response body accepted, in bytes.
    pub max_response_bytes: u64,
    /// Largest number of pages one poll may fetch.
    pub max_pages: u32,
    /// An interrupted poll is resumed only if it started less than this long ago.
    pub resume_within: Duration,
    /// Pagination style.
    pub pagination: Pagination,
    /// Its credentials in every form the API may echo them, to take out of what it answers.
    pub redactor: Redactor,
}
