//! `verify: standard`: Standard Webhooks, and Svix under its own header
//! prefix. `webhook-signature: v1,<base64> …` holds HMAC-SHA256s of
//! `{id}.{timestamp}.{body}`, the timestamp held to the tolerance; the secret
//! is a base64 key, read as the reference libraries read it.

use std::time::Duration;

use axum::http::HeaderName;
use base64::Engine as _;

use super::crypto::{Key, Sig, signed_by_any};
use super::{
    ConfigError, HmacAlgorithm, OneOrMany, Received, VerifyError, check_timestamp, non_empty,
    prepare, verdict,
};

pub(super) const NAME: &str = "standard";

/// The three headers of a Standard Webhooks request; Svix sends the same
/// under its own prefix.
pub(super) struct StandardHeaders {
    pub(super) id: HeaderName,
    pub(super) timestamp: HeaderName,
    pub(super) signature: HeaderName,
}

pub(super) static STANDARD_HEADERS: [StandardHeaders; 2] = [
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

pub(super) struct Standard {
    keys: Vec<Key>,
    tolerance: Duration,
}

impl Standard {
    pub(super) fn compile(
        secret: &OneOrMany<String>,
        tolerance: Duration,
    ) -> Result<Self, ConfigError> {
        let keys = non_empty(NAME, "secret", secret)?
            .iter()
            .map(|s| standard_key(s).and_then(|k| prepare(HmacAlgorithm::Sha256, &k)))
            .collect::<Result<_, _>>()?;
        Ok(Self { keys, tolerance })
    }

    pub(super) fn verify(&self, req: &Received<'_>) -> Result<(), VerifyError> {
        // A request names itself either way; `webhook-` wins if both are present.
        let names = STANDARD_HEADERS
            .iter()
            .find(|n| req.headers.contains_key(&n.id))
            .ok_or_else(|| VerifyError::MissingHeader(STANDARD_HEADERS[0].id.clone()))?;
        let id = req.header(&names.id)?;
        let ts = req.header(&names.timestamp)?;
        let list = req.header(&names.signature)?;
        check_timestamp(ts, req.now, self.tolerance)
            .map_err(|e| e.unwrap_or_else(|| VerifyError::Malformed(names.timestamp.clone())))?;
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
            &self.keys,
            &[id, b".", ts, b".", req.body],
            candidates,
        ))
    }
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
pub(super) fn standard_key(secret: &str) -> Result<Vec<u8>, ConfigError> {
    let b64 = secret.strip_prefix("whsec_").unwrap_or(secret);
    LENIENT_B64
        .decode(b64)
        .ok()
        .filter(|key| !key.is_empty())
        .ok_or(ConfigError::StandardSecret)
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderName;
    use base64::Engine as _;
    use base64::engine::general_purpose::STANDARD as B64;

    use crate::verify::testing::*;
    use crate::verify::vectors::*;
    use crate::verify::{SignScheme, VerifyError, sign};

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
}
