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
        .try_init();
}
