//! `GET /ws`: the checks that run before a connection is upgraded, in the contract's
//! order, each failure a plain HTTP answer with the JSON error body and a security log
//! line (never with the token, ticket or query string).
//!
//! 1. Origin allowlist (`403 origin_forbidden`)
//! 2. Draining or at the global cap (`503 unavailable`)
//! 3. Credentials: bearer header, `?ticket=` or `?token=` (`401 unauthorized`;
//!    `503 unavailable` when, in cluster mode, Redis cannot redeem a ticket; or
//!    `429 rate_limited` once the client IP's failed-credentials budget, shared with the
//!    HTTP API (and, in cluster mode, with every node), is spent: see
//!    [`refuse_credentials`]).
//! 4. Per-IP and per-user connection caps (`429 too_many_connections`); in cluster mode
//!    the per-user cap also counts the user's connections on every node
//!    ([`super::shared_caps`]), or this node's alone when Redis does not answer in time.
//!
//! Log lines are throttled per client ([`crate::security_log`]), so a flood of refusals
//! writes a few lines and one count.

use super::limits::CapRejection;
use super::session::{self, SessionContext};
use super::shared_caps::NotTaken;
use super::upgrade::UpgradeOffer;
use crate::auth::{CredentialRejection, Identity, bearer_token, refuse_credentials};
use crate::client_ip::ClientIp;
use crate::config::Limits;
use crate::error::ApiError;
use crate::state::AppState;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use std::borrow::Cow;
use std::net::IpAddr;
use std::time::Duration;
use tungstenite::protocol::WebSocketConfig;

/// How long a client refused by a connection cap is told to wait.
const CAP_RETRY_AFTER: Duration = Duration::from_secs(5);

/// The read buffer per connection, kept for its whole life: client frames are small
/// (a `send` of a short message, a `join`, a ping), and at tens of thousands of idle
/// connections every byte of it counts; a bigger frame, up to the frame limit (25 KB by
/// default), simply takes several reads.
const READ_BUFFER_BYTES: usize = 256;

/// Frames written between flushes collect up to this much before a write, under
/// tungstenite ([`super::batched_io`]), which itself writes each frame straight through.
const WRITE_BUFFER_BYTES: usize = super::batched_io::WRITE_OUT_AT_BYTES;

/// Most bytes tungstenite may hold unwritten for one connection. Unbounded (its
/// default), a client that stops reading could let it grow without end once the batch
/// under it is full and the socket blocks. It holds little now: the writer's data
/// frames go around it (`writer::FrameSink`), and it sends only the pings, the pongs
/// and the close frame. The bound stays what it was, so that it never depends on how
/// or where the writer sends frames: large enough for the largest single frame the
/// server sends (tungstenite refuses a frame that does not fit even an empty buffer,
/// which could then never leave), a `joined` or `history` reply, whose messages are
/// bounded by `replay_max_bytes`, plus a `joined`'s member list, bounded by the number
/// of connections the server takes.
fn max_write_buffer_bytes(limits: &Limits) -> usize {
    /// A generous bound on one member in `joined.members`: an id, a 64-character name
    /// written with escapes, and the JSON around them.
    const MEMBER_BYTES: usize = 1024;
    /// `type`, `id`, `room`, `last_seq`, `complete` and the field names.
    const ENVELOPE_BYTES: usize = 1024;
    WRITE_BUFFER_BYTES
        .saturating_add(limits.replay_max_bytes)
        .saturating_add(limits.max_connections.saturating_mul(MEMBER_BYTES))
        .saturating_add(ENVELOPE_BYTES)
}

#[derive(Debug, Default, Deserialize)]
pub struct QueryCredentials {
    ticket: Option<String>,
    token: Option<String>,
}

pub async fn upgrade(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    headers: HeaderMap,
    query: Result<Query<QueryCredentials>, QueryRejection>,
    offer: UpgradeOffer,
) -> Response {
    // 1. Origin.
    if let Err(reason) = state.settings.origins.check_headers(&headers) {
        state
            .security_log
            .origin_refused(ip, "handshake_rejected", None, reason, &headers);
        crate::stats::handshake_rejected("origin_forbidden");
        return ApiError::OriginForbidden.into_response();
    }

    // 2. Capacity.
    if state.shutdown.is_triggered() || state.caps.is_full() {
        refused(&state, ip, None, "unavailable", "unavailable");
        return ApiError::Unavailable.into_response();
    }

    // 3. Credentials.
    let query = query.map(|Query(q)| q).unwrap_or_default();
    let identity = match authenticate(&state, &headers, &query).await {
        Ok(identity) => identity,
        Err(NotAuthenticated::Refused(reason)) => {
            return credentials_refused(&state, ip, reason).await;
        }
        Err(NotAuthenticated::TicketsUnavailable) => {
            // Not the client's fault: no failure budget is spent.
            refused(&state, ip, None, "tickets_unavailable", "unavailable");
            return ApiError::Unavailable.into_response();
        }
    };

    // 4. Connection caps.
    let user = Some(identity.user.id.as_str());
    let slot = match state.caps.acquire(ip, &identity.user.id) {
        Ok(slot) => slot,
        Err(CapRejection::ServerFull) => {
            refused(&state, ip, user, "server_full", "unavailable");
            return ApiError::Unavailable.into_response();
        }
        Err(cap) => {
            refused(&state, ip, user, cap.as_str(), "too_many_connections");
            return ApiError::TooManyConnections {
                retry_after: CAP_RETRY_AFTER,
            }
            .into_response();
        }
    };
    // 4b. The per-user cap across the cluster (cluster mode).
    let slot = match &state.shared_caps {
        None => slot,
        Some(shared) => match shared.take(&identity.user.id).await {
            Ok(shared) => slot.with_shared(shared),
            Err(NotTaken::Full) => {
                drop(slot);
                let cap = CapRejection::TooManyForUser;
                refused(&state, ip, user, cap.as_str(), "too_many_connections");
                return ApiError::TooManyConnections {
                    retry_after: CAP_RETRY_AFTER,
                }
                .into_response();
            }
            // A cap is a limit, not a reason to refuse everyone: without an answer from
            // Redis the node's own cap (taken above) still bounds the user here.
            Err(NotTaken::Unknown) => slot,
        },
    };

    let max = state.settings.limits.frame_limit();
    let config = WebSocketConfig::default()
        .max_message_size(Some(max))
        .max_frame_size(Some(max))
        .read_buffer_size(READ_BUFFER_BYTES)
        // Each frame goes straight to the batching under it, which keeps no buffer
        // between batches; tungstenite's own would keep its largest batch for good.
        .write_buffer_size(0)
        .max_write_buffer_size(max_write_buffer_bytes(&state.settings.limits));
    let tracker = state.sessions.clone();
    let context = SessionContext {
        state,
        identity,
        ip,
        slot,
    };
    offer
        .accept(config, move |socket| {
            tracker.track_future(session::run(socket, context))
        })
        .unwrap_or_else(|| ApiError::UpgradeRequired.into_response())
}

