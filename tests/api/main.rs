//! Black-box tests: each starts the real server on port 0 and talks to it over HTTP and
//! WebSocket, asserting only what a client can see.

mod chat;
mod disk_faults;
mod durability;
mod external_issuers;
mod handshake;
mod hardening;
mod helpers;
mod http_api;
mod lifecycle;
mod metrics;
mod protocol_violations;
mod security_log;
mod transport;
