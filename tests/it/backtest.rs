//! Backtests against a real daemon: 200 varied GitHub and form events are
//! stored, then candidate rule files are compared with the live rules over
//! them — through `hookwire check --backtest`, `POST /api/backtest` and
//! `GET /api/backtest/last-reload`.

use std::collections::BTreeSet;
use std::path::Path;

use serde_json::{Value, json};

use crate::support::{Daemon, Receiver, client, fixture, run_cli};

/// The live rules; `glob` and `who` are what the candidates change.
fn rules(rx: &Receiver, glob: &str, who: &str) -> String {
    format!(
        r#"sources:
  github: {{}}
  contact-form: {{}}
rules:
  - name: push-to-chat
    source: github
    when:
      - header: X-GitHub-Event
        equals: push
      - path: $.ref
        glob: "{glob}"
    actions:
      - name: chat
        http:
          url: "{chat}"
          body: {{ text: "{{{{{who}}}}} pushed to {{{{payload.ref}}}}" }}
  - name: release
    source: github
    when: {{ path: $.action, equals: published }}
    actions:
      - name: chat
        http: {{ url: "{chat}", body: {{ text: "{{{{payload.release.tag_name}}}} is out" }} }}
  - name: lead
    source: contact-form
    when: {{ path: $.email, exists: true }}
    actions:
      - name: crm
        http: {{ url: "{crm}", body: {{ email: "{{{{payload.email}}}}" }} }}
"#,
        chat = rx.url("/chat"),
        crm = rx.url("/crm"),
    )
}

const MAIN: &str = "refs/heads/main";
const PUSHER: &str = "payload.pusher.name";

/// A GitHub push (GitHub's published example) to `git_ref`.
fn push_to(git_ref: &str) -> String {
    let mut v: Value =
        serde_json::from_slice(&fixture("examples/payloads/push-branch.json")).unwrap();
    v["ref"] = json!(git_ref);
    v.to_string()
}

struct Traffic {
    /// Ids of pushes to other branches than main, by kind.
    feature_pushes: BTreeSet<String>,
    main_pushes: BTreeSet<String>,
    all: usize,
}

/// 200 events: pushes to main and to feature branches, tag deletions, pull
/// requests, releases, issues, pings and contact forms.
async fn send_traffic(d: &Daemon) -> Traffic {
    let mut t = Traffic {
        feature_pushes: BTreeSet::new(),
        main_pushes: BTreeSet::new(),
        all: 0,
    };
    let github = |event: &'static str, body: String| {
        client()
            .post(d.url("/hooks/github"))
            .header("content-type", "application/json")
            .header("x-github-event", event)
            .body(body)
            .send()
    };
    let file =
        |name: &str| String::from_utf8(fixture(&format!("examples/payloads/{name}"))).unwrap();
    for i in 0..200 {
        let r = match i % 8 {
            0 | 1 => github("push", push_to(MAIN)).await,
            2 => github("push", push_to(&format!("refs/heads/feature/f{i}"))).await,
            3 => github("push", file("push-tag-deleted.json")).await,
            4 => github("pull_request", file("pull_request-opened.json")).await,
            5 => github("release", file("release-published.json")).await,
            6 => github("issues", file("issues-opened.json")).await,
            _ => {
                client()
                    .post(d.url("/hooks/contact-form"))
                    .header("content-type", "application/x-www-form-urlencoded")
                    .body(file("contact-form.txt"))
                    .send()
                    .await
            }
        }
        .unwrap();
        assert_eq!(r.status(), 202);
        let id = r.json::<Value>().await.unwrap()["event_id"]
            .as_str()
            .unwrap()
            .to_owned();
        match i % 8 {
            0 | 1 => t.main_pushes.insert(id),
            2 => t.feature_pushes.insert(id),
            _ => false,
        };
        t.all += 1;
    }
    t
}

/// `hookwire check --backtest --server … ARGS` in `dir`.
fn backtest(d: &Daemon, dir: &Path, args: &[&str]) -> (i32, String, String) {
    let server = d.url("");
    let mut all = vec![
        "check",
        "--backtest",
        "--server",
        server.trim_end_matches('/'),
    ];
    all.extend_from_slice(args);
    run_cli(dir, &all, &[])
}

fn candidate(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("rules")).unwrap();
    for (name, text) in files {
        std::fs::write(dir.path().join("rules").join(name), text).unwrap();
    }
    dir
}

fn ids(v: &Value) -> BTreeSet<String> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_str().unwrap().to_owned())
        .collect()
}

