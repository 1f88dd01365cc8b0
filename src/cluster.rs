//! Cluster control: what an admin does to a user on one node holds on every node.
//!
//! Each node keeps revocations and bans in memory for the check on every way in
//! ([`crate::auth::revocation`]), and keeps a user's live connections itself
//! ([`crate::ws::registry`]). The store write is shared already (PostgreSQL); what the
//! other nodes lack is the news. So a node that revokes, disables or enables a user also
//! `PUBLISH`es a control event on `{prefix}:control`, and every node listens there on a
//! pub/sub connection of its own (apart from the broker's, which subscribes and
//! unsubscribes rooms all day): it updates its cache and closes the user's connections
//! with the same close code as a local revoke (4003), within a round trip of Redis.
//!
//! Pub/sub is at most once: an event published while a node's connection is down is
//! lost to it. So the node subscribes at start before it reads revocations and bans
//! from the store, and whenever it reconnects it reads them again and closes the
//! connections of anyone revoked or banned meanwhile: nothing the store kept is missed
//! for longer than the outage.

use crate::auth::revocation::Revocations;
use crate::broker::redis::answer_within;
use crate::hub::outbox::CloseReason;
use crate::model::now_secs;
use crate::state::AppState;
use futures_util::StreamExt;
use redis::aio::{ConnectionManager, PubSub, PubSubStream};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::Duration;

/// How long one Redis command (connect, subscribe, publish) may take.
const REDIS_TIMEOUT: Duration = Duration::from_secs(5);

/// First wait before reconnecting; it doubles up to [`REDIS_TIMEOUT`].
const FIRST_BACKOFF: Duration = Duration::from_millis(100);

/// A ban stored this many seconds before a reload began is kept even if the reload's
/// read did not see it: it may have been stored and applied here while the read ran.
const RELOAD_SLACK_SECS: i64 = 10;

/// Longest user id a control event may name (a `sub` is an id, not a document).
const MAX_USER_ID_BYTES: usize = 1024;

/// What an admin did to a user.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Action {
    Revoke,
    Disable,
    Enable,
}

/// What travels on `{prefix}:control`.
#[derive(Debug, Serialize, Deserialize)]
struct ControlEvent {
    kind: Action,
    user_id: String,
    /// Unix seconds, as stored.
    at: i64,
    /// The node that published it: it applied the action itself already.
    origin: String,
}

/// Applies an action on this node: its cache, and the user's live connections here,
/// which close with 4003. How many connections closed.
pub(crate) fn apply(state: &AppState, action: Action, user_id: &str, at: i64) -> usize {
    let revocations = state.auth.revocations();
    match action {
        Action::Revoke => revocations.record(user_id, at),
        Action::Disable => revocations.disable(user_id, at),
        Action::Enable => {
            revocations.enable(user_id);
            return 0;
        }
    }
    state.connections.close_user(user_id, CloseReason::Revoked)
}

/// What the node shares in Redis besides rooms: tickets and the control channel.
pub(crate) struct SharedRedis {
    pub(crate) client: redis::Client,
    pub(crate) commands: ConnectionManager,
    pub(crate) prefix: String,
    /// Subscribed to the control channel at start, before the store was read.
    pub(crate) control: PubSub,
}

fn channel_of(prefix: &str) -> String {
    format!("{prefix}:control")
}

/// A connection subscribed to the control channel under `prefix`.
pub(crate) async fn subscribe(client: &redis::Client, prefix: &str) -> Result<PubSub, String> {
    let mut pubsub = tokio::time::timeout(REDIS_TIMEOUT, client.get_async_pubsub())
        .await
        .map_err(|_| format!("no answer within {REDIS_TIMEOUT:?}"))?
        .map_err(|error| error.to_string())?;
    tokio::time::timeout(REDIS_TIMEOUT, pubsub.subscribe(channel_of(prefix)))
        .await
        .map_err(|_| format!("no answer to SUBSCRIBE within {REDIS_TIMEOUT:?}"))?
        .map_err(|error| error.to_string())?;
    Ok(pubsub)
}

/// This node's end of the control channel.
pub(crate) struct Control {
    client: redis::Client,
    commands: ConnectionManager,
    prefix: String,
    channel: String,
    node: String,
    /// The connection opened at start, until the listener takes it.
    first: std::sync::Mutex<Option<PubSub>>,
}

impl Control {
    pub(crate) fn new(
        client: redis::Client,
        commands: ConnectionManager,
        prefix: &str,
        first: PubSub,
    ) -> Self {
        Self {
            client,
            commands,
            prefix: prefix.to_owned(),
            channel: channel_of(prefix),
            node: uuid::Uuid::new_v4().simple().to_string(),
            first: std::sync::Mutex::new(Some(first)),
        }
    }

