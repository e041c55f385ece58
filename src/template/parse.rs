//! The parser: template text to literal parts and placeholders (a term, an optional offset, filters), with the parse-time type checks and errors that name the byte position.

use std::fmt::Write as _;

use chrono::format::{Item, StrftimeItems};
use chrono::{DateTime, TimeDelta, Utc};
use chrono_tz::Tz;

use super::{TemplateError, VALID_FILTERS, VALID_TERMS};

#[derive(Debug, Clone, PartialEq)]
pub(super) enum Part {
    Lit(String),
    Hole(Box<Placeholder>),
}

#[derive(Debug, Clone, PartialEq)]
pub(super) struct Placeholder {
    /// The placeholder's text, `{{ ... }}`, for error messages.
    pub(super) src: String,
    pub(super) pos: usize,
    pub(super) term: Term,
    pub(super) offset: Option<Shift>,
    pub(super) filters: Vec<Filter>,
}

#[derive(Debug, Clone, PartialEq)]
pub(super) enum Term {
    Now,
    Today,
    Name(String),
    Pointer { root: String, pointer: String },
    Str(String),
}

#[derive(Debug, Clone, PartialEq)]
pub(super) struct Shift {
    pub(super) src: String,
    /// Whole days, applied to the wall-clock date in the default zone.
    pub(super) days: TimeDelta,
    /// Seconds, applied as an exact duration.
    pub(super) exact: TimeDelta,
}

#[derive(Debug, Clone, PartialEq)]
pub(super) enum Filter {
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
    pub(super) fn label(&self) -> String {
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

/// Splits `text` into literal parts and parsed placeholders (the body of [`super::Template::parse`]).
pub(super) fn parts(text: &str) -> Result<Vec<Part>, TemplateError> {
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
    Ok(parts)
}

#[cfg(test)]
mod tests {
    use super::super::Template;
    use super::super::tests::{perr, r};
    use super::*;

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
}
