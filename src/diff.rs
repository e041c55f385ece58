//! The diff: pure functions that turn (last-seen booking, freshly polled booking) into
//! new / modify / cancel, with field-level changes as RFC 6901 JSON Pointers.
//!
//! No I/O, no clock. The poll pipeline feeds it rows read inside the store's write transaction.

use serde_json::{Map, Value};

use crate::json::{JsonError, escape, fingerprint, remove_pointer, scalar_string, set_pointer};
use crate::outbox::{EventKind, FieldChange};
use crate::store::StoredBooking;

/// What counts as significant and what means cancelled, for one source.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Policy {
    /// Pointer to the status field, if any.
    pub status: Option<String>,
    /// Status values (as strings) meaning cancelled.
    pub cancelled_values: Vec<String>,
    /// Fields that never count as a change.
    pub ignore: Vec<String>,
    /// If non-empty, the only fields that count.
    pub only: Vec<String>,
}

/// A detected change for one booking.
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    /// new / modify / cancel.
    pub kind: EventKind,
    /// Field-level detail (empty for new).
    pub changes: Vec<FieldChange>,
}

/// The result of comparing one polled booking with its stored state.
#[derive(Debug, Clone, PartialEq)]
pub struct Comparison {
    /// What to store (`None` when the stored row is still right and need not be rewritten).
    pub store: Option<StoredBooking>,
    /// What to emit.
    pub change: Option<Change>,
}

impl Policy {
    /// Whether this document's status is in the cancelled set.
    pub fn is_cancelled(&self, doc: &Value) -> bool {
        let Some(p) = &self.status else { return false };
        match doc.pointer(p).and_then(scalar_string) {
            Some(s) => self.cancelled_values.iter().any(|c| c == &s),
            None => false,
        }
    }

    /// The part of the document that counts for change detection.
    pub fn significant(&self, doc: &Value) -> Value {
        if !self.only.is_empty() {
            let mut out = Value::Object(Map::new());
            for p in &self.only {
                if let Some(v) = doc.pointer(p) {
                    set_pointer(&mut out, p, v.clone());
                }
            }
            return out;
        }
        let mut out = doc.clone();
        for p in &self.ignore {
            remove_pointer(&mut out, p);
        }
        out
    }

    /// Builds the stored form of a document.
    pub fn stored(&self, doc: Value) -> Result<StoredBooking, JsonError> {
        Ok(StoredBooking {
            hash: fingerprint(&self.significant(&doc))?,
            cancelled: self.is_cancelled(&doc),
            doc,
            outside: false,
        })
    }

    /// Compares a polled document with the stored state of the same id.
    ///
    /// * unknown id: `new`, or `cancel` if it is first seen already cancelled (it existed and
    ///   was cancelled between two polls; the receiver learns both facts from one event);
    /// * known, became cancelled: `cancel`;
    /// * known, significant content changed otherwise (including reactivation): `modify`;
    /// * known, only ignored fields changed: nothing, and the stored row is left alone.
    pub fn compare(
        &self,
        prev: Option<&StoredBooking>,
        doc: Value,
    ) -> Result<Comparison, JsonError> {
        let next = self.stored(doc)?;
        let Some(prev) = prev else {
            let kind = if next.cancelled {
                EventKind::Cancel
            } else {
                EventKind::New
            };
            return Ok(Comparison {
                store: Some(next),
                change: Some(Change {
                    kind,
                    changes: Vec::new(),
                }),
            });
        };
        if prev.hash == next.hash && prev.cancelled == next.cancelled {
            return Ok(Comparison {
                store: None,
                change: None,
            });
        }
        let changes = field_changes(&self.significant(&prev.doc), &self.significant(&next.doc));
        let kind = if next.cancelled && !prev.cancelled {
            EventKind::Cancel
        } else {
            EventKind::Modify
        };
        Ok(Comparison {
            store: Some(next),
            change: Some(Change { kind, changes }),
        })
    }
}

/// Every leaf that differs between `old` and `new`, as JSON Pointers, in key order.
/// Objects are compared key by key; arrays element by element when their lengths match,
/// otherwise as a whole.
pub fn field_changes(old: &Value, new: &Value) -> Vec<FieldChange> {
    let mut out = Vec::new();
    walk(String::new(), old, new, &mut out);
    out
}

fn walk(path: String, old: &Value, new: &Value, out: &mut Vec<FieldChange>) {
    if old == new {
        return;
    }
    match (old, new) {
        (Value::Object(a), Value::Object(b)) => {
            let mut keys: Vec<&String> = a.keys().chain(b.keys()).collect();
            keys.sort();
            keys.dedup();
            for k in keys {
                let p = format!("{path}/{}", escape(k));
                match (a.get(k), b.get(k)) {
                    (Some(x), Some(y)) => walk(p, x, y, out),
                    (x, y) => out.push(FieldChange {
                        path: p,
                        old: x.cloned().unwrap_or(Value::Null),
                        new: y.cloned().unwrap_or(Value::Null),
                    }),
                }
            }
        }
        (Value::Array(a), Value::Array(b)) if a.len() == b.len() => {
            for (i, (x, y)) in a.iter().zip(b).enumerate() {
                walk(format!("{path}/{i}"), x, y, out);
            }
        }
        _ => out.push(FieldChange {
            path,
            old: old.clone(),
            new: new.clone(),
        }),
    }
}

