//! The `palisade` binary: parse the configuration, start the server, stop on a signal.
//!
//! Everything else lives in the library so tests can start the very same server.
#![forbid(unsafe_code)]

use clap::Parser;
use palisade::config::{Cli, Settings};
use palisade::shutdown;
use palisade::startup::Application;
use palisade::telemetry;
use std::process::ExitCode;

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
    tracing::info!("palisade listening on http://{}", app.local_addr());
    let stopper = app.shutdown_handle();
    tokio::spawn(async move {
        shutdown::wait_for_signal().await;
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
