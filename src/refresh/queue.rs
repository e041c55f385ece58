//! Which bookings to look up next (pure): pings for one id are coalesced while they wait (the
//! first waits the `coalesce` window), an id is looked up by one lookup at a time, and pings that
//! arrive while its lookup is out wait for one follow-up lookup (the answer may predate them).

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

/// One booking waiting for a lookup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Waiting {
    /// When it may be looked up.
    pub due: Instant,
    /// The recorded pings the lookup answers.
    pub seqs: Vec<u64>,
    /// When the earliest of them was received (ms since epoch).
    pub received_ms: i64,
    /// Failed lookups so far.
    pub attempts: u32,
}

/// A booking taken for a lookup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Taken {
    /// Its id.
    pub id: String,
    /// What was waiting.
    pub waiting: Waiting,
}

/// Whether a ping joined a booking already waiting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pushed {
    /// It is the first one waiting for this booking.
    New,
    /// It joined pings already waiting: one lookup answers them all.
    Coalesced,
}

/// The bookings waiting for a lookup, and those being looked up.
#[derive(Debug)]
pub struct Queue {
    coalesce: Duration,
    waiting: HashMap<String, Waiting>,
    in_flight: HashSet<String>,
}

impl Queue {
    /// An empty queue whose first pings wait `coalesce`.
    pub fn new(coalesce: Duration) -> Queue {
        Queue {
            coalesce,
            waiting: HashMap::new(),
            in_flight: HashSet::new(),
        }
    }

    /// Adds a recorded ping.
    pub fn push(&mut self, id: &str, seq: u64, received_ms: i64, now: Instant) -> Pushed {
        if let Some(w) = self.waiting.get_mut(id) {
            w.seqs.push(seq);
            w.received_ms = w.received_ms.min(received_ms);
            return Pushed::Coalesced;
        }
        self.waiting.insert(
            id.to_string(),
            Waiting {
                due: now + self.coalesce,
                seqs: vec![seq],
                received_ms,
                attempts: 0,
            },
        );
        if self.in_flight.contains(id) {
            Pushed::Coalesced
        } else {
            Pushed::New
        }
    }

    /// When the next booking may be looked up (`None` when none waits outside a lookup).
    pub fn next_due(&self) -> Option<Instant> {
        self.waiting
            .iter()
            .filter(|(id, _)| !self.in_flight.contains(*id))
            .map(|(_, w)| w.due)
            .min()
    }

    /// Takes up to `max` bookings due at `now`, earliest first, and marks them in flight.
    pub fn take(&mut self, now: Instant, max: usize) -> Vec<Taken> {
        let mut due: Vec<(&String, &Waiting)> = self
            .waiting
            .iter()
            .filter(|(id, w)| w.due <= now && !self.in_flight.contains(*id))
            .collect();
        due.sort_by_key(|(id, w)| (w.due, w.received_ms, (*id).clone()));
        let ids: Vec<String> = due
            .into_iter()
            .take(max)
            .map(|(id, _)| id.clone())
            .collect();
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            if let Some(waiting) = self.waiting.remove(&id) {
                self.in_flight.insert(id.clone());
                out.push(Taken { id, waiting });
            }
        }
        out
    }

    /// The lookup of `id` is over (committed or given up); pings that came meanwhile are due.
    pub fn finished(&mut self, id: &str) {
        self.in_flight.remove(id);
    }

    /// The lookup of `taken` failed: it waits until `at`, with the pings that came meanwhile.
    pub fn retry(&mut self, taken: Taken, at: Instant) {
        self.in_flight.remove(&taken.id);
        let mut w = taken.waiting;
        w.attempts += 1;
        w.due = at;
        if let Some(later) = self.waiting.remove(&taken.id) {
            w.seqs.extend(later.seqs);
            w.received_ms = w.received_ms.min(later.received_ms);
        }
        self.waiting.insert(taken.id, w);
    }

    /// Bookings waiting (not counting those in flight).
    pub fn waiting(&self) -> usize {
        self.waiting.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const C: Duration = Duration::from_millis(25);

    #[test]
    fn a_burst_for_one_booking_is_one_lookup() {
        let t0 = Instant::now();
        let mut q = Queue::new(C);
        assert_eq!(q.push("1", 1, 0, t0), Pushed::New);
        assert_eq!(
            q.push("1", 2, 1, t0 + Duration::from_millis(5)),
            Pushed::Coalesced
        );
        assert_eq!(
            q.push("2", 3, 2, t0 + Duration::from_millis(6)),
            Pushed::New
        );
        assert_eq!(q.next_due(), Some(t0 + C));
        assert!(q.take(t0 + Duration::from_millis(24), 10).is_empty());
        let taken = q.take(t0 + C, 10);
        assert_eq!(taken.len(), 1);
        assert_eq!(taken[0].id, "1");
        assert_eq!(taken[0].waiting.seqs, vec![1, 2]);
        assert_eq!(q.next_due(), Some(t0 + Duration::from_millis(6) + C));
    }

    #[test]
    fn pings_during_a_lookup_get_one_follow_up() {
        let t0 = Instant::now();
        let mut q = Queue::new(C);
        q.push("1", 1, 0, t0);
        let first = q.take(t0 + C, 10);
        assert_eq!(first.len(), 1);
        let t1 = t0 + C + Duration::from_millis(1);
        assert_eq!(q.push("1", 2, 0, t1), Pushed::Coalesced);
        assert_eq!(q.push("1", 3, 0, t1), Pushed::Coalesced);
        assert_eq!(q.next_due(), None, "not while its lookup is out");
        assert!(q.take(t1 + C, 10).is_empty());
        q.finished("1");
        let follow = q.take(t1 + C, 10);
        assert_eq!(follow.len(), 1);
        assert_eq!(follow[0].waiting.seqs, vec![2, 3]);
        q.finished("1");
        assert_eq!(q.next_due(), None);
        assert_eq!(q.waiting(), 0);
    }

    #[test]
    fn a_failed_lookup_waits_with_the_pings_that_came_meanwhile() {
        let t0 = Instant::now();
        let mut q = Queue::new(C);
        q.push("1", 1, 10, t0);
        let taken = q.take(t0 + C, 10).remove(0);
        q.push("1", 2, 20, t0 + C);
        let at = t0 + Duration::from_secs(1);
        q.retry(taken, at);
        assert_eq!(q.next_due(), Some(at));
        let again = q.take(at, 10).remove(0);
        assert_eq!(again.waiting.seqs, vec![1, 2]);
        assert_eq!(again.waiting.attempts, 1);
        assert_eq!(again.waiting.received_ms, 10);
    }

    #[test]
    fn take_respects_max_and_order() {
        let t0 = Instant::now();
        let mut q = Queue::new(Duration::ZERO);
        for (i, id) in ["c", "a", "b"].iter().enumerate() {
            q.push(id, i as u64, 0, t0 + Duration::from_millis(i as u64));
        }
        let taken: Vec<String> = q
            .take(t0 + Duration::from_secs(1), 2)
            .into_iter()
            .map(|t| t.id)
            .collect();
        assert_eq!(taken, vec!["c", "a"]);
    }
}
