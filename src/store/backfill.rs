//! Backfills: for one endpoint, one event per known booking of the snapshot (`new` for an
//! active booking, `cancel` for a cancelled one), enqueued a chunk per write transaction in
//! booking-key order. The progress row (`backfills_v1`) is written in the same transaction as
//! the chunk's events, so a restart resumes after the last committed chunk, and its presence is
//! what refuses a second backfill of the same endpoint.

use std::ops::Bound;

use redb::{ReadableDatabase, ReadableTable};
use serde::{Deserialize, Serialize};

use super::codec::{
    DocReader, SnapRow, booking_key, decode, encode, encode_delivery, encode_event, key_id,
    source_range,
};
use super::{
    BACKFILLS, DELIVERIES, DICTS, DOCS, DUE, EVENT_IDS, EVENT_REFS, EVENTS, LANES, META, NEXT_SEQ,
    Result, SNAPSHOT, Store, StoreError,
};
use crate::outbox::{Booking, Delivery, Event, EventKind};

const TABLE: &str = "backfills_v1";

/// A backfill in progress (its row in `backfills_v1`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Backfill {
    /// The endpoint the events go to (and only it).
    pub endpoint: String,
    /// Sources still to go through; the first is the one in progress.
    pub sources: Vec<String>,
    /// The last booking id of the current source already enqueued (none before its first).
    pub after: Option<String>,
    /// Events enqueued so far.
    pub enqueued: u64,
    /// When it was started (ms since epoch).
    pub started_ms: i64,
}

/// What [`Store::start_backfill`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BackfillStart {
    /// Recorded; its chunks are to be run.
    Started(Backfill),
    /// One is already running for that endpoint (nothing changed).
    Running(Backfill),
}

impl Store {
    /// Records a backfill of `endpoint` over `sources`, unless one of that endpoint is running.
    pub fn start_backfill(
        &self,
        endpoint: &str,
        sources: Vec<String>,
        now_ms: i64,
    ) -> Result<BackfillStart> {
        self.guard(|| {
            let txn = self.db.begin_write()?;
            let started = {
                let mut t = txn.open_table(BACKFILLS)?;
                if let Some(v) = t.get(endpoint)? {
                    return Ok(BackfillStart::Running(decode(TABLE, v.value())?));
                }
                let b = Backfill {
                    endpoint: endpoint.to_string(),
                    sources,
                    after: None,
                    enqueued: 0,
                    started_ms: now_ms,
                };
                t.insert(endpoint, encode(TABLE, &b)?.as_slice())?;
                b
            };
            txn.commit()?;
            Ok(BackfillStart::Started(started))
        })
    }

    /// Every backfill in progress, by endpoint.
    pub fn backfills(&self) -> Result<Vec<Backfill>> {
        self.guard(|| {
            let txn = self.db.begin_read()?;
            let t = txn.open_table(BACKFILLS)?;
            let mut out = Vec::new();
            for entry in t.range::<&str>(..)? {
                out.push(decode(TABLE, entry?.1.value())?);
            }
            Ok(out)
        })
    }

