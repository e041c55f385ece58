//! What the delivery benchmarks share: CPU time of this process, a Beds24-shaped booking, a page
//! server on 127.0.0.1 that serves `n` of them with next links, the rate figures, and running the
//! real delivery worker until its queue is empty.

use std::sync::Arc;
use std::time::{Duration, Instant};

use pollhook::delivery::Dispatcher;
use pollhook::outbox::DeliveryState;
use pollhook::store::Store;

use serde_json::{Value, json};

/// Bookings per page of [`pages`].
pub const PAGE: u64 = 1000;

/// CPU time (user + system) of this process so far, from `/proc/self/stat` (clock ticks of 10 ms,
/// as on every Linux this runs on).
pub fn cpu() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<u64> = after
        .split_whitespace()
        .skip(11)
        .take(2)
        .filter_map(|x| x.parse().ok())
        .collect();
    Duration::from_millis(f.iter().sum::<u64>() * 10)
}
pub fn booking(i: u64) -> Value {
    json!({
        "id": i, "propertyId": 201, "roomId": 3000 + i % 40, "status": "confirmed",
        "arrival": "2026-12-01", "departure": "2026-12-04", "numAdult": 2, "numChild": 0,
        "firstName": "Ada", "lastName": format!("Guest {i}"), "email": format!("g{i}@example.com"),
        "price": 360.0, "bookingTime": "2026-11-01T10:00:00Z", "modifiedTime": "2026-11-02T10:00:00Z",
        "comments": "late arrival, needs a cot; paid by card ending 4242",
    })
}

/// A page server for `n` bookings, `PAGE` per page, with next links.
pub async fn pages(n: u64) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let base = format!("http://{addr}/bookings");
    let link = base.clone();
    let app = axum::Router::new().route(
        "/bookings",
        axum::routing::get(
            move |q: axum::extract::Query<std::collections::HashMap<String, String>>| {
                let link = link.clone();
                async move {
                    let p: u64 = q.get("page").and_then(|s| s.parse().ok()).unwrap_or(0);
                    let data: Vec<Value> =
                        (p * PAGE..((p + 1) * PAGE).min(n)).map(booking).collect();
                    let next = ((p + 1) * PAGE < n).then(|| format!("{link}?page={}", p + 1));
                    axum::Json(json!({"data": data, "next": next}))
                }
            },
        ),
    );
    tokio::spawn(async move { axum::serve(listener, app).await });
    base
}

/// Deliveries per second and CPU per delivery (µs).
pub struct Rate {
    pub per_sec: f64,
    pub cpu_us: f64,
}

pub fn rate(n: u64, wall: Duration, cpu: Duration) -> Rate {
    Rate {
        per_sec: n as f64 / wall.as_secs_f64(),
        cpu_us: cpu.as_secs_f64() * 1e6 / n as f64,
    }
}

/// Runs `dispatcher` (the daemon's delivery worker) until `store` has no pending delivery, then
/// stops it; checks that all `n` deliveries are recorded as delivered. Its rate and CPU.
pub async fn drain(dispatcher: Arc<Dispatcher>, store: &Store, n: u64) -> Rate {
    let cancel = tokio_util::sync::CancellationToken::new();
    let wake = Arc::new(tokio::sync::Notify::new());
    let start = Instant::now();
    let cpu0 = cpu();
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
    let ours = rate(n, start.elapsed(), cpu() - cpu0);
    cancel.cancel();
    let _ = task.await;
    let delivered = store
        .deliveries_in(DeliveryState::Delivered, usize::MAX)
        .expect("rows")
        .len() as u64;
    assert_eq!(delivered, n, "every delivery recorded as delivered");
    ours
}

/// The benches' configuration: one source polling `source` (next links, `emit_new`) into a
/// state file in `dir`, and `endpoint` (an `[endpoints.NAME]` table; `{SECRET}` becomes the path
/// of the signing secret written into `dir`).
pub fn config(source: &str, dir: &std::path::Path, endpoint: &str) -> pollhook::config::Config {
    std::fs::write(dir.join("secret"), "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").expect("secret");
    let endpoint = endpoint.replace("{SECRET}", &dir.join("secret").display().to_string());
    let text = format!(
        r#"
[store]
path = "{store}"
[admin]
listen = "off"
[sources.bench]
url = "{source}"
every = "24h"
items = "/data"
status = "/status"
ignore_fields = ["/modifiedTime"]
first_poll = "emit_new"
max_pages = 100000
[sources.bench.pagination]
style = "next_link"
next = "/next"
{endpoint}
"#,
        store = dir.join("bench.redb").display(),
    );
    pollhook::config::Config::from_toml_str(&text, "bench.toml").expect("config")
}
