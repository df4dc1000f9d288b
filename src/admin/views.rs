//! How the admin API shows things: the JSON shape of each answer, built from
//! stored events, deliveries and attempts, the live rule set and the targets.
//! Headers that carry credentials are masked here; every other secret is
//! masked on the way out (`api::answer`).

use std::borrow::Cow;

use serde::Serialize;
use serde_json::Value;

use crate::dispatch::targets::TargetStatus;
use crate::ids::{DeliveryId, EventId, InstanceId, RequestId};
use crate::matching::RuleTrace;
use crate::rules::{Action, Diagnostic, Respond, Rule, RuleSet, Source};
use crate::store::{AttemptOutcome, DeliveryState, StoredAttempt, StoredDelivery, StoredEvent};
use crate::watch::ReloadStatus;

// ---------------------------------------------------------------------------
// Rules.

/// `GET /api/rules`: the live set and how reloading it has gone.
#[derive(Serialize)]
pub(super) struct RuleSetView<'a> {
    /// The instance that answers (the owner of the leases it claims).
    instance: &'a InstanceId,
    version: u64,
    loaded_at: String,
    files: &'a [String],
    sources: Vec<SourceView<'a>>,
    rules: Vec<RuleView<'a>>,
    warnings: &'a [Diagnostic],
    reload: &'a ReloadStatus,
}

impl<'a> RuleSetView<'a> {
    pub(super) fn new(
        set: &'a RuleSet,
        reload: &'a ReloadStatus,
        instance: &'a InstanceId,
    ) -> Self {
        Self {
            instance,
            version: set.version,
            loaded_at: crate::clock::rfc3339(set.loaded_at),
            files: &set.files,
            sources: set.sources.iter().map(SourceView::new).collect(),
            rules: set.rules.iter().map(RuleView::new).collect(),
            warnings: &set.warnings,
            reload,
        }
    }
}

#[derive(Serialize)]
struct SourceView<'a> {
    name: &'a str,
    path: &'a str,
    methods: &'a [String],
    /// The verification scheme's name.
    verify: Option<&'static str>,
    allow_ips: Vec<String>,
    max_body: Option<u64>,
    /// `N/s`, `N/m` or `N/h`, as written in rule files.
    rate_limit: Option<String>,
    /// The dedup key's template as written.
    dedup: Option<&'a str>,
    file: &'a str,
    line: u32,
}

impl<'a> SourceView<'a> {
    fn new(s: &'a Source) -> Self {
        Self {
            name: &s.name,
            path: &s.path,
            methods: &s.methods,
            verify: s.verifier.as_ref().map(|v| v.scheme_name()),
            allow_ips: s.allow_ips.iter().map(|n| n.to_string()).collect(),
            max_body: s.max_body,
            rate_limit: s.rate_limit.map(|r| {
                let per = match r.per.as_secs() {
                    1 => "s",
                    60 => "m",
                    _ => "h",
                };
                format!("{}/{per}", r.count)
            }),
            dedup: s.dedup.as_ref().map(|d| d.source()),
            file: &s.file,
            line: s.pos.line,
        }
    }
}

#[derive(Serialize)]
struct RuleView<'a> {
    name: &'a str,
    sources: &'a [String],
    enabled: bool,
    /// Whether the rule has a `when`.
    conditions: bool,
    actions: Vec<ActionView<'a>>,
    responds: Option<RespondView>,
    file: &'a str,
    line: u32,
}

impl<'a> RuleView<'a> {
    fn new(r: &'a Rule) -> Self {
        Self {
            name: &r.name,
            sources: &r.sources,
            enabled: r.enabled,
            conditions: r.when.is_some(),
            actions: r.actions.iter().map(ActionView::new).collect(),
            responds: r.respond.as_ref().map(RespondView::new),
            file: &r.file,
            line: r.pos.line,
        }
    }
}

#[derive(Serialize)]
struct ActionView<'a> {
    name: &'a str,
    #[serde(rename = "type")]
    kind: &'static str,
    /// The actions it runs after (SPEC §4.7).
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    needs: &'a [String],
    /// `delay`, in milliseconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    delay_ms: Option<u64>,
}

impl<'a> ActionView<'a> {
    fn new(a: &'a Action) -> Self {
        Self {
            name: &a.name,
            kind: a.type_name(),
            needs: &a.needs,
            delay_ms: a.delay.map(|d| d.as_millis() as u64),
        }
    }
}

