//! Who is asking: JWTs, single-use WebSocket tickets and accounts.
//!
//! Every path in (HTTP bearer token, WebSocket header, ticket or query token, `refresh`)
//! ends in the same [`Identity`], checked by one [`Authenticator`]: signature, algorithm,
//! time claims and revocation, so one set of checks guards them all.

pub mod accounts;
pub mod jwt;
pub mod passwords;
pub mod revocation;
pub mod tickets;

use jwt::{IssuedToken, JwtKeys, TokenRejection};
use revocation::Revocations;

use crate::error::ApiError;
use crate::model::{Role, UserRef, room_allowed};
use crate::state::AppState;
use axum::extract::FromRequestParts;
use axum::http::HeaderMap;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;

/// A verified caller, as taken from a token's claims.
#[derive(Clone, Debug)]
pub struct Identity {
    pub user: UserRef,
    pub role: Role,
    /// The `rooms` claim: `None` means every room.
    pub rooms: Option<Vec<String>>,
    /// Unix seconds: the connection closes with 4001 then unless refreshed.
    pub expires_at: i64,
    pub issued_at: i64,
}

impl Identity {
    pub fn may_join(&self, room: &str) -> bool {
        room_allowed(self.rooms.as_deref(), room)
    }
}

/// Issues tokens and decides whether a token or a ticket's identity is still good.
pub struct Authenticator {
    keys: JwtKeys,
    revocations: Revocations,
}

impl Authenticator {
    pub fn new(keys: JwtKeys, revocations: Revocations) -> Self {
        Self { keys, revocations }
    }

    /// A new token for a user (palisade's own login).
    pub fn issue(
        &self,
        user: &UserRef,
        role: Role,
    ) -> Result<IssuedToken, jsonwebtoken::errors::Error> {
        self.keys.issue(user, role, None)
    }

    /// A fresh token with the same subject, name, role and room allowlist: renewal.
    pub fn renew(&self, identity: &Identity) -> Result<IssuedToken, jsonwebtoken::errors::Error> {
        self.keys
            .issue(&identity.user, identity.role, identity.rooms.as_deref())
    }

    /// A token's identity, if it is well signed, in date and not revoked.
    pub fn verify(&self, token: &str) -> Result<Identity, TokenRejection> {
        let identity = self.keys.verify(token)?;
        self.still_valid(&identity)?;
        Ok(identity)
    }

    /// Re-checks an identity verified earlier (a ticket's, a live connection's).
    pub fn still_valid(&self, identity: &Identity) -> Result<(), TokenRejection> {
        if identity.expires_at <= crate::model::now_secs() {
            return Err(TokenRejection::Expired);
        }
        if self.revocations.is_revoked(identity) {
            return Err(TokenRejection::Revoked);
        }
        Ok(())
    }

    pub fn revocations(&self) -> &Revocations {
        &self.revocations
    }
}

/// An `Authorization` header that is not `Bearer <token>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MalformedAuthorization;

/// The token of an `Authorization: Bearer …` header: `Ok(None)` when there is no such
/// header, `Err` when there is one but it is not a bearer token.
pub fn bearer_token(headers: &HeaderMap) -> Result<Option<&str>, MalformedAuthorization> {
    let Some(value) = headers.get(AUTHORIZATION) else {
        return Ok(None);
    };
    let text = value.to_str().map_err(|_| MalformedAuthorization)?;
    let (scheme, token) = text.split_once(' ').ok_or(MalformedAuthorization)?;
    if !scheme.eq_ignore_ascii_case("bearer") || token.trim().is_empty() {
        return Err(MalformedAuthorization);
    }
    Ok(Some(token.trim()))
}

/// Extractor for API routes that need a signed-in caller (`401 unauthorized` otherwise).
pub struct Authenticated(pub Identity);

impl FromRequestParts<AppState> for Authenticated {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        authenticate(state, &parts.headers, parts.uri.path()).map(Authenticated)
    }
}

/// The caller named by a request's bearer token, or `401 unauthorized` (logged as a
/// security event with the path, never the token).
pub fn authenticate(
    state: &AppState,
    headers: &HeaderMap,
    path: &str,
) -> Result<Identity, ApiError> {
    let token = bearer_token(headers)
        .ok()
        .flatten()
        .ok_or(ApiError::Unauthorized)?;
    state.auth.verify(token).map_err(|reason| {
        // No client address here: these are throttled as one stream.
        if state.security_log.admit(None, "auth_rejected") {
            tracing::warn!(target: "security", event = "auth_rejected", %path, reason = reason.as_str());
        }
        ApiError::Unauthorized
    })
}
