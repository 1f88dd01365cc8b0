//! Per-IP rate limits across a cluster (`--redis-url`): register and login, tickets, and
//! refused credentials. Behind a load balancer a client spreading its requests over N
//! nodes would otherwise get N times every per-IP budget.
//!
//! Each budget is first this node's own governor limiter ([`PerIpLimiter`]): cheap, and a
//! node alone never lets more through than the quota. In cluster mode a request it lets
//! through then spends the same quota in Redis, counted over every node: one Lua script
//! per check runs governor's algorithm (GCRA) on the key
//! `{prefix}:rate:{limit}:{ip_key}`, `ip_key` being [`rate_key`] (so an IPv6 network
//! still counts as one client). The key holds the budget's "theoretical arrival time"
//! and expires when the budget would be full again, so an idle client leaves nothing
//! behind.
//!
//! The script reads the time from Redis (`TIME`), not from the node: GCRA compares a
//! time stored by one node with the time of another, so a node whose clock is a few
//! seconds ahead would see that many seconds of refill more (and one behind, less) on
//! every client. Redis is the one clock every node shares.
//!
//! If Redis does not answer within [`SHARED_TIMEOUT`], the node's own limiter (which let
//! the request through) decides alone and a warning is logged, throttled: a limit is not
//! a reason to refuse everyone, nor to hold every login up. The server-wide budget that
//! guards the node's hashing cores is not here: it protects each node's own CPU.

use crate::broker::redis::answer_within;
use crate::client_ip::{PerIpLimiter, rate_key};
use crate::security_log::SecurityLog;
use governor::Quota;
use redis::aio::ConnectionManager;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

/// How long a check waits for Redis before the node's own limiter decides alone: short,
/// since a login or a handshake waits for it.
const SHARED_TIMEOUT: Duration = Duration::from_millis(250);

/// KEYS[1] the client's budget; ARGV: the interval between two units (ms), the burst's
/// tolerance (ms: the interval times the burst less one). Answers 0 (allowed, spent) or
/// the milliseconds until one is allowed. As governor: refused while now < TAT - tau;
/// allowed, TAT becomes max(TAT, now) + interval.
const CHECK_SCRIPT: &str = r"
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
local interval = tonumber(ARGV[1])
local tat = tonumber(redis.call('GET', KEYS[1])) or now
if tat < now then
  tat = now
end
local earliest = tat - tonumber(ARGV[2])
if now < earliest then
  return earliest - now
end
local later = tat + interval
redis.call('SET', KEYS[1], later, 'PX', later - now)
return 0
";

/// The cluster's side of the per-IP budgets: one per node, shared by every budget.
pub(crate) struct SharedRates {
    commands: ConnectionManager,
    prefix: String,
    log: Arc<SecurityLog>,
}

impl SharedRates {
    pub(crate) fn new(commands: ConnectionManager, prefix: &str, log: Arc<SecurityLog>) -> Self {
        Self {
            commands,
            prefix: prefix.to_owned(),
            log,
        }
    }
}

/// A quota as the script takes it, in whole milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Gcra {
    interval_ms: u64,
    tau_ms: u64,
}

impl Gcra {
    fn of(quota: Quota) -> Self {
        let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        let interval = quota.replenish_interval();
        let tau = interval.saturating_mul(quota.burst_size().get() - 1);
        Self {
            interval_ms: ms(interval).max(1),
            tau_ms: ms(tau),
        }
    }
}

/// The key of `limit`'s budget for a client: one per IPv4 address or IPv6 network.
fn key_of(prefix: &str, limit: &str, ip_key: IpAddr) -> String {
    format!("{prefix}:rate:{limit}:{ip_key}")
}

/// The script's answer: allowed, or how long until it is.
fn verdict(answer: i64) -> Result<(), Duration> {
    match u64::try_from(answer) {
        Ok(0) | Err(_) => Ok(()),
        Ok(ms) => Err(Duration::from_millis(ms)),
    }
}

/// A per-IP budget: this node's limiter, and in cluster mode the cluster's.
pub struct IpBudget {
    /// Names the budget's keys in Redis.
    limit: &'static str,
    local: PerIpLimiter,
    shared: Option<Arc<SharedRates>>,
    gcra: Gcra,
    v6_prefix: u8,
}

