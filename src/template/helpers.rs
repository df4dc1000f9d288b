//! The handlebars registry and hookwire's template helpers (SPEC §4.4); the
//! static analyses of templates are in `analysis`.
//!
//! Promises:
//! - [`registry`] never HTML-escapes, is not strict (a missing field renders as
//!   empty text) and keeps handlebars' own helpers (`if`, `each`, `eq`, `len`, …).
//! - Every hookwire helper computes a typed JSON value (`call_inner`), so it works
//!   both as `{{helper …}}` and as a subexpression: `{{json (len payload.a)}}` is `3`.
//! - Bad arguments (wrong count, bad format string, invalid JSONPath) are a
//!   [`handlebars::RenderError`] with a message naming the helper, never a panic.
//! - Templates render without being registered by name ([`render`]), so the same
//!   registry serves every rule set.
//!
//! Text conversion inside helpers: a string is itself, `null`/missing is empty,
//! anything else is its compact JSON text (so `upper` of `{"a":1}` is `{"A":1}`).
//! The string helpers (`upper` … `base64`) pass a missing/null VALUE through as
//! `null`, so a missing field stays missing through them.

use base64::Engine as _;
use handlebars::{
    Context, Handlebars, Helper, HelperDef, RenderContext, RenderError, RenderErrorReason,
    Renderable, ScopedJson, Template,
};
use serde_json::Value;
use time::format_description::well_known::Rfc3339;
use time::{OffsetDateTime, UtcOffset};

/// Every helper name the [`registry`] knows: hookwire's and handlebars' built-ins.
///
/// In handlebars a bare `{{name}}` calls the helper of that name when one exists and
/// reads the field otherwise, so code that classifies expressions needs this list.
pub const HELPER_NAMES: &[&str] = &[
    // hookwire
    "json",
    "jsonpath",
    "default",
    "upper",
    "lower",
    "trim",
    "truncate",
    "replace",
    "urlencode",
    "base64",
    "join",
    "now",
    "date", // handlebars 6 built-ins (Registry::new)
    "if",
    "unless",
    "each",
    "with",
    "lookup",
    "raw",
    "log",
    "eq",
    "ne",
    "gt",
    "gte",
    "lt",
    "lte",
    "and",
    "or",
    "not",
    "len",
];

/// Why a helper refused its arguments; turned into a handlebars `RenderError` at
/// the boundary so the message reaches the delivery attempt intact.
#[derive(Debug, thiserror::Error)]
enum HelperError {
    #[error("`{name}` expects {expected}, got {got} (usage: {usage})")]
    Arity {
        name: &'static str,
        expected: &'static str,
        got: usize,
        usage: &'static str,
    },
    #[error("`{name}` takes no named arguments (usage: {usage})")]
    NamedArgs {
        name: &'static str,
        usage: &'static str,
    },
    #[error("`{name}`: {reason}")]
    BadArg { name: &'static str, reason: String },
}

impl From<HelperError> for RenderError {
    fn from(e: HelperError) -> Self {
        RenderErrorReason::Other(e.to_string()).into()
    }
}

/// A registry with hookwire's helpers: no HTML escaping, not strict.
pub fn registry() -> Handlebars<'static> {
    let mut reg = Handlebars::new();
    // Templates build JSON, URLs, shell arguments and mail: HTML escaping would corrupt all of them.
    reg.register_escape_fn(handlebars::no_escape);
    // SPEC §4.4: a missing field renders as empty text (and `hookwire test` warns instead).
    reg.set_strict_mode(false);
    for helper in VALUE_HELPERS {
        reg.register_helper(helper.name, Box::new(helper));
    }
    reg.register_helper("jsonpath", Box::new(JsonPathHelper));
    reg
}

/// Renders a compiled, unregistered template against `ctx`.
pub fn render(reg: &Handlebars<'_>, tpl: &Template, ctx: &Context) -> Result<String, RenderError> {
    let mut rc = RenderContext::new(None);
    tpl.renders(reg, ctx, &mut rc)
}

