//! Request verification (SPEC §4.1, §8): the `verify:` schemes a source may
//! name, compiled once at load into a [`Verifier`] that checks a request's
//! raw body bytes and headers before anything is decoded. Every comparison is
//! constant-time, any secret of a list may match (key rotation), signed
//! timestamps are held to a tolerance in both directions, and no header value
//! — missing, non-UTF-8, bad hex or base64 — can make it panic.
//!
//! Each scheme has a file of its own (`github.rs` … `hmac.rs`): its headers,
//! what it prepares at load and its check. This module holds the rule-file
//! syntax, the compiled [`Verifier`] that hands a request to its scheme, and
//! what several schemes share: secret lists, signed timestamps, the errors.
//!
//! Also the matching signer ([`sign`]), so tests, `hookwire send` and
//! outgoing HTTP actions sign exactly as the providers do.

mod basic;
mod crypto;
mod github;
mod gitlab;
mod hmac;
mod shopify;
mod sign;
mod slack;
mod standard;
mod stripe;
mod token;

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::http::header::InvalidHeaderName;
use axum::http::{HeaderMap, HeaderName};
use serde::Deserialize;

use crate::config::{self, OneOrMany};
use crypto::Key;

pub use sign::{SignError, SignScheme, Signer, UnknownScheme, sign};

/// Signed timestamps further than this from now, either way, are replays
/// (or a clock badly off) unless the source sets its own `tolerance`.
const DEFAULT_TOLERANCE: Duration = Duration::from_secs(300);

/// `verify:` as written in a rule file: a map with exactly one scheme.
///
/// Every `secret`, `token` and `value` may be one string or a list; with a
/// list any entry may match, so a secret can be rotated without downtime.
/// `tolerance` (default `300s`) bounds how far a signed timestamp may be from
/// the receiving clock, in either direction.
// `deny_unknown_fields` on the enum applies to every struct variant (serde has
// no per-variant form), so a misspelt option is a load error in each scheme.
#[derive(Clone, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum VerifyConfig {
    /// GitHub: `X-Hub-Signature-256: sha256=<hex HMAC-SHA256 of the body>`.
    Github {
        /// The shared secret (or a list while rotating: any may match); write it as `${VAR}`.
        secret: OneOrMany<String>,
    },
    /// Stripe: `Stripe-Signature: t=<unix>,v1=<hex>[,v1=…]` over `{t}.{body}`.
    Stripe {
        /// The shared secret (or a list while rotating: any may match); write it as `${VAR}`.
        secret: OneOrMany<String>,
        /// How far a signed timestamp may be from this clock, either way; default `300s`.
        tolerance: Option<config::Duration>,
    },
    /// Slack: `X-Slack-Signature: v0=<hex>` over `v0:{X-Slack-Request-Timestamp}:{body}`.
    Slack {
        /// The shared secret (or a list while rotating: any may match); write it as `${VAR}`.
        secret: OneOrMany<String>,
        /// How far a signed timestamp may be from this clock, either way; default `300s`.
        tolerance: Option<config::Duration>,
    },
    /// Standard Webhooks (and Svix): `webhook-id`, `webhook-timestamp`,
    /// `webhook-signature: v1,<base64> …` over `{id}.{timestamp}.{body}`.
    /// The secret is the base64 key, usually after `whsec_`; padding is optional.
    Standard {
        /// The shared secret (or a list while rotating: any may match); write it as `${VAR}`.
        secret: OneOrMany<String>,
        /// How far a signed timestamp may be from this clock, either way; default `300s`.
        tolerance: Option<config::Duration>,
    },
    /// Shopify: `X-Shopify-Hmac-Sha256: <base64 HMAC-SHA256 of the body>`.
    Shopify {
        /// The shared secret (or a list while rotating: any may match); write it as `${VAR}`.
        secret: OneOrMany<String>,
    },
    /// GitLab: `X-Gitlab-Token` equals the token.
    Gitlab {
        /// The token GitLab sends (or a list: any may match); write it as `${VAR}`.
        token: OneOrMany<String>,
    },
    /// A shared token in the named `header` or `query` parameter (exactly one of them).
    Token {
        /// The header that carries the token.
        header: Option<String>,
        /// The query parameter that carries the token.
        query: Option<String>,
        /// The token (or a list: any may match); write it as `${VAR}`.
        value: OneOrMany<String>,
    },
    /// `Authorization: Basic …` with this username and password.
    Basic {
        /// The expected user name.
        username: String,
        /// The expected password; write it as `${VAR}`.
        password: String,
    },
    /// Any other HMAC of the raw body in a named header: `algorithm`
    /// (default `sha256`), `encoding` (default `hex`) and a `prefix` to strip
    /// (default none, e.g. `"sha1="`).
    Hmac {
        /// The header that carries the signature.
        header: String,
        /// `sha1`, `sha256` (default) or `sha512`.
        algorithm: Option<HmacAlgorithm>,
        /// `hex` (default) or `base64`.
        encoding: Option<Encoding>,
        /// Text before the signature to strip, e.g. `"sha1="`.
        prefix: Option<String>,
        /// The shared secret (or a list while rotating: any may match); write it as `${VAR}`.
        secret: OneOrMany<String>,
    },
}

