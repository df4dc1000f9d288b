//! A rule file as a tree of positioned values, whatever its format.
//!
//! YAML, TOML and JSON are parsed into the same [`Node`] tree, in which every
//! value and every map key knows its line and column. Everything after this
//! point (`${VAR}` resolution, schema checks, compilation) works on the tree
//! and can therefore report `FILE:LINE:COL` for any problem in any format.

use std::fmt;

use saphyr_parser::{Event, Parser, ScalarStyle, Span};

/// A 1-based line and column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default, serde::Serialize)]
pub struct Pos {
    pub line: u32,
    pub col: u32,
}

impl fmt::Display for Pos {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.line, self.col)
    }
}

/// A positioned value.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    pub pos: Pos,
    pub kind: Kind,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Kind {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Seq(Vec<Node>),
    /// Keys in file order; duplicates are rejected while parsing.
    Map(Vec<(Key, Node)>),
}

/// A map key with its own position (for "unknown field" errors).
#[derive(Debug, Clone, PartialEq)]
pub struct Key {
    pub pos: Pos,
    pub name: String,
}

impl Node {
    pub fn new(pos: Pos, kind: Kind) -> Self {
        Self { pos, kind }
    }

    pub fn as_str(&self) -> Option<&str> {
        match &self.kind {
            Kind::Str(s) => Some(s),
            _ => None,
        }
    }

    /// The value of `key` in a map node.
    pub fn get(&self, key: &str) -> Option<&Node> {
        match &self.kind {
            Kind::Map(entries) => entries.iter().find(|(k, _)| k.name == key).map(|(_, v)| v),
            _ => None,
        }
    }

    /// What kind of value this is, for error messages.
    pub fn describe(&self) -> &'static str {
        match self.kind {
            Kind::Null => "null",
            Kind::Bool(_) => "a boolean",
            Kind::Int(_) | Kind::Float(_) => "a number",
            Kind::Str(_) => "a string",
            Kind::Seq(_) => "a list",
            Kind::Map(_) => "a map",
        }
    }

    /// The same value as JSON (positions dropped).
    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::Value;
        match &self.kind {
            Kind::Null => Value::Null,
            Kind::Bool(b) => Value::Bool(*b),
            Kind::Int(i) => Value::from(*i),
            Kind::Float(f) => serde_json::Number::from_f64(*f).map_or(Value::Null, Value::Number),
            Kind::Str(s) => Value::String(s.clone()),
            Kind::Seq(items) => Value::Array(items.iter().map(Node::to_json).collect()),
            Kind::Map(entries) => Value::Object(
                entries
                    .iter()
                    .map(|(k, v)| (k.name.clone(), v.to_json()))
                    .collect(),
            ),
        }
    }
}

/// A syntax error of a rule file.
#[derive(Debug, Clone, PartialEq)]
pub struct SyntaxError {
    pub pos: Pos,
    pub message: String,
}

/// The file formats rule files may be written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Yaml,
    Toml,
    Json,
}

impl Format {
    /// The format of a file by its extension; `None` for files that are not rule files.
    pub fn of(path: &std::path::Path) -> Option<Format> {
        match path.extension()?.to_str()? {
            "yaml" | "yml" => Some(Format::Yaml),
            "toml" => Some(Format::Toml),
            "json" => Some(Format::Json),
            _ => None,
        }
    }
}

/// Parses a whole file. An empty file is an empty map.
pub fn parse(format: Format, text: &str) -> Result<Node, SyntaxError> {
    match format {
        Format::Yaml => parse_yaml(text),
        Format::Toml => parse_toml(text),
        Format::Json => parse_json(text),
    }
}

/// Limits what YAML aliases may expand to, so a "billion laughs" file is an
/// error instead of an out-of-memory kill.
const MAX_NODES: usize = 200_000;
/// Nesting deeper than any real rule file; keeps recursion bounded.
const MAX_DEPTH: usize = 64;

fn pos_of(span: &Span) -> Pos {
    let m = span.start;
    Pos {
        line: saturate(m.line()),
        col: saturate(m.col() + 1),
    }
}

