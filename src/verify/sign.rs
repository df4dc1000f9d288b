//! Signing as the providers do, for tests, `hookwire send --sign` and HTTP
//! actions with `sign:`. It uses the same header names and key handling as
//! the checks in this module, so whatever it signs the matching `verify:`
//! accepts.

use std::fmt;
use std::str::FromStr;
use std::time::SystemTime;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;

use super::crypto::Key;
// Header names come from each scheme's own file, shared with its check so
// that signing and checking cannot drift.
use super::github::X_HUB_SIGNATURE_256;
use super::gitlab::X_GITLAB_TOKEN;
use super::shopify::X_SHOPIFY_HMAC_SHA256;
use super::slack::{X_SLACK_REQUEST_TIMESTAMP, X_SLACK_SIGNATURE};
use super::standard::{STANDARD_HEADERS, standard_key};
use super::stripe::STRIPE_SIGNATURE;
use super::{ConfigError, HmacAlgorithm, unix_secs};

/// A provider whose requests `sign` can imitate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignScheme {
    Github,
    Stripe,
    Slack,
    Standard,
    Shopify,
    Gitlab,
}

impl SignScheme {
    pub const ALL: [SignScheme; 6] = [
        SignScheme::Github,
        SignScheme::Stripe,
        SignScheme::Slack,
        SignScheme::Standard,
        SignScheme::Shopify,
        SignScheme::Gitlab,
    ];

    /// The name used on the command line and in rule files.
    pub fn name(self) -> &'static str {
        match self {
            SignScheme::Github => "github",
            SignScheme::Stripe => "stripe",
            SignScheme::Slack => "slack",
            SignScheme::Standard => "standard",
            SignScheme::Shopify => "shopify",
            SignScheme::Gitlab => "gitlab",
        }
    }
}

/// A name [`SignScheme`] does not know.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown scheme `{0}`: github, stripe, slack, standard, shopify or gitlab")]
pub struct UnknownScheme(String);

impl FromStr for SignScheme {
    type Err = UnknownScheme;

    fn from_str(s: &str) -> Result<Self, UnknownScheme> {
        SignScheme::ALL
            .into_iter()
            .find(|scheme| scheme.name() == s)
            .ok_or_else(|| UnknownScheme(s.to_owned()))
    }
}

impl fmt::Display for SignScheme {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Why a secret cannot be used to sign. The text names the scheme, never the
/// secret.
#[derive(Debug, thiserror::Error)]
pub enum SignError {
    #[error("{0} secret must not be empty")]
    EmptySecret(SignScheme),
    #[error("{0} secret cannot be used as an HMAC key")]
    HmacKey(SignScheme),
    /// A standard secret that `verify:` would refuse, for the same reason.
    #[error(transparent)]
    Secret(#[from] ConfigError),
}

/// GitHub sends the SHA-1 form beside `X-Hub-Signature-256` whenever a
/// secret is set, for receivers written before SHA-256; only `sign` needs it.
const X_HUB_SIGNATURE: &str = "x-hub-signature";

/// A provider's signing, its key prepared once from the secret. Made where
/// the secret is configured (rule file load, `hookwire send`), so a secret
/// that cannot be used is an error there and signing itself cannot fail.
#[derive(Clone)]
pub struct Signer(SignKey);

/// Keys are boxed: a prepared HMAC holds two hash states, and an action
/// holding a signer should not grow by that much.
#[derive(Clone)]
enum SignKey {
    /// GitHub signs with SHA-256 and, for old receivers, SHA-1.
    Github {
        sha256: Box<Key>,
        sha1: Box<Key>,
    },
    Stripe(Box<Key>),
    Slack(Box<Key>),
    Standard(Box<Key>),
    Shopify(Box<Key>),
    /// GitLab sends its token as it is.
    Gitlab(String),
}

impl Signer {
    /// The secret is used as the matching `verify:` uses it: raw bytes, or
    /// for `standard` the base64 key (`whsec_` optional, padding optional).
    /// An empty secret, or a standard secret that is not base64, is an error.
    pub fn new(scheme: SignScheme, secret: &str) -> Result<Self, SignError> {
        if secret.is_empty() {
            return Err(SignError::EmptySecret(scheme));
        }
        let hmac = |algorithm, key: &[u8]| {
            Key::new(algorithm, key)
                .map(Box::new)
                .ok_or(SignError::HmacKey(scheme))
        };
        let sha256 = |key: &[u8]| hmac(HmacAlgorithm::Sha256, key);
        let raw = secret.as_bytes();
        Ok(Self(match scheme {
            SignScheme::Github => SignKey::Github {
                sha256: sha256(raw)?,
                sha1: hmac(HmacAlgorithm::Sha1, raw)?,
            },
            SignScheme::Stripe => SignKey::Stripe(sha256(raw)?),
            SignScheme::Slack => SignKey::Slack(sha256(raw)?),
            SignScheme::Standard => SignKey::Standard(sha256(&standard_key(secret)?)?),
            SignScheme::Shopify => SignKey::Shopify(sha256(raw)?),
            SignScheme::Gitlab => SignKey::Gitlab(secret.to_owned()),
        }))
    }

