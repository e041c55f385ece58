//! Pure page decoding: the body as JSON (or XML into the same tree), the configured success
//! check, the bookings and their ids at the items pointer, and next-page links.

use serde_json::Value;
use url::Url;

use super::{Record, SourceError};
use crate::config::{ItemsShape, PageStop, Pagination, ResponseFormat, SourceConfig, SuccessCheck};
use crate::json::scalar_string;
use crate::text::Redactor;

/// Decodes a response body (JSON, or XML into the same tree).
pub fn decode(format: ResponseFormat, raw: &[u8], page: u32) -> Result<Value, SourceError> {
    match format {
        ResponseFormat::Json => serde_json::from_slice(raw).map_err(|e| SourceError::Decode {
            page,
            format: "JSON",
            reason: e.to_string(),
        }),
        ResponseFormat::Xml => super::xml::to_json(raw, 64).map_err(|e| SourceError::Decode {
            page,
            format: "XML",
            reason: e.to_string(),
        }),
    }
}

/// Applies the configured success check to a decoded page.
pub fn check_success(
    check: Option<&SuccessCheck>,
    doc: &Value,
    page: u32,
) -> Result<(), SourceError> {
    check_with(check, doc, page, &Redactor::default())
}

/// [`check_success`], with `redactor`'s secrets taken out of what the page reports.
fn check_with(
    check: Option<&SuccessCheck>,
    doc: &Value,
    page: u32,
    redactor: &Redactor,
) -> Result<(), SourceError> {
    let snippet = |v: &Value| redactor.snippet(v.to_string().as_bytes(), 200);
    // Compare as strings too, so `equals = true` accepts "true" and `not_equals = "fail"` works
    // whatever the API's types.
    let same = |a: Option<&Value>, b: &Value| match a {
        Some(a) => a == b || scalar_string(a).is_some_and(|s| Some(s) == scalar_string(b)),
        None => false,
    };
    let fail = |detail: String| Err(SourceError::Unsuccessful { page, detail });
    match check {
        None => Ok(()),
        Some(SuccessCheck::Equals(p, v)) if !same(doc.pointer(p), v) => fail(format!(
            "{p} is {}, expected {v}{}",
            doc.pointer(p)
                .map(Value::to_string)
                .unwrap_or_else(|| "missing".into()),
            error_hint(doc, &snippet)
        )),
        Some(SuccessCheck::NotEquals(p, v)) if same(doc.pointer(p), v) => {
            fail(format!("{p} is {v}{}", error_hint(doc, &snippet)))
        }
        Some(SuccessCheck::Absent(p)) if doc.pointer(p).is_some_and(|v| !v.is_null()) => {
            fail(format!(
                "{p} is present: {}",
                doc.pointer(p).map(snippet).unwrap_or_default()
            ))
        }
        Some(_) => Ok(()),
    }
    .map_err(|e| e.redact(redactor))
}

fn error_hint(doc: &Value, snippet: &dyn Fn(&Value) -> String) -> String {
    for p in ["/error", "/message", "/errors", "/result"] {
        if let Some(v) = doc.pointer(p).filter(|v| !v.is_null()) {
            return format!(" ({}: {})", &p[1..], snippet(v));
        }
    }
    String::new()
}

/// The id of one booking (composite ids joined with `:`), always a string. Each part is a
/// non-blank string as it is, or an integer in its decimal spelling: `7`, `7.0` and `7e0` are
/// all `"7"`, and `-0` is `"0"`, so one booking never becomes two over a change of spelling.
/// `true`/`false`, blank text and numbers with a fraction are refused.
pub fn id_of(
    cfg: &SourceConfig,
    item: &Value,
    page: u32,
    index: usize,
) -> Result<String, SourceError> {
    let mut parts = Vec::with_capacity(cfg.id.len());
    for p in &cfg.id {
        let bad = |reason| SourceError::BadId {
            page,
            index,
            pointer: p.clone(),
            reason,
        };
        match item.pointer(p) {
            Some(Value::String(s)) if s.trim().is_empty() => {
                return Err(bad(if s.is_empty() {
                    "it is empty"
                } else {
                    "it is only whitespace"
                }));
            }
            Some(Value::String(s)) => parts.push(s.clone()),
            Some(Value::Number(n)) => parts.push(integer_id(n).ok_or_else(|| {
                bad("it is a number with a fraction, or beyond the 64-bit integers")
            })?),
            Some(Value::Bool(_)) => return Err(bad("it is true/false")),
            _ => {
                return Err(SourceError::MissingId {
                    page,
                    index,
                    pointer: p.clone(),
                });
            }
        }
    }
    Ok(parts.join(":"))
}

