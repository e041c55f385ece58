//! One poll cycle of one source: fetch every page, diff each booking against the snapshot, and
//! commit snapshot rows + events + one delivery per subscribed endpoint in ONE transaction.
//! [`runtime`] holds what a source needs between polls; [`probe`] is `check --probe`.
//!
//! A cycle never overlaps the previous cycle of the same source (a per-source lock), and a failed
//! fetch commits nothing: the snapshot stays as it was and the next tick tries again.

mod probe;
mod runtime;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use crate::config::{FirstPoll, OnDisappear, SourceConfig};
use crate::diff::disappearance_allowed;
use crate::outbox::{Event, EventKind};
use crate::source::{Fetched, PollKind, SourceError};
use crate::store::{Known, PollTxn, SourceState, Store, StoreError};

pub use probe::{ProbeReport, probe};
pub use runtime::{Routes, SourceRuntime};

/// Why a poll cycle failed. Nothing was committed.
#[derive(Debug, thiserror::Error)]
pub enum PollError {
    /// Fetching failed.
    #[error(transparent)]
    Source(#[from] SourceError),
    /// Committing failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// No such source.
    #[error("no source named `{0}`")]
    UnknownSource(String),
}

/// What a committed poll did.
#[derive(Debug, Clone, Default)]
pub struct PollReport {
    /// Source name.
    pub source: String,
    /// Pages fetched.
    pub pages: u32,
    /// Bookings seen.
    pub bookings: usize,
    /// True for the first poll of a source that records a baseline.
    pub baseline: bool,
    /// Events created, in detection order.
    pub events: Vec<Event>,
    /// Disappearances held back by the guard.
    pub held_back: usize,
}

/// Full or incremental, from the source's settings and state.
pub fn poll_kind(cfg: &SourceConfig, state: Option<&SourceState>, now_ms: i64) -> PollKind {
    let (Some(inc), Some(state)) = (&cfg.incremental, state) else {
        return PollKind::Full;
    };
    let Some(watermark_ms) = state.watermark_ms else {
        return PollKind::Full;
    };
    let full_due = match (inc.full_every, state.last_full_ms) {
        (Some(every), Some(last)) => now_ms - last >= every.as_millis() as i64,
        (Some(_), None) => true,
        (None, _) => false,
    };
    if full_due {
        PollKind::Full
    } else {
        PollKind::Incremental { watermark_ms }
    }
}

/// What by-id lookups found for bookings missing from a full poll.
#[derive(Debug, Default)]
pub struct Lookups {
    /// id -> the booking as the API returned it, or `None` when the API does not know it.
    pub found: HashMap<String, Option<serde_json::Value>>,
    /// Disappearances the guard held back.
    pub held_back: usize,
}

/// Runs one cycle: fetch, look up what vanished, then diff and commit in one transaction.
pub async fn poll(
    rt: &Arc<SourceRuntime>,
    store: &Store,
    now_ms: i64,
) -> Result<PollReport, PollError> {
    let _one_at_a_time = rt.one_at_a_time().await;
    let now = chrono::DateTime::<chrono::Utc>::from_timestamp_millis(now_ms).unwrap_or_default();
    let name = rt.cfg.name.clone();
    let state = store.run(move |s| s.source_state(&name)).await?;
    let kind = poll_kind(&rt.cfg, state.as_ref(), now_ms);
    let fetched = rt.client.fetch_all(&rt.cfg, kind, now).await?;
    let mut lookups = Lookups::default();
    if kind == PollKind::Full && state.is_some() && rt.cfg.on_disappear == OnDisappear::Lookup {
        let name = rt.cfg.name.clone();
        let known = store.run(move |s| s.known(&name)).await?;
        let seen: HashSet<&str> = fetched.records.iter().map(|r| r.id.as_str()).collect();
        let active = known.iter().filter(|k| !k.cancelled && !k.outside).count();
        let gone: Vec<&Known> = known
            .iter()
            .filter(|k| !k.cancelled && !k.outside && !seen.contains(k.id.as_str()))
            .collect();
        if !gone.is_empty() {
            if disappearance_allowed(active, gone.len(), rt.cfg.max_disappear_share) {
                for k in gone {
                    // A failed lookup abandons the cycle: nothing is decided on a guess.
                    let doc = rt.client.lookup(&rt.cfg, &k.id, now).await?;
                    lookups.found.insert(k.id.clone(), doc);
                }
            } else {
                lookups.held_back = gone.len();
                held_back_log(&rt.cfg, gone.len(), active);
            }
        }
    }
    let rt2 = rt.clone();
    let report = store
        .run(move |s| {
            s.write_poll(&rt2.cfg.name, now_ms, |txn| {
                apply(txn, &rt2, fetched, kind, lookups, now_ms)
            })
        })
        .await?;
    Ok(report)
}

fn held_back_log(cfg: &SourceConfig, gone: usize, active: usize) {
    tracing::error!(
        source = %cfg.name,
        gone,
        known_active = active,
        max_disappear_share = cfg.max_disappear_share,
        "HELD BACK: {gone} of {active} known bookings vanished from one poll; not cancelling any of them. \
         If they really were cancelled, raise sources.{}.max_disappear_share for one poll.",
        cfg.name
    );
}

/// Diffs a complete fetch against the snapshot inside the poll's transaction.
pub fn apply(
    txn: &mut PollTxn<'_>,
    rt: &SourceRuntime,
    fetched: Fetched,
    kind: PollKind,
    lookups: Lookups,
    now_ms: i64,
) -> Result<PollReport, StoreError> {
    let cfg = &rt.cfg;
    let state = txn.state()?;
    let baseline = state.is_none() && cfg.first_poll == FirstPoll::Baseline;
    let mut report = PollReport {
        source: cfg.name.clone(),
        pages: fetched.pages,
        bookings: fetched.records.len(),
        baseline,
        held_back: lookups.held_back,
        ..PollReport::default()
    };
    let mut seen: HashSet<String> = HashSet::with_capacity(fetched.records.len());
    for rec in fetched.records {
        let prev = txn.get(&rec.id)?;
        let cmp = rt.policy.compare(prev.as_ref(), rec.doc)?;
        if let Some(stored) = &cmp.store {
            txn.put(&rec.id, stored)?;
            if let (Some(change), false) = (cmp.change, baseline) {
                txn.emit(
                    change.kind,
                    &rec.id,
                    stored.doc.clone(),
                    change.changes,
                    &rt.routes.get(change.kind),
                )?;
            }
        } else if let Some(mut p) = prev.filter(|p| p.outside) {
            // Back inside the window.
            p.outside = false;
            txn.put(&rec.id, &p)?;
        }
        seen.insert(rec.id);
    }

    let full_after_baseline = kind == PollKind::Full && state.is_some();
    if full_after_baseline && cfg.on_disappear == OnDisappear::Cancel {
        let known = txn.known()?;
        let active = known.iter().filter(|k| !k.cancelled).count();
        let gone: Vec<&Known> = known
            .iter()
            .filter(|k| !k.cancelled && !seen.contains(&k.id))
            .collect();
        if !gone.is_empty() {
            if disappearance_allowed(active, gone.len(), cfg.max_disappear_share) {
                for k in gone {
                    if let Some(mut stored) = txn.get(&k.id)? {
                        stored.cancelled = true;
                        txn.put(&k.id, &stored)?;
                        txn.emit(
                            EventKind::Cancel,
                            &k.id,
                            stored.doc,
                            Vec::new(),
                            &rt.routes.get(EventKind::Cancel),
                        )?;
                    }
                }
            } else {
                report.held_back = gone.len();
                held_back_log(cfg, gone.len(), active);
            }
        }
    }
    if full_after_baseline && cfg.on_disappear == OnDisappear::Lookup {
        let mut found: Vec<(String, Option<serde_json::Value>)> =
            lookups.found.into_iter().collect();
        found.sort_by(|a, b| a.0.cmp(&b.0));
        for (id, doc) in found {
            let Some(prev) = txn.get(&id)? else { continue };
            match doc {
                // Gone: a confirmed disappearance is a cancellation.
                None => {
                    let mut stored = prev;
                    stored.cancelled = true;
                    txn.put(&id, &stored)?;
                    txn.emit(
                        EventKind::Cancel,
                        &id,
                        stored.doc,
                        Vec::new(),
                        &rt.routes.get(EventKind::Cancel),
                    )?;
                }
                Some(doc) => {
                    let cmp = rt.policy.compare(Some(&prev), doc)?;
                    let mut stored = cmp.store.unwrap_or(prev);
                    // Present and active: it merely left the window.
                    stored.outside = !stored.cancelled;
                    txn.put(&id, &stored)?;
                    if let Some(change) = cmp.change {
                        txn.emit(
                            change.kind,
                            &id,
                            stored.doc.clone(),
                            change.changes,
                            &rt.routes.get(change.kind),
                        )?;
                    }
                }
            }
        }
    }

    let mut next = state.unwrap_or(SourceState {
        first_poll_ms: now_ms,
        ..SourceState::default()
    });
    next.polls += 1;
    next.last_poll_ms = now_ms;
    next.watermark_ms = Some(now_ms);
    if kind == PollKind::Full {
        next.last_full_ms = Some(now_ms);
    }
    txn.set_state(&next)?;
    report.events = txn.take_emitted();
    Ok(report)
}
