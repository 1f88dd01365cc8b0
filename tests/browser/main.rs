//! The web client in a real browser: headless Chromium driven over WebDriver.
//!
//! These tests need Debian's Chromium and ChromeDriver (`scripts/install-browser.sh`,
//! which `.ci/run` calls). Without them each test prints that it is skipped and passes,
//! so `cargo test` works on any machine; with `PALISADE_REQUIRE_BROWSER` set (CI) a
//! missing browser fails instead. Each test saves screenshots under
//! `target/screenshots/`.

mod accessibility;

use fantoccini::{Client, ClientBuilder, Locator};
use futures_util::{SinkExt, StreamExt};
use hyper_util::client::legacy::connect::HttpConnector;
use palisade::config::Settings;
use palisade::origin::{Origin, OriginPolicy};
use palisade::shutdown::Shutdown;
use palisade::startup::Application;
use secrecy::SecretString;
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::TcpListener;
use tokio::process::{Child, Command};
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;

mod web_client;

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
const SECRET: &str = "browser-test-secret-0123456789abcdef0123456789";
const WAIT: Duration = Duration::from_secs(20);

/// A palisade server whose only allowed origin is its own.
struct Server {
    addr: SocketAddr,
    shutdown: Shutdown,
    task: JoinHandle<std::io::Result<()>>,
    database_url: String,
    _dir: std::sync::Arc<tempfile::TempDir>,
}

impl Server {
    async fn start() -> Self {
        let dir = std::sync::Arc::new(tempfile::tempdir().unwrap());
        let url = format!("sqlite://{}", dir.path().join("p.db").display());
        Self::start_on("127.0.0.1:0".parse().unwrap(), url, dir, |_| {}).await
    }

    async fn start_on(
        addr: SocketAddr,
        database_url: String,
        dir: std::sync::Arc<tempfile::TempDir>,
        configure: impl FnOnce(&mut Settings),
    ) -> Self {
        let listener = TcpListener::bind(addr).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut settings = Settings::development();
        settings.database_url = database_url.clone();
        settings.jwt_secret = SecretString::from(SECRET);
        // A page that is not reading holds up the server's stop this long, not 3 s.
        settings.limits.close_grace_ms = 500;
        settings.origins = OriginPolicy::new(
            vec![Origin::parse(&format!("http://{addr}")).unwrap()],
            true,
        );
        configure(&mut settings);
        let app = Application::build_on(settings, listener).await.unwrap();
        let shutdown = app.shutdown_handle();
        let task = tokio::spawn(app.run_until_stopped());
        Self {
            addr,
            shutdown,
            task,
            database_url,
            _dir: dir,
        }
    }

    /// Stops the server and waits until `page` shows it offline. Returns what
    /// [`Server::start_on`] needs to start it again on the same address and data.
    async fn stop_seen_by(
        self,
        page: &Client,
    ) -> (SocketAddr, String, std::sync::Arc<tempfile::TempDir>) {
        self.shutdown.trigger();
        self.task.await.unwrap().unwrap();
        until(
            page,
            "offline",
            "!document.querySelector('#conn-state.online')",
        )
        .await;
        (self.addr, self.database_url, self._dir)
    }

    fn url(&self) -> String {
        format!("http://{}/", self.addr)
    }

    fn token(&self, name: &str) -> String {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        jsonwebtoken::encode(
            &jsonwebtoken::Header::default(),
            &json!({"sub": format!("id-{name}"), "name": name, "iat": now, "exp": now + 900}),
            &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()),
        )
        .unwrap()
    }

    /// A plain WebSocket client in `room`, for messages the pages did not send.
    async fn bot(
        &self,
        name: &str,
        room: &str,
    ) -> tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>
    {
        let url = format!("ws://{}/ws?token={}", self.addr, self.token(name));
        let (mut ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
        ws.send(Message::text(
            json!({"type":"join","room":room}).to_string(),
        ))
        .await
        .unwrap();
        loop {
            let frame = ws.next().await.unwrap().unwrap();
            if let Message::Text(text) = frame
                && serde_json::from_str::<Value>(&text).unwrap()["type"] == "joined"
            {
                return ws;
            }
        }
    }
}

