//! The line between the instances on one database ([`crate::store::peers`]):
//! `LISTEN`/`NOTIFY` on one connection of each instance's own.
//!
//! - **Its own connection**, never one from the pool: a pooled connection
//!   goes back after each use (and would stop listening with it), and the
//!   line must neither wait for a connection ingest needs nor hold one.
//!   Lost, it is made again with back-off; meanwhile the dispatchers' own
//!   look at the queue (at least once a second) is the backstop. Whatever
//!   was said while it was down is missed: on reconnecting, the dispatcher
//!   is told to look at the queue once, and live-feed messages of that time
//!   are lost (the dashboard reads history from the API anyway).
//! - **Never inside a transaction.** `NOTIFY` takes a database-wide lock at
//!   commit, which would serialize every ingest behind it. Writes only
//!   raise a flag after their commit ([`Link::work_added`]); one task sends
//!   what is pending, in autocommit, all of it in one statement, at most
//!   once per [`FLUSH_GAP`]: the first signal after a quiet spell goes at
//!   once, the rest of a burst is coalesced. Ingest never waits for it.
//! - **Two channels.** `hookwire_work`: "work is due now", the payload
//!   being the sender's instance id. `hookwire_feed`: JSON, either
//!   `{"from": id, "messages": [...]}` — live-feed messages (ids, states,
//!   rule names; secrets masked; never a body), packed up to
//!   [`MAX_PAYLOAD`] bytes, below PostgreSQL's 8,000 — or
//!   `{"from": id, "listening": true}`: a dashboard there listens, so
//!   relay the feed for a while (an instance nobody watches sends none);
//!   `"hello": true` when a line opens, answered by the instances whose
//!   dashboards listen, so that one that starts later relays at once too.
//!   Each instance hears its own notifications too, and skips them by id.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{Notify, mpsc};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_postgres::{AsyncMessage, Client, Notification, Statement};

use super::connect::Target;
use super::{Pg, Res, db_err};
use crate::clock::now_ms;
use crate::ids::InstanceId;
use crate::store::StoreError;
use crate::store::peers::{Heard, LISTENING_REFRESH, Peers};

const WORK: &str = "hookwire_work";
const FEED: &str = "hookwire_feed";
/// At most one `NOTIFY` statement per instance this often: few enough that
/// their commit lock never matters, soon enough that another instance
/// starts new work well within a second.
const FLUSH_GAP: Duration = Duration::from_millis(50);
/// The largest payload sent; PostgreSQL refuses 8,000 bytes or more.
const MAX_PAYLOAD: usize = 7000;
/// A live-feed message longer than this is not relayed (room for the
/// envelope); today's messages are a few hundred bytes.
const MAX_MESSAGE: usize = MAX_PAYLOAD - 128;
/// Live-feed messages waiting to be sent; more are dropped.
const FEED_QUEUE: usize = 512;
/// Payloads of live feed per flush: with [`FLUSH_GAP`], at most about
/// 280 KB/s per instance however busy it is; the rest is dropped (a
/// dashboard shows a sample under such load, as a slow one does).
const FEED_PAYLOADS_PER_FLUSH: usize = 2;
/// Reconnecting waits this long at first, doubling up to [`RECONNECT_MAX`].
const RECONNECT_FIRST: Duration = Duration::from_millis(250);
const RECONNECT_MAX: Duration = Duration::from_secs(10);
/// A line quiet this long sends a statement, so that a dead network path is
/// noticed (the connection's `tcp_user_timeout` fails it) and not waited on.
const PING_EVERY: Duration = Duration::from_secs(30);
/// Signals heard and not yet taken; more are dropped (the queue is polled).
const HEARD_QUEUE: usize = 256;
/// Notifications read from the connection and not yet looked at.
const NOTES_QUEUE: usize = 1024;

/// One instance's side of the line; made with the store, silent until
/// [`Link::open`].
pub(super) struct Link {
    target: Target,
    pending: Arc<Pending>,
}

