//! The dispatcher: claims due deliveries, runs up to `--workers` attempts at
//! once, and records each attempt and the delivery's next state.
//!
//! Ingest wakes it the moment a committed event has deliveries, so new
//! deliveries start within milliseconds; otherwise it sleeps until the next
//! delivery is due. Every attempt renders its action from the *current* rule
//! set (a fixed rule file fixes pending retries; a removed rule or action ends
//! the delivery `skipped`). Claims carry a lease, and deliveries a crashed
//! process left `running` are queued again at start, so nothing stays
//! `running` or overdue forever.

pub mod policy;
pub mod steps;
pub mod targets;

use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::FutureExt as _;

use tokio::sync::{Notify, Semaphore};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::actions::{self, AttemptResult, Runner};
use crate::clock::now_ms;
use crate::ids::{AttemptId, DeliveryId, InstanceId};
use crate::rules::RetryPolicy;
use crate::store::{Claimed, Finished, Lease, NewAttempt, Recorded, SharedStore};
use crate::watch::LiveRules;
use policy::{Outcome, next};
use targets::{Change, Target, Targets};

/// How long a claim holds a delivery without a heartbeat (`--lease`): a
/// dead instance's deliveries are taken over this long after its last one.
/// Running attempts are renewed every third of it, so attempts of any length
/// keep their claim.
pub const DEFAULT_LEASE: Duration = Duration::from_secs(30);
/// The longest the dispatcher sleeps without looking for due work: on a
/// shared database, the backstop for a wake-up from another instance that
/// was missed.
const IDLE_CHECK: Duration = Duration::from_secs(1);
/// After a failed claim (the store cannot commit) the next one waits this
/// long, doubling up to [`CLAIM_BACKOFF_MAX`]: a full disk must not turn
/// into a busy loop, and a store that recovers is used again within seconds.
const CLAIM_BACKOFF_FIRST: Duration = Duration::from_millis(100);
const CLAIM_BACKOFF_MAX: Duration = Duration::from_secs(5);

pub struct Dispatcher {
    store: SharedStore,
    rules: Arc<LiveRules>,
    /// Rung by ingest when an event with deliveries is committed, and (on a
    /// shared database) when another instance says it committed work.
    pub wake: Arc<Notify>,
    workers: usize,
    /// What each target may run at once, and its breaker.
    pub targets: Arc<Targets>,
    /// The target of each action of the live rule set, by set version.
    target_map: std::sync::Mutex<(u64, Arc<TargetMap>)>,
    runner: Runner,
    stream: crate::bus::Stream,
    /// This process: the owner of every lease it claims.
    instance: InstanceId,
    lease: Duration,
    /// The leases of the attempts running now (delivery → token), renewed
    /// together by the heartbeat.
    held: std::sync::Mutex<HashMap<DeliveryId, i64>>,
    /// Decides the steps a finished delivery releases, against the live rules.
    judge: crate::store::Judge,
}

/// What the dispatcher is started with.
pub struct Settings {
    pub workers: usize,
    pub instance: InstanceId,
    pub lease: Duration,
}

impl Dispatcher {
    pub fn new(
        store: SharedStore,
        rules: Arc<LiveRules>,
        settings: Settings,
        runner: Runner,
        stream: crate::bus::Stream,
    ) -> Self {
        let judge = crate::store::Judge(Arc::new(steps::RulesJudge::new(rules.clone())));
        Self {
            judge,
            store,
            rules,
            wake: Arc::new(Notify::new()),
            workers: settings.workers.max(1),
            instance: settings.instance,
            lease: settings.lease,
            held: std::sync::Mutex::default(),
            targets: Arc::default(),
            target_map: std::sync::Mutex::new((u64::MAX, Arc::default())),
            runner,
            stream,
        }
    }

