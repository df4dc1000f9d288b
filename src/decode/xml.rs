//! XML bodies: an object with the root's name as its key, attributes as
//! `@name`, text beside attributes or children as `#text`. No entity beyond
//! the predefined five is expanded and no DTD is read; depth is bounded.

use quick_xml::events::{BytesStart, Event};
use serde_json::{Map, Value};

use super::{DecodeError, Fields, is_blank, shorten};

/// XML nested deeper than this is refused: no real webhook nests so deep, and
/// the bound keeps memory and the decoder's work per element predictable.
const MAX_XML_DEPTH: usize = 128;

/// An element being read: its attributes and children so far, and its text.
struct Element {
    name: String,
    fields: Fields,
    text: String,
    /// Where the current text run (text between two tags) starts in `text`.
    run_start: usize,
    /// The current run holds CDATA or a reference: kept even if it is blank.
    run_significant: bool,
}

impl Element {
    fn open(start: &BytesStart<'_>) -> Result<Self, String> {
        let name = utf8(start.name().as_ref(), "element name")?;
        let mut fields = Fields::default();
        let mut attributes = start.attributes();
        // quick-xml's own duplicate check compares each attribute with every
        // earlier one (quadratic); the map insert below finds duplicates instead.
        attributes.with_checks(false);
        for attribute in attributes {
            let attribute = attribute.map_err(|e| e.to_string())?;
            let key = format!("@{}", utf8(attribute.key.as_ref(), "attribute name")?);
            let value = attribute.unescape_value().map_err(|e| e.to_string())?;
            if fields
                .map
                .insert(key, Value::String(value.into_owned()))
                .is_some()
            {
                return Err(format!(
                    "duplicate attribute `{}` on `<{}>`",
                    shorten(&utf8(attribute.key.as_ref(), "attribute name")?),
                    shorten(&name)
                ));
            }
        }
        Ok(Self {
            name,
            fields,
            text: String::new(),
            run_start: 0,
            run_significant: false,
        })
    }

    /// Ends the current text run at a tag: a run of only whitespace is
    /// indentation between elements, not content, and is dropped.
    fn end_run(&mut self) {
        let run = &self.text[self.run_start..];
        if !self.run_significant
            && run
                .bytes()
                .all(|b| matches!(b, b' ' | b'\t' | b'\r' | b'\n'))
        {
            self.text.truncate(self.run_start);
        }
        self.run_start = self.text.len();
        self.run_significant = false;
    }

    fn close(mut self) -> (String, Value) {
        self.end_run();
        if self.fields.map.is_empty() {
            // Text-only (or empty, giving "") element: a string.
            return (self.name, Value::String(self.text));
        }
        if !self.text.is_empty() {
            self.fields
                .map
                .insert("#text".to_owned(), Value::String(self.text));
        }
        (self.name, Value::Object(self.fields.map))
    }
}

fn utf8(bytes: &[u8], what: &str) -> Result<String, String> {
    std::str::from_utf8(bytes)
        .map(str::to_owned)
        .map_err(|_| format!("{what} is not valid UTF-8"))
}

/// 1-based line and column (in characters) of a byte offset.
fn line_col(body: &[u8], offset: u64) -> (usize, usize) {
    let end = usize::try_from(offset)
        .unwrap_or(usize::MAX)
        .min(body.len());
    let before = &body[..end];
    let line = before.iter().filter(|b| **b == b'\n').count() + 1;
    let line_start = before
        .iter()
        .rposition(|b| *b == b'\n')
        .map_or(0, |i| i + 1);
    // Count characters, not bytes: every byte that does not continue a UTF-8 sequence.
    let column = before[line_start..]
        .iter()
        .filter(|b| (**b & 0xC0) != 0x80)
        .count()
        + 1;
    (line, column)
}

