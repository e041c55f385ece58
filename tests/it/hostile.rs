//! What a hostile or careless remote sends back: booking ids and error bodies with control
//! characters (they must not forge log lines), and answers that echo the request's credentials
//! (they must not put a secret into a poll error, a delivery attempt, `/deliveries` or
//! `check --probe`).

use std::sync::{Arc, Mutex};

use axum::http::{HeaderMap, StatusCode, Uri};
use pollhook::outbox::DeliveryState;

/// Serves `app` on a loopback port; the base URL.
async fn serve(app: axum::Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}")
}

/// Everything the request carried, as a server that echoes it would write it: the target, the
/// credential headers, then the rest.
fn echo(uri: &Uri, headers: &HeaderMap) -> String {
    let mut out = format!("you asked for {uri} with");
    let first = ["authorization", "api-key"];
    let named = first
        .iter()
        .filter_map(|n| headers.get(*n).map(|v| (*n, v)));
    let rest = headers
        .iter()
        .filter(|(k, _)| !first.contains(&k.as_str()))
        .map(|(k, v)| (k.as_str(), v));
    for (k, v) in named.chain(rest) {
        out.push_str(&format!(" {k}: {};", v.to_str().unwrap_or("?")));
    }
    out
}

/// Log lines written on this thread while capturing (the events of a current-thread test's
/// tasks). One global subscriber routes them: thread-local subscribers race with other tests
/// registering the same log statements, which can leave a statement disabled for good.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

thread_local! {
    static SINK: std::cell::RefCell<Option<Captured>> = const { std::cell::RefCell::new(None) };
}

/// Writes to this thread's [`SINK`], if any.
struct Routed;

impl std::io::Write for Routed {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        SINK.with(|s| {
            if let Some(c) = s.borrow().as_ref() {
                c.0.lock().unwrap().extend_from_slice(buf);
            }
        });
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    /// Captures this thread's log lines until the returned guard is dropped.
    fn start() -> (Captured, impl Drop) {
        use tracing_subscriber::prelude::*;
        static INSTALL: std::sync::Once = std::sync::Once::new();
        INSTALL.call_once(|| {
            let layer = tracing_subscriber::fmt::layer()
                .with_writer(|| Routed)
                .with_ansi(false)
                // Decided at every event (a plain filter function's answer is cached per
                // statement, whichever thread asked first).
                .with_filter(tracing_subscriber::filter::dynamic_filter_fn(|m, _| {
                    *m.level() <= tracing::Level::DEBUG && SINK.with(|s| s.borrow().is_some())
                }));
            let _ = tracing_subscriber::registry().with(layer).try_init();
        });
        struct Stop;
        impl Drop for Stop {
            fn drop(&mut self) {
                SINK.with(|s| s.borrow_mut().take());
            }
        }
        let c = Captured::default();
        SINK.with(|s| *s.borrow_mut() = Some(c.clone()));
        (c, Stop)
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

#[tokio::test]
async fn ids_and_error_bodies_with_control_characters_cannot_forge_log_lines() {
    let (log, _capturing) = Captured::start();

    let calls = Arc::new(std::sync::atomic::AtomicU32::new(0));
    let c = calls.clone();
    let base = serve(axum::Router::new().fallback(move || {
        let n = c.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        async move {
            if n == 0 {
                (
                    StatusCode::OK,
                    r#"{"data": [{"id": "ok-1"}, {"id": "evil\nFORGED 2026-01-01T00:00:00Z INFO pollhook: all fine"}, {"id": "red\u001b[31m\r\u0085x"}]}"#
                        .to_string(),
                )
            } else {
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "boom\u{1b}[2J\u{7}\u{85}gone".to_string(),
                )
            }
        }
    }))
    .await;
    let dir = tempfile::tempdir().unwrap();
    let app = crate::helpers::build(&format!(
        r#"
[store]
path = "{store}"
[sources.hotel]
url = "{base}/b"
every = "1h"
items = "/data"
first_poll = "emit_new"
retries = 0
[endpoints.down]
url = "http://127.0.0.1:1/h"
retry_schedule = ["0s", "1h"]
"#,
        store = dir.path().join("s.redb").display()
    ));
    let r = app.poll_now("hotel").await.unwrap();
    assert_eq!(r.events.len(), 3);
    app.deliver_due().await.unwrap();
    let e = app.poll_now("hotel").await.unwrap_err();
    assert!(e.to_string().contains("HTTP 500"), "{e}");

    let text = log.text();
    assert!(text.contains("change detected"), "{text}");
    assert!(text.contains("delivery failed"), "{text}");
    assert!(text.contains("poll failed"), "{text}");
    for line in text.lines() {
        assert!(
            !line.starts_with("FORGED") && !line.starts_with("x") && !line.starts_with("gone"),
            "a remote value started a log line of its own: {line:?}\n{text}"
        );
    }
    for c in ['\r', '\u{1b}', '\u{7}', '\u{85}'] {
        assert!(!text.contains(c), "{c:?} written raw into the log:\n{text}");
    }
    assert!(
        text.contains(r"evil\u{a}FORGED"),
        "the id is shown, escaped:\n{text}"
    );
}

/// A secret in a file under `dir`; its path.
fn secret_file(dir: &tempfile::TempDir, name: &str, value: &str) -> String {
    let p = dir.path().join(name);
    std::fs::write(&p, value).unwrap();
    p.display().to_string()
}

/// The secret and the forms it travels in.
fn leaked<'a>(text: &str, secrets: &[&'a str]) -> Vec<&'a str> {
    secrets
        .iter()
        .copied()
        .filter(|s| text.contains(s))
        .collect()
}

