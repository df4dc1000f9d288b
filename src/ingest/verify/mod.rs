//! Request verification (SPEC §4.1): every scheme a source may name, checked
//! on the raw body bytes before anything is decoded, in constant time, with
//! secret lists for rotation and timestamp tolerance both ways. Also the
//! matching signer, so tests and `hookwire send` sign exactly as providers do.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::http::HeaderMap;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use hmac::{Hmac, Mac};
use serde::Deserialize;
use subtle::ConstantTimeEq;

use crate::config::{self, OneOrMany};

/// Signed timestamps older or newer than this are refused unless a source says otherwise.
const DEFAULT_TOLERANCE: Duration = Duration::from_secs(300);

/// `verify:` as written in a rule file: exactly one scheme.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum VerifyConfig {
    Github {
        secret: OneOrMany<String>,
    },
    Stripe {
        secret: OneOrMany<String>,
        tolerance: Option<config::Duration>,
    },
    Slack {
        secret: OneOrMany<String>,
        tolerance: Option<config::Duration>,
    },
    Standard {
        secret: OneOrMany<String>,
        tolerance: Option<config::Duration>,
    },
    Shopify {
        secret: OneOrMany<String>,
    },
    Gitlab {
        token: OneOrMany<String>,
    },
    Token {
        header: Option<String>,
        query: Option<String>,
        value: OneOrMany<String>,
    },
    Basic {
        username: String,
        password: String,
    },
    Hmac {
        header: String,
        algorithm: Option<Algorithm>,
        encoding: Option<Encoding>,
        prefix: Option<String>,
        secret: OneOrMany<String>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Algorithm {
    Sha1,
    Sha256,
    Sha512,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Encoding {
    Hex,
    Base64,
}

/// Why a request was not verified. For logs only: the sender gets a bare 401.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum VerifyError {
    #[error("missing {0}")]
    Missing(&'static str),
    #[error("malformed {0}")]
    Malformed(&'static str),
    #[error("timestamp outside the tolerance ({0} s away)")]
    Stale(u64),
    #[error("signature or token does not match")]
    Mismatch,
}

/// What verification looks at.
pub struct Request<'a> {
    pub headers: &'a HeaderMap,
    pub query: Option<&'a str>,
    pub body: &'a [u8],
    pub now: SystemTime,
}

impl Request<'_> {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
    }

    fn require(&self, name: &'static str) -> Result<&str, VerifyError> {
        self.header(name).ok_or(VerifyError::Missing(name))
    }
}

#[derive(Debug)]
enum Scheme {
    Github(Vec<Vec<u8>>),
    Stripe(Vec<Vec<u8>>, Duration),
    Slack(Vec<Vec<u8>>, Duration),
    Standard(Vec<Vec<u8>>, Duration),
    Shopify(Vec<Vec<u8>>),
    Gitlab(Vec<Vec<u8>>),
    TokenHeader(String, Vec<Vec<u8>>),
    TokenQuery(String, Vec<Vec<u8>>),
    Basic(Vec<u8>),
    Hmac {
        header: String,
        algorithm: Algorithm,
        encoding: Encoding,
        prefix: String,
        keys: Vec<Vec<u8>>,
    },
}

/// A compiled `verify:`; secrets are decoded once, at load.
#[derive(Debug)]
pub struct Verifier(Scheme);

fn keys(secrets: &OneOrMany<String>) -> Result<Vec<Vec<u8>>, String> {
    if secrets.0.iter().any(String::is_empty) {
        return Err("a secret must not be empty".to_owned());
    }
    Ok(secrets.0.iter().map(|s| s.as_bytes().to_vec()).collect())
}

/// The key of a Standard Webhooks secret: base64 after `whsec_`.
fn standard_key(secret: &str) -> Result<Vec<u8>, String> {
    let b64 = secret.strip_prefix("whsec_").unwrap_or(secret);
    B64.decode(b64)
        .map_err(|_| "a standard secret must be `whsec_` followed by base64".to_owned())
}

fn tolerance(t: &Option<config::Duration>) -> Duration {
    t.map_or(DEFAULT_TOLERANCE, |d| d.get())
}

