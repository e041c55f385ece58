//! Store tests: lanes, outcomes, replay, retention, failed polls and reopening.

use super::*;
use crate::outbox::{DeliveryState, Event, EventKind};
use serde_json::json;

fn store() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(&dir.path().join("t.redb")).unwrap();
    (dir, s)
}

fn emit(s: &Store, booking: &str, eps: &[&str], now: i64) -> Vec<Event> {
    let eps: Vec<(&str, i64)> = eps.iter().map(|e| (*e, 0)).collect();
    s.write_poll("src", now, |t| {
        t.emit(
            EventKind::New,
            booking,
            json!({"id": booking}),
            vec![],
            &eps,
        )?;
        Ok(t.take_emitted())
    })
    .unwrap()
}

fn no_skip(_: &str, _: u64) -> bool {
    false
}

fn finish(s: &Store, item: &DueItem, state: DeliveryState, now: i64) {
    let mut d = item.delivery.clone();
    let prev = d.next_ms;
    d.state = state;
    d.attempts += 1;
    s.record(&[(d, prev)], now).unwrap();
}

#[test]
fn only_lane_heads_are_due_and_finishing_promotes_the_next() {
    let (_d, s) = store();
    emit(&s, "b1", &["ep"], 10);
    emit(&s, "b1", &["ep"], 11);
    emit(&s, "b2", &["ep"], 12);
    let due = s.due(100, 10, &no_skip).unwrap();
    let seqs: Vec<u64> = due.items.iter().map(|i| i.event.seq).collect();
    assert_eq!(seqs, [1, 3], "b1's second event waits behind its first");
    finish(&s, &due.items[0], DeliveryState::Delivered, 100);
    let due = s.due(100, 10, &no_skip).unwrap();
    let seqs: Vec<u64> = due.items.iter().map(|i| i.event.seq).collect();
    assert_eq!(seqs, [3, 2]);
}

#[test]
fn retry_moves_the_head_in_time_without_blocking_other_lanes() {
    let (_d, s) = store();
    emit(&s, "b1", &["ep"], 10);
    emit(&s, "b2", &["ep"], 10);
    let due = s.due(10, 10, &no_skip).unwrap();
    let mut d = due.items[0].delivery.clone();
    d.attempts = 1;
    d.next_ms = 5000;
    s.record(&[(d, 10)], 10).unwrap();
    let due = s.due(10, 10, &no_skip).unwrap();
    assert_eq!(due.items.len(), 1);
    assert_eq!(due.items[0].event.booking_id, "b2");
    assert_eq!(due.next_due_ms, Some(5000));
    assert_eq!(s.due(5000, 10, &no_skip).unwrap().items.len(), 2);
}

#[test]
fn a_failed_poll_commits_nothing() {
    let (_d, s) = store();
    let r: Result<()> = s.write_poll("src", 1, |t| {
        t.put(
            "b1",
            &StoredBooking {
                hash: "h".into(),
                cancelled: false,
                doc: json!({}),
                outside: false,
            },
        )?;
        t.emit(EventKind::New, "b1", json!({}), vec![], &[("ep", 0)])?;
        Err(StoreError::Task("boom".into()))
    });
    assert!(r.is_err());
    assert!(s.booking("src", "b1").unwrap().is_none());
    assert!(s.events().unwrap().is_empty());
    assert!(s.due(100, 10, &no_skip).unwrap().items.is_empty());
}

#[test]
fn stale_outcomes_are_ignored() {
    let (_d, s) = store();
    emit(&s, "b1", &["ep"], 10);
    let item = s.due(10, 10, &no_skip).unwrap().items.remove(0);
    finish(&s, &item, DeliveryState::Delivered, 10);
    // The same outcome recorded twice (e.g. a duplicate) must not touch the lane again.
    let mut d = item.delivery.clone();
    d.state = DeliveryState::Dead;
    assert_eq!(s.record(&[(d, 10)], 10).unwrap(), 0);
    assert_eq!(
        s.deliveries_of(1).unwrap()[0].state,
        DeliveryState::Delivered
    );
}

