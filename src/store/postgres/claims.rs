//! The delivery lifecycle on PostgreSQL: claims with `FOR UPDATE SKIP
//! LOCKED`, leases with an owner and a fencing token, heartbeats, releases,
//! finishes and requeues. Every statement names the lease it acts under, so
//! an instance whose lease was taken over writes nothing.

use deadpool_postgres::Object;
use tokio_postgres::Row;

use super::{Pg, Res, col, id_col, json_col, payload_col, u32_col};
use crate::ids::{DeliveryId, EventId};
use crate::request::{Request, query_pairs};
use crate::store::{Claimed, Finished, Lease, Recorded, StoredPayload};

/// Due deliveries of one waiting state, oldest due first, locked (skipping
/// those another claim holds), then marked `running` for the claimer with
/// the next token. `{state}` and `{due}` name the state and its time column.
///
/// A delivery with a `serialize_key` is due only while no earlier delivery
/// of that key is unfinished: one probe of `deliveries_unfinished_by_key`,
/// asked for in that index's order so that no plan reads the table instead
/// (statistics taken while one key held nearly every row make a plain
/// `EXISTS` look cheapest as a scan of the table).
/// Those stored behind an unfinished one are `waiting_on_key` and not in
/// the claim index at all (migration 0002), so a blocked key's backlog is
/// never read; the probe keeps the order when more than one of a key is
/// not waiting (two instances stored the first two at the same moment, or
/// a person retried an earlier one).
/// A claim running at the same moment on another instance that took the
/// earlier one has not committed yet, so this one still sees it unfinished
/// and passes over the later one: one key runs one delivery at a time.
///
/// `$1` now, `$2` limit, `$3` skipped actions, `$4` lease end, `$5` owner.
fn claim_sql(state: &str, due: &str) -> String {
    format!(
        "WITH picked AS (
             SELECT d.id, d.{due} AS due FROM deliveries d
             WHERE d.status = '{state}' AND d.{due} {cmp} $1 AND NOT d.waiting_on_key
               AND NOT (d.rule || '/' || d.action = ANY($3::text[]))
               AND (d.serialize_key IS NULL OR (
                   SELECT o.id FROM deliveries o
                   WHERE o.serialize_key = d.serialize_key AND o.id < d.id
                     AND o.status IN ('pending', 'running', 'retrying')
                   ORDER BY o.serialize_key, o.id LIMIT 1) IS NULL)
             ORDER BY d.{due}
             LIMIT $2
             FOR UPDATE OF d SKIP LOCKED
         ), claimed AS (
             UPDATE deliveries d
                SET status = 'running', attempts = d.attempts + 1, attempts_total = d.attempts_total + 1,
                    lease_until_ms = $4, updated_at_ms = $1, owner = $5, lease_token = d.lease_token + 1
               FROM picked p
              WHERE d.id = p.id
             RETURNING d.id, d.event_id, d.rule, d.action, d.action_type, d.attempts, d.serialize_key,
                       d.attempts_total, d.manual_retries,
                       CASE WHEN d.manual_retries > 0 THEN d.retried_by ELSE d.replayed_by END AS requested_by,
                       d.lease_token, p.due, d.need_ids IS NOT NULL AS step
         )
         SELECT c.id, c.event_id, c.rule, c.action, c.action_type, c.attempts, c.serialize_key,
                e.source, e.received_at_ms, e.method, e.path, e.query, e.headers, e.body, e.payload,
                c.attempts_total, c.manual_retries, c.requested_by, c.lease_token, c.step
         FROM claimed c JOIN events e ON e.id = c.event_id
         ORDER BY c.due, c.id",
        // A running delivery is due again once its lease has ended.
        cmp = if state == "running" { "<" } else { "<=" },
    )
}

/// Expired leases first (the oldest work there is, whose instance died: a
/// backlog of new deliveries must not hold up a takeover), then due
/// retries (older work than new deliveries; a delivery taken over and
/// given back for want of room is one), then pending: the order SQLite
/// claims in.
pub(super) fn claim_statements() -> &'static [String; 3] {
    static SQL: std::sync::LazyLock<[String; 3]> = std::sync::LazyLock::new(|| {
        [
            claim_sql("running", "lease_until_ms"),
            claim_sql("retrying", "next_attempt_at_ms"),
            claim_sql("pending", "next_attempt_at_ms"),
        ]
    });
    &SQL
}

