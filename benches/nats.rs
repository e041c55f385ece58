//! Load harness for NATS JetStream endpoints: pollhook's delivery worker publishing signed events
//! to a local JetStream, against a floor measured in the same run on the same machine (a bare
//! async-nats JetStream publish loop), so the figure is a ratio, not an absolute claim.
//!
//! `cargo bench --bench nats` (release build). Needs `nats-server` (`scripts/test` or
//! `apt-get install nats-server` installs it; `POLLHOOK_NATS_SERVER` names another binary): it
//! fails, never skips, without one. `POLLHOOK_BENCH_N` sets the number of deliveries (default
//! 20000); `POLLHOOK_BENCH_RUNS` repeats the measurement (default: once) and prints the median
//! ratio. Everything stays on 127.0.0.1; the run stops by itself.
//!
//! * pollhook: N signed v2 deliveries (N bookings, so N independent lanes) from the real
//!   Dispatcher (due scan, render, sign, publish, wait for the PubAck, group commit) to a
//!   JetStream stream on file storage, 64 in flight.
//! * floor: 64 tasks publishing the same bodies with a `Nats-Msg-Id` each and awaiting each
//!   acknowledgement, to the same stream.
//!
//! The events are created the way production creates them: a poll of a local page server with
//! `first_poll = "emit_new"`.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use async_nats::jetstream;
use pollhook::App;
use pollhook::clock::Clock;
use pollhook::config::Config;
use pollhook::delivery::Dispatcher;
use pollhook::store::Store;

#[path = "support/mod.rs"]
mod support;
use support::{Rate, cpu, drain, pages, rate};

const CONCURRENCY: usize = 64;
const STREAM: &str = "BENCH";

/// The `nats-server` binary, or a panic saying how to install it.
fn nats_server_binary() -> PathBuf {
    if let Some(p) = std::env::var_os("POLLHOOK_NATS_SERVER") {
        return PathBuf::from(p);
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin".into(), "/usr/bin".into(), "/usr/local/bin".into()])
        .map(|d| d.join("nats-server"))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "nats-server is not installed, and this bench needs a real one: run `scripts/test` (it installs the packages the suite needs) or `apt-get install nats-server`"
            )
        })
}

/// A nats-server with JetStream on a free loopback port, its store in a temporary directory.
struct Server {
    child: Child,
    url: String,
    _dir: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn server() -> Server {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let log = dir.path().join("nats.log");
    let child = Command::new(nats_server_binary())
        .args(["-js", "-a", "127.0.0.1", "-p", &port.to_string(), "-sd"])
        .arg(dir.path().join("js"))
        .arg("-l")
        .arg(&log)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start nats-server");
    let deadline = Instant::now() + Duration::from_secs(20);
    while !std::fs::read_to_string(&log)
        .unwrap_or_default()
        .contains("Server is ready")
    {
        assert!(Instant::now() < deadline, "nats-server did not start");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Server {
        child,
        url: format!("nats://127.0.0.1:{port}"),
        _dir: dir,
    }
}

fn config(source: &str, nats: &str, dir: &std::path::Path) -> Config {
    let endpoint = format!(
        r#"[endpoints.bus]
type = "nats"
servers = ["{nats}"]
subject = "bench.{{{{ event.source }}}}.{{{{ event.kind }}}}"
stream = "{STREAM}"
max_in_flight = {CONCURRENCY}
secrets = [{{ file = "{{SECRET}}" }}]
"#
    );
    support::config(source, dir, &endpoint)
}

/// A store holding `n` new-booking events with one pending delivery each, made by a real poll.
async fn seeded(n: u64, nats: &str) -> (tempfile::TempDir, Config, Store) {
    let dir = tempfile::tempdir().expect("tempdir");
    let source = pages(n).await;
    let cfg = config(&source, nats, dir.path());
    let app = App::build(cfg.clone()).expect("app");
    let r = app.poll_now("bench").await.expect("seeding poll");
    assert_eq!(r.events_total as u64, n, "one event per booking");
    let store = app.store().clone();
    (dir, cfg, store)
}

/// The floor: the same bodies published by `CONCURRENCY` tasks, each awaiting its ack.
async fn bare_publish(js: &jetstream::Context, bodies: Arc<Vec<Vec<u8>>>, run: usize) -> Rate {
    let next = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let cpu0 = cpu();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..CONCURRENCY {
        let (js, bodies, next) = (js.clone(), bodies.clone(), next.clone());
        tasks.spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed) as usize;
                let Some(body) = bodies.get(i) else { return };
                let mut headers = async_nats::HeaderMap::new();
                headers.insert("Nats-Msg-Id", format!("floor-{run}-{i}").as_str());
                let ack = js
                    .publish_with_headers("bench.floor.new", headers, body.clone().into())
                    .await
                    .expect("publish");
                ack.await.expect("ack");
            }
        });
    }
    while tasks.join_next().await.is_some() {}
    rate(bodies.len() as u64, start.elapsed(), cpu() - cpu0)
}

async fn delivery(n: u64, server: &Server, run: usize) -> (Rate, Rate) {
    let client = async_nats::connect(&server.url).await.expect("connect");
    let js = jetstream::new(client);
    let _ = js
        .get_or_create_stream(jetstream::stream::Config {
            name: STREAM.into(),
            subjects: vec!["bench.>".into()],
            ..Default::default()
        })
        .await
        .expect("stream");
    let (_dir, cfg, store) = seeded(n, &server.url).await;
    let bodies: Vec<Vec<u8>> = store
        .events()
        .expect("events")
        .iter()
        .map(|e| {
            pollhook::delivery::presets::to_vec(pollhook::config::BodyPreset::Pollhook, e, 1)
                .expect("json")
        })
        .collect();
    let floor = bare_publish(&js, Arc::new(bodies), run).await;

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
    let before = js
        .get_stream(STREAM)
        .await
        .expect("stream")
        .cached_info()
        .state
        .messages;
    let ours = drain(dispatcher, &store, n).await;
    let after = js
        .get_stream(STREAM)
        .await
        .expect("stream")
        .cached_info()
        .state
        .messages;
    assert_eq!(after - before, n, "every event stored once");
    (ours, floor)
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
        "pollhook NATS JetStream delivery (n = {n}, {} cores, {CONCURRENCY} in flight)",
        std::thread::available_parallelism()
            .map(|p| p.get())
            .unwrap_or(0)
    );
    let server = runtime.block_on(server());
    let mut ratios = Vec::new();
    for run in 0..runs {
        let (ours, floor) = runtime.block_on(delivery(n, &server, run));
        println!(
            "jetstream  pollhook {:>8.0}/s ({:>4.0} µs CPU each)   floor (bare async-nats publish + ack, same bodies) {:>8.0}/s ({:>4.0} µs CPU each)   ratio {:.2}",
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
            "jetstream  median ratio of {runs} runs: {:.2} (min {:.2}, max {:.2})",
            ratios[runs / 2],
            ratios[0],
            ratios[runs - 1]
        );
    }
}
