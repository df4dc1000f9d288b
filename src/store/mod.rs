//! Durable storage of events and deliveries behind one async interface.
//!
//! Ingest only sees [`Store`]; the SQLite backend ([`sqlite`]) runs on a
//! dedicated writer thread that commits many concurrent requests in one
//! transaction (group commit), so durability does not cost one disk flush per
//! request. The PostgreSQL backend (`postgres`), for several instances on
//! one database, implements the same trait; both keep the lifecycle that
//! `conformance` tests.

#[cfg(test)]
mod conformance;
pub mod health;
pub mod peers;
mod postgres;
pub mod sqlite;
mod state;
pub mod steps;

pub use state::{AttemptOutcome, DeliveryState};
pub use steps::{Judge, StepJudge, Verdict};

use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use serde::Serialize;

use crate::ids::{AttemptId, DeliveryId, EventId, InstanceId, RequestId};
use crate::matching::RuleTrace;
use crate::request::{Request, query_pairs};

/// An accepted request, ready to be stored with its deliveries.
#[derive(Debug, Clone)]
pub struct NewEvent {
    pub id: EventId,
    pub source: String,
    /// Milliseconds since the Unix epoch.
    pub received_at_ms: i64,
    pub method: String,
    pub path: String,
    /// The raw query string (without `?`), empty when none.
    pub query: String,
    /// Header names lowercased, in the order received.
    pub headers: Vec<(String, String)>,
    pub body: bytes::Bytes,
    /// The decoded payload as JSON text, or `None` when the payload is the
    /// JSON body itself: then only the body is written, and the payload is
    /// parsed from it again when the event is read (half the bytes per event).
    pub payload: Option<String>,
    /// Decoding facts that explain misses ("payload is null: Content-Type was text/plain").
    pub facts: Vec<String>,
    /// The match trace, as shown by the API.
    pub trace: Vec<RuleTrace>,
    /// Names of the rules that matched.
    pub matched: Vec<String>,
    /// Dedup key of the source, if it has one; scoped to the source, 24 h window.
    pub dedup_key: Option<String>,
    pub deliveries: Vec<NewDelivery>,
}

/// One delivery of one matched action: `pending`, or `waiting` for a step.
#[derive(Debug, Clone)]
pub struct NewDelivery {
    pub id: DeliveryId,
    pub rule: String,
    pub action: String,
    /// `http`, `email` or `command`.
    pub action_type: String,
    /// The rendered `serialize_by` key, if the action has one.
    pub serialize_key: Option<String>,
    /// When the first attempt is due, if later than at once (`delay`).
    pub due_at_ms: Option<i64>,
    /// For a step (SPEC §4.7): the deliveries of the same event it needs,
    /// and their action names. A step is stored `waiting`.
    pub needs: Vec<DeliveryId>,
    pub need_names: Vec<String>,
    /// Some step of the same event needs this delivery: its end settles them.
    pub has_steps: bool,
}

/// What happened to an event handed to [`Store::ingest`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IngestOutcome {
    /// Committed durably (the transaction was flushed to disk).
    Stored,
    /// The dedup key was seen within the window; nothing was stored.
    Duplicate { first: EventId },
}

/// A stored event as read back.
#[derive(Debug, Clone, Serialize)]
pub struct StoredEvent {
    pub id: EventId,
    pub source: String,
    pub received_at_ms: i64,
    pub method: String,
    pub path: String,
    pub query: String,
    pub headers: Vec<(String, String)>,
    #[serde(skip)]
    pub body: Vec<u8>,
    pub payload: serde_json::Value,
    pub facts: Vec<String>,
    pub trace: Vec<RuleTrace>,
    pub matched: Vec<String>,
    pub dedup_key: Option<String>,
    pub deliveries: Vec<StoredDelivery>,
}

