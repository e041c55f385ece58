//! The redb store: ALL redb code lives here. Opening the state file, its table layout and
//! schema version (this file), row codecs ([`codec`]), the snapshot and its documents
//! (`snapshot`), a poll's staging area and its promotion (`poll`), the delivery queue (`queue`),
//! source, endpoint and token state (`state`), recorded pings (`pings`), backfills
//! (`backfill`), and upgrading older state files (`migrate`). No other module sees a redb type.
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
//! | `pings_v1`      | (source, ping seq)           | a recorded ping: received ms, booking id (versioned) |
//! | `backfills_v1`  | endpoint                     | a [`Backfill`] in progress (JSON)  |
//!
//! Invariants: a pending delivery is in `lanes_v1`; exactly the first pending delivery of each
//! (endpoint, lane) is in `due_v2`, under the `next_ms` its row carries. That is what keeps one
//! booking's events in order per endpoint while other bookings flow past a failing one.

mod backfill;
mod codec;
mod migrate;
mod pings;
mod poll;
mod queue;
mod rows;
mod snapshot;
mod state;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use redb::{
    Database, DatabaseError, MultimapTableHandle, ReadableDatabase, ReadableTableMetadata,
    StorageError, TableDefinition, TableHandle,
};
use tokio::sync::watch;

pub use backfill::{Backfill, BackfillStart};
pub use codec::{SnapRow, Staged, StagedOp};
pub use pings::{NewPing, PingRow};
pub use poll::{PageOp, Promotion, REPORTED_EVENTS};
pub use queue::{Counts, DueBatch, DueItem, EndpointCounts, ReplaySelector};
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
pub(super) const PINGS: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("pings_v1");
pub(super) const BACKFILLS: TableDefinition<&str, &[u8]> = TableDefinition::new("backfills_v1");

/// The next event sequence number.
pub(super) const NEXT_SEQ: &str = "next_seq";
/// The next document generation (one per poll).
pub(super) const NEXT_GEN: &str = "next_gen";
/// The next ping sequence number.
pub(super) const NEXT_PING: &str = "next_ping";
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
    /// Another process has the file open (redb locks it).
    #[error(
        "state file {path} is in use by another process (is another pollhook running with this store.path?)"
    )]
    Locked {
        /// The file.
        path: PathBuf,
    },
    /// The file or its directory may not be written by this user (permission denied, or a
    /// read-only file system).
    #[error(
        "cannot open state file {path} for writing: {reason}. The user pollhook runs as needs read and write access to the file and write access to its directory {dir} (under systemd, `StateDirectory=` gives the service such a directory)"
    )]
    NoAccess {
        /// The file.
        path: PathBuf,
        /// Its directory.
        dir: PathBuf,
        /// The OS error.
        reason: String,
    },
    /// An existing file that is not a pollhook state file (empty, not a redb database, or
    /// another program's database). It is left as it is.
    #[error(
        "{path} is not a pollhook state file: {reason}. pollhook does not replace an existing file. If it should hold pollhook's state, restore it from a backup; to start with an empty store instead (pending deliveries, dead letters and the snapshot are gone, and the next poll records a new baseline), remove the file"
    )]
    NotAStore {
        /// The file.
        path: PathBuf,
        /// What it is instead.
        reason: String,
    },
    /// The file is damaged: the integrity check or the database engine found it corrupt. Once
    /// seen, every further operation on the store fails with this error.
    #[error(
        "state file {path} is corrupt: {reason}. pollhook stops using it: restore the file from a backup, or move it away to start with an empty store (pending deliveries, dead letters and the snapshot are then lost). `pollhook check --store --config FILE` verifies a file"
    )]
    Corrupted {
        /// The file.
        path: PathBuf,
        /// What was found.
        reason: String,
    },
    /// An I/O error on the state file (a full file system, a failing disk). After one, the
    /// database engine refuses every further write until the file is reopened, so the store
    /// refuses every operation and the daemon stops: under systemd it is restarted, and the file
    /// holds everything up to its last commit.
    #[error(
        "state file {path}: {reason}. After an I/O error the database engine accepts no further writes until the file is reopened, so pollhook stops (systemd restarts it: the file keeps everything up to its last commit, and deliveries whose outcome was not recorded are sent again with the same event id). Check the free space and the disk of {dir}"
    )]
    Io {
        /// The file.
        path: PathBuf,
        /// Its directory.
        dir: PathBuf,
        /// The engine's report.
        reason: String,
    },
    /// There is no file to inspect (opening creates one; inspecting does not).
    #[error("state file {path} does not exist")]
    Missing {
        /// The file.
        path: PathBuf,
    },
    /// The database file could not be opened or created for another reason.
    #[error("cannot open state file {path}: {reason}")]
    Open {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
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
    /// The blocking task running a store operation was cancelled.
    #[error("store task failed: {0}")]
    Task(String),
}

