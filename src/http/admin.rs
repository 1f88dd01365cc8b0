//! Admin actions, for callers who are admins now.
//!
//! - `POST /api/admin/users/{id}/revoke` voids every token the user holds (issued up to
//!   now) on every path in, and closes their live connections with 4003. They may sign in
//!   again at once.
//! - `POST /api/admin/users/{id}/disable` bans the user: login, renewal, tickets, the
//!   handshake and `refresh` are refused until `POST /api/admin/users/{id}/enable`, their
//!   live connections close with 4003, and the tokens they held stay void after enabling.
//!
//! The id is a token's `sub`: a palisade account id or an external issuer's user id.
//! For a palisade token the caller's role is read from the account as it is now, so
//! removing an admin takes effect without waiting for their token to expire.
//!
//! A revocation or ban the store cannot save is not applied at all and answers
//! `503 unavailable` to retry, so a `200` always means it survives a restart.
//!
//! In cluster mode each action is also announced to the other nodes ([`crate::cluster`]),
//! which apply it to their caches and close the user's connections there too;
//! `closed_connections` counts this node's only.

use crate::auth::Identity;
use crate::cluster::{self, Action};
use crate::error::ApiError;
use crate::http::caller::{Authenticated, current_role};
use crate::model::{Role, now_secs};
use crate::state::AppState;
use axum::extract::rejection::PathRejection;
use axum::extract::{FromRequestParts, Path, State};
use axum::http::request::Parts;
use axum::routing::post;
use axum::{Json, Router};
use serde_json::{Value, json};

pub(crate) fn router() -> Router<AppState> {
    Router::new()
        .route("/admin/users/{id}/revoke", post(revoke))
        .route("/admin/users/{id}/disable", post(disable))
        .route("/admin/users/{id}/enable", post(enable))
}

/// The `{id}` of an admin route; a path that does not decode is `400 bad_request` with the
/// JSON body, not axum's plain-text rejection.
struct TargetUser(String);

impl<S: Send + Sync> FromRequestParts<S> for TargetUser {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        Path::<String>::from_request_parts(parts, state)
            .await
            .map(|Path(id)| TargetUser(id))
            .map_err(|_: PathRejection| {
                ApiError::BadRequest(
                    "the user id in the path does not decode (percent-encoded UTF-8 expected)"
                        .to_owned(),
                )
            })
    }
}

/// `403 forbidden` unless the caller is an admin: for palisade's own tokens by the
/// account's current role, for an external issuer's by the token's `role` claim.
async fn require_admin(state: &AppState, caller: &Identity) -> Result<(), ApiError> {
    if current_role(state, caller).await? == Role::Admin {
        Ok(())
    } else {
        tracing::warn!(target: "security", event = "admin_forbidden", user = %caller.user.id);
        Err(ApiError::Forbidden)
    }
}

/// Applies a stored action here, then tells the other nodes (cluster mode): how many of
/// this node's connections closed.
async fn cluster_wide(state: &AppState, action: Action, user_id: &str, at: i64) -> usize {
    let closed = cluster::apply(state, action, user_id, at);
    if let Some(control) = &state.control {
        control.announce(action, user_id, at).await;
    }
    closed
}

async fn revoke(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
    TargetUser(user_id): TargetUser,
) -> Result<Json<Value>, ApiError> {
    require_admin(&state, &caller).await?;
    let at = now_secs();
    state
        .store
        .revoke(&user_id, at)
        .await
        .map_err(ApiError::store)?;
    let closed = cluster_wide(&state, Action::Revoke, &user_id, at).await;
    tracing::warn!(target: "security", event = "user_revoked", admin = %caller.user.id, user = %user_id, closed);
    Ok(Json(
        json!({"user_id": user_id, "revoked_at": at, "closed_connections": closed}),
    ))
}

async fn disable(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
    TargetUser(user_id): TargetUser,
) -> Result<Json<Value>, ApiError> {
    require_admin(&state, &caller).await?;
    if user_id == caller.user.id {
        return Err(ApiError::BadRequest(
            "an admin cannot disable their own account".to_owned(),
        ));
    }
    let at = now_secs();
    // Stored before it takes effect here: a ban the store did not keep is not announced.
    state
        .store
        .disable(&user_id, at)
        .await
        .map_err(ApiError::store)?;
    let closed = cluster_wide(&state, Action::Disable, &user_id, at).await;
    tracing::warn!(target: "security", event = "user_disabled", admin = %caller.user.id, user = %user_id, closed);
    Ok(Json(json!({
        "user_id": user_id,
        "disabled": true,
        "disabled_at": at,
        "closed_connections": closed,
    })))
}

async fn enable(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
    TargetUser(user_id): TargetUser,
) -> Result<Json<Value>, ApiError> {
    require_admin(&state, &caller).await?;
    let was_disabled = state
        .store
        .enable(&user_id)
        .await
        .map_err(ApiError::store)?;
    cluster_wide(&state, Action::Enable, &user_id, now_secs()).await;
    tracing::warn!(target: "security", event = "user_enabled", admin = %caller.user.id, user = %user_id, was_disabled);
    Ok(Json(
        json!({"user_id": user_id, "disabled": false, "was_disabled": was_disabled}),
    ))
}
