//! The WebSocket side: handshake checks, the per-connection session, and what bounds it.
//!
//! - [`handshake`]: `GET /ws`, every check of the contract answered before the upgrade;
//!   [`upgrade`]: the upgrade itself, onto [`batched_io`], which holds a connection's
//!   outgoing batch and nothing between batches.
//! - [`session`]: the one task of a connection: reads client frames and acts on them,
//!   drives its writer, keeps its deadlines; [`sends`]: its sends waiting for their
//!   commit, answered in order.
//! - [`writer`]: the write half the session polls: drains its [`Outbox`] to the socket,
//!   in batches, long frames as fragments, with the heartbeat pings and the close frame.
//! - [`occupancy`]: the counts of rooms too big for per-user presence.
//! - [`protocol`]: the frame types; [`close`]: the close codes; [`limits`]: caps and rates.
//!
//! The outbound queue, its close signal and the serialised frame are the core's
//! ([`crate::hub`]): the hub and the broker fill queues without knowing this layer, and
//! this layer turns what they hold into WebSocket messages and close codes.
//!
//! [`Outbox`]: crate::hub::outbox::Outbox

pub(crate) mod batched_io;
pub mod close;
pub mod handshake;
pub mod limits;
pub mod occupancy;
pub mod protocol;
pub mod registry;
pub(crate) mod sends;
pub mod session;
pub(crate) mod shared_caps;
pub mod upgrade;
pub mod writer;
