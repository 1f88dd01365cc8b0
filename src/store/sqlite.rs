//! The embedded store: one SQLite file in WAL mode.
//!
//! Writes go through a single connection, so appends are serialised by the database
//! itself and never meet `SQLITE_BUSY`; reads use a small pool of their own and see a
//! consistent snapshot thanks to WAL. `synchronous = FULL`: a commit is on disk before
//! `append` returns, so an acked message survives a crash of the process or the machine.
//!
//! Appends are group-committed: one task takes every append waiting (up to 256) and
//! writes them in one transaction, so concurrent senders share one fsync instead of
//! queueing for one each, whether they write to many rooms or to one hot room. That task
//! is the only writer of messages and gives `seq`s in the order of its queue, so right
//! after each commit it calls the batch's commit hooks in that order (each room's
//! messages in `seq` order), and only then answers each caller.
//!
//! A write that fails (full or read-only disk, I/O error) closes the writer connection
//! instead of reusing it (see [`Writer`]), and is reported as
//! [`StoreError::Unwritable`]; the outcome of the latest write also answers `/readyz`.
//! Opening refuses a file SQLite finds damaged, and every opening error names the file.

use super::group_commit::{Appends, BatchWriter};
use super::write_health::{Lent, WRITABLE_FRESH_FOR, WriteHealth, reason};
use super::{
    Accounts, Appended, Ban, MessageLog, NewMessage, OnCommit, ReplayFrom, Revocation,
    RevocationLog, RoomSnapshot, RoomSummary, Store, StoreError, UserRecord,
};
use crate::model::{Role, StoredMessage, UserRef};
use async_trait::async_trait;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{Connection, Sqlite, SqliteConnection};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

pub struct SqliteStore {
    writer: Writer,
    reader: SqlitePool,
    appends: Appends,
}

/// How long a write waits for the writer connection (queued behind others, or reopening).
const WRITER_ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);

type MessageRow = (i64, String, String, String, Option<String>, i64);

const MESSAGE_COLUMNS: &str = "seq, user_id, user_name, body, nonce, ts";

fn to_message(room: &str, row: MessageRow) -> StoredMessage {
    let (seq, user_id, user_name, body, nonce, ts) = row;
    StoredMessage {
        room: room.to_owned(),
        seq: u64::try_from(seq).unwrap_or(0),
        from: UserRef {
            id: user_id,
            name: user_name,
        },
        body,
        ts,
        nonce,
    }
}

type UserRow = (String, String, String, String);

fn to_user((id, name, password_hash, role): UserRow) -> UserRecord {
    UserRecord {
        user: UserRef { id, name },
        password_hash,
        role: Role::from_db(&role),
    }
}

fn to_db_seq(seq: u64) -> i64 {
    i64::try_from(seq).unwrap_or(i64::MAX)
}

/// SQLite's primary result code of an error (sqlx gives the extended one).
fn primary_code(error: &sqlx::Error) -> Option<i64> {
    error
        .as_database_error()
        .and_then(|db| db.code())
        .and_then(|code| code.parse::<i64>().ok())
        .map(|code| code & 0xff)
}

