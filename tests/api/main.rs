//! Black-box tests: each starts the real server on port 0 and talks to it over HTTP and
//! WebSocket, asserting only what a client can see.

mod abuse_limits;
mod amplification;
mod auth_failures;
mod behind_nginx;
mod big_rooms;
mod certificates;
mod chat;
mod cluster;
mod cluster_faults;
mod configuration;
mod disk_faults;
mod durability;
mod error_responses;
mod external_issuers;
mod frame_size;
mod handshake;
pub(crate) mod hardening;
mod helpers;
mod hot_rooms;
mod http_api;
mod lifecycle;
mod metrics;
mod ping_floods;
mod postgres;
mod private_postgres;
mod production_config;
pub(crate) mod protocol_violations;
mod rights;
mod security_log;
mod shuttle_run;
mod slow_readers;
mod slowloris;
mod socket_lifetime;
// Shared with the store's unit tests, which include the same file: see there.
#[path = "../support/test_database.rs"]
mod test_database;
mod text_spoofing;
mod tickets;
mod transport;
