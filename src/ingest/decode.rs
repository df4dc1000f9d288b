//! Body decoding (SPEC §4.4): the raw bytes of a verified request become the
//! `payload` that conditions and templates see.
//!
//! JSON and `+json` as is; form-urlencoded as an object of strings (repeated
//! keys → arrays); XML as an object (root name → content, attributes `@name`,
//! mixed text `#text`); multipart as its fields. Anything else is `null`, with
//! a fact saying why. A body that does not parse as its declared type is an
//! error whose message (with its position) is the 400 answer.

use bytes::Bytes;
use quick_xml::events::Event;
use serde_json::{Map, Value};

/// A decoded body and what a person should know about how it was decoded.
#[derive(Debug, Clone, PartialEq)]
pub struct Decoded {
    pub payload: Value,
    /// E.g. "payload is null: Content-Type was text/plain".
    pub facts: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("empty body, expected JSON")]
    EmptyJson,
    #[error("invalid JSON at line {line} column {column}: {message}")]
    Json {
        line: usize,
        column: usize,
        message: String,
    },
    #[error("form field `{field}` is not valid JSON at line {line} column {column}: {message}")]
    JsonField {
        field: String,
        line: usize,
        column: usize,
        message: String,
    },
    #[error("invalid XML at line {line} column {column}: {message}")]
    Xml {
        line: usize,
        column: usize,
        message: String,
    },
    #[error("invalid multipart body: {0}")]
    Multipart(String),
}

/// XML deeper than this is refused (no real webhook nests so deep).
const MAX_XML_DEPTH: usize = 128;

enum Kind {
    Json,
    Form,
    Xml,
    Multipart,
    Other,
}

fn kind_of(media: &str) -> Kind {
    match media {
        "application/json" => Kind::Json,
        m if m.ends_with("+json") => Kind::Json,
        "application/x-www-form-urlencoded" => Kind::Form,
        "application/xml" | "text/xml" => Kind::Xml,
        m if m.ends_with("+xml") => Kind::Xml,
        "multipart/form-data" => Kind::Multipart,
        _ => Kind::Other,
    }
}

pub async fn decode(
    content_type: Option<&str>,
    body: Bytes,
    json_fields: &[String],
) -> Result<Decoded, DecodeError> {
    let media = content_type.map(|ct| {
        ct.split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase()
    });
    let mut facts = Vec::new();
    let payload = match media.as_deref().map(kind_of) {
        Some(Kind::Json) => json(&body)?,
        Some(Kind::Form) => form(&body, json_fields, &mut facts)?,
        Some(Kind::Xml) => xml(&body)?,
        Some(Kind::Multipart) => {
            multipart(content_type.unwrap_or(""), body, json_fields, &mut facts).await?
        }
        Some(Kind::Other) => {
            facts.push(format!(
                "payload is null: Content-Type was {}",
                media.as_deref().unwrap_or("")
            ));
            Value::Null
        }
        None => {
            facts.push("payload is null: the request had no Content-Type header".to_owned());
            Value::Null
        }
    };
    Ok(Decoded { payload, facts })
}

fn json(body: &[u8]) -> Result<Value, DecodeError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(DecodeError::EmptyJson);
    }
    serde_json::from_slice(body).map_err(|e| DecodeError::Json {
        line: e.line(),
        column: e.column(),
        message: json_message(&e),
    })
}

/// serde_json's message without its " at line L column C" tail (the position is given separately).
fn json_message(e: &serde_json::Error) -> String {
    let text = e.to_string();
    match text.rfind(" at line ") {
        Some(i) => text[..i].to_owned(),
        None => text,
    }
}

/// Fields in arrival order → an object; a key that repeats becomes an array of its values, in order.
fn group(pairs: Vec<(String, Value)>, mut into: Map<String, Value>) -> Map<String, Value> {
    let mut grouped: Vec<(String, Vec<Value>)> = Vec::new();
    for (k, v) in pairs {
        match grouped.iter_mut().find(|(g, _)| *g == k) {
            Some((_, vs)) => vs.push(v),
            None => grouped.push((k, vec![v])),
        }
    }
    for (k, mut vs) in grouped {
        let v = if vs.len() == 1 {
            vs.remove(0)
        } else {
            Value::Array(vs)
        };
        into.insert(k, v);
    }
    into
}

fn parse_json_field(
    field: &str,
    text: &str,
    facts: &mut Vec<String>,
) -> Result<Value, DecodeError> {
    let v = serde_json::from_str(text).map_err(|e| DecodeError::JsonField {
        field: field.to_owned(),
        line: e.line(),
        column: e.column(),
        message: json_message(&e),
    })?;
    facts.push(format!("field `{field}` was decoded as JSON (json_fields)"));
    Ok(v)
}

