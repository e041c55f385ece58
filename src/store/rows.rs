//! The rows the store keeps besides the outbox types: a booking's last-seen state, a source's
//! poll state, an endpoint's persistent state.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The last-seen state of one booking, as kept in the snapshot.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredBooking {
    /// Fingerprint of the significant content.
    pub hash: String,
    /// Whether it was cancelled when last seen (by status or by confirmed disappearance).
    pub cancelled: bool,
    /// The document as last returned by the source.
    pub doc: Value,
    /// Missing from full polls but confirmed active by a lookup: it left the polled window.
    /// Not looked up again until it reappears.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub outside: bool,
}

/// What the store remembers about a source between polls.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceState {
    /// Successful polls committed so far.
    pub polls: u64,
    /// When the first successful poll was committed (ms).
    pub first_poll_ms: i64,
    /// When the latest successful poll was committed (ms).
    pub last_poll_ms: i64,
    /// Start of the latest successful poll (ms): incremental polls ask for changes since then.
    #[serde(default)]
    pub watermark_ms: Option<i64>,
    /// Start of the latest successful full poll (ms).
    #[serde(default)]
    pub last_full_ms: Option<i64>,
}

/// Persistent per-endpoint state.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndpointState {
    /// Set when deliveries are suspended (e.g. the receiver answered 410 Gone); events keep
    /// queueing until an operator re-enables the endpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disabled: Option<Disabled>,
}

/// Why and since when an endpoint is disabled.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Disabled {
    /// When (ms since epoch).
    pub since_ms: i64,
    /// Why.
    pub reason: String,
}
