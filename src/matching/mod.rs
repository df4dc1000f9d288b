//! Compiled conditions: evaluation and its explanation (the trace).
//!
//! A rule's `when` is compiled once at load from the raw rule-file tree into a
//! [`Condition`] (JSONPath, regexes and globs precompiled), so no request can
//! meet a syntax error. [`Condition::eval`] and [`Condition::explain`] share
//! one implementation (`run` over a [`Sink`]); `eval` records nothing and stops
//! early, `explain` evaluates every branch and records why each held or not.

use std::cmp::Ordering;
use std::fmt::Write as _;

use globset::{GlobBuilder, GlobMatcher};
use jsonpath_rust::parser::model::JpQuery;
use regex::Regex;
use serde::Serialize;
use serde_json::Value;

use crate::rules::node::{Kind, Node, Pos};

/// What a condition is evaluated against.
#[derive(Debug, Clone, Copy)]
pub struct Input<'a> {
    pub payload: &'a Value,
    /// Lowercase header names with their first value.
    pub headers: &'a [(String, String)],
    pub query: &'a [(String, String)],
    pub method: &'a str,
}

impl Input<'_> {
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

/// A compiled JSONPath query with the text it was written as.
#[derive(Debug, Clone)]
pub struct JsonPath {
    pub text: String,
    query: JpQuery,
    /// Set when the query is only names and indexes (`$.a.b[0]`, most
    /// conditions): then it is a walk down the payload that allocates nothing,
    /// instead of the general evaluator (which builds a path string per node).
    direct: Option<Vec<Direct>>,
}

#[derive(Debug, Clone)]
enum Direct {
    Name(String),
    Index(i64),
}

impl Direct {
    /// The steps of a query made only of single name and index selectors.
    fn of(query: &JpQuery) -> Option<Vec<Direct>> {
        use jsonpath_rust::parser::model::{Segment, Selector};
        query
            .segments
            .iter()
            .map(|s| match s {
                Segment::Selector(Selector::Name(n)) => Some(Direct::Name(n.clone())),
                Segment::Selector(Selector::Index(i)) => Some(Direct::Index(*i)),
                _ => None,
            })
            .collect()
    }

    /// RFC 9535 semantics: a name selects a member of an object, an index an
    /// element of an array (negative from the end); anything else selects nothing.
    fn walk<'a>(steps: &[Direct], root: &'a Value) -> Option<&'a Value> {
        steps.iter().try_fold(root, |v, step| match step {
            Direct::Name(n) => v.as_object()?.get(n),
            Direct::Index(i) => {
                let array = v.as_array()?;
                let i = if *i >= 0 {
                    usize::try_from(*i).ok()?
                } else {
                    array
                        .len()
                        .checked_sub(usize::try_from(i.unsigned_abs()).ok()?)?
                };
                array.get(i)
            }
        })
    }
}

impl JsonPath {
    pub fn compile(text: &str) -> Result<Self, String> {
        match jsonpath_rust::parser::parse_json_path(text) {
            Ok(query) => Ok(Self {
                text: text.to_owned(),
                direct: Direct::of(&query),
                query,
            }),
            Err(jsonpath_rust::parser::errors::JsonPathError::PestError(e)) => {
                let at = match e.line_col {
                    pest::error::LineColLocation::Pos((_, c))
                    | pest::error::LineColLocation::Span((_, c), _) => c,
                };
                Err(format!(
                    "invalid JSONPath `{text}` at character {at}: {}",
                    e.variant.message()
                ))
            }
            Err(e) => Err(format!("invalid JSONPath `{text}`: {e}")),
        }
    }

    /// For a bare condition: a query that starts with a filter (`$[?…]`) over
    /// an object payload tests the payload itself, as `when:
    /// "$[?@.action == 'published']"` is meant to read. (RFC 9535 would
    /// filter the object's member values instead, which no rule wants.)
    pub fn select_filtering_root<'a>(&self, root: &'a Value) -> Vec<&'a Value> {
        if root.is_object() && self.text.trim_start().starts_with("$[?") {
            let wrapped = Value::Array(vec![root.clone()]);
            return if self.select(&wrapped).is_empty() {
                Vec::new()
            } else {
                vec![root]
            };
        }
        self.select(root)
    }

    /// The nodes this query selects.
    pub fn select<'a>(&self, root: &'a Value) -> Vec<&'a Value> {
        if let Some(steps) = &self.direct {
            return Direct::walk(steps, root).into_iter().collect();
        }
        match jsonpath_rust::query::js_path_process(&self.query, root) {
            Ok(refs) => refs.into_iter().map(|r| r.val).collect(),
            Err(_) => Vec::new(),
        }
    }
}

