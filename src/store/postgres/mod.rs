//! The shared store: one PostgreSQL database for any number of hookwire
//! instances (SPEC §7), behind the same [`Store`] trait as SQLite and with
//! the same semantics, checked by the same conformance suite.
//!
//! - **Crates.** tokio-postgres (async, pipelining and binary COPY for the
//!   later ingest work, no ORM or compile-time database needed), pooled by
//!   deadpool-postgres (small, with a cache of prepared statements per
//!   connection and bounded waits); TLS through the rustls the crate already
//!   uses (tokio-postgres-rustls, ring), so no OpenSSL. sqlx would bring its
//!   macros and a second SQL layer for no gain here.
//! - **Connections** ([`connect`]): `sslmode` disable, prefer (the default,
//!   as libpq), require, verify-full (`sslrootcert=PATH`, else the Mozilla
//!   roots); `statement_timeout` and `idle_in_transaction_session_timeout`
//!   set on every connection; a request waits at most 5 s for a connection,
//!   then gets "unavailable" (503). The URL's password is registered as a
//!   secret and no message of this module contains the URL.
//! - **Schema** ([`schema`]): the same tables as SQLite, with partial
//!   indexes per waiting state, so a claim reads due rows only; migrations
//!   embedded, applied under an advisory lock.
//! - **Ingest** ([`ingest`]): group commit — the requests that arrive
//!   together share one transaction, one multi-row statement per table,
//!   acknowledged after commit. The dedup key is claimed with
//!   `INSERT … ON CONFLICT` on `(source, key)`: of two copies arriving at
//!   two instances at once, the second waits for the first's transaction
//!   and then sees its key.
//! - **Claims** ([`claims`]): `FOR UPDATE SKIP LOCKED` over partial indexes
//!   of due rows, owner and fencing token exactly as SQLite; finishes are
//!   batched ([`batch`]) like ingest; a `serialize_by` key's backlog waits
//!   outside the claim index. Clocks are the instances' own (run NTP).
//! - **Wake-ups and the live feed across instances** ([`notify`]):
//!   `LISTEN`/`NOTIFY` on a connection of each instance's own, sent after
//!   commit and debounced, never inside a transaction.
//! - **Maintenance**: retention pruning under a session advisory lock, one
//!   instance at a time.
//!
//! Finished deliveries stay in `deliveries` (their history is read from
//! there) rather than moving to a table of their own: every claim, sweep and
//! `next_due` reads partial indexes holding only unfinished rows, so the
//! finished ones cost claims nothing but index upkeep (bench: `pg-history`).

mod batch;
mod claims;
mod connect;
mod ingest;
mod notify;
mod schema;
mod steps;
#[cfg(test)]
pub mod testing;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use deadpool_postgres::{Object, Pool, PoolError};
use futures_util::future::BoxFuture;
use tokio_postgres::Row;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::{FromSql, ToSql};

use super::Prepared;
use super::health::Health;
use super::{
    AttemptOutcome, Claimed, DEDUP_WINDOW_MS, DeliveryState, Finished, IngestOutcome, Lease,
    NewDelivery, NewEvent, Page, Pruned, Recorded, RetryOutcome, Store, StoreError, StoreStats,
    StoredAttempt, StoredDelivery, StoredEvent, first_event_id_at,
};
use crate::clock::now_ms;
use crate::ids::{DeliveryId, EventId, InstanceId, RequestId};
pub use connect::POOL_SIZE;
use connect::Target;

type Res<T> = Result<T, StoreError>;

/// A tokio-postgres error whose text carries its cause: the driver's own
/// says only "db error" and keeps the server's message as its source.
#[derive(Debug)]
pub struct DriverError(pub tokio_postgres::Error);

impl fmt::Display for DriverError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)?;
        match std::error::Error::source(&self.0) {
            Some(cause) => write!(f, ": {cause}"),
            None => Ok(()),
        }
    }
}

impl std::error::Error for DriverError {}

/// Whether trying again later can help: the connection failed or closed,
/// the server is shutting down or out of resources, a statement timed out,
/// or the transaction lost a serialization or deadlock race.
fn transient(e: &tokio_postgres::Error) -> bool {
    if e.is_closed() {
        return true;
    }
    if let Some(code) = e.code() {
        let class = &code.code()[..2];
        return matches!(class, "08" | "53" | "57" | "58")
            || [
                SqlState::T_R_SERIALIZATION_FAILURE,
                SqlState::T_R_DEADLOCK_DETECTED,
                SqlState::LOCK_NOT_AVAILABLE,
            ]
            .contains(code);
    }
    // No answer from the server at all: I/O, TLS, connect timeout.
    std::error::Error::source(e).is_some_and(|s| s.is::<std::io::Error>())
        || e.to_string().starts_with("timeout")
}

fn db_err(e: tokio_postgres::Error) -> StoreError {
    StoreError::Driver {
        transient: transient(&e),
        cause: Box::new(DriverError(e)),
    }
}

fn pool_err(e: PoolError) -> StoreError {
    match e {
        PoolError::Backend(e) => db_err(e),
        // Waiting for a connection, or for a new one to be made, timed out;
        // the pool is closed only when the store is dropped.
        other => StoreError::Driver {
            transient: true,
            cause: Box::new(other),
        },
    }
}

