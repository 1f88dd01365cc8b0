//! The writer task of a connection: drains its outbox to the socket.
//!
//! It writes everything already queued and flushes once per batch, so a burst of
//! broadcasts costs one flush, not one per frame. A connection that is busy (it flushed
//! moments ago) waits a few milliseconds to gather more before writing: on a hot room
//! that turns many tiny TCP packets into a few larger ones, which is most of what a
//! delivery costs; a quiet connection (a person chatting) still gets each frame at once,
//! and so does the answer to a client's own request (`Outbox::push_reply`). It also sends the heartbeat pings and,
//! when the connection must close, the close frame with its code, after what was queued
//! before it (except for a slow consumer, whose queue is the problem).

use super::close::{self, CloseCode};
use crate::hub::Frame;
use crate::hub::outbox::{CloseReason, Closer, OutboxQueue};
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use futures_util::SinkExt;
use futures_util::stream::SplitSink;
use std::time::Duration;
use tokio::time::{Instant, interval_at, timeout};

/// Most frames written between two flushes.
const MAX_BATCH: usize = 64;

/// A flush this recent makes the connection busy...
const BUSY_WINDOW: Duration = Duration::from_millis(40);
/// ...and a busy connection gathers frames for this long after its last flush.
const LINGER: Duration = Duration::from_millis(14);

type Sink = SplitSink<WebSocket, Message>;

/// Runs until the connection closes; `close_grace` bounds how long the final frames and
/// the close frame may take to leave (`--close-grace-ms`).
pub async fn run(
    mut sink: Sink,
    mut queue: OutboxQueue,
    closer: Closer,
    heartbeat: Duration,
    close_grace: Duration,
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
                let linger_until = last_flush
                    .filter(|at| at.elapsed() < BUSY_WINDOW)
                    .map(|at| at + LINGER);
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
