//! Ingest on PostgreSQL, with group commit: the requests that arrive while
//! a transaction is being written share the next one. A few committer tasks
//! per instance ([`Batcher`]) take whatever is queued (up to [`MAX_BATCH`]) and store it
//! with one statement per table — the dedup keys, the events, the
//! deliveries — and one commit, so the database flushes its log once for
//! the lot and each request costs a few array elements instead of four
//! round trips. Every request is answered only after the commit that holds
//! it (SPEC §7: never a 2xx for an uncommitted event).
//!
//! A batch the database refuses for one of its events (not for being down)
//! is stored again one event per transaction, so one bad event fails alone.

use std::collections::HashMap;

use deadpool_postgres::{Object, Pool, Transaction};
use tokio_postgres::types::ToSql;

use super::batch::Batcher;
use super::{Pg, Res, col, id_col, insert_deliveries, pool_err};
use crate::clock::now_ms;
use crate::ids::EventId;
use crate::store::{DEDUP_WINDOW_MS, IngestOutcome, Prepared, StoreError};

/// Events per transaction at most: enough to amortise a commit, small
/// enough that one transaction's arrays stay a few megabytes.
const MAX_BATCH: usize = 128;

/// Transactions in flight per instance.
const COMMITTERS: usize = 3;

/// This instance's ingest committers.
pub(super) type GroupCommit = Batcher<Prepared, IngestOutcome>;

/// Starts the committers on the current runtime.
pub(super) fn group_commit(pool: Pool) -> GroupCommit {
    Batcher::start(COMMITTERS, MAX_BATCH, move |events: Vec<Prepared>| {
        let pool = pool.clone();
        async move {
            let started = std::time::Instant::now();
            let refs: Vec<&Prepared> = events.iter().collect();
            let outcomes = commit(&pool, &refs).await;
            crate::telemetry::store_commit_finished(started.elapsed());
            outcomes
        }
    })
}

/// Stores `events` in one transaction; one outcome per event, in order.
async fn commit(pool: &Pool, events: &[&Prepared]) -> Vec<Res<IngestOutcome>> {
    let mut client = match pool.get().await.map_err(pool_err) {
        Ok(c) => c,
        Err(e) => return events.iter().map(|_| Err(e.same())).collect(),
    };
    let now = now_ms();
    if let [one] = events {
        return vec![ingest_one(&mut client, one, now).await];
    }
    match batch(&mut client, events, now).await {
        Ok(outcomes) => outcomes.into_iter().map(Ok).collect(),
        Err(e) if e.is_unavailable() => events.iter().map(|_| Err(e.same())).collect(),
        Err(e) => {
            tracing::debug!(error = %e, events = events.len(), "a group commit failed; storing its events one by one");
            let mut outcomes = Vec::with_capacity(events.len());
            for event in events {
                outcomes.push(ingest_one(&mut client, event, now).await);
            }
            outcomes
        }
    }
}

/// Claims a dedup key for an event, or replaces an expired claim of it:
/// returns the row when this event now holds the key, nothing when a copy
/// received within the window holds it. A concurrent copy's uncommitted
/// row makes this wait for its transaction, then see it.
const DEDUP_CLAIM: &str = "INSERT INTO dedup (source, key, event_id, created_at_ms) VALUES ($1, $2, $3, $4)
     ON CONFLICT (source, key) DO UPDATE SET event_id = EXCLUDED.event_id, created_at_ms = EXCLUDED.created_at_ms
     WHERE dedup.created_at_ms <= EXCLUDED.created_at_ms - $5
     RETURNING event_id";

/// [`DEDUP_CLAIM`] for many keys at once, in key order (two batches
/// claiming overlapping keys wait for each other in one order, never in a
/// circle); returns the ids of the events that now hold their keys.
const DEDUP_CLAIMS: &str = "INSERT INTO dedup (source, key, event_id, created_at_ms)
     SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::bigint[]) ORDER BY 1, 2
     ON CONFLICT (source, key) DO UPDATE SET event_id = EXCLUDED.event_id, created_at_ms = EXCLUDED.created_at_ms
     WHERE dedup.created_at_ms <= EXCLUDED.created_at_ms - $5
     RETURNING event_id";

