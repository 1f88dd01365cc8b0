//! Builds the application from its settings and runs it until it is told to stop.
//!
//! [`Application::build`] opens the store, wires broker, hub and state, and binds the
//! listener (port 0 picks a free port: what tests do). [`Application::run_until_stopped`]
//! serves until the [`Shutdown`] fires, then closes every session with 1001 and waits
//! for their last writes.

use crate::auth::Authenticator;
use crate::auth::jwt::{JwtKeys, KeyError};
use crate::auth::revocation::Revocations;
use crate::broker::Broker;
use crate::broker::memory::MemoryBroker;
use crate::broker::redis::{RedisBroker, RedisLink, RedisUnreachable, describe_url};
use crate::cluster::{self, SharedRedis};
use crate::config::Settings;
use crate::hub::Hub;
use crate::server;
use crate::shutdown::Shutdown;
use crate::state::AppState;
use crate::store::{self, Store, StoreError};
use crate::tls::{self, Certificates, TlsError};
use axum::Router;
use redis::aio::PubSub;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

/// How long shutdown waits for sessions to send their close frames.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// Why the server cannot start; each message names the file or setting at fault and
/// fits on one log line.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot read the revocations and bans from the database {database}: {source}")]
    Revocations {
        database: String,
        source: StoreError,
    },
    #[error(transparent)]
    Redis(#[from] RedisUnreachable),
    #[error(transparent)]
    Keys(#[from] KeyError),
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error("cannot listen on {addr} (--listen / PALISADE_LISTEN): {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

pub struct Application {
    listener: TcpListener,
    local_addr: SocketAddr,
    router: Router,
    tls: Option<(TlsAcceptor, Arc<Certificates>)>,
    state: AppState,
}

impl Application {
    pub async fn build(settings: Settings) -> Result<Self, StartupError> {
        let listener =
            TcpListener::bind(settings.listen)
                .await
                .map_err(|source| StartupError::Bind {
                    addr: settings.listen,
                    source,
                })?;
        Self::build_on(settings, listener).await
    }

    /// Builds on a listener the caller bound already (to know its port beforehand).
    pub async fn build_on(settings: Settings, listener: TcpListener) -> Result<Self, StartupError> {
        let tls = match &settings.tls {
            Some((cert, key)) => Some(tls::acceptor(cert, key)?),
            None => None,
        };
        let store = store::connect(&settings.database_url).await?;
        let local_addr = listener.local_addr().map_err(|source| StartupError::Bind {
            addr: settings.listen,
            source,
        })?;
        if crate::stats::handle().is_some() {
            static UPKEEP: std::sync::Once = std::sync::Once::new();
            UPKEEP.call_once(|| {
                tokio::spawn(crate::stats::upkeep());
            });
        }
        let keys = JwtKeys::new(&settings.jwt_config())?;
        // In cluster mode the control channel is subscribed before the revocations are
        // read: one stored meanwhile is in the read or heard of (see `cluster`).
        let redis = match &settings.redis_url {
            Some(url) => {
                let link = RedisLink::open(url, &settings.redis_prefix).await?;
                let (client, _, prefix) = link.shared();
                let control = cluster::subscribe(&client, &prefix)
                    .await
                    .map_err(|reason| RedisUnreachable {
                        server: describe_url(url),
                        reason,
                    })?;
                Some((link, control))
            }
            None => None,
        };
        let unreadable = |source| StartupError::Revocations {
            database: store::describe_url(&settings.database_url),
            source,
        };
        let stored_revocations = store.revocations().await.map_err(unreadable)?;
        let disabled_users = store.disabled_users().await.map_err(unreadable)?;
        let revocations = Revocations::new(stored_revocations).with_disabled(disabled_users);
        let state = build_state(settings, store, keys, revocations, redis);
        let router = build_router(state.clone());
        Ok(Self {
            listener,
            local_addr,
            router,
            tls,
            state,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    pub fn port(&self) -> u16 {
        self.local_addr.port()
    }

    /// The URL clients reach it at: `https://` with TLS, else `http://`.
    pub fn url(&self) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://{}", self.local_addr)
    }

    /// With TLS, the certificate it serves: [`Certificates::reload`] reads the files
    /// again (the binary does on SIGHUP).
    pub fn tls_certificates(&self) -> Option<Arc<Certificates>> {
        self.tls
            .as_ref()
            .map(|(_, certificates)| Arc::clone(certificates))
    }

    /// Triggering this handle drains and stops the application.
    pub fn shutdown_handle(&self) -> Shutdown {
        self.state.shutdown.clone()
    }

    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        tokio::spawn(Arc::clone(&self.state.security_log).run(self.state.shutdown.clone()));
        tokio::spawn(Arc::clone(&self.state.load).run(self.state.shutdown.clone()));
        tokio::spawn(crate::ws::occupancy::run(
            Arc::clone(&self.state.hub),
            Arc::clone(&self.state.broker),
            std::time::Duration::from_millis(self.state.settings.limits.presence_count_ms),
            self.state.shutdown.clone(),
        ));
        if let Some(control) = &self.state.control {
            tokio::spawn(Arc::clone(control).run(self.state.clone()));
        }
        if let Some(shared_caps) = &self.state.shared_caps {
            tokio::spawn(Arc::clone(shared_caps).run(self.state.shutdown.clone()));
        }
        // Sessions close through their own close signals (see `ws::registry`).
        tokio::spawn({
            let connections = Arc::clone(&self.state.connections);
            let shutdown = self.state.shutdown.clone();
            async move {
                shutdown.triggered().await;
                connections.close_all(crate::hub::outbox::CloseReason::ServerShutdown);
            }
        });
        let acceptor = self.tls.map(|(acceptor, certificates)| {
            tokio::spawn(certificates.watch(
                Duration::from_millis(self.state.settings.limits.tls_watch_ms),
                self.state.shutdown.clone(),
            ));
            acceptor
        });
        server::serve(
            self.listener,
            self.router,
            acceptor,
            self.state.shutdown.clone(),
            server::ConnectionBounds::from_state(&self.state),
        )
        .await;
        // Sessions saw the same signal and are sending their 1001 close frames.
        let sessions = &self.state.sessions;
        sessions.close();
        if tokio::time::timeout(DRAIN_TIMEOUT, sessions.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                left = sessions.len(),
                "sessions still open after the drain timeout"
            );
        }
        tracing::info!("stopped");
        Ok(())
    }
}

/// Wires store, hub and broker into the shared state: the Redis broker, tickets in Redis
/// and the control channel when a link to Redis is given (cluster mode), else the
/// single-node ones.
pub(crate) fn build_state(
    settings: Settings,
    store: Arc<dyn Store>,
    keys: JwtKeys,
    revocations: Revocations,
    redis: Option<(RedisLink, PubSub)>,
) -> AppState {
    let hub = Arc::new(
        Hub::new(settings.limits.outbound_queue)
            .with_presence_full_max(settings.limits.presence_full_max),
    );
    let (broker, shared): (Arc<dyn Broker>, _) = match redis {
        Some((link, control)) => {
            let (client, commands, prefix) = link.shared();
            let shared = SharedRedis {
                client,
                commands,
                prefix,
                control,
            };
            let broker = RedisBroker::start(
                link,
                store.clone(),
                Arc::clone(&hub),
                std::time::Duration::from_millis(settings.limits.node_ttl_ms),
                crate::ws::protocol::presence_frame,
            );
            (Arc::new(broker), Some(shared))
        }
        None => (
            Arc::new(MemoryBroker::new(store.clone(), Arc::clone(&hub))),
            None,
        ),
    };
    AppState::new(
        settings,
        store,
        broker,
        hub,
        Authenticator::new(keys, revocations),
        shared,
    )
}

/// The whole HTTP and WebSocket surface, for [`Application`] or any other host.
pub fn build_router(state: AppState) -> Router {
    crate::http::router(state)
}
