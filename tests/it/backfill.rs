//! Backfill: one event per known booking for one endpoint only (`new` for active, `cancel` for
//! cancelled), marked as a backfill in the v2 envelope; through the booking's lane, so the
//! order per booking holds against live changes; a chunk per transaction; resumed after a
//! restart without repeating a booking; a second backfill of a running endpoint refused (the
//! app, the admin route, the status page).

use std::collections::BTreeMap;

use serde_json::Value;
use tokio_util::sync::CancellationToken;

use crate::helpers::*;

fn two_endpoints(initial_bookings: usize) -> Options {
    Options {
        initial_bookings,
        endpoints: r#"
[endpoints.crm]
url = "{RECEIVER}/crm"
format = "v2"
secrets = [{ file = "{SECRET_FILE}" }]
jitter = 0.0

[endpoints.erp]
url = "{RECEIVER}/erp"
format = "v2"
secrets = [{ file = "{SECRET_FILE}" }]
jitter = 0.0
"#
        .into(),
        ..Options::default()
    }
}

fn ids(t: &TestApp) -> Vec<u64> {
    t.sim
        .bookings()
        .iter()
        .map(|b| b["id"].as_u64().unwrap())
        .collect()
}

/// The JSON bodies the receiver accepted on `path`, in arrival order.
fn bodies(t: &TestApp, path: &str) -> Vec<Value> {
    t.accepted()
        .iter()
        .filter(|r| r.path == path)
        .map(|r| r.json().unwrap())
        .collect()
}

#[tokio::test]
async fn one_event_per_known_booking_goes_to_that_endpoint_only_marked_as_backfill() {
    let t = spawn_app(two_endpoints(5)).await;
    t.poll().await;
    let ids = ids(&t);
    assert!(t.sim.cancel_booking(ids[0]));
    assert_eq!(t.poll().await, 1);
    t.deliver().await;
    assert_eq!((bodies(&t, "/crm").len(), bodies(&t, "/erp").len()), (1, 1));

    let b = t.app.backfill("erp", None).await.unwrap();
    assert_eq!(b.sources, ["hotel"]);
    t.app.backfill_until_done().await.unwrap();
    t.deliver().await;
    assert_eq!(
        bodies(&t, "/crm").len(),
        1,
        "the other endpoint gets nothing"
    );
    let erp = bodies(&t, "/erp");
    assert_eq!(erp.len(), 1 + 5);
    let mut seen = BTreeMap::new();
    for body in &erp[1..] {
        assert_eq!(body["backfill"], true, "{body}");
        let id = body["booking_id"].as_str().unwrap().to_string();
        assert!(
            seen.insert(id, body["status"].clone()).is_none(),
            "once each"
        );
    }
    assert!(
        erp[0].get("backfill").is_none(),
        "a detected change is not marked"
    );
    for id in &ids {
        let want = if *id == ids[0] { "cancel" } else { "new" };
        assert_eq!(seen[&id.to_string()], want, "booking {id}");
    }
    let cancelled = erp[1..].iter().find(|b| b["status"] == "cancel").unwrap();
    assert_eq!(cancelled["type"], "booking.cancelled");
    assert_eq!(t.app.backfills().await.unwrap(), [], "finished");
}

#[tokio::test]
async fn backfill_events_keep_per_booking_order_against_live_changes() {
    let t = spawn_app(two_endpoints(5)).await;
    t.poll().await;
    let ids = ids(&t);
    t.app.backfill("erp", Some("hotel")).await.unwrap();
    // One chunk of two bookings (the lowest ids), then live changes: one to a booking already
    // backfilled, one to a booking not reached yet.
    let b = t
        .app
        .store()
        .backfill_chunk("erp", 2, now_ms())
        .unwrap()
        .unwrap();
    assert_eq!(b.enqueued, 2);
    let pending = t
        .app
        .store()
        .endpoint_counts(&["erp".to_string()], 1000)
        .unwrap();
    assert_eq!(pending[0].pending, 2, "a chunk enqueues at most its size");
    assert!(t.sim.modify_booking(ids[0]));
    assert!(t.sim.modify_booking(ids[4]));
    assert_eq!(t.poll().await, 2);
    t.app.backfill_until_done().await.unwrap();
    t.deliver().await;

    let erp = bodies(&t, "/erp");
    assert_eq!(erp.len(), 5 + 2);
    let of = |id: u64| -> Vec<&Value> {
        erp.iter()
            .filter(|b| b["booking_id"].as_str() == Some(id.to_string().as_str()))
            .collect()
    };
    // Backfilled first, then changed: the backfill event goes out first.
    let first = of(ids[0]);
    assert_eq!(first.len(), 2);
    assert_eq!(first[0]["backfill"], true);
    assert_eq!(first[1]["status"], "modify");
    assert!(first[0]["sequence"].as_u64() < first[1]["sequence"].as_u64());
    // Changed before the backfill reached it: the change first, then its state after it.
    let last = of(ids[4]);
    assert_eq!(last.len(), 2);
    assert_eq!(last[0]["status"], "modify");
    assert_eq!(last[1]["backfill"], true);
    assert_eq!(
        last[1]["booking"], last[0]["booking"],
        "the backfill carries the state after the change"
    );
    // Either way the receiver ends with every booking as the source has it.
    for id in &ids {
        let latest = of(*id).last().unwrap()["booking"].clone();
        let now = t
            .sim
            .bookings()
            .into_iter()
            .find(|b| b["id"] == *id)
            .unwrap();
        assert_eq!(latest, now, "booking {id}");
    }
}