const DEDUP_HOLDERS: &str = "SELECT d.source, d.key, d.event_id FROM dedup d
     JOIN unnest($1::text[], $2::text[]) AS k(source, key) ON d.source = k.source AND d.key = k.key";

const INSERT_EVENTS: &str = "INSERT INTO events (id, source, received_at_ms, method, path, query, headers, body, payload,
                        facts, trace, matched, matched_any, dedup_key)
     SELECT * FROM unnest($1::text[], $2::text[], $3::bigint[], $4::text[], $5::text[], $6::text[], $7::text[],
                          $8::bytea[], $9::text[], $10::text[], $11::text[], $12::text[], $13::boolean[], $14::text[])";

/// What became of each event of a batch before the events are written.
enum Fate {
    Store,
    /// A copy already holds the key: the stored one's id.
    Duplicate(EventId),
    /// The same key earlier in this batch: that event's index.
    SameAs(usize),
}

/// Stores a batch in one transaction (see the module's comment).
async fn batch(client: &mut Object, events: &[&Prepared], now: i64) -> Res<Vec<IngestOutcome>> {
    let tx = client.transaction().await.pg()?;
    let fates = claim_keys(&tx, events).await?;
    let stored: Vec<&Prepared> = events
        .iter()
        .zip(&fates)
        .filter(|(_, f)| matches!(f, Fate::Store))
        .map(|(e, _)| *e)
        .collect();
    insert_events(&tx, &stored).await?;
    let rows: Vec<_> = stored
        .iter()
        .flat_map(|p| {
            let e = &p.event;
            e.deliveries
                .iter()
                .map(move |d| (e.id.as_str(), e.received_at_ms, d))
        })
        .collect();
    insert_deliveries(&tx, &rows, now, None).await?;
    tx.commit().await.pg()?;
    Ok(fates
        .iter()
        .map(|f| match f {
            Fate::Store => IngestOutcome::Stored,
            Fate::Duplicate(first) => IngestOutcome::Duplicate {
                first: first.clone(),
            },
            Fate::SameAs(i) => IngestOutcome::Duplicate {
                first: match &fates[*i] {
                    Fate::Duplicate(first) => first.clone(),
                    _ => events[*i].event.id.clone(),
                },
            },
        })
        .collect())
}

/// Claims the batch's dedup keys; each event's fate.
async fn claim_keys(tx: &Transaction<'_>, events: &[&Prepared]) -> Res<Vec<Fate>> {
    let mut fates = Vec::with_capacity(events.len());
    let mut first_of: HashMap<(&str, &str), usize> = HashMap::new();
    let mut keyed = Vec::new();
    for (i, p) in events.iter().enumerate() {
        let e = &p.event;
        match &e.dedup_key {
            Some(key) => match first_of.get(&(e.source.as_str(), key.as_str())) {
                Some(&first) => fates.push(Fate::SameAs(first)),
                None => {
                    first_of.insert((e.source.as_str(), key.as_str()), i);
                    keyed.push(i);
                    fates.push(Fate::Store);
                }
            },
            None => fates.push(Fate::Store),
        }
    }
    if keyed.is_empty() {
        return Ok(fates);
    }
    let source: Vec<&str> = keyed
        .iter()
        .map(|&i| events[i].event.source.as_str())
        .collect();
    let key: Vec<&str> = keyed
        .iter()
        .map(|&i| events[i].event.dedup_key.as_deref().unwrap_or_default())
        .collect();
    let id: Vec<&str> = keyed.iter().map(|&i| events[i].event.id.as_str()).collect();
    let at: Vec<i64> = keyed
        .iter()
        .map(|&i| events[i].event.received_at_ms)
        .collect();
    let stmt = tx.prepare_cached(DEDUP_CLAIMS).await.pg()?;
    let holders: std::collections::HashSet<String> = tx
        .query(&stmt, &[&source, &key, &id, &at, &DEDUP_WINDOW_MS])
        .await
        .pg()?
        .iter()
        .map(|r| col(r, 0))
        .collect::<Res<_>>()?;
    if holders.len() == keyed.len() {
        return Ok(fates);
    }
    // The others repeat a key a copy within the window holds.
    let stmt = tx.prepare_cached(DEDUP_HOLDERS).await.pg()?;
    let mut held_by: HashMap<(String, String), EventId> = HashMap::new();
    for r in tx.query(&stmt, &[&source, &key]).await.pg()? {
        held_by.insert((col(&r, 0)?, col(&r, 1)?), id_col(&r, 2, EventId::parse)?);
    }
    for &i in &keyed {
        let e = &events[i].event;
        if holders.contains(e.id.as_str()) {
            continue;
        }
        let key = e.dedup_key.clone().unwrap_or_default();
        match held_by.remove(&(e.source.clone(), key)) {
            Some(first) => fates[i] = Fate::Duplicate(first),
            // The holder's transaction rolled back after the conflict:
            // the one-by-one path claims again.
            None => {
                return Err(StoreError::Database(
                    "a dedup key changed hands during the group commit".into(),
                ));
            }
        }
    }
    Ok(fates)
}

