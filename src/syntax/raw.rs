//! What a user writes in a rule file, as serde structs.
//!
//! These types only describe the schema (unknown keys are errors, positions are
//! kept); `rules::compile` turns them into what runs. Parts with free-form
//! shape (conditions, typed bodies, test expectations) stay [`Node`]s and are
//! compiled by hand.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::Deserialize;

use super::de::Spanned;
use super::grammar;
use super::node::Node;
use crate::config::{ByteSize, Duration, OneOrMany};
use crate::verify::VerifyConfig;

/// A rule file: what `hookwire schema` describes. The loader reads the three
/// keys one by one (so one bad rule does not hide the others) into the types
/// below.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "hookwire rule file")]
pub struct RuleFile {
    /// Webhook endpoints, by name (lowercase letters, digits, `-` and `_`).
    #[schemars(extend("propertyNames" = { "pattern": NAME }))]
    #[schemars(with = "Option<BTreeMap<String, SourceOrDefaults>>")]
    pub sources: Option<BTreeMap<String, Option<Source>>>,
    /// Which events fire which actions; every rule whose `when` holds fires.
    pub rules: Option<Vec<Rule>>,
    /// Regression tests of these rules, run by `hookwire check`.
    pub tests: Option<Vec<Test>>,
}

/// The top-level keys of a rule file, in the loader's words.
pub const TOP_LEVEL: [&str; 3] = ["sources", "rules", "tests"];

/// Names of sources, rules and actions.
const NAME: &str = "^[a-z0-9_-]+$";

/// The rule-file JSON Schema (draft 2020-12), with a description on every
/// field from the doc comments here.
pub fn schema() -> serde_json::Value {
    let mut schema = schemars::generate::SchemaSettings::draft2020_12()
        .into_generator()
        .into_root_schema_for::<RuleFile>()
        .to_value();
    tidy(&mut schema);
    schema
}

/// What schemars writes literally, said the way an editor shows it best:
/// - an optional field is simply absent, so `T | null` becomes `T` (the
///   loader also reads an explicit null as absent; the schema asks for the
///   value or nothing, and names the one place where null means something);
/// - the variants of an enum such as `verify` are objects with one key: that
///   key carries the variant's description, which is where hover shows it.
fn tidy(v: &mut serde_json::Value) {
    use serde_json::Value;
    match v {
        Value::Object(map) => {
            let null = serde_json::json!({ "type": "null" });
            if let Some(Value::Array(alts)) = map.get("anyOf")
                && alts.len() == 2
                && alts.contains(&null)
            {
                let Some(Value::Object(other)) = alts.iter().find(|a| **a != null).cloned() else {
                    return;
                };
                map.remove("anyOf");
                for (k, x) in other {
                    map.entry(k).or_insert(x);
                }
            }
            if let Some(Value::Array(types)) = map.get_mut("type") {
                types.retain(|t| t != "null");
                if let [one] = types.as_slice() {
                    let one = one.clone();
                    map.insert("type".into(), one);
                }
            }
            if let (Some(Value::String(doc)), Some(Value::Object(props))) =
                (map.get("description").cloned(), map.get_mut("properties"))
                && props.len() == 1
                && let Some(Value::Object(only)) = props.values_mut().next()
            {
                only.entry("description").or_insert(Value::String(doc));
            }
            map.values_mut().for_each(tidy);
        }
        Value::Array(items) => items.iter_mut().for_each(tidy),
        _ => {}
    }
}

/// A condition (SPEC §4.3), described from [`grammar`]'s words.
pub struct Condition;

impl JsonSchema for Condition {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Condition".into()
    }

    fn json_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
        let me = generator.subschema_for::<Condition>().to_value();
        let value = grammar::condition_schema(&me);
        // The grammar builds objects only.
        schemars::Schema::try_from(value).unwrap_or_default()
    }
}

/// A source as written: `github:` with nothing under it is a source with all
/// defaults.
pub struct SourceOrDefaults;

impl JsonSchema for SourceOrDefaults {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "SourceOrDefaults".into()
    }

    fn inline_schema() -> bool {
        true
    }

    fn json_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
        let source = generator.subschema_for::<Source>();
        schemars::json_schema!({
            "anyOf": [
                source,
                { "type": "null", "description": "Nothing: a source with all defaults (`/hooks/{name}`, POST, no verification)." }
            ]
        })
    }
}

/// A typed or raw body (SPEC §4.4).
pub struct Body;

impl JsonSchema for Body {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Body".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "description": "A map or list is sent as JSON, every string leaf rendered on its own; a string is a raw text template.",
            "type": ["object", "array", "string"]
        })
    }
}

/// An action's output as a rule test gives it (SPEC §4.7).
pub struct StepOutput;

