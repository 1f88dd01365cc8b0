//! palisade behind the shipped `deploy/nginx.conf`: nginx terminates TLS with a
//! throwaway certificate and proxies to a palisade on loopback that trusts it
//! (`--trusted-proxies 127.0.0.1`), and everything is checked through nginx: wss:// chat,
//! the https:// origin, HSTS once, per-IP budgets and caps keyed on the real client
//! addresses (several 127.0.0.x sources), and a client's own `X-Forwarded-For` ignored.
//! `X-Forwarded-Proto` is sent but palisade derives nothing from it yet, so nothing here
//! checks it. What takes minutes to see (nginx outwaiting palisade's heartbeat) is checked
//! on the config's numbers instead.
//!
//! They need Debian's nginx (`scripts/install-nginx.sh`); without `/usr/sbin/nginx` they
//! pass as `SKIPPED`, unless `PALISADE_REQUIRE_NGINX=1` (CI) makes that a failure.

use crate::helpers::{TestApp, WAIT, bearer, spawn_app_with, user_token};
use crate::transport::self_signed;
use futures_util::{SinkExt, StreamExt};
use palisade::config::Settings;
use palisade::origin::{Origin, OriginPolicy};
use rustls::pki_types::ServerName;
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

const NGINX: &str = "/usr/sbin/nginx";

/// The site config as shipped.
const SITE: &str = include_str!("../../deploy/nginx.conf");

/// Clients on distinct loopback addresses, as distinct machines would be.
const PROXY: [u8; 4] = [127, 0, 0, 1];
const CLIENT_A: [u8; 4] = [127, 0, 0, 2];
const CLIENT_B: [u8; 4] = [127, 0, 0, 3];

/// palisade on 127.0.0.1:0 trusting 127.0.0.1, and nginx in front of it.
struct Proxied {
    /// Kept for the test's length: palisade stops with it.
    _app: TestApp,
    nginx: Nginx,
    connector: TlsConnector,
}

/// nginx as a child process, killed with its test.
struct Nginx {
    child: Child,
    https: SocketAddr,
    http: SocketAddr,
    dir: tempfile::TempDir,
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // One process (`master_process off`), so this leaves no worker behind.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Nginx {
    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("error.log")).unwrap_or_default()
    }
}

/// Whether nginx is here to test with; a missing one fails under `PALISADE_REQUIRE_NGINX=1`.
fn nginx_present() -> bool {
    if Path::new(NGINX).exists() {
        return true;
    }
    assert!(
        std::env::var("PALISADE_REQUIRE_NGINX").as_deref() != Ok("1"),
        "PALISADE_REQUIRE_NGINX=1 but there is no {NGINX}: run scripts/install-nginx.sh"
    );
    eprintln!("SKIPPED: no {NGINX} (scripts/install-nginx.sh installs it)");
    false
}

/// A port nobody listens on right now, for nginx to take (nginx cannot report a port 0
/// it was given; the moment between is a race no other test here takes part in).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Replaces `from` in the shipped config, which must contain it: a rewrite that no longer
/// matches would test another config than the one shipped.
fn rewrite(config: String, from: &str, to: &str) -> String {
    assert!(config.contains(from), "deploy/nginx.conf has no `{from}`");
    config.replace(from, to)
}

