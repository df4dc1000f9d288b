//! The authoring commands: `hookwire check` and `hookwire test`.

pub mod backtest;
pub mod check;
pub mod ops;
pub mod rule_tests;
pub mod send;
pub mod test;

/// A request to `source` made from a file (`hookwire test`, rule tests),
/// decoded the way the source decodes what it receives. The content type,
/// when known, is also sent as the `content-type` header; the method is the
/// source's first unless one is given.
pub(crate) async fn test_request(
    source: &crate::rules::Source,
    body: Vec<u8>,
    mut headers: Vec<(String, String)>,
    query: Vec<(String, String)>,
    method: Option<String>,
    content_type: Option<String>,
) -> Result<crate::evaluate::Decoded, crate::decode::DecodeError> {
    if let Some(ct) = &content_type
        && !headers.iter().any(|(k, _)| k == "content-type")
    {
        headers.push(("content-type".to_owned(), ct.clone()));
    }
    let method = method
        .or_else(|| source.methods.first().cloned())
        .unwrap_or_else(|| "POST".to_owned());
    crate::evaluate::decode(crate::evaluate::Arrival {
        source,
        content_type: content_type.as_deref(),
        request: crate::request::Request {
            event_id: "evt_test".to_owned(),
            source: source.name.clone(),
            received_at: crate::clock::rfc3339(std::time::SystemTime::now()),
            method,
            path: source.path.clone(),
            headers,
            query,
            body: bytes::Bytes::from(body),
            payload: serde_json::Value::Null,
        },
    })
    .await
}

/// The Content-Type a payload file most likely has, by its extension.
pub fn guess_content_type(path: &std::path::Path) -> Option<String> {
    let ext = path.extension()?.to_str()?;
    Some(
        match ext {
            "json" => "application/json",
            "xml" => "application/xml",
            "form" | "urlencoded" => "application/x-www-form-urlencoded",
            _ => return None,
        }
        .to_owned(),
    )
}

/// Writes a line to stdout with every secret masked; a closed pipe
/// (`hookwire test … | head`) is not an error.
pub fn out(line: &str) {
    use std::io::Write as _;
    let _ = writeln!(std::io::stdout().lock(), "{}", crate::redact::text(line));
}

/// Writes a line to stderr with every secret masked.
pub fn err(line: impl std::fmt::Display) {
    use std::io::Write as _;
    let _ = writeln!(
        std::io::stderr().lock(),
        "{}",
        crate::redact::text(&line.to_string())
    );
}
