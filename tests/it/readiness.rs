//! Readiness tells the truth and state changes are logged once: a store that
//! cannot commit (a full disk, here a real tmpfs) answers 503, fails
//! `/readyz`, says so in one line and its recovery in another, and nothing
//! spins while it waits.

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::{Daemon, Received, Receiver, Tmpfs, client};

/// The value of a metric (first sample of that name) in `/metrics`.
async fn metric(d: &Daemon, name: &str) -> f64 {
    let text = d.get_text("/metrics").await;
    text.lines()
        .find_map(|l| {
            l.strip_prefix(name)
                .and_then(|rest| rest.strip_prefix(' '))
                .and_then(|v| v.trim().parse().ok())
        })
        .unwrap_or_else(|| panic!("no {name} in:\n{text}"))
}

async fn readyz(d: &Daemon) -> (u16, Value) {
    let r = client().get(d.url("/readyz")).send().await.unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

async fn wait_ready(d: &Daemon, status: u16, within: Duration) -> Value {
    let deadline = Instant::now() + within;
    loop {
        let (s, body) = readyz(d).await;
        if s == status {
            return body;
        }
        assert!(
            Instant::now() < deadline,
            "/readyz stayed {s} (wanted {status}): {body}\n{}",
            d.log_text()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn lines(log: &str, needle: &str) -> usize {
    log.lines().filter(|l| l.contains(needle)).count()
}

const FAILING: &str = "store cannot commit";
const RECOVERED: &str = "store recovered";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_fails_on_a_full_disk_and_recovers_when_space_is_freed() {
    // Declared first, dropped last: the daemon stops before the unmount.
    let disk = Tmpfs::mount("2m");
    let rx = Receiver::start().await;
    // The first attempt fails, and the retry comes due while the disk is full.
    rx.script("/out", &[(500, None)]);
    let rules = format!(
        "sources:\n  hook: {{}}\nrules:\n  - name: r\n    source: hook\n    actions:\n      - name: out\n        http: {{ url: \"{}\", body: {{ n: \"{{{{payload.n}}}}\" }} }}\n        retry: {{ attempts: 50, initial: 2s, max: 2s }}\n",
        rx.url("/out")
    );
    let d = Daemon::start_on_database(&[("r.yaml", &rules)], &disk.path().join("hookwire.db"));
    assert_eq!(readyz(&d).await.0, 200);

    let first = d.post_json("/hooks/hook", r#"{"n": 1}"#).await;
    assert!(first["event_id"].is_string(), "{first}");
    rx.wait_for("/out", 1, Duration::from_secs(10)).await;
    // Its failed attempt is on disk (retrying) before the disk fills up.
    let deadline = Instant::now() + Duration::from_secs(10);
    while d.get_json("/api/deliveries?status=retrying").await["deliveries"]
        .as_array()
        .is_none_or(|a| a.is_empty())
    {
        assert!(Instant::now() < deadline, "{}", d.log_text());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let filler = disk.path().join("filler");
    assert!(disk.fill(&filler) > 0);

    // Events are refused at once with 503 and Retry-After, never left hanging.
    let refused = 3;
    for n in 0..refused {
        let r = client()
            .post(d.url("/hooks/hook"))
            .header("content-type", "application/json")
            .body(format!(
                r#"{{"n": "refused {n}", "pad": "{}"}}"#,
                "x".repeat(8000)
            ))
            .timeout(Duration::from_secs(10))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 503, "{}", r.text().await.unwrap());
        assert!(r.headers().contains_key("retry-after"));
    }
    let body = wait_ready(&d, 503, Duration::from_secs(5)).await;
    assert!(
        body["store"].as_str().is_some_and(|s| s.contains("full")),
        "{body}"
    );

    // The retry comes due on the full disk: its claim fails, and the claim
    // loop backs off instead of spinning on the store.
    d.wait_log("a failed claim", |l| l.contains("cannot claim deliveries"))
        .await;
    let failures = metric(&d, "hookwire_store_commit_failures_total").await;
    let window = Instant::now() + Duration::from_secs(3);
    while Instant::now() < window {
        let now = metric(&d, "hookwire_store_commit_failures_total").await;
        // Claims back off from 100 ms, the probe tries once a second: a
        // handful. A loop without back-off fails thousands of times.
        assert!(
            now - failures <= 20.0,
            "{} failed commits within 3 s: something retries without waiting",
            now - failures
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(metric(&d, "hookwire_store_failing").await, 1.0);
    // The scrape reads the file system the database is on: the full tmpfs.
    assert_eq!(metric(&d, "hookwire_disk_free_bytes").await, 0.0);
    assert!(metric(&d, "hookwire_wal_bytes").await > 0.0);
    assert!(metric(&d, "hookwire_database_bytes").await > 0.0);
    assert!(metric(&d, "hookwire_store_commit_duration_seconds_count").await > 0.0);
    assert!(metric(&d, "hookwire_store_claim_duration_seconds_count").await > 0.0);
    assert_eq!(
        metric(
            &d,
            r#"hookwire_request_duration_seconds_count{source="hook",status="5xx"}"#
        )
        .await,
        refused as f64
    );
    assert_eq!(readyz(&d).await.0, 503);
    let log = d.log_text();
    assert_eq!(lines(&log, FAILING), 1, "{log}");
    assert_eq!(lines(&log, RECOVERED), 0, "{log}");
    // At most a line per backed-off claim: a handful, never one per spin.
    let claims = lines(&log, "cannot claim deliveries");
    assert!((1..=10).contains(&claims), "{claims} lines:\n{log}");
    // The refusals themselves are not logged above debug level.
    assert_eq!(lines(&log, "event not stored"), 0, "{log}");

    // Space again: readiness comes back by itself, with no request to store.
    std::fs::remove_file(&filler).unwrap();
    wait_ready(&d, 200, Duration::from_secs(5)).await;
    let log = d
        .wait_log("the recovery line", |l| l.contains(RECOVERED))
        .await;
    assert_eq!(lines(&log, RECOVERED), 1, "{log}");
    assert_eq!(lines(&log, FAILING), 1, "{log}");
    let recovered = log.lines().find(|l| l.contains(RECOVERED)).unwrap();
    assert!(
        recovered.contains(&format!("; {refused} requests answered 503")),
        "{recovered}"
    );
    assert_eq!(metric(&d, "hookwire_store_failing").await, 0.0);
    let free = metric(&d, "hookwire_disk_free_bytes").await;
    assert!((1e6..=2.0 * 1024.0 * 1024.0).contains(&free), "{free}");

    // Stored and delivered again: the new event and the retry that waited.
    let after = d.post_json("/hooks/hook", r#"{"n": "after"}"#).await;
    assert!(after["event_id"].is_string(), "{after}");
    let got = rx.wait_for("/out", 3, Duration::from_secs(15)).await;
    assert!(
        got.iter().any(|r| r.json()["n"] == "after"),
        "{:?}",
        got.iter().map(Received::json).collect::<Vec<_>>()
    );
    assert_eq!(got.iter().filter(|r| r.json()["n"] == 1).count(), 2);
    let log = d
        .wait_log("claims again", |l| l.contains("claiming deliveries again"))
        .await;
    assert_eq!(lines(&log, FAILING), 1, "{log}");
    assert_eq!(lines(&log, RECOVERED), 1, "{log}");
}

/// JSON log fields are plain values: numbers as numbers, absent when there
/// is none (not `"Some(200)"` or `"None"`), lists as text.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_log_fields_are_plain_values() {
    let rx = Receiver::start().await;
    let rules = format!(
        "sources:\n  s: {{}}\nrules:\n  - name: r\n    source: s\n    actions:\n      - http: {{ url: \"{}\" }}\n",
        rx.url("/out")
    );
    let d = Daemon::start_with(&[("r.yaml", &rules)], &[], &["--log-format", "json"]);
    d.post_json("/hooks/s", "{}").await;
    rx.wait_for("/out", 1, Duration::from_secs(10)).await;
    let log = d
        .wait_log("attempt finished", |l| l.contains("attempt finished"))
        .await;
    let lines: Vec<Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let attempt = lines
        .iter()
        .find(|l| l["fields"]["message"] == "attempt finished")
        .unwrap();
    assert_eq!(attempt["fields"]["status"], 200, "{attempt}");
    assert!(attempt["fields"].get("exit_code").is_none(), "{attempt}");
    let stored = lines
        .iter()
        .find(|l| l["fields"]["message"] == "event stored")
        .unwrap();
    assert_eq!(stored["fields"]["matched"], "r", "{stored}");
    // No field anywhere is a Rust debug rendering.
    for l in &lines {
        let text = l.to_string();
        assert!(
            !text.contains("Some(") && !text.contains("\"None\""),
            "{text}"
        );
    }
}

/// Nothing to deliver and no request after the disk is freed: the store's
/// own probe commit finds out that it can commit again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_comes_back_without_traffic() {
    let disk = Tmpfs::mount("2m");
    let d = Daemon::start_on_database(
        &[("r.yaml", "sources:\n  hook: {}\n")],
        &disk.path().join("hookwire.db"),
    );
    let filler = disk.path().join("filler");
    disk.fill(&filler);
    let r = client()
        .post(d.url("/hooks/hook"))
        .header("content-type", "application/json")
        .body(format!(r#"{{"pad": "{}"}}"#, "x".repeat(8000)))
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    wait_ready(&d, 503, Duration::from_secs(5)).await;

    std::fs::remove_file(&filler).unwrap();
    wait_ready(&d, 200, Duration::from_secs(5)).await;
    let log = d
        .wait_log("the recovery line", |l| l.contains(RECOVERED))
        .await;
    assert_eq!(lines(&log, FAILING), 1, "{log}");
    assert_eq!(lines(&log, "; 1 request answered 503"), 1, "{log}");
    assert_eq!(
        d.post_json("/hooks/hook", "{}").await["matched"],
        serde_json::json!([])
    );
}

/// Under systemd (`Type=notify`, examples/deploy/hookwire.service) hookwire
/// says `READY=1` on `NOTIFY_SOCKET` once it listens with its rules loaded
/// and its store open: here the socket is the test's own, and by the time
/// the message arrives the daemon answers `/readyz`.
#[tokio::test]
async fn systemd_hears_ready_once_the_daemon_answers() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notify");
    let socket = std::os::unix::net::UnixDatagram::bind(&path).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(15)))
        .unwrap();
    let rules = "sources:\n  hook: {}\nrules: []\n";
    let d = Daemon::start_with(
        &[("r.yaml", rules)],
        &[("NOTIFY_SOCKET", path.to_str().unwrap())],
        &[],
    );
    let mut buf = [0u8; 256];
    let n = socket.recv(&mut buf).expect("no READY=1 within 15 s");
    assert_eq!(std::str::from_utf8(&buf[..n]).unwrap().trim(), "READY=1");
    let r = client().get(d.url("/readyz")).send().await.unwrap();
    assert_eq!(r.status(), 200);
}