/// `.pg()` turns a driver result into the store's.
trait Pg<T> {
    fn pg(self) -> Res<T>;
}

impl<T> Pg<T> for Result<T, tokio_postgres::Error> {
    fn pg(self) -> Res<T> {
        self.map_err(db_err)
    }
}

fn col<'a, T: FromSql<'a>>(r: &'a Row, i: usize) -> Res<T> {
    r.try_get(i).pg()
}

/// A counter stored as INTEGER.
fn u32_col(r: &Row, i: usize) -> Res<u32> {
    let n: i32 = col(r, i)?;
    u32::try_from(n).map_err(|_| bad_column(i, format_args!("not a count: {n}")))
}

fn bad_column(i: usize, what: impl fmt::Display) -> StoreError {
    StoreError::Database(format!("column {i}: {what}"))
}

fn id_col<T>(r: &Row, i: usize, parse: fn(&str) -> Option<T>) -> Res<T> {
    parsed_col(r, i, parse, "an id")
}

/// An id, a delivery state or an attempt outcome, stored as its text.
fn parsed_col<T>(r: &Row, i: usize, parse: fn(&str) -> Option<T>, what: &str) -> Res<T> {
    let text: String = col(r, i)?;
    parse(&text).ok_or_else(|| bad_column(i, format_args!("not {what}: {text}")))
}

fn json_col<T: serde::de::DeserializeOwned>(r: &Row, i: usize) -> Res<T> {
    let text: String = col(r, i)?;
    serde_json::from_str(&text).map_err(|e| bad_column(i, e))
}

/// The payload column, parsed ([`crate::store::StoredPayload`]) with the event's body.
fn payload_col(r: &Row, i: usize, body: &[u8]) -> Res<serde_json::Value> {
    crate::store::StoredPayload::from_column(col(r, i)?)
        .parse(body)
        .map_err(|e| bad_column(i, e))
}

/// A duration as stored: whole milliseconds.
fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

pub struct PostgresStore {
    pool: Pool,
    health: Arc<Health>,
    /// This instance's line to the others on the database.
    link: notify::Link,
    /// This instance's ingest committers, started on the first ingest
    /// (there is a runtime to run them on by then).
    group_commit: std::sync::OnceLock<ingest::GroupCommit>,
    /// This instance's finish writers, likewise.
    finishes: std::sync::OnceLock<Finishes>,
}

/// Finishes of attempts, batched: workers write what the dispatcher's
/// workers finished meanwhile in one transaction.
type Finishes = batch::Batcher<(String, Finished), Recorded>;

/// Finishes per transaction at most, and transactions in flight.
const FINISH_BATCH: usize = 64;
const FINISH_WRITERS: usize = 2;

fn finishes(pool: Pool) -> Finishes {
    batch::Batcher::start(
        FINISH_WRITERS,
        FINISH_BATCH,
        move |done: Vec<(String, Finished)>| {
            let pool = pool.clone();
            async move {
                let mut client = match pool.get().await.map_err(pool_err) {
                    Ok(c) => c,
                    Err(e) => return done.iter().map(|_| Err(e.same())).collect(),
                };
                match claims::finish(&mut client, &done, now_ms()).await {
                    Ok(recorded) => recorded.into_iter().map(Ok).collect(),
                    Err(e) if e.is_unavailable() || done.len() == 1 => {
                        done.iter().map(|_| Err(e.same())).collect()
                    }
                    // Refused for one of them: each on its own, so it fails alone.
                    Err(_) => {
                        let mut each = Vec::with_capacity(done.len());
                        for one in done.chunks(1) {
                            let recorded = claims::finish(&mut client, one, now_ms()).await;
                            each.push(
                                recorded
                                    .map(|r| r.into_iter().next().unwrap_or(Recorded::LeaseLost)),
                            );
                        }
                        each
                    }
                }
            }
        },
    )
}

impl PostgresStore {
    /// Connects to the database named by a `postgres://` URL, migrates it,
    /// and makes the connection pool. Blocks until the migration is done:
    /// it runs on a thread and runtime of its own, so this can be called
    /// from synchronous code inside a runtime or outside any.
    #[cfg(test)]
    pub fn open(url: &str) -> Res<Self> {
        Self::open_with(url, connect::POOL_SIZE)
    }

    /// [`PostgresStore::open`] with a pool of up to `pool_size` connections.
    pub fn open_with(url: &str, pool_size: usize) -> Res<Self> {
        let target = Target::parse(url)?;
        let migrated = std::thread::scope(|s| {
            std::thread::Builder::new()
                .name("hookwire-pg-migrate".into())
                .spawn_scoped(s, || migrate_on_own_runtime(&target))
                .map_err(|e| StoreError::Unavailable(format!("cannot start the migration: {e}")))?
                .join()
                .unwrap_or_else(|_| Err(StoreError::Database("the migration panicked".into())))
        });
        migrated?;
        Ok(Self {
            pool: target.pool(pool_size)?,
            health: Arc::new(Health::default()),
            link: notify::Link::new(target),
            group_commit: std::sync::OnceLock::new(),
            finishes: std::sync::OnceLock::new(),
        })
    }

