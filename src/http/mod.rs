//! The HTTP side: one module per resource, each with its own `router()`, assembled here
//! with the layers every response gets (security headers, CORS on `/api`, body limit,
//! JSON errors for unknown paths and methods). Error answers that do not come from an
//! [`ApiError`] (a missing static file, a method a route lacks, an extractor's
//! rejection) get the same JSON error body on their way out; hyper's own answers to
//! requests it cannot parse are rewritten on the socket by [`crate::bare_errors`].

pub(crate) mod accounts;
pub(crate) mod admin;
pub(crate) mod caller;
pub(crate) mod health;
pub(crate) mod metrics;
pub(crate) mod rooms;
pub(crate) mod tickets;

use crate::error::ApiError;
use crate::security_log::SecurityLog;
use crate::shared_rates::IpBudget;
use crate::state::AppState;
use crate::ws;
use axum::Router;
use axum::body::Body;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderName, HeaderValue, Method, Request, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use governor::DefaultDirectRateLimiter;
use governor::clock::{Clock, DefaultClock};
use std::net::IpAddr;
use std::time::Duration;
use tower::{ServiceBuilder, ServiceExt};
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::services::ServeDir;
use tower_http::trace::{DefaultOnFailure, TraceLayer};

/// The Content-Security-Policy of every response: only this origin's scripts, styles,
/// images and sockets; never framed.
pub(crate) const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; connect-src 'self'; img-src 'self' data:; \
     object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// The headers every response carries, error answers written below axum included.
