//! Admin actions, for tokens with `role: admin`.
//!
//! `POST /api/admin/users/{id}/revoke` voids every token the user holds (issued up to
//! now) on every path in, and closes their live connections with 4003. A revocation the
//! store cannot save is not applied at all and answers `503 unavailable` to retry, so a
//! `200` always means it survives a restart.

use crate::auth::Authenticated;
use crate::error::ApiError;
use crate::model::{Role, now_secs};
use crate::state::AppState;
use crate::ws::close::CloseCode;
use axum::extract::{Path, State};
use axum::routing::post;
use axum::{Json, Router};
use serde_json::{Value, json};

pub fn router() -> Router<AppState> {
    Router::new().route("/admin/users/{id}/revoke", post(revoke))
}

async fn revoke(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
    Path(user_id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    if caller.role != Role::Admin {
        tracing::warn!(target: "security", event = "admin_forbidden", user = %caller.user.id);
        return Err(ApiError::Forbidden);
    }
    let at = now_secs();
    state
        .store
        .revoke(&user_id, at)
        .await
        .map_err(ApiError::store)?;
    state.auth.revocations().record(&user_id, at);
    let closed = state.connections.close_user(&user_id, CloseCode::Revoked);
    tracing::warn!(target: "security", event = "user_revoked", admin = %caller.user.id, user = %user_id, closed);
    Ok(Json(
        json!({"user_id": user_id, "revoked_at": at, "closed_connections": closed}),
    ))
}
