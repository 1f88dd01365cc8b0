//! The cluster broker: nodes that share one database (PostgreSQL) fan room events out
//! to each other through Redis pub/sub (`--redis-url`).
//!
//! The store owns `seq`: a message exists once it is committed, with the room's next
//! `seq`, and Redis only carries news of it. After each commit the store's hook hands
//! the message to this node's delivery queue (so local members do not wait for Redis)
//! and to a publisher task, which `PUBLISH`es it, in commit order, on the room's channel
//! `{prefix}:room:{room}` as JSON (the same [`StoredMessage`] the hub's frame is encoded
//! from). Presence and typing frames go on the same channel, tagged as ephemeral: they
//! are best effort and never stored.
//!
//! Pub/sub is at most once and two nodes' messages reach a third in no common order,
//! while the hub needs each room's messages in `seq` order without gaps. So one task per
//! node, the [`Sequencer`], hands messages to the hub: for each room this node is
//! subscribed to it knows `next`, the next `seq` to hand on. A message with that `seq`
//! goes on; an older one is a duplicate and is dropped (every node also hears its own
//! messages once locally); a newer one means a gap (another node's message not yet
//! heard, or lost), which is read from the store and handed on first. A gap shows only
//! when a later message comes, so every [`CATCH_UP_INTERVAL`] the sequencer also asks the
//! store, in one query, for the last `seq` of every room it follows, and fills whatever
//! was committed but never heard of the same way: a message whose node died (or failed
//! to `PUBLISH`) after its commit reaches this node within about that interval, even in
//! a quiet room. A node subscribes to a room's channel before it reads the room's last
//! `seq` to start from, so anything committed later reaches it one way or the other: the
//! session's join (subscribe, snapshot, go live) stays gap-free.
//!
//! When the connection to Redis drops (Redis restarted, or the connection was killed),
//! the node reconnects with backoff, subscribes to its rooms again and reads from the
//! store whatever each room committed since its `next`: nothing published meanwhile is
//! missed, and sends keep working throughout (the store is the truth; local members get
//! this node's messages without Redis). What Redis held does not matter: it keeps no
//! state for palisade, only channels.

use super::presence::{self, Announce, ClusterPresence, PresenceFrame};
use super::{Broker, BrokerError, encode};
use crate::hub::outbox::Outbox;
use crate::hub::{ConnId, Frame, Hub, Members, RoomEvent};
use crate::model::{StoredMessage, UserRef, is_valid_room};
use crate::store::{Appended, MessageLog, NewMessage, ReplayFrom};
use async_trait::async_trait;
use futures_util::StreamExt;
use redis::aio::{ConnectionManager, PubSub, PubSubSink};
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// How long one Redis command (connect, subscribe, ping) may take before it counts as
/// failed: a half-open connection must not hold up a join.
const REDIS_TIMEOUT: Duration = Duration::from_secs(5);

/// Most messages one store read of a gap fill asks for.
const FILL_CHUNK: u64 = 500;

/// Longest wait between two reconnection attempts of the command connection. The
/// client's default doubles from 100 ms through six tries (3.2 s last), so a node could
/// stay unready for seconds after Redis was back; a second bounds that, and one try a
/// second costs a dead Redis nothing.
const MAX_RECONNECT_DELAY: Duration = Duration::from_secs(1);

/// How often the sequencer asks the store for the last `seq` of every room it follows.
/// A message whose node died (or failed to `PUBLISH`) between its commit and its
/// publication is otherwise revealed only by the room's next message, which a quiet room
/// may not see for long; this bounds that delay to about one interval, for one query per
/// interval for all of this node's rooms.
const CATCH_UP_INTERVAL: Duration = Duration::from_secs(2);

/// Messages buffered for a room between its subscription and its starting point; more
/// are dropped (a gap the next message fills).
const START_BUFFER: usize = 10_000;

/// Why Redis cannot be used: names the server, never credentials.
#[derive(Debug, thiserror::Error)]
#[error("cannot reach Redis at {server} (--redis-url / PALISADE_REDIS_URL): {reason}")]
pub struct RedisUnreachable {
    pub server: String,
    pub reason: String,
}

/// What travels on a room's channel.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
enum Wire {
    /// A committed message.
    Message {
        node: String,
        message: StoredMessage,
    },
    /// A presence or typing frame, for every member but those of user `about`.
    Ephemeral {
        node: String,
        about: String,
        frame: String,
    },
}

/// What the publisher task sends, in this order.
enum Outgoing {
    Message(StoredMessage),
    Ephemeral {
        room: String,
        about: String,
        frame: String,
    },
}

/// What the delivery task is told, handled one at a time in order.
#[derive(Debug)]
enum Event {
    /// The node is subscribing to the room: buffer its messages until `Start`.
    Watch(String),
    /// The room's last `seq` read after subscribing: hand on everything after it.
    Start { room: String, last_seq: u64 },
    /// The node left the room: drop its messages.
    Forget(String),
    /// A committed message, from this node's store hook or from Redis.
    Message(StoredMessage),
    /// The node was deaf for a while (Redis reconnected): read what it missed.
    Resync(String),
}

