//! Whether a store can write right now, learnt from its own writes, for `/readyz`.
//!
//! Both stores answer readiness by the same rule, so it lives here once: the outcome of
//! the latest write stands for a while ([`WRITABLE_FRESH_FOR`]); after that one small
//! probe write (one at a time, its answer shared by whoever asked meanwhile) learns it
//! again, so a flood of readiness checks reaches the database at most once a second.
//!
//! A write borrows its connection as a [`Lent`], which records the outcome when it is
//! dropped and closes a connection whose write failed or was abandoned instead of
//! handing it to the next writer (see [`Outcome`]).

use super::StoreError;
use sqlx::Database;
use sqlx::pool::PoolConnection;
use std::future::Future;
use std::ops::{Deref, DerefMut};
use std::time::Duration;
use tokio::time::Instant;

/// How long the outcome of a write or probe stands for readiness before a new probe.
pub(super) const WRITABLE_FRESH_FOR: Duration = Duration::from_secs(1);

/// The outcome of the latest write or probe, and when it happened.
pub(super) struct WriteHealth {
    /// How long an outcome answers for readiness before a new probe.
    fresh_for: Duration,
    last: std::sync::Mutex<Option<(Instant, bool)>>,
    /// One probe at a time: callers that arrive meanwhile share its answer.
    probing: tokio::sync::Mutex<()>,
}

impl WriteHealth {
    pub(super) fn new(fresh_for: Duration) -> Self {
        Self {
            fresh_for,
            last: std::sync::Mutex::new(None),
            probing: tokio::sync::Mutex::new(()),
        }
    }

    /// Notes a write's outcome. Only a change between writable and not is logged, so a
    /// full disk under heavy traffic makes one log line, not one per refused write.
    pub(super) fn record(&self, outcome: Result<(), &str>) {
        let Ok(mut last) = self.last.lock() else {
            return;
        };
        let was = last.map(|(_, succeeded)| succeeded);
        let succeeded = outcome.is_ok();
        *last = Some((Instant::now(), succeeded));
        drop(last);
        match (was, outcome) {
            (Some(true) | None, Err(reason)) => {
                tracing::error!(
                    %reason,
                    "the store cannot write: sends, registrations and revocations are refused until it can"
                );
            }
            (Some(false), Ok(())) => tracing::info!("the store writes again"),
            _ => {}
        }
    }

    /// The latest outcome, if recent enough to answer for now.
    pub(super) fn fresh(&self) -> Option<bool> {
        let last = *self.last.lock().ok()?;
        last.filter(|(at, _)| at.elapsed() < self.fresh_for)
            .map(|(_, succeeded)| succeeded)
    }

    /// Answers `check_writable`: from a fresh outcome when there is one, else by running
    /// `probe` (a real write that records its own outcome), one probe at a time.
    pub(super) async fn check(
        &self,
        probe: impl Future<Output = Result<(), StoreError>>,
    ) -> Result<(), StoreError> {
        let answer = |writable: bool| {
            if writable {
                Ok(())
            } else {
                Err(StoreError::Unwritable(
                    "the latest write or write probe failed".to_owned(),
                ))
            }
        };
        if let Some(writable) = self.fresh() {
            return answer(writable);
        }
        let _turn = self.probing.lock().await;
        if let Some(writable) = self.fresh() {
            return answer(writable);
        }
        probe.await
    }
}

/// A write connection on loan. Settled with a success it goes back to the pool; a
/// failure, or a caller that gives up mid-write (a dropped future), closes it instead.
///
/// sqlx counts transactions on its side: when the database rolls one back by itself (an
/// SQLite COMMIT that meets a full disk), that count stays open and later statements on
/// the same connection would run inside a transaction that never commits. A connection
/// whose write failed is therefore never reused: the pool opens a fresh one for the next
/// write, which also makes writes resume by themselves once the cause is gone.
pub(super) struct Lent<'w, DB: Database> {
    conn: PoolConnection<DB>,
    health: &'w WriteHealth,
    outcome: Outcome,
}

