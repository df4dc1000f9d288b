//! The delivery lifecycle every backend keeps (SPEC §7), as tests written
//! against the [`Store`] trait alone. Each backend's test module runs every
//! function here on a fresh store of its own.

use std::time::Duration;

use super::{
    AttemptOutcome, Claimed, DeliveryState, Finished, IngestOutcome, NewAttempt, NewDelivery,
    NewEvent, Page, Recorded, RetryOutcome, Store,
};
use crate::clock::now_ms;
use crate::ids::{AttemptId, DeliveryId, EventId, InstanceId, RequestId};

/// An event with one delivery, due now.
pub fn one_delivery() -> (NewEvent, DeliveryId) {
    let delivery = DeliveryId::new();
    let event = NewEvent {
        id: EventId::new(),
        source: "app".into(),
        received_at_ms: now_ms(),
        method: "POST".into(),
        path: "/hooks/app".into(),
        query: String::new(),
        headers: vec![("content-type".into(), "application/json".into())],
        body: bytes::Bytes::from_static(b"{\"n\":1}"),
        payload: None,
        facts: Vec::new(),
        trace: Vec::new(),
        matched: vec!["r".into()],
        dedup_key: None,
        deliveries: vec![NewDelivery {
            id: delivery.clone(),
            rule: "r".into(),
            action: "out".into(),
            action_type: "http".into(),
            serialize_key: None,
            due_at_ms: None,
            needs: Vec::new(),
            need_names: Vec::new(),
            has_steps: false,
        }],
    };
    (event, delivery)
}

/// The end of `c`'s attempt, as the dispatcher records it.
pub fn finished(c: &Claimed, outcome: AttemptOutcome, state: DeliveryState) -> Finished {
    Finished {
        lease: c.lease(),
        attempt: NewAttempt {
            id: AttemptId::new(),
            number: c.number,
            budget_number: c.attempt,
            round: c.round,
            requested_by: None,
            started_at_ms: now_ms(),
            duration_ms: 1,
            outcome,
            status_code: Some(200),
            exit_code: None,
            error: None,
            response: Vec::new(),
            output: None,
        },
        state,
        next_attempt_at_ms: None,
        judge: None,
    }
}

async fn claim(store: &dyn Store, owner: &InstanceId, at: i64, lease: Duration) -> Vec<Claimed> {
    store.claim(owner, at, 10, lease, Vec::new()).await.unwrap()
}

const LEASE: Duration = Duration::from_secs(30);

/// One delivery claimed by an instance (that then dies) for [`LEASE`] from
/// the returned time.
async fn held_by_a_dead_instance(store: &dyn Store) -> (DeliveryId, i64) {
    let (event, held) = one_delivery();
    store.ingest(event).await.unwrap();
    let now = now_ms();
    assert_eq!(claim(store, &InstanceId::new(), now, LEASE).await.len(), 1);
    (held, now)
}

/// An expired lease is taken over before any waiting delivery: a dead
/// instance's work is the oldest there is, and a backlog of new deliveries
/// must not hold it up.
pub async fn expired_leases_are_claimed_first(store: &dyn Store) {
    let (held, now) = held_by_a_dead_instance(store).await;
    for _ in 0..5 {
        store.ingest(one_delivery().0).await.unwrap();
    }
    let taken = store
        .claim(&InstanceId::new(), now + 31_000, 1, LEASE, Vec::new())
        .await
        .unwrap();
    assert_eq!(taken.iter().map(|c| &c.id).collect::<Vec<_>>(), [&held]);
}

