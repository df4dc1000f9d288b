//! Static analyses of compiled templates, run at load and by `hookwire test`:
//! the literal JSONPath arguments of `jsonpath` (so the loader can compile
//! them) and the context fields a template reads that an event lacks.

use std::collections::HashMap;

use handlebars::template::{HelperTemplate, Parameter, TemplateElement};
use handlebars::{JsonTruthy, Path, PathSeg, Template};

use super::helpers::HELPER_NAMES;
use serde_json::Value;

fn helper_name(ht: &HelperTemplate) -> &str {
    ht.name.as_name().unwrap_or("")
}

/// Mirrors handlebars' private `HelperTemplate::is_name_only`: `{{x}}` with nothing else.
fn is_name_only(ht: &HelperTemplate) -> bool {
    !ht.block && ht.params.is_empty() && ht.hash.is_empty()
}

/// Hash arguments in a stable order (the AST keeps them in a `HashMap`).
fn sorted_hash(hash: &HashMap<String, Parameter>) -> Vec<&Parameter> {
    let mut entries: Vec<_> = hash.iter().collect();
    entries.sort_by(|a, b| a.0.cmp(b.0));
    entries.into_iter().map(|(_, p)| p).collect()
}

/// The string literals given to `jsonpath` anywhere in `tpl` (blocks, `else`
/// branches and subexpressions included), so the loader can compile them.
pub fn literal_jsonpath_args(tpl: &Template) -> Vec<String> {
    let mut out = Vec::new();
    collect_jsonpaths_in(tpl, &mut out);
    out
}

fn collect_jsonpaths_in(tpl: &Template, out: &mut Vec<String>) {
    for el in &tpl.elements {
        match el {
            TemplateElement::Expression(ht)
            | TemplateElement::HtmlExpression(ht)
            | TemplateElement::HelperBlock(ht) => collect_jsonpaths(ht, out),
            TemplateElement::PartialExpression(dt)
            | TemplateElement::PartialBlock(dt)
            | TemplateElement::DecoratorExpression(dt)
            | TemplateElement::DecoratorBlock(dt) => {
                for p in dt.params.iter().chain(sorted_hash(&dt.hash)) {
                    collect_jsonpaths_param(p, out);
                }
                if let Some(t) = &dt.template {
                    collect_jsonpaths_in(t, out);
                }
            }
            _ => {}
        }
    }
}

fn collect_jsonpaths(ht: &HelperTemplate, out: &mut Vec<String>) {
    if helper_name(ht) == "jsonpath"
        && let Some(Parameter::Literal(Value::String(s))) = ht.params.first()
    {
        out.push(s.clone());
    }
    for p in ht.params.iter().chain(sorted_hash(&ht.hash)) {
        collect_jsonpaths_param(p, out);
    }
    for t in [&ht.template, &ht.inverse].into_iter().flatten() {
        collect_jsonpaths_in(t, out);
    }
}

fn collect_jsonpaths_param(p: &Parameter, out: &mut Vec<String>) {
    if let Parameter::Subexpression(s) = p
        && let TemplateElement::Expression(ht) = s.as_element()
    {
        collect_jsonpaths(ht, out);
    }
}

/// Dotted paths (`payload.pusher.name`, `headers.x-github-event`) that `tpl` reads
/// from the top-level context and that `ctx` does not have, each once, in order.
///
/// Rules, chosen so a warning means "this would render empty and you did not plan it":
/// - Inside `#each`, `#with` and unknown block helpers, relative paths are read against
///   a scope not known statically and are skipped; `@root.…` paths are still checked,
///   and the `{{else}}` branch of those blocks keeps the outer scope.
/// - `#if`/`#unless` keep the scope. Their condition is an existence test, so a missing
///   condition field is not reported; when the condition is a plain path only the branch
///   `ctx` would take is checked (the other is not "met").
/// - The VALUE of `default` is not reported: a fallback was written for it.
/// - `this.`/`./` prefixes are dropped; `../`, `@index`-style locals and `this` are skipped.
/// - A field that is present but `null` is not missing.
pub fn missing_fields(tpl: &Template, ctx: &Value) -> Vec<String> {
    let mut walker = MissingWalker {
        ctx,
        out: Vec::new(),
        step_refs: false,
    };
    walker.template(tpl, Scope::Root);
    walker.out
}

