//! `hookwire test`: evaluate the rules of one source against a payload and
//! print, per rule, whether it matched and why (the same trace the daemon
//! stores), plus the rendered actions of matched rules. Runs nothing.
//! Exit 0 when evaluation ran, 2 on bad input.

use std::path::PathBuf;
use std::process::ExitCode;

use serde::Serialize;
use serde_json::Value;

use crate::actions::{self, AttemptResult, Rendered, Runner};
use crate::evaluate;
use crate::matching::RuleTrace;
use crate::matching::Step;
use crate::rules::{self, LoadOptions, RuleSet};

pub struct TestOptions {
    pub source: String,
    pub payload: Option<PathBuf>,
    /// A stored event of a running daemon, fetched through its admin API.
    pub event: Option<String>,
    pub api: super::ops::Api,
    pub headers: Vec<String>,
    pub query: Vec<String>,
    pub rules: PathBuf,
    pub json: bool,
    /// Run each rendered action once, for real.
    pub execute: bool,
    pub smtp_url: Option<String>,
    pub smtp_from: String,
}

#[derive(Serialize)]
struct Report {
    source: String,
    content_type: Option<String>,
    facts: Vec<String>,
    rules: Vec<RuleReport>,
    warnings: Vec<String>,
}

#[derive(Serialize)]
struct RuleReport {
    #[serde(flatten)]
    trace: RuleTrace,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    rendered: Vec<RenderedAction>,
}

#[derive(Serialize)]
struct RenderedAction {
    action: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    rendered: Option<Rendered>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
    /// With `--execute`: what running it once came to.
    #[serde(skip_serializing_if = "Option::is_none")]
    executed: Option<Executed>,
    #[serde(skip_serializing_if = "Option::is_none")]
    note: Option<String>,
}

#[derive(Serialize)]
struct Executed {
    outcome: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    status: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    exit_code: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
    response: String,
}

/// What running an action once with `--execute` came to.
fn executed(result: AttemptResult) -> Executed {
    Executed {
        outcome: result.outcome.label(),
        status: result.status_code,
        exit_code: result.exit_code,
        error: result.error,
        response: String::from_utf8_lossy(&result.response).into_owned(),
    }
}

pub fn run(opts: &TestOptions) -> ExitCode {
    match build(opts) {
        Ok((report, _)) => {
            let text = if opts.json {
                serde_json::to_string_pretty(&report).unwrap_or_default()
            } else {
                render_text(&report)
            };
            super::out(&text);
            ExitCode::SUCCESS
        }
        Err(message) => {
            super::err(format_args!("hookwire test: {message}"));
            ExitCode::from(2)
        }
    }
}

/// Body, headers and query of a stored event (credential headers come back redacted).
async fn fetch_event(
    api: &super::ops::Api,
    id: &str,
) -> Result<(Vec<u8>, Vec<(String, String)>, Vec<(String, String)>), String> {
    let v = super::ops::get(api, &format!("/api/events/{}", super::ops::segment(id))).await?;
    let body = v["body"].as_str().unwrap_or_default().as_bytes().to_vec();
    let headers = serde_json::from_value(v["headers"].clone()).unwrap_or_default();
    let query = crate::request::query_pairs(v["query"].as_str());
    Ok((body, headers, query))
}

fn build(opts: &TestOptions) -> Result<(Report, RuleSet), String> {
    let smtp = LoadOptions {
        smtp_configured: opts.smtp_url.is_some(),
    };
    let set = rules::load(
        std::slice::from_ref(&opts.rules),
        &rules::process_env(),
        &smtp,
    )
    .map_err(|f| format!("the rule files have errors:\n{f}"))?;
    let source = set.source(&opts.source).ok_or_else(|| {
        let known: Vec<&str> = set.sources.iter().map(|s| s.name.as_str()).collect();
        format!(
            "no source `{}` in {} (known: {})",
            opts.source,
            opts.rules.display(),
            known.join(", ")
        )
    })?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    // A stored event brings its own body, headers and query; flags add to them.
    let (body, mut headers, mut query) = match (&opts.payload, &opts.event) {
        (Some(path), None) => {
            let body =
                std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
            (body, Vec::new(), Vec::new())
        }
        (None, Some(id)) => runtime.block_on(fetch_event(&opts.api, id))?,
        _ => return Err("give exactly one of --payload FILE or --event ID".to_owned()),
    };

    for h in &opts.headers {
        let (k, v) = h
            .split_once(':')
            .ok_or_else(|| format!("--header `{h}` is not 'Name: value'"))?;
        headers.push((k.trim().to_ascii_lowercase(), v.trim().to_owned()));
    }
    for q in &opts.query {
        let (k, v) = q
            .split_once('=')
            .ok_or_else(|| format!("--query `{q}` is not k=v"))?;
        query.push((k.to_owned(), v.to_owned()));
    }
    let content_type = headers
        .iter()
        .find(|(k, _)| k == "content-type")
        .map(|(_, v)| v.clone())
        .or_else(|| opts.payload.as_deref().and_then(super::guess_content_type));
    let decoded = runtime
        .block_on(super::test_request(
            source,
            body,
            headers,
            query,
            None,
            content_type.clone(),
        ))
        .map_err(|e| {
            format!(
                "{}: {e}",
                opts.payload
                    .as_deref()
                    .map_or_else(|| "the event".to_owned(), |p| p.display().to_string())
            )
        })?;
    let req = &decoded.request;
    let eval = evaluate::evaluate_with(&set, req, true);
    let runner = if opts.execute {
        Some(Runner::new(opts.smtp_url.as_deref(), &opts.smtp_from).map_err(|e| e.to_string())?)
    } else {
        None
    };
    let mut warnings = Vec::new();
    let mut reports = Vec::new();
    for mut trace in eval.trace {
        let mut rendered = Vec::new();
        if let Some(rule) = set.rule(&trace.rule).filter(|_| trace.matched) {
            let ctx = crate::template::context(req, &rule.name, 1);
            for action in &rule.actions {
                for t in actions::templates(action) {
                    for field in t.missing_fields(ctx.data()) {
                        // A step's outputs exist only when its needs have run.
                        if field.starts_with("steps.") {
                            continue;
                        }
                        warnings.push(format!(
                            "{}: rule `{}` action `{}`: template field `{field}` is missing",
                            rule.file, rule.name, action.name
                        ));
                    }
                }
            }
            let run = Run {
                runner: runner.as_ref(),
                runtime: &runtime,
                req,
            };
            rendered = run.actions(rule, &ctx, &mut trace);
        }
        reports.push(RuleReport { trace, rendered });
    }
    warnings.dedup();
    let report = Report {
        source: source.name.clone(),
        content_type,
        facts: decoded.facts,
        rules: reports,
        warnings,
    };
    Ok((report, set))
}