/// See [`crate::store::Store::claim`]. One transaction, one statement per state.
pub async fn claim(
    client: &mut Object,
    owner: &str,
    now: i64,
    limit: u32,
    lease_ms: i64,
    skip: &[String],
) -> Res<Vec<Claimed>> {
    let tx = client.transaction().await.pg()?;
    let mut claimed = Vec::new();
    for sql in claim_statements() {
        let room = i64::from(limit).saturating_sub(claimed.len() as i64);
        if room <= 0 {
            break;
        }
        let stmt = tx.prepare_cached(sql).await.pg()?;
        let until = now.saturating_add(lease_ms);
        for row in tx
            .query(&stmt, &[&now, &room, &skip, &until, &owner])
            .await
            .pg()?
        {
            claimed.push(claimed_from_row(&row)?);
        }
    }
    tx.commit().await.pg()?;
    Ok(claimed)
}

fn claimed_from_row(r: &Row) -> Res<Claimed> {
    Ok(Claimed {
        id: id_col(r, 0, DeliveryId::parse)?,
        event_id: id_col(r, 1, EventId::parse)?,
        rule: col(r, 2)?,
        action: col(r, 3)?,
        action_type: col(r, 4)?,
        // Read after the claim counted it.
        attempt: u32_col(r, 5)?,
        number: u32_col(r, 15)?,
        round: u32_col(r, 16)?,
        requested_by: col(r, 17)?,
        serialize_key: col(r, 6)?,
        token: col(r, 18)?,
        step: col(r, 19)?,
        // Parsed by the dispatcher, like SQLite's.
        payload: StoredPayload::from_column(col(r, 14)?),
        event: unparsed_request(r, 1, 7)?,
    })
}

/// An event's request from a row holding its id at `id` and, from `from`
/// on, its source, received_at_ms, method, path, query, headers, body and
/// payload.
pub(super) fn request_from_row(r: &Row, id: usize, from: usize) -> Res<Request> {
    let mut request = unparsed_request(r, id, from)?;
    request.payload = payload_col(r, from + 7, &request.body)?;
    Ok(request)
}

/// [`request_from_row`] with a `null` payload.
fn unparsed_request(r: &Row, id: usize, from: usize) -> Res<Request> {
    let body: Vec<u8> = col(r, from + 6)?;
    Ok(Request {
        event_id: col(r, id)?,
        source: col(r, from)?,
        received_at: crate::clock::rfc3339_ms(col(r, from + 1)?),
        method: col(r, from + 2)?,
        path: col(r, from + 3)?,
        query: query_pairs(Some(&col::<String>(r, from + 4)?)),
        headers: json_col(r, from + 5)?,
        payload: serde_json::Value::Null,
        body: bytes::Bytes::from(body),
    })
}

/// The namespace of the `serialize_by` key locks: two-int4 advisory locks
/// ("hkey"), a keyspace apart from the bigint ones of migrations and
/// maintenance.
const KEY_LOCKS: i32 = 0x686b_6579;

/// Takes the transaction advisory lock of each key, in one order for every
/// writer (by hash), so two writers never wait on each other in a circle.
/// Whoever decides that a key's delivery waits (storing it) or stops
/// waiting (finishing the one before it) holds the key's lock: under READ
/// COMMITTED the next statement then sees what the previous holder
/// committed, and a delivery stored while its key's head finishes is never
/// left waiting behind nothing.
pub(super) async fn lock_keys(tx: &deadpool_postgres::Transaction<'_>, keys: &[&str]) -> Res<()> {
    if keys.is_empty() {
        return Ok(());
    }
    let stmt = tx
        .prepare_cached(
            "SELECT pg_advisory_xact_lock($1, s.h)
             FROM (SELECT DISTINCT hashtext(k) AS h FROM unnest($2::text[]) AS k ORDER BY 1) AS s",
        )
        .await
        .pg()?;
    tx.execute(&stmt, &[&KEY_LOCKS, &keys]).await.pg()?;
    Ok(())
}