/// The actions whose outputs `tpl` reads as `steps.<name>` (SPEC §4.7),
/// each once, in order: every branch counts, and so does a path tested by
/// `#if` or given a `default`.
pub fn step_refs(tpl: &Template) -> Vec<String> {
    let mut walker = MissingWalker {
        ctx: &Value::Null,
        out: Vec::new(),
        step_refs: true,
    };
    walker.template(tpl, Scope::Root);
    walker.out
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Scope {
    /// Relative paths read the top-level context.
    Root,
    /// Inside a block that changed `this`: relative paths cannot be checked.
    Unknown,
}

struct MissingWalker<'a> {
    ctx: &'a Value,
    out: Vec<String>,
    /// Collect the names under `steps.` instead of the missing fields.
    step_refs: bool,
}

impl MissingWalker<'_> {
    fn template(&mut self, tpl: &Template, scope: Scope) {
        for el in &tpl.elements {
            match el {
                TemplateElement::Expression(ht) | TemplateElement::HtmlExpression(ht) => {
                    self.expression(ht, scope)
                }
                TemplateElement::HelperBlock(ht) => self.block(ht, scope),
                _ => {}
            }
        }
    }

    /// `{{x}}`, `{{helper args…}}` or the inside of a subexpression.
    fn expression(&mut self, ht: &HelperTemplate, scope: Scope) {
        if is_name_only(ht) {
            // A bare name calls the helper of that name if there is one (`{{now}}`).
            if let Parameter::Path(p) = &ht.name
                && !HELPER_NAMES.contains(&helper_name(ht))
            {
                self.path(p, scope);
            }
            return;
        }
        let skip_first_path = helper_name(ht) == "default" && !self.step_refs;
        self.args(ht, scope, skip_first_path);
    }

    fn args(&mut self, ht: &HelperTemplate, scope: Scope, skip_first_path: bool) {
        for (i, p) in ht.params.iter().enumerate() {
            if i == 0 && skip_first_path && matches!(p, Parameter::Path(_)) {
                continue;
            }
            self.param(p, scope);
        }
        for p in sorted_hash(&ht.hash) {
            self.param(p, scope);
        }
    }

    fn param(&mut self, p: &Parameter, scope: Scope) {
        match p {
            Parameter::Path(path) => self.path(path, scope),
            Parameter::Subexpression(s) => {
                if let TemplateElement::Expression(ht) = s.as_element() {
                    self.expression(ht, scope);
                }
            }
            _ => {}
        }
    }

    fn block(&mut self, ht: &HelperTemplate, scope: Scope) {
        let name = helper_name(ht);
        match name {
            "if" | "unless" => {
                // Plain-path conditions are existence tests: only subexpressions are checked.
                self.args(ht, scope, !self.step_refs);
                let taken = if self.step_refs {
                    None
                } else {
                    self.condition(ht, scope)
                        .map(|truthy| truthy == (name == "if"))
                };
                if taken != Some(false)
                    && let Some(t) = &ht.template
                {
                    self.template(t, scope);
                }
                if taken != Some(true)
                    && let Some(t) = &ht.inverse
                {
                    self.template(t, scope);
                }
            }
            // Boolean built-ins used as blocks (`{{#eq a b}}`) render both branches in place.
            "eq" | "ne" | "gt" | "gte" | "lt" | "lte" | "and" | "or" | "not" => {
                self.args(ht, scope, false);
                for t in [&ht.template, &ht.inverse].into_iter().flatten() {
                    self.template(t, scope);
                }
            }
            _ => {
                self.args(ht, scope, false);
                if let Some(t) = &ht.template {
                    self.template(t, Scope::Unknown);
                }
                // `{{else}}` of `#each`/`#with` renders when there is nothing to enter: outer scope.
                if let Some(t) = &ht.inverse {
                    self.template(t, scope);
                }
            }
        }
    }

    /// The truthiness `#if` would see, when its condition is a path readable here.
    fn condition(&self, ht: &HelperTemplate, scope: Scope) -> Option<bool> {
        let Some(Parameter::Path(path)) = ht.params.first() else {
            return None;
        };
        let segs = self.checkable(path, scope)?;
        let include_zero = matches!(
            ht.hash.get("includeZero"),
            Some(Parameter::Literal(Value::Bool(true)))
        );
        Some(resolve(self.ctx, &segs).is_some_and(|v| v.is_truthy(include_zero)))
    }

    fn path(&mut self, path: &Path, scope: Scope) {
        let Some(segs) = self.checkable(path, scope) else {
            return;
        };
        if self.step_refs {
            if let ["steps", name, ..] = segs.as_slice()
                && !self.out.iter().any(|n| n == name)
            {
                self.out.push((*name).to_owned());
            }
            return;
        }
        if resolve(self.ctx, &segs).is_none() {
            let dotted = segs.join(".");
            if !self.out.contains(&dotted) {
                self.out.push(dotted);
            }
        }
    }

    /// The named segments of `path` when it reads the top-level context from here.
    fn checkable<'p>(&self, path: &'p Path, scope: Scope) -> Option<Vec<&'p str>> {
        // `Path::Local` is `@index`, `@key`, …: block-local data, never a context field.
        let Path::Relative((segs, raw)) = path else {
            return None;
        };
        let body = ["this.", "this/", "./"]
            .iter()
            .find_map(|p| raw.strip_prefix(p))
            .unwrap_or(raw);
        let rooted = body.starts_with("@root.") || body.starts_with("@root/");
        let mut named = Vec::with_capacity(segs.len());
        let mut ruled = 0;
        for seg in segs {
            match seg {
                PathSeg::Named(n) => named.push(n.as_str()),
                // `@root`, `../`, or a kind this code does not know: not a plain key.
                _ => ruled += 1,
            }
        }
        // The only ruled segments left in a relative path are `@root` and `../`; a `../`
        // climbs to a scope this walk does not track.
        let climbs = ruled > usize::from(rooted);
        if climbs || named.is_empty() || (scope == Scope::Unknown && !rooted) {
            return None;
        }
        Some(named)
    }
}

