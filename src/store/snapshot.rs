//! The snapshot: each booking's compact row (compared on every poll), its document (read only
//! when the fingerprint differs), and the per-source compression dictionaries.

use redb::ReadableDatabase;
use serde_json::Value;

use super::codec::{DocReader, SnapRow, booking_key, key_id, source_range};
use super::{DICTS, DOCS, Result, SNAPSHOT, Store};

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

/// A booking as the snapshot holds it: its compact row and its document.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredBooking {
    /// Fingerprint of the significant content.
    pub fingerprint: u64,
    /// Cancelled when last seen.
    pub cancelled: bool,
    /// Confirmed to have left the polled window.
    pub outside: bool,
    /// The document as last stored.
    pub doc: Value,
}

/// Reads snapshot rows of one source from one read transaction (a page's worth of lookups).
pub struct SnapshotReader {
    source: String,
    table: redb::ReadOnlyTable<&'static [u8], &'static [u8]>,
    health: std::sync::Arc<super::Health>,
}

impl SnapshotReader {
    /// The row of one booking.
    pub fn get(&self, id: &str) -> Result<Option<SnapRow>> {
        self.health.guard(
            || match self.table.get(booking_key(&self.source, id).as_slice())? {
                Some(v) => Ok(Some(SnapRow::decode(v.value())?)),
                None => Ok(None),
            },
        )
    }
}

impl Store {
    /// A reader of `source`'s snapshot rows.
    pub fn reader(&self, source: &str) -> Result<SnapshotReader> {
        self.guard(|| {
            let txn = self.db.begin_read()?;
            Ok(SnapshotReader {
                source: source.to_string(),
                table: txn.open_table(SNAPSHOT)?,
                health: self.health.clone(),
            })
        })
    }

    /// The snapshot rows of `ids` (one read transaction; `None` for unknown ids).
    pub fn rows(&self, source: &str, ids: &[&str]) -> Result<Vec<Option<SnapRow>>> {
        self.guard(|| {
            let txn = self.db.begin_read()?;
            let t = txn.open_table(SNAPSHOT)?;
            let mut out = Vec::with_capacity(ids.len());
            for id in ids {
                out.push(match t.get(booking_key(source, id).as_slice())? {
                    Some(v) => Some(SnapRow::decode(v.value())?),
                    None => None,
                });
            }
            Ok(out)
        })
    }

    /// Calls `f` with every booking id of `source` and its row, in key order, in one read
    /// transaction. Nothing but the compact rows is read.
    pub fn scan_rows(&self, source: &str, mut f: impl FnMut(&str, &SnapRow)) -> Result<()> {
        self.guard(|| {
            let txn = self.db.begin_read()?;
            let t = txn.open_table(SNAPSHOT)?;
            let (lo, hi) = source_range(source);
            for entry in t.range(lo.as_slice()..hi.as_slice())? {
                let (k, v) = entry?;
                let key = k.value();
                f(key_id("snapshot_v2", key)?, &SnapRow::decode(v.value())?);
            }
            Ok(())
        })
    }

    /// Every known booking of a source: (id, cancelled, outside the window).
    pub fn known(&self, source: &str) -> Result<Vec<Known>> {
        self.guard(|| {
            let mut out = Vec::new();
            self.scan_rows(source, |id, row| {
                out.push(Known {
                    id: id.to_string(),
                    cancelled: row.cancelled,
                    outside: row.outside,
                })
            })?;
            Ok(out)
        })
    }

    /// The stored row and document of one booking.
    pub fn booking(&self, source: &str, id: &str) -> Result<Option<StoredBooking>> {
        self.guard(|| {
            let txn = self.db.begin_read()?;
            let snap = txn.open_table(SNAPSHOT)?;
            let Some(row) = snap.get(booking_key(source, id).as_slice())? else {
                return Ok(None);
            };
            let row = SnapRow::decode(row.value())?;
            let docs = txn.open_table(DOCS)?;
            let dicts = txn.open_table(DICTS)?;
            let mut dict = |n: u32| -> Result<Option<Vec<u8>>> {
                Ok(dicts.get((source, n))?.map(|v| v.value().to_vec()))
            };
            let mut reader = DocReader::default();
            match docs.get((source, id, row.generation))? {
                Some(d) => Ok(Some(StoredBooking {
                    fingerprint: row.fingerprint,
                    cancelled: row.cancelled,
                    outside: row.outside,
                    doc: reader.decode(d.value(), &mut dict)?,
                })),
                None => Err(super::StoreError::Corrupt {
                    table: "docs_v2",
                    reason: format!("booking {id} of {source} has no document"),
                }),
            }
        })
    }
}
