//! One poll cycle of one source: fetch every page, diff each booking against the snapshot, and
//! commit snapshot rows + events + one delivery per subscribed endpoint in ONE transaction.
//!
//! A cycle never overlaps the previous cycle of the same source (a per-source lock), and a failed
//! fetch commits nothing: the snapshot stays as it was and the next tick tries again.

use std::collections::HashSet;
use std::sync::Arc;

use crate::config::{Config, FirstPoll, OnDisappear, SourceConfig};
use crate::diff::{Policy, disappearance_allowed};
use crate::outbox::{Event, EventKind};
use crate::source::{Fetched, SourceClient, SourceError};
use crate::store::{PollTxn, SourceState, Store, StoreError};

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

/// Which endpoints get which kinds from one source.
#[derive(Debug, Clone, Default)]
pub struct Routes {
    new: Vec<String>,
    modify: Vec<String>,
    cancel: Vec<String>,
}

impl Routes {
    /// Routes of `source` in `config`.
    pub fn of(config: &Config, source: &str) -> Routes {
        let names = |k| config.routes(source, k).map(|e| e.name.clone()).collect();
        Routes {
            new: names(EventKind::New),
            modify: names(EventKind::Modify),
            cancel: names(EventKind::Cancel),
        }
    }

    fn get(&self, kind: EventKind) -> Vec<&str> {
        let v = match kind {
            EventKind::New => &self.new,
            EventKind::Modify => &self.modify,
            EventKind::Cancel => &self.cancel,
        };
        v.iter().map(String::as_str).collect()
    }
}

/// Everything needed to poll one source.
#[derive(Debug)]
pub struct SourceRuntime {
    /// Its configuration.
    pub cfg: SourceConfig,
    /// Its diff policy.
    pub policy: Policy,
    /// Its HTTP client.
    pub client: SourceClient,
    /// Its subscribers.
    pub routes: Routes,
    lock: tokio::sync::Mutex<()>,
}

impl SourceRuntime {
    /// Prepares a source for polling.
    pub fn new(config: &Config, cfg: &SourceConfig) -> Result<SourceRuntime, String> {
        Ok(SourceRuntime {
            policy: Policy {
                status: cfg.status.clone(),
                cancelled_values: cfg.cancelled_values.clone(),
                ignore: cfg.ignore_fields.clone(),
                only: cfg.only_fields.clone(),
            },
            client: SourceClient::new(cfg)?,
            routes: Routes::of(config, &cfg.name),
            cfg: cfg.clone(),
            lock: tokio::sync::Mutex::new(()),
        })
    }
}

/// Runs one cycle: fetch, then diff and commit in one transaction.
pub async fn poll(
    rt: &Arc<SourceRuntime>,
    store: &Store,
    now_ms: i64,
) -> Result<PollReport, PollError> {
    let _one_at_a_time = rt.lock.lock().await;
    let fetched = rt.client.fetch_all(&rt.cfg).await?;
    let rt2 = rt.clone();
    let report = store
        .run(move |s| {
            s.write_poll(&rt2.cfg.name, now_ms, |txn| {
                apply(txn, &rt2, fetched, now_ms)
            })
        })
        .await?;
    Ok(report)
}

/// Diffs a complete fetch against the snapshot inside the poll's transaction.
pub fn apply(
    txn: &mut PollTxn<'_>,
    rt: &SourceRuntime,
    fetched: Fetched,
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
        ..PollReport::default()
    };
    let mut seen: HashSet<String> = HashSet::with_capacity(fetched.records.len());
    for rec in fetched.records {
        let prev = txn.get(&rec.id)?;
        let cmp = rt.policy.compare(prev.as_ref(), rec.doc);
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
        }
        seen.insert(rec.id);
    }

    if cfg.on_disappear == OnDisappear::Cancel && state.is_some() {
        let known = txn.known()?;
        let active = known.iter().filter(|(_, cancelled)| !cancelled).count();
        let gone: Vec<&String> = known
            .iter()
            .filter(|(id, cancelled)| !cancelled && !seen.contains(id))
            .map(|(id, _)| id)
            .collect();
        if !gone.is_empty() {
            if disappearance_allowed(active, gone.len(), cfg.max_disappear_share) {
                for id in gone {
                    if let Some(mut stored) = txn.get(id)? {
                        stored.cancelled = true;
                        txn.put(id, &stored)?;
                        txn.emit(
                            EventKind::Cancel,
                            id,
                            stored.doc,
                            Vec::new(),
                            &rt.routes.get(EventKind::Cancel),
                        )?;
                    }
                }
            } else {
                report.held_back = gone.len();
                tracing::error!(
                    source = %cfg.name,
                    gone = gone.len(),
                    known_active = active,
                    max_disappear_share = cfg.max_disappear_share,
                    "HELD BACK: {} of {} known bookings vanished from one poll; not cancelling any of them. \
                     If they really were cancelled, raise sources.{}.max_disappear_share for one poll.",
                    gone.len(),
                    active,
                    cfg.name
                );
            }
        }
    }

    let mut next = state.unwrap_or(SourceState {
        first_poll_ms: now_ms,
        ..SourceState::default()
    });
    next.polls += 1;
    next.last_poll_ms = now_ms;
    txn.set_state(&next)?;
    report.events = txn.take_emitted();
    Ok(report)
}
