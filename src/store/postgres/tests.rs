//! The PostgreSQL store against a real server ([`super::testing`]): the
//! lifecycle contract every backend keeps, and what only a shared database
//! has to get right (concurrent copies across instances, migrations racing,
//! credentials in errors).

use std::sync::Arc;
use std::time::Duration;

use super::testing::{database, name_of, server};
use super::{PostgresStore, schema::MIGRATIONS};
use crate::clock::now_ms;
use crate::ids::{DeliveryId, InstanceId};
use crate::store::conformance::{finished, one_delivery};
use crate::store::{
    AttemptOutcome, DeliveryState, IngestOutcome, NewDelivery, Recorded, Store, StoreError,
};

fn open() -> PostgresStore {
    PostgresStore::open(&database()).unwrap()
}

/// The lifecycle contract every backend keeps (`store::conformance`).
mod contract {
    use crate::store::conformance as c;

    fn store() -> super::PostgresStore {
        super::open()
    }

    #[tokio::test]
    async fn expired_leases_are_claimed_first() {
        c::expired_leases_are_claimed_first(&store()).await;
    }

    #[tokio::test]
    async fn a_chain_of_steps_runs_in_order_with_outputs() {
        c::a_chain_of_steps_runs_in_order_with_outputs(&store()).await;
    }

    #[tokio::test]
    async fn a_false_when_skips_the_step_and_those_behind_it() {
        c::a_false_when_skips_the_step_and_those_behind_it(&store()).await;
    }

    #[tokio::test]
    async fn a_dead_need_skips_its_steps_and_a_retry_runs_them() {
        c::a_dead_need_skips_its_steps_and_a_retry_runs_them(&store()).await;
    }

    #[tokio::test]
    async fn a_delay_dates_the_first_attempt() {
        c::a_delay_dates_the_first_attempt(&store()).await;
    }

    #[tokio::test]
    async fn a_released_delivery_keeps_its_place() {
        c::a_released_delivery_keeps_its_place(&store()).await;
    }

    #[tokio::test]
    async fn leases_are_fenced() {
        c::leases_are_fenced(&store()).await;
    }

    #[tokio::test]
    async fn heartbeats_keep_a_lease() {
        c::heartbeats_keep_a_lease(&store()).await;
    }

    #[tokio::test]
    async fn only_the_holder_releases() {
        c::only_the_holder_releases(&store()).await;
    }

    #[tokio::test]
    async fn a_stale_claim_of_the_same_instance_is_fenced() {
        c::a_stale_claim_of_the_same_instance_is_fenced(&store()).await;
    }

    #[tokio::test]
    async fn an_instance_requeues_only_its_own_leases() {
        c::an_instance_requeues_only_its_own_leases(&store()).await;
    }

    #[tokio::test]
    async fn ingest_reads_back_and_queues() {
        c::ingest_reads_back_and_queues(&store()).await;
    }

    #[tokio::test]
    async fn the_dedup_window_is_24_hours() {
        c::the_dedup_window_is_24_hours(&store()).await;
    }

    #[tokio::test]
    async fn serialize_by_runs_one_key_in_order() {
        c::serialize_by_runs_one_key_in_order(&store()).await;
    }

    #[tokio::test]
    async fn a_manual_retry_starts_a_new_budget() {
        c::a_manual_retry_starts_a_new_budget(&store()).await;
    }

    #[tokio::test]
    async fn pruning_keeps_unfinished_events() {
        c::pruning_keeps_unfinished_events(&store()).await;
    }

    #[tokio::test]
    async fn lists_page_newest_first() {
        c::lists_page_newest_first(&store()).await;
    }
}

