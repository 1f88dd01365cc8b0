//! One busy room: many senders at once share the store's commits, and still every member
//! sees each stored message once, in `seq` order, and every sender's ack names the message
//! the others saw.

use crate::helpers::{Client, bodies, generous_budget, spawn_app_with};
use serde_json::{Value, json};
use std::collections::BTreeMap;

const ROOM: &str = "hot";

/// What one member read: message seqs in arrival order, each seq's body, and acks by id.
#[derive(Default)]
struct Seen {
    seqs: Vec<u64>,
    bodies: BTreeMap<u64, String>,
    acks: BTreeMap<u64, Value>,
}

/// Reads until `messages` message frames and `acks` acks have arrived (presence skipped).
async fn read(client: &mut Client, messages: usize, acks: usize) -> Seen {
    let mut seen = Seen::default();
    while seen.seqs.len() < messages || seen.acks.len() < acks {
        let frame = client.recv().await;
        match frame["type"].as_str() {
            Some("message") => {
                let seq = frame["seq"].as_u64().expect("a seq");
                seen.seqs.push(seq);
                seen.bodies
                    .insert(seq, frame["body"].as_str().expect("a body").to_owned());
            }
            Some("ack") => {
                let id = frame["id"].as_u64().expect("acks name the send");
                seen.acks.insert(id, frame);
            }
            Some("presence" | "occupancy" | "typing") => {}
            _ => panic!("unexpected frame {frame}"),
        }
    }
    seen
}

#[tokio::test]
async fn messages_of_one_room_reach_every_member_in_seq_order_under_concurrent_senders() {
    const SENDERS: usize = 8;
    const EACH: u64 = 25;
    let total = SENDERS * EACH as usize;
    let app = spawn_app_with(generous_budget).await;
    let (mut watcher, _) = app.join("watcher", ROOM).await;
    let mut senders = Vec::new();
    for s in 0..SENDERS {
        senders.push(app.join(&format!("sender{s}"), ROOM).await.0);
    }

    // Every sender sends its messages back to back, all at the same time, then resends
    // its first one (same nonce): that one must be acked as a duplicate and not delivered.
    let tasks: Vec<_> = senders
        .into_iter()
        .enumerate()
        .map(|(s, mut client)| {
            tokio::spawn(async move {
                for id in 1..=EACH + 1 {
                    let n = if id > EACH { 1 } else { id };
                    client
                        .send(json!({"type": "send", "id": id, "room": ROOM,
                            "body": format!("s{s}-m{n}"), "nonce": format!("s{s}-n{n}")}))
                        .await;
                }
                let seen = read(&mut client, total, EACH as usize + 1).await;
                (client, seen)
            })
        })
        .collect();
    let watched = read(&mut watcher, total, 0).await;
    let mut everyone = vec![watched];
    let mut clients = Vec::new();
    for task in tasks {
        let (client, seen) = task.await.expect("the sender's task does not panic");
        clients.push(client);
        everyone.push(seen);
    }

    let in_order: Vec<u64> = (1..=total as u64).collect();
    for (member, seen) in everyone.iter().enumerate() {
        assert_eq!(
            seen.seqs, in_order,
            "member {member} sees every seq once and in order"
        );
        assert_eq!(seen.bodies, everyone[0].bodies, "member {member}");
    }
    for (s, seen) in everyone[1..].iter().enumerate() {
        for id in 1..=EACH {
            let ack = &seen.acks[&id];
            assert_eq!(ack["duplicate"], false, "{ack}");
            let seq = ack["seq"].as_u64().unwrap();
            assert_eq!(
                everyone[0].bodies[&seq],
                format!("s{s}-m{id}"),
                "the ack names the message the room saw"
            );
        }
        let resent = &seen.acks[&(EACH + 1)];
        assert_eq!(resent["duplicate"], true, "{resent}");
        assert_eq!(resent["seq"], seen.acks[&1]["seq"]);
    }
    // Nothing was delivered twice: the next message a member sees is a new seq.
    watcher.say(ROOM, "after").await;
    let next = clients[0].recv_type("message").await;
    assert_eq!(next["seq"], total as u64 + 1, "{next}");
}

#[tokio::test]
async fn committed_messages_reach_the_room_even_when_their_sender_disconnects_right_after_sending()
{
    let app = spawn_app_with(generous_budget).await;
    let (mut bob, _) = app.join("bob", ROOM).await;
    let (mut alice, _) = app.join("alice", ROOM).await;
    for i in 1..=5 {
        alice
            .send(json!({"type": "send", "room": ROOM, "body": format!("m{i}"), "nonce": format!("n{i}")}))
            .await;
    }
    // Gone without waiting for a single ack, nor closing properly. The sends the server
    // read before it noticed are stored (here usually 3); the others are dropped unacked.
    drop(alice);

    let mut seen = Vec::new();
    loop {
        let frame = bob.recv().await;
        match frame["type"].as_str() {
            Some("message") => seen.push((frame["seq"].clone(), frame["body"].clone())),
            Some("presence") if frame["event"] == "leave" => break,
            _ => {}
        }
    }
    let (_carol, joined) = app.join("carol", ROOM).await;
    let stored: Vec<(Value, Value)> = joined["messages"]
        .as_array()
        .expect("the room's messages")
        .iter()
        .map(|m| (m["seq"].clone(), m["body"].clone()))
        .collect();
    assert!(
        !stored.is_empty(),
        "the first send was read before the hang-up"
    );
    assert_eq!(
        seen, stored,
        "what was stored reached the room, in order, before the sender's leave"
    );
}

#[tokio::test]
async fn a_burst_of_sends_and_requests_is_answered_in_the_order_it_was_sent() {
    let app = spawn_app_with(generous_budget).await;
    let (mut alice, _) = app.join("alice", ROOM).await;
    // More sends than wait for their commit at once, a refused send among them, and a
    // request after them: every answer comes in the order of the frames it answers.
    let mut expected = Vec::new();
    for id in 1..=12u64 {
        let room = if id == 6 { "elsewhere" } else { ROOM };
        alice
            .send(json!({"type": "send", "id": id, "room": room, "body": format!("m{id}")}))
            .await;
        expected.push((id, if id == 6 { "error" } else { "ack" }));
    }
    alice
        .send(json!({"type": "history", "id": 13, "room": ROOM, "limit": 50}))
        .await;
    expected.push((13, "history"));

    let mut answered = Vec::new();
    let mut seqs = Vec::new();
    while answered.len() < expected.len() {
        let frame = alice.recv().await;
        let kind = frame["type"].as_str().unwrap_or_default().to_owned();
        match kind.as_str() {
            "message" | "presence" | "occupancy" => continue,
            "ack" => seqs.push(frame["seq"].as_u64().expect("an ack names its seq")),
            "error" => assert_eq!(frame["code"], "not_joined", "{frame}"),
            "history" => assert_eq!(bodies(&frame).len(), 11, "{frame}"),
            _ => panic!("unexpected frame {frame}"),
        }
        let id = frame["id"].as_u64().expect("an answer names its frame");
        answered.push((
            id,
            if kind == "history" {
                "history"
            } else if kind == "ack" {
                "ack"
            } else {
                "error"
            },
        ));
    }
    assert_eq!(answered, expected);
    assert_eq!(
        seqs,
        (1..=11).collect::<Vec<_>>(),
        "stored in the order sent"
    );
}