    /// Runs until `cancel`; then lets running attempts finish for up to
    /// `grace`. Whatever is cut short stays `running` and is queued again at
    /// the next start.
    pub async fn run(self: Arc<Self>, cancel: CancellationToken, grace: Duration) {
        // No attempt of this instance runs before its dispatcher does: what
        // it holds `running` was cut short (a dispatcher that panicked took
        // its attempts with it) and is due again.
        match self.store.requeue_own(&self.instance).await {
            Ok(0) => {}
            Ok(n) => tracing::warn!(deliveries = n, "deliveries left running are queued again"),
            Err(e) => tracing::warn!(error = %e, "cannot queue running deliveries again"),
        }
        self.held_leases().clear();
        let heartbeat = tokio::spawn(self.clone().heartbeat());
        let slots = Arc::new(Semaphore::new(self.workers));
        let finished = Arc::new(Notify::new());
        let mut running = JoinSet::new();
        // Claims failed in a row, and how long to wait before the next.
        let (mut claim_failures, mut claim_backoff) = (0u64, CLAIM_BACKOFF_FIRST);
        loop {
            while running.try_join_next().is_some() {}
            if cancel.is_cancelled() {
                break;
            }
            // Free workers always take due work, but not the work of targets
            // that are busy or whose breaker is open: those deliveries wait
            // in the queue, their attempts unspent.
            let free = slots.available_permits();
            let map = self.target_map();
            let now = Instant::now();
            let mut room: HashMap<&str, usize> = HashMap::new();
            let mut skip = Vec::new();
            for (action, target) in map.iter() {
                let r = *room
                    .entry(target.key.as_str())
                    .or_insert_with(|| self.targets.room(target, now));
                if r == 0 {
                    skip.push(action.clone());
                }
            }
            for (target, in_flight) in self.targets.newly_saturated(now) {
                crate::telemetry::target_saturated(&target, in_flight);
            }
            // No more than the targets have room for: a claim of more would
            // give the rest back at once, two writes (and the reading of
            // every claimed body) for nothing. With no room anywhere there is
            // nothing to claim, and the query would walk the whole backlog
            // past skipped actions to find it out. (With no rules, whatever
            // is due ends `skipped` and is claimed all the same.)
            let limit = if map.is_empty() {
                free
            } else {
                free.min(room.values().sum())
            };
            let mut claimed = Vec::new();
            if limit > 0 {
                let started = Instant::now();
                match self
                    .store
                    .claim(
                        &self.instance,
                        now_ms(),
                        limit as u32,
                        self.lease,
                        skip.clone(),
                    )
                    .await
                {
                    Ok(c) => {
                        crate::telemetry::store_claim_finished(started.elapsed());
                        claimed = c;
                        if claim_failures > 0 {
                            tracing::info!(
                                failures = claim_failures,
                                "claiming deliveries again after {claim_failures} failed claims"
                            );
                            (claim_failures, claim_backoff) = (0, CLAIM_BACKOFF_FIRST);
                        }
                    }
                    Err(e) => {
                        // The first failure of a run is worth a warning; the
                        // store logs its own outage, so the rest are details.
                        if claim_failures == 0 {
                            tracing::warn!(error = %e, "cannot claim deliveries; trying again with back-off");
                        } else {
                            tracing::debug!(error = %e, retry_in_ms = claim_backoff.as_millis() as u64, "cannot claim deliveries");
                        }
                        claim_failures += 1;
                        tokio::select! {
                            _ = tokio::time::sleep(claim_backoff) => {}
                            _ = cancel.cancelled() => {}
                        }
                        claim_backoff = (claim_backoff * 2).min(CLAIM_BACKOFF_MAX);
                        continue;
                    }
                }
            }
            if !claimed.is_empty() && crate::supervise::fault_once("dispatcher-panic") {
                panic!("injected fault: dispatcher-panic");
            }
            let full = limit > 0 && claimed.len() == limit;
            // A claim may hold more deliveries of one target than it has room
            // for (the query does not count per target): the rest go back.
            let mut over = Vec::new();
            for c in claimed {
                let key = format!("{}/{}", c.rule, c.action);
                let found = map.get(&key);
                let target = found.cloned();
                if let Some(t) = found {
                    let r = room
                        .entry(t.key.as_str())
                        .or_insert_with(|| self.targets.room(t, now));
                    if *r == 0 {
                        over.push(c.lease());
                        continue;
                    }
                    *r -= 1;
                    self.targets.start(t, now);
                }
                let Ok(permit) = slots.clone().acquire_owned().await else {
                    break;
                };
                self.held_leases().insert(c.id.clone(), c.token);
                let (me, done) = (self.clone(), finished.clone());
                running.spawn(async move {
                    me.attempt(c, target).await;
                    drop(permit);
                    done.notify_one();
                });
            }
            let gave_back = !over.is_empty();
            if gave_back && let Err(e) = self.store.release(&self.instance, over, now_ms()).await {
                tracing::warn!(error = %e, "cannot give back deliveries; they run when their lease ends");
            }
            if full && !gave_back {
                continue;
            }
            let mut wait = match self.store.next_due().await {
                Ok(Some(at)) => {
                    Duration::from_millis(u64::try_from(at - now_ms()).unwrap_or(0)).min(IDLE_CHECK)
                }
                _ => IDLE_CHECK,
            };
            // Due work that is held back (busy targets, open breakers) is
            // looked at again when an attempt ends, or soon.
            if !skip.is_empty() || gave_back {
                wait = wait.max(HELD_RECHECK);
            }
            if wait.is_zero() && slots.available_permits() > 0 {
                continue;
            }
            tokio::select! {
                _ = self.wake.notified() => {}
                _ = finished.notified() => {}
                _ = tokio::time::sleep(wait) => {}
                _ = cancel.cancelled() => {}
            }
        }
        if !running.is_empty() {
            tracing::info!(
                attempts = running.len(),
                grace_ms = grace.as_millis() as u64,
                "waiting for running attempts to finish"
            );
            let drained = tokio::time::timeout(grace, async {
                while running.join_next().await.is_some() {}
            })
            .await;
            if drained.is_err() {
                tracing::warn!(
                    attempts = running.len(),
                    "attempts cut short at shutdown; they run again at the next start"
                );
                running.abort_all();
            }
        }
        heartbeat.abort();
    }

