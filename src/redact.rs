//! Secrets out of every output: the one place that log lines, stored attempt
//! errors and responses, admin API answers and CLI output pass through.
//!
//! A secret is any value that came from `${VAR}` in a rule file (registered
//! by every load of rule files, valid or not), the admin token and the SMTP
//! URL's credentials. The process remembers every secret it has seen: a
//! value removed from the rule files is still a credential. Each secret is
//! also looked for in the forms other layers give it on the way out —
//! percent-encoded in a URL path, query or user info, form-encoded,
//! JSON-escaped and `Debug`-escaped — so a secret inside a URL that reqwest
//! prints in its error text is caught like the plain one.
//!
//! This module sits at the bottom of the crate and imports nothing from it.

use std::borrow::Cow;
use std::collections::BTreeSet;
use std::sync::{Arc, LazyLock, Mutex};

use aho_corasick::{AhoCorasick, MatchKind};
use arc_swap::ArcSwap;
use percent_encoding::{AsciiSet, CONTROLS, NON_ALPHANUMERIC, utf8_percent_encode};

/// What a secret is replaced with.
pub const MASK: &str = "[redacted]";

/// Shorter values are not treated as secrets: redacting every `1` or `on`
/// (say, `${DEBUG:-on}`) would make every output unreadable and hide nothing.
pub const MIN_SECRET_LEN: usize = 3;

/// The sets the `url` crate percent-encodes in a path, a query and user info
/// (WHATWG URL), so a secret is found in a URL exactly as reqwest prints it.
const QUERY: &AsciiSet = &CONTROLS.add(b' ').add(b'"').add(b'#').add(b'<').add(b'>');
const PATH: &AsciiSet = &QUERY.add(b'?').add(b'`').add(b'{').add(b'}');
const USERINFO: &AsciiSet = &PATH
    .add(b'/')
    .add(b':')
    .add(b';')
    .add(b'=')
    .add(b'@')
    .add(b'[')
    .add(b'\\')
    .add(b']')
    .add(b'^')
    .add(b'|');

struct Matcher {
    ac: Option<AhoCorasick>,
}

struct Registry {
    secrets: Mutex<BTreeSet<String>>,
    matcher: ArcSwap<Matcher>,
}

static REGISTRY: LazyLock<Registry> = LazyLock::new(|| Registry {
    secrets: Mutex::new(BTreeSet::new()),
    matcher: ArcSwap::from_pointee(Matcher { ac: None }),
});

/// Adds secrets to the process's set; values shorter than
/// [`MIN_SECRET_LEN`] are ignored.
pub fn register<S: AsRef<str>>(secrets: impl IntoIterator<Item = S>) {
    let mut known = REGISTRY.secrets.lock().unwrap_or_else(|p| p.into_inner());
    let mut added = false;
    for s in secrets {
        let s = s.as_ref();
        if s.len() >= MIN_SECRET_LEN && !known.contains(s) {
            for form in forms(s) {
                added |= known.insert(form);
            }
        }
    }
    if added {
        // Longest first among overlapping matches, so a secret that contains
        // another is masked whole.
        let ac = AhoCorasick::builder()
            .match_kind(MatchKind::LeftmostLongest)
            .build(known.iter())
            .ok();
        REGISTRY.matcher.store(Arc::new(Matcher { ac }));
    }
}

/// The credentials in a URL (`smtp://user:pass@host`): the password, the
/// user name, and the whole URL.
pub fn register_url(url: &str) {
    let mut found = vec![url.to_owned()];
    if let Ok(u) = url::Url::parse(url) {
        if let Some(p) = u.password() {
            found.push(decode(p));
        }
        if !u.username().is_empty() {
            found.push(decode(u.username()));
        }
    }
    register(found);
}

fn decode(s: &str) -> String {
    percent_encoding::percent_decode_str(s)
        .decode_utf8_lossy()
        .into_owned()
}

/// The forms a secret takes on its way out of the process.
fn forms(s: &str) -> Vec<String> {
    let mut out = vec![s.to_owned()];
    let mut add = |f: String| {
        if f.len() >= MIN_SECRET_LEN && !out.contains(&f) {
            out.push(f);
        }
    };
    add(utf8_percent_encode(s, PATH).to_string());
    add(utf8_percent_encode(s, QUERY).to_string());
    add(utf8_percent_encode(s, USERINFO).to_string());
    add(utf8_percent_encode(s, NON_ALPHANUMERIC).to_string());
    add(url::form_urlencoded::byte_serialize(s.as_bytes()).collect());
    if let Ok(json) = serde_json::to_string(s) {
        add(json[1..json.len() - 1].to_owned());
    }
    let debug = format!("{s:?}");
    add(debug[1..debug.len() - 1].to_owned());
    out
}

