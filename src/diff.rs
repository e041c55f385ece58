//! The diff: pure functions that decide, for one booking, whether it changed and how: its
//! fingerprint and cancelled flag (what is compared on every poll), then, only when the
//! fingerprint differs, new / modify / cancel with field-level changes as RFC 6901 JSON Pointers.
//!
//! `ignore_fields` and `only_fields` are JSON Pointers in which a segment that is exactly `*`
//! matches any one object member or array element (`/positions/*/secret`). They are compiled
//! once per source: the ignored ones into a tree the fingerprint walks without copying the
//! document, the only-fields into steps.
//!
//! No I/O, no clock. The poll feeds it the last-seen row and, when needed, the stored document.

use serde::ser::{Serialize, SerializeMap, SerializeSeq, Serializer};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::json::{JsonError, escape, scalar_string, set_pointer, set_tokens, tokens};
use crate::outbox::{EventKind, FieldChange};

/// The segment that matches any one object member or array element in `ignore_fields` and
/// `only_fields`. A member literally named `*` has no escape in RFC 6901, so it is reached only
/// through the wildcard; any other token containing `*` (`a*b`) is literal.
pub const WILDCARD: &str = "*";

/// What counts as significant and what means cancelled, for one source.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Policy {
    status: Option<String>,
    cancelled_values: Vec<String>,
    /// `only_fields`, each compiled once.
    only: Vec<Only>,
    /// `ignore` as a tree of pointer tokens, so fingerprints skip ignored fields without a copy.
    ignored: Trie,
}

/// One of `only_fields`: a plain pointer (looked up as RFC 6901 says) or a pattern with `*`.
#[derive(Debug, Clone, PartialEq)]
enum Only {
    Pointer(String),
    Pattern(Vec<Step>),
}

/// One step of a pattern.
#[derive(Debug, Clone, PartialEq)]
enum Step {
    /// An object member, or an array index as RFC 6901 writes it.
    Token(String),
    /// Any one member or element.
    Any,
}

impl Only {
    fn compile(pointer: &str) -> Only {
        let toks = tokens(pointer);
        if toks.iter().any(|t| t == WILDCARD) {
            Only::Pattern(
                toks.into_iter()
                    .map(|t| {
                        if t == WILDCARD {
                            Step::Any
                        } else {
                            Step::Token(t)
                        }
                    })
                    .collect(),
            )
        } else {
            Only::Pointer(pointer.to_string())
        }
    }
}

/// An array index as RFC 6901 (and `serde_json::Value::pointer`) reads it: digits, no leading
/// zero.
fn rfc6901_index(token: &str) -> Option<usize> {
    if token.starts_with('+') || (token.starts_with('0') && token.len() != 1) {
        return None;
    }
    token.parse().ok()
}

/// Copies into `out` every value `steps` reaches in `value`, at the concrete path it was found
/// at (`path` holds the tokens so far), creating objects on the way as [`set_pointer`] does.
fn select(value: &Value, steps: &[Step], path: &mut Vec<String>, out: &mut Value) {
    let Some((step, rest)) = steps.split_first() else {
        set_tokens(out, path, value.clone());
        return;
    };
    let mut down = |token: String, child: &Value, path: &mut Vec<String>| {
        path.push(token);
        select(child, rest, path, out);
        path.pop();
    };
    match (step, value) {
        (Step::Token(t), Value::Object(m)) => {
            if let Some(child) = m.get(t) {
                down(t.clone(), child, path);
            }
        }
        (Step::Token(t), Value::Array(a)) => {
            if let Some(child) = rfc6901_index(t).and_then(|i| a.get(i)) {
                down(t.clone(), child, path);
            }
        }
        (Step::Any, Value::Object(m)) => {
            for (k, child) in m {
                down(k.clone(), child, path);
            }
        }
        (Step::Any, Value::Array(a)) => {
            for (i, child) in a.iter().enumerate() {
                down(i.to_string(), child, path);
            }
        }
        _ => {}
    }
}

