//! The daemon: the process around the pipeline. It owns the signals (SIGTERM and SIGINT stop,
//! SIGHUP reloads), reloading, every systemd notification (`READY=1`, `RELOADING=1` with
//! `MONOTONIC_USEC=`, `STOPPING=1`, `STATUS=`), the watchdog, and the admin listener's lifetime.
//!
//! A reload validates the new file first; a bad one is refused and the running configuration
//! kept. A good one drains the running round (polls dropped uncommitted, deliveries in flight
//! given their grace) and starts a new one over the same open store. `STOPPING=1` is sent only
//! when the process is really stopping, and the watchdog keeps pinging through every drain.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use sd_notify::NotifyState;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::app::{App, AppError};
use crate::config::{Config, ConfigError, SelectError, Selection};
use crate::delivery::PreflightError;
use crate::store::{Store, StoreError};

/// Why the daemon could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// The state file or a client could not be set up.
    #[error(transparent)]
    App(#[from] AppError),
    /// The admin listener could not bind (typically: a second instance on the same host).
    #[error(
        "admin.listen: cannot listen on {addr}: {reason}. If another pollhook instance on this host uses it, give this one its own port: [admin] listen = \"{next}\" (or POLLHOOK_ADMIN__LISTEN={next}), or turn the listener off with listen = \"off\"; `pollhook events` and the other operator commands then take --admin http://{next}",
        next = next_port(addr)
    )]
    Admin {
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        reason: String,
    },
    /// The ingress listener could not bind.
    #[error(
        "ingress.listen: cannot listen on {addr}: {reason} (is another pollhook instance using it? give each instance its own ingress.listen port)"
    )]
    Ingress {
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        reason: String,
    },
    /// Signal handlers could not be installed.
    #[error("cannot listen for signals: {0}")]
    Signals(std::io::Error),
    /// The pipeline task failed.
    #[error("the pipeline task failed: {0}")]
    Task(String),
    /// `--sources` / `--shard` / `shard` cannot be applied.
    #[error(transparent)]
    Select(#[from] SelectError),
    /// The start-up check of the endpoints failed (a NATS stream that does not exist).
    #[error(transparent)]
    Preflight(#[from] PreflightError),
    /// The state file was found unusable while running (corrupt, or an I/O error the engine
    /// will not go on after); the daemon stopped.
    #[error("stopped: {0}")]
    Fault(StoreError),
}

/// The address one port above `addr`: what a second instance could listen on.
fn next_port(addr: &SocketAddr) -> SocketAddr {
    let mut next = *addr;
    next.set_port(addr.port().checked_add(1).unwrap_or(addr.port() - 1));
    next
}

/// The service manager's notification socket (a no-op when not under systemd).
fn notify(states: &[NotifyState]) {
    if let Err(e) = sd_notify::notify(states) {
        tracing::warn!(error = %e, "cannot notify the service manager");
    }
}

fn notify_reloading() {
    match NotifyState::monotonic_usec_now() {
        Ok(usec) => notify(&[NotifyState::Reloading, usec]),
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the monotonic clock for RELOADING=1");
            notify(&[NotifyState::Reloading]);
        }
    }
}

fn status_line(cfg: &Config) -> String {
    format!(
        "polling {} source(s), delivering to {} endpoint(s)",
        cfg.sources.len(),
        cfg.endpoints.len()
    )
}

/// The signals the daemon reacts to.
enum Signals {
    Os {
        term: tokio::signal::unix::Signal,
        int: tokio::signal::unix::Signal,
        hup: tokio::signal::unix::Signal,
    },
    /// No signal ever arrives (unit tests, which must not take over the test process's signals).
    #[cfg(test)]
    Never,
}

impl Signals {
    fn install() -> Result<Signals, DaemonError> {
        use tokio::signal::unix::{SignalKind, signal};
        let one = |k| signal(k).map_err(DaemonError::Signals);
        Ok(Signals::Os {
            term: one(SignalKind::terminate())?,
            int: one(SignalKind::interrupt())?,
            hup: one(SignalKind::hangup())?,
        })
    }

    /// The next signal.
    async fn next(&mut self) -> Signal {
        match self {
            Signals::Os { term, int, hup } => tokio::select! {
                _ = term.recv() => {
                    tracing::info!("SIGTERM received");
                    Signal::Stop
                }
                _ = int.recv() => {
                    tracing::info!("SIGINT received");
                    Signal::Stop
                }
                _ = hup.recv() => Signal::Reload,
            },
            #[cfg(test)]
            Signals::Never => std::future::pending().await,
        }
    }

