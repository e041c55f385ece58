//! Validation: turns the raw layer into typed [`Config`], collecting every problem with the key
//! path that caused it and what would be valid. Secrets are resolved here. This module owns the
//! [`Validator`], the primitives every section shares (problems, durations, JSON Pointers, URLs,
//! names, headers) and [`Validator::config`], which runs the sections in order.

mod auth;
mod endpoint;
mod general;
mod nats;
mod pagination;
mod ping;
mod secret;
mod source;
mod templates;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Duration;

use url::Url;

use super::{Config, Problem, parse_duration, raw};

const NAME_HINT: &str = "names may contain only lowercase letters, digits, `_` and `-`, and must start with a letter (so `POLLHOOK_` environment overrides can reach them)";

/// Builds the key path of a field inside the table being validated, e.g. `sources.NAME.url`.
type FieldKey<'a> = &'a dyn Fn(&str) -> String;

#[derive(Default)]
pub(super) struct Validator {
    pub(super) problems: Vec<Problem>,
    /// Valid settings that have no effect.
    pub(super) warnings: Vec<Problem>,
    /// Secret names the source being validated defines (for `{{ secret.NAME }}`).
    secret_names: BTreeSet<String>,
    /// Variable names the endpoint being validated defines (for `{{ beds24.NAME }}`).
    variable_names: BTreeSet<String>,
    /// The URL of the source whose `auth` is being validated (a `token_refresh` login's
    /// default `token_url` is derived from it).
    auth_base: Option<Url>,
}

impl Validator {
    /// The whole file: `[store]`, `[log]`, `[admin]` and `[ingress]`, every source (and how
    /// their pings fit together), then the `[delivery]` defaults and every endpoint (which may
    /// name the sources).
    pub(super) fn config(&mut self, raw: raw::RawConfig, file: Option<&Path>) -> Option<Config> {
        let (store_path, retention, cache_size) = self.store(raw.store);
        let log = self.log(raw.log);
        let admin = self.admin(raw.admin);
        let ingress = self.ingress(raw.ingress);
        let sources = self.sources(raw.sources);
        self.pings_fit(&sources, ingress.as_ref());
        let defaults = self.delivery(raw.delivery);
        let source_names: BTreeSet<String> = sources.iter().map(|s| s.name.clone()).collect();
        let endpoints = self.endpoints(raw.endpoints, &source_names, &defaults);
        let shard = raw.shard.as_deref().and_then(|s| match s.parse() {
            Ok(shard) => Some(shard),
            Err(m) => {
                self.bad("shard", m);
                None
            }
        });
        Some(Config {
            file: file.map(Path::to_path_buf),
            store_path,
            retention,
            cache_size,
            log,
            admin_listen: admin.listen,
            admin_token: admin.token,
            admin_allowed_hosts: admin.allowed_hosts,
            ingress,
            sources,
            endpoints,
            warnings: std::mem::take(&mut self.warnings),
            shard,
        })
    }

    fn bad(&mut self, key: impl Into<String>, message: impl Into<String>) {
        self.problems.push(Problem {
            key: key.into(),
            message: message.into(),
        });
    }

    fn warn(&mut self, key: impl Into<String>, message: impl Into<String>) {
        self.warnings.push(Problem {
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

    /// A `headers` table (key path `key`): the pairs HTTP accepts; each other one is a problem.
    fn headers(&mut self, key: &str, raw: BTreeMap<String, String>) -> Vec<(String, String)> {
        let mut out = Vec::new();
        for (h, v) in raw {
            if reqwest::header::HeaderName::from_bytes(h.as_bytes()).is_err()
                || reqwest::header::HeaderValue::from_str(&v).is_err()
            {
                self.bad(
                    format!("{key}.{h}"),
                    "is not a valid HTTP header name and value",
                );
            } else {
                out.push((h, v));
            }
        }
        out
    }
}
