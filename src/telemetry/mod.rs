//! Logging setup and the occurrences that write log lines and move metrics.
//!
//! Every log line goes through [`crate::redact`] before it leaves the
//! process, and is written by a background thread: a slow or blocked stderr
//! (a full pipe, a stalled terminal) never blocks the runtime. When that
//! thread falls behind by [`LOG_BUFFER_LINES`], new lines are dropped rather
//! than waited for, and counted in `hookwire_log_lines_dropped`. Colours only when stderr is a terminal.

pub mod overview;

use std::io::{IsTerminal as _, Write};

use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;

/// Lines the log writer may hold before new ones are dropped.
pub const LOG_BUFFER_LINES: usize = 16 * 1024;

/// Keeps the log writer thread alive; dropping it flushes what is buffered.
pub struct LogGuard(#[allow(dead_code)] Option<tracing_appender::non_blocking::WorkerGuard>);

pub fn init(json: bool) -> LogGuard {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let (writer, guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .lossy(true)
        .buffered_lines_limit(LOG_BUFFER_LINES)
        .thread_name("hookwire-log")
        .finish(std::io::stderr());
    let writer_errors = writer.error_counter();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(Redacting(writer));
    // A second init (tests calling into the library twice) is harmless.
    let installed = if json {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
    if installed.is_ok() {
        let _ = LOG_DROPPED.set(writer_errors);
        // A panic's own report goes through the log too: masked like any line.
        std::panic::set_hook(Box::new(|info| {
            tracing::error!(panic = %info, "panicked");
        }));
    }
    LogGuard(installed.is_ok().then_some(guard))
}

/// Lines the log writer dropped because stderr could not keep up.
static LOG_DROPPED: std::sync::OnceLock<tracing_appender::non_blocking::ErrorCounter> =
    std::sync::OnceLock::new();

/// A writer that masks secrets in each formatted line before passing it on.
#[derive(Clone)]
struct Redacting<W>(W);

impl<'a, W: MakeWriter<'a>> MakeWriter<'a> for Redacting<W> {
    type Writer = Redacting<W::Writer>;

    fn make_writer(&'a self) -> Self::Writer {
        Redacting(self.0.make_writer())
    }
}

impl<W: Write> Write for Redacting<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        // The formatter hands over one whole line per call, so a secret is
        // never split across two writes.
        self.0.write_all(&crate::redact::bytes(buf))?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush()
    }
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
    queue_depth: Gauge,
    log_lines_dropped: Gauge,
    task_restarts: Family<Labels, Counter>,
    connections_refused: Counter,
    leases_lost: Counter,
    instance: Family<Labels, Gauge>,
    breaker_open: Family<Labels, Gauge>,
    breaker_opened: Family<Labels, Counter>,
    pub target_in_flight: Family<Labels, Gauge>,
    target_failures: Family<Labels, Counter>,
    pub oldest_waiting_seconds: Gauge<f64, std::sync::atomic::AtomicU64>,
    reloads: Counter,
    reload_failures: Counter,
    request_seconds: Family<Labels, Histogram>,
    store_failing: Gauge,
    store_commit_failures: Counter,
    store_commit_seconds: Histogram,
    /// How long each claim of due deliveries took.
    store_claim_seconds: Histogram,
    store_writer_queue: Gauge,
    database_bytes: Gauge,
    wal_bytes: Gauge,
    disk_free_bytes: Gauge,
    prune_seconds: Histogram,
    pruned_events: Counter,
    pruned_dedup_keys: Counter,
    prune_batch_seconds: Histogram,
}

fn attempt_histogram() -> Histogram {
    // 1 ms to about 65 s.
    Histogram::new(exponential_buckets(0.001, 2.0, 17))
}

