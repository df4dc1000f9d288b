//! Raw rule-file structs → compiled sources, rules and actions.
//!
//! [`Builder`] takes files one by one, keeps going after every problem, and
//! checks what spans files (duplicate names and paths, rules naming missing
//! sources) at the end.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::IpNet;

use super::{Diagnostic, LoadOptions, RuleSet, env};
use crate::matching::{self, Condition};
use crate::syntax::de::{Spanned, from_node};
use crate::syntax::node::{Format, Kind, Node, Pos};
use crate::syntax::{node, raw};
use crate::template::{JsonTemplate, Template};
use crate::verify::{SignScheme, Signer, Verifier};

/// A webhook endpoint, compiled.
#[derive(Debug)]
pub struct Source {
    pub name: String,
    pub path: String,
    /// Uppercase method names.
    pub methods: Vec<String>,
    pub verifier: Option<Verifier>,
    pub allow_ips: Vec<IpNet>,
    pub max_body: Option<u64>,
    pub rate_limit: Option<RateLimit>,
    pub dedup: Option<Template>,
    pub json_fields: Vec<String>,
    pub file: String,
    pub pos: Pos,
}

/// `count` requests per `per`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RateLimit {
    pub count: u32,
    pub per: Duration,
}

#[derive(Debug)]
pub struct Rule {
    pub name: String,
    pub sources: Vec<String>,
    pub enabled: bool,
    pub when: Option<Condition>,
    pub actions: Vec<Action>,
    /// Indexes of `actions` with every action after the ones it needs
    /// (computed at load; file order when the rule has no steps).
    pub order: Vec<usize>,
    pub respond: Option<Respond>,
    pub file: String,
    pub pos: Pos,
}

#[derive(Debug)]
pub struct Respond {
    pub status: u16,
    pub headers: Vec<(String, Template)>,
    pub body: Option<HttpBody>,
}

#[derive(Debug)]
pub struct Action {
    pub name: String,
    pub when: Option<Condition>,
    pub retry: RetryPolicy,
    pub serialize_by: Option<Template>,
    /// At most this many attempts of this action at once; `None`: the
    /// target's default share of the workers.
    pub concurrency: Option<usize>,
    /// The actions of the same rule this one runs after (SPEC §4.7); empty
    /// for an action that runs when the event arrives.
    pub needs: Vec<String>,
    /// Some step of the same rule needs this action: its successful
    /// attempt keeps its output (computed at load).
    pub needed: bool,
    /// The first attempt is due this long after the event, or after the
    /// last need succeeded for a step.
    pub delay: Option<Duration>,
    pub kind: ActionKind,
    pub pos: Pos,
}

