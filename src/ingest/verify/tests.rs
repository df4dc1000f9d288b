//! Providers' published vectors: each verifies, and fails after a one-byte
//! change to the body, the id, the timestamp or the signature.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::http::{HeaderMap, HeaderName, HeaderValue};

use super::*;

fn at(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(secs)
}

fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in pairs {
        h.append(
            HeaderName::from_bytes(k.as_bytes()).unwrap(),
            HeaderValue::from_bytes(v.as_bytes()).unwrap(),
        );
    }
    h
}

fn one(s: &str) -> OneOrMany<String> {
    OneOrMany(vec![s.to_owned()])
}

fn check(
    v: &Verifier,
    h: &[(&str, &str)],
    query: Option<&str>,
    body: &[u8],
    now: SystemTime,
) -> Result<(), VerifyError> {
    v.verify(&Request {
        headers: &headers(h),
        query,
        body,
        now,
    })
}

/// Changes one byte of `s` (the one at `i` from the end).
fn flip(s: &str, from_end: usize) -> String {
    let mut b = s.as_bytes().to_vec();
    let i = b.len() - from_end;
    b[i] = if b[i] == b'a' { b'b' } else { b'a' };
    String::from_utf8(b).unwrap()
}

const GITHUB_SECRET: &str = "It's a Secret to Everybody";
const GITHUB_SIG: &str = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";

#[test]
fn github_vector() {
    let v = Verifier::compile(&VerifyConfig::Github {
        secret: one(GITHUB_SECRET),
    })
    .unwrap();
    let now = SystemTime::now();
    assert_eq!(
        check(
            &v,
            &[("x-hub-signature-256", GITHUB_SIG)],
            None,
            b"Hello, World!",
            now
        ),
        Ok(())
    );
    assert_eq!(
        check(
            &v,
            &[("x-hub-signature-256", GITHUB_SIG)],
            None,
            b"Hello, World?",
            now
        ),
        Err(VerifyError::Mismatch)
    );
    assert_eq!(
        check(
            &v,
            &[("x-hub-signature-256", &flip(GITHUB_SIG, 1))],
            None,
            b"Hello, World!",
            now
        ),
        Err(VerifyError::Mismatch)
    );
    assert_eq!(
        check(&v, &[], None, b"Hello, World!", now),
        Err(VerifyError::Missing("x-hub-signature-256"))
    );
    for bad in [
        "sha256=zz",
        "",
        "sha1=757107ea",
        "sha256=",
        "757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17",
    ] {
        assert!(
            check(
                &v,
                &[("x-hub-signature-256", bad)],
                None,
                b"Hello, World!",
                now
            )
            .is_err(),
            "{bad}"
        );
    }
    assert_eq!(
        sign(SignScheme::Github, GITHUB_SECRET, b"Hello, World!", now, ""),
        [("X-Hub-Signature-256", GITHUB_SIG.to_owned())]
    );
    // Rotation: the right secret second in the list.
    let rotated = Verifier::compile(&VerifyConfig::Github {
        secret: OneOrMany(vec!["old".into(), GITHUB_SECRET.into()]),
    })
    .unwrap();
    assert_eq!(
        check(
            &rotated,
            &[("x-hub-signature-256", GITHUB_SIG)],
            None,
            b"Hello, World!",
            now
        ),
        Ok(())
    );
}

const SLACK_SECRET: &str = "8f742231b10e8888abcd99yyyzzz85a5";
const SLACK_TS: &str = "1531420618";
const SLACK_BODY: &str = "token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow&channel_id=G8PSS9T3V&channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner&command=%2Fwebhook-collect&text=&response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands%2FT1DC2JH3J%2F397700885554%2F96rGlfmibIGlgcZRskXaIFfN&trigger_id=398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c";
const SLACK_SIG: &str = "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503";

