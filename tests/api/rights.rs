//! Nobody gets rights they should not have: admin rights come only from the operator, a
//! disabled account is refused on every way in, palisade does not renew another issuer's
//! tokens, and a token dated in the future is refused.

use crate::external_issuers::{app_trusting, signed_with};
use crate::helpers::{
    TestApp, now, operator_sql, restart, restart_with, sign, spawn_app, spawn_app_with,
    wall_clock_past,
};
use jsonwebtoken::Algorithm;
use palisade::auth::jwt::PublicKeyAlgorithm;
use reqwest::StatusCode;
use serde_json::{Value, json};

/// A token the operator's app mints for its admin (same shared secret, `role: admin`).
fn operator_admin() -> String {
    sign(&json!({"sub":"app-root","name":"root","iat":now(),"exp":now()+900,"role":"admin"}))
}

/// Registers an account: (its id, its token).
async fn register(app: &TestApp, name: &str) -> (String, String) {
    let body: Value = app
        .register(name, "correct horse")
        .await
        .json()
        .await
        .unwrap();
    let id = body["user"]["id"]
        .as_str()
        .unwrap_or_else(|| panic!("{body}"));
    (id.to_owned(), body["token"].as_str().unwrap().to_owned())
}

/// Logs in: the response's status and JSON body.
async fn login(app: &TestApp, name: &str) -> (StatusCode, Value) {
    let response = app.login(name, "correct horse").await;
    (response.status(), response.json().await.unwrap())
}

async fn login_token(app: &TestApp, name: &str) -> String {
    let (status, body) = login(app, name).await;
    assert_eq!(status, 200, "{body}");
    body["token"].as_str().unwrap().to_owned()
}