/// What waits to be said, and how long the others want the live feed.
#[derive(Default)]
struct Pending {
    work: AtomicBool,
    listening: AtomicBool,
    hello: AtomicBool,
    /// Until when someone here counts as listening to the feed (ms since
    /// the epoch), to answer a hello with.
    listened_until_ms: AtomicI64,
    /// Live-feed messages as JSON text, oldest first.
    feed: Mutex<VecDeque<String>>,
    /// Live-feed messages dropped since the last flush.
    dropped: AtomicU64,
    /// Until when another instance wants this one's live feed (ms since
    /// the epoch, this instance's clock).
    wanted_until_ms: AtomicI64,
    /// Rung when something waits to be said.
    ready: Notify,
}

impl Pending {
    fn feed(&self) -> std::sync::MutexGuard<'_, VecDeque<String>> {
        self.feed.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Says, with the next flush, that someone here listens, if anyone does.
    fn listening_again(&self) {
        if now_ms() < self.listened_until_ms.load(Ordering::Relaxed) {
            self.listening.store(true, Ordering::SeqCst);
            self.ready.notify_one();
        }
    }
}

/// How long a wish for the live feed holds, here and at the others.
fn listening_ttl_ms() -> i64 {
    i64::try_from((LISTENING_REFRESH * 3).as_millis()).unwrap_or(i64::MAX)
}

impl Link {
    pub(super) fn new(target: Target) -> Self {
        Self {
            target,
            pending: Arc::default(),
        }
    }

    /// Work was committed that is due now: the other instances are told
    /// with the next flush. Never waits.
    pub(super) fn work_added(&self) {
        // Rung once per flush however many commits raise it meanwhile.
        if !self.pending.work.swap(true, Ordering::SeqCst) {
            self.pending.ready.notify_one();
        }
    }

    /// Starts listening and sending, on a task of its own that ends when
    /// the returned [`Peers::heard`] is dropped.
    pub(super) fn open(&self, me: &InstanceId) -> Peers {
        let (heard, rx) = mpsc::channel(HEARD_QUEUE);
        let me = me.to_string();
        tokio::spawn(run(self.target.clone(), self.pending.clone(), me, heard));
        Peers {
            heard: rx,
            relay: Arc::new(FeedOut(self.pending.clone())),
        }
    }
}

/// The live feed, out to the other instances (see [`crate::bus::Relay`]).
struct FeedOut(Arc<Pending>);

impl crate::bus::Relay for FeedOut {
    fn wanted(&self) -> bool {
        now_ms() < self.0.wanted_until_ms.load(Ordering::Relaxed)
    }

    fn send(&self, message: &Value) {
        // Masked with this instance's secrets: the others know only theirs.
        let mut message = message.clone();
        crate::redact::json(&mut message);
        let text = message.to_string();
        let mut feed = self.0.feed();
        if text.len() > MAX_MESSAGE || feed.len() >= FEED_QUEUE {
            self.0.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        feed.push_back(text);
        drop(feed);
        self.0.ready.notify_one();
    }

    fn listening(&self) {
        self.0.listened_until_ms.store(
            now_ms().saturating_add(listening_ttl_ms()),
            Ordering::Relaxed,
        );
        self.0.listening.store(true, Ordering::SeqCst);
        self.0.ready.notify_one();
    }
}

/// Keeps the line open until `heard` is dropped: connects, listens, serves,
/// and after a failure connects again with back-off.
async fn run(target: Target, pending: Arc<Pending>, me: String, heard: mpsc::Sender<Heard>) {
    let mut backoff = RECONNECT_FIRST;
    // Said once per outage, not once per try.
    let mut down = false;
    loop {
        let connected = tokio::select! {
            c = connect(&target) => c,
            _ = heard.closed() => return,
        };
        match connected {
            Ok(mut line) => {
                if down {
                    tracing::info!("listening to the other instances again");
                }
                backoff = RECONNECT_FIRST;
                // Anything said before this connection listened is missed:
                // the dispatcher looks at the queue once, and the others are
                // asked whether anyone wants this instance's feed.
                let _ = heard.try_send(Heard::Work);
                pending.hello.store(true, Ordering::SeqCst);
                pending.ready.notify_one();
                pending.listening_again();
                let lost = tokio::select! {
                    served = serve(&mut line, &pending, &me, &heard) => match served {
                        Err(e) => e,
                        Ok(never) => match never {},
                    },
                    _ = heard.closed() => return,
                };
                tracing::warn!(error = %lost, "lost the connection that listens to the other instances; connecting again (new work is found by polling meanwhile)");
                down = true;
            }
            Err(e) if !down => {
                tracing::warn!(error = %e, "cannot listen to the other instances; trying again with back-off (new work is found by polling meanwhile)");
                down = true;
            }
            Err(e) => tracing::debug!(error = %e, "cannot listen to the other instances"),
        }
        let wait = backoff.mul_f64(0.75 + rand::random::<f64>() / 2.0);
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = heard.closed() => return,
        }
        backoff = (backoff * 2).min(RECONNECT_MAX);
    }
}

