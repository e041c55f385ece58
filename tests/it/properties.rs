//! Properties over arbitrary values a remote API can send: a URL template's host, path segments
//! and query names never depend on the values it is filled with; a custom v2 body is always valid
//! JSON; a booking id is never empty, blank or a non-canonical number.

use std::collections::BTreeSet;

use chrono::Utc;
use pollhook::config::{Config, EndpointConfig};
use pollhook::delivery::render;
use pollhook::outbox::{Booking, Event, EventKind};
use proptest::prelude::*;
use serde_json::{Value, json};

fn endpoint(extra: &str) -> EndpointConfig {
    let text = format!(
        "[sources.s]\nurl = \"http://127.0.0.1:1/\"\nevery = \"1m\"\n[endpoints.e]\n{extra}\n"
    );
    Config::from_toml_str(&text, "t.toml")
        .unwrap_or_else(|e| panic!("{e}"))
        .endpoints
        .remove(0)
}

fn event(id: &str, booking: Value) -> Event {
    Event {
        id: "evt_1".into(),
        seq: 1,
        kind: EventKind::Modify,
        source: "s".into(),
        booking_id: id.into(),
        detected_ms: 1_700_000_000_000,
        booking: Booking::from_value(booking).unwrap(),
        changes: Vec::new(),
    }
}

/// Text as remote APIs send it, biased towards what matters in URLs: dots, slashes, percent
/// signs, query syntax, control characters and non-ASCII.
fn remote_text() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        "[./%?#&=;\\\\ a-zA-Z0-9\\x00-\\x1f\u{80}-\u{10ffff}]{0,12}",
        Just(".".to_string()),
        Just("..".to_string()),
        Just(String::new()),
        Just("%2e%2E".to_string()),
    ]
}

/// One URL template under test: the template, its path segments with `*` where a value goes, and
/// the query names it has.
struct Shape {
    url: &'static str,
    segments: &'static [&'static str],
    keys: &'static [&'static str],
    /// Which value (0: `booking/x`, 1: the booking id) lands alone in a segment, or with a
    /// literal `.` after it: a value that makes such a segment a dot segment cannot be sent.
    dot_sensitive: &'static [(usize, &'static str)],
}

const SHAPES: &[Shape] = &[
    Shape {
        url: "http://h.test/hook/p/{{ booking/x }}/tail?a={{ booking/x }}&b=lit",
        segments: &["hook", "p", "*", "tail"],
        keys: &["a", "b"],
        dot_sensitive: &[(0, "")],
    },
    Shape {
        url: "http://h.test/hook/body/{{ event.booking_id }}/end",
        segments: &["hook", "body", "*", "end"],
        keys: &[],
        dot_sensitive: &[(1, "")],
    },
    Shape {
        url: "http://h.test/{{ booking/x }}",
        segments: &["*"],
        keys: &[],
        dot_sensitive: &[(0, "")],
    },
    Shape {
        url: "http://h.test/a/pre{{ booking/x }}-{{ event.booking_id }}post/{{ event.booking_id }}./z?k={{ event.booking_id }}&m={{ booking/x }}{{ booking/x }}",
        segments: &["a", "pre*-*post", "*.", "z"],
        keys: &["k", "m"],
        dot_sensitive: &[(1, ".")],
    },
    Shape {
        url: "http://h.test/b/[BOOKID]/[GUESTNAME]/c?g=[GUESTNAME]&id=[BOOKID]",
        segments: &["b", "*", "*", "c"],
        keys: &["g", "id"],
        dot_sensitive: &[(1, ""), (2, "")],
    },
];

/// Whether `segment` is what a `*`-pattern allows: the literal parts in order, anything between.
fn matches(pattern: &str, segment: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == segment;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if segment.len() < first.len() + last.len()
        || !segment.starts_with(first)
        || !segment.ends_with(last)
    {
        return false;
    }
    let mut rest = &segment[first.len()..segment.len() - last.len()];
    for p in &parts[1..parts.len() - 1] {
        match rest.find(p) {
            Some(i) => rest = &rest[i + p.len()..],
            None => return false,
        }
    }
    true
}