/// A server whose room `archive` holds `old` messages, and a page signed in as `reader`
/// that has just joined it (the server must outlive the page).
async fn reader_of_an_archive(browser: &Browser, old: usize) -> (Server, Client) {
    let dir = std::sync::Arc::new(tempfile::tempdir().unwrap());
    let url = format!("sqlite://{}", dir.path().join("p.db").display());
    let server = Server::start_on("127.0.0.1:0".parse().unwrap(), url, dir, |s| {
        s.limits.messages_per_sec = 10_000;
        s.limits.message_burst = 10_000;
    })
    .await;
    let mut bot = server.bot("archivist", "archive").await;
    for i in 1..=old {
        bot_says(&mut bot, "archive", &format!("old message {i}")).await;
    }
    let page = browser.page("reader").await;
    sign_up(&page, &server, "reader").await;
    join_room(&page, "archive").await;
    (server, page)
}

/// Sends a message from a bot and waits for its ack.
async fn bot_says<S>(ws: &mut tokio_tungstenite::WebSocketStream<S>, room: &str, body: &str)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    ws.send(Message::text(
        json!({"type":"send","room":room,"body":body}).to_string(),
    ))
    .await
    .unwrap();
    loop {
        if let Message::Text(text) = ws.next().await.unwrap().unwrap()
            && serde_json::from_str::<Value>(&text).unwrap()["type"] == "ack"
        {
            return;
        }
    }
}

/// ChromeDriver, and one profile folder per page so pages do not share a session.
struct Browser {
    driver: Child,
    port: u16,
    profiles: tempfile::TempDir,
}

impl Browser {
    async fn start(test: &str) -> Option<Self> {
        if !Path::new(CHROMIUM).exists() || !Path::new(CHROMEDRIVER).exists() {
            // CI sets this so the browser tests can never be skipped there unnoticed.
            assert!(
                std::env::var_os("PALISADE_REQUIRE_BROWSER").is_none(),
                "PALISADE_REQUIRE_BROWSER is set but {CHROMIUM} or {CHROMEDRIVER} is missing"
            );
            // Straight to stderr, past the test harness's capture, so a skip is never silent.
            use std::io::Write;
            let _ = writeln!(
                std::io::stderr(),
                "SKIPPED browser test {test}: no {CHROMIUM} or {CHROMEDRIVER} (run scripts/install-browser.sh)"
            );
            return None;
        }
        let port = {
            let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            probe.local_addr().unwrap().port()
        };
        let mut driver = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            // Its own process group, which the browsers it starts join: a test that fails
            // before closing its session must not leave Chromium running (see Drop).
            .process_group(0)
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(driver.stdout.take().unwrap()).lines();
        tokio::time::timeout(WAIT, async {
            while let Some(line) = lines.next_line().await.unwrap() {
                if line.contains("started successfully") {
                    return;
                }
            }
            panic!("chromedriver exited");
        })
        .await
        .expect("chromedriver starts");
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Some(Self {
            driver,
            port,
            profiles: tempfile::tempdir().unwrap(),
        })
    }

    async fn page(&self, name: &str) -> Client {
        let profile = self.profiles.path().join(name);
        let mut capabilities = serde_json::Map::new();
        capabilities.insert(
            "goog:chromeOptions".into(),
            json!({
                "binary": CHROMIUM,
                "args": [
                    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                    "--disable-background-networking", "--disable-component-update",
                    "--disable-sync", "--no-first-run", "--window-size=1100,800",
                    format!("--user-data-dir={}", profile.display()),
                ]
            }),
        );
        ClientBuilder::new(HttpConnector::new())
            .capabilities(capabilities)
            .connect(&format!("http://127.0.0.1:{}", self.port))
            .await
            .expect("a browser session")
    }
}

impl Drop for Browser {
    /// Kills chromedriver and every browser it started (their process group): killing
    /// chromedriver alone left a failed test's Chromium running.
    fn drop(&mut self) {
        if let Some(pid) = self.driver.id() {
            let _ = std::process::Command::new("kill")
                .args(["-KILL", "--", &format!("-{pid}")])
                .stderr(Stdio::null())
                .status();
        }
        let _ = self.driver.start_kill();
    }
}

fn screenshot_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

async fn screenshot(page: &Client, name: &str) {
    let png = page.screenshot().await.unwrap();
    std::fs::write(screenshot_dir().join(format!("{name}.png")), png).unwrap();
}

/// Waits until `condition` (a JS expression) holds in the page: checked now and on every
/// change to the document, with no polling; WebDriver's script timeout bounds the wait.
async fn until(page: &Client, what: &str, condition: &str) {
    let script = format!(
        "const done = arguments[0];
         const holds = () => {{ try {{ return Boolean({condition}); }} catch (e) {{ return false; }} }};
         if (holds()) {{ done(true); return; }}
         const observer = new MutationObserver(() => {{
             if (holds()) {{ observer.disconnect(); done(true); }}
         }});
         observer.observe(document, {{ subtree: true, childList: true, characterData: true, attributes: true }});"
    );
    if let Err(error) = page.execute_async(&script, vec![]).await {
        panic!("timed out waiting for {what}: {error}");
    }
}