impl StoredEvent {
    /// The request as replay, the API and `hookwire test` evaluate it again.
    pub fn request(&self) -> Request {
        Request {
            event_id: self.id.to_string(),
            source: self.source.clone(),
            received_at: crate::clock::rfc3339_ms(self.received_at_ms),
            method: self.method.clone(),
            path: self.path.clone(),
            headers: self.headers.clone(),
            query: query_pairs(Some(&self.query)),
            body: bytes::Bytes::from(self.body.clone()),
            payload: self.payload.clone(),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct StoredDelivery {
    pub id: DeliveryId,
    pub event_id: EventId,
    pub rule: String,
    pub action: String,
    pub action_type: String,
    pub status: DeliveryState,
    pub serialize_key: Option<String>,
    /// Attempts over the delivery's whole life (never reset).
    pub attempts: u32,
    /// Attempts in the current budget: what the retry policy counts; a
    /// manual retry starts it again from 0.
    pub attempts_in_budget: u32,
    /// How many times the delivery was retried by hand.
    pub manual_retries: u32,
    /// The request of the latest manual retry.
    pub retried_by: Option<String>,
    /// The replay request that created the delivery, if a replay did.
    pub replayed_by: Option<String>,
    pub created_at_ms: i64,
    /// For a step: the actions it needs (SPEC §4.7).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub needs: Vec<String>,
    /// When its next attempt is due, while it is `pending` or `retrying`.
    pub due_at_ms: Option<i64>,
    /// Why it was skipped ("needs crm, which is dead").
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// A step's `when`, as evaluated when its needs had succeeded.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub when: Vec<crate::matching::Step>,
    /// The output of its successful attempt, when it kept one (an action
    /// some step needs), with `json` parsed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output: Option<serde_json::Value>,
}

/// One recorded attempt, as read back.
#[derive(Debug, Clone, Serialize)]
pub struct StoredAttempt {
    pub id: String,
    /// Unique within the delivery, from 1, in the order attempts started;
    /// never reset.
    pub number: u32,
    /// The number within its budget, from 1 (what the retry policy counted).
    pub budget_number: u32,
    /// 0 for the original budget, n after the n-th manual retry.
    pub round: u32,
    /// The retry request behind the round (or, in round 0, the replay
    /// request that created the delivery); `None` when nobody asked.
    pub requested_by: Option<String>,
    pub started_at_ms: i64,
    pub duration_ms: i64,
    pub outcome: AttemptOutcome,
    pub status_code: Option<u16>,
    pub exit_code: Option<i32>,
    pub error: Option<String>,
    /// The kept excerpt of the response (or stdout/stderr), as text.
    pub response: String,
}

/// Newest first, `limit` at most, strictly older than `before` when given.
#[derive(Debug, Clone, Default)]
pub struct Page {
    pub limit: u32,
    pub before: Option<String>,
}

/// What one pruning pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Pruned {
    pub events: u64,
    pub dedup_keys: u64,
    /// Writes it took (each waited its turn behind other writes).
    pub batches: u64,
    /// The longest of them: what a write arriving meanwhile could wait for.
    pub longest_batch: Duration,
}

/// What putting a delivery back in the queue came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RetryOutcome {
    Queued,
    NotFound,
    /// Only finished deliveries that did not succeed (`dead`, `skipped`) can be retried.
    NotRetryable(String),
    /// A step skipped because a need ended without success (`crm, which is
    /// dead`): that need is what to retry.
    BehindNeed(String),
}

/// A delivery claimed for an attempt.
#[derive(Debug, Clone)]
pub struct Claimed {
    pub id: DeliveryId,
    pub event_id: EventId,
    pub rule: String,
    pub action: String,
    pub action_type: String,
    /// The number of this attempt within the current budget, from 1: what
    /// the retry policy counts and templates see as `attempt`.
    pub attempt: u32,
    /// The number of this attempt over the delivery's life, from 1.
    pub number: u32,
    /// Manual retries so far: 0 for the original budget.
    pub round: u32,
    /// The request that started this round (see [`StoredAttempt::requested_by`]).
    pub requested_by: Option<String>,
    pub serialize_key: Option<String>,
    /// The event's request, as the action is rendered from it; its
    /// `payload` is `null` until [`Claimed::parse_payload`].
    pub event: Request,
    /// The event's payload as stored.
    pub payload: StoredPayload,
    /// The claim's lease token (see [`Lease`]).
    pub token: i64,
    /// A step: its templates read the outputs of its needs ([`Store::step_outputs`]).
    pub step: bool,
}

impl Claimed {
    /// Parses the stored payload into `event.payload`. A claim hands it over
    /// unparsed, so that the parse runs on the attempt's task and not on the
    /// store's writer (SQLite's one writer thread spent a quarter of its time
    /// on it while draining a backlog; bench/RESULTS.md).
    pub fn parse_payload(&mut self) -> Result<(), serde_json::Error> {
        self.event.payload = self.payload.parse(&self.event.body)?;
        Ok(())
    }

