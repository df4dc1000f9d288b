//! The positioned syntax of rule files: YAML, TOML and JSON read into one
//! [`node::Node`] tree where every key and value knows its line and column,
//! serde over that tree ([`de`]), and the raw shapes of sources, rules and
//! actions as written ([`raw`]).
//!
//! Nothing here compiles anything: `matching` and `template` compile their own
//! parts from these nodes, and `rules` compiles the whole set on top of them.

pub mod de;
pub mod node;
pub mod raw;
