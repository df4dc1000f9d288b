//! The benchmark's ceiling: the least a webhook receiver can do with the same
//! payload. It reads the body, parses it into a `serde_json::Value`, compares
//! three fields and answers 200. Nothing is verified, stored or traced.
//!
//! It doubles as the benchmark's HTTP receiver for hookwire's deliveries:
//! every POST is counted, and `GET /count` answers how many arrived, so
//! deliveries are counted where they land rather than from hookwire's logs.
//!
//! Built only by `bench/run` (`--features bench`), with hookwire's release
//! profile and allocator.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;

#[cfg(feature = "mimalloc")]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Default)]
struct Counts {
    received: AtomicU64,
    matched: AtomicU64,
}

async fn receive(State(counts): State<Arc<Counts>>, body: Bytes) -> StatusCode {
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
    StatusCode::OK
}

async fn count(State(counts): State<Arc<Counts>>) -> String {
    format!(
        "{} {}\n",
        counts.received.load(Ordering::Relaxed),
        counts.matched.load(Ordering::Relaxed)
    )
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let listen = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:0".to_owned());
    let listener = tokio::net::TcpListener::bind(&listen).await?;
    let app = Router::new()
        .route("/count", get(count))
        .fallback(receive)
        .with_state(Arc::new(Counts::default()));
    println!("ceiling listening on http://{}", listener.local_addr()?);
    axum::serve(listener, app).await
}