#[tokio::test]
async fn a_backfill_resumes_after_a_restart_without_repeating_a_booking() {
    let t = spawn_app(two_endpoints(5)).await;
    t.poll().await;
    t.app.backfill("erp", None).await.unwrap();
    t.app
        .store()
        .backfill_chunk("erp", 2, now_ms())
        .unwrap()
        .unwrap();
    // Stop (nothing delivered yet) and start again over the same state file.
    let TestApp {
        app,
        sim,
        receiver,
        dir,
        toml,
    } = t;
    drop(app);
    let t = TestApp {
        app: build(&toml),
        sim,
        receiver,
        dir,
        toml,
    };
    let running = t.app.backfills().await.unwrap();
    assert_eq!(running.len(), 1);
    assert_eq!(running[0].enqueued, 2, "the committed chunk is remembered");
    // The daemon's own loop picks it up.
    let cancel = CancellationToken::new();
    let run = tokio::spawn({
        let (app, c) = (t.app.clone(), cancel.clone());
        async move { app.run(c).await }
    });
    t.receiver
        .wait_for_accepted(5, std::time::Duration::from_secs(30))
        .await;
    cancel.cancel();
    run.await.unwrap();
    let erp = bodies(&t, "/erp");
    let mut booked: Vec<String> = erp
        .iter()
        .map(|b| b["booking_id"].as_str().unwrap().to_string())
        .collect();
    booked.sort();
    let mut want: Vec<String> = ids(&t).iter().map(u64::to_string).collect();
    want.sort();
    assert_eq!(booked, want, "every booking once");
    assert!(t.app.backfills().await.unwrap().is_empty());
}

#[tokio::test]
async fn a_second_backfill_of_a_running_endpoint_is_refused() {
    let t = spawn_app(two_endpoints(3)).await;
    t.poll().await;
    let cancel = CancellationToken::new();
    let addr = start_admin(&t.app, &cancel).await;
    let post = |path: String| async move {
        raw_http(
            addr,
            &format!("POST {path} HTTP/1.1\r\nHost: {addr}\r\nX-Pollhook: 1\r\nContent-Length: 0"),
        )
        .await
    };
    let (code, body) = post("/endpoints/erp/backfill?source=hotel".into()).await;
    assert_eq!(code, 202, "{body}");
    let (code, body) = post("/endpoints/erp/backfill".into()).await;
    assert_eq!(code, 409, "{body}");
    assert!(body.contains("already running"), "{body}");
    let e = t.app.backfill("erp", None).await.unwrap_err();
    assert!(e.to_string().contains("`erp`"), "{e}");
    // Another endpoint may be backfilled meanwhile; unknown names are refused with the valid ones.
    let (code, _) = post("/endpoints/crm/backfill".into()).await;
    assert_eq!(code, 202);
    let (code, body) = post("/endpoints/nope/backfill".into()).await;
    assert_eq!(code, 404);
    assert!(body.contains("crm, erp"), "{body}");
    let (code, body) = post("/endpoints/erp/backfill?source=nope".into()).await;
    assert_eq!(code, 404);
    assert!(body.contains("configured sources: hotel"), "{body}");
    // Without the header, a cross-site request cannot start one.
    let (code, _) = raw_http(
        addr,
        &format!("POST /endpoints/erp/backfill HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0"),
    )
    .await;
    assert_eq!(code, 403);

    // The status page shows the progress instead of the button.
    let html = reqwest::get(format!("http://{addr}/?refresh=0"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        html.contains("backfill running: 0 events enqueued"),
        "{html}"
    );
    assert!(!html.contains(r#"data-post="/endpoints/erp/backfill""#));

    t.app.backfill_until_done().await.unwrap();
    let (code, body) = post("/endpoints/erp/backfill".into()).await;
    assert_eq!(code, 202, "once finished it may run again: {body}");
    t.app.backfill_until_done().await.unwrap();
    let html = reqwest::get(format!("http://{addr}/"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        html.contains(r#"data-post="/endpoints/erp/backfill""#),
        "the button is back"
    );
}