fn rule<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["rules"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["rule"] == name)
        .unwrap_or_else(|| panic!("no rule {name}: {report:#}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backtest_reports_what_a_candidate_would_change_on_stored_events() {
    let rx = Receiver::start().await;
    let live = rules(&rx, MAIN, PUSHER);
    let d = Daemon::start(&[("r.yaml", &live)]);
    let t = send_traffic(&d).await;
    assert_eq!(t.all, 200);

    // The same files: nothing changes, exit 0.
    let same = candidate(&[("r.yaml", &live)]);
    let (code, out, err) = backtest(&d, same.path(), &["--last", "500"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("backtest: 200 stored events"), "{out}");
    assert!(
        out.contains("verdict: no change: every rule does the same on the 200 events"),
        "{out}"
    );
    assert!(out.contains("3 rules unchanged"), "{out}");

    // A wider glob: exactly the feature-branch pushes start matching.
    let wide = candidate(&[("r.yaml", &rules(&rx, "refs/heads/**", PUSHER))]);
    let (code, out, err) = backtest(&d, wide.path(), &["--last", "500", "--format", "json"]);
    assert_eq!(code, 3, "{out}{err}");
    let report: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(report["events"], 200);
    let push = rule(&report, "push-to-chat");
    assert_eq!(push["status"], "changed");
    assert_eq!(ids(&push["started"]), t.feature_pushes, "{push:#}");
    assert!(ids(&push["stopped"]).is_empty());
    assert_eq!(push["before"], t.main_pushes.len());
    assert_eq!(push["after"], t.main_pushes.len() + t.feature_pushes.len());
    assert_eq!(rule(&report, "release")["status"], "same");
    assert_eq!(rule(&report, "lead")["status"], "same");
    assert_eq!(report["events_changed"], t.feature_pushes.len());
    // The same as text: counts, five examples and the verdict.
    let (code, text, _) = backtest(&d, wide.path(), &["--last", "500"]);
    assert_eq!(code, 3);
    let line = format!(
        "rule push-to-chat: matched {} → {} (+{} started, −0 stopped)",
        t.main_pushes.len(),
        t.main_pushes.len() + t.feature_pushes.len(),
        t.feature_pushes.len()
    );
    assert!(text.contains(&line), "{text}");
    assert!(
        text.contains(&format!("and {} more", t.feature_pushes.len() - 5)),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "verdict: 1 rule would act differently on {} of 200 events",
            t.feature_pushes.len()
        )),
        "{text}"
    );

    // A renamed template field: the same events match, the text differs.
    let renamed = candidate(&[("r.yaml", &rules(&rx, MAIN, "payload.pusher.nmae"))]);
    let (code, out, err) = backtest(&d, renamed.path(), &["--format", "json"]);
    assert_eq!(code, 3, "{out}{err}");
    let report: Value = serde_json::from_str(&out).unwrap();
    let push = rule(&report, "push-to-chat");
    assert!(ids(&push["started"]).is_empty() && ids(&push["stopped"]).is_empty());
    assert_eq!(ids(&push["rendered_differently"]), t.main_pushes);
    let diffs = push["differences"].as_array().unwrap();
    assert_eq!(diffs.len(), 1, "{push:#}");
    assert_eq!(diffs[0]["action"], "chat");
    assert_eq!(diffs[0]["field"], "body.text");
    assert_eq!(diffs[0]["events"], t.main_pushes.len());
    assert_eq!(diffs[0]["before"], "Codertocat pushed to refs/heads/main");
    assert_eq!(diffs[0]["after"], " pushed to refs/heads/main");
    let (_, text, _) = backtest(&d, renamed.path(), &[]);
    assert!(text.contains("chat/body.text on"), "{text}");

    // Only one source, and only the newest events.
    let (code, out, _) = backtest(
        &d,
        wide.path(),
        &["--source", "contact-form", "--format", "json"],
    );
    assert_eq!(code, 0, "{out}");
    let report: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(report["events"], 25);
    let (_, out, _) = backtest(&d, wide.path(), &["--last", "8", "--format", "json"]);
    let report: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(report["events"], 8);
    assert_eq!(ids(&rule(&report, "push-to-chat")["started"]).len(), 1);

    // A broken candidate: exit 1 with its position, nothing sent.
    let broken = candidate(&[(
        "r.yaml",
        &live.replace("    when:\n      - header", "    whne:\n      - header"),
    )]);
    let (code, out, err) = backtest(&d, broken.path(), &[]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        out.contains("rules/r.yaml:7:5: unknown field `whne`"),
        "{out}{err}"
    );
    // Bad input: exit 2.
    let (code, _, err) = backtest(&d, same.path(), &["--since", "yesterday"]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("--since: invalid duration `yesterday`"),
        "{err}"
    );
    let (code, _, err) = run_cli(
        same.path(),
        &["check", "--backtest", "--server", "http://127.0.0.1:1"],
        &[],
    );
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("cannot reach hookwire at http://127.0.0.1:1"),
        "{err}"
    );
    // The daemon keeps serving.
    assert_eq!(d.get_json("/healthz").await["status"], "ok");
}

