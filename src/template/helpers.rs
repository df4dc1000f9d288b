//! The helpers templates may call (SPEC §4.4), the registry that holds them,
//! and template analysis used at load (`jsonpath` literals are compiled then)
//! and by `hookwire test` (fields a template refers to that the event lacks).
//!
//! Every helper returns a JSON value, so each also works as a subexpression:
//! `{{json (len payload.commits)}}` is `3`, not `"3"`.

use handlebars::template::{Parameter, TemplateElement};
use handlebars::{
    Context, Handlebars, Helper, HelperDef, JsonRender, RenderContext, RenderError, RenderErrorReason, Renderable,
    ScopedJson, StringOutput, Template, handlebars_helper,
};
use serde_json::Value;

/// Helper names of ours (handlebars' own are registered by `Handlebars::new`).
pub const HELPER_NAMES: &[&str] = &[
    "json", "jsonpath", "default", "upper", "lower", "trim", "truncate", "replace", "urlencode", "base64", "join", "now",
    "date",
];

/// Text of a value as templates show it: strings as they are, the rest as handlebars renders them.
fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.render(),
    }
}

fn usize_arg(v: &Value, helper: &'static str) -> Result<usize, RenderError> {
    v.as_u64()
        .or_else(|| v.as_str().and_then(|s| s.trim().parse().ok()))
        .and_then(|n| usize::try_from(n).ok())
        .ok_or_else(|| RenderErrorReason::Other(format!("`{helper}` needs a whole number, got {v}")).into())
}

handlebars_helper!(upper: |v: Json| text(v).to_uppercase());
handlebars_helper!(lower: |v: Json| text(v).to_lowercase());
handlebars_helper!(trim: |v: Json| text(v).trim().to_owned());
handlebars_helper!(replace: |v: Json, from: Json, to: Json| {
    let from = text(from);
    if from.is_empty() { text(v) } else { text(v).replace(&from, &text(to)) }
});
handlebars_helper!(urlencode: |v: Json| {
    url::form_urlencoded::byte_serialize(text(v).as_bytes()).collect::<String>().replace('+', "%20")
});
handlebars_helper!(b64: |v: Json| {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(text(v))
});
handlebars_helper!(default: |v: Json, fallback: Json| {
    match v {
        Value::Null => fallback.clone(),
        Value::String(s) if s.is_empty() => fallback.clone(),
        other => other.clone(),
    }
});
handlebars_helper!(join: |list: Json, sep: Json| {
    match list {
        Value::Array(items) => items.iter().map(text).collect::<Vec<_>>().join(&text(sep)),
        other => text(other),
    }
});

/// `json` is special: a missing value is `null`, not an empty string.
struct Json;
impl HelperDef for Json {
    fn call_inner<'reg: 'rc, 'rc>(
        &self,
        h: &Helper<'rc>,
        _: &'reg Handlebars<'reg>,
        _: &'rc Context,
        _: &mut RenderContext<'reg, 'rc>,
    ) -> Result<ScopedJson<'rc>, RenderError> {
        let v = h.param(0).map(|p| p.value().clone()).unwrap_or(Value::Null);
        Ok(ScopedJson::Derived(Value::String(v.to_string())))
    }
}

struct Truncate;
impl HelperDef for Truncate {
    fn call_inner<'reg: 'rc, 'rc>(
        &self,
        h: &Helper<'rc>,
        _: &'reg Handlebars<'reg>,
        _: &'rc Context,
        _: &mut RenderContext<'reg, 'rc>,
    ) -> Result<ScopedJson<'rc>, RenderError> {
        let (Some(v), Some(n)) = (h.param(0), h.param(1)) else {
            return Err(RenderErrorReason::Other("`truncate` takes a value and a length: {{truncate x 80}}".into()).into());
        };
        let n = usize_arg(n.value(), "truncate")?;
        Ok(ScopedJson::Derived(Value::String(text(v.value()).chars().take(n).collect())))
    }
}