    async fn client(&self) -> Res<Object> {
        self.pool.get().await.map_err(pool_err)
    }

    /// Tells the health tracker how a write went: a failure that may pass
    /// (the database is down) turns the store failing; a write that changed
    /// something turns it back.
    fn wrote<T>(&self, result: Res<T>, changed: impl FnOnce(&T) -> bool) -> Res<T> {
        match &result {
            Ok(v) if changed(v) => self.health.committed(),
            Err(e) if e.is_unavailable() => self.health.commit_failed(e),
            _ => {}
        }
        result
    }
}

/// Connects once, migrates, and disconnects, on a current-thread runtime.
fn migrate_on_own_runtime(target: &Target) -> Res<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| StoreError::Unavailable(format!("cannot start the migration: {e}")))?;
    rt.block_on(async {
        let (mut client, connection) =
            target
                .config
                .connect(target.connector()?)
                .await
                .map_err(|e| {
                    let transient = transient(&e);
                    StoreError::Driver {
                        transient,
                        cause: Box::new(CannotConnect {
                            server: target.name.clone(),
                            error: DriverError(e),
                        }),
                    }
                })?;
        let driver = tokio::spawn(connection);
        let migrated = schema::migrate(&mut client).await;
        drop(client);
        let _ = driver.await;
        migrated
    })
}

/// Opening failed: names the server (never the URL, which holds the password).
#[derive(Debug, thiserror::Error)]
#[error("cannot connect to PostgreSQL at {server}: {error}")]
struct CannotConnect {
    server: String,
    error: DriverError,
}

pub(super) const INSERT_DELIVERIES: &str = "INSERT INTO deliveries (id, event_id, rule, action, action_type, status, serialize_key,
                         next_attempt_at_ms, created_at_ms, updated_at_ms, replayed_by, waiting_on_key,
                         needs, need_ids, has_steps)
 SELECT d.id, d.event_id, d.rule, d.action, d.action_type, d.status, d.serialize_key, d.due, $1, $1, $2,
        d.status = 'pending' AND d.serialize_key IS NOT NULL AND (
            row_number() OVER (PARTITION BY d.serialize_key, d.status ORDER BY d.id) > 1
            OR (SELECT o.id FROM deliveries o
                WHERE o.serialize_key = d.serialize_key
                  AND o.status IN ('pending', 'running', 'retrying')
                ORDER BY o.serialize_key, o.id LIMIT 1) IS NOT NULL),
        d.needs, d.need_ids, d.has_steps
 FROM unnest($3::text[], $4::text[], $5::bigint[], $6::text[], $7::text[], $8::text[], $9::text[],
             $10::text[], $11::text[], $12::text[], $13::bool[])
      AS d(id, event_id, due, rule, action, action_type, serialize_key, status, needs, need_ids, has_steps)";

/// New deliveries, each of its event and due at its time (or its own, with
/// a `delay`), in one statement; steps are stored `waiting` (and never wait
/// on their key: they join its line when their needs have succeeded). A keyed delivery waits on its key when an earlier one of the
/// key is unfinished, stored before or in this same statement; the keys'
/// locks are taken first (see [`claims::lock_keys`]). The probe of earlier
/// ones is written as the first row in the order of
/// `deliveries_unfinished_by_key`: statistics taken while one key held
/// every row make the generic plan of a plain `EXISTS` scan the table.
async fn insert_deliveries(
    tx: &deadpool_postgres::Transaction<'_>,
    rows: &[(&str, i64, &NewDelivery)],
    now: i64,
    replayed_by: Option<&str>,
) -> Res<()> {
    if rows.is_empty() {
        return Ok(());
    }
    let mut keys: Vec<&str> = rows
        .iter()
        .filter_map(|(_, _, d)| d.serialize_key.as_deref())
        .collect();
    keys.sort_unstable();
    keys.dedup();
    claims::lock_keys(tx, &keys).await?;
    let stmt = tx.prepare_cached(INSERT_DELIVERIES).await.pg()?;
    let ids: Vec<&str> = rows.iter().map(|(_, _, d)| d.id.as_str()).collect();
    let events: Vec<&str> = rows.iter().map(|(e, _, _)| *e).collect();
    let due: Vec<i64> = rows
        .iter()
        .map(|(_, due, d)| d.due_at_ms.unwrap_or(*due))
        .collect();
    let steps: Vec<crate::store::StepColumns> = rows
        .iter()
        .map(|(_, _, d)| crate::store::StepColumns::of(d))
        .collect();
    let status: Vec<&str> = steps.iter().map(|s| s.status).collect();
    let needs: Vec<Option<&str>> = steps.iter().map(|s| s.needs.as_deref()).collect();
    let need_ids: Vec<Option<&str>> = steps.iter().map(|s| s.need_ids.as_deref()).collect();
    let has_steps: Vec<bool> = rows.iter().map(|(_, _, d)| d.has_steps).collect();
    let rules: Vec<&str> = rows.iter().map(|(_, _, d)| d.rule.as_str()).collect();
    let actions: Vec<&str> = rows.iter().map(|(_, _, d)| d.action.as_str()).collect();
    let types: Vec<&str> = rows
        .iter()
        .map(|(_, _, d)| d.action_type.as_str())
        .collect();
    let keys: Vec<Option<&str>> = rows
        .iter()
        .map(|(_, _, d)| d.serialize_key.as_deref())
        .collect();
    tx.execute(
        &stmt,
        &[
            &now,
            &replayed_by,
            &ids,
            &events,
            &due,
            &rules,
            &actions,
            &types,
            &keys,
            &status,
            &needs,
            &need_ids,
            &has_steps,
        ],
    )
    .await
    .pg()?;
    Ok(())
}

