//! The one delivery path, shared by the daemon and by `deliver_due` (tests, `once`): read due
//! lane heads skipping what is in flight, mark each in flight, attempt it in its own task, and
//! record outcomes in group commits. A delivery stays in flight until its outcome is committed, so
//! it is never sent twice at once.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;

use super::attempt::{AttemptOutcome, attempt};
use super::{Dispatcher, EndpointRuntime, MAX_IN_FLIGHT_TOTAL, Notice};
use crate::outbox::{Delivery, DeliveryState, Event};
use crate::store::{DueBatch, DueItem, StoreError};
use crate::text::Escaped;

/// Most outcomes committed in one transaction.
const COMMIT_BATCH: usize = 512;

/// How long the committer waits for more outcomes while attempts are still running, before it
/// commits a batch smaller than [`COMMIT_BATCH`]. Every commit costs an fsync whatever its size:
/// in the delivery bench (40,000 deliveries) this halved the commits, 99 outcomes each before and
/// 210 after. Nothing waits when no attempt is running, so a lone delivery is committed at once.
const COMMIT_LINGER: Duration = Duration::from_millis(2);

/// How long a delivery whose outcome the store cannot write (short of a fault of the state
/// file, which stops the daemon) stays in flight before it is attempted again: released at
/// once, it would be fetched and sent again at once, in a loop, and never recorded.
pub(super) const UNRECORDABLE_HOLD: Duration = Duration::from_secs(60);

/// Attempts launched per endpoint and not yet committed: eight times its concurrency, so
/// requests go on while earlier outcomes wait for their commit's fsync (the cap on all endpoints
/// together is [`MAX_IN_FLIGHT_TOTAL`]).
fn launch_cap(max_in_flight: u32) -> usize {
    (max_in_flight as usize).saturating_mul(8).max(1)
}

/// Counts from one delivery round.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RoundReport {
    /// Attempts made.
    pub attempted: usize,
    /// Of which delivered.
    pub delivered: usize,
    /// Of which scheduled for retry.
    pub retrying: usize,
    /// Of which dead-lettered.
    pub dead: usize,
}

impl RoundReport {
    fn count(&mut self, d: &Delivery) {
        self.attempted += 1;
        match d.state {
            DeliveryState::Delivered => self.delivered += 1,
            DeliveryState::Dead => self.dead += 1,
            DeliveryState::Pending => self.retrying += 1,
        }
    }

    /// Adds another round's counts.
    pub fn add(&mut self, other: RoundReport) {
        self.attempted += other.attempted;
        self.delivered += other.delivered;
        self.retrying += other.retrying;
        self.dead += other.dead;
    }
}

/// Attempts running and waiting to be committed, shared by the launcher and the committer.
#[derive(Default)]
struct Running(AtomicUsize);

impl Running {
    fn get(&self) -> usize {
        self.0.load(Ordering::Acquire)
    }
}

impl Dispatcher {
    /// Reads due lane heads for the endpoints that are sending (enabled, not suspended after a
    /// 410), each up to its free capacity, `total` in all, skipping deliveries in flight. An
    /// endpoint no longer configured is not read: its deliveries wait in the store.
    async fn fetch_due(&self, now: i64, total: usize) -> Result<DueBatch, StoreError> {
        // Per endpoint: its name, how many more it may launch, and what it has in flight (sorted).
        let mut wanted: Vec<(String, usize, Vec<u64>)> = Vec::new();
        {
            let disabled = self.disabled.lock().unwrap_or_else(|e| e.into_inner());
            let mut left = total;
            for (name, ep) in &self.endpoints {
                if !ep.cfg.enabled || disabled.contains_key(name) || left == 0 {
                    continue;
                }
                let busy = ep.in_flight.lock().unwrap_or_else(|e| e.into_inner());
                let free = launch_cap(ep.cfg.max_in_flight)
                    .saturating_sub(busy.len())
                    .min(left);
                if free > 0 {
                    left -= free;
                    // In order already: the set is sorted.
                    wanted.push((name.clone(), free, busy.iter().copied().collect()));
                }
            }
        }
        if wanted.is_empty() {
            return Ok(DueBatch::default());
        }
        self.store
            .run(move |s| {
                let wanted: Vec<(&str, usize, &[u64])> = wanted
                    .iter()
                    .map(|(n, l, b)| (n.as_str(), *l, b.as_slice()))
                    .collect();
                s.due(now, &wanted)
            })
            .await
    }