/// `jsonpath "$.a.b"`: queries the event's payload (the root context's `payload`).
struct JsonPathHelper;
impl HelperDef for JsonPathHelper {
    fn call_inner<'reg: 'rc, 'rc>(
        &self,
        h: &Helper<'rc>,
        _: &'reg Handlebars<'reg>,
        ctx: &'rc Context,
        _: &mut RenderContext<'reg, 'rc>,
    ) -> Result<ScopedJson<'rc>, RenderError> {
        let Some(path) = h.param(0).and_then(|p| p.value().as_str()) else {
            return Err(RenderErrorReason::Other("`jsonpath` takes a JSONPath string: {{jsonpath \"$.a.b\"}}".into()).into());
        };
        let query = crate::matching::JsonPath::compile(path).map_err(RenderErrorReason::Other)?;
        let payload = ctx.data().get("payload").unwrap_or(&Value::Null);
        let nodes = query.select(payload);
        Ok(match nodes.as_slice() {
            [] => ScopedJson::Missing,
            [one] => ScopedJson::Derived((*one).clone()),
            many => ScopedJson::Derived(Value::Array(many.iter().map(|v| (*v).clone()).collect())),
        })
    }
}

/// `now [FORMAT]` and `date VALUE FORMAT`.
struct Time {
    with_value: bool,
}
impl HelperDef for Time {
    fn call_inner<'reg: 'rc, 'rc>(
        &self,
        h: &Helper<'rc>,
        _: &'reg Handlebars<'reg>,
        _: &'rc Context,
        _: &mut RenderContext<'reg, 'rc>,
    ) -> Result<ScopedJson<'rc>, RenderError> {
        let (at, format_idx) = if self.with_value {
            let v = h.param(0).map(|p| p.value().clone()).unwrap_or(Value::Null);
            (parse_time(&v)?, 1)
        } else {
            (time::OffsetDateTime::now_utc(), 0)
        };
        let format = h.param(format_idx).and_then(|p| p.value().as_str().map(str::to_owned)).unwrap_or_else(|| "rfc3339".into());
        format_time(at, &format).map(|s| ScopedJson::Derived(Value::String(s)))
    }
}

fn parse_time(v: &Value) -> Result<time::OffsetDateTime, RenderError> {
    let bad = || RenderError::from(RenderErrorReason::Other(format!("`date` needs an RFC 3339 time or unix seconds, got {v}")));
    match v {
        Value::Number(n) => n.as_i64().and_then(|s| time::OffsetDateTime::from_unix_timestamp(s).ok()).ok_or_else(bad),
        Value::String(s) => match s.parse::<i64>() {
            Ok(secs) => time::OffsetDateTime::from_unix_timestamp(secs).map_err(|_| bad()),
            Err(_) => time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).map_err(|_| bad()),
        },
        _ => Err(bad()),
    }
}

fn format_time(at: time::OffsetDateTime, format: &str) -> Result<String, RenderError> {
    let err = |e: String| RenderError::from(RenderErrorReason::Other(e));
    match format {
        "rfc3339" => at.format(&time::format_description::well_known::Rfc3339).map_err(|e| err(e.to_string())),
        "unix" => Ok(at.unix_timestamp().to_string()),
        "unix_ms" => Ok((at.unix_timestamp_nanos() / 1_000_000).to_string()),
        custom => {
            let items = time::format_description::parse_borrowed::<1>(custom).map_err(|e| err(format!("invalid time format `{custom}`: {e}")))?;
            at.format(&items).map_err(|e| err(e.to_string()))
        }
    }
}