const EVENT_COLUMNS: &str = "id, source, received_at_ms, method, path, query, headers, body, payload, facts, trace, matched, dedup_key";

fn event_from_row(r: &Row) -> Res<StoredEvent> {
    let body: Vec<u8> = col(r, 7)?;
    Ok(StoredEvent {
        id: id_col(r, 0, EventId::parse)?,
        source: col(r, 1)?,
        received_at_ms: col(r, 2)?,
        method: col(r, 3)?,
        path: col(r, 4)?,
        query: col(r, 5)?,
        headers: json_col(r, 6)?,
        payload: payload_col(r, 8, &body)?,
        body,
        facts: json_col(r, 9)?,
        trace: json_col(r, 10)?,
        matched: json_col(r, 11)?,
        dedup_key: col(r, 12)?,
        deliveries: Vec::new(),
    })
}

const DELIVERY_COLUMNS: &str = "id, event_id, rule, action, action_type, status, serialize_key, attempts, created_at_ms, \
     attempts_total, manual_retries, retried_by, replayed_by, needs, next_attempt_at_ms, reason, step_trace, \
     CASE WHEN has_steps THEN (SELECT a.output FROM attempts a WHERE a.delivery_id = deliveries.id \
          AND a.output IS NOT NULL ORDER BY a.number DESC LIMIT 1) END";

fn delivery_from_row(r: &Row) -> Res<StoredDelivery> {
    Ok(StoredDelivery {
        id: id_col(r, 0, DeliveryId::parse)?,
        event_id: id_col(r, 1, EventId::parse)?,
        rule: col(r, 2)?,
        action: col(r, 3)?,
        action_type: col(r, 4)?,
        status: parsed_col(r, 5, DeliveryState::parse, "a delivery state")?,
        serialize_key: col(r, 6)?,
        attempts: u32_col(r, 9)?,
        attempts_in_budget: u32_col(r, 7)?,
        manual_retries: u32_col(r, 10)?,
        retried_by: col(r, 11)?,
        replayed_by: col(r, 12)?,
        created_at_ms: col(r, 8)?,
        needs: opt_json_col(r, 13)?.unwrap_or_default(),
        due_at_ms: match DeliveryState::parse(&col::<String>(r, 5)?) {
            Some(DeliveryState::Pending | DeliveryState::Retrying) => Some(col(r, 14)?),
            _ => None,
        },
        reason: col(r, 15)?,
        when: opt_json_col(r, 16)?.unwrap_or_default(),
        output: opt_json_col::<serde_json::Value>(r, 17)
            .ok()
            .flatten()
            .map(crate::store::steps::view),
    })
}

/// A nullable JSON text column.
fn opt_json_col<T: serde::de::DeserializeOwned>(r: &Row, i: usize) -> Res<Option<T>> {
    match col::<Option<String>>(r, i)? {
        Some(text) => serde_json::from_str(&text)
            .map(Some)
            .map_err(|e| bad_column(i, e)),
        None => Ok(None),
    }
}

/// Events as read, with their deliveries (one query for all of them).
async fn with_deliveries(client: &Object, rows: Vec<Row>) -> Res<Vec<StoredEvent>> {
    let mut events = rows.iter().map(event_from_row).collect::<Res<Vec<_>>>()?;
    if events.is_empty() {
        return Ok(events);
    }
    let ids: Vec<&str> = events.iter().map(|e| e.id.as_str()).collect();
    let stmt = client
        .prepare_cached(&format!(
            "SELECT {DELIVERY_COLUMNS} FROM deliveries WHERE event_id = ANY($1::text[]) ORDER BY id"
        ))
        .await
        .pg()?;
    let mut by_event: HashMap<EventId, Vec<StoredDelivery>> = HashMap::new();
    for row in client.query(&stmt, &[&ids]).await.pg()? {
        let d = delivery_from_row(&row)?;
        by_event.entry(d.event_id.clone()).or_default().push(d);
    }
    for e in &mut events {
        e.deliveries = by_event.remove(&e.id).unwrap_or_default();
    }
    Ok(events)
}

/// A page of events, newest first, with only the filters given in the
/// statement (numbered in the order source, matched, before, limit): with
/// a source it walks `events_by_source`, else the primary key.
fn event_page_sql(source: bool, matched: bool, before: bool) -> String {
    let mut n = 0;
    let mut next = || {
        n += 1;
        n
    };
    let mut conditions = Vec::new();
    if source {
        conditions.push(format!("source = ${}", next()));
    }
    if matched {
        conditions.push(format!("matched_any = ${}", next()));
    }
    if before {
        conditions.push(format!("id < ${}", next()));
    }
    format!(
        "SELECT {EVENT_COLUMNS} FROM events{} ORDER BY id DESC LIMIT ${}",
        filters(&conditions),
        next()
    )
}

