//! The group commit both stores share: one task per store writes every waiting append
//! in one transaction.
//!
//! An ack means durable, and a commit (an fsync on SQLite, a WAL flush on PostgreSQL)
//! costs about the same for one message as for 256: so appends queue, and one task per
//! store takes everything waiting, writes it in one transaction, and answers each
//! sender. The same task calls the hooks, after the commit and in queue order, which is
//! each room's `seq` order, so whoever fans out hangs off them and needs no lock per
//! room. The stores differ only in how a batch is written ([`BatchWriter`]).

use super::{Appended, NewMessage, OnCommit, StoreError};
use async_trait::async_trait;
use tokio::sync::{mpsc, oneshot};

/// Most appends committed in one transaction.
pub(super) const MAX_BATCH: usize = 256;

/// An append waiting for the committer, which answers on `reply`.
pub(super) struct AppendRequest {
    pub(super) message: NewMessage,
    pub(super) on_commit: OnCommit,
    pub(super) reply: oneshot::Sender<Result<Appended, StoreError>>,
}

/// How a store writes one batch.
#[async_trait]
pub(super) trait BatchWriter: Send + Sync + 'static {
    /// Writes every message of `batch` in one transaction and returns, in the same order,
    /// what each became (the first message, for a nonce already stored, earlier in the
    /// batch included). An error means nothing of the batch was committed.
    async fn append_batch(&self, batch: &[NewMessage]) -> Result<Vec<Appended>, StoreError>;
}

/// The queue into a store's committer.
pub(super) struct Appends(mpsc::Sender<AppendRequest>);

impl Appends {
    /// Starts the committer over `writer` and returns its queue.
    pub(super) fn start(writer: impl BatchWriter) -> Self {
        let (appends, requests) = mpsc::channel(4 * MAX_BATCH);
        tokio::spawn(run(writer, requests));
        Self(appends)
    }

    /// Queues an append and waits for its commit ([`super::MessageLog::append`]).
    pub(super) async fn append(
        &self,
        message: NewMessage,
        on_commit: OnCommit,
    ) -> Result<Appended, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.0
            .send(AppendRequest {
                message,
                on_commit,
                reply,
            })
            .await
            .map_err(|_| StoreError::Closed)?;
        answer.await.map_err(|_| StoreError::Closed)?
    }
}

/// The committer: takes what waits (up to [`MAX_BATCH`]), writes it, calls the hooks of
/// what was stored in queue order, and answers every sender; until the queue closes.
pub(super) async fn run(writer: impl BatchWriter, mut requests: mpsc::Receiver<AppendRequest>) {
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
        match writer.append_batch(&messages).await {
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
