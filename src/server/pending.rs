//! HTTP connections: accepted, and not (yet) upgraded to a WebSocket.
//!
//! Such a connection costs a socket, a task and buffers, and a slowloris-style client
//! opens thousands of them. Each gets a deadline elsewhere; here they are also counted,
//! per client IP and in total, from accept until they upgrade or close. A keep-alive
//! connection idle between requests counts too: otherwise one cheap request would buy
//! a socket a free pass for the whole header timeout, and one address could hold as many
//! as it can open in that time. A WebSocket session is bounded by its own caps instead.
//! A connection over either cap is closed at once, before any byte is read, and the
//! refusal goes to the throttled security log ([`SecurityLog`]) so a flood cannot flood
//! the log too.

use crate::client_ip::{TrustedProxy, canonical, is_trusted, rate_key};
use crate::security_log::SecurityLog;
use crate::ws::limits::{decrement, increment_below};
use dashmap::DashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Which cap refused a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PendingRejection {
    TooManyForIp,
    TooManyInTotal,
}

impl PendingRejection {
    pub(crate) const ALL: [PendingRejection; 2] = [
        PendingRejection::TooManyForIp,
        PendingRejection::TooManyInTotal,
    ];

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            PendingRejection::TooManyForIp => "too_many_pending_for_ip",
            PendingRejection::TooManyInTotal => "too_many_pending",
        }
    }
}

pub(crate) struct PendingConnections {
    per_ip: DashMap<IpAddr, usize>,
    total: AtomicUsize,
    max_per_ip: usize,
    max_total: usize,
    /// Proxies the operator trusts: every client arrives through them, so they only
    /// count toward the total.
    exempt: Vec<TrustedProxy>,
    /// IPv6 clients count per network of this prefix length ([`rate_key`]).
    v6_prefix: u8,
}

/// One HTTP connection's place in the counts, given back when it is dropped: when the
/// connection upgrades or closes.
pub(crate) struct PendingSlot {
    owner: Arc<PendingConnections>,
    key: Option<IpAddr>,
}

impl PendingConnections {
    pub(crate) fn new(max_per_ip: usize, max_total: usize, exempt: Vec<TrustedProxy>) -> Self {
        Self {
            per_ip: DashMap::new(),
            total: AtomicUsize::new(0),
            max_per_ip,
            max_total,
            exempt,
            v6_prefix: 128,
        }
    }

    /// Counts IPv6 clients per network of this prefix length, like every per-IP limit.
    pub(crate) fn with_ipv6_prefix(mut self, v6_prefix: u8) -> Self {
        self.v6_prefix = v6_prefix;
        self
    }

    /// Takes a place for a new connection from `ip`, or says which cap is reached.
    pub(crate) fn acquire(self: &Arc<Self>, ip: IpAddr) -> Result<PendingSlot, PendingRejection> {
        self.total
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.max_total).then_some(n + 1)
            })
            .map_err(|_| PendingRejection::TooManyInTotal)?;
        // Canonical first, as `client_ip::resolve` does: on a `[::]` listener an IPv4
        // proxy arrives as `::ffff:a.b.c.d` and must still be recognised.
        let ip = canonical(ip);
        let key = (!is_trusted(&self.exempt, ip)).then(|| rate_key(ip, self.v6_prefix));
        if let Some(key) = key
            && !increment_below(&self.per_ip, key, self.max_per_ip)
        {
            self.total.fetch_sub(1, Ordering::AcqRel);
            return Err(PendingRejection::TooManyForIp);
        }
        crate::stats::pending_connections(1.0);
        Ok(PendingSlot {
            owner: Arc::clone(self),
            key,
        })
    }

    /// Counts a refusal for the operator and logs it through the security log, which
    /// throttles a flood of them like every other security event.
    /// Connections counted right now (the gauge's value; tests read it directly).
    #[cfg(test)]
    fn pending(&self) -> usize {
        self.total.load(Ordering::Acquire)
    }

    pub(crate) fn log_refusal(&self, log: &SecurityLog, ip: IpAddr, reason: PendingRejection) {
        crate::stats::connection_refused(reason.as_str());
        let ip = canonical(ip);
        if log.admit(ip, "connection_refused") {
            tracing::warn!(target: "security", event = "connection_refused", %ip, reason = reason.as_str());
        }
    }
}

impl Drop for PendingSlot {
    fn drop(&mut self) {
        if let Some(key) = self.key {
            decrement(&self.owner.per_ip, key);
        }
        self.owner.total.fetch_sub(1, Ordering::AcqRel);
        crate::stats::pending_connections(-1.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([10, 0, 0, last])
    }

    #[test]
    fn pending_connections_are_capped_per_ip_and_in_total() {
        let pending = Arc::new(PendingConnections::new(2, 3, Vec::new()));
        let a = pending.acquire(ip(1)).unwrap();
        let _b = pending.acquire(ip(1)).unwrap();
        assert_eq!(
            pending.acquire(ip(1)).err(),
            Some(PendingRejection::TooManyForIp)
        );
        let _c = pending.acquire(ip(2)).unwrap();
        assert_eq!(
            pending.acquire(ip(3)).err(),
            Some(PendingRejection::TooManyInTotal)
        );
        drop(a);
        assert_eq!(pending.pending(), 2);
        let _d = pending.acquire(ip(1)).expect("a freed place is free again");
    }

    #[test]
    fn a_trusted_proxy_counts_only_toward_the_total() {
        let pending = Arc::new(PendingConnections::new(
            1,
            3,
            vec![TrustedProxy::Address(ip(9))],
        ));
        let _a = pending.acquire(ip(9)).unwrap();
        let _b = pending.acquire(ip(9)).unwrap();
        let _c = pending.acquire(ip(9)).unwrap();
        assert_eq!(
            pending.acquire(ip(9)).err(),
            Some(PendingRejection::TooManyInTotal)
        );
    }

    #[test]
    fn a_trusted_ipv4_proxy_seen_through_a_dual_stack_listener_is_still_exempt() {
        let pending = Arc::new(PendingConnections::new(
            1,
            3,
            vec![TrustedProxy::Address(ip(9))],
        ));
        let mapped: IpAddr = "::ffff:10.0.0.9".parse().unwrap();
        let _a = pending.acquire(mapped).unwrap();
        let _b = pending
            .acquire(mapped)
            .expect("the proxy is not held to the per-IP cap");
        let _c = pending.acquire(ip(9)).unwrap();
        assert_eq!(
            pending.acquire(mapped).err(),
            Some(PendingRejection::TooManyInTotal)
        );
    }
}