// ---------------------------------------------------------------------------
// Value helpers
// ---------------------------------------------------------------------------

/// One helper that maps its positional arguments to a JSON value.
///
/// Written by hand rather than with `handlebars_helper!` because the macro ignores
/// extra arguments, reports a missing one only as a type name, and cannot tell
/// "VALUE missing" from "VALUE null" — we want arity errors that show the usage.
struct ValueHelper {
    name: &'static str,
    usage: &'static str,
    min: usize,
    max: usize,
    /// Human form of the arity for errors ("1 argument", "1 or 2 arguments").
    expected: &'static str,
    run: fn(&ValueHelper, &[&Value]) -> Result<Value, HelperError>,
}

/// The most arguments any value helper takes; arguments sit in a stack array.
const MAX_ARGS: usize = 3;

impl HelperDef for &'static ValueHelper {
    fn call_inner<'reg: 'rc, 'rc>(
        &self,
        h: &Helper<'rc>,
        _: &'reg Handlebars<'reg>,
        _: &'rc Context,
        _: &mut RenderContext<'reg, 'rc>,
    ) -> Result<ScopedJson<'rc>, RenderError> {
        let params = h.params();
        if params.len() < self.min || params.len() > self.max {
            return Err(self.arity(params.len()).into());
        }
        if !h.hash().is_empty() {
            return Err(HelperError::NamedArgs {
                name: self.name,
                usage: self.usage,
            }
            .into());
        }
        // A missing field reads as null here: non-strict mode, like the rest of the template.
        let mut args: [&Value; MAX_ARGS] = [&Value::Null; MAX_ARGS];
        for (slot, p) in args.iter_mut().zip(params) {
            *slot = p.value();
        }
        Ok(ScopedJson::Derived((self.run)(
            self,
            &args[..params.len()],
        )?))
    }
}

impl ValueHelper {
    fn arity(&self, got: usize) -> HelperError {
        HelperError::Arity {
            name: self.name,
            expected: self.expected,
            got,
            usage: self.usage,
        }
    }

    fn bad(&self, reason: impl Into<String>) -> HelperError {
        HelperError::BadArg {
            name: self.name,
            reason: reason.into(),
        }
    }
}

static VALUE_HELPERS: [&ValueHelper; 12] = [
    &ValueHelper {
        name: "json",
        usage: "json VALUE",
        min: 1,
        max: 1,
        expected: "1 argument",
        run: json,
    },
    &ValueHelper {
        name: "default",
        usage: "default VALUE FALLBACK",
        min: 2,
        max: 2,
        expected: "2 arguments",
        run: default,
    },
    &ValueHelper {
        name: "upper",
        usage: "upper VALUE",
        min: 1,
        max: 1,
        expected: "1 argument",
        run: upper,
    },
    &ValueHelper {
        name: "lower",
        usage: "lower VALUE",
        min: 1,
        max: 1,
        expected: "1 argument",
        run: lower,
    },
    &ValueHelper {
        name: "trim",
        usage: "trim VALUE",
        min: 1,
        max: 1,
        expected: "1 argument",
        run: trim,
    },
    &ValueHelper {
        name: "truncate",
        usage: "truncate VALUE N",
        min: 2,
        max: 2,
        expected: "2 arguments",
        run: truncate,
    },
    &ValueHelper {
        name: "replace",
        usage: "replace VALUE FROM TO",
        min: 3,
        max: 3,
        expected: "3 arguments",
        run: replace,
    },
    &ValueHelper {
        name: "urlencode",
        usage: "urlencode VALUE",
        min: 1,
        max: 1,
        expected: "1 argument",
        run: urlencode,
    },
    &ValueHelper {
        name: "base64",
        usage: "base64 VALUE",
        min: 1,
        max: 1,
        expected: "1 argument",
        run: base64,
    },
    &ValueHelper {
        name: "join",
        usage: "join ARRAY SEP",
        min: 2,
        max: 2,
        expected: "2 arguments",
        run: join,
    },
    &ValueHelper {
        name: "now",
        usage: "now [FORMAT]",
        min: 0,
        max: 1,
        expected: "0 or 1 argument",
        run: now,
    },
    &ValueHelper {
        name: "date",
        usage: "date VALUE FORMAT",
        min: 2,
        max: 2,
        expected: "2 arguments",
        run: date,
    },
];

