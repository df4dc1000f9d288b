//! `hookwire check` and `hookwire test`, run as a user would.

use serde_json::Value;

use crate::support::{run_cli, write};

#[test]
fn check_reports_every_error_of_every_file_with_position() {
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("rules");
    write(
        &rules.join("sources.yaml"),
        "sources:\n  github: {}\n  github2:\n    path: /hooks/github\n",
    );
    write(
        &rules.join("a.yaml"),
        "rules:\n  - name: one\n    source: gitlab\n    colour: red\n  - name: two\n    source: github\n    when: { path: '$.a[', equals: 1 }\n    actions:\n      - http: { url: \"http://x/{{#if}}\" }\n",
    );
    write(
        &rules.join("b.yml"),
        "rules:\n  - name: two\n    source: github\n    when: { header: X, equals: \"${NOT_SET_ANYWHERE}\" }\n",
    );
    write(
        &rules.join("c.json"),
        "{\n  \"rules\": [\n    {\"name\": \"three\", \"source\": \"github\", \"when\": {\"path\": \"$.x\", \"glob\": \"[\"}}\n  ]\n}\n",
    );
    write(
        &rules.join("d.toml"),
        "[[rules]]\nname = \"four\"\nsource = \"github\"\nenabled = \"yes\"\n",
    );
    write(
        &rules.join("e.yaml"),
        "rules:\n  - name: five\n    source: [github\n",
    );
    write(
        &rules.join("f.yaml"),
        "rules:\n  - name: dup\n    source: github\n  - name: orphan\n    source: [github, gitlab]\n",
    );
    write(
        &rules.join("g/h.yaml"),
        "rules:\n  - name: dup\n    source: github\n",
    );
    write(
        &rules.join("payload.json"),
        "{\"ref\": \"refs/heads/main\"}",
    );
    write(&rules.join("notes.txt"), "not a rule file: ignored");
    write(&rules.join(".hidden.yaml"), "garbage: [");
    let (code, out, _) = run_cli(dir.path(), &["check", "rules"], &[]);
    assert_eq!(code, 1, "{out}");
    let mut lines: Vec<&str> = out.lines().collect();
    lines.sort();
    let want = [
        "rules/a.yaml:4:5: unknown field `colour`, expected one of `name`, `source`, `enabled`, `when`, `actions`, `respond`",
        "rules/a.yaml:7:19: invalid JSONPath `$.a[` at character 5: expected selector",
        "rules/a.yaml:9:22: invalid template: invalid handlebars syntax (template line 1, column 17)",
        "rules/b.yml:4:32: environment variable `NOT_SET_ANYWHERE` is not set: set it, or write `${NOT_SET_ANYWHERE:-default}` for a default",
        "rules/c.json:3:75: invalid glob `[`: unclosed character class; missing ']'",
        "rules/d.toml:4:11: invalid type: string \"yes\", expected a boolean",
        "rules/e.yaml:4:1: while parsing a flow sequence, expected ',' or ']'",
        "rules/f.yaml:5:13: rule `orphan` names source `gitlab`, which is not defined",
        "rules/g/h.yaml:2:5: duplicate rule name `dup`: also defined at rules/f.yaml:2:5",
        "rules/payload.json:1:1: not a rule file: it has none of the top-level keys",
        "rules/sources.yaml:3:3: source `github2` has the path `/hooks/github` of source `github` (rules/sources.yaml:2:3)",
    ];
    assert_eq!(lines.len(), want.len(), "{out}");
    for (got, want) in lines.iter().zip(want) {
        assert!(got.starts_with(want), "got:  {got}\nwant: {want}…");
    }
    // Rule `one` names a missing source too, but it already failed on its unknown field: only that is said.
}

