//! The live connections of each user, so an admin's revocation can close them all, and
//! the shutdown every connection: through its close signal, which the connection's task
//! watches anyway, rather than a second wait on the process-wide signal that every
//! connection would take a shared lock to poll whenever it wakes.

use crate::hub::ConnId;
use crate::hub::outbox::{CloseReason, Closer};
use dashmap::DashMap;
use std::sync::Arc;

#[derive(Default)]
pub struct LiveConnections {
    by_user: DashMap<String, Vec<(ConnId, Closer)>>,
}

/// A connection's entry; removed when dropped.
pub struct Registration {
    registry: Arc<LiveConnections>,
    user: String,
    conn: ConnId,
}

impl LiveConnections {
    pub fn register(self: &Arc<Self>, user: &str, conn: ConnId, closer: Closer) -> Registration {
        self.by_user
            .entry(user.to_owned())
            .or_default()
            .push((conn, closer));
        Registration {
            registry: Arc::clone(self),
            user: user.to_owned(),
            conn,
        }
    }

    /// Closes every connection of the user for `reason`; how many there were.
    pub fn close_user(&self, user: &str, reason: CloseReason) -> usize {
        self.by_user.get(user).map_or(0, |connections| {
            for (_, closer) in connections.iter() {
                closer.close(reason);
            }
            connections.len()
        })
    }
}

impl LiveConnections {
    /// Closes every live connection for `reason`; how many there were.
    pub fn close_all(&self, reason: CloseReason) -> usize {
        self.by_user
            .iter()
            .map(|connections| {
                for (_, closer) in connections.iter() {
                    closer.close(reason);
                }
                connections.len()
            })
            .sum()
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        if let Some(mut connections) = self.registry.by_user.get_mut(&self.user) {
            connections.retain(|(conn, _)| *conn != self.conn);
        }
        self.registry
            .by_user
            .remove_if(&self.user, |_, connections| connections.is_empty());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn closing_a_user_closes_each_of_their_live_connections_only() {
        let registry = Arc::new(LiveConnections::default());
        let a1 = Closer::new();
        let a2 = Closer::new();
        let b = Closer::new();
        let _r1 = registry.register("a", 1, a1.clone());
        let r2 = registry.register("a", 2, a2.clone());
        let _r3 = registry.register("b", 3, b.clone());
        drop(r2);
        assert_eq!(registry.close_user("a", CloseReason::Revoked), 1);
        assert_eq!(a1.reason(), CloseReason::Revoked);
        assert!(!a2.is_closed() && !b.is_closed());
        assert_eq!(registry.close_user("nobody", CloseReason::Revoked), 0);
    }

    #[test]
    fn closing_all_closes_every_live_connection() {
        let registry = Arc::new(LiveConnections::default());
        let (a, b, gone) = (Closer::new(), Closer::new(), Closer::new());
        let _ra = registry.register("a", 1, a.clone());
        let _rb = registry.register("b", 2, b.clone());
        drop(registry.register("b", 3, gone.clone()));
        assert_eq!(registry.close_all(CloseReason::ServerShutdown), 2);
        assert_eq!(a.reason(), CloseReason::ServerShutdown);
        assert_eq!(b.reason(), CloseReason::ServerShutdown);
        assert!(!gone.is_closed());
    }
}