    fn held_leases(&self) -> std::sync::MutexGuard<'_, HashMap<DeliveryId, i64>> {
        self.held.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Renews the leases of the running attempts, all in one write, every
    /// third of a lease: an attempt of any length keeps its claim while this
    /// instance lives, and a dead instance's claims run out after one lease.
    async fn heartbeat(self: Arc<Self>) {
        let every = (self.lease / 3).max(Duration::from_millis(100));
        loop {
            tokio::time::sleep(every).await;
            let held: Vec<Lease> = self
                .held_leases()
                .iter()
                .map(|(delivery, token)| Lease {
                    delivery: delivery.clone(),
                    token: *token,
                })
                .collect();
            if held.is_empty() {
                continue;
            }
            match self.store.renew(&self.instance, held, self.lease).await {
                Ok(lost) => {
                    let mut leases = self.held_leases();
                    for delivery in lost {
                        // Found once: the attempt runs on, and its result is discarded.
                        if leases.remove(&delivery).is_some() {
                            crate::telemetry::lease_taken_over(delivery.as_str());
                        }
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot renew leases; trying again at the next heartbeat")
                }
            }
        }
    }

    /// The target of every action of the live rule set (`rule/action` →
    /// target), computed once per set.
    fn target_map(&self) -> Arc<TargetMap> {
        let set = self.rules.current();
        let mut cached = self.target_map.lock().unwrap_or_else(|p| p.into_inner());
        if cached.0 != set.version {
            let share = (self.workers / 2).max(1);
            let map = set
                .rules
                .iter()
                .flat_map(|r| {
                    r.actions.iter().map(move |a| {
                        (
                            format!("{}/{}", r.name, a.name),
                            targets::target_of(&r.name, a, share),
                        )
                    })
                })
                .collect();
            *cached = (set.version, Arc::new(map));
        }
        cached.1.clone()
    }

    async fn attempt(&self, mut c: Claimed, target: Option<Target>) {
        let started = Instant::now();
        let started_at_ms = now_ms();
        self.stream.publish(|| {
            serde_json::json!({
                "type": "delivery", "id": c.id, "event_id": c.event_id, "rule": c.rule, "action": c.action,
                "status": "running", "attempt": c.attempt, "number": c.number,
            })
        });
        let set = self.rules.current();
        let found = set.rule(&c.rule).and_then(|r| {
            r.actions
                .iter()
                .find(|a| a.name == c.action)
                .map(|a| (r, a))
        });
        // Whether the target was asked: a render that fails never reaches it.
        let mut rendered = false;
        // A step some other step needs keeps its output.
        let keep_output = found.is_some_and(|(_, a)| a.needed);
        let (result, policy) = match found {
            None => (
                AttemptResult::fail(
                    Outcome::Skipped,
                    format!(
                        "rule `{}` or its action `{}` no longer exists",
                        c.rule, c.action
                    ),
                ),
                RetryPolicy::default(),
            ),
            Some((rule, action)) => {
                // A panic in rendering or in a runner is a failed attempt,
                // recorded with its message and retried by the action's policy.
                let run = AssertUnwindSafe(self.run_action(rule, action, &mut c))
                    .catch_unwind()
                    .await
                    .map(|(result, asked)| {
                        rendered = asked;
                        result
                    });
                let result = run.unwrap_or_else(|panic| {
                    AttemptResult::fail(
                        Outcome::Retryable { retry_after: None },
                        format!(
                            "the attempt panicked: {}",
                            crate::supervise::panic_message(panic.as_ref())
                        ),
                    )
                });
                (result, action.retry)
            }
        };
        if let Some(t) = &target {
            let reached = rendered.then_some(!matches!(result.outcome, Outcome::Retryable { .. }));
            if reached == Some(false) {
                crate::telemetry::target_failed(&t.key);
            }
            if let Some(change) = self.targets.finish(t, reached, Instant::now()) {
                self.target_changed(t, change).await;
            }
        }
        let jitter = (rand::random::<f64>() * 2.0 - 1.0) * policy::JITTER;
        let decision = next(result.outcome, c.attempt, &policy, now_ms(), jitter);
        let duration_ms = started.elapsed().as_millis() as i64;
        crate::telemetry::AttemptFinished {
            delivery_id: c.id.as_str(),
            event_id: c.event_id.as_str(),
            rule: &c.rule,
            action: &c.action,
            action_type: &c.action_type,
            attempt: c.attempt,
            number: c.number,
            outcome: result.outcome.label(),
            status: result.status_code,
            exit_code: result.exit_code,
            duration: started.elapsed(),
            state: decision.state.as_str(),
            // Masked by the log writer, like every line.
            error: result.error.as_deref(),
        }
        .emit();
        // Stored attempts never hold a secret, whatever the runner reported.
        // The policy above counted the budget (`c.attempt`); the record also
        // keeps the lifetime number, which a manual retry does not reset.
        let error = crate::redact::opt(result.error);
        let response = crate::redact::owned_bytes(result.response);
        let output = match (result.outcome, result.output) {
            (Outcome::Succeeded, Some(mut o)) if keep_output => {
                crate::redact::json(&mut o);
                serde_json::to_string(&o).ok()
            }
            _ => None,
        };
        let finished = Finished {
            lease: c.lease(),
            attempt: NewAttempt {
                id: AttemptId::new(),
                number: c.number,
                budget_number: c.attempt,
                round: c.round,
                requested_by: c.requested_by.clone(),
                started_at_ms,
                duration_ms,
                outcome: result.outcome.recorded(),
                status_code: result.status_code,
                exit_code: result.exit_code,
                error,
                response,
                output,
            },
            state: decision.state,
            next_attempt_at_ms: decision.next_attempt_at_ms,
            judge: Some(self.judge.clone()),
        };
        let state = finished.state;
        let recorded = self.store.finish(&self.instance, finished).await;
        self.held_leases().remove(&c.id);
        match recorded {
            Ok(Recorded::LeaseLost) => {
                crate::telemetry::lease_lost(c.id.as_str(), result.outcome.label())
            }
            Ok(Recorded::Yes) => self.stream.publish(|| {
                serde_json::json!({
                    "type": "delivery", "id": c.id, "event_id": c.event_id, "rule": c.rule, "action": c.action,
                    "status": state.as_str(), "attempt": c.attempt, "number": c.number,
                })
            }),
            Err(e) => {
                // The delivery stays `running` under its lease and is attempted again later: at least once.
                tracing::error!(delivery_id = %c.id, error = %e, "attempt not recorded");
            }
        }
    }
}

impl Dispatcher {
    /// Renders the action from the current rule and runs it once.
    async fn run_action(
        &self,
        rule: &crate::rules::Rule,
        action: &crate::rules::Action,
        c: &mut Claimed,
    ) -> (AttemptResult, bool) {
        if c.attempt == 1 && crate::supervise::fault("attempt-panic") {
            panic!("injected fault: attempt-panic");
        }
        if c.step && crate::supervise::fault("kill-before-step") {
            let _ =
                nix::sys::signal::kill(nix::unistd::Pid::this(), nix::sys::signal::Signal::SIGKILL);
        }
        if let Err(e) = c.parse_payload() {
            // Only a damaged database holds such a row: no later attempt can read it either.
            return (
                AttemptResult::fail(
                    Outcome::Permanent,
                    format!("the stored payload cannot be read: {e}"),
                ),
                false,
            );
        }
        let mut ctx = crate::template::take_context(&mut c.event, &rule.name, c.attempt);
        if c.step {
            // A step renders with what its needs returned (SPEC §4.7).
            match self.store.step_outputs(&c.id).await {
                Ok(outputs) => ctx = crate::template::with_steps(ctx, outputs),
                Err(e) => {
                    return (
                        AttemptResult::fail(
                            Outcome::Retryable { retry_after: None },
                            format!("cannot read the outputs of its needs: {e}"),
                        ),
                        false,
                    );
                }
            }
        }
        match actions::render(action, &ctx, &c.event) {
            // A template that fails may be fixed in the rule file before the next attempt.
            Err(e) => (
                AttemptResult::fail(
                    Outcome::Retryable { retry_after: None },
                    format!("render: {e}"),
                ),
                false,
            ),
            Ok(rendered) => (
                self.runner
                    .run(
                        action,
                        &rendered,
                        c.id.as_str(),
                        &rule.name,
                        &c.event,
                        action.needed,
                    )
                    .await,
                true,
            ),
        }
    }

