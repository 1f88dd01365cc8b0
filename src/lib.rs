//! palisade: a secure real-time chat server.
//!
//! One axum service speaking the protocol of `docs/protocol.md`: an HTTP API for
//! accounts and tickets, and a WebSocket endpoint for rooms, history, presence and typing.
//!
//! # Map of the crate
//!
//! - [`config`]: settings, layered from defaults, `Secrets.toml`, env and flags.
//! - [`dev_secret`]: development mode's JWT secret, kept in the data directory.
//! - [`startup`]: [`startup::Application`] builds everything and runs until stopped.
//! - [`bare_errors`]: gives hyper's own parse-error answers the JSON body and headers.
//! - [`outgoing`]: bytes an IO adapter holds (that one, `ws::batched_io`), written out
//!   across as many polls as the socket needs.
//! - [`server`], [`tls`]: the accept loop (plain or TLS, HTTP/1.1): header deadlines, a
//!   write-stall limit under every socket, and caps on connections still without a request;
//!   the TLS certificate is read again on SIGHUP or when its files change.
//! - [`shutdown`]: the one stop signal every task listens to.
//! - `shuttle` (feature `shuttle`): the same application as a Shuttle service, for
//!   `cargo shuttle run`.
//! - [`error`]: the HTTP error type and its JSON body.
//! - [`auth`]: JWTs, single-use tickets, accounts (Argon2id). It knows nothing of
//!   [`config`] or [`state`]: both build on it, never the reverse.
//! - [`http`]: the HTTP routes, one module per resource; [`http::caller`] is the
//!   signed-in caller, where authentication meets the server's state.
//! - [`ws`]: handshake checks, the session (one task per connection, reading and writing),
//!   its writer, frames, close codes, limits.
//! - [`hub`]: rooms and members on this node; fans events out to bounded outboxes
//!   ([`hub::outbox`]), which close a connection for a [`hub::outbox::CloseReason`] that
//!   `ws` maps to a close code. A [`hub::Frame`] is a server frame serialised once.
//! - [`cluster`]: in cluster mode, tells every node of a revocation or ban made on one.
//! - [`shared_rates`]: per-IP rate limits (login, register, tickets, refused
//!   credentials), counted on every node together in cluster mode.
//! - [`broker`]: stores and publishes a message as one step (in memory for one node), and
//!   subscribes and unsubscribes this node's connections to rooms, deciding whether a
//!   join or leave is announced (in cluster mode from presence kept in Redis, with
//!   expiring entries, so a user is announced once across nodes).
//! - [`store`]: durable accounts and history (SQLite by default, PostgreSQL for a
//!   cluster); group-commits sends and announces each committed message, in `seq`
//!   order, to the broker's hook.
//! - [`origin`], [`client_ip`]: who is asking, from where.
//! - [`security_log`]: throttles repeated security events ("N more like this").
//! - [`stats`]: Prometheus metrics served at `/metrics`.
//! - [`load`]: how busy the server is; writers gather frames only while it is.
//! - [`model`]: data and value rules shared by all of the above.
//!
//! A message's path: the session validates a `send`, the broker gives it to the store,
//! the store commits it with others (giving it its `seq`) and calls the broker's hook,
//! which hands it to the hub; the hub queues the once-serialised frame in every member's
//! outbox, the sender gets its ack, and each connection's writer flushes its queue.
//! A join goes the same way round: the session subscribes through the broker, which
//! registers it in the hub (and, across nodes, would subscribe the node to the room),
//! reads the room's snapshot, then the broker has the hub queue `joined` and what was
//! published meanwhile.
//!
//! The layers: `ws` and `http` are the transport and know the core; the core (`hub`,
//! its outboxes and frames, `broker`, `store`) knows neither, so nothing in it names a
//! WebSocket type or close code.
#![forbid(unsafe_code)]
// Only what an embedder or the tests need is public (`startup`, `config` and what their
// types name); everything else is `pub(crate)` at most, so the compiler reports code
// nothing uses instead of assuming someone outside might.
#![warn(unreachable_pub)]

pub mod auth;
mod bare_errors;
mod broker;
mod client_ip;
mod cluster;
pub mod config;
mod dev_secret;
mod error;
mod http;
mod hub;
mod load;
pub mod model;
pub mod origin;
mod outgoing;
mod security_log;
mod server;
mod shared_rates;
pub mod shutdown;
#[cfg(feature = "shuttle")]
pub mod shuttle;
pub mod startup;
mod state;
mod stats;
pub mod store;
pub mod telemetry;
mod tls;
pub mod ws;
