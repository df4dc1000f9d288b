//! `POST /api/backtest` (a candidate rule set, sent as files, against the
//! live one) and `GET /api/backtest/last-reload` (what the last reload
//! changed), both over this daemon's stored events.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::response::Response;
use serde::Deserialize;

use super::AdminState;
use super::api::answer;
use super::error::ApiError;
use crate::backtest::{self, Scope};

/// The body of `POST /api/backtest`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Candidate {
    /// The candidate's rule files: `[{"name": "rules/github.yaml", "text": "…"}]`.
    files: Vec<CandidateFile>,
    last: Option<u32>,
    since: Option<String>,
    source: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CandidateFile {
    name: String,
    text: String,
}

/// Which events: `last` (default 1,000), `since` (`24h`), `source`.
#[derive(Deserialize, Default)]
pub(super) struct ScopeQuery {
    last: Option<u32>,
    since: Option<String>,
    source: Option<String>,
}

impl ScopeQuery {
    fn scope(self) -> Result<Scope, ApiError> {
        let since_ms = match &self.since {
            None => None,
            Some(text) => {
                let d: crate::config::Duration = text
                    .parse()
                    .map_err(|e: String| ApiError::BadRequest(format!("`since`: {e}")))?;
                let back = i64::try_from(d.get().as_millis()).unwrap_or(i64::MAX);
                Some(crate::clock::now_ms().saturating_sub(back))
            }
        };
        if self.last == Some(0) {
            return Err(ApiError::BadRequest("`last` must be at least 1".to_owned()));
        }
        Ok(Scope {
            last: self.last,
            since_ms,
            source: self.source,
        })
    }
}

/// `POST /api/backtest`
pub(super) async fn candidate(
    State(app): State<Arc<AdminState>>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let c: Candidate = serde_json::from_slice(&body)
        .map_err(|e| ApiError::BadRequest(format!("the body is not a backtest request: {e}")))?;
    if c.files.is_empty() {
        return Err(ApiError::BadRequest(
            "`files` is empty: send the candidate's rule files".to_owned(),
        ));
    }
    let files: Vec<(String, String)> = c.files.into_iter().map(|f| (f.name, f.text)).collect();
    let candidate = app
        .rules
        .load_candidate(&files)
        .map_err(|f| ApiError::CandidateInvalid(f.errors))?;
    let scope = ScopeQuery {
        last: c.last,
        since: c.since,
        source: c.source,
    }
    .scope()?;
    compared(&app, app.rules.current(), Arc::new(candidate), &scope).await
}

/// The report of `baseline` against `candidate` over the events of `scope`.
async fn compared(
    app: &AdminState,
    baseline: Arc<crate::rules::RuleSet>,
    candidate: Arc<crate::rules::RuleSet>,
    scope: &Scope,
) -> Result<Response, ApiError> {
    let events = backtest::events(app.store.as_ref(), scope).await?;
    // Evaluating and rendering thousands of events is CPU work: off the runtime's threads.
    let report =
        tokio::task::spawn_blocking(move || backtest::compare(&baseline, &candidate, &events))
            .await
            .map_err(|e| ApiError::Internal(e.to_string()))?;
    answer(&report)
}

/// `GET /api/backtest/last-reload?last=&since=&source=`
pub(super) async fn last_reload(
    State(app): State<Arc<AdminState>>,
    Query(q): Query<ScopeQuery>,
) -> Result<Response, ApiError> {
    let Some(previous) = app.rules.previous() else {
        return Err(ApiError::NoReload);
    };
    let scope = q.scope()?;
    compared(&app, previous, app.rules.current(), &scope).await
}
