//! Signature checks of every `verify:` scheme on fuzz-chosen requests.
//!
//! Input, like an HTTP message: `name: value` header lines up to the first
//! empty line, then the body. Three pseudo-headers steer the run:
//! `?…` is the query string, `@now: SECONDS` the receiving clock (may be
//! negative; default a fixed time), and `#secret: S` a secret with which every
//! scheme is also compiled, and for which `sign` followed by `verify` must
//! succeed. Verification may refuse anything; it must never panic.
#![no_main]

use std::str::FromStr;
use std::sync::LazyLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hookwire::config::{self, OneOrMany};
use hookwire::verify::{
    Encoding, HmacAlgorithm, Received, SignScheme, Signer, Verifier, VerifyConfig,
};
use http::{HeaderMap, HeaderName, HeaderValue};
use libfuzzer_sys::fuzz_target;

/// The Standard Webhooks test vector's secret.
const WHSEC: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

fn many(values: &[&str]) -> OneOrMany<String> {
    OneOrMany(values.iter().map(|s| (*s).to_owned()).collect())
}

fn tolerance(secs: u64) -> Option<config::Duration> {
    Some(config::Duration::from_secs(secs))
}

/// One configuration per scheme and option, all with the given secret.
fn configs(secret: &str, header: &str) -> Vec<VerifyConfig> {
    let s = || many(&[secret]);
    let mut out = vec![
        VerifyConfig::Github { secret: s() },
        VerifyConfig::Stripe {
            secret: s(),
            tolerance: None,
        },
        VerifyConfig::Slack {
            secret: s(),
            tolerance: tolerance(u64::MAX / 2),
        },
        VerifyConfig::Standard {
            secret: s(),
            tolerance: tolerance(0),
        },
        VerifyConfig::Shopify { secret: s() },
        VerifyConfig::Gitlab { token: s() },
        VerifyConfig::Token {
            header: Some(header.to_owned()),
            query: None,
            value: s(),
        },
        VerifyConfig::Token {
            header: None,
            query: Some(header.to_owned()),
            value: s(),
        },
        VerifyConfig::Basic {
            username: "user".to_owned(),
            password: secret.to_owned(),
        },
    ];
    for algorithm in [
        HmacAlgorithm::Sha1,
        HmacAlgorithm::Sha256,
        HmacAlgorithm::Sha512,
    ] {
        for encoding in [Encoding::Hex, Encoding::Base64] {
            out.push(VerifyConfig::Hmac {
                header: header.to_owned(),
                algorithm: Some(algorithm),
                encoding: Some(encoding),
                prefix: Some("sha=".to_owned()),
                secret: s(),
            });
        }
    }
    out.push(VerifyConfig::Hmac {
        header: header.to_owned(),
        algorithm: None,
        encoding: None,
        prefix: None,
        secret: many(&[secret, "second-secret"]),
    });
    out
}

/// Verifiers with known secrets: every scheme, and rotation lists.
static FIXED: LazyLock<Vec<Verifier>> = LazyLock::new(|| {
    let mut configs = configs("It's a Secret to Everybody", "x-signature");
    configs.push(VerifyConfig::Standard {
        secret: many(&[WHSEC, "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD"]),
        tolerance: None,
    });
    configs.push(VerifyConfig::Stripe {
        secret: many(&["whsec_a", "whsec_b"]),
        tolerance: tolerance(1),
    });
    configs
        .iter()
        .filter_map(|c| match Verifier::compile(c) {
            Ok(v) => Some(v),
            // Only a `whsec_` secret is a standard one.
            Err(_) if c.scheme_name() == "standard" => None,
            Err(e) => panic!("{c:?}: {e}"),
        })
        .collect()
});

struct Parsed<'a> {
    headers: HeaderMap,
    query: Option<&'a str>,
    now: Option<i64>,
    secret: Option<&'a str>,
    body: &'a [u8],
}