fn form(
    body: &[u8],
    json_fields: &[String],
    facts: &mut Vec<String>,
) -> Result<Value, DecodeError> {
    let mut pairs = Vec::new();
    for (k, v) in url::form_urlencoded::parse(body) {
        let value = if json_fields.iter().any(|f| f.as_str() == k) {
            parse_json_field(&k, &v, facts)?
        } else {
            Value::String(v.into_owned())
        };
        pairs.push((k.into_owned(), value));
    }
    Ok(Value::Object(group(pairs, Map::new())))
}

/// Line and column (1-based, in characters) of a byte offset.
fn line_col(body: &[u8], offset: u64) -> (usize, usize) {
    let end = usize::try_from(offset)
        .unwrap_or(usize::MAX)
        .min(body.len());
    let before = &body[..end];
    let line = before.iter().filter(|b| **b == b'\n').count() + 1;
    let start = before
        .iter()
        .rposition(|b| *b == b'\n')
        .map_or(0, |i| i + 1);
    let column = String::from_utf8_lossy(&before[start..]).chars().count() + 1;
    (line, column)
}

struct Element {
    name: String,
    attributes: Map<String, Value>,
    children: Vec<(String, Value)>,
    text: String,
}

impl Element {
    fn new(e: &quick_xml::events::BytesStart<'_>) -> Result<Self, String> {
        let name = String::from_utf8_lossy(e.name().as_ref()).into_owned();
        let mut attributes = Map::new();
        for attr in e.attributes() {
            let attr = attr.map_err(|err| err.to_string())?;
            let key = format!("@{}", String::from_utf8_lossy(attr.key.as_ref()));
            let value = attr
                .unescape_value()
                .map_err(|err| err.to_string())?
                .into_owned();
            attributes.insert(key, Value::String(value));
        }
        Ok(Self {
            name,
            attributes,
            children: Vec::new(),
            text: String::new(),
        })
    }

    fn finish(self) -> (String, Value) {
        if self.attributes.is_empty() && self.children.is_empty() {
            return (self.name, Value::String(self.text));
        }
        let mut fields = group(self.children, self.attributes);
        let text = self.text.trim();
        if !text.is_empty() {
            fields.insert("#text".to_owned(), Value::String(text.to_owned()));
        }
        (self.name, Value::Object(fields))
    }
}

fn xml(body: &[u8]) -> Result<Value, DecodeError> {
    let mut reader = quick_xml::Reader::from_reader(body);
    reader.config_mut().check_end_names = true;
    let mut stack: Vec<Element> = Vec::new();
    let mut root: Option<(String, Value)> = None;
    let err_at = |reader: &quick_xml::Reader<&[u8]>, offset: Option<u64>, message: String| {
        let (line, column) = line_col(body, offset.unwrap_or_else(|| reader.buffer_position()));
        DecodeError::Xml {
            line,
            column,
            message,
        }
    };
    loop {
        let event = reader
            .read_event()
            .map_err(|e| err_at(&reader, Some(reader.error_position()), e.to_string()))?;
        match event {
            Event::Start(e) => {
                if stack.len() >= MAX_XML_DEPTH {
                    return Err(err_at(
                        &reader,
                        None,
                        format!("nested deeper than {MAX_XML_DEPTH} elements"),
                    ));
                }
                if root.is_some() {
                    return Err(err_at(&reader, None, "a second root element".to_owned()));
                }
                stack.push(Element::new(&e).map_err(|m| err_at(&reader, None, m))?);
            }
            Event::Empty(e) => {
                let el = Element::new(&e).map_err(|m| err_at(&reader, None, m))?;
                close(&mut stack, &mut root, el);
            }
            Event::End(_) => {
                if let Some(el) = stack.pop() {
                    close(&mut stack, &mut root, el);
                }
            }
            Event::Text(t) => {
                let text = t
                    .decode()
                    .map_err(|e| err_at(&reader, None, e.to_string()))?;
                match stack.last_mut() {
                    Some(el) => el.text.push_str(&text),
                    None if text.trim().is_empty() => {}
                    None => {
                        return Err(err_at(
                            &reader,
                            None,
                            "text outside the root element".to_owned(),
                        ));
                    }
                }
            }
            Event::CData(t) => {
                let text = t
                    .decode()
                    .map_err(|e| err_at(&reader, None, e.to_string()))?;
                if let Some(el) = stack.last_mut() {
                    el.text.push_str(&text);
                }
            }
            Event::GeneralRef(r) => {
                let resolved = if r.is_char_ref() {
                    r.resolve_char_ref().ok().flatten().map(String::from)
                } else {
                    let name = r
                        .decode()
                        .map_err(|e| err_at(&reader, None, e.to_string()))?;
                    quick_xml::escape::resolve_predefined_entity(&name).map(str::to_owned)
                };
                let Some(text) = resolved else {
                    return Err(err_at(
                        &reader,
                        None,
                        "unknown entity reference (only the XML predefined ones are allowed)"
                            .to_owned(),
                    ));
                };
                if let Some(el) = stack.last_mut() {
                    el.text.push_str(&text);
                }
            }
            Event::DocType(d) => {
                if String::from_utf8_lossy(&d).contains("ENTITY") {
                    return Err(err_at(
                        &reader,
                        None,
                        "entity declarations are not allowed".to_owned(),
                    ));
                }
            }
            Event::Eof => break,
            Event::Decl(_) | Event::PI(_) | Event::Comment(_) => {}
        }
    }
    if !stack.is_empty() {
        return Err(err_at(
            &reader,
            None,
            format!(
                "unexpected end: `<{}>` is not closed",
                stack[stack.len() - 1].name
            ),
        ));
    }
    match root {
        Some((name, value)) => {
            let mut map = Map::new();
            map.insert(name, value);
            Ok(Value::Object(map))
        }
        None => Err(err_at(&reader, None, "no root element".to_owned())),
    }
}

