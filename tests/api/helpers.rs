//! Test harness: start the real server on port 0 and talk to it like a client would.
//!
//! Each test server has a database of its own: a SQLite file in a temporary folder, or,
//! with `PALISADE_TEST_STORE=postgres`, a PostgreSQL database made for it (and dropped
//! with it), so the whole suite checks that both stores look the same to a client.

#![allow(dead_code)]

use crate::test_database::TestDatabase;
use futures_util::{SinkExt, StreamExt};
use jsonwebtoken::{EncodingKey, Header};
use palisade::config::Settings;
use palisade::shutdown::Shutdown;
use palisade::startup::Application;
use secrecy::SecretString;
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::{HeaderValue, StatusCode};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// The secret every test server signs with, so tests can mint their own tokens.
pub const TEST_SECRET: &str = "test-secret-0123456789abcdef0123456789abcdef";

/// How long any single wait in a test may take before it fails.
pub const WAIT: Duration = Duration::from_secs(10);

/// The close grace of test servers (`--close-grace-ms`; 3000 by default): a test client
/// that does not answer a close frame (it is not reading when the server stops) holds
/// up the server's shutdown this long, not 3 s. Long enough for a loaded machine to
/// deliver a close frame to a client that reads; the grace itself has its own test.
pub const CLOSE_GRACE_MS: u64 = 500;

pub struct TestApp {
    pub addr: SocketAddr,
    pub shutdown: Shutdown,
    pub server: JoinHandle<std::io::Result<()>>,
    pub database_url: String,
    pub http: reqwest::Client,
    /// Keeps the database folder alive as long as the app (shared by restarts).
    pub data_dir: Arc<tempfile::TempDir>,
    /// With `PALISADE_TEST_STORE=postgres`, the app's database, shared by restarts and
    /// dropped with the last of them.
    pub postgres: Option<Arc<TestDatabase>>,
}

/// Runs one statement on a test server's database behind its back, as an operator would
/// by hand (`sqlite3` or `psql`); parameters are `$1`, `$2`… (both stores read those).
pub async fn operator_sql(database_url: &str, sql: &str, params: &[&str]) {
    use sqlx::Connection;
    if database_url.starts_with("postgres") {
        let mut db = sqlx::PgConnection::connect(database_url)
            .await
            .expect("the test database accepts a connection");
        let mut query = sqlx::query(sql);
        for param in params {
            query = query.bind(*param);
        }
        query.execute(&mut db).await.expect("the statement runs");
        let _ = db.close().await;
    } else {
        let mut db = sqlx::SqliteConnection::connect(database_url)
            .await
            .expect("the test database opens");
        let mut query = sqlx::query(sql);
        for param in params {
            query = query.bind(*param);
        }
        query.execute(&mut db).await.expect("the statement runs");
        let _ = db.close().await;
    }
}

/// Whether test servers run on PostgreSQL (`PALISADE_TEST_STORE=postgres`) rather than
/// SQLite (unset or `sqlite`).
pub fn on_postgres() -> bool {
    match std::env::var("PALISADE_TEST_STORE").as_deref() {
        Err(_) | Ok("" | "sqlite") => false,
        Ok("postgres") => true,
        Ok(other) => panic!("PALISADE_TEST_STORE={other:?}: expected sqlite or postgres"),
    }
}

/// For a test about SQLite itself (its file, its disk, its journal): `true`, after one
/// line saying why, when the suite runs on PostgreSQL, where the test has no meaning.
/// The test returns at once then.
pub fn sqlite_only(why: &str) -> bool {
    let skip = on_postgres();
    if skip {
        eprintln!("SKIPPED with PALISADE_TEST_STORE=postgres: about SQLite itself ({why})");
    }
    skip
}

/// A PostgreSQL database of its own, for `PALISADE_TEST_STORE=postgres`, where a missing
/// PostgreSQL is a failure (the run asked for it), not a skip.
async fn postgres_database() -> TestDatabase {
    TestDatabase::create()
        .await
        .expect("PALISADE_TEST_STORE=postgres needs PostgreSQL at 127.0.0.1:5432")
}

/// A database of its own for one server process, on the store the suite runs on;
/// removed when dropped.
pub struct FreshDatabase {
    pub url: String,
    _dir: Option<tempfile::TempDir>,
    _postgres: Option<TestDatabase>,
}

