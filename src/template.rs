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
//!   percent-encoded (everything except `A-Z a-z 0-9 - . _ ~`), inside a
//!   JSON string it is JSON-escaped. The literal text you wrote is never
//!   changed.
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

use std::fmt::Write as _;

use chrono::format::{Item, StrftimeItems};
use chrono::{DateTime, Datelike, NaiveDateTime, Offset, SecondsFormat, TimeDelta, TimeZone, Utc};
use chrono_tz::Tz;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use serde_json::Value;

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

fn fmt_allowed(allowed: &[String]) -> String {
    allowed.iter().map(|a| format!(", {a}")).collect()
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
    /// Percent-encoded: everything except `A-Z a-z 0-9 - . _ ~` (for a URL path segment or query value).
    UrlComponent,
    /// Escaped for inside a JSON string literal, without the surrounding quotes.
    JsonString,
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

#[derive(Debug, Clone, PartialEq)]
enum Part {
    Lit(String),
    Hole(Box<Placeholder>),
}

#[derive(Debug, Clone, PartialEq)]
struct Placeholder {
    /// The placeholder's text, `{{ ... }}`, for error messages.
    src: String,
    pos: usize,
    term: Term,
    offset: Option<Shift>,
    filters: Vec<Filter>,
}

#[derive(Debug, Clone, PartialEq)]
enum Term {
    Now,
    Today,
    Name(String),
    Pointer { root: String, pointer: String },
    Str(String),
}

#[derive(Debug, Clone, PartialEq)]
struct Shift {
    src: String,
    /// Whole days, applied to the wall-clock date in the default zone.
    days: TimeDelta,
    /// Seconds, applied as an exact duration.
    exact: TimeDelta,
}

#[derive(Debug, Clone, PartialEq)]
enum Filter {
    Tz(Tz),
    Format {
        src: String,
        items: Vec<Item<'static>>,
    },
    Iso,
    Date,
    Unix,
    UnixMs,
    Default(String),
    Upper,
    Lower,
}

impl Filter {
    fn label(&self) -> String {
        match self {
            Filter::Tz(z) => format!("tz {}", z.name()),
            Filter::Format { src, .. } => src.clone(),
            Filter::Iso => "iso".into(),
            Filter::Date => "date".into(),
            Filter::Unix => "unix".into(),
            Filter::UnixMs => "unix_ms".into(),
            Filter::Default(s) => format!("default {s:?}"),
            Filter::Upper => "upper".into(),
            Filter::Lower => "lower".into(),
        }
    }
}

/// What the parser knows about a value's type, to reject `"x" + 1d` at configuration time.
enum Kind {
    Time,
    Unknown,
    NotTime(String),
}

struct Parser<'a> {
    text: &'a str,
    pos: usize,
}

fn is_name_start(c: char) -> bool {
    c.is_ascii_alphabetic() || c == '_'
}

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

