//! The embedded store: one SQLite file in WAL mode with `synchronous=FULL`.
//!
//! All writes go through one dedicated thread that owns the write connection.
//! It takes every job waiting in its queue (up to [`MAX_BATCH`]), runs each in
//! its own SAVEPOINT inside one transaction, commits once, and only then
//! answers each job. Many concurrent requests thus share one disk flush
//! (group commit) without any of them being acknowledged before it is durable.
//! Reads use a separate connection and never wait for the writer.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::future::BoxFuture;
use rusqlite::{Connection, OptionalExtension, params};
use tokio::sync::{mpsc, oneshot};

use super::{
    Claimed, EventData, Finished, IngestOutcome, NewEvent, Store, StoreError, StoredDelivery,
    StoredEvent,
};
use crate::ids::{DeliveryId, EventId};

/// How many jobs share one transaction at most.
const MAX_BATCH: usize = 512;
/// Jobs waiting for the writer; beyond this the store reports itself overloaded (503).
const QUEUE: usize = 4096;
/// How long the writer waits for a lock held by another process before giving up (503).
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// A duplicate is a dedup key seen within this window.
const DEDUP_WINDOW_MS: i64 = 24 * 3600 * 1000;

/// Each migration runs once, in order; `PRAGMA user_version` records how many ran.
const MIGRATIONS: &[&str] = &[include_str!("migrations/0001_initial.sql")];

/// One unit of work for the writer thread: it runs inside the batch's
/// transaction (in its own SAVEPOINT) and is answered after the commit.
trait WriteJob: Send {
    fn run(&mut self, conn: &Connection, now_ms: i64);
    fn reply(self: Box<Self>, committed: Result<(), &StoreError>);
}

struct Job<T, F> {
    work: Option<F>,
    result: Option<Result<T, StoreError>>,
    reply: oneshot::Sender<Result<T, StoreError>>,
}

impl<T: Send, F: FnOnce(&Connection, i64) -> rusqlite::Result<T> + Send> WriteJob for Job<T, F> {
    fn run(&mut self, conn: &Connection, now_ms: i64) {
        if let Some(work) = self.work.take() {
            self.result = Some(in_savepoint(conn, |c| work(c, now_ms)));
        }
    }

    fn reply(self: Box<Self>, committed: Result<(), &StoreError>) {
        let answer = match committed {
            // Only a committed result may be reported: the caller acknowledges on it.
            Ok(()) => self
                .result
                .unwrap_or_else(|| Err(StoreError::Unavailable("job did not run".into()))),
            Err(e) => Err(StoreError::Unavailable(e.to_string())),
        };
        let _ = self.reply.send(answer);
    }
}

pub struct SqliteStore {
    jobs: mpsc::Sender<Box<dyn WriteJob>>,
    reader: Arc<Mutex<Connection>>,
    commits: Arc<AtomicU64>,
}

fn db_err(e: rusqlite::Error) -> StoreError {
    StoreError::Database(e.to_string())
}

fn open_conn(path: &Path) -> Result<Connection, StoreError> {
    let conn = Connection::open(path).map_err(db_err)?;
    conn.busy_timeout(BUSY_TIMEOUT).map_err(db_err)?;
    conn.execute_batch(
        "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON;",
    )
    .map_err(db_err)?;
    Ok(conn)
}

fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
    let done: usize = conn
        .query_row("PRAGMA user_version", [], |r| r.get::<_, i64>(0))
        .map_err(db_err)?
        .try_into()
        .unwrap_or(0);
    if done > MIGRATIONS.len() {
        return Err(StoreError::Database(format!(
            "the database schema (version {done}) is newer than this hookwire knows ({}); use a newer hookwire",
            MIGRATIONS.len()
        )));
    }
    let tx = conn.transaction().map_err(db_err)?;
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(done) {
        tx.execute_batch(sql).map_err(db_err)?;
        tx.pragma_update(None, "user_version", (i + 1) as i64)
            .map_err(db_err)?;
        tracing::info!(migration = i + 1, "database migrated");
    }
    tx.commit().map_err(db_err)
}

