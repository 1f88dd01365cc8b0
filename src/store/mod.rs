//! Durable state: accounts and message history.
//!
//! The [`Store`] trait is the seam between the chat logic and the database, in three
//! parts that need not live together: [`Accounts`] (and bans), the [`MessageLog`] of
//! every room, and the [`RevocationLog`]. Each user of the store asks for the part it
//! needs (the broker holds only a `MessageLog`), so a store for cluster mode can put
//! them where each fits. The embedded default is SQLite ([`sqlite::SqliteStore`]); for
//! cluster mode, [`postgres::PostgresStore`] implements the same traits on a database
//! every node shares. The store assigns each room's `seq` atomically with the insert,
//! and a call that returns `Ok` has committed.
//!
//! The store is also where a room's order is decided, so it is the one to announce it:
//! [`MessageLog::append`] takes an [`OnCommit`] hook that it calls with the stored message
//! right after the commit, in commit order (for one room, `seq` order), before it
//! answers. Whoever fans messages out (the hub of this node, or the Redis broker of
//! cluster mode) hangs off that hook, so nothing needs a lock per room to put messages
//! back in order, and a caller that stops waiting (its client went away) cannot lose a
//! delivery.
//!
//! A write that fails is reported as [`StoreError::Unwritable`]: the caller says so to
//! its client, who may retry; a disk that was full or read-only serves writes again
//! without a restart once the cause is gone.

#[cfg(test)]
mod contract_tests;
mod group_commit;
pub mod postgres;
pub mod sqlite;
mod write_health;

use crate::model::{Role, StoredMessage, UserRef};
use async_trait::async_trait;
use std::sync::Arc;

/// How long a client told `unavailable` should wait before retrying a write.
pub const RETRY_AFTER: std::time::Duration = std::time::Duration::from_secs(1);

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("username already taken")]
    UsernameTaken,
    #[error(
        "unsupported database URL scheme {0:?} in --database-url / PALISADE_DATABASE_URL (expected sqlite://path or postgres://user@host/database)"
    )]
    UnsupportedUrl(String),
    /// The database could not be opened or prepared at start; names the file (or the
    /// server and database, never the credentials).
    #[error("cannot open the database {path}: {reason}")]
    Open { path: String, reason: String },
    /// The file opens but fails SQLite's own consistency check.
    #[error("the database {path} is damaged ({detail}): restore it from a backup or move it away")]
    Corrupt { path: String, detail: String },
    /// A read failed.
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    /// A write failed for a cause that passes (full or read-only disk, I/O error, busy
    /// or reopening database). It was not acknowledged to anyone; a client may retry
    /// (with its nonce, a send cannot be stored twice).
    #[error("cannot write to the database: {0}")]
    Unwritable(String),
    /// A write failed for a cause a retry does not fix (a bug, a broken schema).
    #[error("a write failed: {0}")]
    WriteFailed(String),
    #[error("the store is shut down")]
    Closed,
}

impl StoreError {
    /// Whether the caller should tell its client to retry later (`unavailable`) rather
    /// than report an internal error: the store cannot write right now, or is stopping.
    pub fn is_unavailable(&self) -> bool {
        matches!(self, StoreError::Unwritable(_) | StoreError::Closed)
    }
}

/// An account row, with its password hash (never leaves the server).
#[derive(Clone, Debug)]
pub struct UserRecord {
    pub user: UserRef,
    pub password_hash: String,
    pub role: Role,
}

/// A room that has messages, as `/api/rooms` lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RoomSummary {
    pub name: String,
    pub last_seq: u64,
}

/// The user's tokens issued at or before `at` (Unix seconds) are void.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Revocation {
    pub user_id: String,
    pub at: i64,
}

/// The user may not sign in or connect since `at` (Unix seconds), until the ban is lifted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ban {
    pub user_id: String,
    pub at: i64,
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

/// What [`MessageLog::append`] calls with the message once it is committed; see there.
/// It runs on the store's writing path, so it must be quick and must not block.
pub type OnCommit = Box<dyn FnOnce(&StoredMessage) + Send>;

/// The outcome of [`MessageLog::append`].
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

impl RoomSnapshot {
    /// Keeps only the newest messages within the bytes `allowed` grants for what they
    /// take in full (see [`keep_newest_affordable`]); a cut makes the snapshot incomplete
    /// (the client pages back with `history`).
    pub fn keep_newest_affordable(&mut self, allowed: impl FnOnce(usize) -> usize) {
        if keep_newest_affordable(&mut self.messages, allowed) {
            self.complete = false;
        }
    }
}