#[test]
fn check_passes_valid_rules_and_warns_about_unsigned_sources_and_shell_scripts() {
    let dir = tempfile::tempdir().unwrap();
    write(
        &dir.path().join("rules/r.yaml"),
        "sources:\n  form: {}\nrules:\n  - name: run\n    source: form\n    actions:\n      - command: { argv: [sh, -c, \"echo {{payload.name}}\"] }\n      - email: { to: a@example.com, subject: hi, text: x }\n",
    );
    let (code, out, err) = run_cli(dir.path(), &["check"], &[]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(out.trim(), "ok: 1 file, 1 source, 1 rule, 0 tests passed");
    assert!(
        err.contains("rules/r.yaml:2:3: warning: source `form` has no `verify`"),
        "{err}"
    );
    assert!(
        err.contains("rules/r.yaml:7:35: warning: `sh -c` with a templated script"),
        "{err}"
    );
    assert!(
        err.contains("warning: email action, but no SMTP server is configured"),
        "{err}"
    );
}

/// Every directory of rule files the repository ships.
pub const SHIPPED_RULE_DIRS: [&str; 5] = [
    "rules",
    "examples/github-to-chat",
    "examples/form-to-crm",
    "examples/deploy-on-release",
    // Every recipe, with its `tests:` (real payloads, exact bodies).
    "examples/recipes",
];

#[test]
fn shipped_rules_and_examples_are_valid() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    for dir in SHIPPED_RULE_DIRS {
        let (code, out, err) = run_cli(root, &["check", dir], &[]);
        assert_eq!(code, 0, "{dir}: {out}{err}");
    }
}

/// `hookwire test --rules rules --source SOURCE --payload PAYLOAD [extra…]` in the repository root.
fn hookwire_test(source: &str, payload: &str, extra: &[&str]) -> (i32, String, String) {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut args = vec![
        "test",
        "--rules",
        "rules",
        "--source",
        source,
        "--payload",
        payload,
    ];
    args.extend_from_slice(extra);
    run_cli(root, &args, &[])
}

#[test]
fn test_command_explains_matches_and_renders_actions() {
    let (code, out, err) = hookwire_test(
        "github",
        "examples/payloads/push-branch.json",
        &["--header", "X-GitHub-Event: push", "--format", "json"],
    );
    assert_eq!(code, 0, "{err}");
    let report: Value = serde_json::from_str(&out).unwrap();
    let rules = report["rules"].as_array().unwrap();
    let push = rules
        .iter()
        .find(|r| r["rule"] == "push-to-chat")
        .expect("push-to-chat evaluated");
    assert_eq!(push["matched"], true, "{push:#}");
    let body = &push["rendered"][0]["rendered"]["body"];
    assert_eq!(
        body["text"], "Codertocat pushed 1 commit(s) to Codertocat/Hello-World (master)",
        "{push:#}"
    );
    let release = rules
        .iter()
        .find(|r| r["rule"] == "deploy-on-release")
        .expect("same source");
    assert_eq!(release["matched"], false);
    assert_eq!(
        release["conditions"][0]["children"][0]["found"],
        serde_json::json!(["\"push\""]),
        "{release:#}"
    );
    assert_eq!(
        release["conditions"][0]["children"][0]["reason"], "does not hold",
        "{release:#}"
    );
    assert!(
        rules.iter().all(|r| r["rule"] != "lead-to-crm"),
        "rules of other sources are not evaluated"
    );

    // Text format: the same verdicts, readable.
    let (code, out, _) = hookwire_test(
        "github",
        "examples/payloads/push-tag-deleted.json",
        &["--header", "X-GitHub-Event: push"],
    );
    assert_eq!(code, 0);
    assert!(out.contains("✘ push-to-chat: not matched"), "{out}");

    // Bad input exits 2 with a clear message.
    let (code, _, err) = hookwire_test("nope", "examples/payloads/push-branch.json", &[]);
    assert_eq!(code, 2);
    assert!(err.contains("no source `nope`"), "{err}");
    let (code, _, err) = hookwire_test("github", "missing.json", &[]);
    assert_eq!(code, 2);
    assert!(err.contains("cannot read missing.json"), "{err}");
}