/// `text` with every secret masked; borrowed when there is none.
pub fn text(text: &str) -> Cow<'_, str> {
    let m = REGISTRY.matcher.load();
    match &m.ac {
        Some(ac) if ac.is_match(text) => {
            Cow::Owned(ac.replace_all(text, &vec![MASK; ac.patterns_len()]))
        }
        _ => Cow::Borrowed(text),
    }
}

/// Bytes with every secret masked (the log writer's path).
pub fn bytes(bytes: &[u8]) -> Cow<'_, [u8]> {
    let m = REGISTRY.matcher.load();
    match &m.ac {
        Some(ac) if ac.is_match(bytes) => {
            Cow::Owned(ac.replace_all_bytes(bytes, &vec![MASK; ac.patterns_len()]))
        }
        _ => Cow::Borrowed(bytes),
    }
}

/// Owned bytes with every secret masked; no copy when there is none.
pub fn owned_bytes(v: Vec<u8>) -> Vec<u8> {
    match bytes(&v) {
        Cow::Borrowed(_) => v,
        Cow::Owned(masked) => masked,
    }
}

/// Masks secrets in every string (and object key) of a JSON value.
pub fn json(v: &mut serde_json::Value) {
    use serde_json::Value;
    match v {
        Value::String(s) => {
            if let Cow::Owned(r) = text(s) {
                *s = r;
            }
        }
        Value::Array(items) => items.iter_mut().for_each(json),
        Value::Object(map) => {
            if map.keys().any(|k| matches!(text(k), Cow::Owned(_))) {
                let old = std::mem::take(map);
                for (k, mut val) in old {
                    json(&mut val);
                    map.insert(text(&k).into_owned(), val);
                }
            } else {
                map.values_mut().for_each(json);
            }
        }
        _ => {}
    }
}

/// An `Option<String>` masked in place.
pub fn opt(s: Option<String>) -> Option<String> {
    s.map(|s| match text(&s) {
        Cow::Owned(r) => r,
        Cow::Borrowed(_) => s,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    // The registry is process-wide; each test uses secrets of its own.

    #[test]
    fn every_outgoing_form_of_a_secret_is_masked() {
        let secret = "tok en-é<x>\"";
        register([secret]);
        let url = url::Url::parse(&format!(
            "https://h.example/p/{secret}?q={}",
            url::form_urlencoded::byte_serialize(secret.as_bytes()).collect::<String>()
        ))
        .unwrap();
        for shown in [
            secret.to_owned(),
            url.to_string(),
            format!("{url:?}"),
            serde_json::json!({ "e": secret }).to_string(),
            format!("{:?}", secret),
        ] {
            let r = text(&shown);
            assert!(
                !r.contains("tok en") && !r.contains("tok%20en") && !r.contains("tok+en"),
                "{shown} -> {r}"
            );
            assert!(r.contains(MASK), "{shown} -> {r}");
        }
    }

    #[test]
    fn credentials_of_a_url_are_masked() {
        register_url("smtp://mailer:p%40ss-w0rd@127.0.0.1:25");
        assert_eq!(
            text("auth as mailer with p@ss-w0rd"),
            format!("auth as {MASK} with {MASK}")
        );
    }

    #[test]
    fn short_values_are_not_secrets_and_longest_wins() {
        register(["on", "abcdef-long", "abcdef"]);
        assert_eq!(text("on abcdef-long abcdef"), format!("on {MASK} {MASK}"));
        assert!(matches!(text("nothing here"), Cow::Borrowed(_)));
    }

    #[test]
    fn json_values_and_keys_are_masked() {
        register(["k3y-s3cret"]);
        let mut v = serde_json::json!({ "a": ["x k3y-s3cret y"], "k3y-s3cret": 1 });
        json(&mut v);
        assert_eq!(
            v,
            serde_json::json!({ "a": [format!("x {MASK} y")], MASK: 1 })
        );
    }
}
