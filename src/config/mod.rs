//! Configuration: loads TOML + `POLLHOOK_` environment overrides with figment into a raw serde
//! layer, then validates it into typed [`Config`] (durations, URLs, schedules, secrets resolved),
//! reporting every problem at once with the key path that caused it.
//!
//! Two layers, as ripgrep does: [`raw`] mirrors the file exactly (`deny_unknown_fields` everywhere),
//! [`Config`] is what the rest of the program uses. Nothing outside this module sees figment.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::Figment;
use figment::providers::{Env, Format as _, Toml};

use crate::outbox::EventKind;

mod auth;
mod endpoint;
mod nats;
pub mod ping;
pub mod raw;
mod secret;
mod select;
mod source;
mod validate;

pub use auth::Auth;
pub use endpoint::{BodyPreset, EndpointConfig, Format};
pub use nats::{NatsAuth, NatsEndpoint};
pub use ping::{
    IdFrom, IngressConfig, PingAuth, PingConfig, PingMethod, PingPreset, SignatureEncoding,
    TokenPlace,
};
pub use secret::Secret;
pub use select::{SelectError, Selection, Shard, shard_of};
pub use source::{
    ArrayStyle, BodyFormat, FirstPoll, Incremental, ItemsShape, Lookup, OnDisappear, PageStop,
    Pagination, ParamIn, ParamValue, Politeness, ResponseFormat, SourceConfig, SourceMethod,
    SuccessCheck, SyncMode, WatermarkFrom,
};

use validate::Validator;

/// The environment variable prefix for overrides; nested keys are separated by `__`
/// (`POLLHOOK_SOURCES__HOTEL__URL` overrides `[sources.hotel] url`).
pub const ENV_PREFIX: &str = "POLLHOOK_";

/// The default `store.cache_size`: redb's page cache. Enough for the delivery queue's hot pages
/// and the tree's upper levels; a full poll reads the compact snapshot rows once, in order, and
/// documents only of changed bookings, so a larger cache buys little there (docs/PERFORMANCE.md)
/// and would stay resident while the daemon idles.
pub const DEFAULT_CACHE_SIZE: usize = 8 * 1024 * 1024;

/// One problem found in the configuration, tied to the key that caused it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Dotted key path, e.g. `sources.hotel.every`.
    pub key: String,
    /// What is wrong and what would be valid.
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.key.is_empty() {
            write!(f, "{}", self.message)
        } else {
            write!(f, "{}: {}", self.key, self.message)
        }
    }
}

/// Why a configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file does not exist or cannot be read.
    #[error("config file {path}: {reason}")]
    Unreadable {
        /// The path given.
        path: PathBuf,
        /// The OS error.
        reason: String,
    },
    /// Syntax, unknown keys, wrong types or invalid values; every problem is listed.
    #[error("config file {}: {} problem(s)\n{}", file.display(), problems.len(), list(problems))]
    Invalid {
        /// The file being loaded.
        file: PathBuf,
        /// Every problem found.
        problems: Vec<Problem>,
    },
}

