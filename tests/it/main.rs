//! Integration tests: the real pipeline over real loopback HTTP (the built-in simulator as the
//! legacy API, the recording receiver as the webhook target) and a real redb file in a temp dir.
//! One test binary, several modules, to keep build time down on small machines.

mod helpers;

mod admin_access;
mod backfill;
mod binary;
mod browser;
mod chaos;
mod crash;
mod decode_properties;
mod delivery_failures;
mod diff_properties;
mod endpoints;
mod frictions;
mod hostile;
mod layout;
mod messages;
mod metrics;
mod migration;
mod nats;
mod ping;
mod pipeline;
mod poll_failures;
mod presets;
mod properties;
mod restart;
mod resume;
mod state_file;
mod status_page;
mod watermarks;
