//! The poll transaction: a source's snapshot rows, its state, and the events and deliveries a
//! poll creates, all in ONE write transaction.

use redb::{ReadableDatabase, ReadableTable, Table, WriteTransaction};
use serde_json::Value;

use super::codec::{decode, encode};
use super::rows::{SourceState, StoredBooking};
use super::{
    DELIVERIES, DUE, EVENT_IDS, EVENT_REFS, EVENTS, LANES, META, NEXT_SEQ, ORPHANS, Result,
    SNAPSHOT, SOURCES, Store,
};
use crate::outbox::{Delivery, Event, EventKind, FieldChange};

impl Store {
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
    pub(super) fn new(txn: &'t WriteTransaction, source: &str, now_ms: i64) -> Result<Self> {
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
        self.sources.insert(
            self.source.as_str(),
            encode("sources_v1", state)?.as_slice(),
        )?;
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
        self.snapshot.insert(
            (self.source.as_str(), id),
            encode("snapshot_v1", booking)?.as_slice(),
        )?;
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
        self.events
            .insert(seq, encode("events_v1", &event)?.as_slice())?;
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
                .insert((*ep, seq), encode("deliveries_v1", &d)?.as_slice())?;
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
