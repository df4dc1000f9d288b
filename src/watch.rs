//! The live rule set and its hot reload.
//!
//! Many readers, one writer: requests take the current [`RuleSet`] from an
//! `ArcSwap` (one atomic load); the watcher builds and validates a complete new
//! set and swaps it in at once. A set that fails to load is never swapped in:
//! the last good one keeps serving, and the errors (with positions) are kept
//! for `GET /api/rules` and logged.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use arc_swap::{ArcSwap, ArcSwapOption};
use notify::RecursiveMode;
use notify_debouncer_full::{DebounceEventResult, new_debouncer};
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::rules::{self, Diagnostic, LoadOptions, RuleSet};

/// Editors save in several steps (write a temp file, rename it over the old
/// one, touch metadata); waiting this long after the last event lets one save
/// cause one reload, while still feeling instant to someone editing a file.
pub const DEBOUNCE: Duration = Duration::from_millis(150);

/// Loads in a row whose files changed while being read, before giving up
/// until the next change.
const MAX_LOAD_TRIES: usize = 5;

/// What `/api/rules` reports about reloads.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ReloadStatus {
    /// Whether any set has loaded successfully since start.
    pub loaded: bool,
    /// Version of the live set (0 before the first successful load).
    #[serde(skip)]
    pub version: u64,
    pub reloads: u64,
    pub failures: u64,
    /// Errors of the last failed load, cleared by the next successful one.
    pub last_error: Option<Vec<Diagnostic>>,
    #[serde(with = "rfc3339_opt")]
    pub last_error_at: Option<SystemTime>,
}

mod rfc3339_opt {
    use std::time::SystemTime;

    pub fn serialize<S: serde::Serializer>(
        t: &Option<SystemTime>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        match t {
            Some(t) => s.serialize_str(&crate::clock::rfc3339(*t)),
            None => s.serialize_none(),
        }
    }
}

pub struct LiveRules {
    current: ArcSwap<RuleSet>,
    /// The set the last reload replaced (none until a second set loads).
    previous: ArcSwapOption<RuleSet>,
    status: Mutex<ReloadStatus>,
    paths: Vec<PathBuf>,
    env: HashMap<String, String>,
    opts: LoadOptions,
}

impl LiveRules {
    /// Loads the set once; on failure starts with an empty set and the error recorded.
    pub fn new(paths: Vec<PathBuf>, env: HashMap<String, String>, opts: LoadOptions) -> Self {
        let live = Self {
            current: ArcSwap::from_pointee(RuleSet::empty()),
            previous: ArcSwapOption::empty(),
            status: Mutex::new(ReloadStatus::default()),
            paths,
            env,
            opts,
        };
        live.reload();
        live
    }

    pub fn current(&self) -> Arc<RuleSet> {
        self.current.load_full()
    }

    /// The set the last reload replaced, if a reload has replaced one.
    pub fn previous(&self) -> Option<Arc<RuleSet>> {
        self.previous.load_full()
    }

    /// Loads rule files given as `(name, text)` the way this set's files are
    /// loaded: a candidate to backtest. Its `${VAR}` resolve only to the
    /// variables the live rules use, so that the admin API cannot be made to
    /// render (and transform past redaction) any other value of the
    /// daemon's environment; another variable takes its default, or is an
    /// error saying so.
    pub fn load_candidate(
        &self,
        files: &[(String, String)],
    ) -> Result<RuleSet, rules::LoadFailure> {
        let live = self.current();
        let env: HashMap<String, String> = self
            .env
            .iter()
            .filter(|(name, _)| live.variables.contains(name))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        rules::load_texts(files, &env, &self.opts).map_err(|mut failure| {
            for e in &mut failure.errors {
                let held_back = self.env.keys().find(|name| {
                    !env.contains_key(*name)
                        && e.message
                            .starts_with(&format!("environment variable `{name}` is not set"))
                });
                if let Some(name) = held_back {
                    e.message = format!(
                        "environment variable `{name}` is not one the live rules use: a backtest resolves only those; write `${{{name}:-…}}` with a stand-in value to backtest this change"
                    );
                }
            }
            failure
        })
    }