/// Pointer tokens as a tree; a node that ends a pointer is a leaf (what is under it is ignored).
/// `any` is the `*` branch. After [`Trie::compile`], every literal child also holds what the `*`
/// branch beside it holds, so a lookup takes one branch and never merges at run time.
#[derive(Debug, Clone, Default, PartialEq)]
struct Trie {
    leaf: bool,
    children: Vec<(String, Trie)>,
    any: Option<Box<Trie>>,
}

impl Trie {
    /// The tree of `pointers` (the empty pointer, which would ignore everything, is skipped).
    fn compile<'a>(pointers: impl IntoIterator<Item = &'a String>) -> Trie {
        let mut t = Trie::default();
        for p in pointers.into_iter().filter(|p| !p.is_empty()) {
            t.insert(&tokens(p));
        }
        t.spread_wildcards();
        t
    }

    fn insert(&mut self, toks: &[String]) {
        let Some((first, rest)) = toks.split_first() else {
            self.leaf = true;
            return;
        };
        if first == WILDCARD {
            self.any.get_or_insert_with(Default::default).insert(rest);
            return;
        }
        let i = match self.children.iter().position(|(t, _)| t == first) {
            Some(i) => i,
            None => {
                self.children.push((first.clone(), Trie::default()));
                self.children.len() - 1
            }
        };
        self.children[i].1.insert(rest);
    }

    /// Adds everything under `other` to this node.
    fn merge(&mut self, other: &Trie) {
        self.leaf |= other.leaf;
        for (t, c) in &other.children {
            match self.children.iter_mut().find(|(mine, _)| mine == t) {
                Some((_, mine)) => mine.merge(c),
                None => self.children.push((t.clone(), c.clone())),
            }
        }
        if let Some(a) = &other.any {
            self.any.get_or_insert_with(Default::default).merge(a);
        }
    }

    /// Copies each `*` branch into its literal siblings, all the way down.
    fn spread_wildcards(&mut self) {
        if let Some(any) = &self.any {
            for (_, c) in &mut self.children {
                c.merge(any);
            }
        }
        for (_, c) in &mut self.children {
            c.spread_wildcards();
        }
        if let Some(any) = &mut self.any {
            any.spread_wildcards();
        }
    }

    fn key(&self, k: &str) -> Option<&Trie> {
        self.children
            .iter()
            .find(|(t, _)| t == k)
            .map(|(_, c)| c)
            .or(self.any.as_deref())
    }

    /// Array elements are named by their index, as `remove_pointer` reads a token (`"01"` is 1).
    fn index(&self, i: usize) -> Option<&Trie> {
        self.children
            .iter()
            .find(|(t, _)| t.parse::<usize>().ok() == Some(i))
            .map(|(_, c)| c)
            .or(self.any.as_deref())
    }

    /// Removes what the tree names from `value`: object members are dropped, array elements
    /// become null (so the following ones keep their indexes).
    fn prune(&self, value: &mut Value) {
        match value {
            Value::Object(m) => {
                m.retain(|k, _| !self.key(k).is_some_and(|c| c.leaf));
                for (k, v) in m.iter_mut() {
                    if let Some(c) = self.key(k) {
                        c.prune(v);
                    }
                }
            }
            Value::Array(a) => {
                for (i, v) in a.iter_mut().enumerate() {
                    match self.index(i) {
                        Some(c) if c.leaf => *v = Value::Null,
                        Some(c) => c.prune(v),
                        None => {}
                    }
                }
            }
            _ => {}
        }
    }
}

/// A value with the ignored fields left out, serialised exactly as the value would be after
/// removing them (object members dropped, array elements replaced by null).
struct Significant<'a> {
    value: &'a Value,
    ignored: &'a Trie,
}

