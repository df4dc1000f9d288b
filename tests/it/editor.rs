//! Editor support: `hookwire schema` is a JSON Schema (draft 2020-12) that
//! accepts every rule file the repository ships, describes every field, and
//! refuses what `hookwire check` refuses.

use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::authoring::SHIPPED_RULE_DIRS;
use crate::support::run_cli;
use hookwire::syntax::node::{self, Format};

fn schema() -> Value {
    let (code, out, err) = run_cli(Path::new("."), &["schema"], &[]);
    assert_eq!(code, 0, "{err}");
    serde_json::from_str(&out).expect("the schema is JSON")
}

fn validator(schema: &Value) -> jsonschema::Validator {
    jsonschema::draft202012::new(schema).expect("the schema compiles")
}

/// A rule file as the schema sees it: the same tree the loader reads.
fn instance(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap();
    let format = Format::of(path).unwrap();
    node::parse(format, &text)
        .unwrap_or_else(|e| panic!("{}: {e:?}", path.display()))
        .to_json()
}

fn rule_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rule_files(&path, out);
        } else if Format::of(&path).is_some() {
            out.push(path);
        }
    }
}

/// Where in the instance each error is, and what it says.
fn errors(v: &jsonschema::Validator, instance: &Value) -> Vec<String> {
    v.iter_errors(instance)
        .map(|e| format!("{}: {e}", e.instance_path()))
        .collect()
}

#[test]
fn the_schema_is_draft_2020_12_and_describes_every_field() {
    let schema = schema();
    assert_eq!(
        schema["$schema"], "https://json-schema.org/draft/2020-12/schema",
        "{schema:#}"
    );
    assert!(
        jsonschema::draft202012::meta::is_valid(&schema),
        "not a valid 2020-12 schema"
    );

    // Every property of every object, anywhere, carries a description
    // (from the doc comments of the loader's types).
    let mut undescribed = Vec::new();
    let mut count = 0;
    fn walk(v: &Value, at: &str, count: &mut usize, undescribed: &mut Vec<String>) {
        match v {
            Value::Object(map) => {
                if let Some(Value::Object(props)) = map.get("properties") {
                    for (name, prop) in props {
                        *count += 1;
                        let described = prop
                            .get("description")
                            .and_then(Value::as_str)
                            .is_some_and(|d| !d.trim().is_empty());
                        if !described {
                            undescribed.push(format!("{at}/{name}"));
                        }
                    }
                }
                for (k, child) in map {
                    walk(child, &format!("{at}/{k}"), count, undescribed);
                }
            }
            Value::Array(items) => {
                for (i, child) in items.iter().enumerate() {
                    walk(child, &format!("{at}/{i}"), count, undescribed);
                }
            }
            _ => {}
        }
    }
    walk(&schema, "", &mut count, &mut undescribed);
    assert!(count > 80, "only {count} properties: {schema:#}");
    assert!(
        undescribed.is_empty(),
        "properties without a description: {undescribed:?}"
    );

    // The three top-level keys, and the condition grammar's words.
    let top: Vec<&String> = schema["properties"].as_object().unwrap().keys().collect();
    assert_eq!(top, ["rules", "sources", "tests"]);
    let text = schema.to_string();
    for word in [
        "\"glob\"",
        "\"starts_with\"",
        "\"every\"",
        "\"not\"",
        "\"step\"",
    ] {
        assert!(text.contains(word), "{word} missing from the schema");
    }
}

#[test]
fn every_shipped_rule_file_example_and_recipe_is_valid_under_the_schema() {
    let schema = schema();
    let v = validator(&schema);
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    for dir in SHIPPED_RULE_DIRS {
        rule_files(&root.join(dir), &mut files);
    }
    assert!(files.len() >= 20, "{files:?}");
    let mut recipes = 0;
    for file in &files {
        let found = errors(&v, &instance(file));
        assert!(found.is_empty(), "{}: {found:#?}", file.display());
        recipes += usize::from(file.starts_with(root.join("examples/recipes")));
    }
    assert!(recipes >= 15, "{recipes} recipes validated");
}

#[test]
fn wrong_files_are_refused_by_the_schema_and_by_check() {
    let v = validator(&schema());
    let head = "sources:\n  github: {}\nrules:\n  - name: push\n    source: github\n";
    let cases = [
        (
            "unknown key",
            format!(
                "{head}    actoins:\n      - http: {{ url: \"http://127.0.0.1:9000/chat\" }}\n"
            ),
            "r.yaml:6:5: unknown field `actoins`, expected one of `name`, `source`, `enabled`, `when`, `actions`, `respond`",
            "/rules/0",
        ),
        (
            "wrong type",
            format!(
                "{head}    actions:\n      - http: {{ url: \"http://127.0.0.1:9000/chat\" }}\n        retry: {{ attempts: many }}\n"
            ),
            "r.yaml:8:28: invalid type: string \"many\", expected u32",
            "/rules/0/actions/0/retry/attempts",
        ),
        (
            "two operators",
            format!(
                "{head}    when:\n      path: $.action\n      equals: opened\n      matches: \"^open\"\n    actions:\n      - http: {{ url: \"http://127.0.0.1:9000/chat\" }}\n"
            ),
            "r.yaml:9:7: a condition takes one operator, found `equals` and `matches`",
            "/rules/0/when",
        ),
        (
            "two kinds of action",
            format!(
                "{head}    actions:\n      - http: {{ url: \"http://127.0.0.1:9000/chat\" }}\n        command: {{ argv: [\"true\"] }}\n"
            ),
            "r.yaml:7:9: an action takes exactly one of `http`, `email` or `command`",
            "/rules/0/actions/0",
        ),
    ];
    for (what, text, message, at) in cases {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("r.yaml");
        std::fs::write(&file, &text).unwrap();

        let (code, out, err) = run_cli(dir.path(), &["check", "."], &[]);
        assert_eq!(code, 1, "{what}: check accepted it\n{out}{err}");
        assert!(
            out.contains(message) || err.contains(message),
            "{what}: check said\n{out}{err}"
        );

        let found = errors(&v, &instance(&file));
        assert!(!found.is_empty(), "{what}: the schema accepted it");
        assert!(
            found.iter().any(|e| e.starts_with(&format!("{at}:"))),
            "{what}: the schema's errors are elsewhere: {found:#?}"
        );
    }
    // The file fixed is accepted by both.
    let dir = tempfile::tempdir().unwrap();
    let good =
        format!("{head}    actions:\n      - http: {{ url: \"http://127.0.0.1:9000/chat\" }}\n");
    std::fs::write(dir.path().join("r.yaml"), &good).unwrap();
    let (code, out, err) = run_cli(dir.path(), &["check", "."], &[]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(errors(&v, &instance(&dir.path().join("r.yaml"))).is_empty());
}
