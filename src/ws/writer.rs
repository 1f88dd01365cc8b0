//! The writer task of a connection: drains its outbox to the socket.
//!
//! It writes everything already queued and flushes once per batch, so a burst of
//! broadcasts costs one flush, not one per frame. While the server is busy
//! ([`ServerLoad`]), a connection that is busy too (it flushed moments ago) waits a few
//! milliseconds (`--coalesce-ms`) to gather more before writing: on a hot room that turns
//! many tiny TCP packets into a few larger ones, which is most of what a delivery costs.
//! A quiet server, a quiet connection (a person chatting) and the answer to a client's
//! own request (`Outbox::push_reply`) get each frame at once: the wait buys CPU only when
//! CPU is short, and costs latency always. It also sends the heartbeat pings and, when
//! the connection must close, the close frame with its code, after what was queued
//! before it (except for a slow consumer, whose queue is the problem).

use super::close::{self, CloseCode};
use crate::hub::Frame;
use crate::hub::outbox::{CloseReason, Closer, OutboxQueue};
use crate::load::ServerLoad;
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use futures_util::SinkExt;
use futures_util::stream::SplitSink;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::{Instant, interval_at, timeout};

/// Most frames written between two flushes.
const MAX_BATCH: usize = 64;

/// A flush this recent makes the connection busy (it receives more than ~25 frames a
/// second): one that is not gets its next frame at once whatever the server's load.
const BUSY_WINDOW: Duration = Duration::from_millis(40);

/// When a busy connection gathers frames before writing.
#[derive(Clone, Debug)]
pub struct Coalescing {
    /// How long it gathers after its last flush (`--coalesce-ms`); zero never waits.
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

type Sink = SplitSink<WebSocket, Message>;

/// Runs until the connection closes; `close_grace` bounds how long the final frames and
/// the close frame may take to leave (`--close-grace-ms`).
pub async fn run(
    mut sink: Sink,
    mut queue: OutboxQueue,
    closer: Closer,
    heartbeat: Duration,
    close_grace: Duration,
    coalescing: Coalescing,
) {
    let mut ping = interval_at(Instant::now() + heartbeat, heartbeat);
    // One wait for the close signal for the whole loop: making a new one per frame
    // registers and unregisters a waiter each time, on the hottest path there is.
    let closed = closer.closed();
    tokio::pin!(closed);
    let mut last_flush: Option<Instant> = None;
    loop {
        tokio::select! {
            biased;
            () = &mut closed => break,
            frame = queue.recv() => {
                let Some(frame) = frame else { break };
                let linger_until = coalescing.linger_until(last_flush, Instant::now());
                tokio::select! {
                    biased;
                    () = &mut closed => break,
                    written = write_batch(&mut sink, &mut queue, frame, linger_until) => {
                        last_flush = Some(Instant::now());
                        if let Err(error) = written {
                            closer.close(close::for_transport_error(&error).0);
                            return;
                        }
                    }
                }
            }
            _ = ping.tick() => {
                // Raced with the close signal like every write: a ping to a client that
                // does not read must not keep the writer (and the socket) past the session.
                tokio::select! {
                    biased;
                    () = &mut closed => break,
                    sent = sink.send(Message::Ping(Default::default())) => {
                        if let Err(error) = sent {
                            closer.close(close::for_transport_error(&error).0);
                            return;
                        }
                    }
                }
            }
        }
    }
    let reason = closer.reason();
    if reason == CloseReason::SlowConsumer {
        // Its queue is the problem: not sent, and its memory given back now.
        queue.discard();
    }
    let code = CloseCode::from(reason);
    let farewell = async {
        while let Some(frame) = queue.try_recv() {
            sink.feed(Message::Text(frame.into_text())).await?;
        }
        sink.send(Message::Close(Some(CloseFrame {
            code: code.code(),
            reason: Utf8Bytes::from_static(code.reason()),
        })))
        .await
    };
    let _ = timeout(close_grace, farewell).await;
}

/// Writes `first` and what follows it, waiting for more until `linger_until` if given.
async fn write_batch(
    sink: &mut Sink,
    queue: &mut OutboxQueue,
    first: Frame,
    linger_until: Option<Instant>,
) -> Result<(), axum::Error> {
    sink.feed(Message::Text(first.into_text())).await?;
    let mut frames = 1;
    // A queued reply to the client's own request ends the wait at once.
    let linger_until = linger_until.filter(|_| !queue.take_urgent());
    while frames < MAX_BATCH {
        let frame = match (queue.try_recv(), linger_until) {
            (Some(frame), _) => frame,
            (None, Some(_)) if queue.take_urgent() => break,
            (None, Some(deadline)) => match tokio::time::timeout_at(deadline, queue.recv()).await {
                Ok(Some(frame)) => frame,
                _ => break,
            },
            (None, None) => break,
        };
        sink.feed(Message::Text(frame.into_text())).await?;
        frames += 1;
    }
    sink.flush().await?;
    queue.written();
    crate::stats::frames_out(frames);
    Ok(())
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
}
