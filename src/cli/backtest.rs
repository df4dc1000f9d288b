//! `hookwire check --backtest [PATH...]`: the local rule files (the
//! candidate) against the rule set a running daemon serves (the baseline),
//! over the events that daemon stored. The candidate's files are sent to
//! `POST /api/backtest`, where the daemon loads them with its own
//! environment, evaluates both sets on the same events and answers what
//! would change. (Their `tests:` are `hookwire check`'s business.)
//!
//! Exit 0 when nothing changes for the stored events, 3 when something
//! does, 1 when the candidate does not load, 2 on bad input or when the
//! daemon cannot be asked.

use std::path::PathBuf;
use std::process::ExitCode;

use serde_json::{Value, json};

use super::ops::Api;
use crate::rules;

/// Example event ids shown per list in text output (JSON has them all).
const EXAMPLES: usize = 5;

pub struct BacktestOptions {
    pub paths: Vec<PathBuf>,
    pub api: Api,
    pub last: Option<u32>,
    pub since: Option<String>,
    pub source: Option<String>,
}

pub fn run(o: &BacktestOptions) -> ExitCode {
    crate::redact::register(&o.api.token);
    if let Some(since) = &o.since
        && let Err(e) = since.parse::<crate::config::Duration>()
    {
        super::err(format_args!("hookwire check --backtest: --since: {e}"));
        return ExitCode::from(2);
    }
    if o.last == Some(0) {
        super::err("hookwire check --backtest: --last must be at least 1");
        return ExitCode::from(2);
    }
    // The daemon loads the candidate, with its own environment: `${VAR}`
    // resolves as it will after the change, and secrets this machine does
    // not hold are not needed here.
    let (paths, unreadable) = rules::rule_files(&o.paths);
    if !unreadable.is_empty() {
        for e in &unreadable {
            super::out(&e.to_string());
        }
        return ExitCode::FAILURE;
    }
    if paths.is_empty() {
        super::err(
            "hookwire check --backtest: no rule files (*.yaml, *.yml, *.toml, *.json) in the given paths",
        );
        return ExitCode::from(2);
    }
    let mut files = Vec::new();
    for path in &paths {
        let name = rules::shown_name(path);
        match std::fs::read_to_string(path) {
            Ok(text) => files.push(json!({ "name": name, "text": text })),
            Err(e) => {
                super::out(&format!("{name}: cannot read: {e}"));
                return ExitCode::FAILURE;
            }
        }
    }
    let mut body = json!({ "files": files });
    if let Some(n) = o.last {
        body["last"] = json!(n);
    }
    if let Some(s) = &o.since {
        body["since"] = json!(s);
    }
    if let Some(s) = &o.source {
        body["source"] = json!(s);
    }

    let answer = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())
        .and_then(|rt| {
            rt.block_on(super::ops::send(
                &o.api,
                reqwest::Method::POST,
                "/api/backtest",
                Some(&body),
            ))
        });
    let (status, report) = match answer {
        Ok(a) => a,
        Err(e) => {
            super::err(format_args!("hookwire check --backtest: {e}"));
            return ExitCode::from(2);
        }
    };
    if status == reqwest::StatusCode::UNPROCESSABLE_ENTITY {
        // As `hookwire check` prints them: FILE:LINE:COL: message.
        for e in report["errors"].as_array().into_iter().flatten() {
            super::out(&format!(
                "{}:{}:{}: {}",
                s(&e["file"]),
                e["line"],
                e["col"],
                s(&e["message"])
            ));
        }
        super::err(format_args!(
            "the candidate does not load: {} error{}",
            report["errors"].as_array().map_or(0, Vec::len),
            if report["errors"].as_array().map_or(0, Vec::len) == 1 {
                ""
            } else {
                "s"
            }
        ));
        return ExitCode::FAILURE;
    }
    if !status.is_success() {
        let msg = report["error"].as_str().unwrap_or("no detail");
        super::err(format_args!("hookwire check --backtest: {status}: {msg}"));
        return ExitCode::from(2);
    }
    if o.api.json {
        super::out(&serde_json::to_string_pretty(&report).unwrap_or_default());
    } else {
        super::out(render(&report, &o.api.server).trim_end());
    }
    if report["changed"] == true {
        ExitCode::from(3)
    } else {
        ExitCode::SUCCESS
    }
}