/// Measures each message once (its bytes in a reply's JSON array, comma included), asks
/// `allowed` how many bytes the reply may take given what all of them would take, and
/// drops the oldest until the rest fit; true if any were dropped.
pub fn keep_newest_affordable(
    messages: &mut Vec<StoredMessage>,
    allowed: impl FnOnce(usize) -> usize,
) -> bool {
    let sizes: Vec<usize> = messages.iter().map(|m| encoded_len(m) + 1).collect();
    let max_bytes = allowed(sizes.iter().sum());
    let mut total = 0usize;
    let kept = sizes
        .iter()
        .rev()
        .take_while(|size| {
            total = total.saturating_add(**size);
            total <= max_bytes
        })
        .count();
    let dropped = messages.len() - kept;
    messages.drain(..dropped);
    dropped > 0
}

fn encoded_len(message: &StoredMessage) -> usize {
    struct Counter(usize);
    impl std::io::Write for Counter {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut counter = Counter(0);
    // Serialising a plain struct into a writer that never fails cannot fail.
    let _ = serde_json::to_writer(&mut counter, message);
    counter.0
}

/// Accounts and bans: who may sign in.
#[async_trait]
pub trait Accounts: Send + Sync {
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

    /// Bans the user from `at` on and revokes their tokens issued up to then. The
    /// revocation is written first, so a failure half way leaves the tokens void.
    async fn disable(&self, user_id: &str, at: i64) -> Result<(), StoreError>;

    /// Lifts a ban; whether there was one. Revocations stay.
    async fn enable(&self, user_id: &str) -> Result<bool, StoreError>;

    /// Every disabled user.
    async fn disabled_users(&self) -> Result<Vec<Ban>, StoreError>;
}

/// Every room's messages: the only part of the store the broker needs.
#[async_trait]
pub trait MessageLog: Send + Sync {
    /// Stores a message with the room's next `seq`, or returns the earlier message when
    /// the same user already sent this nonce in this room. Returns after commit.
    ///
    /// `on_commit` is called with the stored message once it is durable and before this
    /// returns, even if the caller has stopped waiting by then. Hooks are called one at a
    /// time in commit order, so those of one room see its `seq`s in increasing order, each
    /// once. It is not called for a repeated nonce (that message was announced when it was
    /// first stored) nor when the write fails: then nothing was stored.
    async fn append(
        &self,
        message: NewMessage,
        on_commit: OnCommit,
    ) -> Result<Appended, StoreError>;

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
    async fn rooms(&self) -> Result<Vec<RoomSummary>, StoreError>;

    /// The last `seq` of each of `rooms` that has a message (a room with none is left
    /// out), in one query, in no particular order: a cluster node's periodic check for
    /// messages it never heard of.
    async fn last_seqs(&self, rooms: &[String]) -> Result<Vec<(String, u64)>, StoreError>;
}

/// Revoked tokens, kept across restarts.
#[async_trait]
pub trait RevocationLog: Send + Sync {
    /// Records that the user's tokens issued at or before `at` (Unix seconds) are void.
    async fn revoke(&self, user_id: &str, at: i64) -> Result<(), StoreError>;

    /// Every recorded revocation.
    async fn revocations(&self) -> Result<Vec<Revocation>, StoreError>;
}

/// Everything palisade keeps durably, and the health of the database behind it.
#[async_trait]
pub trait Store: Accounts + MessageLog + RevocationLog + 'static {
    /// Answers when the database does (for `/readyz`).
    async fn ping(&self) -> Result<(), StoreError>;

    /// Whether a small write commits now (for `/readyz`): a full or read-only disk
    /// answers [`StoreError::Unwritable`]. Implementations answer from a recent write or
    /// probe when there is one, so a flood of readiness checks does not reach the disk.
    async fn check_writable(&self) -> Result<(), StoreError>;
}

/// Opens the store named by a database URL: `sqlite:` for the embedded store,
/// `postgres://` or `postgresql://` for the one cluster mode shares.
pub async fn connect(url: &str) -> Result<Arc<dyn Store>, StoreError> {
    if url.starts_with("sqlite:") {
        Ok(Arc::new(sqlite::SqliteStore::open(url).await?))
    } else if is_postgres(url) {
        Ok(Arc::new(postgres::PostgresStore::open(url).await?))
    } else {
        Err(StoreError::UnsupportedUrl(scheme_of(url)))
    }
}

fn is_postgres(url: &str) -> bool {
    url.starts_with("postgres://") || url.starts_with("postgresql://")
}