fn fast_histogram() -> Histogram {
    // 0.25 ms to about 8 s: requests and commits take milliseconds when all is well.
    Histogram::new(exponential_buckets(0.00025, 2.0, 16))
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
        log_lines_dropped: Gauge::default(),
        task_restarts: Family::default(),
        connections_refused: Counter::default(),
        leases_lost: Counter::default(),
        instance: Family::default(),
        breaker_open: Family::default(),
        breaker_opened: Family::default(),
        target_in_flight: Family::default(),
        target_failures: Family::default(),
        oldest_waiting_seconds: Gauge::default(),
        reloads: Counter::default(),
        reload_failures: Counter::default(),
        request_seconds: Family::new_with_constructor(fast_histogram),
        store_failing: Gauge::default(),
        store_commit_failures: Counter::default(),
        store_commit_seconds: fast_histogram(),
        // 0.1 ms to about 1.6 s: a claim should take a millisecond or two.
        store_claim_seconds: Histogram::new(exponential_buckets(0.0001, 2.0, 15)),
        store_writer_queue: Gauge::default(),
        database_bytes: Gauge::default(),
        wal_bytes: Gauge::default(),
        disk_free_bytes: Gauge::default(),
        // 1 ms to about 65 s: a pass over a large backlog takes a while.
        prune_seconds: attempt_histogram(),
        pruned_events: Counter::default(),
        pruned_dedup_keys: Counter::default(),
        // 0.5 ms to about 1 s: the longest write of a pass (what ingest may wait for).
        prune_batch_seconds: Histogram::new(exponential_buckets(0.0005, 2.0, 12)),
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
    registry.register(
        "log_lines_dropped",
        "Log lines dropped because stderr could not keep up",
        m.log_lines_dropped.clone(),
    );
    registry.register(
        "task_restarts",
        "Background tasks restarted after a panic, by task",
        m.task_restarts.clone(),
    );
    registry.register(
        "leases_lost",
        "Attempt results discarded because their lease had been taken over",
        m.leases_lost.clone(),
    );
    registry.register(
        "instance",
        "1, labelled with this process's instance id (the owner of its leases)",
        m.instance.clone(),
    );
    registry.register(
        "connections_refused",
        "Connections answered 503 because --max-connections were busy",
        m.connections_refused.clone(),
    );
    registry.register(
        "target_breaker_open",
        "1 while a target's circuit breaker is open, by target",
        m.breaker_open.clone(),
    );
    registry.register(
        "target_breaker_opened",
        "Times a target's circuit breaker opened, by target",
        m.breaker_opened.clone(),
    );
    registry.register(
        "target_failures",
        "Attempts to a target that failed in a way that is retried (connection, timeout, 5xx, 429), by target",
        m.target_failures.clone(),
    );
    registry.register(
        "target_in_flight",
        "Attempts running now, by target",
        m.target_in_flight.clone(),
    );
    registry.register(
        "oldest_waiting_delivery_seconds",
        "Age of the oldest delivery waiting to run (pending or retrying)",
        m.oldest_waiting_seconds.clone(),
    );
    registry.register(
        "request_duration_seconds",
        "Time from a webhook request's arrival to its answer, by source and status class (2xx, 4xx, 5xx)",
        m.request_seconds.clone(),
    );
    registry.register(
        "store_failing",
        "1 while the store cannot commit (disk full, database unreachable): events are answered 503 and /readyz fails",
        m.store_failing.clone(),
    );
    registry.register(
        "store_commit_failures",
        "Transactions the store could not commit",
        m.store_commit_failures.clone(),
    );
    registry.register(
        "store_commit_duration_seconds",
        "How long each group commit took, from BEGIN to COMMIT",
        m.store_commit_seconds.clone(),
    );
    registry.register(
        "store_claim_duration_seconds",
        "How long each claim of due deliveries took (successful claims)",
        m.store_claim_seconds.clone(),
    );
    registry.register(
        "store_writer_queue",
        "Writes waiting for the store's writer at the last scrape",
        m.store_writer_queue.clone(),
    );
    registry.register(
        "database_bytes",
        "Size of the database file at the last scrape",
        m.database_bytes.clone(),
    );
    registry.register(
        "wal_bytes",
        "Size of the database's write-ahead log at the last scrape",
        m.wal_bytes.clone(),
    );
    registry.register(
        "disk_free_bytes",
        "Space left for the database on its file system at the last scrape",
        m.disk_free_bytes.clone(),
    );
    registry.register(
        "prune_duration_seconds",
        "How long retention pruning passes took",
        m.prune_seconds.clone(),
    );
    registry.register(
        "pruned_events",
        "Finished events deleted by retention pruning (with their deliveries and attempts)",
        m.pruned_events.clone(),
    );
    registry.register(
        "pruned_dedup_keys",
        "Expired dedup keys deleted by pruning",
        m.pruned_dedup_keys.clone(),
    );
    registry.register(
        "prune_longest_batch_seconds",
        "The longest single write of each pruning pass (what a request could wait behind)",
        m.prune_batch_seconds.clone(),
    );
    Metrics { registry, ..m }
});

