//! The operations commands against a running daemon, and `hookwire send`.

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::{Daemon, Receiver, run_cli};

const SECRET: &str = "ops-test-secret-9931";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operate_a_running_daemon_from_the_command_line() {
    let rx = Receiver::start().await;
    rx.script("/chat", &[(400, None)]);
    let rules = format!(
        "sources:\n  github:\n    verify: {{ github: {{ secret: \"${{GH_SECRET}}\" }} }}\nrules:\n  - name: push-to-chat\n    source: github\n    when: {{ header: X-GitHub-Event, equals: push }}\n    actions:\n      - name: chat\n        http: {{ url: \"{}\", body: {{ text: \"{{{{payload.pusher.name}}}} pushed\" }} }}\n        retry: {{ attempts: 1 }}\n",
        rx.url("/chat")
    );
    let d = Daemon::start_with(
        &[("r.yaml", &rules)],
        &[("GH_SECRET", SECRET)],
        &["--admin-token", "adm1n-t0ken"],
    );
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let hook = d.url("/hooks/github");
    let server = d.url("");
    let env = [("HOOKWIRE_ADMIN_TOKEN", "adm1n-t0ken")];
    let mut outputs = String::new();

    // Signed as GitHub signs: accepted; with another secret: refused.
    let (code, out, err) = run_cli(
        root,
        &[
            "send",
            &hook,
            "--payload",
            "examples/payloads/push-branch.json",
            "--sign",
            "github",
            "--secret",
            SECRET,
            "--header",
            "X-GitHub-Event: push",
        ],
        &[],
    );
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.starts_with("HTTP 202 Accepted\nX-Request-Id: evt_"),
        "{out}"
    );
    let event_id = out
        .lines()
        .nth(1)
        .unwrap()
        .trim_start_matches("X-Request-Id: ")
        .to_owned();
    let (code, out, _) = run_cli(
        root,
        &[
            "send",
            &hook,
            "--payload",
            "examples/payloads/push-branch.json",
            "--sign",
            "github",
            "--secret",
            "wrong",
        ],
        &[],
    );
    assert_eq!(code, 1);
    assert!(out.starts_with("HTTP 401 Unauthorized"), "{out}");
    let (code, _, err) = run_cli(
        root,
        &[
            "send",
            &hook,
            "--payload",
            "examples/payloads/push-branch.json",
            "--sign",
            "nosuch",
            "--secret",
            "x",
        ],
        &[],
    );
    assert_eq!(code, 2);
    assert!(err.contains("unknown scheme `nosuch`"), "{err}");

    // Wait for the delivery to die (the receiver answers 400).
    let deadline = Instant::now() + Duration::from_secs(15);
    let delivery = loop {
        let (_, out, _) = run_cli(
            root,
            &[
                "deliveries",
                "--status",
                "dead",
                "--server",
                &server,
                "--format",
                "json",
            ],
            &env,
        );
        let v: Value = serde_json::from_str(&out).unwrap();
        if let Some(d) = v["deliveries"].as_array().and_then(|a| a.first()) {
            break d["id"].as_str().unwrap().to_owned();
        }
        assert!(Instant::now() < deadline, "no dead delivery: {out}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };

    let (code, out, err) = run_cli(root, &["events", "--server", &server], &env);
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with("EVENT"), "{out}");
    assert!(
        out.contains(&event_id) && out.contains("push-to-chat"),
        "{out}"
    );
    outputs.push_str(&out);

    let (code, out, _) = run_cli(root, &["event", &event_id, "--server", &server], &env);
    assert_eq!(code, 0);
    assert!(out.contains("push-to-chat: MATCHED"), "{out}");
    assert!(
        out.contains("✔ header x-github-event equals \"push\""),
        "{out}"
    );
    assert!(out.contains("#1") && out.contains("HTTP 400"), "{out}");
    outputs.push_str(&out);

    let (code, out, _) = run_cli(root, &["deliveries", "--server", &server], &env);
    assert_eq!(code, 0);
    assert!(
        out.starts_with("DELIVERY") && out.contains("dead") && out.contains("push-to-chat/chat"),
        "{out}"
    );

    let (code, out, _) = run_cli(root, &["retry", &delivery, "--server", &server], &env);
    assert_eq!(code, 0, "{out}");
    assert_eq!(out.trim(), format!("{delivery} queued again (pending)"));
    rx.wait_for("/chat", 2, Duration::from_secs(10)).await;

    let (code, out, _) = run_cli(root, &["replay", &event_id, "--server", &server], &env);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.starts_with(&format!(
            "replayed {event_id}: matched push-to-chat; new deliveries: dlv_"
        )),
        "{out}"
    );
    rx.wait_for("/chat", 3, Duration::from_secs(10)).await;

    // `hookwire test --event` evaluates the rule files against a stored real event.
    let rules_dir = d.rules_dir().display().to_string();
    let mut test_env = env.to_vec();
    test_env.push(("GH_SECRET", SECRET));
    let (code, out, err) = run_cli(
        root,
        &[
            "test", "--source", "github", "--event", &event_id, "--rules", &rules_dir, "--server",
            &server,
        ],
        &test_env,
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("✔ push-to-chat: MATCHED"), "{out}");
    assert!(out.contains("\"text\": \"Codertocat pushed\""), "{out}");
    outputs.push_str(&out);
    let (code, _, err) = run_cli(
        root,
        &["test", "--source", "github", "--rules", &rules_dir],
        &test_env,
    );
    assert_eq!(code, 2, "--payload or --event is required");
    assert!(err.contains("--payload"), "{err}");

    // Without the token: refused, with the API's message.
    let (code, _, err) = run_cli(
        root,
        &["events", "--server", &server],
        &[("HOOKWIRE_ADMIN_TOKEN", "")],
    );
    assert_eq!(code, 1);
    assert!(
        err.contains("401 Unauthorized: admin token required"),
        "{err}"
    );
    let (code, _, err) = run_cli(root, &["event", "evt_nope", "--server", &server], &env);
    assert_eq!(code, 1);
    assert!(err.contains("404"), "{err}");
    let (code, _, err) = run_cli(root, &["events", "--server", "http://127.0.0.1:9"], &env);
    assert_eq!(code, 1);
    assert!(
        err.contains("cannot reach hookwire at http://127.0.0.1:9"),
        "{err}"
    );

    assert!(
        !outputs.contains(SECRET),
        "the secret appears in CLI output"
    );
    assert!(
        !d.log_text().contains(SECRET),
        "the secret appears in the log"
    );
}
