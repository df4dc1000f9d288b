//! The live event bus: new events and delivery state changes, fanned out to
//! whoever listens (`GET /api/stream`). Ingest and the dispatcher publish;
//! the admin API subscribes. At the bottom of the crate: it imports nothing
//! from it.
//!
//! With several instances on one database, a [`Relay`] carries what is
//! published here to the others, and what they publish comes back through
//! [`Stream::publish_remote`] — to this process's listeners only, never
//! relayed again, so no message goes round in circles.

use std::sync::Arc;

use serde_json::Value;
use tokio::sync::broadcast;

/// How many messages a slow listener may fall behind before it misses some.
const BUFFER: usize = 1024;

/// Where messages go besides this process's listeners: the other instances
/// sharing the database (their dashboards). Implemented by the store that
/// carries them; no method may wait.
pub trait Relay: Send + Sync {
    /// Whether another instance listens now; while none does, messages are
    /// not even built for the relay.
    fn wanted(&self) -> bool;
    /// Takes one message for the other instances; may drop it under load.
    fn send(&self, message: &Value);
    /// Someone here listens: the other instances are asked to relay theirs.
    fn listening(&self);
}

/// Fan-out of new events and delivery state changes.
#[derive(Clone)]
pub struct Stream {
    local: broadcast::Sender<Value>,
    relay: Option<Arc<dyn Relay>>,
}

impl Default for Stream {
    fn default() -> Self {
        Self {
            local: broadcast::channel(BUFFER).0,
            relay: None,
        }
    }
}

impl Stream {
    /// A bus whose messages also go to the other instances through `relay`.
    pub fn relayed(relay: Arc<dyn Relay>) -> Self {
        Self {
            relay: Some(relay),
            ..Self::default()
        }
    }

    /// Sends to every listener, here and (through the relay) elsewhere;
    /// nobody listening is fine, and then the message is not even built.
    pub fn publish(&self, message: impl FnOnce() -> Value) {
        let relay = self.relay.as_deref().filter(|r| r.wanted());
        let here = self.local.receiver_count() > 0;
        if !here && relay.is_none() {
            return;
        }
        let message = message();
        if let Some(r) = relay {
            r.send(&message);
        }
        if here {
            let _ = self.local.send(message);
        }
    }

    /// A message another instance published: to the listeners here only.
    pub fn publish_remote(&self, message: Value) {
        if self.local.receiver_count() > 0 {
            let _ = self.local.send(message);
        }
    }

    /// A new listener, from the next message on.
    pub fn subscribe(&self) -> broadcast::Receiver<Value> {
        if let Some(r) = &self.relay {
            r.listening();
        }
        self.local.subscribe()
    }

    /// How many listen here now.
    pub fn listeners(&self) -> usize {
        self.local.receiver_count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

    #[derive(Default)]
    struct Recorded {
        wanted: AtomicBool,
        sent: Mutex<Vec<Value>>,
        listening: AtomicUsize,
    }

    impl Relay for Recorded {
        fn wanted(&self) -> bool {
            self.wanted.load(Ordering::SeqCst)
        }
        fn send(&self, message: &Value) {
            self.sent.lock().unwrap().push(message.clone());
        }
        fn listening(&self) {
            self.listening.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn messages_are_relayed_only_while_wanted_and_remote_ones_never() {
        let relay = Arc::new(Recorded::default());
        let stream = Stream::relayed(relay.clone());
        let built = AtomicUsize::new(0);
        let message = || {
            built.fetch_add(1, Ordering::SeqCst);
            serde_json::json!({ "type": "event" })
        };
        stream.publish(message);
        assert_eq!(built.load(Ordering::SeqCst), 0, "nobody anywhere listens");

        relay.wanted.store(true, Ordering::SeqCst);
        stream.publish(message);
        assert_eq!(relay.sent.lock().unwrap().len(), 1);

        let mut rx = stream.subscribe();
        assert_eq!(relay.listening.load(Ordering::SeqCst), 1);
        assert_eq!(stream.listeners(), 1);
        stream.publish_remote(serde_json::json!({ "type": "delivery" }));
        assert_eq!(rx.try_recv().unwrap()["type"], "delivery");
        assert_eq!(
            relay.sent.lock().unwrap().len(),
            1,
            "a remote message is not relayed back"
        );

        relay.wanted.store(false, Ordering::SeqCst);
        stream.publish(message);
        assert_eq!(rx.try_recv().unwrap()["type"], "event");
        assert_eq!(relay.sent.lock().unwrap().len(), 1);
    }
}
