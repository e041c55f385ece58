//! Schedules: when each source polls. Pure arithmetic (no sleeping, no clock reads); the loop that sleeps lives elsewhere.
//!
//! Two kinds of schedule exist:
//!
//! * [`Schedule::Every`]: a fixed interval between poll *starts*.
//! * [`Schedule::Cron`]: a standard crontab expression evaluated in a named IANA time zone.
//!
//! Operators write ordinary crontab (`min hour day-of-month month day-of-week`, day-of-week
//! `0`-`7` with both `0` and `7` meaning Sunday). The `cron` crate underneath wants a seconds
//! field first and numbers weekdays Quartz-style (Sunday = 1), so [`translate_cron`] rewrites
//! every expression into an unambiguous canonical form before it reaches that crate.

use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use chrono_tz::Tz;

/// What a valid cron expression looks like; appended to every cron error.
const CRON_HELP: &str =
    "5-field crontab: `min hour day-of-month month day-of-week`, or 6 fields with seconds first";

/// Last year the `cron` crate can produce a fire time for.
const CRON_LAST_YEAR: i32 = 2100;

/// Why a schedule could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ScheduleError {
    /// An interval schedule shorter than one second (this includes zero).
    #[error(
        "poll interval must be at least 1s (for example `30s` or `5m`), got {}",
        format_duration(.0)
    )]
    IntervalTooShort(Duration),
    /// An interval schedule too large to add to a point in time.
    #[error("poll interval of {}s is too large (use at most a few years)", .0.as_secs())]
    IntervalTooLarge(Duration),
    /// The time zone name is not an IANA zone known to `chrono-tz`.
    #[error(
        "unknown time zone `{0}`: use an IANA zone name such as `UTC`, `Europe/London` or `America/New_York` (case-sensitive)"
    )]
    UnknownTimeZone(String),
    /// The cron expression is not valid; `reason` says which part and what is allowed there.
    #[error("cron expression `{expr}`: {reason} ({})", CRON_HELP)]
    InvalidCron {
        /// The expression as the operator wrote it.
        expr: String,
        /// What is wrong and what would be valid.
        reason: String,
    },
}

/// When a source polls.
// One per source, so size does not matter; the field types are part of the agreed API.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone)]
pub enum Schedule {
    /// Start a poll every so often (measured start to start). Build with [`Schedule::every`].
    Every(Duration),
    /// Start a poll at each fire time of a cron expression. Build with [`Schedule::cron`].
    Cron {
        /// The expression as the operator wrote it (used in logs and messages).
        expr: String,
        /// The expression translated by [`translate_cron`] and parsed by the `cron` crate.
        schedule: cron::Schedule,
        /// The zone the expression's wall-clock times are read in.
        tz: Tz,
    },
}

impl Schedule {
    /// Interval schedule; zero or sub-second-zero durations are rejected.
    ///
    /// Anything shorter than one second is refused ([`ScheduleError::IntervalTooShort`]): polling
    /// a booking API faster than that is always a configuration mistake. Sub-second parts of
    /// longer intervals are kept (`1.5s` is fine).
    pub fn every(d: Duration) -> Result<Schedule, ScheduleError> {
        if d < Duration::from_secs(1) {
            return Err(ScheduleError::IntervalTooShort(d));
        }
        // Must be representable as a chrono delta and addable to a present-day instant.
        let fits = TimeDelta::from_std(d)
            .ok()
            .and_then(|td| DateTime::<Utc>::UNIX_EPOCH.checked_add_signed(td))
            .is_some_and(|t| t < DateTime::<Utc>::MAX_UTC);
        if !fits {
            return Err(ScheduleError::IntervalTooLarge(d));
        }
        Ok(Schedule::Every(d))
    }

    /// Cron schedule in the named IANA time zone ("UTC", "Europe/London"); unknown zone -> error naming it.
    ///
    /// `expr` is standard crontab, see [`translate_cron`] for exactly what is accepted (including
    /// the 6-field form with seconds first, whose day-of-week also uses crontab numbering:
    /// `0` and `7` are Sunday). Times that do not exist locally (the hour skipped when clocks go
    /// forward) are skipped; times that happen twice (when clocks go back) fire once.
    pub fn cron(expr: &str, tz: &str) -> Result<Schedule, ScheduleError> {
        let translated = translate_cron(expr)?;
        let schedule: cron::Schedule =
            translated
                .parse()
                .map_err(|e: cron::error::Error| ScheduleError::InvalidCron {
                    expr: expr.to_owned(),
                    reason: format!(
                        "the cron library rejected its translation `{translated}`: {}",
                        e.to_string().replace('\n', " ")
                    ),
                })?;
        let tz: Tz = tz
            .parse()
            .map_err(|_| ScheduleError::UnknownTimeZone(tz.to_owned()))?;
        Ok(Schedule::Cron {
            expr: expr.to_owned(),
            schedule,
            tz,
        })
    }

