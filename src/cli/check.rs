//! `hookwire check [PATH...]`: load rule files exactly as the daemon does and
//! report every error and warning with its position. Exit 0 valid, 1 invalid.

use std::path::PathBuf;
use std::process::ExitCode;

use crate::rules::{self, LoadOptions};

pub fn run(paths: &[PathBuf]) -> ExitCode {
    let opts = LoadOptions {
        smtp_configured: std::env::var_os("HOOKWIRE_SMTP_URL").is_some(),
    };
    match rules::load(paths, &rules::process_env(), &opts) {
        Ok(set) => {
            for w in &set.warnings {
                eprintln!("{}:{}:{}: warning: {}", w.file, w.line, w.col, w.message);
            }
            super::out(&format!(
                "ok: {} file{}, {} source{}, {} rule{}",
                set.files.len(),
                plural(set.files.len()),
                set.sources.len(),
                plural(set.sources.len()),
                set.rules.len(),
                plural(set.rules.len())
            ));
            ExitCode::SUCCESS
        }
        Err(failure) => {
            for e in &failure.errors {
                super::out(&e.to_string());
            }
            for w in &failure.warnings {
                eprintln!("{}:{}:{}: warning: {}", w.file, w.line, w.col, w.message);
            }
            eprintln!(
                "{} error{}",
                failure.errors.len(),
                plural(failure.errors.len())
            );
            ExitCode::FAILURE
        }
    }
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}
