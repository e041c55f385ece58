//! Decoding a JSON page one booking at a time: a single pass over the body hands each item at
//! the items pointer to a callback as soon as it is parsed, and keeps only the values at a few
//! other pointers (success check, pagination, error hints) in a small skeleton document. What a
//! page costs in memory is its body, the skeleton and one decoded item, never every item at once.

use std::fmt;

use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::Value;

use crate::config::ItemsShape;
use crate::json::{set_pointer, tokens};

/// What is kept at a pointer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Capture {
    /// The value, copied into the skeleton.
    Value,
    /// The bookings: streamed to the callback one by one.
    Items,
}

#[derive(Debug, Default)]
struct Node {
    pointer: String,
    capture: Option<Capture>,
    children: Vec<(String, Node)>,
}

impl Node {
    fn child(&self, key: &str) -> Option<&Node> {
        self.children.iter().find(|(k, _)| k == key).map(|(_, n)| n)
    }

    fn index(&self, i: usize) -> Option<&Node> {
        self.children
            .iter()
            .find(|(k, _)| k.parse::<usize>().ok() == Some(i))
            .map(|(_, n)| n)
    }
}

/// Which pointers one page decoding keeps.
#[derive(Debug)]
pub(super) struct Plan {
    root: Node,
    shape: ItemsShape,
    items_at_root: bool,
}

impl Plan {
    /// A plan that streams the items at `items` and keeps the values at `keep`. `None` when a
    /// kept pointer and the items pointer overlap (one inside the other): such a page is decoded
    /// whole instead.
    pub(super) fn new(items: &str, keep: &[&str], shape: ItemsShape) -> Option<Plan> {
        let mut root = Node::default();
        let item_toks = tokens(items);
        for k in keep {
            let t = tokens(k);
            let overlap = t.len() <= item_toks.len() && item_toks[..t.len()] == t[..]
                || item_toks.len() <= t.len() && t[..item_toks.len()] == item_toks[..];
            if overlap {
                return None;
            }
        }
        insert(&mut root, &item_toks, items, Capture::Items);
        for k in keep {
            insert(&mut root, &tokens(k), k, Capture::Value);
        }
        Some(Plan {
            root,
            shape,
            items_at_root: items.is_empty(),
        })
    }
}

fn insert(node: &mut Node, toks: &[String], pointer: &str, capture: Capture) {
    let Some((first, rest)) = toks.split_first() else {
        node.capture = Some(capture);
        node.pointer = pointer.to_string();
        return;
    };
    let i = match node.children.iter().position(|(k, _)| k == first) {
        Some(i) => i,
        None => {
            node.children.push((first.clone(), Node::default()));
            node.children.len() - 1
        }
    };
    insert(&mut node.children[i].1, rest, pointer, capture);
}

/// How the items pointer turned out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Items {
    /// Nothing at the items pointer.
    Missing,
    /// `null` there.
    Null,
    /// A list (or a keyed object, or one object standing for a list of one) was streamed.
    Streamed,
    /// Something that is not a list of bookings.
    NotAList,
}

/// What decoding a page found besides the items.
#[derive(Debug)]
pub(super) struct Decoded {
    /// The values at the kept pointers, at their places.
    pub(super) skeleton: Value,
    /// How the items pointer turned out.
    pub(super) items: Items,
}

/// Why a streamed page stopped.
#[derive(Debug)]
pub(super) enum StreamError<E> {
    /// The body is not valid JSON.
    Json(serde_json::Error),
    /// The callback refused an item.
    Item(E),
}

struct Ctx<'f, E> {
    on_item: &'f mut dyn FnMut(usize, Value) -> Result<(), E>,
    next_index: usize,
    skeleton: Value,
    items: Items,
    error: Option<E>,
    shape: ItemsShape,
    items_at_root: bool,
}

/// Decodes `body`, calling `on_item` with each booking (its index on the page and the value).
pub(super) fn decode<E>(
    plan: &Plan,
    body: &[u8],
    on_item: &mut dyn FnMut(usize, Value) -> Result<(), E>,
) -> Result<Decoded, StreamError<E>> {
    let mut ctx = Ctx {
        on_item,
        next_index: 0,
        skeleton: Value::Object(Default::default()),
        items: Items::Missing,
        error: None,
        shape: plan.shape,
        items_at_root: plan.items_at_root,
    };
    let mut de = serde_json::Deserializer::from_slice(body);
    let result = NodeSeed {
        node: &plan.root,
        ctx: &mut ctx,
    }
    .deserialize(&mut de)
    .and_then(|()| de.end());
    if let Some(e) = ctx.error {
        return Err(StreamError::Item(e));
    }
    result.map_err(StreamError::Json)?;
    Ok(Decoded {
        skeleton: ctx.skeleton,
        items: ctx.items,
    })
}

