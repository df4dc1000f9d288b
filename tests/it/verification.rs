//! Every verification scheme through the daemon: valid, invalid, missing,
//! stale timestamp, rotated secret. The 401 never says which part failed.

use std::time::{Duration, SystemTime};

use base64::Engine as _;
use hookwire::verify::{SignScheme, sign};
use serde_json::{Value, json};

use crate::support::{Daemon, client};

const RULES: &str = r#"
sources:
  github:
    verify: { github: { secret: ["${OLD_SECRET}", "${GITHUB_SECRET}"] } }
  stripe:
    verify: { stripe: { secret: "${STRIPE_SECRET}" } }
  slack:
    verify: { slack: { secret: "${SLACK_SECRET}", tolerance: 60s } }
  standard:
    verify: { standard: { secret: "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw" } }
  shopify:
    verify: { shopify: { secret: "${SHOPIFY_SECRET}" } }
  gitlab:
    verify: { gitlab: { token: "${GITLAB_TOKEN}" } }
  token-header:
    verify: { token: { header: X-Api-Key, value: "${API_KEY}" } }
  token-query:
    verify: { token: { query: key, value: "${API_KEY}" } }
  basic:
    verify: { basic: { username: hook, password: "${API_KEY}" } }
  generic:
    verify: { hmac: { header: X-Signature, algorithm: sha1, encoding: hex, prefix: "sha1=", secret: "${GITHUB_SECRET}" } }
"#;

const ENV: &[(&str, &str)] = &[
    ("OLD_SECRET", "retired-secret"),
    ("GITHUB_SECRET", "It's a Secret to Everybody"),
    ("STRIPE_SECRET", "whsec_stripe_test"),
    ("SLACK_SECRET", "8f742231b10e8888abcd99yyyzzz85a5"),
    ("SHOPIFY_SECRET", "test_secret_key"),
    ("GITLAB_TOKEN", "gl-token-123"),
    ("API_KEY", "k3y-abc"),
];

const BODY: &str = r#"{"zen":"Keep it logically awesome.","hook_id":1}"#;

async fn send(d: &Daemon, path: &str, headers: &[(String, String)], body: &str) -> u16 {
    let mut req = client()
        .post(d.url(path))
        .header("content-type", "application/json")
        .body(body.to_owned());
    for (k, v) in headers {
        req = req.header(k.as_str(), v.as_str());
    }
    let r = req.send().await.unwrap();
    let status = r.status().as_u16();
    if status == 401 {
        assert_eq!(
            r.json::<Value>().await.unwrap(),
            json!({"error": "verification failed"})
        );
    }
    status
}

fn signed(scheme: SignScheme, secret: &str, body: &str, at: SystemTime) -> Vec<(String, String)> {
    sign(scheme, secret, body.as_bytes(), at, "msg_test")
        .unwrap()
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
}

fn tamper(mut headers: Vec<(String, String)>, name: &str) -> Vec<(String, String)> {
    for (k, v) in headers.iter_mut() {
        if k.eq_ignore_ascii_case(name) {
            // Flip one character of the signature.
            let mut chars: Vec<char> = v.chars().collect();
            let i = chars.len() - 3;
            // '0' and '1' are digits in hex and base64 alike, so this always changes the value.
            chars[i] = if chars[i] == '0' { '1' } else { '0' };
            *v = chars.into_iter().collect();
        }
    }
    headers
}

#[tokio::test]
async fn signing_schemes_accept_valid_and_refuse_invalid_missing_and_stale() {
    let d = Daemon::start_with(&[("sources.yaml", RULES)], ENV, &[]);
    let now = SystemTime::now();
    let stale = now - Duration::from_secs(600);
    let future = now + Duration::from_secs(600);
    let cases: &[(&str, SignScheme, &str, &str, bool)] = &[
        // path, scheme, secret, signature header, has a timestamp
        (
            "/hooks/github",
            SignScheme::Github,
            "It's a Secret to Everybody",
            "x-hub-signature-256",
            false,
        ),
        (
            "/hooks/stripe",
            SignScheme::Stripe,
            "whsec_stripe_test",
            "stripe-signature",
            true,
        ),
        (
            "/hooks/slack",
            SignScheme::Slack,
            "8f742231b10e8888abcd99yyyzzz85a5",
            "x-slack-signature",
            true,
        ),
        (
            "/hooks/standard",
            SignScheme::Standard,
            "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
            "webhook-signature",
            true,
        ),
        (
            "/hooks/shopify",
            SignScheme::Shopify,
            "test_secret_key",
            "x-shopify-hmac-sha256",
            false,
        ),
    ];
    for (path, scheme, secret, sig_header, timed) in cases {
        let good = signed(*scheme, secret, BODY, now);
        assert_eq!(send(&d, path, &good, BODY).await, 202, "{path}: valid");
        assert_eq!(
            send(&d, path, &good, &BODY.replace("awesome", "awesomE")).await,
            401,
            "{path}: body changed"
        );
        assert_eq!(
            send(&d, path, &tamper(good.clone(), sig_header), BODY).await,
            401,
            "{path}: signature changed"
        );
        assert_eq!(send(&d, path, &[], BODY).await, 401, "{path}: missing");
        // Another key in the form the scheme takes (standard: base64).
        let other = match scheme {
            SignScheme::Standard => "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD",
            _ => "not-the-secret",
        };
        let wrong = signed(*scheme, other, BODY, now);
        assert_eq!(
            send(&d, path, &wrong, BODY).await,
            401,
            "{path}: wrong secret"
        );
        if *timed {
            assert_eq!(
                send(&d, path, &signed(*scheme, secret, BODY, stale), BODY).await,
                401,
                "{path}: stale"
            );
            assert_eq!(
                send(&d, path, &signed(*scheme, secret, BODY, future), BODY).await,
                401,
                "{path}: from the future"
            );
        }
    }
    // Standard Webhooks also under the svix- names.
    let svix: Vec<(String, String)> = signed(
        SignScheme::Standard,
        "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
        BODY,
        now,
    )
    .into_iter()
    .map(|(k, v)| (k.replace("webhook-", "svix-"), v))
    .collect();
    assert_eq!(send(&d, "/hooks/standard", &svix, BODY).await, 202);
}

