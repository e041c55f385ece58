//! Ping-triggered refresh: recorded pings become lookups and one-booking commits. The
//! [`intake`] records pings in group commits before the ingress answers; one [`Worker`] per
//! source coalesces them ([`queue`]), looks the bookings up one at a time through the source's
//! client (taking turns with its polls), and commits the answers through
//! [`crate::poll::refresh`], which removes the answered pings in the same transaction. Failed
//! lookups are retried with backoff and given up after [`MAX_ATTEMPTS`] (the next poll is the
//! safety net). Pings recorded before a crash or a reload are loaded again at start.

pub mod intake;
pub mod queue;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;

use crate::clock::Clock;
use crate::poll::SourceRuntime;
use crate::poll::refresh::{self, Looked, RefreshReport};
use crate::store::Store;
use crate::text::Escaped;
use queue::{Pushed, Queue, Taken};

/// Lookups of one booking tried before its pings are given up.
pub const MAX_ATTEMPTS: u32 = 5;
/// Lookups committed together at most.
const BATCH: usize = 64;
/// Lookups gathered for one commit at most this long.
const GATHER: Duration = Duration::from_millis(20);

/// A recorded ping handed to its source's worker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PingIn {
    /// The booking id.
    pub id: String,
    /// Its sequence number in the store.
    pub seq: u64,
    /// When it was received (ms since epoch).
    pub received_ms: i64,
}

/// What a worker tells the application as it goes.
pub trait Observer: Send + Sync + 'static {
    /// A refresh was committed; `received_ms` holds, per booking, when its earliest ping came.
    fn committed(&self, report: &RefreshReport, received_ms: &[i64]);
    /// A ping joined others waiting for the same booking.
    fn coalesced(&self, source: &str);
    /// Pings were given up after [`MAX_ATTEMPTS`] failed lookups.
    fn dropped(&self, source: &str, pings: usize);
}

/// One source's refresh worker, before it runs.
pub struct Worker {
    rt: Arc<SourceRuntime>,
    store: Store,
    clock: Clock,
    rx: mpsc::UnboundedReceiver<PingIn>,
    backlog: Arc<AtomicUsize>,
    polled: Arc<Notify>,
    observer: Arc<dyn Observer>,
}

/// What the rest of the application holds of a source's worker.
#[derive(Debug, Clone)]
pub struct Handle {
    /// Where the intake sends recorded pings.
    pub tx: mpsc::UnboundedSender<PingIn>,
    /// Pings recorded and not yet answered (or given up).
    pub backlog: Arc<AtomicUsize>,
    /// Notified after each committed poll (pings wait for a source's first poll).
    pub polled: Arc<Notify>,
}

/// A worker for `rt` and its handle.
pub fn worker(
    rt: Arc<SourceRuntime>,
    store: Store,
    clock: Clock,
    observer: Arc<dyn Observer>,
) -> (Worker, Handle) {
    let (tx, rx) = mpsc::unbounded_channel();
    let backlog = Arc::new(AtomicUsize::new(0));
    let polled = Arc::new(Notify::new());
    (
        Worker {
            rt,
            store,
            clock,
            rx,
            backlog: backlog.clone(),
            polled: polled.clone(),
            observer,
        },
        Handle {
            tx,
            backlog,
            polled,
        },
    )
}

/// The wait before retry `attempt` (1-based): 1 s, 2 s, 4 s, … capped at a minute.
pub fn backoff(attempt: u32) -> Duration {
    Duration::from_secs(1u64 << attempt.saturating_sub(1).min(6)).min(Duration::from_secs(60))
}

impl Worker {
    fn name(&self) -> &str {
        &self.rt.cfg.name
    }