/// ` WHERE a AND b`, or nothing.
fn filters(conditions: &[String]) -> String {
    if conditions.is_empty() {
        String::new()
    } else {
        format!(" WHERE {}", conditions.join(" AND "))
    }
}

async fn event_page(
    client: &Object,
    source: Option<&str>,
    matched: Option<bool>,
    page: &Page,
) -> Res<Vec<StoredEvent>> {
    let sql = event_page_sql(source.is_some(), matched.is_some(), page.before.is_some());
    let limit = i64::from(page.limit);
    let mut params: Vec<&(dyn ToSql + Sync)> = Vec::new();
    if let Some(s) = &source {
        params.push(s);
    }
    if let Some(m) = &matched {
        params.push(m);
    }
    if let Some(b) = &page.before {
        params.push(b);
    }
    params.push(&limit);
    let stmt = client.prepare_cached(&sql).await.pg()?;
    let rows = client.query(&stmt, &params).await.pg()?;
    with_deliveries(client, rows).await
}

/// A fresh budget for a dead or skipped delivery; its attempts stay and
/// numbering goes on after them.
async fn retry_delivery(
    client: &mut Object,
    id: &str,
    request: &str,
    now: i64,
) -> Res<RetryOutcome> {
    let tx = client.transaction().await.pg()?;
    let row = tx
        .query_opt(
            "SELECT status FROM deliveries WHERE id = $1 FOR UPDATE",
            &[&id],
        )
        .await
        .pg()?;
    let Some(row) = row else {
        return Ok(RetryOutcome::NotFound);
    };
    let status: String = col(&row, 0)?;
    if status != "dead" && status != "skipped" {
        return Ok(RetryOutcome::NotRetryable(status));
    }
    let row = tx
        .query_one(
            "SELECT event_id, (SELECT n.action || ', which is ' || n.status FROM deliveries n WHERE n.id = d.blocked_by)
             FROM deliveries d WHERE d.id = $1",
            &[&id],
        )
        .await
        .pg()?;
    let (event_id, blocked): (String, Option<String>) = (col(&row, 0)?, col(&row, 1)?);
    if let Some(need) = blocked {
        return Ok(RetryOutcome::BehindNeed(need));
    }
    tx.execute(
        "UPDATE deliveries SET status = 'pending', attempts = 0, manual_retries = manual_retries + 1, retried_by = $3,
                next_attempt_at_ms = $2, lease_until_ms = NULL, updated_at_ms = $2, waiting_on_key = false,
                reason = NULL WHERE id = $1",
        &[&id, &now, &request],
    )
    .await
    .pg()?;
    // The steps this delivery's end skipped wait for it again.
    if let Some(retried) = DeliveryId::parse(id) {
        let links = steps::links(&tx, &[event_id.as_str()])
            .await?
            .remove(&event_id)
            .unwrap_or_default();
        let again: Vec<String> = crate::store::steps::unblocked_by(&links, &retried)
            .iter()
            .map(|d| d.to_string())
            .collect();
        if !again.is_empty() {
            tx.execute(
                "UPDATE deliveries SET status = 'waiting', reason = NULL, blocked_by = NULL, updated_at_ms = $2
                 WHERE id = ANY($1::text[]) AND status = 'skipped'",
                &[&again, &now],
            )
            .await
            .pg()?;
        }
    }
    tx.commit().await.pg()?;
    Ok(RetryOutcome::Queued)
}

/// Events examined per pruning batch, and expired dedup keys per batch:
/// each batch is its own short transaction.
const PRUNE_BATCH: i64 = 1000;

/// One batch of pruning: the next [`PRUNE_BATCH`] events after `$1` below
/// `$2` (the first id of the cutoff time) in primary-key order; of these,
/// those received before `$3` whose deliveries are all finished are
/// deleted, their deliveries and attempts by cascade. Answers the last id
/// looked at, how many were looked at, and how many went.
const PRUNE_EVENTS: &str = "WITH batch AS (
        SELECT id FROM events WHERE id > $1 AND id < $2 ORDER BY id LIMIT $4
    ), gone AS (
        DELETE FROM events e USING batch b
        WHERE e.id = b.id AND e.received_at_ms < $3
          AND NOT EXISTS (SELECT 1 FROM deliveries d
                          WHERE d.event_id = e.id AND d.status IN ('waiting', 'pending', 'running', 'retrying'))
        RETURNING 1
    )
    SELECT (SELECT max(id) FROM batch), (SELECT count(*) FROM batch), (SELECT count(*) FROM gone)";

const PRUNE_DEDUP: &str = "DELETE FROM dedup WHERE (source, key) IN (
        SELECT source, key FROM dedup WHERE created_at_ms < $1 ORDER BY created_at_ms LIMIT $2)";

/// The session advisory lock that makes one instance at a time the one that
/// prunes ("hookwire maintenance" in ASCII).
const MAINTENANCE_LOCK: i64 = 0x686f_6f6b_6d61_696e;

