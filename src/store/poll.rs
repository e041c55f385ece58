//! A poll's staging area and its promotion. A running poll stages each page (changed documents,
//! ids seen, its checkpoint) in its own small transaction, invisible to everyone else; when the
//! last page is in, [`Store::promote`] turns everything staged into snapshot rows, events and
//! deliveries in ONE write transaction. A crash at any instant leaves the last promoted state,
//! and the checkpoint lets the next run continue from the last staged page.

use redb::{Durability, ReadableDatabase, ReadableTable, Table, WriteTransaction};
use serde_json::Value;

use super::codec::{
    DocReader, DocWriter, SnapRow, Staged, StagedOp, booking_key, decode, decode_blob, encode,
    encode_blob, encode_delivery, encode_event, key_id, pack_hashes, source_range, unpack_hashes,
};
use super::rows::SourceState;
use super::{
    DELIVERIES, DICTS, DOCS, DUE, EVENT_IDS, EVENT_REFS, EVENTS, LANES, META, NEXT_DICT, NEXT_GEN,
    NEXT_SEQ, ORPHANS, PROGRESS, Result, SEEN, SNAPSHOT, SOURCES, STAGING, Store, StoreError,
};
use crate::outbox::{Booking, Delivery, Event, EventKind, FieldChange};

/// A page needs at least this many documents to train the source's compression dictionary on.
const DICT_MIN_SAMPLES: usize = 32;
/// Size of a trained dictionary.
const DICT_SIZE: usize = 16 * 1024;
/// Documents sampled for training.
const DICT_MAX_SAMPLES: usize = 2000;
/// Staged rows handled per chunk during promotion (bounds memory when order does not matter).
const PROMOTE_CHUNK: usize = 4096;
/// Most events a promotion hands back for logs and watchers; the rest are only counted.
pub const REPORTED_EVENTS: usize = 10_000;

/// One change found on a page, for [`Store::stage_page`].
#[derive(Debug, Clone, PartialEq)]
pub enum PageOp {
    /// A new or changed booking (or one found by a lookup): its document's JSON, stored under
    /// the poll's generation.
    Doc {
        /// Booking id.
        id: String,
        /// The document as JSON.
        json: Vec<u8>,
        /// What is staged (`StagedOp::Doc` or `StagedOp::Found`).
        staged: Staged,
    },
    /// A change without a document (`StagedOp::Inside`, `StagedOp::Gone`).
    Mark {
        /// Booking id.
        id: String,
        /// What is staged.
        staged: Staged,
    },
    /// A later copy of a booking in this poll matches the snapshot: drop what was staged for it.
    Unstage {
        /// Booking id.
        id: String,
    },
}

impl Store {
    /// The stored state of a source, if it ever completed a poll.
    pub fn source_state(&self, source: &str) -> Result<Option<SourceState>> {
        self.guard(|| {
            let txn = self.db.begin_read()?;
            let t = txn.open_table(SOURCES)?;
            match t.get(source)? {
                Some(v) => Ok(Some(decode("sources_v1", v.value())?)),
                None => Ok(None),
            }
        })
    }

    /// The checkpoint of the poll of `source` staged so far, with its generation.
    pub fn checkpoint(&self, source: &str) -> Result<Option<(u32, Vec<u8>)>> {
        self.guard(|| {
            let txn = self.db.begin_read()?;
            let t = txn.open_table(PROGRESS)?;
            match t.get(source)? {
                Some(v) => Ok(Some(split_progress(v.value())?)),
                None => Ok(None),
            }
        })
    }

    /// Starts a poll: drops whatever another poll of `source` left staged, allocates a document
    /// generation and writes the first checkpoint. Returns the generation.
    pub fn begin_poll(&self, source: &str, checkpoint: &[u8]) -> Result<u32> {
        self.guard(|| {
            let txn = self.db.begin_write()?;
            let generation = {
                discard_in(&txn, source)?;
                let mut meta = txn.open_table(META)?;
                let generation = meta.get(NEXT_GEN)?.map(|v| v.value()).unwrap_or(1);
                meta.insert(NEXT_GEN, generation + 1)?;
                let generation = u32::try_from(generation).map_err(|_| StoreError::Corrupt {
                    table: "meta_v1",
                    reason: "document generations exhausted".into(),
                })?;
                txn.open_table(PROGRESS)?
                    .insert(source, join_progress(generation, checkpoint).as_slice())?;
                generation
            };
            txn.commit()?;
            Ok(generation)
        })
    }

