//! Compiled conditions: evaluation and its explanation (the trace).
//!
//! A rule's `when` is compiled once at load from the raw rule-file tree into a
//! [`Condition`] (JSONPath, regexes and globs precompiled), so no request can
//! meet a syntax error. [`Condition::eval`] and [`Condition::explain`] share
//! one implementation (`run` over a [`Sink`]); `eval` records nothing and stops
//! early, `explain` evaluates every branch and records why each held or not.

use globset::GlobMatcher;
use regex::Regex;
use serde::Serialize;
use serde_json::Value;

use crate::syntax::node::Pos;

mod compile;
mod eval;
mod path;
mod trace;

pub use compile::compile;
pub use eval::json_eq;
pub use path::JsonPath;
pub use trace::{ActionTrace, RuleTrace};

/// What a condition is evaluated against.
#[derive(Debug, Clone, Copy)]
pub struct Input<'a> {
    pub payload: &'a Value,
    /// Lowercase header names with their first value.
    pub headers: &'a [(String, String)],
    pub query: &'a [(String, String)],
    pub method: &'a str,
    /// The outputs of a step's needs, by action name (SPEC §4.7); `None`
    /// where there are none (a rule's own `when`, at ingest).
    pub steps: Option<&'a serde_json::Map<String, Value>>,
}

impl<'a> Input<'a> {
    /// What conditions see of a request.
    pub fn of(req: &'a crate::request::Request) -> Self {
        Input {
            payload: &req.payload,
            headers: &req.headers,
            query: &req.query,
            method: &req.method,
            steps: None,
        }
    }

    /// The same input, with the outputs a step's `when` reads.
    pub fn with_steps(self, steps: &'a serde_json::Map<String, Value>) -> Self {
        Input {
            steps: Some(steps),
            ..self
        }
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    fn query(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

#[derive(Debug, Clone)]
pub enum Operand {
    Path(JsonPath),
    Header(String),
    Query(String),
    Method,
    /// `step: NAME` with an optional `path` (default `$`) into its output.
    Step {
        name: String,
        path: JsonPath,
        pos: Pos,
    },
}

impl Operand {
    fn describe(&self) -> String {
        match self {
            Operand::Path(p) => format!("path {}", p.text),
            Operand::Step { name, path, .. } => format!("step {name} path {}", path.text),
            Operand::Header(h) => format!("header {h}"),
            Operand::Query(q) => format!("query {q}"),
            Operand::Method => "method".to_owned(),
        }
    }

    fn is_text(&self) -> bool {
        !matches!(self, Operand::Path(_) | Operand::Step { .. })
    }
}

#[derive(Debug, Clone)]
pub enum Op {
    Equals(Value),
    NotEquals(Value),
    In(Vec<Value>),
    NotIn(Vec<Value>),
    Matches(Regex),
    Glob(String, GlobMatcher),
    Contains(Value),
    StartsWith(String),
    EndsWith(String),
    Exists(bool),
    Cmp(CmpOp, Value),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CmpOp {
    Gt,
    Gte,
    Lt,
    Lte,
}

impl Op {
    fn name(&self) -> &'static str {
        match self {
            Op::Equals(_) => "equals",
            Op::NotEquals(_) => "not_equals",
            Op::In(_) => "in",
            Op::NotIn(_) => "not_in",
            Op::Matches(_) => "matches",
            Op::Glob(..) => "glob",
            Op::Contains(_) => "contains",
            Op::StartsWith(_) => "starts_with",
            Op::EndsWith(_) => "ends_with",
            Op::Exists(_) => "exists",
            Op::Cmp(CmpOp::Gt, _) => "gt",
            Op::Cmp(CmpOp::Gte, _) => "gte",
            Op::Cmp(CmpOp::Lt, _) => "lt",
            Op::Cmp(CmpOp::Lte, _) => "lte",
        }
    }

    fn argument(&self) -> String {
        match self {
            Op::Equals(v) | Op::NotEquals(v) | Op::Contains(v) | Op::Cmp(_, v) => v.to_string(),
            Op::In(vs) | Op::NotIn(vs) => Value::Array(vs.clone()).to_string(),
            Op::Matches(r) => format!("/{}/", r.as_str()),
            Op::Glob(g, _) => g.clone(),
            Op::StartsWith(s) | Op::EndsWith(s) => Value::String(s.clone()).to_string(),
            Op::Exists(b) => b.to_string(),
        }
    }
}

/// A compiled `when`.
#[derive(Debug, Clone)]
pub enum Condition {
    Test {
        operand: Operand,
        op: Op,
        every: bool,
        pos: Pos,
    },
    /// A bare JSONPath string: holds when it selects at least one node.
    Selects(JsonPath, Pos),
    All(Vec<Condition>, Pos),
    Any(Vec<Condition>, Pos),
    Not(Box<Condition>, Pos),
}

impl Condition {
    /// The actions whose outputs this condition reads (`step: NAME`), with
    /// where each is named.
    pub fn step_refs(&self) -> Vec<(String, Pos)> {
        let mut out = Vec::new();
        self.collect_step_refs(&mut out);
        out
    }

    fn collect_step_refs(&self, out: &mut Vec<(String, Pos)>) {
        match self {
            Condition::Test {
                operand: Operand::Step { name, pos, .. },
                ..
            } => out.push((name.clone(), *pos)),
            Condition::Test { .. } | Condition::Selects(..) => {}
            Condition::All(items, _) | Condition::Any(items, _) => {
                for c in items {
                    c.collect_step_refs(out);
                }
            }
            Condition::Not(inner, _) => inner.collect_step_refs(out),
        }
    }
}

/// One line of a trace: a condition, what it found and why it held or not.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct Step {
    /// The condition as written, e.g. `path $.ref equals "refs/heads/main"`.
    pub condition: String,
    pub result: bool,
    /// Values found by the operand, JSON-encoded and truncated.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub found: Vec<String>,
    pub reason: String,
    /// Line and column in the rule file.
    pub line: u32,
    pub col: u32,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub children: Vec<Step>,
}

#[cfg(test)]
mod tests;
