//! XML responses turned into the same `serde_json::Value` tree the JSON path uses, so operators write JSON Pointers against XML APIs too.
//!
//! Some booking APIs answer in XML (Rezgo's `search_bookings`, Beds24's legacy
//! XML API). pollhook reads every response through JSON Pointers, so an XML body
//! is first converted by [`to_json`] with the fixed mapping below. Operators
//! write their pointers against this mapping.
//!
//! # The mapping
//!
//! 1. **The root.** The result is an object with exactly one key, the root
//!    element's name: `<response>…</response>` becomes `{"response": …}`, so
//!    every pointer starts with `/response`.
//!
//! 2. **Text-only elements become strings.** An element with no attributes and
//!    no child elements becomes its text as a JSON string. Text is *never*
//!    converted to a number or a boolean, so status codes are compared as
//!    strings. An empty element becomes the empty string.
//!
//!    | XML | JSON |
//!    | --- | --- |
//!    | `<status>3</status>` | `"3"` |
//!    | `<price>2040.00</price>` | `"2040.00"` (not `2040`) |
//!    | `<a/>` or `<a></a>` or `<a>  </a>` | `""` |
//!
//! 3. **Elements with attributes or children become objects.** Attributes are
//!    keys prefixed with `@` (`"@id": "13300894"`), child elements are keys
//!    named after the child, and any non-whitespace text is kept under
//!    `"#text"`. An attribute and a child element with the same name do not
//!    clash: `<b id="1"><id>2</id></b>` gives `{"@id": "1", "id": "2"}`.
//!    An element with attributes but no children and no text is an object of
//!    attributes only: `<booking id="7"/>` gives `{"@id": "7"}`.
//!
//!    ```text
//!    <a x="1">hi<b>2</b></a>   ->   {"a": {"@x": "1", "b": "2", "#text": "hi"}}
//!    ```
//!
//! 4. **Repeated children become arrays.** A child name that occurs once is a
//!    single value; a name that occurs several times under the same parent
//!    becomes an array in document order (even if other elements sit between
//!    the occurrences). So the *shape depends on the count*:
//!
//!    ```text
//!    <response><booking><id>1</id></booking></response>
//!      -> {"response": {"booking": {"id": "1"}}}              /response/booking is an object
//!    <response><booking><id>1</id></booking><booking><id>2</id></booking></response>
//!      -> {"response": {"booking": [{"id": "1"}, {"id": "2"}]}}  /response/booking/1/id == "2"
//!    <response><total>0</total></response>
//!      -> {"response": {"total": "0"}}                        no "booking" key at all
//!    ```
//!
//!    pollhook's item extraction therefore accepts a single object where it
//!    expects a list (it is treated as a list of one): point the items
//!    pointer at `/response/booking`, never at `/response/booking/0`.
//!
//! 5. **Text.** Entity and character references (`&amp;` `&lt;` `&gt;`
//!    `&quot;` `&apos;` `&#233;` `&#xE9;`) are decoded. CDATA sections are
//!    text and merge with the text around them:
//!    `<n><![CDATA[Zoë & "Bob" <b>]]></n>` gives `"Zoë & \"Bob\" <b>"`. Line
//!    ends are normalised to `\n`. Leading and trailing XML whitespace (space,
//!    tab, CR, LF) of text is trimmed; whitespace inside text is kept.
//!    Whitespace-only text between elements is ignored. In mixed content each
//!    run of text between child elements is trimmed on its own, empty runs are
//!    dropped, and the remaining runs are joined with a single space:
//!    `<p>one <i>x</i> two</p>` gives `{"i": "x", "#text": "one two"}`.
//!    Comments and processing instructions inside text do not split a run.
//!
//! 6. **Attribute values** are decoded like text (references resolved) and
//!    whitespace-normalised as XML requires (tab, CR and LF become spaces), but
//!    not trimmed: `action=""` gives `"@action": ""`.
//!
//! 7. **Names are kept verbatim**, including namespace prefixes:
//!    `<soap:Envelope xmlns:soap="…">` gives the key `"soap:Envelope"` with an
//!    attribute `"@xmlns:soap"`; namespaces are not resolved. In a JSON Pointer
//!    `/` inside a name would be written `~1` and `~` as `~0`, but XML names
//!    contain neither.
//!
//! 8. **Ignored**: the XML declaration, comments, processing instructions, and
//!    a DOCTYPE. A DOCTYPE is accepted but nothing declared in it is used: no
//!    external entity is fetched and no entity is expanded, so only the five
//!    predefined entities and numeric character references are recognised.
//!    Any other reference (`&nbsp;`, or `&x;` declared with `<!ENTITY x "…">`)
//!    is an error, which also rules out "billion laughs" documents.
//!
//! 9. **Object keys are unordered**: read them by name. Arrays keep document
//!    order.
//!
//! # Input rules
//!
//! The input must be UTF-8 (a UTF-8 byte order mark is accepted and skipped).
//! An XML declaration naming another encoding than UTF-8 or US-ASCII is an
//! error naming that encoding; a UTF-16 byte order mark is reported the same
//! way. The document must have exactly one root element, nothing but
//! whitespace, comments and processing instructions after it, and be
//! well-formed; nesting deeper than the `max_depth` given to [`to_json`] is an
//! error. The parser is iterative (an explicit stack), so no input can
//! overflow the call stack.

