//! Receivers that fail: retries with the same webhook-id, dead letters and replay, per-booking
//! order under failure, timeouts, redirects and Retry-After.

use std::time::Duration;

use pollhook::outbox::DeliveryState;

use crate::helpers::*;

#[tokio::test]
async fn a_failing_receiver_gets_the_event_once_it_recovers_with_the_same_id() {
    let t = spawn_app(Options::default()).await;
    t.poll().await;
    t.sim.create_booking();
    t.poll().await;
    t.receiver.fail_next(3, 500);
    let start = now_ms();
    // Attempt 1 fails now; the next attempts are not due until their delay has passed.
    let r = t.app.deliver_due_at(start).await.unwrap();
    assert_eq!((r.attempted, r.retrying), (1, 1));
    assert_eq!(
        t.app.deliver_due_at(start).await.unwrap().attempted,
        0,
        "not due yet"
    );
    // Move the clock forward instead of sleeping.
    for hour in 1..=3 {
        t.app.deliver_due_at(start + hour * HOUR_MS).await.unwrap();
    }
    let all = t.receiver.received();
    assert_eq!(all.len(), 4);
    assert_eq!(all.iter().filter(|r| r.is_accepted()).count(), 1);
    let ids: Vec<&str> = all
        .iter()
        .map(|r| r.header("webhook-id").unwrap())
        .collect();
    assert!(ids.iter().all(|i| *i == ids[0]), "{ids:?}");
    for r in &all {
        assert_eq!(r.signature_valid, Some(true));
    }
    let ev = &t.app.store().events().unwrap()[0];
    let d = &t.app.store().deliveries_of(ev.seq).unwrap()[0];
    assert_eq!(d.state, DeliveryState::Delivered);
    assert_eq!(d.attempts, 4);
    let statuses: Vec<Option<u16>> = d.history.iter().map(|a| a.status).collect();
    assert_eq!(statuses, [Some(500), Some(500), Some(500), Some(200)]);
}

#[tokio::test]
async fn exhausted_retries_dead_letter_and_replay_keeps_the_event_id() {
    let t = spawn_app(Options::default()).await;
    t.poll().await;
    let id = t.sim.create_booking();
    t.poll().await;
    t.receiver.fail_next(100, 503);
    let start = now_ms();
    for hour in 0..6 {
        t.app.deliver_due_at(start + hour * HOUR_MS).await.unwrap();
    }
    assert_eq!(
        t.receiver.received().len(),
        4,
        "the schedule has four attempts"
    );
    assert_eq!(t.app.store().counts().unwrap().dead, 1);
    let dead = t
        .app
        .store()
        .deliveries_in(DeliveryState::Dead, 10)
        .unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].history.len(), 4);

    // The booking's next event is not stuck behind the dead letter.
    t.sim.modify_booking(id);
    t.poll().await;
    t.receiver.fail_next(0, 200);
    t.deliver().await;
    assert_eq!(t.accepted().len(), 1);
    assert_eq!(t.accepted()[0].json().unwrap()["status"], "modify");

    // Replay: same event id as the attempts that failed.
    let first_id = t.receiver.received()[0]
        .header("webhook-id")
        .unwrap()
        .to_string();
    let sel = pollhook::store::ReplaySelector::DeadOf {
        endpoint: "crm".into(),
    };
    assert_eq!(t.app.store().replay(&sel, now_ms()).unwrap(), 1);
    t.deliver().await;
    let last = t.accepted().pop().unwrap();
    assert_eq!(last.header("webhook-id"), Some(first_id.as_str()));
    assert_eq!(t.app.store().counts().unwrap().dead, 0);
}

#[tokio::test]
async fn one_failing_booking_keeps_its_order_and_does_not_hold_up_others() {
    let t = spawn_app(Options::default()).await;
    t.poll().await;
    let a = t.sim.bookings()[0]["id"].as_u64().unwrap();
    t.sim.modify_booking(a);
    t.poll().await;
    let start = now_ms();
    t.receiver.fail_next(1, 500);
    let r = t.app.deliver_due_at(start).await.unwrap();
    assert_eq!(r.retrying, 1, "A's first modify failed");

    // A changes again and B is created; B goes out now, A's second modify waits for its first.
    t.sim.modify_booking(a);
    let b = t.sim.create_booking();
    assert_eq!(t.poll().await, 2);
    let r = t.app.deliver_due_at(now_ms()).await.unwrap();
    assert_eq!((r.attempted, r.delivered), (1, 1));
    assert_eq!(t.accepted()[0].json().unwrap()["booking_id"], b.to_string());

    // Once A's retry is due, both its events go out in detection order.
    t.app.deliver_due_at(start + HOUR_MS).await.unwrap();
    t.app.deliver_due_at(start + HOUR_MS).await.unwrap();
    let a_seqs: Vec<u64> = t
        .accepted()
        .iter()
        .map(|r| r.json().unwrap())
        .filter(|j| j["booking_id"].as_str() == Some(a.to_string().as_str()))
        .map(|j| j["sequence"].as_u64().unwrap())
        .collect();
    assert_eq!(a_seqs.len(), 2);
    assert!(a_seqs[0] < a_seqs[1]);
}

