//! Request verification (SPEC §4.1, §8): the `verify:` schemes a source may
//! name, compiled once at load into a [`Verifier`] that checks a request's
//! raw body bytes and headers before anything is decoded. Every comparison is
//! constant-time, any secret of a list may match (key rotation), signed
//! timestamps are held to a tolerance in both directions, and no header value
//! — missing, non-UTF-8, bad hex or base64 — can make it panic.
//!
//! Also the matching signer ([`sign`]), so tests, `hookwire send` and
//! outgoing HTTP actions sign exactly as the providers do.

mod crypto;
mod sign;

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::http::{HeaderMap, HeaderName, header::AUTHORIZATION};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde::Deserialize;
use subtle::ConstantTimeEq;

use crate::config::{self, OneOrMany};
use crypto::{Key, Sig, equals_any, signed_by_any};

pub use sign::{SignScheme, Signer, sign};

/// Signed timestamps further than this from now, either way, are replays
/// (or a clock badly off) unless the source sets its own `tolerance`.
const DEFAULT_TOLERANCE: Duration = Duration::from_secs(300);

// Header names, shared by the checks and by `sign`, so the two cannot drift.
static X_HUB_SIGNATURE_256: HeaderName = HeaderName::from_static("x-hub-signature-256");
static STRIPE_SIGNATURE: HeaderName = HeaderName::from_static("stripe-signature");
static X_SLACK_SIGNATURE: HeaderName = HeaderName::from_static("x-slack-signature");
static X_SLACK_REQUEST_TIMESTAMP: HeaderName = HeaderName::from_static("x-slack-request-timestamp");
static X_SHOPIFY_HMAC_SHA256: HeaderName = HeaderName::from_static("x-shopify-hmac-sha256");
static X_GITLAB_TOKEN: HeaderName = HeaderName::from_static("x-gitlab-token");

/// The three headers of a Standard Webhooks request; Svix sends the same
/// under its own prefix.
struct StandardHeaders {
    id: HeaderName,
    timestamp: HeaderName,
    signature: HeaderName,
}

static STANDARD_HEADERS: [StandardHeaders; 2] = [
    StandardHeaders {
        id: HeaderName::from_static("webhook-id"),
        timestamp: HeaderName::from_static("webhook-timestamp"),
        signature: HeaderName::from_static("webhook-signature"),
    },
    StandardHeaders {
        id: HeaderName::from_static("svix-id"),
        timestamp: HeaderName::from_static("svix-timestamp"),
        signature: HeaderName::from_static("svix-signature"),
    },
];

/// `verify:` as written in a rule file: a map with exactly one scheme.
///
/// Every `secret`, `token` and `value` may be one string or a list; with a
/// list any entry may match, so a secret can be rotated without downtime.
/// `tolerance` (default `300s`) bounds how far a signed timestamp may be from
/// the receiving clock, in either direction.
// `deny_unknown_fields` on the enum applies to every struct variant (serde has
// no per-variant form), so a misspelt option is a load error in each scheme.
#[derive(Clone, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum VerifyConfig {
    /// GitHub: `X-Hub-Signature-256: sha256=<hex HMAC-SHA256 of the body>`.
    Github { secret: OneOrMany<String> },
    /// Stripe: `Stripe-Signature: t=<unix>,v1=<hex>[,v1=…]` over `{t}.{body}`.
    Stripe {
        secret: OneOrMany<String>,
        tolerance: Option<config::Duration>,
    },
    /// Slack: `X-Slack-Signature: v0=<hex>` over `v0:{X-Slack-Request-Timestamp}:{body}`.
    Slack {
        secret: OneOrMany<String>,
        tolerance: Option<config::Duration>,
    },
    /// Standard Webhooks (and Svix): `webhook-id`, `webhook-timestamp`,
    /// `webhook-signature: v1,<base64> …` over `{id}.{timestamp}.{body}`.
    /// The secret is the base64 key, usually after `whsec_`; padding is optional.
    Standard {
        secret: OneOrMany<String>,
        tolerance: Option<config::Duration>,
    },
    /// Shopify: `X-Shopify-Hmac-Sha256: <base64 HMAC-SHA256 of the body>`.
    Shopify { secret: OneOrMany<String> },
    /// GitLab: `X-Gitlab-Token` equals the token.
    Gitlab { token: OneOrMany<String> },
    /// A shared token in the named `header` or `query` parameter (exactly one of them).
    Token {
        header: Option<String>,
        query: Option<String>,
        value: OneOrMany<String>,
    },
    /// `Authorization: Basic …` with this username and password.
    Basic { username: String, password: String },
    /// Any other HMAC of the raw body in a named header: `algorithm`
    /// (default `sha256`), `encoding` (default `hex`) and a `prefix` to strip
    /// (default none, e.g. `"sha1="`).
    Hmac {
        header: String,
        algorithm: Option<HmacAlgorithm>,
        encoding: Option<Encoding>,
        prefix: Option<String>,
        secret: OneOrMany<String>,
    },
}

