//! `POST /api/register` and `POST /api/login`: accounts and the tokens they get;
//! `POST /api/token`: a fresh token for a valid one, so a client can `refresh` its socket.
//!
//! Register and login are rate limited per client IP and, once they are about to hash,
//! for the whole server (so junk refused before it spends nothing there); they hash
//! through the bounded password pool (`503 unavailable` with `Retry-After` when it stays
//! busy), and login answers the same `401 invalid_credentials` for an unknown name and a
//! wrong password. A disabled account with the right password is told so
//! (`403 account_disabled`): only its owner learns it.
//!
//! Renewal is for palisade's own tokens only, and takes the role from the account as it
//! is now: a token from an external issuer is renewed by that issuer (`403 not_renewable`),
//! so palisade never extends a session another app decided to end.

use crate::auth::accounts::{self, AccountError};
use crate::auth::jwt::Minter;
use crate::client_ip::ClientIp;
use crate::error::{ApiError, ApiJson};
use crate::http::caller::Authenticated;
use crate::http::{global_rate, per_ip_rate};
use crate::model::{Role, UserRef, is_acceptable_password, is_valid_username};
use crate::state::AppState;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use axum::{Json, Router};
use secrecy::SecretString;
use serde::{Deserialize, Serialize};
use std::net::IpAddr;
use std::time::Duration;

/// What a client refused for want of a hashing slot is told to wait.
const HASH_BUSY_RETRY_AFTER: Duration = Duration::from_secs(1);

pub(crate) fn router() -> Router<AppState> {
    Router::new()
        .route("/register", post(register))
        .route("/login", post(login))
        .route("/token", post(renew))
}

#[derive(Deserialize)]
pub(crate) struct Credentials {
    username: String,
    password: SecretString,
}

#[derive(Serialize)]
pub(crate) struct Session {
    user: UserRef,
    token: String,
    expires_at: i64,
}

async fn register(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    ApiJson(credentials): ApiJson<Credentials>,
) -> Result<(StatusCode, Json<Session>), ApiError> {
    per_ip_rate(&state.auth_limiter, &state.security_log, ip, "register").await?;
    if !is_valid_username(&credentials.username) {
        return Err(ApiError::InvalidUsername);
    }
    if !is_acceptable_password(secrecy::ExposeSecret::expose_secret(&credentials.password)) {
        return Err(ApiError::WeakPassword);
    }
    // The server-wide budget guards the hashing cores, so only a request that will hash
    // spends it: junk refused above must not lock everyone else out.
    global_rate(
        &state.auth_global_limiter,
        &state.security_log,
        ip,
        "register",
    )?;
    let user = accounts::register(
        &state.store,
        &state.passwords,
        &credentials.username,
        credentials.password,
    )
    .await
    .map_err(|e| account_error(&state, ip, e))?;
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
    per_ip_rate(&state.auth_limiter, &state.security_log, ip, "login").await?;
    // Every login that gets this far hashes (an unknown name against a dummy hash, so
    // it takes as long as a wrong password): it spends the server-wide budget now.
    global_rate(&state.auth_global_limiter, &state.security_log, ip, "login")?;
    match accounts::login(
        &state.store,
        &state.passwords,
        &credentials.username,
        credentials.password,
    )
    .await
    {
        Ok(record) if state.auth.revocations().is_disabled(&record.user.id) => {
            tracing::warn!(target: "security", event = "login_refused", %ip, user = %record.user.id, reason = "account_disabled");
            Err(ApiError::AccountDisabled)
        }
        Ok(record) => {
            let role = accounts::role_of(&record, &state.settings.admin_users);
            Ok(Json(session_for(&state, record.user, role)?))
        }
        Err(AccountError::InvalidCredentials) => {
            crate::stats::auth_failed("login");
            if state.security_log.admit(ip, "login_failed") {
                tracing::warn!(target: "security", event = "login_failed", %ip);
            }
            Err(ApiError::InvalidCredentials)
        }
        Err(other) => Err(account_error(&state, ip, other)),
    }
}

/// Renews a valid palisade token: same account and rooms, the account's current role, a
/// new `exp`. A revoked, expired or disabled user's token cannot be renewed (the extractor
/// refuses it), so revocation and bans still end a session.
async fn renew(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    Authenticated(identity): Authenticated,
) -> Result<Json<Session>, ApiError> {
    per_ip_rate(&state.ticket_limiter, &state.security_log, ip, "token").await?;
    if identity.minted_by != Minter::Palisade {
        tracing::warn!(target: "security", event = "renewal_refused", %ip, user = %identity.user.id, reason = "external_token");
        return Err(ApiError::NotRenewable);
    }
    let account = accounts::current(&state.store, &state.settings.admin_users, &identity.user.id)
        .await
        .map_err(ApiError::internal)?;
    let Some((user, role)) = account else {
        tracing::warn!(target: "security", event = "renewal_refused", %ip, user = %identity.user.id, reason = "no_such_account");
        return Err(ApiError::Unauthorized);
    };
    let issued = state
        .auth
        .renew(&identity, &user, role)
        .map_err(ApiError::internal)?;
    Ok(Json(Session {
        user,
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

fn account_error(state: &AppState, ip: IpAddr, error: AccountError) -> ApiError {
    match error {
        AccountError::UsernameTaken => ApiError::UsernameTaken,
        AccountError::InvalidCredentials => ApiError::InvalidCredentials,
        AccountError::Busy => {
            if state.security_log.admit(ip, "hashing_busy") {
                tracing::warn!(target: "security", event = "hashing_busy", %ip);
            }
            ApiError::Busy {
                retry_after: HASH_BUSY_RETRY_AFTER,
            }
        }
        AccountError::Store(store) => ApiError::store(store),
        other => ApiError::internal(other),
    }
}
