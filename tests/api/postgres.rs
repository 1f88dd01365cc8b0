//! The server on PostgreSQL (`--database-url postgres://…`): a client sees what it sees on
//! SQLite, and two servers on one database share accounts, history and `seq`s.
//!
//! These need the machine's PostgreSQL (127.0.0.1:5432, user `postgres` with trust
//! authentication, database `test`); each test makes a database of its own and drops
//! it. Without the service they print `SKIPPED …` and pass, unless
//! `PALISADE_REQUIRE_SERVICES=1` (CI), where a missing service fails them.

use crate::helpers::{TestApp, bodies, spawn_app_with};
use serde_json::json;
use sqlx::{Connection, PgConnection};
use std::time::Duration;

/// The machine's PostgreSQL service, and a database on it that always exists.
const SERVICE: &str = "postgres://postgres@127.0.0.1:5432/test";

/// A fresh database for one test, dropped when the test ends (failed or not); the
/// cluster tests use it too.
pub(crate) struct Database {
    name: String,
    pub(crate) url: String,
}

impl Database {
    /// `None`: no server, skip the test (a failure with `PALISADE_REQUIRE_SERVICES=1`).
    pub(crate) async fn create() -> Option<Self> {
        let connected =
            tokio::time::timeout(Duration::from_secs(5), PgConnection::connect(SERVICE)).await;
        let why = match connected {
            Ok(Ok(mut admin)) => {
                let name = format!("palisade_api_{}", uuid::Uuid::new_v4().simple());
                sqlx::query(&format!("CREATE DATABASE {name}"))
                    .execute(&mut admin)
                    .await
                    .expect("the test database is created");
                let _ = admin.close().await;
                return Some(Self {
                    url: format!("postgres://postgres@127.0.0.1:5432/{name}"),
                    name,
                });
            }
            Ok(Err(error)) => error.to_string(),
            Err(_) => "no answer within 5 s".to_owned(),
        };
        assert!(
            std::env::var("PALISADE_REQUIRE_SERVICES").as_deref() != Ok("1"),
            "PALISADE_REQUIRE_SERVICES=1 but there is no PostgreSQL at 127.0.0.1:5432 (user postgres, database test): {why}"
        );
        eprintln!("SKIPPED: no PostgreSQL at 127.0.0.1:5432 ({why})");
        None
    }

    /// A server on this database.
    async fn spawn_app(&self) -> TestApp {
        let url = self.url.clone();
        spawn_app_with(move |settings| settings.database_url = url).await
    }
}

impl Drop for Database {
    fn drop(&mut self) {
        // The test's runtime may be gone (a panic) or single-threaded: a runtime of its
        // own, on a thread of its own. FORCE ends the connections servers still hold.
        let name = self.name.clone();
        let dropped = std::thread::spawn(move || -> Result<(), String> {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?;
            runtime.block_on(async {
                let mut admin = PgConnection::connect(SERVICE)
                    .await
                    .map_err(|e| e.to_string())?;
                sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                    .execute(&mut admin)
                    .await
                    .map_err(|e| e.to_string())?;
                let _ = admin.close().await;
                Ok(())
            })
        })
        .join();
        if !matches!(dropped, Ok(Ok(()))) {
            eprintln!(
                "WARNING: could not drop the test database {}: {dropped:?}",
                self.name
            );
        }
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