impl Serialize for Significant<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.value {
            Value::Object(m) => {
                let kept = m
                    .iter()
                    .filter(|(k, _)| !self.ignored.key(k).is_some_and(|c| c.leaf))
                    .count();
                let mut map = s.serialize_map(Some(kept))?;
                for (k, v) in m {
                    match self.ignored.key(k) {
                        Some(c) if c.leaf => {}
                        Some(c) => map.serialize_entry(
                            k,
                            &Significant {
                                value: v,
                                ignored: c,
                            },
                        )?,
                        None => map.serialize_entry(k, v)?,
                    }
                }
                map.end()
            }
            Value::Array(a) => {
                let mut seq = s.serialize_seq(Some(a.len()))?;
                for (i, v) in a.iter().enumerate() {
                    match self.ignored.index(i) {
                        Some(c) if c.leaf => seq.serialize_element(&Value::Null)?,
                        Some(c) => seq.serialize_element(&Significant {
                            value: v,
                            ignored: c,
                        })?,
                        None => seq.serialize_element(v)?,
                    }
                }
                seq.end()
            }
            other => other.serialize(s),
        }
    }
}

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

/// What is compared on every poll: a booking's fingerprint and whether it is cancelled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Observed {
    /// Fingerprint of the significant content: the first 8 bytes (big-endian) of the SHA-256 of
    /// its canonical JSON (object keys sorted, compact).
    pub fingerprint: u64,
    /// Whether its status is in the cancelled set.
    pub cancelled: bool,
}

/// A detected change for one booking.
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    /// new / modify / cancel.
    pub kind: EventKind,
    /// Field-level detail (empty for new).
    pub changes: Vec<FieldChange>,
}

impl Policy {
    /// A policy from a source's settings: the status pointer and the values meaning cancelled,
    /// and either fields to ignore or the only fields that count.
    pub fn new(
        status: Option<String>,
        cancelled_values: Vec<String>,
        ignore: Vec<String>,
        only: Vec<String>,
    ) -> Policy {
        let ignored = Trie::compile(&ignore);
        Policy {
            status,
            cancelled_values,
            only: only.iter().map(|p| Only::compile(p)).collect(),
            ignored,
        }
    }

    /// The status of a document, as compared.
    pub fn status_of(&self, doc: &Value) -> Option<String> {
        let p = self.status.as_deref()?;
        doc.pointer(p).and_then(scalar_string)
    }

    /// Whether this document's status is in the cancelled set.
    pub fn is_cancelled(&self, doc: &Value) -> bool {
        match self.status_of(doc) {
            Some(s) => self.cancelled_values.iter().any(|c| c == &s),
            None => false,
        }
    }

    /// The part of the document that counts for change detection.
    pub fn significant(&self, doc: &Value) -> Value {
        if !self.only.is_empty() {
            let mut out = Value::Object(Map::new());
            let mut path = Vec::new();
            for o in &self.only {
                match o {
                    Only::Pointer(p) => {
                        if let Some(v) = doc.pointer(p) {
                            set_pointer(&mut out, p, v.clone());
                        }
                    }
                    Only::Pattern(steps) => select(doc, steps, &mut path, &mut out),
                }
            }
            return out;
        }
        let mut out = doc.clone();
        self.ignored.prune(&mut out);
        out
    }

    /// The fingerprint of a document's significant content, computed without copying it (the
    /// same value as hashing `serde_json::to_vec(&self.significant(doc))`).
    pub fn fingerprint(&self, doc: &Value) -> Result<u64, JsonError> {
        let mut w = HashWriter(Sha256::new());
        if self.only.is_empty() {
            serde_json::to_writer(
                &mut w,
                &Significant {
                    value: doc,
                    ignored: &self.ignored,
                },
            )?;
        } else {
            serde_json::to_writer(&mut w, &self.significant(doc))?;
        }
        let digest = w.0.finalize();
        let mut first = [0u8; 8];
        first.copy_from_slice(&digest[..8]);
        Ok(u64::from_be_bytes(first))
    }

    /// Fingerprint and cancelled flag of a document.
    pub fn observe(&self, doc: &Value) -> Result<Observed, JsonError> {
        Ok(Observed {
            fingerprint: self.fingerprint(doc)?,
            cancelled: self.is_cancelled(doc),
        })
    }