    /// Marks `item` in flight and starts its attempt; the outcome is sent to `tx`.
    fn launch(&self, item: DueItem, tx: &mpsc::Sender<AttemptOutcome>, running: &Arc<Running>) {
        let Some(ep) = self.endpoints.get(&item.delivery.endpoint).cloned() else {
            return;
        };
        ep.in_flight
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(item.delivery.seq);
        running.0.fetch_add(1, Ordering::AcqRel);
        let tx = tx.clone();
        let clock = self.clock.clone();
        tokio::spawn(async move {
            let _permit = ep.permits.acquire().await;
            let out = attempt(&ep, item, &clock).await;
            let _ = tx.send(out).await;
        });
    }

    /// Records outcomes as they arrive, as many per transaction as arrive within
    /// [`COMMIT_LINGER`] of the first while attempts are running (up to [`COMMIT_BATCH`]), until
    /// every sender is gone. `after_batch` is told how many were handled. Returns the counts and
    /// the first commit error, if any.
    async fn commit_outcomes(
        &self,
        rx: &mut mpsc::Receiver<AttemptOutcome>,
        running: &Running,
        after_batch: &(dyn Fn() + Send + Sync),
    ) -> (RoundReport, Option<StoreError>) {
        let mut report = RoundReport::default();
        let mut first_error = None;
        while let Some(first) = rx.recv().await {
            let mut batch = vec![first];
            let deadline = tokio::time::Instant::now() + COMMIT_LINGER;
            while batch.len() < COMMIT_BATCH {
                match rx.try_recv() {
                    Ok(o) => batch.push(o),
                    // Only attempts still running can add to the batch.
                    Err(_) if running.get() <= batch.len() => break,
                    Err(_) => match tokio::time::timeout_at(deadline, rx.recv()).await {
                        Ok(Some(o)) => batch.push(o),
                        Ok(None) | Err(_) => break,
                    },
                }
            }
            let n = batch.len();
            let (written, error) = self.commit(batch).await;
            report.add(written);
            if let Some(e) = error {
                tracing::error!(error = %Escaped(&e), "cannot record a batch of delivery outcomes; those not recorded are sent again");
                first_error.get_or_insert(e);
            }
            running.0.fetch_sub(n, Ordering::AcqRel);
            after_batch();
        }
        (report, first_error)
    }

    /// Writes one batch of outcomes in ONE transaction, then updates health, logs and notices
    /// and releases the deliveries from the in-flight set. If the write fails they are released
    /// all the same, so they are attempted again (same event id); if it fails short of a fault
    /// of the state file (see [`StoreError::is_fatal`]), each row is written alone, and a row
    /// that still cannot be written is held in flight for [`UNRECORDABLE_HOLD`] rather than sent
    /// again at once. Returns the counts of what was written and the first error.
    async fn commit(&self, outcomes: Vec<AttemptOutcome>) -> (RoundReport, Option<StoreError>) {
        // The rows move into the write and come back with its result, rather than being
        // copied: a row holds several strings and its attempt history.
        let mut events = Vec::with_capacity(outcomes.len());
        let mut rows: Vec<(Delivery, i64)> = Vec::with_capacity(outcomes.len());
        for o in outcomes {
            rows.push((o.delivery, o.fetched_due_ms));
            events.push(o.event);
        }
        // What to release from the in-flight sets, whatever happens to the write.
        let in_flight: Vec<(&EndpointRuntime, u64)> = rows
            .iter()
            .filter_map(|(d, _)| Some((self.endpoints.get(&d.endpoint)?.as_ref(), d.seq)))
            .collect();
        let release = |held: &[(String, u64)]| {
            for (ep, seq) in &in_flight {
                if held
                    .iter()
                    .any(|(name, s)| s == seq && *name == ep.cfg.name)
                {
                    continue;
                }
                ep.in_flight
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(seq);
            }
        };
        let now = self.clock.now_ms();
        let written = self
            .store
            .run(move |s| {
                let r = s.record(&rows, now);
                Ok((rows, r))
            })
            .await;
        let (rows, events, error, held) = match written {
            Ok((rows, Ok(_))) => (rows, events, None, Vec::new()),
            Ok((rows, Err(e))) if !e.is_fatal() => {
                match self.record_one_by_one(rows, events, now).await {
                    Some((rows, events, unrecordable)) => (rows, events, Some(e), unrecordable),
                    None => {
                        release(&[]);
                        return (RoundReport::default(), Some(e));
                    }
                }
            }
            Ok((_, Err(e))) | Err(e) => {
                release(&[]);
                return (RoundReport::default(), Some(e));
            }
        };
        for (d, _) in &rows {
            self.track_health(d).await;
        }
        release(&held);
        self.hold(held);
        let mut report = RoundReport::default();
        let watched = self.notices.receiver_count() > 0;
        for ((delivery, _), event) in rows.into_iter().zip(events) {
            report.count(&delivery);
            log_outcome(&delivery, &event);
            if watched {
                let _ = self.notices.send(Notice::Attempted {
                    endpoint: delivery.endpoint.clone(),
                    event,
                    delivery,
                });
            }
        }
        (report, error)
    }

