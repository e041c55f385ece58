//! The application: wires config, store, clock, sources and the delivery worker together, runs
//! the pipeline's tasks ([`App::run`]: one schedule loop per source, the delivery worker,
//! retention), and offers everything the admin API, the daemon and the tests use as methods,
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
use crate::poll::{PollError, PollReport, SourceRuntime, poll};
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
        let progress = Progress::with_sources(config.sources.iter().map(|s| s.name.as_str()));
        Ok(App {
            inner: Arc::new(Inner {
                config,
                store,
                clock,
                sources,
                poll_timers,
                metrics,
                dispatcher,
                wake: Arc::new(Notify::new()),
                notices,
                progress,
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

    fn after_poll(&self, source: &str, result: &Result<PollReport, PollError>) {
        match result {
            Ok(r) => {
                self.inner
                    .progress
                    .polled(source, self.inner.clock.now_ms(), r.events.len());
                if r.baseline {
                    tracing::info!(
                        source,
                        bookings = r.bookings,
                        pages = r.pages,
                        "baseline recorded; no events for what already existed"
                    );
                } else {
                    tracing::info!(
                        source,
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