    pub fn scheme(&self) -> SignScheme {
        match self.0 {
            SignKey::Github { .. } => SignScheme::Github,
            SignKey::Stripe(_) => SignScheme::Stripe,
            SignKey::Slack(_) => SignScheme::Slack,
            SignKey::Standard(_) => SignScheme::Standard,
            SignKey::Shopify(_) => SignScheme::Shopify,
            SignKey::Gitlab(_) => SignScheme::Gitlab,
        }
    }

    /// The signature headers the provider would send with `body`, names in
    /// lowercase (so `HeaderName::from_static` takes them). `now` dates the
    /// signature where the scheme has a timestamp; `id` is the Standard
    /// Webhooks `webhook-id`.
    pub fn sign(&self, body: &[u8], now: SystemTime, id: &str) -> Vec<(&'static str, String)> {
        let ts = unix_secs(now).max(0).to_string();
        let hex_tag = |key: &Key, parts: &[&[u8]]| hex::encode(key.tag(parts).as_slice());
        let b64_tag = |key: &Key, parts: &[&[u8]]| B64.encode(key.tag(parts).as_slice());
        match &self.0 {
            SignKey::Github { sha256, sha1 } => vec![
                (
                    X_HUB_SIGNATURE_256.as_str(),
                    format!("sha256={}", hex_tag(sha256, &[body])),
                ),
                (X_HUB_SIGNATURE, format!("sha1={}", hex_tag(sha1, &[body]))),
            ],
            SignKey::Stripe(key) => vec![(
                STRIPE_SIGNATURE.as_str(),
                format!("t={ts},v1={}", hex_tag(key, &[ts.as_bytes(), b".", body])),
            )],
            SignKey::Slack(key) => {
                let sig = hex_tag(key, &[b"v0:", ts.as_bytes(), b":", body]);
                vec![
                    (X_SLACK_REQUEST_TIMESTAMP.as_str(), ts),
                    (X_SLACK_SIGNATURE.as_str(), format!("v0={sig}")),
                ]
            }
            SignKey::Standard(key) => {
                let names = &STANDARD_HEADERS[0];
                let sig = b64_tag(key, &[id.as_bytes(), b".", ts.as_bytes(), b".", body]);
                vec![
                    (names.id.as_str(), id.to_owned()),
                    (names.timestamp.as_str(), ts),
                    (names.signature.as_str(), format!("v1,{sig}")),
                ]
            }
            SignKey::Shopify(key) => vec![(X_SHOPIFY_HMAC_SHA256.as_str(), b64_tag(key, &[body]))],
            SignKey::Gitlab(token) => vec![(X_GITLAB_TOKEN.as_str(), token.clone())],
        }
    }
}

/// Secrets stay out of logs (SPEC §8): only the scheme is shown.
impl fmt::Debug for Signer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Signer")
            .field("scheme", &self.scheme().name())
            .finish_non_exhaustive()
    }
}