    /// Drops a staged poll: its staged rows and documents, seen pages and checkpoint. The snapshot
    /// is untouched.
    pub fn discard_poll(&self, source: &str) -> Result<()> {
        self.guard(|| {
            let txn = self.db.begin_write()?;
            discard_in(&txn, source)?;
            txn.commit()?;
            Ok(())
        })
    }

    /// Writes one page in one transaction: its changes, the ids it saw (when disappearances are
    /// looked for) and the new checkpoint. With `durable` false the commit is not fsynced; a
    /// crash may then lose it (and the poll resumes from an earlier page), never more.
    pub fn stage_page(
        &self,
        source: &str,
        ops: &[PageOp],
        seen: Option<(u32, &[u64])>,
        checkpoint: &[u8],
        durable: bool,
    ) -> Result<()> {
        self.guard(|| {
            let mut txn = self.db.begin_write()?;
            // Where the file cannot take a non-durable commit, the page is simply fsynced.
            if !durable && txn.set_durability(Durability::None).is_err() {
                tracing::debug!("non-durable commit refused; staging the page durably");
            }
            {
                let mut progress = txn.open_table(PROGRESS)?;
                let generation = match progress.get(source)? {
                    Some(v) => split_progress(v.value())?.0,
                    None => {
                        return Err(StoreError::Corrupt {
                            table: "progress_v1",
                            reason: format!(
                                "a page was staged for {source} without a running poll"
                            ),
                        });
                    }
                };
                progress.insert(source, join_progress(generation, checkpoint).as_slice())?;
                let mut staging = txn.open_table(STAGING)?;
                let mut docs = txn.open_table(DOCS)?;
                let mut writer = None;
                for op in ops {
                    match op {
                        PageOp::Doc { id, json, staged } => {
                            let w = match &mut writer {
                                Some(w) => w,
                                None => writer.insert(doc_writer(&txn, source, ops)?),
                            };
                            docs.insert(
                                (source, id.as_str(), generation),
                                w.encode(json)?.as_slice(),
                            )?;
                            staging.insert(
                                booking_key(source, id).as_slice(),
                                staged.encode().as_slice(),
                            )?;
                        }
                        PageOp::Mark { id, staged } => {
                            staging.insert(
                                booking_key(source, id).as_slice(),
                                staged.encode().as_slice(),
                            )?;
                        }
                        PageOp::Unstage { id } => {
                            staging.remove(booking_key(source, id).as_slice())?;
                            docs.remove((source, id.as_str(), generation))?;
                        }
                    }
                }
                if let Some((page, hashes)) = seen {
                    txn.open_table(SEEN)?
                        .insert((source, page), pack_hashes(hashes).as_slice())?;
                }
            }
            txn.commit()?;
            Ok(())
        })
    }

    /// Calls `f` with every booking id staged for `source`.
    pub fn staged_ids(&self, source: &str, mut f: impl FnMut(&str)) -> Result<()> {
        self.guard(|| {
            let txn = self.db.begin_read()?;
            let t = txn.open_table(STAGING)?;
            let (lo, hi) = source_range(source);
            for entry in t.range(lo.as_slice()..hi.as_slice())? {
                let (k, _) = entry?;
                f(key_id("staging_v1", k.value())?);
            }
            Ok(())
        })
    }

    /// Calls `f` with every id hash the staged pages of `source` saw.
    pub fn seen_hashes(&self, source: &str, mut f: impl FnMut(u64)) -> Result<()> {
        self.guard(|| {
            let txn = self.db.begin_read()?;
            let t = txn.open_table(SEEN)?;
            for entry in t.range((source, 0u32)..=(source, u32::MAX))? {
                let (_, v) = entry?;
                unpack_hashes(v.value()).for_each(&mut f);
            }
            Ok(())
        })
    }

