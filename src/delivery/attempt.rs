//! One delivery attempt: over HTTP, render the request, add the Standard Webhooks headers and
//! signature, send it with the endpoint's credentials and keep the start of the answer; over NATS,
//! publish and wait for the acknowledgement (`super::nats`). Either way the row is settled by the
//! retry policy, and the result is an [`AttemptOutcome`] for the committer.

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
/// same settle by the retry policy.
pub(super) async fn attempt(ep: &EndpointRuntime, item: DueItem, clock: &Clock) -> AttemptOutcome {
    let DueItem { delivery, event } = item;
    let fetched_due_ms = delivery.next_ms;
    let started = Instant::now();
    let at_ms = clock.now_ms();
    let number = delivery.attempts + 1;
    let (result, status, error, body) = match &ep.transport {
        Transport::Http { client, auth } => {
            http_attempt(ep, client, auth, &event, number, at_ms, clock).await
        }
        Transport::Nats(nats) => {
            let p = nats
                .publish(&ep.cfg, &event, number, clock.now(), at_ms / 1000)
                .await;
            (p.result, None, p.error, p.body)
        }
    };
    let attempt = Attempt {
        at_ms,
        status,
        error,
        latency_ms: started.elapsed().as_millis() as u64,
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

/// One HTTP request: render, sign, send with the endpoint's credentials, keep the start of the
/// answer. Returns the result, the status, the error and the kept body.
async fn http_attempt(
    ep: &EndpointRuntime,
    client: &reqwest::Client,
    auth: &http::Authorizer,
    event: &Event,
    number: u32,
    at_ms: i64,
    clock: &Clock,
) -> (AttemptResult, Option<u16>, Option<String>, String) {
    let rendered = match render(&ep.cfg, event, number, clock.now()) {
        Ok(r) => r,
        Err(error) => {
            // A template that cannot be rendered is retried on schedule (fix the config and
            // reload) and ends as a dead letter like any other failure.
            tracing::error!(endpoint = %ep.cfg.name, event = %event.id, %error, "cannot render the request");
            return (AttemptResult::Transport, None, Some(error), String::new());
        }
    };
    let headers = headers(ep, event, at_ms / 1000, &rendered);
    // Shared, so a repeat after a 401 does not copy the body.
    let body = bytes::Bytes::from(rendered.body);
    let make = || {
        client
            .request(rendered.method.clone(), rendered.url.clone())
            .headers(headers.clone())
            .body(body.clone())
    };
    match http::send_authorized(auth, make, http::plain).await {
        Ok(resp) => {
            let code = resp.status().as_u16();
            let retry_after = http::retry_after(&resp, clock.now());
            let body = http::read_prefix(resp, RESPONSE_BODY_CAP).await;
            (
                AttemptResult::Status { code, retry_after },
                Some(code),
                None,
                http::snippet(&body, RESPONSE_BODY_CAP),
            )
        }
        Err(SendError::Auth(e)) => (
            AttemptResult::Transport,
            None,
            Some(e.to_string()),
            String::new(),
        ),
        Err(SendError::Transport(e)) => (AttemptResult::Transport, None, Some(e), String::new()),
    }
}

/// The endpoint's static headers, the Standard Webhooks set and the content type.
fn headers(ep: &EndpointRuntime, event: &Event, ts: i64, rendered: &super::Rendered) -> HeaderMap {
    let mut headers = HeaderMap::new();
    for (k, v) in &ep.cfg.headers {
        if let (Ok(n), Ok(v)) = (
            HeaderName::from_bytes(k.as_bytes()),
            HeaderValue::from_str(v),
        ) {
            headers.insert(n, v);
        }
    }
    let mut put = |name: &'static str, value: &str| {
        if let Ok(v) = HeaderValue::from_str(value) {
            headers.insert(name, v);
        }
    };
    put("webhook-id", &event.id);
    put("webhook-timestamp", &ts.to_string());
    if !ep.cfg.keys.is_empty() {
        put(
            "webhook-signature",
            &signing::sign(&ep.cfg.keys, &event.id, ts, &rendered.body),
        );
    }
    if let Some(ct) = rendered.content_type {
        put("content-type", ct);
    }
    headers
}