/// Every field comes back as it went in: a binary body, headers in the
/// order received (repeats included), the query, payload, facts, trace.
#[tokio::test]
async fn events_round_trip_with_every_field() {
    let store = open();
    let (mut e, _) = one_delivery();
    e.query = "a=1&b=%20".into();
    e.headers = vec![
        ("x-b".into(), "2".into()),
        ("content-type".into(), "application/json".into()),
        ("x-b".into(), "1".into()),
    ];
    e.body = bytes::Bytes::from_static(b"{\"k\":\"\xff\x00\"}");
    e.payload = Some(r#"{"k":1,"nested":{"a":[true,null]}}"#.into());
    e.facts = vec!["a fact".into()];
    e.trace = serde_json::from_str(r#"[{"rule":"r","matched":true,"conditions":[]}]"#).unwrap();
    e.dedup_key = Some("guid-1".into());
    e.deliveries.push(NewDelivery {
        id: DeliveryId::new(),
        rule: "r".into(),
        action: "cmd".into(),
        action_type: "command".into(),
        serialize_key: Some("deploy-a/b".into()),
        due_at_ms: None,
        needs: Vec::new(),
        need_names: Vec::new(),
        has_steps: false,
    });
    assert_eq!(
        store.ingest(e.clone()).await.unwrap(),
        IngestOutcome::Stored
    );
    let got = store.event(&e.id).await.unwrap().unwrap();
    assert_eq!(
        (
            &got.query,
            &got.headers,
            &got.body[..],
            got.dedup_key.as_deref()
        ),
        (&e.query, &e.headers, &e.body[..], Some("guid-1"))
    );
    assert_eq!(
        got.payload,
        serde_json::json!({"k": 1, "nested": {"a": [true, null]}})
    );
    assert_eq!(
        serde_json::to_value(&got.trace).unwrap(),
        serde_json::json!([{"rule": "r", "matched": true, "conditions": []}])
    );
    assert_eq!((&got.facts, &got.matched), (&e.facts, &e.matched));
    let keys: Vec<_> = got
        .deliveries
        .iter()
        .map(|d| d.serialize_key.clone())
        .collect();
    assert_eq!(keys, [None, Some("deploy-a/b".to_owned())]);
    // A JSON body stored as its own payload (BOM and all) reads back parsed,
    // for the API and for the dispatcher's claim alike.
    let (mut e, _) = one_delivery();
    e.body = bytes::Bytes::from_static(b"\xEF\xBB\xBF{\"ref\": \"main\"}");
    store.ingest(e.clone()).await.unwrap();
    let got = store.event(&e.id).await.unwrap().unwrap();
    assert_eq!(got.payload, serde_json::json!({"ref": "main"}));
    let owner = InstanceId::new();
    let mut claimed = store
        .claim(&owner, now_ms(), 10, Duration::from_secs(30), Vec::new())
        .await
        .unwrap();
    let of_e = claimed.iter_mut().find(|c| c.event_id == e.id).unwrap();
    // Handed over unparsed, parsed by whoever runs the attempt.
    assert_eq!(of_e.event.payload, serde_json::Value::Null);
    of_e.parse_payload().unwrap();
    assert_eq!(of_e.event.payload, got.payload);
}

/// Two instances (two stores on one database) get the same dedup key at
/// the same moment, many times over: one event is stored, and every other
/// copy is answered with its id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_copies_on_two_instances_store_one() {
    let url = database();
    let stores = [
        Arc::new(PostgresStore::open(&url).unwrap()),
        Arc::new(PostgresStore::open(&url).unwrap()),
    ];
    let tasks: Vec<_> = (0..40)
        .map(|i| {
            let store = stores[i % 2].clone();
            let (mut e, _) = one_delivery();
            e.dedup_key = Some("delivery-1".into());
            let id = e.id.clone();
            tokio::spawn(async move { (id, store.ingest(e).await.unwrap()) })
        })
        .collect();
    let (mut stored, mut firsts) = (Vec::new(), Vec::new());
    for t in tasks {
        match t.await.unwrap() {
            (id, IngestOutcome::Stored) => stored.push(id),
            (_, IngestOutcome::Duplicate { first }) => firsts.push(first),
        }
    }
    assert_eq!(stored.len(), 1, "{stored:?}");
    assert_eq!(firsts.len(), 39);
    assert!(firsts.iter().all(|f| *f == stored[0]));
    let all = stores[1].events(None, 100).await.unwrap();
    assert_eq!(all.iter().map(|e| &e.id).collect::<Vec<_>>(), [&stored[0]]);
}

/// Two instances claiming at once never take the same delivery: each is
/// claimed once, by one of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_claims_on_two_instances_take_each_delivery_once() {
    let url = database();
    let stores = [
        Arc::new(PostgresStore::open(&url).unwrap()),
        Arc::new(PostgresStore::open(&url).unwrap()),
    ];
    let mut all = Vec::new();
    for _ in 0..60 {
        let (e, d) = one_delivery();
        stores[0].ingest(e).await.unwrap();
        all.push(d);
    }
    let tasks: Vec<_> = (0..6)
        .map(|i| {
            let store = stores[i % 2].clone();
            tokio::spawn(async move {
                let owner = InstanceId::new();
                let mut mine = Vec::new();
                loop {
                    let got = store
                        .claim(&owner, now_ms(), 4, Duration::from_secs(30), Vec::new())
                        .await
                        .unwrap();
                    if got.is_empty() {
                        return mine;
                    }
                    mine.extend(got.into_iter().map(|c| c.id));
                }
            })
        })
        .collect();
    let mut claimed: Vec<DeliveryId> = Vec::new();
    for t in tasks {
        claimed.extend(t.await.unwrap());
    }
    claimed.sort_by(|a, b| a.as_str().cmp(b.as_str()));
    all.sort_by(|a, b| a.as_str().cmp(b.as_str()));
    assert_eq!(claimed, all);
}

/// Counts how often each event's step was judged, and lets it run.
#[derive(Default)]
struct CountingJudge(std::sync::Mutex<std::collections::HashMap<String, usize>>);

impl crate::store::StepJudge for CountingJudge {
    fn judge(&self, step: &crate::store::steps::Ready<'_>) -> crate::store::Verdict {
        let mut seen = self.0.lock().unwrap();
        *seen.entry(step.event.event_id.clone()).or_default() += 1;
        crate::store::Verdict::Run {
            due_at_ms: step.now_ms,
            trace: Vec::new(),
        }
    }
}

