//! The one error type of the HTTP side and how it becomes a response.
//!
//! Every error body is `{"error":{"code","message"}}`, built by [`error_body`] alone:
//! from an [`ApiError`] a handler returns, from a bare status something else answered
//! with ([`ApiError::for_status`]), and for `/readyz`. Internal failures are logged with
//! their detail and answered with a generic `500 internal`: no SQL, path or panic text
//! ever reaches a client.

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, Request};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use std::borrow::Cow;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    #[error("username must be 3 to 32 letters, digits or underscores")]
    InvalidUsername,
    #[error("password must be 8 to 128 characters")]
    WeakPassword,
    #[error("missing or invalid credentials")]
    Unauthorized,
    #[error("wrong username or password")]
    InvalidCredentials,
    #[error("this origin may not open a connection here")]
    OriginForbidden,
    #[error("you may not do that")]
    Forbidden,
    #[error("this account is disabled")]
    AccountDisabled,
    #[error("this token was issued by another app: ask that app for a new one")]
    NotRenewable,
    #[error("the request took too long")]
    RequestTimeout,
    #[error("no such resource")]
    NotFound,
    #[error("method not allowed")]
    MethodNotAllowed,
    #[error("that username is taken")]
    UsernameTaken,
    #[error("request body too large")]
    PayloadTooLarge,
    #[error("the request URI is too long")]
    UriTooLong,
    #[error("the request has too many headers or too large ones")]
    HeadersTooLarge,
    #[error("expected a JSON body (Content-Type: application/json)")]
    UnsupportedMediaType,
    #[error("too many requests, try again later")]
    RateLimited { retry_after: Duration },
    #[error("too many open connections, try again later")]
    TooManyConnections { retry_after: Duration },
    #[error("the server is not accepting connections right now")]
    Unavailable,
    /// Too busy to take this request now; the same `unavailable` code, with `Retry-After`.
    #[error("the server is busy, try again shortly")]
    Busy { retry_after: Duration },
    /// The store cannot write right now (full or read-only disk): nothing was saved.
    #[error("the server cannot save this right now, try again shortly")]
    StoreUnavailable,
    #[error("this endpoint speaks WebSocket only")]
    UpgradeRequired,
    #[error("internal error: {0}")]
    Internal(Box<dyn std::error::Error + Send + Sync>),
    /// An error status no other variant names (a range a static file cannot serve, an
    /// HTTP version hyper does not speak): its code and message are its reason.
    #[error("{}", .0.canonical_reason().unwrap_or("error").to_lowercase())]
    Status(StatusCode),
}

impl ApiError {
    pub fn internal(error: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        ApiError::Internal(error.into())
    }

    /// A store error: `503 unavailable` (retry later) when the store cannot write,
    /// else `500 internal`.
    pub fn store(error: crate::store::StoreError) -> Self {
        if error.is_unavailable() {
            // The store logs once when it stops writing; a log line per request would
            // flood the log for as long as the disk is full.
            tracing::debug!(%error, "a write was refused: the store cannot write");
            ApiError::StoreUnavailable
        } else {
            ApiError::internal(error)
        }
    }

