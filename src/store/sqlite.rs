//! The embedded store: one SQLite file in WAL mode with `synchronous=FULL`.
//!
//! All writes go through one dedicated thread that owns the write connection.
//! It takes every job waiting in its queue (up to [`MAX_BATCH`]), runs each in
//! its own SAVEPOINT inside one transaction, commits once, and only then
//! answers each job. Many concurrent requests thus share one disk flush
//! (group commit) without any of them being acknowledged before it is durable.
//! Reads use a small pool of separate connections and never wait for the writer.
//!
//! The writer reports every commit to a [`Health`] tracker: a store that
//! cannot commit (disk full, I/O error) says so once, fails `/readyz`, and
//! probes itself until it can commit again (see [`super::health`]).
//!
//! The dispatcher's one read (`next_due`) has a connection of its own, so
//! admin listings never hold it up.

use crate::clock::now_ms;
use std::collections::HashMap;
use std::fmt::Display;
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, TryLockError};
use std::time::{Duration, Instant};

use futures_util::future::BoxFuture;
use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};
use rusqlite::types::Type;
use rusqlite::{Connection, ErrorCode, OptionalExtension, TransactionBehavior, params};
use tokio::sync::{mpsc, oneshot};

use super::Prepared;
use super::health::{Health, PROBE_EVERY};
use super::steps;
use super::{
    AttemptOutcome, Claimed, DEDUP_WINDOW_MS, DeliveryState, Finished, IngestOutcome, Lease,
    NewDelivery, NewEvent, Page, Pruned, Recorded, RetryOutcome, Store, StoreError, StoreStats,
    StoredAttempt, StoredDelivery, StoredEvent, StoredPayload, first_event_id_at,
};
use crate::ids::{DeliveryId, EventId, InstanceId, RequestId};
use crate::request::{Request, query_pairs};
use rusqlite::config::DbConfig;

/// How many jobs share one transaction at most.
const MAX_BATCH: usize = 512;
/// Jobs waiting for the writer; beyond this the store reports itself overloaded (503).
const QUEUE: usize = 4096;
/// How long a connection waits for a lock held by another process before giving up (503).
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// Read connections; two let `/readyz` and the dispatcher answer while a long listing runs.
const READERS: usize = 2;

/// Each migration runs once, in order; `PRAGMA user_version` records how many ran.
const MIGRATIONS: &[&str] = &[
    include_str!("migrations/0001_initial.sql"),
    include_str!("migrations/0002_attempt_history.sql"),
    include_str!("migrations/0003_indexes_for_pruning_and_lists.sql"),
    include_str!("migrations/0004_lease_owner_and_token.sql"),
    include_str!("migrations/0005_steps.sql"),
];

/// Limits that tests turn down to provoke overload and lock timeouts.
#[derive(Debug, Clone, Copy)]
struct Tuning {
    queue: usize,
    busy_timeout: Duration,
}

impl Tuning {
    const DEFAULT: Tuning = Tuning {
        queue: QUEUE,
        busy_timeout: BUSY_TIMEOUT,
    };
}

/// One unit of work for the writer thread: it runs inside the batch's
/// transaction (in its own SAVEPOINT) and is answered after the commit.
trait WriteJob: Send {
    /// Runs the job. `Err` means the batch's transaction is gone or in an
    /// unknown state, so the whole batch must fail.
    fn run(&mut self, conn: &Connection, now_ms: i64) -> Result<(), StoreError>;
    fn reply(self: Box<Self>, committed: Result<(), &StoreError>);
    /// Runs after the batch committed, outside any transaction, before `reply`.
    fn after_commit(&mut self, _conn: &Connection) {}
    /// Whether the job's commit must be on disk before it is answered (an
    /// event acknowledged to its sender, a retry an operator asked for). A
    /// batch of jobs that need not be (claims, heartbeats, releases, the
    /// records of finished attempts) commits without waiting for the disk;
    /// see [`run_batch`].
    fn durable(&self) -> bool {
        true
    }
}

/// Checkpoints the WAL without waiting for anyone (PASSIVE): copies what it
/// can into the database file, so that SQLite can start the WAL over (and cut
/// it back to [`WAL_SIZE_LIMIT`]) at the next write. Answers (WAL frames,
/// frames checkpointed).
struct Checkpoint {
    result: Option<rusqlite::Result<(i64, i64)>>,
    reply: oneshot::Sender<Result<(i64, i64), StoreError>>,
}

impl WriteJob for Checkpoint {
    fn run(&mut self, _conn: &Connection, _now_ms: i64) -> Result<(), StoreError> {
        Ok(())
    }

    fn after_commit(&mut self, conn: &Connection) {
        self.result = Some(conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| {
            Ok((r.get(1)?, r.get(2)?))
        }));
    }

    fn reply(self: Box<Self>, committed: Result<(), &StoreError>) {
        let answer = match (committed, self.result) {
            (Ok(()), Some(r)) => r.map_err(db_err),
            (Ok(()), None) => Err(StoreError::Unavailable("checkpoint did not run".into())),
            (Err(e), _) => Err(StoreError::Unavailable(e.message())),
        };
        let _ = self.reply.send(answer);
    }
}

struct Job<T, F> {
    work: Option<F>,
    result: Option<Result<T, StoreError>>,
    reply: oneshot::Sender<Result<T, StoreError>>,
    durable: bool,
}

impl<T: Send, F: FnOnce(&Connection, i64) -> rusqlite::Result<T> + Send> WriteJob for Job<T, F> {
    fn run(&mut self, conn: &Connection, now_ms: i64) -> Result<(), StoreError> {
        let Some(work) = self.work.take() else {
            return Ok(());
        };
        let result = in_savepoint(conn, |c| work(c, now_ms)).map_err(db_err)?;
        // After some errors (disk full, I/O) SQLite rolls the whole transaction
        // back by itself: the jobs before this one are gone, and any further
        // statement would commit on its own.
        if conn.is_autocommit() {
            return Err(StoreError::Unavailable(match result {
                Err(e) => format!("SQLite rolled the transaction back: {}", e.message()),
                Ok(_) => "SQLite rolled the transaction back".to_owned(),
            }));
        }
        self.result = Some(result);
        Ok(())
    }

    fn durable(&self) -> bool {
        self.durable
    }

    fn reply(self: Box<Self>, committed: Result<(), &StoreError>) {
        let answer = match committed {
            // Only a committed result may be reported: the caller acknowledges on it.
            Ok(()) => self
                .result
                .unwrap_or_else(|| Err(StoreError::Unavailable("job did not run".into()))),
            Err(e) => Err(StoreError::Unavailable(e.message())),
        };
        // The caller may have gone (client disconnected); what committed stays committed.
        let _ = self.reply.send(answer);
    }
}

pub struct SqliteStore {
    jobs: mpsc::Sender<Box<dyn WriteJob>>,
    readers: Arc<Readers>,
    /// The dispatcher's own read connection (`next_due`).
    due: Arc<Mutex<Connection>>,
    commits: Arc<AtomicU64>,
    health: Arc<Health>,
    /// The database file, for its size and its file system's free space.
    path: PathBuf,
    /// Writes refused because the queue was full, since the last warning.
    overloaded: Mutex<Overload>,
    /// This process's hold on the file ([`lock_file`]).
    _lock: Flock<std::fs::File>,
}

#[derive(Default)]
struct Overload {
    refused: u64,
    warned_at: Option<Instant>,
}

/// A full writer queue is warned about at most this often, with a count.
const OVERLOAD_WARN_EVERY: Duration = Duration::from_secs(10);

/// Read connections, each used by one blocking task at a time.
struct Readers {
    conns: Vec<Mutex<Connection>>,
    next: AtomicUsize,
}

impl Readers {
    /// A free connection if there is one, else waits for one in turn.
    fn get(&self) -> MutexGuard<'_, Connection> {
        for conn in &self.conns {
            match conn.try_lock() {
                Ok(guard) => return guard,
                // A panic during a read leaves no transaction open: the connection is fine.
                Err(TryLockError::Poisoned(p)) => return p.into_inner(),
                Err(TryLockError::WouldBlock) => {}
            }
        }
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.conns.len();
        self.conns[i].lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Errors that mean "not now" (disk full, lock held by another process, I/O,
/// read-only file) become `Unavailable`; the rest are `Database`.
/// A duration as stored: whole milliseconds.
fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

fn db_err(e: rusqlite::Error) -> StoreError {
    match e.sqlite_error_code() {
        Some(
            ErrorCode::DiskFull
            | ErrorCode::DatabaseBusy
            | ErrorCode::DatabaseLocked
            | ErrorCode::SystemIoFailure
            | ErrorCode::OutOfMemory
            | ErrorCode::ReadOnly
            | ErrorCode::CannotOpen,
        ) => StoreError::Driver {
            transient: true,
            cause: Box::new(e),
        },
        _ => StoreError::Driver {
            transient: false,
            cause: Box::new(e),
        },
    }
}

/// One SQLite file belongs to one process (SPEC §7): an exclusive `flock`
/// on the database file, held as long as the store (the kernel drops it
/// when the process dies, however it dies). SQLite's own locks are `fcntl`
/// locks, which `flock` does not touch.
fn lock_file(path: &Path) -> Result<Flock<std::fs::File>, StoreError> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .map_err(|e| {
            StoreError::Unavailable(format!("cannot open database {}: {e}", path.display()))
        })?;
    Flock::lock(file, FlockArg::LockExclusiveNonblock).map_err(|(_, errno)| match errno {
        Errno::EWOULDBLOCK => StoreError::Database(format!(
            "{} is in use by another hookwire process: one SQLite file belongs to one process \
             (several instances share a PostgreSQL database: --database postgres://…)",
            path.display()
        )),
        e => StoreError::Unavailable(format!("cannot lock {}: {e}", path.display())),
    })
}

fn open_conn(path: &Path, busy_timeout: Duration) -> Result<Connection, StoreError> {
    let conn = Connection::open(path).map_err(|e| {
        StoreError::Unavailable(format!("cannot open database {}: {e}", path.display()))
    })?;
    conn.busy_timeout(busy_timeout).map_err(db_err)?;
    // Asking for WAL can silently leave another mode (e.g. on a filesystem
    // without shared memory); the durability and concurrency reasoning here needs WAL.
    let mode: String = conn
        .pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0))
        .map_err(db_err)?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(StoreError::Database(format!(
            "database {} cannot use WAL mode (journal_mode is {mode})",
            path.display()
        )));
    }
    conn.execute_batch("PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON;")
        .map_err(db_err)?;
    // Every statement the store runs stays prepared (rusqlite keeps 16 by
    // default, fewer than the store has: the claim path re-parsed its SQL).
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    // A plan that does not depend on the values bound: without this, SQLite
    // (built with STAT4) compiles a cached statement again whenever a value
    // it estimated a range with changes — every claim, with a new `now`
    // (a tenth of the writer's time while draining a backlog).
    conn.set_db_config(DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG, true)
        .map_err(db_err)?;
    Ok(conn)
}

/// More than the number of distinct statements in this file.
const STATEMENT_CACHE: usize = 96;

fn open_reader(path: &Path, busy_timeout: Duration) -> Result<Connection, StoreError> {
    let conn = open_conn(path, busy_timeout)?;
    // A read connection that could write would bypass group commit.
    conn.execute_batch("PRAGMA query_only = ON;")
        .map_err(db_err)?;
    Ok(conn)
}

fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
    // IMMEDIATE takes the write lock before reading the version, so two
    // processes starting on one file cannot both run a migration.
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(db_err)?;
    let version: i64 = tx
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .map_err(db_err)?;
    let done = super::migrations_done(version, MIGRATIONS.len())?;
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(done) {
        tx.execute_batch(sql).map_err(|e| {
            StoreError::Database(format!("database migration {} failed: {e}", i + 1))
        })?;
        if sql.contains("writable_schema") {
            // The schema text was edited: every connection must read it again.
            let v: i64 = tx
                .query_row("PRAGMA schema_version", [], |r| r.get(0))
                .map_err(db_err)?;
            tx.pragma_update(None, "schema_version", v + 1)
                .map_err(db_err)?;
        }
        tx.pragma_update(None, "user_version", (i + 1) as i64)
            .map_err(db_err)?;
        tracing::info!(migration = i + 1, "database migrated");
    }
    tx.commit().map_err(db_err)
}

impl SqliteStore {
    /// Opens (creating if needed) the database file at `path`, migrates it,
    /// requeues deliveries a previous process left running, and starts the writer thread.
    pub fn open(path: &str) -> Result<Self, StoreError> {
        Self::open_with(path, Tuning::DEFAULT)
    }

