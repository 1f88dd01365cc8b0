//! Security events are logged with who and why, and never with a secret.

use crate::helpers::{ServerProcess, now, sign};
use futures_util::SinkExt;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

#[tokio::test]
async fn security_events_name_peer_and_reason_but_never_a_secret() {
    let server = ServerProcess::start_fresh(&[]).await;
    let base = format!("http://{}", server.addr);
    let http = reqwest::Client::new();

    let password = "Correct-Horse-SECRET-1";
    let wrong_password = "Wrong-Horse-SECRET-2";
    let registered: Value = http
        .post(format!("{base}/api/register"))
        .json(&json!({"username":"alice","password":password}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = registered["token"].as_str().unwrap().to_owned();
    let failed = http
        .post(format!("{base}/api/login"))
        .json(&json!({"username":"alice","password":wrong_password}))
        .send()
        .await
        .unwrap();
    assert_eq!(failed.status(), 401);

    // A ticket used twice, a forged token in the query, an expired one in a header.
    let ticket: Value = http
        .post(format!("{base}/api/tickets"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let ticket = ticket["ticket"].as_str().unwrap().to_owned();
    let ws = format!("ws://{}/ws", server.addr);
    let (mut first, _) = tokio_tungstenite::connect_async(format!("{ws}?ticket={ticket}"))
        .await
        .unwrap();
    assert!(
        tokio_tungstenite::connect_async(format!("{ws}?ticket={ticket}"))
            .await
            .is_err()
    );
    let forged = "eyJhbGciOiJub25lIn0.eyJzdWIiOiJGT1JHRUQtU0VDUkVUIn0.";
    assert!(
        tokio_tungstenite::connect_async(format!("{ws}?token={forged}"))
            .await
            .is_err()
    );
    let expired = sign(&json!({"sub":"id-x","name":"x","iat":now()-100,"exp":now()-10}));
    assert!(
        tokio_tungstenite::connect_async(format!("{ws}?token={expired}"))
            .await
            .is_err()
    );

    // A message body and a malformed frame that carry secrets of their own.
    let body = "TOP-SECRET-BODY-42";
    let bad_frame = "{not json SECRET-IN-BAD-FRAME";
    let (mut alice, _) = tokio_tungstenite::connect_async(format!("{ws}?token={token}"))
        .await
        .unwrap();
    for frame in [
        json!({"type":"join","room":"general"}).to_string(),
        json!({"type":"send","room":"general","body":body}).to_string(),
        bad_frame.to_owned(),
    ] {
        alice.send(Message::text(frame)).await.unwrap();
    }
    first.close(None).await.unwrap();

    let logged = |event: &'static str, detail: &'static str| {
        server.wait_for_log(move |line| {
            line.contains("security") && line.contains(event) && line.contains(detail)
        })
    };
    let login = logged("login_failed", "127.0.0.1").await;
    assert!(login.contains("ip=127.0.0.1"), "{login}");
    logged("handshake_rejected", "ticket_invalid").await;
    logged("handshake_rejected", "malformed_token").await;
    logged("handshake_rejected", "token_expired").await;
    let closed = logged("connection_closed", "1007").await;
    assert!(
        closed.contains("user=") && closed.contains("ip=127.0.0.1"),
        "{closed}"
    );

    let log = server.log_text();
    for secret in [
        token.as_str(),
        ticket.as_str(),
        forged,
        expired.as_str(),
        password,
        wrong_password,
        body,
        "SECRET-IN-BAD-FRAME",
        "FORGED-SECRET",
        "ticket=",
        "token=",
    ] {
        assert!(!log.contains(secret), "the log contains {secret:?}");
    }
}

#[tokio::test]
async fn broken_websocket_framing_reaches_the_security_log_with_its_close_code() {
    use crate::protocol_violations::{raw_close_code, raw_frame, raw_socket};
    use tokio::io::AsyncWriteExt;
    let server = ServerProcess::start_fresh(&[]).await;
    let token = sign(&json!({"sub":"id-mallory","name":"mallory","iat":now(),"exp":now()+900}));

    let mut not_utf8 = raw_socket(server.addr, &token).await;
    not_utf8
        .write_all(&raw_frame(0x81, &[b'{', 0xff, b'}'], true))
        .await
        .unwrap();
    assert_eq!(raw_close_code(&mut not_utf8).await, 1007);
    let mut unmasked = raw_socket(server.addr, &token).await;
    unmasked
        .write_all(&raw_frame(0x81, b"{}", false))
        .await
        .unwrap();
    assert_eq!(raw_close_code(&mut unmasked).await, 1002);

    for (code, cause) in [("1007", "invalid_utf8"), ("1002", "protocol_violation")] {
        let line = server
            .wait_for_log(|line| {
                line.contains("security")
                    && line.contains("connection_closed")
                    && line.contains(code)
                    && line.contains(cause)
            })
            .await;
        assert!(
            line.contains("ip=127.0.0.1") && line.contains("user=id-mallory"),
            "{line}"
        );
        assert!(!line.contains(&token), "{line}");
    }
}
