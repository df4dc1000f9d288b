//! The live stream: `GET /api/stream` (server-sent events, secrets masked)
//! and `POST /api/stream/ticket`, which hands out the single-use ticket a
//! browser opens it with.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::header;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::AdminState;
use super::ticket::{StreamTickets, TICKET_TTL};

/// `POST /api/stream/ticket`: a single-use ticket for `GET /api/stream?ticket=`.
pub(super) async fn ticket(tickets: Arc<StreamTickets>) -> Response {
    (
        [(header::CACHE_CONTROL, "no-store")],
        Json(json!({ "ticket": tickets.issue(), "expires_in": TICKET_TTL.as_secs() })),
    )
        .into_response()
}

/// Server-sent events: `event: event` for each stored event, `event: delivery` for each delivery state change.
pub(super) async fn stream(State(app): State<Arc<AdminState>>) -> Response {
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
