//! The admin HTTP listener (loopback by default): health, readiness, Prometheus metrics, dead
//! letters, replay and poll-now; plus the systemd watchdog, which only pings while the store
//! answers. Never exposes a secret: it serves events, deliveries and counts only.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::app::App;
use crate::outbox::DeliveryState;
use crate::store::ReplaySelector;

/// Per-source poll health, shared by the schedule loops and the admin listener.
#[derive(Debug, Default, Clone)]
pub struct Progress {
    inner: Arc<Mutex<BTreeMap<String, SourceHealth>>>,
}

/// What the admin API reports about a source.
#[derive(Debug, Default, Clone, Serialize)]
pub struct SourceHealth {
    /// Last committed poll (ms since epoch), if any since start.
    pub last_success_ms: Option<i64>,
    /// Failed polls in a row.
    pub consecutive_failures: u64,
    /// Failed polls since start.
    pub failures_total: u64,
    /// Successful polls since start.
    pub successes_total: u64,
    /// Events detected since start.
    pub events_total: u64,
}

impl Progress {
    pub(crate) fn polled(&self, source: &str, at_ms: i64, events: usize) {
        let mut m = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let h = m.entry(source.to_string()).or_default();
        h.events_total += events as u64;
        h.last_success_ms = Some(at_ms);
        h.consecutive_failures = 0;
        h.successes_total += 1;
    }

    pub(crate) fn poll_failed(&self, source: &str) {
        let mut m = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let h = m.entry(source.to_string()).or_default();
        h.consecutive_failures += 1;
        h.failures_total += 1;
    }

    /// A copy of every source's health.
    pub fn snapshot(&self) -> BTreeMap<String, SourceHealth> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// The admin routes.
pub fn router(app: App) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/deliveries", get(deliveries))
        .route("/events", get(events))
        .route("/events/{id}/replay", post(replay_event))
        .route("/endpoints", get(endpoints))
        .route("/endpoints/{name}/replay-dead", post(replay_dead))
        .route("/endpoints/{name}/enable", post(enable_endpoint))
        .route("/replay", post(replay_range))
        .route("/sources/{name}/poll", post(poll_source))
        .with_state(app)
}

/// Serves the admin API until `cancel`.
pub async fn serve(listener: tokio::net::TcpListener, app: App, cancel: CancellationToken) {
    let result = axum::serve(listener, router(app))
        .with_graceful_shutdown(async move { cancel.cancelled().await })
        .await;
    if let Err(e) = result {
        tracing::error!(error = %e, "admin listener failed");
    }
}

fn internal(e: impl std::fmt::Display) -> Response {
    (StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")).into_response()
}

/// Ready: the store answers and no source has failed its last [`NOT_READY_AFTER`] polls.
async fn readyz(State(app): State<App>) -> Response {
    let sources = app.inner.progress.snapshot();
    let counts = match app.store().run(|s| s.counts()).await {
        Ok(c) => c,
        Err(e) => {
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                format!("store not answering: {e}\n"),
            )
                .into_response();
        }
    };
    let failing: Vec<&String> = sources
        .iter()
        .filter(|(_, h)| h.consecutive_failures >= NOT_READY_AFTER)
        .map(|(n, _)| n)
        .collect();
    let status = if failing.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(serde_json::json!({ "ready": failing.is_empty(), "failing_sources": failing, "sources": sources, "store": counts }))).into_response()
}

/// Consecutive failed polls of one source after which `/readyz` answers 503.
pub const NOT_READY_AFTER: u64 = 3;

#[derive(Deserialize)]
struct EventsQuery {
    limit: Option<usize>,
}

async fn events(State(app): State<App>, Query(q): Query<EventsQuery>) -> Response {
    let limit = q.limit.unwrap_or(100).min(10_000);
    match app.store().run(move |s| s.recent_events(limit)).await {
        Ok(list) => Json(list).into_response(),
        Err(e) => internal(e),
    }
}

