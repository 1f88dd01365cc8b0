//! A connection's bounded outbound queue and its close signal.
//!
//! It lives beside the hub, not in the WebSocket layer, because the hub is what fills it:
//! the hub, the broker and admin actions queue frames and close connections through it
//! without knowing the transport. A close carries a [`CloseReason`]; the transport
//! (`ws::close`) decides which close code and text the client sees.
//!
//! Everything a client receives (replies, broadcasts, presence) goes through one
//! [`Outbox`], drained by the connection's writer ([`OutboxQueue`]), so frames
//! leave in the order they were queued. The queue is bounded twice, in frames and in
//! bytes (a few large `joined` frames must not add up to megabytes per client): a client
//! that does not read fills it, and the push that finds it full closes the connection
//! as a slow consumer (4008 on the wire) instead of buffering without limit.
//!
//! Per-connection bounds alone let many slow readers together hold
//! (connections x `--outbound-queue-bytes`), so every queue also counts its bytes into one
//! [`OutboundBudget`] for the whole server: once the total passes the budget, a push to a
//! queue holding more than [`SLOW_SHARE`] closes that connection as a slow consumer, and
//! past the budget's ceiling (a quarter over it) so does one holding more than
//! [`KEEPING_UP`]: a reader that keeps up, with a few small frames waiting, is not the
//! one to close.
//! A frame counts until the writer has written it, not merely taken it, so a writer stuck
//! on a client that does not read still holds a queue; a reader that keeps up has an
//! empty one, and an empty queue always takes the next frame.
//!
//! The queue is a plain `VecDeque` behind a mutex (held for a push or a pop, never
//! across an await) rather than a channel: a channel keeps every block a burst made it
//! allocate for as long as the connection lives, which made a joined idle connection
//! cost kilobytes; this one gives its storage back whenever the writer has emptied it,
//! so an idle connection's queue holds no memory at all, and a push is one short lock
//! and one wake-up. The wake-up is an `AtomicWaker`, not a `Notify`: the one reader is
//! the connection's task, which polls the queue beside its socket and timer
//! ([`OutboxQueue::poll_recv`]) rather than awaiting it on a task of its own.

use super::Frame;
use futures_util::task::AtomicWaker;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::task::{Context, Poll};
use tokio::sync::Notify;

/// Why a connection closes, as the core sees it: a cause, not a number. The transport
/// turns it into what its clients understand (`ws::close` maps each to the WebSocket
/// close code and reason text of `docs/protocol.md`), so the hub, the outbox and an
/// admin action can close a connection without knowing how it is carried.
///
/// One list for every cause, the transport's own (a broken frame, a binary message)
/// included: a connection has one [`Closer`], and the first cause given wins whoever
/// gives it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CloseReason {
    /// The client said goodbye or went away: nobody is at fault.
    Normal,
    /// The server is shutting down or draining.
    ServerShutdown,
    /// The client broke the transport's own protocol (framing, masking...).
    ProtocolError,
    /// The client sent a kind of data the protocol does not carry (binary).
    Unsupported,
    /// A frame that is not a valid client frame: not UTF-8, not JSON, unknown fields.
    InvalidPayload,
    /// The client kept sending while out of rate budget.
    RateAbuse,
    /// A frame or message over the size limit.
    TooBig,
    /// Something failed on the server's side.
    Internal,
    /// The token expired and was not refreshed.
    TokenExpired,
    /// Nothing heard from the client within the heartbeat timeout.
    HeartbeatTimeout,
    /// An admin revoked or disabled the user.
    Revoked,
    /// The client does not take what is sent to it fast enough: its queue (or the
    /// server's share of queued bytes) overflowed, or writes to it stalled.
    SlowConsumer,
}

impl CloseReason {
    /// Every reason, for tables and tests that must cover them all.
    pub const ALL: [CloseReason; 12] = [
        CloseReason::Normal,
        CloseReason::ServerShutdown,
        CloseReason::ProtocolError,
        CloseReason::Unsupported,
        CloseReason::InvalidPayload,
        CloseReason::RateAbuse,
        CloseReason::TooBig,
        CloseReason::Internal,
        CloseReason::TokenExpired,
        CloseReason::HeartbeatTimeout,
        CloseReason::Revoked,
        CloseReason::SlowConsumer,
    ];
}

