//! Stored deliveries happen: http, email and commands against real peers,
//! with retries, dead deliveries, serialize_by and crash recovery.
//!
//! These tests run a receiver inside the test process while they also wait on
//! the daemon (SIGTERM, SIGKILL), so they use a multi-threaded runtime: a
//! blocked test thread must not stall the receiver the daemon is talking to.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::{Daemon, Receiver, SmtpServer, client, fixture};

const FAST_RETRY: &str = "retry: { attempts: 4, initial: 200ms, max: 2s }";

async fn send(d: &Daemon, path: &str, body: &str) -> Value {
    let r = client()
        .post(d.url(path))
        .header("content-type", "application/json")
        .body(body.to_owned())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202, "{}", r.text().await.unwrap());
    r.json().await.unwrap()
}

/// (action, status, attempts in the budget) of each delivery of an event, by action.
async fn delivery_status(d: &Daemon, event_id: &str) -> Vec<(String, String, i64)> {
    let Some(event) = d.event(event_id).await else {
        return Vec::new();
    };
    let mut all: Vec<_> = event["deliveries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| {
            (
                x["action"].as_str().unwrap().to_owned(),
                x["status"].as_str().unwrap().to_owned(),
                x["attempts_in_budget"].as_i64().unwrap(),
            )
        })
        .collect();
    all.sort();
    all
}

