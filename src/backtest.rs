//! Backtests: what a candidate rule set would have done to the events
//! already received, next to what the baseline (the rules that run now)
//! does to them — which rules start or stop matching which events, and which
//! rendered action fields change. Nothing is sent or stored.
//!
//! Each event is evaluated as replay evaluates it (its stored payload,
//! headers, query and method), once per set; actions are rendered for the
//! rules that match under both, the way a first attempt would render them
//! (a step without the outputs of its needs, as `hookwire test` does).

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::Value;

use crate::evaluate::{self, Evaluation};
use crate::request::Request;
use crate::rules::{Rule, RuleSet};
use crate::store::{Store, StoreError, StoredEvent};

/// Events compared when no number is given.
pub const DEFAULT_LAST: u32 = 1000;
/// The most events one backtest reads.
pub const MAX_EVENTS: u32 = 10_000;

/// Which stored events: the newest `last`, those received since `since_ms`,
/// or both (the newest `last` of those), of one source or all.
#[derive(Debug, Clone, Default)]
pub struct Scope {
    pub last: Option<u32>,
    pub since_ms: Option<i64>,
    pub source: Option<String>,
}

/// The events of `scope`, newest first.
pub async fn events(store: &dyn Store, scope: &Scope) -> Result<Vec<StoredEvent>, StoreError> {
    let limit = match (scope.last, scope.since_ms) {
        (Some(n), _) => n.clamp(1, MAX_EVENTS),
        (None, Some(_)) => MAX_EVENTS,
        (None, None) => DEFAULT_LAST,
    };
    let mut list = store.events(scope.source.as_deref(), limit).await?;
    if let Some(since) = scope.since_ms {
        list.retain(|e| e.received_at_ms >= since);
    }
    Ok(list)
}

/// What changed, rule by rule.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Events compared.
    pub events: usize,
    /// The oldest and newest of them (ms since the epoch).
    pub from_ms: Option<i64>,
    pub to_ms: Option<i64>,
    /// Versions of the two sets (0 for a candidate that never ran).
    pub baseline_version: u64,
    pub candidate_version: u64,
    /// Every rule of either set, candidate order first, then removed ones.
    pub rules: Vec<RuleChange>,
    /// Events on which any rule acts differently.
    pub events_changed: usize,
    /// Whether any rule acts differently on any compared event.
    pub changed: bool,
    pub verdict: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct RuleChange {
    pub rule: String,
    /// `same`, `changed`, `added` or `removed`.
    pub status: &'static str,
    /// Events matched by the baseline and by the candidate.
    pub before: usize,
    pub after: usize,
    /// Events matched now and not before, and the reverse (newest first).
    pub started: Vec<String>,
    pub stopped: Vec<String>,
    /// Events matched by both whose deliveries or rendered actions differ.
    pub rendered_differently: Vec<String>,
    /// The differing fields, by action and field, with an example.
    pub differences: Vec<Difference>,
}

/// One field of one action that renders differently.
#[derive(Debug, Clone, Serialize)]
pub struct Difference {
    pub action: String,
    /// A path into the rendered action (`url`, `body.text`,
    /// `headers.Authorization`), or `(delivery)` when one set creates a
    /// delivery and the other does not.
    pub field: String,
    /// Events on which it differs.
    pub events: usize,
    /// The newest of them, with its value before and after.
    pub example: String,
    pub before: Value,
    pub after: Value,
}