/// The mass-disappearance guard: may `gone` of `known_active` bookings be cancelled in one poll?
/// Up to two disappearances always pass (a small property losing one booking is normal); beyond
/// that, the share must not exceed `max_share`.
pub fn disappearance_allowed(known_active: usize, gone: usize, max_share: f64) -> bool {
    if gone <= 2 {
        return true;
    }
    if known_active == 0 {
        return false;
    }
    (gone as f64) / (known_active as f64) <= max_share
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn policy() -> Policy {
        Policy {
            status: Some("/status".into()),
            cancelled_values: vec!["cancelled".into(), "0".into()],
            ignore: vec!["/modifiedTime".into()],
            only: vec![],
        }
    }

    #[test]
    fn unknown_id_is_new() {
        let c = policy()
            .compare(None, json!({"id": 1, "status": "confirmed"}))
            .unwrap();
        assert_eq!(c.change.unwrap().kind, EventKind::New);
        assert!(c.store.is_some());
    }

    #[test]
    fn first_seen_cancelled_is_cancel() {
        let c = policy()
            .compare(None, json!({"id": 1, "status": "cancelled"}))
            .unwrap();
        assert_eq!(c.change.unwrap().kind, EventKind::Cancel);
    }

    #[test]
    fn unchanged_and_ignored_fields_emit_nothing() {
        let p = policy();
        let prev = p
            .stored(json!({"id": 1, "status": "new", "modifiedTime": "a"}))
            .unwrap();
        let c = p
            .compare(
                Some(&prev),
                json!({"id": 1, "status": "new", "modifiedTime": "b"}),
            )
            .unwrap();
        assert_eq!(
            c,
            Comparison {
                store: None,
                change: None
            }
        );
    }

    #[test]
    fn modify_lists_changed_fields_as_pointers() {
        let p = policy();
        let prev = p.stored(json!({"id": 1, "status": "new", "guest": {"first/name": "Ada", "n": 2}, "rooms": [1, 2]})).unwrap();
        let c = p.compare(
            Some(&prev),
            json!({"id": 1, "status": "confirmed", "guest": {"first/name": "Bo", "n": 2, "vip": true}, "rooms": [1, 3]}),
        )
        .unwrap();
        let ch = c.change.unwrap();
        assert_eq!(ch.kind, EventKind::Modify);
        let paths: Vec<&str> = ch.changes.iter().map(|c| c.path.as_str()).collect();
        assert_eq!(
            paths,
            ["/guest/first~1name", "/guest/vip", "/rooms/1", "/status"]
        );
        assert_eq!(ch.changes[0].old, json!("Ada"));
        assert_eq!(ch.changes[1].old, Value::Null);
        assert_eq!(ch.changes[1].new, json!(true));
    }

    #[test]
    fn cancellation_and_reactivation() {
        let p = policy();
        let active = p.stored(json!({"id": 1, "status": "confirmed"})).unwrap();
        let c = p
            .compare(Some(&active), json!({"id": 1, "status": "cancelled"}))
            .unwrap();
        let ch = c.change.unwrap();
        assert_eq!(ch.kind, EventKind::Cancel);
        assert_eq!(ch.changes[0].path, "/status");
        let cancelled = c.store.unwrap();
        assert!(cancelled.cancelled);
        let back = p
            .compare(Some(&cancelled), json!({"id": 1, "status": "confirmed"}))
            .unwrap();
        assert_eq!(back.change.unwrap().kind, EventKind::Modify);
    }

    #[test]
    fn numeric_status_codes_compare_as_strings() {
        let p = policy();
        assert!(p.is_cancelled(&json!({"status": 0})));
        assert!(p.is_cancelled(&json!({"status": "0"})));
        assert!(!p.is_cancelled(&json!({"status": 1})));
        assert!(!p.is_cancelled(&json!({})));
    }

    #[test]
    fn only_fields_limit_what_counts() {
        let p = Policy {
            only: vec!["/arrival".into(), "/guest/name".into()],
            ..policy()
        };
        let prev = p
            .stored(
                json!({"arrival": "2026-12-01", "guest": {"name": "A", "phone": "1"}, "price": 1}),
            )
            .unwrap();
        let same = p
            .compare(
                Some(&prev),
                json!({"arrival": "2026-12-01", "guest": {"name": "A", "phone": "2"}, "price": 9}),
            )
            .unwrap();
        assert!(same.change.is_none());
        let moved = p
            .compare(
                Some(&prev),
                json!({"arrival": "2026-12-02", "guest": {"name": "A"}}),
            )
            .unwrap();
        assert_eq!(moved.change.unwrap().changes[0].path, "/arrival");
    }

    #[test]
    fn ignore_inside_arrays_and_escaped_keys() {
        let p = Policy {
            ignore: vec!["/rooms/0/ts".into(), "/a~1b".into()],
            ..Policy::default()
        };
        assert_eq!(
            p.significant(&json!({"rooms": [{"ts": 1, "n": 2}], "a/b": 3, "c": 4})),
            json!({"rooms": [{"n": 2}], "c": 4})
        );
    }

    #[test]
    fn guard() {
        assert!(disappearance_allowed(3, 1, 0.2));
        assert!(disappearance_allowed(3, 2, 0.2));
        assert!(!disappearance_allowed(10, 3, 0.2));
        assert!(disappearance_allowed(100, 20, 0.2));
        assert!(!disappearance_allowed(100, 21, 0.2));
        assert!(!disappearance_allowed(0, 3, 1.0));
    }
}
