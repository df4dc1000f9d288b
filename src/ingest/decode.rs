//! Body decoding (SPEC §4.4): the raw bytes of a verified request become the
//! `payload` that conditions and templates see.
//!
//! This module owns the mapping from a `Content-Type` and a body to a JSON value:
//! JSON and `+json` as is; form-urlencoded as an object of strings (repeated keys
//! → arrays); XML as an object (root name → content, attributes `@name`, text
//! next to attributes or children `#text`); multipart as its fields. The source's
//! `json_fields` turn form and multipart fields holding JSON text into values.
//! Anything else is `null`, with a fact saying why. A body that does not parse
//! as its declared type is a [`DecodeError`] whose message (with its position) is
//! the text of the 400 answer.
//!
//! It depends on no other hookwire module. Every decoder is linear in the body
//! size and bounded in depth, so no body can make it panic, overflow the stack or
//! spin: the body is attacker-controlled.

use std::collections::HashSet;

use bytes::Bytes;
use quick_xml::events::{BytesStart, Event};
use serde_json::{Map, Value};

/// A decoded body and what a person should know about how it was decoded.
#[derive(Debug, Clone, PartialEq)]
pub struct Decoded {
    pub payload: Value,
    /// Decoding facts that explain a miss, for the match trace and `hookwire test`,
    /// e.g. "payload is null: Content-Type was text/plain" or
    /// "form field `payload` was decoded as JSON (json_fields)".
    pub facts: Vec<String>,
    /// The payload is the body parsed as JSON, nothing more: the store keeps
    /// the body only and parses it again when the event is read ([`json_body`]).
    pub payload_is_body: bool,
}

/// Why a body does not parse as its declared type. The `Display` text of each
/// variant is the message of the 400 answer, so it says where and what.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// The content type promises a document and the body holds only
    /// whitespace. (A body with no bytes at all is no document: its payload is
    /// null, see [`decode`].)
    #[error("no {expected} in the body: it holds only whitespace")]
    Empty { expected: &'static str },
    #[error("invalid JSON at line {line} column {column}: {message}")]
    Json {
        line: usize,
        column: usize,
        message: String,
    },
    /// A form or multipart field that should hold JSON (`json_fields`, or a part
    /// typed as JSON) does not; the position is inside the field's text.
    #[error("{kind} field `{field}` is not valid JSON at line {line} column {column}: {message}")]
    JsonField {
        /// "form" or "multipart".
        kind: &'static str,
        field: String,
        line: usize,
        column: usize,
        message: String,
    },
    /// Percent-decoding produced bytes that are not UTF-8 (in the name or the value).
    #[error("form field `{field}` is not valid UTF-8 after percent-decoding")]
    FormUtf8 { field: String },
    #[error("invalid XML at line {line} column {column}: {message}")]
    Xml {
        line: usize,
        column: usize,
        message: String,
    },
    /// The multipart `Content-Type` itself is unusable (no boundary).
    #[error("invalid multipart body: {0}")]
    MultipartType(&'static str),
    /// Part `part` (1-based) of a multipart body is broken.
    #[error("invalid multipart body at part {part}: {message}")]
    Multipart { part: usize, message: String },
}

/// XML nested deeper than this is refused: no real webhook nests so deep, and
/// the bound keeps memory and the decoder's work per element predictable.
const MAX_XML_DEPTH: usize = 128;

/// Field names echoed in messages are cut to this many characters, so a
/// megabyte-long name does not come back in a 400 body or a trace.
const MAX_NAME_IN_MESSAGE: usize = 64;

/// The decoders, chosen by media type (SPEC §4.4).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Json,
    Form,
    Xml,
    Multipart,
    Other,
}

/// `media` is lowercase, without parameters.
fn kind_of(media: &str) -> Kind {
    match media {
        "application/json" => Kind::Json,
        "application/x-www-form-urlencoded" => Kind::Form,
        "application/xml" | "text/xml" => Kind::Xml,
        "multipart/form-data" => Kind::Multipart,
        m if m.ends_with("+json") => Kind::Json,
        m if m.ends_with("+xml") => Kind::Xml,
        _ => Kind::Other,
    }
}

/// The media type of a `Content-Type` value: lowercase, parameters dropped.
fn media_type(content_type: &str) -> String {
    content_type
        .split_once(';')
        .map_or(content_type, |(media, _)| media)
        .trim()
        .to_ascii_lowercase()
}

