//! Accepting connections: plain TCP or TLS, each with a deadline for its first bytes.
//!
//! axum's own `serve` has no header timeout and no TLS, so palisade runs its own accept
//! loop on hyper: a new connection has 10 seconds to send its first byte (or finish its
//! TLS handshake), then 10 more to complete its request headers, or it is dropped, so
//! half-open and silent sockets (slowloris) cannot pile up. Every accepted socket gets TCP_NODELAY (small frames should not wait for
//! Nagle), and on shutdown the loop stops accepting and lets open HTTP exchanges finish.

use crate::shutdown::Shutdown;
use axum::Router;
use axum::extract::ConnectInfo;
use axum::http::Request;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use hyper_util::service::TowerToHyperService;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;

/// Time a new connection has to complete its TLS handshake, then its request headers.
pub const FIRST_BYTES_TIMEOUT: Duration = Duration::from_secs(10);

/// How long shutdown lets open HTTP exchanges finish.
const HTTP_DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// Serves `router` on `listener` until `shutdown` fires.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    tls: Option<TlsAcceptor>,
    shutdown: Shutdown,
) {
    let graceful = GracefulShutdown::new();
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
        if let Err(error) = tcp.set_nodelay(true) {
            tracing::debug!(%error, "cannot set TCP_NODELAY");
        }
        let router = router.clone();
        let watcher = graceful.watcher();
        match tls.clone() {
            None => {
                tokio::spawn(async move {
                    // hyper's header deadline starts with the first byte: bound the wait for it.
                    let mut first = [0u8; 1];
                    match tokio::time::timeout(FIRST_BYTES_TIMEOUT, tcp.peek(&mut first)).await {
                        Ok(Ok(n)) if n > 0 => serve_connection(tcp, peer, router, watcher).await,
                        Ok(_) => {}
                        Err(_) => tracing::debug!(%peer, "no request within the deadline"),
                    }
                });
            }
            Some(acceptor) => {
                tokio::spawn(async move {
                    match tokio::time::timeout(FIRST_BYTES_TIMEOUT, acceptor.accept(tcp)).await {
                        Ok(Ok(stream)) => serve_connection(stream, peer, router, watcher).await,
                        Ok(Err(error)) => tracing::debug!(%peer, %error, "TLS handshake failed"),
                        Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                    }
                });
            }
        }
    }
    drop(listener);
    if tokio::time::timeout(HTTP_DRAIN_TIMEOUT, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::debug!("HTTP connections still open after the drain timeout");
    }
}

async fn serve_connection<I>(io: I, peer: SocketAddr, router: Router, watcher: Watcher)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = router.map_request(move |mut request: Request<Incoming>| {
        request.extensions_mut().insert(ConnectInfo(peer));
        request
    });
    // HTTP/1.1 only: WebSocket upgrades need it, and it starts the header deadline at
    // once (protocol sniffing for HTTP/2 would wait for bytes without one).
    let mut builder = auto::Builder::new(TokioExecutor::new()).http1_only();
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(FIRST_BYTES_TIMEOUT);
    let connection = builder
        .serve_connection_with_upgrades(
            TokioIo::new(crate::bare_errors::BareErrors::new(io, peer.ip())),
            TowerToHyperService::new(service),
        )
        .into_owned();
    if let Err(error) = watcher.watch(connection).await {
        tracing::debug!(%peer, %error, "connection ended with an error");
    }
}
