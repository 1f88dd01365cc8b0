//! Rooms, messages, acks, history, presence, typing and resume, as clients see them.

use crate::helpers::{bodies, generous_budget, now, sign, spawn_app, spawn_app_with};
use serde_json::{Value, json};

fn seqs(messages: &Value) -> Vec<u64> {
    messages
        .as_array()
        .expect("an array of messages")
        .iter()
        .map(|m| m["seq"].as_u64().unwrap())
        .collect()
}

#[tokio::test]
async fn two_clients_see_each_others_messages_and_their_own_in_seq_order() {
    let app = spawn_app().await;
    let (mut alice, joined) = app.join("alice", "general").await;
    assert_eq!(joined["last_seq"], 0);
    assert_eq!(joined["complete"], true);
    let (mut bob, _) = app.join("bob", "general").await;

    alice
        .send(json!({"type":"send","id":1,"room":"general","body":"hi bob"}))
        .await;
    bob.send(json!({"type":"send","id":2,"room":"general","body":"hi alice"}))
        .await;

    let alice_saw = messages_until(&mut alice, 2).await;
    let bob_saw = messages_until(&mut bob, 2).await;
    assert_eq!(
        alice_saw, bob_saw,
        "both see the same messages in the same order"
    );
    assert_eq!(
        alice_saw.iter().map(|(seq, _)| *seq).collect::<Vec<_>>(),
        [1, 2]
    );
    let bodies: Vec<&str> = alice_saw.iter().map(|(_, body)| body.as_str()).collect();
    assert!(bodies.contains(&"hi bob") && bodies.contains(&"hi alice"));
}

/// The (seq, body) of the next `n` message frames, skipping acks and presence.
async fn messages_until(client: &mut crate::helpers::Client, n: usize) -> Vec<(u64, String)> {
    let mut seen = Vec::new();
    while seen.len() < n {
        let frame = client.recv().await;
        if frame["type"] == "message" {
            seen.push((
                frame["seq"].as_u64().unwrap(),
                frame["body"].as_str().unwrap().to_owned(),
            ));
        }
    }
    seen
}

#[tokio::test]
async fn a_message_frame_carries_sender_body_seq_and_ts_and_the_ack_matches() {
    let app = spawn_app().await;
    let (mut alice, _) = app.join("alice", "general").await;
    alice
        .send(
            json!({"type":"send","id":7,"room":"general","body":"<b>hi</b>\nthere","nonce":"n-1"}),
        )
        .await;
    let message = alice.recv_type("message").await;
    assert_eq!(message["room"], "general");
    assert_eq!(message["seq"], 1);
    assert_eq!(message["from"], json!({"id":"id-alice","name":"alice"}));
    assert_eq!(
        message["body"], "<b>hi</b>\nthere",
        "stored and sent as written"
    );
    assert_eq!(message["nonce"], "n-1");
    let ack = alice.recv_type("ack").await;
    assert_eq!(ack["id"], 7);
    assert_eq!(ack["seq"], 1);
    assert_eq!(ack["duplicate"], false);
    assert_eq!(ack["ts"], message["ts"]);
    assert!(ack["ts"].as_i64().unwrap() / 1000 >= now() - 60);
}

#[tokio::test]
async fn a_resent_nonce_is_acked_as_duplicate_and_stored_once() {
    let app = spawn_app().await;
    let (mut alice, _) = app.join("alice", "general").await;
    let (mut bob, _) = app.join("bob", "general").await;
    let send = json!({"type":"send","room":"general","body":"once","nonce":"abc-123"});
    alice.send(send.clone()).await;
    let first = alice.recv_type_skipping_messages("ack").await;
    alice.send(send).await;
    let second = alice.recv_type_skipping_messages("ack").await;
    assert_eq!(first["duplicate"], false);
    assert_eq!(second["duplicate"], true);
    assert_eq!(second["seq"], first["seq"]);

    // Bob got it once: the next message he sees after it is the next seq.
    let _ = alice.say("general", "after").await;
    let first_seen = bob.recv_type("message").await;
    let next_seen = bob.recv_type("message").await;
    assert_eq!(
        (first_seen["seq"].as_u64(), next_seen["seq"].as_u64()),
        (Some(1), Some(2))
    );

    // And the room holds it once.
    let (_carol, joined) = app.join("carol", "general").await;
    assert_eq!(seqs(&joined["messages"]), [1, 2]);
}

