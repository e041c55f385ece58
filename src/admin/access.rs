//! Who may use the admin API, checked before every route: the `Host` allow-list (against DNS
//! rebinding), the `Origin` check and the [`CSRF_HEADER`] every mutating request must carry
//! (against cross-site requests from a browser), and the optional bearer token (`admin.token`),
//! compared in constant time.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::extract::connect_info::{ConnectInfo, Connected};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::serve::IncomingStream;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

use crate::config::Secret;

/// The header every request other than GET and HEAD must carry (any value; send `1`). A browser
/// sends a custom header cross-origin only after a CORS preflight, which this API never grants,
/// so a page on another site cannot make such a request (a plain `<form method=POST>` cannot set
/// headers at all).
pub const CSRF_HEADER: &str = "x-pollhook";

/// The one route open without the token: liveness probes carry no credentials.
const OPEN_PATH: &str = "/healthz";

/// Names that always reach this listener when sent with its port (or with no port).
const LOOPBACK_NAMES: [&str; 3] = ["localhost", "127.0.0.1", "[::1]"];

type HmacSha256 = Hmac<Sha256>;

/// The local address of the connection a request came in on: with a wildcard listen address
/// (`0.0.0.0`, `[::]`) it is the address the client actually connected to, which a client may
/// name in `Host` (an IP literal cannot be rebound to another site).
#[derive(Debug, Clone, Copy)]
pub struct LocalAddr(Option<SocketAddr>);

impl Connected<IncomingStream<'_, tokio::net::TcpListener>> for LocalAddr {
    fn connect_info(stream: IncomingStream<'_, tokio::net::TcpListener>) -> Self {
        LocalAddr(stream.io().local_addr().ok())
    }
}

/// The access rules of one listener. Cheap to clone.
#[derive(Clone)]
pub(super) struct Access {
    inner: Arc<Inner>,
}

struct Inner {
    /// The listener's own address (its real port, also when it was bound to port 0).
    listen: SocketAddr,
    /// `admin.allowed_hosts`, lowercase.
    extra: Vec<String>,
    token: Option<TokenCheck>,
}

/// The token, kept as an HMAC tag under a key drawn at start: comparing two tags of the same
/// length in constant time (`verify_slice`) tells nothing about the token, not even its length.
struct TokenCheck {
    key: [u8; 32],
    tag: Vec<u8>,
}

impl TokenCheck {
    fn new(token: &Secret) -> TokenCheck {
        let key: [u8; 32] = rand::random();
        let tag = Self::mac(&key, token.expose().as_bytes())
            .finalize()
            .into_bytes();
        TokenCheck {
            key,
            tag: tag.to_vec(),
        }
    }

    fn mac(key: &[u8], data: &[u8]) -> HmacSha256 {
        let mut mac = match HmacSha256::new_from_slice(key) {
            Ok(m) => m,
            Err(_) => unreachable!("HMAC takes keys of any length"),
        };
        mac.update(data);
        mac
    }

    fn matches(&self, given: &[u8]) -> bool {
        Self::mac(&self.key, given).verify_slice(&self.tag).is_ok()
    }
}

/// Why a request was refused.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Refusal {
    status: StatusCode,
    message: String,
}

impl Refusal {
    fn forbidden(message: impl Into<String>) -> Refusal {
        Refusal {
            status: StatusCode::FORBIDDEN,
            message: message.into(),
        }
    }
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        let body = format!("{}\n", self.message);
        if self.status == StatusCode::UNAUTHORIZED {
            (
                self.status,
                [(header::WWW_AUTHENTICATE, "Bearer realm=\"pollhook admin\"")],
                body,
            )
                .into_response()
        } else {
            (self.status, body).into_response()
        }
    }
}