/// Tells a connection to close, with the first reason given.
///
/// Built on `Notify` rather than a cancellation token: the writer polls it once per
/// frame, and a token's check takes a lock where this is one atomic load.
#[derive(Clone, Debug, Default)]
pub struct Closer(Arc<CloserInner>);

#[derive(Debug, Default)]
struct CloserInner {
    reason: OnceLock<CloseReason>,
    notify: Notify,
}

impl Closer {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn close(&self, reason: CloseReason) {
        if self.0.reason.set(reason).is_ok() {
            self.0.notify.notify_waiters();
        }
    }

    pub fn is_closed(&self) -> bool {
        self.0.reason.get().is_some()
    }

    /// Resolves when the connection must close.
    pub async fn closed(&self) {
        loop {
            let notified = self.0.notify.notified();
            tokio::pin!(notified);
            // Register before checking, so a close in between is not missed.
            notified.as_mut().enable();
            if self.is_closed() {
                return;
            }
            notified.await;
        }
    }

    /// The reason to close with ([`CloseReason::Normal`] if none was given yet).
    pub fn reason(&self) -> CloseReason {
        self.0.reason.get().copied().unwrap_or(CloseReason::Normal)
    }
}

/// Past the server-wide budget, a queue holding more than this is the slow consumer to
/// close: room for one full reply (`--replay-max-bytes`' default), which a reader that
/// keeps up never has waiting for long.
pub(crate) const SLOW_SHARE: usize = 256 * 1024;

/// Past the budget's ceiling, what a queue may still hold: a few full-size messages, the
/// most a reader that keeps up has waiting in a busy room. Closing every queue with
/// anything waiting would close such readers too, whenever slow ones fill the budget.
pub(crate) const KEEPING_UP: usize = 32 * 1024;

/// The bytes waiting in every connection's outbound queue together, and their bound.
#[derive(Debug)]
pub struct OutboundBudget {
    queued: AtomicUsize,
    limit: usize,
    ceiling: usize,
}

impl OutboundBudget {
    /// A budget of `limit` bytes; queues are cut from there, and past a quarter more even
    /// small ones are, so the total stays within that ceiling plus at most one frame and
    /// [`KEEPING_UP`] per connection (what an empty queue always takes, what a reader
    /// that keeps up may hold).
    pub fn new(limit: usize) -> Arc<Self> {
        Arc::new(Self {
            queued: AtomicUsize::new(0),
            limit,
            ceiling: limit.saturating_add(limit / 4),
        })
    }

    /// Bytes queued right now, over all connections.
    pub fn queued(&self) -> usize {
        self.queued.load(Ordering::Acquire)
    }

    /// Whether a queue (with frames waiting already) that now holds `after` bytes, with
    /// `total` queued in all, must be closed to keep the server within its budget.
    fn refuses(&self, after: usize, total: usize) -> bool {
        total > self.limit && (after > SLOW_SHARE || (total > self.ceiling && after > KEEPING_UP))
    }
}

/// One connection's queued bytes, counted into the server's budget too. Shared by the
/// [`Outbox`] handles and the [`OutboxQueue`]; when the last of them goes, so do the
/// frames still queued, and this gives their bytes back to the budget: whatever ends a
/// connection, nothing it counted can stay counted.
#[derive(Debug)]
struct Queued {
    bytes: AtomicUsize,
    budget: Arc<OutboundBudget>,
}

impl Queued {
    /// Counts `len` more bytes if this queue may take them: always when it is empty (its
    /// reader keeps up), otherwise within its own bound and the server's budget. The
    /// server's total is updated only for a frame that is taken (compare-and-swap, not
    /// add-then-undo), so a refused frame never counts, not even for a moment, and a
    /// refusal elsewhere cannot make a reader that keeps up look over the ceiling.
    fn admit(&self, len: usize, max_bytes: usize) -> bool {
        let before = self.bytes.fetch_add(len, Ordering::AcqRel);
        let after = before.saturating_add(len);
        let budget = &self.budget;
        let admitted = (before == 0 || after <= max_bytes)
            && budget
                .queued
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |total| {
                    let total = total.saturating_add(len);
                    (before == 0 || !budget.refuses(after, total)).then_some(total)
                })
                .is_ok();
        if !admitted {
            self.bytes.fetch_sub(len, Ordering::AcqRel);
        }
        admitted
    }

    fn sub(&self, len: usize) {
        self.bytes.fetch_sub(len, Ordering::AcqRel);
        self.budget.queued.fetch_sub(len, Ordering::AcqRel);
    }
}

