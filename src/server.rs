//! Accepting connections: plain TCP or TLS, HTTP/1.1 only, each bounded in time and
//! counted until it upgrades or closes.
//!
//! axum's own `serve` has no header timeout and no TLS, so palisade runs its own accept
//! loop on hyper's HTTP/1 connection (hyper-util's `auto` builder always sniffs for an
//! HTTP/2 preface with no deadline on that read, whatever it is told). Every connection
//! is held to these bounds, so silent, slow and never-reading sockets cannot pile up:
//!
//! - the TLS handshake must finish within the header timeout, and then the headers of
//!   each request too; hyper's header timer starts when the connection is first polled
//!   and again each time a keep-alive connection goes idle, so one byte, an HTTP/2
//!   preface, a silent TLS session and an idle keep-alive connection are all dropped;
//! - a write that makes no progress fails after the write-stall limit ([`stall_io`]),
//!   which also bounds every WebSocket write after an upgrade;
//! - connections that have not upgraded (idle keep-alive ones included) are capped per
//!   client IP and in total ([`pending`]); over a cap, a new connection is closed at once.
//!
//! Every accepted socket gets TCP_NODELAY (small frames should not wait for Nagle), and
//! on shutdown the loop stops accepting and lets open HTTP exchanges finish.

pub(crate) mod pending;
pub(crate) mod stall_io;

use crate::security_log::SecurityLog;
use crate::shutdown::Shutdown;
use crate::state::AppState;
use axum::Router;
use axum::extract::ConnectInfo;
use axum::http::Request;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use pending::{PendingConnections, PendingSlot};
use stall_io::StallIo;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;

/// How long shutdown lets open HTTP exchanges finish.
const HTTP_DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// Most bytes hyper buffers for one connection's request head (and what is read ahead
/// of a body). Its default, about 400 KB, lets every socket still sending its headers
/// hold that much until the header deadline: 256 such sockets took 104 MiB. Real
/// request heads, cookies included, stay far below this; bigger ones get `431`.
const MAX_REQUEST_BUFFER_BYTES: usize = 32 * 1024;

/// The bounds every accepted connection is held to.
#[derive(Clone)]
pub(crate) struct ConnectionBounds {
    pub header_timeout: Duration,
    pub write_stall: Duration,
    pub pending: Arc<PendingConnections>,
    /// The application's security log, so refusals and malformed requests are
    /// throttled with every other security event.
    pub security_log: Arc<SecurityLog>,
}

impl ConnectionBounds {
    pub(crate) fn from_state(state: &AppState) -> Self {
        let settings = &state.settings;
        let limits = &settings.limits;
        Self {
            header_timeout: Duration::from_secs(limits.header_timeout_secs.max(1)),
            write_stall: Duration::from_secs(limits.write_stall_secs.max(1)),
            pending: Arc::new(
                PendingConnections::new(
                    limits.max_pending_connections_per_ip,
                    limits.max_pending_connections,
                    settings.trusted_proxies.clone(),
                )
                .with_ipv6_prefix(limits.ipv6_prefix_len),
            ),
            security_log: Arc::clone(&state.security_log),
        }
    }
}

/// Serves `router` on `listener` until `shutdown` fires.
pub(crate) async fn serve(
    listener: TcpListener,
    router: Router,
    tls: Option<TlsAcceptor>,
    shutdown: Shutdown,
    bounds: ConnectionBounds,
) {
    let connections = TaskTracker::new();
    loop {
        let (tcp, peer) = tokio::select! {
            () = shutdown.triggered() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let slot = match bounds.pending.acquire(peer.ip()) {
            Ok(slot) => slot,
            Err(rejection) => {
                bounds
                    .pending
                    .log_refusal(&bounds.security_log, peer.ip(), rejection);
                continue;
            }
        };
        if let Err(error) = tcp.set_nodelay(true) {
            tracing::debug!(%error, "cannot set TCP_NODELAY");
        }
        let io = StallIo::new(tcp, bounds.write_stall);
        let connection = Connection {
            peer,
            router: router.clone(),
            shutdown: shutdown.clone(),
            header_timeout: bounds.header_timeout,
            slot,
            security_log: Arc::clone(&bounds.security_log),
            tls: tls.is_some(),
        };
        match tls.clone() {
            None => connections.spawn(connection.serve(io)),
            Some(acceptor) => connections.spawn(async move {
                let handshake = acceptor.accept(io);
                match tokio::time::timeout(connection.header_timeout, handshake).await {
                    Ok(Ok(stream)) => connection.serve(stream).await,
                    Ok(Err(error)) => tracing::debug!(%peer, %error, "TLS handshake failed"),
                    Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                }
            }),
        };
    }
    drop(listener);
    connections.close();
    if tokio::time::timeout(HTTP_DRAIN_TIMEOUT, connections.wait())
        .await
        .is_err()
    {
        tracing::debug!("HTTP connections still open after the drain timeout");
    }
}

/// One accepted connection and what serving it needs.
struct Connection {
    peer: SocketAddr,
    router: Router,
    shutdown: Shutdown,
    header_timeout: Duration,
    /// Held until the connection upgrades or closes.
    slot: PendingSlot,
    security_log: Arc<SecurityLog>,
    /// Whether it speaks TLS: its answers then carry HSTS.
    tls: bool,
}

impl Connection {
    async fn serve<I>(self, io: I)
    where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let Self {
            peer,
            router,
            shutdown,
            header_timeout,
            slot,
            security_log,
            tls,
        } = self;
        let service = router.map_request(move |mut request: Request<Incoming>| {
            request.extensions_mut().insert(ConnectInfo(peer));
            request
        });
        let connection = http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(header_timeout)
            .max_buf_size(MAX_REQUEST_BUFFER_BYTES)
            .serve_connection(
                TokioIo::new(crate::bare_errors::BareErrors::new(
                    io,
                    peer.ip(),
                    security_log,
                    tls,
                )),
                TowerToHyperService::new(service),
            )
            .with_upgrades();
        tokio::pin!(connection);
        let ended = tokio::select! {
            ended = connection.as_mut() => ended,
            () = shutdown.triggered() => {
                connection.as_mut().graceful_shutdown();
                connection.await
            }
        };
        if let Err(error) = ended {
            tracing::debug!(%peer, %error, "connection ended with an error");
        }
        // hyper's connection ends when it closes or upgrades (the socket then belongs to
        // a session, bounded by the session caps): either way it is no HTTP connection
        // any more. An idle keep-alive connection stays counted until then.
        drop(slot);
    }
}
