//! What new users stumbled on (issue 11), each checked where they met it: the real binary's log
//! and `check` with a shipped preset, `check --probe` beside a state file, a second instance on
//! a busy admin port, when a change counts as detected, the retry schedule the README
//! documents, and the pretix preset (a token scheme before the secret, `*` over positions)
//! against a small pretix-shaped server.

use std::process::{Command, Output, Stdio};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::response::IntoResponse;
use pollhook::clock::Clock;
use pollhook::demo::simulator::{self as sim, SimConfig, Simulator};

use crate::helpers::*;

fn pollhook() -> Command {
    Command::new(env!("CARGO_BIN_EXE_pollhook"))
}

/// Runs the binary off the async runtime (the simulator answers on it meanwhile).
async fn run(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = pollhook();
    cmd.args(args).env("RUST_LOG", "info");
    for (k, v) in env {
        cmd.env(k, v);
    }
    tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// `examples/beds24-v2.toml` pointed at the simulator (credentials in files, state in `dir`),
/// written as `dir/pollhook.toml`; returns its path and the state file's.
fn beds24_preset(
    sim: &Simulator,
    dir: &tempfile::TempDir,
) -> (std::path::PathBuf, std::path::PathBuf) {
    let creds = dir.path().join("creds");
    std::fs::create_dir_all(&creds).unwrap();
    for (file, value) in [
        ("beds24-refresh-token", sim::BEDS24_REFRESH_TOKEN),
        ("crm-webhook-secret", SECRET),
    ] {
        std::fs::write(creds.join(file), format!("{value}\n")).unwrap();
    }
    let state = dir.path().join("state.redb");
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/examples/beds24-v2.toml"
    ))
    .unwrap()
    .replace(
        "/etc/pollhook/credentials/",
        &format!("{}/", creds.display()),
    )
    .replace(
        "/var/lib/pollhook/pollhook.redb",
        &state.display().to_string(),
    )
    .replace("https://beds24.com/api/v2", &sim.beds24_v2_base_url())
    .replace("https://crm.example.com", "http://127.0.0.1:9")
    .replace("min_gap = \"1s\"", "min_gap = \"0s\"");
    assert!(
        !text.contains("token_url ="),
        "the preset derives its login URL"
    );
    let config = dir.path().join("pollhook.toml");
    std::fs::write(&config, text).unwrap();
    (config, state)
}

async fn beds24_sim() -> Simulator {
    let sim = Simulator::start(SimConfig {
        initial_bookings: 3,
        page_size: 20,
        pace: None,
        seed: 5,
    })
    .await
    .unwrap();
    sim.set_vendor_page_size(2);
    sim
}

