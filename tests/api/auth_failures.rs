//! Refused credentials over HTTP spend the same per-IP failure budget as refused
//! WebSocket handshakes: past it, `429 rate_limited` with `Retry-After`, while good
//! tokens and other addresses are unaffected.

use crate::helpers::{ServerProcess, TestApp, now, sign, spawn_app_with};
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::net::IpAddr;

/// A client whose requests come from `127.0.0.<last>`.
fn client_from(last: u8) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(IpAddr::from([127, 0, 0, last]))
        .build()
        .unwrap()
}

async fn rooms(app: &TestApp, client: &reqwest::Client, token: &str) -> reqwest::Response {
    client
        .get(app.url("/api/rooms"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
}

/// A server whose failure budget is 3, refilled once a minute.
async fn app_with_three_failures() -> TestApp {
    spawn_app_with(|s| {
        s.limits.handshake_failure_burst = 3;
        s.limits.handshake_failures_per_minute = 1;
    })
    .await
}

#[tokio::test]
async fn a_flood_of_bad_bearer_tokens_turns_into_429_for_that_address_alone_and_good_tokens_still_pass()
 {
    let app = app_with_three_failures().await;
    let (flooder, other) = (client_from(1), client_from(2));
    let mut statuses = Vec::new();
    for _ in 0..10 {
        let response = rooms(&app, &flooder, "not-a-token").await;
        statuses.push(response.status());
        if response.status() == StatusCode::TOO_MANY_REQUESTS {
            let secs: u64 = response.headers()["retry-after"]
                .to_str()
                .unwrap()
                .parse()
                .unwrap();
            assert!(secs >= 1, "{secs}");
            let body: Value = response.json().await.unwrap();
            assert_eq!(body["error"]["code"], "rate_limited", "{body}");
        }
    }
    assert_eq!(statuses[..3], [StatusCode::UNAUTHORIZED; 3]);
    assert!(
        statuses[3..]
            .iter()
            .all(|s| *s == StatusCode::TOO_MANY_REQUESTS),
        "{statuses:?}"
    );

    // The same address with a good token is never refused by this budget...
    let good = rooms(&app, &flooder, &app.token("alice")).await;
    assert_eq!(good.status(), StatusCode::OK);
    // ...an expired token is told to get a new one, not to wait...
    let expired = sign(&json!({"sub":"id-x","name":"x","iat":now()-100,"exp":now()-10}));
    assert_eq!(
        rooms(&app, &flooder, &expired).await.status(),
        StatusCode::UNAUTHORIZED
    );
    // ...and another address's bad token is still a plain 401.
    assert_eq!(
        rooms(&app, &other, "not-a-token").await.status(),
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn bad_tokens_over_http_spend_the_budget_the_websocket_handshake_spends() {
    let app = app_with_three_failures().await;
    for _ in 0..3 {
        let response = app
            .http
            .post(app.url("/api/tickets"))
            .bearer_auth("not-a-token")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    }
    let refusal = app.refused("not-a-token").await;
    assert_eq!(refusal.status, 429);
    assert_eq!(refusal.code(), "rate_limited");
}

#[tokio::test]
async fn one_address_flooding_bad_tokens_does_not_hide_another_address_s_log_lines() {
    let server = ServerProcess::start_fresh(&[
        "--security-log-burst",
        "2",
        "--security-log-window-secs",
        "600",
    ])
    .await;
    let base = format!("http://{}", server.addr);
    for _ in 0..5 {
        client_from(1)
            .get(format!("{base}/api/rooms"))
            .bearer_auth("not-a-token")
            .send()
            .await
            .unwrap();
    }
    client_from(2)
        .get(format!("{base}/api/rooms"))
        .bearer_auth("not-a-token")
        .send()
        .await
        .unwrap();
    let line = server
        .wait_for_log(|line| line.contains("event=\"auth_rejected\"") && line.contains("127.0.0.2"))
        .await;
    assert!(
        line.contains("bad_signature") || line.contains("malformed_token"),
        "{line}"
    );
    assert!(!line.contains("not-a-token"), "{line}");
}

#[tokio::test]
async fn registrations_refused_for_their_name_or_password_spend_no_server_wide_budget() {
    let app = spawn_app_with(|s| {
        s.limits.auth_global_per_minute = 1;
        s.limits.auth_global_burst = 2;
    })
    .await;
    let base = format!("http://{}", app.addr);
    let register = |last: u8, username: &'static str, password: &'static str| {
        let url = format!("{base}/api/register");
        async move {
            client_from(last)
                .post(url)
                .json(&json!({"username": username, "password": password}))
                .send()
                .await
                .unwrap()
        }
    };
    for last in 1..=5 {
        let junk = register(last, "no spaces allowed", "long-enough-password").await;
        assert_eq!(junk.status(), StatusCode::BAD_REQUEST);
        let weak = register(last, "fine_name", "short").await;
        assert_eq!(weak.status(), StatusCode::BAD_REQUEST);
    }
    for (last, name) in [(6, "alice"), (7, "bob")] {
        let created = register(last, name, "long-enough-password").await;
        assert_eq!(created.status(), StatusCode::CREATED, "{name}");
    }
    // The budget itself still holds for requests that hash.
    let refused = register(8, "carol", "long-enough-password").await;
    assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
}
