//! The daemon: one listener for webhooks, health checks and the admin API,
//! plus the background rule watcher. Connections are served by hyper directly
//! so header size and read timeouts can be bounded (SPEC §5: 431 over 64 KiB).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use axum::Router;
use axum::extract::ConnectInfo;
use hyper_util::rt::{TokioIo, TokioTimer};
use ipnet::IpNet;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt as _;

use crate::actions::Runner;
use crate::admin::AdminState;
use crate::dispatch::{Dispatcher, Settings};
use crate::ids::InstanceId;
use crate::ingest::IngestState;
use crate::ingest::guard::RateLimits;
use crate::rules::LoadOptions;
use crate::store::SharedStore;
use crate::store::peers::{Heard, LISTENING_REFRESH, Peers};
use crate::supervise::supervise;

use crate::watch::LiveRules;

/// hyper's read buffer for a request head. It counts the request line and
/// the headers; the slack over [`crate::ingest::MAX_HEADER_BYTES`] covers the
/// request line, so that ingest sees every header section up to its limit
/// and answers 431 itself, exactly.
const HEAD_BUFFER_BYTES: usize = crate::ingest::MAX_HEADER_BYTES + 4 * 1024;
/// A client that has not sent its whole header section by then is dropped (slowloris).
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a connection over `--max-connections` waits for a free slot
/// before it is answered 503. Slots free within [`HEADER_READ_TIMEOUT`] (or
/// the body timeout) even when slow clients hold them all, and senders such
/// as GitHub give up after 10 s, so waiting a little serves most of them.
const CONNECTION_WAIT: Duration = Duration::from_secs(5);

/// What `serve` needs, already parsed and validated by the CLI.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    pub listen: String,
    pub rules: PathBuf,
    pub database: String,
    pub admin_token: Option<String>,
    pub smtp_url: Option<String>,
    pub smtp_from: String,
    pub workers: usize,
    pub retention: Duration,
    pub max_body: u64,
    pub trusted_proxies: Vec<IpNet>,
    pub insecure_admin: bool,
    pub shutdown_grace: Duration,
    /// PEM certificate chain and private key: serve HTTPS instead of HTTP.
    pub tls: Option<(PathBuf, PathBuf)>,
    /// Connections served at once; each buffers at most one body, so this
    /// also bounds the memory bodies take (`max_connections × max_body`).
    pub max_connections: usize,
    /// How long a claim lasts without a heartbeat (`--lease`).
    pub lease: Duration,
    /// Connections to PostgreSQL at most (`--database-pool`).
    pub database_pool: usize,
}

/// The admin API and health checks, and every other path to ingest.
pub fn router(admin: Arc<AdminState>, ingest: Arc<IngestState>) -> Router {
    let ingest = Router::new()
        .fallback(crate::ingest::handle)
        .with_state(ingest);
    crate::admin::router(admin.clone())
        .with_state(admin)
        .fallback_service(ingest)
}