/// Opens the client, creates an account and waits for the socket to be online.
async fn sign_up(page: &Client, server: &Server, name: &str) {
    page.goto(&server.url()).await.unwrap();
    let signed_out_view = page
        .execute(
            "return [document.getElementById('auth').offsetParent !== null, document.getElementById('chat').offsetParent === null];",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(
        signed_out_view,
        json!([true, true]),
        "only the sign-in form shows"
    );
    page.find(Locator::Id("username"))
        .await
        .unwrap()
        .send_keys(name)
        .await
        .unwrap();
    page.find(Locator::Id("password"))
        .await
        .unwrap()
        .send_keys("correct horse battery")
        .await
        .unwrap();
    page.find(Locator::Id("register"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    until(
        page,
        "online",
        "document.querySelector('#conn-state.online')",
    )
    .await;
}

async fn join_room(page: &Client, room: &str) {
    let input = page.find(Locator::Id("room-name")).await.unwrap();
    input.send_keys(room).await.unwrap();
    page.find(Locator::Css("#join-form button"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    until(
        page,
        "joined",
        &format!("document.querySelector('#room-title').textContent === '#{room}'"),
    )
    .await;
}

async fn say(page: &Client, body: &str) {
    let composer = page.find(Locator::Id("body")).await.unwrap();
    composer.send_keys(body).await.unwrap();
    composer.send_keys("\u{E007}").await.unwrap(); // Enter
}

/// Two pages, Alice's and Bob's, signed up and in `room`.
async fn alice_and_bob_in(browser: &Browser, server: &Server, room: &str) -> (Client, Client) {
    let alice = browser.page("alice").await;
    let bob = browser.page("bob").await;
    sign_up(&alice, server, "alice").await;
    sign_up(&bob, server, "bob").await;
    join_room(&alice, room).await;
    join_room(&bob, room).await;
    (alice, bob)
}

/// How many messages in the page have exactly this body.
fn count_of(body: &str) -> String {
    format!(
        "[...document.querySelectorAll('#messages li:not(.pending) .body')].filter(b => b.textContent === {}).length",
        serde_json::to_string(body).unwrap()
    )
}

#[tokio::test]
async fn two_people_chat_from_two_browsers() {
    let Some(browser) = Browser::start("two_people_chat_from_two_browsers").await else {
        return;
    };
    let server = Server::start().await;
    let (alice, bob) = alice_and_bob_in(&browser, &server, "lobby").await;
    until(
        &alice,
        "bob online",
        "[...document.querySelectorAll('#members li')].some(li => li.textContent === 'bob')",
    )
    .await;

    say(&alice, "hello bob").await;
    until(
        &bob,
        "alice's message",
        &format!("{} === 1", count_of("hello bob")),
    )
    .await;
    say(&bob, "hi alice").await;
    until(
        &alice,
        "bob's reply",
        &format!("{} === 1", count_of("hi alice")),
    )
    .await;
    until(
        &alice,
        "no pending message",
        "document.querySelectorAll('#messages li.pending').length === 0",
    )
    .await;
    screenshot(&alice, "two-people-alice").await;
    screenshot(&bob, "two-people-bob").await;
    // On a phone-sized window the layout stacks and nothing scrolls sideways.
    bob.set_window_size(390, 844).await.unwrap();
    let fits = bob
        .execute(
            "return document.documentElement.scrollWidth <= window.innerWidth;",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(fits, json!(true));
    screenshot(&bob, "two-people-bob-phone").await;
    alice.close().await.unwrap();
    bob.close().await.unwrap();
}

#[tokio::test]
async fn a_message_that_looks_like_html_shows_literally_and_runs_nothing() {
    let Some(browser) = Browser::start("a_message_that_looks_like_html").await else {
        return;
    };
    let server = Server::start().await;
    let (alice, bob) = alice_and_bob_in(&browser, &server, "xss").await;
    let payload = "<img src=x onerror=\"window.__pwned=1\"><script>window.__pwned=2</script>";
    say(&alice, payload).await;
    until(
        &bob,
        "the payload as text",
        &format!("{} === 1", count_of(payload)),
    )
    .await;
    let ran = bob
        .execute(
            "return [window.__pwned === undefined, document.querySelectorAll('#messages img, #messages script').length];",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(ran, json!([true, 0]));
    screenshot(&bob, "xss-literal").await;
    alice.close().await.unwrap();
    bob.close().await.unwrap();
}

#[tokio::test]
async fn after_a_server_restart_both_pages_recover_with_every_missed_message_once() {
    let Some(browser) = Browser::start("after_a_server_restart").await else {
        return;
    };
    let server = Server::start().await;
    let (alice, bob) = alice_and_bob_in(&browser, &server, "ops").await;
    say(&alice, "before the restart").await;
    until(
        &bob,
        "the first message",
        &format!("{} === 1", count_of("before the restart")),
    )
    .await;

    // The server goes away; Alice writes while it is down.
    let server = {
        let (addr, database_url, dir) = server.stop_seen_by(&alice).await;
        say(&alice, "written while down").await;
        Server::start_on(addr, database_url, dir, |_| {}).await
    };
    // Someone else speaks as soon as it is back, before the pages reconnect.
    let mut carol = server.bot("carol", "ops").await;
    bot_says(&mut carol, "ops", "said while you were away").await;

    for page in [&alice, &bob] {
        until(
            page,
            "online again",
            "document.querySelector('#conn-state.online')",
        )
        .await;
        for body in [
            "before the restart",
            "written while down",
            "said while you were away",
        ] {
            until(page, body, &format!("{} === 1", count_of(body))).await;
        }
        let order = page
            .execute(
                "return [...document.querySelectorAll('#messages li')].map(li => Number(li.dataset.seq));",
                vec![],
            )
            .await
            .unwrap();
        let seqs: Vec<u64> = serde_json::from_value(order).unwrap();
        assert!(
            seqs.windows(2).all(|w| w[0] < w[1]),
            "in seq order, once each: {seqs:?}"
        );
    }
    screenshot(&alice, "restart-alice").await;
    screenshot(&bob, "restart-bob").await;
    alice.close().await.unwrap();
    bob.close().await.unwrap();
}

/// Another web site: a bare page on another port, with no CSP of its own, as an
/// attacker's site would be.
async fn attacker_site() -> SocketAddr {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut request = [0u8; 4096];
                let _ = socket.read(&mut request).await;
                let page = "<!doctype html><title>totally harmless</title><p>hello</p>";
                let response = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: text/html\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{page}",
                    page.len()
                );
                let _ = socket.write_all(response.as_bytes()).await;
            });
        }
    });
    addr
}

#[tokio::test]
async fn a_page_from_another_origin_cannot_open_the_socket() {
    let Some(browser) = Browser::start("a_page_from_another_origin").await else {
        return;
    };
    let server = Server::start().await;
    let elsewhere = attacker_site().await;
    let token = server.token("mallory");
    let attempt = format!(
        "const done = arguments[0];
         const ws = new WebSocket('ws://{}/ws?token={token}');
         ws.onmessage = () => done('open');
         ws.onclose = () => done('refused');",
        server.addr
    );
    let page = browser.page("mallory").await;
    page.goto(&format!("http://{elsewhere}/")).await.unwrap();
    let from_elsewhere = page.execute_async(&attempt, vec![]).await.unwrap();
    assert_eq!(from_elsewhere, json!("refused"));
    // The same script from the server's own origin connects: the origin is the difference.
    page.goto(&server.url()).await.unwrap();
    let from_home = page.execute_async(&attempt, vec![]).await.unwrap();
    assert_eq!(from_home, json!("open"));
    screenshot(&page, "other-origin").await;
    page.close().await.unwrap();
}

#[tokio::test]
async fn older_messages_load_when_scrolling_up() {
    let Some(browser) = Browser::start("older_messages_load_when_scrolling_up").await else {
        return;
    };
    let (_server, page) = reader_of_an_archive(&browser, 120).await;
    let count = "document.querySelectorAll('#messages li').length";
    until(&page, "the latest 50", &format!("{count} === 50")).await;
    for expected in [100, 120] {
        page.execute(
            "const list = document.getElementById('messages'); list.scrollTop = 0; list.dispatchEvent(new Event('scroll'));",
            vec![],
        )
        .await
        .unwrap();
        until(&page, "older messages", &format!("{count} === {expected}")).await;
    }
    until(
        &page,
        "the very first message on top",
        &format!(
            "document.querySelector('#messages li .body').textContent === 'old message 1' && {}",
            "document.querySelector('#messages li').dataset.seq === '1'"
        ),
    )
    .await;
    screenshot(&page, "history-scroll").await;
    page.close().await.unwrap();
}