/// `POST /api/token`: the status and JSON body.
async fn renew(app: &TestApp, token: &str) -> (StatusCode, Value) {
    let response = app
        .http
        .post(app.url("/api/token"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    (response.status(), response.json().await.unwrap())
}

async fn renewed_token(app: &TestApp, token: &str) -> String {
    let (status, body) = renew(app, token).await;
    assert_eq!(status, 200, "{body}");
    body["token"].as_str().unwrap().to_owned()
}

/// `POST /api/admin/users/{user_id}/{action}` with this bearer token.
async fn admin_action(
    app: &TestApp,
    token: &str,
    user_id: &str,
    action: &str,
) -> reqwest::Response {
    app.http
        .post(app.url(&format!("/api/admin/users/{user_id}/{action}")))
        // Names the client when a test puts the server behind a trusted proxy (an
        // unnamed one is refused); ignored otherwise.
        .header("x-forwarded-for", "203.0.113.5")
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
}

/// Whether this token may use the admin API (revoking a user nobody has).
async fn acts_as_admin(app: &TestApp, token: &str) -> bool {
    let status = admin_action(app, token, "nobody", "revoke").await.status();
    assert!(status == 200 || status == 403, "{status}");
    status == 200
}

async fn get_with(app: &TestApp, path: &str, token: &str) -> StatusCode {
    app.http
        .get(app.url(path))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .status()
}

/// A token in palisade's own form (`issued_by: palisade`), as if palisade had minted it now.
fn palisade_style(sub: &str, name: &str) -> String {
    sign(
        &json!({"sub":sub,"name":name,"iat":now(),"exp":now()+600,"role":"user","issued_by":"palisade"}),
    )
}

#[tokio::test]
async fn registering_a_name_listed_as_admin_gives_no_admin_rights() {
    // An operator who lists a name (the old way) before anyone registered it.
    let app = spawn_app_with(|s| s.admin_users = vec!["root".into(), "Root".into()]).await;
    let (_, registered) = register(&app, "ROOT").await;
    assert!(!acts_as_admin(&app, &registered).await);
    let logged_in = login_token(&app, "root").await;
    assert!(!acts_as_admin(&app, &logged_in).await);
    let renewed = renewed_token(&app, &logged_in).await;
    assert!(!acts_as_admin(&app, &renewed).await);
}

#[tokio::test]
async fn an_admin_listed_by_account_id_loses_admin_at_renewal_once_unlisted() {
    let app = spawn_app().await;
    let (root_id, _) = register(&app, "root").await;
    let stopped = app.stop().await;
    let listed = root_id.clone();
    let app = restart_with(&stopped, move |s| s.admin_users = vec![listed]).await;
    let token = login_token(&app, "root").await;
    assert!(acts_as_admin(&app, &token).await);
    let renewed = renewed_token(&app, &token).await;
    assert!(acts_as_admin(&app, &renewed).await);

    let stopped = app.stop().await;
    let app = restart_with(&stopped, |s| {
        s.admin_users = Vec::new();
        s.trusted_proxies = vec!["127.0.0.1".parse().unwrap()];
    })
    .await;
    // Behind the trusted proxy every request names its client (an unnamed one is refused).
    let response = app
        .http
        .post(app.url("/api/token"))
        .header("x-forwarded-for", "203.0.113.5")
        .bearer_auth(&renewed)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    let renewed_again = body["token"].as_str().unwrap().to_owned();
    assert!(!acts_as_admin(&app, &renewed_again).await);
    assert!(
        !acts_as_admin(&app, &renewed).await,
        "an admin token minted before the change no longer acts as admin either"
    );
    let metrics_from_afar = app
        .http
        .get(app.url("/metrics"))
        .header("x-forwarded-for", "203.0.113.5")
        .bearer_auth(&renewed)
        .send()
        .await
        .unwrap();
    assert_eq!(metrics_from_afar.status(), 403);
}

#[tokio::test]
async fn an_account_the_operator_made_admin_in_the_database_is_admin_without_a_restart() {
    let app = spawn_app().await;
    let (root_id, registered) = register(&app, "root").await;
    assert!(!acts_as_admin(&app, &registered).await);
    // What an operator runs by hand: sqlite3 palisade.db "UPDATE users SET role = 'admin' …".
    operator_sql(
        &app.database_url,
        "UPDATE users SET role = 'admin' WHERE id = $1",
        &[&root_id],
    )
    .await;
    assert!(acts_as_admin(&app, &login_token(&app, "root").await).await);
    assert!(
        acts_as_admin(&app, &registered).await,
        "the role is read from the account, even for a token minted before"
    );
}

#[tokio::test]
async fn a_disabled_user_is_refused_everywhere_and_their_sockets_close_with_4003() {
    let app = spawn_app().await;
    let (bob_id, bob_token) = register(&app, "bob").await;
    let mut socket = app.connect_with(&bob_token).await.expect("accepted");
    assert_eq!(socket.recv().await["type"], "welcome");
    let ticket: Value = app.request_ticket(&bob_token).await.json().await.unwrap();
    let ticket = ticket["ticket"].as_str().unwrap();

    let response = admin_action(&app, &operator_admin(), &bob_id, "disable").await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["disabled"], true);
    assert_eq!(body["closed_connections"], 1);
    let disabled_at = body["disabled_at"].as_i64().unwrap();
    assert_eq!(socket.expect_close().await, 4003);

    let (status, body) = login(&app, "bob").await;
    assert_eq!(status, 403);
    assert_eq!(body["error"]["code"], "account_disabled");
    let refusal = app
        .try_connect(&[], &format!("?ticket={ticket}"))
        .await
        .err()
        .expect("the ticket from before the ban is refused");
    assert_eq!(refusal.status, 401);

    // A token issued after the ban is not revoked, only banned: every way in refuses it.
    wall_clock_past(disabled_at).await;
    let fresh = palisade_style(&bob_id, "bob");
    assert_eq!(app.refused(&fresh).await.status, 401);
    assert_eq!(app.request_ticket(&fresh).await.status(), 401);
    assert_eq!(renew(&app, &fresh).await.0, 401);
    assert_eq!(get_with(&app, "/api/rooms", &fresh).await, 401);
    let refusal = app
        .try_connect(&[], &format!("?token={fresh}"))
        .await
        .err()
        .expect("refused");
    assert_eq!(refusal.status, 401);
}

#[tokio::test]
async fn a_ban_survives_a_restart_and_enabling_lets_the_user_back_in() {
    let app = spawn_app().await;
    let (bob_id, before_ban) = register(&app, "bob").await;
    let body: Value = admin_action(&app, &operator_admin(), &bob_id, "disable")
        .await
        .json()
        .await
        .unwrap();
    let disabled_at = body["disabled_at"].as_i64().unwrap();
    let stopped = app.stop().await;
    let app = restart(&stopped).await;
    assert_eq!(login(&app, "bob").await.0, 403);

    let response = admin_action(&app, &operator_admin(), &bob_id, "enable").await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(
        body,
        json!({"user_id": bob_id, "disabled": false, "was_disabled": true})
    );
    // Tokens dated up to the ban's second stay void; a login after it works.
    wall_clock_past(disabled_at).await;
    let token = login_token(&app, "bob").await;
    let mut socket = app.connect_with(&token).await.expect("bob is back");
    assert_eq!(socket.recv().await["type"], "welcome");
    assert_eq!(
        app.refused(&before_ban).await.status,
        401,
        "enabling does not bring back the tokens held before the ban"
    );
}

#[tokio::test]
async fn only_admins_may_disable_or_enable_and_not_themselves() {
    let app = spawn_app().await;
    let (_, bob_token) = register(&app, "bob").await;
    let (carol_id, _) = register(&app, "carol").await;
    for action in ["disable", "enable"] {
        let response = admin_action(&app, &bob_token, &carol_id, action).await;
        assert_eq!(response.status(), 403, "{action}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"]["code"], "forbidden");
    }
    let response = admin_action(&app, &operator_admin(), "app-root", "disable").await;
    assert_eq!(response.status(), 400);
    assert!(app.connect_with(&bob_token).await.is_ok(), "bob untouched");
}

