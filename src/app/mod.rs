//! The application: wires config, store, clock, sources and the delivery worker together, runs
//! the pipeline's tasks ([`App::run`]: one schedule loop per source, the delivery worker,
//! retention, and for sources with `[ping]` the ping intake and one refresh worker each), and offers everything the admin API, the daemon and the tests use as methods,
//! including the explicit hooks that let tests drive it without waiting (`poll_now`,
//! `deliver_due`, `clock`).

mod progress;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{Notify, broadcast};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::clock::Clock;
use crate::config::Config;
use crate::delivery::{Dispatcher, EndpointReport, Notice, RoundReport};
use crate::http::TokenCache;
use crate::metrics::{Metrics, Recorder};
use crate::outbox::{Delivery, DeliveryState, Event};
use crate::poll::refresh::RefreshReport;
use crate::poll::{PollError, PollReport, SourceRuntime, poll};
use crate::refresh::intake::{Intake, IntakeError, Writer};
use crate::refresh::{Handle, Observer, Worker};
use crate::store::{Counts, ReplaySelector, Store, StoreError};
use crate::text::Escaped;

pub(crate) use progress::Progress;
pub use progress::SourceHealth;

/// Why the application could not start.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// The state file could not be opened.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A client could not be built from the configuration.
    #[error("{0}")]
    Setup(String),
}

/// Deliveries pruned per transaction.
const PRUNE_BATCH: usize = 5000;

/// How long shutdown waits for deliveries in flight before abandoning them (they stay queued).
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

struct Inner {
    config: Config,
    store: Store,
    clock: Clock,
    sources: Vec<Arc<SourceRuntime>>,
    /// Per source (same order as `sources`): where its poll durations are recorded.
    poll_timers: Vec<Recorder>,
    metrics: Metrics,
    dispatcher: Arc<Dispatcher>,
    wake: Arc<Notify>,
    notices: broadcast::Sender<Notice>,
    progress: Progress,
    /// Per source (same order as `sources`): its refresh worker, when it has `[ping]`.
    refresh: Vec<Option<Handle>>,
    intake: Intake,
    /// What [`App::run`] starts for pings (taken by the first run).
    ping_tasks: std::sync::Mutex<Option<(Writer, Vec<Worker>)>>,
}

/// What refresh workers report, turned into logs, notices, metrics and a wake-up of delivery.
struct Reporter {
    notices: broadcast::Sender<Notice>,
    wake: Arc<Notify>,
    metrics: Metrics,
    progress: Progress,
    clock: Clock,
}

impl Observer for Reporter {
    fn committed(&self, report: &RefreshReport, received_ms: &[i64]) {
        let source = report.source.as_str();
        let now = self.clock.now_ms();
        let timer = self.metrics.ping_to_commit(source);
        for r in received_ms {
            timer.observe(Duration::from_millis(u64::try_from(now - r).unwrap_or(0)));
        }
        self.progress.refreshed(source, report.events.len());
        tracing::info!(
            source,
            bookings = report.bookings,
            events = report.events.len(),
            older = report.older,
            "ping refresh committed"
        );
        let watched = self.notices.receiver_count() > 0;
        for e in &report.events {
            tracing::info!(source, event = %e.id, kind = e.kind.status_word(), booking = %Escaped(&e.booking_id), "change detected (ping)");
            if watched {
                let _ = self.notices.send(Notice::Detected(Arc::new(e.clone())));
            }
        }
        if !report.events.is_empty() {
            self.wake.notify_one();
        }
    }

    fn coalesced(&self, source: &str) {
        self.metrics.ping(source, "coalesced");
    }

    fn dropped(&self, source: &str, pings: usize) {
        for _ in 0..pings {
            self.metrics.ping(source, "dropped");
        }
    }
}

/// A built pollhook instance. Cheap to clone.
#[derive(Clone)]
pub struct App {
    inner: Arc<Inner>,
}

impl App {
    /// Opens the store and prepares every source and endpoint. Starts nothing.
    pub fn build(config: Config) -> Result<App, AppError> {
        let store = Self::open_store(&config)?;
        Self::build_with_store(config, store)
    }

    /// Opens (creating its directory if needed) the state file named by the configuration.
    pub fn open_store(config: &Config) -> Result<Store, AppError> {
        if let Some(dir) = config
            .store_path
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            && !dir.exists()
        {
            std::fs::create_dir_all(dir).map_err(|e| {
                AppError::Setup(format!(
                    "store.path: cannot create directory {}: {e}",
                    dir.display()
                ))
            })?;
        }
        Ok(Store::open_with(
            &config.store_path,
            crate::store::StoreOptions {
                cache_size: config.cache_size,
            },
        )?)
    }