/// Decodes `body` according to `content_type` (the raw header value, parameters
/// included). `json_fields` names the form/multipart fields whose text is JSON.
pub async fn decode(
    content_type: Option<&str>,
    body: Bytes,
    json_fields: &[String],
) -> Result<Decoded, DecodeError> {
    let mut facts = Vec::new();
    let Some(content_type) = content_type else {
        facts.push(if body.is_empty() {
            "payload is null: the body is empty".to_owned()
        } else {
            "payload is null: no Content-Type header".to_owned()
        });
        return Ok(Decoded {
            payload: Value::Null,
            facts,
            payload_is_body: false,
        });
    };
    let media = media_type(content_type);
    let kind = kind_of(&media);
    // Pings and triggers often send a content type and no body at all: that
    // is an event without a payload, not a malformed document. (An empty
    // form is a form without fields, `{}`.)
    if body.is_empty() && kind != Kind::Form {
        facts.push(format!(
            "payload is null: the body is empty (Content-Type was {})",
            shorten(&media)
        ));
        return Ok(Decoded {
            payload: Value::Null,
            facts,
            payload_is_body: false,
        });
    }
    let payload = match kind {
        Kind::Json => json(&body)?,
        Kind::Form => form(&body, json_fields, &mut facts)?,
        Kind::Xml => xml(&body)?,
        Kind::Multipart => multipart(content_type, body, json_fields, &mut facts).await?,
        Kind::Other => {
            facts.push(if media.is_empty() {
                "payload is null: the Content-Type header is empty".to_owned()
            } else {
                format!("payload is null: Content-Type was {}", shorten(&media))
            });
            Value::Null
        }
    };
    Ok(Decoded {
        payload,
        facts,
        payload_is_body: kind == Kind::Json,
    })
}

fn is_blank(body: &[u8]) -> bool {
    body.iter().all(u8::is_ascii_whitespace)
}

/// Cuts `name` to [`MAX_NAME_IN_MESSAGE`] characters for use in a message.
fn shorten(name: &str) -> String {
    match name.char_indices().nth(MAX_NAME_IN_MESSAGE) {
        Some((cut, _)) => format!("{}…", &name[..cut]),
        None => name.to_owned(),
    }
}

// ---------------------------------------------------------------------------
// JSON

fn json(body: &[u8]) -> Result<Value, DecodeError> {
    json_body(body)
}

/// A JSON body as its payload: what [`decode`] gives for a JSON content type.
pub fn json_body(body: &[u8]) -> Result<Value, DecodeError> {
    // RFC 8259 §8.1 lets a parser ignore a byte order mark; some senders write one.
    let body = body.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(body);
    if is_blank(body) {
        return Err(DecodeError::Empty { expected: "JSON" });
    }
    // serde_json's default recursion limit (128) stays on: deep nesting is an
    // error, never a stack overflow.
    strict_json(serde_json::from_slice(body)).map_err(|e| DecodeError::Json {
        line: e.line(),
        column: e.column(),
        message: json_message(&e),
    })
}

/// A JSON object with a key twice is refused: parsers disagree on which copy
/// counts (first or last), so a rule and the program behind an action could
/// read different values from one payload. serde_json's `Value` keeps the last
/// silently; [`StrictValue`] is the same tree, built with the check.
fn strict_json(parsed: Result<StrictValue, serde_json::Error>) -> Result<Value, serde_json::Error> {
    parsed.map(|v| v.0)
}

struct StrictValue(Value);

impl<'de> serde::Deserialize<'de> for StrictValue {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(StrictVisitor).map(StrictValue)
    }
}

struct StrictVisitor;

impl<'de> serde::de::Visitor<'de> for StrictVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        // serde_json never yields a non-finite number; `from` maps one to null.
        Ok(Value::from(v))
    }
    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }
    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_some<D: serde::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(64));
        while let Some(StrictValue(v)) = seq.next_element()? {
            items.push(v);
        }
        Ok(Value::Array(items))
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut object = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            let StrictValue(v) = map.next_value()?;
            // One lookup per key (a check before the value would be two, and
            // makes parsing 40 % slower); the error points after the value.
            match object.entry(key) {
                serde_json::map::Entry::Vacant(e) => {
                    e.insert(v);
                }
                serde_json::map::Entry::Occupied(e) => {
                    return Err(serde::de::Error::custom(format_args!(
                        "duplicate key `{}`",
                        shorten(e.key())
                    )));
                }
            }
        }
        Ok(Value::Object(object))
    }
}

/// serde_json's message without its " at line L column C" tail: the position
/// is given separately, in the same words for every format.
fn json_message(e: &serde_json::Error) -> String {
    let text = e.to_string();
    let tail = format!(" at line {} column {}", e.line(), e.column());
    match text.strip_suffix(&tail) {
        Some(message) => message.to_owned(),
        None => text,
    }
}