/// Two needs of one step finishing at the same moment on two instances
/// release the step exactly once: never twice (each seeing the other
/// done), never not at all (each seeing the other still running).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_needs_finishing_at_once_on_two_instances_release_their_step_once() {
    let url = database();
    let stores = [
        Arc::new(PostgresStore::open(&url).unwrap()),
        Arc::new(PostgresStore::open(&url).unwrap()),
    ];
    let judge = Arc::new(CountingJudge::default());
    let shared = crate::store::Judge(judge.clone());
    const EVENTS: usize = 40;
    let mut steps = Vec::new();
    for _ in 0..EVENTS {
        let (mut e, a) = one_delivery();
        let (b, s) = (DeliveryId::new(), DeliveryId::new());
        e.deliveries[0].has_steps = true;
        let mut other = e.deliveries[0].clone();
        other.id = b.clone();
        other.action = "other".into();
        let mut step = other.clone();
        (step.id, step.action, step.has_steps) = (s.clone(), "announce".into(), false);
        step.needs = vec![a, b];
        step.need_names = vec!["out".into(), "other".into()];
        e.deliveries.extend([other, step]);
        stores[0].ingest(e).await.unwrap();
        steps.push(s);
    }
    let owner = InstanceId::new();
    let claimed = stores[0]
        .claim(&owner, now_ms(), 1000, Duration::from_secs(30), Vec::new())
        .await
        .unwrap();
    assert_eq!(claimed.len(), 2 * EVENTS);
    let mut by_event: std::collections::HashMap<_, Vec<_>> = Default::default();
    for c in claimed {
        by_event.entry(c.event_id.clone()).or_default().push(c);
    }
    let tasks: Vec<_> = by_event
        .into_values()
        .flat_map(|pair| {
            pair.into_iter().enumerate().map(|(i, c)| {
                let (store, owner, judge) = (stores[i % 2].clone(), owner.clone(), shared.clone());
                tokio::spawn(async move {
                    let mut f = finished(&c, AttemptOutcome::Succeeded, DeliveryState::Succeeded);
                    f.judge = Some(judge);
                    store.finish(&owner, f).await.unwrap()
                })
            })
        })
        .collect();
    for t in tasks {
        assert_eq!(t.await.unwrap(), Recorded::Yes);
    }
    for s in &steps {
        let d = stores[1].delivery(s).await.unwrap().unwrap();
        assert_eq!(d.status, DeliveryState::Pending, "{d:?}");
    }
    let counts = judge.0.lock().unwrap();
    assert_eq!(counts.len(), EVENTS, "{counts:?}");
    assert!(counts.values().all(|n| *n == 1), "{counts:?}");
}

/// `serialize_by` across instances: workers on two stores claim and finish
/// at once; a key never has two deliveries running, and each key's
/// deliveries finish in the order their events arrived.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serialize_by_holds_across_instances() {
    use std::collections::{HashMap, HashSet};
    use std::sync::Mutex;
    let url = database();
    let stores = [
        Arc::new(PostgresStore::open(&url).unwrap()),
        Arc::new(PostgresStore::open(&url).unwrap()),
    ];
    let mut sent: HashMap<String, Vec<DeliveryId>> = HashMap::new();
    for i in 0..36 {
        let key = format!("site-{}", i % 3);
        let (mut e, d) = one_delivery();
        e.deliveries[0].serialize_key = Some(key.clone());
        stores[i % 2].ingest(e).await.unwrap();
        sent.entry(key).or_default().push(d);
    }
    let running = Arc::new(Mutex::new(HashSet::<String>::new()));
    let done = Arc::new(Mutex::new(Vec::<(String, DeliveryId)>::new()));
    let workers: Vec<_> = (0..4)
        .map(|w| {
            let (store, running, done) = (stores[w % 2].clone(), running.clone(), done.clone());
            tokio::spawn(async move {
                let owner = InstanceId::new();
                let mut idle = 0;
                while idle < 20 {
                    let claimed = store
                        .claim(&owner, now_ms(), 2, Duration::from_secs(30), Vec::new())
                        .await
                        .unwrap();
                    if claimed.is_empty() {
                        idle += 1;
                        tokio::time::sleep(Duration::from_millis(5)).await;
                        continue;
                    }
                    idle = 0;
                    for c in claimed {
                        let key = c.serialize_key.clone().unwrap();
                        assert!(
                            running.lock().unwrap().insert(key.clone()),
                            "two deliveries of {key} ran at once"
                        );
                        tokio::time::sleep(Duration::from_millis(2)).await;
                        running.lock().unwrap().remove(&key);
                        done.lock().unwrap().push((key, c.id.clone()));
                        let ok = finished(&c, AttemptOutcome::Succeeded, DeliveryState::Succeeded);
                        store.finish(&owner, ok).await.unwrap();
                    }
                }
            })
        })
        .collect();
    for w in workers {
        w.await.unwrap();
    }
    let done = done.lock().unwrap();
    assert_eq!(done.len(), 36);
    for (key, want) in &sent {
        let order: Vec<_> = done
            .iter()
            .filter(|(k, _)| k == key)
            .map(|(_, d)| d)
            .collect();
        assert_eq!(order, want.iter().collect::<Vec<_>>(), "{key}");
    }
}