fn list(problems: &[Problem]) -> String {
    problems
        .iter()
        .map(|p| format!("  - {p}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Validated configuration: everything parsed, resolved and checked.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file it was loaded from (for messages), if any.
    pub file: Option<PathBuf>,
    /// Where the redb file lives.
    pub store_path: PathBuf,
    /// How long delivered history is kept.
    pub retention: Duration,
    /// Memory for redb's page cache, in bytes.
    pub cache_size: usize,
    /// Log output.
    pub log: LogConfig,
    /// Admin listener address; `None` when disabled.
    pub admin_listen: Option<SocketAddr>,
    /// The ingress listener for pings; `None` when off (the default).
    pub ingress: Option<IngressConfig>,
    /// `admin.token`: the bearer token every admin route but `/healthz` requires, if set.
    pub admin_token: Option<Secret>,
    /// `admin.allowed_hosts`: names (lowercase, `host` or `host:port`) accepted in the `Host`
    /// and `Origin` headers of admin requests besides the listen address and loopback names.
    pub admin_allowed_hosts: Vec<String>,
    /// Sources in name order.
    pub sources: Vec<SourceConfig>,
    /// Endpoints in name order.
    pub endpoints: Vec<EndpointConfig>,
    /// Settings that are valid but have no effect (e.g. an `[incremental]` table under
    /// `sync = "full"`): `check` prints them and the daemon logs them.
    pub warnings: Vec<Problem>,
    /// `shard = "N/M"`: this instance polls only the sources of shard N (see [`Config::select`]).
    pub shard: Option<Shard>,
}

/// The `[admin]` table alone: what the operator commands need to reach a running daemon.
#[derive(Debug, Clone, Default)]
pub struct AdminConfig {
    /// `admin.listen`; `None` when switched off.
    pub listen: Option<SocketAddr>,
    /// `admin.token`, if set.
    pub token: Option<Secret>,
    /// `admin.allowed_hosts`, lowercase.
    pub allowed_hosts: Vec<String>,
}

/// Log output settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogConfig {
    /// Output format.
    pub format: LogFormat,
    /// Default filter directive when `RUST_LOG` is unset.
    pub level: String,
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// journald when running under systemd, human text otherwise.
    Auto,
    /// Human-readable text.
    Text,
    /// One JSON object per line.
    Json,
}

impl Config {
    /// Loads `path` plus `POLLHOOK_` environment overrides, then validates.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        if let Err(e) = std::fs::metadata(path) {
            return Err(ConfigError::Unreadable {
                path: path.to_path_buf(),
                reason: e.to_string(),
            });
        }
        let figment = Figment::new()
            .merge(Toml::file_exact(path))
            .merge(Env::prefixed(ENV_PREFIX).split("__"));
        Self::from_figment(figment, Some(path))
    }

    /// Loads only the `[admin]` table of `path` (plus `POLLHOOK_ADMIN__*` overrides) and validates
    /// it, for the commands that call a running daemon's admin API: the rest of the file (sources,
    /// endpoints and their secrets) is neither read into types nor resolved.
    pub fn load_admin(path: &Path) -> Result<AdminConfig, ConfigError> {
        if let Err(e) = std::fs::metadata(path) {
            return Err(ConfigError::Unreadable {
                path: path.to_path_buf(),
                reason: e.to_string(),
            });
        }
        let figment = Figment::new()
            .merge(Toml::file_exact(path))
            .merge(Env::prefixed(ENV_PREFIX).split("__"));
        let invalid = |problems| ConfigError::Invalid {
            file: path.to_path_buf(),
            problems,
        };
        let raw: raw::AdminOnly = figment
            .extract()
            .map_err(|err| invalid(err.into_iter().map(figment_problem).collect()))?;
        let mut v = Validator::default();
        let admin = v.admin(raw.admin);
        if v.problems.is_empty() {
            Ok(admin)
        } else {
            Err(invalid(v.problems))
        }
    }

    /// Validates a configuration given as TOML text (no environment overrides). Used by the demo
    /// and tests; `name` stands in for the file name in messages.
    pub fn from_toml_str(text: &str, name: &str) -> Result<Config, ConfigError> {
        let figment = Figment::new().merge(Toml::string(text));
        Self::from_figment(figment, Some(Path::new(name)))
    }

    fn from_figment(figment: Figment, file: Option<&Path>) -> Result<Config, ConfigError> {
        let file_buf = file.map(Path::to_path_buf).unwrap_or_default();
        let raw: raw::RawConfig = figment.extract().map_err(|err| ConfigError::Invalid {
            file: file_buf.clone(),
            problems: err.into_iter().map(figment_problem).collect(),
        })?;
        let mut v = Validator::default();
        let config = v.config(raw, file);
        match config {
            Some(c) if v.problems.is_empty() => Ok(c),
            _ => Err(ConfigError::Invalid {
                file: file_buf,
                problems: v.problems,
            }),
        }
    }

    /// The endpoints that receive events of `kind` from `source`.
    pub fn routes<'a>(
        &'a self,
        source: &'a str,
        kind: EventKind,
    ) -> impl Iterator<Item = &'a EndpointConfig> + 'a {
        self.endpoints
            .iter()
            .filter(move |e| e.sources.contains(source) && e.events.contains(&kind))
    }

    /// Logs every [`Config::warnings`] entry (after logging is set up).
    pub fn log_warnings(&self) {
        for w in &self.warnings {
            tracing::warn!(key = %w.key, "{}", w.message);
        }
    }

    /// Looks a source up by name.
    pub fn source(&self, name: &str) -> Option<&SourceConfig> {
        self.sources.iter().find(|s| s.name == name)
    }
}

