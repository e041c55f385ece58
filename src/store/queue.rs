//! The delivery queue: due lane heads, recording outcomes (group commit), replay, retention, and
//! the listings the admin API shows.

use std::sync::Arc;

use redb::{ReadableDatabase, ReadableTable, Table};
use serde::Serialize;

use super::codec::{decode_delivery, decode_event, encode_delivery};
use super::{
    DEAD, DELIVERED, DELIVERIES, DUE, EVENT_IDS, EVENT_REFS, EVENTS, LANES, ORPHANS, Result, Store,
};
use crate::outbox::{Delivery, DeliveryState, Event};

/// Which deliveries to put back in their lanes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplaySelector {
    /// One event (by its id), for every endpoint or one.
    Event {
        /// The event id (`evt_...`).
        id: String,
        /// Only this endpoint.
        endpoint: Option<String>,
    },
    /// Every dead letter of one endpoint.
    DeadOf {
        /// Endpoint name.
        endpoint: String,
    },
    /// Every event detected in `[from_ms, to_ms]`, delivered or dead.
    Range {
        /// Start (ms since epoch, inclusive).
        from_ms: i64,
        /// End (ms since epoch, inclusive).
        to_ms: i64,
        /// Only this endpoint.
        endpoint: Option<String>,
    },
}

/// A due delivery with its event.
#[derive(Debug, Clone)]
pub struct DueItem {
    /// The delivery row.
    pub delivery: Delivery,
    /// The event it carries.
    pub event: Arc<Event>,
}

/// Result of a due query.
#[derive(Debug, Clone, Default)]
pub struct DueBatch {
    /// Due now, oldest first.
    pub items: Vec<DueItem>,
    /// The earliest later due time among lane heads not skipped, if any.
    pub next_due_ms: Option<i64>,
}

/// Counts for health and metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Counts {
    /// Events stored.
    pub events: u64,
    /// Deliveries pending (queued or retrying).
    pub pending: u64,
    /// Lane heads waiting in the due index.
    pub due: u64,
    /// Dead letters.
    pub dead: u64,
}

impl Store {
    /// Lane heads due at `now_ms`: for each listed endpoint at most its limit, skipping the
    /// sequence numbers it has in flight (a sorted slice). Endpoints not listed are not read at
    /// all. Each endpoint's heads are one range of the due index, so the work is the rows
    /// returned plus those in flight, whatever the size of the queue.
    pub fn due(&self, now_ms: i64, endpoints: &[(&str, usize, &[u64])]) -> Result<DueBatch> {
        self.guard(|| {
            let txn = self.db.begin_read()?;
            let due = txn.open_table(DUE)?;
            let deliveries = txn.open_table(DELIVERIES)?;
            let events = txn.open_table(EVENTS)?;
            let mut batch = DueBatch::default();
            // One event row per event, even when several endpoints have it due.
            let mut event_cache: std::collections::BTreeMap<u64, Arc<Event>> = Default::default();
            let later = |batch: &mut DueBatch, at: i64| {
                batch.next_due_ms = Some(batch.next_due_ms.map_or(at, |n| n.min(at)));
            };
            for &(endpoint, limit, in_flight) in endpoints {
                if limit == 0 {
                    continue;
                }
                let mut taken = 0;
                for entry in
                    due.range((endpoint, i64::MIN, 0u64)..=(endpoint, i64::MAX, u64::MAX))?
                {
                    let (k, _) = entry?;
                    let (_, at, seq) = k.value();
                    if in_flight.binary_search(&seq).is_ok() {
                        continue;
                    }
                    if at > now_ms {
                        later(&mut batch, at);
                        break;
                    }
                    if taken >= limit {
                        later(&mut batch, at);
                        break;
                    }
                    let Some(row) = deliveries.get((endpoint, seq))? else {
                        continue;
                    };
                    let delivery = decode_delivery(row.value())?;
                    let event = match event_cache.get(&seq) {
                        Some(e) => e.clone(),
                        None => {
                            let Some(ev) = events.get(seq)? else { continue };
                            let e: Arc<Event> = Arc::new(decode_event(ev.value())?);
                            event_cache.insert(seq, e.clone());
                            e
                        }
                    };
                    batch.items.push(DueItem { delivery, event });
                    taken += 1;
                }
            }
            // Oldest first, as one index over all endpoints would give them.
            batch.items.sort_by(|a, b| {
                (a.delivery.next_ms, &a.delivery.endpoint, a.delivery.seq).cmp(&(
                    b.delivery.next_ms,
                    &b.delivery.endpoint,
                    b.delivery.seq,
                ))
            });
            Ok(batch)
        })
    }