fn close(stack: &mut [Element], root: &mut Option<(String, Value)>, el: Element) {
    let (name, value) = el.finish();
    match stack.last_mut() {
        Some(parent) => parent.children.push((name, value)),
        None => *root = Some((name, value)),
    }
}

async fn multipart(
    content_type: &str,
    body: Bytes,
    json_fields: &[String],
    facts: &mut Vec<String>,
) -> Result<Value, DecodeError> {
    let boundary =
        multer::parse_boundary(content_type).map_err(|e| DecodeError::Multipart(e.to_string()))?;
    let stream = futures_util::stream::once(async move { Ok::<Bytes, std::io::Error>(body) });
    let mut parts = multer::Multipart::new(stream, boundary);
    let mut pairs = Vec::new();
    while let Some(field) = parts
        .next_field()
        .await
        .map_err(|e| DecodeError::Multipart(e.to_string()))?
    {
        let name = field.name().unwrap_or("").to_owned();
        let filename = field.file_name().map(str::to_owned);
        let part_type = field.content_type().map(|m| m.essence_str().to_owned());
        let data = field
            .bytes()
            .await
            .map_err(|e| DecodeError::Multipart(e.to_string()))?;
        let value = if let Some(filename) = filename {
            serde_json::json!({ "filename": filename, "content_type": part_type, "size": data.len() })
        } else {
            let text = String::from_utf8_lossy(&data);
            let is_json = part_type
                .as_deref()
                .is_some_and(|t| matches!(kind_of(t), Kind::Json));
            if is_json || json_fields.contains(&name) {
                parse_json_field(&name, &text, facts)?
            } else {
                Value::String(text.into_owned())
            }
        };
        pairs.push((name, value));
    }
    Ok(Value::Object(group(pairs, Map::new())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    async fn d(ct: Option<&str>, body: &[u8]) -> Result<Decoded, DecodeError> {
        decode(ct, Bytes::copy_from_slice(body), &["payload".to_owned()]).await
    }

    #[tokio::test]
    async fn json_types_and_arrays() {
        let push = include_bytes!("../../examples/payloads/push-branch.json");
        for ct in [
            "application/json",
            "application/json; charset=utf-8",
            "application/vnd.github+json",
            "APPLICATION/JSON",
        ] {
            let got = d(Some(ct), push).await.unwrap();
            assert_eq!(got.payload["ref"], "refs/heads/master", "{ct}");
            assert!(got.facts.is_empty());
        }
        let sendgrid = include_bytes!("../../tests/fixtures/sendgrid-array.json");
        assert!(
            d(Some("application/json"), sendgrid)
                .await
                .unwrap()
                .payload
                .is_array()
        );
    }

    #[tokio::test]
    async fn json_errors_carry_their_position() {
        let cases: &[(&[u8], &str)] = &[
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
            (b"  ", "empty body, expected JSON"),
            (
                b"{\"a\": \"\xff\"}",
                "invalid JSON at line 1 column 8: invalid unicode code point",
            ),
        ];
        for (body, want) in cases {
            let e = d(Some("application/json"), body).await.unwrap_err();
            assert_eq!(e.to_string(), *want, "{}", String::from_utf8_lossy(body));
        }
        let deep = "[".repeat(100_000);
        let e = d(Some("application/json"), deep.as_bytes())
            .await
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "invalid JSON at line 1 column 128: recursion limit exceeded"
        );
    }

    #[tokio::test]
    async fn forms_repeat_keys_and_decode_json_fields() {
        let got = d(
            Some("application/x-www-form-urlencoded"),
            b"a=1&a=2&b=x+y%21&c=",
        )
        .await
        .unwrap();
        assert_eq!(got.payload, json!({"a": ["1", "2"], "b": "x y!", "c": ""}));
        let bitbucket = include_bytes!("../../tests/fixtures/bitbucket-form.txt");
        let got = d(Some("application/x-www-form-urlencoded"), bitbucket)
            .await
            .unwrap();
        assert!(got.payload["payload"].is_object(), "{}", got.payload);
        assert_eq!(
            got.facts,
            ["field `payload` was decoded as JSON (json_fields)"]
        );
        let e = d(
            Some("application/x-www-form-urlencoded"),
            b"payload=%7Bnope",
        )
        .await
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "form field `payload` is not valid JSON at line 1 column 2: key must be a string"
        );
    }

    #[tokio::test]
    async fn xml_maps_to_objects() {
        let app = include_bytes!("../../tests/fixtures/app.xml");
        let got = d(Some("application/xml"), app).await.unwrap();
        assert_eq!(
            got.payload,
            json!({"app": {
                "users": {"user": [{"@id": "1", "@name": "Jeff"}, {"@id": "2", "@name": "Sally"}]},
                "messages": {"message": {"@id": "1", "@from_user": "1", "@to_user": "2", "#text": "Hello!!"}}
            }})
        );
        let got = d(
            Some("text/xml"),
            b"<?xml version=\"1.0\"?><a><b>x &amp; &#65;</b><c/><![CDATA[<raw>]]></a>",
        )
        .await
        .unwrap();
        assert_eq!(
            got.payload,
            json!({"a": {"b": "x & A", "c": "", "#text": "<raw>"}})
        );
    }

    #[tokio::test]
    async fn bad_xml_is_an_error_with_position() {
        let cases: &[(&str, &str)] = &[
            ("<a>\n  <b></c>\n</a>", "invalid XML at line 2 column"),
            (
                "<a>",
                "invalid XML at line 1 column 4: unexpected end: `<a>` is not closed",
            ),
            (
                "<!DOCTYPE a [<!ENTITY x \"y\">]><a>&x;</a>",
                "invalid XML at line 1 column",
            ),
            ("<a>&nope;</a>", "invalid XML at line 1 column"),
            ("", "invalid XML at line 1 column 1: no root element"),
        ];
        for (body, want) in cases {
            let e = d(Some("application/xml"), body.as_bytes())
                .await
                .unwrap_err()
                .to_string();
            assert!(e.starts_with(want), "{body}: {e}");
        }
        let deep = "<a>".repeat(200);
        let e = d(Some("application/xml"), deep.as_bytes())
            .await
            .unwrap_err()
            .to_string();
        assert!(e.contains("nested deeper than 128"), "{e}");
    }

    #[tokio::test]
    async fn multipart_fields_json_parts_and_files() {
        let plex =
            String::from_utf8(include_bytes!("../../tests/fixtures/plex-multipart.txt").to_vec())
                .unwrap()
                .replace('\n', "\r\n");
        let got = decode(
            Some("multipart/form-data; boundary=xxx"),
            Bytes::from(plex),
            &["payload".to_owned()],
        )
        .await
        .unwrap();
        assert_eq!(got.payload["payload"]["event"], "media.play");
        assert_eq!(
            got.payload["thumb"],
            json!({"filename": "thumb.jpg", "content_type": "application/octet-stream", "size": 11})
        );
        let e = d(Some("multipart/form-data"), b"x").await.unwrap_err();
        assert!(e.to_string().starts_with("invalid multipart body"), "{e}");
    }

    #[tokio::test]
    async fn other_types_give_null_with_a_fact() {
        let got = d(Some("text/plain; charset=utf-8"), b"hello")
            .await
            .unwrap();
        assert_eq!(
            got,
            Decoded {
                payload: Value::Null,
                facts: vec!["payload is null: Content-Type was text/plain".into()]
            }
        );
        let got = d(None, b"hello").await.unwrap();
        assert_eq!(
            got.facts,
            ["payload is null: the request had no Content-Type header"]
        );
    }

    #[tokio::test]
    async fn random_bytes_never_panic() {
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let types = [
            "application/json",
            "application/x-www-form-urlencoded",
            "application/xml",
            "multipart/form-data; boundary=b",
            "text/plain",
        ];
        for i in 0..3000 {
            let len = i % 97;
            let mut body = Vec::with_capacity(len);
            let alphabet = b"<>{}[]\"'&;=%:,ab1 \n\r\t-\xff\x00!";
            for _ in 0..len {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                body.push(alphabet[(x % alphabet.len() as u64) as usize]);
            }
            let _ = d(Some(types[i % types.len()]), &body).await;
        }
    }
}
