//! The embedded store: one SQLite file in WAL mode.
//!
//! Writes go through a single connection, so appends are serialised by the database
//! itself and never meet `SQLITE_BUSY`; reads use a small pool of their own and see a
//! consistent snapshot thanks to WAL. `synchronous = FULL`: a commit is on disk before
//! `append` returns, so an acked message survives a crash of the process or the machine.
//!
//! Appends are group-committed: one task takes every append waiting (up to 256) and
//! writes them in one transaction, so concurrent senders share one fsync instead of
//! queueing for one each. Each caller still gets its own answer after the commit.

use super::{Appended, NewMessage, ReplayFrom, RoomSnapshot, Store, StoreError, UserRecord};
use crate::model::{Role, StoredMessage, UserRef};
use async_trait::async_trait;
use sqlx::SqliteConnection;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use std::str::FromStr;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

pub struct SqliteStore {
    writer: SqlitePool,
    reader: SqlitePool,
    appends: mpsc::Sender<AppendRequest>,
}

struct AppendRequest {
    message: NewMessage,
    reply: oneshot::Sender<Result<Appended, StoreError>>,
}

/// Most appends committed in one transaction.
const MAX_BATCH: usize = 256;

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

impl SqliteStore {
    /// Opens (creating file and folder if needed) and migrates the database.
    pub async fn open(url: &str) -> Result<Self, StoreError> {
        let options = SqliteConnectOptions::from_str(url)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(Duration::from_secs(5))
            .foreign_keys(true);
        if let Some(parent) = options.get_filename().parent() {
            if !parent.as_os_str().is_empty() {
                std::fs::create_dir_all(parent)?;
            }
        }
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(options.clone())
            .await?;
        sqlx::migrate!("./migrations/sqlite").run(&writer).await?;
        let reader = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options.read_only(true))
            .await?;
        let (appends, requests) = mpsc::channel(4 * MAX_BATCH);
        tokio::spawn(group_commit(writer.clone(), requests));
        Ok(Self {
            writer,
            reader,
            appends,
        })
    }
}

#[async_trait]
impl Store for SqliteStore {
    async fn create_user(
        &self,
        id: &str,
        name: &str,
        password_hash: &str,
    ) -> Result<UserRecord, StoreError> {
        let result = sqlx::query(
            "INSERT INTO users (id, name, password_hash, role, created_at) VALUES (?1, ?2, ?3, 'user', ?4)",
        )
        .bind(id)
        .bind(name)
        .bind(password_hash)
        .bind(crate::model::now_secs())
        .execute(&self.writer)
        .await;
        match result {
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
            Err(e) => Err(e.into()),
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

    async fn append(&self, message: NewMessage) -> Result<Appended, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.appends
            .send(AppendRequest { message, reply })
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

    async fn rooms(&self) -> Result<Vec<(String, u64)>, StoreError> {
        let rows: Vec<(String, i64)> =
            sqlx::query_as("SELECT name, last_seq FROM rooms ORDER BY name LIMIT 10000")
                .fetch_all(&self.reader)
                .await?;
        Ok(rows
            .into_iter()
            .map(|(name, seq)| (name, u64::try_from(seq).unwrap_or(0)))
            .collect())
    }

    async fn revoke(&self, user_id: &str, at: i64) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO revocations (user_id, revoked_at) VALUES (?1, ?2)
             ON CONFLICT (user_id) DO UPDATE SET revoked_at = MAX(revoked_at, excluded.revoked_at)",
        )
        .bind(user_id)
        .bind(at)
        .execute(&self.writer)
        .await?;
        Ok(())
    }

    async fn revocations(&self) -> Result<Vec<(String, i64)>, StoreError> {
        Ok(
            sqlx::query_as("SELECT user_id, revoked_at FROM revocations")
                .fetch_all(&self.reader)
                .await?,
        )
    }

    async fn disable(&self, user_id: &str, at: i64) -> Result<(), StoreError> {
        self.revoke(user_id, at).await?;
        sqlx::query(
            "INSERT INTO disabled_users (user_id, disabled_at) VALUES (?1, ?2)
             ON CONFLICT (user_id) DO NOTHING",
        )
        .bind(user_id)
        .bind(at)
        .execute(&self.writer)
        .await?;
        Ok(())
    }

    async fn enable(&self, user_id: &str) -> Result<bool, StoreError> {
        let deleted = sqlx::query("DELETE FROM disabled_users WHERE user_id = ?1")
            .bind(user_id)
            .execute(&self.writer)
            .await?;
        Ok(deleted.rows_affected() > 0)
    }

