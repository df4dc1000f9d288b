//! `verify: stripe`: `Stripe-Signature: t=<unix>,v1=<hex>[,v1=…]`, an
//! HMAC-SHA256 of `{t}.{body}`, its timestamp held to the tolerance.

use std::time::Duration;

use axum::http::HeaderName;

use super::crypto::{Key, Sig, signed_by_any};
use super::{ConfigError, OneOrMany, Received, VerifyError, check_timestamp, hmac_keys, verdict};

pub(super) const NAME: &str = "stripe";

pub(super) static STRIPE_SIGNATURE: HeaderName = HeaderName::from_static("stripe-signature");

pub(super) struct Stripe {
    keys: Vec<Key>,
    tolerance: Duration,
}

impl Stripe {
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
        let value = req.header(&STRIPE_SIGNATURE)?;
        let malformed = || VerifyError::Malformed(STRIPE_SIGNATURE.clone());
        let fields = || value.split(|&b| b == b',').map(<[u8]>::trim_ascii);
        let t = fields()
            .find_map(|f| f.strip_prefix(b"t="))
            .ok_or_else(malformed)?;
        check_timestamp(t, req.now, self.tolerance).map_err(|e| e.unwrap_or_else(malformed))?;
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
        verdict(signed_by_any(&self.keys, &[t, b".", req.body], candidates))
    }
}

#[cfg(test)]
mod tests {
    use super::STRIPE_SIGNATURE;
    use crate::verify::testing::*;
    use crate::verify::vectors::*;
    use crate::verify::{SignScheme, VerifyError, sign};

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
}