impl Access {
    /// The rules for a listener on `listen`.
    pub(super) fn new(listen: SocketAddr, token: Option<&Secret>, extra: &[String]) -> Access {
        Access {
            inner: Arc::new(Inner {
                listen,
                extra: extra.iter().map(|h| h.to_ascii_lowercase()).collect(),
                token: token.map(TokenCheck::new),
            }),
        }
    }

    /// Whether a `Host` value names this listener: its address, the connection's local address,
    /// `localhost`, `127.0.0.1` or `[::1]` (each with this listener's port or none), or an
    /// `admin.allowed_hosts` entry exactly.
    fn host_allowed(&self, host: &str, local: Option<SocketAddr>) -> bool {
        let host = host.to_ascii_lowercase();
        if self.inner.extra.contains(&host) {
            return true;
        }
        let Some((name, port)) = split_host(&host) else {
            return false;
        };
        if port.is_some_and(|p| p != self.inner.listen.port()) {
            return false;
        }
        self.names_me(name, local)
    }

    /// Whether an `Origin` value is a page of this listener itself: same host rules as
    /// [`Access::host_allowed`], but the port must be this listener's (a page on another port
    /// of localhost is another site).
    fn origin_allowed(&self, origin: &str, local: Option<SocketAddr>) -> bool {
        let Ok(url) = url::Url::parse(origin) else {
            return false; // includes "null" (sandboxed frames, file: pages)
        };
        if !matches!(url.scheme(), "http" | "https") {
            return false;
        }
        let Some(name) = url.host_str().map(str::to_ascii_lowercase) else {
            return false;
        };
        let authority = match url.port() {
            Some(p) => format!("{name}:{p}"),
            None => name.clone(),
        };
        if self.inner.extra.contains(&authority) {
            return true;
        }
        url.port_or_known_default() == Some(self.inner.listen.port()) && self.names_me(&name, local)
    }

    /// Whether a host name without its port is a loopback name or an IP address of this
    /// listener (its listen address unless that is a wildcard, or the connection's local one).
    fn names_me(&self, name: &str, local: Option<SocketAddr>) -> bool {
        if LOOPBACK_NAMES.contains(&name) {
            return true;
        }
        let literal = name.trim_start_matches('[').trim_end_matches(']');
        let Ok(ip) = literal.parse::<IpAddr>() else {
            return false;
        };
        let ip = ip.to_canonical();
        let listen = self.inner.listen.ip().to_canonical();
        (!listen.is_unspecified() && ip == listen)
            || local.is_some_and(|l| l.ip().to_canonical() == ip)
    }

    /// Checks one request: Host, Origin, the token (all routes but `/healthz`), then the
    /// custom header on anything but GET and HEAD.
    pub(super) fn check(
        &self,
        method: &Method,
        uri: &Uri,
        headers: &HeaderMap,
        local: Option<SocketAddr>,
    ) -> Result<(), Refusal> {
        // An absolute-form request target carries the host itself and takes precedence.
        let host = match uri.authority() {
            Some(a) => Some(a.as_str().to_string()),
            None => match headers.get(header::HOST).map(|v| v.to_str()) {
                Some(Ok(h)) => Some(h.to_string()),
                Some(Err(_)) => return Err(Refusal::forbidden("the Host header is not ASCII")),
                None => None,
            },
        };
        // Every HTTP/1.1 client (browsers and command-line clients alike) sends Host; only a bare HTTP/1.0
        // request lacks it, and nothing is gained by guessing which site such a client meant.
        let Some(host) = host else {
            return Err(Refusal::forbidden(
                "a Host header is required: the admin API answers only to requests addressed to its listen address, localhost, 127.0.0.1 or [::1]",
            ));
        };
        if !self.host_allowed(&host, local) {
            return Err(Refusal::forbidden(format!(
                "Host `{}` is not accepted: the admin API answers only to requests addressed to its listen address ({}), localhost, 127.0.0.1 or [::1] (and admin.allowed_hosts); this keeps web pages from reaching it through DNS rebinding",
                printable(&host),
                self.inner.listen
            )));
        }
        if let Some(origin) = headers.get(header::ORIGIN) {
            let ok = origin.to_str().is_ok_and(|o| self.origin_allowed(o, local));
            if !ok {
                return Err(Refusal::forbidden(
                    "cross-origin requests are refused: the Origin is not this admin listener",
                ));
            }
        }
        if let Some(token) = &self.inner.token
            && uri.path() != OPEN_PATH
        {
            let given = headers
                .get(header::AUTHORIZATION)
                .and_then(|v| bearer(v.as_bytes()));
            if !given.is_some_and(|g| token.matches(g)) {
                return Err(Refusal {
                    status: StatusCode::UNAUTHORIZED,
                    message: "this admin API needs `Authorization: Bearer <admin.token>`".into(),
                });
            }
        }
        if !matches!(*method, Method::GET | Method::HEAD) && !headers.contains_key(CSRF_HEADER) {
            return Err(Refusal::forbidden(format!(
                "{method} requests must carry the header `X-Pollhook: 1` (a browser cannot send it from another site, which is what keeps web pages from replaying deliveries); `pollhook replay`, `enable` and friends send it"
            )));
        }
        Ok(())
    }
}

