//! The raw, serde-facing layer: exactly what the TOML file may contain (`deny_unknown_fields`
//! everywhere), before any validation.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;

/// The whole file.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    #[serde(default)]
    pub store: RawStore,
    #[serde(default)]
    pub log: RawLog,
    #[serde(default)]
    pub admin: RawAdmin,
    pub ingress: Option<RawIngress>,
    #[serde(default)]
    pub delivery: RawDeliveryDefaults,
    #[serde(default)]
    pub sources: BTreeMap<String, RawSource>,
    #[serde(default)]
    pub endpoints: BTreeMap<String, RawEndpoint>,
    /// `"N/M"`: poll only the sources of shard N of M.
    pub shard: Option<String>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawStore {
    pub path: Option<PathBuf>,
    pub retention: Option<String>,
    pub cache_size: Option<RawSize>,
}

/// A size: bytes as a number, or text with a unit ("64MiB", "512 KiB").
#[derive(Debug, Deserialize, Clone)]
#[serde(untagged)]
pub enum RawSize {
    Bytes(u64),
    Text(String),
}

/// Where an incremental poll's next watermark comes from.
#[derive(Debug, Deserialize, Clone)]
#[serde(untagged)]
pub enum RawWatermark {
    /// "poll_start" or "date_header".
    Named(String),
    /// `{ header = "X-Page-Generated" }` or `{ pointer = "/modifiedTime" }`.
    Table(RawWatermarkTable),
}

#[derive(Debug, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct RawWatermarkTable {
    pub header: Option<String>,
    pub pointer: Option<String>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawLog {
    pub format: Option<String>,
    pub level: Option<String>,
}