#[test]
fn dead_letters_can_be_replayed_with_the_same_event() {
    let (_d, s) = store();
    let ev = emit(&s, "b1", &["ep"], 10).remove(0);
    let item = s.due(10, 10, &no_skip).unwrap().items.remove(0);
    finish(&s, &item, DeliveryState::Dead, 10);
    assert_eq!(s.counts().unwrap().dead, 1);
    assert!(s.due(10, 10, &no_skip).unwrap().items.is_empty());
    let sel = ReplaySelector::Event {
        id: ev.id.clone(),
        endpoint: None,
    };
    assert_eq!(s.replay(&sel, 20).unwrap(), 1);
    assert_eq!(s.replay(&sel, 20).unwrap(), 0, "already pending");
    let again = s.due(20, 10, &no_skip).unwrap().items.remove(0);
    assert_eq!(again.event.id, ev.id);
    assert_eq!(again.delivery.attempts, 0);
}

#[test]
fn prune_removes_delivered_history_and_orphan_events_only() {
    let (_d, s) = store();
    let delivered = emit(&s, "b1", &["ep"], 10).remove(0);
    let dead = emit(&s, "b2", &["ep"], 10).remove(0);
    let orphan = emit(&s, "b3", &[], 10).remove(0);
    let pending = emit(&s, "b4", &["ep"], 10).remove(0);
    let two_eps = emit(&s, "b5", &["ep", "other"], 10).remove(0);
    for item in s.due(10, 10, &no_skip).unwrap().items {
        let state = match item.event.booking_id.as_str() {
            "b1" | "b5" => DeliveryState::Delivered,
            "b2" => DeliveryState::Dead,
            _ => continue,
        };
        if item.delivery.endpoint == "other" {
            continue;
        }
        finish(&s, &item, state, 10);
    }
    // Nothing is older than the cutoff yet.
    assert_eq!(s.prune(5, 100).unwrap(), 0);
    assert_eq!(
        s.prune(11, 100).unwrap(),
        3,
        "b1, b5@ep and the orphan's entry"
    );
    let left: Vec<String> = s.events().unwrap().into_iter().map(|e| e.id).collect();
    assert!(!left.contains(&delivered.id));
    assert!(!left.contains(&orphan.id));
    assert!(left.contains(&dead.id), "dead letters keep their event");
    assert!(left.contains(&pending.id));
    assert!(
        left.contains(&two_eps.id),
        "still referenced by its other endpoint's delivery"
    );
    assert_eq!(s.deliveries_of(two_eps.seq).unwrap().len(), 1);
    // Bounded batches.
    let (_d2, s2) = store();
    for i in 0..5 {
        emit(&s2, &format!("x{i}"), &[], 10);
    }
    assert_eq!(s2.prune(11, 2).unwrap(), 2);
    assert_eq!(s2.prune(11, 2).unwrap(), 2);
    assert_eq!(s2.prune(11, 2).unwrap(), 1);
    assert!(s2.events().unwrap().is_empty());
}

#[test]
fn state_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.redb");
    let ev = {
        let s = Store::open(&path).unwrap();
        emit(&s, "b1", &["a", "b"], 10).remove(0)
    };
    let s = Store::open(&path).unwrap();
    let due = s.due(10, 10, &no_skip).unwrap();
    assert_eq!(due.items.len(), 2);
    assert!(due.items.iter().all(|i| i.event.id == ev.id));
    let next = emit(&s, "b2", &["a"], 11).remove(0);
    assert_eq!(next.seq, ev.seq + 1);
}

#[test]
fn known_lists_only_this_source() {
    let (_d, s) = store();
    let b = StoredBooking {
        hash: "h".into(),
        cancelled: false,
        doc: json!({}),
        outside: false,
    };
    s.write_poll("a", 1, |t| t.put("1", &b)).unwrap();
    s.write_poll("b", 1, |t| t.put("2", &b)).unwrap();
    s.write_poll("ab", 1, |t| t.put("3", &b)).unwrap();
    let known = s.write_poll("a", 1, |t| t.known()).unwrap();
    assert_eq!(
        known,
        vec![Known {
            id: "1".into(),
            cancelled: false,
            outside: false
        }]
    );
    assert_eq!(s.known("a").unwrap(), known);
}