    /// When the next poll should START.
    /// Every(d): `last_start + d`, or `now` if never started; if that is already in the past (a poll overran), `now`.
    /// Cron: the first fire time strictly after `max(now, last_start)` (never the same instant twice).
    ///
    /// Edge cases: for `Every`, if `last_start` is in the future (the wall clock stepped back) the
    /// wait is capped at `now + d`. If no time can be computed (past the year 2100, the last
    /// year the `cron` crate knows, or an interval overflowing the calendar) the result is
    /// [`DateTime::<Utc>::MAX_UTC`], i.e. "never". Never panics.
    pub fn next_after(
        &self,
        now: DateTime<Utc>,
        last_start: Option<DateTime<Utc>>,
    ) -> DateTime<Utc> {
        match self {
            Schedule::Every(d) => {
                let Some(last) = last_start else {
                    return now;
                };
                let Ok(step) = TimeDelta::from_std(*d) else {
                    return DateTime::<Utc>::MAX_UTC;
                };
                let due = last
                    .checked_add_signed(step)
                    .unwrap_or(DateTime::<Utc>::MAX_UTC);
                let cap = now
                    .checked_add_signed(step)
                    .unwrap_or(DateTime::<Utc>::MAX_UTC);
                due.min(cap).max(now)
            }
            Schedule::Cron { schedule, tz, .. } => {
                let after = last_start.map_or(now, |last| last.max(now));
                next_cron_fire(schedule, *tz, after)
            }
        }
    }

    /// Short human description for logs, e.g. "every 30s" or "cron `*/5 * * * *` (UTC)".
    pub fn describe(&self) -> String {
        match self {
            Schedule::Every(d) => format!("every {}", format_duration(d)),
            Schedule::Cron { expr, tz, .. } => format!("cron `{}` ({})", expr.trim(), tz.name()),
        }
    }
}

/// First fire of `schedule` (read in `tz`) strictly after `after`, or `MAX_UTC` if there is none.
fn next_cron_fire(schedule: &cron::Schedule, tz: Tz, after: DateTime<Utc>) -> DateTime<Utc> {
    use chrono::Datelike;

    // The cron crate only knows 1970..=2100 and adds a second to its start point (which would
    // overflow near MAX_UTC), so keep its input inside that window.
    let start = after.max(DateTime::<Utc>::UNIX_EPOCH);
    if start.year() > CRON_LAST_YEAR {
        return DateTime::<Utc>::MAX_UTC;
    }
    // The crate works in local wall-clock time; for a repeated (fall-back) hour it yields the
    // earlier instant first, which can lie before `after`. Skip those: at most two candidates
    // per local time, so a handful of steps always suffices.
    schedule
        .after(&start.with_timezone(&tz))
        .take(8)
        .map(|fire| fire.with_timezone(&Utc))
        .find(|fire| *fire > after)
        .unwrap_or(DateTime::<Utc>::MAX_UTC)
}

/// `30s`, `5m`, `1h 30m`, `1s 500ms`: whole units only, largest first.
fn format_duration(d: &Duration) -> String {
    let secs = d.as_secs();
    let parts = [
        (secs / 86_400, "d"),
        (secs / 3_600 % 24, "h"),
        (secs / 60 % 60, "m"),
        (secs % 60, "s"),
        (u64::from(d.subsec_millis()), "ms"),
    ];
    let mut out: Vec<String> = parts
        .iter()
        .filter(|(n, _)| *n > 0)
        .map(|(n, unit)| format!("{n}{unit}"))
        .collect();
    if out.is_empty() {
        out.push(if d.is_zero() {
            "0s".to_owned()
        } else {
            format!("{}ns", d.subsec_nanos())
        });
    }
    out.join(" ")
}

/// One crontab field: its name, allowed values and accepted names.
struct FieldSpec {
    name: &'static str,
    min: u32,
    max: u32,
    names: &'static [(&'static str, u32)],
    valid: &'static str,
}

const SECOND: FieldSpec = FieldSpec {
    name: "second",
    min: 0,
    max: 59,
    names: &[],
    valid: "second must be 0-59",
};
const MINUTE: FieldSpec = FieldSpec {
    name: "minute",
    min: 0,
    max: 59,
    names: &[],
    valid: "minute must be 0-59",
};
const HOUR: FieldSpec = FieldSpec {
    name: "hour",
    min: 0,
    max: 23,
    names: &[],
    valid: "hour must be 0-23",
};
const DAY_OF_MONTH: FieldSpec = FieldSpec {
    name: "day-of-month",
    min: 1,
    max: 31,
    names: &[],
    valid: "day-of-month must be 1-31",
};
const MONTH: FieldSpec = FieldSpec {
    name: "month",
    min: 1,
    max: 12,
    names: &[
        ("jan", 1),
        ("feb", 2),
        ("mar", 3),
        ("apr", 4),
        ("may", 5),
        ("jun", 6),
        ("jul", 7),
        ("aug", 8),
        ("sep", 9),
        ("oct", 10),
        ("nov", 11),
        ("dec", 12),
        ("january", 1),
        ("february", 2),
        ("march", 3),
        ("april", 4),
        ("june", 6),
        ("july", 7),
        ("august", 8),
        ("september", 9),
        ("october", 10),
        ("november", 11),
        ("december", 12),
    ],
    valid: "month must be 1-12 or jan-dec",
};
/// Day-of-week in crontab numbering: 0-7, 0 and 7 both Sunday. `*` spans 0-7 as in Vixie cron
/// (so `*/2` is Sun, Tue, Thu, Sat).
const DAY_OF_WEEK: FieldSpec = FieldSpec {
    name: "day-of-week",
    min: 0,
    max: 7,
    names: &[
        ("sun", 0),
        ("mon", 1),
        ("tue", 2),
        ("wed", 3),
        ("thu", 4),
        ("fri", 5),
        ("sat", 6),
        ("sunday", 0),
        ("monday", 1),
        ("tuesday", 2),
        ("wednesday", 3),
        ("thursday", 4),
        ("friday", 5),
        ("saturday", 6),
    ],
    valid: "day-of-week must be 0-7 (0 and 7 are Sunday) or sun-sat",
};