/// Parses the text of a form or multipart field as JSON, recording why.
fn json_field(
    kind: &'static str,
    field: &str,
    text: &str,
    why: &str,
    facts: &mut Vec<String>,
) -> Result<Value, DecodeError> {
    let value = strict_json(serde_json::from_str(text)).map_err(|e| DecodeError::JsonField {
        kind,
        field: shorten(field),
        line: e.line(),
        column: e.column(),
        message: json_message(&e),
    })?;
    facts.push(format!(
        "{kind} field `{}` was decoded as JSON ({why})",
        shorten(field)
    ));
    Ok(value)
}

// ---------------------------------------------------------------------------
// Grouping of named values (form fields, multipart parts, XML children)

/// Named values in arrival order → an object; a name that repeats becomes an
/// array of its values, in order. Linear: the object is looked up, not scanned.
#[derive(Default)]
struct Fields {
    map: Map<String, Value>,
    /// Names whose value is an array made by repetition (a single value may
    /// itself be an array, e.g. a JSON field, and must not be appended to).
    repeated: HashSet<String>,
}

impl Fields {
    fn push(&mut self, name: String, value: Value) {
        match self.map.get_mut(&name) {
            None => {
                self.map.insert(name, value);
            }
            Some(existing) => {
                if self.repeated.contains(&name) {
                    if let Value::Array(items) = existing {
                        items.push(value);
                    }
                } else {
                    let first = existing.take();
                    *existing = Value::Array(vec![first, value]);
                    self.repeated.insert(name);
                }
            }
        }
    }

    /// A fact for each `json_fields` name the body did not carry: the likely
    /// reason a `$.payload…` path selects nothing.
    fn note_missing(&self, kind: &str, json_fields: &[String], facts: &mut Vec<String>) {
        for name in json_fields {
            if !self.map.contains_key(name) {
                facts.push(format!(
                    "json_fields names `{}`, but the {kind} body has no such field",
                    shorten(name)
                ));
            }
        }
    }
}

// ---------------------------------------------------------------------------
// application/x-www-form-urlencoded

fn form(
    body: &[u8],
    json_fields: &[String],
    facts: &mut Vec<String>,
) -> Result<Value, DecodeError> {
    let mut fields = Fields::default();
    // The same split as the WHATWG urlencoded parser (and `form_urlencoded`):
    // `&`-separated, empty pieces skipped, first `=` splits name and value.
    // Decoded here rather than with `form_urlencoded::parse` because that one
    // replaces invalid UTF-8 silently, and a mangled value must be an error.
    for piece in body.split(|b| *b == b'&').filter(|p| !p.is_empty()) {
        let (raw_name, raw_value) = match piece.iter().position(|b| *b == b'=') {
            Some(i) => (&piece[..i], &piece[i + 1..]),
            None => (piece, &[][..]),
        };
        let name =
            String::from_utf8(percent_decode(raw_name)).map_err(|e| DecodeError::FormUtf8 {
                field: shorten(&String::from_utf8_lossy(e.as_bytes())),
            })?;
        let text =
            String::from_utf8(percent_decode(raw_value)).map_err(|_| DecodeError::FormUtf8 {
                field: shorten(&name),
            })?;
        let value = if json_fields.contains(&name) {
            json_field("form", &name, &text, "json_fields", facts)?
        } else {
            Value::String(text)
        };
        fields.push(name, value);
    }
    fields.note_missing("form", json_fields, facts);
    Ok(Value::Object(fields.map))
}

/// `+` is a space and `%XX` a byte; a `%` not followed by two hex digits stays
/// as is (as browsers and `form_urlencoded` do).
fn percent_decode(raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while let Some(&b) = raw.get(i) {
        match b {
            b'+' => out.push(b' '),
            b'%' => {
                let hi = raw.get(i + 1).and_then(|c| hex_digit(*c));
                let lo = raw.get(i + 2).and_then(|c| hex_digit(*c));
                if let (Some(hi), Some(lo)) = (hi, lo) {
                    out.push(hi << 4 | lo);
                    i += 3;
                    continue;
                }
                out.push(b'%');
            }
            _ => out.push(b),
        }
        i += 1;
    }
    out
}

