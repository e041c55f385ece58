//! Upgrading a real schema-1 state file: `tests/fixtures/state-v1.redb` was written by release
//! 0.1.0 and `state-v1.json` says what that release read back from it (see
//! `tests/fixtures/README.md`). The current code must migrate a copy losing nothing, keep
//! working on it (pending deliveries go out, dead letters replay, unchanged bookings stay quiet),
//! open it again unharmed, and refuse a file from a newer release.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use axum::extract::{Query, State};
use pollhook::App;
use pollhook::demo::receiver::Receiver;
use pollhook::diff::Policy;
use pollhook::outbox::EventKind;
use pollhook::store::{ReplaySelector, SCHEMA_VERSION, Store};
use serde_json::{Value, json};

use crate::helpers::{HOUR_MS, SECRET, now_ms, secret_key};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// What release 0.1.0 read back from the fixture.
fn expected() -> Value {
    let text = std::fs::read_to_string(fixtures().join("state-v1.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

/// A copy of the fixture in `dir` (opening the committed file would migrate it in place).
fn copy_fixture(dir: &Path) -> PathBuf {
    let to = dir.join("state.redb");
    std::fs::copy(fixtures().join("state-v1.redb"), &to).unwrap();
    to
}

/// The store's contents in the shape of `state-v1.json` (deliveries sorted by seq, endpoint).
fn describe(store: &Store) -> Value {
    let mut bookings = Vec::new();
    for k in store.known("hotel").unwrap() {
        let b = store
            .booking("hotel", &k.id)
            .unwrap()
            .unwrap_or_else(|| panic!("booking {} is listed but has no row", k.id));
        assert_eq!(
            (b.cancelled, b.outside),
            (k.cancelled, k.outside),
            "{}",
            k.id
        );
        bookings.push(json!({
            "id": k.id, "cancelled": b.cancelled, "outside": b.outside, "doc": b.doc,
        }));
    }
    let mut events = Vec::new();
    let mut deliveries = Vec::new();
    for e in store.events().unwrap() {
        events.push(json!({
            "id": e.id, "seq": e.seq, "kind": e.kind, "booking_id": e.booking_id,
        }));
        for d in store.deliveries_of(e.seq).unwrap() {
            assert_eq!(d.event_id, e.id, "delivery {}/{}", d.endpoint, d.seq);
            deliveries.push(json!({
                "endpoint": d.endpoint, "seq": d.seq, "state": d.state, "attempts": d.attempts,
            }));
        }
    }
    let c = store.counts().unwrap();
    let st = store.source_state("hotel").unwrap().expect("source state");
    let tok = store.token("source:hotel").unwrap().expect("cached token");
    json!({
        "bookings": bookings,
        "events": events,
        "deliveries": sorted_deliveries(&Value::Array(deliveries)),
        "counts": {"events": c.events, "pending": c.pending, "due": c.due, "dead": c.dead},
        "source_state": {
            "polls": st.polls, "watermark_ms": st.watermark_ms, "last_full_ms": st.last_full_ms,
        },
        "token": {"key": "source:hotel", "token": tok.token, "expires_ms": tok.expires_ms},
    })
}

fn sorted_deliveries(v: &Value) -> Value {
    let mut rows = v.as_array().unwrap().clone();
    rows.sort_by_key(|d| {
        (
            d["seq"].as_u64(),
            d["endpoint"].as_str().map(str::to_string),
        )
    });
    Value::Array(rows)
}

/// Compares a store against the fixture description, section by section.
fn assert_matches_fixture(store: &Store) {
    let want = expected();
    let got = describe(store);
    let want_bookings = want["bookings"].as_array().unwrap();
    let got_bookings = got["bookings"].as_array().unwrap();
    assert_eq!(got_bookings.len(), want_bookings.len(), "booking count");
    for (g, w) in got_bookings.iter().zip(want_bookings) {
        assert_eq!(g, w, "booking {}", w["id"]);
    }
    assert_eq!(got["events"], want["events"], "events");
    assert_eq!(
        got["deliveries"],
        sorted_deliveries(&want["deliveries"]),
        "deliveries"
    );
    assert_eq!(got["counts"], want["counts"], "counts");
    assert_eq!(got["source_state"], want["source_state"], "source state");
    assert_eq!(got["token"], want["token"], "token");
}

/// The legacy API, serving the given bookings: `/list` (one page, the bookings not outside the
/// window) and `/lookup?id=` (any of them).
#[derive(Clone)]
struct Legacy {
    listed: Arc<Mutex<Vec<Value>>>,
    all: Arc<Mutex<Vec<Value>>>,
}

async fn list(State(l): State<Legacy>) -> axum::Json<Value> {
    axum::Json(json!({ "data": l.listed.lock().unwrap().clone() }))
}

async fn lookup(
    State(l): State<Legacy>,
    Query(q): Query<BTreeMap<String, String>>,
) -> axum::Json<Value> {
    // The fixture's booking ids are numbers.
    let id: Option<u64> = q.get("id").and_then(|s| s.parse().ok());
    let data: Vec<Value> = l
        .all
        .lock()
        .unwrap()
        .iter()
        .filter(|d| id.is_some() && d["id"].as_u64() == id)
        .cloned()
        .collect();
    axum::Json(json!({ "data": data }))
}

async fn start_legacy(want: &Value) -> (Legacy, String) {
    let bookings = want["bookings"].as_array().unwrap();
    let legacy = Legacy {
        listed: Arc::new(Mutex::new(
            bookings
                .iter()
                .filter(|b| b["outside"] == false)
                .map(|b| b["doc"].clone())
                .collect(),
        )),
        all: Arc::new(Mutex::new(
            bookings.iter().map(|b| b["doc"].clone()).collect(),
        )),
    };
    let router = axum::Router::new()
        .route("/list", axum::routing::get(list))
        .route("/lookup", axum::routing::get(lookup))
        .with_state(legacy.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await });
    (legacy, format!("http://{addr}"))
}

/// The configuration the fixture was written with (same source policy, so the same
/// fingerprints; same endpoint names, so the stored rows match endpoints).
fn config_text(dir: &Path, store: &Path, legacy: &str, crm: &str, audit: &str) -> String {
    let secret = dir.join("secret");
    std::fs::write(&secret, SECRET).unwrap();
    format!(
        r#"
[store]
path = "{store}"
[admin]
listen = "off"

[sources.hotel]
url = "{legacy}/list"
every = "1h"
items = "/data"
status = "/status"
ignore_fields = ["/modifiedTime"]
retry_backoff = "10ms"
on_disappear = "lookup"
[sources.hotel.lookup]
url = "{legacy}/lookup"
query = {{ id = "{{{{ id }}}}" }}

[endpoints.crm]
url = "{crm}"
format = "v2"
secrets = [{{ file = "{secret}" }}]
retry_schedule = ["0s", "5s", "5m", "30m"]
jitter = 0.0

[endpoints.audit]
url = "{audit}"
format = "v2"
secrets = [{{ file = "{secret}" }}]
retry_schedule = ["0s"]
jitter = 0.0
"#,
        store = store.display(),
        secret = secret.display(),
    )
}

/// Delivery rounds at `at` until nothing is attempted.
async fn deliver_all_at(app: &App, at: i64) {
    for _ in 0..20 {
        if app.deliver_due_at(at).await.unwrap().attempted == 0 {
            return;
        }
    }
    panic!("deliveries did not settle");
}

fn webhook_ids(r: &Receiver) -> Vec<String> {
    r.accepted()
        .iter()
        .map(|x| x.header("webhook-id").expect("webhook-id").to_string())
        .collect()
}

#[tokio::test]
async fn a_schema_1_file_is_migrated_losing_nothing_and_keeps_working() {
    let want = expected();
    let dir = tempfile::tempdir().unwrap();
    let path = copy_fixture(dir.path());
    let (legacy, legacy_url) = start_legacy(&want).await;
    let crm = Receiver::start(vec![secret_key()]).await.unwrap();
    let audit = Receiver::start(vec![secret_key()]).await.unwrap();
    let toml = config_text(
        dir.path(),
        &path,
        &legacy_url,
        &crm.url("/crm"),
        &audit.url("/audit"),
    );
    let app = crate::helpers::build(&toml);

    // Everything release 0.1.0 stored is there, as it was.
    assert_matches_fixture(app.store());

    let events = want["events"].as_array().unwrap();
    let id_of = |seq: u64| -> String {
        events
            .iter()
            .find(|e| e["seq"] == seq)
            .map(|e| e["id"].as_str().unwrap().to_string())
            .unwrap()
    };
    let rows = want["deliveries"].as_array().unwrap();
    let of = |endpoint: &str, state: &str| -> Vec<u64> {
        rows.iter()
            .filter(|d| d["endpoint"] == endpoint && d["state"] == state)
            .map(|d| d["seq"].as_u64().unwrap())
            .collect()
    };
    let pending = of("crm", "pending");
    let dead = of("audit", "dead");
    assert!(!pending.is_empty() && !dead.is_empty() && !of("crm", "delivered").is_empty());

    // The pending deliveries go out, with their event ids, one booking's in order.
    let far = now_ms() + 24 * HOUR_MS;
    deliver_all_at(&app, far).await;
    let got = webhook_ids(&crm);
    let mut sorted_got = got.clone();
    sorted_got.sort();
    let mut want_ids: Vec<String> = pending.iter().map(|s| id_of(*s)).collect();
    want_ids.sort();
    assert_eq!(sorted_got, want_ids, "the pending deliveries, each once");
    for e in events {
        let seqs: Vec<u64> = events
            .iter()
            .filter(|o| o["booking_id"] == e["booking_id"])
            .map(|o| o["seq"].as_u64().unwrap())
            .filter(|s| pending.contains(s))
            .collect();
        let positions: Vec<usize> = seqs
            .iter()
            .map(|s| got.iter().position(|g| *g == id_of(*s)).unwrap())
            .collect();
        assert!(
            positions.windows(2).all(|w| w[0] < w[1]),
            "booking {}: its events out of order: {got:?}",
            e["booking_id"]
        );
    }
    for seq in &pending {
        let d = app.store().deliveries_of(*seq).unwrap();
        let crm_row = d.iter().find(|d| d.endpoint == "crm").unwrap();
        let before = rows
            .iter()
            .find(|r| r["endpoint"] == "crm" && r["seq"] == *seq)
            .unwrap()["attempts"]
            .as_u64()
            .unwrap();
        assert_eq!(
            crm_row.state,
            pollhook::outbox::DeliveryState::Delivered,
            "seq {seq}"
        );
        assert_eq!(u64::from(crm_row.attempts), before + 1, "seq {seq}");
    }
    assert!(audit.received().is_empty(), "dead letters stay dead");

    // The dead letters replay with their event ids.
    let n = app
        .replay(ReplaySelector::DeadOf {
            endpoint: "audit".into(),
        })
        .await
        .unwrap();
    assert_eq!(n, dead.len());
    deliver_all_at(&app, far).await;
    let mut got = webhook_ids(&audit);
    got.sort();
    let mut want_ids: Vec<String> = dead.iter().map(|s| id_of(*s)).collect();
    want_ids.sort();
    assert_eq!(
        got, want_ids,
        "every dead letter, replayed once, same event id"
    );
    let c = app.store().counts().unwrap();
    assert_eq!((c.pending, c.dead, c.due), (0, 0, 0));
    assert_eq!(c.events, events.len() as u64);

    // The migrated fingerprints are what this release computes for the same documents (with the
    // fixture's policy), so polling the same bookings finds nothing and rewrites no row. (A
    // mismatch would not show as events: the documents would be compared and found equal; it
    // would show as every row rewritten under the poll's generation.)
    let policy = Policy::new(
        Some("/status".into()),
        vec![],
        vec!["/modifiedTime".into()],
        vec![],
    );
    let ids: Vec<&str> = want["bookings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["id"].as_str().unwrap())
        .collect();
    for id in &ids {
        let b = app.store().booking("hotel", id).unwrap().unwrap();
        assert_eq!(
            b.fingerprint,
            policy.fingerprint(&b.doc).unwrap(),
            "booking {id}: migrated fingerprint"
        );
    }
    let rows_before = app.store().rows("hotel", &ids).unwrap();
    let r = app.poll_now("hotel").await.unwrap();
    assert_eq!(
        app.store().rows("hotel", &ids).unwrap(),
        rows_before,
        "an unchanged poll rewrote snapshot rows"
    );
    assert_eq!(r.bookings, legacy.listed.lock().unwrap().len());
    assert_eq!(
        r.events_total, 0,
        "an unchanged poll after migration: {:?}",
        r.events
    );
    for b in want["bookings"].as_array().unwrap() {
        let id = b["id"].as_str().unwrap();
        let got = app.store().booking("hotel", id).unwrap().unwrap();
        assert_eq!(got.doc, b["doc"], "{id}");
        assert_eq!(got.cancelled, b["cancelled"] == true, "{id}");
        assert_eq!(got.outside, b["outside"] == true, "{id}");
    }

    // One field changes: exactly one modify naming it, numbered after the migrated events.
    let changed = want["bookings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["cancelled"] == false && b["outside"] == false)
        .unwrap();
    let id = changed["id"].as_str().unwrap();
    let old_price = changed["doc"]["price"].as_f64().unwrap();
    let mut new_doc = changed["doc"].clone();
    new_doc["price"] = json!(old_price + 1.0);
    for list in [&legacy.listed, &legacy.all] {
        for d in list.lock().unwrap().iter_mut() {
            if d["id"] == changed["doc"]["id"] {
                *d = new_doc.clone();
            }
        }
    }
    let r = app.poll_now("hotel").await.unwrap();
    assert_eq!(r.events_total, 1, "{:?}", r.events);
    let e = &r.events[0];
    assert_eq!((e.kind, e.booking_id.as_str()), (EventKind::Modify, id));
    let paths: Vec<&str> = e.changes.iter().map(|c| c.path.as_str()).collect();
    assert_eq!(paths, ["/price"]);
    assert_eq!(e.changes[0].old, json!(old_price));
    let max_seq = events.iter().map(|e| e["seq"].as_u64().unwrap()).max();
    assert_eq!(
        Some(e.seq),
        max_seq.map(|s| s + 1),
        "the sequence continues"
    );
    assert!(events.iter().all(|o| o["id"] != e.id.as_str()));
    assert_eq!(
        app.store().booking("hotel", id).unwrap().unwrap().doc,
        new_doc
    );
    deliver_all_at(&app, far).await;
    assert_eq!(webhook_ids(&crm).last(), Some(&e.id));
    assert_eq!(webhook_ids(&audit).last(), Some(&e.id));
}

#[tokio::test]
async fn a_migrated_file_opens_again_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    let path = copy_fixture(dir.path());
    let first = {
        let store = Store::open(&path).unwrap();
        assert_matches_fixture(&store);
        describe(&store)
    };
    let store = Store::open(&path).unwrap_or_else(|e| panic!("second open: {e}"));
    assert_eq!(describe(&store), first, "the second open saw other rows");
    assert_matches_fixture(&store);
    drop(store);
    // And a third time, through the app's own opening path.
    let store = Store::open_with(&path, pollhook::store::StoreOptions::default()).unwrap();
    assert_eq!(describe(&store), first);
}

const META: redb::TableDefinition<&str, u64> = redb::TableDefinition::new("meta_v1");

fn set_schema(path: &Path, version: u64) {
    let db = redb::Database::create(path).unwrap();
    let txn = db.begin_write().unwrap();
    txn.open_table(META)
        .unwrap()
        .insert("schema_version", version)
        .unwrap();
    txn.commit().unwrap();
}

fn schema_of(path: &Path) -> Option<u64> {
    use redb::ReadableDatabase;
    let db = redb::Database::open(path).unwrap();
    let txn = db.begin_read().unwrap();
    let meta = txn.open_table(META).unwrap();
    meta.get("schema_version").unwrap().map(|v| v.value())
}

fn assert_refused(path: &Path) {
    let e = Store::open(path)
        .err()
        .unwrap_or_else(|| panic!("{} with schema 99 was opened", path.display()))
        .to_string();
    assert!(e.contains(&path.display().to_string()), "{e}");
    assert!(e.contains("schema version 99"), "{e}");
    assert!(
        e.contains(&format!("reads up to version {SCHEMA_VERSION}")),
        "{e}"
    );
    // Refused without touching it.
    assert_eq!(schema_of(path), Some(99));
}

#[tokio::test]
async fn a_file_from_a_newer_release_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    // The fixture, migrated by this release, then marked as written by a later one.
    let path = copy_fixture(dir.path());
    drop(Store::open(&path).unwrap());
    assert_eq!(schema_of(&path), Some(SCHEMA_VERSION));
    set_schema(&path, 99);
    assert_refused(&path);
    // A brand-new file holding nothing but the newer schema number.
    let bare = dir.path().join("future.redb");
    set_schema(&bare, 99);
    assert_refused(&bare);
}
