//! NATS JetStream endpoints against a real `nats-server` (JetStream enabled, a free loopback
//! port, its store in a temporary directory), read back with an async-nats JetStream consumer:
//! every event exactly once per event id and in per-booking order, a broker restart in the
//! middle of a burst, kill -9 of the real binary while it publishes, auth failures, `.creds`
//! against a server in operator (JWT) mode whose keys and JWTs the test makes, a missing
//! stream, faults that dead-letter without holding up other endpoints, and two sharded
//! instances publishing to one stream. Without `nats-server` installed these tests fail: run
//! `scripts/test`, which installs it, or `apt-get install nats-server`.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use async_nats::jetstream::{self, consumer, stream};
use futures_util::StreamExt;
use pollhook::config::{Config, Selection, Shard, shard_of};
use pollhook::demo::simulator::{SimConfig, Simulator};
use pollhook::outbox::DeliveryState;
use serde_json::Value;

use crate::helpers::*;

/// The `nats-server` binary: `POLLHOOK_NATS_SERVER`, else the first found on `PATH` or in the
/// places Debian installs it. Panics (never skips) when there is none.
pub fn nats_server_binary() -> PathBuf {
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
                "nats-server is not installed, and the NATS tests need a real one: run `scripts/test` (it installs the packages the suite needs) or `apt-get install nats-server`"
            )
        })
}

/// A nats-server with JetStream on 127.0.0.1, its store and log in a temporary directory.
pub struct NatsServer {
    child: Option<Child>,
    pub port: u16,
    pub dir: tempfile::TempDir,
    starts: usize,
}

