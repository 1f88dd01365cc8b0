//! `GET /metrics`: Prometheus text, for an admin token or a loopback client.
//!
//! Behind a reverse proxy on the same machine, list the proxy in
//! `PALISADE_TRUSTED_PROXIES`: otherwise every request through it looks like loopback.
//! A request whose client the trusted proxy leaves unknown is not loopback: it needs
//! the admin token like any other.

use crate::client_ip::ClientIp;
use crate::error::ApiError;
use crate::http::caller::{authenticate, current_role};
use crate::http::health::Readiness;
use crate::model::Role;
use crate::state::AppState;
use crate::stats;
use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, header};
use axum::response::IntoResponse;
use axum::routing::get;

pub(crate) fn router() -> Router<AppState> {
    Router::new().route("/metrics", get(metrics))
}

async fn metrics(
    State(state): State<AppState>,
    client: Result<ClientIp, ApiError>,
    headers: HeaderMap,
) -> Result<impl IntoResponse, ApiError> {
    let loopback = matches!(client, Ok(ClientIp(ip)) if ip.is_loopback());
    if !loopback {
        let client = client.ok().map(|ClientIp(ip)| ip);
        let identity = authenticate(&state, &headers, client, "/metrics").await?;
        let ip = client.map_or_else(|| "unknown".to_owned(), |ip| ip.to_string());
        if current_role(&state, &identity).await? != Role::Admin {
            tracing::warn!(target: "security", event = "metrics_forbidden", %ip, user = %identity.user.id);
            return Err(ApiError::Forbidden);
        }
    }
    stats::outbound_queued(state.outbound.queued());
    let limits = &state.settings.limits;
    stats::caps(limits.max_connections, limits.max_pending_connections);
    stats::ready(Readiness::check(&state).await.is_ready());
    Ok((
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        stats::render(),
    ))
}
