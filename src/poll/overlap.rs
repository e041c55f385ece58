//! What ping lookups of a source are doing while one of its polls runs, so that the two never
//! fight. A page compares each booking with the snapshot as the poll found it when it began;
//! a lookup may have moved a booking on since. For such a booking the page uses the row the
//! lookup committed, and while a lookup is still out the page stages what it saw
//! unconditionally, so that promotion decides between the two observations by their times.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use super::index::Entry;

/// How a page should treat one booking.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Hint {
    /// No lookup touched it since the poll began: compare as usual.
    None,
    /// A lookup of it is out: stage what the page saw, whatever it is.
    InFlight,
    /// A lookup committed this row since the poll began: compare with it.
    Committed(Entry),
}

#[derive(Debug, Default)]
struct Inner {
    in_flight: HashMap<u64, u32>,
    committed: HashMap<u64, Entry>,
}

/// The lookups of one source, as its polls need to see them. Cheap when there are none.
#[derive(Debug, Default)]
pub struct Overlap {
    any: AtomicBool,
    inner: Mutex<Inner>,
}

impl Overlap {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // The maps stay consistent whatever panicked while holding the lock.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A lookup of the booking with this id hash is about to be sent.
    pub(super) fn begin(&self, hash: u64) {
        let mut inner = self.lock();
        *inner.in_flight.entry(hash).or_insert(0) += 1;
        self.any.store(true, Ordering::Release);
    }

    /// The lookup has ended: `row` is the booking's snapshot row after its commit, `None` if
    /// nothing was committed (the lookup failed).
    pub(super) fn finish(&self, hash: u64, row: Option<Entry>) {
        let mut inner = self.lock();
        if let Some(n) = inner.in_flight.get_mut(&hash) {
            *n -= 1;
            if *n == 0 {
                inner.in_flight.remove(&hash);
            }
        }
        if let Some(row) = row {
            inner.committed.insert(hash, row);
        }
    }

    /// A poll begins (before it reads the snapshot): rows committed so far are in what it
    /// reads.
    pub(super) fn reset(&self) {
        let mut inner = self.lock();
        inner.committed.clear();
        if inner.in_flight.is_empty() {
            self.any.store(false, Ordering::Release);
        }
    }

    /// How a page should treat the booking with this id hash.
    pub(super) fn hint(&self, hash: u64) -> Hint {
        if !self.any.load(Ordering::Acquire) {
            return Hint::None;
        }
        let inner = self.lock();
        if inner.in_flight.contains_key(&hash) {
            Hint::InFlight
        } else if let Some(e) = inner.committed.get(&hash) {
            Hint::Committed(*e)
        } else {
            Hint::None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(f: u64) -> Entry {
        Entry {
            fingerprint: f,
            cancelled: false,
            outside: false,
        }
    }

    #[test]
    fn a_lookup_is_in_flight_until_it_ends_then_its_row_counts() {
        let o = Overlap::default();
        assert_eq!(o.hint(1), Hint::None);
        o.begin(1);
        assert_eq!(o.hint(1), Hint::InFlight);
        assert_eq!(o.hint(2), Hint::None);
        o.finish(1, Some(entry(9)));
        assert_eq!(o.hint(1), Hint::Committed(entry(9)));
    }

    #[test]
    fn two_lookups_of_one_booking_keep_it_in_flight_until_both_end() {
        let o = Overlap::default();
        o.begin(1);
        o.begin(1);
        o.finish(1, Some(entry(1)));
        assert_eq!(o.hint(1), Hint::InFlight);
        o.finish(1, None);
        assert_eq!(o.hint(1), Hint::Committed(entry(1)));
    }

    #[test]
    fn a_new_poll_forgets_committed_rows_but_not_lookups_in_flight() {
        let o = Overlap::default();
        o.begin(1);
        o.begin(2);
        o.finish(2, Some(entry(2)));
        o.reset();
        assert_eq!(o.hint(1), Hint::InFlight);
        assert_eq!(o.hint(2), Hint::None);
        o.finish(1, None);
        o.reset();
        assert_eq!(o.hint(1), Hint::None);
    }

    #[test]
    fn a_failed_lookup_leaves_nothing_behind() {
        let o = Overlap::default();
        o.begin(5);
        o.finish(5, None);
        assert_eq!(o.hint(5), Hint::None);
    }
}
