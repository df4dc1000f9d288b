//! `multipart/form-data` bodies: an object of the parts by name. A file part
//! is described (name, type, size), never kept; a part typed as JSON, or named
//! in `json_fields`, is decoded as JSON.

use bytes::Bytes;
use serde_json::Value;

use super::json::json_field;
use super::{DecodeError, Fields, Kind, is_blank, kind_of, shorten};

pub(super) async fn parse(
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
    use serde_json::json;

    use crate::decode::testing::*;

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
}