    fn open_with(path: &str, tuning: Tuning) -> Result<Self, StoreError> {
        // Each connection to ":memory:" or "" is its own private database: the
        // writer and the readers would not see each other, and a restart would lose every event.
        if path.is_empty() || path == ":memory:" || path.starts_with("file::memory:") {
            return Err(StoreError::Database(format!(
                "sqlite://{path}: the SQLite store needs a file path"
            )));
        }
        let path = Path::new(path);
        let lock = lock_file(path)?;
        let mut writer = open_conn(path, tuning.busy_timeout)?;
        migrate(&mut writer)?;
        writer
            .pragma_update(None, "journal_size_limit", WAL_SIZE_LIMIT)
            .map_err(db_err)?;
        let orphans = requeue_orphans(&writer, None).map_err(db_err)?;
        if orphans > 0 {
            tracing::warn!(
                deliveries = orphans,
                "deliveries left running by the previous process are queued again"
            );
        }
        let conns = (0..READERS)
            .map(|_| open_reader(path, tuning.busy_timeout).map(Mutex::new))
            .collect::<Result<Vec<_>, _>>()?;
        let due = Arc::new(Mutex::new(open_reader(path, tuning.busy_timeout)?));
        let (tx, rx) = mpsc::channel(tuning.queue);
        let commits = Arc::new(AtomicU64::new(0));
        let health = Arc::new(Health::default());
        let (counter, writer_health) = (commits.clone(), health.clone());
        std::thread::Builder::new()
            .name("hookwire-store".into())
            .spawn(move || {
                // A panic here is a bug. Unwinding drops the queue, so every
                // waiting and later caller gets `Unavailable` (503), never a hang.
                let run =
                    AssertUnwindSafe(move || writer_loop(writer, rx, &counter, &writer_health));
                if std::panic::catch_unwind(run).is_err() {
                    tracing::error!("the store writer panicked: nothing can be stored any more");
                }
            })
            .map_err(|e| StoreError::Unavailable(format!("cannot start the store writer: {e}")))?;
        // Holds the queue weakly: it ends when the store is dropped.
        let (probe_jobs, probe_health) = (tx.downgrade(), health.clone());
        std::thread::Builder::new()
            .name("hookwire-store-probe".into())
            .spawn(move || probe_loop(&probe_jobs, &probe_health))
            .map_err(|e| StoreError::Unavailable(format!("cannot start the store probe: {e}")))?;
        Ok(Self {
            _lock: lock,
            jobs: tx,
            readers: Arc::new(Readers {
                conns,
                next: AtomicUsize::new(0),
            }),
            due,
            commits,
            health,
            path: path.to_owned(),
            overloaded: Mutex::default(),
        })
    }

    /// Transactions committed so far (each may hold many jobs).
    pub fn commit_count(&self) -> u64 {
        self.commits.load(Ordering::Relaxed)
    }

    /// Runs `work` on the writer thread inside a group-committed transaction;
    /// resolves only after the commit.
    async fn write<T: Send + 'static>(
        &self,
        work: impl FnOnce(&Connection, i64) -> rusqlite::Result<T> + Send + 'static,
    ) -> Result<T, StoreError> {
        self.write_as(true, work).await
    }

    /// [`Self::write`] for a write that may be lost in a crash without harm,
    /// because what it records is rebuilt at the next start: a claim (its
    /// delivery is queued again, `requeue_orphans`), a heartbeat, a release,
    /// a finished attempt (its delivery is still `pending` or `running` on
    /// disk, so it runs again: at least once, SPEC §1).
    /// Its batch commits without waiting for the disk unless a durable job
    /// shares it; a later durable commit writes it out in order. Only an
    /// operating-system crash or a power loss can undo such a commit: a
    /// process that is killed loses nothing SQLite has committed.
    async fn write_lazy<T: Send + 'static>(
        &self,
        work: impl FnOnce(&Connection, i64) -> rusqlite::Result<T> + Send + 'static,
    ) -> Result<T, StoreError> {
        self.write_as(false, work).await
    }

    async fn write_as<T: Send + 'static>(
        &self,
        durable: bool,
        work: impl FnOnce(&Connection, i64) -> rusqlite::Result<T> + Send + 'static,
    ) -> Result<T, StoreError> {
        let (tx, rx) = oneshot::channel();
        self.send(Box::new(Job {
            work: Some(work),
            result: None,
            reply: tx,
            durable,
        }))?;
        rx.await.map_err(|_| writer_stopped())?
    }

    /// Queues a job for the writer, or refuses at once when the queue is full.
    fn send(&self, job: Box<dyn WriteJob>) -> Result<(), StoreError> {
        self.jobs.try_send(job).map_err(|e| match e {
            // Queueing further would only turn into timeouts; a 503 now lets the sender retry.
            mpsc::error::TrySendError::Full(_) => {
                self.overloaded();
                StoreError::Unavailable("overloaded: too many writes waiting".into())
            }
            mpsc::error::TrySendError::Closed(_) => writer_stopped(),
        })
    }

    /// Counts a write refused for a full queue; warns at most every
    /// [`OVERLOAD_WARN_EVERY`], with how many were refused since.
    fn overloaded(&self) {
        let mut o = self.overloaded.lock().unwrap_or_else(|p| p.into_inner());
        o.refused += 1;
        if o.warned_at
            .is_none_or(|t| t.elapsed() >= OVERLOAD_WARN_EVERY)
        {
            tracing::warn!(
                refused = o.refused,
                "store overloaded: {} writes refused (answered 503) since the last warning; the writer cannot keep up",
                o.refused
            );
            *o = Overload {
                refused: 0,
                warned_at: Some(Instant::now()),
            };
        }
    }

    async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> Result<T, StoreError> {
        let readers = self.readers.clone();
        tokio::task::spawn_blocking(move || f(&readers.get()).map_err(db_err))
            .await
            .map_err(|e| StoreError::Unavailable(format!("store read failed: {e}")))?
    }

    /// See [`Store::prune`]. Between batches it pauses as long as the batch
    /// took, so pruning never takes more than about half of the writer's time.
    async fn prune_in_batches(&self, before_ms: i64) -> Result<Pruned, StoreError> {
        let mut pruned = Pruned::default();
        let mut size = PRUNE_BATCH_START;
        let below = first_event_id_at(before_ms);
        // "" sorts before every id.
        let mut after = Some(String::new());
        while let Some(from) = after.take() {
            let below = below.clone();
            let ((last, deleted), took) = self
                .write(move |c, _| timed(|| prune_events(c, &from, &below, before_ms, size)))
                .await?;
            pruned.events += deleted;
            after = last;
            size = self.pace(&mut pruned, size, took).await;
        }
        let mut more = true;
        while more {
            let (deleted, took) = self
                .write(move |c, now| timed(|| prune_dedup(c, now - DEDUP_WINDOW_MS, size)))
                .await?;
            pruned.dedup_keys += deleted;
            more = deleted == u64::from(size);
            size = self.pace(&mut pruned, size, took).await;
        }
        if pruned.events + pruned.dedup_keys > 0 {
            let (tx, rx) = oneshot::channel();
            self.send(Box::new(Checkpoint {
                result: None,
                reply: tx,
            }))?;
            let (frames, copied) = rx.await.map_err(|_| writer_stopped())??;
            tracing::debug!(frames, copied, "WAL checkpointed after pruning");
        }
        Ok(pruned)
    }

    /// Counts a finished batch, yields the writer for as long as it took, and
    /// returns the next batch size.
    async fn pace(&self, pruned: &mut Pruned, size: u32, took: Duration) -> u32 {
        pruned.batches += 1;
        pruned.longest_batch = pruned.longest_batch.max(took);
        tokio::time::sleep(took.max(Duration::from_millis(1))).await;
        next_batch_size(size, took)
    }
}

/// `f`'s result and how long it took.
fn timed<T>(f: impl FnOnce() -> rusqlite::Result<T>) -> rusqlite::Result<(T, Duration)> {
    let started = std::time::Instant::now();
    let v = f()?;
    Ok((v, started.elapsed()))
}

/// A read on one given connection.
async fn read_on<T: Send + 'static>(
    conn: Arc<Mutex<Connection>>,
    f: impl FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
) -> Result<T, StoreError> {
    tokio::task::spawn_blocking(move || {
        // A panic during a read leaves no transaction open: the connection is fine.
        f(&conn.lock().unwrap_or_else(|p| p.into_inner())).map_err(db_err)
    })
    .await
    .map_err(|e| StoreError::Unavailable(format!("store read failed: {e}")))?
}

fn writer_stopped() -> StoreError {
    StoreError::Unavailable("the store writer has stopped".into())
}

fn writer_loop(
    mut conn: Connection,
    mut rx: mpsc::Receiver<Box<dyn WriteJob>>,
    commits: &AtomicU64,
    health: &Health,
) {
    let mut batch: Vec<Box<dyn WriteJob>> = Vec::with_capacity(MAX_BATCH);
    // Jobs that arrive while a batch commits wait in the queue and form the
    // next batch: the commit latency itself is what groups them.
    while let Some(first) = rx.blocking_recv() {
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let started = Instant::now();
        let changes = conn.total_changes();
        let committed = run_batch(&mut conn, &mut batch);
        crate::telemetry::store_commit_finished(started.elapsed());
        match &committed {
            Ok(()) => {
                commits.fetch_add(1, Ordering::Relaxed);
                // A commit that wrote nothing succeeds even on a full disk: no news.
                if conn.total_changes() != changes {
                    health.committed();
                }
                for job in batch.iter_mut() {
                    job.after_commit(&conn);
                }
            }
            Err(e) => {
                tracing::debug!(error = %e, jobs = batch.len(), "store transaction not committed");
                health.commit_failed(e);
            }
        }
        for job in batch.drain(..) {
            job.reply(committed.as_ref().map(|_| ()));
        }
    }
    tracing::debug!("store writer stopped: the store was dropped");
}

/// Runs every job of the batch in one transaction and commits it once.
///
/// A batch in which no job needs durability commits with `synchronous =
/// NORMAL`: in WAL mode the commit is then not flushed to disk (a power
/// loss may undo it), but it stays ordered before every later commit, and
/// the next durable one (`FULL`) flushes it too. A claim answered that way
/// costs no disk flush, which is most of the time from an event's commit to
/// its delivery's start.
fn run_batch(conn: &mut Connection, batch: &mut [Box<dyn WriteJob>]) -> Result<(), StoreError> {
    let lazy = batch.iter().all(|j| !j.durable());
    if lazy && let Err(e) = conn.execute_batch("PRAGMA synchronous = NORMAL") {
        return Err(StoreError::Unavailable(e.to_string()));
    }
    let result = run_transaction(conn, batch);
    if lazy && let Err(e) = conn.execute_batch("PRAGMA synchronous = FULL") {
        // A writer that could not go back to FULL must not commit events.
        return Err(StoreError::Unavailable(format!(
            "cannot restore synchronous = FULL: {e}"
        )));
    }
    result
}

fn run_transaction(
    conn: &mut Connection,
    batch: &mut [Box<dyn WriteJob>],
) -> Result<(), StoreError> {
    // Failures are logged by the caller's health tracker, once per outage.
    if let Err(e) = conn.execute_batch("BEGIN IMMEDIATE") {
        return Err(StoreError::Unavailable(e.to_string()));
    }
    let now = now_ms();
    for job in batch.iter_mut() {
        if let Err(e) = job.run(conn, now) {
            if !conn.is_autocommit() {
                let _ = conn.execute_batch("ROLLBACK");
            }
            return Err(e);
        }
    }
    conn.execute_batch("COMMIT").map_err(|e| {
        if !conn.is_autocommit() {
            let _ = conn.execute_batch("ROLLBACK");
        }
        db_err(e)
    })
}

/// While the store is failing, puts a probe commit in the queue every
/// [`PROBE_EVERY`], so that it learns it can commit again without waiting for
/// traffic. Ends when the store is dropped.
fn probe_loop(jobs: &mpsc::WeakSender<Box<dyn WriteJob>>, health: &Health) {
    loop {
        std::thread::sleep(PROBE_EVERY);
        let Some(jobs) = jobs.upgrade() else {
            return;
        };
        if health.is_failing() {
            let (reply, _) = oneshot::channel();
            // A full queue is already a probe of its own: its batch will tell.
            let _ = jobs.try_send(Box::new(Job {
                work: Some(probe),
                result: None,
                reply,
                durable: true,
            }));
        }
    }
}

/// A write that leaves nothing behind: a dedup row no source can have
/// (source names cannot be empty), written and deleted again. Its pages
/// still go through the log and the commit like any other write.
fn probe(c: &Connection, now: i64) -> rusqlite::Result<()> {
    c.prepare_cached(
        "INSERT OR REPLACE INTO dedup (source, key, event_id, created_at_ms) VALUES ('', 'hookwire-probe', '', ?1)",
    )?
    .execute([now])?;
    c.prepare_cached("DELETE FROM dedup WHERE source = '' AND key = 'hookwire-probe'")?
        .execute([])?;
    Ok(())
}

/// Runs `f` so that its failure undoes only its own writes. The outer error
/// means the savepoint machinery itself failed and the transaction is in an
/// unknown state; the inner result is the job's own.
fn in_savepoint<T>(
    conn: &Connection,
    f: impl FnOnce(&Connection) -> rusqlite::Result<T>,
) -> rusqlite::Result<Result<T, StoreError>> {
    let run = |sql: &str| conn.prepare_cached(sql)?.execute([]).map(drop);
    run("SAVEPOINT job")?;
    match f(conn) {
        Ok(v) => {
            run("RELEASE job")?;
            Ok(Ok(v))
        }
        Err(e) => {
            // Nothing to undo when SQLite already rolled everything back.
            if !conn.is_autocommit() {
                run("ROLLBACK TO job")?;
                run("RELEASE job")?;
            }
            Ok(Err(db_err(e)))
        }
    }
}