/// A value as text inside helpers: strings as is, null as empty, the rest as compact JSON.
fn text(v: &Value) -> std::borrow::Cow<'_, str> {
    match v {
        Value::String(s) => s.as_str().into(),
        Value::Null => "".into(),
        other => other.to_string().into(),
    }
}

/// Applies a text transformation, letting a missing/null VALUE through as null.
fn map_text(v: &Value, f: impl FnOnce(&str) -> String) -> Value {
    match v {
        Value::Null => Value::Null,
        v => Value::String(f(&text(v))),
    }
}

fn json(_: &ValueHelper, a: &[&Value]) -> Result<Value, HelperError> {
    Ok(Value::String(a[0].to_string()))
}

fn default(_: &ValueHelper, a: &[&Value]) -> Result<Value, HelperError> {
    Ok(match a[0] {
        Value::Null => a[1].clone(),
        Value::String(s) if s.is_empty() => a[1].clone(),
        v => v.clone(),
    })
}

fn upper(_: &ValueHelper, a: &[&Value]) -> Result<Value, HelperError> {
    Ok(map_text(a[0], str::to_uppercase))
}

fn lower(_: &ValueHelper, a: &[&Value]) -> Result<Value, HelperError> {
    Ok(map_text(a[0], str::to_lowercase))
}

fn trim(_: &ValueHelper, a: &[&Value]) -> Result<Value, HelperError> {
    Ok(map_text(a[0], |s| s.trim().to_owned()))
}

fn truncate(h: &ValueHelper, a: &[&Value]) -> Result<Value, HelperError> {
    // A string N is accepted because form and query values always arrive as strings.
    let n = match a[1] {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.trim().parse::<u64>().ok(),
        _ => None,
    }
    .ok_or_else(|| h.bad(format!("N must be a whole number ≥ 0, got {}", a[1])))?;
    let n = usize::try_from(n).unwrap_or(usize::MAX);
    // Cut at a char boundary: counting chars, never bytes, so UTF-8 is never split.
    Ok(map_text(a[0], |s| match s.char_indices().nth(n) {
        Some((i, _)) => s[..i].to_owned(),
        None => s.to_owned(),
    }))
}

fn replace(h: &ValueHelper, a: &[&Value]) -> Result<Value, HelperError> {
    let from = text(a[1]);
    if from.is_empty() {
        // `str::replace("")` would insert TO between every character: never what was meant.
        return Err(h.bad("FROM must not be empty"));
    }
    let to = text(a[2]);
    Ok(map_text(a[0], |s| s.replace(from.as_ref(), &to)))
}

/// Percent-encodes for a URL path segment or query component.
///
/// `form_urlencoded::byte_serialize` (the `url` crate's) keeps only `A-Z a-z 0-9 * - . _`
/// and turns spaces into `+`, encoding a literal `+` as `%2B`; so every `+` it emits was
/// a space, and rewriting it to `%20` gives an encoding valid in paths and queries alike.
fn urlencode(_: &ValueHelper, a: &[&Value]) -> Result<Value, HelperError> {
    Ok(map_text(a[0], |s| {
        let mut out = String::with_capacity(s.len());
        for piece in url::form_urlencoded::byte_serialize(s.as_bytes()) {
            if piece == "+" {
                out.push_str("%20");
            } else {
                out.push_str(piece);
            }
        }
        out
    }))
}