#[test]
fn slack_vector() {
    let v = Verifier::compile(&VerifyConfig::Slack {
        secret: one(SLACK_SECRET),
        tolerance: None,
    })
    .unwrap();
    let now = at(1531420618);
    let ok = [
        ("x-slack-request-timestamp", SLACK_TS),
        ("x-slack-signature", SLACK_SIG),
    ];
    assert_eq!(check(&v, &ok, None, SLACK_BODY.as_bytes(), now), Ok(()));
    assert_eq!(
        check(&v, &ok, None, flip(SLACK_BODY, 5).as_bytes(), now),
        Err(VerifyError::Mismatch)
    );
    assert_eq!(
        check(
            &v,
            &[ok[0], ("x-slack-signature", &flip(SLACK_SIG, 2))],
            None,
            SLACK_BODY.as_bytes(),
            now
        ),
        Err(VerifyError::Mismatch)
    );
    assert_eq!(
        check(
            &v,
            &[("x-slack-request-timestamp", "1531420619"), ok[1]],
            None,
            SLACK_BODY.as_bytes(),
            now
        ),
        Err(VerifyError::Mismatch)
    );
    assert_eq!(
        check(&v, &ok, None, SLACK_BODY.as_bytes(), at(1531420618 + 301)),
        Err(VerifyError::Stale(301))
    );
    assert_eq!(
        check(&v, &ok, None, SLACK_BODY.as_bytes(), at(1531420618 - 301)),
        Err(VerifyError::Stale(301))
    );
    assert_eq!(
        check(&v, &ok, None, SLACK_BODY.as_bytes(), at(1531420618 + 300)),
        Ok(())
    );
    let signed = sign(
        SignScheme::Slack,
        SLACK_SECRET,
        SLACK_BODY.as_bytes(),
        now,
        "",
    );
    assert_eq!(
        signed,
        [
            ("X-Slack-Request-Timestamp", SLACK_TS.to_owned()),
            ("X-Slack-Signature", SLACK_SIG.to_owned())
        ]
    );
}

#[test]
fn standard_webhooks_vectors() {
    let vectors = [
        (
            "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            "1614265330",
            r#"{"test": 2432232314}"#,
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=",
        ),
        (
            "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD",
            "msg_27UH4WbU6Z5A5EzD8u03UvzRbpk",
            "1649367553",
            r#"{"email":"test@example.com","username":"test_user"}"#,
            "v1,tZ1I4/hDygAJgO5TYxiSd6Sd0kDW6hPenDe+bTa3Kkw=",
        ),
    ];
    for (secret, id, ts, body, sig) in vectors {
        let v = Verifier::compile(&VerifyConfig::Standard {
            secret: one(secret),
            tolerance: None,
        })
        .unwrap();
        let now = at(ts.parse().unwrap());
        for prefix in ["webhook", "svix"] {
            let (hid, hts, hsig) = (
                format!("{prefix}-id"),
                format!("{prefix}-timestamp"),
                format!("{prefix}-signature"),
            );
            let h = |id: &str, ts: &str, sig: &str| {
                vec![
                    (hid.clone(), id.to_owned()),
                    (hts.clone(), ts.to_owned()),
                    (hsig.clone(), sig.to_owned()),
                ]
            };
            let run = |pairs: Vec<(String, String)>, body: &str, now| {
                let pairs: Vec<(&str, &str)> = pairs
                    .iter()
                    .map(|(k, v)| (k.as_str(), v.as_str()))
                    .collect();
                check(&v, &pairs, None, body.as_bytes(), now)
            };
            assert_eq!(run(h(id, ts, sig), body, now), Ok(()), "{prefix} {id}");
            assert_eq!(
                run(h(id, ts, sig), &flip(body, 2), now),
                Err(VerifyError::Mismatch)
            );
            assert_eq!(
                run(h(&flip(id, 1), ts, sig), body, now),
                Err(VerifyError::Mismatch)
            );
            let later = (ts.parse::<u64>().unwrap() + 1).to_string();
            assert_eq!(
                run(h(id, &later, sig), body, now),
                Err(VerifyError::Mismatch)
            );
            assert_eq!(
                run(h(id, ts, &flip(sig, 3)), body, now),
                Err(VerifyError::Mismatch)
            );
            // A list where the valid signature is second, with an unknown version first.
            assert_eq!(
                run(h(id, ts, &format!("v1,AAAA v2,xyz {sig}")), body, now),
                Ok(())
            );
            assert_eq!(
                run(h(id, ts, sig), body, at(ts.parse::<u64>().unwrap() + 301)),
                Err(VerifyError::Stale(301))
            );
            assert_eq!(
                run(h(id, ts, sig), body, at(ts.parse::<u64>().unwrap() - 301)),
                Err(VerifyError::Stale(301))
            );
        }
        let signed = sign(SignScheme::Standard, secret, body.as_bytes(), now, id);
        assert_eq!(signed[2], ("webhook-signature", sig.to_owned()));
    }
}