impl VerifyConfig {
    /// The scheme's name as written in rule files.
    pub fn scheme_name(&self) -> &'static str {
        match self {
            VerifyConfig::Github { .. } => "github",
            VerifyConfig::Stripe { .. } => "stripe",
            VerifyConfig::Slack { .. } => "slack",
            VerifyConfig::Standard { .. } => "standard",
            VerifyConfig::Shopify { .. } => "shopify",
            VerifyConfig::Gitlab { .. } => "gitlab",
            VerifyConfig::Token { .. } => "token",
            VerifyConfig::Basic { .. } => "basic",
            VerifyConfig::Hmac { .. } => "hmac",
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
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HmacAlgorithm {
    Sha1,
    Sha256,
    Sha512,
}

/// How a generic `hmac` signature is written in its header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Encoding {
    Hex,
    Base64,
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

/// What verification looks at: the request as received, and the clock.
pub struct Request<'a> {
    pub headers: &'a HeaderMap,
    /// The raw query string, without `?`.
    pub query: Option<&'a str>,
    pub body: &'a [u8],
    pub now: SystemTime,
}

impl<'a> Request<'a> {
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
    Github(Vec<Key>),
    Stripe(Vec<Key>, Duration),
    Slack(Vec<Key>, Duration),
    Standard(Vec<Key>, Duration),
    Shopify(Vec<Key>),
    Gitlab(Vec<Box<[u8]>>),
    TokenHeader(HeaderName, Vec<Box<[u8]>>),
    TokenQuery(String, Vec<Box<[u8]>>),
    /// `username:password`, as the decoded credentials must read.
    Basic(Box<[u8]>),
    Hmac {
        header: HeaderName,
        encoding: Encoding,
        prefix: Box<[u8]>,
        keys: Vec<Key>,
    },
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
    /// Checks and prepares a `verify:` block. The error is a message for the
    /// rule file's author; the caller adds the position.
    pub fn compile(config: &VerifyConfig) -> Result<Self, String> {
        let name = config.scheme_name();
        let scheme = match config {
            VerifyConfig::Github { secret } => Scheme::Github(hmac_keys(name, secret)?),
            VerifyConfig::Stripe { secret, tolerance } => {
                Scheme::Stripe(hmac_keys(name, secret)?, or_default(tolerance))
            }
            VerifyConfig::Slack { secret, tolerance } => {
                Scheme::Slack(hmac_keys(name, secret)?, or_default(tolerance))
            }
            VerifyConfig::Standard { secret, tolerance } => {
                let keys = non_empty(name, "secret", secret)?
                    .iter()
                    .map(|s| standard_key(s).and_then(|k| prepare(HmacAlgorithm::Sha256, &k)))
                    .collect::<Result<_, _>>()?;
                Scheme::Standard(keys, or_default(tolerance))
            }
            VerifyConfig::Shopify { secret } => Scheme::Shopify(hmac_keys(name, secret)?),
            VerifyConfig::Gitlab { token } => Scheme::Gitlab(plain(name, "token", token)?),
            VerifyConfig::Token {
                header,
                query,
                value,
            } => {
                let values = plain(name, "value", value)?;
                match (header, query) {
                    (Some(h), None) => Scheme::TokenHeader(header_name(h)?, values),
                    (None, Some(q)) if !q.is_empty() => Scheme::TokenQuery(q.clone(), values),
                    (None, Some(_)) => return Err("token `query` must not be empty".to_owned()),
                    _ => {
                        return Err(
                            "token verification needs exactly one of `header` or `query`"
                                .to_owned(),
                        );
                    }
                }
            }
            VerifyConfig::Basic { username, password } => {
                // The decoded credentials are split at the first `:` (RFC 7617).
                if username.contains(':') {
                    return Err("basic `username` must not contain `:`".to_owned());
                }
                if password.is_empty() {
                    return Err("basic `password` must not be empty".to_owned());
                }
                Scheme::Basic(format!("{username}:{password}").into_bytes().into())
            }
            VerifyConfig::Hmac {
                header,
                algorithm,
                encoding,
                prefix,
                secret,
            } => {
                let algorithm = algorithm.unwrap_or(HmacAlgorithm::Sha256);
                Scheme::Hmac {
                    header: header_name(header)?,
                    encoding: encoding.unwrap_or(Encoding::Hex),
                    prefix: prefix.as_deref().unwrap_or("").as_bytes().into(),
                    keys: non_empty(name, "secret", secret)?
                        .iter()
                        .map(|s| prepare(algorithm, s.as_bytes()))
                        .collect::<Result<_, _>>()?,
                }
            }
        };
        Ok(Self { scheme })
    }

    /// The scheme's name as written in rule files.
    pub fn scheme_name(&self) -> &'static str {
        match self.scheme {
            Scheme::Github(_) => "github",
            Scheme::Stripe(..) => "stripe",
            Scheme::Slack(..) => "slack",
            Scheme::Standard(..) => "standard",
            Scheme::Shopify(_) => "shopify",
            Scheme::Gitlab(_) => "gitlab",
            Scheme::TokenHeader(..) | Scheme::TokenQuery(..) => "token",
            Scheme::Basic(_) => "basic",
            Scheme::Hmac { .. } => "hmac",
        }
    }

