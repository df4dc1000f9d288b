//! One line per case: the condition as written in a rule file, the payload it
//! meets, and whether it holds. Every case also checks that `eval` and
//! `explain` agree.

use super::eval::TRACE_VALUE_CHARS;
use serde_json::{Value, json};

use super::*;
use crate::syntax::node::parse_yaml;

const PUSH: &str = include_str!("../../examples/payloads/push-branch.json");
const TAG_DELETED: &str = include_str!("../../examples/payloads/push-tag-deleted.json");
const RELEASE: &str = include_str!("../../examples/payloads/release-published.json");
const SENDGRID: &str = include_str!("../../tests/fixtures/sendgrid-array.json");

fn cond(yaml: &str) -> Condition {
    let node = parse_yaml(yaml).unwrap();
    let mut errors = Vec::new();
    let c = compile(&node, &mut errors);
    assert!(errors.is_empty(), "{yaml}: {errors:?}");
    c.unwrap()
}

fn check(yaml: &str, payload: &Value, headers: &[(&str, &str)], want: bool) -> Vec<Step> {
    let headers: Vec<(String, String)> = headers
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let query = vec![("ref".to_owned(), "main".to_owned())];
    let input = Input {
        payload,
        headers: &headers,
        query: &query,
        method: "POST",
        steps: None,
    };
    let c = cond(yaml);
    let fast = c.eval(&input);
    let (slow, steps) = c.explain(&input);
    assert_eq!(fast, slow, "eval and explain disagree on `{yaml}`");
    assert_eq!(fast, want, "`{yaml}` → {steps:#?}");
    steps
}