impl Metrics {
    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        if let Some(dropped) = LOG_DROPPED.get() {
            self.log_lines_dropped
                .set(i64::try_from(dropped.dropped_lines()).unwrap_or(i64::MAX));
        }
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
    overview::OVERVIEW.event_stored(crate::clock::now_ms(), source);
    tracing::info!(event_id, source, matched = %Joined(matched), deliveries, "event stored");
}

/// Deliveries waiting to run, as just counted: the gauge, and a point of the
/// dashboard's queue-depth chart.
pub fn queue_depth(depth: u64) {
    METRICS
        .queue_depth
        .set(i64::try_from(depth).unwrap_or(i64::MAX));
    overview::OVERVIEW.queue_depth(crate::clock::now_ms(), depth);
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
    /// Within the budget (what the retry policy counts).
    pub attempt: u32,
    /// Over the delivery's life (a manual retry does not reset it).
    pub number: u32,
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
        overview::OVERVIEW.attempt_finished(
            crate::clock::now_ms(),
            (self.rule, self.action),
            self.state,
            self.duration,
        );
        tracing::info!(
            delivery_id = self.delivery_id,
            event_id = self.event_id,
            rule = self.rule,
            action = self.action,
            attempt = self.attempt,
            number = self.number,
            outcome = self.outcome,
            // Absent rather than null when there is none: fields are plain values.
            status = self.status,
            exit_code = self.exit_code,
            duration_ms = self.duration.as_millis() as u64,
            state = self.state,
            error = self.error.unwrap_or(""),
            "attempt finished"
        );
    }
}

/// A connection over `--max-connections` was answered 503. Logged at most
/// once a second, counted always.
pub fn connection_refused(peer: std::net::SocketAddr) {
    static LAST: std::sync::Mutex<Option<std::time::Instant>> = std::sync::Mutex::new(None);
    METRICS.connections_refused.inc();
    let mut last = LAST.lock().unwrap_or_else(|p| p.into_inner());
    if last.is_none_or(|t| t.elapsed() >= std::time::Duration::from_secs(1)) {
        *last = Some(std::time::Instant::now());
        tracing::warn!(%peer, "connection limit reached: answered 503 (see --max-connections)");
    }
}

/// This process starts as `instance`: one line, and the `instance` metric.
pub fn instance_started(instance: &str, lease: std::time::Duration) {
    METRICS
        .instance
        .get_or_create(&vec![label("instance", instance)])
        .set(1);
    tracing::info!(
        instance,
        lease_ms = lease.as_millis() as u64,
        "instance started: it owns the deliveries it claims for a lease, renewed while they run"
    );
}

/// A running attempt's lease could not be renewed: it had expired and the
/// delivery was claimed again (this process was frozen, or the store out of
/// reach, for longer than `--lease`). The attempt runs on; its result will
/// be discarded.
pub fn lease_taken_over(delivery_id: &str) {
    tracing::warn!(
        delivery_id,
        "lease taken over while the attempt runs: its result will not be recorded"
    );
}

/// An attempt's result was discarded: its lease had been taken over, and the
/// delivery's history keeps the result of the claim that holds it.
pub fn lease_lost(delivery_id: &str, outcome: &str) {
    METRICS.leases_lost.inc();
    tracing::warn!(
        delivery_id,
        outcome,
        "lease lost: another claim holds the delivery; this attempt's result is discarded"
    );
}

/// An attempt to a target failed in a way the policy retries.
pub fn target_failed(target: &str) {
    METRICS
        .target_failures
        .get_or_create(&vec![label("target", target)])
        .inc();
}

/// Attempts in flight per target, set when metrics are read.
pub fn target_in_flight(target: &str, in_flight: usize) {
    METRICS
        .target_in_flight
        .get_or_create(&vec![label("target", target)])
        .set(i64::try_from(in_flight).unwrap_or(i64::MAX));
}