impl VerifyConfig {
    /// The scheme's name as written in rule files.
    pub fn scheme_name(&self) -> &'static str {
        match self {
            VerifyConfig::Github { .. } => github::NAME,
            VerifyConfig::Stripe { .. } => stripe::NAME,
            VerifyConfig::Slack { .. } => slack::NAME,
            VerifyConfig::Standard { .. } => standard::NAME,
            VerifyConfig::Shopify { .. } => shopify::NAME,
            VerifyConfig::Gitlab { .. } => gitlab::NAME,
            VerifyConfig::Token { .. } => token::NAME,
            VerifyConfig::Basic { .. } => basic::NAME,
            VerifyConfig::Hmac { .. } => hmac::NAME,
        }
    }
}

/// Secrets stay out of logs (SPEC §8): only the scheme is shown.
impl fmt::Debug for VerifyConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VerifyConfig")
            .field("scheme", &self.scheme_name())
            .finish_non_exhaustive()
    }
}

/// The hash behind a generic `hmac` scheme.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum HmacAlgorithm {
    Sha1,
    Sha256,
    Sha512,
}

/// How a generic `hmac` signature is written in its header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Encoding {
    Hex,
    Base64,
}

/// Why a `verify:` block cannot be used. The text is a message for the rule
/// file's author; the caller adds the position. No variant quotes a secret.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// An empty secret is almost always an unset variable; it is refused
    /// rather than used to accept requests signed with an empty key.
    #[error("{scheme} `{field}` must not be empty")]
    Empty {
        scheme: &'static str,
        field: &'static str,
    },
    #[error("`{name}` is not a valid header name")]
    HeaderName {
        name: String,
        #[source]
        source: InvalidHeaderName,
    },
    #[error("the secret cannot be used as an HMAC key")]
    HmacKey,
    /// The base64 error is left out: it would quote a byte of the secret.
    #[error("standard secret must be base64 (padding optional), optionally after `whsec_`")]
    StandardSecret,
    #[error("token verification needs exactly one of `header` or `query`")]
    TokenHeaderOrQuery,
    /// Decoded credentials are split at the first `:` (RFC 7617).
    #[error("basic `username` must not contain `:`")]
    ColonInUsername,
}

/// Why a request was not verified. For logs only: the sender gets a bare 401.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("missing header `{0}`")]
    MissingHeader(HeaderName),
    #[error("missing query parameter `{0}`")]
    MissingQuery(String),
    #[error("malformed header `{0}`")]
    Malformed(HeaderName),
    /// `when` is `in the past` (a replay, or a queue that held it) or `in the
    /// future` (the sender's clock is ahead).
    #[error("signed timestamp is {skew_secs}s {when}; tolerance is {tolerance_secs}s")]
    Stale {
        skew_secs: u64,
        when: &'static str,
        tolerance_secs: u64,
    },
    #[error("signature or token does not match")]
    Mismatch,
}

/// What verification looks at: the request as received (raw headers, query
/// and body, before any decoding), and the clock.
pub struct Received<'a> {
    pub headers: &'a HeaderMap,
    /// The raw query string, without `?`.
    pub query: Option<&'a str>,
    pub body: &'a [u8],
    pub now: SystemTime,
}