/// Runs until SIGINT/SIGTERM or `cancel`.
pub async fn serve(opts: ServeOptions, cancel: CancellationToken) -> anyhow::Result<()> {
    // A bad certificate is a start-up error, before anything listens.
    let tls = match &opts.tls {
        Some((cert, key)) => Some(tls_acceptor(cert, key)?),
        None => None,
    };
    let listener = TcpListener::bind(&opts.listen)
        .await
        .with_context(|| format!("cannot listen on {}", opts.listen))?;
    let addr = listener.local_addr()?;
    if opts.admin_token.is_none() && !addr.ip().is_loopback() && !opts.insecure_admin {
        anyhow::bail!(
            "refusing to listen on {addr} without --admin-token: the admin API would be open to the network \
             (set --admin-token, or --insecure-admin to accept that it answers loopback clients only)"
        );
    }
    if !opts.rules.is_dir() {
        anyhow::bail!(
            "rules directory {} does not exist (create it or pass --rules DIR)",
            opts.rules.display()
        );
    }
    crate::redact::register(&opts.admin_token);
    if let Some(url) = &opts.smtp_url {
        crate::redact::register_url(url);
    }
    let store = crate::store::open_with(&opts.database, opts.database_pool).with_context(|| {
        format!(
            "cannot open database {}",
            crate::store::shown_url(&opts.database)
        )
    })?;
    let load_opts = LoadOptions {
        smtp_configured: opts.smtp_url.is_some(),
    };
    let live = Arc::new(LiveRules::new(
        vec![opts.rules.clone()],
        crate::rules::process_env(),
        load_opts,
    ));
    // The first watcher starts here, so that a directory that cannot be
    // watched is a start-up error; a restarted one is made afresh.
    let first_watcher = crate::watch::watcher(live.clone(), cancel.clone())
        .with_context(|| format!("cannot watch {}", opts.rules.display()))?;

    let runner = Runner::new(opts.smtp_url.as_deref(), &opts.smtp_from)?;
    let instance = InstanceId::new();
    crate::telemetry::instance_started(instance.as_str(), opts.lease);
    // Other instances on a shared database: their new work wakes this
    // dispatcher, and the live feed flows both ways.
    let peers = store.peers(&instance);
    let stream = match &peers {
        Some(p) => crate::bus::Stream::relayed(p.relay.clone()),
        None => crate::bus::Stream::default(),
    };
    let dispatcher = Arc::new(Dispatcher::new(
        store.clone(),
        live.clone(),
        Settings {
            workers: opts.workers,
            instance: instance.clone(),
            lease: opts.lease,
        },
        runner,
        stream.clone(),
    ));
    let tasks = crate::supervise::Tasks::default();
    let ingest = Arc::new(IngestState {
        rules: live.clone(),
        store: store.clone(),
        rate_limits: RateLimits::default(),
        max_body: opts.max_body,
        trusted_proxies: opts.trusted_proxies.clone(),
        wake: dispatcher.wake.clone(),
        stream: stream.clone(),
    });
    let hearing = peers.map(|p| {
        tokio::spawn(hear_peers(
            p,
            dispatcher.wake.clone(),
            stream.clone(),
            cancel.clone(),
        ))
    });
    let admin = Arc::new(AdminState {
        rules: live.clone(),
        store: store.clone(),
        admin_token: opts.admin_token.clone(),
        wake: dispatcher.wake.clone(),
        stream,
        tasks: tasks.clone(),
        targets: dispatcher.targets.clone(),
        instance,
    });
    // The dispatcher outlives the listener: it stops after requests in flight are answered.
    let stop_dispatch = CancellationToken::new();
    let grace = opts.shutdown_grace;
    let dispatching = tokio::spawn(supervise(
        "dispatcher",
        tasks.clone(),
        stop_dispatch.clone(),
        {
            let stop = stop_dispatch.clone();
            move || Box::pin(dispatcher.clone().run(stop.clone(), grace))
        },
    ));
    let sampling = tokio::spawn(supervise("sampler", tasks.clone(), cancel.clone(), {
        let (store, cancel) = (store.clone(), cancel.clone());
        move || Box::pin(sample_loop(store.clone(), cancel.clone()))
    }));
    let pruning = tokio::spawn(supervise("pruner", tasks.clone(), cancel.clone(), {
        let (cancel, retention) = (cancel.clone(), opts.retention);
        move || Box::pin(prune_loop(store.clone(), retention, cancel.clone()))
    }));
    let watching = tokio::spawn(supervise("watcher", tasks.clone(), cancel.clone(), {
        let (live, cancel) = (live.clone(), cancel.clone());
        let mut first = Some(first_watcher);
        move || match first.take() {
            Some(w) => w,
            None => match crate::watch::watcher(live.clone(), cancel.clone()) {
                Ok(w) => w,
                // Tried again after the supervisor's back-off.
                Err(e) => Box::pin(async move { panic!("cannot watch the rules again: {e}") }),
            },
        }
    }));
    tracing::info!(listen = %addr, rules = %opts.rules.display(), database = %crate::store::shown_url(&opts.database), "hookwire listening");
    // Tests and scripts read the bound address from this line.
    let scheme = if tls.is_some() { "https" } else { "http" };
    println!("hookwire listening on {scheme}://{addr}");
    // A unit of `Type=notify` is started once the address is bound, the rules
    // loaded and the store open, so that whatever is ordered after it finds
    // the daemon answering. Without `NOTIFY_SOCKET` (not under systemd) this
    // does nothing.
    if let Err(e) = sd_notify::notify(false, &[sd_notify::NotifyState::Ready]) {
        tracing::warn!(error = %e, "cannot tell systemd that hookwire is ready");
    }

    accept_loop(
        listener,
        tls,
        router(admin, ingest),
        Limits {
            connections: opts.max_connections.max(1),
            grace: opts.shutdown_grace,
        },
        cancel.clone(),
    )
    .await;
    cancel.cancel();
    stop_dispatch.cancel();
    let _ = dispatching.await;
    let _ = pruning.await;
    let _ = sampling.await;
    let _ = watching.await;
    if let Some(h) = hearing {
        let _ = h.await;
    }
    tracing::info!("hookwire stopped");
    Ok(())
}