#[derive(Debug, Clone)]
pub enum Operand {
    Path(JsonPath),
    Header(String),
    Query(String),
    Method,
}

impl Operand {
    fn describe(&self) -> String {
        match self {
            Operand::Path(p) => format!("path {}", p.text),
            Operand::Header(h) => format!("header {h}"),
            Operand::Query(q) => format!("query {q}"),
            Operand::Method => "method".to_owned(),
        }
    }

    fn is_text(&self) -> bool {
        !matches!(self, Operand::Path(_))
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

/// Where `run` reports to. `()` records nothing (fast path); `Vec<Step>` records a trace.
trait Sink {
    const EXPLAIN: bool;
    fn step(&mut self, step: Step);
    fn child(&mut self) -> Self;
    fn into_steps(self) -> Vec<Step>;
}

impl Sink for () {
    const EXPLAIN: bool = false;
    fn step(&mut self, _: Step) {}
    fn child(&mut self) -> Self {}
    fn into_steps(self) -> Vec<Step> {
        Vec::new()
    }
}

impl Sink for Vec<Step> {
    const EXPLAIN: bool = true;
    fn step(&mut self, step: Step) {
        self.push(step);
    }
    fn child(&mut self) -> Self {
        Vec::new()
    }
    fn into_steps(self) -> Vec<Step> {
        self
    }
}

/// How many found values a trace shows, and how long each may be.
const TRACE_VALUES: usize = 5;
const TRACE_VALUE_CHARS: usize = 120;

impl Condition {
    /// Whether the condition holds. Records nothing.
    pub fn eval(&self, input: &Input<'_>) -> bool {
        self.run(input, &mut ())
    }

    /// Whether the condition holds, with the steps that decided it.
    pub fn explain(&self, input: &Input<'_>) -> (bool, Vec<Step>) {
        let mut steps = Vec::new();
        let result = self.run(input, &mut steps);
        (result, steps)
    }

    fn run<S: Sink>(&self, input: &Input<'_>, sink: &mut S) -> bool {
        match self {
            Condition::Test {
                operand,
                op,
                every,
                pos,
            } => run_test(operand, op, *every, *pos, input, sink),
            Condition::Selects(path, pos) => {
                let nodes = path.select_filtering_root(input.payload);
                let result = !nodes.is_empty();
                if S::EXPLAIN {
                    let reason = if result {
                        format!("selected {} node{}", nodes.len(), plural(nodes.len()))
                    } else {
                        zero_nodes_reason(path, input)
                    };
                    sink.step(Step {
                        condition: path.text.clone(),
                        result,
                        found: show_values(nodes.iter().copied()),
                        reason,
                        line: pos.line,
                        col: pos.col,
                        children: Vec::new(),
                    });
                }
                result
            }
            Condition::All(items, pos) => run_group(items, true, "all", *pos, input, sink),
            Condition::Any(items, pos) => run_group(items, false, "any", *pos, input, sink),
            Condition::Not(inner, pos) => {
                let mut child = sink.child();
                let result = !inner.run(input, &mut child);
                if S::EXPLAIN {
                    sink.step(Step {
                        condition: "not".to_owned(),
                        result,
                        found: Vec::new(),
                        reason: if result {
                            "the inner condition is false"
                        } else {
                            "the inner condition is true"
                        }
                        .to_owned(),
                        line: pos.line,
                        col: pos.col,
                        children: child.into_steps(),
                    });
                }
                result
            }
        }
    }
}

fn run_group<S: Sink>(
    items: &[Condition],
    all: bool,
    name: &str,
    pos: Pos,
    input: &Input<'_>,
    sink: &mut S,
) -> bool {
    let mut child = sink.child();
    let mut result = all;
    let mut deciding = None;
    for (i, c) in items.iter().enumerate() {
        let r = c.run(input, &mut child);
        if r != all {
            result = !all;
            deciding.get_or_insert(i);
            if !S::EXPLAIN {
                break;
            }
        }
    }
    if S::EXPLAIN {
        let reason = match (all, deciding) {
            (true, None) => format!("all {} hold", items.len()),
            (true, Some(i)) => format!("condition {} of {} is false", i + 1, items.len()),
            (false, Some(i)) => format!("condition {} of {} holds", i + 1, items.len()),
            (false, None) => format!("none of {} holds", items.len()),
        };
        sink.step(Step {
            condition: name.to_owned(),
            result,
            found: Vec::new(),
            reason,
            line: pos.line,
            col: pos.col,
            children: child.into_steps(),
        });
    }
    result
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}

fn zero_nodes_reason(path: &JsonPath, input: &Input<'_>) -> String {
    if input.payload.is_null() {
        return "selected 0 nodes (the payload is null)".to_owned();
    }
    if let Some(rest) = path.text.strip_prefix("$.payload")
        && (rest.is_empty() || rest.starts_with('.') || rest.starts_with('['))
    {
        let suggestion = format!("${rest}");
        return format!(
            "selected 0 nodes: JSONPath `{}` selected nothing (the payload is the root: did you mean `{suggestion}`?)",
            path.text
        );
    }
    "selected 0 nodes".to_owned()
}

fn show_values<'a>(values: impl Iterator<Item = &'a Value>) -> Vec<String> {
    values
        .take(TRACE_VALUES)
        .map(|v| truncate(&v.to_string()))
        .collect()
}

fn truncate(s: &str) -> String {
    match s.char_indices().nth(TRACE_VALUE_CHARS) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_owned(),
    }
}

