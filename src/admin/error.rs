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
    #[error("the store is not available")]
    Store(#[from] StoreError),
    /// An answer could not be turned into JSON: a bug here, not the client's
    /// and not the store's.
    #[error("internal error")]
    Encode(#[from] serde_json::Error),
}

impl ApiError {
    fn status(&self) -> StatusCode {
        match self {
            ApiError::TokenRequired => StatusCode::UNAUTHORIZED,
            ApiError::LoopbackOnly => StatusCode::FORBIDDEN,
            ApiError::NoEvent(_) | ApiError::NoDelivery(_) => StatusCode::NOT_FOUND,
            ApiError::UnknownStatus(_) => StatusCode::BAD_REQUEST,
            ApiError::NotRetryable { .. } | ApiError::BehindNeed { .. } => StatusCode::CONFLICT,
            ApiError::Store(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Encode(_) => StatusCode::INTERNAL_SERVER_ERROR,
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
            _ => {}
        }
        let mut resp = (self.status(), Json(json!({ "error": self.to_string() }))).into_response();
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
