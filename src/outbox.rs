//! The outbox model: events, per-endpoint delivery rows and attempt records, as plain data.
//!
//! No I/O here. The poll creates events, the store persists them with one delivery row per
//! subscribed endpoint, and the delivery worker updates the rows (see [`crate::retry`]).

use std::sync::OnceLock;

use serde::{Deserialize, Serialize};

use serde_json::Value;
use serde_json::value::RawValue;

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

/// A booking document as its JSON text, parsed only when something reads into it: a delivery in
/// the default envelope copies the text as it is, so most deliveries never parse the booking.
/// It reads like a [`Value`] (`Deref`).
#[derive(Clone)]
pub struct Booking {
    raw: Box<RawValue>,
    parsed: OnceLock<Value>,
}

impl Booking {
    /// A booking from its JSON text (checked to be JSON).
    pub fn from_json(text: String) -> Result<Booking, serde_json::Error> {
        Ok(Booking {
            raw: RawValue::from_string(text)?,
            parsed: OnceLock::new(),
        })
    }

    /// A booking from a parsed document (kept, so it is not parsed again).
    pub fn from_value(v: Value) -> Result<Booking, serde_json::Error> {
        let raw = serde_json::value::to_raw_value(&v)?;
        let parsed = OnceLock::new();
        let _ = parsed.set(v);
        Ok(Booking { raw, parsed })
    }

    /// Drops the parsed copy, keeping only the text (a parsed document takes several times the
    /// memory of its JSON); [`Booking::value`] parses it again when asked.
    pub fn shed_value(&mut self) {
        self.parsed = OnceLock::new();
    }

    /// The JSON text.
    pub fn json(&self) -> &str {
        self.raw.get()
    }

    /// The booking as a JSON value (parsed on first use).
    pub fn value(&self) -> &Value {
        self.parsed.get_or_init(|| {
            // The text was checked to be JSON when this was made, so it parses.
            serde_json::from_str(self.raw.get()).unwrap_or(Value::Null)
        })
    }
}

impl std::ops::Deref for Booking {
    type Target = Value;
    fn deref(&self) -> &Value {
        self.value()
    }
}

impl std::fmt::Debug for Booking {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.raw.get())
    }
}

impl PartialEq for Booking {
    fn eq(&self, other: &Booking) -> bool {
        self.value() == other.value()
    }
}

impl PartialEq<Booking> for Value {
    fn eq(&self, other: &Booking) -> bool {
        self == other.value()
    }
}

impl PartialEq<Value> for Booking {
    fn eq(&self, other: &Value) -> bool {
        self.value() == other
    }
}

impl Serialize for Booking {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.raw.serialize(s)
    }
}

impl<'de> Deserialize<'de> for Booking {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Booking, D::Error> {
        Ok(Booking {
            raw: Box::<RawValue>::deserialize(d)?,
            parsed: OnceLock::new(),
        })
    }
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
    pub booking: Booking,
    /// Field-level changes (empty for new).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub changes: Vec<FieldChange>,
    /// Enqueued by a backfill (the booking's current state for one endpoint), not detected as
    /// a change.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub backfill: bool,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_round_trip() {
        for k in EventKind::ALL {
            assert_eq!(EventKind::parse(k.status_word()), Some(k));
        }
    }
}
