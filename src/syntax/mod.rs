//! The positioned syntax of rule files: YAML, TOML and JSON read into one
//! [`node::Node`] tree where every key and value knows its line and column,
//! serde over that tree ([`de`]), the raw shapes of sources, rules and
//! actions as written ([`raw`]), the words of the condition language
//! ([`grammar`]) and the JSON Schema drawn from both ([`raw::schema`]).
//!
//! Nothing here compiles anything: `matching` and `template` compile their own
//! parts from these nodes, and `rules` compiles the whole set on top of them.
//!
//! Why a tree and a deserializer of our own rather than serde-saphyr (checked
//! at 2.2.0, 2026-12): its `Spanned<T>` gives the same 1-based positions for
//! YAML keys and values, but it reads YAML only (its `Spanned` has no position
//! under the TOML deserializer) and deserializes straight from text, so one
//! bad rule would hide the rest of its file and `${VAR}` could not be resolved
//! on a tree first. Its errors also lose what ours report: the value found in
//! a type error, the first line of a duplicate key; and it reads YAML 1.1
//! scalars by default (`yes` becomes `true`, which changes a shipped example).

pub mod de;
pub mod grammar;
pub mod node;
pub mod raw;
