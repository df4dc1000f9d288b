//! The delivery lifecycle every backend keeps (SPEC §7), as tests written
//! against the [`Store`] trait alone. Each backend's test module runs every
//! function here on a fresh store of its own.

use std::time::Duration;

use super::{
    AttemptOutcome, Claimed, DeliveryState, Finished, NewAttempt, NewDelivery, NewEvent, Recorded,
    Store,
};
use crate::clock::now_ms;
use crate::ids::{AttemptId, DeliveryId, EventId, InstanceId};

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
        },
        state,
        next_attempt_at_ms: None,
    }
}

async fn claim(store: &dyn Store, owner: &InstanceId, at: i64, lease: Duration) -> Vec<Claimed> {
    store.claim(owner, at, 10, lease, Vec::new()).await.unwrap()
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
