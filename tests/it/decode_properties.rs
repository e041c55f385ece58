//! Properties of what comes in from outside: the JSON and XML decoders and the config loader
//! return an error, never panic, whatever the bytes; and a poll whose pages include one that
//! fails, is truncated or malformed anywhere commits nothing (bookings, events and the source's
//! state unchanged) and emits no event, after which the next good poll sees each change once.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::extract::{Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use pollhook::config::{Config, ResponseFormat};
use proptest::prelude::*;
use proptest::test_runner::{Config as RunnerConfig, TestRunner};
use serde_json::{Value, json};

/// Bytes biased towards markup: tags, attributes, entities, CDATA, declarations, JSON syntax.
fn markup() -> impl Strategy<Value = Vec<u8>> {
    let piece = prop_oneof![
        "<[a-c:]{1,3}( [a-c]{1,2}=\"[^\"<]{0,3}\")?/?>",
        "</[a-c:]{1,3}>",
        Just("<?xml version=\"1.0\" encoding=\"ISO-8859-1\"?>".to_string()),
        Just("<![CDATA[x]]>".to_string()),
        Just("<!DOCTYPE a [<!ENTITY e \"&e;&e;\">]>".to_string()),
        Just("<!-- c -->".to_string()),
        "&(amp|lt|gt|quot|apos|#x?[0-9a-f]{0,8}|[a-z]{1,4});?",
        "[{}\\[\\]:,\"0-9.eE+-]{1,6}",
        "[ -~\u{80}-\u{10ffff}]{0,6}",
    ];
    prop_oneof![
        any::<Vec<u8>>(),
        prop::collection::vec(piece, 0..40).prop_map(|p| p.concat().into_bytes()),
        (1usize..3000).prop_map(|n| "<a>".repeat(n).into_bytes()),
        (1usize..3000).prop_map(|n| "[".repeat(n).into_bytes()),
    ]
}

/// TOML text built from the keys and tables the loader knows, with values of every kind: it
/// reaches the validation, template and schedule parsers rather than stopping at syntax.
fn config_text() -> impl Strategy<Value = String> {
    let table = prop_oneof![
        Just("[store]"),
        Just("[admin]"),
        Just("[log]"),
        Just("[delivery]"),
        Just("[sources.h]"),
        Just("[sources.h.pagination]"),
        Just("[sources.h.incremental]"),
        Just("[sources.h.incremental.watermark]"),
        Just("[sources.h.lookup]"),
        Just("[sources.h.success]"),
        Just("[sources.h.auth]"),
        Just("[endpoints.e]"),
        Just("[endpoints.e.auth]"),
    ]
    .prop_map(String::from);
    let key = prop_oneof![
        Just("url"),
        Just("every"),
        Just("cron"),
        Just("timezone"),
        Just("items"),
        Just("status"),
        Just("id"),
        Just("style"),
        Just("next"),
        Just("param"),
        Just("format"),
        Just("secrets"),
        Just("secret"),
        Just("retry_schedule"),
        Just("jitter"),
        Just("timeout"),
        Just("max_pages"),
        Just("listen"),
        Just("path"),
        Just("token"),
        Just("type"),
        Just("kind"),
        Just("query"),
        Just("body"),
        Just("ignore_fields"),
        Just("only_fields"),
        Just("first_poll"),
        Just("on_disappear"),
        Just("max_disappear_share"),
        Just("pointer"),
        Just("equals"),
        Just("method"),
        Just("headers"),
        Just("events"),
        Just("sources"),
        Just("enabled"),
        Just("preset"),
        Just("cache_size"),
        Just("retention"),
        Just("level"),
        Just("allowed_hosts"),
        Just("items_shape"),
        Just("sync"),
        Just("size"),
        Just("start"),
        Just("total"),
        Just("overlap"),
        Just("cancelled_values"),
    ];
    let value = prop_oneof![
        Just("\"30s\"".to_string()),
        Just("\"0s\"".to_string()),
        Just("\"http://127.0.0.1:1/b\"".to_string()),
        Just("\"http://127.0.0.1:1/{{ booking/x }}/{{ event.id }}\"".to_string()),
        Just("\"/data\"".to_string()),
        Just("\"{{ page }}\"".to_string()),
        Just("\"{{ watermark - 10m | unix }}\"".to_string()),
        Just("\"{{\"".to_string()),
        Just("\"next_link\"".to_string()),
        Just("\"page\"".to_string()),
        Just("\"offset\"".to_string()),
        Just("\"cursor\"".to_string()),
        Just("\"0 9 * * 8\"".to_string()),
        Just("\"v2\"".to_string()),
        Just("\"xml\"".to_string()),
        Just("\"0.0.0.0:0\"".to_string()),
        Just("\"64MiB\"".to_string()),
        Just("0".to_string()),
        Just("-1".to_string()),
        Just("18446744073709551615".to_string()),
        Just("1e308".to_string()),
        Just("nan".to_string()),
        Just("true".to_string()),
        Just("[]".to_string()),
        Just("[\"/a\", 3]".to_string()),
        Just("{}".to_string()),
        Just("{ file = \"/nonexistent/secret\" }".to_string()),
        Just("{ env = \"POLLHOOK_NO_SUCH_VARIABLE\" }".to_string()),
        Just("{ x = \"{{ booking }}\" }".to_string()),
        "\"[ !#-\\[\\]-~]{0,12}\"",
        (-5i64..100000).prop_map(|n| n.to_string()),
    ];
    let line = prop_oneof![
        1 => table,
        4 => (key, value).prop_map(|(k, v)| format!("{k} = {v}")),
    ];
    prop::collection::vec(line, 0..24).prop_map(|lines| lines.join("\n"))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2048, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn the_json_and_xml_decoders_never_panic(bytes in markup(), page in 1u32..5) {
        let _ = pollhook::source::decode(ResponseFormat::Json, &bytes, page);
        let _ = pollhook::source::decode(ResponseFormat::Xml, &bytes, page);
        let _ = pollhook::source::xml::to_json(&bytes, 64);
    }

    #[test]
    fn the_config_loader_never_panics_on_any_text(text in prop_oneof![any::<String>(), config_text()]) {
        let _ = Config::from_toml_str(&text, "fuzz.toml");
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, failure_persistence: None, ..ProptestConfig::default() })]

    /// Through the file, as `pollhook check` and `run` read it: arbitrary bytes, not only UTF-8.
    #[test]
    fn the_config_loader_never_panics_on_any_file(bytes in prop_oneof![
        any::<Vec<u8>>(),
        config_text().prop_map(String::into_bytes),
    ]) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pollhook.toml");
        std::fs::write(&path, &bytes).unwrap();
        let _ = Config::load(&path);
    }
}

