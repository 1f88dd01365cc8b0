//! What bounds a WebSocket client: how many connections it may hold, and how fast it
//! may send.
//!
//! [`ConnectionCaps`] counts open connections per client IP, per user and for the whole
//! server; a [`ConnectionSlot`] gives its place back when dropped, however the session
//! ends. [`FrameBudget`] is the per-connection token bucket (via `governor`) plus the
//! abuse rule: too many refusals in a short window close the connection with 1008. Big
//! replies (a `joined` or `history` with many messages) cost more than one token:
//! [`REPLY_BYTES_PER_TOKEN`] each, so a short frame cannot ask for megabytes a second;
//! and they spend a [`ReplyAllowance`] kept per user and per IP, so reconnecting does
//! not buy a fresh budget.

use super::shared_caps::SharedSlot;
use crate::client_ip::{PerIpLimiter, rate_key, take_up_to};
use dashmap::DashMap;
use dashmap::mapref::entry::Entry;
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultDirectRateLimiter, DefaultKeyedRateLimiter, Quota, RateLimiter};
use std::collections::VecDeque;
use std::hash::Hash;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// Which cap refused a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CapRejection {
    ServerFull,
    TooManyForIp,
    TooManyForUser,
}

impl CapRejection {
    pub fn as_str(self) -> &'static str {
        match self {
            CapRejection::ServerFull => "server_full",
            CapRejection::TooManyForIp => "too_many_for_ip",
            CapRejection::TooManyForUser => "too_many_for_user",
        }
    }
}

pub struct ConnectionCaps {
    per_ip: DashMap<IpAddr, usize>,
    per_user: DashMap<String, usize>,
    total: AtomicUsize,
    max_per_ip: usize,
    max_per_user: usize,
    max_total: usize,
    /// IPv6 clients count per network of this many bits (see [`rate_key`]).
    v6_prefix: u8,
}

/// One open connection's place in the counts.
pub struct ConnectionSlot {
    caps: Arc<ConnectionCaps>,
    /// The client IP as counted ([`rate_key`]).
    ip: IpAddr,
    user: String,
    /// The place in the cluster-wide count (cluster mode, when Redis answered).
    shared: Option<SharedSlot>,
}

impl ConnectionSlot {
    /// Holds `shared` with this slot: it is given back with it.
    pub(crate) fn with_shared(mut self, shared: SharedSlot) -> Self {
        self.shared = Some(shared);
        self
    }

    /// Gives back the cluster-wide place now, waiting for Redis (a bounded time), so
    /// the client's next handshake on any node finds it free; the node's own place is
    /// given back on drop.
    pub(crate) async fn release_shared(&mut self) {
        if let Some(shared) = self.shared.take() {
            shared.release().await;
        }
    }
}

impl ConnectionCaps {
    pub fn new(max_per_ip: usize, max_per_user: usize, max_total: usize) -> Self {
        Self {
            per_ip: DashMap::new(),
            per_user: DashMap::new(),
            total: AtomicUsize::new(0),
            max_per_ip,
            max_per_user,
            max_total,
            v6_prefix: 128,
        }
    }

    /// Counts IPv6 clients per network of `v6_prefix` bits instead of per address.
    pub fn with_ipv6_prefix(mut self, v6_prefix: u8) -> Self {
        self.v6_prefix = v6_prefix;
        self
    }

    pub fn is_full(&self) -> bool {
        self.total.load(Ordering::Acquire) >= self.max_total
    }

    pub fn open_connections(&self) -> usize {
        self.total.load(Ordering::Acquire)
    }

    /// Takes a place for a connection from `ip` by `user`, or says which cap is reached.
    pub fn acquire(
        self: &Arc<Self>,
        ip: IpAddr,
        user: &str,
    ) -> Result<ConnectionSlot, CapRejection> {
        self.total
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.max_total).then_some(n + 1)
            })
            .map_err(|_| CapRejection::ServerFull)?;
        let ip = rate_key(ip, self.v6_prefix);
        if !increment_below(&self.per_ip, ip, self.max_per_ip) {
            self.total.fetch_sub(1, Ordering::AcqRel);
            return Err(CapRejection::TooManyForIp);
        }
        if !increment_below(&self.per_user, user.to_owned(), self.max_per_user) {
            decrement(&self.per_ip, ip);
            self.total.fetch_sub(1, Ordering::AcqRel);
            return Err(CapRejection::TooManyForUser);
        }
        Ok(ConnectionSlot {
            caps: Arc::clone(self),
            ip,
            user: user.to_owned(),
            shared: None,
        })
    }
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        decrement(&self.caps.per_user, self.user.clone());
        decrement(&self.caps.per_ip, self.ip);
        self.caps.total.fetch_sub(1, Ordering::AcqRel);
    }
}

pub(crate) fn increment_below<K: Eq + Hash>(map: &DashMap<K, usize>, key: K, max: usize) -> bool {
    let mut count = map.entry(key).or_insert(0);
    if *count >= max {
        return false;
    }
    *count += 1;
    true
}