    /// Writes a batch of attempt outcomes in ONE transaction (group commit). Each entry is the
    /// delivery row after the attempt; `prev_next_ms` is the due time it was fetched under.
    /// Finished deliveries leave their lane and promote the lane's next event (due at `now_ms`).
    pub fn record(&self, outcomes: &[(Delivery, i64)], now_ms: i64) -> Result<usize> {
        self.guard(|| {
            let txn = self.db.begin_write()?;
            let mut written = 0;
            {
                let mut deliveries = txn.open_table(DELIVERIES)?;
                let mut lanes = txn.open_table(LANES)?;
                let mut due = txn.open_table(DUE)?;
                let mut dead = txn.open_table(DEAD)?;
                let mut delivered = txn.open_table(DELIVERED)?;
                for (row, prev_next_ms) in outcomes {
                    let ep = row.endpoint.as_str();
                    // Only a row still due under the time we fetched it may be updated: anything
                    // else was changed meanwhile (replayed, re-enabled) and wins.
                    if due.remove((ep, *prev_next_ms, row.seq))?.is_none() {
                        continue;
                    }
                    written += 1;
                    deliveries.insert((ep, row.seq), encode_delivery(row).as_slice())?;
                    match row.state {
                        DeliveryState::Pending => {
                            due.insert((ep, row.next_ms, row.seq), ())?;
                        }
                        DeliveryState::Delivered | DeliveryState::Dead => {
                            if row.state == DeliveryState::Dead {
                                dead.insert((ep, row.seq), ())?;
                            } else {
                                delivered.insert((row.created_ms, ep, row.seq), ())?;
                            }
                            lanes.remove((ep, row.lane.as_str(), row.seq))?;
                            promote(&mut lanes, &mut deliveries, &mut due, ep, &row.lane, now_ms)?;
                        }
                    }
                }
            }
            txn.commit()?;
            Ok(written)
        })
    }

    /// Every delivery row of one event (all endpoints), for tests and the admin API.
    pub fn deliveries_of(&self, seq: u64) -> Result<Vec<Delivery>> {
        self.guard(|| {
            let txn = self.db.begin_read()?;
            let t = txn.open_table(DELIVERIES)?;
            let mut out = Vec::new();
            for entry in t.range::<(&str, u64)>(..)? {
                let (k, v) = entry?;
                if k.value().1 == seq {
                    out.push(decode_delivery(v.value())?);
                }
            }
            Ok(out)
        })
    }

    /// Delivery rows in a given state, newest (highest event sequence) first, at most `limit`.
    /// Reads the keys of that state's index and decodes only the rows returned.
    pub fn deliveries_in(&self, state: DeliveryState, limit: usize) -> Result<Vec<Delivery>> {
        self.guard(|| {
            let txn = self.db.begin_read()?;
            let mut keys: Vec<(u64, String)> = Vec::new();
            match state {
                DeliveryState::Dead => {
                    for entry in txn.open_table(DEAD)?.range::<(&str, u64)>(..)? {
                        let (k, _) = entry?;
                        let (ep, seq) = k.value();
                        keys.push((seq, ep.to_string()));
                    }
                }
                DeliveryState::Pending => {
                    for entry in txn.open_table(LANES)?.range::<(&str, &str, u64)>(..)? {
                        let (k, _) = entry?;
                        let (ep, _, seq) = k.value();
                        keys.push((seq, ep.to_string()));
                    }
                }
                DeliveryState::Delivered => {
                    for entry in txn.open_table(DELIVERED)?.range::<(i64, &str, u64)>(..)? {
                        let (k, _) = entry?;
                        let (_, ep, seq) = k.value();
                        keys.push((seq, ep.to_string()));
                    }
                }
            }
            keys.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
            keys.truncate(limit);
            let t = txn.open_table(DELIVERIES)?;
            let mut out = Vec::with_capacity(keys.len());
            for (seq, ep) in keys {
                if let Some(v) = t.get((ep.as_str(), seq))? {
                    out.push(decode_delivery(v.value())?);
                }
            }
            Ok(out)
        })
    }

