//! Whether the store can commit, as its commits tell.
//!
//! The first commit that fails (disk full, database unreachable, I/O error)
//! turns the store *failing*: one log line says so, `/readyz` answers 503,
//! and further failures are only counted. The first commit that writes
//! something again turns it back: one line says how long it lasted and how
//! many events were refused meanwhile. A commit that wrote nothing (a claim
//! that found no due delivery) proves nothing either way, because on a full
//! disk it still succeeds.
//!
//! While failing, a small probe commit is tried every [`PROBE_EVERY`] (see
//! `sqlite.rs`), so that readiness comes back when space does, even when no
//! request arrives. The probe writes a row and deletes it again: it never
//! leaves anything behind to fill the disk.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use super::StoreError;

/// How often a failing store tries a probe commit.
pub const PROBE_EVERY: Duration = Duration::from_secs(1);

#[derive(Default)]
pub struct Health {
    /// Mirrors `failure.is_some()`, read without the lock on every request.
    failing: AtomicBool,
    failure: Mutex<Option<Failure>>,
}

struct Failure {
    since: Instant,
    error: String,
    failed_commits: u64,
    refused: u64,
}

impl Health {
    pub fn is_failing(&self) -> bool {
        self.failing.load(Ordering::Relaxed)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Failure>> {
        self.failure.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A transaction could not be committed.
    pub fn commit_failed(&self, error: &StoreError) {
        crate::telemetry::store_commit_failed();
        let mut failure = self.lock();
        match failure.as_mut() {
            Some(f) => f.failed_commits += 1,
            None => {
                // "database or disk is full", without the kind's prefix.
                let error = error.message();
                crate::telemetry::StoreFailing { error: &error }.emit();
                *failure = Some(Failure {
                    since: Instant::now(),
                    error,
                    failed_commits: 1,
                    refused: 0,
                });
                self.failing.store(true, Ordering::Relaxed);
            }
        }
    }

    /// A transaction that changed rows was committed.
    pub fn committed(&self) {
        if !self.is_failing() {
            return;
        }
        if let Some(f) = self.lock().take() {
            self.failing.store(false, Ordering::Relaxed);
            crate::telemetry::StoreRecovered {
                after: f.since.elapsed(),
                refused: f.refused,
                failed_commits: f.failed_commits,
            }
            .emit();
        }
    }

    /// An event could not be stored (its request is answered 503).
    pub fn refused(&self) {
        if !self.is_failing() {
            return;
        }
        if let Some(f) = self.lock().as_mut() {
            f.refused += 1;
        }
    }

    /// Why the store cannot commit, while it cannot.
    pub fn check(&self) -> Result<(), StoreError> {
        if !self.is_failing() {
            return Ok(());
        }
        match self.lock().as_ref() {
            None => Ok(()),
            Some(f) => Err(StoreError::Unavailable(format!(
                "cannot commit for {} s: {}",
                f.since.elapsed().as_secs(),
                f.error
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failure_and_its_recovery_are_one_state_change_each() {
        let h = Health::default();
        assert!(h.check().is_ok());
        h.refused();
        h.committed();
        assert!(!h.is_failing());
        h.commit_failed(&StoreError::Unavailable("database or disk is full".into()));
        h.commit_failed(&StoreError::Unavailable("database or disk is full".into()));
        h.refused();
        h.refused();
        assert!(h.is_failing());
        let e = h.check().unwrap_err().to_string();
        assert!(e.contains("database or disk is full"), "{e}");
        {
            let f = h.lock();
            let f = f.as_ref().unwrap();
            assert_eq!((f.failed_commits, f.refused), (2, 2));
        }
        h.committed();
        assert!(!h.is_failing());
        assert!(h.check().is_ok());
        assert!(h.lock().is_none());
    }
}
