//! Presence across a cluster (`--redis-url`): who is in which room on any node, kept in
//! Redis with an expiry per node, so a user is announced once however many nodes they
//! are connected to, and a node that dies leaves nobody "online" for long.
//!
//! It lives behind the [`Broker`](super::Broker) and not in the session: the broker's
//! `subscribe` and `unsubscribe` already say whether a join or leave is announced, and
//! already know the node, so the session asks the same question in both modes and only
//! the answer changes (this node's hub alone, or the cluster). A session that reached
//! into Redis itself would need the node's id, the hub's per-node count and the fallback
//! rules, all of which the broker has.
//!
//! Keys, for room `r` under `--redis-prefix` `p` (room names have no `:`, so no two
//! rooms' keys meet):
//! - `p:presence:r:{user_id}`, a sorted set of the nodes holding the user in the room,
//!   each scored with the time (Unix ms) its entry stops counting;
//! - `p:online:r`, a sorted set of the room's users, scored with their latest expiry:
//!   counts and member lists read it alone;
//! - `p:names:r`, a hash of the users' names, for member lists and swept users' `leave`;
//! - `p:presence-rooms`, a sorted set of the rooms with someone in them (`/api/rooms`).
//!
//! Each change is one Lua script, atomic in Redis: *join* adds this node's entry and says
//! whether the user was online on any node and how many users the room has; *leave*
//! removes it and says whether the user is now gone everywhere; *sweep* removes the users
//! all of whose entries expired and returns them. Whichever script takes a user out of
//! `p:online:r` is the one whose node announces the `leave`, so it goes out once. Every
//! node refreshes its own entries every third of the TTL and sweeps the rooms it follows
//! as often; every key gets a `PEXPIRE` of twice the TTL (a sweep sees an expired entry
//! before its key goes), so nothing is left in Redis. On one node a user's joins and
//! leaves in a room are taken one at a time ([`ClusterPresence::turn`]), hub and Redis
//! together, so Redis sees them in the hub's order.
//!
//! Redis that does not answer within [`ANSWER_TIMEOUT`] never fails a join: the node's
//! own view decides (a warning is logged). Scores come from each node's wall clock, as
//! for the shared connection cap: a skew of a few seconds shifts an expiry by as much.

use super::redis::answer_within;
use crate::hub::{Hub, MEMBERS_SAMPLE, Members};
use crate::model::UserRef;
use crate::model::{duration_millis, unix_millis};
use redis::aio::ConnectionManager;
use std::hash::BuildHasher;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Mutex, MutexGuard};
use tokio_util::sync::CancellationToken;

/// How long a join, a leave, a member list or a count waits for Redis before the node's
/// own view is used.
pub(crate) const ANSWER_TIMEOUT: Duration = Duration::from_millis(500);

/// How long a refresh or a sweep may take.
const UPKEEP_TIMEOUT: Duration = Duration::from_secs(5);

/// Locks a user's joins and leaves in a room hash onto: enough that unrelated users
/// rarely wait for each other.
const STRIPES: usize = 64;

/// KEYS: the user's nodes, online, names, rooms. ARGV: now, until, key lifetime, node,
/// user id, name, room. Returns {was online (live entries before), users online}.
const JOIN_SCRIPT: &str = r"
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
local was = redis.call('ZCARD', KEYS[1])
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[4])
redis.call('ZADD', KEYS[2], 'GT', ARGV[2], ARGV[5])
redis.call('HSET', KEYS[3], ARGV[5], ARGV[6])
redis.call('ZADD', KEYS[4], 'GT', ARGV[2], ARGV[7])
for i = 1, 4 do redis.call('PEXPIRE', KEYS[i], ARGV[3]) end
return {was, redis.call('ZCOUNT', KEYS[2], '(' .. ARGV[1], '+inf')}
";