/// Names the `cron` crate understands, indexed by crontab weekday number (0 = Sunday).
const CRON_DAY_NAMES: [&str; 7] = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"];

/// Longest possible day-of-month per month (February counts its leap day).
const MONTH_DAYS: [u32; 12] = [31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];

/// Translate an operator's crontab expression into the `cron` crate's syntax.
///
/// Accepted input:
///
/// * 5 fields `min hour day-of-month month day-of-week` (a `0` seconds field is prepended);
/// * 6 fields `sec min hour day-of-month month day-of-week`: seconds first, and the
///   day-of-week still uses **crontab** numbering (`0` and `7` are Sunday, `1` is Monday),
///   not the `cron` crate's Quartz numbering;
/// * `@hourly`, `@daily` (= `@midnight`), `@weekly` (Sunday 00:00), `@monthly`, `@yearly`
///   (= `@annually`).
///
/// Each field takes `*`, numbers, ranges `a-b`, lists `a,b`, and steps `*/n`, `a-b/n`, `a/n`
/// (`a/n` means `a-max/n`). Months and weekdays also take English names in any case (`jan`,
/// `January`, `Mon-Fri`, `SUN`). A weekday range may end on Sunday (`5-7`, `Fri-Sun`). Ranges
/// must not run backwards otherwise.
///
/// Restricting both day-of-month and day-of-week (neither field starting with `*`) is
/// rejected: crontab then fires when *either* matches, which one `cron` schedule cannot
/// express. Expressions whose day and month never coincide (`0 0 30 2 *`) are rejected too,
/// as are 7-field (year) expressions, Quartz extras (`?`, `L`, `W`, `#`) and empty input.
///
/// The output is canonical: 6 fields, every field an explicit `*` or list of ascending
/// numeric runs, weekdays as names (`0 0,15,30,45 9-17 * * MON-FRI`), so nothing depends on
/// how the `cron` crate numbers weekdays or handles steps.
pub fn translate_cron(expr: &str) -> Result<String, ScheduleError> {
    let invalid = |reason: String| ScheduleError::InvalidCron {
        expr: expr.to_owned(),
        reason,
    };
    let trimmed = expr.trim();
    if trimmed.is_empty() {
        return Err(invalid("is empty".to_owned()));
    }
    if trimmed.starts_with('@') {
        let canonical = match trimmed.to_ascii_lowercase().as_str() {
            "@hourly" => "0 0 * * * *",
            "@daily" | "@midnight" => "0 0 0 * * *",
            "@weekly" => "0 0 0 * * SUN",
            "@monthly" => "0 0 0 1 * *",
            "@yearly" | "@annually" => "0 0 0 1 1 *",
            _ => {
                return Err(invalid(format!(
                    "unknown shortcut `{trimmed}`: use @hourly, @daily, @midnight, @weekly, @monthly, @yearly or @annually"
                )));
            }
        };
        return Ok(canonical.to_owned());
    }

    let fields: Vec<&str> = trimmed.split_whitespace().collect();
    let (second, rest) = match fields.len() {
        5 => ("0", &fields[..]),
        6 => (fields[0], &fields[1..]),
        7 => {
            return Err(invalid(
                "has 7 fields, but a year field is not supported".to_owned(),
            ));
        }
        n => {
            return Err(invalid(format!(
                "has {n} field{}, expected 5 (or 6 with seconds first)",
                if n == 1 { "" } else { "s" }
            )));
        }
    };
    let [minute, hour, dom, month, dow] = rest else {
        return Err(invalid("expected 5 fields after seconds".to_owned()));
    };

    let second_bits = parse_field(&SECOND, second).map_err(&invalid)?;
    let minute_bits = parse_field(&MINUTE, minute).map_err(&invalid)?;
    let hour_bits = parse_field(&HOUR, hour).map_err(&invalid)?;
    let dom_bits = parse_field(&DAY_OF_MONTH, dom).map_err(&invalid)?;
    let month_bits = parse_field(&MONTH, month).map_err(&invalid)?;
    let dow_bits = parse_field(&DAY_OF_WEEK, dow).map_err(&invalid)?;

    if !dom.starts_with('*') && !dow.starts_with('*') {
        return Err(invalid(format!(
            "restricts both day-of-month (`{dom}`) and day-of-week (`{dow}`); crontab would fire when either matches, \
             which is not supported: put `*` in one of them"
        )));
    }
    let coincide = (1..=12u32).any(|m| {
        month_bits & (1 << m) != 0
            && (1..=MONTH_DAYS[(m - 1) as usize]).any(|d| dom_bits & (1 << d) != 0)
    });
    if !coincide {
        return Err(invalid(format!(
            "day-of-month `{dom}` never occurs in month `{month}`, so it would never fire"
        )));
    }

    // Fold Sunday-as-7 onto 0: the weekday set is then 0..=6 and never wraps.
    let dow_bits = (dow_bits | (dow_bits >> 7)) & 0x7f;
    Ok(format!(
        "{} {} {} {} {} {}",
        render_numeric(second_bits, &SECOND),
        render_numeric(minute_bits, &MINUTE),
        render_numeric(hour_bits, &HOUR),
        render_numeric(dom_bits, &DAY_OF_MONTH),
        render_numeric(month_bits, &MONTH),
        render_weekdays(dow_bits),
    ))
}

