//! `GET /api/rooms`: rooms with their last `seq` and how many people are online.
//!
//! A room is listed once it has a message or someone in it; a token with a `rooms`
//! claim sees only the rooms it may join. `online` counts every node's users in cluster
//! mode (the broker asks Redis, in one round trip for all rooms).

use crate::error::ApiError;
use crate::http::caller::Authenticated;
use crate::state::AppState;
use crate::store::RoomSummary;
use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;
use std::collections::BTreeMap;

pub(crate) fn router() -> Router<AppState> {
    Router::new().route("/rooms", get(list))
}

#[derive(Serialize)]
struct RoomInfo {
    name: String,
    last_seq: u64,
    online: usize,
}

#[derive(Serialize)]
struct Rooms {
    rooms: Vec<RoomInfo>,
}

async fn list(
    State(state): State<AppState>,
    Authenticated(identity): Authenticated,
) -> Result<Json<Rooms>, ApiError> {
    let mut rooms: BTreeMap<String, RoomInfo> = BTreeMap::new();
    for RoomSummary { name, last_seq } in state.store.rooms().await.map_err(ApiError::internal)? {
        rooms.insert(
            name.clone(),
            RoomInfo {
                name,
                last_seq,
                online: 0,
            },
        );
    }
    for (name, online) in state.broker.occupied_rooms().await {
        rooms
            .entry(name.clone())
            .or_insert(RoomInfo {
                name,
                last_seq: 0,
                online: 0,
            })
            .online = online;
    }
    Ok(Json(Rooms {
        rooms: rooms
            .into_values()
            .filter(|room| identity.may_join(&room.name))
            .collect(),
    }))
}
