//! A short frame must not buy a huge reply: `joined` and `history` carry at most 256 KiB
//! of messages *(config)* (the newest; `complete:false` / `truncated:true` say some were
//! left out), and a big reply spends frame-budget tokens in proportion to its size, so
//! repeated joins run out of budget long before they have pulled megabytes.

use crate::helpers::{Client, TestApp, WAIT, generous_budget, restart, spawn_app_with};
use futures_util::StreamExt;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

/// The default bound on the messages of one reply.
const REPLY_BOUND: usize = 256 * 1024;
/// What a reply carries besides its messages (type, room, members of a small room).
const ENVELOPE_SLACK: usize = 1024;

/// A server with `count` messages of `body` in `general`, restarted with the default
/// limits (the seeding needed a generous budget).
async fn room_with(count: usize, body: &str) -> TestApp {
    let app = spawn_app_with(generous_budget).await;
    let (mut writer, _) = app.join("writer", "general").await;
    for _ in 0..count {
        writer
            .send(json!({"type":"send","room":"general","body":body}))
            .await;
    }
    for _ in 0..count {
        writer.recv_type_skipping_messages("ack").await;
    }
    drop(writer);
    restart(&app.stop().await).await
}

/// The next text frame, raw, with its size on the wire (pings skipped).
async fn recv_raw(client: &mut Client) -> (usize, Value) {
    loop {
        let message = tokio::time::timeout(WAIT, client.stream.next())
            .await
            .expect("a frame arrives in time")
            .expect("the connection is still open")
            .expect("the frame is readable");
        if let Message::Text(text) = message {
            return (text.len(), serde_json::from_str(&text).unwrap());
        }
    }
}

#[tokio::test]
async fn a_join_since_zero_gets_at_most_the_byte_bound_newest_first_and_incomplete() {
    let app = room_with(300, &"x".repeat(2000)).await;
    let mut reader = app.connect("reader").await;
    reader
        .send(json!({"type":"join","id":1,"room":"general","since":0}))
        .await;
    let (size, joined) = recv_raw(&mut reader).await;
    assert_eq!(joined["type"], "joined");
    assert!(
        size <= REPLY_BOUND + ENVELOPE_SLACK,
        "a 60-byte join got {size} bytes"
    );
    assert_eq!(joined["complete"], false);
    let messages = joined["messages"].as_array().unwrap();
    assert!(messages.len() > 100, "only {} messages", messages.len());
    // The newest ones, in order, without a gap up to last_seq.
    assert_eq!(joined["last_seq"], 300);
    let seqs: Vec<u64> = messages
        .iter()
        .map(|m| m["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(*seqs.last().unwrap(), 300);
    assert!(seqs.windows(2).all(|w| w[1] == w[0] + 1), "{seqs:?}");
    // Paging back with history fills in what the join left out.
    reader
        .send(json!({"type":"history","id":2,"room":"general","before":seqs[0],"limit":10}))
        .await;
    let history = reader.recv_type("history").await;
    let older = history["messages"].as_array().unwrap();
    assert_eq!(older.len(), 10);
    assert_eq!(older[9]["seq"].as_u64().unwrap(), seqs[0] - 1);
}

#[tokio::test]
async fn repeated_joins_run_out_of_budget_long_before_megabytes_are_sent() {
    let app = room_with(300, &"x".repeat(2000)).await;
    let mut reader = app.connect("reader").await;
    let mut received = 0;
    let mut joins = 0;
    loop {
        joins += 1;
        assert!(
            joins <= 20,
            "20 joins and never rate limited ({received} bytes)"
        );
        reader
            .send(json!({"type":"join","id":joins,"room":"general","since":0}))
            .await;
        let (size, reply) = recv_raw(&mut reader).await;
        received += size;
        if reply["type"] == "error" {
            assert_eq!(reply["code"], "rate_limited", "{reply}");
            break;
        }
        assert_eq!(reply["type"], "joined", "{reply}");
    }
    assert!(
        received < 1536 * 1024,
        "{received} bytes sent for {joins} joins before the first refusal"
    );
}

#[tokio::test]
async fn a_history_of_big_messages_stays_under_the_byte_bound_and_says_it_was_truncated() {
    // 100 messages of 2000 four-byte characters: 800 KB if sent whole.
    let app = room_with(100, &"😀".repeat(2000)).await;
    let mut reader = app.connect("reader").await;
    reader.send(json!({"type":"join","room":"general"})).await;
    recv_raw(&mut reader).await;
    reader
        .send(json!({"type":"history","id":3,"room":"general","before":101,"limit":100}))
        .await;
    let (size, history) = recv_raw(&mut reader).await;
    assert_eq!(history["type"], "history", "{history}");
    assert!(size <= REPLY_BOUND + ENVELOPE_SLACK, "{size} bytes");
    assert_eq!(history["truncated"], true);
    let messages = history["messages"].as_array().unwrap();
    assert!(!messages.is_empty());
    assert_eq!(messages.last().unwrap()["seq"], 100, "the newest are kept");
}
