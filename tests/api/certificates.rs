//! Certificate renewal without a restart: the binary, serving TLS, reads its certificate
//! and key again on SIGHUP or when the files change. New handshakes get the new
//! certificate, connections already open keep theirs and keep working, and files that
//! do not load leave the current certificate in place. Each test runs the real binary,
//! so the signal is the real one, and reads its log.

use crate::helpers::{ServerProcess, WAIT, user_token};
use futures_util::{SinkExt, StreamExt};
use rustls::pki_types::{CertificateDer, ServerName};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

/// A self-signed certificate for `localhost` and its key, in PEM, and the certificate's DER.
struct Pair {
    cert_pem: String,
    key_pem: String,
    der: Vec<u8>,
}

impl Pair {
    fn new() -> Self {
        let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
        Self {
            cert_pem: certified.cert.pem(),
            key_pem: certified.signing_key.serialize_pem(),
            der: certified.cert.der().to_vec(),
        }
    }
}

/// The certificate and key files the server reads.
struct Files {
    cert: PathBuf,
    key: PathBuf,
}

impl Files {
    fn new(dir: &Path) -> Self {
        Self {
            cert: dir.join("cert.pem"),
            key: dir.join("key.pem"),
        }
    }

    /// Writes both files, each whole at once (by renaming a finished file over it, as
    /// certbot's symlink swap is), so the server never reads half of one.
    fn write(&self, cert_pem: &str, key_pem: &str) {
        for (path, text) in [(&self.cert, cert_pem), (&self.key, key_pem)] {
            let partial = path.with_extension("partial");
            std::fs::write(&partial, text).unwrap();
            std::fs::rename(&partial, path).unwrap();
        }
    }

    async fn start_server(&self, watch_ms: &str) -> ServerProcess {
        ServerProcess::start_fresh(&[
            "--tls-cert",
            self.cert.to_str().unwrap(),
            "--tls-key",
            self.key.to_str().unwrap(),
            "--tls-watch-ms",
            watch_ms,
        ])
        .await
    }
}

/// Checks far apart enough that only SIGHUP can explain a reload within a test.
const NO_WATCH: &str = "3600000";

/// A client that trusts every one of these certificates, so it can tell them apart by
/// what the server presents rather than by failing. It resumes no sessions: a resumed
/// session shows no certificate (the client reports the one it was first shown).
fn trusting(pairs: &[&Pair]) -> TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    for pair in pairs {
        roots.add(CertificateDer::from(pair.der.clone())).unwrap();
    }
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.resumption = rustls::client::Resumption::disabled();
    TlsConnector::from(Arc::new(config))
}

async fn tls_connect(server: &ServerProcess, connector: &TlsConnector) -> TlsStream<TcpStream> {
    let tcp = TcpStream::connect(server.addr).await.unwrap();
    let localhost = ServerName::try_from("localhost").unwrap();
    tokio::time::timeout(WAIT, connector.connect(localhost, tcp))
        .await
        .expect("the handshake ends in time")
        .expect("the handshake succeeds")
}

/// The certificate a new connection is shown, in DER.
async fn served_certificate(server: &ServerProcess, connector: &TlsConnector) -> Vec<u8> {
    let tls = tls_connect(server, connector).await;
    let (_, session) = tls.get_ref();
    session.peer_certificates().expect("a certificate")[0].to_vec()
}

type Wss = WebSocketStream<TlsStream<TcpStream>>;

/// A `wss://` session past `welcome`, joined to `room`.
async fn wss_in_room(
    server: &ServerProcess,
    connector: &TlsConnector,
    name: &str,
    room: &str,
) -> Wss {
    let tls = tls_connect(server, connector).await;
    let mut request = format!("wss://localhost:{}/ws", server.addr.port())
        .into_client_request()
        .unwrap();
    request.headers_mut().insert(
        "authorization",
        format!("Bearer {}", user_token(name)).parse().unwrap(),
    );
    let (mut ws, _) = tokio_tungstenite::client_async(request, tls).await.unwrap();
    assert_eq!(next_of_type(&mut ws, "welcome").await["type"], "welcome");
    send(&mut ws, json!({"type": "join", "room": room})).await;
    next_of_type(&mut ws, "joined").await;
    ws
}

async fn send(ws: &mut Wss, frame: Value) {
    ws.send(Message::text(frame.to_string())).await.unwrap();
}

/// The next frame of this type, skipping others (presence and the like).
async fn next_of_type(ws: &mut Wss, kind: &str) -> Value {
    loop {
        let frame = tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("a frame in time")
            .expect("still open")
            .expect("readable");
        if let Message::Text(text) = frame {
            let value: Value = serde_json::from_str(&text).unwrap();
            if value["type"] == kind {
                return value;
            }
        }
    }
}

async fn hangup(server: &ServerProcess) {
    server.signal("HUP").await;
}

#[tokio::test]
async fn with_tls_the_startup_log_gives_an_https_url() {
    let dir = tempfile::tempdir().unwrap();
    let files = Files::new(dir.path());
    let pair = Pair::new();
    files.write(&pair.cert_pem, &pair.key_pem);
    let server = files.start_server(NO_WATCH).await;
    let line = server
        .wait_for_log(|line| line.contains("listening on"))
        .await;
    assert!(
        line.contains(&format!("listening on https://{}", server.addr)),
        "{line}"
    );

    let plain = ServerProcess::start_fresh(&[]).await;
    let line = plain
        .wait_for_log(|line| line.contains("listening on"))
        .await;
    assert!(
        line.contains(&format!("listening on http://{}", plain.addr)),
        "{line}"
    );
}