#[derive(Serialize)]
struct RespondView {
    status: u16,
    /// Whether the answer has a body (the template itself is not shown).
    body: bool,
}

impl RespondView {
    fn new(r: &Respond) -> Self {
        Self {
            status: r.status,
            body: r.body.is_some(),
        }
    }
}

// ---------------------------------------------------------------------------
// Deliveries and their attempts.

/// `attempts` counts over the delivery's life; `attempts_in_budget` is what
/// the retry policy counts against `budget` (the action's current
/// `retry.attempts`, null when the rule or action is gone), and a manual retry
/// starts it again.
#[derive(Serialize)]
pub(super) struct DeliveryView<'a> {
    id: &'a DeliveryId,
    event_id: &'a EventId,
    rule: &'a str,
    action: &'a str,
    #[serde(rename = "type")]
    action_type: &'a str,
    status: DeliveryState,
    attempts: u32,
    attempts_in_budget: u32,
    budget: Option<u32>,
    manual_retries: u32,
    retried_by: Option<&'a str>,
    replayed_by: Option<&'a str>,
    serialize_key: Option<&'a str>,
    created_at: String,
    /// For a step: the actions it runs after.
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    needs: &'a [String],
    /// When its next attempt is due, while it is pending or retrying.
    due_at: Option<String>,
    due_at_ms: Option<i64>,
    /// Why it was skipped.
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<&'a str>,
    /// A step's `when`, as evaluated when its needs had succeeded.
    #[serde(skip_serializing_if = "<[crate::matching::Step]>::is_empty")]
    when: &'a [crate::matching::Step],
    /// What its successful attempt returned, for the steps that need it.
    #[serde(skip_serializing_if = "Option::is_none")]
    output: Option<&'a Value>,
}

impl<'a> DeliveryView<'a> {
    pub(super) fn new(set: &RuleSet, d: &'a StoredDelivery) -> Self {
        let budget = set
            .rule(&d.rule)
            .and_then(|r| r.actions.iter().find(|a| a.name == d.action))
            .map(|a| a.retry.attempts);
        Self {
            id: &d.id,
            event_id: &d.event_id,
            rule: &d.rule,
            action: &d.action,
            action_type: &d.action_type,
            status: d.status,
            attempts: d.attempts,
            attempts_in_budget: d.attempts_in_budget,
            budget,
            manual_retries: d.manual_retries,
            retried_by: d.retried_by.as_deref(),
            replayed_by: d.replayed_by.as_deref(),
            serialize_key: d.serialize_key.as_deref(),
            created_at: crate::clock::rfc3339_ms(d.created_at_ms),
            needs: &d.needs,
            due_at: d.due_at_ms.map(crate::clock::rfc3339_ms),
            due_at_ms: d.due_at_ms,
            reason: d.reason.as_deref(),
            when: &d.when,
            output: d.output.as_ref(),
        }
    }
}

/// A delivery with every attempt it made.
#[derive(Serialize)]
pub(super) struct DeliveryDetail<'a> {
    #[serde(flatten)]
    delivery: DeliveryView<'a>,
    attempt_log: Vec<AttemptView<'a>>,
}

impl<'a> DeliveryDetail<'a> {
    pub(super) fn new(set: &RuleSet, d: &'a StoredDelivery, attempts: &'a [StoredAttempt]) -> Self {
        Self {
            delivery: DeliveryView::new(set, d),
            attempt_log: attempts.iter().map(AttemptView::new).collect(),
        }
    }
}

#[derive(Serialize)]
struct AttemptView<'a> {
    number: u32,
    budget_number: u32,
    round: u32,
    /// Made after a manual retry (round above 0).
    after_retry: bool,
    requested_by: Option<&'a str>,
    started_at: String,
    duration_ms: i64,
    outcome: AttemptOutcome,
    status_code: Option<u16>,
    exit_code: Option<i32>,
    error: Option<&'a str>,
    response: &'a str,
}

impl<'a> AttemptView<'a> {
    fn new(a: &'a StoredAttempt) -> Self {
        Self {
            number: a.number,
            budget_number: a.budget_number,
            round: a.round,
            after_retry: a.round > 0,
            requested_by: a.requested_by.as_deref(),
            started_at: crate::clock::rfc3339_ms(a.started_at_ms),
            duration_ms: a.duration_ms,
            outcome: a.outcome,
            status_code: a.status_code,
            exit_code: a.exit_code,
            error: a.error.as_deref(),
            response: &a.response,
        }
    }
}

