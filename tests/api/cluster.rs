//! Cluster mode: nodes on one PostgreSQL database and one Redis (`--redis-url`) share
//! rooms live. A member on any node gets every stored message once, in `seq` order,
//! even when Redis loses some of them. A ticket issued on one node is spent once on any,
//! an admin's revoke, disable or enable on one node holds on every node at once, the
//! per-user connection cap counts the user's connections on every node, per-IP rate
//! limits count a client's requests to every node, and presence, member lists and online
//! counts cover every node.
//!
//! These need the machine's PostgreSQL (see `postgres.rs`) and Redis at 127.0.0.1:6379
//! (no password). Each test has a database and a Redis key and channel prefix of its own
//! (the only keys are tickets, connection sets, rate budgets and presence entries, which
//! expire). Without the services they print `SKIPPED …` and pass, unless
//! `PALISADE_REQUIRE_SERVICES=1` (CI), where a missing service fails them.

use crate::helpers::{
    Client, TestApp, generous_budget, now, sign, spawn_app_with, user_token, wall_clock_past,
};
use crate::test_database::TestDatabase as Database;
use palisade::config::Settings;
use serde_json::{Value, json};
use std::collections::HashSet;
use std::time::Duration;

pub(crate) const REDIS: &str = "redis://127.0.0.1:6379";

/// Held by each test that uses Redis: one cuts its nodes' subscriptions, and must not
/// cut another test's nodes (tests of this file run one at a time).
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// What a cluster test runs on; the test holds it to its end (the guard with it).
pub(crate) struct Services {
    pub(crate) database: Database,
    /// A channel prefix no other test uses.
    pub(crate) prefix: String,
    _alone: tokio::sync::MutexGuard<'static, ()>,
}

/// A fresh database and prefix; `None`: skip the test.
pub(crate) async fn services() -> Option<Services> {
    let alone = ONE_AT_A_TIME.lock().await;
    let answered = tokio::time::timeout(Duration::from_secs(5), async {
        let client = redis::Client::open(REDIS)?;
        let mut conn = client.get_multiplexed_async_connection().await?;
        redis::cmd("PING").query_async::<()>(&mut conn).await
    })
    .await;
    let why = match answered {
        Ok(Ok(())) => None,
        Ok(Err(error)) => Some(error.to_string()),
        Err(_) => Some("no answer within 5 s".to_owned()),
    };
    if let Some(why) = why {
        assert!(
            std::env::var("PALISADE_REQUIRE_SERVICES").as_deref() != Ok("1"),
            "PALISADE_REQUIRE_SERVICES=1 but there is no Redis at 127.0.0.1:6379: {why}"
        );
        eprintln!("SKIPPED: no Redis at 127.0.0.1:6379 ({why})");
        return None;
    }
    Some(Services {
        database: Database::create().await?,
        prefix: prefix(),
        _alone: alone,
    })
}

fn prefix() -> String {
    format!("palisade-t-{}", uuid::Uuid::new_v4().simple())
}

/// A node on the test's database, fanning out through Redis under `prefix`.
pub(crate) async fn node(database: &Database, prefix: &str) -> TestApp {
    node_with(database, prefix, |_| {}).await
}

/// [`node`], with `tweak` applied to its settings last.
pub(crate) async fn node_with(
    database: &Database,
    prefix: &str,
    tweak: impl FnOnce(&mut Settings),
) -> TestApp {
    let (url, prefix) = (database.url.clone(), prefix.to_owned());
    spawn_app_with(move |settings| {
        settings.database_url = url;
        settings.redis_url = Some(REDIS.to_owned());
        settings.redis_prefix = prefix;
        generous_budget(settings);
        tweak(settings);
    })
    .await
}

/// Reads until `messages` message frames and `acks` acks have come (presence, count and
/// typing frames are skipped): the messages' (seq, body) and the acks' seqs, in order.
pub(crate) async fn read(
    client: &mut Client,
    messages: usize,
    acks: usize,
) -> (Vec<(u64, String)>, Vec<u64>) {
    let (mut got, mut acked) = (Vec::new(), Vec::new());
    while got.len() < messages || acked.len() < acks {
        let frame = client.recv().await;
        let seq = frame["seq"].as_u64();
        match frame["type"].as_str().unwrap_or("") {
            "message" => got.push((
                seq.expect("a seq"),
                frame["body"].as_str().expect("a body").to_owned(),
            )),
            "ack" => acked.push(seq.expect("a seq")),
            "presence" | "occupancy" | "typing" => {}
            _ => panic!("unexpected frame {frame}"),
        }
    }
    (got, acked)
}

/// The ids of the Redis connections in pub/sub mode now, or of every connection.
async fn redis_clients(pubsub_only: bool) -> HashSet<u64> {
    let client = redis::Client::open(REDIS).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let mut list = redis::cmd("CLIENT");
    list.arg("LIST");
    if pubsub_only {
        list.arg("TYPE").arg("pubsub");
    }
    let text: String = list.query_async(&mut conn).await.unwrap();
    text.lines()
        .filter_map(|line| line.strip_prefix("id=")?.split(' ').next()?.parse().ok())
        .collect()
}