pub(crate) const SECURITY_HEADERS: [(HeaderName, &str); 4] = [
    (header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY),
    (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
    (header::REFERRER_POLICY, "no-referrer"),
    (header::X_FRAME_OPTIONS, "DENY"),
];

/// Strict-Transport-Security: only sent over TLS, where it cannot be stripped on the way
/// and where promising HTTPS for two years is true.
pub(crate) const HSTS: (HeaderName, &str) = (
    header::STRICT_TRANSPORT_SECURITY,
    "max-age=63072000; includeSubDomains",
);

/// What every response carries: the [`SECURITY_HEADERS`], and [`HSTS`] when the server
/// speaks TLS. The one list for the router's answers and those written below axum.
pub(crate) fn security_headers(tls: bool) -> impl Iterator<Item = (HeaderName, &'static str)> {
    SECURITY_HEADERS.into_iter().chain(tls.then_some(HSTS))
}

pub(crate) fn router(state: AppState) -> Router {
    let api = Router::new()
        .merge(accounts::router())
        .merge(tickets::router())
        .merge(rooms::router())
        .merge(admin::router())
        .fallback(|| async { ApiError::NotFound })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .layer(DefaultBodyLimit::max(state.settings.limits.api_body_bytes))
        // A declared `Content-Length` over the limit is refused before the body is read,
        // so a client that asks `Expect: 100-continue` gets its 413 at once instead of an
        // invitation to send megabytes (then a 408 when it does not).
        .layer(RequestBodyLimitLayer::new(
            state.settings.limits.api_body_bytes,
        ))
        .layer(middleware::from_fn_with_state(
            Duration::from_secs(state.settings.limits.request_timeout_secs),
            time_limit,
        ))
        .layer(cors(&state));

    let tls = state.settings.tls.is_some();
    Router::new()
        .nest("/api", api)
        .merge(health::router())
        .merge(metrics::router())
        .route("/ws", get(ws::handshake::upgrade))
        .fallback(static_file)
        .layer(
            ServiceBuilder::new()
                .layer(
                    // Only the path: the query string may hold a token or ticket.
                    TraceLayer::new_for_http()
                        .make_span_with(|request: &Request<_>| {
                            tracing::debug_span!("http", method = %request.method(), path = %request.uri().path())
                        })
                        // Not ERROR per 5xx: `ApiError::Internal` logs its own detail, and a
                        // line for every 503 (an unready node, a full disk) would let
                        // clients flood the log.
                        .on_failure(DefaultOnFailure::new().level(tracing::Level::DEBUG)),
                )
                .layer(middleware::map_response_with_state(tls, secure_response)),
        )
        .with_state(state)
}

/// The longest path, and path segment, a file of the web client can have. Longer ones
/// are `404` at once: the file system would answer "file name too long", which
/// `ServeDir` turns into a `500` and an error line per request (a log flood).
const MAX_STATIC_PATH_BYTES: usize = 1024;
const MAX_STATIC_SEGMENT_BYTES: usize = 255;

/// The web client's files, from `frontend_dir`.
async fn static_file(State(state): State<AppState>, request: Request<Body>) -> Response {
    let path = request.uri().path();
    if path.len() > MAX_STATIC_PATH_BYTES
        || path
            .split('/')
            .any(|segment| segment.len() > MAX_STATIC_SEGMENT_BYTES)
    {
        return ApiError::NotFound.into_response();
    }
    match ServeDir::new(&state.settings.frontend_dir)
        .oneshot(request)
        .await
    {
        Ok(response) => response.into_response(),
        Err(never) => match never {},
    }
}

/// Answers `408 request_timeout` when an API request takes longer than allowed.
async fn time_limit(State(limit): State<Duration>, request: Request<Body>, next: Next) -> Response {
    match tokio::time::timeout(limit, next.run(request)).await {
        Ok(response) => response,
        Err(_) => ApiError::RequestTimeout.into_response(),
    }
}

/// Adds the [`security_headers`] a handler did not set (HSTS when `tls`), and gives an
/// error answer that is not JSON yet (from `ServeDir`, axum's own 405, an extractor's
/// rejection) the JSON error body of its status.
async fn secure_response(State(tls): State<bool>, response: Response) -> Response {
    let mut response = if needs_json_error_body(&response) {
        let (mut parts, _) = response.into_parts();
        parts.headers.remove(header::CONTENT_LENGTH);
        parts.headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        let body = crate::error::body_for_status(parts.status);
        Response::from_parts(parts, Body::from(body))
    } else {
        response
    };
    let headers = response.headers_mut();
    for (name, value) in security_headers(tls) {
        if !headers.contains_key(&name) {
            headers.insert(name, HeaderValue::from_static(value));
        }
    }
    response
}

fn needs_json_error_body(response: &Response) -> bool {
    let status = response.status();
    (status.is_client_error() || status.is_server_error())
        && !response
            .headers()
            .get(header::CONTENT_TYPE)
            .is_some_and(|t| t.as_bytes().starts_with(b"application/json"))
}

/// Browsers may call the API only from the allowed origins.
fn cors(state: &AppState) -> CorsLayer {
    let policy = state.settings.origins.clone();
    CorsLayer::new()
        .allow_origin(AllowOrigin::predicate(move |origin, _| {
            origin.to_str().is_ok_and(|o| policy.allows(Some(o)))
        }))
        .allow_methods([Method::GET, Method::POST])
        .allow_headers([header::AUTHORIZATION, header::CONTENT_TYPE])
        .max_age(Duration::from_secs(600))
}

/// Spends one request of a per-IP budget (the cluster's too, in cluster mode), or says
/// how long to wait.
pub(crate) async fn per_ip_rate(
    limiter: &IpBudget,
    log: &SecurityLog,
    ip: IpAddr,
    what: &'static str,
) -> Result<(), ApiError> {
    limiter.check(ip).await.map_err(|retry_after| {
        crate::stats::http_rate_limited(what, "ip");
        if log.admit(ip, "rate_limited") {
            tracing::warn!(target: "security", event = "rate_limited", %ip, endpoint = what);
        }
        ApiError::RateLimited { retry_after }
    })
}

/// Spends one request of a server-wide budget, or says how long to wait.
pub(crate) fn global_rate(
    limiter: &DefaultDirectRateLimiter,
    log: &SecurityLog,
    ip: IpAddr,
    what: &'static str,
) -> Result<(), ApiError> {
    limiter.check().map_err(|not_until| {
        crate::stats::http_rate_limited(what, "global");
        if log.admit(ip, "rate_limited") {
            tracing::warn!(target: "security", event = "rate_limited", scope = "global", %ip, endpoint = what);
        }
        ApiError::RateLimited {
            retry_after: not_until.wait_time_from(DefaultClock::default().now()),
        }
    })
}
