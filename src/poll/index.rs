//! What a full poll compares each booking with, in memory: the snapshot's compact rows (id
//! hash, fingerprint, flags) loaded once per poll into sorted arrays, about 17 bytes a booking,
//! and the set of ids seen so far. The rows stay the truth: an index hit that looks changed is
//! decided again against the real row when the poll is promoted.

use std::collections::HashSet;

use crate::store::{SnapRow, Store, StoreError};

/// The stable hash of a booking id (persisted in seen pages, so it must not change between
/// releases).
pub(super) fn id_hash(id: &str) -> u64 {
    xxhash_rust::xxh3::xxh3_64(id.as_bytes())
}

/// One snapshot row as the index keeps it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Entry {
    pub(super) fingerprint: u64,
    pub(super) cancelled: bool,
    pub(super) outside: bool,
}

/// The snapshot rows of one source, sorted by id hash: 17 bytes a booking.
#[derive(Debug, Default)]
pub(super) struct SnapshotIndex {
    hashes: Vec<u64>,
    fingerprints: Vec<u64>,
    /// Bit 0: cancelled; bit 1: outside the window.
    flags: Vec<u8>,
}

fn flags(e: &Entry) -> u8 {
    u8::from(e.cancelled) | (u8::from(e.outside) << 1)
}

fn entry(fingerprint: u64, flags: u8) -> Entry {
    Entry {
        fingerprint,
        cancelled: flags & 1 != 0,
        outside: flags & 2 != 0,
    }
}

impl SnapshotIndex {
    /// Loads every compact row of `source` (no document is read).
    pub(super) fn load(store: &Store, source: &str) -> Result<SnapshotIndex, StoreError> {
        let mut rows: Vec<(u64, u64, u8)> = Vec::new();
        store.scan_rows(source, |id, row: &SnapRow| {
            let e = Entry {
                fingerprint: row.fingerprint,
                cancelled: row.cancelled,
                outside: row.outside,
            };
            rows.push((id_hash(id), row.fingerprint, flags(&e)))
        })?;
        Ok(SnapshotIndex::from_rows(rows))
    }

    fn from_rows(mut rows: Vec<(u64, u64, u8)>) -> SnapshotIndex {
        rows.sort_unstable_by_key(|r| r.0);
        let mut idx = SnapshotIndex {
            hashes: Vec::with_capacity(rows.len()),
            fingerprints: Vec::with_capacity(rows.len()),
            flags: Vec::with_capacity(rows.len()),
        };
        for (h, f, fl) in rows {
            idx.hashes.push(h);
            idx.fingerprints.push(f);
            idx.flags.push(fl);
        }
        idx
    }

    /// The row of the booking with this id hash, if any.
    pub(super) fn get(&self, hash: u64) -> Option<Entry> {
        self.hashes
            .binary_search(&hash)
            .ok()
            .map(|i| entry(self.fingerprints[i], self.flags[i]))
    }

    /// Rows in the index.
    pub(super) fn len(&self) -> usize {
        self.hashes.len()
    }

    /// Every (id hash, row).
    pub(super) fn iter(&self) -> impl Iterator<Item = (u64, Entry)> + '_ {
        (0..self.hashes.len()).map(|i| (self.hashes[i], entry(self.fingerprints[i], self.flags[i])))
    }
}

/// The id hashes seen by a poll.
pub(super) type Seen = HashSet<u64>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_rows_by_hash() {
        let rows: Vec<(u64, u64, u8)> = (0..100)
            .map(|i| (id_hash(&i.to_string()), i, u8::from(i % 2 == 0)))
            .collect();
        let idx = SnapshotIndex::from_rows(rows);
        assert_eq!(idx.len(), 100);
        assert_eq!(idx.get(id_hash("7")).unwrap().fingerprint, 7);
        assert!(idx.get(id_hash("8")).unwrap().cancelled);
        assert!(!idx.get(id_hash("7")).unwrap().cancelled);
        assert!(idx.get(id_hash("nope")).is_none());
        assert_eq!(idx.iter().count(), 100);
    }

    #[test]
    fn the_id_hash_is_stable() {
        // Persisted in seen pages of staged polls: a change would break resumed polls.
        assert_eq!(id_hash("12345"), xxhash_rust::xxh3::xxh3_64(b"12345"));
        assert_eq!(id_hash(""), 0x2d06800538d394c2);
    }
}
