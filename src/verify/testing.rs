//! What the verify tests share: verifiers compiled from a secret list, and
//! requests described as owned header pairs that a test can tamper with.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::http::{HeaderMap, HeaderName, HeaderValue};

use super::{Encoding, HmacAlgorithm, OneOrMany, Received, Verifier, VerifyConfig, VerifyError};

pub(super) fn at(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(secs)
}

pub(super) fn headers(pairs: &[(&str, &[u8])]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (k, v) in pairs {
        map.append(
            HeaderName::from_bytes(k.as_bytes()).unwrap(),
            HeaderValue::from_bytes(v).unwrap(),
        );
    }
    map
}

pub(super) fn secrets(list: &[&str]) -> OneOrMany<String> {
    OneOrMany(list.iter().map(|s| s.to_string()).collect())
}

pub(super) fn compile(config: VerifyConfig) -> Verifier {
    Verifier::compile(&config).unwrap()
}

pub(super) fn github(list: &[&str]) -> Verifier {
    compile(VerifyConfig::Github {
        secret: secrets(list),
    })
}

pub(super) fn stripe(list: &[&str]) -> Verifier {
    compile(VerifyConfig::Stripe {
        secret: secrets(list),
        tolerance: None,
    })
}

pub(super) fn slack(list: &[&str]) -> Verifier {
    compile(VerifyConfig::Slack {
        secret: secrets(list),
        tolerance: None,
    })
}

pub(super) fn standard(list: &[&str]) -> Verifier {
    compile(VerifyConfig::Standard {
        secret: secrets(list),
        tolerance: None,
    })
}

pub(super) fn shopify(list: &[&str]) -> Verifier {
    compile(VerifyConfig::Shopify {
        secret: secrets(list),
    })
}

pub(super) fn gitlab(list: &[&str]) -> Verifier {
    compile(VerifyConfig::Gitlab {
        token: secrets(list),
    })
}

pub(super) fn hmac(
    algorithm: Option<HmacAlgorithm>,
    encoding: Option<Encoding>,
    prefix: Option<&str>,
    list: &[&str],
) -> Verifier {
    compile(VerifyConfig::Hmac {
        header: "X-Signature".into(),
        algorithm,
        encoding,
        prefix: prefix.map(str::to_owned),
        secret: secrets(list),
    })
}

/// A request as the tests describe it: owned header pairs, so a test can
/// change one byte of any of them.
#[derive(Clone)]
pub(super) struct Req {
    pub(super) headers: Vec<(String, Vec<u8>)>,
    pub(super) query: Option<String>,
    pub(super) body: Vec<u8>,
    pub(super) now: SystemTime,
}

impl Req {
    pub(super) fn new(pairs: &[(&str, &str)], body: &str, now: SystemTime) -> Self {
        Req {
            headers: pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec()))
                .collect(),
            query: None,
            body: body.as_bytes().to_vec(),
            now,
        }
    }

    /// The request `sign` describes for `body`, received at `now`.
    pub(super) fn signed(pairs: Vec<(&'static str, String)>, body: &str, now: SystemTime) -> Self {
        Req {
            headers: pairs
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v.into_bytes()))
                .collect(),
            query: None,
            body: body.as_bytes().to_vec(),
            now,
        }
    }

    pub(super) fn check(&self, v: &Verifier) -> Result<(), VerifyError> {
        let pairs: Vec<(&str, &[u8])> = self
            .headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_slice()))
            .collect();
        v.verify(&Received {
            headers: &headers(&pairs),
            query: self.query.as_deref(),
            body: &self.body,
            now: self.now,
        })
    }

    fn header_mut(&mut self, name: &str) -> &mut Vec<u8> {
        &mut self
            .headers
            .iter_mut()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .unwrap_or_else(|| panic!("no header {name}"))
            .1
    }
}

/// Changes the byte at `i` to another of the same kind (digit, hex digit,
/// letter, base64 symbol), so the value stays well-formed and only the
/// signature check can catch the change.
fn flip(bytes: &mut [u8], i: usize) {
    bytes[i] = match bytes[i] {
        b'9' => b'0',
        b'f' => b'a',
        b'z' => b'g',
        b'Z' => b'A',
        b'+' => b'/',
        b'/' => b'+',
        b @ (b'0'..=b'8' | b'a'..=b'e' | b'g'..=b'y' | b'A'..=b'Y') => b + 1,
        other => other ^ 1,
    };
}

/// Where to change a byte.
#[derive(Clone, Copy)]
pub(super) enum At {
    /// The middle of the value: inside the signature text, never padding.
    Middle,
    /// The last byte: for a timestamp, one second off, well within tolerance.
    Last,
    /// The last digit of the first number (Stripe's `t=`).
    EndOfFirstNumber,
}

fn position(bytes: &[u8], at: At) -> usize {
    match at {
        At::Middle => bytes.len() / 2,
        At::Last => bytes.len() - 1,
        At::EndOfFirstNumber => {
            let start = bytes.iter().position(u8::is_ascii_digit).unwrap();
            start
                + bytes[start..]
                    .iter()
                    .take_while(|b| b.is_ascii_digit())
                    .count()
                - 1
        }
    }
}

/// The request verifies; a one-byte change to the body or to any listed
/// header fails the signature check itself (`Mismatch`, not a parse or
/// tolerance error), so the signature demonstrably covers that part.
pub(super) fn assert_verifies_and_tamper_fails(
    label: &str,
    v: &Verifier,
    req: &Req,
    parts: &[(&str, At)],
) {
    assert_eq!(req.check(v), Ok(()), "{label}: untouched");

    for at in [At::Middle, At::Last] {
        let mut r = req.clone();
        let i = position(&r.body, at);
        flip(&mut r.body, i);
        assert_eq!(r.check(v), Err(VerifyError::Mismatch), "{label}: body[{i}]");
    }

    for &(name, at) in parts {
        let mut r = req.clone();
        let value = r.header_mut(name);
        let i = position(value, at);
        flip(value, i);
        assert_eq!(
            r.check(v),
            Err(VerifyError::Mismatch),
            "{label}: {name}[{i}]"
        );
    }
}