/// KEYS: the user's nodes, online, names, rooms. ARGV: now, node, user id, room.
/// Returns {1 if this script took the user out of the room, users online}.
const LEAVE_SCRIPT: &str = r"
redis.call('ZREM', KEYS[1], ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
local top = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')
local gone = 0
if #top == 0 then
  redis.call('DEL', KEYS[1])
  gone = redis.call('ZREM', KEYS[2], ARGV[3])
  redis.call('HDEL', KEYS[3], ARGV[3])
else
  redis.call('ZADD', KEYS[2], top[2], ARGV[3])
end
if redis.call('ZCARD', KEYS[2]) == 0 then
  redis.call('DEL', KEYS[2], KEYS[3])
  redis.call('ZREM', KEYS[4], ARGV[4])
end
return {gone, redis.call('ZCOUNT', KEYS[2], '(' .. ARGV[1], '+inf')}
";

/// KEYS: online, names, rooms. ARGV: now, the users' key stem, room. Returns {users
/// online, then id and name of each user this script took out of the room}.
const SWEEP_SCRIPT: &str = r"
local out = {}
for _, user in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])) do
  local key = ARGV[2] .. user
  redis.call('ZREMRANGEBYSCORE', key, '-inf', ARGV[1])
  local top = redis.call('ZRANGE', key, -1, -1, 'WITHSCORES')
  if #top == 0 then
    redis.call('DEL', key)
    redis.call('ZREM', KEYS[1], user)
    local name = redis.call('HGET', KEYS[2], user)
    redis.call('HDEL', KEYS[2], user)
    table.insert(out, user)
    table.insert(out, name or user)
  else
    redis.call('ZADD', KEYS[1], top[2], user)
  end
end
if redis.call('ZCARD', KEYS[1]) == 0 then
  redis.call('DEL', KEYS[1], KEYS[2])
  redis.call('ZREM', KEYS[3], ARGV[3])
end
table.insert(out, 1, tostring(redis.call('ZCOUNT', KEYS[1], '(' .. ARGV[1], '+inf')))
return out
";

/// KEYS: online, names, rooms. ARGV: now, until, key lifetime, node, the users' key
/// stem, room, then user ids. Pushes this node's entries of those users forward (an
/// entry removed meanwhile is not added back) and returns the users it had none for.
const REFRESH_SCRIPT: &str = r"
local missing = {}
for i = 7, #ARGV do
  local key = ARGV[5] .. ARGV[i]
  if redis.call('ZSCORE', key, ARGV[4]) then
    redis.call('ZADD', key, ARGV[2], ARGV[4])
    redis.call('PEXPIRE', key, ARGV[3])
    redis.call('ZADD', KEYS[1], 'GT', ARGV[2], ARGV[i])
  else
    table.insert(missing, ARGV[i])
  end
end
if #missing < #ARGV - 6 then
  redis.call('ZADD', KEYS[3], 'GT', ARGV[2], ARGV[6])
  for i = 1, 3 do redis.call('PEXPIRE', KEYS[i], ARGV[3]) end
end
return missing
";

/// KEYS: online, names. ARGV: now, most users listed in full, sample size, joiner.
/// Returns {users online, then id and name of each listed user}.
const MEMBERS_SCRIPT: &str = r"
local live = '(' .. ARGV[1]
local count = redis.call('ZCOUNT', KEYS[1], live, '+inf')
local ids
if count <= tonumber(ARGV[2]) then
  ids = redis.call('ZRANGEBYSCORE', KEYS[1], live, '+inf')
else
  ids = redis.call('ZRANGEBYSCORE', KEYS[1], live, '+inf', 'LIMIT', 0, tonumber(ARGV[3]))
end
local out = {tostring(count)}
for i = 1, #ids, 200 do
  local chunk = {}
  for j = i, math.min(i + 199, #ids) do table.insert(chunk, ids[j]) end
  local names = redis.call('HMGET', KEYS[2], unpack(chunk))
  for j, id in ipairs(chunk) do
    table.insert(out, id)
    table.insert(out, names[j] or id)
  end
end
return out
";

/// KEYS: rooms. ARGV: now, the online keys' stem. Returns room and count, in turn, for
/// every room with a live user.
const OCCUPIED_SCRIPT: &str = r"
local out = {}
local live = '(' .. ARGV[1]
for _, room in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], live, '+inf')) do
  local count = redis.call('ZCOUNT', ARGV[2] .. room, live, '+inf')
  if count > 0 then
    table.insert(out, room)
    table.insert(out, tostring(count))
  end