pub(super) fn parse(body: &[u8]) -> Result<Value, DecodeError> {
    if is_blank(body) {
        return Err(DecodeError::Empty { expected: "XML" });
    }
    let at = |offset: u64, message: String| {
        let (line, column) = line_col(body, offset);
        DecodeError::Xml {
            line,
            column,
            message,
        }
    };
    let mut reader = quick_xml::Reader::from_reader(body);
    // Both are the defaults; set so that a change of default cannot silently
    // accept `<a></b>` or a bare `&`.
    reader.config_mut().check_end_names = true;
    reader.config_mut().allow_dangling_amp = false;
    let mut stack: Vec<Element> = Vec::new();
    let mut root: Option<(String, Value)> = None;
    loop {
        let start = reader.buffer_position();
        let event = reader
            .read_event()
            .map_err(|e| at(reader.error_position(), e.to_string()))?;
        match event {
            Event::Start(ref tag) | Event::Empty(ref tag) => {
                let empty = matches!(event, Event::Empty(_));
                if root.is_some() {
                    return Err(at(start, "a second root element".to_owned()));
                }
                if !empty && stack.len() >= MAX_XML_DEPTH {
                    return Err(at(
                        start,
                        format!("elements nested deeper than {MAX_XML_DEPTH}"),
                    ));
                }
                if let Some(parent) = stack.last_mut() {
                    parent.end_run();
                }
                let element = Element::open(tag).map_err(|m| at(start, m))?;
                if empty {
                    attach(&mut stack, &mut root, element.close());
                } else {
                    stack.push(element);
                }
            }
            Event::End(_) => {
                // quick-xml has already checked that the name matches.
                let Some(element) = stack.pop() else {
                    return Err(at(start, "end tag without a start tag".to_owned()));
                };
                attach(&mut stack, &mut root, element.close());
            }
            Event::Text(text) => {
                let text = text
                    .decode()
                    .map_err(|_| at(start, "text is not valid UTF-8".to_owned()))?;
                match stack.last_mut() {
                    Some(element) => element.text.push_str(&text),
                    None if text.bytes().all(|b| b.is_ascii_whitespace()) => {}
                    None => return Err(at(start, "text outside the root element".to_owned())),
                }
            }
            Event::CData(data) => {
                let data = data
                    .decode()
                    .map_err(|_| at(start, "CDATA is not valid UTF-8".to_owned()))?;
                let Some(element) = stack.last_mut() else {
                    return Err(at(start, "CDATA outside the root element".to_owned()));
                };
                element.text.push_str(&data);
                element.run_significant = true;
            }
            Event::GeneralRef(reference) => {
                let Some(element) = stack.last_mut() else {
                    return Err(at(start, "reference outside the root element".to_owned()));
                };
                push_reference(&reference, &mut element.text).map_err(|m| at(start, m))?;
                element.run_significant = true;
            }
            Event::DocType(doctype) => {
                // Entities are never expanded (an unknown `&name;` is an error
                // below); refusing declarations makes that explicit to the sender.
                if doctype.windows(8).any(|w| w == b"<!ENTITY") {
                    return Err(at(
                        start,
                        "entity declarations in DOCTYPE are not allowed".to_owned(),
                    ));
                }
            }
            Event::Decl(_) | Event::PI(_) | Event::Comment(_) => {}
            Event::Eof => break,
        }
    }
    if let Some(open) = stack.last() {
        return Err(at(
            body.len() as u64,
            format!("`<{}>` is not closed", shorten(&open.name)),
        ));
    }
    match root {
        Some((name, value)) => {
            let mut map = Map::new();
            map.insert(name, value);
            Ok(Value::Object(map))
        }
        None => Err(at(body.len() as u64, "no root element".to_owned())),
    }
}

/// Appends what a reference stands for: a character reference, or one of the
/// five predefined entities. Anything else is refused: there is no DTD to
/// define it, and none is ever fetched.
fn push_reference(
    reference: &quick_xml::events::BytesRef<'_>,
    out: &mut String,
) -> Result<(), String> {
    let name = reference
        .decode()
        .map_err(|_| "reference is not valid UTF-8".to_owned())?;
    if reference.is_char_ref() {
        return match reference.resolve_char_ref() {
            Ok(Some(c)) => {
                out.push(c);
                Ok(())
            }
            _ => Err(format!(
                "invalid character reference `&{};`",
                shorten(&name)
            )),
        };
    }
    match quick_xml::escape::resolve_predefined_entity(&name) {
        Some(text) => {
            out.push_str(text);
            Ok(())
        }
        None => Err(format!(
            "unknown entity `&{};` (only &lt; &gt; &amp; &apos; &quot; and character references are allowed)",
            shorten(&name)
        )),
    }
}