use quick_xml::escape::{EscapeError, resolve_predefined_entity};
use quick_xml::events::{BytesStart, Event};
use quick_xml::reader::Reader;
use quick_xml::{XmlVersion, events::attributes::Attribute};
use serde_json::{Map, Value};

/// Why an XML document could not be turned into a JSON tree.
///
/// Every `position` is a byte offset into the input exactly as given to
/// [`to_json`] (a byte order mark counts).
#[derive(Debug, thiserror::Error)]
pub enum XmlError {
    /// The document is not well-formed XML (syntax error, unclosed or
    /// mismatched tag, bad attribute, invalid name or reference, text outside
    /// the root element, ...).
    #[error("malformed XML at byte {position}: {message}")]
    Malformed {
        /// Byte offset where the problem was detected.
        position: usize,
        /// What is wrong, in words.
        message: String,
    },
    /// The input is not valid UTF-8.
    #[error("XML is not valid UTF-8 at byte {position}")]
    InvalidUtf8 {
        /// Byte offset of the first invalid byte.
        position: usize,
    },
    /// The document declares (or its byte order mark announces) an encoding
    /// other than UTF-8 or US-ASCII.
    #[error("unsupported XML encoding {0:?}: only UTF-8 (or US-ASCII) is accepted")]
    UnsupportedEncoding(String),
    /// A reference to an entity that is neither one of the five predefined XML
    /// entities nor a character reference. Entities declared in a DOCTYPE are
    /// deliberately never expanded.
    #[error(
        "entity reference &{name}; at byte {position} is not expanded: only &amp; &lt; &gt; &quot; &apos; and &#...; are supported"
    )]
    UndeclaredEntity {
        /// The entity name, without `&` and `;`.
        name: String,
        /// Byte offset of the reference (or of the tag whose attribute holds it).
        position: usize,
    },
    /// Elements are nested deeper than the allowed maximum.
    #[error("XML nested deeper than {max_depth} elements at byte {position}")]
    TooDeep {
        /// The limit that was exceeded.
        max_depth: usize,
        /// Byte offset of the first element beyond the limit.
        position: usize,
    },
    /// The input holds no element at all (empty, whitespace, or only
    /// declarations and comments).
    #[error("XML document has no root element")]
    NoRoot,
    /// A second top-level element follows the root element.
    #[error("XML document has several root elements: <{name}> at byte {position} follows the root")]
    SeveralRoots {
        /// Name of the second top-level element.
        name: String,
        /// Byte offset of its start tag.
        position: usize,
    },
    /// Text or a reference follows the root element.
    #[error("unexpected content after the root element at byte {position}")]
    TrailingGarbage {
        /// Byte offset of the unexpected content.
        position: usize,
    },
}

/// One open element on the explicit stack.
struct Frame {
    name: String,
    /// Byte offset of the start tag, for "unclosed element" errors.
    position: usize,
    /// Attributes (`@name`) and children.
    map: Map<String, Value>,
    /// Finished, trimmed text runs joined with a space.
    text: String,
    /// The text run being accumulated (not yet trimmed).
    run: String,
}

impl Frame {
    /// Ends the current text run: trims it and appends it to `text`.
    fn flush_run(&mut self) {
        let trimmed = trim_xml(&self.run);
        if !trimmed.is_empty() {
            if !self.text.is_empty() {
                self.text.push(' ');
            }
            self.text.push_str(trimmed);
        }
        self.run.clear();
    }

    /// Turns the finished element into its JSON value.
    fn into_value(mut self) -> (String, Value) {
        self.flush_run();
        let value = if self.map.is_empty() {
            Value::String(self.text)
        } else {
            if !self.text.is_empty() {
                self.map
                    .insert("#text".to_owned(), Value::String(self.text));
            }
            Value::Object(self.map)
        };
        (self.name, value)
    }
}

/// Where the parser stands relative to the root element.
enum Root {
    /// No element seen yet.
    Before,
    /// The root is open (the stack is not empty).
    Inside,
    /// The root has been closed; its name and value.
    After(String, Value),
}

