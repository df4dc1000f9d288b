//! Templates: compiled once at load, rendered per event (and, for actions,
//! per attempt).
//!
//! [`Template`] is one handlebars string (plain text costs nothing to render).
//! [`JsonTemplate`] is a typed body written as a YAML map or list: each string
//! leaf is rendered on its own and JSON-encoded, so no payload value can break
//! the document, and a leaf that is exactly one `{{expr}}` keeps the JSON type
//! of its value. No HTML escaping anywhere.

mod analysis;
pub mod helpers;

use std::sync::LazyLock;

use handlebars::Handlebars;
use serde_json::Value;

use crate::request::Request;
use crate::syntax::node::{Kind, Node, Pos};

/// Helpers never change, so one registry serves every rule set.
static REGISTRY: LazyLock<Handlebars<'static>> = LazyLock::new(helpers::registry);

/// For URLs: every `{{expr}}` is percent-encoded as one path or query
/// component (SPEC §8), so a payload value cannot add a path segment, a query
/// parameter or a fragment. `{{{expr}}}` opts out.
static URL_REGISTRY: LazyLock<Handlebars<'static>> = LazyLock::new(|| {
    let mut r = helpers::registry();
    r.register_escape_fn(|s| percent_encoding::utf8_percent_encode(s, URL_COMPONENT).to_string());
    r
});

/// Everything but RFC 3986's unreserved characters.
const URL_COMPONENT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

pub use handlebars::Context;

/// A render failure (a helper given bad arguments, a bad runtime JSONPath…).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct RenderError(String);

impl From<handlebars::RenderError> for RenderError {
    fn from(e: handlebars::RenderError) -> Self {
        RenderError(e.to_string())
    }
}

/// One compiled string template.
#[derive(Debug, Clone)]
pub struct Template {
    source: String,
    /// `None` when the source has no `{{`: it renders as itself.
    compiled: Option<handlebars::Template>,
    /// Rendered with URL-component escaping ([`Template::compile_url`]).
    url: bool,
}

impl Template {
    /// Compiles `source`; the error names the position inside the template.
    pub fn compile(source: &str) -> Result<Self, String> {
        if !source.contains("{{") {
            return Ok(Self {
                source: source.to_owned(),
                compiled: None,
                url: false,
            });
        }
        if nesting(source) > MAX_NESTING {
            return Err(format!(
                "invalid template: blocks and subexpressions nested deeper than {MAX_NESTING} levels"
            ));
        }
        let compiled = handlebars::Template::compile(source).map_err(|e| {
            let mut reason = e.reason().to_string();
            // pest lists every token it would have taken; the position says more.
            if let Some(i) = reason.find(": expected escape, expression") {
                reason.truncate(i);
            }
            match e.pos() {
                Some((line, col)) => {
                    format!("invalid template: {reason} (template line {line}, column {col})")
                }
                None => format!("invalid template: {reason}"),
            }
        })?;
        for path in analysis::literal_jsonpath_args(&compiled) {
            crate::matching::JsonPath::compile(&path)?;
        }
        Ok(Self {
            source: source.to_owned(),
            compiled: Some(compiled),
            url: false,
        })
    }

    /// A URL template: values rendered into it are percent-encoded.
    pub fn compile_url(source: &str) -> Result<Self, String> {
        Ok(Self {
            url: true,
            ..Self::compile(source)?
        })
    }

    pub fn source(&self) -> &str {
        &self.source
    }

    pub fn is_literal(&self) -> bool {
        self.compiled.is_none()
    }

    pub fn render(&self, ctx: &Context) -> Result<String, RenderError> {
        match &self.compiled {
            None => Ok(self.source.clone()),
            Some(t) => {
                let registry = if self.url { &URL_REGISTRY } else { &REGISTRY };
                Ok(helpers::render(registry, t, ctx)?)
            }
        }
    }

    /// The actions whose outputs this template reads (`steps.<name>`).
    pub fn step_refs(&self) -> Vec<String> {
        self.compiled
            .as_ref()
            .map(analysis::step_refs)
            .unwrap_or_default()
    }