impl Action {
    pub fn type_name(&self) -> &'static str {
        match self.kind {
            ActionKind::Http(_) => "http",
            ActionKind::Email(_) => "email",
            ActionKind::Command(_) => "command",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    pub attempts: u32,
    pub initial: Duration,
    pub max: Duration,
}

impl Default for RetryPolicy {
    /// 15 attempts from 5 s doubling to 4 h: about 14 hours, which outlives most outages.
    fn default() -> Self {
        Self {
            attempts: 15,
            initial: Duration::from_secs(5),
            max: Duration::from_secs(4 * 3600),
        }
    }
}

#[derive(Debug)]
pub enum ActionKind {
    Http(HttpAction),
    Email(EmailAction),
    Command(CommandAction),
}

#[derive(Debug)]
pub struct HttpAction {
    pub method: String,
    pub url: Template,
    pub headers: Vec<(String, Template)>,
    pub body: Option<HttpBody>,
    pub forward: bool,
    pub timeout: Duration,
    pub allow_payload_host: bool,
    /// Signs outgoing requests the Standard Webhooks way (`sign: { standard: … }`).
    pub sign_standard: Option<Signer>,
}

#[derive(Debug)]
pub enum HttpBody {
    Json(JsonTemplate),
    Text(Template),
    Form(Vec<(String, Template)>),
}

#[derive(Debug)]
pub struct EmailAction {
    pub to: Vec<Template>,
    pub cc: Vec<Template>,
    pub bcc: Vec<Template>,
    pub from: Option<Template>,
    pub subject: Template,
    pub text: Option<Template>,
    pub html: Option<Template>,
}

#[derive(Debug)]
pub struct CommandAction {
    pub argv: Vec<Template>,
    pub env: Vec<(String, Template)>,
    pub stdin: Stdin,
    pub cwd: Option<PathBuf>,
    pub timeout: Duration,
}

#[derive(Debug)]
pub enum Stdin {
    None,
    Payload,
    Raw,
    Template(Template),
}

/// A rule test, kept for `hookwire check`.
#[derive(Debug)]
pub struct RuleTest {
    pub name: String,
    pub source: String,
    pub file: String,
    pub pos: Pos,
    /// The payload file, resolved against the rule file's directory.
    pub payload_file: Option<PathBuf>,
    pub body: Option<String>,
    pub content_type: Option<String>,
    pub method: Option<String>,
    pub headers: Vec<(String, String)>,
    pub query: Vec<(String, String)>,
    pub expect_matched: Option<Vec<String>>,
    pub expect_actions: Vec<(String, Node)>,
    pub expect_status: Option<u16>,
    /// Outputs given to steps (`steps: { crm: { status: 201, json: {…} } }`),
    /// so a test checks a step's `when` and rendering without any network.
    pub steps: Vec<(String, Node)>,
    /// Steps expected to be skipped by their `when` (`rule/action`).
    pub expect_skipped: Vec<String>,
}

const DEFAULT_HTTP_TIMEOUT: Duration = Duration::from_secs(30);
const DEFAULT_COMMAND_TIMEOUT: Duration = Duration::from_secs(60);
const SHELLS: [&str; 6] = ["sh", "bash", "zsh", "dash", "ksh", "fish"];

pub struct Builder<'a> {
    env: &'a HashMap<String, String>,
    opts: &'a LoadOptions,
    errors: Vec<Diagnostic>,
    warnings: Vec<Diagnostic>,
    secrets: Vec<String>,
    /// Names of the variables resolved from the environment.
    variables: Vec<String>,
    sources: Vec<Source>,
    rules: Vec<Rule>,
    /// Where each rule's `source` names were written, checked in `finish`.
    rule_source_pos: Vec<Vec<(String, Pos)>>,
    tests: Vec<RuleTest>,
    /// Sources written but not compiled (their errors are reported): rules
    /// and tests naming them are not also told the source is undefined.
    broken_sources: std::collections::HashSet<String>,
    /// Each variable that is not set, reported once at its first use: its
    /// name, the index of that error, and how many strings use it.
    missing_vars: Vec<(String, usize, usize)>,
}

/// Collects `(pos, message)` problems of one file and turns them into diagnostics.
struct FileErrors<'f> {
    file: &'f str,
    list: Vec<(Pos, String)>,
}

impl FileErrors<'_> {
    fn push(&mut self, pos: Pos, message: impl Into<String>) {
        self.list.push((pos, message.into()));
    }

    fn template(&mut self, s: &Spanned<String>) -> Option<Template> {
        match Template::compile(s) {
            Ok(t) => Some(t),
            Err(e) => {
                self.push(s.pos, e);
                None
            }
        }
    }

    fn read<'n, T: serde::Deserialize<'n>>(&mut self, node: &'n Node) -> Option<T> {
        match from_node(node) {
            Ok(t) => Some(t),
            Err(e) => {
                self.push(e.pos.unwrap_or(node.pos), e.message);
                None
            }
        }
    }
}

impl<'a> Builder<'a> {
    pub fn new(env: &'a HashMap<String, String>, opts: &'a LoadOptions) -> Self {
        Self {
            env,
            opts,
            errors: Vec::new(),
            warnings: Vec::new(),
            secrets: Vec::new(),
            variables: Vec::new(),
            sources: Vec::new(),
            rules: Vec::new(),
            rule_source_pos: Vec::new(),
            tests: Vec::new(),
            broken_sources: Default::default(),
            missing_vars: Vec::new(),
        }
    }