/// `GET /api/deliveries`: one page, and where the next one starts.
#[derive(Serialize)]
pub(super) struct DeliveryPage<'a> {
    pub(super) deliveries: Vec<DeliveryView<'a>>,
    pub(super) next_before: Option<String>,
}

// ---------------------------------------------------------------------------
// Events.

/// What every view of an event starts with: which request arrived where.
#[derive(Serialize)]
struct EventHead<'a> {
    id: &'a EventId,
    source: &'a str,
    received_at: String,
    received_at_ms: i64,
    method: &'a str,
    path: &'a str,
}

impl<'a> EventHead<'a> {
    fn new(e: &'a StoredEvent) -> Self {
        Self {
            id: &e.id,
            source: &e.source,
            received_at: crate::clock::rfc3339_ms(e.received_at_ms),
            received_at_ms: e.received_at_ms,
            method: &e.method,
            path: &e.path,
        }
    }
}

/// An event in a list: what arrived, what matched, its deliveries.
#[derive(Serialize)]
pub(super) struct EventSummary<'a> {
    #[serde(flatten)]
    head: EventHead<'a>,
    matched: &'a [String],
    deliveries: Vec<DeliveryView<'a>>,
}

impl<'a> EventSummary<'a> {
    pub(super) fn new(set: &RuleSet, e: &'a StoredEvent) -> Self {
        Self {
            head: EventHead::new(e),
            matched: &e.matched,
            deliveries: e
                .deliveries
                .iter()
                .map(|d| DeliveryView::new(set, d))
                .collect(),
        }
    }
}

/// `GET /api/events`: one page, and where the next one starts.
#[derive(Serialize)]
pub(super) struct EventPage<'a> {
    pub(super) events: Vec<EventSummary<'a>>,
    pub(super) next_before: Option<String>,
}

/// `GET /api/events/{id}`: the whole request (credential headers masked),
/// the match trace and each delivery with its attempts.
#[derive(Serialize)]
pub(super) struct EventDetail<'a> {
    #[serde(flatten)]
    head: EventHead<'a>,
    query: &'a str,
    /// `[name, value]` pairs, in the order they arrived.
    headers: Vec<(&'a str, &'a str)>,
    body: Cow<'a, str>,
    payload: &'a Value,
    facts: &'a [String],
    trace: Vec<RuleTrace>,
    matched: &'a [String],
    deliveries: Vec<DeliveryDetail<'a>>,
}

impl<'a> EventDetail<'a> {
    /// `trace` is the stored one, completed where it was cut short;
    /// `deliveries` are the event's own, each with its attempts.
    pub(super) fn new(
        e: &'a StoredEvent,
        trace: Vec<RuleTrace>,
        deliveries: Vec<DeliveryDetail<'a>>,
    ) -> Self {
        let headers = e
            .headers
            .iter()
            .map(|(k, v)| {
                let v = if is_secret_header(k) {
                    crate::redact::MASK
                } else {
                    v.as_str()
                };
                (k.as_str(), v)
            })
            .collect();
        Self {
            head: EventHead::new(e),
            query: &e.query,
            headers,
            body: String::from_utf8_lossy(&e.body),
            payload: &e.payload,
            facts: &e.facts,
            trace,
            matched: &e.matched,
            deliveries,
        }
    }
}

/// Header names whose values are credentials.
fn is_secret_header(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    [
        "authorization",
        "cookie",
        "signature",
        "token",
        "secret",
        "api-key",
        "apikey",
        "hmac",
    ]
    .iter()
    .any(|s| n.contains(s))
}

/// `POST /api/events/{id}/replay`: what matched this time and the new deliveries.
#[derive(Serialize)]
pub(super) struct Replayed<'a> {
    pub(super) event_id: &'a EventId,
    pub(super) matched: &'a [String],
    /// Ids of the deliveries the replay created.
    pub(super) deliveries: Vec<String>,
    pub(super) trace: &'a [RuleTrace],
    pub(super) request_id: &'a RequestId,
}

// ---------------------------------------------------------------------------
// Targets.

/// `GET /api/targets`
#[derive(Serialize)]
pub(super) struct TargetList {
    pub(super) targets: Vec<TargetStatus>,
}