impl<'a> Received<'a> {
    /// The first value of `name`, as bytes (a non-UTF-8 value is not an
    /// error here: it simply fails to match), with surrounding spaces removed.
    fn header(&self, name: &HeaderName) -> Result<&'a [u8], VerifyError> {
        self.headers
            .get(name)
            .map(|v| v.as_bytes().trim_ascii())
            .ok_or_else(|| VerifyError::MissingHeader(name.clone()))
    }
}

/// A compiled `verify:`: secrets decoded and HMAC keys prepared at load.
pub struct Verifier {
    scheme: Scheme,
}

enum Scheme {
    Github(github::Github),
    Stripe(stripe::Stripe),
    Slack(slack::Slack),
    Standard(standard::Standard),
    Shopify(shopify::Shopify),
    Gitlab(gitlab::Gitlab),
    Token(token::Token),
    Basic(basic::Basic),
    Hmac(hmac::Hmac),
}

/// Secrets stay out of logs (SPEC §8): only the scheme is shown.
impl fmt::Debug for Verifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Verifier")
            .field("scheme", &self.scheme_name())
            .finish_non_exhaustive()
    }
}

impl Verifier {
    /// Checks and prepares a `verify:` block.
    pub fn compile(config: &VerifyConfig) -> Result<Self, ConfigError> {
        let scheme = match config {
            VerifyConfig::Github { secret } => Scheme::Github(github::Github::compile(secret)?),
            VerifyConfig::Stripe { secret, tolerance } => {
                Scheme::Stripe(stripe::Stripe::compile(secret, or_default(tolerance))?)
            }
            VerifyConfig::Slack { secret, tolerance } => {
                Scheme::Slack(slack::Slack::compile(secret, or_default(tolerance))?)
            }
            VerifyConfig::Standard { secret, tolerance } => {
                Scheme::Standard(standard::Standard::compile(secret, or_default(tolerance))?)
            }
            VerifyConfig::Shopify { secret } => Scheme::Shopify(shopify::Shopify::compile(secret)?),
            VerifyConfig::Gitlab { token } => Scheme::Gitlab(gitlab::Gitlab::compile(token)?),
            VerifyConfig::Token {
                header,
                query,
                value,
            } => Scheme::Token(token::Token::compile(
                header.as_deref(),
                query.as_deref(),
                value,
            )?),
            VerifyConfig::Basic { username, password } => {
                Scheme::Basic(basic::Basic::compile(username, password)?)
            }
            VerifyConfig::Hmac {
                header,
                algorithm,
                encoding,
                prefix,
                secret,
            } => Scheme::Hmac(hmac::Hmac::compile(
                header,
                *algorithm,
                *encoding,
                prefix.as_deref(),
                secret,
            )?),
        };
        Ok(Self { scheme })
    }

    /// The scheme's name as written in rule files.
    pub fn scheme_name(&self) -> &'static str {
        match self.scheme {
            Scheme::Github(_) => github::NAME,
            Scheme::Stripe(_) => stripe::NAME,
            Scheme::Slack(_) => slack::NAME,
            Scheme::Standard(_) => standard::NAME,
            Scheme::Shopify(_) => shopify::NAME,
            Scheme::Gitlab(_) => gitlab::NAME,
            Scheme::Token(_) => token::NAME,
            Scheme::Basic(_) => basic::NAME,
            Scheme::Hmac(_) => hmac::NAME,
        }
    }

    /// `Ok` when the request carries what the scheme asks for.
    pub fn verify(&self, req: &Received<'_>) -> Result<(), VerifyError> {
        match &self.scheme {
            Scheme::Github(s) => s.verify(req),
            Scheme::Stripe(s) => s.verify(req),
            Scheme::Slack(s) => s.verify(req),
            Scheme::Standard(s) => s.verify(req),
            Scheme::Shopify(s) => s.verify(req),
            Scheme::Gitlab(s) => s.verify(req),
            Scheme::Token(s) => s.verify(req),
            Scheme::Basic(s) => s.verify(req),
            Scheme::Hmac(s) => s.verify(req),
        }
    }
}

fn verdict(matched: bool) -> Result<(), VerifyError> {
    if matched {
        Ok(())
    } else {
        Err(VerifyError::Mismatch)
    }
}

