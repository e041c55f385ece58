//! Building a source request from its configured templates: the values templates can use
//! (`now`, `today`, `watermark`, `id`, paging values, `secret.NAME`), query parameters in the
//! configured array style, and the JSON or form body.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde_json::{Map, Value};

use super::{PollKind, SourceError};
use crate::config::{
    ArrayStyle, BodyFormat, Pagination, ParamIn, ParamValue, Secret, SourceConfig, SourceMethod,
};
use crate::json::scalar_string;
use crate::template::{self, Escape, Val};

/// The values templates in a source request can use.
pub(super) struct RequestContext<'a> {
    now: DateTime<Utc>,
    tz: chrono_tz::Tz,
    watermark: Option<DateTime<Utc>>,
    id: Option<String>,
    secrets: Option<&'a BTreeMap<String, Secret>>,
    paging: Paging,
}

/// Where pagination stands, for templates (`{{ page }}`, `{{ offset }}`, `{{ limit }}`,
/// `{{ cursor }}`).
#[derive(Debug, Clone, Default, PartialEq)]
pub(super) struct Paging {
    pub(super) page: Option<u64>,
    pub(super) offset: Option<u64>,
    pub(super) limit: Option<u64>,
    pub(super) cursor: Option<String>,
}

impl template::Context for RequestContext<'_> {
    fn now(&self) -> DateTime<Utc> {
        self.now
    }
    fn default_tz(&self) -> chrono_tz::Tz {
        self.tz
    }
    fn name(&self, name: &str) -> Option<Val> {
        match name {
            "watermark" => self.watermark.map(Val::Time),
            "id" => self.id.clone().map(|s| Val::Json(Value::String(s))),
            "page" => self.paging.page.map(|n| Val::Json(Value::from(n))),
            "offset" => self.paging.offset.map(|n| Val::Json(Value::from(n))),
            "limit" => self.paging.limit.map(|n| Val::Json(Value::from(n))),
            "cursor" => self
                .paging
                .cursor
                .clone()
                .map(|c| Val::Json(Value::String(c))),
            other => {
                let name = other.strip_prefix("secret.")?;
                let secret = self.secrets?.get(name)?;
                Some(Val::Json(Value::String(secret.expose().to_string())))
            }
        }
    }
    fn pointer(&self, _root: &str, _pointer: &str) -> Option<Value> {
        None
    }
}

/// One request: query pairs and an optional body.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Parts {
    pub(super) query: Vec<(String, String)>,
    pub(super) body: Option<Map<String, Value>>,
}

pub(super) fn render_params(
    params: &[(String, ParamValue)],
    style: ArrayStyle,
    ctx: &RequestContext,
    out: &mut Vec<(String, String)>,
) -> Result<(), SourceError> {
    let one = |t: &template::Template| {
        t.render(ctx, Escape::None)
            .map_err(|e| SourceError::Template(e.to_string()))
    };
    for (name, v) in params {
        match v {
            ParamValue::One(t) => out.push((name.clone(), one(t)?)),
            ParamValue::Many(ts) => {
                let values = ts.iter().map(one).collect::<Result<Vec<_>, _>>()?;
                match style {
                    ArrayStyle::Repeat => out.extend(values.into_iter().map(|v| (name.clone(), v))),
                    ArrayStyle::Brackets => {
                        out.extend(values.into_iter().map(|v| (format!("{name}[]"), v)))
                    }
                    ArrayStyle::Comma => out.push((name.clone(), values.join(","))),
                }
            }
        }
    }
    Ok(())
}

fn render_body(
    tree: &Value,
    ctx: &RequestContext,
    into: &mut Map<String, Value>,
) -> Result<(), SourceError> {
    let rendered =
        template::render_tree(tree, ctx).map_err(|e| SourceError::Template(e.to_string()))?;
    if let Value::Object(m) = rendered {
        into.extend(m);
    }
    Ok(())
}

fn params_in_body(cfg: &SourceConfig) -> bool {
    matches!(
        cfg.pagination,
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
    )
}

