//! The store for cluster mode: one PostgreSQL database shared by every node.
//!
//! It exists so that several palisade nodes can serve the same rooms, accounts and bans:
//! SQLite is one file for one process. It keeps the same contract as
//! [`super::sqlite::SqliteStore`] (group commit, hooks after commit in `seq` order, a
//! failed write reported as retryable, readiness from recent writes); what differs comes
//! from not being the only writer:
//!
//! - A room's `seq` is decided by the database, not by this node's queue. A batch first
//!   locks the row of each of its rooms (in name order, so two nodes' batches cannot
//!   deadlock) and reads its `last_seq`, then inserts the messages and the new `last_seq`
//!   in the same transaction. Another node's batch for the same room waits for the lock,
//!   so each room's seqs stay contiguous however many nodes write.
//! - Nonces are looked up once the rooms are locked, so a resend stored meanwhile by
//!   another node is seen and answered as a duplicate. The unique index is the backstop:
//!   a batch that meets it anyway is written again from the start (nothing of it was
//!   committed or announced).
//! - Each node announces only what it committed itself; other nodes' messages reach it
//!   through the broker, not through this store.
//! - Writes and reads share one pool of connections; a join's snapshot is one
//!   REPEATABLE READ transaction. A commit is as durable as the server's
//!   `synchronous_commit` makes it (on disk, by default).
//! - A write that fails because the server is unreachable, restarting, read-only (a
//!   standby during failover) or out of disk is [`StoreError::Unwritable`]. Migrations
//!   run at start under sqlx's advisory lock, so nodes that start together do not race.
//! - Over a network, a connection can be lost after COMMIT was sent and before its
//!   answer: the batch is then reported as failed (retryable, nothing announced) though
//!   it may have committed. A resend with its nonce gets the stored message back, and
//!   members who missed it live find it in the history (`since`).
//! - User names are unique by `lower(name)`; they are ASCII (see
//!   [`crate::model::is_valid_username`]), so this folds case exactly as SQLite's NOCASE.

use super::group_commit::{Appends, BatchWriter};
use super::write_health::{Lent, WRITABLE_FRESH_FOR, WriteHealth, reason};
use super::{
    Accounts, Appended, Ban, MessageLog, NewMessage, OnCommit, ReplayFrom, Revocation,
    RevocationLog, RoomSnapshot, RoomSummary, Store, StoreError, UserRecord,
};
use crate::model::{Role, StoredMessage, UserRef};
use async_trait::async_trait;
use sqlx::postgres::{PgArguments, PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::{ConnectOptions, Connection, PgConnection, Postgres};
use std::collections::{BTreeMap, HashMap};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

pub struct PostgresStore {
    writer: Writer,
    appends: Appends,
}

/// Connections to the server per node: the group commit takes one, reads and account
/// writes share the rest. Many nodes share the server's `max_connections` (100 by default).
const MAX_CONNECTIONS: u32 = 8;

/// How long a query waits for a connection (all busy, or the server reconnecting).
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);

/// How long opening the store waits for the server to answer at start.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// How many times a batch that met the nonce index (another node stored one of its
/// nonces first) is written again before its senders are told to retry.
const NONCE_RACE_ATTEMPTS: usize = 3;

type MessageRow = (i64, String, String, String, Option<String>, i64);

/// A [`MessageRow`] with its room first, for queries across rooms.
type RoomMessageRow = (String, i64, String, String, String, Option<String>, i64);

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

/// A failed write, sorted: causes that pass by themselves (the server unreachable,
/// restarting, read-only or out of resources; a lost race) are
/// [`StoreError::Unwritable`], to retry; the rest are bugs.
fn write_error(error: sqlx::Error) -> StoreError {
    if is_passing(&error) {
        StoreError::Unwritable(reason(&error))
    } else {
        StoreError::WriteFailed(reason(&error))
    }
}

fn is_passing(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Database(db) => db.code().is_some_and(|code| is_passing_state(&code)),
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => true,
        _ => false,
    }
}

