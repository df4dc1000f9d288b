//! The benchmark's ceilings, receiver and open-loop load generator.
//!
//! - `hookwire-ceiling [ADDR]`: the least a webhook receiver can do with the
//!   same payload. It reads the body, parses it into a `serde_json::Value`,
//!   compares three fields and answers 200. Nothing is verified, stored or
//!   traced.
//! - `hookwire-ceiling durable DB [ADDR]`: the same, plus the raw body
//!   inserted into SQLite before the 200, with hookwire's pragmas (WAL,
//!   `synchronous=FULL`) and group commit (one writer thread, every request
//!   waiting meanwhile shares the next transaction): the physical limit of
//!   durable ingest on this disk.
//! - Either doubles as the receiver of hookwire's deliveries: every POST is
//!   counted and, when its JSON body has an `id` (the bench's rules render
//!   the request's `X-GitHub-Delivery` there), recorded with its arrival
//!   time, so that deliveries are counted where they land: distinct,
//!   duplicated, and when. `GET /count` answers `received matched distinct
//!   duplicates`; `GET /ids` one `ID ARRIVAL_US` line per distinct id.
//! - `hookwire-ceiling load URL RATE SECONDS BODY OUT [HEADER]...`: an open
//!   loop: RATE requests per second for SECONDS, each sent on its own
//!   schedule whether or not earlier ones were answered (wrk's closed loop
//!   would wait, and hide queueing), each with a unique `X-GitHub-Delivery`;
//!   writes `ID SENT_US STATUS` lines to OUT (status 0: no answer).
//!
//! Built only by `bench/run` (`--features bench`), with hookwire's release
//! profile and allocator.

use std::collections::HashMap;
use std::io::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use tokio::sync::{mpsc, oneshot};

#[cfg(feature = "mimalloc")]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

type Failure = Box<dyn std::error::Error + Send + Sync>;

#[derive(Default)]
struct Counts {
    received: AtomicU64,
    matched: AtomicU64,
    /// Distinct ids with their first arrival (µs since the epoch) and how
    /// many times each came.
    ids: Mutex<HashMap<String, (u64, u32)>>,
}

struct App {
    counts: Counts,
    /// The durable ceiling's writer, when there is one.
    store: Option<mpsc::Sender<(Bytes, oneshot::Sender<bool>)>>,
}

fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

async fn receive(State(app): State<Arc<App>>, body: Bytes) -> StatusCode {
    let at = now_us();
    let counts = &app.counts;
    counts.received.fetch_add(1, Ordering::Relaxed);
    let Ok(payload) = serde_json::from_slice::<serde_json::Value>(&body) else {
        return StatusCode::BAD_REQUEST;
    };
    let matched = payload["ref"] == "refs/heads/never"
        && payload["repository"]["full_name"] == "Codertocat/Hello-World"
        && payload["deleted"] == false;
    if matched {
        counts.matched.fetch_add(1, Ordering::Relaxed);
    }
    if let Some(id) = payload["id"].as_str() {
        let mut ids = counts.ids.lock().unwrap_or_else(|p| p.into_inner());
        ids.entry(id.to_owned()).or_insert((at, 0)).1 += 1;
    }
    if let Some(store) = &app.store {
        let (done, stored) = oneshot::channel();
        if store.send((body, done)).await.is_err() || stored.await != Ok(true) {
            return StatusCode::SERVICE_UNAVAILABLE;
        }
    }
    StatusCode::OK
}

async fn count(State(app): State<Arc<App>>) -> String {
    let c = &app.counts;
    let ids = c.ids.lock().unwrap_or_else(|p| p.into_inner());
    let duplicates: u64 = ids.values().map(|(_, n)| u64::from(n - 1)).sum();
    format!(
        "{} {} {} {duplicates}\n",
        c.received.load(Ordering::Relaxed),
        c.matched.load(Ordering::Relaxed),
        ids.len(),
    )
}

async fn ids(State(app): State<Arc<App>>) -> String {
    let ids = app.counts.ids.lock().unwrap_or_else(|p| p.into_inner());
    let mut out = String::with_capacity(ids.len() * 32);
    for (id, (at, _)) in ids.iter() {
        out.push_str(&format!("{id} {at}\n"));
    }
    out
}

