//! Who is asking: JWTs, single-use WebSocket tickets and accounts.
//!
//! Every path in (HTTP bearer token, WebSocket header, ticket or query token, `refresh`)
//! ends in the same [`Identity`], checked by one [`Authenticator`]: signature, algorithm,
//! time claims, revocation and disabled accounts, so one set of checks guards them all.

pub(crate) mod accounts;
pub mod jwt;
pub(crate) mod passwords;
pub(crate) mod revocation;
pub(crate) mod tickets;

use jwt::{IssuedToken, JwtKeys, Minter, TokenRejection};
use revocation::Revocations;

use crate::error::ApiError;
use crate::model::{Role, UserRef, room_allowed};
use axum::http::HeaderMap;
use axum::http::header::AUTHORIZATION;
use std::time::Duration;

/// A verified caller, as taken from a token's claims. Serialised only for a ticket kept
/// in Redis (cluster mode), so any node can redeem it.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
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
///
/// `spend` takes one unit from the client's budget (`Err` with the wait once it is
/// spent): the caller's per-IP limiter, so this module needs no server state.
pub async fn refuse_credentials<Spent>(
    rejection: CredentialRejection,
    spend: impl FnOnce() -> Spent,
) -> ApiError
where
    Spent: Future<Output = Result<(), Duration>>,
{
    if rejection.is_out_of_date() {
        return ApiError::Unauthorized;
    }
    match spend().await {
        Ok(()) => ApiError::Unauthorized,
        Err(retry_after) => ApiError::RateLimited { retry_after },
    }
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