fn run_test<S: Sink>(
    operand: &Operand,
    op: &Op,
    every: bool,
    pos: Pos,
    input: &Input<'_>,
    sink: &mut S,
) -> bool {
    // Header, query and method values are strings; they are wrapped once here
    // so every operator works on JSON values alike.
    let owned: Option<Value>;
    let nodes: Vec<&Value> = match operand {
        Operand::Path(p) => p.select(input.payload),
        Operand::Header(h) => {
            owned = input.header(h).map(|v| Value::String(v.to_owned()));
            owned.iter().collect()
        }
        Operand::Query(q) => {
            owned = input.query(q).map(|v| Value::String(v.to_owned()));
            owned.iter().collect()
        }
        Operand::Method => {
            owned = Some(Value::String(input.method.to_owned()));
            owned.iter().collect()
        }
    };

    let mut why = String::new();
    let result = if nodes.is_empty() {
        let r = matches!(op, Op::Exists(false) | Op::NotEquals(_) | Op::NotIn(_));
        if S::EXPLAIN {
            why = match operand {
                Operand::Path(p) => zero_nodes_reason(p, input),
                Operand::Header(h) => format!("header {h} is not present"),
                Operand::Query(q) => format!("query parameter {q} is not present"),
                Operand::Method => String::new(),
            };
        }
        r
    } else {
        match op {
            Op::Exists(want) => *want,
            Op::NotEquals(v) => !quantify(&nodes, every, |n| json_eq(n, v), &mut why, S::EXPLAIN),
            Op::NotIn(vs) => !quantify(
                &nodes,
                every,
                |n| vs.iter().any(|v| json_eq(n, v)),
                &mut why,
                S::EXPLAIN,
            ),
            _ => quantify(&nodes, every, |n| holds(op, n), &mut why, S::EXPLAIN),
        }
    };

    if S::EXPLAIN {
        let mut condition = format!("{} {} {}", operand.describe(), op.name(), op.argument());
        if every {
            condition.push_str(" (every)");
        }
        if why.is_empty() {
            why = explain_values(op, &nodes, result);
        }
        sink.step(Step {
            condition,
            result,
            found: show_values(nodes.iter().copied()),
            reason: why,
            line: pos.line,
            col: pos.col,
            children: Vec::new(),
        });
    }
    result
}

/// `any` (default) or `every` node satisfies `pred`.
fn quantify(
    nodes: &[&Value],
    every: bool,
    pred: impl Fn(&Value) -> bool,
    why: &mut String,
    explain: bool,
) -> bool {
    let result = if every {
        nodes.iter().all(|n| pred(n))
    } else {
        nodes.iter().any(|n| pred(n))
    };
    if explain && nodes.len() > 1 {
        let count = nodes.iter().filter(|n| pred(n)).count();
        let _ = write!(
            why,
            "{count} of {} selected nodes satisfy the operator",
            nodes.len()
        );
    }
    result
}

