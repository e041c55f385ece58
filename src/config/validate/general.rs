//! The `[store]`, `[log]`, `[admin]` and `[delivery]` tables: where state lives, how pollhook
//! logs, where the admin server listens, and the delivery defaults every endpoint inherits.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use super::Validator;
use super::endpoint::EndpointDefaults;
use crate::config::{AdminConfig, LogConfig, LogFormat, raw};
use crate::retry::RetryPolicy;

impl Validator {
    /// `[store]`: the database path (by default under systemd's `STATE_DIRECTORY`) and how long
    /// delivered history is kept.
    pub(super) fn store(&mut self, store: raw::RawStore) -> (PathBuf, Duration, usize) {
        let store_path = store.path.unwrap_or_else(|| {
            std::env::var_os("STATE_DIRECTORY")
                .map(|d| {
                    // systemd may pass several colon-separated directories; the first is ours.
                    let d = d
                        .to_string_lossy()
                        .split(':')
                        .next()
                        .unwrap_or("")
                        .to_string();
                    PathBuf::from(d).join("pollhook.redb")
                })
                .unwrap_or_else(|| PathBuf::from("pollhook.redb"))
        });

        let retention = self.positive_duration(
            "store.retention",
            store.retention.as_deref(),
            Duration::from_secs(30 * 86400),
        );
        let cache_size = match store.cache_size {
            None => crate::config::DEFAULT_CACHE_SIZE,
            Some(s) => self.size(
                "store.cache_size",
                &s,
                1024 * 1024,
                crate::config::DEFAULT_CACHE_SIZE,
            ),
        };
        (store_path, retention, cache_size)
    }

    /// A size in bytes: a number, or text such as "64MiB", "512 KiB" or "1GB"; at least `min`.
    fn size(&mut self, key: &str, raw: &raw::RawSize, min: usize, default: usize) -> usize {
        let parsed = match raw {
            raw::RawSize::Bytes(n) => usize::try_from(*n).ok(),
            raw::RawSize::Text(t) => parse_size(t),
        };
        match parsed {
            Some(n) if n >= min => n,
            Some(_) => {
                self.bad(key, format!("must be at least {} MiB", min / (1024 * 1024)));
                default
            }
            None => {
                self.bad(
                    key,
                    "is not a size; write bytes as a number or a number and a unit, e.g. \"64MiB\", \"512KiB\" or \"1GB\"",
                );
                default
            }
        }
    }

    /// `[log]`: the output format and the level filter.
    pub(super) fn log(&mut self, log: raw::RawLog) -> LogConfig {
        let format = match log.format.as_deref() {
            None | Some("auto") => LogFormat::Auto,
            Some("text") => LogFormat::Text,
            Some("json") => LogFormat::Json,
            Some(other) => {
                self.bad(
                    "log.format",
                    format!("`{other}` is not valid; use \"auto\", \"text\" or \"json\""),
                );
                LogFormat::Auto
            }
        };
        let level = log.level.unwrap_or_else(|| "info".into());
        if tracing_subscriber::EnvFilter::try_new(&level).is_err() {
            self.bad(
                "log.level",
                format!("`{level}` is not a log filter; use e.g. \"info\", \"debug\" or \"pollhook=debug,info\""),
            );
        }
        LogConfig { format, level }
    }

    /// `[admin]`: the listen address (`None` when switched off), the bearer token, and the extra
    /// names accepted as `Host`. A listener that is not on loopback must have a token: the API
    /// serves guests' personal data and can replay every delivery.
    pub(in crate::config) fn admin(&mut self, admin: raw::RawAdmin) -> AdminConfig {
        let listen = match admin.listen.as_deref() {
            None => Some(SocketAddr::from(([127, 0, 0, 1], 9477))),
            Some("" | "off") => None,
            Some(s) => match s.parse::<SocketAddr>() {
                Ok(a) => Some(a),
                Err(_) => {
                    self.bad(
                        "admin.listen",
                        format!("`{s}` is not an address; use \"127.0.0.1:9477\", \"[::1]:9477\" or \"off\""),
                    );
                    None
                }
            },
        };
        let token = admin.token.as_ref().and_then(|raw| {
            let secret = self.secret("admin.token", raw)?;
            if secret.expose().chars().count() < MIN_ADMIN_TOKEN_CHARS {
                self.bad(
                    "admin.token",
                    format!(
                        "the token is shorter than {MIN_ADMIN_TOKEN_CHARS} characters; use a long random value, e.g. 32 random hex characters"
                    ),
                );
                return None;
            }
            Some(secret)
        });
        if let Some(addr) = listen
            && !addr.ip().to_canonical().is_loopback()
            && admin.token.is_none()
        {
            self.bad(
                "admin.token",
                format!(
                    "is required because admin.listen (`{addr}`) is not a loopback address: the admin API serves guests' personal data and replays deliveries, so anyone who can reach it must prove who they are. Set admin.token = {{ file = \"/path\" }} (or {{ env = \"VARIABLE\" }} or {{ credential = \"name\" }}), or listen on \"127.0.0.1:9477\" or \"[::1]:9477\""
                ),
            );
        }
        let mut allowed_hosts = Vec::new();
        for (i, h) in admin
            .allowed_hosts
            .unwrap_or_default()
            .into_iter()
            .enumerate()
        {
            match host_entry(&h) {
                Some(h) => allowed_hosts.push(h),
                None => self.bad(
                    format!("admin.allowed_hosts[{i}]"),
                    format!(
                        "`{h}` is not a host name with an optional port; write it as clients send it in the Host header, e.g. \"pollhook.internal\", \"pollhook.internal:9477\" or \"10.0.0.5:9477\" (no scheme, no path)"
                    ),
                ),
            }
        }
        AdminConfig {
            listen,
            token,
            allowed_hosts,
        }
    }