pub(crate) fn decrement<K: Eq + Hash>(map: &DashMap<K, usize>, key: K) {
    if let Entry::Occupied(mut entry) = map.entry(key) {
        *entry.get_mut() = entry.get().saturating_sub(1);
        if *entry.get() == 0 {
            entry.remove();
        }
    }
}

/// Reply bytes one token of the frame budget pays for: the frame's own token covers the
/// first this many, each further token as many again.
pub const REPLY_BYTES_PER_TOKEN: usize = 64 * 1024;

/// The unit of [`ReplyAllowance`]: reply bytes are counted in KiB, rounded up.
const ALLOWANCE_UNIT: usize = 1024;

/// The reply bytes each user, and each client IP, may pull across all their
/// connections. [`FrameBudget`] bounds one connection, but a handshake with good
/// credentials costs nothing, so without this a client that reconnects between joins
/// would start every connection with a fresh budget. Kept per user (each needs a valid
/// token) and per IP (one address can hold many accounts); a reply spends both.
pub struct ReplyAllowance {
    per_user: DefaultKeyedRateLimiter<String>,
    per_ip: PerIpLimiter,
}

impl ReplyAllowance {
    pub fn new(per_user: Quota, per_ip: Quota, v6_prefix: u8) -> Self {
        Self {
            per_user: RateLimiter::keyed(per_user),
            per_ip: PerIpLimiter::new(per_ip, v6_prefix),
        }
    }

    /// The bytes, at most `wanted`, that a reply to `user` at `ip` may carry: as much as
    /// both allowances hold right now, which is then spent. The user's is asked first: a
    /// user whose own allowance is spent then spends nothing of its address's, so it
    /// cannot drain what its neighbours behind the same address share (the other way
    /// round, a user behind a spent address is charged for what it asked: it refills).
    pub fn take(&self, user: &str, ip: IpAddr, wanted: usize) -> usize {
        let units = u32::try_from(wanted.div_ceil(ALLOWANCE_UNIT)).unwrap_or(u32::MAX);
        let granted = take_up_to(&self.per_user, &user.to_owned(), units);
        let granted = self.per_ip.take_up_to(ip, granted);
        if granted == units {
            return wanted;
        }
        usize::try_from(granted)
            .unwrap_or(usize::MAX)
            .saturating_mul(ALLOWANCE_UNIT)
            .min(wanted)
    }
}

/// What [`FrameBudget::spend`] decided for one frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Spend {
    Allowed,
    /// Not acted on; the client may retry after this long.
    Refused {
        retry_after_ms: u64,
        abusive: bool,
    },
}

pub struct FrameBudget {
    limiter: DefaultDirectRateLimiter,
    refusals: VecDeque<Instant>,
    abuse_refusals: usize,
    abuse_window: Duration,
}

impl FrameBudget {
    pub fn new(per_sec: u32, burst: u32, abuse_refusals: u32, abuse_window: Duration) -> Self {
        let rate = NonZeroU32::new(per_sec).unwrap_or(NonZeroU32::MIN);
        let burst = NonZeroU32::new(burst).unwrap_or(NonZeroU32::MIN);
        Self {
            limiter: RateLimiter::direct(Quota::per_second(rate).allow_burst(burst)),
            refusals: VecDeque::new(),
            abuse_refusals: usize::try_from(abuse_refusals.max(1)).unwrap_or(usize::MAX),
            abuse_window,
        }
    }

    /// Spends one token for a client frame.
    pub fn spend(&mut self) -> Spend {
        match self.limiter.check() {
            Ok(()) => Spend::Allowed,
            Err(not_until) => {
                let wait = not_until.wait_time_from(DefaultClock::default().now());
                let now = Instant::now();
                while self
                    .refusals
                    .front()
                    .is_some_and(|t| now.duration_since(*t) > self.abuse_window)
                {
                    self.refusals.pop_front();
                }
                self.refusals.push_back(now);
                Spend::Refused {
                    retry_after_ms: u64::try_from(wait.as_millis()).unwrap_or(u64::MAX).max(1),
                    abusive: self.refusals.len() >= self.abuse_refusals,
                }
            }
        }
    }

    /// Spends as many of `n` further tokens as the budget holds right now (for a big
    /// reply) and returns how many that was. Never a refusal: the caller sends a smaller
    /// reply instead, and nothing counts towards the abuse rule.
    pub fn spend_up_to(&mut self, n: u32) -> u32 {
        (1..=n)
            .rev()
            .find(|&k| {
                NonZeroU32::new(k).is_some_and(|k| matches!(self.limiter.check_n(k), Ok(Ok(()))))
            })
            .unwrap_or(0)
    }

    /// The bytes a reply may take, at most `cap`, when it would take `wanted`: the
    /// frame's own token pays for the first [`REPLY_BYTES_PER_TOKEN`], and further tokens
    /// are spent, as far as the budget allows, for the rest.
    pub fn afford_reply(&mut self, wanted: usize, cap: usize) -> usize {
        let wanted = wanted.min(cap);
        let extra = wanted.saturating_sub(1) / REPLY_BYTES_PER_TOKEN;
        let granted = self.spend_up_to(u32::try_from(extra).unwrap_or(u32::MAX));
        let paid = usize::try_from(granted)
            .unwrap_or(usize::MAX)
            .saturating_add(1)
            .saturating_mul(REPLY_BYTES_PER_TOKEN);
        paid.min(cap)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([10, 0, 0, last])
    }

