//! `POST /api/tickets` checks the `Origin` like the handshake, where a browser can read
//! the answer.

use crate::helpers::{ServerProcess, now, sign};
use serde_json::{Value, json};

/// Asks for a ticket with `origin` (none when `None`); the status and the error code.
async fn ask_for_ticket(server: &ServerProcess, token: &str, origin: Option<&str>) -> (u16, Value) {
    let mut request = reqwest::Client::new()
        .post(format!("http://{}/api/tickets", server.addr))
        .bearer_auth(token);
    if let Some(origin) = origin {
        request = request.header("origin", origin);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

#[tokio::test]
async fn tickets_for_a_refused_origin_are_403_origin_forbidden_and_logged_escaped() {
    let server = ServerProcess::start_fresh(&["--allowed-origins", "http://chat.example"]).await;
    let token = sign(&json!({"sub":"id-alice","name":"alice","iat":now(),"exp":now()+900}));

    let (status, body) = ask_for_ticket(&server, &token, Some("http://chat.example")).await;
    assert_eq!(status, 200, "{body}");
    assert!(body["ticket"].is_string());
    // curl and servers send no Origin: allowed, as at the handshake.
    let (status, _) = ask_for_ticket(&server, &token, None).await;
    assert_eq!(status, 200);

    let refused = "http://evil.example\" injected=\"yes";
    for origin in [refused, "null", "http://chat.example.evil.example"] {
        let (status, body) = ask_for_ticket(&server, &token, Some(origin)).await;
        assert_eq!(status, 403, "{origin}");
        assert_eq!(body["error"]["code"], "origin_forbidden", "{origin}");
    }
    // The origin comes first: a refused page learns nothing about its credentials.
    let (status, body) = ask_for_ticket(&server, "not-a-token", Some(refused)).await;
    assert_eq!(
        (status, &body["error"]["code"]),
        (403, &json!("origin_forbidden"))
    );

    let line = server
        .wait_for_log(|line| line.contains("origin_refused") && line.contains("evil.example\\\""))
        .await;
    assert!(
        line.contains(r#"reason="origin_malformed""#) && line.contains(r#"endpoint="tickets""#),
        "{line}"
    );
    assert!(
        line.contains(r#"origin="http://evil.example\" injected=\"yes""#),
        "quoted, its quotes escaped: {line}"
    );
    for reason in ["origin_null", "origin_not_allowed"] {
        server
            .wait_for_log(|line| line.contains("origin_refused") && line.contains(reason))
            .await;
    }
}

#[tokio::test]
async fn tickets_without_an_origin_are_refused_where_the_policy_requires_one() {
    let server = ServerProcess::start_fresh(&[
        "--allowed-origins",
        "http://chat.example",
        "--allow-missing-origin",
        "false",
    ])
    .await;
    let token = sign(&json!({"sub":"id-alice","name":"alice","iat":now(),"exp":now()+900}));
    let (status, body) = ask_for_ticket(&server, &token, None).await;
    assert_eq!(status, 403);
    assert_eq!(body["error"]["code"], "origin_forbidden");
    let (status, _) = ask_for_ticket(&server, &token, Some("http://chat.example")).await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn the_handshake_logs_a_refused_origin_as_tickets_does_under_its_own_event() {
    let server = ServerProcess::start_fresh(&["--allowed-origins", "http://chat.example"]).await;
    let refused = "http://evil.example\" injected=\"yes";
    // The Origin is checked before anything else, so a plain GET is enough to be refused.
    let response = reqwest::Client::new()
        .get(format!("http://{}/ws", server.addr))
        .header("origin", refused)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 403);

    let line = server
        .wait_for_log(|line| line.contains("handshake_rejected") && line.contains("evil.example"))
        .await;
    assert!(line.contains(r#"reason="origin_malformed""#), "{line}");
    assert!(
        line.contains(r#"origin="http://evil.example\" injected=\"yes""#),
        "quoted, its quotes escaped: {line}"
    );
    assert!(
        !line.contains("endpoint="),
        "the event names the door: {line}"
    );
}
