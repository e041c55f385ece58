//! The redb store: ALL redb code lives here. Snapshots, events, deliveries, the per-booking lanes
//! and the due index, plus per-source state. No other module sees a redb type.
//!
//! Tables (values are serde_json bytes of this crate's own types, so redb's type encodings can
//! never reach our data; names carry a version suffix for future migrations):
//!
//! | table           | key                          | value                |
//! |-----------------|------------------------------|----------------------|
//! | `snapshot_v1`   | (source, booking id)         | [`StoredBooking`]    |
//! | `sources_v1`    | source                       | [`SourceState`]      |
//! | `events_v1`     | seq                          | [`Event`]            |
//! | `deliveries_v1` | (endpoint, seq)              | [`Delivery`]         |
//! | `lanes_v1`      | (endpoint, lane, seq)        | () pending, in order |
//! | `due_v1`        | (due ms, endpoint, seq)      | () lane heads only   |
//! | `meta_v1`       | name                         | u64                  |
//!
//! Invariants: a pending delivery is in `lanes_v1`; exactly the first pending delivery of each
//! (endpoint, lane) is in `due_v1`, under the `next_ms` its row carries. That is what keeps one
//! booking's events in order per endpoint while other bookings flow past a failing one.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use redb::{Database, ReadableDatabase, ReadableTable, Table, TableDefinition, WriteTransaction};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::diff::StoredBooking;
use crate::outbox::{Delivery, DeliveryState, Event, EventKind, FieldChange};

const SNAPSHOT: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("snapshot_v1");
const SOURCES: TableDefinition<&str, &[u8]> = TableDefinition::new("sources_v1");
const EVENTS: TableDefinition<u64, &[u8]> = TableDefinition::new("events_v1");
const DELIVERIES: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("deliveries_v1");
const LANES: TableDefinition<(&str, &str, u64), ()> = TableDefinition::new("lanes_v1");
const DUE: TableDefinition<(i64, &str, u64), ()> = TableDefinition::new("due_v1");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta_v1");

const NEXT_SEQ: &str = "next_seq";

/// Store failures.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database file could not be opened or created.
    #[error("cannot open state file {path}: {source}")]
    Open {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: redb::DatabaseError,
    },
    /// A redb operation failed.
    #[error("state database error: {0}")]
    Db(#[from] redb::Error),
    /// A stored row could not be decoded.
    #[error("corrupt row in {table}: {reason}")]
    Corrupt {
        /// Table name.
        table: &'static str,
        /// Decoder message.
        reason: String,
    },
    /// The blocking task running a store operation panicked or was cancelled.
    #[error("store task failed: {0}")]
    Task(String),
}

macro_rules! db_err {
    ($($t:ty),*) => {$(
        impl From<$t> for StoreError {
            fn from(e: $t) -> Self { StoreError::Db(e.into()) }
        }
    )*};
}
db_err!(
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError
);

type Result<T> = std::result::Result<T, StoreError>;

/// What the store remembers about a source between polls.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceState {
    /// Successful polls committed so far.
    pub polls: u64,
    /// When the first successful poll was committed (ms).
    pub first_poll_ms: i64,
    /// When the latest successful poll was committed (ms).
    pub last_poll_ms: i64,
}

/// A due delivery with its event.
#[derive(Debug, Clone)]
pub struct DueItem {
    /// The delivery row.
    pub delivery: Delivery,
    /// The event it carries.
    pub event: Arc<Event>,
}

/// Result of a due query.
#[derive(Debug, Clone, Default)]
pub struct DueBatch {
    /// Due now, oldest first.
    pub items: Vec<DueItem>,
    /// The earliest later due time among lane heads not skipped, if any.
    pub next_due_ms: Option<i64>,
}

/// Counts for health and metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Counts {
    /// Events stored.
    pub events: u64,
    /// Deliveries pending (queued or retrying).
    pub pending: u64,
    /// Lane heads waiting in the due index.
    pub due: u64,
    /// Dead letters.
    pub dead: u64,
}

