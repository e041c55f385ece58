//! Endpoint health: the run of failures that makes an endpoint "failing", the 410 Gone that
//! disables it until an operator re-enables it, outcome counters, and the report the admin API
//! and metrics show (no secrets).

use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use super::{Dispatcher, EndpointRuntime};
use crate::outbox::{Delivery, DeliveryState};
use crate::store::{Disabled, StoreError};

/// An endpoint's health since start.
#[derive(Default)]
pub(super) struct Health {
    /// When the current run of failures began (cleared by a success).
    failing_since: Mutex<Option<i64>>,
    /// Whether the failing state has been reported (logged) for the current run.
    failing_reported: AtomicBool,
    /// Outcome counters since start: delivered, failed attempts, dead-lettered.
    counters: [AtomicU64; 3],
    /// The latest attempts: latency (ms) and outcome, newest last, at most [`RECENT`].
    recent: Mutex<VecDeque<(u64, Outcome)>>,
}

/// How an attempt ended, kept as it came and written out only for the report (most attempts
/// are never reported, so none of them formats a string).
enum Outcome {
    /// A status code.
    Http(u16),
    /// A transport error (already redacted).
    Error(String),
    /// Neither.
    NoAnswer,
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Outcome::Http(code) => write!(f, "HTTP {code}"),
            Outcome::Error(e) => f.write_str(e),
            Outcome::NoAnswer => f.write_str("no answer"),
        }
    }
}

/// How many of the latest attempts the report's latency and last outcome are taken from.
const RECENT: usize = 32;

impl Health {
    fn since(&self) -> Option<i64> {
        *self.failing_since.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn reset(&self) {
        *self.failing_since.lock().unwrap_or_else(|e| e.into_inner()) = None;
        self.failing_reported.store(false, Ordering::Relaxed);
    }
}

/// What the admin API shows about an endpoint. No secrets.
#[derive(Debug, Clone, serde::Serialize)]
pub struct EndpointReport {
    /// Name.
    pub name: String,
    /// `enabled` from the configuration.
    pub enabled: bool,
    /// Suspended by pollhook (410 Gone), until an operator re-enables it.
    pub disabled: Option<Disabled>,
    /// Failing continuously for longer than `failing_after`.
    pub failing: bool,
    /// Start of the current run of failures (ms since epoch).
    pub failing_since_ms: Option<i64>,
    /// Deliveries acknowledged since start.
    pub delivered_total: u64,
    /// Failed attempts since start (each retry counts).
    pub failed_attempts_total: u64,
    /// Deliveries dead-lettered since start.
    pub dead_total: u64,
    /// Deliveries sent and not yet recorded.
    pub in_flight: usize,
    /// The median latency of the latest attempts (up to 32) since start, in milliseconds.
    pub recent_latency_ms: Option<u64>,
    /// How the latest attempt ended (`HTTP 200`, `HTTP 503`, a transport error).
    pub last_outcome: Option<String>,
}

impl Dispatcher {
    /// Updates the endpoint's failing state from an outcome, and suspends it on 410 Gone.
    pub(super) async fn track_health(&self, d: &Delivery) {
        let Some(ep) = self.endpoints.get(&d.endpoint) else {
            return;
        };
        let h = &ep.health;
        let counter = match d.state {
            DeliveryState::Delivered => 0,
            DeliveryState::Pending => 1,
            DeliveryState::Dead => 2,
        };
        h.counters[counter].fetch_add(1, Ordering::Relaxed);
        if d.state == DeliveryState::Dead {
            // The last attempt failed too.
            h.counters[1].fetch_add(1, Ordering::Relaxed);
        }
        let last = d.history.last();
        if let Some(a) = last {
            let outcome = match (a.status, &a.error) {
                (Some(code), _) => Outcome::Http(code),
                (None, Some(e)) => Outcome::Error(e.clone()),
                (None, None) => Outcome::NoAnswer,
            };
            let mut recent = h.recent.lock().unwrap_or_else(|e| e.into_inner());
            if recent.len() == RECENT {
                recent.pop_front();
            }
            recent.push_back((a.latency_ms, outcome));
        }
        let at = last.map(|a| a.at_ms).unwrap_or_else(|| self.clock.now_ms());
        if d.state == DeliveryState::Delivered {
            *h.failing_since.lock().unwrap_or_else(|e| e.into_inner()) = None;
            if h.failing_reported.swap(false, Ordering::Relaxed) {
                tracing::info!(endpoint = %d.endpoint, "endpoint recovered");
            }
            return;
        }
        let since = *h
            .failing_since
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get_or_insert(at);
        if at - since >= ep.cfg.failing_after.as_millis() as i64
            && !h.failing_reported.swap(true, Ordering::Relaxed)
        {
            tracing::error!(
                endpoint = %d.endpoint,
                since = %super::rfc3339(since),
                "endpoint FAILING: every delivery attempt has failed for longer than failing_after; events keep queueing"
            );
        }
        if last.and_then(|a| a.status) == Some(410) {
            self.disable(ep, at).await;
        }
    }

