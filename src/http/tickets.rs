//! `POST /api/tickets`: trade a bearer token for a single-use WebSocket ticket.
//! Rate limited per client IP (60 a minute by default).

use crate::auth::Authenticated;
use crate::client_ip::ClientIp;
use crate::error::ApiError;
use crate::http::per_ip_rate;
use crate::state::AppState;
use axum::extract::State;
use axum::routing::post;
use axum::{Json, Router};
use serde_json::{Value, json};

pub fn router() -> Router<AppState> {
    Router::new().route("/tickets", post(issue))
}

async fn issue(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    Authenticated(identity): Authenticated,
) -> Result<Json<Value>, ApiError> {
    per_ip_rate(&state.ticket_limiter, &state.security_log, ip, "tickets")?;
    let ticket = state.tickets.issue(identity);
    Ok(Json(
        json!({"ticket": ticket, "expires_in": state.tickets.ttl().as_secs()}),
    ))
}
