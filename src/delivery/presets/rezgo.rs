//! The `rezgo` body preset: the booking as Rezgo's XML `<booking>` element, inside a
//! `<response>` shaped like Rezgo's `search_bookings` answer, which is also what Rezgo's own
//! webhook POSTs (receivers such as WordPress plugins read `$xml->booking`).
//!
//! The booking is written back as the XML it was read from (the inverse of the rules in
//! `crate::source::xml`): each member becomes a child element, an array becomes repeated
//! elements of the same name, members named `@name` become attributes and `#text` the element's
//! text. Every value is escaped by quick-xml's writer; names that XML cannot carry are made
//! valid (`first name` -> `first_name`), and characters XML 1.0 forbids become U+FFFD. A booking
//! without a `trans_num` (one not read from Rezgo) gets the event's booking id as one, since
//! receivers require it.

use std::borrow::Cow;

use quick_xml::Writer;
use quick_xml::events::{BytesDecl, BytesEnd, BytesStart, BytesText, Event as XmlEvent};
use serde_json::{Map, Value};

use crate::outbox::Event;

/// The media type of the body.
pub const CONTENT_TYPE: &str = "application/xml";

/// Why the XML body could not be written (writing into memory does not fail in practice; the
/// error is reported rather than hidden).
#[derive(Debug, thiserror::Error)]
#[error("cannot write the XML body: {0}")]
pub struct XmlError(#[from] std::io::Error);

/// `<?xml ...?><response><total>1</total><booking>...</booking></response>` for `event`.
pub fn to_vec(event: &Event) -> Result<Vec<u8>, XmlError> {
    let mut w = Writer::new_with_indent(Vec::with_capacity(1024), b' ', 2);
    w.write_event(XmlEvent::Decl(BytesDecl::new("1.0", Some("UTF-8"), None)))?;
    w.write_event(XmlEvent::Start(BytesStart::new("response")))?;
    text_element(&mut w, "total", "1")?;
    if event.backfill {
        // The booking's current state sent to a new receiver, not a detected change.
        text_element(&mut w, "backfill", "true")?;
    }
    let booking = event.booking.value();
    match booking {
        Value::Object(m) => {
            let id = (!m.contains_key("trans_num")).then_some(event.booking_id.as_str());
            object(&mut w, "booking", m, id)?;
        }
        other => element(&mut w, "booking", other)?,
    }
    w.write_event(XmlEvent::End(BytesEnd::new("response")))?;
    Ok(w.into_inner())
}

type W = Writer<Vec<u8>>;

/// `<name>text</name>`.
fn text_element(w: &mut W, name: &str, text: &str) -> Result<(), XmlError> {
    w.write_event(XmlEvent::Start(BytesStart::new(name)))?;
    if !text.is_empty() {
        w.write_event(XmlEvent::Text(BytesText::new(&xml_chars(text))))?;
    }
    w.write_event(XmlEvent::End(BytesEnd::new(name)))?;
    Ok(())
}

/// One member: scalars as text, arrays as repeated elements, objects as elements.
fn element(w: &mut W, name: &str, value: &Value) -> Result<(), XmlError> {
    match value {
        Value::Array(items) => {
            for item in items {
                element(w, name, item)?;
            }
            Ok(())
        }
        Value::Object(m) => object(w, name, m, None),
        scalar => text_element(w, name, &scalar_text(scalar)),
    }
}

/// An object as an element: `@` members are attributes, `#text` is text, the rest children.
/// `trans_num`, if given, is written as the first child.
fn object(
    w: &mut W,
    name: &str,
    m: &Map<String, Value>,
    trans_num: Option<&str>,
) -> Result<(), XmlError> {
    let mut start = BytesStart::new(name);
    for (k, v) in m {
        if let Some(attr) = k.strip_prefix('@') {
            let attr = xml_name(attr);
            let value = xml_chars(&scalar_text(v)).into_owned();
            start.push_attribute((attr.as_ref(), value.as_str()));
        }
    }
    w.write_event(XmlEvent::Start(start))?;
    if let Some(id) = trans_num {
        text_element(w, "trans_num", id)?;
    }
    if let Some(text) = m.get("#text") {
        let text = scalar_text(text);
        if !text.is_empty() {
            w.write_event(XmlEvent::Text(BytesText::new(&xml_chars(&text))))?;
        }
    }
    for (k, v) in m {
        if k.starts_with('@') || k == "#text" {
            continue;
        }
        element(w, &xml_name(k), v)?;
    }
    w.write_event(XmlEvent::End(BytesEnd::new(name)))?;
    Ok(())
}

/// A value as element text: strings as they are, numbers and booleans in JSON spelling, null
/// as nothing, anything nested as compact JSON.
fn scalar_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        other => other.to_string(),
    }
}