/// One answer: the HTTP status and the body.
type Answer = (u16, Vec<u8>);

/// The pages a test server answers, by the `page` query parameter (1 when absent).
#[derive(Clone, Default)]
struct Pages(Arc<Mutex<Vec<Answer>>>);

async fn page(State(pages): State<Pages>, Query(q): Query<HashMap<String, String>>) -> Response {
    let n: usize = q.get("page").and_then(|p| p.parse().ok()).unwrap_or(1);
    let answer = pages.0.lock().unwrap().get(n.wrapping_sub(1)).cloned();
    match answer {
        Some((status, body)) => (
            StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            [(header::CONTENT_TYPE, "application/json")],
            body,
        )
            .into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

const PAGES: usize = 3;

/// Bookings 1..=6 (two per page; booking 7 is added by the change under test).
fn bookings(changed: bool) -> Vec<Value> {
    let mut out: Vec<Value> = (1..=6)
        .map(|i| json!({"id": i, "status": "confirmed", "guest": format!("g{i}"), "nights": i}))
        .collect();
    if changed {
        out[0]["nights"] = json!(99);
        out[4]["status"] = json!("cancelled");
        out.push(json!({"id": 7, "status": "confirmed", "guest": "g7", "nights": 7}));
    }
    out
}

fn page_doc(base: &str, items: &[Value], page: usize) -> Value {
    let size = items.len().div_ceil(PAGES);
    let chunk: Vec<Value> = items.iter().skip(page * size).take(size).cloned().collect();
    let next = if page + 1 < PAGES {
        json!(format!("{base}?page={}", page + 2))
    } else {
        Value::Null
    };
    json!({"data": chunk, "pages": {"nextPageLink": next}})
}

fn good_pages(base: &str, changed: bool) -> Vec<Answer> {
    let items = bookings(changed);
    (0..PAGES)
        .map(|p| (200, serde_json::to_vec(&page_doc(base, &items, p)).unwrap()))
        .collect()
}

/// What can go wrong with one page.
#[derive(Debug, Clone)]
enum Fault {
    /// An error status (any 4xx or 5xx).
    Status(u16),
    /// The body cut short after this many bytes (fewer than it has).
    Truncated(usize),
    /// Bytes that are not JSON at all.
    Garbage(Vec<u8>),
    /// A record without its id.
    NoId(usize),
    /// A record whose id is not a usable id.
    BadId(usize, Value),
    /// The items pointer leads to a scalar (an object is a list of one and `null` an empty
    /// list, as documented).
    ItemsNotAList(Value),
}

fn fault() -> impl Strategy<Value = Fault> {
    prop_oneof![
        prop_oneof![400u16..429, 430u16..600].prop_map(Fault::Status),
        any::<usize>().prop_map(Fault::Truncated),
        any::<Vec<u8>>()
            .prop_filter("not JSON", |b| serde_json::from_slice::<Value>(b).is_err())
            .prop_map(Fault::Garbage),
        (0usize..3).prop_map(Fault::NoId),
        (
            0usize..3,
            prop_oneof![
                Just(json!(true)),
                Just(json!(false)),
                Just(json!("")),
                Just(json!("  ")),
                Just(json!(null)),
                Just(json!([1])),
                Just(json!({"a": 1})),
            ]
        )
            .prop_map(|(i, v)| Fault::BadId(i, v)),
        prop_oneof![Just(json!("1,2")), Just(json!(true)), Just(json!(3)),]
            .prop_map(Fault::ItemsNotAList),
    ]
}

fn with_fault(good: &[u8], fault: &Fault) -> Answer {
    let mut doc: Value = serde_json::from_slice(good).unwrap();
    let records = |doc: &mut Value| doc["data"].as_array_mut().map(|a| a.len()).unwrap_or(0);
    match fault {
        Fault::Status(s) => (*s, br#"{"error":"nope"}"#.to_vec()),
        Fault::Truncated(n) => (200, good[..n % good.len()].to_vec()),
        Fault::Garbage(b) => (200, b.clone()),
        Fault::NoId(i) => {
            let n = records(&mut doc);
            if let Some(r) = doc["data"]
                .get_mut(i % n.max(1))
                .and_then(Value::as_object_mut)
            {
                r.remove("id");
            }
            (200, serde_json::to_vec(&doc).unwrap())
        }
        Fault::BadId(i, v) => {
            let n = records(&mut doc);
            if let Some(r) = doc["data"].get_mut(i % n.max(1)) {
                r["id"] = v.clone();
            }
            (200, serde_json::to_vec(&doc).unwrap())
        }
        Fault::ItemsNotAList(v) => {
            doc["data"] = v.clone();
            (200, serde_json::to_vec(&doc).unwrap())
        }
    }
}

/// Everything a poll may change in the store, for comparison.
fn store_view(app: &pollhook::App) -> String {
    let s = app.store();
    let docs: Vec<_> = (1..=7)
        .map(|i| s.booking("hotel", &i.to_string()).unwrap())
        .collect();
    format!(
        "{docs:?}\n{:?}\n{:?}\n{:?}",
        s.events().unwrap(),
        s.source_state("hotel").unwrap(),
        s.counts().unwrap()
    )
}

#[test]
fn a_poll_with_any_failing_truncated_or_malformed_page_commits_nothing() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let pages = Pages::default();
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let base = format!("http://{}/b", listener.local_addr().unwrap());
    let router = axum::Router::new()
        .route("/b", axum::routing::get(page))
        .with_state(pages.clone());
    rt.spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    let config = |dir: &tempfile::TempDir| {
        format!(
            r#"
[store]
path = "{store}"
[admin]
listen = "off"
[sources.hotel]
url = "{base}"
every = "1h"
items = "/data"
status = "/status"
retries = 0
[sources.hotel.pagination]
style = "next_link"
next = "/pages/nextPageLink"
[endpoints.crm]
url = "http://127.0.0.1:1/hook"
"#,
            store = dir.path().join("state.redb").display()
        )
    };
    let good = good_pages(&base, true);
    // Each case on a fresh store: the baseline, then the source changes (a good poll now would
    // emit three events), then a poll with the fault.
    let baseline = |dir: &tempfile::TempDir| {
        let app = rt.block_on(async { build(&config(dir)) });
        *pages.0.lock().unwrap() = good_pages(&base, false);
        rt.block_on(app.poll_now("hotel")).unwrap();
        app
    };

    let mut runner = TestRunner::new(RunnerConfig {
        cases: 256,
        failure_persistence: None,
        ..RunnerConfig::default()
    });
    runner
        .run(&(0..PAGES, fault()), |(at, fault)| {
            let dir = tempfile::tempdir().unwrap();
            let app = baseline(&dir);
            let before = store_view(&app);
            let mut served = good.clone();
            served[at] = with_fault(&good[at].1, &fault);
            *pages.0.lock().unwrap() = served;
            let result = rt.block_on(app.poll_now("hotel"));
            prop_assert!(
                result.is_err(),
                "page {} with {:?} was accepted: {:?}",
                at + 1,
                fault,
                result.map(|r| r.events)
            );
            prop_assert_eq!(
                &store_view(&app),
                &before,
                "page {} with {:?}",
                at + 1,
                fault
            );
            Ok(())
        })
        .unwrap_or_else(|e| panic!("{e}"));

    // Nothing was lost either: after failed polls, the first good one sees the three changes,
    // once.
    let dir = tempfile::tempdir().unwrap();
    let app = baseline(&dir);
    for at in 0..PAGES {
        let mut served = good.clone();
        served[at] = with_fault(&good[at].1, &Fault::Truncated(good[at].1.len() / 2));
        *pages.0.lock().unwrap() = served;
        assert!(rt.block_on(app.poll_now("hotel")).is_err());
    }
    *pages.0.lock().unwrap() = good;
    let r = rt.block_on(app.poll_now("hotel")).unwrap();
    assert_eq!(r.events.len(), 3, "{:?}", r.events);
    let r = rt.block_on(app.poll_now("hotel")).unwrap();
    assert_eq!(r.events.len(), 0);
}

fn build(toml: &str) -> pollhook::App {
    crate::helpers::build(toml)
}
