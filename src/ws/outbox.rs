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
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use tokio::sync::mpsc;
use tokio::sync::mpsc::error::TrySendError;
use tokio_util::sync::CancellationToken;

/// Tells a connection to close, with the first code given (1001 if the whole server
/// is stopping).
#[derive(Clone, Debug)]
pub struct Closer {
    token: CancellationToken,
    code: Arc<OnceLock<CloseCode>>,
}

impl Closer {
    /// `token` is normally a child of the server's shutdown token.
    pub fn new(token: CancellationToken) -> Self {
        Self {
            token,
            code: Arc::new(OnceLock::new()),
        }
    }

    pub fn close(&self, code: CloseCode) {
        let _ = self.code.set(code);
        self.token.cancel();
    }

    pub fn is_closed(&self) -> bool {
        self.token.is_cancelled()
    }

    /// Resolves when the connection must close.
    pub async fn closed(&self) {
        self.token.cancelled().await;
    }

    /// The code to close with: the first one set, or 1001 when the server stopped.
    pub fn code(&self) -> CloseCode {
        self.code.get().copied().unwrap_or(CloseCode::GoingAway)
    }
}

#[derive(Clone, Debug)]
pub struct Outbox {
    tx: mpsc::Sender<Utf8Bytes>,
    closer: Closer,
    queued_bytes: Arc<AtomicUsize>,
    max_bytes: usize,
}

/// The writer's end of an [`Outbox`].
pub struct OutboxQueue {
    rx: mpsc::Receiver<Utf8Bytes>,
    queued_bytes: Arc<AtomicUsize>,
}

impl Outbox {
    /// A queue of at most `max_frames` frames and `max_bytes` bytes (one frame larger
    /// than that still fits an empty queue).
    pub fn new(max_frames: usize, max_bytes: usize, closer: Closer) -> (Self, OutboxQueue) {
        let (tx, rx) = mpsc::channel(max_frames.max(1));
        let queued_bytes = Arc::new(AtomicUsize::new(0));
        let outbox = Self {
            tx,
            closer,
            queued_bytes: Arc::clone(&queued_bytes),
            max_bytes,
        };
        (outbox, OutboxQueue { rx, queued_bytes })
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
        let closer = Closer::new(CancellationToken::new());
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
        let closer = Closer::new(CancellationToken::new());
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

    #[test]
    fn the_first_close_code_wins_and_shutdown_means_1001() {
        let parent = CancellationToken::new();
        let closer = Closer::new(parent.child_token());
        parent.cancel();
        assert!(closer.is_closed());
        assert_eq!(closer.code(), CloseCode::GoingAway);
        let other = Closer::new(CancellationToken::new());
        other.close(CloseCode::TooBig);
        other.close(CloseCode::Normal);
        assert_eq!(other.code(), CloseCode::TooBig);
    }
}