    /// Runs until `cancel`: loads the pings recorded earlier, then answers pings as they come.
    pub async fn run(mut self, cancel: CancellationToken) {
        let coalesce = self
            .rt
            .cfg
            .ping
            .as_ref()
            .map(|p| p.coalesce)
            .unwrap_or_default();
        let mut queue = Queue::new(coalesce);
        let name = self.name().to_string();
        let recorded = self
            .store
            .run(move |s| s.pending_pings(&name, usize::MAX))
            .await;
        match recorded {
            Ok(rows) => {
                if !rows.is_empty() {
                    tracing::info!(source = %self.name(), pings = rows.len(), "looking up pings recorded before the restart");
                }
                let now = Instant::now();
                for r in rows {
                    self.backlog.fetch_add(1, Ordering::SeqCst);
                    queue.push(&r.id, r.seq, r.received_ms, now);
                }
            }
            Err(e) => {
                tracing::error!(source = %self.name(), error = %Escaped(&e), "cannot read recorded pings; they wait for the next start (polls go on)");
            }
        }
        let mut ready = false;
        loop {
            while let Ok(p) = self.rx.try_recv() {
                self.push(&mut queue, p);
            }
            let due = queue.next_due();
            let now = Instant::now();
            if due.is_none_or(|d| d > now) {
                let sleep = due.map(|d| tokio::time::sleep_until(d.into()));
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    p = self.rx.recv() => match p {
                        Some(p) => self.push(&mut queue, p),
                        None => return,
                    },
                    _ = async { match sleep { Some(s) => s.await, None => std::future::pending().await } } => {}
                }
                continue;
            }
            if !ready {
                ready = self.wait_for_first_poll(&cancel).await;
                if !ready {
                    return;
                }
            }
            let taken = queue.take(now, BATCH);
            if !self.answer(&mut queue, taken, &cancel).await {
                return;
            }
        }
    }

    /// Queues a ping the intake recorded (and counted in the backlog).
    fn push(&self, queue: &mut Queue, p: PingIn) {
        if queue.push(&p.id, p.seq, p.received_ms, Instant::now()) == Pushed::Coalesced {
            self.observer.coalesced(self.name());
        }
    }

    /// Waits until the source has a completed poll (its first poll decides what exists).
    /// False when cancelled.
    async fn wait_for_first_poll(&self, cancel: &CancellationToken) -> bool {
        loop {
            let name = self.name().to_string();
            if let Ok(Some(_)) = self.store.run(move |s| s.source_state(&name)).await {
                return true;
            }
            tokio::select! {
                _ = cancel.cancelled() => return false,
                _ = self.polled.notified() => {}
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
        }
    }

    /// Looks up `taken` one at a time and commits the answers in batches. False when cancelled.
    async fn answer(
        &mut self,
        queue: &mut Queue,
        taken: Vec<Taken>,
        cancel: &CancellationToken,
    ) -> bool {
        let mut looked = Vec::new();
        let mut started = Instant::now();
        for t in taken {
            let found = tokio::select! {
                _ = cancel.cancelled() => {
                    refresh::abandon(&self.rt, &t.id);
                    return false;
                }
                f = refresh::look_up(&self.rt, &t.id, &self.clock) => f,
            };
            match found {
                Ok(found) => looked.push((t, found)),
                Err(e) => self.failed(queue, t, &e.to_string()).await,
            }
            while let Ok(p) = self.rx.try_recv() {
                self.push(queue, p);
            }
            if looked.len() >= BATCH || started.elapsed() >= GATHER {
                self.commit(queue, std::mem::take(&mut looked)).await;
                started = Instant::now();
            }
        }
        if !looked.is_empty() {
            self.commit(queue, looked).await;
        }
        true
    }

    async fn failed(&self, queue: &mut Queue, t: Taken, reason: &str) {
        let attempt = t.waiting.attempts + 1;
        if attempt < MAX_ATTEMPTS {
            let wait = backoff(attempt);
            tracing::warn!(source = %self.name(), booking = %Escaped(&t.id), attempt, retry_in = ?wait, error = %Escaped(reason), "ping lookup failed; will retry");
            queue.retry(t, Instant::now() + wait);
            return;
        }
        let (name, seqs) = (self.name().to_string(), t.waiting.seqs.clone());
        let n = seqs.len();
        match self.store.run(move |s| s.drop_pings(&name, &seqs)).await {
            Ok(()) => {
                tracing::warn!(source = %self.name(), booking = %Escaped(&t.id), attempts = attempt, error = %Escaped(reason), "ping lookups kept failing; giving the pings up (the next poll still sees the booking)");
                self.backlog.fetch_sub(n, Ordering::SeqCst);
                self.observer.dropped(self.name(), n);
                queue.finished(&t.id);
            }
            Err(e) => {
                tracing::error!(source = %self.name(), error = %Escaped(&e), "cannot forget failed pings; retrying later");
                queue.retry(t, Instant::now() + backoff(MAX_ATTEMPTS));
            }
        }
    }

    async fn commit(&self, queue: &mut Queue, looked: Vec<(Taken, crate::source::LookedUp)>) {
        let mut taken = Vec::with_capacity(looked.len());
        let mut batch = Vec::with_capacity(looked.len());
        for (t, found) in looked {
            batch.push(Looked {
                id: t.id.clone(),
                found,
                pings: t.waiting.seqs.clone(),
            });
            taken.push(t);
        }
        match refresh::commit(&self.rt, &self.store, batch).await {
            Ok(report) if report.waiting_for_first_poll => {
                for t in taken {
                    let mut t = t;
                    t.waiting.attempts = t.waiting.attempts.saturating_sub(1);
                    queue.retry(t, Instant::now() + Duration::from_millis(100));
                }
            }
            Ok(report) => {
                let answered: usize = taken.iter().map(|t| t.waiting.seqs.len()).sum();
                self.backlog.fetch_sub(answered, Ordering::SeqCst);
                let received: Vec<i64> = taken.iter().map(|t| t.waiting.received_ms).collect();
                for t in &taken {
                    queue.finished(&t.id);
                }
                self.observer.committed(&report, &received);
            }
            Err(e) => {
                let reason = e.to_string();
                for t in taken {
                    self.failed(queue, t, &reason).await;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_is_capped() {
        assert_eq!(backoff(1), Duration::from_secs(1));
        assert_eq!(backoff(2), Duration::from_secs(2));
        assert_eq!(backoff(4), Duration::from_secs(8));
        assert_eq!(backoff(30), Duration::from_secs(60));
    }
}