/// An open, listening connection.
struct Line {
    client: Client,
    /// Notifications, as the driver task reads them.
    notes: mpsc::Receiver<Notification>,
    /// The task that drives the connection: it ends, with the reason, when
    /// the connection does.
    driver: JoinHandle<Result<(), tokio_postgres::Error>>,
}

impl Drop for Line {
    fn drop(&mut self) {
        self.driver.abort();
    }
}

async fn connect(target: &Target) -> Res<Line> {
    let (client, connection) = target.config.connect(target.connector()?).await.pg()?;
    let (tx, notes) = mpsc::channel(NOTES_QUEUE);
    let line = Line {
        client,
        notes,
        driver: tokio::spawn(drive(connection, tx)),
    };
    line.client
        .batch_execute(&format!("LISTEN {WORK}; LISTEN {FEED}"))
        .await
        .pg()?;
    Ok(line)
}

/// Drives the connection (the client's statements go through it) and hands
/// on the notifications it reads; those the listener has no room for are
/// dropped rather than held in the server's queue.
async fn drive<S, T>(
    mut connection: tokio_postgres::Connection<S, T>,
    notes: mpsc::Sender<Notification>,
) -> Result<(), tokio_postgres::Error>
where
    S: AsyncRead + AsyncWrite + Unpin,
    T: AsyncRead + AsyncWrite + Unpin,
{
    loop {
        match std::future::poll_fn(|cx| connection.poll_message(cx)).await {
            Some(Ok(AsyncMessage::Notification(n))) => {
                let _ = notes.try_send(n);
            }
            // A notice: nothing to do with it.
            Some(Ok(_)) => {}
            Some(Err(e)) => return Err(e),
            None => return Ok(()),
        }
    }
}

/// Hears and says until the connection fails.
async fn serve(
    line: &mut Line,
    pending: &Pending,
    me: &str,
    heard: &mpsc::Sender<Heard>,
) -> Res<Infallible> {
    // One statement, so one transaction and one commit lock, per flush.
    let notify = line
        .client
        .prepare(
            "SELECT pg_notify(n.channel, n.payload) FROM unnest($1::text[], $2::text[]) AS n(channel, payload)",
        )
        .await
        .pg()?;
    let mut last_flush: Option<Instant> = None;
    // When the next flush goes, once something waits.
    let mut due: Option<Instant> = None;
    let mut ping = tokio::time::interval_at(Instant::now() + PING_EVERY, PING_EVERY);
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            note = line.notes.recv() => match note {
                Some(n) => hear(n.channel(), n.payload(), pending, me, heard),
                None => return Err(ended(&mut line.driver).await),
            },
            () = pending.ready.notified(), if due.is_none() => {
                due = Some(last_flush.map_or_else(Instant::now, |t| t + FLUSH_GAP));
            }
            () = tokio::time::sleep_until(due.unwrap_or_else(Instant::now)), if due.is_some() => {
                due = None;
                last_flush = Some(Instant::now());
                flush(&line.client, &notify, pending, me).await?;
            }
            _ = ping.tick() => {
                line.client.simple_query("SELECT 1").await.pg()?;
            }
        }
    }
}