fn base64(_: &ValueHelper, a: &[&Value]) -> Result<Value, HelperError> {
    Ok(map_text(a[0], |s| {
        base64::engine::general_purpose::STANDARD.encode(s)
    }))
}

fn join(_: &ValueHelper, a: &[&Value]) -> Result<Value, HelperError> {
    let sep = text(a[1]);
    Ok(match a[0] {
        Value::Array(items) => {
            let mut out = String::new();
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(&sep);
                }
                out.push_str(&text(item));
            }
            Value::String(out)
        }
        Value::Null => Value::Null,
        v => Value::String(text(v).into_owned()),
    })
}

fn now(h: &ValueHelper, a: &[&Value]) -> Result<Value, HelperError> {
    format_time(h, OffsetDateTime::now_utc(), a.first().copied())
}

fn date(h: &ValueHelper, a: &[&Value]) -> Result<Value, HelperError> {
    let when = match a[0] {
        // A missing date renders as empty text, like any missing field.
        Value::Null => return Ok(Value::Null),
        Value::String(s) => match s.trim().parse::<i64>() {
            // Digits only: unix seconds sent as text (forms and query strings have no numbers).
            Ok(secs) => from_unix(h, secs)?,
            Err(_) => OffsetDateTime::parse(s.trim(), &Rfc3339)
                .map_err(|e| h.bad(format!("{s:?} is neither RFC 3339 nor unix seconds: {e}")))?,
        },
        Value::Number(n) => match n.as_i64() {
            Some(secs) => from_unix(h, secs)?,
            None => {
                // Fractional seconds. `as` saturates, so a huge value becomes i128::MAX
                // nanoseconds and fails the range check in the constructor.
                let nanos = n
                    .as_f64()
                    .map(|secs| (secs * 1e9) as i128)
                    .unwrap_or(i128::MAX);
                OffsetDateTime::from_unix_timestamp_nanos(nanos)
                    .map_err(|e| h.bad(format!("{n} is out of range as unix seconds: {e}")))?
            }
        },
        other => {
            return Err(h.bad(format!(
                "VALUE must be an RFC 3339 string or unix seconds, got {other}"
            )));
        }
    };
    // Output is always UTC, like `now`, so the same FORMAT reads the same everywhere.
    format_time(h, when.to_offset(UtcOffset::UTC), Some(a[1]))
}

fn from_unix(h: &ValueHelper, secs: i64) -> Result<OffsetDateTime, HelperError> {
    OffsetDateTime::from_unix_timestamp(secs)
        .map_err(|e| h.bad(format!("{secs} is out of range as unix seconds: {e}")))
}

/// Formats `t` as FORMAT says: `rfc3339` (default), `unix`, `unix_ms` (both numbers),
/// or a `time` format description such as `[year]-[month]-[day]`.
fn format_time(
    h: &ValueHelper,
    t: OffsetDateTime,
    format: Option<&Value>,
) -> Result<Value, HelperError> {
    let format = match format {
        None => "rfc3339",
        Some(Value::String(s)) => s.as_str(),
        Some(other) => return Err(h.bad(format!("FORMAT must be a string, got {other}"))),
    };
    let formatted = match format {
        "rfc3339" => t.format(&Rfc3339),
        "unix" => return Ok(Value::from(t.unix_timestamp())),
        "unix_ms" => {
            let ms = t.unix_timestamp_nanos().div_euclid(1_000_000);
            return Ok(Value::from(
                i64::try_from(ms).map_err(|_| h.bad("date out of range for unix_ms"))?,
            ));
        }
        custom => {
            let items = time::format_description::parse_borrowed::<1>(custom).map_err(|e| {
                h.bad(format!(
                    "invalid FORMAT {custom:?}: {e} (use rfc3339, unix, unix_ms or e.g. \"[year]-[month]-[day]\")"
                ))
            })?;
            t.format(&items)
        }
    };
    formatted
        .map(Value::String)
        .map_err(|e| h.bad(format!("cannot format the date with {format:?}: {e}")))
}

