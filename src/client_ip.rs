//! Which address a request comes from, and which budget it spends.
//!
//! The TCP peer, unless the peer is a proxy the operator listed as trusted: then the
//! nearest `X-Forwarded-For` entry that is not itself a trusted proxy. A header sent by
//! anyone else is ignored, so a client cannot forge its way around per-IP caps.
//!
//! `*` in the list says every peer is a proxy: the server is reachable only through a
//! load balancer whose addresses are not known in advance (a hosting platform such as
//! Shuttle's). Then only the entry the peer itself added, the rightmost, is believed;
//! everything left of it came from the client.
//!
//! A trusted proxy that names no usable client (no header, or an entry that is not an
//! address) leaves the client unknown. Unknown is never loopback and never the proxy's
//! own address: such requests are refused with `400 bad_request` naming the header
//! (a correctly configured proxy always sends it), so they can neither reach
//! loopback-only endpoints nor spend, as one crowd, the budget of a real local client.
//!
//! Per-IP limits and caps key on [`rate_key`]: the IPv4 address, or the IPv6 network of
//! the configured prefix (a /64 by default), since one IPv6 host usually holds a whole
//! /64 and could otherwise take a fresh budget per address.

use crate::error::ApiError;
use crate::state::AppState;
use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::HeaderMap;
use axum::http::request::Parts;
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, InsufficientCapacity, Quota, RateLimiter};
use std::fmt;
use std::hash::Hash;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::num::NonZeroU32;
use std::str::FromStr;
use std::time::Duration;

/// One entry of `--trusted-proxies`: a proxy's address, or `*` for every peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TrustedProxy {
    Address(IpAddr),
    /// `*`: every peer is the one proxy in front, see the module docs.
    EveryPeer,
}

impl FromStr for TrustedProxy {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        match text.trim() {
            "*" => Ok(Self::EveryPeer),
            address => address
                .parse()
                .map(|ip| Self::Address(canonical(ip)))
                .map_err(|_| format!("{address:?} is neither an IP address nor *")),
        }
    }
}

impl fmt::Display for TrustedProxy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Address(ip) => ip.fmt(f),
            Self::EveryPeer => f.write_str("*"),
        }
    }
}

/// Whether `ip` (canonical) is a proxy whose `X-Forwarded-For` is believed.
pub(crate) fn is_trusted(trusted: &[TrustedProxy], ip: IpAddr) -> bool {
    trusted.iter().any(|proxy| match proxy {
        TrustedProxy::Address(address) => *address == ip,
        TrustedProxy::EveryPeer => true,
    })
}

/// The client address of a request, see the module docs.
#[derive(Debug, Clone, Copy)]
pub struct ClientIp(pub IpAddr);

impl FromRequestParts<AppState> for ClientIp {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|info| info.0.ip());
        match resolve(peer, &parts.headers, &state.settings.trusted_proxies) {
            Some(ip) => Ok(ClientIp(ip)),
            None => {
                let proxy = peer.map(canonical);
                if state.security_log.admit(proxy, "client_ip_unknown") {
                    tracing::warn!(target: "security", event = "client_ip_unknown", proxy = ?proxy, path = parts.uri.path());
                }
                Err(ApiError::BadRequest(
                    "the trusted proxy sent no usable X-Forwarded-For header".to_owned(),
                ))
            }
        }
    }
}

