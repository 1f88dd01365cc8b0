//! A PostgreSQL database of its own for one test, shared by the store's unit tests
//! (`src/store/postgres.rs`) and the API tests (`tests/api/main.rs` includes it for
//! `postgres.rs` and `cluster.rs`).
//!
//! The API tests are a separate crate and cannot see the library's `#[cfg(test)]`
//! items, and putting this in the library's public API would ship test code. So it is
//! plain code that depends only on sqlx, tokio, uuid and std (which both crates have),
//! and each includes it with `#[path = "…"] mod test_database;`. Each includer adds
//! what only it needs with an `impl TestDatabase` block of its own.
//!
//! It needs the machine's PostgreSQL (127.0.0.1:5432, user `postgres` with trust
//! authentication, database `test`). Without it, [`TestDatabase::create`] answers
//! `None` and the test passes as `SKIPPED …`, unless `PALISADE_REQUIRE_SERVICES=1` (CI)
//! makes a missing service a failure.

use sqlx::{Connection, PgConnection};
use std::time::Duration;

/// The machine's PostgreSQL service, and a database on it that always exists.
const SERVICE: &str = "postgres://postgres@127.0.0.1:5432/test";

/// A fresh database for one test (so tests run in parallel), dropped when the test
/// ends, even one that failed.
pub(super) struct TestDatabase {
    name: String,
    pub(super) url: String,
}

impl TestDatabase {
    /// `None` (the test is skipped) when there is no server, unless
    /// `PALISADE_REQUIRE_SERVICES=1` makes that a failure.
    pub(super) async fn create() -> Option<Self> {
        let connected =
            tokio::time::timeout(Duration::from_secs(5), PgConnection::connect(SERVICE)).await;
        let mut admin = match connected {
            Ok(Ok(admin)) => admin,
            Ok(Err(error)) => return unavailable(&error.to_string()),
            Err(_) => return unavailable("no answer within 5 s"),
        };
        let name = format!("palisade_t_{}", uuid::Uuid::new_v4().simple());
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut admin)
            .await
            .expect("the test database is created");
        let _ = admin.close().await;
        Some(Self {
            url: format!("postgres://postgres@127.0.0.1:5432/{name}"),
            name,
        })
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        // The test's runtime may be gone (a panic) or single-threaded: a runtime of its
        // own, on a thread of its own. FORCE ends the connections stores and servers
        // still hold.
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

fn unavailable<T>(why: &str) -> Option<T> {
    assert!(
        std::env::var("PALISADE_REQUIRE_SERVICES").as_deref() != Ok("1"),
        "PALISADE_REQUIRE_SERVICES=1 but there is no PostgreSQL at 127.0.0.1:5432 (user postgres, database test): {why}"
    );
    eprintln!("SKIPPED: no PostgreSQL at 127.0.0.1:5432 ({why})");
    None
}