    /// The newest events, newest first, at most `limit`.
    pub fn recent_events(&self, limit: usize) -> Result<Vec<Event>> {
        self.guard(|| {
            let txn = self.db.begin_read()?;
            let t = txn.open_table(EVENTS)?;
            let mut out = Vec::new();
            for entry in t.range::<u64>(..)?.rev().take(limit) {
                let (_, v) = entry?;
                out.push(decode_event(v.value())?);
            }
            Ok(out)
        })
    }

    /// One event by sequence number.
    pub fn event(&self, seq: u64) -> Result<Option<Event>> {
        self.guard(|| {
            let txn = self.db.begin_read()?;
            let t = txn.open_table(EVENTS)?;
            match t.get(seq)? {
                Some(v) => Ok(Some(decode_event(v.value())?)),
                None => Ok(None),
            }
        })
    }

    /// Every event, oldest first (tests and small inspections).
    pub fn events(&self) -> Result<Vec<Event>> {
        self.guard(|| {
            let txn = self.db.begin_read()?;
            let t = txn.open_table(EVENTS)?;
            let mut out = Vec::new();
            for entry in t.range::<u64>(..)? {
                let (_, v) = entry?;
                out.push(decode_event(v.value())?);
            }
            Ok(out)
        })
    }

    /// Row counts (each a table length: cheap whatever the queue size).
    pub fn counts(&self) -> Result<Counts> {
        self.guard(|| {
            use redb::ReadableTableMetadata;
            let txn = self.db.begin_read()?;
            Ok(Counts {
                events: txn.open_table(EVENTS)?.len()?,
                pending: txn.open_table(LANES)?.len()?,
                due: txn.open_table(DUE)?.len()?,
                dead: txn.open_table(DEAD)?.len()?,
            })
        })
    }

    /// For each endpoint with pending deliveries, the `created_ms` (detection time) of the lane
    /// head at the front of its due index: the delivery due soonest, which is the oldest one
    /// waiting unless a head was pushed back by a retry behind a younger one. Reads one due
    /// entry and one row per endpoint (it skips from each endpoint's first entry to the next
    /// endpoint's), whatever the size of the queue.
    pub fn oldest_pending(&self) -> Result<Vec<(String, i64)>> {
        use std::ops::Bound;
        let txn = self.db.begin_read()?;
        let due = txn.open_table(DUE)?;
        let deliveries = txn.open_table(DELIVERIES)?;
        let mut out: Vec<(String, i64)> = Vec::new();
        loop {
            let first = match out.last() {
                None => due.range::<(&str, i64, u64)>(..)?.next(),
                Some((ep, _)) => due
                    .range::<(&str, i64, u64)>((
                        Bound::Excluded((ep.as_str(), i64::MAX, u64::MAX)),
                        Bound::Unbounded,
                    ))?
                    .next(),
            };
            let Some(entry) = first else {
                return Ok(out);
            };
            let (k, _) = entry?;
            let (ep, due_ms, seq) = k.value();
            // A head whose row is missing would break the queue's invariant; its due time is the
            // best bound there is.
            let created_ms = match deliveries.get((ep, seq))? {
                Some(v) => decode_delivery(v.value())?.created_ms,
                None => due_ms,
            };
            out.push((ep.to_string(), created_ms));
        }
    }

