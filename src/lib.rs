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
//! dispatch:: due delivery → actions:: render from the current rule set and run → record the attempt
//! watch::    rules/ changed → rules:: parse and compile every file → swap the set atomically
//! admin::    /healthz, /readyz, the admin API, the live stream, the dashboard
//! ```
//!
//! Modules in layers, from the ground up; each may use only those listed
//! above it (`tests/it/layers.rs` holds the crate to that, and the README's
//! "Architecture" section draws it).
//!
//! | module | owns |
//! |---|---|
//! | **ground** | |
//! | [`config`] | durations, sizes and other values shared by flags and rule files |
//! | [`ids`] | prefixed, time-sortable ids (`evt_…`, `dlv_…`, `att_…`) |
//! | [`clock`] | the time now, and stored times in RFC 3339 |
//! | [`request`] | the facts one request carries: method, path, headers, query, body, payload |
//! | [`redact`] | masking every secret in every output: logs, stored attempts, API answers, CLI |
//! | [`bus`] | the live event bus: new events and delivery changes, for `/api/stream` |
//! | [`telemetry`] | the log writer and each occurrence's log line and metrics |
//! | [`supervise`] | background tasks restarted after a panic, and their health |
//! | **reading a request and a rule file** | |
//! | [`verify`] | each signature scheme of SPEC §4.1, and signing as the providers sign |
//! | [`decode`] | a verified body as the JSON payload: JSON, form, XML and multipart (SPEC §4.4 `payload`) |
//! | [`syntax`] | rule files as positioned trees, serde over them, the raw rule-file shapes |
//! | **compiled rules** | |
//! | [`matching`] | conditions compiled from the tree: `eval`, `explain` and the trace |
//! | [`template`] | handlebars templates, helpers, typed JSON bodies and the template context |
//! | [`rules`] | loading a rule directory into one [`rules::RuleSet`]: `${VAR}`, validation, compilation |
//! | [`watch`] | the live rule set and hot reload |
//! | **state and decisions** | |
//! | [`store`] | the durable store behind one async trait; SQLite with group commit |
//! | [`evaluate`] | a rule set against one request: which rules fire, the trace, the deliveries it plans |
//! | **the pipeline** | |
//! | [`actions`] | rendering http, email and command actions and running one once |
//! | [`dispatch`] | claiming due deliveries, running attempts, the retry policy, per-target limits |
//! | [`ingest`] | the HTTP path from request to stored event, and every answer of SPEC §5 |
//! | [`backtest`] | a candidate rule set against the live one over stored events: what would change |
//! | **surfaces** | |
//! | [`admin`] | health checks, the admin API, server-sent events and the dashboard |
//! | [`server`] | the listener, connection limits, wiring and shutdown |
//! | [`cli`] | `check`, `test`, `send` and the admin commands |

#![forbid(unsafe_code)]
// Nothing from a request, a file or the network may panic: no unwrap/expect
// outside tests (a surviving one would need an allow with its invariant).
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

pub mod actions;
pub mod admin;
pub mod backtest;
pub mod bus;
pub mod cli;
pub mod clock;
pub mod config;
pub mod decode;
pub mod dispatch;
pub mod evaluate;
pub mod ids;
pub mod ingest;
pub mod matching;
pub mod redact;
pub mod request;
pub mod rules;
pub mod server;
pub mod store;
pub mod supervise;
pub mod syntax;
pub mod telemetry;
pub mod template;
pub mod verify;
pub mod watch;
