//! One delivery attempt: over HTTP, render the request, add the Standard Webhooks headers and
//! signature, send it with the endpoint's credentials and keep the start of the answer; over NATS,
//! publish and wait for the acknowledgement (`super::nats`). Either way the row is settled by the
//! retry policy, the latency is recorded, and the result is an [`AttemptOutcome`] for the
//! committer.

use std::sync::Arc;
use std::time::Instant;

use reqwest::header::{HeaderMap, HeaderName, HeaderValue};

use super::{EndpointRuntime, RESPONSE_BODY_CAP, Transport, render};
use crate::clock::Clock;
use crate::http::{self, SendError};
use crate::outbox::{Attempt, Delivery, Event};
use crate::retry::{AttemptResult, settle};
use crate::signing;
use crate::store::DueItem;
use crate::text::Escaped;

/// What one attempt produced: the delivery row after it, the due time the row was fetched under
/// (the store only accepts the update if the row is still due under it), and the event.
#[derive(Debug, Clone)]
pub struct AttemptOutcome {
    /// The row after the attempt.
    pub delivery: Delivery,
    /// The `next_ms` the row had when it was fetched.
    pub fetched_due_ms: i64,
    /// The event it carried.
    pub event: Arc<Event>,
}

/// Makes one attempt of a due item, over the endpoint's transport; both transports end in the
/// same latency metric and the same settle by the retry policy.
pub(super) async fn attempt(ep: &EndpointRuntime, item: DueItem, clock: &Clock) -> AttemptOutcome {
    let DueItem { delivery, event } = item;
    let fetched_due_ms = delivery.next_ms;
    let started = Instant::now();
    let at_ms = clock.now_ms();
    let number = delivery.attempts + 1;
    // Each transport's future is boxed: the task spawned per attempt then holds a pointer
    // rather than the larger of the two state machines, which is copied whenever it moves.
    let (result, status, error, body, latency) = match &ep.transport {
        Transport::Http { client, auth } => {
            Box::pin(http_attempt(
                ep, client, auth, &event, number, at_ms, clock, started,
            ))
            .await
        }
        Transport::Nats(nats) => {
            let p =
                Box::pin(nats.publish(&ep.cfg, &event, number, clock.now(), at_ms / 1000)).await;
            let latency = started.elapsed();
            ep.latency.observe(latency);
            // A server's error text could quote what it was sent: credentials are taken out.
            let error = p.error.map(|e| ep.cfg.redactor.redact(&e));
            (p.result, None, error, p.body, latency)
        }
    };
    let attempt = Attempt {
        at_ms,
        status,
        error,
        latency_ms: latency.as_millis() as u64,
        body,
    };
    AttemptOutcome {
        // Retry times are measured from when the attempt ended.
        delivery: settle(
            delivery,
            &ep.cfg.retry,
            attempt,
            result,
            clock.now_ms(),
            rand::random::<f64>(),
        ),
        fetched_due_ms,
        event,
    }
}

/// What an attempt produced: the result, the status, the error, the kept body and the latency.
type Produced = (
    AttemptResult,
    Option<u16>,
    Option<String>,
    String,
    std::time::Duration,
);

