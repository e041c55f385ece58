//! The ingress listener: where booking systems send their thin "something changed" pings.
//! Separate from the admin API because it faces the booking system. Each request is matched to
//! a source's `[ping]` path, authenticated ([`auth`], with failures rate-limited per address by
//! [`limiter`]), its booking ids read ([`ids`]), and recorded durably through the application's
//! intake before 200 is answered. It never waits for the booking API. Bodies are capped, every
//! connection has a read timeout, and connections beyond `max_connections` wait.

pub mod auth;
pub mod ids;
pub mod limiter;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::app::App;
use crate::config::{IngressConfig, PingAuth, PingConfig, PingMethod, TokenPlace};
use crate::text::Escaped;

/// What one accepted route serves.
struct Route {
    source: usize,
    name: String,
    ping: PingConfig,
    /// `auth.in = "path"`: the token is one more segment after the path.
    token_in_path: bool,
}

struct Ingress {
    app: App,
    cfg: IngressConfig,
    routes: Vec<Route>,
    limiter: Mutex<limiter::Limiter>,
}

/// How a request's path matched a route.
#[derive(Debug, PartialEq, Eq)]
struct Matched {
    route: usize,
    /// The segment after the path, for `auth.in = "path"`.
    token: Option<String>,
}

/// The route `path` belongs to: the exact path, or for a token in the path, the path and one
/// more segment. `routes` are (path, token in path) pairs.
fn find<'a>(routes: impl IntoIterator<Item = (&'a str, bool)>, path: &str) -> Option<Matched> {
    for (i, (p, token_in_path)) in routes.into_iter().enumerate() {
        if token_in_path {
            if let Some(rest) = path.strip_prefix(p).and_then(|r| r.strip_prefix('/'))
                && !rest.contains('/')
            {
                let token = percent_encoding::percent_decode_str(rest)
                    .decode_utf8_lossy()
                    .into_owned();
                return Some(Matched {
                    route: i,
                    token: Some(token),
                });
            }
            if path == p {
                return Some(Matched {
                    route: i,
                    token: None,
                });
            }
        } else if path == p {
            return Some(Matched {
                route: i,
                token: None,
            });
        }
    }
    None
}