    /// Enqueues the next chunk (at most `chunk` bookings) of `endpoint`'s backfill in one write
    /// transaction, each as an event for that endpoint alone in the booking's lane (behind what
    /// is already queued for it, ahead of every later change), and records the progress in the
    /// same transaction. Returns the backfill after the chunk (with no `sources` left once it is
    /// finished and its row removed), or `None` if none is running. Holds at most `chunk`
    /// booking documents.
    pub fn backfill_chunk(
        &self,
        endpoint: &str,
        chunk: usize,
        now_ms: i64,
    ) -> Result<Option<Backfill>> {
        self.guard(|| {
            let txn = self.db.begin_write()?;
            let after = {
                let mut backfills = txn.open_table(BACKFILLS)?;
                let Some(mut b): Option<Backfill> = (match backfills.get(endpoint)? {
                    Some(v) => Some(decode(TABLE, v.value())?),
                    None => None,
                }) else {
                    return Ok(None);
                };
                let snapshot = txn.open_table(SNAPSHOT)?;
                let docs = txn.open_table(DOCS)?;
                let dicts = txn.open_table(DICTS)?;
                let mut events = txn.open_table(EVENTS)?;
                let mut event_ids = txn.open_table(EVENT_IDS)?;
                let mut event_refs = txn.open_table(EVENT_REFS)?;
                let mut deliveries = txn.open_table(DELIVERIES)?;
                let mut lanes = txn.open_table(LANES)?;
                let mut due = txn.open_table(DUE)?;
                let mut meta = txn.open_table(META)?;
                let mut reader = DocReader::default();
                let mut left = chunk.max(1);
                while left > 0 {
                    let Some(source) = b.sources.first().cloned() else {
                        break;
                    };
                    let (lo, hi) = source_range(&source);
                    let from = match &b.after {
                        Some(id) => Bound::Excluded(booking_key(&source, id)),
                        None => Bound::Included(lo),
                    };
                    let mut rows: Vec<(String, SnapRow)> = Vec::new();
                    for entry in snapshot.range::<&[u8]>((
                        from.as_ref().map(Vec::as_slice),
                        Bound::Excluded(hi.as_slice()),
                    ))? {
                        let (k, v) = entry?;
                        rows.push((
                            key_id("snapshot_v2", k.value())?.to_string(),
                            SnapRow::decode(v.value())?,
                        ));
                        if rows.len() == left {
                            break;
                        }
                    }
                    let source_done = rows.len() < left;
                    left -= rows.len();
                    for (id, row) in rows {
                        let doc = match docs.get((source.as_str(), id.as_str(), row.generation))? {
                            Some(d) => {
                                let mut dict = |n: u32| -> Result<Option<Vec<u8>>> {
                                    Ok(dicts.get((source.as_str(), n))?.map(|v| v.value().to_vec()))
                                };
                                reader.decode(d.value(), &mut dict)?
                            }
                            None => {
                                return Err(StoreError::Corrupt {
                                    table: "docs_v2",
                                    reason: format!("booking {id} of {source} has no document"),
                                });
                            }
                        };
                        let booking = Booking::from_value(doc).map_err(|e| StoreError::Encode {
                            table: "events_v2",
                            reason: e.to_string(),
                        })?;
                        let seq = meta.get(NEXT_SEQ)?.map(|v| v.value()).unwrap_or(1);
                        meta.insert(NEXT_SEQ, seq + 1)?;
                        let event = Event {
                            id: format!("evt_{}", uuid::Uuid::now_v7().simple()),
                            seq,
                            kind: if row.cancelled {
                                EventKind::Cancel
                            } else {
                                EventKind::New
                            },
                            source: source.clone(),
                            booking_id: id.clone(),
                            detected_ms: now_ms,
                            booking,
                            changes: Vec::new(),
                            backfill: true,
                        };
                        events.insert(seq, encode_event(&event)?.as_slice())?;
                        event_ids.insert(event.id.as_str(), seq)?;
                        event_refs.insert(seq, 1)?;
                        // The booking's lane, as for a detected change: behind whatever is
                        // queued for it already, ahead of every later change.
                        let d = Delivery::new(endpoint, &event);
                        deliveries.insert((endpoint, seq), encode_delivery(&d).as_slice())?;
                        let lane = d.lane.as_str();
                        let lane_empty = lanes
                            .range((endpoint, lane, 0u64)..=(endpoint, lane, u64::MAX))?
                            .next()
                            .is_none();
                        lanes.insert((endpoint, lane, seq), ())?;
                        if lane_empty {
                            due.insert((endpoint, d.next_ms, seq), ())?;
                        }
                        b.enqueued += 1;
                        b.after = Some(id);
                    }
                    if source_done {
                        b.sources.remove(0);
                        b.after = None;
                    }
                }
                if b.sources.is_empty() {
                    backfills.remove(endpoint)?;
                } else {
                    backfills.insert(endpoint, encode(TABLE, &b)?.as_slice())?;
                }
                Some(b)
            };
            txn.commit()?;
            Ok(after)
        })
    }
}