/// A takeover on another instance fences the first: its late finish is
/// discarded and the history shows the second's result only.
#[tokio::test]
async fn a_takeover_on_another_instance_fences_the_first() {
    let url = database();
    let (first, second) = (
        PostgresStore::open(&url).unwrap(),
        PostgresStore::open(&url).unwrap(),
    );
    let (a, b) = (InstanceId::new(), InstanceId::new());
    let (e, d) = one_delivery();
    first.ingest(e).await.unwrap();
    let now = now_ms();
    let lease = Duration::from_secs(30);
    let held = first.claim(&a, now, 1, lease, Vec::new()).await.unwrap();
    let taken = second
        .claim(&b, now + 31_000, 1, lease, Vec::new())
        .await
        .unwrap();
    assert_eq!(taken[0].id, d);
    let ok = finished(
        &taken[0],
        AttemptOutcome::Succeeded,
        DeliveryState::Succeeded,
    );
    assert_eq!(
        second.finish(&b, ok).await.unwrap(),
        crate::store::Recorded::Yes
    );
    let late = finished(&held[0], AttemptOutcome::Failed, DeliveryState::Dead);
    assert_eq!(
        first.finish(&a, late).await.unwrap(),
        crate::store::Recorded::LeaseLost
    );
    let history = first.attempts(&d).await.unwrap();
    assert_eq!(history.len(), 1);
    assert_eq!(history[0].outcome, AttemptOutcome::Succeeded);
}

/// Instances starting together on an empty database: both open, the
/// schema is applied once (the advisory lock), and a third finds it done.
#[test]
fn instances_opening_at_once_migrate_once() {
    let url = database();
    let opened: Vec<_> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..3)
            .map(|_| s.spawn(|| PostgresStore::open(&url).map(drop)))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for o in opened {
        o.unwrap();
    }
    PostgresStore::open(&url).unwrap();
    let versions = server().psql(
        name_of(&url),
        "SELECT string_agg(version::text, ',' ORDER BY version) FROM hookwire_schema",
    );
    let want: Vec<String> = (1..=MIGRATIONS.len()).map(|v| v.to_string()).collect();
    assert_eq!(versions, want.join(","));
}

#[test]
fn a_schema_newer_than_this_build_is_refused() {
    let url = database();
    drop(PostgresStore::open(&url).unwrap());
    server().psql(
        name_of(&url),
        "INSERT INTO hookwire_schema (version) VALUES (99)",
    );
    match PostgresStore::open(&url) {
        Err(StoreError::Database(msg)) => {
            assert!(msg.contains("newer"), "{msg}");
            assert!(msg.contains("version 99"), "{msg}");
        }
        other => panic!("expected a refusal, got {:?}", other.map(|_| ())),
    }
}

/// The password in the URL is in no error: not for a wrong password, not
/// for a server that is not there. Both say what went wrong and where.
#[test]
fn the_password_is_in_no_error() {
    let s = server();
    let url = database();
    let secret = "Wr0ng-Pa55word-zq";
    let wrong = url.replace(&s.password, secret);
    let Err(e) = PostgresStore::open(&wrong) else {
        panic!("a wrong password was accepted");
    };
    let text = format!("{e} {e:?}");
    assert!(!text.contains(secret), "{text}");
    assert!(text.contains("password authentication failed"), "{text}");
    assert!(text.contains(&format!("127.0.0.1:{}", s.port)), "{text}");
    assert!(!e.is_unavailable(), "a wrong password will not pass: {e}");

    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let unreachable = format!("postgresql://hookwire:{secret}@127.0.0.1:{port}/db?sslmode=disable");
    let Err(e) = crate::store::open(&unreachable) else {
        panic!("nothing listens on {port}");
    };
    let text = format!("{e} {e:?}");
    assert!(!text.contains(secret), "{text}");
    assert!(
        e.is_unavailable(),
        "a server that is down may come back: {e}"
    );
    // The daemon's own message names the URL with the password masked.
    let shown = crate::store::shown_url(&unreachable);
    assert!(!shown.contains(secret), "{shown}");
    assert!(shown.contains(&format!("127.0.0.1:{port}/db")), "{shown}");
}

/// Whether the store's connections use TLS.
async fn over_tls(store: &PostgresStore) -> bool {
    let client = store.client().await.unwrap();
    client
        .query_one(
            "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            &[],
        )
        .await
        .unwrap()
        .get(0)
}

/// Each `sslmode` does what libpq's does, against a server whose
/// certificate comes from a CA of the test's own.
#[tokio::test]
async fn ssl_modes_are_honoured() {
    let s = server();
    let url = database();
    let ca = s.ca.display();
    let verified = format!("sslmode=verify-full&sslrootcert={ca}");
    for (query, tls) in [
        ("", true),
        ("sslmode=prefer", true),
        ("sslmode=disable", false),
        ("sslmode=require", true),
        (verified.as_str(), true),
    ] {
        let store = PostgresStore::open(&format!("{url}?{query}")).unwrap();
        assert_eq!(over_tls(&store).await, tls, "{query}");
    }
    // The certificate names localhost too.
    let by_name = url.replace("127.0.0.1", "localhost");
    let store = PostgresStore::open(&format!("{by_name}?{verified}")).unwrap();
    assert!(over_tls(&store).await);
    // The Mozilla roots do not know the test's CA.
    let Err(e) = PostgresStore::open(&format!("{url}?sslmode=verify-full")) else {
        panic!("an unknown issuer was trusted");
    };
    assert!(e.to_string().contains("certificate"), "{e}");
    // A name the certificate does not hold is refused.
    let other = url.replace("127.0.0.1", "db.invalid");
    let Err(e) = PostgresStore::open(&format!("{other}?hostaddr=127.0.0.1&{verified}")) else {
        panic!("a certificate for another name was accepted");
    };
    assert!(e.to_string().contains("certificate"), "{e}");
    assert!(!e.to_string().contains(&s.password), "{e}");
}