/// A registry with every helper, no HTML escaping, strict mode off.
pub fn registry() -> Handlebars<'static> {
    let mut h = Handlebars::new();
    h.register_escape_fn(handlebars::no_escape);
    h.set_strict_mode(false);
    h.register_helper("json", Box::new(Json));
    h.register_helper("jsonpath", Box::new(JsonPathHelper));
    h.register_helper("default", Box::new(default));
    h.register_helper("upper", Box::new(upper));
    h.register_helper("lower", Box::new(lower));
    h.register_helper("trim", Box::new(trim));
    h.register_helper("truncate", Box::new(Truncate));
    h.register_helper("replace", Box::new(replace));
    h.register_helper("urlencode", Box::new(urlencode));
    h.register_helper("base64", Box::new(b64));
    h.register_helper("join", Box::new(join));
    h.register_helper("now", Box::new(Time { with_value: false }));
    h.register_helper("date", Box::new(Time { with_value: true }));
    h
}

/// Renders a compiled template without registering it by name.
pub fn render(reg: &Handlebars<'_>, tpl: &Template, ctx: &Context) -> Result<String, RenderError> {
    let mut rc = RenderContext::new(None);
    let mut out = StringOutput::new();
    tpl.render(reg, ctx, &mut rc, &mut out)?;
    out.into_string().map_err(|e| RenderErrorReason::Other(e.to_string()).into())
}

/// String literals passed to `jsonpath` anywhere in the template.
pub fn literal_jsonpath_args(tpl: &Template) -> Vec<String> {
    let mut out = Vec::new();
    walk(tpl, &mut |name, params, _| {
        if name == "jsonpath" {
            if let Some(Parameter::Literal(Value::String(s))) = params.first() {
                out.push(s.clone());
            }
        }
    });
    out
}

/// Dotted paths the template refers to (outside scope-changing blocks) that `ctx` lacks.
pub fn missing_fields(tpl: &Template, ctx: &Value) -> Vec<String> {
    let mut paths = Vec::new();
    walk(tpl, &mut |_, params, scoped| {
        if scoped {
            return;
        }
        for p in params {
            if let Parameter::Path(path) = p {
                paths.push(raw(path).to_owned());
            }
        }
    });
    let mut out: Vec<String> = paths
        .into_iter()
        .map(|p| p.trim_start_matches("this.").trim_start_matches("@root.").to_owned())
        .filter(|p| !p.starts_with('@') && !p.starts_with("..") && p != "this" && !HELPER_NAMES.contains(&p.as_str()))
        .filter(|p| {
            let mut v = ctx;
            for seg in p.split(['.', '/']) {
                match v.get(seg) {
                    Some(next) => v = next,
                    None => return true,
                }
            }
            false
        })
        .collect();
    out.sort();
    out.dedup();
    out
}

fn raw(p: &handlebars::Path) -> &str {
    match p {
        handlebars::Path::Relative((_, raw)) | handlebars::Path::Local((_, _, raw)) => raw,
    }
}