fn saturate(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

enum Frame {
    Seq(Pos, Vec<Node>, Option<usize>),
    Map(Pos, Vec<(Key, Node)>, Option<Key>, Option<usize>),
}

pub fn parse_yaml(text: &str) -> Result<Node, SyntaxError> {
    let mut parser = Parser::new_from_str(text);
    let mut stack: Vec<Frame> = Vec::new();
    let mut anchors: std::collections::HashMap<usize, Node> = std::collections::HashMap::new();
    let mut root: Option<Node> = None;
    let mut documents = 0;
    let mut count = 0usize;

    while let Some(item) = parser.next_event() {
        let (event, span) = item.map_err(|e| SyntaxError {
            pos: Pos {
                line: saturate(e.marker().line()),
                col: saturate(e.marker().col() + 1),
            },
            message: e.info().to_owned(),
        })?;
        let pos = pos_of(&span);
        let (node, anchor) = match event {
            Event::DocumentStart(_) => {
                documents += 1;
                if documents > 1 {
                    return Err(SyntaxError {
                        pos,
                        message: "a rule file holds one YAML document; found a second `---`".into(),
                    });
                }
                continue;
            }
            Event::SequenceStart(anchor, _) => {
                if stack.len() >= MAX_DEPTH {
                    return Err(SyntaxError {
                        pos,
                        message: format!("nested deeper than {MAX_DEPTH} levels"),
                    });
                }
                stack.push(Frame::Seq(pos, Vec::new(), nonzero(anchor)));
                continue;
            }
            Event::MappingStart(anchor, _) => {
                if stack.len() >= MAX_DEPTH {
                    return Err(SyntaxError {
                        pos,
                        message: format!("nested deeper than {MAX_DEPTH} levels"),
                    });
                }
                stack.push(Frame::Map(pos, Vec::new(), None, nonzero(anchor)));
                continue;
            }
            Event::SequenceEnd => match stack.pop() {
                Some(Frame::Seq(p, items, anchor)) => (Node::new(p, Kind::Seq(items)), anchor),
                _ => {
                    return Err(SyntaxError {
                        pos,
                        message: "unbalanced sequence".into(),
                    });
                }
            },
            Event::MappingEnd => match stack.pop() {
                Some(Frame::Map(p, entries, _, anchor)) => {
                    (Node::new(p, Kind::Map(entries)), anchor)
                }
                _ => {
                    return Err(SyntaxError {
                        pos,
                        message: "unbalanced mapping".into(),
                    });
                }
            },
            Event::Scalar(value, style, anchor, tag) => {
                let tagged_str = tag.as_ref().is_some_and(|t| t.suffix == "str");
                let kind = if style == ScalarStyle::Plain && !tagged_str {
                    resolve_plain(&value)
                } else {
                    Kind::Str(value.into_owned())
                };
                (Node::new(pos, kind), nonzero(anchor))
            }
            Event::Alias(id) => match anchors.get(&id) {
                Some(n) => {
                    let mut n = n.clone();
                    n.pos = pos;
                    count += count_nodes(&n);
                    (n, None)
                }
                None => {
                    return Err(SyntaxError {
                        pos,
                        message: "unknown alias".into(),
                    });
                }
            },
            Event::StreamStart | Event::StreamEnd | Event::DocumentEnd | Event::Nothing => continue,
        };
        count += 1;
        if count > MAX_NODES {
            return Err(SyntaxError {
                pos,
                message: format!("more than {MAX_NODES} values (aliases expand too far)"),
            });
        }
        if let Some(a) = anchor {
            anchors.insert(a, node.clone());
        }
        push_value(&mut stack, &mut root, node)?;
    }
    Ok(root.unwrap_or_else(|| Node::new(Pos { line: 1, col: 1 }, Kind::Map(Vec::new()))))
}

fn nonzero(anchor: usize) -> Option<usize> {
    (anchor != 0).then_some(anchor)
}

fn count_nodes(n: &Node) -> usize {
    1 + match &n.kind {
        Kind::Seq(items) => items.iter().map(count_nodes).sum(),
        Kind::Map(entries) => entries.iter().map(|(_, v)| count_nodes(v)).sum(),
        _ => 0,
    }
}

fn push_value(stack: &mut [Frame], root: &mut Option<Node>, node: Node) -> Result<(), SyntaxError> {
    match stack.last_mut() {
        None => *root = Some(node),
        Some(Frame::Seq(_, items, _)) => items.push(node),
        Some(Frame::Map(_, entries, pending, _)) => match pending.take() {
            None => {
                let name = match &node.kind {
                    Kind::Str(s) => s.clone(),
                    Kind::Int(i) => i.to_string(),
                    Kind::Bool(b) => b.to_string(),
                    Kind::Float(f) => f.to_string(),
                    Kind::Null => "null".to_owned(),
                    Kind::Seq(_) | Kind::Map(_) => {
                        return Err(SyntaxError {
                            pos: node.pos,
                            message: "a map key must be a plain value".into(),
                        });
                    }
                };
                if let Some((first, _)) = entries.iter().find(|(k, _)| k.name == name) {
                    return Err(SyntaxError {
                        pos: node.pos,
                        message: format!(
                            "duplicate key `{name}` (first at line {})",
                            first.pos.line
                        ),
                    });
                }
                *pending = Some(Key {
                    pos: node.pos,
                    name,
                });
            }
            Some(key) => entries.push((key, node)),
        },
    }
    Ok(())
}

/// YAML 1.2 core schema resolution of a plain scalar.
fn resolve_plain(s: &str) -> Kind {
    match s {
        "" | "~" | "null" | "Null" | "NULL" => return Kind::Null,
        "true" | "True" | "TRUE" => return Kind::Bool(true),
        "false" | "False" | "FALSE" => return Kind::Bool(false),
        ".inf" | ".Inf" | ".INF" | "+.inf" | "+.Inf" | "+.INF" => {
            return Kind::Float(f64::INFINITY);
        }
        "-.inf" | "-.Inf" | "-.INF" => return Kind::Float(f64::NEG_INFINITY),
        ".nan" | ".NaN" | ".NAN" => return Kind::Float(f64::NAN),
        _ => {}
    }
    let t = s;
    let digits = t.strip_prefix(['-', '+']).unwrap_or(t);
    if !digits.is_empty()
        && digits.bytes().all(|b| b.is_ascii_digit())
        && let Ok(i) = t.parse::<i64>()
    {
        return Kind::Int(i);
    }
    if let Some(hex) = t.strip_prefix("0x")
        && let Ok(i) = i64::from_str_radix(hex, 16)
    {
        return Kind::Int(i);
    }
    if let Some(oct) = t.strip_prefix("0o")
        && let Ok(i) = i64::from_str_radix(oct, 8)
    {
        return Kind::Int(i);
    }
    let looks_numeric = digits
        .bytes()
        .next()
        .is_some_and(|b| b.is_ascii_digit() || b == b'.')
        && digits
            .bytes()
            .all(|b| b.is_ascii_digit() || matches!(b, b'.' | b'e' | b'E' | b'-' | b'+'));
    if looks_numeric && let Ok(f) = t.parse::<f64>() {
        return Kind::Float(f);
    }
    Kind::Str(s.to_string())
}

/// JSON is checked by serde_json first (so its syntax errors read as JSON
/// errors), then read by the YAML parser, of which JSON is a subset, to get
/// positions. Tabs are legal JSON whitespace but not YAML indentation; outside
/// strings they are only whitespace, and inside strings JSON forbids raw tabs,
/// so each may be replaced by a space without moving any column.
pub fn parse_json(text: &str) -> Result<Node, SyntaxError> {
    if let Err(e) = serde_json::from_str::<serde::de::IgnoredAny>(text) {
        let message = e.to_string();
        let message = message
            .split(" at line ")
            .next()
            .unwrap_or(&message)
            .to_owned();
        return Err(SyntaxError {
            pos: Pos {
                line: saturate(e.line()),
                col: saturate(e.column()),
            },
            message,
        });
    }
    if text.contains('\t') {
        parse_yaml(&text.replace('\t', " "))
    } else {
        parse_yaml(text)
    }
}

/// Byte offset → line/column, for formats that report offsets.
struct LineIndex<'a> {
    text: &'a str,
    starts: Vec<usize>,
}