/// Why the driver stopped.
async fn ended(driver: &mut JoinHandle<Result<(), tokio_postgres::Error>>) -> StoreError {
    match driver.await {
        Ok(Err(e)) => db_err(e),
        Ok(Ok(())) => StoreError::Unavailable("the server closed the connection".into()),
        Err(e) => StoreError::Unavailable(format!("the connection's task ended: {e}")),
    }
}

/// Acts on one notification: another instance's work or feed, or its
/// wish for this one's feed.
fn hear(channel: &str, payload: &str, pending: &Pending, me: &str, heard: &mpsc::Sender<Heard>) {
    match channel {
        WORK if payload != me => {
            let _ = heard.try_send(Heard::Work);
        }
        FEED => {
            let Ok(mut said) = serde_json::from_str::<Value>(payload) else {
                tracing::debug!(
                    channel = FEED,
                    "a notification that is not JSON was ignored"
                );
                return;
            };
            if said["from"] == me {
                return;
            }
            if said["listening"] == true {
                pending.wanted_until_ms.store(
                    now_ms().saturating_add(listening_ttl_ms()),
                    Ordering::Relaxed,
                );
            }
            if said["hello"] == true {
                pending.listening_again();
            }
            if let Some(Value::Array(messages)) = said.get_mut("messages").map(Value::take)
                && !messages.is_empty()
            {
                let _ = heard.try_send(Heard::Feed(messages));
            }
        }
        _ => {}
    }
}

/// Says everything pending in one autocommit statement.
async fn flush(client: &Client, notify: &Statement, pending: &Pending, me: &str) -> Res<()> {
    let work = pending.work.swap(false, Ordering::SeqCst);
    let listening = pending.listening.swap(false, Ordering::SeqCst);
    let hello = pending.hello.swap(false, Ordering::SeqCst);
    let (feed, more) = feed_payloads(pending, me);
    if more {
        // The rest goes with the next flush.
        pending.ready.notify_one();
    }
    let dropped = pending.dropped.swap(0, Ordering::Relaxed);
    if dropped > 0 {
        tracing::debug!(
            dropped,
            "live-feed messages not relayed to the other instances: more than the line carries"
        );
    }
    let mut channels = Vec::new();
    let mut payloads = Vec::new();
    if work {
        channels.push(WORK);
        payloads.push(me.to_owned());
    }
    if listening || hello {
        let mut presence = serde_json::json!({ "from": me });
        for (flag, set) in [("listening", listening), ("hello", hello)] {
            if set {
                presence[flag] = true.into();
            }
        }
        channels.push(FEED);
        payloads.push(presence.to_string());
    }
    for p in feed {
        channels.push(FEED);
        payloads.push(p);
    }
    if channels.is_empty() {
        return Ok(());
    }
    let sent = client.execute(notify, &[&channels, &payloads]).await.pg();
    if sent.is_err() {
        // Said again once the line is back; the feed of the moment is lost.
        if work {
            pending.work.store(true, Ordering::SeqCst);
        }
        if listening {
            pending.listening.store(true, Ordering::SeqCst);
        }
        if hello {
            pending.hello.store(true, Ordering::SeqCst);
        }
    }
    sent.map(|_| ())
}

