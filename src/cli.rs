//! The command line: `run`, `check`, `once` and `demo`, and logging set-up. Parses arguments,
//! adds context to library errors (anyhow) and maps outcomes to exit codes; no pipeline logic.

use std::io::IsTerminal as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::prelude::*;

use crate::app::App;
use crate::config::{Config, LogConfig, LogFormat};

/// pollhook: turns a booking API without webhooks into webhooks.
#[derive(Debug, Parser)]
#[command(name = "pollhook", version, about, long_about = None)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the daemon: poll on schedule and deliver until SIGINT/SIGTERM.
    Run {
        /// Configuration file (TOML); `POLLHOOK_` environment variables override it.
        #[arg(short, long, value_name = "FILE")]
        config: PathBuf,
    },
    /// Validate a configuration and exit non-zero with every problem found.
    Check {
        /// Configuration file (TOML).
        #[arg(short, long, value_name = "FILE")]
        config: PathBuf,
        /// Also fetch one full cycle from each source (nothing is committed) and show what
        /// pollhook understood: pages, bookings, a sample id and status, cancellations.
        #[arg(long)]
        probe: bool,
        /// With --probe: only this source.
        #[arg(long, value_name = "NAME", requires = "probe")]
        source: Option<String>,
    },
    /// Poll every source once, then deliver what is due, then exit (for cron and debugging).
    Once {
        /// Configuration file (TOML).
        #[arg(short, long, value_name = "FILE")]
        config: PathBuf,
    },
    /// List deliveries through a running daemon's admin API (dead letters by default).
    Deliveries {
        /// Admin API address.
        #[arg(long, value_name = "URL", default_value = "http://127.0.0.1:9477")]
        admin: String,
        /// dead, pending or delivered.
        #[arg(long, default_value = "dead")]
        state: String,
        /// At most this many, newest first.
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
    /// List the newest detected events through a running daemon's admin API.
    Events {
        /// Admin API address.
        #[arg(long, value_name = "URL", default_value = "http://127.0.0.1:9477")]
        admin: String,
        /// At most this many, newest first.
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
    /// Replay deliveries through a running daemon's admin API; event ids are kept.
    Replay {
        /// Admin API address.
        #[arg(long, value_name = "URL", default_value = "http://127.0.0.1:9477")]
        admin: String,
        /// Replay one event (its `evt_...` id).
        #[arg(long, value_name = "EVENT_ID", conflicts_with_all = ["dead_of", "from"])]
        event: Option<String>,
        /// Replay every dead letter of this endpoint.
        #[arg(long, value_name = "ENDPOINT", conflicts_with_all = ["from", "endpoint"])]
        dead_of: Option<String>,
        /// Replay every event detected from this RFC 3339 time...
        #[arg(long, value_name = "TIME", requires = "to")]
        from: Option<String>,
        /// ...until this one.
        #[arg(long, value_name = "TIME", requires = "from")]
        to: Option<String>,
        /// Only this endpoint (with --event or --from/--to).
        #[arg(long, value_name = "ENDPOINT")]
        endpoint: Option<String>,
    },
    /// Re-enable an endpoint that was disabled after answering 410 Gone.
    Enable {
        /// Endpoint name.
        endpoint: String,
        /// Admin API address.
        #[arg(long, value_name = "URL", default_value = "http://127.0.0.1:9477")]
        admin: String,
    },
    /// Run a self-contained demo on loopback: simulated booking API -> pollhook -> receiver.
    Demo {
        /// Stop after this long (e.g. "60s"); default: until Ctrl-C.
        #[arg(long, value_name = "DURATION")]
        duration: Option<String>,
        /// How often the simulated API changes a booking.
        #[arg(long, value_name = "DURATION", default_value = "3s")]
        pace: String,
        /// How often pollhook polls the simulated API (at least 1s).
        #[arg(long, value_name = "DURATION", default_value = "2s")]
        poll_every: String,
    },
}

/// Installs the tracing subscriber: journald-friendly plain text under systemd, colours on a
/// terminal, JSON on request. `RUST_LOG` overrides the configured level.
pub fn init_logging(cfg: &LogConfig) {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&cfg.level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let under_systemd = std::env::var_os("JOURNAL_STREAM").is_some();
    let registry = tracing_subscriber::registry().with(filter);
    let result = match cfg.format {
        LogFormat::Json => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .json()
                    .flatten_event(true)
                    .with_writer(std::io::stderr),
            )
            .try_init(),
        LogFormat::Text | LogFormat::Auto => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .with_writer(std::io::stderr)
                    .with_ansi(std::io::stderr().is_terminal())
                    // journald stamps every line itself.
                    .with_target(!under_systemd),
            )
            .try_init(),
    };
    let _ = result;
}

fn load(path: &std::path::Path) -> anyhow::Result<Config> {
    Ok(Config::load(path)?)
}

