//! The JSON API over the rule set, stored events and deliveries, and the
//! targets: lists, single records, replay and retry. Each handler answers
//! through [`answer`] (secrets masked) or fails as an [`ApiError`].

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::json;

use super::AdminState;
use super::error::ApiError;
use super::views::{
    DeliveryDetail, DeliveryPage, DeliveryView, EventDetail, EventPage, EventSummary, Replayed,
    RuleSetView, TargetList,
};
use crate::ids::{DeliveryId, EventId, RequestId};
use crate::store::{DeliveryState, Page, RetryOutcome};

/// Page size when `?limit=` is not given, and the most one page may hold.
const DEFAULT_LIMIT: u32 = 50;
const MAX_LIMIT: u32 = 500;

#[derive(serde::Deserialize)]
pub(super) struct ListQuery {
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

/// Every answer of the API leaves through here: secrets masked (SPEC §8).
pub(super) fn answer(view: &impl Serialize) -> Result<Response, ApiError> {
    let mut body = serde_json::to_value(view)?;
    crate::redact::json(&mut body);
    Ok(Json(body).into_response())
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

pub(super) async fn rules(State(app): State<Arc<AdminState>>) -> Result<Response, ApiError> {
    let set = app.rules.current();
    let status = app.rules.status();
    answer(&RuleSetView::new(&set, &status, &app.instance))
}

pub(super) async fn events(
    State(app): State<Arc<AdminState>>,
    Query(q): Query<ListQuery>,
) -> Result<Response, ApiError> {
    let list = app
        .store
        .event_page(q.source.clone(), q.matched, q.page())
        .await?;
    let set = app.rules.current();
    answer(&EventPage {
        events: list.iter().map(|e| EventSummary::new(&set, e)).collect(),
        next_before: list.last().map(|e| e.id.to_string()),
    })
}

pub(super) async fn event(
    State(app): State<Arc<AdminState>>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let Some(id) = EventId::parse(&id) else {
        return Err(ApiError::NoEvent(id));
    };
    let Some(e) = app.store.event(&id).await? else {
        return Err(ApiError::NoEvent(id.to_string()));
    };
    let set = app.rules.current();
    // An attempt log that cannot be read shows as empty; the event still shows.
    let mut attempts = Vec::with_capacity(e.deliveries.len());
    for d in &e.deliveries {
        attempts.push(app.store.attempts(&d.id).await.unwrap_or_default());
    }
    let mut trace = e.trace.clone();
    if set.rule_count(&e.source) > crate::evaluate::EXPLAIN_ALL_UP_TO {
        let req = e.request();
        crate::evaluate::explain_missing(&set, &req, &mut trace);
    }
    crate::evaluate::with_step_conditions(&mut trace, &e.deliveries);
    let deliveries = e
        .deliveries
        .iter()
        .zip(&attempts)
        .map(|(d, a)| DeliveryDetail::new(&set, d, a))
        .collect();
    answer(&EventDetail::new(&e, trace, deliveries))
}

pub(super) async fn replay(State(app): State<Arc<AdminState>>, Path(id): Path<String>) -> Response {
    let request = RequestId::new();
    with_request_id(
        &request,
        replay_as(&app, &id, &request).await.into_response(),
    )
}

async fn replay_as(app: &AdminState, id: &str, request: &RequestId) -> Result<Response, ApiError> {
    let Some(id) = EventId::parse(id) else {
        return Err(ApiError::NoEvent(id.to_owned()));
    };
    let Some(e) = app.store.event(&id).await? else {
        return Err(ApiError::NoEvent(id.to_string()));
    };
    let set = app.rules.current();
    let req = e.request();
    let eval = crate::evaluate::evaluate(&set, &req);
    let new = eval.new_deliveries(crate::clock::now_ms());
    let ids: Vec<String> = new.iter().map(|d| d.id.to_string()).collect();
    app.store.add_deliveries(&id, new, request).await?;
    app.wake.notify_one();
    tracing::info!(event_id = %id, request_id = %request, matched = %crate::telemetry::Joined(&eval.matched), deliveries = ids.len(), "event replayed");
    answer(&Replayed {
        event_id: &id,
        matched: &eval.matched,
        deliveries: ids,
        trace: &eval.trace,
        request_id: request,
    })
}

pub(super) async fn deliveries(
    State(app): State<Arc<AdminState>>,
    Query(q): Query<ListQuery>,
) -> Result<Response, ApiError> {
    if let Some(s) = &q.status
        && DeliveryState::parse(s).is_none()
    {
        return Err(ApiError::UnknownStatus(s.clone()));
    }
    let list = app.store.delivery_page(q.status.clone(), q.page()).await?;
    let set = app.rules.current();
    answer(&DeliveryPage {
        deliveries: list.iter().map(|d| DeliveryView::new(&set, d)).collect(),
        next_before: list.last().map(|d| d.id.to_string()),
    })
}

pub(super) async fn delivery(
    State(app): State<Arc<AdminState>>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let Some(id) = DeliveryId::parse(&id) else {
        return Err(ApiError::NoDelivery(id));
    };
    let Some(d) = app.store.delivery(&id).await? else {
        return Err(ApiError::NoDelivery(id.to_string()));
    };
    let attempts = app.store.attempts(&id).await?;
    answer(&DeliveryDetail::new(&app.rules.current(), &d, &attempts))
}

pub(super) async fn retry(State(app): State<Arc<AdminState>>, Path(id): Path<String>) -> Response {
    let request = RequestId::new();
    with_request_id(
        &request,
        retry_as(&app, &id, &request).await.into_response(),
    )
}

async fn retry_as(app: &AdminState, id: &str, request: &RequestId) -> Result<Response, ApiError> {
    let Some(id) = DeliveryId::parse(id) else {
        return Err(ApiError::NoDelivery(id.to_owned()));
    };
    match app.store.retry(&id, request).await? {
        RetryOutcome::Queued => {
            app.wake.notify_one();
            tracing::info!(delivery_id = %id, request_id = %request, "delivery queued again by hand");
            Ok(
                Json(json!({ "id": id, "status": "pending", "request_id": request }))
                    .into_response(),
            )
        }
        RetryOutcome::NotFound => Err(ApiError::NoDelivery(id.to_string())),
        RetryOutcome::NotRetryable(status) => Err(ApiError::NotRetryable { id, status }),
        RetryOutcome::BehindNeed(need) => Err(ApiError::BehindNeed { id, need }),
    }
}

/// Where deliveries go: attempts in flight and the state of each breaker.
pub(super) async fn targets(State(app): State<Arc<AdminState>>) -> Result<Response, ApiError> {
    answer(&TargetList {
        targets: app.targets.snapshot(std::time::Instant::now()),
    })
}

/// `GET /api/overview`: this instance's last hour, for the dashboard's charts
/// (the queue depth read now is its newest point).
pub(super) async fn overview(State(app): State<Arc<AdminState>>) -> Result<Response, ApiError> {
    if let Ok(depth) = app.store.queue_depth().await {
        crate::telemetry::queue_depth(depth);
    }
    let now = crate::clock::now_ms();
    answer(&crate::telemetry::overview::OVERVIEW.snapshot(now, SLOWEST_SHOWN))
}

/// Actions listed under "slowest".
const SLOWEST_SHOWN: usize = 5;
