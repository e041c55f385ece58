//! Sources: fetching every page of a legacy booking API and turning it into records (id +
//! document). All pages or an error: the caller commits nothing unless a fetch returns `Ok`.
//!
//! | file | owns |
//! |------|------|
//! | [`client`]   | the HTTP client of one source: auth, timeouts, size cap, politeness, in-cycle retries, lookups by id |
//! | [`request`]  | building a request from the configured templates (query, body, paging values) |
//! | `paginate`   | where a poll stands in the pages, one rule per pagination style (resumable) |
//! | [`decode`]   | pure page decoding: JSON or XML, success checks, items and ids, next links |
//! | `stream`     | decoding a JSON page one booking at a time in one pass |
//! | [`xml`]      | XML responses into the JSON tree every pointer reads |

use serde_json::Value;

use crate::text::Redactor;

mod client;
pub mod decode;
mod paginate;
mod request;
mod stream;
pub mod xml;

pub use client::{RawPage, SourceClient};
pub use decode::{check_success, decode, extract, id_of, next_link, page};
pub use paginate::{PagePrint, PageSeen, Pager};

/// One booking as polled.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    /// Its id (composite ids joined with `:`), always a string.
    pub id: String,
    /// The booking as the source returned it.
    pub doc: Value,
}

/// What kind of poll to make.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
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
        "page {page}: booking #{index} has no id at `{pointer}` (an id is a non-blank string or an integer)"
    )]
    MissingId {
        /// Page number.
        page: u32,
        /// Index within the page.
        index: usize,
        /// The id pointer that failed.
        pointer: String,
    },
    /// A record's id is there but is no id: true/false, blank text, a number with a fraction
    /// or one too large for 64 bits.
    #[error(
        "page {page}: booking #{index} has an unusable id at `{pointer}`: {reason}; an id is a non-blank string or an integer (7, 7.0 and 7e0 are all the id \"7\")"
    )]
    BadId {
        /// Page number.
        page: u32,
        /// Index within the page.
        index: usize,
        /// The id pointer that failed.
        pointer: String,
        /// What the value is, e.g. "it is true/false".
        reason: &'static str,
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

impl SourceError {
    /// The error with every secret `redactor` knows taken out of the text the API sent (a body's
    /// start, a reported failure, a next link, a transport message).
    pub fn redact(self, redactor: &Redactor) -> SourceError {
        if redactor.is_empty() {
            return self;
        }
        let r = |s: String| redactor.redact(&s);
        match self {
            SourceError::Transport { page, url, reason } => SourceError::Transport {
                page,
                url: r(url),
                reason: r(reason),
            },
            SourceError::Status {
                page,
                url,
                status,
                body,
            } => SourceError::Status {
                page,
                url: r(url),
                status,
                body: r(body),
            },
            SourceError::Decode {
                page,
                format,
                reason,
            } => SourceError::Decode {
                page,
                format,
                reason: r(reason),
            },
            SourceError::Unsuccessful { page, detail } => SourceError::Unsuccessful {
                page,
                detail: r(detail),
            },
            SourceError::BadNextLink { page, reason } => SourceError::BadNextLink {
                page,
                reason: r(reason),
            },
            SourceError::Template(t) => SourceError::Template(r(t)),
            other => other,
        }
    }

    /// Whether trying the same request again later may succeed (the network, a busy or
    /// restarting API). Anything else is the answer itself being wrong for this request.
    pub fn is_transient(&self) -> bool {
        match self {
            SourceError::Transport { .. } | SourceError::Throttled { .. } => true,
            SourceError::Status { status, .. } => matches!(status, 408 | 425 | 429 | 500..=599),
            _ => false,
        }
    }
}