impl StoreError {
    /// Whether this is [`StoreError::Corrupted`]: the file is damaged and the process should stop.
    pub fn is_corruption(&self) -> bool {
        matches!(self, StoreError::Corrupted { .. })
    }

    /// Whether the state file cannot be used by this process any more: corrupt, or refused by
    /// the engine after an I/O error. The daemon stops on either.
    pub fn is_fatal(&self) -> bool {
        matches!(self, StoreError::Corrupted { .. } | StoreError::Io { .. })
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

/// What a panic carried, for the corruption report.
fn panicked(payload: &(dyn std::any::Any + Send)) -> String {
    let message = payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "no message".into());
    format!("the database engine panicked reading it ({message})")
}

/// Why the state file cannot be used any more: it is damaged, or an I/O error left the engine
/// refusing writes until the file is reopened.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Fault {
    Corrupt(String),
    Io(String),
}

/// The fault inside a store error, if it is one: the engine's report of corruption, or of an
/// I/O error (after which it refuses every write: `PreviousIo`).
fn engine_fault(e: &StoreError) -> Option<Fault> {
    match e {
        StoreError::Db(redb::Error::Corrupted(reason)) => Some(Fault::Corrupt(reason.clone())),
        StoreError::Corrupted { reason, .. } => Some(Fault::Corrupt(reason.clone())),
        StoreError::Db(redb::Error::Io(io)) => Some(Fault::Io(format!("I/O error: {io}"))),
        StoreError::Db(redb::Error::PreviousIo) => Some(Fault::Io(
            "an earlier write failed with an I/O error".into(),
        )),
        StoreError::Io { reason, .. } => Some(Fault::Io(reason.clone())),
        _ => None,
    }
}

/// Whether the state file has been found unusable: corrupt, or refused by the engine after an
/// I/O error. Set once, by the first operation on the store that panics inside the database
/// engine or gets its corruption or I/O error; every clone of the store shares it, and the
/// watchdog, readiness and the daemon read it. Once set, every operation fails at once with
/// [`StoreError::Corrupted`] or [`StoreError::Io`] without touching the file again: after a
/// failed commit the engine would still read, and the delivery worker would send the same
/// deliveries again and again without ever recording them.
pub(crate) struct Health {
    path: PathBuf,
    fault: watch::Sender<Option<Fault>>,
}

impl Health {
    fn new(path: &Path) -> Arc<Health> {
        Arc::new(Health {
            path: path.to_path_buf(),
            fault: watch::Sender::new(None),
        })
    }

    fn error(&self) -> Option<StoreError> {
        self.fault.borrow().clone().map(|f| self.error_of(f))
    }

    fn error_of(&self, fault: Fault) -> StoreError {
        match fault {
            Fault::Corrupt(reason) => StoreError::Corrupted {
                path: self.path.clone(),
                reason,
            },
            Fault::Io(reason) => StoreError::Io {
                path: self.path.clone(),
                dir: dir_of(&self.path).to_path_buf(),
                reason,
            },
        }
    }

