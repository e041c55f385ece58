//! The status page at `/`, fetched with reqwest: it lists the sources (the last poll's figures,
//! a failing source's error), the endpoints (a failing one, its dead letters), the newest events
//! with their field-level changes and the dead letters with replay buttons; it escapes what the
//! source sent, never shows a secret or a configured URL, and keeps its own cross-site protections (its
//! buttons' POSTs need the `X-Pollhook` header, the page may not be framed). [`scenario`] is
//! shared with the real-browser test.

use tokio_util::sync::CancellationToken;

use crate::helpers::*;

/// What a source sends as a guest's name: markup that must reach the page as text.
pub const HOSTILE_FIRST: &str = "<script>alert(\"pwned\")</script>";
pub const HOSTILE_LAST: &str = "O'Brien & <b>Sons</b>";

/// The bearer token of the failing source (it must not appear on the page).
pub const SOURCE_TOKEN: &str = "src-token-9d1f0c7e5a3b";

/// A running admin API over an app with: source `hotel` polled (a modify event whose guest name
/// is [`HOSTILE_FIRST`]), source `broken` failing (connection refused), endpoint `crm` failing
/// with its two events dead-lettered after four HTTP 503s, endpoint `audit` (disabled in the
/// configuration).
pub struct Scenario {
    pub t: TestApp,
    pub addr: std::net::SocketAddr,
    pub cancel: CancellationToken,
    /// The dead letter of the modify event.
    pub modify_event: String,
    /// The booking whose guest was renamed.
    pub booking: u64,
    _dir: tempfile::TempDir,
}

pub async fn scenario() -> Scenario {
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("source-token");
    std::fs::write(&token_file, SOURCE_TOKEN).unwrap();
    // A port nothing listens on: bind one, then let it go.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let t = spawn_app(Options {
        endpoints: format!(
            r#"
[endpoints.crm]
url = "{{RECEIVER}}/crm"
format = "v2"
secrets = [{{ file = "{{SECRET_FILE}}" }}]
retry_schedule = ["0s", "5s", "5m", "30m"]
jitter = 0.0

[endpoints.audit]
url = "{{RECEIVER}}/audit?key=audit-key-should-stay-hidden"
enabled = false

[sources.broken]
url = "http://{closed}/bookings"
every = "1h"
items = "/data"
retries = 0
auth = {{ type = "bearer", secret = {{ file = "{token}" }} }}
"#,
            token = token_file.display()
        ),
        ..Options::default()
    })
    .await;
    t.poll().await;
    let booking = t.sim.create_booking();
    assert_eq!(t.poll().await, 1);
    assert!(t.sim.set_guest_name(booking, HOSTILE_FIRST, HOSTILE_LAST));
    assert_eq!(t.poll().await, 1);
    let modify_event = t.app.store().events().unwrap()[1].id.clone();
    assert!(t.app.poll_now("broken").await.is_err());

    t.receiver.fail_next(100, 503);
    let start = now_ms();
    // One lane (one booking): the modify event's attempts start once the new one is dead.
    for hour in 0..12 {
        t.app.deliver_due_at(start + hour * HOUR_MS).await.unwrap();
    }
    assert_eq!(t.app.store().counts().unwrap().dead, 2, "both events dead");
    t.receiver.fail_next(0, 200);
    let cancel = CancellationToken::new();
    let addr = start_admin(&t.app, &cancel).await;
    Scenario {
        t,
        addr,
        cancel,
        modify_event,
        booking,
        _dir: dir,
    }
}

async fn page(addr: std::net::SocketAddr, query: &str) -> (reqwest::header::HeaderMap, String) {
    let r = reqwest::get(format!("http://{addr}/{query}"))
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let headers = r.headers().clone();
    (headers, r.text().await.unwrap())
}

/// The HTML of one table row: from `<tr` containing `marker` to its `</tr>`.
fn row<'a>(html: &'a str, marker: &str) -> &'a str {
    let at = html
        .find(marker)
        .unwrap_or_else(|| panic!("no {marker} in the page"));
    let start = html[..at].rfind("<tr").unwrap();
    let end = at + html[at..].find("</tr>").unwrap();
    &html[start..end]
}