/// Starts palisade (`configure` on top of: trusts 127.0.0.1, allows only the https://
/// origin nginx serves) and nginx running `deploy/nginx.conf` in front of it.
async fn behind_nginx(configure: impl FnOnce(&mut Settings)) -> Proxied {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key, connector) = self_signed(dir.path());
    let https = SocketAddr::from((PROXY, free_port()));
    let http = SocketAddr::from((PROXY, free_port()));
    let origin = format!("https://localhost:{}", https.port());
    let app = spawn_app_with(|s| {
        s.trusted_proxies = vec![palisade::config::TrustedProxy::Address(PROXY.into())];
        s.origins = OriginPolicy::new(vec![Origin::parse(&origin).unwrap()], false);
        configure(s);
    })
    .await;

    let mut config = SITE.to_owned();
    config = rewrite(config, "listen 443 ssl;", &format!("listen {https} ssl;"));
    config = rewrite(config, "listen 80;", &format!("listen {http};"));
    config = rewrite(config, "listen [::]:443 ssl;", "");
    config = rewrite(config, "listen [::]:80;", "");
    config = rewrite(config, "127.0.0.1:8000", &app.addr.to_string());
    config = rewrite(
        config,
        "/etc/ssl/palisade/fullchain.pem",
        &cert.display().to_string(),
    );
    config = rewrite(
        config,
        "/etc/ssl/palisade/privkey.pem",
        &key.display().to_string(),
    );
    let site_path = dir.path().join("site.conf");
    std::fs::write(&site_path, config).unwrap();
    // The rest of an nginx.conf, as Debian's would wrap a site, with every path in `dir`:
    // one foreground process, so killing it leaves nothing behind.
    let d = dir.path().display();
    let main = format!(
        "daemon off;\nmaster_process off;\npid {d}/nginx.pid;\nerror_log {d}/error.log info;\n\
         events {{ worker_connections 256; }}\n\
         http {{\n  access_log off;\n  client_body_temp_path {d}/body;\n  proxy_temp_path {d}/proxy;\n  \
         fastcgi_temp_path {d}/fastcgi;\n  uwsgi_temp_path {d}/uwsgi;\n  scgi_temp_path {d}/scgi;\n  \
         include {};\n}}\n",
        site_path.display()
    );
    let main_path = dir.path().join("nginx.conf");
    std::fs::write(&main_path, main).unwrap();
    let child = Command::new(NGINX)
        .arg("-p")
        .arg(dir.path())
        .arg("-e")
        .arg(dir.path().join("error.log"))
        .arg("-c")
        .arg(&main_path)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("nginx starts");
    let mut nginx = Nginx {
        child,
        https,
        http,
        dir,
    };
    // nginx says nothing when it is ready: it is once its port takes connections. Retried
    // for at most WAIT, and given up at once when nginx has exited (a bad config).
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if let Some(status) = nginx.child.try_wait().unwrap() {
            panic!("nginx exited ({status}):\n{}", nginx.log());
        }
        if TcpStream::connect(https).await.is_ok() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "nginx does not listen on {https}:\n{}",
            nginx.log()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Proxied {
        _app: app,
        nginx,
        connector,
    }
}

/// A TCP connection to `to` from the loopback address `source`.
async fn tcp_from(source: [u8; 4], to: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::from((source, 0))).unwrap();
    tokio::time::timeout(WAIT, socket.connect(to))
        .await
        .expect("connected in time")
        .unwrap()
}

struct Answer {
    status: u16,
    head: String,
    body: String,
}

impl Answer {
    fn header_count(&self, name: &str) -> usize {
        let prefix = format!("{}:", name.to_ascii_lowercase());
        self.head
            .lines()
            .filter(|line| line.to_ascii_lowercase().starts_with(&prefix))
            .count()
    }
}

impl Proxied {
    fn host(&self) -> String {
        format!("localhost:{}", self.nginx.https.port())
    }

    fn origin(&self) -> String {
        format!("https://{}", self.host())
    }

    async fn tls_from(&self, source: [u8; 4]) -> TlsStream<TcpStream> {
        let tcp = tcp_from(source, self.nginx.https).await;
        tokio::time::timeout(
            WAIT,
            self.connector
                .connect(ServerName::try_from("localhost").unwrap(), tcp),
        )
        .await
        .expect("TLS handshake in time")
        .expect("nginx's certificate is the throwaway one")
    }

    /// An HTTPS request through nginx from `source`, with extra header lines.
    async fn request(
        &self,
        source: [u8; 4],
        method: &str,
        path: &str,
        extra: &[(&str, &str)],
        body: &str,
    ) -> Answer {
        let mut tls = self.tls_from(source).await;
        let mut head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\nContent-Length: {}\r\n",
            self.host(),
            body.len()
        );
        for (name, value) in extra {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        head.push_str("\r\n");
        tls.write_all(head.as_bytes()).await.unwrap();
        tls.write_all(body.as_bytes()).await.unwrap();
        let mut raw = Vec::new();
        tokio::time::timeout(WAIT, tls.read_to_end(&mut raw))
            .await
            .expect("answered in time")
            .unwrap();
        parse_answer(&raw)
    }

    /// A failed login from `source` (401 while its budget lasts, then 429).
    async fn login(&self, source: [u8; 4], extra: &[(&str, &str)]) -> Answer {
        self.request(
            source,
            "POST",
            "/api/login",
            &[&[("Content-Type", "application/json")], extra].concat(),
            &json!({"username": "nobody", "password": "wrong password"}).to_string(),
        )
        .await
    }

