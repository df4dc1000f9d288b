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
    /// For a step: the actions of the same rule it needs.
    pub needs: Vec<String>,
    /// `delay` of the action.
    pub delay: Option<std::time::Duration>,
}

#[derive(Debug, Clone, Default)]
pub struct Evaluation {
    pub matched: Vec<String>,
    pub trace: Vec<RuleTrace>,
    pub deliveries: Vec<PlannedDelivery>,
}

impl Evaluation {
    /// One new delivery per planned delivery, each with a fresh id; a step
    /// names the ids of its needs. `base_ms` is when the event arrived (or
    /// was replayed): a `delay` counts from it. A step's delay counts from
    /// when its needs succeeded, and is applied then.
    pub fn new_deliveries(&self, base_ms: i64) -> Vec<crate::store::NewDelivery> {
        let ids: Vec<crate::ids::DeliveryId> = self
            .deliveries
            .iter()
            .map(|_| crate::ids::DeliveryId::new())
            .collect();
        let id_of = |rule: &str, action: &str| {
            self.deliveries
                .iter()
                .position(|d| d.rule == rule && d.action == action)
                .map(|i| ids[i].clone())
        };
        self.deliveries
            .iter()
            .zip(&ids)
            .map(|(d, id)| crate::store::NewDelivery {
                id: id.clone(),
                rule: d.rule.clone(),
                action: d.action.clone(),
                action_type: d.action_type.to_owned(),
                serialize_key: d.serialize_key.clone(),
                due_at_ms: d
                    .delay
                    .filter(|_| d.needs.is_empty())
                    .map(|delay| base_ms.saturating_add(delay.as_millis() as i64)),
                needs: d.needs.iter().filter_map(|n| id_of(&d.rule, n)).collect(),
                need_names: d.needs.clone(),
                has_steps: self
                    .deliveries
                    .iter()
                    .any(|o| o.rule == d.rule && o.needs.contains(&d.action)),
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
            plan_actions(rule, req, &input, &mut out.deliveries, &mut actions);
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

/// Decides the deliveries of a matched rule's actions, with their trace:
/// an action whose `when` holds gets one; a step (it `needs` others) gets
/// one, `waiting`, when each of its needs got one, and its `when` is left
/// for when they have succeeded.
fn plan_actions(
    rule: &Rule,
    req: &Request,
    input: &Input<'_>,
    deliveries: &mut Vec<PlannedDelivery>,
    actions: &mut Vec<ActionTrace>,
) {
    let mut ctx: Option<crate::template::Context> = None;
    let mut planned: Vec<&str> = Vec::new();
    // Steps may be written before their needs: decided once every action
    // they need is.
    for action in rule.ordered_actions() {
        let step = !action.needs.is_empty();
        let (mut create, steps) = match (&action.when, step) {
            (Some(c), false) => c.explain(input),
            _ => (true, Vec::new()),
        };
        let mut note = None;
        if step {
            let missing: Vec<&str> = action
                .needs
                .iter()
                .map(String::as_str)
                .filter(|n| !planned.contains(n))
                .collect();
            if missing.is_empty() {
                note = action.when.as_ref().map(|_| {
                    format!(
                        "its `when` is evaluated when {} succeeded",
                        action.needs.join(" and ")
                    )
                });
            } else {
                create = false;
                note = Some(format!(
                    "no delivery: it needs {}, which has none",
                    missing.join(" and ")
                ));
            }
        }
        let mut error = None;
        let serialize_key = match (&action.serialize_by, create) {
            (Some(t), true) => {
                let ctx = ctx.get_or_insert_with(|| crate::template::context(req, &rule.name, 1));
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
            planned.push(&action.name);
            deliveries.push(PlannedDelivery {
                rule: rule.name.clone(),
                action: action.name.clone(),
                action_type: action.type_name(),
                serialize_key,
                needs: action.needs.clone(),
                delay: action.delay,
            });
        }
        actions.push(ActionTrace {
            action: action.name.clone(),
            action_type: action.type_name().to_owned(),
            delivery: create,
            conditions: steps,
            error,
            needs: action.needs.clone(),
            note,
        });
    }
    if rule.has_steps() {
        // The trace lists the actions in file order.
        actions.sort_by_key(|t| rule.actions.iter().position(|a| a.name == t.action));
    }
}

/// A step's `when` (SPEC §4.7) over the payload and the outputs of the
/// actions it runs after: true when it has none.
pub fn step_when(
    action: &crate::rules::Action,
    req: &Request,
    outputs: &serde_json::Map<String, serde_json::Value>,
) -> (bool, Vec<crate::matching::Step>) {
    match &action.when {
        Some(when) => when.explain(&Input::of(req).with_steps(outputs)),
        None => (true, Vec::new()),
    }
}

/// Puts into an event's trace the `when` of each step as it was evaluated
/// when its needs had succeeded (it is stored with the step's delivery).
/// A replay's deliveries of the same action come later in `deliveries`:
/// the first evaluated one is shown.
pub fn with_step_conditions(trace: &mut [RuleTrace], deliveries: &[crate::store::StoredDelivery]) {
    for rule in trace.iter_mut() {
        for line in rule.actions.iter_mut().filter(|a| !a.needs.is_empty()) {
            let evaluated = deliveries
                .iter()
                .find(|d| d.rule == rule.rule && d.action == line.action && !d.when.is_empty());
            if let Some(d) = evaluated {
                line.conditions = d.when.clone();
                line.note = Some(format!(
                    "its `when` was evaluated when {} succeeded",
                    line.needs.join(" and ")
                ));
            }
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn set(yaml: &str) -> RuleSet {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("r.yaml"), yaml).unwrap();
        crate::rules::load(
            &[dir.path().to_path_buf()],
            &Default::default(),
            &Default::default(),
        )
        .unwrap()
    }

    fn request(payload: serde_json::Value) -> Request {
        Request {
            event_id: "evt_1".into(),
            source: "form".into(),
            received_at: String::new(),
            method: "POST".into(),
            path: "/hooks/form".into(),
            headers: Vec::new(),
            query: Vec::new(),
            body: bytes::Bytes::new(),
            payload,
        }
    }

    const RULES: &str = "sources:\n  form: {}\nrules:\n  - name: lead\n    source: form\n    actions:\n      - name: announce\n        needs: crm\n        when: { step: crm, exists: true }\n        command: { argv: [x] }\n      - name: crm\n        when: { path: $.email, exists: true }\n        delay: 1s\n        command: { argv: [x] }\n";

    /// A step written before its need still gets the need's id; its `when`
    /// waits for the need's output; a `delay` dates the first attempt.
    #[test]
    fn a_step_is_planned_after_its_needs_with_their_ids() {
        let set = set(RULES);
        let eval = evaluate(&set, &request(serde_json::json!({"email": "a@b.c"})));
        let planned = eval.new_deliveries(1_000);
        let (crm, announce) = (&planned[0], &planned[1]);
        assert_eq!(
            (crm.action.as_str(), announce.action.as_str()),
            ("crm", "announce")
        );
        assert_eq!(announce.needs, std::slice::from_ref(&crm.id));
        assert_eq!(announce.need_names, ["crm"]);
        assert!(crm.has_steps && !announce.has_steps);
        assert_eq!((crm.due_at_ms, announce.due_at_ms), (Some(2_000), None));
        // The trace keeps the file's order and says when the step's `when` is read.
        let lines = &eval.trace[0].actions;
        assert_eq!(lines[0].action, "announce");
        assert_eq!(
            lines[0].note.as_deref(),
            Some("its `when` is evaluated when crm succeeded")
        );
        assert!(lines[0].conditions.is_empty());
    }

    /// A need whose own `when` is false gets no delivery, and neither does
    /// its step: the trace says why.
    #[test]
    fn a_step_whose_need_has_no_delivery_has_none() {
        let set = set(RULES);
        let eval = evaluate(&set, &request(serde_json::json!({})));
        assert!(eval.deliveries.is_empty());
        let lines = &eval.trace[0].actions;
        assert!(!lines[0].delivery);
        assert_eq!(
            lines[0].note.as_deref(),
            Some("no delivery: it needs crm, which has none")
        );
    }
}
