//! `verify: basic`: `Authorization: Basic …` with one username and password.

use axum::http::header::AUTHORIZATION;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use subtle::ConstantTimeEq;

use super::{ConfigError, Received, VerifyError, verdict};

pub(super) const NAME: &str = "basic";

pub(super) struct Basic {
    /// `username:password`, as the decoded credentials must read.
    expected: Box<[u8]>,
}

impl Basic {
    pub(super) fn compile(username: &str, password: &str) -> Result<Self, ConfigError> {
        // The decoded credentials are split at the first `:` (RFC 7617).
        if username.contains(':') {
            return Err(ConfigError::ColonInUsername);
        }
        if password.is_empty() {
            return Err(ConfigError::Empty {
                scheme: NAME,
                field: "password",
            });
        }
        Ok(Self {
            expected: format!("{username}:{password}").into_bytes().into(),
        })
    }

    pub(super) fn verify(&self, req: &Received<'_>) -> Result<(), VerifyError> {
        let malformed = || VerifyError::Malformed(AUTHORIZATION);
        let value = req.header(&AUTHORIZATION)?;
        let encoded = basic_credentials(value).ok_or_else(malformed)?;
        let given = B64.decode(encoded).map_err(|_| malformed())?;
        verdict(bool::from(self.expected.as_ref().ct_eq(&given)))
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

#[cfg(test)]
mod tests {
    use axum::http::header::AUTHORIZATION;
    use base64::Engine as _;
    use base64::engine::general_purpose::STANDARD as B64;

    use crate::verify::testing::*;
    use crate::verify::{VerifyConfig, VerifyError};

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
}