    /// The claim, to finish, release or renew it with.
    pub fn lease(&self) -> Lease {
        Lease {
            delivery: self.id.clone(),
            token: self.token,
        }
    }
}

/// An event's payload column as both stores keep it: `''` when the payload
/// is the JSON body itself (parsed again from the body, which ingest's strict
/// JSON check passed), otherwise the JSON text of the decoded payload (form,
/// XML, multipart).
#[derive(Debug, Clone, Default)]
pub struct StoredPayload(String);

impl StoredPayload {
    pub fn from_column(text: String) -> Self {
        Self(text)
    }

    /// The payload, read from this column and the event's `body`.
    pub fn parse(&self, body: &[u8]) -> Result<serde_json::Value, serde_json::Error> {
        if self.0.is_empty() {
            // A leading byte order mark passed ingest's check; the parser does not take it.
            let json = body.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(body);
            return serde_json::from_slice(json);
        }
        serde_json::from_str(&self.0)
    }
}

/// One attempt, as recorded.
#[derive(Debug, Clone)]
pub struct NewAttempt {
    pub id: AttemptId,
    /// Over the delivery's life ([`Claimed::number`]).
    pub number: u32,
    /// Within the budget ([`Claimed::attempt`]).
    pub budget_number: u32,
    pub round: u32,
    pub requested_by: Option<String>,
    pub started_at_ms: i64,
    pub duration_ms: i64,
    pub outcome: AttemptOutcome,
    pub status_code: Option<u16>,
    pub exit_code: Option<i32>,
    pub error: Option<String>,
    /// The first 64 KiB of the response body, or of stdout and stderr.
    pub response: Vec<u8>,
    /// For a successful attempt of an action some step needs: its output
    /// (SPEC §4.7) as JSON text, up to 1 MiB.
    pub output: Option<String>,
}

/// A claim on one delivery: each claim bumps the delivery's token, so a
/// holder whose lease was taken over can no longer finish, release or renew
/// it (fencing).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Lease {
    pub delivery: DeliveryId,
    pub token: i64,
}

/// Whether a finished attempt was written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recorded {
    Yes,
    /// The lease had been taken over: the result is discarded.
    LeaseLost,
}

/// The end of an attempt: the record and the delivery's next state.
#[derive(Debug, Clone)]
pub struct Finished {
    /// The delivery, and the claim that ran the attempt.
    pub lease: Lease,
    pub attempt: NewAttempt,
    pub state: DeliveryState,
    pub next_attempt_at_ms: Option<i64>,
    /// Decides the steps this delivery's end releases (see [`steps`]).
    pub judge: Option<Judge>,
}

/// Why the store could not do what it was asked.
///
/// A driver error is kept whole in [`StoreError::Driver`] (its SQLite code,
/// say, stays readable); its text is part of the message, so it is not also
/// chained as `source()`, which would print it twice in an error chain.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The store cannot take the write now (disk full, database down, queue full).
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// The database refused the operation, and trying again will not help.
    #[error("database error: {0}")]
    Database(String),
    /// The database driver failed; `transient` when trying again later can
    /// help (disk full, busy, I/O), and the store counts as unavailable.
    #[error("{}: {cause}", kind(*.transient))]
    Driver {
        transient: bool,
        cause: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A value could not be encoded for storage: a bug, not the store's state.
    #[error("cannot encode the event: {0}")]
    Encode(#[from] serde_json::Error),
}

fn kind(transient: bool) -> &'static str {
    if transient {
        "store unavailable"
    } else {
        "database error"
    }
}

impl StoreError {
    /// The store cannot take work now but may soon: answered 503 with
    /// `Retry-After`, and logged once per outage rather than per request.
    pub fn is_unavailable(&self) -> bool {
        matches!(
            self,
            StoreError::Unavailable(_)
                | StoreError::Driver {
                    transient: true,
                    ..
                }
        )
    }

    /// The same kind of error with the same message, for each of several
    /// callers that one failed batch answers.
    pub fn same(&self) -> StoreError {
        if self.is_unavailable() {
            StoreError::Unavailable(self.message())
        } else {
            StoreError::Database(self.message())
        }
    }

