//! Configuration, layered: built-in defaults, then an optional `Secrets.toml`, then
//! `PALISADE_*` environment variables, then command-line flags (the last one wins).
//!
//! Defaults are the embedded, single-node setup of `cargo run`: SQLite under `./data`,
//! in-memory fan-out, 127.0.0.1:8000 and every limit of the wire contract. Production
//! mode refuses to start unless the settings that must not be guessed are given.

use crate::auth::jwt::{JwtConfig, PublicKeyAlgorithm};
pub use crate::client_ip::TrustedProxy;
use crate::dev_secret::{self, DevSecretError};
use crate::origin::{Origin, OriginPolicy};
use clap::{ArgAction, Args, CommandFactory, Parser, ValueEnum};
use secrecy::SecretString;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// The shortest JWT secret accepted in production (HS256 wants at least 256 bits).
pub const MIN_SECRET_BYTES: usize = 32;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Environment {
    Development,
    Production,
}

/// Every number of the wire contract marked *(config)*, plus the server's own bounds.
#[derive(Clone, Debug, Args)]
pub struct Limits {
    /// Largest client frame / message, in bytes (bigger closes with 1009). Never below
    /// what a `send` of `max_body_chars` characters needs ([`frame_bytes_for_body`]): a
    /// smaller value is raised to that, so a valid body is never refused for its size.
    #[arg(long, env = "PALISADE_MAX_MESSAGE_BYTES", default_value_t = DEFAULT_LIMITS.max_message_bytes)]
    pub max_message_bytes: usize,
    /// Frames each connection may send per second, on average.
    #[arg(long, env = "PALISADE_MESSAGES_PER_SEC", default_value_t = DEFAULT_LIMITS.messages_per_sec)]
    pub messages_per_sec: u32,
    /// Frames a connection may send at once before the rate applies.
    #[arg(long, env = "PALISADE_MESSAGE_BURST", default_value_t = DEFAULT_LIMITS.message_burst)]
    pub message_burst: u32,
    /// Refused frames within `abuse_window_secs` that close the connection with 1008.
    #[arg(long, env = "PALISADE_ABUSE_REFUSALS", default_value_t = DEFAULT_LIMITS.abuse_refusals)]
    pub abuse_refusals: u32,
    #[arg(long, env = "PALISADE_ABUSE_WINDOW_SECS", default_value_t = DEFAULT_LIMITS.abuse_window_secs)]
    pub abuse_window_secs: u64,
    /// Rooms one connection may be in at once.
    #[arg(long, env = "PALISADE_MAX_ROOMS_PER_CONNECTION", default_value_t = DEFAULT_LIMITS.max_rooms_per_connection)]
    pub max_rooms_per_connection: usize,
    /// Longest message body, in characters.
    #[arg(long, env = "PALISADE_MAX_BODY_CHARS", default_value_t = DEFAULT_LIMITS.max_body_chars)]
    pub max_body_chars: usize,
    /// Messages sent with `joined` when the client gives no `since`.
    #[arg(long, env = "PALISADE_JOIN_HISTORY", default_value_t = DEFAULT_LIMITS.join_history)]
    pub join_history: u32,
    /// Users a room may have for joins and leaves to be announced one by one
    /// (`presence` frames, and the full list in `joined.members`). In a bigger room they
    /// are counted instead: `occupancy` frames, at most one per member per
    /// `presence_count_ms`, and a sample of the members in `joined`.
    #[arg(long, env = "PALISADE_PRESENCE_FULL_MAX", default_value_t = DEFAULT_LIMITS.presence_full_max)]
    pub presence_full_max: usize,
    /// How often, in milliseconds, a big room's members are told its new count.
    #[arg(long, env = "PALISADE_PRESENCE_COUNT_MS", default_value_t = DEFAULT_LIMITS.presence_count_ms)]
    pub presence_count_ms: u64,
    /// Cluster mode: how long, in milliseconds, a node's entries in Redis count without a
    /// refresh: its users' presence and its connections' places under the per-user cap
    /// alike (each node refreshes its own every third of it). A node killed without a
    /// word leaves its users listed as online this long, plus up to a third, and holds
    /// their connection places at most this long. Every node of a cluster should use the
    /// same.
    #[arg(long, env = "PALISADE_NODE_TTL_MS", default_value_t = DEFAULT_LIMITS.node_ttl_ms)]
    pub node_ttl_ms: u64,
    /// With TLS: how often, in milliseconds, the certificate and key files are checked
    /// for a change (their modification time and size); a changed pair is loaded for new
    /// handshakes, as on SIGHUP, so a renewal needs no signal.
    #[arg(long, env = "PALISADE_TLS_WATCH_MS", default_value_t = DEFAULT_LIMITS.tls_watch_ms)]
    pub tls_watch_ms: u64,
    /// Most messages a `join` with `since` replays; past it `complete` is false.
    #[arg(long, env = "PALISADE_REPLAY_MAX", default_value_t = DEFAULT_LIMITS.replay_max)]
    pub replay_max: u32,
    /// Most bytes of messages one `joined` or `history` reply carries; past it the oldest
    /// are left out (`complete:false` on `joined`, `truncated:true` on `history`). Beyond
    /// the first 64 KiB a reply also spends one frame-budget token per 64 KiB.
    #[arg(long, env = "PALISADE_REPLAY_MAX_BYTES", default_value_t = DEFAULT_LIMITS.replay_max_bytes)]
    pub replay_max_bytes: usize,
    /// Reply bytes (of `joined` and `history` messages), in KiB per second, that one user
    /// may pull across all of its connections: reconnecting does not start afresh. When
    /// it is spent, replies get smaller (newest kept) rather than refused.
    #[arg(long, env = "PALISADE_REPLY_KIB_PER_SEC_PER_USER", default_value_t = DEFAULT_LIMITS.reply_kib_per_sec_per_user)]
    pub reply_kib_per_sec_per_user: u32,
    /// KiB of replies one user may pull at once before the rate applies.
    #[arg(long, env = "PALISADE_REPLY_BURST_KIB_PER_USER", default_value_t = DEFAULT_LIMITS.reply_burst_kib_per_user)]
    pub reply_burst_kib_per_user: u32,
    /// The same for each client IP, whatever accounts it uses: many accounts from one
    /// address share this.
    #[arg(long, env = "PALISADE_REPLY_KIB_PER_SEC_PER_IP", default_value_t = DEFAULT_LIMITS.reply_kib_per_sec_per_ip)]
    pub reply_kib_per_sec_per_ip: u32,
    #[arg(long, env = "PALISADE_REPLY_BURST_KIB_PER_IP", default_value_t = DEFAULT_LIMITS.reply_burst_kib_per_ip)]
    pub reply_burst_kib_per_ip: u32,
    /// Outbound frames queued per connection before it is closed with 4008.
    #[arg(long, env = "PALISADE_OUTBOUND_QUEUE", default_value_t = DEFAULT_LIMITS.outbound_queue)]
    pub outbound_queue: usize,
    /// Outbound bytes queued per connection before it is closed with 4008.
    #[arg(long, env = "PALISADE_OUTBOUND_QUEUE_BYTES", default_value_t = DEFAULT_LIMITS.outbound_queue_bytes)]
    pub outbound_queue_bytes: usize,
    /// Outbound bytes queued for all connections together. Past it, a connection with
    /// more than 256 KiB queued is closed with 4008 at its next frame, and past a quarter
    /// more, any connection with frames waiting is; one that keeps up never is.
    #[arg(long, env = "PALISADE_OUTBOUND_TOTAL_BYTES", default_value_t = DEFAULT_LIMITS.outbound_total_bytes)]
    pub outbound_total_bytes: usize,
    /// Open WebSocket connections per client IP.
    #[arg(long, env = "PALISADE_MAX_CONNECTIONS_PER_IP", default_value_t = DEFAULT_LIMITS.max_connections_per_ip)]
    pub max_connections_per_ip: usize,
    /// Open WebSocket connections per user.
    #[arg(long, env = "PALISADE_MAX_CONNECTIONS_PER_USER", default_value_t = DEFAULT_LIMITS.max_connections_per_user)]
    pub max_connections_per_user: usize,
    /// Open WebSocket connections for the whole server.
    #[arg(long, env = "PALISADE_MAX_CONNECTIONS", default_value_t = DEFAULT_LIMITS.max_connections)]
    pub max_connections: usize,
    /// Seconds between server pings.
    #[arg(long, env = "PALISADE_HEARTBEAT_SECS", default_value_t = DEFAULT_LIMITS.heartbeat_secs)]
    pub heartbeat_secs: u64,
    /// Seconds of silence from the client (no pong, no frame) before closing with 4002.
    #[arg(long, env = "PALISADE_PONG_TIMEOUT_SECS", default_value_t = DEFAULT_LIMITS.pong_timeout_secs)]
    pub pong_timeout_secs: u64,
    /// Lifetime of the tokens palisade issues, in seconds.
    #[arg(long, env = "PALISADE_TOKEN_TTL_SECS", default_value_t = DEFAULT_LIMITS.token_ttl_secs)]
    pub token_ttl_secs: u64,
    /// Lifetime of a WebSocket ticket, in seconds.
    #[arg(long, env = "PALISADE_TICKET_TTL_SECS", default_value_t = DEFAULT_LIMITS.ticket_ttl_secs)]
    pub ticket_ttl_secs: u64,
    /// Largest API request body, in bytes (bigger is 413).
    #[arg(long, env = "PALISADE_API_BODY_BYTES", default_value_t = DEFAULT_LIMITS.api_body_bytes)]
    pub api_body_bytes: usize,
    /// Ticket requests per client IP per minute (and their burst).
    #[arg(long, env = "PALISADE_TICKETS_PER_MINUTE", default_value_t = DEFAULT_LIMITS.tickets_per_minute)]
    pub tickets_per_minute: u32,
    /// Seconds an API request may take before it is answered `408 request_timeout`.
    #[arg(long, env = "PALISADE_REQUEST_TIMEOUT_SECS", default_value_t = DEFAULT_LIMITS.request_timeout_secs)]
    pub request_timeout_secs: u64,
    /// Register and login attempts per client IP per minute.
    #[arg(long, env = "PALISADE_AUTH_PER_MINUTE", default_value_t = DEFAULT_LIMITS.auth_per_minute)]
    pub auth_per_minute: u32,
    #[arg(long, env = "PALISADE_AUTH_BURST", default_value_t = DEFAULT_LIMITS.auth_burst)]
    pub auth_burst: u32,
    /// Seconds a new connection has to finish its TLS handshake, and then the headers of
    /// each request; a keep-alive connection idle for as long is closed.
    #[arg(long, env = "PALISADE_HEADER_TIMEOUT_SECS", default_value_t = DEFAULT_LIMITS.header_timeout_secs)]
    pub header_timeout_secs: u64,
    /// Seconds a write to a client (HTTP or WebSocket) may make no progress before the
    /// connection is dropped.
    #[arg(long, env = "PALISADE_WRITE_STALL_SECS", default_value_t = DEFAULT_LIMITS.write_stall_secs)]
    pub write_stall_secs: u64,
    /// Milliseconds a closing WebSocket gets for its last frames and close frame to
    /// leave, and then as long again for the client's answer; the socket is dropped
    /// after that whatever the client does.
    #[arg(long, env = "PALISADE_CLOSE_GRACE_MS", default_value_t = DEFAULT_LIMITS.close_grace_ms)]
    pub close_grace_ms: u64,
    /// While the server is busy: the longest a busy connection (one written to within
    /// the last 40 ms) gathers frames after a write before writing them together (it
    /// writes as soon as it has four); 0 never waits.
    #[arg(long, env = "PALISADE_COALESCE_MS", default_value_t = DEFAULT_LIMITS.coalesce_ms)]
    pub coalesce_ms: u64,
    /// The server turns busy, for `coalesce_ms`, once its worker threads spend at least
    /// this percent of their time running tasks, and quiet after a second below a third of it; 0
    /// counts it busy always.
    #[arg(long, env = "PALISADE_COALESCE_BUSY_PERCENT", default_value_t = DEFAULT_LIMITS.coalesce_busy_percent)]
    pub coalesce_busy_percent: u8,
    /// Connections from one client IP that have not upgraded to a WebSocket (idle
    /// keep-alive ones included); more are closed at once (trusted proxies are exempt).
    #[arg(long, env = "PALISADE_MAX_PENDING_CONNECTIONS_PER_IP", default_value_t = DEFAULT_LIMITS.max_pending_connections_per_ip)]
    pub max_pending_connections_per_ip: usize,
    /// Connections in total that have not upgraded to a WebSocket (idle keep-alive ones
    /// included).
    #[arg(long, env = "PALISADE_MAX_PENDING_CONNECTIONS", default_value_t = DEFAULT_LIMITS.max_pending_connections)]
    pub max_pending_connections: usize,
    /// Register and login attempts per minute for the whole server, whatever their IPs:
    /// many addresses together cannot keep every core hashing.
    #[arg(long, env = "PALISADE_AUTH_GLOBAL_PER_MINUTE", default_value_t = DEFAULT_LIMITS.auth_global_per_minute)]
    pub auth_global_per_minute: u32,
    #[arg(long, env = "PALISADE_AUTH_GLOBAL_BURST", default_value_t = DEFAULT_LIMITS.auth_global_burst)]
    pub auth_global_burst: u32,
    /// Password hashes (Argon2id, 19 MiB each) that may run at once; 0 means one per CPU
    /// core, at most 4. Hashing never holds more than this many times 19 MiB, and gives
    /// it back once no hash runs or waits.
    #[arg(long, env = "PALISADE_HASH_CONCURRENCY", default_value_t = DEFAULT_LIMITS.hash_concurrency)]
    pub hash_concurrency: usize,
    /// Milliseconds a register or login waits for a hashing slot before it is answered
    /// `503 unavailable` with `Retry-After`.
    #[arg(long, env = "PALISADE_HASH_WAIT_MS", default_value_t = DEFAULT_LIMITS.hash_wait_ms)]
    pub hash_wait_ms: u64,
    /// IPv6 clients count per network of this prefix length for every per-IP budget and
    /// cap (one host usually holds a whole /64); 128 counts each address.
    #[arg(long, env = "PALISADE_IPV6_PREFIX_LEN", default_value_t = DEFAULT_LIMITS.ipv6_prefix_len,
          value_parser = clap::value_parser!(u8).range(1..=128))]
    pub ipv6_prefix_len: u8,
    /// Refused credentials per client IP per minute, on the WebSocket handshake and on
    /// every HTTP route that needs a token alike (the name is older than the HTTP side);
    /// past the burst, that client's failures are answered `429 rate_limited` instead of
    /// `401`. Good credentials spend nothing and are never refused by this budget;
    /// expired and not-yet-valid tokens spend nothing either.
    #[arg(long, env = "PALISADE_HANDSHAKE_FAILURES_PER_MINUTE", default_value_t = DEFAULT_LIMITS.handshake_failures_per_minute)]
    pub handshake_failures_per_minute: u32,
    #[arg(long, env = "PALISADE_HANDSHAKE_FAILURE_BURST", default_value_t = DEFAULT_LIMITS.handshake_failure_burst)]
    pub handshake_failure_burst: u32,
    /// Security events of one kind from one client written per window; the rest are
    /// summed up in one line when the window ends.
    #[arg(long, env = "PALISADE_SECURITY_LOG_BURST", default_value_t = DEFAULT_LIMITS.security_log_burst)]
    pub security_log_burst: u32,
    #[arg(long, env = "PALISADE_SECURITY_LOG_WINDOW_SECS", default_value_t = DEFAULT_LIMITS.security_log_window_secs)]
    pub security_log_window_secs: u64,
}

