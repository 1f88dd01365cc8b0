//! The single-process broker: store, then hand to the local hub.
//!
//! A per-room lock spans the store write and the hand-off, so messages of a room reach
//! the hub in exactly the order of their `seq`. Rooms do not wait for each other. Only
//! a message the store committed is handed on: nobody sees one that was not stored.

use super::{Broker, BrokerError, encode};
use crate::hub::outbox::Outbox;
use crate::hub::{ConnId, Frame, Hub, Members, RoomEvent};
use crate::model::UserRef;
use crate::store::{Appended, NewMessage, Store};
use async_trait::async_trait;
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
            let started = std::time::Instant::now();
            let appended = self.store.append(message).await;
            crate::stats::store_write(started.elapsed());
            if let Ok(appended) = &appended
                && !appended.duplicate
            {
                let event = RoomEvent::Message {
                    seq: appended.message.seq,
                    frame: encode(&appended.message),
                };
                self.hub.dispatch(&room, &event);
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

    async fn publish_ephemeral(&self, room: &str, about: &str, frame: Frame) {
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

    // One node: joining and leaving are the hub's alone.
    async fn subscribe(
        &self,
        room: &str,
        conn: ConnId,
        user: &UserRef,
        outbox: &Outbox,
    ) -> Result<bool, BrokerError> {
        Ok(self.hub.begin_join(room, conn, user, outbox))
    }

    fn go_live(
        &self,
        room: &str,
        conn: ConnId,
        last_seq: u64,
        joined: &dyn Fn(&Members) -> Frame,
    ) -> bool {
        self.hub.finish_join(room, conn, last_seq, joined)
    }

    async fn unsubscribe(&self, room: &str, conn: ConnId) -> bool {
        matches!(self.hub.leave(room, conn), Some((_, true)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hub::outbox::{Closer, OutboundBudget, Outbox, OutboxQueue};
    use crate::model::StoredMessage;
    use crate::store::{ReplayFrom, RoomSnapshot, StoreError, UserRecord};
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::time::Duration;

    /// A store whose first append is slow: without the per-room lock, the second
    /// message would reach the hub first. With `refuse`, every append fails.
    #[derive(Default)]
    struct SlowFirstStore {
        next_seq: AtomicU64,
        refuse: bool,
    }

    #[async_trait]
    impl Store for SlowFirstStore {
        async fn create_user(&self, _: &str, _: &str, _: &str) -> Result<UserRecord, StoreError> {
            unimplemented!()
        }
        async fn find_user_by_name(&self, _: &str) -> Result<Option<UserRecord>, StoreError> {
            unimplemented!()
        }
        async fn find_user_by_id(&self, _: &str) -> Result<Option<UserRecord>, StoreError> {
            unimplemented!()
        }
        async fn append(&self, message: NewMessage) -> Result<Appended, StoreError> {
            if self.refuse {
                return Err(StoreError::Unwritable("database or disk is full".into()));
            }
            let seq = self.next_seq.fetch_add(1, Ordering::SeqCst) + 1;
            if seq == 1 {
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            Ok(Appended {
                message: StoredMessage {
                    room: message.room,
                    seq,
                    from: message.from,
                    body: message.body,
                    ts: message.ts,
                    nonce: message.nonce,
                },
                duplicate: false,
            })
        }
        async fn snapshot(&self, _: &str, _: ReplayFrom) -> Result<RoomSnapshot, StoreError> {
            unimplemented!()
        }
        async fn before(&self, _: &str, _: u64, _: u32) -> Result<Vec<StoredMessage>, StoreError> {
            unimplemented!()
        }
        async fn rooms(&self) -> Result<Vec<(String, u64)>, StoreError> {
            unimplemented!()
        }
        async fn revoke(&self, _: &str, _: i64) -> Result<(), StoreError> {
            unimplemented!()
        }
        async fn revocations(&self) -> Result<Vec<(String, i64)>, StoreError> {
            unimplemented!()
        }
        async fn disable(&self, _: &str, _: i64) -> Result<(), StoreError> {
            unimplemented!()
        }
        async fn enable(&self, _: &str) -> Result<bool, StoreError> {
            unimplemented!()
        }
        async fn disabled_users(&self) -> Result<Vec<(String, i64)>, StoreError> {
            unimplemented!()
        }
        async fn ping(&self) -> Result<(), StoreError> {
            Ok(())
        }
        async fn check_writable(&self) -> Result<(), StoreError> {
            Ok(())
        }
    }

    fn draft(body: &str) -> NewMessage {
        NewMessage {
            room: "r".into(),
            from: UserRef {
                id: "u".into(),
                name: "u".into(),
            },
            body: body.into(),
            nonce: None,
            ts: 0,
        }
    }

    fn outbox() -> (Outbox, OutboxQueue) {
        Outbox::new(16, 1 << 20, Closer::new(), &OutboundBudget::new(usize::MAX))
    }

    fn user(id: &str) -> UserRef {
        UserRef {
            id: id.into(),
            name: id.into(),
        }
    }

    fn drain(queue: &mut OutboxQueue) -> Vec<String> {
        let mut out = Vec::new();
        while let Some(frame) = queue.try_recv() {
            out.push(frame.as_str().to_owned());
        }
        out
    }

    /// Puts one member in room `r` through the broker: the queue its frames arrive in.
    async fn member_of_r(broker: &MemoryBroker) -> OutboxQueue {
        let (outbox, queue) = outbox();
        let joined = broker.subscribe("r", 1, &user("m"), &outbox).await;
        assert!(matches!(joined, Ok(true)), "the first member is announced");
        broker.go_live("r", 1, 0, &|_| "joined".into());
        queue
    }

    #[tokio::test(start_paused = true)]
    async fn messages_of_a_room_reach_the_hub_in_seq_order_even_when_stores_finish_out_of_order() {
        let hub = Arc::new(Hub::new(16));
        let broker = Arc::new(MemoryBroker::new(
            Arc::new(SlowFirstStore::default()),
            Arc::clone(&hub),
        ));
        let mut queue = member_of_r(&broker).await;

        let first = tokio::spawn({
            let broker = Arc::clone(&broker);
            async move { broker.publish_message(draft("first")).await }
        });
        tokio::task::yield_now().await;
        let second = broker.publish_message(draft("second")).await.unwrap();
        let first = first.await.unwrap().unwrap();
        assert_eq!((first.message.seq, second.message.seq), (1, 2));

        let delivered = drain(&mut queue);
        assert_eq!(
            delivered.len(),
            3,
            "joined, then both messages: {delivered:?}"
        );
        assert!(delivered[1].contains("\"seq\":1") && delivered[2].contains("\"seq\":2"));
    }

    #[tokio::test]
    async fn a_message_the_store_refused_reaches_no_one() {
        let hub = Arc::new(Hub::new(16));
        let store = SlowFirstStore {
            refuse: true,
            ..SlowFirstStore::default()
        };
        let broker = MemoryBroker::new(Arc::new(store), Arc::clone(&hub));
        let mut queue = member_of_r(&broker).await;

        let refused = broker.publish_message(draft("lost")).await;
        assert!(matches!(
            refused,
            Err(BrokerError::Store(StoreError::Unwritable(_)))
        ));
        assert_eq!(
            queue.try_recv().map(|f| f.as_str().to_owned()).as_deref(),
            Some("joined")
        );
        assert!(
            queue.try_recv().is_none(),
            "nothing but the join was queued"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn joining_through_the_broker_is_gap_free_and_unsubscribing_stops_delivery() {
        let hub = Arc::new(Hub::new(16));
        let broker = MemoryBroker::new(Arc::new(SlowFirstStore::default()), Arc::clone(&hub));
        let mut member = member_of_r(&broker).await;
        let (outbox, mut joiner) = outbox();
        let announce = broker.subscribe("r", 2, &user("j"), &outbox).await;
        assert!(matches!(announce, Ok(true)));
        let first = broker.publish_message(draft("one")).await.unwrap();
        let second = broker.publish_message(draft("two")).await.unwrap();
        assert!(joiner.try_recv().is_none(), "held back until it goes live");
        // The snapshot held the first message already.
        assert!(broker.go_live("r", 2, first.message.seq, &|_| "joined".into()));
        let got = drain(&mut joiner);
        assert_eq!(got.len(), 2, "joined, then the second only: {got:?}");
        assert_eq!(got[0], "joined");
        assert!(got[1].contains(&format!("\"seq\":{}", second.message.seq)));

        assert!(
            broker.unsubscribe("r", 2).await,
            "its user's last connection"
        );
        assert!(!broker.unsubscribe("r", 2).await, "not a member any more");
        broker.publish_message(draft("three")).await.unwrap();
        assert!(joiner.try_recv().is_none(), "nothing after unsubscribing");
        assert_eq!(drain(&mut member).len(), 4, "joined and all three messages");
    }
}
