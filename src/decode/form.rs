//! `application/x-www-form-urlencoded` bodies: an object of strings, a
//! repeated name an array, `json_fields` decoded as JSON. Invalid UTF-8 after
//! percent-decoding is an error, never replaced.

use serde_json::Value;

use super::json::json_field;
use super::{DecodeError, Fields, shorten};

pub(super) fn parse(
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

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::decode::testing::*;

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

    /// The strict form decoder agrees with `form_urlencoded` wherever that
    /// one's output is not lossy, and fails exactly where it would be.
    #[test]
    fn form_decoding_agrees_with_form_urlencoded() {
        let alphabet = b"a=&+%2FfF0x\xc3\xa9\xff ";
        let mut rng = XorShift(0x2545_f491_4f6c_dd1d);
        for _ in 0..5000 {
            let body = rng.bytes(alphabet, 24);
            let mut facts = Vec::new();
            let ours = parse(&body, &[], &mut facts);
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
}
