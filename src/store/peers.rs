//! What the instances sharing one database tell each other (SPEC §7): that
//! work is due now, so their dispatchers start it without waiting for their
//! next look at the queue, and their live feed, so that the dashboard of
//! any instance shows every instance's events and delivery changes.
//!
//! The store only carries these signals; it does not know who acts on them.
//! The server rings the dispatcher on [`Heard::Work`] and publishes
//! [`Heard::Feed`] on the local bus, so the store stays below both.

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tokio::sync::mpsc;

/// While anyone listens to the live feed here, this instance says so again
/// this often; the others relay their feed for three times as long after
/// each time they hear it (a dashboard that closes, or an instance that
/// dies, stops the flow by saying nothing).
pub const LISTENING_REFRESH: Duration = Duration::from_secs(10);

/// This instance's line to the others on the same database.
pub struct Peers {
    /// What the others said, in the order heard. Dropping it hangs up:
    /// the store stops listening and sending.
    pub heard: mpsc::Receiver<Heard>,
    /// This instance's live feed, out to the others (see [`crate::bus`]).
    pub relay: Arc<dyn crate::bus::Relay>,
}

/// One thing another instance said.
#[derive(Debug, Clone, PartialEq)]
pub enum Heard {
    /// It committed work that is due now (new deliveries, a retry, a
    /// replay), or the line to the others was (re)opened and something may
    /// have been missed meanwhile: look at the queue now.
    Work,
    /// Messages its live feed published, oldest first, secrets masked.
    Feed(Vec<Value>),
}