#[tokio::test]
async fn the_same_nonce_from_another_user_is_a_new_message() {
    let app = spawn_app().await;
    let (mut alice, _) = app.join("alice", "general").await;
    let (mut bob, _) = app.join("bob", "general").await;
    alice
        .send(json!({"type":"send","room":"general","body":"a","nonce":"same"}))
        .await;
    let a = alice.recv_type_skipping_messages("ack").await;
    bob.send(json!({"type":"send","room":"general","body":"b","nonce":"same"}))
        .await;
    let b = bob.recv_type_skipping_messages("ack").await;
    assert_eq!((a["seq"].as_u64(), b["seq"].as_u64()), (Some(1), Some(2)));
    assert_eq!(b["duplicate"], false);
}

#[tokio::test]
async fn join_with_since_replays_exactly_the_missed_messages() {
    let app = spawn_app().await;
    let (mut alice, _) = app.join("alice", "general").await;
    let (mut bob, _) = app.join("bob", "general").await;
    for i in 1..=3 {
        alice.say("general", &format!("m{i}")).await;
    }
    // Bob saw up to 3, then drops.
    for _ in 0..3 {
        bob.recv_type("message").await;
    }
    drop(bob);
    for i in 4..=7 {
        alice.say("general", &format!("m{i}")).await;
    }
    let mut bob = app.connect("bob").await;
    bob.send(json!({"type":"join","id":9,"room":"general","since":3}))
        .await;
    let joined = bob.recv_type("joined").await;
    assert_eq!(joined["id"], 9);
    assert_eq!(seqs(&joined["messages"]), [4, 5, 6, 7]);
    assert_eq!(joined["complete"], true);
    assert_eq!(joined["last_seq"], 7);
    // Live messages continue right after, with no gap and no duplicate.
    alice.say("general", "m8").await;
    assert_eq!(bob.recv_type("message").await["seq"], 8);
}

#[tokio::test]
async fn join_without_since_gets_the_latest_messages() {
    let app = spawn_app_with(generous_budget).await;
    let (mut alice, _) = app.join("alice", "general").await;
    for i in 1..=55 {
        alice.say("general", &format!("m{i}")).await;
    }
    let (_bob, joined) = app.join("bob", "general").await;
    let got = seqs(&joined["messages"]);
    assert_eq!(
        got,
        (6..=55).collect::<Vec<_>>(),
        "the latest 50, oldest first"
    );
    assert_eq!(joined["complete"], false);
    assert_eq!(joined["last_seq"], 55);
}

#[tokio::test]
async fn a_large_frame_leaves_as_fragments_and_arrives_whole() {
    // The server cuts frames over 512 bytes into fragments, here inside the three-byte
    // characters; the client must get the `joined` and `history` replies whole and valid.
    let app = spawn_app_with(generous_budget).await;
    let (mut alice, _) = app.join("alice", "general").await;
    let said: Vec<String> = (0..4)
        .map(|i| format!("{i}{}", "\u{20AC}".repeat(150)))
        .collect();
    for body in &said {
        alice.say("general", body).await;
    }
    let (mut bob, joined) = app.join("bob", "general").await;
    assert!(joined.to_string().len() > 4 * 512, "{joined}");
    assert_eq!(bodies(&joined), said);
    bob.send(json!({"type": "history", "id": 7, "room": "general"}))
        .await;
    let history = bob.recv_type("history").await;
    assert_eq!(history["id"], 7);
    assert_eq!(bodies(&history), said);
    // And the connection goes on as before.
    bob.say("general", "short").await;
}

#[tokio::test]
async fn messages_sent_while_a_client_joins_arrive_once_and_in_order() {
    let app = spawn_app_with(generous_budget).await;
    let (mut alice, _) = app.join("alice", "general").await;
    let mut bob = app.connect("bob").await;
    // Alice sends while Bob's join is in flight; Bob must see 1..=20 exactly once.
    bob.send(json!({"type":"join","room":"general"})).await;
    for i in 1..=20 {
        alice
            .send(json!({"type":"send","room":"general","body":format!("m{i}")}))
            .await;
    }
    let joined = bob.recv_type("joined").await;
    let mut got = seqs(&joined["messages"]);
    while got.last().copied() != Some(20) {
        got.push(bob.recv_type("message").await["seq"].as_u64().unwrap());
    }
    assert_eq!(got, (1..=20).collect::<Vec<_>>());
    // Nothing from the join race is delivered twice: the next message Bob sees is new.
    alice.say("general", "m21").await;
    assert_eq!(bob.recv_type("message").await["seq"], 21);
}