fn shutdown_signal(cancel: CancellationToken) {
    tokio::spawn(async move {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            let mut term = match signal(SignalKind::terminate()) {
                Ok(s) => s,
                Err(e) => {
                    tracing::error!(error = %e, "cannot listen for SIGTERM");
                    let _ = tokio::signal::ctrl_c().await;
                    cancel.cancel();
                    return;
                }
            };
            tokio::select! {
                _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT received"),
                _ = term.recv() => tracing::info!("SIGTERM received"),
            }
        }
        #[cfg(not(unix))]
        let _ = tokio::signal::ctrl_c().await;
        cancel.cancel();
    });
}

/// Runs the daemon until `stop`. On SIGHUP the file is read and validated again: an invalid
/// config is rejected (logged, old one kept); a valid one replaces the running pipeline, with
/// the state store kept open (a changed `store.path` needs a restart).
async fn run_with_reload(
    path: &std::path::Path,
    mut cfg: Config,
    stop: CancellationToken,
) -> anyhow::Result<()> {
    let store =
        App::open_store(&cfg).with_context(|| format!("starting with {}", path.display()))?;
    #[cfg(unix)]
    let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        .context("cannot listen for SIGHUP")?;
    loop {
        let app = App::build_with_store(cfg.clone(), store.clone())
            .with_context(|| format!("starting with {}", path.display()))?;
        let round = stop.child_token();
        let mut runner = {
            let app = app.clone();
            let round = round.clone();
            tokio::spawn(async move { app.run(round).await })
        };
        let next = loop {
            #[cfg(unix)]
            let hangup = hup.recv();
            #[cfg(not(unix))]
            let hangup = std::future::pending::<Option<()>>();
            tokio::select! {
                res = &mut runner => {
                    return match res {
                        Ok(r) => r.map_err(Into::into),
                        Err(e) => Err(anyhow::anyhow!("daemon task failed: {e}")),
                    };
                }
                _ = hangup => {
                    let _ = sd_notify::notify(&[sd_notify::NotifyState::Reloading]);
                    tracing::info!(config = %path.display(), "SIGHUP: reloading configuration");
                    match Config::load(path) {
                        Ok(new) if new.store_path != cfg.store_path => {
                            tracing::error!("reload rejected: store.path changed; that needs a restart. Keeping the running configuration");
                            let _ = sd_notify::notify(&[sd_notify::NotifyState::Ready]);
                        }
                        Ok(new) => break new,
                        Err(e) => {
                            tracing::error!("reload rejected, keeping the running configuration: {e}");
                            let _ = sd_notify::notify(&[sd_notify::NotifyState::Ready]);
                        }
                    }
                }
            }
        };
        round.cancel();
        match runner.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::error!(error = %e, "pipeline stopped with an error during reload")
            }
            Err(e) => tracing::error!(error = %e, "pipeline task failed during reload"),
        }
        drop(app);
        cfg = next;
        tracing::info!("configuration reloaded");
    }
}

async fn probe_sources(config: &Config, only: Option<&str>) -> anyhow::Result<ExitCode> {
    let mut failed = false;
    let selected: Vec<_> = config
        .sources
        .iter()
        .filter(|s| only.is_none_or(|o| o == s.name))
        .collect();
    if selected.is_empty() {
        anyhow::bail!("no source named `{}`", only.unwrap_or_default());
    }
    for s in selected {
        println!("{} ({}):", s.name, s.url);
        match crate::poll::probe(s).await {
            Ok(r) => {
                println!("  {} page(s), {} booking(s)", r.pages, r.bookings);
                match &r.sample {
                    Some((id, status)) => println!(
                        "  sample: id {id:?}, status {}",
                        status
                            .as_deref()
                            .map(|s| format!("{s:?}"))
                            .unwrap_or_else(|| "(none: `status` not set or not found)".into())
                    ),
                    None => {
                        println!("  no bookings found: check `items` and the request parameters")
                    }
                }
                let statuses: Vec<String> = r
                    .statuses
                    .iter()
                    .map(|(s, n)| format!("{s} x{n}"))
                    .collect();
                println!("  statuses seen: {}", statuses.join(", "));
                println!(
                    "  cancelled (status in {:?}): {}{}",
                    s.cancelled_values,
                    r.cancelled,
                    if r.cancelled_examples.is_empty() {
                        String::new()
                    } else {
                        format!(", e.g. {}", r.cancelled_examples.join(", "))
                    }
                );
            }
            Err(e) => {
                failed = true;
                println!("  FAILED: {e}");
            }
        }
    }
    Ok(if failed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

async fn admin_call(method: reqwest::Method, url: &str) -> anyhow::Result<ExitCode> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .redirect(reqwest::redirect::Policy::none())
        .build()?;
    let resp = client.request(method, url).send().await.with_context(|| {
        format!(
            "cannot reach the admin API at {url} (is the daemon running with [admin] listen on?)"
        )
    })?;
    let status = resp.status();
    let body = resp.text().await.unwrap_or_default();
    if status.is_success() {
        println!("{}", body.trim_end());
        Ok(ExitCode::SUCCESS)
    } else {
        eprintln!("{status}: {}", body.trim_end());
        Ok(ExitCode::from(1))
    }
}

/// Runs a parsed command line and returns the process exit code.
pub async fn main(cli: Cli) -> ExitCode {
    match dispatch(cli).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("pollhook: {e:#}");
            ExitCode::from(1)
        }
    }
}

