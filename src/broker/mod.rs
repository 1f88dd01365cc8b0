//! Fan-out: how a room event reaches every node's hub.
//!
//! As in centrifuge, storing a message and publishing it happen together behind this
//! trait, so the order of `seq` in the store is the order in which hubs see messages.
//! A broker gets that order from the store rather than making it: it publishes from the
//! hook the store calls after each commit, in commit order (see [`MessageLog::append`]), so
//! sends to one room share commits instead of waiting for each other's.
//! The embedded [`memory::MemoryBroker`] serves one process; [`redis::RedisBroker`] for
//! cluster mode implements the same trait (publishing from the same hook), and the
//! session code does not change.
//!
//! Joining and leaving a room go through the broker too ([`Broker::subscribe`],
//! [`Broker::unsubscribe`]), not straight to the hub: a broker between nodes has to
//! receive a room's messages before this node's first member of it reads its snapshot,
//! and can stop receiving them when the last one leaves, without sessions knowing.
//!
//! [`MessageLog::append`]: crate::store::MessageLog::append

pub(crate) mod memory;
pub(crate) mod presence;
pub(crate) mod redis;

use crate::hub::outbox::Outbox;
use crate::hub::{ConnId, Frame, Members};
use crate::model::UserRef;
use crate::store::{Appended, NewMessage, StoreError};
use async_trait::async_trait;

#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Redis did not answer (cluster mode); never credentials.
    #[error("redis: {0}")]
    Redis(String),
}

#[async_trait]
pub trait Broker: Send + Sync + 'static {
    /// Stores a message durably and delivers it to the room's members, in `seq` order.
    /// A repeated nonce is stored and delivered once: later calls return the first
    /// message with `duplicate: true`.
    async fn publish_message(&self, message: NewMessage) -> Result<Appended, BrokerError>;

    /// Delivers a presence or typing frame to the room's members, except those of the
    /// user it is about. Not stored; best effort.
    async fn publish_ephemeral(&self, room: &str, about: &str, frame: Frame);

    /// Makes a connection a member of a room on this node, first step of a join: from
    /// when this returns, every message published to the room reaches the connection,
    /// held back until [`Broker::go_live`]. A broker between nodes subscribes the node
    /// to the room first when this is the room's first member here. True when the
    /// user's arrival is to be announced (see [`crate::hub::Hub::begin_join`]).
    ///
    /// A join is gap-free in three steps: `subscribe`, read a snapshot of the room from
    /// the store, then `go_live` with the snapshot's last `seq`. Whatever was published
    /// meanwhile and is not in the snapshot follows the `joined` frame, each `seq` once.
    /// After an error the caller unsubscribes the connection, as after any join that
    /// fails half-way.
    async fn subscribe(
        &self,
        room: &str,
        conn: ConnId,
        user: &UserRef,
        outbox: &Outbox,
    ) -> Result<bool, BrokerError>;

    /// Last step of a join: queues the `joined` frame (`joined` adds the room's members
    /// to a frame encoded beforehand; it runs under the room's lock) and then what was
    /// held back with a `seq` after `last_seq`. False if the connection is no longer in
    /// the room or its queue is full. Local to this node whatever the broker.
    fn go_live(
        &self,
        room: &str,
        conn: ConnId,
        last_seq: u64,
        joined: &dyn Fn(&Members) -> Frame,
    ) -> bool;

    /// The room's users for the `joined` frame of `joiner`, when the broker knows more
    /// than this node's hub (cluster mode: every node's users); `None`, the default:
    /// the hub's members are used.
    async fn members(&self, _room: &str, _joiner: &UserRef) -> Option<Members> {
        None
    }

    /// Every room with someone in it, with its number of distinct users (on every node
    /// in cluster mode).
    async fn occupied_rooms(&self) -> Vec<(String, usize)>;

    /// The number of users of each of these rooms, given this node's counts: the same
    /// on one node, the cluster's in cluster mode (for `occupancy` frames).
    async fn counts(&self, here: Vec<(String, usize)>) -> Vec<(String, usize)> {
        here
    }

    /// Removes a connection from a room on this node (nothing if it was not a member);
    /// a broker between nodes unsubscribes the node when it was the room's last member
    /// here. True when the user's departure is to be announced.
    async fn unsubscribe(&self, room: &str, conn: ConnId) -> bool;

    /// Answers when the broker does (for `/readyz`).
    async fn ping(&self) -> Result<(), BrokerError>;
}

/// Serialises a frame once; the result is shared by every recipient.
pub(crate) fn encode(frame: &impl serde::Serialize) -> Frame {
    match serde_json::to_string(frame) {
        Ok(text) => Frame::from(text),
        Err(error) => {
            tracing::error!(%error, "cannot serialise a frame");
            Frame::from_static(r#"{"type":"error","code":"internal","message":"internal error"}"#)
        }
    }
}