impl<'a> Parser<'a> {
    fn rest(&self) -> &'a str {
        self.text.get(self.pos..).unwrap_or("")
    }

    fn peek(&self) -> Option<char> {
        self.rest().chars().next()
    }

    fn bump(&mut self) -> Option<char> {
        let c = self.peek()?;
        self.pos += c.len_utf8();
        Some(c)
    }

    fn skip_ws(&mut self) {
        while self.peek().is_some_and(char::is_whitespace) {
            self.bump();
        }
    }

    fn found(&self) -> String {
        match self.peek() {
            Some(c) => format!("`{c}`"),
            None => "the end of the template".into(),
        }
    }

    fn syntax(&self, expected: impl Into<String>) -> TemplateError {
        TemplateError::Syntax {
            template: self.text.into(),
            pos: self.pos,
            expected: expected.into(),
            found: self.found(),
        }
    }

    fn need_time(&self, kind: &Kind, pos: usize, what: String) -> Result<(), TemplateError> {
        match kind {
            Kind::NotTime(reason) => Err(TemplateError::NotATime {
                template: self.text.into(),
                pos,
                what,
                reason: reason.clone(),
            }),
            Kind::Time | Kind::Unknown => Ok(()),
        }
    }

    /// Parses one placeholder; `self.pos` is just after its `{{` at `start`.
    fn placeholder(&mut self, start: usize) -> Result<Placeholder, TemplateError> {
        self.skip_ws();
        if self.rest().is_empty() {
            return Err(TemplateError::Unterminated {
                template: self.text.into(),
                pos: start,
            });
        }
        if self.rest().starts_with("}}") {
            return Err(TemplateError::Empty {
                template: self.text.into(),
                pos: start,
            });
        }
        let (term, mut kind) = self.term()?;
        self.skip_ws();
        let offset = match self.peek() {
            Some('+' | '-') => Some(self.shift(&kind)?),
            _ => None,
        };
        let mut filters = Vec::new();
        loop {
            self.skip_ws();
            if self.rest().starts_with("}}") {
                self.pos += 2;
                break;
            }
            match self.peek() {
                None => {
                    return Err(TemplateError::Unterminated {
                        template: self.text.into(),
                        pos: start,
                    });
                }
                Some('|') => {
                    self.bump();
                    filters.push(self.filter(start, &mut kind)?);
                }
                Some(_) if offset.is_none() && filters.is_empty() => {
                    return Err(self.syntax("`+` or `-` (an offset), `|` (a filter) or `}}`"));
                }
                Some(_) => return Err(self.syntax("`|` (a filter) or `}}`")),
            }
        }
        Ok(Placeholder {
            src: self.text.get(start..self.pos).unwrap_or("").into(),
            pos: start,
            term,
            offset,
            filters,
        })
    }

    fn term(&mut self) -> Result<(Term, Kind), TemplateError> {
        match self.peek() {
            Some('"') => Ok((
                Term::Str(self.string()?),
                Kind::NotTime("a string literal is text, not a time".into()),
            )),
            Some(c) if is_name_start(c) => self.name_or_pointer(),
            _ => Err(self.syntax(VALID_TERMS)),
        }
    }

    fn name_or_pointer(&mut self) -> Result<(Term, Kind), TemplateError> {
        let start = self.pos;
        loop {
            while self.peek().is_some_and(is_name_char) {
                self.bump();
            }
            if self.peek() != Some('.') {
                break;
            }
            self.bump();
            if !self.peek().is_some_and(is_name_start) {
                return Err(self.syntax("a name part (a letter or `_`) after `.`"));
            }
        }
        let name = self.text.get(start..self.pos).unwrap_or("").to_string();
        match name.as_str() {
            "now" => return Ok((Term::Now, Kind::Time)),
            "today" => return Ok((Term::Today, Kind::Time)),
            _ => {}
        }
        if self.peek() != Some('/') {
            return Ok((Term::Name(name), Kind::Unknown));
        }
        let ptr_start = self.pos;
        while let Some(c) = self.peek() {
            if c.is_whitespace() || c == '|' || self.rest().starts_with("}}") {
                break;
            }
            if c == '~' {
                self.bump();
                if !matches!(self.peek(), Some('0' | '1')) {
                    return Err(self.syntax(
                        "`0` or `1` after `~` (a JSON Pointer writes `~` as `~0` and `/` as `~1`)",
                    ));
                }
            }
            self.bump();
        }
        let pointer = self.text.get(ptr_start..self.pos).unwrap_or("").to_string();
        let reason = format!("`{name}{pointer}` is a value from a document, not a time");
        Ok((
            Term::Pointer {
                root: name,
                pointer,
            },
            Kind::NotTime(reason),
        ))
    }

    /// A `"..."` literal; `self.pos` is at the opening quote.
    fn string(&mut self) -> Result<String, TemplateError> {
        let open = self.pos;
        self.bump();
        let mut out = String::new();
        loop {
            match self.bump() {
                None => {
                    return Err(TemplateError::UnterminatedString {
                        template: self.text.into(),
                        pos: open,
                    });
                }
                Some('"') => return Ok(out),
                Some('\\') => match self.peek() {
                    Some(c @ ('"' | '\\')) => {
                        self.bump();
                        out.push(c);
                    }
                    None => {
                        return Err(TemplateError::UnterminatedString {
                            template: self.text.into(),
                            pos: open,
                        });
                    }
                    Some(_) => {
                        return Err(self.syntax("`\"` or `\\` after a backslash in a string"));
                    }
                },
                Some(c) => out.push(c),
            }
        }
    }

    /// An offset; `self.pos` is at the `+` or `-`.
    fn shift(&mut self, kind: &Kind) -> Result<Shift, TemplateError> {
        let start = self.pos;
        let negative = self.bump() == Some('-');
        self.need_time(kind, start, "an offset".into())?;
        self.skip_ws();
        let mut days: i64 = 0;
        let mut secs: i64 = 0;
        let mut any = false;
        loop {
            let num_start = self.pos;
            while self.peek().is_some_and(|c| c.is_ascii_digit()) {
                self.bump();
            }
            if self.pos == num_start {
                if any {
                    break;
                }
                return Err(self.syntax(format!(
                    "a number and a unit after `{}`, e.g. `10m` or `1d12h`",
                    if negative { '-' } else { '+' }
                )));
            }
            let too_big = TemplateError::Syntax {
                template: self.text.into(),
                pos: num_start,
                expected: "a smaller offset".into(),
                found: format!("`{}`", self.text.get(num_start..self.pos).unwrap_or("")),
            };
            let n: i64 = match self.text.get(num_start..self.pos).unwrap_or("").parse() {
                Ok(n) => n,
                Err(_) => return Err(too_big),
            };
            let unit_start = self.pos;
            while self.peek().is_some_and(char::is_alphabetic) {
                self.bump();
            }
            let unit = self.text.get(unit_start..self.pos).unwrap_or("");
            let added = match unit {
                "s" => secs.checked_add(n),
                "m" => n.checked_mul(60).and_then(|v| secs.checked_add(v)),
                "h" => n.checked_mul(3600).and_then(|v| secs.checked_add(v)),
                "d" => days.checked_add(n),
                "w" => n.checked_mul(7).and_then(|v| days.checked_add(v)),
                _ => {
                    let unit = if unit.is_empty() {
                        self.peek().map(String::from).unwrap_or_default()
                    } else {
                        unit.to_string()
                    };
                    return Err(TemplateError::BadOffsetUnit {
                        template: self.text.into(),
                        pos: unit_start,
                        unit,
                    });
                }
            };
            match (unit, added) {
                ("s" | "m" | "h", Some(v)) => secs = v,
                (_, Some(v)) => days = v,
                (_, None) => return Err(too_big),
            }
            any = true;
            let after = self.pos;
            self.skip_ws();
            if !self.peek().is_some_and(|c| c.is_ascii_digit()) {
                self.pos = after;
                break;
            }
        }
        let sign = if negative { -1 } else { 1 };
        let days = TimeDelta::try_days(sign * days);
        let exact = TimeDelta::try_seconds(sign * secs);
        let (Some(days), Some(exact)) = (days, exact) else {
            return Err(TemplateError::Syntax {
                template: self.text.into(),
                pos: start,
                expected: "a smaller offset".into(),
                found: format!("`{}`", self.text.get(start..self.pos).unwrap_or("")),
            });
        };
        Ok(Shift {
            src: self.text.get(start..self.pos).unwrap_or("").into(),
            days,
            exact,
        })
    }

    /// One filter; `self.pos` is just after its `|`.
    fn filter(&mut self, start: usize, kind: &mut Kind) -> Result<Filter, TemplateError> {
        self.skip_ws();
        let fpos = self.pos;
        if let Some(after) = self.rest().strip_prefix("default")
            && !after.chars().next().is_some_and(is_name_char)
        {
            self.pos += "default".len();
            self.skip_ws();
            if self.peek() != Some('"') {
                return Err(self.syntax("a quoted text after `default`, e.g. `default \"none\"`"));
            }
            return Ok(Filter::Default(self.string()?));
        }
        while !self.rest().starts_with("}}") && self.peek() != Some('|') {
            if self.bump().is_none() {
                return Err(TemplateError::Unterminated {
                    template: self.text.into(),
                    pos: start,
                });
            }
        }
        let raw = self.text.get(fpos..self.pos).unwrap_or("").trim_end();
        if raw.is_empty() {
            self.pos = fpos;
            return Err(self.syntax(format!("a filter after `|`: {VALID_FILTERS}")));
        }
        let word_len = raw.find(char::is_whitespace).unwrap_or(raw.len());
        let word = raw.get(..word_len).unwrap_or("");
        const KEYWORDS: [&str; 7] = ["tz", "iso", "date", "unix", "unix_ms", "upper", "lower"];
        if raw.contains('%') && !KEYWORDS.contains(&word) {
            self.need_time(kind, fpos, format!("the format `{raw}`"))?;
            let bad = || TemplateError::BadFormat {
                template: self.text.into(),
                pos: fpos,
                format: raw.into(),
            };
            let items = StrftimeItems::new(raw)
                .parse_to_owned()
                .map_err(|_| bad())?;
            // Some specifiers parse but cannot be written (e.g. `%#z`): try one.
            let sample = DateTime::<Utc>::UNIX_EPOCH.with_timezone(&chrono_tz::UTC);
            let mut probe = String::new();
            write!(probe, "{}", sample.format_with_items(items.iter())).map_err(|_| bad())?;
            *kind = Kind::NotTime(format!("the value is already text after `| {raw}`"));
            return Ok(Filter::Format {
                src: raw.into(),
                items,
            });
        }
        let after = raw.get(word_len..).unwrap_or("");
        let arg = after.trim_start();
        let arg_pos = fpos + word_len + (after.len() - arg.len());
        let no_arg = |p: &Self| -> Result<(), TemplateError> {
            if arg.is_empty() {
                Ok(())
            } else {
                Err(TemplateError::Syntax {
                    template: p.text.into(),
                    pos: arg_pos,
                    expected: format!("`|` or `}}}}` after `{word}` (it takes no argument)"),
                    found: format!("`{arg}`"),
                })
            }
        };
        let filter = match word {
            "tz" => {
                self.need_time(kind, fpos, "filter `tz`".into())?;
                if arg.is_empty() {
                    return Err(TemplateError::Syntax {
                        template: self.text.into(),
                        pos: arg_pos,
                        expected: "a time zone after `tz`, e.g. `tz Europe/Berlin`".into(),
                        found: self.found(),
                    });
                }
                let zone: Tz = arg.parse().map_err(|_| TemplateError::UnknownTimeZone {
                    template: self.text.into(),
                    pos: arg_pos,
                    zone: arg.into(),
                })?;
                return Ok(Filter::Tz(zone));
            }
            "iso" => Filter::Iso,
            "date" => Filter::Date,
            "unix" => Filter::Unix,
            "unix_ms" => Filter::UnixMs,
            "upper" => Filter::Upper,
            "lower" => Filter::Lower,
            _ => {
                return Err(TemplateError::UnknownFilter {
                    template: self.text.into(),
                    pos: fpos,
                    filter: word.into(),
                });
            }
        };
        no_arg(self)?;
        match filter {
            Filter::Upper | Filter::Lower => {
                *kind = Kind::NotTime(format!("the value is text after `| {word}`"));
            }
            _ => {
                self.need_time(kind, fpos, format!("filter `{word}`"))?;
                *kind = Kind::NotTime(format!("the value is no longer a time after `| {word}`"));
            }
        }
        Ok(filter)
    }
}

