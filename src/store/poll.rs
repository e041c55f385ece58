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
/// Staged changes promoted per write transaction (bounds its memory and copy-on-write pages).
pub(super) const PROMOTE_CHUNK: usize = 1024;
/// Chunks of a promotion without events are fsynced at least this often.
const DURABLE_EVERY: std::time::Duration = std::time::Duration::from_millis(250);
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

    /// Promotes the staged poll of `source`, a chunk of staged changes per write transaction:
    /// `decide` is called with each staged change (in detection order when `in_order`, else in
    /// key order) and writes its snapshot row, events and deliveries through the
    /// [`Promotion`]; the change leaves the staging area in the same transaction, so a crash
    /// between chunks loses nothing and repeats nothing: the staged poll is complete (every
    /// page succeeded), and the next run promotes what is left. The last transaction also calls
    /// `last` (the source's new state) and clears the checkpoint and the seen pages.
    ///
    /// A chunk that created events is fsynced before the next one starts, so no event can be
    /// delivered and then lost; chunks without events (a baseline) are fsynced every
    /// [`DURABLE_EVERY`], the last one always. Bounded chunks keep the memory and the
    /// copy-on-write pages of one transaction bounded, whatever the number of changes.
    pub fn promote<T>(
        &self,
        source: &str,
        in_order: bool,
        mut decide: impl FnMut(&mut Promotion<'_>, &str, Staged) -> Result<()>,
        last: impl FnOnce(&mut Promotion<'_>) -> Result<T>,
    ) -> Result<T> {
        self.guard(|| {
            let generation = {
                let txn = self.db.begin_read()?;
                match txn.open_table(PROGRESS)?.get(source)? {
                    Some(v) => split_progress(v.value())?.0,
                    None => {
                        return Err(StoreError::Corrupt {
                            table: "progress_v1",
                            reason: format!("no staged poll of {source} to promote"),
                        });
                    }
                }
            };
            let mut ordered = if in_order {
                Some(self.staged_in_order(source)?)
            } else {
                None
            };
            let mut carried = Emitted::default();
            let mut last_durable = std::time::Instant::now();
            let mut last = Some(last);
            loop {
                let mut txn = self.db.begin_write()?;
                let (done, emitted, out) = {
                    let mut p = Promotion::new(&txn, source, generation)?;
                    p.emitted = std::mem::take(&mut carried);
                    let before = p.emitted.total;
                    let keys = match &mut ordered {
                        Some(q) => q.drain(..q.len().min(PROMOTE_CHUNK)).collect(),
                        None => p.first_staged(PROMOTE_CHUNK)?,
                    };
                    let done = match &ordered {
                        Some(q) => q.is_empty(),
                        None => keys.len() < PROMOTE_CHUNK,
                    };
                    for key in &keys {
                        p.promote_one(key, &mut decide)?;
                    }
                    let emitted = p.emitted.total > before;
                    let out = match last.take() {
                        Some(last) if done => Some(p.finish(last)?),
                        not_yet => {
                            last = not_yet;
                            None
                        }
                    };
                    carried = std::mem::take(&mut p.emitted);
                    (done, emitted, out)
                };
                let durable = done || emitted || last_durable.elapsed() >= DURABLE_EVERY;
                if !durable && txn.set_durability(Durability::None).is_err() {
                    tracing::debug!("non-durable commit refused; committing the chunk durably");
                }
                txn.commit()?;
                if durable {
                    last_durable = std::time::Instant::now();
                }
                if let Some(out) = out {
                    return Ok(out);
                }
            }
        })
    }

    /// The staging keys of `source` in detection order (held in memory: a key and an order a
    /// staged change).
    fn staged_in_order(&self, source: &str) -> Result<std::collections::VecDeque<Vec<u8>>> {
        let txn = self.db.begin_read()?;
        let t = txn.open_table(STAGING)?;
        let (lo, hi) = source_range(source);
        let mut all: Vec<(u64, Vec<u8>)> = Vec::new();
        for entry in t.range(lo.as_slice()..hi.as_slice())? {
            let (k, v) = entry?;
            all.push((Staged::decode(v.value())?.order, k.value().to_vec()));
        }
        all.sort_unstable_by_key(|(order, _)| *order);
        Ok(all.into_iter().map(|(_, k)| k).collect())
    }
}

/// The two document generations a booking's document alternates between when a ping's lookup
/// stores it outside any poll. Poll generations count up from 1 and never reach them, so a
/// lookup's document never collides with the one a running poll staged, nor with the current
/// one.
const REFRESH_GENERATIONS: [u32; 2] = [u32::MAX, u32::MAX - 1];

impl Store {
    /// Commits looked-up bookings outside any poll (a ping's refresh), in ONE write
    /// transaction: `f` decides each booking through the [`Promotion`] (its rows, documents,
    /// events, deliveries, and the pings it answers). The staging area of a running poll is
    /// left alone.
    pub fn refresh<T>(
        &self,
        source: &str,
        f: impl FnOnce(&mut Promotion<'_>) -> Result<T>,
    ) -> Result<T> {
        let txn = self.db.begin_write()?;
        let out = {
            let mut p = Promotion::new(&txn, source, REFRESH_GENERATIONS[0])?;
            f(&mut p)?
        };
        txn.commit()?;
        Ok(out)
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
    writer: Option<DocWriter>,
    emitted: Emitted,
}

/// The events a promotion created so far, carried from chunk to chunk.
#[derive(Default)]
struct Emitted {
    /// The first [`REPORTED_EVENTS`] of them.
    events: Vec<Event>,
    /// How many there were.
    total: usize,
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
            writer: None,
            emitted: Emitted::default(),
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

    /// The first `n` staging keys of this source, in key order.
    fn first_staged(&self, n: usize) -> Result<Vec<Vec<u8>>> {
        let (lo, hi) = source_range(&self.source);
        let mut keys = Vec::with_capacity(n);
        for entry in self.staging.range(lo.as_slice()..hi.as_slice())? {
            keys.push(entry?.0.value().to_vec());
            if keys.len() == n {
                break;
            }
        }
        Ok(keys)
    }

    /// Takes one staged change out of the staging area and lets `decide` apply it; a document
    /// it staged that did not become the snapshot's is dropped.
    fn promote_one(
        &mut self,
        key: &[u8],
        decide: &mut impl FnMut(&mut Self, &str, Staged) -> Result<()>,
    ) -> Result<()> {
        let staged = match self.staging.remove(key)? {
            Some(v) => Staged::decode(v.value())?,
            None => return Ok(()),
        };
        let id = key_id("staging_v1", key)?.to_string();
        let has_doc = matches!(staged.op, StagedOp::Doc { .. } | StagedOp::Found { .. });
        decide(self, &id, staged)?;
        if has_doc
            && self
                .row(&id)?
                .is_none_or(|r| r.generation != self.generation)
        {
            self.docs
                .remove((self.source.as_str(), id.as_str(), self.generation))?;
        }
        Ok(())
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

    /// The generation a looked-up document of a booking whose row is `prev` is stored under
    /// (see [`Store::refresh`]).
    pub fn refresh_generation(&self, prev: Option<&SnapRow>) -> u32 {
        match prev {
            Some(r) if r.generation == REFRESH_GENERATIONS[0] => REFRESH_GENERATIONS[1],
            _ => REFRESH_GENERATIONS[0],
        }
    }

    /// Stores a booking's document under `generation`, compressed with the source's newest
    /// dictionary.
    pub fn put_doc(&mut self, id: &str, generation: u32, json: &[u8]) -> Result<()> {
        if self.writer.is_none() {
            let newest = self
                .dicts
                .range((self.source.as_str(), 0u32)..=(self.source.as_str(), u32::MAX))?
                .next_back()
                .transpose()?
                .map(|(k, v)| (k.value().1, v.value().to_vec()));
            let w = DocWriter::new(newest.as_ref().map(|(n, d)| (*n, d.as_slice())))?;
            self.writer = Some(w);
        }
        let Some(w) = self.writer.as_mut() else {
            return Ok(());
        };
        let bytes = w.encode(json)?;
        self.docs
            .insert((self.source.as_str(), id, generation), bytes.as_slice())?;
        Ok(())
    }

    /// Removes recorded pings this transaction answers.
    pub fn remove_pings(&mut self, seqs: &[u64]) -> Result<()> {
        super::pings::remove_in(self.txn, &self.source, seqs)
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
            backfill: false,
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
        self.emitted.total += 1;
        if self.emitted.events.len() < REPORTED_EVENTS {
            // Held until the promotion ends: as text, not as a parsed document.
            let mut event = event;
            event.booking.shed_value();
            self.emitted.events.push(event);
        }
        Ok(())
    }

    /// The events created so far (at most [`REPORTED_EVENTS`]) and how many there were.
    pub fn take_emitted(&mut self) -> (Vec<Event>, usize) {
        let e = std::mem::take(&mut self.emitted);
        (e.events, e.total)
    }

    /// The end of a promotion: `last` records the source's state, then the checkpoint and the
    /// seen pages of this source go (the staging area is empty by now).
    fn finish<T>(&mut self, last: impl FnOnce(&mut Self) -> Result<T>) -> Result<T> {
        let out = last(self)?;
        let source = self.source.as_str();
        self.txn
            .open_table(SEEN)?
            .retain_in((source, 0u32)..=(source, u32::MAX), |_, _| false)?;
        self.txn.open_table(PROGRESS)?.remove(source)?;
        Ok(out)
    }
}
