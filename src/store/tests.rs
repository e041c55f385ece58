//! Store tests: lanes, outcomes, replay, retention, failed polls and reopening.

use super::*;
use crate::outbox::{DeliveryState, Event, EventKind};
use redb::ReadableDatabase;
use serde_json::json;

fn store() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(&dir.path().join("t.redb")).unwrap();
    (dir, s)
}

fn emit(s: &Store, booking: &str, eps: &[&str], now: i64) -> Vec<Event> {
    s.emit_new("src", &[booking], eps, now)
}

fn staged_doc(id: &str, doc: serde_json::Value, order: u64) -> PageOp {
    PageOp::Doc {
        id: id.to_string(),
        json: serde_json::to_vec(&doc).unwrap(),
        staged: Staged {
            op: StagedOp::Doc {
                fingerprint: order + 1,
                cancelled: false,
            },
            order,
            observed_us: 5,
        },
    }
}

/// Stages `docs` in one page and promotes them as snapshot rows.
fn store_docs(s: &Store, source: &str, docs: &[(&str, serde_json::Value)]) {
    s.begin_poll(source, b"cp").unwrap();
    let ops: Vec<PageOp> = docs
        .iter()
        .enumerate()
        .map(|(i, (id, d))| staged_doc(id, d.clone(), i as u64))
        .collect();
    s.stage_page(source, &ops, None, b"cp2", false).unwrap();
    s.promote(
        source,
        true,
        |p, id, st| {
            let StagedOp::Doc { fingerprint, .. } = st.op else {
                panic!()
            };
            let generation = p.generation();
            p.put_row(
                id,
                &SnapRow {
                    fingerprint,
                    cancelled: false,
                    outside: false,
                    generation,
                    observed_us: st.observed_us,
                },
            )
        },
        |_| Ok(()),
    )
    .unwrap();
}

/// Every endpoint the tests use, each up to 10 due rows, none in flight.
const ALL: [(&str, usize, &[u64]); 4] = [
    ("ep", 10, &[]),
    ("a", 10, &[]),
    ("b", 10, &[]),
    ("other", 10, &[]),
];

fn finish(s: &Store, item: &DueItem, state: DeliveryState, now: i64) {
    let mut d = item.delivery.clone();
    let prev = d.next_ms;
    d.state = state;
    d.attempts += 1;
    s.record(&[(d, prev)], now).unwrap();
}

#[test]
fn only_lane_heads_are_due_and_finishing_promotes_the_next() {
    let (_d, s) = store();
    emit(&s, "b1", &["ep"], 10);
    emit(&s, "b1", &["ep"], 11);
    emit(&s, "b2", &["ep"], 12);
    let due = s.due(100, &ALL).unwrap();
    let seqs: Vec<u64> = due.items.iter().map(|i| i.event.seq).collect();
    assert_eq!(seqs, [1, 3], "b1's second event waits behind its first");
    finish(&s, &due.items[0], DeliveryState::Delivered, 100);
    let due = s.due(100, &ALL).unwrap();
    let seqs: Vec<u64> = due.items.iter().map(|i| i.event.seq).collect();
    assert_eq!(seqs, [3, 2]);
}

#[test]
fn retry_moves_the_head_in_time_without_blocking_other_lanes() {
    let (_d, s) = store();
    emit(&s, "b1", &["ep"], 10);
    emit(&s, "b2", &["ep"], 10);
    let due = s.due(10, &ALL).unwrap();
    let mut d = due.items[0].delivery.clone();
    d.attempts = 1;
    d.next_ms = 5000;
    s.record(&[(d, 10)], 10).unwrap();
    let due = s.due(10, &ALL).unwrap();
    assert_eq!(due.items.len(), 1);
    assert_eq!(due.items[0].event.booking_id, "b2");
    assert_eq!(due.next_due_ms, Some(5000));
    assert_eq!(s.due(5000, &ALL).unwrap().items.len(), 2);
}