    /// Dotted paths this template refers to that `ctx` does not have.
    pub fn missing_fields(&self, ctx: &Value) -> Vec<String> {
        self.compiled
            .as_ref()
            .map(|t| analysis::missing_fields(t, ctx))
            .unwrap_or_default()
    }
}

/// Deeper than any real template. handlebars compiles subexpressions and
/// renders blocks (an `{{else if}}` chain is one more block per link)
/// recursively, and a few hundred levels overflow a 2 MiB thread stack: a
/// rule file must not be able to crash a reload or a delivery that way.
const MAX_NESTING: usize = 32;

/// How deeply `source` nests blocks and subexpressions, read from its tags
/// alone. Errs on the deep side (a `(` in a raw block counts), which only
/// matters past [`MAX_NESTING`].
fn nesting(source: &str) -> usize {
    let b = source.as_bytes();
    let find = |from: usize, pat: &[u8]| {
        b.get(from..)
            .and_then(|rest| rest.windows(pat.len()).position(|w| w == pat))
            .map(|i| from + i)
    };
    let mut max = 0;
    let mut depth = 0;
    // The depth each open block started at: a close returns to it, however
    // many `{{else if}}` links the block grew.
    let mut opens: Vec<usize> = Vec::new();
    let mut i = 0;
    while let Some(start) = find(i, b"{{") {
        let mut j = start + 2;
        while matches!(b.get(j), Some(b'{' | b'~')) {
            j += 1;
        }
        // `{{{{name}}}}` … `{{{{/name}}}}` is a raw block.
        let raw = b.get(start..j).is_some_and(|t| t.starts_with(b"{{{{"));
        if b.get(j..).is_some_and(|r| r.starts_with(b"!--")) {
            i = find(j, b"--}}").map_or(b.len(), |e| e + 4);
            continue;
        }
        if b.get(j) == Some(&b'!') {
            i = find(j, b"}}").map_or(b.len(), |e| e + 2);
            continue;
        }
        // The tag's body up to `}}`, skipping string and `[segment]` literals.
        let mut k = j;
        let mut parens = 0usize;
        while k < b.len() && !b[k..].starts_with(b"}}") {
            match b[k] {
                q @ (b'"' | b'\'' | b'[') => {
                    let close = if q == b'[' { b']' } else { q };
                    k = b[k + 1..]
                        .iter()
                        .position(|&c| c == close)
                        .map_or(b.len(), |e| k + 1 + e);
                }
                b'(' => {
                    parens += 1;
                    max = max.max(depth + parens);
                }
                b')' => parens = parens.saturating_sub(1),
                _ => {}
            }
            k += 1;
        }
        let body = b[j..k.min(b.len())].trim_ascii();
        let body = body.strip_suffix(b"~").unwrap_or(body).trim_ascii();
        match body.first() {
            Some(b'/') => depth = opens.pop().unwrap_or(0),
            _ if raw => {
                opens.push(depth);
                depth += 1;
            }
            Some(b'#') => {
                opens.push(depth);
                depth += 1;
            }
            Some(b'^') if body.len() > 1 => {
                opens.push(depth);
                depth += 1;
            }
            _ if body.starts_with(b"else") && body.len() > 4 && body[4].is_ascii_whitespace() => {
                depth += 1;
            }
            _ => {}
        }
        max = max.max(depth);
        i = k + 2;
    }
    max
}

/// A typed JSON body: a YAML map or list whose string leaves are templates.
#[derive(Debug, Clone)]
pub enum JsonTemplate {
    Literal(Value),
    /// A string leaf with text around or between expressions: rendered, sent as a JSON string.
    Text(Template),
    /// A leaf that is exactly one `{{expr}}`: keeps the JSON type of its value.
    Typed(Template),
    Array(Vec<JsonTemplate>),
    Object(Vec<(String, JsonTemplate)>),
}

