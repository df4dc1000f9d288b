//! Matching one decoded request against every rule of its source.
//!
//! Shared by ingest (which stores the result), `hookwire test` (which prints
//! it) and replay: one function decides which rules fire and which deliveries
//! are created, and records the trace that explains it.

use serde::Serialize;
use serde_json::Value;

use crate::matching::{Input, Step};
use crate::rules::{Rule, RuleSet};
use crate::template::{self, Context};

/// The facts of a request that templates and conditions see.
#[derive(Debug, Clone)]
pub struct Request {
    pub event_id: String,
    pub source: String,
    /// RFC 3339.
    pub received_at: String,
    pub method: String,
    pub path: String,
    /// Lowercase names, first value each.
    pub headers: Vec<(String, String)>,
    pub query: Vec<(String, String)>,
    /// The raw body; templates see it as text ([`Request::body_text`]).
    pub body: bytes::Bytes,
    pub payload: Value,
}

impl Request {
    /// The template context (SPEC §4.4) for `rule`.
    pub fn context(&self, rule: &str, attempt: u32) -> Context {
        template::context(
            self.event_facts(),
            self.payload.clone(),
            pairs_to_object(&self.headers),
            pairs_to_object(&self.query),
            rule,
            attempt,
        )
    }

    /// [`Request::context`] without copying the payload, for the dispatcher.
    pub fn into_context(self, rule: &str, attempt: u32) -> Context {
        template::context(
            self.event_facts(),
            self.payload,
            pairs_to_object(&self.headers),
            pairs_to_object(&self.query),
            rule,
            attempt,
        )
    }

    /// `event` in templates.
    fn event_facts(&self) -> Value {
        serde_json::json!({
            "id": self.event_id,
            "source": self.source,
            "received_at": self.received_at,
            "method": self.method,
            "path": self.path,
            "body": self.body_text(),
        })
    }

    /// The request of a stored event, as replay and the API evaluate it again.
    pub fn from_stored(e: &crate::store::StoredEvent) -> Self {
        Self {
            event_id: e.id.to_string(),
            source: e.source.clone(),
            received_at: crate::clock::rfc3339_ms(e.received_at_ms),
            method: e.method.clone(),
            path: e.path.clone(),
            headers: e.headers.clone(),
            query: query_pairs(Some(&e.query)),
            body: bytes::Bytes::from(e.body.clone()),
            payload: e.payload.clone(),
        }
    }

    /// The body as text (lossy for non-UTF-8), built only when a template
    /// or command needs it.
    pub fn body_text(&self) -> std::borrow::Cow<'_, str> {
        String::from_utf8_lossy(&self.body)
    }

    pub fn input(&self) -> Input<'_> {
        Input {
            payload: &self.payload,
            headers: &self.headers,
            query: &self.query,
            method: &self.method,
        }
    }
}

/// First value wins for headers (SPEC §4.4); query keeps the first too.
fn pairs_to_object(pairs: &[(String, String)]) -> Value {
    let mut map = serde_json::Map::new();
    for (k, v) in pairs {
        map.entry(k.clone())
            .or_insert_with(|| Value::String(v.clone()));
    }
    Value::Object(map)
}

/// The trace of one rule (SPEC §4.3).
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq)]
pub struct RuleTrace {
    pub rule: String,
    pub matched: bool,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub disabled: bool,
    pub conditions: Vec<Step>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub actions: Vec<ActionTrace>,
}

#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq)]
pub struct ActionTrace {
    pub action: String,
    #[serde(rename = "type")]
    pub action_type: String,
    /// Whether a delivery was created (false when the action's own `when` is false).
    pub delivery: bool,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Step>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// A delivery to create.
#[derive(Debug, Clone)]
pub struct PlannedDelivery {
    pub rule: String,
    pub action: String,
    pub action_type: &'static str,
    pub serialize_key: Option<String>,
}

#[derive(Debug, Clone, Default)]
pub struct Evaluation {
    pub matched: Vec<String>,
    pub trace: Vec<RuleTrace>,
    pub deliveries: Vec<PlannedDelivery>,
}

impl Evaluation {
    /// One new `pending` delivery per planned delivery, each with a fresh id.
    pub fn new_deliveries(&self) -> Vec<crate::store::NewDelivery> {
        self.deliveries
            .iter()
            .map(|d| crate::store::NewDelivery {
                id: crate::ids::DeliveryId::new(),
                rule: d.rule.clone(),
                action: d.action.clone(),
                action_type: d.action_type.to_owned(),
                serialize_key: d.serialize_key.clone(),
            })
            .collect()
    }