#[tokio::test]
async fn without_tls_sighup_changes_nothing_and_the_server_keeps_serving() {
    // systemd counts a process ended by SIGHUP as stopped cleanly: `systemctl reload`
    // on a node without TLS must not stop it.
    let server = ServerProcess::start_fresh(&[]).await;
    let mut alice = server.connect("alice").await;
    hangup(&server).await;
    server
        .wait_for_log(|line| line.contains("nothing to reload"))
        .await;
    alice
        .send(json!({"type": "join", "room": "after-hangup"}))
        .await;
    assert_eq!(alice.recv_type("joined").await["type"], "joined");
    let _ = server.connect("bob").await;
}

#[tokio::test]
async fn after_sighup_new_connections_get_the_renewed_certificate_and_open_ones_keep_working() {
    let dir = tempfile::tempdir().unwrap();
    let files = Files::new(dir.path());
    let (old, renewed) = (Pair::new(), Pair::new());
    files.write(&old.cert_pem, &old.key_pem);
    let server = files.start_server(NO_WATCH).await;
    let connector = trusting(&[&old, &renewed]);
    assert_eq!(served_certificate(&server, &connector).await, old.der);
    let mut before = wss_in_room(&server, &connector, "alice", "renewal").await;

    files.write(&renewed.cert_pem, &renewed.key_pem);
    hangup(&server).await;
    let line = server
        .wait_for_log(|line| line.contains("tls_certificate_reloaded"))
        .await;
    assert!(line.contains("SIGHUP"), "{line}");

    assert_eq!(served_certificate(&server, &connector).await, renewed.der);
    // The connection made with the old certificate still carries messages both ways.
    let mut after = wss_in_room(&server, &connector, "bob", "renewal").await;
    send(
        &mut before,
        json!({"type": "send", "room": "renewal", "body": "still here"}),
    )
    .await;
    assert_eq!(next_of_type(&mut before, "ack").await["type"], "ack");
    assert_eq!(
        next_of_type(&mut after, "message").await["body"],
        "still here"
    );
    send(
        &mut after,
        json!({"type": "send", "room": "renewal", "body": "renewed"}),
    )
    .await;
    assert_eq!(
        next_of_type(&mut before, "message").await["body"],
        "renewed"
    );
}

#[tokio::test]
async fn files_that_do_not_load_on_sighup_leave_the_current_certificate_in_place() {
    let dir = tempfile::tempdir().unwrap();
    let files = Files::new(dir.path());
    let (current, other) = (Pair::new(), Pair::new());
    files.write(&current.cert_pem, &current.key_pem);
    let server = files.start_server(NO_WATCH).await;
    let connector = trusting(&[&current, &other]);

    // Each bad pair is refused with a line naming the file at fault, and new connections
    // still get the current certificate.
    let secret = "c2VjcmV0LWtleS1tYXRlcmlhbA";
    let broken_key = format!("-----BEGIN PRIVATE KEY-----\n{secret}\n-----END PRIVATE KEY-----\n");
    let cert_path = files.cert.display().to_string();
    let key_path = files.key.display().to_string();
    let cases: [(&str, &str, &str, &str); 3] = [
        (
            "not a certificate",
            &current.key_pem,
            "cannot read the TLS certificate",
            &cert_path,
        ),
        (
            &other.cert_pem,
            &current.key_pem,
            "does not belong to the certificate",
            &key_path,
        ),
        (
            &current.cert_pem,
            &broken_key,
            "cannot read the TLS private key",
            &key_path,
        ),
    ];
    for (cert_pem, key_pem, complaint, names) in cases {
        files.write(cert_pem, key_pem);
        hangup(&server).await;
        let line = server
            .wait_for_log(|line| {
                line.contains("tls_certificate_reload_failed") && line.contains(complaint)
            })
            .await;
        assert!(line.contains(names), "{line}");
        assert_eq!(served_certificate(&server, &connector).await, current.der);
    }
    assert!(!server.log_text().contains(secret), "{}", server.log_text());
    assert!(!server.log_text().contains("tls_certificate_reloaded"));
    let _ = wss_in_room(&server, &connector, "alice", "still-serving").await;
}

#[tokio::test]
async fn renewed_files_are_served_without_a_signal() {
    let dir = tempfile::tempdir().unwrap();
    let files = Files::new(dir.path());
    let (old, renewed) = (Pair::new(), Pair::new());
    files.write(&old.cert_pem, &old.key_pem);
    let server = files.start_server("200").await;
    let connector = trusting(&[&old, &renewed]);
    assert_eq!(served_certificate(&server, &connector).await, old.der);

    files.write(&renewed.cert_pem, &renewed.key_pem);
    // The reload's log line is the event to wait for: once it is written the new
    // certificate is in place (it is logged after the swap). It comes within a poll
    // or two (200 ms each); WAIT bounds it.
    let line = server
        .wait_for_log(|line| line.contains("tls_certificate_reloaded"))
        .await;
    assert!(line.contains("file_changed"), "{line}");
    assert_eq!(served_certificate(&server, &connector).await, renewed.der);
}