impl FreshDatabase {
    pub async fn new() -> Self {
        if on_postgres() {
            let database = postgres_database().await;
            return Self {
                url: database.url.clone(),
                _dir: None,
                _postgres: Some(database),
            };
        }
        let dir = tempfile::tempdir().expect("temp dir");
        Self {
            url: format!("sqlite://{}", dir.path().join("p.db").display()),
            _dir: Some(dir),
            _postgres: None,
        }
    }
}

pub fn test_settings(data_dir: &tempfile::TempDir) -> Settings {
    let mut settings = Settings::development();
    settings.listen = "127.0.0.1:0".parse().unwrap();
    settings.database_url = format!("sqlite://{}", data_dir.path().join("palisade.db").display());
    settings.jwt_secret = SecretString::from(TEST_SECRET);
    // Tests register many users from one address; the limit itself has its own test.
    settings.limits.auth_per_minute = 10_000;
    settings.limits.auth_burst = 10_000;
    settings.limits.close_grace_ms = CLOSE_GRACE_MS;
    settings
}

/// The bodies of a `joined` or `history` reply's messages, oldest first.
pub fn bodies(reply: &Value) -> Vec<&str> {
    reply["messages"]
        .as_array()
        .expect("an array of messages")
        .iter()
        .map(|message| message["body"].as_str().expect("a body"))
        .collect()
}

