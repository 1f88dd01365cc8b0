//! Rooms and their members on this node.
//!
//! The hub knows which connections are in which room and hands each room event to every
//! member's [`Outbox`]. It never touches the network or the database: the broker calls
//! [`Hub::dispatch`] with frames already serialised once ([`Frame`]), and the same bytes
//! are shared by every recipient.
//!
//! The hub, the outboxes ([`outbox`]) and [`Frame`] are the core the transports sit on:
//! nothing here names WebSocket types or close codes, and sessions join and leave
//! through the broker ([`Broker::subscribe`]), which calls the hub, so a broker between
//! nodes can follow which rooms this node needs.
//!
//! Joining is two-step so a member never sees a gap or a duplicate: [`Hub::begin_join`]
//! registers the connection and buffers what is published meanwhile, the session reads a
//! snapshot of the room from the store, and [`Hub::finish_join`] queues the `joined` frame
//! and then only the buffered messages newer than the snapshot. From then on a member
//! gets each `seq` once: anything at or below the last one it was given is skipped.
//!
//! Each room counts its users (a user with several connections there is one), so the
//! number online is O(1) and the member list O(users). Presence is per user while a
//! room is small: a join or leave is announced when the room has at most
//! `presence_full_max` users before and after it. Beyond that it is only counted, and
//! [`Hub::take_counts`] hands out, once per interval, the rooms whose count changed, so a
//! member of a big room gets at most one count per interval however many join.
//! In cluster mode the broker asks the cluster whether to announce, and with which
//! count ([`Hub::begin_join_here`], [`Hub::leave_here`], [`Hub::announce_or_count`]):
//! the hub only knows this node's users.
//!
//! [`Broker::subscribe`]: crate::broker::Broker::subscribe

mod frame;
pub(crate) mod outbox;

pub(crate) use frame::Frame;

use crate::model::UserRef;
use dashmap::DashMap;
use outbox::{CloseReason, Outbox};
use std::collections::HashMap;
use std::mem;
use std::sync::Mutex;

/// Identifies one WebSocket connection on this node.
pub(crate) type ConnId = u64;

/// Most users the `joined` frame of a counted room lists.
pub(crate) const MEMBERS_SAMPLE: usize = 100;

/// Users above which, by default, joins and leaves are counted instead of announced.
pub(crate) const DEFAULT_PRESENCE_FULL_MAX: usize = 1000;

/// Something that happened in a room, ready to send.
#[derive(Clone, Debug)]
pub enum RoomEvent {
    /// A stored message: to every member, once, in `seq` order.
    Message { seq: u64, frame: Frame },
    /// Presence or typing: to every member except the user it is about.
    Ephemeral { about: String, frame: Frame },
    /// The number of users in the room: to every member that has joined.
    Count { frame: Frame },
}

/// Who is in a room when a `joined` frame is built.
pub struct Members {
    /// Everyone, or in a counted room a sample that includes the joiner; by name, then id.
    pub users: Vec<UserRef>,
    /// How many distinct users are in the room, the joiner included.
    pub online: usize,
}

enum MemberState {
    /// Between `begin_join` and `finish_join`: messages wait here.
    Joining(Vec<(u64, Frame)>),
    /// Receiving live; `through` is the last `seq` queued to it.
    Live { through: u64 },
}

struct Member {
    user: UserRef,
    outbox: Outbox,
    state: MemberState,
}

/// A user in a room: as first seen there, and with how many connections.
struct Present {
    user: UserRef,
    connections: usize,
}

#[derive(Default)]
struct Room {
    members: HashMap<ConnId, Member>,
    /// Each user once, by id.
    users: HashMap<String, Present>,
    /// A join or leave was counted, not announced, since the last count was handed out.
    count_changed: bool,
}

impl Room {
    /// The users a `joined` frame lists: all of them, or when there are more than
    /// `limit`, `limit` of them with `joiner` among them; in a stable order.
    fn members(&self, joiner: &str, limit: usize) -> Members {
        let mut users: Vec<UserRef> = if self.users.len() <= limit {
            self.users.values().map(|p| p.user.clone()).collect()
        } else {
            let mut sample: Vec<UserRef> = self
                .users
                .get(joiner)
                .map(|p| p.user.clone())
                .into_iter()
                .collect();
            let others = self
                .users
                .values()
                .filter(|p| p.user.id != joiner)
                .take(limit.saturating_sub(sample.len()))
                .map(|p| p.user.clone());
            sample.extend(others);
            sample
        };
        users.sort_by(|a, b| a.name.cmp(&b.name).then_with(|| a.id.cmp(&b.id)));
        Members {
            users,
            online: self.users.len(),
        }
    }
}

