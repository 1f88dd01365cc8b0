//! The per-user connection cap across a cluster (`--redis-url`).
//!
//! Each user's live connections are a sorted set `{prefix}:conns:{user_id}` in Redis:
//! member `{node_id}:{conn_id}`, score the time (Unix ms) it stops counting. Taking a
//! place is one Lua script (atomic in Redis): drop the expired members, count the rest,
//! add this one only below the cap. A closing connection removes its member; every node
//! pushes its own members' expiry a TTL ahead every third of it, so a node that dies
//! without a word stops holding places after at most the TTL.
//!
//! The TTL is `--node-ttl-ms`, the same setting as presence's, not one of its own: both
//! answer one question, how long a node that stopped refreshing is still believed
//! alive. With one setting a killed node's users leave and get their places back on the
//! same schedule, an operator tunes one trade-off (a Redis hiccup of a few refresh
//! rounds dropping live entries, against a dead node's entries lingering), and a test
//! can make both short at once.
//!
//! Scores come from each node's wall clock: nodes whose clocks differ by a few seconds
//! shift an expiry by as much, small next to the TTL.

use crate::broker::redis::answer_within;
use crate::model::{duration_millis, unix_millis};
use crate::shutdown::Shutdown;
use redis::aio::ConnectionManager;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

/// The shortest TTL used: a refresh round must fit in a third of it.
const MIN_TTL: Duration = Duration::from_millis(30);

/// How long a handshake waits for Redis before falling back to the node's own cap.
const TAKE_TIMEOUT: Duration = Duration::from_millis(500);

/// How long a release or a refresh may take.
const WRITE_TIMEOUT: Duration = Duration::from_secs(5);

/// KEYS[1] the user's set; ARGV: now (ms), member, cap, ttl (ms). 1: taken, 0: full.
const TAKE_SCRIPT: &str = r"
local now = tonumber(ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[3]) then
  return 0
end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[4]), ARGV[2])
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[4]))
return 1
";

/// Why no place was taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NotTaken {
    /// The user holds the cap's number of places across the cluster.
    Full,
    /// No answer in time: the node's own cap decides alone.
    Unknown,
}

/// This node's side of the shared cap.
pub(crate) struct SharedCaps {
    commands: ConnectionManager,
    prefix: String,
    node: String,
    max_per_user: usize,
    /// How long a member counts without a refresh (`--node-ttl-ms`).
    ttl: Duration,
    next: AtomicU64,
    /// The members this node holds: member → user id.
    live: Mutex<HashMap<String, String>>,
}

/// A place in the shared count; removed from Redis when dropped (best effort).
pub(crate) struct SharedSlot {
    caps: Arc<SharedCaps>,
    key: String,
    member: String,
    /// Removed already: nothing left for `Drop`.
    released: bool,
}

impl SharedCaps {
    /// This node's side, counting each member for `ttl` after its last refresh.
    pub(crate) fn new(
        commands: ConnectionManager,
        prefix: &str,
        max_per_user: usize,
        ttl: Duration,
    ) -> Self {
        Self {
            commands,
            prefix: prefix.to_owned(),
            node: uuid::Uuid::new_v4().simple().to_string(),
            max_per_user,
            ttl: ttl.max(MIN_TTL),
            next: AtomicU64::new(1),
            live: Mutex::new(HashMap::new()),
        }
    }

    fn key_of(&self, user: &str) -> String {
        format!("{}:conns:{user}", self.prefix)
    }

