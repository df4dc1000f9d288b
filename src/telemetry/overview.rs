//! The last hour of this instance at a glance, for the dashboard's overview
//! strip: events per minute by source, finished attempts per minute by the
//! state they left their delivery in, the queue depth over time, and the
//! slowest actions (p95 attempt duration).
//!
//! Kept in memory, per minute, by the same occurrences that move the metrics
//! (no query runs over an hour of events to draw a chart): recording is a
//! short lock and a few additions, and an hour of minutes is a few kilobytes
//! whatever the traffic. It starts empty with the process and covers what
//! this instance saw (in a cluster, each instance its own share).

use std::collections::VecDeque;
use std::sync::Mutex;

use serde::Serialize;

/// Minutes kept and shown.
pub const MINUTES: usize = 60;

/// Attempt durations are counted in buckets growing by √2 from 0.25 ms
/// (the last one, ~185 s and up, is open): a p95 read from them is within
/// about 20 % of the true one, which is what a chart of the slowest actions needs.
const BUCKETS: usize = 40;
const FIRST_BOUND_MS: f64 = 0.25;

/// The upper bound of bucket `i`, in milliseconds.
fn bound_ms(i: usize) -> f64 {
    FIRST_BOUND_MS * std::f64::consts::SQRT_2.powi(i as i32)
}

fn bucket_of(ms: f64) -> usize {
    (0..BUCKETS - 1)
        .find(|&i| ms <= bound_ms(i))
        .unwrap_or(BUCKETS - 1)
}

/// Queue-depth samples kept: an hour at one per 10 s, with room for the
/// extra ones taken when the page asks.
const DEPTH_SAMPLES: usize = 720;

#[derive(Default)]
struct Minute {
    /// Minutes since the epoch.
    at: i64,
    sources: Vec<(Box<str>, u32)>,
    states: Vec<(&'static str, u32)>,
    durations: Vec<(Box<str>, Box<[u32; BUCKETS]>)>,
}

#[derive(Default)]
struct Ring {
    minutes: VecDeque<Minute>,
    depth: VecDeque<(i64, u64)>,
    /// When the first minute of this process began (ms).
    since: Option<i64>,
}

impl Ring {
    /// The bucket of the minute `now_ms` falls in; older minutes beyond the
    /// hour are dropped.
    fn minute(&mut self, now_ms: i64) -> &mut Minute {
        let at = now_ms.div_euclid(60_000);
        self.since.get_or_insert(now_ms);
        if self.minutes.back().is_none_or(|m| m.at != at) {
            // A clock stepped back lands in the newest minute rather than
            // reordering the ring.
            if self.minutes.back().is_none_or(|m| m.at < at) {
                self.minutes.push_back(Minute {
                    at,
                    ..Minute::default()
                });
            }
            while self.minutes.len() > MINUTES {
                self.minutes.pop_front();
            }
        }
        // Just pushed or already there.
        let last = self.minutes.len() - 1;
        &mut self.minutes[last]
    }
}

fn bump<K>(list: &mut Vec<(K, u32)>, is: impl Fn(&K) -> bool, make: impl FnOnce() -> K) {
    match list.iter_mut().find(|(k, _)| is(k)) {
        Some((_, n)) => *n += 1,
        None => list.push((make(), 1)),
    }
}

/// The recorder; one per process ([`OVERVIEW`]).
#[derive(Default)]
pub struct Overview(Mutex<Ring>);

pub static OVERVIEW: std::sync::LazyLock<Overview> = std::sync::LazyLock::new(Overview::default);

impl Overview {
    fn ring(&self) -> std::sync::MutexGuard<'_, Ring> {
        // A panic while holding this lock left counts, not broken invariants.
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn event_stored(&self, now_ms: i64, source: &str) {
        let mut ring = self.ring();
        bump(
            &mut ring.minute(now_ms).sources,
            |k| **k == *source,
            || source.into(),
        );
    }

    pub fn attempt_finished(
        &self,
        now_ms: i64,
        target: (&str, &str),
        state: &'static str,
        took: std::time::Duration,
    ) {
        let mut ring = self.ring();
        let minute = ring.minute(now_ms);
        bump(&mut minute.states, |k| *k == state, || state);
        let (rule, action) = target;
        let bucket = bucket_of(took.as_secs_f64() * 1000.0);
        let same = |k: &str| k.strip_prefix(rule).and_then(|r| r.strip_prefix('/')) == Some(action);
        match minute.durations.iter_mut().find(|(k, _)| same(k)) {
            Some((_, counts)) => counts[bucket] += 1,
            None => {
                let mut counts = Box::new([0; BUCKETS]);
                counts[bucket] = 1;
                minute
                    .durations
                    .push((format!("{rule}/{action}").into(), counts));
            }
        }
    }