impl JsonTemplate {
    /// Compiles every leaf of `node`, pushing each problem with its position.
    pub fn compile(node: &Node, errors: &mut Vec<(Pos, String)>) -> Option<Self> {
        Some(match &node.kind {
            Kind::Str(s) => {
                let compiled = match single_expression(s) {
                    Some(expr) => Template::compile(&typed_source(expr)).map(JsonTemplate::Typed),
                    None => Template::compile(s).map(|t| match t.compiled {
                        None => JsonTemplate::Literal(Value::String(t.source)),
                        Some(_) => JsonTemplate::Text(t),
                    }),
                };
                match compiled {
                    Ok(t) => t,
                    Err(e) => {
                        errors.push((node.pos, e));
                        return None;
                    }
                }
            }
            Kind::Seq(items) => {
                let before = errors.len();
                let items: Vec<_> = items
                    .iter()
                    .filter_map(|i| Self::compile(i, errors))
                    .collect();
                if errors.len() > before {
                    return None;
                }
                JsonTemplate::Array(items)
            }
            Kind::Map(entries) => {
                let before = errors.len();
                let fields: Vec<_> = entries
                    .iter()
                    .filter_map(|(k, v)| Self::compile(v, errors).map(|t| (k.name.clone(), t)))
                    .collect();
                if errors.len() > before {
                    return None;
                }
                JsonTemplate::Object(fields)
            }
            _ => JsonTemplate::Literal(node.to_json()),
        })
    }

    pub fn render(&self, ctx: &Context) -> Result<Value, RenderError> {
        Ok(match self {
            JsonTemplate::Literal(v) => v.clone(),
            JsonTemplate::Text(t) => Value::String(t.render(ctx)?),
            JsonTemplate::Typed(t) => {
                let text = t.render(ctx)?;
                // The `json` helper wrote valid JSON; an empty rendering means a missing value.
                if text.is_empty() {
                    Value::Null
                } else {
                    serde_json::from_str(&text).unwrap_or(Value::String(text))
                }
            }
            JsonTemplate::Array(items) => Value::Array(
                items
                    .iter()
                    .map(|i| i.render(ctx))
                    .collect::<Result<_, _>>()?,
            ),
            JsonTemplate::Object(fields) => Value::Object(
                fields
                    .iter()
                    .map(|(k, v)| Ok((k.clone(), v.render(ctx)?)))
                    .collect::<Result<_, RenderError>>()?,
            ),
        })
    }

    /// Every template in this body, for "missing field" warnings.
    pub fn templates(&self) -> Vec<&Template> {
        match self {
            JsonTemplate::Literal(_) => Vec::new(),
            JsonTemplate::Text(t) | JsonTemplate::Typed(t) => vec![t],
            JsonTemplate::Array(items) => items.iter().flat_map(|i| i.templates()).collect(),
            JsonTemplate::Object(fields) => {
                fields.iter().flat_map(|(_, v)| v.templates()).collect()
            }
        }
    }
}

/// `{{ expr }}` alone (not a block, comment, partial or triple-stash): its inner expression.
fn single_expression(s: &str) -> Option<&str> {
    let inner = s.trim().strip_prefix("{{")?.strip_suffix("}}")?.trim();
    let simple = !inner.is_empty()
        && !inner.contains("{{")
        && !inner.contains("}}")
        && !inner.starts_with(['#', '/', '!', '>', '{', '^', '&', '~'])
        && inner != "else";
    simple.then_some(inner)
}

/// `{{expr}}` → `{{json expr}}` or `{{json (helper args)}}`, so the value is rendered as JSON text.
fn typed_source(expr: &str) -> String {
    let is_call = expr.contains(char::is_whitespace) || helpers::HELPER_NAMES.contains(&expr);
    if is_call {
        format!("{{{{json ({expr})}}}}")
    } else {
        format!("{{{{json {expr}}}}}")
    }
}

/// The template context (SPEC §4.4) of `req` for `rule`.
pub fn context(req: &Request, rule: &str, attempt: u32) -> Context {
    assemble(req, req.payload.clone(), rule, attempt)
}

