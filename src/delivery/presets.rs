//! Webhook body presets: the body an event becomes for each supported receiver format.
//!
//! Pure functions, no I/O. The body depends only on the event and the attempt number, so a retry
//! re-sends the same body (only Beds24's `retries` counter moves). Headers, signing and the HTTP
//! method belong to the delivery worker.
//!
//! | preset       | format                                                       |
//! |--------------|--------------------------------------------------------------|
//! | `pollhook`   | ours, specified by `docs/envelope.schema.json` (the default) |
//! | `beds24`     | Beds24 API V2 booking webhook                                |
//! | `stayntouch` | StayNTouch Connect webhook event                             |
//! | `zenoti`     | Zenoti webhook event response object                         |
//! | `rezgo`      | Rezgo's XML `<booking>` (the [`rezgo`] module), not JSON     |
//!
//! Examples of every body, checked against this code by a test, are in `docs/presets.md`.

mod rezgo;

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{Map, Value, json};

use crate::config::BodyPreset;
use crate::json::JsonError;
use crate::outbox::{Event, EventKind};

/// Why a preset body could not be serialised (not expected for in-memory values; reported
/// rather than hidden).
#[derive(Debug, thiserror::Error)]
pub enum PresetError {
    /// A JSON body.
    #[error(transparent)]
    Json(#[from] JsonError),
    /// The XML body.
    #[error(transparent)]
    Xml(#[from] rezgo::XmlError),
}

/// The media type of a preset's body.
pub fn content_type(preset: BodyPreset) -> &'static str {
    match preset {
        BodyPreset::Rezgo => rezgo::CONTENT_TYPE,
        _ => "application/json",
    }
}

/// The body for `event` on attempt number `attempt` (1 for the first try), as a JSON value.
///
/// The booking document is passed through as the source returned it, except for the
/// per-preset adjustments documented on each arm (Beds24 moves its item arrays to the top level,
/// StayNTouch adds `"object": "reservation"` when the booking has no `object` key). All times
/// come from the event's detection time, so every attempt renders the same body apart from
/// Beds24's `retries`. An `attempt` of 0 is treated as the first try. The `rezgo` body is XML:
/// here it is that document as a JSON string ([`to_vec`] sends it as it is).
///
/// An event enqueued by a backfill (the booking's current state, not a detected change) carries
/// `"backfill": true` at the top level of every preset's body; other events have no such key.
pub fn render(preset: BodyPreset, event: &Event, attempt: u32) -> Value {
    let mut body = match preset {
        BodyPreset::Pollhook => pollhook(event),
        BodyPreset::Beds24 => beds24(event, attempt),
        BodyPreset::StayNTouch => stayntouch(event),
        BodyPreset::Zenoti => zenoti(event),
        BodyPreset::Rezgo => match rezgo::to_vec(event) {
            Ok(bytes) => Value::String(String::from_utf8_lossy(&bytes).into_owned()),
            Err(_) => Value::Null,
        },
    };
    if event.backfill
        && let Value::Object(map) = &mut body
    {
        map.insert("backfill".into(), Value::Bool(true));
    }
    body
}

/// The body as bytes, of [`content_type`]. Same content as [`render`]; the default envelope is
/// serialised straight from the event, the booking copied as the JSON text it is stored as
/// (never parsed), which matters at thousands of deliveries a second.
pub fn to_vec(preset: BodyPreset, event: &Event, attempt: u32) -> Result<Vec<u8>, PresetError> {
    #[derive(serde::Serialize)]
    struct Envelope<'a> {
        id: &'a str,
        #[serde(rename = "type")]
        kind: &'static str,
        status: &'static str,
        detected_at: String,
        source: &'a str,
        booking_id: &'a str,
        sequence: u64,
        booking: &'a crate::outbox::Booking,
        #[serde(skip_serializing_if = "<[_]>::is_empty")]
        changes: &'a [crate::outbox::FieldChange],
        #[serde(skip_serializing_if = "std::ops::Not::not")]
        backfill: bool,
    }
    let bytes = match preset {
        BodyPreset::Pollhook => {
            // Sized once: the booking's text, the changes and the envelope's own fields, so
            // the buffer is not grown (and copied) while it is written.
            let changes: usize = event.changes.len() * 64;
            let mut out = Vec::with_capacity(
                event.booking.json().len()
                    + changes
                    + event.id.len()
                    + event.source.len()
                    + event.booking_id.len()
                    + 192,
            );
            serde_json::to_writer(
                &mut out,
                &Envelope {
                    id: &event.id,
                    kind: event.kind.event_type(),
                    status: event.kind.status_word(),
                    detected_at: rfc3339_millis(detected(event)),
                    source: &event.source,
                    booking_id: &event.booking_id,
                    sequence: event.seq,
                    booking: &event.booking,
                    changes: &event.changes,
                    backfill: event.backfill,
                },
            )
            .map(|()| out)
        }
        BodyPreset::Rezgo => return Ok(rezgo::to_vec(event)?),
        other => serde_json::to_vec(&render(other, event, attempt)),
    };
    Ok(bytes.map_err(JsonError::from)?)
}