fn ingest_one(conn: &Connection, p: &Prepared, now: i64) -> rusqlite::Result<IngestOutcome> {
    let e = &p.event;
    if let Some(key) = &e.dedup_key {
        // Jobs of one batch run one after another in one transaction, so a
        // copy later in the same batch sees the row the first copy wrote.
        // The window runs from when each copy was received.
        let first: Option<String> = conn
            .prepare_cached(
                "SELECT event_id FROM dedup WHERE source = ?1 AND key = ?2 AND created_at_ms > ?3",
            )?
            .query_row(
                params![e.source, key, e.received_at_ms - DEDUP_WINDOW_MS],
                |r| r.get(0),
            )
            .optional()?;
        if let Some(first) = first.as_deref().and_then(EventId::parse) {
            return Ok(IngestOutcome::Duplicate { first });
        }
        // Replaces an expired row of the same key.
        conn.prepare_cached(
            "INSERT OR REPLACE INTO dedup (source, key, event_id, created_at_ms) VALUES (?1, ?2, ?3, ?4)",
        )?
        .execute(params![e.source, key, e.id.as_str(), e.received_at_ms])?;
    }
    conn.prepare_cached(
        "INSERT INTO events (id, source, received_at_ms, method, path, query, headers, body, payload, facts, trace, matched, matched_any, dedup_key)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)",
    )?
    .execute(params![
        e.id.as_str(),
        e.source,
        e.received_at_ms,
        e.method,
        e.path,
        e.query,
        p.headers,
        e.body.as_ref(),
        p.payload,
        p.facts,
        p.trace,
        p.matched,
        !e.matched.is_empty(),
        e.dedup_key,
    ])?;
    insert_deliveries(
        conn,
        e.id.as_str(),
        &e.deliveries,
        e.received_at_ms,
        now,
        None,
    )?;
    Ok(IngestOutcome::Stored)
}

/// When the next delivery is due: each state's earliest time is one step down
/// `deliveries_due` (running deliveries are few: at most the workers).
const NEXT_DUE: &str = "SELECT min(t) FROM (
    SELECT * FROM (SELECT next_attempt_at_ms AS t FROM deliveries WHERE status = 'pending' ORDER BY next_attempt_at_ms LIMIT 1)
    UNION ALL SELECT * FROM (SELECT next_attempt_at_ms FROM deliveries WHERE status = 'retrying' ORDER BY next_attempt_at_ms LIMIT 1)
    UNION ALL SELECT min(lease_until_ms) FROM deliveries WHERE status = 'running')";

/// Due deliveries, oldest due first. A delivery with a `serialize_key` is due
/// only when no earlier delivery with that key is unfinished, so deliveries of
/// one key run one at a time, in event order. A `running` delivery whose lease
/// has expired (its runner died) is due again.
fn claim(
    c: &Connection,
    owner: &str,
    now: i64,
    limit: u32,
    lease_ms: i64,
    skip_json: &str,
) -> rusqlite::Result<Vec<Claimed>> {
    // One query per state, each walking an index in due order and stopping at
    // the limit: the cost of a claim does not grow with the backlog.
    const SELECT: &str =
        "SELECT d.id, d.event_id, d.rule, d.action, d.action_type, d.attempts, d.serialize_key,
                e.source, e.received_at_ms, e.method, e.path, e.query, e.headers, e.body, e.payload,
                d.attempts_total, d.manual_retries,
                CASE WHEN d.manual_retries > 0 THEN d.retried_by ELSE d.replayed_by END,
                d.lease_token, d.need_ids IS NOT NULL
         FROM deliveries d JOIN events e ON e.id = d.event_id";
    const SERIAL: &str = "(d.serialize_key IS NULL OR NOT EXISTS (
                SELECT 1 FROM deliveries o
                WHERE o.serialize_key = d.serialize_key AND o.id < d.id
                  AND o.status IN ('pending', 'running', 'retrying')))
          AND (d.rule || '/' || d.action) NOT IN (SELECT value FROM json_each(?3))";
    let queries = [
        // A running delivery whose lease expired: its runner died. First,
        // as the oldest work there is: a backlog of new deliveries must not
        // hold up a takeover.
        format!(
            "{SELECT} WHERE d.status = 'running' AND d.lease_until_ms < ?1 AND {SERIAL} ORDER BY d.lease_until_ms LIMIT ?2"
        ),
        // Then due retries, older work than new deliveries (a delivery
        // taken over and given back is one), then new deliveries.
        format!(
            "{SELECT} WHERE d.status = 'retrying' AND d.next_attempt_at_ms <= ?1 AND {SERIAL} ORDER BY d.next_attempt_at_ms LIMIT ?2"
        ),
        format!(
            "{SELECT} WHERE d.status = 'pending' AND d.next_attempt_at_ms <= ?1 AND {SERIAL} ORDER BY d.next_attempt_at_ms LIMIT ?2"
        ),
    ];
    let mut claimed: Vec<Claimed> = Vec::new();
    for sql in &queries {
        let room = limit.saturating_sub(claimed.len() as u32);
        if room == 0 {
            break;
        }
        let mut select = c.prepare_cached(sql)?;
        let rows = select.query_map(params![now, room, skip_json], claimed_from_row)?;
        for row in rows {
            claimed.push(row?);
        }
    }
    let mut update = c.prepare_cached(
        "UPDATE deliveries SET status = 'running', attempts = attempts + 1, attempts_total = attempts_total + 1,
                lease_until_ms = ?2, updated_at_ms = ?3, owner = ?4, lease_token = ?5
         WHERE id = ?1",
    )?;
    for d in &claimed {
        update.execute(params![d.id.as_str(), now + lease_ms, now, owner, d.token])?;
    }
    Ok(claimed)
}

/// Undoes claims whose attempts never started.
fn release(
    c: &Connection,
    owner: &str,
    held: &[Lease],
    due_at: i64,
    now: i64,
) -> rusqlite::Result<()> {
    let mut update = c.prepare_cached(
        "UPDATE deliveries SET status = CASE WHEN attempts_total > 1 OR manual_retries > 0 THEN 'retrying' ELSE 'pending' END,
                attempts = attempts - 1, attempts_total = attempts_total - 1, lease_until_ms = NULL,
                next_attempt_at_ms = min(next_attempt_at_ms, ?2), updated_at_ms = ?3, owner = NULL
         WHERE id = ?1 AND status = 'running' AND owner = ?4 AND lease_token = ?5",
    )?;
    for l in held {
        update.execute(params![l.delivery.as_str(), due_at, now, owner, l.token])?;
    }
    Ok(())
}

/// Extends the leases `owner` holds; returns the deliveries it no longer holds.
fn renew(
    c: &Connection,
    owner: &str,
    held: &[Lease],
    until: i64,
) -> rusqlite::Result<Vec<DeliveryId>> {
    let mut update = c.prepare_cached(
        "UPDATE deliveries SET lease_until_ms = ?2
         WHERE id = ?1 AND status = 'running' AND owner = ?3 AND lease_token = ?4",
    )?;
    let mut lost = Vec::new();
    for l in held {
        if update.execute(params![l.delivery.as_str(), until, owner, l.token])? == 0 {
            lost.push(l.delivery.clone());
        }
    }
    Ok(lost)
}

fn claimed_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Claimed> {
    Ok(Claimed {
        id: id_column(r, 0, DeliveryId::parse)?,
        event_id: id_column(r, 1, EventId::parse)?,
        rule: r.get(2)?,
        action: r.get(3)?,
        action_type: r.get(4)?,
        attempt: r.get::<_, u32>(5)? + 1,
        number: r.get::<_, u32>(15)? + 1,
        round: r.get(16)?,
        requested_by: r.get(17)?,
        serialize_key: r.get(6)?,
        // The claim bumps it (see `claim`).
        token: r.get::<_, i64>(18)? + 1,
        step: r.get(19)?,
        // Parsed by the dispatcher, off this (the writer) thread.
        payload: StoredPayload::from_column(r.get(14)?),
        event: unparsed_request(r, 1, 7)?,
    })
}

/// An event's request from a row holding its id at `id` and, from `from`
/// on, its source, received_at_ms, method, path, query, headers, body and
/// payload.
fn request_from_row(r: &rusqlite::Row<'_>, id: usize, from: usize) -> rusqlite::Result<Request> {
    let mut request = unparsed_request(r, id, from)?;
    request.payload = payload_column(r, from + 7, &request.body)?;
    Ok(request)
}

/// [`request_from_row`] with a `null` payload.
fn unparsed_request(r: &rusqlite::Row<'_>, id: usize, from: usize) -> rusqlite::Result<Request> {
    Ok(Request {
        event_id: r.get(id)?,
        source: r.get(from)?,
        received_at: crate::clock::rfc3339_ms(r.get(from + 1)?),
        method: r.get(from + 2)?,
        path: r.get(from + 3)?,
        query: query_pairs(Some(&r.get::<_, String>(from + 4)?)),
        headers: json_column(r, from + 5)?,
        body: bytes::Bytes::from(r.get::<_, Vec<u8>>(from + 6)?),
        payload: serde_json::Value::Null,
    })
}

fn finish(c: &Connection, owner: &str, f: &Finished, now: i64) -> rusqlite::Result<Recorded> {
    // The delivery first: only the holder of the lease may move it on, and
    // only then is its attempt written.
    let moved: Option<(bool, String)> = c
        .prepare_cached(
            "UPDATE deliveries SET status = ?2, next_attempt_at_ms = coalesce(?3, next_attempt_at_ms),
                    lease_until_ms = NULL, updated_at_ms = ?4, owner = NULL
             WHERE id = ?1 AND status = 'running' AND owner = ?5 AND lease_token = ?6
             RETURNING has_steps, event_id",
        )?
        .query_row(
            params![
                f.lease.delivery.as_str(),
                f.state.as_str(),
                f.next_attempt_at_ms,
                now,
                owner,
                f.lease.token
            ],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?;
    let Some((has_steps, event_id)) = moved else {
        return Ok(Recorded::LeaseLost);
    };
    let a = &f.attempt;
    c.prepare_cached(
        "INSERT INTO attempts (id, delivery_id, number, started_at_ms, duration_ms, outcome, status_code, exit_code, error, response, budget_number, round, requested_by, output)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)",
    )?
    .execute(params![
        a.id.as_str(),
        f.lease.delivery.as_str(),
        a.number,
        a.started_at_ms,
        a.duration_ms,
        a.outcome.as_str(),
        a.status_code,
        a.exit_code,
        a.error,
        a.response,
        a.budget_number,
        a.round,
        a.requested_by,
        a.output,
    ])?;
    if has_steps
        && f.state.is_final()
        && let Some(judge) = &f.judge
    {
        settle_steps(
            c,
            &event_id,
            std::slice::from_ref(&f.lease.delivery),
            judge,
            now,
        )?;
    }
    Ok(Recorded::Yes)
}

/// The deliveries of an event, as settling its steps needs them.
fn links(c: &Connection, event_id: &str) -> rusqlite::Result<Vec<steps::Link>> {
    c.prepare_cached(
        "SELECT id, rule, action, status, need_ids, blocked_by FROM deliveries WHERE event_id = ?1 ORDER BY id",
    )?
    .query_map([event_id], |r| {
        let needs: Option<String> = r.get(4)?;
        let blocked: Option<String> = r.get(5)?;
        Ok(steps::Link {
            id: id_column(r, 0, DeliveryId::parse)?,
            rule: r.get(1)?,
            action: r.get(2)?,
            status: parsed_column(r, 3, DeliveryState::parse, "a delivery state")?,
            needs: match needs {
                Some(text) => serde_json::from_str::<Vec<String>>(&text)
                    .map_err(|e| bad_column(4, e))?
                    .iter()
                    .filter_map(|id| DeliveryId::parse(id))
                    .collect(),
                None => Vec::new(),
            },
            blocked_by: blocked.as_deref().and_then(DeliveryId::parse),
        })
    })?
    .collect()
}

/// The outputs the succeeded deliveries of an event kept.
fn outputs(
    c: &Connection,
    event_id: &str,
) -> rusqlite::Result<HashMap<DeliveryId, serde_json::Value>> {
    let mut out = HashMap::new();
    let mut stmt = c.prepare_cached(
        "SELECT d.id, (SELECT a.output FROM attempts a WHERE a.delivery_id = d.id AND a.output IS NOT NULL
                       ORDER BY a.number DESC LIMIT 1)
         FROM deliveries d WHERE d.event_id = ?1 AND d.status = 'succeeded'",
    )?;
    let rows = stmt.query_map([event_id], |r| {
        Ok((
            id_column(r, 0, DeliveryId::parse)?,
            r.get::<_, Option<String>>(1)?,
        ))
    })?;
    for row in rows {
        let (id, text) = row?;
        if let Some(v) = text.and_then(|t| serde_json::from_str(&t).ok()) {
            out.insert(id, v);
        }
    }
    Ok(out)
}

/// The request of a stored event, as steps' conditions read it.
fn event_request(c: &Connection, event_id: &str) -> rusqlite::Result<Request> {
    c.prepare_cached(
        "SELECT id, source, received_at_ms, method, path, query, headers, body, payload FROM events WHERE id = ?1",
    )?
    .query_row([event_id], |r| request_from_row(r, 0, 1))
}

/// Settles the steps behind `finished` deliveries of one event (see
/// [`steps::settle`]), in the transaction that finished them.
fn settle_steps(
    c: &Connection,
    event_id: &str,
    finished: &[DeliveryId],
    judge: &steps::Judge,
    now: i64,
) -> rusqlite::Result<()> {
    let mut links = links(c, event_id)?;
    if !steps::any_waiting(&links) {
        return Ok(());
    }
    let event = event_request(c, event_id)?;
    let outputs = outputs(c, event_id)?;
    let changes = steps::settle(
        &mut links,
        finished,
        &outputs,
        &event,
        judge.0.as_ref(),
        now,
    );
    let mut update = c.prepare_cached(
        "UPDATE deliveries SET status = ?2, next_attempt_at_ms = coalesce(?3, next_attempt_at_ms), reason = ?4,
                blocked_by = ?5, step_trace = ?6, updated_at_ms = ?7
         WHERE id = ?1 AND status = 'waiting'",
    )?;
    for change in &changes {
        let cols = change
            .columns()
            .map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))?;
        update.execute(params![
            change.id().as_str(),
            change.state().as_str(),
            cols.due_at_ms,
            cols.reason,
            cols.blocked_by,
            cols.trace,
            now
        ])?;
    }
    Ok(())
}