    /// Puts finished deliveries (dead or delivered) back in their lanes with a fresh attempt
    /// budget; the event id is kept, so receivers can de-duplicate. Pending deliveries are left
    /// alone. Returns how many were requeued.
    pub fn replay(&self, selector: &ReplaySelector, now_ms: i64) -> Result<usize> {
        self.guard(|| {
            let txn = self.db.begin_write()?;
            let count = {
                let mut deliveries = txn.open_table(DELIVERIES)?;
                let mut lanes = txn.open_table(LANES)?;
                let mut due = txn.open_table(DUE)?;
                let events = txn.open_table(EVENTS)?;
                let ids = txn.open_table(EVENT_IDS)?;
                let mut dead = txn.open_table(DEAD)?;
                let mut delivered = txn.open_table(DELIVERED)?;
                let wanted_endpoint =
                    |ep: &str, only: &Option<String>| only.as_deref().is_none_or(|o| o == ep);
                let mut chosen: Vec<Delivery> = Vec::new();
                match selector {
                    ReplaySelector::Event { id, endpoint } => {
                        if let Some(seq) = ids.get(id.as_str())?.map(|v| v.value()) {
                            for entry in deliveries.range::<(&str, u64)>(..)? {
                                let (k, v) = entry?;
                                let (ep, s) = k.value();
                                if s == seq && wanted_endpoint(ep, endpoint) {
                                    chosen.push(decode_delivery(v.value())?);
                                }
                            }
                        }
                    }
                    ReplaySelector::DeadOf { endpoint } => {
                        for entry in deliveries
                            .range((endpoint.as_str(), 0u64)..=(endpoint.as_str(), u64::MAX))?
                        {
                            let (_, v) = entry?;
                            let d: Delivery = decode_delivery(v.value())?;
                            if d.state == DeliveryState::Dead {
                                chosen.push(d);
                            }
                        }
                    }
                    ReplaySelector::Range {
                        from_ms,
                        to_ms,
                        endpoint,
                    } => {
                        let mut seqs = std::collections::HashSet::new();
                        for entry in events.range::<u64>(..)? {
                            let (k, v) = entry?;
                            let e: Event = decode_event(v.value())?;
                            if (*from_ms..=*to_ms).contains(&e.detected_ms) {
                                seqs.insert(k.value());
                            }
                        }
                        for entry in deliveries.range::<(&str, u64)>(..)? {
                            let (k, v) = entry?;
                            let (ep, s) = k.value();
                            if seqs.contains(&s) && wanted_endpoint(ep, endpoint) {
                                chosen.push(decode_delivery(v.value())?);
                            }
                        }
                    }
                }
                let mut n = 0;
                for mut d in chosen {
                    if d.state == DeliveryState::Pending {
                        continue;
                    }
                    let ep = d.endpoint.clone();
                    dead.remove((ep.as_str(), d.seq))?;
                    delivered.remove((d.created_ms, ep.as_str(), d.seq))?;
                    d.state = DeliveryState::Pending;
                    d.attempts = 0;
                    d.next_ms = now_ms;
                    deliveries.insert((ep.as_str(), d.seq), encode_delivery(&d).as_slice())?;
                    let lane_empty = lanes
                        .range(
                            (ep.as_str(), d.lane.as_str(), 0u64)
                                ..=(ep.as_str(), d.lane.as_str(), u64::MAX),
                        )?
                        .next()
                        .is_none();
                    lanes.insert((ep.as_str(), d.lane.as_str(), d.seq), ())?;
                    if lane_empty {
                        due.insert((ep.as_str(), now_ms, d.seq), ())?;
                    } else {
                        // Keep the lane's invariant: its first (lowest seq) pending row is the due
                        // head. A replayed older event goes before the current head.
                        let head = lanes
                            .range(
                                (ep.as_str(), d.lane.as_str(), 0u64)
                                    ..=(ep.as_str(), d.lane.as_str(), u64::MAX),
                            )?
                            .next()
                            .map(|e| e.map(|(k, _)| k.value().2))
                            .transpose()?;
                        if head == Some(d.seq) {
                            demote_other_heads(
                                &mut deliveries,
                                &mut due,
                                &lanes,
                                &ep,
                                &d.lane,
                                d.seq,
                            )?;
                            due.insert((ep.as_str(), now_ms, d.seq), ())?;
                        }
                    }
                    n += 1;
                }
                n
            };
            txn.commit()?;
            Ok(count)
        })
    }

