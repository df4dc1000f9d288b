//! hookwire: a webhook daemon.
//!
//! ```text
//! HTTP request
//!   → ingest::        source (which endpoint) → guard (method, size, IP, rate)
//!                     → verify (signature) → decode (JSON, form, XML, multipart)
//!   → matching::      every enabled rule of the source, with a trace
//!   → store::         event + one pending delivery per matched action, one durable transaction
//!   → respond         202, or the matched rule's own response
//!
//! watch::    rules/ changed → rules:: parse and compile every file → swap the set atomically
//! actions::  render an action's templates from the current rule set
//! admin::    /healthz, /readyz, /api/rules
//! ```
//!
//! | module | owns |
//! |---|---|
//! | [`config`] | durations, sizes and other values shared by flags and rule files |
//! | [`rules`] | reading rule files with positions, `${VAR}`, validation, compilation into a [`rules::RuleSet`] |
//! | [`matching`] | compiled conditions: `eval`, `explain` and the trace |
//! | [`template`] | handlebars templates, helpers and typed JSON bodies |
//! | [`ingest`] | the HTTP path from request to stored event, and every answer of SPEC §5 |
//! | [`store`] | the durable store behind one async trait; SQLite with group commit |
//! | [`actions`] | rendering actions for delivery and for `hookwire test` |
//! | [`watch`] | the live rule set and hot reload |
//! | [`admin`] | health checks and the admin API |
//! | [`server`] | the listener, connection limits and shutdown |
//! | [`cli`] | `check` and `test` |

#![forbid(unsafe_code)]
// Nothing from a request, a file or the network may panic: no unwrap/expect
// outside tests (a surviving one would need an allow with its invariant).
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

pub mod actions;
pub mod admin;
pub mod cli;
pub mod config;
pub mod dispatch;
pub mod ids;
pub mod ingest;
pub mod matching;
pub mod redact;
pub mod rules;
pub mod server;
pub mod store;
pub mod supervise;
pub mod telemetry;
pub mod template;
pub mod watch;