#[tokio::test]
async fn history_pages_backwards_oldest_first() {
    let app = spawn_app_with(generous_budget).await;
    let (mut alice, _) = app.join("alice", "general").await;
    for i in 1..=12 {
        alice.say("general", &format!("m{i}")).await;
    }
    alice
        .send(json!({"type":"history","id":4,"room":"general","before":10,"limit":5}))
        .await;
    let page = alice.recv_type_skipping_messages("history").await;
    assert_eq!(page["id"], 4);
    assert_eq!(seqs(&page["messages"]), [5, 6, 7, 8, 9]);
    alice
        .send(json!({"type":"history","room":"general","before":5,"limit":5}))
        .await;
    let page = alice.recv_type_skipping_messages("history").await;
    assert_eq!(seqs(&page["messages"]), [1, 2, 3, 4]);
    alice
        .send(json!({"type":"history","room":"general","before":1,"limit":5}))
        .await;
    let page = alice.recv_type_skipping_messages("history").await;
    assert_eq!(seqs(&page["messages"]), Vec::<u64>::new());
}

#[tokio::test]
async fn presence_is_announced_per_user_to_the_others_only() {
    let app = spawn_app().await;
    let (mut alice, _) = app.join("alice", "general").await;
    let (mut bob, joined) = app.join("bob", "general").await;
    let members: Vec<&str> = joined["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["name"].as_str().unwrap())
        .collect();
    assert_eq!(members, ["alice", "bob"], "the joiner is included");
    let presence = alice.recv().await;
    assert_eq!(presence["type"], "presence");
    assert_eq!(presence["event"], "join");
    assert_eq!(presence["user"]["name"], "bob");

    // Bob's second connection is not news; its leaving is not either.
    let (mut bob2, _) = app.join("bob", "general").await;
    bob2.send(json!({"type":"leave","id":3,"room":"general"}))
        .await;
    assert_eq!(bob2.recv_type("left").await["id"], 3);
    // Bob's last connection leaving is.
    bob.send(json!({"type":"leave","room":"general"})).await;
    bob.recv_type("left").await;
    let presence = alice.recv().await;
    assert_eq!(
        (
            presence["event"].as_str(),
            presence["user"]["name"].as_str()
        ),
        (Some("leave"), Some("bob"))
    );

    // A dropped connection counts as leaving too.
    let (carol, _) = app.join("carol", "general").await;
    assert_eq!(alice.recv().await["event"], "join");
    drop(carol);
    let presence = alice.recv().await;
    assert_eq!(
        (
            presence["event"].as_str(),
            presence["user"]["name"].as_str()
        ),
        (Some("leave"), Some("carol"))
    );
}

#[tokio::test]
async fn typing_reaches_the_others_but_not_the_typist() {
    let app = spawn_app().await;
    let (mut alice, _) = app.join("alice", "general").await;
    let (mut bob, _) = app.join("bob", "general").await;
    assert_eq!(alice.recv().await["event"], "join");
    bob.send(json!({"type":"typing","room":"general"})).await;
    let typing = alice.recv().await;
    assert_eq!(
        typing,
        json!({"type":"typing","room":"general","user":{"id":"id-bob","name":"bob"}})
    );
    // Bob's next frame is the ack of his message, not his own typing.
    let ack = bob.say("general", "done").await;
    assert_eq!(ack["type"], "ack");
}

#[tokio::test]
async fn value_errors_get_error_frames_and_the_connection_stays_open() {
    // A budget large enough that the rate limit is not what answers.
    let app = spawn_app_with(generous_budget).await;
    let (mut alice, _) = app.join("alice", "general").await;
    let cases = [
        (
            json!({"type":"join","id":1,"room":"Bad Room"}),
            "bad_request",
        ),
        (
            json!({"type":"send","id":2,"room":"UPPER","body":"x"}),
            "bad_request",
        ),
        (
            json!({"type":"send","id":3,"room":"elsewhere","body":"x"}),
            "not_joined",
        ),
        (
            json!({"type":"send","id":4,"room":"general","body":""}),
            "invalid_body",
        ),
        (
            json!({"type":"send","id":5,"room":"general","body":"a\u{0}b"}),
            "invalid_body",
        ),
        (
            json!({"type":"send","id":6,"room":"general","body":"x".repeat(2001)}),
            "invalid_body",
        ),
        (
            json!({"type":"send","id":7,"room":"general","body":"x","nonce":"has space"}),
            "bad_request",
        ),
        (
            json!({"type":"history","id":8,"room":"general","limit":101}),
            "bad_request",
        ),
        (
            json!({"type":"history","id":9,"room":"general","limit":0}),
            "bad_request",
        ),
        (
            json!({"type":"leave","id":10,"room":"elsewhere"}),
            "not_joined",
        ),
    ];
    for (frame, code) in cases {
        let id = frame["id"].clone();
        alice.send(frame).await;
        let error = alice.recv().await;
        assert_eq!(error["type"], "error", "{error}");
        assert_eq!(error["code"], code, "{error}");
        assert_eq!(error["id"], id);
        assert!(error["message"].as_str().is_some_and(|m| !m.is_empty()));
    }
    let ack = alice.say("general", "still here").await;
    assert_eq!(ack["seq"], 1);
}

#[tokio::test]
async fn a_bad_room_name_is_bad_request_even_when_not_joined() {
    let app = spawn_app().await;
    let mut alice = app.connect("alice").await;
    alice
        .send(json!({"type":"send","id":1,"room":"-nope","body":"x"}))
        .await;
    assert_eq!(alice.recv().await["code"], "bad_request");
}

#[tokio::test]
async fn a_rooms_claim_limits_which_rooms_can_be_joined() {
    let app = spawn_app().await;
    let token = sign(
        &json!({"sub":"id-eve","name":"eve","iat":now(),"exp":now()+600,"rooms":["general","team-*"]}),
    );
    let mut eve = app
        .try_connect(&[crate::helpers::bearer(&token)], "")
        .await
        .expect("accepted");
    eve.recv().await;
    eve.send(json!({"type":"join","id":1,"room":"secret"}))
        .await;
    let error = eve.recv().await;
    assert_eq!(
        (error["code"].as_str(), error["id"].as_u64()),
        (Some("forbidden"), Some(1))
    );
    eve.send(json!({"type":"join","id":2,"room":"team-red"}))
        .await;
    assert_eq!(eve.recv().await["type"], "joined");
    eve.send(json!({"type":"join","id":3,"room":"general"}))
        .await;
    assert_eq!(eve.recv().await["type"], "joined");
}

#[tokio::test]
async fn refresh_with_a_token_for_the_same_user_moves_the_expiry() {
    let app = spawn_app().await;
    let mut alice = app.connect("alice").await;
    let later = now() + 3600;
    let fresh = sign(&json!({"sub":"id-alice","name":"alice","iat":now(),"exp":later}));
    alice
        .send(json!({"type":"refresh","id":5,"token":fresh}))
        .await;
    assert_eq!(
        alice.recv().await,
        json!({"type":"refreshed","id":5,"expires_at":later})
    );

    let other = sign(&json!({"sub":"id-bob","name":"bob","iat":now(),"exp":later}));
    alice
        .send(json!({"type":"refresh","id":6,"token":other}))
        .await;
    let error = alice.recv().await;
    assert_eq!(
        (error["code"].as_str(), error["id"].as_u64()),
        (Some("unauthorized"), Some(6))
    );
    alice
        .send(json!({"type":"refresh","id":7,"token":"garbage"}))
        .await;
    assert_eq!(alice.recv().await["code"], "unauthorized");
}

#[tokio::test]
async fn the_room_list_shows_last_seq_and_who_is_online() {
    let app = spawn_app().await;
    let (mut alice, _) = app.join("alice", "general").await;
    alice.say("general", "one").await;
    alice.say("general", "two").await;
    let (_bob, _) = app.join("bob", "quiet").await;
    let rooms: Value = app
        .http
        .get(app.url("/api/rooms"))
        .bearer_auth(app.token("carol"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        rooms,
        json!({"rooms":[
            {"name":"general","last_seq":2,"online":1},
            {"name":"quiet","last_seq":0,"online":1}
        ]})
    );
}