/// SQLSTATEs a retry can get past: connection exceptions (08), insufficient resources
/// such as a full disk (53), system I/O errors (58), the server shutting down, crashed
/// or starting (57P01–57P03), a statement cancelled by a timeout (57014), a
/// serialization failure or deadlock (40001, 40P01), a read-only server (25006: a
/// standby, as during a failover) and a lock not available (55P03).
fn is_passing_state(code: &str) -> bool {
    ["08", "53", "58"]
        .iter()
        .any(|class| code.starts_with(class))
        || matches!(
            code,
            "57P01" | "57P02" | "57P03" | "57014" | "40001" | "40P01" | "25006" | "55P03"
        )
}

fn is_unique_violation(error: &sqlx::Error) -> bool {
    error
        .as_database_error()
        .is_some_and(|db| db.is_unique_violation())
}

impl PostgresStore {
    /// Connects, migrates, and starts the group commit. Every error names the server
    /// and database, never the credentials of the URL.
    pub async fn open(url: &str) -> Result<Self, StoreError> {
        Self::open_with(url, WRITABLE_FRESH_FOR).await
    }

    /// [`PostgresStore::open`], with how long a write's outcome answers for readiness.
    async fn open_with(url: &str, writable_fresh_for: Duration) -> Result<Self, StoreError> {
        let database = super::describe_url(url);
        let failed = |reason: String| StoreError::Open {
            path: database.clone(),
            reason,
        };
        let options = PgConnectOptions::from_str(url).map_err(|e| failed(reason(&e)))?;
        // One connection of its own first: the pool retries a refused connection until
        // its timeout and then reports only that it timed out, where this says why.
        let mut first = tokio::time::timeout(CONNECT_TIMEOUT, options.connect())
            .await
            .map_err(|_| failed(format!("no answer within {} s", CONNECT_TIMEOUT.as_secs())))?
            .map_err(|e| failed(reason(&e)))?;
        // `run_direct`, not `run`: `run`'s `Acquire<'a>` bound keeps rustc from proving
        // this future `Send` for every lifetime, which Shuttle's runtime requires.
        sqlx::migrate!("./migrations/postgres")
            .run_direct(&mut first)
            .await
            .map_err(|e| failed(format!("migration failed: {e}")))?;
        // Closing politely is a courtesy: the migrations are committed either way.
        let _ = first.close().await;
        let pool = PgPoolOptions::new()
            .max_connections(MAX_CONNECTIONS)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect_lazy_with(options);
        let writer = Writer {
            pool,
            health: Arc::new(WriteHealth::new(writable_fresh_for)),
        };
        let appends = Appends::start(writer.clone());
        Ok(Self { writer, appends })
    }

    /// The pool, for reads.
    fn reader(&self) -> &PgPool {
        &self.writer.pool
    }

    /// Rows of (user id, Unix seconds): how revocations and bans are both kept.
    async fn user_moments(
        &self,
        query: &'static str,
    ) -> Result<impl Iterator<Item = (String, i64)>, sqlx::Error> {
        let rows: Vec<(String, i64)> = sqlx::query_as(query).fetch_all(self.reader()).await?;
        Ok(rows.into_iter())
    }
}

/// The pool as writes use it: each write borrows a connection as a [`Lent`], which tells
/// the write health how it went.
#[derive(Clone)]
struct Writer {
    pool: PgPool,
    health: Arc<WriteHealth>,
}

impl Writer {
    async fn lend(&self) -> Result<Lent<'_, Postgres>, StoreError> {
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
        query: sqlx::query::Query<'q, Postgres, PgArguments>,
    ) -> Result<(), StoreError> {
        let mut lent = self.lend().await?;
        let done = query.execute(&mut *lent).await.map(drop);
        lent.settle(done).map_err(write_error)
    }
}

#[async_trait]
impl Accounts for PostgresStore {
    async fn create_user(
        &self,
        id: &str,
        name: &str,
        password_hash: &str,
    ) -> Result<UserRecord, StoreError> {
        let mut lent = self.writer.lend().await?;
        let result = sqlx::query(
            "INSERT INTO users (id, name, password_hash, role, created_at) VALUES ($1, $2, $3, 'user', $4)",
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
            Err(e) if is_unique_violation(&e) => Err(StoreError::UsernameTaken),
            Err(e) => Err(write_error(e)),
        }
    }