    /// Records the fault (the first one is kept) and returns the error to report.
    fn mark(&self, fault: Fault) -> StoreError {
        let first = self.fault.send_if_modified(|v| {
            if v.is_none() {
                *v = Some(fault.clone());
                true
            } else {
                false
            }
        });
        if first {
            match &fault {
                Fault::Corrupt(reason) => {
                    tracing::error!(store = %self.path.display(), %reason, "the state file is corrupt; no further operation will touch it")
                }
                Fault::Io(reason) => {
                    tracing::error!(store = %self.path.display(), %reason, "I/O error on the state file; the engine accepts no further writes until it is reopened, so no further operation will touch it")
                }
            }
        }
        self.error().unwrap_or_else(|| self.error_of(fault))
    }

    /// Runs one store operation: refused once the file is known to be unusable; a panic inside
    /// it (the engine on a damaged page) or the engine's corruption or I/O error marks it so.
    pub(crate) fn guard<T>(&self, f: impl FnOnce() -> Result<T>) -> Result<T> {
        if let Some(e) = self.error() {
            return Err(e);
        }
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(match engine_fault(&e) {
                Some(fault) => self.mark(fault),
                None => e,
            }),
            Err(payload) => Err(self.mark(Fault::Corrupt(panicked(&*payload)))),
        }
    }
}

/// The directory of the state file, for messages and for creating it.
fn dir_of(path: &Path) -> &Path {
    path.parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
}

/// An I/O error on the state file or its directory.
fn io_error(path: &Path, e: std::io::Error) -> StoreError {
    use std::io::ErrorKind;
    match e.kind() {
        ErrorKind::PermissionDenied | ErrorKind::ReadOnlyFilesystem => StoreError::NoAccess {
            path: path.to_path_buf(),
            dir: dir_of(path).to_path_buf(),
            reason: e.to_string(),
        },
        _ => StoreError::Open {
            path: path.to_path_buf(),
            reason: e.to_string(),
        },
    }
}

/// Why redb would not open the file, by cause.
fn open_error(path: &Path, e: DatabaseError) -> StoreError {
    let path_buf = path.to_path_buf();
    match e {
        DatabaseError::DatabaseAlreadyOpen => StoreError::Locked { path: path_buf },
        DatabaseError::Storage(StorageError::Corrupted(reason)) => StoreError::Corrupted {
            path: path_buf,
            reason,
        },
        DatabaseError::Storage(StorageError::Io(io))
            if io.kind() == std::io::ErrorKind::InvalidData =>
        {
            StoreError::NotAStore {
                path: path_buf,
                reason: format!("it is not a redb database ({io})"),
            }
        }
        DatabaseError::Storage(StorageError::Io(io)) => io_error(path, io),
        DatabaseError::UpgradeRequired(v) => StoreError::Open {
            path: path_buf,
            reason: format!("it is in redb file format {v}, which this release cannot read"),
        },
        other => StoreError::Open {
            path: path_buf,
            reason: other.to_string(),
        },
    }
}

/// Opens an existing redb file, verifying every page of it first (so a damaged file is refused
/// here rather than panicking later).
fn open_verified(path: &Path, options: StoreOptions) -> Result<Database> {
    let opened = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        Database::builder()
            .set_cache_size(options.cache_size)
            .set_check_integrity_on_open(true)
            .open(path)
    }));
    match opened {
        Ok(Ok(db)) => Ok(db),
        Ok(Err(e)) => Err(open_error(path, e)),
        Err(payload) => Err(StoreError::Corrupted {
            path: path.to_path_buf(),
            reason: panicked(&*payload),
        }),
    }
}

/// Refuses what cannot be a state file before redb sees it: anything but a regular file, and an
/// empty file (which redb would initialise as a new database).
fn refuse_non_store(path: &Path, meta: &std::fs::Metadata) -> Result<()> {
    let reason = if !meta.is_file() {
        "it is not a regular file"
    } else if meta.len() == 0 {
        "the file is empty (0 bytes), as an interrupted copy leaves it"
    } else {
        return Ok(());
    };
    Err(StoreError::NotAStore {
        path: path.to_path_buf(),
        reason: reason.into(),
    })
}

