//! The batching under a WebSocket, with nothing held between batches.
//!
//! tungstenite batches writes in its own buffer, but that buffer keeps the capacity of
//! the largest batch it ever held, for the life of the connection: at tens of thousands
//! of idle connections it was the biggest thing each one kept (a `joined` frame listing
//! its members, once, is enough). So tungstenite is told to write every frame straight
//! through (`write_buffer_size` 0), and this adapter under it gathers the frames of a
//! batch until the writer's flush, writes them out in one go (one syscall per batch,
//! as before) and gives its storage back, so an idle connection holds no write buffer.
//!
//! The writer's data frames do not go through tungstenite at all: building a `Message`,
//! then a frame, then copying it into tungstenite's buffer and from there into this one
//! was most of the user-space cost of a delivered frame, for bytes that are only a
//! header and the payload (a server's frames are not masked). [`BatchedIo::poll_push_frame`]
//! appends them here directly. The two ways in can share this buffer because both add
//! whole frames only: a write is taken whole or not at all, so neither this buffer nor
//! tungstenite's ever holds part of a frame that another could land in the middle of.

use crate::outgoing::Outgoing;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tungstenite::protocol::frame::coding::{Data, OpCode};

/// The most a batch holds before it is written out: one that reaches it is written out
/// before it takes more, so one burst, or a client that does not read, cannot grow it
/// without end. The write that reaches it is taken whole, so a batch may pass it by one
/// write (a frame of the writer's, at most a fragment, or a few of tungstenite's
/// control frames).
pub(crate) const WRITE_OUT_AT_BYTES: usize = 64 * 1024;

/// The longest header of a server's frame: two bytes and an eight-byte length (no mask).
const MAX_HEADER_BYTES: usize = 10;

/// The header of a server's frame (RFC 6455 §5.2): FIN and opcode, then the payload's
/// length in the shortest form that holds it, and no mask. The bytes used are the first
/// `.1`.
fn frame_header(fin: bool, opcode: Data, len: usize) -> ([u8; MAX_HEADER_BYTES], usize) {
    let mut header = [0; MAX_HEADER_BYTES];
    header[0] = u8::from(fin) << 7 | (u8::from(OpCode::Data(opcode)) & 0x0f);
    let used = if let Ok(short @ 0..=125) = u8::try_from(len) {
        header[1] = short;
        2
    } else if let Ok(medium) = u16::try_from(len) {
        header[1] = 126;
        header[2..4].copy_from_slice(&medium.to_be_bytes());
        4
    } else {
        // The writer's frames are a fragment at most: never this long, but not wrong.
        header[1] = 127;
        let long = u64::try_from(len).unwrap_or(u64::MAX);
        header[2..10].copy_from_slice(&long.to_be_bytes());
        10
    };
    (header, used)
}

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

    /// Makes room for one more write: a batch that reached its bound is written out
    /// first. `Pending` while it cannot be, and then nothing may be added.
    fn poll_room(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.buffer.len() >= WRITE_OUT_AT_BYTES {
            ready!(self.poll_write_out(cx))?;
        }
        Poll::Ready(Ok(()))
    }

    /// Adds one data frame (`opcode` `Text` or `Continue`), header and payload, to the
    /// batch, on the same terms as a write: whole, or not at all while a full batch
    /// cannot be written out. Nothing checks that the WebSocket may still send data (it
    /// may not once a close frame has gone): that is the caller's to know.
    pub(crate) fn poll_push_frame(
        &mut self,
        cx: &mut Context<'_>,
        fin: bool,
        opcode: Data,
        payload: &[u8],
    ) -> Poll<io::Result<()>> {
        ready!(self.poll_room(cx))?;
        let (header, used) = frame_header(fin, opcode, payload.len());
        self.buffer.extend(&header[..used]);
        self.buffer.extend(payload);
        Poll::Ready(Ok(()))
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
        // All or nothing: tungstenite writes whole frames (its buffer, which holds
        // whole frames, in one write), and a write cut at the bound would leave part of
        // a frame in its buffer, for a frame pushed here meanwhile to land in the middle
        // of. What cannot be taken waits in tungstenite's buffer, which has its own
        // bound, so a client that does not read holds both at most.
        ready!(self.poll_room(cx))?;
        self.buffer.extend(buf);
        Poll::Ready(Ok(buf.len()))
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
    fn a_write_is_taken_whole_past_the_bound_and_a_full_batch_is_written_out_before_it_takes_more()
    {
        let mut io = BatchedIo::new(Inner {
            blocked: true,
            ..Inner::default()
        });
        let big = vec![b'x'; WRITE_OUT_AT_BYTES];
        assert!(matches!(write(&mut io, &big[..10]), Poll::Ready(Ok(10))));
        assert!(
            matches!(write(&mut io, &big), Poll::Ready(Ok(n)) if n == big.len()),
            "taken whole, though it passes the bound"
        );
        assert!(
            write(&mut io, b"more").is_pending(),
            "nothing taken past it"
        );
        assert!(push(&mut io, true, Data::Text, b"more").is_pending());
        assert_eq!(io.buffer.len(), 10 + WRITE_OUT_AT_BYTES);
        io.inner.blocked = false;
        assert!(matches!(write(&mut io, b"more"), Poll::Ready(Ok(4))));
        assert_eq!(io.inner.writes.concat().len(), 10 + WRITE_OUT_AT_BYTES);
        assert_eq!(io.buffer.held(), b"more");
    }

    fn push(
        io: &mut BatchedIo<Inner>,
        fin: bool,
        opcode: Data,
        payload: &[u8],
    ) -> Poll<io::Result<()>> {
        io.poll_push_frame(
            &mut Context::from_waker(Waker::noop()),
            fin,
            opcode,
            payload,
        )
    }

    /// The bytes tungstenite itself writes for this frame as a server.
    fn tungstenite_frame(fin: bool, opcode: Data, payload: &[u8]) -> Vec<u8> {
        let frame = tungstenite::protocol::frame::Frame::message(
            payload.to_vec(),
            OpCode::Data(opcode),
            fin,
        );
        let mut bytes = Vec::new();
        frame.format(&mut bytes).expect("a Vec takes every write");
        bytes
    }

    #[test]
    fn a_pushed_frame_is_byte_for_byte_the_frame_tungstenite_would_write() {
        for len in [0, 1, 125, 126, 512, 65_535, 65_536] {
            for (fin, opcode) in [
                (true, Data::Text),
                (false, Data::Text),
                (false, Data::Continue),
                (true, Data::Continue),
            ] {
                let payload: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
                let mut io = BatchedIo::new(Inner::default());
                assert!(matches!(
                    push(&mut io, fin, opcode, &payload),
                    Poll::Ready(Ok(()))
                ));
                assert!(
                    io.buffer.held() == tungstenite_frame(fin, opcode, &payload),
                    "{len} bytes, fin {fin}, {opcode:?}"
                );
            }
        }
    }

    #[test]
    fn pushed_frames_and_written_bytes_leave_in_the_order_they_came_in_one_write() {
        let mut io = BatchedIo::new(Inner::default());
        assert!(push(&mut io, false, Data::Text, b"he").is_ready());
        assert!(matches!(write(&mut io, b"\x89\x00"), Poll::Ready(Ok(2))));
        assert!(push(&mut io, true, Data::Continue, b"llo").is_ready());
        assert!(matches!(flush(&mut io), Poll::Ready(Ok(()))));
        assert_eq!(io.inner.writes, [b"\x01\x02he\x89\x00\x80\x03llo".to_vec()]);
        assert_eq!(io.buffer.capacity(), 0);
    }
}