/// Retention pruning by one instance at a time: the pass runs only on the
/// instance that takes the maintenance lock; the others skip it (an empty
/// result). The lock is held by a connection taken out of the pool for the
/// pass: dropping it — the pass finished, was cancelled, or the instance
/// died — closes the session and frees the lock, so the next pass of any
/// instance can take over.
async fn prune(store: &PostgresStore, before_ms: i64) -> Res<Pruned> {
    let leader = Object::take(store.client().await?);
    let took: bool = leader
        .query_one("SELECT pg_try_advisory_lock($1)", &[&MAINTENANCE_LOCK])
        .await
        .pg()
        .and_then(|row| col(&row, 0))?;
    if !took {
        tracing::debug!("another instance holds the maintenance lock; this pass is theirs");
        return Ok(Pruned::default());
    }
    let pruned = prune_batches(store, before_ms).await;
    drop(leader);
    pruned
}

async fn prune_batches(store: &PostgresStore, before_ms: i64) -> Res<Pruned> {
    let mut pruned = Pruned::default();
    let below = first_event_id_at(before_ms);
    // "" sorts before every id.
    let mut after = String::new();
    loop {
        let started = Instant::now();
        let client = store.client().await?;
        let stmt = client.prepare_cached(PRUNE_EVENTS).await.pg()?;
        let row = client
            .query_one(&stmt, &[&after, &below, &before_ms, &PRUNE_BATCH])
            .await
            .pg()?;
        drop(client);
        let (last, seen, gone): (Option<String>, i64, i64) =
            (col(&row, 0)?, col(&row, 1)?, col(&row, 2)?);
        pruned.events += gone.unsigned_abs();
        count_batch(&mut pruned, started.elapsed());
        match last {
            Some(last) if seen == PRUNE_BATCH => after = last,
            _ => break,
        }
    }
    loop {
        let started = Instant::now();
        let client = store.client().await?;
        let stmt = client.prepare_cached(PRUNE_DEDUP).await.pg()?;
        let gone = client
            .execute(&stmt, &[&(now_ms() - DEDUP_WINDOW_MS), &PRUNE_BATCH])
            .await
            .pg()?;
        drop(client);
        pruned.dedup_keys += gone;
        count_batch(&mut pruned, started.elapsed());
        if gone < PRUNE_BATCH.unsigned_abs() {
            break;
        }
    }
    Ok(pruned)
}

fn count_batch(pruned: &mut Pruned, took: Duration) {
    pruned.batches += 1;
    pruned.longest_batch = pruned.longest_batch.max(took);
}

/// A write that leaves nothing behind, to learn whether commits work again
/// (see [`super::health`]): a dedup row no source can have, written and
/// deleted in one transaction.
async fn probe(client: &mut Object) -> Res<()> {
    let tx = client.transaction().await.pg()?;
    tx.batch_execute(
        "INSERT INTO dedup (source, key, event_id, created_at_ms) VALUES ('', 'hookwire-probe', '', 0)
             ON CONFLICT (source, key) DO NOTHING;
         DELETE FROM dedup WHERE source = '' AND key = 'hookwire-probe';",
    )
    .await
    .pg()?;
    tx.commit().await.pg()
}