/// Closes these Redis connections, if they are in pub/sub mode (as Redis does when it
/// restarts or drops a slow subscriber): what was published meanwhile is lost to them.
async fn kill_subscribers(ids: &HashSet<u64>) -> usize {
    let client = redis::Client::open(REDIS).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let mut killed = 0;
    for id in redis_clients(true).await.intersection(ids) {
        let gone: i64 = redis::cmd("CLIENT")
            .arg("KILL")
            .arg("ID")
            .arg(*id)
            .query_async(&mut conn)
            .await
            .unwrap_or(0);
        killed += usize::try_from(gone).unwrap_or(0);
    }
    killed
}

/// A node on the cluster's database under another prefix (an outsider: what it
/// publishes, the others never hear), then `n` nodes of the cluster, and the Redis
/// connections those `n` opened (to cut them).
async fn with_an_outsider(held: &Services, n: usize) -> (TestApp, Vec<TestApp>, HashSet<u64>) {
    let outsider = node(&held.database, &prefix()).await;
    let before = redis_clients(false).await;
    let mut nodes = Vec::new();
    for _ in 0..n {
        nodes.push(node(&held.database, &held.prefix).await);
    }
    let ours = redis_clients(false)
        .await
        .difference(&before)
        .copied()
        .collect();
    (outsider, nodes, ours)
}

