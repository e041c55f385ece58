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
use crate::store::{
    Backfill, BackfillStart, Counts, EndpointCounts, ReplaySelector, Store, StoreError,
};
use crate::text::Escaped;

pub(crate) use progress::Progress;
pub use progress::{LastPoll, SourceHealth};

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

/// Why a backfill was not started.
#[derive(Debug, thiserror::Error)]
pub enum BackfillError {
    /// No endpoint of that name is configured.
    #[error("no endpoint named `{name}`; configured endpoints: {known}")]
    UnknownEndpoint {
        /// The name asked for.
        name: String,
        /// The configured names, comma-separated.
        known: String,
    },
    /// No source of that name is configured.
    #[error("no source named `{name}`; configured sources: {known}")]
    UnknownSource {
        /// The name asked for.
        name: String,
        /// The configured names, comma-separated.
        known: String,
    },
    /// A backfill of that endpoint is still running.
    #[error(
        "a backfill of endpoint `{endpoint}` is already running ({enqueued} events enqueued so far); wait for it to finish"
    )]
    Running {
        /// The endpoint.
        endpoint: String,
        /// Its progress.
        enqueued: u64,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Bookings enqueued per backfill transaction: what bounds a backfill's memory (one chunk's
/// documents) and how long it holds the write lock between polls and delivery commits.
pub const BACKFILL_CHUNK: usize = 500;

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
    /// Wakes the backfill loop when a backfill is started.
    backfill_wake: Arc<Notify>,
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
        self.metrics.pings(source, "coalesced", 1);
    }

    fn dropped(&self, source: &str, pings: usize) {
        self.metrics.pings(source, "dropped", pings as u64);
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
                backfill_wake: Arc::new(Notify::new()),
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

    /// Why the state file cannot be used, once an operation found it (see [`Store::fault`]):
    /// corrupt, or refused after an I/O error; the daemon then stops and readiness fails.
    pub fn state_file_fault(&self) -> Option<StoreError> {
        self.inner.store.fault()
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
        let took = started.elapsed();
        self.inner.poll_timers[i].observe(took);
        self.after_poll(&rt, &result, took);
        // A poll's pages, index and seen-set are freed by now: give them back to the kernel, so
        // the daemon idles at its working set, not at the last poll's peak.
        crate::memory::release_free_memory();
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

    fn after_poll(
        &self,
        rt: &SourceRuntime,
        result: &Result<PollReport, PollError>,
        took: Duration,
    ) {
        let source = rt.cfg.name.as_str();
        match result {
            Ok(r) => {
                let lost = self.inner.progress.polled(
                    source,
                    LastPoll {
                        at_ms: self.inner.clock.now_ms(),
                        full: r.full,
                        resumed: r.resumed,
                        baseline: r.baseline,
                        pages: r.pages,
                        bookings: r.bookings,
                        events: r.events_total,
                        duration_ms: u64::try_from(took.as_millis()).unwrap_or(u64::MAX),
                    },
                );
                if let Some(Some(h)) = self
                    .inner
                    .sources
                    .iter()
                    .position(|s| s.cfg.name == source)
                    .map(|i| &self.inner.refresh[i])
                {
                    h.polled.notify_waiters();
                }
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
                let error = rt.cfg.redactor.redact(&e.to_string());
                self.inner
                    .progress
                    .poll_failed(source, self.inner.clock.now_ms(), error);
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

    /// Starts a backfill of `endpoint`: one event per known booking of `source` (when none,
    /// of every source whose new or cancel events the endpoint subscribes to), for that
    /// endpoint only. Refused while one of the same endpoint runs. The
    /// chunks are enqueued by [`App::run`]'s backfill loop (or [`App::backfill_step`]).
    pub async fn backfill(
        &self,
        endpoint: &str,
        source: Option<&str>,
    ) -> Result<Backfill, BackfillError> {
        let config = &self.inner.config;
        if !config.endpoints.iter().any(|e| e.name == endpoint) {
            return Err(BackfillError::UnknownEndpoint {
                name: endpoint.to_string(),
                known: names(config.endpoints.iter().map(|e| e.name.as_str())),
            });
        }
        let sources: Vec<String> = match source {
            Some(s) if config.sources.iter().any(|c| c.name == s) => vec![s.to_string()],
            Some(s) => {
                return Err(BackfillError::UnknownSource {
                    name: s.to_string(),
                    known: names(config.sources.iter().map(|c| c.name.as_str())),
                });
            }
            // Every source whose new or cancel events the endpoint subscribes to.
            None => config
                .sources
                .iter()
                .filter(|c| {
                    [
                        crate::outbox::EventKind::New,
                        crate::outbox::EventKind::Cancel,
                    ]
                    .into_iter()
                    .any(|k| config.routes(&c.name, k).any(|e| e.name == endpoint))
                })
                .map(|c| c.name.clone())
                .collect(),
        };
        let (ep, now) = (endpoint.to_string(), self.inner.clock.now_ms());
        let started = self
            .inner
            .store
            .run(move |s| s.start_backfill(&ep, sources, now))
            .await?;
        match started {
            BackfillStart::Started(b) => {
                tracing::info!(endpoint, sources = ?b.sources, "backfill started");
                self.inner.backfill_wake.notify_one();
                Ok(b)
            }
            BackfillStart::Running(b) => Err(BackfillError::Running {
                endpoint: b.endpoint,
                enqueued: b.enqueued,
            }),
        }
    }

    /// The backfills in progress.
    pub async fn backfills(&self) -> Result<Vec<Backfill>, StoreError> {
        self.inner.store.run(|s| s.backfills()).await
    }

    /// Enqueues one chunk of every backfill in progress (at most `chunk` bookings each);
    /// returns how many are still in progress.
    pub async fn backfill_step(&self, chunk: usize) -> Result<usize, StoreError> {
        let mut running = 0;
        for b in self.backfills().await? {
            let now = self.inner.clock.now_ms();
            let ep = b.endpoint.clone();
            let after = self
                .inner
                .store
                .run(move |s| s.backfill_chunk(&ep, chunk, now))
                .await?;
            self.inner.wake.notify_one();
            match after {
                Some(a) if a.sources.is_empty() => {
                    tracing::info!(endpoint = %a.endpoint, events = a.enqueued, "backfill finished");
                }
                Some(_) => running += 1,
                None => {}
            }
        }
        Ok(running)
    }

    /// Runs backfill steps until none is in progress.
    pub async fn backfill_until_done(&self) -> Result<(), StoreError> {
        while self.backfill_step(BACKFILL_CHUNK).await? > 0 {}
        Ok(())
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

    /// Pending deliveries and dead letters of every configured endpoint, each counted up to
    /// `cap` (see [`Store::endpoint_counts`]).
    pub async fn endpoint_counts(&self, cap: u64) -> Result<Vec<EndpointCounts>, StoreError> {
        let names: Vec<String> = self
            .inner
            .config
            .endpoints
            .iter()
            .map(|e| e.name.clone())
            .collect();
        self.inner
            .store
            .run(move |s| s.endpoint_counts(&names, cap))
            .await
    }

    /// The newest dead letters (at most `limit`), each with its event (none if it was pruned).
    pub async fn dead_letters(
        &self,
        limit: usize,
    ) -> Result<Vec<(Delivery, Option<Event>)>, StoreError> {
        self.inner
            .store
            .run(move |s| {
                let dead = s.deliveries_in(DeliveryState::Dead, limit)?;
                let mut out = Vec::with_capacity(dead.len());
                for d in dead {
                    let event = s.event(d.seq)?;
                    out.push((d, event));
                }
                Ok(out)
            })
            .await
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
        {
            let (app, c) = (self.clone(), cancel.clone());
            tracker.spawn(async move { app.backfill_loop(c).await });
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

    /// Enqueues the chunks of every backfill in progress (also those a restart interrupted),
    /// one transaction at a time, then waits for the next to be started.
    async fn backfill_loop(&self, cancel: CancellationToken) {
        loop {
            let woken = self.inner.backfill_wake.notified();
            loop {
                if cancel.is_cancelled() {
                    return;
                }
                match self.backfill_step(BACKFILL_CHUNK).await {
                    Ok(0) => break,
                    Ok(_) => tokio::task::yield_now().await,
                    Err(e) => {
                        tracing::error!(error = %Escaped(&e), "backfill failed; it resumes at the next start");
                        break;
                    }
                }
            }
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = woken => {}
            }
        }
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
            self.inner
                .progress
                .scheduled(&rt.cfg.name, next.timestamp_millis());
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

/// Names for a message: `a, b, c`, or `none`.
fn names<'a>(it: impl Iterator<Item = &'a str>) -> String {
    let v: Vec<&str> = it.collect();
    if v.is_empty() {
        "none".into()
    } else {
        v.join(", ")
    }
}