    /// The first matched rule (in load order) that answers with `respond`.
    pub fn responder<'a>(&self, set: &'a RuleSet) -> Option<&'a Rule> {
        self.matched
            .iter()
            .filter_map(|m| set.rule(m))
            .find(|r| r.respond.is_some())
    }
}

/// Sources with at most this many rules store the trace of every rule with
/// each event. Beyond it only the rules that matched are explained at ingest:
/// explaining a thousand misses would cost more than the rest of the request
/// and write hundreds of kilobytes per event. The API explains the others when
/// the event is read ([`explain_missing`]), against the live rules.
pub const EXPLAIN_ALL_UP_TO: usize = 32;

/// Evaluates every rule of `req.source`.
pub fn evaluate(set: &RuleSet, req: &Request) -> Evaluation {
    let explain_all = set.rule_count(&req.source) <= EXPLAIN_ALL_UP_TO;
    evaluate_with(set, req, explain_all)
}

/// Evaluates every rule of `req.source`; with `explain_all` false, rules that
/// do not match are left out of the trace.
pub fn evaluate_with(set: &RuleSet, req: &Request, explain_all: bool) -> Evaluation {
    let input = req.input();
    let mut out = Evaluation::default();
    for rule in set.rules_of(&req.source) {
        let fires = || rule.enabled && rule.when.as_ref().is_none_or(|c| c.eval(&input));
        if !explain_all && !fires() {
            continue;
        }
        if !rule.enabled {
            out.trace.push(RuleTrace {
                rule: rule.name.clone(),
                matched: false,
                disabled: true,
                conditions: Vec::new(),
                actions: Vec::new(),
            });
            continue;
        }
        let (matched, conditions) = match &rule.when {
            Some(c) => c.explain(&input),
            None => (true, Vec::new()),
        };
        let mut actions = Vec::new();
        if matched {
            out.matched.push(rule.name.clone());
            let mut ctx: Option<Context> = None;
            for action in &rule.actions {
                let (create, steps) = match &action.when {
                    Some(c) => c.explain(&input),
                    None => (true, Vec::new()),
                };
                let mut error = None;
                let serialize_key = match (&action.serialize_by, create) {
                    (Some(t), true) => {
                        let ctx = ctx.get_or_insert_with(|| req.context(&rule.name, 1));
                        match t.render(ctx) {
                            Ok(k) => Some(k),
                            Err(e) => {
                                // The key cannot be rendered: run unserialized rather than lose the event.
                                error = Some(format!("serialize_by: {e}"));
                                None
                            }
                        }
                    }
                    _ => None,
                };
                if create {
                    out.deliveries.push(PlannedDelivery {
                        rule: rule.name.clone(),
                        action: action.name.clone(),
                        action_type: action.type_name(),
                        serialize_key,
                    });
                }
                actions.push(ActionTrace {
                    action: action.name.clone(),
                    action_type: action.type_name().to_owned(),
                    delivery: create,
                    conditions: steps,
                    error,
                });
            }
        }
        out.trace.push(RuleTrace {
            rule: rule.name.clone(),
            matched,
            disabled: false,
            conditions,
            actions,
        });
    }
    out
}

/// Completes a stored trace (a JSON array of rule traces) with the rules of
/// the source it leaves out (see [`EXPLAIN_ALL_UP_TO`]), explained now against
/// `set`, each marked `"explained_on_read": true`.
pub fn explain_missing(set: &RuleSet, req: &Request, trace: &mut Value) {
    let Value::Array(items) = trace else {
        return;
    };
    let present: std::collections::HashSet<String> = items
        .iter()
        .filter_map(|t| t.get("rule").and_then(Value::as_str).map(str::to_owned))
        .collect();
    let all = evaluate_with(set, req, true);
    for t in all.trace {
        if present.contains(&t.rule) {
            continue;
        }
        if let Ok(mut v) = serde_json::to_value(&t) {
            v["explained_on_read"] = Value::Bool(true);
            items.push(v);
        }
    }
}

/// The pairs of a raw query string (`a=1&b=2`), decoded.
pub fn query_pairs(query: Option<&str>) -> Vec<(String, String)> {
    query
        .map(|q| {
            url::form_urlencoded::parse(q.as_bytes())
                .into_owned()
                .collect()
        })
        .unwrap_or_default()
}
