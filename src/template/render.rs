//! Evaluation: a parsed template and a [`Context`] to text or a typed JSON value (the value being rendered, time formatting and zones, offsets, filters, escaping).

use std::fmt::Write as _;

use chrono::{DateTime, Datelike, NaiveDateTime, Offset, SecondsFormat, TimeDelta, TimeZone, Utc};
use chrono_tz::Tz;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use serde_json::Value;

use super::parse::{Filter, Part, Placeholder, Shift, Term};
use super::{Context, Escape, RenderError, Template, Val};

/// The body of [`Template::render`].
pub(super) fn text(
    template: &Template,
    ctx: &dyn Context,
    escape: Escape,
) -> Result<String, RenderError> {
    let mut out = String::with_capacity(template.text.len() + 16);
    for part in &template.parts {
        match part {
            Part::Lit(s) => out.push_str(s),
            Part::Hole(h) => escape_into(&mut out, &h.eval(ctx)?.into_text(), escape),
        }
    }
    Ok(out)
}

/// The body of [`Template::render_value`].
pub(super) fn value(template: &Template, ctx: &dyn Context) -> Result<Value, RenderError> {
    let mut single = None;
    for part in &template.parts {
        match part {
            Part::Lit(s) if s.trim().is_empty() => {}
            Part::Hole(h) if single.is_none() => single = Some(h),
            _ => return Ok(Value::String(template.render(ctx, Escape::None)?)),
        }
    }
    match single {
        Some(h) => Ok(h.eval(ctx)?.into_value()),
        None => Ok(Value::String(template.text.clone())),
    }
}

/// A value being rendered.
enum V {
    Json(Value),
    Time {
        t: DateTime<Utc>,
        tz: Tz,
        date_only: bool,
    },
}

impl V {
    fn into_value(self) -> Value {
        match self {
            V::Json(v) => v,
            V::Time { t, tz, date_only } => Value::String(default_format(t, tz, date_only)),
        }
    }

    fn into_text(self) -> String {
        match self {
            V::Json(Value::String(s)) => s,
            V::Json(Value::Null) => String::new(),
            V::Json(Value::Bool(b)) => b.to_string(),
            V::Json(Value::Number(n)) => n.to_string(),
            V::Json(v) => serde_json::to_string(&v).unwrap_or_default(),
            V::Time { t, tz, date_only } => default_format(t, tz, date_only),
        }
    }
}

fn describe(v: &Value) -> String {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "true/false",
        Value::Number(_) => "a number",
        Value::String(_) => "text",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
    .into()
}

/// Times are kept to years 1..=9999 (RFC 3339's range), so no zone conversion can overflow.
fn in_range(t: DateTime<Utc>) -> Option<DateTime<Utc>> {
    (1..=9999).contains(&t.year()).then_some(t)
}

fn is_utc(tz: Tz) -> bool {
    matches!(
        tz.name(),
        "UTC" | "Etc/UTC" | "Etc/UCT" | "UCT" | "Universal" | "Etc/Universal" | "Zulu" | "Etc/Zulu"
    )
}

fn iso(t: DateTime<Utc>, tz: Tz) -> String {
    t.with_timezone(&tz)
        .to_rfc3339_opts(SecondsFormat::Secs, is_utc(tz))
}

fn date(t: DateTime<Utc>, tz: Tz) -> String {
    t.with_timezone(&tz).date_naive().to_string()
}

fn default_format(t: DateTime<Utc>, tz: Tz, date_only: bool) -> String {
    if date_only { date(t, tz) } else { iso(t, tz) }
}

/// The instant a wall-clock time in `tz` names: the earlier one when the
/// clock repeats, and the old offset carried past the jump when it skips.
fn resolve_local(tz: Tz, naive: NaiveDateTime) -> Option<DateTime<Utc>> {
    if !(1..=9999).contains(&naive.year()) {
        return None;
    }
    if let Some(d) = tz.from_local_datetime(&naive).earliest() {
        return Some(d.with_timezone(&Utc));
    }
    let before = naive.checked_sub_signed(TimeDelta::try_days(1)?)?;
    let offset = tz.offset_from_local_datetime(&before).earliest()?.fix();
    let utc =
        naive.checked_sub_signed(TimeDelta::try_seconds(i64::from(offset.local_minus_utc()))?)?;
    Some(Utc.from_utc_datetime(&utc))
}