#[tokio::test]
async fn every_member_on_every_node_gets_every_message_of_concurrent_senders_once_in_seq_order() {
    let Some(held) = services().await else {
        return;
    };
    let (database, prefix) = (&held.database, &held.prefix);
    let one = node(database, prefix).await;
    let two = node(database, prefix).await;
    const SENDERS: usize = 4;
    const EACH: usize = 15;
    const TOTAL: usize = SENDERS * EACH;

    let (mut alice, _) = one.join("alice", "general").await;
    let (mut bob, _) = two.join("bob", "general").await;
    let mut senders = Vec::new();
    for i in 0..SENDERS {
        let app = if i % 2 == 0 { &one } else { &two };
        senders.push(app.join(&format!("sender{i}"), "general").await.0);
    }
    let three = node(database, prefix).await;
    let mut latecomer = three.connect("latecomer").await;
    let sending: Vec<_> = senders
        .into_iter()
        .enumerate()
        .map(|(i, mut sender)| {
            tokio::spawn(async move {
                for k in 0..EACH {
                    sender
                        .send(json!({"type":"send","room":"general","body":format!("s{i}-{k}")}))
                        .await;
                }
                read(&mut sender, TOTAL, EACH).await
            })
        })
        .collect();
    // Alice says when she has a first message: sending is under way.
    let (first_seen, seen_first) = tokio::sync::oneshot::channel();
    let listening = vec![
        tokio::spawn(async move {
            let (mut got, _) = read(&mut alice, 1, 0).await;
            let _ = first_seen.send(());
            got.extend(read(&mut alice, TOTAL - 1, 0).await.0);
            (got, Vec::new())
        }),
        tokio::spawn(async move { read(&mut bob, TOTAL, 0).await }),
    ];
    // Then the room's first member on a third node joins mid-stream: its snapshot and
    // what follows it live are every message once.
    seen_first.await.expect("alice got a first message");
    latecomer
        .send(json!({"type":"join","room":"general","since":0}))
        .await;
    let joined = latecomer.recv_type("joined").await;
    let mut late: Vec<(u64, String)> = joined["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .map(|m| {
            (
                m["seq"].as_u64().unwrap(),
                m["body"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    late.extend(read(&mut latecomer, TOTAL - late.len(), 0).await.0);

    let mut everyone = Vec::new();
    let mut acked = Vec::new();
    for (i, task) in sending.into_iter().enumerate() {
        let (got, acks) = task.await.expect("a sender finishes");
        acked.push((i, acks));
        everyone.push(got);
    }
    for task in listening {
        everyone.push(task.await.expect("a member finishes").0);
    }
    let expected: Vec<u64> = (1..=TOTAL as u64).collect();
    let reference = everyone[0].clone();
    everyone.push(late);
    for got in &everyone {
        let seqs: Vec<u64> = got.iter().map(|(seq, _)| *seq).collect();
        assert_eq!(seqs, expected, "every message once, in seq order");
        assert_eq!(
            got, &reference,
            "the same message under each seq everywhere"
        );
    }
    let mut all_acks = Vec::new();
    for (i, acks) in acked {
        let bodies: Vec<&str> = acks
            .iter()
            .map(|seq| reference[usize::try_from(*seq).unwrap() - 1].1.as_str())
            .collect();
        let sent: Vec<String> = (0..EACH).map(|k| format!("s{i}-{k}")).collect();
        assert_eq!(bodies, sent, "each ack names the seq its message has");
        all_acks.extend(acks);
    }
    all_acks.sort_unstable();
    assert_eq!(all_acks, expected);
    one.stop().await;
    two.stop().await;
    three.stop().await;
}

#[tokio::test]
async fn messages_redis_never_carried_still_reach_every_member_once_in_order() {
    let Some(held) = services().await else {
        return;
    };
    // What the outsider stores, the other two never hear of through Redis (as if
    // Redis had lost it).
    let (outsider, mut nodes, ours) = with_an_outsider(&held, 2).await;
    let (two, one) = (nodes.remove(1), nodes.remove(0));

    let (mut alice, _) = one.join("alice", "general").await;
    let (mut bob, _) = two.join("bob", "general").await;
    let (mut carol, _) = outsider.join("carol", "general").await;
    alice
        .send(json!({"type":"send","room":"general","body":"a1"}))
        .await;
    assert_eq!(read(&mut alice, 1, 1).await.1, [1]);
    assert_eq!(read(&mut bob, 1, 0).await.0, [(1, "a1".to_owned())]);

    // A gap: seq 2 was never published here; the next message brings it from the store.
    carol
        .send(json!({"type":"send","room":"general","body":"c2"}))
        .await;
    assert_eq!(
        read(&mut carol, 2, 1).await.1,
        [2],
        "a1 (from the store) and c2"
    );
    alice
        .send(json!({"type":"send","room":"general","body":"a3"}))
        .await;
    let in_order = vec![(2, "c2".to_owned()), (3, "a3".to_owned())];
    assert_eq!(read(&mut alice, 2, 1).await, (in_order.clone(), vec![3]));
    assert_eq!(read(&mut bob, 2, 0).await.0, in_order);

    // Redis drops the nodes' subscriptions while a message is stored: they read it
    // from the store when they reconnect, with no later message to reveal the gap.
    carol
        .send(json!({"type":"send","room":"general","body":"c4"}))
        .await;
    assert_eq!(
        read(&mut carol, 2, 1).await.1,
        [4],
        "a3 (from the store) and c4"
    );
    assert!(
        kill_subscribers(&ours).await >= 2,
        "both nodes' subscriptions were cut"
    );
    let missed = vec![(4, "c4".to_owned())];
    assert_eq!(read(&mut alice, 1, 0).await.0, missed);
    assert_eq!(read(&mut bob, 1, 0).await.0, missed);

    // And then live again, nothing repeated.
    bob.send(json!({"type":"send","room":"general","body":"b5"}))
        .await;
    assert_eq!(
        read(&mut bob, 1, 1).await,
        (vec![(5, "b5".to_owned())], vec![5])
    );
    assert_eq!(read(&mut alice, 1, 0).await.0, [(5, "b5".to_owned())]);
    one.stop().await;
    two.stop().await;
    outsider.stop().await;
}

#[tokio::test]
async fn an_unreachable_redis_stops_the_server_at_start_naming_the_server_not_the_password() {
    let mut settings = palisade::config::Settings::development();
    settings.listen = "127.0.0.1:0".parse().unwrap();
    settings.database_url = "sqlite::memory:".to_owned();
    // Port 1 on loopback: nothing listens there.
    settings.redis_url = Some("redis://:hunter2@127.0.0.1:1".to_owned());
    let error = match palisade::startup::Application::build(settings).await {
        Ok(_) => panic!("the server started without its Redis"),
        Err(error) => error.to_string(),
    };
    assert!(
        error.contains("redis://127.0.0.1:1") && error.contains("--redis-url"),
        "{error}"
    );
    assert!(!error.contains("hunter2"), "{error}");
}

/// A ticket for this token, asked of `app`.
pub(crate) async fn ticket_from(app: &TestApp, token: &str) -> String {
    let response = app.request_ticket(token).await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    body["ticket"].as_str().expect("a ticket").to_owned()
}

/// A handshake on `app` with `?ticket=`: whether it was accepted (a refusal must be 401).
pub(crate) async fn ticket_accepted(app: &TestApp, ticket: &str) -> bool {
    match app.try_connect(&[], &format!("?ticket={ticket}")).await {
        Ok(mut client) => {
            assert_eq!(client.recv().await["type"], "welcome");
            true
        }
        Err(refusal) => {
            assert_eq!(refusal.status, 401, "{refusal:?}");
            false
        }
    }
}

#[tokio::test]
async fn a_ticket_issued_on_one_node_works_once_on_another_and_never_again_anywhere() {
    let Some(held) = services().await else {
        return;
    };
    let (database, prefix) = (&held.database, &held.prefix);
    let one = node(database, prefix).await;
    let two = node(database, prefix).await;
    let ticket = ticket_from(&one, &user_token("alice")).await;
    assert!(
        ticket_accepted(&two, &ticket).await,
        "spent on the other node"
    );
    assert!(!ticket_accepted(&two, &ticket).await, "not twice there");
    assert!(
        !ticket_accepted(&one, &ticket).await,
        "nor where it was issued"
    );

    // And the other way round, racing: of two handshakes at once, exactly one gets in.
    let ticket = ticket_from(&two, &user_token("bob")).await;
    let (first, second) = tokio::join!(
        ticket_accepted(&one, &ticket),
        ticket_accepted(&two, &ticket)
    );
    assert!(first ^ second, "spent exactly once: {first} {second}");
    one.stop().await;
    two.stop().await;
}

/// A token the operator's app mints for its admin (same shared secret, `role: admin`).
fn operator_admin() -> String {
    sign(&json!({"sub":"app-root","name":"root","iat":now(),"exp":now()+900,"role":"admin"}))
}

/// `POST /api/admin/users/{user_id}/{action}` on `app` as the operator's admin: the body.
async fn admin_action(app: &TestApp, user_id: &str, action: &str) -> Value {
    let response = app
        .http
        .post(app.url(&format!("/api/admin/users/{user_id}/{action}")))
        .bearer_auth(operator_admin())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    response.json().await.unwrap()
}

/// The close code of `client`, which must come within a few seconds.
async fn closed_soon(client: &mut Client) -> u16 {
    tokio::time::timeout(Duration::from_secs(3), client.expect_close())
        .await
        .expect("closed within a few seconds")
}

#[tokio::test]
async fn a_revocation_on_one_node_closes_the_users_sockets_on_another_with_4003() {
    let Some(held) = services().await else {
        return;
    };
    let (database, prefix) = (&held.database, &held.prefix);
    let one = node(database, prefix).await;
    let two = node(database, prefix).await;
    let token = user_token("bob");
    let mut bob = two.connect_with(&token).await.expect("accepted");
    assert_eq!(bob.recv().await["type"], "welcome");
    let (mut carol, _) = two.join("carol", "general").await;

    let body = admin_action(&one, "id-bob", "revoke").await;
    assert_eq!(
        body["closed_connections"], 0,
        "none on the node that revoked"
    );
    assert_eq!(closed_soon(&mut bob).await, 4003);
    assert_eq!(two.refused(&token).await.status, 401);
    assert_eq!(one.refused(&token).await.status, 401);
    // Nobody else is touched.
    assert_eq!(carol.say("general", "still here").await["type"], "ack");

    // A token issued after the revocation works anywhere: a revocation is not a ban.
    wall_clock_past(body["revoked_at"].as_i64().unwrap()).await;
    let mut back = two.connect_with(&user_token("bob")).await.expect("back");
    assert_eq!(back.recv().await["type"], "welcome");
    one.stop().await;
    two.stop().await;
}

#[tokio::test]
async fn a_ban_on_one_node_closes_the_users_sockets_on_another_and_enabling_there_lifts_it() {
    let Some(held) = services().await else {
        return;
    };
    let (database, prefix) = (&held.database, &held.prefix);
    let one = node(database, prefix).await;
    let two = node(database, prefix).await;
    let token = user_token("bob");
    let mut bob = two.connect_with(&token).await.expect("accepted");
    assert_eq!(bob.recv().await["type"], "welcome");

    let body = admin_action(&one, "id-bob", "disable").await;
    assert_eq!(closed_soon(&mut bob).await, 4003);
    assert_eq!(two.refused(&token).await.status, 401);

    // A token issued after the ban is refused on the other node too: banned, not revoked.
    wall_clock_past(body["disabled_at"].as_i64().unwrap()).await;
    let fresh = user_token("bob");
    assert_eq!(two.refused(&fresh).await.status, 401);
    assert_eq!(two.request_ticket(&fresh).await.status(), 401);

    // Enabled on the other node: the first node lets bob back in. Nothing a client
    // sees tells when the first node applied it, so a second event follows it on the
    // same channel from the same node: once carol's socket on the first node closes
    // for that one, the enable (published before it, and Redis keeps one publisher's
    // order) has been applied too.
    let mut carol = one.connect_with(&user_token("carol")).await.expect("carol");
    assert_eq!(carol.recv().await["type"], "welcome");
    admin_action(&two, "id-bob", "enable").await;
    admin_action(&two, "id-carol", "revoke").await;
    assert_eq!(closed_soon(&mut carol).await, 4003);
    let mut back = one.connect_with(&fresh).await.expect("no longer banned");
    assert_eq!(back.recv().await["type"], "welcome");
    one.stop().await;
    two.stop().await;
}

#[tokio::test]
async fn a_revocation_a_node_never_heard_of_closes_the_sockets_once_it_reconnects_to_redis() {
    let Some(held) = services().await else {
        return;
    };
    // The outsider's control events never reach the other node (as if Redis had lost
    // them); `ours` has that node's control subscription, made at start.
    let (outsider, mut nodes, ours) = with_an_outsider(&held, 1).await;
    let two = nodes.remove(0);
    let token = user_token("bob");
    let mut bob = two.connect_with(&token).await.expect("accepted");
    assert_eq!(bob.recv().await["type"], "welcome");
    let mut dave = two.connect("dave").await;

    admin_action(&outsider, "id-bob", "revoke").await;
    admin_action(&outsider, "id-dave", "disable").await;
    // Unheard: the handshake still takes the revoked token here.
    let mut stale = two.connect_with(&token).await.expect("not heard of yet");
    assert_eq!(stale.recv().await["type"], "welcome");

    // Redis drops the node's connections: on reconnecting it reads the store again.
    assert!(
        kill_subscribers(&ours).await >= 1,
        "the control connection was cut"
    );
    assert_eq!(closed_soon(&mut bob).await, 4003);
    assert_eq!(closed_soon(&mut stale).await, 4003);
    assert_eq!(closed_soon(&mut dave).await, 4003);
    assert_eq!(two.refused(&token).await.status, 401);
    assert_eq!(two.refused(&user_token("dave")).await.status, 401);
    two.stop().await;
    outsider.stop().await;
}

/// A TCP relay to Redis that can be stalled or cut. Sending `true` stalls it: every
/// connection stays open and nothing more goes through (Redis hung, as far as the node
/// knows). Dropping the returned sender cuts it: it stops taking connections and closes
/// every one it carries (Redis gone).
async fn redis_relay() -> (String, tokio::sync::watch::Sender<bool>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("redis://{}", listener.local_addr().unwrap());
    let (control, watch) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        let mut accepting = watch.clone();
        loop {
            let accepted = tokio::select! {
                accepted = listener.accept() => accepted,
                changed = accepting.changed() => match changed {
                    Ok(()) => continue,
                    Err(_) => return,
                },
            };
            let Ok((mut inbound, _)) = accepted else {
                return;
            };
            let mut control = watch.clone();
            tokio::spawn(async move {
                let Ok(mut outbound) = tokio::net::TcpStream::connect("127.0.0.1:6379").await
                else {
                    return;
                };
                tokio::select! {
                    _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => return,
                    stalled = control.wait_for(|stalled| *stalled) => if stalled.is_err() {
                        return;
                    },
                }
                // Stalled: both ends stay open, unanswered, until the relay is cut.
                while control.changed().await.is_ok() {}
            });
        }
    });
    (url, control)
}

/// A node like the others, with `tweak` applied, that reaches Redis only through a
/// [`redis_relay`]: the node, and the relay's control (`true` stalls it, dropping it
/// cuts it).
async fn node_behind_relay(
    held: &Services,
    tweak: impl FnOnce(&mut Settings),
) -> (TestApp, tokio::sync::watch::Sender<bool>) {
    let (relay, control) = redis_relay().await;
    let app = node_with(&held.database, &held.prefix, move |settings| {
        settings.redis_url = Some(relay);
        tweak(settings);
    })
    .await;
    (app, control)
}

#[tokio::test]
async fn without_redis_tickets_are_503_unavailable_and_nothing_panics() {
    let Some(held) = services().await else {
        return;
    };
    let (app, cut) = node_behind_relay(&held, |_| {}).await;
    let token = user_token("alice");
    let ticket = ticket_from(&app, &token).await;

    drop(cut);
    let response = app.request_ticket(&token).await;
    assert_eq!(response.status(), 503);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "unavailable");
    let refusal = app
        .try_connect(&[], &format!("?ticket={ticket}"))
        .await
        .err()
        .expect("refused");
    assert_eq!(refusal.status, 503);
    assert_eq!(refusal.code(), "unavailable");
    // Tokens do not need Redis.
    let mut alice = app.connect_with(&token).await.expect("accepted");
    assert_eq!(alice.recv().await["type"], "welcome");
    app.stop().await;
}