/// A target has held its whole share of the workers for a while.
pub fn target_saturated(target: &str, in_flight: usize) {
    tracing::warn!(
        target_key = target,
        in_flight,
        "target busy: it has held its whole share of the workers for 10 s and its deliveries wait (raise the action's `concurrency` if it can take more)"
    );
}

/// A target's breaker opened after `failures` in a row.
pub fn breaker_opened(target: &str, failures: u32, probe_in: std::time::Duration) {
    breaker_state(target, 1);
    METRICS
        .breaker_opened
        .get_or_create(&vec![label("target", target)])
        .inc();
    tracing::warn!(
        target_key = target,
        failures,
        probe_in_ms = probe_in.as_millis() as u64,
        "target failing: breaker open, its deliveries are held (attempts unspent) until a probe succeeds"
    );
}

/// A probe of a failing target failed: the breaker opens again for longer.
pub fn breaker_reopened(target: &str, probe_in: std::time::Duration) {
    breaker_state(target, 1);
    tracing::info!(
        target_key = target,
        probe_in_ms = probe_in.as_millis() as u64,
        "target still failing: probe failed, breaker open again"
    );
}

/// A probe succeeded: the breaker closed after `after`.
pub fn breaker_closed(target: &str, after: std::time::Duration) {
    breaker_state(target, 0);
    tracing::warn!(
        target_key = target,
        after_ms = after.as_millis() as u64,
        "target recovered: breaker closed, held deliveries run now"
    );
}

fn breaker_state(target: &str, open: i64) {
    METRICS
        .breaker_open
        .get_or_create(&vec![label("target", target)])
        .set(open);
}

/// A background task panicked and will be started again.
pub struct TaskPanicked<'a> {
    pub task: &'static str,
    pub message: &'a str,
    pub restart_in: std::time::Duration,
}

impl TaskPanicked<'_> {
    pub fn emit(&self) {
        METRICS
            .task_restarts
            .get_or_create(&vec![label("task", self.task)])
            .inc();
        tracing::error!(
            task = self.task,
            panic = self.message,
            restart_in_ms = self.restart_in.as_millis() as u64,
            "background task panicked; it is restarted, and /readyz fails until then"
        );
    }
}

/// A problem in a rule file, at its position.
pub struct Located<'a> {
    pub file: &'a str,
    pub line: u32,
    pub col: u32,
    pub message: &'a str,
}

/// A rule set was loaded (and swapped in); `warnings` of its files.
pub struct ReloadSucceeded<'a> {
    pub version: u64,
    pub files: usize,
    pub sources: usize,
    pub rules: usize,
    pub took: std::time::Duration,
    pub warnings: &'a [Located<'a>],
}

impl ReloadSucceeded<'_> {
    pub fn emit(&self) {
        METRICS.reloads.inc();
        for w in self.warnings {
            tracing::warn!(file = w.file, line = w.line, col = w.col, "{}", w.message);
        }
        tracing::info!(
            version = self.version,
            files = self.files,
            sources = self.sources,
            rules = self.rules,
            took_ms = self.took.as_millis() as u64,
            "rule set loaded"
        );
    }
}

/// A rule set was not loaded because of these errors.
pub fn reload_failed(errors: &[Located<'_>]) {
    METRICS.reload_failures.inc();
    for e in errors {
        tracing::error!(
            file = e.file,
            line = e.line,
            col = e.col,
            "rule set not loaded: {}",
            e.message
        );
    }
    tracing::error!(
        errors = errors.len(),
        "rule files have errors: keeping the last good rule set"
    );
}

/// A list as one plain log value: `a,b,c` (empty when there is none).
pub struct Joined<'a>(pub &'a [String]);

impl std::fmt::Display for Joined<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, s) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            f.write_str(s)?;
        }
        Ok(())
    }
}

/// `5423` as `5,423`, for sentences operators read.
fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// `1 request`, `5,423 requests`.
fn counted(n: u64, one: &str, many: &str) -> String {
    format!("{} {}", thousands(n), if n == 1 { one } else { many })
}

/// A webhook request was answered (any status), `took` after it arrived.
pub fn request_finished(source: &str, status: u16, took: std::time::Duration) {
    let class = match status {
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
    };
    METRICS
        .request_seconds
        .get_or_create(&vec![label("source", source), label("status", class)])
        .observe(took.as_secs_f64());
}