/// One HTTP request: render, sign, send with the endpoint's credentials, keep the start of the
/// answer (the receiver's echo of our credentials taken out). A request that was sent has its
/// latency recorded; one that could not be rendered has none.
#[allow(clippy::too_many_arguments)]
async fn http_attempt(
    ep: &EndpointRuntime,
    client: &reqwest::Client,
    auth: &http::Authorizer,
    event: &Event,
    number: u32,
    at_ms: i64,
    clock: &Clock,
    started: Instant,
) -> Produced {
    let rendered = match render(&ep.cfg, event, number, clock.now()) {
        Ok(r) => r,
        Err(error) => {
            // A template that cannot be rendered is retried on schedule (fix the config and
            // reload) and ends as a dead letter like any other failure.
            tracing::error!(endpoint = %ep.cfg.name, event = %event.id, error = %Escaped(&error), "cannot render the request");
            return (
                AttemptResult::Transport,
                None,
                Some(error),
                String::new(),
                std::time::Duration::ZERO,
            );
        }
    };
    let ts = at_ms / 1000;
    let content_type = rendered.content_type;
    // Shared, so a repeat after a 401 does not copy the body.
    let body = bytes::Bytes::from(rendered.body);
    // The first request takes these headers; a repeat (after a 401) makes them again, with the
    // same timestamp and so the same signature.
    let first = std::sync::Mutex::new(Some(headers(ep, event, ts, &body, content_type)));
    let make = || {
        let taken = first.lock().map(|mut h| h.take()).unwrap_or(None);
        let headers = taken.unwrap_or_else(|| headers(ep, event, ts, &body, content_type));
        client
            .request(rendered.method.clone(), rendered.url.clone())
            .headers(headers)
            .body(body.clone())
    };
    let sent = http::send_authorized(auth, make, http::plain).await;
    // What the receiver answers is kept and listed: its echo of our credentials is not.
    let redactor = &ep.cfg.redactor;
    let (result, status, error, body) = match sent {
        Ok(resp) => {
            let code = resp.status().as_u16();
            let retry_after = http::retry_after(&resp, clock.now());
            // Past the cap by the longest secret, so one that starts before it is seen whole.
            let body = http::read_prefix(resp, RESPONSE_BODY_CAP + redactor.longest()).await;
            (
                AttemptResult::Status { code, retry_after },
                Some(code),
                None,
                redactor.snippet(&body, RESPONSE_BODY_CAP),
            )
        }
        Err(SendError::Auth(e)) => (
            AttemptResult::Transport,
            None,
            Some(redactor.redact(&e.to_string())),
            String::new(),
        ),
        Err(SendError::Transport(e)) => (
            AttemptResult::Transport,
            None,
            Some(redactor.redact(&e)),
            String::new(),
        ),
    };
    let latency = started.elapsed();
    ep.latency.observe(latency);
    (result, status, error, body, latency)
}

/// `webhook-id`.
const WEBHOOK_ID: HeaderName = HeaderName::from_static("webhook-id");
/// `webhook-timestamp`.
const WEBHOOK_TIMESTAMP: HeaderName = HeaderName::from_static("webhook-timestamp");
/// `webhook-signature`.
const WEBHOOK_SIGNATURE: HeaderName = HeaderName::from_static("webhook-signature");

/// The endpoint's static headers (parsed once, when the endpoint was set up), the Standard
/// Webhooks set and the content type.
fn headers(
    ep: &EndpointRuntime,
    event: &Event,
    ts: i64,
    body: &[u8],
    content_type: Option<&'static str>,
) -> HeaderMap {
    let mut headers = ep.static_headers.clone();
    // An owned string becomes the header's bytes without a copy.
    let mut put = |name: HeaderName, value: String| {
        if let Ok(v) = HeaderValue::try_from(value) {
            headers.insert(name, v);
        }
    };
    put(WEBHOOK_ID, event.id.clone());
    put(WEBHOOK_TIMESTAMP, ts.to_string());
    if !ep.cfg.keys.is_empty() {
        put(
            WEBHOOK_SIGNATURE,
            signing::sign(&ep.cfg.keys, &event.id, ts, body),
        );
    }
    if let Some(ct) = content_type {
        headers.insert(reqwest::header::CONTENT_TYPE, HeaderValue::from_static(ct));
    }
    headers
}

/// The endpoint's configured extra headers as a header map, made once per endpoint (a name or
/// value that is not a valid header is left out, as it always was).
pub(super) fn static_headers(cfg: &crate::config::EndpointConfig) -> HeaderMap {
    let mut headers = HeaderMap::new();
    for (k, v) in &cfg.headers {
        if let (Ok(n), Ok(v)) = (
            HeaderName::from_bytes(k.as_bytes()),
            HeaderValue::from_str(v),
        ) {
            headers.insert(n, v);
        }
    }
    headers
}
