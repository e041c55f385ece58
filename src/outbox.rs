//! The outbox model: events, per-endpoint delivery rows, and the pure retry decision.
//!
//! No I/O here. The store persists these types; the delivery worker asks [`decide`] what an
//! attempt's outcome means and writes the answer back in a batch.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// What happened to a booking.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EventKind {
    /// A booking id not seen before.
    New,
    /// A known booking whose significant content changed.
    Modify,
    /// A known booking that is now cancelled.
    Cancel,
}

impl EventKind {
    /// Every kind, in a stable order.
    pub const ALL: [EventKind; 3] = [EventKind::New, EventKind::Modify, EventKind::Cancel];

    /// The Beds24 status word (`new`, `modify`, `cancel`).
    pub fn status_word(self) -> &'static str {
        match self {
            EventKind::New => "new",
            EventKind::Modify => "modify",
            EventKind::Cancel => "cancel",
        }
    }

    /// The v2 event type (`booking.created`, ...).
    pub fn event_type(self) -> &'static str {
        match self {
            EventKind::New => "booking.created",
            EventKind::Modify => "booking.modified",
            EventKind::Cancel => "booking.cancelled",
        }
    }

    /// Parses a status word.
    pub fn parse(s: &str) -> Option<EventKind> {
        match s {
            "new" => Some(EventKind::New),
            "modify" => Some(EventKind::Modify),
            "cancel" => Some(EventKind::Cancel),
            _ => None,
        }
    }
}

/// One changed field of a modify (or cancel) event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FieldChange {
    /// RFC 6901 JSON Pointer into the booking.
    pub path: String,
    /// Value before (null if absent).
    pub old: Value,
    /// Value after (null if absent).
    pub new: Value,
}

/// A detected change. Its `id` is fixed at creation and sent on every attempt.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// Stable id (`evt_` + UUIDv7), the `webhook-id`.
    pub id: String,
    /// Global detection order; per booking it increases strictly.
    pub seq: u64,
    /// What happened.
    pub kind: EventKind,
    /// Source name.
    pub source: String,
    /// Booking id (composite ids joined with `:`).
    pub booking_id: String,
    /// When the change was detected, milliseconds since the Unix epoch.
    pub detected_ms: i64,
    /// The booking as the source returned it.
    pub booking: Value,
    /// Field-level changes (empty for new).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub changes: Vec<FieldChange>,
}

/// Where a delivery stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DeliveryState {
    /// Waiting for its turn or its next attempt.
    Pending,
    /// A 2xx was received.
    Delivered,
    /// Every attempt failed; kept for the operator to see and replay.
    Dead,
}

/// The outcome of one attempt, as kept for the operator.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attempt {
    /// When it started, ms since epoch.
    pub at_ms: i64,
    /// HTTP status, if a response came back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// Transport error (timeout, connection refused, ...), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Wall time of the attempt.
    pub latency_ms: u64,
    /// The start of the response body, truncated.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub body: String,
}

/// How many attempts are kept per delivery (the latest ones).
pub const HISTORY_LIMIT: usize = 10;

/// One event's delivery to one endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delivery {
    /// Endpoint name.
    pub endpoint: String,
    /// The event's id (what `replay --event` takes).
    #[serde(default)]
    pub event_id: String,
    /// The event's sequence number (the key together with the endpoint).
    pub seq: u64,
    /// Per-booking ordering lane.
    pub lane: String,
    /// Current state.
    pub state: DeliveryState,
    /// Attempts made so far.
    pub attempts: u32,
    /// When the next attempt is due (meaningful while pending and at the head of its lane).
    pub next_ms: i64,
    /// When the delivery row was created.
    pub created_ms: i64,
    /// The latest attempts, oldest first.
    #[serde(default)]
    pub history: Vec<Attempt>,
}

impl Delivery {
    /// A fresh pending delivery.
    pub fn new(endpoint: &str, event: &Event) -> Delivery {
        Delivery {
            endpoint: endpoint.to_string(),
            event_id: event.id.clone(),
            seq: event.seq,
            lane: lane_key(&event.source, &event.booking_id),
            state: DeliveryState::Pending,
            attempts: 0,
            next_ms: event.detected_ms,
            created_ms: event.detected_ms,
            history: Vec::new(),
        }
    }
}

/// The ordering lane of a booking: its events go out one at a time, in order, per endpoint.
pub fn lane_key(source: &str, booking_id: &str) -> String {
    format!("{source}\u{1f}{booking_id}")
}

/// Retry schedule as data (svix style): `schedule[n]` is the delay before attempt `n + 1`.
#[derive(Debug, Clone, PartialEq)]
pub struct RetryPolicy {
    /// Delay before each attempt; its length is the number of attempts.
    pub schedule: Vec<Duration>,
    /// Random spread applied to each delay, as a share (0.2 = ±20%).
    pub jitter: f64,
    /// Longest `Retry-After` honoured.
    pub retry_after_cap: Duration,
}

impl RetryPolicy {
    /// Immediately, 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h; ±20% jitter; Retry-After up to 1 h.
    pub fn default_schedule() -> RetryPolicy {
        RetryPolicy {
            schedule: crate::config::default_retry_schedule(),
            jitter: 0.2,
            retry_after_cap: Duration::from_secs(3600),
        }
    }
}

