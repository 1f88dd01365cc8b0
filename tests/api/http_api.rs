//! The HTTP API: accounts, tokens, limits, headers and error bodies.

use crate::helpers::{operator_sql, spawn_app, spawn_app_with};
use serde_json::{Value, json};

async fn body(response: reqwest::Response) -> Value {
    response.json().await.expect("a JSON body")
}

#[tokio::test]
async fn register_then_login_returns_tokens_that_open_a_socket() {
    let app = spawn_app().await;
    let response = app.register("alice_1", "correct horse").await;
    assert_eq!(response.status(), 201);
    let registered = body(response).await;
    assert_eq!(registered["user"]["name"], "alice_1");
    assert!(
        registered["user"]["id"]
            .as_str()
            .is_some_and(|id| !id.is_empty())
    );
    assert!(registered["expires_at"].as_i64().unwrap() > crate::helpers::now());

    let response = app.login("alice_1", "correct horse").await;
    assert_eq!(response.status(), 200);
    let logged_in = body(response).await;
    assert_eq!(logged_in["user"], registered["user"]);
    let token = logged_in["token"].as_str().unwrap();
    let mut client = app
        .try_connect(&[crate::helpers::bearer(token)], "")
        .await
        .expect("the login token opens a socket");
    assert_eq!(client.recv().await["user"], registered["user"]);
}

#[tokio::test]
async fn registration_checks_name_and_password_and_refuses_taken_names() {
    let app = spawn_app().await;
    for (name, password, status, code) in [
        ("al", "long enough", 400, "invalid_username"),
        ("alice!", "long enough", 400, "invalid_username"),
        (
            &"a".repeat(33) as &str,
            "long enough",
            400,
            "invalid_username",
        ),
        ("alice", "short", 400, "weak_password"),
        ("alice", &"p".repeat(129), 400, "weak_password"),
    ] {
        let response = app.register(name, password).await;
        assert_eq!(response.status(), status, "{name}");
        assert_eq!(body(response).await["error"]["code"], code, "{name}");
    }
    assert_eq!(app.register("alice", "long enough").await.status(), 201);
    let taken = app.register("ALICE", "long enough").await;
    assert_eq!(taken.status(), 409);
    assert_eq!(body(taken).await["error"]["code"], "username_taken");
}

#[tokio::test]
async fn login_answers_the_same_for_unknown_users_and_wrong_passwords() {
    let app = spawn_app().await;
    app.register("alice", "correct horse").await;
    let wrong = app.login("alice", "wrong horse").await;
    let unknown = app.login("nobody", "wrong horse").await;
    assert_eq!(wrong.status(), 401);
    assert_eq!(unknown.status(), 401);
    assert_eq!(body(wrong).await, body(unknown).await);
}

#[tokio::test]
async fn register_and_login_are_rate_limited_per_ip() {
    let app = spawn_app_with(|s| {
        s.limits.auth_per_minute = 3;
        s.limits.auth_burst = 3;
    })
    .await;
    for _ in 0..3 {
        assert_eq!(app.login("nobody", "whatever1").await.status(), 401);
    }
    let limited = app.login("nobody", "whatever1").await;
    assert_eq!(limited.status(), 429);
    let retry_after: u64 = limited.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry_after));
    assert_eq!(body(limited).await["error"]["code"], "rate_limited");
    assert_eq!(app.register("newuser", "long enough").await.status(), 429);
}

#[tokio::test]
async fn a_body_over_16_kib_is_413_payload_too_large() {
    let app = spawn_app().await;
    let response = app
        .http
        .post(app.url("/api/register"))
        .json(&json!({"username": "alice", "password": "x".repeat(17 * 1024)}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 413);
    assert_eq!(body(response).await["error"]["code"], "payload_too_large");
}

#[tokio::test]
async fn a_declared_body_over_the_limit_is_413_before_the_client_sends_it() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let app = spawn_app().await;
    let mut tcp = tokio::net::TcpStream::connect(app.addr).await.unwrap();
    tcp.write_all(
        b"POST /api/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
          Content-Length: 99999999\r\nExpect: 100-continue\r\n\r\n",
    )
    .await
    .unwrap();
    // No body follows: the answer must not wait for it.
    let mut head = Vec::new();
    tokio::time::timeout(std::time::Duration::from_secs(5), async {
        while !head.ends_with(b"\r\n\r\n") {
            head.push(tcp.read_u8().await.unwrap());
        }
    })
    .await
    .expect("an answer without the body");
    let head = String::from_utf8_lossy(&head);
    assert!(head.starts_with("HTTP/1.1 413"), "{head}");
}