    /// The cause without the kind prefix, for wrapping into another kind.
    pub fn message(&self) -> String {
        match self {
            StoreError::Unavailable(m) | StoreError::Database(m) => m.clone(),
            StoreError::Driver { cause, .. } => cause.to_string(),
            StoreError::Encode(e) => format!("cannot encode the event: {e}"),
        }
    }
}

/// An event with its JSON columns encoded, before the backend takes a
/// connection (PostgreSQL) or hands it to its one writer thread, the
/// bottleneck of SQLite's ingest.
struct Prepared {
    event: NewEvent,
    headers: String,
    /// `''` marks "the payload is the JSON body" (read back from the body).
    payload: String,
    facts: String,
    trace: String,
    matched: String,
}

impl Prepared {
    fn new(mut event: NewEvent) -> Result<Self, StoreError> {
        fn json<T: Serialize + ?Sized>(v: &T) -> Result<String, StoreError> {
            Ok(serde_json::to_string(v)?)
        }
        Ok(Self {
            headers: json(&event.headers)?,
            payload: event.payload.take().unwrap_or_default(),
            facts: json(&event.facts)?,
            trace: json(&event.trace)?,
            matched: json(&event.matched)?,
            event,
        })
    }
}

/// The step columns of a new delivery, as both backends store them.
struct StepColumns {
    status: &'static str,
    /// JSON of the action names, and of the delivery ids, it needs.
    needs: Option<String>,
    need_ids: Option<String>,
}

impl StepColumns {
    fn of(d: &NewDelivery) -> Self {
        if d.needs.is_empty() {
            return Self {
                status: "pending",
                needs: None,
                need_ids: None,
            };
        }
        let ids: Vec<&str> = d.needs.iter().map(DeliveryId::as_str).collect();
        Self {
            status: "waiting",
            needs: serde_json::to_string(&d.need_names).ok(),
            need_ids: serde_json::to_string(&ids).ok(),
        }
    }
}

/// How many migrations a database at schema `version` has already had, or
/// the refusal of a schema newer than this hookwire's `known` migrations.
fn migrations_done(version: i64, known: usize) -> Result<usize, StoreError> {
    usize::try_from(version)
        .ok()
        .filter(|d| *d <= known)
        .ok_or_else(|| {
            StoreError::Database(format!(
                "the database schema (version {version}) is newer than this hookwire knows ({known}); use a newer hookwire"
            ))
        })
}

