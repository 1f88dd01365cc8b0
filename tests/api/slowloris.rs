//! Connections that hold a socket without ever making a request: each is dropped within
//! its deadline whatever protocol it pretends to speak, a client that never reads its
//! answers is dropped once our writes stop moving, and too many of them from one address
//! (idle keep-alive connections included) are refused at once while everyone else is
//! still served.

use crate::helpers::{WAIT, spawn_app_with, tiny_window};
use crate::transport::self_signed;
use rustls::pki_types::ServerName;
use std::net::SocketAddr;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

/// Reads until the server closes the connection; what it sent before.
async fn read_until_closed(connection: &mut (impl AsyncRead + Unpin)) -> Vec<u8> {
    let mut received = Vec::new();
    let mut buffer = [0u8; 1024];
    loop {
        match connection.read(&mut buffer).await {
            Ok(0) | Err(_) => return received,
            Ok(n) => received.extend_from_slice(&buffer[..n]),
        }
    }
}

/// Waits (at most [`WAIT`]) for the server to hang up; what it sent before.
async fn hung_up(connection: &mut (impl AsyncRead + Unpin)) -> String {
    let received = tokio::time::timeout(WAIT, read_until_closed(connection))
        .await
        .expect("the server hangs up within its deadline");
    String::from_utf8_lossy(&received).into_owned()
}

/// A server whose deadline for request headers is one second.
async fn one_second_headers() -> crate::helpers::TestApp {
    spawn_app_with(|s| s.limits.header_timeout_secs = 1).await
}

#[tokio::test]
async fn one_byte_then_silence_is_closed_within_the_header_deadline() {
    let app = one_second_headers().await;
    let mut tcp = TcpStream::connect(app.addr).await.unwrap();
    tcp.write_all(b"P").await.unwrap();
    let answer = hung_up(&mut tcp).await;
    assert!(!answer.contains("200 OK"), "{answer}");
}

#[tokio::test]
async fn an_http2_preface_then_silence_is_closed() {
    let app = one_second_headers().await;
    let mut tcp = TcpStream::connect(app.addr).await.unwrap();
    tcp.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        .await
        .unwrap();
    hung_up(&mut tcp).await;
}

#[tokio::test]
async fn a_tls_session_idle_after_its_handshake_is_closed() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key, connector) = self_signed(dir.path());
    let app = spawn_app_with(move |s| {
        s.tls = Some((cert, key));
        s.limits.header_timeout_secs = 1;
    })
    .await;
    let tcp = TcpStream::connect(app.addr).await.unwrap();
    let mut tls = connector
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .expect("the handshake completes");
    hung_up(&mut tls).await;
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed_after_its_response() {
    let app = one_second_headers().await;
    let mut tcp = TcpStream::connect(app.addr).await.unwrap();
    tcp.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let answer = hung_up(&mut tcp).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
}

#[tokio::test]
async fn pipelined_requests_whose_answers_are_never_read_are_dropped_once_writes_stall() {
    let app = spawn_app_with(|s| s.limits.write_stall_secs = 1).await;
    let mut tcp = tiny_window([127, 0, 0, 1], app.addr).await;
    let requests = b"GET /app.js HTTP/1.1\r\nHost: x\r\n\r\n".repeat(64);
    // The server answers until its writes stop moving, then it must hang up, which
    // fails our writes; a server that waits forever blocks them forever instead.
    let writing = async {
        loop {
            if tcp.write_all(&requests).await.is_err() {
                return;
            }
        }
    };
    tokio::time::timeout(WAIT, writing)
        .await
        .expect("the server drops the connection whose writes stalled");
}

/// A connection from the loopback address `source` (one client IP of many on one host).
async fn connect_from(source: [u8; 4], server: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::from((source, 0))).unwrap();
    socket.connect(server).await.unwrap()
}

/// `GET path` from a socket bound to `source`: the whole answer.
async fn get_from(source: [u8; 4], server: SocketAddr, path: &str) -> String {
    let mut tcp = connect_from(source, server).await;
    tcp.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await
    .unwrap();
    hung_up(&mut tcp).await
}