    /// Prepares every source and endpoint over an already open store (used on reload, where the
    /// store stays open while the configuration changes).
    pub fn build_with_store(config: Config, store: Store) -> Result<App, AppError> {
        let clock = Clock::system();
        let (notices, _) = broadcast::channel(1024);
        let tokens: Arc<dyn TokenCache> = Arc::new(store.clone());
        let metrics = Metrics::new();
        let poll_timers = config
            .sources
            .iter()
            .map(|s| metrics.poll_duration(&s.name))
            .collect();
        let mut sources = Vec::new();
        for s in &config.sources {
            sources.push(Arc::new(
                SourceRuntime::new(&config, s, tokens.clone(), clock.clone())
                    .map_err(AppError::Setup)?,
            ));
        }
        let dispatcher = Arc::new(
            Dispatcher::new(
                store.clone(),
                clock.clone(),
                &config.endpoints,
                notices.clone(),
                &metrics,
            )
            .map_err(AppError::Setup)?,
        );
        let progress = Progress::with_sources(
            config.sources.iter().map(|s| s.name.as_str()),
            config
                .sources
                .iter()
                .filter(|s| s.ping.is_some())
                .map(|s| s.name.as_str()),
        );
        let wake = Arc::new(Notify::new());
        let reporter: Arc<dyn Observer> = Arc::new(Reporter {
            notices: notices.clone(),
            wake: wake.clone(),
            metrics: metrics.clone(),
            progress: progress.clone(),
            clock: clock.clone(),
        });
        let mut refresh = Vec::with_capacity(sources.len());
        let mut workers = Vec::new();
        let mut channels = Vec::with_capacity(sources.len());
        for rt in &sources {
            if rt.cfg.ping.is_some() {
                let (w, h) = crate::refresh::worker(
                    rt.clone(),
                    store.clone(),
                    clock.clone(),
                    reporter.clone(),
                );
                channels.push((rt.cfg.name.clone(), h.tx.clone(), h.backlog.clone()));
                workers.push(w);
                refresh.push(Some(h));
            } else {
                // Never used: the ingress only routes to sources with `[ping]`.
                let (tx, _) = tokio::sync::mpsc::unbounded_channel();
                channels.push((rt.cfg.name.clone(), tx, Default::default()));
                refresh.push(None);
            }
        }
        let (intake, writer) =
            crate::refresh::intake::intake(store.clone(), clock.clone(), channels);
        Ok(App {
            inner: Arc::new(Inner {
                config,
                store,
                clock,
                sources,
                poll_timers,
                metrics,
                dispatcher,
                wake,
                notices,
                progress,
                refresh,
                intake,
                ping_tasks: std::sync::Mutex::new(Some((writer, workers))),
            }),
        })
    }

    /// The configuration in force.
    pub fn config(&self) -> &Config {
        &self.inner.config
    }

    /// The state store (tests and inspection).
    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    /// The corruption found in the state file, once an operation found it (see
    /// [`Store::corruption`]); the daemon then stops and readiness fails.
    pub fn state_file_corruption(&self) -> Option<StoreError> {
        self.inner.store.corruption()
    }

    /// The clock every part of this instance reads. Tests advance it instead of sleeping.
    pub fn clock(&self) -> &Clock {
        &self.inner.clock
    }

    /// Detected changes and delivery attempts, as they happen.
    pub fn subscribe(&self) -> broadcast::Receiver<Notice> {
        self.inner.notices.subscribe()
    }

