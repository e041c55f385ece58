//! The one clock every stage reads for wall time (poll start, detection, attempt times, endpoint
//! health, pruning, token expiry). It is the system clock plus an offset that only moves forward,
//! so tests make time pass by advancing it instead of sleeping. A leaf.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use chrono::{DateTime, Utc};

/// Wall time, shared by everything one [`crate::App`] runs. Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct Clock {
    offset_ms: Arc<AtomicI64>,
}

impl Clock {
    /// The system clock.
    pub fn system() -> Clock {
        Clock::default()
    }

    /// Milliseconds since the Unix epoch.
    pub fn now_ms(&self) -> i64 {
        Utc::now().timestamp_millis() + self.offset_ms.load(Ordering::Relaxed)
    }

    /// The current time.
    pub fn now(&self) -> DateTime<Utc> {
        DateTime::from_timestamp_millis(self.now_ms()).unwrap_or(DateTime::UNIX_EPOCH)
    }

    /// Moves time forward by `d` (tests).
    pub fn advance(&self, d: Duration) {
        self.offset_ms
            .fetch_add(d.as_millis() as i64, Ordering::Relaxed);
    }

    /// Moves time forward so that it reads at least `at_ms`; never moves it back (tests).
    pub fn advance_to(&self, at_ms: i64) {
        let behind = at_ms - self.now_ms();
        if behind > 0 {
            self.offset_ms.fetch_add(behind, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn advances_and_never_goes_back() {
        let c = Clock::system();
        let t0 = c.now_ms();
        c.advance(Duration::from_secs(3600));
        assert!(c.now_ms() >= t0 + 3_600_000);
        let t1 = c.now_ms();
        c.advance_to(t0);
        assert!(c.now_ms() >= t1, "advance_to never moves back");
        c.advance_to(t1 + 5000);
        assert!(c.now_ms() >= t1 + 5000);
        assert!(c.clone().now_ms() >= t1 + 5000, "clones share the offset");
    }
}
