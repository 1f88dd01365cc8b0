//! One WebSocket connection, from `welcome` to close: one task that reads, writes and
//! keeps the time.
//!
//! The session reads client frames one at a time and acts on each before reading the
//! next, so a client's own frames are handled in order, with one exception that keeps
//! that order for the client: a `send` is handed to the store and the next frame read
//! while it waits for its commit (up to a few at once, answered in order; see
//! [`super::sends`]), so one connection's messages share commits. Everything it sends
//! back goes through the connection's [`Outbox`], like the broadcasts, and leaves in
//! queue order.
//! The same task drains that outbox to the socket through its [`Writer`], polled beside
//! the reads (and while a frame is being handled), so a connection is one task and one
//! future: at tens of thousands of idle connections, a second task per connection was a
//! third of what each cost. One timer serves every deadline of the connection: token
//! expiry, the client's silence, the next heartbeat ping, and the end of a batch's wait
//! for more frames; the wait is a timer, never an await, so a frame from the client is
//! read while a batch gathers.
//!
//! The session ends when the client leaves, breaks a rule that closes the connection,
//! its token expires, it stops answering pings, a write fails (a write that stalls fails
//! in the socket under it), or the server shuts down; a write that waits on a client
//! that does not read holds up neither the close signal nor the shutdown. Then it leaves
//! its rooms (announcing presence), sends the close frame after what was queued, and
//! waits briefly for the client's answer so the close is clean. Each of those waits is
//! bounded by `--close-grace-ms`, and the connection's cap slot is given back only once
//! the socket is closed, so a client that never reads cannot leave sockets behind and
//! open new ones in their place.

use super::close::{self, CloseCode};
use super::limits::{ConnectionSlot, FrameBudget, Spend};
use super::protocol::{
    AdvertisedLimits, ClientFrame, ErrorCode, HISTORY_DEFAULT, PresenceEvent, ServerFrame,
    joined_with_members,
};
use super::sends::SendsInFlight;
use super::upgrade::Socket;
use super::writer::{self, Writer};
use crate::auth::Identity;
use crate::broker::{BrokerError, encode};
use crate::hub::ConnId;
use crate::hub::outbox::{CloseReason, Closer, Outbox};
use crate::model::{now_millis, now_secs};
use crate::state::AppState;
use crate::store::{Appended, NewMessage, ReplayFrom, keep_newest_affordable};
use futures_util::StreamExt;
use std::future::{Future, poll_fn};
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::time::{Instant, Sleep, sleep_until, timeout};
use tungstenite::{Message, Utf8Bytes};

/// What the handshake established about a connection.
pub struct SessionContext {
    pub state: AppState,
    pub identity: Identity,
    pub ip: IpAddr,
    pub slot: ConnectionSlot,
}

struct Session {
    state: AppState,
    identity: Identity,
    ip: IpAddr,
    conn: ConnId,
    outbox: Outbox,
    closer: Closer,
    budget: FrameBudget,
    rooms: Rooms,
    /// Sends waiting for their commit, answered in order (`super::sends`).
    sends: SendsInFlight<SendOutcome>,
    /// Why a transport error closed the connection, for the log.
    cause: Option<&'static str>,
}

/// How a send ended, with the id of the frame it answers.
type SendOutcome = (Option<u32>, Result<Appended, BrokerError>);

/// The rooms a connection is in: a few (`--max-rooms-per-connection`, 32 by default),
/// so a list, searched in full. A `BTreeSet` cost a whole node (~280 bytes) for one room,
/// on every idle connection.
#[derive(Default)]
struct Rooms(Vec<String>);

impl Rooms {
    fn contains(&self, room: &str) -> bool {
        self.0.iter().any(|joined| joined == room)
    }

    fn insert(&mut self, room: &str) {
        if !self.contains(room) {
            self.0.push(room.to_owned());
        }
    }

    fn remove(&mut self, room: &str) {
        self.0.retain(|joined| joined != room);
    }