/// Events examined per pruning batch at first. Each batch is one writer job,
/// so a write that arrives meanwhile waits for one batch at most; the size
/// adapts between [`PRUNE_BATCH_MIN`] and [`PRUNE_BATCH_MAX`] so that a batch
/// takes about [`PRUNE_BATCH_TARGET`] on this disk and build.
const PRUNE_BATCH_START: u32 = 500;
const PRUNE_BATCH_MIN: u32 = 50;
const PRUNE_BATCH_MAX: u32 = 2000;
const PRUNE_BATCH_TARGET: Duration = Duration::from_millis(10);
/// The WAL file is cut back to this size whenever SQLite starts it over, so a
/// burst of deletes does not leave a huge file behind.
const WAL_SIZE_LIMIT: i64 = 32 << 20;

const PRUNE_RANGE: &str = "SELECT max(id), count(*) FROM (SELECT id FROM events WHERE id > ?1 AND id < ?2 ORDER BY id LIMIT ?3)";
const PRUNE_EVENTS: &str = "DELETE FROM events WHERE id > ?1 AND id <= ?2 AND received_at_ms < ?3 AND NOT EXISTS (
    SELECT 1 FROM deliveries d WHERE d.event_id = events.id AND d.status IN ('waiting', 'pending', 'running', 'retrying'))";
const PRUNE_DEDUP: &str =
    "DELETE FROM dedup WHERE rowid IN (SELECT rowid FROM dedup WHERE created_at_ms < ?1 LIMIT ?2)";

/// One batch of pruning: looks at the next `limit` events after `after` (in
/// id order, below `below`, the first id of the cutoff time) and deletes
/// those received before `before_ms` whose deliveries are all finished; their
/// deliveries and attempts go with them (ON DELETE CASCADE, through
/// `deliveries_by_event` and `attempts_by_delivery`). Every step walks an
/// index: the primary key for the range, never a scan of `events`. Returns
/// the last id looked at (`None` when the range is exhausted) and how many
/// events were deleted. Ids are made when the request arrives, before
/// `received_at_ms`, so the id range holds every event old enough; the
/// time check keeps any that is not (e.g. after the clock went back).
fn prune_events(
    c: &Connection,
    after: &str,
    below: &str,
    before_ms: i64,
    limit: u32,
) -> rusqlite::Result<(Option<String>, u64)> {
    let (last, seen): (Option<String>, u32) = c
        .prepare_cached(PRUNE_RANGE)?
        .query_row(params![after, below, limit], |r| Ok((r.get(0)?, r.get(1)?)))?;
    let Some(last) = last else {
        return Ok((None, 0));
    };
    let deleted = c
        .prepare_cached(PRUNE_EVENTS)?
        .execute(params![after, last, before_ms])?;
    Ok(((seen == limit).then_some(last), deleted as u64))
}

/// One batch of expired dedup keys (through `dedup_by_age`); how many went.
fn prune_dedup(c: &Connection, expired_before: i64, limit: u32) -> rusqlite::Result<u64> {
    c.prepare_cached(PRUNE_DEDUP)?
        .execute(params![expired_before, limit])
        .map(|n| n as u64)
}

/// The next batch size: smaller when the last batch took longer than the target.
fn next_batch_size(size: u32, took: Duration) -> u32 {
    let size = if took > PRUNE_BATCH_TARGET {
        size / 2
    } else if took < PRUNE_BATCH_TARGET / 2 {
        size.saturating_mul(2)
    } else {
        size
    };
    size.clamp(PRUNE_BATCH_MIN, PRUNE_BATCH_MAX)
}

/// Deliveries a previous process left `running` (it crashed or was cut off at
/// shutdown) are due again at once: at-least-once, never stuck.
/// Puts `running` deliveries back in the queue, due now: those of `owner`,
/// or with `None` every one (at open, when the file lock proves that no
/// other process holds a lease).
fn requeue_orphans(c: &Connection, owner: Option<&str>) -> rusqlite::Result<usize> {
    c.execute(
        "UPDATE deliveries SET status = 'retrying', lease_until_ms = NULL, owner = NULL, next_attempt_at_ms = ?1
         WHERE status = 'running' AND (?2 IS NULL OR owner = ?2)",
        params![now_ms(), owner],
    )
}

/// `SELECT <every event column> FROM events <rest>`, as one literal.
macro_rules! select_events {
    ($rest:literal) => {
        concat!(
            "SELECT id, source, received_at_ms, method, path, query, headers, body, payload, facts, trace, matched, dedup_key FROM events ",
            $rest
        )
    };
}

/// A column that does not decode is a bug or a damaged file; say which column.
fn bad_column(i: usize, what: impl Display) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(i, Type::Text, what.to_string().into())
}

/// An id column (`"an id"`) or a state column (`"a delivery state"`).
fn parsed_column<T>(
    r: &rusqlite::Row<'_>,
    i: usize,
    parse: fn(&str) -> Option<T>,
    what: &str,
) -> rusqlite::Result<T> {
    let text: String = r.get(i)?;
    parse(&text).ok_or_else(|| bad_column(i, format_args!("not {what}: {text}")))
}

fn id_column<T>(
    r: &rusqlite::Row<'_>,
    i: usize,
    parse: fn(&str) -> Option<T>,
) -> rusqlite::Result<T> {
    parsed_column(r, i, parse, "an id")
}

fn json_column<T: serde::de::DeserializeOwned>(
    r: &rusqlite::Row<'_>,
    i: usize,
) -> rusqlite::Result<T> {
    let text: String = r.get(i)?;
    serde_json::from_str(&text).map_err(|e| bad_column(i, e))
}

/// The payload column, parsed ([`StoredPayload`]) with the event's body.
fn payload_column(
    r: &rusqlite::Row<'_>,
    i: usize,
    body: &[u8],
) -> rusqlite::Result<serde_json::Value> {
    StoredPayload::from_column(r.get(i)?)
        .parse(body)
        .map_err(|e| bad_column(i, e))
}

fn event_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<StoredEvent> {
    // Read once: the payload of a JSON body is parsed from it.
    let body: Vec<u8> = r.get(7)?;
    Ok(StoredEvent {
        id: id_column(r, 0, EventId::parse)?,
        source: r.get(1)?,
        received_at_ms: r.get(2)?,
        method: r.get(3)?,
        path: r.get(4)?,
        query: r.get(5)?,
        headers: json_column(r, 6)?,
        payload: payload_column(r, 8, &body)?,
        body,
        facts: json_column(r, 9)?,
        trace: json_column(r, 10)?,
        matched: json_column(r, 11)?,
        dedup_key: r.get(12)?,
        deliveries: Vec::new(),
    })
}

/// ` WHERE a AND b` of the conditions that apply, or nothing.
fn filters(conditions: &[(bool, &str)]) -> String {
    let on: Vec<&str> = conditions
        .iter()
        .filter(|(applies, _)| *applies)
        .map(|(_, c)| *c)
        .collect();
    if on.is_empty() {
        String::new()
    } else {
        format!(" WHERE {}", on.join(" AND "))
    }
}

/// A page of events, newest first: ?1 source, ?2 matched, ?3 before, ?4
/// limit; only the filters given are in the statement. A generic
/// `(?1 IS NULL OR source = ?1)` cannot use an index, so each combination
/// is its own statement: with a source it walks `events_by_source`, else the
/// primary key, newest first, and stops at the limit (no sort, no full scan).
fn event_page_sql(source: bool, matched: bool, before: bool) -> String {
    format!(
        "{}{} ORDER BY id DESC LIMIT ?4",
        select_events!(""),
        filters(&[
            (source, "source = ?1"),
            (matched, "matched_any = ?2"),
            (before, "id < ?3"),
        ])
    )
}

/// A page of deliveries, newest first: ?1 status, ?2 before, ?3 limit. With
/// a status it walks `deliveries_by_status` (status, id), else the primary key.
fn delivery_page_sql(status: bool, before: bool) -> String {
    format!(
        "SELECT {DELIVERY_COLUMNS} FROM deliveries{} ORDER BY id DESC LIMIT ?3",
        filters(&[(status, "status = ?1"), (before, "id < ?2")])
    )
}

const DELIVERY_COLUMNS: &str = "id, event_id, rule, action, action_type, status, serialize_key, attempts, created_at_ms, \
     attempts_total, manual_retries, retried_by, replayed_by, needs, next_attempt_at_ms, reason, step_trace, \
     CASE WHEN has_steps THEN (SELECT a.output FROM attempts a WHERE a.delivery_id = deliveries.id \
          AND a.output IS NOT NULL ORDER BY a.number DESC LIMIT 1) END";

fn delivery_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<StoredDelivery> {
    Ok(StoredDelivery {
        id: id_column(r, 0, DeliveryId::parse)?,
        event_id: id_column(r, 1, EventId::parse)?,
        rule: r.get(2)?,
        action: r.get(3)?,
        action_type: r.get(4)?,
        status: parsed_column(r, 5, DeliveryState::parse, "a delivery state")?,
        serialize_key: r.get(6)?,
        attempts: r.get(9)?,
        attempts_in_budget: r.get(7)?,
        manual_retries: r.get(10)?,
        retried_by: r.get(11)?,
        replayed_by: r.get(12)?,
        created_at_ms: r.get(8)?,
        needs: r
            .get::<_, Option<String>>(13)?
            .map(|t| serde_json::from_str(&t).map_err(|e| bad_column(13, e)))
            .transpose()?
            .unwrap_or_default(),
        due_at_ms: match DeliveryState::parse(&r.get::<_, String>(5)?) {
            Some(DeliveryState::Pending | DeliveryState::Retrying) => Some(r.get(14)?),
            _ => None,
        },
        reason: r.get(15)?,
        when: r
            .get::<_, Option<String>>(16)?
            .map(|t| serde_json::from_str(&t).map_err(|e| bad_column(16, e)))
            .transpose()?
            .unwrap_or_default(),
        output: r
            .get::<_, Option<String>>(17)?
            .and_then(|t| serde_json::from_str(&t).ok())
            .map(steps::view),
    })
}

fn with_deliveries(conn: &Connection, mut event: StoredEvent) -> rusqlite::Result<StoredEvent> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {DELIVERY_COLUMNS} FROM deliveries WHERE event_id = ?1 ORDER BY id"
    ))?;
    let rows = stmt.query_map([event.id.as_str()], delivery_from_row)?;
    event.deliveries = rows.collect::<rusqlite::Result<_>>()?;
    Ok(event)
}

/// A fresh budget for a dead or skipped delivery. Its lifetime count and its
/// attempts stay: numbering goes on after them, in a new round.
fn retry_delivery(
    c: &Connection,
    id: &str,
    request: &str,
    now: i64,
) -> rusqlite::Result<RetryOutcome> {
    let status: Option<String> = c
        .query_row("SELECT status FROM deliveries WHERE id = ?1", [id], |r| {
            r.get(0)
        })
        .optional()?;
    Ok(match status.as_deref() {
        None => RetryOutcome::NotFound,
        Some("dead" | "skipped") => {
            let (event_id, blocked): (String, Option<String>) = c.query_row(
                "SELECT event_id, (SELECT n.action || ', which is ' || n.status FROM deliveries n WHERE n.id = d.blocked_by)
                 FROM deliveries d WHERE d.id = ?1",
                [id],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )?;
            if let Some(need) = blocked {
                return Ok(RetryOutcome::BehindNeed(need));
            }
            c.execute(
                "UPDATE deliveries SET status = 'pending', attempts = 0, manual_retries = manual_retries + 1, retried_by = ?3,
                 next_attempt_at_ms = ?2, lease_until_ms = NULL, updated_at_ms = ?2, reason = NULL WHERE id = ?1",
                params![id, now, request],
            )?;
            // The steps this delivery's end skipped wait for it again.
            let Some(retried) = DeliveryId::parse(id) else {
                return Ok(RetryOutcome::Queued);
            };
            let mut wait = c.prepare_cached(
                "UPDATE deliveries SET status = 'waiting', reason = NULL, blocked_by = NULL, updated_at_ms = ?2
                 WHERE id = ?1 AND status = 'skipped'",
            )?;
            for step in steps::unblocked_by(&links(c, &event_id)?, &retried) {
                wait.execute(params![step.as_str(), now])?;
            }
            RetryOutcome::Queued
        }
        Some(other) => RetryOutcome::NotRetryable(other.to_owned()),
    })
}

/// New deliveries of `event`, due at `due_at_ms` unless they say when
/// (`delay`); steps are stored `waiting`. `replayed_by` names the request
/// of a replay.
fn insert_deliveries(
    c: &Connection,
    event: &str,
    deliveries: &[NewDelivery],
    due_at_ms: i64,
    now: i64,
    replayed_by: Option<&str>,
) -> rusqlite::Result<()> {
    let mut insert = c.prepare_cached(
        "INSERT INTO deliveries (id, event_id, rule, action, action_type, status, serialize_key, attempts, next_attempt_at_ms,
                                 created_at_ms, updated_at_ms, replayed_by, needs, need_ids, has_steps)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 0, ?8, ?9, ?9, ?10, ?11, ?12, ?13)",
    )?;
    for d in deliveries {
        let step = super::StepColumns::of(d);
        insert.execute(params![
            d.id.as_str(),
            event,
            d.rule,
            d.action,
            d.action_type,
            step.status,
            d.serialize_key,
            d.due_at_ms.unwrap_or(due_at_ms),
            now,
            replayed_by,
            step.needs,
            step.need_ids,
            d.has_steps,
        ])?;
    }
    Ok(())
}

