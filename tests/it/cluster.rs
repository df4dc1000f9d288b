//! Several instances on one PostgreSQL (SPEC §7): two daemon processes with
//! the same rules on one database, against a real server started by the
//! tests (`pg`, one per test run, a database per test).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::*;

#[path = "../../src/store/postgres/testing.rs"]
#[allow(dead_code)]
pub(crate) mod pg;

/// Relays each event's `n` to the receiver.
fn relay_rules(rx: &Receiver) -> String {
    format!(
        "sources:\n  hook: {{}}\nrules:\n  - name: relay\n    source: hook\n    actions:\n      - name: out\n        http: {{ url: \"{}\", body: {{ n: \"{{{{payload.n}}}}\" }} }}\n        retry: {{ attempts: 8, initial: 200ms, max: 1s }}\n",
        rx.url("/sink")
    )
}

/// Two instances with the same rules on one fresh database.
fn pair(rules: &str, args: &[&str]) -> (Daemon, Daemon) {
    let db = pg::database();
    let a = Daemon::start_on_url(&[("r.yaml", rules)], args, &db);
    let b = Daemon::start_on_url(&[("r.yaml", rules)], args, &db);
    (a, b)
}

/// Sends events numbered `0..total` from `senders` tasks, alternately to each
/// of `urls`; returns the acknowledged numbers.
pub(crate) async fn send_alternately(
    urls: Vec<String>,
    total: usize,
    senders: usize,
) -> Vec<usize> {
    let next = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..senders {
        let (urls, next) = (urls.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            let c = client();
            let mut acked = Vec::new();
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= total {
                    return acked;
                }
                let r = c
                    .post(&urls[n % urls.len()])
                    .header("content-type", "application/json")
                    .body(json!({ "n": n }).to_string())
                    .timeout(Duration::from_secs(30))
                    .send()
                    .await;
                if r.is_ok_and(|r| r.status() == 202) {
                    acked.push(n);
                }
            }
        }));
    }
    let mut acked = Vec::new();
    for t in tasks {
        acked.extend(t.await.unwrap());
    }
    acked
}

