//! Chaos at both ends while bookings keep changing: the source fails polls (500s, malformed
//! pages, a record without id, a refused page) and the receiver misbehaves (500s, 503/429 with
//! Retry-After, timeouts, a 410). In the end every booking's last event shows it as it is now
//! (nothing lost), every event shows a state the booking really had (nothing invented), and every
//! event is either delivered, in per-booking order, or visible as a dead letter.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use pollhook::demo::simulator::Simulator;
use pollhook::outbox::DeliveryState;
use rand::{RngExt, SeedableRng};
use serde_json::Value;

use crate::helpers::*;

/// A booking as compared: without the timestamps the source moves on its own.
fn state(doc: &Value) -> Value {
    let mut d = doc.clone();
    if let Some(m) = d.as_object_mut() {
        m.remove("modifiedTime");
    }
    d
}

#[tokio::test]
async fn every_event_is_delivered_in_order_or_dead_lettered() {
    let t = spawn_app(Options {
        initial_bookings: 8,
        page_size: 4,
        endpoints: r#"
[endpoints.crm]
url = "{RECEIVER}/crm"
secrets = [{ file = "{SECRET_FILE}" }]
timeout = "150ms"
retry_schedule = ["0s", "1s", "1s"]
jitter = 0.5
max_in_flight = 4
"#
        .into(),
        ..Options::default()
    })
    .await;
    let mut rng = rand::rngs::StdRng::seed_from_u64(42);
    t.poll().await;
    // Every state each booking was in when a poll could have seen it (the timestamps the
    // source moves on its own left out, as `ignore_fields` does).
    let mut history: HashMap<String, Vec<Value>> = HashMap::new();
    let record = |history: &mut HashMap<String, Vec<Value>>, sim: &Simulator| {
        for b in sim.bookings() {
            let states = history.entry(b["id"].to_string()).or_default();
            let s = state(&b);
            if states.last() != Some(&s) {
                states.push(s);
            }
        }
    };
    record(&mut history, &t.sim);
    let baseline: HashMap<String, Value> = history
        .iter()
        .map(|(id, s)| (id.clone(), s[0].clone()))
        .collect();
    let mut failed_polls = 0;
    let mut clock = now_ms();
    let mut gone_once = false;
    for round in 0..40 {
        if round < 25 {
            let ids: Vec<u64> = t
                .sim
                .bookings()
                .iter()
                .map(|b| b["id"].as_u64().unwrap())
                .collect();
            for _ in 0..rng.random_range(0..4) {
                let id = ids[rng.random_range(0..ids.len())];
                match rng.random_range(0..5) {
                    0 => {
                        t.sim.create_booking();
                    }
                    1 | 2 => {
                        t.sim.modify_booking(id);
                    }
                    3 => {
                        t.sim.cancel_booking(id);
                    }
                    _ => {
                        t.sim.reactivate_booking(id);
                    }
                }
            }
            record(&mut history, &t.sim);
            // The source misbehaves too: the poll fails and commits nothing; a later one catches up.
            match rng.random_range(0..8) {
                0 => t.sim.fail_next(10, 500),
                1 => t.sim.corrupt_page(rng.random_range(1..3)),
                2 => t.sim.drop_id_on_page(rng.random_range(1..3)),
                3 => t.sim.refuse_page(2, 400),
                _ => {}
            }
            if t.app.poll_now("hotel").await.is_err() {
                failed_polls += 1;
            }
            t.sim.fail_next(0, 500);
        }
        match rng.random_range(0..6) {
            0 => t.receiver.fail_next(rng.random_range(1..10), 500),
            1 => {
                t.receiver.set_retry_after(Some(1));
                t.receiver.fail_next(
                    rng.random_range(1..3),
                    if rng.random_bool(0.5) { 429 } else { 503 },
                );
            }
            2 => t
                .receiver
                .delay_next(rng.random_range(1..3), Duration::from_millis(400)),
            3 if !gone_once && round > 5 => {
                gone_once = true;
                t.receiver.fail_next(1, 410);
            }
            _ => {}
        }
        t.app.deliver_due_at(clock).await.unwrap();
        if gone_once {
            // The operator notices and re-enables the endpoint.
            t.app.enable_endpoint("crm").await.unwrap();
        }
        clock += 2 * HOUR_MS;
    }
    // Let everything settle: no more faults, the clock runs on.
    t.receiver.set_retry_after(None);
    t.receiver.fail_next(0, 200);
    for _ in 0..10 {
        clock += 2 * HOUR_MS;
        t.app.deliver_due_at(clock).await.unwrap();
    }
    // The source is well again: the next poll catches up with everything.
    t.poll().await;
    for (id, states) in &history {
        let last = t
            .app
            .store()
            .events()
            .unwrap()
            .into_iter()
            .rfind(|e| &e.booking_id == id)
            .map(|e| state(e.booking.value()))
            .or_else(|| baseline.get(id).cloned());
        assert_eq!(
            last.as_ref(),
            states.last(),
            "booking {id}: a change was lost"
        );
    }
    for e in t.app.store().events().unwrap() {
        assert!(
            history[&e.booking_id].contains(&state(e.booking.value())),
            "event {} shows a state booking {} never had",
            e.id,
            e.booking_id
        );
    }
    // One more event whose every attempt fails: certainly a dead letter.
    t.sim.create_booking();
    t.poll().await;
    t.receiver.fail_next(3, 500);
    for _ in 0..4 {
        clock += 2 * HOUR_MS;
        t.app.deliver_due_at(clock).await.unwrap();
    }

    let events = t.app.store().events().unwrap();
    assert!(
        events.len() > 20,
        "the scenario produced {} events",
        events.len()
    );
    let mut state_of: HashMap<u64, DeliveryState> = HashMap::new();
    for e in &events {
        let d = t.app.store().deliveries_of(e.seq).unwrap();
        assert_eq!(d.len(), 1);
        assert_ne!(
            d[0].state,
            DeliveryState::Pending,
            "event {} still pending: {:?}",
            e.id,
            d[0]
        );
        state_of.insert(e.seq, d[0].state);
    }
    // What the receiver accepted: the first acceptance of each event id.
    let by_id: HashMap<&str, &pollhook::outbox::Event> =
        events.iter().map(|e| (e.id.as_str(), e)).collect();
    let mut first_seen: Vec<&pollhook::outbox::Event> = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for r in t.receiver.accepted() {
        assert_eq!(r.signature_valid, Some(true));
        let id = r.header("webhook-id").unwrap();
        let ev = by_id
            .get(id)
            .unwrap_or_else(|| panic!("{id} was delivered but never detected"));
        if seen.insert(id.to_string()) {
            first_seen.push(ev);
        }
    }
    for e in &events {
        let delivered = seen.contains(&e.id);
        match state_of[&e.seq] {
            DeliveryState::Delivered => {
                assert!(delivered, "{} marked delivered but not received", e.id)
            }
            DeliveryState::Dead => {}
            DeliveryState::Pending => unreachable!(),
        }
    }
    // Per booking, deliveries arrived in detection order.
    let mut last_seq: BTreeMap<&str, u64> = BTreeMap::new();
    for e in first_seen {
        if let Some(prev) = last_seq.insert(&e.booking_id, e.seq) {
            assert!(
                prev < e.seq,
                "booking {} out of order: {prev} then {}",
                e.booking_id,
                e.seq
            );
        }
    }
    let dead = events
        .iter()
        .filter(|e| state_of[&e.seq] == DeliveryState::Dead)
        .count();
    assert_eq!(t.app.store().counts().unwrap().dead as usize, dead);
    let failed = t
        .receiver
        .received()
        .iter()
        .filter(|r| !r.is_accepted())
        .count();
    eprintln!(
        "chaos: {} events, {} delivered, {dead} dead, {failed} failed requests, 410 sent: {gone_once}, {failed_polls} failed polls; lost 0, invented 0, reordered 0",
        events.len(),
        seen.len()
    );
    assert!(failed_polls > 3, "the source did misbehave");
    assert!(failed > 10, "the receiver did misbehave");
    assert!(gone_once);
    assert!(dead > 0 && seen.len() > dead, "both outcomes exercised");
}