fn figment_problem(e: figment::Error) -> Problem {
    // figment prefixes every path with the profile ("default"); operators never wrote that.
    let path: Vec<&str> = e
        .path
        .iter()
        .map(String::as_str)
        .skip_while(|p| *p == "default")
        .collect();
    // figment quotes the list of expected fields inside backticks of its own:
    // "expected `one of `a`, `b``"; say it plainly.
    let mut message = e
        .kind
        .to_string()
        .replace("expected `one of ", "expected one of ")
        .replace("``", "`");
    if let figment::error::Kind::InvalidType(_, expected)
    | figment::error::Kind::InvalidValue(_, expected) = &e.kind
        && let Some(last) = path.last()
    {
        message.push_str(&format!(
            "; for example: {last} = {}",
            example_value(&path, expected)
        ));
    }
    if let Some(meta) = &e.metadata
        && meta.name.contains("environment")
    {
        message.push_str(" (from an environment variable; values there are parsed as TOML, quote strings like '\"12345\"')");
    }
    Problem {
        key: path.join("."),
        message,
    }
}

/// A valid value for the key at `path`, as TOML, for type errors: from the key when it is a
/// known one, else from the type serde `expected`.
fn example_value(path: &[&str], expected: &str) -> &'static str {
    let key = path.last().copied().unwrap_or_default();
    match key {
        "format" => match path.first().copied() {
            Some("log") => "\"json\"",
            Some("endpoints") => "\"v2\"",
            _ => "\"xml\"",
        },
        "level" => "\"info\"",
        "method" => "\"POST\"",
        "every" | "timeout" | "connect_timeout" | "retry_backoff" | "retry_after_cap"
        | "max_retry_after" | "min_gap" | "resume_within" | "overlap" | "full_every"
        | "failing_after" | "retention" => "\"30s\"",
        "retry_schedule" => "[\"0s\", \"5s\", \"5m\", \"30m\"]",
        "url" | "token_url" => "\"https://api.example.com/bookings\"",
        "cron" => "\"0 9 * * *\"",
        "timezone" => "\"Europe/Berlin\"",
        "listen" => "\"127.0.0.1:9477\"",
        "path" => "\"/var/lib/pollhook/pollhook.redb\"",
        "id" => "\"/id\"",
        "items" => "\"/data\"",
        "status" => "\"/status\"",
        "ignore_fields" | "only_fields" => "[\"/modifiedTime\"]",
        "cancelled_values" => "[\"cancelled\", \"canceled\"]",
        "sources" => "[\"hotel\"]",
        "events" => "[\"new\", \"modify\", \"cancel\"]",
        "allowed_hosts" => "[\"pollhook.internal\"]",
        "jitter" => "0.1",
        "max_disappear_share" => "0.5",
        "cache_size" => "\"64MiB\"",
        "enabled" | "absent" => "true",
        "retries" => "3",
        "max_in_flight" => "4",
        "max_pages" => "1000",
        "max_response_bytes" => "10000000",
        "start" => "1",
        "size" => "100",
        _ => match expected {
            "a boolean" => "true",
            "f32" | "f64" => "0.5",
            "u8" | "u16" | "u32" | "u64" | "usize" | "i8" | "i16" | "i32" | "i64" | "isize" => "10",
            "a sequence" => "[\"a\", \"b\"]",
            e if e.contains("string") => "\"text\"",
            _ => "{ key = \"value\" } (a table)",
        },
    }
}

