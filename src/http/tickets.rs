//! `POST /api/tickets`: trade a bearer token for a single-use WebSocket ticket.

use crate::auth::Authenticated;
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
    Authenticated(identity): Authenticated,
) -> Json<Value> {
    let ticket = state.tickets.issue(identity);
    Json(json!({"ticket": ticket, "expires_in": state.tickets.ttl().as_secs()}))
}