fn is_dot_segment(s: &str) -> bool {
    matches!(
        s.to_ascii_lowercase().as_str(),
        "." | ".." | "%2e" | "%2e%2e" | ".%2e" | "%2e."
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn url_values_never_change_the_host_the_segments_or_the_query_names(
        x in remote_text(),
        id in remote_text(),
        v1 in any::<bool>(),
    ) {
        for shape in SHAPES {
            let format = if v1 { "v1" } else { "v2" };
            let ep = endpoint(&format!(
                "url = \"{}\"\nformat = \"{format}\"\nvariables = {{ GUESTNAME = \"/x\" }}",
                shape.url
            ));
            let ev = event(&id, json!({ "x": x }));
            let values = [x.as_str(), id.as_str(), x.as_str()];
            // The values standing alone (or before a literal `.`) in a path segment: if the
            // segment they make is a dot segment, URL rules would resolve it.
            let dotted = shape.dot_sensitive.iter().any(|(which, after)| {
                let v = values[*which];
                // How the value is written: dots only become `%2E`s; anything else holds a
                // character that is not a dot (a `%` is written `%25`), here `X`.
                let encoded = if v.is_empty() {
                    String::new()
                } else if v.bytes().all(|b| b == b'.') {
                    "%2E".repeat(v.len())
                } else {
                    "X".to_string()
                };
                is_dot_segment(&format!("{encoded}{after}"))
            });
            match render(&ep, &ev, 1, Utc::now()) {
                Ok(r) => {
                    prop_assert!(!dotted, "{} with {x:?} / {id:?} went to {}", shape.url, r.url);
                    prop_assert_eq!(r.url.host_str(), Some("h.test"));
                    prop_assert_eq!(r.url.scheme(), "http");
                    prop_assert_eq!(r.url.port_or_known_default(), Some(80));
                    let segments: Vec<&str> = r.url.path_segments().unwrap().collect();
                    prop_assert_eq!(
                        segments.len(), shape.segments.len(),
                        "{} with {:?} / {:?} went to {}", shape.url, x, id, r.url
                    );
                    for (got, want) in segments.iter().zip(shape.segments) {
                        prop_assert!(matches(want, got), "segment {got:?} is not {want:?} in {}", r.url);
                    }
                    let keys: BTreeSet<String> =
                        r.url.query_pairs().map(|(k, _)| k.into_owned()).collect();
                    let mut want: BTreeSet<String> =
                        shape.keys.iter().map(|k| k.to_string()).collect();
                    if v1 {
                        want.insert("bookid".into());
                        want.insert("status".into());
                    }
                    prop_assert_eq!(keys, want, "{}", r.url);
                }
                Err(e) => {
                    prop_assert!(dotted, "{} with {x:?} / {id:?} was refused: {e}", shape.url);
                    prop_assert!(e.contains("endpoints.e.url"), "{e}");
                }
            }
        }
    }
}

/// Arbitrary JSON, strings drawn from [`remote_text`].
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        // Fractions whose decimal spelling reads back exactly, so values can be compared.
        any::<i32>().prop_map(|i| Value::from(f64::from(i) / 4.0)),
        remote_text().prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map(remote_text(), inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn custom_bodies_are_valid_json_whatever_the_values(
        x in json_value(),
        y in json_value(),
        id in remote_text(),
    ) {
        let ep = endpoint(
            "url = \"http://h.test/h\"\nbody = { a = \"{{ booking/x }}\", b = \"pre {{ booking/x }} \\\"mid\\\" {{ event.booking_id }} post\", c = [\"{{ booking/y }}\", \"{{ booking/y/0 | upper }}\"], d = { e = \"{{ booking }}\", f = \"{{ event.changes }}\" } }",
        );
        let ev = event(&id, json!({ "x": x, "y": y }));
        let r = render(&ep, &ev, 1, Utc::now()).unwrap();
        let text = std::str::from_utf8(&r.body);
        prop_assert!(text.is_ok(), "the body is not UTF-8");
        let v: Result<Value, _> = serde_json::from_slice(&r.body);
        prop_assert!(v.is_ok(), "not JSON: {:?}", text);
        let v = v.unwrap();
        let booking = ev.booking.value();
        prop_assert_eq!(&v["a"], &booking["x"]);
        prop_assert_eq!(&v["d"]["e"], booking);
        if let Value::String(s) = &x {
            prop_assert_eq!(&v["b"], &json!(format!("pre {s} \"mid\" {id} post")));
        }
    }
}

fn source(id: &str) -> pollhook::config::SourceConfig {
    let text = format!("[sources.s]\nurl = \"http://127.0.0.1:1/\"\nevery = \"1m\"\nid = {id}\n");
    Config::from_toml_str(&text, "t.toml")
        .unwrap_or_else(|e| panic!("{e}"))
        .sources
        .remove(0)
}

/// Whether `s` is an integer in its one decimal spelling (no sign on zero, no leading zeros, no
/// fraction or exponent).
fn canonical_integer(s: &str) -> bool {
    let digits = s.strip_prefix('-').unwrap_or(s);
    !digits.is_empty()
        && digits.bytes().all(|b| b.is_ascii_digit())
        && (digits == "0" && !s.starts_with('-') || !digits.starts_with('0'))
}

fn check_id_part(v: Option<&Value>, part: &str) -> Result<(), TestCaseError> {
    prop_assert!(!part.trim().is_empty(), "blank id part from {v:?}");
    match v {
        Some(Value::Number(n)) => {
            prop_assert!(canonical_integer(part), "{n} became the id {part:?}");
            let f = n.as_f64().unwrap_or(f64::NAN);
            prop_assert!(f.fract() == 0.0, "the fraction {n} became an id");
        }
        Some(Value::String(s)) => prop_assert_eq!(part, s.as_str()),
        other => prop_assert!(false, "{other:?} became the id part {part:?}"),
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn ids_are_never_empty_blank_or_non_canonical_numbers(
        item in json_value(),
        a in json_value(),
        b in json_value(),
        f in any::<f64>(),
        spelled in prop_oneof![
            Just("7.0"), Just("1e3"), Just("-0"), Just("-0.0"), Just("7.5"), Just("1E2"),
            Just("12345678901234567890"), Just("123456789012345678901234"), Just("0.1e1"), Just("-12.000"),
            Just("true"), Just("\"\""), Just("\" \\t\""), Just("\"7\""), Just("null"),
        ],
    ) {
        let single = source("\"/id\"");
        let composite = source("[\"/a\", \"/b\"]");
        // Whatever the item, extraction answers without panicking, and an id it gives is usable.
        let _ = pollhook::source::id_of(&single, &item, 1, 0);
        let doc = json!({ "id": item, "a": a, "b": b });
        if let Ok(id) = pollhook::source::id_of(&single, &doc, 1, 0) {
            check_id_part(doc.pointer("/id"), &id)?;
        }
        if let Ok(id) = pollhook::source::id_of(&composite, &doc, 1, 0) {
            prop_assert!(!id.trim().is_empty());
            for (p, v) in [("/a", &a), ("/b", &b)] {
                if let Value::Number(_) = v {
                    let n = pollhook::source::id_of(&source(&format!("\"{p}\"")), &doc, 1, 0);
                    prop_assert!(n.is_ok());
                    check_id_part(Some(v), &n.unwrap())?;
                }
            }
        }
        let doc = json!({ "id": f });
        if let Ok(id) = pollhook::source::id_of(&single, &doc, 1, 0) {
            check_id_part(doc.pointer("/id"), &id)?;
        }
        // Numbers as APIs spell them: an integral value is its integer; anything else is refused.
        let doc: Value = serde_json::from_str(&format!("{{\"id\": {spelled}}}")).unwrap();
        match pollhook::source::id_of(&single, &doc, 1, 0) {
            Ok(id) => check_id_part(doc.pointer("/id"), &id)?,
            Err(e) => prop_assert!(e.to_string().contains("/id"), "{e}"),
        }
    }
}
