//! Rooms of many users: presence beyond `--presence-full-max`, and joins under load.

use crate::helpers::{generous_budget, spawn_app_with};
use serde_json::{Value, json};

fn names(joined: &Value) -> Vec<&str> {
    joined["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["name"].as_str().unwrap())
        .collect()
}

#[tokio::test]
async fn in_a_room_above_the_presence_threshold_joins_are_announced_as_counts() {
    let app = spawn_app_with(|settings| {
        settings.limits.presence_full_max = 2;
        settings.limits.presence_count_ms = 50;
    })
    .await;
    let (mut alice, joined) = app.join("alice", "big").await;
    assert_eq!(joined["online"], 1);
    let (mut bob, joined) = app.join("bob", "big").await;
    assert_eq!(
        (names(&joined), &joined["online"]),
        (vec!["alice", "bob"], &json!(2))
    );
    let presence = alice.recv().await;
    assert_eq!(
        (&presence["type"], &presence["event"]),
        (&json!("presence"), &json!("join"))
    );

    // The third user makes the room big: counted, not announced, and listed in part.
    let (carol, joined) = app.join("carol", "big").await;
    assert_eq!(joined["online"], 3);
    let members = names(&joined);
    assert_eq!(
        members.len(),
        2,
        "a sample of --presence-full-max: {members:?}"
    );
    assert!(members.contains(&"carol"), "the joiner is in the sample");
    for member in [&mut alice, &mut bob] {
        let count = member.recv().await;
        assert_eq!(count, json!({"type":"occupancy","room":"big","online":3}));
    }

    // Leaving a big room is counted too, down to the size where presence resumes.
    drop(carol);
    assert_eq!(
        alice.recv().await,
        json!({"type":"occupancy","room":"big","online":2})
    );
    bob.send(json!({"type":"leave","room":"big"})).await;
    bob.recv_type("left").await;
    let presence = alice.recv().await;
    assert_eq!(
        (
            &presence["type"],
            &presence["event"],
            &presence["user"]["name"]
        ),
        (&json!("presence"), &json!("leave"), &json!("bob"))
    );
}

#[tokio::test]
async fn a_joiner_never_misses_a_message_sent_while_it_joins() {
    const SENDERS: usize = 4;
    const EACH: u64 = 40;
    const TOTAL: u64 = SENDERS as u64 * EACH;
    let app = spawn_app_with(generous_budget).await;
    let mut senders = Vec::new();
    for s in 0..SENDERS {
        let (mut sender, _) = app.join(&format!("sender{s}"), "busy").await;
        senders.push(tokio::spawn(async move {
            for k in 0..EACH {
                sender
                    .send(json!({"type":"send","room":"busy","body":format!("{s}-{k}")}))
                    .await;
            }
            // Reading on keeps the sender from being a slow consumer; its acks are all in.
            let mut acks = 0;
            while acks < EACH {
                if sender.recv().await["type"] == "ack" {
                    acks += 1;
                }
            }
        }));
    }
    // Joiners come in one after another while the messages are being sent.
    for j in 0..12 {
        let (mut joiner, joined) = app.join(&format!("joiner{j}"), "busy").await;
        let last_seq = joined["last_seq"].as_u64().unwrap();
        let mut seen: Vec<u64> = joined["messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["seq"].as_u64().unwrap())
            .collect();
        assert!(
            seen.last().is_none_or(|&seq| seq == last_seq),
            "{seen:?} {last_seq}"
        );
        let mut next = last_seq + 1;
        while next <= TOTAL {
            let frame = joiner.recv().await;
            if frame["type"] == "message" {
                let seq = frame["seq"].as_u64().unwrap();
                assert_eq!(
                    seq, next,
                    "joiner {j}: after joined at {last_seq}, in order, no gap, no duplicate"
                );
                seen.push(seq);
                next += 1;
            }
        }
    }
    for sender in senders {
        sender.await.unwrap();
    }
}
