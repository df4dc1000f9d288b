//! From an HTTP request to a stored event (SPEC §2):
//! source → guard → verify → decode → dedup → match → store → respond.
//!
//! The answer is sent only after the store has committed the event and its
//! deliveries; every answer carries `X-Request-Id` (the event id when stored).
//! [`IngestError`] maps each way a request can fail to its SPEC §5 answer in
//! one place.

pub mod guard;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::body::Body;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::evaluate::{self, Arrival, Evaluation};
use crate::ids::EventId;
use crate::request::Request;
use crate::rules::{HttpBody, RuleSet};
use crate::store::{IngestOutcome, NewEvent, StoreError};
use crate::telemetry;

/// Header sections larger than this are refused (SPEC §5). hyper already
/// bounds what it buffers; this makes the limit exact and the answer a 431.
pub const MAX_HEADER_BYTES: usize = 64 * 1024;

/// The whole body must arrive within this time of the handler starting to
/// read it: a sender trickling bytes (slowloris) is answered 408 instead of
/// holding a connection and a task forever. 1 MiB in 10 s is 100 KiB/s, far
/// below what any webhook sender manages.
pub const BODY_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a sender is asked to wait when the store cannot take its event.
const STORE_RETRY_AFTER_SECS: u64 = 5;

/// Every way an ingest request ends without being stored.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error("no source at {0}")]
    UnknownPath(String),
    #[error("method {method} not allowed; allowed: {allowed}")]
    Method { method: String, allowed: String },
    #[error("address not allowed")]
    IpNotAllowed,
    #[error("rate limit exceeded")]
    RateLimited(Duration),
    #[error("body larger than {0} bytes")]
    TooLarge(u64),
    #[error("headers larger than {MAX_HEADER_BYTES} bytes")]
    HeadersTooLarge,
    #[error("could not read the body: {0}")]
    BodyRead(String),
    #[error("the body did not arrive within {} s", BODY_READ_TIMEOUT.as_secs())]
    BodyTimeout,
    #[error("verification failed")]
    Unverified(#[source] crate::verify::VerifyError),
    #[error("{0}")]
    Decode(#[from] crate::decode::DecodeError),
    #[error("cannot store the event now")]
    Store(#[from] StoreError),
}

impl IngestError {
    fn status(&self) -> StatusCode {
        match self {
            IngestError::UnknownPath(_) => StatusCode::NOT_FOUND,
            IngestError::Method { .. } => StatusCode::METHOD_NOT_ALLOWED,
            IngestError::IpNotAllowed => StatusCode::FORBIDDEN,
            IngestError::RateLimited(_) => StatusCode::TOO_MANY_REQUESTS,
            IngestError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            IngestError::HeadersTooLarge => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            IngestError::BodyRead(_) | IngestError::Decode(_) => StatusCode::BAD_REQUEST,
            IngestError::BodyTimeout => StatusCode::REQUEST_TIMEOUT,
            IngestError::Unverified(_) => StatusCode::UNAUTHORIZED,
            IngestError::Store(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// A short label for logs and metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            IngestError::UnknownPath(_) => "unknown_path",
            IngestError::Method { .. } => "method",
            IngestError::IpNotAllowed => "ip",
            IngestError::RateLimited(_) => "rate_limited",
            IngestError::TooLarge(_) => "too_large",
            IngestError::HeadersTooLarge => "headers_too_large",
            IngestError::BodyRead(_) => "body_read",
            IngestError::BodyTimeout => "body_timeout",
            IngestError::Unverified(_) => "verify",
            IngestError::Decode(_) => "decode",
            IngestError::Store(_) => "store",
        }
    }

    fn into_response_with_id(self, request_id: &EventId) -> Response {
        let status = self.status();
        // Internal causes stay in the log; the sender gets only what is theirs to fix.
        let mut resp = (status, axum::Json(json!({ "error": self.to_string() }))).into_response();
        let h = resp.headers_mut();
        match &self {
            IngestError::RateLimited(wait) => {
                h.insert(
                    header::RETRY_AFTER,
                    HeaderValue::from(wait.as_secs_f64().ceil().max(1.0) as u64),
                );
            }
            IngestError::Store(_) => {
                h.insert(
                    header::RETRY_AFTER,
                    HeaderValue::from(STORE_RETRY_AFTER_SECS),
                );
            }
            IngestError::Method { allowed, .. } => {
                if let Ok(v) = HeaderValue::from_str(allowed) {
                    h.insert(header::ALLOW, v);
                }
            }
            _ => {}
        }
        set_request_id(&mut resp, request_id);
        resp
    }
}

fn set_request_id(resp: &mut Response, id: &EventId) {
    if let Ok(v) = HeaderValue::from_str(id.as_str()) {
        resp.headers_mut()
            .insert(HeaderName::from_static("x-request-id"), v);
    }
}

/// What the ingest path needs; built by `server`.
pub struct IngestState {
    pub rules: Arc<crate::watch::LiveRules>,
    pub store: crate::store::SharedStore,
    /// Kept across reloads: a reload never resets a limit.
    pub rate_limits: guard::RateLimits,
    pub max_body: u64,
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// Rung when an event with deliveries is committed, so the dispatcher starts at once.
    pub wake: Arc<tokio::sync::Notify>,
    /// New events, for `GET /api/stream`.
    pub stream: crate::bus::Stream,
}

/// The fallback handler: every path that is not the admin API or a health check.
pub async fn handle(
    State(app): State<Arc<IngestState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let started = std::time::Instant::now();
    let id = EventId::new();
    let set = app.rules.current();
    let source = set
        .source_for_path(uri.path())
        .map_or("", |s| s.name.as_str());
    if !source.is_empty() {
        telemetry::request_received(source);
    }
    let resp = match ingest(&app, &set, &id, peer, method, &uri, headers, body).await {
        Ok(resp) => resp,
        Err(e) => {
            match &e {
                // The store logs that it cannot commit, and when it can again,
                // once each: a line per refused request would bury both.
                IngestError::Store(cause) if cause.is_unavailable() => {
                    telemetry::event_refused_by_store(
                        id.as_str(),
                        source,
                        uri.path(),
                        &cause.to_string(),
                    );
                }
                _ => {
                    let message = match &e {
                        IngestError::Store(cause) => {
                            format!("event not stored, answering 503: {cause}")
                        }
                        IngestError::Unverified(cause) => {
                            format!("verification failed from {peer}: {cause}")
                        }
                        other => other.to_string(),
                    };
                    let warn = matches!(e, IngestError::Store(_) | IngestError::Unverified(_));
                    telemetry::request_rejected(
                        id.as_str(),
                        source,
                        uri.path(),
                        e.reason(),
                        &message,
                        warn,
                    );
                }
            }
            e.into_response_with_id(&id)
        }
    };
    telemetry::request_finished(source, resp.status().as_u16(), started.elapsed());
    resp
}

#[allow(clippy::too_many_arguments)]
async fn ingest(
    app: &IngestState,
    set: &RuleSet,
    id: &EventId,
    peer: SocketAddr,
    method: Method,
    uri: &Uri,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, IngestError> {
    let header_bytes: usize = headers
        .iter()
        .map(|(k, v)| k.as_str().len() + v.len() + 4)
        .sum();
    if header_bytes > MAX_HEADER_BYTES {
        return Err(IngestError::HeadersTooLarge);
    }
    let path = uri.path();
    let source = set
        .source_for_path(path)
        .ok_or_else(|| IngestError::UnknownPath(path.to_owned()))?;
    if !source.methods.iter().any(|m| m == method.as_str()) {
        return Err(IngestError::Method {
            method: method.to_string(),
            allowed: source.methods.join(", "),
        });
    }
    let client = guard::client_ip(peer.ip(), &headers, &app.trusted_proxies);
    if !guard::ip_allowed(client, &source.allow_ips) {
        return Err(IngestError::IpNotAllowed);
    }
    if let Some(limit) = source.rate_limit {
        app.rate_limits
            .check(&source.name, client, limit)
            .map_err(IngestError::RateLimited)?;
    }

    let max = source.max_body.unwrap_or(app.max_body);
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > max) {
        return Err(IngestError::TooLarge(max));
    }
    // Reads at most `max` bytes; a body that goes on is refused without being buffered.
    let limited = axum::body::to_bytes(body, usize::try_from(max).unwrap_or(usize::MAX));
    let bytes = tokio::time::timeout(BODY_READ_TIMEOUT, limited)
        .await
        .map_err(|_| IngestError::BodyTimeout)?
        .map_err(|e| {
            if std::error::Error::source(&e)
                .is_some_and(|s| s.is::<http_body_util::LengthLimitError>())
            {
                IngestError::TooLarge(max)
            } else {
                IngestError::BodyRead(e.to_string())
            }
        })?;

    let now = SystemTime::now();
    if let Some(v) = &source.verifier {
        let req = crate::verify::Received {
            headers: &headers,
            query: uri.query(),
            body: &bytes,
            now,
        };
        v.verify(&req).map_err(IngestError::Unverified)?;
    }

    let decoded = evaluate::decode(Arrival {
        source,
        content_type: headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok()),
        request: Request {
            event_id: id.to_string(),
            source: source.name.clone(),
            received_at: crate::clock::rfc3339(now),
            method: method.to_string(),
            path: path.to_owned(),
            headers: header_pairs(&headers),
            query: crate::request::query_pairs(uri.query()),
            body: bytes.clone(),
            payload: serde_json::Value::Null,
        },
    })
    .await?;
    let req = decoded.request;
    let received_at_ms = crate::clock::ms(now);

    let dedup_key = match &source.dedup {
        Some(t) => match t.render(&crate::template::context(&req, "", 1)) {
            Ok(k) if !k.is_empty() => Some(k),
            Ok(_) => None,
            Err(e) => {
                tracing::warn!(event_id = %id, source = %source.name, error = %e, "dedup key could not be rendered; storing without dedup");
                None
            }
        },
        None => None,
    };

    let mut eval = evaluate::evaluate(set, &req);
    let deliveries = eval.new_deliveries(received_at_ms);
    let delivery_count = deliveries.len();
    let event = NewEvent {
        id: id.clone(),
        source: source.name.clone(),
        received_at_ms,
        method: req.method.clone(),
        path: req.path.clone(),
        query: uri.query().unwrap_or("").to_owned(),
        headers: req.headers.clone(),
        body: bytes,
        // A JSON payload is the body again: the store keeps the body only.
        payload: if decoded.payload_is_body {
            None
        } else {
            Some(encode(&req.payload)?)
        },
        facts: decoded.facts,
        trace: std::mem::take(&mut eval.trace),
        matched: eval.matched.clone(),
        dedup_key,
        deliveries,
    };

    match app.store.ingest(event).await? {
        IngestOutcome::Duplicate { first } => {
            telemetry::event_duplicate(first.as_str(), &source.name);
            let mut resp = (
                StatusCode::OK,
                axum::Json(json!({ "event_id": first, "duplicate": true })),
            )
                .into_response();
            set_request_id(&mut resp, &first);
            Ok(resp)
        }
        IngestOutcome::Stored => {
            telemetry::event_stored(id.as_str(), &source.name, &eval.matched, delivery_count);
            app.stream.publish(|| {
                json!({
                    "type": "event", "id": id, "source": source.name, "matched": eval.matched,
                    "received_at": req.received_at, "deliveries": delivery_count,
                })
            });
            if delivery_count > 0 {
                app.wake.notify_one();
            }
            let mut resp = respond(set, &eval, &req, id);
            set_request_id(&mut resp, id);
            Ok(resp)
        }
    }
}

/// JSON text for a store column (only a map with non-string keys could fail).
fn encode<T: serde::Serialize + ?Sized>(value: &T) -> Result<String, StoreError> {
    Ok(serde_json::to_string(value)?)
}

/// 202 with the matched rules, or the first matched rule's own `respond`.
fn respond(set: &RuleSet, eval: &Evaluation, req: &Request, id: &EventId) -> Response {
    let default = || {
        (
            StatusCode::ACCEPTED,
            axum::Json(json!({ "event_id": id, "matched": eval.matched })),
        )
            .into_response()
    };
    let Some(rule) = eval.responder(set) else {
        return default();
    };
    let Some(r) = &rule.respond else {
        return default();
    };
    let ctx = crate::template::context(req, &rule.name, 1);
    let status = StatusCode::from_u16(r.status).unwrap_or(StatusCode::OK);
    let rendered = match &r.body {
        None => Ok((None, Vec::new())),
        Some(HttpBody::Json(t)) => t
            .render(&ctx)
            .map(|v| (Some("application/json"), v.to_string().into_bytes())),
        Some(HttpBody::Text(t)) => t
            .render(&ctx)
            .map(|s| (Some("text/plain; charset=utf-8"), s.into_bytes())),
        Some(HttpBody::Form(fields)) => fields
            .iter()
            .map(|(k, t)| t.render(&ctx).map(|v| (k.as_str(), v)))
            .collect::<Result<Vec<_>, _>>()
            .map(|pairs| {
                let body = url::form_urlencoded::Serializer::new(String::new())
                    .extend_pairs(pairs)
                    .finish();
                (Some("application/x-www-form-urlencoded"), body.into_bytes())
            }),
    };
    let (content_type, body) = match rendered {
        Ok(x) => x,
        Err(e) => {
            tracing::warn!(event_id = %id, rule = %rule.name, error = %e, "respond body could not be rendered; answering 202");
            return default();
        }
    };
    let mut resp = Response::new(Body::from(body));
    *resp.status_mut() = status;
    if let Some(ct) = content_type {
        resp.headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static(ct));
    }
    for (name, t) in &r.headers {
        let value = t
            .render(&ctx)
            .ok()
            .and_then(|v| HeaderValue::from_str(&v).ok());
        match (HeaderName::from_bytes(name.as_bytes()), value) {
            (Ok(n), Some(v)) => {
                resp.headers_mut().insert(n, v);
            }
            _ => {
                tracing::warn!(event_id = %id, rule = %rule.name, header = %name, "respond header skipped: invalid name or value")
            }
        }
    }
    resp
}

/// Lowercase header names with their first value, in arrival order.
pub fn header_pairs(headers: &HeaderMap) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::with_capacity(headers.keys_len());
    for name in headers.keys() {
        if let Some(v) = headers.get(name) {
            out.push((
                name.as_str().to_owned(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            ));
        }
    }
    out
}
