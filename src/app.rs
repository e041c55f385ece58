//! The application: wires config, store, sources and the delivery worker together, runs the
//! schedule loops and the admin listener, and exposes the explicit hooks tests and `once` use
//! (`poll_now`, `deliver_due`) so nothing has to wait on a clock.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use tokio::sync::{Notify, broadcast};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::Config;
use crate::delivery::{Dispatcher, Notice, RoundReport};
use crate::poll::{PollError, PollReport, SourceRuntime, poll};
use crate::store::{Store, StoreError};

/// Why the application could not start.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// The state file could not be opened.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A client could not be built from the configuration.
    #[error("{0}")]
    Setup(String),
    /// The admin listener could not bind.
    #[error("admin.listen: cannot listen on {addr}: {reason}")]
    Admin {
        /// The address.
        addr: std::net::SocketAddr,
        /// The OS error.
        reason: String,
    },
}

/// Deliveries pruned per transaction.
const PRUNE_BATCH: usize = 5000;

/// How long shutdown waits for deliveries in flight before abandoning them (they stay queued).
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

pub(crate) struct Inner {
    pub(crate) config: Config,
    pub(crate) store: Store,
    pub(crate) sources: Vec<Arc<SourceRuntime>>,
    pub(crate) dispatcher: Arc<Dispatcher>,
    pub(crate) wake: Arc<Notify>,
    pub(crate) notices: broadcast::Sender<Notice>,
    pub(crate) progress: crate::admin::Progress,
}

/// A built pollhook instance. Cheap to clone.
#[derive(Clone)]
pub struct App {
    pub(crate) inner: Arc<Inner>,
}

fn now_ms() -> i64 {
    Utc::now().timestamp_millis()
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
        Ok(Store::open(&config.store_path)?)
    }

    /// Prepares every source and endpoint over an already open store (used on reload, where the
    /// store stays open while the configuration changes).
    pub fn build_with_store(config: Config, store: Store) -> Result<App, AppError> {
        let (notices, _) = broadcast::channel(1024);
        let mut sources = Vec::new();
        for s in &config.sources {
            sources.push(Arc::new(
                SourceRuntime::new(&config, s, store.clone()).map_err(AppError::Setup)?,
            ));
        }
        let dispatcher = Arc::new(
            Dispatcher::new(store.clone(), &config.endpoints, notices.clone())
                .map_err(AppError::Setup)?,
        );
        Ok(App {
            inner: Arc::new(Inner {
                config,
                store,
                sources,
                dispatcher,
                wake: Arc::new(Notify::new()),
                notices,
                progress: crate::admin::Progress::default(),
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

    /// Detected changes and delivery attempts, as they happen.
    pub fn subscribe(&self) -> broadcast::Receiver<Notice> {
        self.inner.notices.subscribe()
    }

    /// Polls one source now (waiting for a poll of it already running) and commits the result.
    pub async fn poll_now(&self, source: &str) -> Result<PollReport, PollError> {
        let rt = self
            .inner
            .sources
            .iter()
            .find(|s| s.cfg.name == source)
            .ok_or_else(|| PollError::UnknownSource(source.to_string()))?
            .clone();
        let result = poll(&rt, &self.inner.store, now_ms()).await;
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
                self.inner.progress.polled(source, now_ms(), r.events.len());
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
                    tracing::info!(source, event = %e.id, kind = e.kind.status_word(), booking = %e.booking_id, "change detected");
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
                tracing::warn!(source, error = %e, "poll failed; nothing committed, will retry at the next tick");
            }
        }
    }

    /// One delivery round: attempts every due lane head once and commits the outcomes together.
    pub async fn deliver_due(&self) -> Result<RoundReport, StoreError> {
        self.deliver_due_at(now_ms()).await
    }

    /// Like [`App::deliver_due`] with an explicit clock, so tests can make retries due without
    /// waiting for them.
    pub async fn deliver_due_at(&self, now_ms: i64) -> Result<RoundReport, StoreError> {
        self.inner.dispatcher.deliver_due(now_ms).await
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

    /// Runs delivery rounds until a round delivers nothing new (for `once`).
    pub async fn deliver_until_idle(&self) -> Result<RoundReport, StoreError> {
        let mut total = RoundReport::default();
        loop {
            let r = self.deliver_due().await?;
            total.attempted += r.attempted;
            total.delivered += r.delivered;
            total.retrying += r.retrying;
            total.dead += r.dead;
            if r.delivered == 0 {
                return Ok(total);
            }
        }
    }

    /// Runs the daemon until `cancel`: one schedule loop per source, the delivery worker and the
    /// admin listener. On cancel, polls in progress are dropped (they commit all or nothing) and
    /// deliveries in flight get [`SHUTDOWN_GRACE`] to finish.
    pub async fn run(&self, cancel: CancellationToken) -> Result<(), AppError> {
        let tracker = TaskTracker::new();
        if let Some(addr) = self.inner.config.admin_listen {
            let listener =
                tokio::net::TcpListener::bind(addr)
                    .await
                    .map_err(|e| AppError::Admin {
                        addr,
                        reason: e.to_string(),
                    })?;
            let app = self.clone();
            let c = cancel.clone();
            tracker.spawn(async move { crate::admin::serve(listener, app, c).await });
            tracing::info!(%addr, "admin listener up");
        }
        for rt in &self.inner.sources {
            let app = self.clone();
            let c = cancel.clone();
            let rt = rt.clone();
            tracker.spawn(async move { app.schedule_loop(rt, c).await });
        }
        let d = self.inner.dispatcher.clone();
        tracker.spawn(d.run(cancel.clone(), self.inner.wake.clone(), SHUTDOWN_GRACE));
        tracker.spawn(crate::admin::watchdog(self.clone(), cancel.clone()));
        {
            let app = self.clone();
            let c = cancel.clone();
            tracker.spawn(async move { app.retention_loop(c).await });
        }
        let _ = sd_notify::notify(&[sd_notify::NotifyState::Ready]);
        tracing::info!(
            sources = self.inner.sources.len(),
            endpoints = self.inner.config.endpoints.len(),
            store = %self.inner.config.store_path.display(),
            "pollhook running"
        );
        cancel.cancelled().await;
        let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
        tracing::info!("stopping: finishing deliveries in flight");
        tracker.close();
        tracker.wait().await;
        tracing::info!("stopped");
        Ok(())
    }

    /// Deletes delivered history older than `store.retention` (dead letters and pending
    /// deliveries are kept), in batches so no transaction grows large. Returns rows removed.
    pub async fn prune_now(&self) -> Result<usize, StoreError> {
        let before = now_ms() - self.inner.config.retention.as_millis() as i64;
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

    async fn retention_loop(&self, cancel: CancellationToken) {
        loop {
            match self.prune_now().await {
                Ok(0) => {}
                Ok(n) => {
                    tracing::info!(removed = n, "pruned delivered history past store.retention")
                }
                Err(e) => tracing::error!(error = %e, "pruning delivered history failed"),
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
            let now = Utc::now();
            let next = rt.cfg.schedule.next_after(now, last_start);
            let wait = (next - now).to_std().unwrap_or(Duration::ZERO);
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(wait) => {}
            }
            last_start = Some(Utc::now());
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = self.poll_now(&rt.cfg.name) => {}
            }
        }
    }
}