/// Checks a signed Unix timestamp against `now`. `Err(None)` means it is not
/// a number; the caller knows which header that was.
fn check_timestamp(
    ts: &[u8],
    now: SystemTime,
    tolerance: Duration,
) -> Result<(), Option<VerifyError>> {
    let t: i64 = std::str::from_utf8(ts)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or(None)?;
    let age = i128::from(unix_secs(now)) - i128::from(t);
    let skew = age.unsigned_abs();
    let tolerance_secs = tolerance.as_secs();
    if skew > u128::from(tolerance_secs) {
        return Err(Some(VerifyError::Stale {
            skew_secs: u64::try_from(skew).unwrap_or(u64::MAX),
            when: if age < 0 {
                "in the future"
            } else {
                "in the past"
            },
            tolerance_secs,
        }));
    }
    Ok(())
}

/// Seconds since the Unix epoch, negative before it.
fn unix_secs(now: SystemTime) -> i64 {
    match now.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_secs()).unwrap_or(i64::MAX),
    }
}

fn or_default(tolerance: &Option<config::Duration>) -> Duration {
    tolerance.map_or(DEFAULT_TOLERANCE, config::Duration::get)
}

/// The list, unless it is empty or holds an empty string (see
/// [`ConfigError::Empty`]).
fn non_empty<'c>(
    scheme: &'static str,
    field: &'static str,
    values: &'c OneOrMany<String>,
) -> Result<&'c [String], ConfigError> {
    let values = values.as_slice();
    if values.is_empty() || values.iter().any(String::is_empty) {
        return Err(ConfigError::Empty { scheme, field });
    }
    Ok(values)
}

/// Tokens compared as they are written.
fn plain(
    scheme: &'static str,
    field: &'static str,
    values: &OneOrMany<String>,
) -> Result<Vec<Box<[u8]>>, ConfigError> {
    Ok(non_empty(scheme, field, values)?
        .iter()
        .map(|s| s.as_bytes().into())
        .collect())
}

/// HMAC-SHA256 keys from `secrets`, each used as its raw bytes.
fn hmac_keys(scheme: &'static str, secrets: &OneOrMany<String>) -> Result<Vec<Key>, ConfigError> {
    non_empty(scheme, "secret", secrets)?
        .iter()
        .map(|s| prepare(HmacAlgorithm::Sha256, s.as_bytes()))
        .collect()
}

fn prepare(algorithm: HmacAlgorithm, secret: &[u8]) -> Result<Key, ConfigError> {
    Key::new(algorithm, secret).ok_or(ConfigError::HmacKey)
}

fn header_name(name: &str) -> Result<HeaderName, ConfigError> {
    // `from_bytes` lowercases, so lookups need no case folding per request.
    HeaderName::from_bytes(name.as_bytes()).map_err(|source| ConfigError::HeaderName {
        name: name.to_owned(),
        source,
    })
}

#[cfg(test)]
mod testing;
#[cfg(test)]
mod vectors;

/// What holds across schemes: timestamps, secret lists, missing and garbage
/// headers, configuration errors, the rule-file syntax and `Debug`.
#[cfg(test)]
mod tests {
    use std::time::Duration;

    use axum::http::HeaderName;

    use super::slack::X_SLACK_SIGNATURE;
    use super::testing::*;
    use super::vectors::*;
    use super::*;