/// The attempts of `event_id`'s delivery of `action`, oldest first.
async fn attempt_log(d: &Daemon, event_id: &str, action: &str) -> Vec<Value> {
    let event = d.event(event_id).await.expect("stored");
    event["deliveries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["action"] == action)
        .map(|x| x["attempt_log"].as_array().unwrap().clone())
        .unwrap_or_default()
}

async fn wait_status(d: &Daemon, event_id: &str, action: &str, status: &str) -> i64 {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let all = delivery_status(d, event_id).await;
        if let Some((_, s, n)) = all.iter().find(|(a, _, _)| a == action)
            && s == status
        {
            return *n;
        }
        assert!(
            Instant::now() < deadline,
            "{action} never became {status}: {all:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_arrive_as_written_with_hostile_values() {
    let rx = Receiver::start().await;
    let rules = format!(
        r#"
sources:
  hook: {{}}
rules:
  - name: fan-out
    source: hook
    actions:
      - name: typed
        http:
          url: "{typed}"
          headers: {{ X-Event: "{{{{event.id}}}}" }}
          body: {{ text: "said: {{{{payload.msg}}}}", raw: "{{{{payload.msg}}}}", n: "{{{{payload.n}}}}", list: "{{{{payload.list}}}}", missing: "{{{{payload.nope}}}}" }}
      - name: text
        http: {{ url: "{text}", method: PUT, body: "msg={{{{payload.msg}}}}" }}
      - name: form
        http: {{ url: "{form}", form: {{ msg: "{{{{payload.msg}}}}", n: "{{{{payload.n}}}}" }} }}
      - name: relay
        http: {{ url: "{relay}", forward: true }}
"#,
        typed = rx.url("/typed"),
        text = rx.url("/text"),
        form = rx.url("/form"),
        relay = rx.url("/relay")
    );
    let d = Daemon::start(&[("r.yaml", &rules)]);
    let hostile = "quote \" backslash \\ newline \n }} {{payload.n}} \u{1} & = % +";
    let body = json!({"msg": hostile, "n": 5, "list": [1, "two"]}).to_string();
    let r = client()
        .post(d.url("/hooks/hook"))
        .header("content-type", "application/json")
        .header("x-custom", "kept")
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let event_id = r.json::<Value>().await.unwrap()["event_id"]
        .as_str()
        .unwrap()
        .to_owned();

    let typed = &rx.wait_for("/typed", 1, Duration::from_secs(10)).await[0];
    assert_eq!(
        typed.json(),
        json!({"text": format!("said: {hostile}"), "raw": hostile, "n": 5, "list": [1, "two"], "missing": null})
    );
    assert_eq!(typed.header("content-type"), Some("application/json"));
    assert_eq!(typed.header("x-event"), Some(event_id.as_str()));
    assert!(typed.header("user-agent").unwrap().starts_with("hookwire/"));
    assert!(typed.header("idempotency-key").unwrap().starts_with("dlv_"));

    let text = &rx.wait_for("/text", 1, Duration::from_secs(10)).await[0];
    assert_eq!(
        (
            text.method.as_str(),
            String::from_utf8_lossy(&text.body).into_owned()
        ),
        ("PUT", format!("msg={hostile}"))
    );

    let form = &rx.wait_for("/form", 1, Duration::from_secs(10)).await[0];
    assert_eq!(
        form.header("content-type"),
        Some("application/x-www-form-urlencoded")
    );
    let pairs: Vec<(String, String)> = url::form_urlencoded::parse(&form.body)
        .into_owned()
        .collect();
    assert_eq!(
        pairs,
        [
            ("msg".to_owned(), hostile.to_owned()),
            ("n".to_owned(), "5".to_owned())
        ]
    );

    let relay = &rx.wait_for("/relay", 1, Duration::from_secs(10)).await[0];
    assert_eq!(
        relay.body,
        body.as_bytes(),
        "forward relays the original bytes"
    );
    assert_eq!(relay.header("x-custom"), Some("kept"));
    assert_eq!(relay.header("content-type"), Some("application/json"));

    for action in ["form", "relay", "text", "typed"] {
        assert_eq!(wait_status(&d, &event_id, action, "succeeded").await, 1);
    }
}

/// Svix's `Webhook.verify` reads `svix-*` before `webhook-*`: a relay that
/// signs must not pass the sender's set on beside its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forward_with_sign_standard_sends_only_hookwires_signature_headers() {
    const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    let rx = Receiver::start().await;
    let rules = format!(
        r#"
sources:
  hook: {{}}
rules:
  - name: relay
    source: hook
    actions:
      - name: signed
        http: {{ url: "{url}", forward: true, sign: {{ standard: {{ secret: "{SECRET}" }} }} }}
"#,
        url = rx.url("/signed")
    );
    let d = Daemon::start(&[("r.yaml", &rules)]);
    let body = r#"{"type":"invoice.paid"}"#;
    // The sender's own Svix/Standard signature, valid for the sender's key.
    let now = std::time::SystemTime::now();
    let senders = hookwire::verify::sign(
        hookwire::verify::SignScheme::Standard,
        "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD",
        body.as_bytes(),
        now,
        "msg_from_sender",
    )
    .unwrap();
    let mut req = client()
        .post(d.url("/hooks/hook"))
        .header("content-type", "application/json")
        .header("x-custom", "kept")
        .header("Webhook-Extra", "sender's")
        .body(body);
    for (k, v) in &senders {
        req = req.header(*k, v.as_str());
        req = req.header(k.replacen("webhook-", "Svix-", 1), v.as_str());
    }
    let r = req.send().await.unwrap();
    assert_eq!(r.status(), 202);

    let got = &rx.wait_for("/signed", 1, Duration::from_secs(10)).await[0];
    assert_eq!(got.body, body.as_bytes());
    assert_eq!(got.header("x-custom"), Some("kept"));
    let mut signature_headers: Vec<&str> = got
        .headers
        .iter()
        .map(|(k, _)| k.as_str())
        .filter(|k| k.starts_with("webhook-") || k.starts_with("svix-"))
        .collect();
    signature_headers.sort_unstable();
    assert_eq!(
        signature_headers,
        ["webhook-id", "webhook-signature", "webhook-timestamp"],
        "{:?}",
        got.headers
    );
    assert_eq!(got.header("webhook-id"), got.header("idempotency-key"));
    assert!(got.header("webhook-id").unwrap().starts_with("dlv_"));
    assert_eq!(got.verify(json!({"standard": {"secret": SECRET}})), Ok(()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_follow_the_policy_and_keep_the_idempotency_key() {
    let rx = Receiver::start().await;
    rx.script("/flaky", &[(500, None), (503, None)]);
    rx.script("/busy", &[(429, Some("1"))]);
    rx.script("/bad", &[(400, None)]);
    // A target of its own: its failures must not open the breaker of the
    // others' target (five failures in a row) and hold `flaky`'s retries.
    let down = Receiver::start().await;
    down.script("/down", &[(500, None); 10]);
    let rules = format!(
        "sources:\n  hook: {{}}\nrules:\n  - name: r\n    source: hook\n    actions:\n{}",
        ["flaky", "busy", "bad", "down", "redirect"]
            .iter()
            .map(|p| format!(
                "      - name: {p}\n        http: {{ url: \"{}\", forward: true }}\n        {FAST_RETRY}\n",
                if *p == "down" { &down } else { &rx }.url(&format!("/{p}"))
            ))
            .collect::<String>()
    );
    let d = Daemon::start(&[("r.yaml", &rules)]);
    let id = send(&d, "/hooks/hook", "{}").await["event_id"]
        .as_str()
        .unwrap()
        .to_owned();

    // 500, 503, then 200: three attempts, doubling waits (±20 %), one key.
    let flaky = rx.wait_for("/flaky", 3, Duration::from_secs(10)).await;
    assert_eq!(wait_status(&d, &id, "flaky", "succeeded").await, 3);
    let keys: Vec<&str> = flaky
        .iter()
        .map(|r| r.header("idempotency-key").unwrap())
        .collect();
    assert!(keys.iter().all(|k| *k == keys[0]), "{keys:?}");
    let gaps: Vec<Duration> = flaky.windows(2).map(|w| w[1].at - w[0].at).collect();
    assert!(
        gaps[0] >= Duration::from_millis(160) && gaps[0] < Duration::from_millis(1200),
        "{gaps:?}"
    );
    assert!(
        gaps[1] >= Duration::from_millis(320) && gaps[1] < Duration::from_millis(1600),
        "{gaps:?}"
    );

    // 429 with Retry-After: 1 waits a second, not the 200 ms backoff.
    let busy = rx.wait_for("/busy", 2, Duration::from_secs(10)).await;
    assert!(
        busy[1].at - busy[0].at >= Duration::from_millis(950),
        "{:?}",
        busy[1].at - busy[0].at
    );

    // 400 is not retried; 3xx is a failure and its target is never contacted.
    assert_eq!(wait_status(&d, &id, "bad", "dead").await, 1);
    assert_eq!(wait_status(&d, &id, "redirect", "dead").await, 1);
    assert!(
        rx.requests("/redirected").is_empty(),
        "the redirect target was contacted"
    );

    // Retryable failures end dead after `attempts`.
    assert_eq!(wait_status(&d, &id, "down", "dead").await, 4);
    assert_eq!(down.requests("/down").len(), 4);
    assert_eq!(rx.requests("/bad").len(), 1);

    // Every attempt is recorded with its outcome.
    let outcomes: Vec<(String, Option<i64>)> = attempt_log(&d, &id, "flaky")
        .await
        .iter()
        .map(|a| {
            (
                a["outcome"].as_str().unwrap().to_owned(),
                a["status_code"].as_i64(),
            )
        })
        .collect();
    assert_eq!(
        outcomes,
        [
            ("retryable".into(), Some(500)),
            ("retryable".into(), Some(503)),
            ("succeeded".into(), Some(200))
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fixed_rule_file_fixes_pending_retries() {
    let rx = Receiver::start().await;
    rx.script("/wrong", &[(500, None); 50]);
    let rule = |path: &str| {
        format!(
            "sources:\n  hook: {{}}\nrules:\n  - name: r\n    source: hook\n    actions:\n      - name: out\n        http: {{ url: \"{}\" }}\n        retry: {{ attempts: 20, initial: 300ms, max: 300ms }}\n",
            rx.url(path)
        )
    };
    let d = Daemon::start(&[("r.yaml", &rule("/wrong"))]);
    let id = send(&d, "/hooks/hook", "{\"x\": 1}").await["event_id"]
        .as_str()
        .unwrap()
        .to_owned();
    rx.wait_for("/wrong", 1, Duration::from_secs(10)).await;
    d.write_rule("r.yaml", &rule("/right"));
    let right = rx.wait_for("/right", 1, Duration::from_secs(10)).await;
    assert!(right[0].body.is_empty(), "no body configured");
    assert!(wait_status(&d, &id, "out", "succeeded").await >= 2);

    // A delivery whose action is gone ends skipped.
    rx.script("/right", &[(500, None); 50]);
    let id = send(&d, "/hooks/hook", "{}").await["event_id"]
        .as_str()
        .unwrap()
        .to_owned();
    rx.wait_for("/right", 2, Duration::from_secs(10)).await;
    d.write_rule("r.yaml", "sources:\n  hook: {}\n");
    wait_status(&d, &id, "out", "skipped").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn payload_values_reach_commands_as_one_argument_and_nothing_runs() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("args.txt");
    let rules = format!(
        r#"
sources:
  hook: {{}}
rules:
  - name: run
    source: hook
    actions:
      - command:
          argv: ["/bin/sh", "-c", "printf '%s\n' \"$#\" \"$1\" \"$DEPLOY_REF\" \"$HOOKWIRE_RULE\" > '{out}'", "sh", "{{{{payload.v}}}}"]
          env: {{ DEPLOY_REF: "{{{{payload.v}}}}" }}
          cwd: "{cwd}"
"#,
        out = out.display(),
        cwd = dir.path().display()
    );
    let d = Daemon::start(&[("r.yaml", &rules)]);
    let value = "v1; touch X $(touch X) `touch X`";
    let id = send(&d, "/hooks/hook", &json!({"v": value}).to_string()).await["event_id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(wait_status(&d, &id, "command-0", "succeeded").await, 1);
    let got = std::fs::read_to_string(&out).unwrap();
    assert_eq!(got, format!("1\n{value}\n{value}\nrun\n"));
    assert!(
        !dir.path().join("X").exists(),
        "the payload ran as shell code"
    );
    assert!(!std::path::Path::new("X").exists());
}

fn alive(pid: i32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
        && !std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .unwrap_or_default()
            .contains(") Z ")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_past_its_timeout_is_killed_with_its_children() {
    let dir = tempfile::tempdir().unwrap();
    let pids = dir.path().join("pids");
    let rules = format!(
        "sources:\n  hook: {{}}\nrules:\n  - name: slow\n    source: hook\n    actions:\n      - command:\n          argv: [/bin/sh, -c, \"sleep 300 & echo $! > '{p}'; echo $$ >> '{p}'; wait\"]\n          timeout: 500ms\n        retry: {{ attempts: 1 }}\n",
        p = pids.display()
    );
    let d = Daemon::start(&[("r.yaml", &rules)]);
    let id = send(&d, "/hooks/hook", "{}").await["event_id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(wait_status(&d, &id, "command-0", "dead").await, 1);
    let text = std::fs::read_to_string(&pids).unwrap();
    let pids: Vec<i32> = text.lines().map(|l| l.trim().parse().unwrap()).collect();
    assert_eq!(pids.len(), 2, "{text}");
    let deadline = Instant::now() + Duration::from_secs(5);
    while pids.iter().any(|p| alive(*p)) {
        assert!(
            Instant::now() < deadline,
            "processes left running: {pids:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let log = attempt_log(&d, &id, "command-0").await;
    let error = log[0]["error"].as_str().unwrap();
    assert!(error.starts_with("timed out after 500ms"), "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serialize_by_runs_one_at_a_time_in_event_order() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("log");
    let rules = format!(
        "sources:\n  hook: {{}}\nrules:\n  - name: deploy\n    source: hook\n    actions:\n      - command:\n          argv: [/bin/sh, -c, \"echo start $1 >> '{l}'; sleep 0.15; echo end $1 >> '{l}'\", sh, \"{{{{payload.repo}}}}-{{{{payload.n}}}}\"]\n        serialize_by: \"{{{{payload.repo}}}}\"\n",
        l = log.display()
    );
    let d = Daemon::start(&[("r.yaml", &rules)]);
    for n in 0..4 {
        send(&d, "/hooks/hook", &json!({"repo": "a", "n": n}).to_string()).await;
        send(&d, "/hooks/hook", &json!({"repo": "b", "n": n}).to_string()).await;
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let n = std::fs::read_to_string(&log)
            .unwrap_or_default()
            .lines()
            .count();
        if n == 16 {
            break;
        }
        assert!(Instant::now() < deadline, "{n} of 16 log lines");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let text = std::fs::read_to_string(&log).unwrap();
    for repo in ["a", "b"] {
        let lines: Vec<&str> = text
            .lines()
            .filter(|l| l.ends_with(&format!("{repo}-0")) || l.contains(&format!(" {repo}-")))
            .collect();
        let want: Vec<String> = (0..4)
            .flat_map(|n| [format!("start {repo}-{n}"), format!("end {repo}-{n}")])
            .collect();
        assert_eq!(
            lines, want,
            "runs of key {repo} overlap or are out of order:\n{text}"
        );
    }
    // Different keys ran side by side: the log interleaves a and b.
    let first_end = text.lines().position(|l| l.starts_with("end")).unwrap();
    assert!(first_end >= 2, "keys a and b ran in parallel:\n{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn email_arrives_at_the_smtp_server() {
    let smtp = SmtpServer::start();
    let rules = r#"
sources:
  form: {}
rules:
  - name: lead
    source: form
    actions:
      - email:
          from: "Forms <forms@example.com>"
          to: ["{{payload.email}}", "sales@example.com"]
          cc: ["boss@example.com"]
          subject: "New lead: {{payload.name}}"
          text: "{{payload.name}} wrote: {{payload.message}}"
      - name: injected
        email:
          to: ["ops@example.com"]
          subject: "{{payload.subject}}"
          text: "x"
"#;
    let d = Daemon::start_with(
        &[("r.yaml", rules)],
        &[],
        &[
            "--smtp-url",
            &format!("smtp://{}", smtp.addr),
            "--smtp-from",
            "hookwire@example.com",
        ],
    );
    let body = json!({"email": "ada@example.com", "name": "Ada Lovelace", "message": "call me", "subject": "hi\r\nBcc: victim@example.com"});
    let id = send(&d, "/hooks/form", &body.to_string()).await["event_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let mail = smtp.wait_for(1, Duration::from_secs(10)).await;
    assert_eq!(mail[0].from, "forms@example.com");
    let mut to = mail[0].to.clone();
    to.sort();
    assert_eq!(
        to,
        ["ada@example.com", "boss@example.com", "sales@example.com"]
    );
    assert!(
        mail[0].data.contains("Subject: New lead: Ada Lovelace"),
        "{}",
        mail[0].data
    );
    assert!(
        mail[0].data.contains("Ada Lovelace wrote: call me"),
        "{}",
        mail[0].data
    );
    assert_eq!(wait_status(&d, &id, "email-0", "succeeded").await, 1);
    assert_eq!(
        wait_status(&d, &id, "injected", "dead").await,
        1,
        "CR/LF in a subject fails permanently"
    );
    assert_eq!(smtp.mail.lock().unwrap().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn email_without_an_smtp_server_fails_with_a_clear_error() {
    let rules = "sources:\n  form: {}\nrules:\n  - name: lead\n    source: form\n    actions:\n      - email: { to: a@example.com, subject: s, text: t }\n        retry: { attempts: 1 }\n";
    let d = Daemon::start(&[("r.yaml", rules)]);
    let id = send(&d, "/hooks/form", "{}").await["event_id"]
        .as_str()
        .unwrap()
        .to_owned();
    wait_status(&d, &id, "email-0", "dead").await;
    let log = attempt_log(&d, &id, "email-0").await;
    let error = log[0]["error"].as_str().unwrap();
    assert!(error.starts_with("no SMTP server is configured"), "{error}");
}

/// Sends `total` events numbered from `start` with `senders` concurrent tasks; returns the acknowledged numbers.
async fn burst(
    url: String,
    start: usize,
    total: usize,
    senders: usize,
    stop: Arc<AtomicBool>,
) -> Vec<usize> {
    let mut tasks = Vec::new();
    for s in 0..senders {
        let (url, stop) = (url.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            let c = client();
            let mut acked = Vec::new();
            for n in (start + s..start + total).step_by(senders) {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let r = c
                    .post(&url)
                    .header("content-type", "application/json")
                    .body(json!({"n": n}).to_string())
                    .send()
                    .await;
                if let Ok(r) = r
                    && r.status() == 202
                {
                    acked.push(n);
                }
            }
            acked
        }));
    }
    let mut acked = Vec::new();
    for t in tasks {
        acked.extend(t.await.unwrap());
    }
    acked
}

fn crash_rules(rx: &Receiver) -> String {
    format!(
        "sources:\n  hook: {{}}\nrules:\n  - name: relay\n    source: hook\n    actions:\n      - http: {{ url: \"{}\", body: {{ n: \"{{{{payload.n}}}}\" }} }}\n        {FAST_RETRY}\n",
        rx.url("/sink")
    )
}

/// Every acknowledged number reached the receiver; returns how many arrived more than once.
async fn all_delivered(rx: &Receiver, acked: &[usize]) -> usize {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let got: Vec<usize> = rx
            .requests("/sink")
            .iter()
            .map(|r| r.json()["n"].as_u64().unwrap() as usize)
            .collect();
        let seen: std::collections::HashSet<usize> = got.iter().copied().collect();
        let missing: Vec<usize> = acked
            .iter()
            .copied()
            .filter(|n| !seen.contains(n))
            .collect();
        if missing.is_empty() {
            return got.len() - seen.len();
        }
        assert!(
            Instant::now() < deadline,
            "{} acknowledged events never delivered, e.g. {:?}",
            missing.len(),
            &missing[..missing.len().min(10)]
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_events_are_delivered_after_sigkill_mid_burst() {
    let rx = Receiver::start().await;
    let mut d = Daemon::start(&[("r.yaml", &crash_rules(&rx))]);
    let stop = Arc::new(AtomicBool::new(false));
    let sending = tokio::spawn(burst(d.url("/hooks/hook"), 0, 2000, 16, stop.clone()));
    // Kill once over 1,000 events are acknowledged, while requests are still flowing.
    let deadline = Instant::now() + Duration::from_secs(60);
    while d.metric("hookwire_events_stored_total").await < 1100.0 {
        assert!(Instant::now() < deadline, "the burst did not get going");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    d.kill();
    stop.store(true, Ordering::Relaxed);
    let acked = sending.await.unwrap();
    d.restart();
    assert!(
        acked.len() >= 1000,
        "only {} acknowledged before the kill",
        acked.len()
    );
    // Traffic goes on after the restart, beside the recovery.
    let more = burst(
        d.url("/hooks/hook"),
        100_000,
        300,
        16,
        Arc::new(AtomicBool::new(false)),
    )
    .await;
    let mut all = acked.clone();
    all.extend(&more);
    let twice = all_delivered(&rx, &all).await;
    println!(
        "crash test: {} acknowledged before the kill, {} after; 0 lost; {twice} delivered twice",
        acked.len(),
        more.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_during_load_exits_zero_and_loses_nothing() {
    let rx = Receiver::start().await;
    let mut d = Daemon::start(&[("r.yaml", &crash_rules(&rx))]);
    let stop = Arc::new(AtomicBool::new(false));
    let sending = tokio::spawn(burst(d.url("/hooks/hook"), 0, 800, 8, stop.clone()));
    let deadline = Instant::now() + Duration::from_secs(30);
    while d.metric("hookwire_events_stored_total").await < 200.0 {
        assert!(Instant::now() < deadline, "the burst did not get going");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let status = d.terminate();
    assert!(status.success(), "exit status {status:?}");
    stop.store(true, Ordering::Relaxed);
    let acked = sending.await.unwrap();
    d.restart();
    let twice = all_delivered(&rx, &acked).await;
    println!(
        "graceful shutdown: {} acknowledged, 0 lost, {twice} delivered twice",
        acked.len()
    );
    assert!(
        !d.log_text().contains("cut short"),
        "running attempts finished within the grace period"
    );
    let _ = fixture;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn payload_hosts_and_header_injection_are_refused() {
    let rx = Receiver::start().await;
    let rules = format!(
        r#"
sources:
  hook: {{}}
rules:
  - name: r
    source: hook
    actions:
      - name: by-ip
        http: {{ url: "http://{{{{payload.host}}}}/x", allow_payload_host: true }}
        retry: {{ attempts: 1 }}
      - name: by-name
        http: {{ url: "http://localhost:{port}/x", allow_payload_host: true }}
        retry: {{ attempts: 1 }}
      - name: header
        http: {{ url: "{url}", headers: {{ X-Note: "{{{{payload.note}}}}" }} }}
"#,
        port = rx.addr.port(),
        url = rx.url("/header")
    );
    let d = Daemon::start(&[("r.yaml", &rules)]);
    let body = json!({"host": rx.addr.to_string(), "note": "a\r\nX-Injected: yes"});
    let id = send(&d, "/hooks/hook", &body.to_string()).await["event_id"]
        .as_str()
        .unwrap()
        .to_owned();
    for action in ["by-ip", "by-name", "header"] {
        assert_eq!(wait_status(&d, &id, action, "dead").await, 1, "{action}");
    }
    assert!(
        rx.requests("/x").is_empty() && rx.requests("/header").is_empty(),
        "a refused request reached the receiver"
    );
    // The one attempt of each delivery, in the order of their actions.
    let event = d.event(&id).await.unwrap();
    let mut deliveries = event["deliveries"].as_array().unwrap().clone();
    deliveries.sort_by_key(|x| x["action"].as_str().unwrap().to_owned());
    let errors: Vec<String> = deliveries
        .iter()
        .map(|x| x["attempt_log"][0]["error"].as_str().unwrap().to_owned())
        .collect();
    assert!(
        errors[0].starts_with("refused: 127.0.0.1 is not a public address"),
        "{errors:?}"
    );
    assert!(
        errors[1].starts_with("refused: localhost resolves to non-public addresses"),
        "{errors:?}"
    );
    assert_eq!(
        errors[2],
        "header X-Note contains CR or LF after rendering: refused"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_prunes_finished_events() {
    let rx = Receiver::start().await;
    let d = Daemon::start_with(
        &[("r.yaml", &crash_rules(&rx))],
        &[],
        &["--retention", "2s"],
    );
    let acked = burst(
        d.url("/hooks/hook"),
        0,
        100,
        4,
        Arc::new(AtomicBool::new(false)),
    )
    .await;
    all_delivered(&rx, &acked).await;
    let deadline = Instant::now() + Duration::from_secs(15);
    while d.count_events("").await > 0 {
        assert!(Instant::now() < deadline, "finished events were not pruned");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Their deliveries (and so their attempts) went with them.
    assert_eq!(d.count_deliveries(&[]).await, 0);
}

fn relay_rules(rx: &Receiver) -> String {
    format!(
        "sources:\n  app: {{}}\nrules:\n  - name: relay\n    source: app\n    actions:\n      - name: out\n        http: {{ url: \"{}\", forward: true }}\n        {FAST_RETRY}\n",
        rx.url("/out")
    )
}

/// A dispatcher that dies is seen and healed: the panic is logged, `/readyz`
/// fails while it is down, it is started again, and the delivery it had
/// claimed when it died still arrives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicked_dispatcher_is_reported_and_restarted() {
    let rx = Receiver::start().await;
    let d = Daemon::start_with(
        &[("app.yaml", &relay_rules(&rx))],
        &[("HOOKWIRE_FAULTS", "dispatcher-panic")],
        &[],
    );
    let ready = client().get(d.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 200);
    let ev = send(&d, "/hooks/app", r#"{"n": 1}"#).await;
    // Down: /readyz says so and names the task, for about a second.
    let deadline = Instant::now() + Duration::from_secs(10);
    let down = loop {
        let r = client().get(d.url("/readyz")).send().await.unwrap();
        if r.status() == 503 {
            break r.json::<Value>().await.unwrap();
        }
        assert!(Instant::now() < deadline, "/readyz never failed");
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert_eq!(down["tasks"]["dispatcher"]["state"], "restarting", "{down}");
    assert_eq!(down["tasks"]["dispatcher"]["restarts"], 1, "{down}");
    assert_eq!(down["tasks"]["pruner"]["state"], "running", "{down}");
    // Restarted: the delivery claimed by the dead dispatcher arrives once.
    let got = rx.wait_for("/out", 1, Duration::from_secs(20)).await;
    assert_eq!(got[0].json(), json!({"n": 1}));
    wait_status(&d, ev["event_id"].as_str().unwrap(), "out", "succeeded").await;
    let r = client().get(d.url("/readyz")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let log = d
        .wait_log("the panic report", |l| {
            l.contains("background task panicked")
        })
        .await;
    assert!(
        log.contains("task=\"dispatcher\"") || log.contains("task=dispatcher"),
        "{log}"
    );
    assert!(log.contains("injected fault: dispatcher-panic"), "{log}");
    let metrics = d.get_text("/metrics").await;
    assert!(
        metrics.contains("hookwire_task_restarts_total{task=\"dispatcher\"} 1"),
        "{metrics}"
    );
    assert_eq!(rx.requests("/out").len(), 1);
}

/// A panic inside an attempt is a failed attempt with the panic's message,
/// retried by the action's policy — not a delivery stuck `running`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicked_attempt_is_recorded_and_retried() {
    let rx = Receiver::start().await;
    let d = Daemon::start_with(
        &[("app.yaml", &relay_rules(&rx))],
        &[("HOOKWIRE_FAULTS", "attempt-panic")],
        &[],
    );
    let ev = send(&d, "/hooks/app", r#"{"n": 2}"#).await;
    let id = ev["event_id"].as_str().unwrap();
    assert_eq!(wait_status(&d, id, "out", "succeeded").await, 2);
    assert_eq!(rx.requests("/out").len(), 1);
    let e: Value = d.get_json(&format!("/api/events/{id}")).await;
    let log = &e["deliveries"][0]["attempt_log"];
    assert_eq!(log[0]["outcome"], "retryable", "{e:#}");
    assert_eq!(
        log[0]["error"], "the attempt panicked: injected fault: attempt-panic",
        "{e:#}"
    );
    assert_eq!(log[1]["outcome"], "succeeded", "{e:#}");
    let r = client().get(d.url("/readyz")).send().await.unwrap();
    assert_eq!(
        r.status(),
        200,
        "an attempt's panic does not take a task down"
    );
}

/// SPEC §4.5: a `serialize_by` key is shared by every action and rule that
/// renders it, not kept per action: two actions of one rule and an action of
/// another rule with the same rendered key never run at the same time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serialize_by_keys_are_shared_across_actions_and_rules() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("log");
    let step = |name: &str| {
        format!(
            "      - name: {name}\n        command:\n          argv: [/bin/sh, -c, \"echo start $1 >> '{l}'; sleep 0.1; echo end $1 >> '{l}'\", sh, \"{name}-{{{{payload.n}}}}\"]\n        serialize_by: \"site-{{{{payload.site}}}}\"\n",
            l = log.display()
        )
    };
    let rules = format!(
        "sources:\n  hook: {{}}\nrules:\n  - name: build\n    source: hook\n    actions:\n{}{}  - name: announce\n    source: hook\n    actions:\n{}",
        step("compile"),
        step("package"),
        step("notify")
    );
    let d = Daemon::start(&[("r.yaml", &rules)]);
    for n in 0..3 {
        send(
            &d,
            "/hooks/hook",
            &json!({"site": "www", "n": n}).to_string(),
        )
        .await;
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    let text = loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if text.lines().count() == 18 {
            break text;
        }
        assert!(Instant::now() < deadline, "{text}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    // One at a time: every start is followed by its own end.
    let lines: Vec<&str> = text.lines().collect();
    for pair in lines.chunks(2) {
        let started = pair[0]
            .strip_prefix("start ")
            .unwrap_or_else(|| panic!("{text}"));
        assert_eq!(
            pair[1],
            format!("end {started}"),
            "runs of one key overlap:\n{text}"
        );
    }
    // In event order: all of event 0 before any of event 1, and so on.
    let events: Vec<char> = lines.iter().map(|l| l.chars().last().unwrap()).collect();
    let mut sorted = events.clone();
    sorted.sort();
    assert_eq!(events, sorted, "not in event order:\n{text}");
}

/// A target that accepts connections and never answers.
async fn hanging_target() -> (std::net::SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = listener.accept().await {
            held.push(s);
        }
    });
    (addr, task)
}

/// A target that hangs holds at most its share of the workers: deliveries
/// to another target keep arriving while it hangs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_target_does_not_delay_another() {
    let rx = Receiver::start().await;
    let (hang, _task) = hanging_target().await;
    let rules = format!(
        "sources:\n  app: {{}}\nrules:\n  - name: fan\n    source: app\n    actions:\n      - name: slow\n        http: {{ url: \"http://{hang}/x\", timeout: 60s, forward: true }}\n      - name: fast\n        http: {{ url: \"{}\", forward: true }}\n",
        rx.url("/fast")
    );
    // 4 workers: each target may hold 2.
    let d = Daemon::start_with(&[("app.yaml", &rules)], &[], &["--workers", "4"]);
    let started = Instant::now();
    for n in 0..30 {
        send(&d, "/hooks/app", &json!({ "n": n }).to_string()).await;
    }
    let got = rx.wait_for("/fast", 30, Duration::from_secs(10)).await;
    assert_eq!(got.len(), 30);
    assert!(started.elapsed() < Duration::from_secs(10));
    // The hanging target holds no more than its share.
    let t: Value = d.get_json("/api/targets").await;
    let slow = t["targets"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["target"] == format!("http://{hang}"))
        .unwrap_or_else(|| panic!("{t:#}"))
        .clone();
    assert_eq!(slow["in_flight"], 2, "{t:#}");
}

/// A refused target opens its breaker: a handful of attempts instead of one
/// per delivery per backoff step, the held deliveries keep their attempts,
/// and all of them arrive within seconds of the target coming back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_target_is_held_by_its_breaker_and_drained_when_back() {
    // A port that refuses connections, where the receiver comes back later.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let rules = format!(
        "sources:\n  app: {{}}\nrules:\n  - name: relay\n    source: app\n    actions:\n      - name: out\n        http: {{ url: \"http://127.0.0.1:{port}/in\", forward: true }}\n        retry: {{ attempts: 20, initial: 100ms, max: 500ms }}\n"
    );
    let d = Daemon::start(&[("app.yaml", &rules)]);
    for n in 0..30 {
        send(&d, "/hooks/app", &json!({ "n": n }).to_string()).await;
    }
    let opened = d
        .wait_log("the breaker opening", |l| l.contains("breaker open"))
        .await;
    assert!(opened.contains(&format!("127.0.0.1:{port}")), "{opened}");
    // Three seconds of outage with the breaker open: a handful of probes.
    let before = d.count_attempts().await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let during = d.count_attempts().await - before;
    assert!(
        during <= 4,
        "{during} attempts in 3 s with the breaker open"
    );
    let t: Value = d.get_json("/api/targets").await;
    assert_eq!(t["targets"][0]["breaker"], "open", "{t:#}");
    let metrics = d.get_text("/metrics").await;
    assert!(
        metrics.contains(&format!(
            "hookwire_target_breaker_open{{target=\"http://127.0.0.1:{port}\"}} 1"
        )),
        "{metrics}"
    );
    let oldest: f64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("hookwire_oldest_waiting_delivery_seconds "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("{metrics}"));
    assert!(oldest >= 3.0, "the oldest held delivery waited {oldest} s");
    assert!(
        metrics.contains(&format!(
            "hookwire_target_failures_total{{target=\"http://127.0.0.1:{port}\"}} "
        )),
        "{metrics}"
    );
    // Held deliveries spent nothing: most were never attempted.
    let untried = d
        .list("deliveries", "")
        .await
        .iter()
        .filter(|x| x["attempts"] == 0)
        .count();
    assert!(untried >= 20, "{untried} of 30 never attempted");
    // The target comes back: everything arrives within seconds.
    let back = Instant::now();
    let rx = Receiver::start_on(&format!("127.0.0.1:{port}")).await;
    let got = rx.wait_for("/in", 30, Duration::from_secs(15)).await;
    let mut ns: Vec<i64> = got
        .iter()
        .map(|r| r.json()["n"].as_i64().unwrap())
        .collect();
    ns.sort();
    ns.dedup();
    assert_eq!(ns.len(), 30, "each delivery once: {ns:?}");
    let drained = back.elapsed();
    assert!(drained < Duration::from_secs(10), "drained in {drained:?}");
    d.wait_log("the breaker closing", |l| l.contains("breaker closed"))
        .await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while d.count_deliveries(&["succeeded"]).await < 30 {
        assert!(Instant::now() < deadline, "not all succeeded");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let total = d.count_attempts().await;
    assert!(total <= 45, "{total} attempts for 30 deliveries");
}

/// SPEC §7: a lease lives as long as its attempt. With `--lease 300ms`, a
/// command that runs 2.5 s (over eight leases) keeps its claim through the
/// heartbeats and runs exactly once; the instance says which it is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_attempt_longer_than_its_lease_runs_once() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("runs");
    let rules = format!(
        "sources:\n  hook: {{}}\nrules:\n  - name: long\n    source: hook\n    actions:\n      - name: job\n        command:\n          argv: [/bin/sh, -c, \"echo start >> '{l}'; sleep 2.5; echo end >> '{l}'\"]\n          timeout: 30s\n",
        l = log.display()
    );
    let d = Daemon::start_with(&[("app.yaml", &rules)], &[], &["--lease", "300ms"]);
    let ev = send(&d, "/hooks/hook", r#"{"n": 1}"#).await;
    let id = ev["event_id"].as_str().unwrap();
    assert_eq!(wait_status(&d, id, "job", "succeeded").await, 1);
    let runs = std::fs::read_to_string(&log).unwrap();
    assert_eq!(runs, "start\nend\n", "the attempt ran more than once");
    let e: Value = d.get_json(&format!("/api/events/{id}")).await;
    assert_eq!(
        e["deliveries"][0]["attempt_log"].as_array().unwrap().len(),
        1,
        "{e:#}"
    );
    // One instance id, the same in the API, the log and the metrics.
    let rules: Value = d.get_json("/api/rules").await;
    let instance = rules["instance"].as_str().unwrap().to_owned();
    assert!(instance.starts_with("ins_"), "{rules:#}");
    d.wait_log("the instance id", |l| {
        l.contains("instance started") && l.contains(&instance)
    })
    .await;
    let metrics = d.get_text("/metrics").await;
    assert!(
        metrics.contains("hookwire_leases_lost_total 0"),
        "{metrics}"
    );
    assert!(
        metrics.contains(&format!("hookwire_instance{{instance=\"{instance}\"}} 1")),
        "{metrics}"
    );
}
