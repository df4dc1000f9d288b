//! A compiled JSONPath query, with a direct walk for the plain paths most rules use.

use jsonpath_rust::parser::model::JpQuery;
use serde_json::Value;

/// A compiled JSONPath query with the text it was written as.
#[derive(Debug, Clone)]
pub struct JsonPath {
    pub text: String,
    pub(super) query: JpQuery,
    /// Set when the query is only names and indexes (`$.a.b[0]`, most
    /// conditions): then it is a walk down the payload that allocates nothing,
    /// instead of the general evaluator (which builds a path string per node).
    pub(super) direct: Option<Vec<Direct>>,
}

#[derive(Debug, Clone)]
pub(super) enum Direct {
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
