//! The command line: the clap definitions (this file), what each command prints
//! ([`commands`]) and logging set-up ([`logging`]). Parses arguments, adds context to library
//! errors (anyhow) and maps outcomes to exit codes; no pipeline logic.

mod commands;
mod generate;
mod logging;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};
use tokio_util::sync::CancellationToken;

use crate::app::App;
use crate::config::{Config, LogConfig, LogFormat, Selection, Shard};

pub use generate::{GenerateError, generate};
pub use logging::init_logging;

/// pollhook: turns a booking API without webhooks into webhooks.
#[derive(Debug, Parser)]
#[command(name = "pollhook", version, about, long_about = None)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Which sources this instance polls (for sharding one configuration across instances).
#[derive(Debug, Clone, Default, Args)]
pub struct SourceArgs {
    /// Poll only the sources whose names match one of these shell-style patterns
    /// (comma-separated or repeated), e.g. 'hotel-*'. Endpoints are delivered as usual.
    #[arg(long, value_name = "PATTERN", value_delimiter = ',')]
    pub sources: Vec<String>,
    /// Poll only the sources of shard N of M (1 <= N <= M), assigned by a stable hash of their
    /// names; overrides `shard` in the configuration. E.g. --shard 2/3.
    #[arg(long, value_name = "N/M", value_parser = parse_shard)]
    pub shard: Option<Shard>,
}

fn parse_shard(s: &str) -> Result<Shard, String> {
    s.parse()
}

