//! The frame limit and the body rule agree: a `send` whose body is within the body rule
//! (2000 characters of any kind) always fits in a frame, however its JSON is escaped, and
//! the limit `welcome` advertises is the one enforced (one byte more closes with 1009).

use crate::helpers::{Client, TestApp, bearer, spawn_app};
use serde_json::{Value, json};

/// Connects and returns the client with its `welcome` frame.
async fn welcomed(app: &TestApp, name: &str) -> (Client, Value) {
    let mut client = app
        .try_connect(&[bearer(&app.token(name))], "")
        .await
        .expect("accepted");
    let welcome = client.recv().await;
    assert_eq!(welcome["type"], "welcome");
    (client, welcome)
}

fn advertised_limit(welcome: &Value) -> usize {
    welcome["limits"]["max_message_bytes"].as_u64().unwrap() as usize
}

/// A `send` frame whose body is written with `\uXXXX` escapes only, as ASCII-only
/// encoders do (characters outside the BMP become surrogate pairs: 12 bytes each).
fn ascii_escaped_send(room: &str, body: &str, nonce: char) -> String {
    let escaped: String = body
        .encode_utf16()
        .map(|unit| format!("\\u{unit:04x}"))
        .collect();
    format!(
        r#"{{"type":"send","room":"{room}","body":"{escaped}","nonce":"{}"}}"#,
        nonce.to_string().repeat(64)
    )
}

#[tokio::test]
async fn bodies_of_2000_multibyte_characters_are_acked_not_closed_with_1009() {
    let app = spawn_app().await;
    let (mut alice, welcome) = welcomed(&app, "alice").await;
    let limit = advertised_limit(&welcome);
    alice.send(json!({"type":"join","room":"general"})).await;
    alice.recv_type("joined").await;
    let bodies = [
        "€".repeat(2000),
        "😀".repeat(2000),
        "漢".repeat(1400),
        "字".repeat(2000),
    ];
    let mut frames: Vec<String> = bodies
        .iter()
        .map(|body| json!({"type":"send","room":"general","body":body}).to_string())
        .collect();
    frames.push(ascii_escaped_send("general", &"😀".repeat(2000), 'a'));
    frames.push(ascii_escaped_send("general", &"\"".repeat(2000), 'b'));
    for (i, frame) in frames.iter().enumerate() {
        assert!(
            frame.len() > 4096,
            "frame {i} would not have tested anything"
        );
        alice.send_text(frame).await;
        let ack = alice.recv_type_skipping_messages("ack").await;
        assert_eq!(
            ack["seq"],
            i + 1,
            "frame {i} of {} bytes: {ack}",
            frame.len()
        );
        assert!(frame.len() <= limit, "frame {i}: {} > {limit}", frame.len());
    }
}

#[tokio::test]
async fn a_frame_one_byte_over_the_advertised_limit_closes_with_1009() {
    let app = spawn_app().await;
    let (mut alice, welcome) = welcomed(&app, "alice").await;
    let limit = advertised_limit(&welcome);
    let head = r#"{"type":"join","id":1,"room":"general"}"#;
    let exactly = format!("{head}{}", " ".repeat(limit - head.len()));
    alice.send_text(&exactly).await;
    assert_eq!(alice.recv().await["type"], "joined");
    let over = format!("{exactly} ");
    assert_eq!(over.len(), limit + 1);
    alice.send_text(&over).await;
    assert_eq!(alice.expect_close().await, 1009);
}