impl Verifier {
    pub fn compile(c: &VerifyConfig) -> Result<Self, String> {
        Ok(Self(match c {
            VerifyConfig::Github { secret } => Scheme::Github(keys(secret)?),
            VerifyConfig::Stripe {
                secret,
                tolerance: t,
            } => Scheme::Stripe(keys(secret)?, tolerance(t)),
            VerifyConfig::Slack {
                secret,
                tolerance: t,
            } => Scheme::Slack(keys(secret)?, tolerance(t)),
            VerifyConfig::Standard {
                secret,
                tolerance: t,
            } => Scheme::Standard(
                secret
                    .0
                    .iter()
                    .map(|s| standard_key(s))
                    .collect::<Result<_, _>>()?,
                tolerance(t),
            ),
            VerifyConfig::Shopify { secret } => Scheme::Shopify(keys(secret)?),
            VerifyConfig::Gitlab { token } => Scheme::Gitlab(keys(token)?),
            VerifyConfig::Token {
                header,
                query,
                value,
            } => match (header, query) {
                (Some(h), None) => Scheme::TokenHeader(h.to_ascii_lowercase(), keys(value)?),
                (None, Some(q)) => Scheme::TokenQuery(q.clone(), keys(value)?),
                _ => return Err("`token` takes exactly one of `header` or `query`".to_owned()),
            },
            VerifyConfig::Basic { username, password } => {
                if username.contains(':') {
                    return Err("a basic username cannot contain `:`".to_owned());
                }
                Scheme::Basic(format!("{username}:{password}").into_bytes())
            }
            VerifyConfig::Hmac {
                header,
                algorithm,
                encoding,
                prefix,
                secret,
            } => Scheme::Hmac {
                header: header.to_ascii_lowercase(),
                algorithm: algorithm.unwrap_or(Algorithm::Sha256),
                encoding: encoding.unwrap_or(Encoding::Hex),
                prefix: prefix.clone().unwrap_or_default(),
                keys: keys(secret)?,
            },
        }))
    }

