//! The library's half of the `shuttle` feature's entrypoint (`cargo shuttle run`).
//!
//! palisade was designed as a Shuttle service. The hosted platform shut down in January
//! 2026; `cargo shuttle run` (cargo-shuttle 0.57.3) still builds and runs a Shuttle
//! service, locally and offline. The entrypoint in `main.rs` hands over Shuttle's
//! secrets, the PostgreSQL URL shuttle-shared-db gives (locally its `local_uri`: the
//! `DATABASE_URL` secret) and whether this is a deployment; [`PalisadeService`] then
//! binds the address the runtime names with the very [`Application`] `cargo run`
//! starts: its own HTTP server with every cap, deadline and check, and the web client.
//!
//! Not shuttle-axum's `AxumService`: it serves a bare router with `axum::serve`, which
//! hands no peer address to the handlers (every client would spend one per-IP budget,
//! 0.0.0.0's) and has none of palisade's connection-level limits.
//!
//! Who the client is: on a deployment only the platform's proxy reaches the service,
//! from addresses nobody knows in advance, so every peer is a proxy (`TRUSTED_PROXIES =
//! "*"`) and the client is the entry that proxy adds to `X-Forwarded-For`; a request
//! without one is refused (`400`), so no request is ever loopback (`/metrics`) by
//! accident. Under `cargo shuttle run` there is no proxy: the peer is the client, as
//! with `cargo run`. The `TRUSTED_PROXIES` secret (or `PALISADE_TRUSTED_PROXIES`)
//! overrides both.
//!
//! Stopping: Shuttle's runtime answers SIGTERM and SIGINT by exiting at once (code 10)
//! without waiting for the service, so there is no drain: clients see the connection
//! drop (1006, not 1001) and resume with `since` when they reconnect. Nothing acked is
//! lost: a message is committed before its ack.

use crate::config::{Cli, ConfigError, Environment, Settings, TrustedProxy};
use crate::startup::Application;
use clap::Parser;
use shuttle_runtime::{CustomError, Error};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use tokio::net::TcpListener;

/// Where Shuttle's secrets come from, as warnings name it.
const SECRETS_SOURCE: &str = "Shuttle's secrets (Secrets.toml)";

/// The service the Shuttle runtime binds: palisade's settings, made when the runtime
/// says where to listen (production mode checks the address).
pub struct PalisadeService {
    secrets: BTreeMap<String, String>,
    database_url: String,
    deployed: bool,
}

impl PalisadeService {
    /// `deployed` is Shuttle's `Environment::Deployment` (as opposed to a local run).
    pub fn new(
        secrets: impl IntoIterator<Item = (String, String)>,
        database_url: String,
        deployed: bool,
    ) -> Self {
        Self {
            secrets: secrets.into_iter().collect(),
            database_url,
            deployed,
        }
    }

    /// The settings for listening on `addr`: `PALISADE_*` variables and the secrets, as
    /// for `cargo run`, then what Shuttle decides (see the module docs).
    fn settings(&self, addr: SocketAddr) -> Result<Settings, ConfigError> {
        let mut cli = Cli::try_parse_from(["palisade"])
            .map_err(|error| ConfigError::BadEnvironment(error.to_string()))?;
        cli.listen = addr;
        cli.database_url = Some(self.database_url.clone());
        if self.deployed {
            cli.env = Environment::Production;
            if cli.trusted_proxies.is_empty() && !self.secrets.contains_key("TRUSTED_PROXIES") {
                cli.trusted_proxies = vec![TrustedProxy::EveryPeer.to_string()];
            }
        }
        Settings::from_cli_and_secrets(cli, &self.secrets, SECRETS_SOURCE)
    }
}

#[shuttle_runtime::async_trait]
impl shuttle_runtime::Service for PalisadeService {
    async fn bind(self, addr: SocketAddr) -> Result<(), Error> {
        let settings = self
            .settings(addr)
            .map_err(|error| CustomError::msg(format!("cannot start: {error}")))?;
        let listener = TcpListener::bind(addr).await?;
        let app = Application::build_on(settings, listener)
            .await
            .map_err(|error| CustomError::msg(format!("cannot start: {error}")))?;
        tracing::info!("palisade listening on {} (under Shuttle)", app.url());
        app.run_until_stopped().await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "0123456789abcdef0123456789abcdef";

    fn service(secrets: &[(&str, &str)], deployed: bool) -> PalisadeService {
        let secrets = secrets
            .iter()
            .map(|(key, value)| ((*key).to_owned(), (*value).to_owned()));
        PalisadeService::new(
            secrets,
            "postgres://db.internal/palisade".to_owned(),
            deployed,
        )
    }

    fn public() -> SocketAddr {
        SocketAddr::from(([0, 0, 0, 0], 8000))
    }

    #[test]
    fn a_local_run_takes_the_peer_as_the_client_and_the_database_shuttle_gives() {
        let settings = service(&[("JWT_SECRET", SECRET)], false)
            .settings(SocketAddr::from(([127, 0, 0, 1], 8000)))
            .unwrap();
        assert!(settings.trusted_proxies.is_empty());
        assert_eq!(settings.environment, Environment::Development);
        assert_eq!(settings.database_url, "postgres://db.internal/palisade");
    }

    #[test]
    fn a_deployment_is_production_behind_a_proxy_at_every_peer() {
        let secrets = [
            ("JWT_SECRET", SECRET),
            ("ALLOWED_ORIGINS", "https://chat.example.com"),
        ];
        let settings = service(&secrets, true).settings(public()).unwrap();
        assert_eq!(settings.environment, Environment::Production);
        assert_eq!(settings.trusted_proxies, [TrustedProxy::EveryPeer]);
        assert_eq!(settings.listen, public());
    }

    #[test]
    fn a_deployment_keeps_the_proxies_the_secrets_name_and_production_checks() {
        let secrets = [
            ("JWT_SECRET", SECRET),
            ("ALLOWED_ORIGINS", "https://chat.example.com"),
            ("TRUSTED_PROXIES", "10.0.0.7"),
        ];
        let settings = service(&secrets, true).settings(public()).unwrap();
        assert_eq!(
            settings.trusted_proxies,
            [TrustedProxy::Address([10, 0, 0, 7].into())]
        );
        let refused = service(&[("JWT_SECRET", SECRET)], true)
            .settings(public())
            .unwrap_err();
        assert!(
            refused.to_string().contains("origin list"),
            "production needs its origins: {refused}"
        );
    }
}
