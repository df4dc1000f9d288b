//! The facts one webhook request carries, decoded: what conditions test,
//! templates read, and the action runners forward. Built by ingest from the
//! wire, by the store from a stored event, and by `hookwire test` and rule
//! tests from a file. At the bottom of the crate: it imports nothing from it.

use serde_json::Value;

/// A received (or stored, or test) request with its decoded payload.
#[derive(Debug, Clone)]
pub struct Request {
    pub event_id: String,
    pub source: String,
    /// RFC 3339.
    pub received_at: String,
    pub method: String,
    pub path: String,
    /// Lowercase names, first value each.
    pub headers: Vec<(String, String)>,
    pub query: Vec<(String, String)>,
    /// The raw body; templates see it as text ([`Request::body_text`]).
    pub body: bytes::Bytes,
    pub payload: Value,
}

impl Request {
    /// The body as text (lossy for non-UTF-8), built only when a template
    /// or command needs it.
    pub fn body_text(&self) -> std::borrow::Cow<'_, str> {
        String::from_utf8_lossy(&self.body)
    }
}

/// A query string as ordered pairs, percent-decoded.
pub fn query_pairs(query: Option<&str>) -> Vec<(String, String)> {
    query
        .map(|q| {
            url::form_urlencoded::parse(q.as_bytes())
                .into_owned()
                .collect()
        })
        .unwrap_or_default()
}