    /// A wss:// handshake through nginx from `source` with this `Origin`: the socket, or
    /// the refusal's status.
    async fn wss_from(
        &self,
        source: [u8; 4],
        origin: &str,
        user: &str,
    ) -> Result<WebSocketStream<TlsStream<TcpStream>>, u16> {
        let tls = self.tls_from(source).await;
        let mut request = format!("wss://{}/ws", self.host())
            .into_client_request()
            .unwrap();
        let (name, value) = bearer(&user_token(user));
        request.headers_mut().insert(name, value.parse().unwrap());
        request
            .headers_mut()
            .insert("origin", origin.parse().unwrap());
        match tokio::time::timeout(WAIT, tokio_tungstenite::client_async(request, tls))
            .await
            .expect("handshake answered in time")
        {
            Ok((ws, _)) => Ok(ws),
            Err(WsError::Http(response)) => Err(response.status().as_u16()),
            Err(other) => panic!("handshake failed oddly: {other}"),
        }
    }

    /// A socket past its `welcome`.
    async fn chat_from(
        &self,
        source: [u8; 4],
        user: &str,
    ) -> WebSocketStream<TlsStream<TcpStream>> {
        let mut ws = self
            .wss_from(source, &self.origin(), user)
            .await
            .expect("the handshake through nginx is accepted");
        assert_eq!(recv_type(&mut ws, "welcome").await["type"], "welcome");
        ws
    }
}

fn parse_answer(raw: &[u8]) -> Answer {
    let text = String::from_utf8_lossy(raw);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP answer: {text}"));
    Answer {
        status,
        head: head.to_owned(),
        body: body.to_owned(),
    }
}

/// The next text frame of `kind` (pings and other frames skipped), within [`WAIT`].
async fn recv_type(ws: &mut WebSocketStream<TlsStream<TcpStream>>, kind: &str) -> Value {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let message = tokio::time::timeout_at(deadline, ws.next())
            .await
            .unwrap_or_else(|_| panic!("a {kind} frame arrives in time"))
            .expect("the socket is open")
            .expect("the frame is readable");
        if let Message::Text(text) = message {
            let frame: Value = serde_json::from_str(&text).unwrap();
            if frame["type"] == kind {
                return frame;
            }
        }
    }
}

async fn send(ws: &mut WebSocketStream<TlsStream<TcpStream>>, frame: Value) {
    ws.send(Message::text(frame.to_string())).await.unwrap();
}

