//! Durable state: accounts and message history.
//!
//! The [`Store`] trait is the seam between the chat logic and the database. The
//! embedded default is SQLite ([`sqlite::SqliteStore`]); a PostgreSQL store for cluster
//! mode implements the same trait. The store assigns each room's `seq` atomically with
//! the insert, and a call that returns `Ok` has committed.

pub mod sqlite;

use crate::model::{Role, StoredMessage, UserRef};
use async_trait::async_trait;
use std::sync::Arc;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("username already taken")]
    UsernameTaken,
    #[error("unsupported database URL (expected sqlite://…)")]
    UnsupportedUrl,
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("cannot create the database folder: {0}")]
    Io(#[from] std::io::Error),
    #[error("the store is shut down")]
    Closed,
    #[error("the batch this write was part of failed: {0}")]
    BatchFailed(String),
}

/// An account row, with its password hash (never leaves the server).
#[derive(Clone, Debug)]
pub struct UserRecord {
    pub user: UserRef,
    pub password_hash: String,
    pub role: Role,
}

/// A message to store; the store gives it its `seq`.
#[derive(Clone, Debug)]
pub struct NewMessage {
    pub room: String,
    pub from: UserRef,
    pub body: String,
    pub nonce: Option<String>,
    pub ts: i64,
}

/// The outcome of [`Store::append`].
#[derive(Clone, Debug)]
pub struct Appended {
    /// The stored message: for a duplicate nonce, the first one.
    pub message: StoredMessage,
    pub duplicate: bool,
}

/// Which messages a join replays.
#[derive(Clone, Copy, Debug)]
pub enum ReplayFrom {
    /// The newest `n` messages.
    Latest(u32),
    /// Every message after this `seq`, at most `max` (the newest ones if more).
    Since { seq: u64, max: u32 },
}

/// A consistent view of a room for a join: `messages` all have `seq <= last_seq`, and
/// every message after `last_seq` was committed after this view was taken.
#[derive(Clone, Debug, Default)]
pub struct RoomSnapshot {
    pub last_seq: u64,
    pub messages: Vec<StoredMessage>,
    /// True when `messages` reach back as far as asked (to the first message, or to `since`).
    pub complete: bool,
}

#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Creates an account; [`StoreError::UsernameTaken`] if the name exists in any case.
    async fn create_user(
        &self,
        id: &str,
        name: &str,
        password_hash: &str,
    ) -> Result<UserRecord, StoreError>;

    /// Finds an account by name, ignoring case.
    async fn find_user_by_name(&self, name: &str) -> Result<Option<UserRecord>, StoreError>;

    /// Finds an account by id (a palisade token's `sub`).
    async fn find_user_by_id(&self, id: &str) -> Result<Option<UserRecord>, StoreError>;

    /// Stores a message with the room's next `seq`, or returns the earlier message when
    /// the same user already sent this nonce in this room. Returns after commit.
    async fn append(&self, message: NewMessage) -> Result<Appended, StoreError>;

    /// The room's last `seq` and the messages a join asked for, read in one snapshot.
    async fn snapshot(&self, room: &str, from: ReplayFrom) -> Result<RoomSnapshot, StoreError>;

    /// Up to `limit` messages with `seq < before`, oldest first.
    async fn before(
        &self,
        room: &str,
        before: u64,
        limit: u32,
    ) -> Result<Vec<StoredMessage>, StoreError>;

    /// Every room with at least one message, with its last `seq`.
    async fn rooms(&self) -> Result<Vec<(String, u64)>, StoreError>;

    /// Records that the user's tokens issued at or before `at` (Unix seconds) are void.
    async fn revoke(&self, user_id: &str, at: i64) -> Result<(), StoreError>;

    /// Every recorded revocation: (user id, revoked at).
    async fn revocations(&self) -> Result<Vec<(String, i64)>, StoreError>;

    /// Bans the user from `at` on and revokes their tokens issued up to then. The
    /// revocation is written first, so a failure half way leaves the tokens void.
    async fn disable(&self, user_id: &str, at: i64) -> Result<(), StoreError>;

    /// Lifts a ban; whether there was one. Revocations stay.
    async fn enable(&self, user_id: &str) -> Result<bool, StoreError>;

    /// Every disabled user: (user id, disabled at).
    async fn disabled_users(&self) -> Result<Vec<(String, i64)>, StoreError>;

    /// Answers when the database does (for `/readyz`).
    async fn ping(&self) -> Result<(), StoreError>;
}

/// Opens the store named by a database URL.
pub async fn connect(url: &str) -> Result<Arc<dyn Store>, StoreError> {
    if url.starts_with("sqlite:") {
        Ok(Arc::new(sqlite::SqliteStore::open(url).await?))
    } else {
        Err(StoreError::UnsupportedUrl)
    }
}