/// The connection to Redis, opened at start so a wrong URL stops the server there.
pub(crate) struct RedisLink {
    client: redis::Client,
    commands: ConnectionManager,
    pubsub: PubSub,
    prefix: String,
}

/// Redis' answer to `query` within `deadline`, or why there is none (the command failed,
/// or no answer came in time). Every cluster-wide check waits on Redis this way: a
/// Redis that hangs costs a bounded wait, then the caller falls back to its node's own
/// view or refuses, and says why.
pub(crate) async fn answer_within<T>(
    deadline: Duration,
    query: impl std::future::Future<Output = redis::RedisResult<T>>,
) -> Result<T, String> {
    match tokio::time::timeout(deadline, query).await {
        Ok(Ok(answer)) => Ok(answer),
        Ok(Err(error)) => Err(error.to_string()),
        Err(_) => Err(format!("no answer within {deadline:?}")),
    }
}

/// A Redis URL fit for an error message: scheme, host and port only.
pub(crate) fn describe_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(parsed) => {
            let host = parsed.host_str().unwrap_or_default();
            let port = parsed.port().unwrap_or(6379);
            format!("{}://{host}:{port}", parsed.scheme())
        }
        Err(_) => "an unparsable URL".to_owned(),
    }
}

impl RedisLink {
    /// Connects to Redis (commands and pub/sub) and checks it answers.
    pub(crate) async fn open(url: &str, prefix: &str) -> Result<Self, RedisUnreachable> {
        let unreachable = |reason: String| RedisUnreachable {
            server: describe_url(url),
            reason,
        };
        let client = redis::Client::open(url).map_err(|e| unreachable(e.to_string()))?;
        let timed_out = || unreachable(format!("no answer within {REDIS_TIMEOUT:?}"));
        // The pub/sub connection first: it tries once, so a wrong address fails at once
        // (the command connection retries with backoff).
        let pubsub = tokio::time::timeout(REDIS_TIMEOUT, client.get_async_pubsub())
            .await
            .map_err(|_| timed_out())?
            .map_err(|e| unreachable(e.to_string()))?;
        let retries = redis::aio::ConnectionManagerConfig::new().set_max_delay(MAX_RECONNECT_DELAY);
        let command_connection = client.get_connection_manager_with_config(retries);
        let mut commands = tokio::time::timeout(REDIS_TIMEOUT, command_connection)
            .await
            .map_err(|_| timed_out())?
            .map_err(|e| unreachable(e.to_string()))?;
        tokio::time::timeout(
            REDIS_TIMEOUT,
            redis::cmd("PING").query_async::<()>(&mut commands),
        )
        .await
        .map_err(|_| timed_out())?
        .map_err(|e| unreachable(e.to_string()))?;
        Ok(Self {
            client,
            commands,
            pubsub,
            prefix: prefix.to_owned(),
        })
    }
}

impl RedisLink {
    /// What the rest of the node shares in Redis (tickets, control events) needs: the
    /// client (for connections of its own), the command connection and the prefix.
    pub(crate) fn shared(&self) -> (redis::Client, ConnectionManager, String) {
        (
            self.client.clone(),
            self.commands.clone(),
            self.prefix.clone(),
        )
    }
}

/// The rooms this node is subscribed to, and the pub/sub connection when it is up.
struct Subscriptions {
    rooms: HashSet<String>,
    sink: Option<PubSubSink>,
}

pub(crate) struct RedisBroker {
    store: Arc<dyn MessageLog>,
    hub: Arc<Hub>,
    prefix: String,
    commands: ConnectionManager,
    events: mpsc::UnboundedSender<Event>,
    outgoing: mpsc::UnboundedSender<Outgoing>,
    /// One lock for subscribing and unsubscribing the node: a room's first join and
    /// last leave, and a reconnection, do not interleave.
    subscriptions: Arc<tokio::sync::Mutex<Subscriptions>>,
    /// Ends the subscriber task (and closes its connection) with the broker.
    stopped: CancellationToken,
    /// Who is in which room on every node (see [`presence`]).
    presence: Arc<ClusterPresence>,
}

impl Drop for RedisBroker {
    fn drop(&mut self) {
        self.stopped.cancel();
    }
}

fn channel_of(prefix: &str, room: &str) -> String {
    format!("{prefix}:room:{room}")
}

