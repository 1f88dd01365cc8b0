//! The IO under every accepted connection: a write that makes no progress for too long
//! fails with `TimedOut`.
//!
//! A client that sends requests (or pings) and never reads leaves the server's writes
//! waiting on a full socket forever, and whatever waits with them (a hyper connection, a
//! WebSocket writer) holds its socket, task and buffers. Putting the bound here, under
//! TLS and under the WebSocket after an upgrade, bounds every write the server makes,
//! whichever layer makes it.

use std::future::Future;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Sleep;

pub(crate) struct StallIo<I> {
    inner: I,
    limit: Duration,
    /// Runs from the first write that could not go through until one does.
    stalled_since: Option<Pin<Box<Sleep>>>,
}

impl<I> StallIo<I> {
    pub(crate) fn new(inner: I, limit: Duration) -> Self {
        Self {
            inner,
            limit,
            stalled_since: None,
        }
    }

    /// Passes a finished write through and ends any stall; a pending one waits for the
    /// stall deadline, which turns it into an error.
    fn watch<T>(
        &mut self,
        cx: &mut Context<'_>,
        polled: Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>> {
        if let Poll::Ready(result) = polled {
            self.stalled_since = None;
            return Poll::Ready(result);
        }
        let limit = self.limit;
        let deadline = self
            .stalled_since
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
        ready!(deadline.as_mut().poll(cx));
        Poll::Ready(Err(io::Error::new(
            io::ErrorKind::TimedOut,
            "the peer did not take our writes in time",
        )))
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for StallIo<I> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for StallIo<I> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_write(cx, buf);
        this.watch(cx, polled)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        this.watch(cx, polled)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_flush(cx);
        this.watch(cx, polled)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_shutdown(cx);
        this.watch(cx, polled)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    #[tokio::test(start_paused = true)]
    async fn a_write_the_peer_never_takes_fails_after_the_limit() {
        // A pipe whose reader never reads: 16 bytes fit, then writes wait forever.
        let (mut writer, _reader) = tokio::io::duplex(16);
        let mut io = StallIo::new(&mut writer, Duration::from_secs(5));
        io.write_all(&[0; 16]).await.unwrap();
        let started = tokio::time::Instant::now();
        let error = io.write_all(&[0; 1]).await.unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::TimedOut);
        assert_eq!(started.elapsed(), Duration::from_secs(5));
    }

    #[tokio::test(start_paused = true)]
    async fn progress_restarts_the_clock() {
        use tokio::io::AsyncReadExt;
        let (mut writer, mut reader) = tokio::io::duplex(16);
        let mut io = StallIo::new(&mut writer, Duration::from_secs(5));
        io.write_all(&[0; 16]).await.unwrap();
        let drain = async {
            let mut buf = [0; 16];
            for _ in 0..3 {
                tokio::time::sleep(Duration::from_secs(4)).await;
                reader.read_exact(&mut buf[..8]).await.unwrap();
            }
        };
        let (written, ()) = tokio::join!(io.write_all(&[0; 24]), drain);
        written.expect("a slow reader that keeps reading is not cut off");
    }
}