/// An event was not stored because the store refused it (answered 503).
/// The store's own state changes are logged once by [`StoreFailing`] and
/// [`StoreRecovered`]; this is the per-request detail, at debug level.
pub fn event_refused_by_store(request_id: &str, source: &str, path: &str, error: &str) {
    METRICS
        .rejected
        .get_or_create(&vec![label("source", source), label("reason", "store")])
        .inc();
    tracing::debug!(
        request_id,
        source,
        path,
        reason = "store",
        "event not stored, answering 503: {error}"
    );
}

/// The store could not commit after it could: logged once per outage.
pub struct StoreFailing<'a> {
    pub error: &'a str,
}

impl StoreFailing<'_> {
    pub fn emit(&self) {
        METRICS.store_failing.set(1);
        tracing::error!(
            error = self.error,
            "store cannot commit: {}; answering 503 until it can again",
            self.error
        );
    }
}

/// The store committed again after failing.
pub struct StoreRecovered {
    pub after: std::time::Duration,
    /// Events refused (answered 503) while it failed.
    pub refused: u64,
    pub failed_commits: u64,
}

impl StoreRecovered {
    pub fn emit(&self) {
        METRICS.store_failing.set(0);
        // A warning, like the failure it ends: whoever filters for one sees both.
        tracing::warn!(
            after_s = self.after.as_secs(),
            refused = self.refused,
            failed_commits = self.failed_commits,
            "store recovered after {} s; {} answered 503, {} failed",
            self.after.as_secs(),
            counted(self.refused, "request", "requests"),
            counted(self.failed_commits, "commit", "commits")
        );
    }
}

pub fn store_commit_failed() {
    METRICS.store_commit_failures.inc();
}

/// A group commit took `took` (failed ones too).
pub fn store_commit_finished(took: std::time::Duration) {
    METRICS.store_commit_seconds.observe(took.as_secs_f64());
}

/// A claim of due deliveries took `took`.
pub fn store_claim_finished(took: std::time::Duration) {
    METRICS.store_claim_seconds.observe(took.as_secs_f64());
}

/// What the store reports of itself at a scrape.
pub fn store_stats(
    writer_queue: u64,
    database: Option<u64>,
    wal: Option<u64>,
    disk_free: Option<u64>,
) {
    let set = |g: &Gauge, v: Option<u64>| {
        if let Some(v) = v {
            g.set(i64::try_from(v).unwrap_or(i64::MAX));
        }
    };
    set(&METRICS.store_writer_queue, Some(writer_queue));
    set(&METRICS.database_bytes, database);
    set(&METRICS.wal_bytes, wal);
    set(&METRICS.disk_free_bytes, disk_free);
}

/// A retention pruning pass finished. Logged at info when it deleted
/// something (else at debug: a pass runs every few minutes), always measured.
pub struct PrunePass {
    pub events: u64,
    pub dedup_keys: u64,
    pub batches: u64,
    pub longest_batch: std::time::Duration,
    pub took: std::time::Duration,
}

impl PrunePass {
    pub fn emit(&self) {
        let p = self;
        METRICS.prune_seconds.observe(self.took.as_secs_f64());
        METRICS.pruned_events.inc_by(p.events);
        METRICS.pruned_dedup_keys.inc_by(p.dedup_keys);
        METRICS
            .prune_batch_seconds
            .observe(p.longest_batch.as_secs_f64());
        let took_ms = self.took.as_millis() as u64;
        let longest_batch_ms = p.longest_batch.as_millis() as u64;
        if p.events + p.dedup_keys > 0 {
            tracing::info!(
                events = p.events,
                dedup_keys = p.dedup_keys,
                batches = p.batches,
                took_ms,
                longest_batch_ms,
                "pruned finished events older than the retention"
            );
        } else {
            tracing::debug!(batches = p.batches, took_ms, "nothing to prune");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_read_with_thousands_separators() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(5423), "5,423");
        assert_eq!(thousands(1_234_567), "1,234,567");
        assert_eq!(counted(1, "request", "requests"), "1 request");
        assert_eq!(counted(5423, "request", "requests"), "5,423 requests");
    }

    #[test]
    fn lists_are_plain_values() {
        assert_eq!(Joined(&[]).to_string(), "");
        assert_eq!(Joined(&["a".into(), "b".into()]).to_string(), "a,b");
    }
}
