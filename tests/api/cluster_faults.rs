//! Cluster mode when things break: the rows of docs/cluster.md's failure-mode table,
//! checked the way a client lives them. A node is killed (the real binary, so SIGKILL
//! is real) or stopped, PostgreSQL goes away under a node or crashes and restarts (a
//! server of the test's own, `private_postgres.rs`), or Redis is killed and started
//! again empty (a `redis-server` of the test's own): nothing acked is lost,
//! nothing is stored twice, a client that resends with its nonces and resumes with
//! `since` on another node misses nothing, members miss nothing of what was sent while
//! Redis was away, a node gets back on its own, and a killed node's users leave and get
//! their connection places back once `--node-ttl-ms` has passed.
//!
//! Same services, skip rule and one-at-a-time lock as `cluster.rs`.

use crate::cluster::{REDIS, Services, node_with, read, services, ticket_accepted, ticket_from};
use crate::helpers::{Client, ServerProcess, WAIT, await_ready_line, spawn_app_with, user_token};
use crate::private_postgres::PrivatePostgres;
use futures_util::{SinkExt, StreamExt};
use palisade::config::Settings;
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio_tungstenite::tungstenite::Message;

const ROOM: &str = "general";

/// Two nodes of the cluster as processes of the real binary, with a budget that lets a
/// test's senders send back to back.
async fn two_processes(held: &Services) -> (ServerProcess, ServerProcess) {
    let args = [
        "--redis-url",
        REDIS,
        "--redis-prefix",
        &held.prefix,
        "--messages-per-sec",
        "10000",
        "--message-burst",
        "10000",
    ];
    let one = ServerProcess::start(&held.database.url, &args).await;
    let two = ServerProcess::start(&held.database.url, &args).await;
    (one, two)
}

/// `name` on `node`, joined to the room `since` this seq (`None`: a plain join): the
/// client and its `joined` frame.
async fn joined_on(node: &ServerProcess, name: &str, since: Option<u64>) -> (Client, Value) {
    let mut client = node.connect(name).await;
    let mut join = json!({"type":"join","room":ROOM});
    if let Some(since) = since {
        join["since"] = json!(since);
    }
    client.send(join).await;
    let joined = client.recv_type("joined").await;
    (client, joined)
}

/// The (seq, body) of a `joined` frame's messages, oldest first.
fn snapshot(joined: &Value) -> Vec<(u64, String)> {
    joined["messages"]
        .as_array()
        .expect("a joined frame has messages")
        .iter()
        .map(|m| {
            (
                m["seq"].as_u64().expect("a stored message has a seq"),
                m["body"]
                    .as_str()
                    .expect("a stored message has a body")
                    .to_owned(),
            )
        })
        .collect()
}

/// What a sender knew when its node went away.
#[derive(Default)]
struct Cut {
    /// How many it sent (ids 1..=sent).
    sent: u64,
    /// Its acks: id → seq.
    acked: BTreeMap<u64, u64>,
    /// The last seq it received (messages come in seq order, so all before it too).
    last_seen: u64,
}

/// The body and nonce of sender `s`'s message `id`.
fn message(s: usize, id: u64) -> (String, String) {
    (format!("s{s}-m{id}"), format!("s{s}-n{id}"))
}

/// Sends messages (nonce, id) with at most `IN_FLIGHT` unacked at a time, up to
/// `CAP`, until the connection breaks; says on `acks` each time an ack comes.
async fn send_until_cut(mut client: Client, s: usize, acks: mpsc::UnboundedSender<()>) -> Cut {
    const IN_FLIGHT: u64 = 3;
    const CAP: u64 = 60;
    let mut cut = Cut::default();
    loop {
        while cut.sent - (cut.acked.len() as u64) < IN_FLIGHT && cut.sent < CAP {
            let id = cut.sent + 1;
            let (body, nonce) = message(s, id);
            let frame = json!({"type":"send","id":id,"room":ROOM,"body":body,"nonce":nonce});
            if client
                .stream
                .send(Message::text(frame.to_string()))
                .await
                .is_err()
            {
                return cut;
            }
            cut.sent = id;
        }
        let next = tokio::time::timeout(WAIT, client.stream.next())
            .await
            .expect("a frame, or the node's end, within the wait");
        let text = match next {
            Some(Ok(Message::Text(text))) => text,
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
            // Killed: the connection drops (reset or end), with no close frame.
            Some(Ok(Message::Close(_)) | Err(_)) | None => return cut,
            Some(Ok(other)) => panic!("unexpected {other:?}"),
        };
        let frame: Value = serde_json::from_str(&text).expect("the server sends JSON");
        match frame["type"].as_str().unwrap_or("") {
            "ack" => {
                let id = frame["id"].as_u64().expect("an ack names its send");
                cut.acked
                    .insert(id, frame["seq"].as_u64().expect("an ack has a seq"));
                let _ = acks.send(());
            }
            "message" => cut.last_seen = frame["seq"].as_u64().expect("a message has a seq"),
            "presence" | "occupancy" | "typing" => {}
            _ => panic!("unexpected frame {frame}"),
        }
    }
}

