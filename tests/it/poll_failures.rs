//! A poll is all pages or nothing: broken pages, errors and malformed records commit nothing,
//! and the next good poll sees each change exactly once.

use crate::helpers::*;

async fn baseline_with_pages() -> TestApp {
    let t = spawn_app(Options {
        initial_bookings: 5,
        page_size: 2,
        ..Options::default()
    })
    .await;
    t.poll().await;
    t
}

async fn assert_nothing_committed_then_recovers(t: &TestApp, id: u64, before: &serde_json::Value) {
    // Nothing stored changed, nothing was queued.
    let stored = t
        .app
        .store()
        .booking("hotel", &id.to_string())
        .unwrap()
        .unwrap();
    assert_eq!(&stored.doc, before);
    assert!(t.app.store().events().unwrap().is_empty());
    assert_eq!(
        t.app.store().source_state("hotel").unwrap().unwrap().polls,
        1
    );
    // The next good poll detects the change exactly once.
    assert_eq!(t.poll().await, 1);
    assert_eq!(t.poll().await, 0);
}

fn doc_of(t: &TestApp, id: u64) -> serde_json::Value {
    t.app
        .store()
        .booking("hotel", &id.to_string())
        .unwrap()
        .unwrap()
        .doc
}

#[tokio::test]
async fn a_malformed_page_commits_nothing() {
    let t = baseline_with_pages().await;
    let id = t.sim.bookings()[0]["id"].as_u64().unwrap();
    let before = doc_of(&t, id);
    t.sim.modify_booking(id);
    t.sim.corrupt_page(2);
    let e = t.app.poll_now("hotel").await.unwrap_err();
    assert!(e.to_string().contains("page 2"), "{e}");
    assert!(e.to_string().contains("not valid JSON"), "{e}");
    assert_nothing_committed_then_recovers(&t, id, &before).await;
}

#[tokio::test]
async fn a_record_without_id_commits_nothing() {
    let t = baseline_with_pages().await;
    let id = t.sim.bookings()[0]["id"].as_u64().unwrap();
    let before = doc_of(&t, id);
    t.sim.modify_booking(id);
    t.sim.drop_id_on_page(3);
    let e = t.app.poll_now("hotel").await.unwrap_err();
    assert!(e.to_string().contains("has no id"), "{e}");
    assert_nothing_committed_then_recovers(&t, id, &before).await;
}

#[tokio::test]
async fn an_error_status_on_a_later_page_commits_nothing() {
    let t = baseline_with_pages().await;
    let id = t.sim.bookings()[0]["id"].as_u64().unwrap();
    let before = doc_of(&t, id);
    t.sim.modify_booking(id);
    // More failures than the in-cycle retries (3): the cycle is abandoned.
    t.sim.fail_next(4, 500);
    let e = t.app.poll_now("hotel").await.unwrap_err();
    assert!(e.to_string().contains("HTTP 500"), "{e}");
    assert_nothing_committed_then_recovers(&t, id, &before).await;
}

#[tokio::test]
async fn an_oversized_response_is_an_error_not_an_oom() {
    let t = spawn_app(Options {
        source_extra: "max_response_bytes = 200".into(),
        ..Options::default()
    })
    .await;
    let e = t.app.poll_now("hotel").await.unwrap_err();
    assert!(e.to_string().contains("max_response_bytes"), "{e}");
    assert!(t.app.store().source_state("hotel").unwrap().is_none());
}

#[tokio::test]
async fn an_unreachable_source_commits_nothing() {
    let t = spawn_app(Options::default()).await;
    t.sim.shutdown();
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    let e = t.app.poll_now("hotel").await.unwrap_err();
    assert!(e.to_string().contains("failed"), "{e}");
    assert!(t.app.store().source_state("hotel").unwrap().is_none());
}

#[tokio::test]
async fn max_pages_is_a_safety_valve() {
    let t = spawn_app(Options {
        initial_bookings: 5,
        page_size: 1,
        source_extra: "max_pages = 3".into(),
        ..Options::default()
    })
    .await;
    let e = t.app.poll_now("hotel").await.unwrap_err();
    assert!(e.to_string().contains("max_pages"), "{e}");
}

#[tokio::test]
async fn a_transient_error_is_retried_within_the_cycle() {
    let t = baseline_with_pages().await;
    let id = t.sim.bookings()[0]["id"].as_u64().unwrap();
    t.sim.modify_booking(id);
    let before = t.sim.requests();
    t.sim.fail_next(2, 503);
    assert_eq!(t.poll().await, 1);
    assert_eq!(
        t.sim.requests() - before,
        3 + 2,
        "three pages plus two retries"
    );
}