    async fn find_user_by_name(&self, name: &str) -> Result<Option<UserRecord>, StoreError> {
        let row: Option<UserRow> = sqlx::query_as(
            "SELECT id, name, password_hash, role FROM users WHERE lower(name) = lower($1)",
        )
        .bind(name)
        .fetch_optional(self.reader())
        .await?;
        Ok(row.map(to_user))
    }

    async fn find_user_by_id(&self, id: &str) -> Result<Option<UserRecord>, StoreError> {
        let row: Option<UserRow> =
            sqlx::query_as("SELECT id, name, password_hash, role FROM users WHERE id = $1")
                .bind(id)
                .fetch_optional(self.reader())
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
        let deleted = sqlx::query("DELETE FROM disabled_users WHERE user_id = $1")
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

async fn disable_in(conn: &mut PgConnection, user_id: &str, at: i64) -> Result<(), sqlx::Error> {
    let mut tx = conn.begin().await?;
    sqlx::query(
        "INSERT INTO revocations (user_id, revoked_at) VALUES ($1, $2)
         ON CONFLICT (user_id) DO UPDATE SET revoked_at = GREATEST(revocations.revoked_at, excluded.revoked_at)",
    )
    .bind(user_id)
    .bind(at)
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "INSERT INTO disabled_users (user_id, disabled_at) VALUES ($1, $2)
         ON CONFLICT (user_id) DO NOTHING",
    )
    .bind(user_id)
    .bind(at)
    .execute(&mut *tx)
    .await?;
    tx.commit().await
}

#[async_trait]
impl MessageLog for PostgresStore {
    async fn append(
        &self,
        message: NewMessage,
        on_commit: OnCommit,
    ) -> Result<Appended, StoreError> {
        self.appends.append(message, on_commit).await
    }

    async fn snapshot(&self, room: &str, from: ReplayFrom) -> Result<RoomSnapshot, StoreError> {
        // One snapshot for the three queries: other nodes commit to this room meanwhile,
        // and the messages must all be at or before the last_seq read.
        let mut tx = self
            .reader()
            .begin_with("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            .await?;
        let last_seq: Option<(i64,)> = sqlx::query_as("SELECT last_seq FROM rooms WHERE name = $1")
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
             WHERE room = $1 AND seq > $2 AND seq <= $3 ORDER BY seq DESC LIMIT $4"
        ))
        .bind(room)
        .bind(after)
        .bind(last_seq)
        .bind(i64::from(limit))
        .fetch_all(&mut *tx)
        .await?;
        let (first_kept,): (Option<i64>,) =
            sqlx::query_as("SELECT MIN(seq) FROM messages WHERE room = $1")
                .bind(room)
                .fetch_one(&mut *tx)
                .await?;
        tx.commit().await?;
        rows.reverse();
        let oldest_wanted = after.saturating_add(1).max(first_kept.unwrap_or(1));
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
             WHERE room = $1 AND seq < $2 ORDER BY seq DESC LIMIT $3"
        ))
        .bind(room)
        .bind(to_db_seq(before))
        .bind(i64::from(limit))
        .fetch_all(self.reader())
        .await?;
        rows.reverse();
        Ok(rows.into_iter().map(|row| to_message(room, row)).collect())
    }

    async fn rooms(&self) -> Result<Vec<RoomSummary>, StoreError> {
        // In byte order (collation "C"), as SQLite lists them, whatever the server's locale.
        let rows: Vec<(String, i64)> = sqlx::query_as(
            "SELECT name, last_seq FROM rooms ORDER BY name COLLATE \"C\" LIMIT 10000",
        )
        .fetch_all(self.reader())
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
        let rows: Vec<(String, i64)> =
            sqlx::query_as("SELECT name, last_seq FROM rooms WHERE name = ANY($1)")
                .bind(rooms)
                .fetch_all(self.reader())
                .await?;
        Ok(rows
            .into_iter()
            .map(|(name, seq)| (name, u64::try_from(seq).unwrap_or(0)))
            .collect())
    }
}