/// Parse one crontab field into a bit set (bit `v` set = value `v` selected).
/// The error is a reason string for [`ScheduleError::InvalidCron`].
fn parse_field(spec: &FieldSpec, field: &str) -> Result<u64, String> {
    let syntax = || {
        format!(
            "{} field `{field}` is not valid: use `*`, a value, a range `a-b`, a list `a,b` or a step `*/n`, `a-b/n`; {}",
            spec.name, spec.valid
        )
    };
    let mut bits = 0u64;
    for element in field.split(',') {
        let (base, step) = match element.split_once('/') {
            Some((base, step)) => (base, Some(parse_step(spec, step, &syntax)?)),
            None => (element, None),
        };
        let (low, high) = if base == "*" {
            (spec.min, spec.max)
        } else if let Some((a, b)) = base.split_once('-') {
            let low = parse_value(spec, a, &syntax)?;
            let mut high = parse_value(spec, b, &syntax)?;
            if spec.name == DAY_OF_WEEK.name && high == 0 && low > 0 {
                high = 7; // `Fri-Sun`, `5-0`: a range ending on Sunday.
            }
            if low > high {
                return Err(format!(
                    "{} range `{base}` runs backwards: write the smaller value first; {}",
                    spec.name, spec.valid
                ));
            }
            (low, high)
        } else {
            let value = parse_value(spec, base, &syntax)?;
            (value, if step.is_some() { spec.max } else { value })
        };
        let step = step.unwrap_or(1);
        let mut value = low;
        while value <= high {
            bits |= 1 << value;
            match value.checked_add(step) {
                Some(next) => value = next,
                None => break,
            }
        }
    }
    Ok(bits)
}

/// A step after `/`: a whole number of 1 or more.
fn parse_step(spec: &FieldSpec, text: &str, syntax: &dyn Fn() -> String) -> Result<u32, String> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(syntax());
    }
    match text.parse::<u32>() {
        Ok(step) if step >= 1 => Ok(step),
        _ => Err(format!(
            "{} step `/{text}` must be a whole number of 1 or more; {}",
            spec.name, spec.valid
        )),
    }
}

/// A single value: a number in range, or a name if the field has names.
fn parse_value(spec: &FieldSpec, text: &str, syntax: &dyn Fn() -> String) -> Result<u32, String> {
    if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
        return match text.parse::<u32>() {
            Ok(v) if (spec.min..=spec.max).contains(&v) => Ok(v),
            _ => Err(spec.valid.to_owned()),
        };
    }
    if !text.is_empty() && text.bytes().all(|b| b.is_ascii_alphabetic()) {
        let lower = text.to_ascii_lowercase();
        return spec
            .names
            .iter()
            .find(|(name, _)| *name == lower)
            .map(|(_, v)| *v)
            .ok_or_else(|| spec.valid.to_owned());
    }
    Err(syntax())
}

/// Ascending runs of consecutive set bits in `min..=max`, as `(first, last)` pairs.
fn runs(bits: u64, min: u32, max: u32) -> Vec<(u32, u32)> {
    let mut out: Vec<(u32, u32)> = Vec::new();
    for v in min..=max {
        if bits & (1 << v) == 0 {
            continue;
        }
        match out.last_mut() {
            Some((_, last)) if *last + 1 == v => *last = v,
            _ => out.push((v, v)),
        }
    }
    out
}

/// `*` if every value is selected, else `a,b-c,...` in numbers.
fn render_numeric(bits: u64, spec: &FieldSpec) -> String {
    let runs = runs(bits, spec.min, spec.max);
    if runs == [(spec.min, spec.max)] {
        return "*".to_owned();
    }
    join_runs(&runs, |v| v.to_string())
}

/// `*` if every weekday is selected, else `SUN,MON-FRI`-style names (input bits 0..=6, 0 = Sunday).
fn render_weekdays(bits: u64) -> String {
    let runs = runs(bits, 0, 6);
    if runs == [(0, 6)] {
        return "*".to_owned();
    }
    join_runs(&runs, |v| {
        CRON_DAY_NAMES
            .get(v as usize)
            .copied()
            .unwrap_or("SUN")
            .to_owned()
    })
}