    async fn disabled_users(&self) -> Result<Vec<(String, i64)>, StoreError> {
        Ok(
            sqlx::query_as("SELECT user_id, disabled_at FROM disabled_users")
                .fetch_all(&self.reader)
                .await?,
        )
    }

    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.reader).await?;
        Ok(())
    }
}

/// Writes one message inside the batch's transaction: its seq, or the earlier message
/// with the same nonce (earlier in this batch too: the transaction sees its own writes).
async fn append_in(
    tx: &mut SqliteConnection,
    message: &NewMessage,
) -> Result<Appended, StoreError> {
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
async fn group_commit(pool: SqlitePool, mut requests: mpsc::Receiver<AppendRequest>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while let Some(first) = requests.recv().await {
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match requests.try_recv() {
                Ok(request) => batch.push(request),
                Err(_) => break,
            }
        }
        match append_batch(&pool, &batch).await {
            Ok(results) => {
                for (request, result) in batch.drain(..).zip(results) {
                    let _ = request.reply.send(Ok(result));
                }
            }
            Err(error) => {
                // Nothing of the batch was committed: every sender gets an error to retry.
                let detail = error.to_string();
                for request in batch.drain(..) {
                    let _ = request
                        .reply
                        .send(Err(StoreError::BatchFailed(detail.clone())));
                }
            }
        }
    }
}

async fn append_batch(
    pool: &SqlitePool,
    batch: &[AppendRequest],
) -> Result<Vec<Appended>, StoreError> {
    let mut tx = pool.begin().await?;
    let mut results = Vec::with_capacity(batch.len());
    for request in batch {
        results.push(append_in(&mut tx, &request.message).await?);
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
        let a1 = store.append(draft("a", "1", None)).await.unwrap();
        let a2 = store.append(draft("a", "2", None)).await.unwrap();
        let b1 = store.append(draft("b", "1", None)).await.unwrap();
        assert_eq!((a1.message.seq, a2.message.seq, b1.message.seq), (1, 2, 1));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_appends_are_batched_without_gaps_or_double_nonces() {
        let (_dir, store) = store().await;
        let store = std::sync::Arc::new(store);
        let mut tasks = Vec::new();
        for i in 0..200 {
            let store = std::sync::Arc::clone(&store);
            tasks.push(tokio::spawn(async move {
                // Every room gets 20 messages; "dup" nonces repeat within each room.
                let room = format!("r{}", i % 10);
                let nonce = (i % 20 == 0).then_some("dup");
                store
                    .append(draft(&room, &i.to_string(), nonce))
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
        }
        // Every i % 20 == 0 lands in room r0: ten sends with one nonce, one stored.
        let firsts = appended
            .iter()
            .filter(|a| a.message.nonce.as_deref() == Some("dup"));
        assert_eq!(firsts.clone().filter(|a| !a.duplicate).count(), 1);
        assert_eq!(firsts.count(), 10);
    }

    #[tokio::test]
    async fn a_repeated_nonce_returns_the_first_message() {
        let (_dir, store) = store().await;
        let first = store.append(draft("a", "hi", Some("n1"))).await.unwrap();
        let again = store
            .append(draft("a", "hi again", Some("n1")))
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
                .append(draft("a", &i.to_string(), None))
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
            .fetch_one(&store.writer)
            .await
            .unwrap();
        let (journal,): (String,) = sqlx::query_as("PRAGMA journal_mode")
            .fetch_one(&store.writer)
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
        all.sort();
        assert_eq!(all, [("u1".to_owned(), 100), ("u2".to_owned(), 7)]);
    }

    #[tokio::test]
    async fn a_ban_is_kept_until_lifted_and_leaves_its_revocation_behind() {
        let (_dir, store) = store().await;
        store.disable("u1", 100).await.unwrap();
        store.disable("u1", 200).await.unwrap();
        assert_eq!(
            store.disabled_users().await.unwrap(),
            [("u1".to_owned(), 100)]
        );
        assert_eq!(store.revocations().await.unwrap(), [("u1".to_owned(), 200)]);
        assert!(store.enable("u1").await.unwrap());
        assert!(!store.enable("u1").await.unwrap());
        assert!(store.disabled_users().await.unwrap().is_empty());
        assert_eq!(store.revocations().await.unwrap(), [("u1".to_owned(), 200)]);
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