fn explain_values(op: &Op, nodes: &[&Value], result: bool) -> String {
    let Some(first) = nodes.first() else {
        return String::new();
    };
    if let Op::Cmp(_, want) = op
        && !same_kind(first, want)
    {
        return format!(
            "cannot order {} against {}: ordering needs two numbers or two strings",
            kind_name(first),
            kind_name(want)
        );
    }
    let textual = matches!(
        op,
        Op::Matches(_) | Op::Glob(..) | Op::StartsWith(_) | Op::EndsWith(_)
    );
    if textual && !first.is_string() {
        return format!("the value is {}, not a string", kind_name(first));
    }
    if result {
        "holds".to_owned()
    } else {
        "does not hold".to_owned()
    }
}

fn holds(op: &Op, n: &Value) -> bool {
    match op {
        Op::Equals(v) => json_eq(n, v),
        Op::In(vs) => vs.iter().any(|v| json_eq(n, v)),
        Op::Matches(re) => n.as_str().is_some_and(|s| re.is_match(s)),
        Op::Glob(_, g) => n.as_str().is_some_and(|s| g.is_match(s)),
        Op::Contains(v) => match (n, v) {
            (Value::String(s), Value::String(sub)) => s.contains(sub.as_str()),
            (Value::Array(items), v) => items.iter().any(|i| json_eq(i, v)),
            _ => false,
        },
        Op::StartsWith(p) => n.as_str().is_some_and(|s| s.starts_with(p.as_str())),
        Op::EndsWith(p) => n.as_str().is_some_and(|s| s.ends_with(p.as_str())),
        Op::Cmp(c, v) => match compare(n, v) {
            Some(ord) => match c {
                CmpOp::Gt => ord == Ordering::Greater,
                CmpOp::Gte => ord != Ordering::Less,
                CmpOp::Lt => ord == Ordering::Less,
                CmpOp::Lte => ord != Ordering::Greater,
            },
            None => false,
        },
        Op::Exists(want) => *want,
        Op::NotEquals(v) => !json_eq(n, v),
        Op::NotIn(vs) => !vs.iter().any(|v| json_eq(n, v)),
    }
}

/// JSON equality where numbers compare by value (`5 == 5.0`), never across types.
pub fn json_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => match (x.as_i64(), y.as_i64()) {
            (Some(i), Some(j)) => i == j,
            _ => match (x.as_u64(), y.as_u64()) {
                (Some(i), Some(j)) => i == j,
                _ => x.as_f64() == y.as_f64(),
            },
        },
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(a, b)| json_eq(a, b))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| json_eq(v, w)))
        }
        _ => a == b,
    }
}

fn compare(a: &Value, b: &Value) -> Option<Ordering> {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => match (x.as_i64(), y.as_i64()) {
            (Some(i), Some(j)) => Some(i.cmp(&j)),
            _ => x.as_f64()?.partial_cmp(&y.as_f64()?),
        },
        (Value::String(x), Value::String(y)) => Some(x.cmp(y)),
        _ => None,
    }
}

fn same_kind(a: &Value, b: &Value) -> bool {
    matches!(
        (a, b),
        (Value::Number(_), Value::Number(_)) | (Value::String(_), Value::String(_))
    )
}

fn kind_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

// ---------------------------------------------------------------------------
// Compilation from the rule-file tree.

const OPERANDS: [&str; 4] = ["path", "header", "query", "method"];
const OPERATORS: [&str; 15] = [
    "equals",
    "not_equals",
    "in",
    "not_in",
    "matches",
    "glob",
    "contains",
    "starts_with",
    "ends_with",
    "exists",
    "gt",
    "gte",
    "lt",
    "lte",
    "every",
];
const COMBINATORS: [&str; 3] = ["all", "any", "not"];

/// Compiles a `when` value: one condition or a list (all must hold).
/// Problems are pushed to `errors`; `None` when any was found.
pub fn compile(node: &Node, errors: &mut Vec<(Pos, String)>) -> Option<Condition> {
    let before = errors.len();
    let c = compile_one(node, errors);
    if errors.len() > before { None } else { c }
}

