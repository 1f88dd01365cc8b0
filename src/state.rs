//! The shared state every handler and session reaches through [`AppState`].

use crate::auth::Authenticator;
use crate::auth::passwords::Passwords;
use crate::auth::tickets::{RedisTickets, TicketStore, Tickets};
use crate::broker::Broker;
use crate::cluster::{Control, SharedRedis};
use crate::config::Settings;
use crate::hub::outbox::OutboundBudget;
use crate::hub::{ConnId, Hub};
use crate::load::ServerLoad;
use crate::security_log::SecurityLog;
use crate::shared_rates::{IpBudget, SharedRates};
use crate::shutdown::Shutdown;
use crate::store::Store;
use crate::ws::limits::{ConnectionCaps, ReplyAllowance};
use crate::ws::registry::LiveConnections;
use crate::ws::shared_caps::SharedCaps;
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use std::num::NonZeroU32;
use std::ops::Deref;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use tokio_util::task::TaskTracker;

/// Cheap to clone: one `Arc` around everything.
#[derive(Clone)]
pub struct AppState(Arc<Inner>);

pub struct Inner {
    pub settings: Settings,
    pub store: Arc<dyn Store>,
    pub broker: Arc<dyn Broker>,
    pub hub: Arc<Hub>,
    pub auth: Authenticator,
    /// In this process on one node, in Redis in cluster mode.
    pub tickets: Tickets,
    /// The control channel to the other nodes: cluster mode only.
    pub(crate) control: Option<Arc<Control>>,
    pub caps: Arc<ConnectionCaps>,
    /// The per-user cap across the cluster: cluster mode only.
    pub(crate) shared_caps: Option<Arc<SharedCaps>>,
    /// Bytes of `joined` and `history` replies per user and per IP, across connections.
    pub replies: ReplyAllowance,
    /// Bytes in every connection's outbound queue together, and their bound.
    pub outbound: Arc<OutboundBudget>,
    /// Whether the server is busy: writers gather frames only then.
    pub load: Arc<ServerLoad>,
    pub connections: Arc<LiveConnections>,
    /// Register and login attempts per client IP (across the cluster in cluster mode).
    pub auth_limiter: IpBudget,
    /// Register and login attempts for the whole server: per node in every mode, since
    /// it guards this node's hashing cores.
    pub auth_global_limiter: DefaultDirectRateLimiter,
    /// Where every password hash runs: bounded in concurrency and memory.
    pub passwords: Passwords,
    /// Ticket and token renewal requests per client IP (across the cluster in cluster
    /// mode).
    pub ticket_limiter: IpBudget,
    /// Refused credentials per client IP, over HTTP and the WebSocket handshake alike
    /// (across the cluster in cluster mode).
    pub auth_failures: IpBudget,
    /// Throttles repeated security events; its flusher runs with the server.
    pub security_log: Arc<SecurityLog>,
    pub shutdown: Shutdown,
    /// Every WebSocket session (one task per connection), so shutdown can wait for them.
    pub sessions: TaskTracker,
    next_conn_id: AtomicU64,
}