    pub fn status(&self) -> ReloadStatus {
        self.status
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Builds a new set from the files and swaps it in if it is valid.
    pub fn reload(&self) -> bool {
        let started = std::time::Instant::now();
        // A file written while it is read could give a set made of half a
        // write that still parses: such a load is thrown away and done again.
        let mut result = None;
        for _ in 0..MAX_LOAD_TRIES {
            let before = rules::fingerprint(&self.paths);
            let loaded = rules::load(&self.paths, &self.env, &self.opts);
            if rules::fingerprint(&self.paths) == before {
                result = Some(loaded);
                break;
            }
            tracing::debug!("rule files changed while being read; reading them again");
            std::thread::sleep(DEBOUNCE / 3);
        }
        let Some(result) = result else {
            // Still being written: the watcher sees the writes and calls again.
            tracing::info!("rule files keep changing; the reload waits for the next change");
            return false;
        };
        let mut status = self.status.lock().unwrap_or_else(|p| p.into_inner());
        match result {
            Ok(mut set) => {
                status.version += 1;
                set.version = status.version;
                let set = Arc::new(set);
                let replaced = self.current.swap(set.clone());
                // The empty set a failed first load starts with is nothing to compare with.
                if replaced.version > 0 {
                    self.previous.store(Some(replaced));
                }
                // Load, compile and swap: what `took_ms` in the log measures.
                crate::telemetry::ReloadSucceeded {
                    version: set.version,
                    files: set.files.len(),
                    sources: set.sources.len(),
                    rules: set.rules.len(),
                    took: started.elapsed(),
                    warnings: &located(&set.warnings),
                }
                .emit();
                status.loaded = true;
                status.reloads += 1;
                status.last_error = None;
                status.last_error_at = None;
                true
            }
            Err(failure) => {
                crate::telemetry::reload_failed(&located(&failure.errors));
                status.failures += 1;
                status.last_error = Some(failure.errors);
                status.last_error_at = Some(SystemTime::now());
                false
            }
        }
    }
}

/// Diagnostics as the log writes them.
fn located(list: &[Diagnostic]) -> Vec<crate::telemetry::Located<'_>> {
    list.iter()
        .map(|d| crate::telemetry::Located {
            file: &d.file,
            line: d.line,
            col: d.col,
            message: &d.message,
        })
        .collect()
}

/// Change notifications that may wait for the watcher. One pending
/// notification already guarantees a reload that reads every file, so when
/// the queue is full a new one is dropped without losing anything.
const WATCH_QUEUE: usize = 16;

/// Starts watching the rule paths; the future reloads on every change until
/// cancelled. Failures of the file watcher itself are logged and it keeps
/// going; a panic while loading is passed on to the task's supervisor.
pub fn watcher(
    live: Arc<LiveRules>,
    cancel: CancellationToken,
) -> Result<futures_util::future::BoxFuture<'static, ()>, notify::Error> {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<DebounceEventResult>(WATCH_QUEUE);
    let mut debouncer = new_debouncer(DEBOUNCE, None, move |res: DebounceEventResult| {
        let _ = tx.try_send(res);
    })?;
    for p in &live.paths {
        debouncer.watch(p, RecursiveMode::Recursive)?;
    }
    Ok(Box::pin(async move {
        // The debouncer stops watching when dropped: keep it for the task's life.
        let _debouncer = debouncer;
        loop {
            tokio::select! {
                _ = cancel.cancelled() => break,
                msg = rx.recv() => match msg {
                    None => break,
                    Some(Err(errors)) => {
                        for e in errors {
                            tracing::warn!(error = %e, "rule watcher error");
                        }
                    }
                    Some(Ok(events)) => {
                        let relevant = events.iter().any(|e| !matches!(e.kind, notify::EventKind::Access(_)));
                        if relevant {
                            // Drain what arrived meanwhile: one reload covers them all.
                            while rx.try_recv().is_ok() {}
                            let live = live.clone();
                            if let Err(e) = tokio::task::spawn_blocking(move || live.reload()).await
                                && e.is_panic()
                            {
                                std::panic::resume_unwind(e.into_panic());
                            }
                        }
                    }
                },
            }
        }
    }))
}