    /// After a batch failed to be written: writes each row alone, in order, so one row the
    /// store cannot write does not hold back the others. Returns the rows written with their
    /// events, and the keys of those that could not be.
    async fn record_one_by_one(
        &self,
        rows: Vec<(Delivery, i64)>,
        events: Vec<Arc<Event>>,
        now: i64,
    ) -> Option<(Vec<(Delivery, i64)>, Vec<Arc<Event>>, Vec<(String, u64)>)> {
        let split = self
            .store
            .run(move |s| {
                let mut written = (Vec::new(), Vec::new());
                let mut failed = Vec::new();
                for (row, event) in rows.into_iter().zip(events) {
                    match s.record(std::slice::from_ref(&row), now) {
                        Ok(_) => {
                            written.0.push(row);
                            written.1.push(event);
                        }
                        Err(e) => failed.push((row.0, event, e)),
                    }
                }
                Ok((written, failed))
            })
            .await;
        // Refused at once: the state file was found unusable meanwhile.
        let ((rows, events), failed) = split.ok()?;
        let unrecordable = failed
            .into_iter()
            .map(|(d, event, e)| {
                tracing::error!(
                    endpoint = %d.endpoint, event = %event.id, booking = %Escaped(&event.booking_id),
                    error = %Escaped(&e), hold = ?self.unrecordable_hold,
                    "cannot record this delivery's outcome; it is held, then attempted again with the same event id"
                );
                (d.endpoint, d.seq)
            })
            .collect();
        Some((rows, events, unrecordable))
    }

    /// Keeps deliveries in flight (not fetched, so not sent) for the dispatcher's
    /// `unrecordable_hold` ([`UNRECORDABLE_HOLD`]), then releases them.
    fn hold(&self, keys: Vec<(String, u64)>) {
        if keys.is_empty() {
            return;
        }
        let hold = self.unrecordable_hold;
        let held: Vec<(Arc<EndpointRuntime>, u64)> = keys
            .into_iter()
            .filter_map(|(endpoint, seq)| Some((self.endpoints.get(&endpoint)?.clone(), seq)))
            .collect();
        tokio::spawn(async move {
            tokio::time::sleep(hold).await;
            for (ep, seq) in held {
                ep.in_flight
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(&seq);
            }
        });
    }

    /// One round now: every due lane head not in flight is attempted once (concurrently,
    /// bounded per endpoint) and the outcomes are committed, through the same launch and
    /// group-commit code the daemon runs. For `once`, tests and the admin API.
    pub async fn deliver_due(&self) -> Result<RoundReport, StoreError> {
        let batch = self
            .fetch_due(self.clock.now_ms(), MAX_IN_FLIGHT_TOTAL)
            .await?;
        let (tx, mut rx) = mpsc::channel(MAX_IN_FLIGHT_TOTAL);
        let running = Arc::new(Running::default());
        for item in batch.items {
            self.launch(item, &tx, &running);
        }
        drop(tx);
        let (report, error) = self.commit_outcomes(&mut rx, &running, &|| {}).await;
        match error {
            Some(e) => Err(e),
            None => Ok(report),
        }
    }