    #[test]
    fn timestamps_hold_to_the_tolerance_both_ways() {
        const T: u64 = 1_700_000_000;
        let (std_secret, std_id, ..) = STANDARD[0];
        let cases = [
            (
                stripe(&["sk"]),
                Req::signed(
                    sign(SignScheme::Stripe, "sk", b"x", at(T), "").unwrap(),
                    "x",
                    at(T),
                ),
            ),
            (
                slack(&["sk"]),
                Req::signed(
                    sign(SignScheme::Slack, "sk", b"x", at(T), "").unwrap(),
                    "x",
                    at(T),
                ),
            ),
            (
                standard(&[std_secret]),
                Req::signed(
                    sign(SignScheme::Standard, std_secret, b"x", at(T), std_id).unwrap(),
                    "x",
                    at(T),
                ),
            ),
        ];
        let stale = |skew_secs, when| {
            Err(VerifyError::Stale {
                skew_secs,
                when,
                tolerance_secs: 300,
            })
        };
        for (v, req) in &cases {
            for (now, expected) in [
                (T - 300, Ok(())),
                (T + 300, Ok(())),
                (T - 301, stale(301, "in the future")),
                (T + 301, stale(301, "in the past")),
                (0, stale(T, "in the future")),
            ] {
                let mut r = req.clone();
                r.now = at(now);
                assert_eq!(r.check(v), expected, "{} at {now}", v.scheme_name());
            }
        }

        assert_eq!(
            stale(301, "in the future").unwrap_err().to_string(),
            "signed timestamp is 301s in the future; tolerance is 300s"
        );

        // The Slack vector itself, 301 s either side.
        let ts = SLACK_TS.to_string();
        for now in [SLACK_TS - 301, SLACK_TS + 301] {
            let req = Req::new(
                &[
                    ("x-slack-request-timestamp", &ts),
                    ("x-slack-signature", SLACK_SIG),
                ],
                SLACK_BODY,
                at(now),
            );
            let when = if now < SLACK_TS {
                "in the future"
            } else {
                "in the past"
            };
            assert_eq!(
                req.check(&slack(&[SLACK_SECRET])),
                stale(301, when),
                "{now}"
            );
        }
    }

    #[test]
    fn a_custom_tolerance_replaces_the_default() {
        let v = compile(VerifyConfig::Slack {
            secret: secrets(&["s"]),
            tolerance: Some("10s".parse().unwrap()),
        });
        let mut req = Req::signed(
            sign(SignScheme::Slack, "s", b"x", at(1000), "").unwrap(),
            "x",
            at(1010),
        );
        assert_eq!(req.check(&v), Ok(()));
        req.now = at(1011);
        assert!(matches!(req.check(&v), Err(VerifyError::Stale { .. })));
    }

    #[test]
    fn any_secret_of_a_list_may_match() {
        let now = at(1_700_000_000);
        let (std_old, ..) = STANDARD[1];
        let (std_new, id, ..) = STANDARD[0];
        let by =
            |scheme, secret| Req::signed(sign(scheme, secret, b"b", now, id).unwrap(), "b", now);
        let github_sig = &by(SignScheme::Github, "new").headers[0].1;
        let hex = std::str::from_utf8(&github_sig[7..]).unwrap().to_owned();
        let cases = [
            (
                github(&["old", "new"]),
                github(&["old"]),
                by(SignScheme::Github, "new"),
            ),
            (
                stripe(&["old", "new"]),
                stripe(&["old"]),
                by(SignScheme::Stripe, "new"),
            ),
            (
                slack(&["old", "new"]),
                slack(&["old"]),
                by(SignScheme::Slack, "new"),
            ),
            (
                standard(&[std_old, std_new]),
                standard(&[std_old]),
                by(SignScheme::Standard, std_new),
            ),
            (
                shopify(&["old", "new"]),
                shopify(&["old"]),
                by(SignScheme::Shopify, "new"),
            ),
            (
                gitlab(&["old", "new"]),
                gitlab(&["old"]),
                by(SignScheme::Gitlab, "new"),
            ),
            (
                hmac(None, None, None, &["old", "new"]),
                hmac(None, None, None, &["old"]),
                Req::new(&[("x-signature", &hex)], "b", now),
            ),
        ];
        for (both, old_only, req) in &cases {
            let name = both.scheme_name();
            assert_eq!(req.check(both), Ok(()), "{name}: second secret matches");
            assert_eq!(
                req.check(old_only),
                Err(VerifyError::Mismatch),
                "{name}: old alone"
            );
        }
    }