/// The base request of a poll: configured query and body, plus the incremental parameters. An
/// incremental parameter replaces a base parameter of the same name (all its values), and an
/// incremental body member a base member of the same name, so the API never receives a filter
/// twice.
pub(super) fn base(
    cfg: &SourceConfig,
    kind: PollKind,
    now: DateTime<Utc>,
    paging: Paging,
) -> Result<Parts, SourceError> {
    let ctx = RequestContext {
        now,
        tz: cfg.tz,
        watermark: match (kind, &cfg.incremental) {
            (PollKind::Incremental { watermark_ms }, Some(inc)) => {
                DateTime::<Utc>::from_timestamp_millis(
                    watermark_ms - inc.overlap.as_millis() as i64,
                )
            }
            _ => None,
        },
        id: None,
        secrets: Some(&cfg.secrets),
        paging,
    };
    let mut parts = Parts::default();
    let incremental = match (kind, &cfg.incremental) {
        (PollKind::Incremental { .. }, Some(inc)) => Some(inc),
        _ => None,
    };
    let replaced = |name: &str| incremental.is_some_and(|i| i.query.iter().any(|(n, _)| n == name));
    if incremental.is_some_and(|i| !i.query.is_empty()) {
        let kept: Vec<(String, ParamValue)> = cfg
            .query
            .iter()
            .filter(|(n, _)| !replaced(n))
            .cloned()
            .collect();
        render_params(&kept, cfg.array_style, &ctx, &mut parts.query)?;
    } else {
        render_params(&cfg.query, cfg.array_style, &ctx, &mut parts.query)?;
    }
    let mut body = Map::new();
    if let Some(b) = &cfg.body {
        render_body(b, &ctx, &mut body)?;
    }
    if let Some(inc) = incremental {
        render_params(&inc.query, cfg.array_style, &ctx, &mut parts.query)?;
        if let Some(b) = &inc.body {
            render_body(b, &ctx, &mut body)?;
        }
    }
    if cfg.method == SourceMethod::Post || !body.is_empty() || params_in_body(cfg) {
        parts.body = Some(body);
    }
    Ok(parts)
}

/// The lookup request for one booking id. It is self-contained: the list request's filters
/// (date windows, status sets) must not hide the very booking being looked up.
pub(super) fn lookup(
    cfg: &SourceConfig,
    lookup: &crate::config::Lookup,
    id: &str,
    now: DateTime<Utc>,
) -> Result<Parts, SourceError> {
    let ctx = RequestContext {
        now,
        tz: cfg.tz,
        watermark: None,
        id: Some(id.to_string()),
        secrets: Some(&cfg.secrets),
        paging: Paging::default(),
    };
    let mut parts = Parts::default();
    render_params(&lookup.query, cfg.array_style, &ctx, &mut parts.query)?;
    if cfg.method == SourceMethod::Post || lookup.body.is_some() {
        let mut body = Map::new();
        if let Some(b) = &lookup.body {
            render_body(b, &ctx, &mut body)?;
        }
        parts.body = Some(body);
    }
    Ok(parts)
}

/// Adds pagination parameters to a request (an empty parameter name means "only through
/// templates").
pub(super) fn with_param(parts: Parts, param_in: ParamIn, extra: &[(String, Value)]) -> Parts {
    let mut p = parts;
    for (k, v) in extra.iter().filter(|(k, _)| !k.is_empty()) {
        match param_in {
            ParamIn::Query => p
                .query
                .push((k.clone(), scalar_string(v).unwrap_or_default())),
            ParamIn::Body => {
                p.body
                    .get_or_insert_with(Map::new)
                    .insert(k.clone(), v.clone());
            }
        }
    }
    p
}