/// Up to [`FEED_PAYLOADS_PER_FLUSH`] payloads of queued live-feed
/// messages, each at most [`MAX_PAYLOAD`] bytes; and whether more wait.
fn feed_payloads(pending: &Pending, me: &str) -> (Vec<String>, bool) {
    let head = format!("{{\"from\":{},\"messages\":[", Value::from(me));
    let mut queue = pending.feed();
    let mut payloads = Vec::new();
    while payloads.len() < FEED_PAYLOADS_PER_FLUSH && !queue.is_empty() {
        let mut payload = head.clone();
        let mut first = true;
        while let Some(m) = queue.pop_front() {
            // A message alone always fits: longer ones were never queued.
            if !first && payload.len() + 1 + m.len() + 2 > MAX_PAYLOAD {
                queue.push_front(m);
                break;
            }
            if !first {
                payload.push(',');
            }
            payload.push_str(&m);
            first = false;
        }
        payload.push_str("]}");
        payloads.push(payload);
    }
    (payloads, !queue.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bus::Relay as _;
    use crate::store::Store as _;
    use crate::store::conformance::one_delivery;
    use crate::store::postgres::PostgresStore;
    use crate::store::postgres::testing::database;

    #[test]
    fn feed_payloads_stay_under_the_notify_limit_and_keep_order() {
        let out = FeedOut(Arc::new(Pending::default()));
        let pad = "x".repeat(1000);
        for n in 0..20 {
            out.send(&serde_json::json!({ "type": "delivery", "n": n, "pad": pad }));
        }
        out.send(&serde_json::json!({ "pad": "y".repeat(MAX_PAYLOAD) }));
        assert_eq!(
            out.0.dropped.load(Ordering::Relaxed),
            1,
            "too long to relay"
        );
        let mut seen = Vec::new();
        loop {
            let (payloads, more) = feed_payloads(&out.0, "ins_01");
            assert!(payloads.len() <= FEED_PAYLOADS_PER_FLUSH);
            for p in &payloads {
                assert!(p.len() <= MAX_PAYLOAD, "{}", p.len());
                let v: Value = serde_json::from_str(p).unwrap();
                assert_eq!(v["from"], "ins_01");
                for m in v["messages"].as_array().unwrap() {
                    seen.push(m["n"].as_u64().unwrap());
                }
            }
            if !more {
                break;
            }
        }
        assert_eq!(seen, (0..20).collect::<Vec<_>>());
    }

    #[test]
    fn what_an_instance_says_itself_it_does_not_hear() {
        let pending = Pending::default();
        let (tx, mut rx) = mpsc::channel(8);
        let said = |from: &str, mut body: Value| {
            body["from"] = from.into();
            body.to_string()
        };
        let listening = serde_json::json!({ "listening": true });
        let feed = serde_json::json!({ "messages": [{ "type": "event" }] });
        for from in ["ins_me", "ins_other"] {
            hear(WORK, from, &pending, "ins_me", &tx);
            hear(FEED, &said(from, feed.clone()), &pending, "ins_me", &tx);
            let wanted = FeedOut(Arc::new(Pending::default()));
            hear(
                FEED,
                &said(from, listening.clone()),
                &wanted.0,
                "ins_me",
                &tx,
            );
            assert_eq!(wanted.wanted(), from != "ins_me", "{from}");
        }
        hear(FEED, "not json", &pending, "ins_me", &tx);
        // A hello is answered only by an instance where someone listens.
        let hello = said("ins_other", serde_json::json!({ "hello": true }));
        let quiet = FeedOut(Arc::new(Pending::default()));
        hear(FEED, &hello, &quiet.0, "ins_me", &tx);
        assert!(!quiet.0.listening.load(Ordering::SeqCst));
        quiet.listening();
        quiet.0.listening.store(false, Ordering::SeqCst);
        hear(FEED, &hello, &quiet.0, "ins_me", &tx);
        assert!(quiet.0.listening.load(Ordering::SeqCst));
        assert_eq!(rx.try_recv().unwrap(), Heard::Work);
        assert_eq!(
            rx.try_recv().unwrap(),
            Heard::Feed(vec![serde_json::json!({ "type": "event" })])
        );
        assert!(rx.try_recv().is_err());
    }

    /// The next thing heard, within 5 s.
    async fn next(p: &mut Peers) -> Heard {
        tokio::time::timeout(Duration::from_secs(5), p.heard.recv())
            .await
            .unwrap()
            .unwrap()
    }

    /// Two stores on one database, as two instances: new work on one is
    /// heard by the other at once; the feed flows only once the other
    /// listens, and only one way.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn instances_hear_each_others_work_and_feed() {
        let url = database();
        let (a, b) = (
            PostgresStore::open(&url).unwrap(),
            PostgresStore::open(&url).unwrap(),
        );
        let (ida, idb) = (InstanceId::new(), InstanceId::new());
        let mut pa = a.peers(&ida).unwrap();
        let mut pb = b.peers(&idb).unwrap();
        // Each looks at the queue once its line is open.
        assert_eq!(next(&mut pa).await, Heard::Work);
        assert_eq!(next(&mut pb).await, Heard::Work);

        let started = std::time::Instant::now();
        a.ingest(one_delivery().0).await.unwrap();
        assert_eq!(next(&mut pb).await, Heard::Work);
        let took = started.elapsed();
        eprintln!("work committed on A heard on B after {took:?}");
        assert!(took < Duration::from_millis(500), "{took:?}");

        assert!(!pa.relay.wanted(), "nobody listens to A's feed yet");
        pb.relay.listening();
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while !pa.relay.wanted() {
            assert!(
                std::time::Instant::now() < deadline,
                "A never heard B listen"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(!pb.relay.wanted(), "A does not listen");
        pa.relay
            .send(&serde_json::json!({ "type": "event", "id": "evt_1" }));
        pa.relay
            .send(&serde_json::json!({ "type": "delivery", "id": "dlv_1" }));
        let mut got = Vec::new();
        while got.len() < 2 {
            match next(&mut pb).await {
                Heard::Feed(m) => got.extend(m),
                Heard::Work => {}
            }
        }
        assert_eq!(got[0]["id"], "evt_1");
        assert_eq!(got[1]["id"], "dlv_1");
        // A never hears its own.
        assert!(pa.heard.try_recv().is_err());

        // An instance that starts after B listens learns it from B's
        // answer to its hello.
        let c = PostgresStore::open(&url).unwrap();
        let pc = c.peers(&InstanceId::new()).unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while !pc.relay.wanted() {
            assert!(
                std::time::Instant::now() < deadline,
                "C never heard that B listens"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// The line is made again after its connection is killed: the
    /// dispatcher is told to look at the queue once (what was said meanwhile
    /// is missed), and new work is heard again.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_lost_line_is_made_again() {
        let url = database();
        let (a, b) = (
            PostgresStore::open(&url).unwrap(),
            PostgresStore::open(&url).unwrap(),
        );
        let mut pa = a.peers(&InstanceId::new()).unwrap();
        let mut pb = b.peers(&InstanceId::new()).unwrap();
        // Both lines open.
        assert_eq!(next(&mut pa).await, Heard::Work);
        assert_eq!(next(&mut pb).await, Heard::Work);
        // Both lines: the connections whose last statement listened or notified.
        let killed = a
            .client()
            .await
            .unwrap()
            .query_one(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
                 WHERE datname = current_database() AND pid <> pg_backend_pid()
                   AND (query LIKE 'LISTEN%' OR query LIKE '%pg_notify%')",
                &[],
            )
            .await
            .unwrap()
            .get::<_, i64>(0);
        assert_eq!(killed, 2);
        let started = std::time::Instant::now();
        assert_eq!(
            next(&mut pb).await,
            Heard::Work,
            "look once after reconnecting"
        );
        eprintln!("line made again after {:?}", started.elapsed());
        // A's line may still be connecting again: its flag waits for it.
        a.ingest(one_delivery().0).await.unwrap();
        assert_eq!(next(&mut pb).await, Heard::Work);
    }
}
