//! The operations commands against a running daemon, and `hookwire send`.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::{Daemon, Received, Receiver, run_cli};

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
    assert!(
        out.trim().starts_with(&format!(
            "{delivery} queued again (pending) by request req_"
        )),
        "{out}"
    );
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

/// `hookwire send PATH --payload … ARGS…` against the receiver; the exit
/// code, stderr and the request as it arrived (if one did).
async fn send_to(rx: &Receiver, path: &str, args: &[&str]) -> (i32, String, Option<Received>) {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let before = rx.requests(path).len();
    let url = rx.url(path);
    let mut all = vec![
        "send",
        &url,
        "--payload",
        "examples/payloads/push-branch.json",
    ];
    all.extend_from_slice(args);
    let (code, out, err) = run_cli(root, &all, &[]);
    let got = if code == 0 {
        assert!(out.starts_with("HTTP 200 OK"), "{out}{err}");
        let got = rx.wait_for(path, before + 1, Duration::from_secs(10)).await;
        Some(got[before].clone())
    } else {
        None
    };
    (code, err, got)
}

fn is_uuid(s: &str) -> bool {
    let parts: Vec<&str> = s.split('-').collect();
    parts.iter().map(|p| p.len()).eq([8, 4, 4, 4, 12])
        && parts
            .iter()
            .all(|p| p.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// What each provider's own receiver library requires beside the signature:
/// octokit/webhooks the event and delivery id, shopify.webhooks.validate the
/// topic, shop, API version and webhook id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_adds_the_headers_each_provider_sends() {
    let rx = Receiver::start().await;
    let secret = "provider-secret-5521";

    let (code, err, got) = send_to(&rx, "/gh", &["--sign", "github", "--secret", secret]).await;
    let gh = got.unwrap_or_else(|| panic!("exit {code}: {err}"));
    assert_eq!(gh.header("x-github-event"), Some("ping"));
    assert!(is_uuid(gh.header("x-github-delivery").unwrap()), "{gh:?}");
    assert_eq!(gh.header("content-type"), Some("application/json"));
    assert_eq!(gh.verify(json!({"github": {"secret": secret}})), Ok(()));
    // The SHA-1 form GitHub sends beside it, for older receivers.
    assert_eq!(
        gh.verify(json!({"hmac": {"header": "X-Hub-Signature", "algorithm": "sha1", "prefix": "sha1=", "secret": secret}})),
        Ok(())
    );

    // --event names the event; --header replaces a default of the same name.
    let (code, err, got) = send_to(
        &rx,
        "/gh",
        &[
            "--sign",
            "github",
            "--secret",
            secret,
            "--event",
            "push",
            "--header",
            "x-github-delivery: 72d3162e-cc78-11e3-81ab-4c9367dc0958",
            "--header",
            "Content-Type: application/vnd.custom+json",
        ],
    )
    .await;
    let gh = got.unwrap_or_else(|| panic!("exit {code}: {err}"));
    assert_eq!(gh.header("x-github-event"), Some("push"));
    assert_eq!(
        gh.header("x-github-delivery"),
        Some("72d3162e-cc78-11e3-81ab-4c9367dc0958")
    );
    assert_eq!(gh.count("x-github-delivery"), 1);
    assert_eq!(
        gh.header("content-type"),
        Some("application/vnd.custom+json")
    );
    assert_eq!(gh.count("content-type"), 1);

    let (code, err, got) = send_to(&rx, "/shop", &["--sign", "shopify", "--secret", secret]).await;
    let shop = got.unwrap_or_else(|| panic!("exit {code}: {err}"));
    assert_eq!(shop.header("x-shopify-topic"), Some("orders/create"));
    assert_eq!(
        shop.header("x-shopify-shop-domain"),
        Some("hookwire-test.myshopify.com")
    );
    assert_eq!(shop.header("x-shopify-api-version"), Some("2025-07"));
    assert!(
        is_uuid(shop.header("x-shopify-webhook-id").unwrap()),
        "{shop:?}"
    );
    assert!(shop.header("x-shopify-triggered-at").is_some(), "{shop:?}");
    assert_eq!(shop.verify(json!({"shopify": {"secret": secret}})), Ok(()));
    let (code, err, got) = send_to(
        &rx,
        "/shop",
        &[
            "--sign",
            "shopify",
            "--secret",
            secret,
            "--topic",
            "products/update",
            "--header",
            "X-Shopify-Shop-Domain: real-shop.myshopify.com",
        ],
    )
    .await;
    let shop = got.unwrap_or_else(|| panic!("exit {code}: {err}"));
    assert_eq!(shop.header("x-shopify-topic"), Some("products/update"));
    assert_eq!(
        shop.header("x-shopify-shop-domain"),
        Some("real-shop.myshopify.com")
    );
    assert_eq!(shop.count("x-shopify-shop-domain"), 1);

    let (code, err, got) = send_to(&rx, "/gl", &["--sign", "gitlab", "--secret", secret]).await;
    let gl = got.unwrap_or_else(|| panic!("exit {code}: {err}"));
    assert_eq!(gl.header("x-gitlab-event"), Some("Push Hook"));
    assert!(is_uuid(gl.header("x-gitlab-event-uuid").unwrap()), "{gl:?}");
    assert_eq!(gl.verify(json!({"gitlab": {"token": secret}})), Ok(()));

    // An event where the provider sends none is bad input, not ignored.
    for args in [
        &["--sign", "stripe", "--secret", secret, "--event", "push"][..],
        &["--event", "push"][..],
    ] {
        let (code, err, got) = send_to(&rx, "/none", args).await;
        assert_eq!(code, 2, "{args:?}: {err}");
        assert!(err.contains("--event"), "{err}");
        assert!(got.is_none());
    }
    assert!(rx.requests("/none").is_empty());
}

/// The secret forms the Standard Webhooks libraries accept sign with the
/// same key; one they would refuse is refused before anything is sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_signs_standard_with_each_accepted_secret_form_and_refuses_the_rest() {
    let rx = Receiver::start().await;
    // A 32-byte key: its base64 ends in `=`.
    let padded = "whsec_AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
    let bare = padded.trim_start_matches("whsec_");
    for form in [
        padded,
        bare,
        padded.trim_end_matches('='),
        bare.trim_end_matches('='),
    ] {
        let (code, err, got) =
            send_to(&rx, "/std", &["--sign", "standard", "--secret", form]).await;
        let got = got.unwrap_or_else(|| panic!("{form}: exit {code}: {err}"));
        assert!(got.header("webhook-id").unwrap().starts_with("msg_"));
        assert_eq!(
            got.verify(json!({"standard": {"secret": padded}})),
            Ok(()),
            "{form}"
        );
    }
    for bad in ["whsec_AAECAwQF!", "whsec_", "x"] {
        let (code, err, got) = send_to(&rx, "/bad", &["--sign", "standard", "--secret", bad]).await;
        assert_eq!(code, 2, "{bad}: {err}");
        assert!(
            err.starts_with("hookwire send: standard secret must be base64"),
            "{err}"
        );
        assert!(got.is_none());
        if bad.len() > 6 {
            assert!(!err.contains(bad), "the secret appears in the error: {err}");
        }
    }
    assert!(rx.requests("/bad").is_empty());
}