/// Aborts the parse after the callback refused an item (the real error is kept in the context).
fn refused<Er: serde::de::Error>() -> Er {
    Er::custom("item refused")
}

struct NodeSeed<'n, 'c, 'f, E> {
    node: &'n Node,
    ctx: &'c mut Ctx<'f, E>,
}

impl<'de, E> DeserializeSeed<'de> for NodeSeed<'_, '_, '_, E> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        match self.node.capture {
            Some(Capture::Value) => {
                let v = Value::deserialize(d)?;
                set_pointer(&mut self.ctx.skeleton, &self.node.pointer, v);
                Ok(())
            }
            Some(Capture::Items) => d.deserialize_any(ItemsVisitor { ctx: self.ctx }),
            None if self.node.children.is_empty() => {
                IgnoredAny::deserialize(d)?;
                Ok(())
            }
            None => d.deserialize_any(Walk {
                node: self.node,
                ctx: self.ctx,
            }),
        }
    }
}

use serde::Deserialize as _;

/// Walks an object or array towards the kept pointers, skipping everything else unparsed.
struct Walk<'n, 'c, 'f, E> {
    node: &'n Node,
    ctx: &'c mut Ctx<'f, E>,
}

macro_rules! ignore_scalars {
    ($($name:ident: $t:ty),*) => {$(
        fn $name<Er: serde::de::Error>(self, _v: $t) -> Result<(), Er> {
            Ok(())
        }
    )*};
}

