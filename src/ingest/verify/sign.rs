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
use super::{
    HmacAlgorithm, STANDARD_HEADERS, STRIPE_SIGNATURE, X_GITLAB_TOKEN, X_HUB_SIGNATURE_256,
    X_SHOPIFY_HMAC_SHA256, X_SLACK_REQUEST_TIMESTAMP, X_SLACK_SIGNATURE, standard_key, unix_secs,
};

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

    /// Whether `secret` is one the matching `verify:` would accept; call it
    /// where the secret is configured, since `sign` itself cannot fail.
    pub fn check_secret(self, secret: &str) -> Result<(), String> {
        if secret.is_empty() {
            return Err(format!("{} secret must not be empty", self.name()));
        }
        if self == SignScheme::Standard {
            standard_key(secret)?;
        }
        Ok(())
    }
}

impl FromStr for SignScheme {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        SignScheme::ALL
            .into_iter()
            .find(|scheme| scheme.name() == s)
            .ok_or_else(|| {
                format!("unknown scheme `{s}`: github, stripe, slack, standard, shopify or gitlab")
            })
    }
}

impl fmt::Display for SignScheme {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The headers a provider would send with `body`, names in lowercase (so
/// `HeaderName::from_static` takes them). `now` dates the signature where
/// the scheme has a timestamp; `id` is the Standard Webhooks `webhook-id`.
///
/// A standard secret should be `whsec_` + base64 ([`SignScheme::check_secret`]);
/// bare base64 is accepted as the reference libraries do, and anything else
/// is used as raw key bytes rather than failing.
pub fn sign(
    scheme: SignScheme,
    secret: &str,
    body: &[u8],
    now: SystemTime,
    id: &str,
) -> Vec<(&'static str, String)> {
    let ts = unix_secs(now).max(0).to_string();
    let tag =
        |key: &[u8], parts: &[&[u8]]| Key::new(HmacAlgorithm::Sha256, key).map(|k| k.tag(parts));
    let key = secret.as_bytes();
    // `tag` is `None` only if HMAC refused a key, which it never does for any
    // length; no headers is then the honest answer.
    let headers = match scheme {
        SignScheme::Github => tag(key, &[body]).map(|t| {
            vec![(
                X_HUB_SIGNATURE_256.as_str(),
                format!("sha256={}", hex::encode(t.as_slice())),
            )]
        }),
        SignScheme::Stripe => tag(key, &[ts.as_bytes(), b".", body]).map(|t| {
            vec![(
                STRIPE_SIGNATURE.as_str(),
                format!("t={ts},v1={}", hex::encode(t.as_slice())),
            )]
        }),
        SignScheme::Slack => tag(key, &[b"v0:", ts.as_bytes(), b":", body]).map(|t| {
            vec![
                (X_SLACK_REQUEST_TIMESTAMP.as_str(), ts.clone()),
                (
                    X_SLACK_SIGNATURE.as_str(),
                    format!("v0={}", hex::encode(t.as_slice())),
                ),
            ]
        }),
        SignScheme::Standard => {
            let key = standard_key(secret)
                .or_else(|_| B64.decode(secret))
                .unwrap_or_else(|_| key.to_vec());
            let names = &STANDARD_HEADERS[0];
            tag(&key, &[id.as_bytes(), b".", ts.as_bytes(), b".", body]).map(|t| {
                vec![
                    (names.id.as_str(), id.to_owned()),
                    (names.timestamp.as_str(), ts.clone()),
                    (
                        names.signature.as_str(),
                        format!("v1,{}", B64.encode(t.as_slice())),
                    ),
                ]
            })
        }
        SignScheme::Shopify => tag(key, &[body])
            .map(|t| vec![(X_SHOPIFY_HMAC_SHA256.as_str(), B64.encode(t.as_slice()))]),
        SignScheme::Gitlab => Some(vec![(X_GITLAB_TOKEN.as_str(), secret.to_owned())]),
    };
    headers.unwrap_or_default()
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

    #[test]
    fn signing_reproduces_the_published_vectors() {
        assert_eq!(
            sign(
                SignScheme::Github,
                GITHUB_SECRET,
                GITHUB_BODY.as_bytes(),
                at(0),
                ""
            ),
            [("x-hub-signature-256", GITHUB_SIG.to_owned())]
        );
        assert_eq!(
            sign(
                SignScheme::Shopify,
                SHOPIFY_SECRET,
                SHOPIFY_BODY.as_bytes(),
                at(0),
                ""
            ),
            [("x-shopify-hmac-sha256", SHOPIFY_SIG.to_owned())]
        );
        assert_eq!(
            sign(
                SignScheme::Slack,
                SLACK_SECRET,
                SLACK_BODY.as_bytes(),
                at(SLACK_TS),
                ""
            ),
            [
                ("x-slack-request-timestamp", SLACK_TS.to_string()),
                ("x-slack-signature", SLACK_SIG.to_owned()),
            ]
        );
        for (secret, id, ts, body, sig) in STANDARD {
            assert_eq!(
                sign(SignScheme::Standard, secret, body.as_bytes(), at(ts), id),
                [
                    ("webhook-id", id.to_owned()),
                    ("webhook-timestamp", ts.to_string()),
                    ("webhook-signature", sig.to_owned()),
                ]
            );
            // Bare base64, as the reference libraries also accept.
            let bare = secret.trim_start_matches("whsec_");
            assert_eq!(
                sign(SignScheme::Standard, bare, body.as_bytes(), at(ts), id)[2].1,
                sig
            );
        }
    }

    #[test]
    fn stripe_and_gitlab_headers_have_the_provider_shape() {
        let headers = sign(SignScheme::Stripe, "sk", b"{}", at(1_700_000_000), "");
        let [(name, value)] = headers.as_slice() else {
            panic!("{headers:?}")
        };
        assert_eq!(*name, "stripe-signature");
        let hex = value.strip_prefix("t=1700000000,v1=").unwrap();
        assert_eq!(hex.len(), 64);
        assert!(hex.bytes().all(|b| b.is_ascii_hexdigit()));

        assert_eq!(
            sign(SignScheme::Gitlab, "tok", b"{}", at(0), ""),
            [("x-gitlab-token", "tok".to_owned())]
        );
    }

    #[test]
    fn header_names_are_lowercase_for_from_static() {
        for scheme in SignScheme::ALL {
            for (name, _) in sign(scheme, STANDARD[0].0, b"{}", at(1), "msg_1") {
                // Panics on an uppercase or invalid name.
                let _ = HeaderName::from_static(name);
            }
        }
    }

    #[test]
    fn scheme_names_parse_and_print() {
        for scheme in SignScheme::ALL {
            assert_eq!(scheme.to_string().parse::<SignScheme>(), Ok(scheme));
        }
        let err = "GitHub".parse::<SignScheme>().unwrap_err();
        assert!(err.contains("unknown scheme `GitHub`"), "{err}");
    }

    #[test]
    fn check_secret_matches_what_verify_accepts() {
        assert_eq!(SignScheme::Github.check_secret("s"), Ok(()));
        assert_eq!(SignScheme::Standard.check_secret(STANDARD[0].0), Ok(()));
        assert!(SignScheme::Github.check_secret("").is_err());
        assert!(SignScheme::Standard.check_secret("plain").is_err());
        assert!(SignScheme::Standard.check_secret("whsec_***").is_err());
    }
}
