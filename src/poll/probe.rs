//! `check --probe`: one full fetch of a live source with nothing committed, and what the
//! configuration makes of it (pages, bookings, a sample, statuses, cancellations).

use std::sync::Arc;

use super::PollError;
use super::runtime::policy_of;
use crate::clock::Clock;
use crate::config::SourceConfig;
use crate::json::scalar_string;
use crate::source::{PollKind, SourceClient, SourceError};
use crate::store::Store;

/// What `check --probe` learned from one full cycle of a live source (nothing is committed).
#[derive(Debug, Clone)]
pub struct ProbeReport {
    /// Pages fetched.
    pub pages: u32,
    /// Bookings found (distinct ids).
    pub bookings: usize,
    /// A sample booking: its id and status (as compared).
    pub sample: Option<(String, Option<String>)>,
    /// How many are cancelled by the configured status values.
    pub cancelled: usize,
    /// A few cancelled ids.
    pub cancelled_examples: Vec<String>,
    /// The distinct status values seen, with counts.
    pub statuses: Vec<(String, usize)>,
}

/// Fetches one full cycle of `cfg` and reports what the configuration makes of it. Uses an
/// in-memory store for tokens, so it can run beside a daemon that holds the state file.
pub async fn probe(cfg: &SourceConfig) -> Result<ProbeReport, PollError> {
    let store = Store::in_memory()?;
    let client = SourceClient::new(cfg, Arc::new(store), Clock::system())
        .map_err(|e| PollError::Source(SourceError::Template(e)))?;
    let fetched = client
        .fetch_all(cfg, PollKind::Full, chrono::Utc::now())
        .await?;
    let policy = policy_of(cfg);
    let status_of = |doc: &serde_json::Value| {
        cfg.status
            .as_deref()
            .and_then(|p| doc.pointer(p))
            .and_then(scalar_string)
    };
    let mut statuses: std::collections::BTreeMap<String, usize> = Default::default();
    let mut cancelled = 0;
    let mut cancelled_examples = Vec::new();
    for r in &fetched.records {
        *statuses
            .entry(status_of(&r.doc).unwrap_or_else(|| "(none)".into()))
            .or_default() += 1;
        if policy.is_cancelled(&r.doc) {
            cancelled += 1;
            if cancelled_examples.len() < 5 {
                cancelled_examples.push(r.id.clone());
            }
        }
    }
    Ok(ProbeReport {
        pages: fetched.pages,
        bookings: fetched.records.len(),
        sample: fetched
            .records
            .first()
            .map(|r| (r.id.clone(), status_of(&r.doc))),
        cancelled,
        cancelled_examples,
        statuses: statuses.into_iter().collect(),
    })
}
