//! The redb store: ALL redb code lives here. Opening the state file and the table layout (this
//! file), row types and codecs, the poll transaction, the delivery queue, and source, endpoint and
//! token state, one file each. No other module sees a redb type.
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

mod codec;
mod poll;
mod queue;
mod rows;
mod state;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use redb::{Database, TableDefinition};

pub use poll::{Known, PollTxn};
pub use queue::{Counts, DueBatch, DueItem, ReplaySelector};
pub use rows::{Disabled, EndpointState, SourceState, StoredBooking};

pub(super) const SNAPSHOT: TableDefinition<(&str, &str), &[u8]> =
    TableDefinition::new("snapshot_v1");
pub(super) const SOURCES: TableDefinition<&str, &[u8]> = TableDefinition::new("sources_v1");
pub(super) const EVENTS: TableDefinition<u64, &[u8]> = TableDefinition::new("events_v1");
pub(super) const DELIVERIES: TableDefinition<(&str, u64), &[u8]> =
    TableDefinition::new("deliveries_v1");
pub(super) const LANES: TableDefinition<(&str, &str, u64), ()> = TableDefinition::new("lanes_v1");
pub(super) const DUE: TableDefinition<(i64, &str, u64), ()> = TableDefinition::new("due_v1");
pub(super) const META: TableDefinition<&str, u64> = TableDefinition::new("meta_v1");
pub(super) const EVENT_IDS: TableDefinition<&str, u64> = TableDefinition::new("event_ids_v1");
pub(super) const ENDPOINTS: TableDefinition<&str, &[u8]> = TableDefinition::new("endpoints_v1");
pub(super) const TOKENS: TableDefinition<&str, &[u8]> = TableDefinition::new("tokens_v1");
pub(super) const DEAD: TableDefinition<(&str, u64), ()> = TableDefinition::new("dead_v1");
pub(super) const DELIVERED: TableDefinition<(i64, &str, u64), ()> =
    TableDefinition::new("delivered_v1");
pub(super) const EVENT_REFS: TableDefinition<u64, u32> = TableDefinition::new("event_refs_v1");
pub(super) const ORPHANS: TableDefinition<(i64, u64), ()> = TableDefinition::new("orphans_v1");

pub(super) const NEXT_SEQ: &str = "next_seq";

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
    /// A value could not be encoded for storage (never expected; reported, not hidden).
    #[error("cannot encode a row for {table}: {reason}")]
    Encode {
        /// Table name.
        table: &'static str,
        /// Encoder message.
        reason: String,
    },
    /// The blocking task running a store operation panicked or was cancelled.
    #[error("store task failed: {0}")]
    Task(String),
}

impl From<crate::json::JsonError> for StoreError {
    fn from(e: crate::json::JsonError) -> Self {
        StoreError::Encode {
            table: "snapshot_v1",
            reason: e.to_string(),
        }
    }
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

pub(crate) type Result<T> = std::result::Result<T, StoreError>;

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
}

#[cfg(test)]
mod tests;