#[tokio::test]
async fn an_external_token_is_not_renewed_by_palisade_and_still_opens_the_socket() {
    let claims = json!({"sub":"app-user-7","name":"dora","iat":now(),"exp":now()+600,
        "role":"admin","rooms":["team-*"]});
    let shared_secret = spawn_app().await;
    let es256 = app_trusting(PublicKeyAlgorithm::Es256, "es256-public.pem").await;
    let mut marked = claims.clone();
    marked["issued_by"] = json!("palisade");
    for (app, token) in [
        (&shared_secret, sign(&claims)),
        (
            &es256,
            signed_with(Algorithm::ES256, "es256-private.pem", &claims),
        ),
        // A public-key issuer cannot pass its token off as palisade's own.
        (
            &es256,
            signed_with(Algorithm::ES256, "es256-private.pem", &marked),
        ),
    ] {
        let (status, body) = renew(app, &token).await;
        assert_eq!(status, 403, "{body}");
        assert_eq!(body["error"]["code"], "not_renewable");
        let mut socket = app
            .connect_with(&token)
            .await
            .expect("the token still works");
        assert_eq!(socket.recv().await["user"]["id"], "app-user-7");
    }
}

#[tokio::test]
async fn a_socket_refreshes_with_an_external_token_for_the_same_user() {
    let app = spawn_app().await;
    let (dora_id, token) = register(&app, "dora").await;
    let mut socket = app.connect_with(&token).await.expect("accepted");
    socket.recv().await;
    let later = now() + 3600;
    let external = sign(&json!({"sub":dora_id,"name":"dora","iat":now(),"exp":later}));
    socket
        .send(json!({"type":"refresh","id":1,"token":external}))
        .await;
    assert_eq!(socket.recv().await["expires_at"], later);
}

#[tokio::test]
async fn a_token_dated_in_the_future_is_refused_at_the_handshake_and_on_http() {
    let app = spawn_app().await;
    let future =
        sign(&json!({"sub":"id-mallory","name":"mallory","iat":now()+3600,"exp":now()+7200}));
    assert_eq!(app.refused(&future).await.status, 401);
    let refusal = app
        .try_connect(&[], &format!("?token={future}"))
        .await
        .err()
        .expect("refused");
    assert_eq!(refusal.status, 401);
    assert_eq!(get_with(&app, "/api/rooms", &future).await, 401);
    assert_eq!(app.request_ticket(&future).await.status(), 401);

    let mut socket = app.connect("mallory").await;
    socket
        .send(json!({"type":"refresh","id":1,"token":future}))
        .await;
    assert_eq!(socket.recv().await["code"], "unauthorized");
}