/// The middleware that applies [`Access::check`] to every request.
pub(super) async fn guard(State(access): State<Access>, req: Request, next: Next) -> Response {
    let local = req
        .extensions()
        .get::<ConnectInfo<LocalAddr>>()
        .and_then(|c| (c.0).0);
    match access.check(req.method(), req.uri(), req.headers(), local) {
        Ok(()) => next.run(req).await,
        Err(refusal) => refusal.into_response(),
    }
}

/// `name` and `port` of a Host value (`name`, `name:port`, `[v6]`, `[v6]:port`).
fn split_host(host: &str) -> Option<(&str, Option<u16>)> {
    let (name, rest) = if host.starts_with('[') {
        let end = host.find(']')? + 1;
        host.split_at(end)
    } else {
        match host.find(':') {
            Some(i) => host.split_at(i),
            None => (host, ""),
        }
    };
    if name.is_empty() {
        return None;
    }
    match rest {
        "" => Some((name, None)),
        r => {
            let port = r.strip_prefix(':')?.parse::<u16>().ok()?;
            Some((name, Some(port)))
        }
    }
}

/// The credentials of an `Authorization: Bearer ...` value (the scheme is case-insensitive).
fn bearer(value: &[u8]) -> Option<&[u8]> {
    let scheme = value.get(..7)?;
    if !scheme.eq_ignore_ascii_case(b"bearer ") {
        return None;
    }
    let token = value[7..].trim_ascii();
    (!token.is_empty()).then_some(token)
}