/// Writes one metric family in the Prometheus text format: its HELP and TYPE lines, then one
/// line per sample (`labels` already formatted, e.g. `source="hotel"`; source and endpoint names
/// are restricted by the config to characters that need no escaping).
fn family(
    out: &mut String,
    name: &str,
    kind: &str,
    help: &str,
    samples: impl IntoIterator<Item = (String, u64)>,
) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
    for (labels, v) in samples {
        if labels.is_empty() {
            let _ = writeln!(out, "{name} {v}");
        } else {
            let _ = writeln!(out, "{name}{{{labels}}} {v}");
        }
    }
}

async fn metrics(State(app): State<App>) -> Response {
    let counts = match app.store().run(|s| s.counts()).await {
        Ok(c) => c,
        Err(e) => return internal(e),
    };
    let mut out = String::new();
    let o = &mut out;
    let one = |v: u64| [(String::new(), v)];
    family(
        o,
        "pollhook_events_stored",
        "gauge",
        "Events kept in the store.",
        one(counts.events),
    );
    family(
        o,
        "pollhook_deliveries_pending",
        "gauge",
        "Deliveries queued or waiting for a retry.",
        one(counts.pending),
    );
    family(
        o,
        "pollhook_deliveries_due_heads",
        "gauge",
        "Per-booking lane heads in the due index.",
        one(counts.due),
    );
    family(
        o,
        "pollhook_dead_letters",
        "gauge",
        "Deliveries that exhausted their retries.",
        one(counts.dead),
    );

    let health = app.inner.progress.snapshot();
    let per_source = |f: &dyn Fn(&SourceHealth) -> Option<u64>| -> Vec<(String, u64)> {
        health
            .iter()
            .filter_map(|(s, h)| f(h).map(|v| (format!("source=\"{s}\""), v)))
            .collect()
    };
    family(
        o,
        "pollhook_source_polls_total",
        "counter",
        "Committed polls since start.",
        per_source(&|h| Some(h.successes_total)),
    );
    family(
        o,
        "pollhook_source_poll_failures_total",
        "counter",
        "Failed polls since start.",
        per_source(&|h| Some(h.failures_total)),
    );
    family(
        o,
        "pollhook_events_detected_total",
        "counter",
        "Changes detected since start.",
        per_source(&|h| Some(h.events_total)),
    );
    family(
        o,
        "pollhook_source_last_success_timestamp_seconds",
        "gauge",
        "When the source last committed a poll.",
        per_source(&|h| h.last_success_ms.map(|ms| (ms / 1000) as u64)),
    );

    if let Ok(report) = app.inner.dispatcher.endpoint_report().await {
        let per_endpoint =
            |f: &dyn Fn(&crate::delivery::EndpointReport) -> u64| -> Vec<(String, u64)> {
                report
                    .iter()
                    .map(|e| (format!("endpoint=\"{}\"", e.name), f(e)))
                    .collect()
            };
        family(
            o,
            "pollhook_endpoint_failing",
            "gauge",
            "1 while the endpoint has failed continuously for longer than failing_after.",
            per_endpoint(&|e| u64::from(e.failing)),
        );
        family(
            o,
            "pollhook_endpoint_disabled",
            "gauge",
            "1 while deliveries to the endpoint are suspended (410 Gone or config).",
            per_endpoint(&|e| u64::from(e.disabled.is_some() || !e.enabled)),
        );
        let outcomes = report.iter().flat_map(|e| {
            [
                ("delivered", e.delivered_total),
                ("failed", e.failed_attempts_total),
                ("dead", e.dead_total),
            ]
            .map(|(outcome, n)| (format!("endpoint=\"{}\",outcome=\"{outcome}\"", e.name), n))
        });
        family(
            o,
            "pollhook_deliveries_total",
            "counter",
            "Delivery outcomes since start (failed counts every failed attempt).",
            outcomes,
        );
    }
    ([("content-type", "text/plain; version=0.0.4")], out).into_response()
}

#[derive(Deserialize)]
struct DeliveriesQuery {
    state: Option<String>,
    limit: Option<usize>,
}

async fn deliveries(State(app): State<App>, Query(q): Query<DeliveriesQuery>) -> Response {
    let state = match q.state.as_deref().unwrap_or("dead") {
        "dead" => DeliveryState::Dead,
        "pending" => DeliveryState::Pending,
        "delivered" => DeliveryState::Delivered,
        other => {
            return (
                StatusCode::BAD_REQUEST,
                format!("state `{other}`: use dead, pending or delivered\n"),
            )
                .into_response();
        }
    };
    let limit = q.limit.unwrap_or(100).min(10_000);
    match app
        .store()
        .run(move |s| s.deliveries_in(state, limit))
        .await
    {
        Ok(list) => Json(list).into_response(),
        Err(e) => internal(e),
    }
}