/// [`Signer::new`] and [`Signer::sign`] in one step, for one-off signing.
pub fn sign(
    scheme: SignScheme,
    secret: &str,
    body: &[u8],
    now: SystemTime,
    id: &str,
) -> Result<Vec<(&'static str, String)>, SignError> {
    Ok(Signer::new(scheme, secret)?.sign(body, now, id))
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use axum::http::HeaderName;

    use super::super::vectors::*;
    use super::*;

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    fn signed(
        scheme: SignScheme,
        secret: &str,
        body: &str,
        now: u64,
        id: &str,
    ) -> Vec<(&'static str, String)> {
        sign(scheme, secret, body.as_bytes(), at(now), id).unwrap()
    }

    #[test]
    fn signing_reproduces_the_published_vectors() {
        assert_eq!(
            signed(SignScheme::Github, GITHUB_SECRET, GITHUB_BODY, 0, ""),
            [
                ("x-hub-signature-256", GITHUB_SIG.to_owned()),
                // GitHub publishes no SHA-1 example; this is
                // `printf 'Hello, World!' | openssl dgst -sha1 -hmac "It's a Secret to Everybody"`.
                (
                    "x-hub-signature",
                    "sha1=01dc10d0c83e72ed246219cdd91669667fe2ca59".to_owned()
                ),
            ]
        );
        assert_eq!(
            signed(SignScheme::Shopify, SHOPIFY_SECRET, SHOPIFY_BODY, 0, ""),
            [("x-shopify-hmac-sha256", SHOPIFY_SIG.to_owned())]
        );
        assert_eq!(
            signed(SignScheme::Slack, SLACK_SECRET, SLACK_BODY, SLACK_TS, ""),
            [
                ("x-slack-request-timestamp", SLACK_TS.to_string()),
                ("x-slack-signature", SLACK_SIG.to_owned()),
            ]
        );
        assert_eq!(
            signed(
                SignScheme::Stripe,
                STRIPE_SECRET,
                STRIPE_BODY,
                STRIPE_TS,
                ""
            ),
            [("stripe-signature", format!("t={STRIPE_TS},v1={STRIPE_V1}"))]
        );
        for (secret, id, ts, body, sig) in STANDARD {
            assert_eq!(
                signed(SignScheme::Standard, secret, body, ts, id),
                [
                    ("webhook-id", id.to_owned()),
                    ("webhook-timestamp", ts.to_string()),
                    ("webhook-signature", sig.to_owned()),
                ]
            );
        }
    }

    #[test]
    fn standard_signing_takes_the_secret_forms_verify_takes() {
        // The same key written the ways the reference libraries accept it.
        let (secret, id, ts, body, sig) = STANDARD_PADDED;
        let bare = secret.trim_start_matches("whsec_");
        let unpadded = secret.trim_end_matches('=');
        for form in [
            secret,
            bare,
            unpadded,
            unpadded.trim_start_matches("whsec_"),
        ] {
            assert_eq!(
                signed(SignScheme::Standard, form, body, ts, id)[2].1,
                sig,
                "{form}"
            );
        }
        // What verify refuses, sign refuses too: never a fallback key.
        for bad in ["", "whsec_", "whsec_not base64!", "whsec_***", "plain", "a"] {
            let err = Signer::new(SignScheme::Standard, bad)
                .unwrap_err()
                .to_string();
            assert!(err.contains("standard secret"), "{bad}: {err}");
            let verify = super::super::Verifier::compile(&super::super::VerifyConfig::Standard {
                secret: crate::config::OneOrMany(vec![bad.to_owned()]),
                tolerance: None,
            });
            assert!(verify.is_err(), "{bad}");
        }
    }

    #[test]
    fn stripe_and_gitlab_headers_have_the_provider_shape() {
        let headers = signed(SignScheme::Stripe, "sk", "{}", 1_700_000_000, "");
        let [(name, value)] = headers.as_slice() else {
            panic!("{headers:?}")
        };
        assert_eq!(*name, "stripe-signature");
        let hex = value.strip_prefix("t=1700000000,v1=").unwrap();
        assert_eq!(hex.len(), 64);
        assert!(hex.bytes().all(|b| b.is_ascii_hexdigit()));

        assert_eq!(
            signed(SignScheme::Gitlab, "tok", "{}", 0, ""),
            [("x-gitlab-token", "tok".to_owned())]
        );
    }

    #[test]
    fn header_names_are_lowercase_for_from_static() {
        for scheme in SignScheme::ALL {
            for (name, _) in signed(scheme, STANDARD[0].0, "{}", 1, "msg_1") {
                // Panics on an uppercase or invalid name.
                let _ = HeaderName::from_static(name);
            }
        }
    }

    #[test]
    fn scheme_names_parse_and_print() {
        for scheme in SignScheme::ALL {
            assert_eq!(scheme.to_string().parse::<SignScheme>(), Ok(scheme));
            assert_eq!(Signer::new(scheme, STANDARD[0].0).unwrap().scheme(), scheme);
        }
        let err = "GitHub".parse::<SignScheme>().unwrap_err().to_string();
        assert!(err.contains("unknown scheme `GitHub`"), "{err}");
    }

    #[test]
    fn empty_secrets_are_refused_and_debug_hides_the_secret() {
        for scheme in SignScheme::ALL {
            let err = Signer::new(scheme, "").unwrap_err().to_string();
            assert_eq!(err, format!("{scheme} secret must not be empty"));
        }
        let signer = Signer::new(SignScheme::Gitlab, "hunter2").unwrap();
        assert!(!format!("{signer:?}").contains("hunter2"));
    }
}
