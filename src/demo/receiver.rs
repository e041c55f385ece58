//! Webhook receiver for `pollhook demo` and the tests: owns an HTTP server on 127.0.0.1 that accepts any method on any path, records every request (with its Standard Webhooks signature check), and injects failures and delays on demand.

use std::fmt;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::sync::{broadcast, watch};
use tokio_util::sync::{CancellationToken, DropGuard};

use super::Captured;

/// Largest request body accepted; a larger one is answered 413.
const MAX_BODY: usize = 1024 * 1024;
/// Status recorded for a request whose client went away before it was answered (as nginx does).
pub const CLIENT_CLOSED: u16 = 499;
/// How many [`Received`]s a slow [`Receiver::on_request`] subscriber may fall behind before it lags.
const REQUEST_CAPACITY: usize = 1024;

/// One request the receiver got, and what it answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received {
    /// The request (its body is empty if it was over 1 MiB or could not be read). Its fields and
    /// lookups (`path`, `header(..)`, ...) are also reachable directly on `Received`.
    pub request: Captured,
    /// Standard Webhooks signature check: `None` when the receiver has no secrets or the request
    /// lacks `webhook-id`, `webhook-timestamp` or `webhook-signature`.
    pub signature_valid: Option<bool>,
    /// The status answered; [`CLIENT_CLOSED`] (499) if the client left before the answer.
    pub status: u16,
    /// When the request arrived.
    pub at: DateTime<Utc>,
}

impl std::ops::Deref for Received {
    type Target = Captured;
    fn deref(&self) -> &Captured {
        &self.request
    }
}

impl Received {
    /// The body parsed as JSON, if it is JSON.
    pub fn json(&self) -> Option<Value> {
        serde_json::from_slice(&self.body).ok()
    }

    /// Whether the request was answered 2xx.
    pub fn is_accepted(&self) -> bool {
        (200..300).contains(&self.status)
    }
}

/// Everything that changes, behind one lock that is never held across an `.await`.
struct RecvState {
    received: Vec<Received>,
    fail_remaining: u32,
    fail_status: u16,
    retry_after: Option<u32>,
    delay_remaining: u32,
    delay: Duration,
}

/// What the server task and the handles share.
struct Shared {
    state: Mutex<RecvState>,
    secrets: Vec<Vec<u8>>,
    base_url: String,
    requests: broadcast::Sender<Received>,
    accepted: watch::Sender<usize>,
    cancel: CancellationToken,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, RecvState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn record(&self, rec: Received) {
        let accepted = rec.is_accepted();
        self.lock().received.push(rec.clone());
        if accepted {
            self.accepted.send_modify(|n| *n += 1);
        }
        // No subscriber is fine: nobody is watching.
        let _ = self.requests.send(rec);
    }
}

/// Records a request even if its handler is dropped (the client left during a delay): then with
/// status [`CLIENT_CLOSED`].
struct Pending {
    shared: Arc<Shared>,
    rec: Option<Received>,
}

impl Pending {
    fn finish(mut self, status: u16) {
        if let Some(mut rec) = self.rec.take() {
            rec.status = status;
            self.shared.record(rec);
        }
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        if let Some(mut rec) = self.rec.take() {
            rec.status = CLIENT_CLOSED;
            self.shared.record(rec);
        }
    }
}

/// Handle on a running webhook receiver. Cheap to clone; the server stops on
/// [`Receiver::shutdown`] or when the last handle is dropped.
#[derive(Clone)]
pub struct Receiver {
    shared: Arc<Shared>,
    _stop_on_drop: Arc<DropGuard>,
}

impl fmt::Debug for Receiver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Receiver")
            .field("base_url", &self.shared.base_url)
            .field("secrets", &self.shared.secrets.len())
            .finish_non_exhaustive()
    }
}

impl Receiver {
    /// Binds 127.0.0.1 on a free port and serves in a spawned task. `secrets` (raw key bytes)
    /// are used to check `webhook-signature`; empty means no check.
    pub async fn start(secrets: Vec<Vec<u8>>) -> std::io::Result<Receiver> {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
        let addr: SocketAddr = listener.local_addr()?;
        let cancel = CancellationToken::new();
        let shared = Arc::new(Shared {
            state: Mutex::new(RecvState {
                received: Vec::new(),
                fail_remaining: 0,
                fail_status: 500,
                retry_after: None,
                delay_remaining: 0,
                delay: Duration::ZERO,
            }),
            secrets,
            base_url: format!("http://{addr}"),
            requests: broadcast::channel(REQUEST_CAPACITY).0,
            accepted: watch::channel(0).0,
            cancel: cancel.clone(),
        });
        let app = Router::new()
            .fallback(handle)
            .with_state(Arc::clone(&shared));
        let stop = cancel.clone();
        tokio::spawn(async move {
            let served = axum::serve(listener, app)
                .with_graceful_shutdown(stop.cancelled_owned())
                .await;
            if let Err(e) = served {
                tracing::warn!(error = %e, "receiver server stopped");
            }
        });
        tracing::debug!(%addr, "receiver listening");
        Ok(Receiver {
            shared,
            _stop_on_drop: Arc::new(cancel.drop_guard()),
        })
    }

