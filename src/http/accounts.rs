//! `POST /api/register` and `POST /api/login`: accounts and the tokens they get;
//! `POST /api/token`: a fresh token for a valid one, so a client can `refresh` its socket.
//!
//! Register and login are rate limited per client IP, and login answers the same
//! `401 invalid_credentials` for an unknown name and a wrong password.

use crate::auth::Authenticated;
use crate::auth::accounts::{self, AccountError};
use crate::client_ip::ClientIp;
use crate::error::{ApiError, ApiJson};
use crate::http::per_ip_rate;
use crate::model::{Role, UserRef, is_acceptable_password, is_valid_username};
use crate::state::AppState;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use axum::{Json, Router};
use secrecy::SecretString;
use serde::{Deserialize, Serialize};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/register", post(register))
        .route("/login", post(login))
        .route("/token", post(renew))
}

#[derive(Deserialize)]
pub struct Credentials {
    username: String,
    password: SecretString,
}

#[derive(Serialize)]
pub struct Session {
    user: UserRef,
    token: String,
    expires_at: i64,
}

async fn register(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    ApiJson(credentials): ApiJson<Credentials>,
) -> Result<(StatusCode, Json<Session>), ApiError> {
    per_ip_rate(&state.auth_limiter, ip, "register")?;
    if !is_valid_username(&credentials.username) {
        return Err(ApiError::InvalidUsername);
    }
    if !is_acceptable_password(secrecy::ExposeSecret::expose_secret(&credentials.password)) {
        return Err(ApiError::WeakPassword);
    }
    let user = accounts::register(&state.store, &credentials.username, credentials.password)
        .await
        .map_err(account_error)?;
    tracing::info!(user = %user.id, "account created");
    Ok((
        StatusCode::CREATED,
        Json(session_for(&state, user, Role::User)?),
    ))
}

async fn login(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    ApiJson(credentials): ApiJson<Credentials>,
) -> Result<Json<Session>, ApiError> {
    per_ip_rate(&state.auth_limiter, ip, "login")?;
    match accounts::login(&state.store, &credentials.username, credentials.password).await {
        Ok((user, stored_role)) => {
            let is_admin = state
                .settings
                .admin_users
                .iter()
                .any(|name| name.eq_ignore_ascii_case(&user.name));
            let role = if is_admin { Role::Admin } else { stored_role };
            Ok(Json(session_for(&state, user, role)?))
        }
        Err(AccountError::InvalidCredentials) => {
            tracing::warn!(target: "security", event = "login_failed", %ip);
            Err(ApiError::InvalidCredentials)
        }
        Err(other) => Err(account_error(other)),
    }
}

/// Renews a valid token (same user, role and rooms, a new `exp`). A revoked or expired
/// token cannot be renewed, so revocation still ends a session.
async fn renew(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    Authenticated(identity): Authenticated,
) -> Result<Json<Session>, ApiError> {
    per_ip_rate(&state.ticket_limiter, ip, "token")?;
    let issued = state.auth.renew(&identity).map_err(ApiError::internal)?;
    Ok(Json(Session {
        user: identity.user,
        token: issued.token,
        expires_at: issued.expires_at,
    }))
}

fn session_for(state: &AppState, user: UserRef, role: Role) -> Result<Session, ApiError> {
    let issued = state.auth.issue(&user, role).map_err(ApiError::internal)?;
    Ok(Session {
        user,
        token: issued.token,
        expires_at: issued.expires_at,
    })
}

fn account_error(error: AccountError) -> ApiError {
    match error {
        AccountError::UsernameTaken => ApiError::UsernameTaken,
        AccountError::InvalidCredentials => ApiError::InvalidCredentials,
        AccountError::Store(store) => ApiError::store(store),
        other => ApiError::internal(other),
    }
}
