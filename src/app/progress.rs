//! Per-source poll health since start (last success, the last poll's figures, failures in a row
//! with the last error, the next scheduled poll, totals, whether its pings seem lost), shared by
//! the schedule loops and whoever reports it (admin API, status page, metrics, readiness).

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
    /// Events detected since start (polls and ping refreshes).
    pub events_total: u64,
    /// Pings recorded since start.
    pub pings_total: u64,
    /// Polls since the last ping that found changes (which pings should have announced).
    pub changed_polls_since_ping: u64,
    /// True for a source with `[ping]` when [`PINGS_LOST_AFTER`] polls in a row found changes
    /// and no ping came meanwhile: its pings are probably being lost.
    pub pings_lost: bool,
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

/// Polls that found changes, with no ping since, after which a ping source's pings count as lost.
pub const PINGS_LOST_AFTER: u64 = 2;

/// Every source's [`SourceHealth`]. Cheap to clone.
#[derive(Debug, Default, Clone)]
pub(crate) struct Progress {
    inner: Arc<Mutex<BTreeMap<String, SourceHealth>>>,
    pinged: Arc<std::collections::BTreeSet<String>>,
}

impl Progress {
    /// Every source in `sources` known from the start, with nothing polled yet (so each is
    /// reported, e.g. a last success of 0, before its first poll succeeds).
    /// `pinged` are the sources with a `[ping]` table.
    pub(crate) fn with_sources<'a>(
        sources: impl IntoIterator<Item = &'a str>,
        pinged: impl IntoIterator<Item = &'a str>,
    ) -> Progress {
        let map = sources
            .into_iter()
            .map(|s| (s.to_string(), SourceHealth::default()))
            .collect();
        Progress {
            inner: Arc::new(Mutex::new(map)),
            pinged: Arc::new(pinged.into_iter().map(str::to_string).collect()),
        }
    }

    /// A committed poll; true when this poll made the source's pings count as lost.
    pub(crate) fn polled(&self, source: &str, poll: LastPoll) -> bool {
        let mut m = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let h = m.entry(source.to_string()).or_default();
        h.events_total += poll.events as u64;
        let was_lost = h.pings_lost;
        if poll.events > 0 {
            h.changed_polls_since_ping += 1;
        }
        h.pings_lost =
            self.pinged.contains(source) && h.changed_polls_since_ping >= PINGS_LOST_AFTER;
        h.last_success_ms = Some(poll.at_ms);
        h.consecutive_failures = 0;
        h.last_error = None;
        h.successes_total += 1;
        h.last_poll = Some(poll);
        h.pings_lost && !was_lost
    }

    /// Pings for `source` were recorded.
    pub(crate) fn pinged(&self, source: &str, pings: usize) {
        let mut m = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let h = m.entry(source.to_string()).or_default();
        h.pings_total += pings as u64;
        h.changed_polls_since_ping = 0;
        h.pings_lost = false;
    }

    /// A ping refresh committed `events`.
    pub(crate) fn refreshed(&self, source: &str, events: usize) {
        let mut m = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        m.entry(source.to_string()).or_default().events_total += events as u64;
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
