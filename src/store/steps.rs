//! Steps in the store (SPEC §4.7): what finishing a need does to the steps
//! waiting behind it, worked out once for both backends.
//!
//! A step is stored `waiting` with its event, naming the deliveries it
//! needs by id. When a need ends, the backend reads the event's deliveries
//! ([`Link`]s) and the outputs of those that succeeded, in the transaction
//! that finishes the need, and [`settle`] decides: a step whose needs all
//! succeeded is judged (its `when` over the payload and the outputs, by the
//! [`StepJudge`] the layer above provides) and becomes `pending` or
//! `skipped`; a step behind a need that is dead or skipped is skipped, and
//! so, in turn, are the steps behind it.

use std::collections::HashMap;
use std::sync::Arc;

use serde_json::Value;

use super::DeliveryState;
use crate::ids::DeliveryId;
use crate::matching::Step;
use crate::request::Request;

/// What a step's `when` came to when its needs had all succeeded.
#[derive(Debug, Clone)]
pub enum Verdict {
    /// Due at this time (its `delay` after now).
    Run { due_at_ms: i64, trace: Vec<Step> },
    /// Its `when` is false, or its rule or action is gone.
    Skip { reason: String, trace: Vec<Step> },
}

/// A step whose needs all succeeded, as the judge sees it.
pub struct Ready<'a> {
    pub rule: &'a str,
    pub action: &'a str,
    pub event: &'a Request,
    /// The outputs of every action it runs after, by action name.
    pub outputs: &'a serde_json::Map<String, Value>,
    pub now_ms: i64,
}

/// Decides steps against the live rules. Defined here, implemented above
/// (the dispatcher knows the rules; the store only knows it must ask), and
/// called inside the transaction that finishes the last need, so the
/// decision commits with it.
pub trait StepJudge: Send + Sync {
    fn judge(&self, step: &Ready<'_>) -> Verdict;
}

/// A shared judge, carried by each [`super::Finished`].
#[derive(Clone)]
pub struct Judge(pub Arc<dyn StepJudge>);

impl std::fmt::Debug for Judge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Judge")
    }
}

/// One delivery of an event, as settling steps needs it.
#[derive(Debug, Clone)]
pub struct Link {
    pub id: DeliveryId,
    pub rule: String,
    pub action: String,
    pub status: DeliveryState,
    /// The deliveries it needs (empty unless it is a step).
    pub needs: Vec<DeliveryId>,
    /// The need whose end skipped it, when one did.
    pub blocked_by: Option<DeliveryId>,
}

/// A step that stops waiting.
#[derive(Debug, Clone)]
pub enum Change {
    Released {
        id: DeliveryId,
        due_at_ms: i64,
        trace: Vec<Step>,
    },
    Skipped {
        id: DeliveryId,
        reason: String,
        /// The need that ended without success, if that is why.
        blocked_by: Option<DeliveryId>,
        trace: Vec<Step>,
    },
}

impl Change {
    pub fn id(&self) -> &DeliveryId {
        match self {
            Change::Released { id, .. } | Change::Skipped { id, .. } => id,
        }
    }

    /// What the `UPDATE` that records it writes besides the state: the due
    /// time, the skip reason, the need that skipped it, and the evaluated
    /// `when` as JSON (none when empty).
    pub fn columns(&self) -> Result<Columns<'_>, serde_json::Error> {
        let (due_at_ms, reason, blocked_by, trace) = match self {
            Change::Released {
                due_at_ms, trace, ..
            } => (Some(*due_at_ms), None, None, trace),
            Change::Skipped {
                reason,
                blocked_by,
                trace,
                ..
            } => (None, Some(reason.as_str()), blocked_by.as_ref(), trace),
        };
        Ok(Columns {
            due_at_ms,
            reason,
            blocked_by: blocked_by.map(DeliveryId::as_str),
            trace: (!trace.is_empty())
                .then(|| serde_json::to_string(trace))
                .transpose()?,
        })
    }

    /// The step's new state, for the `UPDATE` that records it.
    pub fn state(&self) -> DeliveryState {
        match self {
            Change::Released { .. } => DeliveryState::Pending,
            Change::Skipped { .. } => DeliveryState::Skipped,
        }
    }
}

/// See [`Change::columns`].
pub struct Columns<'a> {
    pub due_at_ms: Option<i64>,
    pub reason: Option<&'a str>,
    pub blocked_by: Option<&'a str>,
    pub trace: Option<String>,
}

/// Whether any delivery of `links` still waits: only then is there
/// anything to settle (and the event and outputs worth reading).
pub fn any_waiting(links: &[Link]) -> bool {
    links.iter().any(|l| l.status == DeliveryState::Waiting)
}