    fn len(&self) -> usize {
        self.0.len()
    }
}

/// The connection's deadlines but a batch's wait, which its [`Writer`] keeps.
struct Deadlines {
    /// The token expires.
    expiry: Instant,
    /// The client has been silent too long.
    silent: Instant,
    /// The next heartbeat ping is due.
    ping: Instant,
}

impl Deadlines {
    /// The first of them and the writer's wait: when the connection's one timer fires.
    fn next(&self, writer: &Writer) -> Instant {
        let first = self.expiry.min(self.silent).min(self.ping);
        writer
            .linger_until()
            .map_or(first, |until| until.min(first))
    }
}

/// What woke the connection.
enum Event {
    /// Its timer fired: some deadline has passed.
    Timer,
    /// The writer started a batch that waits for more frames: the timer must be set.
    Lingering,
    /// A write failed: the socket is gone.
    WriteFailed(tungstenite::Error),
    /// The client sent something, or went away.
    Read(Option<Result<Message, tungstenite::Error>>),
}

/// Sets up a connection (in the handshake's task, so nothing used only for that lives on
/// in the connection's future) and returns the future that runs it.
pub(crate) fn run(mut socket: Socket, context: SessionContext) -> impl Future<Output = ()> + Send {
    let SessionContext {
        state,
        identity,
        ip,
        mut slot,
    } = context;
    let limits = &state.settings.limits;
    let closer = Closer::new();
    let (outbox, queue) = Outbox::new(
        limits.outbound_queue,
        limits.outbound_queue_bytes,
        closer.clone(),
        &state.outbound,
    );
    let mut writer = Writer::new(
        queue,
        writer::Coalescing {
            linger: limits.coalesce(),
            load: std::sync::Arc::clone(&state.load),
        },
    );
    let budget = FrameBudget::new(
        limits.messages_per_sec,
        limits.message_burst,
        limits.abuse_refusals,
        Duration::from_secs(limits.abuse_window_secs),
    );
    let mut session = Session {
        conn: state.next_conn_id(),
        budget,
        state,
        identity,
        ip,
        outbox,
        closer,
        rooms: Rooms::default(),
        sends: SendsInFlight::default(),
        cause: None,
    };
    async move {
        // The captures are used in place: moved into locals, they would be kept twice.
        tracing::debug!(ip = %session.ip, user = %session.identity.user.id, conn = session.conn, "session open");
        let registration = session.state.connections.register(
            &session.identity.user.id,
            session.conn,
            session.closer.clone(),
        );
        // Registered, the shutdown's sweep of the connections closes it; this closes it if
        // the sweep came first.
        if session.state.shutdown.is_triggered() {
            session.closer.close(CloseReason::ServerShutdown);
        }
        crate::stats::connection_opened();
        session.welcome();
        let writable = session.serve(&mut socket, &mut writer).await;
        drop(registration);
        let grace = session.state.settings.limits.close_grace();
        // Sends the store has taken are committed whether or not anyone waits; their
        // acks go out before the close frame, as they did when each send was awaited.
        let _ = timeout(grace, session.answer_sends()).await;
        // Boxed like a frame's handling: only a closing connection needs this state.
        Box::pin(session.leave_all()).await;
        session.log_close();
        let reason = session.closer.reason();
        crate::stats::connection_closed(CloseCode::from(reason).code());
        // Before the close frame: a client that saw it may reconnect on any node at once.
        slot.release_shared().await;
        Box::pin(close_socket(
            socket,
            writable.then_some(writer),
            reason,
            grace,
        ))
        .await;
        // Only now is the socket gone: its place is free for the client's next attempt.
        drop(slot);
    }
}

