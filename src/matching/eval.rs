//! Evaluating a compiled condition: `eval` (fast, records nothing) and
//! `explain` (every branch, with the trace steps that decided it).

use std::cmp::Ordering;
use std::fmt::Write as _;

use serde_json::Value;

use super::*;
use crate::syntax::node::Pos;

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
pub(super) const TRACE_VALUE_CHARS: usize = 120;

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
        Operand::Step { name, path, .. } => input
            .steps
            .and_then(|s| s.get(name))
            .map(|output| path.select(output))
            .unwrap_or_default(),
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
                Operand::Step { name, path, .. } => match input.steps.and_then(|s| s.get(name)) {
                    None => format!("step {name} has no output (it has not succeeded)"),
                    Some(_) => format!(
                        "selected 0 nodes: JSONPath `{}` selected nothing in the output of {name}",
                        path.text
                    ),
                },
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
