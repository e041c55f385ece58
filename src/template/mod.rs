//! Value templates: the one `{{ expr }}` syntax pollhook uses to fill in source request parameters and bodies and webhook URLs and bodies, with its parser, its checks and its renderer.
//!
//! # Template syntax
//!
//! Wherever pollhook fills in a value (a source request's query parameters
//! and body, a webhook's URL and body) the setting is a *template*: literal
//! text with `{{ expr }}` placeholders. Text outside placeholders is copied
//! exactly as written. Whitespace inside the braces is optional, so
//! `{{page}}` and `{{ page }}` are the same. With the current time
//! 2026-03-29T00:30:00Z, a watermark of 2026-03-28T23:00:00Z and page 3:
//!
//! ```text
//! from={{ today - 7d }}&to={{ today + 30d }}        ->  from=2026-03-22&to=2026-04-28
//! modifiedSince={{ watermark - 10m | iso }}         ->  modifiedSince=2026-03-28T22:50:00Z
//! arrival={{ now | %Y%m%d }}                        ->  arrival=20260329
//! page={{ page }}                                   ->  page=3
//! https://hooks.example.com/{{ booking/id }}?type={{ event.type }}
//! ```
//!
//! An expression is a *term*, optionally moved by an *offset*, followed by
//! any number of *filters*:
//!
//! ```text
//! {{ term }}    {{ term + offset }}    {{ term - offset | filter | filter }}
//! ```
//!
//! ## Terms
//!
//! | term | value |
//! |------|-------|
//! | `now` | the current time; formatted in UTC unless a `tz` filter says otherwise |
//! | `today` | midnight at the start of the current day in the default time zone (the source's `timezone`, UTC by default), formatted in that zone |
//! | `watermark`, `page`, `offset`, `limit`, `cursor`, `event.id`, `event.type`, … | a named value. Names are letters, digits and `_`, not starting with a digit, joined by dots. Which names exist depends on where the template is used: for example `watermark` only in incremental polls. A template that uses a name that is not available where it is used is rejected when the configuration is loaded. |
//! | `booking/guest/name`, `booking/rooms/0/id` | a value inside a JSON document: a root name, then a [JSON Pointer](https://www.rfc-editor.org/rfc/rfc6901) starting at the first `/`. Array elements are numbered from 0. Inside a key write `~1` for `/` and `~0` for `~`: `booking/booking~1index` reads the key `booking/index`. The pointer ends at whitespace, `\|` or `}}`. |
//! | `"text"` | a string literal. Write `\"` for a quote and `\\` for a backslash. To output a literal `{{`, write `{{ "{{" }}`. |
//!
//! A value may be *missing* (an unknown name, a pointer to nothing); it is
//! treated like JSON `null`. A `}}` outside a placeholder is ordinary text.
//!
//! ## Offsets
//!
//! A time can be moved forwards (`+`) or backwards (`-`) by one or more
//! `<number><unit>` parts: `now - 10m`, `today + 30d`, `now - 1d12h`,
//! `now + 1w 2d`.
//!
//! | unit | meaning |
//! |------|---------|
//! | `s` | seconds |
//! | `m` | minutes |
//! | `h` | hours |
//! | `d` | days |
//! | `w` | weeks (7 days) |
//!
//! Times that are instants (`now`, `watermark`, `event.detected_at`) are
//! formatted in UTC unless a `tz` filter names another zone, so an API that
//! expects UTC never receives local wall-clock time by accident. Only `today`,
//! a calendar date, belongs to the default time zone.
//!
//! `s`, `m` and `h` are exact durations. `d` and `w` move the calendar
//! date in the value's zone and keep the wall-clock time, so
//! `today + 1d` is always the next midnight, even across a daylight-saving
//! change (in UTC a day is simply 24 hours). An offset on a value that is
//! not a time (a number, some text) is an error; a missing value stays
//! missing.
//!
//! ## Filters
//!
//! Filters follow a `|` and are applied from left to right.
//!
//! | filter | result |
//! |--------|--------|
//! | `tz Europe/Berlin` | later filters format the time in this IANA time zone (otherwise instants are formatted in UTC and `today` in the default zone). It changes formatting only: `today` is always midnight in the default time zone. |
//! | `iso` | RFC 3339 with seconds: `2026-03-29T00:30:00Z` in UTC, with the zone's offset otherwise: `2026-03-29T02:30:00+01:00` (after `tz Europe/London`) |
//! | `date` | the date, `2026-03-29` (the same as `%Y-%m-%d`) |
//! | `unix` | seconds since 1970-01-01T00:00:00Z, as a number: `1774744200` |
//! | `unix_ms` | milliseconds since 1970-01-01T00:00:00Z, as a number |
//! | anything else containing `%` | a strftime format, e.g. `%Y-%m-%d`, `%Y%m%d %H:%M:%S`, `%Y-%m-%dT%H:%M:%S`, `%d.%m.%Y`; `%Z` is the zone's abbreviation and `%z` its offset; `%%` is a literal `%` (the specifiers are [chrono's](https://docs.rs/chrono/latest/chrono/format/strftime/index.html)). A format cannot contain `\|` or `}}`. |
//! | `default "text"` | `text` when the value is missing or null, otherwise the value unchanged |
//! | `upper`, `lower` | the value as text, in upper or lower case |
//!
//! `tz`, `iso`, `date`, `unix`, `unix_ms` and formats need a time; used on
//! anything else they are an error, except that a missing value passes
//! through unchanged so that a later `default` can replace it:
//! `{{ watermark | iso | default "1970-01-01T00:00:00Z" }}`.
//!
//! ## Output
//!
//! - A time without a formatting filter is written as `iso`, except that
//!   `today` (also with whole `d`/`w` offsets) is written as `date`.
//! - Text is written as it is; numbers and `true`/`false` in their JSON
//!   spelling; a missing value or `null` as nothing; lists and objects as
//!   compact JSON.
//! - Each placeholder's value is escaped for where it goes: in a URL it is
//!   percent-encoded (everything except `A-Z a-z 0-9 - . _ ~`; a value of
//!   dots only, such as `..`, has its dots encoded too), inside a JSON string
//!   it is JSON-escaped. The literal text you wrote is never changed. A
//!   webhook URL rendered from a template must keep the template's scheme,
//!   host, port, path segments (their number and literal parts) and query
//!   names; a value that would change them (`.` or `..` as a whole path
//!   segment, which URL rules resolve even when encoded) fails the attempt.
//! - In a JSON body, a string that is exactly one placeholder (spaces
//!   around it allowed) is replaced by the typed value: `"{{ page }}"`
//!   becomes the number `3`, `"{{ now | unix }}"` a number, a missing value
//!   `null`. A string with other text around its placeholders stays a
//!   string. Keys are never templated.
//!
//! ## Errors
//!
//! Mistakes are reported when the configuration is loaded, with the
//! template, the byte position (counted from 0) and what was expected:
//!
//! ```text
//! template "{{ now | isoo }}", byte 9: unknown filter `isoo`; valid filters are tz <IANA zone> (e.g. tz Europe/Berlin), iso, date, unix, unix_ms, default "text", upper, lower, or a strftime format containing % (e.g. %Y-%m-%d)
//! template "{{ now - 10x }}", byte 11: bad offset unit `x`; valid units are s (seconds), m (minutes), h (hours), d (days), w (weeks), e.g. `now - 10m` or `today + 1d12h`
//! ```