/// Adds the outputs of a step's needs (SPEC §4.7) to a context, as `steps`.
pub fn with_steps(mut ctx: Context, steps: serde_json::Map<String, Value>) -> Context {
    if let Value::Object(root) = ctx.data_mut() {
        root.insert("steps".into(), Value::Object(steps));
    }
    ctx
}

/// [`context`] moving the payload out of `req` instead of copying it: the
/// dispatcher's path, where the payload is the biggest thing and the
/// runners need only the headers and the raw body afterwards.
pub fn take_context(req: &mut Request, rule: &str, attempt: u32) -> Context {
    let payload = std::mem::take(&mut req.payload);
    assemble(req, payload, rule, attempt)
}

fn assemble(req: &Request, payload: Value, rule: &str, attempt: u32) -> Context {
    let event = serde_json::json!({
        "id": req.event_id,
        "source": req.source,
        "received_at": req.received_at,
        "method": req.method,
        "path": req.path,
        "body": req.body_text(),
    });
    context_of(
        event,
        payload,
        pairs_to_object(&req.headers),
        pairs_to_object(&req.query),
        rule,
        attempt,
    )
}

/// First value wins for headers (SPEC §4.4); query keeps the first too.
fn pairs_to_object(pairs: &[(String, String)]) -> Value {
    let mut map = serde_json::Map::new();
    for (k, v) in pairs {
        map.entry(k.clone())
            .or_insert_with(|| Value::String(v.clone()));
    }
    Value::Object(map)
}

