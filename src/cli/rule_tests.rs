//! Rule tests carried in rule files (SPEC §4.6), run by `hookwire check`.
//!
//! Each test decodes its payload the way the source would, evaluates the
//! source's rules, and compares the matched rules (exactly) and the named
//! fields of rendered actions. Signatures are not checked: the tests are about
//! the rules, not the sender. Failures read
//! `FILE:LINE:COL: test "<name>": <what differed>`.

use serde_json::Value;

use crate::actions::{self, EventData};
use crate::decode;
use crate::evaluate::{self, Request};
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
    let mut headers: Vec<(String, String)> = t
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
    if let Some(ct) = &content_type
        && !headers.iter().any(|(k, _)| k == "content-type")
    {
        headers.push(("content-type".to_owned(), ct.clone()));
    }
    let decoded = match decode::decode(
        content_type.as_deref(),
        bytes::Bytes::from(body.clone()),
        &source.json_fields,
    )
    .await
    {
        Ok(d) => d,
        Err(e) => return vec![format!("payload does not decode: {e}")],
    };
    let req = Request {
        event_id: "evt_test".to_owned(),
        source: source.name.clone(),
        received_at: crate::clock::rfc3339(std::time::SystemTime::now()),
        method: t.method.clone().unwrap_or_else(|| {
            source
                .methods
                .first()
                .cloned()
                .unwrap_or_else(|| "POST".into())
        }),
        path: source.path.clone(),
        headers,
        query: t.query.clone(),
        body: bytes::Bytes::from(body.clone()),
        payload: decoded.payload,
    };
    let eval = evaluate::evaluate_with(set, &req, true);
    let mut problems = Vec::new();

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
    let data = EventData {
        payload: &req.payload,
        raw_body: &req.body_text(),
    };
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
        let rendered = match actions::render(action, &req.context(rule_name, 1), &data) {
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