    pub fn add_file(&mut self, shown: &str, path: &Path, format: Format, text: &str) {
        let mut root = match node::parse(format, text) {
            Ok(n) => n,
            Err(e) => {
                self.errors.push(Diagnostic::new(shown, e.pos, e.message));
                return;
            }
        };
        let mut resolved = env::Resolved::default();
        env::resolve(&mut root, self.env, &mut resolved);
        self.secrets.append(&mut resolved.secrets);
        for name in resolved.variables {
            if !self.variables.contains(&name) {
                self.variables.push(name);
            }
        }
        for (name, pos) in resolved.missing {
            match self.missing_vars.iter_mut().find(|(n, _, _)| *n == name) {
                Some((_, _, uses)) => *uses += 1,
                None => {
                    self.errors
                        .push(Diagnostic::new(shown, pos, env::missing_message(&name, 1)));
                    self.missing_vars.push((name, self.errors.len() - 1, 1));
                }
            }
        }
        let mut errs = FileErrors {
            file: shown,
            list: Vec::new(),
        };

        match &root.kind {
            // An editor that saves in place empties the file first: loading
            // that moment would drop every source and rule of the file.
            Kind::Map(entries) if entries.is_empty() => errs.push(
                root.pos,
                "the file is empty: a rule file needs `sources`, `rules` or `tests` (delete the file to remove its rules)",
            ),
            Kind::Map(entries)
                if !entries.is_empty()
                    && !entries
                        .iter()
                        .any(|(k, _)| raw::TOP_LEVEL.contains(&k.name.as_str())) =>
            {
                errs.push(
                    root.pos,
                    "not a rule file: it has none of the top-level keys `sources`, `rules` or `tests` (keep payloads and other JSON/YAML outside the rules directory)",
                );
            }
            Kind::Map(entries) => {
                for (key, value) in entries {
                    match key.name.as_str() {
                        "sources" => self.add_sources(value, &mut errs),
                        "rules" => self.add_rules(value, &mut errs),
                        "tests" => self.add_tests(value, path, &mut errs),
                        other => errs.push(
                            key.pos,
                            format!("unknown top-level key `{other}`, expected `sources`, `rules` or `tests`"),
                        ),
                    }
                }
            }
            Kind::Null => errs.push(
                root.pos,
                "the file is empty: a rule file needs `sources`, `rules` or `tests` (delete the file to remove its rules)",
            ),
            _ => errs.push(
                root.pos,
                format!(
                    "a rule file must be a map with `sources`, `rules` or `tests`, found {}",
                    root.describe()
                ),
            ),
        }
        let file = errs.file;
        // What follows only from an unresolved variable is not reported: the
        // variable's own error says what to fix.
        let poisoned = &resolved.poisoned;
        errs.list
            .retain(|(pos, _)| !env::follows_from_unresolved(&root, *pos, poisoned));
        self.errors.extend(
            resolved
                .errors
                .into_iter()
                .chain(errs.list)
                .map(|(pos, m)| Diagnostic::new(file, pos, m)),
        );
    }

    fn add_sources(&mut self, node: &Node, errs: &mut FileErrors<'_>) {
        let Kind::Map(entries) = &node.kind else {
            errs.push(
                node.pos,
                format!(
                    "`sources` must be a map of name → source, found {}",
                    node.describe()
                ),
            );
            return;
        };
        for (key, value) in entries {
            if !valid_name(&key.name) {
                errs.push(
                    key.pos,
                    format!(
                        "invalid source name `{}`: use lowercase letters, digits, `-` and `_`",
                        key.name
                    ),
                );
                continue;
            }
            // `github:` with nothing under it is a source with all defaults.
            let empty = Node::new(value.pos, Kind::Map(Vec::new()));
            let value = if matches!(value.kind, Kind::Null) {
                &empty
            } else {
                value
            };
            let Some(raw) = errs.read::<raw::Source>(value) else {
                self.broken_sources.insert(key.name.clone());
                continue;
            };
            let compiled = compile_source(&key.name, key.pos, raw, errs);
            if compiled.is_none() {
                self.broken_sources.insert(key.name.clone());
            }
            if let Some(s) = compiled {
                if s.verifier.is_none() {
                    self.warnings.push(Diagnostic::new(
                        errs.file,
                        key.pos,
                        format!("source `{}` has no `verify`: it accepts unsigned requests from anyone who knows its URL", key.name),
                    ));
                }
                self.sources.push(s);
            }
        }
    }