impl Shift {
    fn apply(&self, t: DateTime<Utc>, tz: Tz) -> Option<DateTime<Utc>> {
        let mut t = in_range(t)?;
        if !self.days.is_zero() {
            let local = t.with_timezone(&tz).naive_local();
            t = resolve_local(tz, local.checked_add_signed(self.days)?)?;
        }
        in_range(t.checked_add_signed(self.exact)?)
    }
}

impl Placeholder {
    fn out_of_range(&self) -> RenderError {
        RenderError::OutOfRange {
            placeholder: self.src.clone(),
        }
    }

    fn not_a_time(&self, what: String, v: &Value) -> RenderError {
        RenderError::NotATime {
            placeholder: self.src.clone(),
            what,
            found: describe(v),
        }
    }

    fn eval(&self, ctx: &dyn Context) -> Result<V, RenderError> {
        // Instants (`now`, `watermark`, ...) format in UTC unless a `tz` filter says otherwise:
        // an API that wants UTC must never get local wall-clock time by accident. `today` is a
        // calendar date, so it belongs to the default zone (the source's `timezone`).
        let tz = ctx.default_tz();
        let time = |t: DateTime<Utc>, zone: Tz, date_only: bool| -> Result<V, RenderError> {
            let t = in_range(t).ok_or_else(|| self.out_of_range())?;
            Ok(V::Time {
                t,
                tz: zone,
                date_only,
            })
        };
        let mut v = match &self.term {
            Term::Now => time(ctx.now(), chrono_tz::UTC, false)?,
            Term::Today => {
                let now = in_range(ctx.now()).ok_or_else(|| self.out_of_range())?;
                let midnight = now
                    .with_timezone(&tz)
                    .date_naive()
                    .and_time(chrono::NaiveTime::MIN);
                let t = resolve_local(tz, midnight).ok_or_else(|| self.out_of_range())?;
                time(t, tz, true)?
            }
            Term::Name(n) => match ctx.name(n) {
                Some(Val::Time(t)) => time(t, chrono_tz::UTC, false)?,
                Some(Val::Json(v)) => V::Json(v),
                None => V::Json(Value::Null),
            },
            Term::Pointer { root, pointer } => {
                V::Json(ctx.pointer(root, pointer).unwrap_or(Value::Null))
            }
            Term::Str(s) => V::Json(Value::String(s.clone())),
        };
        if let Some(shift) = &self.offset {
            v = match v {
                V::Time {
                    t,
                    tz: zone,
                    date_only,
                } => V::Time {
                    t: shift.apply(t, zone).ok_or_else(|| self.out_of_range())?,
                    tz: zone,
                    date_only: date_only && shift.exact.is_zero(),
                },
                V::Json(Value::Null) => V::Json(Value::Null),
                V::Json(other) => {
                    return Err(self.not_a_time(format!("offset `{}`", shift.src), &other));
                }
            };
        }
        for f in &self.filters {
            v = self.apply(f, v)?;
        }
        Ok(v)
    }

    fn apply(&self, f: &Filter, v: V) -> Result<V, RenderError> {
        match f {
            Filter::Default(text) => {
                return Ok(match v {
                    V::Json(Value::Null) => V::Json(Value::String(text.clone())),
                    other => other,
                });
            }
            Filter::Upper | Filter::Lower => {
                return Ok(match v {
                    V::Json(Value::Null) => v,
                    other => {
                        let text = other.into_text();
                        V::Json(Value::String(if *f == Filter::Upper {
                            text.to_uppercase()
                        } else {
                            text.to_lowercase()
                        }))
                    }
                });
            }
            _ => {}
        }
        let (t, tz, date_only) = match v {
            V::Time { t, tz, date_only } => (t, tz, date_only),
            V::Json(Value::Null) => return Ok(v),
            V::Json(other) => {
                return Err(self.not_a_time(format!("filter `{}`", f.label()), &other));
            }
        };
        let out = match f {
            Filter::Tz(zone) => {
                return Ok(V::Time {
                    t,
                    tz: *zone,
                    date_only,
                });
            }
            Filter::Iso => Value::String(iso(t, tz)),
            Filter::Date => Value::String(date(t, tz)),
            Filter::Unix => Value::from(t.timestamp()),
            Filter::UnixMs => Value::from(t.timestamp_millis()),
            Filter::Format { src, items } => {
                let mut s = String::new();
                write!(
                    s,
                    "{}",
                    t.with_timezone(&tz).format_with_items(items.iter())
                )
                .map_err(|_| RenderError::Format {
                    placeholder: self.src.clone(),
                    format: src.clone(),
                })?;
                Value::String(s)
            }
            Filter::Default(_) | Filter::Upper | Filter::Lower => {
                return Ok(V::Time { t, tz, date_only });
            }
        };
        Ok(V::Json(out))
    }
}