/// Parses a whole XML document into a JSON tree. `max_depth` bounds nesting (pollhook uses 64) so hostile input cannot overflow the stack.
///
/// The root element counts as depth 1, so `max_depth = 64` accepts 64 nested
/// elements and rejects 65. The parser itself uses an explicit stack; the
/// limit matters because the returned tree is as deep as the document, and
/// dropping, printing or serialising a `serde_json::Value` recurses. See the
/// [module documentation](self) for the mapping from XML to JSON.
pub fn to_json(xml: &[u8], max_depth: usize) -> Result<Value, XmlError> {
    if xml.starts_with(&[0xFE, 0xFF]) || xml.starts_with(&[0xFF, 0xFE]) {
        return Err(XmlError::UnsupportedEncoding("UTF-16".to_owned()));
    }
    // The BOM is stripped here rather than by quick-xml so that every reported
    // position is an offset into `xml` as given.
    let (offset, body) = match xml.strip_prefix(UTF8_BOM) {
        Some(rest) => (UTF8_BOM.len(), rest),
        None => (0, xml),
    };
    // Looked at before UTF-8 validation, so that a Latin-1 document is
    // reported by its declared encoding rather than as invalid UTF-8.
    if let Some(encoding) = declared_encoding(body) {
        check_encoding(&encoding)?;
    }
    let text = std::str::from_utf8(body).map_err(|e| XmlError::InvalidUtf8 {
        position: offset + e.valid_up_to(),
    })?;

    // quick-xml's defaults already check end names and reject unmatched end
    // tags and dangling `&`; text is trimmed here, not by the reader.
    let mut reader = Reader::from_str(text);
    let mut stack: Vec<Frame> = Vec::new();
    let mut root = Root::Before;

    loop {
        let position = offset.saturating_add(to_usize(reader.buffer_position()));
        let event = match reader.read_event() {
            Ok(event) => event,
            Err(e) => {
                let at = offset.saturating_add(to_usize(reader.error_position()));
                return Err(quick_error(e, at));
            }
        };
        match event {
            Event::Start(start) => {
                let frame = open_element(&start, position, &stack, &root, max_depth)?;
                if let Some(parent) = stack.last_mut() {
                    parent.flush_run();
                }
                stack.push(frame);
                root = Root::Inside;
            }
            Event::Empty(start) => {
                let frame = open_element(&start, position, &stack, &root, max_depth)?;
                if let Some(parent) = stack.last_mut() {
                    parent.flush_run();
                }
                root = close_element(frame, &mut stack);
            }
            Event::End(end) => {
                let Some(frame) = stack.pop() else {
                    return Err(malformed(
                        position,
                        format!("end tag </{}> without a start tag", end.name().as_ref()),
                    ));
                };
                if frame.name != end.name().as_ref() {
                    return Err(malformed(
                        position,
                        format!(
                            "end tag </{}> does not match <{}>",
                            end.name().as_ref(),
                            frame.name
                        ),
                    ));
                }
                root = close_element(frame, &mut stack);
            }
            Event::Text(t) => {
                let content = t.xml10_content();
                push_text(&mut stack, &root, position, &content)?;
            }
            Event::CData(c) => {
                let content = c.xml10_content();
                // CDATA is text even when it is only whitespace, but outside
                // the root it is never allowed.
                if stack.is_empty() {
                    return Err(outside_root(&root, position, "CDATA section"));
                }
                push_text(&mut stack, &root, position, &content)?;
            }
            Event::GeneralRef(r) => {
                let decoded: String = if r.is_char_ref() {
                    match r.resolve_char_ref() {
                        Ok(Some(c)) => c.to_string(),
                        Ok(None) | Err(_) => {
                            return Err(malformed(
                                position,
                                format!("invalid character reference &{};", &*r),
                            ));
                        }
                    }
                } else if let Some(s) = resolve_predefined_entity(&r) {
                    s.to_owned()
                } else {
                    return Err(XmlError::UndeclaredEntity {
                        name: r.to_string(),
                        position,
                    });
                };
                if stack.is_empty() {
                    return Err(outside_root(&root, position, "entity reference"));
                }
                push_text(&mut stack, &root, position, &decoded)?;
            }
            Event::Decl(decl) => match decl.encoding() {
                None => {}
                Some(Ok(enc)) => check_encoding(&enc)?,
                Some(Err(e)) => {
                    return Err(malformed(position, format!("bad XML declaration: {e}")));
                }
            },
            Event::DocType(_) => {
                if !matches!(root, Root::Before) {
                    return Err(malformed(
                        position,
                        "DOCTYPE is only allowed before the root element".to_owned(),
                    ));
                }
            }
            Event::Comment(_) | Event::PI(_) => {}
            Event::Eof => {
                if let Some(frame) = stack.last() {
                    return Err(malformed(
                        frame.position,
                        format!("element <{}> is never closed", frame.name),
                    ));
                }
                return match root {
                    Root::After(name, value) => {
                        let mut map = Map::new();
                        map.insert(name, value);
                        Ok(Value::Object(map))
                    }
                    Root::Before | Root::Inside => Err(XmlError::NoRoot),
                };
            }
        }
    }
}

const UTF8_BOM: &[u8] = b"\xEF\xBB\xBF";

/// The `encoding` of a leading XML declaration, read from the raw bytes.
fn declared_encoding(body: &[u8]) -> Option<String> {
    if !body.starts_with(b"<?xml") {
        return None;
    }
    // A declaration is short; do not scan a huge hostile prefix.
    let window = body.get(..body.len().min(1024))?;
    let end = window.windows(2).position(|w| w == b"?>")?;
    let decl = std::str::from_utf8(window.get(..end + 2)?).ok()?;
    match Reader::from_str(decl).read_event() {
        Ok(Event::Decl(decl)) => match decl.encoding() {
            Some(Ok(enc)) => Some(enc.into_owned()),
            _ => None,
        },
        _ => None,
    }
}

