//! Rule tests carried in rule files (SPEC §4.6), run by `hookwire check`.
//!
//! Each test decodes its payload the way the source would, evaluates the
//! source's rules, and compares the matched rules (exactly) and the named
//! fields of rendered actions. Signatures are not checked: the tests are about
//! the rules, not the sender. Failures read
//! `FILE:LINE:COL: test "<name>": <what differed>`.

use serde_json::Value;

use crate::actions;
use crate::evaluate;
use crate::rules::{RuleSet, RuleTest};

/// Runs every test of the set; returns one line per failure.
pub fn run_all(set: &RuleSet) -> Vec<String> {
    let runtime = match tokio::runtime::Builder::new_current_thread().build() {
        Ok(r) => r,
        Err(e) => return vec![format!("cannot run rule tests: {e}")],
    };
    let mut failures = Vec::new();
    for t in &set.tests {
        let at = format!(
            "{}:{}:{}: test \"{}\"",
            t.file, t.pos.line, t.pos.col, t.name
        );
        for problem in runtime.block_on(run_one(set, t)) {
            failures.push(format!("{at}: {problem}"));
        }
    }
    failures
}

async fn run_one(set: &RuleSet, t: &RuleTest) -> Vec<String> {
    let Some(source) = set.source(&t.source) else {
        return vec![format!("no source `{}`", t.source)];
    };
    let body = match (&t.payload_file, &t.body) {
        (Some(path), _) => match std::fs::read(path) {
            Ok(b) => b,
            Err(e) => return vec![format!("cannot read payload {}: {e}", path.display())],
        },
        (None, Some(b)) => b.clone().into_bytes(),
        (None, None) => Vec::new(),
    };
    let headers: Vec<(String, String)> = t
        .headers
        .iter()
        .map(|(k, v)| (k.to_ascii_lowercase(), v.clone()))
        .collect();
    let content_type = t
        .content_type
        .clone()
        .or_else(|| {
            headers
                .iter()
                .find(|(k, _)| k == "content-type")
                .map(|(_, v)| v.clone())
        })
        .or_else(|| {
            t.payload_file
                .as_deref()
                .and_then(super::guess_content_type)
        })
        .or_else(|| {
            serde_json::from_slice::<Value>(&body)
                .ok()
                .map(|_| "application/json".to_owned())
        });
    let req = match super::test_request(
        source,
        body,
        headers,
        t.query.clone(),
        t.method.clone(),
        content_type,
    )
    .await
    {
        Ok(d) => d.request,
        Err(e) => return vec![format!("payload does not decode: {e}")],
    };
    let eval = evaluate::evaluate_with(set, &req, true);
    let mut problems = Vec::new();
    // Outputs the test gives its steps, as a step would read them.
    let outputs: serde_json::Map<String, Value> = t
        .steps
        .iter()
        .map(|(name, node)| {
            let given = node.to_json();
            let view = if given.get("json").is_some() {
                given
            } else {
                crate::store::steps::view(given)
            };
            (name.clone(), view)
        })
        .collect();
    // A step's `when`, over those outputs: `None` for an action that is not one.
    let step_holds = |rule: &str, action: &crate::rules::Action| {
        (!action.needs.is_empty())
            .then(|| evaluate::step_when(action, &req, &outputs))
            .filter(|_| set.rule(rule).is_some())
    };
    for key in &t.expect_skipped {
        let found = key.split_once('/').and_then(|(r, a)| {
            set.rule(r)
                .and_then(|rule| rule.action(a))
                .map(|action| (r, action))
        });
        let Some((rule, action)) = found else {
            problems.push(format!("`{key}`: no such rule or action"));
            continue;
        };
        match step_holds(rule, action) {
            None => problems.push(format!(
                "`{key}`: is not a step (`expect.skipped` names steps, whose `when` reads the outputs in `steps`)"
            )),
            Some((true, _)) => problems.push(format!(
                "`{key}`: expected the step to be skipped, but its `when` holds with the given `steps`"
            )),
            Some((false, _)) => {}
        }
    }

    if let Some(want) = &t.expect_matched {
        let missing: Vec<&str> = want
            .iter()
            .filter(|w| !eval.matched.contains(w))
            .map(String::as_str)
            .collect();
        let extra: Vec<&str> = eval
            .matched
            .iter()
            .filter(|m| !want.contains(m))
            .map(String::as_str)
            .collect();
        if !missing.is_empty() || !extra.is_empty() {
            let mut why = Vec::new();
            for m in &missing {
                let reason = eval
                    .trace
                    .iter()
                    .find(|r| r.rule == *m)
                    .map(|r| {
                        first_false(&r.conditions)
                            .unwrap_or_else(|| "it is not a rule of this source".into())
                    })
                    .unwrap_or_else(|| "no such rule for this source".into());
                why.push(format!("`{m}` did not match ({reason})"));
            }
            for e in &extra {
                why.push(format!("`{e}` matched but was not expected"));
            }
            problems.push(format!(
                "matched {:?}, expected {:?}: {}",
                eval.matched,
                want,
                why.join("; ")
            ));
        }
    }
    if let Some(status) = t.expect_status {
        let got = eval
            .responder(set)
            .and_then(|r| r.respond.as_ref())
            .map_or(202, |r| r.status);
        if got != status {
            problems.push(format!("answer status {got}, expected {status}"));
        }
    }
    for (key, expected) in &t.expect_actions {
        let Some((rule_name, action_name)) = key.split_once('/') else {
            problems.push(format!("`{key}`: name an action as rule/action"));
            continue;
        };
        let Some(action) = set
            .rule(rule_name)
            .and_then(|r| r.actions.iter().find(|a| a.name == action_name))
        else {
            problems.push(format!("`{key}`: no such rule or action"));
            continue;
        };
        if !eval
            .deliveries
            .iter()
            .any(|d| d.rule == rule_name && d.action == action_name)
        {
            problems.push(format!(
                "`{key}`: no delivery was created (the rule or the action's `when` did not hold)"
            ));
            continue;
        }
        if let Some((false, trace)) = step_holds(rule_name, action) {
            problems.push(format!(
                "`{key}`: the step's `when` is false with the given `steps` ({})",
                first_false(&trace).unwrap_or_default()
            ));
            continue;
        }
        let ctx = crate::template::with_steps(
            crate::template::context(&req, rule_name, 1),
            outputs.clone(),
        );
        let rendered = match actions::render(action, &ctx, &req) {
            Ok(r) => serde_json::to_value(r).unwrap_or(Value::Null),
            Err(e) => {
                problems.push(format!("`{key}`: render error: {e}"));
                continue;
            }
        };
        let mut diffs = Vec::new();
        subset_diff(&expected.to_json(), &rendered, key, &mut diffs);
        problems.extend(diffs);
    }
    problems
}

