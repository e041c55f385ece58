//! Validation: turns the raw layer into typed [`Config`], collecting every problem with the key
//! path that caused it and what would be valid. Secrets are resolved here.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use url::Url;

use super::*;
use crate::outbox::EventKind;
use crate::retry::RetryPolicy;
use crate::schedule::Schedule;
use crate::signing::SigningKey;
use crate::template::Template;

const NAME_HINT: &str = "names may contain only lowercase letters, digits, `_` and `-`, and must start with a letter (so `POLLHOOK_` environment overrides can reach them)";

#[derive(Default)]
pub(super) struct Validator {
    pub(super) problems: Vec<Problem>,
    /// Secret names the source being validated defines (for `{{ secret.NAME }}`).
    secret_names: BTreeSet<String>,
    /// Variable names the endpoint being validated defines (for `{{ beds24.NAME }}`).
    variable_names: BTreeSet<String>,
}

impl Validator {
    fn bad(&mut self, key: impl Into<String>, message: impl Into<String>) {
        self.problems.push(Problem {
            key: key.into(),
            message: message.into(),
        });
    }

    fn duration(&mut self, key: &str, value: Option<&str>, default: Duration) -> Duration {
        match value {
            None => default,
            Some(s) => match parse_duration(s) {
                Ok(d) => d,
                Err(m) => {
                    self.bad(key, m);
                    default
                }
            },
        }
    }

    fn positive_duration(&mut self, key: &str, value: Option<&str>, default: Duration) -> Duration {
        let d = self.duration(key, value, default);
        if d.is_zero() {
            self.bad(key, "must be greater than zero");
            return default;
        }
        d
    }

    fn pointer(&mut self, key: &str, p: &str) {
        if !(p.is_empty() || p.starts_with('/')) {
            self.bad(
                key,
                format!(
                    "`{p}` is not a JSON Pointer (RFC 6901): it must be empty (the whole document) or start with `/`, e.g. \"/data\" or \"/booking/id\""
                ),
            );
        }
    }

    fn url(&mut self, key: &str, value: Option<&str>) -> Option<Url> {
        let Some(s) = value else {
            self.bad(key, "is required: the http:// or https:// URL");
            return None;
        };
        match Url::parse(s) {
            Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => Some(u),
            Ok(_) => {
                self.bad(
                    key,
                    format!("`{s}` must be an http:// or https:// URL with a host"),
                );
                None
            }
            Err(e) => {
                self.bad(key, format!("`{s}` is not a valid URL ({e})"));
                None
            }
        }
    }

    fn name(&mut self, key: &str, name: &str) {
        let ok = name.chars().next().is_some_and(|c| c.is_ascii_lowercase())
            && name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-');
        if !ok {
            self.bad(key, format!("`{name}`: {NAME_HINT}"));
        }
    }

    fn secret(&mut self, key: &str, raw: &raw::RawSecret) -> Option<Secret> {
        let set = [
            raw.file.is_some(),
            raw.env.is_some(),
            raw.credential.is_some(),
        ]
        .iter()
        .filter(|b| **b)
        .count();
        if set != 1 {
            self.bad(
                key,
                "a secret is given as exactly one of { file = \"/path\" }, { env = \"VARIABLE\" } or { credential = \"name\" } (a systemd LoadCredential= name)",
            );
            return None;
        }
        let value = if let Some(path) = &raw.file {
            match std::fs::read_to_string(path) {
                Ok(s) => s,
                Err(e) => {
                    self.bad(
                        key,
                        format!("cannot read secret file {}: {e}", path.display()),
                    );
                    return None;
                }
            }
        } else if let Some(var) = &raw.env {
            match std::env::var(var) {
                Ok(s) => s,
                Err(_) => {
                    self.bad(
                        key,
                        format!("environment variable {var} is not set (or not UTF-8)"),
                    );
                    return None;
                }
            }
        } else if let Some(name) = &raw.credential {
            let Some(dir) = std::env::var_os("CREDENTIALS_DIRECTORY") else {
                self.bad(
                    key,
                    format!(
                        "credential `{name}` needs CREDENTIALS_DIRECTORY, which systemd sets for LoadCredential=; it is not set"
                    ),
                );
                return None;
            };
            let path = Path::new(&dir).join(name);
            match std::fs::read_to_string(&path) {
                Ok(s) => s,
                Err(e) => {
                    self.bad(
                        key,
                        format!("cannot read credential {}: {e}", path.display()),
                    );
                    return None;
                }
            }
        } else {
            return None;
        };
        let value = value.trim_end_matches(['\r', '\n']).to_string();
        if value.is_empty() {
            self.bad(key, "the secret is empty");
            return None;
        }
        Some(Secret(value))
    }

