//! `hookwire check [PATH...]`: load rule files exactly as the daemon does,
//! report every error and warning with its position, and run the `tests:`
//! the files carry. Exit 0 when all is valid and every test passes, else 1.

use std::path::PathBuf;
use std::process::ExitCode;

use crate::rules::{self, LoadOptions};

/// With `verbose`, every rule is listed with its actions; a rule with steps
/// shows its graph, one action per line with what it runs after.
pub fn run(paths: &[PathBuf], verbose: bool) -> ExitCode {
    let opts = LoadOptions {
        smtp_configured: std::env::var_os("HOOKWIRE_SMTP_URL").is_some(),
    };
    match rules::load(paths, &rules::process_env(), &opts) {
        Ok(set) => {
            for w in &set.warnings {
                super::err(format_args!(
                    "{}:{}:{}: warning: {}",
                    w.file, w.line, w.col, w.message
                ));
            }
            if verbose {
                for rule in &set.rules {
                    super::out(&describe(rule));
                }
            }
            let failures = super::rule_tests::run_all(&set);
            for f in &failures {
                super::out(f);
            }
            let tests = set.tests.len();
            if !failures.is_empty() {
                super::err(format_args!(
                    "{} of {tests} rule test{} failed",
                    failures.len(),
                    plural(tests)
                ));
                return ExitCode::FAILURE;
            }
            super::out(&format!(
                "ok: {} file{}, {} source{}, {} rule{}, {tests} test{} passed",
                set.files.len(),
                plural(set.files.len()),
                set.sources.len(),
                plural(set.sources.len()),
                set.rules.len(),
                plural(set.rules.len()),
                plural(tests)
            ));
            ExitCode::SUCCESS
        }
        Err(failure) => {
            for e in &failure.errors {
                super::out(&e.to_string());
            }
            for w in &failure.warnings {
                super::err(format_args!(
                    "{}:{}:{}: warning: {}",
                    w.file, w.line, w.col, w.message
                ));
            }
            super::err(format_args!(
                "{} error{}",
                failure.errors.len(),
                plural(failure.errors.len())
            ));
            ExitCode::FAILURE
        }
    }
}

/// `rule NAME (FILE:LINE:COL), source S: actions` and, for a rule with
/// steps, its graph.
fn describe(rule: &rules::Rule) -> String {
    let mut text = format!(
        "rule {} ({}:{}:{}), source {}",
        rule.name,
        rule.file,
        rule.pos.line,
        rule.pos.col,
        rule.sources.join(", ")
    );
    let graph = rule.step_graph();
    if graph.is_empty() {
        let names: Vec<&str> = rule.actions.iter().map(|a| a.name.as_str()).collect();
        text.push_str(&format!(": {}", names.join(", ")));
    } else {
        text.push_str(": steps");
        for line in graph {
            text.push_str(&format!("\n  {line}"));
        }
    }
    text
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}
