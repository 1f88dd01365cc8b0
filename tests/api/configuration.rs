//! What a newcomer's configuration does, seen from outside: settings given where
//! palisade does not read them are named at start (never their values), the example
//! secrets file works as is for local use, development mode keeps its JWT secret in
//! the data directory so a restart signs nobody out, and a limit that cannot work (a zero
//! rate or cap, a pong timeout within the heartbeat) stops the start with one line
//! naming its flag and the rule.

use crate::helpers::{ServerProcess, run_until_exit, sqlite_only};
use serde_json::{Value, json};

const NO_SECRETS_FILE: [&str; 2] = ["--secrets-file", "/nonexistent/Secrets.toml"];

/// A value no log line may contain.
const CANARY: &str = "canary-value-never-logged-0123456789abcdef";

fn sqlite_url(dir: &std::path::Path) -> String {
    format!("sqlite://{}", dir.join("p.db").display())
}

/// Starts the real binary with these arguments and environment, waits for `warning` in
/// its log, and checks that the log never shows the value given ([`CANARY`]).
async fn the_start_warns(
    dir: &std::path::Path,
    args: &[&str],
    env: &[(&str, Option<&str>)],
    warning: &str,
) {
    let mut server = ServerProcess::start_with_env(&sqlite_url(dir), args, env).await;
    server.wait_for_log(|line| line.contains(warning)).await;
    assert!(!server.log_text().contains(CANARY), "{}", server.log_text());
    server.child.kill().await.unwrap();
}

#[tokio::test]
async fn an_unknown_palisade_variable_is_warned_about_at_start() {
    let dir = tempfile::tempdir().unwrap();
    the_start_warns(
        dir.path(),
        &NO_SECRETS_FILE,
        &[("PALISADE_JWT_SECERT", Some(CANARY))],
        "the environment variable PALISADE_JWT_SECERT is ignored: did you mean PALISADE_JWT_SECRET?",
    )
    .await;
}

#[tokio::test]
async fn a_bare_jwt_secret_in_the_environment_is_named_with_the_variable_palisade_reads() {
    let dir = tempfile::tempdir().unwrap();
    the_start_warns(
        dir.path(),
        &NO_SECRETS_FILE,
        &[("JWT_SECRET", Some(CANARY))],
        "the environment variable JWT_SECRET is ignored: palisade reads PALISADE_JWT_SECRET",
    )
    .await;
}

#[tokio::test]
async fn a_misspelt_secrets_file_key_is_warned_about_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let secrets = dir.path().join("Secrets.toml");
    std::fs::write(&secrets, format!("JWT_SECERT = \"{CANARY}\"\n")).unwrap();
    let secrets = secrets.display().to_string();
    the_start_warns(
        dir.path(),
        &["--secrets-file", &secrets],
        &[],
        &format!("the key JWT_SECERT in {secrets} is ignored: did you mean JWT_SECRET?"),
    )
    .await;
}