/// Beds24 V2 item arrays that its API returns inside a booking (with `includeInfoItems`,
/// `includeInvoiceItems`, `includeMessages`) but its webhook sends beside it.
const BEDS24_ITEM_ARRAYS: [&str; 3] = ["infoItems", "invoiceItems", "messages"];

/// Largest `retries` Beds24's spec can carry (`int32`).
const BEDS24_MAX_RETRIES: u32 = 2_147_483_647;

/// Zenoti's `event_schema` (their example: `"v1"`).
const ZENOTI_SCHEMA: &str = "v1";

/// Zenoti's booking-like resource.
const ZENOTI_RESOURCE: &str = "Appointment";

/// The detection time. Out-of-range values (beyond ±262,000 years) fall back to the epoch rather
/// than failing a delivery.
fn detected(event: &Event) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(event.detected_ms).unwrap_or(DateTime::UNIX_EPOCH)
}

/// RFC 3339 UTC with milliseconds and `Z`: `2018-10-15T19:11:40.622Z`.
fn rfc3339_millis(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// pollhook's envelope. The fields and their meaning are specified in `docs/envelope.schema.json`;
/// `changes` is present only when the event has field changes.
fn pollhook(event: &Event) -> Value {
    let mut body = json!({
        "id": event.id,
        "type": event.kind.event_type(),
        "status": event.kind.status_word(),
        "detected_at": rfc3339_millis(detected(event)),
        "source": event.source,
        "booking_id": event.booking_id,
        "sequence": event.seq,
        "booking": event.booking.value(),
    });
    if !event.changes.is_empty() {
        let changes = event
            .changes
            .iter()
            .map(|c| json!({"path": c.path, "old": c.old, "new": c.new}))
            .collect();
        body["changes"] = Value::Array(changes);
    }
    body
}

/// The Beds24 API V2 booking webhook (spec path "Webhooks - bookings").
///
/// * `timeStamp` is the detection time in UTC as `2024-05-28T12:34:56`. Beds24's example payload
///   carries no zone suffix and no fraction, so we send exactly that shape, always in UTC. (The
///   spec only types it `format: date-time`, and the example's values are illustrative; a
///   receiver that requires an offset would need one added here.)
/// * `booking` is the event's booking. Its `infoItems` / `invoiceItems` / `messages` arrays, which
///   API V2 returns inside the booking when asked to include them, are moved to the top level
///   (and removed from the booking); a missing one becomes `[]`. A key with a non-array value is
///   not Beds24's item list and stays in the booking untouched.
/// * `retries` is the number of earlier attempts (Beds24: how many times delivery was retried),
///   capped at the spec's `int32` range.
/// * There is no event-type field: Beds24 V2 bodies have none, receivers read `booking.status`.
fn beds24(event: &Event, attempt: u32) -> Value {
    // Split rather than remove, so the booking keeps its key order whatever serde_json's map is.
    let (booking, mut items) = match event.booking.value() {
        Value::Object(doc) => {
            let mut kept = Map::new();
            let mut items = Map::new();
            for (key, value) in doc {
                let target = if value.is_array() && BEDS24_ITEM_ARRAYS.contains(&key.as_str()) {
                    &mut items
                } else {
                    &mut kept
                };
                target.insert(key.clone(), value.clone());
            }
            (Value::Object(kept), items)
        }
        other => (other.clone(), Map::new()),
    };
    let mut body = Map::new();
    body.insert(
        "timeStamp".to_string(),
        json!(detected(event).format("%Y-%m-%dT%H:%M:%S").to_string()),
    );
    body.insert("booking".to_string(), booking);
    for key in BEDS24_ITEM_ARRAYS {
        let list = items.remove(key).unwrap_or_else(|| json!([]));
        body.insert(key.to_string(), list);
    }
    let retries = attempt.saturating_sub(1).min(BEDS24_MAX_RETRIES);
    body.insert("retries".to_string(), json!(retries));
    Value::Object(body)
}

/// StayNTouch's event name for a kind. Their developer page spells out `create_reservation`;
/// `edit_reservation` and `cancel_reservation` follow the same pattern for the Edit / Cancel
/// Reservation events their integration docs list. A booking reactivated after a cancellation
/// arrives as a modify and is sent as `edit_reservation` (StayNTouch's "Reinstate Reservation"
/// has no published wire name).
fn stayntouch_event(kind: EventKind) -> &'static str {
    match kind {
        EventKind::New => "create_reservation",
        EventKind::Modify => "edit_reservation",
        EventKind::Cancel => "cancel_reservation",
    }
}

/// The StayNTouch Connect webhook event (stayntouch.com/developers).
///
/// `created_at` is the detection time (`2018-10-15T19:11:40.622Z` shape), `id` is the event's
/// sequence number (StayNTouch documents an integer, unique per event; ours is also stable
/// across retries), and `data` is the booking with `"object": "reservation"` added when the
/// booking has no `object` key of its own.
fn stayntouch(event: &Event) -> Value {
    let mut data = event.booking.value().clone();
    if let Some(doc) = data.as_object_mut()
        && !doc.contains_key("object")
    {
        doc.insert("object".to_string(), json!("reservation"));
    }
    json!({
        "created_at": rfc3339_millis(detected(event)),
        "event": stayntouch_event(event.kind),
        "id": event.seq,
        "data": data,
        "object": "event",
    })
}