    /// Suspends an endpoint after a 410 Gone, persistently.
    async fn disable(&self, ep: &EndpointRuntime, at: i64) {
        let name = ep.cfg.name.clone();
        let disabled = Disabled {
            since_ms: at,
            reason: "the receiver answered 410 Gone".into(),
        };
        let row = disabled.clone();
        let n = name.clone();
        match self
            .store
            .run(move |s| s.set_endpoint_disabled(&n, Some(row), at))
            .await
        {
            Ok(()) => tracing::error!(
                endpoint = %name,
                "endpoint DISABLED: the receiver answered 410 Gone. Events keep queueing; re-enable with `pollhook enable {name}` once it is fixed",
            ),
            Err(e) => {
                tracing::error!(endpoint = %name, error = %e, "cannot persist the disabled state")
            }
        }
        self.disabled
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(name, disabled);
    }

    /// Every endpoint's state for the admin API and metrics.
    pub fn endpoint_report(&self) -> Vec<EndpointReport> {
        let disabled = self
            .disabled
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let now = self.clock.now_ms();
        let mut out: Vec<EndpointReport> = self
            .endpoints
            .values()
            .map(|ep| {
                let h = &ep.health;
                let since = h.since();
                let (recent_latency_ms, last_outcome) = {
                    let recent = h.recent.lock().unwrap_or_else(|e| e.into_inner());
                    let mut latencies: Vec<u64> = recent.iter().map(|(l, _)| *l).collect();
                    latencies.sort_unstable();
                    (
                        latencies.get(latencies.len() / 2).copied(),
                        recent.back().map(|(_, o)| o.to_string()),
                    )
                };
                let in_flight = ep.in_flight.lock().unwrap_or_else(|e| e.into_inner()).len();
                EndpointReport {
                    name: ep.cfg.name.clone(),
                    enabled: ep.cfg.enabled,
                    disabled: disabled.get(&ep.cfg.name).cloned(),
                    failing: since
                        .is_some_and(|s| now - s >= ep.cfg.failing_after.as_millis() as i64),
                    failing_since_ms: since,
                    delivered_total: h.counters[0].load(Ordering::Relaxed),
                    failed_attempts_total: h.counters[1].load(Ordering::Relaxed),
                    dead_total: h.counters[2].load(Ordering::Relaxed),
                    in_flight,
                    recent_latency_ms,
                    last_outcome,
                }
            })
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }

    /// Re-enables an endpoint suspended by a 410; its queued events become due now.
    /// Returns false for an unknown endpoint.
    pub async fn enable(&self, endpoint: &str) -> Result<bool, StoreError> {
        let Some(ep) = self.endpoints.get(endpoint) else {
            return Ok(false);
        };
        let name = endpoint.to_string();
        let now = self.clock.now_ms();
        self.store
            .run(move |s| s.set_endpoint_disabled(&name, None, now))
            .await?;
        self.disabled
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(endpoint);
        ep.health.reset();
        tracing::info!(endpoint, "endpoint re-enabled");
        Ok(true)
    }
}