#[test]
fn oldest_pending_is_the_front_of_each_endpoints_due_index() {
    let (_d, s) = store();
    assert!(s.oldest_pending().unwrap().is_empty());
    emit(&s, "b1", &["a", "b"], 10);
    emit(&s, "b2", &["a"], 20);
    emit(&s, "b3", &["c"], 30);
    assert_eq!(
        s.oldest_pending().unwrap(),
        [
            ("a".to_string(), 10),
            ("b".to_string(), 10),
            ("c".to_string(), 30)
        ]
    );
    // Delivering a's first head leaves its next one (created at 20) at the front.
    let due = s.due(100, &[("a", 10, &[])]).unwrap();
    finish(&s, &due.items[0], DeliveryState::Delivered, 100);
    assert_eq!(s.oldest_pending().unwrap()[0], ("a".to_string(), 20));
    let due = s.due(100, &[("a", 10, &[])]).unwrap();
    finish(&s, &due.items[0], DeliveryState::Dead, 100);
    let left: Vec<String> = s
        .oldest_pending()
        .unwrap()
        .into_iter()
        .map(|(e, _)| e)
        .collect();
    assert_eq!(left, ["b", "c"], "nothing pending for a");
}

#[test]
fn a_failed_poll_commits_nothing() {
    let (_d, s) = store();
    s.begin_poll("src", b"cp").unwrap();
    s.stage_page(
        "src",
        &[staged_doc("b1", json!({"id": 1}), 0)],
        None,
        b"cp",
        true,
    )
    .unwrap();
    assert!(
        s.booking("src", "b1").unwrap().is_none(),
        "staged is not visible"
    );
    let r: Result<()> = s.promote(
        "src",
        false,
        |_, _, _| Ok(()),
        |t| {
            t.put_row(
                "b1",
                &SnapRow {
                    fingerprint: 1,
                    cancelled: false,
                    outside: false,
                    generation: t.generation(),
                    observed_us: 0,
                },
            )?;
            t.emit(EventKind::New, "b1", json!({}), vec![], &[("ep", 0)], 1)?;
            Err(StoreError::Task("boom".into()))
        },
    );
    assert!(r.is_err());
    assert!(s.booking("src", "b1").unwrap().is_none());
    assert!(s.events().unwrap().is_empty());
    assert!(s.due(100, &ALL).unwrap().items.is_empty());
    assert!(
        s.checkpoint("src").unwrap().is_some(),
        "the staged poll is still there to resume"
    );
}

/// Promotes every staged change of "src" as a new booking with one event, in detection order;
/// fails at the change numbered `fail_at`.
fn promote_news(s: &Store, fail_at: Option<u64>) -> Result<usize> {
    s.promote(
        "src",
        true,
        |p, id, st| {
            if Some(st.order) == fail_at {
                return Err(StoreError::Task("disk full".into()));
            }
            let StagedOp::Doc { fingerprint, .. } = st.op else {
                panic!()
            };
            let generation = p.generation();
            let row = SnapRow {
                fingerprint,
                cancelled: false,
                outside: false,
                generation,
                observed_us: st.observed_us,
            };
            p.put_row(id, &row)?;
            let doc = p.doc(id, generation)?;
            p.emit(EventKind::New, id, doc, vec![], &[("ep", 0)], 1)
        },
        |p| Ok(p.take_emitted().1),
    )
}

#[test]
fn a_promotion_interrupted_between_chunks_resumes_without_loss_or_repeats() {
    let (_d, s) = store();
    let n = 2 * super::poll::PROMOTE_CHUNK as u64 + 500;
    s.begin_poll("src", b"cp").unwrap();
    // Staged in reverse key order, so detection order and key order differ.
    let ops: Vec<PageOp> = (0..n)
        .map(|i| staged_doc(&format!("{:05}", n - i), json!({"v": i}), i))
        .collect();
    s.stage_page("src", &ops, None, b"cp2", true).unwrap();
    let fail_at = super::poll::PROMOTE_CHUNK as u64 + 7;
    assert!(promote_news(&s, Some(fail_at)).is_err());
    // The first chunk is committed, the failed one is not, the rest is still staged.
    let events = s.events().unwrap();
    assert_eq!(events.len(), super::poll::PROMOTE_CHUNK);
    let mut left = 0;
    s.staged_ids("src", |_| left += 1).unwrap();
    assert_eq!(left as u64, n - super::poll::PROMOTE_CHUNK as u64);
    assert!(s.checkpoint("src").unwrap().is_some(), "still to finish");
    // The next run promotes what is left: every change exactly once, in detection order.
    assert_eq!(
        promote_news(&s, None).unwrap() as u64,
        n - super::poll::PROMOTE_CHUNK as u64
    );
    let events = s.events().unwrap();
    let ids: Vec<String> = events.iter().map(|e| e.booking_id.clone()).collect();
    let expected: Vec<String> = (0..n).map(|i| format!("{:05}", n - i)).collect();
    assert_eq!(ids, expected);
    assert!(s.checkpoint("src").unwrap().is_none());
    let mut left = 0;
    s.staged_ids("src", |_| left += 1).unwrap();
    assert_eq!(left, 0);
    for (i, id) in expected.iter().enumerate() {
        let b = s.booking("src", id).unwrap().unwrap();
        assert_eq!(b.doc, json!({"v": i}), "{id}");
    }
}

