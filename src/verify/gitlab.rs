//! `verify: gitlab`: `X-Gitlab-Token` equals one of the tokens.

use axum::http::HeaderName;

use super::crypto::equals_any;
use super::{ConfigError, OneOrMany, Received, VerifyError, plain, verdict};

pub(super) const NAME: &str = "gitlab";

pub(super) static X_GITLAB_TOKEN: HeaderName = HeaderName::from_static("x-gitlab-token");

pub(super) struct Gitlab {
    tokens: Vec<Box<[u8]>>,
}

impl Gitlab {
    pub(super) fn compile(token: &OneOrMany<String>) -> Result<Self, ConfigError> {
        Ok(Self {
            tokens: plain(NAME, "token", token)?,
        })
    }

    pub(super) fn verify(&self, req: &Received<'_>) -> Result<(), VerifyError> {
        verdict(equals_any(&self.tokens, req.header(&X_GITLAB_TOKEN)?))
    }
}
