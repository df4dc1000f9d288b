//! `${VAR}` and `${VAR:-default}` in rule-file strings, resolved at load time.
//!
//! The environment is passed in as a map (never read from the process here),
//! so tests and `hookwire check` can resolve against any environment. Every
//! value that came from a variable is remembered: such values are treated as
//! secrets and redacted wherever hookwire shows data. `$${` writes a literal `${`.

use std::collections::HashMap;

use crate::syntax::node::{Kind, Node, Pos};

/// What resolving a file produced besides the rewritten tree.
#[derive(Debug, Default)]
pub struct Resolved {
    /// `(position, message)` for every malformed `${…}`.
    pub errors: Vec<(Pos, String)>,
    /// `(name, position)` of every use of a variable that is not set.
    pub missing: Vec<(String, Pos)>,
    /// Strings left unresolved (a variable missing or malformed): whatever
    /// else is wrong with them follows from that and is not reported.
    pub poisoned: Vec<Pos>,
    /// Values substituted from variables.
    pub secrets: Vec<String>,
    /// Names of the variables those values came from.
    pub variables: Vec<String>,
}

/// Rewrites every string of `node` in place.
pub fn resolve(node: &mut Node, env: &HashMap<String, String>, out: &mut Resolved) {
    match &mut node.kind {
        Kind::Str(s) if s.contains('$') => {
            match substitute(s, env, &mut out.secrets, &mut out.variables) {
                Ok(new) => *s = new,
                Err(Unresolved::Missing(names)) => {
                    out.poisoned.push(node.pos);
                    out.missing
                        .extend(names.into_iter().map(|name| (name, node.pos)));
                }
                Err(Unresolved::Malformed(message)) => {
                    out.poisoned.push(node.pos);
                    out.errors.push((node.pos, message));
                }
            }
        }
        Kind::Seq(items) => items.iter_mut().for_each(|n| resolve(n, env, out)),
        Kind::Map(entries) => entries.iter_mut().for_each(|(_, n)| resolve(n, env, out)),
        _ => {}
    }
}

/// Why a string could not be resolved.
#[derive(Debug, PartialEq, Eq)]
enum Unresolved {
    /// These variables (in order, each once) are not set and have no default.
    Missing(Vec<String>),
    Malformed(String),
}

/// The message for a variable that is not set, used by `uses` strings.
pub fn missing_message(name: &str, uses: usize) -> String {
    let places = if uses > 1 {
        format!(" (used in {uses} places)")
    } else {
        String::new()
    };
    format!(
        "environment variable `{name}` is not set{places}: set it, or write `${{{name}:-default}}` for a default"
    )
}

/// Whether a problem reported at `at` follows from an unresolved variable:
/// it is reported at a poisoned string, or at a key or collection whose
/// values (up to two levels down: `verify: { standard: { secret: "${S}" } }`,
/// `secret: ["${A}", "${B}"]`) hold one.
pub fn follows_from_unresolved(root: &Node, at: Pos, poisoned: &[Pos]) -> bool {
    fn holds(node: &Node, poisoned: &[Pos], depth: u8) -> bool {
        poisoned.contains(&node.pos)
            || (depth > 0
                && match &node.kind {
                    Kind::Seq(items) => items.iter().any(|n| holds(n, poisoned, depth - 1)),
                    Kind::Map(entries) => {
                        entries.iter().any(|(_, n)| holds(n, poisoned, depth - 1))
                    }
                    _ => false,
                })
    }
    fn find(node: &Node, at: Pos) -> Option<&Node> {
        if node.pos == at {
            return Some(node);
        }
        match &node.kind {
            Kind::Seq(items) => items.iter().find_map(|n| find(n, at)),
            Kind::Map(entries) => entries
                .iter()
                .find_map(|(k, n)| if k.pos == at { Some(n) } else { find(n, at) }),
            _ => None,
        }
    }
    !poisoned.is_empty() && find(root, at).is_some_and(|n| holds(n, poisoned, 2))
}

fn substitute(
    s: &str,
    env: &HashMap<String, String>,
    secrets: &mut Vec<String>,
    variables: &mut Vec<String>,
) -> Result<String, Unresolved> {
    let mut out = String::with_capacity(s.len());
    let mut missing: Vec<String> = Vec::new();
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
                .ok_or_else(|| Unresolved::Malformed(format!("unclosed `${{` in `{s}`")))?;
            let expr = &tail[..end];
            let (name, default) = match expr.split_once(":-") {
                Some((n, d)) => (n, Some(d)),
                None => (expr, None),
            };
            let valid = !name.is_empty()
                && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
                && !name.as_bytes()[0].is_ascii_digit();
            if !valid {
                return Err(Unresolved::Malformed(format!(
                    "invalid variable name `{name}` in `${{{expr}}}`"
                )));
            }
            match (env.get(name), default) {
                (Some(v), _) => {
                    if !v.is_empty() {
                        secrets.push(v.clone());
                    }
                    if !variables.iter().any(|n| n == name) {
                        variables.push(name.to_owned());
                    }
                    out.push_str(v);
                }
                (None, Some(d)) => out.push_str(d),
                (None, None) => {
                    if !missing.iter().any(|m| m == name) {
                        missing.push(name.to_owned());
                    }
                }
            }
            rest = &tail[end + 1..];
        } else {
            out.push('$');
            rest = &after[1..];
        }
    }
    out.push_str(rest);
    if missing.is_empty() {
        Ok(out)
    } else {
        Err(Unresolved::Missing(missing))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn variables_defaults_escapes_and_errors() {
        let env: HashMap<String, String> = [("TOKEN".to_owned(), "s3cret".to_owned())].into();
        let missing = |names: &[&str]| {
            Err(Unresolved::Missing(
                names.iter().map(|n| (*n).to_owned()).collect(),
            ))
        };
        let malformed = |m: &str| Err(Unresolved::Malformed(m.to_owned()));
        let cases: &[(&str, Result<&str, Unresolved>)] = &[
            ("Bearer ${TOKEN}", Ok("Bearer s3cret")),
            ("${MISSING:-fallback}", Ok("fallback")),
            ("${MISSING:-}", Ok("")),
            ("cost $5 and $${LITERAL}", Ok("cost $5 and ${LITERAL}")),
            ("${MISSING}", missing(&["MISSING"])),
            // Every missing variable of a string, each once.
            ("${A}/${TOKEN}/${B}/${A}", missing(&["A", "B"])),
            (
                "${BAD NAME}",
                malformed("invalid variable name `BAD NAME` in `${BAD NAME}`"),
            ),
            ("${TOKEN", malformed("unclosed `${` in `${TOKEN`")),
        ];
        for (input, want) in cases {
            let mut secrets = Vec::new();
            let got = substitute(input, &env, &mut secrets, &mut Vec::new());
            assert_eq!(got.as_deref(), want.as_ref().map(|s| *s), "{input}");
        }
        let (mut secrets, mut names) = (Vec::new(), Vec::new());
        substitute("${TOKEN} ${TOKEN}", &env, &mut secrets, &mut names).unwrap();
        assert_eq!(secrets, ["s3cret", "s3cret"]);
        assert_eq!(names, ["TOKEN"]);
    }
}