    /// A queue-depth reading. Readings closer than a second to the previous
    /// one replace it, so a page polling fast does not crowd out the hour.
    pub fn queue_depth(&self, now_ms: i64, depth: u64) {
        let mut ring = self.ring();
        ring.since.get_or_insert(now_ms);
        if ring.depth.back().is_some_and(|(at, _)| now_ms - at < 1_000) {
            ring.depth.pop_back();
        }
        ring.depth.push_back((now_ms, depth));
        while ring.depth.len() > DEPTH_SAMPLES
            || ring
                .depth
                .front()
                .is_some_and(|(at, _)| now_ms - at > 3_600_000)
        {
            ring.depth.pop_front();
        }
    }

    /// The last [`MINUTES`] minutes up to `now_ms`, oldest first, and the
    /// `slowest` actions by p95 over them.
    pub fn snapshot(&self, now_ms: i64, slowest: usize) -> Snapshot {
        let ring = self.ring();
        let now_minute = now_ms.div_euclid(60_000);
        let first = now_minute - MINUTES as i64 + 1;
        let mut snap = Snapshot {
            now: now_ms,
            start: first * 60_000,
            since: ring.since,
            ..Snapshot::default()
        };
        let mut durations: Vec<(Box<str>, [u64; BUCKETS])> = Vec::new();
        for m in ring
            .minutes
            .iter()
            .filter(|m| m.at >= first && m.at <= now_minute)
        {
            let i = (m.at - first) as usize;
            for (source, n) in &m.sources {
                series(&mut snap.events, source).add(i, *n);
            }
            for (state, n) in &m.states {
                series(&mut snap.outcomes, state).add(i, *n);
            }
            for (target, counts) in &m.durations {
                let at = match durations.iter().position(|(k, _)| k == target) {
                    Some(at) => at,
                    None => {
                        durations.push((target.clone(), [0; BUCKETS]));
                        durations.len() - 1
                    }
                };
                for (sum, n) in durations[at].1.iter_mut().zip(counts.iter()) {
                    *sum += u64::from(*n);
                }
            }
        }
        snap.events.sort_by(|a, b| a.name.cmp(&b.name));
        snap.outcomes.sort_by_key(|s| state_order(&s.name));
        snap.queue_depth = ring
            .depth
            .iter()
            .filter(|(at, _)| *at >= snap.start && *at <= now_ms)
            .map(|&(at, depth)| DepthSample { at, depth })
            .collect();
        let mut slow: Vec<Slow> = durations
            .into_iter()
            .map(|(target, counts)| Slow {
                attempts: counts.iter().sum(),
                p95_ms: quantile(&counts, 0.95),
                target: target.into(),
            })
            .collect();
        slow.sort_by(|a, b| b.p95_ms.total_cmp(&a.p95_ms).then(a.target.cmp(&b.target)));
        slow.truncate(slowest);
        snap.slowest = slow;
        snap
    }
}

fn series<'a>(list: &'a mut Vec<Series>, name: &str) -> &'a mut Series {
    let at = match list.iter().position(|s| s.name == name) {
        Some(at) => at,
        None => {
            list.push(Series {
                name: name.to_owned(),
                per_minute: vec![0; MINUTES],
                total: 0,
            });
            list.len() - 1
        }
    };
    &mut list[at]
}

/// Delivery states in the order a reader scans them: done, then trouble.
fn state_order(state: &str) -> usize {
    ["succeeded", "retrying", "dead", "skipped"]
        .iter()
        .position(|s| *s == state)
        .unwrap_or(usize::MAX)
}

/// The `q` quantile of bucketed counts, interpolated linearly inside its
/// bucket (as Prometheus' `histogram_quantile` does).
fn quantile(counts: &[u64; BUCKETS], q: f64) -> f64 {
    let total: u64 = counts.iter().sum();
    if total == 0 {
        return 0.0;
    }
    let rank = q * total as f64;
    let mut below = 0u64;
    for (i, &n) in counts.iter().enumerate() {
        if n > 0 && (below + n) as f64 >= rank {
            let lower = if i == 0 { 0.0 } else { bound_ms(i - 1) };
            if i == BUCKETS - 1 {
                // The open bucket has no upper bound: say its lower one.
                return lower;
            }
            let within = (rank - below as f64) / n as f64;
            return lower + (bound_ms(i) - lower) * within.clamp(0.0, 1.0);
        }
        below += n;
    }
    bound_ms(BUCKETS - 2)
}

