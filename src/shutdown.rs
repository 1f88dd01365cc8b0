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
    stop_signals().await;
}

/// Listens for SIGINT (Ctrl-C) and, on Unix, SIGTERM from the moment it is called, not
/// from when the future it returns is first polled: a signal that comes in between (the
/// binary logs that it is up, then spawns the task that waits) is not left to its
/// default action, which would end the process without the drain.
pub fn stop_signals() -> impl Future<Output = ()> + Send + 'static {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{Signal, SignalKind, signal};
        let interrupt = signal(SignalKind::interrupt()).ok();
        let terminate = signal(SignalKind::terminate()).ok();
        // A signal that cannot be listened for never resolves: the other still may.
        async fn received(signal: Option<Signal>) {
            match signal {
                Some(mut signal) => {
                    signal.recv().await;
                }
                None => std::future::pending::<()>().await,
            }
        }
        async move {
            tokio::select! {
                () = received(interrupt) => {},
                () = received(terminate) => {},
            }
        }
    }
    #[cfg(not(unix))]
    async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}
