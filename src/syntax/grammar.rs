//! The words of the condition language (SPEC §4.3), with what each takes and
//! what it means.
//!
//! `matching` compiles conditions by these names and the rule-file JSON Schema
//! (`hookwire schema`) describes them from the same table, so a new operator
//! appears in both or in neither.

use serde_json::{Value, json};

/// What a condition word takes as its value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Takes {
    /// A string (a JSONPath, a header name, a regex, …).
    Text,
    /// `true` (`method: true`).
    True,
    /// `true` or `false`.
    Bool,
    /// Any value, compared as JSON.
    Any,
    /// A list of values.
    List,
    /// A number or a string (the ordering operators).
    NumberOrText,
    /// A list of conditions (`all`, `any`).
    Conditions,
    /// One condition (`not`).
    Condition,
}

/// One word of the condition language.
#[derive(Debug, Clone, Copy)]
pub struct Word {
    pub name: &'static str,
    pub takes: Takes,
    pub doc: &'static str,
}

const fn word(name: &'static str, takes: Takes, doc: &'static str) -> Word {
    Word { name, takes, doc }
}

/// What a condition looks at.
pub const OPERANDS: [Word; 5] = [
    word(
        "path",
        Takes::Text,
        "A JSONPath query (RFC 9535) over the decoded payload, e.g. `$.ref`. With `step`, the path into that step's output (default `$`).",
    ),
    word(
        "header",
        Takes::Text,
        "A request header, by name (case-insensitive); its value is text.",
    ),
    word("query", Takes::Text, "A query-string parameter, by name."),
    word(
        "method",
        Takes::True,
        "The HTTP method of the request (`method: true`).",
    ),
    word(
        "step",
        Takes::Text,
        "The output of an action this step `needs` (http: status, headers, body, json; command: exit_code, stdout, stderr, json); `path` reads into it.",
    ),
];

/// How the operand's value is tested; a condition has exactly one.
pub const OPERATORS: [Word; 14] = [
    word(
        "equals",
        Takes::Any,
        "Equal as JSON values (`5` matches 5 and 5.0, not \"5\"; header and query values are text).",
    ),
    word(
        "not_equals",
        Takes::Any,
        "Not equal; holds when the path selects nothing.",
    ),
    word("in", Takes::List, "Equal to one of the listed values."),
    word(
        "not_in",
        Takes::List,
        "Equal to none of the listed values; holds when the path selects nothing.",
    ),
    word(
        "matches",
        Takes::Text,
        "A regular expression (Rust syntax, unanchored; `(?i)` for case-insensitive).",
    ),
    word(
        "glob",
        Takes::Text,
        "A glob with GitHub Actions filter semantics: `*` does not cross `/`, `**` does (e.g. `refs/heads/release/**`).",
    ),
    word(
        "contains",
        Takes::Any,
        "A substring of a string, or an element of an array.",
    ),
    word("starts_with", Takes::Text, "The text starts with this."),
    word("ends_with", Takes::Text, "The text ends with this."),
    word(
        "exists",
        Takes::Bool,
        "`true`: the operand is present; `false`: it is absent (the path selects nothing).",
    ),
    word(
        "gt",
        Takes::NumberOrText,
        "Greater than (numbers with numbers, strings with strings).",
    ),
    word("gte", Takes::NumberOrText, "Greater than or equal."),
    word("lt", Takes::NumberOrText, "Less than."),
    word("lte", Takes::NumberOrText, "Less than or equal."),
];

/// With a `path` or `step` operand that selects several nodes: all of them
/// must satisfy the operator (and at least one is selected).
pub const EVERY: Word = word(
    "every",
    Takes::Bool,
    "With a path that selects several nodes: `true` means all of them (at least one) must satisfy the operator; the default is any of them.",
);

/// Conditions made of conditions.
pub const COMBINATORS: [Word; 3] = [
    word("all", Takes::Conditions, "Every listed condition holds."),
    word(
        "any",
        Takes::Conditions,
        "At least one listed condition holds.",
    ),
    word("not", Takes::Condition, "The condition does not hold."),
];

/// The names of `words`, for messages: `path, header, query`.
pub fn names(words: &[Word]) -> String {
    words.iter().map(|w| w.name).collect::<Vec<_>>().join(", ")
}

/// Whether `name` is one of `words`.
pub fn is(words: &[Word], name: &str) -> bool {
    words.iter().any(|w| w.name == name)
}

/// The JSON Schema of one condition, `condition` being a reference to this
/// schema itself (conditions nest).
pub fn condition_schema(condition: &Value) -> Value {
    let property = |w: &Word| -> (String, Value) {
        let mut schema = match w.takes {
            Takes::Text => json!({ "type": "string" }),
            Takes::True => json!({ "const": true }),
            Takes::Bool => json!({ "type": "boolean" }),
            Takes::Any => json!({}),
            Takes::List => json!({ "type": "array" }),
            Takes::NumberOrText => json!({ "type": ["number", "string"] }),
            Takes::Conditions => json!({ "type": "array", "items": condition }),
            Takes::Condition => condition.clone(),
        };
        if let Value::Object(map) = &mut schema {
            map.insert("description".into(), w.doc.into());
        }
        (w.name.to_owned(), schema)
    };
    let required = |w: &Word| json!({ "required": [w.name] });

    let test_properties: serde_json::Map<String, Value> = OPERANDS
        .iter()
        .chain(&OPERATORS)
        .chain([&EVERY])
        .map(property)
        .collect();
    // `path` with `step` is the path into the step's output; otherwise
    // exactly one operand.
    let plain_operands: Vec<Value> = OPERANDS
        .iter()
        .filter(|w| w.name != "step")
        .map(required)
        .collect();
    let not_with_step: Vec<Value> = OPERANDS
        .iter()
        .filter(|w| !matches!(w.name, "step" | "path"))
        .map(required)
        .collect();
    let test = json!({
        "type": "object",
        "description": "An operand with exactly one operator, e.g. `{ path: $.action, equals: opened }`.",
        "properties": test_properties,
        "additionalProperties": false,
        "oneOf": OPERATORS.iter().map(required).collect::<Vec<_>>(),
        "if": { "required": ["step"] },
        "then": { "not": { "anyOf": not_with_step } },
        "else": { "oneOf": plain_operands },
    });
    let combinator = json!({
        "type": "object",
        "description": "`all: [..]`, `any: [..]` or `not: <condition>`.",
        "properties": COMBINATORS.iter().map(property).collect::<serde_json::Map<_, _>>(),
        "additionalProperties": false,
        "minProperties": 1,
        "maxProperties": 1,
    });
    json!({
        "description": "A condition: an operand with one operator, a combinator (`all`, `any`, `not`), a list (all must hold), or a JSONPath string that holds when it selects at least one node.",
        "anyOf": [
            {
                "type": "string",
                "description": "A JSONPath query that holds when it selects at least one node, e.g. `$[?@.action == 'published']`."
            },
            { "type": "array", "items": condition, "description": "All of these hold." },
            combinator,
            test,
        ],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_word_is_described_once() {
        let all: Vec<&Word> = OPERANDS
            .iter()
            .chain(&OPERATORS)
            .chain(&COMBINATORS)
            .chain([&EVERY])
            .collect();
        for w in &all {
            assert!(w.doc.ends_with('.'), "{} has no sentence", w.name);
            assert_eq!(all.iter().filter(|o| o.name == w.name).count(), 1);
        }
    }
}