impl SqliteStore {
    pub fn open(path: &str) -> Result<Self, StoreError> {
        let path = Path::new(path);
        let mut writer = open_conn(path)?;
        migrate(&mut writer)?;
        let orphans = requeue_orphans(&writer).map_err(db_err)?;
        if orphans > 0 {
            tracing::warn!(
                deliveries = orphans,
                "deliveries left running by the previous process are queued again"
            );
        }
        let reader = open_conn(path)?;
        let (tx, rx) = mpsc::channel(QUEUE);
        let commits = Arc::new(AtomicU64::new(0));
        let c = commits.clone();
        std::thread::Builder::new()
            .name("hookwire-store".into())
            .spawn(move || writer_loop(writer, rx, c))
            .map_err(|e| StoreError::Unavailable(format!("cannot start the store writer: {e}")))?;
        Ok(Self {
            jobs: tx,
            reader: Arc::new(Mutex::new(reader)),
            commits,
        })
    }

    /// Transactions committed so far (each may hold many events).
    pub fn commit_count(&self) -> u64 {
        self.commits.load(Ordering::Relaxed)
    }

    /// Runs `work` on the writer thread inside a group-committed transaction;
    /// resolves only after the commit.
    async fn write<T: Send + 'static>(
        &self,
        work: impl FnOnce(&Connection, i64) -> rusqlite::Result<T> + Send + 'static,
    ) -> Result<T, StoreError> {
        let (tx, rx) = oneshot::channel();
        let job = Box::new(Job {
            work: Some(work),
            result: None,
            reply: tx,
        });
        self.jobs.try_send(job).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => {
                StoreError::Unavailable("overloaded: too many writes waiting".into())
            }
            mpsc::error::TrySendError::Closed(_) => {
                StoreError::Unavailable("the store writer has stopped".into())
            }
        })?;
        rx.await
            .map_err(|_| StoreError::Unavailable("the store writer has stopped".into()))?
    }

    async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> Result<T, StoreError> {
        let reader = self.reader.clone();
        tokio::task::spawn_blocking(move || {
            let conn = reader.lock().unwrap_or_else(|p| p.into_inner());
            f(&conn).map_err(db_err)
        })
        .await
        .map_err(|e| StoreError::Unavailable(format!("store reader failed: {e}")))?
    }
}

fn writer_loop(
    mut conn: Connection,
    mut rx: mpsc::Receiver<Box<dyn WriteJob>>,
    commits: Arc<AtomicU64>,
) {
    let mut batch: Vec<Box<dyn WriteJob>> = Vec::with_capacity(MAX_BATCH);
    while let Some(first) = rx.blocking_recv() {
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let committed = run_batch(&mut conn, &mut batch);
        if committed.is_ok() {
            commits.fetch_add(1, Ordering::Relaxed);
        }
        for job in batch.drain(..) {
            job.reply(committed.as_ref().map(|_| ()));
        }
    }
}

/// Runs every job of the batch in one transaction and commits it once.
fn run_batch(conn: &mut Connection, batch: &mut [Box<dyn WriteJob>]) -> Result<(), StoreError> {
    if let Err(e) = conn.execute_batch("BEGIN IMMEDIATE") {
        tracing::error!(error = %e, jobs = batch.len(), "store cannot start a transaction");
        return Err(StoreError::Unavailable(e.to_string()));
    }
    let now = now_ms();
    for job in batch.iter_mut() {
        job.run(conn, now);
    }
    conn.execute_batch("COMMIT").map_err(|e| {
        tracing::error!(error = %e, jobs = batch.len(), "store commit failed");
        let _ = conn.execute_batch("ROLLBACK");
        StoreError::Unavailable(e.to_string())
    })
}

/// Runs `f` so that its failure undoes only its own writes.
fn in_savepoint<T>(
    conn: &Connection,
    f: impl FnOnce(&Connection) -> rusqlite::Result<T>,
) -> Result<T, StoreError> {
    conn.execute_batch("SAVEPOINT job").map_err(db_err)?;
    match f(conn) {
        Ok(v) => {
            conn.execute_batch("RELEASE job").map_err(db_err)?;
            Ok(v)
        }
        Err(e) => {
            let _ = conn.execute_batch("ROLLBACK TO job; RELEASE job");
            Err(db_err(e))
        }
    }
}