/// The permission bits of the state file that let other users in (it holds cached access
/// tokens), if any.
pub fn loose_mode(meta: &std::fs::Metadata) -> Option<u32> {
    use std::os::unix::fs::PermissionsExt;
    let mode = meta.permissions().mode() & 0o777;
    (mode & 0o077 != 0).then_some(mode)
}

/// Fsyncs a directory so a new or removed name in it survives a crash.
fn sync_dir(dir: &Path) {
    if let Err(e) = std::fs::File::open(dir).and_then(|d| d.sync_all()) {
        tracing::warn!(dir = %dir.display(), error = %e, "cannot sync the state directory");
    }
}

/// What `check --store` found in a state file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inspection {
    /// The layout version (0: no tables yet, 1: the first release, ...).
    pub schema_version: u64,
    /// Whether the integrity check had to repair the file (a crash left it; nothing lost).
    pub repaired: bool,
    /// Every table and its rows, by name.
    pub tables: Vec<(String, u64)>,
    /// The file's permission bits when other users may read or write it.
    pub loose_mode: Option<u32>,
}

/// The redb-backed state. Cheap to clone; every method is blocking: call it from
/// `tokio::task::spawn_blocking` (see [`Store::run`]).
#[derive(Clone)]
pub struct Store {
    db: Arc<Database>,
    health: Arc<Health>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Store")
    }
}

impl Store {
    fn with(db: Database, path: &Path) -> Store {
        Store {
            db: Arc::new(db),
            health: Health::new(path),
        }
    }

    /// Opens (or creates) the state file with the default options.
    pub fn open(path: &Path) -> Result<Store> {
        Store::open_with(path, StoreOptions::default())
    }

    /// Opens the state file, upgrading a file written by an earlier release in place and
    /// refusing one written by a later release, or creates it (mode 0600) where no file exists.
    /// An existing file is verified page by page first, and refused unless it is a pollhook
    /// state file: an empty file, a file that is not a redb database and another program's
    /// database are left as they are.
    pub fn open_with(path: &Path, options: StoreOptions) -> Result<Store> {
        match std::fs::metadata(path) {
            Ok(meta) => Store::open_existing(path, &meta, options),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Store::create_new(path, options),
            Err(e) => Err(io_error(path, e)),
        }
    }

    fn open_existing(
        path: &Path,
        meta: &std::fs::Metadata,
        options: StoreOptions,
    ) -> Result<Store> {
        refuse_non_store(path, meta)?;
        if let Some(mode) = loose_mode(meta) {
            tracing::warn!(
                store = %path.display(),
                mode = format!("{mode:o}"),
                "the state file may be read by other users, and it holds cached access tokens: `chmod 600` it"
            );
        }
        let store = Store::with(open_verified(path, options)?, path);
        store.health.guard(|| store.prepare(path))?;
        Ok(store)
    }