/// The encoded body and its content type, if the request has a body.
pub(super) fn encode_body(
    body: Option<&Map<String, Value>>,
    format: BodyFormat,
) -> Result<Option<(&'static str, Vec<u8>)>, SourceError> {
    Ok(match (body, format) {
        (None, _) => None,
        (Some(b), BodyFormat::Json) => Some((
            "application/json",
            serde_json::to_vec(b).map_err(|e| SourceError::Template(e.to_string()))?,
        )),
        (Some(b), BodyFormat::Form) => {
            let mut ser = url::form_urlencoded::Serializer::new(String::new());
            let text = |v: &Value| scalar_string(v).unwrap_or_else(|| v.to_string());
            for (k, v) in b {
                match v {
                    Value::Array(items) => {
                        for i in items {
                            ser.append_pair(k, &text(i));
                        }
                    }
                    other => {
                        ser.append_pair(k, &text(other));
                    }
                }
            }
            Some((
                "application/x-www-form-urlencoded",
                ser.finish().into_bytes(),
            ))
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn cfg(extra: &str) -> SourceConfig {
        let text = format!(
            "[sources.s]\nurl = \"http://api.test/v2/bookings\"\nevery = \"1m\"\n{extra}\n"
        );
        Config::from_toml_str(&text, "t.toml")
            .unwrap_or_else(|e| panic!("{e}"))
            .sources
            .remove(0)
    }

    #[test]
    fn query_templates_and_array_styles() {
        let now = DateTime::parse_from_rfc3339("2026-03-29T10:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let ctx = RequestContext {
            now,
            tz: chrono_tz::UTC,
            watermark: None,
            id: None,
            secrets: None,
            paging: Paging::default(),
        };
        for (style, expected) in [
            (
                "repeat",
                vec![
                    ("status", "new"),
                    ("status", "cancelled"),
                    ("from", "2026-03-28"),
                ],
            ),
            (
                "brackets",
                vec![
                    ("status[]", "new"),
                    ("status[]", "cancelled"),
                    ("from", "2026-03-28"),
                ],
            ),
            (
                "comma",
                vec![("status", "new,cancelled"), ("from", "2026-03-28")],
            ),
        ] {
            let c = cfg(&format!(
                "array_style = \"{style}\"\nquery = {{ status = [\"new\", \"cancelled\"], from = \"{{{{ today - 1d }}}}\" }}"
            ));
            let mut out = Vec::new();
            render_params(&c.query, c.array_style, &ctx, &mut out).unwrap();
            let got: Vec<(&str, &str)> =
                out.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
            let mut want = expected.clone();
            want.sort();
            let mut got_sorted = got.clone();
            got_sorted.sort();
            assert_eq!(got_sorted, want, "{style}");
        }
    }

    #[test]
    fn incremental_parameters_replace_base_parameters_of_the_same_name() {
        let c = cfg(concat!(
            "method = \"POST\"\n",
            "query = { from = \"{{ today - 30d }}\", status = [\"a\", \"b\"], keep = \"1\" }\n",
            "body = { since = \"never\", other = 1 }\n",
            "sync = \"incremental\"\n[sources.s.incremental]\noverlap = \"0s\"\n",
            "query = { from = \"{{ watermark | %Y-%m-%d }}\", status = \"c\" }\n",
            "body = { since = \"{{ watermark | %Y-%m-%d }}\" }",
        ));
        let now = DateTime::parse_from_rfc3339("2026-03-29T10:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let wm = DateTime::parse_from_rfc3339("2026-03-28T09:00:00Z")
            .unwrap()
            .timestamp_millis();
        let inc = base(
            &c,
            PollKind::Incremental { watermark_ms: wm },
            now,
            Paging::default(),
        )
        .unwrap();
        let mut q: Vec<(&str, &str)> = inc
            .query
            .iter()
            .map(|(a, b)| (a.as_str(), b.as_str()))
            .collect();
        q.sort();
        assert_eq!(
            q,
            [("from", "2026-03-28"), ("keep", "1"), ("status", "c")],
            "each name once, the incremental value"
        );
        let body = inc.body.unwrap();
        assert_eq!(body["since"], "2026-03-28");
        assert_eq!(body["other"], 1);
        // A full poll sends the base parameters unchanged.
        let full = base(&c, PollKind::Full, now, Paging::default()).unwrap();
        let mut q: Vec<(&str, &str)> = full
            .query
            .iter()
            .map(|(a, b)| (a.as_str(), b.as_str()))
            .collect();
        q.sort();
        assert_eq!(
            q,
            [
                ("from", "2026-02-27"),
                ("keep", "1"),
                ("status", "a"),
                ("status", "b")
            ]
        );
        assert_eq!(full.body.unwrap()["since"], "never");
    }

    #[test]
    fn incremental_polls_add_the_watermark_with_overlap() {
        let c = cfg(
            "sync = \"incremental\"\n[sources.s.incremental]\noverlap = \"10m\"\nquery = { modifiedFrom = \"{{ watermark | %Y-%m-%dT%H:%M:%S }}\" }",
        );
        let now = DateTime::parse_from_rfc3339("2026-03-29T10:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let full = base(&c, PollKind::Full, now, Paging::default()).unwrap();
        assert!(full.query.is_empty());
        let wm = DateTime::parse_from_rfc3339("2026-03-29T09:00:00Z")
            .unwrap()
            .timestamp_millis();
        let inc = base(
            &c,
            PollKind::Incremental { watermark_ms: wm },
            now,
            Paging::default(),
        )
        .unwrap();
        assert_eq!(
            inc.query,
            vec![(
                "modifiedFrom".to_string(),
                "2026-03-29T08:50:00".to_string()
            )]
        );
    }
}
