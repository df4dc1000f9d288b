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

use super::{IngestOutcome, NewEvent, Store, StoreError, StoredDelivery, StoredEvent};
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

type Reply = oneshot::Sender<Result<IngestOutcome, StoreError>>;

enum Job {
    Ingest(Box<NewEvent>, Reply),
}

pub struct SqliteStore {
    jobs: mpsc::Sender<Job>,
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

fn writer_loop(mut conn: Connection, mut rx: mpsc::Receiver<Job>, commits: Arc<AtomicU64>) {
    let mut batch: Vec<Job> = Vec::with_capacity(MAX_BATCH);
    while let Some(first) = rx.blocking_recv() {
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        run_batch(&mut conn, &mut batch, &commits);
    }
}

fn run_batch(conn: &mut Connection, batch: &mut Vec<Job>, commits: &AtomicU64) {
    let mut results: Vec<Result<IngestOutcome, StoreError>> = Vec::with_capacity(batch.len());
    let begun = conn.execute_batch("BEGIN IMMEDIATE");
    if let Err(e) = begun {
        tracing::error!(error = %e, jobs = batch.len(), "store cannot start a transaction");
        for Job::Ingest(_, reply) in batch.drain(..) {
            let _ = reply.send(Err(StoreError::Unavailable(e.to_string())));
        }
        return;
    }
    let now = now_ms();
    for Job::Ingest(event, _) in batch.iter() {
        results.push(in_savepoint(conn, |c| ingest_one(c, event, now)));
    }
    let committed = conn.execute_batch("COMMIT");
    match committed {
        Ok(()) => {
            commits.fetch_add(1, Ordering::Relaxed);
            for (Job::Ingest(_, reply), result) in batch.drain(..).zip(results) {
                let _ = reply.send(result);
            }
        }
        Err(e) => {
            tracing::error!(error = %e, jobs = batch.len(), "store commit failed");
            let _ = conn.execute_batch("ROLLBACK");
            for Job::Ingest(_, reply) in batch.drain(..) {
                let _ = reply.send(Err(StoreError::Unavailable(e.to_string())));
            }
        }
    }
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
        Box::pin(async move {
            let (tx, rx) = oneshot::channel();
            self.jobs
                .try_send(Job::Ingest(Box::new(event), tx))
                .map_err(|e| match e {
                    mpsc::error::TrySendError::Full(_) => StoreError::Unavailable(
                        "overloaded: too many events waiting to be stored".into(),
                    ),
                    mpsc::error::TrySendError::Closed(_) => {
                        StoreError::Unavailable("the store writer has stopped".into())
                    }
                })?;
            rx.await
                .map_err(|_| StoreError::Unavailable("the store writer has stopped".into()))?
        })
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