#[tokio::test]
async fn the_page_shows_sources_endpoints_events_and_dead_letters() {
    let s = scenario().await;
    let (headers, html) = page(s.addr, "").await;
    assert_eq!(headers["content-type"], "text/html; charset=utf-8");
    assert!(html.starts_with("<!DOCTYPE html>"), "{html:.100}");
    assert!(
        html.contains(r#"<meta http-equiv="refresh" content="10">"#),
        "it reloads itself"
    );

    // What is wrong, at the top.
    let problems = &html[html.find(r#"id="problems""#).unwrap()..];
    let problems = &problems[..problems.find("</ul>").unwrap()];
    assert!(
        problems.contains("source broken: the last 1 poll(s) failed"),
        "{problems}"
    );
    assert!(problems.contains("endpoint crm: failing"), "{problems}");
    assert!(
        problems.contains("endpoint crm: 2 dead letter(s)"),
        "{problems}"
    );
    assert!(
        !problems.contains("hotel") && !problems.contains("audit"),
        "{problems}"
    );

    let hotel = row(&html, r#"data-source="hotel""#);
    assert!(hotel.contains("every 1h"), "{hotel}");
    assert!(
        hotel.contains(">full<") || hotel.contains(">full"),
        "{hotel}"
    );
    // The last poll: 4 bookings over pages of 2, 1 event.
    assert!(
        hotel.contains(r#"<td class="n">2</td><td class="n">4</td><td class="n">1</td>"#),
        "{hotel}"
    );
    assert!(hotel.contains(r#"<span class="ok">0</span>"#), "{hotel}");

    let broken = row(&html, r#"data-source="broken""#);
    assert!(broken.contains("no poll committed since start"), "{broken}");
    assert!(broken.contains(r#"<span class="bad">1</span>"#), "{broken}");
    assert!(
        broken.contains(r#"class="err""#) && broken.contains("Connection refused"),
        "the last error is shown: {broken}"
    );

    let crm = row(&html, r#"data-endpoint="crm""#);
    assert!(crm.contains(">failing<"), "{crm}");
    assert!(crm.contains("HTTP 503"), "{crm}");
    assert!(
        crm.contains(r#"<span class="bad">2</span>"#),
        "two dead letters: {crm}"
    );
    assert!(crm.contains("/endpoints/crm/replay-dead"), "{crm}");
    let audit = row(&html, r#"data-endpoint="audit""#);
    assert!(audit.contains("enabled = false"), "{audit}");

    // The modify event with its field-level changes, old → new, escaped.
    let ev = row(
        &html,
        &format!(r#"<tr class="event" data-event="{}""#, s.modify_event),
    );
    assert!(ev.contains(">modify<"), "{ev}");
    assert!(ev.contains("→"), "{ev}");
    assert!(
        ev.contains("&lt;script&gt;alert(\\&quot;pwned\\&quot;)&lt;/script&gt;"),
        "{ev}"
    );
    assert!(ev.contains("O'Brien &amp; &lt;b&gt;Sons&lt;/b&gt;"), "{ev}");

    // Each dead letter with its replay button (for its event and endpoint).
    let dead = row(
        &html,
        &format!(
            r#"<tr class="dead" data-endpoint="crm" data-event="{}""#,
            s.modify_event
        ),
    );
    assert!(
        dead.contains(&format!(
            r#"data-post="/events/{}/replay?endpoint=crm""#,
            s.modify_event
        )),
        "{dead}"
    );
    assert!(dead.contains(&s.booking.to_string()), "{dead}");
    assert_eq!(html.matches(r#"<tr class="dead""#).count(), 2);
}

#[tokio::test]
async fn nothing_from_the_source_is_markup_and_no_secret_or_url_appears() {
    let s = scenario().await;
    let (_, html) = page(s.addr, "").await;
    // The only <script> is the page's own, and the only <b> are the page's names.
    assert_eq!(html.matches("<script").count(), 1, "{html}");
    assert!(!html.contains("<b>Sons"), "{html}");
    assert!(!html.contains("alert(\"pwned\")"), "{html}");
    for secret in [
        SECRET,
        SECRET.trim_start_matches("whsec_"),
        SOURCE_TOKEN,
        "audit-key-should-stay-hidden",
    ] {
        assert!(!html.contains(secret), "{secret} appears on the page");
    }
    // No URL of a source or endpoint (they may carry credentials).
    assert!(!html.contains(&s.t.sim.bookings_url()), "source URL");
    assert!(!html.contains(&s.t.receiver.url("")), "receiver URL");
}

#[tokio::test]
async fn the_page_keeps_its_cross_site_protections() {
    let s = scenario().await;
    let (headers, html) = page(s.addr, "").await;
    let csp = headers["content-security-policy"].to_str().unwrap();
    for part in [
        "default-src 'none'",
        "connect-src 'self'",
        "frame-ancestors 'none'",
        "form-action 'none'",
    ] {
        assert!(csp.contains(part), "{csp}");
    }
    assert!(!csp.contains("unsafe-inline"), "{csp}");
    assert_eq!(headers["x-frame-options"], "DENY");
    assert_eq!(headers["cache-control"], "no-store");
    // The buttons send the custom header; without it the same POST is refused.
    assert!(html.contains(r#""X-Pollhook": "1""#));
    assert!(
        !html.contains("<form"),
        "no form a foreign page could imitate"
    );
    let path = format!("/events/{}/replay?endpoint=crm", s.modify_event);
    let (code, body) = raw_http(
        s.addr,
        &format!(
            "POST {path} HTTP/1.1\r\nHost: {}\r\nOrigin: http://evil.example\r\nX-Pollhook: 1\r\nContent-Length: 0",
            s.addr
        ),
    )
    .await;
    assert_eq!(code, 403, "{body}");
    let (code, body) = raw_http(
        s.addr,
        &format!(
            "POST {path} HTTP/1.1\r\nHost: {}\r\nContent-Length: 0",
            s.addr
        ),
    )
    .await;
    assert_eq!(code, 403, "{body}");
    assert_eq!(
        s.t.app.store().counts().unwrap().dead,
        2,
        "nothing replayed"
    );
    // What the page's script sends (same origin, the header) goes through.
    let (code, body) = raw_http(
        s.addr,
        &format!(
            "POST {path} HTTP/1.1\r\nHost: {a}\r\nOrigin: http://{a}\r\nX-Pollhook: 1\r\nContent-Length: 0",
            a = s.addr
        ),
    )
    .await;
    assert_eq!((code, body.as_str()), (200, "{\"replayed\":1}"));
    // A foreign Host (DNS rebinding) gets no page.
    let (code, body) = raw_http(s.addr, "GET / HTTP/1.1\r\nHost: evil.example").await;
    assert_eq!(code, 403, "{body}");
    assert!(!body.contains("hotel"), "{body}");
}

#[tokio::test]
async fn refresh_can_be_stopped_and_with_a_token_the_page_needs_it() {
    let s = scenario().await;
    let (_, html) = page(s.addr, "?refresh=0").await;
    assert!(!html.contains(r#"http-equiv="refresh""#), "{html:.400}");
    let (_, html) = page(s.addr, "?refresh=1").await;
    assert!(
        html.contains(r#"<meta http-equiv="refresh" content="2">"#),
        "at least 2 s"
    );

    let dir = tempfile::tempdir().unwrap();
    let token = "0123456789abcdef0123456789abcdef";
    let file = dir.path().join("admin-token");
    std::fs::write(&file, token).unwrap();
    let t = spawn_app(Options {
        admin_extra: format!("token = {{ file = {:?} }}", file.display().to_string()),
        ..Options::default()
    })
    .await;
    let cancel = CancellationToken::new();
    let addr = start_admin(&t.app, &cancel).await;
    let r = reqwest::get(format!("http://{addr}/")).await.unwrap();
    assert_eq!(r.status().as_u16(), 401);
    let r = reqwest::Client::new()
        .get(format!("http://{addr}/"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let html = r.text().await.unwrap();
    assert!(html.contains(r#"data-source="hotel""#));
    assert!(!html.contains(token));
}