/// A delivery given back unattempted keeps its place in line: a dead
/// instance's delivery, taken over and given back for want of room, is
/// still claimed before deliveries stored after it.
pub async fn a_released_delivery_keeps_its_place(store: &dyn Store) {
    let (held, now) = held_by_a_dead_instance(store).await;
    let (b, lease) = (InstanceId::new(), LEASE);
    for _ in 0..3 {
        let (mut e, _) = one_delivery();
        e.received_at_ms = now + 1_000;
        store.ingest(e).await.unwrap();
    }
    let later = now + 31_000;
    let taken = store.claim(&b, later, 1, lease, Vec::new()).await.unwrap();
    assert_eq!(taken[0].id, held);
    store
        .release(&b, vec![taken[0].lease()], later)
        .await
        .unwrap();
    let again = store.claim(&b, later, 1, lease, Vec::new()).await.unwrap();
    assert_eq!(again.iter().map(|c| &c.id).collect::<Vec<_>>(), [&held]);
}

/// A lease is taken over only once it has expired; the takeover bumps the
/// token, and from then on the first holder can neither renew, release nor
/// finish: its late result is discarded and the history shows one result.
pub async fn leases_are_fenced(store: &dyn Store) {
    let (a, b) = (InstanceId::new(), InstanceId::new());
    let (event, delivery) = one_delivery();
    store.ingest(event).await.unwrap();
    let now = now_ms();
    let lease = Duration::from_secs(30);

    let first = claim(store, &a, now, lease).await;
    assert_eq!(first.len(), 1);
    // Held: nobody else gets it before the lease ends.
    assert!(claim(store, &b, now + 29_000, lease).await.is_empty());
    // Expired: taken over, with a new token.
    let second = claim(store, &b, now + 31_000, lease).await;
    assert_eq!(second.len(), 1);
    assert_eq!(second[0].id, delivery);
    assert!(second[0].token > first[0].token, "{second:?} {first:?}");

    // The first holder has lost it, whichever way it asks.
    let lost = store
        .renew(&a, vec![first[0].lease()], lease)
        .await
        .unwrap();
    assert_eq!(lost, std::slice::from_ref(&delivery));
    store
        .release(&a, vec![first[0].lease()], now)
        .await
        .unwrap();
    let late = finished(
        &first[0],
        AttemptOutcome::Succeeded,
        DeliveryState::Succeeded,
    );
    assert_eq!(store.finish(&a, late).await.unwrap(), Recorded::LeaseLost);
    let d = store.delivery(&delivery).await.unwrap().unwrap();
    assert_eq!(d.status, DeliveryState::Running, "{d:?}");
    assert!(store.attempts(&delivery).await.unwrap().is_empty());
    // The same token under another owner is no better.
    let forged = finished(
        &second[0],
        AttemptOutcome::Succeeded,
        DeliveryState::Succeeded,
    );
    assert_eq!(store.finish(&a, forged).await.unwrap(), Recorded::LeaseLost);

    // The holder finishes; the history has its result only.
    assert_eq!(
        store
            .renew(&b, vec![second[0].lease()], lease)
            .await
            .unwrap(),
        []
    );
    let done = finished(&second[0], AttemptOutcome::Failed, DeliveryState::Dead);
    assert_eq!(store.finish(&b, done).await.unwrap(), Recorded::Yes);
    let attempts = store.attempts(&delivery).await.unwrap();
    assert_eq!(attempts.len(), 1, "{attempts:?}");
    assert_eq!(attempts[0].outcome, AttemptOutcome::Failed);
    let d = store.delivery(&delivery).await.unwrap().unwrap();
    assert_eq!(d.status, DeliveryState::Dead);
    // Finished: there is nothing left to renew or finish again.
    let again = finished(
        &second[0],
        AttemptOutcome::Succeeded,
        DeliveryState::Succeeded,
    );
    assert_eq!(store.finish(&b, again).await.unwrap(), Recorded::LeaseLost);
}

