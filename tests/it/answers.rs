//! Every answer of SPEC §5, and that the daemon keeps serving after each.

use std::time::Duration;

use serde_json::{Value, json};

use crate::support::{Daemon, client, fixture, send_all, split_dedup_answers};

const RULES: &str = r#"
sources:
  github:
    dedup: "{{headers.x-github-delivery}}"
  forms:
    json_fields: [payload]
  small:
    max_body: 1KiB
    methods: [POST, PUT]
  limited:
    rate_limit: 3/m
  office:
    allow_ips: [203.0.113.0/24]
  slack:
    path: /slack/events
rules:
  - name: push-to-chat
    source: github
    when:
      - header: X-GitHub-Event
        equals: push
      - path: $.ref
        glob: refs/heads/**
    actions:
      - http:
          url: http://127.0.0.1:9/chat
          body: { text: "{{payload.pusher.name}} pushed {{len payload.commits}} commits" }
  - name: tags
    source: github
    when: { path: $.ref, starts_with: refs/tags/ }
    actions:
      - command: { argv: ["/bin/true"] }
  - name: bitbucket
    source: forms
    when: { path: $.payload.repository.name, exists: true }
    actions:
      - command: { argv: ["/bin/echo", "{{payload.payload.repository.name}}"] }
  - name: url-verification
    source: slack
    when: { path: $.type, equals: url_verification }
    respond:
      status: 200
      body: { challenge: "{{payload.challenge}}" }
"#;

async fn post(
    d: &Daemon,
    path: &str,
    ct: &str,
    body: impl Into<reqwest::Body>,
    headers: &[(&str, &str)],
) -> reqwest::Response {
    let mut req = client()
        .post(d.url(path))
        .header("content-type", ct)
        .body(body);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    req.send().await.unwrap()
}

fn request_id(r: &reqwest::Response) -> String {
    r.headers()
        .get("x-request-id")
        .expect("every answer carries X-Request-Id")
        .to_str()
        .unwrap()
        .to_owned()
}

async fn assert_healthy(d: &Daemon) {
    let r = client().get(d.url("/healthz")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap(), json!({"status": "ok"}));
}

#[tokio::test]
async fn stored_events_answer_202_with_matched_rules_and_store_pending_deliveries() {
    let d = Daemon::start(&[("github.yaml", RULES)]);
    let r = post(
        &d,
        "/hooks/github",
        "application/json",
        fixture("examples/payloads/push-branch.json"),
        &[("x-github-event", "push")],
    )
    .await;
    assert_eq!(r.status(), 202);
    let id = request_id(&r);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body, json!({"event_id": id, "matched": ["push-to-chat"]}));
    assert!(id.starts_with("evt_"));
    let stored = d.event(&id).await.expect("stored");
    assert_eq!(stored["deliveries"].as_array().unwrap().len(), 1);

    // Nothing matched is still stored, and says so.
    let r = post(
        &d,
        "/hooks/github",
        "application/json",
        fixture("examples/payloads/ping.json"),
        &[("x-github-event", "ping")],
    )
    .await;
    assert_eq!(r.status(), 202);
    let id = request_id(&r);
    assert_eq!(r.json::<Value>().await.unwrap()["matched"], json!([]));
    let stored = d.event(&id).await.expect("stored");
    assert_eq!(stored["deliveries"].as_array().unwrap().len(), 0);
}

#[tokio::test]
async fn form_posts_decode_repeated_keys_and_json_fields() {
    let d = Daemon::start(&[("rules.yaml", RULES)]);
    let r = post(
        &d,
        "/hooks/forms",
        "application/x-www-form-urlencoded",
        fixture("tests/fixtures/bitbucket-form.txt"),
        &[],
    )
    .await;
    assert_eq!(r.status(), 202);
    assert_eq!(
        r.json::<Value>().await.unwrap()["matched"],
        json!(["bitbucket"])
    );

    let r = post(
        &d,
        "/hooks/forms",
        "application/x-www-form-urlencoded",
        "tag=a&tag=b+c&name=%C3%A9",
        &[],
    )
    .await;
    assert_eq!(r.status(), 202);
    let id = request_id(&r);
    let stored = d.event(&id).await.expect("stored");
    assert_eq!(stored["payload"], json!({"tag": ["a", "b c"], "name": "é"}));
}

#[tokio::test]
async fn respond_answers_with_the_rules_own_status_and_rendered_body() {
    let d = Daemon::start(&[("rules.yaml", RULES)]);
    let r = post(
        &d,
        "/slack/events",
        "application/json",
        r#"{"type":"url_verification","challenge":"3eZbrw1aB\"x"}"#,
        &[],
    )
    .await;
    assert_eq!(r.status(), 200);
    assert!(request_id(&r).starts_with("evt_"));
    assert_eq!(
        r.json::<Value>().await.unwrap(),
        json!({"challenge": "3eZbrw1aB\"x"})
    );
}

#[tokio::test]
async fn duplicates_answer_200_with_the_first_event_and_store_once_under_concurrency() {
    let d = Daemon::start(&[("rules.yaml", RULES)]);
    let body = fixture("examples/payloads/push-branch.json");
    let requests = (0..24)
        .map(|_| {
            client()
                .post(d.url("/hooks/github"))
                .header("content-type", "application/json")
                .header("x-github-event", "push")
                .header("x-github-delivery", "72d3162e-cc78-11e3-81ab-4c9367dc0958")
                .body(body.clone())
        })
        .collect();
    let answers = send_all(requests).await;
    let (stored, duplicates) = split_dedup_answers(answers);
    assert_eq!(stored.len(), 1, "exactly one copy is stored");
    assert_eq!(duplicates.len(), 23);
    assert!(
        duplicates.iter().all(|id| *id == stored[0]),
        "duplicates name the first event"
    );
    assert_eq!(d.count_events("source=github").await, 1);
    assert_eq!(d.count_deliveries(&[]).await, 1);
}

#[tokio::test]
async fn every_rejection_has_its_status_message_and_request_id() {
    let d = Daemon::start(&[("rules.yaml", RULES)]);

    let r = post(&d, "/hooks/nope", "application/json", "{}", &[]).await;
    assert_eq!(r.status(), 404);
    request_id(&r);
    assert_eq!(
        r.json::<Value>().await.unwrap(),
        json!({"error": "no source at /hooks/nope"})
    );

    let r = client().get(d.url("/hooks/github")).send().await.unwrap();
    assert_eq!(r.status(), 405);
    assert_eq!(r.headers()["allow"], "POST");
    request_id(&r);
    assert_eq!(
        r.json::<Value>().await.unwrap(),
        json!({"error": "method GET not allowed; allowed: POST"})
    );
    let r = client()
        .put(d.url("/hooks/small"))
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202, "PUT is allowed where listed");

    let r = post(&d, "/hooks/office", "application/json", "{}", &[]).await;
    assert_eq!(r.status(), 403);
    assert_eq!(
        r.json::<Value>().await.unwrap(),
        json!({"error": "address not allowed"})
    );

    let r = post(
        &d,
        "/hooks/github",
        "application/json",
        "{\"ref\": \"refs/heads/main\",\n  \"x\": tru}",
        &[],
    )
    .await;
    assert_eq!(r.status(), 400);
    request_id(&r);
    assert_eq!(
        r.json::<Value>().await.unwrap(),
        json!({"error": "invalid JSON at line 2 column 11: expected ident"})
    );

    let deep = "[".repeat(100_000) + &"]".repeat(100_000);
    let r = post(&d, "/hooks/github", "application/json", deep, &[]).await;
    assert_eq!(r.status(), 400);
    let msg = r.json::<Value>().await.unwrap()["error"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        msg,
        "invalid JSON at line 1 column 128: recursion limit exceeded"
    );

    let r = post(
        &d,
        "/hooks/github",
        "application/json",
        "{\"n\": 1e400}",
        &[],
    )
    .await;
    assert_eq!(r.status(), 400);

    let r = post(
        &d,
        "/hooks/small",
        "application/json",
        vec![b'x'; 2048],
        &[],
    )
    .await;
    assert_eq!(r.status(), 413);
    assert_eq!(
        r.json::<Value>().await.unwrap(),
        json!({"error": "body larger than 1024 bytes"})
    );

    for i in 0..3 {
        let r = post(&d, "/hooks/limited", "application/json", "{}", &[]).await;
        assert_eq!(r.status(), 202, "request {i} is within the limit");
    }
    let r = post(&d, "/hooks/limited", "application/json", "{}", &[]).await;
    assert_eq!(r.status(), 429);
    let wait: u64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=20).contains(&wait), "Retry-After {wait}");
    request_id(&r);

    let big = "a".repeat(70 * 1024);
    let r = client()
        .post(d.url("/hooks/github"))
        .header("x-big", big)
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 431);

    // Anything else is stored raw with a null payload.
    let r = post(&d, "/hooks/small", "text/plain", "hello", &[]).await;
    assert_eq!(r.status(), 202);
    assert_healthy(&d).await;
}

#[tokio::test]
async fn oversized_streamed_body_is_refused_without_reading_it_all() {
    let d = Daemon::start(&[("rules.yaml", RULES)]);
    // A chunked body with no Content-Length that would go on for 256 MiB.
    let chunk = bytes::Bytes::from(vec![b'x'; 64 * 1024]);
    let stream =
        futures_util::stream::iter((0..4096).map(move |_| Ok::<_, std::io::Error>(chunk.clone())));
    let started = std::time::Instant::now();
    let r = client()
        .post(d.url("/hooks/small"))
        .header("content-type", "application/json")
        .body(reqwest::Body::wrap_stream(stream))
        .send()
        .await;
    // The server answers 413 as soon as the limit is passed; the client may see
    // the answer or a reset while it is still sending. Either way it is not 2xx,
    // and it happens long before 256 MiB could have been read.
    if let Ok(r) = r {
        assert_eq!(r.status(), 413);
    }
    assert!(started.elapsed() < Duration::from_secs(20));
    assert_eq!(d.count_events("").await, 0);
    assert_healthy(&d).await;
}

const DECODE_RULES: &str = r#"
sources:
  xml: {}
  plex:
    json_fields: [payload]
  sendgrid: {}
rules:
  - name: sally
    source: xml
    when: { path: "$.app.users.user[?@['@name'] == 'Sally']", exists: true }
  - name: media-play
    source: plex
    when: { path: $.payload.event, equals: media.play }
  - name: processed
    source: sendgrid
    when: { path: "$[*].event", equals: processed }
"#;

async fn stored_payload(d: &Daemon, r: reqwest::Response) -> (Value, Value) {
    assert_eq!(r.status(), 202);
    let body: Value = r.json().await.unwrap();
    let stored = d
        .event(body["event_id"].as_str().unwrap())
        .await
        .expect("stored");
    let payload = stored["payload"].clone();
    (body, payload)
}

#[tokio::test]
async fn xml_multipart_and_top_level_arrays_decode_and_match() {
    let d = Daemon::start(&[("rules.yaml", DECODE_RULES)]);
    let r = post(
        &d,
        "/hooks/xml",
        "application/xml",
        fixture("tests/fixtures/app.xml"),
        &[],
    )
    .await;
    let (body, payload) = stored_payload(&d, r).await;
    assert_eq!(body["matched"], json!(["sally"]));
    assert_eq!(payload["app"]["messages"]["message"]["#text"], "Hello!!");

    // Real clients send multipart with CRLF line endings.
    let multipart = String::from_utf8(fixture("tests/fixtures/plex-multipart.txt"))
        .unwrap()
        .replace('\n', "\r\n");
    let r = post(
        &d,
        "/hooks/plex",
        "multipart/form-data; boundary=xxx",
        multipart,
        &[],
    )
    .await;
    let (body, payload) = stored_payload(&d, r).await;
    assert_eq!(body["matched"], json!(["media-play"]));
    assert_eq!(payload["payload"]["Account"]["title"], "elan");
    assert_eq!(payload["thumb"]["filename"], "thumb.jpg");

    let r = post(
        &d,
        "/hooks/sendgrid",
        "application/json",
        fixture("tests/fixtures/sendgrid-array.json"),
        &[],
    )
    .await;
    let (body, payload) = stored_payload(&d, r).await;
    assert!(payload.is_array());
    assert_eq!(body["matched"], json!(["processed"]));

    let r = post(
        &d,
        "/hooks/xml",
        "application/xml",
        "<app><unclosed></app>",
        &[],
    )
    .await;
    assert_eq!(r.status(), 400);
    assert!(
        r.json::<Value>().await.unwrap()["error"]
            .as_str()
            .unwrap()
            .contains("XML")
    );
}

#[tokio::test]
async fn admin_api_needs_the_token_when_one_is_set() {
    let d = Daemon::start_with(
        &[("rules.yaml", RULES)],
        &[],
        &["--admin-token", "t0ken-for-admin"],
    );
    let r = client().get(d.url("/api/rules")).send().await.unwrap();
    assert_eq!(r.status(), 401);
    let r = client()
        .get(d.url("/api/rules"))
        .bearer_auth("wrong")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = client()
        .get(d.url("/api/rules"))
        .bearer_auth("t0ken-for-admin")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["reload"]["loaded"], true);
    assert!(
        v["sources"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["name"] == "github")
    );
    // Health checks stay open.
    assert_eq!(
        client()
            .get(d.url("/healthz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        client()
            .get(d.url("/readyz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert!(!d.log_text().contains("t0ken-for-admin"));
}

#[test]
fn serve_refuses_a_public_listener_without_an_admin_token() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("rules")).unwrap();
    let (code, _, err) = crate::support::run_cli(
        dir.path(),
        &["serve", "--listen", "0.0.0.0:0"],
        &[("HOOKWIRE_ADMIN_TOKEN", "")],
    );
    assert_eq!(code, 1);
    assert!(err.contains("refusing to listen on 0.0.0.0:"), "{err}");
    let (code, _, err) = crate::support::run_cli(
        dir.path(),
        &["serve", "--rules", "missing-dir", "--listen", "127.0.0.1:0"],
        &[],
    );
    assert_eq!(code, 1);
    assert!(
        err.contains("rules directory missing-dir does not exist"),
        "{err}"
    );
}

/// One rule per operator and form; the payload is GitHub's push example.
const OPERATOR_RULES: &str = r#"
sources:
  gh: {}
rules:
  - { name: equals, source: gh, when: { path: $.ref, equals: refs/heads/master } }
  - { name: equals-miss, source: gh, when: { path: $.ref, equals: refs/heads/main } }
  - { name: typed-int-float, source: gh, when: { path: $.repository.id, equals: 186853002.0 } }
  - { name: typed-string-not-number, source: gh, when: { path: $.repository.id, equals: "186853002" } }
  - { name: not-equals, source: gh, when: { path: $.ref, not_equals: refs/heads/main } }
  - { name: in, source: gh, when: { path: $.ref, in: [refs/heads/main, refs/heads/master] } }
  - { name: not-in, source: gh, when: { path: $.ref, not_in: [refs/heads/main] } }
  - { name: matches, source: gh, when: { path: $.head_commit.message, matches: "(?i)^initial" } }
  - { name: glob, source: gh, when: { path: $.ref, glob: "refs/heads/**" } }
  - { name: glob-no-cross, source: gh, when: { path: $.ref, glob: "refs/*" } }
  - { name: contains-text, source: gh, when: { path: $.repository.full_name, contains: "/Hello" } }
  - { name: contains-element, source: gh, when: { path: "$.commits[*].id", contains: 6113728f27ae82c7b1a177c8d03f9e96e0adf246, every: false } }
  - { name: starts-with, source: gh, when: { path: $.ref, starts_with: refs/ } }
  - { name: ends-with, source: gh, when: { path: $.ref, ends_with: /master } }
  - { name: exists, source: gh, when: { path: $.head_commit.id, exists: true } }
  - { name: zero-nodes-exists-false, source: gh, when: { path: $.payload.ref, exists: false } }
  - { name: zero-nodes-equals, source: gh, when: { path: $.payload.ref, equals: refs/heads/master } }
  - { name: zero-nodes-not-equals, source: gh, when: { path: $.nope, not_equals: x } }
  - { name: gt, source: gh, when: { path: $.repository.size, gte: 0 } }
  - { name: lt-mixed-types, source: gh, when: { path: $.ref, lt: 5 } }
  - { name: every, source: gh, when: { path: "$.commits[*].distinct", every: true, equals: true } }
  - { name: header, source: gh, when: { header: X-GitHub-Event, equals: push } }
  - { name: query, source: gh, when: { query: token, equals: abc } }
  - { name: method, source: gh, when: { method: true, equals: POST } }
  - { name: bare-jsonpath, source: gh, when: "$[?@.deleted == false && @.forced == false]" }
  - { name: all, source: gh, when: { all: [{ path: $.created, equals: true }, { path: $.deleted, equals: false }] } }
  - { name: any, source: gh, when: { any: [{ path: $.created, equals: true }, { path: $.forced, equals: false }] } }
  - { name: not, source: gh, when: { not: { path: $.deleted, equals: true } } }
  - { name: disabled, source: gh, enabled: false }
"#;

#[tokio::test]
async fn every_operator_through_the_daemon() {
    let d = Daemon::start(&[("ops.yaml", OPERATOR_RULES)]);
    let r = client()
        .post(d.url("/hooks/gh?token=abc"))
        .header("content-type", "application/json")
        .header("x-github-event", "push")
        .body(fixture("examples/payloads/push-branch.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let v: Value = r.json().await.unwrap();
    let mut matched: Vec<&str> = v["matched"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m.as_str().unwrap())
        .collect();
    matched.sort();
    let mut want = vec![
        "all",
        "any",
        "bare-jsonpath",
        "contains-element",
        "contains-text",
        "ends-with",
        "equals",
        "every",
        "exists",
        "glob",
        "gt",
        "header",
        "in",
        "matches",
        "method",
        "not",
        "not-equals",
        "not-in",
        "query",
        "starts-with",
        "typed-int-float",
        "zero-nodes-exists-false",
        "zero-nodes-not-equals",
    ];
    want.sort();
    assert_eq!(matched, want);
    // The stored trace explains a miss.
    let events = d.list("events", "").await;
    let stored = d.event(events[0]["id"].as_str().unwrap()).await.unwrap();
    let trace = &stored["trace"];
    let miss = trace
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["rule"] == "zero-nodes-equals")
        .unwrap();
    assert_eq!(miss["matched"], false);
    assert!(
        miss["conditions"][0]["reason"]
            .as_str()
            .unwrap()
            .contains("did you mean `$.ref`?"),
        "{miss}"
    );
    let disabled = trace
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["rule"] == "disabled")
        .unwrap();
    assert_eq!(disabled["disabled"], true);
}

/// adnanh/webhook's own `empty-payload-signature` case: a signed POST with
/// `Content-Type: application/json` and no body at all (pings and triggers do
/// this). It is an event whose payload is null, matched like any other.
#[tokio::test]
async fn a_signed_empty_body_is_an_event_with_a_null_payload() {
    let rules = r#"
sources:
  trigger:
    verify:
      hmac: { header: X-Hub-Signature, algorithm: sha1, encoding: hex, secret: "${PEER_SECRET}" }
rules:
  - name: on-trigger
    source: trigger
    when: { path: $.anything, exists: false }
"#;
    let d = Daemon::start_with(&[("t.yaml", rules)], &[("PEER_SECRET", "mysecret")], &[]);
    // The signature of the empty body, from that test suite.
    let sig = (
        "X-Hub-Signature",
        "33f9d709782f62b8b4a0178586c65ab098a39fe2",
    );
    let r = post(&d, "/hooks/trigger", "application/json", "", &[sig]).await;
    assert_eq!(r.status(), 202);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["matched"], json!(["on-trigger"]));
    let e = d
        .get_json(&format!(
            "/api/events/{}",
            body["event_id"].as_str().unwrap()
        ))
        .await;
    assert_eq!(e["payload"], Value::Null, "{e:#}");
    assert_eq!(
        e["facts"],
        json!(["payload is null: the body is empty (Content-Type was application/json)"])
    );
    // The signature still counts: the same empty body unsigned is refused.
    let r = post(&d, "/hooks/trigger", "application/json", "", &[]).await;
    assert_eq!(r.status(), 401);
    assert_healthy(&d).await;
}
