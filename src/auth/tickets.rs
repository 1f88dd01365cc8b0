//! Single-use WebSocket tickets.
//!
//! Browsers cannot set headers on a WebSocket handshake, and a JWT in a URL ends up in
//! proxy logs and browser history. A ticket is the alternative: the page trades its token
//! for a short-lived random string over an authenticated POST, then puts that in the URL.
//! A ticket works once, for 30 seconds, and carries the identity of the token it replaced.

use super::Identity;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use dashmap::DashMap;
use std::time::{Duration, Instant};

/// Outstanding tickets past which expired ones are swept on the next issue.
const SWEEP_THRESHOLD: usize = 1024;

pub struct TicketStore {
    tickets: DashMap<String, (Identity, Instant)>,
    ttl: Duration,
}

impl TicketStore {
    pub fn new(ttl: Duration) -> Self {
        Self {
            tickets: DashMap::new(),
            ttl,
        }
    }

    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// A new ticket: 256 random bits, URL-safe base64 (`[A-Za-z0-9_-]`, 43 characters).
    pub fn issue(&self, identity: Identity) -> String {
        if self.tickets.len() >= SWEEP_THRESHOLD {
            let now = Instant::now();
            self.tickets.retain(|_, (_, expires)| *expires > now);
        }
        let bytes: [u8; 32] = rand::random();
        let ticket = URL_SAFE_NO_PAD.encode(bytes);
        self.tickets
            .insert(ticket.clone(), (identity, Instant::now() + self.ttl));
        ticket
    }

    /// Consumes a ticket: the identity it stands for, if it exists and has not expired.
    pub fn redeem(&self, ticket: &str) -> Option<Identity> {
        let (_, (identity, expires)) = self.tickets.remove(ticket)?;
        (Instant::now() < expires).then_some(identity)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Role, UserRef};

    fn identity() -> Identity {
        Identity {
            user: UserRef {
                id: "u".into(),
                name: "alice".into(),
            },
            role: Role::User,
            rooms: None,
            expires_at: 0,
            issued_at: 0,
            minted_by: Default::default(),
        }
    }

    #[test]
    fn a_ticket_works_once() {
        let store = TicketStore::new(Duration::from_secs(30));
        let ticket = store.issue(identity());
        assert_eq!(ticket.len(), 43);
        assert!(
            ticket
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        );
        assert!(store.redeem(&ticket).is_some());
        assert!(store.redeem(&ticket).is_none());
    }

    #[test]
    fn an_expired_ticket_is_refused() {
        let store = TicketStore::new(Duration::ZERO);
        let ticket = store.issue(identity());
        assert!(store.redeem(&ticket).is_none());
    }
}
