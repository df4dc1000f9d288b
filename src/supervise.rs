//! Background tasks that cannot die silently.
//!
//! The dispatcher, the pruner and the rule watcher each run under
//! [`supervise`]: when one panics, the panic is logged with its message,
//! counted in `hookwire_task_restarts_total{task}`, `/readyz` answers 503
//! naming the task, and the task is started again after a back-off (1 s,
//! doubling up to [`MAX_BACKOFF`], reset once it has run for that long).
//! Restarting in-process keeps ingest answering — events are still stored
//! durably while a task is down — and a supervisor such as systemd is not
//! needed for hookwire to heal itself; `/readyz` lets a load balancer or an
//! orchestrator see the gap.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::future::BoxFuture;
use serde::Serialize;
use tokio_util::sync::CancellationToken;

/// Longest wait before a task that keeps panicking is started again.
pub const MAX_BACKOFF: Duration = Duration::from_secs(60);
const FIRST_BACKOFF: Duration = Duration::from_secs(1);

/// The state of each supervised task, for `/readyz`.
#[derive(Clone, Default)]
pub struct Tasks(Arc<Mutex<BTreeMap<&'static str, TaskState>>>);

#[derive(Debug, Clone, Serialize)]
pub struct TaskState {
    /// `running`, or `restarting` after a panic.
    pub state: &'static str,
    pub restarts: u64,
    /// The message of the last panic: in the log, not on the open `/readyz`.
    #[serde(skip)]
    pub last_panic: Option<String>,
}

impl Tasks {
    fn update(&self, task: &'static str, f: impl FnOnce(&mut TaskState)) {
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let entry = map.entry(task).or_insert(TaskState {
            state: "running",
            restarts: 0,
            last_panic: None,
        });
        f(entry);
    }

    /// Every task and its state.
    pub fn snapshot(&self) -> BTreeMap<&'static str, TaskState> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Whether every task is running.
    pub fn healthy(&self) -> bool {
        self.snapshot().values().all(|t| t.state == "running")
    }
}

/// Runs `start()` until it returns or `cancel`; restarts it after a panic.
pub async fn supervise<F>(task: &'static str, tasks: Tasks, cancel: CancellationToken, mut start: F)
where
    F: FnMut() -> BoxFuture<'static, ()>,
{
    let mut backoff = FIRST_BACKOFF;
    loop {
        tasks.update(task, |t| t.state = "running");
        let began = Instant::now();
        let Err(e) = tokio::spawn(start()).await else {
            return;
        };
        if !e.is_panic() {
            return;
        }
        let message = panic_message(e.into_panic().as_ref());
        if began.elapsed() >= MAX_BACKOFF {
            backoff = FIRST_BACKOFF;
        }
        crate::telemetry::TaskPanicked {
            task,
            message: &message,
            restart_in: backoff,
        }
        .emit();
        tasks.update(task, |t| {
            t.state = "restarting";
            t.restarts += 1;
            t.last_panic = Some(message);
        });
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = cancel.cancelled() => return,
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// The text of a panic payload (`panic!("…")` gives a `&str` or a `String`).
pub fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".to_owned())
}

/// Faults that tests inject into a debug build through `HOOKWIRE_FAULTS`
/// (a comma-separated list); a release build ignores the variable.
///
/// - `dispatcher-panic`: the dispatcher panics once, right after its first
///   claim that returned deliveries.
/// - `attempt-panic`: every first attempt of a delivery panics.
/// - `kill-before-step`: the process kills itself (SIGKILL) when it is
///   about to run an attempt of a step: after its need's success was
///   committed, before the step did anything.
pub fn fault(point: &str) -> bool {
    #[cfg(debug_assertions)]
    {
        static FAULTS: std::sync::LazyLock<Vec<String>> = std::sync::LazyLock::new(|| {
            std::env::var("HOOKWIRE_FAULTS")
                .unwrap_or_default()
                .split(',')
                .map(|s| s.trim().to_owned())
                .collect()
        });
        FAULTS.iter().any(|f| f == point)
    }
    #[cfg(not(debug_assertions))]
    {
        let _ = point;
        false
    }
}

/// Like [`fault`], but true only the first time it is asked.
pub fn fault_once(point: &'static str) -> bool {
    static FIRED: Mutex<Vec<&'static str>> = Mutex::new(Vec::new());
    if !fault(point) {
        return false;
    }
    let mut fired = FIRED.lock().unwrap_or_else(|p| p.into_inner());
    if fired.contains(&point) {
        return false;
    }
    fired.push(point);
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_panicking_task_is_reported_and_restarted() {
        let tasks = Tasks::default();
        let runs = Arc::new(std::sync::atomic::AtomicU32::new(0));
        let (r, t) = (runs.clone(), tasks.clone());
        let sup = tokio::spawn(supervise(
            "demo",
            tasks.clone(),
            CancellationToken::new(),
            move || {
                let n = r.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                Box::pin(async move {
                    if n == 0 {
                        panic!("boom {n}");
                    }
                })
            },
        ));
        // After the panic, the task is `restarting` until its back-off (1 s) ends.
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(!t.healthy());
        let s = &t.snapshot()["demo"];
        assert_eq!(
            (s.state, s.restarts, s.last_panic.as_deref()),
            ("restarting", 1, Some("boom 0"))
        );
        sup.await.unwrap();
        assert_eq!(runs.load(std::sync::atomic::Ordering::SeqCst), 2);
        assert!(tasks.healthy());
    }
}