/// A heartbeat moves the end of a lease: a renewed claim is not taken over
/// when its first lease would have run out, only after the renewed one.
pub async fn heartbeats_keep_a_lease(store: &dyn Store) {
    let (a, b) = (InstanceId::new(), InstanceId::new());
    let (event, delivery) = one_delivery();
    store.ingest(event).await.unwrap();
    let now = now_ms();
    let held = claim(store, &a, now, Duration::from_millis(200)).await;
    assert_eq!(held.len(), 1);
    let renewed = store
        .renew(&a, vec![held[0].lease()], Duration::from_secs(60))
        .await
        .unwrap();
    assert!(renewed.is_empty(), "{renewed:?}");
    assert!(
        claim(store, &b, now + 10_000, Duration::from_secs(30))
            .await
            .is_empty()
    );
    let taken = claim(store, &b, now_ms() + 61_000, Duration::from_secs(30)).await;
    assert_eq!(taken.iter().map(|c| &c.id).collect::<Vec<_>>(), [&delivery]);
}

/// A released claim is due again and its attempt not counted; only the
/// holder can release it.
pub async fn only_the_holder_releases(store: &dyn Store) {
    let (a, b) = (InstanceId::new(), InstanceId::new());
    let (event, delivery) = one_delivery();
    store.ingest(event).await.unwrap();
    let now = now_ms();
    let lease = Duration::from_secs(30);
    let held = claim(store, &a, now, lease).await;
    store.release(&b, vec![held[0].lease()], now).await.unwrap();
    let d = store.delivery(&delivery).await.unwrap().unwrap();
    assert_eq!((d.status, d.attempts), (DeliveryState::Running, 1));
    store.release(&a, vec![held[0].lease()], now).await.unwrap();
    let d = store.delivery(&delivery).await.unwrap().unwrap();
    assert_eq!((d.status, d.attempts), (DeliveryState::Pending, 0));
    let again = claim(store, &b, now, lease).await;
    assert_eq!(again.len(), 1);
    assert_eq!(
        again[0].attempt, 1,
        "the released claim's attempt is not counted"
    );
}

/// A dispatcher that starts again takes back its own running deliveries at
/// once; another instance's leases are left to run out.
pub async fn an_instance_requeues_only_its_own_leases(store: &dyn Store) {
    let (a, b) = (InstanceId::new(), InstanceId::new());
    let (first, mine) = one_delivery();
    let (second, theirs) = one_delivery();
    store.ingest(first).await.unwrap();
    store.ingest(second).await.unwrap();
    let now = now_ms();
    let lease = Duration::from_secs(30);
    let held_by_a = store.claim(&a, now, 1, lease, Vec::new()).await.unwrap();
    let held_by_b = store.claim(&b, now, 1, lease, Vec::new()).await.unwrap();
    assert_eq!(held_by_a.len() + held_by_b.len(), 2);
    let own = &held_by_a[0].id;
    assert_eq!(store.requeue_own(&a).await.unwrap(), 1);
    for (id, want) in [
        (own, DeliveryState::Retrying),
        (&held_by_b[0].id, DeliveryState::Running),
    ] {
        let d = store.delivery(id).await.unwrap().unwrap();
        assert_eq!(d.status, want, "{d:?}");
    }
    assert!([&mine, &theirs].contains(&own));
    // Requeued: its old token finishes nothing.
    let late = finished(
        &held_by_a[0],
        AttemptOutcome::Succeeded,
        DeliveryState::Succeeded,
    );
    assert_eq!(store.finish(&a, late).await.unwrap(), Recorded::LeaseLost);
}

