//! The delivery lifecycle as a type, and the one pure function that decides
//! what happens after an attempt.
//!
//! `pending → running → succeeded | retrying → running → … | dead | skipped`.
//! [`next`] takes the outcome of an attempt, how many attempts were made, the
//! retry policy, the time and a jitter draw, and returns the next state and
//! when to try again. Nothing else decides a delivery's state.

use std::time::Duration;

use crate::rules::RetryPolicy;
pub use crate::store::DeliveryState;

pub use crate::actions::Outcome;

/// The state after an attempt, and when to run again (for `retrying`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    pub state: DeliveryState,
    pub next_attempt_at_ms: Option<i64>,
}

/// ±20 % jitter, so many deliveries failing together do not retry together.
pub const JITTER: f64 = 0.2;

/// The wait before attempt `made + 1`: `initial` doubling per attempt, capped
/// at `max`, scaled by `1 + jitter` (`jitter` in [-JITTER, JITTER]).
pub fn backoff(policy: &RetryPolicy, made: u32, jitter: f64) -> Duration {
    let doublings = made.saturating_sub(1).min(62);
    let base = policy.initial.as_secs_f64() * 2f64.powi(doublings as i32);
    let capped = base.min(policy.max.as_secs_f64());
    Duration::from_secs_f64((capped * (1.0 + jitter.clamp(-JITTER, JITTER))).max(0.0))
}

/// Decides what follows an attempt. `made` counts attempts including this one.
pub fn next(
    outcome: Outcome,
    made: u32,
    policy: &RetryPolicy,
    now_ms: i64,
    jitter: f64,
) -> Decision {
    let done = |state| Decision {
        state,
        next_attempt_at_ms: None,
    };
    match outcome {
        Outcome::Succeeded => done(DeliveryState::Succeeded),
        Outcome::Skipped => done(DeliveryState::Skipped),
        Outcome::Permanent => done(DeliveryState::Dead),
        Outcome::Retryable { .. } if made >= policy.attempts => done(DeliveryState::Dead),
        Outcome::Retryable { retry_after } => {
            let wait = match retry_after {
                // The target said when; honour it, but never beyond the policy's cap.
                Some(after) => after.min(policy.max),
                None => backoff(policy, made, jitter),
            };
            Decision {
                state: DeliveryState::Retrying,
                next_attempt_at_ms: Some(
                    now_ms.saturating_add(wait.as_millis().min(i64::MAX as u128) as i64),
                ),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(attempts: u32, initial: u64, max: u64) -> RetryPolicy {
        RetryPolicy {
            attempts,
            initial: Duration::from_secs(initial),
            max: Duration::from_secs(max),
        }
    }

    #[test]
    fn default_policy_spans_about_fourteen_hours() {
        let p = RetryPolicy::default();
        let waits: Vec<u64> = (1..p.attempts)
            .map(|n| backoff(&p, n, 0.0).as_secs())
            .collect();
        assert_eq!(
            waits,
            [
                5, 10, 20, 40, 80, 160, 320, 640, 1280, 2560, 5120, 10240, 14400, 14400
            ]
        );
        let total: u64 = waits.iter().sum();
        assert!((13 * 3600..15 * 3600).contains(&total), "{total} s");
    }

    #[test]
    fn jitter_stays_within_twenty_percent() {
        let p = policy(10, 10, 1000);
        assert_eq!(backoff(&p, 1, 0.2), Duration::from_secs(12));
        assert_eq!(backoff(&p, 1, -0.2), Duration::from_secs(8));
        assert_eq!(backoff(&p, 1, 5.0), Duration::from_secs(12), "clamped");
        assert_eq!(
            backoff(&p, 60, 0.0),
            Duration::from_secs(1000),
            "capped, no overflow"
        );
    }

    #[test]
    fn transitions() {
        let p = policy(3, 5, 60);
        let now = 1_000_000;
        let retry = |after| Outcome::Retryable { retry_after: after };
        let cases: &[(Outcome, u32, DeliveryState, Option<i64>)] = &[
            (Outcome::Succeeded, 1, DeliveryState::Succeeded, None),
            (Outcome::Succeeded, 3, DeliveryState::Succeeded, None),
            (Outcome::Permanent, 1, DeliveryState::Dead, None),
            (Outcome::Skipped, 1, DeliveryState::Skipped, None),
            (retry(None), 1, DeliveryState::Retrying, Some(now + 5_000)),
            (retry(None), 2, DeliveryState::Retrying, Some(now + 10_000)),
            (retry(None), 3, DeliveryState::Dead, None),
            (
                retry(Some(Duration::from_secs(30))),
                1,
                DeliveryState::Retrying,
                Some(now + 30_000),
            ),
            (
                retry(Some(Duration::from_secs(3600))),
                1,
                DeliveryState::Retrying,
                Some(now + 60_000),
            ),
            (
                retry(Some(Duration::from_secs(3600))),
                3,
                DeliveryState::Dead,
                None,
            ),
        ];
        for (outcome, made, state, at) in cases {
            let d = next(*outcome, *made, &p, now, 0.0);
            assert_eq!(
                (d.state, d.next_attempt_at_ms),
                (*state, *at),
                "{outcome:?} after {made}"
            );
        }
    }

    #[test]
    fn states_round_trip_through_their_names() {
        for s in DeliveryState::ALL {
            assert_eq!(DeliveryState::parse(s.as_str()), Some(s));
        }
        assert!(DeliveryState::Dead.is_final() && !DeliveryState::Retrying.is_final());
    }
}