fn hex_digit(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

// ---------------------------------------------------------------------------
// XML

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

fn xml(body: &[u8]) -> Result<Value, DecodeError> {
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

// ---------------------------------------------------------------------------
// multipart/form-data

async fn multipart(
    content_type: &str,
    body: Bytes,
    json_fields: &[String],
    facts: &mut Vec<String>,
) -> Result<Value, DecodeError> {
    let boundary = multer::parse_boundary(content_type).map_err(|e| match e {
        multer::Error::NoBoundary => {
            DecodeError::MultipartType("the Content-Type has no boundary parameter")
        }
        _ => DecodeError::MultipartType("the Content-Type cannot be parsed for its boundary"),
    })?;
    if is_blank(&body) {
        return Err(DecodeError::Empty {
            expected: "multipart/form-data",
        });
    }
    let stream = futures_util::stream::once(async move { Ok::<Bytes, std::io::Error>(body) });
    let mut parts = multer::Multipart::new(stream, boundary);
    let mut fields = Fields::default();
    let mut part = 0;
    loop {
        part += 1;
        let broken = |e: multer::Error| DecodeError::Multipart {
            part,
            message: e.to_string(),
        };
        let Some(mut field) = parts.next_field().await.map_err(broken)? else {
            break;
        };
        let Some(name) = field.name().map(str::to_owned) else {
            return Err(DecodeError::Multipart {
                part,
                message: "the part has no name in its Content-Disposition".to_owned(),
            });
        };
        let filename = field.file_name().map(str::to_owned);
        let part_type = field
            .content_type()
            .map(|m| m.essence_str().to_ascii_lowercase());
        let typed_json = part_type
            .as_deref()
            .is_some_and(|t| kind_of(t) == Kind::Json);
        let listed = json_fields.contains(&name);
        let value = match filename {
            // A file: only what describes it is kept, never its content.
            Some(filename) if !typed_json && !listed => {
                let mut size: u64 = 0;
                while let Some(chunk) = field.chunk().await.map_err(broken)? {
                    size += chunk.len() as u64;
                }
                serde_json::json!({ "filename": filename, "content_type": part_type, "size": size })
            }
            _ => {
                let data = field.bytes().await.map_err(broken)?;
                let text = std::str::from_utf8(&data).map_err(|_| DecodeError::Multipart {
                    part,
                    message: format!("field `{}` is not valid UTF-8", shorten(&name)),
                })?;
                if listed {
                    json_field("multipart", &name, text, "json_fields", facts)?
                } else if let (true, Some(t)) = (typed_json, part_type.as_deref()) {
                    let why = format!("its Content-Type is {t}");
                    json_field("multipart", &name, text, &why, facts)?
                } else {
                    Value::String(text.to_owned())
                }
            }
        };
        fields.push(name, value);
    }
    fields.note_missing("multipart", json_fields, facts);
    Ok(Value::Object(fields.map))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    // The fixtures are the repository's copies of the shared webhook payloads
    // (github/ and peer/), byte for byte.
    const PUSH: &[u8] = include_bytes!("../../examples/payloads/push-branch.json");
    const SENDGRID: &[u8] = include_bytes!("../../tests/fixtures/sendgrid-array.json");
    const BITBUCKET: &[u8] = include_bytes!("../../tests/fixtures/bitbucket-form.txt");
    const APP_XML: &[u8] = include_bytes!("../../tests/fixtures/app.xml");
    const PLEX: &[u8] = include_bytes!("../../tests/fixtures/plex-multipart.txt");

    const FORM: &str = "application/x-www-form-urlencoded";

    async fn run(
        ct: Option<&str>,
        body: &[u8],
        json_fields: &[&str],
    ) -> Result<Decoded, DecodeError> {
        let json_fields: Vec<String> = json_fields.iter().map(|s| (*s).to_owned()).collect();
        decode(ct, Bytes::copy_from_slice(body), &json_fields).await
    }

    async fn ok(ct: &str, body: &[u8]) -> Decoded {
        run(Some(ct), body, &[]).await.unwrap()
    }

    async fn err(ct: &str, body: &[u8]) -> String {
        run(Some(ct), body, &[]).await.unwrap_err().to_string()
    }

    /// The Plex fixture as real clients send it: CRLF line endings.
    fn plex_crlf() -> Vec<u8> {
        String::from_utf8(PLEX.to_vec())
            .unwrap()
            .replace('\n', "\r\n")
            .into_bytes()
    }

    #[tokio::test]
    async fn json_content_types_decode_the_github_push() {
        for ct in [
            "application/json",
            "application/json; charset=utf-8",
            "Application/JSON ; charset=UTF-8",
            "application/vnd.github+json",
            "application/cloudevents+json; charset=utf-8",
        ] {
            let got = ok(ct, PUSH).await;
            assert_eq!(got.payload["ref"], "refs/heads/master", "{ct}");
            assert_eq!(
                got.payload["head_commit"]["id"], "6113728f27ae82c7b1a177c8d03f9e96e0adf246",
                "{ct}"
            );
            assert!(got.facts.is_empty(), "{ct}: {:?}", got.facts);
        }
    }

    #[tokio::test]
    async fn a_top_level_json_array_stays_an_array() {
        let got = ok("application/json", SENDGRID).await;
        assert_eq!(
            got.payload,
            json!([{
                "email": "example@test.com",
                "timestamp": 1513299569,
                "smtp-id": "<14c5d75ce93.dfd.64b469@ismtpd-555>",
                "event": "processed",
                "category": "cat facts",
                "sg_event_id": "sg_event_id",
                "sg_message_id": "sg_message_id"
            }])
        );
    }

    #[tokio::test]
    async fn an_empty_body_is_a_null_payload_whatever_its_type() {
        for ct in [
            "application/json",
            "application/vnd.api+json",
            "text/xml; charset=utf-8",
            "multipart/form-data; boundary=b",
            "text/plain",
        ] {
            let got = ok(ct, b"").await;
            assert_eq!(got.payload, Value::Null, "{ct}");
            assert!(!got.payload_is_body, "{ct}");
            let media = ct.split(';').next().unwrap();
            assert_eq!(
                got.facts,
                [format!(
                    "payload is null: the body is empty (Content-Type was {media})"
                )],
                "{ct}"
            );
        }
        // An empty form is a form without fields.
        assert_eq!(
            ok("application/x-www-form-urlencoded", b"").await.payload,
            json!({})
        );
    }

    #[tokio::test]
    async fn a_json_byte_order_mark_is_ignored() {
        let got = ok("application/json", b"\xEF\xBB\xBF{\"a\": 1}").await;
        assert_eq!(got.payload, json!({"a": 1}));
    }

    #[tokio::test]
    async fn json_errors_carry_their_position() {
        let cases: &[(&[u8], &str)] = &[
            (b" \r\n\t", "no JSON in the body: it holds only whitespace"),
            (
                b"{\"a\": }",
                "invalid JSON at line 1 column 7: expected value",
            ),
            (
                b"{\"a\": 1,\n \"b\": tru}",
                "invalid JSON at line 2 column 10: expected ident",
            ),
            (
                b"{\"n\": 1e400}",
                "invalid JSON at line 1 column 11: number out of range",
            ),
            (
                b"[-1e400]",
                "invalid JSON at line 1 column 7: number out of range",
            ),
            (
                b"{\"a\": \"\xff\"}",
                "invalid JSON at line 1 column 8: invalid unicode code point",
            ),
            (b"\xff", "invalid JSON at line 1 column 1: expected value"),
            (
                b"\xEF\xBB\xBF",
                "no JSON in the body: it holds only whitespace",
            ),
            (
                b"\xEF\xBB\xBF{]",
                "invalid JSON at line 1 column 2: key must be a string",
            ),
            (
                b"{} x",
                "invalid JSON at line 1 column 4: trailing characters",
            ),
            (
                b"not json",
                "invalid JSON at line 1 column 2: expected ident",
            ),
            (
                b"{\"action\": \"closed\",\n \"action\": \"published\"}",
                "invalid JSON at line 2 column 23: duplicate key `action`",
            ),
            (
                b"[{\"a\": {\"b\": 1, \"b\": 1}}]",
                "invalid JSON at line 1 column 23: duplicate key `b`",
            ),
        ];
        for (body, want) in cases {
            assert_eq!(
                err("application/json", body).await,
                *want,
                "{}",
                String::from_utf8_lossy(body)
            );
        }
    }

    #[tokio::test]
    async fn deep_json_is_an_error_not_a_stack_overflow() {
        for open in ["[", "{\"a\":"] {
            let deep = open.repeat(100_000);
            let column = open.len() * 127 + 1;
            assert_eq!(
                err("application/json", deep.as_bytes()).await,
                format!("invalid JSON at line 1 column {column}: recursion limit exceeded")
            );
        }
    }

    #[tokio::test]
    async fn forms_decode_to_strings_with_repeats_as_arrays() {
        let cases: &[(&str, Value)] = &[
            ("a=1&a=2", json!({"a": ["1", "2"]})),
            ("a=1&b=2&a=3&a=4", json!({"a": ["1", "3", "4"], "b": "2"})),
            ("b=x+y%21&c=&d", json!({"b": "x y!", "c": "", "d": ""})),
            ("&&a=%C3%A9%e2%82%AC&", json!({"a": "é€"})),
            ("a=1=2&%3D=%26", json!({"a": "1=2", "=": "&"})),
            ("a=%zz%4&b=%", json!({"a": "%zz%4", "b": "%"})),
            ("", json!({})),
        ];
        for (body, want) in cases {
            let got = ok(FORM, body.as_bytes()).await;
            assert_eq!(got.payload, *want, "{body}");
            assert!(got.facts.is_empty());
        }
    }

    #[tokio::test]
    async fn form_utf8_errors_name_the_field() {
        let cases: &[(&[u8], &str)] = &[
            (
                b"ok=1&name=%FF",
                "form field `name` is not valid UTF-8 after percent-decoding",
            ),
            (
                b"raw=\xC3",
                "form field `raw` is not valid UTF-8 after percent-decoding",
            ),
            (
                b"n%FFm=1",
                "form field `n\u{FFFD}m` is not valid UTF-8 after percent-decoding",
            ),
        ];
        for (body, want) in cases {
            assert_eq!(err(FORM, body).await, *want);
        }
    }

    #[tokio::test]
    async fn bitbucket_form_payload_field_is_decoded_with_json_fields() {
        let got = run(Some(FORM), BITBUCKET, &["payload"]).await.unwrap();
        let payload = &got.payload["payload"];
        assert_eq!(payload["canon_url"], "https://bitbucket.org");
        assert_eq!(payload["repository"]["absolute_url"], "/webhook/testing/");
        assert_eq!(payload["commits"][0]["branch"], "master");
        // `+` is a space in a form, even inside the JSON text.
        assert_eq!(
            payload["commits"][0]["utctimestamp"],
            "2014-11-07 15:19:02 00:00"
        );
        assert_eq!(payload["commits"][0]["revision"], Value::Null);
        assert_eq!(
            got.facts,
            ["form field `payload` was decoded as JSON (json_fields)"]
        );

        // Without json_fields the text stays a string.
        let got = run(Some(FORM), BITBUCKET, &[]).await.unwrap();
        assert!(got.payload["payload"].is_string());
    }

    #[tokio::test]
    async fn json_fields_errors_and_missing_fields() {
        let e = run(Some(FORM), b"payload=%7Bnope", &["payload"])
            .await
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "form field `payload` is not valid JSON at line 1 column 2: key must be a string"
        );
        let e = run(Some(FORM), b"payload=", &["payload"])
            .await
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "form field `payload` is not valid JSON at line 1 column 0: EOF while parsing a value"
        );
        let got = run(Some(FORM), b"a=1", &["payload"]).await.unwrap();
        assert_eq!(got.payload, json!({"a": "1"}));
        assert_eq!(
            got.facts,
            ["json_fields names `payload`, but the form body has no such field"]
        );
        // A repeated JSON field keeps each decoded value; a decoded array is not appended to.
        let got = run(Some(FORM), b"p=[1]&p=[2]&q=[3]", &["p", "q"])
            .await
            .unwrap();
        assert_eq!(got.payload, json!({"p": [[1], [2]], "q": [3]}));
    }

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

    #[tokio::test]
    async fn plex_multipart_decodes_fields_json_and_files() {
        let body = plex_crlf();
        let ct = "multipart/form-data; boundary=xxx";
        let got = run(Some(ct), &body, &["payload"]).await.unwrap();
        assert_eq!(
            got.payload,
            json!({
                "payload": {
                    "event": "media.play",
                    "user": true,
                    "owner": true,
                    "Account": {
                        "id": 1,
                        "thumb": "https://plex.tv/users/1022b120ffbaa/avatar?c=1465525047",
                        "title": "elan"
                    }
                },
                "thumb": {"filename": "thumb.jpg", "content_type": "application/octet-stream", "size": 11}
            })
        );
        assert_eq!(
            got.facts,
            ["multipart field `payload` was decoded as JSON (json_fields)"]
        );

        // Without json_fields the JSON text stays a string (ending in its CRLF).
        let got = run(Some(ct), &body, &[]).await.unwrap();
        let text = got.payload["payload"].as_str().unwrap();
        assert!(
            text.starts_with("{\r\n   \"event\": \"media.play\""),
            "{text}"
        );
    }

    #[tokio::test]
    async fn multipart_json_parts_and_repeated_fields() {
        let body = "--b\r\nContent-Disposition: form-data; name=\"event\"\r\nContent-Type: application/json; charset=utf-8\r\n\r\n{\"a\":[1,2]}\r\n\
            --b\r\nContent-Disposition: form-data; name=\"tag\"\r\n\r\nx\r\n\
            --b\r\nContent-Disposition: form-data; name=\"tag\"\r\n\r\ny\r\n\
            --b\r\nContent-Disposition: form-data; name=\"doc\"; filename=\"d.json\"\r\nContent-Type: application/vnd.x+json\r\n\r\n[true]\r\n\
            --b\r\nContent-Disposition: form-data; name=\"f\"; filename=\"a.txt\"\r\n\r\nabc\r\n\
            --b--\r\n";
        let got = ok("multipart/form-data; boundary=b", body.as_bytes()).await;
        assert_eq!(
            got.payload,
            json!({
                "event": {"a": [1, 2]},
                "tag": ["x", "y"],
                "doc": [true],
                "f": {"filename": "a.txt", "content_type": null, "size": 3}
            })
        );
        assert_eq!(
            got.facts,
            [
                "multipart field `event` was decoded as JSON (its Content-Type is application/json)",
                "multipart field `doc` was decoded as JSON (its Content-Type is application/vnd.x+json)",
            ]
        );
    }

    #[tokio::test]
    async fn multipart_errors_say_what_broke() {
        let part =
            |headers: &str, data: &str| format!("--b\r\n{headers}\r\n\r\n{data}\r\n--b--\r\n");
        let cases: &[(&str, String, &str)] = &[
            (
                "multipart/form-data",
                part("Content-Disposition: form-data; name=\"a\"", "1"),
                "invalid multipart body: the Content-Type has no boundary parameter",
            ),
            (
                "multipart/form-data; boundary=b",
                "\r\n".to_owned(),
                "no multipart/form-data in the body: it holds only whitespace",
            ),
            (
                "multipart/form-data; boundary=b",
                "--b\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\n1".to_owned(),
                "invalid multipart body at part 1: field \"a\" received with incomplete data",
            ),
            (
                "multipart/form-data; boundary=b",
                part("Content-Disposition: form-data", "1"),
                "invalid multipart body at part 1: the part has no name in its Content-Disposition",
            ),
            (
                "multipart/form-data; boundary=b",
                part(
                    "Content-Disposition: form-data; name=\"j\"\r\nContent-Type: application/json",
                    "{oops}",
                ),
                "multipart field `j` is not valid JSON at line 1 column 2: key must be a string",
            ),
            (
                "multipart/form-data; boundary=b",
                "x".to_owned(),
                "invalid multipart body at part 1: incomplete multipart stream",
            ),
        ];
        for (ct, body, want) in cases {
            assert_eq!(err(ct, body.as_bytes()).await, *want, "{body:?}");
        }
        let bad_utf8 =
            b"--b\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\n\xff\r\n--b--\r\n";
        assert_eq!(
            err("multipart/form-data; boundary=b", bad_utf8).await,
            "invalid multipart body at part 1: field `a` is not valid UTF-8"
        );
    }

    #[tokio::test]
    async fn other_types_give_null_with_a_fact() {
        let cases: &[(Option<&str>, &[u8], &str)] = &[
            (
                Some("text/plain; charset=utf-8"),
                b"hello",
                "payload is null: Content-Type was text/plain",
            ),
            (
                Some("application/octet-stream"),
                b"\x00\x01",
                "payload is null: Content-Type was application/octet-stream",
            ),
            (
                Some("text/json"),
                b"{}",
                "payload is null: Content-Type was text/json",
            ),
            (
                Some(""),
                b"{}",
                "payload is null: the Content-Type header is empty",
            ),
            (None, b"{}", "payload is null: no Content-Type header"),
            (None, b"", "payload is null: the body is empty"),
        ];
        for (ct, body, fact) in cases {
            let got = run(*ct, body, &["payload"]).await.unwrap();
            assert_eq!(
                got,
                Decoded {
                    payload: Value::Null,
                    facts: vec![(*fact).to_owned()],
                    payload_is_body: false,
                }
            );
        }
    }

    #[tokio::test]
    async fn long_names_are_shortened_in_messages() {
        let body = format!("{}=%FF", "n".repeat(1000));
        let e = err(FORM, body.as_bytes()).await;
        assert_eq!(
            e,
            format!(
                "form field `{}…` is not valid UTF-8 after percent-decoding",
                "n".repeat(64)
            )
        );
    }

    /// The strict form decoder agrees with `form_urlencoded` wherever that
    /// one's output is not lossy, and fails exactly where it would be.
    #[test]
    fn form_decoding_agrees_with_form_urlencoded() {
        let alphabet = b"a=&+%2FfF0x\xc3\xa9\xff ";
        let mut rng = XorShift(0x2545_f491_4f6c_dd1d);
        for _ in 0..5000 {
            let body = rng.bytes(alphabet, 24);
            let mut facts = Vec::new();
            let ours = form(&body, &[], &mut facts);
            let mut theirs = Fields::default();
            let mut lossy = false;
            for (k, v) in url::form_urlencoded::parse(&body) {
                lossy |= k.contains('\u{FFFD}') || v.contains('\u{FFFD}');
                theirs.push(k.into_owned(), Value::String(v.into_owned()));
            }
            match ours {
                Ok(v) => assert_eq!(v, Value::Object(theirs.map), "{body:?}"),
                Err(_) => assert!(lossy, "{body:?}"),
            }
        }
    }

    #[tokio::test]
    async fn large_inputs_stay_linear() {
        let started = std::time::Instant::now();
        let form_body = "a=1&".repeat(200_000);
        let got = ok(FORM, form_body.as_bytes()).await;
        assert_eq!(got.payload["a"].as_array().map(Vec::len), Some(200_000));

        let attrs: String = (0..50_000).map(|i| format!(" a{i}=\"1\"")).collect();
        let got = ok("text/xml", format!("<r{attrs}/>").as_bytes()).await;
        assert_eq!(got.payload["r"].as_object().map(Map::len), Some(50_000));
        let dup = format!("<r{attrs} a7=\"2\"/>");
        assert!(
            err("text/xml", dup.as_bytes())
                .await
                .contains("duplicate attribute `a7`")
        );

        let siblings = format!("<r>{}</r>", "<c>x</c>".repeat(100_000));
        let got = ok("text/xml", siblings.as_bytes()).await;
        assert_eq!(
            got.payload["r"]["c"].as_array().map(Vec::len),
            Some(100_000)
        );

        let parts: String = (0..5_000)
            .map(|_| "--b\r\nContent-Disposition: form-data; name=\"t\"\r\n\r\nv\r\n")
            .collect();
        let got = ok(
            "multipart/form-data; boundary=b",
            format!("{parts}--b--\r\n").as_bytes(),
        )
        .await;
        assert_eq!(got.payload["t"].as_array().map(Vec::len), Some(5_000));
        // Quadratic work on these sizes would take minutes.
        assert!(
            started.elapsed() < std::time::Duration::from_secs(20),
            "{:?}",
            started.elapsed()
        );
    }

    struct XorShift(u64);

    impl XorShift {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }

        /// Up to `max_len` bytes, half of the time from `alphabet` (so the
        /// decoders get past their first byte), otherwise any byte.
        fn bytes(&mut self, alphabet: &[u8], max_len: u64) -> Vec<u8> {
            let len = self.next() % (max_len + 1);
            let any = self.next().is_multiple_of(2);
            (0..len)
                .map(|_| {
                    let r = self.next();
                    if any {
                        r.to_le_bytes()[3]
                    } else {
                        alphabet[(r % alphabet.len() as u64) as usize]
                    }
                })
                .collect()
        }
    }

    #[tokio::test]
    async fn random_bodies_never_panic() {
        let content_types = [
            "application/json",
            "application/x-www-form-urlencoded",
            "application/xml",
            "multipart/form-data; boundary=b",
            "multipart/form-data",
            "text/plain",
        ];
        let alphabet = b"<>/{}[]\"'&#;=%:,.!?-ab1 \n\r\t\xff\x00\xc3\xa9xXDOCTYPE--b";
        let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
        for _ in 0..3000 {
            let body = rng.bytes(alphabet, 96);
            for ct in content_types {
                let _ = run(Some(ct), &body, &["a", "b"]).await;
            }
        }
        // Mutations of the real fixtures reach deeper into each decoder.
        let plex = plex_crlf();
        let fixtures: [(&str, &[u8]); 5] = [
            ("application/json", PUSH),
            ("application/json", SENDGRID),
            (FORM, BITBUCKET),
            ("application/xml", APP_XML),
            ("multipart/form-data; boundary=xxx", &plex),
        ];
        for (ct, fixture) in fixtures {
            for _ in 0..400 {
                let mut body = fixture.to_vec();
                for _ in 0..1 + rng.next() % 4 {
                    let at = (rng.next() % body.len() as u64) as usize;
                    match rng.next() % 3 {
                        0 => body[at] = alphabet[(rng.next() % alphabet.len() as u64) as usize],
                        1 => body.truncate(at),
                        _ => {
                            body.remove(at);
                        }
                    }
                    if body.is_empty() {
                        break;
                    }
                }
                let _ = run(Some(ct), &body, &["payload"]).await;
            }
        }
    }
}