/// The most bytes one body character can take in a frame: a character outside the Basic
/// Multilingual Plane written as two `\uXXXX` escapes, as ASCII-only JSON encoders (Python's
/// `json.dumps`, for one) write it. Raw UTF-8 needs at most 4.
pub const MAX_FRAME_BYTES_PER_BODY_CHAR: usize = 12;

/// Room in a `send` frame for everything but the body: `type`, `id`, `room` and `nonce`
/// (64 characters each, even fully escaped) and the field names.
pub const SEND_ENVELOPE_BYTES: usize = 1024;

/// The frame size a `send` needs for a body of `max_body_chars` characters of any kind,
/// however a client's JSON encoder escapes them (without padding whitespace).
pub const fn frame_bytes_for_body(max_body_chars: usize) -> usize {
    max_body_chars
        .saturating_mul(MAX_FRAME_BYTES_PER_BODY_CHAR)
        .saturating_add(SEND_ENVELOPE_BYTES)
}

/// The longest security log window: a day, the most the log itself holds to.
pub const MAX_SECURITY_LOG_WINDOW_SECS: u64 = 24 * 3600;

/// The longest a writer may gather frames: past it, a person notices the wait.
pub const MAX_COALESCE_MS: u64 = 100;

/// The longest wait, lifetime or interval a setting may ask for: a year.
pub const MAX_WAIT_SECS: u64 = 365 * 24 * 3600;

