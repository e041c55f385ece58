//! Delivery: every due lane head is rendered for its endpoint, signed (Standard Webhooks), sent,
//! and its outcome recorded in group commits.
//!
//! | file | owns |
//! |------|------|
//! | [`render`]  | the request for one event and endpoint (pure: v1 ping, v2 body, URL templates) |
//! | [`presets`] | the v2 body presets (pollhook, Beds24, StayNTouch, Zenoti) |
//! | `attempt`   | one attempt over the endpoint's transport: headers, signature, send, the [`AttemptOutcome`] |
//! | `nats`      | NATS JetStream endpoints: the connection, one publish and its PubAck, the start-up check ([`preflight`]) |
//! | `worker`    | the one delivery path: due scan, in-flight set, spawning, group commit; the daemon loop and `deliver_due` |
//! | `health`    | endpoint health: failing, 410 disables, counters, the admin report |
//!
//! The retry decision is [`crate::retry`]; the queue itself lives in [`crate::store`].

mod attempt;
mod health;
mod nats;
pub mod presets;
pub mod render;
mod worker;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::{Semaphore, broadcast};

use crate::clock::Clock;
use crate::config::EndpointConfig;
use crate::http::{Authorizer, TokenCache};
use crate::metrics::{Metrics, Recorder};
use crate::outbox::{Delivery, Event};
use crate::store::{Disabled, Store};

pub use attempt::AttemptOutcome;
pub use health::EndpointReport;
pub use nats::{PreflightError, preflight};
pub use render::{Rendered, render, rfc3339};
pub use worker::RoundReport;

/// How much of a receiver's response body is kept with the attempt.
pub const RESPONSE_BODY_CAP: usize = 1024;

/// Most deliveries in flight at once across all endpoints (bounds memory).
pub const MAX_IN_FLIGHT_TOTAL: usize = 1024;

/// Something worth telling a watcher (the demo, the logs).
#[derive(Debug, Clone)]
pub enum Notice {
    /// A change was detected and queued.
    Detected(Arc<Event>),
    /// An attempt finished.
    Attempted {
        /// Endpoint name.
        endpoint: String,
        /// The event.
        event: Arc<Event>,
        /// The row after the attempt.
        delivery: Delivery,
    },
}

/// How an endpoint's deliveries leave: an HTTP request, or a NATS JetStream publish.
// One per endpoint, made once: the variants' sizes do not matter.
#[allow(clippy::large_enum_variant)]
enum Transport {
    /// A webhook: the endpoint's HTTP client and credentials.
    Http {
        /// Its own timeouts; redirects never followed.
        client: reqwest::Client,
        /// Credentials towards the receiver.
        auth: Authorizer,
    },
    /// A JetStream publish.
    Nats(nats::NatsTransport),
}

/// One configured endpoint at run time: its transport, concurrency permits, health.
struct EndpointRuntime {
    cfg: EndpointConfig,
    transport: Transport,
    /// `cfg.headers` as a header map, made once rather than per request.
    static_headers: reqwest::header::HeaderMap,
    permits: Arc<Semaphore>,
    health: health::Health,
    /// Where each attempt's latency is recorded.
    latency: Recorder,
    /// Sequence numbers of the deliveries launched and not yet committed, in order (the store
    /// skips them by binary search).
    in_flight: Mutex<std::collections::BTreeSet<u64>>,
}

/// Sends due deliveries and records their outcomes.
pub struct Dispatcher {
    store: Store,
    clock: Clock,
    endpoints: HashMap<String, Arc<EndpointRuntime>>,
    disabled: Mutex<HashMap<String, Disabled>>,
    notices: broadcast::Sender<Notice>,
    /// How long an outcome the store cannot write keeps its delivery in flight
    /// ([`worker::UNRECORDABLE_HOLD`]; shorter in tests).
    unrecordable_hold: std::time::Duration,
}

impl Dispatcher {
    /// Builds one HTTP client per HTTP endpoint (its own timeouts; redirects never followed)
    /// and prepares each NATS endpoint's connection (made on its first delivery). Each
    /// attempt's latency, over either transport, is recorded in `metrics`.
    pub fn new(
        store: Store,
        clock: Clock,
        endpoints: &[EndpointConfig],
        notices: broadcast::Sender<Notice>,
        metrics: &Metrics,
    ) -> Result<Dispatcher, String> {
        let tokens: Arc<dyn TokenCache> = Arc::new(store.clone());
        let mut map = HashMap::new();
        for ep in endpoints {
            let transport = match &ep.nats {
                Some(n) => Transport::Nats(nats::NatsTransport::new(ep, n)),
                None => Transport::Http {
                    client: crate::http::client(ep.connect_timeout, ep.timeout)
                        .map_err(|e| format!("endpoints.{}: {e}", ep.name))?,
                    auth: Authorizer::new(
                        ep.auth.clone(),
                        format!("endpoint:{}", ep.name),
                        tokens.clone(),
                        clock.clone(),
                        ep.timeout,
                    )
                    .map_err(|e| format!("endpoints.{}: {e}", ep.name))?,
                },
            };
            map.insert(
                ep.name.clone(),
                Arc::new(EndpointRuntime {
                    cfg: ep.clone(),
                    transport,
                    static_headers: attempt::static_headers(ep),
                    permits: Arc::new(Semaphore::new(ep.max_in_flight as usize)),
                    health: health::Health::default(),
                    latency: metrics.delivery_latency(&ep.name),
                    in_flight: Mutex::new(Default::default()),
                }),
            );
        }
        let disabled = store
            .endpoint_states()
            .map_err(|e| format!("cannot read endpoint states: {e}"))?
            .into_iter()
            .filter_map(|(name, st)| st.disabled.map(|d| (name, d)))
            .collect();
        Ok(Dispatcher {
            store,
            clock,
            endpoints: map,
            disabled: Mutex::new(disabled),
            notices,
            unrecordable_hold: worker::UNRECORDABLE_HOLD,
        })
    }
}