    /// Promotes the staged poll of `source` in ONE write transaction: `f` decides every staged
    /// change through the [`Promotion`] (snapshot rows, events, deliveries, source state); then
    /// the staging area of `source` is cleared. Nothing is visible unless this commits.
    pub fn promote<T>(
        &self,
        source: &str,
        f: impl FnOnce(&mut Promotion<'_>) -> Result<T>,
    ) -> Result<T> {
        self.guard(|| {
            let txn = self.db.begin_write()?;
            let out = {
                let generation = match txn.open_table(PROGRESS)?.get(source)? {
                    Some(v) => split_progress(v.value())?.0,
                    None => {
                        return Err(StoreError::Corrupt {
                            table: "progress_v1",
                            reason: format!("no staged poll of {source} to promote"),
                        });
                    }
                };
                let mut p = Promotion::new(&txn, source, generation)?;
                let out = f(&mut p)?;
                p.finish()?;
                out
            };
            txn.commit()?;
            Ok(out)
        })
    }
}

fn join_progress(generation: u32, checkpoint: &[u8]) -> Vec<u8> {
    let mut b = generation.to_be_bytes().to_vec();
    b.extend_from_slice(checkpoint);
    encode_blob(&b)
}

fn split_progress(b: &[u8]) -> Result<(u32, Vec<u8>)> {
    let inner = decode_blob("progress_v1", b)?;
    if inner.len() < 4 {
        return Err(StoreError::Corrupt {
            table: "progress_v1",
            reason: "checkpoint without a generation".into(),
        });
    }
    let mut g = [0u8; 4];
    g.copy_from_slice(&inner[..4]);
    Ok((u32::from_be_bytes(g), inner[4..].to_vec()))
}

/// The compressor for a page's documents: the source's newest dictionary, trained now from this
/// page if the source has none and the page has enough documents.
fn doc_writer(txn: &WriteTransaction, source: &str, ops: &[PageOp]) -> Result<DocWriter> {
    let mut dicts = txn.open_table(DICTS)?;
    let newest = dicts
        .range((source, 0u32)..=(source, u32::MAX))?
        .next_back()
        .transpose()?
        .map(|(k, v)| (k.value().1, v.value().to_vec()));
    if let Some((id, d)) = newest {
        return DocWriter::new(Some((id, &d)));
    }
    let samples: Vec<&[u8]> = ops
        .iter()
        .filter_map(|op| match op {
            PageOp::Doc { json, .. } => Some(json.as_slice()),
            _ => None,
        })
        .take(DICT_MAX_SAMPLES)
        .collect();
    if samples.len() < DICT_MIN_SAMPLES {
        return DocWriter::new(None);
    }
    let sizes: Vec<usize> = samples.iter().map(|s| s.len()).collect();
    let joined = samples.concat();
    // Training can refuse samples that are too alike or too small; then documents go without.
    let Ok(dict) = zstd::dict::from_continuous(&joined, &sizes, DICT_SIZE) else {
        return DocWriter::new(None);
    };
    let mut meta = txn.open_table(META)?;
    let id = meta.get(NEXT_DICT)?.map(|v| v.value()).unwrap_or(1);
    meta.insert(NEXT_DICT, id + 1)?;
    let id = u32::try_from(id).map_err(|_| StoreError::Corrupt {
        table: "meta_v1",
        reason: "dictionary ids exhausted".into(),
    })?;
    dicts.insert((source, id), dict.as_slice())?;
    DocWriter::new(Some((id, &dict)))
}

/// Drops the staged poll of `source` inside `txn`.
fn discard_in(txn: &WriteTransaction, source: &str) -> Result<()> {
    let mut progress = txn.open_table(PROGRESS)?;
    let Some(generation) = progress
        .remove(source)?
        .map(|v| split_progress(v.value()))
        .transpose()?
        .map(|(g, _)| g)
    else {
        return Ok(());
    };
    let mut staging = txn.open_table(STAGING)?;
    let mut docs = txn.open_table(DOCS)?;
    let (lo, hi) = source_range(source);
    let mut ids = Vec::new();
    for entry in staging.range(lo.as_slice()..hi.as_slice())? {
        let (k, _) = entry?;
        ids.push(key_id("staging_v1", k.value())?.to_string());
    }
    for id in &ids {
        docs.remove((source, id.as_str(), generation))?;
    }
    staging.retain_in(lo.as_slice()..hi.as_slice(), |_, _| false)?;
    txn.open_table(SEEN)?
        .retain_in((source, 0u32)..=(source, u32::MAX), |_, _| false)?;
    Ok(())
}

/// The tables of one promotion, scoped to one source.
pub struct Promotion<'t> {
    source: String,
    generation: u32,
    snapshot: Table<'t, &'static [u8], &'static [u8]>,
    docs: Table<'t, (&'static str, &'static str, u32), &'static [u8]>,
    dicts: Table<'t, (&'static str, u32), &'static [u8]>,
    staging: Table<'t, &'static [u8], &'static [u8]>,
    sources: Table<'t, &'static str, &'static [u8]>,
    events: Table<'t, u64, &'static [u8]>,
    deliveries: Table<'t, (&'static str, u64), &'static [u8]>,
    lanes: Table<'t, (&'static str, &'static str, u64), ()>,
    due: Table<'t, (&'static str, i64, u64), ()>,
    meta: Table<'t, &'static str, u64>,
    event_ids: Table<'t, &'static str, u64>,
    event_refs: Table<'t, u64, u32>,
    orphans: Table<'t, (i64, u64), ()>,
    txn: &'t WriteTransaction,
    reader: DocReader,
    emitted: Vec<Event>,
    emitted_total: usize,
}