impl Template {
    /// Parses `text`; errors name the byte position and what was expected there.
    pub fn parse(text: &str) -> Result<Template, TemplateError> {
        let mut parts = Vec::new();
        let mut p = Parser { text, pos: 0 };
        while let Some(found) = p.rest().find("{{") {
            let start = p.pos + found;
            if found > 0 {
                parts.push(Part::Lit(p.rest().get(..found).unwrap_or("").into()));
            }
            p.pos = start + 2;
            let hole = p.placeholder(start)?;
            parts.push(Part::Hole(Box::new(hole)));
        }
        if !p.rest().is_empty() {
            parts.push(Part::Lit(p.rest().into()));
        }
        Ok(Template {
            text: text.into(),
            parts,
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
        let mut out = String::with_capacity(self.text.len() + 16);
        for part in &self.parts {
            match part {
                Part::Lit(s) => out.push_str(s),
                Part::Hole(h) => escape_into(&mut out, &h.eval(ctx)?.into_text(), escape),
            }
        }
        Ok(out)
    }

    /// If the template is exactly one placeholder (surrounding whitespace
    /// allowed), that placeholder's typed value (numbers stay numbers; `unix` is
    /// a number; times become strings formatted per the filters; missing ->
    /// `Value::Null`); otherwise the interpolated string (unescaped) as
    /// `Value::String`. Used to fill JSON bodies so values are always correctly
    /// typed and encoded.
    pub fn render_value(&self, ctx: &dyn Context) -> Result<Value, RenderError> {
        let mut single = None;
        for part in &self.parts {
            match part {
                Part::Lit(s) if s.trim().is_empty() => {}
                Part::Hole(h) if single.is_none() => single = Some(h),
                _ => return Ok(Value::String(self.render(ctx, Escape::None)?)),
            }
        }
        match single {
            Some(h) => Ok(h.eval(ctx)?.into_value()),
            None => Ok(Value::String(self.text.clone())),
        }
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
        Escape::UrlComponent => out.extend(utf8_percent_encode(s, URL_COMPONENT)),
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

/// A JSON tree (e.g. a request body) whose strings containing `{{` are
/// parsed once, to be rendered many times; see [`render_tree`].
#[derive(Debug, Clone, PartialEq)]
pub struct TemplateTree {
    root: Node,
}

#[derive(Debug, Clone, PartialEq)]
enum Node {
    Plain(Value),
    Tpl { pointer: String, template: Template },
    Array(Vec<Node>),
    Object(Vec<(String, Node)>),
}

fn pointer_token(key: &str) -> String {
    key.replace('~', "~0").replace('/', "~1")
}

impl Node {
    fn build(v: &Value, pointer: &str) -> Result<Node, TreeError> {
        let node = match v {
            Value::String(s) if s.contains("{{") => {
                let template = Template::parse(s).map_err(|source| TreeError::Parse {
                    pointer: pointer.into(),
                    source,
                })?;
                return Ok(Node::Tpl {
                    pointer: pointer.into(),
                    template,
                });
            }
            Value::Array(items) => Node::Array(
                items
                    .iter()
                    .enumerate()
                    .map(|(i, item)| Node::build(item, &format!("{pointer}/{i}")))
                    .collect::<Result<_, _>>()?,
            ),
            Value::Object(map) => Node::Object(
                map.iter()
                    .map(|(k, item)| {
                        let child = format!("{pointer}/{}", pointer_token(k));
                        Ok((k.clone(), Node::build(item, &child)?))
                    })
                    .collect::<Result<_, TreeError>>()?,
            ),
            other => return Ok(Node::Plain(other.clone())),
        };
        let plain = match &node {
            Node::Array(items) => items.iter().all(|n| matches!(n, Node::Plain(_))),
            Node::Object(entries) => entries.iter().all(|(_, n)| matches!(n, Node::Plain(_))),
            Node::Plain(_) | Node::Tpl { .. } => false,
        };
        Ok(if plain { Node::Plain(v.clone()) } else { node })
    }

    fn visit<'n>(&'n self, out: &mut Vec<(&'n str, &'n Template)>) {
        match self {
            Node::Plain(_) => {}
            Node::Tpl { pointer, template } => out.push((pointer, template)),
            Node::Array(items) => items.iter().for_each(|n| n.visit(out)),
            Node::Object(entries) => entries.iter().for_each(|(_, n)| n.visit(out)),
        }
    }

    fn render(&self, ctx: &dyn Context) -> Result<Value, TreeError> {
        Ok(match self {
            Node::Plain(v) => v.clone(),
            Node::Tpl { pointer, template } => {
                template
                    .render_value(ctx)
                    .map_err(|source| TreeError::Render {
                        pointer: pointer.clone(),
                        source,
                    })?
            }
            Node::Array(items) => Value::Array(
                items
                    .iter()
                    .map(|n| n.render(ctx))
                    .collect::<Result<_, _>>()?,
            ),
            Node::Object(entries) => Value::Object(
                entries
                    .iter()
                    .map(|(k, n)| Ok((k.clone(), n.render(ctx)?)))
                    .collect::<Result<_, TreeError>>()?,
            ),
        })
    }
}

impl TemplateTree {
    /// Parses every string in `tree` that contains `{{`; errors carry the string's JSON Pointer.
    pub fn parse(tree: &Value) -> Result<TemplateTree, TreeError> {
        Ok(TemplateTree {
            root: Node::build(tree, "")?,
        })
    }

    /// The names used by all templates in the tree, each once (see [`Template::names`]).
    pub fn names(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for (_, t) in self.templates() {
            for n in t.names() {
                if !out.contains(&n) {
                    out.push(n);
                }
            }
        }
        out
    }

    /// [`Template::check_names`] on every template; the error names the string's JSON Pointer.
    pub fn check_names(&self, allowed: &[&str]) -> Result<(), TreeError> {
        for (pointer, t) in self.templates() {
            t.check_names(allowed).map_err(|source| TreeError::Parse {
                pointer: pointer.into(),
                source,
            })?;
        }
        Ok(())
    }

    /// The tree with every template string replaced by [`Template::render_value`]'s result.
    pub fn render(&self, ctx: &dyn Context) -> Result<Value, TreeError> {
        self.root.render(ctx)
    }

    fn templates(&self) -> Vec<(&str, &Template)> {
        let mut out = Vec::new();
        self.root.visit(&mut out);
        out
    }
}

/// Renders every string inside a JSON tree that contains a placeholder (keys
/// untouched) with [`Template::render_value`]; non-strings untouched. Returns parse
/// errors with the JSON Pointer of the bad string. Parses on every call: to
/// render the same tree repeatedly, parse it once with [`TemplateTree::parse`].
pub fn render_tree(tree: &Value, ctx: &dyn Context) -> Result<Value, TreeError> {
    TemplateTree::parse(tree)?.render(ctx)
}

/// Parses every string in `tree` that contains `{{` and checks its names
/// against `allowed` (see [`Template::check_names`]); the error names the
/// string's JSON Pointer.
pub fn check_tree(tree: &Value, allowed: &[&str]) -> Result<(), TreeError> {
    TemplateTree::parse(tree)?.check_names(allowed)
}

/// Beds24's notify-URL variables: converts `[NAME]` tokens (NAME =
/// `[A-Z][A-Z0-9_]*`) for which `known(NAME)` is true into `{{ beds24.NAME }}`
/// placeholders; leaves everything else (e.g. `roomId[]=`, unknown names) untouched.
///
/// ```text
/// https://x/y?b=[BOOKID]&r=roomId[]   ->   https://x/y?b={{ beds24.BOOKID }}&r=roomId[]
/// ```
pub fn from_beds24_brackets(text: &str, known: &dyn Fn(&str) -> bool) -> String {
    let mut out = String::with_capacity(text.len() + 16);
    let mut rest = text;
    while let Some(open) = rest.find('[') {
        out.push_str(rest.get(..open).unwrap_or(""));
        let after = rest.get(open + 1..).unwrap_or("");
        let len = after
            .char_indices()
            .find(|&(i, c)| {
                !(c.is_ascii_uppercase() || (i > 0 && (c.is_ascii_digit() || c == '_')))
            })
            .map_or(after.len(), |(i, _)| i);
        let name = after.get(..len).unwrap_or("");
        if !name.is_empty() && after.get(len..).is_some_and(|r| r.starts_with(']')) && known(name) {
            let _ = write!(out, "{{{{ beds24.{name} }}}}");
            rest = after.get(len + 1..).unwrap_or("");
        } else {
            out.push('[');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    struct Ctx {
        tz: Tz,
        booking: Value,
    }

    const GUEST: &str = "Zoë \"Ann\" O'Brien & Co = a/b? #1 \\ 名前";

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn ctx() -> Ctx {
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

    fn r(t: &str) -> String {
        Template::parse(t)
            .unwrap()
            .render(&ctx(), Escape::None)
            .unwrap()
    }

    fn rv(t: &str) -> Value {
        Template::parse(t).unwrap().render_value(&ctx()).unwrap()
    }

    fn perr(t: &str) -> TemplateError {
        Template::parse(t).unwrap_err()
    }

    fn rerr(t: &str) -> RenderError {
        Template::parse(t)
            .unwrap()
            .render(&ctx(), Escape::None)
            .unwrap_err()
    }

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

    #[test]
    fn render_tree_types_values() {
        let tree = json!({"a": "{{ booking/guest/name }}", "b": 1, "c": ["x {{ page }}"], "d": {"e": "{{ page }}"}, "{{ k }}": "k"});
        let out = render_tree(&tree, &ctx()).unwrap();
        assert_eq!(
            out,
            json!({"a": GUEST, "b": 1, "c": ["x 3"], "d": {"e": 3}, "{{ k }}": "k"})
        );
        let parsed = TemplateTree::parse(&tree).unwrap();
        assert_eq!(parsed.render(&ctx()).unwrap(), out);
        assert_eq!(parsed.names(), ["booking", "page"]);
        let plain = json!({"x": [1, "y"]});
        assert_eq!(render_tree(&plain, &ctx()).unwrap(), plain);
        let err = render_tree(&json!({"a": [0, "{{ page | iso }}"]}), &ctx()).unwrap_err();
        assert!(matches!(&err, TreeError::Render { pointer, .. } if pointer == "/a/1"));
        let err = render_tree(&json!({"a/b": {"c~": "{{ }}"}}), &ctx()).unwrap_err();
        assert!(matches!(&err, TreeError::Parse { pointer, .. } if pointer == "/a~1b/c~0"));
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
    fn beds24_brackets() {
        let known = |n: &str| n == "BOOKID" || n == "GUESTNAME";
        let out = from_beds24_brackets(
            "https://x/y?b=[BOOKID]&r=roomId[]&g=[GUESTNAME]&u=[UNKNOWN]",
            &known,
        );
        assert_eq!(
            out,
            "https://x/y?b={{ beds24.BOOKID }}&r=roomId[]&g={{ beds24.GUESTNAME }}&u=[UNKNOWN]"
        );
        let t = Template::parse(&out).unwrap();
        assert_eq!(t.names(), ["beds24.BOOKID", "beds24.GUESTNAME"]);
        assert!(t.check_names(&["beds24"]).is_ok());
        for s in [
            "[",
            "]",
            "[[BOOKID]]",
            "[BOOKID",
            "é[BOOKID]é",
            "[bookid]",
            "[B0OKID]",
            "",
        ] {
            let _ = from_beds24_brackets(s, &known);
        }
        assert_eq!(
            from_beds24_brackets("[[BOOKID]]", &known),
            "[{{ beds24.BOOKID }}]"
        );
        assert_eq!(from_beds24_brackets("é[BOOKID", &known), "é[BOOKID");
    }

    #[test]
    fn parse_errors() {
        let e = perr("{{ now | isoo }}");
        assert_eq!(
            e,
            TemplateError::UnknownFilter {
                template: "{{ now | isoo }}".into(),
                pos: 9,
                filter: "isoo".into()
            }
        );
        let msg = e.to_string();
        assert!(
            msg.contains("byte 9") && msg.contains("unknown filter `isoo`"),
            "{msg}"
        );
        for f in [
            "tz", "iso", "date", "unix", "unix_ms", "default", "upper", "lower", "strftime",
        ] {
            assert!(msg.contains(f), "{msg}");
        }

        let e = perr("{{ now - 10x }}");
        assert!(matches!(&e, TemplateError::BadOffsetUnit { pos: 11, unit, .. } if unit == "x"));
        let msg = e.to_string();
        assert!(
            msg.contains("byte 11") && msg.contains("s (seconds)") && msg.contains("w (weeks)"),
            "{msg}"
        );
        assert!(
            matches!(perr("{{ now - 10min }}"), TemplateError::BadOffsetUnit { unit, .. } if unit == "min")
        );
        assert!(matches!(
            perr("{{ now - 10 }}"),
            TemplateError::BadOffsetUnit { .. }
        ));
        assert!(matches!(
            perr("{{ now - m }}"),
            TemplateError::Syntax { pos: 9, .. }
        ));
        assert!(matches!(
            perr("{{ now - 99999999999999999999d }}"),
            TemplateError::Syntax { .. }
        ));

        let e = perr("a {{ now | iso");
        assert_eq!(
            e,
            TemplateError::Unterminated {
                template: "a {{ now | iso".into(),
                pos: 2
            }
        );
        assert!(e.to_string().contains("byte 2") && e.to_string().contains("`}}`"));
        assert!(matches!(
            perr("{{ now"),
            TemplateError::Unterminated { pos: 0, .. }
        ));
        assert!(matches!(
            perr("x {{"),
            TemplateError::Unterminated { pos: 2, .. }
        ));

        let e = perr("x{{}}");
        assert_eq!(
            e,
            TemplateError::Empty {
                template: "x{{}}".into(),
                pos: 1
            }
        );
        assert!(e.to_string().contains("`now`"));
        assert!(matches!(perr("{{   }}"), TemplateError::Empty { .. }));

        let e = perr("{{ \"abc }}");
        assert_eq!(
            e,
            TemplateError::UnterminatedString {
                template: "{{ \"abc }}".into(),
                pos: 3
            }
        );
        assert!(e.to_string().contains("byte 3"));
        assert!(matches!(
            perr("{{ now | default \"x }}"),
            TemplateError::UnterminatedString { pos: 17, .. }
        ));
        assert!(matches!(
            perr("{{ \"a\\n\" }}"),
            TemplateError::Syntax { .. }
        ));

        assert!(
            matches!(perr("{{ now | tz Mars/Base }}"), TemplateError::UnknownTimeZone { pos: 12, zone, .. } if zone == "Mars/Base")
        );
        assert!(matches!(
            perr("{{ now | tz }}"),
            TemplateError::Syntax { .. }
        ));
        assert!(matches!(
            perr("{{ now | %Q }}"),
            TemplateError::BadFormat { .. }
        ));
        assert!(matches!(
            perr("{{ now | %#z }}"),
            TemplateError::BadFormat { .. }
        ));
        assert!(matches!(
            perr("{{ now | iso x }}"),
            TemplateError::Syntax { pos: 13, .. }
        ));
        assert!(matches!(
            perr("{{ now | iso %Y }}"),
            TemplateError::Syntax { .. }
        ));
        assert!(matches!(
            perr("{{ now | tz Europe/Berlin %Y }}"),
            TemplateError::UnknownTimeZone { .. }
        ));
        assert_eq!(r("{{ now | T%H }}"), "T00");
        assert!(matches!(perr("{{ now | }}"), TemplateError::Syntax { .. }));
        assert!(matches!(
            perr("{{ now | default x }}"),
            TemplateError::Syntax { .. }
        ));
        assert!(matches!(
            perr("{{ now now }}"),
            TemplateError::Syntax { pos: 7, .. }
        ));
        assert!(matches!(
            perr("{{ 5 }}"),
            TemplateError::Syntax { pos: 3, .. }
        ));
        assert!(matches!(perr("{{ event. }}"), TemplateError::Syntax { .. }));
        assert!(matches!(perr("{{ now/x }}"), TemplateError::Syntax { .. }));
        assert!(matches!(
            perr("{{ booking/a~2 }}"),
            TemplateError::Syntax { .. }
        ));
        assert!(matches!(
            perr("{{ {{ now }} }}"),
            TemplateError::Syntax { pos: 3, .. }
        ));

        // Never a time: rejected at parse time.
        let e = perr("{{ booking/arrival + 1d }}");
        assert!(matches!(e, TemplateError::NotATime { pos: 19, .. }), "{e}");
        assert!(matches!(
            perr("{{ \"x\" | date }}"),
            TemplateError::NotATime { .. }
        ));
        assert!(matches!(
            perr("{{ now | iso | date }}"),
            TemplateError::NotATime { .. }
        ));
        assert!(matches!(
            perr("{{ now | upper | unix }}"),
            TemplateError::NotATime { .. }
        ));
        assert!(Template::parse("{{ now | tz Europe/Berlin | tz UTC | %Y }}").is_ok());
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
