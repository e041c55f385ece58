//! The demo: a simulated legacy booking API and a signature-verifying receiver on loopback, with
//! the real pipeline (config loader, redb store, poller, outbox, delivery) between them.
//!
//! [`simulator`] and [`receiver`] also serve the integration tests.

pub mod receiver;
pub mod simulator;

/// An HTTP request as the simulator or the receiver saw it: what both record for assertions.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Captured {
    /// HTTP method, e.g. `"POST"`.
    pub method: String,
    /// The path without the query (not percent-decoded), e.g. `"/hooks/bookings"`.
    pub path: String,
    /// The query pairs, percent-decoded, in order (repeated keys repeat, `status[]` stays as is).
    pub query: Vec<(String, String)>,
    /// The headers in order, names lower-case, values decoded lossily as UTF-8.
    pub headers: Vec<(String, String)>,
    /// The raw body.
    pub body: Vec<u8>,
}

impl Captured {
    /// Records a request's parts.
    pub fn new(
        method: &axum::http::Method,
        uri: &axum::http::Uri,
        headers: &axum::http::HeaderMap,
        body: Vec<u8>,
    ) -> Captured {
        Captured {
            method: method.as_str().to_string(),
            path: uri.path().to_string(),
            query: Captured::query_of(uri),
            headers: Captured::headers_of(headers),
            body,
        }
    }

