//! The shipped presets (`examples/*.toml`) against the simulator's vendor-shaped APIs: each
//! detects created, modified and cancelled bookings, and each trap from the booking-API
//! reference has a test that fails if the trap is not handled.

use std::time::Duration;

use pollhook::App;
use pollhook::demo::receiver::Receiver;
use pollhook::demo::simulator::{self as sim, SimConfig, Simulator};

use crate::helpers::*;

struct Preset {
    app: App,
    sim: Simulator,
    receiver: Receiver,
    _dir: tempfile::TempDir,
    source: String,
    toml: String,
}

/// Loads `examples/NAME.toml`, pointed at the simulator and the receiver, with the simulator's
/// credentials in the files the preset names. `tweak` edits the text (e.g. faster timings).
async fn preset(name: &str, source: &str, tweak: &dyn Fn(String) -> String) -> Preset {
    let sim = Simulator::start(SimConfig {
        initial_bookings: 5,
        page_size: 20,
        pace: None,
        seed: 3,
    })
    .await
    .unwrap();
    sim.set_vendor_page_size(2);
    let receiver = Receiver::start(vec![secret_key()]).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let creds = dir.path().join("creds");
    std::fs::create_dir(&creds).unwrap();
    for (file, value) in [
        ("beds24-refresh-token", sim::BEDS24_REFRESH_TOKEN),
        ("beds24-apikey", sim::BEDS24_V1_APIKEY),
        ("beds24-propkey", sim::BEDS24_V1_PROPKEY),
        ("smoobu-api-key", sim::SMOOBU_API_KEY),
        ("checkfront-secret", sim::CHECKFRONT_SECRET),
        ("hostaway-api-key", sim::HOSTAWAY_CLIENT_SECRET),
        ("rezgo-key", sim::REZGO_KEY),
        ("crm-webhook-secret", SECRET),
    ] {
        std::fs::write(creds.join(file), format!("{value}\n")).unwrap();
    }
    let path = format!("{}/examples/{name}.toml", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path)
        .unwrap()
        .replace(
            "/etc/pollhook/credentials/",
            &format!("{}/", creds.display()),
        )
        .replace(
            "/var/lib/pollhook/pollhook.redb",
            &dir.path().join("state.redb").display().to_string(),
        )
        .replace("https://beds24.com/api/v2", &sim.beds24_v2_base_url())
        .replace("https://api.beds24.com/json", &sim.beds24_v1_base_url())
        .replace("https://login.smoobu.com", &sim.smoobu_base_url())
        .replace(
            "https://yourcompany.checkfront.com",
            &sim.checkfront_base_url(),
        )
        .replace("https://api.hostaway.com/v1", &sim.hostaway_base_url())
        .replace("https://api.rezgo.com/xml", &sim.rezgo_url())
        .replace("YOUR-API-KEY", sim::CHECKFRONT_KEY)
        .replace("YOUR-ACCOUNT-ID", sim::HOSTAWAY_CLIENT_ID)
        .replace("YOUR-CID", sim::REZGO_CID)
        .replace("https://crm.example.com", &receiver.url(""))
        .replace("https://cm.example.com", &receiver.url(""));
    let toml = tweak(text);
    let app = crate::helpers::build(&toml);
    Preset {
        app,
        sim,
        receiver,
        _dir: dir,
        source: source.to_string(),
        toml,
    }
}

fn fast(text: String) -> String {
    text.replace("min_gap = \"2s\"", "min_gap = \"0s\"")
        .replace("min_gap = \"1s\"", "min_gap = \"0s\"")
        .replace("min_gap = \"700ms\"", "min_gap = \"0s\"")
}

impl Preset {
    async fn poll(&self) -> Vec<(String, String)> {
        let r = self
            .app
            .poll_now(&self.source)
            .await
            .unwrap_or_else(|e| panic!("{} poll failed: {e}", self.source));
        r.events
            .iter()
            .map(|e| (e.kind.status_word().to_string(), e.booking_id.clone()))
            .collect()
    }
}