#[tokio::test]
async fn the_backtest_api_answers_bad_requests_and_broken_candidates_clearly() {
    let rx = Receiver::start().await;
    let live = rules(&rx, MAIN, PUSHER);
    let d = Daemon::start(&[("r.yaml", &live)]);
    let post = |body: String| {
        client()
            .post(d.url("/api/backtest"))
            .header("content-type", "application/json")
            .body(body)
            .send()
    };
    let r = post("{\"files\": 3}".into()).await.unwrap();
    assert_eq!(r.status(), 400);
    let e: Value = r.json().await.unwrap();
    assert!(
        e["error"].as_str().unwrap().starts_with(
            "the body is not a backtest request: invalid type: integer `3`, expected a sequence"
        ),
        "{e}"
    );
    let r = post(json!({"files": []}).to_string()).await.unwrap();
    assert_eq!(r.status(), 400);
    let r = post(json!({"files": [{"name": "a.yaml", "text": live}], "since": "soon"}).to_string())
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(
        r.json::<Value>().await.unwrap()["error"],
        "`since`: invalid duration `soon`: expected number at 0 (write e.g. `250ms`, `5s`, `10m`, `2h`, `7d`)"
    );
    let r = post(
        json!({"files": [{"name": "a.yaml", "text": "rules:\n  - name: x\n    source: nowhere\n"}]})
            .to_string(),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 422);
    let e: Value = r.json().await.unwrap();
    assert_eq!(e["error"], "the candidate rule files do not load");
    assert_eq!(e["errors"][0]["file"], "a.yaml");
    assert_eq!(e["errors"][0]["line"], 3);
    // No events yet: nothing to say, nothing changed.
    let r = post(json!({"files": [{"name": "a.yaml", "text": live}]}).to_string())
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let report: Value = r.json().await.unwrap();
    assert_eq!(report["changed"], false);
    assert_eq!(
        report["verdict"],
        "no stored events to compare: nothing to say yet"
    );
    // Before any reload there is nothing to compare the live set with.
    let r = client()
        .get(d.url("/api/backtest/last-reload"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(d.get_json("/healthz").await["status"], "ok");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_last_reload_is_backtested_on_the_stored_events() {
    let rx = Receiver::start().await;
    let d = Daemon::start(&[("r.yaml", &rules(&rx, MAIN, PUSHER))]);
    let t = send_traffic(&d).await;
    d.write_rule("r.yaml", &rules(&rx, "refs/heads/**", PUSHER));
    d.wait_rules("the wider glob", |v| v["version"] == 2).await;
    let report = d.get_json("/api/backtest/last-reload").await;
    assert_eq!(report["baseline_version"], 1);
    assert_eq!(report["candidate_version"], 2);
    assert_eq!(report["changed"], true);
    assert_eq!(
        ids(&rule(&report, "push-to-chat")["started"]),
        t.feature_pushes
    );
}

/// The candidate loads with the daemon's environment (a secret this machine
/// lacks), and the secret it renders comes back redacted. Only the variables
/// the live rules use resolve: another secret of the daemon cannot be pulled
/// out through a candidate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backtest_uses_the_daemons_secrets_and_never_shows_them() {
    let rx = Receiver::start().await;
    let crm = |headers: &str| {
        rules(&rx, MAIN, PUSHER).replace(
            &format!("http: {{ url: \"{}\", body:", rx.url("/crm")),
            &format!(
                "http: {{ url: \"{}\", headers: {{ {headers} }}, body:",
                rx.url("/crm")
            ),
        )
    };
    let live = crm("X-Api-Key: \"${CRM_TOKEN}\"");
    let secret = "s3cr3t-crm-t0ken-4242";
    let other = "an0ther-s3cret-of-the-daemon";
    let d = Daemon::start_with(
        &[("r.yaml", &live)],
        &[("CRM_TOKEN", secret), ("OTHER_SECRET", other)],
        &[],
    );
    let r = client()
        .post(d.url("/hooks/contact-form"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(fixture("examples/payloads/contact-form.txt"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);

    let cand = candidate(&[("r.yaml", &crm("Authorization: \"Bearer ${CRM_TOKEN}\""))]);
    let (code, out, err) = backtest(&d, cand.path(), &[]);
    assert_eq!(code, 3, "{out}{err}");
    assert!(
        out.contains("crm/headers.Authorization on 1 event(s)"),
        "{out}"
    );
    assert!(out.contains("+ \"Bearer [redacted]\""), "{out}");
    assert!(out.contains("crm/headers.X-Api-Key on 1 event(s)"), "{out}");
    assert!(out.contains("- \"[redacted]\""), "{out}");
    assert!(!out.contains(secret) && !err.contains(secret), "{out}{err}");

    // A variable the live rules do not use stays out, even transformed.
    let cand = candidate(&[("r.yaml", &crm("X-Api-Key: \"{{upper '${OTHER_SECRET}'}}\""))]);
    let (code, out, err) = backtest(&d, cand.path(), &[]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        out.contains("environment variable `OTHER_SECRET` is not one the live rules use: a backtest resolves only those"),
        "{out}"
    );
    let shouted = other.to_uppercase();
    assert!(!(out.clone() + &err).contains(&shouted) && !(out + &err).contains(other));
}