impl<'a> LineIndex<'a> {
    fn new(text: &'a str) -> Self {
        let mut starts = vec![0];
        starts.extend(text.match_indices('\n').map(|(i, _)| i + 1));
        Self { text, starts }
    }

    fn pos(&self, offset: usize) -> Pos {
        let line = self.starts.partition_point(|&s| s <= offset).max(1);
        let start = self.starts[line - 1];
        let end = offset.min(self.text.len());
        let col = self
            .text
            .get(start..end)
            .map_or(1, |s| s.chars().count() + 1);
        Pos {
            line: saturate(line),
            col: saturate(col),
        }
    }
}

pub fn parse_toml(text: &str) -> Result<Node, SyntaxError> {
    let index = LineIndex::new(text);
    let table = toml::de::DeTable::parse(text).map_err(|e| SyntaxError {
        pos: index.pos(e.span().map_or(0, |s| s.start)),
        message: e.message().trim().to_owned(),
    })?;
    let span = table.span();
    Ok(toml_table(
        &index,
        table.into_inner(),
        index.pos(span.start),
    ))
}

fn toml_table(index: &LineIndex<'_>, table: toml::de::DeTable<'_>, pos: Pos) -> Node {
    let entries = table
        .into_iter()
        .map(|(k, v)| {
            let key = Key {
                pos: index.pos(k.span().start),
                name: k.into_inner().into_owned(),
            };
            (key, toml_value(index, v))
        })
        .collect();
    Node::new(pos, Kind::Map(entries))
}

