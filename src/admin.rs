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

async fn metrics(State(app): State<App>) -> Response {
    let counts = match app.store().run(|s| s.counts()).await {
        Ok(c) => c,
        Err(e) => return internal(e),
    };
    let mut out = String::new();
    let mut gauge = |name: &str, help: &str, v: u64| {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}");
    };
    gauge(
        "pollhook_events_stored",
        "Events kept in the store.",
        counts.events,
    );
    gauge(
        "pollhook_deliveries_pending",
        "Deliveries queued or waiting for a retry.",
        counts.pending,
    );
    gauge(
        "pollhook_deliveries_due_heads",
        "Per-booking lane heads in the due index.",
        counts.due,
    );
    gauge(
        "pollhook_dead_letters",
        "Deliveries that exhausted their retries.",
        counts.dead,
    );
    let health = app.inner.progress.snapshot();
    let _ = writeln!(
        out,
        "# HELP pollhook_source_polls_total Committed polls since start.\n# TYPE pollhook_source_polls_total counter"
    );
    for (s, h) in &health {
        let _ = writeln!(
            out,
            "pollhook_source_polls_total{{source=\"{s}\"}} {}",
            h.successes_total
        );
    }
    let _ = writeln!(
        out,
        "# HELP pollhook_source_poll_failures_total Failed polls since start.\n# TYPE pollhook_source_poll_failures_total counter"
    );
    for (s, h) in &health {
        let _ = writeln!(
            out,
            "pollhook_source_poll_failures_total{{source=\"{s}\"}} {}",
            h.failures_total
        );
    }
    let _ = writeln!(
        out,
        "# HELP pollhook_events_detected_total Changes detected since start.\n# TYPE pollhook_events_detected_total counter"
    );
    for (s, h) in &health {
        let _ = writeln!(
            out,
            "pollhook_events_detected_total{{source=\"{s}\"}} {}",
            h.events_total
        );
    }
    let _ = writeln!(
        out,
        "# HELP pollhook_source_last_success_timestamp_seconds When the source last committed a poll.\n# TYPE pollhook_source_last_success_timestamp_seconds gauge"
    );
    for (s, h) in &health {
        if let Some(ms) = h.last_success_ms {
            let _ = writeln!(
                out,
                "pollhook_source_last_success_timestamp_seconds{{source=\"{s}\"}} {}",
                ms / 1000
            );
        }
    }
    if let Ok(report) = app.inner.dispatcher.endpoint_report().await {
        let _ = writeln!(
            out,
            "# HELP pollhook_endpoint_failing 1 while the endpoint has failed continuously for longer than failing_after.\n# TYPE pollhook_endpoint_failing gauge"
        );
        for e in &report {
            let _ = writeln!(
                out,
                "pollhook_endpoint_failing{{endpoint=\"{}\"}} {}",
                e.name,
                u8::from(e.failing)
            );
        }
        let _ = writeln!(
            out,
            "# HELP pollhook_endpoint_disabled 1 while deliveries to the endpoint are suspended (410 Gone or config).\n# TYPE pollhook_endpoint_disabled gauge"
        );
        for e in &report {
            let _ = writeln!(
                out,
                "pollhook_endpoint_disabled{{endpoint=\"{}\"}} {}",
                e.name,
                u8::from(e.disabled.is_some() || !e.enabled)
            );
        }
        let _ = writeln!(
            out,
            "# HELP pollhook_deliveries_total Delivery outcomes since start (failed counts every failed attempt).\n# TYPE pollhook_deliveries_total counter"
        );
        for e in &report {
            for (outcome, n) in [
                ("delivered", e.delivered_total),
                ("failed", e.failed_attempts_total),
                ("dead", e.dead_total),
            ] {
                let _ = writeln!(
                    out,
                    "pollhook_deliveries_total{{endpoint=\"{}\",outcome=\"{outcome}\"}} {n}",
                    e.name
                );
            }
        }
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