/// Sends the last frames and the close frame (unless nothing more may be sent), then
/// reads until the client answers it, so its side sees a clean close; each step gets
/// `grace` (`--close-grace-ms`) and no more, and the socket is closed when this returns,
/// whatever the client does.
async fn close_socket(
    mut socket: Socket,
    writer: Option<Writer>,
    reason: CloseReason,
    grace: Duration,
) {
    if let Some(writer) = writer {
        let _ = timeout(grace, writer.farewell(&mut socket, reason)).await;
    }
    let _ = timeout(grace, async {
        while let Some(Ok(_)) = socket.next().await {}
    })
    .await;
    // tungstenite writes its answer to the client's close as the connection ends, and
    // does not flush it: it would stay in the batch under it (`super::batched_io`).
    let _ = timeout(grace, socket.get_mut().flush()).await;
}

/// Polls the connection's sources in turn: the waiting sends (their acks are queued
/// before the writer looks), the writer (it only returns to ask for the timer or to
/// report a failure), the timer, then the client, unless as many sends wait as may:
/// the client's next frame is read once one is answered.
fn poll_event(
    cx: &mut Context<'_>,
    socket: &mut Socket,
    writer: &mut Writer,
    timer: Pin<&mut Sleep>,
    sends: &mut SendsInFlight<SendOutcome>,
    outbox: &Outbox,
) -> Poll<Event> {
    let _ = sends.poll_answers(cx, |outcome| answer_send(outbox, outcome));
    match writer.poll_write(cx, socket) {
        Poll::Ready(Ok(())) => return Poll::Ready(Event::Lingering),
        Poll::Ready(Err(error)) => return Poll::Ready(Event::WriteFailed(error)),
        Poll::Pending => {}
    }
    if timer.poll(cx).is_ready() {
        return Poll::Ready(Event::Timer);
    }
    if sends.is_full() {
        return Poll::Pending;
    }
    socket.poll_next_unpin(cx).map(Event::Read)
}

/// Queues the answer to a send: its ack, or why it was not stored.
fn answer_send(outbox: &Outbox, (id, outcome): SendOutcome) {
    let frame = match outcome {
        Ok(appended) => encode(&ServerFrame::Ack {
            id,
            room: &appended.message.room,
            seq: appended.message.seq,
            ts: appended.message.ts,
            duplicate: appended.duplicate,
        }),
        // Either way the message was neither stored nor delivered; the store has
        // logged why. Only a cause that passes (a full or read-only disk) is worth a
        // retry, and with the same nonce a retry cannot store it twice.
        Err(BrokerError::Store(error)) if error.is_unavailable() => {
            tracing::debug!(%error, "a message was not stored");
            encode(&ServerFrame::Error {
                id,
                code: ErrorCode::Unavailable,
                message: "the message was not stored: send it again shortly",
                retry_after_ms: Some(store_retry_after_ms()),
            })
        }
        Err(error) => {
            tracing::error!(%error, "cannot store a message");
            encode(&ServerFrame::Error {
                id,
                code: ErrorCode::Internal,
                message: "the message was not stored, send it again",
                retry_after_ms: None,
            })
        }
    };
    outbox.push_reply(frame);
}

impl Session {
    fn push(&self, frame: &ServerFrame<'_>) {
        self.outbox.push_reply(encode(frame));
    }

    fn error(&self, id: Option<u32>, code: ErrorCode, message: &str) {
        self.push(&ServerFrame::Error {
            id,
            code,
            message,
            retry_after_ms: None,
        });
    }

    fn welcome(&self) {
        let limits = &self.state.settings.limits;
        self.push(&ServerFrame::Welcome {
            user: &self.identity.user,
            expires_at: self.identity.expires_at,
            heartbeat_secs: limits.heartbeat_secs,
            limits: AdvertisedLimits {
                max_message_bytes: limits.frame_limit(),
                max_body_chars: limits.max_body_chars,
                messages_per_sec: limits.messages_per_sec,
                burst: limits.message_burst,
            },
        });
    }

    /// When the token expires, as a point on the runtime's clock.
    fn expiry(&self) -> Instant {
        let left = self.identity.expires_at.saturating_sub(now_secs()).max(0);
        Instant::now() + Duration::from_secs(u64::try_from(left).unwrap_or(0))
    }

