//! Every error answer has the JSON error body and the security headers, whoever writes
//! it: a route, a missing static file, a method no route takes, a path parameter that
//! does not decode, and hyper's own answers to requests it cannot parse (400, 431, 414),
//! which under TLS carry HSTS like every other answer.

use crate::helpers::{TestApp, WAIT, spawn_app};
use serde_json::Value;
use std::net::SocketAddr;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Asserts the security headers and the JSON error body; returns the error `code`.
fn assert_json_error(what: &str, headers: &[(String, String)], body: &[u8]) -> String {
    let header = |name: &str| {
        headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .unwrap_or_else(|| panic!("{what}: no {name} header in {headers:?}"))
    };
    let csp = header("content-security-policy");
    assert!(
        csp.contains("default-src 'self'") && csp.contains("frame-ancestors 'none'"),
        "{what}: {csp}"
    );
    assert_eq!(header("x-content-type-options"), "nosniff", "{what}");
    header("referrer-policy");
    assert!(
        header("content-type").starts_with("application/json"),
        "{what}"
    );
    let json: Value = serde_json::from_slice(body).unwrap_or_else(|_| {
        panic!(
            "{what}: body is not JSON: {:?}",
            String::from_utf8_lossy(body)
        )
    });
    let code = json["error"]["code"]
        .as_str()
        .unwrap_or_else(|| panic!("{what}: {json}"));
    assert!(json["error"]["message"].is_string(), "{what}: {json}");
    code.to_owned()
}

async fn check(app: &TestApp, method: reqwest::Method, path: &str, status: u16, code: &str) {
    let what = format!("{method} {path}");
    let response = app
        .http
        .request(method, app.url(path))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), status, "{what}");
    let headers: Vec<(String, String)> = response
        .headers()
        .iter()
        .map(|(n, v)| (n.to_string(), v.to_str().unwrap_or("").to_owned()))
        .collect();
    let body = response.bytes().await.unwrap();
    assert_eq!(assert_json_error(&what, &headers, &body), code, "{what}");
}

#[tokio::test]
async fn static_404_and_405_answers_have_the_json_body_and_security_headers() {
    let app = spawn_app().await;
    use reqwest::Method;
    check(&app, Method::GET, "/no-such-file.js", 404, "not_found").await;
    check(&app, Method::GET, "/nested/missing.css", 404, "not_found").await;
    check(&app, Method::POST, "/index.html", 405, "method_not_allowed").await;
    check(&app, Method::DELETE, "/healthz", 405, "method_not_allowed").await;
    check(&app, Method::PUT, "/metrics", 405, "method_not_allowed").await;
    // What the server serves still comes through untouched.
    let page = app.http.get(app.url("/")).send().await.unwrap();
    assert_eq!(page.status(), 200);
    assert!(
        page.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
}

#[tokio::test]
async fn a_path_parameter_that_does_not_decode_gets_a_json_400() {
    let app = spawn_app().await;
    let admin = crate::helpers::sign(&serde_json::json!({
        "sub": "id-root", "name": "root", "role": "admin",
        "iat": crate::helpers::now(), "exp": crate::helpers::now() + 900,
    }));
    let response = app
        .http
        .post(app.url("/api/admin/users/%FF/revoke"))
        .bearer_auth(admin)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let headers: Vec<(String, String)> = response
        .headers()
        .iter()
        .map(|(n, v)| (n.to_string(), v.to_str().unwrap_or("").to_owned()))
        .collect();
    let body = response.bytes().await.unwrap();
    assert_eq!(assert_json_error("%FF", &headers, &body), "bad_request");
}

/// A status, the headers and the body of an answer read off the wire.
type RawAnswer = (u16, Vec<(String, String)>, Vec<u8>);

/// Writes raw bytes over plain TCP and reads the whole answer until the server closes.
async fn raw_exchange(addr: SocketAddr, request: &[u8]) -> RawAnswer {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    exchange_over(tcp, request).await
}

/// Writes raw bytes over `connection` and reads the whole answer until the server closes.
///
/// The server may answer and close before it has read all of a request it refuses (a
/// 512 KiB header): the kernel then resets the connection, which can fail our write and
/// our read. So both run at once, a write cut short is no error, and a reset ends the
/// answer once its head has arrived (what arrived is then checked like any answer).
async fn exchange_over(
    connection: impl AsyncRead + AsyncWrite + Unpin,
    request: &[u8],
) -> RawAnswer {
    let (mut reader, mut writer) = tokio::io::split(connection);
    let writing = async {
        let _cut_short_by_the_answer = writer.write_all(request).await;
    };
    let reading = async {
        let mut answer = Vec::new();
        let mut buffer = [0u8; 4096];
        loop {
            match reader.read(&mut buffer).await {
                Ok(0) => return answer,
                Ok(n) => answer.extend_from_slice(&buffer[..n]),
                Err(_) if answer.windows(4).any(|w| w == b"\r\n\r\n") => return answer,
                Err(error) => panic!(
                    "{error} before a complete head: {:?}",
                    String::from_utf8_lossy(&answer)
                ),
            }
        }
    };
    let exchange = async {
        tokio::pin!(reading);
        tokio::select! {
            answer = &mut reading => answer,
            () = writing => reading.await,
        }
    };
    let answer = tokio::time::timeout(WAIT, exchange)
        .await
        .expect("the server answers and closes in time");
    let split = answer
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no complete head: {:?}", String::from_utf8_lossy(&answer)));
    let head = String::from_utf8_lossy(&answer[..split]).into_owned();
    let body = answer[split + 4..].to_vec();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap();
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_owned(), v.trim().to_owned()))
        .collect::<Vec<_>>();
    if let Some((_, length)) = headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
    {
        assert_eq!(
            length.parse::<usize>().unwrap(),
            body.len(),
            "content-length"
        );
    }
    (status, headers, body)
}

