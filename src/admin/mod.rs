//! Health checks and the admin API (SPEC §6).
//!
//! `/healthz` and `/readyz` are open. Everything under `/api/` needs the
//! bearer token when one is configured, and otherwise answers loopback
//! clients only. The one exception is `GET /api/stream?ticket=`, opened by a
//! single-use ticket from `POST /api/stream/ticket` (a browser's EventSource
//! cannot send the token as a header, and a token in a URL ends up in logs).
//! The dashboard's files hold no data: with a token set they are served to
//! anyone (the page then asks for the token), without one to loopback only.

mod ticket;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::{Json, Router, routing::get};
use serde_json::json;
use subtle::ConstantTimeEq;

use axum::extract::{Path, Query};
use serde_json::Value;

use self::ticket::{StreamTickets, TICKET_TTL};
use crate::ids::{DeliveryId, EventId, RequestId};
use crate::rules::RuleSet;
use crate::store::DeliveryState;
use crate::store::{Page, RetryOutcome, StoreError, StoredAttempt, StoredDelivery, StoredEvent};

/// What the admin API, the health checks and the dashboard need; built by `server`.
pub struct AdminState {
    pub rules: Arc<crate::watch::LiveRules>,
    pub store: crate::store::SharedStore,
    pub admin_token: Option<String>,
    /// Rung after a replay or a retry, so the dispatcher starts at once.
    pub wake: Arc<tokio::sync::Notify>,
    /// New events and delivery state changes, for `GET /api/stream`.
    pub stream: crate::bus::Stream,
    /// The supervised background tasks, for `/readyz`.
    pub tasks: crate::supervise::Tasks,
    /// Delivery targets: in-flight attempts and breakers.
    pub targets: Arc<crate::dispatch::targets::Targets>,
}

/// What the admin middleware needs: the app and the stream tickets it handed out.
#[derive(Clone)]
struct Gate {
    app: Arc<AdminState>,
    tickets: Arc<StreamTickets>,
}

pub fn router(app: Arc<AdminState>) -> Router<Arc<AdminState>> {
    let tickets = Arc::new(StreamTickets::default());
    let gate = Gate { app, tickets };
    let dashboard = Router::new()
        .route("/", get(dashboard))
        .route("/dashboard.js", get(dashboard_js))
        .route("/dashboard.css", get(dashboard_css))
        .route_layer(axum::middleware::from_fn_with_state(
            gate.clone(),
            dashboard_gate,
        ));
    let api = Router::new()
        .route("/api/rules", get(rules))
        .route("/api/events", get(events))
        .route("/api/events/{id}", get(event))
        .route("/api/events/{id}/replay", axum::routing::post(replay))
        .route("/api/deliveries", get(deliveries))
        .route("/api/deliveries/{id}", get(delivery))
        .route("/api/deliveries/{id}/retry", axum::routing::post(retry))
        .route("/api/targets", get(targets))
        .route("/api/stream", get(stream))
        .route(
            "/api/stream/ticket",
            axum::routing::post({
                let tickets = gate.tickets.clone();
                move || stream_ticket(tickets)
            }),
        )
        .route_layer(axum::middleware::from_fn_with_state(gate, require_admin));
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .merge(dashboard)
        .merge(api)
}

/// Prometheus text; no ids in labels, no secrets, so it is open like the health checks.
async fn metrics(State(app): State<Arc<AdminState>>) -> Response {
    if let Ok(depth) = app.store.queue_depth().await {
        crate::telemetry::METRICS
            .queue_depth
            .set(i64::try_from(depth).unwrap_or(i64::MAX));
    }
    if let Ok(oldest) = app.store.oldest_waiting().await {
        let age = oldest.map_or(0, |at| (crate::clock::now_ms() - at).max(0));
        crate::telemetry::METRICS
            .oldest_waiting_seconds
            .set(age as f64 / 1000.0);
    }
    for t in app.targets.snapshot(std::time::Instant::now()) {
        crate::telemetry::target_in_flight(&t.target, t.in_flight);
    }
    let s = app.store.stats().await;
    crate::telemetry::store_stats(
        s.writer_queue,
        s.database_bytes,
        s.wal_bytes,
        s.disk_free_bytes,
    );
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        crate::telemetry::METRICS.render(),
    )
        .into_response()
}

