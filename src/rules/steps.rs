//! Steps (SPEC §4.7): the `needs` of a rule's actions, checked at load as a
//! graph, and the questions later layers ask of it (what runs after what,
//! which outputs a step may read).

use std::collections::HashMap;

use super::compile::{Action, Rule};
use crate::syntax::de::Spanned;
use crate::syntax::node::{Kind, Node, Pos};
use crate::template::Template;

/// `needs:` as written: one name or a list of names, each with its position.
pub(super) fn parse_needs(node: &Node, errors: &mut Vec<(Pos, String)>) -> Vec<Spanned<String>> {
    let one = |n: &Node, errors: &mut Vec<(Pos, String)>| match &n.kind {
        Kind::Str(s) => Some(Spanned {
            pos: n.pos,
            value: s.clone(),
        }),
        _ => {
            errors.push((
                n.pos,
                format!("`needs` names actions of this rule, found {}", n.describe()),
            ));
            None
        }
    };
    let mut out: Vec<Spanned<String>> = match &node.kind {
        Kind::Seq(items) => items.iter().filter_map(|i| one(i, errors)).collect(),
        _ => one(node, errors).into_iter().collect(),
    };
    // A name listed twice is one need.
    let mut seen = std::collections::HashSet::new();
    out.retain(|n| seen.insert(n.value.clone()));
    out
}

/// Checks the steps of one rule: every need names an action of the rule,
/// no chain of needs comes back to where it started, and each step reads
/// only the outputs of actions it runs after. `needs[i]` are the needs of
/// `actions[i]` as written, `nodes[i]` its rule-file node.
pub(super) fn check(
    rule: &str,
    actions: &[Action],
    needs: &[Vec<Spanned<String>>],
    nodes: &[&Node],
    errors: &mut Vec<(Pos, String)>,
) {
    let index: HashMap<&str, usize> = actions
        .iter()
        .enumerate()
        .map(|(i, a)| (a.name.as_str(), i))
        .collect();
    let mut known = true;
    for list in needs {
        for n in list {
            if !index.contains_key(n.as_str()) {
                known = false;
                let names: Vec<&str> = actions.iter().map(|a| a.name.as_str()).collect();
                errors.push((
                    n.pos,
                    format!(
                        "`needs` names `{}`, which is not an action of rule `{rule}` (its actions: {})",
                        n.value,
                        names.join(", ")
                    ),
                ));
            }
        }
    }
    if !known {
        return;
    }
    if let Some((pos, cycle)) = find_cycle(actions, needs, &index) {
        errors.push((pos, format!("`needs` makes a cycle: {}", cycle.join(" → "))));
        return;
    }
    for (i, action) in actions.iter().enumerate() {
        let before = closure(actions, i);
        let allowed = |name: &str| before.contains(&name);
        let mut refs: Vec<(String, Pos)> = action
            .when
            .as_ref()
            .map(|w| w.step_refs())
            .unwrap_or_default();
        if let Some(node) = nodes.get(i) {
            template_step_refs(node, &mut refs);
        }
        for (name, pos) in refs {
            if allowed(&name) {
                continue;
            }
            let what = if index.contains_key(name.as_str()) {
                format!("`{name}` is not among the needs of `{}`", action.name)
            } else {
                format!("`{name}` is not an action of rule `{rule}`")
            };
            errors.push((
                pos,
                format!(
                    "`steps.{name}` / `step: {name}` reads an output this action cannot have: {what} (add it to `needs`)"
                ),
            ));
        }
    }
}

/// The first cycle met walking the actions in order, with the position of
/// the `needs` entry that closes it and the names around it.
fn find_cycle(
    actions: &[Action],
    needs: &[Vec<Spanned<String>>],
    index: &HashMap<&str, usize>,
) -> Option<(Pos, Vec<String>)> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        New,
        OnPath,
        Done,
    }
    fn visit(
        i: usize,
        needs: &[Vec<Spanned<String>>],
        index: &HashMap<&str, usize>,
        marks: &mut [Mark],
        path: &mut Vec<usize>,
        actions: &[Action],
    ) -> Option<(Pos, Vec<String>)> {
        marks[i] = Mark::OnPath;
        path.push(i);
        for n in needs.get(i).into_iter().flatten() {
            let Some(&j) = index.get(n.as_str()) else {
                continue;
            };
            match marks[j] {
                Mark::OnPath => {
                    let from = path.iter().position(|&p| p == j).unwrap_or(0);
                    let mut names: Vec<String> = path[from..]
                        .iter()
                        .map(|&p| actions[p].name.clone())
                        .collect();
                    names.push(actions[j].name.clone());
                    return Some((n.pos, names));
                }
                Mark::New => {
                    if let Some(found) = visit(j, needs, index, marks, path, actions) {
                        return Some(found);
                    }
                }
                Mark::Done => {}
            }
        }
        path.pop();
        marks[i] = Mark::Done;
        None
    }
    let mut marks = vec![Mark::New; actions.len()];
    for i in 0..actions.len() {
        if marks[i] == Mark::New {
            let mut path = Vec::new();
            if let Some(found) = visit(i, needs, index, &mut marks, &mut path, actions) {
                return Some(found);
            }
        }
    }
    None
}