fn encode<T: Serialize>(v: &T) -> Vec<u8> {
    // Our own plain data types always serialise.
    serde_json::to_vec(v).unwrap_or_default()
}

fn decode<T: DeserializeOwned>(table: &'static str, bytes: &[u8]) -> Result<T> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::Corrupt {
        table,
        reason: e.to_string(),
    })
}

/// The redb-backed state. Cheap to clone; every method is blocking: call it from
/// `tokio::task::spawn_blocking` (see [`Store::run`]).
#[derive(Clone)]
pub struct Store {
    db: Arc<Database>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Store")
    }
}

impl Store {
    /// Opens (or creates) the state file and its tables.
    pub fn open(path: &Path) -> Result<Store> {
        let db = Database::create(path).map_err(|source| StoreError::Open {
            path: path.to_path_buf(),
            source,
        })?;
        let txn = db.begin_write()?;
        {
            txn.open_table(SNAPSHOT)?;
            txn.open_table(SOURCES)?;
            txn.open_table(EVENTS)?;
            txn.open_table(DELIVERIES)?;
            txn.open_table(LANES)?;
            txn.open_table(DUE)?;
            txn.open_table(META)?;
        }
        txn.commit()?;
        Ok(Store { db: Arc::new(db) })
    }

    /// Runs a blocking store operation on tokio's blocking pool.
    pub async fn run<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Store) -> Result<T> + Send + 'static,
    {
        let store = self.clone();
        tokio::task::spawn_blocking(move || f(&store))
            .await
            .map_err(|e| StoreError::Task(e.to_string()))?
    }

    /// Runs `f` inside ONE write transaction for `source`: snapshot rows, events and deliveries
    /// written through the [`PollTxn`] commit together when `f` returns `Ok`, or not at all.
    pub fn write_poll<T>(
        &self,
        source: &str,
        now_ms: i64,
        f: impl FnOnce(&mut PollTxn<'_>) -> Result<T>,
    ) -> Result<T> {
        let txn = self.db.begin_write()?;
        let out = {
            let mut pt = PollTxn::new(&txn, source, now_ms)?;
            f(&mut pt)?
        };
        txn.commit()?;
        Ok(out)
    }

    /// The stored state of a source, if it ever completed a poll.
    pub fn source_state(&self, source: &str) -> Result<Option<SourceState>> {
        let txn = self.db.begin_read()?;
        let t = txn.open_table(SOURCES)?;
        match t.get(source)? {
            Some(v) => Ok(Some(decode("sources_v1", v.value())?)),
            None => Ok(None),
        }
    }

    /// The stored snapshot of one booking.
    pub fn booking(&self, source: &str, id: &str) -> Result<Option<StoredBooking>> {
        let txn = self.db.begin_read()?;
        let t = txn.open_table(SNAPSHOT)?;
        match t.get((source, id))? {
            Some(v) => Ok(Some(decode("snapshot_v1", v.value())?)),
            None => Ok(None),
        }
    }

    /// Lane heads due at `now_ms`, at most `limit`, skipping `skip` (in flight, or endpoints
    /// that are disabled or no longer configured).
    pub fn due(
        &self,
        now_ms: i64,
        limit: usize,
        skip: &dyn Fn(&str, u64) -> bool,
    ) -> Result<DueBatch> {
        let txn = self.db.begin_read()?;
        let due = txn.open_table(DUE)?;
        let deliveries = txn.open_table(DELIVERIES)?;
        let events = txn.open_table(EVENTS)?;
        let mut batch = DueBatch::default();
        let mut event_cache: std::collections::HashMap<u64, Arc<Event>> = Default::default();
        for entry in due.range::<(i64, &str, u64)>(..)? {
            let (k, _) = entry?;
            let (at, endpoint, seq) = k.value();
            if skip(endpoint, seq) {
                continue;
            }
            if at > now_ms {
                batch.next_due_ms = Some(at);
                break;
            }
            if batch.items.len() >= limit {
                batch.next_due_ms = Some(at);
                break;
            }
            let Some(row) = deliveries.get((endpoint, seq))? else {
                continue;
            };
            let delivery: Delivery = decode("deliveries_v1", row.value())?;
            let event = match event_cache.get(&seq) {
                Some(e) => e.clone(),
                None => {
                    let Some(ev) = events.get(seq)? else { continue };
                    let e: Arc<Event> = Arc::new(decode("events_v1", ev.value())?);
                    event_cache.insert(seq, e.clone());
                    e
                }
            };
            batch.items.push(DueItem { delivery, event });
        }
        Ok(batch)
    }

    /// Writes a batch of attempt outcomes in ONE transaction (group commit). Each entry is the
    /// delivery row after the attempt; `prev_next_ms` is the due time it was fetched under.
    /// Finished deliveries leave their lane and promote the lane's next event (due at `now_ms`).
    pub fn record(&self, outcomes: &[(Delivery, i64)], now_ms: i64) -> Result<usize> {
        let txn = self.db.begin_write()?;
        let mut written = 0;
        {
            let mut deliveries = txn.open_table(DELIVERIES)?;
            let mut lanes = txn.open_table(LANES)?;
            let mut due = txn.open_table(DUE)?;
            for (row, prev_next_ms) in outcomes {
                let ep = row.endpoint.as_str();
                // Only a row still due under the time we fetched it may be updated: anything
                // else was changed meanwhile (replayed, re-enabled) and wins.
                if due.remove((*prev_next_ms, ep, row.seq))?.is_none() {
                    continue;
                }
                written += 1;
                deliveries.insert((ep, row.seq), encode(row).as_slice())?;
                match row.state {
                    DeliveryState::Pending => {
                        due.insert((row.next_ms, ep, row.seq), ())?;
                    }
                    DeliveryState::Delivered | DeliveryState::Dead => {
                        lanes.remove((ep, row.lane.as_str(), row.seq))?;
                        promote(&mut lanes, &mut deliveries, &mut due, ep, &row.lane, now_ms)?;
                    }
                }
            }
        }
        txn.commit()?;
        Ok(written)
    }

    /// Every delivery row of one event (all endpoints), for tests and the admin API.
    pub fn deliveries_of(&self, seq: u64) -> Result<Vec<Delivery>> {
        let txn = self.db.begin_read()?;
        let t = txn.open_table(DELIVERIES)?;
        let mut out = Vec::new();
        for entry in t.range::<(&str, u64)>(..)? {
            let (k, v) = entry?;
            if k.value().1 == seq {
                out.push(decode("deliveries_v1", v.value())?);
            }
        }
        Ok(out)
    }

    /// Delivery rows in a given state, newest first, at most `limit`.
    pub fn deliveries_in(&self, state: DeliveryState, limit: usize) -> Result<Vec<Delivery>> {
        let txn = self.db.begin_read()?;
        let t = txn.open_table(DELIVERIES)?;
        let mut out = Vec::new();
        for entry in t.range::<(&str, u64)>(..)?.rev() {
            let (_, v) = entry?;
            let d: Delivery = decode("deliveries_v1", v.value())?;
            if d.state == state {
                out.push(d);
                if out.len() >= limit {
                    break;
                }
            }
        }
        Ok(out)
    }

    /// One event by sequence number.
    pub fn event(&self, seq: u64) -> Result<Option<Event>> {
        let txn = self.db.begin_read()?;
        let t = txn.open_table(EVENTS)?;
        match t.get(seq)? {
            Some(v) => Ok(Some(decode("events_v1", v.value())?)),
            None => Ok(None),
        }
    }

    /// Every event, oldest first (tests and small inspections).
    pub fn events(&self) -> Result<Vec<Event>> {
        let txn = self.db.begin_read()?;
        let t = txn.open_table(EVENTS)?;
        let mut out = Vec::new();
        for entry in t.range::<u64>(..)? {
            let (_, v) = entry?;
            out.push(decode("events_v1", v.value())?);
        }
        Ok(out)
    }

    /// Row counts.
    pub fn counts(&self) -> Result<Counts> {
        use redb::ReadableTableMetadata;
        let txn = self.db.begin_read()?;
        let mut dead = 0;
        let deliveries = txn.open_table(DELIVERIES)?;
        for entry in deliveries.range::<(&str, u64)>(..)? {
            let (_, v) = entry?;
            let d: Delivery = decode("deliveries_v1", v.value())?;
            if d.state == DeliveryState::Dead {
                dead += 1;
            }
        }
        Ok(Counts {
            events: txn.open_table(EVENTS)?.len()?,
            pending: txn.open_table(LANES)?.len()?,
            due: txn.open_table(DUE)?.len()?,
            dead,
        })
    }

    /// Puts a dead delivery back in its lane with a fresh attempt budget; the event id is kept.
    /// Returns false if there is no such dead delivery.
    pub fn replay(&self, endpoint: &str, seq: u64, now_ms: i64) -> Result<bool> {
        let txn = self.db.begin_write()?;
        let replayed = {
            let mut deliveries = txn.open_table(DELIVERIES)?;
            let mut lanes = txn.open_table(LANES)?;
            let mut due = txn.open_table(DUE)?;
            let row: Option<Delivery> = match deliveries.get((endpoint, seq))? {
                Some(v) => Some(decode("deliveries_v1", v.value())?),
                None => None,
            };
            match row {
                Some(mut d) if d.state == DeliveryState::Dead => {
                    d.state = DeliveryState::Pending;
                    d.attempts = 0;
                    d.next_ms = now_ms;
                    deliveries.insert((endpoint, seq), encode(&d).as_slice())?;
                    let lane_empty = lanes
                        .range(
                            (endpoint, d.lane.as_str(), 0u64)
                                ..=(endpoint, d.lane.as_str(), u64::MAX),
                        )?
                        .next()
                        .is_none();
                    lanes.insert((endpoint, d.lane.as_str(), seq), ())?;
                    if lane_empty {
                        due.insert((now_ms, endpoint, seq), ())?;
                    }
                    true
                }
                _ => false,
            }
        };
        txn.commit()?;
        Ok(replayed)
    }
}