/// The scenario every preset must pass: baseline, then a created, a modified and a cancelled
/// booking, each detected once, and a noisy timestamp change detected as nothing. The ids the
/// vendor uses are derived by `vid` from the simulator's numeric id.
async fn lifecycle(p: &Preset, vid: &dyn Fn(u64) -> String) {
    assert!(p.poll().await.is_empty(), "baseline sends nothing");
    let id = p.sim.create_booking();
    assert_eq!(p.poll().await, [("new".to_string(), vid(id))]);
    assert!(p.sim.modify_booking(id));
    assert_eq!(p.poll().await, [("modify".to_string(), vid(id))]);
    assert!(p.sim.touch_booking(id));
    assert!(
        p.poll().await.is_empty(),
        "a noisy timestamp is not a change"
    );
    assert!(p.sim.cancel_booking(id));
    assert_eq!(p.poll().await, [("cancel".to_string(), vid(id))]);
    assert!(p.poll().await.is_empty(), "nothing twice");
    for _ in 0..3 {
        p.app.deliver_due().await.unwrap();
    }
    let got: Vec<String> = p
        .receiver
        .accepted()
        .iter()
        .map(|r| {
            r.json()
                .map(|j| j["status"].as_str().unwrap_or_default().to_string())
                .unwrap_or_else(|| r.query_param("status").unwrap_or_default().to_string())
        })
        .collect();
    assert_eq!(got, ["new", "modify", "cancel"]);
}

fn plain(id: u64) -> String {
    id.to_string()
}

#[tokio::test]
async fn every_preset_passes_check() {
    for (name, source) in [
        ("beds24-v2", "beds24"),
        ("beds24-v1", "beds24v1"),
        ("smoobu", "smoobu"),
        ("checkfront", "checkfront"),
        ("hostaway", "hostaway"),
        ("rezgo", "rezgo"),
    ] {
        let p = preset(name, source, &|t| t).await;
        assert!(p.app.config().source(source).is_some(), "{name}");
    }
}

#[tokio::test]
async fn beds24_v2_lifecycle_tokens_and_incremental_polls() {
    let p = preset("beds24-v2", "beds24", &fast).await;
    lifecycle(&p, &plain).await;
    // One token for all those polls, reused rather than minted per request.
    assert_eq!(p.sim.tokens_minted(), 1);
    // After the first (full) poll, polls ask only for changes, with the overlap.
    let reqs = p.sim.vendor_requests();
    let last = reqs
        .iter()
        .rev()
        .find(|r| r.path.ends_with("/bookings"))
        .unwrap();
    assert!(
        last.query_param("modifiedFrom").is_some(),
        "{:?}",
        last.query
    );
    // Trap: cancelled bookings are hidden unless asked for; the preset asks for all statuses.
    let statuses: Vec<&str> = last
        .query
        .iter()
        .filter(|(k, _)| k == "status")
        .map(|(_, v)| v.as_str())
        .collect();
    assert!(statuses.contains(&"cancelled"), "{statuses:?}");
}

#[tokio::test]
async fn beds24_v2_a_revoked_token_is_replaced_once() {
    let p = preset("beds24-v2", "beds24", &fast).await;
    p.poll().await;
    p.sim.revoke_tokens();
    p.sim.create_booking();
    assert_eq!(p.poll().await.len(), 1);
    assert_eq!(p.sim.tokens_minted(), 2);
    // A restart reuses the token kept in the state file.
    let Preset { app, sim, toml, .. } = p;
    drop(app);
    let app = crate::helpers::build(&toml);
    app.poll_now("beds24").await.unwrap();
    assert_eq!(sim.tokens_minted(), 2);
}