end
return out
";

/// What the join script said.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Arrived {
    /// The user had a live entry in the room, on any node, before this one.
    pub(crate) was_online: bool,
    /// Users in the room now, across the cluster.
    pub(crate) online: usize,
}

/// What the leave script said.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Departed {
    /// This leave took the user out of the room everywhere: its node announces it.
    pub(crate) gone: bool,
    /// Users in the room now, across the cluster.
    pub(crate) online: usize,
}

/// Whether a user's arrival is announced, from what the cluster says: only if they
/// were online on no node, and by the room's size before and after (`judge`).
pub(crate) fn arrival_announced(
    arrived: Arrived,
    judge: impl FnOnce(usize, usize) -> bool,
) -> bool {
    !arrived.was_online && judge(arrived.online.saturating_sub(1), arrived.online)
}

/// Whether a user's departure is announced: only by the node whose leave took them out
/// of the room everywhere.
pub(crate) fn departure_announced(
    departed: Departed,
    judge: impl FnOnce(usize, usize) -> bool,
) -> bool {
    departed.gone && judge(departed.online + 1, departed.online)
}

/// `{count, id, name, id, name…}` as the scripts return it: the count and the users.
fn parse_listing(reply: &[String]) -> Option<(usize, Vec<UserRef>)> {
    let (count, rest) = reply.split_first()?;
    let count = count.parse().ok()?;
    let users = rest
        .chunks_exact(2)
        .map(|pair| UserRef {
            id: pair[0].clone(),
            name: pair[1].clone(),
        })
        .collect();
    Some((count, users))
}

/// A `joined` frame's members from the script's listing: with the joiner (who may be
/// missing when their own entry could not be written, or was cut from a sample), in
/// the hub's order (by name, then id).
fn members_of(online: usize, mut users: Vec<UserRef>, joiner: &UserRef, limit: usize) -> Members {
    if !users.iter().any(|u| u.id == joiner.id) {
        if users.len() >= limit {
            users.pop();
        }
        users.push(joiner.clone());
    }
    users.sort_by(|a, b| a.name.cmp(&b.name).then_with(|| a.id.cmp(&b.id)));
    let online = online.max(users.len());
    Members { users, online }
}

/// A change of presence the upkeep found, to announce like a session's own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Change {
    Join,
    Leave,
}

/// Encodes a `presence` frame: given by the transport (`ws`), which owns the wire
/// format; the core does not name its frames.
pub(crate) type PresenceFrame = fn(&str, &UserRef, Change) -> crate::hub::Frame;

/// Announces a presence change the upkeep found (the broker sends it to this node's
/// members and through Redis to the other nodes).
pub(crate) type Announce = Box<dyn Fn(&str, &UserRef, Change) + Send + Sync>;

/// This node's side of cluster presence.
pub(crate) struct ClusterPresence {
    commands: ConnectionManager,
    prefix: String,
    node: String,
    ttl: Duration,
    stripes: Vec<Mutex<()>>,
    hasher: std::collections::hash_map::RandomState,
}

impl ClusterPresence {
    pub(crate) fn new(
        commands: ConnectionManager,
        prefix: &str,
        node: &str,
        ttl: Duration,
    ) -> Self {
        Self {
            commands,
            prefix: prefix.to_owned(),
            node: node.to_owned(),
            ttl: ttl.max(Duration::from_millis(30)),
            stripes: (0..STRIPES).map(|_| Mutex::new(())).collect(),
            hasher: std::collections::hash_map::RandomState::new(),
        }
    }

