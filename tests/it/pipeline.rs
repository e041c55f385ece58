//! The happy path: created, modified, cancelled at the API arrive as new, modify, cancel, in
//! order, in v1 and v2, signed so that the official library accepts them.

use crate::helpers::*;

#[tokio::test]
async fn v2_new_modify_cancel_arrive_in_order_with_valid_signatures() {
    let t = spawn_app(Options::default()).await;
    // The first poll records a baseline and sends nothing.
    assert_eq!(t.poll().await, 0);
    t.deliver().await;
    assert!(t.receiver.received().is_empty());

    let id = t.sim.create_booking();
    assert_eq!(t.poll().await, 1);
    t.deliver().await;
    assert!(t.sim.modify_booking(id));
    assert_eq!(t.poll().await, 1);
    t.deliver().await;
    assert!(t.sim.cancel_booking(id));
    assert_eq!(t.poll().await, 1);
    t.deliver().await;

    let got = t.accepted();
    assert_eq!(got.len(), 3);
    let bodies: Vec<serde_json::Value> = got.iter().map(|r| r.json().unwrap()).collect();
    let statuses: Vec<&str> = bodies
        .iter()
        .map(|b| b["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses, ["new", "modify", "cancel"]);
    let types: Vec<&str> = bodies.iter().map(|b| b["type"].as_str().unwrap()).collect();
    assert_eq!(
        types,
        ["booking.created", "booking.modified", "booking.cancelled"]
    );
    for (r, b) in got.iter().zip(&bodies) {
        assert_eq!(r.method, "POST");
        assert_eq!(r.path, "/crm");
        assert_eq!(r.header("content-type"), Some("application/json"));
        assert!(r.header("user-agent").unwrap().starts_with("pollhook/"));
        assert_eq!(r.signature_valid, Some(true));
        verify_with_official_library(r);
        assert_eq!(r.header("webhook-id").unwrap(), b["id"].as_str().unwrap());
        assert_eq!(b["booking_id"], id.to_string());
        assert_eq!(b["source"], "hotel");
        assert_eq!(b["booking"]["id"], id);
        assert!(b["detected_at"].as_str().unwrap().ends_with('Z'));
    }
    // Modify carries the changed fields, but not the ignored modifiedTime.
    let changes = bodies[1]["changes"].as_array().unwrap();
    assert!(!changes.is_empty());
    assert!(changes.iter().all(|c| c["path"] != "/modifiedTime"));
    assert_eq!(bodies[2]["changes"][0]["path"], "/status");
    assert_eq!(bodies[2]["changes"][0]["new"], "cancelled");
    // Sequence numbers increase per booking.
    let seqs: Vec<u64> = bodies
        .iter()
        .map(|b| b["sequence"].as_u64().unwrap())
        .collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]));
}

#[tokio::test]
async fn v1_pings_carry_bookid_and_status_and_keep_the_existing_query() {
    let t = spawn_app(Options {
        endpoints: r#"
[endpoints.beds]
url = "{RECEIVER}/notify?propkey=a%26b"
format = "v1"
secrets = [{ file = "{SECRET_FILE}" }]
"#
        .into(),
        ..Options::default()
    })
    .await;
    t.poll().await;
    let id = t.sim.create_booking();
    t.poll().await;
    t.sim.modify_booking(id);
    t.poll().await;
    t.sim.cancel_booking(id);
    t.poll().await;
    t.deliver().await;
    let got = t.accepted();
    let seen: Vec<(String, String)> = got
        .iter()
        .map(|r| {
            (
                r.query_param("bookid").unwrap().to_string(),
                r.query_param("status").unwrap().to_string(),
            )
        })
        .collect();
    let id = id.to_string();
    assert_eq!(
        seen,
        [
            (id.clone(), "new".to_string()),
            (id.clone(), "modify".into()),
            (id, "cancel".into())
        ]
    );
    for r in &got {
        assert_eq!(r.method, "GET");
        assert_eq!(r.path, "/notify");
        assert_eq!(r.query_param("propkey"), Some("a&b"));
        assert!(r.body.is_empty());
        assert_eq!(r.signature_valid, Some(true));
        verify_with_official_library(r);
    }
}

