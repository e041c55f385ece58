//! Load harness: pollhook's delivery and poll pipelines, each against a floor measured in the
//! same run on the same machine, so the figures are ratios, not absolute claims.
//!
//! `cargo bench --bench throughput` (release build). `POLLHOOK_BENCH_N` sets the number of
//! deliveries (default 20000). Everything stays on 127.0.0.1; the run stops by itself.
//!
//! * delivery: N signed v2 deliveries (N bookings, so N independent lanes) from the real
//!   Dispatcher (due scan, render, sign, send, group commit) to a sink that answers 200, versus
//!   a bare reqwest client POSTing the same bodies with the same concurrency (the floor).
//! * group commit: recording N outcomes in batches of 512 versus one transaction each.
//! * poll: diffing and committing N bookings (baseline, then 10% modified), versus only parsing
//!   the same JSON pages (the floor).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use pollhook::clock::Clock;
use pollhook::config::Config;
use pollhook::delivery::Dispatcher;
use pollhook::outbox::{DeliveryState, EventKind};
use pollhook::poll::{Lookups, SourceRuntime, apply};
use pollhook::source::{Fetched, PollKind, Record};
use pollhook::store::Store;
use serde_json::{Value, json};

const CONCURRENCY: usize = 64;

async fn sink() -> (String, Arc<AtomicU64>) {
    let hits = Arc::new(AtomicU64::new(0));
    let h = hits.clone();
    let app = axum::Router::new().fallback(move |_body: axum::body::Bytes| {
        let h = h.clone();
        async move {
            h.fetch_add(1, Ordering::Relaxed);
            "ok"
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}/hook"), hits)
}

fn booking(i: u64, rev: u64) -> Value {
    json!({
        "id": i, "propertyId": 201, "roomId": 3000 + i % 40, "status": "confirmed",
        "arrival": "2026-12-01", "departure": "2026-12-04", "numAdult": 2 + rev, "numChild": 0,
        "firstName": "Ada", "lastName": format!("Guest {i}"), "email": format!("g{i}@example.com"),
        "price": 360.0, "bookingTime": "2026-11-01T10:00:00Z", "modifiedTime": "2026-11-02T10:00:00Z",
        "comments": "late arrival, needs a cot; paid by card ending 4242",
    })
}

async fn bare_reqwest(url: &str, bodies: Arc<Vec<Vec<u8>>>) -> f64 {
    let client = reqwest::Client::new();
    let next = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..CONCURRENCY {
        let (client, url, bodies, next) = (
            client.clone(),
            url.to_string(),
            bodies.clone(),
            next.clone(),
        );
        tasks.spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed) as usize;
                let Some(body) = bodies.get(i) else { return };
                let r = client
                    .post(&url)
                    .header("content-type", "application/json")
                    .body(body.clone())
                    .send()
                    .await;
                if let Ok(r) = r {
                    let _ = r.bytes().await;
                }
            }
        });
    }
    while tasks.join_next().await.is_some() {}
    bodies.len() as f64 / start.elapsed().as_secs_f64()
}

fn config(url: &str, dir: &std::path::Path) -> Config {
    std::fs::write(dir.join("secret"), "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").expect("secret");
    let text = format!(
        r#"
[store]
path = "{store}"
[sources.bench]
url = "http://127.0.0.1:9/bookings"
every = "1h"
status = "/status"
ignore_fields = ["/modifiedTime"]
first_poll = "emit_new"
[endpoints.sink]
url = "{url}"
max_in_flight = {CONCURRENCY}
secrets = [{{ file = "{secret}" }}]
"#,
        store = dir.join("bench.redb").display(),
        secret = dir.join("secret").display(),
    );
    Config::from_toml_str(&text, "bench.toml").expect("config")
}

async fn delivery(n: u64) -> (f64, f64) {
    let (url, hits) = sink().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = config(&url, dir.path());
    let store = Store::open(&cfg.store_path).expect("store");
    let rt = Arc::new(
        SourceRuntime::new(
            &cfg,
            &cfg.sources[0],
            Arc::new(store.clone()),
            Clock::system(),
        )
        .expect("source"),
    );
    // N events on N bookings, committed the way a poll commits them.
    let now = chrono::Utc::now().timestamp_millis();
    for chunk in (0..n).collect::<Vec<_>>().chunks(5000) {
        let records: Vec<Record> = chunk
            .iter()
            .map(|i| Record {
                id: i.to_string(),
                doc: booking(*i, 0),
            })
            .collect();
        let fetched = Fetched { records, pages: 1 };
        let rt = rt.clone();
        store
            .write_poll("bench", now, |txn| {
                apply(txn, &rt, fetched, PollKind::Full, Lookups::default(), now)
            })
            .expect("seed");
    }
    // The floor: the same bodies, bare.
    let bodies: Vec<Vec<u8>> = store
        .events()
        .expect("events")
        .iter()
        .map(|e| {
            serde_json::to_vec(&pollhook::delivery::presets::render(
                pollhook::config::BodyPreset::Pollhook,
                e,
                1,
            ))
            .expect("json")
        })
        .collect();
    let floor = bare_reqwest(&url, Arc::new(bodies)).await;
    hits.store(0, Ordering::Relaxed);

    let (tx, _rx) = tokio::sync::broadcast::channel(16);
    let dispatcher = Arc::new(
        Dispatcher::new(store.clone(), Clock::system(), &cfg.endpoints, tx).expect("dispatcher"),
    );
    let cancel = tokio_util::sync::CancellationToken::new();
    let wake = Arc::new(tokio::sync::Notify::new());
    let start = Instant::now();
    let task = tokio::spawn(dispatcher.run(cancel.clone(), wake, Duration::from_secs(5)));
    loop {
        tokio::time::sleep(Duration::from_millis(20)).await;
        let c = store.counts().expect("counts");
        if c.pending == 0 {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(600),
            "delivery bench did not finish"
        );
    }
    let ours = n as f64 / start.elapsed().as_secs_f64();
    cancel.cancel();
    let _ = task.await;
    let delivered = store
        .deliveries_in(DeliveryState::Delivered, usize::MAX)
        .expect("rows")
        .len() as u64;
    assert_eq!(delivered, n, "every delivery recorded as delivered");
    assert!(hits.load(Ordering::Relaxed) >= n);
    (ours, floor)
}

