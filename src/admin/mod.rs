//! The admin HTTP listener (loopback by default): the status page at `/` ([`page`]), health,
//! readiness, Prometheus metrics ([`metrics`]), events, backfills, deliveries, dead letters, replay, enable and poll-now, every route
//! behind the access rules of [`access`] (Host allow-list, Origin, the `X-Pollhook` header on
//! POSTs, the optional bearer token). It calls `App` methods only. Never exposes a secret: it
//! serves events, deliveries and counts only.

mod access;
mod metrics;
mod page;

use std::net::SocketAddr;

use axum::Json;
use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use tokio_util::sync::CancellationToken;

use crate::app::App;
use crate::outbox::DeliveryState;
use crate::store::ReplaySelector;

pub use access::{CSRF_HEADER, LocalAddr};
pub use page::REFRESH_SECONDS;

/// The admin routes of a listener on `listen`, behind its access rules (`admin.token` and
/// `admin.allowed_hosts` from the app's configuration). Serve it with connect info
/// [`LocalAddr`] so a wildcard listener knows the address each client connected to.
pub fn router(app: App, listen: SocketAddr) -> Router {
    let config = app.config();
    let access = access::Access::new(
        listen,
        config.admin_token.as_ref(),
        &config.admin_allowed_hosts,
    );
    Router::new()
        .route("/", get(page::status_page))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics::metrics))
        .route("/deliveries", get(deliveries))
        .route("/events", get(events))
        .route("/events/{id}/replay", post(replay_event))
        .route("/endpoints", get(endpoints))
        .route("/endpoints/{name}/replay-dead", post(replay_dead))
        .route("/endpoints/{name}/enable", post(enable_endpoint))
        .route("/endpoints/{name}/backfill", post(backfill))
        .route("/backfills", get(backfills))
        .route("/replay", post(replay_range))
        .route("/sources/{name}/poll", post(poll_source))
        .with_state(app)
        .layer(axum::middleware::from_fn_with_state(access, access::guard))
}

/// Serves the admin API until `cancel`.
pub async fn serve(listener: tokio::net::TcpListener, app: App, cancel: CancellationToken) {
    let listen = match listener.local_addr() {
        Ok(a) => a,
        Err(e) => {
            tracing::error!(error = %e, "admin listener has no local address; not serving");
            return;
        }
    };
    let service = router(app, listen).into_make_service_with_connect_info::<LocalAddr>();
    let result = axum::serve(listener, service)
        .with_graceful_shutdown(async move { cancel.cancelled().await })
        .await;
    if let Err(e) = result {
        tracing::error!(error = %e, "admin listener failed");
    }
}

pub(super) fn internal(e: impl std::fmt::Display) -> Response {
    (StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")).into_response()
}

/// Ready: the state file is not known to be unusable (corrupt, or refused after an I/O error),
/// the store answers, and no source has failed its last [`NOT_READY_AFTER`] polls.
async fn readyz(State(app): State<App>) -> Response {
    if let Some(e) = app.state_file_fault() {
        return (StatusCode::SERVICE_UNAVAILABLE, format!("not ready: {e}\n")).into_response();
    }
    let sources = app.source_health();
    let counts = match app.counts().await {
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
    match app.recent_events(limit).await {
        Ok(list) => Json(list).into_response(),
        Err(e) => internal(e),
    }
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
    match app.deliveries(state, limit).await {
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
    match app.replay(selector).await {
        Ok(n) => Json(serde_json::json!({ "replayed": n })).into_response(),
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
    Json(app.endpoint_report()).into_response()
}

async fn enable_endpoint(State(app): State<App>, Path(name): Path<String>) -> Response {
    match app.enable_endpoint(&name).await {
        Ok(true) => (StatusCode::OK, "enabled\n").into_response(),
        Ok(false) => (
            StatusCode::NOT_FOUND,
            format!("no endpoint named `{name}`\n"),
        )
            .into_response(),
        Err(e) => internal(e),
    }
}

#[derive(Deserialize)]
struct BackfillQuery {
    source: Option<String>,
}

async fn backfill(
    State(app): State<App>,
    Path(endpoint): Path<String>,
    Query(q): Query<BackfillQuery>,
) -> Response {
    use crate::app::BackfillError;
    match app.backfill(&endpoint, q.source.as_deref()).await {
        Ok(b) => (StatusCode::ACCEPTED, Json(b)).into_response(),
        Err(e @ (BackfillError::UnknownEndpoint { .. } | BackfillError::UnknownSource { .. })) => {
            (StatusCode::NOT_FOUND, format!("{e}\n")).into_response()
        }
        Err(e @ BackfillError::Running { .. }) => {
            (StatusCode::CONFLICT, format!("{e}\n")).into_response()
        }
        Err(BackfillError::Store(e)) => internal(e),
    }
}

async fn backfills(State(app): State<App>) -> Response {
    match app.backfills().await {
        Ok(list) => Json(list).into_response(),
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