/// What the end of `finished` (already in `links` with its final state)
/// does to the steps behind it, transitively. `outputs` holds the output of
/// each succeeded delivery of the event that kept one.
pub fn settle(
    links: &mut [Link],
    finished: &[DeliveryId],
    outputs: &HashMap<DeliveryId, Value>,
    event: &Request,
    judge: &dyn StepJudge,
    now_ms: i64,
) -> Vec<Change> {
    let mut changes = Vec::new();
    let mut todo: Vec<DeliveryId> = finished.to_vec();
    while let Some(done) = todo.pop() {
        let Some(state) = links.iter().find(|l| l.id == done).map(|l| l.status) else {
            continue;
        };
        let done_action = links
            .iter()
            .find(|l| l.id == done)
            .map(|l| l.action.clone())
            .unwrap_or_default();
        let behind: Vec<usize> = links
            .iter()
            .enumerate()
            .filter(|(_, l)| l.status == DeliveryState::Waiting && l.needs.contains(&done))
            .map(|(i, _)| i)
            .collect();
        for i in behind {
            let change = match state {
                DeliveryState::Succeeded => {
                    let all = links[i].needs.iter().all(|n| {
                        links
                            .iter()
                            .any(|l| &l.id == n && l.status == DeliveryState::Succeeded)
                    });
                    if !all {
                        continue;
                    }
                    let outputs = outputs_of(links, &links[i].id, outputs);
                    let verdict = judge.judge(&Ready {
                        rule: &links[i].rule,
                        action: &links[i].action,
                        event,
                        outputs: &outputs,
                        now_ms,
                    });
                    match verdict {
                        Verdict::Run { due_at_ms, trace } => Change::Released {
                            id: links[i].id.clone(),
                            due_at_ms,
                            trace,
                        },
                        Verdict::Skip { reason, trace } => Change::Skipped {
                            id: links[i].id.clone(),
                            reason,
                            blocked_by: None,
                            trace,
                        },
                    }
                }
                DeliveryState::Dead | DeliveryState::Skipped => Change::Skipped {
                    id: links[i].id.clone(),
                    reason: format!("needs {done_action}, which is {}", state.as_str()),
                    blocked_by: Some(done.clone()),
                    trace: Vec::new(),
                },
                // Not an end: nothing to settle.
                _ => continue,
            };
            links[i].status = change.state();
            if let Change::Skipped { blocked_by, .. } = &change {
                links[i].blocked_by = blocked_by.clone();
            }
            if change.state() == DeliveryState::Skipped {
                todo.push(links[i].id.clone());
            }
            changes.push(change);
        }
    }
    changes
}

/// The outputs `step` may read: those of every delivery it runs after,
/// directly or through its needs, by action name, each with `json` parsed
/// from its body or stdout.
pub fn outputs_of(
    links: &[Link],
    step: &DeliveryId,
    outputs: &HashMap<DeliveryId, Value>,
) -> serde_json::Map<String, Value> {
    let mut out = serde_json::Map::new();
    let mut seen: Vec<&DeliveryId> = Vec::new();
    let mut todo: Vec<&DeliveryId> = links
        .iter()
        .find(|l| &l.id == step)
        .map(|l| l.needs.iter().collect())
        .unwrap_or_default();
    while let Some(id) = todo.pop() {
        if seen.contains(&id) {
            continue;
        }
        seen.push(id);
        let Some(link) = links.iter().find(|l| &l.id == id) else {
            continue;
        };
        if let Some(o) = outputs.get(id) {
            out.insert(link.action.clone(), view(o.clone()));
        }
        todo.extend(link.needs.iter());
    }
    out
}

/// An output as stored (`{status, headers, body}` or `{exit_code, stdout,
/// stderr}`), with `json` added: the body (or stdout) parsed when it is
/// JSON, else null. Stored without it, so an output costs its size once.
pub fn view(mut output: Value) -> Value {
    if let Value::Object(map) = &mut output {
        let text = map
            .get("body")
            .or_else(|| map.get("stdout"))
            .and_then(Value::as_str);
        let json = text
            .and_then(|t| serde_json::from_str(t.trim()).ok())
            .unwrap_or(Value::Null);
        if map.contains_key("body") || map.contains_key("stdout") {
            map.insert("json".into(), json);
        }
    }
    output
}