#[test]
fn test_command_warns_about_missing_fields_and_decoding_facts() {
    let dir = tempfile::tempdir().unwrap();
    write(
        &dir.path().join("rules/r.yaml"),
        "sources:\n  hook: {}\nrules:\n  - name: r\n    source: hook\n    when: { path: $.payload.ref, exists: false }\n    actions:\n      - http: { url: \"http://127.0.0.1:9/x\", body: { who: \"{{payload.pusher.nam}}\" } }\n",
    );
    write(&dir.path().join("body.txt"), "hello");
    let (code, out, err) = run_cli(
        dir.path(),
        &[
            "test",
            "--source",
            "hook",
            "--payload",
            "body.txt",
            "--header",
            "Content-Type: text/plain",
        ],
        &[],
    );
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("payload is null: Content-Type was text/plain"),
        "{out}"
    );
    assert!(
        out.contains("template field `payload.pusher.nam` is missing"),
        "{out}"
    );
}

#[test]
fn test_command_runs_nothing_unless_told_to_execute() {
    let dir = tempfile::tempdir().unwrap();
    write(
        &dir.path().join("rules/r.yaml"),
        "sources:\n  hook: {}\nrules:\n  - name: r\n    source: hook\n    actions:\n      - command: { argv: [/bin/sh, -c, 'echo ran > marker; echo done', sh] }\n",
    );
    write(&dir.path().join("p.json"), "{}");
    let (code, out, err) = run_cli(
        dir.path(),
        &["test", "--source", "hook", "--payload", "p.json"],
        &[],
    );
    assert_eq!(code, 0, "{err}");
    assert!(
        !dir.path().join("marker").exists(),
        "a dry run executed the command:\n{out}"
    );
    let (code, out, err) = run_cli(
        dir.path(),
        &[
            "test",
            "--source",
            "hook",
            "--payload",
            "p.json",
            "--execute",
        ],
        &[],
    );
    assert_eq!(code, 0, "{err}");
    assert!(dir.path().join("marker").exists(), "{out}");
    assert!(out.contains("executed: succeeded (exit 0)"), "{out}");
    assert!(out.contains("response: done"), "{out}");
}

#[test]
fn check_runs_rule_tests_and_reports_a_broken_expectation_with_its_position() {
    let dir = tempfile::tempdir().unwrap();
    let payload =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/payloads/push-branch.json");
    std::fs::create_dir_all(dir.path().join("payloads")).unwrap();
    std::fs::copy(payload, dir.path().join("payloads/push.json")).unwrap();
    let rules = r#"sources:
  github: {}
rules:
  - name: push-to-chat
    source: github
    when: { path: $.ref, glob: "refs/heads/**" }
    actions:
      - name: chat
        http:
          url: http://127.0.0.1:9/chat
          body: { text: "{{payload.pusher.name}} pushed" }
  - name: tags
    source: github
    when: { path: $.ref, starts_with: refs/tags/ }
tests:
  - name: push goes to chat
    source: github
    payload: ../payloads/push.json
    expect:
      matched: [push-to-chat]
      actions:
        push-to-chat/chat: { body: { text: "Codertocat pushed" } }
  - name: wrong expectations
    source: github
    payload: ../payloads/push.json
    expect:
      matched: [tags]
      actions:
        push-to-chat/chat: { body: { text: "Monalisa pushed" } }
"#;
    write(&dir.path().join("rules/r.yaml"), rules);
    let (code, out, err) = run_cli(dir.path(), &["check"], &[]);
    assert_eq!(code, 1, "{out}{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines,
        [
            "rules/r.yaml:23:5: test \"wrong expectations\": matched [\"push-to-chat\"], expected [\"tags\"]: `tags` did not match (path $.ref starts_with \"refs/tags/\" at line 14: does not hold, found \"refs/heads/master\"); `push-to-chat` matched but was not expected",
            "rules/r.yaml:23:5: test \"wrong expectations\": push-to-chat/chat.body.text: expected \"Monalisa pushed\", got \"Codertocat pushed\"",
        ],
        "{out}"
    );
    assert!(err.contains("2 of 2 rule tests failed"), "{err}");
    // Fixing the expectation makes check pass.
    write(
        &dir.path().join("rules/r.yaml"),
        &rules
            .replace("matched: [tags]", "matched: [push-to-chat]")
            .replace("Monalisa", "Codertocat"),
    );
    let (code, out, _) = run_cli(dir.path(), &["check"], &[]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("2 tests passed"), "{out}");
}
