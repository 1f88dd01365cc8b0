//! The write half of a connection: drains its outbox to the socket.
//!
//! A connection is one task ([`super::session`]); this is the part of it that writes, a
//! state machine the session polls beside its reads, so an idle connection costs one
//! task's future and nothing more (a second task for writing cost its own future, task
//! header and join handle on every connection). Everything it holds between two polls
//! is in [`Writer`], so the session may stop polling it at any point (a close, a read to
//! handle) and nothing taken from the queue is lost.
//!
//! It writes everything already queued and flushes once per batch, so a burst of
//! broadcasts costs one flush, not one per frame. While the server is busy
//! ([`ServerLoad`]), a connection that is busy too (it flushed moments ago) gathers its
//! next batch from the flush on, until it holds [`GATHER_FRAMES`] frames or
//! `--coalesce-ms` have passed: on a hot room that turns many tiny TCP packets into a
//! few larger ones, which is most of what a delivery costs. While it gathers, the
//! frames queued for it do not wake its task (see `OutboxQueue::gather`): a batch costs
//! one wake-up, not one per frame. A quiet server, a quiet connection (a person
//! chatting) and the answer to a client's own request (`Outbox::push_reply`) get each
//! frame at once: the wait buys CPU only when CPU is short, and costs latency always.
//! The wait is the session's timer, not an await here, so the session goes on reading
//! while a batch gathers. It also sends the heartbeat pings the session asks for and,
//! when the connection must close, the close frame with its code, after what was queued
//! before it (except for a slow consumer, whose queue is the problem).
//!
//! Data frames go around tungstenite, straight into the batch under the socket
//! ([`super::batched_io`]): a server's text frame is a header and the payload, and
//! tungstenite's way (a `Message`, then a frame, then its buffer, then a copy into the
//! batch) was most of the user-space cost of a delivered frame. tungstenite still sends
//! the pings and the close frame, and answers the client's pings and close from the
//! read side; [`FrameSink`] is the two ways in.
//!
//! A frame longer than [`FRAGMENT_BYTES`] leaves as a fragmented message (RFC 6455
//! §5.4): a text frame without FIN, then continuation frames, the last with FIN, back to
//! back. The batch takes each frame whole, past its bound if need be; fragments keep
//! that overshoot at one fragment however big a `joined` or `history` reply was, so a
//! client that does not read holds no more than that. A cut may fall inside a UTF-8
//! sequence: only the whole message must be UTF-8, and clients check it once
//! reassembled.

use super::close::CloseCode;
use super::upgrade::Socket;
use crate::hub::outbox::{CloseReason, OutboxQueue};
use crate::load::ServerLoad;
use futures_util::{Sink, SinkExt};
use std::future::poll_fn;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;
use tokio::time::Instant;
use tungstenite::protocol::CloseFrame;
use tungstenite::protocol::frame::coding::Data;
use tungstenite::{Bytes, Message, Utf8Bytes};

/// The most payload one frame carries: a longer text leaves as fragments of this size.
/// Small enough that a batch passes its bound by little (it takes a frame whole); large
/// enough that almost every frame (a chat message, an ack, presence) is one.
pub(crate) const FRAGMENT_BYTES: usize = 512;

/// Most frames written between two flushes.
const MAX_BATCH: usize = 64;

/// A gathering batch is written as soon as it holds this many frames: most of what
/// gathering saves (the packet, the wake-up) is saved by then, and on a busy room the
/// batch leaves well before its wait is over.
const GATHER_FRAMES: usize = 4;

/// A flush this recent makes the connection busy (it receives more than ~25 frames a
/// second): one that is not gets its next frame at once whatever the server's load.
const BUSY_WINDOW: Duration = Duration::from_millis(40);

/// When a busy connection gathers frames before writing.
#[derive(Clone, Debug)]
pub struct Coalescing {
    /// The longest it gathers after its last flush (`--coalesce-ms`); zero never waits.
    /// A batch of [`GATHER_FRAMES`] frames is written without waiting longer.
    pub linger: Duration,
    /// Whether the server is busy enough for the wait to be worth its latency.
    pub load: Arc<ServerLoad>,
}