fn promote(
    lanes: &mut Table<'_, (&str, &str, u64), ()>,
    deliveries: &mut Table<'_, (&str, u64), &[u8]>,
    due: &mut Table<'_, (i64, &str, u64), ()>,
    ep: &str,
    lane: &str,
    now_ms: i64,
) -> Result<()> {
    let next = match lanes.range((ep, lane, 0u64)..=(ep, lane, u64::MAX))?.next() {
        Some(entry) => entry?.0.value().2,
        None => return Ok(()),
    };
    let mut row: Delivery = match deliveries.get((ep, next))? {
        Some(v) => decode("deliveries_v1", v.value())?,
        None => return Ok(()),
    };
    row.next_ms = now_ms;
    deliveries.insert((ep, next), encode(&row).as_slice())?;
    due.insert((now_ms, ep, next), ())?;
    Ok(())
}

/// The tables of one poll's write transaction, scoped to one source.
pub struct PollTxn<'t> {
    source: String,
    now_ms: i64,
    snapshot: Table<'t, (&'static str, &'static str), &'static [u8]>,
    sources: Table<'t, &'static str, &'static [u8]>,
    events: Table<'t, u64, &'static [u8]>,
    deliveries: Table<'t, (&'static str, u64), &'static [u8]>,
    lanes: Table<'t, (&'static str, &'static str, u64), ()>,
    due: Table<'t, (i64, &'static str, u64), ()>,
    meta: Table<'t, &'static str, u64>,
    emitted: Vec<Event>,
}

