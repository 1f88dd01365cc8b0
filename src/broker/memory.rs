//! The single-process broker: store, and let the store's commit hand the message to
//! the local hub.
//!
//! A room's order is the store's commit order: the store calls the hook given with each
//! append right after the commit, one message at a time in `seq` order, and the hook
//! queues the message in every member's outbox there and then. So the broker keeps no
//! lock per room: many sends of one room can wait for the same commit (one fsync for
//! all of them), and still reach the hub in exactly the order of their `seq`. Only a
//! message the store committed is handed on: nobody sees one that was not stored, and a
//! message is handed on even if its sender stopped waiting for the ack meanwhile.

use super::{Broker, BrokerError, encode};
use crate::hub::outbox::Outbox;
use crate::hub::{ConnId, Frame, Hub, Members, RoomEvent};
use crate::model::{StoredMessage, UserRef};
use crate::store::{Appended, MessageLog, NewMessage};
use async_trait::async_trait;
use std::sync::Arc;

pub(crate) struct MemoryBroker {
    store: Arc<dyn MessageLog>,
    hub: Arc<Hub>,
}

impl MemoryBroker {
    /// A broker over the message log (the only part of the store it uses).
    pub(crate) fn new(store: Arc<dyn MessageLog>, hub: Arc<Hub>) -> Self {
        Self { store, hub }
    }
}

#[async_trait]
impl Broker for MemoryBroker {
    async fn publish_message(&self, message: NewMessage) -> Result<Appended, BrokerError> {
        let hub = Arc::clone(&self.hub);
        let deliver = Box::new(move |stored: &StoredMessage| {
            let event = RoomEvent::Message {
                seq: stored.seq,
                frame: encode(stored),
            };
            hub.dispatch(&stored.room, &event);
        });
        let started = std::time::Instant::now();
        let appended = self.store.append(message, deliver).await;
        crate::stats::store_write(started.elapsed());
        Ok(appended?)
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

    async fn occupied_rooms(&self) -> Vec<(String, usize)> {
        self.hub.occupied_rooms()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hub::outbox::{Closer, OutboundBudget, Outbox, OutboxQueue};
    use crate::store::{OnCommit, ReplayFrom, RoomSnapshot, RoomSummary, StoreError};
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::time::Duration;

    /// A store that commits each append at once, in call order, as the real one commits
    /// in queue order, but answers the first caller only a second later (a caller can be
    /// woken late, or have stopped waiting). With `refuse`, every append fails.
    #[derive(Default)]
    struct SlowFirstAnswer {
        next_seq: AtomicU64,
        refuse: bool,
    }

    #[async_trait]
    impl MessageLog for SlowFirstAnswer {
        async fn append(
            &self,
            message: NewMessage,
            on_commit: OnCommit,
        ) -> Result<Appended, StoreError> {
            if self.refuse {
                return Err(StoreError::Unwritable("database or disk is full".into()));
            }
            let seq = self.next_seq.fetch_add(1, Ordering::SeqCst) + 1;
            let stored = StoredMessage {
                room: message.room,
                seq,
                from: message.from,
                body: message.body,
                ts: message.ts,
                nonce: message.nonce,
            };
            on_commit(&stored);
            if seq == 1 {
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            Ok(Appended {
                message: stored,
                duplicate: false,
            })
        }
        async fn snapshot(&self, _: &str, _: ReplayFrom) -> Result<RoomSnapshot, StoreError> {
            unimplemented!("the broker does not read snapshots")
        }
        async fn before(&self, _: &str, _: u64, _: u32) -> Result<Vec<StoredMessage>, StoreError> {
            unimplemented!("the broker does not read history")
        }
        async fn rooms(&self) -> Result<Vec<RoomSummary>, StoreError> {
            unimplemented!("the broker does not list rooms")
        }
        async fn last_seqs(&self, _: &[String]) -> Result<Vec<(String, u64)>, StoreError> {
            unimplemented!("the broker does not read last seqs")
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

    /// A broker over `store` and a hub of its own (reached through the broker only).
    fn broker_over(store: SlowFirstAnswer) -> MemoryBroker {
        MemoryBroker::new(Arc::new(store), Arc::new(Hub::new(16)))
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
    async fn messages_of_a_room_reach_the_hub_in_seq_order_even_when_senders_are_answered_out_of_order()
     {
        let broker = Arc::new(broker_over(SlowFirstAnswer::default()));
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
        let broker = broker_over(SlowFirstAnswer {
            refuse: true,
            ..SlowFirstAnswer::default()
        });
        let mut queue = member_of_r(&broker).await;

        let refused = broker.publish_message(draft("lost")).await;
        assert!(matches!(
            refused,
            Err(BrokerError::Store(StoreError::Unwritable(_)))
        ));
        assert_eq!(
            drain(&mut queue),
            ["joined"],
            "nothing but the join was queued"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_committed_message_reaches_the_hub_even_if_its_sender_stops_waiting() {
        let broker = broker_over(SlowFirstAnswer::default());
        let mut queue = member_of_r(&broker).await;

        let gave_up = tokio::time::timeout(
            Duration::from_millis(10),
            broker.publish_message(draft("left")),
        )
        .await;
        assert!(
            gave_up.is_err(),
            "the sender stopped waiting before its answer"
        );

        let delivered = drain(&mut queue);
        assert_eq!(
            delivered.len(),
            2,
            "joined, then the message: {delivered:?}"
        );
        assert_eq!(delivered[0], "joined");
        assert!(delivered[1].contains("\"seq\":1"), "{delivered:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn joining_through_the_broker_is_gap_free_and_unsubscribing_stops_delivery() {
        let broker = broker_over(SlowFirstAnswer::default());
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