    /// The next SIGTERM or SIGINT (a SIGHUP meanwhile is ignored: a reload is in progress).
    async fn stop(&mut self) {
        while self.next().await != Signal::Stop {
            tracing::info!("SIGHUP received while reloading; ignored");
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Signal {
    Stop,
    Reload,
}

/// One round: a built app, its pipeline and its admin and ingress listeners, until `round` is
/// cancelled.
async fn start_round(app: App, round: CancellationToken) -> Result<JoinHandle<()>, DaemonError> {
    let listener = match app.config().admin_listen {
        Some(addr) => Some((
            tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|e| DaemonError::Admin {
                    addr,
                    reason: e.to_string(),
                })?,
            addr,
        )),
        None => None,
    };
    let ingress = match app.config().ingress.as_ref().map(|i| i.listen) {
        Some(addr) => Some((
            tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|e| DaemonError::Ingress {
                    addr,
                    reason: e.to_string(),
                })?,
            addr,
        )),
        None => None,
    };
    Ok(tokio::spawn(async move {
        let admin = listener.map(|(l, configured)| {
            // The address really bound (its port too when `admin.listen` asks for port 0).
            let addr = l.local_addr().unwrap_or(configured);
            tracing::info!(%addr, "admin listener up");
            tokio::spawn(crate::admin::serve(l, app.clone(), round.clone()))
        });
        let ingress = ingress.map(|(l, addr)| {
            // The bound address (the configured port may be 0).
            let addr = l.local_addr().unwrap_or(addr);
            tracing::info!(%addr, "ingress listener up (pings)");
            tokio::spawn(crate::ingress::serve(l, app.clone(), round.clone()))
        });
        app.run(round).await;
        if let Some(a) = admin {
            let _ = a.await;
        }
        if let Some(i) = ingress {
            let _ = i.await;
        }
    }))
}

/// Runs the daemon with the configuration loaded from `path` until SIGTERM or SIGINT, or until
/// the state file is found unusable (then it stops and returns [`DaemonError::Fault`]). It
/// polls the sources `selection` keeps (re-applied on every reload).
pub async fn run(path: &Path, cfg: Config, selection: &Selection) -> Result<(), DaemonError> {
    let cfg = cfg.select(selection)?;
    log_selection(&cfg, selection);
    preflight(&cfg).await?;
    let store = App::open_store(&cfg)?;
    let signals = Signals::install()?;
    run_with(path, cfg, selection, store, signals).await
}

async fn run_with(
    path: &Path,
    mut cfg: Config,
    selection: &Selection,
    store: Store,
    mut signals: Signals,
) -> Result<(), DaemonError> {
    let stop = CancellationToken::new();
    // The watchdog has its own token: it goes on pinging until the last drain is over.
    let watchdog_stop = CancellationToken::new();
    let watchdog = tokio::spawn(watchdog(store.clone(), watchdog_stop.clone()));
    let result = rounds(path, &mut cfg, selection, &store, &mut signals, &stop).await;
    stop.cancel();
    watchdog_stop.cancel();
    let _ = watchdog.await;
    result
}

/// Says which sources this instance polls when it does not poll them all.
fn log_selection(cfg: &Config, selection: &Selection) {
    if !selection.is_all() || cfg.shard.is_some() {
        let names: Vec<&str> = cfg.sources.iter().map(|s| s.name.as_str()).collect();
        tracing::info!(
            sources = %names.join(", "),
            shard = %cfg.shard.map(|s| s.to_string()).unwrap_or_else(|| "none".into()),
            patterns = %selection.patterns.join(","),
            "this instance polls only the selected sources"
        );
    }
}

/// The start-up check of the endpoints (NATS streams must exist); warnings are logged.
async fn preflight(cfg: &Config) -> Result<(), PreflightError> {
    for w in crate::delivery::preflight(&cfg.endpoints).await? {
        tracing::warn!("{w}");
    }
    Ok(())
}

async fn rounds(
    path: &Path,
    cfg: &mut Config,
    selection: &Selection,
    store: &Store,
    signals: &mut Signals,
    stop: &CancellationToken,
) -> Result<(), DaemonError> {
    loop {
        if let Some(e) = store.fault() {
            return Err(DaemonError::Fault(e));
        }
        let app = match App::build_with_store(cfg.clone(), store.clone()) {
            Ok(app) => app,
            Err(e) => return Err(store.fault().map_or(e.into(), DaemonError::Fault)),
        };
        let round = stop.child_token();
        let mut runner = start_round(app, round.clone()).await?;
        notify(&[NotifyState::Ready, NotifyState::Status(&status_line(cfg))]);
        let next = loop {
            tokio::select! {
                res = &mut runner => {
                    notify(&[NotifyState::Stopping]);
                    if let Some(e) = store.fault() {
                        return Err(DaemonError::Fault(e));
                    }
                    return res.map_err(|e| DaemonError::Task(e.to_string()));
                }
                e = store.faulted() => {
                    return stop_faulted(e, stop, runner).await;
                }
                sig = signals.next() => {
                    if sig == Signal::Stop {
                        return stop_process(stop, runner).await;
                    }
                    notify_reloading();
                    tracing::info!(config = %path.display(), "SIGHUP: reloading configuration");
                    match check_reload(path, cfg, selection).await {
                        Ok(new) => break new,
                        Err(why) => {
                            tracing::error!("reload rejected, keeping the running configuration: {why}");
                            notify(&[
                                NotifyState::Ready,
                                NotifyState::Status(&format!("reload rejected; {}", status_line(cfg))),
                            ]);
                        }
                    }
                }
            }
        };
        // Drain the running round. A stop during the drain stops the process: no new round.
        round.cancel();
        tokio::select! {
            res = &mut runner => {
                if let Err(e) = res {
                    tracing::error!(error = %e, "pipeline task failed during reload");
                }
            }
            _ = signals.stop() => {
                return stop_process(stop, runner).await;
            }
            e = store.faulted() => {
                return stop_faulted(e, stop, runner).await;
            }
        }
        *cfg = next;
        tracing::info!("configuration reloaded");
    }
}

/// Why a reload is refused.
#[derive(Debug, thiserror::Error)]
enum ReloadRefused {
    #[error(transparent)]
    Invalid(#[from] ConfigError),
    #[error("store.path changed; that needs a restart")]
    StorePath,
    #[error(transparent)]
    Select(#[from] SelectError),
    #[error(transparent)]
    Preflight(#[from] PreflightError),
}

async fn check_reload(
    path: &Path,
    running: &Config,
    selection: &Selection,
) -> Result<Config, ReloadRefused> {
    let new = Config::load(path)?.select(selection)?;
    if new.store_path != running.store_path {
        return Err(ReloadRefused::StorePath);
    }
    new.log_warnings();
    preflight(&new).await?;
    log_selection(&new, selection);
    Ok(new)
}

/// The process is stopping: tell systemd, stop everything, and wait for the drain (deliveries in
/// flight get their grace, see [`crate::app::SHUTDOWN_GRACE`]).
async fn stop_process(stop: &CancellationToken, runner: JoinHandle<()>) -> Result<(), DaemonError> {
    notify(&[NotifyState::Stopping]);
    stop.cancel();
    runner.await.map_err(|e| DaemonError::Task(e.to_string()))
}

/// The state file was found unusable: stop everything (store operations fail at once now, so
/// the drain is short), tell systemd, and fail with the error naming the file, so the process
/// exits non-zero.
async fn stop_faulted(
    e: StoreError,
    stop: &CancellationToken,
    runner: JoinHandle<()>,
) -> Result<(), DaemonError> {
    tracing::error!(error = %e, "stopping: the state file cannot be used");
    notify(&[
        NotifyState::Stopping,
        NotifyState::Status("stopping: the state file cannot be used"),
    ]);
    stop.cancel();
    if let Err(join) = runner.await {
        tracing::error!(error = %join, "pipeline task failed while stopping");
    }
    Err(DaemonError::Fault(e))
}

/// Pings the systemd watchdog (when `WatchdogSec=` is set) at half its interval for the whole
/// life of the process, drains included, but only while [`watchdog_check`] passes: a wedged
/// process stops pinging and systemd restarts it; once the state file is found unusable the
/// pings stop for good.
async fn watchdog(store: Store, stop: CancellationToken) {
    let Some(interval) = sd_notify::watchdog_enabled() else {
        return;
    };
    let mut tick = tokio::time::interval(interval / 2);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        match watchdog_check(&store).await {
            Ok(()) => notify(&[NotifyState::Watchdog]),
            Err(why) => {
                tracing::error!("{why}; withholding the watchdog ping");
                if store.fault().is_some() {
                    return;
                }
            }
        }
    }
}

/// Whether the watchdog may ping: the state file is not known to be unusable and answers a read
/// within 5 s.
async fn watchdog_check(store: &Store) -> Result<(), String> {
    if let Some(e) = store.fault() {
        return Err(e.to_string());
    }
    match tokio::time::timeout(Duration::from_secs(5), store.run(|s| s.counts())).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(format!("store not answering: {e}")),
        Err(_) => Err("store not answering within 5 s".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_busy_admin_port_says_what_to_set() {
        let e = DaemonError::Admin {
            addr: "127.0.0.1:9477".parse().unwrap(),
            reason: "Address in use (os error 98)".into(),
        };
        let text = e.to_string();
        for want in [
            "cannot listen on 127.0.0.1:9477: Address in use",
            "[admin] listen = \"127.0.0.1:9478\"",
            "POLLHOOK_ADMIN__LISTEN=127.0.0.1:9478",
            "listen = \"off\"",
            "--admin http://127.0.0.1:9478",
        ] {
            assert!(text.contains(want), "{want:?} missing from: {text}");
        }
        let v6: SocketAddr = "[::1]:65535".parse().unwrap();
        assert_eq!(next_port(&v6).to_string(), "[::1]:65534");
    }

    fn config(dir: &tempfile::TempDir) -> Config {
        let toml = format!(
            "[store]\npath = \"{}\"\n[admin]\nlisten = \"off\"\n[sources.hotel]\nurl = \"http://127.0.0.1:1/b\"\nevery = \"1h\"\n",
            dir.path().join("state.redb").display()
        );
        Config::from_toml_str(&toml, "test.toml").unwrap_or_else(|e| panic!("{e}"))
    }

    /// Corruption seen inside a store operation: a panic in it, as the engine panics on a
    /// damaged page.
    async fn corrupt(store: &Store) -> StoreError {
        let r: Result<(), StoreError> = store
            .run(|_| panic!("simulated engine panic on a damaged page"))
            .await;
        match r {
            Err(e) => e,
            Ok(()) => panic!("the operation panicked yet succeeded"),
        }
    }

    #[tokio::test]
    async fn the_watchdog_withholds_its_ping_once_the_state_file_is_corrupt() {
        let dir = tempfile::tempdir().unwrap();
        let store = App::open_store(&config(&dir)).unwrap();
        assert_eq!(watchdog_check(&store).await, Ok(()));
        let e = corrupt(&store).await;
        assert!(e.is_corruption(), "{e}");
        let why = watchdog_check(&store).await.unwrap_err();
        assert!(why.contains("is corrupt"), "{why}");
        assert!(why.contains("state.redb"), "{why}");
    }

    /// The engine's answer to every write after one failed with an I/O error (a full disk).
    async fn io_failed(store: &Store) -> StoreError {
        let r: Result<(), StoreError> = store
            .run(|_| Err(StoreError::Db(redb::Error::PreviousIo)))
            .await;
        match r {
            Err(e) => e,
            Ok(()) => panic!("the operation failed yet succeeded"),
        }
    }

    /// Runs the daemon on `cfg`'s store until `fault` is seen, and returns its error.
    async fn daemon_stopped_by(
        cfg: Config,
        fault: impl AsyncFnOnce(&Store) -> StoreError,
    ) -> DaemonError {
        let store = App::open_store(&cfg).unwrap();
        let running = store.clone();
        let daemon = tokio::spawn(async move {
            run_with(
                Path::new("test.toml"),
                cfg,
                &Selection::default(),
                running,
                Signals::Never,
            )
            .await
        });
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(
            !daemon.is_finished(),
            "the daemon runs until something stops it"
        );
        fault(&store).await;
        let result = tokio::time::timeout(Duration::from_secs(20), daemon)
            .await
            .expect("the daemon stops once the state file cannot be used")
            .unwrap();
        result.unwrap_err()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_daemon_stops_once_the_engine_refuses_writes_after_an_io_error() {
        let dir = tempfile::tempdir().unwrap();
        let e = daemon_stopped_by(config(&dir), io_failed).await;
        assert!(
            matches!(e, DaemonError::Fault(StoreError::Io { .. })),
            "{e}"
        );
        let message = e.to_string();
        assert!(message.contains("an earlier write failed"), "{message}");
        assert!(message.contains("systemd restarts it"), "{message}");
        assert!(
            message.contains(&dir.path().join("state.redb").display().to_string()),
            "{message}"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_daemon_stops_with_an_error_naming_the_file_once_corruption_is_seen() {
        let dir = tempfile::tempdir().unwrap();
        let e = daemon_stopped_by(config(&dir), corrupt).await;
        assert!(matches!(e, DaemonError::Fault(_)), "{e}");
        let message = e.to_string();
        assert!(message.contains("is corrupt"), "{message}");
        assert!(
            message.contains(&dir.path().join("state.redb").display().to_string()),
            "{message}"
        );
    }
}