impl<'t> PollTxn<'t> {
    fn new(txn: &'t WriteTransaction, source: &str, now_ms: i64) -> Result<Self> {
        Ok(PollTxn {
            source: source.to_string(),
            now_ms,
            snapshot: txn.open_table(SNAPSHOT)?,
            sources: txn.open_table(SOURCES)?,
            events: txn.open_table(EVENTS)?,
            deliveries: txn.open_table(DELIVERIES)?,
            lanes: txn.open_table(LANES)?,
            due: txn.open_table(DUE)?,
            meta: txn.open_table(META)?,
            emitted: Vec::new(),
        })
    }

    /// The source's state before this poll.
    pub fn state(&self) -> Result<Option<SourceState>> {
        match self.sources.get(self.source.as_str())? {
            Some(v) => Ok(Some(decode("sources_v1", v.value())?)),
            None => Ok(None),
        }
    }

    /// Records the source's state after this poll.
    pub fn set_state(&mut self, state: &SourceState) -> Result<()> {
        self.sources
            .insert(self.source.as_str(), encode(state).as_slice())?;
        Ok(())
    }

    /// The stored booking with this id.
    pub fn get(&self, id: &str) -> Result<Option<StoredBooking>> {
        match self.snapshot.get((self.source.as_str(), id))? {
            Some(v) => Ok(Some(decode("snapshot_v1", v.value())?)),
            None => Ok(None),
        }
    }