impl Coalescing {
    /// Until when the next batch may wait for more frames, given the last flush.
    fn linger_until(&self, last_flush: Option<Instant>, now: Instant) -> Option<Instant> {
        let flushed = last_flush.filter(|at| now.duration_since(*at) < BUSY_WINDOW)?;
        (!self.linger.is_zero() && self.load.is_busy()).then(|| flushed + self.linger)
    }
}

/// What a batch has done so far.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Batch {
    /// No batch: waiting for a frame (or a ping) to start one.
    Idle,
    /// Feeding frames; `frames` data frames so far, gathering more until `linger_until`.
    /// `armed`: the session knows of the wait (it set its timer for it).
    Gathering {
        frames: usize,
        linger_until: Option<Instant>,
        armed: bool,
    },
    /// Everything of the batch is fed: flushing it.
    Flushing { frames: usize },
}

/// Where the writer's frames go: a WebSocket's [`Sink`] for the control frames (pings,
/// the close frame), and a way around it into the batch under it for data frames.
/// A trait so the writer can be tested without a socket.
pub trait FrameSink: Sink<Message, Error = tungstenite::Error> + Unpin {
    /// Adds one data frame (`opcode` `Text` or `Continue`) after everything the socket
    /// was given before it: whole, or not at all (`Pending`) while the batch is full
    /// and cannot be written out.
    fn poll_push_frame(
        &mut self,
        cx: &mut Context<'_>,
        fin: bool,
        opcode: Data,
        payload: &[u8],
    ) -> Poll<Result<(), tungstenite::Error>>;
}

impl FrameSink for Socket {
    fn poll_push_frame(
        &mut self,
        cx: &mut Context<'_>,
        fin: bool,
        opcode: Data,
        payload: &[u8],
    ) -> Poll<Result<(), tungstenite::Error>> {
        self.get_mut()
            .poll_push_frame(cx, fin, opcode, payload)
            .map_err(tungstenite::Error::Io)
    }
}

/// A frame taken (from the queue, or a ping) and not yet accepted by the socket.
enum Pending {
    /// A data frame, pushed into the batch directly.
    Data {
        payload: Bytes,
        fin: bool,
        opcode: Data,
    },
    /// A control frame, sent through tungstenite.
    Control(Message),
}

/// A long frame on its way out as fragments.
struct Fragments {
    /// What is not sent yet.
    rest: Bytes,
    /// Whether its first fragment (the text frame) has been taken.
    started: bool,
}

/// A connection's outbound side, between two polls. Generic over the socket (a
/// WebSocket in the server) so its batching can be tested without one.
pub struct Writer {
    queue: OutboxQueue,
    coalescing: Coalescing,
    /// A frame taken (from the queue, or a ping) that the socket has not accepted yet.
    pending: Option<Pending>,
    /// What is left of a long frame being sent as fragments, after `pending`.
    fragments: Option<Fragments>,
    batch: Batch,
    last_flush: Option<Instant>,
    ping_due: bool,
}

impl Writer {
    pub fn new(queue: OutboxQueue, coalescing: Coalescing) -> Self {
        Self {
            queue,
            coalescing,
            pending: None,
            fragments: None,
            batch: Batch::Idle,
            last_flush: None,
            ping_due: false,
        }
    }

    /// Takes a frame from the queue to send: whole, or as fragments if it is long.
    fn start(&mut self, text: Utf8Bytes) {
        if text.len() <= FRAGMENT_BYTES {
            self.pending = Some(Pending::Data {
                payload: Bytes::from(text),
                fin: true,
                opcode: Data::Text,
            });
        } else {
            self.fragments = Some(Fragments {
                rest: Bytes::from(text),
                started: false,
            });
        }
    }

    /// The next frame for the socket: the one it has not accepted yet, or else the
    /// next fragment of a long frame.
    fn next_frame(&mut self) -> Option<Pending> {
        if let Some(frame) = self.pending.take() {
            return Some(frame);
        }
        let fragments = self.fragments.as_mut()?;
        let payload = fragments
            .rest
            .split_to(FRAGMENT_BYTES.min(fragments.rest.len()));
        let opcode = if fragments.started {
            Data::Continue
        } else {
            Data::Text
        };
        fragments.started = true;
        let last = fragments.rest.is_empty();
        if last {
            self.fragments = None;
        }
        Some(Pending::Data {
            payload,
            fin: last,
            opcode,
        })
    }