impl Store for SqliteStore {
    fn ingest(&self, event: NewEvent) -> BoxFuture<'_, Result<IngestOutcome, StoreError>> {
        Box::pin(async move {
            let prepared = Prepared::new(event)?;
            let stored = self
                .write(move |c, now| ingest_one(c, &prepared, now))
                .await;
            if stored.is_err() {
                self.health.refused();
            }
            stored
        })
    }

    fn claim(
        &self,
        owner: &InstanceId,
        now_ms: i64,
        limit: u32,
        lease: Duration,
        skip: Vec<String>,
    ) -> BoxFuture<'_, Result<Vec<Claimed>, StoreError>> {
        let lease_ms = millis(lease);
        // The names of the skipped actions as one JSON array (`json_each`).
        let skip = serde_json::to_string(&skip).unwrap_or_else(|_| "[]".to_owned());
        let owner = owner.to_string();
        Box::pin(self.write_lazy(move |c, _| claim(c, &owner, now_ms, limit, lease_ms, &skip)))
    }

    fn renew(
        &self,
        owner: &InstanceId,
        held: Vec<Lease>,
        lease: Duration,
    ) -> BoxFuture<'_, Result<Vec<DeliveryId>, StoreError>> {
        let (owner, lease_ms) = (owner.to_string(), millis(lease));
        Box::pin(self.write_lazy(move |c, now| renew(c, &owner, &held, now + lease_ms)))
    }

    fn expedite(
        &self,
        actions: Vec<String>,
        now_ms: i64,
    ) -> BoxFuture<'_, Result<u64, StoreError>> {
        let actions = serde_json::to_string(&actions).unwrap_or_else(|_| "[]".to_owned());
        Box::pin(self.write(move |c, now| {
            c.prepare_cached(
                "UPDATE deliveries SET next_attempt_at_ms = ?1, updated_at_ms = ?3
                 WHERE status = 'retrying' AND next_attempt_at_ms > ?1
                   AND (rule || '/' || action) IN (SELECT value FROM json_each(?2))",
            )?
            .execute(params![now_ms, actions, now])
            .map(|n| n as u64)
        }))
    }

    fn release(
        &self,
        owner: &InstanceId,
        held: Vec<Lease>,
        due_at_ms: i64,
    ) -> BoxFuture<'_, Result<(), StoreError>> {
        let owner = owner.to_string();
        Box::pin(self.write_lazy(move |c, now| release(c, &owner, &held, due_at_ms, now)))
    }

    fn finish(
        &self,
        owner: &InstanceId,
        f: Finished,
    ) -> BoxFuture<'_, Result<Recorded, StoreError>> {
        let owner = owner.to_string();
        Box::pin(self.write_lazy(move |c, now| finish(c, &owner, &f, now)))
    }

    fn next_due(&self) -> BoxFuture<'_, Result<Option<i64>, StoreError>> {
        // Its own connection: the dispatcher never waits behind admin reads.
        Box::pin(read_on(self.due.clone(), |c| {
            c.prepare_cached(NEXT_DUE)?.query_row([], |r| r.get(0))
        }))
    }

    fn prune(&self, before_ms: i64) -> BoxFuture<'_, Result<Pruned, StoreError>> {
        Box::pin(self.prune_in_batches(before_ms))
    }

    fn event(&self, id: &EventId) -> BoxFuture<'_, Result<Option<StoredEvent>, StoreError>> {
        let id = id.as_str().to_owned();
        Box::pin(self.read(move |conn| {
            conn.prepare_cached(select_events!("WHERE id = ?1"))?
                .query_row([&id], event_from_row)
                .optional()?
                .map(|e| with_deliveries(conn, e))
                .transpose()
        }))
    }

    fn events(
        &self,
        source: Option<&str>,
        limit: u32,
    ) -> BoxFuture<'_, Result<Vec<StoredEvent>, StoreError>> {
        let source = source.map(str::to_owned);
        Box::pin(self.read(move |conn| {
            let events = conn
                .prepare_cached(&event_page_sql(source.is_some(), false, false))?
                .query_map(
                    params![source, None::<bool>, None::<String>, limit],
                    event_from_row,
                )?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            events
                .into_iter()
                .map(|e| with_deliveries(conn, e))
                .collect()
        }))
    }

    fn event_page(
        &self,
        source: Option<String>,
        matched: Option<bool>,
        page: Page,
    ) -> BoxFuture<'_, Result<Vec<StoredEvent>, StoreError>> {
        Box::pin(self.read(move |conn| {
            let sql = event_page_sql(source.is_some(), matched.is_some(), page.before.is_some());
            let events = conn
                .prepare_cached(&sql)?
                .query_map(
                    params![source, matched, page.before, page.limit],
                    event_from_row,
                )?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            events
                .into_iter()
                .map(|e| with_deliveries(conn, e))
                .collect()
        }))
    }

    fn delivery_page(
        &self,
        status: Option<String>,
        page: Page,
    ) -> BoxFuture<'_, Result<Vec<StoredDelivery>, StoreError>> {
        Box::pin(self.read(move |conn| {
            conn.prepare_cached(&delivery_page_sql(status.is_some(), page.before.is_some()))?
                .query_map(params![status, page.before, page.limit], delivery_from_row)?
                .collect()
        }))
    }

    fn delivery(
        &self,
        id: &DeliveryId,
    ) -> BoxFuture<'_, Result<Option<StoredDelivery>, StoreError>> {
        let id = id.to_string();
        Box::pin(self.read(move |conn| {
            conn.query_row(
                &format!("SELECT {DELIVERY_COLUMNS} FROM deliveries WHERE id = ?1"),
                [&id],
                delivery_from_row,
            )
            .optional()
        }))
    }

    fn attempts(&self, id: &DeliveryId) -> BoxFuture<'_, Result<Vec<StoredAttempt>, StoreError>> {
        let id = id.to_string();
        Box::pin(self.read(move |conn| {
            conn.prepare_cached(
                "SELECT id, number, started_at_ms, duration_ms, outcome, status_code, exit_code, error, response,
                        budget_number, round, requested_by
                 FROM attempts WHERE delivery_id = ?1 ORDER BY number",
            )?
            .query_map([&id], |r| {
                let response: Option<Vec<u8>> = r.get(8)?;
                Ok(StoredAttempt {
                    id: r.get(0)?,
                    number: r.get(1)?,
                    budget_number: r.get(9)?,
                    round: r.get(10)?,
                    requested_by: r.get(11)?,
                    started_at_ms: r.get(2)?,
                    duration_ms: r.get(3)?,
                    outcome: parsed_column(r, 4, AttemptOutcome::parse, "an attempt outcome")?,
                    status_code: r.get(5)?,
                    exit_code: r.get(6)?,
                    error: r.get(7)?,
                    response: String::from_utf8_lossy(&response.unwrap_or_default()).into_owned(),
                })
            })?
            .collect()
        }))
    }

    fn oldest_waiting(&self) -> BoxFuture<'_, Result<Option<i64>, StoreError>> {
        Box::pin(self.read(|c| {
            c.query_row(
                "SELECT min(created_at_ms) FROM deliveries WHERE status IN ('pending', 'retrying')",
                [],
                |r| r.get(0),
            )
        }))
    }

    fn requeue_own(&self, owner: &InstanceId) -> BoxFuture<'_, Result<u64, StoreError>> {
        let owner = owner.to_string();
        Box::pin(self.write(move |c, _| requeue_orphans(c, Some(&owner)).map(|n| n as u64)))
    }

    fn retry(
        &self,
        id: &DeliveryId,
        request: &RequestId,
    ) -> BoxFuture<'_, Result<RetryOutcome, StoreError>> {
        let (id, request) = (id.to_string(), request.to_string());
        Box::pin(self.write(move |c, now| retry_delivery(c, &id, &request, now)))
    }

    fn add_deliveries(
        &self,
        event: &EventId,
        deliveries: Vec<NewDelivery>,
        request: &RequestId,
    ) -> BoxFuture<'_, Result<(), StoreError>> {
        let (event, request) = (event.to_string(), request.to_string());
        Box::pin(self.write(move |c, now| {
            insert_deliveries(c, &event, &deliveries, now, now, Some(&request))
        }))
    }

    fn step_outputs(
        &self,
        step: &DeliveryId,
    ) -> BoxFuture<'_, Result<serde_json::Map<String, serde_json::Value>, StoreError>> {
        let step = step.clone();
        Box::pin(self.read(move |c| {
            let event_id: Option<String> = c
                .query_row(
                    "SELECT event_id FROM deliveries WHERE id = ?1",
                    [step.as_str()],
                    |r| r.get(0),
                )
                .optional()?;
            let Some(event_id) = event_id else {
                return Ok(serde_json::Map::new());
            };
            let links = links(c, &event_id)?;
            let outputs = outputs(c, &event_id)?;
            Ok(steps::outputs_of(&links, &step, &outputs))
        }))
    }

    fn queue_depth(&self) -> BoxFuture<'_, Result<u64, StoreError>> {
        Box::pin(self.read(|c| {
            c.query_row(
                "SELECT count(*) FROM deliveries WHERE status IN ('pending', 'retrying')",
                [],
                |r| r.get::<_, i64>(0),
            )
            .map(|n| n.max(0) as u64)
        }))
    }

    fn ping(&self) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(async move {
            // Reads alone would still work without the writer; ready means able to store.
            if self.jobs.is_closed() {
                return Err(writer_stopped());
            }
            self.health.check()?;
            self.read(|conn| conn.query_row("SELECT 1", [], |_| Ok(())))
                .await
        })
    }

    fn stats(&self) -> BoxFuture<'_, StoreStats> {
        let writer_queue = (self.jobs.max_capacity() - self.jobs.capacity()) as u64;
        let path = self.path.clone();
        Box::pin(async move {
            // A stalled file system must not stall the scrape's runtime thread.
            let sizes = tokio::task::spawn_blocking(move || file_sizes(&path)).await;
            let (database_bytes, wal_bytes, disk_free_bytes) = sizes.unwrap_or_default();
            StoreStats {
                writer_queue,
                database_bytes,
                wal_bytes,
                disk_free_bytes,
            }
        })
    }
}

/// The database file's size, its WAL's, and the space left on their file system.
fn file_sizes(path: &Path) -> (Option<u64>, Option<u64>, Option<u64>) {
    let size = |p: &Path| std::fs::metadata(p).ok().map(|m| m.len());
    let mut wal = path.as_os_str().to_owned();
    wal.push("-wal");
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    // The field types differ between platforms; on Linux both are already u64.
    #[allow(clippy::useless_conversion)]
    let free = nix::sys::statvfs::statvfs(dir)
        .ok()
        .map(|s| u64::from(s.blocks_available()).saturating_mul(u64::from(s.fragment_size())));
    (size(path), size(Path::new(&wal)), free)
}