/// `s` with the characters XML 1.0 does not allow (control characters other than tab, line
/// feed and carriage return; U+FFFE, U+FFFF) replaced by U+FFFD.
fn xml_chars(s: &str) -> Cow<'_, str> {
    let bad = |c: char| {
        (c < '\u{20}' && !matches!(c, '\t' | '\n' | '\r')) || matches!(c, '\u{FFFE}' | '\u{FFFF}')
    };
    if s.chars().any(bad) {
        Cow::Owned(
            s.chars()
                .map(|c| if bad(c) { '\u{FFFD}' } else { c })
                .collect(),
        )
    } else {
        Cow::Borrowed(s)
    }
}

/// `name` as a valid XML name: characters other than letters, digits, `_`, `-`, `.` and `:`
/// become `_`, and a name that does not start with a letter or `_` gets a `_` in front.
fn xml_name(name: &str) -> Cow<'_, str> {
    let ok = |c: char| c.is_alphanumeric() || matches!(c, '_' | '-' | '.' | ':');
    let starts_ok = name
        .chars()
        .next()
        .is_some_and(|c| c.is_alphabetic() || c == '_');
    if starts_ok && name.chars().all(ok) {
        return Cow::Borrowed(name);
    }
    let mut out = String::with_capacity(name.len() + 1);
    if !starts_ok {
        out.push('_');
    }
    out.extend(name.chars().map(|c| if ok(c) { c } else { '_' }));
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outbox::{Booking, EventKind};
    use serde_json::json;

    fn event(booking: Value) -> Event {
        Event {
            id: "evt_01968f4a2b3c7d4e8f5a6b7c8d9e0f11".to_string(),
            seq: 7,
            kind: EventKind::New,
            source: "rezgo".to_string(),
            booking_id: "SIM1001".to_string(),
            detected_ms: 1_748_769_302_481,
            booking: Booking::from_value(booking).unwrap(),
            changes: Vec::new(),
            backfill: false,
        }
    }

    #[test]
    fn names_and_characters_xml_cannot_carry_are_made_valid() {
        assert_eq!(xml_name("first_name"), "first_name");
        assert_eq!(xml_name("first name"), "first_name");
        assert_eq!(xml_name("1st"), "_1st");
        assert_eq!(xml_name(""), "_");
        assert_eq!(xml_name("soap:Body"), "soap:Body");
        assert_eq!(xml_chars("a\u{1}b\tc"), "a\u{FFFD}b\tc");
    }

    #[test]
    fn the_booking_round_trips_through_the_xml_source_decoder() {
        // What pollhook reads from a Rezgo source, written back, reads the same.
        let booking = json!({
            "trans_num": "SIM1001",
            "item_id": "42",
            "tour_name": "Zoë's <Sunset> & \"Wine\" Tour",
            "date": "1780000000",
            "email_address": "zoe@example.com",
            "first_name": "Zoë ]]> <b>",
            "prices": {"price": [{"@id": "1", "#text": "25.00"}, {"@id": "2", "#text": "10.00"}]},
            "note": "",
        });
        let bytes = to_vec(&event(booking.clone())).unwrap();
        let tree = crate::source::xml::to_json(&bytes, 64).unwrap();
        assert_eq!(tree["response"]["total"], "1");
        assert_eq!(tree["response"]["booking"], booking);
    }

    #[test]
    fn a_booking_without_trans_num_gets_the_booking_id() {
        let bytes = to_vec(&event(json!({"id": 5, "email": "a@b.c", "ok": true}))).unwrap();
        let text = String::from_utf8(bytes).unwrap();
        assert_eq!(
            text,
            concat!(
                "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n",
                "<response>\n",
                "  <total>1</total>\n",
                "  <booking>\n",
                "    <trans_num>SIM1001</trans_num>\n",
                "    <email>a@b.c</email>\n",
                "    <id>5</id>\n",
                "    <ok>true</ok>\n",
                "  </booking>\n",
                "</response>"
            )
        );
    }
}