/// For tests that send more than the default budget (5/s, burst 10) allows.
pub fn generous_budget(settings: &mut Settings) {
    settings.limits.messages_per_sec = 10_000;
    settings.limits.message_burst = 10_000;
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

pub async fn spawn_app_with(configure: impl FnOnce(&mut Settings)) -> TestApp {
    let data_dir = Arc::new(tempfile::tempdir().expect("temp dir"));
    let mut settings = test_settings(&data_dir);
    let sqlite_url = settings.database_url.clone();
    configure(&mut settings);
    // A test that chose its database (a cluster's, a disk's) keeps it.
    let postgres = if on_postgres() && settings.database_url == sqlite_url {
        let database = postgres_database().await;
        settings.database_url = database.url.clone();
        Some(Arc::new(database))
    } else {
        None
    };
    start(settings, data_dir, postgres).await
}

/// Starts a second server on the same database (after the first has stopped).
pub async fn restart(previous: &TestApp) -> TestApp {
    restart_with(previous, |_| {}).await
}

/// [`restart`] with other settings (e.g. another admin list).
pub async fn restart_with(previous: &TestApp, configure: impl FnOnce(&mut Settings)) -> TestApp {
    let mut settings = test_settings(&previous.data_dir);
    settings.database_url = previous.database_url.clone();
    configure(&mut settings);
    start(
        settings,
        Arc::clone(&previous.data_dir),
        previous.postgres.clone(),
    )
    .await
}

async fn start(
    settings: Settings,
    data_dir: Arc<tempfile::TempDir>,
    postgres: Option<Arc<TestDatabase>>,
) -> TestApp {
    let database_url = settings.database_url.clone();
    let app = Application::build(settings).await.expect("app builds");
    let addr = app.local_addr();
    let shutdown = app.shutdown_handle();
    let server = tokio::spawn(app.run_until_stopped());
    TestApp {
        addr,
        shutdown,
        server,
        database_url,
        http: reqwest::Client::new(),
        data_dir,
        postgres,
    }
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub fn ws_url(&self) -> String {
        format!("ws://{}/ws", self.addr)
    }

    /// A valid token for a user whose id is `id-<name>`.
    pub fn token(&self, name: &str) -> String {
        user_token(name)
    }

    /// Connects with `Authorization: Bearer` and reads the `welcome` frame.
    pub async fn connect(&self, name: &str) -> Client {
        let mut client = self
            .try_connect(
                &[("authorization", format!("Bearer {}", self.token(name)))],
                "",
            )
            .await
            .expect("handshake succeeds");
        let welcome = client.recv().await;
        assert_eq!(welcome["type"], "welcome", "{welcome}");
        client
    }

    /// Connects and joins `room`; returns the client and its `joined` frame.
    pub async fn join(&self, name: &str, room: &str) -> (Client, Value) {
        let mut client = self.connect(name).await;
        client.send(json!({"type": "join", "room": room})).await;
        let joined = client.recv_type("joined").await;
        (client, joined)
    }

    /// A handshake with the given headers and query string (`?…` or empty): the client,
    /// or the HTTP status, headers and JSON body of the refusal.
    pub async fn try_connect(
        &self,
        headers: &[(&str, String)],
        query: &str,
    ) -> Result<Client, Refusal> {
        let mut request = format!("{}{}", self.ws_url(), query)
            .into_client_request()
            .unwrap();
        for (name, value) in headers {
            request.headers_mut().insert(
                tokio_tungstenite::tungstenite::http::HeaderName::from_bytes(name.as_bytes())
                    .unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        match tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(request))
            .await
            .expect("handshake answered in time")
        {
            Ok((stream, _)) => Ok(Client { stream }),
            Err(WsError::Http(response)) => {
                let status = response.status();
                let retry_after = response
                    .headers()
                    .get("retry-after")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned);
                let body = response
                    .body()
                    .as_ref()
                    .and_then(|b| serde_json::from_slice(b).ok())
                    .unwrap_or(Value::Null);
                Err(Refusal {
                    status,
                    retry_after,
                    body,
                })
            }
            Err(other) => panic!("handshake failed oddly: {other}"),
        }
    }

    /// A handshake with `Authorization: Bearer <token>`.
    pub async fn connect_with(&self, token: &str) -> Result<Client, Refusal> {
        self.try_connect(&[bearer(token)], "").await
    }

    /// A handshake with this token that must be refused: the refusal.
    pub async fn refused(&self, token: &str) -> Refusal {
        match self.connect_with(token).await {
            Ok(_) => panic!("the handshake was accepted"),
            Err(refusal) => refusal,
        }
    }

    /// `POST /api/admin/users/{user_id}/revoke` with this bearer token.
    pub async fn revoke(&self, bearer_token: &str, user_id: &str) -> reqwest::Response {
        self.http
            .post(self.url(&format!("/api/admin/users/{user_id}/revoke")))
            .bearer_auth(bearer_token)
            .send()
            .await
            .unwrap()
    }

    pub async fn register(&self, username: &str, password: &str) -> reqwest::Response {
        self.post_credentials("/api/register", username, password)
            .await
    }

    pub async fn login(&self, username: &str, password: &str) -> reqwest::Response {
        self.post_credentials("/api/login", username, password)
            .await
    }

    async fn post_credentials(
        &self,
        path: &str,
        username: &str,
        password: &str,
    ) -> reqwest::Response {
        self.http
            .post(self.url(path))
            .json(&json!({"username": username, "password": password}))
            .send()
            .await
            .unwrap()
    }

    /// `POST /api/tickets` with this bearer token: the response.
    pub async fn request_ticket(&self, bearer_token: &str) -> reqwest::Response {
        self.http
            .post(self.url("/api/tickets"))
            .bearer_auth(bearer_token)
            .send()
            .await
            .unwrap()
    }

    /// Triggers shutdown and waits for the server to stop.
    pub async fn stop(self) -> TestApp {
        self.shutdown.trigger();
        let TestApp {
            addr,
            shutdown,
            server,
            database_url,
            http,
            data_dir,
            postgres,
        } = self;
        tokio::time::timeout(WAIT * 2, server)
            .await
            .expect("server stops in time")
            .expect("server task does not panic")
            .expect("server stops cleanly");
        TestApp {
            addr,
            shutdown,
            server: tokio::spawn(async { Ok(()) }),
            database_url,
            http,
            data_dir,
            postgres,
        }
    }
}

#[derive(Debug)]
pub struct Refusal {
    pub status: StatusCode,
    pub retry_after: Option<String>,
    pub body: Value,
}

impl Refusal {
    pub fn code(&self) -> &str {
        self.body["error"]["code"].as_str().unwrap_or("")
    }
}

pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// Waits until the system clock has left the Unix second `secs`.
///
/// The server dates tokens and revocations in whole seconds of the system clock (which a
/// paused tokio clock does not move) and refuses tokens dated in the future, so a token
/// issued "after" an event of second T can exist only from T + 1 on: at most a second away.
pub async fn wall_clock_past(secs: i64) {
    let target = std::time::UNIX_EPOCH + Duration::from_secs(u64::try_from(secs + 1).unwrap());
    if let Ok(left) = target.duration_since(std::time::SystemTime::now()) {
        tokio::time::sleep(left).await;
    }
}

/// A valid token for a user whose id is `id-<name>`, for any test server.
pub fn user_token(name: &str) -> String {
    let now = now();
    sign(&json!({"sub": format!("id-{name}"), "name": name, "iat": now, "exp": now + 900}))
}

/// Signs arbitrary claims with the test secret (HS256).
pub fn sign(claims: &Value) -> String {
    jsonwebtoken::encode(
        &Header::default(),
        claims,
        &EncodingKey::from_secret(TEST_SECRET.as_bytes()),
    )
    .unwrap()
}

pub fn bearer(token: &str) -> (&'static str, String) {
    ("authorization", format!("Bearer {token}"))
}

/// A WebSocket client with JSON helpers; every wait has a timeout.
pub struct Client {
    pub stream: WebSocketStream<MaybeTlsStream<TcpStream>>,
}

impl Client {
    pub async fn send(&mut self, frame: Value) {
        self.send_text(&frame.to_string()).await;
    }

    pub async fn send_text(&mut self, text: &str) {
        self.stream
            .send(Message::text(text))
            .await
            .expect("send succeeds");
    }

    pub async fn send_raw(&mut self, message: Message) {
        self.stream.send(message).await.expect("send succeeds");
    }

    /// The next text frame, as JSON (pings are answered and skipped).
    pub async fn recv(&mut self) -> Value {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let message = tokio::time::timeout_at(deadline, self.stream.next())
                .await
                .expect("a frame arrives in time")
                .expect("the connection is still open")
                .expect("the frame is readable");
            match message {
                Message::Text(text) => {
                    return serde_json::from_str(&text).expect("server sends JSON");
                }
                Message::Ping(_) | Message::Pong(_) => continue,
                other => panic!("expected a text frame, got {other:?}"),
            }
        }
    }

    /// Reads until a frame of this `type`, skipping presence (and occupancy) and typing
    /// frames only.
    pub async fn recv_type(&mut self, kind: &str) -> Value {
        loop {
            let frame = self.recv().await;
            if frame["type"] == kind {
                return frame;
            }
            assert!(
                ["presence", "occupancy", "typing"].contains(&frame["type"].as_str().unwrap_or("")),
                "expected {kind}, got {frame}"
            );
        }
    }

    /// Reads until the server closes; returns the close code (text frames before it are skipped).
    pub async fn expect_close(&mut self) -> u16 {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let next = tokio::time::timeout_at(deadline, self.stream.next())
                .await
                .expect("the server closes in time");
            match next {
                Some(Ok(Message::Close(Some(frame)))) => return u16::from(frame.code),
                Some(Ok(Message::Close(None))) => return u16::from(CloseCode::Status),
                Some(Ok(_)) => continue,
                Some(Err(error)) => panic!("connection broke instead of closing: {error}"),
                None => panic!("connection ended without a close frame"),
            }
        }
    }

    /// Collects frames until the server closes: (frames, close code).
    pub async fn frames_until_close(&mut self) -> (Vec<Value>, u16) {
        let mut frames = Vec::new();
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let next = tokio::time::timeout_at(deadline, self.stream.next())
                .await
                .expect("the server closes in time");
            match next {
                Some(Ok(Message::Text(text))) => frames.push(serde_json::from_str(&text).unwrap()),
                Some(Ok(Message::Close(Some(frame)))) => return (frames, u16::from(frame.code)),
                Some(Ok(_)) => continue,
                Some(Err(error)) => panic!("connection broke instead of closing: {error}"),
                None => panic!("connection ended without a close frame"),
            }
        }
    }

    /// Starts a normal close (1000) from the client side.
    pub async fn close_normally(&mut self) {
        use tokio_tungstenite::tungstenite::protocol::CloseFrame;
        self.stream
            .close(Some(CloseFrame {
                code: CloseCode::Normal,
                reason: "".into(),
            }))
            .await
            .expect("close frame sent");
    }

    /// Sends a message and waits for its ack.
    pub async fn say(&mut self, room: &str, body: &str) -> Value {
        self.send(json!({"type": "send", "room": room, "body": body}))
            .await;
        self.recv_type_skipping_messages("ack").await
    }

    /// Reads until a frame of this `type`, skipping presence, typing and message frames.
    pub async fn recv_type_skipping_messages(&mut self, kind: &str) -> Value {
        loop {
            let frame = self.recv().await;
            if frame["type"] == kind {
                return frame;
            }
            assert!(
                ["presence", "occupancy", "typing", "message"]
                    .contains(&frame["type"].as_str().unwrap_or("")),
                "expected {kind}, got {frame}"
            );
        }
    }
}

