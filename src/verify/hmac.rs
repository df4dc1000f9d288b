//! `verify: hmac`: any other HMAC of the raw body in a named header, with
//! its algorithm, encoding and prefix as the source says.

use axum::http::HeaderName;

use super::crypto::{Key, Sig, signed_by_any};
use super::{
    ConfigError, Encoding, HmacAlgorithm, OneOrMany, Received, VerifyError, header_name, non_empty,
    prepare, verdict,
};

pub(super) const NAME: &str = "hmac";

pub(super) struct Hmac {
    header: HeaderName,
    encoding: Encoding,
    /// Stripped before decoding; a signature without it is malformed.
    prefix: Box<[u8]>,
    keys: Vec<Key>,
}

impl Hmac {
    /// The defaults: SHA-256, hex, no prefix.
    pub(super) fn compile(
        header: &str,
        algorithm: Option<HmacAlgorithm>,
        encoding: Option<Encoding>,
        prefix: Option<&str>,
        secret: &OneOrMany<String>,
    ) -> Result<Self, ConfigError> {
        let algorithm = algorithm.unwrap_or(HmacAlgorithm::Sha256);
        Ok(Self {
            header: header_name(header)?,
            encoding: encoding.unwrap_or(Encoding::Hex),
            prefix: prefix.unwrap_or("").as_bytes().into(),
            keys: non_empty(NAME, "secret", secret)?
                .iter()
                .map(|s| prepare(algorithm, s.as_bytes()))
                .collect::<Result<_, _>>()?,
        })
    }

    pub(super) fn verify(&self, req: &Received<'_>) -> Result<(), VerifyError> {
        let sig = req
            .header(&self.header)?
            .strip_prefix(self.prefix.as_ref())
            .and_then(|text| Sig::decode(self.encoding, text))
            .ok_or_else(|| VerifyError::Malformed(self.header.clone()))?;
        verdict(signed_by_any(&self.keys, &[req.body], || {
            std::iter::once(sig)
        }))
    }
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderName;

    use crate::verify::testing::*;
    use crate::verify::{Encoding, HmacAlgorithm, VerifyError};

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
}
