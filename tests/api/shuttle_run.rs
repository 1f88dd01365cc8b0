//! palisade as `cargo shuttle run` serves it (the `shuttle` feature, against the
//! machine's PostgreSQL): black-box checks of a server that `scripts/shuttle-smoke.sh`
//! starts, at the address in `PALISADE_SHUTTLE_URL`. Without such a server there is
//! nothing to check, so these are `#[ignore]`d in a plain `cargo test`; the script (which
//! CI runs) starts `cargo shuttle run` twice and runs each group with `--ignored`:
//!
//! - `shuttle_run::local_…`: as `cargo shuttle run` starts it, no proxy in front: the
//!   chat works end to end and each client address has its own budget.
//! - `shuttle_run::every_peer_a_proxy_…`: with `TRUSTED_PROXIES = "*"`, what a
//!   deployment assumes (`palisade::shuttle`): the client is the entry the proxy adds,
//!   a request without one is refused, and a forged `127.0.0.1` is never loopback.
//!
//! Both runs set `PALISADE_AUTH_PER_MINUTE=1` and `PALISADE_AUTH_BURST=3`, so the
//! environment is read under Shuttle too and a budget runs out in a few requests.

use crate::helpers::{Client, WAIT};
use serde_json::{Value, json};
use std::net::{IpAddr, SocketAddr};
use tokio::net::TcpSocket;
use tokio_tungstenite::MaybeTlsStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;

/// The server `scripts/shuttle-smoke.sh` started.
fn server() -> SocketAddr {
    let url = std::env::var("PALISADE_SHUTTLE_URL")
        .expect("PALISADE_SHUTTLE_URL: run these through scripts/shuttle-smoke.sh");
    url.trim_start_matches("http://")
        .trim_end_matches('/')
        .parse()
        .expect("PALISADE_SHUTTLE_URL is http://IP:PORT")
}

fn url(path: &str) -> String {
    format!("http://{}{path}", server())
}

/// An HTTP client whose requests leave from `source` (a 127.0.0.x address).
fn http_from(source: [u8; 4]) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(IpAddr::from(source))
        .timeout(WAIT)
        .build()
        .unwrap()
}

