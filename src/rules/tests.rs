//! Load errors, one line per case: a rule file (sources are added when the
//! case does not define any), and the first diagnostic it must produce.

use std::collections::HashMap;
use std::path::Path;

use super::*;

const SOURCES: &str = "sources:\n  github: {}\n";

fn load_text(files: &[(&str, &str)]) -> Result<RuleSet, LoadFailure> {
    let dir = tempfile::tempdir().unwrap();
    for (name, text) in files {
        let p = dir.path().join(name);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }
    let env: HashMap<String, String> = [("SECRET".to_owned(), "s3cr3t-value".to_owned())].into();
    let r = load(&[dir.path().to_path_buf()], &env, &LoadOptions::default());
    // Diagnostics name files relative to the temp dir, for readable expectations.
    r.map_err(|mut f| {
        let prefix = format!("{}/", dir.path().display());
        for d in f.errors.iter_mut() {
            d.file = Path::new(&d.file)
                .strip_prefix(dir.path())
                .map(|p| p.display().to_string())
                .unwrap_or(d.file.clone());
            d.message = d.message.replace(&prefix, "");
        }
        f
    })
}

fn first_error(text: &str) -> String {
    let mut files = vec![("r.yaml", text)];
    if !text.contains("sources:") {
        files.push(("sources.yaml", SOURCES));
    }
    match load_text(&files) {
        Ok(_) => panic!("loaded without error:\n{text}"),
        Err(f) => f.errors[0].to_string(),
    }
}

macro_rules! load_errors {
    ($($name:ident: $text:expr => $want:expr;)*) => {
        $(#[test] fn $name() {
            let got = first_error($text);
            assert!(got.starts_with($want), "\n got: {got}\nwant: {}…", $want);
        })*
    };
}