/// An integral number in its one decimal spelling, whatever the JSON spelling (`7.0`, `1e3`,
/// `-0`); `None` for a fraction or a value outside the 64-bit integers.
fn integer_id(n: &serde_json::Number) -> Option<String> {
    if let Some(u) = n.as_u64() {
        return Some(u.to_string());
    }
    if let Some(i) = n.as_i64() {
        return Some(i.to_string());
    }
    let f = n.as_f64()?;
    if !f.is_finite() || f.fract() != 0.0 {
        return None;
    }
    // 2^64 and -2^63, exactly representable; `-0.0 >= 0.0` holds, so -0 is 0.
    if (0.0..18_446_744_073_709_551_616.0).contains(&f) {
        Some((f as u64).to_string())
    } else if (-9_223_372_036_854_775_808.0..0.0).contains(&f) {
        Some((f as i64).to_string())
    } else {
        None
    }
}

/// The pointers a page's skeleton keeps besides the items: the success check, the pagination
/// values and the members error hints are taken from.
fn kept_pointers(cfg: &SourceConfig) -> Vec<&str> {
    let mut keep: Vec<&str> = vec!["/error", "/message", "/errors", "/result"];
    match &cfg.success {
        Some(
            SuccessCheck::Equals(p, _) | SuccessCheck::NotEquals(p, _) | SuccessCheck::Absent(p),
        ) => keep.push(p),
        None => {}
    }
    match &cfg.pagination {
        Pagination::Page {
            stop: PageStop::HasMore(p) | PageStop::TotalPages(p),
            ..
        } => keep.push(p),
        Pagination::Offset { total: Some(p), .. } => keep.push(p),
        Pagination::Cursor { next, .. } => keep.push(next),
        Pagination::NextLink { pointer } => keep.push(pointer),
        _ => {}
    }
    keep
}

/// Decodes one page: calls `on_record` with each booking as soon as it is decoded and returns
/// the page's skeleton (the success check, pagination and error members; see
/// [`super::stream`]). A JSON page is decoded in one pass, one booking at a time; an XML page is
/// converted whole, then its bookings are taken out of the tree one by one. The success check
/// runs on the skeleton; a page that fails it, is malformed, or has no list at `items_ptr`
/// (a JSON answer without the member is an error answer, not an empty page) is an error.
pub fn page(
    cfg: &SourceConfig,
    items_ptr: &str,
    raw: &[u8],
    page: u32,
    on_record: &mut dyn FnMut(Record) -> Result<(), SourceError>,
) -> Result<Value, SourceError> {
    decode_page(cfg, items_ptr, raw, page, on_record).map_err(|e| e.redact(&cfg.redactor))
}

fn decode_page(
    cfg: &SourceConfig,
    items_ptr: &str,
    raw: &[u8],
    page: u32,
    on_record: &mut dyn FnMut(Record) -> Result<(), SourceError>,
) -> Result<Value, SourceError> {
    let keep = kept_pointers(cfg);
    let plan = match cfg.format {
        ResponseFormat::Json => super::stream::Plan::new(items_ptr, &keep, cfg.items_shape),
        ResponseFormat::Xml => None,
    };
    let Some(plan) = plan else {
        let mut doc = decode(cfg.format, raw, page)?;
        check_with(cfg.success.as_ref(), &doc, page, &cfg.redactor)?;
        take_records(cfg, items_ptr, &mut doc, page, on_record)?;
        return Ok(doc);
    };
    let mut on_item = |index: usize, item: Value| -> Result<(), SourceError> {
        let id = id_of(cfg, &item, page, index)?;
        on_record(Record { id, doc: item })
    };
    let decoded = super::stream::decode(&plan, raw, &mut on_item).map_err(|e| match e {
        super::stream::StreamError::Item(e) => e,
        super::stream::StreamError::Json(e) => SourceError::Decode {
            page,
            format: "JSON",
            reason: e.to_string(),
        },
    })?;
    check_with(cfg.success.as_ref(), &decoded.skeleton, page, &cfg.redactor)?;
    match decoded.items {
        super::stream::Items::Streamed | super::stream::Items::Null => Ok(decoded.skeleton),
        super::stream::Items::Missing | super::stream::Items::NotAList => {
            Err(SourceError::NotAList {
                page,
                pointer: items_ptr.to_string(),
            })
        }
    }
}

