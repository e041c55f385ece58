//! Retries as data (svix style): the schedule, its defaults, and the pure decision of what one
//! attempt's outcome means for its delivery row. No I/O, no clock: `now` and the jitter draw are
//! arguments.

use std::time::Duration;

use crate::outbox::{Attempt, Delivery, DeliveryState, HISTORY_LIMIT};

/// The default schedule in seconds: immediately, 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h.
///
/// The first seven waits are the Standard Webhooks specification's example schedule
/// (immediately, 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, then 14 h, 20 h, 24 h: ten attempts over
/// 75.6 h); like Svix, the reference sender behind that specification, we stop at eight
/// attempts, the last one 10 h after the seventh, 27 h 35 min after detection. The 5 s retry
/// catches a blip (a restart, a dropped connection); a receiver still failing after it is
/// usually down for longer, so the third attempt waits 5 minutes rather than hammering it while
/// it recovers, and the waits then grow to give an operator a working day to fix it. The README
/// ("Retries, dead letters, replay") shows the same schedule side by side with the
/// specification's; a test keeps the two in step.
pub const DEFAULT_SCHEDULE_SECS: [u64; 8] = [0, 5, 300, 1800, 7200, 18000, 36000, 36000];

/// Retry schedule as data (svix style): `schedule[n]` is the delay before attempt `n + 1`.
#[derive(Debug, Clone, PartialEq)]
pub struct RetryPolicy {
    /// Delay before each attempt; its length is the number of attempts.
    pub schedule: Vec<Duration>,
    /// Random spread applied to each delay, as a share (0.2 = ±20%).
    pub jitter: f64,
    /// Longest `Retry-After` honoured.
    pub retry_after_cap: Duration,
}

impl RetryPolicy {
    /// Immediately, 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h; ±20% jitter; Retry-After up to 1 h.
    pub fn default_schedule() -> RetryPolicy {
        RetryPolicy {
            schedule: DEFAULT_SCHEDULE_SECS
                .iter()
                .map(|s| Duration::from_secs(*s))
                .collect(),
            jitter: 0.2,
            retry_after_cap: Duration::from_secs(3600),
        }
    }
}

/// What an attempt's result means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// 2xx: done.
    Delivered,
    /// Try again at this time (ms since epoch).
    RetryAt(i64),
    /// No attempts left: dead letter.
    Dead,
}

/// The classified result of one attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttemptResult {
    /// A response with this status (and `Retry-After` seconds if given).
    Status {
        /// HTTP status.
        code: u16,
        /// Parsed `Retry-After`, if any.
        retry_after: Option<Duration>,
    },
    /// Timeout, refused connection, TLS failure...
    Transport,
    /// A broker acknowledged the message as stored (NATS JetStream's PubAck, a duplicate
    /// included): delivered, without an HTTP status.
    Acknowledged,
}

/// Pure retry decision. `attempts_done` counts the attempt just made; `unit` is a number in
/// [0, 1) used for jitter (random in production, fixed in tests).
pub fn decide(
    policy: &RetryPolicy,
    attempts_done: u32,
    result: AttemptResult,
    now_ms: i64,
    unit: f64,
) -> Decision {
    if let AttemptResult::Status { code, .. } = result
        && (200..300).contains(&code)
    {
        return Decision::Delivered;
    }
    if result == AttemptResult::Acknowledged {
        return Decision::Delivered;
    }
    let Some(base) = policy.schedule.get(attempts_done as usize) else {
        return Decision::Dead;
    };
    let spread = (unit.clamp(0.0, 1.0) * 2.0 - 1.0) * policy.jitter;
    let mut delay_ms = (base.as_millis() as f64 * (1.0 + spread)).max(0.0) as i64;
    if let AttemptResult::Status {
        code: 429 | 503,
        retry_after: Some(ra),
    } = result
    {
        let ra_ms = ra.min(policy.retry_after_cap).as_millis() as i64;
        delay_ms = delay_ms.max(ra_ms);
    }
    Decision::RetryAt(now_ms.saturating_add(delay_ms))
}

