//! Targets: where an action's attempts go — an http action's scheme, host
//! and port, the SMTP server, a command's program — so that one slow or
//! failing target cannot take the dispatcher from the others.
//!
//! - **A share of the workers.** A target runs at most `limit` attempts at
//!   once: the action's `concurrency`, or half of `--workers` by default.
//!   Deliveries to a busy target wait in the queue, unclaimed and with their
//!   attempts unspent, while the other workers serve other targets.
//! - **A circuit breaker** (http and email targets). After
//!   [`FAILURES_TO_OPEN`] failed attempts in a row (connection errors,
//!   timeouts, 5xx, 429: what the policy retries) the breaker opens: the
//!   target's deliveries are held, unattempted. After a wait (1 s, doubling
//!   up to [`MAX_OPEN`]) one probe — the next due delivery — is let through;
//!   if it succeeds the breaker closes and the deliveries held or waiting on
//!   their own backoff are due at once; if not, it opens again for longer.
//!   Nothing is dropped and no one has to re-enable a target.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::rules::{Action, ActionKind};

/// Failed attempts in a row that open a target's breaker.
pub const FAILURES_TO_OPEN: u32 = 5;
/// The first wait before a probe, doubled after each failed probe.
const FIRST_OPEN: Duration = Duration::from_secs(1);
/// The longest wait between probes of a failing target: a few attempts a
/// minute, and a target that comes back is found within this long.
pub const MAX_OPEN: Duration = Duration::from_secs(5);
/// How long a target may hold its whole share before a warning says so.
const BUSY_WARNING: Duration = Duration::from_secs(10);

/// Where an action's attempts go, and how many may run there at once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub key: String,
    pub limit: usize,
    /// Whether failures open a breaker (not for commands: a failing command
    /// says more about its input than about the program).
    pub breaker: bool,
}