mod beds24;
pub mod names;
mod parse;
mod render;
mod subject;
mod tree;
mod url_template;

pub use beds24::{BEDS24_VARIABLES, from_beds24_brackets};
pub use subject::{check_subject, subject_token};
pub use tree::{TemplateTree, check_tree, render_tree};
pub use url_template::{UrlTemplate, UrlTemplateError};

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use serde_json::Value;

use parse::{Part, Placeholder, Term};

/// A value a [`Context`] hands to a template: a JSON value or a point in time.
#[derive(Debug, Clone, PartialEq)]
pub enum Val {
    /// A JSON value: text, a number, `true`/`false`, `null`, a list or an object.
    Json(Value),
    /// A point in time; offsets and time filters apply to it.
    Time(DateTime<Utc>),
}

/// Where a template's terms get their values from at render time.
pub trait Context {
    /// The current time, the value of `now` (and the day `today` is taken from).
    fn now(&self) -> DateTime<Utc>;
    /// The zone for `today`, for `d`/`w` offsets and for formatting when no `tz` filter is given.
    fn default_tz(&self) -> Tz {
        chrono_tz::UTC
    }
    /// A dotted name (`watermark`, `page`, `event.id`); None if unknown/missing.
    fn name(&self, name: &str) -> Option<Val>;
    /// A root plus JSON Pointer (`booking`, "/guest/name"); None if missing.
    fn pointer(&self, root: &str, pointer: &str) -> Option<Value>;
}