    /// `Ok` when the request carries what the scheme asks for.
    pub fn verify(&self, req: &Request<'_>) -> Result<(), VerifyError> {
        match &self.scheme {
            Scheme::Github(keys) => {
                let sig = req
                    .header(&X_HUB_SIGNATURE_256)?
                    .strip_prefix(b"sha256=")
                    .and_then(Sig::hex)
                    .ok_or_else(|| VerifyError::Malformed(X_HUB_SIGNATURE_256.clone()))?;
                verdict(signed_by_any(keys, &[req.body], || std::iter::once(sig)))
            }
            Scheme::Stripe(keys, tolerance) => {
                let value = req.header(&STRIPE_SIGNATURE)?;
                let malformed = || VerifyError::Malformed(STRIPE_SIGNATURE.clone());
                let fields = || value.split(|&b| b == b',').map(<[u8]>::trim_ascii);
                let t = fields()
                    .find_map(|f| f.strip_prefix(b"t="))
                    .ok_or_else(malformed)?;
                check_timestamp(t, req.now, *tolerance).map_err(|e| e.unwrap_or_else(malformed))?;
                // Other schemes (`v0=`) and undecodable entries are skipped:
                // Stripe may add entries, and one good `v1` is enough.
                let candidates = || {
                    fields()
                        .filter_map(|f| f.strip_prefix(b"v1="))
                        .filter_map(Sig::hex)
                };
                if candidates().next().is_none() {
                    return Err(malformed());
                }
                verdict(signed_by_any(keys, &[t, b".", req.body], candidates))
            }
            Scheme::Slack(keys, tolerance) => {
                let ts = req.header(&X_SLACK_REQUEST_TIMESTAMP)?;
                check_timestamp(ts, req.now, *tolerance).map_err(|e| {
                    e.unwrap_or_else(|| VerifyError::Malformed(X_SLACK_REQUEST_TIMESTAMP.clone()))
                })?;
                let sig = req
                    .header(&X_SLACK_SIGNATURE)?
                    .strip_prefix(b"v0=")
                    .and_then(Sig::hex)
                    .ok_or_else(|| VerifyError::Malformed(X_SLACK_SIGNATURE.clone()))?;
                verdict(signed_by_any(keys, &[b"v0:", ts, b":", req.body], || {
                    std::iter::once(sig)
                }))
            }
            Scheme::Standard(keys, tolerance) => {
                // A request names itself either way; `webhook-` wins if both are present.
                let names = STANDARD_HEADERS
                    .iter()
                    .find(|n| req.headers.contains_key(&n.id))
                    .ok_or_else(|| VerifyError::MissingHeader(STANDARD_HEADERS[0].id.clone()))?;
                let id = req.header(&names.id)?;
                let ts = req.header(&names.timestamp)?;
                let list = req.header(&names.signature)?;
                check_timestamp(ts, req.now, *tolerance).map_err(|e| {
                    e.unwrap_or_else(|| VerifyError::Malformed(names.timestamp.clone()))
                })?;
                // Space-separated `version,signature` pairs; versions other
                // than v1 (e.g. asymmetric `v1a`) are not ours to check.
                let candidates = || {
                    list.split(u8::is_ascii_whitespace)
                        .filter_map(|entry| entry.strip_prefix(b"v1,"))
                        .filter_map(Sig::base64)
                };
                if candidates().next().is_none() {
                    return Err(VerifyError::Malformed(names.signature.clone()));
                }
                verdict(signed_by_any(
                    keys,
                    &[id, b".", ts, b".", req.body],
                    candidates,
                ))
            }
            Scheme::Shopify(keys) => {
                let sig = Sig::base64(req.header(&X_SHOPIFY_HMAC_SHA256)?)
                    .ok_or_else(|| VerifyError::Malformed(X_SHOPIFY_HMAC_SHA256.clone()))?;
                verdict(signed_by_any(keys, &[req.body], || std::iter::once(sig)))
            }
            Scheme::Gitlab(tokens) => verdict(equals_any(tokens, req.header(&X_GITLAB_TOKEN)?)),
            Scheme::TokenHeader(name, values) => verdict(equals_any(values, req.header(name)?)),
            Scheme::TokenQuery(name, values) => {
                // Decoding allocates only when the pair is percent-encoded.
                let given = url::form_urlencoded::parse(req.query.unwrap_or("").as_bytes())
                    .find(|(k, _)| k == name.as_str())
                    .map(|(_, v)| v)
                    .ok_or_else(|| VerifyError::MissingQuery(name.clone()))?;
                verdict(equals_any(values, given.as_bytes()))
            }
            Scheme::Basic(expected) => {
                let malformed = || VerifyError::Malformed(AUTHORIZATION);
                let value = req.header(&AUTHORIZATION)?;
                let encoded = basic_credentials(value).ok_or_else(malformed)?;
                let given = B64.decode(encoded).map_err(|_| malformed())?;
                verdict(bool::from(expected.as_ref().ct_eq(&given)))
            }
            Scheme::Hmac {
                header,
                encoding,
                prefix,
                keys,
            } => {
                let sig = req
                    .header(header)?
                    .strip_prefix(prefix.as_ref())
                    .and_then(|text| Sig::decode(*encoding, text))
                    .ok_or_else(|| VerifyError::Malformed(header.clone()))?;
                verdict(signed_by_any(keys, &[req.body], || std::iter::once(sig)))
            }
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

/// The base64 part of `Basic <credentials>`; the scheme name is case-insensitive.
fn basic_credentials(value: &[u8]) -> Option<&[u8]> {
    let space = value.iter().position(|&b| b == b' ')?;
    let (scheme, rest) = value.split_at(space);
    scheme
        .eq_ignore_ascii_case(b"basic")
        .then(|| rest.trim_ascii())
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

/// An empty secret is almost always an unset variable; refuse it rather than
/// accept requests signed with an empty key.
fn non_empty<'c>(
    scheme: &str,
    field: &str,
    values: &'c OneOrMany<String>,
) -> Result<&'c [String], String> {
    let values = values.as_slice();
    if values.is_empty() || values.iter().any(String::is_empty) {
        return Err(format!("{scheme} `{field}` must not be empty"));
    }
    Ok(values)
}

fn plain(scheme: &str, field: &str, values: &OneOrMany<String>) -> Result<Vec<Box<[u8]>>, String> {
    Ok(non_empty(scheme, field, values)?
        .iter()
        .map(|s| s.as_bytes().into())
        .collect())
}

fn hmac_keys(scheme: &str, secrets: &OneOrMany<String>) -> Result<Vec<Key>, String> {
    non_empty(scheme, "secret", secrets)?
        .iter()
        .map(|s| prepare(HmacAlgorithm::Sha256, s.as_bytes()))
        .collect()
}

fn prepare(algorithm: HmacAlgorithm, secret: &[u8]) -> Result<Key, String> {
    Key::new(algorithm, secret).ok_or_else(|| "the secret cannot be used as an HMAC key".to_owned())
}

/// Base64 as the Standard Webhooks libraries read a secret: the standard
/// alphabet, `=` padding optional (python's adds it when missing), and
/// non-zero bits after the last character ignored (as Go's and python's
/// decoders do). Anything else, spaces included, is an error.
const LENIENT_B64: base64::engine::GeneralPurpose = base64::engine::GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    base64::engine::GeneralPurposeConfig::new()
        .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent)
        .with_decode_allow_trailing_bits(true),
);

