//! Compiling a `when` from the rule-file tree into a [`Condition`]: every
//! problem with its position, nothing left to fail at request time.

use globset::GlobBuilder;
use regex::Regex;
use serde_json::Value;

use super::*;
use crate::syntax::grammar::{self, COMBINATORS, EVERY, OPERANDS, OPERATORS};
use crate::syntax::node::{Kind, Node, Pos};

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
    entries: &[(crate::syntax::node::Key, Node)],
    errors: &mut Vec<(Pos, String)>,
) -> Option<Condition> {
    let start = errors.len();
    let mut operand: Option<(&str, &Node)> = None;
    let mut operator: Option<(&str, &Node)> = None;
    let mut combinator: Option<(&str, &Node)> = None;
    let mut every: Option<&Node> = None;
    let mut step_path: Option<&Node> = None;

    for (key, value) in entries {
        let k = key.name.as_str();
        if k == EVERY.name {
            every = Some(value);
        } else if k == "path" && entries.iter().any(|(o, _)| o.name == "step") {
            // `step: NAME` reads its output at `path` (default `$`).
            step_path = Some(value);
        } else if grammar::is(&OPERANDS, k) {
            if let Some((first, _)) = operand {
                errors.push((
                    key.pos,
                    format!("a condition takes one operand, found `{first}` and `{k}`"),
                ));
            }
            operand.get_or_insert((k, value));
        } else if grammar::is(&OPERATORS, k) {
            if let Some((first, _)) = operator {
                errors.push((
                    key.pos,
                    format!("a condition takes one operator, found `{first}` and `{k}`"),
                ));
            }
            operator.get_or_insert((k, value));
        } else if grammar::is(&COMBINATORS, k) {
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
                    grammar::names(&OPERANDS),
                    grammar::names(&OPERATORS),
                    grammar::names(&COMBINATORS)
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
                "a condition needs an operand: `path`, `header`, `query`, `method` or `step`"
                    .to_owned(),
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
        ("step", Kind::Str(s)) => {
            let text = match step_path.map(|n| (&n.kind, n.pos)) {
                None => "$",
                Some((Kind::Str(p), _)) => p.as_str(),
                Some((_, pos)) => {
                    errors.push((pos, "`path` takes a JSONPath string".to_owned()));
                    return None;
                }
            };
            match JsonPath::compile(text) {
                Ok(path) => Operand::Step {
                    name: s.clone(),
                    path,
                    pos: operand_node.pos,
                },
                Err(e) => {
                    errors.push((step_path.map_or(operand_node.pos, |n| n.pos), e));
                    return None;
                }
            }
        }
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
    if every && !matches!(operand, Operand::Path(_) | Operand::Step { .. }) {
        errors.push((
            node.pos,
            "`every` applies to `path` and `step` operands only".to_owned(),
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