pub(super) const WAKE_HEADS: &str = "UPDATE deliveries d SET waiting_on_key = false
 FROM (SELECT (SELECT o.id FROM deliveries o
               WHERE o.serialize_key = k AND o.status IN ('pending', 'running', 'retrying')
               ORDER BY o.serialize_key, o.id LIMIT 1) AS id
       FROM unnest($1::text[]) AS k) AS head
 WHERE d.id = head.id AND d.waiting_on_key";

/// The earliest unfinished delivery of each key stops waiting, if it was.
/// Called under [`lock_keys`] after a delivery of these keys finished.
pub(super) async fn wake_heads(tx: &deadpool_postgres::Transaction<'_>, keys: &[&str]) -> Res<()> {
    if keys.is_empty() {
        return Ok(());
    }
    let stmt = tx.prepare_cached(WAKE_HEADS).await.pg()?;
    tx.execute(&stmt, &[&keys]).await.pg()?;
    Ok(())
}

/// The ids and tokens of `held`, as two arrays for `unnest`.
fn leases(held: &[Lease]) -> (Vec<&str>, Vec<i64>) {
    held.iter().map(|l| (l.delivery.as_str(), l.token)).unzip()
}

/// See [`crate::store::Store::renew`]: one statement for every lease.
pub async fn renew(
    client: &Object,
    owner: &str,
    held: &[Lease],
    until: i64,
) -> Res<Vec<DeliveryId>> {
    if held.is_empty() {
        return Ok(Vec::new());
    }
    let (ids, tokens) = leases(held);
    let stmt = client
        .prepare_cached(
            concat!(
                "WITH ",
                locked_in_order!(),
                " UPDATE deliveries d SET lease_until_ms = $4
                  FROM unnest($1::text[], $2::bigint[]) AS h(id, token) JOIN locked l ON l.id = h.id
                  WHERE d.id = h.id AND d.lease_token = h.token AND d.status = 'running' AND d.owner = $3
                  RETURNING d.id"
            ),
        )
        .await
        .pg()?;
    let kept: std::collections::HashSet<String> = client
        .query(&stmt, &[&ids, &tokens, &owner, &until])
        .await
        .pg()?
        .iter()
        .map(|r| col(r, 0))
        .collect::<Res<_>>()?;
    Ok(held
        .iter()
        .filter(|l| !kept.contains(l.delivery.as_str()))
        .map(|l| l.delivery.clone())
        .collect())
}

/// See [`crate::store::Store::release`]: the claims' attempts are uncounted.
pub async fn release(
    client: &Object,
    owner: &str,
    held: &[Lease],
    due_at: i64,
    now: i64,
) -> Res<()> {
    if held.is_empty() {
        return Ok(());
    }
    let (ids, tokens) = leases(held);
    let stmt = client
        .prepare_cached(
            "UPDATE deliveries d
                SET status = CASE WHEN d.attempts_total > 1 OR d.manual_retries > 0 THEN 'retrying' ELSE 'pending' END,
                    attempts = d.attempts - 1, attempts_total = d.attempts_total - 1, lease_until_ms = NULL,
                    next_attempt_at_ms = least(d.next_attempt_at_ms, $1), updated_at_ms = $2, owner = NULL
             FROM unnest($3::text[], $4::bigint[]) AS h(id, token)
             WHERE d.id = h.id AND d.lease_token = h.token AND d.status = 'running' AND d.owner = $5",
        )
        .await
        .pg()?;
    client
        .execute(&stmt, &[&due_at, &now, &ids, &tokens, &owner])
        .await
        .pg()?;
    Ok(())
}

/// Locks the deliveries named by `$1` in id order, for the statements that
/// update several held deliveries at once (heartbeats and finishes of one
/// instance may overlap; one locking order means they never deadlock).
macro_rules! locked_in_order {
    () => {
        "locked AS (SELECT d.id FROM deliveries d WHERE d.id = ANY($1::text[]) ORDER BY d.id FOR UPDATE)"
    };
}
pub(super) use locked_in_order;