/// Every action `actions[i]` runs after, directly or through its needs.
fn closure(actions: &[Action], i: usize) -> Vec<&str> {
    let mut out: Vec<&str> = Vec::new();
    let mut todo: Vec<&str> = actions[i].needs.iter().map(String::as_str).collect();
    while let Some(n) = todo.pop() {
        if out.contains(&n) {
            continue;
        }
        out.push(n);
        if let Some(a) = actions.iter().find(|a| a.name == n) {
            todo.extend(a.needs.iter().map(String::as_str));
        }
    }
    out
}

/// Marks the actions some step needs, and answers the order to plan and
/// run them in: each after the actions it needs (an action runs after
/// strictly more actions than any of its needs). Called once per rule at
/// load, so that requests and attempts only read the result.
pub(super) fn order(actions: &mut [Action]) -> Vec<usize> {
    let needed: Vec<bool> = actions
        .iter()
        .map(|a| actions.iter().any(|o| o.needs.contains(&a.name)))
        .collect();
    for (a, n) in actions.iter_mut().zip(needed) {
        a.needed = n;
    }
    let mut order: Vec<usize> = (0..actions.len()).collect();
    if actions.iter().any(|a| !a.needs.is_empty()) {
        order.sort_by_key(|&i| closure(actions, i).len());
    }
    order
}

/// The `steps.<name>` references of every template string under `node`
/// (its `when` holds conditions, not templates).
fn template_step_refs(node: &Node, out: &mut Vec<(String, Pos)>) {
    match &node.kind {
        Kind::Str(s) if s.contains("steps") && s.contains("{{") => {
            if let Ok(t) = Template::compile(s) {
                out.extend(t.step_refs().into_iter().map(|n| (n, node.pos)));
            }
        }
        Kind::Seq(items) => items.iter().for_each(|i| template_step_refs(i, out)),
        Kind::Map(entries) => {
            for (k, v) in entries {
                if k.name != "when" {
                    template_step_refs(v, out);
                }
            }
        }
        _ => {}
    }
}

impl Rule {
    /// The action of this rule named `name`.
    pub fn action(&self, name: &str) -> Option<&Action> {
        self.actions.iter().find(|a| a.name == name)
    }

    /// Whether some step of this rule needs `action` (its output is then
    /// kept with its successful attempt).
    pub fn has_dependents(&self, action: &str) -> bool {
        self.action(action).is_some_and(|a| a.needed)
    }

    /// The actions, each after the ones it needs (see [`Rule::order`]).
    pub fn ordered_actions(&self) -> impl Iterator<Item = &Action> {
        self.order.iter().filter_map(|&i| self.actions.get(i))
    }

    /// Whether any action of this rule is a step.
    pub fn has_steps(&self) -> bool {
        self.actions.iter().any(|a| !a.needs.is_empty())
    }

    /// The actions `action` runs after, directly or through its needs:
    /// the outputs it may read.
    pub fn runs_after(&self, action: &str) -> Vec<&str> {
        match self.actions.iter().position(|a| a.name == action) {
            Some(i) => closure(&self.actions, i),
            None => Vec::new(),
        }
    }

    /// The step graph, one line per action, for `hookwire check -v`:
    /// `announce ← crm (delay 2s)`.
    pub fn step_graph(&self) -> Vec<String> {
        if self.actions.iter().all(|a| a.needs.is_empty()) {
            return Vec::new();
        }
        self.actions
            .iter()
            .map(|a| {
                let mut line = a.name.clone();
                if !a.needs.is_empty() {
                    line.push_str(" ← ");
                    line.push_str(&a.needs.join(", "));
                }
                if let Some(d) = a.delay {
                    line.push_str(&format!(" (delay {})", humantime::format_duration(d)));
                }
                line
            })
            .collect()
    }
}
