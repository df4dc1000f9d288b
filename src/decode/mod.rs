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
//! The entry point ([`decode`]) chooses the decoder by media type; each body
//! type has a file of its own (`json.rs`, `form.rs`, `xml.rs`, `multipart.rs`).
//! Here is what they share: the error type, the limit on names echoed in
//! messages, and the grouping of repeated names into arrays.
//!
//! It depends on no other hookwire module. Every decoder is linear in the body
//! size and bounded in depth, so no body can make it panic, overflow the stack or
//! spin: the body is attacker-controlled.

mod form;
mod json;
mod multipart;
mod xml;

use std::collections::HashSet;

use bytes::Bytes;
use serde_json::{Map, Value};

use json::json_body;

/// A decoded body and what a person should know about how it was decoded.
#[derive(Debug, Clone, PartialEq)]
pub struct Decoded {
    pub payload: Value,
    /// Decoding facts that explain a miss, for the match trace and `hookwire test`,
    /// e.g. "payload is null: Content-Type was text/plain" or
    /// "form field `payload` was decoded as JSON (json_fields)".
    pub facts: Vec<String>,
    /// The payload is the body parsed as JSON, nothing more: the store keeps
    /// the body only and parses it again when the event is read.
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
        Kind::Json => json_body(&body)?,
        Kind::Form => form::parse(&body, json_fields, &mut facts)?,
        Kind::Xml => xml::parse(&body)?,
        Kind::Multipart => multipart::parse(content_type, body, json_fields, &mut facts).await?,
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

#[cfg(test)]
mod testing;

/// What holds for every body type: empty bodies, other types, short names in
/// messages, linear work and no panic on any input.
#[cfg(test)]
mod tests {
    use serde_json::{Map, Value, json};

    use super::testing::*;
    use super::*;

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
