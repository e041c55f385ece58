//! Load harness for delivery: pollhook's delivery worker and group commit, each against a floor
//! measured in the same run on the same machine, so the figures are ratios, not absolute claims.
//!
//! `cargo bench --bench throughput` (release build). `POLLHOOK_BENCH_N` sets the number of
//! deliveries (default 20000); `POLLHOOK_BENCH_RUNS` repeats the delivery measurement (default:
//! once) and prints the median ratio. Everything stays on 127.0.0.1; the run stops by itself. The
//! poll path has its own harness: `cargo bench --bench scale`.
//!
//! * delivery: N signed v2 deliveries (N bookings, so N independent lanes) from the real
//!   Dispatcher (due scan, render, sign, send, group commit) to a sink that answers 200, versus
//!   a bare reqwest client POSTing the same bodies with the same concurrency (the floor).
//! * group commit: recording N outcomes in batches of 512 versus one transaction each.
//!
//! The events are created the way production creates them: a poll of a local page server with
//! `first_poll = "emit_new"`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use pollhook::App;
use pollhook::clock::Clock;
use pollhook::config::Config;
use pollhook::delivery::Dispatcher;
use pollhook::outbox::DeliveryState;
use pollhook::store::Store;

#[path = "support/mod.rs"]
mod support;
use support::{Rate, cpu, drain, pages, rate};

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

async fn bare_reqwest(url: &str, bodies: Arc<Vec<Vec<u8>>>) -> Rate {
    let client = reqwest::Client::new();
    let next = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let cpu0 = cpu();
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
    rate(bodies.len() as u64, start.elapsed(), cpu() - cpu0)
}

fn config(source: &str, sink: &str, dir: &std::path::Path) -> Config {
    let endpoint = format!(
        r#"[endpoints.sink]
url = "{sink}"
max_in_flight = {CONCURRENCY}
secrets = [{{ file = "{{SECRET}}" }}]
"#
    );
    support::config(source, dir, &endpoint)
}

/// A store holding `n` new-booking events with one pending delivery each, made by a real poll.
async fn seeded(n: u64, sink: &str) -> (tempfile::TempDir, Config, Store) {
    let dir = tempfile::tempdir().expect("tempdir");
    let source = pages(n).await;
    let cfg = config(&source, sink, dir.path());
    let app = App::build(cfg.clone()).expect("app");
    let r = app.poll_now("bench").await.expect("seeding poll");
    assert_eq!(r.events_total as u64, n, "one event per booking");
    let store = app.store().clone();
    (dir, cfg, store)
}

async fn delivery(n: u64) -> (Rate, Rate) {
    let (url, hits) = sink().await;
    let (_dir, cfg, store) = seeded(n, &url).await;
    // The floor: the same bodies, bare.
    let bodies: Vec<Vec<u8>> = store
        .events()
        .expect("events")
        .iter()
        .map(|e| {
            pollhook::delivery::presets::to_vec(pollhook::config::BodyPreset::Pollhook, e, 1)
                .expect("json")
        })
        .collect();
    let floor = bare_reqwest(&url, Arc::new(bodies)).await;
    hits.store(0, Ordering::Relaxed);

    // Nobody listens to the notices, as in the daemon (only the demo does).
    let (tx, _) = tokio::sync::broadcast::channel(16);
    let dispatcher = Arc::new(
        Dispatcher::new(
            store.clone(),
            Clock::system(),
            &cfg.endpoints,
            tx,
            &pollhook::metrics::Metrics::new(),
        )
        .expect("dispatcher"),
    );
    let ours = drain(dispatcher, &store, n).await;
    assert!(hits.load(Ordering::Relaxed) >= n);
    (ours, floor)
}

async fn group_commit(n: u64) -> (f64, f64) {
    let mut rates = Vec::new();
    for batch in [512usize, 1] {
        let (_dir, _cfg, store) = seeded(n, "http://127.0.0.1:9/").await;
        let due = store
            .due(i64::MAX, &[("sink", usize::MAX, &[])])
            .expect("due");
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
            store.record(chunk, 0).expect("record");
        }
        rates.push(n as f64 / start.elapsed().as_secs_f64());
    }
    (rates[0], rates[1])
}

fn main() {
    let n: u64 = std::env::var("POLLHOOK_BENCH_N")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20_000);
    let runs: usize = std::env::var("POLLHOOK_BENCH_RUNS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1)
        .max(1);
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
    let mut ratios = Vec::new();
    for _ in 0..runs {
        let (ours, floor) = runtime.block_on(delivery(n));
        println!(
            "delivery   pollhook {:>8.0}/s ({:>4.0} µs CPU each)   floor (bare reqwest, same bodies) {:>8.0}/s ({:>4.0} µs CPU each)   ratio {:.2}",
            ours.per_sec,
            ours.cpu_us,
            floor.per_sec,
            floor.cpu_us,
            ours.per_sec / floor.per_sec
        );
        ratios.push(ours.per_sec / floor.per_sec);
    }
    if runs > 1 {
        ratios.sort_by(f64::total_cmp);
        println!(
            "delivery   median ratio of {runs} runs: {:.2} (min {:.2}, max {:.2})",
            ratios[runs / 2],
            ratios[0],
            ratios[runs - 1]
        );
    }
    let (batched, single) = runtime.block_on(group_commit(n.min(20_000)));
    println!(
        "outcomes   batches of 512 {batched:>10.0}/s   one commit each {single:>10.0}/s   ratio {:.1}",
        batched / single
    );
}