/// How a loan of a write connection ended.
enum Outcome {
    /// The statements ran but changed nothing (a nonce already stored, a taken name, an
    /// enable of an account that was not disabled): the connection is fine, but nothing
    /// was written, so it says nothing about the disk. Counting it as a good write would
    /// let a client keep a full disk looking ready by resending an acked nonce.
    Unwritten,
    /// The caller went away mid-write (a client that disconnected, a request time
    /// limit): the connection may be half in a transaction, so it is closed, but the
    /// disk said nothing, so readiness is not told it failed. Otherwise anyone could
    /// mark the node unready by hanging up during a write.
    Abandoned,
    Succeeded,
    Failed(String),
}

impl<'w, DB: Database> Lent<'w, DB> {
    pub(super) fn new(conn: PoolConnection<DB>, health: &'w WriteHealth) -> Self {
        Self {
            conn,
            health,
            outcome: Outcome::Abandoned,
        }
    }

    pub(super) fn settle<T>(self, result: Result<T, sqlx::Error>) -> Result<T, sqlx::Error> {
        self.settle_if_written(result, |_| true)
    }

    /// Like [`Lent::settle`], for a write that may have changed nothing: `written` says
    /// whether it did.
    pub(super) fn settle_if_written<T>(
        mut self,
        result: Result<T, sqlx::Error>,
        written: impl FnOnce(&T) -> bool,
    ) -> Result<T, sqlx::Error> {
        self.outcome = match &result {
            Ok(value) if written(value) => Outcome::Succeeded,
            Ok(_) => Outcome::Unwritten,
            // A constraint refusal (a taken name) is the database answering: it undid
            // only that statement. It says nothing about the disk either way: counting
            // it as failed would let anyone mark the node unready by registering taken
            // names, counting it as written would let them make a full disk look ready.
            Err(error) if is_constraint_violation(error) => Outcome::Unwritten,
            Err(error) => Outcome::Failed(reason(error)),
        };
        result
    }
}

pub(super) fn is_constraint_violation(error: &sqlx::Error) -> bool {
    use sqlx::error::ErrorKind;
    error.as_database_error().is_some_and(|db| {
        matches!(
            db.kind(),
            ErrorKind::UniqueViolation
                | ErrorKind::ForeignKeyViolation
                | ErrorKind::NotNullViolation
                | ErrorKind::CheckViolation
        )
    })
}

/// The text of an error fit for one log line: the database's own message when there is
/// one (never a URL: sqlx does not put one in its errors).
pub(super) fn reason(error: &sqlx::Error) -> String {
    match error.as_database_error() {
        Some(db) => db.message().to_owned(),
        None => error.to_string(),
    }
}

impl<DB: Database> Drop for Lent<'_, DB> {
    fn drop(&mut self) {
        match &self.outcome {
            Outcome::Succeeded => self.health.record(Ok(())),
            Outcome::Failed(reason) => {
                self.conn.close_on_drop();
                self.health.record(Err(reason));
            }
            Outcome::Abandoned => self.conn.close_on_drop(),
            Outcome::Unwritten => {}
        }
    }
}

impl<DB: Database> Deref for Lent<'_, DB> {
    type Target = DB::Connection;
    fn deref(&self) -> &DB::Connection {
        &self.conn
    }
}

impl<DB: Database> DerefMut for Lent<'_, DB> {
    fn deref_mut(&mut self) -> &mut DB::Connection {
        &mut self.conn
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_write_outcome_answers_for_readiness_only_while_fresh() {
        let health = WriteHealth::new(WRITABLE_FRESH_FOR);
        assert_eq!(health.fresh(), None);
        health.record(Err("database or disk is full"));
        assert_eq!(health.fresh(), Some(false));
        tokio::time::advance(WRITABLE_FRESH_FOR).await;
        assert_eq!(health.fresh(), None, "stale: time for a new probe");
    }
}