impl JsonSchema for StepOutput {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "StepOutput".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "description": "The output of an action as its steps would read it: http `{status, headers, body, json}`, command `{exit_code, stdout, stderr, json}`.",
            "type": "object",
            "properties": {
                "status": { "type": "integer", "description": "The HTTP status." },
                "headers": { "type": "object", "description": "Response headers." },
                "body": { "type": "string", "description": "The response body as text." },
                "json": { "description": "The body (or stdout) parsed as JSON." },
                "exit_code": { "type": "integer", "description": "The command's exit code." },
                "stdout": { "type": "string", "description": "The command's standard output." },
                "stderr": { "type": "string", "description": "The command's standard error." }
            }
        })
    }
}

/// A webhook endpoint: where requests arrive and how they prove their origin.
#[derive(Debug, Deserialize, JsonSchema)]
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

/// Which events of a source fire which actions.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    /// Unique across the rules directory: lowercase letters, digits, `-` and `_`.
    #[schemars(regex(pattern = NAME))]
    pub name: Spanned<String>,
    /// The source (or a list of sources) whose events this rule sees.
    pub source: Spanned<OneOrMany<String>>,
    /// `false` keeps the rule loaded but never fires it; default `true`.
    pub enabled: Option<bool>,
    /// When the rule fires: one condition or a list (all must hold); absent,
    /// every event of the source.
    #[schemars(with = "Option<Condition>")]
    pub when: Option<Node>,
    /// What a matching event sets off, side by side unless one `needs` others.
    #[schemars(with = "Option<Vec<Action>>")]
    pub actions: Option<Vec<Node>>,
    /// Answer the sender with this instead of `202 Accepted`.
    pub respond: Option<Respond>,
}

/// The answer to the sender, instead of `202 Accepted`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Respond {
    /// The HTTP status of the answer; default `200`.
    #[schemars(range(min = 100, max = 599))]
    pub status: Option<Spanned<u16>>,
    /// Headers of the answer, each a template.
    pub headers: Option<BTreeMap<String, Spanned<String>>>,
    /// A map or list is sent as JSON (each string leaf a template), a string
    /// as raw text.
    #[schemars(with = "Option<Body>")]
    pub body: Option<Node>,
}

/// One thing to do for a matching event: exactly one of `http`, `email`, `command`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(extend("oneOf" = [{ "required": ["http"] }, { "required": ["email"] }, { "required": ["command"] }]))]
pub struct Action {
    /// Unique in the rule; default `<type>-<index>` (`http-0`).
    #[schemars(regex(pattern = NAME))]
    pub name: Option<Spanned<String>>,
    /// A condition for this action alone, evaluated with the rule (or, for a
    /// step, when its needs succeeded, with their outputs); false means no
    /// delivery.
    #[schemars(with = "Option<Condition>")]
    pub when: Option<Node>,
    /// How failed attempts are retried; default 15 attempts from 5s, at most 4h apart.
    pub retry: Option<Retry>,
    /// A template of a key: deliveries with the same key run one at a time,
    /// in event order, across every action and rule that renders it.
    pub serialize_by: Option<Spanned<String>>,
    /// At most this many attempts of this action run at once (its target's
    /// share of `--workers` when absent).
    pub concurrency: Option<Spanned<u32>>,
    /// Actions of the same rule that must have succeeded first (a name or a
    /// list): this action is then a step (SPEC §4.7). A node, so that each
    /// name keeps its position.
    #[schemars(with = "Option<OneOrMany<String>>")]
    pub needs: Option<Node>,
    /// The first attempt is due this long after the event (or after the
    /// last need succeeded, for a step).
    pub delay: Option<Duration>,
    /// Send an HTTP request.
    pub http: Option<Http>,
    /// Send an email through `--smtp-url`.
    pub email: Option<Email>,
    /// Run a program, never through a shell.
    pub command: Option<Command>,
}

/// Exponential backoff: `initial`, doubling, capped at `max`, `attempts` in all.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Retry {
    /// At most this many attempts in all (then the delivery is dead); default 15.
    #[schemars(range(min = 1))]
    pub attempts: Option<Spanned<u32>>,
    /// The first wait; it doubles each time (±20 % jitter). Default `5s`.
    pub initial: Option<Duration>,
    /// The longest wait between attempts (also caps `Retry-After`). Default `4h`.
    pub max: Option<Duration>,
}

