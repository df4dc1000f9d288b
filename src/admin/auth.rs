//! Who may ask: the admin token (or, for the live stream, a stream ticket)
//! when one is set, loopback clients only when none is, and the looser gate
//! in front of the dashboard's files.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::Response;
use subtle::ConstantTimeEq;

use super::AdminState;
use super::error::ApiError;
use super::ticket::StreamTickets;

/// What the admin middleware needs: the app and the stream tickets it handed out.
#[derive(Clone)]
pub(super) struct Gate {
    pub(super) app: Arc<AdminState>,
    pub(super) tickets: Arc<StreamTickets>,
}

/// Without an admin token, only loopback clients are answered.
fn loopback_only(peer: SocketAddr) -> Result<(), ApiError> {
    let ip = peer.ip();
    let loopback = ip.is_loopback()
        || matches!(ip, IpAddr::V6(v6) if v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback()));
    if loopback {
        Ok(())
    } else {
        Err(ApiError::LoopbackOnly)
    }
}

/// The dashboard's files: open when a token is set (a browser cannot send
/// it when navigating, and the files hold no data), else loopback only.
pub(super) async fn dashboard_gate(
    State(gate): State<Gate>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    req: Request,
    next: Next,
) -> Result<Response, ApiError> {
    if gate.app.admin_token.is_none() {
        loopback_only(peer)?;
    }
    Ok(next.run(req).await)
}

/// Bearer token when configured (or, for `GET /api/stream` only, a stream
/// ticket); otherwise loopback only.
pub(super) async fn require_admin(
    State(gate): State<Gate>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    req: Request,
    next: Next,
) -> Result<Response, ApiError> {
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
                return Err(ApiError::TokenRequired);
            }
        }
        None => loopback_only(peer)?,
    }
    Ok(next.run(req).await)
}
