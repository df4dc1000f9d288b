//! Steps on PostgreSQL (SPEC §4.7): settling the steps behind finished
//! needs inside the finishing transaction, exactly once across instances.
//!
//! Two needs of one step may finish at the same moment on two instances.
//! Each finishing transaction locks the waiting steps of its events (in id
//! order) before it reads the states of their needs, in a statement of its
//! own: under READ COMMITTED that statement sees what the other transaction
//! committed while this one waited for the lock. So the second to take the
//! lock sees both needs succeeded and releases the step, and the first,
//! having seen the other need unfinished, left it waiting — never both.
//! A step the first released is no longer `waiting` when the second gets
//! its lock, and the second passes over it.

use std::collections::HashMap;

use deadpool_postgres::GenericClient;

use super::{Pg, Res, col, id_col};
use crate::ids::DeliveryId;
use crate::request::Request;
use crate::store::DeliveryState;
use crate::store::steps::{self as shared, Judge, Link};

/// The deliveries of some events, as settling steps needs them, by event.
pub(super) async fn links(
    client: &impl GenericClient,
    events: &[&str],
) -> Res<HashMap<String, Vec<Link>>> {
    let stmt = client
        .prepare_cached(
            "SELECT id, rule, action, status, need_ids, blocked_by, event_id FROM deliveries
             WHERE event_id = ANY($1::text[]) ORDER BY id",
        )
        .await
        .pg()?;
    let mut out: HashMap<String, Vec<Link>> = HashMap::new();
    for r in client.query(&stmt, &[&events]).await.pg()? {
        let r = &r;
        let needs: Option<String> = col(r, 4)?;
        let blocked: Option<String> = col(r, 5)?;
        let status: String = col(r, 3)?;
        out.entry(col(r, 6)?).or_default().push(Link {
            id: id_col(r, 0, DeliveryId::parse)?,
            rule: col(r, 1)?,
            action: col(r, 2)?,
            status: DeliveryState::parse(&status).ok_or_else(|| {
                super::bad_column(3, format!("`{status}` is not a delivery state"))
            })?,
            needs: match needs {
                Some(text) => serde_json::from_str::<Vec<String>>(&text)
                    .map_err(|e| super::bad_column(4, e))?
                    .iter()
                    .filter_map(|id| DeliveryId::parse(id))
                    .collect(),
                None => Vec::new(),
            },
            blocked_by: blocked.as_deref().and_then(DeliveryId::parse),
        });
    }
    Ok(out)
}

/// The outputs the succeeded deliveries of an event kept.
async fn outputs(
    client: &impl GenericClient,
    event: &str,
) -> Res<HashMap<DeliveryId, serde_json::Value>> {
    let stmt = client
        .prepare_cached(
            "SELECT d.id, (SELECT a.output FROM attempts a WHERE a.delivery_id = d.id AND a.output IS NOT NULL
                           ORDER BY a.number DESC LIMIT 1)
             FROM deliveries d WHERE d.event_id = $1 AND d.status = 'succeeded' AND d.has_steps",
        )
        .await
        .pg()?;
    let mut out = HashMap::new();
    for r in client.query(&stmt, &[&event]).await.pg()? {
        let text: Option<String> = col(&r, 1)?;
        if let Some(v) = text.and_then(|t| serde_json::from_str(&t).ok()) {
            out.insert(id_col(&r, 0, DeliveryId::parse)?, v);
        }
    }
    Ok(out)
}

/// The request of a stored event, as a step's `when` reads it.
async fn event_request(client: &impl GenericClient, event: &str) -> Res<Request> {
    let stmt = client
        .prepare_cached(
            "SELECT id, source, received_at_ms, method, path, query, headers, body, payload FROM events WHERE id = $1",
        )
        .await
        .pg()?;
    let r = client.query_one(&stmt, &[&event]).await.pg()?;
    super::claims::request_from_row(&r, 0, 1)
}

/// See [`crate::store::Store::step_outputs`].
pub(super) async fn outputs_for(
    client: &impl GenericClient,
    step: &DeliveryId,
) -> Res<serde_json::Map<String, serde_json::Value>> {
    let stmt = client
        .prepare_cached("SELECT event_id FROM deliveries WHERE id = $1")
        .await
        .pg()?;
    let Some(row) = client.query_opt(&stmt, &[&step.as_str()]).await.pg()? else {
        return Ok(serde_json::Map::new());
    };
    let event: String = col(&row, 0)?;
    let links = links(client, &[event.as_str()])
        .await?
        .remove(&event)
        .unwrap_or_default();
    let outputs = outputs(client, &event).await?;
    Ok(shared::outputs_of(&links, step, &outputs))
}

/// Settles the steps behind deliveries that just ended (`ended`: event id,
/// delivery id), in the transaction that ended them.
pub(super) async fn settle(
    tx: &deadpool_postgres::Transaction<'_>,
    ended: &[(String, DeliveryId)],
    judge: &Judge,
    now: i64,
) -> Res<()> {
    let mut events: Vec<&str> = ended.iter().map(|(e, _)| e.as_str()).collect();
    events.sort_unstable();
    events.dedup();
    // The lock first, the states after it (see the module's comment).
    let lock = tx
        .prepare_cached(
            "SELECT id FROM deliveries WHERE event_id = ANY($1::text[]) AND status = 'waiting'
             ORDER BY id FOR UPDATE",
        )
        .await
        .pg()?;
    if tx.query(&lock, &[&events]).await.pg()?.is_empty() {
        return Ok(());
    }
    let mut all = links(tx, &events).await?;
    let update = tx
        .prepare_cached(
            "UPDATE deliveries SET status = $2, next_attempt_at_ms = coalesce($3, next_attempt_at_ms), reason = $4,
                    blocked_by = $5, step_trace = $6, updated_at_ms = $7
             WHERE id = $1 AND status = 'waiting'",
        )
        .await
        .pg()?;
    for event in events {
        let finished: Vec<DeliveryId> = ended
            .iter()
            .filter(|(e, _)| e == event)
            .map(|(_, d)| d.clone())
            .collect();
        let mut links = all.remove(event).unwrap_or_default();
        if !shared::any_waiting(&links) {
            continue;
        }
        let request = event_request(tx, event).await?;
        let outputs = outputs(tx, event).await?;
        let changes = shared::settle(
            &mut links,
            &finished,
            &outputs,
            &request,
            judge.0.as_ref(),
            now,
        );
        for change in &changes {
            let cols = change.columns()?;
            tx.execute(
                &update,
                &[
                    &change.id().as_str(),
                    &change.state().as_str(),
                    &cols.due_at_ms,
                    &cols.reason,
                    &cols.blocked_by,
                    &cols.trace,
                    &now,
                ],
            )
            .await
            .pg()?;
        }
    }
    Ok(())
}