#[tokio::test]
async fn malformed_bodies_get_json_errors() {
    let app = spawn_app().await;
    let response = app
        .http
        .post(app.url("/api/login"))
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    assert_eq!(body(response).await["error"]["code"], "bad_request");
    let response = app
        .http
        .post(app.url("/api/login"))
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 415);
    assert!(body(response).await["error"]["code"].is_string());
}

#[tokio::test]
async fn api_routes_need_a_valid_bearer_token() {
    let app = spawn_app().await;
    for request in [
        app.http.post(app.url("/api/tickets")),
        app.http.get(app.url("/api/rooms")),
        app.http.get(app.url("/api/rooms")).bearer_auth("not-a-jwt"),
        app.http
            .get(app.url("/api/rooms"))
            .header("authorization", "Basic YTpi"),
    ] {
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), 401);
        assert_eq!(body(response).await["error"]["code"], "unauthorized");
    }
}

#[tokio::test]
async fn every_response_carries_the_security_headers() {
    let app = spawn_app().await;
    for path in ["/", "/healthz", "/api/rooms", "/api/nowhere", "/ws"] {
        let response = app.http.get(app.url(path)).send().await.unwrap();
        let headers = response.headers();
        let csp = headers["content-security-policy"].to_str().unwrap();
        assert!(
            csp.contains("default-src 'self'") && csp.contains("frame-ancestors 'none'"),
            "{path}"
        );
        assert_eq!(headers["x-content-type-options"], "nosniff", "{path}");
        assert!(headers.contains_key("referrer-policy"), "{path}");
    }
}

#[tokio::test]
async fn cors_on_the_api_allows_only_the_allowed_origins() {
    let app = spawn_app().await;
    let preflight = |origin: &'static str| {
        app.http
            .request(reqwest::Method::OPTIONS, app.url("/api/login"))
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header("access-control-request-headers", "content-type")
            .send()
    };
    let allowed = preflight("http://localhost:8000").await.unwrap();
    assert_eq!(
        allowed.headers()["access-control-allow-origin"],
        "http://localhost:8000"
    );
    let refused = preflight("https://evil.example").await.unwrap();
    assert!(
        !refused
            .headers()
            .contains_key("access-control-allow-origin")
    );
}

#[tokio::test]
async fn unknown_api_paths_and_methods_get_json_errors() {
    let app = spawn_app().await;
    let response = app.http.get(app.url("/api/nowhere")).send().await.unwrap();
    assert_eq!(response.status(), 404);
    assert_eq!(body(response).await["error"]["code"], "not_found");
    let response = app.http.get(app.url("/api/login")).send().await.unwrap();
    assert_eq!(response.status(), 405);
    assert_eq!(body(response).await["error"]["code"], "method_not_allowed");
}

#[tokio::test]
async fn health_and_readiness_answer() {
    let app = spawn_app().await;
    assert_eq!(
        app.http
            .get(app.url("/healthz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        app.http
            .get(app.url("/readyz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
}

#[tokio::test]
async fn the_web_client_is_served_at_the_root() {
    let app = spawn_app().await;
    let response = app.http.get(app.url("/")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
}

#[tokio::test]
async fn internal_errors_reach_clients_without_detail() {
    let app = spawn_app().await;
    let (mut alice, _) = app.join("alice", "general").await;
    // Break the database under the running server.
    operator_sql(&app.database_url, "DROP TABLE messages", &[]).await;
    operator_sql(&app.database_url, "DROP TABLE rooms", &[]).await;

    let response = app
        .http
        .get(app.url("/api/rooms"))
        .bearer_auth(app.token("alice"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 500);
    let text = response.text().await.unwrap();
    let body: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(body["error"]["code"], "internal");
    for leak in ["rooms", "table", "sqlite", "SQL", "/"] {
        assert!(!text.contains(leak), "{leak:?} leaked: {text}");
    }

    alice
        .send(json!({"type":"send","id":1,"room":"general","body":"hi"}))
        .await;
    let error = alice.recv().await;
    assert_eq!(
        (error["code"].as_str(), error["id"].as_u64()),
        (Some("internal"), Some(1))
    );
    let message = error["message"].as_str().unwrap();
    assert!(
        !message.contains("table") && !message.contains("messages"),
        "{message}"
    );
    // The connection stays open.
    alice.send(json!({"type":"typing","room":"general"})).await;
    alice
        .send(json!({"type":"leave","id":2,"room":"general"}))
        .await;
    assert_eq!(alice.recv().await["type"], "left");
}