/// A failed write, sorted: causes that pass by themselves (the disk, a busy or closing
/// database) are [`StoreError::Unwritable`], to retry; the rest are bugs.
fn write_error(error: sqlx::Error) -> StoreError {
    const BUSY: i64 = 5;
    const LOCKED: i64 = 6;
    const READONLY: i64 = 8;
    const IOERR: i64 = 10;
    const FULL: i64 = 13;
    const CANTOPEN: i64 = 14;
    const PROTOCOL: i64 = 15;
    let passing = match &error {
        sqlx::Error::Database(_) => matches!(
            primary_code(&error),
            Some(BUSY | LOCKED | READONLY | IOERR | FULL | CANTOPEN | PROTOCOL)
        ),
        sqlx::Error::Io(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => true,
        _ => false,
    };
    if passing {
        StoreError::Unwritable(reason(&error))
    } else {
        StoreError::WriteFailed(reason(&error))
    }
}

impl SqliteStore {
    /// Rows of (user id, Unix seconds): how revocations and bans are both kept.
    async fn user_moments(
        &self,
        query: &'static str,
    ) -> Result<impl Iterator<Item = (String, i64)>, sqlx::Error> {
        let rows: Vec<(String, i64)> = sqlx::query_as(query).fetch_all(&self.reader).await?;
        Ok(rows.into_iter())
    }

    /// Opens (creating file and folder if needed), checks and migrates the database.
    /// Every error names the file.
    pub async fn open(url: &str) -> Result<Self, StoreError> {
        Self::open_with(url, WRITABLE_FRESH_FOR).await
    }

    /// [`SqliteStore::open`], with how long a write's outcome answers for readiness.
    async fn open_with(url: &str, writable_fresh_for: Duration) -> Result<Self, StoreError> {
        let failed = |path: &str, reason: String| StoreError::Open {
            path: path.to_owned(),
            reason,
        };
        let options = SqliteConnectOptions::from_str(url)
            .map_err(|e| failed(&super::describe_url(url), reason(&e)))?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(Duration::from_secs(5))
            .foreign_keys(true);
        let path = options.get_filename().display().to_string();
        if let Some(parent) = options.get_filename().parent()
            && !parent.as_os_str().is_empty()
        {
            std::fs::create_dir_all(parent).map_err(|e| {
                failed(
                    &path,
                    format!("cannot create its folder {}: {e}", parent.display()),
                )
            })?;
        }
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .acquire_timeout(WRITER_ACQUIRE_TIMEOUT)
            .connect_with(
                options
                    .clone()
                    .pragma("wal_autocheckpoint", WAL_CHECKPOINT_PAGES.to_string())
                    .pragma("journal_size_limit", WAL_SIZE_LIMIT_BYTES.to_string()),
            )
            .await
            .map_err(|e| open_error(&path, &e))?;
        check_integrity(&writer, &path).await?;
        sqlx::migrate!("./migrations/sqlite")
            .run(&writer)
            .await
            .map_err(|e| failed(&path, format!("migration failed: {e}")))?;
        let reader = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options.read_only(true))
            .await
            .map_err(|e| failed(&path, reason(&e)))?;
        let writer = Writer::new(writer, writable_fresh_for);
        let appends = Appends::start(writer.clone());
        Ok(Self {
            writer,
            reader,
            appends,
        })
    }
}

/// Pages of write-ahead log after which a commit copies them into the database file.
/// SQLite's default (1000 pages, 4 MiB) lets the log alone fill a small or nearly full
/// disk: each small commit appends whole pages, so 160 KB of messages took 2 MB of log,
/// and a disk that had room again filled up once more before any checkpoint ran.
const WAL_CHECKPOINT_PAGES: u32 = 256;

/// After a checkpoint the log file is cut back to this size: nothing, so the space it
/// took is given back to the disk (where messages may need it) instead of kept for reuse.
const WAL_SIZE_LIMIT_BYTES: u64 = 0;

/// A failure to open the file: SQLite's "not a database" and "malformed" mean damaged;
/// "cannot open" and "read-only" usually mean a folder or disk the server cannot write.
fn open_error(path: &str, error: &sqlx::Error) -> StoreError {
    const SQLITE_READONLY: i64 = 8;
    const SQLITE_CORRUPT: i64 = 11;
    const SQLITE_CANTOPEN: i64 = 14;
    const SQLITE_NOTADB: i64 = 26;
    let path = path.to_owned();
    match primary_code(error) {
        Some(SQLITE_CORRUPT | SQLITE_NOTADB) => StoreError::Corrupt {
            path,
            detail: reason(error),
        },
        Some(SQLITE_CANTOPEN | SQLITE_READONLY) => StoreError::Open {
            path,
            reason: format!(
                "{} (check that its folder exists and is writable by this user)",
                reason(error)
            ),
        },
        _ => StoreError::Open {
            path,
            reason: reason(error),
        },
    }
}

/// Refuses a file SQLite itself finds damaged, so it is not discovered later, one
/// failed query at a time. `quick_check` reads every page but skips index cross-checks.
async fn check_integrity(pool: &SqlitePool, path: &str) -> Result<(), StoreError> {
    let corrupt = |detail: String| StoreError::Corrupt {
        path: path.to_owned(),
        detail: format!("quick_check: {detail}"),
    };
    let findings: Vec<(String,)> = sqlx::query_as("PRAGMA quick_check(5)")
        .fetch_all(pool)
        .await
        .map_err(|e| corrupt(reason(&e)))?;
    match findings.as_slice() {
        [(only,)] if only == "ok" => Ok(()),
        _ => Err(corrupt(
            findings
                .into_iter()
                .map(|(line,)| line.replace(['\n', '\r'], " "))
                .collect::<Vec<_>>()
                .join("; "),
        )),
    }
}