    /// Tells the other nodes. A failure is logged, not returned: the action is stored
    /// and applied here, and every other node reads it from the store when it next
    /// (re)connects to Redis.
    pub(crate) async fn announce(&self, kind: Action, user_id: &str, at: i64) {
        let event = ControlEvent {
            kind,
            user_id: user_id.to_owned(),
            at,
            origin: self.node.clone(),
        };
        let payload = match serde_json::to_string(&event) {
            Ok(payload) => payload,
            Err(error) => {
                tracing::error!(%error, "cannot serialise a control event");
                return;
            }
        };
        let mut commands = self.commands.clone();
        let mut publish = redis::cmd("PUBLISH");
        publish.arg(&self.channel).arg(payload);
        if let Err(error) =
            answer_within(REDIS_TIMEOUT, publish.query_async::<()>(&mut commands)).await
        {
            tracing::warn!(target: "security", event = "control_not_published", %error, kind = ?kind, user = %user_id);
        }
    }

    /// Listens on the control channel until shutdown, reconnecting with backoff.
    pub(crate) async fn run(self: Arc<Self>, state: AppState) {
        let shutdown = state.shutdown.clone();
        tokio::select! {
            () = shutdown.triggered() => {}
            () = self.listen(&state) => {}
        }
    }

    async fn listen(&self, state: &AppState) {
        let mut backoff = FIRST_BACKOFF;
        // The store was read after this one subscribed: nothing to catch up with.
        let first = self
            .first
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        if let Some(first) = first {
            let mut messages = first.into_on_message();
            while let Some(message) = messages.next().await {
                self.receive(state, message.get_payload_bytes());
            }
            tracing::warn!("lost the Redis control connection; reconnecting");
        }
        loop {
            match self.connect(state).await {
                Ok(mut messages) => {
                    backoff = FIRST_BACKOFF;
                    while let Some(message) = messages.next().await {
                        self.receive(state, message.get_payload_bytes());
                    }
                    tracing::warn!("lost the Redis control connection; reconnecting");
                }
                Err(error) => {
                    tracing::warn!(%error, "cannot listen for control events on Redis; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(REDIS_TIMEOUT);
                }
            }
        }
    }

    /// A subscribed connection, after catching up with the store: an event published
    /// from here on is heard, one published before is in the store.
    async fn connect(&self, state: &AppState) -> Result<PubSubStream, String> {
        let pubsub = subscribe(&self.client, &self.prefix).await?;
        catch_up(state).await?;
        Ok(pubsub.into_on_message())
    }

    /// One control event: anything malformed is logged and dropped.
    fn receive(&self, state: &AppState, payload: &[u8]) {
        let event: ControlEvent = match serde_json::from_slice(payload) {
            Ok(event) => event,
            Err(error) => {
                tracing::warn!(%error, "a malformed control event was dropped");
                return;
            }
        };
        if event.user_id.is_empty() || event.user_id.len() > MAX_USER_ID_BYTES {
            tracing::warn!("a control event without a usable user id was dropped");
            return;
        }
        if event.origin == self.node {
            return;
        }
        let closed = apply(state, event.kind, &event.user_id, event.at);
        tracing::warn!(target: "security", event = "control_applied", kind = ?event.kind, user = %event.user_id, closed);
    }
}

/// Reads revocations and bans from the store into this node's cache, and closes the
/// connections of the users it newly finds revoked or banned.
async fn catch_up(state: &AppState) -> Result<(), String> {
    let read_at = now_secs();
    let unreadable = |error: crate::store::StoreError| format!("cannot read revocations: {error}");
    let entries = state.store.revocations().await.map_err(unreadable)?;
    let bans = state.store.disabled_users().await.map_err(unreadable)?;
    let revocations: &Revocations = state.auth.revocations();
    for user_id in revocations.reload(entries, bans, read_at, RELOAD_SLACK_SECS) {
        let closed = state.connections.close_user(&user_id, CloseReason::Revoked);
        if closed > 0 {
            tracing::warn!(target: "security", event = "control_caught_up", user = %user_id, closed);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_control_event_reads_as_its_json() {
        let event: ControlEvent = serde_json::from_str(
            r#"{"kind":"disable","user_id":"u1","at":42,"origin":"n","extra":1}"#,
        )
        .expect("parses");
        assert_eq!(
            (event.kind, event.user_id.as_str(), event.at),
            (Action::Disable, "u1", 42)
        );
        for malformed in [
            r#"{"kind":"explode","user_id":"u1","at":42,"origin":"n"}"#,
            r#"{"kind":"revoke","at":42,"origin":"n"}"#,
            "not json",
        ] {
            assert!(
                serde_json::from_str::<ControlEvent>(malformed).is_err(),
                "{malformed}"
            );
        }
    }
}