/// Compares what `baseline` and `candidate` do to `events`.
pub fn compare(baseline: &RuleSet, candidate: &RuleSet, events: &[StoredEvent]) -> Report {
    let mut tally: BTreeMap<String, Tally> = BTreeMap::new();
    let mut events_changed = 0;
    for e in events {
        let req = e.request();
        let before = evaluate::evaluate_with(baseline, &req, false);
        let after = evaluate::evaluate_with(candidate, &req, false);
        let mut changed = false;
        let mut names: Vec<&String> = before.matched.iter().collect();
        names.extend(after.matched.iter().filter(|n| !before.matched.contains(n)));
        for name in names {
            let t = tally.entry(name.clone()).or_default();
            let (b, a) = (before.matched.contains(name), after.matched.contains(name));
            t.before += usize::from(b);
            t.after += usize::from(a);
            match (b, a) {
                (false, true) => t.started.push(e.id.to_string()),
                (true, false) => t.stopped.push(e.id.to_string()),
                _ => {
                    let (Some(rb), Some(ra)) = (baseline.rule(name), candidate.rule(name)) else {
                        continue;
                    };
                    let fields = action_differences(rb, ra, &req, &before, &after);
                    if fields.is_empty() {
                        continue;
                    }
                    t.rendered.push(e.id.to_string());
                    for (action, field, old, new) in fields {
                        t.differences
                            .entry((action.clone(), field.clone()))
                            .and_modify(|d| d.events += 1)
                            .or_insert(Difference {
                                action,
                                field,
                                events: 1,
                                example: e.id.to_string(),
                                before: old,
                                after: new,
                            });
                    }
                }
            }
            changed = true;
        }
        events_changed += usize::from(changed);
    }

    let mut rules = Vec::new();
    let names = candidate.rules.iter().map(|r| r.name.as_str()).chain(
        baseline
            .rules
            .iter()
            .map(|r| r.name.as_str())
            .filter(|n| candidate.rule(n).is_none()),
    );
    for name in names {
        let t = tally.remove(name).unwrap_or_default();
        let status = match (
            baseline.rule(name).is_some(),
            candidate.rule(name).is_some(),
        ) {
            (false, _) => "added",
            (_, false) => "removed",
            _ if t.started.is_empty() && t.stopped.is_empty() && t.rendered.is_empty() => "same",
            _ => "changed",
        };
        rules.push(RuleChange {
            rule: name.to_owned(),
            status,
            before: t.before,
            after: t.after,
            started: t.started,
            stopped: t.stopped,
            rendered_differently: t.rendered,
            differences: t.differences.into_values().collect(),
        });
    }
    let changed = events_changed > 0;
    let verdict = verdict(&rules, events.len(), events_changed);
    Report {
        events: events.len(),
        from_ms: events.iter().map(|e| e.received_at_ms).min(),
        to_ms: events.iter().map(|e| e.received_at_ms).max(),
        baseline_version: baseline.version,
        candidate_version: candidate.version,
        rules,
        events_changed,
        changed,
        verdict,
    }
}

#[derive(Default)]
struct Tally {
    before: usize,
    after: usize,
    started: Vec<String>,
    stopped: Vec<String>,
    rendered: Vec<String>,
    differences: BTreeMap<(String, String), Difference>,
}

/// The fields in which the actions of one rule, matched by both sets,
/// differ on one event: `(action, field, before, after)`.
fn action_differences(
    before_rule: &Rule,
    after_rule: &Rule,
    req: &Request,
    before: &Evaluation,
    after: &Evaluation,
) -> Vec<(String, String, Value, Value)> {
    let planned = |eval: &Evaluation, action: &str| {
        eval.deliveries
            .iter()
            .any(|d| d.rule == before_rule.name && d.action == action)
    };
    let ctx = crate::template::context(req, &before_rule.name, 1);
    let mut out = Vec::new();
    let names = after_rule.actions.iter().map(|a| a.name.as_str()).chain(
        before_rule
            .actions
            .iter()
            .map(|a| a.name.as_str())
            .filter(|n| !after_rule.actions.iter().any(|a| a.name == *n)),
    );
    for name in names {
        let (b, a) = (planned(before, name), planned(after, name));
        if b != a {
            let said = |yes: bool| Value::from(if yes { "created" } else { "none" });
            out.push((name.to_owned(), "(delivery)".to_owned(), said(b), said(a)));
            continue;
        }
        if !b {
            continue;
        }
        let render = |rule: &Rule| -> Vec<(String, Value)> {
            let Some(action) = rule.actions.iter().find(|x| x.name == name) else {
                return Vec::new();
            };
            let mut fields = Vec::new();
            match crate::actions::render(action, &ctx, req).map(serde_json::to_value) {
                Ok(Ok(v)) => flatten("", &v, &mut fields),
                Ok(Err(e)) => fields.push(("(render)".to_owned(), Value::from(e.to_string()))),
                Err(e) => fields.push((
                    "(render)".to_owned(),
                    Value::from(format!("render error: {e}")),
                )),
            }
            fields
        };
        let (old, new) = (render(before_rule), render(after_rule));
        let mut keys: Vec<&str> = new.iter().map(|(k, _)| k.as_str()).collect();
        keys.extend(
            old.iter()
                .map(|(k, _)| k.as_str())
                .filter(|k| !new.iter().any(|(n, _)| n == k)),
        );
        for key in keys {
            let get = |list: &[(String, Value)]| {
                list.iter()
                    .find(|(k, _)| k == key)
                    .map_or(Value::Null, |(_, v)| v.clone())
            };
            let (o, n) = (get(&old), get(&new));
            if o != n {
                out.push((name.to_owned(), key.to_owned(), o, n));
            }
        }
    }
    out
}