/// The token, not only the owner, fences: an instance that claims again
/// what its own expired claim held cannot finish with the old claim.
pub async fn a_stale_claim_of_the_same_instance_is_fenced(store: &dyn Store) {
    let a = InstanceId::new();
    let (event, delivery) = one_delivery();
    store.ingest(event).await.unwrap();
    let now = now_ms();
    let lease = Duration::from_secs(30);
    let old = claim(store, &a, now, lease).await;
    let new = claim(store, &a, now + 31_000, lease).await;
    assert_eq!(new.len(), 1);
    let stale = finished(&old[0], AttemptOutcome::Succeeded, DeliveryState::Succeeded);
    assert_eq!(store.finish(&a, stale).await.unwrap(), Recorded::LeaseLost);
    assert_eq!(
        store.renew(&a, vec![old[0].lease()], lease).await.unwrap(),
        std::slice::from_ref(&delivery)
    );
    let current = finished(&new[0], AttemptOutcome::Succeeded, DeliveryState::Succeeded);
    assert_eq!(store.finish(&a, current).await.unwrap(), Recorded::Yes);
    assert_eq!(store.attempts(&delivery).await.unwrap().len(), 1);
}

/// An event is read back as stored, with its deliveries, and counts in the
/// queue until its delivery finishes.
pub async fn ingest_reads_back_and_queues(store: &dyn Store) {
    let (event, delivery) = one_delivery();
    let id = event.id.clone();
    assert_eq!(
        store.ingest(event.clone()).await.unwrap(),
        IngestOutcome::Stored
    );
    let got = store.event(&id).await.unwrap().unwrap();
    assert_eq!(
        (
            &got.source,
            got.received_at_ms,
            &got.method,
            &got.path,
            &got.headers
        ),
        (
            &event.source,
            event.received_at_ms,
            &event.method,
            &event.path,
            &event.headers
        )
    );
    assert_eq!(got.body, b"{\"n\":1}");
    assert_eq!(got.payload, serde_json::json!({"n": 1}));
    assert_eq!(got.matched, ["r"]);
    assert_eq!(got.deliveries.len(), 1);
    assert_eq!(got.deliveries[0].id, delivery);
    assert_eq!(got.deliveries[0].status, DeliveryState::Pending);
    assert_eq!(store.queue_depth().await.unwrap(), 1);
    assert!(store.oldest_waiting().await.unwrap().is_some());
    let owner = InstanceId::new();
    let c = claim(store, &owner, now_ms(), Duration::from_secs(30)).await;
    let done = finished(&c[0], AttemptOutcome::Succeeded, DeliveryState::Succeeded);
    assert_eq!(store.finish(&owner, done).await.unwrap(), Recorded::Yes);
    assert_eq!(store.queue_depth().await.unwrap(), 0);
    assert_eq!(store.oldest_waiting().await.unwrap(), None);
    assert!(store.event(&EventId::new()).await.unwrap().is_none());
}

/// A dedup key is a duplicate within 24 hours of the first copy's receipt,
/// of the same source only; after the window it is new again.
pub async fn the_dedup_window_is_24_hours(store: &dyn Store) {
    const DAY: i64 = 24 * 3600 * 1000;
    let t0 = now_ms() - 2 * DAY;
    let copy = |at: i64, source: &str| {
        let (mut e, _) = one_delivery();
        e.received_at_ms = at;
        e.source = source.into();
        e.dedup_key = Some("delivery-1".into());
        e
    };
    let first = copy(t0, "app");
    let first_id = first.id.clone();
    assert_eq!(store.ingest(first).await.unwrap(), IngestOutcome::Stored);
    assert_eq!(
        store.ingest(copy(t0 + DAY - 1, "app")).await.unwrap(),
        IngestOutcome::Duplicate { first: first_id }
    );
    assert_eq!(
        store.ingest(copy(t0 + 1, "other")).await.unwrap(),
        IngestOutcome::Stored
    );
    let later = copy(t0 + DAY + 1, "app");
    let later_id = later.id.clone();
    assert_eq!(store.ingest(later).await.unwrap(), IngestOutcome::Stored);
    assert_eq!(
        store.ingest(copy(t0 + DAY + 2, "app")).await.unwrap(),
        IngestOutcome::Duplicate { first: later_id }
    );
}