/// The steps to wait again when `retried` is put back in the queue by
/// hand: those it skipped by ending dead or skipped, and those behind them.
pub fn unblocked_by(links: &[Link], retried: &DeliveryId) -> Vec<DeliveryId> {
    let mut out: Vec<DeliveryId> = Vec::new();
    let mut todo = vec![retried.clone()];
    while let Some(id) = todo.pop() {
        for l in links {
            if l.status == DeliveryState::Skipped
                && l.blocked_by.as_ref() == Some(&id)
                && !out.contains(&l.id)
            {
                out.push(l.id.clone());
                todo.push(l.id.clone());
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    struct WhenJson;

    impl StepJudge for WhenJson {
        fn judge(&self, step: &Ready<'_>) -> Verdict {
            if step
                .outputs
                .get("crm")
                .and_then(|o| o["json"]["created"].as_bool())
                == Some(true)
            {
                Verdict::Run {
                    due_at_ms: step.now_ms + 5,
                    trace: Vec::new(),
                }
            } else {
                Verdict::Skip {
                    reason: "the step's `when` is false".into(),
                    trace: Vec::new(),
                }
            }
        }
    }

    fn link(id: &DeliveryId, action: &str, status: DeliveryState, needs: &[&DeliveryId]) -> Link {
        Link {
            id: id.clone(),
            rule: "r".into(),
            action: action.into(),
            status,
            needs: needs.iter().map(|n| (*n).clone()).collect(),
            blocked_by: None,
        }
    }

    fn event() -> Request {
        Request {
            event_id: "evt_1".into(),
            source: "s".into(),
            received_at: String::new(),
            method: "POST".into(),
            path: "/".into(),
            headers: Vec::new(),
            query: Vec::new(),
            body: bytes::Bytes::new(),
            payload: Value::Null,
        }
    }

    #[test]
    fn a_step_is_released_only_when_its_last_need_succeeded() {
        let (a, b, s) = (DeliveryId::new(), DeliveryId::new(), DeliveryId::new());
        let mut links = vec![
            link(&a, "crm", DeliveryState::Succeeded, &[]),
            link(&b, "other", DeliveryState::Running, &[]),
            link(&s, "announce", DeliveryState::Waiting, &[&a, &b]),
        ];
        let outputs = HashMap::from([(
            a.clone(),
            serde_json::json!({"status": 201, "body": "{\"created\": true, \"id\": 7}"}),
        )]);
        assert!(
            settle(
                &mut links,
                std::slice::from_ref(&a),
                &outputs,
                &event(),
                &WhenJson,
                100
            )
            .is_empty()
        );
        links[1].status = DeliveryState::Succeeded;
        let changes = settle(
            &mut links,
            std::slice::from_ref(&b),
            &outputs,
            &event(),
            &WhenJson,
            100,
        );
        assert!(
            matches!(&changes[..], [Change::Released { id, due_at_ms: 105, .. }] if *id == s),
            "{changes:?}"
        );
        assert_eq!(
            outputs_of(&links, &s, &outputs)["crm"]["json"]["id"],
            serde_json::json!(7)
        );
    }

    #[test]
    fn a_dead_need_skips_its_steps_transitively_and_a_retry_unblocks_them() {
        let (a, s, t) = (DeliveryId::new(), DeliveryId::new(), DeliveryId::new());
        let mut links = vec![
            link(&a, "crm", DeliveryState::Dead, &[]),
            link(&s, "announce", DeliveryState::Waiting, &[&a]),
            link(&t, "follow-up", DeliveryState::Waiting, &[&s]),
        ];
        let changes = settle(
            &mut links,
            std::slice::from_ref(&a),
            &HashMap::new(),
            &event(),
            &WhenJson,
            0,
        );
        let reasons: Vec<String> = changes
            .iter()
            .map(|c| match c {
                Change::Skipped { reason, .. } => reason.clone(),
                Change::Released { .. } => "released".into(),
            })
            .collect();
        assert_eq!(
            reasons,
            [
                "needs crm, which is dead",
                "needs announce, which is skipped"
            ]
        );
        assert_eq!(unblocked_by(&links, &a), [s.clone(), t.clone()]);
    }

    #[test]
    fn a_false_when_skips_the_step_and_those_behind_it() {
        let (a, s, t) = (DeliveryId::new(), DeliveryId::new(), DeliveryId::new());
        let mut links = vec![
            link(&a, "crm", DeliveryState::Succeeded, &[]),
            link(&s, "announce", DeliveryState::Waiting, &[&a]),
            link(&t, "follow-up", DeliveryState::Waiting, &[&s]),
        ];
        let outputs = HashMap::from([(a.clone(), serde_json::json!({"body": "not json"}))]);
        let changes = settle(
            &mut links,
            std::slice::from_ref(&a),
            &outputs,
            &event(),
            &WhenJson,
            0,
        );
        assert_eq!(changes.len(), 2, "{changes:?}");
        assert!(
            matches!(&changes[0], Change::Skipped { reason, blocked_by: None, .. } if reason.contains("`when` is false"))
        );
        assert!(
            matches!(&changes[1], Change::Skipped { reason, .. } if reason == "needs announce, which is skipped")
        );
        // A skip by its own `when` is not undone by retrying a need.
        assert_eq!(unblocked_by(&links, &a), Vec::<DeliveryId>::new());
    }
}