    /// `http://127.0.0.1:PORT` followed by `path` (which should start with `/`).
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.shared.base_url)
    }

    /// Every request so far, in the order they were answered, failed answers included.
    pub fn received(&self) -> Vec<Received> {
        self.shared.lock().received.clone()
    }

    /// The requests answered 2xx, in the order they were answered.
    pub fn accepted(&self) -> Vec<Received> {
        self.shared
            .lock()
            .received
            .iter()
            .filter(|r| r.is_accepted())
            .cloned()
            .collect()
    }

    /// Waits until at least `n` requests were accepted, or `timeout` passed; returns
    /// [`Receiver::accepted`] then (possibly fewer than `n` after a timeout, or more).
    pub async fn wait_for_accepted(&self, n: usize, timeout: Duration) -> Vec<Received> {
        let mut count = self.shared.accepted.subscribe();
        let _ = tokio::time::timeout(timeout, count.wait_for(|&c| c >= n)).await;
        self.accepted()
    }

    /// Subscribes to the requests recorded from now on. A subscriber more than 1024 requests
    /// behind gets `RecvError::Lagged`.
    pub fn on_request(&self) -> broadcast::Receiver<Received> {
        self.shared.requests.subscribe()
    }

    /// Answers the next `n` requests with HTTP `status` (500 if it is not a valid status).
    pub fn fail_next(&self, n: u32, status: u16) {
        let mut st = self.shared.lock();
        st.fail_remaining = n;
        st.fail_status = status;
    }

    /// Adds `Retry-After: <seconds>` to the failure answers of [`Receiver::fail_next`] (`None`:
    /// no header).
    pub fn set_retry_after(&self, seconds: Option<u32>) {
        self.shared.lock().retry_after = seconds;
    }

    /// Waits `d` before answering each of the next `n` requests (to make senders time out).
    pub fn delay_next(&self, n: u32, d: Duration) {
        let mut st = self.shared.lock();
        st.delay_remaining = n;
        st.delay = d;
    }

    /// Stops the server (a delayed answer is cut short and sent at once).
    pub fn shutdown(&self) {
        self.shared.cancel.cancel();
    }
}

fn text_response(status: StatusCode, body: &'static str) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        body,
    )
        .into_response()
}

