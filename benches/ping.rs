//! Load harness for ping-triggered refresh, entirely on 127.0.0.1: the simulator, the real
//! ingress listener, refresh worker, store and delivery worker, and a receiver that verifies
//! signatures.
//!
//! `cargo bench --bench ping` (release build). Two measurements:
//!
//! * latency: `POLLHOOK_PING_SAMPLES` (default 300) changes one after another; for each, the
//!   time from sending the ping to the signed event arriving at the receiver (p50, p99, max),
//!   next to a floor measured in the same run: the same lookup request sent directly to the
//!   booking API plus a POST of the same size to the receiver (the two round trips a ping
//!   cannot avoid). The default 25 ms coalescing window is part of the figure; it is reported
//!   with `coalesce = "0s"` too.
//! * sustained: pings at `POLLHOOK_PING_RATE` a second (default 1000) for `POLLHOOK_PING_SECS`
//!   (default 60), each after a change to one of 5000 bookings; then every changed booking's
//!   last delivered event must carry its final state (no change lost), and the number of pings
//!   answered 2xx, refused and the events delivered are reported.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use pollhook::App;
use pollhook::config::Config;
use pollhook::demo::receiver::Receiver;
use pollhook::demo::simulator::{SimConfig, Simulator};
use tokio_util::sync::CancellationToken;

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const TOKEN: &str = "bench-ping-token-0123456789";