#[test]
fn a_promoted_poll_clears_its_staging_and_stale_documents() {
    let (_d, s) = store();
    store_docs(&s, "src", &[("1", json!({"v": 1})), ("2", json!({"v": 2}))]);
    let row = s.rows("src", &["1"]).unwrap()[0].unwrap();
    assert_eq!(s.booking("src", "1").unwrap().unwrap().doc, json!({"v": 1}));
    assert_eq!(s.checkpoint("src").unwrap(), None);
    let mut staged = 0;
    s.staged_ids("src", |_| staged += 1).unwrap();
    assert_eq!(staged, 0);
    // A second poll replaces booking 1's document; the older generation is dropped.
    store_docs(&s, "src", &[("1", json!({"v": 10}))]);
    let row2 = s.rows("src", &["1"]).unwrap()[0].unwrap();
    assert_eq!(
        s.booking("src", "1").unwrap().unwrap().doc,
        json!({"v": 10})
    );
    assert!(row2.generation > row.generation);
    let txn = s.db.begin_read().unwrap();
    let docs = txn.open_table(DOCS).unwrap();
    assert!(docs.get(("src", "1", row.generation)).unwrap().is_none());
    assert!(docs.get(("src", "2", row.generation)).unwrap().is_some());
}

#[test]
fn discarding_a_poll_drops_what_it_staged_only() {
    let (_d, s) = store();
    store_docs(&s, "src", &[("1", json!({"v": 1}))]);
    let generation = s.begin_poll("src", b"cp").unwrap();
    s.stage_page(
        "src",
        &[
            staged_doc("9", json!({"v": 9}), 0),
            staged_doc("1", json!({"v": 2}), 1),
        ],
        Some((1, &[7, 8])),
        b"cp-after-page-1",
        false,
    )
    .unwrap();
    assert_eq!(
        s.checkpoint("src").unwrap(),
        Some((generation, b"cp-after-page-1".to_vec()))
    );
    let mut seen = Vec::new();
    s.seen_hashes("src", |h| seen.push(h)).unwrap();
    assert_eq!(seen, [7, 8]);
    s.discard_poll("src").unwrap();
    assert_eq!(s.checkpoint("src").unwrap(), None);
    assert_eq!(s.booking("src", "1").unwrap().unwrap().doc, json!({"v": 1}));
    let txn = s.db.begin_read().unwrap();
    let docs = txn.open_table(DOCS).unwrap();
    assert!(docs.get(("src", "9", generation)).unwrap().is_none());
    assert!(docs.get(("src", "1", generation)).unwrap().is_none());
}

#[test]
fn a_page_with_enough_documents_trains_the_source_dictionary() {
    let (_d, s) = store();
    let docs: Vec<(String, serde_json::Value)> = (0..200)
        .map(|i| {
            (
                i.to_string(),
                json!({"id": i, "guest": format!("Guest {i}"), "status": "confirmed", "arrival": "2026-12-01"}),
            )
        })
        .collect();
    let refs: Vec<(&str, serde_json::Value)> =
        docs.iter().map(|(i, d)| (i.as_str(), d.clone())).collect();
    store_docs(&s, "src", &refs);
    let txn = s.db.begin_read().unwrap();
    let dicts = txn.open_table(DICTS).unwrap();
    assert_eq!(
        dicts
            .range(("src", 0u32)..=("src", u32::MAX))
            .unwrap()
            .count(),
        1
    );
    drop(txn);
    for (id, d) in &docs {
        assert_eq!(&s.booking("src", id).unwrap().unwrap().doc, d);
    }
}