fn ingest_one(conn: &Connection, e: &NewEvent, now: i64) -> rusqlite::Result<IngestOutcome> {
    if let Some(key) = &e.dedup_key {
        let first: Option<String> = conn
            .query_row(
                "SELECT event_id FROM dedup WHERE source = ?1 AND key = ?2 AND created_at_ms > ?3",
                params![e.source, key, now - DEDUP_WINDOW_MS],
                |r| r.get(0),
            )
            .optional()?;
        if let Some(first) = first.and_then(|f| EventId::parse(&f)) {
            return Ok(IngestOutcome::Duplicate { first });
        }
        conn.execute(
            "INSERT OR REPLACE INTO dedup (source, key, event_id, created_at_ms) VALUES (?1, ?2, ?3, ?4)",
            params![e.source, key, e.id.as_str(), now],
        )?;
    }
    let json = |v: &serde_json::Value| v.to_string();
    let headers = serde_json::to_string(&e.headers).unwrap_or_else(|_| "[]".into());
    let facts = serde_json::to_string(&e.facts).unwrap_or_else(|_| "[]".into());
    let matched = serde_json::to_string(&e.matched).unwrap_or_else(|_| "[]".into());
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
        headers,
        e.body.as_ref(),
        json(&e.payload),
        facts,
        json(&e.trace),
        matched,
        !e.matched.is_empty(),
        e.dedup_key,
    ])?;
    let mut insert = conn.prepare_cached(
        "INSERT INTO deliveries (id, event_id, rule, action, action_type, status, serialize_key, attempts, next_attempt_at_ms, created_at_ms, updated_at_ms)
         VALUES (?1, ?2, ?3, ?4, ?5, 'pending', ?6, 0, ?7, ?8, ?8)",
    )?;
    for d in &e.deliveries {
        insert.execute(params![
            d.id.as_str(),
            e.id.as_str(),
            d.rule,
            d.action,
            d.action_type,
            d.serialize_key,
            e.received_at_ms,
            now
        ])?;
    }
    Ok(IngestOutcome::Stored)
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Due deliveries, oldest due first. A delivery with a `serialize_key` is due
/// only when no earlier delivery with that key is unfinished, so deliveries of
/// one key run one at a time, in event order. A `running` delivery whose lease
/// has expired (its runner died) is due again.
fn claim(c: &Connection, now: i64, limit: u32, lease_ms: i64) -> rusqlite::Result<Vec<Claimed>> {
    let mut select = c.prepare_cached(
        "SELECT d.id, d.event_id, d.rule, d.action, d.action_type, d.attempts, d.serialize_key,
                e.source, e.received_at_ms, e.method, e.path, e.query, e.headers, e.body, e.payload
         FROM deliveries d JOIN events e ON e.id = d.event_id
         WHERE ((d.status IN ('pending', 'retrying') AND d.next_attempt_at_ms <= ?1)
                OR (d.status = 'running' AND d.lease_until_ms < ?1))
           AND (d.serialize_key IS NULL OR NOT EXISTS (
                SELECT 1 FROM deliveries o
                WHERE o.serialize_key = d.serialize_key AND o.id < d.id
                  AND o.status IN ('pending', 'running', 'retrying')))
         ORDER BY d.next_attempt_at_ms, d.id
         LIMIT ?2",
    )?;
    let rows = select.query_map(params![now, limit], |r| {
        let id: String = r.get(0)?;
        let event_id: String = r.get(1)?;
        let headers: String = r.get(12)?;
        let payload: String = r.get(14)?;
        Ok(Claimed {
            id: DeliveryId::parse(&id).unwrap_or_default(),
            event_id: EventId::parse(&event_id).unwrap_or_default(),
            rule: r.get(2)?,
            action: r.get(3)?,
            action_type: r.get(4)?,
            attempt: r.get::<_, u32>(5)? + 1,
            serialize_key: r.get(6)?,
            event: EventData {
                source: r.get(7)?,
                received_at_ms: r.get(8)?,
                method: r.get(9)?,
                path: r.get(10)?,
                query: r.get(11)?,
                headers: serde_json::from_str(&headers).unwrap_or_default(),
                body: r.get(13)?,
                payload: serde_json::from_str(&payload).unwrap_or(serde_json::Value::Null),
            },
        })
    })?;
    let claimed: Vec<Claimed> = rows.collect::<rusqlite::Result<_>>()?;
    let mut update = c.prepare_cached(
        "UPDATE deliveries SET status = 'running', attempts = attempts + 1, lease_until_ms = ?2, updated_at_ms = ?3 WHERE id = ?1",
    )?;
    for d in &claimed {
        update.execute(params![d.id.as_str(), now + lease_ms, now])?;
    }
    Ok(claimed)
}

