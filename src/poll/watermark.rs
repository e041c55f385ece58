//! Watermarks from the source's own clock or data (pure): reading a time from a response header
//! (`Date`, or one the configuration names) or from a value in a booking, and choosing the next
//! watermark when a poll is promoted.

use chrono::{DateTime, NaiveDateTime, TimeZone, Utc};
use serde_json::Value;

use crate::config::WatermarkFrom;

/// A time written as an HTTP date, RFC 3339, `YYYY-MM-DD HH:MM:SS[.f]` or `...T...` without a
/// zone (read in `tz`), or a Unix timestamp in seconds or milliseconds.
pub(super) fn parse_time(text: &str, tz: chrono_tz::Tz) -> Option<i64> {
    let t = text.trim();
    if t.is_empty() {
        return None;
    }
    if let Ok(n) = t.parse::<f64>() {
        return unix(n);
    }
    if let Ok(d) = DateTime::parse_from_rfc3339(t) {
        return Some(d.timestamp_millis());
    }
    if let Ok(d) = DateTime::parse_from_rfc2822(t) {
        return Some(d.timestamp_millis());
    }
    for f in ["%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%dT%H:%M:%S%.f"] {
        if let Ok(n) = NaiveDateTime::parse_from_str(t, f) {
            return tz
                .from_local_datetime(&n)
                .earliest()
                .map(|d| d.with_timezone(&Utc).timestamp_millis());
        }
    }
    None
}

/// Seconds (below 10^11) or milliseconds since the epoch.
fn unix(n: f64) -> Option<i64> {
    if !n.is_finite() || n < 0.0 {
        return None;
    }
    Some(if n < 1e11 {
        (n * 1000.0) as i64
    } else {
        n as i64
    })
}

/// The time at `pointer` in a booking, if it holds one.
pub(super) fn item_time(doc: &Value, pointer: &str, tz: chrono_tz::Tz) -> Option<i64> {
    match doc.pointer(pointer)? {
        Value::String(s) => parse_time(s, tz),
        Value::Number(n) => n.as_f64().and_then(unix),
        _ => None,
    }
}

/// The watermark a promoted poll leaves for the next incremental poll.
///
/// * poll start: pollhook's clock when the poll began;
/// * `Date` / a header: the source's clock at the poll's first response (the poll start if the
///   header was missing or unreadable);
/// * a pointer: the newest time among the bookings seen, never earlier than the previous
///   watermark (a poll that saw nothing keeps it).
pub(super) fn next(
    from: &WatermarkFrom,
    started_ms: i64,
    source_clock_ms: Option<i64>,
    newest_item_ms: Option<i64>,
    previous: Option<i64>,
) -> i64 {
    match from {
        WatermarkFrom::PollStart => started_ms,
        WatermarkFrom::DateHeader | WatermarkFrom::Header(_) => {
            source_clock_ms.unwrap_or(started_ms)
        }
        WatermarkFrom::Pointer(_) => match (newest_item_ms, previous) {
            (Some(n), Some(p)) => n.max(p),
            (Some(n), None) => n,
            (None, Some(p)) => p,
            (None, None) => started_ms,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const UTC: chrono_tz::Tz = chrono_tz::UTC;
    const T: i64 = 1_764_628_478_000; // 2025-12-01T22:34:38Z

    #[test]
    fn reads_the_usual_ways_apis_write_times() {
        for text in [
            "Mon, 01 Dec 2025 22:34:38 GMT",
            "2025-12-01T22:34:38Z",
            "2025-12-01T23:34:38+01:00",
            "2025-12-01 22:34:38",
            "2025-12-01T22:34:38",
            "1764628478",
            "1764628478000",
        ] {
            assert_eq!(parse_time(text, UTC), Some(T), "{text}");
        }
        assert_eq!(
            parse_time("2025-12-01 23:34:38", chrono_tz::Europe::Berlin),
            Some(T),
            "zoneless times are read in the source's time zone"
        );
        assert_eq!(parse_time("soon", UTC), None);
        assert_eq!(parse_time("", UTC), None);
        assert_eq!(item_time(&json!({"m": 1764628478}), "/m", UTC), Some(T));
        assert_eq!(item_time(&json!({"m": null}), "/m", UTC), None);
    }

    #[test]
    fn choosing_the_next_watermark() {
        let p = WatermarkFrom::Pointer("/m".into());
        assert_eq!(
            next(&WatermarkFrom::PollStart, 5, Some(9), Some(9), None),
            5
        );
        assert_eq!(next(&WatermarkFrom::DateHeader, 5, Some(3), None, None), 3);
        assert_eq!(next(&WatermarkFrom::DateHeader, 5, None, None, None), 5);
        assert_eq!(next(&p, 5, None, Some(7), Some(6)), 7);
        assert_eq!(next(&p, 5, None, Some(4), Some(6)), 6, "never back");
        assert_eq!(next(&p, 5, None, None, Some(6)), 6, "nothing seen: kept");
    }
}
