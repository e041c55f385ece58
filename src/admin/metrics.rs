//! The Prometheus text exposition at `/metrics`: store gauges, per-source poll counters and
//! per-endpoint delivery state and outcomes.

use std::fmt::Write as _;

use axum::extract::State;
use axum::response::{IntoResponse, Response};

use super::internal;
use crate::app::{App, SourceHealth};
use crate::delivery::EndpointReport;

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

pub(super) async fn metrics(State(app): State<App>) -> Response {
    let counts = match app.counts().await {
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

    let health = app.source_health();
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

    {
        let report = app.endpoint_report();
        let per_endpoint = |f: &dyn Fn(&EndpointReport) -> u64| -> Vec<(String, u64)> {
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