    /// The daemon's delivery loop: keep up to [`MAX_IN_FLIGHT_TOTAL`] attempts running and sleep
    /// until the next due time, a `wake`, or a committed batch. Outcomes go to a committer task
    /// that writes whatever has arrived in one transaction (group commit), so sending goes on
    /// while a commit's fsync is in progress.
    ///
    /// On cancel no new attempt starts; attempts in flight get `grace` to finish and be recorded.
    /// Anything unrecorded stays due in the store and is sent again (same event id) after a
    /// restart.
    pub async fn run(
        self: Arc<Self>,
        cancel: CancellationToken,
        wake: Arc<Notify>,
        grace: Duration,
    ) {
        let (tx, mut rx) = mpsc::channel::<AttemptOutcome>(MAX_IN_FLIGHT_TOTAL);
        let running = Arc::new(Running::default());
        let committed = Arc::new(Notify::new());
        let mut committer = {
            let (me, running, committed) = (self.clone(), running.clone(), committed.clone());
            tokio::spawn(async move {
                me.commit_outcomes(&mut rx, &running, &|| committed.notify_one())
                    .await;
            })
        };
        let mut next_due: Option<i64> = None;
        loop {
            let now = self.clock.now_ms();
            let free = MAX_IN_FLIGHT_TOTAL.saturating_sub(running.get());
            if free > 0 {
                match self.fetch_due(now, free).await {
                    Ok(batch) => {
                        next_due = batch.next_due_ms;
                        for item in batch.items {
                            self.launch(item, &tx, &running);
                        }
                    }
                    Err(e) => {
                        tracing::error!(error = %Escaped(&e), "cannot read due deliveries; retrying in 1s");
                        next_due = Some(now + 1000);
                    }
                }
            }
            // With every slot busy only a committed batch frees one: do not wake for due times.
            let sleep_for = match next_due {
                _ if running.get() >= MAX_IN_FLIGHT_TOTAL => Duration::from_secs(3600),
                Some(t) => {
                    Duration::from_millis(t.saturating_sub(self.clock.now_ms()).max(0) as u64)
                }
                None => Duration::from_secs(3600),
            };
            tokio::select! {
                _ = cancel.cancelled() => break,
                _ = committed.notified() => {}
                _ = wake.notified() => {}
                _ = tokio::time::sleep(sleep_for) => {}
            }
        }
        // Shutdown: no new attempts. The committer ends once every attempt in flight has sent
        // its outcome (all senders dropped) and it has recorded them, or at the grace deadline.
        drop(tx);
        if tokio::time::timeout(grace, &mut committer).await.is_err() {
            committer.abort();
            tracing::warn!(
                left = running.get(),
                "abandoned deliveries still in flight at shutdown; they stay queued and are sent again on restart"
            );
        }
    }
}