impl Drop for Queued {
    fn drop(&mut self) {
        let left = *self.bytes.get_mut();
        self.budget.queued.fetch_sub(left, Ordering::AcqRel);
    }
}

/// What an [`Outbox`] and its [`OutboxQueue`] share.
#[derive(Debug)]
struct Shared {
    frames: Mutex<Frames>,
    /// Wakes the writer: a frame was queued, or the last outbox went.
    ready: AtomicWaker,
    /// A reply to the client's own request is waiting (see [`Outbox::push_reply`]).
    urgent: AtomicBool,
    /// 0, or the writer is gathering a batch until a deadline of its own and a push wakes
    /// it only for a reply or once this many frames wait (see [`OutboxQueue::gather`]).
    wake_at: AtomicUsize,
    /// Live [`Outbox`] handles; at zero the writer's queue ends once drained.
    outboxes: AtomicUsize,
    queued: Queued,
    max_frames: usize,
    max_bytes: usize,
}

#[derive(Debug, Default)]
struct Frames {
    queue: VecDeque<Frame>,
    /// Set once the writer discarded the queue: pushes are refused from then on.
    closed: bool,
}

impl Shared {
    fn frames(&self) -> std::sync::MutexGuard<'_, Frames> {
        // A panic while holding this lock leaves a queue that is still consistent (one
        // push or pop either happened or not): keep using it rather than panic again.
        self.frames.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The producers' end of a connection's queue: the session and every room it is in.
#[derive(Debug)]
pub struct Outbox {
    shared: Arc<Shared>,
    closer: Closer,
}

impl Clone for Outbox {
    fn clone(&self) -> Self {
        self.shared.outboxes.fetch_add(1, Ordering::Relaxed);
        Self {
            shared: Arc::clone(&self.shared),
            closer: self.closer.clone(),
        }
    }
}

impl Drop for Outbox {
    fn drop(&mut self) {
        if self.shared.outboxes.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.shared.ready.wake();
        }
    }
}

/// The writer's end of an [`Outbox`].
pub struct OutboxQueue {
    shared: Arc<Shared>,
    /// Bytes taken by the writer and not yet written: they still count as queued, so a
    /// writer stuck on a client that does not read never looks like an empty queue.
    taken: usize,
}

impl Outbox {
    /// A queue of at most `max_frames` frames and `max_bytes` bytes (one frame larger
    /// than that still fits an empty queue), counted into the server's `budget`.
    pub fn new(
        max_frames: usize,
        max_bytes: usize,
        closer: Closer,
        budget: &Arc<OutboundBudget>,
    ) -> (Self, OutboxQueue) {
        let shared = Arc::new(Shared {
            frames: Mutex::default(),
            ready: AtomicWaker::new(),
            urgent: AtomicBool::new(false),
            wake_at: AtomicUsize::new(0),
            outboxes: AtomicUsize::new(1),
            queued: Queued {
                bytes: AtomicUsize::new(0),
                budget: Arc::clone(budget),
            },
            max_frames: max_frames.max(1),
            max_bytes,
        });
        let queue = OutboxQueue {
            shared: Arc::clone(&shared),
            taken: 0,
        };
        (Self { shared, closer }, queue)
    }