impl RedisBroker {
    /// Starts the node's delivery, publisher, subscriber and presence upkeep tasks on an
    /// open link; presence entries count for `presence_ttl` without a refresh, and the
    /// upkeep's announcements are encoded with `presence_frame`.
    pub(crate) fn start(
        link: RedisLink,
        store: Arc<dyn MessageLog>,
        hub: Arc<Hub>,
        presence_ttl: Duration,
        presence_frame: PresenceFrame,
    ) -> Self {
        let node = uuid::Uuid::new_v4().simple().to_string();
        let presence = Arc::new(ClusterPresence::new(
            link.commands.clone(),
            &link.prefix,
            &node,
            presence_ttl,
        ));
        let (events, events_rx) = mpsc::unbounded_channel();
        let (outgoing, outgoing_rx) = mpsc::unbounded_channel();
        let subscriptions = Arc::new(tokio::sync::Mutex::new(Subscriptions {
            rooms: HashSet::new(),
            sink: None,
        }));
        let stopped = CancellationToken::new();
        let sequencer = Sequencer::new(Arc::clone(&store), hub_delivery(Arc::clone(&hub)));
        tokio::spawn(sequencer.run(events_rx));
        tokio::spawn(publish(
            outgoing_rx,
            link.commands.clone(),
            link.prefix.clone(),
            node.clone(),
        ));
        tokio::spawn(Arc::clone(&presence).maintain(
            Arc::downgrade(&hub),
            announcer(Arc::downgrade(&hub), outgoing.clone(), presence_frame),
            stopped.clone(),
        ));
        tokio::spawn(
            Listener {
                client: link.client,
                prefix: link.prefix.clone(),
                node,
                subscriptions: Arc::clone(&subscriptions),
                events: events.downgrade(),
                hub: Arc::downgrade(&hub),
                stopped: stopped.clone(),
            }
            .run(link.pubsub),
        );
        Self {
            store,
            hub,
            prefix: link.prefix,
            commands: link.commands,
            events,
            outgoing,
            subscriptions,
            stopped,
            presence,
        }
    }
}

/// How the presence upkeep announces a user's join or leave it found (a user swept
/// after their node died, an entry Redis lost written back): as a session would, to this
/// node's members and through Redis to the others.
fn announcer(
    hub: std::sync::Weak<Hub>,
    outgoing: mpsc::UnboundedSender<Outgoing>,
    presence_frame: PresenceFrame,
) -> Announce {
    Box::new(move |room: &str, user: &UserRef, change| {
        let frame = presence_frame(room, user, change);
        let _ = outgoing.send(Outgoing::Ephemeral {
            room: room.to_owned(),
            about: user.id.clone(),
            frame: frame.as_str().to_owned(),
        });
        if let Some(hub) = hub.upgrade() {
            hub.dispatch(
                room,
                &RoomEvent::Ephemeral {
                    about: user.id.clone(),
                    frame,
                },
            );
        }
    })
}

/// The sequencer's way to the hub: one frame per message, encoded once.
fn hub_delivery(hub: Arc<Hub>) -> Deliver {
    Box::new(move |message: &StoredMessage| {
        hub.dispatch(
            &message.room,
            &RoomEvent::Message {
                seq: message.seq,
                frame: encode(message),
            },
        );
    })
}

#[async_trait]
impl Broker for RedisBroker {
    async fn publish_message(&self, message: NewMessage) -> Result<Appended, BrokerError> {
        let events = self.events.clone();
        let outgoing = self.outgoing.clone();
        // Runs on the store's writing path: two sends on unbounded queues, no waiting.
        let hand_on = Box::new(move |stored: &StoredMessage| {
            let _ = events.send(Event::Message(stored.clone()));
            let _ = outgoing.send(Outgoing::Message(stored.clone()));
        });
        let started = std::time::Instant::now();
        let appended = self.store.append(message, hand_on).await;
        crate::stats::store_write(started.elapsed());
        Ok(appended?)
    }

    async fn publish_ephemeral(&self, room: &str, about: &str, frame: Frame) {
        let _ = self.outgoing.send(Outgoing::Ephemeral {
            room: room.to_owned(),
            about: about.to_owned(),
            frame: frame.as_str().to_owned(),
        });
        self.hub.dispatch(
            room,
            &RoomEvent::Ephemeral {
                about: about.to_owned(),
                frame,
            },
        );
    }

    async fn ping(&self) -> Result<(), BrokerError> {
        let mut commands = self.commands.clone();
        let ping = redis::cmd("PING");
        answer_within(REDIS_TIMEOUT, ping.query_async::<()>(&mut commands))
            .await
            .map_err(BrokerError::Redis)
    }