impl SqliteStore {
    /// Whether the store's commits are failing now.
    pub fn is_failing(&self) -> bool {
        self.health.is_failing()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::DeliveryState;
    use crate::store::NewDelivery;

    fn event(source: &str, dedup: Option<&str>) -> NewEvent {
        NewEvent {
            id: EventId::new(),
            source: source.to_owned(),
            received_at_ms: now_ms() - 5,
            method: "POST".into(),
            path: format!("/hooks/{source}"),
            query: "a=1&b=%20".into(),
            // Deliberately not sorted: the order received must survive.
            headers: vec![
                ("x-b".into(), "2".into()),
                ("content-type".into(), "application/json".into()),
                ("x-b".into(), "1".into()),
            ],
            body: bytes::Bytes::from_static(b"{\"k\":\"\xff\x00\"}"),
            payload: Some(r#"{"k":1,"nested":{"a":[true,null]}}"#.into()),
            facts: vec!["a fact".into()],
            trace: serde_json::from_str(r#"[{"rule":"r","matched":true,"conditions":[]}]"#)
                .unwrap(),
            matched: vec!["r".into()],
            dedup_key: dedup.map(str::to_owned),
            deliveries: vec![
                NewDelivery {
                    id: DeliveryId::new(),
                    rule: "r".into(),
                    action: "http-0".into(),
                    action_type: "http".into(),
                    serialize_key: None,
                    due_at_ms: None,
                    needs: Vec::new(),
                    need_names: Vec::new(),
                    has_steps: false,
                },
                NewDelivery {
                    id: DeliveryId::new(),
                    rule: "r".into(),
                    action: "cmd".into(),
                    action_type: "command".into(),
                    serialize_key: Some("deploy-a/b".into()),
                    due_at_ms: None,
                    needs: Vec::new(),
                    need_names: Vec::new(),
                    has_steps: false,
                },
            ],
        }
    }

    fn db_path(dir: &tempfile::TempDir) -> String {
        dir.path().join("t.db").to_str().unwrap().to_owned()
    }

    fn open(dir: &tempfile::TempDir) -> SqliteStore {
        SqliteStore::open(&db_path(dir)).unwrap()
    }

    fn raw(dir: &tempfile::TempDir) -> Connection {
        Connection::open(db_path(dir)).unwrap()
    }

    /// A migrated write connection, for driving `run_batch` directly so a
    /// test knows exactly which jobs share a transaction.
    fn writer(dir: &tempfile::TempDir) -> Connection {
        let mut conn = open_conn(Path::new(&db_path(dir)), BUSY_TIMEOUT).unwrap();
        migrate(&mut conn).unwrap();
        conn
    }

    /// Runs `events` as one batch and returns each job's answer, in order.
    /// A batch of claims, heartbeats and releases only commits without a
    /// disk flush (`synchronous = NORMAL`); any durable job in the batch
    /// makes it flush (`FULL`), and the writer is back to `FULL` after.
    #[test]
    fn only_batches_without_durable_jobs_skip_the_disk_flush() {
        let dir = tempfile::tempdir().unwrap();
        let _store = open(&dir);
        drop(_store);
        let mut conn = writer(&dir);
        let job = |durable: bool| {
            let (tx, rx) = oneshot::channel::<Result<i64, StoreError>>();
            let job: Box<dyn WriteJob> = Box::new(Job {
                work: Some(|c: &Connection, _now| {
                    c.query_row("PRAGMA synchronous", [], |r| r.get::<_, i64>(0))
                }),
                result: None,
                reply: tx,
                durable,
            });
            (job, rx)
        };
        const NORMAL: i64 = 1;
        const FULL: i64 = 2;
        for (kinds, want) in [
            (vec![false, false], NORMAL),
            (vec![false, true], FULL),
            (vec![true], FULL),
        ] {
            let (mut batch, answers): (Vec<_>, Vec<_>) = kinds.iter().map(|d| job(*d)).unzip();
            run_batch(&mut conn, &mut batch).unwrap();
            for j in batch {
                j.reply(Ok(()));
            }
            for mut rx in answers {
                assert_eq!(rx.try_recv().unwrap().unwrap(), want, "{kinds:?}");
            }
            let after: i64 = conn
                .query_row("PRAGMA synchronous", [], |r| r.get(0))
                .unwrap();
            assert_eq!(after, FULL, "{kinds:?}");
        }
    }

    fn one_batch(
        conn: &mut Connection,
        events: Vec<NewEvent>,
        commits: &AtomicU64,
    ) -> Vec<Result<IngestOutcome, StoreError>> {
        let mut batch = Vec::new();
        let mut answers = Vec::new();
        for e in events {
            let (tx, rx) = oneshot::channel();
            let p = Prepared::new(e).unwrap();
            let job: Box<dyn WriteJob> = Box::new(Job {
                work: Some(move |c: &Connection, now| ingest_one(c, &p, now)),
                result: None,
                reply: tx,
                durable: true,
            });
            batch.push(job);
            answers.push(rx);
        }
        // As the writer loop does it.
        let committed = run_batch(conn, &mut batch);
        if committed.is_ok() {
            commits.fetch_add(1, Ordering::Relaxed);
        }
        for job in batch.drain(..) {
            job.reply(committed.as_ref().map(|_| ()));
        }
        answers
            .into_iter()
            .map(|mut rx| rx.try_recv().unwrap())
            .collect()
    }

    fn ids(events: Vec<StoredEvent>) -> Vec<EventId> {
        events.into_iter().map(|e| e.id).collect()
    }

    #[tokio::test]
    async fn events_round_trip_with_every_field_and_their_deliveries() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(&dir);
        let e = event("github", Some("guid-1"));
        assert_eq!(
            store.ingest(e.clone()).await.unwrap(),
            IngestOutcome::Stored
        );
        let got = store.event(&e.id).await.unwrap().unwrap();
        assert_eq!(
            (
                &got.id,
                got.source.as_str(),
                got.received_at_ms,
                got.method.as_str(),
                got.path.as_str(),
                got.query.as_str(),
                &got.headers,
                &got.body[..],
                got.dedup_key.as_deref(),
            ),
            (
                &e.id,
                "github",
                e.received_at_ms,
                "POST",
                "/hooks/github",
                "a=1&b=%20",
                &e.headers,
                &e.body[..],
                Some("guid-1"),
            )
        );
        assert_eq!(
            (
                &got.payload,
                &got.facts,
                &serde_json::to_value(&got.trace).unwrap(),
                &got.matched
            ),
            (
                &serde_json::json!({"k": 1, "nested": {"a": [true, null]}}),
                &e.facts,
                &serde_json::json!([{"rule": "r", "matched": true, "conditions": []}]),
                &e.matched
            )
        );
        let want: Vec<_> = e
            .deliveries
            .iter()
            .map(|d| {
                (
                    d.id.clone(),
                    e.id.clone(),
                    d.rule.clone(),
                    d.action.clone(),
                    d.action_type.clone(),
                    DeliveryState::Pending,
                    d.serialize_key.clone(),
                    0,
                )
            })
            .collect();
        let have: Vec<_> = got
            .deliveries
            .iter()
            .map(|d| {
                (
                    d.id.clone(),
                    d.event_id.clone(),
                    d.rule.clone(),
                    d.action.clone(),
                    d.action_type.clone(),
                    d.status,
                    d.serialize_key.clone(),
                    d.attempts,
                )
            })
            .collect();
        assert_eq!(have, want);
        assert!(
            got.deliveries
                .iter()
                .all(|d| d.created_at_ms >= e.received_at_ms)
        );
        // The columns the dispatcher and the `matched=` filter will use.
        let (due, lease, matched_any): (i64, Option<i64>, i64) = raw(&dir)
            .query_row(
                "SELECT d.next_attempt_at_ms, d.lease_until_ms, e.matched_any FROM deliveries d JOIN events e ON e.id = d.event_id LIMIT 1",
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .unwrap();
        assert_eq!((due, lease, matched_any), (e.received_at_ms, None, 1));
        assert!(store.event(&EventId::new()).await.unwrap().is_none());
    }

    #[tokio::test]
    async fn a_json_payload_is_stored_once_as_the_body() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(&dir);
        let mut e = event("github", None);
        // BOM and all: read back exactly as ingest decoded it.
        e.body = bytes::Bytes::from_static(
            b"\xEF\xBB\xBF{\"ref\": \"refs/heads/main\", \"n\": [1, 2.5]}",
        );
        e.payload = None;
        store.ingest(e.clone()).await.unwrap();
        let got = store.event(&e.id).await.unwrap().unwrap();
        assert_eq!(
            got.payload,
            serde_json::json!({"ref": "refs/heads/main", "n": [1, 2.5]})
        );
        let column: String = raw(&dir)
            .query_row("SELECT payload FROM events", [], |r| r.get(0))
            .unwrap();
        assert_eq!(column, "");
        // The dispatcher reads the same payload with the delivery it claims,
        // parsing it itself, off the writer thread.
        let mut claimed = store
            .claim(me(), now_ms(), 10, Duration::from_secs(60), Vec::new())
            .await
            .unwrap()
            .remove(0);
        assert_eq!(claimed.event.payload, serde_json::Value::Null);
        claimed.parse_payload().unwrap();
        assert_eq!(claimed.event.payload, got.payload);
    }

    /// A payload that cannot be read (only a damaged database holds one) no
    /// longer fails the claim it is in, which would hold up every delivery
    /// claimed with it, again and again: the claim succeeds and the attempt
    /// of that one delivery fails on it.
    #[tokio::test]
    async fn an_unreadable_stored_payload_fails_only_its_own_attempt() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(&dir);
        let (good, bad) = (event("github", None), event("github", None));
        store.ingest(good.clone()).await.unwrap();
        store.ingest(bad.clone()).await.unwrap();
        raw(&dir)
            .execute(
                "UPDATE events SET payload = '{\"ref\": ' WHERE id = ?1",
                [bad.id.as_str()],
            )
            .unwrap();
        let mut claimed = store
            .claim(me(), now_ms(), 10, Duration::from_secs(60), Vec::new())
            .await
            .unwrap();
        let events: std::collections::BTreeSet<_> =
            claimed.iter().map(|c| c.event_id.clone()).collect();
        assert_eq!(events, [good.id, bad.id.clone()].into(), "{claimed:?}");
        for c in &mut claimed {
            let parsed = c.parse_payload();
            if c.event_id == bad.id {
                let e = parsed.unwrap_err().to_string();
                assert!(e.contains("EOF while parsing"), "{e}");
            } else {
                parsed.unwrap();
                assert_ne!(c.event.payload, serde_json::Value::Null);
            }
        }
    }

    #[tokio::test]
    async fn empty_bodies_and_unmatched_events_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(&dir);
        let mut e = event("form", None);
        e.body = bytes::Bytes::new();
        e.payload = Some("null".into());
        e.headers.clear();
        e.matched.clear();
        e.deliveries.clear();
        store.ingest(e.clone()).await.unwrap();
        let got = store.event(&e.id).await.unwrap().unwrap();
        assert_eq!(
            (got.body, got.payload, got.headers, got.deliveries.len()),
            (Vec::new(), serde_json::Value::Null, Vec::new(), 0)
        );
        let matched_any: i64 = raw(&dir)
            .query_row("SELECT matched_any FROM events", [], |r| r.get(0))
            .unwrap();
        assert_eq!(matched_any, 0);
    }

    #[tokio::test]
    async fn listing_is_newest_first_filters_by_source_and_carries_deliveries() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(&dir);
        let mut sent = Vec::new();
        for s in ["a", "b", "a"] {
            let e = event(s, None);
            sent.push(e.id.clone());
            store.ingest(e).await.unwrap();
        }
        let all = store.events(None, 10).await.unwrap();
        assert!(all.iter().all(|e| e.deliveries.len() == 2));
        assert_eq!(
            ids(all),
            [sent[2].clone(), sent[1].clone(), sent[0].clone()]
        );
        assert_eq!(
            ids(store.events(Some("a"), 10).await.unwrap()),
            [sent[2].clone(), sent[0].clone()]
        );
        assert_eq!(
            ids(store.events(Some("a"), 1).await.unwrap()),
            [sent[2].clone()]
        );
        assert!(store.events(Some("zzz"), 10).await.unwrap().is_empty());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_ingests_share_commits() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(open(&dir));
        let tasks: Vec<_> = (0..200)
            .map(|_| {
                let s = store.clone();
                tokio::spawn(async move { s.ingest(event("github", None)).await })
            })
            .collect();
        for t in tasks {
            assert_eq!(t.await.unwrap().unwrap(), IngestOutcome::Stored);
        }
        assert_eq!(store.events(None, 1000).await.unwrap().len(), 200);
        assert!(
            store.commit_count() < 200,
            "{} commits for 200 events",
            store.commit_count()
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_copies_of_a_dedup_key_store_exactly_one() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(open(&dir));
        let tasks: Vec<_> = (0..50)
            .map(|_| {
                let s = store.clone();
                let e = event("github", Some("delivery-1"));
                let id = e.id.clone();
                tokio::spawn(async move { (id, s.ingest(e).await.unwrap()) })
            })
            .collect();
        let mut stored = Vec::new();
        let mut firsts = Vec::new();
        for t in tasks {
            match t.await.unwrap() {
                (id, IngestOutcome::Stored) => stored.push(id),
                (_, IngestOutcome::Duplicate { first }) => firsts.push(first),
            }
        }
        assert_eq!(stored.len(), 1);
        assert_eq!(firsts.len(), 49);
        assert!(firsts.iter().all(|f| *f == stored[0]));
        assert_eq!(ids(store.events(None, 100).await.unwrap()), stored);
        // Another source may use the same key.
        assert_eq!(
            store
                .ingest(event("gitlab", Some("delivery-1")))
                .await
                .unwrap(),
            IngestOutcome::Stored
        );
    }

    #[test]
    fn copies_of_a_dedup_key_in_one_batch_store_exactly_one() {
        let dir = tempfile::tempdir().unwrap();
        let mut conn = writer(&dir);
        let commits = AtomicU64::new(0);
        let a = event("github", Some("k"));
        let b = event("github", Some("k"));
        let answers = one_batch(&mut conn, vec![a.clone(), b], &commits);
        assert_eq!(
            answers.into_iter().map(Result::unwrap).collect::<Vec<_>>(),
            [
                IngestOutcome::Stored,
                IngestOutcome::Duplicate { first: a.id }
            ]
        );
        assert_eq!(commits.load(Ordering::Relaxed), 1);
    }

    /// SPEC §4: the same dedup key within 24h is a duplicate. Written out as
    /// a number, not as `DEDUP_WINDOW_MS`, so changing the constant fails here.
    const SPEC_DEDUP_WINDOW_MS: i64 = 24 * 3600 * 1000;

    /// Writes a dedup row as if its key had been seen `age_ms` ago.
    fn seen_ago(dir: &tempfile::TempDir, key: &str, age_ms: i64) -> EventId {
        let id = EventId::new();
        raw(dir)
            .execute(
                "INSERT INTO dedup (source, key, event_id, created_at_ms) VALUES ('github', ?1, ?2, ?3)",
                params![key, id.as_str(), now_ms() - age_ms],
            )
            .unwrap();
        id
    }

    #[tokio::test]
    async fn dedup_keys_expire_after_24_hours() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(&dir);
        // A minute inside the window (the store reads its clock a little
        // after this test does) and a second outside it.
        let inside = seen_ago(&dir, "inside", SPEC_DEDUP_WINDOW_MS - 60_000);
        seen_ago(&dir, "outside", SPEC_DEDUP_WINDOW_MS + 1000);
        assert_eq!(
            store.ingest(event("github", Some("inside"))).await.unwrap(),
            IngestOutcome::Duplicate { first: inside },
            "a key seen 23h59m ago is a duplicate"
        );
        let fresh = event("github", Some("outside"));
        assert_eq!(
            store.ingest(fresh.clone()).await.unwrap(),
            IngestOutcome::Stored,
            "a key seen 24h and 1s ago is not"
        );
        // The expired row was replaced: later copies point at the new event.
        assert_eq!(
            store
                .ingest(event("github", Some("outside")))
                .await
                .unwrap(),
            IngestOutcome::Duplicate { first: fresh.id }
        );