    /// Creates the file under a temporary name beside it (mode 0600), lays out its tables, and
    /// only then gives it its name, without replacing a file that appeared meanwhile: a crash
    /// part way leaves no half-made file under the real name, so an empty or foreign file there
    /// is never one of ours.
    fn create_new(path: &Path, options: StoreOptions) -> Result<Store> {
        use std::os::unix::fs::OpenOptionsExt;
        let dir = dir_of(path);
        let Some(name) = path.file_name() else {
            return Err(StoreError::Open {
                path: path.to_path_buf(),
                reason: "the path names no file".into(),
            });
        };
        let tmp = dir.join(format!(
            ".{}.new-{}",
            name.to_string_lossy(),
            std::process::id()
        ));
        let _ = std::fs::remove_file(&tmp);
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(|e| io_error(path, e))?;
        let made: Result<Option<Store>> = (|| {
            let db = Database::builder()
                .set_cache_size(options.cache_size)
                .create(&tmp)
                .map_err(|e| open_error(path, e))?;
            let store = Store::with(db, path);
            store.health.guard(|| store.prepare(path))?;
            let named = match std::fs::hard_link(&tmp, path) {
                Ok(()) => true,
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => false,
                // A file system without hard links: rename, unless the name is taken by now.
                Err(_) if path.symlink_metadata().is_ok() => false,
                Err(_) => {
                    std::fs::rename(&tmp, path).map_err(|e| io_error(path, e))?;
                    true
                }
            };
            Ok(named.then_some(store))
        })();
        let _ = std::fs::remove_file(&tmp);
        sync_dir(dir);
        match made? {
            Some(store) => Ok(store),
            // Another process created the file meanwhile: open that one.
            None => {
                let meta = std::fs::metadata(path).map_err(|e| io_error(path, e))?;
                Store::open_existing(path, &meta, options)
            }
        }
    }

    /// A throw-away in-memory store (for `check --probe`, which must not touch the state file
    /// a running daemon holds).
    pub fn in_memory() -> Result<Store> {
        let path = Path::new("<memory>");
        let db = Database::builder()
            .create_with_backend(redb::backends::InMemoryBackend::new())
            .map_err(|e| open_error(path, e))?;
        let store = Store::with(db, path);
        store.prepare(path)?;
        Ok(store)
    }

