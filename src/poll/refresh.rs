//! A ping's refresh: bookings looked up by id and committed as one-booking polls, through the
//! same decisions, event ids, field changes, lanes and deliveries as a poll, in ONE write
//! transaction per batch that also removes the pings it answers. An observation older than the
//! row's never replaces it, and a lookup that says "gone" follows `on_disappear`.

use std::sync::Arc;

use super::index::{Entry, id_hash};
use super::runtime::SourceRuntime;
use super::{PollError, blocking};
use crate::clock::Clock;
use crate::config::OnDisappear;
use crate::outbox::{Event, EventKind};
use crate::source::{LookedUp, SourceError};
use crate::store::{Promotion, SnapRow, Store, StoreError};

/// One booking looked up for pings.
#[derive(Debug)]
pub struct Looked {
    /// Its id.
    pub id: String,
    /// What the lookup found, and when.
    pub found: LookedUp,
    /// The recorded pings this lookup answers.
    pub pings: Vec<u64>,
}

/// What one refresh commit did.
#[derive(Debug, Clone, Default)]
pub struct RefreshReport {
    /// Source name.
    pub source: String,
    /// Bookings committed (looked up).
    pub bookings: usize,
    /// Events created, in order.
    pub events: Vec<Event>,
    /// Lookups older than what the snapshot already held (a poll saw the booking later).
    pub older: usize,
    /// True when nothing was committed because the source has no completed poll yet: its
    /// first poll decides what exists, so the pings wait for it.
    pub waiting_for_first_poll: bool,
}

/// Looks one booking up, letting a running poll of the source know while the lookup is out.
/// The caller must pass the result to [`commit`] (which ends the overlap) unless this fails.
pub async fn look_up(rt: &SourceRuntime, id: &str, clock: &Clock) -> Result<LookedUp, SourceError> {
    let hash = id_hash(id);
    rt.overlap.begin(hash);
    let found = rt.client.lookup(&rt.cfg, id, clock.now()).await;
    if found.is_err() {
        rt.overlap.finish(hash, None);
    }
    found
}

/// Ends the overlap of a [`look_up`] that was abandoned before it answered (a stop).
pub fn abandon(rt: &SourceRuntime, id: &str) {
    rt.overlap.finish(id_hash(id), None);
}

/// A looked-up booking prepared outside the transaction: its JSON and observation.
struct Prepared {
    id: String,
    observed_us: i64,
    doc: Option<(serde_json::Value, Vec<u8>, u64, bool)>,
    pings: Vec<u64>,
}

/// Commits looked-up bookings in one transaction. Every lookup passed here ends its overlap
/// with a running poll, whether the commit succeeds or not.
pub async fn commit(
    rt: &Arc<SourceRuntime>,
    store: &Store,
    batch: Vec<Looked>,
) -> Result<RefreshReport, PollError> {
    let hashes: Vec<u64> = batch.iter().map(|l| id_hash(&l.id)).collect();
    let end = |rows: &[(u64, Option<Entry>)]| {
        for (h, e) in rows {
            rt.overlap.finish(*h, *e);
        }
    };
    let mut prepared = Vec::with_capacity(batch.len());
    for l in batch {
        let doc = match l.found.doc {
            None => None,
            Some(doc) => match prepare(rt, &doc) {
                Ok((json, fingerprint, cancelled)) => Some((doc, json, fingerprint, cancelled)),
                Err(e) => {
                    end(&hashes.iter().map(|h| (*h, None)).collect::<Vec<_>>());
                    return Err(e);
                }
            },
        };
        prepared.push(Prepared {
            id: l.id,
            observed_us: l.found.observed_us,
            doc,
            pings: l.pings,
        });
    }
    let (rt2, store2) = (rt.clone(), store.clone());
    let result =
        blocking(move || store2.refresh(&rt2.cfg.name, |p| apply(p, &rt2, prepared))).await;
    match result {
        Ok(Ok((report, rows))) => {
            end(&rows);
            Ok(report)
        }
        Ok(Err(e)) => {
            end(&hashes.iter().map(|h| (*h, None)).collect::<Vec<_>>());
            Err(e.into())
        }
        Err(e) => {
            end(&hashes.iter().map(|h| (*h, None)).collect::<Vec<_>>());
            Err(e)
        }
    }
}