/// Connections the server closes (an administrator, a restart) fail what
/// used them as "unavailable" at worst, never anything else, and the store
/// recovers by itself: new connections replace them, readiness comes back.
#[tokio::test]
async fn closed_connections_fail_as_unavailable_and_the_store_recovers() {
    let url = database();
    let store = PostgresStore::open(&url).unwrap();
    let (e, _) = one_delivery();
    store.ingest(e).await.unwrap();
    store.ping().await.unwrap();
    server().psql(
        "postgres",
        &format!(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{}'",
            name_of(&url)
        ),
    );
    let mut failed = 0;
    for _ in 0..5 {
        let (e, _) = one_delivery();
        match store.ingest(e).await {
            Ok(o) => assert_eq!(o, IngestOutcome::Stored),
            Err(e) => {
                assert!(e.is_unavailable(), "{e}");
                failed += 1;
            }
        }
    }
    assert!(failed < 5, "the store did not recover");
    store.ping().await.unwrap();
    assert_eq!(store.queue_depth().await.unwrap(), 6 - failed);
}

/// `store::open` takes both spellings of the scheme.
#[tokio::test]
async fn both_url_schemes_open_the_postgres_store() {
    let url = database();
    for url in [url.clone(), url.replacen("postgres://", "postgresql://", 1)] {
        let store = crate::store::open(&url).unwrap();
        store.ping().await.unwrap();
        assert_eq!(store.queue_depth().await.unwrap(), 0);
        assert!(store.stats().await.database_bytes.is_some());
    }
}

/// Claims, pruning and the lists use indexes: with sequential scans priced
/// out, no generic plan (the one for any parameters) reads a whole table.
#[tokio::test]
async fn claims_pruning_and_lists_walk_indexes() {
    let store = open();
    let client = store.client().await.unwrap();
    client
        .batch_execute("SET enable_seqscan = off")
        .await
        .unwrap();
    let mut checked: Vec<String> = super::claims::claim_statements().to_vec();
    checked.push(super::PRUNE_EVENTS.to_owned());
    checked.push(super::PRUNE_DEDUP.to_owned());
    for (source, matched, before) in [
        (true, true, true),
        (false, false, false),
        (true, false, true),
    ] {
        checked.push(super::event_page_sql(source, matched, before));
    }
    for (i, sql) in checked.iter().enumerate() {
        let plan = generic_plan(&client, &format!("p{i}"), sql).await;
        assert!(!plan.contains("Seq Scan"), "{sql}\n{plan}");
    }
}

/// The generic plan (the one for any parameters) of `sql`, prepared as
/// `name` on `client`.
async fn generic_plan(client: &tokio_postgres::Client, name: &str, sql: &str) -> String {
    let param = regex::Regex::new(r"\$(\d+)").unwrap();
    let n = param
        .captures_iter(sql)
        .map(|c| c[1].parse::<usize>().unwrap())
        .max()
        .unwrap_or(0);
    client
        .batch_execute(&format!(
            "SET plan_cache_mode = force_generic_plan; PREPARE {name} AS {sql}"
        ))
        .await
        .unwrap();
    let nulls = vec!["NULL"; n].join(", ");
    client
        .simple_query(&format!("EXPLAIN EXECUTE {name}({nulls})"))
        .await
        .unwrap()
        .into_iter()
        .filter_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0).map(str::to_owned),
            _ => None,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The probes of a key's earlier deliveries (claims, storing, waking the
/// next) walk `deliveries_unfinished_by_key` even when the statistics were
/// taken while one key held every row — the case of a blocked key's
/// backlog, where a plain `EXISTS` was planned as a scan of the table.
#[tokio::test]
async fn key_probes_walk_their_index_whatever_the_statistics() {
    let store = open();
    let client = store.client().await.unwrap();
    client
        .batch_execute(
            "INSERT INTO events (id, source, received_at_ms, method, path, query, headers, body, payload,
                                 facts, trace, matched, matched_any)
             SELECT 'evt_' || lpad(i::text, 26, '0'), 'app', 1, 'POST', '/', '', '[]', ''::bytea, '{}',
                    '[]', '[]', '[]', true FROM generate_series(1, 20000) i;
             INSERT INTO deliveries (id, event_id, rule, action, action_type, status, serialize_key,
                                     next_attempt_at_ms, created_at_ms, updated_at_ms, waiting_on_key)
             SELECT 'dlv_' || lpad(i::text, 26, '0'), 'evt_' || lpad(i::text, 26, '0'), 'r', 'a', 'http',
                    'pending', 'busy', 1, 1, 1, i > 1 FROM generate_series(1, 20000) i;
             ANALYZE deliveries;",
        )
        .await
        .unwrap();
    let mut checked: Vec<String> = super::claims::claim_statements().to_vec();
    checked.push(super::INSERT_DELIVERIES.to_owned());
    checked.push(super::claims::WAKE_HEADS.to_owned());
    for (i, sql) in checked.iter().enumerate() {
        let plan = generic_plan(&client, &format!("k{i}"), sql).await;
        assert!(!plan.contains("Seq Scan on deliveries"), "{sql}\n{plan}");
    }
}