fn finish(c: &Connection, f: &Finished, now: i64) -> rusqlite::Result<()> {
    let a = &f.attempt;
    c.prepare_cached(
        "INSERT INTO attempts (id, delivery_id, number, started_at_ms, duration_ms, outcome, status_code, exit_code, error, response)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
    )?
    .execute(params![
        a.id.as_str(),
        f.delivery.as_str(),
        a.number,
        a.started_at_ms,
        a.duration_ms,
        a.outcome,
        a.status_code,
        a.exit_code,
        a.error,
        a.response,
    ])?;
    c.prepare_cached(
        "UPDATE deliveries SET status = ?2, next_attempt_at_ms = coalesce(?3, next_attempt_at_ms), lease_until_ms = NULL, updated_at_ms = ?4 WHERE id = ?1",
    )?
    .execute(params![f.delivery.as_str(), f.state.as_str(), f.next_attempt_at_ms, now])?;
    Ok(())
}

/// Deletes events received before `before_ms` whose deliveries are all
/// finished (their deliveries and attempts go with them), and expired dedup keys.
fn prune(c: &Connection, before_ms: i64, now: i64) -> rusqlite::Result<u64> {
    let n = c.execute(
        "DELETE FROM events WHERE received_at_ms < ?1 AND NOT EXISTS (
            SELECT 1 FROM deliveries d WHERE d.event_id = events.id AND d.status IN ('pending', 'running', 'retrying'))",
        [before_ms],
    )?;
    c.execute(
        "DELETE FROM dedup WHERE created_at_ms < ?1",
        [now - DEDUP_WINDOW_MS],
    )?;
    Ok(n as u64)
}

/// Deliveries a previous process left `running` (it crashed or was cut off at
/// shutdown) are due again at once: at-least-once, never stuck.
fn requeue_orphans(c: &Connection) -> rusqlite::Result<usize> {
    c.execute(
        "UPDATE deliveries SET status = 'retrying', lease_until_ms = NULL, next_attempt_at_ms = ?1 WHERE status = 'running'",
        [now_ms()],
    )
}

const EVENT_COLUMNS: &str = "id, source, received_at_ms, method, path, query, headers, body, payload, facts, trace, matched, dedup_key";

fn event_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<StoredEvent> {
    let parse = |i: usize| -> rusqlite::Result<serde_json::Value> {
        let text: String = r.get(i)?;
        Ok(serde_json::from_str(&text).unwrap_or(serde_json::Value::Null))
    };
    let id: String = r.get(0)?;
    Ok(StoredEvent {
        id: EventId::parse(&id).unwrap_or_default(),
        source: r.get(1)?,
        received_at_ms: r.get(2)?,
        method: r.get(3)?,
        path: r.get(4)?,
        query: r.get(5)?,
        headers: serde_json::from_value(parse(6)?).unwrap_or_default(),
        body: r.get(7)?,
        payload: parse(8)?,
        facts: serde_json::from_value(parse(9)?).unwrap_or_default(),
        trace: parse(10)?,
        matched: serde_json::from_value(parse(11)?).unwrap_or_default(),
        dedup_key: r.get(12)?,
        deliveries: Vec::new(),
    })
}

fn deliveries_of(conn: &Connection, event: &str) -> rusqlite::Result<Vec<StoredDelivery>> {
    let mut stmt = conn.prepare_cached(
        "SELECT id, event_id, rule, action, action_type, status, serialize_key, attempts, created_at_ms
         FROM deliveries WHERE event_id = ?1 ORDER BY id",
    )?;
    let rows = stmt.query_map([event], |r| {
        let id: String = r.get(0)?;
        let event_id: String = r.get(1)?;
        Ok(StoredDelivery {
            id: DeliveryId::parse(&id).unwrap_or_default(),
            event_id: EventId::parse(&event_id).unwrap_or_default(),
            rule: r.get(2)?,
            action: r.get(3)?,
            action_type: r.get(4)?,
            status: r.get(5)?,
            serialize_key: r.get(6)?,
            attempts: r.get(7)?,
            created_at_ms: r.get(8)?,
        })
    })?;
    rows.collect()
}