impl NatsServer {
    /// Starts a server; `extra` is added to its configuration file (auth, limits). The server
    /// picks a free loopback port itself (`-1`, its port 0), read back from its log; restarts
    /// reuse that port.
    pub async fn start(extra: &str) -> NatsServer {
        let dir = tempfile::tempdir().unwrap();
        let store_dir = dir.path().join("js").display().to_string();
        let conf = |port: &str| {
            format!("listen: 127.0.0.1:{port}\njetstream {{ store_dir: {store_dir:?} }}\n{extra}\n")
        };
        std::fs::write(dir.path().join("nats.conf"), conf("-1")).unwrap();
        let mut s = NatsServer {
            child: None,
            port: 0,
            dir,
            starts: 0,
        };
        s.launch().await;
        let log = s.log();
        s.port = log
            .lines()
            .find_map(|l| {
                l.split("Listening for client connections on 127.0.0.1:")
                    .nth(1)
            })
            .and_then(|p| p.trim().parse().ok())
            .unwrap_or_else(|| panic!("no client port in the nats-server log:\n{log}"));
        std::fs::write(s.dir.path().join("nats.conf"), conf(&s.port.to_string())).unwrap();
        s
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("nats.log")).unwrap_or_default()
    }

    /// Starts the process (same port, same store) and waits until it says it is ready.
    async fn launch(&mut self) {
        let child = Command::new(nats_server_binary())
            .arg("-c")
            .arg(self.dir.path().join("nats.conf"))
            .arg("-l")
            .arg(self.dir.path().join("nats.log"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start nats-server: {e}"));
        self.child = Some(child);
        self.starts += 1;
        let want = self.starts;
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while self.log().matches("Server is ready").count() < want {
            if let Some(c) = self.child.as_mut()
                && let Ok(Some(status)) = c.try_wait()
            {
                panic!("nats-server exited ({status}):\n{}", self.log());
            }
            assert!(
                std::time::Instant::now() < deadline,
                "nats-server did not become ready:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Stops it the way a service manager does (SIGTERM) and waits for the exit.
    pub async fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &c.id().to_string()])
                .status();
            let deadline = std::time::Instant::now() + Duration::from_secs(20);
            while c.try_wait().ok().flatten().is_none() {
                if std::time::Instant::now() > deadline {
                    let _ = c.kill();
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }

    /// Starts it again on the same port over the same store.
    pub async fn restart(&mut self) {
        self.stop().await;
        self.launch().await;
    }

    /// A JetStream context for the test's own reads (`user:password` when auth is on).
    pub async fn js(&self, user: Option<(&str, &str)>) -> jetstream::Context {
        let opts = match user {
            Some((u, p)) => async_nats::ConnectOptions::with_user_and_password(u.into(), p.into()),
            None => async_nats::ConnectOptions::new(),
        };
        let client = opts.connect(self.url()).await.unwrap();
        jetstream::new(client)
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Creates the stream `name` capturing `subjects`, with the default 2-minute duplicate window.
pub async fn create_stream(js: &jetstream::Context, name: &str, subjects: &[&str]) {
    js.create_stream(stream::Config {
        name: name.into(),
        subjects: subjects.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    })
    .await
    .unwrap();
}

/// One message read back from the stream.
#[derive(Debug, Clone)]
pub struct Msg {
    pub subject: String,
    pub msg_id: String,
    pub headers: BTreeMap<String, String>,
    pub payload: Vec<u8>,
    pub body: Value,
}

/// Messages in the stream now.
pub async fn stored(js: &jetstream::Context, name: &str) -> u64 {
    js.get_stream(name)
        .await
        .unwrap()
        .info()
        .await
        .unwrap()
        .state
        .messages
}

/// Every message of the stream in stream order, read by a pull consumer (as a downstream app
/// would).
pub async fn consume_all(js: &jetstream::Context, name: &str) -> Vec<Msg> {
    let total = stored(js, name).await as usize;
    let stream = js.get_stream(name).await.unwrap();
    let consumer = stream
        .create_consumer(consumer::pull::Config {
            ack_policy: consumer::AckPolicy::None,
            deliver_policy: consumer::DeliverPolicy::All,
            ..Default::default()
        })
        .await
        .unwrap();
    let mut messages = consumer.messages().await.unwrap();
    let mut out = Vec::new();
    while out.len() < total {
        let m = tokio::time::timeout(Duration::from_secs(20), messages.next())
            .await
            .expect("the consumer stopped delivering")
            .expect("message stream ended")
            .expect("message");
        let headers: BTreeMap<String, String> = m
            .headers
            .iter()
            .flat_map(|h| h.iter())
            .map(|(k, v)| {
                (
                    k.to_string(),
                    v.first().map(|v| v.to_string()).unwrap_or_default(),
                )
            })
            .collect();
        out.push(Msg {
            subject: m.subject.to_string(),
            msg_id: headers.get("Nats-Msg-Id").cloned().unwrap_or_default(),
            body: serde_json::from_slice(&m.payload).unwrap_or(Value::Null),
            payload: m.payload.to_vec(),
            headers,
        });
    }
    out
}

/// Every event id once, and per booking (source and id) strictly increasing sequence numbers
/// in stream order.
fn assert_once_and_in_order(msgs: &[Msg]) {
    let mut ids = BTreeSet::new();
    for m in msgs {
        assert!(!m.msg_id.is_empty(), "no Nats-Msg-Id on {}", m.subject);
        assert!(ids.insert(m.msg_id.clone()), "{} stored twice", m.msg_id);
        assert_eq!(m.headers.get("webhook-id"), Some(&m.msg_id));
        assert_eq!(m.body["id"].as_str(), Some(m.msg_id.as_str()));
    }
    let mut last: HashMap<(String, String), u64> = HashMap::new();
    for m in msgs {
        let key = (
            m.body["source"].as_str().unwrap().to_string(),
            m.body["booking_id"].as_str().unwrap().to_string(),
        );
        let seq = m.body["sequence"].as_u64().unwrap();
        if let Some(prev) = last.insert(key.clone(), seq) {
            assert!(prev < seq, "{key:?}: sequence {seq} after {prev}");
        }
    }
}

/// Checks the Standard Webhooks headers of a message with the official library.
/// An app whose first poll emits two new bookings to `endpoints`.
async fn two_new_bookings(endpoints: String) -> TestApp {
    spawn_app(Options {
        initial_bookings: 2,
        page_size: 10,
        source_extra: "first_poll = \"emit_new\"".into(),
        endpoints,
        ..Default::default()
    })
    .await
}

/// The stream holds every event exactly once, under its event id, and each booking's messages
/// in order.
fn assert_every_event_once(msgs: &[Msg], events: &[pollhook::outbox::Event]) {
    assert_once_and_in_order(msgs);
    let expected: BTreeSet<String> = events.iter().map(|e| e.id.clone()).collect();
    let got: BTreeSet<String> = msgs.iter().map(|m| m.msg_id.clone()).collect();
    assert_eq!(
        got, expected,
        "every event once, under the id it was created with"
    );
}

fn verify_signature(m: &Msg) {
    let wh = standardwebhooks::Webhook::new(SECRET).unwrap();
    let mut headers = http::HeaderMap::new();
    for name in ["webhook-id", "webhook-timestamp", "webhook-signature"] {
        let v = m
            .headers
            .get(name)
            .unwrap_or_else(|| panic!("missing {name}"));
        headers.insert(name, v.parse().unwrap());
    }
    wh.verify(&m.payload, &headers)
        .unwrap_or_else(|e| panic!("official library rejected the signature: {e:?}"));
}

/// Retries that outlast a broker restart (about 25 s of attempts).
const MANY_TRIES: &str = r#"["0s", "200ms", "500ms", "1s", "1s", "1s", "1s", "1s", "1s", "1s", "1s", "1s", "1s", "1s", "1s", "1s", "1s", "1s", "1s", "1s", "1s", "1s", "1s", "1s", "1s", "1s", "1s", "1s"]"#;

/// Two attempts, the second an hour later (tests move the clock).
const TWO_TRIES: &str = r#"["0s", "1h"]"#;

/// A NATS endpoint on `server` publishing to `bookings.SOURCE.KIND.BOOKING`.
fn nats_endpoint(server: &NatsServer, name: &str, retry: &str, extra: &str) -> String {
    format!(
        r#"
[endpoints.{name}]
type = "nats"
servers = ["{url}"]
subject = "bookings.{{{{ event.source }}}}.{{{{ event.kind }}}}.{{{{ event.booking_id }}}}"
secrets = [{{ file = "{{SECRET_FILE}}" }}]
retry_schedule = {retry}
jitter = 0.0
timeout = "2s"
connect_timeout = "1s"
{extra}
"#,
        url = server.url()
    )
}

async fn deliver_until_idle(t: &TestApp) {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let r = t.app.deliver_due().await.unwrap();
        if r.attempted == 0 {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "deliveries did not settle"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_event_arrives_once_in_per_booking_order_with_verifiable_signatures() {
    let server = NatsServer::start("").await;
    let js = server.js(None).await;
    create_stream(&js, "BOOKINGS", &["bookings.>"]).await;
    let t = spawn_app(Options {
        initial_bookings: 3,
        page_size: 2,
        endpoints: nats_endpoint(&server, "bus", MANY_TRIES, "stream = \"BOOKINGS\"")
            + &Options::default().endpoints,
        ..Options::default()
    })
    .await;
    let warnings = pollhook::delivery::preflight(&t.app.config().endpoints)
        .await
        .unwrap();
    assert!(
        warnings.iter().all(|w| w.contains("duplicate_window")),
        "{warnings:?}"
    );
    assert_eq!(t.poll().await, 0, "baseline");
    // Several changes per booking before anything is delivered: each lane holds a queue, and
    // the worker must send it in order, one at a time.
    let ids: Vec<u64> = t
        .sim
        .bookings()
        .iter()
        .map(|b| b["id"].as_u64().unwrap())
        .collect();
    let fresh = t.sim.create_booking();
    t.poll().await;
    for round in 0..3 {
        t.sim.modify_booking(ids[0]);
        t.sim.modify_booking(fresh);
        if round == 1 {
            t.sim.set_guest_name(ids[1], "Zoë.*", "> O'Brien");
        }
        t.poll().await;
    }
    t.sim.cancel_booking(ids[0]);
    t.poll().await;
    deliver_until_idle(&t).await;

    let events = t.app.recent_events(1000).await.unwrap();
    let msgs = consume_all(&js, "BOOKINGS").await;
    assert_eq!(msgs.len(), events.len(), "one message per event");
    assert_every_event_once(&msgs, &events);
    for m in &msgs {
        verify_signature(m);
        assert_eq!(
            m.subject,
            format!(
                "bookings.hotel.{}.{}",
                m.body["status"].as_str().unwrap(),
                m.body["booking_id"].as_str().unwrap()
            )
        );
        assert_eq!(
            m.headers.get("Nats-Expected-Stream").map(String::as_str),
            Some("BOOKINGS")
        );
    }
    let kinds: Vec<&str> = msgs
        .iter()
        .filter(|m| m.body["booking_id"].as_str() == Some(&*ids[0].to_string()))
        .map(|m| m.body["status"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["modify", "modify", "modify", "cancel"]);
    // The HTTP endpoint beside it got the same events.
    assert_eq!(t.accepted().len(), events.len());

    // A replay publishes the same id again: JetStream answers "duplicate", which is delivered,
    // and the stream still holds one copy.
    let replayed = t
        .app
        .replay(pollhook::store::ReplaySelector::Event {
            id: events[0].id.clone(),
            endpoint: Some("bus".into()),
        })
        .await
        .unwrap();
    assert_eq!(replayed, 1);
    deliver_until_idle(&t).await;
    assert_eq!(stored(&js, "BOOKINGS").await as usize, events.len());
    let delivered = t
        .app
        .deliveries(DeliveryState::Delivered, 10_000)
        .await
        .unwrap();
    let again = delivered
        .iter()
        .find(|d| d.endpoint == "bus" && d.event_id == events[0].id)
        .unwrap();
    assert!(
        again.history.last().unwrap().body.contains("duplicate"),
        "{:?}",
        again.history
    );
    let report = t.app.endpoint_report();
    let bus = report.iter().find(|r| r.name == "bus").unwrap();
    assert_eq!(bus.delivered_total as usize, events.len() + 1);
    assert_eq!(bus.dead_total, 0);

    // `/metrics` counts NATS publishes as it counts HTTP requests: every acknowledged publish
    // is a delivery, and each attempt's latency is in the same histogram.
    let cancel = tokio_util::sync::CancellationToken::new();
    let addr = start_admin(&t.app, &cancel).await;
    let text = reqwest::get(format!("http://{addr}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    cancel.cancel();
    let value = |series: &str| -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix(series).and_then(|v| v.trim().parse().ok()))
            .unwrap_or_else(|| panic!("no {series} in\n{text}"))
    };
    let attempts = (events.len() + 1) as f64;
    assert_eq!(
        value("pollhook_deliveries_total{endpoint=\"bus\",outcome=\"delivered\"}"),
        attempts
    );
    assert_eq!(
        value("pollhook_delivery_latency_seconds_count{endpoint=\"bus\"}"),
        attempts
    );
}

/// Polls `f` every 10 ms until it holds, failing with `what` after `secs` seconds.
async fn eventually<F, Fut>(what: &str, secs: u64, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = std::time::Instant::now() + Duration::from_secs(secs);
    while !f().await {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_restart_mid_burst_loses_nothing_and_stores_each_id_once() {
    let mut server = NatsServer::start("").await;
    let js = server.js(None).await;
    create_stream(&js, "BOOKINGS", &["bookings.>"]).await;
    let n = 400;
    let t = spawn_app(Options {
        initial_bookings: n,
        page_size: 100,
        source_extra: "first_poll = \"emit_new\"".into(),
        endpoints: nats_endpoint(
            &server,
            "bus",
            MANY_TRIES,
            "stream = \"BOOKINGS\"\nmax_in_flight = 4",
        ),
        ..Default::default()
    })
    .await;
    // The daemon's own loop: the schedule polls at once, the worker publishes.
    let cancel = tokio_util::sync::CancellationToken::new();
    let run = tokio::spawn({
        let (app, c) = (t.app.clone(), cancel.clone());
        async move { app.run(c).await }
    });
    eventually("the first acknowledged publishes", 30, || async {
        stored(&js, "BOOKINGS").await > 0
    })
    .await;
    // Down in the middle of the burst: publishes in flight lose their connection or their
    // acknowledgement, new ones cannot connect; all of that is retried.
    server.stop().await;
    let failed = || {
        t.app
            .endpoint_report()
            .iter()
            .map(|r| r.failed_attempts_total)
            .sum::<u64>()
    };
    // Changes detected while it is down queue up and fail too, until it is back.
    for _ in 0..50 {
        t.sim.create_booking();
    }
    assert_eq!(t.poll().await, 50);
    eventually("failed attempts while the broker is down", 30, || async {
        failed() > 0
    })
    .await;
    let before_restart = t.app.counts().await.unwrap();
    server.restart().await;
    let js = server.js(None).await;
    eventually("every delivery recorded", 90, || async {
        t.app.counts().await.unwrap().pending == 0
    })
    .await;
    cancel.cancel();
    run.await.unwrap();

    let counts = t.app.counts().await.unwrap();
    assert_eq!(counts.dead, 0, "nothing dead-lettered");
    assert!(before_restart.pending >= 50);
    let events = t.app.recent_events(10 * n).await.unwrap();
    assert_eq!(events.len(), n + 50);
    let msgs = consume_all(&js, "BOOKINGS").await;
    assert_every_event_once(&msgs, &events);
    let delivered = t
        .app
        .deliveries(DeliveryState::Delivered, 10 * n)
        .await
        .unwrap();
    let retried = delivered.iter().filter(|d| d.attempts > 1).count();
    let dups = delivered
        .iter()
        .filter(|d| {
            d.history
                .last()
                .is_some_and(|a| a.body.contains("duplicate"))
        })
        .count();
    println!(
        "broker restart: {} events, {} pending when it went down, {} failed attempts, {retried} deliveries retried, {dups} acknowledged as duplicates",
        events.len(),
        before_restart.pending,
        failed()
    );
    assert!(retried > 0);
}

/// The real binary, as a daemon.
struct Daemon(Child);

impl Daemon {
    fn start(config: &Path, log: &Path, args: &[&str]) -> Daemon {
        Daemon::start_with_filter(config, log, args, "info")
    }

    /// Started with `RUST_LOG=filter`.
    fn start_with_filter(config: &Path, log: &Path, args: &[&str], filter: &str) -> Daemon {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .unwrap();
        Daemon(
            Command::new(env!("CARGO_BIN_EXE_pollhook"))
                .args(["run", "--config"])
                .arg(config)
                .args(args)
                .env("RUST_LOG", filter)
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .unwrap(),
        )
    }

    fn kill9(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill9();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_of_pollhook_while_publishing_loses_nothing_and_stores_each_id_once() {
    let server = NatsServer::start("").await;
    let js = server.js(None).await;
    create_stream(&js, "BOOKINGS", &["bookings.>"]).await;
    let n = 1500;
    let TestApp {
        app,
        sim,
        dir,
        toml,
        ..
    } = spawn_app(Options {
        initial_bookings: n,
        page_size: 250,
        source_extra: "first_poll = \"emit_new\"".into(),
        endpoints: nats_endpoint(
            &server,
            "bus",
            MANY_TRIES,
            "stream = \"BOOKINGS\"\nmax_in_flight = 2",
        ),
        ..Default::default()
    })
    .await;
    drop(app);
    let config = dir.path().join("pollhook.toml");
    std::fs::write(&config, toml.replace("every = \"1h\"", "every = \"1s\"")).unwrap();
    let log = dir.path().join("daemon.log");
    let show_log = || std::fs::read_to_string(&log).unwrap_or_default();

    let mut daemon = Daemon::start(&config, &log, &[]);
    eventually("the first acknowledged publishes", 60, || async {
        stored(&js, "BOOKINGS").await > 0
    })
    .await;
    daemon.kill9();
    let at_kill = stored(&js, "BOOKINGS").await;
    // Changes while it is down are detected after the restart.
    let changed: Vec<u64> = sim
        .bookings()
        .iter()
        .take(5)
        .map(|b| b["id"].as_u64().unwrap())
        .collect();
    for id in &changed {
        sim.modify_booking(*id);
    }
    let mut daemon = Daemon::start(&config, &log, &[]);
    let want = (n + changed.len()) as u64;
    eventually("every event in the stream", 120, || async {
        stored(&js, "BOOKINGS").await >= want
    })
    .await;
    daemon.kill9();

    let store = pollhook::store::Store::open(&dir.path().join("state.redb")).unwrap();
    let events = store.events().unwrap();
    assert_eq!(events.len() as u64, want, "{}", show_log());
    let msgs = consume_all(&js, "BOOKINGS").await;
    assert_every_event_once(&msgs, &events);
    for id in &changed {
        let kinds: Vec<&str> = msgs
            .iter()
            .filter(|m| m.body["booking_id"].as_str() == Some(&*id.to_string()))
            .map(|m| m.body["status"].as_str().unwrap())
            .collect();
        assert_eq!(kinds, ["new", "modify"], "booking {id}");
    }
    println!(
        "kill -9 of pollhook: {at_kill} of {n} events in the stream at the kill, {} after the restart",
        msgs.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_credentials_are_reported_retried_and_dead_lettered() {
    let token_server = NatsServer::start("authorization { token: \"s3cret-token\" }").await;
    let user = nkeys::KeyPair::new_user();
    let seed = user.seed().unwrap();
    let users_server = NatsServer::start(&format!(
        "authorization {{ users = [ {{ user: \"admin\", password: \"admin-pw\" }}, {{ nkey: \"{}\" }} ] }}",
        user.public_key()
    ))
    .await;
    let dir = tempfile::tempdir().unwrap();
    let file = |name: &str, text: &str| {
        let p = dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        p.display().to_string()
    };
    let (wrong, right, pw, bad_pw, nkey) = (
        file("wrong", "not-the-token"),
        file("right", "s3cret-token"),
        file("pw", "admin-pw"),
        file("bad-pw", "guess"),
        file("seed", &seed),
    );
    {
        let js = users_server.js(Some(("admin", "admin-pw"))).await;
        create_stream(&js, "BOOKINGS", &["bookings.>"]).await;
    }
    {
        let client = async_nats::ConnectOptions::with_token("s3cret-token".into())
            .connect(token_server.url())
            .await
            .unwrap();
        create_stream(&jetstream::new(client), "BOOKINGS", &["bookings.>"]).await;
    }
    let auth = |server: &NatsServer, name: &str, auth: String| {
        nats_endpoint(server, name, TWO_TRIES, &format!("auth = {auth}"))
    };
    let endpoints = [
        auth(
            &token_server,
            "wrong-token",
            format!("{{ type = \"token\", secret = {{ file = {wrong:?} }} }}"),
        ),
        auth(
            &token_server,
            "token",
            format!("{{ type = \"token\", secret = {{ file = {right:?} }} }}"),
        ),
        auth(&token_server, "no-auth", "{ type = \"none\" }".into()),
        auth(
            &users_server,
            "wrong-password",
            format!(
                "{{ type = \"user_password\", username = \"admin\", secret = {{ file = {bad_pw:?} }} }}"
            ),
        ),
        auth(
            &users_server,
            "password",
            format!(
                "{{ type = \"user_password\", username = \"admin\", secret = {{ file = {pw:?} }} }}"
            ),
        ),
        auth(
            &users_server,
            "nkey",
            format!("{{ type = \"nkey\", secret = {{ file = {nkey:?} }} }}"),
        ),
    ]
    .concat();
    let t = two_new_bookings(endpoints).await;
    // Unreachable or refused at start-up is a warning, not a reason to stop polling.
    let warnings = pollhook::delivery::preflight(&t.app.config().endpoints)
        .await
        .unwrap();
    assert_eq!(warnings.len(), 3, "{warnings:?}");
    assert_eq!(t.poll().await, 2);
    let r = t.app.deliver_due().await.unwrap();
    assert_eq!((r.attempted, r.delivered, r.retrying), (12, 6, 6), "{r:?}");
    let pending = t.app.deliveries(DeliveryState::Pending, 100).await.unwrap();
    for d in &pending {
        let error = d.history.last().unwrap().error.clone().unwrap();
        assert!(
            error.contains("refused the credentials")
                && error.contains(&format!("endpoints.{}.auth", d.endpoint))
                && (error.contains(&token_server.url()) || error.contains(&users_server.url())),
            "{}: {error}",
            d.endpoint
        );
        assert!(!error.contains("not-the-token") && !error.contains("guess"));
    }
    let mut failing: Vec<&str> = pending.iter().map(|d| d.endpoint.as_str()).collect();
    failing.sort();
    failing.dedup();
    assert_eq!(failing, ["no-auth", "wrong-password", "wrong-token"]);
    // The last attempt fails too: dead letters, shown per endpoint.
    let r = t.app.deliver_due_at(now_ms() + 2 * HOUR_MS).await.unwrap();
    assert_eq!((r.attempted, r.dead), (6, 6), "{r:?}");
    let report = t.app.endpoint_report();
    for e in &report {
        let bad = failing.contains(&e.name.as_str());
        assert_eq!(e.dead_total, if bad { 2 } else { 0 }, "{e:?}");
        assert_eq!(e.delivered_total, if bad { 0 } else { 2 }, "{e:?}");
    }
}

/// Base32 (RFC 4648, upper case, no padding), as NATS JWTs spell their `jti`.
fn base32(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let (mut out, mut buf, mut bits) = (String::new(), 0u32, 0u32);
    for &b in bytes {
        buf = (buf << 8) | u32::from(b);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(ALPHABET[((buf >> bits) & 31) as usize] as char);
        }
        buf &= (1 << bits) - 1;
    }
    if bits > 0 {
        out.push(ALPHABET[((buf << (5 - bits)) & 31) as usize] as char);
    }
    out
}

/// A NATS JWT as nats-io/jwt v2 (and so `nsc`) writes one: the header
/// `{"typ":"JWT","alg":"ed25519-nkey"}` and the claims (`exp` when given, `iat`, `iss`, `name`,
/// `sub`, `jti` = base32 of the SHA-512/256 of those, and `nats`: the kind's fields with `type`
/// and `version: 2`), each base64url without padding, then the issuer's Ed25519 signature of
/// `header.claims`.
fn nats_jwt(
    issuer: &nkeys::KeyPair,
    subject: &str,
    name: &str,
    expires: Option<i64>,
    nats: Value,
) -> String {
    use base64::Engine;
    use sha2::Digest;
    let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
    let mut claims = serde_json::Map::new();
    if let Some(exp) = expires {
        claims.insert("exp".into(), exp.into());
    }
    claims.insert("iat".into(), chrono::Utc::now().timestamp().into());
    claims.insert("iss".into(), issuer.public_key().into());
    claims.insert("name".into(), name.into());
    claims.insert("sub".into(), subject.into());
    let hash = sha2::Sha512_256::digest(serde_json::to_vec(&claims).unwrap());
    claims.insert("jti".into(), base32(&hash).into());
    claims.insert("nats".into(), nats);
    let signed = format!(
        "{}.{}",
        b64(br#"{"typ":"JWT","alg":"ed25519-nkey"}"#),
        b64(&serde_json::to_vec(&claims).unwrap())
    );
    let signature = issuer.sign(signed.as_bytes()).unwrap();
    format!("{signed}.{}", b64(&signature))
}

/// The `nats` claims of an account; JetStream is on for an account whose storage limits are not
/// 0. NATS JWTs spell "unlimited" -1: an absent limit is 0, which allows nothing.
fn account_claims(jetstream: bool) -> Value {
    let js = if jetstream { -1 } else { 0 };
    serde_json::json!({
        "limits": {
            "subs": -1, "data": -1, "payload": -1,
            "imports": -1, "exports": -1, "wildcards": true, "conn": -1, "leaf": -1,
            "mem_storage": js, "disk_storage": js, "streams": js, "consumer": js
        },
        "default_permissions": { "pub": {}, "sub": {} },
        "type": "account",
        "version": 2
    })
}

/// The JWT of `user`, issued by `account`, with `permissions` (`pub` and `sub`, each `allow`
/// and `deny` lists; none means everything) and no other limits.
fn user_jwt(
    account: &nkeys::KeyPair,
    user: &nkeys::KeyPair,
    name: &str,
    expires: Option<i64>,
    permissions: Value,
) -> String {
    let mut nats = serde_json::json!({
        "subs": -1, "data": -1, "payload": -1, "type": "user", "version": 2
    });
    if let (Some(n), Some(p)) = (nats.as_object_mut(), permissions.as_object()) {
        n.extend(p.clone());
    }
    nats_jwt(account, &user.public_key(), name, expires, nats)
}

/// A `.creds` file as `nsc generate creds` writes it (nats-io/jwt's `FormatUserConfig`).
fn creds(jwt: &str, seed: &str) -> String {
    format!(
        "-----BEGIN NATS USER JWT-----\n{jwt}\n------END NATS USER JWT------\n\n\
         ************************* IMPORTANT *************************\n\
         NKEY Seed printed below can be used to sign and prove identity.\n\
         NKEYs are sensitive and should be treated as secrets.\n\n\
         -----BEGIN USER NKEY SEED-----\n{seed}\n------END USER NKEY SEED------\n\n\
         *************************************************************\n"
    )
}

/// An operator-mode ("decentralized", JWT) trust chain made in the test as `nsc` would make
/// it: an operator, its system account and the account `APP` with JetStream, for a server
/// whose MEMORY resolver is preloaded with both account JWTs. Nothing is committed.
struct Trust {
    dir: tempfile::TempDir,
    operator: nkeys::KeyPair,
    system: nkeys::KeyPair,
    account: nkeys::KeyPair,
}

impl Trust {
    fn new() -> Trust {
        Trust {
            dir: tempfile::tempdir().unwrap(),
            operator: nkeys::KeyPair::new_operator(),
            system: nkeys::KeyPair::new_account(),
            account: nkeys::KeyPair::new_account(),
        }
    }

    /// The server configuration: the operator JWT (in a file), the system account and the
    /// MEMORY resolver.
    fn server_config(&self) -> String {
        let (op, sys, app) = (
            self.operator.public_key(),
            self.system.public_key(),
            self.account.public_key(),
        );
        let operator = nats_jwt(
            &self.operator,
            &op,
            "pollhook-test",
            None,
            serde_json::json!({ "system_account": sys, "type": "operator", "version": 2 }),
        );
        let path = self.dir.path().join("operator.jwt");
        std::fs::write(&path, operator).unwrap();
        let sys_jwt = nats_jwt(&self.operator, &sys, "SYS", None, account_claims(false));
        let app_jwt = nats_jwt(&self.operator, &app, "APP", None, account_claims(true));
        format!(
            "operator: {:?}\nsystem_account: {sys}\nresolver: MEMORY\nresolver_preload: {{\n  {sys}: {sys_jwt:?}\n  {app}: {app_jwt:?}\n}}\n",
            path.display().to_string()
        )
    }

    /// The `.creds` of a user of `APP` without restrictions, for the test's own reads.
    fn admin(&self) -> String {
        let admin = nkeys::KeyPair::new_user();
        let jwt = user_jwt(&self.account, &admin, "admin", None, serde_json::json!({}));
        creds(&jwt, &admin.seed().unwrap())
    }
}

/// What a publisher needs and nothing more: publish to `bookings.>`, look up the stream, and
/// receive the acknowledgements on its inbox.
fn publisher_permissions() -> Value {
    serde_json::json!({
        "pub": { "allow": ["bookings.>", "$JS.API.STREAM.INFO.BOOKINGS"] },
        "sub": { "allow": ["_INBOX.>"] }
    })
}

/// A JetStream context for the test's own reads, as the user of `creds`.
async fn js_with_creds(server: &NatsServer, creds: &str) -> jetstream::Context {
    let client = async_nats::ConnectOptions::with_credentials(creds)
        .unwrap()
        .connect(server.url())
        .await
        .unwrap();
    jetstream::new(client)
}

/// `auth` for a `.creds` file.
fn creds_auth(path: &Path) -> String {
    format!(
        "auth = {{ type = \"creds\", secret = {{ file = {:?} }} }}",
        path.display().to_string()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn creds_authenticate_against_an_operator_mode_server_and_every_event_is_stored_once() {
    let trust = Trust::new();
    let server = NatsServer::start(&trust.server_config()).await;
    // Operator mode: nobody gets in without a user JWT of a trusted account.
    let anonymous = async_nats::connect(server.url()).await.err();
    assert!(
        anonymous.as_ref().is_some_and(|e| matches!(
            e.kind(),
            async_nats::ConnectErrorKind::AuthorizationViolation
                | async_nats::ConnectErrorKind::Authentication
        )),
        "{anonymous:?}"
    );
    let js = js_with_creds(&server, &trust.admin()).await;
    create_stream(&js, "BOOKINGS", &["bookings.>"]).await;
    let user = nkeys::KeyPair::new_user();
    let jwt = user_jwt(
        &trust.account,
        &user,
        "pollhook",
        None,
        publisher_permissions(),
    );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nats.creds");
    std::fs::write(&path, creds(&jwt, &user.seed().unwrap())).unwrap();
    let t = spawn_app(Options {
        initial_bookings: 3,
        page_size: 2,
        source_extra: "first_poll = \"emit_new\"".into(),
        endpoints: nats_endpoint(
            &server,
            "bus",
            MANY_TRIES,
            &format!("stream = \"BOOKINGS\"\n{}", creds_auth(&path)),
        ),
        ..Options::default()
    })
    .await;
    // The start-up check connects with the creds and finds the stream.
    let warnings = pollhook::delivery::preflight(&t.app.config().endpoints)
        .await
        .unwrap();
    assert!(warnings.is_empty(), "{warnings:?}");
    assert_eq!(t.poll().await, 3);
    let first = t.sim.bookings()[0]["id"].as_u64().unwrap();
    t.sim.modify_booking(first);
    assert_eq!(t.poll().await, 1);
    deliver_until_idle(&t).await;

    let events = t.app.recent_events(100).await.unwrap();
    assert_eq!(events.len(), 4);
    let msgs = consume_all(&js, "BOOKINGS").await;
    assert_eq!(msgs.len(), events.len(), "one message per event");
    assert_every_event_once(&msgs, &events);
    for m in &msgs {
        verify_signature(m);
    }
    // Each acknowledged by JetStream at the first attempt, none a duplicate.
    let delivered = t
        .app
        .deliveries(DeliveryState::Delivered, 100)
        .await
        .unwrap();
    assert_eq!(delivered.len(), events.len());
    for d in &delivered {
        let ack = &d.history.last().unwrap().body;
        assert_eq!(d.attempts, 1, "{:?}", d.history);
        assert!(
            ack.starts_with("stream BOOKINGS seq ") && !ack.contains("duplicate"),
            "{ack}"
        );
    }
    let report = t.app.endpoint_report();
    let bus = report.iter().find(|r| r.name == "bus").unwrap();
    assert_eq!(bus.delivered_total as usize, events.len());
    assert_eq!((bus.failed_attempts_total, bus.dead_total), (0, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_creds_are_reported_retried_and_dead_lettered_and_no_seed_is_ever_shown() {
    let trust = Trust::new();
    let server = NatsServer::start(&trust.server_config()).await;
    let js = js_with_creds(&server, &trust.admin()).await;
    create_stream(&js, "BOOKINGS", &["bookings.>"]).await;
    let now = chrono::Utc::now().timestamp();
    let (good, stranger, expired, denied, other) = (
        nkeys::KeyPair::new_user(),
        nkeys::KeyPair::new_user(),
        nkeys::KeyPair::new_user(),
        nkeys::KeyPair::new_user(),
        nkeys::KeyPair::new_user(),
    );
    // An account the server was never told about.
    let unknown_account = nkeys::KeyPair::new_account();
    let seed = |k: &nkeys::KeyPair| k.seed().unwrap();
    let good_jwt = user_jwt(&trust.account, &good, "good", None, publisher_permissions());
    let files = [
        // Just the two blocks, without the IMPORTANT notice and the closing asterisks.
        (
            "good",
            format!(
                "-----BEGIN NATS USER JWT-----\n{good_jwt}\n------END NATS USER JWT------\n\n-----BEGIN USER NKEY SEED-----\n{}\n------END USER NKEY SEED------\n",
                seed(&good)
            ),
        ),
        (
            "unknown-account",
            creds(
                &user_jwt(
                    &unknown_account,
                    &stranger,
                    "stranger",
                    None,
                    publisher_permissions(),
                ),
                &seed(&stranger),
            ),
        ),
        // A valid JWT with the seed of another key: the nonce signature does not verify.
        ("wrong-seed", creds(&good_jwt, &seed(&other))),
        (
            "expired",
            creds(
                &user_jwt(
                    &trust.account,
                    &expired,
                    "expired",
                    Some(now - 60),
                    publisher_permissions(),
                ),
                &seed(&expired),
            ),
        ),
        // May look up the stream, may not publish to `bookings.>`.
        (
            "denied",
            creds(
                &user_jwt(
                    &trust.account,
                    &denied,
                    "denied",
                    None,
                    serde_json::json!({
                        "pub": { "allow": ["$JS.API.STREAM.INFO.BOOKINGS"] },
                        "sub": { "allow": ["_INBOX.>"] }
                    }),
                ),
                &seed(&denied),
            ),
        ),
    ];
    let seeds: Vec<String> = [
        &good,
        &stranger,
        &expired,
        &denied,
        &other,
        &unknown_account,
        &trust.account,
        &trust.system,
        &trust.operator,
    ]
    .iter()
    .map(|k| seed(k))
    .collect();
    let shown = |text: &str| -> Vec<String> {
        seeds
            .iter()
            .filter(|s| text.contains(s.as_str()))
            .cloned()
            .collect()
    };
    let dir = tempfile::tempdir().unwrap();
    let endpoints: String = files
        .iter()
        .map(|(name, text)| {
            let path = dir.path().join(format!("{name}.creds"));
            std::fs::write(&path, text).unwrap();
            nats_endpoint(&server, name, TWO_TRIES, &creds_auth(&path))
        })
        .collect();
    let t = two_new_bookings(endpoints).await;
    let refused = ["unknown-account", "wrong-seed", "expired"];
    // Refused at start-up is a warning, not a reason to stop polling.
    let warnings = pollhook::delivery::preflight(&t.app.config().endpoints)
        .await
        .unwrap();
    assert_eq!(warnings.len(), refused.len(), "{warnings:?}");
    for name in refused {
        let auth = format!("endpoints.{name}.auth (type \"creds\")");
        assert!(
            warnings
                .iter()
                .any(|w| w.contains(&auth) && w.contains("refused the credentials")),
            "{name}: {warnings:?}"
        );
    }
    for w in &warnings {
        assert!(shown(w).is_empty(), "a seed in: {w}");
    }
    assert_eq!(t.poll().await, 2);
    let r = t.app.deliver_due().await.unwrap();
    assert_eq!((r.attempted, r.delivered, r.retrying), (10, 2, 8), "{r:?}");
    let pending = t.app.deliveries(DeliveryState::Pending, 100).await.unwrap();
    for d in &pending {
        let error = d.history.last().unwrap().error.clone().unwrap();
        if d.endpoint == "denied" {
            assert!(
                error.contains("subject bookings.hotel.new.")
                    && error.contains("Permissions Violation")
                    && error.contains("endpoints.denied.subject"),
                "{error}"
            );
        } else {
            assert!(
                refused.contains(&d.endpoint.as_str())
                    && error.contains(&server.url())
                    && error.contains("refused the credentials")
                    && error.contains(&format!("endpoints.{}.auth (type \"creds\")", d.endpoint)),
                "{}: {error}",
                d.endpoint
            );
        }
        assert!(shown(&error).is_empty(), "a seed in: {error}");
    }
    // The last attempt fails too: dead letters, shown per endpoint; the good creds beside them
    // delivered each event once.
    let r = t.app.deliver_due_at(now_ms() + 2 * HOUR_MS).await.unwrap();
    assert_eq!((r.attempted, r.dead), (8, 8), "{r:?}");
    let report = t.app.endpoint_report();
    for e in &report {
        let bad = e.name != "good";
        assert_eq!(e.dead_total, if bad { 2 } else { 0 }, "{e:?}");
        assert_eq!(e.delivered_total, if bad { 0 } else { 2 }, "{e:?}");
    }
    let listed = format!("{report:?}");
    assert!(shown(&listed).is_empty(), "a seed in: {listed}");
    let msgs = consume_all(&js, "BOOKINGS").await;
    assert_once_and_in_order(&msgs);
    assert_eq!(msgs.len(), 2);

    // The daemon, logging everything down to async-nats's traces, shows no seed either.
    let TestApp { app, dir, toml, .. } = t;
    drop(app);
    let config = dir.path().join("daemon.toml");
    std::fs::write(&config, toml.replace("state.redb", "daemon.redb")).unwrap();
    let log = dir.path().join("daemon.log");
    let read_log = || std::fs::read_to_string(&log).unwrap_or_default();
    let mut daemon = Daemon::start_with_filter(&config, &log, &[], "trace");
    eventually(
        "a failed attempt of each bad endpoint in the log",
        60,
        || async {
            let text = read_log();
            files.iter().filter(|(n, _)| *n != "good").all(|(name, _)| {
                text.lines().any(|l| {
                    l.contains("delivery failed; will retry")
                        && l.contains(&format!("endpoint={name}"))
                })
            })
        },
    )
    .await;
    daemon.kill9();
    let text = read_log();
    assert!(
        text.contains("refused the credentials") && text.contains("Permissions Violation"),
        "{text}"
    );
    assert!(shown(&text).is_empty(), "a seed in the daemon's log");
    println!(
        "bad creds: {} warnings, {} failed attempts, a daemon log of {} lines at trace level; no seed in any",
        warnings.len(),
        pending.len(),
        text.lines().count()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_stream_stops_start_up_with_what_to_do() {
    let server = NatsServer::start("").await;
    let t = spawn_app(Options {
        endpoints: nats_endpoint(&server, "bus", TWO_TRIES, "stream = \"NOPE\""),
        ..Options::default()
    })
    .await;
    let e = pollhook::delivery::preflight(&t.app.config().endpoints)
        .await
        .unwrap_err()
        .to_string();
    for part in [
        "endpoints.bus.stream",
        "`NOPE` does not exist",
        &server.url(),
        "nats stream add NOPE --subjects 'bookings.>'",
        "remove `stream`",
    ] {
        assert!(e.contains(part), "{part} missing in: {e}");
    }
    // The daemon refuses to start with it, saying the same.
    let config = t.dir.path().join("pollhook.toml");
    std::fs::write(&config, &t.toml).unwrap();
    let out = tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_pollhook"))
            .args(["run", "--config"])
            .arg(&config)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("endpoints.bus.stream") && stderr.contains("`NOPE` does not exist"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_messages_say_why_dead_letter_and_never_hold_up_other_endpoints() {
    let server = NatsServer::start(
        r#"
max_payload: 1024
authorization {
  users = [
    { user: "admin", password: "admin" },
    { user: "limited", password: "limited", permissions: {
        publish: { allow: ["allowed.>", "$JS.API.>"] },
        subscribe: { allow: ["_INBOX.>"] } } }
  ]
}
"#,
    )
    .await;
    let js = server.js(Some(("admin", "admin"))).await;
    create_stream(&js, "BOOKINGS", &["bookings.>", "allowed.>"]).await;
    let dir = tempfile::tempdir().unwrap();
    let secret = |name: &str| {
        let p = dir.path().join(name);
        std::fs::write(&p, name).unwrap();
        p.display().to_string()
    };
    let (admin, limited) = (secret("admin"), secret("limited"));
    let user = |name: &str, file: &str| {
        format!(
            "auth = {{ type = \"user_password\", username = \"{name}\", secret = {{ file = {file:?} }} }}"
        )
    };
    let small = "body = { id = \"{{ event.id }}\", source = \"{{ event.source }}\", booking_id = \"{{ event.booking_id }}\", sequence = \"{{ event.sequence }}\" }";
    let endpoints = [
        // Nothing captures `nowhere.>`.
        nats_endpoint(
            &server,
            "no-stream",
            TWO_TRIES,
            &format!("{}\n{small}", user("admin", &admin)),
        )
        .replace("subject = \"bookings.", "subject = \"nowhere."),
        // The user may not publish to `bookings.>`.
        nats_endpoint(
            &server,
            "denied",
            TWO_TRIES,
            &format!("{}\n{small}", user("limited", &limited)),
        ),
        // Four copies of the booking do not fit in 1 KiB.
        nats_endpoint(
            &server,
            "too-big",
            TWO_TRIES,
            &format!(
                "{}\nbody = {{ a = \"{{{{ booking }}}}\", b = \"{{{{ booking }}}}\", c = \"{{{{ booking }}}}\", d = \"{{{{ booking }}}}\" }}",
                user("admin", &admin)
            ),
        ),
        Options::default().endpoints,
    ]
    .concat();
    let t = spawn_app(Options {
        initial_bookings: 3,
        page_size: 10,
        source_extra: "first_poll = \"emit_new\"".into(),
        endpoints,
        ..Default::default()
    })
    .await;
    assert_eq!(t.poll().await, 3);
    let r = t.app.deliver_due().await.unwrap();
    assert_eq!((r.attempted, r.delivered), (12, 3), "{r:?}");
    assert_eq!(t.accepted().len(), 3, "the HTTP endpoint is not held up");
    let pending = t.app.deliveries(DeliveryState::Pending, 100).await.unwrap();
    let error_of = |endpoint: &str| -> String {
        pending
            .iter()
            .find(|d| d.endpoint == endpoint)
            .and_then(|d| d.history.last())
            .and_then(|a| a.error.clone())
            .unwrap_or_else(|| panic!("no failed attempt for {endpoint}"))
    };
    let e = error_of("no-stream");
    assert!(
        e.contains("subject nowhere.hotel.new.")
            && e.contains("no JetStream stream captures")
            && e.contains("endpoints.no-stream.subject"),
        "{e}"
    );
    let e = error_of("denied");
    assert!(
        e.contains("subject bookings.hotel.new.")
            && e.contains("Permissions Violation")
            && e.contains("endpoints.denied.subject"),
        "{e}"
    );
    let e = error_of("too-big");
    assert!(
        e.contains("subject bookings.hotel.new.")
            && e.contains("max_payload (1024 bytes)")
            && e.contains("endpoints.too-big.body"),
        "{e}"
    );
    // Their last attempts fail as well: dead letters, to be replayed once the cause is fixed.
    let r = t.app.deliver_due_at(now_ms() + 2 * HOUR_MS).await.unwrap();
    assert_eq!((r.attempted, r.dead), (9, 9), "{r:?}");
    assert_eq!(stored(&js, "BOOKINGS").await, 0);
}

/// The first `count` names of `hotel-a`, `hotel-b`, ... such that both shards of two get some.
fn names_over_two_shards(count: usize) -> Vec<String> {
    let all: Vec<String> = ('a'..='z').map(|c| format!("hotel-{c}")).collect();
    let (one, two): (Vec<&String>, Vec<&String>) = all.iter().partition(|n| shard_of(n, 2) == 1);
    let mut names: Vec<String> = one
        .iter()
        .take(count / 2)
        .chain(two.iter().take(count - count / 2))
        .map(|s| s.to_string())
        .collect();
    names.sort();
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_sharded_instances_poll_disjoint_sources_into_one_stream() {
    let server = NatsServer::start("").await;
    let js = server.js(None).await;
    create_stream(&js, "BOOKINGS", &["bookings.>"]).await;
    let names = names_over_two_shards(4);
    let mut sims = BTreeMap::new();
    for (i, name) in names.iter().enumerate() {
        let sim = Simulator::start(SimConfig {
            page_size: 50,
            initial_bookings: 3,
            pace: None,
            seed: i as u64,
        })
        .await
        .unwrap();
        sims.insert(name.clone(), sim);
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("secret"), SECRET).unwrap();
    // One configuration for both instances; each has its own state file.
    let mut shared = String::from("[admin]\nlisten = \"off\"\n");
    for (name, sim) in &sims {
        shared.push_str(&format!(
            "[sources.{name}]\nurl = \"{}\"\nevery = \"1h\"\nitems = \"/data\"\nstatus = \"/status\"\nignore_fields = [\"/modifiedTime\"]\nfirst_poll = \"emit_new\"\n",
            sim.bookings_url()
        ));
    }
    shared.push_str(
        &nats_endpoint(&server, "bus", MANY_TRIES, "stream = \"BOOKINGS\"").replace(
            "{SECRET_FILE}",
            &dir.path().join("secret").display().to_string(),
        ),
    );
    let instance = |index: u32| {
        let text = format!(
            "[store]\npath = \"{}\"\n{shared}",
            dir.path().join(format!("state-{index}.redb")).display()
        );
        let cfg = Config::from_toml_str(&text, "shared.toml")
            .unwrap()
            .select(&Selection {
                patterns: vec![],
                shard: Some(Shard { index, count: 2 }),
            })
            .unwrap();
        pollhook::App::build(cfg).unwrap()
    };
    let (a, b) = (instance(1), instance(2));
    let polled = |app: &pollhook::App| -> BTreeSet<String> {
        app.config()
            .sources
            .iter()
            .map(|s| s.name.clone())
            .collect()
    };
    let (pa, pb) = (polled(&a), polled(&b));
    assert!(pa.is_disjoint(&pb), "{pa:?} {pb:?}");
    assert_eq!(pa.union(&pb).cloned().collect::<Vec<_>>(), names);
    assert!(!pa.is_empty() && !pb.is_empty());

    for round in 0..2 {
        if round == 1 {
            for sim in sims.values() {
                let id = sim.bookings()[0]["id"].as_u64().unwrap();
                sim.modify_booking(id);
            }
        }
        for app in [&a, &b] {
            for (name, r) in app.poll_all().await {
                r.unwrap_or_else(|e| panic!("{name}: {e}"));
            }
            app.deliver_until_idle().await.unwrap();
        }
    }
    // Each source was polled twice, by one instance: one request a poll.
    for (name, sim) in &sims {
        assert_eq!(sim.requests(), 2, "{name} polled by both instances?");
    }
    let mut events = a.recent_events(1000).await.unwrap();
    events.extend(b.recent_events(1000).await.unwrap());
    assert_eq!(events.len(), names.len() * 4, "3 new + 1 modify per source");
    for e in a.recent_events(1000).await.unwrap() {
        assert!(pa.contains(&e.source));
    }
    let msgs = consume_all(&js, "BOOKINGS").await;
    assert_every_event_once(&msgs, &events);
}

#[test]
fn source_selection_on_the_command_line_is_checked_and_shown() {
    let dir = tempfile::tempdir().unwrap();
    let names = names_over_two_shards(4);
    let mut text = String::new();
    for n in &names {
        text.push_str(&format!(
            "[sources.{n}]\nurl = \"http://127.0.0.1:1/b\"\nevery = \"1m\"\n"
        ));
    }
    let config = dir.path().join("c.toml");
    std::fs::write(&config, &text).unwrap();
    let check = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_pollhook"))
            .args(["check", "--config"])
            .arg(&config)
            .args(args)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, out, err) = check(&["--shard", "1/2"]);
    assert_eq!(code, Some(0), "{err}");
    let first: Vec<&String> = names.iter().filter(|n| shard_of(n, 2) == 1).collect();
    assert!(
        out.contains(&format!(
            "selected (shard 1/2): {}",
            first
                .iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )),
        "{out}"
    );
    let (code, out, _) = check(&["--sources", &format!("{},nothing-*", names[0])]);
    assert_eq!(code, Some(2), "{out}");
    let (code, _, err) = check(&["--sources", "hotel-zz*"]);
    assert_eq!(code, Some(2));
    assert!(
        err.contains("--sources")
            && err.contains("hotel-zz*")
            && err.contains("matches no configured source"),
        "{err}"
    );
    let (code, _, err) = check(&["--shard", "3/2"]);
    assert_eq!(code, Some(2));
    assert!(err.contains("--shard") && err.contains("\"1/3\""), "{err}");
    std::fs::write(&config, format!("shard = \"two\"\n{text}")).unwrap();
    let (code, _, err) = check(&[]);
    assert_eq!(code, Some(2));
    assert!(err.contains("shard: `two` is not a shard"), "{err}");
    std::fs::write(&config, format!("shard = \"2/2\"\n{text}")).unwrap();
    let (code, out, _) = check(&["--sources", "hotel-*"]);
    assert_eq!(code, Some(0));
    assert!(out.contains("selected (shard 2/2): "), "{out}");
}

#[test]
fn the_commented_nats_endpoint_and_shard_of_the_shipped_example_are_valid() {
    let example =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/config.example.toml"))
            .unwrap();
    // Uncomment `shard` and the NATS endpoint block (its own comments stay comments).
    let mut text = String::new();
    let mut in_block = false;
    for line in example.lines() {
        if line == "# [endpoints.bus]" {
            in_block = true;
        }
        if line == "# shard = \"1/3\"" {
            text.push_str("shard = \"1/3\"\n");
        } else if in_block {
            text.push_str(line.strip_prefix("# ").unwrap_or(line));
            text.push('\n');
        } else {
            text.push_str(line);
            text.push('\n');
        }
    }
    assert!(in_block && text.contains("\nshard = \"1/3\"\n"), "{text}");
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, "").unwrap();
    std::fs::write(dir.path().join("nats-token"), "t0ken").unwrap();
    let text = text.replace("/etc/pollhook/nats-ca.pem", &ca.display().to_string());
    let config = dir.path().join("example.toml");
    std::fs::write(&config, text).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_pollhook"))
        .args(["check", "--config"])
        .arg(&config)
        .env("HOTEL_API_TOKEN", "t0ken")
        .env("CRM_WEBHOOK_SECRET", SECRET)
        .env("CREDENTIALS_DIRECTORY", dir.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("bus") && stdout.contains("selected (shard 1/3)"),
        "{stdout}"
    );
}
