//! Incremental watermarks from the source's own clock or data: the `Date` header, a configured
//! header, or the newest time in the bookings; the next incremental request asks from there,
//! minus the overlap, whatever pollhook's own clock says.

use std::sync::{Arc, Mutex};

use axum::http::HeaderMap;
use axum::response::IntoResponse;

use crate::helpers::*;

/// A source answering two bookings with fixed `Date` and `X-Page-Generated` headers; it records
/// the query of every request.
struct Api {
    url: String,
    queries: Arc<Mutex<Vec<String>>>,
}

async fn api(date: Option<&'static str>) -> Api {
    let queries = Arc::new(Mutex::new(Vec::new()));
    let q = queries.clone();
    let app = axum::Router::new().route(
        "/bookings",
        axum::routing::get(move |uri: axum::http::Uri| {
            let q = q.clone();
            async move {
                q.lock()
                    .unwrap()
                    .push(uri.query().unwrap_or("").to_string());
                let mut h = HeaderMap::new();
                if let Some(d) = date {
                    h.insert("date", d.parse().unwrap());
                }
                h.insert("x-page-generated", "2026-12-01T09:30:00Z".parse().unwrap());
                let body = serde_json::json!({"data": [
                    {"id": 1, "modifiedTime": "2026-12-01T08:00:00Z"},
                    {"id": 2, "modifiedTime": "2026-12-01T08:45:10Z"},
                ]});
                (h, axum::Json(body)).into_response()
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    Api {
        url: format!("http://{addr}/bookings"),
        queries,
    }
}

/// The `since` parameter of the second (incremental) poll with this watermark setting.
async fn second_since(date: Option<&'static str>, watermark: &str) -> String {
    let api = api(date).await;
    let dir = tempfile::tempdir().unwrap();
    let toml = format!(
        r#"
[store]
path = "{store}"
[admin]
listen = "off"
[sources.s]
url = "{url}"
every = "1h"
items = "/data"
sync = "incremental"
[sources.s.incremental]
query = {{ since = "{{{{ watermark | iso }}}}" }}
overlap = "30s"
{watermark}
"#,
        store = dir.path().join("s.redb").display(),
        url = api.url,
    );
    let app = build(&toml);
    // pollhook's clock is far from the source's: only the watermark source decides.
    app.clock()
        .advance(std::time::Duration::from_secs(86_400 * 400));
    app.poll_now("s").await.unwrap();
    app.poll_now("s").await.unwrap();
    let queries = api.queries.lock().unwrap().clone();
    assert_eq!(queries.len(), 2, "{queries:?}");
    assert!(queries[0].is_empty(), "the first poll is full: {queries:?}");
    url::form_urlencoded::parse(queries[1].as_bytes())
        .find(|(k, _)| k == "since")
        .map(|(_, v)| v.into_owned())
        .unwrap_or_else(|| panic!("no since in {queries:?}"))
}

#[tokio::test]
async fn the_date_header_is_the_source_clock() {
    let since = second_since(
        Some("Tue, 01 Dec 2026 10:00:00 GMT"),
        "watermark = \"date_header\"",
    )
    .await;
    assert_eq!(since, "2026-12-01T09:59:30Z");
}

#[tokio::test]
async fn a_named_header_can_carry_the_source_clock() {
    let since = second_since(
        Some("Tue, 01 Dec 2026 10:00:00 GMT"),
        "watermark = { header = \"X-Page-Generated\" }",
    )
    .await;
    assert_eq!(since, "2026-12-01T09:29:30Z");
}

#[tokio::test]
async fn the_newest_time_in_the_bookings_can_be_the_watermark() {
    let since = second_since(None, "watermark = { pointer = \"/modifiedTime\" }").await;
    assert_eq!(since, "2026-12-01T08:44:40Z");
}

#[tokio::test]
async fn without_a_readable_header_the_poll_start_is_used() {
    let before = now_ms();
    let since = second_since(Some("not a date"), "watermark = \"date_header\"").await;
    // The poll start on pollhook's (advanced) clock, minus the overlap: far after the source's.
    let t = chrono::DateTime::parse_from_rfc3339(&since)
        .unwrap()
        .timestamp_millis();
    assert!(
        t > before + 86_400_000 * 399,
        "{since} is the poll start, not a source time"
    );
}