#[test]
fn stale_outcomes_are_ignored() {
    let (_d, s) = store();
    emit(&s, "b1", &["ep"], 10);
    let item = s.due(10, &ALL).unwrap().items.remove(0);
    finish(&s, &item, DeliveryState::Delivered, 10);
    // The same outcome recorded twice (e.g. a duplicate) must not touch the lane again.
    let mut d = item.delivery.clone();
    d.state = DeliveryState::Dead;
    assert_eq!(s.record(&[(d, 10)], 10).unwrap(), 0);
    assert_eq!(
        s.deliveries_of(1).unwrap()[0].state,
        DeliveryState::Delivered
    );
}

#[test]
fn dead_letters_can_be_replayed_with_the_same_event() {
    let (_d, s) = store();
    let ev = emit(&s, "b1", &["ep"], 10).remove(0);
    let item = s.due(10, &ALL).unwrap().items.remove(0);
    finish(&s, &item, DeliveryState::Dead, 10);
    assert_eq!(s.counts().unwrap().dead, 1);
    assert!(s.due(10, &ALL).unwrap().items.is_empty());
    let sel = ReplaySelector::Event {
        id: ev.id.clone(),
        endpoint: None,
    };
    assert_eq!(s.replay(&sel, 20).unwrap(), 1);
    assert_eq!(s.replay(&sel, 20).unwrap(), 0, "already pending");
    let again = s.due(20, &ALL).unwrap().items.remove(0);
    assert_eq!(again.event.id, ev.id);
    assert_eq!(again.delivery.attempts, 0);
}

#[test]
fn prune_removes_delivered_history_and_orphan_events_only() {
    let (_d, s) = store();
    let delivered = emit(&s, "b1", &["ep"], 10).remove(0);
    let dead = emit(&s, "b2", &["ep"], 10).remove(0);
    let orphan = emit(&s, "b3", &[], 10).remove(0);
    let pending = emit(&s, "b4", &["ep"], 10).remove(0);
    let two_eps = emit(&s, "b5", &["ep", "other"], 10).remove(0);
    for item in s.due(10, &ALL).unwrap().items {
        let state = match item.event.booking_id.as_str() {
            "b1" | "b5" => DeliveryState::Delivered,
            "b2" => DeliveryState::Dead,
            _ => continue,
        };
        if item.delivery.endpoint == "other" {
            continue;
        }
        finish(&s, &item, state, 10);
    }
    // Nothing is older than the cutoff yet.
    assert_eq!(s.prune(5, 100).unwrap(), 0);
    assert_eq!(
        s.prune(11, 100).unwrap(),
        3,
        "b1, b5@ep and the orphan's entry"
    );
    let left: Vec<String> = s.events().unwrap().into_iter().map(|e| e.id).collect();
    assert!(!left.contains(&delivered.id));
    assert!(!left.contains(&orphan.id));
    assert!(left.contains(&dead.id), "dead letters keep their event");
    assert!(left.contains(&pending.id));
    assert!(
        left.contains(&two_eps.id),
        "still referenced by its other endpoint's delivery"
    );
    assert_eq!(s.deliveries_of(two_eps.seq).unwrap().len(), 1);
    // Bounded batches.
    let (_d2, s2) = store();
    for i in 0..5 {
        emit(&s2, &format!("x{i}"), &[], 10);
    }
    assert_eq!(s2.prune(11, 2).unwrap(), 2);
    assert_eq!(s2.prune(11, 2).unwrap(), 2);
    assert_eq!(s2.prune(11, 2).unwrap(), 1);
    assert!(s2.events().unwrap().is_empty());
}

#[test]
fn state_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.redb");
    let ev = {
        let s = Store::open(&path).unwrap();
        emit(&s, "b1", &["a", "b"], 10).remove(0)
    };
    let s = Store::open(&path).unwrap();
    let due = s.due(10, &ALL).unwrap();
    assert_eq!(due.items.len(), 2);
    assert!(due.items.iter().all(|i| i.event.id == ev.id));
    let next = emit(&s, "b2", &["a"], 11).remove(0);
    assert_eq!(next.seq, ev.seq + 1);
}

#[test]
fn known_lists_only_this_source() {
    let (_d, s) = store();
    store_docs(&s, "a", &[("1", json!({}))]);
    store_docs(&s, "b", &[("2", json!({}))]);
    store_docs(&s, "ab", &[("3", json!({}))]);
    let known = s.known("a").unwrap();
    assert_eq!(
        known,
        vec![Known {
            id: "1".into(),
            cancelled: false,
            outside: false
        }]
    );
    assert_eq!(s.known("a").unwrap(), known);
}