// ---------------------------------------------------------------------------
// jsonpath
// ---------------------------------------------------------------------------

/// `jsonpath "$.a.b"`: queries the root context's `payload`, whatever block it sits in.
///
/// One node gives that value, several an array, none a missing value (empty text,
/// `null` under `json`).
struct JsonPathHelper;

const JSONPATH_USAGE: &str = "jsonpath \"$.a.b\"";

impl HelperDef for JsonPathHelper {
    fn call_inner<'reg: 'rc, 'rc>(
        &self,
        h: &Helper<'rc>,
        _: &'reg Handlebars<'reg>,
        ctx: &'rc Context,
        _: &mut RenderContext<'reg, 'rc>,
    ) -> Result<ScopedJson<'rc>, RenderError> {
        let name = "jsonpath";
        if h.params().len() != 1 {
            let got = h.params().len();
            return Err(HelperError::Arity {
                name,
                expected: "1 argument",
                got,
                usage: JSONPATH_USAGE,
            }
            .into());
        }
        if !h.hash().is_empty() {
            return Err(HelperError::NamedArgs {
                name,
                usage: JSONPATH_USAGE,
            }
            .into());
        }
        let path = match h.params()[0].value() {
            Value::String(s) => s.as_str(),
            other => {
                return Err(HelperError::BadArg {
                    name,
                    reason: format!("the path must be a string, got {other}"),
                }
                .into());
            }
        };
        let query =
            jsonpath_rust::parser::parse_json_path(path).map_err(|e| HelperError::BadArg {
                name,
                reason: format!("invalid JSONPath `{path}`: {e}"),
            })?;
        // `ctx` is the root context even inside `#each`/`#with` (they push blocks, not contexts).
        let payload = ctx.data().get("payload").unwrap_or(&Value::Null);
        let mut nodes = jsonpath_rust::query::js_path_process(&query, payload).map_err(|e| {
            HelperError::BadArg {
                name,
                reason: format!("JSONPath `{path}` failed: {e}"),
            }
        })?;
        Ok(match nodes.len() {
            0 => ScopedJson::Missing,
            1 => ScopedJson::Derived(nodes.swap_remove(0).val().clone()),
            _ => ScopedJson::Derived(Value::Array(
                nodes.into_iter().map(|n| n.val().clone()).collect(),
            )),
        })
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use serde_json::json;

    // Names of hookwire's own helpers.
    const OWN_HELPERS: &[&str] = &[
        "json",
        "jsonpath",
        "default",
        "upper",
        "lower",
        "trim",
        "truncate",
        "replace",
        "urlencode",
        "base64",
        "join",
        "now",
        "date",
    ];

    /// A context with every kind of value, shared with the analysis tests.
    pub(in crate::template) fn ctx() -> Value {
        json!({
            "payload": {
                "name": "  Ada Lovelace  ",
                "word": "héllo wörld",
                "emoji": "a😀b😀c",
                "empty": "",
                "nothing": null,
                "n": 42,
                "flag": true,
                "obj": {"k": "v"},
                "tags": ["a", "b", "c"],
                "nested": [1, [2, 3], {"k": 1}, null, "x"],
                "commits": [{"id": "c1"}, {"id": "c2"}, {"id": "c3"}],
                "pusher": {"name": "octocat"},
                "when": "2024-03-05T06:07:08+02:00",
                "epoch": 1700000000,
                "epoch_text": "1700000000",
                "html": "<a href=\"x\">&</a>"
            },
            "headers": {"x-github-event": "push"},
            "event": {"id": "evt_1"},
        })
    }

    fn try_render(src: &str) -> Result<String, RenderError> {
        let reg = registry();
        let tpl = Template::compile(src).unwrap();
        render(&reg, &tpl, &Context::from(ctx()))
    }

    fn r(src: &str) -> String {
        try_render(src).unwrap_or_else(|e| panic!("{src}: {e}"))
    }

    fn err(src: &str) -> String {
        match try_render(src) {
            Ok(out) => panic!("{src}: expected an error, rendered {out:?}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn helpers_render_as_text() {
        let cases: &[(&str, &str)] = &[
            ("{{json payload.obj}}", r#"{"k":"v"}"#),
            ("{{json payload.tags}}", r#"["a","b","c"]"#),
            ("{{json payload.name}}", r#""  Ada Lovelace  ""#),
            ("{{json payload.missing}}", "null"),
            ("{{json payload.n}}", "42"),
            ("{{default payload.missing \"n/a\"}}", "n/a"),
            ("{{default payload.nothing \"n/a\"}}", "n/a"),
            ("{{default payload.empty \"n/a\"}}", "n/a"),
            ("{{default payload.n \"n/a\"}}", "42"),
            ("{{default payload.flag \"n/a\"}}", "true"),
            ("{{upper payload.word}}", "HÉLLO WÖRLD"),
            ("{{lower \"ÀB\"}}", "àb"),
            ("{{upper payload.obj}}", r#"{"K":"V"}"#),
            ("{{upper payload.missing}}", ""),
            ("{{trim payload.name}}", "Ada Lovelace"),
            ("{{trim payload.empty}}", ""),
            ("{{truncate payload.word 4}}", "héll"),
            ("{{truncate payload.emoji 2}}", "a😀"),
            ("{{truncate payload.emoji 0}}", ""),
            ("{{truncate payload.emoji 99}}", "a😀b😀c"),
            ("{{truncate payload.emoji \"3\"}}", "a😀b"),
            ("{{truncate payload.missing 3}}", ""),
            ("{{replace payload.word \"l\" \"L\"}}", "héLLo wörLd"),
            ("{{replace payload.word \"zz\" \"L\"}}", "héllo wörld"),
            ("{{replace payload.n 4 7}}", "72"),
            ("{{urlencode \"a b&c=d/é+\"}}", "a%20b%26c%3Dd%2F%C3%A9%2B"),
            ("{{urlencode payload.empty}}", ""),
            ("{{base64 \"hello\"}}", "aGVsbG8="),
            ("{{base64 \"é\"}}", "w6k="),
            ("{{base64 payload.empty}}", ""),
            ("{{join payload.tags \", \"}}", "a, b, c"),
            ("{{join payload.nested \"|\"}}", r#"1|[2,3]|{"k":1}||x"#),
            ("{{join payload.empty_list \",\"}}", ""),
            ("{{join payload.n \",\"}}", "42"),
            ("{{date payload.when \"rfc3339\"}}", "2024-03-05T04:07:08Z"),
            (
                "{{date payload.when \"[year]-[month]-[day] [hour]:[minute]\"}}",
                "2024-03-05 04:07",
            ),
            ("{{date payload.epoch \"rfc3339\"}}", "2023-11-14T22:13:20Z"),
            ("{{date payload.epoch_text \"[year]\"}}", "2023"),
            (
                "{{date 1700000000.5 \"rfc3339\"}}",
                "2023-11-14T22:13:20.5Z",
            ),
            ("{{date payload.when \"unix\"}}", "1709611628"),
            ("{{date payload.when \"unix_ms\"}}", "1709611628000"),
            ("{{date payload.missing \"unix\"}}", ""),
            ("{{jsonpath \"$.pusher.name\"}}", "octocat"),
            ("{{jsonpath \"$.nope\"}}", ""),
            (
                "{{#each payload.commits}}{{jsonpath \"$.pusher.name\"}}{{/each}}",
                "octocatoctocatoctocat",
            ),
        ];
        for (src, want) in cases {
            assert_eq!(r(src), *want, "{src}");
        }
    }

    #[test]
    fn helpers_return_typed_values_as_subexpressions() {
        let cases: &[(&str, &str)] = &[
            ("{{json (len payload.commits)}}", "3"),
            ("{{json (default payload.missing 5)}}", "5"),
            ("{{json (default payload.obj 5)}}", r#"{"k":"v"}"#),
            ("{{json (upper payload.word)}}", r#""HÉLLO WÖRLD""#),
            ("{{json (upper payload.missing)}}", "null"),
            ("{{json (lower \"A\")}}", r#""a""#),
            ("{{json (trim \" a \")}}", r#""a""#),
            ("{{json (truncate payload.emoji 2)}}", r#""a😀""#),
            ("{{json (replace \"aa\" \"a\" \"b\")}}", r#""bb""#),
            ("{{json (urlencode \"a b\")}}", r#""a%20b""#),
            ("{{json (base64 \"hello\")}}", r#""aGVsbG8=""#),
            ("{{json (join payload.tags \"-\")}}", r#""a-b-c""#),
            ("{{json (json payload.obj)}}", r#""{\"k\":\"v\"}""#),
            ("{{json (date payload.epoch \"unix\")}}", "1700000000"),
            ("{{json (date payload.epoch \"unix_ms\")}}", "1700000000000"),
            (
                "{{json (jsonpath \"$.commits[*].id\")}}",
                r#"["c1","c2","c3"]"#,
            ),
            ("{{json (jsonpath \"$.commits[0]\")}}", r#"{"id":"c1"}"#),
            ("{{json (jsonpath \"$.n\")}}", "42"),
            ("{{json (jsonpath \"$.nope\")}}", "null"),
            ("{{#if (jsonpath \"$.flag\")}}yes{{else}}no{{/if}}", "yes"),
            ("{{upper (default payload.missing \"x\")}}", "X"),
        ];
        for (src, want) in cases {
            assert_eq!(r(src), *want, "{src}");
        }
    }

    #[test]
    fn now_formats_current_utc_time() {
        let before = OffsetDateTime::now_utc().unix_timestamp();
        let secs: i64 = r("{{now \"unix\"}}").parse().unwrap();
        assert!((before..=before + 5).contains(&secs));
        let ms: i64 = r("{{json (now \"unix_ms\")}}").parse().unwrap();
        assert!(ms / 1000 >= before && ms / 1000 <= before + 5);
        let rfc = r("{{now}}");
        let parsed = OffsetDateTime::parse(&rfc, &Rfc3339).unwrap();
        assert_eq!(parsed.offset(), UtcOffset::UTC);
        assert!(rfc.ends_with('Z'), "{rfc}");
        assert_eq!(
            r("{{now \"[year]\"}}"),
            OffsetDateTime::now_utc().year().to_string()
        );
        assert_eq!(r("{{json (now \"rfc3339\")}}").chars().next(), Some('"'));
        // `(now)` alone parses as a reference, which handlebars still calls as a helper.
        assert!(r("{{json (now)}}").ends_with("Z\""));
    }

    #[test]
    fn bad_arguments_are_render_errors_naming_the_helper() {
        let cases: &[(&str, &str)] = &[
            ("{{json}}", "`json` expects 1 argument, got 0"),
            (
                "{{json payload.n payload.n}}",
                "`json` expects 1 argument, got 2",
            ),
            (
                "{{default payload.n}}",
                "`default` expects 2 arguments, got 1 (usage: default VALUE FALLBACK)",
            ),
            ("{{upper}}", "`upper` expects 1 argument, got 0"),
            ("{{lower \"a\" \"b\"}}", "`lower` expects 1 argument"),
            ("{{trim}}", "`trim` expects 1 argument"),
            (
                "{{truncate payload.word}}",
                "`truncate` expects 2 arguments, got 1",
            ),
            (
                "{{truncate payload.word -1}}",
                "`truncate`: N must be a whole number",
            ),
            (
                "{{truncate payload.word \"x\"}}",
                "`truncate`: N must be a whole number",
            ),
            (
                "{{replace payload.word \"a\"}}",
                "`replace` expects 3 arguments",
            ),
            (
                "{{replace payload.word \"\" \"x\"}}",
                "`replace`: FROM must not be empty",
            ),
            ("{{urlencode}}", "`urlencode` expects 1 argument"),
            ("{{base64 \"a\" \"b\"}}", "`base64` expects 1 argument"),
            ("{{join payload.tags}}", "`join` expects 2 arguments"),
            (
                "{{now \"a\" \"b\"}}",
                "`now` expects 0 or 1 argument, got 2",
            ),
            ("{{now \"[nope]\"}}", "`now`: invalid FORMAT \"[nope]\""),
            ("{{now 5}}", "`now`: FORMAT must be a string"),
            ("{{date payload.when}}", "`date` expects 2 arguments"),
            (
                "{{date \"yesterday\" \"unix\"}}",
                "`date`: \"yesterday\" is neither RFC 3339 nor unix seconds",
            ),
            (
                "{{date payload.obj \"unix\"}}",
                "`date`: VALUE must be an RFC 3339 string or unix seconds",
            ),
            (
                "{{date 99999999999999 \"unix\"}}",
                "`date`: 99999999999999 is out of range",
            ),
            ("{{jsonpath}}", "`jsonpath` expects 1 argument, got 0"),
            (
                "{{jsonpath \"$.a\" \"$.b\"}}",
                "`jsonpath` expects 1 argument, got 2",
            ),
            ("{{jsonpath \"$[?\"}}", "`jsonpath`: invalid JSONPath `$[?`"),
            (
                "{{jsonpath payload.n}}",
                "`jsonpath`: the path must be a string",
            ),
            (
                "{{upper payload.word x=1}}",
                "`upper` takes no named arguments",
            ),
            (
                "{{json (truncate payload.word)}}",
                "`truncate` expects 2 arguments",
            ),
        ];
        for (src, want) in cases {
            let e = err(src);
            assert!(e.contains(want), "{src}: {e:?} does not contain {want:?}");
        }
    }

    #[test]
    fn nothing_is_html_escaped() {
        let html = "<a href=\"x\">&</a>";
        assert_eq!(r("{{payload.html}}"), html);
        assert_eq!(r("{{{payload.html}}}"), html);
        assert_eq!(r("{{trim payload.html}}"), html);
        assert_eq!(r("{{default payload.missing payload.html}}"), html);
        assert_eq!(r("{{json payload.html}}"), r#""<a href=\"x\">&</a>""#);
        assert_eq!(r("<b>{{#if payload.flag}}'&'{{/if}}</b>"), "<b>'&'</b>");
    }

    #[test]
    fn handlebars_builtins_and_plain_rendering_are_kept() {
        assert_eq!(
            r("{{#each payload.tags}}{{@index}}={{this}};{{/each}}"),
            "0=a;1=b;2=c;"
        );
        assert_eq!(
            r("{{#if (eq headers.x-github-event \"push\")}}push{{/if}}"),
            "push"
        );
        assert_eq!(r("{{len payload.tags}}"), "3");
        assert_eq!(
            r("{{payload.obj}}|{{payload.n}}|{{payload.flag}}|{{payload.missing}}"),
            "[object]|42|true|"
        );
        assert_eq!(r("{{lookup payload.pusher \"name\"}}"), "octocat");
    }

    #[test]
    fn helper_names_cover_every_registered_helper() {
        let reg = registry();
        for name in HELPER_NAMES {
            // Calling each name with no arguments must hit the helper, not "helper not found".
            let tpl = Template::compile(&format!("{{{{{name} 1 2 3 4}}}}")).unwrap();
            if let Err(e) = render(&reg, &tpl, &Context::from(json!({}))) {
                assert!(!e.to_string().contains("not found"), "{name}: {e}");
            }
        }
        for name in OWN_HELPERS {
            assert!(HELPER_NAMES.contains(name), "{name}");
        }
        assert_eq!(VALUE_HELPERS.len() + 1, OWN_HELPERS.len());
    }
}