/// The durable store. Every method is async and backend-neutral.
pub trait Store: Send + Sync + 'static {
    /// Stores the event and its deliveries in one transaction, or reports a
    /// duplicate. Returns only after the transaction is durable.
    fn ingest(&self, event: NewEvent) -> BoxFuture<'_, Result<IngestOutcome, StoreError>>;

    /// One event with its deliveries.
    fn event(&self, id: &EventId) -> BoxFuture<'_, Result<Option<StoredEvent>, StoreError>>;

    /// Newest first, at most `limit`, optionally of one source.
    fn events(
        &self,
        source: Option<&str>,
        limit: u32,
    ) -> BoxFuture<'_, Result<Vec<StoredEvent>, StoreError>>;

    /// Claims up to `limit` due deliveries for `lease`, marking them `running`
    /// and counting the attempt (in the budget and over the delivery's life). Each comes with the event data needed to render it.
    ///
    /// Deliveries of the actions in `skip` (`rule/action`) are left alone:
    /// their target is busy or its breaker is open.
    ///
    /// The claim is `owner`'s until `now_ms + lease`, and bumps the
    /// delivery's lease token: only this claim's token may finish, release or
    /// renew it. An expired lease of any owner is taken over the same way.
    fn claim(
        &self,
        owner: &InstanceId,
        now_ms: i64,
        limit: u32,
        lease: Duration,
        skip: Vec<String>,
    ) -> BoxFuture<'_, Result<Vec<Claimed>, StoreError>>;

    /// Extends the leases `owner` still holds to `now + lease`, in one write;
    /// returns the deliveries whose lease it no longer holds (taken over
    /// after it expired, or finished by someone else).
    fn renew(
        &self,
        owner: &InstanceId,
        held: Vec<Lease>,
        lease: Duration,
    ) -> BoxFuture<'_, Result<Vec<DeliveryId>, StoreError>>;

    /// Makes the waiting deliveries of these actions (`rule/action`) due now,
    /// those on their own backoff included: their target has recovered.
    /// Returns how many.
    fn expedite(&self, actions: Vec<String>, now_ms: i64)
    -> BoxFuture<'_, Result<u64, StoreError>>;

    /// Gives claimed deliveries back, unattempted, due at `due_at_ms` at the
    /// latest: the claim's attempt is not counted (their target had no room
    /// for them), and one that was due earlier keeps its place in line (a
    /// dead instance's delivery, taken over and given back, stays ahead of
    /// newer work). Leases `owner` no longer holds are left alone.
    fn release(
        &self,
        owner: &InstanceId,
        held: Vec<Lease>,
        due_at_ms: i64,
    ) -> BoxFuture<'_, Result<(), StoreError>>;

    /// Records an attempt and moves its delivery to the decided state, if
    /// `owner` still holds the lease `finished.lease` names. Otherwise
    /// nothing is written ([`Recorded::LeaseLost`]): the delivery was taken
    /// over after the lease expired, and the history keeps one result per
    /// claim.
    fn finish(
        &self,
        owner: &InstanceId,
        finished: Finished,
    ) -> BoxFuture<'_, Result<Recorded, StoreError>>;

    /// Puts the `running` deliveries of `owner` back in the queue, due now:
    /// called when its dispatcher starts, when no attempt of it runs (a
    /// dispatcher that panicked took its attempts with it). Other owners'
    /// leases run out by themselves.
    fn requeue_own(&self, owner: &InstanceId) -> BoxFuture<'_, Result<u64, StoreError>>;

    /// When the next delivery becomes due (`None` when nothing waits).
    fn next_due(&self) -> BoxFuture<'_, Result<Option<i64>, StoreError>>;

    /// Deletes finished events received before `before_ms` (their deliveries
    /// and attempts go with them) and expired dedup keys. Works in small
    /// batches, each its own write, so writes that arrive meanwhile wait for
    /// one batch at most; dropping the future stops between batches (what
    /// was deleted stays deleted).
    fn prune(&self, before_ms: i64) -> BoxFuture<'_, Result<Pruned, StoreError>>;

    /// Events newest first, optionally of one source and matched or not.
    fn event_page(
        &self,
        source: Option<String>,
        matched: Option<bool>,
        page: Page,
    ) -> BoxFuture<'_, Result<Vec<StoredEvent>, StoreError>>;

    /// Deliveries newest first, optionally in one state.
    fn delivery_page(
        &self,
        status: Option<String>,
        page: Page,
    ) -> BoxFuture<'_, Result<Vec<StoredDelivery>, StoreError>>;

    /// One delivery.
    fn delivery(
        &self,
        id: &DeliveryId,
    ) -> BoxFuture<'_, Result<Option<StoredDelivery>, StoreError>>;

    /// The attempts of a delivery, oldest first.
    fn attempts(&self, id: &DeliveryId) -> BoxFuture<'_, Result<Vec<StoredAttempt>, StoreError>>;

    /// Puts a dead or skipped delivery back in the queue with a fresh attempt
    /// budget, as asked by `request`. The attempts made so far stay, and later
    /// ones go on numbering after them.
    fn retry(
        &self,
        id: &DeliveryId,
        request: &RequestId,
    ) -> BoxFuture<'_, Result<RetryOutcome, StoreError>>;

    /// Adds pending deliveries to a stored event, made by the replay `request`.
    fn add_deliveries(
        &self,
        event: &EventId,
        deliveries: Vec<NewDelivery>,
        request: &RequestId,
    ) -> BoxFuture<'_, Result<(), StoreError>>;

    /// The outputs a step may read: those of every delivery of its event it
    /// runs after, by action name, each with `json` (see [`steps::outputs_of`]).
    fn step_outputs(
        &self,
        step: &DeliveryId,
    ) -> BoxFuture<'_, Result<serde_json::Map<String, serde_json::Value>, StoreError>>;

    /// Deliveries waiting to run (pending or retrying).
    fn queue_depth(&self) -> BoxFuture<'_, Result<u64, StoreError>>;

    /// When the oldest delivery still waiting to run (pending or retrying)
    /// was created, in ms since the epoch.
    fn oldest_waiting(&self) -> BoxFuture<'_, Result<Option<i64>, StoreError>>;

    /// The store answers and can commit (used by `/readyz`): an error while
    /// its commits fail (disk full, database unreachable), until one succeeds.
    fn ping(&self) -> BoxFuture<'_, Result<(), StoreError>>;

    /// Sizes and queue lengths for `/metrics`.
    fn stats(&self) -> BoxFuture<'_, StoreStats>;

    /// Opens this instance's line to the other instances on the same
    /// database ([`peers`]): `None` for a store that one process owns
    /// (SQLite), where nobody else is there to tell. Call it once, from
    /// within the runtime; dropping [`peers::Peers::heard`] hangs up.
    ///
    /// A handle rather than a callback into the dispatcher or the bus, so
    /// that the store stays below them: it carries the signals, and the
    /// server decides what they mean. Telling the others of new work is the
    /// store's own business, though: every write that makes work due now
    /// (ingest with deliveries, retry, replay, released claims) raises it
    /// after its commit, so no write path can forget it and none waits for
    /// it.
    fn peers(&self, _me: &InstanceId) -> Option<peers::Peers> {
        None
    }
}

