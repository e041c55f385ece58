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
//! | `event_ids_v1`  | event id                     | seq                  |
//! | `endpoints_v1`  | endpoint                     | [`EndpointState`]    |
//! | `tokens_v1`     | token cache key              | [`StoredToken`]      |
//! | `dead_v1`       | (endpoint, seq)              | () dead letters      |
//! | `delivered_v1`  | (created ms, endpoint, seq)  | () for retention     |
//! | `event_refs_v1` | seq                          | deliveries left      |
//! | `orphans_v1`    | (detected ms, seq)           | () events no endpoint subscribed to, for retention |
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
const EVENT_IDS: TableDefinition<&str, u64> = TableDefinition::new("event_ids_v1");
const ENDPOINTS: TableDefinition<&str, &[u8]> = TableDefinition::new("endpoints_v1");
const TOKENS: TableDefinition<&str, &[u8]> = TableDefinition::new("tokens_v1");
const DEAD: TableDefinition<(&str, u64), ()> = TableDefinition::new("dead_v1");
const DELIVERED: TableDefinition<(i64, &str, u64), ()> = TableDefinition::new("delivered_v1");
const EVENT_REFS: TableDefinition<u64, u32> = TableDefinition::new("event_refs_v1");
const ORPHANS: TableDefinition<(i64, u64), ()> = TableDefinition::new("orphans_v1");

const NEXT_SEQ: &str = "next_seq";

/// Store failures.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database file could not be opened or created.
    #[error("cannot open state file {path} (is another pollhook running with this store.path?)")]
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
    /// Start of the latest successful poll (ms): incremental polls ask for changes since then.
    #[serde(default)]
    pub watermark_ms: Option<i64>,
    /// Start of the latest successful full poll (ms).
    #[serde(default)]
    pub last_full_ms: Option<i64>,
}

/// Persistent per-endpoint state.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndpointState {
    /// Set when deliveries are suspended (e.g. the receiver answered 410 Gone); events keep
    /// queueing until an operator re-enables the endpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disabled: Option<Disabled>,
}

/// Why and since when an endpoint is disabled.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Disabled {
    /// When (ms since epoch).
    pub since_ms: i64,
    /// Why.
    pub reason: String,
}

/// A cached access token (OAuth2 or a login flow). Kept in the state file so a restart does
/// not mint a new one (some APIs cap tokens per day). `Debug` hides the token.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredToken {
    /// The token.
    pub token: String,
    /// When it expires (ms since epoch).
    pub expires_ms: i64,
}

impl std::fmt::Debug for StoredToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "StoredToken(<redacted>, expires_ms: {})",
            self.expires_ms
        )
    }
}