impl Store for SqliteStore {
    fn ingest(&self, event: NewEvent) -> BoxFuture<'_, Result<IngestOutcome, StoreError>> {
        Box::pin(self.write(move |c, now| ingest_one(c, &event, now)))
    }

    fn claim(
        &self,
        now_ms: i64,
        limit: u32,
        lease: Duration,
    ) -> BoxFuture<'_, Result<Vec<Claimed>, StoreError>> {
        let lease_ms = lease.as_millis().min(i64::MAX as u128) as i64;
        Box::pin(self.write(move |c, _| claim(c, now_ms, limit, lease_ms)))
    }

    fn finish(&self, f: Finished) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(self.write(move |c, now| finish(c, &f, now)))
    }

    fn next_due(&self) -> BoxFuture<'_, Result<Option<i64>, StoreError>> {
        Box::pin(self.read(|c| {
            c.query_row(
                "SELECT min(t) FROM (
                    SELECT min(next_attempt_at_ms) AS t FROM deliveries WHERE status IN ('pending', 'retrying')
                    UNION ALL SELECT min(lease_until_ms) FROM deliveries WHERE status = 'running')",
                [],
                |r| r.get(0),
            )
        }))
    }

    fn prune(&self, before_ms: i64) -> BoxFuture<'_, Result<u64, StoreError>> {
        Box::pin(self.write(move |c, now| prune(c, before_ms, now)))
    }

    fn event(&self, id: &EventId) -> BoxFuture<'_, Result<Option<StoredEvent>, StoreError>> {
        let id = id.to_string();
        Box::pin(self.read(move |conn| {
            let event = conn
                .query_row(
                    &format!("SELECT {EVENT_COLUMNS} FROM events WHERE id = ?1"),
                    [&id],
                    event_from_row,
                )
                .optional()?;
            match event {
                Some(mut e) => {
                    e.deliveries = deliveries_of(conn, &id)?;
                    Ok(Some(e))
                }
                None => Ok(None),
            }
        }))
    }

    fn events(
        &self,
        source: Option<&str>,
        limit: u32,
    ) -> BoxFuture<'_, Result<Vec<StoredEvent>, StoreError>> {
        let source = source.map(str::to_owned);
        Box::pin(self.read(move |conn| {
            let mut stmt = conn.prepare_cached(&format!(
                "SELECT {EVENT_COLUMNS} FROM events WHERE (?1 IS NULL OR source = ?1) ORDER BY id DESC LIMIT ?2"
            ))?;
            let rows = stmt.query_map(params![source, limit], event_from_row)?;
            rows.collect()
        }))
    }

    fn ping(&self) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(self.read(|conn| conn.query_row("SELECT 1", [], |_| Ok(()))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::NewDelivery;

    fn event(source: &str, dedup: Option<&str>) -> NewEvent {
        NewEvent {
            id: EventId::new(),
            source: source.to_owned(),
            received_at_ms: now_ms(),
            method: "POST".into(),
            path: format!("/hooks/{source}"),
            query: "a=1".into(),
            headers: vec![
                ("x-b".into(), "2".into()),
                ("content-type".into(), "application/json".into()),
            ],
            body: bytes::Bytes::from_static(b"{\"k\":\"\xff\"}"),
            payload: serde_json::json!({"k": 1}),
            facts: vec!["a fact".into()],
            trace: serde_json::json!([{"rule": "r", "matched": true}]),
            matched: vec!["r".into()],
            dedup_key: dedup.map(str::to_owned),
            deliveries: vec![
                NewDelivery {
                    id: DeliveryId::new(),
                    rule: "r".into(),
                    action: "http-0".into(),
                    action_type: "http".into(),
                    serialize_key: None,
                },
                NewDelivery {
                    id: DeliveryId::new(),
                    rule: "r".into(),
                    action: "cmd".into(),
                    action_type: "command".into(),
                    serialize_key: Some("k".into()),
                },
            ],
        }
    }

    fn open(dir: &tempfile::TempDir) -> SqliteStore {
        SqliteStore::open(dir.path().join("t.db").to_str().unwrap()).unwrap()
    }

    #[tokio::test]
    async fn events_round_trip_with_their_deliveries() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(&dir);
        let e = event("github", None);
        assert_eq!(
            store.ingest(e.clone()).await.unwrap(),
            IngestOutcome::Stored
        );
        let got = store.event(&e.id).await.unwrap().unwrap();
        assert_eq!(
            (
                got.source.as_str(),
                got.query.as_str(),
                &got.headers,
                &got.body[..]
            ),
            ("github", "a=1", &e.headers, &e.body[..])
        );
        assert_eq!(
            (got.payload, got.facts, got.trace, got.matched),
            (e.payload, e.facts, e.trace, e.matched)
        );
        assert_eq!(got.deliveries.len(), 2);
        assert!(
            got.deliveries
                .iter()
                .all(|d| d.status == "pending" && d.attempts == 0)
        );
        assert_eq!(
            got.deliveries
                .iter()
                .filter_map(|d| d.serialize_key.clone())
                .collect::<Vec<_>>(),
            ["k"]
        );
        assert!(store.event(&EventId::new()).await.unwrap().is_none());
    }

    #[tokio::test]
    async fn listing_is_newest_first_and_filters_by_source() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(&dir);
        let mut ids = Vec::new();
        for s in ["a", "b", "a"] {
            let e = event(s, None);
            ids.push(e.id.clone());
            store.ingest(e).await.unwrap();
        }
        let all: Vec<EventId> = store
            .events(None, 10)
            .await
            .unwrap()
            .into_iter()
            .map(|e| e.id)
            .collect();
        assert_eq!(all, [ids[2].clone(), ids[1].clone(), ids[0].clone()]);
        let a: Vec<EventId> = store
            .events(Some("a"), 1)
            .await
            .unwrap()
            .into_iter()
            .map(|e| e.id)
            .collect();
        assert_eq!(a, [ids[2].clone()]);
    }

    #[tokio::test]
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

    #[tokio::test]
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
        // Another source may use the same key.
        assert_eq!(
            store
                .ingest(event("gitlab", Some("delivery-1")))
                .await
                .unwrap(),
            IngestOutcome::Stored
        );
    }

    #[tokio::test]
    async fn dedup_keys_expire_after_the_window() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(&dir);
        let raw = Connection::open(dir.path().join("t.db")).unwrap();
        raw.execute(
            "INSERT INTO dedup (source, key, event_id, created_at_ms) VALUES ('github', 'old', 'evt_01hzzzzzzzzzzzzzzzzzzzzzzz', ?1)",
            [now_ms() - DEDUP_WINDOW_MS - 1000],
        )
        .unwrap();
        assert_eq!(
            store.ingest(event("github", Some("old"))).await.unwrap(),
            IngestOutcome::Stored
        );
        assert!(matches!(
            store.ingest(event("github", Some("old"))).await.unwrap(),
            IngestOutcome::Duplicate { .. }
        ));
    }

    #[tokio::test]
    async fn data_survives_reopening_and_migrations_are_idempotent() {
        let dir = tempfile::tempdir().unwrap();
        let e = event("github", None);
        {
            let store = open(&dir);
            store.ingest(e.clone()).await.unwrap();
        }
        let store = open(&dir);
        assert!(store.event(&e.id).await.unwrap().is_some());
        let raw = Connection::open(dir.path().join("t.db")).unwrap();
        let v: i64 = raw
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(v, MIGRATIONS.len() as i64);
    }

    #[tokio::test]
    async fn a_failing_job_fails_alone_in_its_batch() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(open(&dir));
        let dup = event("github", None);
        store.ingest(dup.clone()).await.unwrap();
        let mut tasks = Vec::new();
        for i in 0..20 {
            let s = store.clone();
            let e = if i == 10 {
                dup.clone()
            } else {
                event("github", None)
            };
            tasks.push(tokio::spawn(async move { s.ingest(e).await.is_ok() }));
        }
        let ok: Vec<bool> = futures_util::future::join_all(tasks)
            .await
            .into_iter()
            .map(|r| r.unwrap())
            .collect();
        assert_eq!(
            ok.iter().filter(|o| !**o).count(),
            1,
            "only the duplicate primary key fails"
        );
        assert_eq!(store.events(None, 100).await.unwrap().len(), 20);
    }
}
