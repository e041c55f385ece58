//! The status page in a real browser: Debian's headless Chromium, driven over the DevTools
//! protocol, loads the page from a running pollhook (the app's pipeline and admin API in
//! process, on 127.0.0.1), shows the sources, the failing endpoint and an event's changes as
//! text (the guest's markup escaped), and a real mouse click on a dead letter's Replay button
//! gets the delivery to the receiver. Screenshots are kept under `target/tmp/` as artefacts.
//! Without Chromium the test fails and says how to install it.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

use crate::helpers::*;
use crate::status_page::{HOSTILE_FIRST, scenario};

/// How long to wait for the browser or the page before failing (a bound on a hang, not a
/// measurement: everything normally takes a fraction of it).
const PATIENCE: Duration = Duration::from_secs(60);

/// Where Chromium is: `POLLHOOK_CHROMIUM`, else `chromium` (Debian's package) on `PATH`.
fn chromium() -> PathBuf {
    if let Some(p) = std::env::var_os("POLLHOOK_CHROMIUM") {
        return PathBuf::from(p);
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    for dir in std::env::split_paths(&path) {
        for name in ["chromium", "chromium-browser"] {
            let candidate = dir.join(name);
            if candidate.is_file() {
                return candidate;
            }
        }
    }
    panic!(
        "the real-browser test needs headless Chromium, and none was found on PATH.\n\
         Install it with:  apt-get update && apt-get install -y chromium\n\
         (scripts/test and .ci/run do this), or point POLLHOOK_CHROMIUM at a Chromium binary."
    );
}

/// A headless Chromium of its own (own profile directory), killed when dropped.
struct Browser {
    child: Child,
    profile: tempfile::TempDir,
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Browser {
    fn launch() -> Browser {
        let exe = chromium();
        let profile = tempfile::tempdir().unwrap();
        let log = std::fs::File::create(profile.path().join("chromium.log")).unwrap();
        let child = Command::new(&exe)
            .args([
                "--headless",
                // Root in a container: Chromium's sandbox needs user namespaces it may not have.
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--no-first-run",
                "--no-default-browser-check",
                "--disable-extensions",
                "--disable-background-networking",
                "--disable-sync",
                "--no-proxy-server",
                "--remote-debugging-address=127.0.0.1",
                "--remote-debugging-port=0",
                "--window-size=1400,1800",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("about:blank")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start {}: {e}; install Chromium with `apt-get install -y chromium`",
                    exe.display()
                )
            });
        Browser { child, profile }
    }

    /// The DevTools port, from the `DevToolsActivePort` file Chromium writes once it listens.
    async fn port(&mut self) -> u16 {
        let file = self.profile.path().join("DevToolsActivePort");
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Ok(text) = std::fs::read_to_string(&file)
                && let Some(port) = text.lines().next().and_then(|l| l.trim().parse().ok())
            {
                return port;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "Chromium exited ({status}) before listening:\n{}",
                    self.log()
                );
            }
            assert!(
                Instant::now() < deadline,
                "Chromium did not open its DevTools port:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.profile.path().join("chromium.log")).unwrap_or_default()
    }

    /// The DevTools session of the browser's first page.
    async fn page(&mut self) -> Cdp {
        let port = self.port().await;
        let targets: Vec<Value> = reqwest::get(format!("http://127.0.0.1:{port}/json/list"))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let ws = targets
            .iter()
            .find(|t| t["type"] == "page")
            .and_then(|t| t["webSocketDebuggerUrl"].as_str())
            .unwrap_or_else(|| panic!("no page target in {targets:?}"))
            .to_string();
        let (ws, _) = tokio_tungstenite::connect_async(ws).await.unwrap();
        Cdp { ws, next_id: 0 }
    }
}

/// One DevTools protocol session over its WebSocket: commands and their answers (events the
/// browser sends in between are not needed and skipped).
struct Cdp {
    ws: tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
    next_id: u64,
}

impl Cdp {
    async fn call(&mut self, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let msg = json!({ "id": id, "method": method, "params": params });
        self.ws.send(Message::text(msg.to_string())).await.unwrap();
        loop {
            let answer = tokio::time::timeout(PATIENCE, self.ws.next())
                .await
                .unwrap_or_else(|_| panic!("no answer to {method}"))
                .unwrap_or_else(|| panic!("DevTools closed during {method}"))
                .unwrap();
            let Message::Text(text) = answer else {
                continue;
            };
            let v: Value = serde_json::from_str(&text).unwrap();
            if v["id"] != id {
                continue;
            }
            if let Some(e) = v.get("error") {
                panic!("{method} failed: {e}");
            }
            return v["result"].clone();
        }
    }

    /// Evaluates a JavaScript expression in the page and returns its value.
    async fn eval(&mut self, expression: &str) -> Value {
        let r = self
            .call(
                "Runtime.evaluate",
                json!({ "expression": expression, "returnByValue": true, "awaitPromise": true }),
            )
            .await;
        if let Some(e) = r.get("exceptionDetails") {
            panic!("{expression} threw: {e}");
        }
        r["result"]["value"].clone()
    }

    /// Opens `url` and waits until its document has loaded.
    async fn open(&mut self, url: &str) {
        let r = self.call("Page.navigate", json!({ "url": url })).await;
        assert!(r.get("errorText").is_none(), "navigating to {url}: {r}");
        let deadline = Instant::now() + PATIENCE;
        let probe = format!(
            "document.readyState === 'complete' && location.href === {}",
            json!(url)
        );
        while self.eval(&probe).await != json!(true) {
            assert!(Instant::now() < deadline, "{url} did not load");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The visible text of the first element matching `selector` (None if there is none).
    async fn text(&mut self, selector: &str) -> Option<String> {
        let expr = format!(
            "(() => {{ const e = document.querySelector({}); return e ? e.innerText : null; }})()",
            json!(selector)
        );
        self.eval(&expr).await.as_str().map(str::to_string)
    }

    /// Clicks the element matching `selector` the way a user does: scrolled into view, a mouse
    /// press and release at its centre.
    async fn click(&mut self, selector: &str) {
        let expr = format!(
            "(() => {{ const e = document.querySelector({}); if (!e) return null; \
             e.scrollIntoView({{ block: 'center' }}); const r = e.getBoundingClientRect(); \
             return {{ x: r.x + r.width / 2, y: r.y + r.height / 2 }}; }})()",
            json!(selector)
        );
        let at = self.eval(&expr).await;
        assert!(at.is_object(), "nothing to click at {selector}");
        for kind in ["mouseMoved", "mousePressed", "mouseReleased"] {
            self.call(
                "Input.dispatchMouseEvent",
                json!({ "type": kind, "x": at["x"], "y": at["y"], "button": "left", "clickCount": 1 }),
            )
            .await;
        }
    }

    /// A full-page PNG screenshot, written to `path`.
    async fn screenshot(&mut self, path: &Path) {
        let r = self
            .call(
                "Page.captureScreenshot",
                json!({ "format": "png", "captureBeyondViewport": true }),
            )
            .await;
        let png = base64::engine::general_purpose::STANDARD
            .decode(r["data"].as_str().unwrap())
            .unwrap();
        assert!(png.starts_with(b"\x89PNG"), "a PNG");
        std::fs::write(path, png).unwrap();
        eprintln!("screenshot: {}", path.display());
    }
}

/// Where the screenshots go (`target/tmp/`, kept between runs as test artefacts).
fn artefact(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_a_real_browser_the_page_shows_the_trouble_and_replay_fixes_it() {
    let s = scenario().await;
    // The daemon's pipeline runs, so a replay is delivered by its worker as in production.
    let run = tokio::spawn({
        let (app, cancel) = (s.t.app.clone(), s.cancel.clone());
        async move { app.run(cancel).await }
    });
    let mut browser = Browser::launch();
    let mut page = browser.page().await;
    let base = format!("http://{}/", s.addr);

    page.open(&base).await;
    assert_eq!(
        page.eval("document.title").await,
        json!("pollhook status"),
        "the page loaded"
    );
    assert_eq!(
        page.eval("document.querySelector('meta[http-equiv=refresh]').content")
            .await,
        json!("10"),
        "it reloads itself"
    );
    // The sources, with the failing one's count of failures.
    let hotel = page.text(r#"tr[data-source="hotel"]"#).await.unwrap();
    assert!(
        hotel.contains("every 1h") && hotel.contains("full"),
        "{hotel}"
    );
    // (The pipeline's own schedule has polled it again since, failing again.)
    let broken = page
        .text(r#"tr[data-source="broken"] td.failures"#)
        .await
        .unwrap();
    let failures: u32 = broken.split_whitespace().next().unwrap().parse().unwrap();
    assert!(failures >= 1, "{broken}");
    assert!(broken.contains("Connection refused"), "{broken}");
    // The failing endpoint, and why.
    let crm = page.text(r#"tr[data-endpoint="crm"]"#).await.unwrap();
    assert!(crm.contains("failing") && crm.contains("HTTP 503"), "{crm}");
    // The event's changes, old → new, the guest's markup shown as text and not run.
    let ev = page
        .text(&format!(r#"tr.event[data-event="{}"]"#, s.modify_event))
        .await
        .unwrap();
    assert!(ev.contains("modify") && ev.contains("→"), "{ev}");
    let typed = serde_json::to_string(HOSTILE_FIRST).unwrap();
    assert!(ev.contains(&typed), "the name as the guest typed it: {ev}");
    assert_eq!(
        page.eval("document.querySelectorAll('script').length")
            .await,
        json!(1),
        "the page's own script only"
    );
    assert_eq!(
        page.eval("document.querySelectorAll('tr.event b').length")
            .await,
        json!(0)
    );
    page.screenshot(&artefact("status-page.png")).await;

    // Replay the modify event's dead letter with the mouse (reloading stopped, so the page
    // stays put while the button is found and pressed).
    page.open(&format!("{base}?refresh=0")).await;
    let dead_row = format!(
        r#"tr.dead[data-endpoint="crm"][data-event="{}"]"#,
        s.modify_event
    );
    assert!(
        page.text(&dead_row).await.is_some(),
        "the dead letter is listed"
    );
    let before = s.t.receiver.accepted().len();
    page.click(&format!("{dead_row} button.replay")).await;
    let id = s.modify_event.clone();
    wait_until("the replayed delivery at the receiver", PATIENCE, || {
        s.t.receiver
            .accepted()
            .iter()
            .any(|r| r.header("webhook-id") == Some(id.as_str()) && r.path == "/crm")
    })
    .await;
    assert_eq!(
        s.t.receiver.accepted().len(),
        before + 1,
        "that one delivery"
    );

    // Reloaded, the page no longer lists it; the other dead letter is still there.
    page.open(&format!("{base}?refresh=0")).await;
    assert!(
        page.text(&dead_row).await.is_none(),
        "replayed and delivered"
    );
    assert_eq!(
        page.eval("document.querySelectorAll('tr.dead').length")
            .await,
        json!(1)
    );
    page.screenshot(&artefact("status-page-after-replay.png"))
        .await;

    s.cancel.cancel();
    run.await.unwrap();
}
