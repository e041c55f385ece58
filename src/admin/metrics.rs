//! The Prometheus text exposition at `/metrics`, encoded by the official client library: store
//! gauges and the age of the oldest pending delivery, per-source poll counters and last success,
//! per-endpoint delivery state and outcomes, read from the app at each scrape, plus the
//! histograms and build info the app records as things happen ([`crate::metrics`]).

use std::sync::atomic::{AtomicI64, AtomicU64};

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use prometheus_client::encoding::prometheus_text;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::{Registry, Unit};

use super::internal;
use crate::app::{App, SourceHealth};
use crate::delivery::EndpointReport;

type Labels = Vec<(&'static str, String)>;

fn gauge(value: u64) -> Gauge<u64, AtomicU64> {
    let g = Gauge::<u64, AtomicU64>::default();
    g.set(value);
    g
}

/// A counter family with one series per `(labels, value)`; the values are totals since start.
fn counters(samples: impl IntoIterator<Item = (Labels, u64)>) -> Family<Labels, Counter> {
    let family = Family::<Labels, Counter>::default();
    for (labels, v) in samples {
        family.get_or_create(&labels).inc_by(v);
    }
    family
}

fn gauges<N, A>(samples: impl IntoIterator<Item = (Labels, N)>) -> Family<Labels, Gauge<N, A>>
where
    Gauge<N, A>: Default,
    A: prometheus_client::metrics::gauge::Atomic<N>,
{
    let family = Family::<Labels, Gauge<N, A>>::default();
    for (labels, v) in samples {
        family.get_or_create(&labels).set(v);
    }
    family
}

fn source(name: &str) -> Labels {
    vec![("source", name.to_string())]
}

fn endpoint(name: &str) -> Labels {
    vec![("endpoint", name.to_string())]
}

pub(super) async fn metrics(State(app): State<App>) -> Response {
    let counts = match app.counts().await {
        Ok(c) => c,
        Err(e) => return internal(e),
    };
    let ages = match app.oldest_pending_ages().await {
        Ok(a) => a,
        Err(e) => return internal(e),
    };
    let mut reg = Registry::default();
    reg.register(
        "pollhook_events_stored",
        "Events kept in the store",
        gauge(counts.events),
    );
    reg.register(
        "pollhook_deliveries_pending",
        "Deliveries queued or waiting for a retry",
        gauge(counts.pending),
    );
    reg.register(
        "pollhook_deliveries_due_heads",
        "Per-booking lane heads in the due index",
        gauge(counts.due),
    );
    reg.register(
        "pollhook_dead_letters",
        "Deliveries that exhausted their retries",
        gauge(counts.dead),
    );
    reg.register_with_unit(
        "pollhook_oldest_pending_delivery_age",
        "How long the pending delivery at the front of the endpoint's queue (the lane head due soonest) has waited since its event was detected; 0 with nothing pending",
        Unit::Seconds,
        gauges::<f64, AtomicU64>(
            ages.iter()
                .map(|(name, age)| (endpoint(name), age.as_secs_f64())),
        ),
    );

    // Every configured source is listed from start-up, before its first poll.
    let health = app.source_health();
    let per_source = |f: &dyn Fn(&SourceHealth) -> u64| -> Vec<(Labels, u64)> {
        health.iter().map(|(s, h)| (source(s), f(h))).collect()
    };
    reg.register(
        "pollhook_source_polls",
        "Committed polls since start",
        counters(per_source(&|h| h.successes_total)),
    );
    reg.register(
        "pollhook_source_poll_failures",
        "Failed polls since start",
        counters(per_source(&|h| h.failures_total)),
    );
    reg.register(
        "pollhook_events_detected",
        "Changes detected since start",
        counters(per_source(&|h| h.events_total)),
    );
    reg.register(
        "pollhook_source_last_success_timestamp_seconds",
        "When the source last committed a poll (Unix seconds); 0 while none has succeeded since start",
        gauges::<i64, AtomicI64>(health.iter().map(|(s, h)| {
            (
                source(s),
                h.last_success_ms.map_or(0, |ms| ms.div_euclid(1000)),
            )
        })),
    );

    let report = app.endpoint_report();
    let per_endpoint = |f: &dyn Fn(&EndpointReport) -> i64| -> Vec<(Labels, i64)> {
        report.iter().map(|e| (endpoint(&e.name), f(e))).collect()
    };
    reg.register(
        "pollhook_endpoint_failing",
        "1 while the endpoint has failed continuously for longer than failing_after",
        gauges::<i64, AtomicI64>(per_endpoint(&|e| i64::from(e.failing))),
    );
    reg.register(
        "pollhook_endpoint_disabled",
        "1 while deliveries to the endpoint are suspended (410 Gone or config)",
        gauges::<i64, AtomicI64>(per_endpoint(&|e| {
            i64::from(e.disabled.is_some() || !e.enabled)
        })),
    );
    reg.register(
        "pollhook_deliveries",
        "Delivery outcomes since start (failed counts every failed attempt)",
        counters(report.iter().flat_map(|e| {
            [
                ("delivered", e.delivered_total),
                ("failed", e.failed_attempts_total),
                ("dead", e.dead_total),
            ]
            .map(|(outcome, n)| {
                (
                    vec![
                        ("endpoint", e.name.clone()),
                        ("outcome", outcome.to_string()),
                    ],
                    n,
                )
            })
        })),
    );

    app.metrics().register(&mut reg);

    let mut out = String::new();
    if let Err(e) = prometheus_text::encode(&mut out, &reg) {
        return internal(e);
    }
    ([(header::CONTENT_TYPE, prometheus_text::CONTENT_TYPE)], out).into_response()
}
