//! Health checks and the admin API (SPEC §6).
//!
//! `/healthz` and `/readyz` are open. Everything under `/api/` needs the
//! bearer token when one is configured, and otherwise answers loopback
//! clients only. The one exception is `GET /api/stream?ticket=`, opened by a
//! single-use ticket from `POST /api/stream/ticket` (a browser's EventSource
//! cannot send the token as a header, and a token in a URL ends up in logs).
//! The dashboard's files hold no data: with a token set they are served to
//! anyone (the page then asks for the token), without one to loopback only.
//!
//! Here: the state and the routes. Who may ask is `auth`, the answers of the
//! API are `api` (shaped by `views`, failing as one `ApiError`), the live
//! stream is `stream`, the checks and metrics `health`, the page `dashboard`.

mod api;
mod auth;
mod backtest;
mod dashboard;
mod error;
mod health;
mod stream;
mod ticket;
mod views;

use std::sync::Arc;

use axum::Router;
use axum::middleware::from_fn_with_state;
use axum::routing::{get, post};

use self::auth::Gate;
use self::ticket::StreamTickets;

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
    /// This process, the owner of the leases it claims (shown by `/api/rules`).
    pub instance: crate::ids::InstanceId,
}

pub fn router(app: Arc<AdminState>) -> Router<Arc<AdminState>> {
    let tickets = Arc::new(StreamTickets::default());
    let gate = Gate { app, tickets };
    let dashboard = Router::new()
        .route("/", get(dashboard::page))
        .route("/dashboard.js", get(dashboard::script))
        .route("/dashboard.css", get(dashboard::style))
        .route_layer(from_fn_with_state(gate.clone(), auth::dashboard_gate));
    let api = Router::new()
        .route("/api/rules", get(api::rules))
        .route("/api/events", get(api::events))
        .route("/api/events/{id}", get(api::event))
        .route("/api/events/{id}/replay", post(api::replay))
        .route("/api/deliveries", get(api::deliveries))
        .route("/api/deliveries/{id}", get(api::delivery))
        .route("/api/deliveries/{id}/retry", post(api::retry))
        .route("/api/targets", get(api::targets))
        .route("/api/overview", get(api::overview))
        .route("/api/backtest", post(backtest::candidate))
        .route("/api/backtest/last-reload", get(backtest::last_reload))
        .route("/api/stream", get(stream::stream))
        .route(
            "/api/stream/ticket",
            post({
                let tickets = gate.tickets.clone();
                move || stream::ticket(tickets)
            }),
        )
        .route_layer(from_fn_with_state(gate, auth::require_admin));
    Router::new()
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/metrics", get(health::metrics))
        .merge(dashboard)
        .merge(api)
}