impl<'t> Promotion<'t> {
    fn new(txn: &'t WriteTransaction, source: &str, generation: u32) -> Result<Self> {
        Ok(Promotion {
            source: source.to_string(),
            generation,
            snapshot: txn.open_table(SNAPSHOT)?,
            docs: txn.open_table(DOCS)?,
            dicts: txn.open_table(DICTS)?,
            staging: txn.open_table(STAGING)?,
            sources: txn.open_table(SOURCES)?,
            events: txn.open_table(EVENTS)?,
            deliveries: txn.open_table(DELIVERIES)?,
            lanes: txn.open_table(LANES)?,
            due: txn.open_table(DUE)?,
            meta: txn.open_table(META)?,
            event_ids: txn.open_table(EVENT_IDS)?,
            event_refs: txn.open_table(EVENT_REFS)?,
            orphans: txn.open_table(ORPHANS)?,
            txn,
            reader: DocReader::default(),
            emitted: Vec::new(),
            emitted_total: 0,
        })
    }

    /// The generation documents of this poll are stored under.
    pub fn generation(&self) -> u32 {
        self.generation
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
        self.sources.insert(
            self.source.as_str(),
            encode("sources_v1", state)?.as_slice(),
        )?;
        Ok(())
    }

    /// Calls `f` with every staged change, in detection order when `in_order` (which holds the
    /// staged keys in memory), else in key order a chunk at a time.
    pub fn for_each_staged(
        &mut self,
        in_order: bool,
        mut f: impl FnMut(&mut Self, &str, Staged) -> Result<()>,
    ) -> Result<()> {
        let (lo, hi) = source_range(&self.source);
        if in_order {
            let mut all: Vec<(u64, Vec<u8>, Staged)> = Vec::new();
            for entry in self.staging.range(lo.as_slice()..hi.as_slice())? {
                let (k, v) = entry?;
                let s = Staged::decode(v.value())?;
                all.push((s.order, k.value().to_vec(), s));
            }
            all.sort_by_key(|(order, _, _)| *order);
            for (_, key, s) in all {
                let id = key_id("staging_v1", &key)?.to_string();
                f(self, &id, s)?;
            }
            return Ok(());
        }
        let mut from = lo;
        loop {
            let mut chunk: Vec<(Vec<u8>, Staged)> = Vec::with_capacity(PROMOTE_CHUNK);
            for entry in self.staging.range(from.as_slice()..hi.as_slice())? {
                let (k, v) = entry?;
                chunk.push((k.value().to_vec(), Staged::decode(v.value())?));
                if chunk.len() == PROMOTE_CHUNK {
                    break;
                }
            }
            let Some((last, _)) = chunk.last() else {
                return Ok(());
            };
            let mut next = last.clone();
            next.push(0);
            for (key, s) in &chunk {
                let id = key_id("staging_v1", key)?.to_string();
                f(self, &id, s.clone())?;
            }
            if chunk.len() < PROMOTE_CHUNK {
                return Ok(());
            }
            from = next;
        }
    }

    /// The snapshot row of a booking.
    pub fn row(&self, id: &str) -> Result<Option<SnapRow>> {
        match self
            .snapshot
            .get(booking_key(&self.source, id).as_slice())?
        {
            Some(v) => Ok(Some(SnapRow::decode(v.value())?)),
            None => Ok(None),
        }
    }