/// Serves pings on `listener` until `cancel`. Does nothing when `[ingress]` is not configured.
pub async fn serve(listener: TcpListener, app: App, cancel: CancellationToken) {
    let Some(cfg) = app.config().ingress.clone() else {
        return;
    };
    let routes = app
        .config()
        .sources
        .iter()
        .enumerate()
        .filter_map(|(i, s)| {
            s.ping.as_ref().map(|p| Route {
                source: i,
                name: s.name.clone(),
                token_in_path: matches!(
                    &p.auth,
                    PingAuth::Token {
                        place: TokenPlace::Path,
                        ..
                    }
                ),
                ping: p.clone(),
            })
        })
        .collect();
    let ingress = Arc::new(Ingress {
        app,
        cfg,
        routes,
        limiter: Mutex::new(limiter::Limiter::default()),
    });
    let slots = Arc::new(tokio::sync::Semaphore::new(ingress.cfg.max_connections));
    let tracker = TaskTracker::new();
    loop {
        let permit = tokio::select! {
            _ = cancel.cancelled() => break,
            p = slots.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
        };
        let (stream, peer) = tokio::select! {
            _ = cancel.cancelled() => break,
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!(error = %e, "ingress: accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let ingress = ingress.clone();
        let cancel = cancel.clone();
        tracker.spawn(async move {
            let timeout = ingress.cfg.timeout;
            let service = hyper::service::service_fn(move |req| {
                let ingress = ingress.clone();
                async move { Ok::<_, Infallible>(ingress.handle(peer, req).await) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(timeout)
                .keep_alive(true)
                .serve_connection(TokioIo::new(stream), service);
            let mut conn = std::pin::pin!(conn);
            tokio::select! {
                _ = conn.as_mut() => {}
                _ = cancel.cancelled() => {
                    conn.as_mut().graceful_shutdown();
                    let _ = tokio::time::timeout(timeout, conn).await;
                }
            }
            drop(permit);
        });
    }
    tracker.close();
    let _ = tokio::time::timeout(ingress.cfg.timeout, tracker.wait()).await;
}

type Reply = Response<Full<Bytes>>;

fn reply(status: StatusCode, body: serde_json::Value) -> Reply {
    let mut r = Response::new(Full::new(Bytes::from(body.to_string())));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

fn error(status: StatusCode, reason: impl std::fmt::Display) -> Reply {
    reply(status, serde_json::json!({ "error": reason.to_string() }))
}

fn retry_after(mut r: Reply, wait: Duration) -> Reply {
    let secs = wait.as_secs().max(1);
    if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
        r.headers_mut().insert(header::RETRY_AFTER, v);
    }
    r
}

impl Ingress {
    async fn handle(&self, peer: SocketAddr, req: Request<Incoming>) -> Reply {
        match tokio::time::timeout(self.cfg.timeout, self.handle_in_time(peer, req)).await {
            Ok(r) => r,
            Err(_) => error(StatusCode::REQUEST_TIMEOUT, "request not read in time"),
        }
    }

    async fn handle_in_time(&self, peer: SocketAddr, req: Request<Incoming>) -> Reply {
        let routes = self
            .routes
            .iter()
            .map(|r| (r.ping.path.as_str(), r.token_in_path));
        let Some(matched) = find(routes, req.uri().path()) else {
            return error(StatusCode::NOT_FOUND, "no ping path here");
        };
        let route = &self.routes[matched.route];
        let metrics = self.app.metrics();
        let method = match *req.method() {
            Method::GET => Some(PingMethod::Get),
            Method::POST => Some(PingMethod::Post),
            _ => None,
        };
        if !method.is_some_and(|m| route.ping.methods.contains(&m)) {
            let allow: Vec<&str> = route
                .ping
                .methods
                .iter()
                .map(|m| match m {
                    PingMethod::Get => "GET",
                    PingMethod::Post => "POST",
                })
                .collect();
            let mut r = error(
                StatusCode::METHOD_NOT_ALLOWED,
                format!("this path accepts {}", allow.join(", ")),
            );
            if let Ok(v) = HeaderValue::from_str(&allow.join(", ")) {
                r.headers_mut().insert(header::ALLOW, v);
            }
            return r;
        }
        let now = Instant::now();
        let blocked = self
            .limiter
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .blocked(peer.ip(), now);
        if let Some(wait) = blocked {
            metrics.pings(&route.name, "rate_limited", 1);
            return retry_after(
                error(
                    StatusCode::TOO_MANY_REQUESTS,
                    "too many failed authentications from this address",
                ),
                wait,
            );
        }
        let too_large = || {
            error(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("the body is over {} bytes", self.cfg.max_body),
            )
        };
        let declared = req
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > self.cfg.max_body as u64) {
            metrics.pings(&route.name, "rejected_bad_request", 1);
            return too_large();
        }
        let query = req.uri().query().unwrap_or("").to_string();
        let (parts, body) = req.into_parts();
        let body = match Limited::new(body, self.cfg.max_body).collect().await {
            Ok(b) => b.to_bytes(),
            Err(e) if e.is::<http_body_util::LengthLimitError>() => {
                metrics.pings(&route.name, "rejected_bad_request", 1);
                return too_large();
            }
            Err(_) => {
                return error(StatusCode::BAD_REQUEST, "the body could not be read");
            }
        };
        let presented = auth::Presented {
            path_token: matched.token.as_deref(),
            query: &query,
            headers: &parts.headers,
            body: &body,
            now_s: self.app.clock().now_ms().div_euclid(1000),
        };
        if let Err(denied) = auth::check(&route.ping.auth, &presented) {
            self.limiter
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .failed(peer.ip(), now);
            metrics.pings(&route.name, "rejected_auth", 1);
            tracing::warn!(source = %route.name, path = %route.ping.path, peer = %peer.ip(), reason = %denied, "ping refused: authentication failed");
            let mut r = error(StatusCode::UNAUTHORIZED, "authentication failed");
            if matches!(route.ping.auth, PingAuth::Basic { .. }) {
                r.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Basic realm=\"pollhook\""),
                );
            }
            return r;
        }
        let ids = match ids::extract(&route.ping.id, &query, &body) {
            Ok(ids) => ids,
            Err(e) => {
                metrics.pings(&route.name, "rejected_bad_request", 1);
                tracing::warn!(source = %route.name, reason = %Escaped(&e), "ping refused: malformed");
                return error(StatusCode::BAD_REQUEST, e);
            }
        };
        if self.app.ping_backlog(route.source) + ids.len() > self.cfg.backlog {
            metrics.pings(&route.name, "rejected_backlog", 1);
            tracing::warn!(source = %route.name, backlog = self.cfg.backlog, "ping refused: the backlog of pings waiting for lookups is full (polling goes on)");
            return retry_after(
                error(
                    StatusCode::TOO_MANY_REQUESTS,
                    "too many pings waiting for lookups; try again later",
                ),
                Duration::from_secs(5),
            );
        }
        let n = ids.len();
        match self.app.record_pings(route.source, ids).await {
            Ok(()) => {
                for _ in 0..n {
                    metrics.pings(&route.name, "recorded", 1);
                }
                reply(StatusCode::OK, serde_json::json!({ "recorded": n }))
            }
            Err(e) => retry_after(
                error(StatusCode::SERVICE_UNAVAILABLE, e),
                Duration::from_secs(5),
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_match_exactly_or_with_one_token_segment() {
        let routes = [("/ping/beds24", false), ("/ping/pretix", true)];
        assert_eq!(find(routes, "/ping/beds24").map(|m| m.route), Some(0));
        assert!(find(routes, "/ping/beds24/x").is_none());
        assert!(find(routes, "/ping/beds2").is_none());
        let m = find(routes, "/ping/pretix/s%20t").unwrap();
        assert_eq!((m.route, m.token.as_deref()), (1, Some("s t")));
        assert_eq!(find(routes, "/ping/pretix").unwrap().token, None);
        assert!(find(routes, "/ping/pretix/a/b").is_none());
        assert!(find(routes, "/").is_none());
    }
}