    fn add_rules(&mut self, node: &Node, errs: &mut FileErrors<'_>) {
        let Kind::Seq(items) = &node.kind else {
            errs.push(
                node.pos,
                format!("`rules` must be a list, found {}", node.describe()),
            );
            return;
        };
        for item in items {
            let Some(raw) = errs.read::<raw::Rule>(item) else {
                continue;
            };
            let before = errs.list.len();
            let rule = self.compile_rule(raw, item.pos, errs);
            if let (Some((rule, names)), true) = (rule, errs.list.len() == before) {
                self.rules.push(rule);
                self.rule_source_pos.push(names);
            }
        }
    }

    fn compile_rule(
        &mut self,
        raw: raw::Rule,
        pos: Pos,
        errs: &mut FileErrors<'_>,
    ) -> Option<(Rule, Vec<(String, Pos)>)> {
        if !valid_name(&raw.name) {
            errs.push(
                raw.name.pos,
                format!(
                    "invalid rule name `{}`: use lowercase letters, digits, `-` and `_`",
                    *raw.name
                ),
            );
        }
        let names: Vec<(String, Pos)> = raw
            .source
            .value
            .0
            .iter()
            .map(|s| (s.clone(), raw.source.pos))
            .collect();
        let when = raw.when.as_ref().and_then(|w| compile_condition(w, errs));
        let mut actions = Vec::new();
        let mut needs = Vec::new();
        let mut nodes = Vec::new();
        for (i, node) in raw.actions.iter().flatten().enumerate() {
            let Some(a) = errs.read::<raw::Action>(node) else {
                continue;
            };
            let written = a
                .needs
                .as_ref()
                .map(|n| super::steps::parse_needs(n, &mut errs.list))
                .unwrap_or_default();
            if let Some(mut a) = self.compile_action(a, i, node.pos, errs) {
                if let Some(dup) = actions.iter().find(|x: &&Action| x.name == a.name) {
                    errs.push(
                        node.pos,
                        format!(
                            "duplicate action name `{}` in rule `{}` (first at line {})",
                            a.name, *raw.name, dup.pos.line
                        ),
                    );
                    continue;
                }
                a.needs = written.iter().map(|n| n.value.clone()).collect();
                actions.push(a);
                needs.push(written);
                nodes.push(node);
            }
        }
        // An action that failed to compile was reported; its steps are not
        // also told it does not exist.
        if actions.len() == raw.actions.iter().flatten().count() {
            super::steps::check(&raw.name, &actions, &needs, &nodes, &mut errs.list);
        }
        let order = super::steps::order(&mut actions);
        let respond = raw.respond.and_then(|r| compile_respond(r, errs));
        Some((
            Rule {
                name: raw.name.value,
                sources: names.iter().map(|(n, _)| n.clone()).collect(),
                enabled: raw.enabled.unwrap_or(true),
                when,
                actions,
                order,
                respond,
                file: errs.file.to_owned(),
                pos,
            },
            names,
        ))
    }

