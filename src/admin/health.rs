//! The open endpoints: liveness (`/healthz`), readiness (`/readyz`) and the
//! Prometheus metrics (`/metrics`).

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::AdminState;

pub(super) async fn healthz() -> Json<serde_json::Value> {
    Json(json!({ "status": "ok" }))
}

pub(super) async fn readyz(State(app): State<Arc<AdminState>>) -> Response {
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

/// Prometheus text; no ids in labels, no secrets, so it is open like the health checks.
pub(super) async fn metrics(State(app): State<Arc<AdminState>>) -> Response {
    if let Ok(depth) = app.store.queue_depth().await {
        crate::telemetry::queue_depth(depth);
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