/// Deliveries with one `serialize_by` key run one at a time, in the order
/// their events arrived; other keys are not held up.
pub async fn serialize_by_runs_one_key_in_order(store: &dyn Store) {
    let owner = InstanceId::new();
    let lease = Duration::from_secs(30);
    let mut keyed = Vec::new();
    for key in ["site-a", "site-a", "site-b", "site-a"] {
        let (mut e, d) = one_delivery();
        e.deliveries[0].serialize_key = Some(key.into());
        store.ingest(e).await.unwrap();
        keyed.push((key, d));
    }
    let now = now_ms();
    let mut ran = Vec::new();
    loop {
        let claimed = claim(store, &owner, now, lease).await;
        if claimed.is_empty() {
            break;
        }
        let keys: Vec<_> = claimed.iter().map(|c| c.serialize_key.clone()).collect();
        let mut unique = keys.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), keys.len(), "two of one key at once: {keys:?}");
        for c in claimed {
            ran.push(c.id.clone());
            let done = finished(&c, AttemptOutcome::Succeeded, DeliveryState::Succeeded);
            store.finish(&owner, done).await.unwrap();
        }
    }
    let order_of_a: Vec<_> = ran
        .iter()
        .filter(|id| keyed.iter().any(|(k, d)| *k == "site-a" && d == *id))
        .collect();
    let want: Vec<_> = keyed
        .iter()
        .filter(|(k, _)| *k == "site-a")
        .map(|(_, d)| d)
        .collect();
    assert_eq!(order_of_a, want);
    assert_eq!(ran.len(), 4);
}

/// A dead delivery retried by hand runs again with a fresh budget; its
/// attempts go on numbering after the earlier ones. Only finished, failed
/// deliveries can be retried.
pub async fn a_manual_retry_starts_a_new_budget(store: &dyn Store) {
    let owner = InstanceId::new();
    let lease = Duration::from_secs(30);
    let (event, delivery) = one_delivery();
    store.ingest(event).await.unwrap();
    assert!(matches!(
        store.retry(&delivery, &RequestId::new()).await.unwrap(),
        RetryOutcome::NotRetryable(_)
    ));
    let c = claim(store, &owner, now_ms(), lease).await;
    let dead = finished(&c[0], AttemptOutcome::Failed, DeliveryState::Dead);
    store.finish(&owner, dead).await.unwrap();
    let request = RequestId::new();
    assert_eq!(
        store.retry(&delivery, &request).await.unwrap(),
        RetryOutcome::Queued
    );
    assert_eq!(
        store.retry(&DeliveryId::new(), &request).await.unwrap(),
        RetryOutcome::NotFound
    );
    let again = claim(store, &owner, now_ms(), lease).await;
    assert_eq!(
        (again[0].attempt, again[0].number, again[0].round),
        (1, 2, 1)
    );
    assert_eq!(again[0].requested_by.as_deref(), Some(request.as_str()));
    let ok = finished(
        &again[0],
        AttemptOutcome::Succeeded,
        DeliveryState::Succeeded,
    );
    store.finish(&owner, ok).await.unwrap();
    let numbers: Vec<_> = store
        .attempts(&delivery)
        .await
        .unwrap()
        .iter()
        .map(|a| (a.number, a.round, a.outcome))
        .collect();
    assert_eq!(
        numbers,
        [
            (1, 0, AttemptOutcome::Failed),
            (2, 1, AttemptOutcome::Succeeded)
        ]
    );
}