#[tokio::test]
async fn through_nginx_the_chat_runs_over_wss_with_hsts_once_and_only_the_https_origin() {
    if !nginx_present() {
        return;
    }
    let p = behind_nginx(|_| {}).await;

    // wss:// chat: two clients in a room, one hears the other.
    let mut alice = p.chat_from(CLIENT_A, "alice").await;
    let mut bob = p.chat_from(CLIENT_B, "bob").await;
    for ws in [&mut alice, &mut bob] {
        send(ws, json!({"type": "join", "room": "lobby"})).await;
        recv_type(ws, "joined").await;
    }
    send(
        &mut alice,
        json!({"type": "send", "room": "lobby", "body": "through nginx"}),
    )
    .await;
    let heard = recv_type(&mut bob, "message").await;
    assert_eq!(heard["body"], "through nginx", "{heard}");

    // The page's https:// origin is the one allowed; its http:// twin and others are not.
    for other in [
        format!("http://{}", p.host()),
        "https://evil.example".to_owned(),
    ] {
        assert_eq!(
            p.wss_from(CLIENT_A, &other, "mallory").await.err(),
            Some(403),
            "{other}"
        );
    }

    // HSTS exactly once, on success and on error answers alike.
    for path in ["/healthz", "/api/no-such-thing"] {
        let answer = p.request(CLIENT_A, "GET", path, &[], "").await;
        assert_eq!(
            answer.header_count("strict-transport-security"),
            1,
            "{path}: {}",
            answer.head
        );
        assert!(
            answer
                .head
                .to_ascii_lowercase()
                .contains("strict-transport-security: max-age=63072000; includesubdomains"),
            "{}",
            answer.head
        );
        // palisade's own security headers come through too.
        assert_eq!(
            answer.header_count("x-content-type-options"),
            1,
            "{}",
            answer.head
        );
    }

    // Plain http:// only redirects to https://.
    let mut tcp = tcp_from(CLIENT_A, p.nginx.http).await;
    tcp.write_all(b"GET /api/rooms HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut raw = Vec::new();
    tokio::time::timeout(WAIT, tcp.read_to_end(&mut raw))
        .await
        .unwrap()
        .unwrap();
    let redirect = parse_answer(&raw);
    assert_eq!(redirect.status, 301, "{}", redirect.head);
    assert!(
        redirect
            .head
            .contains("Location: https://localhost/api/rooms"),
        "{}",
        redirect.head
    );
}

#[tokio::test]
async fn through_nginx_each_client_address_has_its_own_login_budget_and_cannot_forge_another() {
    if !nginx_present() {
        return;
    }
    let p = behind_nginx(|s| {
        s.limits.auth_per_minute = 1;
        s.limits.auth_burst = 2;
    })
    .await;
    for (source, name) in [(CLIENT_A, "a"), (PROXY, "the proxy's own address")] {
        for attempt in 1..=2 {
            let answer = p.login(source, &[]).await;
            assert_eq!(answer.status, 401, "{name} #{attempt}: {}", answer.body);
        }
        assert_eq!(p.login(source, &[]).await.status, 429, "{name}");
        // A header of its own naming a fresh address (or a chain ending in one) is
        // replaced by nginx, not believed: still the spent budget. From 127.0.0.1, an
        // appended chain would have ended in a trusted hop and been believed.
        for forged in ["203.0.113.9", "203.0.113.9, 127.0.0.1", "198.51.100.7:5000"] {
            let answer = p.login(source, &[("X-Forwarded-For", forged)]).await;
            assert_eq!(
                answer.status, 429,
                "{name} forging {forged}: {}",
                answer.body
            );
        }
    }
    // Another client's budget is its own, not the proxy's.
    let answer = p.login(CLIENT_B, &[]).await;
    assert_eq!(answer.status, 401, "{}", answer.body);
}

#[tokio::test]
async fn through_nginx_the_per_ip_connection_cap_counts_each_client_address() {
    if !nginx_present() {
        return;
    }
    let p = behind_nginx(|s| s.limits.max_connections_per_ip = 1).await;
    let _a = p.chat_from(CLIENT_A, "a1").await;
    assert_eq!(
        p.wss_from(CLIENT_A, &p.origin(), "a2").await.err(),
        Some(429),
        "a second socket from the same client is over the cap"
    );
    let _b = p.chat_from(CLIENT_B, "b1").await;
}

#[tokio::test]
async fn nginx_passes_api_bodies_up_to_palisades_limit_and_refuses_bigger_ones() {
    if !nginx_present() {
        return;
    }
    let p = behind_nginx(|_| {}).await;
    // Not JSON, so palisade reads it all and refuses it as malformed: it got through.
    let within = "x".repeat(16 * 1024);
    let answer = p
        .request(
            CLIENT_A,
            "POST",
            "/api/login",
            &[("Content-Type", "application/json")],
            &within,
        )
        .await;
    assert_eq!(answer.status, 400, "{}\n{}", answer.head, answer.body);
    assert!(
        answer.body.contains("\"error\""),
        "palisade's answer: {}",
        answer.body
    );
    let over = "x".repeat(16 * 1024 + 1);
    let answer = p
        .request(
            CLIENT_A,
            "POST",
            "/api/login",
            &[("Content-Type", "application/json")],
            &over,
        )
        .await;
    assert_eq!(answer.status, 413, "{}", answer.head);
    // nginx refused it, with palisade's own error shape rather than its HTML page.
    let body: Value = serde_json::from_str(&answer.body)
        .unwrap_or_else(|_| panic!("a JSON body: {}", answer.body));
    assert_eq!(body["error"]["code"], "payload_too_large");
    assert!(
        answer
            .head
            .to_ascii_lowercase()
            .contains("content-type: application/json"),
        "{}",
        answer.head
    );
    assert_eq!(answer.header_count("strict-transport-security"), 1);
}

/// The number (in seconds or KiB, by its suffix) the shipped config gives `name`.
fn directive(name: &str) -> u64 {
    let line = SITE
        .lines()
        .map(str::trim)
        .find(|line| line.starts_with(&format!("{name} ")))
        .unwrap_or_else(|| panic!("deploy/nginx.conf sets no {name}"));
    let value = line[name.len()..].trim().trim_end_matches(';');
    value
        .trim_end_matches(['s', 'k'])
        .parse()
        .unwrap_or_else(|_| panic!("{name}: {value}"))
}

#[test]
fn the_shipped_nginx_config_outwaits_palisades_heartbeat_and_takes_its_body_size() {
    let limits = palisade::config::Limits::default();
    // An idle chat socket carries a ping every heartbeat, and palisade itself closes a
    // silent client after the pong timeout: nginx must wait longer than both or it cuts
    // sockets palisade would keep (a wait of minutes, so checked here, not through nginx).
    for timeout in ["proxy_read_timeout", "proxy_send_timeout"] {
        let secs = directive(timeout);
        assert!(
            secs > limits.heartbeat_secs && secs > limits.pong_timeout_secs,
            "{timeout} {secs}s"
        );
    }
    assert_eq!(
        directive("client_max_body_size") * 1024,
        limits.api_body_bytes as u64
    );
    assert_eq!(
        directive("client_header_timeout"),
        limits.header_timeout_secs
    );
}