/// Renders (and with `--execute` runs) the actions of one matched rule:
/// steps after their needs, with the outputs those returned.
struct Run<'a> {
    runner: Option<&'a Runner>,
    runtime: &'a tokio::runtime::Runtime,
    req: &'a crate::request::Request,
}

impl Run<'_> {
    fn actions(
        &self,
        rule: &crate::rules::Rule,
        ctx: &crate::template::Context,
        trace: &mut RuleTrace,
    ) -> Vec<RenderedAction> {
        let req = self.req;
        let mut out = Vec::new();
        // The outputs of the actions that succeeded, by name.
        let mut outputs = serde_json::Map::new();
        for action in rule.ordered_actions() {
            let Some(line) = trace
                .actions
                .iter_mut()
                .find(|a| a.action == action.name && a.delivery)
            else {
                continue;
            };
            let step = !action.needs.is_empty();
            let mut entry = RenderedAction {
                action: action.name.clone(),
                rendered: None,
                error: None,
                executed: None,
                note: None,
            };
            if step && self.runner.is_some() {
                if let Some(n) = action.needs.iter().find(|n| !outputs.contains_key(*n)) {
                    entry.error = Some(format!("not run: it needs {n}, which did not succeed"));
                    out.push(entry);
                    continue;
                }
                let (holds, conditions) = evaluate::step_when(action, req, &outputs);
                line.conditions = conditions;
                if !holds {
                    entry.error = Some("skipped: its `when` is false".to_owned());
                    out.push(entry);
                    continue;
                }
            } else if step {
                entry.note = Some(
                    "a step: rendered without the outputs of its needs (run with --execute, or give them in a rule test's `steps`)"
                        .to_owned(),
                );
            }
            let ctx = if step {
                crate::template::with_steps(ctx.clone(), outputs.clone())
            } else {
                ctx.clone()
            };
            match actions::render(action, &ctx, req) {
                Ok(r) => {
                    if let Some(runner) = self.runner {
                        let keep = rule.has_dependents(&action.name);
                        let mut result = self
                            .runtime
                            .block_on(runner.run(action, &r, "dlv_test", &rule.name, req, keep));
                        if result.outcome == actions::Outcome::Succeeded
                            && let Some(o) = result.output.take()
                        {
                            outputs.insert(action.name.clone(), crate::store::steps::view(o));
                        }
                        entry.executed = Some(executed(result));
                    }
                    entry.rendered = Some(r);
                }
                Err(e) => entry.error = Some(format!("render error: {e}")),
            }
            out.push(entry);
        }
        out
    }
}