    #[test]
    fn missing_headers_fail() {
        let (std_secret, ..) = STANDARD[0];
        let basic = compile(VerifyConfig::Basic {
            username: "u".into(),
            password: "p".into(),
        });
        let cases = [
            (github(&["s"]), "x-hub-signature-256"),
            (stripe(&["s"]), "stripe-signature"),
            (slack(&["s"]), "x-slack-request-timestamp"),
            (standard(&[std_secret]), "webhook-id"),
            (shopify(&["s"]), "x-shopify-hmac-sha256"),
            (gitlab(&["s"]), "x-gitlab-token"),
            (hmac(None, None, None, &["s"]), "x-signature"),
            (basic, "authorization"),
        ];
        for (v, header) in &cases {
            let req = Req::new(&[("content-type", "application/json")], "{}", at(0));
            assert_eq!(
                req.check(v),
                Err(VerifyError::MissingHeader(HeaderName::from_static(header))),
                "{}",
                v.scheme_name()
            );
        }

        // Half of a set is as good as none.
        let ts = SLACK_TS.to_string();
        let req = Req::new(
            &[("x-slack-request-timestamp", &ts)],
            SLACK_BODY,
            at(SLACK_TS),
        );
        assert_eq!(
            req.check(&slack(&[SLACK_SECRET])),
            Err(VerifyError::MissingHeader(X_SLACK_SIGNATURE.clone()))
        );
        let req = Req::new(
            &[("svix-id", "msg_1"), ("svix-timestamp", "0")],
            "{}",
            at(0),
        );
        assert_eq!(
            req.check(&standard(&[std_secret])),
            Err(VerifyError::MissingHeader(HeaderName::from_static(
                "svix-signature"
            )))
        );
    }

    #[test]
    fn garbage_header_values_fail_without_panicking() {
        let (std_secret, ..) = STANDARD[0];
        let token = compile(VerifyConfig::Token {
            header: Some("X-Token".into()),
            query: None,
            value: secrets(&["t"]),
        });
        let basic = compile(VerifyConfig::Basic {
            username: "u".into(),
            password: "p".into(),
        });
        let sha512 = |encoding| {
            hmac(
                Some(HmacAlgorithm::Sha512),
                Some(encoding),
                Some("sha512="),
                &["s"],
            )
        };
        let cases: [(Verifier, &[&str]); 10] = [
            (github(&["s"]), &["x-hub-signature-256"]),
            (stripe(&["s"]), &["stripe-signature"]),
            (
                slack(&["s"]),
                &["x-slack-request-timestamp", "x-slack-signature"],
            ),
            (
                standard(&[std_secret]),
                &["webhook-id", "webhook-timestamp", "webhook-signature"],
            ),
            (shopify(&["s"]), &["x-shopify-hmac-sha256"]),
            (gitlab(&["s"]), &["x-gitlab-token"]),
            (sha512(Encoding::Hex), &["x-signature"]),
            (sha512(Encoding::Base64), &["x-signature"]),
            (token, &["x-token"]),
            (basic, &["authorization"]),
        ];
        let long_hex = format!("sha256={}", "ab".repeat(5000));
        let garbage: [&[u8]; 19] = [
            b"",
            b" ",
            b"sha256=zz",
            b"sha256=",
            b"sha256=abc",
            long_hex.as_bytes(),
            b"v0=\xff\xfe",
            b"\xe9t\xe9",
            b"t=,v1=",
            b"t=99999999999999999999999,v1=00",
            b"t=-9223372036854775808,v1=00",
            b"t=1,v1=00,v1=\x80",
            b"v1,==== v1,",
            b"Basic",
            b"Basic !!!",
            b"Basic \xff",
            b"sha512=====",
            b"-9223372036854775808",
            b"18446744073709551616",
        ];
        for (v, names) in &cases {
            // The junk goes into each header the scheme reads, then into all
            // of them; the others hold a plausible value.
            let mut targets: Vec<&[&str]> = names.chunks(1).collect();
            targets.push(names);
            for junk in garbage {
                for target in &targets {
                    let pairs: Vec<(&str, &[u8])> = names
                        .iter()
                        .map(|n| (*n, if target.contains(n) { junk } else { b"1" }))
                        .collect();
                    let result = v.verify(&Received {
                        headers: &headers(&pairs),
                        query: None,
                        body: b"{}",
                        now: at(1),
                    });
                    assert!(result.is_err(), "{} {target:?} = {junk:?}", v.scheme_name());
                }
            }
        }
    }