    /// Queues a frame; false (and the connection closing as a slow consumer) if the queue
    /// is full or holds more than its share of a server whose queues are over budget.
    pub fn push(&self, frame: Frame) -> bool {
        let shared = &self.shared;
        let len = frame.len();
        if !shared.queued.admit(len, shared.max_bytes) {
            self.closer.close(CloseReason::SlowConsumer);
            return false;
        }
        // Ok(frames now queued) or Err(whether the queue was full).
        let queued = {
            let mut frames = shared.frames();
            if frames.closed {
                Err(false)
            } else if frames.queue.len() >= shared.max_frames {
                Err(true)
            } else {
                frames.queue.push_back(frame);
                Ok(frames.queue.len())
            }
        };
        match queued {
            Ok(frames) => {
                // A writer gathering a batch reads the queue when its wait ends: waking
                // it for every frame would cost a task poll per delivery, the very
                // cost gathering is there to save.
                let wake_at = shared.wake_at.load(Ordering::Acquire);
                if frames >= wake_at || shared.urgent.load(Ordering::Acquire) {
                    shared.ready.wake();
                }
                true
            }
            Err(full) => {
                shared.queued.sub(len);
                if full {
                    self.closer.close(CloseReason::SlowConsumer);
                }
                false
            }
        }
    }

    /// Queues a reply to the client's own request: the writer sends it without waiting
    /// to gather more, so request and answer stay snappy on a busy connection.
    pub fn push_reply(&self, frame: Frame) -> bool {
        self.shared.urgent.store(true, Ordering::Release);
        self.push(frame)
    }

    pub fn closer(&self) -> &Closer {
        &self.closer
    }
}

impl OutboxQueue {
    /// The next frame, waiting for one; `None` once every [`Outbox`] is gone and the
    /// queue is drained, or once it was discarded.
    pub async fn recv(&mut self) -> Option<Frame> {
        std::future::poll_fn(|cx| self.poll_recv(cx)).await
    }

    /// [`OutboxQueue::recv`] as a poll: `Pending` until a push (or the last outbox
    /// going) wakes the task that polled it last.
    pub fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Option<Frame>> {
        if let Ok(frame) = self.pop() {
            return Poll::Ready(frame);
        }
        self.shared.ready.register(cx.waker());
        // Checked again once registered, so a push in between is not missed.
        match self.pop() {
            Ok(frame) => Poll::Ready(frame),
            Err(()) => Poll::Pending,
        }
    }

    /// From now on a push wakes the writer only for a reply or once `frames` frames
    /// wait (at least one): it is gathering a batch and wakes at a deadline of its own.
    /// `None`: every push wakes it again.
    pub fn gather(&self, frames: Option<usize>) {
        let wake_at = frames.map_or(0, |frames| frames.max(1));
        self.shared.wake_at.store(wake_at, Ordering::Release);
    }

    /// Whether a reply was queued since the last call (and clears the mark).
    pub fn take_urgent(&self) -> bool {
        self.shared.urgent.swap(false, Ordering::AcqRel)
    }

    /// The next frame if one is queued already.
    pub fn try_recv(&mut self) -> Option<Frame> {
        self.pop().ok().flatten()
    }

    /// `Ok(Some)`: a frame; `Ok(None)`: the queue has ended; `Err`: empty for now.
    fn pop(&mut self) -> Result<Option<Frame>, ()> {
        let mut frames = self.shared.frames();
        if let Some(frame) = frames.queue.pop_front() {
            self.taken += frame.len();
            return Ok(Some(frame));
        }
        if frames.closed || self.shared.outboxes.load(Ordering::Acquire) == 0 {
            return Ok(None);
        }
        Err(())
    }

    /// The frames taken so far have left (or been dropped): their bytes stop counting.
    /// Once per batch, so the shared count costs one update per batch, not per frame.
    pub fn written(&mut self) {
        self.shared.queued.sub(std::mem::take(&mut self.taken));
    }

    /// The writer has nothing to do: an emptied queue gives its storage back, so an idle
    /// connection holds none. (A writer gathering its next batch keeps it: it is about
    /// to use it again.)
    pub fn idle(&mut self) {
        let mut frames = self.shared.frames();
        if frames.queue.is_empty() && frames.queue.capacity() > 0 {
            frames.queue = VecDeque::new();
        }
    }

    /// Drops every queued frame and refuses new ones, giving their bytes back to the
    /// server's budget now rather than when the session ends, seconds later.
    pub fn discard(&mut self) {
        let dropped = {
            let mut frames = self.shared.frames();
            frames.closed = true;
            std::mem::take(&mut frames.queue)
        };
        self.taken += dropped.iter().map(Frame::len).sum::<usize>();
        drop(dropped);
        self.written();
    }
}