fn group_commit(n: u64) -> (f64, f64) {
    let mut rates = Vec::new();
    for batch in [512usize, 1] {
        let dir = tempfile::tempdir().expect("tempdir");
        let cfg = config("http://127.0.0.1:9/", dir.path());
        let store = Store::open(&cfg.store_path).expect("store");
        let rt = Arc::new(
            SourceRuntime::new(
                &cfg,
                &cfg.sources[0],
                Arc::new(store.clone()),
                Clock::system(),
            )
            .expect("source"),
        );
        let now = 0;
        let records: Vec<Record> = (0..n)
            .map(|i| Record {
                id: i.to_string(),
                doc: booking(i, 0),
            })
            .collect();
        store
            .write_poll("bench", now, |txn| {
                apply(
                    txn,
                    &rt,
                    Fetched { records, pages: 1 },
                    PollKind::Full,
                    Lookups::default(),
                    now,
                )
            })
            .expect("seed");
        let due = store.due(now, usize::MAX, &|_, _| false).expect("due");
        let rows: Vec<_> = due
            .items
            .into_iter()
            .map(|i| {
                let mut d = i.delivery;
                let prev = d.next_ms;
                d.state = DeliveryState::Delivered;
                d.attempts = 1;
                (d, prev)
            })
            .collect();
        let start = Instant::now();
        for chunk in rows.chunks(batch) {
            store.record(chunk, now).expect("record");
        }
        rates.push(n as f64 / start.elapsed().as_secs_f64());
    }
    (rates[0], rates[1])
}

fn poll(n: u64) -> (f64, f64) {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = config("http://127.0.0.1:9/", dir.path());
    let store = Store::open(&cfg.store_path).expect("store");
    let rt = Arc::new(
        SourceRuntime::new(
            &cfg,
            &cfg.sources[0],
            Arc::new(store.clone()),
            Clock::system(),
        )
        .expect("source"),
    );
    // Pages of 100 bookings as the API would send them; the second poll has 10% modified.
    let pages = |rev_every: u64| -> Vec<Vec<u8>> {
        (0..n)
            .collect::<Vec<_>>()
            .chunks(100)
            .map(|c| {
                let data: Vec<Value> = c
                    .iter()
                    .map(|i| booking(*i, u64::from(rev_every > 0 && i % rev_every == 0)))
                    .collect();
                serde_json::to_vec(&json!({"success": true, "data": data})).expect("json")
            })
            .collect()
    };
    let first = pages(0);
    let second = pages(10);
    // Floor: parsing the same pages.
    let start = Instant::now();
    for p in first.iter().chain(&second) {
        let v: Value = serde_json::from_slice(p).expect("parse");
        std::hint::black_box(v);
    }
    let floor = (2 * n) as f64 / start.elapsed().as_secs_f64();
    // pollhook: parse, extract ids, diff against the snapshot and commit (snapshot rows, events,
    // deliveries) in one transaction per poll.
    let start = Instant::now();
    let mut events = 0;
    for (round, poll_pages) in [&first, &second].into_iter().enumerate() {
        let mut records = Vec::with_capacity(n as usize);
        for p in poll_pages.iter() {
            let v: Value = serde_json::from_slice(p).expect("parse");
            records.extend(
                pollhook::source::extract(&cfg.sources[0], "/data", &v, 1).expect("extract"),
            );
        }
        let now = round as i64;
        let fetched = Fetched {
            records,
            pages: poll_pages.len() as u32,
        };
        let report = store
            .write_poll("bench", now, |txn| {
                apply(txn, &rt, fetched, PollKind::Full, Lookups::default(), now)
            })
            .expect("commit");
        events += report.events.len();
    }
    let ours = (2 * n) as f64 / start.elapsed().as_secs_f64();
    assert_eq!(
        events as u64,
        n + n / 10,
        "first poll: n new; second: n/10 modify"
    );
    let kinds = store.events().expect("events");
    assert_eq!(
        kinds.iter().filter(|e| e.kind == EventKind::Modify).count() as u64,
        n / 10
    );
    (ours, floor)
}

fn main() {
    let n: u64 = std::env::var("POLLHOOK_BENCH_N")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20_000);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    println!(
        "pollhook throughput (n = {n}, {} cores, concurrency {CONCURRENCY})",
        std::thread::available_parallelism()
            .map(|p| p.get())
            .unwrap_or(0)
    );
    let (ours, floor) = runtime.block_on(delivery(n));
    println!(
        "delivery   pollhook {ours:>10.0}/s   floor (bare reqwest, same bodies) {floor:>10.0}/s   ratio {:.2}",
        ours / floor
    );
    let (batched, single) = group_commit(n.min(20_000));
    println!(
        "outcomes   batches of 512 {batched:>10.0}/s   one commit each {single:>10.0}/s   ratio {:.1}",
        batched / single
    );
    let (ours, floor) = poll(n);
    println!(
        "poll       pollhook {ours:>10.0} bookings/s   floor (JSON parse only) {floor:>10.0}/s   ratio {:.2}",
        ours / floor
    );
}
