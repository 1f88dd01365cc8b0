//! Rooms and their members on this node.
//!
//! The hub knows which connections are in which room and hands each room event to every
//! member's [`Outbox`]. It never touches the network or the database: the broker calls
//! [`Hub::dispatch`] with frames already serialised once, and the same bytes are shared
//! by every recipient.
//!
//! Joining is two-step so a member never sees a gap or a duplicate: [`Hub::begin_join`]
//! registers the connection and buffers what is published meanwhile, the session reads a
//! snapshot of the room from the store, and [`Hub::finish_join`] queues the `joined` frame
//! and then only the buffered messages newer than the snapshot. From then on a member
//! gets each `seq` once: anything at or below the last one it was given is skipped.

use crate::model::UserRef;
use crate::ws::close::CloseCode;
use crate::ws::outbox::Outbox;
use axum::extract::ws::Utf8Bytes;
use dashmap::DashMap;
use std::collections::HashMap;
use std::mem;

/// Identifies one WebSocket connection on this node.
pub type ConnId = u64;

/// Something that happened in a room, ready to send.
#[derive(Clone, Debug)]
pub enum RoomEvent {
    /// A stored message: to every member, once, in `seq` order.
    Message { seq: u64, frame: Utf8Bytes },
    /// Presence or typing: to every member except the user it is about.
    Ephemeral { about: String, frame: Utf8Bytes },
}

enum MemberState {
    /// Between `begin_join` and `finish_join`: messages wait here.
    Joining(Vec<(u64, Utf8Bytes)>),
    /// Receiving live; `through` is the last `seq` queued to it.
    Live { through: u64 },
}

struct Member {
    user: UserRef,
    outbox: Outbox,
    state: MemberState,
}

#[derive(Default)]
struct Room {
    members: HashMap<ConnId, Member>,
}

impl Room {
    /// Each user in the room once, in a stable order.
    fn users(&self) -> Vec<UserRef> {
        let mut users: Vec<UserRef> = Vec::new();
        for member in self.members.values() {
            if !users.iter().any(|u| u.id == member.user.id) {
                users.push(member.user.clone());
            }
        }
        users.sort_by(|a, b| a.name.cmp(&b.name).then_with(|| a.id.cmp(&b.id)));
        users
    }

    fn has_user_besides(&self, user_id: &str, conn: ConnId) -> bool {
        self.members
            .iter()
            .any(|(id, m)| *id != conn && m.user.id == user_id)
    }
}

pub struct Hub {
    rooms: DashMap<String, Room>,
    /// Messages a joining member may have waiting before it counts as a slow consumer.
    join_buffer: usize,
}

impl Hub {
    pub fn new(join_buffer: usize) -> Self {
        Self {
            rooms: DashMap::new(),
            join_buffer,
        }
    }

    /// Registers a connection in a room (again, if it is there already) and starts
    /// buffering its messages. True when it is the user's first connection in the room.
    pub fn begin_join(&self, room: &str, conn: ConnId, user: &UserRef, outbox: &Outbox) -> bool {
        let mut entry = self.rooms.entry(room.to_owned()).or_default();
        let rejoin = entry.members.contains_key(&conn);
        let first = !rejoin && !entry.has_user_besides(&user.id, conn);
        entry.members.insert(
            conn,
            Member {
                user: user.clone(),
                outbox: outbox.clone(),
                state: MemberState::Joining(Vec::new()),
            },
        );
        first
    }

    /// Queues the `joined` frame (built from the room's members) and then every
    /// message published since `begin_join` with a `seq` after `last_seq`.
    /// False if the connection is no longer in the room or its queue is full.
    pub fn finish_join(
        &self,
        room: &str,
        conn: ConnId,
        last_seq: u64,
        joined: impl FnOnce(&[UserRef]) -> Utf8Bytes,
    ) -> bool {
        let Some(mut entry) = self.rooms.get_mut(room) else {
            return false;
        };
        let users = entry.users();
        let Some(member) = entry.members.get_mut(&conn) else {
            return false;
        };
        if !member.outbox.push(joined(&users)) {
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

    /// Removes a connection from a room: the user it was, and whether it was that
    /// user's last connection there (`None` if it was not a member).
    pub fn leave(&self, room: &str, conn: ConnId) -> Option<(UserRef, bool)> {
        let mut entry = self.rooms.get_mut(room)?;
        let member = entry.members.remove(&conn)?;
        let last = !entry.has_user_besides(&member.user.id, conn);
        drop(entry);
        self.rooms.remove_if(room, |_, r| r.members.is_empty());
        Some((member.user, last))
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
                        member.outbox.closer().close(CloseCode::SlowConsumer);
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
                // The `joined` frame's member list supersedes presence seen while joining.
                (RoomEvent::Ephemeral { .. }, MemberState::Joining(_)) => {}
            }
        }
        crate::stats::deliveries(delivered);
    }

    /// Every room with someone in it, with its number of distinct users.
    pub fn occupied_rooms(&self) -> Vec<(String, usize)> {
        self.rooms
            .iter()
            .map(|r| (r.key().clone(), r.users().len()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ws::outbox::{Closer, OutboundBudget, OutboxQueue};

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
        hub.finish_join("r", 2, 0, |users| format!("{}", users.len()).into());
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
        assert_eq!(drain(&mut rx_b), ["2"]);
        assert_eq!(hub.occupied_rooms(), [("r".to_owned(), 2)]);
        assert_eq!(hub.leave("r", 1), Some((user("a"), false)));
        assert_eq!(hub.leave("r", 3), Some((user("a"), true)));
        assert_eq!(hub.leave("r", 3), None);
        assert_eq!(hub.leave("r", 2), Some((user("b"), true)));
        assert!(hub.occupied_rooms().is_empty());
    }
}
