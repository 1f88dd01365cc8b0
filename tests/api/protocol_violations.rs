//! Frames that break the contract close the connection with the documented code; floods
//! are refused frame by frame, then closed.

use crate::helpers::spawn_app;
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

#[tokio::test]
async fn a_frame_over_4096_bytes_closes_with_1009() {
    let app = spawn_app().await;
    let mut alice = app.connect("alice").await;
    let padding = " ".repeat(4097 - r#"{"type":"typing","room":"general"}"#.len());
    let frame = format!(r#"{{"type":"typing","room":"general"}}{padding}"#);
    assert_eq!(frame.len(), 4097);
    alice.send_text(&frame).await;
    assert_eq!(alice.expect_close().await, 1009);
}

#[tokio::test]
async fn a_frame_of_exactly_4096_bytes_is_accepted() {
    let app = spawn_app().await;
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