    /// The error for an error status written by something other than a handler (a
    /// missing static file, a method no route takes, an extractor's rejection, hyper's
    /// own answer to a request it cannot parse), so its body says what an [`ApiError`]
    /// of that status says.
    pub fn for_status(status: StatusCode) -> ApiError {
        match status {
            StatusCode::BAD_REQUEST => ApiError::BadRequest("the request is malformed".to_owned()),
            StatusCode::UNAUTHORIZED => ApiError::Unauthorized,
            StatusCode::FORBIDDEN => ApiError::Forbidden,
            StatusCode::NOT_FOUND => ApiError::NotFound,
            StatusCode::METHOD_NOT_ALLOWED => ApiError::MethodNotAllowed,
            StatusCode::REQUEST_TIMEOUT => ApiError::RequestTimeout,
            StatusCode::PAYLOAD_TOO_LARGE => ApiError::PayloadTooLarge,
            StatusCode::URI_TOO_LONG => ApiError::UriTooLong,
            StatusCode::UNSUPPORTED_MEDIA_TYPE => ApiError::UnsupportedMediaType,
            StatusCode::UPGRADE_REQUIRED => ApiError::UpgradeRequired,
            StatusCode::TOO_MANY_REQUESTS => ApiError::RateLimited {
                retry_after: Duration::ZERO,
            },
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE => ApiError::HeadersTooLarge,
            StatusCode::INTERNAL_SERVER_ERROR => {
                ApiError::internal("an error answer from below the handlers")
            }
            StatusCode::SERVICE_UNAVAILABLE => ApiError::Unavailable,
            other => ApiError::Status(other),
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::Status(status) => *status,
            ApiError::BadRequest(_) | ApiError::InvalidUsername | ApiError::WeakPassword => {
                StatusCode::BAD_REQUEST
            }
            ApiError::Unauthorized | ApiError::InvalidCredentials => StatusCode::UNAUTHORIZED,
            ApiError::OriginForbidden
            | ApiError::Forbidden
            | ApiError::AccountDisabled
            | ApiError::NotRenewable => StatusCode::FORBIDDEN,
            ApiError::RequestTimeout => StatusCode::REQUEST_TIMEOUT,
            ApiError::NotFound => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::UsernameTaken => StatusCode::CONFLICT,
            ApiError::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UriTooLong => StatusCode::URI_TOO_LONG,
            ApiError::HeadersTooLarge => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            ApiError::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::RateLimited { .. } | ApiError::TooManyConnections { .. } => {
                StatusCode::TOO_MANY_REQUESTS
            }
            ApiError::Unavailable | ApiError::Busy { .. } | ApiError::StoreUnavailable => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            ApiError::UpgradeRequired => StatusCode::UPGRADE_REQUIRED,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The stable, documented `code` of the error body.
    pub fn code(&self) -> Cow<'static, str> {
        let code = match self {
            ApiError::Status(status) => return Cow::Owned(snake_case_reason(*status)),
            ApiError::BadRequest(_) => "bad_request",
            ApiError::InvalidUsername => "invalid_username",
            ApiError::WeakPassword => "weak_password",
            ApiError::Unauthorized => "unauthorized",
            ApiError::InvalidCredentials => "invalid_credentials",
            ApiError::OriginForbidden => "origin_forbidden",
            ApiError::Forbidden => "forbidden",
            ApiError::AccountDisabled => "account_disabled",
            ApiError::NotRenewable => "not_renewable",
            ApiError::RequestTimeout => "request_timeout",
            ApiError::NotFound => "not_found",
            ApiError::MethodNotAllowed => "method_not_allowed",
            ApiError::UsernameTaken => "username_taken",
            ApiError::PayloadTooLarge => "payload_too_large",
            ApiError::UriTooLong => "uri_too_long",
            ApiError::HeadersTooLarge => "request_header_fields_too_large",
            ApiError::UnsupportedMediaType => "unsupported_media_type",
            ApiError::RateLimited { .. } => "rate_limited",
            ApiError::TooManyConnections { .. } => "too_many_connections",
            ApiError::Unavailable | ApiError::Busy { .. } | ApiError::StoreUnavailable => {
                "unavailable"
            }
            ApiError::UpgradeRequired => "upgrade_required",
            ApiError::Internal(_) => "internal",
        };
        Cow::Borrowed(code)
    }

    /// What the client is told: never an internal error's detail.
    pub fn message(&self) -> String {
        match self {
            ApiError::Internal(_) => "something went wrong on our side".to_owned(),
            other => other.to_string(),
        }
    }

    /// The JSON error body.
    pub fn body(&self) -> Value {
        error_body(&self.code(), &self.message())
    }
}

/// The one shape of every error body: `{"error":{"code","message"}}`. Callers may add
/// fields beside `error` (`/readyz` says which dependency is down).
pub(crate) fn error_body(code: &str, message: &str) -> Value {
    json!({"error": {"code": code, "message": message}})
}

/// A status's reason in snake_case (`Range Not Satisfiable` → `range_not_satisfiable`).
fn snake_case_reason(status: StatusCode) -> String {
    status
        .canonical_reason()
        .unwrap_or("error")
        .chars()
        .filter_map(|c| match c {
            'A'..='Z' => Some(c.to_ascii_lowercase()),
            ' ' | '-' => Some('_'),
            c if c.is_ascii_alphanumeric() => Some(c),
            _ => None,
        })
        .collect()
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if let ApiError::Internal(detail) = &self {
            tracing::error!(error = %detail, "internal error");
        }
        let mut response = (self.status(), Json(self.body())).into_response();
        let retry_after = match &self {
            ApiError::RateLimited { retry_after }
            | ApiError::TooManyConnections { retry_after }
            | ApiError::Busy { retry_after } => Some(*retry_after),
            ApiError::StoreUnavailable => Some(crate::store::RETRY_AFTER),
            _ => None,
        };
        if let Some(retry_after) = retry_after {
            let secs = retry_after.as_secs_f64().ceil().max(1.0) as u64;
            if let Ok(value) = HeaderValue::from_str(&secs.to_string()) {
                response.headers_mut().insert(header::RETRY_AFTER, value);
            }
        }
        response
    }
}