    /// Verifies a state file offline for `check --store`: opens it (refused while a daemon
    /// holds it), checks every page, and reads its schema version and every table's row count.
    /// Never creates, migrates or initialises the file.
    pub fn inspect(path: &Path) -> Result<Inspection> {
        let meta = match std::fs::metadata(path) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(StoreError::Missing {
                    path: path.to_path_buf(),
                });
            }
            Err(e) => return Err(io_error(path, e)),
        };
        refuse_non_store(path, &meta)?;
        let mut db = open_verified(path, StoreOptions::default())?;
        let health = Health::new(path);
        let clean = health.guard(|| db.check_integrity().map_err(|e| open_error(path, e)))?;
        let store = Store {
            db: Arc::new(db),
            health,
        };
        store.guard(|| {
            let schema_version = store.schema_version(path)?;
            let txn = store.db.begin_read()?;
            let mut tables = Vec::new();
            for handle in txn.list_tables()? {
                let name = handle.name().to_string();
                tables.push((name, txn.open_untyped_table(handle)?.len()?));
            }
            for handle in txn.list_multimap_tables()? {
                let name = handle.name().to_string();
                tables.push((name, txn.open_untyped_multimap_table(handle)?.len()?));
            }
            tables.sort();
            Ok(Inspection {
                schema_version,
                repaired: !clean,
                tables,
                loose_mode: loose_mode(&meta),
            })
        })
    }

    /// The state file this store reads.
    pub fn path(&self) -> &Path {
        &self.health.path
    }

    /// Runs one operation under the corruption guard (see [`Store::corruption`]).
    pub(crate) fn guard<T>(&self, f: impl FnOnce() -> Result<T>) -> Result<T> {
        self.health.guard(f)
    }

    /// Why the state file cannot be used any more, once any operation found it: a panic inside
    /// the database engine, its corruption error, or an I/O error (after which the engine
    /// refuses every write until the file is reopened). The watchdog, readiness and the daemon
    /// check this; once set, every operation fails with it.
    pub fn fault(&self) -> Option<StoreError> {
        self.health.error()
    }

    /// Waits until the state file is found unusable (see [`Store::fault`]); returns the error.
    pub async fn faulted(&self) -> StoreError {
        let mut rx = self.health.fault.subscribe();
        let _ = rx.wait_for(Option::is_some).await;
        self.health
            .error()
            .unwrap_or_else(|| StoreError::Corrupted {
                path: self.health.path.clone(),
                reason: "reported without a cause".into(),
            })
    }

    /// Checks the schema version, migrates an older file, and creates the tables.
    fn prepare(&self, path: &Path) -> Result<()> {
        let version = self.schema_version(path)?;
        if version > SCHEMA_VERSION {
            return Err(StoreError::NewerSchema {
                path: path.to_path_buf(),
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
            txn.open_table(PINGS)?;
            txn.open_table(BACKFILLS)?;
            txn.open_table(META)?.insert(SCHEMA, SCHEMA_VERSION)?;
        }
        txn.commit()?;
        Ok(())
    }

    /// The schema version of the file: 0 for a database without tables (a new file), 1 for a
    /// file of the first release (which wrote no version). A database with tables but none of
    /// pollhook's (`meta_v1`, or the first release's `snapshot_v1`) is another program's, and
    /// refused.
    fn schema_version(&self, path: &Path) -> Result<u64> {
        let txn = self.db.begin_read()?;
        let mut names: Vec<String> = txn.list_tables()?.map(|t| t.name().to_string()).collect();
        names.extend(txn.list_multimap_tables()?.map(|t| t.name().to_string()));
        if names.iter().any(|n| n == "meta_v1") {
            let meta = txn.open_table(META)?;
            if let Some(v) = meta.get(SCHEMA)? {
                return Ok(v.value());
            }
        }
        if names.iter().any(|n| n == "snapshot_v1") {
            return Ok(1);
        }
        if names.iter().any(|n| n == "meta_v1") || names.is_empty() {
            return Ok(0);
        }
        names.sort();
        let shown: Vec<&str> = names.iter().take(5).map(String::as_str).collect();
        Err(StoreError::NotAStore {
            path: path.to_path_buf(),
            reason: format!(
                "it is a redb database without pollhook's tables (it holds {}{}), another program's?",
                shown.join(", "),
                if names.len() > shown.len() {
                    ", ..."
                } else {
                    ""
                }
            ),
        })
    }

    /// Runs a blocking store operation on tokio's blocking pool, under the corruption guard.
    pub async fn run<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Store) -> Result<T> + Send + 'static,
    {
        let store = self.clone();
        match tokio::task::spawn_blocking(move || store.guard(|| f(&store))).await {
            Ok(r) => r,
            Err(e) if e.is_panic() => {
                Err(self.health.mark(Fault::Corrupt(panicked(&*e.into_panic()))))
            }
            Err(e) => Err(StoreError::Task(e.to_string())),
        }
    }
}

#[cfg(test)]
impl Store {
    /// Commits one poll of `source` that emits a `new` event for each of `bookings` (in
    /// order), detected at `now`, with a delivery to each of `endpoints`; returns the events.
    pub(crate) fn emit_new(
        &self,
        source: &str,
        bookings: &[&str],
        endpoints: &[&str],
        now: i64,
    ) -> Vec<crate::outbox::Event> {
        let eps: Vec<(&str, i64)> = endpoints.iter().map(|e| (*e, 0)).collect();
        self.begin_poll(source, b"cp").unwrap();
        self.promote(
            source,
            false,
            |_, _, _| Ok(()),
            |t| {
                for b in bookings {
                    t.emit(
                        crate::outbox::EventKind::New,
                        b,
                        serde_json::json!({ "id": b }),
                        vec![],
                        &eps,
                        now,
                    )?;
                }
                Ok(t.take_emitted().0)
            },
        )
        .unwrap()
    }

    /// Replaces a delivery row's bytes, for tests of rows the store cannot read.
    pub(crate) fn overwrite_delivery_row(&self, endpoint: &str, seq: u64, bytes: &[u8]) {
        let txn = self.db.begin_write().unwrap();
        txn.open_table(DELIVERIES)
            .unwrap()
            .insert((endpoint, seq), bytes)
            .unwrap();
        txn.commit().unwrap();
    }
}

#[cfg(test)]
mod tests;