    /// The metrics recorded as things happen (histograms, build info), for the exposition.
    pub fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }

    /// Polls one source now (waiting for a poll of it already running) and commits the result.
    /// Its duration, committed or failed, goes to the source's poll-duration histogram.
    pub async fn poll_now(&self, source: &str) -> Result<PollReport, PollError> {
        let i = self
            .inner
            .sources
            .iter()
            .position(|s| s.cfg.name == source)
            .ok_or_else(|| PollError::UnknownSource(source.to_string()))?;
        let rt = self.inner.sources[i].clone();
        let started = Instant::now();
        let result = poll(&rt, &self.inner.store, &self.inner.clock).await;
        self.inner.poll_timers[i].observe(started.elapsed());
        self.after_poll(&rt.cfg.name, &result);
        result
    }

    /// Polls every source once, one after another.
    pub async fn poll_all(&self) -> Vec<(String, Result<PollReport, PollError>)> {
        let mut out = Vec::new();
        for s in &self.inner.sources {
            out.push((s.cfg.name.clone(), self.poll_now(&s.cfg.name).await));
        }
        out
    }

    /// Records pings for the source at index `source` durably (a group commit shared with
    /// other requests) and hands them to its refresh worker. What the ingress calls before
    /// answering 2xx.
    pub async fn record_pings(&self, source: usize, ids: Vec<String>) -> Result<(), IntakeError> {
        let n = ids.len();
        self.inner.intake.record(source, ids).await?;
        if let Some(s) = self.inner.sources.get(source) {
            self.inner.progress.pinged(&s.cfg.name, n);
        }
        Ok(())
    }

    /// Pings of the source at index `source` recorded and not yet answered by a lookup.
    pub fn ping_backlog(&self, source: usize) -> usize {
        self.inner
            .refresh
            .get(source)
            .and_then(|h| h.as_ref())
            .map_or(0, |h| h.backlog.load(std::sync::atomic::Ordering::SeqCst))
    }

    /// Requests of `source` waiting for their turn behind the one in flight (a poll's page or
    /// a ping's lookup); tests use it to see a lookup queued behind a page.
    pub fn requests_waiting(&self, source: &str) -> usize {
        self.inner
            .sources
            .iter()
            .find(|s| s.cfg.name == source)
            .map_or(0, |s| s.client.requests_waiting())
    }

    fn after_poll(&self, source: &str, result: &Result<PollReport, PollError>) {
        match result {
            Ok(r) => {
                if let Some(Some(h)) = self
                    .inner
                    .sources
                    .iter()
                    .position(|s| s.cfg.name == source)
                    .map(|i| &self.inner.refresh[i])
                {
                    h.polled.notify_waiters();
                }
                let lost =
                    self.inner
                        .progress
                        .polled(source, self.inner.clock.now_ms(), r.events.len());
                if lost {
                    tracing::warn!(
                        source,
                        polls = crate::app::progress::PINGS_LOST_AFTER,
                        "polls keep finding changes but no ping came since: pings are being lost (check the booking system's notify URL and the ingress listener); polling still catches every change"
                    );
                }
                let mode = if r.full { "full" } else { "incremental" };
                if r.baseline {
                    tracing::info!(
                        source,
                        mode = %mode,
                        bookings = r.bookings,
                        pages = r.pages,
                        "baseline recorded; no events for what already existed"
                    );
                } else {
                    tracing::info!(
                        source,
                        mode = %mode,
                        bookings = r.bookings,
                        pages = r.pages,
                        events = r.events.len(),
                        "poll committed"
                    );
                }
                let watched = self.inner.notices.receiver_count() > 0;
                for e in &r.events {
                    tracing::info!(source, event = %e.id, kind = e.kind.status_word(), booking = %Escaped(&e.booking_id), "change detected");
                    if watched {
                        let _ = self
                            .inner
                            .notices
                            .send(Notice::Detected(Arc::new(e.clone())));
                    }
                }
                if !r.events.is_empty() {
                    self.inner.wake.notify_one();
                }
            }
            Err(e) => {
                self.inner.progress.poll_failed(source);
                tracing::warn!(source, error = %Escaped(e), "poll failed; nothing committed, will retry at the next tick");
            }
        }
    }

    /// One delivery round: attempts every due lane head once and commits the outcomes, through
    /// the same code the daemon's worker runs.
    pub async fn deliver_due(&self) -> Result<RoundReport, StoreError> {
        self.inner.dispatcher.deliver_due().await
    }

    /// Moves this instance's clock forward to `now_ms` (never back) and runs
    /// [`App::deliver_due`], so tests can make retries due without waiting for them.
    pub async fn deliver_due_at(&self, now_ms: i64) -> Result<RoundReport, StoreError> {
        self.inner.clock.advance_to(now_ms);
        self.deliver_due().await
    }

    /// Runs delivery rounds until a round delivers nothing new (for `once`).
    pub async fn deliver_until_idle(&self) -> Result<RoundReport, StoreError> {
        let mut total = RoundReport::default();
        loop {
            let r = self.deliver_due().await?;
            total.add(r);
            if r.delivered == 0 {
                return Ok(total);
            }
        }
    }

    /// Re-enables an endpoint suspended after a 410 (what `POST /endpoints/NAME/enable` does).
    /// Returns false for an unknown endpoint.
    pub async fn enable_endpoint(&self, name: &str) -> Result<bool, StoreError> {
        let found = self.inner.dispatcher.enable(name).await?;
        if found {
            self.inner.wake.notify_one();
        }
        Ok(found)
    }

    /// Puts finished deliveries back in their lanes (event ids kept); returns how many.
    pub async fn replay(&self, selector: ReplaySelector) -> Result<usize, StoreError> {
        let now = self.inner.clock.now_ms();
        let n = self
            .inner
            .store
            .run(move |s| s.replay(&selector, now))
            .await?;
        if n > 0 {
            self.inner.wake.notify_one();
        }
        Ok(n)
    }

    /// Every source's poll health since start.
    pub fn source_health(&self) -> BTreeMap<String, SourceHealth> {
        self.inner.progress.snapshot()
    }

    /// Every endpoint's state.
    pub fn endpoint_report(&self) -> Vec<EndpointReport> {
        self.inner.dispatcher.endpoint_report()
    }

    /// Row counts of the store (also a check that it answers).
    pub async fn counts(&self) -> Result<Counts, StoreError> {
        self.inner.store.run(|s| s.counts()).await
    }

    /// Per endpoint, how long (this instance's clock) the pending delivery at the front of its
    /// queue has waited since it was detected: see [`Store::oldest_pending`]. Every configured
    /// endpoint is listed (zero with nothing pending), and so is any endpoint no longer
    /// configured whose deliveries still wait in the store.
    pub async fn oldest_pending_ages(&self) -> Result<BTreeMap<String, Duration>, StoreError> {
        let oldest = self.inner.store.run(|s| s.oldest_pending()).await?;
        let now = self.inner.clock.now_ms();
        let mut ages: BTreeMap<String, Duration> = self
            .inner
            .config
            .endpoints
            .iter()
            .map(|e| (e.name.clone(), Duration::ZERO))
            .collect();
        for (endpoint, created_ms) in oldest {
            let age = u64::try_from(now.saturating_sub(created_ms)).unwrap_or(0);
            ages.insert(endpoint, Duration::from_millis(age));
        }
        Ok(ages)
    }

    /// The newest events, newest first.
    pub async fn recent_events(&self, limit: usize) -> Result<Vec<Event>, StoreError> {
        self.inner.store.run(move |s| s.recent_events(limit)).await
    }

    /// Deliveries in one state, newest first.
    pub async fn deliveries(
        &self,
        state: DeliveryState,
        limit: usize,
    ) -> Result<Vec<Delivery>, StoreError> {
        self.inner
            .store
            .run(move |s| s.deliveries_in(state, limit))
            .await
    }

    /// Deletes delivered history older than `store.retention` (dead letters and pending
    /// deliveries are kept), in batches so no transaction grows large. Returns rows removed.
    pub async fn prune_now(&self) -> Result<usize, StoreError> {
        let before = self.inner.clock.now_ms() - self.inner.config.retention.as_millis() as i64;
        let mut total = 0;
        loop {
            let n = self
                .inner
                .store
                .run(move |s| s.prune(before, PRUNE_BATCH))
                .await?;
            total += n;
            if n < PRUNE_BATCH {
                return Ok(total);
            }
        }
    }

    /// Runs the pipeline until `cancel`: one schedule loop per source, the delivery worker and
    /// retention. On cancel, polls in progress are dropped (they commit all or nothing) and
    /// deliveries in flight get [`SHUTDOWN_GRACE`] to finish.
    pub async fn run(&self, cancel: CancellationToken) {
        let tracker = TaskTracker::new();
        for rt in &self.inner.sources {
            let (app, c, rt) = (self.clone(), cancel.clone(), rt.clone());
            tracker.spawn(async move { app.schedule_loop(rt, c).await });
        }
        let d = self.inner.dispatcher.clone();
        tracker.spawn(d.run(cancel.clone(), self.inner.wake.clone(), SHUTDOWN_GRACE));
        {
            let (app, c) = (self.clone(), cancel.clone());
            tracker.spawn(async move { app.retention_loop(c).await });
        }
        let ping_tasks = self
            .inner
            .ping_tasks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some((writer, workers)) = ping_tasks {
            tracker.spawn(writer.run(cancel.clone()));
            for w in workers {
                tracker.spawn(w.run(cancel.clone()));
            }
        }
        tracing::info!(
            sources = self.inner.sources.len(),
            endpoints = self.inner.config.endpoints.len(),
            store = %self.inner.config.store_path.display(),
            "pollhook running"
        );
        cancel.cancelled().await;
        tracing::info!("stopping: finishing deliveries in flight");
        tracker.close();
        tracker.wait().await;
        tracing::info!("stopped");
    }

    async fn retention_loop(&self, cancel: CancellationToken) {
        loop {
            match self.prune_now().await {
                Ok(0) => {}
                Ok(n) => {
                    tracing::info!(removed = n, "pruned delivered history past store.retention")
                }
                Err(e) => tracing::error!(error = %Escaped(&e), "pruning delivered history failed"),
            }
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(Duration::from_secs(3600)) => {}
            }
        }
    }

    async fn schedule_loop(&self, rt: Arc<SourceRuntime>, cancel: CancellationToken) {
        tracing::info!(source = %rt.cfg.name, schedule = %rt.cfg.schedule.describe(), "source scheduled");
        let mut last_start = None;
        loop {
            let now = self.inner.clock.now();
            let next = rt.cfg.schedule.next_after(now, last_start);
            let wait = (next - now).to_std().unwrap_or(Duration::ZERO);
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(wait) => {}
            }
            last_start = Some(self.inner.clock.now());
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = self.poll_now(&rt.cfg.name) => {}
            }
        }
    }
}