/// The `[admin]` table alone, every other table skipped unread (for the operator commands).
#[derive(Debug, Deserialize, Default)]
pub struct AdminOnly {
    #[serde(default)]
    pub admin: RawAdmin,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawAdmin {
    pub listen: Option<String>,
    pub token: Option<RawSecret>,
    pub allowed_hosts: Option<Vec<String>>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawIngress {
    pub listen: Option<String>,
    pub max_body: Option<RawSize>,
    pub timeout: Option<String>,
    pub backlog: Option<u64>,
    pub max_connections: Option<u64>,
}

/// A source's `[ping]` table.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPing {
    pub preset: Option<String>,
    pub path: Option<String>,
    pub methods: Option<Vec<String>>,
    pub auth: Option<RawPingAuth>,
    pub id: Option<RawPingId>,
    pub coalesce: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPingAuth {
    #[serde(rename = "type")]
    pub kind: String,
    pub secret: Option<RawSecret>,
    #[serde(rename = "in")]
    pub place: Option<String>,
    pub name: Option<String>,
    pub username: Option<String>,
    pub header: Option<String>,
    pub encoding: Option<String>,
    pub prefix: Option<String>,
    pub tolerance: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPingId {
    pub query: Option<String>,
    pub form: Option<String>,
    pub pointer: Option<String>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawDeliveryDefaults {
    pub retry_schedule: Option<Vec<String>>,
    pub jitter: Option<f64>,
    pub retry_after_cap: Option<String>,
    pub connect_timeout: Option<String>,
    pub timeout: Option<String>,
    pub max_in_flight: Option<u32>,
}

/// A secret reference: exactly one of the three.
#[derive(Debug, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct RawSecret {
    pub file: Option<PathBuf>,
    pub env: Option<String>,
    pub credential: Option<String>,
}

/// A string or a list of strings.
#[derive(Debug, Deserialize, Clone)]
#[serde(untagged)]
pub enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSource {
    pub url: Option<String>,
    pub every: Option<String>,
    pub cron: Option<String>,
    pub timezone: Option<String>,
    pub method: Option<String>,
    pub format: Option<String>,
    #[serde(default)]
    pub query: BTreeMap<String, serde_json::Value>,
    pub array_style: Option<String>,
    pub body: Option<serde_json::Value>,
    pub body_format: Option<String>,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    pub auth: Option<RawAuth>,
    pub items: Option<String>,
    pub items_shape: Option<String>,
    pub success: Option<RawSuccess>,
    pub sync: Option<String>,
    pub incremental: Option<RawIncremental>,
    pub lookup: Option<RawLookup>,
    pub min_gap: Option<String>,
    pub retries: Option<u32>,
    pub retry_backoff: Option<String>,
    pub max_retry_after: Option<String>,
    #[serde(default)]
    pub rate_limit_remaining_headers: Vec<String>,
    #[serde(default)]
    pub rate_limit_reset_headers: Vec<String>,
    #[serde(default)]
    pub secrets: BTreeMap<String, RawSecret>,
    pub id: Option<OneOrMany>,
    pub status: Option<String>,
    pub cancelled_values: Option<Vec<String>>,
    #[serde(default)]
    pub ignore_fields: Vec<String>,
    #[serde(default)]
    pub only_fields: Vec<String>,
    pub first_poll: Option<String>,
    pub on_disappear: Option<String>,
    pub max_disappear_share: Option<f64>,
    pub timeout: Option<String>,
    pub max_response_bytes: Option<u64>,
    pub max_pages: Option<u32>,
    pub resume_within: Option<String>,
    pub pagination: Option<RawPagination>,
    pub ping: Option<RawPing>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAuth {
    #[serde(rename = "type")]
    pub kind: String,
    pub name: Option<String>,
    pub prefix: Option<String>,
    pub username: Option<String>,
    pub secret: Option<RawSecret>,
    pub token_url: Option<String>,
    pub client_id: Option<String>,
    pub scope: Option<String>,
    pub refresh_header: Option<String>,
    pub token_pointer: Option<String>,
    pub expires_pointer: Option<String>,
    pub header: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSuccess {
    pub pointer: String,
    pub equals: Option<serde_json::Value>,
    pub not_equals: Option<serde_json::Value>,
    pub absent: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawIncremental {
    #[serde(default)]
    pub query: BTreeMap<String, serde_json::Value>,
    pub body: Option<serde_json::Value>,
    pub overlap: Option<String>,
    pub full_every: Option<String>,
    pub watermark: Option<RawWatermark>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLookup {
    pub url: Option<String>,
    #[serde(default)]
    pub query: BTreeMap<String, serde_json::Value>,
    pub body: Option<serde_json::Value>,
    pub items: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPagination {
    pub style: String,
    pub param_in: Option<String>,
    pub total: Option<String>,
    pub param: Option<String>,
    pub start: Option<u64>,
    pub size_param: Option<String>,
    pub size: Option<u64>,
    pub has_more: Option<String>,
    pub total_pages: Option<String>,
    pub next: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawEndpoint {
    /// "http" (the default) or "nats".
    #[serde(rename = "type")]
    pub kind: Option<String>,
    pub url: Option<String>,
    pub format: Option<String>,
    pub method: Option<String>,
    pub sources: Option<Vec<String>>,
    pub events: Option<Vec<String>>,
    #[serde(default)]
    pub secrets: Vec<RawSecret>,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    pub retry_schedule: Option<Vec<String>>,
    pub jitter: Option<f64>,
    pub connect_timeout: Option<String>,
    pub timeout: Option<String>,
    pub max_in_flight: Option<u32>,
    pub enabled: Option<bool>,
    pub auth: Option<RawAuth>,
    #[serde(default)]
    pub methods: BTreeMap<String, String>,
    pub failing_after: Option<String>,
    pub bookid_param: Option<String>,
    pub status_param: Option<String>,
    pub preset: Option<String>,
    pub body: Option<serde_json::Value>,
    #[serde(default)]
    pub variables: BTreeMap<String, String>,
    // NATS JetStream endpoints.
    pub servers: Option<Vec<String>>,
    pub subject: Option<String>,
    pub stream: Option<String>,
    pub tls_required: Option<bool>,
    pub tls_ca_file: Option<PathBuf>,
}
