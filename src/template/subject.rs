//! NATS subjects (pure): escaping a template value so it stays inside one subject token, and
//! checking that a whole subject is one a client may publish to.
//!
//! A subject is tokens joined by `.`; `*` and `>` are wildcards and whitespace ends it, so a
//! value containing any of them would split, widen or break the subject. Each value is
//! therefore percent-encoded byte by byte: every byte other than `A-Z a-z 0-9 - _` becomes `%`
//! and two uppercase hex digits (`.` is `%2E`, a space `%20`, `*` `%2A`, `>` `%3E`, `é` `%C3%A9`).
//! An empty value becomes `_` (a subject token cannot be empty), and a value that is exactly `_`
//! is written `%5F`, so every value can be read back: a token `_` is the empty value, any
//! other token is percent-decoded.

use std::fmt::Write as _;

/// Appends `value` escaped as (part of) one subject token.
pub(super) fn escape_into(out: &mut String, value: &str) {
    match value {
        "" => out.push('_'),
        "_" => out.push_str("%5F"),
        _ => {
            for b in value.bytes() {
                if b.is_ascii_alphanumeric() || b == b'-' || b == b'_' {
                    out.push(b as char);
                } else {
                    let _ = write!(out, "%{b:02X}");
                }
            }
        }
    }
}

/// `value` escaped as one subject token (see the module documentation).
pub fn subject_token(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    escape_into(&mut out, value);
    out
}

/// Whether `subject` can be published to: not empty, no whitespace or control characters, no
/// empty token (a leading, trailing or doubled `.`), and no wildcard (`*`, `>`), which are for
/// subscribing. The error says which rule is broken.
pub fn check_subject(subject: &str) -> Result<(), String> {
    if subject.is_empty() {
        return Err("the subject is empty".into());
    }
    if let Some(c) = subject
        .chars()
        .find(|c| c.is_whitespace() || c.is_control())
    {
        return Err(format!(
            "it contains {} (spaces and control characters end a subject)",
            match c {
                ' ' => "a space".to_string(),
                c => format!("the character U+{:04X}", u32::from(c)),
            }
        ));
    }
    if subject.contains(['*', '>']) {
        return Err(
            "it contains a wildcard (`*` or `>`), which is for subscribing, not publishing".into(),
        );
    }
    if subject.split('.').any(str::is_empty) {
        return Err("it has an empty token (a leading, trailing or doubled `.`)".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reads a token back, as a consumer would.
    fn decode(token: &str) -> String {
        if token == "_" {
            return String::new();
        }
        let bytes = token.as_bytes();
        let mut out = Vec::new();
        let mut i = 0;
        while i < bytes.len() {
            if bytes[i] == b'%' {
                out.push(u8::from_str_radix(&token[i + 1..i + 3], 16).unwrap());
                i += 3;
            } else {
                out.push(bytes[i]);
                i += 1;
            }
        }
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn values_stay_inside_one_token_and_read_back() {
        assert_eq!(subject_token("hotel-1_a"), "hotel-1_a");
        assert_eq!(subject_token("eu.west"), "eu%2Ewest");
        assert_eq!(subject_token("a b"), "a%20b");
        assert_eq!(subject_token("*"), "%2A");
        assert_eq!(subject_token(">"), "%3E");
        assert_eq!(subject_token("Zoë"), "Zo%C3%AB");
        assert_eq!(subject_token("50%"), "50%25");
        assert_eq!(subject_token("tab\there\r\n"), "tab%09here%0D%0A");
        assert_eq!(subject_token(""), "_");
        assert_eq!(subject_token("_"), "%5F");
        for v in [
            "",
            "_",
            "__",
            "a.b.c",
            "x > y",
            "* all",
            "Zoë & \"Bob\"",
            "%2E",
            "a\u{0}b",
            "…",
        ] {
            let t = subject_token(v);
            assert!(check_subject(&t).is_ok(), "{v:?} -> {t}");
            assert!(!t.contains('.'), "{v:?} -> {t}");
            assert_eq!(decode(&t), v, "{t}");
        }
    }

    #[test]
    fn only_subjects_one_may_publish_to_pass() {
        assert!(check_subject("bookings.hotel.new").is_ok());
        assert!(check_subject("a").is_ok());
        for (bad, why) in [
            ("", "empty"),
            ("bookings..new", "empty token"),
            (".bookings", "empty token"),
            ("bookings.", "empty token"),
            ("bookings.*", "wildcard"),
            ("bookings.>", "wildcard"),
            ("bookings new", "a space"),
            ("bookings\tnew", "U+0009"),
        ] {
            let e = check_subject(bad).unwrap_err();
            assert!(e.contains(why), "{bad:?}: {e}");
        }
    }
}