/// Moves each delivery on under the lease that ran its attempt; returns
/// those that moved, with their `serialize_key`. A takeover that committed
/// first bumped the token, so its row matches nothing.
const FINISH: &str = concat!(
    "WITH ",
    locked_in_order!(),
    ", f AS (SELECT * FROM unnest($1::text[], $2::bigint[], $3::text[], $4::text[], $5::bigint[])
                AS f(id, token, owner, state, next_at))
     UPDATE deliveries d SET status = f.state, next_attempt_at_ms = coalesce(f.next_at, d.next_attempt_at_ms),
            lease_until_ms = NULL, updated_at_ms = $6, owner = NULL
     FROM f JOIN locked l ON l.id = f.id
     WHERE d.id = f.id AND d.status = 'running' AND d.owner = f.owner AND d.lease_token = f.token
     RETURNING d.id, d.serialize_key, d.has_steps, d.event_id"
);

const INSERT_ATTEMPTS: &str = "INSERT INTO attempts (id, delivery_id, number, started_at_ms, duration_ms, outcome,
                          status_code, exit_code, error, response, budget_number, round, requested_by, output)
     SELECT * FROM unnest($1::text[], $2::text[], $3::int[], $4::bigint[], $5::bigint[], $6::text[], $7::int[],
                          $8::int[], $9::text[], $10::bytea[], $11::int[], $12::int[], $13::text[], $14::text[])";

/// See [`crate::store::Store::finish`], for a batch of finishes of any
/// owners: in one transaction, each delivery moves on only under the lease
/// that ran the attempt, and only those that moved get their attempt
/// written; a finished keyed delivery lets the next one of its key go.
pub async fn finish(
    client: &mut Object,
    done: &[(String, Finished)],
    now: i64,
) -> Res<Vec<Recorded>> {
    let tx = client.transaction().await.pg()?;
    let ids: Vec<&str> = done
        .iter()
        .map(|(_, f)| f.lease.delivery.as_str())
        .collect();
    let tokens: Vec<i64> = done.iter().map(|(_, f)| f.lease.token).collect();
    let owners: Vec<&str> = done.iter().map(|(o, _)| o.as_str()).collect();
    let states: Vec<&str> = done.iter().map(|(_, f)| f.state.as_str()).collect();
    let next: Vec<Option<i64>> = done.iter().map(|(_, f)| f.next_attempt_at_ms).collect();
    let stmt = tx.prepare_cached(FINISH).await.pg()?;
    let mut moved: std::collections::HashMap<String, Option<String>> = Default::default();
    // The deliveries with steps behind them that ended (event, delivery).
    let mut ended: Vec<(String, DeliveryId)> = Vec::new();
    for r in tx
        .query(&stmt, &[&ids, &tokens, &owners, &states, &next, &now])
        .await
        .pg()?
    {
        let id: String = col(&r, 0)?;
        if col::<bool>(&r, 2)?
            && let Some((_, f)) = done.iter().find(|(_, f)| f.lease.delivery.as_str() == id)
            && f.state.is_final()
        {
            ended.push((col(&r, 3)?, f.lease.delivery.clone()));
        }
        moved.insert(id, col(&r, 1)?);
    }
    let recorded: Vec<(&Finished, bool)> = done
        .iter()
        .map(|(_, f)| (f, moved.contains_key(f.lease.delivery.as_str())))
        .collect();
    let written: Vec<&Finished> = recorded
        .iter()
        .filter(|(_, m)| *m)
        .map(|(f, _)| *f)
        .collect();
    insert_attempts(&tx, &written).await?;
    let mut keys: Vec<&str> = written
        .iter()
        .filter(|f| f.state.is_final())
        .filter_map(|f| moved.get(f.lease.delivery.as_str())?.as_deref())
        .collect();
    keys.sort_unstable();
    keys.dedup();
    lock_keys(&tx, &keys).await?;
    wake_heads(&tx, &keys).await?;
    if let Some(judge) = done.iter().find_map(|(_, f)| f.judge.as_ref())
        && !ended.is_empty()
    {
        super::steps::settle(&tx, &ended, judge, now).await?;
    }
    tx.commit().await.pg()?;
    Ok(recorded
        .iter()
        .map(|(_, m)| {
            if *m {
                Recorded::Yes
            } else {
                Recorded::LeaseLost
            }
        })
        .collect())
}