/// How a limit field is named to the operator: `messages_per_sec` is
/// `--messages-per-sec (PALISADE_MESSAGES_PER_SEC)`.
fn setting_name(field: &str) -> String {
    format!(
        "--{} (PALISADE_{})",
        field.replace('_', "-"),
        field.to_uppercase()
    )
}

/// The contract's defaults, in one place for both clap and [`Limits::default`].
pub const DEFAULT_LIMITS: Limits = Limits {
    max_message_bytes: frame_bytes_for_body(2000),
    messages_per_sec: 5,
    message_burst: 10,
    abuse_refusals: 10,
    abuse_window_secs: 10,
    max_rooms_per_connection: 32,
    max_body_chars: 2000,
    join_history: 50,
    presence_full_max: crate::hub::DEFAULT_PRESENCE_FULL_MAX,
    presence_count_ms: 2000,
    node_ttl_ms: 30_000,
    // A stat of two files: cheap, and a renewed certificate is served within seconds.
    tls_watch_ms: 5000,
    replay_max: 500,
    replay_max_bytes: 256 * 1024,
    // A sustained full reply a second per user, and eight at once: a tab that reconnects
    // (its own frame budget pays for about 640 KiB at once) several times over.
    reply_kib_per_sec_per_user: 256,
    reply_burst_kib_per_user: 2048,
    // Four users' worth per address: a NAT of many people reconnecting after an outage
    // gets smaller replays (and pages back) rather than none.
    reply_kib_per_sec_per_ip: 1024,
    reply_burst_kib_per_ip: 8192,
    outbound_queue: 256,
    // Room for what one client can ask for at once, with live traffic besides: at these
    // defaults each 64 KiB of a reply costs a frame-budget token (the request's own pays
    // for the first), so a full burst of 10 pulls at most 640 KiB of replies; the other
    // 384 KiB hold ~48 of the largest messages (many more typical ones).
    outbound_queue_bytes: 1024 * 1024,
    outbound_total_bytes: 256 * 1024 * 1024,
    max_connections_per_ip: 20,
    max_connections_per_user: 5,
    max_connections: 10_000,
    heartbeat_secs: 25,
    pong_timeout_secs: 60,
    token_ttl_secs: 15 * 60,
    ticket_ttl_secs: 30,
    api_body_bytes: 16 * 1024,
    tickets_per_minute: 60,
    request_timeout_secs: 10,
    auth_per_minute: 10,
    auth_burst: 10,
    header_timeout_secs: 10,
    write_stall_secs: 30,
    close_grace_ms: 3000,
    // Gathering turns a hot room's many tiny packets into a few larger ones: a batch is
    // written at four frames or 80 ms after the last write, so a connection receiving
    // 50 msg/s writes four frames a packet (14 ms, the old wait, never saw a second
    // frame there; 60 gave three) and one receiving 100 msg/s waits ~40 ms, not 80;
    // docs/performance.md has the CPU against latency for 14 to 100. Under 30 % of the
    // workers' time (what issue #11 calls light load) the CPU it saves is not needed,
    // and a frame leaves at once.
    coalesce_ms: 80,
    coalesce_busy_percent: 30,
    max_pending_connections_per_ip: 32,
    max_pending_connections: 2048,
    auth_global_per_minute: 600,
    auth_global_burst: 100,
    hash_concurrency: 0,
    hash_wait_ms: 2000,
    ipv6_prefix_len: 64,
    handshake_failures_per_minute: 30,
    handshake_failure_burst: 50,
    security_log_burst: 5,
    security_log_window_secs: 10,
};

impl Default for Limits {
    fn default() -> Self {
        DEFAULT_LIMITS
    }
}

impl Limits {
    /// The frame limit the server enforces and advertises in `welcome`: the configured
    /// one, raised if needed so a body within `max_body_chars` always fits.
    pub fn frame_limit(&self) -> usize {
        self.max_message_bytes
            .max(frame_bytes_for_body(self.max_body_chars))
    }

    /// What is wrong with these limits, one sentence each naming the flag (and its
    /// variable) and the rule; empty when they can work. Refused at start rather than
    /// quietly raised: a zero rate, burst, interval, lifetime, size or cap would make
    /// every connection, request or message fail (or, for a rate, mean one), and an
    /// operator who wrote `0` for "unlimited" learns at once that it is not.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        macro_rules! at_least_one {
            ($($field:ident),+ $(,)?) => {$(
                if self.$field == 0 {
                    problems.push(format!(
                        "{} must be at least 1 (got 0)",
                        setting_name(stringify!($field))
                    ));
                }
            )+};
        }
        at_least_one!(
            messages_per_sec,
            message_burst,
            abuse_refusals,
            abuse_window_secs,
            max_rooms_per_connection,
            max_body_chars,
            reply_kib_per_sec_per_user,
            reply_burst_kib_per_user,
            reply_kib_per_sec_per_ip,
            reply_burst_kib_per_ip,
            outbound_queue,
            outbound_queue_bytes,
            outbound_total_bytes,
            max_connections_per_ip,
            max_connections_per_user,
            max_connections,
            heartbeat_secs,
            pong_timeout_secs,
            token_ttl_secs,
            ticket_ttl_secs,
            api_body_bytes,
            tickets_per_minute,
            request_timeout_secs,
            auth_per_minute,
            auth_burst,
            header_timeout_secs,
            write_stall_secs,
            close_grace_ms,
            max_pending_connections_per_ip,
            max_pending_connections,
            auth_global_per_minute,
            auth_global_burst,
            handshake_failures_per_minute,
            handshake_failure_burst,
            security_log_window_secs,
            presence_count_ms,
            node_ttl_ms,
            tls_watch_ms,
        );
        // A wait longer than a year is a typo, not a policy, and a clock reading plus
        // a duration near u64::MAX overflows (a panic at the first connection).
        macro_rules! at_most_a_year {
            ($unit:expr, $($field:ident),+ $(,)?) => {$(
                if self.$field > MAX_WAIT_SECS * $unit {
                    problems.push(format!(
                        "{} must be at most {} (a year; got {})",
                        setting_name(stringify!($field)),
                        MAX_WAIT_SECS * $unit,
                        self.$field
                    ));
                }
            )+};
        }
        at_most_a_year!(
            1,
            abuse_window_secs,
            heartbeat_secs,
            pong_timeout_secs,
            token_ttl_secs,
            ticket_ttl_secs,
            request_timeout_secs,
            header_timeout_secs,
            write_stall_secs,
        );
        at_most_a_year!(
            1000,
            close_grace_ms,
            hash_wait_ms,
            presence_count_ms,
            node_ttl_ms,
            tls_watch_ms
        );
        if self.heartbeat_secs > 0 && self.pong_timeout_secs <= self.heartbeat_secs {
            problems.push(format!(
                "{} must be longer than {} (got {} and {}): a client that only answers pings would be closed",
                setting_name("pong_timeout_secs"),
                setting_name("heartbeat_secs"),
                self.pong_timeout_secs,
                self.heartbeat_secs
            ));
        }
        if self.coalesce_ms > MAX_COALESCE_MS {
            problems.push(format!(
                "{} must be at most {MAX_COALESCE_MS} (got {}): frames would wait longer than a person notices",
                setting_name("coalesce_ms"),
                self.coalesce_ms
            ));
        }
        if self.coalesce_busy_percent > 100 {
            problems.push(format!(
                "{} must be at most 100 (got {})",
                setting_name("coalesce_busy_percent"),
                self.coalesce_busy_percent
            ));
        }
        if self.security_log_window_secs > MAX_SECURITY_LOG_WINDOW_SECS {
            problems.push(format!(
                "{} must be at most {MAX_SECURITY_LOG_WINDOW_SECS} (got {})",
                setting_name("security_log_window_secs"),
                self.security_log_window_secs
            ));
        }
        problems
    }

    /// [`Limits::coalesce_ms`] as a duration.
    pub fn coalesce(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.coalesce_ms)
    }

    /// [`Limits::close_grace_ms`] as a duration.
    pub fn close_grace(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.close_grace_ms)
    }

    /// [`Limits::hash_concurrency`] with `0` resolved to the number of cores, at most 4:
    /// a burst of logins then costs at most 4 x 19 MiB (under the 100 MiB a burst may add),
    /// and more slots would only trade that memory for faster sign-ins during a flood.
    pub fn hash_permits(&self) -> usize {
        match self.hash_concurrency {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get().min(4)),
            n => n,
        }
    }
}