fn toml_value(index: &LineIndex<'_>, v: toml::Spanned<toml::de::DeValue<'_>>) -> Node {
    use toml::de::DeValue;
    let pos = index.pos(v.span().start);
    let kind = match v.into_inner() {
        DeValue::String(s) => Kind::Str(s.into_owned()),
        DeValue::Integer(i) => {
            let digits = i.as_str().replace('_', "");
            let digits = digits
                .trim_start_matches("0x")
                .trim_start_matches("0o")
                .trim_start_matches("0b");
            match i64::from_str_radix(digits, i.radix()) {
                Ok(n) => Kind::Int(n),
                Err(_) => Kind::Str(i.as_str().to_owned()),
            }
        }
        DeValue::Float(f) => {
            let text = f.as_str().replace('_', "");
            Kind::Float(text.parse().unwrap_or(f64::NAN))
        }
        DeValue::Boolean(b) => Kind::Bool(b),
        DeValue::Datetime(d) => Kind::Str(d.to_string()),
        DeValue::Array(items) => {
            Kind::Seq(items.into_iter().map(|i| toml_value(index, i)).collect())
        }
        DeValue::Table(t) => return toml_table(index, t, pos),
    };
    Node::new(pos, kind)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(line: u32, col: u32) -> Pos {
        Pos { line, col }
    }

    #[test]
    fn yaml_values_keep_positions_and_types() {
        let n = parse_yaml("a: 5\nb:\n  - \"5\"\n  - 5.0\n  - true\n  - ~\n").unwrap();
        let Kind::Map(entries) = &n.kind else {
            panic!("map")
        };
        assert_eq!(
            entries[0].0,
            Key {
                pos: p(1, 1),
                name: "a".into()
            }
        );
        assert_eq!(entries[0].1, Node::new(p(1, 4), Kind::Int(5)));
        let Kind::Seq(items) = &entries[1].1.kind else {
            panic!("seq")
        };
        assert_eq!(items[0], Node::new(p(3, 5), Kind::Str("5".into())));
        assert_eq!(items[1].kind, Kind::Float(5.0));
        assert_eq!(items[2].kind, Kind::Bool(true));
        assert_eq!(items[3].kind, Kind::Null);
    }

    #[test]
    fn yaml_syntax_errors_and_duplicates_have_positions() {
        let e = parse_yaml("a: [1, 2\nb: 3\n").unwrap_err();
        assert!(e.pos.line >= 1, "{e:?}");
        let e = parse_yaml("a: 1\nb: 2\na: 3\n").unwrap_err();
        assert_eq!(
            e,
            SyntaxError {
                pos: p(3, 1),
                message: "duplicate key `a` (first at line 1)".into()
            }
        );
    }

    #[test]
    fn yaml_aliases_expand_but_not_without_bound() {
        let n = parse_yaml("a: &x {k: 1}\nb: *x\n").unwrap();
        assert_eq!(
            n.get("b").and_then(|b| b.get("k")).map(|k| &k.kind),
            Some(&Kind::Int(1))
        );
        let mut bomb = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 1..8 {
            bomb.push_str(&format!("a{i}: &a{i} [*a{j}, *a{j}, *a{j}, *a{j}, *a{j}, *a{j}, *a{j}, *a{j}, *a{j}, *a{j}]\n", j = i - 1));
        }
        assert!(
            parse_yaml(&bomb)
                .unwrap_err()
                .message
                .contains("aliases expand too far")
        );
    }

    #[test]
    fn json_and_toml_give_the_same_tree_with_positions() {
        let j = parse_json("{\n\t\"a\": 5,\n\t\"b\": [\"x\"]\n}").unwrap();
        let t = parse_toml("a = 5\nb = [\"x\"]\n").unwrap();
        assert_eq!(j.to_json(), t.to_json());
        assert_eq!(j.get("a").unwrap().pos, p(2, 7));
        assert_eq!(t.get("b").unwrap().pos, p(2, 5));
        let e = parse_json("{\"a\": }").unwrap_err();
        assert_eq!(e.pos, p(1, 7));
        assert_eq!(e.message, "expected value");
        let e = parse_toml("a = \n").unwrap_err();
        assert_eq!(e.pos.line, 1);
    }
}