const VALID_TERMS: &str = "`now`, `today`, a name such as `page` or `event.id`, a pointer such as `booking/guest/name`, or a \"string\"";
const VALID_FILTERS: &str = "tz <IANA zone> (e.g. tz Europe/Berlin), iso, date, unix, unix_ms, default \"text\", upper, lower, or a strftime format containing % (e.g. %Y-%m-%d)";
const VALID_UNITS: &str =
    "s (seconds), m (minutes), h (hours), d (days), w (weeks), e.g. `now - 10m` or `today + 1d12h`";

/// A template that cannot be used: a syntax mistake (with the template text
/// and the byte position, counted from 0) or a name that is not available.
#[derive(Debug, Clone, thiserror::Error, PartialEq)]
pub enum TemplateError {
    /// A `{{` with no `}}` after it.
    #[error(
        "template {template:?}, byte {pos}: `{{{{` is never closed; expected `}}}}` to end the placeholder"
    )]
    Unterminated {
        /// The whole template.
        template: String,
        /// Where the `{{` is.
        pos: usize,
    },
    /// `{{}}` or `{{   }}`.
    #[error("template {template:?}, byte {pos}: empty placeholder; expected {terms}", terms = VALID_TERMS)]
    Empty {
        /// The whole template.
        template: String,
        /// Where the `{{` is.
        pos: usize,
    },
    /// A `"` string literal with no closing `"`.
    #[error(
        "template {template:?}, byte {pos}: string is never closed; expected a closing `\"` (write `\\\"` for a quote inside it)"
    )]
    UnterminatedString {
        /// The whole template.
        template: String,
        /// Where the opening `"` is.
        pos: usize,
    },
    /// A filter name that does not exist.
    #[error("template {template:?}, byte {pos}: unknown filter `{filter}`; valid filters are {valid}", valid = VALID_FILTERS)]
    UnknownFilter {
        /// The whole template.
        template: String,
        /// Where the filter starts.
        pos: usize,
        /// The unknown filter's name.
        filter: String,
    },
    /// An offset part whose unit is not one of `s m h d w`.
    #[error("template {template:?}, byte {pos}: bad offset unit `{unit}`; valid units are {valid}", valid = VALID_UNITS)]
    BadOffsetUnit {
        /// The whole template.
        template: String,
        /// Where the unit is.
        pos: usize,
        /// The unit as written (empty if there was none).
        unit: String,
    },
    /// `tz` with a name that is not an IANA time zone.
    #[error(
        "template {template:?}, byte {pos}: unknown time zone `{zone}`; expected an IANA name such as Europe/Berlin, America/New_York or UTC"
    )]
    UnknownTimeZone {
        /// The whole template.
        template: String,
        /// Where the zone name is.
        pos: usize,
        /// The zone as written.
        zone: String,
    },
    /// A strftime format with an unknown or unusable `%` specifier.
    #[error(
        "template {template:?}, byte {pos}: bad time format `{format}`; expected strftime specifiers such as %Y %m %d %H %M %S %z %Z (write %% for a literal %)"
    )]
    BadFormat {
        /// The whole template.
        template: String,
        /// Where the format is.
        pos: usize,
        /// The format as written.
        format: String,
    },
    /// An offset or time filter on something that can never be a time
    /// (a string literal, a document value, already formatted text).
    #[error("template {template:?}, byte {pos}: {what} needs a time, but {reason}")]
    NotATime {
        /// The whole template.
        template: String,
        /// Where the offset or filter is.
        pos: usize,
        /// What needed the time, e.g. "filter `iso`".
        what: String,
        /// Why the value is not a time.
        reason: String,
    },
    /// Anything else that is not valid syntax.
    #[error("template {template:?}, byte {pos}: expected {expected}, found {found}")]
    Syntax {
        /// The whole template.
        template: String,
        /// Where the unexpected text is.
        pos: usize,
        /// What would have been valid there.
        expected: String,
        /// What was there instead.
        found: String,
    },
    /// A name or pointer root that is not available where the template is used.
    #[error(
        "template {template:?}, byte {pos}: `{name}` is not available here; available: now, today{}",
        fmt_allowed(.allowed)
    )]
    NameNotAllowed {
        /// The whole template.
        template: String,
        /// Where the placeholder using the name starts.
        pos: usize,
        /// The name (or pointer root) that is not available.
        name: String,
        /// The names that are available besides `now` and `today`.
        allowed: Vec<String>,
    },
}