    /// Deletes delivered deliveries created before `before_ms` and each event whose last
    /// delivery that was, then events older than that which no endpoint subscribed to; at most
    /// `max_rows` in all, oldest first. Dead letters and pending deliveries are never pruned.
    /// Work and memory are proportional to what is deleted, not to the size of the store. Call
    /// again while it returns `max_rows`.
    pub fn prune(&self, before_ms: i64, max_rows: usize) -> Result<usize> {
        self.guard(|| {
            let txn = self.db.begin_write()?;
            let removed = {
                let mut deliveries = txn.open_table(DELIVERIES)?;
                let mut delivered = txn.open_table(DELIVERED)?;
                let mut orphans = txn.open_table(ORPHANS)?;
                let mut refs = txn.open_table(EVENT_REFS)?;
                let mut events = txn.open_table(EVENTS)?;
                let mut ids = txn.open_table(EVENT_IDS)?;
                let mut drop_event = |seq: u64| -> Result<()> {
                    if let Some(v) = events.remove(seq)? {
                        let e: Event = decode_event(v.value())?;
                        ids.remove(e.id.as_str())?;
                    }
                    Ok(())
                };
                let mut doomed: Vec<(i64, String, u64)> = Vec::new();
                for entry in delivered.range((i64::MIN, "", 0u64)..(before_ms, "", 0u64))? {
                    if doomed.len() >= max_rows {
                        break;
                    }
                    let (k, _) = entry?;
                    let (at, ep, seq) = k.value();
                    doomed.push((at, ep.to_string(), seq));
                }
                for (at, ep, seq) in &doomed {
                    delivered.remove((*at, ep.as_str(), *seq))?;
                    deliveries.remove((ep.as_str(), *seq))?;
                    let left = refs
                        .get(*seq)?
                        .map(|v| v.value())
                        .unwrap_or(1)
                        .saturating_sub(1);
                    if left > 0 {
                        refs.insert(*seq, left)?;
                    } else {
                        refs.remove(*seq)?;
                        drop_event(*seq)?;
                    }
                }
                let mut unwatched: Vec<(i64, u64)> = Vec::new();
                for entry in orphans.range((i64::MIN, 0u64)..(before_ms, 0u64))? {
                    if doomed.len() + unwatched.len() >= max_rows {
                        break;
                    }
                    unwatched.push(entry?.0.value());
                }
                for (at, seq) in &unwatched {
                    orphans.remove((*at, *seq))?;
                    drop_event(*seq)?;
                }
                doomed.len() + unwatched.len()
            };
            txn.commit()?;
            Ok(removed)
        })
    }
}

/// Removes from the due index any head of this lane other than `new_head` (the lane's invariant
/// is a single due head), keeping their rows pending.
fn demote_other_heads(
    deliveries: &mut Table<'_, (&str, u64), &[u8]>,
    due: &mut Table<'_, (&str, i64, u64), ()>,
    lanes: &Table<'_, (&str, &str, u64), ()>,
    ep: &str,
    lane: &str,
    new_head: u64,
) -> Result<()> {
    for entry in lanes.range((ep, lane, 0u64)..=(ep, lane, u64::MAX))? {
        let (k, _) = entry?;
        let seq = k.value().2;
        if seq == new_head {
            continue;
        }
        let row: Option<Delivery> = match deliveries.get((ep, seq))? {
            Some(v) => Some(decode_delivery(v.value())?),
            None => None,
        };
        if let Some(d) = row {
            due.remove((ep, d.next_ms, seq))?;
        }
    }
    Ok(())
}

fn promote(
    lanes: &mut Table<'_, (&str, &str, u64), ()>,
    deliveries: &mut Table<'_, (&str, u64), &[u8]>,
    due: &mut Table<'_, (&str, i64, u64), ()>,
    ep: &str,
    lane: &str,
    now_ms: i64,
) -> Result<()> {
    let next = match lanes.range((ep, lane, 0u64)..=(ep, lane, u64::MAX))?.next() {
        Some(entry) => entry?.0.value().2,
        None => return Ok(()),
    };
    let mut row: Delivery = match deliveries.get((ep, next))? {
        Some(v) => decode_delivery(v.value())?,
        None => return Ok(()),
    };
    // Due now, unless its own first attempt is still ahead (an endpoint's initial delay).
    row.next_ms = row.next_ms.max(now_ms);
    deliveries.insert((ep, next), encode_delivery(&row).as_slice())?;
    due.insert((ep, row.next_ms, next), ())?;
    Ok(())
}