#[tokio::test]
async fn beds24_v2_leaving_the_default_window_is_not_a_cancellation() {
    // Every poll a full one, so disappearance handling runs each time.
    let p = preset("beds24-v2", "beds24", &|t| {
        fast(t).replace("full_every = \"6h\"", "full_every = \"1ms\"")
    })
    .await;
    let today = chrono::Utc::now().date_naive();
    let ids: Vec<u64> = p
        .sim
        .bookings()
        .iter()
        .map(|b| b["id"].as_u64().unwrap())
        .collect();
    // Before the baseline: one booking departs tomorrow, the others much later.
    assert!(
        p.sim
            .set_booking_dates(ids[0], today, today + chrono::Days::new(1))
    );
    for id in &ids[1..] {
        assert!(p.sim.set_booking_dates(
            *id,
            today + chrono::Days::new(30),
            today + chrono::Days::new(33)
        ));
    }
    p.poll().await;
    // Two days later it has departed and drops out of Beds24's default "upcoming" list.
    p.sim.set_today(today + chrono::Days::new(2));
    p.app.clock().advance(Duration::from_millis(2));
    let r = p.app.poll_now("beds24").await.unwrap();
    assert_eq!(r.bookings, ids.len() - 1);
    assert!(r.events.is_empty(), "no false cancellation: {:?}", r.events);
    assert_eq!(r.held_back, 0);
    let wanted = ids[0].to_string();
    assert!(
        p.sim
            .vendor_requests()
            .iter()
            .any(|q| q.query_param("id") == Some(wanted.as_str())),
        "it was looked up by id before deciding"
    );
}

#[tokio::test]
async fn beds24_v2_a_booking_that_vanishes_is_looked_up_before_cancelling() {
    let p = preset("beds24-v2", "beds24", &|t| {
        fast(t).replace("full_every = \"6h\"", "full_every = \"1ms\"")
    })
    .await;
    p.poll().await;
    let ids: Vec<u64> = p
        .sim
        .bookings()
        .iter()
        .map(|b| b["id"].as_u64().unwrap())
        .collect();
    // One leaves the window (still active), one is deleted outright.
    let past = chrono::Utc::now().date_naive() - chrono::Days::new(30);
    assert!(
        p.sim
            .set_booking_dates(ids[0], past, past + chrono::Days::new(2))
    );
    assert!(p.sim.remove_booking(ids[1]));
    p.app.clock().advance(Duration::from_millis(2));
    let events = p.poll().await;
    // The moved booking is found by id: its new dates are a modification, not a cancellation.
    // The deleted one is confirmed gone: a cancellation.
    assert_eq!(
        events,
        [
            ("modify".to_string(), ids[0].to_string()),
            ("cancel".to_string(), ids[1].to_string())
        ]
    );
    // The one outside the window is not looked up again on every poll.
    let lookups_before = p
        .sim
        .vendor_requests()
        .iter()
        .filter(|q| q.query_param("id").is_some())
        .count();
    p.app.clock().advance(Duration::from_millis(2));
    assert!(p.poll().await.is_empty());
    let lookups_after = p
        .sim
        .vendor_requests()
        .iter()
        .filter(|q| q.query_param("id").is_some())
        .count();
    assert_eq!(lookups_before, lookups_after);
}

#[tokio::test]
async fn beds24_v2_a_cancelled_booking_that_left_the_window_is_found_by_its_lookup() {
    // Beds24's status filter defaults to everything but `cancelled` when `status` is not given,
    // by id too: a lookup without the status list would find nothing and cancel the booking as
    // last seen (still "confirmed"), instead of reporting what really happened.
    let p = preset("beds24-v2", "beds24", &|t| {
        fast(t).replace("full_every = \"6h\"", "full_every = \"1ms\"")
    })
    .await;
    p.poll().await;
    let id = p.sim.bookings()[0]["id"].as_u64().unwrap();
    let past = chrono::Utc::now().date_naive() - chrono::Days::new(30);
    assert!(
        p.sim
            .set_booking_dates(id, past, past + chrono::Days::new(2))
    );
    assert!(p.sim.cancel_booking(id));
    p.app.clock().advance(Duration::from_millis(2));
    let r = p.app.poll_now("beds24").await.unwrap();
    assert_eq!(r.events.len(), 1, "{:?}", r.events);
    let e = &r.events[0];
    assert_eq!(
        (e.kind.status_word(), e.booking_id.as_str()),
        ("cancel", id.to_string().as_str())
    );
    assert_eq!(
        e.booking.value()["status"],
        "cancelled",
        "the booking as the lookup found it"
    );
    let paths: Vec<&str> = e.changes.iter().map(|c| c.path.as_str()).collect();
    assert!(paths.contains(&"/status"), "{paths:?}");
    assert!(
        p.sim.vendor_requests().iter().any(|q| {
            q.query_param("id") == Some(id.to_string().as_str())
                && q.query_param("status").is_some()
        }),
        "the lookup asked for the statuses"
    );
}