#[async_trait]
impl RevocationLog for PostgresStore {
    async fn revoke(&self, user_id: &str, at: i64) -> Result<(), StoreError> {
        self.writer
            .execute(
                sqlx::query(
                    "INSERT INTO revocations (user_id, revoked_at) VALUES ($1, $2)
                     ON CONFLICT (user_id) DO UPDATE SET revoked_at = GREATEST(revocations.revoked_at, excluded.revoked_at)",
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
impl Store for PostgresStore {
    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(self.reader()).await?;
        Ok(())
    }

    async fn check_writable(&self) -> Result<(), StoreError> {
        // One tiny row rewritten in place: a real commit on a real write connection.
        let probe = self.writer.execute(
            sqlx::query(
                "INSERT INTO write_probe (id, at, probes) VALUES (1, $1, 1)
                 ON CONFLICT (id) DO UPDATE SET at = excluded.at, probes = write_probe.probes + 1",
            )
            .bind(crate::model::now_millis()),
        );
        self.writer.health.check(probe).await
    }
}

#[async_trait]
impl BatchWriter for Writer {
    async fn append_batch(&self, batch: &[NewMessage]) -> Result<Vec<Appended>, StoreError> {
        append_batch(self, batch).await
    }
}

/// Writes a batch in one transaction; a batch that lost a nonce race to another node is
/// written again, and then sees that node's message as the first.
async fn append_batch(writer: &Writer, batch: &[NewMessage]) -> Result<Vec<Appended>, StoreError> {
    let mut attempts = 0;
    loop {
        attempts += 1;
        let mut lent = writer.lend().await?;
        let written = write_batch(&mut lent, batch).await;
        let written =
            lent.settle_if_written(written, |appended| appended.iter().any(|a| !a.duplicate));
        match written {
            Err(error) if is_unique_violation(&error) => {
                if attempts < NONCE_RACE_ATTEMPTS {
                    continue;
                }
                return Err(StoreError::Unwritable(format!(
                    "another node kept storing the same nonces: {}",
                    reason(&error)
                )));
            }
            written => return written.map_err(write_error),
        }
    }
}

/// A room of a batch: its `last_seq` as locked, then as the batch leaves it.
struct RoomCount {
    created_at: i64,
    last_seq: i64,
    bumped: bool,
}

/// The key of an idempotent send: (room, user id, nonce).
type NonceKey = (String, String, String);

fn nonce_key(message: &NewMessage) -> Option<NonceKey> {
    let nonce = message.nonce.as_ref()?;
    Some((message.room.clone(), message.from.id.clone(), nonce.clone()))
}

/// Writes the batch in one transaction; answers each message in queue order with its
/// new seq, or with the first message stored under its nonce.
async fn write_batch(
    conn: &mut PgConnection,
    batch: &[NewMessage],
) -> Result<Vec<Appended>, sqlx::Error> {
    let mut tx = conn.begin().await?;
    let mut rooms: BTreeMap<&str, RoomCount> = BTreeMap::new();
    for message in batch {
        rooms.entry(&message.room).or_insert(RoomCount {
            created_at: message.ts / 1000,
            last_seq: 0,
            bumped: false,
        });
    }
    // Lock each room's row (making it if new), in name order: two nodes' batches take
    // their common rooms in the same order, so one waits for the other, never both.
    for (name, room) in &mut rooms {
        let (last_seq,): (i64,) = sqlx::query_as(
            "INSERT INTO rooms (name, last_seq, created_at) VALUES ($1, 0, $2)
             ON CONFLICT (name) DO UPDATE SET last_seq = rooms.last_seq
             RETURNING last_seq",
        )
        .bind(*name)
        .bind(room.created_at)
        .fetch_one(&mut *tx)
        .await?;
        room.last_seq = last_seq;
    }
    // With the rooms locked, every earlier message of theirs is committed and, in READ
    // COMMITTED, visible to this next statement: whichever node stored a nonce first.
    let mut stored = stored_nonces(&mut tx, batch).await?;
    let mut results = Vec::with_capacity(batch.len());
    for message in batch {
        let key = nonce_key(message);
        if let Some(first) = key.as_ref().and_then(|key| stored.get(key)) {
            results.push(Appended {
                message: first.clone(),
                duplicate: true,
            });
            continue;
        }
        let Some(room) = rooms.get_mut(message.room.as_str()) else {
            // Cannot happen: every room of the batch was locked above.
            return Err(sqlx::Error::Configuration(
                "a message of the batch has no locked room".into(),
            ));
        };
        room.last_seq += 1;
        room.bumped = true;
        let appended = StoredMessage {
            room: message.room.clone(),
            seq: u64::try_from(room.last_seq).unwrap_or(0),
            from: message.from.clone(),
            body: message.body.clone(),
            ts: message.ts,
            nonce: message.nonce.clone(),
        };
        if let Some(key) = key {
            // A resend later in this same batch is a duplicate of this one.
            stored.insert(key, appended.clone());
        }
        results.push(Appended {
            message: appended,
            duplicate: false,
        });
    }
    insert_messages(
        &mut tx,
        results.iter().filter(|a| !a.duplicate).map(|a| &a.message),
    )
    .await?;
    let (names, last_seqs): (Vec<&str>, Vec<i64>) = rooms
        .iter()
        .filter(|(_, room)| room.bumped)
        .map(|(name, room)| (*name, room.last_seq))
        .unzip();
    if !names.is_empty() {
        sqlx::query(
            "UPDATE rooms SET last_seq = bumped.last_seq
             FROM UNNEST($1::text[], $2::bigint[]) AS bumped (name, last_seq)
             WHERE rooms.name = bumped.name",
        )
        .bind(names)
        .bind(last_seqs)
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    Ok(results)
}

/// The messages already stored under the nonces of this batch, by key.
async fn stored_nonces(
    tx: &mut PgConnection,
    batch: &[NewMessage],
) -> Result<HashMap<NonceKey, StoredMessage>, sqlx::Error> {
    let mut rooms = Vec::new();
    let mut users = Vec::new();
    let mut nonces = Vec::new();
    for (room, user, nonce) in batch.iter().filter_map(nonce_key) {
        rooms.push(room);
        users.push(user);
        nonces.push(nonce);
    }
    if nonces.is_empty() {
        return Ok(HashMap::new());
    }
    let rows: Vec<RoomMessageRow> = sqlx::query_as(
        "SELECT m.room, m.seq, m.user_id, m.user_name, m.body, m.nonce, m.ts
         FROM messages m
         JOIN UNNEST($1::text[], $2::text[], $3::text[]) AS sent (room, user_id, nonce)
           ON m.room = sent.room AND m.user_id = sent.user_id AND m.nonce = sent.nonce
         WHERE m.nonce IS NOT NULL",
    )
    .bind(rooms)
    .bind(users)
    .bind(nonces)
    .fetch_all(&mut *tx)
    .await?;
    Ok(rows
        .into_iter()
        .filter_map(|(room, seq, user_id, user_name, body, nonce, ts)| {
            let key = (room.clone(), user_id.clone(), nonce.clone()?);
            let message = to_message(&room, (seq, user_id, user_name, body, nonce, ts));
            Some((key, message))
        })
        .collect())
}

/// Inserts the batch's new messages in one statement (one round trip for all of them).
async fn insert_messages<'m>(
    tx: &mut PgConnection,
    messages: impl Iterator<Item = &'m StoredMessage>,
) -> Result<(), sqlx::Error> {
    let mut rooms = Vec::new();
    let mut seqs = Vec::new();
    let mut user_ids = Vec::new();
    let mut user_names = Vec::new();
    let mut bodies = Vec::new();
    let mut nonces = Vec::new();
    let mut stamps = Vec::new();
    for message in messages {
        rooms.push(message.room.as_str());
        seqs.push(to_db_seq(message.seq));
        user_ids.push(message.from.id.as_str());
        user_names.push(message.from.name.as_str());
        bodies.push(message.body.as_str());
        nonces.push(message.nonce.as_deref());
        stamps.push(message.ts);
    }
    if rooms.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "INSERT INTO messages (room, seq, user_id, user_name, body, nonce, ts)
         SELECT * FROM UNNEST($1::text[], $2::bigint[], $3::text[], $4::text[], $5::text[], $6::text[], $7::bigint[])",
    )
    .bind(rooms)
    .bind(seqs)
    .bind(user_ids)
    .bind(user_names)
    .bind(bodies)
    .bind(nonces)
    .bind(stamps)
    .execute(&mut *tx)
    .await
    .map(drop)
}

// Shared with the API tests, which cannot see this crate's test code; see there.
#[cfg(test)]
#[path = "../../tests/support/test_database.rs"]
mod test_database;

#[cfg(test)]
mod tests {
    use super::super::contract_tests::{
        CommitCount, Heard, Internals, draft, no_hook, recorder, seqs, store_contract,
    };
    use super::*;
    use crate::store::group_commit::{self, AppendRequest};
    use tokio::sync::mpsc;

    use test_database::TestDatabase;

    impl TestDatabase {
        /// A connection of the test's own, to look behind the store's back.
        async fn connect(&self) -> PgConnection {
            PgConnection::connect(&self.url).await.unwrap()
        }
    }

    /// A fresh database and a store on it; `None`: skip the test.
    async fn store() -> Option<(TestDatabase, PostgresStore)> {
        let db = TestDatabase::create().await?;
        let store = PostgresStore::open(&db.url).await.unwrap();
        Some((db, store))
    }

    /// Like [`store`], with write outcomes that stay fresh for readiness for the whole
    /// test, however slow the machine.
    async fn patient() -> Option<(TestDatabase, PostgresStore)> {
        let db = TestDatabase::create().await?;
        let store = PostgresStore::open_with(&db.url, Duration::from_secs(3600))
            .await
            .unwrap();
        Some((db, store))
    }

    store_contract!(store, patient);

    /// Counts transactions by the rows they wrote: each row keeps the id of the
    /// transaction that inserted it.
    struct TransactionsThatWrote<'s> {
        store: &'s PostgresStore,
        before: u64,
    }

    impl TransactionsThatWrote<'_> {
        async fn count(store: &PostgresStore) -> u64 {
            let (count,): (i64,) =
                sqlx::query_as("SELECT COUNT(DISTINCT xmin::text) FROM messages")
                    .fetch_one(store.reader())
                    .await
                    .unwrap();
            count.try_into().unwrap()
        }
    }