        // Pruning keeps the keys of the last 24h and drops older ones.
        seen_ago(&dir, "keep", SPEC_DEDUP_WINDOW_MS - 60_000);
        seen_ago(&dir, "drop", SPEC_DEDUP_WINDOW_MS + 1000);
        store.prune(0).await.unwrap();
        let left = |key: &str| -> i64 {
            raw(&dir)
                .query_row("SELECT count(*) FROM dedup WHERE key = ?1", [key], |r| {
                    r.get(0)
                })
                .unwrap()
        };
        assert_eq!((left("keep"), left("drop")), (1, 0));
    }

    #[tokio::test]
    async fn data_survives_reopening_and_migrations_are_idempotent() {
        let dir = tempfile::tempdir().unwrap();
        let e = event("github", None);
        {
            let store = open(&dir);
            store.ingest(e.clone()).await.unwrap();
        }
        for _ in 0..2 {
            let store = open(&dir);
            assert!(store.event(&e.id).await.unwrap().is_some());
            store.ping().await.unwrap();
        }
        let conn = raw(&dir);
        let (version, mode): (i64, String) = conn
            .query_row(
                "SELECT * FROM pragma_user_version, pragma_journal_mode",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap();
        assert_eq!((version, mode.as_str()), (MIGRATIONS.len() as i64, "wal"));
    }

    /// The lifecycle contract every backend keeps (`store::conformance`).
    mod contract {
        use super::super::super::conformance as c;

        fn store() -> (tempfile::TempDir, super::SqliteStore) {
            let dir = tempfile::tempdir().unwrap();
            let store = super::open(&dir);
            (dir, store)
        }

        #[tokio::test]
        async fn expired_leases_are_claimed_first() {
            c::expired_leases_are_claimed_first(&store().1).await;
        }

        #[tokio::test]
        async fn a_chain_of_steps_runs_in_order_with_outputs() {
            c::a_chain_of_steps_runs_in_order_with_outputs(&store().1).await;
        }

        #[tokio::test]
        async fn a_false_when_skips_the_step_and_those_behind_it() {
            c::a_false_when_skips_the_step_and_those_behind_it(&store().1).await;
        }

        #[tokio::test]
        async fn a_dead_need_skips_its_steps_and_a_retry_runs_them() {
            c::a_dead_need_skips_its_steps_and_a_retry_runs_them(&store().1).await;
        }

        #[tokio::test]
        async fn a_delay_dates_the_first_attempt() {
            c::a_delay_dates_the_first_attempt(&store().1).await;
        }

        #[tokio::test]
        async fn a_released_delivery_keeps_its_place() {
            c::a_released_delivery_keeps_its_place(&store().1).await;
        }

        #[tokio::test]
        async fn leases_are_fenced() {
            c::leases_are_fenced(&store().1).await;
        }

        #[tokio::test]
        async fn heartbeats_keep_a_lease() {
            c::heartbeats_keep_a_lease(&store().1).await;
        }

        #[tokio::test]
        async fn only_the_holder_releases() {
            c::only_the_holder_releases(&store().1).await;
        }

        #[tokio::test]
        async fn a_stale_claim_of_the_same_instance_is_fenced() {
            c::a_stale_claim_of_the_same_instance_is_fenced(&store().1).await;
        }

        #[tokio::test]
        async fn an_instance_requeues_only_its_own_leases() {
            c::an_instance_requeues_only_its_own_leases(&store().1).await;
        }

        #[tokio::test]
        async fn ingest_reads_back_and_queues() {
            c::ingest_reads_back_and_queues(&store().1).await;
        }

        #[tokio::test]
        async fn the_dedup_window_is_24_hours() {
            c::the_dedup_window_is_24_hours(&store().1).await;
        }

        #[tokio::test]
        async fn serialize_by_runs_one_key_in_order() {
            c::serialize_by_runs_one_key_in_order(&store().1).await;
        }

        #[tokio::test]
        async fn a_manual_retry_starts_a_new_budget() {
            c::a_manual_retry_starts_a_new_budget(&store().1).await;
        }

        #[tokio::test]
        async fn pruning_keeps_unfinished_events() {
            c::pruning_keeps_unfinished_events(&store().1).await;
        }

        #[tokio::test]
        async fn lists_page_newest_first() {
            c::lists_page_newest_first(&store().1).await;
        }
    }

    /// One SQLite file belongs to one process: a second store on the same
    /// file is refused, naming the file and the way to several instances.
    #[tokio::test]
    async fn a_second_store_on_one_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let first = open(&dir);
        let path = db_path(&dir);
        let Err(e) = SqliteStore::open(&path) else {
            panic!("a second store opened {path}");
        };
        let message = e.to_string();
        assert!(message.contains(&path), "{message}");
        assert!(
            message.contains("in use by another hookwire process"),
            "{message}"
        );
        assert!(message.contains("postgres://"), "{message}");
        drop(first);
        // Once the first is gone, the file opens again.
        assert!(SqliteStore::open(&path).is_ok());
    }

    /// The instance the tests claim as.
    fn me() -> &'static InstanceId {
        static ME: std::sync::OnceLock<InstanceId> = std::sync::OnceLock::new();
        ME.get_or_init(InstanceId::new)
    }

    /// Records the end of a claimed attempt as the dispatcher does.
    async fn finish_as(store: &SqliteStore, c: &Claimed, state: DeliveryState) {
        let attempt = crate::store::NewAttempt {
            id: crate::ids::AttemptId::new(),
            number: c.number,
            budget_number: c.attempt,
            round: c.round,
            requested_by: c.requested_by.clone(),
            started_at_ms: now_ms(),
            duration_ms: 1,
            outcome: if state == DeliveryState::Succeeded {
                AttemptOutcome::Succeeded
            } else {
                AttemptOutcome::Failed
            },
            status_code: Some(500),
            exit_code: None,
            error: None,
            response: Vec::new(),
            output: None,
        };
        let recorded = store
            .finish(
                me(),
                Finished {
                    lease: c.lease(),
                    attempt,
                    state,
                    next_attempt_at_ms: None,
                    judge: None,
                },
            )
            .await
            .unwrap();
        assert_eq!(recorded, Recorded::Yes);
    }

    /// Claims the one due delivery.
    async fn claim_one(store: &SqliteStore) -> Claimed {
        let mut claimed = store
            .claim(me(), now_ms(), 10, Duration::from_secs(60), Vec::new())
            .await
            .unwrap();
        assert_eq!(claimed.len(), 1, "{claimed:?}");
        claimed.remove(0)
    }

    /// (number, budget number, round, requested by) of each attempt, in order.
    type Row = (u32, u32, u32, Option<String>);

    async fn history(store: &SqliteStore, id: &DeliveryId) -> Vec<Row> {
        store
            .attempts(id)
            .await
            .unwrap()
            .into_iter()
            .map(|a| (a.number, a.budget_number, a.round, a.requested_by))
            .collect()
    }

    #[tokio::test]
    async fn manual_retries_number_on_and_record_the_request_behind_each_budget() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(&dir);
        let mut e = event("github", None);
        e.deliveries.truncate(1);
        let id = e.deliveries[0].id.clone();
        store.ingest(e.clone()).await.unwrap();

        // Budget 0: two attempts, then dead.
        let c = claim_one(&store).await;
        assert_eq!(
            (c.number, c.attempt, c.round, &c.requested_by),
            (1, 1, 0, &None)
        );
        finish_as(&store, &c, DeliveryState::Retrying).await;
        let c = claim_one(&store).await;
        assert_eq!((c.number, c.attempt), (2, 2));
        finish_as(&store, &c, DeliveryState::Dead).await;

        // A manual retry: a fresh budget, numbering goes on.
        let first = RequestId::new();
        assert_eq!(
            store.retry(&id, &first).await.unwrap(),
            RetryOutcome::Queued
        );
        let d = store.delivery(&id).await.unwrap().unwrap();
        assert_eq!(
            (d.attempts, d.attempts_in_budget, d.manual_retries),
            (2, 0, 1)
        );
        assert_eq!(d.retried_by.as_deref(), Some(first.as_str()));
        let c = claim_one(&store).await;
        assert_eq!((c.number, c.attempt, c.round), (3, 1, 1));
        finish_as(&store, &c, DeliveryState::Dead).await;
        let second = RequestId::new();
        store.retry(&id, &second).await.unwrap();
        let c = claim_one(&store).await;
        finish_as(&store, &c, DeliveryState::Succeeded).await;

        let first = Some(first.to_string());
        let second = Some(second.to_string());
        assert_eq!(
            history(&store, &id).await,
            [
                (1, 1, 0, None),
                (2, 2, 0, None),
                (3, 1, 1, first),
                (4, 1, 2, second.clone())
            ]
        );
        let d = store.delivery(&id).await.unwrap().unwrap();
        assert_eq!(
            (
                d.attempts,
                d.attempts_in_budget,
                d.manual_retries,
                d.retried_by
            ),
            (4, 1, 2, second)
        );

        // A replayed delivery's first budget carries the replay request.
        let replay = RequestId::new();
        let new = NewDelivery {
            id: DeliveryId::new(),
            ..e.deliveries[0].clone()
        };
        store
            .add_deliveries(&e.id, vec![new.clone()], &replay)
            .await
            .unwrap();
        let c = claim_one(&store).await;
        assert_eq!(c.requested_by.as_deref(), Some(replay.as_str()));
        finish_as(&store, &c, DeliveryState::Succeeded).await;
        assert_eq!(
            history(&store, &new.id).await,
            [(1, 1, 0, Some(replay.to_string()))]
        );
        let d = store.delivery(&new.id).await.unwrap().unwrap();
        assert_eq!(d.replayed_by.as_deref(), Some(replay.as_str()));
        assert_eq!(d.manual_retries, 0);
    }

    #[test]
    fn upgrading_renumbers_attempts_of_a_retried_delivery_and_keeps_budget_numbers() {
        let dir = tempfile::tempdir().unwrap();
        // A database as the first schema left it.
        {
            let conn = open_conn(Path::new(&db_path(&dir)), BUSY_TIMEOUT).unwrap();
            conn.execute_batch(MIGRATIONS[0]).unwrap();
            conn.pragma_update(None, "user_version", 1).unwrap();
            conn.execute_batch(
                "INSERT INTO events (id, source, received_at_ms, method, path, query, headers, body, payload, facts, trace, matched, matched_any)
                 VALUES ('evt_01hzzzzzzzzzzzzzzzzzzzzzzz', 's', 1, 'POST', '/hooks/s', '', '[]', x'', 'null', '[]', '[]', '[]', 1);
                 -- Failed once, retried by hand, succeeded: two attempts numbered 1.
                 INSERT INTO deliveries (id, event_id, rule, action, action_type, status, attempts, next_attempt_at_ms, created_at_ms, updated_at_ms)
                 VALUES ('dlv_01hzzzzzzzzzzzzzzzzzzzzzza', 'evt_01hzzzzzzzzzzzzzzzzzzzzzzz', 'r', 'a', 'http', 'succeeded', 1, 0, 0, 0);
                 -- Neither insert order nor id order is start order: numbering follows the start time.
                 INSERT INTO attempts (id, delivery_id, number, started_at_ms, duration_ms, outcome)
                 VALUES ('att_a', 'dlv_01hzzzzzzzzzzzzzzzzzzzzzza', 1, 2000, 5, 'succeeded'),
                        ('att_b', 'dlv_01hzzzzzzzzzzzzzzzzzzzzzza', 1, 1000, 5, 'failed');
                 -- Two attempts, dead, retried by hand once, dead again, retried
                 -- again and not yet attempted (its budget count is 0).
                 INSERT INTO deliveries (id, event_id, rule, action, action_type, status, attempts, next_attempt_at_ms, created_at_ms, updated_at_ms)
                 VALUES ('dlv_01hzzzzzzzzzzzzzzzzzzzzzzb', 'evt_01hzzzzzzzzzzzzzzzzzzzzzzz', 'r', 'b', 'http', 'pending', 0, 0, 0, 0);
                 INSERT INTO attempts (id, delivery_id, number, started_at_ms, duration_ms, outcome)
                 VALUES ('att_c', 'dlv_01hzzzzzzzzzzzzzzzzzzzzzzb', 1, 100, 5, 'retryable'),
                        ('att_d', 'dlv_01hzzzzzzzzzzzzzzzzzzzzzzb', 2, 200, 5, 'failed'),
                        ('att_e', 'dlv_01hzzzzzzzzzzzzzzzzzzzzzzb', 1, 300, 5, 'failed');",
            )
            .unwrap();
        }
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let store = open(&dir);
            let a = DeliveryId::parse("dlv_01hzzzzzzzzzzzzzzzzzzzzzza").unwrap();
            let b = DeliveryId::parse("dlv_01hzzzzzzzzzzzzzzzzzzzzzzb").unwrap();
            let ids: Vec<String> = store
                .attempts(&a)
                .await
                .unwrap()
                .into_iter()
                .map(|x| x.id)
                .collect();
            assert_eq!(ids, ["att_b", "att_a"]);
            assert_eq!(
                history(&store, &a).await,
                [(1, 1, 0, None), (2, 1, 1, None)]
            );
            let d = store.delivery(&a).await.unwrap().unwrap();
            assert_eq!(
                (d.attempts, d.attempts_in_budget, d.manual_retries),
                (2, 1, 1)
            );
            assert_eq!(
                history(&store, &b).await,
                [(1, 1, 0, None), (2, 2, 0, None), (3, 1, 1, None)]
            );
            let d = store.delivery(&b).await.unwrap().unwrap();
            assert_eq!(
                (d.attempts, d.attempts_in_budget, d.manual_retries),
                (3, 0, 2)
            );
            // The next attempt numbers on after the migrated ones.
            let c = claim_one(&store).await;
            assert_eq!((c.id, c.number, c.attempt, c.round), (b, 4, 1, 2));
        });
        // Numbers are unique per delivery from now on.
        let dup = raw(&dir).execute(
            "INSERT INTO attempts (id, delivery_id, number, started_at_ms, duration_ms, outcome) VALUES ('att_x', 'dlv_01hzzzzzzzzzzzzzzzzzzzzzza', 2, 3000, 1, 'failed')",
            [],
        );
        assert!(dup.is_err(), "a second attempt #2 was accepted");
    }

    #[test]
    fn a_schema_newer_than_this_build_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        drop(writer(&dir));
        raw(&dir).pragma_update(None, "user_version", 99).unwrap();
        match SqliteStore::open(&db_path(&dir)) {
            Err(StoreError::Database(msg)) => assert!(msg.contains("newer"), "{msg}"),
            other => panic!("expected a refusal, got {:?}", other.map(|_| ())),
        }
    }

    #[test]
    fn paths_that_cannot_hold_a_durable_database_are_refused() {
        for path in [
            "",
            ":memory:",
            "file::memory:?cache=shared",
            "/nonexistent-dir/x/t.db",
        ] {
            assert!(SqliteStore::open(path).is_err(), "{path}");
        }
    }

    #[test]
    fn a_failing_job_fails_alone_in_its_batch() {
        let dir = tempfile::tempdir().unwrap();
        let mut conn = writer(&dir);
        let commits = AtomicU64::new(0);
        let taken = event("github", None);
        one_batch(&mut conn, vec![taken.clone()], &commits);
        // The second job reuses a stored event id, and its dedup key must be rolled back with it.
        let mut clash = taken.clone();
        clash.dedup_key = Some("k".into());
        let batch = vec![event("github", None), clash, event("github", None)];
        let answers = one_batch(&mut conn, batch, &commits);
        assert!(matches!(answers[0], Ok(IngestOutcome::Stored)));
        assert!(
            matches!(&answers[1], Err(e @ StoreError::Driver { transient: false, .. }) if e.to_string().contains("UNIQUE")),
            "{:?}",
            answers[1]
        );
        assert!(matches!(answers[2], Ok(IngestOutcome::Stored)));
        assert_eq!(commits.load(Ordering::Relaxed), 2);
        let counts: (i64, i64, i64) = conn
            .query_row(
                "SELECT (SELECT count(*) FROM events), (SELECT count(*) FROM deliveries), (SELECT count(*) FROM dedup)",
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .unwrap();
        assert_eq!(counts, (3, 6, 0));
    }

    #[test]
    fn a_full_database_fails_the_whole_batch_as_unavailable_and_commits_none_of_it() {
        let dir = tempfile::tempdir().unwrap();
        let mut conn = writer(&dir);
        let commits = AtomicU64::new(0);
        let pages: i64 = conn
            .query_row("PRAGMA page_count", [], |r| r.get(0))
            .unwrap();
        conn.pragma_update(None, "max_page_count", pages + 16)
            .unwrap();
        let mut big = event("github", None);
        big.body = bytes::Bytes::from(vec![7u8; 1 << 20]);
        // SQLite answers "disk full" by rolling the whole transaction back, so
        // no job may be reported stored, and none may commit on its own afterwards.
        let answers = one_batch(
            &mut conn,
            vec![event("github", None), big, event("github", None)],
            &commits,
        );
        for a in &answers {
            assert!(
                matches!(a, Err(StoreError::Unavailable(m)) if m.contains("full") && !m.contains("unavailable")),
                "{a:?}"
            );
        }
        let stored: i64 = conn
            .query_row("SELECT count(*) FROM events", [], |r| r.get(0))
            .unwrap();
        assert_eq!((stored, commits.load(Ordering::Relaxed)), (0, 0));
        // The writer connection is usable again once there is room.
        assert!(matches!(
            one_batch(&mut conn, vec![event("github", None)], &commits)[..],
            [Ok(IngestOutcome::Stored)]
        ));
    }

    #[tokio::test]
    async fn a_database_locked_by_another_process_answers_unavailable_then_recovers() {
        let dir = tempfile::tempdir().unwrap();
        let tuning = Tuning {
            busy_timeout: Duration::from_millis(100),
            ..Tuning::DEFAULT
        };
        let store = SqliteStore::open_with(&db_path(&dir), tuning).unwrap();
        let other = raw(&dir);
        other.execute_batch("BEGIN IMMEDIATE").unwrap();
        assert!(matches!(
            store.ingest(event("github", None)).await,
            Err(StoreError::Unavailable(_))
        ));
        other.execute_batch("COMMIT").unwrap();
        assert_eq!(
            store.ingest(event("github", None)).await.unwrap(),
            IngestOutcome::Stored
        );
    }

    #[tokio::test]
    async fn a_full_queue_answers_overloaded_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let tuning = Tuning {
            queue: 1,
            busy_timeout: Duration::from_secs(10),
        };
        let store = Arc::new(SqliteStore::open_with(&db_path(&dir), tuning).unwrap());
        let spawn_ingest = || {
            let s = store.clone();
            tokio::spawn(async move { s.ingest(event("github", None)).await })
        };
        // Another process holds the write lock: the writer takes job A and
        // waits for the lock, then B fills the queue (capacity 1) behind it.
        let other = raw(&dir);
        other.execute_batch("BEGIN IMMEDIATE").unwrap();
        let a = spawn_ingest();
        for _ in 0..100 {
            tokio::time::sleep(Duration::from_millis(10)).await;
            if store.jobs.capacity() == 1 {
                break;
            }
        }
        // Let the writer get past collecting its batch.
        tokio::time::sleep(Duration::from_millis(50)).await;
        let b = spawn_ingest();
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(store.jobs.capacity(), 0, "B waits in the queue");
        let started = std::time::Instant::now();
        match store.ingest(event("github", None)).await {
            Err(StoreError::Unavailable(m)) => assert!(m.contains("overloaded"), "{m}"),
            other => panic!("expected overloaded, got {other:?}"),
        }
        assert!(started.elapsed() < Duration::from_millis(500));
        other.execute_batch("COMMIT").unwrap();
        for t in [a, b] {
            assert_eq!(t.await.unwrap().unwrap(), IngestOutcome::Stored);
        }
    }

    #[tokio::test]
    async fn a_stopped_writer_answers_unavailable_and_fails_readiness() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = open(&dir);
        let (closed, rx) = mpsc::channel(1);
        drop(rx);
        // Dropping the only sender also ends the real writer thread.
        store.jobs = closed;
        assert!(matches!(
            store.ingest(event("github", None)).await,
            Err(StoreError::Unavailable(_))
        ));
        assert!(matches!(
            store.ping().await,
            Err(StoreError::Unavailable(_))
        ));
    }

    /// `n` events as an earlier run left them: received `age_ms` ago (their
    /// ids made then too), each with one delivery in `status` and one attempt.
    fn insert_aged(dir: &tempfile::TempDir, n: u32, age_ms: i64, status: &str) -> Vec<String> {
        let mut conn = raw(dir);
        let tx = conn.transaction().unwrap();
        let at = now_ms() - age_ms;
        let id = |prefix: &str, i: u32| {
            let random = u128::from(i) | (u128::from(rand_u32()) << 32);
            format!(
                "{prefix}{}",
                ulid::Ulid::from_parts(at as u64, random)
                    .to_string()
                    .to_lowercase()
            )
        };
        let mut ids = Vec::new();
        for i in 0..n {
            let (e, d) = (id("evt_", i), id("dlv_", i));
            tx.execute(
                "INSERT INTO events (id, source, received_at_ms, method, path, query, headers, body, payload, facts, trace, matched, matched_any)
                 VALUES (?1, 's', ?2, 'POST', '/hooks/s', '', '[]', x'7b7d', '', '[]', '[]', '[\"r\"]', 1)",
                params![e, at],
            )
            .unwrap();
            tx.execute(
                "INSERT INTO deliveries (id, event_id, rule, action, action_type, status, attempts, next_attempt_at_ms, created_at_ms, updated_at_ms)
                 VALUES (?1, ?2, 'r', 'a', 'http', ?3, 1, ?4, ?4, ?4)",
                params![d, e, status, at],
            )
            .unwrap();
            tx.execute(
                "INSERT INTO attempts (id, delivery_id, number, started_at_ms, duration_ms, outcome) VALUES (?1, ?2, 1, ?3, 1, 'succeeded')",
                params![id("att_", i), d, at],
            )
            .unwrap();
            ids.push(e);
        }
        tx.commit().unwrap();
        ids
    }

    fn rand_u32() -> u32 {
        use std::hash::{BuildHasher as _, Hasher as _};
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u64(now_ms() as u64);
        h.finish() as u32
    }

    #[tokio::test]
    async fn pruning_deletes_old_finished_events_in_small_batches_and_keeps_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        drop(open(&dir));
        const HOUR: i64 = 3600 * 1000;
        insert_aged(&dir, 4500, 2 * HOUR, "succeeded");
        let waiting = insert_aged(&dir, 7, 2 * HOUR, "retrying");
        let recent = insert_aged(&dir, 5, HOUR / 2, "succeeded");
        let store = open(&dir);
        let pruned = store.prune(now_ms() - HOUR).await.unwrap();
        assert_eq!(pruned.events, 4500, "{pruned:?}");
        // At most PRUNE_BATCH_MAX events per write: never one long write.
        assert!(
            pruned.batches > u64::from(4500 / PRUNE_BATCH_MAX),
            "{pruned:?}"
        );
        let count = |sql: &str| -> i64 { raw(&dir).query_row(sql, [], |r| r.get(0)).unwrap() };
        assert_eq!(count("SELECT count(*) FROM events"), 12);
        assert_eq!(count("SELECT count(*) FROM deliveries"), 12);
        assert_eq!(count("SELECT count(*) FROM attempts"), 12);
        for id in waiting.iter().chain(&recent) {
            assert!(
                store
                    .event(&EventId::parse(id).unwrap())
                    .await
                    .unwrap()
                    .is_some(),
                "{id} was pruned"
            );
        }
        // Nothing left to do: a second pass deletes nothing.
        assert_eq!(store.prune(now_ms() - HOUR).await.unwrap().events, 0);
    }

    #[test]
    fn the_pruning_cutoff_id_sorts_between_events_made_before_and_after_it() {
        let at = now_ms();
        let cutoff = first_event_id_at(at);
        let made = |ms: i64| {
            format!(
                "evt_{}",
                ulid::Ulid::from_parts(ms as u64, u128::MAX >> 48)
                    .to_string()
                    .to_lowercase()
            )
        };
        assert!(made(at - 1) < cutoff);
        assert!(made(at) > cutoff);
        assert!(EventId::new().as_str() > first_event_id_at(at - 1000).as_str());
        assert!(EventId::new().as_str() < first_event_id_at(at + 1000).as_str());
        assert_eq!(first_event_id_at(-5), first_event_id_at(0));
    }

    /// Every statement that pruning, the admin lists and the dispatcher's
    /// `next_due` run walks an index: no scan of a whole table, no sort.
    #[test]
    fn pruning_list_and_due_queries_use_indexes() {
        let dir = tempfile::tempdir().unwrap();
        let conn = writer(&dir);
        let plan = |sql: &str| -> Vec<String> {
            let mut stmt = conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).unwrap();
            let nulls = vec![rusqlite::types::Null; stmt.parameter_count()];
            stmt.query_map(rusqlite::params_from_iter(nulls), |r| r.get::<_, String>(3))
                .unwrap()
                .collect::<rusqlite::Result<_>>()
                .unwrap()
        };
        let mut checked = vec![
            PRUNE_RANGE.to_owned(),
            PRUNE_EVENTS.to_owned(),
            PRUNE_DEDUP.to_owned(),
            NEXT_DUE.to_owned(),
            // What ON DELETE CASCADE does for each pruned event.
            "DELETE FROM deliveries WHERE event_id = ?1".to_owned(),
            "DELETE FROM attempts WHERE delivery_id = ?1".to_owned(),
        ];
        for source in [true, false] {
            for before in [true, false] {
                checked.push(event_page_sql(source, false, before));
                checked.push(delivery_page_sql(source, before));
            }
        }
        for sql in &checked {
            let steps = plan(sql);
            for step in &steps {
                // Reading a subquery's own few rows is no table scan.
                let scan = step.starts_with("SCAN ")
                    && !step.starts_with("SCAN CONSTANT ROW")
                    && !step.starts_with("SCAN (");
                let walk_newest_first = step.contains("USING INDEX sqlite_autoindex_")
                    && sql.contains("ORDER BY id DESC");
                assert!(
                    !step.contains("TEMP B-TREE") && (!scan || walk_newest_first),
                    "{sql}\n{steps:#?}"
                );
            }
        }
        // A status or source filter seeks its index instead of walking every row.
        assert!(
            plan(&delivery_page_sql(true, true))
                .iter()
                .any(|s| s.contains("deliveries_by_status (status=? AND id<?)"))
        );
        assert!(
            plan(&event_page_sql(true, true, true))
                .iter()
                .any(|s| s.contains("events_by_source (source=? AND id<?)"))
        );
    }
}