#[tokio::test]
async fn hyper_s_own_400_for_a_malformed_request_line_has_the_json_body_and_headers() {
    let app = spawn_app().await;
    for request in [
        &b"GET / HTTP/1.1 extra\r\nHost: x\r\n\r\n"[..],
        b"G\x01T / HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET / HTTP/1.1\r\nBad Header\r\n\r\n",
    ] {
        let what = String::from_utf8_lossy(request).into_owned();
        let (status, headers, body) = raw_exchange(app.addr, request).await;
        assert_eq!(status, 400, "{what}");
        assert_eq!(assert_json_error(&what, &headers, &body), "bad_request");
        assert!(
            !headers
                .iter()
                .any(|(n, _)| n.eq_ignore_ascii_case("strict-transport-security")),
            "{what}: HSTS over plain HTTP"
        );
    }
}

#[tokio::test]
async fn under_tls_hyper_s_own_400_carries_hsts_like_every_other_answer() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key, connector) = crate::transport::self_signed(dir.path());
    let app = crate::helpers::spawn_app_with(move |s| s.tls = Some((cert, key))).await;
    let tcp = tokio::net::TcpStream::connect(app.addr).await.unwrap();
    let localhost = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let tls = connector.connect(localhost, tcp).await.unwrap();
    let (status, headers, body) =
        exchange_over(tls, b"GET / HTTP/1.1 extra\r\nHost: localhost\r\n\r\n").await;
    assert_eq!(status, 400);
    assert_eq!(
        assert_json_error("over TLS", &headers, &body),
        "bad_request"
    );
    let hsts = headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case("strict-transport-security"))
        .unwrap_or_else(|| panic!("no HSTS in {headers:?}"));
    assert!(hsts.1.starts_with("max-age="), "{hsts:?}");
}

#[tokio::test]
async fn hyper_s_own_431_for_too_many_or_too_large_headers_has_the_json_body_and_headers() {
    let app = spawn_app().await;
    let many: String = (0..200).map(|i| format!("X-Filler-{i}: a\r\n")).collect();
    let large = format!("X-Large: {}\r\n", "a".repeat(512 * 1024));
    for (what, extra) in [("too many headers", many), ("one huge header", large)] {
        let request = format!("GET / HTTP/1.1\r\nHost: x\r\n{extra}\r\n");
        let (status, headers, body) = raw_exchange(app.addr, request.as_bytes()).await;
        assert_eq!(status, 431, "{what}");
        assert_eq!(
            assert_json_error(what, &headers, &body),
            "request_header_fields_too_large"
        );
    }
}

