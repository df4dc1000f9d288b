//! Rule files: read a directory → parse with positions → resolve `${VAR}` →
//! check the schema → compile → one immutable [`RuleSet`].
//!
//! Loading never stops at the first problem: every problem of every file is
//! collected as a [`Diagnostic`] (`FILE:LINE:COL: message`), and a set is
//! produced only when there are none. Request-time code only sees compiled
//! types, so a bad regex, JSONPath, glob or template can only fail here.

pub mod compile;
pub mod env;
mod steps;

#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use serde::Serialize;

use crate::syntax::node::{self, Pos};
pub use compile::{
    Action, ActionKind, CommandAction, EmailAction, HttpAction, HttpBody, RateLimit, Respond,
    RetryPolicy, Rule, RuleTest, Source, Stdin,
};

/// A problem (or a warning) at a place in a rule file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Diagnostic {
    pub file: String,
    pub line: u32,
    pub col: u32,
    pub message: String,
}

impl Diagnostic {
    /// A problem with a whole file (it cannot be read, it is not a rule file).
    fn file(path: &Path, message: impl Into<String>) -> Self {
        Self::new(&shown(path), Pos { line: 1, col: 1 }, message)
    }

    pub fn new(file: &str, pos: Pos, message: impl Into<String>) -> Self {
        Self {
            file: file.to_owned(),
            line: pos.line,
            col: pos.col,
            message: message.into(),
        }
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}",
            self.file, self.line, self.col, self.message
        )
    }
}

/// A loaded, validated and compiled set of sources and rules.
#[derive(Debug)]
pub struct RuleSet {
    /// Set when the set goes live: 1 for the first, +1 for every reload that swaps one in.
    pub version: u64,
    pub loaded_at: SystemTime,
    pub files: Vec<String>,
    pub sources: Vec<Source>,
    pub rules: Vec<Rule>,
    pub tests: Vec<RuleTest>,
    /// Values that came from `${VAR}`: redacted wherever data is shown.
    pub secrets: Vec<String>,
    /// The names of those variables (a backtest's candidate may use only these).
    pub variables: Vec<String>,
    pub warnings: Vec<Diagnostic>,
    by_path: HashMap<String, usize>,
    /// Per source index: indexes of its rules.
    rules_of: Vec<Vec<usize>>,
}

impl RuleSet {
    /// The source serving a URL path.
    pub fn source_for_path(&self, path: &str) -> Option<&Source> {
        self.by_path.get(path).map(|&i| &self.sources[i])
    }

    pub fn source(&self, name: &str) -> Option<&Source> {
        self.sources.iter().find(|s| s.name == name)
    }

    /// Every rule of a source (enabled or not), in load order.
    pub fn rules_of<'a>(&'a self, source: &str) -> impl Iterator<Item = &'a Rule> + 'a {
        let idx = self.sources.iter().position(|s| s.name == source);
        idx.into_iter()
            .flat_map(move |i| self.rules_of[i].iter().map(move |&r| &self.rules[r]))
    }

    /// How many rules (enabled or not) a source has.
    pub fn rule_count(&self, source: &str) -> usize {
        self.sources
            .iter()
            .position(|s| s.name == source)
            .map_or(0, |i| self.rules_of[i].len())
    }

    pub fn rule(&self, name: &str) -> Option<&Rule> {
        self.rules.iter().find(|r| r.name == name)
    }

    /// An empty set, served until the first load succeeds.
    pub fn empty() -> Self {
        Self::assemble(
            Vec::new(),
            Vec::new(),
            Vec::new(),
            Vec::new(),
            Vec::new(),
            Vec::new(),
            Vec::new(),
        )
    }

    fn assemble(
        files: Vec<String>,
        sources: Vec<Source>,
        rules: Vec<Rule>,
        tests: Vec<RuleTest>,
        secrets: Vec<String>,
        variables: Vec<String>,
        warnings: Vec<Diagnostic>,
    ) -> Self {
        let by_path = sources
            .iter()
            .enumerate()
            .map(|(i, s)| (s.path.clone(), i))
            .collect();
        let rules_of = sources
            .iter()
            .map(|s| {
                rules
                    .iter()
                    .enumerate()
                    .filter(|(_, r)| r.sources.contains(&s.name))
                    .map(|(i, _)| i)
                    .collect()
            })
            .collect();
        Self {
            version: 0,
            loaded_at: SystemTime::now(),
            files,
            sources,
            rules,
            tests,
            secrets,
            variables,
            warnings,
            by_path,
            rules_of,
        }
    }
}

/// Why a load produced no set.
#[derive(Debug, Clone)]
pub struct LoadFailure {
    pub errors: Vec<Diagnostic>,
    pub warnings: Vec<Diagnostic>,
}

impl fmt::Display for LoadFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.errors.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

/// Options that change what a rule set checks.
#[derive(Debug, Clone, Default)]
pub struct LoadOptions {
    /// Whether an SMTP server is configured (email actions warn when not).
    pub smtp_configured: bool,
}