pub struct Hub {
    rooms: DashMap<String, Room>,
    /// Messages a joining member may have waiting before it counts as a slow consumer.
    join_buffer: usize,
    /// Users a room may have for its joins and leaves to be announced one by one.
    presence_full_max: usize,
    /// Rooms with `count_changed` set, each once.
    counts_due: Mutex<Vec<String>>,
}

impl Hub {
    pub fn new(join_buffer: usize) -> Self {
        Self {
            rooms: DashMap::new(),
            join_buffer,
            presence_full_max: DEFAULT_PRESENCE_FULL_MAX,
            counts_due: Mutex::new(Vec::new()),
        }
    }

    /// Sets how many users a room may have for presence to be announced per user.
    #[must_use]
    pub fn with_presence_full_max(mut self, users: usize) -> Self {
        self.presence_full_max = users;
        self
    }

    /// Whether a join or leave that took the room from `before` to `after` users is
    /// announced per user; if not, the room's count is marked as changed.
    fn announced(&self, name: &str, room: &mut Room, before: usize, after: usize) -> bool {
        if before.max(after) <= self.presence_full_max {
            return true;
        }
        if !mem::replace(&mut room.count_changed, true) {
            self.counts_due
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .push(name.to_owned());
        }
        false
    }

    /// Registers a connection in a room (again, if it is there already) and starts
    /// buffering its messages. True when the user's arrival is to be announced: it is
    /// the user's first connection in the room and the room is small enough.
    pub fn begin_join(&self, room: &str, conn: ConnId, user: &UserRef, outbox: &Outbox) -> bool {
        match self.begin_join_here(room, conn, user, outbox) {
            Some((before, after)) => self.announce_or_count(room, before, after),
            None => false,
        }
    }

    /// [`Hub::begin_join`] without the announce rule: `Some((before, after))`, this
    /// node's users in the room before and after, when it is the user's first connection
    /// in the room here. A broker between nodes decides the announcement with the
    /// cluster's count ([`Hub::announce_or_count`]).
    pub fn begin_join_here(
        &self,
        room: &str,
        conn: ConnId,
        user: &UserRef,
        outbox: &Outbox,
    ) -> Option<(usize, usize)> {
        let mut entry = self.rooms.entry(room.to_owned()).or_default();
        let member = Member {
            user: user.clone(),
            outbox: outbox.clone(),
            state: MemberState::Joining(Vec::new()),
        };
        if entry.members.insert(conn, member).is_some() {
            return None;
        }
        let before = entry.users.len();
        let present = entry.users.entry(user.id.clone()).or_insert(Present {
            user: user.clone(),
            connections: 0,
        });
        present.connections += 1;
        if present.connections > 1 {
            return None;
        }
        Some((before, entry.users.len()))
    }

    /// Whether a join or leave that took the room from `before` to `after` users is
    /// announced per user; if not, the room's count here is marked as changed (for its
    /// next `occupancy` frame). A room with nobody here is only judged.
    pub fn announce_or_count(&self, room: &str, before: usize, after: usize) -> bool {
        match self.rooms.get_mut(room) {
            Some(mut entry) => self.announced(room, &mut entry, before, after),
            None => before.max(after) <= self.presence_full_max,
        }
    }

    /// Users a room may have for presence to be announced per user.
    pub fn presence_full_max(&self) -> usize {
        self.presence_full_max
    }