/// `401`, or `429` once this client's failed-credentials budget is spent (on every
/// node together, in cluster mode).
async fn credentials_refused(
    state: &AppState,
    ip: IpAddr,
    reason: CredentialRejection,
) -> Response {
    if !reason.is_out_of_date() {
        crate::stats::auth_failed("handshake");
    }
    let error = refuse_credentials(reason, || state.auth_failures.check(ip)).await;
    refused(state, ip, None, reason.as_str(), error.code());
    error.into_response()
}

/// Logs a refused handshake (throttled per client) and counts it by `metric_reason`.
fn refused(
    state: &AppState,
    ip: IpAddr,
    user: Option<&str>,
    reason: &'static str,
    metric_reason: impl Into<Cow<'static, str>>,
) {
    if state.security_log.admit(ip, "handshake_rejected") {
        tracing::warn!(target: "security", event = "handshake_rejected", %ip, user, reason);
    }
    crate::stats::handshake_rejected(metric_reason);
}

/// Why a handshake has no identity.
enum NotAuthenticated {
    /// The credentials are no good.
    Refused(CredentialRejection),
    /// A ticket could not be looked up (cluster mode, Redis unavailable).
    TicketsUnavailable,
}

impl<T: Into<CredentialRejection>> From<T> for NotAuthenticated {
    fn from(reason: T) -> Self {
        NotAuthenticated::Refused(reason.into())
    }
}

/// Finds and checks the credentials; why they are no good when they are not.
async fn authenticate(
    state: &AppState,
    headers: &HeaderMap,
    query: &QueryCredentials,
) -> Result<Identity, NotAuthenticated> {
    let bearer = bearer_token(headers).map_err(|_| CredentialRejection::MalformedAuthorization)?;
    if let Some(token) = bearer {
        return Ok(state.auth.verify(token)?);
    }
    if let Some(ticket) = &query.ticket {
        let identity = state
            .tickets
            .redeem(ticket)
            .await
            .map_err(|error| {
                tracing::warn!(%error, "cannot redeem a ticket");
                NotAuthenticated::TicketsUnavailable
            })?
            .ok_or(CredentialRejection::TicketInvalid)?;
        state.auth.still_valid(&identity)?;
        return Ok(identity);
    }
    if let Some(token) = &query.token {
        return Ok(state.auth.verify(token)?);
    }
    Err(CredentialRejection::Missing.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_largest_joined_frame_fits_the_write_buffer_bound() {
        use crate::model::{StoredMessage, UserRef};
        use crate::ws::protocol::ServerFrame;
        let limits = Limits {
            max_connections: 50,
            replay_max_bytes: 64 * 1024,
            ..Limits::default()
        };
        let bound = max_write_buffer_bytes(&limits);
        assert!(
            bound > WRITE_BUFFER_BYTES,
            "a full batch under tungstenite, then frames"
        );
        // The worst a client can make the server send at once: a full replay of the
        // longest bodies, every connection a distinct member with the longest name.
        let longest = |c: char, n: usize| std::iter::repeat_n(c, n).collect::<String>();
        let member = |i: usize| UserRef {
            id: format!("{i:0>64}"),
            name: longest('\u{1F600}', 64),
        };
        let mut messages: Vec<StoredMessage> = (1..=limits.replay_max as u64)
            .map(|seq| StoredMessage {
                room: longest('r', 64),
                seq,
                from: member(0),
                body: longest('"', limits.max_body_chars),
                ts: i64::MAX,
                nonce: Some(longest('n', 64)),
            })
            .collect();
        crate::store::keep_newest_affordable(&mut messages, |_| limits.replay_max_bytes);
        let members: Vec<UserRef> = (0..limits.max_connections).map(member).collect();
        let frame = crate::broker::encode(&ServerFrame::Joined {
            id: Some(u32::MAX),
            room: &longest('r', 64),
            last_seq: u64::MAX,
            messages: &messages,
            complete: false,
            online: usize::MAX,
            members: &members,
        });
        assert!(
            frame.len() <= bound - WRITE_BUFFER_BYTES,
            "a {} byte frame against a bound of {bound}",
            frame.len()
        );
    }
}