load_errors! {
    concurrency_zero: "rules:\n  - name: a\n    source: github\n    actions:\n      - command: { argv: [x] }\n        concurrency: 0\n" => "r.yaml:6:22: `concurrency` must be at least 1";
    yaml_syntax: "rules: [\n" => "r.yaml:2:1: ";
    unknown_top_level: "rule: []\n" => "r.yaml:1:1: not a rule file";
    empty_file: "" => "r.yaml:1:1: the file is empty: a rule file needs `sources`, `rules` or `tests`";
    only_comments: "# nothing yet\n\n" => "r.yaml:";
    unknown_top_level_beside_known: "rules: []\nrulez: []\n" => "r.yaml:2:1: unknown top-level key `rulez`, expected `sources`, `rules` or `tests`";
    unknown_rule_field: "rules:\n  - name: a\n    source: github\n    whn: {}\n" => "r.yaml:4:5: unknown field `whn`";
    unknown_source_field: "sources:\n  s:\n    verfy: {}\n" => "r.yaml:3:5: unknown field `verfy`";
    unknown_verify_scheme: "sources:\n  s:\n    verify: { gitbub: { secret: x } }\n" => "r.yaml:3:15: unknown variant `gitbub`";
    two_verify_schemes: "sources:\n  s:\n    verify: { github: { secret: x }, shopify: { secret: y } }\n" => "r.yaml:3:13: takes exactly one of";
    unknown_verify_field: "sources:\n  s:\n    verify: { github: { secret: x, tolerance: 5s } }\n" => "r.yaml:3:36: unknown field `tolerance`";
    missing_name: "rules:\n  - source: github\n" => "r.yaml:2:5: missing field `name`";
    bad_rule_name: "rules:\n  - name: Push To Chat\n    source: github\n" => "r.yaml:2:11: invalid rule name `Push To Chat`";
    missing_source: "rules:\n  - name: a\n    source: gitlab\n" => "r.yaml:3:13: rule `a` names source `gitlab`, which is not defined";
    bad_path: "sources:\n  s: { path: hooks/s }\n" => "r.yaml:2:14: `path` must start with `/`";
    reserved_path: "sources:\n  s: { path: /api/s }\n" => "r.yaml:2:14: `path` /api/s is reserved";
    bad_cidr: "sources:\n  s: { allow_ips: [10.0.0.0/33] }\n" => "r.yaml:2:20: invalid address or CIDR `10.0.0.0/33`";
    bad_rate: "sources:\n  s: { rate_limit: 5/day }\n" => "r.yaml:2:20: invalid rate limit `5/day`";
    bad_size: "sources:\n  s: { max_body: lots }\n" => "r.yaml:2:18: invalid size `lots`";
    bad_duration: "sources:\n  s:\n    verify: { stripe: { secret: x, tolerance: 300 } }\n" => "r.yaml:3:47: ";
    missing_env: "sources:\n  s:\n    verify: { github: { secret: \"${NOPE}\" } }\n" => "r.yaml:3:33: environment variable `NOPE` is not set";
    bad_standard_secret: "sources:\n  s:\n    verify: { standard: { secret: 'whsec_ab!' } }\n" => "r.yaml:3:13: standard secret must be base64";
    bad_sign_secret: "rules:\n  - name: a\n    source: github\n    actions:\n      - http: { url: 'http://x', sign: { standard: { secret: 'whsec_ab!' } } }\n" => "r.yaml:5:62: standard secret must be base64";
    bad_regex: "rules:\n  - name: a\n    source: github\n    when: { path: $.a, matches: 'a(' }\n" => "r.yaml:4:33: invalid regex `a(`";
    bad_jsonpath: "rules:\n  - name: a\n    source: github\n    when: '$..['\n" => "r.yaml:4:11: invalid JSONPath `$..[`";
    two_operators: "rules:\n  - name: a\n    source: github\n    when: { path: $.a, equals: 1, in: [1] }\n" => "r.yaml:4:35: a condition takes one operator, found `equals` and `in`";
    bad_template: "rules:\n  - name: a\n    source: github\n    actions:\n      - http: { url: 'http://x', body: { a: '{{payload.a' } }\n" => "r.yaml:5:45: invalid template";
    bad_jsonpath_in_template: "rules:\n  - name: a\n    source: github\n    actions:\n      - http: { url: 'http://x', body: \"{{jsonpath '$[?'}}\" }\n" => "r.yaml:5:40: invalid JSONPath `$[?`";
    two_action_kinds: "rules:\n  - name: a\n    source: github\n    actions:\n      - http: { url: 'http://x' }\n        command: { argv: [x] }\n" => "r.yaml:5:9: an action takes exactly one of `http`, `email` or `command`";
    duplicate_action_names: "rules:\n  - name: a\n    source: github\n    actions:\n      - command: { argv: [x] }\n      - command: { argv: [y] }\n        name: command-0\n" => "r.yaml:6:9: duplicate action name `command-0`";
    templated_host: "rules:\n  - name: a\n    source: github\n    actions:\n      - http: { url: 'https://{{payload.host}}/x' }\n" => "r.yaml:5:22: the host of an http action comes from a template";
    non_http_url: "rules:\n  - name: a\n    source: github\n    actions:\n      - http: { url: 'file:///etc/passwd' }\n" => "r.yaml:5:22: `url` must use http or https";
    empty_argv: "rules:\n  - name: a\n    source: github\n    actions:\n      - command: { argv: [] }\n" => "r.yaml:5:26: `argv` needs at least the program";
    email_without_body: "rules:\n  - name: a\n    source: github\n    actions:\n      - email: { to: a@b.c, subject: hi }\n" => "r.yaml:5:38: an email action needs `text`, `html` or both";
    zero_attempts: "rules:\n  - name: a\n    source: github\n    actions:\n      - command: { argv: [x] }\n        retry: { attempts: 0 }\n" => "r.yaml:6:28: `attempts` must be at least 1";
    respond_status: "rules:\n  - name: a\n    source: github\n    respond: { status: 999 }\n" => "r.yaml:4:24: `status` must be an HTTP status";
    test_without_payload: "tests:\n  - name: t\n    source: github\n    expect: { matched: [] }\n" => "r.yaml:2:5: a test takes exactly one of `payload`";
    duplicate_yaml_key: "rules:\n  - name: a\n    name: b\n" => "r.yaml:3:5: duplicate key `name` (first at line 2)";
}