#[tokio::test]
async fn rotated_secrets_all_verify() {
    let d = Daemon::start_with(&[("sources.yaml", RULES)], ENV, &[]);
    let now = SystemTime::now();
    assert_eq!(
        send(
            &d,
            "/hooks/github",
            &signed(SignScheme::Github, "retired-secret", BODY, now),
            BODY
        )
        .await,
        202
    );
    assert_eq!(
        send(
            &d,
            "/hooks/github",
            &signed(SignScheme::Github, "It's a Secret to Everybody", BODY, now),
            BODY
        )
        .await,
        202
    );
    assert_eq!(
        send(
            &d,
            "/hooks/github",
            &signed(SignScheme::Github, "some-other", BODY, now),
            BODY
        )
        .await,
        401
    );
}

#[tokio::test]
async fn token_basic_gitlab_and_generic_hmac() {
    let d = Daemon::start_with(&[("sources.yaml", RULES)], ENV, &[]);
    let h = |k: &str, v: &str| vec![(k.to_owned(), v.to_owned())];
    assert_eq!(
        send(
            &d,
            "/hooks/gitlab",
            &h("X-Gitlab-Token", "gl-token-123"),
            BODY
        )
        .await,
        202
    );
    assert_eq!(
        send(
            &d,
            "/hooks/gitlab",
            &h("X-Gitlab-Token", "gl-token-124"),
            BODY
        )
        .await,
        401
    );
    assert_eq!(send(&d, "/hooks/gitlab", &[], BODY).await, 401);
    assert_eq!(
        send(&d, "/hooks/token-header", &h("X-Api-Key", "k3y-abc"), BODY).await,
        202
    );
    assert_eq!(
        send(&d, "/hooks/token-header", &h("X-Api-Key", "k3y-abd"), BODY).await,
        401
    );
    assert_eq!(
        send(&d, "/hooks/token-query?key=k3y-abc", &[], BODY).await,
        202
    );
    assert_eq!(
        send(&d, "/hooks/token-query?key=nope", &[], BODY).await,
        401
    );
    assert_eq!(send(&d, "/hooks/token-query", &[], BODY).await, 401);
    let basic = |u: &str, p: &str| {
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}"))
        )
    };
    assert_eq!(
        send(
            &d,
            "/hooks/basic",
            &h("Authorization", &basic("hook", "k3y-abc")),
            BODY
        )
        .await,
        202
    );
    assert_eq!(
        send(
            &d,
            "/hooks/basic",
            &h("Authorization", &basic("hook", "wrong")),
            BODY
        )
        .await,
        401
    );
    assert_eq!(
        send(
            &d,
            "/hooks/basic",
            &h("Authorization", "Basic !!!not-base64"),
            BODY
        )
        .await,
        401
    );
    // Generic HMAC-SHA1 with a prefix, as GitHub's legacy X-Hub-Signature.
    use hmac::{Hmac, Mac};
    let mut mac = Hmac::<sha1::Sha1>::new_from_slice(b"It's a Secret to Everybody").unwrap();
    mac.update(BODY.as_bytes());
    let sig = format!("sha1={}", hex::encode(mac.finalize().into_bytes()));
    assert_eq!(
        send(&d, "/hooks/generic", &h("X-Signature", &sig), BODY).await,
        202
    );
    assert_eq!(
        send(
            &d,
            "/hooks/generic",
            &h("X-Signature", &sig.replace("sha1=", "")),
            BODY
        )
        .await,
        401
    );
    assert_eq!(
        send(&d, "/hooks/generic", &h("X-Signature", "sha1=zz"), BODY).await,
        401
    );
    // Secrets never reach the log.
    let log = d.log_text();
    for (_, secret) in ENV {
        assert!(!log.contains(secret), "secret {secret} appears in the log");
    }
}
