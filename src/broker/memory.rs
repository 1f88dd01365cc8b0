//! The single-process broker: store, then hand to the local hub.
//!
//! A per-room lock spans the store write and the hand-off, so messages of a room reach
//! the hub in exactly the order of their `seq`. Rooms do not wait for each other.

use super::{Broker, BrokerError, encode};
use crate::hub::{Hub, RoomEvent};
use crate::store::{Appended, NewMessage, Store};
use async_trait::async_trait;
use axum::extract::ws::Utf8Bytes;
use dashmap::DashMap;
use std::sync::Arc;
use tokio::sync::Mutex;

pub struct MemoryBroker {
    store: Arc<dyn Store>,
    hub: Arc<Hub>,
    sequencers: DashMap<String, Arc<Mutex<()>>>,
}

impl MemoryBroker {
    pub fn new(store: Arc<dyn Store>, hub: Arc<Hub>) -> Self {
        Self {
            store,
            hub,
            sequencers: DashMap::new(),
        }
    }
}

#[async_trait]
impl Broker for MemoryBroker {
    async fn publish_message(&self, message: NewMessage) -> Result<Appended, BrokerError> {
        let room = message.room.clone();
        let sequencer = self.sequencers.entry(room.clone()).or_default().clone();
        let result = {
            let _turn = sequencer.lock().await;
            let appended = self.store.append(message).await;
            if let Ok(appended) = &appended {
                if !appended.duplicate {
                    let event = RoomEvent::Message {
                        seq: appended.message.seq,
                        frame: encode(&appended.message),
                    };
                    self.hub.dispatch(&room, &event);
                }
            }
            appended
        };
        drop(sequencer);
        // Forget the lock of a quiet room; entry() and this check share the shard lock,
        // so a lock someone else holds or waits on is never removed.
        self.sequencers
            .remove_if(&room, |_, lock| Arc::strong_count(lock) == 1);
        Ok(result?)
    }

    async fn publish_ephemeral(&self, room: &str, about: &str, frame: Utf8Bytes) {
        self.hub.dispatch(
            room,
            &RoomEvent::Ephemeral {
                about: about.to_owned(),
                frame,
            },
        );
    }

    async fn ping(&self) -> Result<(), BrokerError> {
        Ok(())
    }
}
