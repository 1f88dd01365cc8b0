//! Many clients that stop reading together: the bytes queued for all connections are
//! bounded server-wide (`--outbound-total-bytes`), not only per connection.

use crate::helpers::{Client, ServerProcess, rss_kib, tiny_window_client, user_token};
use futures_util::SinkExt;
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

/// Server-wide bound on queued bytes in this test.
const TOTAL_BOUND: &str = "2097152";
/// Per connection, four times the whole server's bound: only the total can cut them off.
const QUEUE_BOUND: &str = "8388608";
const SLOW_CLIENTS: usize = 8;

#[tokio::test]
async fn clients_that_rejoin_without_reading_are_closed_once_the_server_wide_bound_is_reached() {
    let server = ServerProcess::start_fresh(&[
        "--messages-per-sec",
        "100000",
        "--message-burst",
        "100000",
        "--outbound-total-bytes",
        TOTAL_BOUND,
        "--outbound-queue-bytes",
        QUEUE_BOUND,
        // The reply allowances would slow the joins down (their own defence, tested in
        // amplification.rs): here only the queue bound may stop them.
        "--reply-kib-per-sec-per-user",
        "1000000",
        "--reply-burst-kib-per-user",
        "1000000",
        "--reply-kib-per-sec-per-ip",
        "1000000",
        "--reply-burst-kib-per-ip",
        "1000000",
        // A closed client's close frame waits for it to read again, after the test
        // has seen it leave: the full grace, not the test servers' short one.
        "--close-grace-ms",
        "3000",
    ])
    .await;
    let pid = server.child.id().unwrap();
    // A room of big messages: each `join` with `since:0` answers ~256 KiB of them (the
    // bound on a reply; a few more than fit keep each join's read of the store cheap).
    let mut writer = server.connect("writer").await;
    writer.send(json!({"type":"join","room":"big"})).await;
    writer.recv_type("joined").await;
    let body = "\u{1F600}".repeat(2000);
    for _ in 0..40 {
        writer
            .send(json!({"type":"send","room":"big","body":body}))
            .await;
    }
    for _ in 0..40 {
        writer.recv_type_skipping_messages("ack").await;
    }
    let mut reader = server.connect("reader").await;
    reader.send(json!({"type":"join","room":"big"})).await;
    reader.recv_type("joined").await;

    let mut slow: Vec<(String, Client)> = Vec::new();
    for i in 0..SLOW_CLIENTS {
        let name = format!("slow{i}");
        let client = tiny_window_client(server.addr, &user_token(&name)).await;
        slow.push((name, client));
    }
    let before = rss_kib(pid);
    let mut peak = before;
    let mut round = 0;
    while !slow.is_empty() {
        assert!(round < 500, "{} slow clients never cut off", slow.len());
        for (_, client) in &mut slow {
            // Never read: the server's answers pile up. A send may fail once it closed.
            let join = json!({"type":"join","room":"big","since":0}).to_string();
            let _ = client.stream.send(Message::text(join)).await;
        }
        let marker = format!("round {round}");
        writer.say("big", &marker).await;
        // The reader gets every message, whatever the slow clients hold.
        loop {
            let frame = reader.recv().await;
            if frame["type"] == "message" && frame["body"] == marker.as_str() {
                break;
            }
            if frame["type"] == "presence" && frame["event"] == "leave" {
                let name = frame["user"]["name"].as_str().unwrap().to_owned();
                let at = slow.iter().position(|(n, _)| *n == name);
                let (_, mut client) = slow.remove(at.expect("only slow clients leave"));
                let (_, code) = client.frames_until_close().await;
                assert_eq!(code, 4008, "{name} closed as a slow consumer");
            }
        }
        peak = peak.max(rss_kib(pid));
        round += 1;
    }
    // Without the server-wide bound the slow clients hold up to 8 x 8 MiB before the
    // per-connection bound cuts them off (a peak ~66 MiB over the start, measured); with
    // it, ~9 MiB: the 2 MiB bound, and the replies being built.
    let growth_mib = peak.saturating_sub(before) / 1024;
    println!("server RSS before {before} KiB, peak {peak} KiB, {round} rounds");
    assert!(growth_mib < 24, "server grew by {growth_mib} MiB");
    // The normal clients are still there.
    writer.say("big", "still here").await;
    assert_eq!(reader.recv_type("message").await["body"], "still here");
}