/// The dashboard: a page, its script and its style sheet, embedded in the
/// binary; the page talks only to this API.
const DASHBOARD: &str = include_str!("dashboard.html");
const DASHBOARD_JS: &str = include_str!("dashboard.js");
const DASHBOARD_CSS: &str = include_str!("dashboard.css");

/// Nothing inline runs and nothing is loaded from elsewhere: payload values
/// reach the page only as text, and should one ever become markup, its
/// handlers and scripts still do not run.
const DASHBOARD_CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; \
     object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'none'";

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CONTENT_SECURITY_POLICY, DASHBOARD_CSP),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::REFERRER_POLICY, "no-referrer"),
        ],
        body,
    )
        .into_response()
}

async fn dashboard() -> Response {
    asset("text/html; charset=utf-8", DASHBOARD)
}

async fn dashboard_js() -> Response {
    asset("text/javascript; charset=utf-8", DASHBOARD_JS)
}

async fn dashboard_css() -> Response {
    asset("text/css; charset=utf-8", DASHBOARD_CSS)
}

/// `POST /api/stream/ticket`: a single-use ticket for `GET /api/stream?ticket=`.
async fn stream_ticket(tickets: Arc<StreamTickets>) -> Response {
    (
        [(header::CACHE_CONTROL, "no-store")],
        Json(json!({ "ticket": tickets.issue(), "expires_in": TICKET_TTL.as_secs() })),
    )
        .into_response()
}

async fn healthz() -> Json<serde_json::Value> {
    Json(json!({ "status": "ok" }))
}

async fn readyz(State(app): State<Arc<AdminState>>) -> Response {
    let rules_loaded = app.rules.status().loaded;
    let store = app.store.ping().await;
    let tasks_ok = app.tasks.healthy();
    let ready = rules_loaded && store.is_ok() && tasks_ok;
    let body = json!({
        "status": if ready { "ready" } else { "not ready" },
        "rules_loaded": rules_loaded,
        "store": match &store { Ok(()) => "ok".to_owned(), Err(e) => e.to_string() },
        "tasks": app.tasks.snapshot(),
    });
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body)).into_response()
}

/// Without an admin token, only loopback clients are answered.
fn loopback_only(peer: SocketAddr) -> Option<Response> {
    let ip = peer.ip();
    let loopback = ip.is_loopback()
        || matches!(ip, std::net::IpAddr::V6(v6) if v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback()));
    (!loopback).then(|| {
        (StatusCode::FORBIDDEN, Json(json!({ "error": "the admin API answers loopback clients only unless an admin token is set" })))
            .into_response()
    })
}

/// The dashboard's files: open when a token is set (a browser cannot send
/// it when navigating, and the files hold no data), else loopback only.
async fn dashboard_gate(
    State(gate): State<Gate>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    req: Request,
    next: Next,
) -> Response {
    if gate.app.admin_token.is_none()
        && let Some(refused) = loopback_only(peer)
    {
        return refused;
    }
    next.run(req).await
}

/// Bearer token when configured (or, for `GET /api/stream` only, a stream
/// ticket); otherwise loopback only.
async fn require_admin(
    State(gate): State<Gate>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    req: Request,
    next: Next,
) -> Response {
    match &gate.app.admin_token {
        Some(token) => {
            let given = req
                .headers()
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "));
            let bearer = given.is_some_and(|g| bool::from(g.as_bytes().ct_eq(token.as_bytes())));
            let ticket = || {
                req.uri().path() == "/api/stream"
                    && req.uri().query().is_some_and(|q| {
                        url::form_urlencoded::parse(q.as_bytes())
                            .find(|(k, _)| k == "ticket")
                            .is_some_and(|(_, t)| gate.tickets.redeem(&t))
                    })
            };
            if !(bearer || ticket()) {
                let mut resp = (
                    StatusCode::UNAUTHORIZED,
                    Json(json!({ "error": "admin token required" })),
                )
                    .into_response();
                resp.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    header::HeaderValue::from_static("Bearer"),
                );
                return resp;
            }
        }
        None => {
            if let Some(refused) = loopback_only(peer) {
                return refused;
            }
        }
    }
    next.run(req).await
}