    #[test]
    fn compile_refuses_unusable_configs() {
        let token = |header: Option<&str>, query: Option<&str>| VerifyConfig::Token {
            header: header.map(str::to_owned),
            query: query.map(str::to_owned),
            value: secrets(&["v"]),
        };
        let standard = |list: &[&str]| VerifyConfig::Standard {
            secret: secrets(list),
            tolerance: None,
        };
        let whsec = "standard secret must be base64 (padding optional), optionally after `whsec_`";
        let one_of = "token verification needs exactly one of `header` or `query`";
        let cases = [
            (standard(&["whsec_not base64!"]), whsec),
            (standard(&["whsec_"]), whsec),
            (standard(&[""]), "standard `secret` must not be empty"),
            (standard(&[STANDARD[0].0, "whsec_%%"]), whsec),
            // One character past a multiple of four is never base64.
            (standard(&["whsec_MfKQ9"]), whsec),
            (standard(&["a"]), whsec),
            (standard(&["whsec_MfKQ9r8G KYqrTwjU"]), whsec),
            // Base64url is not what the libraries decode.
            (standard(&["whsec_Mf-Q9r8GKYqrTwjUPD8ILPZIo2LaLaSw"]), whsec),
            (standard(&["wh sec_MfKQ"]), whsec),
            (token(Some("x-t"), Some("t")), one_of),
            (token(None, None), one_of),
            (token(None, Some("")), "token `query` must not be empty"),
            (
                token(Some("bad header"), None),
                "`bad header` is not a valid header name",
            ),
            (
                VerifyConfig::Github {
                    secret: secrets(&[""]),
                },
                "github `secret` must not be empty",
            ),
            (
                VerifyConfig::Github {
                    secret: secrets(&[]),
                },
                "github `secret` must not be empty",
            ),
            (
                VerifyConfig::Shopify {
                    secret: secrets(&["a", ""]),
                },
                "shopify `secret` must not be empty",
            ),
            (
                VerifyConfig::Gitlab {
                    token: secrets(&[""]),
                },
                "gitlab `token` must not be empty",
            ),
            (
                VerifyConfig::Basic {
                    username: "a:b".into(),
                    password: "p".into(),
                },
                "basic `username` must not contain `:`",
            ),
            (
                VerifyConfig::Basic {
                    username: "a".into(),
                    password: "".into(),
                },
                "basic `password` must not be empty",
            ),
            (
                VerifyConfig::Hmac {
                    header: "".into(),
                    algorithm: None,
                    encoding: None,
                    prefix: None,
                    secret: secrets(&["s"]),
                },
                "`` is not a valid header name",
            ),
        ];
        for (config, message) in cases {
            assert_eq!(Verifier::compile(&config).unwrap_err().to_string(), message);
        }
    }

    #[test]
    fn rule_file_syntax_deserializes_and_rejects_unknown_fields() {
        let parse = serde_json::from_str::<VerifyConfig>;
        let v = parse(r#"{"github": {"secret": "s"}}"#).unwrap();
        assert!(matches!(v, VerifyConfig::Github { ref secret } if secret.0 == ["s"]));
        let v = parse(r#"{"stripe": {"secret": ["a", "b"], "tolerance": "10m"}}"#).unwrap();
        assert!(
            matches!(v, VerifyConfig::Stripe { ref secret, tolerance: Some(t) }
            if secret.0 == ["a", "b"] && t.get() == Duration::from_secs(600))
        );
        let v = parse(
            r#"{"hmac": {"header": "X-S", "algorithm": "sha512", "encoding": "base64", "prefix": "p=", "secret": "s"}}"#,
        )
        .unwrap();
        assert!(matches!(
            v,
            VerifyConfig::Hmac {
                algorithm: Some(HmacAlgorithm::Sha512),
                encoding: Some(Encoding::Base64),
                ..
            }
        ));
        for bad in [
            r#"{"github": {"secret": "s", "tolerance": "5s"}}"#,
            r#"{"slack": {"secrets": "s"}}"#,
            r#"{"token": {"header": "x", "value": "v", "values": "w"}}"#,
            r#"{"basic": {"username": "u", "password": "p", "realm": "r"}}"#,
            r#"{"hmac": {"header": "x", "secret": "s", "algorithm": "md5"}}"#,
            r#"{"gitlab": {"secret": "s"}}"#,
            r#"{"twitter": {"secret": "s"}}"#,
            r#"{"github": {"secret": []}}"#,
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn debug_output_never_shows_secrets() {
        let config = VerifyConfig::Basic {
            username: "user".into(),
            password: "hunter2".into(),
        };
        let compiled = Verifier::compile(&config).unwrap();
        for text in [
            format!("{config:?}"),
            format!("{compiled:?}"),
            format!("{:?}", github(&["hunter2"])),
        ] {
            assert!(!text.contains("hunter2"), "{text}");
        }
    }
}
