//! Who may use the admin API: cross-site POSTs (no `X-Pollhook` header, a foreign `Origin`)
//! and DNS rebinding (a foreign `Host`) are refused with 403 on every route, and with
//! `admin.token` set every route but `/healthz` needs the bearer token (401 otherwise).

use tokio_util::sync::CancellationToken;

use crate::helpers::*;

/// Every POST route, with the arguments it needs.
const POSTS: [&str; 5] = [
    "/replay?from=2000-01-01T00:00:00Z&to=2100-01-01T00:00:00Z",
    "/events/evt_nope/replay",
    "/endpoints/crm/replay-dead",
    "/endpoints/crm/enable",
    "/sources/hotel/poll",
];

/// A test app with one delivered event, and its admin API.
async fn delivered_once(opts: Options) -> (TestApp, std::net::SocketAddr, CancellationToken) {
    let t = spawn_app(opts).await;
    t.poll().await;
    t.sim.create_booking();
    assert_eq!(t.poll().await, 1);
    t.deliver().await;
    assert_eq!(t.accepted().len(), 1);
    let cancel = CancellationToken::new();
    let addr = start_admin(&t.app, &cancel).await;
    (t, addr, cancel)
}

#[tokio::test]
async fn a_post_without_the_custom_header_is_refused() {
    let (t, addr, _cancel) = delivered_once(Options::default()).await;
    let requests_before = t.sim.requests();
    for path in POSTS {
        // What a cross-site <form method=POST> sends: no custom header, a form content type.
        let (code, body) = raw_http(
            addr,
            &format!(
                "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 0"
            ),
        )
        .await;
        assert_eq!(code, 403, "{path}: {body}");
        assert!(body.contains("X-Pollhook"), "{body}");
    }
    assert_eq!(t.sim.requests(), requests_before, "no poll was started");
    assert_eq!(
        t.app.store().counts().unwrap().pending,
        0,
        "nothing replayed"
    );

    // The same request with the header goes through.
    let (code, body) = raw_http(
        addr,
        &format!(
            "POST {} HTTP/1.1\r\nHost: {addr}\r\nX-Pollhook: 1\r\nContent-Length: 0",
            POSTS[0]
        ),
    )
    .await;
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("\"replayed\":1"), "{body}");
}

#[tokio::test]
async fn a_post_with_a_foreign_origin_is_refused() {
    let (t, addr, _cancel) = delivered_once(Options::default()).await;
    for origin in ["http://evil.example", "null", "http://localhost:1"] {
        let (code, body) = raw_http(
            addr,
            &format!(
                "POST {} HTTP/1.1\r\nHost: {addr}\r\nOrigin: {origin}\r\nX-Pollhook: 1\r\nContent-Length: 0",
                POSTS[0]
            ),
        )
        .await;
        assert_eq!(code, 403, "{origin}: {body}");
    }
    assert_eq!(
        t.app.store().counts().unwrap().pending,
        0,
        "nothing replayed"
    );
    // A page of the admin listener itself may.
    let (code, body) = raw_http(
        addr,
        &format!(
            "POST /endpoints/crm/enable HTTP/1.1\r\nHost: {addr}\r\nOrigin: http://{addr}\r\nX-Pollhook: 1\r\nContent-Length: 0"
        ),
    )
    .await;
    assert_eq!(code, 200, "{body}");
}

#[tokio::test]
async fn a_foreign_host_is_refused_on_every_route() {
    let (_t, addr, _cancel) = delivered_once(Options::default()).await;
    let port = addr.port();
    for path in [
        "/events",
        "/deliveries?state=delivered",
        "/metrics",
        "/readyz",
        "/healthz",
    ] {
        for host in ["evil.example".to_string(), format!("evil.example:{port}")] {
            let (code, body) =
                raw_http(addr, &format!("GET {path} HTTP/1.1\r\nHost: {host}")).await;
            assert_eq!(code, 403, "{path} with Host {host}: {body}");
            assert!(!body.contains("booking"), "{body}");
        }
    }
    // An HTTP/1.0 request without Host is refused too: browsers and HTTP/1.1 clients send one.
    let (code, _) = raw_http(addr, "GET /events HTTP/1.0").await;
    assert_eq!(code, 403);
    // The names of this listener are accepted.
    for host in [
        addr.to_string(),
        format!("localhost:{port}"),
        "localhost".to_string(),
        format!("127.0.0.1:{port}"),
    ] {
        let (code, body) = raw_http(addr, &format!("GET /events HTTP/1.1\r\nHost: {host}")).await;
        assert_eq!(code, 200, "Host {host}: {body}");
    }
}

#[tokio::test]
async fn with_a_token_every_route_but_healthz_needs_it() {
    let secrets = tempfile::tempdir().unwrap();
    let token = "7f3c9a1e5b2d4f6a8c0e1b3d5f7a9c2e";
    let token_file = secrets.path().join("admin-token");
    std::fs::write(&token_file, format!("{token}\n")).unwrap();
    let (t, addr, _cancel) = delivered_once(Options {
        admin_extra: format!(
            "token = {{ file = {:?} }}",
            token_file.display().to_string()
        ),
        ..Options::default()
    })
    .await;
    let host = format!("Host: {addr}");
    for path in ["/events", "/metrics", "/readyz", "/endpoints"] {
        let (code, body) = raw_http(addr, &format!("GET {path} HTTP/1.1\r\n{host}")).await;
        assert_eq!(code, 401, "{path}: {body}");
        let (code, _) = raw_http(
            addr,
            &format!(
                "GET {path} HTTP/1.1\r\n{host}\r\nAuthorization: Bearer wrong-token-wrong-token"
            ),
        )
        .await;
        assert_eq!(code, 401, "{path} with a wrong token");
        let (code, body) = raw_http(
            addr,
            &format!("GET {path} HTTP/1.1\r\n{host}\r\nAuthorization: Bearer {token}"),
        )
        .await;
        assert_eq!(code, 200, "{path}: {body}");
    }
    let (code, _) = raw_http(
        addr,
        &format!(
            "POST /endpoints/crm/enable HTTP/1.1\r\n{host}\r\nX-Pollhook: 1\r\nContent-Length: 0"
        ),
    )
    .await;
    assert_eq!(code, 401, "a POST without the token");
    let (code, body) = raw_http(
        addr,
        &format!(
            "POST /endpoints/crm/enable HTTP/1.1\r\n{host}\r\nX-Pollhook: 1\r\nAuthorization: Bearer {token}\r\nContent-Length: 0"
        ),
    )
    .await;
    assert_eq!(code, 200, "{body}");
    // Liveness probes carry no credentials.
    let (code, body) = raw_http(addr, &format!("GET /healthz HTTP/1.1\r\n{host}")).await;
    assert_eq!((code, body.as_str()), (200, "ok\n"));
    // The answer says how to authenticate.
    let r = reqwest::get(format!("http://{addr}/events")).await.unwrap();
    assert_eq!(r.status().as_u16(), 401);
    assert!(
        r.headers()
            .get("www-authenticate")
            .is_some_and(|v| v.to_str().unwrap().starts_with("Bearer")),
        "{:?}",
        r.headers()
    );
    drop(t);
}