fn render_text(r: &Report) -> String {
    let mut out = String::new();
    let ct = r.content_type.as_deref().unwrap_or("none");
    out.push_str(&format!("source {} (Content-Type: {ct})\n", r.source));
    for f in &r.facts {
        out.push_str(&format!("  note: {f}\n"));
    }
    if r.rules.is_empty() {
        out.push_str("  no rules for this source\n");
    }
    for rule in &r.rules {
        let t = &rule.trace;
        let verdict = if t.disabled {
            "disabled"
        } else if t.matched {
            "MATCHED"
        } else {
            "not matched"
        };
        out.push_str(&format!("\n{} {}: {verdict}\n", mark(t.matched), t.rule));
        if t.conditions.is_empty() && !t.disabled {
            out.push_str("    (no conditions: every event of the source)\n");
        }
        steps(&mut out, &t.conditions, 2);
        for a in &t.actions {
            let state = if a.delivery {
                "delivery"
            } else if a.needs.is_empty() {
                "skipped by its `when`"
            } else {
                "no delivery"
            };
            let needs = if a.needs.is_empty() {
                String::new()
            } else {
                format!(", after {}", a.needs.join(", "))
            };
            out.push_str(&format!(
                "  action {} ({}{needs}): {state}\n",
                a.action, a.action_type
            ));
            steps(&mut out, &a.conditions, 3);
            if let Some(e) = &a.error {
                out.push_str(&format!("      error: {e}\n"));
            }
            if let Some(n) = &a.note {
                out.push_str(&format!("      note: {n}\n"));
            }
            if let Some(ra) = rule.rendered.iter().find(|x| x.action == a.action) {
                if let Some(n) = &ra.note {
                    out.push_str(&format!("      note: {n}\n"));
                }
                rendered(&mut out, ra);
                if let Some(x) = &ra.executed {
                    let code = x
                        .status
                        .map(|s| format!(" (HTTP {s})"))
                        .or(x.exit_code.map(|c| format!(" (exit {c})")))
                        .unwrap_or_default();
                    out.push_str(&format!("      executed: {}{code}", x.outcome));
                    if let Some(e) = &x.error {
                        out.push_str(&format!(": {e}"));
                    }
                    out.push('\n');
                    if !x.response.is_empty() {
                        out.push_str(&format!(
                            "      response: {}\n",
                            x.response.trim_end().replace('\n', "\n      ")
                        ));
                    }
                }
            }
        }
    }
    if !r.warnings.is_empty() {
        out.push_str("\nwarnings:\n");
        for w in &r.warnings {
            out.push_str(&format!("  {w}\n"));
        }
    }
    out
}

fn mark(ok: bool) -> &'static str {
    if ok { "✔" } else { "✘" }
}

pub(crate) fn steps(out: &mut String, steps_list: &[Step], depth: usize) {
    let pad = "  ".repeat(depth);
    for s in steps_list {
        out.push_str(&format!(
            "{pad}{} {}  [line {}:{}]\n",
            mark(s.result),
            s.condition,
            s.line,
            s.col
        ));
        if !s.found.is_empty() {
            out.push_str(&format!("{pad}    found: {}\n", s.found.join(", ")));
        }
        if !s.reason.is_empty() && s.reason != "holds" && s.reason != "does not hold" {
            out.push_str(&format!("{pad}    {}\n", s.reason));
        }
        steps(out, &s.children, depth + 1);
    }
}

fn rendered(out: &mut String, ra: &RenderedAction) {
    let pad = "      ";
    if let Some(e) = &ra.error {
        out.push_str(&format!("{pad}{e}\n"));
        return;
    }
    match &ra.rendered {
        Some(Rendered::Http {
            method,
            url,
            headers,
            body,
            forward,
        }) => {
            out.push_str(&format!("{pad}{method} {url}\n"));
            for (k, v) in headers {
                out.push_str(&format!("{pad}{k}: {v}\n"));
            }
            if *forward {
                out.push_str(&format!("{pad}(forwards the original body and headers)\n"));
            }
            match body {
                Some(Value::String(s)) => out.push_str(&format!("{pad}{s}\n")),
                Some(v) => out.push_str(&format!(
                    "{pad}{}\n",
                    serde_json::to_string_pretty(v)
                        .unwrap_or_default()
                        .replace('\n', &format!("\n{pad}"))
                )),
                None => {}
            }
        }
        Some(Rendered::Email {
            from,
            to,
            cc,
            bcc,
            subject,
            text,
            html,
        }) => {
            out.push_str(&format!(
                "{pad}From: {}\n{pad}To: {}\n",
                from.as_deref().unwrap_or("(--smtp-from)"),
                to.join(", ")
            ));
            if !cc.is_empty() {
                out.push_str(&format!("{pad}Cc: {}\n", cc.join(", ")));
            }
            if !bcc.is_empty() {
                out.push_str(&format!("{pad}Bcc: {}\n", bcc.join(", ")));
            }
            out.push_str(&format!("{pad}Subject: {subject}\n"));
            for body in text.iter().chain(html.iter()) {
                out.push_str(&format!(
                    "{pad}{}\n",
                    body.replace('\n', &format!("\n{pad}"))
                ));
            }
        }
        Some(Rendered::Command {
            argv,
            env,
            stdin,
            cwd,
        }) => {
            out.push_str(&format!(
                "{pad}argv: {}\n",
                serde_json::to_string(argv).unwrap_or_default()
            ));
            for (k, v) in env {
                out.push_str(&format!("{pad}env {k}={v}\n"));
            }
            if let Some(c) = cwd {
                out.push_str(&format!("{pad}cwd: {c}\n"));
            }
            if let Some(s) = stdin {
                out.push_str(&format!("{pad}stdin: {} bytes\n", s.len()));
            }
        }
        None => {}
    }
}