impl Store for PostgresStore {
    fn ingest(&self, event: NewEvent) -> BoxFuture<'_, Result<IngestOutcome, StoreError>> {
        Box::pin(async move {
            let prepared = Prepared::new(event)?;
            let has_work = !prepared.event.deliveries.is_empty();
            let group = self
                .group_commit
                .get_or_init(|| ingest::group_commit(self.pool.clone()));
            // SPEC §7: ingest waits at most this long for the database, then
            // answers 503. A commit that lands just after is not acknowledged:
            // the sender sends again, and a dedup key makes that a duplicate.
            let stored = tokio::time::timeout(connect::WAIT, group.submit(prepared))
                .await
                .unwrap_or_else(|_| {
                    Err(StoreError::Unavailable(format!(
                        "the database did not answer within {} s",
                        connect::WAIT.as_secs()
                    )))
                });
            let stored = self.wrote(stored, |o| *o == IngestOutcome::Stored);
            if stored.is_err() {
                self.health.refused();
            }
            if stored.as_ref().is_ok_and(|o| *o == IngestOutcome::Stored) && has_work {
                self.link.work_added();
            }
            stored
        })
    }

    fn event(&self, id: &EventId) -> BoxFuture<'_, Result<Option<StoredEvent>, StoreError>> {
        let id = id.to_string();
        Box::pin(async move {
            let client = self.client().await?;
            let stmt = client
                .prepare_cached(&format!("SELECT {EVENT_COLUMNS} FROM events WHERE id = $1"))
                .await
                .pg()?;
            let rows = client.query(&stmt, &[&id]).await.pg()?;
            Ok(with_deliveries(&client, rows).await?.pop())
        })
    }

    fn events(
        &self,
        source: Option<&str>,
        limit: u32,
    ) -> BoxFuture<'_, Result<Vec<StoredEvent>, StoreError>> {
        let source = source.map(str::to_owned);
        Box::pin(async move {
            let client = self.client().await?;
            let page = Page {
                limit,
                before: None,
            };
            event_page(&client, source.as_deref(), None, &page).await
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
        let owner = owner.to_string();
        Box::pin(async move {
            let claimed = async {
                let mut client = self.client().await?;
                claims::claim(&mut client, &owner, now_ms, limit, millis(lease), &skip).await
            }
            .await;
            self.wrote(claimed, |c| !c.is_empty())
        })
    }

    fn renew(
        &self,
        owner: &InstanceId,
        held: Vec<Lease>,
        lease: Duration,
    ) -> BoxFuture<'_, Result<Vec<DeliveryId>, StoreError>> {
        let owner = owner.to_string();
        Box::pin(async move {
            let client = self.client().await?;
            let until = now_ms().saturating_add(millis(lease));
            let lost = claims::renew(&client, &owner, &held, until).await;
            self.wrote(lost, |_| false)
        })
    }

    fn expedite(
        &self,
        actions: Vec<String>,
        now_ms: i64,
    ) -> BoxFuture<'_, Result<u64, StoreError>> {
        Box::pin(async move {
            let client = self.client().await?;
            let due = claims::expedite(&client, &actions, now_ms, crate::clock::now_ms()).await?;
            if due > 0 {
                self.link.work_added();
            }
            Ok(due)
        })
    }

    fn release(
        &self,
        owner: &InstanceId,
        held: Vec<Lease>,
        due_at_ms: i64,
    ) -> BoxFuture<'_, Result<(), StoreError>> {
        let owner = owner.to_string();
        Box::pin(async move {
            let client = self.client().await?;
            claims::release(&client, &owner, &held, due_at_ms, now_ms()).await?;
            // Given back for want of room here: another instance may have some.
            if !held.is_empty() {
                self.link.work_added();
            }
            Ok(())
        })
    }

    fn finish(
        &self,
        owner: &InstanceId,
        finished: Finished,
    ) -> BoxFuture<'_, Result<Recorded, StoreError>> {
        let owner = owner.to_string();
        Box::pin(async move {
            let finishes = self.finishes.get_or_init(|| finishes(self.pool.clone()));
            let recorded = finishes.submit((owner, finished)).await;
            self.wrote(recorded, |r| *r == Recorded::Yes)
        })
    }

    fn requeue_own(&self, owner: &InstanceId) -> BoxFuture<'_, Result<u64, StoreError>> {
        let owner = owner.to_string();
        Box::pin(async move {
            let client = self.client().await?;
            let queued = claims::requeue_own(&client, &owner, now_ms()).await?;
            if queued > 0 {
                self.link.work_added();
            }
            Ok(queued)
        })
    }

    fn next_due(&self) -> BoxFuture<'_, Result<Option<i64>, StoreError>> {
        Box::pin(async move { claims::next_due(&self.client().await?).await })
    }

    fn prune(&self, before_ms: i64) -> BoxFuture<'_, Result<Pruned, StoreError>> {
        Box::pin(prune(self, before_ms))
    }

    fn event_page(
        &self,
        source: Option<String>,
        matched: Option<bool>,
        page: Page,
    ) -> BoxFuture<'_, Result<Vec<StoredEvent>, StoreError>> {
        Box::pin(async move {
            let client = self.client().await?;
            event_page(&client, source.as_deref(), matched, &page).await
        })
    }

    fn delivery_page(
        &self,
        status: Option<String>,
        page: Page,
    ) -> BoxFuture<'_, Result<Vec<StoredDelivery>, StoreError>> {
        Box::pin(async move {
            let mut conditions = Vec::new();
            let mut params: Vec<&(dyn ToSql + Sync)> = Vec::new();
            if let Some(s) = &status {
                params.push(s);
                conditions.push(format!("status = ${}", params.len()));
            }
            if let Some(b) = &page.before {
                params.push(b);
                conditions.push(format!("id < ${}", params.len()));
            }
            let limit = i64::from(page.limit);
            params.push(&limit);
            // With a status it walks `deliveries_by_status`, else the primary key.
            let sql = format!(
                "SELECT {DELIVERY_COLUMNS} FROM deliveries{} ORDER BY id DESC LIMIT ${}",
                filters(&conditions),
                params.len()
            );
            let client = self.client().await?;
            let stmt = client.prepare_cached(&sql).await.pg()?;
            client
                .query(&stmt, &params)
                .await
                .pg()?
                .iter()
                .map(delivery_from_row)
                .collect()
        })
    }

    fn delivery(
        &self,
        id: &DeliveryId,
    ) -> BoxFuture<'_, Result<Option<StoredDelivery>, StoreError>> {
        let id = id.to_string();
        Box::pin(async move {
            let client = self.client().await?;
            let stmt = client
                .prepare_cached(&format!(
                    "SELECT {DELIVERY_COLUMNS} FROM deliveries WHERE id = $1"
                ))
                .await
                .pg()?;
            client
                .query_opt(&stmt, &[&id])
                .await
                .pg()?
                .map(|r| delivery_from_row(&r))
                .transpose()
        })
    }

    fn attempts(&self, id: &DeliveryId) -> BoxFuture<'_, Result<Vec<StoredAttempt>, StoreError>> {
        let id = id.to_string();
        Box::pin(async move {
            let client = self.client().await?;
            let stmt = client
                .prepare_cached(
                    "SELECT id, number, started_at_ms, duration_ms, outcome, status_code, exit_code, error, response,
                            budget_number, round, requested_by
                     FROM attempts WHERE delivery_id = $1 ORDER BY number",
                )
                .await
                .pg()?;
            client
                .query(&stmt, &[&id])
                .await
                .pg()?
                .iter()
                .map(|r| {
                    let response: Option<Vec<u8>> = col(r, 8)?;
                    let status_code: Option<i32> = col(r, 5)?;
                    Ok(StoredAttempt {
                        id: col(r, 0)?,
                        number: u32_col(r, 1)?,
                        budget_number: u32_col(r, 9)?,
                        round: u32_col(r, 10)?,
                        requested_by: col(r, 11)?,
                        started_at_ms: col(r, 2)?,
                        duration_ms: col(r, 3)?,
                        outcome: parsed_col(r, 4, AttemptOutcome::parse, "an attempt outcome")?,
                        status_code: status_code.and_then(|c| u16::try_from(c).ok()),
                        exit_code: col(r, 6)?,
                        error: col(r, 7)?,
                        response: String::from_utf8_lossy(&response.unwrap_or_default())
                            .into_owned(),
                    })
                })
                .collect()
        })
    }

    fn retry(
        &self,
        id: &DeliveryId,
        request: &RequestId,
    ) -> BoxFuture<'_, Result<RetryOutcome, StoreError>> {
        let (id, request) = (id.to_string(), request.to_string());
        Box::pin(async move {
            let mut client = self.client().await?;
            let retried = retry_delivery(&mut client, &id, &request, now_ms()).await?;
            if retried == RetryOutcome::Queued {
                self.link.work_added();
            }
            Ok(retried)
        })
    }

    fn add_deliveries(
        &self,
        event: &EventId,
        deliveries: Vec<NewDelivery>,
        request: &RequestId,
    ) -> BoxFuture<'_, Result<(), StoreError>> {
        let (event, request) = (event.to_string(), request.to_string());
        Box::pin(async move {
            let mut client = self.client().await?;
            let tx = client.transaction().await.pg()?;
            let now = now_ms();
            let rows: Vec<_> = deliveries
                .iter()
                .map(|d| (event.as_str(), now, d))
                .collect();
            insert_deliveries(&tx, &rows, now, Some(&request)).await?;
            tx.commit().await.pg()?;
            if !deliveries.is_empty() {
                self.link.work_added();
            }
            Ok(())
        })
    }

    fn step_outputs(
        &self,
        step: &DeliveryId,
    ) -> BoxFuture<'_, Result<serde_json::Map<String, serde_json::Value>, StoreError>> {
        let step = step.clone();
        Box::pin(async move {
            let client = self.client().await?;
            steps::outputs_for(&client, &step).await
        })
    }

    fn queue_depth(&self) -> BoxFuture<'_, Result<u64, StoreError>> {
        Box::pin(async move {
            let client = self.client().await?;
            let row = client
                .query_one(
                    "SELECT count(*) FROM deliveries WHERE status IN ('pending', 'retrying')",
                    &[],
                )
                .await
                .pg()?;
            Ok(col::<i64>(&row, 0)?.unsigned_abs())
        })
    }

    fn oldest_waiting(&self) -> BoxFuture<'_, Result<Option<i64>, StoreError>> {
        Box::pin(async move {
            let client = self.client().await?;
            // Ids are made when deliveries are, in time order: the first of
            // each state in `deliveries_by_status` is its oldest, found
            // without reading a backlog of any size (a metrics scrape asks).
            let row = client
                .query_one(
                    "SELECT least(
                         (SELECT created_at_ms FROM deliveries WHERE status = 'pending' ORDER BY status, id LIMIT 1),
                         (SELECT created_at_ms FROM deliveries WHERE status = 'retrying' ORDER BY status, id LIMIT 1))",
                    &[],
                )
                .await
                .pg()?;
            col(&row, 0)
        })
    }

    fn ping(&self) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(async move {
            let mut client = self.client().await?;
            if self.health.is_failing() {
                // Ready again only once a write commits.
                let probed = probe(&mut client).await;
                self.wrote(probed, |_| true)?;
                return self.health.check();
            }
            client.simple_query("SELECT 1").await.pg()?;
            Ok(())
        })
    }

    fn stats(&self) -> BoxFuture<'_, StoreStats> {
        Box::pin(async move {
            let status = self.pool.status();
            let database_bytes = match self.client().await {
                Ok(client) => client
                    .query_one("SELECT pg_database_size(current_database())", &[])
                    .await
                    .ok()
                    .and_then(|r| r.try_get::<_, i64>(0).ok())
                    .map(i64::unsigned_abs),
                Err(_) => None,
            };
            StoreStats {
                // Requests waiting for a connection.
                writer_queue: status.waiting as u64,
                database_bytes,
                wal_bytes: None,
                disk_free_bytes: None,
            }
        })
    }

    fn peers(&self, me: &InstanceId) -> Option<super::peers::Peers> {
        Some(self.link.open(me))
    }
}
