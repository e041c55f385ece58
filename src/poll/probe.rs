//! `check --probe`: one full fetch of a live source with nothing committed, and what the
//! configuration makes of it (pages, bookings, a sample, statuses, cancellations).

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use super::PollError;
use super::index::id_hash;
use super::runtime::policy_of;
use crate::clock::Clock;
use crate::config::SourceConfig;
use crate::source::{PagePrint, PageSeen, Pager, PollKind, SourceClient, SourceError};
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
    let policy = policy_of(cfg);
    let now = chrono::Utc::now();
    let mut pager = Pager::start(cfg);
    let mut seen: HashSet<u64> = HashSet::new();
    let mut statuses: BTreeMap<String, usize> = BTreeMap::new();
    let mut report = ProbeReport {
        pages: 0,
        bookings: 0,
        sample: None,
        cancelled: 0,
        cancelled_examples: Vec::new(),
        statuses: Vec::new(),
    };
    while !pager.done {
        let page = client.fetch(cfg, &pager, PollKind::Full, now).await?;
        let mut records = 0u64;
        let mut print = PagePrint::default();
        let skeleton = crate::source::page(cfg, &cfg.items, &page.body, page.number, &mut |r| {
            records += 1;
            print.add(&r.id);
            if seen.insert(id_hash(&r.id)) {
                report.bookings += 1;
            }
            let status = policy.status_of(&r.doc);
            if report.sample.is_none() {
                report.sample = Some((r.id.clone(), status.clone()));
            }
            *statuses
                .entry(status.unwrap_or_else(|| "(none)".into()))
                .or_default() += 1;
            if policy.is_cancelled(&r.doc) {
                report.cancelled += 1;
                if report.cancelled_examples.len() < 5 {
                    report.cancelled_examples.push(r.id);
                }
            }
            Ok(())
        })?;
        pager.advance(
            cfg,
            PageSeen {
                skeleton: &skeleton,
                records,
                print: print.finish(),
            },
        )?;
    }
    report.pages = pager.pages;
    report.statuses = statuses.into_iter().collect();
    Ok(report)
}