/// The HMAC key inside a Standard Webhooks secret, for `verify:` and `sign`
/// alike: base64, after an optional `whsec_` prefix, padded or not — what
/// the reference libraries (standard-webhooks python, javascript, go, rust;
/// the svix libraries) accept. A secret that decodes to nothing is refused
/// rather than used as some other key.
fn standard_key(secret: &str) -> Result<Vec<u8>, String> {
    let b64 = secret.strip_prefix("whsec_").unwrap_or(secret);
    LENIENT_B64
        .decode(b64)
        .ok()
        .filter(|key| !key.is_empty())
        .ok_or_else(|| {
            "standard secret must be base64 (padding optional), optionally after `whsec_`"
                .to_owned()
        })
}

fn header_name(name: &str) -> Result<HeaderName, String> {
    // `from_bytes` lowercases, so lookups need no case folding per request.
    HeaderName::from_bytes(name.as_bytes())
        .map_err(|_| format!("`{name}` is not a valid header name"))
}

/// The providers' published examples, shared by the verify and sign tests.
#[cfg(test)]
mod vectors {
    pub const GITHUB_SECRET: &str = "It's a Secret to Everybody";
    pub const GITHUB_BODY: &str = "Hello, World!";
    pub const GITHUB_SIG: &str =
        "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";

    pub const SLACK_SECRET: &str = "8f742231b10e8888abcd99yyyzzz85a5";
    pub const SLACK_TS: u64 = 1531420618;
    pub const SLACK_BODY: &str = "token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow&channel_id=G8PSS9T3V&channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner&command=%2Fwebhook-collect&text=&response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands%2FT1DC2JH3J%2F397700885554%2F96rGlfmibIGlgcZRskXaIFfN&trigger_id=398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c";
    pub const SLACK_SIG: &str =
        "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503";

    /// (secret, id, timestamp, body, signature)
    pub const STANDARD: [(&str, &str, u64, &str, &str); 2] = [
        (
            "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1614265330,
            r#"{"test": 2432232314}"#,
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=",
        ),
        (
            "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD",
            "msg_27UH4WbU6Z5A5EzD8u03UvzRbpk",
            1649367553,
            r#"{"email":"test@example.com","username":"test_user"}"#,
            "v1,tZ1I4/hDygAJgO5TYxiSd6Sd0kDW6hPenDe+bTa3Kkw=",
        ),
    ];