/// What the store reports of itself for `/metrics`; `None` when unknown.
#[derive(Debug, Clone, Default)]
pub struct StoreStats {
    /// Writes waiting for the writer.
    pub writer_queue: u64,
    pub database_bytes: Option<u64>,
    pub wal_bytes: Option<u64>,
    /// Space left to unprivileged writers on the database's file system.
    pub disk_free_bytes: Option<u64>,
}

pub type SharedStore = Arc<dyn Store>;

/// A duplicate is a dedup key seen within this window (SPEC §4).
const DEDUP_WINDOW_MS: i64 = 24 * 3600 * 1000;

/// The smallest event id made at `ms` or later: ids are `evt_` and a
/// lowercase ULID, whose first ten characters are the time in milliseconds,
/// so every event whose id was made before `ms` sorts below it (pruning
/// walks the primary key up to it).
fn first_event_id_at(ms: i64) -> String {
    let ms = u64::try_from(ms).unwrap_or(0).min((1 << 48) - 1);
    format!(
        "{}{}",
        EventId::PREFIX,
        ulid::Ulid::from_parts(ms, 0).to_string().to_lowercase()
    )
}

/// A database URL as messages may show it: its password (in the user info
/// or a `password=` option), if any, replaced by the mask; the rest as given.
pub fn shown_url(url: &str) -> std::borrow::Cow<'_, str> {
    let Ok(u) = url::Url::parse(url) else {
        return std::borrow::Cow::Borrowed(url);
    };
    let in_query = u.query_pairs().any(|(k, _)| k == "password");
    if u.password().is_none() && !in_query {
        return std::borrow::Cow::Borrowed(url);
    }
    let mask = crate::redact::MASK;
    let (base, query) = url.split_once('?').unwrap_or((url, ""));
    let base = match u.password() {
        // Exactly as written, when the URL writes it in its normal form.
        Some(p) if base.contains(&format!(":{p}@")) => {
            base.replacen(&format!(":{p}@"), &format!(":{mask}@"), 1)
        }
        Some(_) => {
            let mut u = u.clone();
            let _ = u.set_password(Some(mask));
            u.set_query(None);
            u.to_string()
        }
        None => base.to_owned(),
    };
    if query.is_empty() {
        return std::borrow::Cow::Owned(base);
    }
    let query: Vec<String> = query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some(("password", _)) => format!("password={mask}"),
            _ => pair.to_owned(),
        })
        .collect();
    std::borrow::Cow::Owned(format!("{base}?{}", query.join("&")))
}

/// Opens the store named by a `--database` URL.
pub fn open(url: &str) -> Result<SharedStore, StoreError> {
    open_with(url, postgres::POOL_SIZE)
}

/// [`open`], with up to `pool_size` connections to PostgreSQL per instance
/// (`--database-pool`; SQLite has its own fixed set).
pub fn open_with(url: &str, pool_size: usize) -> Result<SharedStore, StoreError> {
    if let Some(path) = url.strip_prefix("sqlite://") {
        return Ok(Arc::new(sqlite::SqliteStore::open(path)?));
    }
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        return Ok(Arc::new(postgres::PostgresStore::open_with(
            url,
            pool_size.max(1),
        )?));
    }
    Err(StoreError::Unavailable(format!(
        "unknown database URL `{}`: expected sqlite://PATH or postgres://…",
        shown_url(url)
    )))
}