    fn compile_action(
        &mut self,
        raw: raw::Action,
        index: usize,
        pos: Pos,
        errs: &mut FileErrors<'_>,
    ) -> Option<Action> {
        let kinds = [
            raw.http.is_some(),
            raw.email.is_some(),
            raw.command.is_some(),
        ];
        if kinds.iter().filter(|k| **k).count() != 1 {
            errs.push(
                pos,
                "an action takes exactly one of `http`, `email` or `command`",
            );
            return None;
        }
        let (kind, type_name) = if let Some(h) = raw.http {
            (compile_http(h, errs).map(ActionKind::Http), "http")
        } else if let Some(e) = raw.email {
            if !self.opts.smtp_configured {
                self.warnings.push(Diagnostic::new(
                    errs.file,
                    pos,
                    "email action, but no SMTP server is configured (--smtp-url): its deliveries will fail until one is",
                ));
            }
            (compile_email(e, errs).map(ActionKind::Email), "email")
        } else if let Some(c) = raw.command {
            self.warn_shell(&c, errs.file);
            (compile_command(c, errs).map(ActionKind::Command), "command")
        } else {
            return None;
        };
        let name = match raw.name {
            Some(n) => {
                if !valid_name(&n) {
                    errs.push(
                        n.pos,
                        format!(
                            "invalid action name `{}`: use lowercase letters, digits, `-` and `_`",
                            *n
                        ),
                    );
                }
                n.value
            }
            None => format!("{type_name}-{index}"),
        };
        let when = raw.when.as_ref().and_then(|w| compile_condition(w, errs));
        let retry = raw.retry.map(|r| {
            let d = RetryPolicy::default();
            let attempts = r.attempts.map_or(d.attempts, |a| {
                if a.value == 0 {
                    errs.push(a.pos, "`attempts` must be at least 1");
                }
                a.value
            });
            RetryPolicy {
                attempts,
                initial: r.initial.map_or(d.initial, |x| x.get()),
                max: r.max.map_or(d.max, |x| x.get()),
            }
        });
        let serialize_by = raw.serialize_by.as_ref().and_then(|s| errs.template(s));
        let concurrency = raw.concurrency.map(|c| {
            if c.value == 0 {
                errs.push(c.pos, "`concurrency` must be at least 1");
            }
            c.value.max(1) as usize
        });
        Some(Action {
            name,
            when,
            retry: retry.unwrap_or_default(),
            serialize_by,
            concurrency,
            needs: Vec::new(),
            needed: false,
            delay: raw.delay.map(|d| d.get()),
            kind: kind?,
            pos,
        })
    }

    fn warn_shell(&mut self, c: &raw::Command, file: &str) {
        let argv = &c.argv.value;
        let Some(first) = argv.first() else { return };
        let program = Path::new(first.as_str())
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("");
        if !SHELLS.contains(&program) {
            return;
        }
        if let Some(i) = argv.iter().position(|a| a.as_str() == "-c")
            && let Some(script) = argv.get(i + 1)
            && script.contains("{{")
        {
            self.warnings.push(Diagnostic::new(
                file,
                script.pos,
                format!(
                    "`{program} -c` with a templated script: a payload value becomes shell code; pass values as separate arguments (\"$1\") or in `env` instead"
                ),
            ));
        }
    }

    fn add_tests(&mut self, node: &Node, path: &Path, errs: &mut FileErrors<'_>) {
        let Kind::Seq(items) = &node.kind else {
            errs.push(
                node.pos,
                format!("`tests` must be a list, found {}", node.describe()),
            );
            return;
        };
        let dir = path.parent().unwrap_or(Path::new("."));
        for item in items {
            let Some(t) = errs.read::<raw::Test>(item) else {
                continue;
            };
            if t.payload.is_some() == t.body.is_some() {
                errs.push(
                    item.pos,
                    "a test takes exactly one of `payload` (a file) or `body` (text)",
                );
                continue;
            }
            self.tests.push(RuleTest {
                name: t.name.value,
                source: t.source.value,
                file: errs.file.to_owned(),
                pos: item.pos,
                payload_file: t.payload.map(|p| dir.join(p.value)),
                body: t.body,
                content_type: t.content_type,
                method: t.method,
                headers: t.headers.unwrap_or_default().into_iter().collect(),
                query: t.query.unwrap_or_default().into_iter().collect(),
                expect_matched: t.expect.matched,
                expect_actions: t.expect.actions.unwrap_or_default().into_iter().collect(),
                expect_status: t.expect.status,
                steps: t.steps.unwrap_or_default().into_iter().collect(),
                expect_skipped: t.expect.skipped.unwrap_or_default(),
            });
        }
    }