/// Accepts only UTF-8 and its subset US-ASCII.
fn check_encoding(declared: &str) -> Result<(), XmlError> {
    let enc = declared.trim();
    let ok = ["utf-8", "utf8", "us-ascii", "ascii"]
        .iter()
        .any(|known| enc.eq_ignore_ascii_case(known));
    if ok {
        Ok(())
    } else {
        Err(XmlError::UnsupportedEncoding(enc.to_owned()))
    }
}

/// Validates a start tag and builds its frame (name and attributes).
fn open_element(
    start: &BytesStart<'_>,
    position: usize,
    stack: &[Frame],
    root: &Root,
    max_depth: usize,
) -> Result<Frame, XmlError> {
    let name = start.name();
    let name = name.as_ref();
    if stack.is_empty() && matches!(root, Root::After(..)) {
        return Err(XmlError::SeveralRoots {
            name: name.to_owned(),
            position,
        });
    }
    if stack.len() >= max_depth {
        return Err(XmlError::TooDeep {
            max_depth,
            position,
        });
    }
    check_name(name, position)?;
    let mut map = Map::new();
    for attr in start.attributes() {
        let attr: Attribute<'_> = attr.map_err(|e| malformed(position, e.to_string()))?;
        let key = attr.key.as_ref();
        check_name(key, position)?;
        let value = attr
            .normalized_value(XmlVersion::Implicit1_0)
            .map_err(|e| quick_error(e, position))?;
        // Duplicate attributes are already rejected by quick-xml's checks.
        map.insert(format!("@{key}"), Value::String(value.into_owned()));
    }
    Ok(Frame {
        name: name.to_owned(),
        position,
        map,
        text: String::new(),
        run: String::new(),
    })
}

/// Finishes an element: attaches it to its parent, or makes it the root.
fn close_element(frame: Frame, stack: &mut [Frame]) -> Root {
    let (name, value) = frame.into_value();
    match stack.last_mut() {
        Some(parent) => {
            insert_child(&mut parent.map, name, value);
            Root::Inside
        }
        None => Root::After(name, value),
    }
}

/// Adds a child under `name`, turning a repeated name into an array.
///
/// Element values are never arrays themselves, so an existing array under an
/// element name can only have been made by an earlier repetition.
fn insert_child(map: &mut Map<String, Value>, name: String, value: Value) {
    match map.get_mut(&name) {
        Some(Value::Array(items)) => items.push(value),
        Some(existing) => {
            let first = existing.take();
            *existing = Value::Array(vec![first, value]);
        }
        None => {
            map.insert(name, value);
        }
    }
}

/// Appends decoded text to the open element, or rejects non-whitespace text
/// outside the root element.
fn push_text(
    stack: &mut [Frame],
    root: &Root,
    position: usize,
    content: &str,
) -> Result<(), XmlError> {
    match stack.last_mut() {
        Some(frame) => {
            frame.run.push_str(content);
            Ok(())
        }
        None if trim_xml(content).is_empty() => Ok(()),
        None => Err(outside_root(root, position, "text")),
    }
}

/// The error for content found outside the root element.
fn outside_root(root: &Root, position: usize, what: &str) -> XmlError {
    match root {
        Root::After(..) => XmlError::TrailingGarbage { position },
        Root::Before | Root::Inside => {
            malformed(position, format!("{what} before the root element"))
        }
    }
}

fn malformed(position: usize, message: String) -> XmlError {
    XmlError::Malformed { position, message }
}

/// Maps a quick-xml error, keeping unknown entities as their own variant.
fn quick_error(e: quick_xml::Error, position: usize) -> XmlError {
    match e {
        quick_xml::Error::Escape(EscapeError::UnrecognizedEntity(_, name)) => {
            XmlError::UndeclaredEntity { name, position }
        }
        quick_xml::Error::Encoding(e) => XmlError::Malformed {
            position,
            message: format!("encoding error: {e}"),
        },
        other => malformed(position, other.to_string()),
    }
}

fn to_usize(n: u64) -> usize {
    usize::try_from(n).unwrap_or(usize::MAX)
}

/// Trims XML whitespace (space, tab, CR, LF) only; a no-break space is kept.
fn trim_xml(s: &str) -> &str {
    s.trim_matches(|c| matches!(c, ' ' | '\t' | '\r' | '\n'))
}

/// Rejects names that are not XML names (quick-xml does not check them), which
/// also guarantees that no element can be called `#text` or `@something`.
fn check_name(name: &str, position: usize) -> Result<(), XmlError> {
    let mut chars = name.chars();
    let valid = match chars.next() {
        Some(first) => is_name_start_char(first) && chars.all(is_name_char),
        None => false,
    };
    if valid {
        Ok(())
    } else {
        Err(malformed(position, format!("invalid XML name {name:?}")))
    }
}