    /// Gives the socket the frame it has not accepted yet and the rest of a long frame's
    /// fragments, back to back: `Ready(Ok)` once it took them all.
    fn poll_feed<S: FrameSink>(
        &mut self,
        cx: &mut Context<'_>,
        socket: &mut S,
    ) -> Poll<Result<(), tungstenite::Error>> {
        while let Some(frame) = self.next_frame() {
            // Asked before a data frame too, though it goes around tungstenite: ready at
            // once unless tungstenite holds a frame a blocked write left it (then it
            // writes that out first), so frames leave in the order they were given. And
            // since both tungstenite's buffer and the batch hold whole frames only, a
            // frame never lands inside another; tungstenite's pongs may come between
            // two fragments, which control frames may (RFC 6455 §5.4).
            match Pin::new(&mut *socket).poll_ready(cx) {
                Poll::Ready(Ok(())) => {}
                Poll::Ready(Err(error)) => return Poll::Ready(Err(error)),
                Poll::Pending => {
                    self.pending = Some(frame);
                    return Poll::Pending;
                }
            }
            match frame {
                Pending::Control(message) => Pin::new(&mut *socket).start_send(message)?,
                Pending::Data {
                    payload,
                    fin,
                    opcode,
                } => match socket.poll_push_frame(cx, fin, opcode, &payload) {
                    Poll::Ready(result) => result?,
                    Poll::Pending => {
                        self.pending = Some(Pending::Data {
                            payload,
                            fin,
                            opcode,
                        });
                        return Poll::Pending;
                    }
                },
            }
        }
        Poll::Ready(Ok(()))
    }

    /// Sends a heartbeat ping once the batch being written, if any, has left.
    pub fn ping(&mut self) {
        self.ping_due = true;
    }

    /// Until when the batch being written waits for more frames, if it does: the
    /// session's timer ends the wait with [`Writer::linger_over`].
    pub fn linger_until(&self) -> Option<Instant> {
        match self.batch {
            Batch::Gathering { linger_until, .. } => linger_until,
            _ => None,
        }
    }

    /// The batch has waited long enough: it is flushed with what it holds.
    pub fn linger_over(&mut self) {
        if let Batch::Gathering { linger_until, .. } = &mut self.batch {
            *linger_until = None;
        }
    }

    /// Writes what there is to write. `Ready(Ok)` when a batch starts to gather (so the
    /// session arms its timer for [`Writer::linger_until`]), `Ready(Err)` when the socket
    /// failed; otherwise `Pending`, woken when there is more to do. One batch per call:
    /// after a flush it asks to be polled again rather than go on, so a connection kept
    /// busy by its rooms still reads its client's frames.
    pub fn poll_write<S: FrameSink>(
        &mut self,
        cx: &mut Context<'_>,
        socket: &mut S,
    ) -> Poll<Result<(), tungstenite::Error>> {
        loop {
            // A message's fragments go back to back, before anything else.
            ready!(self.poll_feed(cx, socket))?;
            match self.batch {
                Batch::Idle => {
                    if self.ping_due {
                        self.ping_due = false;
                        self.pending = Some(Pending::Control(Message::Ping(Default::default())));
                        self.batch = Batch::Flushing { frames: 0 };
                        continue;
                    }
                    // `None`: the queue was discarded or every outbox is gone; the
                    // session ends the connection, nothing is left to write.
                    let Some(frame) = ready!(self.queue.poll_recv(cx)) else {
                        return Poll::Pending;
                    };
                    self.start(frame.into_text());
                    let linger_until = self
                        .coalescing
                        .linger_until(self.last_flush, Instant::now())
                        // A queued reply to the client's own request: no wait at all.
                        .filter(|_| !self.queue.take_urgent());
                    self.batch = Batch::Gathering {
                        frames: 1,
                        linger_until,
                        armed: false,
                    };
                }
                Batch::Gathering {
                    frames,
                    linger_until,
                    armed,
                } => {
                    // Waiting for more, or taking what is queued and writing it.
                    let waiting = linger_until.is_some() && frames < GATHER_FRAMES;
                    if frames < MAX_BATCH {
                        // Registers for the next push too, which is how a wait ends
                        // early when the batch fills up or a reply arrives.
                        if let Poll::Ready(Some(frame)) = self.queue.poll_recv(cx) {
                            self.start(frame.into_text());
                            self.batch = Batch::Gathering {
                                frames: frames + 1,
                                linger_until,
                                armed,
                            };
                            continue;
                        }
                        // A reply queued meanwhile ends the wait at once.
                        if waiting && !self.queue.take_urgent() {
                            if armed {
                                return Poll::Pending;
                            }
                            // Pushes stop waking the task: the session's timer will, or
                            // the push that completes the batch.
                            self.queue.gather(Some(GATHER_FRAMES - frames));
                            self.batch = Batch::Gathering {
                                frames,
                                linger_until,
                                armed: true,
                            };
                            return Poll::Ready(Ok(()));
                        }
                    }
                    self.queue.gather(None);
                    self.batch = if frames == 0 {
                        // A wait after a flush that gathered nothing: the connection
                        // is quiet after all, and its queue gives its storage back.
                        self.queue.idle();
                        Batch::Idle
                    } else {
                        Batch::Flushing { frames }
                    };
                }
                Batch::Flushing { frames } => {
                    ready!(Pin::new(&mut *socket).poll_flush(cx))?;
                    let now = Instant::now();
                    self.last_flush = Some(now);
                    if frames > 0 {
                        crate::stats::frames_out(frames);
                    }
                    // A connection that just flushed on a busy server starts its next
                    // batch now, empty: the frames that come meanwhile are read when
                    // the wait ends (or the batch is full), so a batch costs one
                    // wake-up, not one per frame. A ping that is due goes first.
                    self.queue.written();
                    let linger = self.coalescing.linger_until(self.last_flush, now);
                    self.batch = match linger.filter(|_| !self.ping_due) {
                        Some(until) => Batch::Gathering {
                            frames: 0,
                            linger_until: Some(until),
                            armed: false,
                        },
                        None => {
                            self.queue.idle();
                            Batch::Idle
                        }
                    };
                    // Polled again at once, but after the session's other sources: a
                    // queue kept full by a hot room must not keep the client unread.
                    cx.waker().wake_by_ref();
                    return Poll::Pending;
                }
            }
        }
    }

