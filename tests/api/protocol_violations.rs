//! Frames that break the contract close the connection with the documented code; floods
//! are refused frame by frame, then closed.

use crate::helpers::{TestApp, spawn_app, spawn_app_with};
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

/// A server whose frame limit is 4096 bytes: bodies of at most 256 characters need no more.
async fn app_with_4096_byte_frames() -> TestApp {
    spawn_app_with(|s| {
        s.limits.max_message_bytes = 4096;
        s.limits.max_body_chars = 256;
    })
    .await
}

#[tokio::test]
async fn a_frame_over_4096_bytes_closes_with_1009() {
    let app = app_with_4096_byte_frames().await;
    let mut alice = app.connect("alice").await;
    let padding = " ".repeat(4097 - r#"{"type":"typing","room":"general"}"#.len());
    let frame = format!(r#"{{"type":"typing","room":"general"}}{padding}"#);
    assert_eq!(frame.len(), 4097);
    alice.send_text(&frame).await;
    assert_eq!(alice.expect_close().await, 1009);
}

#[tokio::test]
async fn a_frame_of_exactly_4096_bytes_is_accepted() {
    let app = app_with_4096_byte_frames().await;
    let mut alice = app.connect("alice").await;
    let head = r#"{"type":"join","id":1,"room":"general"}"#;
    let frame = format!("{head}{}", " ".repeat(4096 - head.len()));
    assert_eq!(frame.len(), 4096);
    alice.send_text(&frame).await;
    assert_eq!(alice.recv().await["type"], "joined");
}

#[tokio::test]
async fn a_huge_frame_is_refused_from_its_header_with_1009() {
    let app = spawn_app().await;
    let mut alice = app.connect("alice").await;
    alice.send_text(&"x".repeat(1 << 20)).await;
    assert_eq!(alice.expect_close().await, 1009);
}

#[tokio::test]
async fn a_binary_frame_closes_with_1003() {
    let app = spawn_app().await;
    let mut alice = app.connect("alice").await;
    alice.send_raw(Message::binary(vec![1, 2, 3])).await;
    assert_eq!(alice.expect_close().await, 1003);
}

#[tokio::test]
async fn schema_violations_close_with_1007() {
    let app = spawn_app().await;
    for bad in [
        "not json".to_owned(),
        "[1,2]".to_owned(),
        json!({"room":"general"}).to_string(),
        json!({"type":"dance","room":"general"}).to_string(),
        json!({"type":"join","room":"general","colour":"red"}).to_string(),
        json!({"type":"join"}).to_string(),
        json!({"type":"send","room":"general","body":42}).to_string(),
        json!({"type":"join","id":"one","room":"general"}).to_string(),
    ] {
        let mut alice = app.connect("alice").await;
        alice.send_text(&bad).await;
        assert_eq!(alice.expect_close().await, 1007, "{bad}");
    }
}

#[tokio::test]
async fn a_flood_is_refused_with_retry_after_then_closed_with_1008_and_nothing_over_budget_is_stored()
 {
    let app = spawn_app().await;
    let (mut alice, _) = app.join("alice", "general").await;
    // The join spent one token of the burst of 10; 40 sends go out back to back.
    for i in 0..40 {
        alice
            .send(json!({"type":"send","id":i,"room":"general","body":format!("m{i}")}))
            .await;
    }
    let (frames, code) = alice.frames_until_close().await;
    assert_eq!(code, 1008);
    let refusals: Vec<_> = frames
        .iter()
        .filter(|f| f["code"] == "rate_limited")
        .collect();
    assert_eq!(refusals.len(), 10, "the tenth refusal within 10 s closes");
    for refusal in &refusals {
        assert!(
            refusal["retry_after_ms"].as_u64().is_some_and(|ms| ms > 0),
            "{refusal}"
        );
        assert!(refusal["id"].is_u64());
    }
    let acked: Vec<u64> = frames
        .iter()
        .filter(|f| f["type"] == "ack")
        .map(|f| f["seq"].as_u64().unwrap())
        .collect();
    // The burst (less the join) plus what refilled at 5/s while the flood went on.
    assert!(
        (9..20).contains(&acked.len()),
        "only the budget is acted on: {acked:?}"
    );

    // What is in the room is exactly what was acked.
    let (_bob, joined) = app.join("bob", "general").await;
    let stored: Vec<u64> = joined["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(stored, acked);
}

#[tokio::test]
async fn a_message_over_4096_bytes_in_small_fragments_closes_with_1009() {
    use tokio_tungstenite::tungstenite::protocol::frame::Frame;
    use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
    let app = app_with_4096_byte_frames().await;
    let mut alice = app.connect("alice").await;
    let chunk = " ".repeat(2000);
    alice
        .send_raw(Message::Frame(Frame::message(
            format!(r#"{{"type":"typing","room":"general"}}{chunk}"#),
            OpCode::Data(Data::Text),
            false,
        )))
        .await;
    for last in [false, true] {
        alice
            .send_raw(Message::Frame(Frame::message(
                chunk.clone(),
                OpCode::Data(Data::Continue),
                last,
            )))
            .await;
    }
    assert_eq!(alice.expect_close().await, 1009);
}

#[tokio::test]
async fn an_oversized_frame_is_refused_from_its_header_before_its_payload_arrives() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let app = spawn_app().await;
    let mut tcp = tokio::net::TcpStream::connect(app.addr).await.unwrap();
    let request = format!(
        "GET /ws?token={} HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
        app.token("alice"),
        app.addr
    );
    tcp.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    while !response.ends_with(b"\r\n\r\n") {
        response.push(tcp.read_u8().await.unwrap());
    }
    assert!(response.starts_with(b"HTTP/1.1 101"));
    // A masked text frame announcing 1 MiB, followed by only a few bytes of it.
    let mut header = vec![0x81, 0x80 | 127];
    header.extend_from_slice(&(1u64 << 20).to_be_bytes());
    header.extend_from_slice(&[1, 2, 3, 4]);
    header.extend_from_slice(b"abcd");
    tcp.write_all(&header).await.unwrap();

    // Read at once: the server closes without waiting for the payload.
    let close_code = raw_close_code(&mut tcp).await;
    assert_eq!(close_code, 1009);
}

/// A WebSocket opened by hand over raw TCP, past its `101` answer, so a test can send
/// frames no well-behaved client library would.
pub(crate) async fn raw_socket(addr: std::net::SocketAddr, token: &str) -> tokio::net::TcpStream {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!(
        "GET /ws?token={token} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    tcp.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    while !response.ends_with(b"\r\n\r\n") {
        response.push(tcp.read_u8().await.unwrap());
    }
    assert!(response.starts_with(b"HTTP/1.1 101"));
    tcp
}

/// Reads server frames until the close frame: its code.
pub(crate) async fn raw_close_code(tcp: &mut tokio::net::TcpStream) -> u16 {
    use tokio::io::AsyncReadExt;
    tokio::time::timeout(crate::helpers::WAIT, async {
        loop {
            let first = tcp.read_u8().await.unwrap();
            let len = match tcp.read_u8().await.unwrap() & 0x7f {
                126 => u64::from(tcp.read_u16().await.unwrap()),
                127 => tcp.read_u64().await.unwrap(),
                n => u64::from(n),
            };
            let mut payload = vec![0; len as usize];
            tcp.read_exact(&mut payload).await.unwrap();
            if first & 0x0f == 0x8 {
                return u16::from_be_bytes([payload[0], payload[1]]);
            }
        }
    })
    .await
    .expect("the server closes in time")
}

/// A final client frame with this first byte (FIN, opcode) and payload, masked or not.
pub(crate) fn raw_frame(first: u8, payload: &[u8], masked: bool) -> Vec<u8> {
    let mask = [0x11, 0x22, 0x33, 0x44];
    let mut frame = vec![first, u8::try_from(payload.len()).unwrap()];
    if masked {
        frame[1] |= 0x80;
        frame.extend_from_slice(&mask);
        frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    } else {
        frame.extend_from_slice(payload);
    }
    frame
}

#[tokio::test]
async fn invalid_utf8_in_a_text_frame_closes_with_1007() {
    let app = spawn_app().await;
    let mut tcp = raw_socket(app.addr, &app.token("alice")).await;
    let bad_text = raw_frame(0x81, &[b'{', 0xff, 0xfe, b'}'], true);
    tokio::io::AsyncWriteExt::write_all(&mut tcp, &bad_text)
        .await
        .unwrap();
    assert_eq!(raw_close_code(&mut tcp).await, 1007);
}

#[tokio::test]
async fn websocket_protocol_violations_close_with_1002() {
    let app = spawn_app().await;
    for (what, frame) in [
        ("an unmasked frame", raw_frame(0x81, b"{}", false)),
        ("a reserved data opcode", raw_frame(0x83, b"{}", true)),
        ("a reserved control opcode", raw_frame(0x8b, b"", true)),
        ("a reserved bit set", raw_frame(0xc1, b"{}", true)),
        (
            "a continuation with nothing to continue",
            raw_frame(0x80, b"{}", true),
        ),
    ] {
        let mut tcp = raw_socket(app.addr, &app.token("alice")).await;
        tokio::io::AsyncWriteExt::write_all(&mut tcp, &frame)
            .await
            .unwrap();
        assert_eq!(raw_close_code(&mut tcp).await, 1002, "{what}");
    }
}
