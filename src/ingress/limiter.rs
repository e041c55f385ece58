//! Failed authentications per client address (pure): after [`MAX_FAILURES`] in a
//! [`WINDOW`], that address gets 429 until the window ends. The table is bounded.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// Failures allowed per address per window.
pub const MAX_FAILURES: u32 = 10;
/// The window.
pub const WINDOW: Duration = Duration::from_secs(60);
/// Addresses tracked at most; beyond it, expired entries are dropped, then the table is reset.
const MAX_TRACKED: usize = 10_000;

/// Failed authentications per address.
#[derive(Debug, Default)]
pub struct Limiter {
    seen: HashMap<IpAddr, (Instant, u32)>,
}

impl Limiter {
    /// `Some(wait)` when `ip` is blocked now.
    pub fn blocked(&self, ip: IpAddr, now: Instant) -> Option<Duration> {
        let (start, n) = self.seen.get(&ip)?;
        let end = *start + WINDOW;
        (*n >= MAX_FAILURES && now < end).then(|| end - now)
    }

    /// Counts one failed authentication of `ip`.
    pub fn failed(&mut self, ip: IpAddr, now: Instant) {
        if self.seen.len() >= MAX_TRACKED && !self.seen.contains_key(&ip) {
            self.seen.retain(|_, (start, _)| now < *start + WINDOW);
            if self.seen.len() >= MAX_TRACKED {
                self.seen.clear();
            }
        }
        let e = self.seen.entry(ip).or_insert((now, 0));
        if now >= e.0 + WINDOW {
            *e = (now, 0);
        }
        e.1 += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_after_the_limit_until_the_window_ends() {
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let other: IpAddr = "192.0.2.2".parse().unwrap();
        let t0 = Instant::now();
        let mut l = Limiter::default();
        for _ in 0..MAX_FAILURES - 1 {
            l.failed(ip, t0);
        }
        assert_eq!(l.blocked(ip, t0), None);
        l.failed(ip, t0);
        assert_eq!(l.blocked(ip, t0), Some(WINDOW));
        assert_eq!(l.blocked(other, t0), None);
        assert_eq!(l.blocked(ip, t0 + WINDOW), None);
        l.failed(ip, t0 + WINDOW);
        assert_eq!(
            l.blocked(ip, t0 + WINDOW),
            None,
            "a new window starts from zero"
        );
    }

    #[test]
    fn the_table_stays_bounded() {
        let t0 = Instant::now();
        let mut l = Limiter::default();
        for i in 0..(MAX_TRACKED as u32 + 10) {
            l.failed(IpAddr::from(i.to_be_bytes()), t0);
        }
        assert!(l.seen.len() <= MAX_TRACKED);
    }
}
