//! The `[sources.NAME]` tables: one step each for the schedule, the request, the response shape,
//! incremental sync, politeness, the records and their ids, the change policy (with disappearance
//! lookups), limits and pagination.

use std::collections::BTreeMap;
use std::time::Duration;

use url::Url;

use super::templates::{param_uses, tree_uses};
use super::{FieldKey, Validator};
use crate::config::{
    ArrayStyle, Auth, BodyFormat, FirstPoll, Incremental, ItemsShape, Lookup, OnDisappear,
    Pagination, ParamIn, ParamValue, Politeness, ResponseFormat, Secret, SourceConfig,
    SourceMethod, SuccessCheck, SyncMode, WatermarkFrom, parse_duration, raw,
};
use crate::schedule::Schedule;
use crate::template::names::{INCREMENTAL_NAMES, LOOKUP_NAMES, SOURCE_NAMES};

/// The auth types a source accepts.
const AUTH_TYPES: &[&str] = &[
    "none",
    "header",
    "query",
    "basic",
    "bearer",
    "oauth2",
    "token_refresh",
];

/// How a source is asked for its bookings.
struct Request {
    method: SourceMethod,
    format: ResponseFormat,
    secrets: BTreeMap<String, Secret>,
    query: Vec<(String, ParamValue)>,
    array_style: ArrayStyle,
    body: Option<serde_json::Value>,
    body_format: BodyFormat,
}

/// What counts as a change, and what a booking's disappearance means.
struct ChangePolicy {
    cancelled_values: Vec<String>,
    ignore_fields: Vec<String>,
    only_fields: Vec<String>,
    first_poll: FirstPoll,
    on_disappear: OnDisappear,
    lookup: Option<Lookup>,
    max_disappear_share: f64,
}

impl Validator {
    /// Every `[sources.NAME]` table; a source with problems is left out (its problems recorded).
    pub(super) fn sources(&mut self, raw: BTreeMap<String, raw::RawSource>) -> Vec<SourceConfig> {
        if raw.is_empty() {
            self.bad(
                "sources",
                "no source configured; add a [sources.NAME] table with at least `url` and `every` or `cron`",
            );
        }
        let mut sources = Vec::new();
        for (name, rs) in raw {
            if let Some(s) = self.source(&name, rs) {
                sources.push(s);
            }
        }
        sources
    }

    /// One `[sources.NAME]` table. The steps run in this order, and an unusable `auth` or
    /// `pagination` ends the checks there, so problems come out in the same order as ever.
    fn source(&mut self, name: &str, mut rs: raw::RawSource) -> Option<SourceConfig> {
        let k = |f: &str| format!("sources.{name}.{f}");
        self.name(&format!("sources.{name}"), name);
        let url = self.url(&k("url"), rs.url.as_deref());
        let (schedule, tz) = self.schedule(&k, &rs);
        let request = self.request(&k, &mut rs);
        let (items_shape, success) = self.response_shape(&k, &mut rs);
        let (sync, incremental) = self.sync(&k, &mut rs);
        let politeness = self.politeness(&k, &mut rs);
        let auth = match rs.auth.take() {
            None => Auth::None,
            Some(a) => self.auth(&k("auth"), a, AUTH_TYPES)?,
        };
        let (items, id) = self.records(&k, &mut rs);
        let policy = self.change_policy(&k, &mut rs, url.as_ref(), &items, incremental.as_ref());
        let (timeout, max_response_bytes, max_pages, resume_within) = self.limits(&k, &rs);
        let pagination = match rs.pagination.take() {
            None => Pagination::None,
            Some(p) => self.pagination(&k("pagination"), p)?,
        };
        if request.method == SourceMethod::Get {
            self.get_has_no_body(
                &k,
                incremental.as_ref(),
                policy.lookup.as_ref(),
                &pagination,
            );
        }
        let url = url?;
        let schedule = schedule?;
        let headers = self.headers(&k("headers"), rs.headers);
        let redactor = super::secret::redactor(
            &auth,
            request.secrets.values(),
            [Some(&url), policy.lookup.as_ref().map(|l| &l.url)],
        );
        Some(SourceConfig {
            name: name.to_string(),
            url,
            schedule,
            method: request.method,
            format: request.format,
            query: request.query,
            array_style: request.array_style,
            body: request.body,
            body_format: request.body_format,
            items_shape,
            success,
            sync,
            incremental,
            lookup: policy.lookup,
            politeness,
            tz,
            secrets: request.secrets,
            headers,
            auth,
            items,
            id,
            status: rs.status,
            cancelled_values: policy.cancelled_values,
            ignore_fields: policy.ignore_fields,
            only_fields: policy.only_fields,
            first_poll: policy.first_poll,
            on_disappear: policy.on_disappear,
            max_disappear_share: policy.max_disappear_share,
            timeout,
            max_response_bytes,
            max_pages,
            resume_within,
            pagination,
            redactor,
        })
    }