    async fn subscribe(
        &self,
        room: &str,
        conn: ConnId,
        user: &UserRef,
        outbox: &Outbox,
    ) -> Result<bool, BrokerError> {
        // The hub buffers from here on; whatever the sequencer hands on later reaches
        // this connection, and whatever it handed on before was committed before the
        // session reads its snapshot.
        let announce = {
            let _turn = self.presence.turn(room, &user.id).await;
            match self.hub.begin_join_here(room, conn, user, outbox) {
                None => false,
                // The user's first connection in the room here: announced if they were
                // online on no node, by the cluster's count (this node's if Redis does
                // not answer).
                Some((before, after)) => match self.presence.join(room, user).await {
                    Some(arrived) => presence::arrival_announced(arrived, |before, after| {
                        self.hub.announce_or_count(room, before, after)
                    }),
                    None => self.hub.announce_or_count(room, before, after),
                },
            }
        };
        let mut subscriptions = self.subscriptions.lock().await;
        if subscriptions.rooms.contains(room) {
            return Ok(announce);
        }
        let _ = self.events.send(Event::Watch(room.to_owned()));
        // Subscribe first, then read where the room stands: a message committed after
        // the read is then heard through Redis or this node's own hook.
        if let Some(sink) = subscriptions.sink.as_mut() {
            let channel = channel_of(&self.prefix, room);
            match tokio::time::timeout(REDIS_TIMEOUT, sink.subscribe(&channel)).await {
                Ok(Ok(())) => {}
                Ok(Err(error)) => {
                    tracing::warn!(%error, room, "cannot subscribe to the room on Redis; it is subscribed again on reconnection");
                }
                Err(_) => {
                    tracing::warn!(
                        room,
                        "Redis did not confirm the room's subscription in time; it is subscribed again on reconnection"
                    );
                }
            }
        }
        match self.store.snapshot(room, ReplayFrom::Latest(0)).await {
            Ok(snapshot) => {
                let _ = self.events.send(Event::Start {
                    room: room.to_owned(),
                    last_seq: snapshot.last_seq,
                });
                subscriptions.rooms.insert(room.to_owned());
                Ok(announce)
            }
            Err(error) => {
                let _ = self.events.send(Event::Forget(room.to_owned()));
                Err(error.into())
            }
        }
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

    async fn members(&self, room: &str, joiner: &UserRef) -> Option<Members> {
        self.presence
            .members(room, joiner, self.hub.presence_full_max())
            .await
    }

    async fn occupied_rooms(&self) -> Vec<(String, usize)> {
        match self.presence.occupied().await {
            Some(rooms) => rooms,
            None => self.hub.occupied_rooms(),
        }
    }

    async fn counts(&self, here: Vec<(String, usize)>) -> Vec<(String, usize)> {
        let rooms: Vec<String> = here.iter().map(|(room, _)| room.clone()).collect();
        match self.presence.counts(&rooms).await {
            Some(counts) if counts.len() == here.len() => rooms.into_iter().zip(counts).collect(),
            _ => here,
        }
    }

    async fn unsubscribe(&self, room: &str, conn: ConnId) -> bool {
        let announce = match self.hub.member_user(room, conn) {
            None => false,
            Some(user_id) => self.leave_presence(room, conn, &user_id).await,
        };
        if self.hub.has_members(room) {
            return announce;
        }
        let mut subscriptions = self.subscriptions.lock().await;
        // Checked again under the lock: a join may have begun meanwhile.
        if !self.hub.has_members(room) && subscriptions.rooms.remove(room) {
            let _ = self.events.send(Event::Forget(room.to_owned()));
            if let Some(sink) = subscriptions.sink.as_mut() {
                let channel = channel_of(&self.prefix, room);
                if !matches!(
                    tokio::time::timeout(REDIS_TIMEOUT, sink.unsubscribe(&channel)).await,
                    Ok(Ok(()))
                ) {
                    // Harmless: the room's messages are dropped here until the next
                    // reconnection, which subscribes only to the rooms in use.
                    tracing::debug!(room, "cannot unsubscribe from the room on Redis");
                }
            }
        }
        announce
    }
}

impl RedisBroker {
    /// Takes a connection out of the room on this node and, if it was the user's last
    /// one here, out of the cluster's presence: whether the departure is announced.
    async fn leave_presence(&self, room: &str, conn: ConnId, user_id: &str) -> bool {
        let _turn = self.presence.turn(room, user_id).await;
        match self.hub.leave_here(room, conn) {
            None | Some((_, None)) => false,
            // The user's last connection in the room here: announced if that took them
            // out of the room on every node. If Redis does not answer, by this node's
            // view: should their entry still be there, it expires and a sweep announces
            // the leave again, which changes nothing for a client.
            Some((_, Some((before, after)))) => match self.presence.leave(room, user_id).await {
                Some(departed) => presence::departure_announced(departed, |before, after| {
                    self.hub.announce_or_count(room, before, after)
                }),
                None => self.hub.announce_or_count(room, before, after),
            },
        }
    }
}

/// Publishes what the node's store hooks and ephemeral sends queue, in queue order,
/// several commands per round trip when they pile up.
async fn publish(
    mut queue: mpsc::UnboundedReceiver<Outgoing>,
    mut commands: ConnectionManager,
    prefix: String,
    node: String,
) {
    const BATCH: usize = 256;
    let mut batch = Vec::with_capacity(BATCH);
    while queue.recv_many(&mut batch, BATCH).await > 0 {
        let mut pipe = redis::pipe();
        for outgoing in batch.drain(..) {
            let (room, wire) = match outgoing {
                Outgoing::Message(message) => (
                    message.room.clone(),
                    Wire::Message {
                        node: node.clone(),
                        message,
                    },
                ),
                Outgoing::Ephemeral { room, about, frame } => (
                    room,
                    Wire::Ephemeral {
                        node: node.clone(),
                        about,
                        frame,
                    },
                ),
            };
            match serde_json::to_string(&wire) {
                Ok(payload) => {
                    pipe.cmd("PUBLISH")
                        .arg(channel_of(&prefix, &room))
                        .arg(payload)
                        .ignore();
                }
                Err(error) => tracing::error!(%error, "cannot serialise a room event for Redis"),
            }
        }
        if let Err(error) = pipe.query_async::<()>(&mut commands).await {
            // The store has the messages: other nodes read them when they next hear of
            // their room, at their next periodic check, or when they reconnect.
            tracing::warn!(%error, "cannot publish to Redis");
        }
    }
}

/// Reads the node's pub/sub connection, and replaces it when it drops.
struct Listener {
    client: redis::Client,
    prefix: String,
    node: String,
    subscriptions: Arc<tokio::sync::Mutex<Subscriptions>>,
    events: mpsc::WeakUnboundedSender<Event>,
    hub: std::sync::Weak<Hub>,
    stopped: CancellationToken,
}

impl Listener {
    async fn run(self, first: PubSub) {
        let stopped = self.stopped.clone();
        tokio::select! {
            () = stopped.cancelled() => {}
            () = self.listen(first) => {}
        }
    }

