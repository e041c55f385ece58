//! Integration tests: the real pipeline over real loopback HTTP (the built-in simulator as the
//! legacy API, the recording receiver as the webhook target) and a real redb file in a temp dir.
//! One test binary, several modules, to keep build time down on small machines.

mod helpers;

mod admin_access;
mod binary;
mod chaos;
mod crash;
mod delivery_failures;
mod endpoints;
mod hostile;
mod layout;
mod metrics;
mod migration;
mod nats;
mod pipeline;
mod poll_failures;
mod presets;
mod properties;
mod restart;
mod resume;
mod state_file;
mod watermarks;