/// Pruning deletes finished events received before the cutoff (with their
/// deliveries and attempts) and keeps unfinished ones, however old.
pub async fn pruning_keeps_unfinished_events(store: &dyn Store) {
    let owner = InstanceId::new();
    let (mut done, done_delivery) = one_delivery();
    done.received_at_ms -= 1000;
    let (waiting, _) = one_delivery();
    let (done_id, waiting_id) = (done.id.clone(), waiting.id.clone());
    store.ingest(done).await.unwrap();
    store.ingest(waiting).await.unwrap();
    let claimed = store
        .claim(&owner, now_ms(), 1, Duration::from_secs(30), Vec::new())
        .await
        .unwrap();
    assert_eq!(
        claimed[0].id, done_delivery,
        "the older delivery is due first"
    );
    let ok = finished(
        &claimed[0],
        AttemptOutcome::Succeeded,
        DeliveryState::Succeeded,
    );
    store.finish(&owner, ok).await.unwrap();
    // Both were received before the cutoff (ids are time-sortable: the
    // cutoff is later than both were made).
    let pruned = store.prune(now_ms() + 1000).await.unwrap();
    assert_eq!(pruned.events, 1);
    assert!(store.event(&done_id).await.unwrap().is_none());
    assert!(store.attempts(&done_delivery).await.unwrap().is_empty());
    assert!(store.event(&waiting_id).await.unwrap().is_some());
}

/// Lists page newest first: each page ends where the next begins.
pub async fn lists_page_newest_first(store: &dyn Store) {
    let mut ids = Vec::new();
    for _ in 0..5 {
        let (e, _) = one_delivery();
        ids.push(e.id.clone());
        store.ingest(e).await.unwrap();
    }
    ids.reverse();
    let mut seen = Vec::new();
    let mut before = None;
    loop {
        let page = store
            .event_page(
                None,
                None,
                Page {
                    limit: 2,
                    before: before.clone(),
                },
            )
            .await
            .unwrap();
        if page.is_empty() {
            break;
        }
        before = page.last().map(|e| e.id.to_string());
        seen.extend(page.into_iter().map(|e| e.id));
    }
    assert_eq!(seen, ids);
    let pending = store
        .delivery_page(
            Some("pending".into()),
            Page {
                limit: 10,
                before: None,
            },
        )
        .await
        .unwrap();
    assert_eq!(pending.len(), 5);
    let dead = store
        .delivery_page(
            Some("dead".into()),
            Page {
                limit: 10,
                before: None,
            },
        )
        .await
        .unwrap();
    assert!(dead.is_empty());
}

/// Decides steps the way the rules of [`chain`] would: `announce` runs when
/// crm's output says `created`, `follow-up` a second after its need.
struct ChainJudge;

impl super::StepJudge for ChainJudge {
    fn judge(&self, step: &super::steps::Ready<'_>) -> super::Verdict {
        let created = step.outputs.get("crm").map(|o| &o["json"]["created"]);
        match (step.action, created) {
            ("announce", Some(serde_json::Value::Bool(true))) => super::Verdict::Run {
                due_at_ms: step.now_ms,
                trace: Vec::new(),
            },
            ("follow-up", _) => super::Verdict::Run {
                due_at_ms: step.now_ms + 1_000,
                trace: Vec::new(),
            },
            _ => super::Verdict::Skip {
                reason: "its `when` is false".into(),
                trace: Vec::new(),
            },
        }
    }
}

/// An event whose rule has a chain of steps: crm ← announce ← follow-up.
fn chain() -> (NewEvent, [DeliveryId; 3]) {
    let (mut event, crm) = one_delivery();
    let (announce, follow) = (DeliveryId::new(), DeliveryId::new());
    event.deliveries[0].action = "crm".into();
    event.deliveries[0].has_steps = true;
    let step = |id: &DeliveryId, action: &str, need: &DeliveryId, need_name: &str, has_steps| {
        NewDelivery {
            id: id.clone(),
            rule: "r".into(),
            action: action.into(),
            action_type: "http".into(),
            serialize_key: None,
            due_at_ms: None,
            needs: vec![need.clone()],
            need_names: vec![need_name.into()],
            has_steps,
        }
    };
    event
        .deliveries
        .push(step(&announce, "announce", &crm, "crm", true));
    event
        .deliveries
        .push(step(&follow, "follow-up", &announce, "announce", false));
    (event, [crm, announce, follow])
}

