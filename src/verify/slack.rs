//! `verify: slack`: `X-Slack-Signature: v0=<hex>`, an HMAC-SHA256 of
//! `v0:{X-Slack-Request-Timestamp}:{body}`, the timestamp held to the
//! tolerance.

use std::time::Duration;

use axum::http::HeaderName;

use super::crypto::{Key, Sig, signed_by_any};
use super::{ConfigError, OneOrMany, Received, VerifyError, check_timestamp, hmac_keys, verdict};

pub(super) const NAME: &str = "slack";

pub(super) static X_SLACK_SIGNATURE: HeaderName = HeaderName::from_static("x-slack-signature");
pub(super) static X_SLACK_REQUEST_TIMESTAMP: HeaderName =
    HeaderName::from_static("x-slack-request-timestamp");

pub(super) struct Slack {
    keys: Vec<Key>,
    tolerance: Duration,
}

impl Slack {
    pub(super) fn compile(
        secret: &OneOrMany<String>,
        tolerance: Duration,
    ) -> Result<Self, ConfigError> {
        Ok(Self {
            keys: hmac_keys(NAME, secret)?,
            tolerance,
        })
    }

    pub(super) fn verify(&self, req: &Received<'_>) -> Result<(), VerifyError> {
        let ts = req.header(&X_SLACK_REQUEST_TIMESTAMP)?;
        check_timestamp(ts, req.now, self.tolerance).map_err(|e| {
            e.unwrap_or_else(|| VerifyError::Malformed(X_SLACK_REQUEST_TIMESTAMP.clone()))
        })?;
        let sig = req
            .header(&X_SLACK_SIGNATURE)?
            .strip_prefix(b"v0=")
            .and_then(Sig::hex)
            .ok_or_else(|| VerifyError::Malformed(X_SLACK_SIGNATURE.clone()))?;
        verdict(signed_by_any(
            &self.keys,
            &[b"v0:", ts, b":", req.body],
            || std::iter::once(sig),
        ))
    }
}

#[cfg(test)]
mod tests {
    use crate::verify::testing::*;
    use crate::verify::vectors::*;

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
}
