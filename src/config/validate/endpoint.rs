//! The `[endpoints.NAME]` tables: where and how each webhook goes (URL, format, method, routing,
//! signing keys, retries, timeouts, headers, auth and body), and the retry policy that endpoints
//! and `[delivery]` share.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use url::Url;

use super::{FieldKey, Validator};
use crate::config::{Auth, EndpointConfig, Format, NatsAuth, parse_duration, raw};
use crate::outbox::EventKind;
use crate::retry::RetryPolicy;
use crate::signing::SigningKey;
use crate::template::{Template, UrlTemplate};

/// What an endpoint inherits from `[delivery]` when it does not say.
#[derive(Clone)]
pub(super) struct EndpointDefaults {
    pub(super) retry: RetryPolicy,
    pub(super) connect: Duration,
    pub(super) timeout: Duration,
    pub(super) in_flight: u32,
}

impl Validator {
    /// Every `[endpoints.NAME]` table; an endpoint with problems is left out (its problems
    /// recorded). `source_names` are the sources an endpoint may subscribe to.
    pub(super) fn endpoints(
        &mut self,
        raw: BTreeMap<String, raw::RawEndpoint>,
        source_names: &BTreeSet<String>,
        defaults: &EndpointDefaults,
    ) -> Vec<EndpointConfig> {
        let mut endpoints = Vec::new();
        for (name, re) in raw {
            if let Some(e) = self.endpoint(&name, re, source_names, defaults) {
                endpoints.push(e);
            }
        }
        endpoints
    }

    /// One `[endpoints.NAME]` table. The steps run in this order, and an unusable `auth` ends
    /// the checks there, so problems come out in the same order as ever. A NATS endpoint
    /// (`type = "nats"` or a `nats://` URL) takes its target from [`Validator::nats_endpoint`]
    /// and has no HTTP method, v1 format or HTTP auth.
    fn endpoint(
        &mut self,
        name: &str,
        mut re: raw::RawEndpoint,
        source_names: &BTreeSet<String>,
        defaults: &EndpointDefaults,
    ) -> Option<EndpointConfig> {
        let k = |f: &str| format!("endpoints.{name}.{f}");
        self.name(&format!("endpoints.{name}"), name);
        let is_nats = self.endpoint_is_nats(&k, re.kind.as_deref(), re.url.as_deref());
        let variables = self.variables(&k, &re.variables);
        let nats = if is_nats {
            self.nats_endpoint(&k, &mut re)
        } else {
            self.no_nats_keys(&k, &re);
            None
        };
        let (url, url_template) = match &nats {
            Some(n) => (n.servers.first().and_then(|s| Url::parse(s).ok()), None),
            None if is_nats => (None, None),
            None => self.endpoint_url(&k("url"), re.url.as_deref(), &variables),
        };
        let (format, method) = if is_nats {
            (Format::V2, reqwest::Method::POST)
        } else {
            self.format_and_method(&k, re.format.as_deref(), re.method.as_deref())
        };
        let sources = self.routed_sources(&k, re.sources, source_names);
        let events = self.routed_events(&k, re.events);
        let keys = self.signing_keys(&k, &re.secrets);
        let retry = self.retry(
            &format!("endpoints.{name}"),
            re.retry_schedule.as_deref(),
            re.jitter,
            None,
            defaults.retry.clone(),
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
        let headers = self.headers(&k("headers"), re.headers);
        let auth = match re.auth {
            None => Auth::None,
            Some(a) => self.auth(
                &k("auth"),
                a,
                &["none", "header", "basic", "bearer", "oauth2"],
            )?,
        };
        // A NATS endpoint's credentials are redacted like HTTP ones, should a server echo them.
        let nats_secrets: Vec<&crate::config::Secret> = match nats.as_ref().map(|n| &n.auth) {
            Some(NatsAuth::Token(s) | NatsAuth::NKey(s) | NatsAuth::Creds(s)) => vec![s],
            Some(NatsAuth::UserPassword { password, .. }) => vec![password],
            Some(NatsAuth::None) | None => vec![],
        };
        let redactor = super::secret::redactor(&auth, nats_secrets, [url.as_ref()]);
        let methods = self.event_methods(&k, &re.methods);
        let failing_after = self.positive_duration(
            &k("failing_after"),
            re.failing_after.as_deref(),
            Duration::from_secs(3600),
        );
        let (preset, body) = self.payload(&k, format, re.preset.as_deref(), re.body);
        let (bookid_param, status_param) = self.ping_params(&k, re.bookid_param, re.status_param);
        if is_nats && nats.is_none() {
            return None;
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
            nats,
            redactor,
        })
    }

