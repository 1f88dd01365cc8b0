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
use tokio::sync::{mpsc, oneshot};

pub struct SqliteStore {
    writer: Writer,
    reader: SqlitePool,
    appends: mpsc::Sender<AppendRequest>,
}

struct AppendRequest {
    message: NewMessage,
    on_commit: OnCommit,
    reply: oneshot::Sender<Result<Appended, StoreError>>,
}

/// Most appends committed in one transaction.
const MAX_BATCH: usize = 256;

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
        let (appends, requests) = mpsc::channel(4 * MAX_BATCH);
        tokio::spawn(group_commit(writer.clone(), requests));
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
        let (reply, answer) = oneshot::channel();
        self.appends
            .send(AppendRequest {
                message,
                on_commit,
                reply,
            })
            .await
            .map_err(|_| StoreError::Closed)?;
        answer.await.map_err(|_| StoreError::Closed)?
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

/// Commits waiting appends in batches until the store is dropped.
async fn group_commit(writer: Writer, mut requests: mpsc::Receiver<AppendRequest>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while let Some(first) = requests.recv().await {
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match requests.try_recv() {
                Ok(request) => batch.push(request),
                Err(_) => break,
            }
        }
        // The messages apart from their hooks and replies: only the messages are
        // borrowed across the write's awaits, so a hook need not be `Sync`.
        let (messages, waiting): (Vec<_>, Vec<_>) = batch
            .drain(..)
            .map(|request| (request.message, (request.on_commit, request.reply)))
            .unzip();
        match append_batch(&writer, &messages).await {
            Ok(results) => {
                crate::stats::store_batch(results.len());
                // In queue order, which is seq order within each room: the hook hands
                // the message on before its sender hears it is stored, so the sender
                // sees its own message before the ack, as every other member sees it.
                for ((on_commit, reply), result) in waiting.into_iter().zip(results) {
                    if !result.duplicate {
                        on_commit(&result.message);
                    }
                    let _ = reply.send(Ok(result));
                }
            }
            Err(error) => {
                // Nothing of the batch was committed: every sender gets an error to retry,
                // and no hook is called (dropping them announces nothing).
                tracing::debug!(%error, messages = waiting.len(), "cannot store messages");
                for (_, reply) in waiting {
                    let copy = match &error {
                        StoreError::Unwritable(detail) => StoreError::Unwritable(detail.clone()),
                        other => StoreError::WriteFailed(other.to_string()),
                    };
                    let _ = reply.send(Err(copy));
                }
            }
        }
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
    use super::*;

    async fn store() -> (tempfile::TempDir, SqliteStore) {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("nested/t.db").display());
        let store = SqliteStore::open(&url).await.unwrap();
        (dir, store)
    }

    /// For appends whose delivery a test does not look at.
    fn no_hook() -> OnCommit {
        Box::new(|_| {})
    }

    /// A hook that notes (room, seq) of each message it hears, in the order it hears them.
    fn recorder(heard: &Arc<std::sync::Mutex<Vec<(String, u64)>>>) -> OnCommit {
        let heard = Arc::clone(heard);
        Box::new(move |message| {
            heard
                .lock()
                .unwrap()
                .push((message.room.clone(), message.seq));
        })
    }

    fn draft(room: &str, body: &str, nonce: Option<&str>) -> NewMessage {
        NewMessage {
            room: room.to_owned(),
            from: UserRef {
                id: "u1".into(),
                name: "alice".into(),
            },
            body: body.to_owned(),
            nonce: nonce.map(str::to_owned),
            ts: 1_700_000_000_000,
        }
    }

    #[tokio::test]
    async fn seq_counts_from_one_per_room() {
        let (_dir, store) = store().await;
        let a1 = store
            .append(draft("a", "1", None), no_hook())
            .await
            .unwrap();
        let a2 = store
            .append(draft("a", "2", None), no_hook())
            .await
            .unwrap();
        let b1 = store
            .append(draft("b", "1", None), no_hook())
            .await
            .unwrap();
        assert_eq!((a1.message.seq, a2.message.seq, b1.message.seq), (1, 2, 1));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_appends_are_batched_without_gaps_or_double_nonces() {
        let (_dir, store) = store().await;
        let store = std::sync::Arc::new(store);
        let heard = Arc::new(std::sync::Mutex::new(Vec::new()));
        let mut tasks = Vec::new();
        for i in 0..200 {
            let store = std::sync::Arc::clone(&store);
            let hook = recorder(&heard);
            tasks.push(tokio::spawn(async move {
                // Every room gets 20 messages; "dup" nonces repeat within each room.
                let room = format!("r{}", i % 10);
                let nonce = (i % 20 == 0).then_some("dup");
                store
                    .append(draft(&room, &i.to_string(), nonce), hook)
                    .await
                    .unwrap()
            }));
        }
        let mut appended = Vec::new();
        for task in tasks {
            appended.push(task.await.unwrap());
        }
        for r in 0..10 {
            let room = format!("r{r}");
            let mut seqs: Vec<u64> = appended
                .iter()
                .filter(|a| a.message.room == room && !a.duplicate)
                .map(|a| a.message.seq)
                .collect();
            seqs.sort_unstable();
            let stored = store
                .snapshot(&room, ReplayFrom::Latest(100))
                .await
                .unwrap();
            assert_eq!(
                seqs,
                (1..=stored.last_seq).collect::<Vec<_>>(),
                "room {room}"
            );
            assert_eq!(stored.messages.len() as u64, stored.last_seq);
            let announced: Vec<u64> = heard
                .lock()
                .unwrap()
                .iter()
                .filter(|(r, _)| *r == room)
                .map(|(_, seq)| *seq)
                .collect();
            assert_eq!(
                announced, seqs,
                "the hooks of room {room} hear every stored seq once, in order"
            );
        }
        // Every i % 20 == 0 lands in room r0: ten sends with one nonce, one stored.
        let firsts = appended
            .iter()
            .filter(|a| a.message.nonce.as_deref() == Some("dup"));
        assert_eq!(firsts.clone().filter(|a| !a.duplicate).count(), 1);
        assert_eq!(firsts.count(), 10);
    }

    /// Counts the transactions the writer connection commits from now on.
    async fn count_commits(store: &SqliteStore) -> Arc<std::sync::atomic::AtomicU64> {
        let commits = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let counter = Arc::clone(&commits);
        let mut lent = store.writer.lend().await.unwrap();
        lent.lock_handle().await.unwrap().set_commit_hook(move || {
            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            true
        });
        lent.settle(Ok(())).unwrap();
        commits
    }

    /// Queues every message before a committer looks at its queue, as when they all
    /// arrive while the previous batch is being written; their answers, in queue order.
    async fn arrive_together(
        store: &SqliteStore,
        messages: Vec<NewMessage>,
        heard: &Arc<std::sync::Mutex<Vec<(String, u64)>>>,
    ) -> Vec<Result<Appended, StoreError>> {
        let (requests, queue) = mpsc::channel(messages.len());
        let mut answers = Vec::new();
        for message in messages {
            let (reply, answer) = oneshot::channel();
            let on_commit = recorder(heard);
            requests
                .try_send(AppendRequest {
                    message,
                    on_commit,
                    reply,
                })
                .unwrap();
            answers.push(answer);
        }
        drop(requests);
        group_commit(store.writer.clone(), queue).await;
        let mut results = Vec::new();
        for answer in answers {
            results.push(answer.await.unwrap());
        }
        results
    }

    fn nonced(i: usize) -> NewMessage {
        draft("hot", &i.to_string(), Some(&format!("n{i}")))
    }

    #[tokio::test]
    async fn a_hot_room_commits_many_messages_per_batch() {
        let (_dir, store) = store().await;
        let commits = count_commits(&store).await;
        let heard = Arc::new(std::sync::Mutex::new(Vec::new()));
        // 32 sends to one room, and a resend of the sixth within the same batch.
        let mut messages: Vec<_> = (0..32).map(nonced).collect();
        messages.push(nonced(5));

        let results = arrive_together(&store, messages, &heard).await;

        assert_eq!(
            commits.load(std::sync::atomic::Ordering::SeqCst),
            1,
            "one transaction (one fsync) for the room's whole batch"
        );
        let answers: Vec<(u64, bool)> = results
            .into_iter()
            .map(|r| r.map(|a| (a.message.seq, a.duplicate)).unwrap())
            .collect();
        let mut expected: Vec<(u64, bool)> = (1..=32).map(|seq| (seq, false)).collect();
        expected.push((6, true));
        assert_eq!(
            answers, expected,
            "seq in queue order; the resend is the sixth"
        );
        let heard = heard.lock().unwrap().clone();
        assert_eq!(
            heard,
            (1..=32)
                .map(|seq| ("hot".to_owned(), seq))
                .collect::<Vec<_>>(),
            "each stored message announced once, in seq order; the resend not again"
        );
    }

    #[tokio::test]
    async fn a_failed_batch_announces_nothing_and_every_sender_may_retry() {
        let (_dir, store) = store().await;
        // The next write meets a database it cannot write to, as on a read-only disk.
        let mut lent = store.writer.lend().await.unwrap();
        let done = sqlx::query("PRAGMA query_only = ON")
            .execute(&mut *lent)
            .await
            .map(drop);
        lent.settle(done).unwrap();
        let heard = Arc::new(std::sync::Mutex::new(Vec::new()));

        let failed = arrive_together(&store, (0..5).map(nonced).collect(), &heard).await;
        for answer in &failed {
            assert!(
                matches!(answer, Err(error) if error.is_unavailable()),
                "{answer:?}"
            );
        }
        assert!(heard.lock().unwrap().is_empty(), "nothing was announced");

        // The failed connection was closed: the same sends again are stored, once each.
        let retried = arrive_together(&store, (0..5).map(nonced).collect(), &heard).await;
        let seqs: Vec<u64> = retried
            .into_iter()
            .map(|r| r.map(|a| a.message.seq).unwrap())
            .collect();
        assert_eq!(seqs, [1, 2, 3, 4, 5]);
        assert_eq!(heard.lock().unwrap().len(), 5);
    }

    #[tokio::test]
    async fn a_repeated_nonce_returns_the_first_message() {
        let (_dir, store) = store().await;
        let first = store
            .append(draft("a", "hi", Some("n1")), no_hook())
            .await
            .unwrap();
        let again = store
            .append(draft("a", "hi again", Some("n1")), no_hook())
            .await
            .unwrap();
        assert!(again.duplicate);
        assert_eq!(again.message.seq, first.message.seq);
        assert_eq!(again.message.body, "hi");
        let snap = store.snapshot("a", ReplayFrom::Latest(50)).await.unwrap();
        assert_eq!(snap.messages.len(), 1);
    }

    #[tokio::test]
    async fn snapshots_page_and_report_completeness() {
        let (_dir, store) = store().await;
        for i in 1..=10 {
            store
                .append(draft("a", &i.to_string(), None), no_hook())
                .await
                .unwrap();
        }
        let latest = store.snapshot("a", ReplayFrom::Latest(3)).await.unwrap();
        assert_eq!(latest.last_seq, 10);
        assert_eq!(
            latest.messages.iter().map(|m| m.seq).collect::<Vec<_>>(),
            [8, 9, 10]
        );
        assert!(!latest.complete);
        let all = store.snapshot("a", ReplayFrom::Latest(50)).await.unwrap();
        assert!(all.complete);
        let since = store
            .snapshot("a", ReplayFrom::Since { seq: 7, max: 100 })
            .await
            .unwrap();
        assert_eq!(
            since.messages.iter().map(|m| m.seq).collect::<Vec<_>>(),
            [8, 9, 10]
        );
        assert!(since.complete);
        let capped = store
            .snapshot("a", ReplayFrom::Since { seq: 2, max: 2 })
            .await
            .unwrap();
        assert_eq!(
            capped.messages.iter().map(|m| m.seq).collect::<Vec<_>>(),
            [9, 10]
        );
        assert!(!capped.complete);
        let before = store.before("a", 5, 2).await.unwrap();
        assert_eq!(before.iter().map(|m| m.seq).collect::<Vec<_>>(), [3, 4]);
        let empty = store
            .snapshot("nowhere", ReplayFrom::Latest(50))
            .await
            .unwrap();
        assert_eq!((empty.last_seq, empty.complete), (0, true));
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

    #[tokio::test]
    async fn revocations_keep_the_latest_moment() {
        let (_dir, store) = store().await;
        store.revoke("u1", 100).await.unwrap();
        store.revoke("u1", 50).await.unwrap();
        store.revoke("u2", 7).await.unwrap();
        let mut all = store.revocations().await.unwrap();
        all.sort_by(|a, b| a.user_id.cmp(&b.user_id));
        assert_eq!(
            all,
            [
                Revocation {
                    user_id: "u1".to_owned(),
                    at: 100
                },
                Revocation {
                    user_id: "u2".to_owned(),
                    at: 7
                }
            ]
        );
    }

    async fn probes_so_far(store: &SqliteStore) -> i64 {
        let row: Option<(i64,)> = sqlx::query_as("SELECT probes FROM write_probe")
            .fetch_optional(&store.reader)
            .await
            .unwrap();
        row.map_or(0, |(n,)| n)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_flood_of_readiness_checks_writes_one_probe() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("t.db").display());
        let store = Arc::new(
            SqliteStore::open_with(&url, Duration::from_secs(3600))
                .await
                .unwrap(),
        );
        let checks: Vec<_> = (0..50)
            .map(|_| {
                let store = Arc::clone(&store);
                tokio::spawn(async move { store.check_writable().await })
            })
            .collect();
        for check in checks {
            check.await.unwrap().unwrap();
        }
        assert_eq!(probes_so_far(&store).await, 1);
    }

    #[tokio::test]
    async fn a_write_its_caller_abandoned_does_not_make_the_store_look_unwritable() {
        let (_dir, store) = store().await;
        // What a dropped request future leaves: the writer lent and never settled.
        let abandoned = store.writer.lend().await.unwrap();
        drop(abandoned);
        assert_eq!(store.writer.health.fresh(), None, "nothing was learnt");
        store.check_writable().await.unwrap();
        store
            .append(draft("a", "after", None), no_hook())
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn readiness_answers_from_the_latest_write_instead_of_probing() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("t.db").display());
        let store = SqliteStore::open_with(&url, Duration::from_secs(3600))
            .await
            .unwrap();
        store
            .append(draft("a", "1", None), no_hook())
            .await
            .unwrap();
        store.check_writable().await.unwrap();
        assert_eq!(probes_so_far(&store).await, 0);
    }

    #[tokio::test]
    async fn a_taken_username_does_not_make_the_store_look_unwritable() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("t.db").display());
        let store = SqliteStore::open_with(&url, Duration::from_secs(3600))
            .await
            .unwrap();
        store.create_user("1", "alice", "h").await.unwrap();
        assert!(matches!(
            store.create_user("2", "alice", "h").await,
            Err(StoreError::UsernameTaken)
        ));
        store.check_writable().await.unwrap();
    }

    #[tokio::test]
    async fn a_ban_is_kept_until_lifted_and_leaves_its_revocation_behind() {
        let (_dir, store) = store().await;
        store.disable("u1", 100).await.unwrap();
        store.disable("u1", 200).await.unwrap();
        assert_eq!(
            store.disabled_users().await.unwrap(),
            [Ban {
                user_id: "u1".to_owned(),
                at: 100
            }]
        );
        assert_eq!(
            store.revocations().await.unwrap(),
            [Revocation {
                user_id: "u1".to_owned(),
                at: 200
            }]
        );
        assert!(store.enable("u1").await.unwrap());
        assert!(!store.enable("u1").await.unwrap());
        assert!(store.disabled_users().await.unwrap().is_empty());
        assert_eq!(
            store.revocations().await.unwrap(),
            [Revocation {
                user_id: "u1".to_owned(),
                at: 200
            }]
        );
    }

    #[tokio::test]
    async fn accounts_are_found_by_id() {
        let (_dir, store) = store().await;
        store.create_user("1", "alice", "h").await.unwrap();
        assert_eq!(
            store.find_user_by_id("1").await.unwrap().unwrap().user.name,
            "alice"
        );
        assert!(store.find_user_by_id("2").await.unwrap().is_none());
    }

    #[tokio::test]
    async fn usernames_are_unique_whatever_their_case() {
        let (_dir, store) = store().await;
        store.create_user("1", "alice", "h").await.unwrap();
        assert!(matches!(
            store.create_user("2", "ALICE", "h").await,
            Err(StoreError::UsernameTaken)
        ));
        let found = store.find_user_by_name("Alice").await.unwrap().unwrap();
        assert_eq!(found.user.id, "1");
    }
}