#[tokio::test]
async fn paging_can_be_driven_by_templates_alone() {
    let t = spawn_app(Options {
        initial_bookings: 5,
        page_size: 20,
        ..Options::default()
    })
    .await;
    let toml = t
        .toml
        .replace(
            "[sources.hotel.pagination]\nstyle = \"next_link\"\nnext = \"/pages/nextPageLink\"",
            "query = { page = \"{{ page }}\", perPage = \"{{ limit }}\" }\n[sources.hotel.pagination]\nstyle = \"page\"\nparam = \"\"\nsize_param = \"\"\nsize = 2\nhas_more = \"/pages/nextPageExists\"",
        );
    assert!(toml.contains("param = \"\""));
    drop(t.app);
    let app = crate::helpers::build(&toml);
    let r = app.poll_now("hotel").await.unwrap();
    assert_eq!((r.pages, r.bookings), (3, 5));
}

#[tokio::test]
async fn a_lookup_answered_with_an_error_body_is_not_a_cancellation() {
    // A lookup service that answers HTTP 200 with an error document and no bookings member.
    let app = axum::Router::new().fallback(|| async { r#"{"error": "token expired"}"# });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    let t = spawn_app(Options {
        source_extra: format!(
            "on_disappear = \"lookup\"\n[sources.hotel.lookup]\nurl = \"http://{addr}/lookup\"\nquery = {{ id = \"{{{{ id }}}}\" }}"
        ),
        ..Options::default()
    })
    .await;
    t.poll().await;
    let id = t.sim.bookings()[0]["id"].as_u64().unwrap();
    t.sim.remove_booking(id);
    let e = t.app.poll_now("hotel").await.unwrap_err();
    assert!(e.to_string().contains("items"), "{e}");
    assert!(
        t.app.store().events().unwrap().is_empty(),
        "nothing invented"
    );
    assert!(
        !t.app
            .store()
            .booking("hotel", &id.to_string())
            .unwrap()
            .unwrap()
            .cancelled
    );
}

#[tokio::test]
async fn a_booking_shifted_onto_the_next_page_is_counted_once() {
    // Offset paging while the data shifts: booking 2 appears at the end of page 1 and again at
    // the start of page 2. It is one booking, its later copy wins.
    use axum::extract::Query;
    use std::collections::HashMap;
    let app = axum::Router::new().fallback(|Query(q): Query<HashMap<String, String>>| async move {
        let body = match q.get("offset").map(String::as_str) {
            Some("0") => r#"{"data": [{"id": 1, "v": "a"}, {"id": 2, "v": "old"}]}"#,
            Some("2") => r#"{"data": [{"id": 2, "v": "new"}, {"id": 3, "v": "c"}]}"#,
            _ => r#"{"data": []}"#,
        };
        ([("content-type", "application/json")], body)
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    let dir = tempfile::tempdir().unwrap();
    let toml = format!(
        r#"
[store]
path = "{store}"
[sources.shifty]
url = "http://{addr}/b"
every = "1h"
items = "/data"
first_poll = "emit_new"
[sources.shifty.pagination]
style = "offset"
size = 2
"#,
        store = dir.path().join("s.redb").display()
    );
    let app = crate::helpers::build(&toml);
    let r = app.poll_now("shifty").await.unwrap();
    assert_eq!(r.bookings, 3);
    let ids: Vec<&str> = r.events.iter().map(|e| e.booking_id.as_str()).collect();
    assert_eq!(ids, ["1", "2", "3"]);
    assert_eq!(r.events[1].booking["v"], "new");
}

#[tokio::test]
async fn a_query_secret_never_appears_in_a_poll_error() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("key"), "s3cr3t-query-key").unwrap();
    let t = spawn_app(Options {
        source_extra: format!(
            "auth = {{ type = \"query\", name = \"key\", secret = {{ file = \"{}\" }} }}",
            dir.path().join("key").display()
        ),
        ..Options::default()
    })
    .await;
    t.sim.fail_next(10, 500);
    let e = t.app.poll_now("hotel").await.unwrap_err().to_string();
    assert!(e.contains("HTTP 500"), "{e}");
    assert!(!e.contains("s3cr3t"), "the secret leaked into: {e}");
    t.sim.shutdown();
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    let e = t.app.poll_now("hotel").await.unwrap_err().to_string();
    assert!(!e.contains("s3cr3t"), "the secret leaked into: {e}");
    assert!(!format!("{:?}", t.app.config()).contains("s3cr3t"));
}
