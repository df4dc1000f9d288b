//! The trace of a rule set against one event, as stored with it and shown by
//! the API, the dashboard and `hookwire test`: per rule whether it matched,
//! the [`Step`]s of its conditions, and what each action did.

use serde::{Deserialize, Serialize};

use super::Step;

/// The trace of one rule (SPEC §4.3).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RuleTrace {
    pub rule: String,
    pub matched: bool,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub disabled: bool,
    #[serde(default)]
    pub conditions: Vec<Step>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub actions: Vec<ActionTrace>,
    /// Not stored with the event but explained when it was read, against
    /// the rules of that moment (see `evaluate::explain_missing`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub explained_on_read: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ActionTrace {
    pub action: String,
    #[serde(rename = "type")]
    pub action_type: String,
    /// Whether a delivery was created (false when the action's own `when` is false).
    pub delivery: bool,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Step>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// For a step (SPEC §4.7): the actions it runs after. Its `when` is
    /// evaluated when they have succeeded, and recorded on its delivery.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub needs: Vec<String>,
    /// What else explains the action's line ("its `when` is evaluated…").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}
