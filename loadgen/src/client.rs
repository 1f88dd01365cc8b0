//! Opening connections and speaking just enough of each protocol.

use crate::{Args, Protocol};
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use std::net::{Ipv4Addr, SocketAddr};
use std::time::{SystemTime, UNIX_EPOCH};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;

pub type Socket = WebSocketStream<TcpStream>;
pub type Sink = SplitSink<Socket, Message>;
pub type Stream = SplitStream<Socket>;

/// Microseconds since the Unix epoch.
pub fn now_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

pub fn server_addr(url: &str) -> SocketAddr {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let host_port = rest.split('/').next().unwrap_or(rest);
    host_port
        .parse()
        .expect("--url must name an IP address and port")
}

fn token(secret: &str, user: usize) -> String {
    let now = now_micros() / 1_000_000;
    let claims = serde_json::json!({
        "sub": format!("loadgen-{user}"), "name": format!("load{user}"),
        "iat": now, "exp": now + 3600,
    });
    jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )
    .expect("token")
}

/// Opens connection number `index` from source address 127.0.0.(1 + index % 4) and, for
/// palisade, joins `room` and waits for `joined`.
pub async fn connect(args: &Args, index: usize, room: &str) -> (Sink, Stream) {
    let url = args.url(index);
    let server = server_addr(url);
    let source = Ipv4Addr::new(127, 0, 0, 1 + (index % 4) as u8);
    let socket = TcpSocket::new_v4().expect("socket");
    socket
        .bind(SocketAddr::from((source, 0)))
        .expect("bind a source address");
    let tcp = socket.connect(server).await.expect("connect to the server");
    tcp.set_nodelay(true).ok();
    let url = match args.protocol {
        Protocol::Palisade => format!("{url}?token={}", token(&args.jwt_secret, index)),
        Protocol::Raw => url.to_owned(),
    };
    let (ws, _) = tokio_tungstenite::client_async(url, tcp)
        .await
        .expect("WebSocket handshake");
    let (mut sink, mut stream) = ws.split();
    if args.protocol == Protocol::Palisade {
        let join = serde_json::json!({"type": "join", "room": room}).to_string();
        sink.send(Message::text(join)).await.expect("send join");
        while let Some(Ok(message)) = stream.next().await {
            if let Message::Text(text) = message
                && text.contains(r#""type":"joined""#)
            {
                break;
            }
        }
    }
    (sink, stream)
}

/// A message carrying its scheduled send time, padded to `bytes`.
pub fn body(scheduled_micros: u64, bytes: usize) -> String {
    let mut body = format!("t={scheduled_micros};");
    while body.len() < bytes {
        body.push('x');
    }
    body
}

/// The frame that sends `body` to `room`.
pub fn send_frame(protocol: Protocol, room: &str, body: &str, id: Option<u64>) -> String {
    match protocol {
        Protocol::Palisade => match id {
            Some(id) => serde_json::json!({"type":"send","id":id,"room":room,"body":body}),
            None => serde_json::json!({"type":"send","room":room,"body":body}),
        }
        .to_string(),
        Protocol::Raw => body.to_owned(),
    }
}

/// The scheduled send time in a delivered message, without a full JSON parse.
pub fn scheduled_time(text: &str) -> Option<u64> {
    let start = text.find("t=")? + 2;
    let end = start + text[start..].find(';')?;
    text[start..end].parse().ok()
}

/// An HTTP answer: its status and headers (lowercase names), no body.
pub struct HttpAnswer {
    pub status: u16,
    pub headers: Vec<(String, String)>,
}

impl HttpAnswer {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find_map(|(key, value)| (key == name).then_some(value.as_str()))
    }
}

/// `POST path` with a JSON body over a fresh HTTP/1.1 connection (closed after the
/// answer): a request per connection costs nothing next to what these requests do.
pub async fn post_json(server: SocketAddr, path: &str, json: &str) -> std::io::Result<HttpAnswer> {
    let mut tcp = TcpStream::connect(server).await?;
    let request = format!(
        "POST {path} HTTP/1.1\r\nHost: {server}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{json}",
        json.len()
    );
    tcp.write_all(request.as_bytes()).await?;
    let mut answer = Vec::new();
    tcp.read_to_end(&mut answer).await?;
    let text = String::from_utf8_lossy(&answer);
    let head = text.split("\r\n\r\n").next().unwrap_or_default();
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|line| line.split_whitespace().nth(1))
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("not an HTTP answer: {head:?}")))?;
    let headers = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(key, value)| (key.trim().to_ascii_lowercase(), value.trim().to_owned()))
        .collect();
    Ok(HttpAnswer { status, headers })
}