impl<'de, E> Visitor<'de> for Walk<'_, '_, '_, E> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }

    ignore_scalars!(visit_bool: bool, visit_i64: i64, visit_u64: u64, visit_f64: f64, visit_str: &str);

    fn visit_unit<Er: serde::de::Error>(self) -> Result<(), Er> {
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(key) = map.next_key::<String>()? {
            match self.node.child(&key) {
                Some(child) => map.next_value_seed(NodeSeed {
                    node: child,
                    ctx: &mut *self.ctx,
                })?,
                None => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let mut i = 0;
        loop {
            let more = match self.node.index(i) {
                Some(child) => seq
                    .next_element_seed(NodeSeed {
                        node: child,
                        ctx: &mut *self.ctx,
                    })?
                    .is_some(),
                None => seq.next_element::<IgnoredAny>()?.is_some(),
            };
            if !more {
                return Ok(());
            }
            i += 1;
        }
    }
}

/// The value at the items pointer: a list streamed element by element, a keyed object streamed
/// value by value, one object standing for a list of one, or null.
struct ItemsVisitor<'c, 'f, E> {
    ctx: &'c mut Ctx<'f, E>,
}

impl<E> ItemsVisitor<'_, '_, E> {
    fn item<Er: serde::de::Error>(&mut self, v: Value) -> Result<(), Er> {
        let i = self.ctx.next_index;
        self.ctx.next_index += 1;
        match (self.ctx.on_item)(i, v) {
            Ok(()) => Ok(()),
            Err(e) => {
                self.ctx.error = Some(e);
                Err(refused())
            }
        }
    }

    fn not_a_list<Er: serde::de::Error>(self) -> Result<(), Er> {
        self.ctx.items = Items::NotAList;
        Ok(())
    }
}

impl<'de, E> Visitor<'de> for ItemsVisitor<'_, '_, E> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a list of bookings")
    }

    fn visit_unit<Er: serde::de::Error>(self) -> Result<(), Er> {
        self.ctx.items = if self.ctx.items_at_root {
            Items::NotAList
        } else {
            Items::Null
        };
        Ok(())
    }

    fn visit_bool<Er: serde::de::Error>(self, _v: bool) -> Result<(), Er> {
        self.not_a_list()
    }
    fn visit_i64<Er: serde::de::Error>(self, _v: i64) -> Result<(), Er> {
        self.not_a_list()
    }
    fn visit_u64<Er: serde::de::Error>(self, _v: u64) -> Result<(), Er> {
        self.not_a_list()
    }
    fn visit_f64<Er: serde::de::Error>(self, _v: f64) -> Result<(), Er> {
        self.not_a_list()
    }
    fn visit_str<Er: serde::de::Error>(self, _v: &str) -> Result<(), Er> {
        self.not_a_list()
    }

    fn visit_seq<A: SeqAccess<'de>>(mut self, mut seq: A) -> Result<(), A::Error> {
        self.ctx.items = Items::Streamed;
        while let Some(v) = seq.next_element::<Value>()? {
            self.item(v)?;
        }
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(mut self, mut map: A) -> Result<(), A::Error> {
        match self.ctx.shape {
            ItemsShape::Keyed => {
                self.ctx.items = Items::Streamed;
                while let Some((_, v)) = map.next_entry::<IgnoredAny, Value>()? {
                    self.item(v)?;
                }
                Ok(())
            }
            // One element where a list was expected (some JSON APIs; XML with one child).
            ItemsShape::List if !self.ctx.items_at_root => {
                self.ctx.items = Items::Streamed;
                let v = Value::deserialize(serde::de::value::MapAccessDeserializer::new(map))?;
                self.item(v)
            }
            ItemsShape::List => {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                self.not_a_list()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn run(
        items: &str,
        keep: &[&str],
        shape: ItemsShape,
        body: &str,
    ) -> (Vec<Value>, Result<Decoded, StreamError<String>>) {
        let plan = Plan::new(items, keep, shape).unwrap();
        let mut got = Vec::new();
        let r = decode(&plan, body.as_bytes(), &mut |i, v| {
            assert_eq!(i, got.len());
            got.push(v);
            Ok(())
        });
        (got, r)
    }

    #[test]
    fn streams_items_and_keeps_only_the_asked_pointers() {
        let body = r#"{"success":true,"pages":{"next":"?p=2","junk":[1,2]},"data":[{"id":1},{"id":2}],"big":{"x":[1,2,3]}}"#;
        let (items, r) = run(
            "/data",
            &["/success", "/pages/next", "/error"],
            ItemsShape::List,
            body,
        );
        let d = r.unwrap();
        assert_eq!(items, [json!({"id": 1}), json!({"id": 2})]);
        assert_eq!(d.items, Items::Streamed);
        assert_eq!(
            d.skeleton,
            json!({"success": true, "pages": {"next": "?p=2"}})
        );
    }

    #[test]
    fn item_shapes() {
        let (items, r) = run("", &[], ItemsShape::List, r#"[{"id":1}]"#);
        assert_eq!((items.len(), r.unwrap().items), (1, Items::Streamed));
        let (_, r) = run("", &[], ItemsShape::List, r#"{"id":1}"#);
        assert_eq!(r.unwrap().items, Items::NotAList, "the root must be a list");
        let (items, r) = run("/d", &[], ItemsShape::List, r#"{"d":{"id":1}}"#);
        assert_eq!((items.len(), r.unwrap().items), (1, Items::Streamed));
        let (items, r) = run(
            "/d",
            &[],
            ItemsShape::Keyed,
            r#"{"d":{"7":{"id":7},"9":{"id":9}}}"#,
        );
        assert_eq!((items.len(), r.unwrap().items), (2, Items::Streamed));
        let (_, r) = run("/d", &[], ItemsShape::Keyed, r#"{"d":[]}"#);
        assert_eq!(r.unwrap().items, Items::Streamed);
        let (_, r) = run("/d", &[], ItemsShape::List, r#"{"d":null}"#);
        assert_eq!(r.unwrap().items, Items::Null);
        let (_, r) = run("/d", &[], ItemsShape::List, r#"{"e":1}"#);
        assert_eq!(r.unwrap().items, Items::Missing);
        let (_, r) = run("/d", &[], ItemsShape::List, r#"{"d":5}"#);
        assert_eq!(r.unwrap().items, Items::NotAList);
        let (items, r) = run(
            "/0/d",
            &[],
            ItemsShape::List,
            r#"[{"d":[{"id":1}]},{"d":[2]}]"#,
        );
        assert_eq!(
            (items, r.unwrap().items),
            (vec![json!({"id": 1})], Items::Streamed)
        );
    }

    #[test]
    fn broken_and_truncated_bodies_are_errors() {
        for body in [
            r#"{"data":[{"id":1},"#,
            r#"{"data":[]}x"#,
            "",
            r#"{"data":[{"id":1}]"#,
        ] {
            let (_, r) = run("/data", &[], ItemsShape::List, body);
            assert!(matches!(r, Err(StreamError::Json(_))), "{body}");
        }
    }

    #[test]
    fn a_refused_item_stops_the_page_with_its_own_error() {
        let plan = Plan::new("/d", &[], ItemsShape::List).unwrap();
        let mut seen = 0;
        let r = decode(&plan, br#"{"d":[1,2,3]}"#, &mut |i, _| {
            seen += 1;
            if i == 1 {
                Err("no id".to_string())
            } else {
                Ok(())
            }
        });
        assert!(matches!(r, Err(StreamError::Item(e)) if e == "no id"));
        assert_eq!(seen, 2);
    }

    #[test]
    fn overlapping_pointers_fall_back_to_whole_pages() {
        assert!(Plan::new("/data", &["/data/0"], ItemsShape::List).is_none());
        assert!(Plan::new("/data/x", &["/data"], ItemsShape::List).is_none());
        assert!(Plan::new("/data", &[""], ItemsShape::List).is_none());
        assert!(Plan::new("/data", &["/dat"], ItemsShape::List).is_some());
    }
}