fn env_num(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

struct Rig {
    app: App,
    sim: Simulator,
    receiver: Receiver,
    ping_url: String,
    cancel: CancellationToken,
    _dir: tempfile::TempDir,
}

async fn rig(bookings: usize, coalesce: &str) -> Rig {
    let sim = Simulator::start(SimConfig {
        page_size: 1000,
        initial_bookings: bookings,
        pace: None,
        seed: 11,
    })
    .await
    .expect("simulator");
    let key = pollhook::signing::SigningKey::parse(SECRET)
        .expect("key")
        .bytes()
        .to_vec();
    let receiver = Receiver::start(vec![key]).await.expect("receiver");
    let dir = tempfile::tempdir().expect("tempdir");
    let secret = dir.path().join("secret");
    std::fs::write(&secret, SECRET).expect("secret");
    let token = dir.path().join("token");
    std::fs::write(&token, TOKEN).expect("token");
    let toml = format!(
        r#"
[store]
path = "{store}"
[admin]
listen = "off"
[ingress]
listen = "127.0.0.1:0"
backlog = 100000
[sources.hotel]
url = "{url}"
every = "24h"
items = "/data"
status = "/status"
ignore_fields = ["/modifiedTime"]
[sources.hotel.pagination]
style = "next_link"
next = "/pages/nextPageLink"
[sources.hotel.lookup]
query = {{ id = "{{{{ id }}}}" }}
[sources.hotel.ping]
preset = "beds24_v1"
path = "/ping"
coalesce = "{coalesce}"
auth = {{ type = "token", in = "query", secret = {{ file = "{token}" }} }}
[endpoints.crm]
url = "{crm}"
format = "v2"
secrets = [{{ file = "{secret}" }}]
max_in_flight = 64
retry_schedule = ["0s", "1s", "2s", "4s", "8s", "16s"]
"#,
        store = dir.path().join("state.redb").display(),
        url = sim.bookings_url(),
        token = token.display(),
        crm = receiver.url("/crm"),
        secret = secret.display(),
    );
    let config = Config::from_toml_str(&toml, "bench.toml").expect("config");
    let app = App::build(config).expect("app");
    let cancel = CancellationToken::new();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let ping_url = format!(
        "http://{}/ping?token={TOKEN}",
        listener.local_addr().expect("addr")
    );
    tokio::spawn(pollhook::ingress::serve(
        listener,
        app.clone(),
        cancel.clone(),
    ));
    {
        let (app, c) = (app.clone(), cancel.clone());
        tokio::spawn(async move { app.run(c).await });
    }
    while app
        .source_health()
        .get("hotel")
        .is_none_or(|h| h.successes_total == 0)
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Rig {
        app,
        sim,
        receiver,
        ping_url,
        cancel,
        _dir: dir,
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

async fn latency(coalesce: &str, samples: usize) {
    let r = rig(200, coalesce).await;
    let client = reqwest::Client::new();
    let mut got = Vec::with_capacity(samples);
    let mut floor = Vec::with_capacity(samples);
    let lookup_url = format!("{}?id=1001", r.sim.bookings_url());
    for i in 0..samples {
        let id = 1001 + (i as u64 % 200);
        let before = r.receiver.accepted().len();
        r.sim.modify_booking(id);
        let t = Instant::now();
        let resp = client
            .get(format!("{}&bookid={id}", r.ping_url))
            .send()
            .await
            .expect("ping");
        assert!(
            resp.status().is_success(),
            "ping refused: {}",
            resp.status()
        );
        while r.receiver.accepted().len() <= before {
            tokio::time::sleep(Duration::from_micros(200)).await;
        }
        got.push(t.elapsed());
        // The floor: the lookup and a POST of the event's size, sent directly.
        let body = r
            .receiver
            .accepted()
            .last()
            .map(|a| a.body.clone())
            .unwrap_or_default();
        let t = Instant::now();
        let _ = client
            .get(&lookup_url)
            .send()
            .await
            .expect("lookup")
            .bytes()
            .await;
        let _ = client
            .post(r.receiver.url("/floor"))
            .body(body)
            .send()
            .await
            .expect("post")
            .bytes()
            .await;
        floor.push(t.elapsed());
    }
    got.sort();
    floor.sort();
    println!(
        "latency (coalesce {coalesce}, {samples} pings): ping -> signed event at the receiver p50 {} p99 {} max {}; floor (lookup + POST sent directly) p50 {} p99 {}",
        ms(percentile(&got, 0.5)),
        ms(percentile(&got, 0.99)),
        ms(percentile(&got, 1.0)),
        ms(percentile(&floor, 0.5)),
        ms(percentile(&floor, 0.99)),
    );
    r.cancel.cancel();
}

/// A booking document without the field the source ignores.
fn without_modified_time(mut booking: serde_json::Value) -> serde_json::Value {
    if let Some(o) = booking.as_object_mut() {
        o.remove("modifiedTime");
    }
    booking
}

async fn sustained(rate: u64, secs: u64) {
    const BOOKINGS: usize = 5000;
    let r = Arc::new(rig(BOOKINGS, "25ms").await);
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(64)
        .build()
        .expect("client");
    let total = rate * secs;
    let started = Instant::now();
    let workers = 32u64;
    let mut tasks = Vec::new();
    for w in 0..workers {
        let (r, client) = (r.clone(), client.clone());
        tasks.push(tokio::spawn(async move {
            let (mut ok, mut refused) = (0u64, 0u64);
            let mut n = w;
            while n < total {
                // Pace: ping n is due at n / rate seconds.
                let due = started + Duration::from_secs_f64(n as f64 / rate as f64);
                tokio::time::sleep_until(due.into()).await;
                let id = 1001 + (n * 7919 % BOOKINGS as u64);
                r.sim.modify_booking(id);
                match client
                    .get(format!("{}&bookid={id}", r.ping_url))
                    .send()
                    .await
                {
                    Ok(resp) if resp.status().is_success() => ok += 1,
                    _ => refused += 1,
                }
                n += workers;
            }
            (ok, refused)
        }));
    }
    let (mut ok, mut refused) = (0, 0);
    for t in tasks {
        let (o, f) = t.await.expect("task");
        ok += o;
        refused += f;
    }
    let sending = started.elapsed();
    // Every changed booking's last delivered event must carry its final state, up to the
    // ignored `modifiedTime`: two changes that cancel out between two lookups (a departure moved
    // a day and back) leave only `modifiedTime` changed, which rightly gives no event.
    let modified: std::collections::BTreeSet<String> = (0..total)
        .map(|n| (1001 + (n * 7919 % BOOKINGS as u64)).to_string())
        .collect();
    let finals: HashMap<String, serde_json::Value> = r
        .sim
        .bookings()
        .into_iter()
        .map(|b| (b["id"].to_string(), without_modified_time(b)))
        .collect();
    let deadline = Instant::now() + Duration::from_secs(120);
    let (missing, delivered) = loop {
        let accepted = r.receiver.accepted();
        let mut last: HashMap<String, serde_json::Value> = HashMap::new();
        for a in &accepted {
            if let Some(j) = a.json() {
                let id = j["booking_id"].as_str().unwrap_or("").to_string();
                last.insert(id, without_modified_time(j["booking"].clone()));
            }
        }
        let missing = modified
            .iter()
            .filter(|id| last.get(*id) != finals.get(*id))
            .count();
        if missing == 0 || Instant::now() > deadline {
            break (missing, accepted.len());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let drained = started.elapsed();
    let counts = r.app.counts().await.expect("counts");
    println!(
        "sustained: {ok} pings answered 2xx, {refused} refused, in {:.1} s ({:.0} pings/s offered, {:.0}/s answered); all committed and delivered after {:.1} s; {delivered} events delivered; bookings whose last event is not their final state: {missing}; pings still waiting: {}; store: {} events, {} deliveries pending, {} dead",
        sending.as_secs_f64(),
        total as f64 / sending.as_secs_f64(),
        ok as f64 / sending.as_secs_f64(),
        drained.as_secs_f64(),
        r.app.ping_backlog(0),
        counts.events,
        counts.pending,
        counts.dead,
    );
    r.cancel.cancel();
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let samples = env_num("POLLHOOK_PING_SAMPLES", 300) as usize;
    let rate = env_num("POLLHOOK_PING_RATE", 1000);
    let secs = env_num("POLLHOOK_PING_SECS", 60);
    rt.block_on(async {
        if samples > 0 {
            latency("25ms", samples).await;
            latency("0s", samples).await;
        }
        sustained(rate, secs).await;
    });
}