fn prepare(rt: &SourceRuntime, doc: &serde_json::Value) -> Result<(Vec<u8>, u64, bool), PollError> {
    let obs = rt.policy.observe(doc)?;
    let json = serde_json::to_vec(doc).map_err(|e| PollError::Json(e.into()))?;
    Ok((json, obs.fingerprint, obs.cancelled))
}

fn entry(row: &SnapRow) -> Entry {
    Entry {
        fingerprint: row.fingerprint,
        cancelled: row.cancelled,
        outside: row.outside,
    }
}

type Applied = (RefreshReport, Vec<(u64, Option<Entry>)>);

/// Decides every looked-up booking against its row as it is now.
fn apply(
    p: &mut Promotion<'_>,
    rt: &SourceRuntime,
    batch: Vec<Prepared>,
) -> Result<Applied, StoreError> {
    let mut report = RefreshReport {
        source: rt.cfg.name.clone(),
        ..RefreshReport::default()
    };
    let mut rows = Vec::with_capacity(batch.len());
    if p.state()?.is_none() {
        report.waiting_for_first_poll = true;
        rows.extend(batch.iter().map(|b| (id_hash(&b.id), None)));
        return Ok((report, rows));
    }
    for b in batch {
        let row = one(p, rt, &b, &mut report)?;
        p.remove_pings(&b.pings)?;
        report.bookings += 1;
        rows.push((id_hash(&b.id), row.as_ref().map(entry)));
    }
    let (events, _) = p.take_emitted();
    report.events = events;
    Ok((report, rows))
}

/// Decides one booking; returns its row afterwards.
fn one(
    p: &mut Promotion<'_>,
    rt: &SourceRuntime,
    b: &Prepared,
    report: &mut RefreshReport,
) -> Result<Option<SnapRow>, StoreError> {
    let id = b.id.as_str();
    let prev = p.row(id)?;
    if let Some(row) = prev.filter(|r| r.observed_us > b.observed_us) {
        // A poll saw it after this lookup's answer arrived.
        report.older += 1;
        return Ok(Some(row));
    }
    let Some((doc, json, fingerprint, cancelled)) = &b.doc else {
        return gone(p, rt, id, prev, b.observed_us);
    };
    if let Some(mut row) =
        prev.filter(|r| r.fingerprint == *fingerprint && r.cancelled == *cancelled)
    {
        row.observed_us = b.observed_us;
        p.put_row(id, &row)?;
        return Ok(Some(row));
    }
    let generation = p.refresh_generation(prev.as_ref());
    p.put_doc(id, generation, json)?;
    let change = match &prev {
        None => rt.policy.change(None, doc, *cancelled),
        Some(row) => {
            let prev_doc = p.doc(id, row.generation)?;
            rt.policy
                .change(Some((&prev_doc, row.cancelled)), doc, *cancelled)
        }
    };
    let row = SnapRow {
        fingerprint: *fingerprint,
        cancelled: *cancelled,
        // A booking only a lookup has seen may lie outside the polled window: no poll misses
        // it until one has seen it.
        outside: prev.as_ref().is_none_or(|r| r.outside),
        generation,
        observed_us: b.observed_us,
    };
    p.put_row(id, &row)?;
    if let Some(change) = change {
        let routes = rt.routes.get(change.kind);
        p.emit(
            change.kind,
            id,
            doc.clone(),
            change.changes,
            &routes,
            b.observed_us / 1000,
        )?;
    }
    Ok(Some(row))
}

/// The lookup says the API does not know the booking: a known active booking is cancelled
/// unless `on_disappear = "ignore"`; an unknown one produces nothing.
fn gone(
    p: &mut Promotion<'_>,
    rt: &SourceRuntime,
    id: &str,
    prev: Option<SnapRow>,
    observed_us: i64,
) -> Result<Option<SnapRow>, StoreError> {
    let Some(mut row) = prev else {
        return Ok(None);
    };
    if row.cancelled || rt.cfg.on_disappear == OnDisappear::Ignore {
        return Ok(Some(row));
    }
    row.cancelled = true;
    row.observed_us = observed_us;
    p.put_row(id, &row)?;
    let doc = p.doc(id, row.generation)?;
    let routes = rt.routes.get(EventKind::Cancel);
    p.emit(
        EventKind::Cancel,
        id,
        doc,
        Vec::new(),
        &routes,
        observed_us / 1000,
    )?;
    Ok(Some(row))
}
