//! The dashboard: a page, its script and its style sheet, embedded in the
//! binary and served with a strict content security policy; the page talks
//! only to the admin API.

use axum::http::header;
use axum::response::{IntoResponse, Response};

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

/// `GET /`
pub(super) async fn page() -> Response {
    asset("text/html; charset=utf-8", DASHBOARD)
}

/// `GET /dashboard.js`
pub(super) async fn script() -> Response {
    asset("text/javascript; charset=utf-8", DASHBOARD_JS)
}

/// `GET /dashboard.css`
pub(super) async fn style() -> Response {
    asset("text/css; charset=utf-8", DASHBOARD_CSS)
}