/// Zenoti's `event_type` for a kind: `Appointment.Created`, `Appointment.Updated`,
/// `Appointment.Cancelled`.
///
/// Zenoti names events `Resource.Action` (`Invoice.Closed`, `Guest.Created`,
/// `Class.Booking.Cancelled`). Its published Appointment events are Started, Completed and
/// Feedback Created (service delivery, not the booking lifecycle), and its booking-creation
/// events (`AppointmentGroup.Created`, Class Booking Created) each have a `data` schema of their
/// own that a polled booking cannot fill. So we keep the resource
/// `Appointment` and take the actions from Zenoti's published vocabulary: `Created` and
/// `Updated` (as in Guest and Employee events) and `Cancelled` (as in Class Booking and Guest
/// Membership events). `Cancelled`, not `Deleted`: Zenoti lists "Booking Cancelled" and
/// "Booking Deleted" as different events, and a cancelled booking still exists (Beds24 cancels
/// by status; the body carries the whole booking).
fn zenoti_event_type(kind: EventKind) -> &'static str {
    match kind {
        EventKind::New => "Appointment.Created",
        EventKind::Modify => "Appointment.Updated",
        EventKind::Cancel => "Appointment.Cancelled",
    }
}

/// Zenoti's timestamp shape: UTC with 7 fractional digits and `Z`, as in their example
/// `2022-03-11T14:22:43.3847049Z` (.NET round-trip format). Our times have millisecond
/// precision, so the last four digits are zeros.
fn zenoti_timestamp(t: DateTime<Utc>) -> String {
    let ticks = (t.timestamp_subsec_nanos() / 100) % 10_000_000;
    format!("{}.{ticks:07}Z", t.format("%Y-%m-%dT%H:%M:%S"))
}