async fn dispatch(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Check {
            config,
            probe,
            source,
        } => match Config::load(&config) {
            Ok(c) if probe => probe_sources(&c, source.as_deref()).await,
            Ok(c) => {
                println!(
                    "{}: OK ({} source(s): {}; {} endpoint(s): {})",
                    config.display(),
                    c.sources.len(),
                    c.sources
                        .iter()
                        .map(|s| format!("{} {}", s.name, s.schedule.describe()))
                        .collect::<Vec<_>>()
                        .join(", "),
                    c.endpoints.len(),
                    c.endpoints
                        .iter()
                        .map(|e| e.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", "),
                );
                Ok(ExitCode::SUCCESS)
            }
            Err(e) => {
                eprintln!("{e}");
                Ok(ExitCode::from(2))
            }
        },
        Command::Run { config } => {
            let cfg = load(&config)?;
            init_logging(&cfg.log);
            let stop = CancellationToken::new();
            shutdown_signal(stop.clone());
            run_with_reload(&config, cfg, stop).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Once { config } => {
            let cfg = load(&config)?;
            init_logging(&cfg.log);
            let app =
                App::build(cfg).with_context(|| format!("starting with {}", config.display()))?;
            let mut failed = false;
            for (name, r) in app.poll_all().await {
                match r {
                    Ok(r) => println!(
                        "{name}: {} booking(s) on {} page(s), {} event(s){}",
                        r.bookings,
                        r.pages,
                        r.events.len(),
                        if r.baseline { " (baseline)" } else { "" }
                    ),
                    Err(e) => {
                        failed = true;
                        println!("{name}: poll failed, nothing committed: {e}");
                    }
                }
            }
            let d = app.deliver_until_idle().await.context("delivering")?;
            println!(
                "deliveries: {} attempted, {} delivered, {} to retry, {} dead-lettered",
                d.attempted, d.delivered, d.retrying, d.dead
            );
            Ok(if failed {
                ExitCode::from(1)
            } else {
                ExitCode::SUCCESS
            })
        }
        Command::Deliveries {
            admin,
            state,
            limit,
        } => {
            let url = format!(
                "{}/deliveries?state={state}&limit={limit}",
                admin.trim_end_matches('/')
            );
            admin_call(reqwest::Method::GET, &url).await
        }
        Command::Events { admin, limit } => {
            let url = format!("{}/events?limit={limit}", admin.trim_end_matches('/'));
            admin_call(reqwest::Method::GET, &url).await
        }
        Command::Replay {
            admin,
            event,
            dead_of,
            from,
            to,
            endpoint,
        } => {
            let base = admin.trim_end_matches('/');
            let mut url = match (event, dead_of, from, to) {
                (Some(id), None, None, None) => {
                    url::Url::parse(&format!("{base}/events/{id}/replay"))?
                }
                (None, Some(ep), None, None) => {
                    url::Url::parse(&format!("{base}/endpoints/{ep}/replay-dead"))?
                }
                (None, None, Some(from), Some(to)) => {
                    let mut u = url::Url::parse(&format!("{base}/replay"))?;
                    u.query_pairs_mut()
                        .append_pair("from", &from)
                        .append_pair("to", &to);
                    u
                }
                _ => anyhow::bail!(
                    "say what to replay: --event ID, --dead-of ENDPOINT, or --from TIME --to TIME"
                ),
            };
            if let Some(ep) = endpoint {
                url.query_pairs_mut().append_pair("endpoint", &ep);
            }
            admin_call(reqwest::Method::POST, url.as_str()).await
        }
        Command::Enable { endpoint, admin } => {
            let url = format!(
                "{}/endpoints/{endpoint}/enable",
                admin.trim_end_matches('/')
            );
            admin_call(reqwest::Method::POST, &url).await
        }
        Command::Demo {
            duration,
            pace,
            poll_every,
        } => {
            let parse = |key: &str, s: &str| -> anyhow::Result<Duration> {
                crate::config::parse_duration(s).map_err(|m| anyhow::anyhow!("--{key}: {m}"))
            };
            let opts = crate::demo::DemoOptions {
                duration: duration
                    .as_deref()
                    .map(|d| parse("duration", d))
                    .transpose()?,
                pace: parse("pace", &pace)?,
                poll_every: parse("poll-every", &poll_every)?,
            };
            init_logging(&LogConfig {
                format: LogFormat::Text,
                level: "error".into(),
            });
            let cancel = CancellationToken::new();
            shutdown_signal(cancel.clone());
            let mut stdout = std::io::stdout();
            let s = crate::demo::run(opts, cancel, &mut stdout).await?;
            Ok(if s.signatures_invalid == 0 {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
    }
}