/// Two nodes of the cluster with a per-user cap of 2.
async fn capped_pair(held: &Services) -> (TestApp, TestApp) {
    let cap = |settings: &mut Settings| settings.limits.max_connections_per_user = 2;
    let a = node_with(&held.database, &held.prefix, cap).await;
    let b = node_with(&held.database, &held.prefix, cap).await;
    (a, b)
}

#[tokio::test]
async fn the_per_user_connection_cap_counts_the_users_connections_on_every_node() {
    let Some(held) = services().await else {
        return;
    };
    let (a, b) = capped_pair(&held).await;
    let mut on_a = a.connect("alice").await;
    let _on_b = b.connect("alice").await;
    for node in [&a, &b] {
        let refusal = node.refused(&node.token("alice")).await;
        assert_eq!(refusal.status, 429);
        assert_eq!(refusal.code(), "too_many_connections");
        assert!(refusal.retry_after.is_some());
    }
    // Another user is not counted with alice.
    assert!(a.connect_with(&a.token("bob")).await.is_ok());

    // The place is given back in Redis before the server answers the close.
    on_a.close_normally().await;
    assert_eq!(on_a.expect_close().await, 1000);
    let mut again = b
        .connect_with(&b.token("alice"))
        .await
        .expect("a place is free");
    assert_eq!(again.recv().await["type"], "welcome");
    assert_eq!(b.refused(&b.token("alice")).await.status, 429);
    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn a_connection_whose_expiry_is_past_no_longer_counts_towards_the_cap() {
    let Some(held) = services().await else {
        return;
    };
    let (a, b) = capped_pair(&held).await;
    // Two places held by a node that died long ago: it stopped refreshing them.
    let client = redis::Client::open(REDIS).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let key = format!("{}:conns:id-alice", held.prefix);
    let long_ago = now().saturating_sub(3600).saturating_mul(1000);
    redis::cmd("ZADD")
        .arg(&key)
        .arg(long_ago)
        .arg("dead-node:1")
        .arg(long_ago)
        .arg("dead-node:2")
        .query_async::<()>(&mut conn)
        .await
        .unwrap();
    let _first = a.connect("alice").await;
    let _second = b.connect("alice").await;
    assert_eq!(a.refused(&a.token("alice")).await.status, 429);
    let members: Vec<String> = redis::cmd("ZRANGE")
        .arg(&key)
        .arg(0)
        .arg(-1)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(members.len(), 2, "{members:?}");
    assert!(
        members.iter().all(|m| !m.starts_with("dead-node")),
        "{members:?}"
    );
    let ttl: i64 = redis::cmd("PTTL")
        .arg(&key)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(ttl > 0, "an idle key vanishes: {ttl}");
    a.stop().await;
    b.stop().await;
}

/// Two nodes of the cluster with small per-IP budgets: 4 logins or registrations, 4
/// refused credentials and 4 tickets per client, refilled one a minute (so none refills
/// during a test).
async fn rate_limited_pair(held: &Services) -> (TestApp, TestApp) {
    let small = |settings: &mut Settings| small_budgets(settings);
    let a = node_with(&held.database, &held.prefix, small).await;
    let b = node_with(&held.database, &held.prefix, small).await;
    (a, b)
}

fn small_budgets(settings: &mut Settings) {
    settings.limits.auth_per_minute = 1;
    settings.limits.auth_burst = 4;
    settings.limits.handshake_failures_per_minute = 1;
    settings.limits.handshake_failure_burst = 4;
    settings.limits.tickets_per_minute = 4;
}

/// A `429 rate_limited` answer with a `Retry-After` of at most a minute (one unit).
async fn assert_rate_limited(response: reqwest::Response) {
    assert_eq!(response.status(), 429);
    let retry_after: u64 = response.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry_after), "{retry_after}");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "rate_limited");
}