/// The single writer connection, lent out for one write at a time (as a [`Lent`], which
/// closes it after a failed write: SQLite may have rolled back a transaction sqlx still
/// counts as open), and what the last write found (for readiness).
#[derive(Clone)]
struct Writer {
    pool: SqlitePool,
    health: Arc<WriteHealth>,
}

impl Writer {
    fn new(pool: SqlitePool, fresh_for: Duration) -> Self {
        Self {
            pool,
            health: Arc::new(WriteHealth::new(fresh_for)),
        }
    }

    async fn lend(&self) -> Result<Lent<'_, Sqlite>, StoreError> {
        match self.pool.acquire().await {
            Ok(conn) => Ok(Lent::new(conn, &self.health)),
            Err(error) => {
                self.health.record(Err(&reason(&error)));
                Err(write_error(error))
            }
        }
    }

    /// Runs one statement in its own (implicit) transaction.
    async fn execute<'q>(
        &self,
        query: sqlx::query::Query<'q, Sqlite, sqlx::sqlite::SqliteArguments<'q>>,
    ) -> Result<(), StoreError> {
        let mut lent = self.lend().await?;
        let done = query.execute(&mut *lent).await.map(drop);
        lent.settle(done).map_err(write_error)
    }
}

#[async_trait]
impl Accounts for SqliteStore {
    async fn create_user(
        &self,
        id: &str,
        name: &str,
        password_hash: &str,
    ) -> Result<UserRecord, StoreError> {
        let mut lent = self.writer.lend().await?;
        let result = sqlx::query(
            "INSERT INTO users (id, name, password_hash, role, created_at) VALUES (?1, ?2, ?3, 'user', ?4)",
        )
        .bind(id)
        .bind(name)
        .bind(password_hash)
        .bind(crate::model::now_secs())
        .execute(&mut *lent)
        .await;
        match lent.settle(result) {
            Ok(_) => Ok(UserRecord {
                user: UserRef {
                    id: id.to_owned(),
                    name: name.to_owned(),
                },
                password_hash: password_hash.to_owned(),
                role: Role::User,
            }),
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
                Err(StoreError::UsernameTaken)
            }
            Err(e) => Err(write_error(e)),
        }
    }

    async fn find_user_by_name(&self, name: &str) -> Result<Option<UserRecord>, StoreError> {
        let row: Option<UserRow> = sqlx::query_as(
            "SELECT id, name, password_hash, role FROM users WHERE name = ?1 COLLATE NOCASE",
        )
        .bind(name)
        .fetch_optional(&self.reader)
        .await?;
        Ok(row.map(to_user))
    }

    async fn find_user_by_id(&self, id: &str) -> Result<Option<UserRecord>, StoreError> {
        let row: Option<UserRow> =
            sqlx::query_as("SELECT id, name, password_hash, role FROM users WHERE id = ?1")
                .bind(id)
                .fetch_optional(&self.reader)
                .await?;
        Ok(row.map(to_user))
    }

    async fn disable(&self, user_id: &str, at: i64) -> Result<(), StoreError> {
        // The ban and the revocation of the tokens held so far commit together.
        let mut lent = self.writer.lend().await?;
        let written = disable_in(&mut lent, user_id, at).await;
        lent.settle(written).map_err(write_error)
    }

    async fn enable(&self, user_id: &str) -> Result<bool, StoreError> {
        let mut lent = self.writer.lend().await?;
        let deleted = sqlx::query("DELETE FROM disabled_users WHERE user_id = ?1")
            .bind(user_id)
            .execute(&mut *lent)
            .await;
        lent.settle_if_written(deleted, |done| done.rows_affected() > 0)
            .map(|done| done.rows_affected() > 0)
            .map_err(write_error)
    }

    async fn disabled_users(&self) -> Result<Vec<Ban>, StoreError> {
        let rows = self
            .user_moments("SELECT user_id, disabled_at FROM disabled_users")
            .await?;
        Ok(rows.map(|(user_id, at)| Ban { user_id, at }).collect())
    }
}

