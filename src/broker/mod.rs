//! Fan-out: how a room event reaches every node's hub.
//!
//! As in centrifuge, storing a message and publishing it happen together behind this
//! trait, so the order of `seq` in the store is the order in which hubs see messages.
//! A broker gets that order from the store rather than making it: it publishes from the
//! hook the store calls after each commit, in commit order (see [`Store::append`]), so
//! sends to one room share commits instead of waiting for each other's.
//! The embedded [`memory::MemoryBroker`] serves one process; a Redis broker for cluster
//! mode implements the same trait (publishing from the same hook), and the session code
//! does not change.
//!
//! [`Store::append`]: crate::store::Store::append

pub mod memory;

use crate::store::{Appended, NewMessage, StoreError};
use async_trait::async_trait;
use axum::extract::ws::Utf8Bytes;

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
    async fn publish_ephemeral(&self, room: &str, about: &str, frame: Utf8Bytes);

    /// Answers when the broker does (for `/readyz`).
    async fn ping(&self) -> Result<(), BrokerError>;
}

/// Serialises a frame once; the result is shared by every recipient.
pub fn encode(frame: &impl serde::Serialize) -> Utf8Bytes {
    match serde_json::to_string(frame) {
        Ok(text) => Utf8Bytes::from(text),
        Err(error) => {
            tracing::error!(%error, "cannot serialise a frame");
            Utf8Bytes::from_static(
                r#"{"type":"error","code":"internal","message":"internal error"}"#,
            )
        }
    }
}
