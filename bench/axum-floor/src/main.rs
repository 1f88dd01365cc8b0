//! The floor of what Rust can do: every text frame any client sends is broadcast to every
//! connected client, with nothing else (no auth, validation, limits or history).
//! Usage: `axum-floor 127.0.0.1:9001`.
#![forbid(unsafe_code)]

use axum::Router;
use axum::extract::State;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::response::Response;
use axum::routing::get;
use futures_util::{SinkExt, StreamExt};
use tokio::sync::broadcast;

#[tokio::main]
async fn main() {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:9001".into());
    let (tx, _) = broadcast::channel::<axum::extract::ws::Utf8Bytes>(4096);
    let app = Router::new().route("/ws", get(upgrade)).with_state(tx);
    let listener = tokio::net::TcpListener::bind(&addr).await.expect("bind");
    eprintln!("axum-floor listening on {addr}");
    axum::serve(listener, app).await.expect("serve");
}

async fn upgrade(
    ws: WebSocketUpgrade,
    State(tx): State<broadcast::Sender<axum::extract::ws::Utf8Bytes>>,
) -> Response {
    ws.on_upgrade(move |socket| session(socket, tx))
}

async fn session(socket: WebSocket, tx: broadcast::Sender<axum::extract::ws::Utf8Bytes>) {
    let (mut sink, mut stream) = socket.split();
    let mut rx = tx.subscribe();
    let writer = tokio::spawn(async move {
        loop {
            match rx.recv().await {
                Ok(text) => {
                    if sink.feed(Message::Text(text)).await.is_err() {
                        break;
                    }
                    while let Ok(text) = rx.try_recv() {
                        if sink.feed(Message::Text(text)).await.is_err() {
                            return;
                        }
                    }
                    if sink.flush().await.is_err() {
                        break;
                    }
                }
                Err(broadcast::error::RecvError::Lagged(_)) => continue,
                Err(broadcast::error::RecvError::Closed) => break,
            }
        }
    });
    while let Some(Ok(message)) = stream.next().await {
        if let Message::Text(text) = message {
            let _ = tx.send(text);
        }
    }
    writer.abort();
}