#[tokio::test]
async fn a_receiver_echoing_its_credentials_leaves_no_secret_in_attempts_or_deliveries() {
    const TOKEN: &str = "tok-SECRET-bearer-0123456789";
    const PASSWORD: &str = "pw-SECRET-basic-9876";
    // base64("hotel:pw-SECRET-basic-9876")
    const BASIC: &str = "aG90ZWw6cHctU0VDUkVULWJhc2ljLTk4NzY=";
    let receiver = serve(
        axum::Router::new().fallback(|uri: Uri, headers: HeaderMap| async move {
            let mut body = echo(&uri, &headers);
            if uri.path() == "/edge" {
                // The token straddles the 1 KiB kept of an answer.
                body = format!("{}{TOKEN} and more", "x".repeat(1020));
            }
            (StatusCode::INTERNAL_SERVER_ERROR, body)
        }),
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let tok = secret_file(&dir, "tok", TOKEN);
    let pw = secret_file(&dir, "pw", PASSWORD);
    let sim = pollhook::demo::simulator::Simulator::start(pollhook::demo::simulator::SimConfig {
        page_size: 10,
        initial_bookings: 1,
        pace: None,
        seed: 7,
    })
    .await
    .unwrap();
    let app = crate::helpers::build(&format!(
        r#"
[store]
path = "{store}"
[sources.hotel]
url = "{sim}"
every = "1h"
items = "/data"
first_poll = "emit_new"
[endpoints.bearer]
url = "{receiver}/bearer"
auth = {{ type = "bearer", secret = {{ file = "{tok}" }} }}
retry_schedule = ["0s", "1h"]
[endpoints.basic]
url = "{receiver}/basic"
auth = {{ type = "basic", username = "hotel", secret = {{ file = "{pw}" }} }}
retry_schedule = ["0s", "1h"]
[endpoints.edge]
url = "{receiver}/edge"
auth = {{ type = "bearer", secret = {{ file = "{tok}" }} }}
retry_schedule = ["0s", "1h"]
"#,
        store = dir.path().join("s.redb").display(),
        sim = sim.bookings_url(),
    ));
    assert_eq!(app.poll_now("hotel").await.unwrap().events.len(), 1);
    let round = app.deliver_due().await.unwrap();
    assert_eq!(round.attempted, 3);
    let seq = app.store().events().unwrap()[0].seq;
    let deliveries = app.store().deliveries_of(seq).unwrap();
    assert_eq!(deliveries.len(), 3);
    let secrets = [TOKEN, PASSWORD, BASIC, "SECRET"];
    for d in &deliveries {
        let a = &d.history[0];
        assert_eq!(a.status, Some(500), "{d:?}");
        assert!(!a.body.is_empty(), "the answer is still kept: {d:?}");
        assert!(
            leaked(&a.body, &secrets).is_empty(),
            "{} kept a secret: {}",
            d.endpoint,
            a.body
        );
        assert!(
            a.body.contains("<redacted>"),
            "{} shows where: {}",
            d.endpoint,
            a.body
        );
        if d.endpoint == "edge" {
            for n in 4..TOKEN.len() {
                assert!(
                    !a.body.contains(&TOKEN[..n]),
                    "the start of the token is kept: {}",
                    a.body
                );
            }
        }
    }
    // What the admin API lists.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let admin = format!("http://{}", listener.local_addr().unwrap());
    let stop = tokio_util::sync::CancellationToken::new();
    tokio::spawn(pollhook::admin::serve(listener, app.clone(), stop.clone()));
    let listed = reqwest::get(format!("{admin}/deliveries?state=pending"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(listed.contains("redacted"), "{listed}");
    assert!(leaked(&listed, &secrets).is_empty(), "{listed}");
    let dead = app.deliveries(DeliveryState::Pending, 10).await.unwrap();
    assert_eq!(dead.len(), 3);
}

#[tokio::test]
async fn a_source_echoing_its_credentials_leaves_no_secret_in_poll_errors() {
    const KEY: &str = "key-SECRET-query+/=42";
    const HEADER: &str = "hdr-SECRET-value-77";
    const BODY_SECRET: &str = "body-SECRET-login-5";
    let source = serve(axum::Router::new().fallback(
        |uri: Uri, headers: HeaderMap, body: String| async move {
            let text = format!("the body {body} and {}", echo(&uri, &headers));
            if uri.path() == "/soft" {
                // HTTP 200 with a failure inside, which the success check reports.
                let doc = serde_json::json!({"success": false, "error": text});
                return (StatusCode::OK, doc.to_string());
            }
            (StatusCode::INTERNAL_SERVER_ERROR, text)
        },
    ))
    .await;
    let dir = tempfile::tempdir().unwrap();
    let key = secret_file(&dir, "key", KEY);
    let header = secret_file(&dir, "header", HEADER);
    let login = secret_file(&dir, "login", BODY_SECRET);
    let app = crate::helpers::build(&format!(
        r#"
[store]
path = "{store}"
[sources.query]
url = "{source}/q"
every = "1h"
items = "/data"
retries = 0
auth = {{ type = "query", name = "key", secret = {{ file = "{key}" }} }}
[sources.header]
url = "{source}/h"
every = "1h"
items = "/data"
retries = 0
auth = {{ type = "header", name = "Api-Key", secret = {{ file = "{header}" }} }}
[sources.soft]
url = "{source}/soft"
every = "1h"
items = "/data"
retries = 0
method = "POST"
secrets = {{ login = {{ file = "{login}" }} }}
body = {{ password = "{{{{ secret.login }}}}" }}
success = {{ pointer = "/success", equals = true }}
"#,
        store = dir.path().join("s.redb").display()
    ));
    // The forms a secret travels in: as it is, percent-encoded in a query, base64.
    let encoded_key = "key-SECRET-query%2B%2F%3D42";
    let secrets = [KEY, encoded_key, HEADER, BODY_SECRET, "SECRET"];
    for name in ["query", "header", "soft"] {
        let e = app.poll_now(name).await.unwrap_err().to_string();
        assert!(
            e.contains("<redacted>"),
            "{name}: the echo is still shown: {e}"
        );
        assert!(leaked(&e, &secrets).is_empty(), "{name} leaked into: {e}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_probe_never_prints_a_url_password_or_a_query_key() {
    const PASSWORD: &str = "pw-SECRET-url-31";
    const KEY: &str = "key-SECRET-probe-8";
    // base64("probe:pw-SECRET-url-31"), the Basic credentials the URL's user info becomes.
    const BASIC: &str = "cHJvYmU6cHctU0VDUkVULXVybC0zMQ==";
    let source = serve(
        axum::Router::new().fallback(|uri: Uri, headers: HeaderMap| async move {
            (StatusCode::INTERNAL_SERVER_ERROR, echo(&uri, &headers))
        }),
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let key = secret_file(&dir, "key", KEY);
    let url = source.replace("http://", &format!("http://probe:{PASSWORD}@"));
    let config = dir.path().join("pollhook.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[store]
path = "{store}"
[sources.hotel]
url = "{url}/b"
every = "1h"
items = "/data"
retries = 0
auth = {{ type = "query", name = "key", secret = {{ file = "{key}" }} }}
"#,
            store = dir.path().join("s.redb").display()
        ),
    )
    .unwrap();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_pollhook"))
            .args(["check", "--probe", "--config"])
            .arg(&config)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stdout}\n{stderr}");
    assert!(stdout.contains("FAILED: page 1"), "{stdout}");
    assert!(
        stdout.contains("<redacted>"),
        "the echo is still shown: {stdout}"
    );
    for text in [&stdout, &stderr] {
        let found = leaked(text, &[PASSWORD, KEY, BASIC, "SECRET"]);
        assert!(found.is_empty(), "{found:?} printed:\n{text}");
    }
}