/// Finishes `c` as the dispatcher does, with an output and the chain's judge.
async fn finish_step(
    store: &dyn Store,
    owner: &InstanceId,
    c: &Claimed,
    state: DeliveryState,
    body: &str,
) {
    let mut f = finished(
        c,
        if state == DeliveryState::Succeeded {
            AttemptOutcome::Succeeded
        } else {
            AttemptOutcome::Failed
        },
        state,
    );
    f.attempt.output = (state == DeliveryState::Succeeded)
        .then(|| serde_json::json!({"status": 201, "headers": {}, "body": body}).to_string());
    f.judge = Some(super::Judge(std::sync::Arc::new(ChainJudge)));
    assert_eq!(store.finish(owner, f).await.unwrap(), Recorded::Yes);
}

async fn status_of(store: &dyn Store, id: &DeliveryId) -> (DeliveryState, Option<String>) {
    let d = store.delivery(id).await.unwrap().unwrap();
    (d.status, d.reason)
}

/// Steps are stored `waiting` with their event and never claimed before
/// their needs succeeded; the last need's finish releases them, and each
/// runs with the outputs of what it runs after.
pub async fn a_chain_of_steps_runs_in_order_with_outputs(store: &dyn Store) {
    let me = InstanceId::new();
    let (event, [crm, announce, follow]) = chain();
    store.ingest(event.clone()).await.unwrap();
    let stored = store.event(&event.id).await.unwrap().unwrap();
    let states: Vec<_> = stored
        .deliveries
        .iter()
        .map(|d| (d.action.as_str(), d.status))
        .collect();
    assert_eq!(
        states,
        [
            ("crm", DeliveryState::Pending),
            ("announce", DeliveryState::Waiting),
            ("follow-up", DeliveryState::Waiting)
        ]
    );
    assert_eq!(stored.deliveries[1].needs, ["crm"]);
    assert_eq!(stored.deliveries[1].due_at_ms, None);
    let now = now_ms();
    let first = claim(store, &me, now, LEASE).await;
    assert_eq!(first.iter().map(|c| &c.id).collect::<Vec<_>>(), [&crm]);
    assert!(!first[0].step);
    finish_step(
        store,
        &me,
        &first[0],
        DeliveryState::Succeeded,
        r#"{"created": true, "id": 7}"#,
    )
    .await;

    assert_eq!(status_of(store, &announce).await.0, DeliveryState::Pending);
    assert_eq!(status_of(store, &follow).await.0, DeliveryState::Waiting);
    let outputs = store.step_outputs(&announce).await.unwrap();
    assert_eq!(outputs["crm"]["json"]["id"], 7);
    assert_eq!(outputs["crm"]["status"], 201);
    // The need shows the output its steps read.
    let shown = store.delivery(&crm).await.unwrap().unwrap();
    assert_eq!(shown.output.unwrap()["json"]["created"], true);

    let second = claim(store, &me, now_ms(), LEASE).await;
    assert_eq!(
        second.iter().map(|c| &c.id).collect::<Vec<_>>(),
        [&announce]
    );
    assert!(second[0].step);
    finish_step(store, &me, &second[0], DeliveryState::Succeeded, "ok").await;
    // follow-up is due a second after announce succeeded, and reads both
    // outputs: its need's and, through it, crm's.
    let d = store.delivery(&follow).await.unwrap().unwrap();
    assert_eq!(d.status, DeliveryState::Pending);
    let due = d.due_at_ms.unwrap();
    assert!(due >= now + 1_000, "{d:?}");
    assert!(claim(store, &me, due - 1, LEASE).await.is_empty());
    let outputs = store.step_outputs(&follow).await.unwrap();
    assert_eq!(outputs["crm"]["json"]["id"], 7);
    assert_eq!(outputs["announce"]["body"], "ok");
    assert_eq!(outputs["announce"]["json"], serde_json::Value::Null);
    let third = claim(store, &me, due, LEASE).await;
    assert_eq!(third.iter().map(|c| &c.id).collect::<Vec<_>>(), [&follow]);
}

