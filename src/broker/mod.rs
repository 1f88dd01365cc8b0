//! Fan-out: how a room event reaches every node's hub.
//!
//! As in centrifuge, storing a message and publishing it happen together behind this
//! trait, so the order of `seq` in the store is the order in which hubs see messages.
//! The embedded [`memory::MemoryBroker`] serves one process; a Redis broker for cluster
//! mode implements the same trait, and the session code does not change.

pub mod memory;

use crate::hub::Frame;
use crate::store::{Appended, NewMessage, StoreError};
use async_trait::async_trait;

#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    #[error(transparent)]
    Store(#[from] StoreError),
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

    /// Answers when the broker does (for `/readyz`).
    async fn ping(&self) -> Result<(), BrokerError>;
}

/// Serialises a frame once; the result is shared by every recipient.
pub fn encode(frame: &impl serde::Serialize) -> Frame {
    match serde_json::to_string(frame) {
        Ok(text) => Frame::from(text),
        Err(error) => {
            tracing::error!(%error, "cannot serialise a frame");
            Frame::from_static(r#"{"type":"error","code":"internal","message":"internal error"}"#)
        }
    }
}