async fn insert_events(tx: &Transaction<'_>, events: &[&Prepared]) -> Res<()> {
    if events.is_empty() {
        return Ok(());
    }
    macro_rules! column {
        ($f:expr) => {
            events.iter().map($f).collect::<Vec<_>>()
        };
    }
    let id = column!(|p| p.event.id.as_str());
    let source = column!(|p| p.event.source.as_str());
    let received = column!(|p| p.event.received_at_ms);
    let method = column!(|p| p.event.method.as_str());
    let path = column!(|p| p.event.path.as_str());
    let query = column!(|p| p.event.query.as_str());
    let headers = column!(|p| p.headers.as_str());
    let body = column!(|p| p.event.body.as_ref());
    let payload = column!(|p| p.payload.as_str());
    let facts = column!(|p| p.facts.as_str());
    let trace = column!(|p| p.trace.as_str());
    let matched = column!(|p| p.matched.as_str());
    let matched_any = column!(|p| !p.event.matched.is_empty());
    let dedup = column!(|p| p.event.dedup_key.as_deref());
    let params: [&(dyn ToSql + Sync); 14] = [
        &id,
        &source,
        &received,
        &method,
        &path,
        &query,
        &headers,
        &body,
        &payload,
        &facts,
        &trace,
        &matched,
        &matched_any,
        &dedup,
    ];
    let stmt = tx.prepare_cached(INSERT_EVENTS).await.pg()?;
    tx.execute(&stmt, &params).await.pg()?;
    Ok(())
}

/// Stores one event in a transaction of its own, or finds the copy whose
/// dedup key it repeats.
pub(super) async fn ingest_one(client: &mut Object, p: &Prepared, now: i64) -> Res<IngestOutcome> {
    let e = &p.event;
    let tx = client.transaction().await.pg()?;
    if let Some(key) = &e.dedup_key {
        let claim = tx.prepare_cached(DEDUP_CLAIM).await.pg()?;
        let first = tx
            .prepare_cached("SELECT event_id FROM dedup WHERE source = $1 AND key = $2")
            .await
            .pg()?;
        // The holder found by the conflict could be gone before it is read
        // (its transaction rolled back): then claim again.
        let mut tries = 0;
        loop {
            let params: [&(dyn ToSql + Sync); 5] = [
                &e.source,
                key,
                &e.id.as_str(),
                &e.received_at_ms,
                &DEDUP_WINDOW_MS,
            ];
            if tx.query_opt(&claim, &params).await.pg()?.is_some() {
                break;
            }
            if let Some(row) = tx.query_opt(&first, &[&e.source, key]).await.pg()? {
                let first = id_col(&row, 0, EventId::parse)?;
                return Ok(IngestOutcome::Duplicate { first });
            }
            tries += 1;
            if tries == 3 {
                return Err(StoreError::Unavailable(
                    "the dedup key kept changing hands; try again".into(),
                ));
            }
        }
    }
    insert_events(&tx, &[p]).await?;
    let rows: Vec<_> = e
        .deliveries
        .iter()
        .map(|d| (e.id.as_str(), e.received_at_ms, d))
        .collect();
    insert_deliveries(&tx, &rows, now, None).await?;
    tx.commit().await.pg()?;
    Ok(IngestOutcome::Stored)
}