/// Pruning runs on one instance at a time: while another session holds the
/// maintenance lock a pass prunes nothing; once that session is gone (its
/// instance finished or died) the next pass does the work.
#[tokio::test]
async fn one_instance_at_a_time_prunes() {
    let url = database();
    let store = PostgresStore::open(&url).unwrap();
    let owner = InstanceId::new();
    let (event, _) = one_delivery();
    store.ingest(event).await.unwrap();
    let claimed = store
        .claim(&owner, now_ms(), 1, Duration::from_secs(30), Vec::new())
        .await
        .unwrap();
    let done = finished(
        &claimed[0],
        AttemptOutcome::Succeeded,
        DeliveryState::Succeeded,
    );
    store.finish(&owner, done).await.unwrap();

    // Another instance's pass holds the lock.
    let other = PostgresStore::open(&url).unwrap();
    let leader = other.client().await.unwrap();
    let took: bool = leader
        .query_one(
            "SELECT pg_try_advisory_lock($1)",
            &[&super::MAINTENANCE_LOCK],
        )
        .await
        .unwrap()
        .get(0);
    assert!(took);
    assert_eq!(store.prune(now_ms() + 1000).await.unwrap().events, 0);
    // That instance goes away (its session closes): this one prunes.
    drop(deadpool_postgres::Object::take(leader));
    drop(other);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let pruned = store.prune(now_ms() + 1000).await.unwrap();
        if pruned.events == 1 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the lock was never freed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // And the pass let go of the lock: the next one runs too (nothing left).
    assert_eq!(store.prune(now_ms() + 1000).await.unwrap().events, 0);
    let again = other_session_can_lock(&url).await;
    assert!(again, "the maintenance lock stayed held after the pass");
}

async fn other_session_can_lock(url: &str) -> bool {
    let store = PostgresStore::open(url).unwrap();
    let c = deadpool_postgres::Object::take(store.client().await.unwrap());
    c.query_one(
        "SELECT pg_try_advisory_lock($1)",
        &[&super::MAINTENANCE_LOCK],
    )
    .await
    .unwrap()
    .get(0)
}

/// SPEC §7: ingest waits at most 5 s for the database, then the store says
/// unavailable (503 with Retry-After). Here another session holds the row
/// the event's dedup key needs.
#[tokio::test]
async fn ingest_waits_at_most_five_seconds() {
    let url = database();
    let store = PostgresStore::open(&url).unwrap();
    let other = PostgresStore::open(&url).unwrap();
    let mut blocker = other.client().await.unwrap();
    let tx = blocker.transaction().await.unwrap();
    tx.execute(
        "INSERT INTO dedup (source, key, event_id, created_at_ms) VALUES ('app', 'k', 'evt_x', $1)",
        &[&now_ms()],
    )
    .await
    .unwrap();
    let (mut event, _) = one_delivery();
    event.dedup_key = Some("k".into());
    let started = std::time::Instant::now();
    let answer = store.ingest(event).await;
    let waited = started.elapsed();
    assert!(
        matches!(&answer, Err(e) if e.is_unavailable() && e.to_string().contains("within 5 s")),
        "{answer:?}"
    );
    assert!(
        waited >= Duration::from_secs(5) && waited < Duration::from_secs(7),
        "{waited:?}"
    );
    tx.rollback().await.unwrap();
}

/// The answer of a `SELECT count(*) …`.
async fn count(store: &PostgresStore, sql: &str) -> i64 {
    let client = store.client().await.unwrap();
    client.query_one(sql, &[]).await.unwrap().get(0)
}

/// Candidate rows a claim's plan read: the sum, over every node scanning
/// `deliveries` as the claim's `d`, of the rows it returned and the rows it
/// filtered out (the probes of earlier deliveries scan it as `o`).
fn candidates_read(plan: &serde_json::Value) -> u64 {
    let mut read = 0;
    if plan["Relation Name"] == "deliveries" && plan["Alias"] == "d" {
        read += [
            "Actual Rows",
            "Rows Removed by Filter",
            "Rows Removed by Index Recheck",
        ]
        .iter()
        .map(|k| plan[k].as_u64().unwrap_or(0))
        .sum::<u64>();
    }
    for child in plan["Plans"].as_array().into_iter().flatten() {
        read += candidates_read(child);
    }
    read
}

