//! A 2xx means the event is on disk: it survives SIGKILL right after the answer.

use serde_json::Value;

use crate::support::{Daemon, client, fixture};

const RULES: &str = "sources:\n  github: {}\nrules:\n  - name: all\n    source: github\n    actions:\n      - command: { argv: [/bin/true] }\n";

#[tokio::test]
async fn acknowledged_events_survive_sigkill() {
    let mut d = Daemon::start(&[("rules.yaml", RULES)]);
    let body = fixture("examples/payloads/push-branch.json");
    // Concurrent senders, so commits are shared; every acknowledged id is kept.
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let (url, body) = (d.url("/hooks/github"), body.clone());
        tasks.push(tokio::spawn(async move {
            let c = client();
            let mut ids = Vec::new();
            for _ in 0..25 {
                let r = c
                    .post(&url)
                    .header("content-type", "application/json")
                    .body(body.clone())
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), 202);
                ids.push(
                    r.json::<Value>().await.unwrap()["event_id"]
                        .as_str()
                        .unwrap()
                        .to_owned(),
                );
            }
            ids
        }));
    }
    let mut acked = Vec::new();
    for t in tasks {
        acked.extend(t.await.unwrap());
    }
    d.kill();
    let conn = rusqlite::Connection::open(d.db_path()).unwrap();
    for id in &acked {
        let n: i64 = conn
            .query_row("SELECT count(*) FROM events WHERE id = ?1", [id], |r| {
                r.get(0)
            })
            .unwrap();
        assert_eq!(n, 1, "acknowledged event {id} lost");
        let p: i64 = conn
            .query_row(
                "SELECT count(*) FROM deliveries WHERE event_id = ?1",
                [id],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(p, 1, "delivery of {id} lost");
    }
    assert_eq!(acked.len(), 200);

    // And the daemon starts again on the same database.
    d.restart();
    let r = client()
        .post(d.url("/hooks/github"))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
}

#[tokio::test]
async fn store_failure_answers_503_with_retry_after_and_recovers() {
    let d = Daemon::start(&[("rules.yaml", RULES)]);
    // Another process holds the write lock longer than the store waits for it.
    let conn = rusqlite::Connection::open(d.db_path()).unwrap();
    conn.execute_batch("BEGIN EXCLUSIVE; INSERT INTO dedup (source, key, event_id, created_at_ms) VALUES ('x', 'y', 'z', 0);").unwrap();
    let r = client()
        .post(d.url("/hooks/github"))
        .header("content-type", "application/json")
        .body("{}")
        .timeout(std::time::Duration::from_secs(60))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    assert!(r.headers().contains_key("retry-after"));
    assert!(r.headers().contains_key("x-request-id"));
    conn.execute_batch("ROLLBACK;").unwrap();
    let r = client()
        .post(d.url("/hooks/github"))
        .header("content-type", "application/json")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202, "the daemon recovers once the store does");
}