#[tokio::test]
async fn a_panicking_operation_is_corruption_and_every_later_one_is_refused() {
    let (d, s) = store();
    let path = d.path().join("t.redb");
    assert!(s.fault().is_none());
    let r: Result<()> = s.run(|_| panic!("simulated engine panic")).await;
    let e = r.unwrap_err();
    assert!(matches!(e, StoreError::Corrupted { .. }), "{e}");
    let message = e.to_string();
    assert!(message.contains(&path.display().to_string()), "{message}");
    assert!(message.contains("is corrupt"), "{message}");
    assert!(message.contains("simulated engine panic"), "{message}");
    // The flag is set, on every clone, and nothing touches the file any more.
    let clone = s.clone();
    assert!(clone.fault().is_some_and(|e| e.is_corruption()));
    assert!(s.counts().unwrap_err().is_corruption());
    assert!(clone.run(|s| s.counts()).await.unwrap_err().is_corruption());
    let waited = tokio::time::timeout(std::time::Duration::from_secs(5), s.faulted())
        .await
        .expect("corrupted() returns once the flag is set");
    assert!(waited.is_corruption());
}

#[tokio::test]
async fn the_engines_corruption_error_marks_the_file_corrupt() {
    let (_d, s) = store();
    let r: Result<()> = s
        .run(|_| Err(StoreError::Db(redb::Error::Corrupted("bad page".into()))))
        .await;
    assert!(r.unwrap_err().is_corruption());
    assert!(s.fault().is_some());
}

#[tokio::test]
async fn other_failures_are_not_corruption() {
    let (_d, s) = store();
    let r: Result<()> = s.run(|_| Err(StoreError::Task("boom".into()))).await;
    assert!(matches!(r, Err(StoreError::Task(_))));
    let r: Result<()> = s
        .run(|_| {
            Err(StoreError::Corrupt {
                table: "events_v2",
                reason: "one bad row".into(),
            })
        })
        .await;
    assert!(matches!(r, Err(StoreError::Corrupt { .. })));
    assert!(s.fault().is_none());
    s.counts().unwrap();
}

#[test]
fn a_file_another_process_holds_is_reported_as_in_use() {
    let (d, _s) = store();
    let e = Store::open(&d.path().join("t.redb")).unwrap_err();
    assert!(matches!(e, StoreError::Locked { .. }), "{e}");
    assert!(e.to_string().contains("in use by another process"), "{e}");
}

#[test]
fn a_path_under_a_file_names_the_os_error_not_another_pollhook() {
    let e = Store::open(Path::new("/dev/null/state.redb")).unwrap_err();
    let message = e.to_string();
    assert!(message.contains("/dev/null/state.redb"), "{message}");
    assert!(message.contains("Not a directory"), "{message}");
    assert!(!message.contains("another pollhook"), "{message}");
}

#[test]
fn a_new_file_is_0600_and_leaves_no_temporary_file() {
    use std::os::unix::fs::PermissionsExt;
    let (d, _s) = store();
    let mode = std::fs::metadata(d.path().join("t.redb"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "{mode:o}");
    let names: Vec<String> = std::fs::read_dir(d.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, ["t.redb"]);
}

#[test]
fn a_redb_database_without_tables_holds_nothing_and_is_initialised() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.redb");
    drop(redb::Database::create(&path).unwrap());
    let s = Store::open(&path).unwrap();
    assert_eq!(s.counts().unwrap().events, 0);
    drop(s);
    let found = Store::inspect(&path).unwrap();
    assert_eq!(found.schema_version, SCHEMA_VERSION);
}

#[test]
fn an_empty_file_is_not_a_store_for_inspection_either() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.redb");
    assert!(matches!(
        Store::inspect(&path),
        Err(StoreError::Missing { .. })
    ));
    assert!(!path.exists(), "inspection creates nothing");
    std::fs::write(&path, b"").unwrap();
    let e = Store::inspect(&path).unwrap_err();
    assert!(matches!(e, StoreError::NotAStore { .. }), "{e}");
    assert_eq!(std::fs::metadata(&path).unwrap().len(), 0);
}

/// A state file whose writes and syncs fail while `failing` is set, the way a full file
/// system fails them.
#[derive(Debug)]
struct FullDisk {
    file: redb::backends::FileBackend,
    failing: Arc<std::sync::atomic::AtomicBool>,
}