/// The context from its parts.
fn context_of(
    event: Value,
    payload: Value,
    headers: Value,
    query: Value,
    rule: &str,
    attempt: u32,
) -> Context {
    // Built by hand: `json!` would copy each value through `to_value`, and
    // the payload is the biggest thing a request carries.
    let mut rule_facts = serde_json::Map::new();
    rule_facts.insert("name".into(), Value::String(rule.to_owned()));
    let mut root = serde_json::Map::new();
    root.insert("payload".into(), payload);
    root.insert("headers".into(), headers);
    root.insert("query".into(), query);
    root.insert("event".into(), event);
    root.insert("rule".into(), Value::Object(rule_facts));
    root.insert("attempt".into(), Value::from(attempt));
    Context::from(Value::Object(root))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::syntax::node::parse_yaml;

    fn ctx(payload: Value) -> Context {
        context_of(
            serde_json::json!({"id": "evt_1"}),
            payload,
            serde_json::json!({}),
            serde_json::json!({}),
            "r",
            1,
        )
    }

    fn body(yaml: &str) -> JsonTemplate {
        let node = parse_yaml(yaml).unwrap();
        let mut errors = Vec::new();
        let t = JsonTemplate::compile(&node, &mut errors);
        assert!(errors.is_empty(), "{errors:?}");
        t.unwrap()
    }

    #[test]
    fn hostile_values_render_into_valid_json_unchanged() {
        let hostile = "quote \" backslash \\ newline \n }} {{payload.x}} \u{0} \u{1b}[31m tab\t";
        let t = body("text: \"said: {{payload.msg}}\"\nraw: \"{{payload.msg}}\"\n");
        let v = t.render(&ctx(serde_json::json!({"msg": hostile}))).unwrap();
        assert_eq!(v["text"], Value::String(format!("said: {hostile}")));
        assert_eq!(v["raw"], Value::String(hostile.to_owned()));
        let text = serde_json::to_string(&v).unwrap();
        let back: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(back, v);
    }

    #[test]
    fn single_expression_leaves_keep_their_json_type() {
        let t = body(
            "n: \"{{payload.n}}\"\nb: \"{{payload.b}}\"\no: \"{{payload.o}}\"\na: \"{{payload.a}}\"\nmissing: \"{{payload.nope}}\"\ncount: \"{{len payload.a}}\"\nzip: \"{{payload.zip}}\"\nlit: 7\nlist: [\"x-{{payload.n}}\", true]\n",
        );
        let v = t
            .render(&ctx(serde_json::json!({"n": 5, "b": true, "o": {"k": [1]}, "a": [1, 2, 3], "zip": "01234"})))
            .unwrap();
        assert_eq!(
            v,
            serde_json::json!({"n": 5, "b": true, "o": {"k": [1]}, "a": [1, 2, 3], "missing": null, "count": 3,
                "zip": "01234", "lit": 7, "list": ["x-5", true]})
        );
    }

    #[test]
    fn bad_templates_are_load_errors_with_position() {
        let node =
            parse_yaml("a: ok\nb: \"{{#if x}}never closed\"\nc: \"{{jsonpath '$[?'}}\"\n").unwrap();
        let mut errors = Vec::new();
        assert!(JsonTemplate::compile(&node, &mut errors).is_none());
        assert_eq!(errors.len(), 2, "{errors:?}");
        assert_eq!(errors[0].0, Pos { line: 2, col: 4 });
        assert!(
            errors[0].1.starts_with("invalid template:"),
            "{}",
            errors[0].1
        );
        assert_eq!(errors[1].0, Pos { line: 3, col: 4 });
        assert!(
            errors[1].1.starts_with("invalid JSONPath `$[?`"),
            "{}",
            errors[1].1
        );
    }

    /// Found by fuzzing (tests/fuzz, `template`): handlebars compiles
    /// subexpressions and renders blocks recursively, and these overflowed a
    /// 2 MiB thread stack (the daemon's) in `compile` and `render`.
    #[test]
    fn deep_nesting_is_a_load_error_not_a_stack_overflow() {
        let n = 2000;
        let deep = [
            format!("{{{{a {}{}}}}}", "(a ".repeat(n), ")".repeat(n)),
            format!("{{{{#if a}}}}{}{{{{/if}}}}", "{{else if b}}".repeat(n)),
            format!("{}x{}", "{{#if true}}".repeat(n), "{{/if}}".repeat(n)),
            format!("{}x{}", "{{~^each a~}}".repeat(n), "{{/each}}".repeat(n)),
        ];
        for source in &deep {
            let e = Template::compile(source).unwrap_err();
            assert!(e.contains("nested deeper than 32 levels"), "{e}");
        }
        // Up to the limit, and any number of siblings, `else if` links or
        // parentheses in literals, is fine.
        let ok = [
            format!("{}x{}", "{{#if true}}".repeat(32), "{{/if}}".repeat(32)),
            format!("{{{{a {}{}}}}}", "(a ".repeat(32), ")".repeat(32)),
            "{{#if a}}x{{else if b}}y{{else}}z{{/if}}".repeat(100),
            format!("{{{{#if a}}}}{}{{{{/if}}}}", "{{else if b}}".repeat(31)),
            format!(
                "{{{{a \"{}\" [{}] }}}}{{{{!-- {} --}}}}",
                "(".repeat(99),
                "(".repeat(99),
                "{{#a}}".repeat(99)
            ),
        ];
        for source in &ok {
            let t = Template::compile(source).unwrap_or_else(|e| panic!("{source}: {e}"));
            let _ = t.render(&ctx(serde_json::json!({"a": true, "b": true})));
        }
    }

    #[test]
    fn url_templates_percent_encode_values() {
        let t = Template::compile_url(
            "https://api.example.com/items/{{payload.id}}?q={{payload.q}}&raw={{{payload.id}}}",
        )
        .unwrap();
        let got = t
            .render(&ctx(
                serde_json::json!({"id": "../admin?x=1#f", "q": "a b&c=d"}),
            ))
            .unwrap();
        assert_eq!(
            got,
            "https://api.example.com/items/..%2Fadmin%3Fx%3D1%23f?q=a%20b%26c%3Dd&raw=../admin?x=1#f"
        );
    }

    #[test]
    fn no_html_escaping() {
        let t = Template::compile("<b>{{payload.x}}</b>").unwrap();
        assert_eq!(
            t.render(&ctx(serde_json::json!({"x": "a & <c>"}))).unwrap(),
            "<b>a & <c></b>"
        );
    }
}