/// The real binary, started on a free port, its log lines kept for inspection.
pub struct ServerProcess {
    pub child: tokio::process::Child,
    pub addr: SocketAddr,
    log: Arc<std::sync::Mutex<Vec<String>>>,
    log_grew: Arc<tokio::sync::Notify>,
    /// The tasks reading its stdout and stderr (each owns its pipe).
    output_readers: Vec<tokio::task::JoinHandle<()>>,
    /// The database of [`ServerProcess::start_fresh`], removed with the server.
    _database: Option<FreshDatabase>,
}

impl ServerProcess {
    /// Starts the binary on a [`FreshDatabase`].
    pub async fn start_fresh(extra_args: &[&str]) -> Self {
        let database = FreshDatabase::new().await;
        let mut server = Self::start(&database.url, extra_args).await;
        server._database = Some(database);
        server
    }

    pub async fn start(database_url: &str, extra_args: &[&str]) -> Self {
        Self::start_with_env(database_url, extra_args, &[]).await
    }

    /// [`ServerProcess::start`] with these environment variables set (`Some`) or
    /// removed (`None`), after `PALISADE_JWT_SECRET` (the test secret) and
    /// `PALISADE_CLOSE_GRACE_MS` ([`CLOSE_GRACE_MS`]; a flag overrides it) are set.
    pub async fn start_with_env(
        database_url: &str,
        extra_args: &[&str],
        env: &[(&str, Option<&str>)],
    ) -> Self {
        use tokio::io::{AsyncBufReadExt, BufReader};
        let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_palisade"));
        command
            .args(["--listen", "127.0.0.1:0", "--database-url", database_url])
            .args(extra_args)
            .env("PALISADE_JWT_SECRET", TEST_SECRET)
            .env("PALISADE_CLOSE_GRACE_MS", CLOSE_GRACE_MS.to_string())
            .env("RUST_LOG", "debug");
        apply_env(&mut command, env);
        let mut child = command
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("the binary starts");
        let log = Arc::new(std::sync::Mutex::new(Vec::new()));
        let log_grew = Arc::new(tokio::sync::Notify::new());
        let mut output_readers = Vec::new();
        for output in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn tokio::io::AsyncRead + Unpin + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let (log, log_grew) = (Arc::clone(&log), Arc::clone(&log_grew));
            output_readers.push(tokio::spawn(async move {
                let mut lines = BufReader::new(output).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    log.lock().unwrap().push(line);
                    log_grew.notify_waiters();
                }
            }));
        }
        let mut server = Self {
            child,
            addr: "0.0.0.0:0".parse().unwrap(),
            log,
            log_grew,
            output_readers,
            _database: None,
        };
        // `https://` when it serves TLS.
        let line = server
            .wait_for_log(|line| {
                line.contains("listening on http://") || line.contains("listening on https://")
            })
            .await;
        let (_, url) = line.split_once("listening on ").unwrap();
        let (_, rest) = url.split_once("://").unwrap();
        server.addr = rest.split_whitespace().next().unwrap().parse().unwrap();
        server
    }

    /// Waits until a log line matches, and returns it.
    pub async fn wait_for_log(&self, matches: impl Fn(&str) -> bool) -> String {
        tokio::time::timeout(WAIT, async {
            loop {
                let grew = self.log_grew.notified();
                tokio::pin!(grew);
                grew.as_mut().enable();
                if let Some(line) = self.log.lock().unwrap().iter().find(|l| matches(l)) {
                    return line.clone();
                }
                grew.await;
            }
        })
        .await
        .unwrap_or_else(|_| {
            panic!(
                "the expected log line did not appear; the log:\n{}",
                self.log_text()
            )
        })
    }

    /// Sends the process a signal by name (`"TERM"`, `"HUP"`), as an operator would with
    /// `kill`.
    pub async fn signal(&self, name: &str) {
        let pid = self.child.id().expect("the server runs").to_string();
        let status = tokio::process::Command::new("kill")
            .args([format!("-{name}"), pid])
            .status()
            .await
            .expect("kill runs");
        assert!(status.success(), "kill -{name} failed");
    }

    /// Stops reading the process's stdout and stderr and closes both pipes, as a log
    /// shipper that died or `palisade | head -1` would: its next log line fails to write.
    pub async fn close_output(&mut self) {
        for reader in self.output_readers.drain(..) {
            reader.abort();
            // Aborted: the pipe it owned is closed once it has ended.
            let _ = reader.await;
        }
    }

    pub fn log_text(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    /// Connects with `?token=` and reads the `welcome` frame.
    pub async fn connect(&self, name: &str) -> Client {
        let token = user_token(name);
        let (stream, _) =
            tokio_tungstenite::connect_async(format!("ws://{}/ws?token={token}", self.addr))
                .await
                .expect("connects");
        let mut client = Client { stream };
        assert_eq!(client.recv().await["type"], "welcome");
        client
    }
}