    /// Serves the connection until it must close; false if nothing more may be sent,
    /// not even the close frame: a write failed, or the client closed the connection.
    async fn serve(&mut self, socket: &mut Socket, writer: &mut Writer) -> bool {
        let limits = &self.state.settings.limits;
        let silence_limit = Duration::from_secs(limits.pong_timeout_secs.max(1));
        let heartbeat = Duration::from_secs(limits.heartbeat_secs.max(1));
        let now = Instant::now();
        let mut deadlines = Deadlines {
            expiry: self.expiry(),
            silent: now + silence_limit,
            ping: now + heartbeat,
        };
        let timer = sleep_until(deadlines.next(writer));
        tokio::pin!(timer);
        // One wait for the close signal for the whole loop: making a new one per event
        // registers and unregisters a waiter each time, on the hottest path there is.
        // The shutdown comes through it too (`ws::registry`).
        let closer = self.closer.clone();
        let closed = closer.closed();
        tokio::pin!(closed);
        loop {
            let next = deadlines.next(writer);
            // A timer that fired is re-armed even for the same instant: one left elapsed
            // would wake the loop again at once.
            if timer.deadline() != next || timer.is_elapsed() {
                timer.as_mut().reset(next);
            }
            let event = tokio::select! {
                biased;
                () = &mut closed => return true,
                event = poll_fn(|cx| {
                    poll_event(cx, socket, writer, timer.as_mut(), &mut self.sends, &self.outbox)
                }) => event,
            };
            match event {
                Event::Lingering => {}
                Event::WriteFailed(error) => {
                    self.closer.close(close::for_transport_error(&error).0);
                    return false;
                }
                Event::Timer => {
                    let now = Instant::now();
                    if now >= deadlines.expiry {
                        self.closer.close(CloseReason::TokenExpired);
                    } else if now >= deadlines.silent {
                        if self.sends.is_full() {
                            // Not the client's silence: we are the ones not reading.
                            deadlines.silent = now + silence_limit;
                        } else {
                            self.closer.close(CloseReason::HeartbeatTimeout);
                        }
                    }
                    if now >= deadlines.ping {
                        writer.ping();
                        deadlines.ping = now + heartbeat;
                    }
                    if writer.linger_until().is_some_and(|until| now >= until) {
                        writer.linger_over();
                    }
                }
                Event::Read(next) => {
                    deadlines.silent = Instant::now() + silence_limit;
                    match next {
                        // The client closed: tungstenite answered its close frame with
                        // ours (it is sent as the connection ends), and nothing may
                        // follow that. tungstenite would refuse to send more, but the
                        // writer's data frames go around it (`writer::FrameSink`): so
                        // the writer stops here, and what was queued is not sent.
                        // The end of the stream comes only after the client's close.
                        None | Some(Ok(Message::Close(_))) => {
                            self.closer.close(CloseReason::Normal);
                            return false;
                        }
                        // tungstenite answers no close for an error: the client gets
                        // what was queued and then the close frame with its code.
                        Some(Err(error)) => {
                            let (reason, cause) = close::for_transport_error(&error);
                            self.cause = Some(cause);
                            self.closer.close(reason);
                        }
                        Some(Ok(Message::Text(text))) => {
                            // Boxed: handling a frame needs far more state than waiting
                            // for one, and the idle connection should not carry it.
                            if !Box::pin(self.handle_writing(text, socket, writer)).await {
                                return false;
                            }
                            deadlines.expiry = self.expiry();
                        }
                        Some(Ok(Message::Binary(_))) => self.closer.close(CloseReason::Unsupported),
                        Some(Ok(Message::Ping(_) | Message::Pong(_))) => self.on_control(),
                        // tungstenite reads whole messages, never raw frames.
                        Some(Ok(Message::Frame(_))) => {
                            self.closer.close(CloseReason::ProtocolError);
                        }
                    }
                }
            }
        }
    }

