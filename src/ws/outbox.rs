//! A connection's bounded outbound queue and its close signal.
//!
//! Everything a client receives (replies, broadcasts, presence) goes through one
//! [`Outbox`], drained by the connection's writer task ([`OutboxQueue`]), so frames
//! leave in the order they were queued. The queue is bounded twice, in frames and in
//! bytes (a few large `joined` frames must not add up to megabytes per client): a client
//! that does not read fills it, and the push that finds it full closes the connection
//! with 4008 instead of buffering without limit.

use super::close::CloseCode;
use axum::extract::ws::Utf8Bytes;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::{Notify, mpsc};

/// Tells a connection to close, with the first code given.
///
/// Built on `Notify` rather than a cancellation token: the writer polls it once per
/// frame, and a token's check takes a lock where this is one atomic load.
#[derive(Clone, Debug, Default)]
pub struct Closer(Arc<CloserInner>);

#[derive(Debug, Default)]
struct CloserInner {
    code: OnceLock<CloseCode>,
    notify: Notify,
}

impl Closer {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn close(&self, code: CloseCode) {
        if self.0.code.set(code).is_ok() {
            self.0.notify.notify_waiters();
        }
    }

    pub fn is_closed(&self) -> bool {
        self.0.code.get().is_some()
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

    /// The code to close with (1000 if none was given yet).
    pub fn code(&self) -> CloseCode {
        self.0.code.get().copied().unwrap_or(CloseCode::Normal)
    }
}

#[derive(Clone, Debug)]
pub struct Outbox {
    tx: mpsc::Sender<Utf8Bytes>,
    closer: Closer,
    queued_bytes: Arc<AtomicUsize>,
    urgent: Arc<AtomicBool>,
    max_bytes: usize,
}

/// The writer's end of an [`Outbox`].
pub struct OutboxQueue {
    rx: mpsc::Receiver<Utf8Bytes>,
    queued_bytes: Arc<AtomicUsize>,
    urgent: Arc<AtomicBool>,
}

impl Outbox {
    /// A queue of at most `max_frames` frames and `max_bytes` bytes (one frame larger
    /// than that still fits an empty queue).
    pub fn new(max_frames: usize, max_bytes: usize, closer: Closer) -> (Self, OutboxQueue) {
        let (tx, rx) = mpsc::channel(max_frames.max(1));
        let queued_bytes = Arc::new(AtomicUsize::new(0));
        let urgent = Arc::new(AtomicBool::new(false));
        let outbox = Self {
            tx,
            closer,
            queued_bytes: Arc::clone(&queued_bytes),
            urgent: Arc::clone(&urgent),
            max_bytes,
        };
        (
            outbox,
            OutboxQueue {
                rx,
                queued_bytes,
                urgent,
            },
        )
    }

    /// Queues a frame; false (and the connection closing with 4008) if the queue is full.
    pub fn push(&self, frame: Utf8Bytes) -> bool {
        let len = frame.len();
        let before = self.queued_bytes.fetch_add(len, Ordering::AcqRel);
        if before > 0 && before + len > self.max_bytes {
            self.queued_bytes.fetch_sub(len, Ordering::AcqRel);
            self.closer.close(CloseCode::SlowConsumer);
            return false;
        }
        match self.tx.try_send(frame) {
            Ok(()) => true,
            Err(error) => {
                self.queued_bytes.fetch_sub(len, Ordering::AcqRel);
                if let TrySendError::Full(_) = error {
                    self.closer.close(CloseCode::SlowConsumer);
                }
                false
            }
        }
    }

    /// Queues a reply to the client's own request: the writer sends it without waiting
    /// to gather more, so request and answer stay snappy on a busy connection.
    pub fn push_reply(&self, frame: Utf8Bytes) -> bool {
        self.urgent.store(true, Ordering::Release);
        self.push(frame)
    }

    pub fn closer(&self) -> &Closer {
        &self.closer
    }
}

impl OutboxQueue {
    /// The next frame, waiting for one; `None` once every [`Outbox`] is gone.
    pub async fn recv(&mut self) -> Option<Utf8Bytes> {
        let frame = self.rx.recv().await?;
        self.queued_bytes.fetch_sub(frame.len(), Ordering::AcqRel);
        Some(frame)
    }

    /// Whether a reply was queued since the last call (and clears the mark).
    pub fn take_urgent(&self) -> bool {
        self.urgent.swap(false, Ordering::AcqRel)
    }

    /// The next frame if one is queued already.
    pub fn try_recv(&mut self) -> Option<Utf8Bytes> {
        let frame = self.rx.try_recv().ok()?;
        self.queued_bytes.fetch_sub(frame.len(), Ordering::AcqRel);
        Some(frame)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_queue_closes_the_connection_with_4008() {
        let closer = Closer::new();
        let (outbox, _queue) = Outbox::new(2, 1 << 20, closer.clone());
        assert!(outbox.push("a".into()));
        assert!(outbox.push("b".into()));
        assert!(!closer.is_closed());
        assert!(!outbox.push("c".into()));
        assert!(closer.is_closed());
        assert_eq!(closer.code(), CloseCode::SlowConsumer);
    }

    #[test]
    fn queued_bytes_are_bounded_too_and_freed_as_the_writer_drains() {
        let closer = Closer::new();
        let (outbox, mut queue) = Outbox::new(100, 10, closer.clone());
        assert!(
            outbox.push("x".repeat(30).into()),
            "one big frame fits an empty queue"
        );
        assert_eq!(queue.try_recv().map(|f| f.len()), Some(30));
        assert!(outbox.push("123456".into()));
        assert!(outbox.push("1234".into()));
        assert!(!closer.is_closed());
        assert!(!outbox.push("1".into()));
        assert_eq!(closer.code(), CloseCode::SlowConsumer);
    }

    #[tokio::test]
    async fn the_first_close_code_wins_and_wakes_a_waiter() {
        let closer = Closer::new();
        let waiter = tokio::spawn({
            let closer = closer.clone();
            async move { closer.closed().await }
        });
        tokio::task::yield_now().await;
        closer.close(CloseCode::TooBig);
        closer.close(CloseCode::Normal);
        waiter.await.unwrap();
        assert_eq!(closer.code(), CloseCode::TooBig);
        // A wait that starts after the close returns at once.
        closer.closed().await;
    }
}
