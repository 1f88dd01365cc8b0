//! Counts for big rooms: once per `--presence-count-ms`, every room whose joins and
//! leaves were counted rather than announced gets one `occupancy` frame, encoded once
//! and shared by all its members, however many joined or left meanwhile. In cluster
//! mode the count is the cluster's (asked of the broker for those rooms at once), and a
//! node sends one for the changes it saw: its own members' joins and leaves, and the
//! users its sweep removed.

use super::protocol::ServerFrame;
use crate::broker::{Broker, encode};
use crate::hub::{Hub, RoomEvent};
use crate::shutdown::Shutdown;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::{MissedTickBehavior, interval};

pub async fn run(hub: Arc<Hub>, broker: Arc<dyn Broker>, every: Duration, shutdown: Shutdown) {
    let mut ticks = interval(every.max(Duration::from_millis(1)));
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.triggered() => break,
            _ = ticks.tick() => {
                let changed = hub.take_counts();
                if changed.is_empty() {
                    continue;
                }
                for (room, online) in broker.counts(changed).await {
                    let frame = encode(&ServerFrame::Occupancy { room: &room, online });
                    hub.dispatch(&room, &RoomEvent::Count { frame });
                }
            }
        }
    }
}
