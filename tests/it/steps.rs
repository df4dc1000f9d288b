//! Steps (SPEC §4.7) end to end, on both stores: a chain whose second
//! request carries what the first returned, a step whose `when` is false, a
//! dead need and its manual retry, a SIGKILL between a need and its step,
//! and `delay`, short (waited for) and long (with the clock moved ahead).
//! Two needs finishing at once on two PostgreSQL instances are tested at
//! the store (`store::postgres::tests`), where "at once" can be made so.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::cluster::pg;
use crate::support::{Daemon, Receiver, client, run_cli};

/// `NAME::on_sqlite` and `NAME::on_postgres`: the scenario `NAME(backend)`
/// on each store.
macro_rules! on_both_stores {
    ($name:ident) => {
        mod $name {
            use super::Backend;

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn on_sqlite() {
                super::$name(Backend::Sqlite).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn on_postgres() {
                super::$name(Backend::Postgres).await;
            }
        }
    };
}
#[derive(Clone, Copy, Debug)]
enum Backend {
    Sqlite,
    Postgres,
}

/// A daemon on `backend`; its leases are short, so that what a killed
/// process held on PostgreSQL is taken over within seconds.
fn start(backend: Backend, rules: &str, env: &[(&str, &str)]) -> Daemon {
    let db = match backend {
        Backend::Sqlite => None,
        Backend::Postgres => Some(pg::database()),
    };
    Daemon::start_on(&[("r.yaml", rules)], env, &["--lease", "2s"], db.as_deref())
}

/// form → CRM → chat, and release → deploy command → chat: each second
/// step reads what the first returned.
fn chain_rules(rx: &Receiver) -> String {
    format!(
        r#"sources:
  form: {{}}
  github: {{}}
rules:
  - name: lead
    source: form
    actions:
      - name: crm
        http:
          url: "{crm}"
          body: {{ email: "{{{{payload.email}}}}" }}
        retry: {{ attempts: 2, initial: 200ms, max: 1s }}
      - name: announce
        needs: crm
        when: {{ step: crm, path: $.json.created, equals: true }}
        http:
          url: "{chat}"
          body: {{ text: "New lead #{{{{steps.crm.json.id}}}}: {{{{payload.email}}}}", lead: "{{{{steps.crm.json.id}}}}" }}
  - name: release
    source: github
    actions:
      - name: deploy
        command:
          argv: [sh, -c, 'printf "{{\"url\": \"https://deploy.example/%s\"}}" "$1"', sh, "{{{{payload.release.tag_name}}}}"]
        retry: {{ attempts: 1 }}
      - name: report
        needs: deploy
        http:
          url: "{chat}"
          body: {{ text: "Deployed {{{{payload.release.tag_name}}}}: {{{{steps.deploy.json.url}}}}" }}
"#,
        crm = rx.url("/crm"),
        chat = rx.url("/chat"),
    )
}

async fn send(d: &Daemon, path: &str, body: &Value) -> String {
    let r = client().post(d.url(path)).json(body).send().await.unwrap();
    assert_eq!(r.status(), 202, "{}", r.text().await.unwrap());
    let v: Value = r.json().await.unwrap();
    v["event_id"].as_str().unwrap().to_owned()
}

/// The event's delivery of `action`, as the API shows it.
async fn delivery(d: &Daemon, event: &str, action: &str) -> Value {
    let e = d.event(event).await.expect("stored");
    e["deliveries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["action"] == action)
        .cloned()
        .unwrap_or(Value::Null)
}

/// Waits until the delivery of `action` is in `status`; returns it.
async fn wait_status(d: &Daemon, event: &str, action: &str, status: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let x = delivery(d, event, action).await;
        if x["status"] == status {
            return x;
        }
        assert!(
            Instant::now() < deadline,
            "{action} never became {status}: {x}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn a_chain_carries_the_first_output_into_the_second_request(backend: Backend) {
    let rx = Receiver::start().await;
    rx.answer_json("/crm", r#"{"id": 4711, "created": true}"#);
    let d = start(backend, &chain_rules(&rx), &[]);
    let event = send(&d, "/hooks/form", &json!({"email": "ada@example.com"})).await;
    // The step waits, with its needs, until the CRM answered.
    let chat = rx.wait_for("/chat", 1, Duration::from_secs(20)).await;
    assert_eq!(
        chat[0].json(),
        json!({"text": "New lead #4711: ada@example.com", "lead": 4711})
    );
    assert_eq!(rx.requests("/crm").len(), 1);
    let announce = wait_status(&d, &event, "announce", "succeeded").await;
    assert_eq!(announce["needs"], json!(["crm"]));
    // Its `when` was evaluated over the CRM's output, and is on record.
    assert_eq!(announce["when"][0]["result"], true);
    assert_eq!(
        announce["when"][0]["condition"],
        "step crm path $.json.created equals true"
    );
    let crm = delivery(&d, &event, "crm").await;
    assert_eq!(crm["output"]["json"]["id"], 4711);
    assert_eq!(crm["output"]["status"], 200);

    // release → deploy (a command printing JSON) → chat with its URL.
    let payload: Value = serde_json::from_slice(&crate::support::fixture(
        "examples/payloads/release-published.json",
    ))
    .unwrap();
    let release = send(&d, "/hooks/github", &payload).await;
    let tag = payload["release"]["tag_name"].as_str().unwrap();
    let chat = rx.wait_for("/chat", 2, Duration::from_secs(20)).await;
    assert_eq!(
        chat[1].json()["text"],
        format!("Deployed {tag}: https://deploy.example/{tag}")
    );
    let deploy = wait_status(&d, &release, "deploy", "succeeded").await;
    assert_eq!(deploy["output"]["exit_code"], 0);
    assert_eq!(
        deploy["output"]["json"]["url"],
        format!("https://deploy.example/{tag}")
    );
}

on_both_stores!(a_chain_carries_the_first_output_into_the_second_request);

async fn a_false_when_skips_the_step_with_the_reason(backend: Backend) {
    let rx = Receiver::start().await;
    rx.answer_json("/crm", r#"{"id": 12, "created": false}"#);
    let d = start(backend, &chain_rules(&rx), &[]);
    let event = send(&d, "/hooks/form", &json!({"email": "dup@example.com"})).await;
    let announce = wait_status(&d, &event, "announce", "skipped").await;
    assert_eq!(announce["reason"], "its `when` is false");
    assert_eq!(announce["when"][0]["result"], false);
    assert_eq!(announce["when"][0]["found"], json!(["false"]));
    assert_eq!(announce["due_at_ms"], Value::Null);
    assert!(rx.requests("/chat").is_empty());
    // The event's trace names the step, what it needs, and when its `when` is evaluated.
    let e = d.event(&event).await.unwrap();
    let line = &e["trace"][0]["actions"][1];
    assert_eq!(line["needs"], json!(["crm"]));
    assert_eq!(line["note"], "its `when` was evaluated when crm succeeded");
    assert_eq!(line["conditions"][0]["result"], false);
}

on_both_stores!(a_false_when_skips_the_step_with_the_reason);

async fn a_dead_need_skips_its_step_until_a_manual_retry_succeeds(backend: Backend) {
    let rx = Receiver::start().await;
    rx.answer_json("/crm", r#"{"id": 99, "created": true}"#);
    // The CRM refuses the first request (a 422 is not retried): crm is dead.
    rx.script("/crm", &[(422, None)]);
    let d = start(backend, &chain_rules(&rx), &[]);
    let event = send(&d, "/hooks/form", &json!({"email": "eve@example.com"})).await;
    let crm = wait_status(&d, &event, "crm", "dead").await;
    let announce = wait_status(&d, &event, "announce", "skipped").await;
    assert_eq!(announce["reason"], "needs crm, which is dead");
    // The step cannot be retried on its own: its need is what failed.
    let r = client()
        .post(d.url(&format!(
            "/api/deliveries/{}/retry",
            announce["id"].as_str().unwrap()
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 409);
    let body: Value = r.json().await.unwrap();
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .ends_with("is a step skipped because it needs crm, which is dead: retry that one, and this step runs after it"),
        "{body}"
    );
    // Retrying the need by hand brings the step back, and it runs.
    let r = client()
        .post(d.url(&format!(
            "/api/deliveries/{}/retry",
            crm["id"].as_str().unwrap()
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    let chat = rx.wait_for("/chat", 1, Duration::from_secs(20)).await;
    assert_eq!(chat[0].json()["text"], "New lead #99: eve@example.com");
    wait_status(&d, &event, "announce", "succeeded").await;
    assert_eq!(rx.requests("/crm").len(), 2);
}

on_both_stores!(a_dead_need_skips_its_step_until_a_manual_retry_succeeds);

async fn a_kill_between_a_need_and_its_step_loses_nothing(backend: Backend) {
    let rx = Receiver::start().await;
    rx.answer_json("/crm", r#"{"id": 5, "created": true}"#);
    let mut d = start(
        backend,
        &chain_rules(&rx),
        &[("HOOKWIRE_FAULTS", "kill-before-step")],
    );
    let event = send(&d, "/hooks/form", &json!({"email": "kim@example.com"})).await;
    // crm succeeds; the daemon dies as it is about to run the step.
    d.wait_exit(Duration::from_secs(20)).await;
    assert_eq!(rx.requests("/crm").len(), 1);
    assert!(rx.requests("/chat").is_empty());
    d.set_env("HOOKWIRE_FAULTS", None);
    // SQLite requeues what the dead process held when it opens; on
    // PostgreSQL its lease runs out (2 s here) and is taken over.
    d.restart();
    let chat = rx.wait_for("/chat", 1, Duration::from_secs(60)).await;
    assert_eq!(chat[0].json()["text"], "New lead #5: kim@example.com");
    wait_status(&d, &event, "announce", "succeeded").await;
    // The need ran once: its success was committed before the kill.
    assert_eq!(rx.requests("/crm").len(), 1);
    assert_eq!(rx.requests("/chat").len(), 1);
}

on_both_stores!(a_kill_between_a_need_and_its_step_loses_nothing);

/// An action delayed 2 s, and a step delayed 2 s after its need.
fn delay_rules(rx: &Receiver, delay: &str) -> String {
    format!(
        r#"sources:
  form: {{}}
rules:
  - name: later
    source: form
    actions:
      - name: now
        http: {{ url: "{now}", body: {{ n: 1 }} }}
      - name: soon
        delay: {delay}
        http: {{ url: "{soon}", body: {{ n: 2 }} }}
      - name: after
        needs: now
        delay: {delay}
        http: {{ url: "{after}", body: {{ n: 3 }} }}
"#,
        now = rx.url("/now"),
        soon = rx.url("/soon"),
        after = rx.url("/after"),
    )
}

async fn a_delay_is_honoured(backend: Backend) {
    let rx = Receiver::start().await;
    let d = start(backend, &delay_rules(&rx, "2s"), &[]);
    let sent = Instant::now();
    let event = send(&d, "/hooks/form", &json!({})).await;
    let soon = delivery(&d, &event, "soon").await;
    let e = d.event(&event).await.unwrap();
    let received = e["received_at_ms"].as_i64().unwrap();
    assert_eq!(soon["status"], "pending");
    assert_eq!(soon["due_at_ms"].as_i64().unwrap(), received + 2_000);
    let now = rx.wait_for("/now", 1, Duration::from_secs(10)).await;
    let soon = rx.wait_for("/soon", 1, Duration::from_secs(10)).await;
    let after = rx.wait_for("/after", 1, Duration::from_secs(10)).await;
    assert!(
        soon[0].at - sent >= Duration::from_millis(1_900),
        "{:?}",
        soon[0].at - sent
    );
    // The step's delay counts from its need's success.
    assert!(
        after[0].at - now[0].at >= Duration::from_millis(1_900),
        "{:?}",
        after[0].at - now[0].at
    );
}

on_both_stores!(a_delay_is_honoured);

/// Two days are not waited for: the daemon is started again with its
/// clock two days ahead (a debug build's `HOOKWIRE_CLOCK_OFFSET_MS`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_delay_comes_due_when_its_time_comes() {
    const TWO_DAYS_MS: i64 = 2 * 24 * 3600 * 1000;
    let rx = Receiver::start().await;
    let mut d = start(Backend::Sqlite, &delay_rules(&rx, "2d"), &[]);
    let event = send(&d, "/hooks/form", &json!({})).await;
    rx.wait_for("/now", 1, Duration::from_secs(10)).await;
    let after = wait_status(&d, &event, "after", "pending").await;
    let soon = delivery(&d, &event, "soon").await;
    let received = d.event(&event).await.unwrap()["received_at_ms"]
        .as_i64()
        .unwrap();
    assert_eq!(soon["due_at_ms"].as_i64().unwrap(), received + TWO_DAYS_MS);
    assert!(after["due_at_ms"].as_i64().unwrap() >= received + TWO_DAYS_MS);
    assert!(rx.requests("/soon").is_empty() && rx.requests("/after").is_empty());
    d.set_env(
        "HOOKWIRE_CLOCK_OFFSET_MS",
        Some(&(TWO_DAYS_MS + 1_000).to_string()),
    );
    d.restart();
    rx.wait_for("/soon", 1, Duration::from_secs(10)).await;
    rx.wait_for("/after", 1, Duration::from_secs(10)).await;
}

/// Every load error of steps, with its position, from `hookwire check`,
/// and a running daemon that keeps its rules when a file has them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn step_load_errors_name_their_place() {
    let rx = Receiver::start().await;
    let d = Daemon::start(&[("r.yaml", &chain_rules(&rx))]);
    let bad = r#"sources:
  form: {}
rules:
  - name: broken
    source: form
    actions:
      - name: a
        needs: [c]
        command: { argv: [x] }
      - name: b
        needs: nope
        command: { argv: [x] }
      - name: c
        needs: a
        command: { argv: [x, "{{steps.b.stdout}}"] }
  - name: reads
    source: form
    actions:
      - name: a
        command: { argv: [x] }
      - name: b
        when: { step: a, exists: true }
        command: { argv: [x] }
"#;
    crate::support::write(&d.rules_dir().join("bad.yaml"), bad);
    let (code, out, _) = run_cli(d.dir.path(), &["check", "rules/bad.yaml"], &[]);
    assert_eq!(code, 1);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines,
        [
            "rules/bad.yaml:11:16: `needs` names `nope`, which is not an action of rule `broken` (its actions: a, b, c)",
            "rules/bad.yaml:22:23: `steps.a` / `step: a` reads an output this action cannot have: `a` is not among the needs of `b` (add it to `needs`)",
        ],
        "{out}"
    );
    let fixed = bad.replace("needs: nope", "needs: a");
    crate::support::write(&d.rules_dir().join("bad.yaml"), &fixed);
    let (_, out, _) = run_cli(d.dir.path(), &["check", "rules/bad.yaml"], &[]);
    assert!(
        out.starts_with("rules/bad.yaml:14:16: `needs` makes a cycle: a → c → a"),
        "{out}"
    );
    // The daemon refused the file and serves on with its rules.
    d.wait_log("the reload is refused", |l| l.contains("bad.yaml:"))
        .await;
    let rules = d.get_json("/api/rules").await;
    assert!(
        rules["reload"]["last_error"]
            .to_string()
            .contains("bad.yaml"),
        "{rules}"
    );
    let event = send(&d, "/hooks/form", &json!({"email": "still@example.com"})).await;
    wait_status(&d, &event, "crm", "succeeded").await;
}

/// `hookwire test --execute` runs the steps after their needs, with what
/// those really returned; a step whose need failed does not run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_execute_runs_steps_in_order_with_real_outputs() {
    let rx = Receiver::start().await;
    rx.answer_json("/crm", r#"{"id": 77, "created": true}"#);
    let dir = tempfile::tempdir().unwrap();
    crate::support::write(&dir.path().join("rules/r.yaml"), &chain_rules(&rx));
    crate::support::write(
        &dir.path().join("lead.json"),
        r#"{"email": "lin@example.com"}"#,
    );
    let args = [
        "test",
        "--rules",
        "rules",
        "--source",
        "form",
        "--payload",
        "lead.json",
        "--execute",
        "--format",
        "json",
    ];
    let dir_path = dir.path().to_owned();
    let run = move || {
        let (code, out, err) = run_cli(&dir_path, &args, &[]);
        assert_eq!(code, 0, "{err}");
        serde_json::from_str::<Value>(&out).unwrap()
    };
    let report = tokio::task::spawn_blocking(run.clone()).await.unwrap();
    let rule = &report["rules"][0];
    assert_eq!(rule["rule"], "lead");
    let rendered = rule["rendered"].as_array().unwrap();
    assert_eq!(rendered[0]["action"], "crm");
    assert_eq!(rendered[0]["executed"]["outcome"], "succeeded");
    assert_eq!(rendered[1]["action"], "announce");
    assert_eq!(
        rendered[1]["rendered"]["body"]["text"],
        "New lead #77: lin@example.com"
    );
    assert_eq!(rendered[1]["executed"]["outcome"], "succeeded");
    // The step's `when`, evaluated over the real output, is in the trace.
    assert_eq!(rule["actions"][1]["conditions"][0]["result"], true);
    let chat = rx.wait_for("/chat", 1, Duration::from_secs(5)).await;
    assert_eq!(chat[0].json()["lead"], 77);

    // The CRM refuses: the step does not run.
    rx.script("/crm", &[(500, None)]);
    let report = tokio::task::spawn_blocking(run).await.unwrap();
    let rendered = report["rules"][0]["rendered"].as_array().unwrap();
    assert_eq!(rendered[0]["executed"]["outcome"], "retryable");
    assert_eq!(
        rendered[1]["error"],
        "not run: it needs crm, which did not succeed"
    );
    assert_eq!(rx.requests("/chat").len(), 1);
}

/// The lines `hookwire event` prints for the delivery of `action`: its
/// heading, then what it says about steps and outputs (attempts left out),
/// trimmed.
fn cli_block(out: &str, action: &str) -> Vec<String> {
    let mut lines = out
        .lines()
        .skip_while(|l| l.trim() != "deliveries:")
        .skip(1);
    let head = format!("  lead/{action}  ");
    let mut block = Vec::new();
    for l in lines.by_ref() {
        if l.starts_with("  dlv_") && l.contains(&head) {
            block.push(l.split_once(&head).unwrap().1.to_owned());
            break;
        }
    }
    block.extend(
        lines
            .take_while(|l| !l.starts_with("  dlv_") && !l.is_empty())
            .map(|l| l.trim().to_owned())
            .filter(|l| !l.starts_with('#')),
    );
    block
}

/// `hookwire event` shows each step with what it runs after (and their
/// states), its state, when it is due, why it was skipped, its `when` as
/// evaluated and the outputs it used; a need shows what it returned.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hookwire_event_shows_steps_with_needs_due_times_reasons_and_outputs() {
    let rx = Receiver::start().await;
    rx.answer_json("/crm", r#"{"id": 4711, "created": true}"#);
    let rules = format!(
        r#"sources:
  form: {{}}
rules:
  - name: lead
    source: form
    actions:
      - name: crm
        http:
          url: "{crm}"
          body: {{ email: "{{{{payload.email}}}}" }}
      - name: announce
        needs: crm
        when: {{ step: crm, path: $.json.created, equals: true }}
        http: {{ url: "{chat}", body: {{ text: "New lead #{{{{steps.crm.json.id}}}}" }} }}
      - name: follow-up
        needs: crm
        delay: 2d
        http: {{ url: "{mail}" }}
      - name: survey
        needs: follow-up
        when: {{ step: follow-up, path: $.status, equals: 200 }}
        http: {{ url: "{mail}" }}
"#,
        crm = rx.url("/crm"),
        chat = rx.url("/chat"),
        mail = rx.url("/mail"),
    );
    let d = start(Backend::Sqlite, &rules, &[]);
    let server = d.url("");
    let event = send(&d, "/hooks/form", &json!({"email": "ada@example.com"})).await;
    wait_status(&d, &event, "announce", "succeeded").await;
    let due_at = wait_status(&d, &event, "follow-up", "pending").await["due_at"]
        .as_str()
        .unwrap()
        .to_owned();
    let (code, out, err) = run_cli(d.dir.path(), &["event", &event, "--server", &server], &[]);
    assert_eq!(code, 0, "{out}{err}");

    let crm = cli_block(&out, "crm");
    assert_eq!(crm[0], "succeeded  attempts 1", "{out}");
    assert!(crm[1].starts_with("returned: HTTP 200 {"), "{out}");
    let returned = crm[1].trim_start_matches("returned: ");
    assert!(
        returned.contains(r#""id":4711"#) && returned.contains(r#""created":true"#),
        "{out}"
    );
    assert_eq!(
        cli_block(&out, "announce"),
        [
            "succeeded  attempts 1".to_owned(),
            "after crm (succeeded)".to_owned(),
            "when:".to_owned(),
            "✔ step crm path $.json.created equals true  [line 13:15]".to_owned(),
            "found: true".to_owned(),
            format!("used crm: {returned}"),
        ],
        "{out}"
    );
    assert_eq!(
        cli_block(&out, "follow-up"),
        [
            "pending  attempts 0".to_owned(),
            "after crm (succeeded)".to_owned(),
            format!("due {due_at} (in 2 d)"),
            format!("used crm: {returned}"),
        ],
        "{out}"
    );
    assert_eq!(
        cli_block(&out, "survey"),
        [
            "waiting  attempts 0",
            "after follow-up (pending)",
            "when: its `when` is evaluated when follow-up succeeded",
            "used follow-up: none",
        ],
        "{out}"
    );

    // The CRM says the lead was not created: the step is skipped, and says why.
    rx.answer_json("/crm", r#"{"id": 12, "created": false}"#);
    let event = send(&d, "/hooks/form", &json!({"email": "dup@example.com"})).await;
    wait_status(&d, &event, "announce", "skipped").await;
    let (code, out, err) = run_cli(d.dir.path(), &["event", &event, "--server", &server], &[]);
    assert_eq!(code, 0, "{out}{err}");
    let announce = cli_block(&out, "announce");
    assert_eq!(
        announce[..5],
        [
            "skipped  attempts 0",
            "after crm (succeeded)",
            "skipped: its `when` is false",
            "when:",
            "✘ step crm path $.json.created equals true  [line 13:15]",
        ],
        "{out}"
    );
    assert!(
        announce.last().unwrap().starts_with("used crm: HTTP 200 {"),
        "{out}"
    );
}

/// Two daemons on one PostgreSQL, one worker each, so that the two needs
/// of one event are mostly run by different instances and finish at about
/// the same moment: every event's step runs, once. (The store test
/// `two_needs_finishing_at_once_on_two_instances_release_their_step_once`
/// makes the moment exactly the same, and fails without the lock.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_join_of_two_needs_runs_once_across_two_instances() {
    let rx = Receiver::start().await;
    let rules = format!(
        r#"sources:
  hook: {{}}
rules:
  - name: join
    source: hook
    actions:
      - name: a
        http: {{ url: "{a}", body: {{ n: "{{{{payload.n}}}}" }} }}
      - name: b
        http: {{ url: "{b}", body: {{ n: "{{{{payload.n}}}}" }} }}
      - name: both
        needs: [a, b]
        http: {{ url: "{step}", body: {{ n: "{{{{payload.n}}}}", a: "{{{{steps.a.status}}}}", b: "{{{{steps.b.status}}}}" }} }}
"#,
        a = rx.url("/a"),
        b = rx.url("/b"),
        step = rx.url("/step"),
    );
    let db = pg::database();
    let args = ["--workers", "1"];
    let one = Daemon::start_on(&[("r.yaml", &rules)], &[], &args, Some(&db));
    let two = Daemon::start_on(&[("r.yaml", &rules)], &[], &args, Some(&db));
    const EVENTS: usize = 60;
    let urls = vec![one.url("/hooks/hook"), two.url("/hooks/hook")];
    let acked = crate::cluster::send_alternately(urls, EVENTS, 4).await;
    assert_eq!(acked.len(), EVENTS);
    let steps = rx.wait_for("/step", EVENTS, Duration::from_secs(60)).await;
    let mut seen: Vec<i64> = steps
        .iter()
        .map(|r| r.json()["n"].as_i64().unwrap())
        .collect();
    seen.sort_unstable();
    seen.dedup();
    assert_eq!(seen.len(), EVENTS, "each event's step once");
    assert!(
        steps
            .iter()
            .all(|r| r.json()["a"] == 200 && r.json()["b"] == 200)
    );
    // Both instances ran needs, and nothing is left waiting.
    assert!(!rx.requests("/a").is_empty() && !rx.requests("/b").is_empty());
    let deadline = Instant::now() + Duration::from_secs(20);
    while one.count_deliveries(&["succeeded"]).await < 3 * EVENTS {
        assert!(Instant::now() < deadline, "not every delivery succeeded");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(one.count_deliveries(&["waiting"]).await, 0);
    assert_eq!(rx.requests("/step").len(), EVENTS);
}

/// `hookwire check -v` lists each rule, and the step graph of those with steps.
#[test]
fn check_verbose_shows_the_step_graph() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let check = |path: &str| {
        let (code, out, err) = run_cli(root, &["check", "-v", path], &[]);
        assert_eq!(code, 0, "{out}{err}");
        out
    };
    let at = |out: &str, head: &str| -> Vec<String> {
        let lines: Vec<&str> = out.lines().collect();
        let i = lines
            .iter()
            .position(|l| l.starts_with(head))
            .unwrap_or_else(|| panic!("no `{head}` in:\n{out}"));
        lines[i..].iter().take(5).map(|l| l.to_string()).collect()
    };
    let rules = check("rules");
    let lead = at(&rules, "rule lead-to-crm (rules/contact-form.yaml:");
    assert!(lead[0].ends_with("source contact-form: steps"), "{rules}");
    assert_eq!(lead[1..3], ["  crm", "  announce ← crm"]);
    let push = at(&rules, "rule push-to-chat (rules/github.yaml:");
    assert!(push[0].ends_with("source github: chat"), "{rules}");
    let deploy = at(&rules, "rule deploy-on-release (rules/github.yaml:");
    assert_eq!(deploy[1..3], ["  deploy", "  report ← deploy"]);
    let form = check("examples/form-to-crm");
    let lead = at(&form, "rule lead (examples/form-to-crm/form-to-crm.yaml:");
    assert_eq!(
        lead[1..5],
        [
            "  crm",
            "  announce ← crm",
            "  follow-up ← crm (delay 2days)",
            "  tell-sales"
        ]
    );
}
