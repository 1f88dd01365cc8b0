//! Who is calling an HTTP route: the bearer-token extractor and the caller's current
//! role.
//!
//! These need the server's state (the authenticator, the failure budget, the store), so
//! they live on the HTTP side rather than in [`crate::auth`], which knows nothing of the
//! state: the dependency points one way, state → auth, and http → both.

use crate::auth::jwt::Minter;
use crate::auth::{
    CredentialRejection, Identity, MalformedAuthorization, accounts, bearer_token,
    refuse_credentials,
};
use crate::client_ip::ClientIp;
use crate::error::ApiError;
use crate::model::Role;
use crate::state::AppState;
use axum::extract::FromRequestParts;
use axum::http::HeaderMap;
use axum::http::request::Parts;
use std::net::IpAddr;

/// The caller's role now: for palisade's own tokens the account's current role (so an
/// admin removed by the operator loses the rights at once, and a deleted account has
/// none); for an external issuer's tokens the `role` claim that issuer signed.
pub(crate) async fn current_role(state: &AppState, identity: &Identity) -> Result<Role, ApiError> {
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

/// Extractor for API routes that need a signed-in caller: `401 unauthorized`, or `429
/// rate_limited` once the client has failed too often (see [`refuse_credentials`]).
pub(crate) struct Authenticated(pub Identity);

impl FromRequestParts<AppState> for Authenticated {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        // The client address first: the failure budget is per client.
        let ClientIp(ip) = ClientIp::from_request_parts(parts, state).await?;
        authenticate(state, &parts.headers, Some(ip), parts.uri.path())
            .await
            .map(Authenticated)
    }
}

/// The caller named by a request's bearer token, or the refusal of
/// [`refuse_credentials`] (logged as a security event under the client's address, with
/// the path, never the token).
///
/// `ip` is `None` only for a client a trusted proxy left unknown, which only `/metrics`
/// lets through (every other route refuses it `400`): it gets `401` and spends no
/// budget, since it has no address of its own and must not spend a real client's.
pub(crate) async fn authenticate(
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
    let rejection = match verdict {
        Ok(identity) => return Ok(identity),
        Err(rejection) => rejection,
    };
    if !rejection.is_out_of_date() {
        crate::stats::auth_failed("http");
    }
    let error = match ip {
        Some(ip) => refuse_credentials(rejection, || state.auth_failures.check(ip)).await,
        None => ApiError::Unauthorized,
    };
    if state.security_log.admit(ip, "auth_rejected") {
        let ip = ip.map_or_else(|| "unknown".to_owned(), |ip| ip.to_string());
        tracing::warn!(target: "security", event = "auth_rejected", %ip, %path,
            reason = rejection.as_str(), answer = %error.code());
    }
    Err(error)
}
