//! Single-use WebSocket tickets.
//!
//! Browsers cannot set headers on a WebSocket handshake, and a JWT in a URL ends up in
//! proxy logs and browser history. A ticket is the alternative: the page trades its token
//! for a short-lived random string over an authenticated POST, then puts that in the URL.
//! A ticket works once, for 30 seconds, and carries the identity of the token it replaced.
//!
//! On one node the tickets live in this process ([`TicketStore`]). In cluster mode the
//! page may ask one node for a ticket and open its socket on another (a load balancer
//! picks), so the tickets live in Redis instead ([`RedisTickets`]): `SET … PX … NX` to
//! issue, `GETDEL` to redeem, which Redis runs atomically, so a ticket is spent once on
//! whichever node sees it first and never again anywhere. [`Tickets`] is the choice, so
//! the routes do not care which it is.

use super::Identity;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use dashmap::DashMap;
use redis::aio::ConnectionManager;
use std::time::{Duration, Instant};

/// How long one Redis command of a ticket may take: a handshake or a ticket request
/// waits at most this long on a Redis that does not answer.
const REDIS_TIMEOUT: Duration = Duration::from_secs(2);

/// Redis did not store or hand back a ticket (unreachable, slow or in error): the caller
/// answers `503 unavailable`. Names no ticket.
#[derive(Debug, thiserror::Error)]
#[error("the ticket store in Redis is unavailable: {0}")]
pub struct TicketsUnavailable(String);

/// Where this node's tickets live.
pub enum Tickets {
    /// In this process: one node.
    Local(TicketStore),
    /// In Redis, shared by every node of the cluster.
    Shared(RedisTickets),
}

impl Tickets {
    pub fn ttl(&self) -> Duration {
        match self {
            Tickets::Local(store) => store.ttl(),
            Tickets::Shared(store) => store.ttl,
        }
    }

    /// A new ticket standing for `identity`.
    pub async fn issue(&self, identity: Identity) -> Result<String, TicketsUnavailable> {
        match self {
            Tickets::Local(store) => Ok(store.issue(identity)),
            Tickets::Shared(store) => store.issue(&identity).await,
        }
    }

    /// Consumes a ticket: the identity it stands for, if it exists and has not expired.
    pub async fn redeem(&self, ticket: &str) -> Result<Option<Identity>, TicketsUnavailable> {
        match self {
            Tickets::Local(store) => Ok(store.redeem(ticket)),
            Tickets::Shared(store) => store.redeem(ticket).await,
        }
    }
}

/// A random ticket: 256 bits, URL-safe base64 (`[A-Za-z0-9_-]`, 43 characters).
fn new_ticket() -> String {
    let bytes: [u8; 32] = rand::random();
    URL_SAFE_NO_PAD.encode(bytes)
}

/// Whether `ticket` could be one this server issued: anything else is refused without
/// asking Redis.
fn well_formed(ticket: &str) -> bool {
    ticket.len() == 43
        && ticket
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// The cluster's tickets, under `{prefix}:ticket:{ticket}`, each expiring in Redis.
pub struct RedisTickets {
    commands: ConnectionManager,
    prefix: String,
    ttl: Duration,
}

impl RedisTickets {
    pub fn new(commands: ConnectionManager, prefix: &str, ttl: Duration) -> Self {
        Self {
            commands,
            prefix: prefix.to_owned(),
            ttl,
        }
    }

    fn key(&self, ticket: &str) -> String {
        format!("{}:ticket:{ticket}", self.prefix)
    }

    async fn issue(&self, identity: &Identity) -> Result<String, TicketsUnavailable> {
        let value = serde_json::to_string(identity)
            .map_err(|error| TicketsUnavailable(error.to_string()))?;
        let ticket = new_ticket();
        // At least a millisecond: `PX 0` is an error in Redis.
        let ttl_ms = u64::try_from(self.ttl.as_millis())
            .unwrap_or(u64::MAX)
            .max(1);
        let mut set = redis::cmd("SET");
        set.arg(self.key(&ticket))
            .arg(value)
            .arg("PX")
            .arg(ttl_ms)
            .arg("NX");
        let stored: Option<String> = self.query(&set).await?;
        // `NX` refuses only a key that exists: 256 random bits do not collide, but if
        // they did, the other ticket must not be overwritten.
        stored
            .map(|_| ticket)
            .ok_or_else(|| TicketsUnavailable("a new ticket's key was taken".to_owned()))
    }

    async fn redeem(&self, ticket: &str) -> Result<Option<Identity>, TicketsUnavailable> {
        if !well_formed(ticket) {
            return Ok(None);
        }
        let mut getdel = redis::cmd("GETDEL");
        getdel.arg(self.key(ticket));
        let Some(value): Option<String> = self.query(&getdel).await? else {
            return Ok(None);
        };
        match serde_json::from_str(&value) {
            Ok(identity) => Ok(Some(identity)),
            Err(error) => {
                // Another program's value under our key, or an older palisade's: refused.
                tracing::warn!(%error, "a ticket in Redis did not parse; refused");
                Ok(None)
            }
        }
    }

    async fn query<T: redis::FromRedisValue>(
        &self,
        command: &redis::Cmd,
    ) -> Result<T, TicketsUnavailable> {
        let mut commands = self.commands.clone();
        crate::broker::redis::answer_within(REDIS_TIMEOUT, command.query_async(&mut commands))
            .await
            .map_err(TicketsUnavailable)
    }
}

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
        let ticket = new_ticket();
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
        assert!(well_formed(&ticket));
        assert!(store.redeem(&ticket).is_some());
        assert!(store.redeem(&ticket).is_none());
    }

    #[test]
    fn only_a_ticket_of_our_shape_is_looked_up() {
        assert!(well_formed(&new_ticket()));
        for odd in [
            "",
            "short",
            &"a".repeat(44),
            &format!("{}*", "a".repeat(42)),
        ] {
            assert!(!well_formed(odd), "{odd}");
        }
    }

    #[test]
    fn an_identity_survives_its_trip_through_redis_as_json() {
        let mut sent = identity();
        sent.minted_by = crate::auth::jwt::Minter::Palisade;
        sent.rooms = Some(vec!["general".to_owned()]);
        let back: Identity =
            serde_json::from_str(&serde_json::to_string(&sent).expect("serialises"))
                .expect("parses");
        assert_eq!(back.user, sent.user);
        assert_eq!(back.minted_by, sent.minted_by);
        assert_eq!(back.rooms, sent.rooms);
        assert_eq!(
            (back.role, back.expires_at, back.issued_at),
            (sent.role, sent.expires_at, sent.issued_at)
        );
    }

    #[test]
    fn an_expired_ticket_is_refused() {
        let store = TicketStore::new(Duration::ZERO);
        let ticket = store.issue(identity());
        assert!(store.redeem(&ticket).is_none());
    }
}
