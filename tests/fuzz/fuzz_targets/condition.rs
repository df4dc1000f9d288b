//! Conditions over hostile payloads. Input: an optional condition written as
//! YAML, a 0xFF byte, then the payload as JSON (input without 0xFF is all
//! payload; a payload that is not JSON is skipped). Every fixed condition below
//! and the input's own condition are evaluated with `eval` and `explain`, which
//! must agree and must not panic. Top-level string fields of the payload are
//! also sent as headers and query parameters.
#![no_main]

use std::sync::LazyLock;

use hookwire::matching::{self, Condition, Input};
use hookwire::syntax::node::parse_yaml;
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

/// One case per operator and combinator, on paths payloads commonly have.
const CONDITIONS: &[&str] = &[
    "{path: $.ref, equals: refs/heads/main}",
    "{step: crm, path: '$..id', gt: 0}",
    "{step: nope, exists: false}",
    "{path: $.n, equals: 5.0}",
    "{path: $.list, equals: [1, 2, 3.0]}",
    "{path: '$..id', not_equals: 0}",
    "{path: $.ref, in: [a, 1, null, true, {k: v}]}",
    "{path: '$.*', not_in: [x, 2]}",
    "{path: '$..name', matches: '^(?i)[a-z]+-\\d{2,}$'}",
    "{path: $.ref, glob: 'refs/{heads,tags}/**'}",
    "{path: '$..*', contains: a}",
    "{path: $.list, contains: 2}",
    "{path: $.s, starts_with: 'ä'}",
    "{path: $.s, ends_with: '/'}",
    "{path: $.missing, exists: false}",
    "{path: '$..n', gt: 3}",
    "{path: '$..n', gte: 2.5}",
    "{path: '$..s', lt: 'm'}",
    "{path: '$..*', lte: -1e308}",
    "{path: '$.list[*]', every: true, gt: 0}",
    "{path: '$[-1:0:-1]', exists: true}",
    "{path: '$[?@.a == 1 && @.b != \"x\"]', exists: true}",
    "{path: '$..[?length(@) > 2]', exists: true}",
    "{path: '$..[?match(@.s, \"[a-z]+\")]', exists: true}",
    "{path: '$..[?search(@, \"a.c\")]', exists: true}",
    "{path: '$..[?count(@.*) >= 1]', exists: true}",
    "{path: '$..[?value(@..n) == 5]', exists: true}",
    "\"$[?@.action == 'published']\"",
    "\"$.payload.ref\"",
    "\"$..[0,1,-1]\"",
    "\"$[1:9007199254740991:2]\"",
    "\"$[-9007199254740991:]\"",
    "\"$.*[?@ > 1]\"",
    "{header: X-Event, equals: push}",
    "{header: x-n, in: [5, true]}",
    "{query: ref, matches: main}",
    "{method: true, in: [POST, PUT]}",
    "{not: {path: $.a, exists: true}}",
    "{any: [{path: $.a, equals: 1}, {all: [\"$.b\", {path: $.c, lt: 0}]}]}",
    "[\"$.a\", {header: x-event, exists: true}, {not: \"$.zzz\"}]",
];

static FIXED: LazyLock<Vec<Condition>> = LazyLock::new(|| {
    let mut bad = Vec::new();
    let fixed = CONDITIONS
        .iter()
        .filter_map(|yaml| {
            let node = parse_yaml(yaml)
                .map_err(|e| bad.push(format!("{yaml}: {e:?}")))
                .ok()?;
            let mut errors = Vec::new();
            let c = matching::compile(&node, &mut errors);
            if c.is_none() {
                bad.push(format!("{yaml}: {errors:?}"));
            }
            c
        })
        .collect();
    assert!(bad.is_empty(), "fixed conditions do not compile: {bad:#?}");
    fixed
});

fn compile(yaml: &str) -> Option<Condition> {
    let node = parse_yaml(yaml).ok()?;
    let mut errors = Vec::new();
    matching::compile(&node, &mut errors)
}

fn check(c: &Condition, input: &Input<'_>) {
    let fast = c.eval(input);
    let (traced, steps) = c.explain(input);
    assert_eq!(fast, traced, "eval and explain disagree: {steps:?}");
}

fuzz_target!(|data: &[u8]| {
    let (condition, payload) = match data.iter().position(|&b| b == 0xFF) {
        Some(i) => (Some(&data[..i]), &data[i + 1..]),
        None => (None, data),
    };
    let Ok(payload) = serde_json::from_slice::<Value>(payload) else {
        return;
    };
    let mut headers = vec![("x-event".to_owned(), "push".to_owned())];
    let mut query = Vec::new();
    if let Value::Object(map) = &payload {
        for (k, v) in map {
            if let Value::String(s) = v {
                headers.push((k.to_ascii_lowercase(), s.clone()));
                query.push((k.clone(), s.clone()));
            }
        }
    }
    let method = payload
        .get("method")
        .and_then(Value::as_str)
        .unwrap_or("POST");
    // The payload is also the output of a step's need, `crm`.
    let mut outputs = serde_json::Map::new();
    outputs.insert("crm".to_owned(), payload.clone());
    let input = Input {
        payload: &payload,
        headers: &headers,
        query: &query,
        method,
        steps: Some(&outputs),
    };
    for c in FIXED.iter() {
        check(c, &input);
    }
    if let Some(text) = condition.and_then(|c| std::str::from_utf8(c).ok())
        && let Some(c) = compile(text)
    {
        check(&c, &input);
    }
});