    #[async_trait]
    impl CommitCount for TransactionsThatWrote<'_> {
        async fn so_far(&self) -> u64 {
            Self::count(self.store).await - self.before
        }
    }

    #[async_trait]
    impl Internals for PostgresStore {
        async fn group_commit(&self, queue: mpsc::Receiver<AppendRequest>) {
            group_commit::run(self.writer.clone(), queue).await;
        }

        async fn count_commits(&self) -> Box<dyn CommitCount + '_> {
            let before = TransactionsThatWrote::count(self).await;
            Box::new(TransactionsThatWrote {
                store: self,
                before,
            })
        }

        /// The server refuses inserts as it would with a full disk (53100).
        async fn refuse_writes(&self) {
            for statement in [
                "CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS $$
                 BEGIN RAISE EXCEPTION 'could not extend file: No space left on device'
                     USING ERRCODE = 'disk_full'; END $$",
                "CREATE TRIGGER full_disk BEFORE INSERT ON messages
                 FOR EACH STATEMENT EXECUTE FUNCTION refuse()",
            ] {
                sqlx::query(statement).execute(self.reader()).await.unwrap();
            }
        }

        async fn allow_writes(&self) {
            sqlx::query("DROP TRIGGER full_disk ON messages")
                .execute(self.reader())
                .await
                .unwrap();
        }

        async fn abandon_a_write(&self) {
            drop(self.writer.lend().await.unwrap());
        }

        fn write_health(&self) -> &WriteHealth {
            &self.writer.health
        }

        async fn probes_so_far(&self) -> i64 {
            let row: Option<(i64,)> = sqlx::query_as("SELECT probes FROM write_probe")
                .fetch_optional(self.reader())
                .await
                .unwrap();
            row.map_or(0, |(n,)| n)
        }
    }

    /// Sends `count` messages through `store` at once, each with its own hook-recorder
    /// entry: (what each append answered, what the store's hooks heard, in order).
    async fn send_many(
        store: &Arc<PostgresStore>,
        messages: Vec<NewMessage>,
    ) -> (Vec<Appended>, Vec<u64>) {
        let heard = Heard::default();
        let tasks: Vec<_> = messages
            .into_iter()
            .map(|message| {
                let store = Arc::clone(store);
                let hook = recorder(&heard);
                tokio::spawn(async move { store.append(message, hook).await.unwrap() })
            })
            .collect();
        let mut appended = Vec::new();
        for task in tasks {
            appended.push(task.await.unwrap());
        }
        let heard = heard.lock().unwrap().iter().map(|(_, seq)| *seq).collect();
        (appended, heard)
    }

    /// Two stores on one fresh database, as two nodes of a cluster; `None`: skip the test.
    async fn two_nodes() -> Option<(TestDatabase, Arc<PostgresStore>, Arc<PostgresStore>)> {
        let (db, one) = store().await?;
        let two = PostgresStore::open(&db.url).await.unwrap();
        Some((db, Arc::new(one), Arc::new(two)))
    }

    /// The room holds `seq`s 1 to `last`, each once, and nothing else.
    async fn assert_stores_one_to(store: &PostgresStore, room: &str, last: u64) {
        let stored = store.snapshot(room, ReplayFrom::Latest(500)).await.unwrap();
        assert_eq!(stored.last_seq, last, "room {room}");
        assert_eq!(seqs(&stored.messages), (1..=last).collect::<Vec<_>>());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn two_nodes_appending_to_one_room_get_contiguous_seqs() {
        let Some((_db, one, two)) = two_nodes().await else {
            return;
        };
        let batch = |node: &str| {
            (0..150)
                .map(|i| draft("shared", &format!("{node}{i}"), None))
                .collect::<Vec<_>>()
        };
        let ((sent_one, heard_one), (sent_two, heard_two)) =
            tokio::join!(send_many(&one, batch("one")), send_many(&two, batch("two")));

        let mut seqs: Vec<u64> = sent_one
            .iter()
            .chain(&sent_two)
            .map(|a| a.message.seq)
            .collect();
        seqs.sort_unstable();
        assert_eq!(
            seqs,
            (1..=300).collect::<Vec<_>>(),
            "one seq each, no gap, no seq twice"
        );
        for (node, sent, heard) in [("one", &sent_one, heard_one), ("two", &sent_two, heard_two)] {
            let mut own: Vec<u64> = sent.iter().map(|a| a.message.seq).collect();
            own.sort_unstable();
            assert_eq!(
                heard, own,
                "node {node}'s hooks hear its own messages, once, in seq order"
            );
        }
        assert_stores_one_to(&one, "shared", 300).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn two_nodes_given_the_same_nonces_store_each_once() {
        let Some((_db, one, two)) = two_nodes().await else {
            return;
        };
        // A client that resends every message to the other node before hearing back,
        // in two rooms at once (the nodes lock both rooms, never in opposite orders).
        let sends = || {
            (0..100)
                .map(|i| {
                    let room = if i % 2 == 0 { "even" } else { "odd" };
                    draft(room, &i.to_string(), Some(&format!("n{i}")))
                })
                .collect::<Vec<_>>()
        };
        let ((sent_one, _), (sent_two, _)) =
            tokio::join!(send_many(&one, sends()), send_many(&two, sends()));

        for (a, b) in sent_one.iter().zip(&sent_two) {
            assert_eq!(a.message, b.message, "both answers name the same message");
            assert!(
                a.duplicate != b.duplicate,
                "exactly one node stored {:?}",
                a.message.nonce
            );
        }
        for room in ["even", "odd"] {
            assert_stores_one_to(&one, room, 50).await;
        }
    }

    /// A fresh store whose room "a" holds one message (seq 1); `None`: skip the test.
    async fn store_with_a_message() -> Option<(TestDatabase, PostgresStore)> {
        let (db, store) = store().await?;
        store
            .append(draft("a", "1", None), no_hook())
            .await
            .unwrap();
        Some((db, store))
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_nonce_committed_while_a_batch_waits_on_it_is_answered_as_a_duplicate() {
        let Some((db, store)) = store_with_a_message().await else {
            return;
        };
        // Another writer holds an uncommitted row with the nonce the batch will send,
        // and without the room's lock: only the unique index stands between them.
        let mut other = db.connect().await;
        sqlx::query("BEGIN").execute(&mut other).await.unwrap();
        sqlx::query(
            "INSERT INTO messages (room, seq, user_id, user_name, body, nonce, ts)
             VALUES ('a', 100, 'u1', 'alice', 'from elsewhere', 'n1', 0)",
        )
        .execute(&mut other)
        .await
        .unwrap();
        let heard = Heard::default();
        let store = Arc::new(store);
        let task = {
            let store = Arc::clone(&store);
            let hook = recorder(&heard);
            tokio::spawn(async move { store.append(draft("a", "mine", Some("n1")), hook).await })
        };
        // Wait until the batch's insert is blocked on that row, then commit it.
        let mut watcher = db.connect().await;
        for _ in 0..100 {
            let (waiting,): (i64,) = sqlx::query_as(
                "SELECT COUNT(*) FROM pg_stat_activity
                 WHERE datname = current_database() AND wait_event_type = 'Lock'",
            )
            .fetch_one(&mut watcher)
            .await
            .unwrap();
            if waiting > 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        sqlx::query("COMMIT").execute(&mut other).await.unwrap();

        let appended = task.await.unwrap().unwrap();
        assert!(appended.duplicate, "{appended:?}");
        assert_eq!(
            (appended.message.seq, appended.message.body.as_str()),
            (100, "from elsewhere")
        );
        assert!(heard.lock().unwrap().is_empty(), "nothing new to announce");
        let after = store
            .append(draft("a", "2", None), no_hook())
            .await
            .unwrap();
        assert_eq!(after.message.seq, 2, "the retried batch left no gap");
    }

    #[tokio::test]
    async fn a_store_whose_connections_were_cut_writes_again_without_a_restart() {
        let Some((db, store)) = store_with_a_message().await else {
            return;
        };
        // What a server restart or a dropped network does to the pool's connections.
        let (cut,): (i64,) = sqlx::query_as(
            "SELECT COUNT(pg_terminate_backend(pid)) FROM pg_stat_activity
             WHERE datname = current_database() AND pid <> pg_backend_pid()",
        )
        .fetch_one(&mut db.connect().await)
        .await
        .unwrap();
        assert!(cut >= 1, "the store had a connection open");
        let mut outcomes = Vec::new();
        for i in 2..=4 {
            outcomes.push(
                store
                    .append(
                        draft("a", &i.to_string(), Some(&format!("n{i}"))),
                        no_hook(),
                    )
                    .await,
            );
        }
        let seqs: Vec<u64> = outcomes
            .into_iter()
            .filter_map(|outcome| match outcome {
                Ok(appended) => Some(appended.message.seq),
                Err(error) => {
                    assert!(error.is_unavailable(), "{error}");
                    None
                }
            })
            .collect();
        assert!(seqs.len() >= 2, "writes resume at once: {seqs:?}");
        assert_eq!(
            seqs,
            (2..2 + seqs.len() as u64).collect::<Vec<_>>(),
            "a refused write left no gap"
        );
        store.check_writable().await.unwrap();
    }

    #[tokio::test]
    async fn a_second_start_on_a_migrated_database_keeps_its_data() {
        let Some((db, store)) = store().await else {
            return;
        };
        store.create_user("1", "alice", "h").await.unwrap();
        store
            .append(draft("a", "1", None), no_hook())
            .await
            .unwrap();
        drop(store);
        let again = PostgresStore::open(&db.url).await.unwrap();
        assert!(again.find_user_by_name("alice").await.unwrap().is_some());
        let appended = again
            .append(draft("a", "2", None), no_hook())
            .await
            .unwrap();
        assert_eq!(appended.message.seq, 2);
    }

    #[tokio::test]
    async fn a_server_that_cannot_be_reached_is_named_without_the_password() {
        // Port 1 on loopback: refused at once, no service needed.
        let refused = PostgresStore::open("postgres://palisade:hunter2@127.0.0.1:1/chat")
            .await
            .err()
            .expect("nothing listens on port 1");
        let said = refused.to_string();
        assert!(said.contains("postgres://127.0.0.1:1/chat"), "{said}");
        assert!(!said.contains("hunter2"), "{said}");
        assert!(!said.contains("palisade:"), "{said}");
    }
}
