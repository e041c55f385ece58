//! Properties of the diff over arbitrary JSON documents: no change ⇔ no event (and equal
//! fingerprints), and the field changes are exactly the JSON Pointers where the two documents
//! differ: each one is a real difference with the right old and new values, none is inside
//! another, and applying them all to the old document gives the new one.

use pollhook::diff::{Policy, field_changes};
use proptest::prelude::*;
use serde_json::{Map, Value, json};

/// Keys with the characters JSON Pointers escape (`~`, `/`) and a few that collide.
fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("a".to_string()),
        Just("b".to_string()),
        Just("~".to_string()),
        Just("/".to_string()),
        Just("a/b".to_string()),
        Just("~1".to_string()),
        Just("".to_string()),
        "[a-c~/]{1,3}",
    ]
}

fn leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        (-2i64..3).prop_map(Value::from),
        Just(json!(1.5)),
        "[ab]{0,2}".prop_map(Value::from),
    ]
}

fn value() -> impl Strategy<Value = Value> {
    leaf().prop_recursive(4, 32, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map(key(), inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

/// A booking document: an object at the top.
fn doc() -> impl Strategy<Value = Value> {
    prop::collection::btree_map(key(), value(), 0..5)
        .prop_map(|m| Value::Object(m.into_iter().collect()))
}

/// `a` with some top-level keys set, replaced or removed: documents that are close, as a
/// booking and its next version are.
fn edited(a: Value) -> impl Strategy<Value = Value> {
    prop::collection::vec((key(), prop::option::of(value())), 0..3).prop_map(move |edits| {
        let mut b = a.clone();
        if let Some(m) = b.as_object_mut() {
            for (k, v) in edits {
                match v {
                    Some(v) => {
                        m.insert(k, v);
                    }
                    None => {
                        m.remove(&k);
                    }
                }
            }
        }
        b
    })
}

/// Pairs of documents: identical, one edited from the other, or unrelated.
fn pair() -> impl Strategy<Value = (Value, Value)> {
    doc().prop_flat_map(|a| {
        prop_oneof![
            Just((a.clone(), a.clone())),
            edited(a.clone()).prop_map({
                let a = a.clone();
                move |b| (a.clone(), b)
            }),
            doc().prop_map(move |b| (a.clone(), b)),
        ]
    })
}

fn unescape(token: &str) -> String {
    token.replace("~1", "/").replace("~0", "~")
}

/// `doc` with the value at `pointer` set to `value` (removed when `None`), written independently
/// of the library.
fn apply(doc: &mut Value, pointer: &str, value: Option<&Value>) {
    if pointer.is_empty() {
        *doc = value.cloned().unwrap_or(Value::Null);
        return;
    }
    let tokens: Vec<String> = pointer.split('/').skip(1).map(unescape).collect();
    let (last, parents) = tokens.split_last().expect("a non-empty pointer");
    let mut at = doc;
    for t in parents {
        at = match at {
            Value::Object(m) => m.get_mut(t).expect("the parent exists"),
            Value::Array(a) => a
                .get_mut(t.parse::<usize>().expect("an index"))
                .expect("the element exists"),
            other => panic!("{pointer}: a parent is the scalar {other}"),
        };
    }
    match (at, value) {
        (Value::Object(m), Some(v)) => {
            m.insert(last.clone(), v.clone());
        }
        (Value::Object(m), None) => {
            m.remove(last);
        }
        (Value::Array(a), Some(v)) => {
            a[last.parse::<usize>().expect("an index")] = v.clone();
        }
        (other, v) => panic!("{pointer}: cannot set {v:?} inside {other}"),
    }
}

fn no_policy() -> Policy {
    Policy::new(None, Vec::new(), Vec::new(), Vec::new())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2048, failure_persistence: None, ..ProptestConfig::default() })]

    /// No change ⇔ no event, and equal fingerprints exactly for equal documents.
    #[test]
    fn no_change_is_no_event_and_any_change_is_one((a, b) in pair()) {
        let p = no_policy();
        let change = p.change(Some((&a, false)), &b, false);
        prop_assert_eq!(change.is_none(), a == b, "{} -> {}: {:?}", a, b, change);
        prop_assert_eq!(
            p.fingerprint(&a).unwrap() == p.fingerprint(&b).unwrap(),
            a == b
        );
        if let Some(c) = change {
            prop_assert_eq!(c.changes, field_changes(&a, &b));
        }
    }

    /// The field changes are exactly the differing pointers.
    #[test]
    fn field_changes_are_exactly_the_differing_pointers((a, b) in pair()) {
        let changes = field_changes(&a, &b);
        prop_assert_eq!(changes.is_empty(), a == b);
        for c in &changes {
            let old = a.pointer(&c.path);
            let new = b.pointer(&c.path);
            prop_assert!(old != new, "{} is no difference: {} -> {}", c.path, a, b);
            prop_assert_eq!(&c.old, old.unwrap_or(&Value::Null), "old at {}", &c.path);
            prop_assert_eq!(&c.new, new.unwrap_or(&Value::Null), "new at {}", &c.path);
        }
        for (i, x) in changes.iter().enumerate() {
            for (j, y) in changes.iter().enumerate() {
                if i != j {
                    prop_assert!(
                        x.path != y.path && !y.path.starts_with(&format!("{}/", x.path)),
                        "{} and {} overlap", x.path, y.path
                    );
                }
            }
        }
        let mut patched = a.clone();
        for c in &changes {
            apply(&mut patched, &c.path, b.pointer(&c.path));
        }
        prop_assert_eq!(&patched, &b, "the changes {:?} do not turn {} into {}", changes, a, b);
    }

    /// A difference only in an ignored field is no change, and does not move the fingerprint.
    #[test]
    fn a_difference_in_an_ignored_field_is_no_event(a in doc(), x in value(), y in value()) {
        let p = Policy::new(None, Vec::new(), vec!["/ignored".into()], Vec::new());
        let mut before = a.clone();
        let mut after = a;
        before["ignored"] = x;
        after["ignored"] = y;
        prop_assert!(p.change(Some((&before, false)), &after, false).is_none());
        prop_assert_eq!(p.fingerprint(&before).unwrap(), p.fingerprint(&after).unwrap());
    }
}