/// The Zenoti webhook event response object (docs.zenoti.com, "Structure of event responses").
/// `id` (the webhook call) and `event_id` (the event) are both the event's id, which is fixed
/// at detection and therefore the same on every retry; `data` is the booking unchanged.
fn zenoti(event: &Event) -> Value {
    json!({
        "id": event.id,
        "event_id": event.id,
        "event_schema": ZENOTI_SCHEMA,
        "event_resource": ZENOTI_RESOURCE,
        "event_type": zenoti_event_type(event.kind),
        "event_timestamp": zenoti_timestamp(detected(event)),
        "data": event.booking.value(),
    })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use chrono::NaiveDateTime;

    use super::*;
    use crate::outbox::FieldChange;

    /// A guest name that breaks naive string building: quotes, `&`, `<`, `>`, non-ASCII.
    const TRICKY_NAME: &str = "O'Brien \"Zo\" & <Søn> Zoë 山田 🏨";

    fn keys(v: &Value) -> BTreeSet<&str> {
        v.as_object()
            .map(|m| m.keys().map(String::as_str).collect())
            .unwrap_or_default()
    }

    fn set<'a>(names: &[&'a str]) -> BTreeSet<&'a str> {
        names.iter().copied().collect()
    }

    fn booking(status: &str) -> Value {
        json!({
            "id": 12345678,
            "propertyId": 456789,
            "status": status,
            "arrival": "2025-07-01",
            "departure": "2025-07-05",
            "firstName": "Zoë",
            "lastName": TRICKY_NAME,
            "notes": "<b>late</b> & \"quiet\" room\nsecond line\ttab \\ backslash",
            "price": 480.5,
            "cancelTime": null,
        })
    }

    fn event(kind: EventKind, booking: Value) -> Event {
        let changes = match kind {
            EventKind::New => Vec::new(),
            _ => vec![FieldChange {
                path: "/status".to_string(),
                old: json!("request"),
                new: booking["status"].clone(),
            }],
        };
        Event {
            id: "evt_01968f4a2b3c7d4e8f5a6b7c8d9e0f11".to_string(),
            seq: 42,
            kind,
            source: "beds24".to_string(),
            booking_id: "12345678".to_string(),
            detected_ms: 1_748_769_302_481, // 2025-06-01T09:15:02.481Z
            booking: crate::outbox::Booking::from_value(booking).unwrap(),
            changes,
            backfill: false,
        }
    }

    fn status_for(kind: EventKind) -> &'static str {
        match kind {
            EventKind::Cancel => "cancelled",
            _ => "confirmed",
        }
    }

    fn all_events() -> Vec<Event> {
        EventKind::ALL
            .into_iter()
            .map(|k| event(k, booking(status_for(k))))
            .collect()
    }

    #[test]
    fn every_preset_marks_a_backfill_and_only_a_backfill() {
        for preset in BodyPreset::ALL {
            for kind in [EventKind::New, EventKind::Cancel] {
                let live = event(kind, booking(status_for(kind)));
                let backfill = Event {
                    backfill: true,
                    ..live.clone()
                };
                let body = render(preset, &backfill, 1);
                if preset == BodyPreset::Rezgo {
                    // XML: `<backfill>true</backfill>` beside the booking.
                    let xml = String::from_utf8(to_vec(preset, &backfill, 1).unwrap()).unwrap();
                    assert!(xml.contains("<backfill>true</backfill>"), "{xml}");
                    let live = String::from_utf8(to_vec(preset, &live, 1).unwrap()).unwrap();
                    assert!(!live.contains("backfill"), "{live}");
                    continue;
                }
                assert_eq!(body["backfill"], json!(true), "{}", preset.name());
                let bytes: Value =
                    serde_json::from_slice(&to_vec(preset, &backfill, 1).unwrap()).unwrap();
                assert_eq!(bytes, body, "{}", preset.name());
                assert!(
                    render(preset, &live, 1).get("backfill").is_none(),
                    "{}",
                    preset.name()
                );
            }
        }
    }

    #[test]
    fn to_vec_matches_render_for_every_preset() {
        for preset in BodyPreset::ALL {
            for e in [
                event(EventKind::New, booking("new")),
                event(EventKind::Modify, booking("confirmed")),
                event(EventKind::Cancel, booking("cancelled")),
            ] {
                let bytes = to_vec(preset, &e, 2).unwrap();
                if preset == BodyPreset::Rezgo {
                    assert_eq!(content_type(preset), "application/xml");
                    let text = String::from_utf8(bytes).unwrap();
                    assert_eq!(json!(text), render(preset, &e, 2));
                    continue;
                }
                assert_eq!(content_type(preset), "application/json");
                let parsed: Value = serde_json::from_slice(&bytes).unwrap();
                assert_eq!(parsed, render(preset, &e, 2), "{}", preset.name());
            }
        }
    }

    #[test]
    fn parse_and_name_round_trip() {
        for p in BodyPreset::ALL {
            assert_eq!(BodyPreset::parse(p.name()), Some(p));
        }
        let names: BTreeSet<&str> = BodyPreset::ALL.iter().map(|p| p.name()).collect();
        assert_eq!(
            names,
            set(&["pollhook", "beds24", "stayntouch", "zenoti", "rezgo"])
        );
        for bad in ["", "v2", "Beds24", "STAYNTOUCH", " zenoti", "pollhook "] {
            assert_eq!(BodyPreset::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn pollhook_envelope_keys_types_values() {
        for e in all_events() {
            let v = render(BodyPreset::Pollhook, &e, 1);
            let mut expected = set(&[
                "id",
                "type",
                "status",
                "detected_at",
                "source",
                "booking_id",
                "sequence",
                "booking",
            ]);
            if e.kind != EventKind::New {
                expected.insert("changes");
            }
            assert_eq!(keys(&v), expected, "{:?}", e.kind);
            assert_eq!(v["id"], json!(e.id));
            assert_eq!(v["type"], json!(e.kind.event_type()));
            assert_eq!(v["status"], json!(e.kind.status_word()));
            assert_eq!(v["detected_at"], json!("2025-06-01T09:15:02.481Z"));
            assert_eq!(v["source"], json!("beds24"));
            assert_eq!(v["booking_id"], json!("12345678"));
            assert!(v["sequence"].is_u64());
            assert_eq!(v["sequence"], json!(42));
            assert_eq!(v["booking"], e.booking);
            if e.kind != EventKind::New {
                assert_eq!(
                    v["changes"],
                    json!([{"path": "/status", "old": "request", "new": status_for(e.kind)}])
                );
            }
        }
        let pairs: Vec<Value> = all_events()
            .iter()
            .map(|e| {
                let v = render(BodyPreset::Pollhook, e, 1);
                json!([v["type"], v["status"]])
            })
            .collect();
        assert_eq!(
            pairs,
            vec![
                json!(["booking.created", "new"]),
                json!(["booking.modified", "modify"]),
                json!(["booking.cancelled", "cancel"]),
            ]
        );
    }

    #[test]
    fn pollhook_changes_only_when_non_empty() {
        let mut e = event(EventKind::Modify, booking("confirmed"));
        e.changes.clear();
        assert!(render(BodyPreset::Pollhook, &e, 1).get("changes").is_none());
        e.changes = vec![
            FieldChange {
                path: "/departure".to_string(),
                old: json!("2025-07-05"),
                new: json!("2025-07-06"),
            },
            FieldChange {
                path: "/extra~1note".to_string(),
                old: Value::Null,
                new: json!({"a": [1, 2]}),
            },
        ];
        let v = render(BodyPreset::Pollhook, &e, 1);
        assert_eq!(
            v["changes"],
            json!([
                {"path": "/departure", "old": "2025-07-05", "new": "2025-07-06"},
                {"path": "/extra~1note", "old": null, "new": {"a": [1, 2]}},
            ])
        );
        // Exactly what serde would produce for the crate's own type.
        assert_eq!(v["changes"], serde_json::to_value(&e.changes).unwrap());
    }

    #[test]
    fn envelope_schema_matches_renderer() {
        let schema: Value =
            serde_json::from_str(include_str!("../../docs/envelope.schema.json")).unwrap();
        assert_eq!(
            schema["$schema"],
            json!("https://json-schema.org/draft/2020-12/schema")
        );
        assert_eq!(schema["type"], json!("object"));
        assert_eq!(schema["additionalProperties"], json!(true));
        assert!(schema["description"].is_string());
        let required: BTreeSet<&str> = schema["required"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| k.as_str().unwrap())
            .collect();
        let properties = keys(&schema["properties"]);
        for (name, prop) in schema["properties"].as_object().unwrap() {
            assert!(prop["description"].is_string(), "{name} has no description");
        }
        // `required` is exactly what the renderer always emits (a new event has no changes).
        let new = render(
            BodyPreset::Pollhook,
            &event(EventKind::New, booking("new")),
            1,
        );
        assert_eq!(keys(&new), required);
        // Every key the renderer can emit is described.
        for e in all_events() {
            let v = render(BodyPreset::Pollhook, &e, 1);
            assert!(keys(&v).is_subset(&properties), "{:?}", keys(&v));
            let backfill = Event {
                backfill: true,
                ..e
            };
            let v = render(BodyPreset::Pollhook, &backfill, 1);
            assert!(keys(&v).is_subset(&properties), "{:?}", keys(&v));
        }
        assert_eq!(properties, {
            let mut all = required.clone();
            all.insert("changes");
            all.insert("backfill");
            all
        });
        assert_eq!(schema["properties"]["backfill"]["const"], json!(true));
        // The enums in the schema list exactly the kinds.
        let types: Vec<&str> = EventKind::ALL.iter().map(|k| k.event_type()).collect();
        let words: Vec<&str> = EventKind::ALL.iter().map(|k| k.status_word()).collect();
        assert_eq!(schema["properties"]["type"]["enum"], json!(types));
        assert_eq!(schema["properties"]["status"]["enum"], json!(words));
        assert_eq!(
            schema["properties"]["changes"]["items"]["required"],
            json!(["path", "old", "new"])
        );
    }

    #[test]
    fn beds24_keys_types_values() {
        for e in all_events() {
            let v = render(BodyPreset::Beds24, &e, 1);
            assert_eq!(
                keys(&v),
                set(&[
                    "timeStamp",
                    "booking",
                    "infoItems",
                    "invoiceItems",
                    "messages",
                    "retries"
                ]),
                "{:?}",
                e.kind
            );
            // Their example shape: seconds, no fraction, no zone suffix; the value is UTC.
            assert_eq!(v["timeStamp"], json!("2025-06-01T09:15:02"));
            let ts = v["timeStamp"].as_str().unwrap();
            assert_eq!(ts.len(), "2024-05-28T12:34:56".len());
            let parsed = NaiveDateTime::parse_from_str(ts, "%Y-%m-%dT%H:%M:%S").unwrap();
            assert_eq!(parsed.and_utc().timestamp(), e.detected_ms / 1000);
            assert_eq!(v["booking"], e.booking);
            assert_eq!(v["booking"]["status"], json!(status_for(e.kind)));
            for k in ["infoItems", "invoiceItems", "messages"] {
                assert_eq!(v[k], json!([]), "{k}");
            }
            assert!(v["retries"].is_u64());
            assert_eq!(v["retries"], json!(0));
        }
    }

    #[test]
    fn beds24_has_no_event_type_field() {
        for e in all_events() {
            let v = render(BodyPreset::Beds24, &e, 1);
            for k in [
                "event",
                "type",
                "status",
                "action",
                "event_type",
                "eventType",
            ] {
                assert!(v.get(k).is_none(), "{k}");
            }
        }
    }

    #[test]
    fn beds24_retries_counts_earlier_attempts() {
        let e = event(EventKind::Modify, booking("confirmed"));
        for (attempt, retries) in [
            (0u32, 0u64),
            (1, 0),
            (2, 1),
            (3, 2),
            (8, 7),
            (2_147_483_648, 2_147_483_647),
            (u32::MAX, 2_147_483_647),
        ] {
            let v = render(BodyPreset::Beds24, &e, attempt);
            assert!(v["retries"].is_u64());
            assert_eq!(v["retries"].as_u64(), Some(retries), "attempt {attempt}");
        }
    }

    #[test]
    fn beds24_moves_item_arrays_out_of_the_booking() {
        let info = json!([
            {"id": 1, "bookingId": 12345678, "code": "NOTE", "text": "Ünïcode & <b>"},
            {"id": 2, "bookingId": 12345678, "code": "ETA", "text": "23:00"},
        ]);
        let invoice = json!([
            {"id": 7, "type": "charge", "bookingId": 12345678, "qty": 4, "lineTotal": 480},
        ]);
        let messages = json!([
            {"id": 3, "bookingId": 12345678, "read": false, "message": "Hi \"there\""},
        ]);
        let mut doc = booking("confirmed");
        doc["infoItems"] = info.clone();
        doc["invoiceItems"] = invoice.clone();
        doc["messages"] = messages.clone();
        let e = event(EventKind::New, doc);
        let v = render(BodyPreset::Beds24, &e, 1);
        assert_eq!(v["infoItems"], info);
        assert_eq!(v["invoiceItems"], invoice);
        assert_eq!(v["messages"], messages);
        for k in ["infoItems", "invoiceItems", "messages"] {
            assert!(v["booking"].get(k).is_none(), "{k} left in booking");
        }
        assert_eq!(v["booking"], booking("confirmed"));
        // The event itself is untouched.
        assert_eq!(e.booking["infoItems"], info);

        // Only some present: the others default to [].
        let mut doc = booking("confirmed");
        doc["messages"] = messages.clone();
        let v = render(BodyPreset::Beds24, &event(EventKind::New, doc), 1);
        assert_eq!(v["messages"], messages);
        assert_eq!(v["infoItems"], json!([]));
        assert_eq!(v["invoiceItems"], json!([]));
        assert_eq!(v["booking"], booking("confirmed"));
    }

    #[test]
    fn beds24_leaves_non_array_items_and_non_object_bookings_alone() {
        let mut doc = booking("confirmed");
        doc["infoItems"] = Value::Null;
        doc["messages"] = json!("not a list");
        let e = event(EventKind::Modify, doc.clone());
        let v = render(BodyPreset::Beds24, &e, 1);
        assert_eq!(v["booking"], doc);
        assert_eq!(v["infoItems"], json!([]));
        assert_eq!(v["messages"], json!([]));

        let e = event(EventKind::New, json!(["not", "an", "object"]));
        let v = render(BodyPreset::Beds24, &e, 1);
        assert_eq!(v["booking"], json!(["not", "an", "object"]));
        assert_eq!(v["infoItems"], json!([]));
    }

    #[test]
    fn stayntouch_keys_types_values() {
        let names = [
            (EventKind::New, "create_reservation"),
            (EventKind::Modify, "edit_reservation"),
            (EventKind::Cancel, "cancel_reservation"),
        ];
        for (kind, name) in names {
            let e = event(kind, booking(status_for(kind)));
            let v = render(BodyPreset::StayNTouch, &e, 1);
            assert_eq!(
                keys(&v),
                set(&["created_at", "event", "id", "data", "object"])
            );
            assert_eq!(v["event"], json!(name));
            assert_eq!(v["created_at"], json!("2025-06-01T09:15:02.481Z"));
            assert!(v["id"].is_u64(), "id must be an integer");
            assert_eq!(v["id"], json!(42));
            assert_eq!(v["object"], json!("event"));
            let mut expected = e.booking.value().clone();
            expected["object"] = json!("reservation");
            assert_eq!(v["data"], expected);
            assert_eq!(v["data"]["lastName"], json!(TRICKY_NAME));
        }
    }

    #[test]
    fn stayntouch_keeps_an_existing_object_key() {
        let mut doc = booking("reserved");
        doc["object"] = json!("booking");
        let v = render(
            BodyPreset::StayNTouch,
            &event(EventKind::New, doc.clone()),
            1,
        );
        assert_eq!(v["data"], doc);
        let mut doc = booking("reserved");
        doc["object"] = Value::Null;
        let v = render(
            BodyPreset::StayNTouch,
            &event(EventKind::New, doc.clone()),
            1,
        );
        assert_eq!(v["data"], doc);
        // A non-object booking is passed through as is.
        let v = render(BodyPreset::StayNTouch, &event(EventKind::New, json!(7)), 1);
        assert_eq!(v["data"], json!(7));
    }

    #[test]
    fn stayntouch_reactivation_is_an_edit() {
        let mut e = event(EventKind::Modify, booking("confirmed"));
        e.changes = vec![FieldChange {
            path: "/status".to_string(),
            old: json!("cancelled"),
            new: json!("confirmed"),
        }];
        let v = render(BodyPreset::StayNTouch, &e, 1);
        assert_eq!(v["event"], json!("edit_reservation"));
    }

    #[test]
    fn zenoti_keys_types_values() {
        let types = [
            (EventKind::New, "Appointment.Created"),
            (EventKind::Modify, "Appointment.Updated"),
            (EventKind::Cancel, "Appointment.Cancelled"),
        ];
        for (kind, name) in types {
            let e = event(kind, booking(status_for(kind)));
            let v = render(BodyPreset::Zenoti, &e, 1);
            assert_eq!(
                keys(&v),
                set(&[
                    "id",
                    "event_id",
                    "event_schema",
                    "event_resource",
                    "event_type",
                    "event_timestamp",
                    "data"
                ])
            );
            assert_eq!(v["id"], json!(e.id));
            assert_eq!(v["event_id"], json!(e.id));
            assert_eq!(v["event_schema"], json!("v1"));
            assert_eq!(v["event_resource"], json!("Appointment"));
            assert_eq!(v["event_type"], json!(name));
            // Zenoti's dotted `Resource.Action`, resource matching `event_resource`.
            let (resource, action) = name.split_once('.').unwrap();
            assert_eq!(resource, "Appointment");
            assert!(!action.is_empty() && !action.contains('.'));
            assert_eq!(v["event_timestamp"], json!("2025-06-01T09:15:02.4810000Z"));
            assert_eq!(v["data"], e.booking);
        }
    }

    /// `YYYY-MM-DDTHH:MM:SS.fffffffZ`, checked character by character.
    fn is_zenoti_timestamp(s: &str) -> bool {
        let b = s.as_bytes();
        b.len() == 28
            && b.iter().enumerate().all(|(i, c)| match i {
                4 | 7 => *c == b'-',
                10 => *c == b'T',
                13 | 16 => *c == b':',
                19 => *c == b'.',
                27 => *c == b'Z',
                _ => c.is_ascii_digit(),
            })
    }

    #[test]
    fn zenoti_timestamp_has_seven_fraction_digits() {
        assert!(is_zenoti_timestamp("2022-03-11T14:22:43.3847049Z"));
        let cases = [
            (1_748_769_302_481, "2025-06-01T09:15:02.4810000Z"),
            (1_748_769_302_005, "2025-06-01T09:15:02.0050000Z"),
            (1_748_769_302_000, "2025-06-01T09:15:02.0000000Z"),
            (0, "1970-01-01T00:00:00.0000000Z"),
            (-1, "1969-12-31T23:59:59.9990000Z"),
        ];
        for (ms, expected) in cases {
            let mut e = event(EventKind::New, booking("new"));
            e.detected_ms = ms;
            let v = render(BodyPreset::Zenoti, &e, 1);
            let ts = v["event_timestamp"].as_str().unwrap();
            assert_eq!(ts, expected);
            assert!(is_zenoti_timestamp(ts), "{ts}");
            let back = DateTime::parse_from_rfc3339(ts).unwrap();
            assert_eq!(back.timestamp_millis(), ms);
        }
    }

    #[test]
    fn timestamps_agree_across_presets() {
        let e = event(EventKind::Modify, booking("confirmed"));
        let ms = |s: &Value| {
            DateTime::parse_from_rfc3339(s.as_str().unwrap())
                .unwrap()
                .timestamp_millis()
        };
        assert_eq!(
            ms(&render(BodyPreset::Pollhook, &e, 1)["detected_at"]),
            e.detected_ms
        );
        assert_eq!(
            ms(&render(BodyPreset::StayNTouch, &e, 1)["created_at"]),
            e.detected_ms
        );
        assert_eq!(
            ms(&render(BodyPreset::Zenoti, &e, 1)["event_timestamp"]),
            e.detected_ms
        );
    }

    #[test]
    fn booking_content_passes_through_unchanged() {
        for e in all_events() {
            for preset in BodyPreset::JSON {
                let v = render(preset, &e, 1);
                let doc = match preset {
                    BodyPreset::Pollhook | BodyPreset::Beds24 => &v["booking"],
                    _ => &v["data"],
                };
                for (k, original) in e.booking.as_object().unwrap() {
                    assert_eq!(&doc[k], original, "{} {k}", preset.name());
                }
                // Serialised and read back (as a receiver does), the text is intact.
                let wire = serde_json::to_string(&v).unwrap();
                assert!(wire.contains("Søn> Zoë 山田 🏨"), "non-ASCII kept as UTF-8");
                let back: Value = serde_json::from_str(&wire).unwrap();
                assert_eq!(back, v);
                let doc = match preset {
                    BodyPreset::Pollhook | BodyPreset::Beds24 => &back["booking"],
                    _ => &back["data"],
                };
                assert_eq!(doc["lastName"], json!(TRICKY_NAME));
                assert_eq!(doc["notes"], e.booking["notes"]);
            }
        }
    }

    #[test]
    fn only_beds24_depends_on_the_attempt() {
        for e in all_events() {
            for preset in BodyPreset::ALL {
                let first = render(preset, &e, 1);
                let later = render(preset, &e, 5);
                if preset == BodyPreset::Beds24 {
                    assert_eq!(later["retries"], json!(4));
                    let mut later = later;
                    later["retries"] = json!(0);
                    assert_eq!(first, later);
                } else {
                    assert_eq!(first, later, "{}", preset.name());
                }
            }
        }
    }

    // ---- docs/presets.md ----

    /// The three events rendered in `docs/presets.md`: a Beds24 booking (fetched with
    /// `includeInfoItems=true`) created, modified, then cancelled.
    fn doc_events() -> [Event; 3] {
        let base = json!({
            "id": 12345678,
            "propertyId": 456789,
            "roomId": 9012345,
            "status": "confirmed",
            "subStatus": "none",
            "arrival": "2025-07-01",
            "departure": "2025-07-05",
            "numAdult": 2,
            "firstName": "Zoë",
            "lastName": "O'Brien \"Zo\" & <Søn>",
            "price": 480.5,
            "modifiedTime": "2025-06-01T09:14:51Z",
            "cancelTime": null,
            "infoItems": [
                {
                    "id": 901,
                    "bookingId": 12345678,
                    "code": "ETA",
                    "text": "Arriving ~23:00",
                    "createTime": "2025-06-01T09:14:51Z"
                }
            ]
        });
        let mut modified = base.clone();
        modified["departure"] = json!("2025-07-06");
        modified["numAdult"] = json!(3);
        modified["price"] = json!(610.0);
        modified["modifiedTime"] = json!("2025-06-03T16:39:58Z");
        let mut cancelled = modified.clone();
        cancelled["status"] = json!("cancelled");
        cancelled["subStatus"] = json!("cancelledByGuest");
        cancelled["modifiedTime"] = json!("2025-06-05T07:05:12Z");
        cancelled["cancelTime"] = json!("2025-06-05T07:05:12Z");
        let change = |path: &str, old: Value, new: Value| FieldChange {
            path: path.to_string(),
            old,
            new,
        };
        let common = |id: &str, seq: u64, kind: EventKind, ms: i64, doc: Value| Event {
            id: id.to_string(),
            seq,
            kind,
            source: "beds24".to_string(),
            booking_id: "12345678".to_string(),
            detected_ms: ms,
            booking: crate::outbox::Booking::from_value(doc).unwrap(),
            changes: Vec::new(),
            backfill: false,
        };
        let new = common(
            "evt_01972aa3b3f17a4c9d0e1f2a3b4c5d61",
            41,
            EventKind::New,
            1_748_769_302_481, // 2025-06-01T09:15:02.481Z
            base,
        );
        let mut modify = common(
            "evt_019736b0e2c57b1d8e2f3a4b5c6d7e82",
            57,
            EventKind::Modify,
            1_748_968_827_093, // 2025-06-03T16:40:27.093Z
            modified,
        );
        modify.changes = vec![
            change("/departure", json!("2025-07-05"), json!("2025-07-06")),
            change("/numAdult", json!(2), json!(3)),
            change("/price", json!(480.5), json!(610.0)),
        ];
        let mut cancel = common(
            "evt_01973ee1a83c7e5fa1b2c3d4e5f60793",
            63,
            EventKind::Cancel,
            1_749_107_144_700, // 2025-06-05T07:05:44.700Z
            cancelled,
        );
        cancel.changes = vec![
            change("/status", json!("confirmed"), json!("cancelled")),
            change("/cancelTime", Value::Null, json!("2025-06-05T07:05:12Z")),
        ];
        [new, modify, cancel]
    }

    /// The event rendered by the `rezgo` example in `docs/presets.md`: a booking as pollhook
    /// reads it from Rezgo's `search_bookings` XML (every value a string).
    fn rezgo_doc_event() -> Event {
        Event {
            id: "evt_01972aa3b3f17a4c9d0e1f2a3b4c5d61".to_string(),
            seq: 41,
            kind: EventKind::New,
            source: "rezgo".to_string(),
            booking_id: "1B4M7R2K1K".to_string(),
            detected_ms: 1_748_769_302_481,
            booking: crate::outbox::Booking::from_value(json!({
                "trans_num": "1B4M7R2K1K",
                "item_id": "1663",
                "tour_name": "Sunset Kayak & Wine",
                "option_name": "Evening Departure",
                "status": "1",
                "date": "1751328000",
                "date_purchased": "1748769250",
                "updated": "1748769291",
                "adult_num": "2",
                "child_num": "0",
                "overall_total": "130.00",
                "first_name": "Zoë",
                "last_name": "O'Brien \"Zo\" & <Søn>",
                "email_address": "zoe@example.com",
            }))
            .unwrap(),
            changes: Vec::new(),
            backfill: false,
        }
    }

    /// The ```json blocks of a Markdown text, in order.
    fn json_blocks(md: &str) -> Vec<String> {
        fenced_blocks(md, "json")
    }

    /// The fenced blocks of `lang` in a Markdown text, in order.
    fn fenced_blocks(md: &str, lang: &str) -> Vec<String> {
        let fence = format!("```{lang}");
        let mut blocks = Vec::new();
        let mut current: Option<String> = None;
        for line in md.lines() {
            match current.as_mut() {
                None if line.trim() == fence => current = Some(String::new()),
                None => {}
                Some(_) if line.trim() == "```" => blocks.extend(current.take()),
                Some(text) => {
                    text.push_str(line);
                    text.push('\n');
                }
            }
        }
        assert!(current.is_none(), "unterminated ```{lang} block");
        blocks
    }

    #[test]
    fn docs_examples_match_the_renderer() {
        let md = include_str!("../../docs/presets.md");
        let blocks = json_blocks(md);
        let events = doc_events();
        let expected: Vec<Value> = BodyPreset::JSON
            .iter()
            .flat_map(|p| events.iter().map(move |e| render(*p, e, 1)))
            .collect();
        assert_eq!(
            blocks.len(),
            expected.len(),
            "one block per preset and kind"
        );
        for (i, (block, want)) in blocks.iter().zip(&expected).enumerate() {
            let got: Value = serde_json::from_str(block)
                .unwrap_or_else(|err| panic!("block {i} is not JSON: {err}"));
            assert_eq!(&got, want, "block {i}: docs/presets.md is out of date");
        }
        let xml = fenced_blocks(md, "xml");
        let want =
            String::from_utf8(to_vec(BodyPreset::Rezgo, &rezgo_doc_event(), 1).unwrap()).unwrap();
        assert_eq!(
            xml,
            [format!("{want}\n")],
            "the rezgo block of docs/presets.md is out of date"
        );
        for p in BodyPreset::ALL {
            assert!(
                md.contains(&format!("`{}`", p.name())),
                "{} not named",
                p.name()
            );
        }
    }

    /// Prints the examples for `docs/presets.md`:
    /// `cargo test print_doc_examples -- --ignored --nocapture`.
    #[test]
    #[ignore = "prints the examples for docs/presets.md"]
    fn print_doc_examples() {
        for p in BodyPreset::JSON {
            for e in doc_events() {
                let body = serde_json::to_string_pretty(&render(p, &e, 1)).unwrap();
                println!("== {} {}\n{body}", p.name(), e.kind.status_word());
            }
        }
        let xml = to_vec(BodyPreset::Rezgo, &rezgo_doc_event(), 1).unwrap();
        println!("== rezgo new\n{}", String::from_utf8_lossy(&xml));
    }
}