#[tokio::test]
async fn the_example_secrets_file_works_as_is_for_the_local_web_client() {
    let dir = tempfile::tempdir().unwrap();
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/Secrets.toml.example");
    let mut server = ServerProcess::start_with_env(
        &sqlite_url(dir.path()),
        &["--secrets-file", example],
        &[("PALISADE_ALLOWED_ORIGINS", None)],
    )
    .await;
    let http = reqwest::Client::new();
    let session: Value = http
        .post(format!("http://{}/api/register", server.addr))
        .header("origin", "http://127.0.0.1:8000")
        .json(&json!({"username": "newcomer", "password": "correct horse"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = session["token"].as_str().expect("registered").to_owned();
    for origin in ["http://127.0.0.1:8000", "http://localhost:8000"] {
        let ticket = http
            .post(format!("http://{}/api/tickets", server.addr))
            .header("origin", origin)
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        assert_eq!(ticket.status(), 200, "{origin}");
        let ticket: Value = ticket.json().await.unwrap();
        let mut request =
            tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(
                format!(
                    "ws://{}/ws?ticket={}",
                    server.addr,
                    ticket["ticket"].as_str().unwrap()
                ),
            )
            .unwrap();
        request
            .headers_mut()
            .insert("origin", origin.parse().unwrap());
        let handshake = tokio::time::timeout(
            crate::helpers::WAIT,
            tokio_tungstenite::connect_async(request),
        )
        .await
        .expect("handshake answered in time");
        assert!(handshake.is_ok(), "{origin}: {:?}", handshake.err());
    }
    assert!(
        !server.log_text().contains("is ignored"),
        "the example holds only keys palisade reads:\n{}",
        server.log_text()
    );
    server.child.kill().await.unwrap();
}

/// Registers a user on this server: its token.
async fn register(server: &ServerProcess, name: &str) -> String {
    let response: Value = reqwest::Client::new()
        .post(format!("http://{}/api/register", server.addr))
        .json(&json!({"username": name, "password": "correct horse"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    response["token"].as_str().expect("registered").to_owned()
}

#[tokio::test]
async fn a_token_issued_before_a_restart_still_works_in_development_mode() {
    if sqlite_only("the development secret kept beside its file") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // A data directory that does not exist yet.
    let data = dir.path().join("fresh/data");
    let url = sqlite_url(&data);
    let no_secret = [("PALISADE_JWT_SECRET", None)];
    let secret_file = data.join("dev-jwt-secret");

    let mut first = ServerProcess::start_with_env(&url, &NO_SECRETS_FILE, &no_secret).await;
    let made = format!(
        "no JWT secret configured: made one for development and keeps it in {} (mode 0600)",
        secret_file.display()
    );
    first.wait_for_log(|line| line.contains(&made)).await;
    let token = register(&first, "returning").await;
    first.child.kill().await.unwrap();
    first.child.wait().await.unwrap();

    let mut second = ServerProcess::start_with_env(&url, &NO_SECRETS_FILE, &no_secret).await;
    let kept = format!(
        "no JWT secret configured: using the development secret kept in {}",
        secret_file.display()
    );
    second.wait_for_log(|line| line.contains(&kept)).await;
    let ticket = reqwest::Client::new()
        .post(format!("http://{}/api/tickets", second.addr))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(ticket.status(), 200, "the old token was refused");

    let secret = std::fs::read_to_string(&secret_file).unwrap();
    let secret = secret.trim();
    assert!(secret.len() >= 32);
    for log in [first.log_text(), second.log_text()] {
        assert!(!log.contains(secret), "the secret was logged:\n{log}");
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&secret_file)
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "mode {mode:o}");
    }
    second.child.kill().await.unwrap();
}

#[tokio::test]
async fn a_damaged_development_secret_file_stops_the_start_naming_it() {
    if sqlite_only("the development secret kept beside its file") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let secret_file = dir.path().join("dev-jwt-secret");
    std::fs::write(&secret_file, "cut short\n").unwrap();
    let (status, text) = start_until_exit(dir.path(), &[], &[("PALISADE_JWT_SECRET", None)]).await;
    assert!(!status.success(), "it started:\n{text}");
    assert!(
        text.contains(&format!(
            "cannot use the development JWT secret file {}",
            secret_file.display()
        )),
        "{text}"
    );
    assert_eq!(
        std::fs::read_to_string(&secret_file).unwrap(),
        "cut short\n",
        "the file was overwritten"
    );
}

#[tokio::test]
async fn production_still_refuses_to_start_without_a_secret_when_a_development_one_is_kept() {
    if sqlite_only("the development secret kept beside its file") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let secret_file = dir.path().join("dev-jwt-secret");
    std::fs::write(&secret_file, format!("{}\n", "ab".repeat(32))).unwrap();
    let production = [
        "--env",
        "production",
        "--allowed-origins",
        "https://chat.example.com",
    ];
    let (status, text) =
        start_until_exit(dir.path(), &production, &[("PALISADE_JWT_SECRET", None)]).await;
    assert!(!status.success(), "it started:\n{text}");
    assert!(
        text.contains("production mode needs: a JWT secret"),
        "{text}"
    );
}

/// Runs the real binary until it exits, on a database in `dir`, with `flags` and `env`
/// and no secrets file: how every start that must be refused is tried here.
async fn start_until_exit(
    dir: &std::path::Path,
    flags: &[&str],
    env: &[(&str, Option<&str>)],
) -> (std::process::ExitStatus, String) {
    let url = sqlite_url(dir);
    let mut args = vec!["--database-url", url.as_str()];
    args.extend_from_slice(flags);
    args.extend_from_slice(&NO_SECRETS_FILE);
    run_until_exit(&args, env).await
}

/// The one error line of a start that was refused, checked to be the only one.
fn the_one_error_line(status: std::process::ExitStatus, text: &str) -> String {
    assert!(!status.success(), "it started:\n{text}");
    assert!(!text.contains("listening on"), "it served:\n{text}");
    let errors: Vec<&str> = text.lines().filter(|l| l.contains("ERROR")).collect();
    assert_eq!(errors.len(), 1, "one error line:\n{text}");
    errors[0].to_owned()
}

#[tokio::test]
async fn a_zero_limit_stops_the_start_naming_the_flag_and_the_rule() {
    let dir = tempfile::tempdir().unwrap();
    let (status, text) = start_until_exit(dir.path(), &["--messages-per-sec", "0"], &[]).await;
    let error = the_one_error_line(status, &text);
    assert!(
        error.contains(
            "cannot start: --messages-per-sec (PALISADE_MESSAGES_PER_SEC) must be at least 1 (got 0)"
        ),
        "{error}"
    );
    // Refused before anything is made in the data directory.
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}

#[tokio::test]
async fn a_zero_limit_from_the_environment_is_refused_as_well() {
    let dir = tempfile::tempdir().unwrap();
    let zero = [("PALISADE_MAX_CONNECTIONS", Some("0"))];
    let (status, text) = start_until_exit(dir.path(), &[], &zero).await;
    let error = the_one_error_line(status, &text);
    assert!(
        error.contains(
            "cannot start: --max-connections (PALISADE_MAX_CONNECTIONS) must be at least 1 (got 0)"
        ),
        "{error}"
    );
}

#[tokio::test]
async fn a_pong_timeout_within_the_heartbeat_stops_the_start() {
    let dir = tempfile::tempdir().unwrap();
    let flags = ["--heartbeat-secs", "30", "--pong-timeout-secs", "20"];
    let (status, text) = start_until_exit(dir.path(), &flags, &[]).await;
    let error = the_one_error_line(status, &text);
    assert!(
        error.contains(
            "--pong-timeout-secs (PALISADE_PONG_TIMEOUT_SECS) must be longer than --heartbeat-secs (PALISADE_HEARTBEAT_SECS) (got 20 and 30)"
        ),
        "{error}"
    );
}

#[tokio::test]
async fn version_prints_the_name_and_the_crate_version_and_exits_zero() {
    let (status, output) = run_until_exit(&["--version"], &[]).await;
    assert!(status.success(), "{status}: {output}");
    assert_eq!(
        output.trim(),
        format!("palisade {}", env!("CARGO_PKG_VERSION"))
    );
}