#[tokio::test]
async fn every_endpoint_gets_its_own_copy_filtered_by_kind() {
    let t = spawn_app(Options {
        endpoints: r#"
[endpoints.all]
url = "{RECEIVER}/all"
[endpoints.cancels]
url = "{RECEIVER}/cancels"
format = "v1"
events = ["cancel"]
"#
        .into(),
        ..Options::default()
    })
    .await;
    t.poll().await;
    let id = t.sim.create_booking();
    t.poll().await;
    t.sim.cancel_booking(id);
    t.poll().await;
    t.deliver().await;
    let got = t.accepted();
    let all: Vec<_> = got.iter().filter(|r| r.path == "/all").collect();
    let cancels: Vec<_> = got.iter().filter(|r| r.path == "/cancels").collect();
    assert_eq!(all.len(), 2);
    assert_eq!(cancels.len(), 1);
    assert_eq!(cancels[0].query_param("status"), Some("cancel"));
    // Same event, same id at both endpoints.
    assert_eq!(all[1].header("webhook-id"), cancels[0].header("webhook-id"));
    // No secret configured: no signature header.
    assert!(all[0].header("webhook-signature").is_none());
    assert!(all[0].header("webhook-id").is_some());
}

#[tokio::test]
async fn noise_only_changes_and_unchanged_polls_emit_nothing() {
    let t = spawn_app(Options::default()).await;
    t.poll().await;
    let first = t.sim.bookings()[0]["id"].as_u64().unwrap();
    assert!(t.sim.touch_booking(first));
    assert_eq!(t.poll().await, 0, "only modifiedTime changed");
    assert_eq!(t.poll().await, 0);
    assert!(t.app.store().events().unwrap().is_empty());
}

#[tokio::test]
async fn reactivation_is_a_modify() {
    let t = spawn_app(Options::default()).await;
    t.poll().await;
    let id = t.sim.bookings()[0]["id"].as_u64().unwrap();
    t.sim.cancel_booking(id);
    t.poll().await;
    t.sim.reactivate_booking(id);
    t.poll().await;
    let kinds: Vec<&str> = t
        .app
        .store()
        .events()
        .unwrap()
        .iter()
        .map(|e| e.kind.status_word())
        .collect();
    assert_eq!(kinds, ["cancel", "modify"]);
}

#[tokio::test]
async fn emit_new_on_first_poll_when_configured() {
    let t = spawn_app(Options {
        initial_bookings: 5,
        source_extra: "first_poll = \"emit_new\"".into(),
        ..Options::default()
    })
    .await;
    assert_eq!(t.poll().await, 5);
    t.deliver().await;
    assert_eq!(t.accepted().len(), 5);
}

#[tokio::test]
async fn disappearance_is_ignored_by_default() {
    let t = spawn_app(Options::default()).await;
    t.poll().await;
    let id = t.sim.bookings()[0]["id"].as_u64().unwrap();
    t.sim.remove_booking(id);
    assert_eq!(t.poll().await, 0);
}

#[tokio::test]
async fn disappearance_cancels_when_configured_and_the_guard_holds_a_flood() {
    let t = spawn_app(Options {
        initial_bookings: 10,
        page_size: 4,
        source_extra: "on_disappear = \"cancel\"\nmax_disappear_share = 0.2".into(),
        ..Options::default()
    })
    .await;
    t.poll().await;
    let ids: Vec<u64> = t
        .sim
        .bookings()
        .iter()
        .map(|b| b["id"].as_u64().unwrap())
        .collect();
    // One disappearing booking is cancelled.
    t.sim.remove_booking(ids[0]);
    let r = t.app.poll_now("hotel").await.unwrap();
    assert_eq!(r.events.len(), 1);
    assert_eq!(r.events[0].kind.status_word(), "cancel");
    assert_eq!(r.events[0].booking_id, ids[0].to_string());
    // Gone stays gone: no second cancel.
    assert_eq!(t.poll().await, 0);
    // Five of the remaining nine vanish at once: held back, nothing emitted.
    for id in &ids[1..6] {
        t.sim.remove_booking(*id);
    }
    let r = t.app.poll_now("hotel").await.unwrap();
    assert_eq!(r.events.len(), 0);
    assert_eq!(r.held_back, 5);
    // They come back: nothing was invented in between.
    assert_eq!(t.app.store().events().unwrap().len(), 1);
}

#[tokio::test]
async fn a_booking_created_and_cancelled_between_polls_is_one_cancel() {
    let t = spawn_app(Options::default()).await;
    t.poll().await;
    let id = t.sim.create_booking();
    t.sim.cancel_booking(id);
    let r = t.app.poll_now("hotel").await.unwrap();
    assert_eq!(r.events.len(), 1);
    assert_eq!(r.events[0].kind.status_word(), "cancel");
}
