//! The live event bus: new events and delivery state changes, fanned out to
//! whoever listens (`GET /api/stream`). Ingest and the dispatcher publish;
//! the admin API subscribes. At the bottom of the crate: it imports nothing
//! from it.

use serde_json::Value;
use tokio::sync::broadcast;

/// How many messages a slow listener may fall behind before it misses some.
const BUFFER: usize = 1024;

/// Fan-out of new events and delivery state changes.
#[derive(Clone)]
pub struct Stream(broadcast::Sender<Value>);

impl Default for Stream {
    fn default() -> Self {
        Self(broadcast::channel(BUFFER).0)
    }
}

impl Stream {
    /// Sends to every listener; nobody listening is fine, and then the
    /// message is not even built.
    pub fn publish(&self, message: impl FnOnce() -> Value) {
        if self.0.receiver_count() > 0 {
            let _ = self.0.send(message());
        }
    }

    /// A new listener, from the next message on.
    pub fn subscribe(&self) -> broadcast::Receiver<Value> {
        self.0.subscribe()
    }
}
