//! pollhook: turns a legacy booking API that has no webhooks into webhooks.
//!
//! # Map
//!
//! ```text
//! schedule ──> source (fetch every page) ──> diff (pure) ──┐
//!                                                          │  poll: ONE redb write transaction
//!                          store: snapshot rows + events + one delivery per subscribed endpoint
//!                                                          │
//! delivery worker <── due index (per-booking lane heads) ──┘
//!     └─> render v1/v2 ──> sign (Standard Webhooks) ──> send ──> outbox::decide ──> group commit
//! ```
//!
//! | module       | owns |
//! |--------------|------|
//! | [`config`]   | TOML + `POLLHOOK_` env loading (figment), validation into typed config, secrets |
//! | [`schedule`] | interval and crontab schedules (pure arithmetic) |
//! | [`source`]   | HTTP fetch of a source with pagination, size caps; items and ids |
//! | [`diff`]     | new / modify / cancel and field-level changes (pure) |
//! | [`store`]    | every line of redb code: snapshot, events, deliveries, lanes, due index |
//! | [`poll`]     | one poll cycle: fetch, diff, commit in one transaction |
//! | [`outbox`]   | event and delivery types, the retry decision (pure) |
//! | [`delivery`] | rendering, sending, the group-commit delivery worker |
//! | [`signing`]  | Standard Webhooks signatures (pure) |
//! | [`presets`]  | v2 bodies: the pollhook envelope and vendor shapes (Beds24, StayNTouch, Zenoti) |
//! | [`template`] | the one `{{ ... }}` template syntax for requests, URLs and bodies (pure) |
//! | [`xml`]      | XML responses into the JSON tree every pointer reads (pure) |
//! | [`auth`]     | credentials for sources and endpoints: static, OAuth2, refresh-token login; token cache |
//! | [`admin`]    | health, metrics, dead letters, replay, poll-now; the systemd watchdog |
//! | [`app`]      | wiring, the daemon's task structure, test hooks (`poll_now`, `deliver_due`) |
//! | [`cli`]      | the command line and logging set-up |
//! | [`demo`]     | the simulated booking API, the recording receiver, `pollhook demo` |

pub mod admin;
pub mod app;
pub mod auth;
pub mod cli;
pub mod config;
pub mod delivery;
pub mod demo;
pub mod diff;
pub mod outbox;
pub mod poll;
pub mod presets;
pub mod schedule;
pub mod signing;
pub mod source;
pub mod store;
pub mod template;
pub mod xml;

pub use app::App;
pub use config::Config;
