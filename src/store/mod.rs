//! The redb store: ALL redb code lives here. Opening the state file, its table layout and
//! schema version (this file), row codecs ([`codec`]), the snapshot and its documents
//! (`snapshot`), a poll's staging area and its promotion (`poll`), the delivery queue (`queue`),
//! source, endpoint and token state (`state`), and upgrading older state files (`migrate`). No
//! other module sees a redb type.
//!
//! Tables (names carry a version suffix; values are this crate's own encodings):
//!
//! | table           | key                          | value                |
//! |-----------------|------------------------------|----------------------|
//! | `snapshot_v2`   | source NUL booking id        | [`SnapRow`]: fingerprint, flags, document generation (binary, versioned) |
//! | `docs_v2`       | (source, booking id, gen)    | the booking document, zstd with the source's dictionary |
//! | `dicts_v1`      | (source, dictionary id)      | a zstd dictionary trained on the source's documents |
//! | `staging_v1`    | source NUL booking id        | a change staged by a running poll (binary, versioned) |
//! | `seen_v1`       | (source, page)               | ids seen on a staged page (packed hashes) |
//! | `progress_v1`   | source                       | the running poll's checkpoint (versioned blob) |
//! | `sources_v1`    | source                       | [`SourceState`]      |
//! | `events_v2`     | seq                          | an [`Event`](crate::outbox::Event), binary (versioned), the booking as its JSON |
//! | `deliveries_v2` | (endpoint, seq)              | a [`Delivery`](crate::outbox::Delivery), binary (versioned) |
//! | `lanes_v1`      | (endpoint, lane, seq)        | () pending, in order |
//! | `due_v2`        | (endpoint, due ms, seq)      | () lane heads only   |
//! | `meta_v1`       | name                         | u64 (sequence, generation and schema counters) |
//! | `event_ids_v1`  | event id                     | seq                  |
//! | `endpoints_v1`  | endpoint                     | [`EndpointState`]    |
//! | `tokens_v1`     | token cache key              | a cached token       |
//! | `dead_v1`       | (endpoint, seq)              | () dead letters      |
//! | `delivered_v1`  | (created ms, endpoint, seq)  | () for retention     |
//! | `event_refs_v1` | seq                          | deliveries left      |
//! | `orphans_v1`    | (detected ms, seq)           | () events no endpoint subscribed to, for retention |
//!
//! Invariants: a pending delivery is in `lanes_v1`; exactly the first pending delivery of each
//! (endpoint, lane) is in `due_v2`, under the `next_ms` its row carries. That is what keeps one
//! booking's events in order per endpoint while other bookings flow past a failing one.

mod codec;
mod migrate;
mod poll;
mod queue;
mod rows;
mod snapshot;
mod state;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use redb::{Database, ReadableDatabase, TableDefinition};

pub use codec::{SnapRow, Staged, StagedOp};
pub use poll::{PageOp, Promotion, REPORTED_EVENTS};
pub use queue::{Counts, DueBatch, DueItem, ReplaySelector};
pub use rows::{Disabled, EndpointState, SourceState};
pub use snapshot::{Known, SnapshotReader, StoredBooking};
pub use state::TokenPeek;

pub(super) const SNAPSHOT: TableDefinition<&[u8], &[u8]> = TableDefinition::new("snapshot_v2");
pub(super) const DOCS: TableDefinition<(&str, &str, u32), &[u8]> = TableDefinition::new("docs_v2");
pub(super) const DICTS: TableDefinition<(&str, u32), &[u8]> = TableDefinition::new("dicts_v1");
pub(super) const STAGING: TableDefinition<&[u8], &[u8]> = TableDefinition::new("staging_v1");
pub(super) const SEEN: TableDefinition<(&str, u32), &[u8]> = TableDefinition::new("seen_v1");
pub(super) const PROGRESS: TableDefinition<&str, &[u8]> = TableDefinition::new("progress_v1");
pub(super) const SOURCES: TableDefinition<&str, &[u8]> = TableDefinition::new("sources_v1");
pub(super) const EVENTS: TableDefinition<u64, &[u8]> = TableDefinition::new("events_v2");
pub(super) const DELIVERIES: TableDefinition<(&str, u64), &[u8]> =
    TableDefinition::new("deliveries_v2");
pub(super) const LANES: TableDefinition<(&str, &str, u64), ()> = TableDefinition::new("lanes_v1");
pub(super) const DUE: TableDefinition<(&str, i64, u64), ()> = TableDefinition::new("due_v2");
pub(super) const META: TableDefinition<&str, u64> = TableDefinition::new("meta_v1");
pub(super) const EVENT_IDS: TableDefinition<&str, u64> = TableDefinition::new("event_ids_v1");
pub(super) const ENDPOINTS: TableDefinition<&str, &[u8]> = TableDefinition::new("endpoints_v1");
pub(super) const TOKENS: TableDefinition<&str, &[u8]> = TableDefinition::new("tokens_v1");
pub(super) const DEAD: TableDefinition<(&str, u64), ()> = TableDefinition::new("dead_v1");
pub(super) const DELIVERED: TableDefinition<(i64, &str, u64), ()> =
    TableDefinition::new("delivered_v1");