/// A key whose head runs holds its backlog out of the claim index: a claim
/// reads the other keys' due rows only, however many wait on the blocked
/// key, and the head's finish lets the next one of its key go.
#[tokio::test]
async fn a_blocked_keys_backlog_is_never_read() {
    let store = open();
    let owner = InstanceId::new();
    let lease = Duration::from_secs(30);
    let mut blocked = Vec::new();
    for _ in 0..301 {
        let (mut e, d) = one_delivery();
        e.deliveries[0].serialize_key = Some("busy".into());
        store.ingest(e).await.unwrap();
        blocked.push(d);
    }
    let (mut other, other_id) = one_delivery();
    other.deliveries[0].serialize_key = Some("quiet".into());
    store.ingest(other).await.unwrap();

    let head = store
        .claim(&owner, now_ms(), 1, lease, Vec::new())
        .await
        .unwrap();
    assert_eq!(
        head.iter().map(|c| &c.id).collect::<Vec<_>>(),
        [&blocked[0]]
    );
    let client = store.client().await.unwrap();
    assert_eq!(
        count(
            &store,
            "SELECT count(*) FROM deliveries WHERE waiting_on_key"
        )
        .await,
        300
    );

    // The claim of pending rows, analysed and rolled back.
    let sql = &super::claims::claim_statements()[2];
    let until = now_ms() + 30_000;
    let explained = client
        .simple_query(&format!(
            "BEGIN; PREPARE pending_claim AS {sql};
             EXPLAIN (ANALYZE, FORMAT JSON) EXECUTE pending_claim({}, 10, '{{}}', {until}, 'x');
             ROLLBACK;",
            now_ms()
        ))
        .await
        .unwrap()
        .into_iter()
        .find_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0).map(str::to_owned),
            _ => None,
        })
        .unwrap();
    let plan: serde_json::Value = serde_json::from_str(&explained).unwrap();
    let read = candidates_read(&plan[0]["Plan"]);
    assert!(
        (1..=2).contains(&read),
        "the claim read {read} rows:\n{plan:#}"
    );

    let quiet = store
        .claim(&owner, now_ms(), 10, lease, Vec::new())
        .await
        .unwrap();
    assert_eq!(quiet.iter().map(|c| &c.id).collect::<Vec<_>>(), [&other_id]);
    // Nothing is due but the running head's lease end: the waiting ones
    // are not work to look for.
    let next = store.next_due().await.unwrap().unwrap();
    assert!(next > now_ms() + 20_000, "next due {next}");
    let ok = finished(
        &head[0],
        AttemptOutcome::Succeeded,
        DeliveryState::Succeeded,
    );
    store.finish(&owner, ok).await.unwrap();
    let next = store
        .claim(&owner, now_ms(), 10, lease, Vec::new())
        .await
        .unwrap();
    assert_eq!(
        next.iter().map(|c| &c.id).collect::<Vec<_>>(),
        [&blocked[1]]
    );
    assert_eq!(
        count(
            &store,
            "SELECT count(*) FROM deliveries WHERE waiting_on_key"
        )
        .await,
        299
    );
}

/// A delivery stored on one instance while its key's head finishes on
/// another is never left waiting behind nothing: the key's lock orders the
/// two, whichever commits first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delivery_stored_as_its_head_finishes_is_claimable() {
    let url = database();
    let (a, b) = (
        Arc::new(PostgresStore::open(&url).unwrap()),
        Arc::new(PostgresStore::open(&url).unwrap()),
    );
    let owner = InstanceId::new();
    let lease = Duration::from_secs(30);
    for round in 0..40 {
        let key = format!("race-{round}");
        let (mut e, _) = one_delivery();
        e.deliveries[0].serialize_key = Some(key.clone());
        a.ingest(e).await.unwrap();
        let head = a
            .claim(&owner, now_ms(), 1, lease, Vec::new())
            .await
            .unwrap();
        assert_eq!(head.len(), 1);
        let (mut next, next_id) = one_delivery();
        next.deliveries[0].serialize_key = Some(key);
        let ok = finished(
            &head[0],
            AttemptOutcome::Succeeded,
            DeliveryState::Succeeded,
        );
        let owner2 = owner.clone();
        let a2 = a.clone();
        let finishing = tokio::spawn(async move { a2.finish(&owner2, ok).await.unwrap() });
        b.ingest(next).await.unwrap();
        finishing.await.unwrap();
        let claimed = b
            .claim(&owner, now_ms(), 1, lease, Vec::new())
            .await
            .unwrap();
        assert_eq!(
            claimed.iter().map(|c| &c.id).collect::<Vec<_>>(),
            [&next_id],
            "round {round}: the next delivery of the key was left waiting"
        );
        let ok = finished(
            &claimed[0],
            AttemptOutcome::Succeeded,
            DeliveryState::Succeeded,
        );
        b.finish(&owner, ok).await.unwrap();
    }
}