    /// The Beds24 `[NAME]` variables: the built-in ones plus the `variables` table (each a JSON
    /// Pointer into the booking). Their names become what `{{ beds24.NAME }}` may refer to.
    fn variables(
        &mut self,
        k: FieldKey,
        raw: &BTreeMap<String, String>,
    ) -> BTreeMap<String, String> {
        let mut variables: BTreeMap<String, String> = crate::template::BEDS24_VARIABLES
            .iter()
            .map(|(n, p)| (n.to_string(), p.to_string()))
            .collect();
        for (n, p) in raw {
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
        variables
    }

    /// An endpoint URL, possibly with `{{ ... }}` placeholders or Beds24 `[NAME]` variables. The
    /// scheme, host and port must be literal, so no value can redirect a delivery elsewhere.
    fn endpoint_url(
        &mut self,
        key: &str,
        text: Option<&str>,
        variables: &BTreeMap<String, String>,
    ) -> (Option<Url>, Option<UrlTemplate>) {
        let Some(text) = text else {
            self.bad(key, "is required: the http:// or https:// URL");
            return (None, None);
        };
        let converted = crate::template::from_beds24_brackets(text, &|n| variables.contains_key(n));
        if !converted.contains("{{") {
            return (self.url(key, Some(text)), None);
        }
        let template = match Template::parse(&converted).and_then(|t| {
            t.check_names(crate::template::names::DELIVERY_NAMES)
                .map(|()| t)
        }) {
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
        let Some(url) = self.url(key, Some(&sample)) else {
            return (None, None);
        };
        match UrlTemplate::new(template) {
            Ok(t) => (Some(url), Some(t)),
            Err(e) => {
                self.bad(key, e.to_string());
                (None, None)
            }
        }
    }

    /// `format` (v1 query-string ping or v2 JSON body) and the HTTP `method`, whose default
    /// follows the format.
    fn format_and_method(
        &mut self,
        k: FieldKey,
        format: Option<&str>,
        method: Option<&str>,
    ) -> (Format, reqwest::Method) {
        let format = match format {
            Some("v1") => Format::V1,
            None | Some("v2") => Format::V2,
            Some(o) => {
                self.bad(k("format"), format!("`{o}` is not valid; use \"v1\" (Beds24 query-string ping) or \"v2\" (JSON body)"));
                Format::V2
            }
        };
        let method = match method {
            None => match format {
                Format::V1 => reqwest::Method::GET,
                Format::V2 => reqwest::Method::POST,
            },
            Some(m) => parse_method(m).unwrap_or_else(|| {
                self.bad(
                    k("method"),
                    format!(
                        "`{}` is not valid; use GET, POST, PUT or PATCH",
                        m.to_ascii_uppercase()
                    ),
                );
                reqwest::Method::POST
            }),
        };
        (format, method)
    }

    /// The sources the endpoint subscribes to (default: all of them).
    fn routed_sources(
        &mut self,
        k: FieldKey,
        list: Option<Vec<String>>,
        source_names: &BTreeSet<String>,
    ) -> BTreeSet<String> {
        match list {
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
        }
    }

    /// The event kinds the endpoint receives (default: all of them).
    fn routed_events(&mut self, k: FieldKey, list: Option<Vec<String>>) -> BTreeSet<EventKind> {
        match list {
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
        }
    }

    /// The `secrets` list: the keys deliveries are signed with.
    fn signing_keys(&mut self, k: FieldKey, raw: &[raw::RawSecret]) -> Vec<SigningKey> {
        let mut keys = Vec::new();
        for (i, s) in raw.iter().enumerate() {
            let key = format!("{}[{i}]", k("secrets"));
            if let Some(secret) = self.secret(&key, s) {
                match SigningKey::parse(secret.expose()) {
                    Ok(sk) => keys.push(sk),
                    Err(e) => self.bad(key, e.to_string()),
                }
            }
        }
        keys
    }

    /// The `methods` table: an HTTP method per event kind, overriding `method`.
    fn event_methods(
        &mut self,
        k: FieldKey,
        raw: &BTreeMap<String, String>,
    ) -> BTreeMap<EventKind, reqwest::Method> {
        let mut methods = BTreeMap::new();
        for (kind, m) in raw {
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
        methods
    }

    /// What a v2 delivery's body looks like: a named `preset`, or a `body` template tree.
    fn payload(
        &mut self,
        k: FieldKey,
        format: Format,
        preset: Option<&str>,
        body: Option<serde_json::Value>,
    ) -> (
        crate::config::BodyPreset,
        Option<crate::template::TemplateTree>,
    ) {
        let has_preset = preset.is_some();
        let preset = match preset {
            None => crate::config::BodyPreset::Pollhook,
            Some(p) => crate::config::BodyPreset::parse(p).unwrap_or_else(|| {
                self.bad(k("preset"), format!("`{p}` is not valid; use \"pollhook\", \"beds24\", \"stayntouch\", \"zenoti\" or \"rezgo\" (XML)"));
                crate::config::BodyPreset::Pollhook
            }),
        };
        if format == Format::V1 && (has_preset || body.is_some()) {
            self.bad(k("format"), "`preset` and `body` shape v2 bodies; a v1 endpoint sends no body. Use format = \"v2\" or remove them");
        }
        if has_preset && body.is_some() {
            self.bad(k("body"), "give either `preset` or `body`, not both");
        }
        let body = body.and_then(|b| {
            if !b.is_object() && !b.is_array() {
                self.bad(
                    k("body"),
                    "must be a table (the JSON body), with {{ ... }} templates in its strings",
                );
                return None;
            }
            match crate::template::TemplateTree::parse(&b).and_then(|t| {
                t.check_names(crate::template::names::DELIVERY_NAMES)
                    .map(|()| t)
            }) {
                Ok(t) => {
                    self.known_names(&k("body"), &t.names());
                    Some(t)
                }
                Err(e) => {
                    self.bad(k("body"), body_names_in_full(e).to_string());
                    None
                }
            }
        });
        (preset, body)
    }

    /// The v1 ping's query parameter names for the booking id and status.
    fn ping_params(
        &mut self,
        k: FieldKey,
        bookid_param: Option<String>,
        status_param: Option<String>,
    ) -> (String, String) {
        let bookid_param = bookid_param.unwrap_or_else(|| "bookid".into());
        let status_param = status_param.unwrap_or_else(|| "status".into());
        for (field, v) in [
            ("bookid_param", &bookid_param),
            ("status_param", &status_param),
        ] {
            if v.is_empty() {
                self.bad(k(field), "must not be empty");
            }
        }
        (bookid_param, status_param)
    }

    /// A retry policy under `prefix` (`delivery` or `endpoints.NAME`): the `retry_schedule`,
    /// `jitter` and `retry_after_cap` given, the rest from `default`.
    pub(super) fn retry(
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

/// A name a body may not use, listing what it may use in full (`event.id` rather than `event`,
/// `booking/<pointer>`, `beds24.<VARIABLE>`), each once; other template errors as they are.
fn body_names_in_full(e: crate::template::TreeError) -> crate::template::TreeError {
    use crate::template::{TemplateError, TreeError};
    match e {
        TreeError::Parse {
            pointer,
            source:
                TemplateError::NameNotAllowed {
                    template,
                    pos,
                    name,
                    ..
                },
        } => TreeError::Parse {
            pointer,
            source: TemplateError::NameNotAllowed {
                template,
                pos,
                name,
                allowed: crate::template::names::EVENT_NAMES
                    .iter()
                    .map(|n| format!("event.{n}"))
                    .chain(
                        ["booking", "booking/<pointer>", "beds24.<VARIABLE>"]
                            .into_iter()
                            .map(String::from),
                    )
                    .collect(),
            },
        },
        other => other,
    }
}