impl FullDisk {
    fn check(&self) -> std::io::Result<()> {
        if self.failing.load(std::sync::atomic::Ordering::SeqCst) {
            Err(std::io::Error::from_raw_os_error(28)) // ENOSPC
        } else {
            Ok(())
        }
    }
}

impl redb::StorageBackend for FullDisk {
    fn len(&self) -> std::io::Result<u64> {
        self.file.len()
    }
    fn read(&self, offset: u64, out: &mut [u8]) -> std::io::Result<()> {
        self.file.read(offset, out)
    }
    fn set_len(&self, len: u64) -> std::io::Result<()> {
        self.check()?;
        self.file.set_len(len)
    }
    fn sync_data(&self) -> std::io::Result<()> {
        self.check()?;
        self.file.sync_data()
    }
    fn write(&self, offset: u64, data: &[u8]) -> std::io::Result<()> {
        self.check()?;
        self.file.write(offset, data)
    }
}

/// A store on a [`FullDisk`] file in a temporary directory, and its switch.
fn full_disk_store() -> (tempfile::TempDir, Store, Arc<std::sync::atomic::AtomicBool>) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.redb");
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .unwrap();
    let failing = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let backend = FullDisk {
        file: redb::backends::FileBackend::new(file).unwrap(),
        failing: failing.clone(),
    };
    let db = Database::builder().create_with_backend(backend).unwrap();
    let s = Store::with(db, &path);
    s.prepare(&path).unwrap();
    (dir, s, failing)
}

#[tokio::test]
async fn a_failed_write_stops_every_later_operation_and_the_reopened_file_lost_nothing() {
    let (d, s, failing) = full_disk_store();
    emit(&s, "b1", &["ep"], 10);
    let due = s.due(100, &ALL).unwrap();
    assert_eq!(due.items.len(), 1);
    let mut delivered = due.items[0].delivery.clone();
    let prev = delivered.next_ms;
    delivered.state = DeliveryState::Delivered;

    // The disk fills up as the outcome is committed.
    failing.store(true, std::sync::atomic::Ordering::SeqCst);
    let e = s.record(&[(delivered.clone(), prev)], 100).unwrap_err();
    assert!(matches!(e, StoreError::Io { .. }), "{e}");
    assert!(e.is_fatal() && !e.is_corruption(), "{e}");
    let message = e.to_string();
    assert!(message.contains("No space left on device"), "{message}");
    assert!(
        message.contains(&d.path().join("t.redb").display().to_string()),
        "{message}"
    );
    assert!(message.contains("free space"), "{message}");

    // Space is back, but the engine would refuse every write until the file is reopened while
    // still answering reads: the worker would send the same delivery again and again without
    // recording it. So every operation is refused, reads included, and the daemon is told.
    failing.store(false, std::sync::atomic::Ordering::SeqCst);
    assert!(matches!(s.due(100, &ALL), Err(StoreError::Io { .. })));
    assert!(matches!(
        s.record(&[(delivered, prev)], 100),
        Err(StoreError::Io { .. })
    ));
    assert!(s.clone().fault().is_some_and(|e| e.is_fatal()));
    let waited = tokio::time::timeout(std::time::Duration::from_secs(5), s.faulted())
        .await
        .expect("faulted() returns once the fault is set");
    assert!(matches!(waited, StoreError::Io { .. }), "{waited}");

    // Restarted (reopened), the file is as its last commit left it: the delivery is still due.
    drop(s);
    let s = Store::open(&d.path().join("t.redb")).unwrap();
    let again = s.due(100, &ALL).unwrap();
    assert_eq!(again.items.len(), 1);
    assert_eq!(
        again.items[0].event.id, due.items[0].event.id,
        "same event, same id"
    );
    assert_eq!(again.items[0].delivery.state, DeliveryState::Pending);
}

#[tokio::test]
async fn the_engines_io_errors_mark_the_store_unusable() {
    let (_d, s) = store();
    let r: Result<()> = s
        .run(|_| Err(StoreError::Db(redb::Error::PreviousIo)))
        .await;
    let e = r.unwrap_err();
    assert!(matches!(e, StoreError::Io { .. }), "{e}");
    assert!(e.to_string().contains("an earlier write failed"), "{e}");
    assert!(s.counts().unwrap_err().is_fatal());
}