/// A step whose `when` is false over its needs' outputs ends `skipped` with
/// the reason, and so do the steps behind it.
pub async fn a_false_when_skips_the_step_and_those_behind_it(store: &dyn Store) {
    let me = InstanceId::new();
    let (event, [_, announce, follow]) = chain();
    store.ingest(event).await.unwrap();
    let c = claim(store, &me, now_ms(), LEASE).await;
    finish_step(
        store,
        &me,
        &c[0],
        DeliveryState::Succeeded,
        r#"{"created": false}"#,
    )
    .await;
    assert_eq!(
        status_of(store, &announce).await,
        (DeliveryState::Skipped, Some("its `when` is false".into()))
    );
    assert_eq!(
        status_of(store, &follow).await,
        (
            DeliveryState::Skipped,
            Some("needs announce, which is skipped".into())
        )
    );
    assert!(claim(store, &me, now_ms() + 10_000, LEASE).await.is_empty());
}

/// A dead need skips the steps behind it; they cannot be retried on their
/// own, but retrying the need puts them back to wait, and when it succeeds
/// they run.
pub async fn a_dead_need_skips_its_steps_and_a_retry_runs_them(store: &dyn Store) {
    let me = InstanceId::new();
    let (event, [crm, announce, follow]) = chain();
    store.ingest(event).await.unwrap();
    let c = claim(store, &me, now_ms(), LEASE).await;
    finish_step(store, &me, &c[0], DeliveryState::Dead, "").await;
    assert_eq!(
        status_of(store, &announce).await,
        (
            DeliveryState::Skipped,
            Some("needs crm, which is dead".into())
        )
    );
    assert_eq!(
        status_of(store, &follow).await,
        (
            DeliveryState::Skipped,
            Some("needs announce, which is skipped".into())
        )
    );
    let refused = store.retry(&announce, &RequestId::new()).await.unwrap();
    assert_eq!(
        refused,
        RetryOutcome::BehindNeed("crm, which is dead".into())
    );
    assert_eq!(
        store.retry(&crm, &RequestId::new()).await.unwrap(),
        RetryOutcome::Queued
    );
    assert_eq!(
        status_of(store, &announce).await,
        (DeliveryState::Waiting, None)
    );
    assert_eq!(
        status_of(store, &follow).await,
        (DeliveryState::Waiting, None)
    );
    let again = claim(store, &me, now_ms(), LEASE).await;
    assert_eq!(again.iter().map(|c| &c.id).collect::<Vec<_>>(), [&crm]);
    finish_step(
        store,
        &me,
        &again[0],
        DeliveryState::Succeeded,
        r#"{"created": true}"#,
    )
    .await;
    let next = claim(store, &me, now_ms(), LEASE).await;
    assert_eq!(next.iter().map(|c| &c.id).collect::<Vec<_>>(), [&announce]);
}

/// A `delay` dates the first attempt: the delivery is pending, due then,
/// and not claimed before.
pub async fn a_delay_dates_the_first_attempt(store: &dyn Store) {
    let me = InstanceId::new();
    let (mut event, id) = one_delivery();
    let due = event.received_at_ms + 2 * 24 * 3600 * 1000;
    event.deliveries[0].due_at_ms = Some(due);
    store.ingest(event).await.unwrap();
    let d = store.delivery(&id).await.unwrap().unwrap();
    assert_eq!((d.status, d.due_at_ms), (DeliveryState::Pending, Some(due)));
    assert_eq!(store.next_due().await.unwrap(), Some(due));
    assert!(claim(store, &me, due - 1, LEASE).await.is_empty());
    let c = claim(store, &me, due, LEASE).await;
    assert_eq!(c.iter().map(|c| &c.id).collect::<Vec<_>>(), [&id]);
}