    /// Stores a booking's new state.
    pub fn put(&mut self, id: &str, booking: &StoredBooking) -> Result<()> {
        self.snapshot
            .insert((self.source.as_str(), id), encode(booking).as_slice())?;
        Ok(())
    }

    /// Every known booking of this source: (id, cancelled).
    pub fn known(&self) -> Result<Vec<(String, bool)>> {
        let src = self.source.as_str();
        let mut out = Vec::new();
        for entry in self.snapshot.range((src, "")..)? {
            let (k, v) = entry?;
            let (s, id) = k.value();
            if s != src {
                break;
            }
            let b: StoredBooking = decode("snapshot_v1", v.value())?;
            out.push((id.to_string(), b.cancelled));
        }
        Ok(out)
    }

    /// Creates an event (id and sequence fixed now) and one pending delivery per endpoint, in
    /// this transaction.
    pub fn emit(
        &mut self,
        kind: EventKind,
        booking_id: &str,
        booking: Value,
        changes: Vec<FieldChange>,
        endpoints: &[&str],
    ) -> Result<()> {
        let seq = self.meta.get(NEXT_SEQ)?.map(|v| v.value()).unwrap_or(1);
        self.meta.insert(NEXT_SEQ, seq + 1)?;
        let event = Event {
            id: format!("evt_{}", uuid::Uuid::now_v7().simple()),
            seq,
            kind,
            source: self.source.clone(),
            booking_id: booking_id.to_string(),
            detected_ms: self.now_ms,
            booking,
            changes,
        };
        self.events.insert(seq, encode(&event).as_slice())?;
        for ep in endpoints {
            let d = Delivery::new(ep, &event);
            self.deliveries.insert((*ep, seq), encode(&d).as_slice())?;
            let lane = d.lane.as_str();
            let lane_empty = self
                .lanes
                .range((*ep, lane, 0u64)..=(*ep, lane, u64::MAX))?
                .next()
                .is_none();
            self.lanes.insert((*ep, lane, seq), ())?;
            if lane_empty {
                self.due.insert((d.next_ms, *ep, seq), ())?;
            }
        }
        self.emitted.push(event);
        Ok(())
    }

    /// The events emitted so far in this transaction.
    pub fn emitted(&self) -> &[Event] {
        &self.emitted
    }

    /// Takes the emitted events (to announce them after commit).
    pub fn take_emitted(&mut self) -> Vec<Event> {
        std::mem::take(&mut self.emitted)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(&dir.path().join("t.redb")).unwrap();
        (dir, s)
    }

    fn emit(s: &Store, booking: &str, eps: &[&str], now: i64) -> Vec<Event> {
        s.write_poll("src", now, |t| {
            t.emit(EventKind::New, booking, json!({"id": booking}), vec![], eps)?;
            Ok(t.take_emitted())
        })
        .unwrap()
    }

