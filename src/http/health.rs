//! `/healthz` (the process serves) and `/readyz` (its store and broker answer).

use crate::state::AppState;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{Value, json};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/healthz", get(health))
        .route("/readyz", get(ready))
}

async fn health() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

async fn ready(State(state): State<AppState>) -> (StatusCode, Json<Value>) {
    let store = state.store.ping().await.is_ok();
    let broker = state.broker.ping().await.is_ok();
    if store && broker && !state.shutdown.is_triggered() {
        (StatusCode::OK, Json(json!({"status": "ready"})))
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(
                json!({"error": {"code": "unavailable", "message": "not ready"}, "store": store, "broker": broker}),
            ),
        )
    }
}
