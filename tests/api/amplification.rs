//! A short frame must not buy a huge reply: `joined` and `history` carry at most 256 KiB
//! of messages *(config)* (the newest; `complete:false` / `truncated:true` say some were
//! left out), and a big reply spends frame-budget tokens in proportion to its size, so
//! repeated joins run out of budget long before they have pulled megabytes. Reconnecting
//! does not start that budget afresh: reply bytes are also counted per user and per
//! address across connections.

use crate::helpers::{Client, TestApp, WAIT, generous_budget, restart_with, spawn_app_with};
use futures_util::StreamExt;
use palisade::config::Settings;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

/// The default bound on the messages of one reply.
const REPLY_BOUND: usize = 256 * 1024;
/// What a reply carries besides its messages (type, room, members of a small room).
const ENVELOPE_SLACK: usize = 1024;

/// A server with `count` messages of `body` in `general`, restarted with the default
/// limits (the seeding needed a generous budget).
async fn room_with(count: usize, body: &str) -> TestApp {
    room_with_settings(count, body, |_| {}).await
}

/// [`room_with`], restarted with the default limits changed by `configure`.
async fn room_with_settings(
    count: usize,
    body: &str,
    configure: impl FnOnce(&mut Settings),
) -> TestApp {
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
    restart_with(&app.stop().await, configure).await
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

/// The reply allowance under test, in KiB, refilling at 1 KiB/s: over a test of a few
/// seconds the refill is a rounding error next to it.
const ALLOWANCE_KIB: u32 = 512;

/// Connects as `name`, joins `general` with `since:0`, and closes: the `joined` frame
/// and its size on the wire.
async fn join_since_zero(app: &TestApp, name: &str) -> (usize, Value) {
    let mut client = app.connect(name).await;
    client
        .send(json!({"type":"join","id":1,"room":"general","since":0}))
        .await;
    let (size, joined) = recv_raw(&mut client).await;
    assert_eq!(joined["type"], "joined", "{joined}");
    client.close_normally().await;
    (size, joined)
}

/// The most reply bytes an allowance of [`ALLOWANCE_KIB`] refilling at 1 KiB/s lets
/// through in `elapsed` over `replies` replies (each with its envelope).
fn allowance_bound(elapsed: std::time::Duration, replies: usize) -> usize {
    let refilled = usize::try_from(elapsed.as_secs()).unwrap() + 1;
    (ALLOWANCE_KIB as usize + refilled) * 1024 + replies * ENVELOPE_SLACK
}

#[tokio::test]
async fn reconnecting_between_joins_does_not_reset_a_users_reply_allowance_and_others_keep_theirs()
{
    let app = room_with_settings(300, &"x".repeat(2000), |settings| {
        settings.limits.reply_kib_per_sec_per_user = 1;
        settings.limits.reply_burst_kib_per_user = ALLOWANCE_KIB;
        // All the test's clients share 127.0.0.1: only the per-user allowance is tested.
        settings.limits.reply_kib_per_sec_per_ip = 1_000_000;
        settings.limits.reply_burst_kib_per_ip = 1_000_000;
    })
    .await;
    const RECONNECTS: usize = 8;
    let started = std::time::Instant::now();
    let hog = async {
        let mut received = 0;
        let mut last = (0, Value::Null);
        for _ in 0..RECONNECTS {
            last = join_since_zero(&app, "hog").await;
            received += last.0;
        }
        (received, last)
    };
    let bystander = join_since_zero(&app, "bystander");
    let ((received, (last_size, last)), (bystander_size, _)) = tokio::join!(hog, bystander);
    let elapsed = started.elapsed();
    assert!(
        received <= allowance_bound(elapsed, RECONNECTS),
        "{received} bytes over {RECONNECTS} connections in {elapsed:?}"
    );
    // Spent, the allowance shrinks replies rather than refusing them.
    assert!(last_size < 16 * 1024, "{last_size} bytes");
    assert_eq!(last["complete"], false, "{last}");
    assert_eq!(last["last_seq"], 300);
    // Another user was not charged for any of it, during or after.
    let (after, joined) = join_since_zero(&app, "bystander").await;
    for size in [bystander_size, after] {
        assert!(
            size > REPLY_BOUND - 8 * 1024,
            "a full reply, not {size} bytes"
        );
    }
    assert!(joined["messages"].as_array().unwrap().len() > 100);
}

#[tokio::test]
async fn many_accounts_from_one_address_share_its_reply_allowance() {
    let app = room_with_settings(300, &"x".repeat(2000), |settings| {
        settings.limits.reply_kib_per_sec_per_ip = 1;
        settings.limits.reply_burst_kib_per_ip = ALLOWANCE_KIB;
    })
    .await;
    const ACCOUNTS: usize = 6;
    let started = std::time::Instant::now();
    let mut received = 0;
    for account in 0..ACCOUNTS {
        let (size, _) = join_since_zero(&app, &format!("sock-puppet-{account}")).await;
        received += size;
    }
    let elapsed = started.elapsed();
    assert!(
        received <= allowance_bound(elapsed, ACCOUNTS),
        "{received} bytes for {ACCOUNTS} accounts in {elapsed:?}"
    );
}
