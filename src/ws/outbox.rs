//! A connection's bounded outbound queue and its close signal.
//!
//! Everything a client receives (replies, broadcasts, presence) goes through one
//! [`Outbox`], drained by the connection's writer task, so frames leave in the order
//! they were queued. The queue is bounded: a client that does not read fills it, and
//! the push that finds it full closes the connection with 4008 instead of buffering
//! without limit.

use super::close::CloseCode;
use axum::extract::ws::Utf8Bytes;
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
}

impl Outbox {
    /// A queue of `capacity` frames and the receiver its writer drains.
    pub fn new(capacity: usize, closer: Closer) -> (Self, mpsc::Receiver<Utf8Bytes>) {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        (Self { tx, closer }, rx)
    }

    /// Queues a frame; false (and the connection closing with 4008) if the queue is full.
    pub fn push(&self, frame: Utf8Bytes) -> bool {
        match self.tx.try_send(frame) {
            Ok(()) => true,
            Err(TrySendError::Full(_)) => {
                self.closer.close(CloseCode::SlowConsumer);
                false
            }
            Err(TrySendError::Closed(_)) => false,
        }
    }

    pub fn closer(&self) -> &Closer {
        &self.closer
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_queue_closes_the_connection_with_4008() {
        let closer = Closer::new(CancellationToken::new());
        let (outbox, _rx) = Outbox::new(2, closer.clone());
        assert!(outbox.push("a".into()));
        assert!(outbox.push("b".into()));
        assert!(!closer.is_closed());
        assert!(!outbox.push("c".into()));
        assert!(closer.is_closed());
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