    #[test]
    fn caps_count_per_ip_per_user_and_in_total_and_free_on_drop() {
        let caps = Arc::new(ConnectionCaps::new(2, 2, 3));
        let a = caps.acquire(ip(1), "alice").unwrap();
        let _b = caps.acquire(ip(1), "bob").unwrap();
        assert_eq!(
            caps.acquire(ip(1), "carol").err(),
            Some(CapRejection::TooManyForIp)
        );
        let _c = caps.acquire(ip(2), "alice").unwrap();
        assert_eq!(
            caps.acquire(ip(3), "dave").err(),
            Some(CapRejection::ServerFull)
        );
        drop(a);
        let _d = caps
            .acquire(ip(3), "alice")
            .expect("a freed place is free again");
        assert_eq!(caps.open_connections(), 3);
    }

    #[test]
    fn ipv6_clients_in_one_network_share_a_cap() {
        let caps = Arc::new(ConnectionCaps::new(1, 5, 10).with_ipv6_prefix(64));
        let v6 = |s: &str| s.parse::<IpAddr>().unwrap();
        let _a = caps.acquire(v6("2001:db8::1"), "alice").unwrap();
        assert_eq!(
            caps.acquire(v6("2001:db8::2"), "bob").err(),
            Some(CapRejection::TooManyForIp)
        );
        assert!(caps.acquire(v6("2001:db8:0:1::1"), "bob").is_ok());
    }

    #[test]
    fn a_user_cap_refusal_gives_back_the_ip_place() {
        let caps = Arc::new(ConnectionCaps::new(5, 1, 10));
        let _a = caps.acquire(ip(1), "alice").unwrap();
        assert_eq!(
            caps.acquire(ip(1), "alice").err(),
            Some(CapRejection::TooManyForUser)
        );
        assert_eq!(caps.open_connections(), 1);
        assert_eq!(caps.per_ip.get(&ip(1)).map(|c| *c), Some(1));
    }

    #[test]
    fn a_reply_spends_the_users_and_the_addresss_allowance_and_a_spent_user_spends_nothing() {
        let kib =
            |n: u32| Quota::per_minute(NonZeroU32::MIN).allow_burst(NonZeroU32::new(n).unwrap());
        let replies = ReplyAllowance::new(kib(4), kib(6), 64);
        assert_eq!(replies.take("alice", ip(1), 100), 100, "a KiB, rounded up");
        assert_eq!(
            replies.take("alice", ip(1), 10 * 1024),
            3 * 1024,
            "alice's last 3"
        );
        assert_eq!(replies.take("alice", ip(1), 1024), 0);
        assert_eq!(replies.take("alice", ip(2), 1024), 0, "alice's is per user");
        // The address has 2 KiB left: alice's refusals spent none of it.
        assert_eq!(replies.take("bob", ip(1), 4 * 1024), 2 * 1024);
        assert_eq!(
            replies.take("carol", ip(1), 1024),
            0,
            "the address's is shared"
        );
        assert_eq!(replies.take("carol", ip(3), 0), 0);
    }

    #[test]
    fn the_budget_allows_a_burst_then_refuses_then_calls_it_abuse() {
        let mut budget = FrameBudget::new(1, 3, 2, Duration::from_secs(10));
        for _ in 0..3 {
            assert_eq!(budget.spend(), Spend::Allowed);
        }
        assert!(
            matches!(budget.spend(), Spend::Refused { abusive: false, retry_after_ms } if retry_after_ms > 0)
        );
        assert!(matches!(
            budget.spend(),
            Spend::Refused { abusive: true, .. }
        ));
    }

    #[test]
    fn big_replies_spend_one_token_per_64_kib_beyond_the_first_as_far_as_the_budget_goes() {
        const K: usize = REPLY_BYTES_PER_TOKEN;
        let cap = 4 * K;
        let mut budget = FrameBudget::new(1, 10, 2, Duration::from_secs(10));
        assert_eq!(budget.afford_reply(100, cap), K, "a small reply is free");
        assert_eq!(budget.afford_reply(10 * K, cap), cap, "3 tokens: 7 left");
        assert_eq!(budget.afford_reply(cap, cap), cap, "3 tokens: 4 left");
        assert_eq!(budget.afford_reply(3 * K, cap), 3 * K, "2 tokens: 2 left");
        assert_eq!(
            budget.afford_reply(cap, cap),
            3 * K,
            "only 2 tokens: 0 left"
        );
        assert_eq!(
            budget.afford_reply(cap, cap),
            K,
            "nothing left: the first 64 KiB"
        );
        assert!(matches!(
            budget.spend(),
            Spend::Refused { abusive: false, .. }
        ));
    }
}