    /// Writes a booking's snapshot row; a document of an older generation is dropped.
    pub fn put_row(&mut self, id: &str, row: &SnapRow) -> Result<()> {
        let key = booking_key(&self.source, id);
        let old = self
            .snapshot
            .insert(key.as_slice(), row.encode().as_slice())?
            .map(|v| SnapRow::decode(v.value()))
            .transpose()?;
        if let Some(old) = old
            && old.generation != row.generation
        {
            self.docs
                .remove((self.source.as_str(), id, old.generation))?;
        }
        Ok(())
    }

    /// A booking's document stored under generation `generation`.
    pub fn doc(&mut self, id: &str, generation: u32) -> Result<Value> {
        let source = self.source.clone();
        let bytes = match self.docs.get((source.as_str(), id, generation))? {
            Some(v) => v.value().to_vec(),
            None => {
                return Err(StoreError::Corrupt {
                    table: "docs_v2",
                    reason: format!("booking {id} of {source} has no document {generation}"),
                });
            }
        };
        let dicts = &self.dicts;
        let mut dict = |n: u32| -> Result<Option<Vec<u8>>> {
            Ok(dicts.get((source.as_str(), n))?.map(|v| v.value().to_vec()))
        };
        self.reader.decode(&bytes, &mut dict)
    }

    /// Creates an event (id and sequence fixed now) and one pending delivery per endpoint.
    pub fn emit(
        &mut self,
        kind: EventKind,
        booking_id: &str,
        booking: Value,
        changes: Vec<FieldChange>,
        endpoints: &[(&str, i64)],
        detected_ms: i64,
    ) -> Result<()> {
        let booking = Booking::from_value(booking).map_err(|e| StoreError::Encode {
            table: "events_v2",
            reason: e.to_string(),
        })?;
        let seq = self.meta.get(NEXT_SEQ)?.map(|v| v.value()).unwrap_or(1);
        self.meta.insert(NEXT_SEQ, seq + 1)?;
        let event = Event {
            id: format!("evt_{}", uuid::Uuid::now_v7().simple()),
            seq,
            kind,
            source: self.source.clone(),
            booking_id: booking_id.to_string(),
            detected_ms,
            booking,
            changes,
        };
        self.events.insert(seq, encode_event(&event)?.as_slice())?;
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
            self.deliveries
                .insert((*ep, seq), encode_delivery(&d).as_slice())?;
            let lane = d.lane.as_str();
            let lane_empty = self
                .lanes
                .range((*ep, lane, 0u64)..=(*ep, lane, u64::MAX))?
                .next()
                .is_none();
            self.lanes.insert((*ep, lane, seq), ())?;
            if lane_empty {
                self.due.insert((*ep, d.next_ms, seq), ())?;
            }
        }
        self.emitted_total += 1;
        if self.emitted.len() < REPORTED_EVENTS {
            self.emitted.push(event);
        }
        Ok(())
    }

    /// The events created so far (at most [`REPORTED_EVENTS`]) and how many there were.
    pub fn take_emitted(&mut self) -> (Vec<Event>, usize) {
        (std::mem::take(&mut self.emitted), self.emitted_total)
    }

    /// Drops documents staged but not taken into the snapshot, then clears the staging area,
    /// the seen pages and the checkpoint of this source.
    fn finish(self) -> Result<()> {
        let Promotion {
            source,
            generation,
            snapshot,
            mut docs,
            mut staging,
            txn,
            ..
        } = self;
        let (lo, hi) = source_range(&source);
        let mut unused = Vec::new();
        for entry in staging.range(lo.as_slice()..hi.as_slice())? {
            let (k, v) = entry?;
            if matches!(
                Staged::decode(v.value())?.op,
                StagedOp::Doc { .. } | StagedOp::Found { .. }
            ) {
                let id = key_id("staging_v1", k.value())?.to_string();
                let taken = match snapshot.get(booking_key(&source, &id).as_slice())? {
                    Some(r) => SnapRow::decode(r.value())?.generation == generation,
                    None => false,
                };
                if !taken {
                    unused.push(id);
                }
            }
        }
        for id in &unused {
            docs.remove((source.as_str(), id.as_str(), generation))?;
        }
        staging.retain_in(lo.as_slice()..hi.as_slice(), |_, _| false)?;
        txn.open_table(SEEN)?.retain_in(
            (source.as_str(), 0u32)..=(source.as_str(), u32::MAX),
            |_, _| false,
        )?;
        txn.open_table(PROGRESS)?.remove(source.as_str())?;
        Ok(())
    }
}