#[async_trait]
impl MessageLog for SqliteStore {
    async fn append(
        &self,
        message: NewMessage,
        on_commit: OnCommit,
    ) -> Result<Appended, StoreError> {
        self.appends.append(message, on_commit).await
    }

    async fn snapshot(&self, room: &str, from: ReplayFrom) -> Result<RoomSnapshot, StoreError> {
        // One read transaction: WAL gives it a stable snapshot for both queries.
        let mut tx = self.reader.begin().await?;
        let last_seq: Option<(i64,)> = sqlx::query_as("SELECT last_seq FROM rooms WHERE name = ?1")
            .bind(room)
            .fetch_optional(&mut *tx)
            .await?;
        let Some((last_seq,)) = last_seq else {
            tx.commit().await?;
            return Ok(RoomSnapshot {
                last_seq: 0,
                messages: Vec::new(),
                complete: true,
            });
        };
        let (after, limit) = match from {
            ReplayFrom::Latest(n) => (0, n),
            ReplayFrom::Since { seq, max } => (to_db_seq(seq), max),
        };
        let mut rows: Vec<MessageRow> = sqlx::query_as(&format!(
            "SELECT {MESSAGE_COLUMNS} FROM messages
             WHERE room = ?1 AND seq > ?2 AND seq <= ?3 ORDER BY seq DESC LIMIT ?4"
        ))
        .bind(room)
        .bind(after)
        .bind(last_seq)
        .bind(i64::from(limit))
        .fetch_all(&mut *tx)
        .await?;
        let first_kept: Option<(i64,)> =
            sqlx::query_as("SELECT MIN(seq) FROM messages WHERE room = ?1")
                .bind(room)
                .fetch_optional(&mut *tx)
                .await?;
        tx.commit().await?;
        rows.reverse();
        let oldest_wanted = after.saturating_add(1).max(first_kept.map_or(1, |(s,)| s));
        let complete = match rows.first() {
            None => after >= last_seq,
            Some(first) => first.0 <= oldest_wanted,
        };
        Ok(RoomSnapshot {
            last_seq: u64::try_from(last_seq).unwrap_or(0),
            messages: rows.into_iter().map(|row| to_message(room, row)).collect(),
            complete,
        })
    }

    async fn before(
        &self,
        room: &str,
        before: u64,
        limit: u32,
    ) -> Result<Vec<StoredMessage>, StoreError> {
        let mut rows: Vec<MessageRow> = sqlx::query_as(&format!(
            "SELECT {MESSAGE_COLUMNS} FROM messages
             WHERE room = ?1 AND seq < ?2 ORDER BY seq DESC LIMIT ?3"
        ))
        .bind(room)
        .bind(to_db_seq(before))
        .bind(i64::from(limit))
        .fetch_all(&self.reader)
        .await?;
        rows.reverse();
        Ok(rows.into_iter().map(|row| to_message(room, row)).collect())
    }

    async fn rooms(&self) -> Result<Vec<RoomSummary>, StoreError> {
        let rows: Vec<(String, i64)> =
            sqlx::query_as("SELECT name, last_seq FROM rooms ORDER BY name LIMIT 10000")
                .fetch_all(&self.reader)
                .await?;
        Ok(rows
            .into_iter()
            .map(|(name, seq)| RoomSummary {
                name,
                last_seq: u64::try_from(seq).unwrap_or(0),
            })
            .collect())
    }

    async fn last_seqs(&self, rooms: &[String]) -> Result<Vec<(String, u64)>, StoreError> {
        if rooms.is_empty() {
            return Ok(Vec::new());
        }
        // The names as one JSON array: one bound parameter whatever their number (SQLite
        // caps the parameters of a statement).
        let names = serde_json::to_string(rooms).unwrap_or_else(|_| "[]".to_owned());
        let rows: Vec<(String, i64)> = sqlx::query_as(
            "SELECT name, last_seq FROM rooms WHERE name IN (SELECT value FROM json_each(?1))",
        )
        .bind(names)
        .fetch_all(&self.reader)
        .await?;
        Ok(rows
            .into_iter()
            .map(|(name, seq)| (name, u64::try_from(seq).unwrap_or(0)))
            .collect())
    }
}