fn compile_one(node: &Node, errors: &mut Vec<(Pos, String)>) -> Option<Condition> {
    match &node.kind {
        Kind::Str(s) => match JsonPath::compile(s) {
            Ok(p) => Some(Condition::Selects(p, node.pos)),
            Err(e) => {
                errors.push((node.pos, e));
                None
            }
        },
        Kind::Seq(items) => {
            let list: Vec<_> = items
                .iter()
                .filter_map(|i| compile_one(i, errors))
                .collect();
            Some(Condition::All(list, node.pos))
        }
        Kind::Map(entries) => compile_map(node, entries, errors),
        _ => {
            errors.push((
                node.pos,
                format!(
                    "a condition must be a map, a list or a JSONPath string, found {}",
                    node.describe()
                ),
            ));
            None
        }
    }
}

fn compile_map(
    node: &Node,
    entries: &[(crate::rules::node::Key, Node)],
    errors: &mut Vec<(Pos, String)>,
) -> Option<Condition> {
    let start = errors.len();
    let mut operand: Option<(&str, &Node)> = None;
    let mut operator: Option<(&str, &Node)> = None;
    let mut combinator: Option<(&str, &Node)> = None;
    let mut every: Option<&Node> = None;

    for (key, value) in entries {
        let k = key.name.as_str();
        if k == "every" {
            every = Some(value);
        } else if OPERANDS.contains(&k) {
            if let Some((first, _)) = operand {
                errors.push((
                    key.pos,
                    format!("a condition takes one operand, found `{first}` and `{k}`"),
                ));
            }
            operand.get_or_insert((k, value));
        } else if OPERATORS.contains(&k) {
            if let Some((first, _)) = operator {
                errors.push((
                    key.pos,
                    format!("a condition takes one operator, found `{first}` and `{k}`"),
                ));
            }
            operator.get_or_insert((k, value));
        } else if COMBINATORS.contains(&k) {
            if let Some((first, _)) = combinator {
                errors.push((
                    key.pos,
                    format!("a condition takes one combinator, found `{first}` and `{k}`"),
                ));
            }
            combinator.get_or_insert((k, value));
        } else {
            errors.push((
                key.pos,
                format!(
                    "unknown key `{k}` in condition, expected an operand ({}), an operator ({}) or a combinator ({})",
                    OPERANDS.join(", "),
                    OPERATORS[..14].join(", "),
                    COMBINATORS.join(", ")
                ),
            ));
        }
    }

    if let Some((name, value)) = combinator {
        if operand.is_some() || operator.is_some() || every.is_some() {
            errors.push((
                node.pos,
                format!(
                    "`{name}` cannot be combined with an operand or operator in the same condition"
                ),
            ));
            return None;
        }
        return match name {
            "not" => compile_one(value, errors).map(|c| Condition::Not(Box::new(c), node.pos)),
            _ => {
                let Kind::Seq(items) = &value.kind else {
                    errors.push((
                        value.pos,
                        format!(
                            "`{name}` takes a list of conditions, found {}",
                            value.describe()
                        ),
                    ));
                    return None;
                };
                let list: Vec<_> = items
                    .iter()
                    .filter_map(|i| compile_one(i, errors))
                    .collect();
                Some(if name == "all" {
                    Condition::All(list, node.pos)
                } else {
                    Condition::Any(list, node.pos)
                })
            }
        };
    }

    let Some((operand_name, operand_node)) = operand else {
        if errors.len() == start {
            errors.push((
                node.pos,
                "a condition needs an operand: `path`, `header`, `query` or `method`".to_owned(),
            ));
        }
        return None;
    };
    let Some((op_name, op_node)) = operator else {
        if errors.len() == start {
            errors.push((
                node.pos,
                format!("the condition on `{operand_name}` needs an operator, e.g. `equals`"),
            ));
        }
        return None;
    };

    let operand = match (operand_name, &operand_node.kind) {
        ("path", Kind::Str(s)) => match JsonPath::compile(s) {
            Ok(p) => Operand::Path(p),
            Err(e) => {
                errors.push((operand_node.pos, e));
                return None;
            }
        },
        ("header", Kind::Str(s)) => Operand::Header(s.to_ascii_lowercase()),
        ("query", Kind::Str(s)) => Operand::Query(s.clone()),
        ("method", Kind::Bool(true)) => Operand::Method,
        ("method", _) => {
            errors.push((
                operand_node.pos,
                "`method` is written `method: true`".to_owned(),
            ));
            return None;
        }
        (name, _) => {
            errors.push((
                operand_node.pos,
                format!("`{name}` takes a string, found {}", operand_node.describe()),
            ));
            return None;
        }
    };
    let every = match every.map(|n| &n.kind) {
        None => false,
        Some(Kind::Bool(b)) => *b,
        Some(_) => {
            errors.push((
                every.map_or(node.pos, |n| n.pos),
                "`every` takes true or false".to_owned(),
            ));
            return None;
        }
    };
    if every && !matches!(operand, Operand::Path(_)) {
        errors.push((
            node.pos,
            "`every` applies to `path` operands only".to_owned(),
        ));
        return None;
    }

    let text = operand.is_text();
    let value = |n: &Node| -> Value {
        let v = n.to_json();
        // Header, query and method values are text: `equals: 5` means "5".
        match (text, v) {
            (true, Value::Number(n)) => Value::String(n.to_string()),
            (true, Value::Bool(b)) => Value::String(b.to_string()),
            (_, v) => v,
        }
    };
    let string = |errors: &mut Vec<(Pos, String)>| -> Option<String> {
        match &op_node.kind {
            Kind::Str(s) => Some(s.clone()),
            _ => {
                errors.push((
                    op_node.pos,
                    format!("`{op_name}` takes a string, found {}", op_node.describe()),
                ));
                None
            }
        }
    };
    let list = |errors: &mut Vec<(Pos, String)>| -> Option<Vec<Value>> {
        match &op_node.kind {
            Kind::Seq(items) => Some(items.iter().map(value).collect()),
            _ => {
                errors.push((
                    op_node.pos,
                    format!("`{op_name}` takes a list, found {}", op_node.describe()),
                ));
                None
            }
        }
    };
    let op = match op_name {
        "equals" => Op::Equals(value(op_node)),
        "not_equals" => Op::NotEquals(value(op_node)),
        "in" => Op::In(list(errors)?),
        "not_in" => Op::NotIn(list(errors)?),
        "contains" => Op::Contains(value(op_node)),
        "starts_with" => Op::StartsWith(string(errors)?),
        "ends_with" => Op::EndsWith(string(errors)?),
        "matches" => {
            let s = string(errors)?;
            match Regex::new(&s) {
                Ok(re) => Op::Matches(re),
                Err(e) => {
                    let msg = e.to_string();
                    let last = msg
                        .lines()
                        .rfind(|l| !l.trim().is_empty())
                        .unwrap_or("invalid")
                        .trim();
                    errors.push((
                        op_node.pos,
                        format!(
                            "invalid regex `{s}`: {}",
                            last.trim_start_matches("error: ")
                        ),
                    ));
                    return None;
                }
            }
        }
        "glob" => {
            let s = string(errors)?;
            match GlobBuilder::new(&s)
                .literal_separator(true)
                .backslash_escape(true)
                .build()
            {
                Ok(g) => Op::Glob(s, g.compile_matcher()),
                Err(e) => {
                    errors.push((op_node.pos, format!("invalid glob `{s}`: {}", e.kind())));
                    return None;
                }
            }
        }
        "exists" => match op_node.kind {
            Kind::Bool(b) => Op::Exists(b),
            _ => {
                errors.push((op_node.pos, "`exists` takes true or false".to_owned()));
                return None;
            }
        },
        "gt" | "gte" | "lt" | "lte" => {
            let v = value(op_node);
            if !(v.is_number() || v.is_string()) {
                errors.push((
                    op_node.pos,
                    format!(
                        "`{op_name}` takes a number or a string, found {}",
                        op_node.describe()
                    ),
                ));
                return None;
            }
            let c = match op_name {
                "gt" => CmpOp::Gt,
                "gte" => CmpOp::Gte,
                "lt" => CmpOp::Lt,
                _ => CmpOp::Lte,
            };
            Op::Cmp(c, v)
        }
        _ => return None,
    };
    Some(Condition::Test {
        operand,
        op,
        every,
        pos: node.pos,
    })
}

#[cfg(test)]
mod tests;