/// What `GET /api/overview` answers.
#[derive(Debug, Default, Serialize)]
pub struct Snapshot {
    /// When this was taken (ms since the epoch).
    pub now: i64,
    /// The start of the first minute of `per_minute` (ms).
    pub start: i64,
    /// When this instance began recording (ms); minutes before it are empty
    /// because the process was not running, not because nothing happened.
    pub since: Option<i64>,
    /// Events stored per minute, by source.
    pub events: Vec<Series>,
    /// Attempts finished per minute, by the state they left the delivery in.
    pub outcomes: Vec<Series>,
    pub queue_depth: Vec<DepthSample>,
    pub slowest: Vec<Slow>,
}

#[derive(Debug, Default, Serialize)]
pub struct Series {
    pub name: String,
    pub per_minute: Vec<u32>,
    pub total: u64,
}

#[derive(Debug, Serialize)]
pub struct DepthSample {
    pub at: i64,
    pub depth: u64,
}

#[derive(Debug, Serialize)]
pub struct Slow {
    /// `rule/action`.
    pub target: String,
    pub p95_ms: f64,
    pub attempts: u64,
}

impl Series {
    fn add(&mut self, minute: usize, n: u32) {
        self.per_minute[minute] += n;
        self.total += u64::from(n);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const T0: i64 = 1_800_000_000_000; // a whole minute

    #[test]
    fn events_and_outcomes_land_in_their_minute_and_age_out_after_an_hour() {
        let o = Overview::default();
        o.event_stored(T0, "github");
        o.event_stored(T0 + 59_999, "github");
        o.event_stored(T0 + 60_000, "stripe");
        o.attempt_finished(
            T0 + 60_000,
            ("r", "a"),
            "succeeded",
            Duration::from_millis(3),
        );
        o.attempt_finished(T0 + 61_000, ("r", "a"), "dead", Duration::from_millis(3));

        let s = o.snapshot(T0 + 60_000, 5);
        assert_eq!(s.start, T0 + 60_000 - 59 * 60_000);
        let github = &s.events.iter().find(|e| e.name == "github").unwrap();
        assert_eq!((github.per_minute[58], github.total), (2, 2));
        let stripe = &s.events.iter().find(|e| e.name == "stripe").unwrap();
        assert_eq!((stripe.per_minute[59], stripe.total), (1, 1));
        let names: Vec<&str> = s.outcomes.iter().map(|o| o.name.as_str()).collect();
        assert_eq!(names, ["succeeded", "dead"]);
        assert_eq!(s.since, Some(T0));

        // An hour later the first minute is gone, the second still shown.
        let later = o.snapshot(T0 + 60 * 60_000, 5);
        assert!(later.events.iter().all(|e| e.name != "github"), "{later:?}");
        assert_eq!(later.events[0].per_minute[0], 1);
        // Two hours later nothing is left.
        assert!(o.snapshot(T0 + 120 * 60_000, 5).events.is_empty());
    }

    #[test]
    fn the_slowest_actions_come_first_with_a_p95_close_to_the_truth() {
        let o = Overview::default();
        // 100 attempts of 10..=1000 ms: the true p95 is 950 ms.
        for i in 1..=100u64 {
            o.attempt_finished(
                T0,
                ("deploy", "run"),
                "succeeded",
                Duration::from_millis(i * 10),
            );
            o.attempt_finished(T0, ("push", "chat"), "succeeded", Duration::from_millis(20));
        }
        let s = o.snapshot(T0, 1);
        assert_eq!(s.slowest.len(), 1);
        let slow = &s.slowest[0];
        assert_eq!((slow.target.as_str(), slow.attempts), ("deploy/run", 100));
        assert!((760.0..=1140.0).contains(&slow.p95_ms), "{slow:?}");
        let both = o.snapshot(T0, 5);
        assert_eq!(both.slowest[1].target, "push/chat");
        assert!((14.0..=23.0).contains(&both.slowest[1].p95_ms), "{both:?}");
    }

    #[test]
    fn queue_depth_readings_a_second_apart_replace_each_other() {
        let o = Overview::default();
        o.queue_depth(T0, 5);
        o.queue_depth(T0 + 500, 7);
        o.queue_depth(T0 + 10_000, 2);
        let s = o.snapshot(T0 + 10_000, 5);
        let got: Vec<(i64, u64)> = s.queue_depth.iter().map(|d| (d.at, d.depth)).collect();
        assert_eq!(got, [(T0 + 500, 7), (T0 + 10_000, 2)]);
        // An hour on, the old readings are dropped.
        o.queue_depth(T0 + 3_700_000, 0);
        assert_eq!(o.snapshot(T0 + 3_700_000, 5).queue_depth.len(), 1);
    }
}