    /// Handles a client frame while the writer goes on: a `send` waits for its commit,
    /// and what the rooms queue for this connection meanwhile must not wait with it (nor
    /// hold its bytes in the server's budget). False if a write failed.
    async fn handle_writing(
        &mut self,
        text: Utf8Bytes,
        socket: &mut Socket,
        writer: &mut Writer,
    ) -> bool {
        let closer = self.closer.clone();
        let handling = self.on_text(text);
        tokio::pin!(handling);
        let mut writable = true;
        poll_fn(|cx| {
            // A batch that starts to wait here waits until the frame is handled (the
            // timer is not polled), and the handling's own reply ends the wait anyway.
            while writable {
                match writer.poll_write(cx, socket) {
                    Poll::Ready(Ok(())) => {}
                    Poll::Ready(Err(error)) => {
                        closer.close(close::for_transport_error(&error).0);
                        writable = false;
                    }
                    Poll::Pending => break,
                }
            }
            handling.as_mut().poll(cx)
        })
        .await;
        writable
    }

    fn log_close(&self) {
        let reason = self.closer.reason();
        let code = CloseCode::from(reason);
        match reason {
            CloseReason::Normal | CloseReason::ServerShutdown => {
                tracing::debug!(ip = %self.ip, user = %self.identity.user.id, code = code.code(), "session closed");
            }
            _ => {
                tracing::warn!(target: "security", event = "connection_closed", ip = %self.ip, user = %self.identity.user.id, code = code.code(), reason = code.reason(), cause = self.cause);
            }
        }
    }

    /// A ping or pong spends the frame budget like any frame (tungstenite answers every
    /// ping with a pong, so pings are work and bytes for the server). A refusal is not
    /// answered, which would only add to what the flood makes us write; abuse closes.
    fn on_control(&mut self) {
        if let Spend::Refused { abusive, .. } = self.budget.spend() {
            crate::stats::rate_limited();
            if abusive {
                self.closer.close(CloseReason::RateAbuse);
            }
        }
    }

    async fn on_text(&mut self, text: Utf8Bytes) {
        crate::stats::frame_in();
        let frame = match ClientFrame::parse(text.as_str()) {
            Ok(frame) => frame,
            Err(error) => {
                tracing::debug!(category = ?error.classify(), "unparseable client frame");
                self.closer.close(CloseReason::InvalidPayload);
                return;
            }
        };
        let id = frame.id();
        // A send joins the ones waiting; anything else is answered after them.
        if !matches!(frame, ClientFrame::Send { .. }) {
            self.answer_sends().await;
        }
        if let Spend::Refused {
            retry_after_ms,
            abusive,
        } = self.budget.spend()
        {
            self.answer_sends().await;
            crate::stats::rate_limited();
            self.push(&ServerFrame::Error {
                id,
                code: ErrorCode::RateLimited,
                message: "too many frames: slow down",
                retry_after_ms: Some(retry_after_ms),
            });
            if abusive {
                self.closer.close(CloseReason::RateAbuse);
            }
            return;
        }
        if let Err(refusal) = frame.check_values(self.state.settings.limits.max_body_chars) {
            self.answer_sends().await;
            return self.error(id, refusal.code, &refusal.message);
        }
        match frame {
            ClientFrame::Join { id, room, since } => self.join(id, room, since).await,
            ClientFrame::Leave { id, room } => self.leave(id, room).await,
            ClientFrame::Send {
                id,
                room,
                body,
                nonce,
            } => self.send(id, room, body, nonce).await,
            ClientFrame::History {
                id,
                room,
                before,
                limit,
            } => self.history(id, room, before, limit).await,
            ClientFrame::Typing { id, room } => self.typing(id, room).await,
            ClientFrame::Refresh { id, token } => self.refresh(id, &token),
        }
    }

