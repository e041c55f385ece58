//! The serde rows the store keeps besides the outbox types: a source's poll state and an
//! endpoint's persistent state.

use serde::{Deserialize, Serialize};

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