/// `NameStartChar` of XML 1.0 (fifth edition).
fn is_name_start_char(c: char) -> bool {
    matches!(c,
        ':' | 'A'..='Z' | '_' | 'a'..='z'
        | '\u{C0}'..='\u{D6}' | '\u{D8}'..='\u{F6}' | '\u{F8}'..='\u{2FF}'
        | '\u{370}'..='\u{37D}' | '\u{37F}'..='\u{1FFF}' | '\u{200C}'..='\u{200D}'
        | '\u{2070}'..='\u{218F}' | '\u{2C00}'..='\u{2FEF}' | '\u{3001}'..='\u{D7FF}'
        | '\u{F900}'..='\u{FDCF}' | '\u{FDF0}'..='\u{FFFD}' | '\u{10000}'..='\u{EFFFF}')
}

/// `NameChar` of XML 1.0 (fifth edition).
fn is_name_char(c: char) -> bool {
    is_name_start_char(c)
        || matches!(c,
            '-' | '.' | '0'..='9' | '\u{B7}' | '\u{300}'..='\u{36F}' | '\u{203F}'..='\u{2040}')
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const DEPTH: usize = 64;

    fn parse(xml: &str) -> Value {
        match to_json(xml.as_bytes(), DEPTH) {
            Ok(v) => v,
            Err(e) => panic!("{xml:?} failed: {e}"),
        }
    }

    fn err(xml: &[u8]) -> XmlError {
        match to_json(xml, DEPTH) {
            Ok(v) => panic!("{:?} parsed as {v}", String::from_utf8_lossy(xml)),
            Err(e) => e,
        }
    }

    fn at<'a>(v: &'a Value, pointer: &str) -> &'a Value {
        v.pointer(pointer)
            .unwrap_or_else(|| panic!("no {pointer} in {v}"))
    }

    const BEDS24: &str = r#"<bookings datefrom="2019-08-01" dateto="2019-08-03">
 <booking id="13300894" action=""><propId>1</propId><roomId>1</roomId><status>Confirmed</status>
  <firstNight>2019-07-30</firstNight><lastNight>2019-08-06</lastNight><numAdult>2</numAdult>
  <price>2040.00</price><guestFirstName>John</guestFirstName><guestName>Doe</guestName></booking>
 <booking id="13300895" action=""><propId>1</propId><status>Cancelled</status></booking>