/// Leaves of a rendered action as `path → value`: maps by key, headers by
/// name; other lists are one value.
fn flatten(prefix: &str, v: &Value, out: &mut Vec<(String, Value)>) {
    let join = |k: &str| {
        if prefix.is_empty() {
            k.to_owned()
        } else {
            format!("{prefix}.{k}")
        }
    };
    match v {
        Value::Object(map) => {
            for (k, child) in map {
                flatten(&join(k), child, out);
            }
        }
        Value::Array(items) if prefix == "headers" => {
            for pair in items {
                if let (Some(k), Some(v)) = (pair.get(0).and_then(Value::as_str), pair.get(1)) {
                    out.push((join(k), v.clone()));
                }
            }
        }
        _ => out.push((prefix.to_owned(), v.clone())),
    }
}

fn verdict(rules: &[RuleChange], events: usize, changed: usize) -> String {
    let acting = rules
        .iter()
        .filter(|r| {
            !r.started.is_empty() || !r.stopped.is_empty() || !r.rendered_differently.is_empty()
        })
        .count();
    if events == 0 {
        return "no stored events to compare: nothing to say yet".to_owned();
    }
    if changed == 0 {
        return format!("no change: every rule does the same on the {events} events");
    }
    format!(
        "{acting} rule{} would act differently on {changed} of {events} events",
        if acting == 1 { "" } else { "s" }
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_rendered_action_flattens_to_field_paths_with_headers_by_name() {
        let mut out = Vec::new();
        flatten(
            "",
            &json!({
                "type": "http",
                "url": "http://x/y",
                "headers": [["Authorization", "Bearer t"], ["X-Repo", "a/b"]],
                "body": { "text": "hi", "blocks": [1, 2], "meta": { "n": 3 } }
            }),
            &mut out,
        );
        let keys: Vec<&str> = out.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            keys,
            [
                "body.blocks",
                "body.meta.n",
                "body.text",
                "headers.Authorization",
                "headers.X-Repo",
                "type",
                "url"
            ]
        );
        assert_eq!(out[0].1, json!([1, 2]));
    }

    #[test]
    fn the_verdict_counts_rules_and_events() {
        let rule = |started: usize| RuleChange {
            rule: "r".into(),
            status: if started > 0 { "changed" } else { "same" },
            before: 0,
            after: started,
            started: vec!["evt".into(); started],
            stopped: Vec::new(),
            rendered_differently: Vec::new(),
            differences: Vec::new(),
        };
        assert_eq!(
            verdict(&[rule(2), rule(0)], 10, 2),
            "1 rule would act differently on 2 of 10 events"
        );
        assert_eq!(
            verdict(&[rule(0)], 10, 0),
            "no change: every rule does the same on the 10 events"
        );
        assert_eq!(
            verdict(&[], 0, 0),
            "no stored events to compare: nothing to say yet"
        );
    }
}
