//! Batching for the writes many tasks of one instance make at once (ingest
//! and finishes): callers queue their item and wait for its answer; a few
//! worker tasks take whatever is queued, up to a limit, and write it in one
//! transaction. While some workers write, another gathers the next batch,
//! so the batches grow with the load and a lone item waits for no one.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::{Mutex, mpsc, oneshot};

use super::Res;
use crate::store::StoreError;

/// Items waiting for a worker; beyond this a caller waits to queue.
const QUEUE: usize = 4096;

type Job<T, O> = (T, oneshot::Sender<Res<O>>);

pub(super) struct Batcher<T, O> {
    queue: mpsc::Sender<Job<T, O>>,
    /// Batches written so far (tests read it to see batching).
    #[cfg_attr(not(test), allow(dead_code))]
    pub(super) batches: Arc<AtomicU64>,
}

impl<T: Send + 'static, O: Send + 'static> Batcher<T, O> {
    /// Starts `workers` tasks on the current runtime, each writing up to
    /// `max` items at a time with `write`, which answers one result per
    /// item, in order. They end once this is dropped and the queue drained.
    pub(super) fn start<F, Fut>(workers: usize, max: usize, write: F) -> Self
    where
        F: Fn(Vec<T>) -> Fut + Clone + Send + Sync + 'static,
        Fut: Future<Output = Vec<Res<O>>> + Send + 'static,
    {
        let (queue, rx) = mpsc::channel(QUEUE);
        let rx = Arc::new(Mutex::new(rx));
        let batches = Arc::new(AtomicU64::new(0));
        for _ in 0..workers {
            tokio::spawn(work(rx.clone(), max, write.clone(), batches.clone()));
        }
        Self { queue, batches }
    }

    /// Queues `item` for the next batch; its result once that is written.
    pub(super) async fn submit(&self, item: T) -> Res<O> {
        let (reply, answer) = oneshot::channel();
        let gone = || StoreError::Unavailable("the store is shutting down".into());
        self.queue.send((item, reply)).await.map_err(|_| gone())?;
        answer.await.map_err(|_| gone())?
    }
}

async fn work<T, O, F, Fut>(
    rx: Arc<Mutex<mpsc::Receiver<Job<T, O>>>>,
    max: usize,
    write: F,
    batches: Arc<AtomicU64>,
) where
    F: Fn(Vec<T>) -> Fut,
    Fut: Future<Output = Vec<Res<O>>>,
{
    loop {
        let mut jobs = Vec::new();
        {
            let mut rx = rx.lock().await;
            if rx.recv_many(&mut jobs, max).await == 0 {
                return;
            }
        }
        let (items, replies): (Vec<T>, Vec<_>) = jobs.into_iter().unzip();
        let results = write(items).await;
        batches.fetch_add(1, Ordering::Relaxed);
        for (reply, result) in replies.into_iter().zip(results) {
            // The caller may have given up waiting; what was written stays.
            let _ = reply.send(result);
        }
    }
}
