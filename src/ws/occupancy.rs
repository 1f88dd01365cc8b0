//! Counts for big rooms: once per `--presence-count-ms`, every room whose joins and
//! leaves were counted rather than announced gets one `occupancy` frame, encoded once
//! and shared by all its members, however many joined or left meanwhile.

use super::protocol::ServerFrame;
use crate::broker::encode;
use crate::hub::{Hub, RoomEvent};
use crate::shutdown::Shutdown;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::{MissedTickBehavior, interval};

pub async fn run(hub: Arc<Hub>, every: Duration, shutdown: Shutdown) {
    let mut ticks = interval(every.max(Duration::from_millis(1)));
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.triggered() => break,
            _ = ticks.tick() => {
                for (room, online) in hub.take_counts() {
                    let frame = encode(&ServerFrame::Occupancy { room: &room, online });
                    hub.dispatch(&room, &RoomEvent::Count { frame });
                }
            }
        }
    }
}
