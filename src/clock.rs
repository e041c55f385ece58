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
    last_stamp_us: Arc<AtomicI64>,
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

    /// A strictly increasing observation stamp in microseconds since the epoch: the current time,
    /// or one microsecond after the previous stamp if the clock has not moved on (or stepped
    /// back). Two observations of a booking made by this process are therefore always ordered,
    /// even within one millisecond.
    pub fn stamp_us(&self) -> i64 {
        let now = Utc::now().timestamp_micros() + self.offset_ms.load(Ordering::Relaxed) * 1000;
        let mut last = self.last_stamp_us.load(Ordering::Relaxed);
        loop {
            let next = now.max(last + 1);
            match self.last_stamp_us.compare_exchange_weak(
                last,
                next,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => return next,
                Err(seen) => last = seen,
            }
        }
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

    #[test]
    fn stamps_strictly_increase_and_follow_the_clock() {
        let c = Clock::system();
        let mut last = c.stamp_us();
        for _ in 0..10_000 {
            let s = c.clone().stamp_us();
            assert!(s > last);
            last = s;
        }
        c.advance(Duration::from_secs(60));
        assert!(c.stamp_us() >= last + 59_000_000);
        assert!((c.stamp_us() / 1000 - c.now_ms()).abs() < 1000);
    }
}