/// The JSON error body for a bare status, as text (see [`ApiError::for_status`]).
pub(crate) fn body_for_status(status: StatusCode) -> String {
    ApiError::for_status(status).body().to_string()
}

impl From<JsonRejection> for ApiError {
    fn from(rejection: JsonRejection) -> Self {
        match rejection.status() {
            StatusCode::PAYLOAD_TOO_LARGE => ApiError::PayloadTooLarge,
            StatusCode::UNSUPPORTED_MEDIA_TYPE => ApiError::UnsupportedMediaType,
            _ => ApiError::BadRequest(rejection.body_text()),
        }
    }
}

/// `axum::Json` whose rejections are [`ApiError`]s, so bad bodies get the JSON error shape.
pub(crate) struct ApiJson<T>(pub T);

impl<S, T> FromRequest<S> for ApiJson<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let Json(value) = Json::<T>::from_request(req, state).await?;
        Ok(ApiJson(value))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn internal_errors_hide_their_detail() {
        let response =
            ApiError::internal("SELECT * FROM users failed at /srv/db.sqlite").into_response();
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
        let bytes = axum::body::to_bytes(response.into_body(), 4096)
            .await
            .unwrap();
        let text = String::from_utf8_lossy(&bytes);
        assert!(!text.contains("SELECT") && !text.contains("/srv"), "{text}");
        assert!(text.contains("\"code\":\"internal\""), "{text}");
    }

    #[test]
    fn bare_statuses_get_contract_codes_or_their_reason_in_snake_case() {
        let code = |status| ApiError::for_status(status).code().into_owned();
        assert_eq!(code(StatusCode::NOT_FOUND), "not_found");
        assert_eq!(code(StatusCode::SERVICE_UNAVAILABLE), "unavailable");
        assert_eq!(
            code(StatusCode::RANGE_NOT_SATISFIABLE),
            "range_not_satisfiable"
        );
        assert_eq!(
            code(StatusCode::HTTP_VERSION_NOT_SUPPORTED),
            "http_version_not_supported"
        );
        let body: serde_json::Value =
            serde_json::from_str(&body_for_status(StatusCode::URI_TOO_LONG)).unwrap();
        assert_eq!(body["error"]["code"], "uri_too_long");
    }

    #[test]
    fn a_bare_status_says_what_the_api_error_of_that_status_says() {
        for error in [
            ApiError::PayloadTooLarge,
            ApiError::NotFound,
            ApiError::MethodNotAllowed,
            ApiError::UnsupportedMediaType,
            ApiError::RequestTimeout,
            ApiError::Unavailable,
            ApiError::UriTooLong,
            ApiError::HeadersTooLarge,
            ApiError::internal("detail"),
        ] {
            let bare = ApiError::for_status(error.status());
            assert_eq!(bare.status(), error.status());
            assert_eq!(bare.body(), error.body(), "{error:?}");
        }
        for status in [StatusCode::RANGE_NOT_SATISFIABLE, StatusCode::CONFLICT] {
            assert_eq!(ApiError::for_status(status).status(), status);
        }
    }

    #[test]
    fn rate_limits_carry_retry_after() {
        let response = ApiError::RateLimited {
            retry_after: Duration::from_millis(1500),
        }
        .into_response();
        assert_eq!(response.headers()[header::RETRY_AFTER], "2");
    }

    #[test]
    fn a_store_that_cannot_write_is_a_503_to_retry_and_other_store_errors_are_internal() {
        use crate::store::StoreError;
        let response = ApiError::store(StoreError::Unwritable("database or disk is full".into()))
            .into_response();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(response.headers()[header::RETRY_AFTER], "1");
        let other = ApiError::store(StoreError::Database(sqlx::Error::RowNotFound));
        assert_eq!(other.status(), StatusCode::INTERNAL_SERVER_ERROR);
    }
}
