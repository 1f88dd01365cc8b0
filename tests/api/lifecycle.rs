//! A connection stays authorised for its whole life: expiry, refresh, revocation and
//! heartbeats.

use crate::helpers::{
    bearer, now, restart, restart_with, sign, spawn_app, spawn_app_with, wall_clock_past,
};
use serde_json::{Value, json};

fn token(sub: &str, iat: i64, exp: i64, role: &str) -> String {
    sign(&json!({"sub": sub, "name": sub, "iat": iat, "exp": exp, "role": role}))
}

#[tokio::test]
async fn a_connection_closes_with_4001_when_its_token_expires() {
    let app = spawn_app().await;
    let mut client = app
        .connect_with(&token("alice", now(), now() + 2, "user"))
        .await
        .expect("accepted while valid");
    let (frames, code) = client.frames_until_close().await;
    assert_eq!(frames[0]["type"], "welcome");
    assert_eq!(code, 4001);
}

#[tokio::test]
async fn a_refreshed_connection_outlives_its_first_token() {
    let app = spawn_app().await;
    let mut client = app
        .connect_with(&token("alice", now(), now() + 2, "user"))
        .await
        .expect("accepted");
    client.recv().await;
    let later = now() + 3600;
    client
        .send(json!({"type":"refresh","id":1,"token":token("alice", now(), later, "user")}))
        .await;
    assert_eq!(client.recv().await["expires_at"], later);
    // Let the first token's expiry pass on a paused clock: nothing closes the connection.
    tokio::time::pause();
    tokio::time::advance(std::time::Duration::from_secs(5)).await;
    tokio::time::resume();
    client
        .send(json!({"type":"join","id":2,"room":"general"}))
        .await;
    assert_eq!(client.recv().await["type"], "joined");
}

#[tokio::test]
async fn an_admin_revocation_closes_live_connections_with_4003_and_voids_old_tokens_everywhere() {
    let app = spawn_app().await;
    let old = token("bob", now() - 10, now() + 900, "user");
    let mut bob1 = app.connect_with(&old).await.expect("accepted");
    let mut bob2 = app.connect_with(&old).await.expect("accepted");
    let mut carol = app.connect("carol").await;
    let ticket: Value = app.request_ticket(&old).await.json().await.unwrap();

    let admin = token("root", now(), now() + 900, "admin");
    let response = app.revoke(&admin, "bob").await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["closed_connections"], 2);
    let revoked_at = body["revoked_at"].as_i64().unwrap();

    assert_eq!(bob1.expect_close().await, 4003);
    assert_eq!(bob2.expect_close().await, 4003);

    // The old token fails on every path: handshake, ticket, HTTP, refresh.
    assert_eq!(app.refused(&old).await.status, 401);
    let ticket = ticket["ticket"].as_str().unwrap();
    let refusal = app
        .try_connect(&[], &format!("?ticket={ticket}"))
        .await
        .err()
        .unwrap();
    assert_eq!(refusal.status, 401);
    let rooms = app
        .http
        .get(app.url("/api/rooms"))
        .bearer_auth(&old)
        .send()
        .await
        .unwrap();
    assert_eq!(rooms.status(), 401);
    carol.send(json!({"type":"refresh","id":1,"token":token("id-carol", now() - 10, now() + 900, "user")})).await;
    assert_eq!(
        carol.recv().await["type"],
        "refreshed",
        "others are not affected"
    );
    // Tokens dated in the revocation's second are void, and none may be dated ahead.
    wall_clock_past(revoked_at).await;
    let mut fresh_bob = app
        .try_connect(
            &[bearer(&token("bob", revoked_at + 1, now() + 900, "user"))],
            "",
        )
        .await
        .expect("a token issued after the revocation works");
    fresh_bob.recv().await;
    fresh_bob
        .send(json!({"type":"refresh","id":2,"token":old}))
        .await;
    assert_eq!(fresh_bob.recv().await["code"], "unauthorized");
}