#[async_trait]
impl RevocationLog for SqliteStore {
    async fn revoke(&self, user_id: &str, at: i64) -> Result<(), StoreError> {
        self.writer
            .execute(
                sqlx::query(
                    "INSERT INTO revocations (user_id, revoked_at) VALUES (?1, ?2)
                     ON CONFLICT (user_id) DO UPDATE SET revoked_at = MAX(revoked_at, excluded.revoked_at)",
                )
                .bind(user_id)
                .bind(at),
            )
            .await
    }

    async fn revocations(&self) -> Result<Vec<Revocation>, StoreError> {
        let rows = self
            .user_moments("SELECT user_id, revoked_at FROM revocations")
            .await?;
        Ok(rows
            .map(|(user_id, at)| Revocation { user_id, at })
            .collect())
    }
}

#[async_trait]
impl Store for SqliteStore {
    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.reader).await?;
        Ok(())
    }

    async fn check_writable(&self) -> Result<(), StoreError> {
        // One tiny row rewritten in place: a real commit through the real writer.
        let probe = self.writer.execute(
            sqlx::query(
                "INSERT INTO write_probe (id, at, probes) VALUES (1, ?1, 1)
                 ON CONFLICT (id) DO UPDATE SET at = excluded.at, probes = probes + 1",
            )
            .bind(crate::model::now_millis()),
        );
        self.writer.health.check(probe).await
    }
}

/// Writes one message inside the batch's transaction: its seq, or the earlier message
/// with the same nonce (earlier in this batch too: the transaction sees its own writes).
async fn append_in(
    tx: &mut SqliteConnection,
    message: &NewMessage,
) -> Result<Appended, sqlx::Error> {
    {
        if let Some(nonce) = &message.nonce {
            let earlier: Option<MessageRow> = sqlx::query_as(&format!(
                "SELECT {MESSAGE_COLUMNS} FROM messages WHERE room = ?1 AND user_id = ?2 AND nonce = ?3"
            ))
            .bind(&message.room)
            .bind(&message.from.id)
            .bind(nonce)
            .fetch_optional(&mut *tx)
            .await?;
            if let Some(row) = earlier {
                return Ok(Appended {
                    message: to_message(&message.room, row),
                    duplicate: true,
                });
            }
        }
        let (seq,): (i64,) = sqlx::query_as(
            "INSERT INTO rooms (name, last_seq, created_at) VALUES (?1, 1, ?2)
             ON CONFLICT (name) DO UPDATE SET last_seq = last_seq + 1
             RETURNING last_seq",
        )
        .bind(&message.room)
        .bind(message.ts / 1000)
        .fetch_one(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO messages (room, seq, user_id, user_name, body, nonce, ts)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        )
        .bind(&message.room)
        .bind(seq)
        .bind(&message.from.id)
        .bind(&message.from.name)
        .bind(&message.body)
        .bind(&message.nonce)
        .bind(message.ts)
        .execute(&mut *tx)
        .await?;
        Ok(Appended {
            message: StoredMessage {
                room: message.room.clone(),
                seq: u64::try_from(seq).unwrap_or(0),
                from: message.from.clone(),
                body: message.body.clone(),
                ts: message.ts,
                nonce: message.nonce.clone(),
            },
            duplicate: false,
        })
    }
}

async fn disable_in(
    conn: &mut SqliteConnection,
    user_id: &str,
    at: i64,
) -> Result<(), sqlx::Error> {
    let mut tx = conn.begin().await?;
    sqlx::query(
        "INSERT INTO revocations (user_id, revoked_at) VALUES (?1, ?2)
         ON CONFLICT (user_id) DO UPDATE SET revoked_at = MAX(revoked_at, excluded.revoked_at)",
    )
    .bind(user_id)
    .bind(at)
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "INSERT INTO disabled_users (user_id, disabled_at) VALUES (?1, ?2)
         ON CONFLICT (user_id) DO NOTHING",
    )
    .bind(user_id)
    .bind(at)
    .execute(&mut *tx)
    .await?;
    tx.commit().await
}