/// A closed element joins its parent, or becomes the root.
fn attach(
    stack: &mut [Element],
    root: &mut Option<(String, Value)>,
    (name, value): (String, Value),
) {
    match stack.last_mut() {
        Some(parent) => parent.fields.push(name, value),
        None => *root = Some((name, value)),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use crate::decode::testing::*;

    #[tokio::test]
    async fn peer_xml_fixture_maps_to_the_expected_object() {
        let got = ok("application/xml", APP_XML).await;
        assert_eq!(
            got.payload,
            json!({"app": {
                "users": {"user": [
                    {"@id": "1", "@name": "Jeff"},
                    {"@id": "2", "@name": "Sally"}
                ]},
                "messages": {"message": {
                    "@id": "1", "@from_user": "1", "@to_user": "2", "#text": "Hello!!"
                }}
            }})
        );
        assert!(got.facts.is_empty());
    }

    #[tokio::test]
    async fn xml_mapping_rules() {
        let cases: &[(&str, &str, Value)] = &[
            ("text/xml", "<a>hi</a>", json!({"a": "hi"})),
            ("text/xml", "<a/>", json!({"a": ""})),
            ("text/xml", "<a></a>", json!({"a": ""})),
            ("text/xml", "<a>  \n </a>", json!({"a": ""})),
            // Text is kept as written, only whitespace-only runs between tags go.
            ("text/xml", "<a> hi </a>", json!({"a": " hi "})),
            (
                "text/xml",
                "<a>\n  <b>1</b>\n  <b>2</b>\n  <c/>\n</a>",
                json!({"a": {"b": ["1", "2"], "c": ""}}),
            ),
            (
                "text/xml",
                "<a>x<b>1</b>y</a>",
                json!({"a": {"b": "1", "#text": "xy"}}),
            ),
            ("text/xml", "<a k=\"v\"/>", json!({"a": {"@k": "v"}})),
            (
                "text/xml",
                "<a k='v &amp; w'>t</a>",
                json!({"a": {"@k": "v & w", "#text": "t"}}),
            ),
            (
                "application/atom+xml; charset=utf-8",
                "<?xml version=\"1.0\"?><!-- c --><ns:a xmlns:ns=\"urn:x\"><ns:b>x &amp; &#65;&#x42; &lt;</ns:b></ns:a>",
                json!({"ns:a": {"@xmlns:ns": "urn:x", "ns:b": "x & AB <"}}),
            ),
            (
                "text/xml",
                "<a><![CDATA[ <raw> ]]></a>",
                json!({"a": " <raw> "}),
            ),
            ("text/xml", "<a>&#32;</a>", json!({"a": " "})),
            ("text/xml", "<a>&amp; &amp;</a>", json!({"a": "& &"})),
            (
                "text/xml",
                "<!DOCTYPE a SYSTEM \"a.dtd\">\n<a>1</a>\n",
                json!({"a": "1"}),
            ),
            ("text/xml", "\u{FEFF}<a>1</a>", json!({"a": "1"})),
            (
                "text/xml",
                "<a><b><c>deep</c></b><b/></a>",
                json!({"a": {"b": [{"c": "deep"}, ""]}}),
            ),
        ];
        for (ct, body, want) in cases {
            let got = ok(ct, body.as_bytes()).await;
            assert_eq!(got.payload, *want, "{body}");
        }
    }

    #[tokio::test]
    async fn xml_errors_carry_their_position() {
        let cases: &[(&[u8], &str)] = &[
            (b" \n", "no XML in the body: it holds only whitespace"),
            (
                b"<a>\n  <b></c>\n</a>",
                "invalid XML at line 2 column 6: ill-formed document: expected `</b>`, but `</c>` was found",
            ),
            (
                b"<a>",
                "invalid XML at line 1 column 4: `<a>` is not closed",
            ),
            (
                b"<a></a><b/>",
                "invalid XML at line 1 column 8: a second root element",
            ),
            (
                b"hello",
                "invalid XML at line 1 column 1: text outside the root element",
            ),
            (
                b"<a/>x",
                "invalid XML at line 1 column 5: text outside the root element",
            ),
            (
                b"<!-- only -->",
                "invalid XML at line 1 column 14: no root element",
            ),
            (
                b"<a>&nope;</a>",
                "invalid XML at line 1 column 4: unknown entity `&nope;` (only &lt; &gt; &amp; &apos; &quot; and character references are allowed)",
            ),
            (
                b"<a>&#0;</a>",
                "invalid XML at line 1 column 4: invalid character reference `&#0;`",
            ),
            (
                b"<!DOCTYPE a [<!ENTITY x \"y\">]>\n<a>&x;</a>",
                "invalid XML at line 1 column 1: entity declarations in DOCTYPE are not allowed",
            ),
            (
                b"<a k=\"1\" k=\"2\"/>",
                "invalid XML at line 1 column 1: duplicate attribute `k` on `<a>`",
            ),
            (
                b"<a>\xC3</a>",
                "invalid XML at line 1 column 4: text is not valid UTF-8",
            ),
            (
                b"<\xC3\xA9>\n<b \xFF=\"1\"/></\xC3\xA9>",
                "invalid XML at line 2 column 1: attribute name is not valid UTF-8",
            ),
        ];
        for (body, want) in cases {
            assert_eq!(
                err("application/xml", body).await,
                *want,
                "{}",
                String::from_utf8_lossy(body)
            );
        }
    }

    #[tokio::test]
    async fn deep_xml_is_refused() {
        let deep = "<a>".repeat(100_000);
        assert_eq!(
            err("application/xml", deep.as_bytes()).await,
            "invalid XML at line 1 column 385: elements nested deeper than 128"
        );
        let fine = format!("{}{}", "<a>".repeat(128), "</a>".repeat(128));
        assert!(
            ok("application/xml", fine.as_bytes())
                .await
                .payload
                .is_object()
        );
    }
}