fn parse(data: &[u8]) -> Parsed<'_> {
    let mut p = Parsed {
        headers: HeaderMap::new(),
        query: None,
        now: None,
        secret: None,
        body: &[],
    };
    let mut rest = data;
    loop {
        let (line, after) = match rest.iter().position(|&b| b == b'\n') {
            Some(i) => (&rest[..i], &rest[i + 1..]),
            None => (rest, &[][..]),
        };
        rest = after;
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            break;
        }
        if let Some(q) = line.strip_prefix(b"?") {
            p.query = std::str::from_utf8(q).ok();
        } else if let Some(n) = line.strip_prefix(b"@now: ") {
            p.now = std::str::from_utf8(n).ok().and_then(|n| n.parse().ok());
        } else if let Some(s) = line.strip_prefix(b"#secret: ") {
            p.secret = std::str::from_utf8(s).ok();
        } else if let Some(colon) = line.iter().position(|&b| b == b':') {
            let value = line[colon + 1..]
                .strip_prefix(b" ")
                .unwrap_or(&line[colon + 1..]);
            if let (Ok(name), Ok(value)) = (
                HeaderName::from_bytes(&line[..colon]),
                HeaderValue::from_bytes(value),
            ) {
                p.headers.append(name, value);
            }
        }
        if rest.is_empty() {
            break;
        }
    }
    p.body = rest;
    p
}

fn time(secs: i64) -> SystemTime {
    let t = if secs >= 0 {
        UNIX_EPOCH.checked_add(Duration::from_secs(secs.unsigned_abs()))
    } else {
        UNIX_EPOCH.checked_sub(Duration::from_secs(secs.unsigned_abs()))
    };
    t.unwrap_or(UNIX_EPOCH)
}

fuzz_target!(|data: &[u8]| {
    let p = parse(data);
    let now = time(p.now.unwrap_or(1_614_265_330));
    for when in [now, UNIX_EPOCH, time(i64::MAX), time(i64::MIN)] {
        let req = Received {
            headers: &p.headers,
            query: p.query,
            body: p.body,
            now: when,
        };
        for v in FIXED.iter() {
            let _ = v.verify(&req).map_err(|e| e.to_string());
        }
    }

    let Some(secret) = p.secret else {
        return;
    };
    let req = Received {
        headers: &p.headers,
        query: p.query,
        body: p.body,
        now,
    };
    for config in configs(secret, "x-signature") {
        if let Ok(v) = Verifier::compile(&config) {
            let _ = v.verify(&req);
        }
    }

    // One function reads a standard secret for both: they agree on which
    // secrets are usable, so neither can fall back to a key the other lacks.
    let standard = VerifyConfig::Standard {
        secret: many(&[secret]),
        tolerance: None,
    };
    assert_eq!(
        Verifier::compile(&standard).is_ok(),
        Signer::new(SignScheme::Standard, secret).is_ok(),
        "standard secret {secret:?}"
    );

    // What `sign` writes, `verify` accepts: for every secret `Signer::new`
    // takes, and any body. (Header values have no surrounding spaces, so a
    // secret sent as a token must have none either; before 1970 `sign` writes 0.)
    if now < UNIX_EPOCH {
        return;
    }
    for scheme in SignScheme::ALL {
        let Ok(signer) = Signer::new(scheme, secret) else {
            continue;
        };
        if scheme == SignScheme::Gitlab && secret.trim_ascii() != secret {
            continue;
        }
        let signed = signer.sign(p.body, now, "msg_fuzz");
        let mut headers = HeaderMap::new();
        let mut valid = true;
        for (name, value) in &signed {
            match HeaderValue::from_str(value) {
                Ok(v) => {
                    headers.append(HeaderName::from_static(name), v);
                }
                Err(_) => valid = false,
            }
        }
        if !valid {
            continue;
        }
        let config = match scheme {
            SignScheme::Github => VerifyConfig::Github {
                secret: many(&[secret]),
            },
            SignScheme::Stripe => VerifyConfig::Stripe {
                secret: many(&[secret]),
                tolerance: None,
            },
            SignScheme::Slack => VerifyConfig::Slack {
                secret: many(&[secret]),
                tolerance: None,
            },
            SignScheme::Standard => VerifyConfig::Standard {
                secret: many(&[secret]),
                tolerance: None,
            },
            SignScheme::Shopify => VerifyConfig::Shopify {
                secret: many(&[secret]),
            },
            SignScheme::Gitlab => VerifyConfig::Gitlab {
                token: many(&[secret]),
            },
        };
        let verifier = Verifier::compile(&config).unwrap_or_else(|e| {
            panic!("{scheme}: Signer::new accepted a secret compile refuses: {e}")
        });
        let req = Received {
            headers: &headers,
            query: None,
            body: p.body,
            now,
        };
        if let Err(e) = verifier.verify(&req) {
            panic!("{scheme}: verify refused what sign wrote: {e}; headers {signed:?}");
        }
        assert_eq!(SignScheme::from_str(scheme.name()), Ok(scheme));
    }
});
