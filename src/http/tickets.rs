//! `POST /api/tickets`: trade a bearer token for a single-use WebSocket ticket.
//! Rate limited per client IP (60 a minute by default). In cluster mode the ticket is
//! kept in Redis (any node redeems it); when Redis does not answer the request gets
//! `503 unavailable`, to retry.
//!
//! The `Origin` is checked here as at the handshake, and first: a browser cannot read
//! why a WebSocket handshake failed, but it can read this answer, so the web client
//! learns that its page's origin is not allowed (`403 origin_forbidden`) instead of
//! retrying a handshake that can never succeed.

use crate::client_ip::ClientIp;
use crate::error::ApiError;
use crate::http::caller::Authenticated;
use crate::http::per_ip_rate;
use crate::state::AppState;
use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::routing::post;
use axum::{Json, Router};
use serde_json::{Value, json};

pub(crate) fn router() -> Router<AppState> {
    Router::new().route("/tickets", post(issue))
}

async fn issue(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    _origin: AllowedOrigin,
    Authenticated(identity): Authenticated,
) -> Result<Json<Value>, ApiError> {
    per_ip_rate(&state.ticket_limiter, &state.security_log, ip, "tickets").await?;
    let ticket = state.tickets.issue(identity).await.map_err(|error| {
        tracing::warn!(%error, "cannot issue a ticket");
        ApiError::Unavailable
    })?;
    Ok(Json(
        json!({"ticket": ticket, "expires_in": state.tickets.ttl().as_secs()}),
    ))
}

/// The request's `Origin` passed the allowlist (or was absent, where the policy allows
/// that: curl and servers send none). Extracted before the credentials, so a refused
/// page learns nothing about its token.
struct AllowedOrigin;

impl FromRequestParts<AppState> for AllowedOrigin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let Err(reason) = state.settings.origins.check_headers(&parts.headers) else {
            return Ok(AllowedOrigin);
        };
        let ClientIp(ip) = ClientIp::from_request_parts(parts, state).await?;
        state.security_log.origin_refused(
            ip,
            "origin_refused",
            Some("tickets"),
            reason,
            &parts.headers,
        );
        Err(ApiError::OriginForbidden)
    }
}
