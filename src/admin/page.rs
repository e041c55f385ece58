//! The status page at `/`: one server-rendered HTML page (maud, which escapes every value it
//! splices in) with no external assets, refreshing itself, showing the sources, the endpoints,
//! the newest events with their field-level changes and the dead letters. Its replay and
//! enable buttons send `fetch()` POSTs from the page's own origin with the `X-Pollhook` header,
//! so they pass the access rules ([`super::access`]) that refuse the same requests from any
//! other site. A Content-Security-Policy admits only the page's own inline script and style
//! (by hash), requests to its own origin, and no framing. Shows no secret and no URL (a source
//! or endpoint URL may carry credentials): names, counts, times, events and redacted errors.

use std::sync::LazyLock;

use axum::extract::{Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use maud::{DOCTYPE, Markup, PreEscaped, html};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::internal;
use crate::app::{App, SourceHealth};
use crate::delivery::{EndpointReport, rfc3339};
use crate::outbox::{Delivery, Event};
use crate::store::{Backfill, EndpointCounts};

/// Seconds between the page's own reloads, unless `?refresh=SECONDS` says otherwise.
pub const REFRESH_SECONDS: u32 = 10;

/// The shortest reload interval `?refresh=` may ask for (0 turns reloading off).
const MIN_REFRESH_SECONDS: u32 = 2;

/// `GET /?refresh=SECONDS`: how often the page reloads itself; `0` stops it (to read a long
/// error without the page moving under you).
#[derive(serde::Deserialize)]
pub(super) struct PageQuery {
    refresh: Option<u32>,
}

/// Newest events shown.
const EVENTS_SHOWN: usize = 25;

/// Newest dead letters shown.
const DEAD_SHOWN: usize = 50;

/// Pending deliveries and dead letters are counted up to this many per endpoint (then shown as
/// "at least"), so a refresh reads a bounded number of keys whatever the queue's size.
const COUNT_CAP: u64 = 100_000;

/// A field value longer than this (as compact JSON) is cut.
const VALUE_CHARS: usize = 120;

/// Field changes shown per event.
const CHANGES_SHOWN: usize = 20;

/// The one script: buttons with `data-post` send a same-origin POST with the `X-Pollhook`
/// header (what the access rules require of a mutating request) and show the answer.
const SCRIPT: &str = r#"
document.addEventListener("click", async (ev) => {
  const b = ev.target.closest("button[data-post]");
  if (!b) return;
  if (b.dataset.confirm && !confirm(b.dataset.confirm)) return;
  const out = document.getElementById("result");
  b.disabled = true;
  try {
    const r = await fetch(b.dataset.post, {
      method: "POST",
      headers: { "X-Pollhook": "1" },
      credentials: "same-origin",
      cache: "no-store",
    });
    const text = (await r.text()).trim();
    out.textContent = (r.ok ? "Done: " : "Refused (HTTP " + r.status + "): ") + text;
    out.className = r.ok ? "ok" : "bad";
    if (r.ok) setTimeout(() => location.reload(), 1500);
  } catch (e) {
    out.textContent = "Request failed: " + e;
    out.className = "bad";
  } finally {
    b.disabled = false;
  }
});
"#;

const STYLE: &str = r#"
body { font: 14px/1.4 system-ui, sans-serif; margin: 1.5em; color: #222; background: #fff; }
h1 { font-size: 1.4em; margin: 0 0 .2em; }
h2 { font-size: 1.1em; margin: 1.6em 0 .4em; }
table { border-collapse: collapse; width: 100%; }
th, td { border-bottom: 1px solid #ddd; padding: .3em .5em; text-align: left; vertical-align: top; }
th { background: #f4f4f4; font-weight: 600; }
td.n { text-align: right; font-variant-numeric: tabular-nums; }
code, .mono { font-family: ui-monospace, monospace; font-size: .92em; }
.ok { color: #176b1d; }
.bad { color: #b00020; font-weight: 600; }
.warn { color: #8a5a00; font-weight: 600; }
.muted { color: #777; }
.err { color: #b00020; font-family: ui-monospace, monospace; font-size: .9em; white-space: pre-wrap; word-break: break-word; }
ul.changes { margin: 0; padding-left: 1.1em; }
button { font: inherit; padding: .15em .7em; cursor: pointer; }
#result { min-height: 1.4em; margin: .6em 0; }
.banner { padding: .5em .8em; border: 2px solid #b00020; color: #b00020; margin: .8em 0; }
"#;

/// `'sha256-…'` of a text, for the Content-Security-Policy.
fn csp_hash(text: &str) -> String {
    let digest = Sha256::digest(text.as_bytes());
    format!(
        "'sha256-{}'",
        base64::engine::general_purpose::STANDARD.encode(digest)
    )
}

/// The page's Content-Security-Policy: nothing but its own inline script and style, requests
/// to its own origin, no forms, no framing (clickjacking), no base-URI tricks.
static CSP: LazyLock<String> = LazyLock::new(|| {
    format!(
        "default-src 'none'; script-src {}; style-src {}; connect-src 'self'; img-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
        csp_hash(SCRIPT),
        csp_hash(STYLE)
    )
});

/// Characters percent-encoded in a path segment or query value of a button's URL.
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'_').remove(b'.');

fn enc(s: &str) -> String {
    utf8_percent_encode(s, SEGMENT).to_string()
}

/// Everything the page shows, read from the app.
struct View {
    /// Reload interval in seconds; 0 for none.
    refresh: u32,
    now_ms: i64,
    fault: Option<String>,
    sources: Vec<SourceRow>,
    endpoints: Vec<(EndpointReport, Option<EndpointCounts>)>,
    events: Vec<Event>,
    dead: Vec<(Delivery, Option<Event>)>,
    dead_total: u64,
    backfills: Vec<Backfill>,
}

struct SourceRow {
    name: String,
    schedule: String,
    incremental: bool,
    health: SourceHealth,
}

/// `GET /`.
pub(super) async fn status_page(State(app): State<App>, Query(q): Query<PageQuery>) -> Response {
    let refresh = match q.refresh {
        None => REFRESH_SECONDS,
        Some(0) => 0,
        Some(n) => n.max(MIN_REFRESH_SECONDS),
    };
    let view = match read(&app, refresh).await {
        Ok(v) => v,
        Err(e) => return internal(e),
    };
    let body = render(&view).into_string();
    let mut resp = (StatusCode::OK, body).into_response();
    let h = resp.headers_mut();
    let put = |h: &mut axum::http::HeaderMap, name, value: &str| {
        if let Ok(v) = HeaderValue::from_str(value) {
            h.insert(name, v);
        }
    };
    put(h, header::CONTENT_TYPE, "text/html; charset=utf-8");
    put(h, header::CONTENT_SECURITY_POLICY, &CSP);
    put(h, header::X_FRAME_OPTIONS, "DENY");
    put(h, header::X_CONTENT_TYPE_OPTIONS, "nosniff");
    put(h, header::REFERRER_POLICY, "no-referrer");
    // Guests' data: not to be kept in caches.
    put(h, header::CACHE_CONTROL, "no-store");
    resp
}

async fn read(app: &App, refresh: u32) -> Result<View, crate::store::StoreError> {
    let health = app.source_health();
    let sources = app
        .config()
        .sources
        .iter()
        .map(|s| SourceRow {
            name: s.name.clone(),
            schedule: s.schedule.describe(),
            incremental: s.incremental.is_some(),
            health: health.get(&s.name).cloned().unwrap_or_default(),
        })
        .collect();
    let mut counts = app.endpoint_counts(COUNT_CAP).await?;
    let endpoints = app
        .endpoint_report()
        .into_iter()
        .map(|r| {
            let c = counts
                .iter()
                .position(|c| c.endpoint == r.name)
                .map(|i| counts.swap_remove(i));
            (r, c)
        })
        .collect();
    let events = app.recent_events(EVENTS_SHOWN).await?;
    let dead = app.dead_letters(DEAD_SHOWN).await?;
    let dead_total = app.counts().await?.dead;
    let backfills = app.backfills().await?;
    Ok(View {
        refresh,
        now_ms: app.clock().now_ms(),
        fault: app.state_file_fault().map(|e| e.to_string()),
        sources,
        endpoints,
        events,
        dead,
        dead_total,
        backfills,
    })
}

/// `ms` as an RFC 3339 time with how long ago (or from now) it is.
fn when(ms: i64, now_ms: i64) -> Markup {
    let delta = (now_ms - ms) / 1000;
    let rel = if delta >= 0 {
        format!("{} ago", span(delta))
    } else {
        format!("in {}", span(-delta))
    };
    html! { span title=(rfc3339(ms)) { (rfc3339(ms)) " " span.muted { "(" (rel) ")" } } }
}

fn span(secs: i64) -> String {
    match secs {
        s if s < 120 => format!("{s} s"),
        s if s < 7200 => format!("{} min", s / 60),
        s if s < 172_800 => format!("{} h", s / 3600),
        s => format!("{} days", s / 86_400),
    }
}

fn count(n: u64) -> String {
    if n >= COUNT_CAP {
        format!("{n}+")
    } else {
        n.to_string()
    }
}

/// A JSON value as compact JSON text (strings quoted), cut at [`VALUE_CHARS`] characters.
fn value(v: &Value) -> String {
    let text = match v {
        Value::Null => "(absent)".to_string(),
        other => other.to_string(),
    };
    if text.chars().count() > VALUE_CHARS {
        let cut: String = text.chars().take(VALUE_CHARS).collect();
        format!("{cut}…")
    } else {
        text
    }
}

fn render(v: &View) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                @if v.refresh > 0 {
                    meta http-equiv="refresh" content=(v.refresh);
                }
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { "pollhook status" }
                style { (PreEscaped(STYLE)) }
            }
            body {
                h1 { "pollhook status" }
                p.muted {
                    "pollhook " (env!("CARGO_PKG_VERSION")) " · as of " (rfc3339(v.now_ms))
                    @if v.refresh > 0 {
                        " · reloads every " (v.refresh) " s ("
                        a href="?refresh=0" { "stop" } ")"
                    } @else {
                        " · not reloading (" a href="?" { "reload every " (REFRESH_SECONDS) " s" } ")"
                    }
                }
                @if let Some(c) = &v.fault {
                    p.banner { "The state file cannot be used; pollhook stops: " (c) }
                }
                (problems(v))
                p id="result" role="status" {}
                (sources(v))
                (endpoints(v))
                (events(v))
                (dead_letters(v))
                script { (PreEscaped(SCRIPT)) }
            }
        }
    }
}

/// One line per thing that needs the operator: failing sources, failing or disabled endpoints,
/// dead letters.
fn problems(v: &View) -> Markup {
    let mut lines: Vec<String> = Vec::new();
    for s in &v.sources {
        if s.health.consecutive_failures > 0 {
            lines.push(format!(
                "source {}: the last {} poll(s) failed",
                s.name, s.health.consecutive_failures
            ));
        }
    }
    for (r, c) in &v.endpoints {
        if r.enabled && r.disabled.is_some() {
            lines.push(format!(
                "endpoint {}: disabled by pollhook (press Enable once the receiver is fixed)",
                r.name
            ));
        } else if r.enabled && r.failing {
            lines.push(format!("endpoint {}: failing", r.name));
        }
        if let Some(c) = c.as_ref().filter(|c| c.dead > 0) {
            lines.push(format!(
                "endpoint {}: {} dead letter(s)",
                r.name,
                count(c.dead)
            ));
        }
    }
    html! {
        @if lines.is_empty() {
            p.ok id="problems" { "All sources and endpoints healthy." }
        } @else {
            ul.bad id="problems" {
                @for l in &lines { li { (l) } }
            }
        }
    }
}

fn sources(v: &View) -> Markup {
    html! {
        h2 id="sources" { "Sources" }
        table {
            thead { tr {
                th { "Source" } th { "Schedule" } th { "Last poll" } th { "Kind" }
                th { "Pages" } th { "Bookings" } th { "Events" } th { "Duration" }
                th { "Failures in a row" } th { "Next poll" }
            } }
            tbody {
                @for s in &v.sources {
                    tr.source data-source=(s.name) {
                        td { b { (s.name) } }
                        td { (s.schedule) @if s.incremental { span.muted { " (incremental)" } } }
                        @if let Some(p) = &s.health.last_poll {
                            td { (when(p.at_ms, v.now_ms)) }
                            td.kind {
                                @if p.full { "full" } @else { "incremental" }
                                @if p.resumed { " (resumed)" }
                                @if p.baseline { " (baseline)" }
                            }
                            td.n { (p.pages) }
                            td.n { (p.bookings) }
                            td.n { (p.events) }
                            td.n { (p.duration_ms) " ms" }
                        } @else {
                            td.muted colspan="6" { "no poll committed since start" }
                        }
                        td.failures {
                            @if s.health.consecutive_failures == 0 {
                                span.ok { "0" }
                            } @else {
                                span.bad { (s.health.consecutive_failures) }
                                @if let Some(at) = s.health.last_failure_ms {
                                    " " span.muted { "(last " (when(at, v.now_ms)) ")" }
                                }
                                @if let Some(e) = &s.health.last_error {
                                    div.err { (e) }
                                }
                            }
                        }
                        td {
                            @match s.health.next_poll_ms {
                                Some(ms) => (when(ms, v.now_ms)),
                                None => span.muted { "not scheduled (pipeline not running)" },
                            }
                        }
                    }
                }
            }
        }
    }
}

fn endpoints(v: &View) -> Markup {
    html! {
        h2 id="endpoints" { "Endpoints" }
        table {
            thead { tr {
                th { "Endpoint" } th { "State" } th { "In flight" } th { "Pending" }
                th { "Dead letters" } th { "Recent latency" } th { "Last attempt" } th { "Actions" }
            } }
            tbody {
                @for (r, c) in &v.endpoints {
                    tr.endpoint data-endpoint=(r.name) {
                        td { b { (r.name) } }
                        td.state {
                            @if !r.enabled {
                                span.muted { "off (enabled = false)" }
                            } @else if let Some(d) = &r.disabled {
                                span.bad { "disabled" } " since " (when(d.since_ms, v.now_ms))
                                div.err { (d.reason) }
                            } @else if r.failing {
                                span.bad { "failing" }
                                @if let Some(since) = r.failing_since_ms {
                                    " since " (when(since, v.now_ms))
                                }
                            } @else {
                                span.ok { "enabled" }
                            }
                        }
                        td.n { (r.in_flight) }
                        td.n { (c.as_ref().map(|c| count(c.pending)).unwrap_or_default()) }
                        td.n {
                            @match c.as_ref().map(|c| c.dead) {
                                Some(0) | None => "0",
                                Some(n) => span.bad { (count(n)) },
                            }
                        }
                        td.n {
                            @match r.recent_latency_ms {
                                Some(ms) => { (ms) " ms" },
                                None => span.muted { "–" },
                            }
                        }
                        td { @if let Some(o) = &r.last_outcome { span.mono { (o) } } }
                        td {
                            @if r.disabled.is_some() {
                                button.enable data-post=(format!("/endpoints/{}/enable", enc(&r.name))) {
                                    "Enable"
                                }
                                " "
                            }
                            @if let Some(b) = v.backfills.iter().find(|b| b.endpoint == r.name) {
                                span.warn.backfill {
                                    "backfill running: " (b.enqueued) " events enqueued"
                                    @if let Some(s) = b.sources.first() { " (now " (s) ")" }
                                }
                                " "
                            } @else {
                                button.backfill data-post=(format!("/endpoints/{}/backfill", enc(&r.name)))
                                    data-confirm=(format!("Send endpoint {} one event per known booking (its current state)?", r.name)) {
                                    "Backfill"
                                }
                                " "
                            }
                            @if c.as_ref().is_some_and(|c| c.dead > 0) {
                                button.replay-dead data-post=(format!("/endpoints/{}/replay-dead", enc(&r.name))) {
                                    "Replay all dead letters"
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

fn changes(e: &Event) -> Markup {
    html! {
        @if e.changes.is_empty() {
            span.muted { "–" }
        } @else {
            ul.changes {
                @for c in e.changes.iter().take(CHANGES_SHOWN) {
                    li.change {
                        code { (c.path) } ": "
                        span.old { (value(&c.old)) } " → " span.new { (value(&c.new)) }
                    }
                }
                @if e.changes.len() > CHANGES_SHOWN {
                    li.muted { "and " (e.changes.len() - CHANGES_SHOWN) " more" }
                }
            }
        }
    }
}

fn events(v: &View) -> Markup {
    html! {
        h2 id="events" { "Newest events" }
        @if v.events.is_empty() {
            p.muted { "No events stored." }
        } @else {
            table {
                thead { tr {
                    th { "Detected" } th { "Source" } th { "Booking" } th { "Kind" } th { "Changes (old → new)" }
                } }
                tbody {
                    @for e in &v.events {
                        tr.event data-event=(e.id) {
                            td { (when(e.detected_ms, v.now_ms)) }
                            td { (e.source) }
                            td.mono { (e.booking_id) }
                            td { (e.kind.status_word()) }
                            td { (changes(e)) }
                        }
                    }
                }
            }
        }
    }
}

fn dead_letters(v: &View) -> Markup {
    html! {
        h2 id="dead" { "Dead letters" }
        @if v.dead.is_empty() {
            p.muted { "None." }
        } @else {
            @if v.dead_total > v.dead.len() as u64 {
                p.muted { "The newest " (v.dead.len()) " of " (v.dead_total) "." }
            }
            table {
                thead { tr {
                    th { "Endpoint" } th { "Event" } th { "Booking" } th { "Kind" } th { "Attempts" }
                    th { "Last attempt" } th { "" }
                } }
                tbody {
                    @for (d, e) in &v.dead {
                        tr.dead data-endpoint=(d.endpoint) data-event=(d.event_id) {
                            td { (d.endpoint) }
                            td.mono { (d.event_id) }
                            td.mono { @if let Some(e) = e { (e.booking_id) } }
                            td { @if let Some(e) = e { (e.kind.status_word()) } }
                            td.n { (d.attempts) }
                            td {
                                @if let Some(a) = d.history.last() {
                                    (when(a.at_ms, v.now_ms)) " "
                                    @match (a.status, &a.error) {
                                        (Some(code), _) => span.bad { "HTTP " (code) },
                                        (None, Some(err)) => span.err { (err) },
                                        (None, None) => span.muted { "no answer" },
                                    }
                                }
                            }
                            td {
                                button.replay data-post=(format!(
                                    "/events/{}/replay?endpoint={}", enc(&d.event_id), enc(&d.endpoint)
                                )) { "Replay" }
                            }
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_policy_admits_exactly_the_inline_script_and_style() {
        assert!(CSP.contains(&csp_hash(SCRIPT)));
        assert!(CSP.contains(&csp_hash(STYLE)));
        assert!(CSP.contains("frame-ancestors 'none'"));
        assert!(!CSP.contains("unsafe-inline"));
    }

    #[test]
    fn values_are_cut_and_strings_quoted() {
        assert_eq!(value(&Value::Null), "(absent)");
        assert_eq!(value(&serde_json::json!("a\"b")), "\"a\\\"b\"");
        let long = Value::String("x".repeat(500));
        assert_eq!(value(&long).chars().count(), VALUE_CHARS + 1);
    }

    #[test]
    fn button_urls_encode_names() {
        assert_eq!(enc("a b/c?d"), "a%20b%2Fc%3Fd");
        assert_eq!(enc("evt_01-x.y"), "evt_01-x.y");
    }
}