/// What an attempt's result means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// 2xx: done.
    Delivered,
    /// Try again at this time (ms since epoch).
    RetryAt(i64),
    /// No attempts left: dead letter.
    Dead,
}

/// The classified result of one attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttemptResult {
    /// A response with this status (and `Retry-After` seconds if given).
    Status {
        /// HTTP status.
        code: u16,
        /// Parsed `Retry-After`, if any.
        retry_after: Option<Duration>,
    },
    /// Timeout, refused connection, TLS failure...
    Transport,
}

/// Pure retry decision. `attempts_done` counts the attempt just made; `unit` is a number in
/// [0, 1) used for jitter (random in production, fixed in tests).
pub fn decide(
    policy: &RetryPolicy,
    attempts_done: u32,
    result: AttemptResult,
    now_ms: i64,
    unit: f64,
) -> Decision {
    if let AttemptResult::Status { code, .. } = result
        && (200..300).contains(&code)
    {
        return Decision::Delivered;
    }
    let Some(base) = policy.schedule.get(attempts_done as usize) else {
        return Decision::Dead;
    };
    let spread = (unit.clamp(0.0, 1.0) * 2.0 - 1.0) * policy.jitter;
    let mut delay_ms = (base.as_millis() as f64 * (1.0 + spread)).max(0.0) as i64;
    if let AttemptResult::Status {
        code: 429 | 503,
        retry_after: Some(ra),
    } = result
    {
        let ra_ms = ra.min(policy.retry_after_cap).as_millis() as i64;
        delay_ms = delay_ms.max(ra_ms);
    }
    Decision::RetryAt(now_ms.saturating_add(delay_ms))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(secs: &[u64], jitter: f64) -> RetryPolicy {
        RetryPolicy {
            schedule: secs.iter().map(|s| Duration::from_secs(*s)).collect(),
            jitter,
            retry_after_cap: Duration::from_secs(60),
        }
    }

    fn status(code: u16) -> AttemptResult {
        AttemptResult::Status {
            code,
            retry_after: None,
        }
    }

    #[test]
    fn only_2xx_succeeds() {
        let p = policy(&[0, 5], 0.0);
        assert_eq!(decide(&p, 1, status(200), 0, 0.5), Decision::Delivered);
        assert_eq!(decide(&p, 1, status(204), 0, 0.5), Decision::Delivered);
        for code in [301, 302, 400, 404, 410, 500] {
            assert_eq!(
                decide(&p, 1, status(code), 0, 0.5),
                Decision::RetryAt(5000),
                "{code}"
            );
        }
        assert_eq!(
            decide(&p, 1, AttemptResult::Transport, 0, 0.5),
            Decision::RetryAt(5000)
        );
    }

    #[test]
    fn schedule_runs_out_into_dead_letter() {
        let p = policy(&[0, 5, 300], 0.0);
        assert_eq!(
            decide(&p, 1, status(500), 1000, 0.5),
            Decision::RetryAt(6000)
        );
        assert_eq!(
            decide(&p, 2, status(500), 1000, 0.5),
            Decision::RetryAt(301_000)
        );
        assert_eq!(decide(&p, 3, status(500), 1000, 0.5), Decision::Dead);
        assert_eq!(decide(&p, 3, status(200), 1000, 0.5), Decision::Delivered);
    }

    #[test]
    fn jitter_stays_within_bounds() {
        let p = policy(&[0, 100], 0.2);
        let lo = decide(&p, 1, status(500), 0, 0.0);
        let hi = decide(&p, 1, status(500), 0, 0.999_999);
        assert_eq!(lo, Decision::RetryAt(80_000));
        assert!(matches!(hi, Decision::RetryAt(ms) if (119_000..=120_000).contains(&ms)));
        for i in 0..100 {
            let Decision::RetryAt(ms) = decide(&p, 1, status(500), 0, i as f64 / 100.0) else {
                panic!()
            };
            assert!((80_000..=120_000).contains(&ms));
        }
    }

    #[test]
    fn retry_after_is_honoured_up_to_the_cap() {
        let p = policy(&[0, 5, 5], 0.0);
        let ra = |s| AttemptResult::Status {
            code: 429,
            retry_after: Some(Duration::from_secs(s)),
        };
        assert_eq!(decide(&p, 1, ra(30), 0, 0.5), Decision::RetryAt(30_000));
        assert_eq!(decide(&p, 1, ra(3600), 0, 0.5), Decision::RetryAt(60_000));
        assert_eq!(decide(&p, 1, ra(1), 0, 0.5), Decision::RetryAt(5_000));
        // Retry-After on a 500 is not a throttle signal.
        let other = AttemptResult::Status {
            code: 500,
            retry_after: Some(Duration::from_secs(30)),
        };
        assert_eq!(decide(&p, 1, other, 0, 0.5), Decision::RetryAt(5_000));
    }

    #[test]
    fn default_schedule_is_the_documented_one() {
        let p = RetryPolicy::default_schedule();
        let secs: Vec<u64> = p.schedule.iter().map(Duration::as_secs).collect();
        assert_eq!(secs, [0, 5, 300, 1800, 7200, 18000, 36000, 36000]);
    }

    #[test]
    fn kinds_round_trip() {
        for k in EventKind::ALL {
            assert_eq!(EventKind::parse(k.status_word()), Some(k));
        }
    }
}