/// Follows `segs` through objects (by key) and arrays (by index), as handlebars does.
fn resolve<'v>(mut v: &'v Value, segs: &[&str]) -> Option<&'v Value> {
    for seg in segs {
        v = match v {
            Value::Object(m) => m.get(*seg)?,
            Value::Array(a) => a.get(seg.parse::<usize>().ok()?)?,
            _ => return None,
        };
    }
    Some(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::template::helpers::tests::ctx;
    fn missing(src: &str) -> Vec<String> {
        missing_fields(&Template::compile(src).unwrap(), &ctx())
    }

    #[test]
    fn missing_fields_reports_unresolved_top_level_paths() {
        assert_eq!(
            missing(
                "{{payload.pusher.name}} {{payload.pusher.email}} {{headers.x-github-event}} {{headers.x-hub-signature}}"
            ),
            ["payload.pusher.email", "headers.x-hub-signature"]
        );
    }

    #[test]
    fn missing_fields_cases() {
        let cases: &[(&str, &[&str])] = &[
            // helpers: arguments and subexpressions are checked, the helper name is not
            (
                "{{upper payload.nope}} {{json (truncate payload.nope2 3)}}",
                &["payload.nope", "payload.nope2"],
            ),
            ("{{now}} {{json now}}", &["now"]),
            ("{{lookup payload.obj \"zz\"}}", &[]),
            // present but null is not missing; array indices resolve
            (
                "{{payload.nothing}} {{payload.commits.0.id}} {{payload.commits.5.id}}",
                &["payload.commits.5.id"],
            ),
            // repeated reports are merged
            (
                "{{payload.a}}{{payload.a}}{{payload.b}}",
                &["payload.a", "payload.b"],
            ),
            // this./@root. prefixes at the top level
            (
                "{{this.payload.a}} {{@root.payload.b}} {{this}}",
                &["payload.a", "payload.b"],
            ),
            // inside each/with: relative paths skipped, @root still checked, else keeps outer scope
            (
                "{{#each payload.commits}}{{id}}{{nope}}{{../x}}{{@index}}{{/each}}",
                &[],
            ),
            (
                "{{#each payload.nolist}}{{id}}{{else}}{{payload.c}}{{/each}}",
                &["payload.nolist", "payload.c"],
            ),
            (
                "{{#with payload.pusher}}{{name}}{{email}}{{@root.payload.d}}{{/with}}",
                &["payload.d"],
            ),
            (
                "{{#each payload.commits as |c|}}{{c.id}}{{c.nope}}{{/each}}",
                &[],
            ),
            // if/unless: the condition is a test; only the branch ctx would take is checked
            (
                "{{#if payload.nope}}{{payload.a}}{{else}}{{payload.b}}{{/if}}",
                &["payload.b"],
            ),
            (
                "{{#if payload.flag}}{{payload.a}}{{else}}{{payload.b}}{{/if}}",
                &["payload.a"],
            ),
            (
                "{{#unless payload.flag}}{{payload.a}}{{else}}{{payload.b}}{{/unless}}",
                &["payload.b"],
            ),
            (
                "{{#if (eq payload.e 1)}}{{payload.a}}{{else}}{{payload.b}}{{/if}}",
                &["payload.e", "payload.a", "payload.b"],
            ),
            (
                "{{#if payload.nope}}x{{else if payload.flag}}{{payload.a}}{{else}}{{payload.b}}{{/if}}",
                &["payload.a"],
            ),
            // default: its VALUE has a fallback
            (
                "{{default payload.nope \"x\"}} {{default payload.nope payload.fb}}",
                &["payload.fb"],
            ),
            // jsonpath literal is not a field
            ("{{jsonpath \"$.nope\"}}", &[]),
        ];
        for (src, want) in cases {
            assert_eq!(missing(src), *want, "{src}");
        }
    }

    #[test]
    fn step_refs_are_found_in_every_branch() {
        let refs = |src: &str| step_refs(&Template::compile(src).unwrap());
        assert_eq!(
            refs(
                "{{steps.crm.json.id}} {{#if steps.deploy.json.url}}{{upper steps.deploy.stdout}}{{else}}{{default steps.other.json \"x\"}}{{/if}} {{#each payload.a}}{{steps.nope}}{{@root.steps.rooted.status}}{{/each}} {{steps}} {{payload.steps.x}}"
            ),
            ["crm", "deploy", "other", "rooted"]
        );
        assert!(refs("{{payload.a}}").is_empty());
    }

    #[test]
    fn jsonpath_literals_are_found_everywhere() {
        let tpl = Template::compile(
            "{{jsonpath \"$.a\"}}{{#if x}}{{json (jsonpath \"$.b\")}}{{else}}{{#each y}}{{jsonpath '$[?'}}{{/each}}{{/if}}{{jsonpath payload.dyn}}{{default (jsonpath \"$.c\") x=(jsonpath \"$.d\")}}",
        )
        .unwrap();
        assert_eq!(
            literal_jsonpath_args(&tpl),
            ["$.a", "$.b", "$[?", "$.c", "$.d"]
        );
        assert!(literal_jsonpath_args(&Template::compile("{{payload.a}}").unwrap()).is_empty());
    }
}
