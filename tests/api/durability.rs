//! Acked means durable, and stopping is orderly: restarts, `kill -9` and SIGTERM.

use crate::helpers::{FreshDatabase, ServerProcess, WAIT, bodies, restart, spawn_app};
use serde_json::json;

#[tokio::test]
async fn acked_messages_are_still_there_after_a_restart_on_the_same_database() {
    let app = spawn_app().await;
    let (mut alice, _) = app.join("alice", "general").await;
    for i in 1..=5 {
        assert_eq!(alice.say("general", &format!("m{i}")).await["seq"], i);
    }
    let stopped = app.stop().await;
    let app = restart(&stopped).await;
    let (mut alice, joined) = app.join("alice", "general").await;
    assert_eq!(bodies(&joined), ["m1", "m2", "m3", "m4", "m5"]);
    assert_eq!(
        alice.say("general", "m6").await["seq"],
        6,
        "seq goes on from the stored one"
    );
}

#[tokio::test]
async fn shutdown_closes_every_session_with_1001() {
    let app = spawn_app().await;
    let (mut alice, _) = app.join("alice", "general").await;
    let mut bob = app.connect("bob").await;
    app.shutdown.trigger();
    assert_eq!(alice.expect_close().await, 1001);
    assert_eq!(bob.expect_close().await, 1001);
    tokio::time::timeout(WAIT, app.server)
        .await
        .expect("the server stops")
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn acked_messages_survive_kill_9() {
    let database = FreshDatabase::new().await;
    let url = database.url.clone();
    let mut server = ServerProcess::start(&url, &[]).await;
    let mut alice = server.connect("alice").await;
    alice.send(json!({"type":"join","room":"general"})).await;
    alice.recv_type("joined").await;
    // Send a burst without waiting, then collect the acks that came back.
    for i in 0..8 {
        alice
            .send(json!({"type":"send","room":"general","body":format!("m{i}")}))
            .await;
    }
    let mut acked = Vec::new();
    while acked.len() < 8 {
        let frame = alice.recv().await;
        if frame["type"] == "ack" {
            acked.push(frame["seq"].as_u64().unwrap());
        }
    }
    server.child.start_kill().unwrap();
    server.child.wait().await.unwrap();

    let server = ServerProcess::start(&url, &[]).await;
    let mut bob = server.connect("bob").await;
    bob.send(json!({"type":"join","room":"general","since":0}))
        .await;
    let joined = bob.recv_type("joined").await;
    let stored: Vec<u64> = joined["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["seq"].as_u64().unwrap())
        .collect();
    for seq in &acked {
        assert!(stored.contains(seq), "acked seq {seq} lost: {stored:?}");
    }
}

#[tokio::test]
async fn sigterm_closes_sessions_with_1001_and_exits_0() {
    let mut server = ServerProcess::start_fresh(&[]).await;
    let mut alice = server.connect("alice").await;
    server.signal("TERM").await;
    assert_eq!(alice.expect_close().await, 1001);
    let exit = tokio::time::timeout(WAIT, server.child.wait())
        .await
        .expect("the server exits in time")
        .unwrap();
    assert_eq!(exit.code(), Some(0));
}

#[tokio::test]
async fn a_sigterm_as_soon_as_the_server_says_it_is_up_still_drains_and_exits_0() {
    // `start_fresh` returns as soon as the "listening on" line is logged: the signal
    // handler must be in place by then, or SIGTERM's default action ends the process
    // (killed by a signal, no exit code) instead of the drain.
    let mut server = ServerProcess::start_fresh(&[]).await;
    server.signal("TERM").await;
    let exit = tokio::time::timeout(WAIT, server.child.wait())
        .await
        .expect("the server exits in time")
        .unwrap();
    assert_eq!(exit.code(), Some(0), "{exit:?}\n{}", server.log_text());
}

#[tokio::test]
async fn a_server_whose_log_reader_went_away_still_drains_and_exits_0_on_sigterm() {
    let mut server = ServerProcess::start_fresh(&[]).await;
    let mut client = server.connect("alice").await;
    server.close_output().await;
    // Log lines that can no longer be written (the test server logs at debug): a failed
    // write must not take down the task that wrote it, least of all the one that turns
    // SIGTERM into the drain.
    for _ in 0..3 {
        let url = format!("http://{}/readyz", server.addr);
        assert_eq!(reqwest::get(url).await.unwrap().status(), 200);
    }
    server.signal("TERM").await;
    assert_eq!(client.expect_close().await, 1001, "a drain, not a kill");
    let exit = tokio::time::timeout(WAIT, server.child.wait())
        .await
        .expect("the server exits in time")
        .unwrap();
    assert_eq!(exit.code(), Some(0), "{exit:?}");
}