#[tokio::test]
async fn beds24_v2_credit_headers_pause_requests() {
    let p = preset("beds24-v2", "beds24", &|t| {
        fast(t).replace(
            "min_gap = \"0s\"",
            "min_gap = \"0s\"\nmax_retry_after = \"300ms\"",
        )
    })
    .await;
    p.poll().await;
    // The next request spends the last credit: the answer says none remain.
    p.sim.set_credits(1);
    p.poll().await;
    let last_before = p.sim.vendor_requests().last().unwrap().at;
    // The budget resets (here: by hand); the next request waits for the advertised reset,
    // capped by max_retry_after.
    p.sim.set_credits(100);
    p.poll().await;
    let reqs = p.sim.vendor_requests();
    let first_after = reqs.iter().find(|r| r.at > last_before).unwrap().at;
    let gap = first_after.duration_since(last_before);
    assert!(
        gap >= Duration::from_millis(300),
        "paused once the budget was used up: {gap:?}"
    );
}

#[tokio::test]
async fn beds24_v1_lifecycle_with_body_auth_numeric_status_and_offset_paging() {
    let p = preset("beds24-v1", "beds24v1", &fast).await;
    lifecycle(&p, &plain).await;
    let first = &p.sim.vendor_requests()[0];
    let body: serde_json::Value = serde_json::from_slice(&first.body).unwrap();
    assert_eq!(body["authentication"]["apiKey"], sim::BEDS24_V1_APIKEY);
    assert_eq!(body["limit"], 500);
    // Notify URL variables are filled from the booking.
    let ping = &p.receiver.accepted()[0];
    assert_eq!(ping.path, "/beds24-notify");
    assert!(ping.query_param("propid").is_some_and(|v| !v.is_empty()));
}

#[tokio::test]
async fn beds24_v1_an_error_with_http_200_commits_nothing() {
    let p = preset("beds24-v1", "beds24v1", &fast).await;
    p.poll().await;
    p.sim.create_booking();
    p.sim.fail_softly_next(1);
    let e = p.app.poll_now("beds24v1").await.unwrap_err();
    assert!(e.to_string().contains("reported a failure"), "{e}");
    assert!(p.app.store().events().unwrap().is_empty());
    assert_eq!(p.poll().await.len(), 1, "the next good poll sees it once");
}

#[tokio::test]
async fn smoobu_lifecycle_sees_cancellations_only_because_it_asks() {
    let p = preset("smoobu", "smoobu", &fast).await;
    lifecycle(&p, &plain).await;
    let last = p.sim.vendor_requests().pop().unwrap();
    assert_eq!(last.query_param("showCancellation"), Some("true"));

    // Without showCancellation the same cancellation would be invisible to an incremental poll.
    let p = preset("smoobu", "smoobu", &|t| {
        fast(t).replace("showCancellation = \"true\", ", "")
    })
    .await;
    p.poll().await;
    let id = p.sim.bookings()[0]["id"].as_u64().unwrap();
    p.sim.cancel_booking(id);
    assert!(p.poll().await.is_empty(), "the trap: a hidden cancellation");
}

#[tokio::test]
async fn checkfront_lifecycle_with_keyed_items_and_throttling() {
    let p = preset("checkfront", "checkfront", &|t| {
        t.replace(
            "sync = \"incremental\"",
            "sync = \"incremental\"\nretry_backoff = \"10ms\"",
        )
    })
    .await;
    lifecycle(&p, &plain).await;
    // Checkfront throttles with 503 + Retry-After: honoured, then the cycle goes on.
    p.sim.throttle_next(1, 1);
    p.sim.create_booking();
    let before = p.sim.vendor_requests().len();
    assert_eq!(p.poll().await.len(), 1);
    let reqs = p.sim.vendor_requests();
    let gap = reqs[before + 1].at.duration_since(reqs[before].at);
    assert!(gap >= Duration::from_secs(1), "waited as asked: {gap:?}");
}

