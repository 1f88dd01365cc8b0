//! The batching under a WebSocket, with nothing held between batches.
//!
//! tungstenite batches writes in its own buffer, but that buffer keeps the capacity of
//! the largest batch it ever held, for the life of the connection: at tens of thousands
//! of idle connections it was the biggest thing each one kept (a `joined` frame listing
//! its members, once, is enough). So tungstenite is told to write every frame straight
//! through (`write_buffer_size` 0), and this adapter under it gathers the frames of a
//! batch until the writer's flush, writes them out in one go (one syscall per batch,
//! as before) and gives its storage back, so an idle connection holds no write buffer.

use crate::outgoing::Outgoing;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The most a batch holds: one that reaches it is written out before it takes more, so
/// one burst, or a client that does not read, cannot grow it without end.
pub(crate) const WRITE_OUT_AT_BYTES: usize = 64 * 1024;

/// An IO whose writes collect until a flush. Reads pass through.
pub(crate) struct BatchedIo<T> {
    inner: T,
    /// Bytes written to this adapter and not yet to `inner`.
    buffer: Outgoing,
}

impl<T> BatchedIo<T> {
    pub(crate) fn new(inner: T) -> Self {
        Self {
            inner,
            buffer: Outgoing::default(),
        }
    }
}

impl<T: AsyncWrite + Unpin> BatchedIo<T> {
    /// Writes out everything collected; the storage stays for the rest of the batch.
    fn poll_write_out(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.buffer.poll_write_out(&mut self.inner, cx)
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for BatchedIo<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for BatchedIo<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if self.buffer.len() >= WRITE_OUT_AT_BYTES {
            ready!(self.poll_write_out(cx))?;
        }
        // Only up to the bound: what does not fit waits in tungstenite's buffer, which
        // has its own bound, so a client that does not read holds both at most.
        let taken = buf.len().min(WRITE_OUT_AT_BYTES - self.buffer.len());
        self.buffer.extend(&buf[..taken]);
        Poll::Ready(Ok(taken))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_write_out(cx))?;
        // The batch has left: an idle connection keeps no storage for the next one.
        self.buffer.release();
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.as_mut().poll_flush(cx))?;
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::task::Waker;

    /// An inner IO that records each write it takes, or takes none while blocked.
    #[derive(Default)]
    struct Inner {
        blocked: bool,
        writes: Vec<Vec<u8>>,
        flushes: usize,
    }

    impl AsyncWrite for Inner {
        fn poll_write(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            if self.blocked {
                return Poll::Pending;
            }
            self.writes.push(buf.to_vec());
            Poll::Ready(Ok(buf.len()))
        }

        fn poll_flush(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            if self.blocked {
                return Poll::Pending;
            }
            self.flushes += 1;
            Poll::Ready(Ok(()))
        }

        fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            self.poll_flush(cx)
        }
    }

    fn write(io: &mut BatchedIo<Inner>, bytes: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(io).poll_write(&mut Context::from_waker(Waker::noop()), bytes)
    }

    fn flush(io: &mut BatchedIo<Inner>) -> Poll<io::Result<()>> {
        Pin::new(io).poll_flush(&mut Context::from_waker(Waker::noop()))
    }

    #[test]
    fn a_flush_writes_the_whole_batch_in_one_write_and_gives_the_storage_back() {
        let mut io = BatchedIo::new(Inner::default());
        for frame in [&b"one"[..], b"two", b"three"] {
            assert!(matches!(write(&mut io, frame), Poll::Ready(Ok(n)) if n == frame.len()));
        }
        assert!(
            io.inner.writes.is_empty(),
            "nothing leaves before the flush"
        );
        assert!(matches!(flush(&mut io), Poll::Ready(Ok(()))));
        assert_eq!(io.inner.writes, [b"onetwothree".to_vec()]);
        assert_eq!(io.inner.flushes, 1);
        assert_eq!(
            io.buffer.capacity(),
            0,
            "an idle connection holds no buffer"
        );
    }

    #[test]
    fn a_blocked_inner_keeps_the_bytes_until_it_takes_them() {
        let mut io = BatchedIo::new(Inner {
            blocked: true,
            ..Inner::default()
        });
        assert!(write(&mut io, b"kept").is_ready());
        assert!(flush(&mut io).is_pending());
        assert_eq!(io.buffer.held(), b"kept");
        io.inner.blocked = false;
        assert!(matches!(flush(&mut io), Poll::Ready(Ok(()))));
        assert_eq!(io.inner.writes, [b"kept".to_vec()]);
        assert_eq!(io.buffer.capacity(), 0);
    }

    #[test]
    fn a_batch_takes_bytes_up_to_its_bound_and_is_written_out_before_it_takes_more() {
        let mut io = BatchedIo::new(Inner {
            blocked: true,
            ..Inner::default()
        });
        let big = vec![b'x'; WRITE_OUT_AT_BYTES];
        assert!(matches!(write(&mut io, &big[..10]), Poll::Ready(Ok(10))));
        let room = WRITE_OUT_AT_BYTES - 10;
        assert!(
            matches!(write(&mut io, &big), Poll::Ready(Ok(n)) if n == room),
            "taken up to the bound only"
        );
        assert!(write(&mut io, b"more").is_pending(), "held at the bound");
        io.inner.blocked = false;
        assert!(write(&mut io, b"more").is_ready());
        assert_eq!(io.inner.writes, [big]);
        assert_eq!(io.buffer.held(), b"more");
    }
}
