//! `/metrics`: Prometheus text for loopback clients and admins only.

use crate::helpers::{now, sign, spawn_app_with};

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
        ("palisade_connections_pending", "gauge"),
        ("palisade_outbound_queued_bytes", "gauge"),
        ("palisade_handshake_rejections_total", "counter"),
        ("palisade_connections_refused_total", "counter"),
        ("palisade_closes_total", "counter"),
        ("palisade_frames_in_total", "counter"),
        ("palisade_frames_out_total", "counter"),
        ("palisade_deliveries_total", "counter"),
        ("palisade_rate_limited_total", "counter"),
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
    assert!(
        text.contains("palisade_closes_total{code=\"4008\"} 0"),
        "{text}"
    );
}