async fn rules(State(app): State<Arc<AdminState>>) -> Response {
    let set = app.rules.current();
    let status = app.rules.status();
    answer(json!({
        "version": set.version,
        "loaded_at": crate::clock::rfc3339(set.loaded_at),
        "files": set.files,
        "sources": set.sources.iter().map(|s| json!({
            "name": s.name,
            "path": s.path,
            "methods": s.methods,
            "verify": s.verifier.as_ref().map(|v| v.scheme_name()),
            "allow_ips": s.allow_ips.iter().map(|n| n.to_string()).collect::<Vec<_>>(),
            "max_body": s.max_body,
            "rate_limit": s.rate_limit.map(|r| format!("{}/{}", r.count, match r.per.as_secs() { 1 => "s", 60 => "m", _ => "h" })),
            "dedup": s.dedup.as_ref().map(|d| d.source()),
            "file": s.file,
            "line": s.pos.line,
        })).collect::<Vec<_>>(),
        "rules": rules_json(&set),
        "warnings": set.warnings,
        "reload": status,
    }))
}

fn rules_json(set: &RuleSet) -> Vec<serde_json::Value> {
    set.rules
        .iter()
        .map(|r| {
            json!({
                "name": r.name,
                "sources": r.sources,
                "enabled": r.enabled,
                "conditions": r.when.is_some(),
                "actions": r.actions.iter().map(|a| json!({"name": a.name, "type": a.type_name()})).collect::<Vec<_>>(),
                "responds": r.respond.as_ref().map(|x| json!({"status": x.status, "body": x.body.is_some()})),
                "file": r.file,
                "line": r.pos.line,
            })
        })
        .collect()
}

// ---------------------------------------------------------------------------
// Events and deliveries.

/// Page size when `?limit=` is not given, and the most one page may hold.
const DEFAULT_LIMIT: u32 = 50;
const MAX_LIMIT: u32 = 500;

#[derive(serde::Deserialize)]
struct ListQuery {
    source: Option<String>,
    matched: Option<bool>,
    status: Option<String>,
    limit: Option<u32>,
    before: Option<String>,
}

impl ListQuery {
    fn page(&self) -> Page {
        Page {
            limit: self.limit.unwrap_or(DEFAULT_LIMIT).clamp(1, MAX_LIMIT),
            before: self.before.clone(),
        }
    }
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(json!({ "error": message.into() }))).into_response()
}

fn store_error(e: StoreError) -> Response {
    tracing::error!(error = %e, "admin API: store error");
    error(
        StatusCode::SERVICE_UNAVAILABLE,
        "the store is not available",
    )
}

/// Header names whose values are credentials.
fn is_secret_header(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    [
        "authorization",
        "cookie",
        "signature",
        "token",
        "secret",
        "api-key",
        "apikey",
        "hmac",
    ]
    .iter()
    .any(|s| n.contains(s))
}

/// Every answer of the API leaves through here: secrets masked (SPEC §8).
fn answer(mut body: Value) -> Response {
    crate::redact::json(&mut body);
    Json(body).into_response()
}

/// `attempts` counts over the delivery's life; `attempts_in_budget` is what
/// the retry policy counts against `budget` (the action's current
/// `retry.attempts`, null when the rule or action is gone), and a manual retry
/// starts it again.
fn delivery_json(set: &RuleSet, d: &StoredDelivery) -> Value {
    let budget = set
        .rule(&d.rule)
        .and_then(|r| r.actions.iter().find(|a| a.name == d.action))
        .map(|a| a.retry.attempts);
    json!({
        "id": d.id, "event_id": d.event_id, "rule": d.rule, "action": d.action, "type": d.action_type,
        "status": d.status, "attempts": d.attempts, "attempts_in_budget": d.attempts_in_budget,
        "budget": budget, "manual_retries": d.manual_retries, "retried_by": d.retried_by,
        "replayed_by": d.replayed_by, "serialize_key": d.serialize_key,
        "created_at": crate::clock::rfc3339_ms(d.created_at_ms),
    })
}

/// A retry or replay answer, with the id of the request that made it both in
/// the body and in `X-Request-Id` (the same id is recorded on the deliveries
/// and attempts it starts).
fn with_request_id(request: &RequestId, mut resp: Response) -> Response {
    if let Ok(v) = header::HeaderValue::from_str(request.as_str()) {
        resp.headers_mut()
            .insert(header::HeaderName::from_static("x-request-id"), v);
    }
    resp
}

