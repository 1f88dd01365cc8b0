//! Who is asking: JWTs, single-use WebSocket tickets and accounts.
//!
//! Every path in (HTTP bearer token, WebSocket header, ticket or query token, `refresh`)
//! ends in the same [`Identity`], checked by one [`Authenticator`]: signature, algorithm,
//! time claims, revocation and disabled accounts, so one set of checks guards them all.

pub mod accounts;
pub mod jwt;
pub mod passwords;
pub mod revocation;
pub mod tickets;

use jwt::{IssuedToken, JwtKeys, Minter, TokenRejection};
use revocation::Revocations;

use crate::client_ip::ClientIp;
use crate::error::ApiError;
use crate::model::{Role, UserRef, room_allowed};
use crate::state::AppState;
use axum::extract::FromRequestParts;
use axum::http::HeaderMap;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use std::net::IpAddr;

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
    pub minted_by: Minter,
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

    /// A fresh token for the same subject and room allowlist: renewal. The role is the one
    /// the account has now, never the one the old token claimed.
    pub fn renew(
        &self,
        identity: &Identity,
        user: &UserRef,
        role: Role,
    ) -> Result<IssuedToken, jsonwebtoken::errors::Error> {
        self.keys.issue(user, role, identity.rooms.as_deref())
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
        if self.revocations.is_disabled(&identity.user.id) {
            return Err(TokenRejection::Disabled);
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

/// The caller's role now: for palisade's own tokens the account's current role (so an
/// admin removed by the operator loses the rights at once, and a deleted account has
/// none); for an external issuer's tokens the `role` claim that issuer signed.
pub async fn current_role(state: &AppState, identity: &Identity) -> Result<Role, ApiError> {
    match identity.minted_by {
        Minter::External => Ok(identity.role),
        Minter::Palisade => {
            accounts::current(&state.store, &state.settings.admin_users, &identity.user.id)
                .await
                .map(|account| account.map_or(Role::User, |(_, role)| role))
                .map_err(ApiError::internal)
        }
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

/// Why a request's credentials were refused: the reason its security log line names,
/// and what decides whether the refusal spends the client's failure budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CredentialRejection {
    /// No bearer header (nor, on a handshake, ticket or query token).
    Missing,
    /// An `Authorization` header that is not `Bearer <token>`.
    MalformedAuthorization,
    /// A ticket that is unknown, already used or past its time.
    TicketInvalid,
    /// A token (or a ticket's identity) that [`Authenticator`] refused.
    Token(TokenRejection),
}

impl CredentialRejection {
    pub fn as_str(self) -> &'static str {
        match self {
            CredentialRejection::Missing => "missing_credentials",
            CredentialRejection::MalformedAuthorization => "malformed_authorization",
            CredentialRejection::TicketInvalid => "ticket_invalid",
            CredentialRejection::Token(rejection) => rejection.as_str(),
        }
    }

    /// A well-signed token whose time is not now: what a good client holds after a
    /// sleep (or with a clock a little off). It must get a new token, not wait.
    pub fn is_out_of_date(self) -> bool {
        matches!(
            self,
            CredentialRejection::Token(TokenRejection::Expired | TokenRejection::Immature)
        )
    }
}

impl From<TokenRejection> for CredentialRejection {
    fn from(rejection: TokenRejection) -> Self {
        CredentialRejection::Token(rejection)
    }
}

/// The answer to refused credentials, the same over HTTP and the WebSocket handshake:
/// `401 unauthorized`, spending one unit of the client's failed-credentials budget, or
/// `429 rate_limited` with `Retry-After` once that budget is spent, so guessing tokens
/// from one address is slow whichever door it knocks on. Good credentials never reach
/// here, so they are never refused by this budget (clients reconnecting together after
/// a restart or behind one NAT are not locked out by someone else's failures), and an
/// out-of-date token spends nothing and always gets `401`.
pub fn refuse_credentials(
    state: &AppState,
    ip: IpAddr,
    rejection: CredentialRejection,
) -> ApiError {
    if rejection.is_out_of_date() {
        return ApiError::Unauthorized;
    }
    match state.auth_failures.check(ip) {
        Ok(()) => ApiError::Unauthorized,
        Err(retry_after) => ApiError::RateLimited { retry_after },
    }
}

/// Extractor for API routes that need a signed-in caller: `401 unauthorized`, or `429
/// rate_limited` once the client has failed too often (see [`refuse_credentials`]).
pub struct Authenticated(pub Identity);

impl FromRequestParts<AppState> for Authenticated {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        // The client address first: the failure budget is per client.
        let ClientIp(ip) = ClientIp::from_request_parts(parts, state).await?;
        authenticate(state, &parts.headers, Some(ip), parts.uri.path()).map(Authenticated)
    }
}

/// The caller named by a request's bearer token, or the refusal of
/// [`refuse_credentials`] (logged as a security event under the client's address, with
/// the path, never the token).
///
/// `ip` is `None` only for a client a trusted proxy left unknown, which only `/metrics`
/// lets through (every other route refuses it `400`): it gets `401` and spends no
/// budget, since it has no address of its own and must not spend a real client's.
pub fn authenticate(
    state: &AppState,
    headers: &HeaderMap,
    ip: Option<IpAddr>,
    path: &str,
) -> Result<Identity, ApiError> {
    let verdict = match bearer_token(headers) {
        Ok(Some(token)) => state.auth.verify(token).map_err(CredentialRejection::from),
        Ok(None) => Err(CredentialRejection::Missing),
        Err(MalformedAuthorization) => Err(CredentialRejection::MalformedAuthorization),
    };
    verdict.map_err(|rejection| {
        let error = match ip {
            Some(ip) => refuse_credentials(state, ip, rejection),
            None => ApiError::Unauthorized,
        };
        if state.security_log.admit(ip, "auth_rejected") {
            let ip = ip.map_or_else(|| "unknown".to_owned(), |ip| ip.to_string());
            tracing::warn!(target: "security", event = "auth_rejected", %ip, %path,
                reason = rejection.as_str(), answer = %error.code());
        }
        error
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn authenticator() -> Authenticator {
        Authenticator::new(jwt::random_keys(), Revocations::default())
    }

    fn bob() -> UserRef {
        UserRef {
            id: "u-bob".into(),
            name: "bob".into(),
        }
    }

    #[test]
    fn a_disabled_user_s_tokens_are_refused_whenever_issued_until_enabled() {
        let auth = authenticator();
        let before = auth.issue(&bob(), Role::User).unwrap().token;
        // A ban dated in the past: tokens issued after it are refused by the ban alone.
        auth.revocations()
            .disable("u-bob", crate::model::now_secs() - 60);
        let after = auth.issue(&bob(), Role::User).unwrap().token;
        for token in [&before, &after] {
            assert!(matches!(auth.verify(token), Err(TokenRejection::Disabled)));
        }
        auth.revocations().enable("u-bob");
        assert!(auth.verify(&after).is_ok());
    }

    #[test]
    fn only_tokens_out_of_date_are_out_of_date_rejections() {
        use CredentialRejection::{Missing, TicketInvalid, Token};
        assert!(Token(TokenRejection::Expired).is_out_of_date());
        assert!(Token(TokenRejection::Immature).is_out_of_date());
        for other in [
            Missing,
            TicketInvalid,
            CredentialRejection::MalformedAuthorization,
            Token(TokenRejection::BadSignature),
            Token(TokenRejection::Revoked),
            Token(TokenRejection::IssuedInFuture),
        ] {
            assert!(!other.is_out_of_date(), "{other:?}");
        }
    }

    #[test]
    fn renewal_takes_the_role_it_is_given_not_the_old_token_s() {
        let auth = authenticator();
        let admin = auth.issue(&bob(), Role::Admin).unwrap().token;
        let identity = auth.verify(&admin).unwrap();
        assert_eq!(identity.role, Role::Admin);
        let renewed = auth.renew(&identity, &bob(), Role::User).unwrap().token;
        assert_eq!(auth.verify(&renewed).unwrap().role, Role::User);
    }
}
