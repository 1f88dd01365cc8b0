//! `/metrics`: Prometheus text for loopback clients and admins only.

use crate::helpers::{ServerProcess, now, sign, spawn_app_with};
use serde_json::json;

#[tokio::test]
async fn metrics_count_connections_rejections_frames_and_deliveries() {
    let app = spawn_app_with(|_| {}).await;
    let (mut alice, _) = app.join("alice", "general").await;
    alice.say("general", "counted").await;
    assert_eq!(app.refused("not-a-token").await.status, 401);
    let response = app.http.get(app.url("/metrics")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    let text = response.text().await.unwrap();
    for metric in [
        "palisade_connections_open",
        "palisade_handshake_rejections_total{reason=\"unauthorized\"}",
        "palisade_frames_in_total",
        "palisade_frames_out_total",
        "palisade_deliveries_total",
        "palisade_store_write_seconds_bucket",
        "palisade_store_batch_messages_bucket",
        "palisade_outbound_queued_bytes",
    ] {
        assert!(text.contains(metric), "{metric} missing from:\n{text}");
    }
}

#[tokio::test]
async fn metrics_need_an_admin_token_from_anywhere_but_loopback() {
    let app = spawn_app_with(|s| s.trusted_proxies = vec!["127.0.0.1".parse().unwrap()]).await;
    let from_afar = |token: Option<String>| {
        let request = app
            .http
            .get(app.url("/metrics"))
            .header("x-forwarded-for", "203.0.113.5");
        match token {
            Some(token) => request.bearer_auth(token),
            None => request,
        }
        .send()
    };
    assert_eq!(from_afar(None).await.unwrap().status(), 401);
    let user = sign(&serde_json::json!({"sub":"u","name":"u","iat":now(),"exp":now()+600}));
    assert_eq!(from_afar(Some(user)).await.unwrap().status(), 403);
    let admin =
        sign(&serde_json::json!({"sub":"a","name":"a","iat":now(),"exp":now()+600,"role":"admin"}));
    assert_eq!(from_afar(Some(admin)).await.unwrap().status(), 200);
}

#[tokio::test]
async fn the_first_scrape_of_a_fresh_server_lists_every_metric_with_help_and_type() {
    let server = crate::helpers::ServerProcess::start_fresh(&[]).await;
    let text = reqwest::get(format!("http://{}/metrics", server.addr))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for (metric, kind) in [
        ("palisade_connections_open", "gauge"),
        ("palisade_connections_max", "gauge"),
        ("palisade_connections_pending", "gauge"),
        ("palisade_connections_pending_max", "gauge"),
        ("palisade_ready", "gauge"),
        ("palisade_outbound_queued_bytes", "gauge"),
        ("palisade_handshake_rejections_total", "counter"),
        ("palisade_connections_refused_total", "counter"),
        ("palisade_closes_total", "counter"),
        ("palisade_frames_in_total", "counter"),
        ("palisade_frames_out_total", "counter"),
        ("palisade_deliveries_total", "counter"),
        ("palisade_rate_limited_total", "counter"),
        ("palisade_http_rate_limited_total", "counter"),
        ("palisade_auth_failures_total", "counter"),
        ("palisade_store_write_seconds", "histogram"),
        ("palisade_store_batch_messages", "histogram"),
        ("palisade_writer_batch_frames", "histogram"),
    ] {
        assert!(
            text.contains(&format!("# HELP {metric} ")),
            "no HELP for {metric}:\n{text}"
        );
        assert!(
            text.contains(&format!("# TYPE {metric} {kind}\n")),
            "no TYPE for {metric}:\n{text}"
        );
    }
    // Labelled counters start at zero for every value they can take, so alerts on a
    // rate of them work from the start.
    assert!(
        text.contains("palisade_handshake_rejections_total{reason=\"unauthorized\"} 0"),
        "{text}"
    );
    for zero in [
        "palisade_closes_total{code=\"4008\"} 0",
        "palisade_auth_failures_total{via=\"handshake\"} 0",
        "palisade_http_rate_limited_total{endpoint=\"login\",scope=\"global\"} 0",
    ] {
        assert!(text.contains(zero), "{zero} missing from:\n{text}");
    }
}

/// One scrape of a server process of its own, whose counters no other test moves.
async fn scrape(server: &ServerProcess) -> String {
    reqwest::get(format!("http://{}/metrics", server.addr))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// The value of the sample named exactly `series` (name and labels as rendered).
fn sample(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("no {series} in:\n{text}"))
        .parse()
        .unwrap()
}

#[tokio::test]
async fn the_caps_and_readiness_are_scraped_so_alerts_can_compare_against_them() {
    let server = ServerProcess::start_fresh(&[
        "--max-connections",
        "123",
        "--max-pending-connections",
        "77",
    ])
    .await;
    let text = scrape(&server).await;
    assert_eq!(sample(&text, "palisade_connections_max"), 123.0);
    assert_eq!(sample(&text, "palisade_connections_pending_max"), 77.0);
    assert_eq!(sample(&text, "palisade_ready"), 1.0);
}

#[tokio::test]
async fn refused_credentials_are_counted_by_door_and_out_of_date_tokens_are_not() {
    let server = ServerProcess::start_fresh(&[]).await;
    let http = reqwest::Client::new();
    let url = |path: &str| format!("http://{}{path}", server.addr);
    let tickets = |token: String| http.post(url("/api/tickets")).bearer_auth(token).send();
    let expired = sign(&json!({"sub":"id-a","name":"a","iat":now()-900,"exp":now()-600}));

    assert_eq!(tickets("forged".into()).await.unwrap().status(), 401);
    assert_eq!(tickets(expired.clone()).await.unwrap().status(), 401);
    for token in ["forged", &expired] {
        let refused =
            tokio_tungstenite::connect_async(format!("ws://{}/ws?token={token}", server.addr))
                .await;
        assert!(refused.is_err(), "the handshake with {token} was accepted");
    }
    let login = http
        .post(url("/api/login"))
        .json(&json!({"username": "nobody", "password": "not the password"}))
        .send()
        .await
        .unwrap();
    assert_eq!(login.status(), 401);

    let text = scrape(&server).await;
    for via in ["http", "handshake", "login"] {
        assert_eq!(
            sample(
                &text,
                &format!("palisade_auth_failures_total{{via=\"{via}\"}}")
            ),
            1.0,
            "{via}"
        );
    }
}

#[tokio::test]
async fn http_requests_refused_for_rate_are_counted_by_endpoint_and_budget() {
    let server = ServerProcess::start_fresh(&["--auth-burst", "1", "--auth-per-minute", "1"]).await;
    let http = reqwest::Client::new();
    let mut statuses = Vec::new();
    for _ in 0..2 {
        let answer = http
            .post(format!("http://{}/api/register", server.addr))
            .json(&json!({"username": "x", "password": "y"}))
            .send()
            .await
            .unwrap();
        statuses.push(answer.status().as_u16());
    }
    assert_eq!(statuses[1], 429, "{statuses:?}");
    let text = scrape(&server).await;
    let series = "palisade_http_rate_limited_total{endpoint=\"register\",scope=\"ip\"}";
    assert_eq!(sample(&text, series), 1.0);
}