/// Acts on what the other instances say until `cancel`: their new work
/// wakes the dispatcher, their live feed goes to this instance's listeners;
/// and while anyone listens here, the others are reminded to relay theirs.
async fn hear_peers(
    mut peers: Peers,
    wake: Arc<tokio::sync::Notify>,
    stream: crate::bus::Stream,
    cancel: CancellationToken,
) {
    let mut remind = tokio::time::interval(LISTENING_REFRESH);
    loop {
        tokio::select! {
            heard = peers.heard.recv() => match heard {
                Some(Heard::Work) => wake.notify_one(),
                Some(Heard::Feed(messages)) => {
                    for m in messages {
                        stream.publish_remote(m);
                    }
                }
                None => break,
            },
            _ = remind.tick() => {
                if stream.listeners() > 0 {
                    peers.relay.listening();
                }
            }
            _ = cancel.cancelled() => break,
        }
    }
}

/// How often finished events older than `--retention` are pruned.
const PRUNE_EVERY: Duration = Duration::from_secs(600);

async fn prune_loop(store: SharedStore, retention: Duration, cancel: CancellationToken) {
    loop {
        let before =
            crate::clock::now_ms() - i64::try_from(retention.as_millis()).unwrap_or(i64::MAX);
        let started = std::time::Instant::now();
        // A pass over a large backlog takes a while; shutdown stops it between batches.
        let result = tokio::select! {
            r = store.prune(before) => r,
            _ = cancel.cancelled() => break,
        };
        match result {
            Ok(pruned) => crate::telemetry::PrunePass {
                events: pruned.events,
                dedup_keys: pruned.dedup_keys,
                batches: pruned.batches,
                longest_batch: pruned.longest_batch,
                took: started.elapsed(),
            }
            .emit(),
            Err(e) => tracing::warn!(error = %e, "pruning failed; will try again"),
        }
        // A short retention is pruned at least twice per retention period.
        let every = (retention / 2).clamp(Duration::from_secs(1), PRUNE_EVERY);
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = cancel.cancelled() => break,
        }
    }
}

/// How often the queue depth is read for the dashboard's chart (and the gauge).
const SAMPLE_EVERY: Duration = Duration::from_secs(10);

async fn sample_loop(store: SharedStore, cancel: CancellationToken) {
    loop {
        if let Ok(depth) = store.queue_depth().await {
            crate::telemetry::queue_depth(depth);
        }
        tokio::select! {
            _ = tokio::time::sleep(SAMPLE_EVERY) => {}
            _ = cancel.cancelled() => break,
        }
    }
}