#[tokio::test]
async fn an_overlong_uri_gets_the_json_body_and_headers_too() {
    let app = spawn_app().await;
    // Longer than the request buffer (32 KiB), so hyper refuses the head as a whole
    // (431) before it could see how long the URI alone is (its 414 is for 64 KiB).
    let request = format!("GET /{} HTTP/1.1\r\nHost: x\r\n\r\n", "a".repeat(70_000));
    let (status, headers, body) = raw_exchange(app.addr, request.as_bytes()).await;
    assert_eq!(status, 431);
    assert_eq!(
        assert_json_error("long uri", &headers, &body),
        "request_header_fields_too_large"
    );
}

#[tokio::test]
async fn request_heads_beyond_32_kib_are_refused_not_buffered() {
    let app = spawn_app().await;
    let request = format!(
        "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "a".repeat(100 * 1024)
    );
    let (status, headers, body) = raw_exchange(app.addr, request.as_bytes()).await;
    assert_eq!(status, 431, "a 100 KB header is not a request to serve");
    assert_json_error("100 KB header", &headers, &body);
    let cookie = format!(
        "GET /healthz HTTP/1.1\r\nHost: x\r\nCookie: {}\r\nConnection: close\r\n\r\n",
        "c".repeat(8 * 1024)
    );
    let (status, _, _) = raw_exchange(app.addr, cookie.as_bytes()).await;
    assert_eq!(
        status, 200,
        "a big but real head (an 8 KB cookie) is served"
    );
}

#[tokio::test]
async fn a_static_path_too_long_for_any_file_is_a_json_404_not_a_500() {
    let app = spawn_app().await;
    for path in [
        format!("/{}", "a".repeat(300)),
        format!("/{}/x", "b".repeat(256)),
    ] {
        let response = app.http.get(app.url(&path)).send().await.unwrap();
        assert_eq!(response.status(), 404, "{path}");
        let headers: Vec<(String, String)> = response
            .headers()
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_str().unwrap_or("").to_owned()))
            .collect();
        let body = response.bytes().await.unwrap();
        assert_eq!(assert_json_error(&path, &headers, &body), "not_found");
    }
}

#[tokio::test]
async fn a_request_hyper_cannot_parse_is_logged_as_a_security_event_without_its_bytes() {
    let server = crate::helpers::ServerProcess::start_fresh(&[]).await;
    let mut tcp = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    let secret = "SECRET-IN-A-HEADER";
    let request = format!("GET /?token={secret} HTTP/1.1\r\nBad Header {secret}\r\n\r\n");
    tcp.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(WAIT, tcp.read_to_end(&mut answer))
        .await
        .unwrap()
        .unwrap();
    assert!(answer.starts_with(b"HTTP/1.1 400"));
    let line = server
        .wait_for_log(|l| l.contains("malformed_request"))
        .await;
    assert!(
        line.contains("security") && line.contains("127.0.0.1") && line.contains("400"),
        "{line}"
    );
    assert!(!server.log_text().contains(secret), "{}", server.log_text());
}

#[tokio::test]
async fn a_flood_of_malformed_requests_writes_a_few_log_lines_and_one_count() {
    let server = crate::helpers::ServerProcess::start_fresh(&[
        "--security-log-burst",
        "2",
        "--security-log-window-secs",
        "1",
    ])
    .await;
    for _ in 0..6 {
        let (status, _, _) = raw_exchange(server.addr, b"GET / HTTP/1.1 extra\r\n\r\n").await;
        assert_eq!(status, 400);
    }
    let summary = server
        .wait_for_log(|line| line.contains("more like this from 127.0.0.1"))
        .await;
    assert!(summary.contains("malformed_request"), "{summary}");
    let written = server
        .log_text()
        .lines()
        .filter(|line| line.contains("event=\"malformed_request\""))
        .count();
    assert_eq!(written, 2, "{}", server.log_text());
}
