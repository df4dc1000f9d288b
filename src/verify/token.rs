//! `verify: token`: a shared token in a named header or query parameter.

use axum::http::HeaderName;

use super::crypto::equals_any;
use super::{ConfigError, OneOrMany, Received, VerifyError, header_name, plain, verdict};

pub(super) const NAME: &str = "token";

/// Where the token is, and the values it may have.
pub(super) enum Token {
    Header(HeaderName, Vec<Box<[u8]>>),
    Query(String, Vec<Box<[u8]>>),
}

impl Token {
    /// Exactly one of `header` and `query` names where the token is.
    pub(super) fn compile(
        header: Option<&str>,
        query: Option<&str>,
        value: &OneOrMany<String>,
    ) -> Result<Self, ConfigError> {
        let values = plain(NAME, "value", value)?;
        match (header, query) {
            (Some(h), None) => Ok(Token::Header(header_name(h)?, values)),
            (None, Some(q)) if !q.is_empty() => Ok(Token::Query(q.to_owned(), values)),
            (None, Some(_)) => Err(ConfigError::Empty {
                scheme: NAME,
                field: "query",
            }),
            _ => Err(ConfigError::TokenHeaderOrQuery),
        }
    }

    pub(super) fn verify(&self, req: &Received<'_>) -> Result<(), VerifyError> {
        match self {
            Token::Header(name, values) => verdict(equals_any(values, req.header(name)?)),
            Token::Query(name, values) => {
                // Decoding allocates only when the pair is percent-encoded.
                let given = url::form_urlencoded::parse(req.query.unwrap_or("").as_bytes())
                    .find(|(k, _)| k == name.as_str())
                    .map(|(_, v)| v)
                    .ok_or_else(|| VerifyError::MissingQuery(name.clone()))?;
                verdict(equals_any(values, given.as_bytes()))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderName;

    use crate::verify::testing::*;
    use crate::verify::{VerifyConfig, VerifyError};

    #[test]
    fn token_matches_by_header_or_by_query() {
        let by_header = compile(VerifyConfig::Token {
            header: Some("X-Api-Key".into()),
            query: None,
            value: secrets(&["k1", "s3cr=t&"]),
        });
        let by_query = compile(VerifyConfig::Token {
            header: None,
            query: Some("key".into()),
            value: secrets(&["k1", "s3cr=t&"]),
        });
        let req = |headers: &[(&str, &str)], query: Option<&str>| Req {
            query: query.map(str::to_owned),
            ..Req::new(headers, "{}", at(0))
        };
        let missing_header = Err(VerifyError::MissingHeader(HeaderName::from_static(
            "x-api-key",
        )));
        let missing_query = Err(VerifyError::MissingQuery("key".into()));
        let cases = [
            (&by_header, req(&[("x-api-key", "k1")], None), Ok(())),
            (&by_header, req(&[("X-API-KEY", "s3cr=t&")], None), Ok(())),
            (
                &by_header,
                req(&[("x-api-key", "k2")], None),
                Err(VerifyError::Mismatch),
            ),
            (
                &by_header,
                req(&[("x-api-key", "k")], None),
                Err(VerifyError::Mismatch),
            ),
            (&by_header, req(&[], Some("x-api-key=k1")), missing_header),
            (&by_query, req(&[], Some("a=1&key=k1")), Ok(())),
            (&by_query, req(&[], Some("key=s3cr%3Dt%26")), Ok(())),
            (
                &by_query,
                req(&[], Some("key=k2&key=k1")),
                Err(VerifyError::Mismatch),
            ),
            (
                &by_query,
                req(&[], Some("key=")),
                Err(VerifyError::Mismatch),
            ),
            (
                &by_query,
                req(&[("key", "k1")], Some("keys=k1")),
                missing_query.clone(),
            ),
            (&by_query, req(&[], None), missing_query),
        ];
        for (i, (v, req, expected)) in cases.iter().enumerate() {
            assert_eq!(req.check(v), *expected, "case {i}");
        }
    }
}