impl IpBudget {
    /// `limit` names it in Redis; `shared` is `None` on a single node.
    pub(crate) fn new(
        limit: &'static str,
        quota: Quota,
        v6_prefix: u8,
        shared: Option<Arc<SharedRates>>,
    ) -> Self {
        Self {
            limit,
            local: PerIpLimiter::new(quota, v6_prefix),
            shared,
            gcra: Gcra::of(quota),
            v6_prefix,
        }
    }

    /// Spends one unit of `ip`'s budget, or says how long until there is one. On a
    /// single node this is the node's limiter alone and never waits.
    pub async fn check(&self, ip: IpAddr) -> Result<(), Duration> {
        self.local.check(ip)?;
        match &self.shared {
            None => Ok(()),
            Some(shared) => self.check_shared(shared, ip).await,
        }
    }

    async fn check_shared(&self, shared: &SharedRates, ip: IpAddr) -> Result<(), Duration> {
        let mut check = redis::cmd("EVAL");
        check
            .arg(CHECK_SCRIPT)
            .arg(1)
            .arg(key_of(
                &shared.prefix,
                self.limit,
                rate_key(ip, self.v6_prefix),
            ))
            .arg(self.gcra.interval_ms)
            .arg(self.gcra.tau_ms);
        let mut commands = shared.commands.clone();
        let why = match answer_within(SHARED_TIMEOUT, check.query_async::<i64>(&mut commands)).await
        {
            Ok(answer) => return verdict(answer),
            Err(why) => why,
        };
        // One line per window for the whole node, whichever client: an outage touches
        // every request at once.
        if shared.log.admit(None, "shared_rate_unavailable") {
            tracing::warn!(limit = self.limit, %why,
                "the shared per-IP rate limit is unavailable; this node's own limit decides");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::num::NonZeroU32;

    const REDIS: &str = "127.0.0.1:6379";

    /// The machine's Redis, reached through a relay that stalls (keeps the connection
    /// open and forwards nothing) once `true` is sent; `None`: no Redis, skip the test
    /// (a failure with `PALISADE_REQUIRE_SERVICES=1`).
    async fn stallable_redis() -> Option<(ConnectionManager, tokio::sync::watch::Sender<bool>)> {
        if tokio::net::TcpStream::connect(REDIS).await.is_err() {
            assert!(
                std::env::var("PALISADE_REQUIRE_SERVICES").as_deref() != Ok("1"),
                "PALISADE_REQUIRE_SERVICES=1 but there is no Redis at {REDIS}"
            );
            eprintln!("SKIPPED: no Redis at {REDIS}");
            return None;
        }
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("redis://{}", listener.local_addr().unwrap());
        let (stall, stalled) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let mut stalled = stalled.clone();
                tokio::spawn(async move {
                    let mut outbound = tokio::net::TcpStream::connect(REDIS).await.unwrap();
                    let stalled_now = tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => false,
                        held = async { stalled.wait_for(|stalled| *stalled).await.is_ok() } => held,
                    };
                    if stalled_now {
                        // Held open, unanswered, until the test ends.
                        while stalled.changed().await.is_ok() {}
                    }
                });
            }
        });
        // A client that would wait a minute for an answer: only the check's own bound
        // keeps a request from waiting as long.
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_response_timeout(Some(Duration::from_secs(60)));
        let commands = redis::Client::open(url)
            .unwrap()
            .get_connection_manager_with_config(config)
            .await
            .unwrap();
        Some((commands, stall))
    }

    fn shared(commands: ConnectionManager) -> (Arc<SharedRates>, String) {
        let prefix = format!("palisade-t-{}", uuid::Uuid::new_v4().simple());
        let log = Arc::new(SecurityLog::new(Duration::from_secs(60), 5, 64));
        (Arc::new(SharedRates::new(commands, &prefix, log)), prefix)
    }

    fn per_minute(rate: u32, burst: u32) -> Quota {
        Quota::per_minute(NonZeroU32::new(rate).unwrap())
            .allow_burst(NonZeroU32::new(burst).unwrap())
    }

    #[tokio::test]
    async fn the_script_answers_as_governor_does_and_its_key_expires_when_the_budget_is_full() {
        let Some((commands, _stall)) = stallable_redis().await else {
            return;
        };
        let (shared, prefix) = shared(commands.clone());
        let quota = per_minute(1, 3);
        let budget = IpBudget::new("test", quota, 64, Some(shared.clone()));
        let governor = PerIpLimiter::new(quota, 64);
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let client = ip("2001:db8::1");
        for _ in 0..3 {
            assert_eq!(governor.check(client), Ok(()));
            assert_eq!(budget.check_shared(&shared, client).await, Ok(()));
        }
        let local_wait = governor.check(client).unwrap_err();
        let shared_wait = budget.check_shared(&shared, client).await.unwrap_err();
        for wait in [local_wait, shared_wait] {
            assert!(
                wait > Duration::from_secs(59) && wait <= Duration::from_secs(60),
                "one unit: a minute, {wait:?}"
            );
        }
        // The same /64, the same budget; another client, another.
        assert!(
            budget
                .check_shared(&shared, ip("2001:db8::2"))
                .await
                .is_err()
        );
        assert_eq!(
            budget.check_shared(&shared, ip("2001:db8:0:1::1")).await,
            Ok(())
        );

        let mut commands = commands;
        let ttl: i64 = redis::cmd("PTTL")
            .arg(format!("{prefix}:rate:test:2001:db8::"))
            .query_async(&mut commands)
            .await
            .unwrap();
        assert!(
            (170_000..=180_000).contains(&ttl),
            "three minutes to refill: {ttl}"
        );
    }

    #[tokio::test]
    async fn a_hung_redis_leaves_the_decision_to_the_node_within_the_bound() {
        let Some((commands, stall)) = stallable_redis().await else {
            return;
        };
        let (shared, _) = shared(commands);
        let budget = IpBudget::new("test", per_minute(1, 2), 64, Some(shared));
        let client: IpAddr = "203.0.113.9".parse().unwrap();
        assert_eq!(budget.check(client).await, Ok(()));
        stall.send(true).unwrap();
        let answered = tokio::time::timeout(Duration::from_secs(2), budget.check(client)).await;
        assert_eq!(answered, Ok(Ok(())), "allowed by the node, in time");
        // The node's own budget of two is spent, Redis or not.
        assert!(budget.check(client).await.is_err());
    }

    #[test]
    fn keys_name_the_prefix_the_limit_and_the_client_s_ipv4_address_or_ipv6_network() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(
            key_of("palisade", "auth", rate_key(ip("203.0.113.9"), 64)),
            "palisade:rate:auth:203.0.113.9"
        );
        assert_eq!(
            key_of(
                "p",
                "auth_failures",
                rate_key(ip("2001:db8:1:2:aaaa::1"), 64)
            ),
            "p:rate:auth_failures:2001:db8:1:2::"
        );
        assert_eq!(
            key_of("p", "tickets", rate_key(ip("2001:db8:1:2:bbbb::7"), 64)),
            key_of("p", "tickets", rate_key(ip("2001:db8:1:2::"), 64)),
            "one IPv6 network, one budget"
        );
        assert_eq!(
            key_of("p", "tickets", rate_key(ip("::ffff:203.0.113.9"), 64)),
            "p:rate:tickets:203.0.113.9"
        );
    }

    #[test]
    fn the_script_s_zero_allows_and_a_positive_answer_is_the_wait() {
        assert_eq!(verdict(0), Ok(()));
        assert_eq!(verdict(1500), Err(Duration::from_millis(1500)));
        assert_eq!(verdict(1), Err(Duration::from_millis(1)));
        // Never from the script; not a reason to refuse.
        assert_eq!(verdict(-3), Ok(()));
    }

    #[test]
    fn a_quota_becomes_governor_s_interval_and_burst_tolerance_in_milliseconds() {
        let per_minute = |rate: u32, burst: u32| {
            Gcra::of(
                Quota::per_minute(NonZeroU32::new(rate).unwrap())
                    .allow_burst(NonZeroU32::new(burst).unwrap()),
            )
        };
        assert_eq!(
            per_minute(10, 10),
            Gcra {
                interval_ms: 6_000,
                tau_ms: 54_000
            }
        );
        assert_eq!(
            per_minute(60, 1),
            Gcra {
                interval_ms: 1_000,
                tau_ms: 0
            }
        );
        // Never a zero interval, which would be no limit at all; the burst's tolerance
        // is the real one, not that of the rounded interval.
        let fast = Gcra::of(Quota::per_second(NonZeroU32::new(1_000_000).unwrap()));
        assert_eq!(
            fast,
            Gcra {
                interval_ms: 1,
                tau_ms: 999
            }
        );
    }
}