    async fn listen(&self, first: PubSub) {
        const FIRST_BACKOFF: Duration = Duration::from_millis(100);
        let mut connection = Some(first);
        let mut backoff = FIRST_BACKOFF;
        loop {
            let pubsub = match connection.take() {
                Some(pubsub) => pubsub,
                None => match tokio::time::timeout(REDIS_TIMEOUT, self.client.get_async_pubsub())
                    .await
                {
                    Ok(Ok(pubsub)) => pubsub,
                    Ok(Err(error)) => {
                        tracing::warn!(%error, "cannot reconnect to Redis; retrying");
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(REDIS_TIMEOUT);
                        continue;
                    }
                    Err(_) => {
                        tracing::warn!("Redis did not answer a reconnection; retrying");
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(REDIS_TIMEOUT);
                        continue;
                    }
                },
            };
            let (sink, mut stream) = pubsub.split();
            if !self.resubscribe(sink).await {
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(REDIS_TIMEOUT);
                continue;
            }
            backoff = FIRST_BACKOFF;
            while let Some(message) = stream.next().await {
                self.receive(&message);
            }
            tracing::warn!("lost the Redis pub/sub connection; reconnecting");
            self.subscriptions.lock().await.sink = None;
        }
    }

    /// Subscribes a new connection to the node's rooms and has each read what it may
    /// have missed; false if the connection failed meanwhile.
    async fn resubscribe(&self, mut sink: PubSubSink) -> bool {
        let mut subscriptions = self.subscriptions.lock().await;
        let rooms: Vec<String> = subscriptions.rooms.iter().cloned().collect();
        for room in &rooms {
            let channel = channel_of(&self.prefix, room);
            if !matches!(
                tokio::time::timeout(REDIS_TIMEOUT, sink.subscribe(&channel)).await,
                Ok(Ok(()))
            ) {
                tracing::warn!(room, "cannot subscribe again to a room on Redis; retrying");
                return false;
            }
        }
        subscriptions.sink = Some(sink);
        if let Some(events) = self.events.upgrade() {
            for room in rooms {
                let _ = events.send(Event::Resync(room));
            }
        }
        true
    }

    /// One pub/sub message: anything malformed is logged and dropped.
    fn receive(&self, message: &redis::Msg) {
        let channel = message.get_channel_name();
        let Some(room) = channel
            .strip_prefix(self.prefix.as_str())
            .and_then(|rest| rest.strip_prefix(":room:"))
            .filter(|room| is_valid_room(room))
        else {
            tracing::warn!(channel = %channel.escape_debug(), "a Redis message on an unexpected channel");
            return;
        };
        let wire: Wire = match serde_json::from_slice(message.get_payload_bytes()) {
            Ok(wire) => wire,
            Err(error) => {
                tracing::warn!(%error, room, "a malformed Redis message was dropped");
                return;
            }
        };
        match wire {
            Wire::Message { node, .. } | Wire::Ephemeral { node, .. } if node == self.node => {
                // Our own: local members had it already.
            }
            Wire::Message { message, .. } => {
                if message.room != room || message.seq == 0 {
                    tracing::warn!(room, "a Redis message for another room was dropped");
                    return;
                }
                if let Some(events) = self.events.upgrade() {
                    let _ = events.send(Event::Message(message));
                }
            }
            Wire::Ephemeral { about, frame, .. } => {
                if let Some(hub) = self.hub.upgrade() {
                    hub.dispatch(
                        room,
                        &RoomEvent::Ephemeral {
                            about,
                            frame: Frame::from(frame),
                        },
                    );
                }
            }
        }
    }
}

/// Where the sequencer hands messages on to (the hub; a list in tests).
type Deliver = Box<dyn Fn(&StoredMessage) + Send + Sync>;

enum RoomState {
    /// Subscribed, starting point not read yet: messages wait, in arrival order.
    Starting(Vec<StoredMessage>),
    /// Handing on; `next` is the next `seq` due.
    Live { next: u64 },
}

/// Puts each subscribed room's messages in `seq` order, once each, filling gaps from the
/// store; see the module doc.
struct Sequencer {
    store: Arc<dyn MessageLog>,
    deliver: Deliver,
    rooms: HashMap<String, RoomState>,
}

impl Sequencer {
    fn new(store: Arc<dyn MessageLog>, deliver: Deliver) -> Self {
        Self {
            store,
            deliver,
            rooms: HashMap::new(),
        }
    }