fn apply_env(command: &mut tokio::process::Command, env: &[(&str, Option<&str>)]) {
    for (name, value) in env {
        match value {
            Some(value) => command.env(name, value),
            None => command.env_remove(name),
        };
    }
}

/// Runs the binary with these flags and environment changes (as
/// [`ServerProcess::start_with_env`]) until it exits by itself: its exit status and
/// everything it printed. For configurations it must refuse.
pub async fn run_until_exit(
    args: &[&str],
    env: &[(&str, Option<&str>)],
) -> (std::process::ExitStatus, String) {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_palisade"));
    command
        .args(["--listen", "127.0.0.1:0"])
        .args(args)
        .env("PALISADE_JWT_SECRET", TEST_SECRET)
        .kill_on_drop(true);
    apply_env(&mut command, env);
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

/// A TCP connection from `source` whose receive buffer is tiny, so what the server writes
/// to it stalls almost at once: a client that does not read.
pub async fn tiny_window(source: [u8; 4], server: SocketAddr) -> TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    socket.bind(SocketAddr::from((source, 0))).unwrap();
    socket.connect(server).await.unwrap()
}

/// A client over a [`tiny_window`] socket, past the handshake and the `welcome` frame:
/// it stops reading whenever the test stops reading it.
pub async fn tiny_window_client(server: SocketAddr, token: &str) -> Client {
    let tcp = tiny_window([127, 0, 0, 1], server).await;
    let mut request = format!("ws://{server}/ws").into_client_request().unwrap();
    request.headers_mut().insert(
        "authorization",
        HeaderValue::from_str(&format!("Bearer {token}")).unwrap(),
    );
    let (stream, _) = tokio::time::timeout(
        WAIT,
        tokio_tungstenite::client_async(request, MaybeTlsStream::Plain(tcp)),
    )
    .await
    .expect("handshake answered in time")
    .expect("handshake succeeds");
    let mut client = Client { stream };
    assert_eq!(client.recv().await["type"], "welcome");
    client
}

/// A process's resident memory (VmRSS), in KiB.
pub fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|kib| kib.parse().ok())
        .expect("VmRSS in /proc/<pid>/status")
}

/// Reads a child process's output until a line containing `marker` (how servers such as
/// redis-server and postgres say they accept connections), failing after [`WAIT`] with
/// everything `what` said; the rest is then read and dropped by a task of its own, so a
/// full pipe never blocks the child. The lines up to the marker.
pub async fn await_ready_line(
    output: impl tokio::io::AsyncRead + Unpin + Send + 'static,
    marker: &str,
    what: &str,
) -> Vec<String> {
    use tokio::io::{AsyncBufReadExt, BufReader};
    let mut lines = BufReader::new(output).lines();
    let mut said = Vec::new();
    let ready = tokio::time::timeout(WAIT, async {
        while let Ok(Some(line)) = lines.next_line().await {
            let ready = line.contains(marker);
            said.push(line);
            if ready {
                return true;
            }
        }
        false
    })
    .await;
    assert!(
        matches!(ready, Ok(true)),
        "{what} did not get ready:\n{}",
        said.join("\n")
    );
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    said
}