/// The log line of the committed poll (`poll committed` or `baseline recorded`).
fn committed_line(stderr: &str) -> String {
    stderr
        .lines()
        .find(|l| l.contains("poll committed") || l.contains("baseline recorded"))
        .unwrap_or_else(|| panic!("no committed poll in:\n{stderr}"))
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_poll_log_says_full_or_incremental_and_an_environment_override_switches_a_preset_to_full()
 {
    let sim = beds24_sim().await;
    let dir = tempfile::tempdir().unwrap();
    let (config, _) = beds24_preset(&sim, &dir);
    let config = config.display().to_string();
    let once = ["once", "--config", config.as_str()];

    // The first poll of an incremental source is full (and records the baseline)...
    let out = run(&once, &[]).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let line = committed_line(&text(&out.stderr));
    assert!(
        line.contains("baseline recorded") && line.contains("mode=full"),
        "{line}"
    );
    // ...the next one incremental.
    sim.create_booking();
    let out = run(&once, &[]).await;
    let line = committed_line(&text(&out.stderr));
    assert!(
        line.contains("poll committed") && line.contains("mode=incremental"),
        "{line}"
    );
    assert!(
        sim.vendor_requests()
            .iter()
            .any(|q| q.query_param("modifiedFrom").is_some())
    );

    // The preset's [incremental] table cannot be removed from the environment, so sync = "full"
    // ignores it, with a warning, instead of refusing the configuration.
    let full = [("POLLHOOK_SOURCES__BEDS24__SYNC", "full")];
    let out = run(&["check", "--config", config.as_str()], &full).await;
    let stderr = text(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("warning: sources.beds24.incremental: ignored"),
        "{stderr}"
    );
    assert!(text(&out.stdout).contains("OK"));
    let before = sim.vendor_requests().len();
    let out = run(&once, &full).await;
    let stderr = text(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let line = committed_line(&stderr);
    assert!(
        line.contains("poll committed") && line.contains("mode=full"),
        "{line}"
    );
    assert!(stderr.contains("sources.beds24.incremental"), "logged too");
    assert!(
        sim.vendor_requests()[before..]
            .iter()
            .all(|q| q.query_param("modifiedFrom").is_none()),
        "a full poll sends no watermark"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_probe_reuses_the_cached_token_and_says_when_the_state_file_is_held() {
    let sim = beds24_sim().await;
    let dir = tempfile::tempdir().unwrap();
    let (config, state) = beds24_preset(&sim, &dir);
    let config = config.display().to_string();
    let probe = ["check", "--probe", "--config", config.as_str()];

    // No state file yet: the probe mints a token and writes nothing.
    let out = run(&probe, &[]).await;
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", text(&out.stderr));
    assert!(
        stdout.contains("token: no state file at") && stdout.contains("a new token is minted"),
        "{stdout}"
    );
    assert!(!state.exists());
    assert_eq!(sim.tokens_minted(), 1);

    // A poll caches its token in the state file; probes then reuse it.
    let out = run(&["once", "--config", config.as_str()], &[]).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(sim.tokens_minted(), 2);
    for _ in 0..2 {
        let out = run(&probe, &[]).await;
        let stdout = text(&out.stdout);
        assert!(out.status.success(), "{stdout}");
        assert!(
            stdout.contains(&format!(
                "token: reusing the token cached in {}",
                state.display()
            )),
            "{stdout}"
        );
        assert!(stdout.contains("3 booking(s)"), "{stdout}");
    }
    assert_eq!(
        sim.tokens_minted(),
        2,
        "no credits spent on tokens by probes"
    );

    // While a daemon holds the state file, the probe cannot read it, mints, and says so.
    let held = pollhook::store::Store::open(&state).unwrap();
    let out = run(&probe, &[]).await;
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(
        stdout.contains("is held by a running pollhook")
            && stdout.contains("a new token is minted"),
        "{stdout}"
    );
    assert_eq!(sim.tokens_minted(), 3);
    drop(held);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_instance_on_a_busy_admin_port_is_told_what_to_set() {
    let first = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = first.local_addr().unwrap().port();
    let t = spawn_app(Options::default()).await;
    let toml = t
        .toml
        .replace(
            "listen = \"off\"",
            &format!("listen = \"127.0.0.1:{port}\""),
        )
        .replace(
            &t.dir.path().join("state.redb").display().to_string(),
            &t.dir.path().join("second.redb").display().to_string(),
        );
    let config = t.dir.path().join("second.toml");
    std::fs::write(&config, toml).unwrap();
    let mut child = pollhook()
        .args(["run", "--config"])
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let status = tokio::task::spawn_blocking(move || {
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(s) = child.try_wait().unwrap() {
                let mut err = String::new();
                std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
                return Some((s, err));
            }
            if std::time::Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    })
    .await
    .unwrap();
    let (status, stderr) = status.expect("the second instance should stop at once");
    assert!(!status.success());
    for want in [
        format!("cannot listen on 127.0.0.1:{port}"),
        format!("[admin] listen = \"127.0.0.1:{}\"", port + 1),
        format!("POLLHOOK_ADMIN__LISTEN=127.0.0.1:{}", port + 1),
        "listen = \"off\"".to_string(),
    ] {
        assert!(stderr.contains(&want), "{want:?} missing from:\n{stderr}");
    }
    drop(first);
}

#[tokio::test]
async fn detected_at_is_when_the_page_with_the_change_arrived() {
    // Two pages; the second one answers an hour later (the app's clock moves on while it is
    // requested). Each booking's event carries the arrival of its own page, not the poll's
    // start, so a booking modified during a long poll is never "detected" before it changed.
    let clock: Arc<OnceLock<Clock>> = Arc::new(OnceLock::new());
    let c = clock.clone();
    let app = axum::Router::new().route(
        "/bookings",
        axum::routing::get(move |uri: axum::http::Uri| {
            let c = c.clone();
            async move {
                let body = if uri.query() == Some("page=2") {
                    if let Some(clock) = c.get() {
                        clock.advance(Duration::from_secs(3600));
                    }
                    serde_json::json!({"data": [{"id": 2}], "next": null})
                } else {
                    serde_json::json!({"data": [{"id": 1}], "next": "/bookings?page=2"})
                };
                axum::Json(body).into_response()
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    let dir = tempfile::tempdir().unwrap();
    let toml = format!(
        r#"
[store]
path = "{store}"
[admin]
listen = "off"
[sources.s]
url = "http://{addr}/bookings"
every = "1h"
items = "/data"
first_poll = "emit_new"
pagination = {{ style = "next_link", next = "/next" }}
"#,
        store = dir.path().join("state.redb").display()
    );
    let app = build(&toml);
    let _ = clock.set(app.clock().clone());
    let started = app.clock().now_ms();
    let r = app.poll_now("s").await.unwrap();
    assert_eq!(r.pages, 2);
    let at = |id: &str| {
        r.events
            .iter()
            .find(|e| e.booking_id == id)
            .map(|e| e.detected_ms)
            .unwrap()
    };
    assert!(
        at("1") < started + 3_600_000,
        "page 1 arrived before the clock moved"
    );
    assert!(
        at("2") >= started + 3_600_000,
        "page 2's change was detected when page 2 arrived, not when the poll began"
    );
}

#[test]
fn the_readme_shows_the_default_retry_schedule_next_to_the_standard_webhooks_one() {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let rows: Vec<&str> = readme
        .lines()
        .map(str::trim)
        .skip_while(|l| !l.starts_with("| attempt | Standard Webhooks example: wait |"))
        .skip(2)
        .take_while(|l| l.starts_with('|'))
        .collect();
    // The pollhook column, in backticks; the rows after the last attempt have none.
    let ours: Vec<u64> = rows
        .iter()
        .filter_map(|r| r.split('|').nth(3))
        .filter_map(|c| c.trim().strip_prefix('`')?.strip_suffix('`'))
        .map(|d| pollhook::config::parse_duration(d).unwrap().as_secs())
        .collect();
    assert_eq!(ours, pollhook::retry::DEFAULT_SCHEDULE_SECS);
    // The specification's example, as the reference copy of it gives it.
    let spec: Vec<&str> = rows
        .iter()
        .filter_map(|r| r.split('|').nth(2))
        .map(str::trim)
        .collect();
    assert_eq!(
        spec,
        [
            "immediately",
            "5 s",
            "5 min",
            "30 min",
            "2 h",
            "5 h",
            "10 h",
            "14 h",
            "20 h, 24 h"
        ]
    );
    let example =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/config.example.toml"))
            .unwrap();
    assert!(example.contains(
        "# Default: [\"0s\", \"5s\", \"5m\", \"30m\", \"2h\", \"5h\", \"10h\", \"10h\"]"
    ));
}

/// One request to [`Pretix`]: its `Authorization` header and its query.
type Seen = (Option<String>, Option<String>);

/// A pretix-shaped orders API: two pages linked by an absolute `next`, recording the
/// `Authorization` header and the query of every request.
struct Pretix {
    orders: Arc<std::sync::Mutex<Vec<serde_json::Value>>>,
    seen: Arc<std::sync::Mutex<Vec<Seen>>>,
    url: String,
}

async fn pretix() -> Pretix {
    let orders = Arc::new(std::sync::Mutex::new(
        ["ABC12", "XYZ34"]
            .iter()
            .map(|code| {
                serde_json::json!({
                    "code": code, "status": "p", "last_modified": "2026-01-01T00:00:00Z",
                    "downloads": [{"output": "pdf", "url": format!("https://x/{code}/a")}],
                    "positions": [
                        {"id": 1, "price": "10.00", "secret": "s1a", "downloads": []},
                        {"id": 2, "price": "12.00", "secret": "s2a", "downloads": []}
                    ]
                })
            })
            .collect::<Vec<_>>(),
    ));
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!(
        "http://{}/api/v1/organizers/o/events/e/orders/",
        listener.local_addr().unwrap()
    );
    let (o, s, b) = (orders.clone(), seen.clone(), base.clone());
    let app = axum::Router::new().route(
        "/api/v1/organizers/o/events/e/orders/",
        axum::routing::get(
            move |uri: axum::http::Uri, headers: axum::http::HeaderMap| async move {
                let auth = headers
                    .get("authorization")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string);
                s.lock().unwrap().push((auth, uri.query().map(str::to_string)));
                let all = o.lock().unwrap().clone();
                let second = uri.query().is_some_and(|q| q.contains("page=2"));
                let body = if second {
                    serde_json::json!({"count": 2, "next": null, "results": [all[1]]})
                } else {
                    serde_json::json!({"count": 2, "next": format!("{b}?page=2"), "results": [all[0]]})
                };
                axum::Json(body).into_response()
            },
        ),
    );
    tokio::spawn(async move { axum::serve(listener, app).await });
    Pretix {
        orders,
        seen,
        url: base,
    }
}

#[tokio::test]
async fn the_pretix_preset_sends_its_token_scheme_and_ignores_every_positions_secret() {
    let api = pretix().await;
    let dir = tempfile::tempdir().unwrap();
    for (file, value) in [("pretix-api-token", "t0k"), ("crm-webhook-secret", SECRET)] {
        std::fs::write(dir.path().join(file), format!("{value}\n")).unwrap();
    }
    let text =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/pretix.toml"))
            .unwrap()
            .replace(
                "/etc/pollhook/credentials/",
                &format!("{}/", dir.path().display()),
            )
            .replace(
                "/var/lib/pollhook/pollhook.redb",
                &dir.path().join("state.redb").display().to_string(),
            )
            .replace(
                "https://pretix.eu/api/v1/organizers/ORGANIZER/events/EVENT/orders/",
                &api.url,
            )
            .replace("https://crm.example.com", "http://127.0.0.1:9")
            + "[admin]\nlisten = \"off\"\n";
    let app = build(&text);
    let r = app.poll_now("pretix").await.unwrap();
    assert!(r.baseline && r.bookings == 2, "{r:?}");

    // pretix regenerates secrets and download links: no change for the receiver...
    {
        let mut o = api.orders.lock().unwrap();
        for order in o.iter_mut() {
            for (i, p) in order["positions"]
                .as_array_mut()
                .unwrap()
                .iter_mut()
                .enumerate()
            {
                p["secret"] = format!("new{i}").into();
                p["downloads"] = serde_json::json!([{"output": "pdf", "url": "https://x/new"}]);
            }
            order["downloads"] = serde_json::json!([]);
            order["last_modified"] = "2026-01-02T00:00:00Z".into();
        }
        // ...but a price on the second position of the second order is one.
        o[1]["positions"][1]["price"] = "15.00".into();
    }
    let r = app.poll_now("pretix").await.unwrap();
    let got: Vec<(&str, &str)> = r
        .events
        .iter()
        .map(|e| (e.kind.status_word(), e.booking_id.as_str()))
        .collect();
    assert_eq!(got, [("modify", "XYZ34")]);
    let paths: Vec<&str> = r.events[0]
        .changes
        .iter()
        .map(|c| c.path.as_str())
        .collect();
    assert_eq!(paths, ["/positions/1/price"]);

    api.orders.lock().unwrap()[0]["status"] = "c".into();
    let r = app.poll_now("pretix").await.unwrap();
    let got: Vec<(&str, &str)> = r
        .events
        .iter()
        .map(|e| (e.kind.status_word(), e.booking_id.as_str()))
        .collect();
    assert_eq!(got, [("cancel", "ABC12")]);

    let seen = api.seen.lock().unwrap();
    assert!(seen.len() >= 6, "{seen:?}");
    for (auth, _) in seen.iter() {
        assert_eq!(
            auth.as_deref(),
            Some("Token t0k"),
            "the scheme, then the secret"
        );
    }
    // After the first (full) poll, the first page of each poll asks only for changes.
    let firsts: Vec<&Option<String>> = seen
        .iter()
        .map(|(_, q)| q)
        .filter(|q| !q.as_deref().unwrap_or("").contains("page=2"))
        .collect();
    assert_eq!(firsts[0], &None);
    assert!(
        firsts[1..].iter().all(|q| q
            .as_deref()
            .is_some_and(|q| q.starts_with("modified_since="))),
        "{firsts:?}"
    );
}
