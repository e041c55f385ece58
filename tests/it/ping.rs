//! Ping-triggered refresh end to end: the simulator's Beds24 v1 and pretix pings reach the real
//! ingress listener on 127.0.0.1:0, are recorded, looked up and committed through the running
//! pipeline, and arrive at the receiver as signed events; with polls as the safety net.

use std::time::Duration;

use pollhook::demo::simulator::{PingShape, Pinger};
use pollhook::outbox::EventKind;
use tokio_util::sync::CancellationToken;

use crate::helpers::*;

const TOKEN: &str = "ping-token-0123456789";

struct PingApp {
    t: TestApp,
    /// `http://127.0.0.1:PORT` of the ingress listener.
    ingress: String,
    cancel: CancellationToken,
}

impl Drop for PingApp {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

/// The hotel source with a lookup and `[sources.hotel.ping]` = `ping` (`{TOKEN_FILE}` is
/// substituted), `[ingress]` extra lines; the pipeline running, its first poll done.
async fn spawn_ping_app(ping: &str, ingress_extra: &str, initial: usize, page: usize) -> PingApp {
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("ping-token");
    std::fs::write(&token_file, TOKEN).unwrap();
    let ping = ping.replace("{TOKEN_FILE}", &token_file.display().to_string());
    let mut opts = Options {
        initial_bookings: initial,
        page_size: page,
        ..Options::default()
    };
    opts.admin_extra = format!("[ingress]\nlisten = \"127.0.0.1:0\"\n{ingress_extra}\n");
    // The lookup goes to the source URL (its default) with `?id=`.
    opts.source_extra = format!(
        "[sources.hotel.lookup]\nquery = {{ id = \"{{{{ id }}}}\" }}\n[sources.hotel.ping]\n{ping}\n"
    );
    let t = spawn_app(opts).await;
    // The temp dir with the token must outlive the test: keep it in the app's dir.
    std::fs::copy(&token_file, t.dir.path().join("ping-token-copy")).unwrap();
    std::mem::forget(dir);
    let cancel = CancellationToken::new();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let ingress = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(pollhook::ingress::serve(
        listener,
        t.app.clone(),
        cancel.clone(),
    ));
    let app = t.app.clone();
    let c = cancel.clone();
    tokio::spawn(async move { app.run(c).await });
    let app = t.app.clone();
    wait_until("the first poll", Duration::from_secs(10), || {
        app.source_health()["hotel"].successes_total >= 1
    })
    .await;
    PingApp { t, ingress, cancel }
}

const BEDS24: &str = r#"preset = "beds24_v1"
path = "/ping/hotel"
auth = { type = "token", in = "query", secret = { file = "{TOKEN_FILE}" } }"#;

impl PingApp {
    fn beds24_url(&self) -> String {
        format!("{}/ping/hotel?token={TOKEN}", self.ingress)
    }

    fn pinger(&self, shape: PingShape) -> Pinger {
        self.t.sim.ping_to(&self.beds24_url(), shape)
    }

    async fn events(&self) -> Vec<pollhook::outbox::Event> {
        let mut e = self.t.app.recent_events(1000).await.unwrap();
        e.reverse();
        e
    }