impl SourceArgs {
    fn selection(&self) -> Selection {
        Selection {
            patterns: self.sources.clone(),
            shard: self.shard,
        }
    }
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the daemon: poll on schedule and deliver until SIGINT/SIGTERM.
    Run {
        /// Configuration file (TOML); `POLLHOOK_` environment variables override it.
        #[arg(short, long, value_name = "FILE")]
        config: PathBuf,
        /// Which sources to poll.
        #[command(flatten)]
        select: SourceArgs,
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
        /// Which sources `run` would poll with these options (they are listed).
        #[command(flatten)]
        select: SourceArgs,
        /// Instead, verify the state file named by `store.path` offline: every page of it, its
        /// schema version and the rows of each table. Exit status 1 when it is corrupt, not a
        /// pollhook state file, missing, or in use by a running pollhook. Never creates,
        /// initialises or upgrades the file.
        #[arg(long, conflicts_with = "probe")]
        store: bool,
    },
    /// Poll every source once, then deliver what is due, then exit (for cron and debugging).
    Once {
        /// Configuration file (TOML).
        #[arg(short, long, value_name = "FILE")]
        config: PathBuf,
        /// Which sources to poll.
        #[command(flatten)]
        select: SourceArgs,
    },
    /// List deliveries through a running daemon's admin API (dead letters by default).
    Deliveries {
        #[command(flatten)]
        admin: AdminArgs,
        /// dead, pending or delivered.
        #[arg(long, default_value = "dead")]
        state: String,
        /// At most this many, newest first.
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
    /// List the newest detected events through a running daemon's admin API.
    Events {
        #[command(flatten)]
        admin: AdminArgs,
        /// At most this many, newest first.
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
    /// Replay deliveries through a running daemon's admin API; event ids are kept.
    Replay {
        #[command(flatten)]
        admin: AdminArgs,
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
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Send a newly connected endpoint the current state: one event per known booking (`new`
    /// for an active one, `cancel` for a cancelled one), marked as a backfill, through a
    /// running daemon's admin API.
    Backfill {
        /// The endpoint that gets the events (and only it).
        #[arg(long, value_name = "NAME")]
        endpoint: String,
        /// Only the bookings of this source (default: every source).
        #[arg(long, value_name = "SOURCE")]
        source: Option<String>,
        #[command(flatten)]
        admin: AdminArgs,
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
        /// The simulated API pings pollhook after each change (ping-triggered refresh).
        #[arg(long)]
        ping: bool,
    },
    /// Write shell completions (bash, zsh, fish) and man pages from these definitions (used
    /// when building the Debian package).
    #[command(hide = true)]
    Generate {
        /// Directory to write `completions/` and `man/` into.
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
    },
}

/// `check`: settings that are valid but have no effect, on stderr (the file is still OK).
fn print_warnings(c: &Config) {
    for w in &c.warnings {
        eprintln!("warning: {w}");
    }
}

/// How the operator commands reach a running daemon's admin API.
#[derive(Debug, Clone, clap::Args)]
pub struct AdminArgs {
    /// Admin API address [default: from --config's admin.listen, else http://127.0.0.1:9477].
    #[arg(long, value_name = "URL")]
    pub admin: Option<String>,
    /// The daemon's configuration file: its `[admin]` table gives the address (admin.listen)
    /// and the bearer token (admin.token); nothing else in it is read.
    #[arg(short, long, value_name = "FILE")]
    pub config: Option<PathBuf>,
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
            select,
            store,
        } => match Config::load(&config).map(|c| {
            let file_shard = c.shard;
            (c.select(&select.selection()), file_shard)
        }) {
            Ok((Err(e), _)) => {
                eprintln!("{e}");
                Ok(ExitCode::from(2))
            }
            Ok((Ok(c), _)) if store => Ok(commands::check_store(&c)),
            Ok((Ok(c), _)) if probe => {
                print_warnings(&c);
                commands::probe_sources(&c, source.as_deref()).await
            }
            Ok((Ok(c), file_shard)) => {
                print_warnings(&c);
                println!(
                    "{}: OK ({}; {})",
                    config.display(),
                    counted(
                        "source(s)",
                        c.sources
                            .iter()
                            .map(|s| format!("{} {}", s.name, s.schedule.describe()))
                    ),
                    counted("endpoint(s)", c.endpoints.iter().map(|e| e.name.clone())),
                );
                if !select.selection().is_all() || file_shard.is_some() {
                    println!(
                        "selected{}: {}",
                        c.shard.map(|s| format!(" (shard {s})")).unwrap_or_default(),
                        c.sources
                            .iter()
                            .map(|s| s.name.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    );
                }
                Ok(ExitCode::SUCCESS)
            }
            Err(e) => {
                eprintln!("{e}");
                Ok(ExitCode::from(2))
            }
        },
        Command::Run { config, select } => {
            let cfg = Config::load(&config)?;
            init_logging(&cfg.log);
            cfg.log_warnings();
            crate::daemon::run(&config, cfg, &select.selection())
                .await
                .with_context(|| format!("running with {}", config.display()))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Once { config, select } => {
            let cfg = Config::load(&config)?.select(&select.selection())?;
            init_logging(&cfg.log);
            cfg.log_warnings();
            for w in crate::delivery::preflight(&cfg.endpoints).await? {
                tracing::warn!("{w}");
            }
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
                        println!(
                            "{name}: poll failed, nothing committed: {}",
                            crate::text::Escaped(&e)
                        );
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
            let target = commands::AdminTarget::resolve(&admin)?;
            let url = format!("{}/deliveries?state={state}&limit={limit}", target.base);
            target.call(reqwest::Method::GET, &url).await
        }
        Command::Events { admin, limit } => {
            let target = commands::AdminTarget::resolve(&admin)?;
            let url = format!("{}/events?limit={limit}", target.base);
            target.call(reqwest::Method::GET, &url).await
        }
        Command::Replay {
            admin,
            event,
            dead_of,
            from,
            to,
            endpoint,
        } => {
            let target = commands::AdminTarget::resolve(&admin)?;
            let base = target.base.as_str();
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
            target.call(reqwest::Method::POST, url.as_str()).await
        }
        Command::Enable { endpoint, admin } => {
            let target = commands::AdminTarget::resolve(&admin)?;
            let url = format!("{}/endpoints/{endpoint}/enable", target.base);
            target.call(reqwest::Method::POST, &url).await
        }
        Command::Generate { out } => {
            for f in generate(&out)? {
                println!("{}", f.display());
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Backfill {
            endpoint,
            source,
            admin,
        } => {
            let target = commands::AdminTarget::resolve(&admin)?;
            let mut url = url::Url::parse(&format!("{}/endpoints/", target.base))?;
            url.path_segments_mut()
                .map_err(|()| anyhow::anyhow!("--admin must be an http:// URL"))?
                .pop_if_empty()
                .push(&endpoint)
                .push("backfill");
            if let Some(s) = source {
                url.query_pairs_mut().append_pair("source", &s);
            }
            target.call(reqwest::Method::POST, url.as_str()).await
        }
        Command::Demo {
            duration,
            pace,
            poll_every,
            ping,
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
                ping,
            };
            init_logging(&LogConfig {
                format: LogFormat::Text,
                level: "error".into(),
            });
            let cancel = CancellationToken::new();
            {
                let c = cancel.clone();
                tokio::spawn(async move {
                    let _ = tokio::signal::ctrl_c().await;
                    c.cancel();
                });
            }
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

/// "2 endpoint(s): a, b", or "0 endpoint(s)" with no colon when there are none.
fn counted(what: &str, names: impl Iterator<Item = String>) -> String {
    let names: Vec<String> = names.collect();
    if names.is_empty() {
        format!("0 {what}")
    } else {
        format!("{} {what}: {}", names.len(), names.join(", "))
    }
}
