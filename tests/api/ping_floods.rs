//! Pings and pongs are frames like any other: they spend the frame budget, and the
//! automatic pongs for a client that never reads cannot pile up in server memory.

use crate::helpers::{ServerProcess, WAIT, rss_kib, spawn_app, tiny_window_client, user_token};
use futures_util::SinkExt;
use tokio_tungstenite::tungstenite::Message;

#[tokio::test]
async fn pings_or_pongs_over_the_frame_budget_close_with_1008_without_an_answer_each() {
    let app = spawn_app().await;
    for control in [Message::Ping, Message::Pong] {
        let mut client = app.connect("alice").await;
        // Burst 10, then 10 refusals within 10 s: abuse.
        for _ in 0..40 {
            client
                .stream
                .feed(control(b"are you there".to_vec().into()))
                .await
                .unwrap();
        }
        client.stream.flush().await.unwrap();
        let (frames, code) = client.frames_until_close().await;
        assert_eq!(code, 1008);
        assert!(
            frames.is_empty(),
            "a refused control frame gets no error frame: {frames:?}"
        );
    }
}

#[tokio::test]
async fn a_ping_flood_from_a_client_that_never_reads_leaves_server_memory_bounded() {
    // A budget too generous to stop the flood: the write buffer bound alone must hold.
    let server = ServerProcess::start_fresh(&[
        "--messages-per-sec",
        "10000000",
        "--message-burst",
        "10000000",
    ])
    .await;
    let pid = server.child.id().unwrap();
    let mut flood = tiny_window_client(server.addr, &user_token("flood"))
        .await
        .stream;
    let before = rss_kib(pid);
    // 400 000 pings of 125 bytes: ~50 MB of pongs if the server kept every one.
    let payload = vec![7u8; 125];
    // The server may end the flood itself: its pongs make no progress on a client that
    // never reads, and after 30 s of that the write-stall limit closes the socket (on a
    // loaded machine the flood takes that long). Either way memory must stay bounded.
    let flooding = async {
        let mut sent = 0;
        'flood: for _ in 0..400 {
            for _ in 0..1000 {
                if flood
                    .feed(Message::Ping(payload.clone().into()))
                    .await
                    .is_err()
                {
                    break 'flood;
                }
                sent += 1;
            }
            if flood.flush().await.is_err() {
                break;
            }
        }
        sent
    };
    let sent = tokio::time::timeout(WAIT * 6, flooding)
        .await
        .expect("the server keeps reading the flood");
    let after = rss_kib(pid);
    let growth_mib = after.saturating_sub(before) / 1024;
    println!("{sent} pings sent; server RSS before {before} KiB, after {after} KiB");
    assert!(growth_mib < 24, "server grew by {growth_mib} MiB");
}
