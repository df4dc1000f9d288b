//! Templates: arbitrary source and hostile values. Input: template source, a
//! 0xFF byte, then the payload as JSON (without 0xFF, all of it is source and
//! the payload is a fixed hostile one). The source is compiled as a text, URL
//! and typed JSON template and rendered; fixed templates that call every
//! helper are rendered against the payload. Compiling and rendering may fail
//! with an error, never panic.
#![no_main]

use std::sync::LazyLock;

use hookwire::syntax::node::{Kind, Node, Pos};
use hookwire::template::{self, Context, JsonTemplate, Template};
use libfuzzer_sys::fuzz_target;
use serde_json::{Value, json};

/// Every helper, fed from the payload so the fuzzer picks the values.
const TEMPLATES: &[&str] = &[
    "{{payload.a}}-{{{payload.b}}}-{{payload.a.b.c}}-{{payload.[0]}}",
    "{{json payload}}",
    "{{json (jsonpath payload.p)}}",
    "{{jsonpath '$..*'}}",
    "{{default payload.a payload.b}}",
    "{{upper payload.a}}{{lower payload.b}}{{trim payload.c}}",
    "{{truncate payload.a payload.n}}",
    "{{truncate payload.a 3}}",
    "{{replace payload.a payload.b payload.c}}",
    "{{urlencode payload.a}}",
    "{{base64 payload.a}}",
    "{{join payload.a payload.b}}",
    "{{join payload.list ', '}}",
    "{{now payload.f}}",
    "{{date payload.d payload.f}}",
    "{{date payload.n 'unix_ms'}}",
    "{{date payload.d 'rfc3339'}}",
    "{{date payload.a '[year]-[month]-[day] [hour]:[minute]:[second].[subsecond]'}}",
    "{{#each payload}}{{@key}}={{this}};{{/each}}",
    "{{#each payload.list}}{{@index}}:{{json this}}{{#if @last}}.{{/if}}{{/each}}",
    "{{#with payload.a}}{{this}}{{b}}{{/with}}",
    "{{#if (eq payload.a payload.b)}}y{{else}}n{{/if}}",
    "{{#unless (gt payload.n 3)}}small{{/unless}}",
    "{{lookup payload payload.k}}",
    "{{len payload.list}}{{len payload.a}}",
    "{{and payload.a (or payload.b (not payload.c))}}",
    "{{headers.x-event}} {{query.q}} {{event.id}} {{rule.name}} {{attempt}}",
];

/// Typed JSON bodies: single expressions keep their JSON type.
const BODIES: &[&str] = &[
    "{a: '{{payload.a}}', n: '{{payload.n}}', l: ['x-{{payload.b}}', '{{len payload.list}}'], t: '{{json payload}}'}",
    "['{{jsonpath payload.p}}', '{{default payload.a 5}}', '{{upper payload.a}}', 7, null]",
];

static FIXED: LazyLock<Vec<Template>> = LazyLock::new(|| {
    TEMPLATES
        .iter()
        .map(|s| Template::compile(s).unwrap_or_else(|e| panic!("fixed template {s}: {e}")))
        .collect()
});

static FIXED_URL: LazyLock<Vec<Template>> = LazyLock::new(|| {
    TEMPLATES
        .iter()
        .map(|s| Template::compile_url(s).unwrap_or_else(|e| panic!("fixed template {s}: {e}")))
        .collect()
});

static FIXED_BODIES: LazyLock<Vec<JsonTemplate>> = LazyLock::new(|| {
    BODIES
        .iter()
        .map(|s| {
            let node = hookwire::syntax::node::parse_yaml(s).expect("fixed body parses");
            let mut errors = Vec::new();
            JsonTemplate::compile(&node, &mut errors)
                .unwrap_or_else(|| panic!("fixed body {s}: {errors:?}"))
        })
        .collect()
});

static HOSTILE: LazyLock<Value> = LazyLock::new(|| {
    json!({"a": "quote \" back \\ nl \n {{payload.a}} }} \u{0} \u{1b}[31m é", "b": "",
           "c": null, "n": 18446744073709551615u64, "list": [1, "two", null, {"k": [true]}],
           "d": -1e300, "f": "[year", "p": "$[?@", "k": "a"})
});

fn render_all(ctx: &Context, ctx_json: &Value, t: &Template) {
    let _ = t.render(ctx);
    let _ = t.missing_fields(ctx_json);
}

fuzz_target!(|data: &[u8]| {
    let (source, payload) = match data.iter().position(|&b| b == 0xFF) {
        Some(i) => (&data[..i], Some(&data[i + 1..])),
        None => (data, None),
    };
    let payload = match payload {
        Some(p) => match serde_json::from_slice::<Value>(p) {
            Ok(v) => v,
            Err(_) => return,
        },
        None => HOSTILE.clone(),
    };
    let text = |v: Option<&Value>| v.map(|v| v.to_string()).unwrap_or_default();
    let req = hookwire::request::Request {
        event_id: "evt_01".into(),
        source: "fuzz".into(),
        received_at: "2026-01-01T00:00:00Z".into(),
        method: "POST".into(),
        path: "/hooks/fuzz".into(),
        headers: vec![("x-event".into(), text(payload.get("a")))],
        query: vec![("q".into(), text(payload.get("b")))],
        body: Default::default(),
        payload,
    };
    let ctx = template::context(&req, "r", 1);
    let ctx_json = ctx.data().clone();

    for t in FIXED.iter().chain(FIXED_URL.iter()) {
        render_all(&ctx, &ctx_json, t);
    }
    for b in FIXED_BODIES.iter() {
        if let Ok(v) = b.render(&ctx) {
            // A rendered body is always a valid JSON document.
            let text = serde_json::to_string(&v).expect("a rendered body serializes");
            serde_json::from_str::<Value>(&text).expect("a rendered body parses");
        }
    }

    let Ok(source) = std::str::from_utf8(source) else {
        return;
    };
    if let Ok(t) = Template::compile(source) {
        render_all(&ctx, &ctx_json, &t);
    }
    if let Ok(t) = Template::compile_url(source) {
        render_all(&ctx, &ctx_json, &t);
    }
    let node = Node::new(Pos { line: 1, col: 1 }, Kind::Str(source.to_owned()));
    let mut errors = Vec::new();
    if let Some(b) = JsonTemplate::compile(&node, &mut errors) {
        let _ = b.render(&ctx);
        for t in b.templates() {
            let _ = t.missing_fields(&ctx_json);
        }
    }
});