/// Which deliveries to put back in their lanes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplaySelector {
    /// One event (by its id), for every endpoint or one.
    Event {
        /// The event id (`evt_...`).
        id: String,
        /// Only this endpoint.
        endpoint: Option<String>,
    },
    /// Every dead letter of one endpoint.
    DeadOf {
        /// Endpoint name.
        endpoint: String,
    },
    /// Every event detected in `[from_ms, to_ms]`, delivered or dead.
    Range {
        /// Start (ms since epoch, inclusive).
        from_ms: i64,
        /// End (ms since epoch, inclusive).
        to_ms: i64,
        /// Only this endpoint.
        endpoint: Option<String>,
    },
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
            txn.open_table(EVENT_IDS)?;
            txn.open_table(ENDPOINTS)?;
            txn.open_table(TOKENS)?;
            txn.open_table(DEAD)?;
            txn.open_table(DELIVERED)?;
            txn.open_table(EVENT_REFS)?;
            txn.open_table(ORPHANS)?;
        }
        txn.commit()?;
        Ok(Store { db: Arc::new(db) })
    }

    /// A throw-away in-memory store (for `check --probe`, which must not touch the state file
    /// a running daemon holds).
    pub fn in_memory() -> Result<Store> {
        let db = Database::builder()
            .create_with_backend(redb::backends::InMemoryBackend::new())
            .map_err(|source| StoreError::Open {
                path: PathBuf::from("<memory>"),
                source,
            })?;
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

    /// Every known booking of a source: (id, cancelled, outside the window).
    pub fn known(&self, source: &str) -> Result<Vec<Known>> {
        let txn = self.db.begin_read()?;
        let t = txn.open_table(SNAPSHOT)?;
        known_in(&t, source)
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
            let mut dead = txn.open_table(DEAD)?;
            let mut delivered = txn.open_table(DELIVERED)?;
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
                        if row.state == DeliveryState::Dead {
                            dead.insert((ep, row.seq), ())?;
                        } else {
                            delivered.insert((row.created_ms, ep, row.seq), ())?;
                        }
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

    /// Delivery rows in a given state, newest (highest event sequence) first, at most `limit`.
    /// Reads the keys of that state's index and decodes only the rows returned.
    pub fn deliveries_in(&self, state: DeliveryState, limit: usize) -> Result<Vec<Delivery>> {
        let txn = self.db.begin_read()?;
        let mut keys: Vec<(u64, String)> = Vec::new();
        match state {
            DeliveryState::Dead => {
                for entry in txn.open_table(DEAD)?.range::<(&str, u64)>(..)? {
                    let (k, _) = entry?;
                    let (ep, seq) = k.value();
                    keys.push((seq, ep.to_string()));
                }
            }
            DeliveryState::Pending => {
                for entry in txn.open_table(LANES)?.range::<(&str, &str, u64)>(..)? {
                    let (k, _) = entry?;
                    let (ep, _, seq) = k.value();
                    keys.push((seq, ep.to_string()));
                }
            }
            DeliveryState::Delivered => {
                for entry in txn.open_table(DELIVERED)?.range::<(i64, &str, u64)>(..)? {
                    let (k, _) = entry?;
                    let (_, ep, seq) = k.value();
                    keys.push((seq, ep.to_string()));
                }
            }
        }
        keys.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
        keys.truncate(limit);
        let t = txn.open_table(DELIVERIES)?;
        let mut out = Vec::with_capacity(keys.len());
        for (seq, ep) in keys {
            if let Some(v) = t.get((ep.as_str(), seq))? {
                out.push(decode("deliveries_v1", v.value())?);
            }
        }
        Ok(out)
    }

    /// The newest events, newest first, at most `limit`.
    pub fn recent_events(&self, limit: usize) -> Result<Vec<Event>> {
        let txn = self.db.begin_read()?;
        let t = txn.open_table(EVENTS)?;
        let mut out = Vec::new();
        for entry in t.range::<u64>(..)?.rev().take(limit) {
            let (_, v) = entry?;
            out.push(decode("events_v1", v.value())?);
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

    /// Row counts (each a table length: cheap whatever the queue size).
    pub fn counts(&self) -> Result<Counts> {
        use redb::ReadableTableMetadata;
        let txn = self.db.begin_read()?;
        Ok(Counts {
            events: txn.open_table(EVENTS)?.len()?,
            pending: txn.open_table(LANES)?.len()?,
            due: txn.open_table(DUE)?.len()?,
            dead: txn.open_table(DEAD)?.len()?,
        })
    }

    /// Puts finished deliveries (dead or delivered) back in their lanes with a fresh attempt
    /// budget; the event id is kept, so receivers can de-duplicate. Pending deliveries are left
    /// alone. Returns how many were requeued.
    pub fn replay(&self, selector: &ReplaySelector, now_ms: i64) -> Result<usize> {
        let txn = self.db.begin_write()?;
        let count = {
            let mut deliveries = txn.open_table(DELIVERIES)?;
            let mut lanes = txn.open_table(LANES)?;
            let mut due = txn.open_table(DUE)?;
            let events = txn.open_table(EVENTS)?;
            let ids = txn.open_table(EVENT_IDS)?;
            let mut dead = txn.open_table(DEAD)?;
            let mut delivered = txn.open_table(DELIVERED)?;
            let wanted_endpoint =
                |ep: &str, only: &Option<String>| only.as_deref().is_none_or(|o| o == ep);
            let mut chosen: Vec<Delivery> = Vec::new();
            match selector {
                ReplaySelector::Event { id, endpoint } => {
                    if let Some(seq) = ids.get(id.as_str())?.map(|v| v.value()) {
                        for entry in deliveries.range::<(&str, u64)>(..)? {
                            let (k, v) = entry?;
                            let (ep, s) = k.value();
                            if s == seq && wanted_endpoint(ep, endpoint) {
                                chosen.push(decode("deliveries_v1", v.value())?);
                            }
                        }
                    }
                }
                ReplaySelector::DeadOf { endpoint } => {
                    for entry in deliveries
                        .range((endpoint.as_str(), 0u64)..=(endpoint.as_str(), u64::MAX))?
                    {
                        let (_, v) = entry?;
                        let d: Delivery = decode("deliveries_v1", v.value())?;
                        if d.state == DeliveryState::Dead {
                            chosen.push(d);
                        }
                    }
                }
                ReplaySelector::Range {
                    from_ms,
                    to_ms,
                    endpoint,
                } => {
                    let mut seqs = std::collections::HashSet::new();
                    for entry in events.range::<u64>(..)? {
                        let (k, v) = entry?;
                        let e: Event = decode("events_v1", v.value())?;
                        if (*from_ms..=*to_ms).contains(&e.detected_ms) {
                            seqs.insert(k.value());
                        }
                    }
                    for entry in deliveries.range::<(&str, u64)>(..)? {
                        let (k, v) = entry?;
                        let (ep, s) = k.value();
                        if seqs.contains(&s) && wanted_endpoint(ep, endpoint) {
                            chosen.push(decode("deliveries_v1", v.value())?);
                        }
                    }
                }
            }
            let mut n = 0;
            for mut d in chosen {
                if d.state == DeliveryState::Pending {
                    continue;
                }
                let ep = d.endpoint.clone();
                dead.remove((ep.as_str(), d.seq))?;
                delivered.remove((d.created_ms, ep.as_str(), d.seq))?;
                d.state = DeliveryState::Pending;
                d.attempts = 0;
                d.next_ms = now_ms;
                deliveries.insert((ep.as_str(), d.seq), encode(&d).as_slice())?;
                let lane_empty = lanes
                    .range(
                        (ep.as_str(), d.lane.as_str(), 0u64)
                            ..=(ep.as_str(), d.lane.as_str(), u64::MAX),
                    )?
                    .next()
                    .is_none();
                lanes.insert((ep.as_str(), d.lane.as_str(), d.seq), ())?;
                if lane_empty {
                    due.insert((now_ms, ep.as_str(), d.seq), ())?;
                } else {
                    // Keep the lane's invariant: its first (lowest seq) pending row is the due
                    // head. A replayed older event goes before the current head.
                    let head = lanes
                        .range(
                            (ep.as_str(), d.lane.as_str(), 0u64)
                                ..=(ep.as_str(), d.lane.as_str(), u64::MAX),
                        )?
                        .next()
                        .map(|e| e.map(|(k, _)| k.value().2))
                        .transpose()?;
                    if head == Some(d.seq) {
                        demote_other_heads(&mut deliveries, &mut due, &lanes, &ep, &d.lane, d.seq)?;
                        due.insert((now_ms, ep.as_str(), d.seq), ())?;
                    }
                }
                n += 1;
            }
            n
        };
        txn.commit()?;
        Ok(count)
    }

    /// Deletes delivered deliveries created before `before_ms` and each event whose last
    /// delivery that was, then events older than that which no endpoint subscribed to; at most
    /// `max_rows` in all, oldest first. Dead letters and pending deliveries are never pruned.
    /// Work and memory are proportional to what is deleted, not to the size of the store. Call
    /// again while it returns `max_rows`.
    pub fn prune(&self, before_ms: i64, max_rows: usize) -> Result<usize> {
        let txn = self.db.begin_write()?;
        let removed = {
            let mut deliveries = txn.open_table(DELIVERIES)?;
            let mut delivered = txn.open_table(DELIVERED)?;
            let mut orphans = txn.open_table(ORPHANS)?;
            let mut refs = txn.open_table(EVENT_REFS)?;
            let mut events = txn.open_table(EVENTS)?;
            let mut ids = txn.open_table(EVENT_IDS)?;
            let mut drop_event = |seq: u64| -> Result<()> {
                if let Some(v) = events.remove(seq)? {
                    let e: Event = decode("events_v1", v.value())?;
                    ids.remove(e.id.as_str())?;
                }
                Ok(())
            };
            let mut doomed: Vec<(i64, String, u64)> = Vec::new();
            for entry in delivered.range((i64::MIN, "", 0u64)..(before_ms, "", 0u64))? {
                if doomed.len() >= max_rows {
                    break;
                }
                let (k, _) = entry?;
                let (at, ep, seq) = k.value();
                doomed.push((at, ep.to_string(), seq));
            }
            for (at, ep, seq) in &doomed {
                delivered.remove((*at, ep.as_str(), *seq))?;
                deliveries.remove((ep.as_str(), *seq))?;
                let left = refs
                    .get(*seq)?
                    .map(|v| v.value())
                    .unwrap_or(1)
                    .saturating_sub(1);
                if left > 0 {
                    refs.insert(*seq, left)?;
                } else {
                    refs.remove(*seq)?;
                    drop_event(*seq)?;
                }
            }
            let mut unwatched: Vec<(i64, u64)> = Vec::new();
            for entry in orphans.range((i64::MIN, 0u64)..(before_ms, 0u64))? {
                if doomed.len() + unwatched.len() >= max_rows {
                    break;
                }
                unwatched.push(entry?.0.value());
            }
            for (at, seq) in &unwatched {
                orphans.remove((*at, *seq))?;
                drop_event(*seq)?;
            }
            doomed.len() + unwatched.len()
        };
        txn.commit()?;
        Ok(removed)
    }

    /// Every endpoint's persistent state.
    pub fn endpoint_states(&self) -> Result<Vec<(String, EndpointState)>> {
        let txn = self.db.begin_read()?;
        let t = txn.open_table(ENDPOINTS)?;
        let mut out = Vec::new();
        for entry in t.range::<&str>(..)? {
            let (k, v) = entry?;
            out.push((k.value().to_string(), decode("endpoints_v1", v.value())?));
        }
        Ok(out)
    }

    /// Disables (with a reason) or re-enables an endpoint. Re-enabling makes its waiting lane
    /// heads due now.
    pub fn set_endpoint_disabled(
        &self,
        endpoint: &str,
        disabled: Option<Disabled>,
        now_ms: i64,
    ) -> Result<()> {
        let txn = self.db.begin_write()?;
        {
            let mut t = txn.open_table(ENDPOINTS)?;
            let mut state: EndpointState = match t.get(endpoint)? {
                Some(v) => decode("endpoints_v1", v.value())?,
                None => EndpointState::default(),
            };
            let enabling = disabled.is_none() && state.disabled.is_some();
            state.disabled = disabled;
            t.insert(endpoint, encode(&state).as_slice())?;
            if enabling {
                let mut due = txn.open_table(DUE)?;
                let mut deliveries = txn.open_table(DELIVERIES)?;
                let mut heads: Vec<(i64, u64)> = Vec::new();
                for entry in due.range::<(i64, &str, u64)>(..)? {
                    let (k, _) = entry?;
                    let (at, ep, seq) = k.value();
                    if ep == endpoint && at > now_ms {
                        heads.push((at, seq));
                    }
                }
                for (at, seq) in heads {
                    due.remove((at, endpoint, seq))?;
                    due.insert((now_ms, endpoint, seq), ())?;
                    let row: Option<Delivery> = match deliveries.get((endpoint, seq))? {
                        Some(v) => Some(decode("deliveries_v1", v.value())?),
                        None => None,
                    };
                    if let Some(mut d) = row {
                        d.next_ms = now_ms;
                        deliveries.insert((endpoint, seq), encode(&d).as_slice())?;
                    }
                }
            }
        }
        txn.commit()?;
        Ok(())
    }

    /// A cached token.
    pub fn token(&self, key: &str) -> Result<Option<StoredToken>> {
        let txn = self.db.begin_read()?;
        let t = txn.open_table(TOKENS)?;
        match t.get(key)? {
            Some(v) => Ok(Some(decode("tokens_v1", v.value())?)),
            None => Ok(None),
        }
    }

    /// Caches a token (or forgets it with `None`).
    pub fn set_token(&self, key: &str, token: Option<&StoredToken>) -> Result<()> {
        let txn = self.db.begin_write()?;
        {
            let mut t = txn.open_table(TOKENS)?;
            match token {
                Some(tok) => {
                    t.insert(key, encode(tok).as_slice())?;
                }
                None => {
                    t.remove(key)?;
                }
            }
        }
        txn.commit()?;
        Ok(())
    }
}

/// Removes from the due index any head of this lane other than `new_head` (the lane's invariant
/// is a single due head), keeping their rows pending.
fn demote_other_heads(
    deliveries: &mut Table<'_, (&str, u64), &[u8]>,
    due: &mut Table<'_, (i64, &str, u64), ()>,
    lanes: &Table<'_, (&str, &str, u64), ()>,
    ep: &str,
    lane: &str,
    new_head: u64,
) -> Result<()> {
    for entry in lanes.range((ep, lane, 0u64)..=(ep, lane, u64::MAX))? {
        let (k, _) = entry?;
        let seq = k.value().2;
        if seq == new_head {
            continue;
        }
        let row: Option<Delivery> = match deliveries.get((ep, seq))? {
            Some(v) => Some(decode("deliveries_v1", v.value())?),
            None => None,
        };
        if let Some(d) = row {
            due.remove((d.next_ms, ep, seq))?;
        }
    }
    Ok(())
}

/// A known booking's id and flags.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Known {
    /// Booking id.
    pub id: String,
    /// Cancelled when last seen.
    pub cancelled: bool,
    /// Confirmed to have left the polled window.
    pub outside: bool,
}

fn known_in(
    table: &impl ReadableTable<(&'static str, &'static str), &'static [u8]>,
    src: &str,
) -> Result<Vec<Known>> {
    let mut out = Vec::new();
    for entry in table.range((src, "")..)? {
        let (k, v) = entry?;
        let (s, id) = k.value();
        if s != src {
            break;
        }
        let b: StoredBooking = decode("snapshot_v1", v.value())?;
        out.push(Known {
            id: id.to_string(),
            cancelled: b.cancelled,
            outside: b.outside,
        });
    }
    Ok(out)
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
    // Due now, unless its own first attempt is still ahead (an endpoint's initial delay).
    row.next_ms = row.next_ms.max(now_ms);
    deliveries.insert((ep, next), encode(&row).as_slice())?;
    due.insert((row.next_ms, ep, next), ())?;
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
    event_ids: Table<'t, &'static str, u64>,
    event_refs: Table<'t, u64, u32>,
    orphans: Table<'t, (i64, u64), ()>,
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
            event_ids: txn.open_table(EVENT_IDS)?,
            event_refs: txn.open_table(EVENT_REFS)?,
            orphans: txn.open_table(ORPHANS)?,
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

    /// Every known booking of this source: (id, cancelled, outside the window).
    pub fn known(&self) -> Result<Vec<Known>> {
        known_in(&self.snapshot, &self.source)
    }

    /// Creates an event (id and sequence fixed now) and one pending delivery per endpoint, in
    /// this transaction.
    pub fn emit(
        &mut self,
        kind: EventKind,
        booking_id: &str,
        booking: Value,
        changes: Vec<FieldChange>,
        endpoints: &[(&str, i64)],
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
        self.event_ids.insert(event.id.as_str(), seq)?;
        if endpoints.is_empty() {
            // Nobody subscribes to it: it ages out of the history on its own.
            self.orphans.insert((event.detected_ms, seq), ())?;
        } else {
            self.event_refs.insert(seq, endpoints.len() as u32)?;
        }
        for (ep, first_delay_ms) in endpoints {
            let mut d = Delivery::new(ep, &event);
            d.next_ms += first_delay_ms;
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
        let eps: Vec<(&str, i64)> = eps.iter().map(|e| (*e, 0)).collect();
        s.write_poll("src", now, |t| {
            t.emit(
                EventKind::New,
                booking,
                json!({"id": booking}),
                vec![],
                &eps,
            )?;
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
                    outside: false,
                },
            )?;
            t.emit(EventKind::New, "b1", json!({}), vec![], &[("ep", 0)])?;
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
        let sel = ReplaySelector::Event {
            id: ev.id.clone(),
            endpoint: None,
        };
        assert_eq!(s.replay(&sel, 20).unwrap(), 1);
        assert_eq!(s.replay(&sel, 20).unwrap(), 0, "already pending");
        let again = s.due(20, 10, &no_skip).unwrap().items.remove(0);
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
        for item in s.due(10, 10, &no_skip).unwrap().items {
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
            outside: false,
        };
        s.write_poll("a", 1, |t| t.put("1", &b)).unwrap();
        s.write_poll("b", 1, |t| t.put("2", &b)).unwrap();
        s.write_poll("ab", 1, |t| t.put("3", &b)).unwrap();
        let known = s.write_poll("a", 1, |t| t.known()).unwrap();
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
}