    /// A 32-byte key, whose base64 ends in `=`, for the secret forms the
    /// reference libraries accept (with and without `whsec_`, padded or not).
    /// No library publishes such a vector; the signature is python's
    /// `base64.b64encode(hmac.new(bytes(range(32)), b"msg_p5jXN8AQM9LWM0D4loKWxJek.1614265330.{\"test\": 2432232314}", hashlib.sha256).digest())`.
    pub const STANDARD_PADDED: (&str, &str, u64, &str, &str) = (
        "whsec_AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=",
        "msg_p5jXN8AQM9LWM0D4loKWxJek",
        1614265330,
        r#"{"test": 2432232314}"#,
        "v1,O4Gjv1HqPqsMrjmczoggs/sWA8gZD0VyHG+fLh4+ktI=",
    );

    /// Stripe's own fixture: stripe/stripe-dotnet,
    /// src/StripeTests/Services/Events/EventUtilityTest.cs (header, secret,
    /// timestamp) and src/StripeTests/Resources/event_test_signature.json
    /// (the body, with its final newline). Computed by Stripe with
    /// `openssl sha256 -hmac`, not by us; the header also carries a `v0`.
    pub const STRIPE_SECRET: &str = "webhook_secret";
    pub const STRIPE_TS: u64 = 1533204620;
    pub const STRIPE_V1: &str = "2220f87ef101a04665f11cdf770523143f875572008577fa0f20882ddb9cc3c7";
    pub const STRIPE_HEADER: &str = "t=1533204620,v1=2220f87ef101a04665f11cdf770523143f875572008577fa0f20882ddb9cc3c7,v0=63f3a72374a733066c4be69ed7f8e5ac85c22c9f0a6a612ab9a025a9e4ee7eef";
    pub const STRIPE_BODY: &str = r#"{
  "id": "evt_123",
  "object": "event",
  "account": "acct_123",
  "api_version": "2017-05-25",
  "created": 1533204620,
  "data": {
    "object": {
      "id": "cus_123",
      "object": "customer",
      "created": 123456789,
      "email": "test@stripe.com",
      "livemode": false,
      "metadata": {}
    }
  },
  "livemode": false,
  "pending_webhooks": 1,
  "request": {
    "id": "req_123",
    "idempotency_key": "idempotency-key-123"
  },
  "type": "customer.created"
}
"#;

    pub const SHOPIFY_SECRET: &str = "test_secret_key";
    pub const SHOPIFY_BODY: &str = r#"{"foo": "bar"}"#;
    pub const SHOPIFY_SIG: &str = "B23tXN681gZ0qIWNRrgtzBE9XSDo5yaUu6wfmhu3a7g=";
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime, UNIX_EPOCH};

    use axum::http::{HeaderMap, HeaderName, HeaderValue};

    use super::vectors::*;
    use super::*;

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    fn headers(pairs: &[(&str, &[u8])]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (k, v) in pairs {
            map.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_bytes(v).unwrap(),
            );
        }
        map
    }

    fn secrets(list: &[&str]) -> OneOrMany<String> {
        OneOrMany(list.iter().map(|s| s.to_string()).collect())
    }

    fn compile(config: VerifyConfig) -> Verifier {
        Verifier::compile(&config).unwrap()
    }

    fn github(list: &[&str]) -> Verifier {
        compile(VerifyConfig::Github {
            secret: secrets(list),
        })
    }

    fn stripe(list: &[&str]) -> Verifier {
        compile(VerifyConfig::Stripe {
            secret: secrets(list),
            tolerance: None,
        })
    }

    fn slack(list: &[&str]) -> Verifier {
        compile(VerifyConfig::Slack {
            secret: secrets(list),
            tolerance: None,
        })
    }

    fn standard(list: &[&str]) -> Verifier {
        compile(VerifyConfig::Standard {
            secret: secrets(list),
            tolerance: None,
        })
    }

    fn shopify(list: &[&str]) -> Verifier {
        compile(VerifyConfig::Shopify {
            secret: secrets(list),
        })
    }

    fn gitlab(list: &[&str]) -> Verifier {
        compile(VerifyConfig::Gitlab {
            token: secrets(list),
        })
    }

    fn hmac(
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
    struct Req {
        headers: Vec<(String, Vec<u8>)>,
        query: Option<String>,
        body: Vec<u8>,
        now: SystemTime,
    }

    impl Req {
        fn new(pairs: &[(&str, &str)], body: &str, now: SystemTime) -> Self {
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
        fn signed(pairs: Vec<(&'static str, String)>, body: &str, now: SystemTime) -> Self {
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

        fn check(&self, v: &Verifier) -> Result<(), VerifyError> {
            let pairs: Vec<(&str, &[u8])> = self
                .headers
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_slice()))
                .collect();
            v.verify(&Request {
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
    enum At {
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
    fn assert_verifies_and_tamper_fails(
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

    #[test]
    fn github_vector_verifies_and_tampering_fails() {
        let req = Req::new(&[("X-Hub-Signature-256", GITHUB_SIG)], GITHUB_BODY, at(0));
        assert_verifies_and_tamper_fails(
            "github",
            &github(&[GITHUB_SECRET]),
            &req,
            &[
                ("x-hub-signature-256", At::Middle),
                ("x-hub-signature-256", At::Last),
            ],
        );
    }

    #[test]
    fn slack_vector_verifies_and_tampering_fails() {
        let ts = SLACK_TS.to_string();
        let req = Req::new(
            &[
                ("X-Slack-Request-Timestamp", &ts),
                ("X-Slack-Signature", SLACK_SIG),
            ],
            SLACK_BODY,
            at(SLACK_TS),
        );
        assert_verifies_and_tamper_fails(
            "slack",
            &slack(&[SLACK_SECRET]),
            &req,
            &[
                ("x-slack-request-timestamp", At::Last),
                ("x-slack-signature", At::Middle),
            ],
        );
    }

    #[test]
    fn standard_vectors_verify_under_both_header_prefixes_and_tampering_fails() {
        for (secret, id, ts, body, sig) in STANDARD {
            for prefix in ["webhook", "svix"] {
                let (h_id, h_ts, h_sig) = (
                    format!("{prefix}-id"),
                    format!("{prefix}-timestamp"),
                    format!("{prefix}-signature"),
                );
                let req = Req::new(
                    &[(&h_id, id), (&h_ts, &ts.to_string()), (&h_sig, sig)],
                    body,
                    at(ts),
                );
                assert_verifies_and_tamper_fails(
                    &format!("{prefix} {id}"),
                    &standard(&[secret]),
                    &req,
                    &[
                        (&h_id, At::Middle),
                        (&h_id, At::Last),
                        (&h_ts, At::Last),
                        (&h_sig, At::Middle),
                    ],
                );
            }
        }
    }

    #[test]
    fn standard_secrets_are_read_as_the_reference_libraries_read_them() {
        // The reference libraries strip an optional `whsec_` and decode
        // base64; python's pads an unpadded secret first.
        let (secret, id, ts, body, sig) = STANDARD_PADDED;
        let bare = &secret["whsec_".len()..];
        let cases = [
            ("whsec_ and padding", secret.to_owned()),
            ("bare", bare.to_owned()),
            ("whsec_, unpadded", secret.trim_end_matches('=').to_owned()),
            ("bare, unpadded", bare.trim_end_matches('=').to_owned()),
            (
                "22-byte key, ==",
                format!("whsec_{}", B64.encode([7u8; 22])),
            ),
            (
                "22-byte key, none",
                B64.encode([7u8; 22]).trim_end_matches('=').to_owned(),
            ),
        ];
        let req = Req::new(
            &[
                ("webhook-id", id),
                ("webhook-timestamp", &ts.to_string()),
                ("webhook-signature", sig),
            ],
            body,
            at(ts),
        );
        for (what, form) in &cases[..4] {
            assert_eq!(req.check(&standard(&[form])), Ok(()), "{what}: {form}");
        }
        // A different key in each form still verifies what it signed.
        for (what, form) in &cases[4..] {
            let other = Req::signed(
                sign(SignScheme::Standard, form, b"x", at(ts), id).unwrap(),
                "x",
                at(ts),
            );
            assert_eq!(other.check(&standard(&[form])), Ok(()), "{what}");
            assert_eq!(
                other.check(&standard(&[cases[4].1.as_str()])),
                Ok(()),
                "{what}"
            );
            assert_eq!(
                req.check(&standard(&[form])),
                Err(VerifyError::Mismatch),
                "{what}"
            );
        }
        // The published vectors without their prefix.
        for (secret, id, ts, body, sig) in STANDARD {
            let req = Req::new(
                &[
                    ("webhook-id", id),
                    ("webhook-timestamp", &ts.to_string()),
                    ("webhook-signature", sig),
                ],
                body,
                at(ts),
            );
            assert_eq!(req.check(&standard(&[&secret[6..]])), Ok(()), "{secret}");
        }
    }

    #[test]
    fn standard_accepts_the_valid_signature_anywhere_in_the_list() {
        let (secret, id, ts, body, sig) = STANDARD[0];
        let v = standard(&[secret]);
        let wrong = STANDARD[1].4;
        let with_list = |list: &str| {
            Req::new(
                &[
                    ("webhook-id", id),
                    ("webhook-timestamp", &ts.to_string()),
                    ("webhook-signature", list),
                ],
                body,
                at(ts),
            )
        };
        for list in [
            format!("{wrong} {sig}"),
            format!("v1a,c2lnbmF0dXJl v1,!!notbase64!! {sig}"),
            format!("v2,{} {sig}", &sig[3..]),
            format!("{sig}  {wrong}"),
        ] {
            assert_eq!(with_list(&list).check(&v), Ok(()), "{list}");
        }
        // Only non-v1 entries: nothing to check against.
        let list = format!("v2,{}", &sig[3..]);
        assert_eq!(
            with_list(&list).check(&v),
            Err(VerifyError::Malformed(HeaderName::from_static(
                "webhook-signature"
            )))
        );
        // A v1 value that is valid for another message only.
        assert_eq!(with_list(wrong).check(&v), Err(VerifyError::Mismatch));
    }

    #[test]
    fn shopify_vector_verifies_and_tampering_fails() {
        let req = Req::new(
            &[("X-Shopify-Hmac-Sha256", SHOPIFY_SIG)],
            SHOPIFY_BODY,
            at(0),
        );
        assert_verifies_and_tamper_fails(
            "shopify",
            &shopify(&[SHOPIFY_SECRET]),
            &req,
            &[("x-shopify-hmac-sha256", At::Middle)],
        );
    }

    #[test]
    fn stripe_vector_verifies_and_tampering_fails() {
        // The vector is from 2018: verified at its own time, and refused a
        // tolerance later.
        let req = Req::new(
            &[("Stripe-Signature", STRIPE_HEADER)],
            STRIPE_BODY,
            at(STRIPE_TS),
        );
        assert_verifies_and_tamper_fails(
            "stripe",
            &stripe(&[STRIPE_SECRET]),
            &req,
            &[
                ("stripe-signature", At::EndOfFirstNumber),
                ("stripe-signature", At::Middle),
            ],
        );
        let mut late = req.clone();
        late.now = at(STRIPE_TS + 301);
        assert_eq!(
            late.check(&stripe(&[STRIPE_SECRET])),
            Err(VerifyError::Stale {
                skew_secs: 301,
                when: "in the past",
                tolerance_secs: 300
            })
        );
        assert_eq!(
            req.check(&stripe(&["whsec_other"])),
            Err(VerifyError::Mismatch)
        );
    }

    #[test]
    fn stripe_round_trip_verifies_and_tampering_fails() {
        let now = at(1_700_000_000);
        let body = r#"{"id":"evt_1","type":"charge.succeeded"}"#;
        let req = Req::signed(
            sign(SignScheme::Stripe, "sk_secret", body.as_bytes(), now, "").unwrap(),
            body,
            now,
        );
        assert_verifies_and_tamper_fails(
            "stripe",
            &stripe(&["sk_secret"]),
            &req,
            &[
                ("stripe-signature", At::EndOfFirstNumber),
                ("stripe-signature", At::Last),
            ],
        );
    }

    #[test]
    fn stripe_accepts_any_v1_and_ignores_other_entries() {
        let now = at(1_700_000_000);
        let body = "{}";
        let signed = sign(SignScheme::Stripe, "sk", body.as_bytes(), now, "").unwrap();
        let (t, v1) = signed[0].1.split_once(",v1=").unwrap();
        let wrong = "00".repeat(32);
        let v = stripe(&["sk"]);
        let malformed = Err(VerifyError::Malformed(STRIPE_SIGNATURE.clone()));
        let cases = [
            (format!("{t},v1={wrong},v1={v1}"), Ok(())),
            (format!("{t},v1=zz,v0={wrong},v1={v1}"), Ok(())),
            (format!("v1={v1}, {t}"), Ok(())),
            (format!("{t},v1={}", v1.to_uppercase()), Ok(())),
            (format!("{t},v0={v1}"), malformed.clone()),
            (format!("v1={v1}"), malformed.clone()),
            (format!("t=soon,v1={v1}"), malformed),
            (format!("{t},v1={wrong}"), Err(VerifyError::Mismatch)),
        ];
        for (header, expected) in cases {
            let req = Req::new(&[("stripe-signature", &header)], body, now);
            assert_eq!(req.check(&v), expected, "{header}");
        }
    }

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
                    let result = v.verify(&Request {
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
    fn token_matches_by_header_or_by_query() {
        let by_header = compile(VerifyConfig::Token {
            header: Some("X-Api-Key".into()),
            query: None,
            value: secrets(&["k1", "s3cr=t&"]),
        });
        let by_query = compile(VerifyConfig::Token {
            header: None,
            query: Some("key".into()),
            value: secrets(&["k1", "s3cr=t&"]),
        });
        let req = |headers: &[(&str, &str)], query: Option<&str>| Req {
            query: query.map(str::to_owned),
            ..Req::new(headers, "{}", at(0))
        };
        let missing_header = Err(VerifyError::MissingHeader(HeaderName::from_static(
            "x-api-key",
        )));
        let missing_query = Err(VerifyError::MissingQuery("key".into()));
        let cases = [
            (&by_header, req(&[("x-api-key", "k1")], None), Ok(())),
            (&by_header, req(&[("X-API-KEY", "s3cr=t&")], None), Ok(())),
            (
                &by_header,
                req(&[("x-api-key", "k2")], None),
                Err(VerifyError::Mismatch),
            ),
            (
                &by_header,
                req(&[("x-api-key", "k")], None),
                Err(VerifyError::Mismatch),
            ),
            (&by_header, req(&[], Some("x-api-key=k1")), missing_header),
            (&by_query, req(&[], Some("a=1&key=k1")), Ok(())),
            (&by_query, req(&[], Some("key=s3cr%3Dt%26")), Ok(())),
            (
                &by_query,
                req(&[], Some("key=k2&key=k1")),
                Err(VerifyError::Mismatch),
            ),
            (
                &by_query,
                req(&[], Some("key=")),
                Err(VerifyError::Mismatch),
            ),
            (
                &by_query,
                req(&[("key", "k1")], Some("keys=k1")),
                missing_query.clone(),
            ),
            (&by_query, req(&[], None), missing_query),
        ];
        for (i, (v, req, expected)) in cases.iter().enumerate() {
            assert_eq!(req.check(v), *expected, "case {i}");
        }
    }

    #[test]
    fn basic_checks_username_and_password() {
        let v = compile(VerifyConfig::Basic {
            username: "hook".into(),
            password: "p:ss wörd".into(),
        });
        let b64 = |s: &str| B64.encode(s);
        let right = format!("Basic {}", b64("hook:p:ss wörd"));
        let malformed = Err(VerifyError::Malformed(AUTHORIZATION));
        let cases = [
            (right.clone(), Ok(())),
            (format!("basic {}", b64("hook:p:ss wörd")), Ok(())),
            (
                format!("Basic {}", b64("hook:p:ss word")),
                Err(VerifyError::Mismatch),
            ),
            (
                format!("Basic {}", b64("hook2:p:ss wörd")),
                Err(VerifyError::Mismatch),
            ),
            (format!("Basic {}", b64("hook")), Err(VerifyError::Mismatch)),
            (
                format!("Bearer {}", b64("hook:p:ss wörd")),
                malformed.clone(),
            ),
            ("Basic".to_owned(), malformed.clone()),
            ("Basic !!!!".to_owned(), malformed.clone()),
            // Unpadded base64 is not what RFC 7617 senders write.
            (
                format!("Basic {}", b64("hook:pw").trim_end_matches('=')),
                malformed,
            ),
        ];
        for (header, expected) in cases {
            let req = Req::new(&[("authorization", &header)], "", at(0));
            assert_eq!(req.check(&v), expected, "{header}");
        }
    }

    #[test]
    fn generic_hmac_covers_every_algorithm_encoding_and_prefix() {
        // RFC 2202 / RFC 4231 test case 2.
        const KEY: &str = "Jefe";
        const BODY: &str = "what do ya want for nothing?";
        let vectors = [
            (
                HmacAlgorithm::Sha1,
                "effcdf6ae5eb2fa2d27416d5f184df9c259a7c79",
                "7/zfauXrL6LSdBbV8YTfnCWafHk=",
            ),
            (
                HmacAlgorithm::Sha256,
                "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843",
                "W9zBRr9gdU5qBCQmCJV1x1oAPwidJzmDnexYuWTsOEM=",
            ),
            (
                HmacAlgorithm::Sha512,
                "164b7a7bfcf819e2e395fbe73b56e0a387bd64222e831fd610270cd7ea2505549758bf75c05a994a6d034f65f8f0e6fdcaeab1a34d4a6b4b636e070a38bce737",
                "Fkt6e/z4GeLjlfvnO1bgo4e9ZCIugx/WECcM1+olBVSXWL91wFqZSm0DT2X48Ob9yuqxo01Ka0tjbgcKOLznNw==",
            ),
        ];
        let malformed = Err(VerifyError::Malformed(HeaderName::from_static(
            "x-signature",
        )));
        for (algorithm, hex, b64) in vectors {
            for (encoding, sig) in [(Encoding::Hex, hex), (Encoding::Base64, b64)] {
                for prefix in [None, Some("sha=")] {
                    let v = hmac(Some(algorithm), Some(encoding), prefix, &[KEY]);
                    let label = format!("{algorithm:?} {encoding:?} {prefix:?}");
                    let value = format!("{}{sig}", prefix.unwrap_or(""));
                    let req = Req::new(&[("x-signature", &value)], BODY, at(0));
                    assert_verifies_and_tamper_fails(
                        &label,
                        &v,
                        &req,
                        &[("x-signature", At::Middle)],
                    );
                    if prefix.is_some() {
                        // A configured prefix is required.
                        let req = Req::new(&[("x-signature", sig)], BODY, at(0));
                        assert_eq!(req.check(&v), malformed, "{label}");
                    }
                }
            }
        }
        // Defaults are sha256 and hex; another algorithm's tag never matches.
        let v = hmac(None, None, None, &[KEY]);
        let req = Req::new(&[("x-signature", vectors[1].1)], BODY, at(0));
        assert_eq!(req.check(&v), Ok(()));
        let req = Req::new(&[("x-signature", vectors[0].1)], BODY, at(0));
        assert_eq!(req.check(&v), Err(VerifyError::Mismatch));
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
            assert_eq!(Verifier::compile(&config).unwrap_err(), message);
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
