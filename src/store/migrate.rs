//! Upgrading a state file written by an earlier release, in place and in the same transaction
//! that marks it with the new schema version, so a crash mid-way leaves the old file as it was.
//!
//! Version 1 (the first release) kept each booking as one serde_json row holding its document,
//! and events and deliveries as serde_json. Version 2 splits a booking into a compact snapshot
//! row and a compressed document apart, writes events and deliveries in binary layouts, and keys
//! the due index by endpoint first. Lanes, dead letters, the retention indexes, endpoint state and
//! tokens keep their layout.

use std::collections::BTreeMap;

use redb::{ReadableTable, TableDefinition, WriteTransaction};
use serde::Deserialize;

use super::codec::{DocWriter, SnapRow, booking_key, encode_delivery, encode_event};
use super::{DELIVERIES, DICTS, DOCS, DUE, EVENTS, META, NEXT_DICT, Result, SNAPSHOT, StoreError};
use crate::outbox::{Delivery, Event};

const SNAPSHOT_V1: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("snapshot_v1");
const EVENTS_V1: TableDefinition<u64, &[u8]> = TableDefinition::new("events_v1");
const DELIVERIES_V1: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("deliveries_v1");
const DUE_V1: TableDefinition<(i64, &str, u64), ()> = TableDefinition::new("due_v1");

/// Documents sampled per source to train its dictionary.
const SAMPLES: usize = 2000;

/// A booking row of schema version 1.
#[derive(Deserialize)]
struct StoredBookingV1 {
    hash: String,
    cancelled: bool,
    doc: serde_json::Value,
    #[serde(default)]
    outside: bool,
}

fn corrupt(reason: String) -> StoreError {
    StoreError::Corrupt {
        table: "snapshot_v1",
        reason,
    }
}

fn read_v1(bytes: &[u8]) -> Result<StoredBookingV1> {
    serde_json::from_slice(bytes).map_err(|e| corrupt(e.to_string()))
}

/// The version-1 fingerprint (hex of the first 16 bytes of a SHA-256) as the version-2 one (its
/// first 8 bytes).
fn fingerprint_v1(hash: &str) -> Result<u64> {
    hash.get(..16)
        .and_then(|h| u64::from_str_radix(h, 16).ok())
        .ok_or_else(|| corrupt(format!("fingerprint `{hash}` is not 32 hex digits")))
}

/// Migrates `txn`'s file from `from` to the current schema.
pub(super) fn run(txn: &WriteTransaction, from: u64) -> Result<()> {
    if from == 1 {
        v1_to_v2(txn)?;
    }
    Ok(())
}

fn v1_to_v2(txn: &WriteTransaction) -> Result<()> {
    snapshot_v1_to_v2(txn)?;
    queue_v1_to_v2(txn)
}

/// Events and deliveries into their binary layouts; the due index keyed by endpoint first.
fn queue_v1_to_v2(txn: &WriteTransaction) -> Result<()> {
    let bad = |table: &'static str| {
        move |e: serde_json::Error| StoreError::Corrupt {
            table,
            reason: e.to_string(),
        }
    };
    {
        let old = txn.open_table(EVENTS_V1)?;
        let mut new = txn.open_table(EVENTS)?;
        for entry in old.range::<u64>(..)? {
            let (k, v) = entry?;
            let e: Event = serde_json::from_slice(v.value()).map_err(bad("events_v1"))?;
            new.insert(k.value(), encode_event(&e)?.as_slice())?;
        }
    }
    {
        let old = txn.open_table(DELIVERIES_V1)?;
        let mut new = txn.open_table(DELIVERIES)?;
        for entry in old.range::<(&str, u64)>(..)? {
            let (k, v) = entry?;
            let d: Delivery = serde_json::from_slice(v.value()).map_err(bad("deliveries_v1"))?;
            new.insert(k.value(), encode_delivery(&d).as_slice())?;
        }
    }
    {
        let old = txn.open_table(DUE_V1)?;
        let mut new = txn.open_table(DUE)?;
        for entry in old.range::<(i64, &str, u64)>(..)? {
            let (k, _) = entry?;
            let (at, ep, seq) = k.value();
            new.insert((ep, at, seq), ())?;
        }
    }
    txn.delete_table(EVENTS_V1)?;
    txn.delete_table(DELIVERIES_V1)?;
    txn.delete_table(DUE_V1)?;
    Ok(())
}

/// Each booking row into a compact snapshot row and a compressed document.
fn snapshot_v1_to_v2(txn: &WriteTransaction) -> Result<()> {
    let old = txn.open_table(SNAPSHOT_V1)?;
    let mut samples: BTreeMap<String, Vec<Vec<u8>>> = BTreeMap::new();
    for entry in old.range::<(&str, &str)>(..)? {
        let (k, v) = entry?;
        let (source, _) = k.value();
        let s = samples.entry(source.to_string()).or_default();
        if s.len() < SAMPLES {
            let b = read_v1(v.value())?;
            s.push(serde_json::to_vec(&b.doc).map_err(|e| corrupt(e.to_string()))?);
        }
    }
    let mut writers: BTreeMap<String, DocWriter> = BTreeMap::new();
    {
        let mut dicts = txn.open_table(DICTS)?;
        let mut meta = txn.open_table(META)?;
        for (source, docs) in &samples {
            let sizes: Vec<usize> = docs.iter().map(Vec::len).collect();
            let trained = (docs.len() >= 32)
                .then(|| zstd::dict::from_continuous(&docs.concat(), &sizes, 16 * 1024).ok())
                .flatten();
            let writer = match trained {
                Some(d) => {
                    let id = meta.get(NEXT_DICT)?.map(|v| v.value()).unwrap_or(1);
                    meta.insert(NEXT_DICT, id + 1)?;
                    let id = u32::try_from(id).map_err(|_| corrupt("dictionary ids".into()))?;
                    dicts.insert((source.as_str(), id), d.as_slice())?;
                    DocWriter::new(Some((id, &d)))?
                }
                None => DocWriter::new(None)?,
            };
            writers.insert(source.clone(), writer);
        }
    }
    {
        let mut snap = txn.open_table(SNAPSHOT)?;
        let mut docs = txn.open_table(DOCS)?;
        for entry in old.range::<(&str, &str)>(..)? {
            let (k, v) = entry?;
            let (source, id) = k.value();
            let b = read_v1(v.value())?;
            let row = SnapRow {
                fingerprint: fingerprint_v1(&b.hash)?,
                cancelled: b.cancelled,
                outside: b.outside,
                generation: 0,
                observed_ms: 0,
            };
            snap.insert(booking_key(source, id).as_slice(), row.encode().as_slice())?;
            let json = serde_json::to_vec(&b.doc).map_err(|e| corrupt(e.to_string()))?;
            let w = writers
                .get_mut(source)
                .ok_or_else(|| corrupt(format!("source {source} appeared during migration")))?;
            docs.insert((source, id, 0u32), w.encode(&json)?.as_slice())?;
        }
    }
    drop(old);
    txn.delete_table(SNAPSHOT_V1)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn old_fingerprints_keep_their_first_eight_bytes() {
        assert_eq!(
            fingerprint_v1("0123456789abcdef0011223344556677").unwrap(),
            0x0123_4567_89ab_cdef
        );
        assert!(fingerprint_v1("short").is_err());
        assert!(fingerprint_v1("zz23456789abcdef0011223344556677").is_err());
    }
}