    /// A target's breaker opened or closed: said once, and on closing the
    /// deliveries it held (and those on their own backoff) are due at once.
    async fn target_changed(&self, t: &Target, change: Change) {
        match change {
            Change::Opened { failures, wait } => {
                crate::telemetry::breaker_opened(&t.key, failures, wait)
            }
            Change::Reopened { wait } => crate::telemetry::breaker_reopened(&t.key, wait),
            Change::Closed { after } => crate::telemetry::breaker_closed(&t.key, after),
        }
        if let Change::Closed { .. } = change {
            let actions: Vec<String> = self
                .target_map()
                .iter()
                .filter(|(_, x)| x.key == t.key)
                .map(|(a, _)| a.clone())
                .collect();
            match self.store.expedite(actions, now_ms()).await {
                Ok(n) => {
                    tracing::debug!(target = %t.key, deliveries = n, "held deliveries due now")
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot release held deliveries; they run on their own backoff")
                }
            }
            self.wake.notify_one();
        }
    }
}

/// `rule/action` → its target, for every action of one rule set (looked up
/// for each claimed delivery: a map, not a scan, with 1,000 rules).
type TargetMap = HashMap<String, Target>;

/// How soon work held back by busy targets or open breakers is looked at
/// again, when no attempt ends before.
const HELD_RECHECK: Duration = Duration::from_millis(50);