    /// `every` or `cron` (read in `timezone`, default UTC), and the time zone itself.
    fn schedule(&mut self, k: FieldKey, rs: &raw::RawSource) -> (Option<Schedule>, chrono_tz::Tz) {
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
        (schedule, tz)
    }

    /// The request: method, response format, secrets, query and body.
    fn request(&mut self, k: FieldKey, rs: &mut raw::RawSource) -> Request {
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
        let secrets = self.source_secrets(k, &rs.secrets);
        let query = self.params(&k("query"), &rs.query, SOURCE_NAMES);
        let array_style = match rs.array_style.as_deref() {
            None | Some("repeat") => ArrayStyle::Repeat,
            Some("brackets") => ArrayStyle::Brackets,
            Some("comma") => ArrayStyle::Comma,
            Some(o) => {
                self.bad(k("array_style"), format!("`{o}` is not valid; use \"repeat\" (a=1&a=2), \"brackets\" (a[]=1&a[]=2) or \"comma\" (a=1,2)"));
                ArrayStyle::Repeat
            }
        };
        let body = rs
            .body
            .take()
            .map(|b| self.body(&k("body"), b, SOURCE_NAMES));
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
        Request {
            method,
            format,
            secrets,
            query,
            array_style,
            body,
            body_format,
        }
    }

    /// The `secrets` table; its names become what `{{ secret.NAME }}` may refer to.
    fn source_secrets(
        &mut self,
        k: FieldKey,
        raw: &BTreeMap<String, raw::RawSecret>,
    ) -> BTreeMap<String, Secret> {
        self.secret_names = raw.keys().cloned().collect();
        let mut secrets = BTreeMap::new();
        for (n, raw) in raw {
            if let Some(v) = self.secret(&format!("{}.{n}", k("secrets")), raw) {
                secrets.insert(n.clone(), v);
            }
        }
        secrets
    }

