//! Logging setup: text or one JSON object per line, level from `RUST_LOG`.

use tracing_subscriber::EnvFilter;

pub fn init(json: bool) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    // A second init (tests calling into the library twice) is harmless.
    let _ = if json {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}

// ---------------------------------------------------------------------------
// Occurrences: each writes its log line and moves its metrics in one place,
// so the two cannot drift. Metric labels are source, rule, action type,
// outcome and reason — never an id.

use std::sync::LazyLock;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

type Labels = Vec<(&'static str, String)>;

pub struct Metrics {
    registry: Registry,
    received: Family<Labels, Counter>,
    stored: Family<Labels, Counter>,
    rejected: Family<Labels, Counter>,
    duplicates: Family<Labels, Counter>,
    matched: Family<Labels, Counter>,
    deliveries: Family<Labels, Counter>,
    attempt_seconds: Family<Labels, Histogram>,
    pub queue_depth: Gauge,
    reloads: Counter,
    reload_failures: Counter,
}

fn attempt_histogram() -> Histogram {
    // 1 ms to about 65 s.
    Histogram::new(exponential_buckets(0.001, 2.0, 17))
}

pub static METRICS: LazyLock<Metrics> = LazyLock::new(|| {
    let mut registry = Registry::with_prefix("hookwire");
    let m = Metrics {
        received: Family::default(),
        stored: Family::default(),
        rejected: Family::default(),
        duplicates: Family::default(),
        matched: Family::default(),
        deliveries: Family::default(),
        attempt_seconds: Family::new_with_constructor(attempt_histogram),
        queue_depth: Gauge::default(),
        reloads: Counter::default(),
        reload_failures: Counter::default(),
        registry: Registry::default(),
    };
    registry.register(
        "events_received",
        "Requests that reached a source",
        m.received.clone(),
    );
    registry.register(
        "events_stored",
        "Events stored durably and acknowledged",
        m.stored.clone(),
    );
    registry.register(
        "events_rejected",
        "Requests refused, by reason",
        m.rejected.clone(),
    );
    registry.register(
        "events_duplicate",
        "Requests answered as duplicates",
        m.duplicates.clone(),
    );
    registry.register("rules_matched", "Rule matches", m.matched.clone());
    registry.register(
        "deliveries",
        "Delivery attempts finished, by action type and outcome",
        m.deliveries.clone(),
    );
    registry.register(
        "attempt_duration_seconds",
        "How long delivery attempts took",
        m.attempt_seconds.clone(),
    );
    registry.register(
        "queue_depth",
        "Deliveries waiting (pending or retrying) at the last scrape",
        m.queue_depth.clone(),
    );
    registry.register("reloads", "Rule sets loaded", m.reloads.clone());
    registry.register(
        "reload_failures",
        "Rule reloads refused because of errors",
        m.reload_failures.clone(),
    );
    Metrics { registry, ..m }
});

impl Metrics {
    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

fn label(k: &'static str, v: &str) -> (&'static str, String) {
    (k, v.to_owned())
}

pub fn request_received(source: &str) {
    METRICS
        .received
        .get_or_create(&vec![label("source", source)])
        .inc();
}

/// A request refused before it was stored (`source` is empty for unknown paths).
pub fn request_rejected(
    request_id: &str,
    source: &str,
    path: &str,
    reason: &'static str,
    message: &str,
    warn: bool,
) {
    METRICS
        .rejected
        .get_or_create(&vec![label("source", source), label("reason", reason)])
        .inc();
    if warn {
        tracing::warn!(
            request_id,
            source,
            path,
            reason,
            "request rejected: {message}"
        );
    } else {
        tracing::info!(
            request_id,
            source,
            path,
            reason,
            "request rejected: {message}"
        );
    }
}

pub fn event_stored(event_id: &str, source: &str, matched: &[String], deliveries: usize) {
    METRICS
        .stored
        .get_or_create(&vec![label("source", source)])
        .inc();
    for rule in matched {
        METRICS
            .matched
            .get_or_create(&vec![label("source", source), label("rule", rule)])
            .inc();
    }
    tracing::info!(event_id, source, matched = ?matched, deliveries, "event stored");
}

pub fn event_duplicate(first_event_id: &str, source: &str) {
    METRICS
        .duplicates
        .get_or_create(&vec![label("source", source)])
        .inc();
    tracing::info!(
        event_id = first_event_id,
        source,
        "duplicate delivery ignored"
    );
}

pub struct AttemptFinished<'a> {
    pub delivery_id: &'a str,
    pub event_id: &'a str,
    pub rule: &'a str,
    pub action: &'a str,
    pub action_type: &'a str,
    pub attempt: u32,
    pub outcome: &'static str,
    pub status: Option<u16>,
    pub exit_code: Option<i32>,
    pub duration: std::time::Duration,
    pub state: &'static str,
    pub error: Option<&'a str>,
}

impl AttemptFinished<'_> {
    pub fn emit(&self) {
        let labels = vec![
            label("action_type", self.action_type),
            label("outcome", self.outcome),
        ];
        METRICS.deliveries.get_or_create(&labels).inc();
        METRICS
            .attempt_seconds
            .get_or_create(&vec![label("action_type", self.action_type)])
            .observe(self.duration.as_secs_f64());
        tracing::info!(
            delivery_id = self.delivery_id,
            event_id = self.event_id,
            rule = self.rule,
            action = self.action,
            attempt = self.attempt,
            outcome = self.outcome,
            status = ?self.status,
            exit_code = ?self.exit_code,
            duration_ms = self.duration.as_millis() as u64,
            state = self.state,
            error = self.error.unwrap_or(""),
            "attempt finished"
        );
    }
}

pub fn reload_succeeded(set: &crate::rules::RuleSet, took: std::time::Duration) {
    METRICS.reloads.inc();
    for w in &set.warnings {
        tracing::warn!(file = %w.file, line = w.line, col = w.col, "{}", w.message);
    }
    tracing::info!(
        version = set.version,
        files = set.files.len(),
        sources = set.sources.len(),
        rules = set.rules.len(),
        took_ms = took.as_millis() as u64,
        "rule set loaded"
    );
}

pub fn reload_failed(errors: &[crate::rules::Diagnostic]) {
    METRICS.reload_failures.inc();
    for e in errors {
        tracing::error!(file = %e.file, line = e.line, col = e.col, "rule set not loaded: {}", e.message);
    }
    tracing::error!(
        errors = errors.len(),
        "rule files have errors: keeping the last good rule set"
    );
}