/// The names after "now, today": each once, in the given order, without `now` and `today`
/// themselves (the vocabularies list them too).
fn fmt_allowed(allowed: &[String]) -> String {
    let mut seen: Vec<&str> = vec!["now", "today"];
    let mut out = String::new();
    for a in allowed {
        if !seen.contains(&a.as_str()) {
            seen.push(a);
            out.push_str(", ");
            out.push_str(a);
        }
    }
    out
}

/// A template that parsed but could not be filled with the values at hand.
#[derive(Debug, Clone, thiserror::Error, PartialEq)]
pub enum RenderError {
    /// An offset or a time filter applied to a value that is not a time.
    #[error("{placeholder}: {what} needs a time, but the value is {found}")]
    NotATime {
        /// The placeholder's text, e.g. `{{ page - 1d }}`.
        placeholder: String,
        /// What needed the time, e.g. "offset `- 1d`" or "filter `iso`".
        what: String,
        /// What kind of value it was instead, e.g. "a number".
        found: String,
    },
    /// A time outside the years 1 to 9999 (after an offset, or as given).
    #[error("{placeholder}: the time is outside the years 1 to 9999")]
    OutOfRange {
        /// The placeholder's text.
        placeholder: String,
    },
    /// A time format that could not be written.
    #[error("{placeholder}: cannot format the time with `{format}`")]
    Format {
        /// The placeholder's text.
        placeholder: String,
        /// The format.
        format: String,
    },
}

/// How each placeholder's value is escaped by [`Template::render`] (literal text is never escaped).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Escape {
    /// Inserted as it is.
    None,
    /// Percent-encoded: everything except `A-Z a-z 0-9 - . _ ~` (for a URL path segment or query
    /// value); a value of dots only has its dots encoded as well (`..` is `%2E%2E`).
    UrlComponent,
    /// Escaped for inside a JSON string literal, without the surrounding quotes.
    JsonString,
    /// Escaped to stay inside one NATS subject token (see [`subject_token`]).
    SubjectToken,
}

/// A JSON tree's string templates failed to parse, check or render; `pointer` is the JSON Pointer of the string.
#[derive(Debug, Clone, thiserror::Error, PartialEq)]
pub enum TreeError {
    /// The string at `pointer` is not a valid template (or uses an unavailable name).
    #[error("{pointer}: {source}")]
    Parse {
        /// JSON Pointer of the string.
        pointer: String,
        /// What is wrong with it.
        source: TemplateError,
    },
    /// The string at `pointer` could not be rendered.
    #[error("{pointer}: {source}")]
    Render {
        /// JSON Pointer of the string.
        pointer: String,
        /// What went wrong.
        source: RenderError,
    },
}

/// A parsed template: parse once (at configuration time), render many times.
#[derive(Debug, Clone, PartialEq)]
pub struct Template {
    text: String,
    parts: Vec<Part>,
}

impl Template {
    /// Parses `text`; errors name the byte position and what was expected there.
    pub fn parse(text: &str) -> Result<Template, TemplateError> {
        Ok(Template {
            text: text.into(),
            parts: parse::parts(text)?,
        })
    }

    /// The template as written.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// True when there are no placeholders.
    pub fn is_literal(&self) -> bool {
        !self.parts.iter().any(|p| matches!(p, Part::Hole(_)))
    }

    fn holes(&self) -> impl Iterator<Item = &Placeholder> {
        self.parts.iter().filter_map(|p| match p {
            Part::Hole(h) => Some(&**h),
            Part::Lit(_) => None,
        })
    }