fn event_summary(set: &RuleSet, e: &StoredEvent) -> Value {
    json!({
        "id": e.id, "source": e.source, "received_at": crate::clock::rfc3339_ms(e.received_at_ms), "method": e.method,
        "path": e.path, "matched": e.matched, "deliveries": e.deliveries.iter().map(|d| delivery_json(set, d)).collect::<Vec<_>>(),
    })
}

async fn events(State(app): State<Arc<AdminState>>, Query(q): Query<ListQuery>) -> Response {
    match app
        .store
        .event_page(q.source.clone(), q.matched, q.page())
        .await
    {
        Ok(list) => {
            let next = list.last().map(|e| e.id.to_string());
            let set = app.rules.current();
            let body = json!({ "events": list.iter().map(|e| event_summary(&set, e)).collect::<Vec<_>>(), "next_before": next });
            answer(body)
        }
        Err(e) => store_error(e),
    }
}

async fn event(State(app): State<Arc<AdminState>>, Path(id): Path<String>) -> Response {
    let Some(id) = EventId::parse(&id) else {
        return error(StatusCode::NOT_FOUND, format!("no event {id}"));
    };
    let e = match app.store.event(&id).await {
        Ok(Some(e)) => e,
        Ok(None) => return error(StatusCode::NOT_FOUND, format!("no event {id}")),
        Err(e) => return store_error(e),
    };
    let set = app.rules.current();
    let mut deliveries = Vec::new();
    for d in &e.deliveries {
        let attempts = app.store.attempts(&d.id).await.unwrap_or_default();
        let mut dj = delivery_json(&set, d);
        dj["attempt_log"] = attempts_json(&attempts);
        deliveries.push(dj);
    }
    let headers: Vec<Value> = e
        .headers
        .iter()
        .map(|(k, v)| {
            json!([
                k,
                if is_secret_header(k) {
                    "[redacted]"
                } else {
                    v.as_str()
                }
            ])
        })
        .collect();
    let mut trace = e.trace.clone();
    if set.rule_count(&e.source) > crate::evaluate::EXPLAIN_ALL_UP_TO {
        let req = e.request();
        crate::evaluate::explain_missing(&set, &req, &mut trace);
    }
    let body = json!({
        "id": e.id, "source": e.source, "received_at": crate::clock::rfc3339_ms(e.received_at_ms), "method": e.method,
        "path": e.path, "query": e.query, "headers": headers, "body": String::from_utf8_lossy(&e.body),
        "payload": e.payload, "facts": e.facts, "trace": trace, "matched": e.matched, "deliveries": deliveries,
    });
    answer(body)
}

fn attempts_json(attempts: &[StoredAttempt]) -> Value {
    Value::Array(
        attempts
            .iter()
            .map(|a| {
                json!({
                    "number": a.number, "budget_number": a.budget_number, "round": a.round,
                    "after_retry": a.round > 0, "requested_by": a.requested_by, "started_at": crate::clock::rfc3339_ms(a.started_at_ms), "duration_ms": a.duration_ms,
                    "outcome": a.outcome, "status_code": a.status_code, "exit_code": a.exit_code, "error": a.error,
                    "response": a.response,
                })
            })
            .collect(),
    )
}

async fn replay(State(app): State<Arc<AdminState>>, Path(id): Path<String>) -> Response {
    let request = RequestId::new();
    with_request_id(&request, replay_as(&app, &id, &request).await)
}

async fn replay_as(app: &AdminState, id: &str, request: &RequestId) -> Response {
    let Some(id) = EventId::parse(id) else {
        return error(StatusCode::NOT_FOUND, format!("no event {id}"));
    };
    let e = match app.store.event(&id).await {
        Ok(Some(e)) => e,
        Ok(None) => return error(StatusCode::NOT_FOUND, format!("no event {id}")),
        Err(e) => return store_error(e),
    };
    let set = app.rules.current();
    let req = e.request();
    let eval = crate::evaluate::evaluate(&set, &req);
    let new = eval.new_deliveries();
    let ids: Vec<String> = new.iter().map(|d| d.id.to_string()).collect();
    if let Err(e) = app.store.add_deliveries(&id, new, request).await {
        return store_error(e);
    }
    app.wake.notify_one();
    tracing::info!(event_id = %id, request_id = %request, matched = %crate::telemetry::Joined(&eval.matched), deliveries = ids.len(), "event replayed");
    answer(json!({
        "event_id": id, "matched": eval.matched, "deliveries": ids, "trace": eval.trace,
        "request_id": request,
    }))
}