#[async_trait]
impl BatchWriter for Writer {
    async fn append_batch(&self, batch: &[NewMessage]) -> Result<Vec<Appended>, StoreError> {
        append_batch(self, batch).await
    }
}

async fn append_batch(writer: &Writer, batch: &[NewMessage]) -> Result<Vec<Appended>, StoreError> {
    let mut lent = writer.lend().await?;
    let written = write_batch(&mut lent, batch).await;
    lent.settle_if_written(written, |appended| appended.iter().any(|a| !a.duplicate))
        .map_err(write_error)
}

async fn write_batch(
    conn: &mut SqliteConnection,
    batch: &[NewMessage],
) -> Result<Vec<Appended>, sqlx::Error> {
    let mut tx = conn.begin().await?;
    let mut results = Vec::with_capacity(batch.len());
    for message in batch {
        results.push(append_in(&mut tx, message).await?);
    }
    tx.commit().await?;
    Ok(results)
}

#[cfg(test)]
mod tests {
    use super::super::contract_tests::{CommitCount, Internals, store_contract};
    use super::*;
    use crate::store::group_commit::{self, AppendRequest};
    use std::sync::atomic::{AtomicU64, Ordering};
    use tokio::sync::mpsc;

    async fn store() -> (tempfile::TempDir, SqliteStore) {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("nested/t.db").display());
        let store = SqliteStore::open(&url).await.unwrap();
        (dir, store)
    }

    /// A store for the contract (always there, so never `None`).
    async fn fresh() -> Option<(tempfile::TempDir, SqliteStore)> {
        Some(store().await)
    }

    /// A store whose write outcomes stay fresh for readiness for the whole test.
    async fn patient() -> Option<(tempfile::TempDir, SqliteStore)> {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("t.db").display());
        let store = SqliteStore::open_with(&url, Duration::from_secs(3600))
            .await
            .unwrap();
        Some((dir, store))
    }

    store_contract!(fresh, patient);

    #[async_trait]
    impl CommitCount for Arc<AtomicU64> {
        async fn so_far(&self) -> u64 {
            self.load(Ordering::SeqCst)
        }
    }

    #[async_trait]
    impl Internals for SqliteStore {
        async fn group_commit(&self, queue: mpsc::Receiver<AppendRequest>) {
            group_commit::run(self.writer.clone(), queue).await;
        }

        /// Counts the transactions the writer connection commits, with SQLite's commit hook.
        async fn count_commits(&self) -> Box<dyn CommitCount + '_> {
            let commits = Arc::new(AtomicU64::new(0));
            let counter = Arc::clone(&commits);
            let mut lent = self.writer.lend().await.unwrap();
            lent.lock_handle().await.unwrap().set_commit_hook(move || {
                counter.fetch_add(1, Ordering::SeqCst);
                true
            });
            lent.settle(Ok(())).unwrap();
            Box::new(commits)
        }

        /// The writer goes read-only; the failed write closes that connection, so the
        /// next one writes again by itself.
        async fn refuse_writes(&self) {
            let mut lent = self.writer.lend().await.unwrap();
            let done = sqlx::query("PRAGMA query_only = ON")
                .execute(&mut *lent)
                .await
                .map(drop);
            lent.settle(done).unwrap();
        }

        async fn allow_writes(&self) {}

        async fn abandon_a_write(&self) {
            drop(self.writer.lend().await.unwrap());
        }

        fn write_health(&self) -> &WriteHealth {
            &self.writer.health
        }

        async fn probes_so_far(&self) -> i64 {
            let row: Option<(i64,)> = sqlx::query_as("SELECT probes FROM write_probe")
                .fetch_optional(&self.reader)
                .await
                .unwrap();
            row.map_or(0, |(n,)| n)
        }
    }

    #[tokio::test]
    async fn commits_are_synced_to_disk_in_wal_mode() {
        let (_dir, store) = store().await;
        let (synchronous,): (i64,) = sqlx::query_as("PRAGMA synchronous")
            .fetch_one(&store.writer.pool)
            .await
            .unwrap();
        let (journal,): (String,) = sqlx::query_as("PRAGMA journal_mode")
            .fetch_one(&store.writer.pool)
            .await
            .unwrap();
        assert_eq!(synchronous, 2, "FULL: an ack means the message is on disk");
        assert_eq!(journal, "wal");
    }
}