#[test]
fn shopify_vector() {
    let v = Verifier::compile(&VerifyConfig::Shopify {
        secret: one("test_secret_key"),
    })
    .unwrap();
    let now = SystemTime::now();
    let sig = "B23tXN681gZ0qIWNRrgtzBE9XSDo5yaUu6wfmhu3a7g=";
    assert_eq!(
        check(
            &v,
            &[("x-shopify-hmac-sha256", sig)],
            None,
            br#"{"foo": "bar"}"#,
            now
        ),
        Ok(())
    );
    assert_eq!(
        check(
            &v,
            &[("x-shopify-hmac-sha256", sig)],
            None,
            br#"{"foo": "baz"}"#,
            now
        ),
        Err(VerifyError::Mismatch)
    );
    assert_eq!(
        check(
            &v,
            &[("x-shopify-hmac-sha256", &flip(sig, 3))],
            None,
            br#"{"foo": "bar"}"#,
            now
        ),
        Err(VerifyError::Mismatch)
    );
    assert_eq!(
        check(&v, &[("x-shopify-hmac-sha256", "!!!")], None, b"x", now),
        Err(VerifyError::Malformed("x-shopify-hmac-sha256"))
    );
    assert_eq!(
        sign(
            SignScheme::Shopify,
            "test_secret_key",
            br#"{"foo": "bar"}"#,
            now,
            ""
        ),
        [("X-Shopify-Hmac-Sha256", sig.to_owned())]
    );
}

#[test]
fn stripe_round_trip_several_v1_and_tolerance() {
    let v = Verifier::compile(&VerifyConfig::Stripe {
        secret: one("whsec_test"),
        tolerance: Some("60s".parse().unwrap()),
    })
    .unwrap();
    let now = at(1_700_000_000);
    let body = br#"{"id":"evt_1","type":"charge.succeeded"}"#;
    let header = sign(SignScheme::Stripe, "whsec_test", body, now, "")[0]
        .1
        .clone();
    assert_eq!(
        check(&v, &[("stripe-signature", &header)], None, body, now),
        Ok(())
    );
    let (t, v1) = header.split_once(",v1=").unwrap();
    let two = format!("{t},v1={},v1={v1},v0=ignored", "ab".repeat(32));
    assert_eq!(
        check(&v, &[("stripe-signature", &two)], None, body, now),
        Ok(())
    );
    assert_eq!(
        check(&v, &[("stripe-signature", &header)], None, &body[1..], now),
        Err(VerifyError::Mismatch)
    );
    assert_eq!(
        check(
            &v,
            &[(
                "stripe-signature",
                &header.replace("t=1700000000", "t=1700000001")
            )],
            None,
            body,
            now
        ),
        Err(VerifyError::Mismatch)
    );
    assert_eq!(
        check(
            &v,
            &[("stripe-signature", &header)],
            None,
            body,
            at(1_700_000_061)
        ),
        Err(VerifyError::Stale(61))
    );
    assert_eq!(
        check(
            &v,
            &[("stripe-signature", &header)],
            None,
            body,
            at(1_699_999_939)
        ),
        Err(VerifyError::Stale(61))
    );
    assert_eq!(
        check(&v, &[("stripe-signature", "v1=abc")], None, body, now),
        Err(VerifyError::Malformed("stripe-signature"))
    );
}