    /// The roots/names used, each once, in order of first use: "now", "today",
    /// "watermark", "event.id", "booking" (for pointer terms). For configuration
    /// checks such as "watermark is only available in incremental polls".
    pub fn names(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for h in self.holes() {
            let name = match &h.term {
                Term::Now => "now",
                Term::Today => "today",
                Term::Name(n) => n,
                Term::Pointer { root, .. } => root,
                Term::Str(_) => continue,
            };
            if !out.iter().any(|o| o == name) {
                out.push(name.into());
            }
        }
        out
    }

    /// Fails with the offending name if any name or pointer root is not in
    /// `allowed`. `now` and `today` are always allowed; an allowed name also
    /// allows the names below it (`event` allows `event.id`, `beds24` allows
    /// `beds24.BOOKID`).
    pub fn check_names(&self, allowed: &[&str]) -> Result<(), TemplateError> {
        for h in self.holes() {
            let name = match &h.term {
                Term::Now | Term::Today | Term::Str(_) => continue,
                Term::Name(n) => n,
                Term::Pointer { root, .. } => root,
            };
            let ok = allowed.iter().any(|a| {
                name == a
                    || name
                        .strip_prefix(a)
                        .is_some_and(|rest| rest.starts_with('.'))
            });
            if !ok {
                return Err(TemplateError::NameNotAllowed {
                    template: self.text.clone(),
                    pos: h.pos,
                    name: name.clone(),
                    allowed: allowed.iter().map(|a| a.to_string()).collect(),
                });
            }
        }
        Ok(())
    }

    /// Interpolates to a string; each placeholder's value is stringified (strings
    /// as-is, numbers/bools in JSON spelling, null/missing -> "", arrays/objects ->
    /// compact JSON, times per their filters) and then escaped with `escape`.
    /// Literal text is NOT escaped.
    pub fn render(&self, ctx: &dyn Context, escape: Escape) -> Result<String, RenderError> {
        render::text(self, ctx, escape)
    }

    /// If the template is exactly one placeholder (surrounding whitespace
    /// allowed), that placeholder's typed value (numbers stay numbers; `unix` is
    /// a number; times become strings formatted per the filters; missing ->
    /// `Value::Null`); otherwise the interpolated string (unescaped) as
    /// `Value::String`. Used to fill JSON bodies so values are always correctly
    /// typed and encoded.
    pub fn render_value(&self, ctx: &dyn Context) -> Result<Value, RenderError> {
        render::value(self, ctx)
    }
}