    /// Takes a place for a connection of `user`: the slot, or whether the cap is
    /// reached (`Full`) or Redis did not answer (`Unknown`).
    pub(crate) async fn take(self: &Arc<Self>, user: &str) -> Result<SharedSlot, NotTaken> {
        let key = self.key_of(user);
        let member = format!(
            "{}:{}",
            self.node,
            self.next.fetch_add(1, Ordering::Relaxed)
        );
        // Listed before the script runs, so a refresh meanwhile keeps it alive too.
        self.live_set().insert(member.clone(), user.to_owned());
        let slot = SharedSlot {
            caps: Arc::clone(self),
            key,
            member,
            released: false,
        };
        let mut take = redis::cmd("EVAL");
        take.arg(TAKE_SCRIPT)
            .arg(1)
            .arg(&slot.key)
            .arg(unix_millis())
            .arg(&slot.member)
            .arg(self.max_per_user)
            .arg(duration_millis(self.ttl));
        let mut commands = self.commands.clone();
        match answer_within(TAKE_TIMEOUT, take.query_async::<i64>(&mut commands)).await {
            Ok(1) => Ok(slot),
            Ok(_) => {
                // Not added: nothing to remove from Redis.
                let mut slot = slot;
                slot.released = true;
                self.live_set().remove(&slot.member);
                Err(NotTaken::Full)
            }
            Err(why) => {
                tracing::warn!(%why, user, "the shared connection cap is unavailable; counting on this node only");
                Err(NotTaken::Unknown)
            }
        }
    }

    fn live_set(&self) -> std::sync::MutexGuard<'_, HashMap<String, String>> {
        self.live.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Refreshes this node's members every third of the TTL until shutdown: three tries
    /// before a live member expires.
    pub(crate) async fn run(self: Arc<Self>, shutdown: Shutdown) {
        let mut ticks = tokio::time::interval(self.ttl / 3);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = shutdown.triggered() => return,
                _ = ticks.tick() => self.refresh().await,
            }
        }
    }

    /// One pipeline: every member this node holds gets a fresh expiry (`XX`: one
    /// released meanwhile is not added back), and its key a fresh `PEXPIRE`.
    async fn refresh(&self) {
        let members: Vec<(String, String)> = self
            .live_set()
            .iter()
            .map(|(member, user)| (member.clone(), self.key_of(user)))
            .collect();
        if members.is_empty() {
            return;
        }
        let until = unix_millis().saturating_add(duration_millis(self.ttl));
        let mut pipe = redis::pipe();
        for (member, key) in &members {
            pipe.cmd("ZADD")
                .arg(key)
                .arg("XX")
                .arg(until)
                .arg(member)
                .ignore();
            pipe.cmd("PEXPIRE")
                .arg(key)
                .arg(duration_millis(self.ttl))
                .ignore();
        }
        let mut commands = self.commands.clone();
        if let Err(why) = answer_within(WRITE_TIMEOUT, pipe.query_async::<()>(&mut commands)).await
        {
            tracing::warn!(%why, "cannot refresh the shared connection cap");
        }
    }
}

impl SharedSlot {
    /// Removes the member now, and waits (a bounded time) for Redis to have done it:
    /// the client's next handshake, on any node, finds the place free.
    pub(crate) async fn release(mut self) {
        self.released = true;
        self.caps.live_set().remove(&self.member);
        let mut commands = self.caps.commands.clone();
        let removed = zrem(&mut commands, &self.key, &self.member);
        if tokio::time::timeout(WRITE_TIMEOUT, removed).await.is_err() {
            tracing::warn!("no answer from Redis releasing a shared connection place");
        }
    }
}

async fn zrem(commands: &mut ConnectionManager, key: &str, member: &str) {
    let mut remove = redis::cmd("ZREM");
    remove.arg(key).arg(member);
    if let Err(error) = remove.query_async::<()>(commands).await {
        // It expires a TTL after its last refresh anyway.
        tracing::warn!(%error, "cannot release a shared connection place");
    }
}

impl Drop for SharedSlot {
    /// A slot not released by [`SharedSlot::release`] (a session that ended some other
    /// way): removed by a task of its own, best effort.
    fn drop(&mut self) {
        if self.released {
            return;
        }
        self.caps.live_set().remove(&self.member);
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let mut commands = self.caps.commands.clone();
        let (key, member) = (self.key.clone(), self.member.clone());
        runtime.spawn(async move {
            let _ = tokio::time::timeout(WRITE_TIMEOUT, zrem(&mut commands, &key, &member)).await;
        });
    }
}