    /// Queues the `joined` frame (built from the room's members) and then every
    /// message published since `begin_join` with a `seq` after `last_seq`.
    /// False if the connection is no longer in the room or its queue is full.
    ///
    /// `joined` runs under the room's lock: it should only add the members to a frame
    /// encoded beforehand.
    pub fn finish_join(
        &self,
        room: &str,
        conn: ConnId,
        last_seq: u64,
        joined: impl FnOnce(&Members) -> Frame,
    ) -> bool {
        let Some(mut entry) = self.rooms.get_mut(room) else {
            return false;
        };
        let Some(joiner) = entry.members.get(&conn).map(|m| m.user.id.clone()) else {
            return false;
        };
        let limit = if entry.users.len() <= self.presence_full_max {
            usize::MAX
        } else {
            MEMBERS_SAMPLE.min(self.presence_full_max).max(1)
        };
        let members = entry.members(&joiner, limit);
        let Some(member) = entry.members.get_mut(&conn) else {
            return false;
        };
        if !member.outbox.push(joined(&members)) {
            return false;
        }
        let buffered =
            match mem::replace(&mut member.state, MemberState::Live { through: last_seq }) {
                MemberState::Joining(buffered) => buffered,
                MemberState::Live { .. } => Vec::new(),
            };
        let mut through = last_seq;
        for (seq, frame) in buffered {
            if seq > through {
                through = seq;
                if !member.outbox.push(frame) {
                    return false;
                }
            }
        }
        member.state = MemberState::Live { through };
        true
    }

    /// Removes a connection from a room: the user it was, and whether that user's
    /// departure is to be announced (its last connection there, in a room small
    /// enough); `None` if it was not a member.
    pub fn leave(&self, room: &str, conn: ConnId) -> Option<(UserRef, bool)> {
        let (user, last) = self.leave_here(room, conn)?;
        let announce =
            last.is_some_and(|(before, after)| self.announce_or_count(room, before, after));
        Some((user, announce))
    }

    /// [`Hub::leave`] without the announce rule: the user, and `Some((before, after))`
    /// (this node's users in the room) when it was the user's last connection here.
    /// An emptied room is removed.
    pub fn leave_here(
        &self,
        room: &str,
        conn: ConnId,
    ) -> Option<(UserRef, Option<(usize, usize)>)> {
        let mut entry = self.rooms.get_mut(room)?;
        let member = entry.members.remove(&conn)?;
        let before = entry.users.len();
        let last = match entry.users.get_mut(&member.user.id) {
            Some(present) if present.connections > 1 => {
                present.connections -= 1;
                false
            }
            Some(_) => {
                entry.users.remove(&member.user.id);
                true
            }
            None => false,
        };
        let after = entry.users.len();
        drop(entry);
        // Nobody here is told of an emptied room's count: nothing to mark on it.
        self.rooms.remove_if(room, |_, r| r.members.is_empty());
        Some((member.user, last.then_some((before, after))))
    }

    /// Hands an event to every member of the room on this node.
    pub fn dispatch(&self, room: &str, event: &RoomEvent) {
        let Some(mut entry) = self.rooms.get_mut(room) else {
            return;
        };
        let mut delivered = 0;
        for member in entry.members.values_mut() {
            match (event, &mut member.state) {
                (RoomEvent::Message { seq, frame }, MemberState::Joining(buffered)) => {
                    if buffered.len() < self.join_buffer {
                        buffered.push((*seq, frame.clone()));
                    } else {
                        member.outbox.closer().close(CloseReason::SlowConsumer);
                    }
                }
                (RoomEvent::Message { seq, frame }, MemberState::Live { through }) => {
                    if *seq > *through {
                        *through = *seq;
                        delivered += usize::from(member.outbox.push(frame.clone()));
                    }
                }
                (RoomEvent::Ephemeral { about, frame }, MemberState::Live { .. }) => {
                    if member.user.id != *about {
                        delivered += usize::from(member.outbox.push(frame.clone()));
                    }
                }
                (RoomEvent::Count { frame }, MemberState::Live { .. }) => {
                    delivered += usize::from(member.outbox.push(frame.clone()));
                }
                // The `joined` frame's member list and count supersede presence and
                // counts seen while joining.
                (
                    RoomEvent::Ephemeral { .. } | RoomEvent::Count { .. },
                    MemberState::Joining(_),
                ) => {}
            }
        }
        crate::stats::deliveries(delivered);
    }