    /// The bytes of messages a reply may carry: at most the configured bound, only as
    /// much as the frame budget pays for, and only as much as is left of the user's and
    /// the address's reply allowance across connections (the oldest are left out of the
    /// rest). The connection's own budget is asked first: a connection that is out of it
    /// then spends nothing its other connections, or its neighbours, share.
    fn afford_reply(&mut self, wanted: usize) -> usize {
        let wanted = wanted.min(
            self.budget
                .afford_reply(wanted, self.state.settings.limits.replay_max_bytes),
        );
        self.state
            .replies
            .take(&self.identity.user.id, self.ip, wanted)
    }

    /// Membership of a room: `Err` has been answered.
    fn joined_room(&self, id: Option<u32>, room: &str) -> Result<(), ()> {
        if !self.rooms.contains(room) {
            self.error(id, ErrorCode::NotJoined, "join the room first");
            return Err(());
        }
        Ok(())
    }

    async fn join(&mut self, id: Option<u32>, room: String, since: Option<u64>) {
        if !self.identity.may_join(&room) {
            tracing::warn!(target: "security", event = "room_forbidden", ip = %self.ip, user = %self.identity.user.id, room = %room);
            return self.error(
                id,
                ErrorCode::Forbidden,
                "your token does not allow this room",
            );
        }
        let limits = &self.state.settings.limits;
        if !self.rooms.contains(&room) && self.rooms.len() >= limits.max_rooms_per_connection {
            return self.error(
                id,
                ErrorCode::BadRequest,
                "in too many rooms: leave one first",
            );
        }
        let from = match since {
            Some(seq) => ReplayFrom::Since {
                seq,
                max: limits.replay_max,
            },
            None => ReplayFrom::Latest(limits.join_history),
        };
        // Subscribed before the snapshot is read, so nothing published in between is
        // missed; `go_live` drops what the snapshot already holds.
        let subscribed = self
            .state
            .broker
            .subscribe(&room, self.conn, &self.identity.user, &self.outbox)
            .await;
        let announce = match subscribed {
            Ok(announce) => announce,
            Err(error) => {
                tracing::error!(%error, room = %room, "cannot subscribe to the room for a join");
                return self.abandon_join(id, &room).await;
            }
        };
        self.rooms.insert(&room);
        let mut snapshot = match self.state.store.snapshot(&room, from).await {
            Ok(snapshot) => snapshot,
            Err(error) => {
                tracing::error!(%error, room = %room, "cannot read the room for a join");
                return self.abandon_join(id, &room).await;
            }
        };
        snapshot.keep_newest_affordable(|wanted| self.afford_reply(wanted));
        // Encoded here, outside the room's lock; only the members are added under it.
        let head = encode(&ServerFrame::Joined {
            id,
            room: &room,
            last_seq: snapshot.last_seq,
            messages: &snapshot.messages,
            complete: snapshot.complete,
            online: 0,
            members: &[],
        });
        drop(snapshot.messages);
        // Every node's users in cluster mode; else (or if Redis does not answer) the hub's.
        let cluster = self.state.broker.members(&room, &self.identity.user).await;
        self.state
            .broker
            .go_live(&room, self.conn, snapshot.last_seq, &|members| {
                let members = cluster.as_ref().unwrap_or(members);
                joined_with_members(head.as_str(), members.online, &members.users).into()
            });
        if announce {
            self.announce(&room, PresenceEvent::Join).await;
        }
    }

    /// A join that failed half-way: the client may retry, and the connection is no
    /// longer in the room (its user's departure announced if that was their last).
    async fn abandon_join(&mut self, id: Option<u32>, room: &str) {
        self.error(
            id,
            ErrorCode::Internal,
            "could not join the room, try again",
        );
        self.rooms.remove(room);
        self.leave_room(room).await;
    }

    async fn leave(&mut self, id: Option<u32>, room: String) {
        if self.joined_room(id, &room).is_err() {
            return;
        }
        self.rooms.remove(&room);
        self.leave_room(&room).await;
        self.push(&ServerFrame::Left { id, room: &room });
    }