/// Applies the trusted-proxy rule: `None` when a trusted proxy names no usable client.
/// Without a known peer (an embedder that gives no connection info) every request
/// counts as coming from 0.0.0.0, which is not loopback.
pub(crate) fn resolve(
    peer: Option<IpAddr>,
    headers: &HeaderMap,
    trusted: &[TrustedProxy],
) -> Option<IpAddr> {
    let Some(peer) = peer.map(canonical) else {
        return Some(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
    };
    if !is_trusted(trusted, peer) {
        return Some(peer);
    }
    let hops: Vec<&str> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .collect();
    if trusted.contains(&TrustedProxy::EveryPeer) {
        // The peer vouches for its own entry only: under `*` every address would count
        // as a proxy, and walking left would believe whatever the client wrote.
        return parse_hop(hops.last()?);
    }
    // Right to left: each trusted hop vouches for the one before it. When every hop is a
    // trusted proxy, the leftmost one is where the request started.
    let mut client = None;
    for hop in hops.iter().rev() {
        let ip = parse_hop(hop)?;
        client = Some(ip);
        if !is_trusted(trusted, ip) {
            break;
        }
    }
    client
}

/// An address, with or without a port (`203.0.113.7`, `203.0.113.7:5100`, `[2001:db8::1]:80`).
fn parse_hop(hop: &str) -> Option<IpAddr> {
    hop.parse::<IpAddr>()
        .or_else(|_| hop.parse::<SocketAddr>().map(|socket| socket.ip()))
        .ok()
        .map(canonical)
}

/// IPv4-mapped IPv6 addresses count as the IPv4 address they carry (a dual-stack `[::]`
/// listener reports IPv4 peers that way).
pub(crate) fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// The key per-IP budgets and caps count under: an IPv4 address as it is, an IPv6
/// address masked to its first `v6_prefix` bits (0 and anything over 128 mean 128).
pub(crate) fn rate_key(ip: IpAddr, v6_prefix: u8) -> IpAddr {
    match canonical(ip) {
        IpAddr::V6(v6) => {
            let bits = u32::from(v6_prefix);
            if bits == 0 || bits >= 128 {
                return IpAddr::V6(v6);
            }
            let mask = u128::MAX << (128 - bits);
            IpAddr::V6(Ipv6Addr::from(u128::from(v6) & mask))
        }
        v4 => v4,
    }
}

/// A budget per client, keyed by [`rate_key`]: the IPv4 address or the IPv6 network.
pub(crate) struct PerIpLimiter {
    limiter: DefaultKeyedRateLimiter<IpAddr>,
    v6_prefix: u8,
}

impl PerIpLimiter {
    pub(crate) fn new(quota: Quota, v6_prefix: u8) -> Self {
        Self {
            limiter: RateLimiter::keyed(quota),
            v6_prefix,
        }
    }

    /// Spends one unit of `ip`'s budget, or says how long until there is one.
    pub(crate) fn check(&self, ip: IpAddr) -> Result<(), Duration> {
        forget_idle_keys(&self.limiter);
        self.limiter
            .check_key(&rate_key(ip, self.v6_prefix))
            .map_err(|not_until| not_until.wait_time_from(DefaultClock::default().now()))
    }

    /// Spends as many of `n` units of `ip`'s budget as it holds (see [`take_up_to`]).
    pub(crate) fn take_up_to(&self, ip: IpAddr, n: u32) -> u32 {
        take_up_to(&self.limiter, &rate_key(ip, self.v6_prefix), n)
    }
}

/// Keys a keyed limiter may hold before those whose budget is full again are dropped
/// (they are indistinguishable from a key never seen), so its memory stays bounded.
const KEYED_LIMITER_KEYS: usize = 100_000;

/// Drops the keys of a big keyed limiter that hold a full budget.
pub(crate) fn forget_idle_keys<K: Hash + Eq + Clone>(limiter: &DefaultKeyedRateLimiter<K>) {
    if limiter.len() > KEYED_LIMITER_KEYS {
        limiter.retain_recent();
    }
}

/// Spends as many of `n` units of `key`'s budget as it holds right now and returns how
/// many that was (0 when it is empty). `governor` only spends all or nothing, so a
/// refusal's wait says how many units are missing (one per replenish interval, rounded
/// up) and the rest is asked for; a few attempts cover a concurrent spender of the same
/// key taking some in between.
pub(crate) fn take_up_to<K: Hash + Eq + Clone>(
    limiter: &DefaultKeyedRateLimiter<K>,
    key: &K,
    n: u32,
) -> u32 {
    forget_idle_keys(limiter);
    let Some(mut want) = NonZeroU32::new(n) else {
        return 0;
    };
    for _ in 0..3 {
        let have = match limiter.check_key_n(key, want) {
            Ok(Ok(())) => return want.get(),
            Ok(Err(not_until)) => {
                let wait = not_until.wait_time_from(DefaultClock::default().now());
                let per_unit = not_until.quota().replenish_interval().as_nanos().max(1);
                let missing = wait.as_nanos().div_ceil(per_unit);
                u128::from(want.get()).saturating_sub(missing)
            }
            // More than the burst: ask for the burst.
            Err(InsufficientCapacity(burst)) => u128::from(burst),
        };
        match NonZeroU32::new(u32::try_from(have).unwrap_or(0)) {
            Some(less) => want = less,
            None => return 0,
        }
    }
    0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(xff: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", xff.parse().unwrap());
        h
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn proxies(list: &[&str]) -> Vec<TrustedProxy> {
        list.iter().map(|entry| entry.parse().unwrap()).collect()
    }

    #[test]
    fn an_untrusted_peer_cannot_forge_its_address() {
        assert_eq!(
            resolve(Some(ip("203.0.113.9")), &headers("1.2.3.4"), &[]),
            Some(ip("203.0.113.9"))
        );
    }

    #[test]
    fn a_trusted_proxy_names_the_client_and_spoofed_entries_before_it_are_skipped() {
        let trusted = proxies(&["10.0.0.1", "10.0.0.2"]);
        assert_eq!(
            resolve(
                Some(ip("10.0.0.1")),
                &headers("6.6.6.6, 198.51.100.7, 10.0.0.2"),
                &trusted
            ),
            Some(ip("198.51.100.7"))
        );
        assert_eq!(
            resolve(
                Some(ip("10.0.0.1")),
                &headers("198.51.100.7:4711"),
                &trusted
            ),
            Some(ip("198.51.100.7"))
        );
        assert_eq!(
            resolve(Some(ip("10.0.0.1")), &headers("10.0.0.2"), &trusted),
            Some(ip("10.0.0.2"))
        );
    }

    #[test]
    fn a_trusted_proxy_without_a_usable_header_leaves_the_client_unknown() {
        let trusted = proxies(&["127.0.0.1"]);
        let peer = Some(ip("127.0.0.1"));
        assert_eq!(resolve(peer, &HeaderMap::new(), &trusted), None);
        assert_eq!(resolve(peer, &headers("garbage"), &trusted), None);
        assert_eq!(resolve(peer, &headers(""), &trusted), None);
        assert_eq!(
            resolve(peer, &headers("198.51.100.7, nonsense"), &trusted),
            None
        );
        // A forged entry left of the real client is never looked at.
        assert_eq!(
            resolve(peer, &headers("nonsense, 198.51.100.7"), &trusted),
            Some(ip("198.51.100.7"))
        );
    }

    #[test]
    fn behind_every_peer_only_the_entry_the_peer_added_is_believed() {
        let trusted = proxies(&["*"]);
        let peer = Some(ip("10.1.2.3"));
        assert_eq!(
            resolve(peer, &headers("127.0.0.1, 198.51.100.7"), &trusted),
            Some(ip("198.51.100.7")),
            "an entry the client wrote is never the client"
        );
        assert_eq!(
            resolve(peer, &headers("198.51.100.7, 10.9.9.9"), &trusted),
            Some(ip("10.9.9.9")),
            "one hop: what the peer says, even an address of its own network"
        );
        assert_eq!(resolve(peer, &HeaderMap::new(), &trusted), None);
        assert_eq!(
            resolve(peer, &headers("198.51.100.7, junk"), &trusted),
            None
        );
        // Listed addresses change nothing once every peer is a proxy.
        assert_eq!(
            resolve(
                peer,
                &headers("6.6.6.6, 198.51.100.7"),
                &proxies(&["10.1.2.3", "*"])
            ),
            Some(ip("198.51.100.7"))
        );
    }

    #[test]
    fn a_trusted_proxy_entry_is_an_address_or_a_star() {
        assert_eq!(" * ".parse(), Ok(TrustedProxy::EveryPeer));
        assert_eq!(
            "::ffff:10.0.0.9".parse(),
            Ok(TrustedProxy::Address(ip("10.0.0.9"))),
            "kept canonical, as peers are compared"
        );
        let refused = "10.0.0.0/8".parse::<TrustedProxy>().unwrap_err();
        assert!(refused.contains("10.0.0.0/8"), "{refused}");
        assert_eq!(TrustedProxy::EveryPeer.to_string(), "*");
    }

    #[test]
    fn a_per_ip_budget_is_shared_by_one_ipv6_network_only() {
        let quota = Quota::per_minute(std::num::NonZeroU32::MIN);
        let limiter = PerIpLimiter::new(quota, 64);
        assert!(limiter.check(ip("2001:db8::1")).is_ok());
        let wait = limiter.check(ip("2001:db8::2")).unwrap_err();
        assert!(wait > Duration::ZERO, "{wait:?}");
        assert!(limiter.check(ip("2001:db8:0:1::1")).is_ok());
        assert!(limiter.check(ip("203.0.113.9")).is_ok());
    }

    #[test]
    fn take_up_to_spends_what_a_key_holds_and_never_more_than_the_burst() {
        let quota = Quota::per_minute(std::num::NonZeroU32::MIN)
            .allow_burst(std::num::NonZeroU32::new(10).unwrap());
        let limiter = PerIpLimiter::new(quota, 64);
        let a = ip("203.0.113.9");
        assert_eq!(
            limiter.take_up_to(a, 4),
            4,
            "all of it when there is enough"
        );
        assert_eq!(limiter.take_up_to(a, 10), 6, "what is left");
        assert_eq!(limiter.take_up_to(a, 3), 0, "nothing left");
        assert_eq!(limiter.take_up_to(a, 0), 0);
        let b = ip("203.0.113.10");
        assert_eq!(limiter.take_up_to(b, 100), 10, "at most the burst");
        assert!(limiter.check(b).is_err());
    }

    #[test]
    fn ipv6_keys_are_the_configured_prefix_and_ipv4_keys_the_address() {
        assert_eq!(
            rate_key(ip("2001:db8:1:2:aaaa:bbbb:cccc:dddd"), 64),
            ip("2001:db8:1:2::")
        );
        assert_eq!(
            rate_key(ip("2001:db8:1:2::1"), 64),
            rate_key(ip("2001:db8:1:2:ffff::9"), 64)
        );
        assert_ne!(
            rate_key(ip("2001:db8:1:2::1"), 64),
            rate_key(ip("2001:db8:1:3::1"), 64)
        );
        assert_eq!(rate_key(ip("2001:db8:1:2::1"), 48), ip("2001:db8:1::"));
        assert_eq!(rate_key(ip("2001:db8::1"), 128), ip("2001:db8::1"));
        assert_eq!(rate_key(ip("2001:db8::1"), 0), ip("2001:db8::1"));
        assert_eq!(rate_key(ip("203.0.113.9"), 64), ip("203.0.113.9"));
        assert_eq!(rate_key(ip("::ffff:203.0.113.9"), 64), ip("203.0.113.9"));
    }
}