fn join_runs(runs: &[(u32, u32)], show: impl Fn(u32) -> String) -> String {
    runs.iter()
        .map(|&(a, b)| {
            if a == b {
                show(a)
            } else {
                format!("{}-{}", show(a), show(b))
            }
        })
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{Datelike, TimeZone, Timelike, Weekday};
    use std::collections::BTreeSet;

    fn utc(y: i32, mo: u32, d: u32, h: u32, mi: u32, s: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, mo, d, h, mi, s).unwrap()
    }

    /// Drive `next_after` like the poll loop would: each poll starts exactly at its fire time.
    fn fires_until(s: &Schedule, start: DateTime<Utc>, end: DateTime<Utc>) -> Vec<DateTime<Utc>> {
        let mut out = Vec::new();
        let mut now = start;
        let mut last = None;
        loop {
            let next = s.next_after(now, last);
            assert!(next > now, "{next} not after {now}");
            if next >= end {
                return out;
            }
            out.push(next);
            now = next;
            last = Some(next);
        }
    }

    fn weekdays_of(fires: &[DateTime<Utc>]) -> BTreeSet<u32> {
        fires
            .iter()
            .map(|f| f.weekday().num_days_from_monday())
            .collect()
    }

    fn four_weeks_utc(expr: &str) -> Vec<DateTime<Utc>> {
        let s = Schedule::cron(expr, "UTC").unwrap();
        // 2024-01-01 is a Monday.
        let start = utc(2024, 1, 1, 0, 0, 0);
        fires_until(&s, start, start + TimeDelta::days(28))
    }

    fn assert_weekdays_at_nine(expr: &str) {
        let fires = four_weeks_utc(expr);
        assert_eq!(fires.len(), 20, "{expr}: {fires:?}");
        for f in &fires {
            assert!(
                !matches!(f.weekday(), Weekday::Sat | Weekday::Sun),
                "{expr} fired on {f}"
            );
            assert_eq!((f.hour(), f.minute(), f.second()), (9, 0, 0), "{expr}: {f}");
        }
        let expected: BTreeSet<u32> = (0..5).collect();
        assert_eq!(weekdays_of(&fires), expected, "{expr}");
    }

    #[test]
    fn numeric_weekday_range_means_monday_to_friday() {
        assert_weekdays_at_nine("0 9 * * 1-5");
    }

    #[test]
    fn named_weekday_range_means_monday_to_friday() {
        assert_weekdays_at_nine("0 9 * * Mon-Fri");
        assert_weekdays_at_nine("0 9 * * MON-FRI");
        assert_weekdays_at_nine("0 0 9 * * 1-5");
    }

    #[test]
    fn zero_and_seven_are_sunday() {
        for expr in [
            "0 0 * * 0",
            "0 0 * * 7",
            "0 0 * * SUN",
            "0 0 * * sunday",
            "@weekly",
        ] {
            let fires = four_weeks_utc(expr);
            assert_eq!(fires.len(), 4, "{expr}: {fires:?}");
            for f in &fires {
                assert_eq!(f.weekday(), Weekday::Sun, "{expr}: {f}");
                assert_eq!((f.hour(), f.minute(), f.second()), (0, 0, 0));
            }
        }
    }

    #[test]
    fn range_ending_at_seven_is_friday_to_sunday() {
        for expr in ["0 0 * * 5-7", "0 0 * * Fri-Sun", "0 0 * * 5,6,0"] {
            let fires = four_weeks_utc(expr);
            assert_eq!(fires.len(), 12, "{expr}: {fires:?}");
            let expected: BTreeSet<u32> = [4, 5, 6].into_iter().collect();
            assert_eq!(weekdays_of(&fires), expected, "{expr}");
        }
    }

    #[test]
    fn every_fifteen_minutes() {
        let s = Schedule::cron("*/15 * * * *", "UTC").unwrap();
        let start = utc(2024, 5, 5, 10, 7, 13);
        let fires = fires_until(&s, start, start + TimeDelta::hours(1));
        let minutes: Vec<u32> = fires.iter().map(|f| f.minute()).collect();
        assert_eq!(minutes, [15, 30, 45, 0]);
        assert!(fires.iter().all(|f| f.second() == 0 && f.nanosecond() == 0));
        // Three whole hours from 09:59:59: 10:00 up to 12:45 inclusive, four an hour.
        let start = utc(2024, 5, 5, 9, 59, 59);
        let fires = fires_until(&s, start, start + TimeDelta::hours(3));
        assert_eq!(fires.len(), 12);
        for hour in 10..13 {
            assert_eq!(fires.iter().filter(|f| f.hour() == hour).count(), 4);
        }
    }

    #[test]
    fn six_fields_have_seconds_first() {
        let s = Schedule::cron("30 */5 * * * *", "UTC").unwrap();
        let start = utc(2024, 5, 5, 10, 0, 0);
        let fires = fires_until(&s, start, start + TimeDelta::minutes(30));
        assert_eq!(fires.len(), 6);
        for f in &fires {
            assert_eq!(f.second(), 30, "{f}");
            assert_eq!(f.minute() % 5, 0, "{f}");
        }
        assert_eq!(fires[0], utc(2024, 5, 5, 10, 0, 30));
    }

    #[test]
    fn six_field_weekday_uses_crontab_numbering() {
        let fires = four_weeks_utc("0 0 0 * * 0");
        assert!(fires.iter().all(|f| f.weekday() == Weekday::Sun));
        assert_eq!(fires.len(), 4);
        let fires = four_weeks_utc("0 0 0 * * 6");
        assert!(fires.iter().all(|f| f.weekday() == Weekday::Sat));
        assert_eq!(fires.len(), 4);
    }

    #[test]
    fn time_zone_wall_clock() {
        let s = Schedule::cron("0 9 * * *", "Europe/London").unwrap();
        // Summer (BST, UTC+1): 09:00 London = 08:00 UTC.
        assert_eq!(
            s.next_after(utc(2024, 7, 1, 0, 0, 0), None),
            utc(2024, 7, 1, 8, 0, 0)
        );
        // Winter (GMT): 09:00 London = 09:00 UTC.
        assert_eq!(
            s.next_after(utc(2024, 1, 15, 8, 30, 0), None),
            utc(2024, 1, 15, 9, 0, 0)
        );
        // Across the spring change (2024-03-31): 09:00 UTC on the 30th, 08:00 UTC on the 31st.
        let start = utc(2024, 3, 30, 0, 0, 0);
        let fires = fires_until(&s, start, start + TimeDelta::days(2));
        assert_eq!(
            fires,
            [utc(2024, 3, 30, 9, 0, 0), utc(2024, 3, 31, 8, 0, 0)]
        );
    }

    #[test]
    fn unknown_time_zone_is_named() {
        let err = Schedule::cron("0 9 * * *", "Mars/Olympus_Mons").unwrap_err();
        assert!(matches!(err, ScheduleError::UnknownTimeZone(_)));
        let msg = err.to_string();
        assert!(msg.contains("Mars/Olympus_Mons"), "{msg}");
        assert!(msg.contains("Europe/London"), "{msg}");
        assert!(Schedule::cron("0 9 * * *", "").is_err());
    }

    #[test]
    fn dst_fall_back_hour_stays_strictly_increasing() {
        // America/Chicago falls back on 2022-11-06: 01:00-02:00 local happens twice.
        let s = Schedule::cron("*/15 * * * *", "America/Chicago").unwrap();
        let start = utc(2022, 11, 6, 5, 0, 0); // 00:00 CDT
        let fires = fires_until(&s, start, start + TimeDelta::hours(4));
        assert!(fires.windows(2).all(|w| w[0] < w[1]));
        // From inside the repeated hour (01:10 CST = 07:10 UTC) the answer is 01:15 CST,
        // not the earlier 01:15 CDT the cron crate yields first.
        assert_eq!(
            s.next_after(utc(2022, 11, 6, 7, 10, 0), None),
            utc(2022, 11, 6, 7, 15, 0)
        );
    }

    #[test]
    fn dst_spring_gap_is_skipped() {
        // 01:30 does not exist in London on 2024-03-31.
        let s = Schedule::cron("30 1 * * *", "Europe/London").unwrap();
        assert_eq!(
            s.next_after(utc(2024, 3, 30, 12, 0, 0), None),
            utc(2024, 4, 1, 0, 30, 0)
        );
    }

    #[test]
    fn every_first_call_is_now() {
        let s = Schedule::every(Duration::from_secs(30)).unwrap();
        let now = utc(2024, 5, 5, 10, 0, 0);
        assert_eq!(s.next_after(now, None), now);
    }

    #[test]
    fn every_waits_from_last_start() {
        let s = Schedule::every(Duration::from_secs(30)).unwrap();
        let now = utc(2024, 5, 5, 10, 0, 0);
        let last = now - TimeDelta::seconds(10);
        assert_eq!(s.next_after(now, Some(last)), last + TimeDelta::seconds(30));
        assert_eq!(s.next_after(now, Some(last)), now + TimeDelta::seconds(20));
    }

    #[test]
    fn every_overrun_starts_now() {
        let s = Schedule::every(Duration::from_secs(30)).unwrap();
        let now = utc(2024, 5, 5, 10, 0, 0);
        assert_eq!(s.next_after(now, Some(now - TimeDelta::seconds(45))), now);
        assert_eq!(s.next_after(now, Some(now - TimeDelta::seconds(30))), now);
    }

    #[test]
    fn every_clock_stepped_back_waits_at_most_one_interval() {
        let s = Schedule::every(Duration::from_secs(30)).unwrap();
        let now = utc(2024, 5, 5, 10, 0, 0);
        let last = now + TimeDelta::hours(1);
        assert_eq!(s.next_after(now, Some(last)), now + TimeDelta::seconds(30));
    }

    #[test]
    fn every_rejects_zero_and_sub_second() {
        for d in [
            Duration::ZERO,
            Duration::from_nanos(1),
            Duration::from_millis(999),
        ] {
            let err = Schedule::every(d).unwrap_err();
            assert!(matches!(err, ScheduleError::IntervalTooShort(_)));
            assert!(err.to_string().contains("at least 1s"), "{err}");
        }
        assert!(Schedule::every(Duration::from_secs(1)).is_ok());
        assert!(Schedule::every(Duration::from_millis(1500)).is_ok());
        let err = Schedule::every(Duration::MAX).unwrap_err();
        assert!(matches!(err, ScheduleError::IntervalTooLarge(_)), "{err}");
        // Built by hand, bypassing validation: still no panic.
        let huge = Schedule::Every(Duration::MAX);
        let now = utc(2024, 5, 5, 10, 0, 0);
        assert_eq!(huge.next_after(now, None), now);
        assert_eq!(huge.next_after(now, Some(now)), DateTime::<Utc>::MAX_UTC);
    }

    #[test]
    fn cron_is_strictly_after_max_of_now_and_last_start() {
        let s = Schedule::cron("*/5 * * * *", "UTC").unwrap();
        let fire = utc(2024, 5, 5, 10, 5, 0);
        // Exactly at a fire time: the next one, never the same instant.
        assert_eq!(s.next_after(fire, None), utc(2024, 5, 5, 10, 10, 0));
        assert_eq!(s.next_after(fire, Some(fire)), utc(2024, 5, 5, 10, 10, 0));
        // A poll that started at 10:05 and is already done at 10:05:00.2.
        let now = fire + TimeDelta::milliseconds(200);
        assert_eq!(s.next_after(now, Some(fire)), utc(2024, 5, 5, 10, 10, 0));
        // Just before a fire time, sub-second: that fire time.
        let now = fire - TimeDelta::milliseconds(1);
        assert_eq!(s.next_after(now, None), fire);
        // last_start ahead of now (clock stepped back): measured from last_start.
        let now = utc(2024, 5, 5, 9, 0, 0);
        assert_eq!(s.next_after(now, Some(fire)), utc(2024, 5, 5, 10, 10, 0));
        // now ahead of last_start (polls were missed): measured from now, no catch-up burst.
        let now = utc(2024, 5, 5, 11, 2, 0);
        assert_eq!(s.next_after(now, Some(fire)), utc(2024, 5, 5, 11, 5, 0));
    }

    #[test]
    fn cron_past_supported_years_is_never_and_does_not_panic() {
        let s = Schedule::cron("0 0 * * *", "Pacific/Kiritimati").unwrap();
        assert_eq!(
            s.next_after(DateTime::<Utc>::MAX_UTC, None),
            DateTime::<Utc>::MAX_UTC
        );
        assert_eq!(
            s.next_after(utc(2100, 12, 31, 23, 0, 0), None),
            DateTime::<Utc>::MAX_UTC
        );
        let before_epoch = DateTime::<Utc>::MIN_UTC;
        assert_eq!(s.next_after(before_epoch, None).year(), 1970);
    }

    #[test]
    fn errors_say_what_is_valid() {
        let cases = [
            ("*/5 * * *", "has 4 fields"),
            ("61 * * * *", "minute must be 0-59"),
            ("* * * * 8", "day-of-week must be 0-7"),
            ("banana", "has 1 field,"),
            ("", "is empty"),
            ("   ", "is empty"),
            ("* 24 * * *", "hour must be 0-23"),
            ("* * 0 * *", "day-of-month must be 1-31"),
            ("* * * 13 *", "month must be 1-12 or jan-dec"),
            ("* * * * Funday", "day-of-week must be 0-7"),
            ("60 * * * * *", "second must be 0-59"),
            ("0 0 1 1 * * 2030", "year field is not supported"),
            (
                "*/0 * * * *",
                "step `/0` must be a whole number of 1 or more",
            ),
            ("5-1 * * * *", "runs backwards"),
            ("0 0 * * Sat-Mon", "runs backwards"),
            ("0 0 1 * 1", "restricts both day-of-month"),
            ("0 0 30 2 *", "never occurs"),
            ("@reboot", "unknown shortcut"),
            ("0 0 ? * MON", "day-of-month field `?` is not valid"),
            ("0 0 L * *", "day-of-month must be 1-31"),
            ("0 0 * * 1#2", "day-of-week field `1#2` is not valid"),
            ("99999999999 * * * *", "minute must be 0-59"),
            ("jan * * * *", "minute must be 0-59"),
        ];
        for (expr, needle) in cases {
            let err = Schedule::cron(expr, "UTC").unwrap_err();
            let msg = err.to_string();
            assert!(msg.contains(needle), "{expr:?}: {msg}");
            assert!(msg.contains(CRON_HELP), "{expr:?}: {msg}");
            assert!(
                msg.starts_with(&format!("cron expression `{expr}`: ")),
                "{msg}"
            );
        }
        let msg = Schedule::cron("61 * * * *", "UTC").unwrap_err().to_string();
        assert_eq!(
            msg,
            "cron expression `61 * * * *`: minute must be 0-59 (5-field crontab: \
             `min hour day-of-month month day-of-week`, or 6 fields with seconds first)"
        );
    }

    #[test]
    fn garbage_never_panics() {
        let garbage = [
            "* * * * * * * *",
            "-",
            "*/",
            "/5 * * * *",
            "1-- * * * *",
            ",,, * * * *",
            "* * * * -1",
            "*/4294967295 * * * *",
            "4294967295-4294967295 * * * *",
            "0-59/4294967295 * * * *",
            "@",
            "@@daily",
            "@daily extra",
            "\u{0}\u{1} * * * *",
            "１ * * * *",
            "é * * * *",
            "* * * * MON-",
            "* * * * -MON",
            "* * * * 7-7/0",
            "*-* * * * *",
            "1/2/3 * * * *",
            "\t\n",
            "0 0 31 4,6,9,11 *",
            "0 0 29,30,31 2 *",
        ];
        for expr in garbage {
            let translated = translate_cron(expr);
            let built = Schedule::cron(expr, "UTC");
            assert_eq!(translated.is_ok(), built.is_ok(), "{expr:?}");
            if let Err(e) = built {
                assert!(e.to_string().contains(CRON_HELP), "{expr:?}: {e}");
            }
        }
        // A large step just selects the start value, like crontab.
        assert_eq!(
            translate_cron("*/4294967295 * * * *").unwrap(),
            "0 0 * * * *"
        );
        // Every printable-ASCII two-byte field in every position: no panics.
        let alphabet: Vec<char> = (0x20u8..0x7f).map(char::from).collect();
        for a in &alphabet {
            for b in &alphabet {
                let field = format!("{a}{b}");
                for pos in 0..5 {
                    let mut fields = ["*"; 5].map(str::to_owned);
                    fields[pos] = field.clone();
                    let _ = Schedule::cron(&fields.join(" "), "UTC");
                }
            }
        }
    }

    #[test]
    fn translation_is_canonical_and_unambiguous() {
        let cases = [
            ("*/5 * * * *", "0 0,5,10,15,20,25,30,35,40,45,50,55 * * * *"),
            ("0 9 * * 1-5", "0 0 9 * * MON-FRI"),
            ("0 9 * * mon-fri", "0 0 9 * * MON-FRI"),
            ("0 0 * * 0", "0 0 0 * * SUN"),
            ("0 0 * * 7", "0 0 0 * * SUN"),
            ("0 0 * * 5-7", "0 0 0 * * SUN,FRI-SAT"),
            ("0 0 * * 0-6", "0 0 0 * * *"),
            ("0 0 * * 1-7", "0 0 0 * * *"),
            ("0 0 * * 0-7", "0 0 0 * * *"),
            ("0 0 * * */2", "0 0 0 * * SUN,TUE,THU,SAT"),
            ("0 0 * * 1-5/2", "0 0 0 * * MON,WED,FRI"),
            ("0 0 * * */7", "0 0 0 * * SUN"),
            ("0 0 * * 6,0", "0 0 0 * * SUN,SAT"),
            ("0 0 1 jan-mar *", "0 0 0 1 1-3 *"),
            ("0 0 1 January,DEC *", "0 0 0 1 1,12 *"),
            (
                "30 */5 * * * *",
                "30 0,5,10,15,20,25,30,35,40,45,50,55 * * * *",
            ),
            ("0 9-17/4 * * *", "0 0 9,13,17 * * *"),
            ("0 22/1 * * *", "0 0 22-23 * * *"),
            (
                "0 0 */2 * *",
                "0 0 0 1,3,5,7,9,11,13,15,17,19,21,23,25,27,29,31 * *",
            ),
            ("  0   9 * *   1-5  ", "0 0 9 * * MON-FRI"),
            ("@hourly", "0 0 * * * *"),
            ("@daily", "0 0 0 * * *"),
            ("@midnight", "0 0 0 * * *"),
            ("@weekly", "0 0 0 * * SUN"),
            ("@monthly", "0 0 0 1 * *"),
            ("@yearly", "0 0 0 1 1 *"),
            ("@annually", "0 0 0 1 1 *"),
            ("0 0 29 2 *", "0 0 0 29 2 *"),
        ];
        for (expr, want) in cases {
            assert_eq!(translate_cron(expr).unwrap(), want, "{expr}");
            // And the cron crate accepts every canonical form.
            assert!(Schedule::cron(expr, "UTC").is_ok(), "{expr}");
        }
    }

    #[test]
    fn shortcuts_fire_when_expected() {
        let s = Schedule::cron("@monthly", "UTC").unwrap();
        assert_eq!(
            s.next_after(utc(2024, 2, 10, 0, 0, 0), None),
            utc(2024, 3, 1, 0, 0, 0)
        );
        let s = Schedule::cron("0 0 29 2 *", "UTC").unwrap();
        assert_eq!(
            s.next_after(utc(2024, 3, 1, 0, 0, 0), None),
            utc(2028, 2, 29, 0, 0, 0)
        );
    }

    #[test]
    fn describe_is_short() {
        let cases = [
            (Duration::from_secs(30), "every 30s"),
            (Duration::from_secs(300), "every 5m"),
            (Duration::from_secs(5400), "every 1h 30m"),
            (Duration::from_secs(86_400), "every 1d"),
            (Duration::from_millis(1500), "every 1s 500ms"),
        ];
        for (d, want) in cases {
            assert_eq!(Schedule::every(d).unwrap().describe(), want);
        }
        assert_eq!(
            Schedule::cron("*/5 * * * *", "UTC").unwrap().describe(),
            "cron `*/5 * * * *` (UTC)"
        );
        assert_eq!(
            Schedule::cron("0 9 * * Mon-Fri", "Europe/London")
                .unwrap()
                .describe(),
            "cron `0 9 * * Mon-Fri` (Europe/London)"
        );
        let err = Schedule::every(Duration::from_millis(250)).unwrap_err();
        assert!(err.to_string().contains("got 250ms"), "{err}");
    }
}