    /// What a booking seen again means, given its last-seen state and document.
    ///
    /// * unknown id: `new`, or `cancel` if it is first seen already cancelled (it existed and
    ///   was cancelled between two polls; the receiver learns both facts from one event);
    /// * known, became cancelled: `cancel`;
    /// * known, significant content changed otherwise (including reactivation): `modify`;
    /// * known, nothing significant changed: nothing. That includes a fingerprint that differs
    ///   only because the policy (ignored fields) changed: the row is refreshed quietly.
    pub fn change(
        &self,
        prev: Option<(&Value, bool)>,
        next: &Value,
        next_cancelled: bool,
    ) -> Option<Change> {
        let Some((prev_doc, prev_cancelled)) = prev else {
            let kind = if next_cancelled {
                EventKind::Cancel
            } else {
                EventKind::New
            };
            return Some(Change {
                kind,
                changes: Vec::new(),
            });
        };
        let changes = field_changes(&self.significant(prev_doc), &self.significant(next));
        if changes.is_empty() && prev_cancelled == next_cancelled {
            return None;
        }
        let kind = if next_cancelled && !prev_cancelled {
            EventKind::Cancel
        } else {
            EventKind::Modify
        };
        Some(Change { kind, changes })
    }
}

/// Every leaf that differs between `old` and `new`, as JSON Pointers, in key order.
/// Objects are compared key by key; arrays element by element when their lengths match,
/// otherwise as a whole.
pub fn field_changes(old: &Value, new: &Value) -> Vec<FieldChange> {
    let mut out = Vec::new();
    walk(String::new(), old, new, &mut out);
    out
}

fn walk(path: String, old: &Value, new: &Value, out: &mut Vec<FieldChange>) {
    if old == new {
        return;
    }
    match (old, new) {
        (Value::Object(a), Value::Object(b)) => {
            let mut keys: Vec<&String> = a.keys().chain(b.keys()).collect();
            keys.sort();
            keys.dedup();
            for k in keys {
                let p = format!("{path}/{}", escape(k));
                match (a.get(k), b.get(k)) {
                    (Some(x), Some(y)) => walk(p, x, y, out),
                    (x, y) => out.push(FieldChange {
                        path: p,
                        old: x.cloned().unwrap_or(Value::Null),
                        new: y.cloned().unwrap_or(Value::Null),
                    }),
                }
            }
        }
        (Value::Array(a), Value::Array(b)) if a.len() == b.len() => {
            for (i, (x, y)) in a.iter().zip(b).enumerate() {
                walk(format!("{path}/{i}"), x, y, out);
            }
        }
        _ => out.push(FieldChange {
            path,
            old: old.clone(),
            new: new.clone(),
        }),
    }
}

