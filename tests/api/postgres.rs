//! The server on PostgreSQL (`--database-url postgres://…`): a client sees what it sees on
//! SQLite, and two servers on one database share accounts, history and `seq`s.
//!
//! These need the machine's PostgreSQL (127.0.0.1:5432, user `postgres` with trust
//! authentication, database `test`); each test makes a database of its own and drops
//! it. Without the service they print `SKIPPED …` and pass, unless
//! `PALISADE_REQUIRE_SERVICES=1` (CI), where a missing service fails them.

use crate::helpers::{TestApp, bodies, on_postgres, restart, spawn_app, spawn_app_with};
use crate::test_database::TestDatabase as Database;
use serde_json::json;

impl Database {
    /// A server on this database.
    async fn spawn_app(&self) -> TestApp {
        let url = self.url.clone();
        spawn_app_with(move |settings| settings.database_url = url).await
    }
}

#[tokio::test]
async fn a_reconnecting_client_gets_exactly_the_missed_messages_from_postgres() {
    let Some(db) = Database::create().await else {
        return;
    };
    let app = db.spawn_app().await;
    let (mut alice, joined) = app.join("alice", "general").await;
    assert_eq!(joined["last_seq"], 0);
    let (mut bob, _) = app.join("bob", "general").await;
    for i in 1..=3 {
        assert_eq!(alice.say("general", &format!("m{i}")).await["seq"], i);
    }
    for _ in 0..3 {
        bob.recv_type("message").await;
    }
    drop(bob);
    for i in 4..=6 {
        alice.say("general", &format!("m{i}")).await;
    }
    // A resend of an acked send is answered with the first one, not stored again.
    alice
        .send(json!({"type":"send","room":"general","body":"once","nonce":"n-1"}))
        .await;
    let first = alice.recv_type_skipping_messages("ack").await;
    alice
        .send(json!({"type":"send","room":"general","body":"once","nonce":"n-1"}))
        .await;
    let again = alice.recv_type_skipping_messages("ack").await;
    assert_eq!(
        (first["seq"].as_u64(), again["seq"].as_u64()),
        (Some(7), Some(7))
    );
    assert_eq!(again["duplicate"], true);

    let mut bob = app.connect("bob").await;
    bob.send(json!({"type":"join","room":"general","since":3}))
        .await;
    let joined = bob.recv_type("joined").await;
    assert_eq!(bodies(&joined), ["m4", "m5", "m6", "once"]);
    assert_eq!(joined["complete"], true);
    assert_eq!(joined["last_seq"], 7);
    app.stop().await;
}

#[tokio::test]
async fn two_servers_on_one_database_share_accounts_history_and_seqs() {
    let Some(db) = Database::create().await else {
        return;
    };
    let one = db.spawn_app().await;
    let two = db.spawn_app().await;
    assert_eq!(one.register("carol_1", "correct horse").await.status(), 201);
    assert_eq!(two.login("CAROL_1", "correct horse").await.status(), 200);
    assert_eq!(two.register("Carol_1", "correct horse").await.status(), 409);

    let (mut alice, _) = one.join("alice", "general").await;
    let (mut bob, _) = two.join("bob", "general").await;
    assert_eq!(alice.say("general", "a1").await["seq"], 1);
    assert_eq!(bob.say("general", "b1").await["seq"], 2);
    assert_eq!(alice.say("general", "a2").await["seq"], 3);
    let (_dave, joined) = two.join("dave", "general").await;
    assert_eq!(bodies(&joined), ["a1", "b1", "a2"]);
    assert_eq!(joined["last_seq"], 3);
    one.stop().await;
    two.stop().await;
}

/// The switch of the whole suite (`PALISADE_TEST_STORE=postgres`, see `helpers.rs`), on
/// either store: on PostgreSQL a test server has a database of its own, kept across
/// its restarts and dropped with the test's last server.
#[tokio::test]
async fn every_test_server_has_a_database_of_its_own_on_the_store_the_suite_runs_on() {
    let app = spawn_app().await;
    let other = spawn_app().await;
    assert_eq!(
        app.database_url.starts_with("postgres://"),
        on_postgres(),
        "{}",
        app.database_url
    );
    assert_ne!(app.database_url, other.database_url, "one each");
    let (mut alice, _) = app.join("alice", "general").await;
    assert_eq!(alice.say("general", "kept").await["seq"], 1);
    drop(alice);
    let url = app.database_url.clone();
    let app = restart(&app.stop().await).await;
    assert_eq!(app.database_url, url, "a restart keeps the database");
    let (_bob, joined) = app.join("bob", "general").await;
    assert_eq!(bodies(&joined), ["kept"]);
    drop(app.stop().await);
    if on_postgres() {
        use sqlx::Connection;
        let name = url.rsplit('/').next().expect("a database name");
        let mut admin = sqlx::PgConnection::connect("postgres://postgres@127.0.0.1:5432/test")
            .await
            .expect("PostgreSQL answers");
        let left: i64 = sqlx::query_scalar("SELECT count(*) FROM pg_database WHERE datname = $1")
            .bind(name)
            .fetch_one(&mut admin)
            .await
            .expect("the catalog reads");
        assert_eq!(left, 0, "{name} is dropped with the test's last server");
    }
    other.stop().await;
}
