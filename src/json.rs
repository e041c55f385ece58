//! JSON helpers every stage shares: scalar values as strings, the content fingerprint, and RFC 6901
//! JSON Pointer tokens and edits. A leaf: it imports nothing from the crate.

use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

/// Strings as they are; numbers and booleans in their JSON spelling; others: none.
pub fn scalar_string(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// A JSON value could not be serialised (cannot happen for a `serde_json::Value` written to
/// memory, but it is reported rather than hidden behind an empty result).
#[derive(Debug, thiserror::Error)]
#[error("cannot serialise a JSON value: {0}")]
pub struct JsonError(#[from] serde_json::Error);

/// Feeds serialised bytes straight into the hash, so no copy of the document is made.
struct HashWriter(Sha256);

impl std::io::Write for HashWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.update(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A stable fingerprint of a JSON value: SHA-256 of its canonical serialisation (object keys
/// sorted), first 16 bytes in hex.
pub fn fingerprint(v: &Value) -> Result<String, JsonError> {
    // serde_json's Map is a BTreeMap (no preserve_order feature), so serialisation is canonical.
    let mut w = HashWriter(Sha256::new());
    serde_json::to_writer(&mut w, v)?;
    let digest = w.0.finalize();
    Ok(digest[..16].iter().map(|b| format!("{b:02x}")).collect())
}

/// Escapes one reference token (RFC 6901 §3).
pub fn escape(token: &str) -> String {
    token.replace('~', "~0").replace('/', "~1")
}

/// Undoes [`escape`].
pub fn unescape(token: &str) -> String {
    token.replace("~1", "/").replace("~0", "~")
}

/// The unescaped reference tokens of a pointer (`""` has none).
pub fn tokens(pointer: &str) -> Vec<String> {
    pointer.split('/').skip(1).map(unescape).collect()
}

/// Removes what `pointer` names from `doc`. An array element is set to null rather than removed,
/// so the following elements keep their indexes. A pointer to nothing changes nothing.
pub fn remove_pointer(doc: &mut Value, pointer: &str) {
    let toks = tokens(pointer);
    let Some((last, parents)) = toks.split_last() else {
        return;
    };
    let mut cur = doc;
    for t in parents {
        cur = match cur {
            Value::Object(m) => match m.get_mut(t) {
                Some(v) => v,
                None => return,
            },
            Value::Array(a) => match t.parse::<usize>().ok().and_then(|i| a.get_mut(i)) {
                Some(v) => v,
                None => return,
            },
            _ => return,
        };
    }
    match cur {
        Value::Object(m) => {
            m.remove(last);
        }
        Value::Array(a) => {
            if let Some(v) = last.parse::<usize>().ok().and_then(|i| a.get_mut(i)) {
                *v = Value::Null;
            }
        }
        _ => {}
    }
}

/// Sets what `pointer` names in `doc` to `value`, creating objects on the way (a non-object on
/// the way is replaced by one).
pub fn set_pointer(doc: &mut Value, pointer: &str, value: Value) {
    set_tokens(doc, &tokens(pointer), value);
}

/// [`set_pointer`] with the pointer given as its unescaped tokens.
pub fn set_tokens(doc: &mut Value, tokens: &[String], value: Value) {
    let mut cur = doc;
    for t in tokens {
        if !cur.is_object() {
            *cur = Value::Object(Map::new());
        }
        let Value::Object(m) = cur else { return };
        cur = m.entry(t.as_str()).or_insert(Value::Null);
    }
    *cur = value;
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn scalars_as_strings() {
        assert_eq!(scalar_string(&json!("a")), Some("a".into()));
        assert_eq!(scalar_string(&json!(7)), Some("7".into()));
        assert_eq!(scalar_string(&json!(true)), Some("true".into()));
        assert_eq!(scalar_string(&json!(null)), None);
        assert_eq!(scalar_string(&json!([1])), None);
    }

    #[test]
    fn fingerprint_ignores_key_order() {
        let a: Value = serde_json::from_str(r#"{"a":1,"b":{"c":2,"d":3}}"#).unwrap();
        let b: Value = serde_json::from_str(r#"{"b":{"d":3,"c":2},"a":1}"#).unwrap();
        assert_eq!(fingerprint(&a).unwrap(), fingerprint(&b).unwrap());
        assert_ne!(
            fingerprint(&a).unwrap(),
            fingerprint(&json!({"a": 2})).unwrap()
        );
        assert_eq!(fingerprint(&a).unwrap().len(), 32);
    }

    #[test]
    fn pointer_tokens_round_trip() {
        assert_eq!(escape("a/b~c"), "a~1b~0c");
        assert_eq!(unescape("a~1b~0c"), "a/b~c");
        assert_eq!(tokens("/a~1b/0"), ["a/b", "0"]);
        assert!(tokens("").is_empty());
    }

    #[test]
    fn edits() {
        let mut d = json!({"a": {"b": 1, "c": 2}, "l": [1, 2]});
        remove_pointer(&mut d, "/a/b");
        remove_pointer(&mut d, "/l/0");
        remove_pointer(&mut d, "/nope/x");
        assert_eq!(d, json!({"a": {"c": 2}, "l": [null, 2]}));
        let mut out = json!({});
        set_pointer(&mut out, "/x/y", json!(3));
        assert_eq!(out, json!({"x": {"y": 3}}));
    }
}