/// Takes the bookings out of a whole decoded page (XML, or JSON whose kept pointers overlap the
/// items), one at a time, leaving the rest of the page as its skeleton.
fn take_records(
    cfg: &SourceConfig,
    items_ptr: &str,
    doc: &mut Value,
    page: u32,
    on_record: &mut dyn FnMut(Record) -> Result<(), SourceError>,
) -> Result<(), SourceError> {
    let not_a_list = || SourceError::NotAList {
        page,
        pointer: items_ptr.to_string(),
    };
    let at_root = items_ptr.is_empty();
    let taken = if at_root {
        Some(std::mem::take(doc))
    } else {
        doc.pointer_mut(items_ptr).map(std::mem::take)
    };
    let items: Vec<Value> = match (cfg.items_shape, taken) {
        // An empty result is often `null` rather than `[]`.
        (_, Some(Value::Null)) if !at_root => Vec::new(),
        // In XML an empty list is simply no element. In JSON a missing member is not "no
        // bookings": it is usually an error answer (with HTTP 200), and reading it as empty
        // could turn into cancellations.
        (_, None) if !at_root && cfg.format == ResponseFormat::Xml => Vec::new(),
        (ItemsShape::List, Some(Value::Array(a))) => a,
        // One element where a list was expected (XML with a single child; some JSON APIs).
        (ItemsShape::List, Some(o @ Value::Object(_))) if !at_root => vec![o],
        (ItemsShape::Keyed, Some(Value::Object(m))) => m.into_iter().map(|(_, v)| v).collect(),
        // PHP encodes an empty keyed list as `[]`.
        (ItemsShape::Keyed, Some(Value::Array(a))) => a,
        _ => return Err(not_a_list()),
    };
    for (index, item) in items.into_iter().enumerate() {
        let id = id_of(cfg, &item, page, index)?;
        on_record(Record { id, doc: item })?;
    }
    Ok(())
}

/// Finds the bookings in one decoded page and their ids.
pub fn extract(
    cfg: &SourceConfig,
    items_ptr: &str,
    doc: &Value,
    page: u32,
) -> Result<Vec<Record>, SourceError> {
    let mut doc = doc.clone();
    let mut out = Vec::new();
    take_records(cfg, items_ptr, &mut doc, page, &mut |r| {
        out.push(r);
        Ok(())
    })?;
    Ok(out)
}

