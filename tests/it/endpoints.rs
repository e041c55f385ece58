//! Endpoint behaviour: 410 disables until re-enabled, failing detection, receiver auth
//! (Basic, bearer, OAuth2 with a token refresh on 401), methods per kind, v1 parameter names,
//! replay through the admin API, retention, several sources per endpoint.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use pollhook::outbox::DeliveryState;
use tokio_util::sync::CancellationToken;

use crate::helpers::*;

/// Serves the admin API of `app` on 127.0.0.1:0; returns its base URL.
async fn serve_admin(app: &pollhook::App, cancel: &CancellationToken) -> String {
    serve_admin_task(app, cancel).await.0
}

async fn serve_admin_task(
    app: &pollhook::App,
    cancel: &CancellationToken,
) -> (String, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(pollhook::admin::serve(
        listener,
        app.clone(),
        cancel.clone(),
    ));
    (format!("http://{addr}"), task)
}

async fn post(url: &str) -> (u16, String) {
    let r = reqwest::Client::new()
        .post(url)
        .header("x-pollhook", "1")
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

async fn get_json(url: &str) -> serde_json::Value {
    reqwest::get(url).await.unwrap().json().await.unwrap()
}

#[tokio::test]
async fn gone_disables_the_endpoint_until_an_operator_re_enables_it() {
    let t = spawn_app(Options::default()).await;
    let cancel = CancellationToken::new();
    let (admin, admin_task) = serve_admin_task(&t.app, &cancel).await;
    t.poll().await;
    let id = t.sim.create_booking();
    t.poll().await;
    t.receiver.fail_next(1, 410);
    let start = now_ms();
    t.app.deliver_due_at(start).await.unwrap();
    let eps = get_json(&format!("{admin}/endpoints")).await;
    assert!(
        eps[0]["disabled"]["reason"]
            .as_str()
            .unwrap()
            .contains("410"),
        "{eps}"
    );
    let metrics = reqwest::get(format!("{admin}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("pollhook_endpoint_disabled{endpoint=\"crm\"} 1"),
        "{metrics}"
    );
    for line in [
        "pollhook_deliveries_total{endpoint=\"crm\",outcome=\"failed\"} 1",
        "pollhook_deliveries_total{endpoint=\"crm\",outcome=\"delivered\"} 0",
        "pollhook_events_detected_total{source=\"hotel\"} 1",
        "pollhook_source_last_success_timestamp_seconds{source=\"hotel\"} ",
    ] {
        assert!(metrics.contains(line), "{line} missing in\n{metrics}");
    }
    let eps = get_json(&format!("{admin}/endpoints")).await;
    assert_eq!(eps[0]["failed_attempts_total"], 1, "{eps}");

    // Events keep queueing; nothing is sent, nothing is dropped, even much later.
    t.sim.modify_booking(id);
    t.poll().await;
    assert_eq!(
        t.app
            .deliver_due_at(start + 10 * HOUR_MS)
            .await
            .unwrap()
            .attempted,
        0
    );
    assert_eq!(t.app.store().counts().unwrap().pending, 2);

    // The disabled state survives a restart.
    let TestApp {
        app,
        sim,
        receiver,
        dir,
        toml,
    } = t;
    cancel.cancel();
    admin_task.await.unwrap();
    drop(app);
    let app = crate::helpers::build(&toml);
    assert_eq!(
        app.deliver_due_at(start + 10 * HOUR_MS)
            .await
            .unwrap()
            .attempted,
        0
    );

    let cancel = CancellationToken::new();
    let admin = serve_admin(&app, &cancel).await;
    assert_eq!(post(&format!("{admin}/endpoints/nope/enable")).await.0, 404);
    assert_eq!(post(&format!("{admin}/endpoints/crm/enable")).await.0, 200);
    for _ in 0..3 {
        app.deliver_due().await.unwrap();
    }
    let statuses: Vec<String> = receiver
        .accepted()
        .iter()
        .map(|r| r.json().unwrap()["status"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(statuses, ["new", "modify"], "in order, nothing lost");
    drop((sim, dir));
}

#[tokio::test]
async fn an_endpoint_failing_for_longer_than_failing_after_is_reported() {
    let t = spawn_app(Options {
        endpoints: r#"
[endpoints.crm]
url = "{RECEIVER}/crm"
failing_after = "1ms"
retry_schedule = ["0s", "1s", "1s"]
"#
        .into(),
        ..Options::default()
    })
    .await;
    let cancel = CancellationToken::new();
    let admin = serve_admin(&t.app, &cancel).await;
    t.poll().await;
    t.sim.create_booking();
    t.poll().await;
    t.receiver.fail_next(2, 500);
    let start = now_ms();
    t.app.deliver_due_at(start).await.unwrap();
    t.app.deliver_due_at(start + HOUR_MS).await.unwrap();
    let eps = get_json(&format!("{admin}/endpoints")).await;
    assert_eq!(eps[0]["failing"], true, "{eps}");
    t.app.deliver_due_at(start + 2 * HOUR_MS).await.unwrap();
    let eps = get_json(&format!("{admin}/endpoints")).await;
    assert_eq!(eps[0]["failing"], false, "a success clears it: {eps}");
}

#[tokio::test]
async fn basic_and_bearer_auth_reach_the_receiver_and_methods_follow_the_kind() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("pw"), "s3cret\n").unwrap();
    std::fs::write(dir.path().join("tok"), "tok-123").unwrap();
    let t = spawn_app(Options {
        endpoints: format!(
            r#"
[endpoints.basic]
url = "{{RECEIVER}}/basic"
auth = {{ type = "basic", username = "hotel", secret = {{ file = "{pw}" }} }}
[endpoints.bearer]
url = "{{RECEIVER}}/bearer?x=1"
format = "v1"
bookid_param = "id"
status_param = "event"
auth = {{ type = "bearer", secret = {{ file = "{tok}" }} }}
[endpoints.bearer.methods]
cancel = "POST"
"#,
            pw = dir.path().join("pw").display(),
            tok = dir.path().join("tok").display()
        ),
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
    let basic: Vec<_> = got.iter().filter(|r| r.path == "/basic").collect();
    let bearer: Vec<_> = got.iter().filter(|r| r.path == "/bearer").collect();
    assert_eq!(basic.len(), 2);
    assert_eq!(
        basic[0].header("authorization"),
        Some("Basic aG90ZWw6czNjcmV0")
    );
    assert_eq!(bearer.len(), 2);
    assert_eq!(bearer[0].header("authorization"), Some("Bearer tok-123"));
    assert_eq!(bearer[0].method, "GET");
    assert_eq!(bearer[1].method, "POST", "cancel uses its own method");
    assert_eq!(bearer[0].query_param("id"), Some(id.to_string().as_str()));
    assert_eq!(bearer[1].query_param("event"), Some("cancel"));
    assert_eq!(bearer[0].query_param("x"), Some("1"));
    assert!(bearer[0].query_param("bookid").is_none());
}

/// A minimal OAuth2 token endpoint that counts the tokens it mints.
async fn token_server(minted: Arc<AtomicU32>) -> String {
    use axum::routing::post;
    let app = axum::Router::new().route(
        "/token",
        post(move |body: String| {
            let minted = minted.clone();
            async move {
                let ok = body.contains("grant_type=client_credentials")
                    && body.contains("client_id=pollhook")
                    && body.contains("client_secret=sh%21");
                if !ok {
                    return (axum::http::StatusCode::UNAUTHORIZED, String::new());
                }
                let n = minted.fetch_add(1, Ordering::SeqCst) + 1;
                (
                    axum::http::StatusCode::OK,
                    format!(
                        r#"{{"access_token":"at-{n}","token_type":"Bearer","expires_in":3600}}"#
                    ),
                )
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}/token")
}

#[tokio::test]
async fn oauth2_tokens_are_cached_persisted_and_refreshed_once_on_401() {
    let minted = Arc::new(AtomicU32::new(0));
    let token_url = token_server(minted.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("cs"), "sh!").unwrap();
    let t = spawn_app(Options {
        endpoints: format!(
            r#"
[endpoints.crm]
url = "{{RECEIVER}}/crm"
auth = {{ type = "oauth2", token_url = "{token_url}", client_id = "pollhook", secret = {{ file = "{cs}" }} }}
"#,
            cs = dir.path().join("cs").display()
        ),
        ..Options::default()
    })
    .await;
    t.poll().await;
    t.sim.create_booking();
    t.sim.create_booking();
    t.poll().await;
    t.deliver().await;
    assert_eq!(
        minted.load(Ordering::SeqCst),
        1,
        "one token for both deliveries"
    );
    assert!(
        t.accepted()
            .iter()
            .all(|r| r.header("authorization") == Some("Bearer at-1"))
    );

    // A restart reuses the persisted token.
    let TestApp {
        app,
        sim,
        receiver,
        dir: state,
        toml,
    } = t;
    drop(app);
    let app = crate::helpers::build(&toml);
    sim.create_booking();
    app.poll_now("hotel").await.unwrap();
    app.deliver_due().await.unwrap();
    assert_eq!(minted.load(Ordering::SeqCst), 1);

    // The receiver rejects the token once: a new one is minted and the same attempt succeeds.
    receiver.fail_next(1, 401);
    sim.create_booking();
    app.poll_now("hotel").await.unwrap();
    let r = app.deliver_due().await.unwrap();
    assert_eq!((r.attempted, r.delivered), (1, 1));
    assert_eq!(minted.load(Ordering::SeqCst), 2);
    assert_eq!(
        receiver.accepted().last().unwrap().header("authorization"),
        Some("Bearer at-2")
    );
    drop((sim, state));
}

#[tokio::test]
async fn replay_through_the_admin_api_keeps_event_ids() {
    let t = spawn_app(Options::default()).await;
    let cancel = CancellationToken::new();
    let admin = serve_admin(&t.app, &cancel).await;
    t.poll().await;
    let before = chrono::Utc::now();
    let a = t.sim.create_booking();
    t.poll().await;
    t.deliver().await;
    let first_id = t.accepted()[0].header("webhook-id").unwrap().to_string();

    // One event, again.
    let (code, body) = post(&format!("{admin}/events/{first_id}/replay")).await;
    assert_eq!((code, body.trim()), (200, r#"{"replayed":1}"#));
    t.deliver().await;
    assert_eq!(t.accepted().len(), 2);
    assert_eq!(
        t.accepted()[1].header("webhook-id"),
        Some(first_id.as_str())
    );

    // Dead letters of an endpoint.
    t.sim.modify_booking(a);
    t.poll().await;
    t.receiver.fail_next(100, 500);
    let start = now_ms();
    for h in 0..5 {
        t.app.deliver_due_at(start + h * HOUR_MS).await.unwrap();
    }
    let dead = get_json(&format!("{admin}/deliveries?state=dead")).await;
    assert_eq!(dead.as_array().unwrap().len(), 1, "{dead}");
    t.receiver.fail_next(0, 200);
    let (_, body) = post(&format!("{admin}/endpoints/crm/replay-dead")).await;
    assert!(body.contains("\"replayed\":1"), "{body}");
    t.deliver().await;
    assert_eq!(
        t.accepted().last().unwrap().json().unwrap()["status"],
        "modify"
    );

    // A time range: everything since `before`, delivered ones included.
    let from =
        (before - chrono::Duration::seconds(1)).to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let to = (chrono::Utc::now() + chrono::Duration::seconds(1))
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let (_, body) = post(&format!("{admin}/replay?from={from}&to={to}")).await;
    assert!(body.contains("\"replayed\":2"), "{body}");
    let (code, _) = post(&format!("{admin}/replay?from=yesterday&to=now")).await;
    assert_eq!(code, 400);
    let n = t.accepted().len();
    t.deliver().await;
    let replayed: Vec<String> = t.accepted()[n..]
        .iter()
        .map(|r| r.json().unwrap()["status"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(replayed, ["new", "modify"], "in detection order");
}

#[tokio::test]
async fn retention_prunes_delivered_history_but_keeps_dead_letters() {
    let t = spawn_app(Options::default()).await;
    let toml = t
        .toml
        .replace("[store]\npath", "[store]\nretention = \"1ms\"\npath");
    drop(t.app);
    let app = crate::helpers::build(&toml);
    app.poll_now("hotel").await.unwrap();
    t.sim.create_booking();
    t.sim.create_booking();
    app.poll_now("hotel").await.unwrap();
    assert_eq!(app.deliver_due().await.unwrap().delivered, 2);
    app.clock().advance(Duration::from_millis(5));
    assert_eq!(app.prune_now().await.unwrap(), 2);
    assert!(
        app.store().events().unwrap().is_empty(),
        "events with no delivery left go too"
    );

    // Dead letters are never pruned, nor their events.
    t.sim.create_booking();
    app.poll_now("hotel").await.unwrap();
    t.receiver.fail_next(100, 500);
    let start = now_ms();
    for h in 0..5 {
        app.deliver_due_at(start + h * HOUR_MS).await.unwrap();
    }
    app.clock().advance(Duration::from_millis(5));
    assert_eq!(app.prune_now().await.unwrap(), 0);
    assert_eq!(
        app.store()
            .deliveries_in(DeliveryState::Dead, 10)
            .unwrap()
            .len(),
        1
    );
    assert_eq!(app.store().events().unwrap().len(), 1);
}

#[tokio::test]
async fn one_endpoint_can_serve_several_sources() {
    use pollhook::demo::simulator::{SimConfig, Simulator};
    let other = Simulator::start(SimConfig {
        initial_bookings: 1,
        page_size: 5,
        pace: None,
        seed: 9,
    })
    .await
    .unwrap();
    let t = spawn_app(Options::default()).await;
    let toml = t.toml.replace(
        "[endpoints.crm]",
        &format!(
            "[sources.villa]\nurl = \"{}\"\nevery = \"1h\"\nitems = \"/data\"\n\n[endpoints.crm]",
            other.bookings_url()
        ),
    );
    drop(t.app);
    let app = crate::helpers::build(&toml);
    app.poll_all().await;
    t.sim.create_booking();
    other.create_booking();
    for (_, r) in app.poll_all().await {
        assert_eq!(r.unwrap().events.len(), 1);
    }
    app.deliver_due().await.unwrap();
    let mut sources: Vec<String> = t
        .receiver
        .accepted()
        .iter()
        .map(|r| r.json().unwrap()["source"].as_str().unwrap().to_string())
        .collect();
    sources.sort();
    assert_eq!(sources, ["hotel", "villa"]);
}

#[tokio::test]
async fn vendor_presets_arrive_in_the_vendors_shapes() {
    let t = spawn_app(Options {
        endpoints: r#"
[endpoints.beds24]
url = "{RECEIVER}/beds24"
preset = "beds24"
retry_schedule = ["0s", "1s"]
[endpoints.stayntouch]
url = "{RECEIVER}/snt"
preset = "stayntouch"
[endpoints.zenoti]
url = "{RECEIVER}/zenoti"
preset = "zenoti"
method = "PUT"
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
    // The Beds24 receiver fails the first attempt: the retry says so in `retries`.
    t.receiver.fail_next(1, 500);
    let start = now_ms();
    t.app.deliver_due_at(start).await.unwrap();
    t.app.deliver_due_at(start + HOUR_MS).await.unwrap();
    t.app.deliver_due_at(start + 2 * HOUR_MS).await.unwrap();
    let by = |p: &str| -> Vec<serde_json::Value> {
        t.receiver
            .received()
            .iter()
            .filter(|r| r.path == p)
            .map(|r| r.json().unwrap())
            .collect()
    };

    let beds = by("/beds24");
    let keys = |v: &serde_json::Value| {
        let mut k: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
        k.sort();
        k
    };
    assert_eq!(
        keys(&beds[0]),
        [
            "booking",
            "infoItems",
            "invoiceItems",
            "messages",
            "retries",
            "timeStamp"
        ]
    );
    assert_eq!(beds[0]["booking"]["id"], id);
    let retries: Vec<u64> = beds
        .iter()
        .map(|b| b["retries"].as_u64().unwrap())
        .collect();
    assert!(
        retries.contains(&1),
        "a retried Beds24 body counts the retry: {retries:?}"
    );

    let snt = by("/snt");
    assert_eq!(snt.len(), 2);
    assert_eq!(snt[0]["event"], "create_reservation");
    assert_eq!(snt[1]["event"], "cancel_reservation");
    assert_eq!(snt[0]["object"], "event");
    assert_eq!(snt[0]["data"]["id"], id);

    let zen = by("/zenoti");
    assert_eq!(zen.len(), 2);
    assert_eq!(zen[0]["event_schema"], "v1");
    assert_eq!(zen[0]["event_type"], "Appointment.Created");
    assert_eq!(zen[1]["event_type"], "Appointment.Cancelled");
    assert!(
        t.receiver
            .received()
            .iter()
            .filter(|r| r.path == "/zenoti")
            .all(|r| r.method == "PUT")
    );
}

#[tokio::test]
async fn signatures_verify_with_either_secret_during_a_rotation() {
    const NEW: &str = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD";
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("new"), NEW).unwrap();
    let t = spawn_app(Options {
        endpoints: format!(
            r#"
[endpoints.crm]
url = "{{RECEIVER}}/crm"
secrets = [{{ file = "{{SECRET_FILE}}" }}, {{ file = "{new}" }}]
"#,
            new = dir.path().join("new").display()
        ),
        ..Options::default()
    })
    .await;
    t.poll().await;
    t.sim.create_booking();
    t.poll().await;
    t.deliver().await;
    let r = &t.accepted()[0];
    assert_eq!(r.header("webhook-signature").unwrap().split(' ').count(), 2);
    for secret in [SECRET, NEW] {
        let wh = standardwebhooks::Webhook::new(secret).unwrap();
        let mut headers = http::HeaderMap::new();
        for name in ["webhook-id", "webhook-timestamp", "webhook-signature"] {
            headers.insert(name, r.header(name).unwrap().parse().unwrap());
        }
        wh.verify(&r.body, &headers)
            .unwrap_or_else(|e| panic!("{secret}: {e:?}"));
    }
}

#[tokio::test]
async fn readiness_and_event_listing() {
    let t = spawn_app(Options::default()).await;
    let cancel = CancellationToken::new();
    let admin = serve_admin(&t.app, &cancel).await;
    t.poll().await;
    let id = t.sim.create_booking();
    t.poll().await;
    let r = reqwest::get(format!("{admin}/readyz")).await.unwrap();
    assert_eq!(r.status(), 200);
    let events = get_json(&format!("{admin}/events?limit=5")).await;
    assert_eq!(events[0]["booking_id"], id.to_string());
    assert_eq!(events[0]["kind"], "new");
    let pending = get_json(&format!("{admin}/deliveries?state=pending")).await;
    assert_eq!(
        pending[0]["event_id"], events[0]["id"],
        "delivery rows name their event"
    );

    // Three failed polls in a row: not ready, and it says which source.
    t.sim.fail_next(100, 500);
    for _ in 0..3 {
        assert!(t.app.poll_now("hotel").await.is_err());
    }
    let r = reqwest::get(format!("{admin}/readyz")).await.unwrap();
    assert_eq!(r.status(), 503);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["failing_sources"][0], "hotel");
    t.sim.fail_next(0, 200);
    t.poll().await;
    assert_eq!(
        reqwest::get(format!("{admin}/readyz"))
            .await
            .unwrap()
            .status(),
        200
    );
}

#[tokio::test]
async fn an_unreachable_token_endpoint_is_a_failed_attempt_not_an_unauthenticated_send() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let token_url = format!("http://{}/token", closed.local_addr().unwrap());
    drop(closed);
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("cs"), "sh!").unwrap();
    let t = spawn_app(Options {
        endpoints: format!(
            r#"
[endpoints.crm]
url = "{{RECEIVER}}/crm"
auth = {{ type = "oauth2", token_url = "{token_url}", client_id = "pollhook", secret = {{ file = "{cs}" }} }}
"#,
            cs = dir.path().join("cs").display()
        ),
        ..Options::default()
    })
    .await;
    t.poll().await;
    t.sim.create_booking();
    t.poll().await;
    let r = t.app.deliver_due().await.unwrap();
    assert_eq!((r.attempted, r.retrying), (1, 1));
    assert!(
        t.receiver.received().is_empty(),
        "nothing sent without credentials"
    );
    let ev = &t.app.store().events().unwrap()[0];
    let d = &t.app.store().deliveries_of(ev.seq).unwrap()[0];
    let error = d.history[0].error.as_deref().unwrap();
    assert!(error.contains("token request"), "{error}");
    assert!(!error.contains("sh!"));
}
