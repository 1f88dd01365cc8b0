//! `/healthz` (the process serves) and `/readyz` (it can do its job: the store answers
//! *and can write*, the broker answers, and it is not draining).
//!
//! A node whose disk is full or read-only still serves reads, but every send and
//! registration on it fails, so readiness includes a write: a load balancer then takes
//! the node out of rotation. The store answers that from its latest write, or from a
//! tiny write probe at most once a second, so polling `/readyz` cannot load the disk.

use crate::error::{ApiError, error_body};
use crate::state::AppState;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{Value, json};

pub(crate) fn router() -> Router<AppState> {
    Router::new()
        .route("/healthz", get(health))
        .route("/readyz", get(ready))
}

async fn health() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

/// What `/readyz` checks; `/metrics` reports the same as `palisade_ready`.
pub(crate) struct Readiness {
    store: bool,
    writable: bool,
    broker: bool,
    draining: bool,
}

impl Readiness {
    pub(crate) async fn check(state: &AppState) -> Self {
        let store = state.store.ping().await.is_ok();
        let writable = match state.store.check_writable().await {
            Ok(()) => true,
            Err(error) => {
                // The store logs when it stops and starts writing; readiness floods must not.
                tracing::debug!(%error, "not ready: the store cannot write");
                false
            }
        };
        let broker = state.broker.ping().await.is_ok();
        Self {
            store,
            writable,
            broker,
            draining: state.shutdown.is_triggered(),
        }
    }

    pub(crate) fn is_ready(&self) -> bool {
        self.store && self.writable && self.broker && !self.draining
    }
}

async fn ready(State(state): State<AppState>) -> (StatusCode, Json<Value>) {
    let readiness = Readiness::check(&state).await;
    if readiness.is_ready() {
        (StatusCode::OK, Json(json!({"status": "ready"})))
    } else {
        // The error body every error has, and which dependency is down beside it.
        let mut body = error_body(&ApiError::Unavailable.code(), "not ready");
        body["store"] = json!(readiness.store);
        body["store_writable"] = json!(readiness.writable);
        body["broker"] = json!(readiness.broker);
        (StatusCode::SERVICE_UNAVAILABLE, Json(body))
    }
}
