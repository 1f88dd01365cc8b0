//! Bytes an IO adapter holds on their way out, written across as many polls as the
//! socket needs.
//!
//! Two adapters keep bytes of their own in front of a connection's socket: the one that
//! completes hyper's bare error answers ([`crate::bare_errors`]) and the one that gathers
//! a WebSocket connection's batch (`ws::batched_io`). Both must write those bytes out
//! whole and in order, a few at a time if the socket takes only a few, before anything
//! else goes through: this is that loop, once.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use tokio::io::AsyncWrite;

/// Bytes to write out, and how many of them have left already.
#[derive(Debug, Default)]
pub(crate) struct Outgoing {
    bytes: Vec<u8>,
    written: usize,
}

impl Outgoing {
    /// Everything held, written or not, until [`Outgoing::poll_write_out`] finishes.
    pub(crate) fn len(&self) -> usize {
        self.bytes.len()
    }

    /// Adds bytes after those held.
    pub(crate) fn extend(&mut self, bytes: &[u8]) {
        self.bytes.extend_from_slice(bytes);
    }

    /// Gives the storage back (nothing may be left to write).
    pub(crate) fn release(&mut self) {
        debug_assert_eq!(
            self.written,
            self.bytes.len(),
            "released with bytes unwritten"
        );
        *self = Self::default();
    }

    /// Writes out what is held to `inner`; once all of it has left, holds nothing (the
    /// storage stays for the next bytes).
    pub(crate) fn poll_write_out<W: AsyncWrite + Unpin>(
        &mut self,
        inner: &mut W,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<()>> {
        while self.written < self.bytes.len() {
            let n = ready!(Pin::new(&mut *inner).poll_write(cx, &self.bytes[self.written..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.written += n;
        }
        self.bytes.clear();
        self.written = 0;
        Poll::Ready(Ok(()))
    }

    /// Everything held, written or not.
    #[cfg(test)]
    pub(crate) fn held(&self) -> &[u8] {
        &self.bytes
    }

    #[cfg(test)]
    pub(crate) fn capacity(&self) -> usize {
        self.bytes.capacity()
    }
}

impl From<Vec<u8>> for Outgoing {
    fn from(bytes: Vec<u8>) -> Self {
        Self { bytes, written: 0 }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::task::Waker;

    /// A socket that takes at most `per_write` bytes a write, and is full every other
    /// poll.
    struct Trickle {
        per_write: usize,
        full: bool,
        took: Vec<u8>,
    }

    impl AsyncWrite for Trickle {
        fn poll_write(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            self.full = !self.full;
            if !self.full {
                return Poll::Pending;
            }
            let n = buf.len().min(self.per_write);
            self.took.extend_from_slice(&buf[..n]);
            Poll::Ready(Ok(n))
        }

        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }

        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    fn trickle(per_write: usize) -> Trickle {
        Trickle {
            per_write,
            full: false,
            took: Vec::new(),
        }
    }

    #[test]
    fn bytes_leave_whole_and_in_order_however_few_the_socket_takes_a_poll() {
        let mut cx = Context::from_waker(Waker::noop());
        let mut socket = trickle(3);
        let mut outgoing = Outgoing::from(b"first ".to_vec());
        outgoing.extend(b"second");
        let mut polls = 0;
        while outgoing.poll_write_out(&mut socket, &mut cx).is_pending() {
            polls += 1;
            assert!(polls < 100, "never finished");
        }
        assert_eq!(socket.took, b"first second");
        assert_eq!(outgoing.len(), 0, "nothing held once written out");
        assert!(outgoing.capacity() > 0, "the storage stays until released");
        outgoing.release();
        assert_eq!(outgoing.capacity(), 0);
    }

    #[test]
    fn a_socket_that_takes_nothing_is_an_error_not_a_loop() {
        let mut cx = Context::from_waker(Waker::noop());
        let mut socket = trickle(0);
        let mut outgoing = Outgoing::from(b"stuck".to_vec());
        let result = loop {
            if let Poll::Ready(result) = outgoing.poll_write_out(&mut socket, &mut cx) {
                break result;
            }
        };
        let error = result.expect_err("a write of zero bytes");
        assert_eq!(error.kind(), io::ErrorKind::WriteZero);
    }
}