#[tokio::test]
async fn timeouts_redirects_and_connection_errors_are_retried() {
    let t = spawn_app(Options {
        endpoints: r#"
[endpoints.crm]
url = "{RECEIVER}/crm"
timeout = "300ms"
retry_schedule = ["0s", "1s", "1s", "1s"]
jitter = 0.0
"#
        .into(),
        ..Options::default()
    })
    .await;
    t.poll().await;
    t.sim.create_booking();
    t.poll().await;
    t.receiver.delay_next(1, Duration::from_secs(2));
    let start = now_ms();
    assert_eq!(t.app.deliver_due_at(start).await.unwrap().retrying, 1);
    t.receiver.fail_next(1, 302);
    assert_eq!(
        t.app
            .deliver_due_at(start + HOUR_MS)
            .await
            .unwrap()
            .retrying,
        1
    );
    t.app.deliver_due_at(start + 2 * HOUR_MS).await.unwrap();
    let ev = &t.app.store().events().unwrap()[0];
    let d = &t.app.store().deliveries_of(ev.seq).unwrap()[0];
    assert_eq!(d.state, DeliveryState::Delivered);
    assert!(
        d.history[0].error.as_deref().unwrap().contains("timed out"),
        "{:?}",
        d.history[0]
    );
    assert_eq!(
        d.history[1].status,
        Some(302),
        "3xx is a failure and is not followed"
    );
    assert_eq!(d.history[2].status, Some(200));

    // Connection refused: the receiver is gone.
    t.sim.create_booking();
    t.poll().await;
    t.receiver.shutdown();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let r = t.app.deliver_due_at(now_ms()).await.unwrap();
    assert_eq!(r.retrying, 1);
}

#[tokio::test]
async fn retry_after_on_429_is_honoured() {
    let t = spawn_app(Options::default()).await;
    t.poll().await;
    t.sim.create_booking();
    t.poll().await;
    t.receiver.set_retry_after(Some(120));
    t.receiver.fail_next(1, 429);
    let start = now_ms();
    t.app.deliver_due_at(start).await.unwrap();
    let ev = &t.app.store().events().unwrap()[0];
    let d = &t.app.store().deliveries_of(ev.seq).unwrap()[0];
    // The schedule says 5s; the receiver asked for 120s.
    assert!(
        d.next_ms >= start + 119_000,
        "next {} start {start}",
        d.next_ms
    );
    assert_eq!(
        t.app
            .deliver_due_at(start + 60_000)
            .await
            .unwrap()
            .attempted,
        0
    );
    assert_eq!(
        t.app
            .deliver_due_at(start + 121_000)
            .await
            .unwrap()
            .delivered,
        1
    );
}

#[tokio::test]
async fn the_first_schedule_entry_delays_the_first_attempt() {
    let t = spawn_app(Options {
        endpoints: r#"
[endpoints.crm]
url = "{RECEIVER}/crm"
retry_schedule = ["30s", "1s"]
jitter = 0.0
"#
        .into(),
        ..Options::default()
    })
    .await;
    t.poll().await;
    let id = t.sim.create_booking();
    t.poll().await;
    let start = t.app.store().events().unwrap()[0].detected_ms;
    t.sim.modify_booking(id);
    t.poll().await;
    assert_eq!(
        t.app.deliver_due_at(start + 1_000).await.unwrap().attempted,
        0,
        "not before 30s"
    );
    assert_eq!(
        t.app
            .deliver_due_at(start + 31_000)
            .await
            .unwrap()
            .delivered,
        1
    );
    // The next event of the booking had its own 30 s, already past: it goes right after.
    assert_eq!(
        t.app
            .deliver_due_at(start + 31_000)
            .await
            .unwrap()
            .delivered,
        1
    );
    let kinds: Vec<String> = t
        .accepted()
        .iter()
        .map(|r| r.json().unwrap()["status"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(kinds, ["new", "modify"]);
}
