//! Bounds that keep one client from hurting the others: slow readers, forged addresses,
//! request rates and durations.

use crate::helpers::{
    Client, ServerProcess, bearer, generous_budget, rss_kib, spawn_app_with, tiny_window_client,
};
use serde_json::{Value, json};

/// A client with a tiny socket receive buffer that joins `room` and then never reads.
async fn stalled_reader(app: &crate::helpers::TestApp, name: &str, room: &str) -> Client {
    let mut client = tiny_window_client(app.addr, &app.token(name)).await;
    client.send(json!({"type":"join","room":room})).await;
    client.recv_type("joined").await;
    client
}

#[tokio::test]
async fn a_client_that_stops_reading_is_closed_with_4008_and_the_others_carry_on() {
    let app = spawn_app_with(|s| {
        generous_budget(s);
        s.limits.outbound_queue = 16;
        // The close frame waits for the stalled client to read again: the full grace.
        s.limits.close_grace_ms = palisade::config::DEFAULT_LIMITS.close_grace_ms;
    })
    .await;
    let mut slow = stalled_reader(&app, "slow", "general").await;
    let (mut fast, _) = app.join("fast", "general").await;
    let (mut bystander, _) = app.join("bystander", "general").await;
    assert_eq!(fast.recv().await["event"], "join");
    let body = "x".repeat(2000);
    // Flood until the server gives up on the stalled reader: the others see it leave.
    // It takes a few thousand messages (the kernel buffers a lot on loopback), sent in
    // bursts that one commit stores: one commit each would take a minute on PostgreSQL,
    // past the stalled client's heartbeat timeout.
    const BURST: usize = 16;
    let mut sent = 0;
    let mut bystander_saw = 0;
    'flood: while sent < 5000 {
        for _ in 0..BURST {
            fast.send(json!({"type":"send","room":"general","body":body}))
                .await;
        }
        sent += BURST;
        let mut acked = 0;
        while acked < BURST {
            let frame = fast.recv().await;
            if frame["type"] == "ack" {
                acked += 1;
            }
            if frame["type"] == "presence" && frame["user"]["name"] == "slow" {
                assert_eq!(frame["event"], "leave");
                break 'flood;
            }
        }
    }
    assert!(sent < 5000, "the stalled reader was never cut off");
    // Reading again now, the stalled client gets what was already in flight, then 4008.
    let (frames, code) = slow.frames_until_close().await;
    assert_eq!(code, 4008);
    let delivered = frames.iter().filter(|f| f["type"] == "message").count();
    assert!(
        delivered < sent,
        "{delivered} of {sent} delivered to a stalled reader"
    );
    // The bystander, who reads, got every message.
    while bystander_saw < sent {
        if bystander.recv().await["type"] == "message" {
            bystander_saw += 1;
        }
    }
}

#[tokio::test]
async fn server_memory_stays_bounded_while_clients_stop_reading() {
    let server = ServerProcess::start_fresh(&[
        "--messages-per-sec",
        "100000",
        "--message-burst",
        "100000",
        "--max-connections-per-ip",
        "100",
    ])
    .await;
    let pid = server.child.id().unwrap();
    let mut fast = server.connect("fast").await;
    fast.send(json!({"type":"join","room":"flood"})).await;
    fast.recv_type("joined").await;
    // 2000 two-byte characters: about 4 KiB per message frame.
    let body = "é".repeat(2000);
    for _ in 0..50 {
        fast.say("flood", &body).await;
    }
    let mut stalled = Vec::new();
    for i in 0..10 {
        let mut client = server.connect(&format!("stalled{i}")).await;
        client.send(json!({"type":"join","room":"flood"})).await;
        client.recv_type("joined").await;
        stalled.push(client);
    }
    let before = rss_kib(pid);
    // 2000 messages of ~4 KiB toward 10 clients that do not read: ~80 MiB if the server
    // kept it all (the kernel's socket buffers take the first 2-3 MiB of each).
    let mut cut_off = 0;
    let mut sent = 0;
    while sent < 2000 || cut_off < stalled.len() {
        if sent < 2000 {
            fast.send(json!({"type":"send","room":"flood","body":body}))
                .await;
            sent += 1;
        }
        loop {
            let frame = fast.recv().await;
            if frame["type"] == "presence" && frame["event"] == "leave" {
                cut_off += 1;
                if sent == 2000 {
                    break;
                }
            }
            if frame["type"] == "ack" {
                break;
            }
        }
    }
    let after = rss_kib(pid);
    let growth_mib = after.saturating_sub(before) / 1024;
    println!(
        "server RSS before {before} KiB, after {after} KiB; {cut_off} stalled clients cut off"
    );
    assert!(growth_mib < 25, "server grew by {growth_mib} MiB");
}

