//! One poll of one source, a page at a time: each page is decoded, compared with the snapshot and
//! staged before the next is fetched; when the last page is in (and what vanished is decided),
//! everything staged becomes snapshot rows, events and deliveries, a bounded chunk per
//! transaction; nothing becomes visible before every page succeeded. Memory holds one page, what
//! it changed, and the ids seen. A poll that is interrupted (crash, restart, reload, SIGTERM)
//! continues from the page after the last one staged, or with the rest of its promotion.
//!
//! | file | owns |
//! |------|------|
//! | this file    | the cycle: resume or start, pages, disappearances, promotion, and giving up |
//! | `page`       | one page: decode, compare, stage |
//! | `promote`    | turning staged changes into rows, events and deliveries (chunk by chunk) |
//! | `checkpoint` | what is kept to resume a poll |
//! | `index`      | the snapshot's compact rows in memory for full polls; id hashes |
//! | `watermark`  | watermarks from the source's clock or data |
//! | `overlap`    | what ping lookups are doing while a poll runs |
//! | [`refresh`]  | a ping's lookups committed as one-booking polls |
//! | [`runtime`]  | what a source needs between polls |
//! | [`probe`]    | `check --probe` |
//!
//! Polls of one source never overlap (a per-source lock). A failed, truncated or malformed page
//! abandons the poll and commits nothing.

mod checkpoint;
mod index;
mod overlap;
mod page;
mod probe;
mod promote;
pub mod refresh;
mod runtime;
mod watermark;

use std::collections::HashSet;
use std::sync::Arc;

use chrono::{DateTime, Utc};

use crate::clock::Clock;
use crate::config::{OnDisappear, SourceConfig};
use crate::diff::disappearance_allowed;
use crate::json::JsonError;
use crate::outbox::Event;
use crate::source::{PollKind, SourceError};
use crate::store::{PageOp, SourceState, Staged, StagedOp, Store, StoreError};
use crate::text::Escaped;

use checkpoint::Checkpoint;
use index::{SnapshotIndex, id_hash};
use page::Run;

pub use overlap::Overlap;
pub use probe::{ProbeReport, probe};
pub use runtime::{Routes, SourceRuntime};

/// A poll that failed to continue this many times in a row starts afresh.
const MAX_RESUME_FAILURES: u32 = 3;
/// Lookups staged per transaction while deciding what vanished.
const LOOKUP_BATCH: usize = 50;

