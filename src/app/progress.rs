//! Per-source poll health since start (last success, failures in a row, totals), shared by the
//! schedule loops and whoever reports it (admin API, metrics, readiness).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use serde::Serialize;

/// What is known about a source's polls since start.
#[derive(Debug, Default, Clone, Serialize)]
pub struct SourceHealth {
    /// Last committed poll (ms since epoch), if any since start.
    pub last_success_ms: Option<i64>,
    /// Failed polls in a row.
    pub consecutive_failures: u64,
    /// Failed polls since start.
    pub failures_total: u64,
    /// Successful polls since start.
    pub successes_total: u64,
    /// Events detected since start.
    pub events_total: u64,
}

/// Every source's [`SourceHealth`]. Cheap to clone.
#[derive(Debug, Default, Clone)]
pub(crate) struct Progress {
    inner: Arc<Mutex<BTreeMap<String, SourceHealth>>>,
}

impl Progress {
    /// Every source in `sources` known from the start, with nothing polled yet (so each is
    /// reported, e.g. a last success of 0, before its first poll succeeds).
    pub(crate) fn with_sources<'a>(sources: impl IntoIterator<Item = &'a str>) -> Progress {
        let map = sources
            .into_iter()
            .map(|s| (s.to_string(), SourceHealth::default()))
            .collect();
        Progress {
            inner: Arc::new(Mutex::new(map)),
        }
    }

    pub(crate) fn polled(&self, source: &str, at_ms: i64, events: usize) {
        let mut m = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let h = m.entry(source.to_string()).or_default();
        h.events_total += events as u64;
        h.last_success_ms = Some(at_ms);
        h.consecutive_failures = 0;
        h.successes_total += 1;
    }

    pub(crate) fn poll_failed(&self, source: &str) {
        let mut m = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let h = m.entry(source.to_string()).or_default();
        h.consecutive_failures += 1;
        h.failures_total += 1;
    }

    /// A copy of every source's health.
    pub(crate) fn snapshot(&self) -> BTreeMap<String, SourceHealth> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}