    /// Checks what spans files and builds the set.
    pub fn finish(mut self, files: Vec<String>) -> (RuleSet, Vec<Diagnostic>, Vec<Diagnostic>) {
        for (name, at, uses) in &self.missing_vars {
            self.errors[*at].message = env::missing_message(name, *uses);
        }
        let mut seen: HashMap<&str, &Source> = HashMap::new();
        let mut paths: HashMap<&str, &Source> = HashMap::new();
        for s in &self.sources {
            if let Some(first) = seen.get(s.name.as_str()) {
                self.errors.push(Diagnostic::new(
                    &s.file,
                    s.pos,
                    format!(
                        "duplicate source name `{}`: also defined at {}:{}",
                        s.name, first.file, first.pos
                    ),
                ));
                continue;
            }
            seen.insert(&s.name, s);
            if let Some(first) = paths.get(s.path.as_str()) {
                self.errors.push(Diagnostic::new(
                    &s.file,
                    s.pos,
                    format!(
                        "source `{}` has the path `{}` of source `{}` ({}:{})",
                        s.name, s.path, first.name, first.file, first.pos
                    ),
                ));
            } else {
                paths.insert(&s.path, s);
            }
        }
        let mut rule_names: HashMap<&str, &Rule> = HashMap::new();
        for (r, names) in self.rules.iter().zip(&self.rule_source_pos) {
            if let Some(first) = rule_names.get(r.name.as_str()) {
                self.errors.push(Diagnostic::new(
                    &r.file,
                    r.pos,
                    format!(
                        "duplicate rule name `{}`: also defined at {}:{}",
                        r.name, first.file, first.pos
                    ),
                ));
            } else {
                rule_names.insert(&r.name, r);
            }
            for (name, pos) in names {
                if !seen.contains_key(name.as_str()) && !self.broken_sources.contains(name) {
                    self.errors.push(Diagnostic::new(
                        &r.file,
                        *pos,
                        format!(
                            "rule `{}` names source `{name}`, which is not defined",
                            r.name
                        ),
                    ));
                }
            }
        }
        for t in &self.tests {
            if !seen.contains_key(t.source.as_str()) && !self.broken_sources.contains(&t.source) {
                self.errors.push(Diagnostic::new(
                    &t.file,
                    t.pos,
                    format!(
                        "test \"{}\" names source `{}`, which is not defined",
                        t.name, t.source
                    ),
                ));
            }
        }
        let set = RuleSet::assemble(
            files,
            self.sources,
            self.rules,
            self.tests,
            self.secrets,
            self.variables,
            self.warnings.clone(),
        );
        (set, self.errors, self.warnings)
    }
}

fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

fn compile_condition(node: &Node, errs: &mut FileErrors<'_>) -> Option<Condition> {
    matching::compile(node, &mut errs.list)
}

fn compile_source(
    name: &str,
    pos: Pos,
    raw: raw::Source,
    errs: &mut FileErrors<'_>,
) -> Option<Source> {
    let before = errs.list.len();
    let path = match raw.path {
        Some(p) if !p.starts_with('/') => {
            errs.push(p.pos, format!("`path` must start with `/`, found `{}`", *p));
            String::new()
        }
        Some(p) if is_reserved(&p) => {
            errs.push(p.pos, format!("`path` {} is reserved for hookwire itself (/healthz, /readyz, /metrics, /, /api/…)", *p));
            String::new()
        }
        Some(p) => p.value,
        None => format!("/hooks/{name}"),
    };
    let methods = match raw.methods {
        None => vec!["POST".to_owned()],
        Some(ms) => ms
            .into_iter()
            .filter_map(|m| {
                let up = m.to_ascii_uppercase();
                if axum::http::Method::from_bytes(up.as_bytes()).is_ok() && !up.is_empty() {
                    Some(up)
                } else {
                    errs.push(m.pos, format!("invalid HTTP method `{}`", *m));
                    None
                }
            })
            .collect(),
    };
    let verifier = raw.verify.and_then(|v| match Verifier::compile(&v) {
        Ok(v) => Some(v),
        Err(e) => {
            errs.push(v.pos, e.to_string());
            None
        }
    });
    let allow_ips = raw
        .allow_ips
        .unwrap_or_default()
        .into_iter()
        .filter_map(|ip| {
            ip.parse::<IpNet>()
                .or_else(|_| ip.parse::<std::net::IpAddr>().map(IpNet::from))
                .map_err(|_| errs.push(ip.pos, format!("invalid address or CIDR `{}`", *ip)))
                .ok()
        })
        .collect();
    let rate_limit = raw.rate_limit.and_then(|r| match parse_rate(&r) {
        Ok(rl) => Some(rl),
        Err(e) => {
            errs.push(r.pos, e);
            None
        }
    });
    let dedup = raw.dedup.as_ref().and_then(|d| errs.template(d));
    if errs.list.len() > before {
        return None;
    }
    Some(Source {
        name: name.to_owned(),
        path,
        methods,
        verifier,
        allow_ips,
        max_body: raw.max_body.map(|b| b.get()),
        rate_limit,
        dedup,
        json_fields: raw.json_fields.unwrap_or_default(),
        file: errs.file.to_owned(),
        pos,
    })
}

