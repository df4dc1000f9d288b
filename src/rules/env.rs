//! `${VAR}` and `${VAR:-default}` in rule-file strings, resolved at load time.
//!
//! The environment is passed in as a map (never read from the process here),
//! so tests and `hookwire check` can resolve against any environment. Every
//! value that came from a variable is remembered: such values are treated as
//! secrets and redacted wherever hookwire shows data. `$${` writes a literal `${`.

use std::collections::HashMap;

use super::node::{Kind, Node, Pos};

/// What resolving a file produced besides the rewritten tree.
#[derive(Debug, Default)]
pub struct Resolved {
    /// `(position, message)` for every variable that is missing or malformed.
    pub errors: Vec<(Pos, String)>,
    /// Values substituted from variables.
    pub secrets: Vec<String>,
}

/// Rewrites every string of `node` in place.
pub fn resolve(node: &mut Node, env: &HashMap<String, String>, out: &mut Resolved) {
    match &mut node.kind {
        Kind::Str(s) if s.contains('$') => match substitute(s, env, &mut out.secrets) {
            Ok(new) => *s = new,
            Err(message) => out.errors.push((node.pos, message)),
        },
        Kind::Seq(items) => items.iter_mut().for_each(|n| resolve(n, env, out)),
        Kind::Map(entries) => entries.iter_mut().for_each(|(_, n)| resolve(n, env, out)),
        _ => {}
    }
}

fn substitute(
    s: &str,
    env: &HashMap<String, String>,
    secrets: &mut Vec<String>,
) -> Result<String, String> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i..];
        if let Some(tail) = after.strip_prefix("$${") {
            out.push_str("${");
            rest = tail;
        } else if let Some(tail) = after.strip_prefix("${") {
            let end = tail
                .find('}')
                .ok_or_else(|| format!("unclosed `${{` in `{s}`"))?;
            let expr = &tail[..end];
            let (name, default) = match expr.split_once(":-") {
                Some((n, d)) => (n, Some(d)),
                None => (expr, None),
            };
            let valid = !name.is_empty()
                && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
                && !name.as_bytes()[0].is_ascii_digit();
            if !valid {
                return Err(format!("invalid variable name `{name}` in `${{{expr}}}`"));
            }
            match (env.get(name), default) {
                (Some(v), _) => {
                    if !v.is_empty() {
                        secrets.push(v.clone());
                    }
                    out.push_str(v);
                }
                (None, Some(d)) => out.push_str(d),
                (None, None) => {
                    return Err(format!(
                        "environment variable `{name}` is not set (write `${{{name}:-default}}` for a default)"
                    ));
                }
            }
            rest = &tail[end + 1..];
        } else {
            out.push('$');
            rest = &after[1..];
        }
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn variables_defaults_escapes_and_errors() {
        let env: HashMap<String, String> = [("TOKEN".to_owned(), "s3cret".to_owned())].into();
        let cases: &[(&str, Result<&str, &str>)] = &[
            ("Bearer ${TOKEN}", Ok("Bearer s3cret")),
            ("${MISSING:-fallback}", Ok("fallback")),
            ("${MISSING:-}", Ok("")),
            ("cost $5 and $${LITERAL}", Ok("cost $5 and ${LITERAL}")),
            (
                "${MISSING}",
                Err(
                    "environment variable `MISSING` is not set (write `${MISSING:-default}` for a default)",
                ),
            ),
            (
                "${BAD NAME}",
                Err("invalid variable name `BAD NAME` in `${BAD NAME}`"),
            ),
            ("${TOKEN", Err("unclosed `${` in `${TOKEN`")),
        ];
        for (input, want) in cases {
            let mut secrets = Vec::new();
            let got = substitute(input, &env, &mut secrets);
            assert_eq!(got.as_deref().map_err(String::as_str), *want, "{input}");
        }
        let mut secrets = Vec::new();
        substitute("${TOKEN}", &env, &mut secrets).unwrap();
        assert_eq!(secrets, ["s3cret"]);
    }
}