async fn deliveries(State(app): State<Arc<AdminState>>, Query(q): Query<ListQuery>) -> Response {
    if let Some(s) = &q.status
        && DeliveryState::parse(s).is_none()
    {
        return error(
            StatusCode::BAD_REQUEST,
            format!("unknown status `{s}`: pending, running, succeeded, retrying, dead or skipped"),
        );
    }
    match app.store.delivery_page(q.status.clone(), q.page()).await {
        Ok(list) => {
            let next = list.last().map(|d| d.id.to_string());
            let set = app.rules.current();
            answer(
                json!({ "deliveries": list.iter().map(|d| delivery_json(&set, d)).collect::<Vec<_>>(), "next_before": next }),
            )
        }
        Err(e) => store_error(e),
    }
}

async fn delivery(State(app): State<Arc<AdminState>>, Path(id): Path<String>) -> Response {
    let Some(id) = DeliveryId::parse(&id) else {
        return error(StatusCode::NOT_FOUND, format!("no delivery {id}"));
    };
    match app.store.delivery(&id).await {
        Ok(Some(d)) => {
            let attempts = match app.store.attempts(&id).await {
                Ok(a) => a,
                Err(e) => return store_error(e),
            };
            let mut body = delivery_json(&app.rules.current(), &d);
            body["attempt_log"] = attempts_json(&attempts);
            answer(body)
        }
        Ok(None) => error(StatusCode::NOT_FOUND, format!("no delivery {id}")),
        Err(e) => store_error(e),
    }
}

async fn retry(State(app): State<Arc<AdminState>>, Path(id): Path<String>) -> Response {
    let request = RequestId::new();
    with_request_id(&request, retry_as(&app, &id, &request).await)
}

async fn retry_as(app: &AdminState, id: &str, request: &RequestId) -> Response {
    let Some(id) = DeliveryId::parse(id) else {
        return error(StatusCode::NOT_FOUND, format!("no delivery {id}"));
    };
    match app.store.retry(&id, request).await {
        Ok(RetryOutcome::Queued) => {
            app.wake.notify_one();
            tracing::info!(delivery_id = %id, request_id = %request, "delivery queued again by hand");
            Json(json!({ "id": id, "status": "pending", "request_id": request })).into_response()
        }
        Ok(RetryOutcome::NotFound) => error(StatusCode::NOT_FOUND, format!("no delivery {id}")),
        Ok(RetryOutcome::NotRetryable(status)) => error(
            StatusCode::CONFLICT,
            format!("delivery {id} is {status}: only dead or skipped deliveries can be retried"),
        ),
        Err(e) => store_error(e),
    }
}

/// Where deliveries go: attempts in flight and the state of each breaker.
async fn targets(State(app): State<Arc<AdminState>>) -> Response {
    let list = app.targets.snapshot(std::time::Instant::now());
    answer(json!({ "targets": list }))
}

// ---------------------------------------------------------------------------
// Live stream.

/// Server-sent events: `event: event` for each stored event, `event: delivery` for each delivery state change.
async fn stream(State(app): State<Arc<AdminState>>) -> Response {
    use axum::response::sse::{Event, KeepAlive, Sse};
    let rx = app.stream.subscribe();
    let events = futures_util::stream::unfold(rx, |mut rx| async move {
        loop {
            match rx.recv().await {
                Ok(mut v) => {
                    crate::redact::json(&mut v);
                    let kind = v["type"].as_str().unwrap_or("message").to_owned();
                    let event = Event::default().event(kind).data(v.to_string());
                    return Some((Ok::<_, std::convert::Infallible>(event), rx));
                }
                // A slow client missed some messages; it goes on with the newest.
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return None,
            }
        }
    });
    Sse::new(events)
        .keep_alive(KeepAlive::default())
        .into_response()
}
