//! Every way an admin request ends without its answer, and the one place
//! each becomes a status and an `{"error": …}` body.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::ids::DeliveryId;
use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub(super) enum ApiError {
    /// A token is set and the request brought neither it nor a stream ticket.
    #[error("admin token required")]
    TokenRequired,
    /// No token is set and the client is not on this host.
    #[error("the admin API answers loopback clients only unless an admin token is set")]
    LoopbackOnly,
    /// The id as the client gave it (not an event id, or no such event).
    #[error("no event {0}")]
    NoEvent(String),
    #[error("no delivery {0}")]
    NoDelivery(String),
    /// `?status=` names no delivery state.
    #[error(
        "unknown status `{0}`: waiting, pending, running, succeeded, retrying, dead or skipped"
    )]
    UnknownStatus(String),
    #[error("delivery {id} is {status}: only dead or skipped deliveries can be retried")]
    NotRetryable { id: DeliveryId, status: String },
    /// A step skipped because a need ended without success.
    #[error(
        "delivery {id} is a step skipped because it needs {need}: retry that one, and this step runs after it"
    )]
    BehindNeed { id: DeliveryId, need: String },
    /// A request body or parameter that cannot be used, with why.
    #[error("{0}")]
    BadRequest(String),
    /// The rule files sent for a backtest do not load.
    #[error("the candidate rule files do not load")]
    CandidateInvalid(Vec<crate::rules::Diagnostic>),
    /// `GET /api/backtest/last-reload` before any reload replaced a set.
    #[error("no reload has replaced a rule set since this instance started: nothing to compare")]
    NoReload,
    #[error("the store is not available")]
    Store(#[from] StoreError),
    /// An answer could not be turned into JSON: a bug here, not the client's
    /// and not the store's.
    #[error("internal error")]
    Encode(#[from] serde_json::Error),
    /// A task of the answer's own failed (a panic in a backtest): a bug here.
    #[error("internal error")]
    Internal(String),
}

impl ApiError {
    fn status(&self) -> StatusCode {
        match self {
            ApiError::TokenRequired => StatusCode::UNAUTHORIZED,
            ApiError::LoopbackOnly => StatusCode::FORBIDDEN,
            ApiError::NoEvent(_) | ApiError::NoDelivery(_) => StatusCode::NOT_FOUND,
            ApiError::UnknownStatus(_) | ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::CandidateInvalid(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::NoReload => StatusCode::NOT_FOUND,
            ApiError::NotRetryable { .. } | ApiError::BehindNeed { .. } => StatusCode::CONFLICT,
            ApiError::Store(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Encode(_) | ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        // Internal causes stay in the log; the client gets only the sentence.
        match &self {
            ApiError::Store(e) => tracing::error!(error = %e, "admin API: store error"),
            ApiError::Encode(e) => {
                tracing::error!(error = %e, "admin API: the answer could not be encoded");
            }
            ApiError::Internal(e) => tracing::error!(error = %e, "admin API: internal error"),
            _ => {}
        }
        let mut body = json!({ "error": self.to_string() });
        if let ApiError::CandidateInvalid(errors) = &self {
            // Positions and messages; like every answer, no secret in them.
            let mut list = json!(errors);
            crate::redact::json(&mut list);
            body["errors"] = list;
        }
        let mut resp = (self.status(), Json(body)).into_response();
        if let ApiError::TokenRequired = self {
            resp.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        resp
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn answered(e: ApiError) -> (StatusCode, serde_json::Value, Response) {
        let resp = e.into_response();
        let status = resp.status();
        let (parts, body) = resp.into_parts();
        let bytes = axum::body::to_bytes(body, 1 << 16).await.unwrap();
        let json = serde_json::from_slice(&bytes).unwrap();
        (
            status,
            json,
            Response::from_parts(parts, axum::body::Body::empty()),
        )
    }

    #[tokio::test]
    async fn an_answer_that_cannot_be_encoded_is_an_internal_error_not_a_store_outage() {
        let cause = serde_json::from_str::<serde_json::Value>("{").unwrap_err();
        let (status, body, _) = answered(ApiError::from(cause)).await;
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(body, json!({ "error": "internal error" }));

        let (status, body, _) =
            answered(ApiError::from(StoreError::Unavailable("disk full".into()))).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(body, json!({ "error": "the store is not available" }));
    }

    #[tokio::test]
    async fn a_missing_token_is_asked_for_as_a_bearer_token() {
        let (status, body, resp) = answered(ApiError::TokenRequired).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert_eq!(body, json!({ "error": "admin token required" }));
        assert_eq!(resp.headers()[header::WWW_AUTHENTICATE], "Bearer");
    }
}