/// Applies an attempt to a delivery row: counts it, keeps the latest history, and moves the row to
/// delivered, a later retry, or dead.
pub fn settle(
    mut d: Delivery,
    policy: &RetryPolicy,
    attempt: Attempt,
    result: AttemptResult,
    now_ms: i64,
    unit: f64,
) -> Delivery {
    d.attempts += 1;
    d.history.push(attempt);
    if d.history.len() > HISTORY_LIMIT {
        let extra = d.history.len() - HISTORY_LIMIT;
        d.history.drain(..extra);
    }
    match decide(policy, d.attempts, result, now_ms, unit) {
        Decision::Delivered => d.state = DeliveryState::Delivered,
        Decision::RetryAt(t) => d.next_ms = t,
        Decision::Dead => d.state = DeliveryState::Dead,
    }
    d
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(secs: &[u64], jitter: f64) -> RetryPolicy {
        RetryPolicy {
            schedule: secs.iter().map(|s| Duration::from_secs(*s)).collect(),
            jitter,
            retry_after_cap: Duration::from_secs(60),
        }
    }

    fn status(code: u16) -> AttemptResult {
        AttemptResult::Status {
            code,
            retry_after: None,
        }
    }

    #[test]
    fn only_2xx_succeeds() {
        let p = policy(&[0, 5], 0.0);
        assert_eq!(decide(&p, 1, status(200), 0, 0.5), Decision::Delivered);
        assert_eq!(decide(&p, 1, status(204), 0, 0.5), Decision::Delivered);
        for code in [301, 302, 400, 404, 410, 500] {
            assert_eq!(
                decide(&p, 1, status(code), 0, 0.5),
                Decision::RetryAt(5000),
                "{code}"
            );
        }
        assert_eq!(
            decide(&p, 1, AttemptResult::Transport, 0, 0.5),
            Decision::RetryAt(5000)
        );
        // A broker's acknowledgement is a delivery, even on the last attempt.
        assert_eq!(
            decide(&p, 2, AttemptResult::Acknowledged, 0, 0.5),
            Decision::Delivered
        );
    }

    #[test]
    fn schedule_runs_out_into_dead_letter() {
        let p = policy(&[0, 5, 300], 0.0);
        assert_eq!(
            decide(&p, 1, status(500), 1000, 0.5),
            Decision::RetryAt(6000)
        );
        assert_eq!(
            decide(&p, 2, status(500), 1000, 0.5),
            Decision::RetryAt(301_000)
        );
        assert_eq!(decide(&p, 3, status(500), 1000, 0.5), Decision::Dead);
        assert_eq!(decide(&p, 3, status(200), 1000, 0.5), Decision::Delivered);
    }

    #[test]
    fn jitter_stays_within_bounds() {
        let p = policy(&[0, 100], 0.2);
        let lo = decide(&p, 1, status(500), 0, 0.0);
        let hi = decide(&p, 1, status(500), 0, 0.999_999);
        assert_eq!(lo, Decision::RetryAt(80_000));
        assert!(matches!(hi, Decision::RetryAt(ms) if (119_000..=120_000).contains(&ms)));
        for i in 0..100 {
            let Decision::RetryAt(ms) = decide(&p, 1, status(500), 0, i as f64 / 100.0) else {
                panic!()
            };
            assert!((80_000..=120_000).contains(&ms));
        }
    }

    #[test]
    fn retry_after_is_honoured_up_to_the_cap() {
        let p = policy(&[0, 5, 5], 0.0);
        let ra = |s| AttemptResult::Status {
            code: 429,
            retry_after: Some(Duration::from_secs(s)),
        };
        assert_eq!(decide(&p, 1, ra(30), 0, 0.5), Decision::RetryAt(30_000));
        assert_eq!(decide(&p, 1, ra(3600), 0, 0.5), Decision::RetryAt(60_000));
        assert_eq!(decide(&p, 1, ra(1), 0, 0.5), Decision::RetryAt(5_000));
        // Retry-After on a 500 is not a throttle signal.
        let other = AttemptResult::Status {
            code: 500,
            retry_after: Some(Duration::from_secs(30)),
        };
        assert_eq!(decide(&p, 1, other, 0, 0.5), Decision::RetryAt(5_000));
    }

    #[test]
    fn default_schedule_is_the_documented_one() {
        let p = RetryPolicy::default_schedule();
        let secs: Vec<u64> = p.schedule.iter().map(Duration::as_secs).collect();
        assert_eq!(secs, [0, 5, 300, 1800, 7200, 18000, 36000, 36000]);
    }

    #[test]
    fn settle_counts_attempts_and_bounds_history() {
        use crate::outbox::{Event, EventKind};
        let event = Event {
            id: "evt_1".into(),
            seq: 9,
            kind: EventKind::New,
            source: "s".into(),
            booking_id: "1".into(),
            detected_ms: 0,
            booking: crate::outbox::Booking::from_value(serde_json::json!({})).unwrap(),
            changes: vec![],
            backfill: false,
        };
        let p = policy(&[0, 1], 0.0);
        let mut d = Delivery::new("e", &event);
        let a = Attempt {
            at_ms: 0,
            status: Some(500),
            error: None,
            latency_ms: 1,
            body: String::new(),
        };
        d = settle(d, &p, a.clone(), status(500), 1000, 0.5);
        assert_eq!(
            (d.state, d.attempts, d.next_ms),
            (DeliveryState::Pending, 1, 2000)
        );
        d = settle(d, &p, a.clone(), status(500), 2000, 0.5);
        assert_eq!((d.state, d.attempts), (DeliveryState::Dead, 2));
        let mut d = Delivery::new("e", &event);
        for _ in 0..(HISTORY_LIMIT + 5) {
            d.history.push(a.clone());
        }
        d = settle(d, &p, a, status(200), 0, 0.5);
        assert_eq!(d.history.len(), HISTORY_LIMIT);
        assert_eq!(d.state, DeliveryState::Delivered);
    }
}