/// rustls (ring provider, TLS 1.2 and 1.3, HTTP/1.1 over ALPN) from PEM files.
pub fn tls_acceptor(
    cert: &std::path::Path,
    key: &std::path::Path,
) -> anyhow::Result<tokio_rustls::TlsAcceptor> {
    use rustls::pki_types::pem::PemObject as _;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| anyhow::anyhow!("cannot read the certificate {}: {e}", cert.display()))?;
    if certs.is_empty() {
        anyhow::bail!("no certificate in {}", cert.display());
    }
    let key = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| anyhow::anyhow!("cannot read the private key {}: {e}", key.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .and_then(|b| b.with_no_client_auth().with_single_cert(certs, key))
        .map_err(|e| {
            anyhow::anyhow!("the certificate and key do not make a TLS configuration: {e}")
        })?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

struct Limits {
    connections: usize,
    grace: Duration,
}

/// The 503 a connection over the limit gets, written before anything is read.
fn busy_answer() -> Vec<u8> {
    let body = r#"{"error": "too many connections at once; retry shortly"}"#;
    format!(
        "HTTP/1.1 503 Service Unavailable\r\nretry-after: 1\r\nx-request-id: {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        crate::ids::RequestId::new(),
        body.len()
    )
    .into_bytes()
}

async fn accept_loop(
    listener: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    router: Router,
    limits: Limits,
    cancel: CancellationToken,
) {
    let grace = limits.grace;
    // Connections served at once, and connections waiting for one of them:
    // both bounded, so file descriptors and buffered bodies are too.
    let slots = Arc::new(tokio::sync::Semaphore::new(limits.connections));
    let waiting = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let max_waiting = limits.connections;
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .max_buf_size(HEAD_BUFFER_BYTES)
        .header_read_timeout(HEADER_READ_TIMEOUT);
    let shutdown = shutdown_signal(cancel.clone());
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(x) => x,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let permit = slots.clone().try_acquire_owned().ok();
        let (slots, waiting) = (slots.clone(), waiting.clone());
        let router = router.clone();
        let service =
            hyper::service::service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
                req.extensions_mut().insert(ConnectInfo::<SocketAddr>(peer));
                router.clone().oneshot(req.map(axum::body::Body::new))
            });
        let watcher = graceful.watcher();
        let builder = builder.clone();
        let tls = tls.clone();
        tokio::spawn(async move {
            let _permit = match permit {
                Some(p) => p,
                None => match wait_for_slot(&slots, &waiting, max_waiting).await {
                    Some(p) => p,
                    None => {
                        crate::telemetry::connection_refused(peer);
                        // A TLS client would read plain text as garbage: it only sees the close.
                        if tls.is_none() {
                            use tokio::io::AsyncWriteExt as _;
                            let mut stream = stream;
                            let _ = tokio::time::timeout(Duration::from_secs(1), async {
                                let _ = stream.write_all(&busy_answer()).await;
                                let _ = stream.shutdown().await;
                            })
                            .await;
                        }
                        return;
                    }
                },
            };
            let served = match tls {
                None => {
                    let conn = builder.serve_connection(TokioIo::new(stream), service);
                    watcher.watch(conn).await
                }
                Some(tls) => {
                    // The handshake is bounded like the header section (slowloris).
                    let stream =
                        match tokio::time::timeout(HEADER_READ_TIMEOUT, tls.accept(stream)).await {
                            Ok(Ok(s)) => s,
                            Ok(Err(e)) => {
                                tracing::debug!(%peer, error = %e, "TLS handshake failed");
                                return;
                            }
                            Err(_) => {
                                tracing::debug!(%peer, "TLS handshake timed out");
                                return;
                            }
                        };
                    let conn = builder.serve_connection(TokioIo::new(stream), service);
                    watcher.watch(conn).await
                }
            };
            if let Err(e) = served {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    tracing::info!("shutting down: finishing requests in flight");
    if tokio::time::timeout(grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            grace_ms = grace.as_millis() as u64,
            "requests still in flight after the shutdown grace period"
        );
    }
}

/// A slot for a connection over the limit: waits up to [`CONNECTION_WAIT`]
/// unless too many already wait.
async fn wait_for_slot(
    slots: &Arc<tokio::sync::Semaphore>,
    waiting: &std::sync::atomic::AtomicUsize,
    max_waiting: usize,
) -> Option<tokio::sync::OwnedSemaphorePermit> {
    use std::sync::atomic::Ordering;
    if waiting.fetch_add(1, Ordering::SeqCst) >= max_waiting {
        waiting.fetch_sub(1, Ordering::SeqCst);
        return None;
    }
    let got = tokio::time::timeout(CONNECTION_WAIT, slots.clone().acquire_owned()).await;
    waiting.fetch_sub(1, Ordering::SeqCst);
    got.ok().and_then(Result::ok)
}

async fn shutdown_signal(cancel: CancellationToken) {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
        _ = cancel.cancelled() => {},
    }
}