    async fn run(mut self, mut events: mpsc::UnboundedReceiver<Event>) {
        let mut catch_up = tokio::time::interval(CATCH_UP_INTERVAL);
        // After a slow tick (a long fill), one check is enough, not a burst of them.
        catch_up.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                event = events.recv() => match event {
                    Some(event) => self.handle(event).await,
                    None => return,
                },
                _ = catch_up.tick() => self.catch_up().await,
            }
        }
    }

    async fn handle(&mut self, event: Event) {
        match event {
            Event::Watch(room) => {
                self.rooms.insert(room, RoomState::Starting(Vec::new()));
            }
            Event::Start { room, last_seq } => {
                let waiting = match self
                    .rooms
                    .insert(room.clone(), RoomState::Live { next: last_seq + 1 })
                {
                    Some(RoomState::Starting(waiting)) => waiting,
                    _ => Vec::new(),
                };
                for message in waiting {
                    self.message(message).await;
                }
            }
            Event::Forget(room) => {
                self.rooms.remove(&room);
            }
            Event::Message(message) => self.message(message).await,
            Event::Resync(room) => self.resync(&room).await,
        }
    }

    async fn message(&mut self, message: StoredMessage) {
        let next = match self.rooms.get_mut(&message.room) {
            None => return,
            Some(RoomState::Starting(waiting)) => {
                if waiting.len() < START_BUFFER {
                    waiting.push(message);
                }
                return;
            }
            Some(RoomState::Live { next }) => *next,
        };
        if message.seq < next {
            return; // Handed on already (or before this node subscribed).
        }
        if message.seq > next {
            self.fill(&message.room, next, message.seq).await;
        }
        (self.deliver)(&message);
        self.set_next(&message.room, message.seq + 1);
    }

    /// Reads what the room committed since its `next` and hands it on.
    async fn resync(&mut self, room: &str) {
        let Some(RoomState::Live { next }) = self.rooms.get(room) else {
            return;
        };
        let next = *next;
        match self.store.snapshot(room, ReplayFrom::Latest(0)).await {
            Ok(snapshot) if snapshot.last_seq >= next => {
                self.fill(room, next, snapshot.last_seq + 1).await;
                self.set_next(room, snapshot.last_seq + 1);
            }
            Ok(_) => {}
            Err(error) => {
                // The room's next message fills whatever this missed.
                tracing::warn!(%error, room, "cannot read the room after reconnecting to Redis");
            }
        }
    }

    /// Asks the store where each live room stands and hands on what this node never
    /// heard of, as for a gap: it runs in the sequencer's turn like every message, so
    /// order and exactly-once hold.
    async fn catch_up(&mut self) {
        let live: Vec<String> = self
            .rooms
            .iter()
            .filter(|(_, state)| matches!(state, RoomState::Live { .. }))
            .map(|(room, _)| room.clone())
            .collect();
        if live.is_empty() {
            return;
        }
        let last_seqs = match self.store.last_seqs(&live).await {
            Ok(last_seqs) => last_seqs,
            Err(error) => {
                tracing::warn!(%error, "cannot read where the rooms stand; retrying at the next check");
                return;
            }
        };
        for (room, last_seq) in last_seqs {
            if let Some(RoomState::Live { next }) = self.rooms.get(&room)
                && last_seq >= *next
            {
                let next = *next;
                self.fill(&room, next, last_seq + 1).await;
            }
        }
    }

    /// Hands on the stored messages with `from <= seq < to`, in order.
    async fn fill(&mut self, room: &str, from: u64, to: u64) {
        let mut start = from;
        while start < to {
            let end = to.min(start + FILL_CHUNK);
            let limit = u32::try_from(end - start).unwrap_or(u32::MAX);
            let mut read = self.store.before(room, end, limit).await;
            for retry in 1..=3u32 {
                if read.is_ok() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100) * retry).await;
                read = self.store.before(room, end, limit).await;
            }
            match read {
                Ok(messages) => {
                    for message in messages.iter().filter(|m| m.seq >= start && m.seq < end) {
                        (self.deliver)(message);
                    }
                }
                Err(error) => {
                    tracing::error!(%error, room, from = start, to = end, "cannot read missed messages from the store; members miss them until they rejoin");
                }
            }
            start = end;
        }
        self.set_next(room, to);
    }

    fn set_next(&mut self, room: &str, seq: u64) {
        if let Some(RoomState::Live { next }) = self.rooms.get_mut(room) {
            *next = (*next).max(seq);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{OnCommit, RoomSnapshot, RoomSummary, StoreError};
    use std::sync::Mutex;

    /// A room's committed messages, read as the real stores read them.
    #[derive(Default)]
    struct FakeLog {
        messages: Mutex<Vec<StoredMessage>>,
        /// How many times `last_seqs` was asked.
        last_seq_reads: std::sync::atomic::AtomicUsize,
    }

    impl FakeLog {
        fn with(seqs: std::ops::RangeInclusive<u64>) -> Arc<Self> {
            let log = Self::default();
            log.messages.lock().unwrap().extend(seqs.map(message));
            Arc::new(log)
        }
    }

    #[async_trait]
    impl MessageLog for FakeLog {
        async fn append(&self, _: NewMessage, _: OnCommit) -> Result<Appended, StoreError> {
            unimplemented!("the sequencer does not write")
        }
        async fn snapshot(&self, _: &str, from: ReplayFrom) -> Result<RoomSnapshot, StoreError> {
            assert!(matches!(from, ReplayFrom::Latest(0)));
            let last_seq = self.messages.lock().unwrap().last().map_or(0, |m| m.seq);
            Ok(RoomSnapshot {
                last_seq,
                messages: Vec::new(),
                complete: false,
            })
        }
        async fn before(
            &self,
            _: &str,
            before: u64,
            limit: u32,
        ) -> Result<Vec<StoredMessage>, StoreError> {
            let all = self.messages.lock().unwrap();
            let older: Vec<_> = all.iter().filter(|m| m.seq < before).cloned().collect();
            let skip = older.len().saturating_sub(limit as usize);
            Ok(older[skip..].to_vec())
        }
        async fn rooms(&self) -> Result<Vec<RoomSummary>, StoreError> {
            unimplemented!("the sequencer does not list rooms")
        }
        async fn last_seqs(&self, rooms: &[String]) -> Result<Vec<(String, u64)>, StoreError> {
            self.last_seq_reads
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let last_seq = self.messages.lock().unwrap().last().map(|m| m.seq);
            Ok(rooms
                .iter()
                .filter(|room| *room == "r")
                .filter_map(|room| Some((room.clone(), last_seq?)))
                .collect())
        }
    }

    fn message(seq: u64) -> StoredMessage {
        StoredMessage {
            room: "r".into(),
            seq,
            from: UserRef {
                id: "u".into(),
                name: "u".into(),
            },
            body: format!("m{seq}"),
            ts: 0,
            nonce: None,
        }
    }

    /// A sequencer over `log` subscribed to room `r` from `last_seq`, and what it hands on.
    async fn sequencer(log: Arc<FakeLog>, last_seq: u64) -> (Sequencer, Arc<Mutex<Vec<u64>>>) {
        let handed = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&handed);
        let mut sequencer = Sequencer::new(
            log,
            Box::new(move |m: &StoredMessage| sink.lock().unwrap().push(m.seq)),
        );
        sequencer.handle(Event::Watch("r".into())).await;
        sequencer
            .handle(Event::Start {
                room: "r".into(),
                last_seq,
            })
            .await;
        (sequencer, handed)
    }

    #[tokio::test]
    async fn messages_in_order_are_handed_on_as_they_come() {
        let (mut sequencer, handed) = sequencer(FakeLog::with(1..=3), 0).await;
        for seq in 1..=3 {
            sequencer.handle(Event::Message(message(seq))).await;
        }
        assert_eq!(*handed.lock().unwrap(), [1, 2, 3]);
    }

    #[tokio::test]
    async fn a_message_heard_twice_is_handed_on_once() {
        let (mut sequencer, handed) = sequencer(FakeLog::with(1..=2), 0).await;
        for seq in [1, 1, 2, 1, 2] {
            sequencer.handle(Event::Message(message(seq))).await;
        }
        assert_eq!(*handed.lock().unwrap(), [1, 2]);
    }

    #[tokio::test]
    async fn a_gap_is_filled_from_the_store_before_the_later_message() {
        let (mut sequencer, handed) = sequencer(FakeLog::with(1..=5), 0).await;
        sequencer.handle(Event::Message(message(1))).await;
        sequencer.handle(Event::Message(message(5))).await;
        sequencer.handle(Event::Message(message(3))).await;
        assert_eq!(*handed.lock().unwrap(), [1, 2, 3, 4, 5]);
    }

    #[tokio::test]
    async fn a_gap_longer_than_one_read_is_filled_in_order() {
        let last = FILL_CHUNK * 2 + 7;
        let (mut sequencer, handed) = sequencer(FakeLog::with(1..=last), 0).await;
        sequencer.handle(Event::Message(message(last))).await;
        assert_eq!(*handed.lock().unwrap(), (1..=last).collect::<Vec<_>>());
    }

    #[tokio::test]
    async fn messages_from_before_the_subscription_are_dropped() {
        let (mut sequencer, handed) = sequencer(FakeLog::with(1..=4), 2).await;
        for seq in 1..=4 {
            sequencer.handle(Event::Message(message(seq))).await;
        }
        assert_eq!(*handed.lock().unwrap(), [3, 4]);
    }

    #[tokio::test]
    async fn messages_heard_while_subscribing_wait_for_the_starting_point() {
        let handed = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&handed);
        let mut sequencer = Sequencer::new(
            FakeLog::with(1..=3),
            Box::new(move |m: &StoredMessage| sink.lock().unwrap().push(m.seq)),
        );
        sequencer.handle(Event::Message(message(1))).await;
        sequencer.handle(Event::Watch("r".into())).await;
        sequencer.handle(Event::Message(message(3))).await;
        sequencer.handle(Event::Message(message(2))).await;
        assert!(
            handed.lock().unwrap().is_empty(),
            "nothing before the start"
        );
        sequencer
            .handle(Event::Start {
                room: "r".into(),
                last_seq: 1,
            })
            .await;
        assert_eq!(*handed.lock().unwrap(), [2, 3]);
    }

    #[tokio::test]
    async fn a_resync_hands_on_what_was_committed_while_deaf() {
        let log = FakeLog::with(1..=2);
        let (mut sequencer, handed) = sequencer(Arc::clone(&log), 0).await;
        sequencer.handle(Event::Message(message(1))).await;
        log.messages
            .lock()
            .unwrap()
            .extend([message(3), message(4)]);
        sequencer.handle(Event::Resync("r".into())).await;
        sequencer.handle(Event::Message(message(4))).await;
        sequencer.handle(Event::Message(message(5))).await;
        assert_eq!(*handed.lock().unwrap(), [1, 2, 3, 4, 5]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_message_committed_but_never_heard_is_handed_on_within_a_check() {
        let log = FakeLog::with(1..=1);
        let handed = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&handed);
        let sequencer = Sequencer::new(
            Arc::clone(&log) as Arc<dyn MessageLog>,
            Box::new(move |m: &StoredMessage| sink.lock().unwrap().push(m.seq)),
        );
        let (events, events_rx) = mpsc::unbounded_channel();
        let running = tokio::spawn(sequencer.run(events_rx));
        for event in [
            Event::Watch("r".into()),
            Event::Start {
                room: "r".into(),
                last_seq: 0,
            },
            Event::Message(message(1)),
        ] {
            events.send(event).unwrap();
        }
        // Seq 2 and 3 are committed, and their node dies before publishing them: the
        // room stays quiet, no later message shows the gap.
        log.messages
            .lock()
            .unwrap()
            .extend([message(2), message(3)]);
        tokio::time::sleep(CATCH_UP_INTERVAL + Duration::from_millis(1)).await;
        assert_eq!(*handed.lock().unwrap(), [1, 2, 3]);
        // Heard late after all, through Redis: not handed on twice.
        events.send(Event::Message(message(3))).unwrap();
        events.send(Event::Message(message(4))).unwrap();
        log.messages.lock().unwrap().push(message(4));
        tokio::time::sleep(CATCH_UP_INTERVAL).await;
        assert_eq!(*handed.lock().unwrap(), [1, 2, 3, 4]);
        drop(events);
        running.await.unwrap();
    }

    #[tokio::test]
    async fn a_node_following_no_room_does_not_ask_the_store() {
        let log = FakeLog::with(1..=1);
        let mut sequencer =
            Sequencer::new(Arc::clone(&log) as Arc<dyn MessageLog>, Box::new(|_| {}));
        sequencer.catch_up().await;
        sequencer.handle(Event::Watch("r".into())).await;
        sequencer.catch_up().await;
        assert_eq!(
            log.last_seq_reads.load(std::sync::atomic::Ordering::SeqCst),
            0,
            "no live room, no query"
        );
        sequencer
            .handle(Event::Start {
                room: "r".into(),
                last_seq: 1,
            })
            .await;
        sequencer.catch_up().await;
        assert_eq!(
            log.last_seq_reads.load(std::sync::atomic::Ordering::SeqCst),
            1
        );
    }

    #[tokio::test]
    async fn a_forgotten_room_hands_nothing_on() {
        let (mut sequencer, handed) = sequencer(FakeLog::with(1..=2), 0).await;
        sequencer.handle(Event::Forget("r".into())).await;
        sequencer.handle(Event::Message(message(1))).await;
        assert!(handed.lock().unwrap().is_empty());
    }

    #[test]
    fn wire_messages_round_trip_and_junk_is_refused() {
        let wire = Wire::Message {
            node: "n".into(),
            message: message(7),
        };
        let text = serde_json::to_string(&wire).unwrap();
        match serde_json::from_str::<Wire>(&text).unwrap() {
            Wire::Message { message: back, .. } => assert_eq!(back, message(7)),
            other => panic!("{other:?}"),
        }
        for junk in [
            "",
            "null",
            "{}",
            r#"{"kind":"message","node":"n"}"#,
            r#"{"kind":"message","node":"n","message":{"room":"r","seq":-1}}"#,
            r#"{"kind":"other"}"#,
        ] {
            assert!(serde_json::from_str::<Wire>(junk).is_err(), "{junk}");
        }
    }

    #[test]
    fn described_redis_urls_name_the_server_and_never_credentials() {
        assert_eq!(
            describe_url("redis://user:secret@cache.internal:6380/2"),
            "redis://cache.internal:6380"
        );
        assert_eq!(
            describe_url("redis://:pw@10.0.0.5"),
            "redis://10.0.0.5:6379"
        );
        assert_eq!(describe_url("not a url :secret"), "an unparsable URL");
    }
}