    /// Every room whose count changed without being announced since the last call,
    /// with its number of distinct users now (rooms that have emptied are left out).
    pub fn take_counts(&self) -> Vec<(String, usize)> {
        let due = mem::take(
            &mut *self
                .counts_due
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner()),
        );
        due.into_iter()
            .filter_map(|name| {
                let mut room = self.rooms.get_mut(&name)?;
                if !mem::replace(&mut room.count_changed, false) {
                    return None;
                }
                let online = room.users.len();
                drop(room);
                Some((name, online))
            })
            .collect()
    }

    /// Every room with someone in it here, with each of its users once.
    pub fn present_users(&self) -> Vec<(String, Vec<UserRef>)> {
        self.rooms
            .iter()
            .map(|r| {
                let users = r.users.values().map(|p| p.user.clone()).collect();
                (r.key().clone(), users)
            })
            .collect()
    }

    /// The id of the user a connection in the room is, if it is a member.
    pub fn member_user(&self, room: &str, conn: ConnId) -> Option<String> {
        self.rooms
            .get(room)
            .and_then(|r| r.members.get(&conn).map(|m| m.user.id.clone()))
    }

    /// Whether the user has a connection in the room here.
    pub fn has_user(&self, room: &str, user_id: &str) -> bool {
        self.rooms
            .get(room)
            .is_some_and(|r| r.users.contains_key(user_id))
    }

    /// Whether the room has a member on this node (joining or live).
    pub fn has_members(&self, room: &str) -> bool {
        self.rooms.contains_key(room)
    }

    /// Every room with someone in it, with its number of distinct users.
    pub fn occupied_rooms(&self) -> Vec<(String, usize)> {
        self.rooms
            .iter()
            .map(|r| (r.key().clone(), r.users.len()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::outbox::{Closer, OutboundBudget, OutboxQueue};
    use super::*;

    fn user(id: &str) -> UserRef {
        UserRef {
            id: id.into(),
            name: id.into(),
        }
    }

    fn outbox() -> (Outbox, OutboxQueue) {
        Outbox::new(16, 1 << 20, Closer::new(), &OutboundBudget::new(usize::MAX))
    }

    fn message(seq: u64) -> RoomEvent {
        RoomEvent::Message {
            seq,
            frame: format!("m{seq}").into(),
        }
    }

    fn drain(queue: &mut OutboxQueue) -> Vec<String> {
        let mut out = Vec::new();
        while let Some(frame) = queue.try_recv() {
            out.push(frame.as_str().to_owned());
        }
        out
    }

    /// A joined frame that shows the members it was built from: "online:name,name".
    fn listing(members: &Members) -> Frame {
        let names: Vec<&str> = members.users.iter().map(|u| u.name.as_str()).collect();
        format!("{}:{}", members.online, names.join(",")).into()
    }

    #[test]
    fn messages_published_during_a_join_follow_the_joined_frame_without_duplicates() {
        let hub = Hub::new(16);
        let (ob, mut rx) = outbox();
        assert!(hub.begin_join("r", 1, &user("a"), &ob));
        hub.dispatch("r", &message(5));
        hub.dispatch("r", &message(6));
        // The snapshot already held seq 5.
        assert!(hub.finish_join("r", 1, 5, |_| "joined".into()));
        hub.dispatch("r", &message(6));
        hub.dispatch("r", &message(7));
        assert_eq!(drain(&mut rx), ["joined", "m6", "m7"]);
    }

    #[test]
    fn presence_is_per_user_and_never_about_oneself() {
        let hub = Hub::new(16);
        let (a1, mut rx_a1) = outbox();
        let (a2, _rx_a2) = outbox();
        let (b, mut rx_b) = outbox();
        assert!(hub.begin_join("r", 1, &user("a"), &a1));
        hub.finish_join("r", 1, 0, |_| "joined".into());
        assert!(hub.begin_join("r", 2, &user("b"), &b));
        hub.finish_join("r", 2, 0, listing);
        assert!(
            !hub.begin_join("r", 3, &user("a"), &a2),
            "second connection of a"
        );
        hub.dispatch(
            "r",
            &RoomEvent::Ephemeral {
                about: "b".into(),
                frame: "b-typing".into(),
            },
        );
        assert_eq!(drain(&mut rx_a1), ["joined", "b-typing"]);
        assert_eq!(drain(&mut rx_b), ["2:a,b"]);
        assert_eq!(hub.occupied_rooms(), [("r".to_owned(), 2)]);
        assert_eq!(hub.leave("r", 1), Some((user("a"), false)));
        assert_eq!(hub.leave("r", 3), Some((user("a"), true)));
        assert_eq!(hub.leave("r", 3), None);
        assert_eq!(hub.leave("r", 2), Some((user("b"), true)));
        assert!(hub.occupied_rooms().is_empty());
    }

    #[test]
    fn users_are_counted_once_whatever_their_connections_and_rejoins() {
        let hub = Hub::new(16);
        let (ob, _rx) = outbox();
        hub.begin_join("r", 1, &user("a"), &ob);
        hub.begin_join("r", 2, &user("a"), &ob);
        hub.begin_join("r", 2, &user("a"), &ob);
        hub.begin_join("r", 3, &user("b"), &ob);
        assert_eq!(hub.occupied_rooms(), [("r".to_owned(), 2)]);
        hub.leave("r", 1);
        assert_eq!(hub.occupied_rooms(), [("r".to_owned(), 2)]);
        hub.leave("r", 2);
        assert_eq!(hub.occupied_rooms(), [("r".to_owned(), 1)]);
        assert_eq!(hub.take_counts(), [], "nothing was counted in a small room");
    }

    #[test]
    fn above_the_threshold_joins_and_leaves_are_counted_once_per_interval() {
        let hub = Hub::new(16).with_presence_full_max(2);
        let mut queues = Vec::new();
        for (conn, name) in [(1, "a"), (2, "b")] {
            let (ob, rx) = outbox();
            assert!(
                hub.begin_join("r", conn, &user(name), &ob),
                "{name} announced"
            );
            hub.finish_join("r", conn, 0, |_| "joined".into());
            queues.push(rx);
        }
        let (c, mut rx_c) = outbox();
        let (d, _rx_d) = outbox();
        assert!(!hub.begin_join("r", 3, &user("c"), &c), "c is counted");
        assert!(!hub.begin_join("r", 4, &user("d"), &d), "d is counted");
        hub.finish_join("r", 3, 0, listing);
        let joined = drain(&mut rx_c);
        let (online, names) = joined[0].split_once(':').unwrap();
        assert_eq!(online, "4");
        assert_eq!(names.split(',').count(), 2, "a sample: {names}");
        assert!(
            names.split(',').any(|n| n == "c"),
            "with the joiner: {names}"
        );

        assert_eq!(
            hub.take_counts(),
            [("r".to_owned(), 4)],
            "one count for both"
        );
        assert_eq!(hub.take_counts(), []);
        assert_eq!(hub.leave("r", 4), Some((user("d"), false)), "from 4 to 3");
        assert_eq!(hub.leave("r", 3), Some((user("c"), false)), "from 3 to 2");
        assert_eq!(hub.take_counts(), [("r".to_owned(), 2)]);
        assert_eq!(hub.leave("r", 2), Some((user("b"), true)), "from 2 to 1");
        assert_eq!(hub.take_counts(), []);

        hub.dispatch("r", &RoomEvent::Count { frame: "2".into() });
        assert_eq!(drain(&mut queues[0]), ["joined", "2"]);
    }

    #[test]
    fn the_per_node_steps_say_first_and_last_connection_and_leave_the_rule_to_the_caller() {
        let hub = Hub::new(16).with_presence_full_max(1);
        let (ob, _rx) = outbox();
        assert_eq!(hub.begin_join_here("r", 1, &user("a"), &ob), Some((0, 1)));
        assert_eq!(
            hub.begin_join_here("r", 2, &user("a"), &ob),
            None,
            "not her first"
        );
        assert_eq!(
            hub.begin_join_here("r", 2, &user("a"), &ob),
            None,
            "a rejoin"
        );
        assert_eq!(hub.member_user("r", 2).as_deref(), Some("a"));
        assert!(hub.has_user("r", "a"));
        // The cluster's count decides: 3 users is past the threshold, so it is counted.
        assert!(!hub.announce_or_count("r", 2, 3));
        assert_eq!(
            hub.take_counts(),
            [("r".to_owned(), 1)],
            "this node's count"
        );
        assert!(hub.announce_or_count("r", 1, 0));
        assert_eq!(
            hub.leave_here("r", 1),
            Some((user("a"), None)),
            "still here"
        );
        assert_eq!(hub.leave_here("r", 2), Some((user("a"), Some((1, 0)))));
        assert!(!hub.has_members("r"), "an emptied room is gone");
        assert!(hub.announce_or_count("r", 1, 0), "judged without a room");
        assert!(hub.present_users().is_empty());
    }
}