fn log_outcome(d: &Delivery, event: &Event) {
    let last = d.history.last();
    let status = last.and_then(|a| a.status);
    let error = last.and_then(|a| a.error.as_deref()).unwrap_or("");
    match d.state {
        DeliveryState::Delivered => tracing::debug!(
            endpoint = %d.endpoint, event = %event.id, kind = event.kind.status_word(),
            booking = %Escaped(&event.booking_id), status, attempts = d.attempts, "delivered"
        ),
        DeliveryState::Pending => tracing::warn!(
            endpoint = %d.endpoint, event = %event.id, booking = %Escaped(&event.booking_id), status, error,
            attempts = d.attempts, next = %super::rfc3339(d.next_ms), "delivery failed; will retry"
        ),
        DeliveryState::Dead => tracing::error!(
            endpoint = %d.endpoint, event = %event.id, booking = %Escaped(&event.booking_id), status, error,
            attempts = d.attempts, "delivery dead-lettered after its last attempt"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::Clock;
    use crate::config::Config;

    /// A receiver on 127.0.0.1:0 answering 200 to everything; returns its URL and the
    /// `webhook-id` of each request it got, in order.
    async fn receiver() -> (String, Arc<std::sync::Mutex<Vec<String>>>) {
        let got = Arc::new(std::sync::Mutex::new(Vec::new()));
        let ids = got.clone();
        let app = axum::Router::new().fallback(move |headers: axum::http::HeaderMap| {
            let ids = ids.clone();
            async move {
                let id = headers.get("webhook-id").and_then(|v| v.to_str().ok());
                ids.lock().unwrap().push(id.unwrap_or("").to_string());
                "ok"
            }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        (format!("http://{addr}/hook"), got)
    }

    #[tokio::test]
    async fn an_outcome_the_store_cannot_write_is_held_not_sent_again_in_a_loop() {
        let dir = tempfile::tempdir().unwrap();
        let (url, got) = receiver().await;
        let toml = format!(
            "[store]\npath = \"{}\"\n[admin]\nlisten = \"off\"\n[sources.hotel]\nurl = \"http://127.0.0.1:1/b\"\nevery = \"1h\"\n[endpoints.crm]\nurl = \"{url}\"\n",
            dir.path().join("state.redb").display()
        );
        let cfg = Config::from_toml_str(&toml, "test.toml").unwrap_or_else(|e| panic!("{e}"));
        let store = crate::store::Store::open(&cfg.store_path).unwrap();
        // b1 twice (its second event waits behind the first in its lane), then b2.
        let events = store.emit_new("hotel", &["b1", "b1", "b2"], &["crm"], 1);
        assert_eq!(events.len(), 3);
        // Finishing b1's first delivery promotes the second, whose row cannot be read.
        store.overwrite_delivery_row("crm", events[1].seq, b"\xffnot a row");
        let (tx, _) = tokio::sync::broadcast::channel(16);
        let mut dispatcher = Dispatcher::new(
            store.clone(),
            Clock::system(),
            &cfg.endpoints,
            tx,
            &crate::metrics::Metrics::new(),
        )
        .unwrap();
        assert_eq!(dispatcher.unrecordable_hold, UNRECORDABLE_HOLD);
        let hold = Duration::from_secs(1);
        dispatcher.unrecordable_hold = hold;

        let first = dispatcher.deliver_due().await;
        let mut first_two = got.lock().unwrap()[..2].to_vec();
        first_two.sort();
        let mut expected = vec![events[0].id.clone(), events[2].id.clone()];
        expected.sort();
        assert_eq!(first_two, expected, "b1's first event and b2's were sent");
        assert!(first.is_err(), "the failed write is reported: {first:?}");
        // b2's outcome was written all the same: one bad row does not hold back the batch.
        let b2 = store.deliveries_of(events[2].seq).unwrap();
        assert_eq!(b2[0].state, DeliveryState::Delivered);
        let b1 = store.deliveries_of(events[0].seq).unwrap();
        assert_eq!(
            b1[0].state,
            DeliveryState::Pending,
            "b1's outcome could not be written"
        );

        // The next rounds do not send b1 again at once: it is held in flight.
        for _ in 0..3 {
            let round = dispatcher.deliver_due().await.unwrap();
            assert_eq!(round.attempted, 0);
        }
        assert_eq!(got.lock().unwrap().len(), 2, "nothing was sent again");
        let crm = dispatcher.endpoints.get("crm").unwrap();
        assert!(
            crm.in_flight.lock().unwrap().contains(&events[0].seq),
            "held in flight until UNRECORDABLE_HOLD has passed"
        );

        // Once the hold has passed it is released and attempted again, once, with the same
        // event id; its outcome still cannot be written, so it is held again.
        let released = tokio::time::Instant::now() + hold * 10;
        while crm.in_flight.lock().unwrap().contains(&events[0].seq) {
            assert!(tokio::time::Instant::now() < released, "never released");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let again = dispatcher.deliver_due().await;
        assert!(again.is_err(), "still cannot be written: {again:?}");
        assert_eq!(
            got.lock().unwrap()[2..],
            [events[0].id.clone()],
            "sent again once after the hold, with the same event id"
        );
        assert!(
            crm.in_flight.lock().unwrap().contains(&events[0].seq),
            "held again"
        );
        let round = dispatcher.deliver_due().await.unwrap();
        assert_eq!(round.attempted, 0);
        assert_eq!(got.lock().unwrap().len(), 3);
    }
}
