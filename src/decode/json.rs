//! JSON and `+json` bodies: the body as it is, byte order mark ignored,
//! a key twice refused. Also form and multipart fields that hold JSON text.

use serde_json::{Map, Value};

use super::{DecodeError, is_blank, shorten};

/// A JSON body as its payload: what [`decode`](super::decode) gives for a JSON content type.
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
pub(super) fn json_field(
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

#[cfg(test)]
mod tests {
    use serde_json::json;

    use crate::decode::testing::*;

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
}
