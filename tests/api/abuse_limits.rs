//! Floods from outside: password hashing stays bounded in memory and concurrency, the
//! server-wide login budget holds across addresses, failed handshakes are rate limited
//! and their log lines throttled, IPv6 clients are counted per /64, and a client whose
//! address is unknown is never taken for loopback.

use crate::helpers::{Client, ServerProcess, TestApp, WAIT, bearer, now, sign, spawn_app_with};
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::net::IpAddr;
use std::time::Duration;
use tokio_tungstenite::MaybeTlsStream;
use tokio_tungstenite::tungstenite::Error as WsError;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

/// An HTTP client whose connections leave from `127.0.0.<last>`.
fn http_from(last: u8) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(IpAddr::from([127, 0, 0, last]))
        .build()
        .unwrap()
}

async fn post_login(http: &reqwest::Client, base: &str, username: &str) -> reqwest::Response {
    http.post(format!("{base}/api/login"))
        .json(&json!({"username": username, "password": "not-the-password"}))
        .send()
        .await
        .unwrap()
}

/// Resident memory of a process, in MiB.
fn rss_mib(pid: u32) -> f64 {
    crate::helpers::rss_kib(pid) as f64 / 1024.0
}

#[tokio::test]
async fn forty_concurrent_failed_logins_from_four_addresses_raise_memory_little_and_give_it_back() {
    // Two hashing slots whatever the machine; a long wait so every login is hashed.
    let server =
        ServerProcess::start_fresh(&["--hash-concurrency", "2", "--hash-wait-ms", "60000"]).await;
    let pid = server.child.id().unwrap();
    let base = format!("http://{}", server.addr);
    // The baseline is a fresh server that has hashed nothing yet: whatever hashing
    // keeps afterwards, bounded or not, counts against the budget. The registration's
    // hash frees its buffer before the flood, and with glibc a freed 19 MiB block raises
    // the mmap threshold (see `auth::passwords`): the flood runs in that harder case.
    let baseline = rss_mib(pid);
    let warm = http_from(5);
    let registered = warm
        .post(format!("{base}/api/register"))
        .json(&json!({"username": "alice", "password": "correct-horse-1"}))
        .send()
        .await
        .unwrap();
    assert_eq!(registered.status(), StatusCode::CREATED);

    let clients: Vec<reqwest::Client> = (1..=4).map(http_from).collect();
    let logins = (0..40).map(|i| {
        let (http, base) = (&clients[i % 4], &base);
        let name = if i % 2 == 0 { "alice" } else { "mallory" };
        async move { post_login(http, base, name).await.status() }
    });
    let flood = futures_util::future::join_all(logins);
    tokio::pin!(flood);
    let mut peak = baseline;
    let mut sample = tokio::time::interval(Duration::from_millis(5));
    let statuses = loop {
        tokio::select! {
            statuses = &mut flood => break statuses,
            _ = sample.tick() => peak = peak.max(rss_mib(pid)),
        }
    };
    peak = peak.max(rss_mib(pid));
    assert!(
        statuses.iter().all(|s| *s == StatusCode::UNAUTHORIZED),
        "{statuses:?}"
    );

    // Freed memory may go back to the system a little later (an allocator can return it
    // in the background): wait for it, up to `WAIT`.
    let flood_done = std::time::Instant::now();
    let settled = tokio::time::timeout(WAIT, async {
        loop {
            if rss_mib(pid) - baseline <= 20.0 {
                return;
            }
            sample.tick().await;
        }
    })
    .await;
    let after = rss_mib(pid);
    eprintln!(
        "RSS: fresh baseline {baseline:.1} MiB, peak {peak:.1} MiB, after {after:.1} MiB \
         ({:.1} s after the flood)",
        flood_done.elapsed().as_secs_f64()
    );
    assert!(
        peak - baseline < 100.0,
        "RSS rose from {baseline:.1} to {peak:.1} MiB"
    );
    assert!(
        settled.is_ok(),
        "RSS stayed at {after:.1} MiB after the flood (baseline {baseline:.1})"
    );
}

#[tokio::test]
async fn logins_that_find_every_hashing_slot_taken_get_503_with_retry_after() {
    let app = spawn_app_with(|s| {
        s.limits.hash_concurrency = 1;
        s.limits.hash_wait_ms = 0;
    })
    .await;
    let logins = (0..20).map(|_| app.login("nobody", "not-the-password"));
    let responses = futures_util::future::join_all(logins).await;
    let mut busy = 0;
    for response in responses {
        match response.status() {
            StatusCode::UNAUTHORIZED => {}
            StatusCode::SERVICE_UNAVAILABLE => {
                busy += 1;
                assert!(response.headers().contains_key("retry-after"));
                let body: Value = response.json().await.unwrap();
                assert_eq!(body["error"]["code"], "unavailable", "{body}");
            }
            other => panic!("unexpected {other}"),
        }
    }
    assert!(
        busy > 0,
        "twenty logins at once never found the one slot taken"
    );
}