/// The first failing condition of a trace, for "why did it not match".
fn first_false(steps: &[crate::matching::Step]) -> Option<String> {
    for s in steps {
        if !s.result {
            if let Some(inner) = first_false(&s.children) {
                return Some(inner);
            }
            let found = if s.found.is_empty() {
                String::new()
            } else {
                format!(", found {}", s.found.join(", "))
            };
            return Some(format!(
                "{} at line {}: {}{found}",
                s.condition, s.line, s.reason
            ));
        }
    }
    None
}

/// Compares only what `expected` names: object keys recursively, other values exactly.
fn subset_diff(expected: &Value, got: &Value, at: &str, out: &mut Vec<String>) {
    match (expected, got) {
        (Value::Object(want), Value::Object(have)) => {
            for (k, w) in want {
                let path = format!("{at}.{k}");
                match have.get(k) {
                    Some(h) => subset_diff(w, h, &path, out),
                    None => out.push(format!(
                        "{path}: expected {w}, but the rendered action has no such field"
                    )),
                }
            }
        }
        // Rendered headers are pairs; a map in the expectation names some of them.
        (Value::Object(_), Value::Array(pairs))
            if pairs
                .iter()
                .all(|p| p.as_array().is_some_and(|a| a.len() == 2)) =>
        {
            let map: serde_json::Map<String, Value> = pairs
                .iter()
                .filter_map(|p| Some((p[0].as_str()?.to_owned(), p[1].clone())))
                .collect();
            subset_diff(expected, &Value::Object(map), at, out);
        }
        _ if crate::matching::json_eq(expected, got) => {}
        _ => out.push(format!("{at}: expected {expected}, got {got}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn subset_compares_only_named_fields() {
        let got = json!({"method": "POST", "headers": [["Content-Type", "application/json"]], "body": {"text": "hi", "n": 2}});
        let mut d = Vec::new();
        subset_diff(
            &json!({"body": {"text": "hi"}, "headers": {"Content-Type": "application/json"}}),
            &got,
            "r/a",
            &mut d,
        );
        assert!(d.is_empty(), "{d:?}");
        subset_diff(
            &json!({"body": {"text": "ho", "x": 1}}),
            &got,
            "r/a",
            &mut d,
        );
        assert_eq!(
            d,
            [
                "r/a.body.text: expected \"ho\", got \"hi\"",
                "r/a.body.x: expected 1, but the rendered action has no such field"
            ]
        );
    }
}