#[test]
fn duplicate_names_name_both_files() {
    let err = load_text(&[
        (
            "a.yaml",
            "sources:\n  github: {}\nrules:\n  - name: r\n    source: github\n",
        ),
        (
            "sub/b.toml",
            "[sources.github]\n\n[[rules]]\nname = \"r\"\nsource = \"github\"\n",
        ),
    ])
    .unwrap_err();
    let lines: Vec<String> = err.errors.iter().map(|e| e.to_string()).collect();
    assert_eq!(
        lines,
        [
            "sub/b.toml:1:10: duplicate source name `github`: also defined at a.yaml:2:3",
            "sub/b.toml:3:1: duplicate rule name `r`: also defined at a.yaml:4:5",
        ]
    );
}

#[test]
fn every_error_of_every_file_is_reported() {
    let err = load_text(&[
        ("a.yaml", "sources:\n  github: {}\nrules:\n  - name: a\n    source: nope\n  - name: b\n    source: github\n    when: { path: '$[', equals: 1 }\n"),
        ("b.json", "{\"rules\": [{\"name\": \"c\", \"source\": \"github\", \"enabled\": 3}]}"),
    ])
    .unwrap_err();
    assert_eq!(err.errors.len(), 3, "{err}");
}

#[test]
fn a_valid_set_compiles_with_secrets_and_warnings_collected() {
    let set = load_text(&[(
        "r.yaml",
        "sources:\n  github:\n    verify: { github: { secret: \"${SECRET}\" } }\n  form: {}\nrules:\n  - name: a\n    source: [github, form]\n    actions:\n      - http: { url: 'http://x/{{payload.a}}' }\n",
    )])
    .unwrap();
    assert_eq!(set.sources.len(), 2);
    assert_eq!(set.rules_of("github").count(), 1);
    assert_eq!(set.rules_of("form").count(), 1);
    assert_eq!(
        set.source_for_path("/hooks/form").map(|s| s.name.as_str()),
        Some("form")
    );
    assert_eq!(set.secrets, ["s3cr3t-value"]);
    assert_eq!(set.warnings.len(), 1, "{:?}", set.warnings);
    assert!(
        set.warnings[0]
            .message
            .starts_with("source `form` has no `verify`")
    );
}

#[test]
fn toml_and_json_rule_files_share_the_schema() {
    let set = load_text(&[
        ("s.toml", "[sources.github]\npath = \"/gh\"\n\n[[rules]]\nname = \"t\"\nsource = \"github\"\nwhen = { path = \"$.ref\", equals = \"refs/heads/master\" }\n"),
        ("r.json", "{\"rules\": [{\"name\": \"j\", \"source\": \"github\", \"when\": \"$.ref\"}]}"),
    ])
    .unwrap();
    assert_eq!(set.rules.len(), 2);
    assert_eq!(set.source("github").unwrap().path, "/gh");
}

/// One unset variable is one error, at its first use, and nothing that
/// follows only from it: not the secret it leaves malformed, not the URL it
/// leaves without a scheme, not the rules naming the source it broke.
#[test]
fn an_unset_variable_is_reported_once_without_what_follows_from_it() {
    let text = r#"
sources:
  std:
    verify:
      standard: { secret: "${STD_SECRET}" }
  gh:
    verify:
      github: { secret: ["${GH_OLD}", "${GH_NEW}"] }
rules:
  - name: a
    source: std
    actions:
      - http:
          url: "${CHAT_URL}"
          headers: { Authorization: "Bearer ${STD_SECRET}" }
  - name: b
    source: gh
    actions:
      - http:
          url: "${CHAT_URL}/x?k=${CHAT_KEY}"
tests:
  - name: t
    source: std
    body: "{}"
    expect: { matched: [a] }
"#;
    let Err(f) = load_text(&[("r.yaml", text)]) else {
        panic!("loaded");
    };
    let got: Vec<String> = f.errors.iter().map(ToString::to_string).collect();
    let set = |name: &str, places: &str| {
        format!(
            "environment variable `{name}` is not set{places}: set it, or write `${{{name}:-default}}` for a default"
        )
    };
    assert_eq!(
        got,
        [
            format!("r.yaml:5:27: {}", set("STD_SECRET", " (used in 2 places)")),
            format!("r.yaml:8:26: {}", set("GH_OLD", "")),
            format!("r.yaml:8:39: {}", set("GH_NEW", "")),
            format!("r.yaml:14:16: {}", set("CHAT_URL", " (used in 2 places)")),
            format!("r.yaml:20:16: {}", set("CHAT_KEY", "")),
        ]
    );
    // A source broken for another reason is still reported, and once.
    let text = "sources:\n  s:\n    verify: { github: {} }\nrules:\n  - name: a\n    source: s\n";
    let Err(f) = load_text(&[("r.yaml", text)]) else {
        panic!("loaded");
    };
    assert_eq!(f.errors.len(), 1, "{:?}", f.errors);
    assert!(f.errors[0].message.contains("secret"), "{:?}", f.errors);
}

