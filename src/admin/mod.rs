//! Health checks and the admin API (SPEC §6).
//!
//! `/healthz` and `/readyz` are open. Everything under `/api/` needs the
//! bearer token when one is configured, and otherwise answers loopback
//! clients only.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::{Json, Router, routing::get};
use serde_json::json;
use subtle::ConstantTimeEq;

use crate::rules::RuleSet;
use crate::server::AppState;

pub fn router(app: Arc<AppState>) -> Router<Arc<AppState>> {
    let api = Router::new()
        .route("/api/rules", get(rules))
        .route_layer(axum::middleware::from_fn_with_state(app, require_admin));
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .merge(api)
}

async fn healthz() -> Json<serde_json::Value> {
    Json(json!({ "status": "ok" }))
}

async fn readyz(State(app): State<Arc<AppState>>) -> Response {
    let rules_loaded = app.rules.status().loaded;
    let store = app.store.ping().await;
    let ready = rules_loaded && store.is_ok();
    let body = json!({
        "status": if ready { "ready" } else { "not ready" },
        "rules_loaded": rules_loaded,
        "store": match &store { Ok(()) => "ok".to_owned(), Err(e) => e.to_string() },
    });
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body)).into_response()
}

/// Bearer token when configured; otherwise loopback only.
async fn require_admin(
    State(app): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    req: Request,
    next: Next,
) -> Response {
    match &app.admin_token {
        Some(token) => {
            let given = req
                .headers()
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "))
                .unwrap_or("");
            if !bool::from(given.as_bytes().ct_eq(token.as_bytes())) {
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
            let ip = peer.ip();
            let loopback = ip.is_loopback()
                || matches!(ip, std::net::IpAddr::V6(v6) if v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback()));
            if !loopback {
                return (StatusCode::FORBIDDEN, Json(json!({ "error": "the admin API answers loopback clients only unless an admin token is set" })))
                    .into_response();
            }
        }
    }
    next.run(req).await
}

async fn rules(State(app): State<Arc<AppState>>) -> Json<serde_json::Value> {
    let set = app.rules.current();
    let status = app.rules.status();
    Json(json!({
        "version": set.version,
        "loaded_at": crate::ingest::rfc3339(set.loaded_at),
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