/// Why a poll cycle failed. Nothing was committed.
#[derive(Debug, thiserror::Error)]
pub enum PollError {
    /// Fetching failed.
    #[error(transparent)]
    Source(#[from] SourceError),
    /// Committing failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A booking could not be serialised (not expected; reported rather than hidden).
    #[error(transparent)]
    Json(#[from] JsonError),
    /// The blocking part of a poll could not run.
    #[error("poll task failed: {0}")]
    Task(String),
    /// No such source.
    #[error("no source named `{0}`")]
    UnknownSource(String),
}

/// What a committed poll did.
#[derive(Debug, Clone, Default)]
pub struct PollReport {
    /// Source name.
    pub source: String,
    /// Full (everything in scope) or incremental (changes since the watermark).
    pub full: bool,
    /// Whether it continued a poll interrupted earlier.
    pub resumed: bool,
    /// Pages fetched.
    pub pages: u32,
    /// Bookings seen (distinct ids).
    pub bookings: usize,
    /// True for the first poll of a source that records a baseline.
    pub baseline: bool,
    /// Events created, in detection order (at most [`crate::store::REPORTED_EVENTS`]).
    pub events: Vec<Event>,
    /// Events created in all.
    pub events_total: usize,
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

/// Whether a poll looks for bookings that vanished (so it must remember the ids it saw).
fn looks_for_disappearances(
    cfg: &SourceConfig,
    kind: PollKind,
    state: Option<&SourceState>,
) -> bool {
    kind == PollKind::Full && state.is_some() && cfg.on_disappear != OnDisappear::Ignore
}

/// Runs a blocking step on the blocking pool.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, PollError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| PollError::Task(e.to_string()))
}

/// Runs one poll: resume or start, every page, what vanished, then promotion.
pub async fn poll(
    rt: &Arc<SourceRuntime>,
    store: &Store,
    clock: &Clock,
) -> Result<PollReport, PollError> {
    let _one_at_a_time = rt.one_at_a_time().await;
    let name = rt.cfg.name.clone();
    let state = store.run(move |s| s.source_state(&name)).await?;
    let mut run = start(rt, store, clock, state.as_ref()).await?;
    while !run.cp.pager.done {
        match next_page(rt, store, run).await {
            (r, Ok(())) => run = r,
            (r, Err(PollError::Source(e)))
                if r.resumed && r.pages_this_run == 0 && !e.is_transient() =>
            {
                tracing::warn!(
                    source = %rt.cfg.name,
                    page = r.cp.pager.next_page(),
                    error = %Escaped(&e),
                    "the interrupted poll cannot continue where it stopped; starting it afresh (nothing is lost: the snapshot is as the last committed poll left it)"
                );
                run = fresh(rt, store, clock, state.as_ref()).await?;
            }
            (r, Err(e)) => {
                give_up(rt, store, r, &e).await;
                return Err(e);
            }
        }
    }
    let held_back = match disappearances(rt, store, clock, &mut run, state.as_ref()).await {
        Ok(n) => n,
        Err(e) => {
            give_up(rt, store, run, &e).await;
            return Err(e);
        }
    };
    let (rt2, store2) = (rt.clone(), store.clone());
    let report = blocking(move || promote::apply(&store2, &rt2, &run, held_back)).await??;
    Ok(report)
}

/// Resumes the staged poll of the source if it can be, else starts a new one.
async fn start(
    rt: &Arc<SourceRuntime>,
    store: &Store,
    clock: &Clock,
    state: Option<&SourceState>,
) -> Result<Run, PollError> {
    let name = rt.cfg.name.clone();
    let Some((_, bytes)) = store.run(move |s| s.checkpoint(&name)).await? else {
        return fresh(rt, store, clock, state).await;
    };
    let why_not = match Checkpoint::decode(&bytes) {
        Err(e) => format!("its checkpoint is unreadable: {e}"),
        Ok(cp) if cp.config != rt.config_print => {
            "the source's configuration changed since it began".to_string()
        }
        // Every page is in: what is left is its promotion, however long ago it began.
        Ok(cp) if cp.pager.done => return resume(rt, store, cp, state).await,
        Ok(cp) if clock.now_ms() - cp.started_ms > rt.cfg.resume_within.as_millis() as i64 => {
            format!(
                "it began more than sources.{}.resume_within ({}) ago",
                rt.cfg.name,
                humantime::format_duration(rt.cfg.resume_within)
            )
        }
        Ok(cp) if cp.failures >= MAX_RESUME_FAILURES => format!(
            "it failed {} times in a row at page {}",
            cp.failures,
            cp.pager.next_page()
        ),
        Ok(cp) => return resume(rt, store, cp, state).await,
    };
    tracing::warn!(source = %rt.cfg.name, "discarding the interrupted poll ({why_not}); starting afresh");
    let name = rt.cfg.name.clone();
    store.run(move |s| s.discard_poll(&name)).await?;
    fresh(rt, store, clock, state).await
}

/// Starts a new poll: its kind, checkpoint and (for a full poll) the snapshot index.
async fn fresh(
    rt: &Arc<SourceRuntime>,
    store: &Store,
    clock: &Clock,
    state: Option<&SourceState>,
) -> Result<Run, PollError> {
    let now = clock.now_ms();
    let kind = poll_kind(&rt.cfg, state, now);
    let cp = Checkpoint::new(&rt.cfg, kind, now);
    let bytes = cp.encode().map_err(|e| PollError::Json(e.into()))?;
    let keep_seen = looks_for_disappearances(&rt.cfg, kind, state);
    let (name, store2) = (rt.cfg.name.clone(), store.clone());
    rt.overlap.reset();
    let index = blocking(move || -> Result<Option<SnapshotIndex>, StoreError> {
        store2.begin_poll(&name, &bytes)?;
        match kind {
            PollKind::Full => Ok(Some(SnapshotIndex::load(&store2, &name)?)),
            PollKind::Incremental { .. } => Ok(None),
        }
    })
    .await??;
    Ok(Run::new(cp, index, keep_seen))
}

/// Continues a staged poll: the index, the ids seen and the ids staged come back from the store.
async fn resume(
    rt: &Arc<SourceRuntime>,
    store: &Store,
    cp: Checkpoint,
    state: Option<&SourceState>,
) -> Result<Run, PollError> {
    tracing::info!(
        source = %rt.cfg.name,
        page = cp.pager.next_page(),
        "resuming the interrupted poll after its last staged page"
    );
    let keep_seen = looks_for_disappearances(&rt.cfg, cp.kind, state);
    let (name, store2) = (rt.cfg.name.clone(), store.clone());
    rt.overlap.reset();
    let run = blocking(move || -> Result<Run, StoreError> {
        let index = match cp.kind {
            PollKind::Full => Some(SnapshotIndex::load(&store2, &name)?),
            PollKind::Incremental { .. } => None,
        };
        let mut run = Run::new(cp, index, keep_seen);
        run.resumed = true;
        if keep_seen {
            store2.seen_hashes(&name, |h| {
                run.seen.insert(h);
            })?;
        }
        let mut staged = HashSet::new();
        store2.staged_ids(&name, |id| {
            staged.insert(id_hash(id));
        })?;
        run.staged = staged;
        Ok(run)
    })
    .await??;
    Ok(run)
}

/// Fetches the next page and stages it. Hands the run back whatever happened.
async fn next_page(
    rt: &Arc<SourceRuntime>,
    store: &Store,
    mut run: Run,
) -> (Run, Result<(), PollError>) {
    let now = DateTime::<Utc>::from_timestamp_millis(run.cp.started_ms).unwrap_or_default();
    let page = match rt
        .client
        .fetch(&rt.cfg, &run.cp.pager, run.cp.kind, now)
        .await
    {
        Ok(p) => p,
        Err(e) => return (run, Err(e.into())),
    };
    let (rt2, store2) = (rt.clone(), store.clone());
    match blocking(move || {
        let r = run.process(&rt2, &store2, page);
        (run, r)
    })
    .await
    {
        Ok((run, r)) => (run, r),
        Err(e) => {
            // The run went down with the task; what it staged is still in the store.
            let cp = Checkpoint::new(&rt.cfg, PollKind::Full, 0);
            (Run::new(cp, None, false), Err(e))
        }
    }
}

/// After a failed poll: a transient failure keeps what is staged, so the next tick continues
/// where this one stopped (counting the failure); anything else drops it.
async fn give_up(rt: &Arc<SourceRuntime>, store: &Store, mut run: Run, e: &PollError) {
    let keep = match e {
        PollError::Source(e) => e.is_transient(),
        PollError::Store(_) | PollError::Task(_) => true,
        _ => false,
    };
    let name = rt.cfg.name.clone();
    let result = if keep && run.cp.failures + 1 < MAX_RESUME_FAILURES && run.cp.started_ms > 0 {
        run.cp.failures += 1;
        match run.cp.encode() {
            Ok(cp) => {
                store
                    .run(move |s| s.stage_page(&name, &[], None, &cp, true))
                    .await
            }
            Err(_) => store.run(move |s| s.discard_poll(&name)).await,
        }
    } else if run.cp.started_ms > 0 {
        store.run(move |s| s.discard_poll(&name)).await
    } else {
        Ok(())
    };
    if let Err(e) = result {
        tracing::warn!(source = %rt.cfg.name, error = %Escaped(&e), "cannot record the failed poll's progress");
    }
}

/// After the last page of a full poll: which known bookings vanished, and what that means
/// (`on_disappear`), subject to the mass-disappearance guard. Returns how many were held back.
async fn disappearances(
    rt: &Arc<SourceRuntime>,
    store: &Store,
    clock: &Clock,
    run: &mut Run,
    state: Option<&SourceState>,
) -> Result<usize, PollError> {
    let cfg = &rt.cfg;
    if !looks_for_disappearances(cfg, run.cp.kind, state) {
        return Ok(0);
    }
    let Some(index) = &run.index else {
        return Ok(0);
    };
    // A booking known to be outside the window (a lookup found it there, or only a ping's
    // lookup has seen it so far) is not missed until a poll sees it again.
    let counts = |e: &index::Entry| !e.cancelled && !e.outside;
    let active = index.iter().filter(|(_, e)| counts(e)).count();
    let gone: HashSet<u64> = index
        .iter()
        .filter(|(h, e)| counts(e) && !run.seen.contains(h))
        .map(|(h, _)| h)
        .collect();
    if gone.is_empty() {
        return Ok(0);
    }
    if !disappearance_allowed(active, gone.len(), cfg.max_disappear_share) {
        held_back_log(cfg, gone.len(), active);
        return Ok(gone.len());
    }
    // Those already decided (a resumed poll) are staged.
    let todo: HashSet<u64> = gone.difference(&run.staged).copied().collect();
    let (name, store2) = (cfg.name.clone(), store.clone());
    let mut ids = blocking(move || -> Result<Vec<String>, StoreError> {
        let mut ids = Vec::new();
        store2.scan_rows(&name, |id, _| {
            if todo.contains(&id_hash(id)) {
                ids.push(id.to_string());
            }
        })?;
        Ok(ids)
    })
    .await??;
    ids.sort();
    let now = DateTime::<Utc>::from_timestamp_millis(run.cp.started_ms).unwrap_or_default();
    for chunk in ids.chunks(LOOKUP_BATCH) {
        let mut ops = Vec::with_capacity(chunk.len());
        for id in chunk {
            let (doc, observed_us) = match cfg.on_disappear {
                OnDisappear::Lookup => {
                    let found = rt.client.lookup(cfg, id, now).await?;
                    (found.doc, found.observed_us)
                }
                _ => (None, clock.stamp_us()),
            };
            let order = run.cp.next_order;
            run.cp.next_order += 1;
            ops.push(match doc {
                // Gone: a confirmed disappearance is a cancellation.
                None => PageOp::Mark {
                    id: id.clone(),
                    staged: Staged {
                        op: StagedOp::Gone,
                        order,
                        observed_us,
                    },
                },
                Some(doc) => {
                    let obs = rt.policy.observe(&doc)?;
                    PageOp::Doc {
                        id: id.clone(),
                        json: serde_json::to_vec(&doc).map_err(|e| PollError::Json(e.into()))?,
                        staged: Staged {
                            op: StagedOp::Found {
                                fingerprint: obs.fingerprint,
                                cancelled: obs.cancelled,
                            },
                            order,
                            observed_us,
                        },
                    }
                }
            });
            run.staged.insert(id_hash(id));
        }
        let cp = run.cp.encode().map_err(|e| PollError::Json(e.into()))?;
        let name = cfg.name.clone();
        store
            .run(move |s| s.stage_page(&name, &ops, None, &cp, true))
            .await?;
    }
    Ok(0)
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