    /// Held while a user's join or leave of a room changes the hub and Redis: Redis then
    /// sees this node's changes for that user in the hub's order.
    pub(crate) async fn turn(&self, room: &str, user_id: &str) -> MutexGuard<'_, ()> {
        let stripe =
            usize::try_from(self.hasher.hash_one((room, user_id)) % STRIPES as u64).unwrap_or(0);
        self.stripes[stripe].lock().await
    }

    fn user_stem(&self, room: &str) -> String {
        format!("{}:presence:{room}:", self.prefix)
    }

    fn online_key(&self, room: &str) -> String {
        format!("{}:online:{room}", self.prefix)
    }

    fn names_key(&self, room: &str) -> String {
        format!("{}:names:{room}", self.prefix)
    }

    fn rooms_key(&self) -> String {
        format!("{}:presence-rooms", self.prefix)
    }

    /// How long a key lives without a write: twice an entry's, so a sweep finds an
    /// expired entry before its key is gone.
    fn key_lifetime(&self) -> u64 {
        duration_millis(self.ttl).saturating_mul(2)
    }

    async fn ask<T: redis::FromRedisValue>(&self, what: &str, command: &redis::Cmd) -> Option<T> {
        let mut commands = self.commands.clone();
        match answer_within(ANSWER_TIMEOUT, command.query_async::<T>(&mut commands)).await {
            Ok(answer) => Some(answer),
            Err(why) => {
                tracing::warn!(%why, what, "cluster presence is unavailable; using this node's own view");
                None
            }
        }
    }

    /// Adds this node's entry for the user in the room. `None`: Redis did not answer.
    pub(crate) async fn join(&self, room: &str, user: &UserRef) -> Option<Arrived> {
        let now = unix_millis();
        let mut script = redis::cmd("EVAL");
        script
            .arg(JOIN_SCRIPT)
            .arg(4)
            .arg(format!("{}{}", self.user_stem(room), user.id))
            .arg(self.online_key(room))
            .arg(self.names_key(room))
            .arg(self.rooms_key())
            .arg(now)
            .arg(now.saturating_add(duration_millis(self.ttl)))
            .arg(self.key_lifetime())
            .arg(&self.node)
            .arg(&user.id)
            .arg(&user.name)
            .arg(room);
        let (was, online): (u64, u64) = self.ask("join", &script).await?;
        Some(Arrived {
            was_online: was > 0,
            online: usize::try_from(online).unwrap_or(usize::MAX),
        })
    }

    /// Removes this node's entry for the user in the room. `None`: Redis did not answer.
    pub(crate) async fn leave(&self, room: &str, user_id: &str) -> Option<Departed> {
        let mut script = redis::cmd("EVAL");
        script
            .arg(LEAVE_SCRIPT)
            .arg(4)
            .arg(format!("{}{user_id}", self.user_stem(room)))
            .arg(self.online_key(room))
            .arg(self.names_key(room))
            .arg(self.rooms_key())
            .arg(unix_millis())
            .arg(&self.node)
            .arg(user_id)
            .arg(room);
        let (gone, online): (u64, u64) = self.ask("leave", &script).await?;
        Some(Departed {
            gone: gone > 0,
            online: usize::try_from(online).unwrap_or(usize::MAX),
        })
    }

    /// The room's users for a `joined` frame, across the cluster: all of them up to
    /// `full_max`, else a sample of [`MEMBERS_SAMPLE`] (or `full_max` if lower) with
    /// the joiner. `None`: Redis did not answer.
    pub(crate) async fn members(
        &self,
        room: &str,
        joiner: &UserRef,
        full_max: usize,
    ) -> Option<Members> {
        let sample = MEMBERS_SAMPLE.min(full_max).max(1);
        let mut script = redis::cmd("EVAL");
        script
            .arg(MEMBERS_SCRIPT)
            .arg(2)
            .arg(self.online_key(room))
            .arg(self.names_key(room))
            .arg(unix_millis())
            .arg(full_max)
            .arg(sample)
            .arg(&joiner.id);
        let reply: Vec<String> = self.ask("members", &script).await?;
        let (online, users) = parse_listing(&reply)?;
        let limit = if online <= full_max {
            usize::MAX
        } else {
            sample
        };
        Some(members_of(online, users, joiner, limit))
    }

    /// Every room with a live user anywhere, with its number of users. `None`: Redis
    /// did not answer.
    pub(crate) async fn occupied(&self) -> Option<Vec<(String, usize)>> {
        let mut script = redis::cmd("EVAL");
        script
            .arg(OCCUPIED_SCRIPT)
            .arg(1)
            .arg(self.rooms_key())
            .arg(unix_millis())
            .arg(format!("{}:online:", self.prefix));
        let reply: Vec<String> = self.ask("occupied rooms", &script).await?;
        Some(
            reply
                .chunks_exact(2)
                .filter_map(|pair| Some((pair[0].clone(), pair[1].parse().ok()?)))
                .collect(),
        )
    }

    /// The number of users of each room, across the cluster, in one round trip.
    /// `None`: Redis did not answer.
    pub(crate) async fn counts(&self, rooms: &[String]) -> Option<Vec<usize>> {
        let live = format!("({}", unix_millis());
        let mut pipe = redis::pipe();
        for room in rooms {
            pipe.cmd("ZCOUNT")
                .arg(self.online_key(room))
                .arg(&live)
                .arg("+inf");
        }
        let mut commands = self.commands.clone();
        match answer_within(
            ANSWER_TIMEOUT,
            pipe.query_async::<Vec<usize>>(&mut commands),
        )
        .await
        {
            Ok(counts) => Some(counts),
            Err(why) => {
                tracing::warn!(%why, "cannot count the rooms' users across the cluster; using this node's counts");
                None
            }
        }
    }

    /// Pushes this node's entries forward, one script per room in one round trip, and
    /// returns the (room, user) this node holds but Redis had no entry for.
    async fn refresh(&self, present: &[(String, Vec<UserRef>)]) -> Vec<(String, String)> {
        if present.is_empty() {
            return Vec::new();
        }
        let now = unix_millis();
        let until = now.saturating_add(duration_millis(self.ttl));
        let mut pipe = redis::pipe();
        for (room, users) in present {
            let script = pipe
                .cmd("EVAL")
                .arg(REFRESH_SCRIPT)
                .arg(3)
                .arg(self.online_key(room))
                .arg(self.names_key(room))
                .arg(self.rooms_key())
                .arg(now)
                .arg(until)
                .arg(self.key_lifetime())
                .arg(&self.node)
                .arg(self.user_stem(room))
                .arg(room);
            for user in users {
                script.arg(&user.id);
            }
        }
        let mut commands = self.commands.clone();
        let refreshed = pipe.query_async::<Vec<Vec<String>>>(&mut commands);
        match answer_within(UPKEEP_TIMEOUT, refreshed).await {
            Ok(missing) => present
                .iter()
                .zip(missing)
                .flat_map(|((room, _), users)| users.into_iter().map(|user| (room.clone(), user)))
                .collect(),
            Err(why) => {
                tracing::warn!(%why, "cannot refresh this node's presence entries");
                Vec::new()
            }
        }
    }

    /// Removes, in each room, the users none of whose entries is live: per room, the
    /// users this node's sweep took out and how many are left.
    async fn sweep(&self, rooms: &[String]) -> Vec<(String, Vec<UserRef>, usize)> {
        if rooms.is_empty() {
            return Vec::new();
        }
        let now = unix_millis();
        let mut pipe = redis::pipe();
        for room in rooms {
            pipe.cmd("EVAL")
                .arg(SWEEP_SCRIPT)
                .arg(3)
                .arg(self.online_key(room))
                .arg(self.names_key(room))
                .arg(self.rooms_key())
                .arg(now)
                .arg(self.user_stem(room))
                .arg(room);
        }
        let mut commands = self.commands.clone();
        let swept = pipe.query_async::<Vec<Vec<String>>>(&mut commands);
        match answer_within(UPKEEP_TIMEOUT, swept).await {
            Ok(replies) => rooms
                .iter()
                .zip(replies)
                .filter_map(|(room, reply)| {
                    let (online, gone) = parse_listing(&reply)?;
                    Some((room.clone(), gone, online))
                })
                .collect(),
            Err(why) => {
                tracing::warn!(%why, "cannot sweep expired presence entries");
                Vec::new()
            }
        }
    }

    /// Every third of the TTL until `stopped`: refreshes this node's entries, writes
    /// back those Redis lost (announcing the user if nobody else had them listed), and
    /// sweeps the rooms this node follows, announcing the `leave` of every user its
    /// sweep took out.
    pub(crate) async fn maintain(
        self: Arc<Self>,
        hub: std::sync::Weak<Hub>,
        announce: Announce,
        stopped: CancellationToken,
    ) {
        let mut ticks = tokio::time::interval((self.ttl / 3).max(Duration::from_millis(10)));
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = stopped.cancelled() => return,
                _ = ticks.tick() => {}
            }
            let Some(hub) = hub.upgrade() else { return };
            self.upkeep(&hub, &announce).await;
        }
    }

    async fn upkeep(&self, hub: &Hub, announce: &Announce) {
        let present = hub.present_users();
        for (room, user_id) in self.refresh(&present).await {
            let Some(user) = present
                .iter()
                .find(|(r, _)| *r == room)
                .and_then(|(_, users)| users.iter().find(|u| u.id == user_id))
            else {
                continue;
            };
            let _turn = self.turn(&room, &user_id).await;
            // Left meanwhile: its leave removed whatever there was.
            if !hub.has_user(&room, &user_id) {
                continue;
            }
            if let Some(arrived) = self.join(&room, user).await
                && arrival_announced(arrived, |before, after| {
                    hub.announce_or_count(&room, before, after)
                })
            {
                announce(&room, user, Change::Join);
            }
        }
        let rooms: Vec<String> = present.into_iter().map(|(room, _)| room).collect();
        for (room, gone, online) in self.sweep(&rooms).await {
            if !gone.is_empty() && hub.announce_or_count(&room, online + gone.len(), online) {
                for user in &gone {
                    announce(&room, user, Change::Leave);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(id: &str, name: &str) -> UserRef {
        UserRef {
            id: id.into(),
            name: name.into(),
        }
    }

    fn strings(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn a_listing_reads_as_a_count_and_users_and_junk_as_nothing() {
        let (count, users) = parse_listing(&strings(&["3", "u1", "ann", "u2", "bob"])).unwrap();
        assert_eq!(count, 3);
        assert_eq!(users, [user("u1", "ann"), user("u2", "bob")]);
        assert_eq!(parse_listing(&strings(&["2"])), Some((2, Vec::new())));
        assert_eq!(parse_listing(&[]), None);
        assert_eq!(parse_listing(&strings(&["many"])), None);
    }

    #[test]
    fn members_are_sorted_by_name_and_always_hold_the_joiner() {
        let joiner = user("z", "carol");
        let listed = members_of(
            2,
            vec![user("b", "bob"), user("a", "ann")],
            &joiner,
            usize::MAX,
        );
        let names: Vec<&str> = listed.users.iter().map(|u| u.name.as_str()).collect();
        assert_eq!(names, ["ann", "bob", "carol"], "the joiner is added");
        assert_eq!(listed.online, 3, "never fewer online than listed");

        let sample = members_of(500, vec![user("a", "ann"), user("b", "bob")], &joiner, 2);
        let names: Vec<&str> = sample.users.iter().map(|u| u.name.as_str()).collect();
        assert_eq!(names.len(), 2, "a sample stays its size: {names:?}");
        assert!(names.contains(&"carol"));
        assert_eq!(sample.online, 500);
    }

    #[test]
    fn a_user_is_announced_once_per_cluster() {
        let small = |_: usize, _: usize| true;
        let arrived = |was_online, online| Arrived { was_online, online };
        assert!(arrival_announced(arrived(false, 1), small));
        assert!(
            !arrival_announced(arrived(true, 2), small),
            "online on another node already"
        );
        let departed = |gone, online| Departed { gone, online };
        assert!(departure_announced(departed(true, 0), small));
        assert!(
            !departure_announced(departed(false, 1), small),
            "still connected on another node, or swept by another node"
        );
        // The room's size before and after decides between announcing and counting.
        let mut seen = None;
        arrival_announced(arrived(false, 5), |before, after| {
            seen = Some((before, after));
            false
        });
        assert_eq!(seen, Some((4, 5)));
        departure_announced(departed(true, 5), |before, after| {
            seen = Some((before, after));
            false
        });
        assert_eq!(seen, Some((6, 5)));
    }
}