/// Waits until every acknowledged number reached the receiver; how many
/// arrived more than once.
async fn all_arrive(rx: &Receiver, acked: &[usize], within: Duration) -> usize {
    let deadline = Instant::now() + within;
    loop {
        let mut seen: HashMap<usize, usize> = HashMap::new();
        for r in rx.requests("/sink") {
            *seen
                .entry(r.json()["n"].as_u64().unwrap() as usize)
                .or_default() += 1;
        }
        let missing: Vec<&usize> = acked.iter().filter(|n| !seen.contains_key(n)).collect();
        if missing.is_empty() {
            return seen.values().map(|c| c - 1).sum();
        }
        assert!(
            Instant::now() < deadline,
            "{} acknowledged events never arrived, e.g. {:?}",
            missing.len(),
            &missing[..missing.len().min(10)]
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// 1. 2,000 events sent alternately to both instances: every one is stored
/// once and delivered; with nobody dying, nothing arrives twice. Both
/// instances deliver, whichever ingested.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_share_ingest_and_delivery() {
    let rx = Receiver::start().await;
    let (a, b) = pair(&relay_rules(&rx), &[]);
    let urls = vec![a.url("/hooks/hook"), b.url("/hooks/hook")];
    let acked = send_alternately(urls, 2000, 16).await;
    assert_eq!(acked.len(), 2000);
    let twice = all_arrive(&rx, &acked, Duration::from_secs(120)).await;
    assert_eq!(twice, 0, "deliveries ran twice with no instance dying");
    // One database: each instance lists every event.
    assert_eq!(a.count_events("").await, 2000);
    assert_eq!(b.count_events("").await, 2000);
    let by_a = a.metric("hookwire_deliveries_total").await;
    let by_b = b.metric("hookwire_deliveries_total").await;
    assert_eq!(by_a + by_b, 2000.0);
    assert!(
        by_a > 0.0 && by_b > 0.0,
        "one instance delivered all: {by_a} / {by_b}"
    );
}

/// Numbers in a file of lines, with how many times each appears.
fn lines_seen(path: &std::path::Path) -> HashMap<usize, usize> {
    let mut seen = HashMap::new();
    for line in std::fs::read_to_string(path).unwrap_or_default().lines() {
        *seen.entry(line.trim().parse().unwrap()).or_default() += 1;
    }
    seen
}

/// 2. One instance is SIGKILLed mid-burst with http and command deliveries
/// in flight: once its leases have run out the other takes them over; no
/// acknowledged event is lost by either action, and a delivery runs twice
/// only where a takeover explains it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_instances_deliveries_are_taken_over() {
    let rx = Receiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    let ran = dir.path().join("ran");
    // Each event also runs a command that takes a moment, so some are
    // running when the instance dies; it appends the event's number.
    let rules = format!(
        "{}      - name: note\n        command:\n          argv: [/bin/sh, -c, \"sleep 0.05; echo $0 >> '{}'\", \"{{{{payload.n}}}}\"]\n",
        relay_rules(&rx),
        ran.display()
    );
    let (mut a, b) = pair(&rules, &["--lease", "2s"]);
    let urls = vec![a.url("/hooks/hook"), b.url("/hooks/hook")];
    let sending = tokio::spawn(send_alternately(urls, 1000, 8));
    let deadline = Instant::now() + Duration::from_secs(60);
    while a.metric("hookwire_events_stored_total").await < 200.0 {
        assert!(Instant::now() < deadline, "the burst did not get going");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let killed_at = Instant::now();
    a.kill();
    // What the dead instance held: running under its leases.
    let held = b.count_deliveries(&["running"]).await;
    let acked = sending.await.unwrap();
    assert!(acked.len() >= 500, "only {} acknowledged", acked.len());
    let twice = all_arrive(&rx, &acked, Duration::from_secs(60)).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    let ran_twice = loop {
        let seen = lines_seen(&ran);
        let missing = acked.iter().filter(|n| !seen.contains_key(n)).count();
        if missing == 0 {
            break seen.values().map(|c| c - 1).sum::<usize>();
        }
        assert!(
            Instant::now() < deadline,
            "{missing} acknowledged events' commands never ran"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    // Every stored delivery ends, those of events the dead instance stored
    // but never answered for included: taken over once their lease ran out.
    let deadline = killed_at + Duration::from_secs(2 + 5);
    loop {
        let open = b
            .count_deliveries(&["running", "pending", "retrying"])
            .await;
        if open == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{open} deliveries not finished {:?} after the kill (lease 2 s)",
            killed_at.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let taken = killed_at.elapsed();
    // A delivery arrives twice only when the dead instance sent it and died
    // before recording it: at most what it held.
    assert!(
        twice + ran_twice <= held,
        "{twice} arrived twice and {ran_twice} commands ran twice, {held} were held"
    );
    eprintln!(
        "{} acknowledged; {held} held by the killed instance; all finished {taken:?} after the kill; \
         {twice} http and {ran_twice} commands twice",
        acked.len()
    );
}

/// 3. An attempt that runs longer than three leases runs exactly once: its
/// instance's heartbeats keep the other from taking it over.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_attempt_runs_once_across_instances() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("runs");
    let rules = format!(
        "sources:\n  hook: {{}}\nrules:\n  - name: long\n    source: hook\n    actions:\n      - name: job\n        command:\n          argv: [/bin/sh, -c, \"echo start >> '{l}'; sleep 2; echo end >> '{l}'\"]\n          timeout: 30s\n",
        l = log.display()
    );
    let (a, b) = pair(&rules, &["--lease", "500ms"]);
    let id = a.post_json("/hooks/hook", r#"{"n": 1}"#).await["event_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let e = b.event(&id).await.unwrap();
        if e["deliveries"][0]["status"] == "succeeded" {
            assert_eq!(e["deliveries"][0]["attempts"], 1, "{e:#}");
            break;
        }
        assert!(Instant::now() < deadline, "did not finish: {e:#}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(std::fs::read_to_string(&log).unwrap(), "start\nend\n");
}

/// 4. Fencing: an instance frozen (SIGSTOP) past its lease loses the
/// delivery to the other, which runs it and records success; thawed
/// (SIGCONT), the first one's late result is discarded — `lease lost`, the
/// metric — and the history shows one attempt.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_instances_late_result_is_discarded() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("runs");
    // The command names the instance that runs it (its parent).
    let rules = format!(
        "sources:\n  hook: {{}}\nrules:\n  - name: job\n    source: hook\n    actions:\n      - name: run\n        command:\n          argv: [/bin/sh, -c, \"echo start $PPID >> '{l}'; sleep 2; echo end >> '{l}'\"]\n          timeout: 30s\n",
        l = log.display()
    );
    let (a, b) = pair(&rules, &["--lease", "1s"]);
    let id = a.post_json("/hooks/hook", r#"{"n": 1}"#).await["event_id"]
        .as_str()
        .unwrap()
        .to_owned();
    // One of the two starts it at once (mostly the one that ingested it, but
    // the other hears of it at the same moment): that one is frozen.
    let deadline = Instant::now() + Duration::from_secs(10);
    let runner = loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if let Some(pid) = text
            .lines()
            .next()
            .and_then(|l| l.strip_prefix("start "))
            .and_then(|p| p.trim().parse::<u32>().ok())
        {
            break pid;
        }
        assert!(Instant::now() < deadline, "the attempt did not start");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let (frozen, other) = if runner == a.pid() {
        (&a, &b)
    } else {
        (&b, &a)
    };
    assert_eq!(runner, frozen.pid(), "run by neither instance");
    signal(frozen.pid(), nix::sys::signal::Signal::SIGSTOP);
    // The other takes it over once the frozen one's lease has run out, and
    // records its success.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let e = other.event(&id).await.unwrap();
        if e["deliveries"][0]["status"] == "succeeded" {
            break;
        }
        assert!(Instant::now() < deadline, "not taken over: {e:#}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    signal(frozen.pid(), nix::sys::signal::Signal::SIGCONT);
    frozen
        .wait_log("the late result discarded", |l| l.contains("lease lost"))
        .await;
    assert_eq!(frozen.metric("hookwire_leases_lost_total").await, 1.0);
    let e = other.event(&id).await.unwrap();
    let attempts = e["deliveries"][0]["attempt_log"].as_array().unwrap();
    assert_eq!(attempts.len(), 1, "{e:#}");
    assert_eq!(attempts[0]["outcome"], "succeeded");
    assert_eq!(e["deliveries"][0]["status"], "succeeded");
}

/// 5. The same provider delivery sent to both instances at the same moment,
/// again and again: one event is stored, every other answer names it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_duplicates_on_two_instances_store_one() {
    let rules = "sources:\n  hook:\n    dedup: \"{{headers.x-delivery}}\"\n";
    // Two connections each: the copies also queue for the pool.
    let (a, b) = pair(rules, &["--database-pool", "2"]);
    let requests = (0..20)
        .map(|i| {
            let url = if i % 2 == 0 {
                a.url("/hooks/hook")
            } else {
                b.url("/hooks/hook")
            };
            client()
                .post(url)
                .header("content-type", "application/json")
                .header("x-delivery", "72d3162e-cc78-11e3-81ab-4c9367dc0958")
                .body("{}")
        })
        .collect();
    let answers = send_all(requests).await;
    let (stored, duplicates) = split_dedup_answers(answers);
    assert_eq!(stored.len(), 1, "{stored:?}");
    assert!(duplicates.iter().all(|d| *d == stored[0]), "{duplicates:?}");
    assert_eq!(a.count_events("").await, 1);
}

/// 6. `serialize_by` holds across instances: deliveries of one key, ingested
/// by either instance and run by either, run one at a time in arrival order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serialize_by_order_holds_across_instances() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("log");
    let rules = format!(
        "sources:\n  hook: {{}}\nrules:\n  - name: deploy\n    source: hook\n    actions:\n      - name: step\n        command:\n          argv: [/bin/sh, -c, \"echo start $1 >> '{l}'; sleep 0.1; echo end $1 >> '{l}'\", sh, \"{{{{payload.n}}}}\"]\n        serialize_by: \"site\"\n",
        l = log.display()
    );
    let (a, b) = pair(&rules, &[]);
    for n in 0..12 {
        let d = if n % 2 == 0 { &a } else { &b };
        d.post_json("/hooks/hook", json!({ "n": n }).to_string())
            .await;
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if text.lines().count() == 24 {
            let want: String = (0..12).map(|n| format!("start {n}\nend {n}\n")).collect();
            assert_eq!(text, want, "interleaved or out of order");
            break;
        }
        assert!(Instant::now() < deadline, "not all ran: {text}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// 7. PostgreSQL stopped (`pg_ctl stop -m fast`) and started again under
/// load: meanwhile ingest answers 503, never 2xx; afterwards every
/// acknowledged event is delivered, without restarting hookwire.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_outage_is_answered_503_and_recovered_from() {
    let server = pg::own_server();
    server.psql("postgres", "CREATE DATABASE outage");
    let db = server.url("outage");
    let rx = Receiver::start().await;
    let rules = relay_rules(&rx);
    let a = Daemon::start_on_url(&[("r.yaml", &rules)], &[], &db);
    let b = Daemon::start_on_url(&[("r.yaml", &rules)], &[], &db);
    let urls = vec![a.url("/hooks/hook"), b.url("/hooks/hook")];
    // Senders that keep going through the outage and record every answer.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let next = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let (urls, stop, next) = (urls.clone(), stop.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            let c = client();
            let mut answers = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let n = next.fetch_add(1, Ordering::Relaxed);
                let r = c
                    .post(&urls[n % 2])
                    .header("content-type", "application/json")
                    .body(json!({ "n": n }).to_string())
                    .timeout(Duration::from_secs(30))
                    .send()
                    .await;
                answers.push((n, r.map(|r| r.status().as_u16()).unwrap_or(0)));
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            answers
        }));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    server.stop();
    // Not ready while the database is down.
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let r = client().get(a.url("/readyz")).send().await.unwrap();
        if r.status() == 503 {
            break;
        }
        assert!(Instant::now() < deadline, "/readyz stayed {}", r.status());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    server.start_again();
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, Ordering::Relaxed);
    let mut answers = Vec::new();
    for t in tasks {
        answers.extend(t.await.unwrap());
    }
    let acked: Vec<usize> = answers.iter().filter(|a| a.1 == 202).map(|a| a.0).collect();
    let refused = answers.iter().filter(|a| a.1 == 503).count();
    let other: Vec<_> = answers
        .iter()
        .filter(|a| ![202, 503].contains(&a.1))
        .collect();
    assert!(
        other.is_empty(),
        "answers other than 202 and 503: {other:?}"
    );
    assert!(refused > 0, "the outage was never seen");
    assert!(acked.len() > 20, "only {} acknowledged", acked.len());
    // Acknowledged after the restart too: the instances recovered by themselves.
    let last = *answers
        .iter()
        .filter(|a| a.1 == 202)
        .map(|(n, _)| n)
        .max()
        .unwrap();
    assert!(
        answers.iter().any(|(n, s)| *s == 503 && *n < last),
        "nothing was acknowledged after the outage"
    );
    all_arrive(&rx, &acked, Duration::from_secs(60)).await;
    for d in [&a, &b] {
        let r = client().get(d.url("/readyz")).send().await.unwrap();
        assert_eq!(r.status(), 200);
    }
    eprintln!(
        "{} acknowledged, {refused} refused during the outage",
        acked.len()
    );
}

/// 8. Retention pruning on PostgreSQL: finished events go, with their
/// deliveries.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_prunes_on_postgres() {
    let rx = Receiver::start().await;
    let (a, _b) = pair(&relay_rules(&rx), &["--retention", "2s"]);
    let acked = send_alternately(vec![a.url("/hooks/hook")], 50, 4).await;
    all_arrive(&rx, &acked, Duration::from_secs(60)).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while a.count_events("").await > 0 {
        assert!(Instant::now() < deadline, "finished events were not pruned");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert_eq!(a.count_deliveries(&[]).await, 0);
}

fn signal(pid: u32, sig: nix::sys::signal::Signal) {
    let pid = nix::unistd::Pid::from_raw(i32::try_from(pid).unwrap());
    nix::sys::signal::kill(pid, sig).unwrap();
}

/// A source `slow` whose command holds a worker for 20 s, and a source
/// `quick` relayed over HTTP to the receiver.
fn busy_rules(rx: &Receiver) -> String {
    format!(
        "sources:\n  slow: {{}}\n  quick: {{}}\nrules:\n  - name: hold\n    source: slow\n    actions:\n      - name: sleep\n        command: {{ argv: [/bin/sleep, \"20\"], timeout: 60s }}\n  - name: relay\n    source: quick\n    actions:\n      - name: out\n        http: {{ url: \"{}\", body: {{ n: \"{{{{payload.n}}}}\" }} }}\n",
        rx.url("/sink")
    )
}

/// An instance alone on `db` with `--workers 1`, its only worker held by
/// a long command it ingested and runs itself.
async fn busy_instance(rules: &str, db: &str) -> Daemon {
    let d = Daemon::start_on_url(&[("r.yaml", rules)], &["--workers", "1"], db);
    d.post_json("/hooks/slow", "{}").await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while d.count_deliveries(&["running"]).await == 0 {
        assert!(Instant::now() < deadline, "the long command did not start");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    d
}

/// Wake-ups across instances (issue 12, "within a second on any
/// instance"): A's only worker is busy, so the deliveries of the events it
/// ingests are run by B, which is woken by A's NOTIFY rather than finding
/// them at its next look at the queue (up to a second later).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_instance_starts_new_work_at_once() {
    let rx = Receiver::start().await;
    let rules = busy_rules(&rx);
    let db = pg::database();
    let a = busy_instance(&rules, &db).await;
    let b = Daemon::start_on_url(&[("r.yaml", &rules)], &[], &db);
    let mut took = Vec::new();
    for n in 0..5 {
        // B idle: its last attempt recorded, and its dispatcher back to
        // sleep (the scenario, not a wait for a result: with nothing due,
        // B sleeps up to a second, and only a wake-up cuts that short).
        let deadline = Instant::now() + Duration::from_secs(5);
        while b.count_deliveries(&["succeeded"]).await < n {
            assert!(Instant::now() < deadline, "delivery {n} not recorded");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        let sent = Instant::now();
        a.post_json("/hooks/quick", json!({ "n": n }).to_string())
            .await;
        let got = rx.wait_for("/sink", n + 1, Duration::from_secs(5)).await;
        took.push(got[n].at - sent);
    }
    eprintln!("from A's ingest to B's delivery: {took:?}");
    assert_eq!(
        b.metric("hookwire_deliveries_total").await,
        5.0,
        "B ran them all"
    );
    assert!(
        took.iter().all(|t| *t < Duration::from_millis(1500)),
        "{took:?}"
    );
    // Polling alone would start each some way into B's one-second sleep;
    // woken, B starts it in milliseconds.
    took.sort();
    assert!(
        took[2] < Duration::from_millis(300),
        "median {:?}: B was not woken",
        took[2]
    );
}

/// `GET /api/stream` as a test reads it: the messages so far, as JSON.
struct Sse {
    response: reqwest::Response,
    text: String,
}

impl Sse {
    async fn open(d: &Daemon) -> Sse {
        let response = client().get(d.url("/api/stream")).send().await.unwrap();
        assert_eq!(response.status(), 200);
        Sse {
            response,
            text: String::new(),
        }
    }

    /// Every `data:` message received so far.
    fn messages(&self) -> Vec<Value> {
        self.text
            .lines()
            .filter_map(|l| l.strip_prefix("data:"))
            .map(|d| serde_json::from_str(d.trim()).unwrap())
            .collect()
    }

    /// Reads until `pred` holds of the messages, for at most `within`.
    async fn until(&mut self, within: Duration, pred: impl Fn(&[Value]) -> bool) -> bool {
        let deadline = Instant::now() + within;
        while !pred(&self.messages()) {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            if let Ok(Ok(Some(chunk))) = tokio::time::timeout(left, self.response.chunk()).await {
                self.text.push_str(&String::from_utf8_lossy(&chunk));
            }
        }
        true
    }
}

/// The live feed across instances (issue 12): the dashboard's stream on B
/// shows the event A ingested and the changes of its delivery, which A ran
/// (B's only worker is busy), within a second.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_live_feed_shows_other_instances_events_and_deliveries() {
    let rx = Receiver::start().await;
    let rules = busy_rules(&rx);
    let db = pg::database();
    let b = busy_instance(&rules, &db).await;
    let a = Daemon::start_on_url(&[("r.yaml", &rules)], &[], &db);
    let mut stream = Sse::open(&b).await;
    // A relays its feed once it has heard that B's stream listens: the
    // first events may come before that.
    let mut warm = false;
    for n in 0..20 {
        let id = a
            .post_json("/hooks/quick", json!({ "n": n }).to_string())
            .await["event_id"]
            .as_str()
            .unwrap()
            .to_owned();
        if stream
            .until(Duration::from_millis(500), |m| {
                m.iter().any(|m| m["type"] == "event" && m["id"] == id)
            })
            .await
        {
            eprintln!("A's feed reached B's stream from its event {n} on");
            warm = true;
            break;
        }
    }
    assert!(warm, "nothing of A's came through: {}", stream.text);
    let sent = Instant::now();
    let id = a
        .post_json("/hooks/quick", json!({ "n": 100 }).to_string())
        .await["event_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let of_it = |m: &[Value], kind: &str, status: Option<&str>| {
        m.iter().any(|m| {
            m["type"] == kind
                && (m["id"] == id.as_str() || m["event_id"] == id.as_str())
                && status.is_none_or(|s| m["status"] == s)
        })
    };
    let all_seen = stream
        .until(Duration::from_millis(1500), |m| {
            of_it(m, "event", None)
                && of_it(m, "delivery", Some("running"))
                && of_it(m, "delivery", Some("succeeded"))
        })
        .await;
    let took = sent.elapsed();
    assert!(all_seen, "B's stream after {took:?}:\n{}", stream.text);
    eprintln!("A's event, its claim and its success on B's stream after {took:?}");
    assert_eq!(
        b.metric("hookwire_deliveries_total").await,
        0.0,
        "A ran them, not B"
    );
    let event = stream
        .messages()
        .into_iter()
        .find(|m| m["type"] == "event" && m["id"] == id.as_str())
        .unwrap();
    assert_eq!(event["source"], "quick");
    assert_eq!(event["deliveries"], 1);
}