const URL_COMPONENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

fn escape_into(out: &mut String, s: &str, escape: Escape) {
    match escape {
        Escape::None => out.push_str(s),
        // A value of dots only (`.`, `..`) would be a dot segment, which URL parsing resolves:
        // its dots are encoded too. (`%2E` is still a dot segment to URL parsers, so a URL
        // template also checks the rendered shape; see `UrlTemplate`.)
        Escape::UrlComponent if !s.is_empty() && s.bytes().all(|b| b == b'.') => {
            for _ in 0..s.len() {
                out.push_str("%2E");
            }
        }
        Escape::UrlComponent => out.extend(utf8_percent_encode(s, URL_COMPONENT)),
        Escape::SubjectToken => super::subject::escape_into(out, s),
        Escape::JsonString => {
            for c in s.chars() {
                match c {
                    '"' => out.push_str("\\\""),
                    '\\' => out.push_str("\\\\"),
                    '\n' => out.push_str("\\n"),
                    '\r' => out.push_str("\\r"),
                    '\t' => out.push_str("\\t"),
                    '\u{08}' => out.push_str("\\b"),
                    '\u{0c}' => out.push_str("\\f"),
                    c if u32::from(c) < 0x20 => {
                        let _ = write!(out, "\\u{:04x}", u32::from(c));
                    }
                    c => out.push(c),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{GUEST, ctx, r, rerr, rv};
    use super::*;
    use serde_json::json;

    #[test]
    fn times_and_formats() {
        assert_eq!(r("{{ now }}"), "2026-03-29T00:30:00Z");
        assert_eq!(r("{{now}}"), "2026-03-29T00:30:00Z");
        assert_eq!(
            r("{{ now - 1h | %Y-%m-%dT%H:%M:%S }}"),
            "2026-03-28T23:30:00"
        );
        assert_eq!(r("{{ now-1h|%Y-%m-%dT%H:%M:%S }}"), "2026-03-28T23:30:00");
        assert_eq!(r("{{ today + 30d }}"), "2026-04-28");
        assert_eq!(r("{{ today }}"), "2026-03-29");
        assert_eq!(r("{{ today - 1w }}"), "2026-03-22");
        assert_eq!(r("{{ today + 12h }}"), "2026-03-29T12:00:00Z");
        assert_eq!(r("{{ today | iso }}"), "2026-03-29T00:00:00Z");
        assert_eq!(r("{{ now | %Y%m%d %H:%M:%S }}"), "20260329 00:30:00");
        assert_eq!(r("{{ now | date }}"), "2026-03-29");
        assert_eq!(r("{{ now - 1d12h | iso }}"), "2026-03-27T12:30:00Z");
        assert_eq!(r("{{ now + 1w 2d }}"), "2026-04-07T00:30:00Z");
        assert_eq!(r("{{ now - 90m }}"), "2026-03-28T23:00:00Z");
        assert_eq!(r("{{ now + 30s | %H:%M:%S }}"), "00:30:30");
        assert_eq!(r("{{ watermark - 10m | iso }}"), "2026-03-28T22:50:00Z");
        assert_eq!(r("{{ watermark }}"), "2026-03-28T23:00:00Z");
    }

    #[test]
    fn unix_is_a_number() {
        assert_eq!(r("{{ now | unix }}"), "1774744200");
        assert_eq!(rv("{{ now | unix }}"), json!(1774744200));
        assert_eq!(rv("{{ now | unix_ms }}"), json!(1774744200000_i64));
        assert_eq!(rv("{{ now | iso }}"), json!("2026-03-29T00:30:00Z"));
    }

    #[test]
    fn tz_filter_and_dst() {
        // UK summer time starts at 01:00 UTC on 2026-03-29.
        assert_eq!(
            r("{{ now | tz Europe/London | iso }}"),
            "2026-03-29T00:30:00+00:00"
        );
        assert_eq!(
            r("{{ now + 1h | tz Europe/London | iso }}"),
            "2026-03-29T02:30:00+01:00"
        );
        assert_eq!(
            r("{{ now + 1h | tz Europe/London }}"),
            "2026-03-29T02:30:00+01:00"
        );
        assert_eq!(
            r("{{ now | tz Europe/Berlin | %H:%M %Z %z }}"),
            "01:30 CET +0100"
        );
        assert_eq!(r("{{ now | tz America/New_York | date }}"), "2026-03-28");
        assert_eq!(r("{{ now | tz UTC | iso }}"), "2026-03-29T00:30:00Z");
    }

    #[test]
    fn default_zone_today_and_calendar_days() {
        let mut c = ctx();
        c.tz = chrono_tz::Europe::Berlin;
        let rc = |t: &str| {
            Template::parse(t)
                .unwrap()
                .render(&c, Escape::None)
                .unwrap()
        };
        // 00:30Z is 01:30 CET; Berlin switches to CEST at 01:00Z the same day.
        assert_eq!(rc("{{ today }}"), "2026-03-29");
        assert_eq!(rc("{{ today | iso }}"), "2026-03-29T00:00:00+01:00");
        assert_eq!(rc("{{ today + 1d | iso }}"), "2026-03-30T00:00:00+02:00");
        assert_eq!(rc("{{ today | tz UTC | iso }}"), "2026-03-28T23:00:00Z");
        // Instants stay in UTC unless asked: no local wall-clock time sent by accident.
        assert_eq!(rc("{{ now }}"), "2026-03-29T00:30:00Z");
        assert_eq!(rc("{{ now | %Y-%m-%dT%H:%M:%S }}"), "2026-03-29T00:30:00");
        assert_eq!(
            rc("{{ now | tz Europe/Berlin | iso }}"),
            "2026-03-29T01:30:00+01:00"
        );
        assert_eq!(
            rc("{{ now + 1d | unix }}"),
            (1774744200 + 24 * 3600).to_string()
        );
    }

    #[test]
    fn literal_text_untouched() {
        assert_eq!(r("page={{ page }}"), "page=3");
        assert_eq!(
            r("a }} b {{ page }}&x={{ event.id }}}"),
            "a }} b 3&x=evt_1}"
        );
        let t = Template::parse("p=1&q=a b").unwrap();
        assert!(t.is_literal());
        assert_eq!(t.text(), "p=1&q=a b");
        assert_eq!(t.render(&ctx(), Escape::UrlComponent).unwrap(), "p=1&q=a b");
        assert_eq!(
            r(r#"{{ "{{" }} x {{ "a \"b\" \\ }}" }}"#),
            r#"{{ x a "b" \ }}"#
        );
        assert_eq!(r("{{ booking/booking~1index }}"), "slash");
        assert_eq!(r("{{ booking/rooms/1/id }}-{{ booking/id }}"), "r2-42");
        assert_eq!(r("{{ list }}|{{ booking/guest/vip }}"), "[1,\"a\"]|true");
        assert_eq!(r("[{{ missing }}][{{ nothing }}]"), "[][]");
        assert!(!Template::parse("{{ page }}").unwrap().is_literal());
    }

    #[test]
    fn url_component_escaping() {
        let t = Template::parse("https://x/y?g={{ booking/guest/name }}&p={{ page }}").unwrap();
        let out = t.render(&ctx(), Escape::UrlComponent).unwrap();
        let value = out
            .strip_prefix("https://x/y?g=")
            .and_then(|s| s.strip_suffix("&p=3"))
            .unwrap();
        for bad in ['&', '=', '/', '?', '#', ' ', '"', '\''] {
            assert!(!value.contains(bad), "{bad:?} in {value}");
        }
        assert!(value.is_ascii());
        let decoded = percent_encoding::percent_decode_str(value)
            .decode_utf8()
            .unwrap();
        assert_eq!(decoded, GUEST);
        assert_eq!(r("{{ \"a-b.c_d~e\" }}"), "a-b.c_d~e");
    }

    #[test]
    fn dot_only_values_are_percent_encoded_in_urls() {
        let url = |t: &str| {
            Template::parse(t)
                .unwrap()
                .render(&ctx(), Escape::UrlComponent)
                .unwrap()
        };
        assert_eq!(url("/a/{{ \"..\" }}/b"), "/a/%2E%2E/b");
        assert_eq!(url("/a/{{ \".\" }}/b"), "/a/%2E/b");
        assert_eq!(url("/a/{{ \"...\" }}"), "/a/%2E%2E%2E");
        assert_eq!(url("/a/{{ \"a.b\" }}.{{ \"..x\" }}"), "/a/a.b...x");
        assert_eq!(r("{{ \"..\" }}"), "..", "only URLs encode them");
    }

    #[test]
    fn json_string_escaping() {
        let t = Template::parse("{{ booking/guest/name }}-{{ \"x\ny\t\u{1}\" }}").unwrap();
        let out = t.render(&ctx(), Escape::JsonString).unwrap();
        let parsed: Value = serde_json::from_str(&format!("\"{out}\"")).unwrap();
        assert_eq!(parsed, json!(format!("{GUEST}-x\ny\t\u{1}")));
    }

    #[test]
    fn render_value_typing() {
        assert_eq!(rv("{{ page }}"), json!(3));
        assert_eq!(rv("  {{ page }} \n"), json!(3));
        assert_eq!(rv("p{{ page }}"), json!("p3"));
        assert_eq!(rv("{{ page }}{{ page }}"), json!("33"));
        assert_eq!(rv("{{ missing }}"), Value::Null);
        assert_eq!(rv("{{ nothing }}"), Value::Null);
        assert_eq!(rv("{{ booking/nope }}"), Value::Null);
        assert_eq!(rv("{{ missing | default \"x\" }}"), json!("x"));
        assert_eq!(rv("{{ nothing | default \"x\" }}"), json!("x"));
        assert_eq!(rv("{{ page | default \"x\" }}"), json!(3));
        assert_eq!(
            rv("{{ booking/guest/note | default\"n/a\" }}"),
            json!("n/a")
        );
        assert_eq!(rv("{{ booking/guest/vip }}"), json!(true));
        assert_eq!(rv("{{ booking/rooms/0 }}"), json!({"id": "r1"}));
        assert_eq!(rv("plain"), json!("plain"));
        assert_eq!(rv("{{ today }}"), json!("2026-03-29"));
        // A missing value passes through time operations to a later default.
        assert_eq!(
            rv("{{ missing - 10m | tz Europe/Berlin | iso | default \"none\" }}"),
            json!("none")
        );
        assert_eq!(rv("{{ event.id | upper }}"), json!("EVT_1"));
        assert_eq!(rv("{{ \"AbC\" | lower }}"), json!("abc"));
        assert_eq!(rv("{{ page | upper }}"), json!("3"));
        assert_eq!(rv("{{ missing | upper }}"), Value::Null);
    }

    #[test]
    fn render_errors() {
        assert!(matches!(
            rerr("{{ page - 1d }}"),
            RenderError::NotATime { .. }
        ));
        let e = rerr("{{ page | iso }}");
        assert_eq!(
            e.to_string(),
            "{{ page | iso }}: filter `iso` needs a time, but the value is a number"
        );
        assert!(matches!(
            rerr("{{ event.id | %Y }}"),
            RenderError::NotATime { .. }
        ));
        assert!(matches!(
            rerr("{{ now + 99999999w }}"),
            RenderError::OutOfRange { .. }
        ));
        assert!(matches!(
            rerr("{{ far | iso }}"),
            RenderError::OutOfRange { .. }
        ));
        assert!(matches!(
            rerr("{{ far - 1d }}"),
            RenderError::OutOfRange { .. }
        ));
        assert!(matches!(
            rerr("{{ now - 99999999999s }}"),
            RenderError::OutOfRange { .. }
        ));
    }
}