fn is_reserved(path: &str) -> bool {
    matches!(path, "/" | "/healthz" | "/readyz" | "/metrics" | "/api") || path.starts_with("/api/")
}

fn parse_rate(s: &str) -> Result<RateLimit, String> {
    let err = || format!("invalid rate limit `{s}`: write e.g. `50/s`, `600/m` or `1000/h`");
    let (n, unit) = s.split_once('/').ok_or_else(err)?;
    let count: u32 = n.trim().parse().map_err(|_| err())?;
    let per = match unit.trim() {
        "s" => Duration::from_secs(1),
        "m" => Duration::from_secs(60),
        "h" => Duration::from_secs(3600),
        _ => return Err(err()),
    };
    if count == 0 {
        return Err(format!(
            "invalid rate limit `{s}`: the count must be at least 1"
        ));
    }
    Ok(RateLimit { count, per })
}

fn template_map(
    map: Option<std::collections::BTreeMap<String, Spanned<String>>>,
    errs: &mut FileErrors<'_>,
) -> Vec<(String, Template)> {
    map.unwrap_or_default()
        .into_iter()
        .filter_map(|(k, v)| errs.template(&v).map(|t| (k, t)))
        .collect()
}

fn compile_body(node: &Node, errs: &mut FileErrors<'_>) -> Option<HttpBody> {
    match &node.kind {
        Kind::Str(s) => errs
            .template(&Spanned {
                pos: node.pos,
                value: s.clone(),
            })
            .map(HttpBody::Text),
        _ => JsonTemplate::compile(node, &mut errs.list).map(HttpBody::Json),
    }
}

fn compile_respond(raw: raw::Respond, errs: &mut FileErrors<'_>) -> Option<Respond> {
    let status = match raw.status {
        Some(s) if !(100..=599).contains(&s.value) => {
            errs.push(
                s.pos,
                format!(
                    "`status` must be an HTTP status (100-599), found {}",
                    s.value
                ),
            );
            return None;
        }
        Some(s) => s.value,
        None => 200,
    };
    let headers = template_map(raw.headers, errs);
    let body = match raw.body.as_ref() {
        Some(b) => Some(compile_body(b, errs)?),
        None => None,
    };
    Some(Respond {
        status,
        headers,
        body,
    })
}

fn compile_http(h: raw::Http, errs: &mut FileErrors<'_>) -> Option<HttpAction> {
    let before = errs.list.len();
    let method = h
        .method
        .as_ref()
        .map_or("POST".to_owned(), |m| m.to_ascii_uppercase());
    if axum::http::Method::from_bytes(method.as_bytes()).is_err() {
        errs.push(
            h.method.as_ref().map_or(h.url.pos, |m| m.pos),
            format!("invalid HTTP method `{method}`"),
        );
    }
    let allow_payload_host = h.allow_payload_host.unwrap_or(false);
    check_url(&h.url, allow_payload_host, errs);
    // Payload values in the path and query are percent-encoded, unless the
    // operator let the payload choose the host (then the whole URL is theirs to
    // shape, and the address checks at connect time apply instead).
    let url = if allow_payload_host {
        errs.template(&h.url)
    } else {
        Template::compile_url(&h.url)
            .map_err(|e| errs.push(h.url.pos, e))
            .ok()
    };
    let headers = template_map(h.headers, errs);
    let forward = h.forward.unwrap_or(false);
    let mut bodies = 0;
    let body = if let Some(b) = h.body.as_ref() {
        bodies += 1;
        compile_body(b, errs)
    } else {
        None
    };
    let body = if let Some(form) = h.form {
        bodies += 1;
        Some(HttpBody::Form(template_map(Some(form), errs)))
    } else {
        body
    };
    if bodies + usize::from(forward) > 1 {
        errs.push(
            h.url.pos,
            "an http action takes at most one of `body`, `form` or `forward: true`",
        );
    }
    let sign_standard = h.sign.and_then(|s| {
        let secret = s.standard.secret;
        Signer::new(SignScheme::Standard, secret.as_str())
            .map_err(|e| errs.push(secret.pos, e.to_string()))
            .ok()
    });
    if errs.list.len() > before {
        return None;
    }
    Some(HttpAction {
        method,
        url: url?,
        headers,
        body,
        forward,
        timeout: h.timeout.map_or(DEFAULT_HTTP_TIMEOUT, |t| t.get()),
        allow_payload_host,
        sign_standard,
    })
}