impl Drop for OutboxQueue {
    /// A writer that ends (a broken socket, an abort) frees its queue at once.
    fn drop(&mut self) {
        self.discard();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unbounded() -> Arc<OutboundBudget> {
        OutboundBudget::new(usize::MAX)
    }

    #[test]
    fn an_emptied_queue_gives_its_storage_back_so_an_idle_connection_holds_none() {
        let (outbox, mut queue) = Outbox::new(256, 1 << 20, Closer::new(), &unbounded());
        let capacity = |queue: &OutboxQueue| queue.shared.frames().queue.capacity();
        assert_eq!(
            capacity(&queue),
            0,
            "nothing allocated before the first frame"
        );
        for _ in 0..100 {
            assert!(outbox.push("presence".into()));
        }
        assert!(capacity(&queue) >= 100);
        while queue.try_recv().is_some() {}
        queue.written();
        queue.idle();
        assert_eq!(capacity(&queue), 0, "a burst leaves nothing behind");
    }

    #[tokio::test]
    async fn the_writer_is_woken_by_a_push_and_ends_after_the_last_outbox_goes() {
        let (outbox, mut queue) = Outbox::new(4, 1 << 20, Closer::new(), &unbounded());
        let writer = tokio::spawn(async move {
            let mut got = Vec::new();
            while let Some(frame) = queue.recv().await {
                got.push(frame.as_str().to_owned());
            }
            got
        });
        let room_copy = outbox.clone();
        tokio::task::yield_now().await;
        assert!(outbox.push("one".into()));
        drop(outbox);
        assert!(room_copy.push("two".into()), "a copy keeps the queue open");
        drop(room_copy);
        let got = tokio::time::timeout(std::time::Duration::from_secs(5), writer)
            .await
            .expect("the writer ends once no outbox is left")
            .expect("the writer does not panic");
        assert_eq!(
            got,
            ["one", "two"],
            "what was queued before the end is delivered"
        );
    }

    /// A waker that counts its wakes.
    struct Counter(AtomicUsize);

    impl std::task::Wake for Counter {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }

    #[test]
    fn a_gathering_writer_is_woken_only_by_a_reply_or_the_frames_it_waits_for() {
        let (outbox, mut queue) = Outbox::new(256, 1 << 20, Closer::new(), &unbounded());
        let counter = Arc::new(Counter(AtomicUsize::new(0)));
        let waker = std::task::Waker::from(Arc::clone(&counter));
        let wakes = || counter.0.load(Ordering::Relaxed);
        let mut cx = Context::from_waker(&waker);
        let mut register = |queue: &mut OutboxQueue| {
            assert!(queue.poll_recv(&mut cx).is_pending());
        };

        register(&mut queue);
        queue.gather(Some(3));
        assert!(outbox.push("a".into()) && outbox.push("b".into()));
        assert_eq!(wakes(), 0, "gathering: no wake-up per frame");
        assert!(outbox.push("c".into()));
        assert_eq!(wakes(), 1, "the third frame completes the batch");

        while queue.try_recv().is_some() {}
        register(&mut queue);
        assert!(outbox.push_reply("reply".into()));
        assert_eq!(wakes(), 2, "a reply never waits");

        while queue.try_recv().is_some() {}
        assert!(queue.take_urgent());
        queue.gather(None);
        register(&mut queue);
        assert!(outbox.push("d".into()));
        assert_eq!(wakes(), 3, "not gathering: every frame wakes the writer");
    }

    #[test]
    fn a_full_queue_closes_the_connection_as_a_slow_consumer() {
        let closer = Closer::new();
        let (outbox, _queue) = Outbox::new(2, 1 << 20, closer.clone(), &unbounded());
        assert!(outbox.push("a".into()));
        assert!(outbox.push("b".into()));
        assert!(!closer.is_closed());
        assert!(!outbox.push("c".into()));
        assert!(closer.is_closed());
        assert_eq!(closer.reason(), CloseReason::SlowConsumer);
    }

    #[test]
    fn queued_bytes_are_bounded_too_and_freed_as_the_writer_drains() {
        let closer = Closer::new();
        let (outbox, mut queue) = Outbox::new(100, 10, closer.clone(), &unbounded());
        assert!(
            outbox.push("x".repeat(30).into()),
            "one big frame fits an empty queue"
        );
        assert_eq!(queue.try_recv().map(|f| f.len()), Some(30));
        queue.written();
        assert!(outbox.push("123456".into()));
        assert!(outbox.push("1234".into()));
        assert!(!closer.is_closed());
        // Taken by the writer but not written yet (a client not reading), they still count.
        queue.try_recv();
        queue.try_recv();
        assert!(!outbox.push("1".into()));
        assert_eq!(closer.reason(), CloseReason::SlowConsumer);
    }

    #[test]
    fn the_server_wide_count_returns_to_zero_after_pushes_pops_and_dropped_queues() {
        let budget = OutboundBudget::new(1 << 20);
        let (a, mut a_queue) = Outbox::new(100, 1 << 20, Closer::new(), &budget);
        let (b, b_queue) = Outbox::new(100, 1 << 20, Closer::new(), &budget);
        assert!(a.push("12345".into()));
        assert!(a.push("678".into()));
        assert!(b.push("abcdefg".into()));
        assert_eq!(budget.queued(), 15);
        assert_eq!(a_queue.try_recv().map(|f| f.len()), Some(5));
        assert_eq!(budget.queued(), 15, "taken, not written yet");
        a_queue.written();
        assert_eq!(budget.queued(), 10);
        // A writer that ends frees its queue, though the hub still holds the outbox.
        drop(b_queue);
        assert_eq!(budget.queued(), 3);
        assert!(!b.push("refused, nobody drains it".into()));
        assert_eq!(budget.queued(), 3);
        // A slow consumer's writer discards what is left.
        a_queue.discard();
        assert_eq!(budget.queued(), 0);
        assert!(!a.push("refused too".into()));
        drop((a, a_queue, b));
        assert_eq!(budget.queued(), 0);
    }

    #[test]
    fn over_the_server_budget_the_big_queue_is_closed_and_a_keeping_up_one_is_not() {
        let budget = OutboundBudget::new(SLOW_SHARE);
        let big_closer = Closer::new();
        let (big, _big_queue) = Outbox::new(100, usize::MAX, big_closer.clone(), &budget);
        let (small, mut small_queue) = Outbox::new(100, usize::MAX, Closer::new(), &budget);
        let chunk = || Frame::from("x".repeat(SLOW_SHARE / 2));
        assert!(big.push(chunk()));
        assert!(big.push(chunk()));
        assert!(small.push("live".into()), "within budget");
        // Over budget: the queue past its share goes, the small one still gets frames.
        assert!(!big.push(chunk()));
        assert_eq!(big_closer.reason(), CloseReason::SlowConsumer);
        assert!(small.push("live".into()));
        // An empty queue takes a frame whatever the total: its reader keeps up.
        small_queue.try_recv();
        small_queue.try_recv();
        small_queue.written();
        assert!(small.push(chunk()));
        // Past the ceiling a queue holding a few small frames still takes more (a reader
        // that keeps up), but one holding more than that is refused.
        assert!(budget.queued() > SLOW_SHARE + SLOW_SHARE / 4);
        let closer = Closer::new();
        let (third, _third_queue) = Outbox::new(100, usize::MAX, closer.clone(), &budget);
        assert!(third.push("a".into()));
        assert!(third.push("b".into()));
        assert!(!closer.is_closed());
        assert!(!third.push("x".repeat(KEEPING_UP).into()));
        assert_eq!(closer.reason(), CloseReason::SlowConsumer);
    }

    #[tokio::test]
    async fn the_first_close_reason_wins_and_wakes_a_waiter() {
        let closer = Closer::new();
        let waiter = tokio::spawn({
            let closer = closer.clone();
            async move { closer.closed().await }
        });
        tokio::task::yield_now().await;
        closer.close(CloseReason::TooBig);
        closer.close(CloseReason::Normal);
        waiter.await.unwrap();
        assert_eq!(closer.reason(), CloseReason::TooBig);
        // A wait that starts after the close returns at once.
        closer.closed().await;
    }
}