    /// Sends what is left and the close frame for `reason` (a slow consumer's queue is
    /// dropped instead: it is the problem). The caller bounds how long this may take.
    pub async fn farewell<S: FrameSink>(
        mut self,
        socket: &mut S,
        reason: CloseReason,
    ) -> Result<(), tungstenite::Error> {
        if reason == CloseReason::SlowConsumer {
            // Not sent, and its memory given back now. A message cut short by the close
            // is allowed: control frames may come between fragments (RFC 6455 §5.4).
            self.queue.discard();
            self.pending = None;
            self.fragments = None;
        }
        // A message already started is finished first, then what is queued.
        loop {
            poll_fn(|cx| self.poll_feed(cx, socket)).await?;
            match self.queue.try_recv() {
                Some(frame) => self.start(frame.into_text()),
                None => break,
            }
        }
        let code = CloseCode::from(reason);
        socket
            .send(Message::Close(Some(CloseFrame {
                code: code.code().into(),
                reason: Utf8Bytes::from_static(code.reason()),
            })))
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn coalescing(linger_ms: u64, busy: bool) -> Coalescing {
        Coalescing {
            linger: Duration::from_millis(linger_ms),
            load: ServerLoad::new(if busy { 0 } else { 100 }),
        }
    }

    #[test]
    fn a_busy_connection_on_a_busy_server_gathers_until_its_linger_after_the_last_flush() {
        let now = Instant::now();
        let flushed = now - Duration::from_millis(5);
        assert_eq!(
            coalescing(14, true).linger_until(Some(flushed), now),
            Some(flushed + Duration::from_millis(14))
        );
    }

    #[test]
    fn a_frame_leaves_at_once_on_a_quiet_server_a_quiet_connection_or_with_no_linger() {
        let now = Instant::now();
        let recent = Some(now - Duration::from_millis(5));
        let long_ago = Some(now - BUSY_WINDOW);
        assert_eq!(coalescing(14, false).linger_until(recent, now), None);
        assert_eq!(coalescing(14, true).linger_until(long_ago, now), None);
        assert_eq!(coalescing(14, true).linger_until(None, now), None);
        assert_eq!(coalescing(0, true).linger_until(recent, now), None);
    }

    use crate::hub::outbox::{Closer, OutboundBudget, Outbox};
    use std::task::Waker;

    /// A socket that takes frames unless blocked, and records what each flush sent: a
    /// whole text frame as its text, a fragment as its kind and length, a control frame
    /// by its name. A data frame given to tungstenite instead of pushed shows as the
    /// `Message` it came in.
    #[derive(Default)]
    struct Recorder {
        blocked: bool,
        /// If set, how many more frames it takes before it blocks.
        takes: Option<usize>,
        /// The batch under it is full and cannot be written out: it takes control
        /// frames (tungstenite keeps them) but no data frame.
        full: bool,
        unflushed: Vec<String>,
        flushed: Vec<Vec<String>>,
        /// The payloads of the fragments it took, one after the other.
        reassembled: Vec<u8>,
    }

    impl Sink<Message> for Recorder {
        type Error = tungstenite::Error;

        fn poll_ready(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
            if self.blocked || self.takes == Some(0) {
                Poll::Pending
            } else {
                Poll::Ready(Ok(()))
            }
        }

        fn start_send(mut self: Pin<&mut Self>, message: Message) -> Result<(), Self::Error> {
            if let Some(takes) = &mut self.takes {
                *takes -= 1;
            }
            let seen = match message {
                Message::Ping(_) => "ping".to_owned(),
                Message::Close(Some(frame)) => format!("close {}", u16::from(frame.code)),
                other => format!("{other:?}"),
            };
            self.unflushed.push(seen);
            Ok(())
        }

        fn poll_flush(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Result<(), Self::Error>> {
            if self.blocked {
                return Poll::Pending;
            }
            let batch = std::mem::take(&mut self.unflushed);
            if !batch.is_empty() {
                self.flushed.push(batch);
            }
            Poll::Ready(Ok(()))
        }

        fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
            self.poll_flush(cx)
        }
    }

    impl FrameSink for Recorder {
        fn poll_push_frame(
            &mut self,
            _: &mut Context<'_>,
            fin: bool,
            opcode: Data,
            payload: &[u8],
        ) -> Poll<Result<(), tungstenite::Error>> {
            if self.full {
                return Poll::Pending;
            }
            if let Some(takes) = &mut self.takes {
                *takes -= 1;
            }
            let seen = if fin && opcode == Data::Text {
                String::from_utf8(payload.to_vec()).expect("a whole message is UTF-8")
            } else {
                self.reassembled.extend_from_slice(payload);
                let kind = match opcode {
                    Data::Text => "text",
                    Data::Continue => "continue",
                    _ => "other",
                };
                let fin = if fin { " fin" } else { "" };
                format!("{kind} {}{fin}", payload.len())
            };
            self.unflushed.push(seen);
            Poll::Ready(Ok(()))
        }
    }

    /// A writer on an always-busy server gathering for `linger_ms`, with its outbox.
    fn writer(linger_ms: u64) -> (Writer, Outbox) {
        let (outbox, queue) = Outbox::new(
            256,
            1 << 20,
            Closer::new(),
            &OutboundBudget::new(usize::MAX),
        );
        (Writer::new(queue, coalescing(linger_ms, true)), outbox)
    }

    /// Polls the writer as the session does, once: `Some(lingering)` if it returned.
    fn poll(writer: &mut Writer, socket: &mut Recorder) -> Option<bool> {
        let mut cx = Context::from_waker(Waker::noop());
        match writer.poll_write(&mut cx, socket) {
            Poll::Ready(Ok(())) => Some(true),
            Poll::Ready(Err(error)) => panic!("the recorder does not fail: {error}"),
            Poll::Pending => None,
        }
    }

    fn batches(socket: &Recorder) -> Vec<Vec<&str>> {
        socket
            .flushed
            .iter()
            .map(|batch| batch.iter().map(String::as_str).collect())
            .collect()
    }

    /// A writer gathering for `linger_ms` that has written its first frame, "a": a
    /// first frame always leaves at once (nothing was flushed before it).
    fn after_a_first_write(linger_ms: u64) -> (Writer, Outbox, Recorder) {
        let (mut writer, outbox) = writer(linger_ms);
        let mut socket = Recorder::default();
        assert!(outbox.push("a".into()));
        assert_eq!(poll(&mut writer, &mut socket), None);
        assert_eq!(batches(&socket), [["a"]], "the first frame leaves at once");
        (writer, outbox, socket)
    }

    #[tokio::test(start_paused = true)]
    async fn a_busy_batch_waits_for_the_sessions_timer_and_a_reply_ends_the_wait_at_once() {
        let (mut writer, outbox, mut socket) = after_a_first_write(14);

        // Flushed moments ago on a busy server: the next batch waits, and says until when.
        assert!(outbox.push("b".into()));
        assert_eq!(poll(&mut writer, &mut socket), Some(true));
        assert!(writer.linger_until().is_some());
        assert!(outbox.push("c".into()));
        assert_eq!(poll(&mut writer, &mut socket), None);
        assert_eq!(batches(&socket).len(), 1, "still gathering");

        assert!(outbox.push_reply("reply".into()));
        assert_eq!(poll(&mut writer, &mut socket), None);
        assert_eq!(batches(&socket), [vec!["a"], vec!["b", "c", "reply"]]);
    }

    #[tokio::test(start_paused = true)]
    async fn after_a_flush_a_busy_connection_gathers_its_next_batch_and_writes_it_at_four_frames() {
        let (mut writer, outbox, mut socket) = after_a_first_write(60);
        assert!(
            writer.linger_until().is_some(),
            "the next batch gathers from the flush on"
        );
        assert_eq!(
            poll(&mut writer, &mut socket),
            Some(true),
            "and asks the session to set its timer"
        );
        for frame in ["b", "c", "d"] {
            assert!(outbox.push(frame.into()));
            assert_eq!(poll(&mut writer, &mut socket), None);
        }
        assert_eq!(batches(&socket).len(), 1, "three frames wait for a fourth");
        assert!(outbox.push("e".into()));
        assert_eq!(poll(&mut writer, &mut socket), None);
        assert_eq!(batches(&socket), [vec!["a"], vec!["b", "c", "d", "e"]]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_wait_that_gathers_nothing_leaves_the_connection_quiet_and_its_next_frame_goes_at_once()
     {
        let (mut writer, outbox, mut socket) = after_a_first_write(60);
        assert_eq!(poll(&mut writer, &mut socket), Some(true));
        writer.linger_over();
        assert_eq!(poll(&mut writer, &mut socket), None);
        assert_eq!(writer.linger_until(), None, "nothing gathered: no batch");
        tokio::time::advance(BUSY_WINDOW).await;
        assert!(outbox.push("b".into()));
        assert_eq!(poll(&mut writer, &mut socket), None);
        assert_eq!(batches(&socket), [["a"], ["b"]]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_waiting_batch_leaves_when_the_timer_says_so() {
        let (mut writer, outbox, mut socket) = after_a_first_write(14);
        assert!(outbox.push("b".into()));
        assert_eq!(poll(&mut writer, &mut socket), Some(true));
        assert_eq!(poll(&mut writer, &mut socket), None);
        assert_eq!(batches(&socket).len(), 1);
        writer.linger_over();
        assert_eq!(poll(&mut writer, &mut socket), None);
        assert_eq!(batches(&socket), [["a"], ["b"]]);
    }

    /// The session's end: what is left, then the close frame for `reason`.
    async fn farewell(writer: Writer, socket: &mut Recorder, reason: CloseReason) {
        writer
            .farewell(socket, reason)
            .await
            .expect("the recorder does not fail");
    }

    /// A quiet writer that has sent a heartbeat ping.
    fn after_a_ping() -> (Writer, Outbox, Recorder) {
        let (mut writer, outbox) = writer(0);
        let mut socket = Recorder::default();
        writer.ping();
        assert_eq!(poll(&mut writer, &mut socket), None);
        (writer, outbox, socket)
    }

    #[tokio::test(start_paused = true)]
    async fn a_ping_leaves_on_its_own_and_a_quiet_writer_never_waits() {
        let (mut writer, outbox, mut socket) = after_a_ping();
        assert!(outbox.push("a".into()));
        assert_eq!(poll(&mut writer, &mut socket), None);
        assert!(outbox.push("b".into()));
        assert_eq!(poll(&mut writer, &mut socket), None, "no linger: no wait");
        assert_eq!(batches(&socket), [["ping"], ["a"], ["b"]]);
    }

    /// A writer that was given frames `a` and `b` and polled once against `socket`.
    fn a_and_b_offered_to(mut socket: Recorder) -> (Writer, Outbox, Recorder) {
        let (mut writer, outbox) = writer(0);
        assert!(outbox.push("a".into()));
        assert!(outbox.push("b".into()));
        assert_eq!(poll(&mut writer, &mut socket), None);
        (writer, outbox, socket)
    }

    #[tokio::test(start_paused = true)]
    async fn what_a_blocked_socket_was_given_is_kept_for_the_close_and_a_slow_consumer_gets_none() {
        for (reason, expected) in [
            (CloseReason::ServerShutdown, vec!["a", "b", "close 1001"]),
            (CloseReason::SlowConsumer, vec!["close 4008"]),
        ] {
            let (writer, _outbox, mut socket) = a_and_b_offered_to(Recorder {
                blocked: true,
                ..Recorder::default()
            });
            assert!(socket.unflushed.is_empty(), "nothing left while blocked");
            // The session stops polling (a close); the frame taken is not lost.
            socket.blocked = false;
            farewell(writer, &mut socket, reason).await;
            assert_eq!(batches(&socket), [expected]);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_large_frame_leaves_as_fragments_back_to_back_and_a_short_one_whole() {
        // Three-byte characters: the 512-byte cuts fall inside them.
        let long = "\u{20AC}".repeat(400);
        let (mut writer, outbox) = writer(0);
        let mut socket = Recorder::default();
        assert!(outbox.push(long.clone().into()));
        assert!(outbox.push("short".into()));
        assert_eq!(poll(&mut writer, &mut socket), None);
        assert_eq!(
            batches(&socket),
            [["text 512", "continue 512", "continue 176 fin", "short"]]
        );
        assert_eq!(socket.reassembled, long.as_bytes());
    }

    #[tokio::test(start_paused = true)]
    async fn a_message_blocked_between_fragments_goes_on_where_it_stopped_and_farewell_finishes_it_before_the_close()
     {
        let long = "\u{20AC}".repeat(400);
        let (mut writer, outbox) = writer(0);
        let mut socket = Recorder {
            takes: Some(1),
            ..Recorder::default()
        };
        assert!(outbox.push(long.clone().into()));
        assert!(outbox.push("after".into()));
        assert_eq!(poll(&mut writer, &mut socket), None);
        assert_eq!(poll(&mut writer, &mut socket), None, "still blocked");
        assert_eq!(socket.unflushed, ["text 512"]);
        socket.takes = Some(1);
        assert_eq!(poll(&mut writer, &mut socket), None);
        assert_eq!(socket.unflushed, ["text 512", "continue 512"]);
        // The session stops polling (a close): the close frame waits for the message.
        socket.takes = None;
        farewell(writer, &mut socket, CloseReason::ServerShutdown).await;
        assert_eq!(
            batches(&socket),
            [vec![
                "text 512",
                "continue 512",
                "continue 176 fin",
                "after",
                "close 1001"
            ]]
        );
        assert_eq!(socket.reassembled, long.as_bytes());
    }

    #[tokio::test(start_paused = true)]
    async fn a_frame_the_full_batch_cannot_take_is_kept_and_leaves_first_once_it_can() {
        let (mut writer, _outbox, mut socket) = a_and_b_offered_to(Recorder {
            full: true,
            ..Recorder::default()
        });
        assert_eq!(poll(&mut writer, &mut socket), None, "still full");
        assert!(socket.unflushed.is_empty(), "nothing taken while full");
        socket.full = false;
        assert_eq!(poll(&mut writer, &mut socket), None);
        assert_eq!(batches(&socket), [["a", "b"]]);
    }

    #[tokio::test(start_paused = true)]
    async fn data_frames_go_around_tungstenite_and_only_the_ping_and_the_close_go_through_it() {
        let (mut writer, outbox, mut socket) = after_a_ping();
        assert!(outbox.push("a".into()));
        assert!(outbox.push("\u{20AC}".repeat(200).into()));
        assert_eq!(poll(&mut writer, &mut socket), None);
        assert!(outbox.push("b".into()));
        farewell(writer, &mut socket, CloseReason::ServerShutdown).await;
        // A `Message` for a data frame would show as one (`Text(..)`, `Frame(..)`).
        assert_eq!(
            batches(&socket),
            [
                vec!["ping"],
                vec!["a", "text 512", "continue 88 fin"],
                vec!["b", "close 1001"]
            ]
        );
    }
}