#[tokio::test]
async fn a_forged_x_forwarded_for_does_not_escape_the_per_ip_cap() {
    let app = spawn_app_with(|s| s.limits.max_connections_per_ip = 2).await;
    let mut open = Vec::new();
    for (i, forged) in ["10.0.0.1", "10.0.0.2"].iter().enumerate() {
        let client = app
            .try_connect(
                &[
                    bearer(&app.token(&format!("u{i}"))),
                    ("x-forwarded-for", forged.to_string()),
                ],
                "",
            )
            .await
            .expect("accepted");
        open.push(client);
    }
    let refusal = app
        .try_connect(
            &[
                bearer(&app.token("u9")),
                ("x-forwarded-for", "10.0.0.3".into()),
            ],
            "",
        )
        .await
        .err()
        .expect("still capped by the real address");
    assert_eq!(refusal.status, 429);
}

#[tokio::test]
async fn a_trusted_proxy_s_x_forwarded_for_names_the_client() {
    let app = spawn_app_with(|s| {
        s.limits.max_connections_per_ip = 2;
        s.trusted_proxies = vec!["127.0.0.1".parse().unwrap()];
    })
    .await;
    let via_proxy = |user: &str, client_ip: &str| {
        vec![
            bearer(&app.token(user)),
            ("x-forwarded-for", client_ip.to_owned()),
        ]
    };
    let _a = app
        .try_connect(&via_proxy("a", "198.51.100.1"), "")
        .await
        .expect("accepted");
    let _b = app
        .try_connect(&via_proxy("b", "198.51.100.1"), "")
        .await
        .expect("accepted");
    let refusal = app
        .try_connect(&via_proxy("c", "198.51.100.1"), "")
        .await
        .err()
        .expect("that client is at its cap");
    assert_eq!(refusal.status, 429);
    assert!(
        app.try_connect(&via_proxy("c", "198.51.100.2"), "")
            .await
            .is_ok(),
        "another client behind the same proxy is not"
    );
}

#[tokio::test]
async fn ticket_requests_are_rate_limited_per_ip() {
    let app = spawn_app_with(|s| s.limits.tickets_per_minute = 2).await;
    let token = app.token("alice");
    let ask = || {
        app.http
            .post(app.url("/api/tickets"))
            .bearer_auth(&token)
            .send()
    };
    assert_eq!(ask().await.unwrap().status(), 200);
    assert_eq!(ask().await.unwrap().status(), 200);
    let limited = ask().await.unwrap();
    assert_eq!(limited.status(), 429);
    assert!(limited.headers().contains_key("retry-after"));
    let body: Value = limited.json().await.unwrap();
    assert_eq!(body["error"]["code"], "rate_limited");
}

#[tokio::test]
async fn an_api_request_over_its_time_limit_gets_408() {
    let app = spawn_app_with(|s| s.limits.request_timeout_secs = 0).await;
    // Password hashing cannot finish in zero seconds.
    let response = app.register("alice", "correct horse").await;
    assert_eq!(response.status(), 408);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "request_timeout");
}