#[tokio::test]
async fn killing_a_node_mid_stream_loses_no_acked_message_and_its_clients_resume_on_another() {
    const SENDERS: usize = 3;
    const KILL_AFTER_ACKS: usize = 12;
    let Some(held) = services().await else {
        return;
    };
    let (mut one, two) = two_processes(&held).await;
    let (mut watcher, _) = joined_on(&two, "watcher", None).await;
    let (acks, mut acked) = mpsc::unbounded_channel();
    let mut sending = Vec::new();
    for s in 0..SENDERS {
        let (client, _) = joined_on(&one, &format!("sender{s}"), None).await;
        sending.push(tokio::spawn(send_until_cut(client, s, acks.clone())));
    }
    drop(acks);
    for _ in 0..KILL_AFTER_ACKS {
        tokio::time::timeout(WAIT, acked.recv())
            .await
            .expect("acks come while the senders send")
            .expect("a sender is still sending");
    }
    one.child.start_kill().expect("SIGKILL is sent");
    one.child.wait().await.expect("the killed node is reaped");

    let mut cuts = Vec::new();
    for task in sending {
        cuts.push(task.await.expect("a sender's task does not panic"));
    }
    // Each sender resumes on the other node: it joins from the last seq it saw (the
    // protocol takes sends only in a joined room), then resends, with the same nonce,
    // every message it has no ack for.
    let mut resent_acks: BTreeMap<(usize, u64), (u64, bool)> = BTreeMap::new();
    let mut resumed = Vec::new();
    for (s, cut) in cuts.iter().enumerate() {
        let (mut client, joined) =
            joined_on(&two, &format!("sender{s}"), Some(cut.last_seen)).await;
        let missed: Vec<u64> = snapshot(&joined).iter().map(|(seq, _)| *seq).collect();
        let expected: Vec<u64> =
            (cut.last_seen + 1..=cut.last_seen + missed.len() as u64).collect();
        assert_eq!(missed, expected, "sender{s} resumes with no gap");
        assert_eq!(joined["complete"], true, "{joined}");
        let unacked: Vec<u64> = (1..=cut.sent)
            .filter(|id| !cut.acked.contains_key(id))
            .collect();
        for id in &unacked {
            let (body, nonce) = message(s, *id);
            client
                .send(json!({"type":"send","id":id,"room":ROOM,"body":body,"nonce":nonce}))
                .await;
        }
        for _ in &unacked {
            let ack = client.recv_type_skipping_messages("ack").await;
            let id = ack["id"].as_u64().expect("an ack names its send");
            let seq = ack["seq"].as_u64().expect("an ack has a seq");
            let duplicate = ack["duplicate"]
                .as_bool()
                .expect("an ack says if a duplicate");
            assert!(
                resent_acks.insert((s, id), (seq, duplicate)).is_none(),
                "one ack per resend: {ack}"
            );
        }
        resumed.push(client);
    }
    // No message after the resends: one the killed node committed but never published,
    // and that no later message reveals as a gap, reaches the watcher's node through its
    // periodic check of the store.
    let total = cuts
        .iter()
        .flat_map(|cut| cut.acked.values().copied())
        .chain(resent_acks.values().map(|(seq, _)| *seq))
        .max()
        .expect("some sends were acked");

    // Everything the room has, read back on the surviving node.
    let (_auditor, joined) = joined_on(&two, "auditor", Some(0)).await;
    assert_eq!(joined["complete"], true, "{joined}");
    let history = snapshot(&joined);
    let seqs: Vec<u64> = history.iter().map(|(seq, _)| *seq).collect();
    assert_eq!(seqs, (1..=total).collect::<Vec<_>>(), "seqs 1..=N, no gap");
    let at: BTreeMap<u64, &str> = history.iter().map(|(seq, b)| (*seq, b.as_str())).collect();
    let stored: BTreeSet<&str> = at.values().copied().collect();
    assert_eq!(stored.len(), history.len(), "no message stored twice");
    let mut sent: BTreeSet<String> = BTreeSet::new();
    for (s, cut) in cuts.iter().enumerate() {
        for id in 1..=cut.sent {
            let (body, _) = message(s, id);
            let seq = cut
                .acked
                .get(&id)
                .copied()
                .or_else(|| resent_acks.get(&(s, id)).map(|(seq, _)| *seq))
                .expect("every send is acked, first or on resending");
            assert_eq!(
                at.get(&seq).copied(),
                Some(body.as_str()),
                "the ack names its message"
            );
            sent.insert(body);
        }
    }
    let stored: BTreeSet<String> = stored.into_iter().map(str::to_owned).collect();
    assert_eq!(stored, sent, "what was sent is what is stored");
    let committed_before_the_kill = resent_acks.values().filter(|(_, dup)| *dup).count();
    eprintln!(
        "acked before the kill: {}, resent: {} ({committed_before_the_kill} already stored), total {total}",
        cuts.iter().map(|c| c.acked.len()).sum::<usize>(),
        resent_acks.len()
    );

    // A few seconds cover the node's check of the store (every 2 s) with room to spare.
    let (watched, _) = tokio::time::timeout(
        Duration::from_secs(5),
        read(&mut watcher, usize::try_from(total).expect("a count"), 0),
    )
    .await
    .expect("the watcher gets every committed message without a later one");
    assert_eq!(watched, history, "the watcher saw every seq once, in order");
}

/// A TCP relay to the machine's PostgreSQL that can be cut and restored: `false` closes
/// every connection it carries and refuses (closes at once) new ones; `true` carries
/// them again.
async fn postgres_relay() -> (SocketAddr, watch::Sender<bool>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("the relay binds");
    let addr = listener.local_addr().expect("the relay has an address");
    let (up, watching) = watch::channel(true);
    tokio::spawn(async move {
        while let Ok((mut inbound, _)) = listener.accept().await {
            if !*watching.borrow() {
                continue;
            }
            let mut watching = watching.clone();
            tokio::spawn(async move {
                let Ok(mut outbound) = tokio::net::TcpStream::connect("127.0.0.1:5432").await
                else {
                    return;
                };
                tokio::select! {
                    _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                    _ = watching.wait_for(|up| !*up) => {}
                }
            });
        }
    });
    (addr, up)
}