    async fn leave_all(&mut self) {
        for room in std::mem::take(&mut self.rooms).0 {
            self.leave_room(&room).await;
        }
    }

    async fn leave_room(&self, room: &str) {
        if self.state.broker.unsubscribe(room, self.conn).await {
            self.announce(room, PresenceEvent::Leave).await;
        }
    }

    async fn announce(&self, room: &str, event: PresenceEvent) {
        let frame = encode(&ServerFrame::Presence {
            room,
            user: &self.identity.user,
            event,
        });
        self.state
            .broker
            .publish_ephemeral(room, &self.identity.user.id, frame)
            .await;
    }

    /// Starts storing a message; its answer comes once it is committed, after those of
    /// the sends before it (`super::sends`).
    async fn send(&mut self, id: Option<u32>, room: String, body: String, nonce: Option<String>) {
        if !self.rooms.contains(&room) {
            self.answer_sends().await;
            return self.error(id, ErrorCode::NotJoined, "join the room first");
        }
        let draft = NewMessage {
            room,
            from: self.identity.user.clone(),
            body,
            nonce,
            ts: now_millis(),
        };
        let broker = Arc::clone(&self.state.broker);
        self.sends.start(Box::pin(async move {
            (id, broker.publish_message(draft).await)
        }));
    }

    /// Waits for every send in flight and queues their answers, in order.
    async fn answer_sends(&mut self) {
        let (sends, outbox) = (&mut self.sends, &self.outbox);
        poll_fn(|cx| sends.poll_answers(cx, |outcome| answer_send(outbox, outcome))).await;
    }

    async fn history(
        &mut self,
        id: Option<u32>,
        room: String,
        before: Option<u64>,
        limit: Option<u32>,
    ) {
        let limit = limit.unwrap_or(HISTORY_DEFAULT);
        if self.joined_room(id, &room).is_err() {
            return;
        }
        match self
            .state
            .store
            .before(&room, before.unwrap_or(u64::MAX), limit)
            .await
        {
            Ok(mut messages) => {
                let truncated =
                    keep_newest_affordable(&mut messages, |wanted| self.afford_reply(wanted));
                self.push(&ServerFrame::History {
                    id,
                    room: &room,
                    messages: &messages,
                    truncated,
                });
            }
            Err(error) => {
                tracing::error!(%error, "cannot read history");
                self.error(id, ErrorCode::Internal, "could not read history, try again");
            }
        }
    }

    async fn typing(&mut self, id: Option<u32>, room: String) {
        if self.joined_room(id, &room).is_err() {
            return;
        }
        let frame = encode(&ServerFrame::Typing {
            room: &room,
            user: &self.identity.user,
        });
        self.state
            .broker
            .publish_ephemeral(&room, &self.identity.user.id, frame)
            .await;
    }

    fn refresh(&mut self, id: Option<u32>, token: &str) {
        match self.state.auth.verify(token) {
            Ok(fresh) if fresh.user.id == self.identity.user.id => {
                self.identity = fresh;
                self.push(&ServerFrame::Refreshed {
                    id,
                    expires_at: self.identity.expires_at,
                });
            }
            Ok(_) => {
                tracing::warn!(target: "security", event = "refresh_rejected", ip = %self.ip, user = %self.identity.user.id, reason = "different_subject");
                self.error(
                    id,
                    ErrorCode::Unauthorized,
                    "that token is for another user",
                );
            }
            Err(rejection) => {
                tracing::warn!(target: "security", event = "refresh_rejected", ip = %self.ip, user = %self.identity.user.id, reason = rejection.as_str());
                self.error(id, ErrorCode::Unauthorized, "that token is not valid");
            }
        }
    }
}

fn store_retry_after_ms() -> u64 {
    u64::try_from(crate::store::RETRY_AFTER.as_millis()).unwrap_or(u64::MAX)
}