/// Answers every request: reads the body (up to 1 MiB), applies the injected delay and failure,
/// records the request and answers 200 `ok` by default.
async fn handle(State(shared): State<Arc<Shared>>, req: Request<Body>) -> Response {
    let at = Utc::now();
    let (parts, body) = req.into_parts();
    let mut rec = Received {
        request: Captured::new(&parts.method, &parts.uri, &parts.headers, Vec::new()),
        signature_valid: None,
        status: 0,
        at,
    };

    let bytes = match axum::body::to_bytes(body, MAX_BODY).await {
        Ok(b) => b,
        Err(e) => {
            tracing::debug!(error = %e, "receiver rejected body");
            let status = StatusCode::PAYLOAD_TOO_LARGE;
            rec.status = status.as_u16();
            shared.record(rec);
            return text_response(status, "payload too large");
        }
    };
    rec.request.body = bytes.to_vec();
    if !shared.secrets.is_empty()
        && let (Some(id), Some(ts), Some(sig)) = (
            rec.header("webhook-id"),
            rec.header("webhook-timestamp"),
            rec.header("webhook-signature"),
        )
    {
        rec.signature_valid = Some(crate::signing::verify(
            &shared.secrets,
            id,
            ts,
            &rec.body,
            sig,
        ));
    }

    let (delay, failure) = {
        let mut st = shared.lock();
        let delay = if st.delay_remaining > 0 {
            st.delay_remaining -= 1;
            Some(st.delay)
        } else {
            None
        };
        let failure = if st.fail_remaining > 0 {
            st.fail_remaining -= 1;
            Some((st.fail_status, st.retry_after))
        } else {
            None
        };
        (delay, failure)
    };

    let pending = Pending {
        shared: Arc::clone(&shared),
        rec: Some(rec),
    };
    if let Some(d) = delay {
        tokio::select! {
            _ = tokio::time::sleep(d) => {}
            _ = shared.cancel.cancelled() => {}
        }
    }

    match failure {
        None => {
            pending.finish(StatusCode::OK.as_u16());
            text_response(StatusCode::OK, "ok")
        }
        Some((status, retry_after)) => {
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            pending.finish(status.as_u16());
            let mut resp = text_response(status, "simulated failure");
            if let Some(secs) = retry_after {
                resp.headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from(secs));
            }
            resp
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    fn client() -> reqwest::Client {
        reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(10))
            .build()
            .expect("client")
    }

    async fn receiver() -> Receiver {
        Receiver::start(Vec::new()).await.expect("start receiver")
    }

    #[tokio::test]
    async fn records_method_path_query_headers_body() {
        let rec = receiver().await;
        let c = client();
        let resp = c
            .post(rec.url("/hooks/bookings?x=1&msg=hello%20world&x=2"))
            .header("X-Custom", "Yes")
            .header("content-type", "application/json")
            .body(r#"{"type":"booking.created","id":1001}"#)
            .send()
            .await
            .expect("send");
        assert_eq!(resp.status().as_u16(), 200);
        assert_eq!(resp.text().await.expect("text"), "ok");

        let resp = c
            .request(reqwest::Method::PUT, rec.url("/other/path"))
            .send()
            .await
            .expect("send");
        assert_eq!(resp.status().as_u16(), 200);

        let got = rec.received();
        assert_eq!(got.len(), 2);
        let r = &got[0];
        assert_eq!(r.method, "POST");
        assert_eq!(r.path, "/hooks/bookings");
        assert_eq!(
            r.query,
            vec![
                ("x".to_string(), "1".to_string()),
                ("msg".to_string(), "hello world".to_string()),
                ("x".to_string(), "2".to_string()),
            ]
        );
        assert_eq!(r.query_param("x"), Some("1"));
        assert_eq!(r.query_param("msg"), Some("hello world"));
        assert_eq!(r.query_param("nope"), None);
        assert_eq!(r.header("x-custom"), Some("Yes"));
        assert_eq!(r.header("X-CUSTOM"), Some("Yes"));
        assert!(r.headers.iter().any(|(k, v)| k == "x-custom" && v == "Yes"));
        assert!(r.headers.iter().all(|(k, _)| *k == k.to_ascii_lowercase()));
        assert_eq!(r.body, br#"{"type":"booking.created","id":1001}"#);
        assert_eq!(
            r.json(),
            Some(serde_json::json!({"type": "booking.created", "id": 1001}))
        );
        assert_eq!(r.status, 200);
        assert_eq!(r.signature_valid, None);
        assert!(r.at <= Utc::now());

        assert_eq!(got[1].method, "PUT");
        assert_eq!(got[1].path, "/other/path");
        assert!(got[1].query.is_empty());
        assert_eq!(got[1].json(), None);
        assert_eq!(rec.accepted().len(), 2);
    }

    #[tokio::test]
    async fn fail_next_then_ok_with_retry_after() {
        let rec = receiver().await;
        let c = client();
        rec.fail_next(2, 503);
        rec.set_retry_after(Some(7));
        for _ in 0..2 {
            let resp = c.post(rec.url("/h")).body("x").send().await.expect("send");
            assert_eq!(resp.status().as_u16(), 503);
            let ra = resp
                .headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok());
            assert_eq!(ra, Some("7"));
        }
        let resp = c.post(rec.url("/h")).body("x").send().await.expect("send");
        assert_eq!(resp.status().as_u16(), 200);
        assert!(resp.headers().get("retry-after").is_none());

        let statuses: Vec<u16> = rec.received().iter().map(|r| r.status).collect();
        assert_eq!(statuses, [503, 503, 200]);
        assert_eq!(rec.accepted().len(), 1);

        rec.set_retry_after(None);
        rec.fail_next(1, 500);
        let resp = c.post(rec.url("/h")).send().await.expect("send");
        assert_eq!(resp.status().as_u16(), 500);
        assert!(resp.headers().get("retry-after").is_none());
    }

    #[tokio::test]
    async fn wait_for_accepted_returns_promptly() {
        let rec = receiver().await;
        let url = rec.url("/late");
        let sender = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            let c = client();
            for _ in 0..2 {
                c.post(&url).body("x").send().await.expect("send");
            }
        });
        let started = Instant::now();
        let got = rec.wait_for_accepted(2, Duration::from_secs(20)).await;
        assert_eq!(got.len(), 2);
        assert!(started.elapsed() < Duration::from_secs(5));
        sender.await.expect("sender task");

        // Already there: no wait at all.
        let started = Instant::now();
        assert_eq!(
            rec.wait_for_accepted(1, Duration::from_secs(20))
                .await
                .len(),
            2
        );
        assert!(started.elapsed() < Duration::from_secs(1));

        // Never coming: what it has at the timeout.
        let started = Instant::now();
        let got = rec.wait_for_accepted(3, Duration::from_millis(100)).await;
        assert_eq!(got.len(), 2);
        assert!(started.elapsed() >= Duration::from_millis(100));
    }

    #[tokio::test]
    async fn signature_valid_only_with_secrets_and_headers() {
        let c = client();
        let plain = receiver().await;
        c.post(plain.url("/h"))
            .header("webhook-id", "msg_1")
            .header("webhook-timestamp", "1700000000")
            .header("webhook-signature", "v1,bm90IGEgc2lnbmF0dXJl")
            .body("{}")
            .send()
            .await
            .expect("send");
        assert_eq!(plain.received()[0].signature_valid, None);

        let checked = Receiver::start(vec![b"0123456789abcdef0123456789abcdef".to_vec()])
            .await
            .expect("start");
        c.post(checked.url("/h"))
            .body("{}")
            .send()
            .await
            .expect("send");
        c.post(checked.url("/h"))
            .header("webhook-id", "msg_1")
            .header("webhook-timestamp", "1700000000")
            .header("webhook-signature", "v1,bm90IGEgc2lnbmF0dXJl")
            .body("{}")
            .send()
            .await
            .expect("send");
        let got = checked.received();
        assert_eq!(got[0].signature_valid, None, "no signature headers");
        assert_eq!(got[1].signature_valid, Some(false), "garbage signature");
        assert_eq!(got[1].status, 200, "the check does not change the answer");
    }

    #[tokio::test]
    async fn delay_next_makes_client_time_out() {
        let rec = receiver().await;
        let mut seen = rec.on_request();
        rec.delay_next(1, Duration::from_secs(3));
        let impatient = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_millis(200))
            .build()
            .expect("client");
        let started = Instant::now();
        let err = impatient.post(rec.url("/slow")).body("x").send().await;
        assert!(err.is_err_and(|e| e.is_timeout()));
        assert!(started.elapsed() < Duration::from_secs(2));

        let first = tokio::time::timeout(Duration::from_secs(10), seen.recv())
            .await
            .expect("recorded in time")
            .expect("recorded");
        assert_eq!(first.path, "/slow");
        assert_eq!(first.status, CLIENT_CLOSED);
        assert!(rec.accepted().is_empty());

        // Only one delayed: the next one is answered at once.
        let resp = impatient.post(rec.url("/fast")).send().await.expect("send");
        assert_eq!(resp.status().as_u16(), 200);

        // A delay shorter than the client's patience is just a slow 200.
        rec.delay_next(1, Duration::from_millis(100));
        let started = Instant::now();
        let resp = client().post(rec.url("/lag")).send().await.expect("send");
        assert_eq!(resp.status().as_u16(), 200);
        assert!(started.elapsed() >= Duration::from_millis(100));
        assert_eq!(rec.accepted().len(), 2);
    }

    #[tokio::test]
    async fn oversized_body_is_refused() {
        let rec = receiver().await;
        let resp = client()
            .post(rec.url("/big"))
            .body(vec![b'a'; MAX_BODY + 1])
            .send()
            .await
            .expect("send");
        assert_eq!(resp.status().as_u16(), 413);
        let resp = client()
            .post(rec.url("/max"))
            .body(vec![b'a'; MAX_BODY])
            .send()
            .await
            .expect("send");
        assert_eq!(resp.status().as_u16(), 200);
        let got = rec.received();
        assert_eq!(got[0].status, 413);
        assert!(got[0].body.is_empty());
        assert_eq!(got[1].body.len(), MAX_BODY);
        assert_eq!(rec.accepted().len(), 1);
    }

    #[tokio::test]
    async fn shutdown_stops_answering() {
        let rec = receiver().await;
        let url = rec.url("/h");
        assert!(client().get(&url).send().await.is_ok());
        rec.shutdown();
        let refused = tokio::time::timeout(Duration::from_secs(5), async {
            loop {
                if client().get(&url).send().await.is_err() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await;
        assert!(refused.is_ok(), "receiver still answering after shutdown");
    }
}
