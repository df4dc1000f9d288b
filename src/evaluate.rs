//! Matching one decoded request against every rule of its source.
//!
//! Shared by ingest (which stores the result), `hookwire test` (which prints
//! it) and replay: one function decides which rules fire and which deliveries
//! are created, and records the trace that explains it.

use crate::decode::{self, DecodeError};
use crate::matching::{ActionTrace, Input, RuleTrace};
use crate::request::Request;
use crate::rules::{Rule, RuleSet, Source};

/// A request as it arrives at a source, before its body is decoded: from
/// the wire (ingest), or from a file (`hookwire test`, rule tests). Its
/// `request.payload` is filled in by [`decode`].
pub struct Arrival<'a> {
    pub source: &'a Source,
    pub content_type: Option<&'a str>,
    pub request: Request,
}

/// A decoded request, with what decoding found out.
pub struct Decoded {
    pub request: Request,
    /// Decoding facts that explain a miss (see [`decode::Decoded::facts`]).
    pub facts: Vec<String>,
    /// The payload is the JSON body itself (the store keeps the body only).
    pub payload_is_body: bool,
}

/// Decodes the body as the source's content type and `json_fields` say, and
/// builds the request that conditions and templates see.
pub async fn decode(a: Arrival<'_>) -> Result<Decoded, DecodeError> {
    let mut request = a.request;
    let d = decode::decode(a.content_type, request.body.clone(), &a.source.json_fields).await?;
    request.payload = d.payload;
    Ok(Decoded {
        request,
        facts: d.facts,
        payload_is_body: d.payload_is_body,
    })
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
    let input = Input::of(req);
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
                explained_on_read: false,
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
            let mut ctx: Option<crate::template::Context> = None;
            for action in &rule.actions {
                let (create, steps) = match &action.when {
                    Some(c) => c.explain(&input),
                    None => (true, Vec::new()),
                };
                let mut error = None;
                let serialize_key = match (&action.serialize_by, create) {
                    (Some(t), true) => {
                        let ctx =
                            ctx.get_or_insert_with(|| crate::template::context(req, &rule.name, 1));
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
            explained_on_read: false,
        });
    }
    out
}

/// Completes a stored trace with the rules of the source it leaves out (see
/// [`EXPLAIN_ALL_UP_TO`]), explained now against `set`, each marked
/// `explained_on_read`.
pub fn explain_missing(set: &RuleSet, req: &Request, trace: &mut Vec<RuleTrace>) {
    let present: std::collections::HashSet<String> = trace.iter().map(|t| t.rule.clone()).collect();
    let all = evaluate_with(set, req, true);
    for mut t in all.trace {
        if !present.contains(&t.rule) {
            t.explained_on_read = true;
            trace.push(t);
        }
    }
}
