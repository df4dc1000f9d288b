//! `verify: github`: `X-Hub-Signature-256: sha256=<hex>`, an HMAC-SHA256 of
//! the body.

use axum::http::HeaderName;

use super::crypto::{Key, Sig, signed_by_any};
use super::{ConfigError, OneOrMany, Received, VerifyError, hmac_keys, verdict};

pub(super) const NAME: &str = "github";

pub(super) static X_HUB_SIGNATURE_256: HeaderName = HeaderName::from_static("x-hub-signature-256");

pub(super) struct Github {
    keys: Vec<Key>,
}

impl Github {
    pub(super) fn compile(secret: &OneOrMany<String>) -> Result<Self, ConfigError> {
        Ok(Self {
            keys: hmac_keys(NAME, secret)?,
        })
    }

    pub(super) fn verify(&self, req: &Received<'_>) -> Result<(), VerifyError> {
        let sig = req
            .header(&X_HUB_SIGNATURE_256)?
            .strip_prefix(b"sha256=")
            .and_then(Sig::hex)
            .ok_or_else(|| VerifyError::Malformed(X_HUB_SIGNATURE_256.clone()))?;
        verdict(signed_by_any(&self.keys, &[req.body], || {
            std::iter::once(sig)
        }))
    }
}

#[cfg(test)]
mod tests {
    use crate::verify::testing::*;
    use crate::verify::vectors::*;

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
}