/// The target of an action. An http URL whose host comes from the payload
/// has no fixed target: each such action is a target of its own.
pub fn target_of(rule: &str, action: &Action, default_limit: usize) -> Target {
    let (key, breaker) = match &action.kind {
        ActionKind::Http(h) => {
            let src = h.url.source();
            let fixed = src.split("{{").next().unwrap_or_default();
            match url::Url::parse(fixed) {
                Ok(u) if u.host_str().is_some() && !src[fixed.len()..].starts_with(':') => (
                    format!(
                        "{}://{}:{}",
                        u.scheme(),
                        u.host_str().unwrap_or_default(),
                        u.port_or_known_default().unwrap_or_default()
                    ),
                    true,
                ),
                _ => (format!("http (payload host) {rule}/{}", action.name), true),
            }
        }
        ActionKind::Email(_) => ("smtp".to_owned(), true),
        ActionKind::Command(c) => (
            format!(
                "command {}",
                c.argv.first().map(|a| a.source()).unwrap_or_default()
            ),
            false,
        ),
    };
    Target {
        key,
        limit: action.concurrency.unwrap_or(default_limit).max(1),
        breaker,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Breaker {
    Closed,
    Open {
        until: Instant,
        wait: Duration,
    },
    /// One probe may run; `wait` is how long it opens again if it fails.
    Probing {
        wait: Duration,
    },
}

#[derive(Debug)]
struct State {
    in_flight: usize,
    failures: u32,
    breaker: Breaker,
    opened_at: Option<Instant>,
    busy_since: Option<Instant>,
    warned: bool,
}

impl Default for State {
    fn default() -> Self {
        Self {
            in_flight: 0,
            failures: 0,
            breaker: Breaker::Closed,
            opened_at: None,
            busy_since: None,
            warned: false,
        }
    }
}

/// A change worth a log line and, for `Closed`, releasing held deliveries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    Opened { failures: u32, wait: Duration },
    Reopened { wait: Duration },
    Closed { after: Duration },
}

/// What the API, the dashboard and the metrics show of a target.
#[derive(Debug, Clone, Serialize)]
pub struct TargetStatus {
    pub target: String,
    pub in_flight: usize,
    /// `closed`, `open` or `probing`.
    pub breaker: &'static str,
    pub consecutive_failures: u32,
    /// Seconds until the next probe, while open.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub probe_in_secs: Option<f64>,
}

#[derive(Default)]
pub struct Targets(Mutex<HashMap<String, State>>);

impl Targets {
    fn with<T>(&self, key: &str, f: impl FnOnce(&mut State) -> T) -> T {
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        f(map.entry(key.to_owned()).or_default())
    }

    /// How many more attempts may start on `t` now: 0 while it is busy or
    /// its breaker is open, 1 for the probe.
    pub fn room(&self, t: &Target, now: Instant) -> usize {
        self.with(&t.key, |s| {
            if let Breaker::Open { until, wait } = s.breaker
                && now >= until
            {
                s.breaker = Breaker::Probing { wait };
            }
            match s.breaker {
                Breaker::Open { .. } => 0,
                Breaker::Probing { .. } => usize::from(s.in_flight == 0),
                Breaker::Closed => t.limit.saturating_sub(s.in_flight),
            }
        })
    }

    /// An attempt to `t` starts.
    pub fn start(&self, t: &Target, now: Instant) {
        self.with(&t.key, |s| {
            s.in_flight += 1;
            if s.in_flight >= t.limit && s.busy_since.is_none() {
                s.busy_since = Some(now);
            }
        });
    }

    /// An attempt to `t` ended; `reached` says whether the target answered
    /// (`Some(true)`: a success, or a refusal that retrying cannot change),
    /// failed (`Some(false)`: what the policy retries), or was never asked
    /// (`None`: the action did not render).
    pub fn finish(&self, t: &Target, reached: Option<bool>, now: Instant) -> Option<Change> {
        self.with(&t.key, |s| {
            s.in_flight = s.in_flight.saturating_sub(1);
            if s.in_flight < t.limit {
                s.busy_since = None;
                s.warned = false;
            }
            let reached = reached.filter(|_| t.breaker)?;
            match (s.breaker, reached) {
                (Breaker::Closed, true) => {
                    s.failures = 0;
                    None
                }
                (Breaker::Closed, false) => {
                    s.failures += 1;
                    (s.failures >= FAILURES_TO_OPEN).then(|| {
                        s.breaker = Breaker::Open {
                            until: now + FIRST_OPEN,
                            wait: FIRST_OPEN,
                        };
                        s.opened_at = Some(now);
                        Change::Opened {
                            failures: s.failures,
                            wait: FIRST_OPEN,
                        }
                    })
                }
                (Breaker::Probing { .. }, true) => {
                    s.breaker = Breaker::Closed;
                    s.failures = 0;
                    let after = s.opened_at.take().map_or(Duration::ZERO, |t| now - t);
                    Some(Change::Closed { after })
                }
                (Breaker::Probing { wait }, false) => {
                    s.failures += 1;
                    let wait = (wait * 2).min(MAX_OPEN);
                    s.breaker = Breaker::Open {
                        until: now + wait,
                        wait,
                    };
                    Some(Change::Reopened { wait })
                }
                // Attempts that started before the breaker opened.
                (Breaker::Open { .. }, _) => None,
            }
        })
    }

    /// Targets that have held their whole share for a while, each reported
    /// once per busy spell.
    pub fn newly_saturated(&self, now: Instant) -> Vec<(String, usize)> {
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        map.iter_mut()
            .filter_map(|(k, s)| {
                let long = s.busy_since.is_some_and(|b| now - b >= BUSY_WARNING);
                (long && !s.warned).then(|| {
                    s.warned = true;
                    (k.clone(), s.in_flight)
                })
            })
            .collect()
    }

    /// Every target seen, for the API and the metrics.
    pub fn snapshot(&self, now: Instant) -> Vec<TargetStatus> {
        let map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let mut list: Vec<TargetStatus> = map
            .iter()
            .map(|(k, s)| TargetStatus {
                target: k.clone(),
                in_flight: s.in_flight,
                breaker: match s.breaker {
                    Breaker::Closed => "closed",
                    Breaker::Open { .. } => "open",
                    Breaker::Probing { .. } => "probing",
                },
                consecutive_failures: s.failures,
                probe_in_secs: match s.breaker {
                    Breaker::Open { until, .. } => {
                        Some(until.saturating_duration_since(now).as_secs_f64())
                    }
                    _ => None,
                },
            })
            .collect();
        list.sort_by(|a, b| a.target.cmp(&b.target));
        list
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(limit: usize) -> Target {
        Target {
            key: "https://crm.example:443".into(),
            limit,
            breaker: true,
        }
    }

    #[test]
    fn a_target_runs_at_most_its_share() {
        let (targets, now) = (Targets::default(), Instant::now());
        let t = t(2);
        assert_eq!(targets.room(&t, now), 2);
        targets.start(&t, now);
        targets.start(&t, now);
        assert_eq!(targets.room(&t, now), 0);
        assert!(targets.newly_saturated(now + BUSY_WARNING).len() == 1);
        assert!(
            targets.newly_saturated(now + BUSY_WARNING * 2).is_empty(),
            "once per spell"
        );
        assert_eq!(targets.finish(&t, Some(true), now), None);
        assert_eq!(targets.room(&t, now), 1);
    }

    #[test]
    fn the_breaker_opens_probes_once_and_closes() {
        let (targets, t0) = (Targets::default(), Instant::now());
        let t = t(8);
        for i in 1..=FAILURES_TO_OPEN {
            targets.start(&t, t0);
            let change = targets.finish(&t, Some(false), t0);
            assert_eq!(change.is_some(), i == FAILURES_TO_OPEN, "{i}");
        }
        assert_eq!(targets.room(&t, t0), 0, "open: nothing runs");
        // Renders that fail never reach the target and change nothing.
        assert_eq!(targets.finish(&t, None, t0), None);
        let later = t0 + FIRST_OPEN;
        assert_eq!(targets.room(&t, later), 1, "one probe");
        targets.start(&t, later);
        assert_eq!(targets.room(&t, later), 0, "only one");
        assert_eq!(
            targets.finish(&t, Some(false), later),
            Some(Change::Reopened {
                wait: FIRST_OPEN * 2
            })
        );
        assert_eq!(targets.room(&t, later + FIRST_OPEN), 0, "longer wait");
        let probe = later + FIRST_OPEN * 2;
        assert_eq!(targets.room(&t, probe), 1);
        targets.start(&t, probe);
        assert!(matches!(
            targets.finish(&t, Some(true), probe),
            Some(Change::Closed { .. })
        ));
        assert_eq!(targets.room(&t, probe), 8, "closed: the whole share");
        assert_eq!(targets.snapshot(probe)[0].breaker, "closed");
    }

    #[test]
    fn commands_have_a_share_but_no_breaker() {
        let targets = Targets::default();
        let now = Instant::now();
        let cmd = Target {
            key: "command ./deploy.sh".into(),
            limit: 1,
            breaker: false,
        };
        for _ in 0..10 {
            targets.start(&cmd, now);
            assert_eq!(targets.finish(&cmd, Some(false), now), None);
        }
        assert_eq!(targets.room(&cmd, now), 1);
    }
}