/// Command-line flags; each also reads a `PALISADE_*` environment variable.
#[derive(Debug, Parser)]
#[command(name = "palisade", version, about = "A secure real-time chat server")]
pub struct Cli {
    /// `development` fills in safe local defaults; `production` insists on explicit secrets.
    #[arg(long, env = "PALISADE_ENV", value_enum, default_value = "development")]
    pub env: Environment,
    /// Address to listen on (port 0 picks a free port).
    #[arg(long, env = "PALISADE_LISTEN", default_value = "127.0.0.1:8000")]
    pub listen: SocketAddr,
    /// `sqlite://path` (default `sqlite://./data/palisade.db`).
    #[arg(long, env = "PALISADE_DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,
    /// `redis://host:port` of the Redis that the nodes of a cluster (sharing one
    /// PostgreSQL database) fan room events out through; unset, one node serves alone.
    #[arg(long, env = "PALISADE_REDIS_URL", hide_env_values = true)]
    pub redis_url: Option<String>,
    /// Prefix of the Redis channels (`{prefix}:room:{room}`): clusters sharing one Redis
    /// each need their own.
    #[arg(long, env = "PALISADE_REDIS_PREFIX", default_value = DEFAULT_REDIS_PREFIX)]
    pub redis_prefix: String,
    /// HS256 secret for the tokens palisade issues and accepts (at least 32 bytes).
    #[arg(long, env = "PALISADE_JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<String>,
    /// PEM public key of an external token issuer (the operator's own app).
    #[arg(long, env = "PALISADE_JWT_PUBLIC_KEY")]
    pub jwt_public_key: Option<PathBuf>,
    /// The one algorithm tokens signed for `--jwt-public-key` use.
    #[arg(long, env = "PALISADE_JWT_PUBLIC_KEY_ALGORITHM", value_enum)]
    pub jwt_public_key_algorithm: Option<PublicKeyAlgorithm>,
    /// Expected `iss` claim; tokens palisade issues carry it.
    #[arg(long, env = "PALISADE_JWT_ISSUER")]
    pub jwt_issuer: Option<String>,
    /// Expected `aud` claim; tokens palisade issues carry it.
    #[arg(long, env = "PALISADE_JWT_AUDIENCE")]
    pub jwt_audience: Option<String>,
    /// Comma-separated browser origins allowed to open the WebSocket and call the API
    /// (`*` allows every origin and must be said explicitly).
    #[arg(long, env = "PALISADE_ALLOWED_ORIGINS", value_delimiter = ',')]
    pub allowed_origins: Vec<String>,
    /// Lets production mode accept `*` in the origin list: every web site on the internet
    /// may then open sockets and call the API with its visitors' credentials.
    #[arg(long, env = "PALISADE_DANGEROUSLY_ALLOW_ANY_ORIGIN")]
    pub dangerously_allow_any_origin: bool,
    /// Whether a handshake without an `Origin` header (not a browser) is accepted.
    #[arg(long, env = "PALISADE_ALLOW_MISSING_ORIGIN", default_value_t = true, action = ArgAction::Set)]
    pub allow_missing_origin: bool,
    /// Comma-separated proxy addresses whose `X-Forwarded-For` is believed; `*` when
    /// every peer is a proxy (only a load balancer can reach the server): then only the
    /// entry the peer added is believed. Empty: none.
    #[arg(long, env = "PALISADE_TRUSTED_PROXIES", value_delimiter = ',')]
    pub trusted_proxies: Vec<String>,
    /// Comma-separated account ids (the `user.id` register answers) whose logins and
    /// renewals get the `admin` role. Ids, not names: a name nobody registered yet could be
    /// claimed by anyone.
    #[arg(long, env = "PALISADE_ADMIN_USERS", value_delimiter = ',')]
    pub admin_users: Vec<String>,
    /// Optional TOML file of secrets (keys as in `Secrets.toml.example`).
    #[arg(long, env = "PALISADE_SECRETS_FILE", default_value = "Secrets.toml")]
    pub secrets_file: PathBuf,
    /// PEM certificate chain: with `--tls-key`, serve https:// and wss://.
    #[arg(long, env = "PALISADE_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of `--tls-cert`.
    #[arg(long, env = "PALISADE_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Folder of the web client served at `/`.
    #[arg(long, env = "PALISADE_FRONTEND_DIR")]
    pub frontend_dir: Option<PathBuf>,
    #[command(flatten)]
    pub limits: Limits,
}

/// The validated settings the server runs with.
#[derive(Clone, Debug)]
pub struct Settings {
    pub environment: Environment,
    pub listen: SocketAddr,
    pub database_url: String,
    /// Redis for cluster mode's fan-out; `None`: this node alone (the embedded broker).
    pub redis_url: Option<String>,
    pub redis_prefix: String,
    pub jwt_secret: SecretString,
    pub jwt_public_key: Option<PathBuf>,
    pub jwt_public_key_algorithm: Option<PublicKeyAlgorithm>,
    pub jwt_issuer: Option<String>,
    pub jwt_audience: Option<String>,
    pub origins: OriginPolicy,
    pub trusted_proxies: Vec<TrustedProxy>,
    /// Account ids (lowercase UUIDs) with the admin role.
    pub admin_users: Vec<String>,
    /// Certificate chain and key files: TLS on when set.
    pub tls: Option<(PathBuf, PathBuf)>,
    pub frontend_dir: PathBuf,
    pub limits: Limits,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("production mode needs: {}", .0.join("; "))]
    MissingForProduction(Vec<String>),
    #[error("production mode refuses to start: {}", .0.join("; "))]
    UnsafeForProduction(Vec<String>),
    #[error(
        "invalid allowed origin {0:?}: expected scheme://host[:port], e.g. https://chat.example.com"
    )]
    BadOrigin(String),
    #[error("cannot read secrets file {path}: {reason}")]
    SecretsFile { path: PathBuf, reason: String },
    #[error(
        "--admin-users takes account ids (the user.id that register answers), not names: {0:?} is not one"
    )]
    AdminUserNotAnId(String),
    /// Limits that cannot work, one sentence each naming the flag and the rule.
    #[error("{}", .0.join("; "))]
    BadLimits(Vec<String>),
    /// A `PALISADE_*` variable that does not parse, where no command line reports it
    /// (the Shuttle entrypoint parses the environment alone).
    #[error("invalid PALISADE_* environment: {0}")]
    BadEnvironment(String),
    #[error(
        "invalid trusted proxy (--trusted-proxies, PALISADE_TRUSTED_PROXIES or TRUSTED_PROXIES): {0}"
    )]
    BadTrustedProxy(String),
    #[error(transparent)]
    DevSecret(#[from] DevSecretError),
}

pub const DEFAULT_DATABASE_URL: &str = "sqlite://./data/palisade.db";
pub const DEFAULT_REDIS_PREFIX: &str = "palisade";
pub const DEFAULT_ORIGINS: [&str; 2] = ["http://localhost:8000", "http://127.0.0.1:8000"];

impl Settings {
    /// Development settings with a fresh random secret: what tests and `cargo run` start from.
    pub fn development() -> Self {
        Self {
            environment: Environment::Development,
            listen: SocketAddr::from(([127, 0, 0, 1], 8000)),
            database_url: DEFAULT_DATABASE_URL.to_owned(),
            redis_url: None,
            redis_prefix: DEFAULT_REDIS_PREFIX.to_owned(),
            jwt_secret: random_secret(),
            jwt_public_key: None,
            jwt_public_key_algorithm: None,
            jwt_issuer: None,
            jwt_audience: None,
            origins: OriginPolicy::new(
                DEFAULT_ORIGINS
                    .iter()
                    .filter_map(|o| Origin::parse(o))
                    .collect(),
                true,
            ),
            trusted_proxies: Vec::new(),
            admin_users: Vec::new(),
            tls: None,
            frontend_dir: default_frontend_dir(),
            limits: Limits::default(),
        }
    }

    /// The settings the JWT keys are made from.
    pub fn jwt_config(&self) -> JwtConfig {
        JwtConfig {
            secret: self.jwt_secret.clone(),
            public_key: self.jwt_public_key.clone(),
            public_key_algorithm: self.jwt_public_key_algorithm,
            issuer: self.jwt_issuer.clone(),
            audience: self.jwt_audience.clone(),
            ttl_secs: self.limits.token_ttl_secs,
        }
    }

    /// Applies the layers (the secrets from `--secrets-file`) and the production checks.
    pub fn from_cli(cli: Cli) -> Result<Self, ConfigError> {
        let secrets = read_secrets_file(&cli.secrets_file)?;
        let source = cli.secrets_file.display().to_string();
        Self::from_cli_and_secrets(cli, &secrets, &source)
    }