/// A fresh account's token (a name of its own: the database outlives one test).
async fn register(source: [u8; 4], name: &str) -> String {
    let username = format!("{name}{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    let response = http_from(source)
        .post(url("/api/register"))
        .json(&json!({"username": username, "password": "correct horse battery"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201, "register {username}");
    let body: Value = response.json().await.unwrap();
    body["token"].as_str().expect("a token").to_owned()
}

async fn ticket(source: [u8; 4], token: &str) -> String {
    let response = http_from(source)
        .post(url("/api/tickets"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    body["ticket"].as_str().expect("a ticket").to_owned()
}

/// A WebSocket handshake from `source` with `?ticket=` and this `Origin`: the client
/// past its `welcome`, or the refusal's status.
async fn connect(source: [u8; 4], ticket: &str, origin: &str) -> Result<Client, u16> {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::from((source, 0))).unwrap();
    let tcp = socket.connect(server()).await.unwrap();
    let mut request = format!("ws://{}/ws?ticket={ticket}", server())
        .into_client_request()
        .unwrap();
    request
        .headers_mut()
        .insert("origin", HeaderValue::from_str(origin).unwrap());
    let handshake = tokio_tungstenite::client_async(request, MaybeTlsStream::Plain(tcp));
    match tokio::time::timeout(WAIT, handshake)
        .await
        .expect("handshake answered in time")
    {
        Ok((stream, _)) => {
            let mut client = Client { stream };
            assert_eq!(client.recv().await["type"], "welcome");
            Ok(client)
        }
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            Err(response.status().as_u16())
        }
        Err(other) => panic!("handshake failed oddly: {other}"),
    }
}

/// The page's own origin: the script lists it in `ALLOWED_ORIGINS`.
fn own_origin() -> String {
    format!("http://{}", server())
}

/// A failed login from `source` with these extra headers: its status.
async fn failed_login(source: [u8; 4], headers: &[(&str, &str)]) -> u16 {
    let mut request = http_from(source)
        .post(url("/api/login"))
        .json(&json!({"username": "nobody", "password": "wrong password"}));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    request.send().await.unwrap().status().as_u16()
}

/// Fails logins until the budget is spent (`429`), within `most` attempts.
async fn spend_login_budget(source: [u8; 4], headers: &[(&str, &str)], most: usize) {
    for _ in 0..most {
        match failed_login(source, headers).await {
            401 => continue,
            429 => return,
            other => panic!("a failed login answered {other}"),
        }
    }
    panic!("still no 429 after {most} failed logins");
}

const ALICE_AT: [u8; 4] = [127, 0, 0, 2];
const BOB_AT: [u8; 4] = [127, 0, 0, 3];

#[tokio::test]
#[ignore = "needs a palisade under `cargo shuttle run`: scripts/shuttle-smoke.sh"]
async fn local_shuttle_run_is_ready_and_serves_the_web_client() {
    let http = http_from(ALICE_AT);
    assert_eq!(http.get(url("/readyz")).send().await.unwrap().status(), 200);
    let page = http.get(url("/")).send().await.unwrap();
    assert_eq!(page.status(), 200);
    assert!(page.text().await.unwrap().contains("<html"));
}

#[tokio::test]
#[ignore = "needs a palisade under `cargo shuttle run`: scripts/shuttle-smoke.sh"]
async fn local_shuttle_run_chats_between_two_clients_with_single_use_tickets() {
    let alice_token = register(ALICE_AT, "alice").await;
    let bob_token = register(BOB_AT, "bob").await;
    let room = format!("smoke-{}", uuid::Uuid::new_v4().simple());

    let alice_ticket = ticket(ALICE_AT, &alice_token).await;
    let mut alice = connect(ALICE_AT, &alice_ticket, &own_origin())
        .await
        .expect("alice's ticket opens a socket");
    assert_eq!(
        connect(ALICE_AT, &alice_ticket, &own_origin()).await.err(),
        Some(401),
        "a ticket is spent once"
    );
    let foreign = ticket(BOB_AT, &bob_token).await;
    assert_eq!(
        connect(BOB_AT, &foreign, "https://evil.example")
            .await
            .err(),
        Some(403),
        "another site's page cannot open a socket"
    );
    let mut bob = connect(BOB_AT, &ticket(BOB_AT, &bob_token).await, &own_origin())
        .await
        .expect("bob's ticket opens a socket");

    alice.send(json!({"type": "join", "room": room})).await;
    alice.recv_type("joined").await;
    bob.send(json!({"type": "join", "room": room})).await;
    bob.recv_type("joined").await;
    let ack = bob.say(&room, "hello from shuttle run").await;
    let message = alice.recv_type("message").await;
    assert_eq!(message["body"], "hello from shuttle run");
    assert_eq!(
        message["seq"], ack["seq"],
        "what alice got is what bob's ack names"
    );
}

#[tokio::test]
#[ignore = "needs a palisade under `cargo shuttle run`: scripts/shuttle-smoke.sh"]
async fn local_shuttle_run_gives_each_client_address_its_own_login_budget() {
    spend_login_budget(ALICE_AT, &[], 5).await;
    // Without a trusted proxy a client's own header is not believed.
    assert_eq!(
        failed_login(ALICE_AT, &[("X-Forwarded-For", "198.51.100.99")]).await,
        429
    );
    assert_eq!(
        failed_login(BOB_AT, &[]).await,
        401,
        "one client's spent budget is not another's"
    );
}

#[tokio::test]
#[ignore = "needs `cargo shuttle run` with TRUSTED_PROXIES = \"*\": scripts/shuttle-smoke.sh"]
async fn every_peer_a_proxy_refuses_a_request_the_proxy_names_no_client_for() {
    let response = http_from(ALICE_AT)
        .post(url("/api/login"))
        .json(&json!({"username": "nobody", "password": "wrong password"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "bad_request");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("X-Forwarded-For")),
        "{body}"
    );
}

#[tokio::test]
#[ignore = "needs `cargo shuttle run` with TRUSTED_PROXIES = \"*\": scripts/shuttle-smoke.sh"]
async fn every_peer_a_proxy_never_grants_metrics_to_a_forged_loopback_entry() {
    let metrics = |xff: &'static str| async move {
        http_from(ALICE_AT)
            .get(url("/metrics"))
            .header("X-Forwarded-For", xff)
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    };
    // The client wrote 127.0.0.1; the proxy appended the address it really came from.
    assert_eq!(metrics("127.0.0.1, 198.51.100.7").await, 401);
    assert_eq!(metrics("198.51.100.7").await, 401);
}

#[tokio::test]
#[ignore = "needs `cargo shuttle run` with TRUSTED_PROXIES = \"*\": scripts/shuttle-smoke.sh"]
async fn every_peer_a_proxy_budgets_the_client_the_proxy_names() {
    // Both requests come from one peer, as through one load balancer.
    spend_login_budget(ALICE_AT, &[("X-Forwarded-For", "198.51.100.7")], 5).await;
    assert_eq!(
        failed_login(
            ALICE_AT,
            &[("X-Forwarded-For", "198.51.100.8, 198.51.100.7")]
        )
        .await,
        429,
        "an entry the client wrote in front buys no fresh budget"
    );
    assert_eq!(
        failed_login(ALICE_AT, &[("X-Forwarded-For", "198.51.100.8")]).await,
        401,
        "another client behind the same proxy has its own budget"
    );
}