#[tokio::test]
async fn logins_from_one_address_spread_over_two_nodes_spend_one_budget() {
    let Some(held) = services().await else {
        return;
    };
    let (a, b) = rate_limited_pair(&held).await;
    // Two on each node: either alone would take four.
    for node in [&a, &b, &a, &b] {
        assert_eq!(node.login("nobody", "wrong password 1").await.status(), 401);
    }
    assert_rate_limited(a.login("nobody", "wrong password 1").await).await;
    assert_rate_limited(b.register("carol", "a fine long password").await).await;
    // The budget's key expires once it would be full again: four minutes at most.
    let client = redis::Client::open(REDIS).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let ttl: i64 = redis::cmd("PTTL")
        .arg(format!("{}:rate:auth:127.0.0.1", held.prefix))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!((180_000..=240_000).contains(&ttl), "{ttl}");
    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn refused_handshakes_spread_over_two_nodes_spend_one_failure_budget() {
    let Some(held) = services().await else {
        return;
    };
    let (a, b) = rate_limited_pair(&held).await;
    for node in [&a, &b, &a, &b] {
        let refusal = node.refused("not-a-token").await;
        assert_eq!(refusal.status, 401);
    }
    for node in [&a, &b] {
        let refusal = node.refused("not-a-token").await;
        assert_eq!(refusal.status, 429);
        assert_eq!(refusal.code(), "rate_limited");
        assert!(refusal.retry_after.is_some());
    }
    // The same budget as refused credentials over HTTP, on any node.
    assert_rate_limited(a.request_ticket("not-a-token").await).await;
    // Good credentials are never refused by it.
    let mut alice = b.connect_with(&b.token("alice")).await.expect("accepted");
    assert_eq!(alice.recv().await["type"], "welcome");
    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn tickets_asked_of_two_nodes_from_one_address_spend_one_budget() {
    let Some(held) = services().await else {
        return;
    };
    let (a, b) = rate_limited_pair(&held).await;
    let token = user_token("alice");
    for node in [&a, &b, &a, &b] {
        assert_eq!(node.request_ticket(&token).await.status(), 200);
    }
    assert_rate_limited(a.request_ticket(&token).await).await;
    assert_rate_limited(b.request_ticket(&token).await).await;
    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn with_redis_hung_or_gone_logins_are_answered_promptly_and_limited_by_the_node() {
    let Some(held) = services().await else {
        return;
    };
    let (app, control) = node_behind_relay(&held, small_budgets).await;
    let prompt = Duration::from_secs(2);
    let login = || async {
        let asked = std::time::Instant::now();
        let response = app.login("nobody", "wrong password 1").await;
        let took = asked.elapsed();
        assert!(took < prompt, "answered after {took:?}");
        response
    };
    assert_eq!(login().await.status(), 401);
    // Redis takes the commands and never answers.
    control.send(true).unwrap();
    assert_eq!(login().await.status(), 401);
    assert_eq!(login().await.status(), 401);
    // Redis is gone.
    drop(control);
    assert_eq!(login().await.status(), 401);
    // The node's own budget of four is spent.
    assert_rate_limited(login().await).await;
    app.stop().await;
}

/// The next presence or typing frame (messages, acks and counts are not expected here).
async fn next_ephemeral(client: &mut Client) -> Value {
    loop {
        let frame = client.recv().await;
        match frame["type"].as_str().unwrap_or("") {
            "presence" | "typing" => return frame,
            "occupancy" => {}
            _ => panic!("expected presence or typing, got {frame}"),
        }
    }
}

/// `(type, event, user name)` of a presence or typing frame, to compare in one line.
fn ephemeral(frame: &Value) -> (String, String, String) {
    let text = |v: &Value| v.as_str().unwrap_or("").to_owned();
    (
        text(&frame["type"]),
        text(&frame["event"]),
        text(&frame["user"]["name"]),
    )
}

fn said(kind: &str, event: &str, name: &str) -> (String, String, String) {
    (kind.to_owned(), event.to_owned(), name.to_owned())
}

/// Every key under the prefix: each must expire (nothing is left in Redis for ever).
async fn keys_without_expiry(prefix: &str) -> Vec<String> {
    let client = redis::Client::open(REDIS).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{prefix}:*"))
        .query_async(&mut conn)
        .await
        .unwrap();
    let mut lasting = Vec::new();
    for key in keys {
        let ttl: i64 = redis::cmd("PTTL")
            .arg(&key)
            .query_async(&mut conn)
            .await
            .unwrap();
        if ttl < 0 {
            lasting.push(key);
        }
    }
    lasting
}

#[tokio::test]
async fn a_user_on_two_nodes_is_announced_joining_once_and_leaving_only_when_the_last_connection_leaves()
 {
    let Some(held) = services().await else {
        return;
    };
    let (database, prefix) = (&held.database, &held.prefix);
    let one = node(database, prefix).await;
    let two = node(database, prefix).await;
    let (mut watcher, _) = one.join("watcher", "general").await;
    let (mut marker, _) = one.join("marker", "general").await;
    assert_eq!(
        ephemeral(&next_ephemeral(&mut watcher).await),
        said("presence", "join", "marker")
    );

    let (mut alice_one, _) = one.join("alice", "general").await;
    assert_eq!(
        ephemeral(&next_ephemeral(&mut watcher).await),
        said("presence", "join", "alice")
    );
    // Her second connection, on the other node: no second `join`. Her typing leaves
    // that node after any presence frame its join would have sent.
    let (mut alice_two, _) = two.join("alice", "general").await;
    alice_two
        .send(json!({"type":"typing","room":"general"}))
        .await;
    assert_eq!(
        ephemeral(&next_ephemeral(&mut watcher).await),
        said("typing", "", "alice"),
        "alice is announced once however many nodes she is on"
    );

    // Her first connection leaves: she is still on the other node. A `leave` would be
    // queued to the watcher (on the same node) before her `left` comes.
    alice_one
        .send(json!({"type":"leave","room":"general"}))
        .await;
    alice_one.recv_type("left").await;
    marker.send(json!({"type":"typing","room":"general"})).await;
    assert_eq!(
        ephemeral(&next_ephemeral(&mut watcher).await),
        said("typing", "", "marker"),
        "alice is still in the room on the other node"
    );

    alice_two.close_normally().await;
    assert_eq!(
        ephemeral(&next_ephemeral(&mut watcher).await),
        said("presence", "leave", "alice"),
        "her last connection anywhere left"
    );
    let lasting = keys_without_expiry(prefix).await;
    assert!(lasting.is_empty(), "keys that never expire: {lasting:?}");
    one.stop().await;
    two.stop().await;
}

/// The names of a `joined` frame's members, sorted.
fn member_names(joined: &Value) -> Vec<String> {
    let mut names: Vec<String> = joined["members"]
        .as_array()
        .expect("a joined frame lists members")
        .iter()
        .map(|m| m["name"].as_str().expect("a member has a name").to_owned())
        .collect();
    names.sort();
    names
}

#[tokio::test]
async fn joined_on_one_node_lists_and_counts_the_users_connected_only_to_another() {
    let Some(held) = services().await else {
        return;
    };
    let (database, prefix) = (&held.database, &held.prefix);
    let one = node(database, prefix).await;
    let two = node(database, prefix).await;
    let (_alice, _) = one.join("alice", "general").await;
    let (_carol, _) = one.join("carol", "general").await;
    let (_bob, joined) = two.join("bob", "general").await;
    assert_eq!(member_names(&joined), ["alice", "bob", "carol"], "{joined}");
    assert_eq!(joined["online"], 3, "{joined}");
    one.stop().await;
    two.stop().await;
}

/// `GET /api/rooms` on `app`: room name → online.
async fn online_by_room(app: &TestApp) -> std::collections::BTreeMap<String, u64> {
    let reply: Value = app
        .http
        .get(app.url("/api/rooms"))
        .bearer_auth(app.token("reader"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    reply["rooms"]
        .as_array()
        .expect("a list of rooms")
        .iter()
        .map(|room| {
            (
                room["name"].as_str().unwrap().to_owned(),
                room["online"].as_u64().unwrap(),
            )
        })
        .collect()
}

#[tokio::test]
async fn the_rooms_list_counts_the_users_of_every_node() {
    let Some(held) = services().await else {
        return;
    };
    let (database, prefix) = (&held.database, &held.prefix);
    let one = node(database, prefix).await;
    let two = node(database, prefix).await;
    let (_alice, _) = one.join("alice", "general").await;
    let (_bob, _) = two.join("bob", "general").await;
    let (_bob_again, _) = one.join("bob", "general").await;
    // A room with no message and nobody on the node asked.
    let (_carol, _) = one.join("carol", "quiet").await;
    let rooms = online_by_room(&two).await;
    assert_eq!(rooms.get("general"), Some(&2), "{rooms:?}");
    assert_eq!(rooms.get("quiet"), Some(&1), "{rooms:?}");
    assert_eq!(online_by_room(&one).await, rooms, "every node counts alike");
    one.stop().await;
    two.stop().await;
}

#[tokio::test]
async fn while_redis_does_not_answer_a_join_still_succeeds_with_this_nodes_own_presence() {
    let Some(held) = services().await else {
        return;
    };
    let (app, cut) = node_behind_relay(&held, |_| {}).await;
    let (mut alice, _) = app.join("alice", "general").await;

    drop(cut);
    let (_bob, joined) = app.join("bob", "general").await;
    assert_eq!(member_names(&joined), ["alice", "bob"], "{joined}");
    assert_eq!(joined["online"], 2, "{joined}");
    assert_eq!(
        ephemeral(&next_ephemeral(&mut alice).await),
        said("presence", "join", "bob"),
        "announced by this node's view"
    );
    app.stop().await;
}

#[tokio::test]
async fn whether_a_join_is_announced_or_counted_depends_on_the_clusters_count() {
    let Some(held) = services().await else {
        return;
    };
    let (database, prefix) = (&held.database, &held.prefix);
    let small = |settings: &mut Settings| {
        settings.limits.presence_full_max = 2;
        settings.limits.presence_count_ms = 50;
    };
    let one = node_with(database, prefix, small).await;
    let two = node_with(database, prefix, small).await;
    let (mut alice, _) = one.join("alice", "general").await;
    let (_bob, _) = two.join("bob", "general").await;
    assert_eq!(
        ephemeral(&next_ephemeral(&mut alice).await),
        said("presence", "join", "bob"),
        "two users: announced"
    );
    // Two users on node one, three in the room: counted, with the cluster's number.
    let (_carol, joined) = one.join("carol", "general").await;
    assert_eq!(joined["online"], 3, "{joined}");
    let count = alice.recv().await;
    assert_eq!(count["type"], "occupancy", "{count}");
    assert_eq!(count["online"], 3, "{count}");
    one.stop().await;
    two.stop().await;
}

#[tokio::test]
async fn presence_entries_redis_lost_are_written_back_by_their_nodes_next_refresh() {
    let Some(held) = services().await else {
        return;
    };
    let (database, prefix) = (&held.database, &held.prefix);
    let quick = |settings: &mut Settings| settings.limits.node_ttl_ms = 900;
    let one = node_with(database, prefix, quick).await;
    let two = node_with(database, prefix, quick).await;
    let (_alice, _) = one.join("alice", "general").await;
    let (mut bob, joined) = two.join("bob", "general").await;
    assert_eq!(member_names(&joined), ["alice", "bob"], "{joined}");

    // Redis restarted empty, as far as presence goes.
    let client = redis::Client::open(REDIS).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{prefix}:*"))
        .query_async(&mut conn)
        .await
        .unwrap();
    let presence: Vec<&String> = keys
        .iter()
        .filter(|k| !k.contains(":conns:") && !k.contains(":ticket:"))
        .collect();
    assert!(!presence.is_empty(), "{keys:?}");
    redis::cmd("DEL")
        .arg(&presence)
        .query_async::<()>(&mut conn)
        .await
        .unwrap();

    // Each node writes its users back, and a user nobody had listed is announced.
    assert_eq!(
        ephemeral(&next_ephemeral(&mut bob).await),
        said("presence", "join", "alice")
    );
    let (_carol, joined) = two.join("carol", "general").await;
    assert!(
        member_names(&joined).contains(&"alice".to_owned()),
        "{joined}"
    );
    one.stop().await;
    two.stop().await;
}

#[tokio::test]
async fn while_redis_does_not_answer_handshakes_are_accepted_promptly_up_to_the_nodes_own_cap() {
    let Some(held) = services().await else {
        return;
    };
    let (app, control) = node_behind_relay(&held, |settings| {
        settings.limits.max_connections_per_user = 3;
    })
    .await;
    // The node waits 500 ms for Redis, then judges alone.
    let prompt = Duration::from_secs(1);
    let accepted = || async {
        let asked = std::time::Instant::now();
        let mut client = app
            .connect_with(&app.token("alice"))
            .await
            .expect("accepted without Redis's answer");
        let took = asked.elapsed();
        assert_eq!(client.recv().await["type"], "welcome");
        eprintln!("handshake accepted in {took:?}");
        assert!(took < prompt, "accepted after {took:?}");
        client
    };
    let _first = accepted().await;
    // Redis takes the commands and never answers.
    control.send(true).unwrap();
    let _second = accepted().await;
    // Redis is gone.
    drop(control);
    let _third = accepted().await;
    // The node's own count of alice's connections still caps her.
    let refusal = app.refused(&app.token("alice")).await;
    assert_eq!(refusal.status, 429);
    assert_eq!(refusal.code(), "too_many_connections");
    app.stop().await;
}