#[tokio::test]
async fn only_admins_may_revoke() {
    let app = spawn_app().await;
    let response = app
        .http
        .post(app.url("/api/admin/users/bob/revoke"))
        .bearer_auth(token("mallory", now(), now() + 900, "user"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 403);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "forbidden");
    let response = app
        .http
        .post(app.url("/api/admin/users/bob/revoke"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
}

#[tokio::test]
async fn a_revocation_survives_a_restart() {
    let app = spawn_app().await;
    let old = token("bob", now() - 10, now() + 900, "user");
    let admin = token("root", now(), now() + 900, "admin");
    app.revoke(&admin, "bob").await;
    let stopped = app.stop().await;
    let app = restart(&stopped).await;
    assert_eq!(app.refused(&old).await.status, 401);
}

#[tokio::test]
async fn configured_admin_accounts_get_the_admin_role_at_login() {
    let app = spawn_app().await;
    let root: Value = app
        .register("root", "correct horse")
        .await
        .json()
        .await
        .unwrap();
    let root_id = root["user"]["id"].as_str().unwrap().to_owned();
    app.register("bob", "correct horse").await;
    let stopped = app.stop().await;
    let app = restart_with(&stopped, |s| s.admin_users = vec![root_id]).await;
    let login: Value = app
        .login("root", "correct horse")
        .await
        .json()
        .await
        .unwrap();
    let bob: Value = app
        .login("bob", "correct horse")
        .await
        .json()
        .await
        .unwrap();
    let bob_id = bob["user"]["id"].as_str().unwrap();
    let response = app
        .http
        .post(app.url(&format!("/api/admin/users/{bob_id}/revoke")))
        .bearer_auth(login["token"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let response = app
        .http
        .post(app.url("/api/admin/users/x/revoke"))
        .bearer_auth(bob["token"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401, "bob's token was just revoked");
}

#[tokio::test]
async fn a_client_that_never_answers_pings_is_closed_with_4002() {
    let app = spawn_app_with(|s| {
        s.limits.heartbeat_secs = 1;
        s.limits.pong_timeout_secs = 2;
    })
    .await;
    let mut client = app.connect("alice").await;
    // A client that does not read never sees the pings, so never answers them. Time is
    // the subject: let three seconds pass on a paused clock while the client stays silent.
    tokio::time::pause();
    for _ in 0..30 {
        tokio::time::advance(std::time::Duration::from_millis(100)).await;
    }
    tokio::time::resume();
    let (_, code) = client.frames_until_close().await;
    assert_eq!(code, 4002);
}

#[tokio::test]
async fn a_client_that_answers_pings_stays_connected() {
    let app = spawn_app_with(|s| {
        s.limits.heartbeat_secs = 1;
        s.limits.pong_timeout_secs = 2;
    })
    .await;
    let mut client = app.connect("alice").await;
    // Reading answers each ping (tungstenite replies with a pong as it reads).
    let mut pings = 0;
    while pings < 4 {
        use futures_util::StreamExt;
        use tokio_tungstenite::tungstenite::Message;
        match tokio::time::timeout(crate::helpers::WAIT, client.stream.next()).await {
            Ok(Some(Ok(Message::Ping(_)))) => pings += 1,
            Ok(Some(Ok(Message::Close(frame)))) => panic!("closed: {frame:?}"),
            Ok(Some(Ok(_))) => {}
            other => panic!("unexpected: {other:?}"),
        }
    }
    client.send(json!({"type":"join","room":"general"})).await;
    assert_eq!(client.recv_type("joined").await["room"], "general");
}

#[tokio::test]
async fn a_palisade_token_is_renewed_for_the_same_account_and_a_revoked_one_is_not() {
    let app = spawn_app().await;
    let registered: Value = app
        .register("eve", "correct horse")
        .await
        .json()
        .await
        .unwrap();
    let old = registered["token"].as_str().unwrap().to_owned();
    let renew = |token: String| {
        app.http
            .post(app.url("/api/token"))
            .bearer_auth(token)
            .send()
    };
    let response = renew(old.clone()).await.unwrap();
    assert_eq!(response.status(), 200);
    let renewed: Value = response.json().await.unwrap();
    assert_eq!(renewed["user"], registered["user"]);
    assert!(renewed["expires_at"].as_i64().unwrap() > now() + 600);
    let token = renewed["token"].as_str().unwrap();
    let mut eve = app.connect_with(token).await.expect("the new token works");
    assert_eq!(eve.recv().await["user"], registered["user"]);

    let admin = token_for_admin();
    app.revoke(&admin, registered["user"]["id"].as_str().unwrap())
        .await;
    assert_eq!(renew(old).await.unwrap().status(), 401);
}

fn token_for_admin() -> String {
    token("root", now(), now() + 900, "admin")
}