/// Calls `f(helper_or_path_name, params, inside_scope_block)` for every
/// expression, helper call and subexpression of the template.
fn walk(tpl: &Template, f: &mut dyn FnMut(&str, &[Parameter], bool)) {
    fn helper(ht: &handlebars::template::HelperTemplate, scoped: bool, f: &mut dyn FnMut(&str, &[Parameter], bool)) {
        let name = match &ht.name {
            Parameter::Name(n) => n.clone(),
            Parameter::Path(p) => {
                // `{{payload.a}}`: a plain reference is a path with no params.
                if ht.params.is_empty() && !ht.block {
                    f("", std::slice::from_ref(&ht.name), scoped);
                }
                raw(p).to_owned()
            }
            other => {
                param(other, scoped, f);
                String::new()
            }
        };
        f(&name, &ht.params, scoped);
        for p in ht.params.iter().chain(ht.hash.values()) {
            param(p, scoped, f);
        }
        let inner_scoped = scoped || (ht.block && matches!(name.as_str(), "each" | "with"));
        if let Some(t) = &ht.template {
            go(t, inner_scoped, f);
        }
        if let Some(t) = &ht.inverse {
            go(t, scoped, f);
        }
    }
    fn param(p: &Parameter, scoped: bool, f: &mut dyn FnMut(&str, &[Parameter], bool)) {
        if let Parameter::Subexpression(sub) = p {
            if let TemplateElement::Expression(ht) = sub.as_element() {
                helper(ht, scoped, f);
            }
        }
    }
    fn go(tpl: &Template, scoped: bool, f: &mut dyn FnMut(&str, &[Parameter], bool)) {
        for el in &tpl.elements {
            match el {
                TemplateElement::Expression(h) | TemplateElement::HtmlExpression(h) | TemplateElement::HelperBlock(h) => {
                    helper(h, scoped, f)
                }
                _ => {}
            }
        }
    }
    go(tpl, false, f);
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn r(src: &str, data: Value) -> String {
        let reg = registry();
        let tpl = Template::compile(src).unwrap();
        render(&reg, &tpl, &Context::from(data)).unwrap()
    }

    #[test]
    fn helpers_render_as_documented() {
        let d = json!({"payload": {"name": "  Ada Lovelace ", "n": 3, "list": ["a", "b", 3], "empty": "", "when": "2024-05-01T12:30:00Z", "uni": "héllo wörld", "o": {"k": 1}}});
        let cases: &[(&str, &str)] = &[
            ("{{json payload.list}}", r#"["a","b",3]"#),
            ("{{json payload.nope}}", "null"),
            ("{{json (len payload.list)}}", "3"),
            ("{{jsonpath \"$.o.k\"}}", "1"),
            ("{{json (jsonpath \"$.list[*]\")}}", r#"["a","b",3]"#),
            ("{{default payload.empty \"none\"}}", "none"),
            ("{{default payload.nope \"none\"}}", "none"),
            ("{{default payload.n 0}}", "3"),
            ("{{upper payload.uni}}", "HÉLLO WÖRLD"),
            ("{{lower \"ABC\"}}", "abc"),
            ("[{{trim payload.name}}]", "[Ada Lovelace]"),
            ("{{truncate payload.uni 4}}", "héll"),
            ("{{truncate payload.uni 100}}", "héllo wörld"),
            ("{{replace payload.uni \"l\" \"L\"}}", "héLLo wörLd"),
            ("{{urlencode \"a b&c/é\"}}", "a%20b%26c%2F%C3%A9"),
            ("{{base64 \"hello\"}}", "aGVsbG8="),
            ("{{join payload.list \", \"}}", "a, b, 3"),
            ("{{date payload.when \"[year]-[month]-[day]\"}}", "2024-05-01"),
            ("{{date 0 \"unix\"}}", "0"),
            ("{{date \"1714566600\" \"rfc3339\"}}", "2024-05-01T12:30:00Z"),
            ("<a href=\"x\">{{payload.uni}} & </a>", "<a href=\"x\">héllo wörld & </a>"),
        ];
        for (src, want) in cases {
            assert_eq!(r(src, d.clone()), *want, "{src}");
        }
        assert_eq!(r("{{now \"unix\"}}", d.clone()).len(), 10);
    }

    #[test]
    fn bad_arguments_are_render_errors_not_panics() {
        let reg = registry();
        for src in ["{{truncate \"abc\"}}", "{{truncate \"abc\" \"x\"}}", "{{date \"yesterday\" \"unix\"}}", "{{now \"[nope\"}}", "{{jsonpath 5}}"] {
            let tpl = Template::compile(src).unwrap();
            assert!(render(&reg, &tpl, &Context::from(json!({}))).is_err(), "{src}");
        }
    }

    #[test]
    fn analysis_finds_jsonpath_literals_and_missing_fields() {
        let tpl = Template::compile("{{payload.a}} {{payload.b.c}} {{upper payload.d}} {{#each payload.list}}{{this.x}}{{/each}} {{json (jsonpath \"$.x\")}}").unwrap();
        assert_eq!(literal_jsonpath_args(&tpl), ["$.x"]);
        let ctx = json!({"payload": {"a": 1, "list": []}});
        assert_eq!(missing_fields(&tpl, &ctx), ["payload.b.c", "payload.d"]);
    }
}