    /// `[delivery]`: the retry policy, timeouts and concurrency an endpoint gets unless it says
    /// otherwise.
    pub(super) fn delivery(&mut self, d: raw::RawDeliveryDefaults) -> EndpointDefaults {
        let retry = self.retry(
            "delivery",
            d.retry_schedule.as_deref(),
            d.jitter,
            d.retry_after_cap.as_deref(),
            RetryPolicy::default_schedule(),
        );
        let connect = self.positive_duration(
            "delivery.connect_timeout",
            d.connect_timeout.as_deref(),
            Duration::from_secs(5),
        );
        let timeout = self.positive_duration(
            "delivery.timeout",
            d.timeout.as_deref(),
            Duration::from_secs(15),
        );
        let in_flight = d.max_in_flight.unwrap_or(16);
        if in_flight == 0 {
            self.bad("delivery.max_in_flight", "must be at least 1");
        }
        EndpointDefaults {
            retry,
            connect,
            timeout,
            in_flight: in_flight.max(1),
        }
    }
}

/// The shortest `admin.token` accepted.
const MIN_ADMIN_TOKEN_CHARS: usize = 16;

/// An `admin.allowed_hosts` entry as a `Host` header carries it (`name` or `name:port`, an IPv6
/// address in brackets), lowercased; `None` if it is anything else.
fn host_entry(text: &str) -> Option<String> {
    let lower = text.trim().to_ascii_lowercase();
    if lower.is_empty() || lower.contains(['/', '@', '?', '#', ' ']) {
        return None;
    }
    let url = url::Url::parse(&format!("http://{lower}/")).ok()?;
    let host = url.host_str()?;
    let again = match url.port() {
        Some(p) => format!("{host}:{p}"),
        None => host.to_string(),
    };
    // A default port (`:80`) is dropped by the parser; the Host header would carry it as given.
    (again == lower || format!("{again}:80") == lower).then_some(lower)
}

/// "64MiB", "512 KiB", "1GB", "1048576": binary and decimal units, case-insensitive.
fn parse_size(text: &str) -> Option<usize> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: usize = num.parse().ok()?;
    let mult: usize = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" => 1000,
        "kib" => 1024,
        "m" | "mb" => 1000 * 1000,
        "mib" => 1024 * 1024,
        "g" | "gb" => 1000 * 1000 * 1000,
        "gib" => 1024 * 1024 * 1024,
        _ => return None,
    };
    n.checked_mul(mult)
}

#[cfg(test)]
mod tests {
    use super::{host_entry, parse_size};

    #[test]
    fn allowed_host_entries() {
        assert_eq!(
            host_entry("Pollhook.Internal").as_deref(),
            Some("pollhook.internal")
        );
        assert_eq!(
            host_entry("10.0.0.5:9477").as_deref(),
            Some("10.0.0.5:9477")
        );
        assert_eq!(host_entry("[::1]:9477").as_deref(), Some("[::1]:9477"));
        assert_eq!(
            host_entry("example.org:80").as_deref(),
            Some("example.org:80")
        );
        for bad in ["", "http://x", "x/y", "a b", "user@x", "x:99999"] {
            assert_eq!(host_entry(bad), None, "{bad}");
        }
    }

    #[test]
    fn sizes_with_units() {
        assert_eq!(parse_size("64MiB"), Some(64 << 20));
        assert_eq!(parse_size("512 KiB"), Some(512 << 10));
        assert_eq!(parse_size("1GB"), Some(1_000_000_000));
        assert_eq!(parse_size("100"), Some(100));
        assert_eq!(parse_size("lots"), None);
        assert_eq!(parse_size("5 parsecs"), None);
    }
}
