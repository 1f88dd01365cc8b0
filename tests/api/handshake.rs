//! The checks of `GET /ws`, in the contract's order, each answered before the upgrade.

use crate::helpers::{bearer, now, sign, spawn_app, spawn_app_with};
use palisade::origin::Origin;
use serde_json::json;

#[tokio::test]
async fn a_valid_token_and_allowed_origin_get_a_welcome() {
    let app = spawn_app().await;
    let mut client = app
        .try_connect(
            &[
                bearer(&app.token("alice")),
                ("origin", "http://localhost:8000".into()),
            ],
            "",
        )
        .await
        .expect("accepted");
    let welcome = client.recv().await;
    assert_eq!(welcome["type"], "welcome");
    assert_eq!(welcome["user"]["name"], "alice");
    assert_eq!(welcome["user"]["id"], "id-alice");
    assert_eq!(welcome["heartbeat_secs"], 25);
    // 2000 body characters of any kind, however escaped, plus the envelope (issue #9, 18).
    assert_eq!(welcome["limits"]["max_message_bytes"], 25_024);
    assert_eq!(welcome["limits"]["max_body_chars"], 2000);
    assert_eq!(welcome["limits"]["messages_per_sec"], 5);
    assert_eq!(welcome["limits"]["burst"], 10);
    assert!(welcome["expires_at"].as_i64().unwrap() > now());
}

#[tokio::test]
async fn a_foreign_origin_is_refused_with_403_before_credentials_are_looked_at() {
    let app = spawn_app().await;
    for origin in [
        "https://evil.example",
        "http://localhost:8000.evil.example",
        "http://localhost:8001",
        "https://localhost:8000",
    ] {
        // No credentials at all: the origin check comes first, so still 403.
        let refusal = app
            .try_connect(&[("origin", origin.into())], "")
            .await
            .err()
            .expect("refused");
        assert_eq!(refusal.status, 403, "{origin}");
        assert_eq!(refusal.code(), "origin_forbidden", "{origin}");
    }
}

#[tokio::test]
async fn origin_null_is_refused() {
    let app = spawn_app().await;
    let refusal = app
        .try_connect(
            &[bearer(&app.token("alice")), ("origin", "null".into())],
            "",
        )
        .await
        .err()
        .expect("refused");
    assert_eq!(refusal.status, 403);
    assert_eq!(refusal.code(), "origin_forbidden");
}

#[tokio::test]
async fn origins_match_after_normalising_case_and_default_port() {
    let app = spawn_app_with(|s| {
        s.origins = palisade::origin::OriginPolicy::new(
            vec![Origin::parse("https://chat.example.com").unwrap()],
            true,
        );
    })
    .await;
    for origin in ["https://chat.example.com", "HTTPS://Chat.Example.COM:443"] {
        assert!(
            app.try_connect(
                &[bearer(&app.token("alice")), ("origin", origin.into())],
                ""
            )
            .await
            .is_ok(),
            "{origin} should be accepted"
        );
    }
    for origin in [
        "https://chat.example.com.evil.com",
        "http://chat.example.com",
        "https://chat.example.com:8443",
    ] {
        let refusal = app
            .try_connect(
                &[bearer(&app.token("alice")), ("origin", origin.into())],
                "",
            )
            .await
            .err()
            .expect("refused");
        assert_eq!(refusal.status, 403, "{origin}");
    }
}

#[tokio::test]
async fn a_missing_origin_is_allowed_by_default_and_refused_when_configured() {
    let app = spawn_app().await;
    assert!(app.connect_with(&app.token("alice")).await.is_ok());

    let strict = spawn_app_with(|s| s.origins = s.origins.clone().with_allow_missing(false)).await;
    let refusal = strict.refused(&strict.token("alice")).await;
    assert_eq!(refusal.status, 403);
}

#[tokio::test]
async fn missing_credentials_are_401() {
    let app = spawn_app().await;
    let refusal = app.try_connect(&[], "").await.err().expect("refused");
    assert_eq!(refusal.status, 401);
    assert_eq!(refusal.code(), "unauthorized");
}

#[tokio::test]
async fn a_token_signed_with_another_secret_is_401() {
    let app = spawn_app().await;
    let forged = jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &json!({"sub": "id-mallory", "name": "mallory", "iat": now(), "exp": now() + 600}),
        &jsonwebtoken::EncodingKey::from_secret(b"not-the-server-secret-at-all-0123456789"),
    )
    .unwrap();
    let refusal = app.refused(&forged).await;
    assert_eq!(refusal.status, 401);
}