    async fn wait_events(&self, n: usize) -> Vec<pollhook::outbox::Event> {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let e = self.events().await;
            if e.len() >= n {
                return e;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "timed out waiting for {n} events; have {e:?}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    async fn pings_recorded(&self) -> u64 {
        self.t
            .app
            .store()
            .run(|s| s.count_pings("hotel"))
            .await
            .unwrap()
    }

    async fn wait_no_pings(&self) {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while self.pings_recorded().await > 0 {
            assert!(std::time::Instant::now() < deadline, "pings never answered");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

async fn get(url: &str) -> (u16, String) {
    let r = reqwest::get(url).await.unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

#[tokio::test]
async fn a_beds24_ping_becomes_a_signed_event_and_the_next_poll_adds_nothing() {
    let p = spawn_ping_app(BEDS24, "", 3, 2).await;
    let _pinger = p.pinger(PingShape::Beds24V1);
    assert!(p.t.sim.modify_booking(1002));
    let t = &p.t;
    wait_until(
        "the receiver gets the modify",
        Duration::from_secs(10),
        || !t.accepted().is_empty(),
    )
    .await;
    let got = t.accepted();
    assert_eq!(got.len(), 1);
    let body = got[0].json().unwrap();
    assert_eq!(body["status"], "modify");
    assert_eq!(body["booking_id"], "1002");
    assert_eq!(body["booking"]["id"], 1002);
    verify_with_official_library(&got[0]);
    assert_eq!(t.sim.lookups(), 1, "one lookup for one ping");
    p.wait_no_pings().await;
    // The poll sees what the ping already committed: no second event.
    assert_eq!(t.poll().await, 0);
    let events = p.events().await;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].kind, EventKind::Modify);
    assert!(!events[0].changes.is_empty());
    // A cancellation pinged the same way.
    assert!(t.sim.cancel_booking(1001));
    let e = p.wait_events(2).await;
    assert_eq!(e[1].kind, EventKind::Cancel);
    assert_eq!(e[1].booking_id, "1001");
}

#[tokio::test]
async fn a_pretix_ping_is_read_from_its_json_body() {
    let ping = r#"preset = "pretix"
path = "/ping/pretix"
auth = { type = "token", in = "path", secret = { file = "{TOKEN_FILE}" } }"#;
    let p = spawn_ping_app(ping, "", 2, 10).await;
    let _pinger = p.t.sim.ping_to(
        &format!("{}/ping/pretix/{TOKEN}", p.ingress),
        PingShape::Pretix,
    );
    let id = p.t.sim.create_booking();
    let e = p.wait_events(1).await;
    assert_eq!(e[0].kind, EventKind::New);
    assert_eq!(e[0].booking_id, id.to_string());
    // A GET is not what pretix sends.
    let (status, _) = get(&format!("{}/ping/pretix/{TOKEN}", p.ingress)).await;
    assert_eq!(status, 405);
    // Without the token in the path: refused.
    let r = reqwest::Client::new()
        .post(format!("{}/ping/pretix/wrong", p.ingress))
        .body(r#"{"code":"1001"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
}

#[tokio::test]
async fn a_lost_ping_is_caught_by_the_next_poll_and_lost_pings_are_reported() {
    let p = spawn_ping_app(BEDS24, "", 3, 2).await;
    let pinger = p.pinger(PingShape::Beds24V1);
    pinger.set_dropping(true);
    assert!(p.t.sim.modify_booking(1001));
    assert_eq!(p.t.poll().await, 1, "the poll is the safety net");
    assert!(!p.t.app.source_health()["hotel"].pings_lost);
    assert!(p.t.sim.modify_booking(1002));
    assert_eq!(p.t.poll().await, 1);
    assert!(
        p.t.app.source_health()["hotel"].pings_lost,
        "two polls found changes no ping announced"
    );
    let admin = start_admin(&p.t.app, &p.cancel).await;
    let ready: serde_json::Value = reqwest::get(format!("http://{admin}/readyz"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(ready["sources"]["hotel"]["pings_lost"], true, "{ready}");
    assert_eq!(pinger.dropped(), 2);
    // Pings come back: the report clears.
    pinger.set_dropping(false);
    assert!(p.t.sim.modify_booking(1003));
    p.wait_events(3).await;
    assert!(!p.t.app.source_health()["hotel"].pings_lost);
}

#[tokio::test]
async fn a_burst_of_pings_for_one_booking_is_one_lookup() {
    let ping = format!("{BEDS24}\ncoalesce = \"300ms\"");
    let p = spawn_ping_app(&ping, "", 3, 2).await;
    assert!(p.t.sim.modify_booking(1003));
    let url = format!("{}&bookid=1003&status=modify", p.beds24_url());
    let sends = (0..10).map(|_| {
        let url = url.clone();
        async move { get(&url).await }
    });
    for (status, body) in futures_join_all(sends).await {
        assert_eq!(status, 200, "{body}");
    }
    let e = p.wait_events(1).await;
    assert_eq!(e.len(), 1);
    p.wait_no_pings().await;
    assert_eq!(p.t.sim.lookups(), 1, "ten pings, one lookup");
    assert_eq!(p.events().await.len(), 1);
    let admin = start_admin(&p.t.app, &p.cancel).await;
    let metrics = reqwest::get(format!("http://{admin}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for line in [
        r#"pollhook_pings_total{source="hotel",outcome="recorded"} 10"#,
        r#"pollhook_pings_total{source="hotel",outcome="coalesced"} 9"#,
        r#"pollhook_ping_to_commit_seconds_count{source="hotel"} 1"#,
    ] {
        assert!(metrics.contains(line), "no `{line}` in\n{metrics}");
    }
}

/// Runs the futures concurrently and collects their outputs in order.
async fn futures_join_all<F>(fs: impl Iterator<Item = F>) -> Vec<F::Output>
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    let handles: Vec<_> = fs.map(tokio::spawn).collect();
    let mut out = Vec::new();
    for h in handles {
        out.push(h.await.unwrap());
    }
    out
}

/// The interleaving of issue 10: a poll fetches page 1 (booking 1001 as S1) and pauses; the
/// booking changes to S2 and is pinged; the lookup goes between the poll's pages and commits
/// S2; then the poll finishes. Its page 1 is older than the lookup, so it must not move 1001
/// back to S1 nor emit a modify: one modify (S0 → S2) in all.
#[tokio::test]
async fn a_page_fetched_before_a_lookup_never_overwrites_it() {
    let p = spawn_ping_app(BEDS24, "", 3, 1).await;
    let (t, app) = (&p.t, p.t.app.clone());
    assert!(t.sim.modify_booking(1001)); // S1, seen by page 1 of the next poll
    t.sim.hold_page(2, true);
    t.sim.hold_page(3, true);
    let poll = {
        let app = app.clone();
        tokio::spawn(async move { app.poll_now("hotel").await })
    };
    let sim = &t.sim;
    wait_until("the poll's page 2 is out", Duration::from_secs(10), || {
        sim.listed_pages().iter().filter(|p| **p == 1).count() >= 2
    })
    .await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(t.sim.set_guest_name(1001, "Second", "State")); // S2
    let (status, body) = get(&format!("{}&bookid=1001", p.beds24_url())).await;
    assert_eq!(status, 200, "{body}");
    wait_until(
        "the lookup waits for its turn behind page 2 (or went before it)",
        Duration::from_secs(10),
        || app.requests_waiting("hotel") == 1 || sim.lookups() == 1,
    )
    .await;
    t.sim.hold_page(2, false);
    let e = p.wait_events(1).await;
    assert_eq!(e[0].kind, EventKind::Modify);
    t.sim.hold_page(3, false);
    let report = poll.await.unwrap().unwrap();
    assert_eq!(report.events.len(), 0, "the older page emitted {report:?}");
    let events = p.events().await;
    assert_eq!(events.len(), 1, "{events:?}");
    let guest = serde_json::to_string(&events[0].booking).unwrap();
    assert!(guest.contains("Second"), "the modify carries S2: {guest}");
    // The snapshot holds S2: polling again finds nothing.
    assert_eq!(t.poll().await, 0);
}

#[tokio::test]
async fn unknown_ids_are_looked_up_new_bookings_appear_and_missing_ones_produce_nothing() {
    let p = spawn_ping_app(BEDS24, "", 2, 10).await;
    let id = p.t.sim.create_booking();
    for bookid in [id.to_string(), "999999".to_string()] {
        let (status, body) = get(&format!("{}&bookid={bookid}", p.beds24_url())).await;
        assert_eq!(status, 200, "{body}");
    }
    let e = p.wait_events(1).await;
    assert_eq!(
        (e[0].kind, e[0].booking_id.as_str()),
        (EventKind::New, id.to_string().as_str())
    );
    p.wait_no_pings().await;
    assert_eq!(
        p.events().await.len(),
        1,
        "a booking the API does not know is nothing"
    );
    // The next poll sees the new booking as known.
    assert_eq!(p.t.poll().await, 0);
}

#[tokio::test]
async fn bad_pings_are_refused_with_the_reason_and_nothing_is_recorded() {
    let p = spawn_ping_app(BEDS24, "max_body = \"1KiB\"", 2, 10).await;
    let base = &p.ingress;
    assert_eq!(get(&format!("{base}/nowhere")).await.0, 404);
    // Wrong and missing tokens: 401, nothing recorded.
    let (status, _) = get(&format!("{base}/ping/hotel?token=nope&bookid=1001")).await;
    assert_eq!(status, 401);
    let (status, _) = get(&format!("{base}/ping/hotel?bookid=1001")).await;
    assert_eq!(status, 401);
    assert_eq!(p.pings_recorded().await, 0);
    // Missing and malformed ids: 400 naming what was expected.
    let (status, body) = get(&p.beds24_url()).await;
    assert_eq!(status, 400);
    assert!(body.contains("bookid"), "{body}");
    let (status, body) = get(&format!("{}&bookid=%20", p.beds24_url())).await;
    assert_eq!(status, 400);
    assert!(body.contains("whitespace"), "{body}");
    // A body over max_body: 413.
    let r = reqwest::Client::new()
        .post(p.beds24_url())
        .body(vec![b'a'; 4096])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 413);
    // Unsupported method.
    let r = reqwest::Client::new()
        .delete(p.beds24_url())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 405);
    assert_eq!(p.pings_recorded().await, 0);
    assert_eq!(p.t.sim.lookups(), 0);
    // Repeated failures from one address: rate-limited, even with the right token.
    for _ in 0..10 {
        get(&format!("{base}/ping/hotel?token=nope&bookid=1001")).await;
    }
    let r = reqwest::get(format!("{}&bookid=1001", p.beds24_url()))
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 429);
    assert!(r.headers().get("retry-after").is_some());
    assert_eq!(p.pings_recorded().await, 0);
}

#[tokio::test]
async fn a_full_backlog_answers_429_and_polling_goes_on() {
    let p = spawn_ping_app(BEDS24, "backlog = 2", 3, 10).await;
    p.t.sim.hold_lookups(true);
    for id in ["1001", "1002"] {
        let (status, body) = get(&format!("{}&bookid={id}", p.beds24_url())).await;
        assert_eq!(status, 200, "{body}");
    }
    let r = reqwest::get(format!("{}&bookid=1003", p.beds24_url()))
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 429);
    assert!(r.headers().get("retry-after").is_some());
    assert_eq!(p.pings_recorded().await, 2);
    p.t.sim.hold_lookups(false);
    p.wait_no_pings().await;
    // Room again.
    let (status, _) = get(&format!("{}&bookid=1003", p.beds24_url())).await;
    assert_eq!(status, 200);
    assert!(p.t.sim.modify_booking(1002));
    assert_eq!(p.t.poll().await, 1, "polling is never starved");
}

/// The ingress address the daemon logged.
fn logged_ingress(log: &std::path::Path) -> Option<String> {
    let text = std::fs::read_to_string(log).ok()?;
    let line = text
        .lines()
        .rev()
        .find(|l| l.contains("ingress listener up"))?;
    let addr = line.split("addr=").nth(1)?.split_whitespace().next()?;
    Some(format!("http://{addr}"))
}

/// kill -9 right after the 2xx: the ping was recorded before the answer, so the restarted
/// daemon looks the booking up and delivers the change, once, even though no poll succeeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ping_acknowledged_just_before_kill_9_still_delivers_its_change_once() {
    use crate::binary::{Daemon, daemon_setup};
    let secrets = tempfile::tempdir().unwrap();
    let token_file = secrets.path().join("ping-token");
    std::fs::write(&token_file, TOKEN).unwrap();
    let opts = Options {
        initial_bookings: 3,
        page_size: 2,
        admin_extra: "[ingress]\nlisten = \"127.0.0.1:0\"\n".into(),
        source_extra: format!(
            "[sources.hotel.lookup]\nquery = {{ id = \"{{{{ id }}}}\" }}\n[sources.hotel.ping]\n{}\n",
            BEDS24.replace("{TOKEN_FILE}", &token_file.display().to_string())
        ),
        ..Options::default()
    };
    let (sim, receiver, dir, _toml, config, log) =
        daemon_setup(opts, |t| t.replace("every = \"1s\"", "every = \"1h\"")).await;
    let start = || Daemon::start(&config, &log);
    let mut daemon = start();
    wait_until("the ingress listener", Duration::from_secs(20), || {
        logged_ingress(&log).is_some()
    })
    .await;
    wait_until("the baseline poll", Duration::from_secs(20), || {
        sim.requests() >= 2
    })
    .await;
    let ingress = logged_ingress(&log).unwrap();
    sim.hold_lookups(true);
    assert!(sim.modify_booking(1001));
    let (status, body) = get(&format!("{ingress}/ping/hotel?token={TOKEN}&bookid=1001")).await;
    assert_eq!(status, 200, "{body}");
    daemon.kill9();
    // The ping is in the state file.
    let store_path = dir.path().join("state.redb");
    {
        let store = pollhook::store::Store::open(&store_path).unwrap();
        assert_eq!(store.count_pings("hotel").unwrap(), 1);
    }
    // Polls fail from now on: only the recorded ping can bring the change.
    sim.fail_next(u32::MAX, 500);
    sim.hold_lookups(false);
    let _daemon = start();
    wait_until("the change delivered", Duration::from_secs(30), || {
        !receiver.accepted().is_empty()
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let got = receiver.accepted();
    let ids: std::collections::BTreeSet<&str> = got
        .iter()
        .map(|r| r.header("webhook-id").unwrap())
        .collect();
    assert_eq!(ids.len(), 1, "one event: {got:?}");
    let body = got[0].json().unwrap();
    assert_eq!(
        (body["status"].as_str(), body["booking_id"].as_str()),
        (Some("modify"), Some("1001"))
    );
}
