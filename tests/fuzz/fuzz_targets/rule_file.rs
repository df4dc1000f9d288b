//! A rule file: the first byte picks the format (YAML, TOML, JSON), the rest is
//! the file's text. Parsing, `${VAR}` resolution, checking and compilation may
//! reject it with diagnostics, never panic; a set that compiles has its
//! conditions evaluated once, with and without a trace.
#![no_main]

use std::collections::HashMap;
use std::path::Path;
use std::sync::LazyLock;

use hookwire::matching::Input;
use hookwire::rules::LoadOptions;
use hookwire::rules::compile::Builder;
use hookwire::syntax::node::Format;
use libfuzzer_sys::fuzz_target;
use serde_json::{Value, json};

static ENV: LazyLock<HashMap<String, String>> = LazyLock::new(|| {
    [
        ("SECRET", "s3cr3t"),
        ("EMPTY", ""),
        ("URL", "http://127.0.0.1:9/hook"),
        ("DOLLAR", "${SECRET}"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect()
});

static PAYLOAD: LazyLock<Value> = LazyLock::new(|| {
    json!({"ref": "refs/heads/main", "action": "published", "n": 5, "deleted": false,
           "items": [1, "two", {"three": 3}], "nested": {"a": {"b": null}}})
});

/// Equal as JSON, numbers by value. serde_json (without `float_roundtrip`)
/// may be an ulp off the correctly rounded value that Rust's parser gives.
fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => {
            let exact = hookwire::matching::json_eq(a, b);
            let close = match (x.as_f64(), y.as_f64()) {
                (Some(x), Some(y)) => (x - y).abs() <= x.abs().max(y.abs()) * 1e-15,
                _ => false,
            };
            exact || close
        }
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(a, b)| same(a, b))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| same(v, w)))
        }
        _ => a == b,
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&first, rest)) = data.split_first() else {
        return;
    };
    let Ok(text) = std::str::from_utf8(rest) else {
        return;
    };
    let (format, name) = match first % 3 {
        0 => (Format::Yaml, "rules/fuzz.yaml"),
        1 => (Format::Toml, "rules/fuzz.toml"),
        _ => (Format::Json, "rules/fuzz.json"),
    };
    if format == Format::Json {
        // JSON is read through the YAML parser for positions: what serde_json
        // reads from an accepted file, the rule set must read too.
        if let (Ok(node), Ok(value)) = (
            hookwire::syntax::node::parse_json(text),
            serde_json::from_str::<Value>(text),
        ) {
            let read = node.to_json();
            assert!(
                same(&read, &value),
                "JSON read differently: {read} vs serde_json {value}"
            );
        }
    }
    let opts = LoadOptions {
        smtp_configured: first & 0x80 != 0,
    };
    let mut builder = Builder::new(&ENV, &opts);
    builder.add_file(name, Path::new(name), format, text);
    let (set, errors, warnings) = builder.finish(vec![name.to_owned()]);
    for d in errors.iter().chain(&warnings) {
        let _ = d.to_string();
    }
    if !errors.is_empty() {
        return;
    }
    let headers = vec![("x-github-event".to_owned(), "push".to_owned())];
    let query = vec![("token".to_owned(), "t".to_owned())];
    let input = Input {
        payload: &PAYLOAD,
        headers: &headers,
        query: &query,
        method: "POST",
        steps: None,
    };
    for rule in &set.rules {
        let whens = rule
            .when
            .iter()
            .chain(rule.actions.iter().filter_map(|a| a.when.as_ref()));
        for when in whens {
            let fast = when.eval(&input);
            let (traced, _) = when.explain(&input);
            assert_eq!(fast, traced, "eval and explain disagree");
        }
    }
});