#[tokio::test]
async fn an_expired_token_is_401() {
    let app = spawn_app().await;
    let expired = sign(&json!({"sub": "id-a", "name": "a", "iat": now() - 1000, "exp": now() - 5}));
    let refusal = app.refused(&expired).await;
    assert_eq!(refusal.status, 401);
}

#[tokio::test]
async fn a_not_yet_valid_token_is_401() {
    let app = spawn_app().await;
    let early = sign(
        &json!({"sub": "id-a", "name": "a", "iat": now(), "nbf": now() + 300, "exp": now() + 900}),
    );
    let refusal = app.refused(&early).await;
    assert_eq!(refusal.status, 401);
}

#[tokio::test]
async fn an_alg_none_token_is_401() {
    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let app = spawn_app().await;
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#);
    let claims = URL_SAFE_NO_PAD
        .encode(json!({"sub": "id-a", "name": "a", "iat": now(), "exp": now() + 600}).to_string());
    for token in [format!("{header}.{claims}."), format!("{header}.{claims}")] {
        let refusal = app.refused(&token).await;
        assert_eq!(refusal.status, 401);
    }
}

#[tokio::test]
async fn a_token_in_the_query_string_is_accepted() {
    let app = spawn_app().await;
    let token = app.token("alice");
    assert!(
        app.try_connect(&[], &format!("?token={token}"))
            .await
            .is_ok()
    );
    let refusal = app
        .try_connect(&[], "?token=garbage")
        .await
        .err()
        .expect("refused");
    assert_eq!(refusal.status, 401);
}

#[tokio::test]
async fn a_ticket_works_once() {
    let app = spawn_app().await;
    let response = app.request_ticket(&app.token("alice")).await;
    assert_eq!(response.status(), 200);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["expires_in"], 30);
    let ticket = body["ticket"].as_str().unwrap().to_owned();
    assert!(ticket.len() >= 22, "at least 128 bits");
    assert!(
        ticket
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    );

    let mut client = app
        .try_connect(&[], &format!("?ticket={ticket}"))
        .await
        .expect("first use accepted");
    assert_eq!(client.recv().await["user"]["name"], "alice");
    let refusal = app
        .try_connect(&[], &format!("?ticket={ticket}"))
        .await
        .err()
        .expect("second use refused");
    assert_eq!(refusal.status, 401);
}

#[tokio::test]
async fn too_many_connections_from_one_ip_are_429_with_retry_after() {
    let app = spawn_app_with(|s| s.limits.max_connections_per_ip = 3).await;
    let mut open = Vec::new();
    for i in 0..3 {
        open.push(app.connect(&format!("user{i}")).await);
    }
    let refusal = app.refused(&app.token("user9")).await;
    assert_eq!(refusal.status, 429);
    assert_eq!(refusal.code(), "too_many_connections");
    assert!(refusal.retry_after.is_some());

    // A closed connection gives its place back before the server answers the close.
    let mut first = open.remove(0);
    first.close_normally().await;
    assert_eq!(first.expect_close().await, 1000);
    assert!(app.connect_with(&app.token("user9")).await.is_ok());
}

#[tokio::test]
async fn too_many_connections_for_one_user_are_429() {
    let app = spawn_app_with(|s| s.limits.max_connections_per_user = 2).await;
    let _a = app.connect("alice").await;
    let _b = app.connect("alice").await;
    let refusal = app.refused(&app.token("alice")).await;
    assert_eq!(refusal.status, 429);
    assert!(app.connect_with(&app.token("bob")).await.is_ok());
}

#[tokio::test]
async fn a_full_server_answers_503() {
    let app = spawn_app_with(|s| s.limits.max_connections = 1).await;
    let _a = app.connect("alice").await;
    let refusal = app.refused(&app.token("bob")).await;
    assert_eq!(refusal.status, 503);
    assert_eq!(refusal.code(), "unavailable");
}

#[tokio::test]
async fn a_plain_http_request_to_ws_gets_a_json_answer() {
    let app = spawn_app().await;
    let response = app
        .http
        .get(app.url("/ws"))
        .bearer_auth(app.token("alice"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 426);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "upgrade_required");
}
