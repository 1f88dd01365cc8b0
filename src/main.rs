//! The `palisade` binary: parse the configuration, start the server, stop on a signal.
//!
//! Everything else lives in the library so tests can start the very same server. Built
//! with the `shuttle` feature (`cargo shuttle run` does), the binary is instead Shuttle's
//! runtime around the same application: see `palisade::shuttle`.
#![forbid(unsafe_code)]

#[cfg(not(feature = "shuttle"))]
use clap::Parser;
#[cfg(not(feature = "shuttle"))]
use palisade::config::{Cli, Settings};
#[cfg(not(feature = "shuttle"))]
use palisade::shutdown;
#[cfg(not(feature = "shuttle"))]
use palisade::startup::Application;
use palisade::telemetry;
#[cfg(not(feature = "shuttle"))]
use std::process::ExitCode;

/// Shuttle's entrypoint: its secrets, its database (locally, `local_uri` is the
/// `DATABASE_URL` secret: Shuttle's own would need Docker) and whether this is a
/// deployment; the runtime then binds the service on the address it chooses.
#[cfg(feature = "shuttle")]
#[shuttle_runtime::main]
async fn shuttle_main(
    #[shuttle_runtime::Secrets] secrets: shuttle_runtime::SecretStore,
    #[shuttle_runtime::Metadata] metadata: shuttle_runtime::DeploymentMetadata,
    #[shuttle_shared_db::Postgres(local_uri = "{secrets.DATABASE_URL}")] database_url: String,
) -> Result<palisade::shuttle::PalisadeService, shuttle_runtime::Error> {
    // The runtime's own subscriber is off (`default-features = false`): palisade's logs
    // look the same under Shuttle as under `cargo run`.
    telemetry::init();
    let deployed = metadata.env == shuttle_runtime::Environment::Deployment;
    Ok(palisade::shuttle::PalisadeService::new(
        secrets,
        database_url,
        deployed,
    ))
}

#[cfg(not(feature = "shuttle"))]
#[tokio::main]
async fn main() -> ExitCode {
    telemetry::init();
    let cli = Cli::parse();
    let settings = match Settings::from_cli(cli) {
        Ok(settings) => settings,
        Err(error) => {
            tracing::error!("cannot start: {error}");
            return ExitCode::FAILURE;
        }
    };
    let app = match Application::build(settings).await {
        Ok(app) => app,
        Err(error) => {
            tracing::error!("cannot start: {error}");
            return ExitCode::FAILURE;
        }
    };
    // `systemctl reload` (deploy/palisade.service) and certbot's deploy hook send SIGHUP.
    // It is handled even without TLS: its default action would end the process, and
    // systemd counts that as a clean stop, so a reload would stop the service. The
    // handler is in place before the line saying the server is up, so a SIGHUP sent
    // once that line is seen is never the default action.
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let certificates = app.tls_certificates();
        match signal(SignalKind::hangup()) {
            Ok(mut hangups) => {
                tokio::spawn(async move {
                    while hangups.recv().await.is_some() {
                        match &certificates {
                            Some(certificates) => certificates.reload("SIGHUP"),
                            None => tracing::info!("SIGHUP: nothing to reload without TLS"),
                        }
                    }
                });
            }
            Err(error) => tracing::warn!(
                %error,
                "cannot listen for SIGHUP: certificates reload only when their files change"
            ),
        }
    }
    // Listening for SIGTERM and SIGINT before the line below, for the same reason.
    let stop_signals = shutdown::stop_signals();
    tracing::info!("palisade listening on {}", app.url());
    let stopper = app.shutdown_handle();
    tokio::spawn(async move {
        stop_signals.await;
        tracing::info!("shutdown signal received: draining");
        stopper.trigger();
    });
    match app.run_until_stopped().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!("server error: {error}");
            ExitCode::FAILURE
        }
    }
}