    /// [`Settings::from_cli`] with secrets from elsewhere (Shuttle's secret store), under
    /// the keys of the secrets file; `source` names them in warnings.
    pub fn from_cli_and_secrets(
        cli: Cli,
        secrets: &BTreeMap<String, String>,
        source: &str,
    ) -> Result<Self, ConfigError> {
        let bad_limits = cli.limits.problems();
        if !bad_limits.is_empty() {
            return Err(ConfigError::BadLimits(bad_limits));
        }
        let env_names: Vec<String> = std::env::vars_os()
            .map(|(name, _)| name.to_string_lossy().into_owned())
            .collect();
        for warning in ignored_settings(&env_names, secrets.keys(), source) {
            tracing::warn!("{warning}");
        }
        let from_secrets = |key: &str| secrets.get(key).filter(|v| !v.is_empty()).cloned();
        // As with origins, an empty value (`PALISADE_TRUSTED_PROXIES=`) lists none.
        let trusted_proxies: Vec<String> = if cli.trusted_proxies.is_empty() {
            from_secrets("TRUSTED_PROXIES")
                .map(|list| list.split(',').map(str::to_owned).collect())
                .unwrap_or_default()
        } else {
            cli.trusted_proxies
        };
        let trusted_proxies = trusted_proxies
            .iter()
            .filter(|entry| !entry.trim().is_empty())
            .map(|entry| entry.parse().map_err(ConfigError::BadTrustedProxy))
            .collect::<Result<Vec<TrustedProxy>, _>>()?;

        let jwt_secret = cli.jwt_secret.or_else(|| from_secrets("JWT_SECRET"));
        let database_url = cli.database_url.or_else(|| from_secrets("DATABASE_URL"));
        let origins_given = if cli.allowed_origins.is_empty() {
            from_secrets("ALLOWED_ORIGINS")
                .map(|list| list.split(',').map(str::to_owned).collect::<Vec<_>>())
                .unwrap_or_default()
        } else {
            cli.allowed_origins
        };
        let origins_given: Vec<String> = origins_given
            .into_iter()
            .map(|o| o.trim().to_owned())
            .filter(|o| !o.is_empty())
            .collect();

        if cli.env == Environment::Production {
            let mut missing = Vec::new();
            match &jwt_secret {
                None => missing.push(format!(
                    "a JWT secret (PALISADE_JWT_SECRET or JWT_SECRET in Secrets.toml) of at least {MIN_SECRET_BYTES} bytes"
                )),
                Some(s) if s.len() < MIN_SECRET_BYTES => missing.push(format!(
                    "a longer JWT secret: {} bytes given, at least {MIN_SECRET_BYTES} required",
                    s.len()
                )),
                Some(_) => {}
            }
            if origins_given.is_empty() {
                missing.push(
                    "an explicit origin list (PALISADE_ALLOWED_ORIGINS or ALLOWED_ORIGINS in Secrets.toml, e.g. https://chat.example.com)"
                        .to_owned(),
                );
            }
            if !missing.is_empty() {
                return Err(ConfigError::MissingForProduction(missing));
            }
            let unsafe_settings = production_hazards(
                &origins_given,
                cli.dangerously_allow_any_origin,
                cli.listen,
                cli.tls_cert.is_some() && cli.tls_key.is_some(),
                !trusted_proxies.is_empty(),
            );
            if !unsafe_settings.is_empty() {
                return Err(ConfigError::UnsafeForProduction(unsafe_settings));
            }
        }

        if let Some(secret) = &jwt_secret
            && secret.len() < MIN_SECRET_BYTES
        {
            tracing::warn!("the JWT secret is shorter than {MIN_SECRET_BYTES} bytes");
        }

        let origins = if origins_given.is_empty() {
            Settings::development()
                .origins
                .with_allow_missing(cli.allow_missing_origin)
        } else if origins_given.iter().any(|o| o == "*") {
            tracing::warn!("PALISADE_ALLOWED_ORIGINS is '*': every web site may open sockets here");
            OriginPolicy::any(cli.allow_missing_origin)
        } else {
            let parsed = origins_given
                .iter()
                .map(|o| Origin::parse(o).ok_or_else(|| ConfigError::BadOrigin(o.clone())))
                .collect::<Result<Vec<_>, _>>()?;
            OriginPolicy::new(parsed, cli.allow_missing_origin)
        };

        let admin_users = admin_ids(&cli.admin_users)?;
        let database_url = database_url.unwrap_or_else(|| DEFAULT_DATABASE_URL.to_owned());
        // Last, once every other setting is known good: no file is made for a server
        // that would not start anyway.
        let jwt_secret = match jwt_secret {
            Some(secret) => SecretString::from(secret),
            None => development_secret(&database_url)?,
        };

        Ok(Self {
            environment: cli.env,
            listen: cli.listen,
            database_url,
            redis_url: cli.redis_url.filter(|url| !url.is_empty()),
            redis_prefix: cli.redis_prefix,
            jwt_secret,
            jwt_public_key: cli.jwt_public_key,
            jwt_public_key_algorithm: cli.jwt_public_key_algorithm,
            jwt_issuer: cli.jwt_issuer,
            jwt_audience: cli.jwt_audience,
            origins,
            trusted_proxies,
            admin_users,
            tls: cli.tls_cert.zip(cli.tls_key),
            frontend_dir: cli.frontend_dir.unwrap_or_else(default_frontend_dir),
            limits: cli.limits,
        })
    }
}

/// The listed admin account ids, in the lowercase form register hands out.
fn admin_ids(listed: &[String]) -> Result<Vec<String>, ConfigError> {
    listed
        .iter()
        .map(|entry| entry.trim())
        .filter(|entry| !entry.is_empty())
        .map(|entry| {
            uuid::Uuid::parse_str(entry)
                .map(|id| id.hyphenated().to_string())
                .map_err(|_| ConfigError::AdminUserNotAnId(entry.to_owned()))
        })
        .collect()
}

/// What production mode will not run with, one reason per entry: `*` as an origin
/// without the flag that says so, and plain HTTP on an address other machines reach
/// without TLS or a trusted proxy in front (tokens and tickets would cross the network
/// in clear, and client IPs could not be told apart from the proxy's).
fn production_hazards(
    origins: &[String],
    any_origin_allowed: bool,
    listen: SocketAddr,
    tls: bool,
    behind_proxy: bool,
) -> Vec<String> {
    let mut hazards = Vec::new();
    if origins.iter().any(|o| o == "*") && !any_origin_allowed {
        hazards.push(
            "allowed origins '*' lets every web site use this server with its visitors' credentials: \
             list the origins, or pass --dangerously-allow-any-origin (PALISADE_DANGEROUSLY_ALLOW_ANY_ORIGIN=true)"
                .to_owned(),
        );
    }
    if !listen.ip().to_canonical().is_loopback() && !tls && !behind_proxy {
        hazards.push(format!(
            "plain HTTP on {listen}, which is not a loopback address: configure TLS (--tls-cert and --tls-key) \
             or the TLS-terminating proxy in front (--trusted-proxies)"
        ));
    }
    hazards
}

fn random_secret() -> SecretString {
    SecretString::from(dev_secret::random_hex())
}

/// Development mode's secret when none is configured: the one kept in the data
/// directory (made on first run), or, for a database that has no directory (in
/// memory), a random one for this run.
fn development_secret(database_url: &str) -> Result<SecretString, ConfigError> {
    let Some(dir) = crate::store::data_dir(database_url) else {
        tracing::warn!(
            "no JWT secret configured: using a random one for this run (tokens stop working on restart); set PALISADE_JWT_SECRET"
        );
        return Ok(random_secret());
    };
    let kept = dev_secret::load_or_create(&dir)?;
    if kept.created {
        tracing::info!(
            "no JWT secret configured: made one for development and keeps it in {} (mode 0600), so sign-ins survive restarts; set PALISADE_JWT_SECRET to use your own",
            kept.path.display()
        );
    } else {
        tracing::info!(
            "no JWT secret configured: using the development secret kept in {}",
            kept.path.display()
        );
    }
    Ok(kept.secret)
}

/// The keys `Secrets.toml` may hold.
pub const SECRETS_FILE_KEYS: [&str; 4] = [
    "JWT_SECRET",
    "DATABASE_URL",
    "ALLOWED_ORIGINS",
    // Not a secret, but under Shuttle the secrets are all the configuration there is.
    "TRUSTED_PROXIES",
];

/// `PALISADE_*` variables the test suite reads (not the server): no warning for them.
const TEST_SUITE_VARIABLES: [&str; 6] = [
    "PALISADE_REQUIRE_BROWSER",
    "PALISADE_REQUIRE_FAULTS",
    "PALISADE_REQUIRE_NGINX",
    "PALISADE_REQUIRE_SERVICES",
    "PALISADE_SHUTTLE_URL",
    "PALISADE_TEST_STORE",
];