    fn no_skip(_: &str, _: u64) -> bool {
        false
    }

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
        let due = s.due(100, 10, &no_skip).unwrap();
        let seqs: Vec<u64> = due.items.iter().map(|i| i.event.seq).collect();
        assert_eq!(seqs, [1, 3], "b1's second event waits behind its first");
        finish(&s, &due.items[0], DeliveryState::Delivered, 100);
        let due = s.due(100, 10, &no_skip).unwrap();
        let seqs: Vec<u64> = due.items.iter().map(|i| i.event.seq).collect();
        assert_eq!(seqs, [3, 2]);
    }

    #[test]
    fn retry_moves_the_head_in_time_without_blocking_other_lanes() {
        let (_d, s) = store();
        emit(&s, "b1", &["ep"], 10);
        emit(&s, "b2", &["ep"], 10);
        let due = s.due(10, 10, &no_skip).unwrap();
        let mut d = due.items[0].delivery.clone();
        d.attempts = 1;
        d.next_ms = 5000;
        s.record(&[(d, 10)], 10).unwrap();
        let due = s.due(10, 10, &no_skip).unwrap();
        assert_eq!(due.items.len(), 1);
        assert_eq!(due.items[0].event.booking_id, "b2");
        assert_eq!(due.next_due_ms, Some(5000));
        assert_eq!(s.due(5000, 10, &no_skip).unwrap().items.len(), 2);
    }

    #[test]
    fn a_failed_poll_commits_nothing() {
        let (_d, s) = store();
        let r: Result<()> = s.write_poll("src", 1, |t| {
            t.put(
                "b1",
                &StoredBooking {
                    hash: "h".into(),
                    cancelled: false,
                    doc: json!({}),
                },
            )?;
            t.emit(EventKind::New, "b1", json!({}), vec![], &["ep"])?;
            Err(StoreError::Task("boom".into()))
        });
        assert!(r.is_err());
        assert!(s.booking("src", "b1").unwrap().is_none());
        assert!(s.events().unwrap().is_empty());
        assert!(s.due(100, 10, &no_skip).unwrap().items.is_empty());
    }

    #[test]
    fn stale_outcomes_are_ignored() {
        let (_d, s) = store();
        emit(&s, "b1", &["ep"], 10);
        let item = s.due(10, 10, &no_skip).unwrap().items.remove(0);
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
        let item = s.due(10, 10, &no_skip).unwrap().items.remove(0);
        finish(&s, &item, DeliveryState::Dead, 10);
        assert_eq!(s.counts().unwrap().dead, 1);
        assert!(s.due(10, 10, &no_skip).unwrap().items.is_empty());
        assert!(s.replay("ep", ev.seq, 20).unwrap());
        assert!(!s.replay("ep", ev.seq, 20).unwrap());
        let again = s.due(20, 10, &no_skip).unwrap().items.remove(0);
        assert_eq!(again.event.id, ev.id);
        assert_eq!(again.delivery.attempts, 0);
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
        let due = s.due(10, 10, &no_skip).unwrap();
        assert_eq!(due.items.len(), 2);
        assert!(due.items.iter().all(|i| i.event.id == ev.id));
        let next = emit(&s, "b2", &["a"], 11).remove(0);
        assert_eq!(next.seq, ev.seq + 1);
    }

    #[test]
    fn known_lists_only_this_source() {
        let (_d, s) = store();
        let b = StoredBooking {
            hash: "h".into(),
            cancelled: false,
            doc: json!({}),
        };
        s.write_poll("a", 1, |t| t.put("1", &b)).unwrap();
        s.write_poll("b", 1, |t| t.put("2", &b)).unwrap();
        s.write_poll("ab", 1, |t| t.put("3", &b)).unwrap();
        let known = s.write_poll("a", 1, |t| t.known()).unwrap();
        assert_eq!(known, vec![("1".to_string(), false)]);
    }
}