/// A rule with three actions whose `needs`, `when` and templates vary.
fn chain(crm: &str, announce: &str, follow: &str) -> String {
    format!(
        "rules:\n  - name: lead\n    source: github\n    actions:\n      - name: crm\n        command: {{ argv: [x] }}\n{crm}      - name: announce\n        command: {{ argv: [x, \"{{{{steps.crm.json.id}}}}\"] }}\n{announce}      - name: follow-up\n        command: {{ argv: [x] }}\n{follow}"
    )
}

load_errors! {
    needs_an_unknown_action: &chain("", "        needs: [crm, crn]\n", "") => "r.yaml:9:22: `needs` names `crn`, which is not an action of rule `lead` (its actions: crm, announce, follow-up)";
    needs_something_else_than_names: &chain("", "        needs: { crm: true }\n", "") => "r.yaml:9:16: `needs` names actions of this rule, found a map";
    needs_a_cycle: &chain("        needs: follow-up\n", "        needs: crm\n", "        needs: announce\n") => "r.yaml:10:16: `needs` makes a cycle: crm → follow-up → announce → crm";
    needs_itself: &chain("", "        needs: [announce]\n", "") => "r.yaml:9:17: `needs` makes a cycle: announce → announce";
    a_template_reads_an_output_it_does_not_need: &chain("", "", "") => "r.yaml:8:30: `steps.crm` / `step: crm` reads an output this action cannot have: `crm` is not among the needs of `announce` (add it to `needs`)";
    a_condition_reads_an_output_it_does_not_need: &chain("", "        needs: crm\n", "        needs: crm\n        when: { step: announce, path: $.exit_code, equals: 0 }\n") => "r.yaml:13:23: `steps.announce` / `step: announce` reads an output this action cannot have: `announce` is not among the needs of `follow-up` (add it to `needs`)";
    a_template_reads_an_unknown_action: &chain("", "        needs: crm\n", "").replace("steps.crm.json.id", "steps.nope.json") => "r.yaml:8:30: `steps.nope` / `step: nope` reads an output this action cannot have: `nope` is not an action of rule `lead` (add it to `needs`)";
    a_bad_delay: &chain("", "        needs: crm\n        delay: soon\n", "") => "r.yaml:10:16: ";
}

#[test]
fn a_chain_of_steps_loads_with_its_graph() {
    let text = chain(
        "",
        "        needs: crm\n        when: { step: crm, path: $.json.created, equals: true }\n",
        "        needs: announce\n        delay: 2d\n        when: { step: crm, exists: true }\n",
    );
    let set = load_text(&[("r.yaml", &text), ("sources.yaml", SOURCES)]).unwrap();
    let rule = set.rule("lead").unwrap();
    assert_eq!(rule.action("announce").unwrap().needs, ["crm"]);
    // Through its needs, follow-up may read crm's output too.
    assert_eq!(rule.runs_after("follow-up"), ["announce", "crm"]);
    assert!(rule.has_dependents("crm") && !rule.has_dependents("follow-up"));
    assert_eq!(
        rule.step_graph(),
        [
            "crm",
            "announce ← crm",
            "follow-up ← announce (delay 2days)"
        ]
    );
    // A rule without steps has no graph to show.
    let set = load_text(&[
        (
            "r.yaml",
            &chain("", "", "").replace("{{steps.crm.json.id}}", "y"),
        ),
        ("sources.yaml", SOURCES),
    ])
    .unwrap();
    assert!(set.rule("lead").unwrap().step_graph().is_empty());
}
