//! Stream tickets: short-lived, single-use stand-ins for the admin token on
//! `GET /api/stream`, where a browser's `EventSource` cannot send a header.
//!
//! A ticket is 256 random bits, handed out by `POST /api/stream/ticket` to a
//! holder of the bearer token. It opens one stream, once, within
//! [`TICKET_TTL`]; a URL that ends up in a proxy's access log is worthless by
//! the time anyone reads it. Only digests are kept, so the map's lookups
//! time nothing an attacker could use.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest, Sha256};

/// Long enough for a page to open its stream right after asking, short
/// enough that a logged URL is stale before it is read.
pub const TICKET_TTL: Duration = Duration::from_secs(30);

/// Tickets that may be outstanding at once; past this the one closest to
/// expiry goes. Only token holders can ask, so this bounds memory, nothing more.
const MAX_OUTSTANDING: usize = 1024;

#[derive(Default)]
pub struct StreamTickets {
    /// SHA-256 of the ticket → when it stops being valid.
    live: Mutex<HashMap<[u8; 32], Instant>>,
}

fn digest(ticket: &str) -> [u8; 32] {
    Sha256::digest(ticket.as_bytes()).into()
}

impl StreamTickets {
    /// A new ticket, valid for [`TICKET_TTL`] from now.
    pub fn issue(&self) -> String {
        self.issue_at(Instant::now())
    }

    /// True once for a ticket that was issued and has not expired; it is
    /// gone afterwards either way.
    pub fn redeem(&self, ticket: &str) -> bool {
        self.redeem_at(ticket, Instant::now())
    }

    fn issue_at(&self, now: Instant) -> String {
        let ticket = URL_SAFE_NO_PAD.encode(rand::random::<[u8; 32]>());
        let mut live = self.live.lock().unwrap_or_else(PoisonError::into_inner);
        live.retain(|_, expires| *expires > now);
        if live.len() >= MAX_OUTSTANDING
            && let Some(oldest) = live.iter().min_by_key(|(_, e)| **e).map(|(k, _)| *k)
        {
            live.remove(&oldest);
        }
        live.insert(digest(&ticket), now + TICKET_TTL);
        ticket
    }

    fn redeem_at(&self, ticket: &str, now: Instant) -> bool {
        let mut live = self.live.lock().unwrap_or_else(PoisonError::into_inner);
        live.retain(|_, expires| *expires > now);
        live.remove(&digest(ticket)).is_some()
    }

    #[cfg(test)]
    fn outstanding(&self) -> usize {
        self.live
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ticket_opens_once() {
        let t = StreamTickets::default();
        let ticket = t.issue();
        assert!(t.redeem(&ticket));
        assert!(!t.redeem(&ticket), "single use");
    }

    #[test]
    fn unknown_and_empty_tickets_open_nothing() {
        let t = StreamTickets::default();
        let _ = t.issue();
        assert!(!t.redeem(""));
        assert!(!t.redeem("not-a-ticket"));
    }

    #[test]
    fn an_expired_ticket_opens_nothing() {
        let t = StreamTickets::default();
        let now = Instant::now();
        let ticket = t.issue_at(now);
        assert!(!t.redeem_at(&ticket, now + TICKET_TTL));
        let ticket = t.issue_at(now);
        assert!(t.redeem_at(&ticket, now + TICKET_TTL - Duration::from_millis(1)));
    }

    #[test]
    fn expired_tickets_are_pruned_and_the_map_is_bounded() {
        let t = StreamTickets::default();
        let now = Instant::now();
        for _ in 0..10 {
            t.issue_at(now);
        }
        let later = now + TICKET_TTL + Duration::from_secs(1);
        let fresh = t.issue_at(later);
        assert_eq!(t.outstanding(), 1, "the expired ten are gone");
        for _ in 0..MAX_OUTSTANDING + 5 {
            t.issue_at(later + Duration::from_secs(1));
        }
        assert_eq!(t.outstanding(), MAX_OUTSTANDING);
        assert!(!t.redeem_at(&fresh, later), "the oldest made room");
    }

    #[test]
    fn tickets_are_long_and_distinct() {
        let t = StreamTickets::default();
        let (a, b) = (t.issue(), t.issue());
        assert_ne!(a, b);
        assert_eq!(a.len(), 43, "256 bits, base64url: {a}");
        assert!(
            a.bytes()
                .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_')
        );
    }
}