/// A warning for each setting given where palisade does not read it: a `PALISADE_*`
/// environment variable no flag reads, a bare `JWT_SECRET`, `DATABASE_URL` or
/// `ALLOWED_ORIGINS` in the environment (those names are keys of the secrets file), and
/// a key of the secrets file it does not know. Names only, never a value; a close known
/// name is suggested.
fn ignored_settings<'a>(
    env_names: &[String],
    secrets_keys: impl IntoIterator<Item = &'a String>,
    secrets_source: &str,
) -> Vec<String> {
    const PREFIX: &str = "PALISADE_";
    let command = Cli::command();
    let known_env: Vec<&str> = command
        .get_arguments()
        .filter_map(|arg| arg.get_env()?.to_str())
        .chain(TEST_SUITE_VARIABLES)
        .collect();
    let mut warnings = Vec::new();
    for name in env_names {
        if SECRETS_FILE_KEYS.contains(&name.as_str()) {
            warnings.push(format!(
                "the environment variable {name} is ignored: palisade reads {PREFIX}{name} from the environment ({name} only as a key of the secrets file)"
            ));
        } else if name.to_uppercase().starts_with(PREFIX) && !known_env.contains(&name.as_str()) {
            let shown = name.escape_debug();
            warnings.push(match closest(name, PREFIX, &known_env) {
                Some(known) => {
                    format!("the environment variable {shown} is ignored: did you mean {known}?")
                }
                None => format!(
                    "the environment variable {shown} is ignored: palisade reads no such variable (palisade --help lists those it reads)"
                ),
            });
        }
    }
    for key in secrets_keys {
        if SECRETS_FILE_KEYS.contains(&key.as_str()) {
            continue;
        }
        let (shown, file) = (key.escape_debug(), secrets_source);
        warnings.push(match closest(key, PREFIX, &SECRETS_FILE_KEYS) {
            Some(known) => format!("the key {shown} in {file} is ignored: did you mean {known}?"),
            None => format!(
                "the key {shown} in {file} is ignored: the secrets file holds only {}",
                SECRETS_FILE_KEYS.join(", ")
            ),
        });
    }
    warnings
}

/// The known name closest to `name` (ignoring case and `prefix`), if it is close enough
/// to be a typo of it: a third of its letters off at most, and never more than 3.
fn closest<'a>(name: &str, prefix: &str, known: &[&'a str]) -> Option<&'a str> {
    let upper = name.to_uppercase();
    let bare = upper.strip_prefix(prefix).unwrap_or(&upper);
    let most = (bare.chars().count() / 3).clamp(1, 3);
    known
        .iter()
        .map(|k| (edit_distance(bare, k.strip_prefix(prefix).unwrap_or(k)), *k))
        .filter(|(distance, _)| *distance <= most)
        .min_by_key(|(distance, _)| *distance)
        .map(|(_, k)| k)
}

/// Optimal string alignment distance: insertions, deletions, substitutions and swaps of
/// two neighbours (`SECERT` is one from `SECRET`).
fn edit_distance(a: &str, b: &str) -> usize {
    let (a, b): (Vec<char>, Vec<char>) = (a.chars().collect(), b.chars().collect());
    let mut rows = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in rows.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in rows[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut best = (rows[i - 1][j] + 1)
                .min(rows[i][j - 1] + 1)
                .min(rows[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                best = best.min(rows[i - 2][j - 2] + 1);
            }
            rows[i][j] = best;
        }
    }
    rows[a.len()][b.len()]
}

/// `./frontend` when run from the repository, else the copy next to the sources.
fn default_frontend_dir() -> PathBuf {
    let local = PathBuf::from("frontend");
    if local.is_dir() {
        local
    } else {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("frontend")
    }
}

/// Reads a flat `KEY = "value"` TOML file; a missing file is an empty one.
fn read_secrets_file(path: &Path) -> Result<BTreeMap<String, String>, ConfigError> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(BTreeMap::new()),
        Err(e) => {
            return Err(ConfigError::SecretsFile {
                path: path.to_owned(),
                reason: e.to_string(),
            });
        }
    };
    parse_secrets(&text).map_err(|reason| ConfigError::SecretsFile {
        path: path.to_owned(),
        reason,
    })
}

