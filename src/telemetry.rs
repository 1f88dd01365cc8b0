//! Logging setup.
//!
//! Security-relevant events use the `security` target so an operator can route them
//! (`RUST_LOG=security=warn`). No event anywhere carries a token, ticket, password,
//! query string or message body.

use tracing_subscriber::EnvFilter;

/// Installs the global subscriber; a second call (tests, embedders) is a no-op.
pub fn init() {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(true)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
        // A log line that cannot be written (its reader gone: a closed pipe, a restarted
        // journald) is dropped. Left on, tracing-subscriber reports that failure with
        // `eprintln!`, which panics when stderr is the same broken pipe, and the panic
        // kills whichever task was logging: the one that turns SIGTERM into the drain
        // among them, so the process no longer stopped.
        .log_internal_errors(false)
        .try_init();
}