/// Shared test fixtures (a [`Context`] with fixed values and render/parse
/// shorthands) for this module's tests and its submodules' tests.
#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    pub(super) struct Ctx {
        pub(super) tz: Tz,
        booking: Value,
    }

    pub(super) const GUEST: &str = "Zoë \"Ann\" O'Brien & Co = a/b? #1 \\ 名前";

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    pub(super) fn ctx() -> Ctx {
        Ctx {
            tz: chrono_tz::UTC,
            booking: json!({
                "id": 42,
                "guest": {"name": GUEST, "vip": true, "note": null},
                "rooms": [{"id": "r1"}, {"id": "r2"}],
                "booking/index": "slash",
                "arrival": "2026-04-01",
            }),
        }
    }

    impl Context for Ctx {
        fn now(&self) -> DateTime<Utc> {
            at("2026-03-29T00:30:00Z")
        }
        fn default_tz(&self) -> Tz {
            self.tz
        }
        fn name(&self, name: &str) -> Option<Val> {
            match name {
                "watermark" => Some(Val::Time(at("2026-03-28T23:00:00Z"))),
                "page" => Some(Val::Json(json!(3))),
                "event.id" => Some(Val::Json(json!("evt_1"))),
                "nothing" => Some(Val::Json(Value::Null)),
                "list" => Some(Val::Json(json!([1, "a"]))),
                "far" => Some(Val::Time(DateTime::<Utc>::MAX_UTC)),
                _ => None,
            }
        }
        fn pointer(&self, root: &str, pointer: &str) -> Option<Value> {
            (root == "booking")
                .then(|| self.booking.pointer(pointer).cloned())
                .flatten()
        }
    }

    pub(super) fn r(t: &str) -> String {
        Template::parse(t)
            .unwrap()
            .render(&ctx(), Escape::None)
            .unwrap()
    }

    pub(super) fn rv(t: &str) -> Value {
        Template::parse(t).unwrap().render_value(&ctx()).unwrap()
    }

    pub(super) fn perr(t: &str) -> TemplateError {
        Template::parse(t).unwrap_err()
    }

    pub(super) fn rerr(t: &str) -> RenderError {
        Template::parse(t)
            .unwrap()
            .render(&ctx(), Escape::None)
            .unwrap_err()
    }

    #[test]
    fn check_names_and_tree() {
        let t = Template::parse("{{ now }} {{ today }} {{ watermark - 10m }} {{ event.id }} {{ booking/id }} {{ \"s\" }} {{ page }} {{ page }}").unwrap();
        assert_eq!(
            t.names(),
            ["now", "today", "watermark", "event.id", "booking", "page"]
        );
        assert!(
            t.check_names(&["watermark", "event", "booking", "page"])
                .is_ok()
        );
        let e = t.check_names(&["event.id", "booking", "page"]).unwrap_err();
        assert!(
            matches!(&e, TemplateError::NameNotAllowed { name, pos: 22, .. } if name == "watermark")
        );
        assert!(e.to_string().contains(
            "`watermark` is not available here; available: now, today, event.id, booking, page"
        ));
        assert!(
            t.check_names(&["watermark", "event.type", "booking", "page"])
                .is_err()
        );
        let e = Template::parse("{{ booking/id }}")
            .unwrap()
            .check_names(&["page"])
            .unwrap_err();
        assert!(matches!(&e, TemplateError::NameNotAllowed { name, .. } if name == "booking"));
        assert!(
            Template::parse("{{ now }}{{ today }}")
                .unwrap()
                .check_names(&[])
                .is_ok()
        );

        let tree = json!({"a": "{{ page }}", "d": {"e": "{{ watermark }}"}});
        assert!(check_tree(&tree, &["page", "watermark"]).is_ok());
        let e = check_tree(&tree, &["page"]).unwrap_err();
        assert!(matches!(&e, TreeError::Parse { pointer, .. } if pointer == "/d/e"));
        assert!(e.to_string().starts_with("/d/e: "), "{e}");
        let e = check_tree(&json!(["ok", "{{ now | bogus }}"]), &[]).unwrap_err();
        assert!(
            matches!(&e, TreeError::Parse { pointer, source: TemplateError::UnknownFilter { .. } } if pointer == "/1")
        );
    }

    #[test]
    fn garbage_never_panics() {
        let pieces = [
            "{{",
            "}}",
            "{",
            "}",
            "|",
            "\"",
            "\\",
            "now",
            "today",
            "page",
            "watermark",
            " ",
            "-",
            "+",
            "1d",
            "10",
            "m",
            "é",
            "名",
            "%",
            "%Y",
            "%Q",
            "tz",
            "Europe/Berlin",
            "~",
            "/",
            "default",
            "iso",
            "unix",
            "upper",
            "booking/guest/name",
            ".",
            "99999999999w",
            "far",
            "\n",
            "\u{0}",
        ];
        let mut seed: u64 = 0x2545_f491_4f6c_dd1d;
        let mut next = |n: usize| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed % n as u64) as usize
        };
        let c = ctx();
        let mut parsed = 0;
        for _ in 0..20_000 {
            let len = next(12);
            let text: String = (0..len).map(|_| pieces[next(pieces.len())]).collect();
            let _ = from_beds24_brackets(&text, &|_| true);
            if let Ok(t) = Template::parse(&text) {
                parsed += 1;
                let _ = t.names();
                let _ = t.check_names(&["page"]);
                for e in [Escape::None, Escape::UrlComponent, Escape::JsonString] {
                    let _ = t.render(&c, e);
                }
                let _ = t.render_value(&c);
            }
        }
        assert!(parsed > 100, "only {parsed} parsed");
        for text in [
            "{{",
            "}}",
            "{{}}",
            "{{ {{ }} }}",
            "{{ \"",
            "{{ \"\\",
            "{{ now |",
            "{{ now -",
            "é{{é}}",
            "{{ now | tz",
            "{{ now | default",
            "{{ a/",
            "{{ a/~",
            "}}{{ now }}{{",
        ] {
            let _ = Template::parse(text);
        }
    }
}