fn parse_secrets(text: &str) -> Result<BTreeMap<String, String>, String> {
    let table: toml::Table = text
        .parse()
        .map_err(|e: toml::de::Error| e.message().to_owned())?;
    table
        .into_iter()
        .map(|(key, value)| match value {
            toml::Value::String(s) => Ok((key, s)),
            _ => Err(format!("{key} must be a string")),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The flags, with no secrets file; development runs get a secret unless the flags
    /// give one, so no test makes a secret file under `./data`.
    fn cli(args: &[&str]) -> Cli {
        let mut all = vec!["palisade", "--secrets-file", "/nonexistent/Secrets.toml"];
        all.extend_from_slice(args);
        if !args.contains(&"production") && !args.contains(&"--jwt-secret") {
            all.extend_from_slice(&["--jwt-secret", SECRET]);
        }
        Cli::parse_from(all)
    }

    #[test]
    fn production_without_secret_or_origins_names_both() {
        let err = Settings::from_cli(cli(&["--env", "production"])).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("JWT secret"), "{text}");
        assert!(text.contains("origin list"), "{text}");
    }

    #[test]
    fn production_rejects_a_short_secret() {
        let err = Settings::from_cli(cli(&[
            "--env",
            "production",
            "--jwt-secret",
            "short",
            "--allowed-origins",
            "https://chat.example.com",
        ]))
        .unwrap_err();
        assert!(err.to_string().contains("5 bytes given"), "{err}");
    }

    #[test]
    fn production_starts_with_secret_and_origins() {
        let settings = Settings::from_cli(cli(&[
            "--env",
            "production",
            "--jwt-secret",
            "0123456789abcdef0123456789abcdef",
            "--allowed-origins",
            "https://chat.example.com",
        ]))
        .unwrap();
        assert!(settings.origins.allows(Some("https://chat.example.com")));
        assert!(!settings.origins.allows(Some("http://localhost:8000")));
    }

    const SECRET: &str = "0123456789abcdef0123456789abcdef";

    #[test]
    fn production_refuses_any_origin_without_the_loud_flag() {
        let args = [
            "--env",
            "production",
            "--jwt-secret",
            SECRET,
            "--allowed-origins",
            "*",
        ];
        let err = Settings::from_cli(cli(&args)).unwrap_err();
        assert!(matches!(err, ConfigError::UnsafeForProduction(_)), "{err}");
        assert!(
            err.to_string().contains("--dangerously-allow-any-origin"),
            "{err}"
        );
        let mut with_flag = args.to_vec();
        with_flag.push("--dangerously-allow-any-origin");
        let settings = Settings::from_cli(cli(&with_flag)).unwrap();
        assert!(settings.origins.allows(Some("https://anything.example")));
        // Development keeps accepting it (with a warning).
        assert!(Settings::from_cli(cli(&["--allowed-origins", "*"])).is_ok());
    }

    #[test]
    fn production_refuses_plain_http_on_a_public_address_without_tls_or_proxy() {
        let base = [
            "--env",
            "production",
            "--jwt-secret",
            SECRET,
            "--allowed-origins",
            "https://chat.example.com",
        ];
        let with = |extra: &[&str]| {
            let mut args = base.to_vec();
            args.extend_from_slice(extra);
            Settings::from_cli(cli(&args))
        };
        for public in ["0.0.0.0:8000", "192.0.2.7:443", "[::]:8000"] {
            let err = with(&["--listen", public]).unwrap_err();
            assert!(
                err.to_string().contains("--trusted-proxies"),
                "{public}: {err}"
            );
        }
        assert!(with(&["--listen", "127.0.0.1:8000"]).is_ok());
        assert!(with(&["--listen", "[::1]:8000"]).is_ok());
        assert!(with(&["--listen", "0.0.0.0:8000", "--trusted-proxies", "10.0.0.2"]).is_ok());
        assert!(with(&["--listen", "0.0.0.0:8000", "--trusted-proxies", "*"]).is_ok());
        // TLS files are only read at startup: the check only needs them named.
        assert!(
            with(&[
                "--listen",
                "0.0.0.0:8443",
                "--tls-cert",
                "c.pem",
                "--tls-key",
                "k.pem"
            ])
            .is_ok()
        );
        // Development mode binds wherever it is told.
        assert!(Settings::from_cli(cli(&["--listen", "0.0.0.0:8000"])).is_ok());
    }

    #[test]
    fn redis_is_off_unless_a_url_is_given_and_channels_are_prefixed_palisade_by_default() {
        let alone = Settings::from_cli(cli(&[])).unwrap();
        assert_eq!(alone.redis_url, None);
        assert_eq!(alone.redis_prefix, "palisade");
        let clustered = Settings::from_cli(cli(&[
            "--redis-url",
            "redis://cache:6379",
            "--redis-prefix",
            "chat-eu",
        ]))
        .unwrap();
        assert_eq!(clustered.redis_url.as_deref(), Some("redis://cache:6379"));
        assert_eq!(clustered.redis_prefix, "chat-eu");
    }

    #[test]
    fn admin_users_are_account_ids_and_names_are_refused() {
        let err = Settings::from_cli(cli(&["--admin-users", "root"])).unwrap_err();
        assert!(matches!(err, ConfigError::AdminUserNotAnId(ref name) if name == "root"));
        let settings = Settings::from_cli(cli(&[
            "--admin-users",
            "0B8C6F0E-4D0A-4A53-9D8E-0F6F1C2A9B10, ",
        ]))
        .unwrap();
        assert_eq!(
            settings.admin_users,
            ["0b8c6f0e-4d0a-4a53-9d8e-0f6f1c2a9b10"]
        );
    }

    #[test]
    fn development_defaults_follow_the_contract() {
        let settings = Settings::from_cli(cli(&[])).unwrap();
        assert_eq!(settings.listen, SocketAddr::from(([127, 0, 0, 1], 8000)));
        assert_eq!(settings.database_url, DEFAULT_DATABASE_URL);
        assert_eq!(settings.limits.frame_limit(), 25_024);
        assert_eq!(
            settings.limits.close_grace(),
            std::time::Duration::from_secs(3)
        );
        assert!(settings.origins.allows(Some("http://localhost:8000")));
        assert!(settings.origins.allows(None));
    }

    #[test]
    fn a_zero_limit_is_refused_naming_its_flag_and_variable() {
        let refused = [
            ("--messages-per-sec", "PALISADE_MESSAGES_PER_SEC"),
            ("--message-burst", "PALISADE_MESSAGE_BURST"),
            ("--abuse-refusals", "PALISADE_ABUSE_REFUSALS"),
            ("--abuse-window-secs", "PALISADE_ABUSE_WINDOW_SECS"),
            (
                "--max-rooms-per-connection",
                "PALISADE_MAX_ROOMS_PER_CONNECTION",
            ),
            ("--max-body-chars", "PALISADE_MAX_BODY_CHARS"),
            (
                "--reply-kib-per-sec-per-user",
                "PALISADE_REPLY_KIB_PER_SEC_PER_USER",
            ),
            (
                "--reply-burst-kib-per-user",
                "PALISADE_REPLY_BURST_KIB_PER_USER",
            ),
            (
                "--reply-kib-per-sec-per-ip",
                "PALISADE_REPLY_KIB_PER_SEC_PER_IP",
            ),
            (
                "--reply-burst-kib-per-ip",
                "PALISADE_REPLY_BURST_KIB_PER_IP",
            ),
            ("--outbound-queue", "PALISADE_OUTBOUND_QUEUE"),
            ("--outbound-queue-bytes", "PALISADE_OUTBOUND_QUEUE_BYTES"),
            ("--outbound-total-bytes", "PALISADE_OUTBOUND_TOTAL_BYTES"),
            (
                "--max-connections-per-ip",
                "PALISADE_MAX_CONNECTIONS_PER_IP",
            ),
            (
                "--max-connections-per-user",
                "PALISADE_MAX_CONNECTIONS_PER_USER",
            ),
            ("--max-connections", "PALISADE_MAX_CONNECTIONS"),
            ("--heartbeat-secs", "PALISADE_HEARTBEAT_SECS"),
            ("--pong-timeout-secs", "PALISADE_PONG_TIMEOUT_SECS"),
            ("--token-ttl-secs", "PALISADE_TOKEN_TTL_SECS"),
            ("--ticket-ttl-secs", "PALISADE_TICKET_TTL_SECS"),
            ("--api-body-bytes", "PALISADE_API_BODY_BYTES"),
            ("--tickets-per-minute", "PALISADE_TICKETS_PER_MINUTE"),
            ("--request-timeout-secs", "PALISADE_REQUEST_TIMEOUT_SECS"),
            ("--auth-per-minute", "PALISADE_AUTH_PER_MINUTE"),
            ("--auth-burst", "PALISADE_AUTH_BURST"),
            ("--header-timeout-secs", "PALISADE_HEADER_TIMEOUT_SECS"),
            ("--write-stall-secs", "PALISADE_WRITE_STALL_SECS"),
            ("--close-grace-ms", "PALISADE_CLOSE_GRACE_MS"),
            (
                "--max-pending-connections-per-ip",
                "PALISADE_MAX_PENDING_CONNECTIONS_PER_IP",
            ),
            (
                "--max-pending-connections",
                "PALISADE_MAX_PENDING_CONNECTIONS",
            ),
            (
                "--auth-global-per-minute",
                "PALISADE_AUTH_GLOBAL_PER_MINUTE",
            ),
            ("--auth-global-burst", "PALISADE_AUTH_GLOBAL_BURST"),
            (
                "--handshake-failures-per-minute",
                "PALISADE_HANDSHAKE_FAILURES_PER_MINUTE",
            ),
            (
                "--handshake-failure-burst",
                "PALISADE_HANDSHAKE_FAILURE_BURST",
            ),
            (
                "--security-log-window-secs",
                "PALISADE_SECURITY_LOG_WINDOW_SECS",
            ),
        ];
        let command = Cli::command();
        for (flag, variable) in refused {
            // The name in the message is the flag's own and the variable it reads.
            let arg = command
                .get_arguments()
                .find(|a| a.get_long() == flag.strip_prefix("--"))
                .unwrap_or_else(|| panic!("{flag} is a flag"));
            assert_eq!(arg.get_env().and_then(|e| e.to_str()), Some(variable));
            let err = Settings::from_cli(cli(&[flag, "0"])).unwrap_err();
            assert!(matches!(err, ConfigError::BadLimits(_)), "{flag}: {err}");
            let text = err.to_string();
            assert!(
                text.starts_with(&format!("{flag} ({variable}) must be at least 1 (got 0)")),
                "{text}"
            );
            assert!(!text.contains('\n'), "{text}");
        }
    }

    #[test]
    fn zeros_where_zero_means_something_are_accepted() {
        // None (join_history, replay_max), as many as the cores (hash_concurrency),
        // no waiting (hash_wait_ms), only the summary lines (security_log_burst), and
        // the frame size is raised to what the longest body needs, as documented.
        for flag in [
            "--join-history",
            "--replay-max",
            "--replay-max-bytes",
            "--hash-concurrency",
            "--hash-wait-ms",
            "--security-log-burst",
            "--max-message-bytes",
            "--coalesce-ms",
            "--coalesce-busy-percent",
        ] {
            assert!(Settings::from_cli(cli(&[flag, "0"])).is_ok(), "{flag}");
        }
    }

    #[test]
    fn every_refused_limit_is_named_at_once() {
        let err = Settings::from_cli(cli(&["--messages-per-sec", "0", "--outbound-queue", "0"]))
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "--messages-per-sec (PALISADE_MESSAGES_PER_SEC) must be at least 1 (got 0); \
             --outbound-queue (PALISADE_OUTBOUND_QUEUE) must be at least 1 (got 0)"
        );
    }

    #[test]
    fn a_pong_timeout_no_longer_than_the_heartbeat_is_refused() {
        for pong in ["25", "10"] {
            let err = Settings::from_cli(cli(&["--pong-timeout-secs", pong])).unwrap_err();
            assert_eq!(
                err.to_string(),
                format!(
                    "--pong-timeout-secs (PALISADE_PONG_TIMEOUT_SECS) must be longer than \
                     --heartbeat-secs (PALISADE_HEARTBEAT_SECS) (got {pong} and 25): \
                     a client that only answers pings would be closed"
                )
            );
        }
        let ok = Settings::from_cli(cli(&["--heartbeat-secs", "1", "--pong-timeout-secs", "2"]));
        assert!(ok.is_ok());
    }

    #[test]
    fn a_wait_over_a_year_is_refused_rather_than_overflowing_the_clock() {
        let err = Settings::from_cli(cli(&[
            "--heartbeat-secs",
            "18446744073709551615",
            "--close-grace-ms",
            "31536000001",
        ]))
        .unwrap_err()
        .to_string();
        assert!(
            err.contains(
                "--heartbeat-secs (PALISADE_HEARTBEAT_SECS) must be at most 31536000 (a year; got 18446744073709551615)"
            ),
            "{err}"
        );
        assert!(
            err.contains(
                "--close-grace-ms (PALISADE_CLOSE_GRACE_MS) must be at most 31536000000 (a year; got 31536000001)"
            ),
            "{err}"
        );
        let a_year = cli(&[
            "--token-ttl-secs",
            "31536000",
            "--pong-timeout-secs",
            "31536000",
        ]);
        assert!(Settings::from_cli(a_year).is_ok());
    }

    #[test]
    fn a_security_log_window_over_a_day_is_refused() {
        let err = Settings::from_cli(cli(&["--security-log-window-secs", "86401"])).unwrap_err();
        assert_eq!(
            err.to_string(),
            "--security-log-window-secs (PALISADE_SECURITY_LOG_WINDOW_SECS) must be at most 86400 (got 86401)"
        );
        assert!(Settings::from_cli(cli(&["--security-log-window-secs", "86400"])).is_ok());
    }

    #[test]
    fn a_gathering_wait_a_person_would_notice_is_refused() {
        let err = Settings::from_cli(cli(&[
            "--coalesce-ms",
            "101",
            "--coalesce-busy-percent",
            "101",
        ]))
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "--coalesce-ms (PALISADE_COALESCE_MS) must be at most 100 (got 101): frames would \
             wait longer than a person notices; \
             --coalesce-busy-percent (PALISADE_COALESCE_BUSY_PERCENT) must be at most 100 (got 101)"
        );
        let ok = cli(&["--coalesce-ms", "100", "--coalesce-busy-percent", "100"]);
        assert!(Settings::from_cli(ok).is_ok());
    }

    #[test]
    fn secrets_file_values_fill_in_what_flags_leave_out() {
        let parsed =
            parse_secrets("JWT_SECRET = \"abc\"\nDATABASE_URL = \"sqlite://x.db\"\n").unwrap();
        assert_eq!(parsed.get("JWT_SECRET").map(String::as_str), Some("abc"));
        assert!(parse_secrets("JWT_SECRET = 3").is_err());
    }

    #[test]
    fn trusted_proxies_come_from_the_flag_before_the_secrets() {
        let secrets: BTreeMap<String, String> =
            [("TRUSTED_PROXIES".to_owned(), "10.0.0.2, *".to_owned())].into();
        let from = |args: &[&str]| Settings::from_cli_and_secrets(cli(args), &secrets, "test");
        assert_eq!(
            from(&[]).unwrap().trusted_proxies,
            [
                TrustedProxy::Address([10, 0, 0, 2].into()),
                TrustedProxy::EveryPeer
            ]
        );
        assert_eq!(
            from(&["--trusted-proxies", "10.0.0.9"])
                .unwrap()
                .trusted_proxies,
            [TrustedProxy::Address([10, 0, 0, 9].into())]
        );
        let bad: BTreeMap<String, String> =
            [("TRUSTED_PROXIES".to_owned(), "10.0.0.0/8".to_owned())].into();
        let err = Settings::from_cli_and_secrets(cli(&[]), &bad, "test").unwrap_err();
        assert!(err.to_string().contains("10.0.0.0/8"), "{err}");
        let err = Settings::from_cli(cli(&["--trusted-proxies", "proxy.internal"])).unwrap_err();
        assert!(err.to_string().contains("proxy.internal"), "{err}");
        // An empty value (a unit's `PALISADE_TRUSTED_PROXIES=`) lists none.
        let none = Settings::from_cli(cli(&["--trusted-proxies", ""])).unwrap();
        assert!(none.trusted_proxies.is_empty());
    }

    #[test]
    fn the_frame_limit_always_fits_the_longest_body() {
        let raised = Settings::from_cli(cli(&[
            "--max-message-bytes",
            "4096",
            "--max-body-chars",
            "3000",
        ]))
        .unwrap();
        assert_eq!(raised.limits.frame_limit(), 3000 * 12 + 1024);
        let larger = Settings::from_cli(cli(&["--max-message-bytes", "100000"])).unwrap();
        assert_eq!(larger.limits.frame_limit(), 100_000);
    }

    fn warnings(env: &[&str], keys: &[&str]) -> Vec<String> {
        let env: Vec<String> = env.iter().map(|n| (*n).to_owned()).collect();
        let keys: Vec<String> = keys.iter().map(|n| (*n).to_owned()).collect();
        ignored_settings(&env, &keys, "Secrets.toml")
    }

    #[test]
    fn a_misspelt_palisade_variable_is_warned_about_with_the_name_it_resembles() {
        assert_eq!(
            warnings(&["PALISADE_JWT_SECERT"], &[]),
            [
                "the environment variable PALISADE_JWT_SECERT is ignored: did you mean PALISADE_JWT_SECRET?"
            ]
        );
        assert_eq!(
            warnings(&["palisade_listen"], &[]),
            ["the environment variable palisade_listen is ignored: did you mean PALISADE_LISTEN?"]
        );
        let far = warnings(&["PALISADE_COLOUR"], &[]);
        assert!(
            far[0].contains("palisade reads no such variable"),
            "{far:?}"
        );
    }

    #[test]
    fn known_and_foreign_variables_pass_without_a_word() {
        let known = [
            "PALISADE_JWT_SECRET",
            "PALISADE_MAX_BODY_CHARS",
            "PALISADE_REQUIRE_BROWSER",
            "PALISADE_REQUIRE_SERVICES",
            "PATH",
            "JWT_SECRET_FOR_SOMETHING_ELSE",
        ];
        assert_eq!(
            warnings(&known, &["JWT_SECRET", "ALLOWED_ORIGINS"]),
            Vec::<String>::new()
        );
    }

    #[test]
    fn a_secrets_file_name_in_the_environment_names_the_variable_that_is_read() {
        let said = warnings(&["JWT_SECRET", "DATABASE_URL", "ALLOWED_ORIGINS"], &[]);
        assert_eq!(said.len(), 3, "{said:?}");
        assert!(
            said[0].contains("palisade reads PALISADE_JWT_SECRET"),
            "{said:?}"
        );
        assert!(said[1].contains("PALISADE_DATABASE_URL"), "{said:?}");
        assert!(said[2].contains("PALISADE_ALLOWED_ORIGINS"), "{said:?}");
    }

    #[test]
    fn an_unknown_secrets_key_is_warned_about_with_the_key_it_resembles() {
        assert_eq!(
            warnings(&[], &["JWT_SECERT", "PALISADE_ALLOWED_ORIGINS", "LISTEN"]),
            [
                "the key JWT_SECERT in Secrets.toml is ignored: did you mean JWT_SECRET?",
                "the key PALISADE_ALLOWED_ORIGINS in Secrets.toml is ignored: did you mean ALLOWED_ORIGINS?",
                "the key LISTEN in Secrets.toml is ignored: the secrets file holds only JWT_SECRET, DATABASE_URL, ALLOWED_ORIGINS, TRUSTED_PROXIES",
            ]
        );
    }

    #[test]
    fn a_name_with_a_line_break_is_shown_escaped() {
        let said = warnings(&["PALISADE_X\nforged line"], &["A\nB"]);
        assert!(said.iter().all(|w| !w.contains('\n')), "{said:?}");
    }

    #[test]
    fn development_without_a_secret_keeps_one_in_the_data_directory() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("db/p.db").display());
        let load = || {
            Settings::from_cli(Cli::parse_from([
                "palisade",
                "--secrets-file",
                "/nonexistent/Secrets.toml",
                "--database-url",
                &url,
            ]))
            .unwrap()
        };
        let (first, again) = (load(), load());
        use secrecy::ExposeSecret;
        assert_eq!(
            first.jwt_secret.expose_secret(),
            again.jwt_secret.expose_secret()
        );
        assert!(dir.path().join("db").join(dev_secret::FILE_NAME).is_file());
    }

    #[test]
    fn the_example_secrets_file_sets_nothing_until_a_line_is_uncommented() {
        let example = include_str!("../Secrets.toml.example");
        assert_eq!(parse_secrets(example).unwrap(), BTreeMap::new());
        let uncommented: String = example
            .lines()
            .filter_map(|line| line.strip_prefix("# "))
            .filter(|line| line.contains(" = \""))
            .map(|line| format!("{line}\n"))
            .collect();
        let production = parse_secrets(&uncommented).unwrap();
        let keys: Vec<&str> = production.keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            [
                "ALLOWED_ORIGINS",
                "DATABASE_URL",
                "JWT_SECRET",
                "TRUSTED_PROXIES"
            ]
        );
        assert!(
            production["JWT_SECRET"].len() < MIN_SECRET_BYTES,
            "the placeholder secret must be refused if left in"
        );
    }

    #[test]
    fn a_malformed_origin_is_a_config_error() {
        let err = Settings::from_cli(cli(&["--allowed-origins", "chat.example.com"])).unwrap_err();
        assert!(matches!(err, ConfigError::BadOrigin(_)));
    }
}