/// The database a URL names, fit for an error message: the file of an SQLite URL, the
/// server and database of a PostgreSQL one, only the scheme of any other. Never a user
/// name, password or query parameter (`?password=` is allowed there): those must not
/// reach a log.
pub fn describe_url(url: &str) -> String {
    if let Some(rest) = url.strip_prefix("sqlite:") {
        return rest
            .trim_start_matches("//")
            .split('?')
            .next()
            .unwrap_or_default()
            .to_owned();
    }
    let server = is_postgres(url)
        .then(|| url::Url::parse(url).ok())
        .flatten()
        .map(|parsed| {
            let host = parsed.host_str().unwrap_or_default();
            let port = parsed.port().map(|p| format!(":{p}")).unwrap_or_default();
            format!("{}://{host}{port}{}", parsed.scheme(), parsed.path())
        });
    server.unwrap_or_else(|| format!("{}://…", scheme_of(url)))
}

/// The folder of an SQLite database file (`.` for a bare file name): where palisade
/// keeps its data. `None` for an in-memory database or any other kind of URL.
pub fn data_dir(url: &str) -> Option<std::path::PathBuf> {
    let rest = url.strip_prefix("sqlite:")?;
    let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
    let path = path.trim_start_matches("//");
    if path.is_empty() || path == ":memory:" || query.split('&').any(|p| p == "mode=memory") {
        return None;
    }
    match std::path::Path::new(path).parent() {
        Some(parent) if !parent.as_os_str().is_empty() => Some(parent.to_owned()),
        _ => Some(std::path::PathBuf::from(".")),
    }
}

fn scheme_of(url: &str) -> String {
    url.split(':')
        .next()
        .unwrap_or_default()
        .chars()
        .take(16)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(seq: u64, body: &str) -> StoredMessage {
        StoredMessage {
            room: "r".into(),
            seq,
            from: UserRef {
                id: "u".into(),
                name: "n".into(),
            },
            body: body.into(),
            ts: 0,
            nonce: None,
        }
    }

    #[test]
    fn the_data_dir_is_the_database_file_folder() {
        let dir = |url| data_dir(url).map(|p| p.display().to_string());
        assert_eq!(
            dir("sqlite://./data/palisade.db").as_deref(),
            Some("./data")
        );
        assert_eq!(
            dir("sqlite:///var/lib/p/p.db?mode=rwc").as_deref(),
            Some("/var/lib/p")
        );
        assert_eq!(dir("sqlite:p.db").as_deref(), Some("."));
        assert_eq!(dir("sqlite::memory:"), None);
        assert_eq!(dir("sqlite://x.db?mode=memory"), None);
        assert_eq!(dir("postgres://u:p@h/db"), None);
    }

    #[test]
    fn a_byte_cut_keeps_the_newest_messages_and_marks_the_snapshot_incomplete() {
        let messages: Vec<_> = (1..=5).map(|seq| message(seq, &"x".repeat(100))).collect();
        let one = serde_json::to_vec(&messages[0]).unwrap().len() + 1;
        let mut snapshot = RoomSnapshot {
            last_seq: 5,
            messages: messages.clone(),
            complete: true,
        };
        let mut asked = None;
        snapshot.keep_newest_affordable(|wanted| {
            asked = Some(wanted);
            wanted
        });
        assert_eq!(asked, Some(5 * one), "all of them, measured as serialised");
        assert!(snapshot.complete, "everything fits: nothing cut");
        snapshot.keep_newest_affordable(|_| 3 * one - 1);
        assert_eq!(
            snapshot.messages.iter().map(|m| m.seq).collect::<Vec<_>>(),
            [4, 5]
        );
        assert!(!snapshot.complete);
    }

    #[test]
    fn described_urls_name_the_file_and_never_credentials() {
        assert_eq!(describe_url("sqlite://./data/p.db"), "./data/p.db");
        assert_eq!(describe_url("sqlite:///srv/p.db?mode=rwc"), "/srv/p.db");
        assert_eq!(
            describe_url("postgres://user:secret@db/palisade"),
            "postgres://db/palisade"
        );
        assert_eq!(
            describe_url("postgresql://u:p@10.0.0.5:6432/chat?password=secret&sslmode=require"),
            "postgresql://10.0.0.5:6432/chat"
        );
        assert_eq!(describe_url("mysql://user:secret@db/x"), "mysql://…");
        assert_eq!(describe_url("postgres://user:secret@[bad"), "postgres://…");
    }
}
