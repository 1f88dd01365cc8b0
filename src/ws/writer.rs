//! The writer task of a connection: drains its outbox to the socket.
//!
//! It writes everything already queued and flushes once per batch, so a burst of
//! broadcasts costs one flush, not one per frame. It also sends the heartbeat pings and,
//! when the connection must close, the close frame with its code, after what was queued
//! before it (except for a slow consumer, whose queue is the problem).

use super::close::CloseCode;
use super::outbox::{Closer, OutboxQueue};
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use futures_util::SinkExt;
use futures_util::stream::SplitSink;
use std::time::Duration;
use tokio::time::{Instant, interval_at, timeout};

/// Most frames written between two flushes.
const MAX_BATCH: usize = 64;

/// How long the final frames and the close frame may take to leave.
pub const CLOSE_GRACE: Duration = Duration::from_secs(3);

type Sink = SplitSink<WebSocket, Message>;

pub async fn run(mut sink: Sink, mut queue: OutboxQueue, closer: Closer, heartbeat: Duration) {
    let mut ping = interval_at(Instant::now() + heartbeat, heartbeat);
    // One wait for the close signal for the whole loop: making a new one per frame
    // registers and unregisters a waiter each time, on the hottest path there is.
    let closed = closer.closed();
    tokio::pin!(closed);
    loop {
        tokio::select! {
            biased;
            () = &mut closed => break,
            frame = queue.recv() => {
                let Some(frame) = frame else { break };
                tokio::select! {
                    biased;
                    () = &mut closed => break,
                    written = write_batch(&mut sink, &mut queue, frame) => {
                        if written.is_err() {
                            closer.close(CloseCode::Normal);
                            return;
                        }
                    }
                }
            }
            _ = ping.tick() => {
                if sink.send(Message::Ping(Default::default())).await.is_err() {
                    closer.close(CloseCode::Normal);
                    return;
                }
            }
        }
    }
    let code = closer.code();
    let farewell = async {
        if code != CloseCode::SlowConsumer {
            while let Some(frame) = queue.try_recv() {
                sink.feed(Message::Text(frame)).await?;
            }
        }
        sink.send(Message::Close(Some(CloseFrame {
            code: code.code(),
            reason: Utf8Bytes::from_static(code.reason()),
        })))
        .await
    };
    let _ = timeout(CLOSE_GRACE, farewell).await;
}

async fn write_batch(
    sink: &mut Sink,
    queue: &mut OutboxQueue,
    first: Utf8Bytes,
) -> Result<(), axum::Error> {
    sink.feed(Message::Text(first)).await?;
    let mut frames = 1;
    while frames < MAX_BATCH {
        let Some(frame) = queue.try_recv() else { break };
        sink.feed(Message::Text(frame)).await?;
        frames += 1;
    }
    sink.flush().await?;
    crate::stats::frames_out(frames);
    Ok(())
}
