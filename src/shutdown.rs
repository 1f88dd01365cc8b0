//! One stop signal for the whole process.
//!
//! Every long-lived task (the accept loop, the background tasks) holds a clone of
//! [`Shutdown`]; WebSocket sessions are closed through their close signals when it
//! fires (`ws::registry`). Triggering it makes the handshake answer `503 unavailable`,
//! stops the listener, and closes every session with 1001.

use tokio_util::sync::CancellationToken;

/// A cloneable handle on the process-wide stop signal.
#[derive(Clone, Debug, Default)]
pub struct Shutdown {
    token: CancellationToken,
}

impl Shutdown {
    pub fn new() -> Self {
        Self::default()
    }

    /// Starts draining: idempotent.
    pub fn trigger(&self) {
        self.token.cancel();
    }

    pub fn is_triggered(&self) -> bool {
        self.token.is_cancelled()
    }

    /// Resolves once [`Shutdown::trigger`] has been called.
    pub async fn triggered(&self) {
        self.token.cancelled().await;
    }
}

/// Resolves on SIGINT (Ctrl-C) or, on Unix, SIGTERM.
pub async fn wait_for_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
}