/// Concurrent ingests share transactions (group commit), and a batch gets
/// every outcome right: copies of one key inside the batch and copies of a
/// key stored before it are duplicates of the one stored event; the rest
/// are stored with their deliveries.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_ingests_share_commits_and_keep_dedup() {
    let store = Arc::new(open());
    let (mut before, _) = one_delivery();
    before.dedup_key = Some("old".into());
    let before_id = before.id.clone();
    assert_eq!(store.ingest(before).await.unwrap(), IngestOutcome::Stored);
    let mut tasks = Vec::new();
    for i in 0..300 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let (mut e, _) = one_delivery();
            e.dedup_key = match i % 3 {
                0 => None,
                1 => Some(format!("k{}", i % 10)),
                _ => Some("old".into()),
            };
            let id = e.id.clone();
            let key = e.dedup_key.clone();
            (id, key, store.ingest(e).await.unwrap())
        }));
    }
    let mut firsts: std::collections::HashMap<Option<String>, Vec<_>> = Default::default();
    let mut stored = 0;
    for t in tasks {
        let (id, key, outcome) = t.await.unwrap();
        match outcome {
            IngestOutcome::Stored => {
                stored += 1;
                if key.is_some() {
                    firsts.entry(key).or_default().push(id);
                }
            }
            IngestOutcome::Duplicate { first } => {
                if key.as_deref() == Some("old") {
                    assert_eq!(first, before_id);
                } else {
                    firsts.entry(key).or_default().push(first);
                }
            }
        }
    }
    // 100 without a key and one of each of k0..k9 (ten copies apiece);
    // every copy of a key names the one stored.
    assert_eq!(stored, 110);
    assert_eq!(firsts.len(), 10);
    for (key, ids) in &firsts {
        assert!(ids.iter().all(|id| *id == ids[0]), "{key:?}: {ids:?}");
        assert!(store.event(&ids[0]).await.unwrap().is_some());
    }
    let transactions = store
        .group_commit
        .get()
        .unwrap()
        .batches
        .load(std::sync::atomic::Ordering::Relaxed);
    assert!(
        transactions < 200,
        "{transactions} transactions for 301 events"
    );
    assert_eq!(count(&store, "SELECT count(*) FROM deliveries").await, 111);
}

/// An event the database refuses fails alone: the rest of its batch is
/// stored one by one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_refused_event_does_not_fail_its_batch() {
    let store = Arc::new(open());
    let mut tasks = Vec::new();
    for i in 0..60 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let (mut e, _) = one_delivery();
            if i == 30 {
                // PostgreSQL's text cannot hold a NUL character.
                e.path = "/hooks/a\0b".into();
            }
            (i, store.ingest(e).await)
        }));
    }
    let mut refused = Vec::new();
    for t in tasks {
        let (i, outcome) = t.await.unwrap();
        match outcome {
            Ok(o) => assert_eq!(o, IngestOutcome::Stored),
            Err(e) => {
                assert!(!e.is_unavailable(), "{e}");
                refused.push(i);
            }
        }
    }
    assert_eq!(refused, [30]);
    assert_eq!(count(&store, "SELECT count(*) FROM events").await, 59);
}

/// The finishes of many workers share transactions and keep each one's
/// fencing: a stale lease in the batch records nothing, the rest one
/// attempt apiece; an error text with a NUL (a command's output, say) is
/// stored with the NUL replaced instead of failing the batch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finishes_share_transactions_and_stay_fenced() {
    let store = Arc::new(open());
    let owner = InstanceId::new();
    for _ in 0..120 {
        store.ingest(one_delivery().0).await.unwrap();
    }
    let claimed = store
        .claim(&owner, now_ms(), 200, Duration::from_secs(30), Vec::new())
        .await
        .unwrap();
    assert_eq!(claimed.len(), 120);
    let nul = claimed[7].id.clone();
    let mut tasks = Vec::new();
    for (i, c) in claimed.iter().enumerate() {
        let (store, owner) = (store.clone(), owner.clone());
        let mut done = finished(c, AttemptOutcome::Succeeded, DeliveryState::Succeeded);
        if i == 7 {
            done.attempt.error = Some("stderr: a\0b".into());
        }
        if i == 3 {
            done.lease.token += 1;
        }
        tasks.push(tokio::spawn(async move {
            store.finish(&owner, done).await.unwrap()
        }));
    }
    let mut recorded = Vec::new();
    for t in tasks {
        recorded.push(t.await.unwrap());
    }
    assert_eq!(recorded[3], Recorded::LeaseLost);
    assert_eq!(
        recorded.iter().filter(|r| **r == Recorded::Yes).count(),
        119
    );
    assert!(store.attempts(&claimed[3].id).await.unwrap().is_empty());
    let attempts = store.attempts(&nul).await.unwrap();
    assert_eq!(attempts.len(), 1);
    assert_eq!(attempts[0].error.as_deref(), Some("stderr: a\u{fffd}b"));
    let batches = store
        .finishes
        .get()
        .unwrap()
        .batches
        .load(std::sync::atomic::Ordering::Relaxed);
    assert!(batches < 100, "{batches} transactions for 120 finishes");
}

/// Bodies are compressed with lz4 where the server has it (Debian's does):
/// pglz, the default, cost more server CPU per event than the insert.
#[tokio::test]
async fn bodies_are_compressed_with_lz4() {
    let store = open();
    let client = store.client().await.unwrap();
    let method: String = client
        .query_one(
            "SELECT attcompression::text FROM pg_attribute
             WHERE attrelid = 'events'::regclass AND attname = 'body'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(method, "l");
}