/// The durable ceiling's writer: waits for one body, takes every other one
/// already waiting (up to 512), inserts them in one transaction, commits,
/// and answers them all.
fn writer(
    path: &str,
    mut rx: mpsc::Receiver<(Bytes, oneshot::Sender<bool>)>,
) -> Result<(), Failure> {
    let mut conn = rusqlite::Connection::open(path)?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.execute_batch(
        "PRAGMA synchronous = FULL;
         CREATE TABLE IF NOT EXISTS events (id INTEGER PRIMARY KEY, body BLOB NOT NULL)",
    )?;
    let mut batch = Vec::with_capacity(512);
    while let Some(first) = rx.blocking_recv() {
        batch.push(first);
        while batch.len() < 512 {
            match rx.try_recv() {
                Ok(next) => batch.push(next),
                Err(_) => break,
            }
        }
        let committed = (|| -> rusqlite::Result<()> {
            let tx = conn.transaction()?;
            {
                let mut insert = tx.prepare_cached("INSERT INTO events (body) VALUES (?1)")?;
                for (body, _) in &batch {
                    insert.execute([body.as_ref()])?;
                }
            }
            tx.commit()
        })()
        .is_ok();
        for (_, done) in batch.drain(..) {
            let _ = done.send(committed);
        }
    }
    Ok(())
}

async fn serve(listen: &str, durable: Option<String>) -> Result<(), Failure> {
    let store = durable.map(|path| {
        let (tx, rx) = mpsc::channel(4096);
        std::thread::spawn(move || {
            if let Err(e) = writer(&path, rx) {
                eprintln!("durable ceiling: {e}");
                std::process::exit(1);
            }
        });
        tx
    });
    let listener = tokio::net::TcpListener::bind(listen).await?;
    let app = Router::new()
        .route("/count", get(count))
        .route("/ids", get(ids))
        .fallback(receive)
        .with_state(Arc::new(App {
            counts: Counts::default(),
            store,
        }));
    println!("ceiling listening on http://{}", listener.local_addr()?);
    axum::serve(listener, app).await?;
    Ok(())
}

/// The open-loop generator (see the module's comment).
async fn load(args: &[String]) -> Result<(), Failure> {
    let [url, rate, seconds, body, out, headers @ ..] = args else {
        return Err("usage: load URL RATE SECONDS BODY OUT [HEADER: VALUE]...".into());
    };
    let rate: f64 = rate.parse()?;
    let seconds: f64 = seconds.parse()?;
    let body = Bytes::from(std::fs::read(body)?);
    let mut map = reqwest::header::HeaderMap::new();
    for h in headers {
        let (k, v) = h.split_once(':').ok_or("a header is `Name: value`")?;
        map.insert(
            reqwest::header::HeaderName::from_bytes(k.trim().as_bytes())?,
            v.trim().parse()?,
        );
    }
    let client = reqwest::Client::builder()
        .default_headers(map)
        .pool_max_idle_per_host(512)
        .timeout(Duration::from_secs(30))
        .build()?;
    let total = (rate * seconds) as u64;
    let every = Duration::from_secs_f64(1.0 / rate);
    let start = tokio::time::Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for n in 0..total {
        tokio::time::sleep_until(start + every.mul_f64(n as f64)).await;
        let (client, url, body) = (client.clone(), url.clone(), body.clone());
        tasks.spawn(async move {
            let id = format!("ol-{n}");
            let sent = now_us();
            let status = client
                .post(&url)
                .header("X-GitHub-Delivery", &id)
                .body(body)
                .send()
                .await
                .map_or(0, |r| r.status().as_u16());
            (id, sent, status)
        });
    }
    let mut lines = Vec::with_capacity(total as usize);
    while let Some(done) = tasks.join_next().await {
        lines.push(done?);
    }
    let mut f = std::io::BufWriter::new(std::fs::File::create(out)?);
    for (id, sent, status) in lines {
        writeln!(f, "{id} {sent} {status}")?;
    }
    f.flush()?;
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), Failure> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("load") => load(&args[1..]).await,
        Some("durable") => {
            let db = args.get(1).cloned().ok_or("usage: durable DB [ADDR]")?;
            let listen = args.get(2).map_or("127.0.0.1:0", String::as_str);
            serve(listen, Some(db)).await
        }
        other => serve(other.unwrap_or("127.0.0.1:0"), None).await,
    }
}