/// The scheme and host of an action URL are what the operator wrote (SPEC §8).
fn check_url(url: &Spanned<String>, allow_payload_host: bool, errs: &mut FileErrors<'_>) {
    let s = url.as_str();
    let Some((scheme, rest)) = s.split_once("://") else {
        errs.push(
            url.pos,
            format!("`url` must start with http:// or https://, found `{s}`"),
        );
        return;
    };
    if !matches!(scheme, "http" | "https") {
        errs.push(
            url.pos,
            format!("`url` must use http or https, found `{scheme}`"),
        );
        return;
    }
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    if authority.contains("{{") && !allow_payload_host {
        errs.push(
            url.pos,
            "the host of an http action comes from a template; set `allow_payload_host: true` to allow it (private and loopback addresses stay refused)",
        );
    }
    if authority.is_empty() {
        errs.push(url.pos, format!("`url` has no host: `{s}`"));
    }
}

fn compile_email(e: raw::Email, errs: &mut FileErrors<'_>) -> Option<EmailAction> {
    let before = errs.list.len();
    let list = |v: Vec<Spanned<String>>, errs: &mut FileErrors<'_>| -> Vec<Template> {
        v.iter().filter_map(|s| errs.template(s)).collect()
    };
    let to = list(
        e.to.value
            .0
            .iter()
            .map(|t| Spanned {
                pos: e.to.pos,
                value: t.clone(),
            })
            .collect(),
        errs,
    );
    let cc = list(e.cc.unwrap_or_default(), errs);
    let bcc = list(e.bcc.unwrap_or_default(), errs);
    let from = e.from.as_ref().and_then(|f| errs.template(f));
    let subject = errs.template(&e.subject);
    let text = e.text.as_ref().and_then(|t| errs.template(t));
    let html = e.html.as_ref().and_then(|t| errs.template(t));
    if e.text.is_none() && e.html.is_none() {
        errs.push(
            e.subject.pos,
            "an email action needs `text`, `html` or both",
        );
    }
    if errs.list.len() > before {
        return None;
    }
    Some(EmailAction {
        to,
        cc,
        bcc,
        from,
        subject: subject?,
        text,
        html,
    })
}

fn compile_command(c: raw::Command, errs: &mut FileErrors<'_>) -> Option<CommandAction> {
    let before = errs.list.len();
    if c.argv.is_empty() {
        errs.push(c.argv.pos, "`argv` needs at least the program to run");
    }
    let argv = c
        .argv
        .value
        .iter()
        .filter_map(|a| errs.template(a))
        .collect();
    let env = template_map(c.env, errs);
    let stdin = match c.stdin.as_ref().map(|s| (s.pos, s.as_str())) {
        None | Some((_, "none")) => Stdin::None,
        Some((_, "payload")) => Stdin::Payload,
        Some((_, "raw")) => Stdin::Raw,
        Some((pos, other)) => match Template::compile(other) {
            Ok(t) => Stdin::Template(t),
            Err(e) => {
                errs.push(pos, e);
                Stdin::None
            }
        },
    };
    if errs.list.len() > before {
        return None;
    }
    Some(CommandAction {
        argv,
        env,
        stdin,
        cwd: c.cwd.map(PathBuf::from),
        timeout: c.timeout.map_or(DEFAULT_COMMAND_TIMEOUT, |t| t.get()),
    })
}