    /// How the bookings sit in a response (`items_shape`), and the `success` check, if any.
    fn response_shape(
        &mut self,
        k: FieldKey,
        rs: &mut raw::RawSource,
    ) -> (ItemsShape, Option<SuccessCheck>) {
        let items_shape = match rs.items_shape.as_deref() {
            None | Some("list") => ItemsShape::List,
            Some("keyed") => ItemsShape::Keyed,
            Some(o) => {
                self.bad(k("items_shape"), format!("`{o}` is not valid; use \"list\" (an array) or \"keyed\" (an object keyed by id)"));
                ItemsShape::List
            }
        };
        let success = rs.success.take().and_then(|sc| {
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
        (items_shape, success)
    }

    /// `sync`, and the `[incremental]` table it may call for.
    fn sync(&mut self, k: FieldKey, rs: &mut raw::RawSource) -> (SyncMode, Option<Incremental>) {
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
        let incremental = match (sync, rs.incremental.take()) {
            (SyncMode::Incremental, Some(inc)) => Some(self.incremental(&k("incremental"), inc)),
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
        (sync, incremental)
    }

    /// The `[incremental]` table at `key`: a query or body using `{{ watermark }}`, the overlap
    /// and how often a full pass runs.
    fn incremental(&mut self, key: &str, inc: raw::RawIncremental) -> Incremental {
        let query = self.params(&format!("{key}.query"), &inc.query, INCREMENTAL_NAMES);
        let body = inc
            .body
            .map(|b| self.body(&format!("{key}.body"), b, INCREMENTAL_NAMES));
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
        let watermark = self.watermark(&format!("{key}.watermark"), inc.watermark);
        Incremental {
            query,
            body,
            overlap,
            full_every,
            watermark,
        }
    }

    /// Where the next watermark comes from: `"poll_start"` (the default), `"date_header"`,
    /// `{ header = "NAME" }` or `{ pointer = "/json/pointer" }`.
    fn watermark(&mut self, key: &str, raw: Option<raw::RawWatermark>) -> WatermarkFrom {
        let hint = "use \"poll_start\", \"date_header\", { header = \"X-Page-Generated\" } or { pointer = \"/modifiedTime\" }";
        match raw {
            None => WatermarkFrom::PollStart,
            Some(raw::RawWatermark::Named(n)) => match n.as_str() {
                "poll_start" => WatermarkFrom::PollStart,
                "date_header" => WatermarkFrom::DateHeader,
                other => {
                    self.bad(key, format!("`{other}` is not valid; {hint}"));
                    WatermarkFrom::PollStart
                }
            },
            Some(raw::RawWatermark::Table(t)) => match (t.header, t.pointer) {
                (Some(h), None) => {
                    if reqwest::header::HeaderName::from_bytes(h.as_bytes()).is_err() {
                        self.bad(
                            format!("{key}.header"),
                            format!("`{h}` is not a valid HTTP header name"),
                        );
                    }
                    WatermarkFrom::Header(h)
                }
                (None, Some(p)) => {
                    self.pointer(&format!("{key}.pointer"), &p);
                    if p.is_empty() {
                        self.bad(
                            format!("{key}.pointer"),
                            "must point inside the booking, e.g. \"/modifiedTime\"",
                        );
                    }
                    WatermarkFrom::Pointer(p)
                }
                _ => {
                    self.bad(
                        key,
                        format!("give exactly one of `header` or `pointer`; {hint}"),
                    );
                    WatermarkFrom::PollStart
                }
            },
        }
    }

    /// How gently the source is polled: gaps, retries and rate-limit headers.
    fn politeness(&mut self, k: FieldKey, rs: &mut raw::RawSource) -> Politeness {
        let min_gap = self.duration(&k("min_gap"), rs.min_gap.as_deref(), Duration::ZERO);
        let retries = rs.retries.unwrap_or(3);
        if retries > 10 {
            self.bad(
                k("retries"),
                "at most 10 (a failed cycle is retried at the next tick anyway)",
            );
        }
        Politeness {
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
            remaining_headers: std::mem::take(&mut rs.rate_limit_remaining_headers),
            reset_headers: std::mem::take(&mut rs.rate_limit_reset_headers),
        }
    }

    /// Where the bookings are (`items`) and the pointers that identify one (`id`); also checks
    /// the `status` pointer.
    fn records(&mut self, k: FieldKey, rs: &mut raw::RawSource) -> (String, Vec<String>) {
        let items = rs.items.take().unwrap_or_default();
        self.pointer(&k("items"), &items);
        let id = match rs.id.take() {
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
        (items, id)
    }

    /// Cancelled values, ignored or only-compared fields, the first poll, and what a booking's
    /// disappearance means (with its `[lookup]`). `url` and `items` are the source's, the
    /// lookup's defaults.
    fn change_policy(
        &mut self,
        k: FieldKey,
        rs: &mut raw::RawSource,
        url: Option<&Url>,
        items: &str,
        incremental: Option<&Incremental>,
    ) -> ChangePolicy {
        let cancelled_values = rs
            .cancelled_values
            .take()
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
        let lookup = self.lookup(k, on_disappear, rs.lookup.take(), url, items);
        if on_disappear != OnDisappear::Ignore
            && incremental.is_some_and(|i| i.full_every.is_none())
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
        ChangePolicy {
            cancelled_values,
            ignore_fields: std::mem::take(&mut rs.ignore_fields),
            only_fields: std::mem::take(&mut rs.only_fields),
            first_poll,
            on_disappear,
            lookup,
            max_disappear_share,
        }
    }

    /// The `[lookup]` table, which must go with `on_disappear = "lookup"`: how to ask the source
    /// about one booking that vanished from the list.
    fn lookup(
        &mut self,
        k: FieldKey,
        on_disappear: OnDisappear,
        raw: Option<raw::RawLookup>,
        url: Option<&Url>,
        items: &str,
    ) -> Option<Lookup> {
        match (on_disappear, raw) {
            (OnDisappear::Lookup, Some(l)) => {
                let key = k("lookup");
                let lookup_url = match l.url.as_deref() {
                    Some(u) => self.url(&format!("{key}.url"), Some(u)),
                    None => url.cloned(),
                };
                let query = self.params(&format!("{key}.query"), &l.query, LOOKUP_NAMES);
                let body = l
                    .body
                    .map(|b| self.body(&format!("{key}.body"), b, LOOKUP_NAMES));
                let uses_id = query.iter().any(|(_, v)| param_uses(v, "id"))
                    || body.as_ref().is_some_and(|b| tree_uses(b, "id"));
                if !uses_id {
                    self.bad(
                        format!("{key}.query"),
                        "the lookup must send the booking id, e.g. query = { id = \"{{ id }}\" }",
                    );
                }
                let items = l.items.unwrap_or_else(|| items.to_string());
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
        }
    }

    /// The request timeout and the response size and page count limits.
    fn limits(&mut self, k: FieldKey, rs: &raw::RawSource) -> (Duration, u64, u32, Duration) {
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
        let resume_within = self.positive_duration(
            &k("resume_within"),
            rs.resume_within.as_deref(),
            Duration::from_secs(3600),
        );
        (timeout, max_response_bytes, max_pages, resume_within)
    }

    /// For a GET source: nothing may be configured to go in a request body, since it has none.
    fn get_has_no_body(
        &mut self,
        k: FieldKey,
        incremental: Option<&Incremental>,
        lookup: Option<&Lookup>,
        pagination: &Pagination,
    ) {
        let post_only = "needs method = \"POST\" (a GET request has no body)";
        if incremental.is_some_and(|i| i.body.is_some()) {
            self.bad(k("incremental.body"), post_only);
        }
        if lookup.is_some_and(|l| l.body.is_some()) {
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
}
