//! Retention pruning under load: a large backlog of old events is pruned
//! while new events keep arriving, and no request waits for it.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::support::*;

const HOUR_MS: i64 = 3600 * 1000;

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// `n` events as an earlier run left them, straight into the SQLite file (a
/// fixture of this SQLite pruning test: 150,000 events through the API would
/// take minutes). Everything the test checks afterwards it reads through the
/// admin API.
///
/// `n` events as an earlier run left them:
/// received `age_ms` ago (their ids made then too, as the daemon makes them),
/// each with one succeeded delivery and its attempt.
fn insert_old_events(db: &std::path::Path, n: u32, age_ms: i64) {
    let mut conn = rusqlite::Connection::open(db).unwrap();
    let tx = conn.transaction().unwrap();
    {
        let mut event = tx
            .prepare(
                "INSERT INTO events (id, source, received_at_ms, method, path, query, headers, body, payload, facts, trace, matched, matched_any)
                 VALUES (?1, 'hook', ?2, 'POST', '/hooks/hook', '', '[[\"content-type\",\"application/json\"]]', ?3, '', '[]', '[]', '[\"relay\"]', 1)",
            )
            .unwrap();
        let mut delivery = tx
            .prepare(
                "INSERT INTO deliveries (id, event_id, rule, action, action_type, status, attempts, attempts_total, next_attempt_at_ms, created_at_ms, updated_at_ms)
                 VALUES (?1, ?2, 'relay', 'http-0', 'http', 'succeeded', 1, 1, ?3, ?3, ?3)",
            )
            .unwrap();
        let mut attempt = tx
            .prepare(
                "INSERT INTO attempts (id, delivery_id, number, budget_number, started_at_ms, duration_ms, outcome, status_code, response)
                 VALUES (?1, ?2, 1, 1, ?3, 3, 'succeeded', 200, x'616e7377657220323030')",
            )
            .unwrap();
        let start = now_ms() - age_ms;
        for i in 0..n {
            // Spread over a minute, in id order like real arrivals.
            let at = start + i64::from(i) * 60_000 / i64::from(n);
            let id = |prefix: &str| {
                let ulid = ulid::Ulid::from_parts(at as u64, rand_bits());
                format!("{prefix}{}", ulid.to_string().to_lowercase())
            };
            let (e, d) = (id("evt_"), id("dlv_"));
            let body = format!(r#"{{"n": {i}, "old": true}}"#);
            event
                .execute(rusqlite::params![e, at, body.as_bytes()])
                .unwrap();
            delivery.execute(rusqlite::params![d, e, at]).unwrap();
            attempt
                .execute(rusqlite::params![id("att_"), d, at])
                .unwrap();
        }
    }
    tx.commit().unwrap();
}

/// Stored milliseconds as the API shows times (RFC 3339, UTC). Compared as
/// text with the API's times: old events are hours older than the cutoff and
/// new ones an hour newer, so the fractional seconds never decide.
fn rfc3339_ms(ms: i64) -> String {
    hookwire::clock::rfc3339_ms(ms)
}

fn rand_bits() -> u128 {
    use std::hash::{BuildHasher as _, Hasher as _};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u8(0);
    (u128::from(h.finish()) << 16) | u128::from(h.finish() as u16)
}

fn relay_rules(rx: &Receiver) -> String {
    format!(
        "sources:\n  hook: {{}}\nrules:\n  - name: relay\n    source: hook\n    actions:\n      - http: {{ url: \"{}\" }}\n",
        rx.url("/sink")
    )
}

/// Pruning 150,000 old events runs in small writes with pauses between them,
/// so requests arriving meanwhile are stored at once: every one is answered
/// 202, none waits for more than a moment (with the old single `DELETE` the
/// requests behind it waited seconds), the old events are gone with their
/// deliveries and attempts, and the new ones stay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pruning_a_large_backlog_never_holds_up_requests() {
    const OLD: u32 = 150_000;
    // Generous for a loaded two-core machine running a debug build (batches
    // give a max of 30-80 ms there); the old single DELETE held the requests
    // behind it for the whole pass, about 2 s.
    const MAX_LATENCY: Duration = Duration::from_millis(750);
    let rx = Receiver::start().await;
    // Started once to create the schema, then stopped to fill it.
    let mut d = Daemon::start_with(
        &[("hook.yaml", &relay_rules(&rx))],
        &[],
        &["--retention", "1h"],
    );
    d.kill();
    let filling = Instant::now();
    insert_old_events(&d.db_path(), OLD, 2 * HOUR_MS);
    eprintln!("inserted {OLD} old events in {:?}", filling.elapsed());

    // The first pass runs as the daemon starts.
    d.restart();
    let stop = Arc::new(AtomicBool::new(false));
    let mut senders = Vec::new();
    for s in 0..2 {
        let (url, stop) = (d.url("/hooks/hook"), stop.clone());
        senders.push(tokio::spawn(async move {
            let c = client();
            let mut answers = Vec::new();
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                let started = Instant::now();
                let r = c
                    .post(&url)
                    .header("content-type", "application/json")
                    .body(json!({"sender": s, "n": n}).to_string())
                    .send()
                    .await
                    .unwrap();
                let status = r.status().as_u16();
                let id = r.headers()["x-request-id"].to_str().unwrap().to_owned();
                answers.push((status, started.elapsed(), id, Instant::now()));
                n += 1;
            }
            answers
        }));
    }
    let log = d
        .wait_log("the prune pass", |l| {
            l.contains("pruned finished events older than the retention")
        })
        .await;
    let pruned_at = Instant::now();
    // A little more traffic after the pass, then stop.
    tokio::time::sleep(Duration::from_millis(200)).await;
    stop.store(true, Ordering::Relaxed);
    let mut answers = Vec::new();
    for s in senders {
        answers.extend(s.await.unwrap());
    }

    let line = log
        .lines()
        .find(|l| l.contains("pruned finished events older than the retention"))
        .unwrap();
    assert!(line.contains(&format!("events={OLD}")), "{line}");
    let during = answers.iter().filter(|a| a.3 <= pruned_at).count();
    let mut latencies: Vec<Duration> = answers.iter().map(|a| a.1).collect();
    latencies.sort();
    let max = *latencies.last().unwrap();
    let p99 = latencies[latencies.len() * 99 / 100];
    eprintln!(
        "{} requests ({during} while pruning), p99 {p99:?}, max {max:?}; {line}",
        answers.len()
    );
    for (status, _, id, _) in &answers {
        assert_eq!(*status, 202, "{id}");
    }
    assert!(
        max < MAX_LATENCY,
        "a request waited {max:?} while pruning (p99 {p99:?})"
    );
    // Not vacuous: the pass was still running while requests came and went.
    assert!(during >= 20, "only {during} requests overlapped the prune");

    // The old events went with their deliveries and attempts; every new one stayed.
    let cutoff = now_ms() - HOUR_MS;
    let events = d.list("events", "").await;
    assert_eq!(events.len(), answers.len());
    let left: Vec<&str> = events
        .iter()
        .filter(|e| e["received_at"].as_str().unwrap() < rfc3339_ms(cutoff).as_str())
        .map(|e| e["id"].as_str().unwrap())
        .collect();
    assert!(left.is_empty(), "old events left: {left:?}");
    let ids: std::collections::HashSet<&str> =
        events.iter().map(|e| e["id"].as_str().unwrap()).collect();
    for (_, _, id, _) in &answers {
        assert!(ids.contains(id.as_str()), "{id} is missing");
    }
    // Each new event has its one delivery; the old ones' went with them
    // (and their attempts with the deliveries).
    assert_eq!(d.count_deliveries(&[]).await, answers.len());
    // The pass is in the metrics too.
    let metrics = d.get_text("/metrics").await;
    assert!(
        metrics.contains(&format!("hookwire_pruned_events_total {OLD}")),
        "{metrics}"
    );
    assert!(
        metrics.contains("hookwire_prune_duration_seconds_count 1"),
        "{metrics}"
    );
    // The WAL did not balloon with the deletes.
    let wal = std::fs::metadata(d.db_path().with_extension("db-wal"))
        .map(|m| m.len())
        .unwrap_or(0);
    eprintln!("WAL {wal} bytes");
    assert!(wal < 64 << 20, "the WAL grew to {wal} bytes");
}
