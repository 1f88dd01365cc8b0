//! What happens below HTTP: TLS for https:// and wss:// (with HSTS, and without it over
//! plain HTTP), and the header timeout: one deadline for the TLS handshake and then for
//! each request's headers, so a connection that never finishes either is dropped.

use crate::helpers::spawn_app_with;
use futures_util::{SinkExt, StreamExt};
use rustls::pki_types::{CertificateDer, ServerName};
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

/// A self-signed certificate for `localhost`, written where the server can read it, and
/// a client connector that trusts exactly it.
pub(crate) fn self_signed(
    dir: &std::path::Path,
) -> (std::path::PathBuf, std::path::PathBuf, TlsConnector) {
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let cert_path = dir.join("cert.pem");
    let key_path = dir.join("key.pem");
    std::fs::write(&cert_path, certified.cert.pem()).unwrap();
    std::fs::write(&key_path, certified.signing_key.serialize_pem()).unwrap();
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from(certified.cert.der().to_vec()))
        .unwrap();
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    (cert_path, key_path, TlsConnector::from(Arc::new(config)))
}

#[tokio::test]
async fn with_a_certificate_the_chat_runs_over_wss_and_https_gets_hsts() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key, connector) = self_signed(dir.path());
    let app = spawn_app_with(move |s| s.tls = Some((cert, key))).await;
    let port = app.addr.port();
    let localhost = ServerName::try_from("localhost").unwrap();

    // https: a plain request over TLS, answered with HSTS.
    let tcp = TcpStream::connect(app.addr).await.unwrap();
    let mut tls = connector.connect(localhost.clone(), tcp).await.unwrap();
    tls.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut response = String::new();
    tls.read_to_string(&mut response).await.unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(
        response
            .to_ascii_lowercase()
            .contains("strict-transport-security: max-age="),
        "{response}"
    );

    // wss: a whole exchange.
    let tcp = TcpStream::connect(app.addr).await.unwrap();
    let tls = connector.connect(localhost, tcp).await.unwrap();
    let mut request = format!("wss://localhost:{port}/ws")
        .into_client_request()
        .unwrap();
    request.headers_mut().insert(
        "authorization",
        format!("Bearer {}", app.token("alice")).parse().unwrap(),
    );
    let (mut ws, _) = tokio_tungstenite::client_async(request, tls).await.unwrap();
    assert_eq!(next_json(&mut ws).await["type"], "welcome");
    for frame in [
        json!({"type":"join","room":"secure"}),
        json!({"type":"send","room":"secure","body":"over TLS"}),
    ] {
        ws.send(Message::text(frame.to_string())).await.unwrap();
    }
    assert_eq!(next_json(&mut ws).await["type"], "joined");
    let message = next_json(&mut ws).await;
    assert_eq!(
        (message["type"].as_str(), message["body"].as_str()),
        (Some("message"), Some("over TLS"))
    );

    // Plain HTTP to the TLS port is not served.
    let plain = app.http.get(app.url("/healthz")).send().await;
    assert!(plain.is_err() || !plain.unwrap().status().is_success());
}

/// The next text frame, as JSON.
async fn next_json<S>(ws: &mut tokio_tungstenite::WebSocketStream<S>) -> Value
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    loop {
        let frame = tokio::time::timeout(crate::helpers::WAIT, ws.next())
            .await
            .expect("a frame in time")
            .expect("still open")
            .expect("readable");
        if let Message::Text(text) = frame {
            return serde_json::from_str(&text).unwrap();
        }
    }
}

#[tokio::test]
async fn without_tls_there_is_no_hsts() {
    let app = spawn_app_with(|_| {}).await;
    let response = app.http.get(app.url("/healthz")).send().await.unwrap();
    assert!(!response.headers().contains_key("strict-transport-security"));
}

/// Reads until the server closes the connection; what it sent before.
async fn read_until_closed(tcp: &mut TcpStream) -> Vec<u8> {
    let mut received = Vec::new();
    let mut buffer = [0u8; 1024];
    loop {
        match tcp.read(&mut buffer).await {
            Ok(0) | Err(_) => return received,
            Ok(n) => received.extend_from_slice(&buffer[..n]),
        }
    }
}

#[tokio::test]
async fn a_connection_that_never_finishes_its_request_headers_is_dropped() {
    let app = spawn_app_with(|_| {}).await;
    let mut silent = TcpStream::connect(app.addr).await.unwrap();
    let mut slow = TcpStream::connect(app.addr).await.unwrap();
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    // Let the deadline pass on a paused clock; the server is in this runtime.
    tokio::time::pause();
    for _ in 0..120 {
        tokio::time::advance(Duration::from_millis(100)).await;
    }
    tokio::time::resume();
    for connection in [&mut silent, &mut slow] {
        let received = tokio::time::timeout(crate::helpers::WAIT, read_until_closed(connection))
            .await
            .expect("the server hangs up");
        let text = String::from_utf8_lossy(&received);
        assert!(!text.contains("200 OK"), "{text}");
    }
}

#[tokio::test]
async fn a_tls_connection_that_never_shakes_hands_is_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key, _) = self_signed(dir.path());
    let app = spawn_app_with(move |s| s.tls = Some((cert, key))).await;
    let mut silent = TcpStream::connect(app.addr).await.unwrap();
    tokio::time::pause();
    for _ in 0..120 {
        tokio::time::advance(Duration::from_millis(100)).await;
    }
    tokio::time::resume();
    tokio::time::timeout(crate::helpers::WAIT, read_until_closed(&mut silent))
        .await
        .expect("the server hangs up");
}