#[tokio::test]
async fn a_retry_after_longer_than_allowed_abandons_the_cycle() {
    let p = preset("checkfront", "checkfront", &|t| {
        t.replace(
            "sync = \"incremental\"",
            "sync = \"incremental\"\nmax_retry_after = \"5s\"",
        )
    })
    .await;
    p.poll().await;
    p.sim.create_booking();
    p.sim.throttle_next(1, 3600);
    let e = p.app.poll_now("checkfront").await.unwrap_err();
    assert!(e.to_string().contains("max_retry_after"), "{e}");
    assert_eq!(p.poll().await.len(), 1);
}

#[tokio::test]
async fn hostaway_lifecycle_with_oauth2_and_soft_failures() {
    let p = preset("hostaway", "hostaway", &fast).await;
    lifecycle(&p, &plain).await;
    assert_eq!(p.sim.hostaway_tokens_minted(), 1);
    p.sim.create_booking();
    p.sim.fail_softly_next(1);
    let e = p.app.poll_now("hostaway").await.unwrap_err();
    assert!(e.to_string().contains("fail"), "{e}");
    assert_eq!(p.poll().await.len(), 1);
}

#[tokio::test]
async fn rezgo_lifecycle_over_xml() {
    let p = preset("rezgo", "rezgo", &fast).await;
    lifecycle(&p, &|id| format!("SIM{id}")).await;
}

/// The named child elements' texts of a `<booking>` element.
fn rezgo_field<'a>(booking: roxmltree::Node<'a, 'a>, name: &str) -> Option<&'a str> {
    booking
        .children()
        .find(|c| c.has_tag_name(name))
        .map(|c| c.text().unwrap_or(""))
}

#[tokio::test]
async fn rezgo_preset_delivers_the_booking_as_rezgo_xml_to_a_receiver() {
    // A Rezgo source polled by pollhook feeds a receiver written for Rezgo's own webhook: an
    // XML body whose <booking> elements carry what such receivers require (the WordPress
    // plugins read trans_num, item_id, tour_name, date and email_address).
    let p = preset("rezgo", "rezgo", &|t| {
        fast(t).replace("[endpoints.crm]", "[endpoints.crm]\npreset = \"rezgo\"")
    })
    .await;
    assert!(p.poll().await.is_empty(), "baseline");
    let id = p.sim.create_booking();
    assert!(p.sim.set_guest_name(id, "Zoë", "O'Brien & <Sons> ]]>"));
    assert_eq!(p.poll().await, [("new".to_string(), format!("SIM{id}"))]);
    assert!(p.sim.cancel_booking(id));
    assert_eq!(p.poll().await, [("cancel".to_string(), format!("SIM{id}"))]);
    for _ in 0..3 {
        p.app.deliver_due().await.unwrap();
    }
    let got = p.receiver.accepted();
    assert_eq!(got.len(), 2, "{got:?}");
    let stored = p
        .sim
        .bookings()
        .into_iter()
        .find(|b| b["id"].as_u64() == Some(id))
        .unwrap();
    for (r, status) in got.iter().zip(["1", "3"]) {
        assert_eq!(r.header("content-type"), Some("application/xml"));
        let text = std::str::from_utf8(&r.body).unwrap();
        let doc = roxmltree::Document::parse(text).unwrap_or_else(|e| panic!("{e}: {text}"));
        let bookings: Vec<_> = doc
            .root_element()
            .children()
            .filter(|n| n.has_tag_name("booking"))
            .collect();
        assert_eq!(bookings.len(), 1, "{text}");
        let b = bookings[0];
        assert_eq!(
            rezgo_field(b, "trans_num"),
            Some(format!("SIM{id}").as_str())
        );
        assert_eq!(
            rezgo_field(b, "item_id"),
            Some(stored["roomId"].to_string().as_str())
        );
        assert_eq!(
            rezgo_field(b, "tour_name"),
            Some(format!("Room {}", stored["roomId"]).as_str())
        );
        let arrival =
            chrono::NaiveDate::parse_from_str(stored["arrival"].as_str().unwrap(), "%Y-%m-%d")
                .unwrap();
        let date = arrival.and_hms_opt(0, 0, 0).unwrap().and_utc().timestamp();
        assert_eq!(rezgo_field(b, "date"), Some(date.to_string().as_str()));
        assert_eq!(
            rezgo_field(b, "email_address"),
            stored["email"].as_str(),
            "{text}"
        );
        assert_eq!(rezgo_field(b, "last_name"), Some("O'Brien & <Sons> ]]>"));
        assert_eq!(rezgo_field(b, "status"), Some(status));
        assert_eq!(
            doc.root_element()
                .children()
                .find(|n| n.has_tag_name("total"))
                .and_then(|n| n.text()),
            Some("1")
        );
    }
}