/// An HTTP request; 2xx succeeds, network errors, 408, 425, 429 and 5xx are retried.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Http {
    /// Default `POST`.
    pub method: Option<Spanned<String>>,
    /// An `http` or `https` URL, a template; payload values in its path and
    /// query are percent-encoded.
    pub url: Spanned<String>,
    /// Request headers, each a template.
    pub headers: Option<BTreeMap<String, Spanned<String>>>,
    /// A map or list is sent as JSON (each string leaf a template; a leaf that
    /// is exactly one `{{expr}}` keeps its JSON type), a string as raw text.
    #[schemars(with = "Option<Body>")]
    pub body: Option<Node>,
    /// Fields sent as `application/x-www-form-urlencoded`, each a template.
    pub form: Option<BTreeMap<String, Spanned<String>>>,
    /// `true`: relay the original body, content type and end-to-end headers unchanged.
    pub forward: Option<bool>,
    /// How long one attempt may take; default `30s`.
    pub timeout: Option<Duration>,
    /// Allow a URL host rendered from the payload (the address must then be public).
    pub allow_payload_host: Option<bool>,
    /// Sign the request so the receiver can verify it.
    pub sign: Option<Sign>,
}

/// How an http action signs its requests.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Sign {
    /// Standard Webhooks: `webhook-id` (the delivery id), `webhook-timestamp`, `webhook-signature`.
    pub standard: SignStandard,
}

/// The Standard Webhooks signing key.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SignStandard {
    /// The base64 key, usually after `whsec_`; write it as `${VAR}`.
    pub secret: Spanned<String>,
}

/// An email; accepted by the server succeeds, 4xx is retried, 5xx is dead.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Email {
    /// Recipients, each a template.
    pub to: Spanned<OneOrMany<String>>,
    /// Copy recipients, each a template.
    pub cc: Option<Vec<Spanned<String>>>,
    /// Blind-copy recipients, each a template.
    pub bcc: Option<Vec<Spanned<String>>>,
    /// The sender; default `--smtp-from`.
    pub from: Option<Spanned<String>>,
    /// A template.
    pub subject: Spanned<String>,
    /// The plain-text body, a template.
    pub text: Option<Spanned<String>>,
    /// The HTML body, a template (not escaped).
    pub html: Option<Spanned<String>>,
}

/// A program run without a shell; exit 0 succeeds, anything else is retried.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Command {
    /// The program and its arguments, each a template and one argument (no shell).
    #[schemars(length(min = 1))]
    pub argv: Spanned<Vec<Spanned<String>>>,
    /// Extra environment variables, each a template.
    pub env: Option<BTreeMap<String, Spanned<String>>>,
    /// `payload` (JSON), `raw`, `none` (default) or a template.
    pub stdin: Option<Spanned<String>>,
    /// The working directory.
    pub cwd: Option<String>,
    /// Default `60s`; on timeout the process group is killed.
    pub timeout: Option<Duration>,
}

/// A regression test of the rules (SPEC §4.6).
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Test {
    /// Shown when the test fails.
    pub name: Spanned<String>,
    /// The source the test request is sent to.
    pub source: Spanned<String>,
    /// A file holding the request body, relative to this rule file.
    pub payload: Option<Spanned<String>>,
    /// The request body, written out.
    pub body: Option<String>,
    /// The request's `Content-Type`; default `application/json`.
    pub content_type: Option<String>,
    /// The request's method; default `POST`.
    pub method: Option<String>,
    /// Request headers.
    pub headers: Option<BTreeMap<String, String>>,
    /// Query-string parameters.
    pub query: Option<BTreeMap<String, String>>,
    /// Outputs of actions, as steps would see them (`steps: { crm: { status: 201, json: {…} } }`).
    #[schemars(with = "Option<BTreeMap<String, StepOutput>>")]
    pub steps: Option<BTreeMap<String, Node>>,
    /// What the rules must do with the request.
    pub expect: Expect,
}

/// What a rule test expects.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Expect {
    /// Exactly these rules match (`[]`: none).
    pub matched: Option<Vec<String>>,
    /// `rule/action` → fields of the rendered action; only the named fields are compared.
    #[schemars(with = "Option<BTreeMap<String, serde_json::Map<String, serde_json::Value>>>")]
    pub actions: Option<BTreeMap<String, Node>>,
    /// The HTTP status the sender gets.
    pub status: Option<u16>,
    /// Steps (`rule/action`) whose `when` is false with the test's `steps` outputs.
    pub skipped: Option<Vec<String>>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_schema_has_the_loaders_top_level_keys() {
        let schema = schema();
        let mut keys: Vec<&str> = schema["properties"]
            .as_object()
            .map(|p| p.keys().map(String::as_str).collect())
            .unwrap_or_default();
        keys.sort_unstable();
        let mut loader = TOP_LEVEL.to_vec();
        loader.sort_unstable();
        assert_eq!(keys, loader);
        assert_eq!(schema["additionalProperties"], false);
    }
}
