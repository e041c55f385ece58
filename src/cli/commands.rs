//! What the commands that report print: `check --probe`, `check --store` and the admin API
//! client behind `events`, `deliveries`, `replay` and `enable` (where the API is, its bearer
//! token, the `X-Pollhook` header on POSTs).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;

use super::AdminArgs;
use crate::config::{Config, Secret};
use crate::store::{SCHEMA_VERSION, Store, StoreError};
use crate::text::Escaped;

/// `check --store`: verifies the state file offline and shows its tables.
pub(super) fn check_store(config: &Config) -> ExitCode {
    let path = &config.store_path;
    let found = match Store::inspect(path) {
        Ok(found) => found,
        Err(e @ StoreError::Locked { .. }) => {
            eprintln!(
                "{e}. `check --store` needs the file to itself: stop the daemon first (every start verifies the file too)"
            );
            return ExitCode::from(1);
        }
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(1);
        }
    };
    let version = found.schema_version;
    let note = match version {
        0 => " (no tables yet)",
        1 => " (the first release's layout; the next start upgrades it)",
        v if v > SCHEMA_VERSION => " (written by a newer pollhook)",
        _ => "",
    };
    println!(
        "{}: OK: every page verified{}; schema version {version}{note}",
        path.display(),
        if found.repaired {
            " (it was not shut down cleanly and has been repaired; nothing committed was lost)"
        } else {
            ""
        },
    );
    println!("  {:<16} {:>12}", "table", "rows");
    for (name, rows) in &found.tables {
        println!("  {name:<16} {rows:>12}");
    }
    if let Some(mode) = found.loose_mode {
        println!(
            "warning: {} has mode {mode:o}, so other users may read it, and it holds cached access tokens: `chmod 600` it",
            path.display()
        );
    }
    if version > SCHEMA_VERSION {
        eprintln!(
            "{}",
            StoreError::NewerSchema {
                path: path.clone(),
                found: version,
                supported: SCHEMA_VERSION,
            }
        );
        return ExitCode::from(1);
    }
    ExitCode::SUCCESS
}

pub(super) async fn probe_sources(config: &Config, only: Option<&str>) -> anyhow::Result<ExitCode> {
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
        // No password, query or secret: the URL is shown as logs show it.
        let shown = s.redactor.redact(&crate::http::redact(&s.url));
        println!("{} ({shown}):", s.name);
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
                        format!(", e.g. {}", Escaped(r.cancelled_examples.join(", ")))
                    }
                );
            }
            Err(e) => {
                failed = true;
                println!("  FAILED: {}", Escaped(&e));
            }
        }
    }
    Ok(if failed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

/// Where a running daemon's admin API is and how to authenticate to it.
pub(super) struct AdminTarget {
    /// Base URL without a trailing slash.
    pub(super) base: String,
    token: Option<Secret>,
}

/// Where the operator commands look when given neither `--admin` nor `--config`.
const DEFAULT_ADMIN: &str = "http://127.0.0.1:9477";

impl AdminTarget {
    /// `--admin URL` if given, else `admin.listen` of `--config FILE` (a wildcard address is
    /// reached on loopback), else [`DEFAULT_ADMIN`]; the token is `admin.token` of `--config`.
    pub(super) fn resolve(args: &AdminArgs) -> anyhow::Result<AdminTarget> {
        let admin = match &args.config {
            Some(path) => Some(Config::load_admin(path)?),
            None => None,
        };
        let base = match (&args.admin, &admin) {
            (Some(url), _) => url.clone(),
            (None, Some(a)) => match a.listen {
                Some(addr) => format!("http://{}", reachable(addr)),
                None => anyhow::bail!(
                    "{}: admin.listen is \"off\", so the daemon has no admin API to call; pass --admin URL if it listens elsewhere",
                    args.config.as_deref().unwrap_or(Path::new("")).display()
                ),
            },
            (None, None) => DEFAULT_ADMIN.to_string(),
        };
        Ok(AdminTarget {
            base: base.trim_end_matches('/').to_string(),
            token: admin.and_then(|a| a.token),
        })
    }

    /// Sends one request and prints the answer; a non-2xx answer exits 1. Every request but a
    /// GET carries the `X-Pollhook` header the admin API requires of them; the bearer token goes
    /// with every request when one is configured.
    pub(super) async fn call(
        &self,
        method: reqwest::Method,
        url: &str,
    ) -> anyhow::Result<ExitCode> {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        let mut request = client.request(method.clone(), url);
        if method != reqwest::Method::GET {
            request = request.header(crate::admin::CSRF_HEADER, "1");
        }
        if let Some(token) = &self.token {
            let mut value =
                reqwest::header::HeaderValue::from_str(&format!("Bearer {}", token.expose()))
                    .context(
                        "admin.token cannot be sent in an HTTP header (it has control characters)",
                    )?;
            value.set_sensitive(true);
            request = request.header(reqwest::header::AUTHORIZATION, value);
        }
        let resp = request.send().await.with_context(|| {
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
            if status == reqwest::StatusCode::UNAUTHORIZED && self.token.is_none() {
                eprintln!(
                    "the daemon has an admin.token: pass --config FILE so the token is read from its configuration"
                );
            }
            Ok(ExitCode::from(1))
        }
    }
}

/// The address to connect to for a listener on `addr`: a wildcard address is reached on the
/// loopback address of its family.
fn reachable(addr: SocketAddr) -> SocketAddr {
    match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => {
            SocketAddr::from((Ipv4Addr::LOCALHOST, addr.port()))
        }
        IpAddr::V6(ip) if ip.is_unspecified() => {
            SocketAddr::from((Ipv6Addr::LOCALHOST, addr.port()))
        }
        _ => addr,
    }
}