/// The next page's URL from a next-link response, resolved against the current URL and held to
/// the same scheme, host and port as the configured URL.
pub fn next_link(
    base: &Url,
    current: &Url,
    doc: &Value,
    pointer: &str,
    page: u32,
) -> Result<Option<Url>, SourceError> {
    let link = match doc.pointer(pointer) {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::String(s)) if s.trim().is_empty() => return Ok(None),
        Some(Value::Bool(false)) => return Ok(None),
        Some(Value::String(s)) => s.trim().to_string(),
        Some(other) => {
            return Err(SourceError::BadNextLink {
                page,
                reason: format!("expected a URL string, found {other}"),
            });
        }
    };
    let next = current.join(&link).map_err(|e| SourceError::BadNextLink {
        page,
        reason: e.to_string(),
    })?;
    if next.origin() != base.origin() {
        return Err(SourceError::BadNextLink {
            page,
            reason: format!(
                "it points to {} but the source is {}; links to other hosts are never followed",
                next.origin().ascii_serialization(),
                base.origin().ascii_serialization()
            ),
        });
    }
    Ok(Some(next))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use serde_json::json;

    fn cfg(extra: &str) -> SourceConfig {
        let text = format!(
            "[sources.s]\nurl = \"http://api.test/v2/bookings\"\nevery = \"1m\"\n{extra}\n"
        );
        Config::from_toml_str(&text, "t.toml")
            .unwrap_or_else(|e| panic!("{e}"))
            .sources
            .remove(0)
    }

    fn ex(c: &SourceConfig, doc: &Value) -> Result<Vec<Record>, SourceError> {
        extract(c, &c.items, doc, 1)
    }

    #[test]
    fn extracts_items_and_ids_as_strings() {
        let c = cfg("items = \"/data\"");
        let r = ex(&c, &json!({"data": [{"id": 7}, {"id": "x"}]})).unwrap();
        assert_eq!(r[0].id, "7");
        assert_eq!(r[1].id, "x");
    }

    #[test]
    fn composite_ids_join_parts() {
        let c = cfg("id = [\"/propertyId\", \"/id\"]");
        let r = ex(&c, &json!([{"propertyId": 3, "id": 7}])).unwrap();
        assert_eq!(r[0].id, "3:7");
    }

    #[test]
    fn missing_id_is_an_error() {
        let c = cfg("items = \"/data\"");
        let e = extract(
            &c,
            &c.items,
            &json!({"data": [{"id": 1}, {"name": "x"}]}),
            2,
        )
        .unwrap_err();
        assert!(
            matches!(
                e,
                SourceError::MissingId {
                    page: 2,
                    index: 1,
                    ..
                }
            ),
            "{e}"
        );
    }

    #[test]
    fn ids_are_non_blank_strings_or_integers_in_one_spelling() {
        let c = cfg("items = \"/data\"");
        let one = |raw: &str| -> Result<String, SourceError> {
            let doc: Value =
                serde_json::from_str(&format!("{{\"data\": [{{\"id\": {raw}}}]}}")).unwrap();
            ex(&c, &doc).map(|mut r| r.remove(0).id)
        };
        for (raw, id) in [
            ("7", "7"),
            ("7.0", "7"),
            ("1e3", "1000"),
            ("1E3", "1000"),
            ("-0", "0"),
            ("-0.0", "0"),
            ("-12.000", "-12"),
            ("0.5e1", "5"),
            ("18446744073709551615", "18446744073709551615"),
            ("-9223372036854775808", "-9223372036854775808"),
            ("\"007\"", "007"),
            ("\" x \"", " x "),
        ] {
            assert_eq!(
                one(raw).unwrap_or_else(|e| panic!("{raw}: {e}")),
                id,
                "{raw}"
            );
        }
        for raw in [
            "true",
            "false",
            "\"\"",
            "\"  \"",
            "\"\\t\\n\"",
            "7.5",
            "-0.25",
            "1e300",
            "123456789012345678901234",
        ] {
            let e = one(raw).expect_err(raw).to_string();
            assert!(
                e.contains("/id") && e.contains("booking #0") && e.contains("page 1"),
                "{raw}: {e}"
            );
            assert!(
                e.contains("string") && e.contains("integer"),
                "{raw}: says what is valid: {e}"
            );
        }
        let composite = cfg("items = \"/data\"\nid = [\"/p\", \"/id\"]");
        let e = ex(&composite, &json!({"data": [{"p": 3.0, "id": false}]})).unwrap_err();
        assert!(e.to_string().contains("`/id`"), "{e}");
        let r = ex(&composite, &json!({"data": [{"p": 3.0, "id": 1e2}]})).unwrap();
        assert_eq!(r[0].id, "3:100");
    }

    #[test]
    fn items_must_be_a_list_or_a_single_object() {
        let c = cfg("items = \"/data\"");
        assert_eq!(
            ex(&c, &json!({"data": {"id": 1}})).unwrap().len(),
            1,
            "one XML element"
        );
        assert!(ex(&c, &json!({"data": 5})).is_err());
        assert!(ex(&c, &json!({"data": null})).unwrap().is_empty());
        assert!(ex(&c, &json!({"data": []})).unwrap().is_empty());
        let e = ex(&c, &json!({"error": "token expired"})).unwrap_err();
        assert!(
            matches!(e, SourceError::NotAList { .. }),
            "a JSON answer without the items member is an error, not an empty page: {e}"
        );
        let root = cfg("");
        assert!(
            ex(&root, &json!({"id": 1})).is_err(),
            "the root must be a list"
        );
    }

    #[test]
    fn keyed_items_are_the_object_values() {
        let c = cfg("items = \"/booking~1index\"\nitems_shape = \"keyed\"\nid = \"/booking_id\"");
        let doc = json!({"booking/index": {"2": {"booking_id": 2}, "5": {"booking_id": 5}}});
        let mut ids: Vec<String> = ex(&c, &doc).unwrap().into_iter().map(|r| r.id).collect();
        ids.sort();
        assert_eq!(ids, ["2", "5"]);
        assert!(ex(&c, &json!({"booking/index": []})).unwrap().is_empty());
    }

    #[test]
    fn success_checks() {
        let eq = SuccessCheck::Equals("/success".into(), json!(true));
        assert!(check_success(Some(&eq), &json!({"success": true}), 1).is_ok());
        let e = check_success(
            Some(&eq),
            &json!({"success": false, "error": "bad token"}),
            3,
        )
        .unwrap_err();
        assert!(
            e.to_string().contains("bad token") && e.to_string().contains("page 3"),
            "{e}"
        );
        let ne = SuccessCheck::NotEquals("/status".into(), json!("fail"));
        assert!(check_success(Some(&ne), &json!({"status": "success"}), 1).is_ok());
        assert!(check_success(Some(&ne), &json!({"status": "fail"}), 1).is_err());
        let absent = SuccessCheck::Absent("/error".into());
        assert!(check_success(Some(&absent), &json!([{"bookId": "1"}]), 1).is_ok());
        assert!(check_success(Some(&absent), &json!({"error": "Unauthorized"}), 1).is_err());
    }

    #[test]
    fn beds24_legacy_xml_ids_in_attributes_and_text_statuses() {
        let c = cfg(
            "format = \"xml\"\nitems = \"/bookings/booking\"\nid = \"/@id\"\nstatus = \"/status\"\ncancelled_values = [\"Cancelled\"]",
        );
        let doc = decode(
            c.format,
            br#"<bookings datefrom="2019-08-01"><booking id="13300894" action=""><status>Confirmed</status></booking><booking id="13300895"><status>Cancelled</status></booking></bookings>"#,
            1,
        )
        .unwrap();
        let r = ex(&c, &doc).unwrap();
        assert_eq!(
            r.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(),
            ["13300894", "13300895"]
        );
        let policy =
            crate::diff::Policy::new(c.status.clone(), c.cancelled_values.clone(), vec![], vec![]);
        assert!(!policy.is_cancelled(&r[0].doc));
        assert!(policy.is_cancelled(&r[1].doc));
    }

    #[test]
    fn xml_pages_decode_into_the_same_tree() {
        let c = cfg("format = \"xml\"\nitems = \"/response/booking\"\nid = \"/trans_num\"");
        let one = decode(
            c.format,
            b"<response><total>1</total><booking><trans_num>A1</trans_num></booking></response>",
            1,
        )
        .unwrap();
        assert_eq!(ex(&c, &one).unwrap()[0].id, "A1");
        let none = decode(c.format, b"<response><total>0</total></response>", 1).unwrap();
        assert!(ex(&c, &none).unwrap().is_empty());
        assert!(decode(c.format, b"<response><booking>", 1).is_err());
    }

    #[test]
    fn next_links_resolve_and_stay_on_host() {
        let base = Url::parse("http://api.test/v2/bookings").unwrap();
        let doc = |l: Value| json!({"pages": {"next": l}});
        let p = "/pages/next";
        let n = next_link(&base, &base, &doc(json!("?page=2")), p, 1)
            .unwrap()
            .unwrap();
        assert_eq!(n.as_str(), "http://api.test/v2/bookings?page=2");
        let n = next_link(
            &base,
            &base,
            &doc(json!("http://api.test/v2/bookings?page=3")),
            p,
            1,
        )
        .unwrap()
        .unwrap();
        assert_eq!(n.query(), Some("page=3"));
        assert!(
            next_link(&base, &base, &doc(json!(null)), p, 1)
                .unwrap()
                .is_none()
        );
        assert!(
            next_link(&base, &base, &doc(json!("")), p, 1)
                .unwrap()
                .is_none()
        );
        assert!(next_link(&base, &base, &doc(json!("http://evil.test/x")), p, 1).is_err());
        assert!(next_link(&base, &base, &doc(json!("https://api.test/x")), p, 1).is_err());
        assert!(next_link(&base, &base, &doc(json!(5)), p, 1).is_err());
    }
}