impl AppState {
    /// Shared state around a store, broker and hub, with a fresh stop signal; `redis`
    /// in cluster mode.
    pub(crate) fn new(
        settings: Settings,
        store: Arc<dyn Store>,
        broker: Arc<dyn Broker>,
        hub: Arc<Hub>,
        auth: Authenticator,
        redis: Option<SharedRedis>,
    ) -> Self {
        let limits = &settings.limits;
        let v6_prefix = limits.ipv6_prefix_len;
        let caps = Arc::new(
            ConnectionCaps::new(
                limits.max_connections_per_ip,
                limits.max_connections_per_user,
                limits.max_connections,
            )
            .with_ipv6_prefix(v6_prefix),
        );
        let outbound = OutboundBudget::new(limits.outbound_total_bytes);
        let load = ServerLoad::new(limits.coalesce_busy_percent);
        let ticket_ttl = std::time::Duration::from_secs(limits.ticket_ttl_secs);
        let security_log = Arc::new(SecurityLog::new(
            std::time::Duration::from_secs(limits.security_log_window_secs),
            limits.security_log_burst,
            v6_prefix,
        ));
        let shared_rates = redis.as_ref().map(|redis| {
            Arc::new(SharedRates::new(
                redis.commands.clone(),
                &redis.prefix,
                Arc::clone(&security_log),
            ))
        });
        let shared_caps = redis.as_ref().map(|redis| {
            Arc::new(SharedCaps::new(
                redis.commands.clone(),
                &redis.prefix,
                limits.max_connections_per_user,
                std::time::Duration::from_millis(limits.node_ttl_ms),
            ))
        });
        let (tickets, control) = match redis {
            Some(SharedRedis {
                client,
                commands,
                prefix,
                control,
            }) => (
                Tickets::Shared(RedisTickets::new(commands.clone(), &prefix, ticket_ttl)),
                Some(Arc::new(Control::new(client, commands, &prefix, control))),
            ),
            None => (Tickets::Local(TicketStore::new(ticket_ttl)), None),
        };
        let auth_limiter = IpBudget::new(
            "auth",
            quota_per_minute(limits.auth_per_minute, limits.auth_burst),
            v6_prefix,
            shared_rates.clone(),
        );
        let ticket_limiter = IpBudget::new(
            "tickets",
            quota_per_minute(limits.tickets_per_minute, limits.tickets_per_minute),
            v6_prefix,
            shared_rates.clone(),
        );
        let auth_global_limiter = RateLimiter::direct(quota_per_minute(
            limits.auth_global_per_minute,
            limits.auth_global_burst,
        ));
        let passwords = Passwords::new(
            limits.hash_permits(),
            std::time::Duration::from_millis(limits.hash_wait_ms),
        );
        let auth_failures = IpBudget::new(
            "auth_failures",
            quota_per_minute(
                limits.handshake_failures_per_minute,
                limits.handshake_failure_burst,
            ),
            v6_prefix,
            shared_rates,
        );
        let replies = ReplyAllowance::new(
            quota_per_second(
                limits.reply_kib_per_sec_per_user,
                limits.reply_burst_kib_per_user,
            ),
            quota_per_second(
                limits.reply_kib_per_sec_per_ip,
                limits.reply_burst_kib_per_ip,
            ),
            v6_prefix,
        );
        Self(Arc::new(Inner {
            settings,
            store,
            broker,
            hub,
            auth,
            tickets,
            control,
            caps,
            shared_caps,
            replies,
            outbound,
            load,
            connections: Arc::new(LiveConnections::default()),
            auth_limiter,
            auth_global_limiter,
            passwords,
            ticket_limiter,
            auth_failures,
            security_log,
            shutdown: Shutdown::new(),
            sessions: TaskTracker::new(),
            next_conn_id: AtomicU64::new(1),
        }))
    }

    pub fn next_conn_id(&self) -> ConnId {
        self.0.next_conn_id.fetch_add(1, Ordering::Relaxed)
    }
}

/// `per_minute` with a `burst`; a zero in either counts as one.
fn quota_per_minute(per_minute: u32, burst: u32) -> Quota {
    quota(Quota::per_minute, per_minute, burst)
}

/// `per_sec` with a `burst`; a zero in either counts as one.
fn quota_per_second(per_sec: u32, burst: u32) -> Quota {
    quota(Quota::per_second, per_sec, burst)
}

/// Startup refuses a zero ([`crate::config::Limits::problems`]): only settings built in
/// code, as tests build them, get here with one.
fn quota(per: fn(NonZeroU32) -> Quota, rate: u32, burst: u32) -> Quota {
    let rate = NonZeroU32::new(rate).unwrap_or(NonZeroU32::MIN);
    let burst = NonZeroU32::new(burst).unwrap_or(NonZeroU32::MIN);
    per(rate).allow_burst(burst)
}

impl Deref for AppState {
    type Target = Inner;

    fn deref(&self) -> &Inner {
        &self.0
    }
}