    /// The scheme's name as written in rule files.
    pub fn scheme_name(&self) -> &'static str {
        match self.0 {
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

    pub fn verify(&self, req: &Request<'_>) -> Result<(), VerifyError> {
        match &self.0 {
            Scheme::Github(keys) => {
                let sig = req.require("x-hub-signature-256")?;
                let hex = sig
                    .strip_prefix("sha256=")
                    .ok_or(VerifyError::Malformed("x-hub-signature-256"))?;
                let sig =
                    hex::decode(hex).map_err(|_| VerifyError::Malformed("x-hub-signature-256"))?;
                any_hmac(Algorithm::Sha256, keys, &[req.body], &sig)
            }
            Scheme::Stripe(keys, tol) => {
                let header = req.require("stripe-signature")?;
                let mut t = None;
                let mut sigs = Vec::new();
                for part in header.split(',') {
                    match part.trim().split_once('=') {
                        Some(("t", v)) => t = Some(v),
                        Some(("v1", v)) => sigs.push(
                            hex::decode(v)
                                .map_err(|_| VerifyError::Malformed("stripe-signature"))?,
                        ),
                        _ => {}
                    }
                }
                let t = t.ok_or(VerifyError::Malformed("stripe-signature"))?;
                check_time(t, req.now, *tol)?;
                first_match(&sigs, |sig| {
                    any_hmac(
                        Algorithm::Sha256,
                        keys,
                        &[t.as_bytes(), b".", req.body],
                        sig,
                    )
                })
            }
            Scheme::Slack(keys, tol) => {
                let ts = req.require("x-slack-request-timestamp")?;
                check_time(ts, req.now, *tol)?;
                let sig = req.require("x-slack-signature")?;
                let hex = sig
                    .strip_prefix("v0=")
                    .ok_or(VerifyError::Malformed("x-slack-signature"))?;
                let sig =
                    hex::decode(hex).map_err(|_| VerifyError::Malformed("x-slack-signature"))?;
                any_hmac(
                    Algorithm::Sha256,
                    keys,
                    &[b"v0:", ts.as_bytes(), b":", req.body],
                    &sig,
                )
            }
            Scheme::Standard(keys, tol) => {
                let (id, ts, sigs) = match req.header("webhook-id") {
                    Some(id) => (
                        id,
                        req.require("webhook-timestamp")?,
                        req.require("webhook-signature")?,
                    ),
                    None => (
                        req.require("svix-id")?,
                        req.require("svix-timestamp")?,
                        req.require("svix-signature")?,
                    ),
                };
                check_time(ts, req.now, *tol)?;
                let sigs: Vec<Vec<u8>> = sigs
                    .split_whitespace()
                    .filter_map(|s| s.strip_prefix("v1,"))
                    .filter_map(|b| B64.decode(b).ok())
                    .collect();
                first_match(&sigs, |sig| {
                    any_hmac(
                        Algorithm::Sha256,
                        keys,
                        &[id.as_bytes(), b".", ts.as_bytes(), b".", req.body],
                        sig,
                    )
                })
            }
            Scheme::Shopify(keys) => {
                let sig = B64
                    .decode(req.require("x-shopify-hmac-sha256")?)
                    .map_err(|_| VerifyError::Malformed("x-shopify-hmac-sha256"))?;
                any_hmac(Algorithm::Sha256, keys, &[req.body], &sig)
            }
            Scheme::Gitlab(tokens) => any_equal(tokens, req.require("x-gitlab-token")?.as_bytes()),
            Scheme::TokenHeader(name, values) => {
                let given = req
                    .headers
                    .get(name.as_str())
                    .ok_or(VerifyError::Missing("token header"))?;
                any_equal(values, given.as_bytes())
            }
            Scheme::TokenQuery(name, values) => {
                let given = url::form_urlencoded::parse(req.query.unwrap_or("").as_bytes())
                    .find(|(k, _)| k == name.as_str())
                    .map(|(_, v)| v.into_owned())
                    .ok_or(VerifyError::Missing("token query parameter"))?;
                any_equal(values, given.as_bytes())
            }
            Scheme::Basic(expected) => {
                let auth = req.require("authorization")?;
                let b64 = auth
                    .strip_prefix("Basic ")
                    .ok_or(VerifyError::Malformed("authorization"))?;
                let given = B64
                    .decode(b64.trim())
                    .map_err(|_| VerifyError::Malformed("authorization"))?;
                any_equal(std::slice::from_ref(expected), &given)
            }
            Scheme::Hmac {
                header,
                algorithm,
                encoding,
                prefix,
                keys,
            } => {
                let value = req
                    .headers
                    .get(header.as_str())
                    .and_then(|v| v.to_str().ok())
                    .ok_or(VerifyError::Missing("signature header"))?;
                let encoded = value
                    .trim()
                    .strip_prefix(prefix.as_str())
                    .ok_or(VerifyError::Malformed("signature header"))?;
                let sig = match encoding {
                    Encoding::Hex => hex::decode(encoded).ok(),
                    Encoding::Base64 => B64.decode(encoded).ok(),
                }
                .ok_or(VerifyError::Malformed("signature header"))?;
                any_hmac(*algorithm, keys, &[req.body], &sig)
            }
        }
    }
}

fn first_match(
    sigs: &[Vec<u8>],
    check: impl Fn(&[u8]) -> Result<(), VerifyError>,
) -> Result<(), VerifyError> {
    if sigs.is_empty() {
        return Err(VerifyError::Malformed("signature"));
    }
    if sigs.iter().any(|s| check(s).is_ok()) {
        Ok(())
    } else {
        Err(VerifyError::Mismatch)
    }
}

fn check_time(ts: &str, now: SystemTime, tolerance: Duration) -> Result<(), VerifyError> {
    let t: i64 = ts
        .trim()
        .parse()
        .map_err(|_| VerifyError::Malformed("timestamp"))?;
    let now = now
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    let skew = now.abs_diff(t);
    if skew > tolerance.as_secs() {
        Err(VerifyError::Stale(skew))
    } else {
        Ok(())
    }
}

fn mac_of(algorithm: Algorithm, key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
    macro_rules! run {
        ($d:ty) => {{
            // HMAC takes keys of any length; `new_from_slice` cannot fail for it.
            let Ok(mut m) = Hmac::<$d>::new_from_slice(key) else {
                return Vec::new();
            };
            for p in parts {
                m.update(p);
            }
            m.finalize().into_bytes().to_vec()
        }};
    }
    match algorithm {
        Algorithm::Sha1 => run!(sha1::Sha1),
        Algorithm::Sha256 => run!(sha2::Sha256),
        Algorithm::Sha512 => run!(sha2::Sha512),
    }
}

/// Any key's HMAC of `parts` equals `sig` (constant-time per comparison).
fn any_hmac(
    algorithm: Algorithm,
    keys: &[Vec<u8>],
    parts: &[&[u8]],
    sig: &[u8],
) -> Result<(), VerifyError> {
    let mut ok = subtle::Choice::from(0);
    for k in keys {
        ok |= mac_of(algorithm, k, parts).ct_eq(sig);
    }
    if bool::from(ok) {
        Ok(())
    } else {
        Err(VerifyError::Mismatch)
    }
}

fn any_equal(expected: &[Vec<u8>], given: &[u8]) -> Result<(), VerifyError> {
    let mut ok = subtle::Choice::from(0);
    for e in expected {
        ok |= e.as_slice().ct_eq(given);
    }
    if bool::from(ok) {
        Ok(())
    } else {
        Err(VerifyError::Mismatch)
    }
}

/// Providers `sign` can imitate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignScheme {
    Github,
    Stripe,
    Slack,
    Standard,
    Shopify,
    Gitlab,
}

