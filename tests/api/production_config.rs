//! Production mode refuses settings that expose users: `*` as the origin list without
//! the flag that says so out loud, and plain HTTP on a public address with neither TLS
//! nor a trusted proxy in front. The real binary exits non-zero with one line naming
//! the fix.

use crate::helpers::{ServerProcess, TEST_SECRET, WAIT};

/// Runs the binary in production mode with these extra flags until it exits: its exit
/// status and everything it printed.
async fn run_production(args: &[&str]) -> (std::process::ExitStatus, String) {
    let data = tempfile::tempdir().unwrap();
    let database_url = format!("sqlite://{}", data.path().join("p.db").display());
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_palisade"));
    command
        .args(["--env", "production", "--database-url", &database_url])
        .args(["--secrets-file", "/nonexistent/Secrets.toml"])
        .args(args)
        .env("PALISADE_JWT_SECRET", TEST_SECRET)
        .kill_on_drop(true);
    for inherited in [
        "PALISADE_ALLOWED_ORIGINS",
        "PALISADE_TRUSTED_PROXIES",
        "PALISADE_TLS_CERT",
        "PALISADE_TLS_KEY",
        "PALISADE_DANGEROUSLY_ALLOW_ANY_ORIGIN",
        "PALISADE_LISTEN",
    ] {
        command.env_remove(inherited);
    }
    let output = tokio::time::timeout(WAIT, command.output())
        .await
        .expect("the binary exits in time")
        .expect("the binary runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status, text)
}

/// The one line of output that names `flag`.
fn one_line_naming(text: &str, flag: &str) -> String {
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "expected one line, got:\n{text}");
    assert!(
        lines[0].contains(flag),
        "the line does not name {flag}:\n{text}"
    );
    lines[0].to_owned()
}

#[tokio::test]
async fn production_with_any_origin_and_no_loud_flag_exits_naming_the_flag() {
    let (status, text) =
        run_production(&["--listen", "127.0.0.1:0", "--allowed-origins", "*"]).await;
    assert!(!status.success(), "it started:\n{text}");
    one_line_naming(&text, "--dangerously-allow-any-origin");
}

#[tokio::test]
async fn production_with_any_origin_and_the_loud_flag_starts() {
    let data = tempfile::tempdir().unwrap();
    let database_url = format!("sqlite://{}", data.path().join("p.db").display());
    let mut server = ServerProcess::start(
        &database_url,
        &[
            "--env",
            "production",
            "--secrets-file",
            "/nonexistent/Secrets.toml",
            "--allowed-origins",
            "*",
            "--dangerously-allow-any-origin",
        ],
    )
    .await;
    let health = reqwest::get(format!("http://{}/healthz", server.addr))
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    server.child.kill().await.unwrap();
}

#[tokio::test]
async fn production_on_a_public_address_over_plain_http_exits_naming_tls_and_proxies() {
    let (status, text) = run_production(&[
        "--listen",
        "0.0.0.0:0",
        "--allowed-origins",
        "https://chat.example.com",
    ])
    .await;
    assert!(!status.success(), "it started:\n{text}");
    let line = one_line_naming(&text, "--trusted-proxies");
    assert!(line.contains("--tls-cert"), "{line}");
}
