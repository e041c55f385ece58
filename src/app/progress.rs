//! Per-source poll health since start (last success, the last poll's figures, failures in a row
//! with the last error, the next scheduled poll, totals), shared by the schedule loops and whoever
//! reports it (admin API, status page, metrics, readiness).

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
    /// The last committed poll, if any since start.
    pub last_poll: Option<LastPoll>,
    /// The error of the last failed poll (secrets redacted), kept until a poll succeeds.
    pub last_error: Option<String>,
    /// When the last failed poll ended (ms since epoch), if any since start.
    pub last_failure_ms: Option<i64>,
    /// When the schedule loop will start the next poll (ms since epoch); none until the
    /// pipeline runs.
    pub next_poll_ms: Option<i64>,
}

/// What the last committed poll of a source did.
#[derive(Debug, Default, Clone, Serialize)]
pub struct LastPoll {
    /// When it was committed (ms since epoch).
    pub at_ms: i64,
    /// Full (everything in scope) or incremental (changes since the watermark).
    pub full: bool,
    /// Whether it continued a poll interrupted earlier.
    pub resumed: bool,
    /// Whether it recorded the baseline (first poll: no events for what already existed).
    pub baseline: bool,
    /// Pages fetched.
    pub pages: u32,
    /// Bookings seen.
    pub bookings: usize,
    /// Events created.
    pub events: usize,
    /// How long it took, in milliseconds.
    pub duration_ms: u64,
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

    pub(crate) fn polled(&self, source: &str, poll: LastPoll) {
        let mut m = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let h = m.entry(source.to_string()).or_default();
        h.events_total += poll.events as u64;
        h.last_success_ms = Some(poll.at_ms);
        h.consecutive_failures = 0;
        h.last_error = None;
        h.successes_total += 1;
        h.last_poll = Some(poll);
    }

    /// A failed poll that ended at `at_ms` with `error` (already redacted).
    pub(crate) fn poll_failed(&self, source: &str, at_ms: i64, error: String) {
        let mut m = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let h = m.entry(source.to_string()).or_default();
        h.consecutive_failures += 1;
        h.failures_total += 1;
        h.last_error = Some(error);
        h.last_failure_ms = Some(at_ms);
    }

    /// The schedule loop's next start for `source`.
    pub(crate) fn scheduled(&self, source: &str, next_ms: i64) {
        let mut m = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        m.entry(source.to_string()).or_default().next_poll_ms = Some(next_ms);
    }

    /// A copy of every source's health.
    pub(crate) fn snapshot(&self) -> BTreeMap<String, SourceHealth> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}
