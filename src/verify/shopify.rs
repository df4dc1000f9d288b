//! `verify: shopify`: `X-Shopify-Hmac-Sha256: <base64>`, an HMAC-SHA256 of
//! the body.

use axum::http::HeaderName;

use super::crypto::{Key, Sig, signed_by_any};
use super::{ConfigError, OneOrMany, Received, VerifyError, hmac_keys, verdict};

pub(super) const NAME: &str = "shopify";

pub(super) static X_SHOPIFY_HMAC_SHA256: HeaderName =
    HeaderName::from_static("x-shopify-hmac-sha256");

pub(super) struct Shopify {
    keys: Vec<Key>,
}

impl Shopify {
    pub(super) fn compile(secret: &OneOrMany<String>) -> Result<Self, ConfigError> {
        Ok(Self {
            keys: hmac_keys(NAME, secret)?,
        })
    }

    pub(super) fn verify(&self, req: &Received<'_>) -> Result<(), VerifyError> {
        let sig = Sig::base64(req.header(&X_SHOPIFY_HMAC_SHA256)?)
            .ok_or_else(|| VerifyError::Malformed(X_SHOPIFY_HMAC_SHA256.clone()))?;
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
}