/// The mass-disappearance guard: may `gone` of `known_active` bookings be cancelled in one poll?
/// Up to two disappearances always pass (a small property losing one booking is normal); beyond
/// that, the share must not exceed `max_share`.
pub fn disappearance_allowed(known_active: usize, gone: usize, max_share: f64) -> bool {
    if gone <= 2 {
        return true;
    }
    if known_active == 0 {
        return false;
    }
    (gone as f64) / (known_active as f64) <= max_share
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn policy() -> Policy {
        Policy::new(
            Some("/status".into()),
            vec!["cancelled".into(), "0".into()],
            vec!["/modifiedTime".into()],
            vec![],
        )
    }

    /// The outcome of seeing `next` after `prev` (both as documents).
    fn compare(p: &Policy, prev: Option<&Value>, next: &Value) -> Option<Change> {
        let n = p.observe(next).unwrap();
        if let Some(prev) = prev {
            let o = p.observe(prev).unwrap();
            if o == n {
                return None;
            }
            return p.change(Some((prev, o.cancelled)), next, n.cancelled);
        }
        p.change(None, next, n.cancelled)
    }

    #[test]
    fn unknown_id_is_new() {
        let c = compare(&policy(), None, &json!({"id": 1, "status": "confirmed"}));
        assert_eq!(c.unwrap().kind, EventKind::New);
    }

    #[test]
    fn first_seen_cancelled_is_cancel() {
        let c = compare(&policy(), None, &json!({"id": 1, "status": "cancelled"}));
        assert_eq!(c.unwrap().kind, EventKind::Cancel);
    }

    #[test]
    fn unchanged_and_ignored_fields_emit_nothing() {
        let p = policy();
        let a = json!({"id": 1, "status": "new", "modifiedTime": "a"});
        let b = json!({"id": 1, "status": "new", "modifiedTime": "b"});
        assert_eq!(p.observe(&a).unwrap(), p.observe(&b).unwrap());
        assert_eq!(compare(&p, Some(&a), &b), None);
    }

    #[test]
    fn modify_lists_changed_fields_as_pointers() {
        let p = policy();
        let prev = json!({"id": 1, "status": "new", "guest": {"first/name": "Ada", "n": 2}, "rooms": [1, 2]});
        let next = json!({"id": 1, "status": "confirmed", "guest": {"first/name": "Bo", "n": 2, "vip": true}, "rooms": [1, 3]});
        let ch = compare(&p, Some(&prev), &next).unwrap();
        assert_eq!(ch.kind, EventKind::Modify);
        let paths: Vec<&str> = ch.changes.iter().map(|c| c.path.as_str()).collect();
        assert_eq!(
            paths,
            ["/guest/first~1name", "/guest/vip", "/rooms/1", "/status"]
        );
        assert_eq!(ch.changes[0].old, json!("Ada"));
        assert_eq!(ch.changes[1].old, Value::Null);
        assert_eq!(ch.changes[1].new, json!(true));
    }

    #[test]
    fn cancellation_and_reactivation() {
        let p = policy();
        let active = json!({"id": 1, "status": "confirmed"});
        let cancelled = json!({"id": 1, "status": "cancelled"});
        let ch = compare(&p, Some(&active), &cancelled).unwrap();
        assert_eq!(ch.kind, EventKind::Cancel);
        assert_eq!(ch.changes[0].path, "/status");
        assert!(p.is_cancelled(&cancelled));
        let back = compare(&p, Some(&cancelled), &active).unwrap();
        assert_eq!(back.kind, EventKind::Modify);
    }

    #[test]
    fn numeric_status_codes_compare_as_strings() {
        let p = policy();
        assert!(p.is_cancelled(&json!({"status": 0})));
        assert!(p.is_cancelled(&json!({"status": "0"})));
        assert!(!p.is_cancelled(&json!({"status": 1})));
        assert!(!p.is_cancelled(&json!({})));
    }

    #[test]
    fn only_fields_limit_what_counts() {
        let p = Policy::new(
            Some("/status".into()),
            vec!["cancelled".into()],
            vec![],
            vec!["/arrival".into(), "/guest/name".into()],
        );
        let prev =
            json!({"arrival": "2026-12-01", "guest": {"name": "A", "phone": "1"}, "price": 1});
        let same =
            json!({"arrival": "2026-12-01", "guest": {"name": "A", "phone": "2"}, "price": 9});
        assert!(compare(&p, Some(&prev), &same).is_none());
        let moved = json!({"arrival": "2026-12-02", "guest": {"name": "A"}});
        assert_eq!(
            compare(&p, Some(&prev), &moved).unwrap().changes[0].path,
            "/arrival"
        );
    }

    #[test]
    fn ignore_inside_arrays_and_escaped_keys() {
        let p = Policy::new(
            None,
            vec![],
            vec!["/rooms/0/ts".into(), "/a~1b".into()],
            vec![],
        );
        assert_eq!(
            p.significant(&json!({"rooms": [{"ts": 1, "n": 2}], "a/b": 3, "c": 4})),
            json!({"rooms": [{"n": 2}], "c": 4})
        );
    }

    #[test]
    fn the_fingerprint_is_the_hash_of_the_significant_copy() {
        // The copy-free fingerprint must equal the fingerprint of the copied significant value
        // (which is what state files written by earlier releases hold), whatever is ignored.
        let docs = [
            json!({"id": 1, "modifiedTime": "x", "rooms": [{"ts": 1, "n": 2}, {"ts": 2}], "a/b": 3, "z": null}),
            json!([1, {"ts": 3}]),
            json!({"rooms": "not an array", "modifiedTime": {"deep": true}}),
            json!("scalar"),
        ];
        let ignores = [
            vec![],
            vec!["/modifiedTime".to_string()],
            vec!["/rooms/0/ts".into(), "/a~1b".into(), "/rooms/01".into()],
            vec!["/rooms".into(), "/rooms/0".into(), "".into()],
            vec!["/1/ts".into(), "/nope/deeper".into()],
            vec!["/rooms/*/ts".into(), "/*".into()],
            vec!["/rooms/*".into(), "/rooms/0/n".into(), "/*/deep".into()],
            vec!["/*/ts".into(), "/rooms/1/ts".into(), "/*/1".into()],
        ];
        for ignore in &ignores {
            let p = Policy::new(None, vec![], ignore.clone(), vec![]);
            for d in &docs {
                let copy = serde_json::to_vec(&p.significant(d)).unwrap();
                let digest = Sha256::digest(&copy);
                let want = u64::from_be_bytes(digest[..8].try_into().unwrap());
                assert_eq!(p.fingerprint(d).unwrap(), want, "{ignore:?} {d}");
            }
        }
        let a: Value = serde_json::from_str(r#"{"a":1,"b":{"c":2,"d":3}}"#).unwrap();
        let b: Value = serde_json::from_str(r#"{"b":{"d":3,"c":2},"a":1}"#).unwrap();
        let p = Policy::default();
        assert_eq!(p.fingerprint(&a).unwrap(), p.fingerprint(&b).unwrap());
    }

    fn ignoring(fields: &[&str]) -> Policy {
        Policy::new(
            None,
            vec![],
            fields.iter().map(|f| f.to_string()).collect(),
            vec![],
        )
    }

    fn only(fields: &[&str]) -> Policy {
        Policy::new(
            None,
            vec![],
            vec![],
            fields.iter().map(|f| f.to_string()).collect(),
        )
    }

    /// pretix-shaped: per-position secrets and download links that change without meaning.
    fn order(secrets: [&str; 2], price: &str) -> Value {
        json!({
            "code": "ABC12",
            "positions": [
                {"id": 1, "secret": secrets[0], "price": price, "downloads": [{"url": secrets[0]}]},
                {"id": 2, "secret": secrets[1], "price": "10.00", "downloads": []},
            ],
            "invoices": {"inv1": {"token": secrets[0], "total": "20.00"}},
        })
    }

    #[test]
    fn a_wildcard_ignores_a_field_in_every_array_element_and_object_member() {
        let p = ignoring(&[
            "/positions/*/secret",
            "/positions/*/downloads",
            "/invoices/*/token",
        ]);
        let a = order(["s1", "s2"], "10.00");
        let b = order(["t1", "t2"], "10.00");
        assert_eq!(p.observe(&a).unwrap(), p.observe(&b).unwrap());
        assert_eq!(compare(&p, Some(&a), &b), None);
        assert_eq!(
            p.significant(&a),
            json!({
                "code": "ABC12",
                "positions": [{"id": 1, "price": "10.00"}, {"id": 2, "price": "10.00"}],
                "invoices": {"inv1": {"total": "20.00"}},
            })
        );
        let c = order(["u1", "u2"], "12.00");
        let ch = compare(&p, Some(&a), &c).unwrap();
        let paths: Vec<&str> = ch.changes.iter().map(|c| c.path.as_str()).collect();
        assert_eq!(
            paths,
            ["/positions/0/price"],
            "the concrete path is reported"
        );
        // Without the wildcard, only the first position's secret would be ignored.
        let literal = ignoring(&["/positions/0/secret"]);
        assert_ne!(
            literal.observe(&order(["s1", "s2"], "1")).unwrap(),
            literal.observe(&order(["s1", "x2"], "1")).unwrap()
        );
    }

    #[test]
    fn wildcards_and_literal_pointers_combine() {
        let p = ignoring(&["/a/*/x", "/a/b/y", "/l/*"]);
        let doc = json!({"a": {"b": {"x": 1, "y": 2, "z": 3}, "c": {"x": 4, "y": 5}}, "l": [1, 2], "k": 1});
        let want = json!({"a": {"b": {"z": 3}, "c": {"y": 5}}, "l": [null, null], "k": 1});
        assert_eq!(p.significant(&doc), want);
        // The fingerprint walks the same tree without copying.
        let digest = Sha256::digest(serde_json::to_vec(&want).unwrap());
        assert_eq!(
            p.fingerprint(&doc).unwrap(),
            u64::from_be_bytes(digest[..8].try_into().unwrap())
        );
        // `*` is a wildcard only as a whole segment; `a*b` is a literal member name.
        let p = ignoring(&["/a*b"]);
        assert_eq!(
            p.significant(&json!({"a*b": 1, "axb": 2})),
            json!({"axb": 2})
        );
        // A wildcard on a scalar or a missing member changes nothing.
        let p = ignoring(&["/k/*", "/nope/*/x"]);
        assert_eq!(p.significant(&doc), doc);
    }

    #[test]
    fn only_fields_take_wildcards_too() {
        let p = only(&["/positions/*/price", "/code"]);
        let a = order(["s1", "s2"], "10.00");
        assert_eq!(
            p.significant(&a),
            json!({"code": "ABC12", "positions": {"0": {"price": "10.00"}, "1": {"price": "10.00"}}})
        );
        assert_eq!(
            compare(&p, Some(&a), &order(["t1", "t2"], "10.00")),
            None,
            "secrets do not count"
        );
        let ch = compare(&p, Some(&a), &order(["s1", "s2"], "11.00")).unwrap();
        assert_eq!(ch.changes.len(), 1);
        assert_eq!(ch.changes[0].path, "/positions/0/price");
        assert_eq!(
            (ch.changes[0].old.clone(), ch.changes[0].new.clone()),
            (json!("10.00"), json!("11.00"))
        );
        // Object members, and a wildcard at the end takes the whole value of each.
        let p = only(&["/invoices/*"]);
        assert_eq!(
            p.significant(&a),
            json!({"invoices": {"inv1": a["invoices"]["inv1"]}})
        );
        // Without a wildcard the pointer is read as RFC 6901 says (`01` is no index).
        let p = only(&["/positions/01/id", "/positions/1/id"]);
        assert_eq!(p.significant(&a), json!({"positions": {"1": {"id": 2}}}));
    }

    #[test]
    fn without_wildcards_the_significant_copy_is_what_it_always_was() {
        // Fingerprints in existing state files were computed from a copy with each ignored
        // pointer removed in turn; the compiled tree must give exactly that copy.
        let doc = json!({"id": 1, "rooms": [{"ts": 1, "n": 2}, {"ts": 2}], "a/b": {"c": 1}, "m": {"x": 1}});
        for ignore in [
            vec!["/rooms/0/ts", "/a~1b/c", "/rooms/01"],
            vec!["/rooms", "/rooms/0"],
            vec!["/m/x", "/m", "/nope", "/id/x"],
        ] {
            let mut legacy = doc.clone();
            for f in &ignore {
                crate::json::remove_pointer(&mut legacy, f);
            }
            assert_eq!(ignoring(&ignore).significant(&doc), legacy, "{ignore:?}");
        }
    }

    #[test]
    fn a_policy_change_alone_is_no_event() {
        // Rows fingerprinted under another policy differ in fingerprint but not in content.
        let p = policy();
        let doc = json!({"id": 1, "status": "new", "modifiedTime": "a"});
        assert!(p.change(Some((&doc, false)), &doc, false).is_none());
        assert_eq!(
            p.change(Some((&doc, true)), &doc, false).unwrap().kind,
            EventKind::Modify,
            "a reactivation with the same content is still a modify"
        );
    }

    #[test]
    fn guard() {
        assert!(disappearance_allowed(3, 1, 0.2));
        assert!(disappearance_allowed(3, 2, 0.2));
        assert!(!disappearance_allowed(10, 3, 0.2));
        assert!(disappearance_allowed(100, 20, 0.2));
        assert!(!disappearance_allowed(100, 21, 0.2));
        assert!(!disappearance_allowed(0, 3, 1.0));
    }
}
