//! The admin API: events and deliveries with paging and filters, redaction,
//! replay and retry, and who may ask.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::{Daemon, Receiver, client};

async fn get(d: &Daemon, path: &str) -> Value {
    let r = client().get(d.url(path)).send().await.unwrap();
    assert_eq!(r.status(), 200, "{path}");
    r.json().await.unwrap()
}

async fn wait_delivery(d: &Daemon, id: &str, status: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let v = get(d, &format!("/api/deliveries/{id}")).await;
        if v["status"] == status {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "delivery never became {status}: {v:#}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_and_deliveries_page_filter_replay_and_retry() {
    let rx = Receiver::start().await;
    rx.script("/crm", &[(400, None)]);
    let rules = format!(
        "sources:\n  forms: {{}}\n  other: {{}}\nrules:\n  - name: lead\n    source: forms\n    when: {{ path: $.email, exists: true }}\n    actions:\n      - name: crm\n        http: {{ url: \"{}\", headers: {{ Authorization: \"Bearer ${{CRM_TOKEN}}\" }}, body: {{ email: \"{{{{payload.email}}}}\" }} }}\n        retry: {{ attempts: 1 }}\n",
        rx.url("/crm")
    );
    let secret = "crm-secret-value-123";
    let d = Daemon::start_with(&[("r.yaml", &rules)], &[("CRM_TOKEN", secret)], &[]);
    let mut ids = Vec::new();
    for (source, body) in [
        ("forms", json!({"email": "a@example.com"})),
        ("other", json!({})),
        ("forms", json!({"note": secret})),
        ("forms", json!({"email": "b@example.com"})),
    ] {
        let r = client()
            .post(d.url(&format!("/hooks/{source}")))
            .header("content-type", "application/json")
            .header("authorization", format!("Bearer {secret}"))
            .body(body.to_string())
            .send()
            .await
            .unwrap();
        ids.push(
            r.json::<Value>().await.unwrap()["event_id"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
    }

    // Newest first, paged with limit/before, filtered by source and matched.
    let page = get(&d, "/api/events?limit=2").await;
    let got: Vec<&str> = page["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_str().unwrap())
        .collect();
    assert_eq!(got, [ids[3].as_str(), ids[2].as_str()]);
    let next = page["next_before"].as_str().unwrap();
    let page = get(&d, &format!("/api/events?limit=2&before={next}")).await;
    let got: Vec<&str> = page["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_str().unwrap())
        .collect();
    assert_eq!(got, [ids[1].as_str(), ids[0].as_str()]);
    assert_eq!(
        get(&d, "/api/events?source=other").await["events"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    let unmatched = get(&d, "/api/events?matched=false").await;
    assert_eq!(unmatched["events"].as_array().unwrap().len(), 2);

    // One event: redacted headers and secrets, the trace, the deliveries with attempts.
    let first_delivery = {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let e = get(&d, &format!("/api/events/{}", ids[0])).await;
            if e["deliveries"][0]["status"] == "dead" {
                assert_eq!(e["deliveries"][0]["attempt_log"][0]["status_code"], 400);
                assert_eq!(e["trace"][0]["rule"], "lead");
                assert!(
                    e["headers"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .any(|h| h[0] == "authorization" && h[1] == "[redacted]")
                );
                break e["deliveries"][0]["id"].as_str().unwrap().to_owned();
            }
            assert!(Instant::now() < deadline, "never dead: {e:#}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    let third = d.get_text(&format!("/api/events/{}", ids[2])).await;
    assert!(
        !third.contains(secret),
        "a secret appears in an API answer: {third}"
    );
    assert!(third.contains("[redacted]"));
    assert_eq!(
        rx.requests("/crm")[0].header("authorization"),
        Some(format!("Bearer {secret}").as_str()),
        "the target gets the real value"
    );

    // Deliveries by status; retry a dead one, which now succeeds.
    let dead = get(&d, "/api/deliveries?status=dead").await;
    assert!(
        dead["deliveries"]
            .as_array()
            .unwrap()
            .iter()
            .any(|x| x["id"] == first_delivery.as_str())
    );
    let r = client()
        .post(d.url(&format!("/api/deliveries/{first_delivery}/retry")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let done = wait_delivery(&d, &first_delivery, "succeeded").await;
    assert_eq!(done["attempt_log"].as_array().unwrap().len(), 2);
    let r = client()
        .post(d.url(&format!("/api/deliveries/{first_delivery}/retry")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 409, "a succeeded delivery is not retried");
    let r = client()
        .post(d.url("/api/deliveries/dlv_01hzzzzzzzzzzzzzzzzzzzzzzz/retry"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let r = client()
        .get(d.url("/api/deliveries?status=lost"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);

    // Replay matches the stored event against the current rules: a new delivery.
    // The original delivery of that event has arrived first.
    let original = get(&d, &format!("/api/events/{}", ids[3])).await["deliveries"][0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    wait_delivery(&d, &original, "succeeded").await;
    let before = rx.requests("/crm").len();
    let r = client()
        .post(d.url(&format!("/api/events/{}/replay", ids[3])))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["matched"], json!(["lead"]));
    let new_id = v["deliveries"][0].as_str().unwrap().to_owned();
    wait_delivery(&d, &new_id, "succeeded").await;
    assert_eq!(
        rx.requests("/crm").len(),
        before + 1,
        "the replayed delivery arrived"
    );
    assert_eq!(
        client()
            .get(d.url("/api/events/evt_nope"))
            .send()
            .await
            .unwrap()
            .status(),
        404
    );
    assert!(
        !d.log_text().contains(secret),
        "a secret appears in the log"
    );
    let metrics = d.get_text("/metrics").await;
    assert!(!metrics.contains(secret), "a secret appears in the metrics");
    let list = d.get_text("/api/events?limit=500").await;
    assert!(!list.contains(secret), "a secret appears in the event list");
}

/// Waits until the delivery satisfies `pred`; returns it.
async fn wait_until(d: &Daemon, id: &str, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let v = get(d, &format!("/api/deliveries/{id}")).await;
        if pred(&v) {
            return v;
        }
        assert!(Instant::now() < deadline, "never {what}: {v:#}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// POSTs `path` and returns the answer's body after checking that its
/// `X-Request-Id` is a `req_…` id and the same as the body's `request_id`.
async fn post_request(d: &Daemon, path: &str) -> Value {
    let r = client().post(d.url(path)).send().await.unwrap();
    assert_eq!(r.status(), 200, "{path}");
    let header = r.headers()["x-request-id"].to_str().unwrap().to_owned();
    let v: Value = r.json().await.unwrap();
    assert!(header.starts_with("req_"), "{header}");
    assert_eq!(v["request_id"], header.as_str(), "{v:#}");
    v
}

/// Issue 9 item 11: a delivery that died, was retried by hand (through the
/// API, then through `hookwire retry`) and finally succeeded shows each
/// attempt once, numbered 1..n, with the budget count starting again after
/// each retry and the retry request that started it; replayed deliveries
/// carry the replay request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attempts_keep_unique_numbers_across_manual_retries_and_name_the_request() {
    let rx = Receiver::start().await;
    // Two failures exhaust the budget of 2, twice; the fifth attempt succeeds.
    rx.script("/crm", &[(500, None); 4]);
    let rules = format!(
        "sources:\n  forms: {{}}\nrules:\n  - name: lead\n    source: forms\n    actions:\n      - name: crm\n        http: {{ url: \"{}\", body: {{ attempt: \"{{{{attempt}}}}\" }} }}\n        retry: {{ attempts: 2, initial: 50ms, max: 50ms }}\n",
        rx.url("/crm")
    );
    let d = Daemon::start(&[("r.yaml", &rules)]);
    let sent: Value = d
        .post_json("/hooks/forms", r#"{"email":"a@example.com"}"#)
        .await;
    let event_id = sent["event_id"].as_str().unwrap().to_owned();
    let id = get(&d, &format!("/api/events/{event_id}")).await["deliveries"][0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let dead_after = |n: u64| move |v: &Value| v["status"] == "dead" && v["attempts"] == n;
    wait_until(&d, &id, "dead after 2 attempts", dead_after(2)).await;

    // By hand through the API: a fresh budget of 2, both fail again.
    let by_api = post_request(&d, &format!("/api/deliveries/{id}/retry")).await["request_id"]
        .as_str()
        .unwrap()
        .to_owned();
    wait_until(&d, &id, "dead after 4 attempts", dead_after(4)).await;

    // By hand through the CLI, which prints the request id it got.
    let server = d.url("");
    let (code, out, err) =
        crate::support::run_cli(d.dir.path(), &["retry", &id, "--server", &server], &[]);
    assert_eq!(code, 0, "{out}{err}");
    let by_cli = out
        .trim()
        .strip_prefix(&format!("{id} queued again (pending) by request "))
        .unwrap_or_else(|| panic!("{out}"))
        .to_owned();
    assert!(by_cli.starts_with("req_") && by_cli != by_api, "{out}");
    let v = wait_until(&d, &id, "succeeded", |v| v["status"] == "succeeded").await;
    // Templates see the number within the budget, as the retry policy counts.
    let seen: Vec<Value> = rx
        .requests("/crm")
        .iter()
        .map(|r| r.json()["attempt"].clone())
        .collect();
    assert_eq!(seen, [1, 2, 1, 2, 1]);

    // Lifetime numbers 1..5; budget numbers restart; each round names its request.
    let log: Vec<Value> = v["attempt_log"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            json!([
                a["number"],
                a["budget_number"],
                a["round"],
                a["after_retry"],
                a["requested_by"],
                a["status_code"]
            ])
        })
        .collect();
    assert_eq!(
        log,
        [
            json!([1, 1, 0, false, null, 500]),
            json!([2, 2, 0, false, null, 500]),
            json!([3, 1, 1, true, by_api, 500]),
            json!([4, 2, 1, true, by_api, 500]),
            json!([5, 1, 2, true, by_cli, 200]),
        ],
        "{v:#}"
    );
    assert_eq!(
        json!([
            v["attempts"],
            v["attempts_in_budget"],
            v["budget"],
            v["manual_retries"],
            v["retried_by"],
            v["replayed_by"]
        ]),
        json!([5, 1, 2, 2, by_cli, null]),
        "{v:#}"
    );

    // `hookwire event` shows every attempt once, with its budget and request.
    let (code, out, err) = crate::support::run_cli(
        d.dir.path(),
        &["event", &event_id, "--server", &server],
        &[],
    );
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains(&format!(
            "attempts 5 (1/2 since retry {by_cli}, 2 manual retries)"
        )),
        "{out}"
    );
    let labels: Vec<&str> = out
        .lines()
        .map(str::trim_start)
        .filter(|l| l.starts_with('#'))
        .map(|l| l.split(") ").next().unwrap())
        .collect();
    assert_eq!(
        labels,
        [
            "#1 (1/2".to_owned(),
            "#2 (2/2".to_owned(),
            format!("#3 (1/2 after retry {by_api}"),
            format!("#4 (2/2 after retry {by_api}"),
            format!("#5 (1/2 after retry {by_cli}"),
        ],
        "{out}"
    );

    // A replay's deliveries carry the replay request, from their first attempt.
    let replay = post_request(&d, &format!("/api/events/{event_id}/replay")).await;
    let by_replay = replay["request_id"].as_str().unwrap();
    let new_id = replay["deliveries"][0].as_str().unwrap();
    let v = wait_until(&d, new_id, "succeeded", |v| v["status"] == "succeeded").await;
    assert_eq!(
        json!([v["replayed_by"], v["manual_retries"], v["attempts"]]),
        json!([by_replay, 0, 1]),
        "{v:#}"
    );
    let first = &v["attempt_log"][0];
    assert_eq!(
        json!([
            first["number"],
            first["budget_number"],
            first["round"],
            first["after_retry"],
            first["requested_by"]
        ]),
        json!([1, 1, 0, false, by_replay]),
        "{v:#}"
    );
    // And the log names the request of each retry and replay.
    let reqs = [by_api.as_str(), by_cli.as_str(), by_replay];
    d.wait_log("each retry and replay request", |l| {
        reqs.iter().all(|r| l.contains(r))
    })
    .await;
}

#[tokio::test]
async fn without_a_token_the_api_answers_loopback_clients() {
    // (A request from a non-loopback address is refused with 403; testing that
    // needs a second network address of the test's own, which comes with the
    // network-namespace fixtures.)
    let d = Daemon::start(&[("r.yaml", "sources:\n  s: {}\n")]);
    let r = client().get(d.url("/api/events")).send().await.unwrap();
    assert_eq!(r.status(), 200, "loopback may ask");
    assert_eq!(r.json::<Value>().await.unwrap()["events"], json!([]));
}

/// The value of one sample of a Prometheus text exposition.
fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find(|l| {
            let (metric, _) = l.rsplit_once(' ').unwrap_or(("", ""));
            metric.starts_with(name)
                && (metric.len() == name.len() || metric[name.len()..].starts_with('{'))
                && labels
                    .iter()
                    .all(|(k, v)| metric.contains(&format!("{k}=\"{v}\"")))
        })
        .and_then(|l| l.rsplit_once(' ').and_then(|(_, v)| v.parse().ok()))
        .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_move_as_documented() {
    let rx = Receiver::start().await;
    rx.script("/out", &[(500, None)]);
    let rules = format!(
        "sources:\n  hook:\n    verify: {{ token: {{ header: X-Key, value: k }} }}\nrules:\n  - name: big\n    source: hook\n    when: {{ path: $.n, gt: 1 }}\n    actions:\n      - http: {{ url: \"{}\" }}\n        retry: {{ attempts: 3, initial: 100ms, max: 100ms }}\n",
        rx.url("/out")
    );
    let d = Daemon::start(&[("r.yaml", &rules)]);
    for (n, key) in [(1, "k"), (2, "k"), (3, "k"), (4, "k"), (5, "bad")] {
        client()
            .post(d.url("/hooks/hook"))
            .header("content-type", "application/json")
            .header("x-key", key)
            .body(json!({ "n": n }).to_string())
            .send()
            .await
            .unwrap();
    }
    rx.wait_for("/out", 4, Duration::from_secs(10)).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    let text = loop {
        let text = d.get_text("/metrics").await;
        if sample(
            &text,
            "hookwire_deliveries_total",
            &[("outcome", "succeeded")],
        ) >= 3.0
        {
            break text;
        }
        assert!(Instant::now() < deadline, "{text}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(
        sample(
            &text,
            "hookwire_events_received_total",
            &[("source", "hook")]
        ),
        5.0,
        "{text}"
    );
    assert_eq!(
        sample(&text, "hookwire_events_stored_total", &[("source", "hook")]),
        4.0,
        "{text}"
    );
    assert_eq!(
        sample(
            &text,
            "hookwire_events_rejected_total",
            &[("source", "hook"), ("reason", "verify")]
        ),
        1.0,
        "{text}"
    );
    assert_eq!(
        sample(&text, "hookwire_rules_matched_total", &[("rule", "big")]),
        3.0,
        "{text}"
    );
    assert_eq!(
        sample(
            &text,
            "hookwire_deliveries_total",
            &[("action_type", "http"), ("outcome", "retryable")]
        ),
        1.0,
        "{text}"
    );
    assert_eq!(
        sample(
            &text,
            "hookwire_deliveries_total",
            &[("action_type", "http"), ("outcome", "succeeded")]
        ),
        3.0,
        "{text}"
    );
    assert_eq!(
        sample(
            &text,
            "hookwire_attempt_duration_seconds_count",
            &[("action_type", "http")]
        ),
        4.0,
        "{text}"
    );
    assert_eq!(sample(&text, "hookwire_reloads_total", &[]), 1.0, "{text}");
    assert!(
        !text.contains("evt_") && !text.contains("dlv_"),
        "no ids in labels"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stream_announces_events_and_delivery_changes() {
    let rx = Receiver::start().await;
    let rules = format!(
        "sources:\n  hook: {{}}\nrules:\n  - name: r\n    source: hook\n    actions:\n      - http: {{ url: \"{}\" }}\n",
        rx.url("/out")
    );
    let d = Daemon::start(&[("r.yaml", &rules)]);
    let mut stream = client().get(d.url("/api/stream")).send().await.unwrap();
    assert_eq!(stream.status(), 200);
    assert!(
        stream.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    let sent: Value = d.post_json("/hooks/hook", "{}").await;
    let id = sent["event_id"].as_str().unwrap().to_owned();
    let mut text = String::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !(text.contains("event: event") && text.contains("\"status\":\"succeeded\"")) {
        assert!(Instant::now() < deadline, "stream so far:\n{text}");
        if let Ok(Ok(Some(chunk))) =
            tokio::time::timeout(Duration::from_millis(500), stream.chunk()).await
        {
            text.push_str(&String::from_utf8_lossy(&chunk));
        }
    }
    assert!(text.contains(&format!("\"id\":\"{id}\"")), "{text}");
    assert!(text.contains("event: delivery"), "{text}");
    assert!(
        text.contains("\"status\":\"running\""),
        "the claim is announced too: {text}"
    );
}

/// The policy every dashboard file is served under: nothing inline runs.
fn assert_strict_csp(r: &reqwest::Response, what: &str) {
    let csp = r.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    for directive in [
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "object-src 'none'",
        "base-uri 'none'",
        "frame-ancestors 'none'",
    ] {
        assert!(
            csp.split(';').any(|d| d.trim() == directive),
            "{what}: no `{directive}` in {csp}"
        );
    }
    assert!(
        !csp.contains("unsafe-") && !csp.contains('*') && !csp.contains("data:"),
        "{what}: {csp}"
    );
    assert_eq!(r.headers()["x-content-type-options"], "nosniff", "{what}");
}

#[tokio::test]
async fn the_dashboard_is_served_from_the_binary_with_no_inline_code() {
    let d = Daemon::start_with(
        &[("r.yaml", "sources:\n  s: {}\n")],
        &[],
        &["--admin-token", "dash-t0ken"],
    );
    // The page and its files hold no data, and a browser cannot send a bearer
    // token when it navigates: they are served without one. The data is not.
    let r = client().get(d.url("/")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    assert_strict_csp(&r, "/");
    let page = r.text().await.unwrap();
    assert!(page.contains("<title>hookwire</title>"));
    assert!(
        page.contains(r#"<script src="/dashboard.js" defer></script>"#)
            && page.contains(r#"<link rel="stylesheet" href="/dashboard.css">"#),
        "{page}"
    );
    let lower = page.to_ascii_lowercase();
    assert!(
        !lower.contains("<script>") && !lower.contains("<style") && !lower.contains("style="),
        "inline script or style in the page"
    );
    let mut files = String::new();
    for (path, content_type) in [
        ("/dashboard.js", "text/javascript"),
        ("/dashboard.css", "text/css"),
    ] {
        let r = client().get(d.url(path)).send().await.unwrap();
        assert_eq!(r.status(), 200, "{path}");
        assert!(
            r.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with(content_type),
            "{path}"
        );
        assert_strict_csp(&r, path);
        files.push_str(&r.text().await.unwrap());
    }
    assert!(
        files.contains(r#"api("/api/stream/ticket", "POST")"#)
            && files.contains(r#"new EventSource("/api/stream?ticket=""#),
        "the dashboard opens its stream with a ticket"
    );
    assert!(!files.contains("innerHTML") && !files.contains("?token="));
    for external in ["src=\"http", "href=\"http", "@import", "cdn", "url("] {
        assert!(
            !(page.clone() + &files)
                .to_ascii_lowercase()
                .contains(external),
            "the dashboard loads something from elsewhere: {external}"
        );
    }
    assert_eq!(
        client()
            .get(d.url("/api/events"))
            .send()
            .await
            .unwrap()
            .status(),
        401,
        "the data still needs the token"
    );
}

/// Status of `GET /api/stream` with this query; the stream is dropped at once.
async fn stream_status(d: &Daemon, query: &str) -> u16 {
    let r = client()
        .get(d.url(&format!("/api/stream{query}")))
        .send()
        .await
        .unwrap();
    r.status().as_u16()
}

async fn ticket(d: &Daemon, token: &str) -> String {
    let r = client()
        .post(d.url("/api/stream/ticket"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["cache-control"], "no-store");
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["expires_in"], 30, "{v}");
    v["ticket"].as_str().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stream_opens_with_a_single_use_ticket_and_never_with_the_token_in_the_url() {
    let token = "str3am-admin-t0ken";
    let d = Daemon::start_with(
        &[("r.yaml", "sources:\n  s: {}\n")],
        &[],
        &["--admin-token", token],
    );
    // The token in a URL ends up in access logs: refused everywhere.
    assert_eq!(stream_status(&d, &format!("?token={token}")).await, 401);
    let r = client()
        .get(d.url(&format!("/api/events?token={token}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401, "nor on the rest of the API");
    assert_eq!(stream_status(&d, "").await, 401);

    // Tickets come only for the bearer token.
    let r = client()
        .post(d.url("/api/stream/ticket"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = client()
        .post(d.url(&format!("/api/stream/ticket?token={token}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);

    // A ticket opens the stream, and the stream is live.
    let t = ticket(&d, token).await;
    let mut stream = client()
        .get(d.url(&format!("/api/stream?ticket={t}")))
        .send()
        .await
        .unwrap();
    assert_eq!(stream.status(), 200);
    let sent: Value = d.post_json("/hooks/s", "{}").await;
    let id = sent["event_id"].as_str().unwrap().to_owned();
    let mut text = String::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !text.contains(&id) {
        assert!(Instant::now() < deadline, "stream so far:\n{text}");
        if let Ok(Ok(Some(chunk))) =
            tokio::time::timeout(Duration::from_millis(500), stream.chunk()).await
        {
            text.push_str(&String::from_utf8_lossy(&chunk));
        }
    }
    drop(stream);

    // Once.
    assert_eq!(
        stream_status(&d, &format!("?ticket={t}")).await,
        401,
        "reused"
    );
    // Unknown, empty, or a ticket's worth of the token.
    assert_eq!(
        stream_status(&d, "?ticket=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA").await,
        401
    );
    assert_eq!(stream_status(&d, "?ticket=").await, 401);
    assert_eq!(stream_status(&d, &format!("?ticket={token}")).await, 401);
    // A ticket opens the stream and nothing else.
    let t = ticket(&d, token).await;
    let r = client()
        .get(d.url(&format!("/api/events?ticket={t}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(
        stream_status(&d, &format!("?ticket={t}")).await,
        200,
        "and trying it elsewhere did not use it up"
    );
    // Expiry (30 s) is pinned by the unit tests of `admin::ticket`, on an explicit clock.
    assert!(!d.log_text().contains(&t), "a ticket in the log");
}

/// A network namespace of the test's own, joined to this machine by a veth
/// pair: a client with a non-loopback address. Removed on drop.
struct Netns {
    name: String,
    link: String,
    pub host_ip: String,
}

#[allow(clippy::disallowed_methods)] // the fixture runs `ip`
fn ip(args: &[&str]) -> bool {
    std::process::Command::new("ip")
        .args(args)
        .stderr(std::process::Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

impl Netns {
    fn create() -> Netns {
        let n = std::process::id() % 200 + 20;
        let (name, link) = (format!("hwtest{n}"), format!("hwv{n}"));
        let peer = format!("{link}p");
        let host_ip = format!("10.213.{n}.1");
        // Leftovers of an earlier run with the same pid are removed first.
        ip(&["netns", "del", &name]);
        ip(&["link", "del", &link]);
        let steps: Vec<Vec<String>> = vec![
            vec!["netns".into(), "add".into(), name.clone()],
            vec![
                "link".into(),
                "add".into(),
                link.clone(),
                "type".into(),
                "veth".into(),
                "peer".into(),
                "name".into(),
                peer.clone(),
            ],
            vec![
                "link".into(),
                "set".into(),
                peer.clone(),
                "netns".into(),
                name.clone(),
            ],
            vec![
                "addr".into(),
                "add".into(),
                format!("{host_ip}/30"),
                "dev".into(),
                link.clone(),
            ],
            vec!["link".into(), "set".into(), link.clone(), "up".into()],
            vec![
                "-n".into(),
                name.clone(),
                "addr".into(),
                "add".into(),
                format!("10.213.{n}.2/30"),
                "dev".into(),
                peer.clone(),
            ],
            vec![
                "-n".into(),
                name.clone(),
                "link".into(),
                "set".into(),
                peer.clone(),
                "up".into(),
            ],
            vec![
                "-n".into(),
                name.clone(),
                "link".into(),
                "set".into(),
                "lo".into(),
                "up".into(),
            ],
        ];
        for step in &steps {
            let args: Vec<&str> = step.iter().map(String::as_str).collect();
            assert!(
                ip(&args),
                "ip {} failed (the test needs root and iproute2)",
                step.join(" ")
            );
        }
        Netns {
            name,
            link,
            host_ip,
        }
    }

    /// HTTP status of a GET made from inside the namespace.
    #[allow(clippy::disallowed_methods)] // runs curl in the namespace
    fn status(&self, url: &str) -> String {
        let out = std::process::Command::new("ip")
            .args([
                "netns",
                "exec",
                &self.name,
                "curl",
                "-s",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                "--max-time",
                "5",
                url,
            ])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        ip(&["netns", "del", &self.name]);
        ip(&["link", "del", &self.link]);
    }
}

#[tokio::test]
async fn without_a_token_a_non_loopback_client_gets_403() {
    let ns = Netns::create();
    let d = Daemon::start_with(
        &[("r.yaml", "sources:\n  s: {}\n")],
        &[],
        &["--listen", "0.0.0.0:0", "--insecure-admin"],
    );
    let port = d.addr.port();
    assert_eq!(
        ns.status(&format!("http://{}:{port}/api/events", ns.host_ip)),
        "403"
    );
    assert_eq!(
        ns.status(&format!("http://{}:{port}/", ns.host_ip)),
        "403",
        "the dashboard too"
    );
    assert_eq!(
        ns.status(&format!("http://{}:{port}/dashboard.js", ns.host_ip)),
        "403",
        "and its files"
    );
    assert_eq!(
        ns.status(&format!("http://{}:{port}/healthz", ns.host_ip)),
        "200",
        "health checks stay open"
    );
    assert_eq!(
        ns.status(&format!("http://{}:{port}/hooks/s", ns.host_ip)),
        "405",
        "webhooks are for everyone"
    );
    let r = client()
        .get(format!("http://127.0.0.1:{port}/api/events"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "loopback may ask");
}

#[tokio::test]
async fn json_logs_are_one_object_per_line() {
    let d = Daemon::start_with(
        &[("r.yaml", "sources:\n  s: {}\n")],
        &[],
        &["--log-format", "json"],
    );
    let r = client()
        .post(d.url("/hooks/s"))
        .header("content-type", "application/json")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let r = client()
        .post(d.url("/hooks/nope"))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let deadline = Instant::now() + Duration::from_secs(5);
    while !d.log_text().contains("request rejected") {
        assert!(Instant::now() < deadline, "{}", d.log_text());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let log = d.log_text();
    let lines: Vec<Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    assert!(
        lines
            .iter()
            .any(|l| l["fields"]["message"] == "event stored" && l["fields"]["source"] == "s"),
        "{log}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l["fields"]["reason"] == "unknown_path"),
        "{log}"
    );
}

/// `examples/deploy/grafana-dashboard.json` asks only for what `/metrics`
/// exposes: every metric its queries name is a family of a running daemon
/// (a counter read as `_total`, a histogram as `_bucket`), and every label it
/// groups by is one that family's samples carry, after an event was stored,
/// matched and delivered.
#[tokio::test]
async fn the_grafana_dashboard_queries_only_what_metrics_exposes() {
    let rx = crate::support::Receiver::start().await;
    let rules = format!(
        "sources:\n  hook: {{ dedup: \"{{{{payload.n}}}}\" }}\nrules:\n  - name: relay\n    source: hook\n    actions:\n      - http: {{ url: \"{}\" }}\n      - name: down\n        retry: {{ attempts: 1 }}\n        http: {{ url: \"http://127.0.0.1:1/refused\" }}\n",
        rx.url("/in")
    );
    let d = Daemon::start(&[("r.yaml", &rules)]);
    // Stored and delivered, a target refusing often enough to open its
    // breaker, a duplicate, a rejection: every family the dashboard reads
    // has samples that show their labels.
    for n in 1..=hookwire::dispatch::targets::FAILURES_TO_OPEN {
        d.post_json("/hooks/hook", format!(r#"{{"n": {n}}}"#)).await;
    }
    d.post_json("/hooks/hook", r#"{"n": 1}"#).await;
    let bad = client()
        .post(d.url("/hooks/hook"))
        .header("content-type", "application/json")
        .body("{")
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
    rx.wait_for("/in", 1, Duration::from_secs(15)).await;
    // The attempt is counted once its delivery is recorded.
    let deadline = Instant::now() + Duration::from_secs(15);
    let metrics = loop {
        let text = d.get_text("/metrics").await;
        if text.contains("hookwire_deliveries_total{")
            && text.contains("hookwire_target_breaker_open{")
        {
            break text;
        }
        assert!(
            Instant::now() < deadline,
            "no delivery counted or no breaker opened:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    // family → kind, and each sample name → the labels it carries.
    let mut families = std::collections::BTreeMap::new();
    let mut labels: std::collections::BTreeMap<String, std::collections::BTreeSet<String>> =
        Default::default();
    for line in metrics.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap();
            families.insert(name.to_owned(), kind.to_owned());
        } else if !line.starts_with('#') && !line.is_empty() {
            let name_end = line.find(['{', ' ']).unwrap();
            let set = labels.entry(line[..name_end].to_owned()).or_default();
            if let Some(inner) = line[name_end..].strip_prefix('{') {
                for pair in inner.split('}').next().unwrap().split(',') {
                    set.insert(pair.split('=').next().unwrap().to_owned());
                }
            }
        }
    }
    let dashboard: Value = serde_json::from_str(
        &std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/examples/deploy/grafana-dashboard.json"
        ))
        .unwrap(),
    )
    .unwrap();
    let exprs: Vec<String> = dashboard["panels"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| p["targets"].as_array().unwrap().iter())
        .map(|t| t["expr"].as_str().unwrap().to_owned())
        .collect();
    assert!(exprs.len() >= 10, "{exprs:?}");
    let mut asked = std::collections::BTreeSet::new();
    for expr in &exprs {
        let names: Vec<&str> = expr
            .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .filter(|w| w.starts_with("hookwire_"))
            .collect();
        assert!(!names.is_empty(), "{expr} queries no hookwire metric");
        for sample in names {
            let family = families.iter().find_map(|(family, kind)| {
                let suffixes: &[&str] = match kind.as_str() {
                    "counter" => &["_total"],
                    "histogram" => &["_bucket", "_sum", "_count"],
                    _ => &[""],
                };
                suffixes
                    .iter()
                    .any(|s| sample == format!("{family}{s}"))
                    .then_some(family.clone())
            });
            let family = family.unwrap_or_else(|| {
                panic!("`{expr}` asks for {sample}, which /metrics does not expose")
            });
            asked.insert(family);
            // `by (a, b)`: each label, besides a histogram's `le`, is on the samples.
            if let Some(by) = expr.split("by (").nth(1) {
                for label in by.split(')').next().unwrap().split(',').map(str::trim) {
                    if label == "le" {
                        continue;
                    }
                    let carried = labels.get(sample).is_some_and(|l| l.contains(label));
                    assert!(
                        carried,
                        "`{expr}` groups {sample} by `{label}`, which its samples do not carry:\n{metrics}"
                    );
                }
            }
        }
    }
    // What the issue asks the dashboard to show.
    for family in [
        "hookwire_events_received",
        "hookwire_rules_matched",
        "hookwire_deliveries",
        "hookwire_attempt_duration_seconds",
        "hookwire_queue_depth",
        "hookwire_reload_failures",
    ] {
        assert!(
            asked.contains(family),
            "the dashboard does not show {family}: {asked:?}"
        );
    }
}

/// `GET /api/overview` counts what this instance did in the last hour, from
/// real traffic, behind the admin token like the rest of the API.
#[tokio::test]
async fn the_overview_counts_events_outcomes_depth_and_the_slowest_actions() {
    let rx = Receiver::start().await;
    rx.script("/down", &[(503, None); 3]);
    let rules = format!(
        "sources:\n  github: {{}}\n  forms: {{}}\nrules:\n  - name: chat\n    source: github\n    actions:\n      - name: post\n        http: {{ url: \"{}\" }}\n  - name: lead\n    source: forms\n    actions:\n      - name: crm\n        http: {{ url: \"{}\" }}\n        retry: {{ attempts: 2, initial: 1h }}\n      - name: sleepy\n        command: {{ argv: [sleep, \"0.2\"] }}\n",
        rx.url("/up"),
        rx.url("/down")
    );
    let token = "ov-t0ken";
    let d = Daemon::start_with(&[("r.yaml", &rules)], &[], &["--admin-token", token]);
    let hook = |path: &'static str| {
        client()
            .post(d.url(path))
            .header("content-type", "application/json")
            .body("{}")
            .send()
    };
    for _ in 0..3 {
        assert_eq!(hook("/hooks/github").await.unwrap().status(), 202);
    }
    assert_eq!(hook("/hooks/forms").await.unwrap().status(), 202);

    let overview = || async {
        client()
            .get(d.url("/api/overview"))
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
            .json::<Value>()
            .await
            .unwrap()
    };
    // 3 posts, the CRM's first attempt and the sleep: five attempts.
    let deadline = Instant::now() + Duration::from_secs(15);
    let o = loop {
        let o = overview().await;
        let attempts: u64 = o["outcomes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["total"].as_u64().unwrap())
            .sum();
        if attempts == 5 || Instant::now() > deadline {
            break o;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let series = |key: &str| -> Vec<(String, u64, u64)> {
        o[key]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| {
                let minutes = s["per_minute"].as_array().unwrap();
                assert_eq!(minutes.len(), 60, "{o:#}");
                (
                    s["name"].as_str().unwrap().to_owned(),
                    s["total"].as_u64().unwrap(),
                    minutes.iter().map(|n| n.as_u64().unwrap()).sum(),
                )
            })
            .collect()
    };
    assert_eq!(
        series("events"),
        [("forms".into(), 1, 1), ("github".into(), 3, 3)],
        "{o:#}"
    );
    assert_eq!(
        series("outcomes"),
        [("succeeded".into(), 4, 4), ("retrying".into(), 1, 1)],
        "{o:#}"
    );
    // The retrying CRM delivery waits an hour: read at this request.
    let depth = o["queue_depth"].as_array().unwrap();
    assert_eq!(depth.last().unwrap()["depth"], 1, "{o:#}");
    let start = o["start"].as_i64().unwrap();
    let now = o["now"].as_i64().unwrap();
    assert!(
        now - start >= 59 * 60_000 && now - start < 60 * 60_000,
        "{o:#}"
    );
    // The 0.2 s command first, then the two http actions.
    let slowest = o["slowest"].as_array().unwrap();
    assert_eq!(slowest[0]["target"], "lead/sleepy", "{o:#}");
    assert_eq!(slowest[0]["attempts"], 1);
    let p95 = slowest[0]["p95_ms"].as_f64().unwrap();
    assert!((150.0..=260.0).contains(&p95), "{o:#}");
    let targets: Vec<&str> = slowest
        .iter()
        .map(|s| s["target"].as_str().unwrap())
        .collect();
    assert_eq!(targets.len(), 3, "{o:#}");
    assert!(targets.contains(&"chat/post") && targets.contains(&"lead/crm"));

    let r = client().get(d.url("/api/overview")).send().await.unwrap();
    assert_eq!(r.status(), 401, "the overview needs the token");
    // And the daemon goes on serving.
    assert_eq!(hook("/hooks/github").await.unwrap().status(), 202);
}