macro_rules! cases {
    ($($name:ident: $payload:expr, $yaml:expr => $want:expr;)*) => {
        $(#[test] fn $name() { check($yaml, &$payload, &[("x-github-event", "push")], $want); })*
    };
}

fn push() -> Value {
    serde_json::from_str(PUSH).unwrap()
}
fn tag_deleted() -> Value {
    serde_json::from_str(TAG_DELETED).unwrap()
}
fn release() -> Value {
    serde_json::from_str(RELEASE).unwrap()
}
fn sendgrid() -> Value {
    serde_json::from_str(SENDGRID).unwrap()
}
fn numbers() -> Value {
    json!({"n": 5, "f": 5.0, "s": "5", "list": [1, 2, 3], "words": ["a", "b"]})
}

cases! {
    equals_string: push(), "{path: $.ref, equals: refs/heads/master}" => true;
    equals_string_mismatch: push(), "{path: $.ref, equals: refs/heads/main}" => false;
    equals_int_matches_float: numbers(), "{path: $.n, equals: 5.0}" => true;
    equals_float_matches_int: numbers(), "{path: $.f, equals: 5}" => true;
    equals_number_not_string: numbers(), "{path: $.s, equals: 5}" => false;
    equals_string_not_number: numbers(), "{path: $.n, equals: \"5\"}" => false;
    equals_bool: release(), "{path: $.release.prerelease, equals: false}" => true;
    equals_array: numbers(), "{path: $.list, equals: [1, 2, 3.0]}" => true;
    not_equals_holds: push(), "{path: $.ref, not_equals: refs/heads/main}" => true;
    not_equals_zero_nodes_holds: push(), "{path: $.nope, not_equals: x}" => true;
    in_list: push(), "{path: $.ref, in: [refs/heads/main, refs/heads/master]}" => true;
    in_list_miss: push(), "{path: $.ref, in: [refs/heads/dev]}" => false;
    not_in_list: push(), "{path: $.ref, not_in: [refs/heads/dev]}" => true;
    not_in_zero_nodes_holds: push(), "{path: $.nope, not_in: [a]}" => true;
    matches_unanchored: push(), "{path: $.ref, matches: 'heads/ma'}" => true;
    matches_case_insensitive: push(), "{path: $.ref, matches: '(?i)HEADS'}" => true;
    matches_number_is_false: numbers(), "{path: $.n, matches: '5'}" => false;
    glob_star_does_not_cross_slash: push(), "{path: $.ref, glob: 'refs/*'}" => false;
    glob_double_star_crosses: push(), "{path: $.ref, glob: 'refs/**'}" => true;
    glob_branch: push(), "{path: $.ref, glob: 'refs/heads/*'}" => true;
    glob_release_branches: json!({"ref": "refs/heads/release/v1/x"}), "{path: $.ref, glob: 'refs/heads/release/**'}" => true;
    contains_substring: push(), "{path: $.head_commit.message, contains: 'tial com'}" => true;
    contains_array_element: numbers(), "{path: $.list, contains: 2}" => true;
    contains_array_element_typed: numbers(), "{path: $.list, contains: \"2\"}" => false;
    starts_with: push(), "{path: $.ref, starts_with: refs/heads/}" => true;
    ends_with: push(), "{path: $.ref, ends_with: master}" => true;
    exists_true: push(), "{path: $.head_commit, exists: true}" => true;
    exists_false_on_zero_nodes: push(), "{path: $.nope, exists: false}" => true;
    exists_true_on_zero_nodes: push(), "{path: $.nope, exists: true}" => false;
    exists_null_value_exists: tag_deleted(), "{path: $.head_commit, exists: true}" => true;
    zero_nodes_equals_false: push(), "{path: $.payload.ref, equals: refs/heads/master}" => false;
    zero_nodes_matches_false: push(), "{path: $.nope, matches: '.*'}" => false;
    gt_numbers: numbers(), "{path: $.n, gt: 4}" => true;
    gte_equal: numbers(), "{path: $.n, gte: 5.0}" => true;
    lt_numbers: numbers(), "{path: $.n, lt: 5}" => false;
    lte_numbers: numbers(), "{path: $.n, lte: 5}" => true;
    gt_strings: push(), "{path: $.ref, gt: refs/heads/a}" => true;
    gt_mixed_types_false: numbers(), "{path: $.s, gt: 1}" => false;
    any_node_by_default: push(), "{path: '$.commits[*].author.name', equals: Codertocat}" => true;
    every_node: numbers(), "{path: '$.list[*]', every: true, gt: 0}" => true;
    every_node_fails_on_one: numbers(), "{path: '$.list[*]', every: true, gt: 1}" => false;
    every_with_zero_nodes_false: numbers(), "{path: '$.nope[*]', every: true, gt: 0}" => false;
    any_of_several: numbers(), "{path: '$.list[*]', equals: 3}" => true;
    header_equals_case_insensitive_name: push(), "{header: X-GitHub-Event, equals: push}" => true;
    header_missing: push(), "{header: X-Other, exists: false}" => true;
    query_equals: push(), "{query: ref, equals: main}" => true;
    method_equals: push(), "{method: true, in: [POST, PUT]}" => true;
    header_number_compares_as_text: json!({}), "{header: x-github-event, not_equals: 5}" => true;
    bare_jsonpath_filter: release(), "\"$[?@.action == 'published' && @.release.prerelease == false]\"" => true;
    bare_jsonpath_filter_miss: release(), "\"$[?@.action == 'deleted']\"" => false;
    bare_jsonpath_selects_field: push(), "$.head_commit.id" => true;
    top_level_array: sendgrid(), "{path: '$[0].event', exists: true}" => true;
    list_means_all: push(), "[{path: $.ref, equals: refs/heads/master}, {header: x-github-event, equals: push}]" => true;
    list_means_all_fails: push(), "[{path: $.ref, equals: refs/heads/master}, {header: x-github-event, equals: ping}]" => false;
    all_combinator: push(), "{all: [{path: $.deleted, equals: false}, {path: $.forced, equals: false}]}" => true;
    any_combinator: push(), "{any: [{path: $.deleted, equals: true}, {path: $.ref, ends_with: master}]}" => true;
    any_combinator_none: push(), "{any: [{path: $.deleted, equals: true}]}" => false;
    not_combinator: tag_deleted(), "{not: {path: $.deleted, equals: true}}" => false;
    nested_combinators: push(), "{all: [{any: [{path: $.ref, glob: 'refs/tags/**'}, {path: $.ref, glob: 'refs/heads/**'}]}, {not: {path: $.deleted, equals: true}}]}" => true;
}

#[test]
fn zero_node_trace_says_so_and_suggests_the_root() {
    let steps = check(
        "{path: $.payload.ref, equals: refs/heads/master}",
        &push(),
        &[],
        false,
    );
    assert_eq!(
        steps[0].reason,
        "selected 0 nodes: JSONPath `$.payload.ref` selected nothing (the payload is the root: did you mean `$.ref`?)"
    );
    assert_eq!(
        steps[0].condition,
        "path $.payload.ref equals \"refs/heads/master\""
    );
    let steps = check("{path: $.ref, exists: true}", &Value::Null, &[], false);
    assert_eq!(steps[0].reason, "selected 0 nodes (the payload is null)");
}

#[test]
fn trace_shows_found_values_and_reasons() {
    let steps = check("{path: $.s, gt: 1}", &numbers(), &[], false);
    assert_eq!(steps[0].found, ["\"5\""]);
    assert_eq!(
        steps[0].reason,
        "cannot order a string against a number: ordering needs two numbers or two strings"
    );
    let steps = check(
        "[{path: $.ref, equals: x}, {path: $.ref, starts_with: refs}]",
        &push(),
        &[],
        false,
    );
    assert_eq!(steps[0].reason, "condition 1 of 2 is false");
    assert_eq!(steps[0].children.len(), 2, "explain evaluates every branch");
    assert_eq!(
        (steps[0].children[1].line, steps[0].children[1].col),
        (1, 28)
    );
    let steps = check(
        "{path: '$.list[*]', every: true, gt: 1}",
        &numbers(),
        &[],
        false,
    );
    assert_eq!(
        steps[0].reason,
        "2 of 3 selected nodes satisfy the operator"
    );
    let long = "x".repeat(500);
    let steps = check("{path: $.s, equals: y}", &json!({"s": long}), &[], false);
    assert!(steps[0].found[0].chars().count() <= TRACE_VALUE_CHARS + 1);
}

#[test]
fn load_errors_name_the_problem_and_position() {
    let cases: &[(&str, (u32, u32), &str)] = &[
        (
            "{path: $.a, equals: 1, matches: x}",
            (1, 24),
            "a condition takes one operator, found `equals` and `matches`",
        ),
        (
            "{path: $.a, header: b, equals: 1}",
            (1, 13),
            "a condition takes one operand, found `path` and `header`",
        ),
        (
            "{path: $.a}",
            (1, 1),
            "the condition on `path` needs an operator, e.g. `equals`",
        ),
        (
            "{equals: 1}",
            (1, 1),
            "a condition needs an operand: `path`, `header`, `query`, `method` or `step`",
        ),
        (
            "{path: $.a, matches: '('}",
            (1, 22),
            "invalid regex `(`: unclosed group",
        ),
        (
            "{path: $.a, glob: '[a'}",
            (1, 19),
            "invalid glob `[a`: unclosed character class; missing ']'",
        ),
        (
            "{path: '$.a[', equals: 1}",
            (1, 8),
            "invalid JSONPath `$.a[`",
        ),
        ("'$[?@.a ==]'", (1, 1), "invalid JSONPath `$[?@.a ==]`"),
        (
            "{path: $.a, exists: yes}",
            (1, 21),
            "`exists` takes true or false",
        ),
        (
            "{path: $.a, in: x}",
            (1, 17),
            "`in` takes a list, found a string",
        ),
        (
            "{path: $.a, gt: [1]}",
            (1, 17),
            "`gt` takes a number or a string, found a list",
        ),
        (
            "{method: POST, equals: x}",
            (1, 10),
            "`method` is written `method: true`",
        ),
        (
            "{header: a, every: true, equals: x}",
            (1, 1),
            "`every` applies to `path` and `step` operands only",
        ),
        (
            "{all: {path: $.a, exists: true}}",
            (1, 7),
            "`all` takes a list of conditions, found a map",
        ),
        ("{colour: red}", (1, 2), "unknown key `colour` in condition"),
        (
            "{not: {path: $.a, equals: 1}, path: $.b}",
            (1, 1),
            "`not` cannot be combined with an operand or operator in the same condition",
        ),
        (
            "5",
            (1, 1),
            "a condition must be a map, a list or a JSONPath string, found a number",
        ),
    ];
    for (yaml, pos, message) in cases {
        let node = parse_yaml(yaml).unwrap();
        let mut errors = Vec::new();
        assert!(compile(&node, &mut errors).is_none(), "{yaml}");
        let (p, m) = &errors[0];
        assert_eq!((p.line, p.col), *pos, "{yaml}: {m}");
        assert!(
            m.starts_with(message),
            "{yaml}: got `{m}`, want `{message}…`"
        );
    }
}

#[test]
fn direct_paths_select_what_the_general_evaluator_selects() {
    let payloads = [
        push(),
        release(),
        sendgrid(),
        numbers(),
        json!(null),
        json!([1, [2, 3]]),
        json!("s"),
    ];
    let paths = [
        "$",
        "$.ref",
        "$.repository.owner.login",
        "$.commits[0].id",
        "$.commits[-1].id",
        "$.commits[5]",
        "$[0]",
        "$[-1]",
        "$[-9]",
        "$[1][0]",
        "$[0].email",
        "$.missing.deeper",
        "$['ref']",
        "$.ref[0]",
        "$.commits[0].added[0]",
        "$.deleted",
        "$.release.author.id",
    ];
    for path in paths {
        let p = JsonPath::compile(path).unwrap();
        assert!(p.direct.is_some(), "{path} should take the direct walk");
        let general = |root: &Value| -> Vec<Value> {
            jsonpath_rust::query::js_path_process(&p.query, root)
                .unwrap()
                .into_iter()
                .map(|r| r.val.clone())
                .collect()
        };
        for payload in &payloads {
            let direct: Vec<Value> = p.select(payload).into_iter().cloned().collect();
            assert_eq!(direct, general(payload), "{path} over {payload}");
        }
    }
    for path in [
        "$..id",
        "$.commits[*].id",
        "$[?@.a == 1]",
        "$.commits[0:1]",
        "$['a','b']",
    ] {
        assert!(JsonPath::compile(path).unwrap().direct.is_none(), "{path}");
    }
}

#[test]
fn a_step_operand_reads_the_output_of_a_need() {
    let payload = json!({"email": "ada@example.com"});
    let outputs: serde_json::Map<String, Value> = serde_json::from_value(json!({
        "crm": {"status": 201, "json": {"created": true, "id": 7}}
    }))
    .unwrap();
    let input = Input {
        payload: &payload,
        headers: &[],
        query: &[],
        method: "POST",
        steps: None,
    };
    let holds = cond("{ step: crm, path: $.json.created, equals: true }");
    assert!(holds.eval(&input.with_steps(&outputs)));
    let (result, steps) = holds.explain(&input.with_steps(&outputs));
    assert!(result);
    assert_eq!(
        steps[0].condition,
        "step crm path $.json.created equals true"
    );
    assert!(cond("{ step: crm, gte: 0 }").step_refs().len() == 1);
    // `path` defaults to the whole output.
    assert!(cond("{ step: crm, exists: true }").eval(&input.with_steps(&outputs)));
    // Without outputs (or without that need's), nothing is selected, with the reason.
    let (result, steps) = holds.explain(&input);
    assert!(!result);
    assert_eq!(
        steps[0].reason,
        "step crm has no output (it has not succeeded)"
    );
    let (result, steps) =
        cond("{ step: crm, path: $.json.nope, exists: true }").explain(&input.with_steps(&outputs));
    assert!(!result);
    assert_eq!(
        steps[0].reason,
        "selected 0 nodes: JSONPath `$.json.nope` selected nothing in the output of crm"
    );
    // A `path` with a step is part of that operand, not a second one.
    let mut errors = Vec::new();
    let node = crate::syntax::node::parse_yaml("{ step: crm, path: \"$[\", equals: 1 }").unwrap();
    assert!(crate::matching::compile(&node, &mut errors).is_none());
    assert!(errors[0].1.starts_with("invalid JSONPath"), "{errors:?}");
}