fn without_nul(s: &str) -> std::borrow::Cow<'_, str> {
    if s.contains('\0') {
        s.replace('\0', "\u{fffd}").into()
    } else {
        s.into()
    }
}

async fn insert_attempts(tx: &deadpool_postgres::Transaction<'_>, done: &[&Finished]) -> Res<()> {
    if done.is_empty() {
        return Ok(());
    }
    macro_rules! column {
        ($f:expr) => {
            done.iter().map(|f| &f.attempt).map($f).collect::<Vec<_>>()
        };
    }
    let int = |n: u32| i32::try_from(n).unwrap_or(i32::MAX);
    let delivery: Vec<&str> = done.iter().map(|f| f.lease.delivery.as_str()).collect();
    let id = column!(|a| a.id.as_str());
    let number = column!(|a| int(a.number));
    let started = column!(|a| a.started_at_ms);
    let duration = column!(|a| a.duration_ms);
    let outcome = column!(|a| a.outcome.as_str());
    let status = column!(|a| a.status_code.map(i32::from));
    let exit = column!(|a| a.exit_code);
    // PostgreSQL's text cannot hold NUL, which a receiver's or a
    // command's output quoted in an error may carry.
    let error = column!(|a| a.error.as_deref().map(without_nul));
    let response = column!(|a| a.response.as_slice());
    let budget = column!(|a| int(a.budget_number));
    let round = column!(|a| int(a.round));
    let requested = column!(|a| a.requested_by.as_deref());
    let output = column!(|a| a.output.as_deref().map(without_nul));
    let params: [&(dyn tokio_postgres::types::ToSql + Sync); 14] = [
        &id, &delivery, &number, &started, &duration, &outcome, &status, &exit, &error, &response,
        &budget, &round, &requested, &output,
    ];
    let stmt = tx.prepare_cached(INSERT_ATTEMPTS).await.pg()?;
    tx.execute(&stmt, &params).await.pg()?;
    Ok(())
}

/// See [`crate::store::Store::requeue_own`]: `owner`'s running deliveries
/// only (through `deliveries_leased`: running rows are few).
pub async fn requeue_own(client: &Object, owner: &str, now: i64) -> Res<u64> {
    let stmt = client
        .prepare_cached(
            "UPDATE deliveries SET status = 'retrying', lease_until_ms = NULL, owner = NULL, next_attempt_at_ms = $1
             WHERE status = 'running' AND owner = $2",
        )
        .await
        .pg()?;
    client.execute(&stmt, &[&now, &owner]).await.pg()
}

/// See [`crate::store::Store::expedite`].
pub async fn expedite(client: &Object, actions: &[String], due: i64, now: i64) -> Res<u64> {
    let stmt = client
        .prepare_cached(
            "UPDATE deliveries SET next_attempt_at_ms = $1, updated_at_ms = $3
             WHERE status = 'retrying' AND next_attempt_at_ms > $1
               AND (rule || '/' || action) = ANY($2::text[])",
        )
        .await
        .pg()?;
    client.execute(&stmt, &[&due, &actions, &now]).await.pg()
}

/// When the next delivery is due: the first entry of each state's claim
/// index (a delivery waiting on its key is not due, however old).
pub async fn next_due(client: &Object) -> Res<Option<i64>> {
    let stmt = client
        .prepare_cached(
            "SELECT least(
                 (SELECT min(next_attempt_at_ms) FROM deliveries WHERE status = 'pending' AND NOT waiting_on_key),
                 (SELECT min(next_attempt_at_ms) FROM deliveries WHERE status = 'retrying'),
                 (SELECT min(lease_until_ms) FROM deliveries WHERE status = 'running'))",
        )
        .await
        .pg()?;
    col(&client.query_one(&stmt, &[]).await.pg()?, 0)
}