</bookings>"#;

    #[test]
    fn beds24_legacy_fixture() {
        let v = parse(BEDS24);
        assert_eq!(at(&v, "/bookings/@datefrom"), "2019-08-01");
        assert_eq!(at(&v, "/bookings/@dateto"), "2019-08-03");
        assert_eq!(
            at(&v, "/bookings/booking").as_array().map(Vec::len),
            Some(2)
        );
        assert_eq!(at(&v, "/bookings/booking/0/@id"), "13300894");
        assert_eq!(at(&v, "/bookings/booking/0/@action"), "");
        assert_eq!(at(&v, "/bookings/booking/0/price"), "2040.00");
        assert_eq!(at(&v, "/bookings/booking/0/numAdult"), "2");
        assert_eq!(at(&v, "/bookings/booking/1/status"), "Cancelled");
        assert_eq!(at(&v, "/bookings/booking/1/@id"), "13300895");
        assert!(v.pointer("/bookings/#text").is_none());
        assert_eq!(v.as_object().map(Map::len), Some(1));
    }

    const REZGO_BOOKING: &str = r#"<booking><trans_num>1B4M7R2K1K</trans_num><status>3</status><first_name><![CDATA[Zoë & "Bob" <b>]]></first_name></booking>"#;

    #[test]
    fn rezgo_single_booking_is_an_object() {
        let xml = format!("<response><total>1</total>{REZGO_BOOKING}</response>");
        let v = parse(&xml);
        assert_eq!(at(&v, "/response/total"), "1");
        assert!(at(&v, "/response/booking").is_object());
        assert_eq!(at(&v, "/response/booking/trans_num"), "1B4M7R2K1K");
        assert_eq!(at(&v, "/response/booking/status"), "3");
        assert_eq!(at(&v, "/response/booking/first_name"), r#"Zoë & "Bob" <b>"#);
    }

    #[test]
    fn rezgo_two_bookings_are_an_array() {
        let xml = format!(
            "<response><total>2</total>{REZGO_BOOKING}{}</response>",
            REZGO_BOOKING.replace("1B4M7R2K1K", "SECOND")
        );
        let v = parse(&xml);
        let bookings = at(&v, "/response/booking");
        assert_eq!(bookings.as_array().map(Vec::len), Some(2));
        assert_eq!(at(&v, "/response/booking/0/trans_num"), "1B4M7R2K1K");
        assert_eq!(at(&v, "/response/booking/1/trans_num"), "SECOND");
        assert_eq!(
            at(&v, "/response/booking/1/first_name"),
            r#"Zoë & "Bob" <b>"#
        );
    }

    #[test]
    fn rezgo_no_bookings_has_no_key() {
        let v = parse("<response><total>0</total></response>");
        assert_eq!(v, json!({"response": {"total": "0"}}));
        assert!(v.pointer("/response/booking").is_none());
    }

    #[test]
    fn repeated_names_interleaved_keep_document_order() {
        let v = parse("<r><b>1</b><c/><b>2</b><b>3</b></r>");
        assert_eq!(v, json!({"r": {"b": ["1", "2", "3"], "c": ""}}));
    }

    #[test]
    fn mixed_content_with_attributes() {
        let v = parse(r#"<a x="1">hi<b>2</b></a>"#);
        assert_eq!(v, json!({"a": {"@x": "1", "b": "2", "#text": "hi"}}));
        let v = parse("<p> one <i>x</i>\n two <i>y</i>  </p>");
        assert_eq!(v, json!({"p": {"i": ["x", "y"], "#text": "one two"}}));
        let v = parse(r#"<a x="1">  only text  </a>"#);
        assert_eq!(v, json!({"a": {"@x": "1", "#text": "only text"}}));
        let v = parse(r#"<a x="1">   </a>"#);
        assert_eq!(v, json!({"a": {"@x": "1"}}));
    }

    #[test]
    fn attributes_and_children_with_same_name_do_not_clash() {
        let v = parse(r#"<b id="1"><id>2</id></b>"#);
        assert_eq!(v, json!({"b": {"@id": "1", "id": "2"}}));
    }

    #[test]
    fn entities_and_char_refs_decoded() {
        let v = parse(
            "<a>&lt;b&gt; &amp; &quot;q&quot; &apos;s&apos; caf&#233; caf&#xE9; &#x1F600;</a>",
        );
        assert_eq!(v, json!({"a": "<b> & \"q\" 's' café café 😀"}));
        let v = parse(r#"<a t="x &amp; y &#233; &lt;"/>"#);
        assert_eq!(v, json!({"a": {"@t": "x & y é <"}}));
    }

    #[test]
    fn cdata_merges_with_adjacent_text() {
        let v = parse("<a> x <![CDATA[ & y ]]>z </a>");
        assert_eq!(v, json!({"a": "x  & y z"}));
        let v = parse("<a><![CDATA[]]></a>");
        assert_eq!(v, json!({"a": ""}));
    }

    #[test]
    fn whitespace_handling() {
        let v = parse(
            "\n  <r>\n  <a>  padded \t text  </a>\n  <b>\r\nline1\r\nline2\r\n</b>\n</r>\n  ",
        );
        assert_eq!(
            v,
            json!({"r": {"a": "padded \t text", "b": "line1\nline2"}})
        );
        // A no-break space is not XML whitespace and is kept.
        let v = parse("<a>\u{A0}x\u{A0}</a>");
        assert_eq!(v, json!({"a": "\u{A0}x\u{A0}"}));
        // Attribute values are normalised, not trimmed.
        let v = parse("<a v=\" x\ty \"/>");
        assert_eq!(v, json!({"a": {"@v": " x y "}}));
    }

    #[test]
    fn text_is_never_a_number_or_boolean() {
        let v = parse("<r><n>3</n><f>2040.00</f><t>true</t><z>null</z></r>");
        assert_eq!(
            v,
            json!({"r": {"n": "3", "f": "2040.00", "t": "true", "z": "null"}})
        );
    }

    #[test]
    fn empty_elements() {
        assert_eq!(parse("<a/>"), json!({"a": ""}));
        assert_eq!(parse("<a></a>"), json!({"a": ""}));
        assert_eq!(parse("<a>   </a>"), json!({"a": ""}));
        assert_eq!(
            parse("<r><a/><b></b></r>"),
            json!({"r": {"a": "", "b": ""}})
        );
        assert_eq!(parse(r#"<a id="7"/>"#), json!({"a": {"@id": "7"}}));
    }

    #[test]
    fn bom_declaration_comments_pi_doctype_ignored() {
        let mut bytes = vec![0xEF, 0xBB, 0xBF];
        bytes.extend_from_slice(
            b"<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<!-- c --><?pi x?>\n\
              <!DOCTYPE r>\n<r><!-- in -->a<!-- b -->b<?p?></r><!-- after -->\n",
        );
        assert_eq!(to_json(&bytes, DEPTH).ok(), Some(json!({"r": "ab"})));
        // Positions count the BOM.
        assert!(matches!(
            to_json(b"\xEF\xBB\xBF<a/><b/>", DEPTH),
            Err(XmlError::SeveralRoots { position: 7, .. })
        ));
        assert!(matches!(
            to_json(b"\xEF\xBB\xBF<a>\xFF</a>", DEPTH),
            Err(XmlError::InvalidUtf8 { position: 6 })
        ));
        assert_eq!(
            parse("<?xml version='1.0' encoding='us-ascii'?><r/>"),
            json!({"r": ""})
        );
    }

    #[test]
    fn namespace_prefixes_kept() {
        let v = parse(
            r#"<soap:Envelope xmlns:soap="http://schemas.xmlsoap.org/soap/envelope/"><soap:Body><x:r xmlns:x="u">1</x:r></soap:Body></soap:Envelope>"#,
        );
        assert_eq!(
            at(&v, "/soap:Envelope/@xmlns:soap"),
            "http://schemas.xmlsoap.org/soap/envelope/"
        );
        assert_eq!(at(&v, "/soap:Envelope/soap:Body/x:r/#text"), "1");
    }

    #[test]
    fn error_unclosed_tag() {
        assert!(matches!(
            err(b"<a><b></b>"),
            XmlError::Malformed { position: 0, .. }
        ));
        assert!(matches!(err(b"<a><b"), XmlError::Malformed { .. }));
        assert!(matches!(
            err(b"<a attr=\"x></a>"),
            XmlError::Malformed { .. }
        ));
    }

    #[test]
    fn error_mismatched_close() {
        let e = err(b"<a><b></c></a>");
        assert!(matches!(e, XmlError::Malformed { .. }), "{e:?}");
        assert!(matches!(err(b"</a>"), XmlError::Malformed { .. }));
    }

    #[test]
    fn error_bad_syntax() {
        for bad in [
            &b"<a>x & y</a>"[..],
            b"<a b=1/>",
            b"<a b='1' b='2'/>",
            b"<1a/>",
            b"<a><#text>x</#text></a>",
            b"<a @x='1'/>",
            b"<a>&#0;</a>",
            b"<a>&#xZZ;</a>",
            b"text<a/>",
        ] {
            let e = err(bad);
            assert!(matches!(e, XmlError::Malformed { .. }), "{e:?}");
        }
    }

    fn nested(depth: usize) -> String {
        let mut s = String::new();
        for _ in 0..depth {
            s.push_str("<e>");
        }
        for _ in 0..depth {
            s.push_str("</e>");
        }
        s
    }

    #[test]
    fn depth_limit() {
        assert!(to_json(nested(64).as_bytes(), 64).is_ok());
        let e = to_json(nested(65).as_bytes(), 64);
        assert!(
            matches!(
                e,
                Err(XmlError::TooDeep {
                    max_depth: 64,
                    position: 192
                })
            ),
            "{e:?}"
        );
        // An empty element counts as a level too.
        let s = format!("{}<e/>{}", "<e>".repeat(64), "</e>".repeat(64));
        assert!(matches!(
            to_json(s.as_bytes(), 64),
            Err(XmlError::TooDeep { .. })
        ));
        // Very deep hostile input fails fast instead of overflowing anything.
        assert!(matches!(
            to_json(nested(200_000).as_bytes(), 64),
            Err(XmlError::TooDeep { .. })
        ));
        // The parser itself has no recursion; the limit is what keeps the
        // *result* shallow enough to drop, print and serialise safely.
        assert!(to_json(nested(1_000).as_bytes(), usize::MAX).is_ok());
    }

    #[test]
    fn error_two_roots() {
        let e = err(b"<a/><b/>");
        assert!(
            matches!(&e, XmlError::SeveralRoots { name, position: 4 } if name == "b"),
            "{e:?}"
        );
        assert!(matches!(
            err(b"<a></a>\n<a></a>"),
            XmlError::SeveralRoots { .. }
        ));
    }

    #[test]
    fn error_trailing_garbage() {
        assert!(matches!(
            err(b"<a/>junk"),
            XmlError::TrailingGarbage { position: 4 }
        ));
        assert!(matches!(
            err(b"<a/>&amp;"),
            XmlError::TrailingGarbage { .. }
        ));
        assert!(matches!(
            err(b"<a/><![CDATA[x]]>"),
            XmlError::TrailingGarbage { .. }
        ));
        assert!(to_json(b"<a/>\n \t<!-- ok --><?pi?>\n", DEPTH).is_ok());
    }

    #[test]
    fn error_no_root() {
        for input in [
            &b""[..],
            b"   \n",
            b"<?xml version=\"1.0\"?>",
            b"<!-- only a comment -->",
            b"\xEF\xBB\xBF",
        ] {
            let e = err(input);
            assert!(matches!(e, XmlError::NoRoot), "{e:?}");
        }
    }

    #[test]
    fn error_encoding() {
        let e = err(b"<?xml version=\"1.0\" encoding=\"ISO-8859-1\"?><a>caf\xE9</a>");
        assert!(
            matches!(&e, XmlError::UnsupportedEncoding(name) if name == "ISO-8859-1"),
            "{e:?}"
        );
        let e = err(b"<?xml version=\"1.0\" encoding=\"windows-1252\"?><a/>");
        assert!(matches!(&e, XmlError::UnsupportedEncoding(n) if n == "windows-1252"));
        assert!(e.to_string().contains("windows-1252"));
        assert!(matches!(
            err(b"<a>\xFF</a>"),
            XmlError::InvalidUtf8 { position: 3 }
        ));
        assert!(matches!(
            err(b"\xFF\xFE<\0a\0/\0>\0"),
            XmlError::UnsupportedEncoding(n) if n == "UTF-16"
        ));
    }

    #[test]
    fn doctype_entities_are_not_expanded() {
        let e = err(br#"<!DOCTYPE r [<!ENTITY x "expanded">]><r>&x;</r>"#);
        assert!(
            matches!(&e, XmlError::UndeclaredEntity { name, .. } if name == "x"),
            "{e:?}"
        );
        let e = err(br#"<!DOCTYPE r [<!ENTITY x "expanded">]><r a="&x;"/>"#);
        assert!(
            matches!(&e, XmlError::UndeclaredEntity { name, .. } if name == "x"),
            "{e:?}"
        );
        let e = err(br#"<!DOCTYPE r [<!ENTITY xxe SYSTEM "file:///etc/passwd">]><r>&xxe;</r>"#);
        assert!(matches!(e, XmlError::UndeclaredEntity { .. }), "{e:?}");
        assert!(matches!(
            err(b"<r>&nbsp;</r>"),
            XmlError::UndeclaredEntity { .. }
        ));
        // A DOCTYPE alone is fine.
        assert_eq!(
            parse(r#"<!DOCTYPE r [<!ENTITY x "y">]><r>z</r>"#),
            json!({"r": "z"})
        );
    }

    #[test]
    fn billion_laughs_fails_quickly() {
        let mut doc =
            String::from("<?xml version=\"1.0\"?>\n<!DOCTYPE lolz [\n <!ENTITY lol \"lol\">\n");
        doc.push_str(" <!ELEMENT lolz (#PCDATA)>\n");
        for i in 1..=9 {
            let prev = if i == 1 {
                "lol".to_owned()
            } else {
                format!("lol{}", i - 1)
            };
            let body = format!("&{prev};").repeat(10);
            doc.push_str(&format!(" <!ENTITY lol{i} \"{body}\">\n"));
        }
        doc.push_str("]>\n<lolz>&lol9;</lolz>\n");
        let started = std::time::Instant::now();
        let e = err(doc.as_bytes());
        assert!(
            matches!(&e, XmlError::UndeclaredEntity { name, .. } if name == "lol9"),
            "{e:?}"
        );
        assert!(started.elapsed() < std::time::Duration::from_secs(1));
    }

    #[test]
    fn errors_display_positions() {
        let e = err(b"<a><b></c></a>");
        let msg = e.to_string();
        assert!(msg.starts_with("malformed XML at byte "), "{msg}");
    }

    /// Tiny deterministic generator so the garbage loop needs no dependency.
    struct XorShift(u64);
    impl XorShift {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn below(&mut self, n: usize) -> usize {
            usize::try_from(self.next() % n as u64).unwrap_or(0)
        }
    }

    #[test]
    fn garbage_never_panics() {
        let fixtures = [
            BEDS24.to_owned(),
            format!("<response><total>1</total>{REZGO_BOOKING}</response>"),
            r#"<!DOCTYPE r [<!ENTITY x "y">]><?xml version="1.0"?><r a="&amp;">&x;<![CDATA[z]]><!--c--></r>"#
                .to_owned(),
        ];
        // Every truncation of every fixture.
        for f in &fixtures {
            let bytes = f.as_bytes();
            for end in 0..=bytes.len() {
                let _ = to_json(&bytes[..end], DEPTH);
                let _ = to_json(&bytes[end..], DEPTH);
            }
        }
        // Random soup of XML-ish tokens and raw bytes.
        let tokens: [&[u8]; 30] = [
            b"<?xml ",
            b" encoding='latin1'",
            b"<",
            b">",
            b"/",
            b"</",
            b"/>",
            b"<a",
            b"<b ",
            b"</a>",
            b"a",
            b"=",
            b"\"",
            b"'",
            b"&",
            b";",
            b"&amp;",
            b"&#",
            b"&#x",
            b"<![CDATA[",
            b"]]>",
            b"<!--",
            b"-->",
            b"<?",
            b"?>",
            b"<!DOCTYPE",
            b"[",
            b"]",
            b" ",
            b"\xEF\xBB\xBF",
        ];
        let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
        for _ in 0..400 {
            let len = rng.below(40);
            let mut input = Vec::new();
            for _ in 0..len {
                if rng.below(5) == 0 {
                    input.push(u8::try_from(rng.below(256)).unwrap_or(0));
                } else {
                    input.extend_from_slice(tokens[rng.below(tokens.len())]);
                }
            }
            let _ = to_json(&input, DEPTH);
            let _ = to_json(&input, 2);
            let _ = to_json(&input, 0);
        }
        // Mutations of a valid document: flip random bytes.
        let base = fixtures[1].as_bytes();
        for _ in 0..300 {
            let mut input = base.to_vec();
            for _ in 0..=rng.below(4) {
                let i = rng.below(input.len());
                input[i] = u8::try_from(rng.below(256)).unwrap_or(0);
            }
            let _ = to_json(&input, DEPTH);
        }
    }
}