#[derive(Deserialize)]
struct EndpointFilter {
    endpoint: Option<String>,
}

#[derive(Deserialize)]
struct RangeQuery {
    from: String,
    to: String,
    endpoint: Option<String>,
}

async fn do_replay(app: &App, selector: ReplaySelector) -> Response {
    let now = chrono::Utc::now().timestamp_millis();
    match app.store().run(move |s| s.replay(&selector, now)).await {
        Ok(n) => {
            if n > 0 {
                app.inner.wake.notify_one();
            }
            Json(serde_json::json!({ "replayed": n })).into_response()
        }
        Err(e) => internal(e),
    }
}

async fn replay_event(
    State(app): State<App>,
    Path(id): Path<String>,
    Query(q): Query<EndpointFilter>,
) -> Response {
    do_replay(
        &app,
        ReplaySelector::Event {
            id,
            endpoint: q.endpoint,
        },
    )
    .await
}

async fn replay_dead(State(app): State<App>, Path(endpoint): Path<String>) -> Response {
    do_replay(&app, ReplaySelector::DeadOf { endpoint }).await
}

fn parse_time(s: &str) -> Option<i64> {
    chrono::DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|t| t.timestamp_millis())
}

async fn replay_range(State(app): State<App>, Query(q): Query<RangeQuery>) -> Response {
    let (Some(from_ms), Some(to_ms)) = (parse_time(&q.from), parse_time(&q.to)) else {
        return (
            StatusCode::BAD_REQUEST,
            "from and to must be RFC 3339 times, e.g. 2026-11-23T10:00:00Z\n",
        )
            .into_response();
    };
    do_replay(
        &app,
        ReplaySelector::Range {
            from_ms,
            to_ms,
            endpoint: q.endpoint,
        },
    )
    .await
}

async fn endpoints(State(app): State<App>) -> Response {
    match app.inner.dispatcher.endpoint_report().await {
        Ok(r) => Json(r).into_response(),
        Err(e) => internal(e),
    }
}

async fn enable_endpoint(State(app): State<App>, Path(name): Path<String>) -> Response {
    match app.inner.dispatcher.enable(&name).await {
        Ok(true) => {
            app.inner.wake.notify_one();
            (StatusCode::OK, "enabled\n").into_response()
        }
        Ok(false) => (
            StatusCode::NOT_FOUND,
            format!("no endpoint named `{name}`\n"),
        )
            .into_response(),
        Err(e) => internal(e),
    }
}

async fn poll_source(State(app): State<App>, Path(name): Path<String>) -> Response {
    match app.poll_now(&name).await {
        Ok(r) => Json(serde_json::json!({
            "source": r.source, "pages": r.pages, "bookings": r.bookings,
            "baseline": r.baseline, "events": r.events.len(), "held_back": r.held_back,
        }))
        .into_response(),
        Err(crate::poll::PollError::UnknownSource(s)) => {
            (StatusCode::NOT_FOUND, format!("no source named `{s}`\n")).into_response()
        }
        Err(e) => (StatusCode::BAD_GATEWAY, format!("{e}\n")).into_response(),
    }
}

/// Pings the systemd watchdog (when `WatchdogSec=` is set) at half its interval, but only while
/// the store answers a read: a wedged process stops pinging and systemd restarts it.
pub async fn watchdog(app: App, cancel: CancellationToken) {
    let Some(interval) = sd_notify::watchdog_enabled() else {
        return;
    };
    let mut tick = tokio::time::interval(interval / 2);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tick.tick() => {}
        }
        let healthy = tokio::time::timeout(Duration::from_secs(5), app.store().run(|s| s.counts()))
            .await
            .is_ok_and(|r| r.is_ok());
        if healthy {
            let _ = sd_notify::notify(&[sd_notify::NotifyState::Watchdog]);
        } else {
            tracing::error!("store not answering; withholding the watchdog ping");
        }
    }
}