pub(super) const EVENT_REFS: TableDefinition<u64, u32> = TableDefinition::new("event_refs_v1");
pub(super) const ORPHANS: TableDefinition<(i64, u64), ()> = TableDefinition::new("orphans_v1");

/// The next event sequence number.
pub(super) const NEXT_SEQ: &str = "next_seq";
/// The next document generation (one per poll).
pub(super) const NEXT_GEN: &str = "next_gen";
/// The next compression dictionary id.
pub(super) const NEXT_DICT: &str = "next_dict";
/// The layout version of the file.
pub(super) const SCHEMA: &str = "schema_version";
/// The layout this release writes. 1: the first release (serde_json snapshot rows with the
/// document inside); 2: compact snapshot rows, documents apart, staged polls.
pub const SCHEMA_VERSION: u64 = 2;

/// How the state file is opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreOptions {
    /// Memory redb may use to cache pages of the file, in bytes.
    pub cache_size: usize,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            cache_size: DEFAULT_CACHE_SIZE,
        }
    }
}

pub use crate::config::DEFAULT_CACHE_SIZE;

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
    /// A row written by a later release (or damaged).
    #[error(
        "a row in {table} has layout version {version}, which this release cannot read (written by a newer pollhook?)"
    )]
    UnknownRowVersion {
        /// Table name.
        table: &'static str,
        /// The version byte found.
        version: u8,
    },
    /// The file was written by a later release.
    #[error(
        "state file {path} has schema version {found}; this release reads up to version {supported}. Run the pollhook release that wrote it, or restore a backup"
    )]
    NewerSchema {
        /// The file.
        path: PathBuf,
        /// The version in the file.
        found: u64,
        /// The newest version this release reads.
        supported: u64,
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
    /// Opens (or creates) the state file with the default options.
    pub fn open(path: &Path) -> Result<Store> {
        Store::open_with(path, StoreOptions::default())
    }

    /// Opens (or creates) the state file, upgrading a file written by an earlier release in
    /// place and refusing one written by a later release.
    pub fn open_with(path: &Path, options: StoreOptions) -> Result<Store> {
        let db = Database::builder()
            .set_cache_size(options.cache_size)
            .create(path)
            .map_err(|source| StoreError::Open {
                path: path.to_path_buf(),
                source,
            })?;
        let store = Store { db: Arc::new(db) };
        store.prepare(Some(path))?;
        Ok(store)
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
        let store = Store { db: Arc::new(db) };
        store.prepare(None)?;
        Ok(store)
    }

    /// Checks the schema version, migrates an older file, and creates the tables.
    fn prepare(&self, path: Option<&Path>) -> Result<()> {
        let version = self.schema_version()?;
        if version > SCHEMA_VERSION {
            return Err(StoreError::NewerSchema {
                path: path.map(Path::to_path_buf).unwrap_or_default(),
                found: version,
                supported: SCHEMA_VERSION,
            });
        }
        let txn = self.db.begin_write()?;
        {
            if version < SCHEMA_VERSION && version > 0 {
                migrate::run(&txn, version)?;
            }
            txn.open_table(SNAPSHOT)?;
            txn.open_table(DOCS)?;
            txn.open_table(DICTS)?;
            txn.open_table(STAGING)?;
            txn.open_table(SEEN)?;
            txn.open_table(PROGRESS)?;
            txn.open_table(SOURCES)?;
            txn.open_table(EVENTS)?;
            txn.open_table(DELIVERIES)?;
            txn.open_table(LANES)?;
            txn.open_table(DUE)?;
            txn.open_table(EVENT_IDS)?;
            txn.open_table(ENDPOINTS)?;
            txn.open_table(TOKENS)?;
            txn.open_table(DEAD)?;
            txn.open_table(DELIVERED)?;
            txn.open_table(EVENT_REFS)?;
            txn.open_table(ORPHANS)?;
            txn.open_table(META)?.insert(SCHEMA, SCHEMA_VERSION)?;
        }
        txn.commit()?;
        Ok(())
    }

    /// The schema version of the file: 0 for a new file, 1 for a file of the first release
    /// (which wrote no version).
    fn schema_version(&self) -> Result<u64> {
        let txn = self.db.begin_read()?;
        let names: Vec<String> = txn
            .list_tables()?
            .map(|t| redb::TableHandle::name(&t).to_string())
            .collect();
        if names.iter().any(|n| n == "meta_v1") {
            let meta = txn.open_table(META)?;
            if let Some(v) = meta.get(SCHEMA)? {
                return Ok(v.value());
            }
        }
        Ok(u64::from(names.iter().any(|n| n == "snapshot_v1")))
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
}

#[cfg(test)]
mod tests;