fn s(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// Up to [`EXAMPLES`] ids and how many more.
fn examples(ids: &Value) -> String {
    let list: Vec<String> = ids.as_array().into_iter().flatten().map(s).collect();
    let mut text = list
        .iter()
        .take(EXAMPLES)
        .cloned()
        .collect::<Vec<_>>()
        .join(", ");
    if list.len() > EXAMPLES {
        text.push_str(&format!(" and {} more", list.len() - EXAMPLES));
    }
    text
}

/// A rendered value on one line, long ones cut.
fn shown(v: &Value) -> String {
    let text = match v {
        Value::Null => "(absent)".to_owned(),
        other => other.to_string(),
    };
    if text.chars().count() > 160 {
        format!("{}…", text.chars().take(159).collect::<String>())
    } else {
        text
    }
}

/// The report as text: the changed rules first, then a count of the others.
pub fn render(r: &Value, server: &str) -> String {
    let mut out = String::new();
    let n = r["events"].as_u64().unwrap_or(0);
    let span = match (r["from_ms"].as_i64(), r["to_ms"].as_i64()) {
        (Some(a), Some(b)) => format!(
            ", received {} – {}",
            crate::clock::rfc3339_ms(a)
                .replace('T', " ")
                .chars()
                .take(19)
                .collect::<String>(),
            crate::clock::rfc3339_ms(b)
                .replace('T', " ")
                .chars()
                .take(19)
                .collect::<String>()
                + " UTC"
        ),
        _ => String::new(),
    };
    out.push_str(&format!(
        "backtest: {n} stored event{}{span}\nbaseline: the rules {server} runs (v{}); candidate: the local files\n\n",
        if n == 1 { "" } else { "s" },
        s(&r["baseline_version"])
    ));
    let mut same = 0;
    for rule in r["rules"].as_array().into_iter().flatten() {
        let name = s(&rule["rule"]);
        let (before, after) = (s(&rule["before"]), s(&rule["after"]));
        let count = |k: &str| rule[k].as_array().map_or(0, Vec::len);
        match rule["status"].as_str() {
            Some("added") => {
                out.push_str(&format!(
                    "added: rule {name}, would match {after} event(s)\n"
                ));
                if count("started") > 0 {
                    out.push_str(&format!("  e.g. {}\n", examples(&rule["started"])));
                }
            }
            Some("removed") => {
                out.push_str(&format!(
                    "removed: rule {name}, matched {before} event(s)\n"
                ));
                if count("stopped") > 0 {
                    out.push_str(&format!("  e.g. {}\n", examples(&rule["stopped"])));
                }
            }
            Some("changed") => {
                out.push_str(&format!(
                    "rule {name}: matched {before} → {after} (+{} started, −{} stopped)\n",
                    count("started"),
                    count("stopped")
                ));
                if count("started") > 0 {
                    out.push_str(&format!("  started: {}\n", examples(&rule["started"])));
                }
                if count("stopped") > 0 {
                    out.push_str(&format!("  stopped: {}\n", examples(&rule["stopped"])));
                }
                if count("rendered_differently") > 0 {
                    out.push_str(&format!(
                        "  rendered differently on {} event(s):\n",
                        count("rendered_differently")
                    ));
                    for d in rule["differences"].as_array().into_iter().flatten() {
                        out.push_str(&format!(
                            "    {}/{} on {} event(s), e.g. {}:\n      - {}\n      + {}\n",
                            s(&d["action"]),
                            s(&d["field"]),
                            s(&d["events"]),
                            s(&d["example"]),
                            shown(&d["before"]),
                            shown(&d["after"])
                        ));
                    }
                }
            }
            _ => same += 1,
        }
    }
    if same > 0 {
        out.push_str(&format!(
            "{same} rule{} unchanged\n",
            if same == 1 { "" } else { "s" }
        ));
    }
    out.push_str(&format!("\nverdict: {}\n", s(&r["verdict"])));
    out
}