    /// Header pairs in order, names lower-case, values decoded lossily as UTF-8.
    pub fn headers_of(headers: &axum::http::HeaderMap) -> Vec<(String, String)> {
        headers
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().to_ascii_lowercase(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect()
    }

    /// The decoded query pairs of a URI, in order.
    pub fn query_of(uri: &axum::http::Uri) -> Vec<(String, String)> {
        uri.query()
            .map(|q| {
                url::form_urlencoded::parse(q.as_bytes())
                    .into_owned()
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The first value of query parameter `name` (exact key).
    pub fn query_param(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

use std::time::Duration;

use base64::Engine as _;
use tokio::sync::broadcast::error::RecvError;
use tokio_util::sync::CancellationToken;

use crate::app::{App, AppError};
use crate::config::{Config, ConfigError};
use crate::delivery::Notice;
use crate::outbox::DeliveryState;

/// Demo settings.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    /// Stop after this long (`None`: until Ctrl-C).
    pub duration: Option<Duration>,
    /// How often the simulator changes a booking.
    pub pace: Duration,
    /// How often pollhook polls the simulator.
    pub poll_every: Duration,
    /// The simulator pings pollhook's ingress after each change (Beds24 v1 style), so changes
    /// are looked up at once instead of waiting for the next poll.
    pub ping: bool,
}

/// Why the demo could not run.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    /// Binding a loopback port or writing the temporary files failed.
    #[error("demo setup: {0}")]
    Io(#[from] std::io::Error),
    /// The generated configuration was refused (a bug).
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The pipeline could not start.
    #[error(transparent)]
    App(#[from] AppError),
}

/// What the demo saw, for the closing summary (and tests).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DemoSummary {
    /// Changes the simulator made.
    pub simulated: usize,
    /// Events pollhook detected.
    pub detected: usize,
    /// Deliveries acknowledged by the receiver.
    pub delivered: usize,
    /// Failed attempts (the receiver is made to fail now and then, to show retries).
    pub retried: usize,
    /// Requests whose signature the receiver verified.
    pub signatures_valid: usize,
    /// Requests whose signature failed verification (should stay 0).
    pub signatures_invalid: usize,
}

fn clock() -> String {
    chrono::Local::now().format("%H:%M:%S").to_string()
}

/// Runs the demo, printing to `out`, until `cancel` or the configured duration.
pub async fn run(
    opts: DemoOptions,
    cancel: CancellationToken,
    out: &mut (dyn std::io::Write + Send),
) -> Result<DemoSummary, DemoError> {
    let dir = tempfile::tempdir()?;
    let key: [u8; 32] = rand::random();
    let secret = format!(
        "whsec_{}",
        base64::engine::general_purpose::STANDARD.encode(key)
    );
    let secret_path = dir.path().join("crm.secret");
    std::fs::write(&secret_path, &secret)?;
    let ping_token = format!("{:032x}", rand::random::<u128>());
    let token_path = dir.path().join("ping.token");
    std::fs::write(&token_path, &ping_token)?;
    let ingress_listener = if opts.ping {
        Some(tokio::net::TcpListener::bind((std::net::Ipv4Addr::LOCALHOST, 0)).await?)
    } else {
        None
    };
    let ping_tables = match &ingress_listener {
        Some(l) => format!(
            r#"
[ingress]
listen = "{addr}"
[sources.demo.lookup]
query = {{ id = "{{{{ id }}}}" }}
[sources.demo.ping]
preset = "beds24_v1"
path = "/ping/demo"
auth = {{ type = "token", in = "query", secret = {{ file = {token:?} }} }}
"#,
            addr = l.local_addr()?,
            token = token_path.display().to_string(),
        ),
        None => String::new(),
    };

    let sim = simulator::Simulator::start(simulator::SimConfig {
        page_size: 5,
        initial_bookings: 12,
        pace: Some(opts.pace),
        seed: rand::random(),
    })
    .await?;
    let receiver = receiver::Receiver::start(vec![key.to_vec()]).await?;

    let toml = format!(
        r#"
[store]
path = {store:?}
[admin]
listen = "off"

[sources.demo]
url = {url:?}
every = "{every}ms"
items = "/data"
id = "/id"
status = "/status"
cancelled_values = ["cancelled"]
ignore_fields = ["/modifiedTime"]
[sources.demo.pagination]
style = "next_link"
next = "/pages/nextPageLink"
{ping_tables}

[endpoints.crm]
url = {crm:?}
format = "v2"
secrets = [{{ file = {secret:?} }}]
retry_schedule = ["0s", "2s", "5s", "10s"]

[endpoints.legacy]
url = {legacy:?}
format = "v1"
secrets = [{{ file = {secret:?} }}]
"#,
        store = dir.path().join("pollhook.redb").display().to_string(),
        url = sim.bookings_url(),
        every = opts.poll_every.as_millis().max(1000),
        crm = receiver.url("/crm"),
        legacy = receiver.url("/beds24?propkey=demo"),
        secret = secret_path.display().to_string(),
    );
    let config = Config::from_toml_str(&toml, "demo.toml")?;
    let app = App::build(config)?;
    let _pinger = match ingress_listener {
        Some(l) => {
            let url = format!("http://{}/ping/demo?token={ping_token}", l.local_addr()?);
            tokio::spawn(crate::ingress::serve(l, app.clone(), cancel.child_token()));
            Some(sim.ping_to(&url, simulator::PingShape::Beds24V1))
        }
        None => None,
    };

    let _ = writeln!(
        out,
        "pollhook demo: a simulated booking API, the real pipeline, a receiver that checks signatures"
    );
    let _ = writeln!(
        out,
        "  booking API  {}  (12 bookings, 5 per page, a change every {:?})",
        sim.bookings_url(),
        opts.pace
    );
    let _ = writeln!(
        out,
        "  receiver     {}  (v2 JSON at /crm, Beds24 v1 pings at /beds24)",
        receiver.url("")
    );
    let _ = writeln!(
        out,
        "  state        {}",
        dir.path().join("pollhook.redb").display()
    );
    if opts.ping {
        let _ = writeln!(
            out,
            "  pings        on: the booking API pings pollhook after each change (Beds24 v1 style); polls stay the safety net"
        );
    }
    let _ = writeln!(
        out,
        "  The first poll records a baseline; changes after it are pushed. Ctrl-C to stop.\n"
    );
    // When each booking last changed, to show how long detection took.
    let mut changed_at: std::collections::HashMap<u64, std::time::Instant> = Default::default();

    let mut sim_changes = sim.on_change();
    let mut notices = app.subscribe();
    let mut requests = receiver.on_request();
    let run_cancel = cancel.child_token();
    let runner = {
        let app = app.clone();
        let c = run_cancel.clone();
        tokio::spawn(async move { app.run(c).await })
    };
    let deadline = opts
        .duration
        .map(|d| tokio::time::Instant::now() + d)
        .unwrap_or_else(|| tokio::time::Instant::now() + Duration::from_secs(100 * 365 * 86400));
    let mut summary = DemoSummary::default();
    loop {
        tokio::select! {
            _ = cancel.cancelled() => break,
            _ = tokio::time::sleep_until(deadline) => break,
            c = sim_changes.recv() => match c {
                Ok(c) => {
                    summary.simulated += 1;
                    // Now and then the receiver stumbles, to show a retry with the same webhook-id.
                    if summary.simulated % 6 == 0 {
                        receiver.fail_next(1, 503);
                    }
                    changed_at.insert(c.id, std::time::Instant::now());
                    let _ = writeln!(out, "{}  booking API  booking {} {}", clock(), c.id, c.kind);
                }
                Err(RecvError::Lagged(_)) => {}
                Err(RecvError::Closed) => break,
            },
            n = notices.recv() => match n {
                Ok(Notice::Detected(e)) => {
                    summary.detected += 1;
                    let fields: Vec<&str> = e.changes.iter().map(|c| c.path.as_str()).collect();
                    let detail = if fields.is_empty() { String::new() } else { format!("  changed: {}", fields.join(", ")) };
                    let after = e.booking_id.parse::<u64>().ok()
                        .and_then(|id| changed_at.remove(&id))
                        .map(|t| format!("  ({} ms after the change)", t.elapsed().as_millis()))
                        .unwrap_or_default();
                    let _ = writeln!(out, "{}  detected     {:<6} booking {}  {}{}{}", clock(), e.kind.status_word(), e.booking_id, e.id, after, detail);
                }
                Ok(Notice::Attempted { endpoint, event, delivery }) => {
                    let last = delivery.history.last();
                    let status = last.and_then(|a| a.status).map(|s| s.to_string())
                        .or_else(|| last.and_then(|a| a.error.clone()))
                        .unwrap_or_default();
                    let ms = match last.map(|a| a.latency_ms).unwrap_or(0) {
                        0 => "<1".to_string(),
                        n => n.to_string(),
                    };
                    let what = match delivery.state {
                        DeliveryState::Delivered => { summary.delivered += 1; "delivered".to_string() }
                        DeliveryState::Pending => {
                            summary.retried += 1;
                            format!("FAILED, retry at {}", crate::delivery::rfc3339(delivery.next_ms))
                        }
                        DeliveryState::Dead => "DEAD-LETTERED".to_string(),
                    };
                    let _ = writeln!(out, "{}  -> {:<7} {:<6} booking {}  {} in {} ms, attempt {}: {}", clock(), endpoint, event.kind.status_word(), event.booking_id, status, ms, delivery.attempts, what);
                }
                Err(RecvError::Lagged(_)) => {}
                Err(RecvError::Closed) => break,
            },
            r = requests.recv() => match r {
                Ok(r) => match r.signature_valid {
                    Some(true) => summary.signatures_valid += 1,
                    Some(false) => {
                        summary.signatures_invalid += 1;
                        let _ = writeln!(out, "{}  receiver     INVALID SIGNATURE on {} {}", clock(), r.method, r.path);
                    }
                    None => {}
                },
                Err(RecvError::Lagged(_)) => {}
                Err(RecvError::Closed) => break,
            },
        }
    }
    run_cancel.cancel();
    let _ = runner.await;
    sim.shutdown();
    receiver.shutdown();
    let _ = writeln!(
        out,
        "\nsummary: {} simulated changes, {} detected, {} delivered, {} failed attempts retried, signatures verified {}/{}",
        summary.simulated,
        summary.detected,
        summary.delivered,
        summary.retried,
        summary.signatures_valid,
        summary.signatures_valid + summary.signatures_invalid
    );
    Ok(summary)
}