#[tokio::test]
async fn the_server_wide_login_budget_refuses_across_different_addresses() {
    let app = spawn_app_with(|s| {
        s.limits.auth_global_per_minute = 1;
        s.limits.auth_global_burst = 3;
    })
    .await;
    let base = format!("http://{}", app.addr);
    for last in 1..=3 {
        let response = post_login(&http_from(last), &base, "nobody").await;
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    }
    let refused = post_login(&http_from(4), &base, "nobody").await;
    assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(refused.headers().contains_key("retry-after"));
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body["error"]["code"], "rate_limited", "{body}");
}

/// A login sent through a trusted proxy on 127.0.0.1 with this `X-Forwarded-For`.
async fn login_via_proxy(app: &TestApp, forwarded_for: Option<&str>) -> reqwest::Response {
    let request = app
        .http
        .post(app.url("/api/login"))
        .json(&json!({"username": "nobody", "password": "not-the-password"}));
    match forwarded_for {
        Some(xff) => request.header("x-forwarded-for", xff),
        None => request,
    }
    .send()
    .await
    .unwrap()
}

#[tokio::test]
async fn ipv6_clients_in_one_slash_64_share_a_login_budget() {
    let app = spawn_app_with(|s| {
        s.trusted_proxies = vec!["127.0.0.1".parse().unwrap()];
        s.limits.auth_per_minute = 1;
        s.limits.auth_burst = 2;
    })
    .await;
    for client in ["2001:db8:1:2::1", "2001:db8:1:2:ffff::2"] {
        let response = login_via_proxy(&app, Some(client)).await;
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{client}");
    }
    let third = login_via_proxy(&app, Some("2001:db8:1:2:abcd::3")).await;
    assert_eq!(third.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(third.headers().contains_key("retry-after"));
    let next_network = login_via_proxy(&app, Some("2001:db8:1:3::1")).await;
    assert_eq!(next_network.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn ipv6_clients_in_one_slash_64_share_the_per_ip_connection_cap() {
    let app = spawn_app_with(|s| {
        s.trusted_proxies = vec!["127.0.0.1".parse().unwrap()];
        s.limits.max_connections_per_ip = 2;
    })
    .await;
    let via = |client: &str, user: &str| {
        vec![
            bearer(&app.token(user)),
            ("x-forwarded-for", client.to_owned()),
        ]
    };
    let _a = app.try_connect(&via("2001:db8::1", "a"), "").await.unwrap();
    let _b = app.try_connect(&via("2001:db8::2", "b"), "").await.unwrap();
    let refused = app
        .try_connect(&via("2001:db8::3", "c"), "")
        .await
        .err()
        .expect("a third connection from the /64 is refused");
    assert_eq!(refused.status, 429);
    assert_eq!(refused.code(), "too_many_connections");
    assert!(
        app.try_connect(&via("2001:db8:0:1::1", "d"), "")
            .await
            .is_ok()
    );
}

#[tokio::test]
async fn a_trusted_proxy_that_names_no_client_gets_no_loopback_metrics_and_is_refused() {
    let app = spawn_app_with(|s| s.trusted_proxies = vec!["127.0.0.1".parse().unwrap()]).await;
    for xff in [None, Some("garbage"), Some("")] {
        let mut request = app.http.get(app.url("/metrics"));
        if let Some(xff) = xff {
            request = request.header("x-forwarded-for", xff);
        }
        let metrics = request.send().await.unwrap();
        assert_eq!(metrics.status(), StatusCode::UNAUTHORIZED, "{xff:?}");

        let login = login_via_proxy(&app, xff).await;
        assert_eq!(login.status(), StatusCode::BAD_REQUEST, "{xff:?}");
        let body: Value = login.json().await.unwrap();
        assert_eq!(body["error"]["code"], "bad_request", "{body}");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.contains("X-Forwarded-For"), "{message}");
    }
    let admin = sign(&json!({"sub":"a","name":"a","iat":now(),"exp":now()+600,"role":"admin"}));
    let scraped = app
        .http
        .get(app.url("/metrics"))
        .bearer_auth(admin)
        .send()
        .await
        .unwrap();
    assert_eq!(scraped.status(), StatusCode::OK);
}

#[tokio::test]
async fn clients_a_trusted_proxy_leaves_unknown_spend_no_loopback_budget() {
    let app = spawn_app_with(|s| {
        s.trusted_proxies = vec!["127.0.0.1".parse().unwrap()];
        s.limits.auth_per_minute = 1;
        s.limits.auth_burst = 1;
    })
    .await;
    for _ in 0..3 {
        login_via_proxy(&app, None).await;
    }
    // A real local client behind the same proxy still has its whole budget.
    let local = login_via_proxy(&app, Some("127.0.0.1")).await;
    assert_eq!(local.status(), StatusCode::UNAUTHORIZED);
}

/// A WebSocket handshake from `127.0.0.<last>` to `addr` with this query string: the
/// client, or the refusal's status and `Retry-After`.
async fn handshake_from(
    last: u8,
    addr: std::net::SocketAddr,
    query: &str,
) -> Result<Client, (u16, Option<String>)> {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket
        .bind((IpAddr::from([127, 0, 0, last]), 0).into())
        .unwrap();
    let tcp = socket.connect(addr).await.unwrap();
    let request = format!("ws://{addr}/ws{query}")
        .into_client_request()
        .unwrap();
    let handshake = tokio_tungstenite::client_async(request, MaybeTlsStream::Plain(tcp));
    match tokio::time::timeout(WAIT, handshake)
        .await
        .expect("answered in time")
    {
        Ok((stream, _)) => Ok(Client { stream }),
        Err(WsError::Http(response)) => Err((
            response.status().as_u16(),
            response
                .headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned),
        )),
        Err(other) => panic!("handshake failed oddly: {other}"),
    }
}

fn token_for(name: &str) -> String {
    sign(&json!({"sub": format!("id-{name}"), "name": name, "iat": now(), "exp": now() + 900}))
}

#[tokio::test]
async fn a_flood_of_bad_token_handshakes_turns_into_429_and_a_few_log_lines_while_others_connect() {
    let server = ServerProcess::start_fresh(&[
        "--handshake-failure-burst",
        "5",
        "--handshake-failures-per-minute",
        "1",
        "--security-log-burst",
        "3",
        "--security-log-window-secs",
        "1",
    ])
    .await;
    let started = std::time::Instant::now();
    let mut statuses = Vec::new();
    for _ in 0..300 {
        match handshake_from(1, server.addr, "?token=not-a-token").await {
            Ok(_) => panic!("a bad token was accepted"),
            Err((status, retry_after)) => {
                if status == 429 {
                    let secs: u64 = retry_after.expect("Retry-After").parse().unwrap();
                    assert!(secs >= 1, "{secs}");
                }
                statuses.push(status);
            }
        }
    }
    assert_eq!(statuses[..5], [401; 5]);
    assert!(statuses[5..].iter().all(|s| *s == 429), "{statuses:?}");

    let mut other = handshake_from(2, server.addr, &format!("?token={}", token_for("bob")))
        .await
        .unwrap_or_else(|refusal| panic!("another address was refused: {refusal:?}"));
    assert_eq!(other.recv().await["type"], "welcome");

    let summary = server
        .wait_for_log(|line| line.contains("more like this from 127.0.0.1"))
        .await;
    assert!(summary.contains("handshake_rejected"), "{summary}");
    let windows = started.elapsed().as_secs() + 2;
    let written = server
        .log_text()
        .lines()
        .filter(|line| line.contains("event=\"handshake_rejected\"") && line.contains("127.0.0.1"))
        .count() as u64;
    assert!(
        written <= 3 * windows && written < 50,
        "{written} lines for 300 refusals in {windows} windows"
    );
}

#[tokio::test]
async fn good_credentials_spend_no_failure_budget_and_are_let_in_after_it_is_spent() {
    let app = spawn_app_with(|s| {
        s.limits.handshake_failure_burst = 2;
        s.limits.handshake_failures_per_minute = 1;
    })
    .await;
    let mut open = Vec::new();
    for n in 0..8 {
        open.push(app.connect(&format!("user{n}")).await);
    }
    for _ in 0..2 {
        assert_eq!(app.refused("not-a-token").await.status, 401);
    }
    let spent = app.refused("not-a-token").await;
    assert_eq!(spent.status, 429);
    assert_eq!(spent.code(), "rate_limited");
    assert!(spent.retry_after.is_some());
    // The same address with good credentials still gets in...
    open.push(app.connect("late").await);
    // ...and an expired token is still told to get a new one, not to wait.
    let expired = sign(&json!({"sub":"id-x","name":"x","iat":now()-100,"exp":now()-10}));
    assert_eq!(app.refused(&expired).await.status, 401);
}