#[tokio::test]
async fn rezgo_single_booking_cdata_and_purchase_window() {
    let p = preset("rezgo", "rezgo", &fast).await;
    // Remove all but one booking: a single <booking> element, not a list.
    let ids: Vec<u64> = p
        .sim
        .bookings()
        .iter()
        .map(|b| b["id"].as_u64().unwrap())
        .collect();
    for id in &ids[1..] {
        p.sim.remove_booking(*id);
    }
    assert!(p.poll().await.is_empty());
    assert_eq!(p.app.store().known("rezgo").unwrap().len(), 1);
    // Names with XML-special characters arrive intact (CDATA).
    p.sim.set_guest_name(ids[0], "Zoë", "O'Brien & <Sons> ]]>");
    let r = p.app.poll_now("rezgo").await.unwrap();
    assert_eq!(r.events.len(), 1);
    assert_eq!(r.events[0].booking["last_name"], "O'Brien & <Sons> ]]>");
    // Time passes and the purchase-date window moves on past the booking (simulated by moving
    // the configured window, since pollhook's own clock computes it). The booking is looked up
    // by its transaction number, found active, and nothing is emitted.
    let Preset { app, sim, toml, .. } = p;
    drop(app);
    let later = toml.replace(
        "{{ today - 60d | %Y-%m-%d }}",
        "{{ today + 30d | %Y-%m-%d }}",
    );
    let app = crate::helpers::build(&later.replace(
        "{{ today + 1d | %Y-%m-%d }}",
        "{{ today + 60d | %Y-%m-%d }}",
    ));
    let r = app.poll_now("rezgo").await.unwrap();
    assert_eq!(r.bookings, 0);
    assert!(
        r.events.is_empty(),
        "leaving the window is not a cancellation: {:?}",
        r.events
    );
    let wanted = format!("SIM{}", ids[0]);
    assert!(
        sim.vendor_requests()
            .iter()
            .any(|q| q.query_param("q") == Some(wanted.as_str()))
    );
    // Really cancelled later: the next full poll looks it up no more (it is outside), but when
    // the window comes back it is seen again.
    sim.cancel_booking(ids[0]);
    drop(app);
    let app = crate::helpers::build(&toml);
    let r = app.poll_now("rezgo").await.unwrap();
    assert_eq!(r.events.len(), 1);
    assert_eq!(r.events[0].kind.status_word(), "cancel");
}

#[tokio::test]
async fn one_request_at_a_time_with_a_minimum_gap() {
    let p = preset("hostaway", "hostaway", &|t| t).await;
    p.sim.set_latency(Duration::from_millis(20));
    p.poll().await;
    // Two polls at once (a scheduled one and an admin poll-now): they never overlap.
    let (a, b) = tokio::join!(p.app.poll_now("hostaway"), p.app.poll_now("hostaway"));
    a.unwrap();
    b.unwrap();
    assert_eq!(p.sim.max_concurrent_requests(), 1);
    let reqs: Vec<_> = p
        .sim
        .vendor_requests()
        .into_iter()
        .filter(|r| r.path.ends_with("/reservations"))
        .collect();
    for w in reqs.windows(2) {
        let gap = w[1].at.duration_since(w[0].at);
        assert!(
            gap >= Duration::from_millis(700),
            "min_gap 700ms plus latency: {gap:?}"
        );
    }
}
