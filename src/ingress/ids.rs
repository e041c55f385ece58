//! Where a ping's booking ids are (pure): a query parameter, a form field or a JSON Pointer,
//! held to the same id rules as a source's bookings (non-blank text, integers spelled one way).

use serde_json::Value;

use crate::config::IdFrom;
use crate::source::decode::integer_id;

/// Most ids one ping may name.
pub const MAX_IDS: usize = 100;

/// Why a ping's ids could not be read: answered with 400 and this text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BadPing {
    /// The id is not where the configuration says.
    #[error("no booking id: expected {0}")]
    Missing(String),
    /// An id breaks the id rules.
    #[error("bad booking id at {place}: {reason}")]
    BadId {
        /// Where it was.
        place: String,
        /// What is wrong.
        reason: &'static str,
    },
    /// The body is not what the configuration expects.
    #[error("malformed body: {0}")]
    Body(String),
    /// Too many ids.
    #[error("too many booking ids in one ping (at most {MAX_IDS})")]
    TooMany,
}

/// The booking ids a ping names, in order, without repeats.
pub fn extract(from: &IdFrom, query: &str, body: &[u8]) -> Result<Vec<String>, BadPing> {
    let mut ids = Vec::new();
    match from {
        IdFrom::Query(name) => {
            pairs(
                query.as_bytes(),
                name,
                &format!("query parameter `{name}`"),
                &mut ids,
            )?;
            if ids.is_empty() {
                // Beds24 also POSTs its notify ping as a form.
                pairs(body, name, &format!("query parameter `{name}`"), &mut ids)?;
            }
        }
        IdFrom::Form(name) => pairs(body, name, &format!("form field `{name}`"), &mut ids)?,
        IdFrom::Pointer(pointer) => {
            let place = format!("JSON Pointer `{pointer}`");
            let doc: Value = serde_json::from_slice(body)
                .map_err(|e| BadPing::Body(format!("not JSON ({e})")))?;
            match doc.pointer(pointer) {
                None | Some(Value::Null) => return Err(BadPing::Missing(place)),
                Some(Value::Array(items)) => {
                    for v in items {
                        push(&mut ids, json_id(v, &place)?)?;
                    }
                }
                Some(v) => push(&mut ids, json_id(v, &place)?)?,
            }
        }
    }
    if ids.is_empty() {
        let place = match from {
            IdFrom::Query(n) => format!("query parameter `{n}`"),
            IdFrom::Form(n) => format!("form field `{n}`"),
            IdFrom::Pointer(p) => format!("JSON Pointer `{p}`"),
        };
        return Err(BadPing::Missing(place));
    }
    Ok(ids)
}

fn pairs(raw: &[u8], name: &str, place: &str, ids: &mut Vec<String>) -> Result<(), BadPing> {
    for (k, v) in url::form_urlencoded::parse(raw) {
        if k == name {
            push(ids, text_id(&v, place)?)?;
        }
    }
    Ok(())
}

fn push(ids: &mut Vec<String>, id: String) -> Result<(), BadPing> {
    if !ids.contains(&id) {
        if ids.len() == MAX_IDS {
            return Err(BadPing::TooMany);
        }
        ids.push(id);
    }
    Ok(())
}

/// A text id: non-blank; an integer written as one (`007` stays text, as a source's string id
/// would).
fn text_id(s: &str, place: &str) -> Result<String, BadPing> {
    if s.trim().is_empty() {
        return Err(BadPing::BadId {
            place: place.to_string(),
            reason: if s.is_empty() {
                "it is empty"
            } else {
                "it is only whitespace"
            },
        });
    }
    if s.chars().any(char::is_control) {
        return Err(BadPing::BadId {
            place: place.to_string(),
            reason: "it contains control characters",
        });
    }
    Ok(s.to_string())
}

fn json_id(v: &Value, place: &str) -> Result<String, BadPing> {
    let bad = |reason| BadPing::BadId {
        place: place.to_string(),
        reason,
    };
    match v {
        Value::String(s) => text_id(s, place),
        Value::Number(n) => {
            integer_id(n).ok_or_else(|| bad("a number with a fraction, or beyond 64-bit integers"))
        }
        Value::Bool(_) => Err(bad("it is true/false")),
        _ => Err(bad("not a string, a number or an array of them")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(name: &str) -> IdFrom {
        IdFrom::Query(name.into())
    }

    #[test]
    fn beds24_query_and_form() {
        assert_eq!(
            extract(&q("bookid"), "bookid=123&status=new", b""),
            Ok(vec!["123".to_string()])
        );
        assert_eq!(
            extract(&q("bookid"), "", b"bookid=9&status=cancel"),
            Ok(vec!["9".to_string()])
        );
        assert_eq!(
            extract(&q("bookid"), "bookid=1&bookid=2&bookid=1", b""),
            Ok(vec!["1".to_string(), "2".to_string()])
        );
        assert_eq!(
            extract(&q("bookid"), "status=new", b""),
            Err(BadPing::Missing("query parameter `bookid`".into()))
        );
        assert!(matches!(
            extract(&q("bookid"), "bookid=%20", b""),
            Err(BadPing::BadId { .. })
        ));
        assert!(matches!(
            extract(&q("bookid"), "bookid=a%0Ab", b""),
            Err(BadPing::BadId { .. })
        ));
    }

    #[test]
    fn pretix_pointer() {
        let p = IdFrom::Pointer("/code".into());
        let body =
            br#"{"organizer":"o","event":"e","code":"ABC12","action":"pretix.event.order.paid"}"#;
        assert_eq!(extract(&p, "", body), Ok(vec!["ABC12".to_string()]));
        assert!(matches!(extract(&p, "", b"{nope"), Err(BadPing::Body(_))));
        assert_eq!(
            extract(&p, "", br#"{"action":"x"}"#),
            Err(BadPing::Missing("JSON Pointer `/code`".into()))
        );
        let ids = IdFrom::Pointer("/ids".into());
        assert_eq!(
            extract(&ids, "", br#"{"ids":[7, 7.0, "8"]}"#),
            Ok(vec!["7".to_string(), "8".to_string()])
        );
        assert!(matches!(
            extract(&ids, "", br#"{"ids":[true]}"#),
            Err(BadPing::BadId { .. })
        ));
        assert!(matches!(
            extract(&ids, "", br#"{"ids":[1.5]}"#),
            Err(BadPing::BadId { .. })
        ));
    }

    #[test]
    fn too_many_ids_are_refused() {
        let many: Vec<String> = (0..=MAX_IDS).map(|i| format!("id={i}")).collect();
        assert_eq!(
            extract(&IdFrom::Form("id".into()), "", many.join("&").as_bytes()),
            Err(BadPing::TooMany)
        );
    }
}