/// Parses a human duration ("30s", "5m", "1h 30m", "0s").
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s.trim()).map_err(|e| {
        format!("`{s}` is not a duration ({e}); write a number and a unit, e.g. \"30s\", \"5m\", \"1h 30m\"")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problems(text: &str) -> Vec<Problem> {
        match Config::from_toml_str(text, "test.toml") {
            Ok(_) => panic!("expected an error"),
            Err(ConfigError::Invalid { problems, .. }) => problems,
            Err(e) => panic!("unexpected {e}"),
        }
    }

    const MINIMAL: &str = r#"
        [sources.hotel]
        url = "http://127.0.0.1:1/bookings"
        every = "30s"
        [endpoints.crm]
        url = "http://127.0.0.1:2/hook"
    "#;

    #[test]
    fn minimal_config_gets_defaults() {
        let c = Config::from_toml_str(MINIMAL, "t.toml").unwrap();
        let s = &c.sources[0];
        assert_eq!(s.id, vec!["/id"]);
        assert_eq!(s.first_poll, FirstPoll::Baseline);
        assert_eq!(s.on_disappear, OnDisappear::Ignore);
        assert_eq!(s.pagination, Pagination::None);
        let e = &c.endpoints[0];
        assert_eq!(e.format, Format::V2);
        assert_eq!(e.method, reqwest::Method::POST);
        assert_eq!(
            e.retry.schedule,
            crate::retry::RetryPolicy::default_schedule().schedule
        );
        assert_eq!(e.retry.schedule.len(), 8);
        assert!(e.sources.contains("hotel"));
        assert_eq!(e.timeout, Duration::from_secs(15));
        assert_eq!(c.admin_listen, Some("127.0.0.1:9477".parse().unwrap()));
    }

    #[test]
    fn unknown_key_is_named() {
        let p = problems(&format!(
            "{MINIMAL}\n[sources.hotel.pagination]\nstyle = \"page\"\nbogus = 1\n"
        ));
        assert_eq!(p.len(), 1, "{p:?}");
        assert_eq!(p[0].key, "sources.hotel.pagination.bogus");
        assert!(p[0].message.contains("unknown field"), "{}", p[0].message);
    }

    #[test]
    fn wrong_type_is_named() {
        let p = problems(&MINIMAL.replace(
            "[endpoints.crm]",
            "[endpoints.crm]\nmax_in_flight = \"ten\"",
        ));
        assert_eq!(p[0].key, "endpoints.crm.max_in_flight");
    }

    #[test]
    fn all_value_problems_are_reported_at_once() {
        let text = r#"
            [sources.hotel]
            url = "ftp://x"
            every = "3 parsecs"
            items = "data"
            on_disappear = "explode"
            [endpoints.crm]
            url = "http://127.0.0.1/"
            format = "v3"
            sources = ["nope"]
            events = ["created"]
            retry_schedule = ["1s", "soon"]
            jitter = 2.0
        "#;
        let p = problems(text);
        let keys: Vec<&str> = p.iter().map(|p| p.key.as_str()).collect();
        for k in [
            "sources.hotel.url",
            "sources.hotel.every",
            "sources.hotel.items",
            "sources.hotel.on_disappear",
            "endpoints.crm.format",
            "endpoints.crm.sources",
            "endpoints.crm.events",
            "endpoints.crm.retry_schedule[1]",
            "endpoints.crm.jitter",
        ] {
            assert!(keys.contains(&k), "missing {k} in {keys:?}");
        }
        assert!(p.iter().all(|p| !p.message.is_empty()));
    }

    #[test]
    fn bad_cron_names_the_key() {
        let p = problems(&MINIMAL.replace("every = \"30s\"", "cron = \"61 * * * *\""));
        assert_eq!(p[0].key, "sources.hotel.cron");
        let p = problems(&MINIMAL.replace(
            "every = \"30s\"",
            "cron = \"0 9 * * *\"\ntimezone = \"Mars/Olympus\"",
        ));
        assert_eq!(p[0].key, "sources.hotel.timezone");
    }

    #[test]
    fn secrets_come_from_files_and_are_never_printed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secret");
        std::fs::write(&path, "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\n").unwrap();
        let text = MINIMAL.replace(
            "[endpoints.crm]",
            &format!(
                "[endpoints.crm]\nsecrets = [{{ file = {:?} }}]",
                path.display().to_string()
            ),
        );
        let c = Config::from_toml_str(&text, "t.toml").unwrap();
        assert_eq!(c.endpoints[0].keys.len(), 1);
        assert!(!format!("{c:?}").contains("MfKQ9r8"));

        let missing = MINIMAL.replace(
            "[endpoints.crm]",
            "[endpoints.crm]\nsecrets = [{ file = \"/nonexistent/pollhook-secret\" }]",
        );
        let p = problems(&missing);
        assert_eq!(p[0].key, "endpoints.crm.secrets[0]");
        assert!(p[0].message.contains("/nonexistent/pollhook-secret"));

        let two = MINIMAL.replace(
            "[endpoints.crm]",
            "[endpoints.crm]\nsecrets = [{ file = \"/a\", env = \"B\" }]",
        );
        assert!(problems(&two)[0].message.contains("exactly one"));
    }

    #[test]
    fn bad_secret_contents_do_not_leak() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secret");
        std::fs::write(&path, "hunter2-not-base64!").unwrap();
        let text = MINIMAL.replace(
            "[endpoints.crm]",
            &format!(
                "[endpoints.crm]\nsecrets = [{{ file = {:?} }}]",
                path.display().to_string()
            ),
        );
        let p = problems(&text);
        assert!(p.iter().all(|p| !p.message.contains("hunter2")), "{p:?}");
    }

    #[test]
    fn missing_file_is_reported_with_its_path() {
        let e = Config::load(Path::new("/nonexistent/pollhook.toml")).unwrap_err();
        assert!(e.to_string().contains("/nonexistent/pollhook.toml"), "{e}");
    }

    #[test]
    fn no_sources_is_an_error() {
        let p = problems("[admin]\nlisten = \"off\"\n");
        assert_eq!(p[0].key, "sources");
    }

    #[test]
    fn template_names_must_exist() {
        let p = problems(&MINIMAL.replace(
            "every = \"30s\"",
            "every = \"30s\"\nsecrets = { key = { env = \"PATH\" } }\nquery = { a = \"{{ secret.key }}\", b = \"{{ secret.kye }}\" }",
        ));
        assert_eq!(p.len(), 1, "{p:?}");
        assert_eq!(p[0].key, "sources.hotel.query.b");
        assert!(
            p[0].message.contains("no secret `kye`") && p[0].message.contains("key"),
            "{}",
            p[0].message
        );
        let text = MINIMAL.replace(
            "[endpoints.crm]",
            "[endpoints.crm]\nbody = { a = \"{{ event.idd }}\", b = \"{{ beds24.NOPE }}\", c = \"{{ booking }}\" }",
        );
        assert_ne!(text, MINIMAL);
        let p = problems(&text);
        let keys: Vec<&str> = p.iter().map(|p| p.key.as_str()).collect();
        assert_eq!(keys, ["endpoints.crm.body", "endpoints.crm.body"], "{p:?}");
        assert!(p[0].message.contains("event.idd"), "{}", p[0].message);
    }

    #[test]
    fn bodies_need_post_and_incremental_needs_the_watermark() {
        let inc = MINIMAL.replace(
            "every = \"30s\"",
            "every = \"30s\"\nsync = \"incremental\"\n[sources.hotel.incremental]\nquery = { since = \"{{ now }}\" }\nbody = { x = \"{{ watermark }}\" }",
        );
        let p = problems(&inc);
        let keys: Vec<&str> = p.iter().map(|p| p.key.as_str()).collect();
        assert_eq!(
            keys,
            ["sources.hotel.incremental.body"],
            "the body uses the watermark, but GET has no body: {p:?}"
        );
        let p = problems(&inc.replace("body = { x = \"{{ watermark }}\" }", ""));
        assert_eq!(p[0].key, "sources.hotel.incremental.query");
        assert!(p[0].message.contains("watermark"));
        let p = problems(&MINIMAL.replace(
            "every = \"30s\"",
            "every = \"30s\"\nheaders = { \"bad header\" = \"x\" }",
        ));
        assert_eq!(p[0].key, "sources.hotel.headers.bad header");
    }

    #[test]
    fn full_sync_ignores_an_incremental_table_with_a_warning() {
        let text = MINIMAL.replace(
            "every = \"30s\"",
            "every = \"30s\"\nsync = \"full\"\non_disappear = \"cancel\"\n[sources.hotel.incremental]\nquery = { since = \"{{ watermark }}\" }",
        );
        let c = Config::from_toml_str(&text, "t.toml").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.sources[0].sync, SyncMode::Full);
        assert!(c.sources[0].incremental.is_none());
        assert_eq!(c.warnings.len(), 1, "{:?}", c.warnings);
        assert_eq!(c.warnings[0].key, "sources.hotel.incremental");
        assert!(c.warnings[0].message.contains("ignored"));
        // The table is still checked: a broken one is a problem, not a warning.
        let p = problems(&text.replace("{{ watermark }}", "{{ watermark | isoo }}"));
        assert_eq!(p[0].key, "sources.hotel.incremental.query.since", "{p:?}");
        assert!(
            Config::from_toml_str(MINIMAL, "t.toml")
                .unwrap()
                .warnings
                .is_empty()
        );
    }

    #[test]
    fn a_token_refresh_login_url_defaults_to_the_beds24_layout_beside_the_source_url() {
        let login = |auth: &str| {
            let text = format!(
                "[sources.b]\nurl = \"https://beds24.com/api/v2/bookings?x=1\"\nevery = \"1m\"\nauth = {{ type = \"token_refresh\", secret = {{ env = \"PATH\" }}{auth} }}\n"
            );
            match Config::from_toml_str(&text, "t.toml") {
                Ok(c) => match &c.sources[0].auth {
                    Auth::TokenRefresh { token_url, .. } => token_url.to_string(),
                    other => panic!("{other:?}"),
                },
                Err(e) => panic!("{e}"),
            }
        };
        assert_eq!(login(""), "https://beds24.com/api/v2/authentication/token");
        assert_eq!(
            login(", token_url = \"https://login.example.com/token\""),
            "https://login.example.com/token",
            "an explicit token_url wins"
        );
    }

    #[test]
    fn an_admin_listener_off_loopback_needs_a_token() {
        let open = MINIMAL.to_string() + "[admin]\nlisten = \"0.0.0.0:9477\"\n";
        let p = problems(&open);
        assert_eq!(p.len(), 1, "{p:?}");
        assert_eq!(p[0].key, "admin.token");
        assert!(p[0].message.contains("loopback"), "{}", p[0].message);
        let dir = tempfile::tempdir().unwrap();
        let token = dir.path().join("token");
        std::fs::write(&token, "0123456789abcdef0123456789abcdef\n").unwrap();
        let guarded = format!(
            "{open}token = {{ file = {:?} }}\nallowed_hosts = [\"Pollhook.Internal:9477\"]\n",
            token.display().to_string()
        );
        let c = Config::from_toml_str(&guarded, "t.toml").unwrap();
        assert_eq!(
            c.admin_token.as_ref().map(Secret::expose),
            Some("0123456789abcdef0123456789abcdef")
        );
        assert_eq!(c.admin_allowed_hosts, ["pollhook.internal:9477"]);
        // A loopback listener needs none; IPv4-mapped loopback counts as loopback.
        for lo in [
            "127.0.0.1:9477",
            "[::1]:9477",
            "[::ffff:127.0.0.1]:9477",
            "off",
        ] {
            let text = format!("{MINIMAL}[admin]\nlisten = \"{lo}\"\n");
            assert!(Config::from_toml_str(&text, "t.toml").is_ok(), "{lo}");
        }
        let p = problems(&format!(
            "{MINIMAL}[admin]\nallowed_hosts = [\"http://x/\"]\n"
        ));
        assert_eq!(p[0].key, "admin.allowed_hosts[0]");
    }

    #[test]
    fn load_admin_reads_only_the_admin_table() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.toml");
        // Sources and endpoints that would not validate (a secret nobody set) do not matter.
        std::fs::write(
            &path,
            "[admin]\nlisten = \"[::1]:9000\"\n[endpoints.crm]\nsecrets = [{ env = \"POLLHOOK_UNIT_TEST_UNSET\" }]\n",
        )
        .unwrap();
        let a = Config::load_admin(&path).unwrap();
        assert_eq!(a.listen, Some("[::1]:9000".parse().unwrap()));
        assert!(a.token.is_none());
        std::fs::write(&path, "[sources.x]\nurl = 1\n").unwrap();
        let a = Config::load_admin(&path).unwrap();
        assert_eq!(
            a.listen,
            Some("127.0.0.1:9477".parse().unwrap()),
            "the default"
        );
        std::fs::write(&path, "[admin]\nlisten = \"nowhere\"\nbogus = 1\n").unwrap();
        let Err(ConfigError::Invalid { problems, .. }) = Config::load_admin(&path) else {
            panic!("expected problems")
        };
        let keys: Vec<&str> = problems.iter().map(|p| p.key.as_str()).collect();
        assert_eq!(keys, ["admin.bogus"], "{problems:?}");
    }

    #[test]
    fn names_must_be_env_friendly() {
        let p = problems(
            &MINIMAL
                .replace("[sources.hotel]", "[sources.Hotel]")
                .replace(
                    "[endpoints.crm]\n",
                    "[endpoints.crm]\nsources = [\"Hotel\"]\n",
                ),
        );
        assert_eq!(p[0].key, "sources.Hotel");
    }
}