    pub(super) fn config(&mut self, raw: raw::RawConfig, file: Option<&Path>) -> Option<Config> {
        let store_path = raw.store.path.unwrap_or_else(|| {
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
            raw.store.retention.as_deref(),
            Duration::from_secs(30 * 86400),
        );

        let format = match raw.log.format.as_deref() {
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
        let level = raw.log.level.unwrap_or_else(|| "info".into());
        if tracing_subscriber::EnvFilter::try_new(&level).is_err() {
            self.bad(
                "log.level",
                format!("`{level}` is not a log filter; use e.g. \"info\", \"debug\" or \"pollhook=debug,info\""),
            );
        }

        let admin_listen = match raw.admin.listen.as_deref() {
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

        if raw.sources.is_empty() {
            self.bad(
                "sources",
                "no source configured; add a [sources.NAME] table with at least `url` and `every` or `cron`",
            );
        }
        let mut sources = Vec::new();
        for (name, rs) in raw.sources {
            if let Some(s) = self.source(&name, rs) {
                sources.push(s);
            }
        }

        let d = raw.delivery;
        let default_retry = self.retry(
            "delivery",
            d.retry_schedule.as_deref(),
            d.jitter,
            d.retry_after_cap.as_deref(),
            RetryPolicy::default_schedule(),
        );
        let default_connect = self.positive_duration(
            "delivery.connect_timeout",
            d.connect_timeout.as_deref(),
            Duration::from_secs(5),
        );
        let default_timeout = self.positive_duration(
            "delivery.timeout",
            d.timeout.as_deref(),
            Duration::from_secs(15),
        );
        let default_in_flight = d.max_in_flight.unwrap_or(16);
        if default_in_flight == 0 {
            self.bad("delivery.max_in_flight", "must be at least 1");
        }

        let source_names: BTreeSet<String> = sources.iter().map(|s| s.name.clone()).collect();
        let mut endpoints = Vec::new();
        for (name, re) in raw.endpoints {
            let defaults = EndpointDefaults {
                retry: default_retry.clone(),
                connect: default_connect,
                timeout: default_timeout,
                in_flight: default_in_flight.max(1),
            };
            if let Some(e) = self.endpoint(&name, re, &source_names, defaults) {
                endpoints.push(e);
            }
        }

        Some(Config {
            file: file.map(Path::to_path_buf),
            store_path,
            retention,
            log: LogConfig { format, level },
            admin_listen,
            sources,
            endpoints,
        })
    }

    fn retry(
        &mut self,
        prefix: &str,
        schedule: Option<&[String]>,
        jitter: Option<f64>,
        cap: Option<&str>,
        default: RetryPolicy,
    ) -> RetryPolicy {
        let mut policy = default;
        if let Some(list) = schedule {
            let key = format!("{prefix}.retry_schedule");
            if list.is_empty() {
                self.bad(
                    &key,
                    "needs at least one entry (the delay before the first attempt, usually \"0s\")",
                );
            } else {
                let mut delays = Vec::new();
                for (i, s) in list.iter().enumerate() {
                    match parse_duration(s) {
                        Ok(d) => delays.push(d),
                        Err(m) => self.bad(format!("{key}[{i}]"), m),
                    }
                }
                if delays.len() == list.len() {
                    policy.schedule = delays;
                }
            }
        }
        if let Some(j) = jitter {
            if (0.0..=1.0).contains(&j) {
                policy.jitter = j;
            } else {
                self.bad(
                    format!("{prefix}.jitter"),
                    format!("{j} is out of range; use a share between 0.0 and 1.0 (0.2 = ±20%)"),
                );
            }
        }
        if let Some(c) = cap {
            policy.retry_after_cap = self.duration(
                &format!("{prefix}.retry_after_cap"),
                Some(c),
                policy.retry_after_cap,
            );
        }
        policy
    }

    fn template(&mut self, key: &str, text: &str, allowed: &[&str]) -> Option<Template> {
        match Template::parse(text).and_then(|t| t.check_names(allowed).map(|()| t)) {
            Ok(t) => {
                self.known_names(key, &t.names());
                Some(t)
            }
            Err(e) => {
                self.bad(key, e.to_string());
                None
            }
        }
    }

    /// Dotted names must exist, not merely have an allowed root: `{{ secret.typo }}` would
    /// otherwise send an empty value.
    fn known_names(&mut self, key: &str, names: &[String]) {
        for n in names {
            if let Some(s) = n.strip_prefix("secret.") {
                if !self.secret_names.contains(s) {
                    let known: Vec<&str> = self.secret_names.iter().map(String::as_str).collect();
                    self.bad(key, format!("`{{{{ {n} }}}}`: no secret `{s}` in this source's `secrets` table (defined: {})", if known.is_empty() { "none".into() } else { known.join(", ") }));
                }
            } else if n == "secret" {
                self.bad(key, "`{{ secret }}` needs a name: `{{ secret.NAME }}`");
            } else if let Some(e) = n.strip_prefix("event.") {
                if !crate::template::names::EVENT_NAMES.contains(&e) {
                    self.bad(
                        key,
                        format!(
                            "`{{{{ {n} }}}}` is not an event field; use one of: {}",
                            crate::template::names::EVENT_NAMES
                                .iter()
                                .map(|f| format!("event.{f}"))
                                .collect::<Vec<_>>()
                                .join(", ")
                        ),
                    );
                }
            } else if let Some(v) = n.strip_prefix("beds24.")
                && !self.variable_names.contains(v)
            {
                self.bad(key, format!("`{{{{ {n} }}}}`: unknown variable `{v}`; add it to `variables` with the JSON Pointer it reads"));
            }
        }
    }

    fn params(
        &mut self,
        key: &str,
        raw: &BTreeMap<String, serde_json::Value>,
        allowed: &[&str],
    ) -> Vec<(String, ParamValue)> {
        let mut out = Vec::new();
        for (name, v) in raw {
            let key = format!("{key}.{name}");
            let scalar = |v: &serde_json::Value| crate::json::scalar_string(v);
            match v {
                serde_json::Value::Array(items) => {
                    let mut ts = Vec::new();
                    for (i, item) in items.iter().enumerate() {
                        match scalar(item) {
                            Some(s) => {
                                if let Some(t) = self.template(&format!("{key}[{i}]"), &s, allowed)
                                {
                                    ts.push(t);
                                }
                            }
                            None => self.bad(
                                format!("{key}[{i}]"),
                                "list items must be strings, numbers or booleans",
                            ),
                        }
                    }
                    out.push((name.clone(), ParamValue::Many(ts)));
                }
                other => match scalar(other) {
                    Some(s) => {
                        if let Some(t) = self.template(&key, &s, allowed) {
                            out.push((name.clone(), ParamValue::One(t)));
                        }
                    }
                    None => self.bad(key, "must be a string, number, boolean or a list of them"),
                },
            }
        }
        out
    }

    fn body(&mut self, key: &str, body: serde_json::Value, allowed: &[&str]) -> serde_json::Value {
        if !body.is_object() {
            self.bad(key, "must be a table (a JSON object)");
        }
        match crate::template::TemplateTree::parse(&body) {
            Ok(tree) => match tree.check_names(allowed) {
                Ok(()) => self.known_names(key, &tree.names()),
                Err(e) => self.bad(key, e.to_string()),
            },
            Err(e) => self.bad(key, e.to_string()),
        }
        body
    }

    /// An endpoint URL, possibly with `{{ ... }}` placeholders or Beds24 `[NAME]` variables. The
    /// scheme, host and port must be literal, so no value can redirect a delivery elsewhere.
    fn endpoint_url(
        &mut self,
        key: &str,
        text: Option<&str>,
        variables: &BTreeMap<String, String>,
    ) -> (Option<Url>, Option<Template>) {
        let Some(text) = text else {
            self.bad(key, "is required: the http:// or https:// URL");
            return (None, None);
        };
        let converted = crate::template::from_beds24_brackets(text, &|n| variables.contains_key(n));
        if !converted.contains("{{") {
            return (self.url(key, Some(text)), None);
        }
        let template = match Template::parse(&converted)
            .and_then(|t| t.check_names(crate::template::names::DELIVERY_NAMES).map(|()| t))
        {
            Ok(t) => {
                self.known_names(key, &t.names());
                t
            }
            Err(e) => {
                self.bad(key, e.to_string());
                return (None, None);
            }
        };
        let authority_end = converted
            .find("://")
            .map(|i| i + 3)
            .and_then(|start| converted[start..].find(['/', '?', '#']).map(|j| start + j))
            .unwrap_or(converted.len());
        if converted[..authority_end].contains("{{") {
            self.bad(key, "placeholders may appear in the path and query only, never in the scheme, host or port");
            return (None, None);
        }
        // Validate the literal shape with placeholders filled in.
        let mut sample = String::new();
        let mut rest = converted.as_str();
        while let Some(i) = rest.find("{{") {
            sample.push_str(&rest[..i]);
            sample.push('x');
            rest = rest[i..]
                .find("}}")
                .map(|j| &rest[i + j + 2..])
                .unwrap_or("");
        }
        sample.push_str(rest);
        (self.url(key, Some(&sample)), Some(template))
    }

    fn source(&mut self, name: &str, rs: raw::RawSource) -> Option<SourceConfig> {
        let k = |f: &str| format!("sources.{name}.{f}");
        self.name(&format!("sources.{name}"), name);
        let url = self.url(&k("url"), rs.url.as_deref());

        let tz = rs.timezone.as_deref().unwrap_or("UTC");
        let schedule = match (rs.every.as_deref(), rs.cron.as_deref()) {
            (Some(_), Some(_)) => {
                self.bad(k("every"), "give either `every` or `cron`, not both");
                None
            }
            (None, None) => {
                self.bad(
                    k("every"),
                    "a schedule is required: `every = \"30s\"` or `cron = \"*/5 * * * *\"`",
                );
                None
            }
            (Some(e), None) => match parse_duration(e) {
                Ok(d) => match Schedule::every(d) {
                    Ok(s) => Some(s),
                    Err(err) => {
                        self.bad(k("every"), err.to_string());
                        None
                    }
                },
                Err(m) => {
                    self.bad(k("every"), m);
                    None
                }
            },
            (None, Some(c)) => match Schedule::cron(c, tz) {
                Ok(s) => Some(s),
                Err(err) => {
                    let key = if matches!(err, crate::schedule::ScheduleError::UnknownTimeZone(_)) {
                        k("timezone")
                    } else {
                        k("cron")
                    };
                    self.bad(key, err.to_string());
                    None
                }
            },
        };
        let tz: chrono_tz::Tz = match tz.parse() {
            Ok(t) => t,
            Err(_) => {
                if rs.cron.is_none() {
                    self.bad(k("timezone"), format!("unknown time zone `{tz}`: use an IANA zone name such as `UTC` or `Europe/London`"));
                }
                chrono_tz::UTC
            }
        };
        let method = match rs.method.as_deref().map(str::to_ascii_uppercase).as_deref() {
            None | Some("GET") => SourceMethod::Get,
            Some("POST") => SourceMethod::Post,
            Some(o) => {
                self.bad(
                    k("method"),
                    format!("`{o}` is not valid; use \"GET\" or \"POST\""),
                );
                SourceMethod::Get
            }
        };
        let format = match rs.format.as_deref() {
            None | Some("json") => ResponseFormat::Json,
            Some("xml") => ResponseFormat::Xml,
            Some(o) => {
                self.bad(
                    k("format"),
                    format!("`{o}` is not valid; use \"json\" or \"xml\""),
                );
                ResponseFormat::Json
            }
        };
        self.secret_names = rs.secrets.keys().cloned().collect();
        let mut secrets = BTreeMap::new();
        for (n, raw) in &rs.secrets {
            if let Some(v) = self.secret(&format!("{}.{n}", k("secrets")), raw) {
                secrets.insert(n.clone(), v);
            }
        }
        let base_names: &[&str] = &[
            "now", "today", "secret", "page", "offset", "limit", "cursor",
        ];
        let query = self.params(&k("query"), &rs.query, base_names);
        let array_style = match rs.array_style.as_deref() {
            None | Some("repeat") => ArrayStyle::Repeat,
            Some("brackets") => ArrayStyle::Brackets,
            Some("comma") => ArrayStyle::Comma,
            Some(o) => {
                self.bad(k("array_style"), format!("`{o}` is not valid; use \"repeat\" (a=1&a=2), \"brackets\" (a[]=1&a[]=2) or \"comma\" (a=1,2)"));
                ArrayStyle::Repeat
            }
        };
        let body = rs.body.map(|b| self.body(&k("body"), b, base_names));
        if body.is_some() && method == SourceMethod::Get {
            self.bad(k("body"), "a body needs method = \"POST\"");
        }
        let body_format = match rs.body_format.as_deref() {
            None | Some("json") => BodyFormat::Json,
            Some("form") => BodyFormat::Form,
            Some(o) => {
                self.bad(
                    k("body_format"),
                    format!("`{o}` is not valid; use \"json\" or \"form\""),
                );
                BodyFormat::Json
            }
        };
        let items_shape = match rs.items_shape.as_deref() {
            None | Some("list") => ItemsShape::List,
            Some("keyed") => ItemsShape::Keyed,
            Some(o) => {
                self.bad(k("items_shape"), format!("`{o}` is not valid; use \"list\" (an array) or \"keyed\" (an object keyed by id)"));
                ItemsShape::List
            }
        };
        let success = rs.success.and_then(|sc| {
            let key = k("success");
            self.pointer(&format!("{key}.pointer"), &sc.pointer);
            match (sc.equals, sc.not_equals, sc.absent) {
                (Some(v), None, None) => Some(SuccessCheck::Equals(sc.pointer, v)),
                (None, Some(v), None) => Some(SuccessCheck::NotEquals(sc.pointer, v)),
                (None, None, Some(true)) => Some(SuccessCheck::Absent(sc.pointer)),
                _ => {
                    self.bad(key, "give `pointer` and exactly one of `equals = <value>`, `not_equals = <value>` or `absent = true`");
                    None
                }
            }
        });
        let sync = match rs.sync.as_deref() {
            None | Some("full") => SyncMode::Full,
            Some("incremental") => SyncMode::Incremental,
            Some(o) => {
                self.bad(
                    k("sync"),
                    format!("`{o}` is not valid; use \"full\" or \"incremental\""),
                );
                SyncMode::Full
            }
        };
        let incremental = match (sync, rs.incremental) {
            (SyncMode::Incremental, Some(inc)) => {
                let names: &[&str] = &[
                    "now",
                    "today",
                    "watermark",
                    "secret",
                    "page",
                    "offset",
                    "limit",
                    "cursor",
                ];
                let key = k("incremental");
                let query = self.params(&format!("{key}.query"), &inc.query, names);
                let body = inc
                    .body
                    .map(|b| self.body(&format!("{key}.body"), b, names));
                let uses_watermark = query.iter().any(|(_, v)| param_uses(v, "watermark"))
                    || body.as_ref().is_some_and(|b| tree_uses(b, "watermark"));
                if !uses_watermark {
                    self.bad(format!("{key}.query"), "an incremental source needs a parameter using {{ watermark }}, e.g. modifiedFrom = \"{{ watermark | %Y-%m-%dT%H:%M:%S }}\"");
                }
                let overlap = self.duration(
                    &format!("{key}.overlap"),
                    inc.overlap.as_deref(),
                    Duration::from_secs(600),
                );
                let full_every = inc.full_every.as_deref().map(|f| {
                    self.positive_duration(
                        &format!("{key}.full_every"),
                        Some(f),
                        Duration::from_secs(86400),
                    )
                });
                Some(Incremental {
                    query,
                    body,
                    overlap,
                    full_every,
                })
            }
            (SyncMode::Incremental, None) => {
                self.bad(k("incremental"), "sync = \"incremental\" needs an [incremental] table with the watermark parameter, e.g. query = { modifiedFrom = \"{{ watermark | iso }}\" }");
                None
            }
            (SyncMode::Full, Some(_)) => {
                self.bad(k("incremental"), "only applies with sync = \"incremental\"");
                None
            }
            (SyncMode::Full, None) => None,
        };
        let min_gap = self.duration(&k("min_gap"), rs.min_gap.as_deref(), Duration::ZERO);
        let retries = rs.retries.unwrap_or(3);
        if retries > 10 {
            self.bad(
                k("retries"),
                "at most 10 (a failed cycle is retried at the next tick anyway)",
            );
        }
        let politeness = Politeness {
            min_gap,
            retries: retries.min(10),
            retry_backoff: self.duration(
                &k("retry_backoff"),
                rs.retry_backoff.as_deref(),
                Duration::from_secs(1),
            ),
            max_retry_after: self.duration(
                &k("max_retry_after"),
                rs.max_retry_after.as_deref(),
                Duration::from_secs(300),
            ),
            remaining_headers: rs.rate_limit_remaining_headers.clone(),
            reset_headers: rs.rate_limit_reset_headers.clone(),
        };

        let auth = match rs.auth {
            None => Auth::None,
            Some(a) => self.auth(
                &k("auth"),
                a,
                &[
                    "none",
                    "header",
                    "query",
                    "basic",
                    "bearer",
                    "oauth2",
                    "token_refresh",
                ],
            )?,
        };

        let items = rs.items.unwrap_or_default();
        self.pointer(&k("items"), &items);
        let id = match rs.id {
            None => vec!["/id".to_string()],
            Some(raw::OneOrMany::One(s)) => vec![s],
            Some(raw::OneOrMany::Many(v)) => v,
        };
        if id.is_empty() {
            self.bad(k("id"), "needs at least one JSON Pointer, e.g. \"/id\"");
        }
        for (i, p) in id.iter().enumerate() {
            if p.is_empty() {
                self.bad(
                    format!("{}[{i}]", k("id")),
                    "must point inside the booking, e.g. \"/id\"",
                );
            }
            self.pointer(&k("id"), p);
        }
        if let Some(p) = &rs.status {
            self.pointer(&k("status"), p);
        }
        let cancelled_values = rs
            .cancelled_values
            .unwrap_or_else(|| vec!["cancelled".into(), "canceled".into()]);
        for p in rs.ignore_fields.iter() {
            self.pointer(&k("ignore_fields"), p);
        }
        for p in rs.only_fields.iter() {
            self.pointer(&k("only_fields"), p);
        }
        if !rs.ignore_fields.is_empty() && !rs.only_fields.is_empty() {
            self.bad(
                k("only_fields"),
                "give either `ignore_fields` or `only_fields`, not both",
            );
        }

        let first_poll = match rs.first_poll.as_deref() {
            None | Some("baseline") => FirstPoll::Baseline,
            Some("emit_new") => FirstPoll::EmitNew,
            Some(o) => {
                self.bad(
                    k("first_poll"),
                    format!("`{o}` is not valid; use \"baseline\" or \"emit_new\""),
                );
                FirstPoll::Baseline
            }
        };
        let on_disappear = match rs.on_disappear.as_deref() {
            None | Some("ignore") => OnDisappear::Ignore,
            Some("cancel") => OnDisappear::Cancel,
            Some("lookup") => OnDisappear::Lookup,
            Some(o) => {
                self.bad(
                    k("on_disappear"),
                    format!("`{o}` is not valid; use \"ignore\", \"cancel\" or \"lookup\""),
                );
                OnDisappear::Ignore
            }
        };
        let lookup = match (on_disappear, rs.lookup) {
            (OnDisappear::Lookup, Some(l)) => {
                let key = k("lookup");
                let names: &[&str] = &["now", "today", "id", "secret"];
                let lookup_url = match l.url.as_deref() {
                    Some(u) => self.url(&format!("{key}.url"), Some(u)),
                    None => url.clone(),
                };
                let query = self.params(&format!("{key}.query"), &l.query, names);
                let body = l.body.map(|b| self.body(&format!("{key}.body"), b, names));
                let uses_id = query.iter().any(|(_, v)| param_uses(v, "id"))
                    || body.as_ref().is_some_and(|b| tree_uses(b, "id"));
                if !uses_id {
                    self.bad(
                        format!("{key}.query"),
                        "the lookup must send the booking id, e.g. query = { id = \"{{ id }}\" }",
                    );
                }
                let items = l.items.unwrap_or_else(|| items.clone());
                self.pointer(&format!("{key}.items"), &items);
                lookup_url.map(|url| Lookup {
                    url,
                    query,
                    body,
                    items,
                })
            }
            (OnDisappear::Lookup, None) => {
                self.bad(k("lookup"), "on_disappear = \"lookup\" needs a [lookup] table, e.g. query = { id = \"{{ id }}\" }");
                None
            }
            (_, Some(_)) => {
                self.bad(k("lookup"), "only applies with on_disappear = \"lookup\"");
                None
            }
            (_, None) => None,
        };
        if on_disappear != OnDisappear::Ignore
            && incremental.as_ref().is_some_and(|i| i.full_every.is_none())
        {
            self.bad(k("on_disappear"), "an incremental poll cannot see disappearances; set incremental.full_every so full passes can, or use \"ignore\"");
        }
        let max_disappear_share = rs.max_disappear_share.unwrap_or(0.2);
        if !(0.0..=1.0).contains(&max_disappear_share) {
            self.bad(
                k("max_disappear_share"),
                format!("{max_disappear_share} is out of range; use a share between 0.0 and 1.0"),
            );
        }
        let timeout = self.positive_duration(
            &k("timeout"),
            rs.timeout.as_deref(),
            Duration::from_secs(30),
        );
        let max_response_bytes = rs.max_response_bytes.unwrap_or(16 * 1024 * 1024);
        if max_response_bytes == 0 {
            self.bad(k("max_response_bytes"), "must be at least 1");
        }
        let max_pages = rs.max_pages.unwrap_or(1000);
        if max_pages == 0 {
            self.bad(k("max_pages"), "must be at least 1");
        }
        let pagination = match rs.pagination {
            None => Pagination::None,
            Some(p) => self.pagination(&k("pagination"), p)?,
        };

        if method == SourceMethod::Get {
            let post_only = "needs method = \"POST\" (a GET request has no body)";
            if incremental.as_ref().is_some_and(|i| i.body.is_some()) {
                self.bad(k("incremental.body"), post_only);
            }
            if lookup.as_ref().is_some_and(|l| l.body.is_some()) {
                self.bad(k("lookup.body"), post_only);
            }
            if matches!(
                pagination,
                Pagination::Page {
                    param_in: ParamIn::Body,
                    ..
                } | Pagination::Offset {
                    param_in: ParamIn::Body,
                    ..
                } | Pagination::Cursor {
                    param_in: ParamIn::Body,
                    ..
                }
            ) {
                self.bad(k("pagination.param_in"), post_only);
            }
        }
        Some(SourceConfig {
            name: name.to_string(),
            url: url?,
            schedule: schedule?,
            method,
            format,
            query,
            array_style,
            body,
            body_format,
            items_shape,
            success,
            sync,
            incremental,
            lookup,
            politeness,
            tz,
            secrets,
            headers: {
                let mut out = Vec::new();
                for (h, v) in rs.headers {
                    if reqwest::header::HeaderName::from_bytes(h.as_bytes()).is_err()
                        || reqwest::header::HeaderValue::from_str(&v).is_err()
                    {
                        self.bad(
                            format!("sources.{name}.headers.{h}"),
                            "is not a valid HTTP header name and value",
                        );
                    } else {
                        out.push((h, v));
                    }
                }
                out
            },
            auth,
            items,
            id,
            status: rs.status,
            cancelled_values,
            ignore_fields: rs.ignore_fields,
            only_fields: rs.only_fields,
            first_poll,
            on_disappear,
            max_disappear_share,
            timeout,
            max_response_bytes,
            max_pages,
            pagination,
        })
    }

    fn auth(&mut self, key: &str, a: raw::RawAuth, allowed: &[&str]) -> Option<Auth> {
        if !allowed.contains(&a.kind.as_str()) {
            self.bad(
                format!("{key}.type"),
                format!(
                    "`{}` is not valid here; use {}",
                    a.kind,
                    allowed
                        .iter()
                        .map(|t| format!("\"{t}\""))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            );
            return None;
        }
        let need_secret = |v: &mut Self| -> Option<Secret> {
            match &a.secret {
                Some(s) => v.secret(&format!("{key}.secret"), s),
                None => {
                    v.bad(format!("{key}.secret"), "is required for this auth type: { file = \"...\" }, { env = \"...\" } or { credential = \"...\" }");
                    None
                }
            }
        };
        let need =
            |v: &mut Self, field: &str, value: &Option<String>, what: &str| -> Option<String> {
                match value {
                    Some(n) if !n.is_empty() => Some(n.clone()),
                    _ => {
                        v.bad(
                            format!("{key}.{field}"),
                            format!("is required for auth type \"{}\" ({what})", a.kind),
                        );
                        None
                    }
                }
            };
        let header_name = |v: &mut Self, field: &str, value: Option<String>| -> Option<String> {
            let n = value?;
            if reqwest::header::HeaderName::from_bytes(n.as_bytes()).is_err() {
                v.bad(
                    format!("{key}.{field}"),
                    format!("`{n}` is not a valid HTTP header name"),
                );
                return None;
            }
            Some(n)
        };
        let secret_header_ok = |v: &mut Self, s: Secret| -> Option<Secret> {
            if reqwest::header::HeaderValue::from_str(s.expose()).is_err() {
                v.bad(
                    format!("{key}.secret"),
                    "the secret contains characters not allowed in an HTTP header",
                );
                return None;
            }
            Some(s)
        };
        match a.kind.as_str() {
            "none" => Some(Auth::None),
            "header" => {
                let name = need(self, "name", &a.name, "the header name");
                let name = header_name(self, "name", name);
                let value = need_secret(self).and_then(|s| secret_header_ok(self, s));
                Some(Auth::Header {
                    name: name?,
                    value: value?,
                })
            }
            "query" => {
                let name = need(self, "name", &a.name, "the parameter name");
                let value = need_secret(self);
                Some(Auth::Query {
                    name: name?,
                    value: value?,
                })
            }
            "basic" => {
                let username = need(self, "username", &a.username, "the user name");
                let password = need_secret(self);
                Some(Auth::Basic {
                    username: username?,
                    password: password?,
                })
            }
            "bearer" => Some(Auth::Bearer {
                token: need_secret(self).and_then(|s| secret_header_ok(self, s))?,
            }),
            "oauth2" => {
                let token_url = self.url(&format!("{key}.token_url"), a.token_url.as_deref());
                let client_id = need(self, "client_id", &a.client_id, "the OAuth2 client id");
                let secret = need_secret(self);
                Some(Auth::OAuth2 {
                    token_url: token_url?,
                    client_id: client_id?,
                    secret: secret?,
                    scope: a.scope.clone(),
                })
            }
            "token_refresh" => {
                let token_url = self.url(&format!("{key}.token_url"), a.token_url.as_deref());
                let refresh_header = header_name(
                    self,
                    "refresh_header",
                    Some(
                        a.refresh_header
                            .clone()
                            .unwrap_or_else(|| "refreshToken".into()),
                    ),
                );
                let header = header_name(
                    self,
                    "header",
                    Some(a.header.clone().unwrap_or_else(|| "token".into())),
                );
                let token_pointer = a.token_pointer.clone().unwrap_or_else(|| "/token".into());
                let expires_pointer = a
                    .expires_pointer
                    .clone()
                    .unwrap_or_else(|| "/expiresIn".into());
                self.pointer(&format!("{key}.token_pointer"), &token_pointer);
                self.pointer(&format!("{key}.expires_pointer"), &expires_pointer);
                let secret = need_secret(self).and_then(|s| secret_header_ok(self, s));
                Some(Auth::TokenRefresh {
                    token_url: token_url?,
                    refresh_header: refresh_header?,
                    secret: secret?,
                    token_pointer,
                    expires_pointer,
                    header: header?,
                })
            }
            _ => None,
        }
    }

    fn pagination(&mut self, key: &str, p: raw::RawPagination) -> Option<Pagination> {
        let param_in = match p.param_in.as_deref() {
            None | Some("query") => ParamIn::Query,
            Some("body") => ParamIn::Body,
            Some(o) => {
                self.bad(
                    format!("{key}.param_in"),
                    format!("`{o}` is not valid; use \"query\" or \"body\""),
                );
                ParamIn::Query
            }
        };
        match p.style.as_str() {
            "none" => Some(Pagination::None),
            "offset" => {
                let size = match (p.size_param, p.size) {
                    (Some(n), Some(s)) if s > 0 => Some((n, s)),
                    (None, Some(s)) if s > 0 => Some(("limit".to_string(), s)),
                    _ => {
                        self.bad(format!("{key}.size"), "offset pagination needs a page `size` of at least 1 (and optionally `size_param`, default \"limit\")");
                        None
                    }
                };
                if let Some(t) = &p.total {
                    self.pointer(&format!("{key}.total"), t);
                }
                Some(Pagination::Offset {
                    param: p.param.unwrap_or_else(|| "offset".into()),
                    size: size?,
                    total: p.total,
                    param_in,
                })
            }
            "cursor" => {
                let Some(next) = p.next else {
                    self.bad(format!("{key}.next"), "is required for cursor pagination: the JSON Pointer to the next cursor, e.g. \"/meta/next_cursor\"");
                    return None;
                };
                self.pointer(&format!("{key}.next"), &next);
                Some(Pagination::Cursor {
                    param: p.param.unwrap_or_else(|| "cursor".into()),
                    next,
                    param_in,
                })
            }
            "page" => {
                let size = match (p.size_param, p.size) {
                    (Some(n), Some(s)) if s > 0 => Some((n, s)),
                    (None, None) => None,
                    _ => {
                        self.bad(
                            format!("{key}.size"),
                            "give both `size_param` and a `size` of at least 1, or neither",
                        );
                        None
                    }
                };
                let stop = match (p.has_more, p.total_pages) {
                    (Some(_), Some(_)) => {
                        self.bad(
                            format!("{key}.has_more"),
                            "give either `has_more` or `total_pages`, not both",
                        );
                        PageStop::EmptyPage
                    }
                    (Some(h), None) => {
                        self.pointer(&format!("{key}.has_more"), &h);
                        PageStop::HasMore(h)
                    }
                    (None, Some(t)) => {
                        self.pointer(&format!("{key}.total_pages"), &t);
                        PageStop::TotalPages(t)
                    }
                    (None, None) => PageStop::EmptyPage,
                };
                Some(Pagination::Page {
                    param: p.param.unwrap_or_else(|| "page".into()),
                    start: p.start.unwrap_or(1),
                    size,
                    stop,
                    param_in,
                })
            }
            "next_link" => {
                if p.param_in.is_some() {
                    self.bad(
                        format!("{key}.param_in"),
                        "does not apply to next_link pagination (the link carries its own query)",
                    );
                }
                let Some(pointer) = p.next else {
                    self.bad(format!("{key}.next"), "is required for next_link: the JSON Pointer to the next page's URL, e.g. \"/pages/nextPageLink\"");
                    return None;
                };
                self.pointer(&format!("{key}.next"), &pointer);
                Some(Pagination::NextLink { pointer })
            }
            other => {
                self.bad(
                    format!("{key}.style"),
                    format!("`{other}` is not valid; use \"none\", \"page\", \"offset\", \"cursor\" or \"next_link\""),
                );
                None
            }
        }
    }

    fn endpoint(
        &mut self,
        name: &str,
        re: raw::RawEndpoint,
        source_names: &BTreeSet<String>,
        defaults: EndpointDefaults,
    ) -> Option<EndpointConfig> {
        let k = |f: &str| format!("endpoints.{name}.{f}");
        self.name(&format!("endpoints.{name}"), name);
        let mut variables: BTreeMap<String, String> = crate::template::BEDS24_VARIABLES
            .iter()
            .map(|(n, p)| (n.to_string(), p.to_string()))
            .collect();
        for (n, p) in &re.variables {
            let key = format!("{}.{n}", k("variables"));
            if !n
                .chars()
                .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
                || n.is_empty()
            {
                self.bad(&key, "variable names are written in capitals, like Beds24's: BOOKID, PROPERTYID, GUESTNAME");
            }
            self.pointer(&key, p);
            if n == "BOOKID" || n == "REFERENCENUMBER" {
                self.bad(
                    &key,
                    "is always the booking id pollhook tracks and cannot be remapped",
                );
            }
            variables.insert(n.clone(), p.clone());
        }
        self.variable_names = variables.keys().cloned().collect();
        self.variable_names.insert("BOOKID".into());
        self.variable_names.insert("REFERENCENUMBER".into());
        let (url, url_template) = self.endpoint_url(&k("url"), re.url.as_deref(), &variables);
        let format = match re.format.as_deref() {
            Some("v1") => Format::V1,
            None | Some("v2") => Format::V2,
            Some(o) => {
                self.bad(k("format"), format!("`{o}` is not valid; use \"v1\" (Beds24 query-string ping) or \"v2\" (JSON body)"));
                Format::V2
            }
        };
        let method = match re.method.as_deref().map(str::to_ascii_uppercase).as_deref() {
            None => match format {
                Format::V1 => reqwest::Method::GET,
                Format::V2 => reqwest::Method::POST,
            },
            Some("GET") => reqwest::Method::GET,
            Some("POST") => reqwest::Method::POST,
            Some("PUT") => reqwest::Method::PUT,
            Some("PATCH") => reqwest::Method::PATCH,
            Some(o) => {
                self.bad(
                    k("method"),
                    format!("`{o}` is not valid; use GET, POST, PUT or PATCH"),
                );
                reqwest::Method::POST
            }
        };
        let sources: BTreeSet<String> = match re.sources {
            None => source_names.clone(),
            Some(list) => {
                for s in &list {
                    if !source_names.contains(s) {
                        self.bad(
                            k("sources"),
                            format!(
                                "`{s}` is not a configured source; configured: {}",
                                source_names.iter().cloned().collect::<Vec<_>>().join(", ")
                            ),
                        );
                    }
                }
                list.into_iter().collect()
            }
        };
        let events: BTreeSet<EventKind> = match re.events {
            None => EventKind::ALL.into_iter().collect(),
            Some(list) => {
                let mut set = BTreeSet::new();
                for s in &list {
                    match EventKind::parse(s) {
                        Some(kind) => {
                            set.insert(kind);
                        }
                        None => self.bad(
                            k("events"),
                            format!(
                                "`{s}` is not an event kind; use \"new\", \"modify\" or \"cancel\""
                            ),
                        ),
                    }
                }
                if list.is_empty() {
                    self.bad(k("events"), "is empty, so the endpoint would receive nothing; list some of \"new\", \"modify\", \"cancel\" or remove the key");
                }
                set
            }
        };
        let mut keys = Vec::new();
        for (i, s) in re.secrets.iter().enumerate() {
            let key = format!("{}[{i}]", k("secrets"));
            if let Some(secret) = self.secret(&key, s) {
                match SigningKey::parse(secret.expose()) {
                    Ok(sk) => keys.push(sk),
                    Err(e) => self.bad(key, e.to_string()),
                }
            }
        }
        let retry = self.retry(
            &format!("endpoints.{name}"),
            re.retry_schedule.as_deref(),
            re.jitter,
            None,
            defaults.retry,
        );
        let connect_timeout = self.positive_duration(
            &k("connect_timeout"),
            re.connect_timeout.as_deref(),
            defaults.connect,
        );
        let timeout =
            self.positive_duration(&k("timeout"), re.timeout.as_deref(), defaults.timeout);
        let max_in_flight = re.max_in_flight.unwrap_or(defaults.in_flight);
        if max_in_flight == 0 {
            self.bad(k("max_in_flight"), "must be at least 1");
        }
        let mut headers = Vec::new();
        for (h, v) in re.headers {
            if reqwest::header::HeaderName::from_bytes(h.as_bytes()).is_err()
                || reqwest::header::HeaderValue::from_str(&v).is_err()
            {
                self.bad(
                    format!("{}.{h}", k("headers")),
                    "is not a valid HTTP header name and value",
                );
            } else {
                headers.push((h, v));
            }
        }
        let auth = match re.auth {
            None => Auth::None,
            Some(a) => self.auth(
                &k("auth"),
                a,
                &["none", "header", "basic", "bearer", "oauth2"],
            )?,
        };
        let mut methods = BTreeMap::new();
        for (kind, m) in &re.methods {
            let key = format!("{}.{kind}", k("methods"));
            let Some(kind) = EventKind::parse(kind) else {
                self.bad(key, "is not an event kind; use new, modify or cancel");
                continue;
            };
            match parse_method(m) {
                Some(m) => {
                    methods.insert(kind, m);
                }
                None => self.bad(
                    key,
                    format!("`{m}` is not valid; use GET, POST, PUT or PATCH"),
                ),
            }
        }
        let failing_after = self.positive_duration(
            &k("failing_after"),
            re.failing_after.as_deref(),
            Duration::from_secs(3600),
        );
        let preset = match re.preset.as_deref() {
            None => crate::config::BodyPreset::Pollhook,
            Some(p) => crate::config::BodyPreset::parse(p).unwrap_or_else(|| {
                self.bad(k("preset"), format!("`{p}` is not valid; use \"pollhook\", \"beds24\", \"stayntouch\" or \"zenoti\""));
                crate::config::BodyPreset::Pollhook
            }),
        };
        if format == Format::V1 && (re.preset.is_some() || re.body.is_some()) {
            self.bad(k("format"), "`preset` and `body` shape v2 bodies; a v1 endpoint sends no body. Use format = \"v2\" or remove them");
        }
        if re.preset.is_some() && re.body.is_some() {
            self.bad(k("body"), "give either `preset` or `body`, not both");
        }
        let body = re.body.and_then(|b| {
            if !b.is_object() && !b.is_array() {
                self.bad(k("body"), "must be a table (the JSON body), with {{ ... }} templates in its strings");
                return None;
            }
            match crate::template::TemplateTree::parse(&b).and_then(|t| t.check_names(crate::template::names::DELIVERY_NAMES).map(|()| t)) {
                Ok(t) => {
                    self.known_names(&k("body"), &t.names());
                    Some(t)
                }
                Err(e) => {
                    self.bad(k("body"), format!("{e}; available: event.id, event.type, event.status, event.source, event.booking_id, event.sequence, event.detected_at, event.attempt, event.changes, booking, booking/<pointer>, beds24.<VARIABLE>, now, today"));
                    None
                }
            }
        });
        let bookid_param = re.bookid_param.unwrap_or_else(|| "bookid".into());
        let status_param = re.status_param.unwrap_or_else(|| "status".into());
        for (field, v) in [
            ("bookid_param", &bookid_param),
            ("status_param", &status_param),
        ] {
            if v.is_empty() {
                self.bad(k(field), "must not be empty");
            }
        }
        Some(EndpointConfig {
            name: name.to_string(),
            url: url?,
            format,
            method,
            sources,
            events,
            keys,
            headers,
            retry,
            connect_timeout,
            timeout,
            max_in_flight: max_in_flight.max(1),
            enabled: re.enabled.unwrap_or(true),
            auth,
            methods,
            failing_after,
            bookid_param,
            status_param,
            preset,
            body,
            url_template,
            variables,
        })
    }
}

/// Whether a parameter's template(s) use `name`.
fn param_uses(v: &ParamValue, name: &str) -> bool {
    let uses = |t: &Template| t.names().iter().any(|n| n == name);
    match v {
        ParamValue::One(t) => uses(t),
        ParamValue::Many(ts) => ts.iter().any(uses),
    }
}

/// Whether a body template tree uses `name`.
fn tree_uses(tree: &serde_json::Value, name: &str) -> bool {
    crate::template::TemplateTree::parse(tree).is_ok_and(|t| t.names().iter().any(|n| n == name))
}

fn parse_method(m: &str) -> Option<reqwest::Method> {
    match m.to_ascii_uppercase().as_str() {
        "GET" => Some(reqwest::Method::GET),
        "POST" => Some(reqwest::Method::POST),
        "PUT" => Some(reqwest::Method::PUT),
        "PATCH" => Some(reqwest::Method::PATCH),
        _ => None,
    }
}

struct EndpointDefaults {
    retry: RetryPolicy,
    connect: Duration,
    timeout: Duration,
    in_flight: u32,
}