/// The rule files under `paths` as [`load`] reads them (sorted, each once),
/// and the paths that could not be read.
pub fn rule_files(paths: &[PathBuf]) -> (Vec<PathBuf>, Vec<Diagnostic>) {
    let mut errors = Vec::new();
    let mut files = Vec::new();
    for p in paths {
        collect_files(p, &mut files, &mut errors);
    }
    files.sort();
    files.dedup();
    (files, errors)
}

/// A rule file's name as diagnostics show it (`rules/github.yaml`).
pub fn shown_name(p: &Path) -> String {
    shown(p)
}

/// Loads every rule file under `paths` (files or directories, read recursively).
pub fn load(
    paths: &[PathBuf],
    env: &HashMap<String, String>,
    opts: &LoadOptions,
) -> Result<RuleSet, LoadFailure> {
    let (files, mut errors) = rule_files(paths);

    let mut texts = Vec::new();
    for file in &files {
        match std::fs::read_to_string(file) {
            Ok(t) => texts.push((file.clone(), t)),
            Err(e) => errors.push(Diagnostic::file(file, format!("cannot read: {e}"))),
        }
    }
    build(&texts, errors, env, opts)
}

/// Loads rule files given as `(name, text)`, as if read from those paths
/// (names end in `.yaml`, `.yml`, `.toml` or `.json`): a candidate set sent
/// for a backtest. Errors name the files by these names.
pub fn load_texts(
    files: &[(String, String)],
    env: &HashMap<String, String>,
    opts: &LoadOptions,
) -> Result<RuleSet, LoadFailure> {
    let mut errors = Vec::new();
    let mut texts = Vec::new();
    for (name, text) in files {
        let path = PathBuf::from(name);
        if node::Format::of(&path).is_none() {
            errors.push(Diagnostic::file(
                &path,
                "not a rule file: the name must end in .yaml, .yml, .toml or .json".to_owned(),
            ));
            continue;
        }
        texts.push((path, text.clone()));
    }
    build(&texts, errors, env, opts)
}

fn build(
    texts: &[(PathBuf, String)],
    mut errors: Vec<Diagnostic>,
    env: &HashMap<String, String>,
    opts: &LoadOptions,
) -> Result<RuleSet, LoadFailure> {
    let mut builder = compile::Builder::new(env, opts);
    for (file, text) in texts {
        let Some(format) = node::Format::of(file) else {
            continue;
        };
        builder.add_file(&shown(file), file, format, text);
    }
    let (set, mut more, warnings) = builder.finish(texts.iter().map(|(f, _)| shown(f)).collect());
    errors.append(&mut more);
    // Secrets are known to every output from the first load on, valid or not.
    crate::redact::register(&set.secrets);
    if errors.is_empty() {
        Ok(set)
    } else {
        Err(LoadFailure { errors, warnings })
    }
}

/// Size and modification time of every rule file under `paths`: when it
/// differs before and after a load, a file changed while it was being read,
/// and the set may hold half of a write.
pub fn fingerprint(paths: &[PathBuf]) -> Vec<(PathBuf, u64, Option<SystemTime>)> {
    let mut files = Vec::new();
    let mut ignored = Vec::new();
    for p in paths {
        collect_files(p, &mut files, &mut ignored);
    }
    files.sort();
    files
        .into_iter()
        .map(|f| {
            let meta = std::fs::metadata(&f).ok();
            let len = meta.as_ref().map_or(0, std::fs::Metadata::len);
            let modified = meta.and_then(|m| m.modified().ok());
            (f, len, modified)
        })
        .collect()
}

/// A path as shown in messages: as given, without a leading `./`.
fn shown(p: &Path) -> String {
    p.strip_prefix(".").unwrap_or(p).display().to_string()
}

fn is_hidden(p: &Path) -> bool {
    p.file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.starts_with('.'))
}

fn collect_files(path: &Path, out: &mut Vec<PathBuf>, errors: &mut Vec<Diagnostic>) {
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) => {
            errors.push(Diagnostic::file(path, format!("cannot read: {e}")));
            return;
        }
    };
    if meta.is_file() {
        if node::Format::of(path).is_some() {
            out.push(path.to_path_buf());
        } else {
            errors.push(Diagnostic::file(
                path,
                "not a rule file: expected .yaml, .yml, .toml or .json",
            ));
        }
        return;
    }
    let entries = match std::fs::read_dir(path) {
        Ok(e) => e,
        Err(e) => {
            errors.push(Diagnostic::file(path, format!("cannot read: {e}")));
            return;
        }
    };
    for entry in entries.flatten() {
        let p = entry.path();
        if is_hidden(&p) {
            continue;
        }
        match entry.file_type() {
            Ok(t) if t.is_dir() => collect_files(&p, out, errors),
            Ok(_) if node::Format::of(&p).is_some() && p.is_file() => out.push(p),
            _ => {}
        }
    }
}

/// The process environment as a map, for `${VAR}` resolution.
pub fn process_env() -> HashMap<String, String> {
    std::env::vars_os()
        .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
        .collect()
}
