//! Black-box tests: each starts the real server on port 0 and talks to it over HTTP and
//! WebSocket, asserting only what a client can see.

mod amplification;
mod chat;
mod durability;
mod error_responses;
mod external_issuers;
mod frame_size;
mod handshake;
mod hardening;
mod helpers;
mod http_api;
mod lifecycle;
mod metrics;
mod production_config;
mod protocol_violations;
mod rights;
mod security_log;
mod text_spoofing;
mod transport;