#[tokio::test]
async fn the_pending_cap_refuses_the_next_idle_socket_from_one_address_and_serves_the_others() {
    let app = spawn_app_with(|s| {
        s.limits.max_pending_connections_per_ip = 3;
        // The idle sockets must outlive the test, not time out.
        s.limits.header_timeout_secs = 600;
    })
    .await;
    let mut idle = Vec::new();
    for _ in 0..3 {
        idle.push(TcpStream::connect(app.addr).await.unwrap());
    }
    let mut one_too_many = TcpStream::connect(app.addr).await.unwrap();
    hung_up(&mut one_too_many).await;

    // Another address is served, idle sockets or not...
    let answer = get_from([127, 0, 0, 2], app.addr, "/healthz").await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    // ...and the refusal was counted for the operator.
    let metrics = get_from([127, 0, 0, 2], app.addr, "/metrics").await;
    assert!(
        metrics.lines().any(|line| line
            .starts_with("palisade_connections_refused_total{reason=\"too_many_pending_for_ip\"}")),
        "{metrics}"
    );
    // An idle socket that completes a request and closes no longer counts: a new one fits.
    let mut waking = idle.pop().unwrap();
    waking
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    assert!(hung_up(&mut waking).await.starts_with("HTTP/1.1 200"));
    let answer = get_from([127, 0, 0, 1], app.addr, "/healthz").await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
}

/// Reads one keep-alive answer (head and `content-length` body) without waiting for a
/// close that does not come; its head.
async fn one_answer(connection: &mut TcpStream) -> String {
    let read = async {
        let mut received = Vec::new();
        let mut buffer = [0u8; 1024];
        loop {
            let n = connection.read(&mut buffer).await.expect("still open");
            assert!(n > 0, "closed: {:?}", String::from_utf8_lossy(&received));
            received.extend_from_slice(&buffer[..n]);
            let text = String::from_utf8_lossy(&received).into_owned();
            if let Some((head, body)) = text.split_once("\r\n\r\n") {
                let length: usize = head
                    .lines()
                    .find_map(|l| {
                        l.to_ascii_lowercase()
                            .strip_prefix("content-length:")
                            .map(|v| v.trim().parse().unwrap())
                    })
                    .expect("a content-length");
                if body.len() >= length {
                    return head.to_owned();
                }
            }
        }
    };
    tokio::time::timeout(WAIT, read)
        .await
        .expect("an answer in time")
}

#[tokio::test]
async fn idle_keep_alive_connections_count_against_the_per_ip_cap() {
    let app = spawn_app_with(|s| {
        s.limits.max_pending_connections_per_ip = 3;
        s.limits.header_timeout_secs = 600;
    })
    .await;
    let mut idle = Vec::new();
    for _ in 0..3 {
        let mut tcp = TcpStream::connect(app.addr).await.unwrap();
        tcp.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let head = one_answer(&mut tcp).await;
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        idle.push(tcp);
    }
    // Each did one cheap request and now idles, kept alive: still three HTTP connections,
    // so a fourth from this address is refused while another address is served.
    let mut one_too_many = TcpStream::connect(app.addr).await.unwrap();
    assert_eq!(hung_up(&mut one_too_many).await, "");
    let answer = get_from([127, 0, 0, 2], app.addr, "/healthz").await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
}

#[tokio::test]
async fn the_total_pending_cap_refuses_idle_sockets_from_any_address() {
    let app = spawn_app_with(|s| {
        s.limits.max_pending_connections = 2;
        s.limits.header_timeout_secs = 600;
    })
    .await;
    let mut idle = Vec::new();
    for source in [[127, 0, 0, 2], [127, 0, 0, 3]] {
        idle.push(connect_from(source, app.addr).await);
    }
    let mut one_too_many = connect_from([127, 0, 0, 4], app.addr).await;
    assert_eq!(hung_up(&mut one_too_many).await, "");
    // Once an idle socket completes a request and closes, there is room again.
    let mut waking = idle.pop().unwrap();
    waking
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    assert!(hung_up(&mut waking).await.starts_with("HTTP/1.1 200"));
    let metrics = get_from([127, 0, 0, 4], app.addr, "/metrics").await;
    assert!(
        metrics.lines().any(|line| line
            .starts_with("palisade_connections_refused_total{reason=\"too_many_pending\"}")),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_flood_of_refused_connections_writes_a_few_log_lines_and_one_count() {
    let server = crate::helpers::ServerProcess::start_fresh(&[
        "--max-pending-connections-per-ip",
        "1",
        "--header-timeout-secs",
        "600",
        "--security-log-burst",
        "2",
        "--security-log-window-secs",
        "1",
    ])
    .await;
    let _idle = TcpStream::connect(server.addr).await.unwrap();
    for _ in 0..6 {
        let mut refused = TcpStream::connect(server.addr).await.unwrap();
        assert_eq!(hung_up(&mut refused).await, "");
    }
    let summary = server
        .wait_for_log(|line| line.contains("more like this from 127.0.0.1"))
        .await;
    assert!(summary.contains("connection_refused"), "{summary}");
    let written = server
        .log_text()
        .lines()
        .filter(|line| line.contains("event=\"connection_refused\""))
        .count();
    assert_eq!(written, 2, "{}", server.log_text());
}
