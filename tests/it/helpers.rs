//! `spawn_app`: a simulator, a receiver and a built (not running) pollhook between them.

use std::time::Duration;

use pollhook::App;
use pollhook::config::Config;
use pollhook::demo::receiver::{Received, Receiver};
use pollhook::demo::simulator::{SimConfig, Simulator};

/// A signing secret from the Standard Webhooks test vectors.
pub const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

pub struct Options {
    pub initial_bookings: usize,
    pub page_size: usize,
    /// Extra lines for `[sources.hotel]`.
    pub source_extra: String,
    /// Full `[endpoints.*]` tables; `{RECEIVER}` and `{SECRET_FILE}` are substituted.
    pub endpoints: String,
    /// Extra lines for `[admin]` (whose `listen` is "off": tests serve the API themselves).
    pub admin_extra: String,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            initial_bookings: 3,
            page_size: 2,
            source_extra: String::new(),
            endpoints: r#"
[endpoints.crm]
url = "{RECEIVER}/crm"
format = "v2"
secrets = [{ file = "{SECRET_FILE}" }]
retry_schedule = ["0s", "5s", "5m", "30m"]
jitter = 0.0
"#
            .into(),
            admin_extra: String::new(),
        }
    }
}

pub struct TestApp {
    pub app: App,
    pub sim: Simulator,
    pub receiver: Receiver,
    pub dir: tempfile::TempDir,
    pub toml: String,
}

pub fn secret_key() -> Vec<u8> {
    pollhook::signing::SigningKey::parse(SECRET)
        .unwrap()
        .bytes()
        .to_vec()
}

pub async fn spawn_app(opts: Options) -> TestApp {
    let sim = Simulator::start(SimConfig {
        page_size: opts.page_size,
        initial_bookings: opts.initial_bookings,
        pace: None,
        seed: 7,
    })
    .await
    .unwrap();
    let receiver = Receiver::start(vec![secret_key()]).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let toml = config_text(&opts, &sim, &receiver, &dir);
    let app = build(&toml);
    TestApp {
        app,
        sim,
        receiver,
        dir,
        toml,
    }
}

pub fn config_text(
    opts: &Options,
    sim: &Simulator,
    receiver: &Receiver,
    dir: &tempfile::TempDir,
) -> String {
    let secret_file = dir.path().join("secret");
    std::fs::write(&secret_file, SECRET).unwrap();
    let endpoints = opts
        .endpoints
        .replace("{RECEIVER}", &receiver.url(""))
        .replace("{SECRET_FILE}", &secret_file.display().to_string());
    format!(
        r#"
[store]
path = "{store}"
[admin]
listen = "off"
{admin_extra}

[sources.hotel]
url = "{url}"
every = "1h"
items = "/data"
status = "/status"
ignore_fields = ["/modifiedTime"]
retry_backoff = "10ms"
{extra}
[sources.hotel.pagination]
style = "next_link"
next = "/pages/nextPageLink"
{endpoints}
"#,
        store = dir.path().join("state.redb").display(),
        url = sim.bookings_url(),
        extra = opts.source_extra,
        admin_extra = opts.admin_extra,
    )
}

pub fn build(toml: &str) -> App {
    let config = Config::from_toml_str(toml, "test.toml").unwrap_or_else(|e| panic!("{e}"));
    App::build(config).unwrap()
}

impl TestApp {
    /// Polls and asserts success; returns the number of events.
    pub async fn poll(&self) -> usize {
        let r = self
            .app
            .poll_now("hotel")
            .await
            .unwrap_or_else(|e| panic!("poll failed: {e}"));
        r.events.len()
    }

    /// Delivery rounds until nothing is due right now.
    pub async fn deliver(&self) {
        for _ in 0..20 {
            let r = self.app.deliver_due().await.unwrap();
            if r.attempted == 0 {
                return;
            }
        }
        panic!("deliveries did not settle");
    }

    pub fn accepted(&self) -> Vec<Received> {
        self.receiver.accepted()
    }
}

pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

pub const HOUR_MS: i64 = 3_600_000;

pub async fn wait_until(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + timeout;
    while !f() {
        if std::time::Instant::now() > deadline {
            panic!("timed out waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Verifies a received request with the official Standard Webhooks library.
pub fn verify_with_official_library(r: &Received) {
    let wh = standardwebhooks::Webhook::new(SECRET).unwrap();
    let mut headers = http::HeaderMap::new();
    for name in ["webhook-id", "webhook-timestamp", "webhook-signature"] {
        let v = r.header(name).unwrap_or_else(|| panic!("missing {name}"));
        headers.insert(name, v.parse().unwrap());
    }
    wh.verify(&r.body, &headers)
        .unwrap_or_else(|e| panic!("official library rejected the signature: {e:?}"));
}

/// Serves the admin API of `app` on 127.0.0.1:0 until `cancel`; returns its address.
pub async fn start_admin(
    app: &App,
    cancel: &tokio_util::sync::CancellationToken,
) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(pollhook::admin::serve(
        listener,
        app.clone(),
        cancel.clone(),
    ));
    addr
}

/// One raw HTTP request (`head` is the request line and headers, without the blank line) on a
/// fresh connection, so tests control every header, Host included. Returns the status and body.
pub async fn raw_http(addr: std::net::SocketAddr, head: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!("{}\r\nConnection: close\r\n\r\n", head.trim_end());
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut out))
        .await
        .expect("the admin API answers")
        .unwrap();
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {text:?}"));
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    (status, body.to_string())
}