#[test]
fn tokens_basic_and_generic_hmac() {
    let now = SystemTime::now();
    let gitlab = Verifier::compile(&VerifyConfig::Gitlab {
        token: OneOrMany(vec!["a1".into(), "b2".into()]),
    })
    .unwrap();
    assert_eq!(
        check(&gitlab, &[("x-gitlab-token", "b2")], None, b"", now),
        Ok(())
    );
    assert_eq!(
        check(&gitlab, &[("x-gitlab-token", "b3")], None, b"", now),
        Err(VerifyError::Mismatch)
    );
    let header = Verifier::compile(&VerifyConfig::Token {
        header: Some("X-Key".into()),
        query: None,
        value: one("k"),
    })
    .unwrap();
    assert_eq!(check(&header, &[("x-key", "k")], None, b"", now), Ok(()));
    assert_eq!(
        check(&header, &[("x-key", "kk")], None, b"", now),
        Err(VerifyError::Mismatch)
    );
    let query = Verifier::compile(&VerifyConfig::Token {
        header: None,
        query: Some("key".into()),
        value: one("a b"),
    })
    .unwrap();
    assert_eq!(check(&query, &[], Some("x=1&key=a+b"), b"", now), Ok(()));
    assert_eq!(
        check(&query, &[], Some("key=ab"), b"", now),
        Err(VerifyError::Mismatch)
    );
    assert_eq!(
        check(&query, &[], None, b"", now),
        Err(VerifyError::Missing("token query parameter"))
    );
    let basic = Verifier::compile(&VerifyConfig::Basic {
        username: "u".into(),
        password: "p:w".into(),
    })
    .unwrap();
    assert_eq!(
        check(
            &basic,
            &[("authorization", "Basic dTpwOnc=")],
            None,
            b"",
            now
        ),
        Ok(())
    );
    assert_eq!(
        check(
            &basic,
            &[("authorization", "Basic dTpwOng=")],
            None,
            b"",
            now
        ),
        Err(VerifyError::Mismatch)
    );
    assert_eq!(
        check(&basic, &[("authorization", "Bearer x")], None, b"", now),
        Err(VerifyError::Malformed("authorization"))
    );

    let body = b"payload";
    for (algorithm, encoding, prefix) in [
        (Algorithm::Sha1, Encoding::Hex, "sha1="),
        (Algorithm::Sha256, Encoding::Base64, ""),
        (Algorithm::Sha512, Encoding::Hex, ""),
        (Algorithm::Sha512, Encoding::Base64, "v1="),
    ] {
        let mac = mac_of(algorithm, b"s", &[body]);
        let encoded = match encoding {
            Encoding::Hex => hex::encode(&mac),
            Encoding::Base64 => B64.encode(&mac),
        };
        let v = Verifier::compile(&VerifyConfig::Hmac {
            header: "X-Sig".into(),
            algorithm: Some(algorithm),
            encoding: Some(encoding),
            prefix: Some(prefix.into()),
            secret: one("s"),
        })
        .unwrap();
        let sig = format!("{prefix}{encoded}");
        assert_eq!(
            check(&v, &[("x-sig", &sig)], None, body, now),
            Ok(()),
            "{algorithm:?} {encoding:?}"
        );
        assert_eq!(
            check(&v, &[("x-sig", &sig)], None, b"payloaD", now),
            Err(VerifyError::Mismatch)
        );
        assert!(check(&v, &[("x-sig", "\u{e9}garbage")], None, body, now).is_err());
    }
}

#[test]
fn bad_configs_are_load_errors() {
    assert!(
        Verifier::compile(&VerifyConfig::Standard {
            secret: one("whsec_not base64!"),
            tolerance: None
        })
        .unwrap_err()
        .contains("whsec_")
    );
    assert!(
        Verifier::compile(&VerifyConfig::Token {
            header: Some("a".into()),
            query: Some("b".into()),
            value: one("x")
        })
        .is_err()
    );
    assert!(
        Verifier::compile(&VerifyConfig::Token {
            header: None,
            query: None,
            value: one("x")
        })
        .is_err()
    );
    assert!(Verifier::compile(&VerifyConfig::Github { secret: one("") }).is_err());
}
