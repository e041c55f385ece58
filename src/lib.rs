//! pollhook: turns a legacy booking API that has no webhooks into webhooks.
//!
//! # Map
//!
//! ```text
//! daemon (signals, reload, systemd) ──> app (wiring, schedule loops) ──> admin (HTTP API)
//!
//! schedule ──> source: fetch a page ──> decode (JSON / XML) ──> diff (pure) ──┐
//!                                                                            │ poll: ONE redb write
//!                          store: snapshot rows + events + one delivery per subscribed endpoint
//!                                                                            │
//! delivery worker <── due index (per-booking lane heads) ────────────────────┘
//!     └─> render v1/v2 ──> sign ──> http send | NATS JetStream publish ──> retry::settle ──> group commit (store)
//!
//! booking system's ping ──> ingress (auth, ids) ──> refresh intake: group commit, then 200
//!     └─> refresh worker (coalesce) ──> source lookup by id ──> poll::refresh: ONE redb write
//!         (the same rows, events and deliveries as a poll; removes the pings it answers)
//! ```
//!
//! Imports point down this table: a module uses only modules listed below it.
//!
//! | module       | owns |
//! |--------------|------|
//! | [`cli`]      | the command line, what commands print, logging set-up |
//! | [`daemon`]   | the process: signals, reload, every systemd notification, the watchdog, the admin listener's lifetime |
//! | [`demo`]     | the simulated booking API, the recording receiver, `pollhook demo` |
//! | [`admin`]    | the admin HTTP API, the status page at `/` and Prometheus metrics; calls `App` methods only |
//! | [`ingress`]  | the listener booking systems ping: routes, sender authentication, ids, rate limits; records through `App` |
//! | [`app`]      | wiring, the pipeline's tasks, per-source health, test hooks (`poll_now`, `deliver_due`, `clock`) |
//! | [`refresh`]  | pings into lookups: durable group-commit intake, coalescing queue, one worker per source |
//! | [`poll`]     | one poll cycle: fetch and stage page by page, diff, promote once every page is in; `check --probe` |
//! | [`delivery`] | rendering, one attempt (HTTP or NATS JetStream), the delivery worker and group commit, endpoint health |
//! | [`source`]   | a source's HTTP client, request building, pagination, page decoding (JSON, XML) |
//! | [`diff`]     | new / modify / cancel and field-level changes (pure) |
//! | [`store`]    | every line of redb code: snapshot, events, deliveries, lanes, due index, tokens |
//! | [`http`]     | outbound HTTP: client builder, credentials and tokens, capped reads, redaction |
//! | [`config`]   | TOML + `POLLHOOK_` env loading (figment), validation into typed config, secrets, which sources an instance polls (`--sources`, `shard`) |
//! | [`retry`]    | the retry schedule as data and the pure retry decision |
//! | [`outbox`]   | event and delivery types (plain data) |
//! | [`template`] | the one `{{ ... }}` template syntax for requests, URLs, bodies and NATS subjects (pure) |
//! | [`schedule`] | interval and crontab schedules (pure arithmetic) |
//! | [`signing`]  | Standard Webhooks signatures (pure) |
//! | [`json`]     | scalar strings, fingerprints, JSON Pointer tokens and edits (pure) |
//! | [`clock`]    | the one injectable wall clock |
//! | [`text`]     | text from outside made safe to keep and show: secrets redacted, control characters escaped for logs (pure) |
//! | [`metrics`]  | the metrics recorded as things happen (poll-duration and delivery-latency histograms, build info): one shared handle |
//! | [`memory`]   | the heap's footprint: allocator arenas capped at start, freed heap handed back after a poll |

pub mod admin;
pub mod app;
pub mod cli;
pub mod clock;
pub mod config;
pub mod daemon;
pub mod delivery;
pub mod demo;
pub mod diff;
pub mod http;
pub mod ingress;
pub mod json;
pub mod memory;
pub mod metrics;
pub mod outbox;
pub mod poll;
pub mod refresh;
pub mod retry;
pub mod schedule;
pub mod signing;
pub mod source;
pub mod store;
pub mod template;
pub mod text;

pub use app::App;
pub use config::Config;
