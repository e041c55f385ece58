//! Promotion: turning a poll's staged changes into snapshot rows, events and deliveries, a
//! chunk at a time through [`crate::store::Store::promote`]. Each change is decided against the
//! row as it is at that moment, not as it was when the page was staged.

use super::page::Run;
use super::runtime::SourceRuntime;
use super::{PollReport, watermark};
use crate::config::{FirstPoll, OnDisappear};
use crate::outbox::EventKind;
use crate::source::PollKind;
use crate::store::{Promotion, SnapRow, SourceState, Staged, StagedOp, Store, StoreError};

/// Applies every staged change and the source's new state; returns the report.
pub(super) fn apply(
    store: &Store,
    rt: &SourceRuntime,
    run: &Run,
    held_back: usize,
) -> Result<PollReport, StoreError> {
    let cfg = &rt.cfg;
    let cp = &run.cp;
    let state = store.source_state(&cfg.name)?;
    let baseline = state.is_none() && cfg.first_poll == FirstPoll::Baseline;
    // A baseline creates no events, so the order changes are applied in does not matter.
    let started_us = cp.started_ms.saturating_mul(1000);
    store.promote(
        &cfg.name,
        !baseline,
        |p, id, staged| one(p, rt, id, staged, baseline, started_us),
        |p| last(p, rt, run, state, baseline, held_back),
    )
}

/// The last step of a promotion: the source's new state, and the report.
fn last(
    p: &mut Promotion<'_>,
    rt: &SourceRuntime,
    run: &Run,
    state: Option<SourceState>,
    baseline: bool,
    held_back: usize,
) -> Result<PollReport, StoreError> {
    let cfg = &rt.cfg;
    let cp = &run.cp;
    let previous_watermark = state.as_ref().and_then(|s| s.watermark_ms);
    let mut next = state.unwrap_or(SourceState {
        first_poll_ms: cp.started_ms,
        ..SourceState::default()
    });
    next.polls += 1;
    next.last_poll_ms = cp.started_ms;
    next.watermark_ms = Some(match &cfg.incremental {
        Some(inc) => watermark::next(
            &inc.watermark,
            cp.started_ms,
            cp.source_clock_ms,
            cp.newest_item_ms,
            previous_watermark,
        ),
        None => cp.started_ms,
    });
    if cp.kind == PollKind::Full {
        next.last_full_ms = Some(cp.started_ms);
    }
    p.set_state(&next)?;
    let (events, events_total) = p.take_emitted();
    Ok(PollReport {
        source: cfg.name.clone(),
        full: cp.kind == PollKind::Full,
        resumed: run.resumed,
        pages: cp.pager.pages,
        bookings: cp.bookings as usize,
        baseline,
        events,
        events_total,
        held_back,
    })
}

/// Whether the stored row records a later observation than `evidence_us`: then the staged
/// change is older news (a ping's lookup committed after this page arrived) and must not move
/// the booking back.
fn newer_than(row: Option<&SnapRow>, evidence_us: i64) -> bool {
    row.is_some_and(|r| r.observed_us > evidence_us)
}

/// Applies one staged change.
fn one(
    p: &mut Promotion<'_>,
    rt: &SourceRuntime,
    id: &str,
    staged: Staged,
    baseline: bool,
    started_us: i64,
) -> Result<(), StoreError> {
    let prev = p.row(id)?;
    let (fingerprint, cancelled, found) = match staged.op {
        StagedOp::Doc {
            fingerprint,
            cancelled,
        } => (fingerprint, cancelled, false),
        StagedOp::Found {
            fingerprint,
            cancelled,
        } => (fingerprint, cancelled, true),
        StagedOp::Inside => {
            if let Some(mut row) = prev.filter(|r| r.outside) {
                row.outside = false;
                p.put_row(id, &row)?;
            }
            return Ok(());
        }
        StagedOp::Gone => {
            // Absence from a full poll is evidence from the whole poll, so anything observed
            // since it began wins; a lookup's "gone" is evidence from its own instant.
            let evidence_us = match rt.cfg.on_disappear {
                OnDisappear::Lookup => staged.observed_us,
                _ => started_us,
            };
            if newer_than(prev.as_ref(), evidence_us) {
                return Ok(());
            }
            return gone(p, rt, id, prev, staged, baseline);
        }
    };
    if newer_than(prev.as_ref(), staged.observed_us) {
        // Its document, staged under this poll's generation, is dropped when the poll finishes.
        return Ok(());
    }
    // Found by a lookup and active: it merely left the polled window.
    let outside = found && !cancelled;
    if let Some(mut row) = prev.filter(|r| r.fingerprint == fingerprint && r.cancelled == cancelled)
    {
        if row.outside != outside {
            row.outside = outside;
            p.put_row(id, &row)?;
        }
        return Ok(());
    }
    let doc = p.doc(id, p.generation())?;
    let change = match prev {
        None => rt.policy.change(None, &doc, cancelled),
        Some(row) => {
            let prev_doc = p.doc(id, row.generation)?;
            rt.policy
                .change(Some((&prev_doc, row.cancelled)), &doc, cancelled)
        }
    };
    let row = SnapRow {
        fingerprint,
        cancelled,
        outside,
        generation: p.generation(),
        observed_us: staged.observed_us,
    };
    p.put_row(id, &row)?;
    if let (Some(change), false) = (change, baseline) {
        let routes = rt.routes.get(change.kind);
        p.emit(
            change.kind,
            id,
            doc,
            change.changes,
            &routes,
            staged.observed_us / 1000,
        )?;
    }
    Ok(())
}

/// A known booking gone from a full poll (`cancel`, or confirmed gone by a lookup): cancelled.
fn gone(
    p: &mut Promotion<'_>,
    rt: &SourceRuntime,
    id: &str,
    prev: Option<SnapRow>,
    staged: Staged,
    baseline: bool,
) -> Result<(), StoreError> {
    let Some(mut row) = prev.filter(|r| !r.cancelled) else {
        return Ok(());
    };
    row.cancelled = true;
    row.observed_us = staged.observed_us;
    p.put_row(id, &row)?;
    if !baseline {
        let doc = p.doc(id, row.generation)?;
        let routes = rt.routes.get(EventKind::Cancel);
        p.emit(
            EventKind::Cancel,
            id,
            doc,
            Vec::new(),
            &routes,
            staged.observed_us / 1000,
        )?;
    }
    Ok(())
}