/// `s` cut short and without control characters, for a message.
fn printable(s: &str) -> String {
    s.chars().filter(|c| !c.is_control()).take(100).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn access(listen: &str, token: Option<&str>, extra: &[&str]) -> Access {
        let secret = token.map(Secret::new);
        let extra: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        Access::new(listen.parse().unwrap(), secret.as_ref(), &extra)
    }

    fn request(
        a: &Access,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        local: Option<&str>,
    ) -> Result<(), StatusCode> {
        let mut map = HeaderMap::new();
        for (k, v) in headers {
            map.insert(
                axum::http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        let uri: Uri = path.parse().unwrap();
        a.check(&method, &uri, &map, local.map(|l| l.parse().unwrap()))
            .map_err(|r| r.status)
    }

    #[test]
    fn hosts_that_name_the_listener() {
        let a = access("127.0.0.1:9477", None, &["pollhook.internal"]);
        for ok in [
            "127.0.0.1:9477",
            "127.0.0.1",
            "localhost:9477",
            "LOCALHOST",
            "[::1]:9477",
            "[::1]",
            "pollhook.internal",
        ] {
            assert!(a.host_allowed(ok, None), "{ok}");
        }
        for bad in [
            "evil.example",
            "evil.example:9477",
            "localhost:9478",
            "127.0.0.2:9477",
            "pollhook.internal:9477",
            "localhost.",
            "[::1",
            ":9477",
            "",
        ] {
            assert!(!a.host_allowed(bad, None), "{bad}");
        }
        // A wildcard listener accepts the address the client connected to, not any address.
        let any = access("0.0.0.0:9477", None, &[]);
        let local = Some("10.0.0.5:9477".parse().unwrap());
        assert!(any.host_allowed("10.0.0.5:9477", local));
        assert!(!any.host_allowed("10.0.0.6:9477", local));
        assert!(!any.host_allowed("0.0.0.0:9477", local));
        let mapped = access("[::ffff:10.0.0.5]:9477", None, &[]);
        assert!(mapped.host_allowed("10.0.0.5:9477", None));
    }

    #[test]
    fn origins_must_be_the_listener_itself() {
        let a = access("127.0.0.1:9477", None, &["pollhook.example.org"]);
        for ok in [
            "http://127.0.0.1:9477",
            "http://localhost:9477",
            "http://[::1]:9477",
            "https://pollhook.example.org",
        ] {
            assert!(a.origin_allowed(ok, None), "{ok}");
        }
        for bad in [
            "null",
            "http://evil.example",
            "http://localhost:3000",
            "http://localhost",
            "ftp://localhost:9477",
            "http://pollhook.example.org:8080",
        ] {
            assert!(!a.origin_allowed(bad, None), "{bad}");
        }
    }

    #[test]
    fn posts_need_the_custom_header_and_the_token_guards_all_but_healthz() {
        let host = ("host", "127.0.0.1:9477");
        let a = access("127.0.0.1:9477", None, &[]);
        assert_eq!(request(&a, Method::GET, "/events", &[host], None), Ok(()));
        assert_eq!(
            request(&a, Method::POST, "/replay", &[host], None),
            Err(StatusCode::FORBIDDEN)
        );
        assert_eq!(
            request(
                &a,
                Method::POST,
                "/replay",
                &[host, ("x-pollhook", "1")],
                None
            ),
            Ok(())
        );
        assert_eq!(
            request(&a, Method::GET, "/events", &[], None),
            Err(StatusCode::FORBIDDEN),
            "no Host"
        );
        assert_eq!(
            request(&a, Method::GET, "http://evil.example/events", &[host], None),
            Err(StatusCode::FORBIDDEN),
            "the absolute-form target wins over Host"
        );

        let t = access("127.0.0.1:9477", Some("s3cret-s3cret-s3cret"), &[]);
        assert_eq!(
            request(&t, Method::GET, "/events", &[host], None),
            Err(StatusCode::UNAUTHORIZED)
        );
        assert_eq!(
            request(
                &t,
                Method::GET,
                "/events",
                &[host, ("authorization", "Bearer wrong")],
                None
            ),
            Err(StatusCode::UNAUTHORIZED)
        );
        assert_eq!(
            request(
                &t,
                Method::GET,
                "/events",
                &[host, ("authorization", "bearer s3cret-s3cret-s3cret")],
                None
            ),
            Ok(())
        );
        assert_eq!(request(&t, Method::GET, "/healthz", &[host], None), Ok(()));
        assert_eq!(
            request(
                &t,
                Method::GET,
                "/healthz",
                &[("host", "evil.example")],
                None
            ),
            Err(StatusCode::FORBIDDEN),
            "the Host rule holds on /healthz too"
        );
    }

    #[test]
    fn bearer_values() {
        assert_eq!(bearer(b"Bearer abc"), Some(&b"abc"[..]));
        assert_eq!(bearer(b"BEARER  abc "), Some(&b"abc"[..]));
        assert_eq!(bearer(b"Basic abc"), None);
        assert_eq!(bearer(b"Bearer "), None);
        assert_eq!(bearer(b"Bear"), None);
    }
}