impl std::str::FromStr for SignScheme {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s {
            "github" => Self::Github,
            "stripe" => Self::Stripe,
            "slack" => Self::Slack,
            "standard" => Self::Standard,
            "shopify" => Self::Shopify,
            "gitlab" => Self::Gitlab,
            other => {
                return Err(format!(
                    "unknown scheme `{other}`: github, stripe, slack, standard, shopify or gitlab"
                ));
            }
        })
    }
}

/// The headers a provider would send with `body`. `id` is the Standard
/// Webhooks message id; `now` dates the signature where the scheme has one.
pub fn sign(
    scheme: SignScheme,
    secret: &str,
    body: &[u8],
    now: SystemTime,
    id: &str,
) -> Vec<(&'static str, String)> {
    let t = now
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
        .to_string();
    let key = secret.as_bytes();
    match scheme {
        SignScheme::Github => vec![(
            "X-Hub-Signature-256",
            format!(
                "sha256={}",
                hex::encode(mac_of(Algorithm::Sha256, key, &[body]))
            ),
        )],
        SignScheme::Stripe => {
            let mac = mac_of(Algorithm::Sha256, key, &[t.as_bytes(), b".", body]);
            vec![("Stripe-Signature", format!("t={t},v1={}", hex::encode(mac)))]
        }
        SignScheme::Slack => {
            let mac = mac_of(Algorithm::Sha256, key, &[b"v0:", t.as_bytes(), b":", body]);
            vec![
                ("X-Slack-Request-Timestamp", t),
                ("X-Slack-Signature", format!("v0={}", hex::encode(mac))),
            ]
        }
        SignScheme::Standard => {
            let key = standard_key(secret).unwrap_or_else(|_| secret.as_bytes().to_vec());
            let mac = mac_of(
                Algorithm::Sha256,
                &key,
                &[id.as_bytes(), b".", t.as_bytes(), b".", body],
            );
            vec![
                ("webhook-id", id.to_owned()),
                ("webhook-timestamp", t),
                ("webhook-signature", format!("v1,{}", B64.encode(mac))),
            ]
        }
        SignScheme::Shopify => vec![(
            "X-Shopify-Hmac-Sha256",
            B64.encode(mac_of(Algorithm::Sha256, key, &[body])),
        )],
        SignScheme::Gitlab => vec![("X-Gitlab-Token", secret.to_owned())],
    }
}

#[cfg(test)]
mod tests;
