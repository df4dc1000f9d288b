//! What a user writes in a rule file, as serde structs.
//!
//! These types only describe the schema (unknown keys are errors, positions are
//! kept); `rules::compile` turns them into what runs. Parts with free-form
//! shape (conditions, typed bodies, test expectations) stay [`Node`]s and are
//! compiled by hand.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::de::Spanned;
use super::node::Node;
use crate::config::{ByteSize, Duration, OneOrMany};
use crate::verify::VerifyConfig;

/// A webhook endpoint.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Source {
    /// URL path; default `/hooks/{name}`.
    pub path: Option<Spanned<String>>,
    /// Accepted HTTP methods; default `[POST]`.
    pub methods: Option<Vec<Spanned<String>>>,
    /// How requests prove where they come from; exactly one scheme.
    pub verify: Option<Spanned<VerifyConfig>>,
    /// Client addresses allowed (CIDR or single addresses).
    pub allow_ips: Option<Vec<Spanned<String>>>,
    /// Largest accepted body; overrides `--max-body`.
    pub max_body: Option<ByteSize>,
    /// `N/s`, `N/m` or `N/h`, per source.
    pub rate_limit: Option<Spanned<String>>,
    /// Template of a key; a second request with the same key within 24 h is a duplicate.
    pub dedup: Option<Spanned<String>>,
    /// Form or multipart fields whose text is JSON, decoded into the payload.
    pub json_fields: Option<Vec<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    pub name: Spanned<String>,
    pub source: Spanned<OneOrMany<String>>,
    pub enabled: Option<bool>,
    pub when: Option<Node>,
    pub actions: Option<Vec<Node>>,
    pub respond: Option<Respond>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Respond {
    pub status: Option<Spanned<u16>>,
    pub headers: Option<BTreeMap<String, Spanned<String>>>,
    pub body: Option<Node>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Action {
    pub name: Option<Spanned<String>>,
    pub when: Option<Node>,
    pub retry: Option<Retry>,
    pub serialize_by: Option<Spanned<String>>,
    /// At most this many attempts of this action run at once (its target's
    /// share of `--workers` when absent).
    pub concurrency: Option<Spanned<u32>>,
    /// Actions of the same rule that must have succeeded first (a name or a
    /// list): this action is then a step (SPEC §4.7). A node, so that each
    /// name keeps its position.
    pub needs: Option<Node>,
    /// The first attempt is due this long after the event (or after the
    /// last need succeeded, for a step).
    pub delay: Option<Duration>,
    pub http: Option<Http>,
    pub email: Option<Email>,
    pub command: Option<Command>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Retry {
    pub attempts: Option<Spanned<u32>>,
    pub initial: Option<Duration>,
    pub max: Option<Duration>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Http {
    pub method: Option<Spanned<String>>,
    pub url: Spanned<String>,
    pub headers: Option<BTreeMap<String, Spanned<String>>>,
    pub body: Option<Node>,
    pub form: Option<BTreeMap<String, Spanned<String>>>,
    pub forward: Option<bool>,
    pub timeout: Option<Duration>,
    pub allow_payload_host: Option<bool>,
    pub sign: Option<Sign>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Sign {
    pub standard: SignStandard,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignStandard {
    pub secret: Spanned<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Email {
    pub to: Spanned<OneOrMany<String>>,
    pub cc: Option<Vec<Spanned<String>>>,
    pub bcc: Option<Vec<Spanned<String>>>,
    pub from: Option<Spanned<String>>,
    pub subject: Spanned<String>,
    pub text: Option<Spanned<String>>,
    pub html: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Command {
    pub argv: Spanned<Vec<Spanned<String>>>,
    pub env: Option<BTreeMap<String, Spanned<String>>>,
    /// `payload` (JSON), `raw`, `none` (default) or a template.
    pub stdin: Option<Spanned<String>>,
    pub cwd: Option<String>,
    pub timeout: Option<Duration>,
}

/// A regression test of the rules (SPEC §4.6).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Test {
    pub name: Spanned<String>,
    pub source: Spanned<String>,
    pub payload: Option<Spanned<String>>,
    pub body: Option<String>,
    pub content_type: Option<String>,
    pub method: Option<String>,
    pub headers: Option<BTreeMap<String, String>>,
    pub query: Option<BTreeMap<String, String>>,
    /// Outputs of actions, as steps would see them (`steps: { crm: { status: 201, json: {…} } }`).
    pub steps: Option<BTreeMap<String, Node>>,
    pub expect: Expect,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Expect {
    pub matched: Option<Vec<String>>,
    pub actions: Option<BTreeMap<String, Node>>,
    pub status: Option<u16>,
    /// Steps (`rule/action`) whose `when` is false with the test's `steps` outputs.
    pub skipped: Option<Vec<String>>,
}