/// `GET /readyz` until it answers `status`, for at most the wait. Polled, not awaited:
/// readiness is answered from the store's latest write or a probe at most once a
/// second, and from a `PING` to Redis on a connection that reconnects with backoff, and
/// nothing a client can watch says when either changes.
///
/// A request that fails is asked again the same way: a keep-alive connection the
/// server drops (idle, or under load) just as the next poll reuses it is not an answer.
async fn ready_becomes(app: &crate::helpers::TestApp, status: u16) {
    let deadline = tokio::time::Instant::now() + WAIT * 2;
    loop {
        let answered = tokio::time::timeout_at(deadline, app.http.get(app.url("/readyz")).send())
            .await
            .expect("/readyz answers within the wait");
        let got = match answered {
            Ok(response) if response.status() == status => return,
            Ok(response) => response.status().to_string(),
            Err(error) => error.to_string(),
        };
        assert!(
            tokio::time::Instant::now() < deadline,
            "/readyz still {got}, not {status}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn while_postgresql_is_unreachable_sends_are_unavailable_and_the_node_recovers_by_itself() {
    let Some(held) = services().await else {
        return;
    };
    let (relay, up) = postgres_relay().await;
    let url = held
        .database
        .url
        .replace("127.0.0.1:5432", &relay.to_string());
    let prefix = held.prefix.clone();
    let app = spawn_app_with(move |settings| {
        settings.database_url = url;
        settings.redis_url = Some(REDIS.to_owned());
        settings.redis_prefix = prefix;
    })
    .await;
    let (mut alice, _) = app.join("alice", ROOM).await;
    assert_eq!(alice.say(ROOM, "before").await["seq"], 1);
    ready_becomes(&app, 200).await;

    up.send_replace(false);
    let send = json!({"type":"send","id":2,"room":ROOM,"body":"while cut","nonce":"n-cut"});
    alice.send(send.clone()).await;
    let refused = alice.recv_type_skipping_messages("error").await;
    assert_eq!(refused["code"], "unavailable", "{refused}");
    assert_eq!(refused["id"], 2, "{refused}");
    assert!(
        refused["retry_after_ms"].as_u64().is_some_and(|ms| ms > 0),
        "{refused}"
    );
    ready_becomes(&app, 503).await;

    // Back, and the node was not restarted: the client's retry (as told) is stored.
    up.send_replace(true);
    let deadline = tokio::time::Instant::now() + WAIT * 2;
    let ack = loop {
        alice.send(send.clone()).await;
        let answer = tokio::time::timeout_at(deadline, async {
            loop {
                let frame = alice.recv().await;
                if !["message", "presence", "occupancy", "typing"]
                    .contains(&frame["type"].as_str().unwrap_or(""))
                {
                    return frame;
                }
            }
        })
        .await
        .expect("the send is stored within the wait once PostgreSQL is back");
        match answer["type"].as_str() {
            Some("ack") => break answer,
            Some("error") if answer["code"] == "unavailable" => {
                let ms = answer["retry_after_ms"].as_u64().expect("a retry delay");
                tokio::time::sleep(Duration::from_millis(ms)).await;
            }
            _ => panic!("unexpected frame {answer}"),
        }
    };
    assert_eq!(ack["seq"], 2, "{ack}");
    assert_eq!(ack["duplicate"], false, "never stored while cut: {ack}");
    ready_becomes(&app, 200).await;

    let mut carol = app.connect("carol").await;
    carol
        .send(json!({"type":"join","room":ROOM,"since":0}))
        .await;
    let joined = carol.recv_type("joined").await;
    assert_eq!(
        snapshot(&joined),
        [(1, "before".to_owned()), (2, "while cut".to_owned())],
        "stored once"
    );
    app.stop().await;
}

/// Reads until the message of this seq has come (presence frames and older messages
/// skipped): its body.
async fn until_seq(client: &mut Client, seq: u64) -> String {
    loop {
        let frame = client.recv_type("message").await;
        if frame["seq"] == seq {
            return frame["body"]
                .as_str()
                .expect("a message has a body")
                .to_owned();
        }
    }
}

#[tokio::test]
async fn a_node_stopped_with_sigterm_closes_its_clients_with_1001_and_they_resume_on_another() {
    let Some(held) = services().await else {
        return;
    };
    let (mut one, two) = two_processes(&held).await;
    let (mut alice, _) = joined_on(&one, "alice", None).await;
    let (mut bob, _) = joined_on(&two, "bob", None).await;
    assert_eq!(alice.say(ROOM, "a1").await["seq"], 1);
    assert_eq!(bob.say(ROOM, "b2").await["seq"], 2);
    assert_eq!(
        until_seq(&mut alice, 2).await,
        "b2",
        "the nodes share the room"
    );

    one.signal("TERM").await;
    assert_eq!(alice.expect_close().await, 1001);
    let exit = tokio::time::timeout(WAIT, one.child.wait())
        .await
        .expect("the stopped node exits in time")
        .expect("the stopped node is reaped");
    assert_eq!(exit.code(), Some(0), "an orderly stop");
    // Meanwhile the room goes on on the other node.
    assert_eq!(bob.say(ROOM, "b3").await["seq"], 3);
    assert_eq!(bob.say(ROOM, "b4").await["seq"], 4);

    let (mut alice, joined) = joined_on(&two, "alice", Some(2)).await;
    assert_eq!(
        snapshot(&joined),
        [(3, "b3".to_owned()), (4, "b4".to_owned())],
        "nothing missed"
    );
    assert_eq!(alice.say(ROOM, "a5").await["seq"], 5);
    assert_eq!(until_seq(&mut bob, 5).await, "a5");
}

/// Where the machine's Redis server binary is, for a Redis of a test's own.
const REDIS_SERVER: &str = "/usr/bin/redis-server";

/// A Redis of the test's own that it can kill and start again on the same port: the
/// machine's Redis is shared with other tests. Nothing is saved, so a new one is empty,
/// as a Redis restarted without persistence. Killed when dropped.
struct PrivateRedis {
    port: u16,
    child: tokio::process::Child,
}

impl PrivateRedis {
    /// `None` (after saying why) where there is no redis-server binary, unless
    /// `PALISADE_REQUIRE_SERVICES=1` makes that a failure.
    async fn start() -> Option<Self> {
        if !std::path::Path::new(REDIS_SERVER).exists() {
            assert!(
                std::env::var("PALISADE_REQUIRE_SERVICES").as_deref() != Ok("1"),
                "PALISADE_REQUIRE_SERVICES=1 but there is no {REDIS_SERVER}"
            );
            eprintln!("SKIPPED: no {REDIS_SERVER} for a Redis of the test's own");
            return None;
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|free| free.local_addr())
            .expect("a free port")
            .port();
        Some(Self::start_on(port).await)
    }

    /// A new server on `port`, once it says it accepts connections.
    async fn start_on(port: u16) -> Self {
        let mut child = tokio::process::Command::new(REDIS_SERVER)
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("redis-server starts");
        let output = child.stdout.take().expect("its output is piped");
        let what = format!("redis-server on port {port}");
        await_ready_line(output, "eady to accept connections", &what).await;
        Self { port, child }
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// SIGKILL, as a crash: no goodbye to any client.
    async fn kill(&mut self) {
        self.child.start_kill().expect("SIGKILL is sent");
        self.child.wait().await.expect("the killed Redis is reaped");
    }
}

/// The room's history, read from the database at `url` itself, checked against what
/// the senders were told: seqs 1..=N without a gap, every send acked, each ack naming
/// its message, each message stored once.
async fn stored_history_matching_acks(url: &str, senders: &[Steady]) -> Vec<(u64, String)> {
    let history: Vec<(u64, String)> = {
        use sqlx::Connection;
        let mut db = sqlx::PgConnection::connect(url)
            .await
            .expect("the database accepts a connection");
        let rows: Vec<(i64, String)> =
            sqlx::query_as("SELECT seq, body FROM messages WHERE room = $1 ORDER BY seq")
                .bind(ROOM)
                .fetch_all(&mut db)
                .await
                .expect("the history reads");
        rows.into_iter()
            .map(|(seq, body)| (u64::try_from(seq).expect("a positive seq"), body))
            .collect()
    };
    let total = history.len() as u64;
    let seqs: Vec<u64> = history.iter().map(|(seq, _)| *seq).collect();
    assert_eq!(seqs, (1..=total).collect::<Vec<_>>(), "seqs 1..=N, no gap");
    let mut sent = 0;
    for (s, steady) in senders.iter().enumerate() {
        assert_eq!(
            steady.acked.len() as u64,
            steady.sent,
            "sender{s}: all acked"
        );
        for (id, seq) in &steady.acked {
            let stored = &history[usize::try_from(*seq - 1).expect("an index")].1;
            assert_eq!(*stored, message(s, *id).0, "the ack names its message");
        }
        sent += steady.sent;
    }
    assert_eq!(sent, total, "each message sent is stored once");
    history
}

/// Tells the watchers (spawned [`listen`]s) where the room's history ends, then checks
/// that every watcher and every sender got all of it once, in order.
async fn everyone_got(
    history: &[(u64, String)],
    last_seq: &watch::Sender<u64>,
    watchers: Vec<tokio::task::JoinHandle<Vec<(u64, String)>>>,
    senders: Vec<Steady>,
) {
    let total = history.len() as u64;
    last_seq.send_replace(total);
    for (n, watcher) in watchers.into_iter().enumerate() {
        let got = watcher.await.expect("a watcher's task does not panic");
        assert_eq!(got, history, "watcher{n}: every seq once, in order");
    }
    for (s, mut steady) in senders.into_iter().enumerate() {
        messages_through(&mut steady.client, &mut steady.got, total).await;
        assert_eq!(steady.got, history, "sender{s}: every seq once, in order");
    }
}

/// What a steady sender got: the seq of each of its acks by message id, how many it
/// sent, and the messages it received as a member (seq, body), in arrival order.
struct Steady {
    client: Client,
    acked: BTreeMap<u64, u64>,
    sent: u64,
    got: Vec<(u64, String)>,
}

/// Sends a message every few milliseconds (at most a few unacked), saying on `acks`
/// each time an ack comes, until `stop` turns true; then waits for the acks still due.
async fn send_steadily(
    client: Client,
    s: usize,
    mut stop: watch::Receiver<bool>,
    acks: mpsc::UnboundedSender<()>,
) -> Steady {
    const IN_FLIGHT: u64 = 3;
    let mut steady = Steady {
        client,
        acked: BTreeMap::new(),
        sent: 0,
        got: Vec::new(),
    };
    // A steady pace: the test's phases last a few seconds, and every message of them
    // is checked on every member.
    let mut pace = tokio::time::interval(Duration::from_millis(40));
    let mut stopping = false;
    loop {
        let due = steady.sent - steady.acked.len() as u64;
        if stopping && due == 0 {
            return steady;
        }
        tokio::select! {
            _ = pace.tick(), if !stopping && due < IN_FLIGHT => {
                let id = steady.sent + 1;
                let (body, nonce) = message(s, id);
                steady
                    .client
                    .send(json!({"type":"send","id":id,"room":ROOM,"body":body,"nonce":nonce}))
                    .await;
                steady.sent = id;
            }
            // The borrow `wait_for` answers with must not live across an await.
            () = async { let _ = stop.wait_for(|stop| *stop).await; }, if !stopping => stopping = true,
            frame = steady.client.recv() => match frame["type"].as_str().unwrap_or("") {
                "ack" => {
                    let id = frame["id"].as_u64().expect("an ack names its send");
                    let seq = frame["seq"].as_u64().expect("an ack has a seq");
                    assert!(steady.acked.insert(id, seq).is_none(), "one ack per send: {frame}");
                    let _ = acks.send(());
                }
                "message" => steady.got.push(received(&frame)),
                "presence" | "occupancy" | "typing" => {}
                _ => panic!("sender{s} got {frame}"),
            },
        }
    }
}

/// A message frame's (seq, body).
fn received(frame: &Value) -> (u64, String) {
    (
        frame["seq"].as_u64().expect("a message has a seq"),
        frame["body"]
            .as_str()
            .expect("a message has a body")
            .to_owned(),
    )
}

/// Adds to `got` the messages `client` receives until one of seq `last` or later.
async fn messages_through(client: &mut Client, got: &mut Vec<(u64, String)>, last: u64) {
    while got.last().is_none_or(|(seq, _)| *seq < last) {
        let frame = tokio::time::timeout(WAIT, client.recv_type("message"))
            .await
            .unwrap_or_else(|_| panic!("no message {last} in time; got {got:?}"));
        got.push(received(&frame));
    }
}

/// A member that only listens, read all along (so its queue on the server never fills)
/// until the room's last seq is known (`last` turns non-zero) and has come: what it got.
/// Until then it may hear nothing for longer than the wait (while the store is down), so
/// only the messages it still expects then are awaited with a bound.
async fn listen(mut client: Client, mut last: watch::Receiver<u64>) -> Vec<(u64, String)> {
    let mut got = Vec::new();
    loop {
        tokio::select! {
            frame = next_message(&mut client) => got.push(received(&frame)),
            () = async { let _ = last.wait_for(|last| *last > 0).await; } => break,
        }
    }
    let last = *last.borrow();
    messages_through(&mut client, &mut got, last).await;
    got
}

/// The next message frame, however long it takes (presence, count and typing frames
/// skipped). Cancel-safe: a frame is taken off the stream only to be used.
async fn next_message(client: &mut Client) -> Value {
    loop {
        let text = match client.stream.next().await {
            Some(Ok(Message::Text(text))) => text,
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
            other => panic!("expected a text frame, got {other:?}"),
        };
        let frame: Value = serde_json::from_str(&text).expect("the server sends JSON");
        match frame["type"].as_str().unwrap_or("") {
            "message" => return frame,
            "presence" | "occupancy" | "typing" => {}
            _ => panic!("expected a message, got {frame}"),
        }
    }
}

/// Waits until `n` more acks have come (any sender's).
async fn more_acks(acks: &mut mpsc::UnboundedReceiver<()>, n: usize) {
    for _ in 0..n {
        tokio::time::timeout(WAIT, acks.recv())
            .await
            .expect("acks keep coming")
            .expect("a sender is still sending");
    }
}

#[tokio::test]
async fn restarting_redis_mid_stream_loses_nothing_and_every_member_gets_every_message_once() {
    const NODES: usize = 3;
    const ACKS_PER_PHASE: usize = 12;
    // Redis stays down a while: messages go unheard by the other nodes meanwhile.
    const ACKS_WHILE_DOWN: usize = 30;
    let Some(held) = services().await else {
        return;
    };
    let Some(mut redis) = PrivateRedis::start().await else {
        return;
    };
    let mut nodes = Vec::new();
    for _ in 0..NODES {
        let url = redis.url();
        nodes.push(
            node_with(&held.database, &held.prefix, move |settings| {
                settings.redis_url = Some(url);
            })
            .await,
        );
    }
    // On every node a member that only listens, and one that sends.
    let (last_seq, last_known) = watch::channel(0);
    let mut watchers = Vec::new();
    for (n, node) in nodes.iter().enumerate() {
        let (client, _) = node.join(&format!("watcher{n}"), ROOM).await;
        watchers.push(tokio::spawn(listen(client, last_known.clone())));
    }
    let (acks, mut acked) = mpsc::unbounded_channel();
    let (stop, stopped) = watch::channel(false);
    let mut senders = Vec::new();
    for (s, node) in nodes.iter().enumerate() {
        senders.push(node.join(&format!("sender{s}"), ROOM).await.0);
    }
    // Every member joined before the first message: each gets them all live.
    let sending: Vec<_> = senders
        .into_iter()
        .enumerate()
        .map(|(s, client)| tokio::spawn(send_steadily(client, s, stopped.clone(), acks.clone())))
        .collect();
    drop(acks);
    more_acks(&mut acked, ACKS_PER_PHASE).await;

    redis.kill().await;
    for node in &nodes {
        ready_becomes(node, 503).await;
    }
    // Redis is gone everywhere, and sends are still acked: the store is PostgreSQL.
    while acked.try_recv().is_ok() {}
    more_acks(&mut acked, ACKS_WHILE_DOWN).await;

    let redis = PrivateRedis::start_on(redis.port).await;
    let restarted = tokio::time::Instant::now();
    // Each node's command connection finds the new Redis at its next reconnection
    // attempt (at most a second apart): polled, as the node's pub/sub connection may
    // come back before or after.
    for node in &nodes {
        ready_becomes(node, 200).await;
    }
    eprintln!(
        "every node ready {:?} after Redis was back",
        restarted.elapsed()
    );
    while acked.try_recv().is_ok() {}
    more_acks(&mut acked, ACKS_PER_PHASE).await;
    // Tickets live in Redis: the new, empty one keeps them again, across nodes.
    let ticket = ticket_from(&nodes[0], &user_token("alice")).await;
    assert!(
        ticket_accepted(&nodes[1], &ticket).await,
        "a ticket works again"
    );
    stop.send_replace(true);
    let mut senders = Vec::new();
    for task in sending {
        senders.push(task.await.expect("a sender's task does not panic"));
    }

    let history = stored_history_matching_acks(&held.database.url, &senders).await;
    eprintln!(
        "{} messages, {ACKS_WHILE_DOWN}+ acked while Redis was down",
        history.len()
    );
    everyone_got(&history, &last_seq, watchers, senders).await;
    for node in nodes {
        node.stop().await;
    }
    drop(redis);
}

#[tokio::test]
async fn the_users_of_a_killed_node_leave_the_room_for_everyone_within_the_presence_ttl() {
    const TTL_MS: u64 = 2000;
    let Some(held) = services().await else {
        return;
    };
    let ttl = TTL_MS.to_string();
    let args = [
        "--redis-url",
        REDIS,
        "--redis-prefix",
        &held.prefix,
        "--node-ttl-ms",
        &ttl,
    ];
    let mut doomed = ServerProcess::start(&held.database.url, &args).await;
    let survivor = ServerProcess::start(&held.database.url, &args).await;
    let (mut watcher, _) = joined_on(&survivor, "watcher", None).await;
    let (_victim, _) = joined_on(&doomed, "victim", None).await;
    let joined = watcher.recv_type("presence").await;
    assert_eq!(
        (&joined["event"], &joined["user"]["name"]),
        (&json!("join"), &json!("victim")),
        "{joined}"
    );

    doomed.child.start_kill().expect("SIGKILL is sent");
    doomed
        .child
        .wait()
        .await
        .expect("the killed node is reaped");
    let killed_at = tokio::time::Instant::now();
    // Nobody on the dead node says goodbye: the survivor's sweep finds the victim's
    // entry expired and announces the leave (`recv` waits up to `WAIT`, well past it).
    let left = watcher.recv_type("presence").await;
    assert_eq!(
        (&left["event"], &left["user"]["name"]),
        (&json!("leave"), &json!("victim")),
        "{left}"
    );
    let took = killed_at.elapsed();
    assert!(
        took <= Duration::from_millis(TTL_MS * 2),
        "within the TTL and a sweep: {took:?}"
    );

    let (_newcomer, joined) = joined_on(&survivor, "newcomer", None).await;
    let mut names: Vec<&str> = joined["members"]
        .as_array()
        .expect("members")
        .iter()
        .filter_map(|m| m["name"].as_str())
        .collect();
    names.sort_unstable();
    assert_eq!(names, ["newcomer", "watcher"], "{joined}");
    assert_eq!(joined["online"], 2, "{joined}");
}

/// What a sender that does as refusals say got: as [`Steady`], and how many of its
/// sends were refused and how many resends found their message already stored.
struct Retried {
    steady: Steady,
    refused: u64,
    duplicates: u64,
}

/// [`send_steadily`] by a client that does as a refusal says: a send answered
/// `unavailable` is sent again, with the same id and nonce, `retry_after_ms` later.
/// Says on `refusals` (its number, and how many times that send has been refused) each
/// time a send is refused; any other error fails.
async fn send_retrying(
    client: Client,
    s: usize,
    mut stop: watch::Receiver<bool>,
    acks: mpsc::UnboundedSender<()>,
    refusals: mpsc::UnboundedSender<(usize, u64)>,
) -> Retried {
    const IN_FLIGHT: u64 = 3;
    let mut steady = Steady {
        client,
        acked: BTreeMap::new(),
        sent: 0,
        got: Vec::new(),
    };
    let (mut refused, mut duplicates) = (0, 0);
    // When each refused send is due again, and how often each was refused.
    let mut again: BTreeSet<(tokio::time::Instant, u64)> = BTreeSet::new();
    let mut refusals_of: BTreeMap<u64, u64> = BTreeMap::new();
    let mut pace = tokio::time::interval(Duration::from_millis(40));
    let mut stopping = false;
    loop {
        // Refused sends stay due until acked: the stop waits for them.
        let due = steady.sent - steady.acked.len() as u64;
        if stopping && due == 0 {
            return Retried {
                steady,
                refused,
                duplicates,
            };
        }
        let next_retry = again.first().map(|(at, _)| *at);
        let id = tokio::select! {
            _ = pace.tick(), if !stopping && due < IN_FLIGHT => {
                steady.sent += 1;
                Some(steady.sent)
            }
            () = async {
                if let Some(at) = next_retry {
                    tokio::time::sleep_until(at).await;
                }
            }, if next_retry.is_some() => again.pop_first().map(|(_, id)| id),
            // The borrow `wait_for` answers with must not live across an await.
            () = async { let _ = stop.wait_for(|stop| *stop).await; }, if !stopping => {
                stopping = true;
                None
            }
            frame = steady.client.recv() => {
                match frame["type"].as_str().unwrap_or("") {
                    "ack" => {
                        let id = frame["id"].as_u64().expect("an ack names its send");
                        let seq = frame["seq"].as_u64().expect("an ack has a seq");
                        assert!(steady.acked.insert(id, seq).is_none(), "one ack per send: {frame}");
                        duplicates += u64::from(frame["duplicate"] == true);
                        let _ = acks.send(());
                    }
                    "error" => {
                        assert_eq!(frame["code"], "unavailable", "sender{s}: {frame}");
                        let id = frame["id"].as_u64().expect("a refusal names its send");
                        assert!(
                            id <= steady.sent && !steady.acked.contains_key(&id),
                            "sender{s}: a refusal of a send waiting for its answer: {frame}"
                        );
                        let ms = frame["retry_after_ms"]
                            .as_u64()
                            .filter(|ms| *ms > 0)
                            .unwrap_or_else(|| panic!("a refusal says when to retry: {frame}"));
                        again.insert((tokio::time::Instant::now() + Duration::from_millis(ms), id));
                        refused += 1;
                        let times = refusals_of.entry(id).or_default();
                        *times += 1;
                        let _ = refusals.send((s, *times));
                    }
                    "message" => steady.got.push(received(&frame)),
                    "presence" | "occupancy" | "typing" => {}
                    _ => panic!("sender{s} got {frame}"),
                }
                None
            }
        };
        if let Some(id) = id {
            let (body, nonce) = message(s, id);
            steady
                .client
                .send(json!({"type":"send","id":id,"room":ROOM,"body":body,"nonce":nonce}))
                .await;
        }
    }
}

/// Waits until each of `senders` senders has had a send refused for the `times`th time
/// (from 2: a resend refused again).
async fn refusals_each(
    refusals: &mut mpsc::UnboundedReceiver<(usize, u64)>,
    senders: usize,
    times: u64,
) {
    let mut most = vec![0; senders];
    while most.iter().any(|most| *most < times) {
        let (s, refused) = tokio::time::timeout(WAIT, refusals.recv())
            .await
            .unwrap_or_else(|_| panic!("sends keep being refused; so far {most:?}"))
            .expect("a sender is still sending");
        most[s] = most[s].max(refused);
    }
}

#[tokio::test]
async fn restarting_postgresql_mid_stream_refuses_sends_as_unavailable_and_loses_no_acked_message()
{
    const NODES: usize = 2;
    const ACKS_PER_PHASE: usize = 12;
    let Some(held) = services().await else {
        return;
    };
    let Some(mut postgres) = PrivatePostgres::start().await else {
        return;
    };
    let url = postgres.create_database("palisade").await;
    let mut nodes = Vec::new();
    for _ in 0..NODES {
        let url = url.clone();
        nodes.push(
            node_with(&held.database, &held.prefix, move |settings| {
                settings.database_url = url;
            })
            .await,
        );
    }
    let (last_seq, last_known) = watch::channel(0);
    let mut watchers = Vec::new();
    for (n, node) in nodes.iter().enumerate() {
        let (client, _) = node.join(&format!("watcher{n}"), ROOM).await;
        watchers.push(tokio::spawn(listen(client, last_known.clone())));
    }
    let (acks, mut acked) = mpsc::unbounded_channel();
    let (refusals, mut refused) = mpsc::unbounded_channel();
    let (stop, stopped) = watch::channel(false);
    let mut senders = Vec::new();
    for (s, node) in nodes.iter().enumerate() {
        senders.push(node.join(&format!("sender{s}"), ROOM).await.0);
    }
    let sending: Vec<_> = senders
        .into_iter()
        .enumerate()
        .map(|(s, client)| {
            tokio::spawn(send_retrying(
                client,
                s,
                stopped.clone(),
                acks.clone(),
                refusals.clone(),
            ))
        })
        .collect();
    drop((acks, refusals));
    more_acks(&mut acked, ACKS_PER_PHASE).await;
    for node in &nodes {
        ready_becomes(node, 200).await;
    }

    postgres.crash().await;
    let crashed = tokio::time::Instant::now();
    refusals_each(&mut refused, NODES, 1).await;
    let first_refusals = crashed.elapsed();
    for node in &nodes {
        ready_becomes(node, 503).await;
    }
    // Once every sender has been refused, nothing is acked while the server is down:
    // each sender's resends are refused again, and no ack comes meanwhile.
    while acked.try_recv().is_ok() {}
    refusals_each(&mut refused, NODES, 2).await;
    assert!(
        acked.try_recv().is_err(),
        "an ack while PostgreSQL was down"
    );
    let down_for = crashed.elapsed();

    let recovery = postgres.restart().await;
    let restarted = tokio::time::Instant::now();
    assert!(
        recovery
            .iter()
            .any(|line| line.contains("automatic recovery in progress")),
        "the restart recovers from a crash:\n{}",
        recovery.join("\n")
    );
    // The nodes were not restarted: their pools connect again by themselves.
    more_acks(&mut acked, 1).await;
    let first_ack = restarted.elapsed();
    for node in &nodes {
        ready_becomes(node, 200).await;
    }
    let ready = restarted.elapsed();
    more_acks(&mut acked, ACKS_PER_PHASE).await;
    stop.send_replace(true);
    let mut retried = Vec::new();
    for task in sending {
        retried.push(task.await.expect("a sender's task does not panic"));
    }
    let refused: Vec<u64> = retried.iter().map(|r| r.refused).collect();
    let duplicates: u64 = retried.iter().map(|r| r.duplicates).sum();
    let senders: Vec<Steady> = retried.into_iter().map(|r| r.steady).collect();

    // From the (recovered) database.
    let history = stored_history_matching_acks(&url, &senders).await;
    eprintln!(
        "{} messages; every sender refused {first_refusals:?} after the crash, down \
         {down_for:?}; after the restart: first ack {first_ack:?}, every node ready \
         {ready:?}; refusals {refused:?}, resends already stored {duplicates}",
        history.len()
    );
    everyone_got(&history, &last_seq, watchers, senders).await;
    for node in nodes {
        node.stop().await;
    }
}

/// Milliseconds since the Unix epoch on this machine's clock, which every node of these
/// tests reads too.
fn wall_ms() -> u64 {
    let since = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("the clock is past 1970");
    u64::try_from(since.as_millis()).expect("a sane clock")
}

/// A handshake as `name` on `node`: whether it was accepted; a refusal must be the
/// per-user cap's.
async fn place_free(node: &crate::helpers::TestApp, name: &str) -> bool {
    match node.connect_with(&node.token(name)).await {
        Ok(_) => true,
        Err(refusal) => {
            assert_eq!(
                (refusal.status.as_u16(), refusal.code()),
                (429, "too_many_connections"),
                "{refusal:?}"
            );
            false
        }
    }
}

/// Alice's places in the shared count: (member, expiry in Unix ms).
async fn alice_places(prefix: &str) -> Vec<(String, u64)> {
    let client = redis::Client::open(REDIS).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    redis::cmd("ZRANGE")
        .arg(format!("{prefix}:conns:id-alice"))
        .arg(0)
        .arg(-1)
        .arg("WITHSCORES")
        .query_async(&mut conn)
        .await
        .unwrap()
}

#[tokio::test]
async fn a_killed_nodes_connection_places_come_back_once_the_node_ttl_has_passed() {
    const TTL: Duration = Duration::from_millis(2000);
    // How often a handshake is tried while waiting for a place.
    const POLL: Duration = Duration::from_millis(100);
    let Some(held) = services().await else {
        return;
    };
    let ttl = TTL.as_millis().to_string();
    let args = [
        "--redis-url",
        REDIS,
        "--redis-prefix",
        &held.prefix,
        "--node-ttl-ms",
        &ttl,
        "--max-connections-per-user",
        "2",
    ];
    let mut doomed = ServerProcess::start(&held.database.url, &args).await;
    let quick_and_capped = |settings: &mut Settings| {
        settings.limits.node_ttl_ms = u64::try_from(TTL.as_millis()).unwrap();
        settings.limits.max_connections_per_user = 2;
    };
    let survivor = node_with(&held.database, &held.prefix, quick_and_capped).await;
    let _alice = doomed.connect("alice").await;
    // Her place on the survivor stays refreshed, and with it her key in Redis: only the
    // dead node's own entry can run out, not the whole set.
    let _alice_too = survivor.connect("alice").await;

    // Time is the subject here, so the test polls on a fixed schedule rather than
    // awaiting an event: no event says "a place expired", only a handshake that works.
    let mut ticks = tokio::time::interval(POLL);
    // While her node lives it refreshes her place: she is refused elsewhere for longer
    // than the TTL.
    let alive_until = tokio::time::Instant::now() + TTL + TTL / 2;
    while tokio::time::Instant::now() < alive_until {
        ticks.tick().await;
        assert!(
            !place_free(&survivor, "alice").await,
            "her live node's place expired"
        );
    }

    doomed.child.start_kill().expect("SIGKILL is sent");
    doomed
        .child
        .wait()
        .await
        .expect("the killed node is reaped");
    let killed_at = tokio::time::Instant::now();
    assert!(
        !place_free(&survivor, "alice").await,
        "the dead node's place still counts right after the kill"
    );
    let before = alice_places(&held.prefix).await;
    assert_eq!(before.len(), 2, "{before:?}");

    // The last refresh came at most a third of the TTL before the kill, and the place
    // counts a TTL after it; a poll and a handshake on a busy machine are the slack.
    let earliest = TTL - TTL / 3 - POLL;
    let latest = TTL + TTL / 2;
    let took = loop {
        ticks.tick().await;
        if place_free(&survivor, "alice").await {
            break killed_at.elapsed();
        }
        assert!(
            killed_at.elapsed() <= latest,
            "still refused {:?} after the kill",
            killed_at.elapsed()
        );
    };
    let now = wall_ms();
    // When the dead node's place stopped counting: the expiry it last wrote, on the
    // member that is gone now.
    let after = alice_places(&held.prefix).await;
    let expiry = before
        .iter()
        .find(|(member, _)| after.iter().all(|(live, _)| live != member))
        .expect("the dead node's member is gone")
        .1;
    eprintln!(
        "alice's place came back {took:?} after the kill, {} ms after its expiry",
        now.saturating_sub(expiry)
    );
    assert!(now >= expiry, "accepted {} ms early", expiry - now);
    assert!(
        (earliest..=latest).contains(&took),
        "came back {took:?} after the kill, not within {earliest:?}..={latest:?}"
    );
    survivor.stop().await;
}
