//! Prometheus metrics: what an operator graphs and alerts on.
//!
//! One process-wide recorder (the `metrics` facade), rendered at `GET /metrics`. Hot
//! paths count in bulk (a dispatch adds its number of deliveries once, a writer batch
//! its frames once) so measuring costs little next to the work it measures.

use metrics::{Counter, Histogram, counter, gauge, histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use std::sync::{LazyLock, OnceLock};
use std::time::Duration;

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Installs the recorder on first use; `None` if an embedder installed its own.
pub(crate) fn handle() -> Option<&'static PrometheusHandle> {
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets_for_metric(
                    Matcher::Full("palisade_store_write_seconds".to_owned()),
                    &[
                        0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
                    ],
                )
                .ok()?
                .set_buckets_for_metric(
                    Matcher::Full("palisade_store_batch_messages".to_owned()),
                    &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0],
                )
                .ok()?
                .set_buckets_for_metric(
                    Matcher::Full("palisade_writer_batch_frames".to_owned()),
                    &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0],
                )
                .ok()?
                .build_recorder();
            let handle = recorder.handle();
            metrics::set_global_recorder(recorder).ok()?;
            describe_all();
            Some(handle)
        })
        .as_ref()
}

/// Why a handshake may be refused: the `code` of its HTTP error.
const HANDSHAKE_REJECTIONS: [&str; 5] = [
    "origin_forbidden",
    "unavailable",
    "unauthorized",
    "rate_limited",
    "too_many_connections",
];

/// The doors a credential comes through: a bearer token on the HTTP API, a token or
/// ticket on the WebSocket handshake, a password at `POST /api/login`.
const AUTH_FAILURE_DOORS: [&str; 3] = ["http", "handshake", "login"];

/// The per-IP (`ip`) and server-wide (`global`) budgets of the HTTP API, by endpoint:
/// every pair `http::per_ip_rate` and `http::global_rate` are called with.
const HTTP_RATE_LIMITS: [(&str, &str); 6] = [
    ("register", "ip"),
    ("register", "global"),
    ("login", "ip"),
    ("login", "global"),
    ("token", "ip"),
    ("tickets", "ip"),
];

/// Gives every metric its HELP and TYPE line and a zero value at start, so the first
/// scrape lists them all and a rate or an alert on one works before it ever moved.
fn describe_all() {
    use metrics::{describe_counter, describe_gauge, describe_histogram};
    describe_gauge!("palisade_connections_open", "Open WebSocket sessions.");
    gauge!("palisade_connections_open").set(0.0);
    describe_gauge!(
        "palisade_connections_max",
        "The cap on open WebSocket sessions (--max-connections): open / max is how full the node is."
    );
    describe_gauge!(
        "palisade_connections_pending_max",
        "The cap on connections not upgraded to a WebSocket (--max-pending-connections)."
    );
    describe_gauge!(
        "palisade_ready",
        "1 when /readyz would answer 200 (store answers and writes, broker answers, not draining), else 0."
    );
    describe_gauge!(
        "palisade_connections_pending",
        "Accepted connections that have not upgraded to a WebSocket (capped per IP and in total)."
    );
    gauge!("palisade_connections_pending").set(0.0);
    describe_gauge!(
        "palisade_outbound_queued_bytes",
        "Bytes waiting in every connection's outbound queue together (bounded by --outbound-total-bytes)."
    );
    gauge!("palisade_outbound_queued_bytes").set(0.0);
    describe_counter!(
        "palisade_handshake_rejections_total",
        "WebSocket handshakes refused, by the code of the answer."
    );
    for reason in HANDSHAKE_REJECTIONS {
        counter!("palisade_handshake_rejections_total", "reason" => reason).absolute(0);
    }
    describe_counter!(
        "palisade_connections_refused_total",
        "Connections closed at accept because a pending-connection cap was reached."
    );
    for reason in crate::server::pending::PendingRejection::ALL {
        counter!("palisade_connections_refused_total", "reason" => reason.as_str()).absolute(0);
    }
    describe_counter!(
        "palisade_auth_failures_total",
        "Credentials refused, by door (http, handshake, login); out-of-date tokens, which good clients hold after a sleep, are not counted."
    );
    for via in AUTH_FAILURE_DOORS {
        counter!("palisade_auth_failures_total", "via" => via).absolute(0);
    }
    describe_counter!(
        "palisade_http_rate_limited_total",
        "HTTP API requests refused 429 for want of rate budget, by endpoint and budget (ip or global)."
    );
    for (endpoint, scope) in HTTP_RATE_LIMITS {
        counter!("palisade_http_rate_limited_total", "endpoint" => endpoint, "scope" => scope)
            .absolute(0);
    }
    describe_counter!(
        "palisade_closes_total",
        "WebSocket sessions closed, by close code."
    );
    for code in crate::ws::close::CloseCode::ALL {
        counter!("palisade_closes_total", "code" => code.code().to_string()).absolute(0);
    }
    for (name, help) in [
        ("palisade_frames_in_total", "Client frames received."),
        ("palisade_frames_out_total", "Frames written to clients."),
        (
            "palisade_deliveries_total",
            "Frames queued for room members (one per member per event).",
        ),
        (
            "palisade_rate_limited_total",
            "Client frames refused for want of rate budget.",
        ),
    ] {
        describe_counter!(name, help);
        counter!(name).absolute(0);
    }
    describe_histogram!(
        "palisade_store_write_seconds",
        metrics::Unit::Seconds,
        "Time to store a message durably (the group commit it was part of)."
    );
    let _registered = histogram!("palisade_store_write_seconds");
    describe_histogram!(
        "palisade_store_batch_messages",
        "Messages committed in one transaction (sharing one fsync) by the group commit."
    );
    let _registered = histogram!("palisade_store_batch_messages");
    describe_histogram!(
        "palisade_writer_batch_frames",
        "Frames a connection's writer took from its queue in one batch."
    );
    let _registered = histogram!("palisade_writer_batch_frames");
}

/// Keeps histograms drained; run once per process.
pub(crate) async fn upkeep() {
    let Some(handle) = handle() else { return };
    let mut tick = tokio::time::interval(Duration::from_secs(5));
    loop {
        tick.tick().await;
        handle.run_upkeep();
    }
}

pub(crate) fn render() -> String {
    handle().map(PrometheusHandle::render).unwrap_or_default()
}

pub(crate) fn handshake_rejected(reason: impl Into<std::borrow::Cow<'static, str>>) {
    counter!("palisade_handshake_rejections_total", "reason" => reason.into()).increment(1);
}

/// Refused credentials through `via`, one of [`AUTH_FAILURE_DOORS`].
pub(crate) fn auth_failed(via: &'static str) {
    counter!("palisade_auth_failures_total", "via" => via).increment(1);
}

/// An HTTP request refused for want of the `scope` budget (`ip` or `global`) of `endpoint`.
pub(crate) fn http_rate_limited(endpoint: &'static str, scope: &'static str) {
    counter!("palisade_http_rate_limited_total", "endpoint" => endpoint, "scope" => scope)
        .increment(1);
}

/// The node's connection caps, so "near the cap" is a ratio in PromQL. Set at each
/// scrape, from the settings of the server being scraped.
pub(crate) fn caps(max_connections: usize, max_pending_connections: usize) {
    gauge!("palisade_connections_max").set(max_connections as f64);
    gauge!("palisade_connections_pending_max").set(max_pending_connections as f64);
}

/// Whether `/readyz` would answer 200, decided the same way at each scrape.
pub(crate) fn ready(ready: bool) {
    gauge!("palisade_ready").set(if ready { 1.0 } else { 0.0 });
}

pub(crate) fn connection_opened() {
    gauge!("palisade_connections_open").increment(1.0);
}

pub(crate) fn connection_closed(code: u16) {
    gauge!("palisade_connections_open").decrement(1.0);
    counter!("palisade_closes_total", "code" => code.to_string()).increment(1);
}

pub(crate) fn frame_in() {
    counter!("palisade_frames_in_total").increment(1);
}

/// Handles of the per-frame metrics, looked up once instead of on every frame.
struct HotPath {
    frames_out: Counter,
    batch_frames: Histogram,
    deliveries: Counter,
}

static HOT_PATH: LazyLock<HotPath> = LazyLock::new(|| HotPath {
    frames_out: counter!("palisade_frames_out_total"),
    batch_frames: histogram!("palisade_writer_batch_frames"),
    deliveries: counter!("palisade_deliveries_total"),
});

pub(crate) fn frames_out(frames: usize) {
    HOT_PATH.frames_out.increment(frames as u64);
    if frames > 1 {
        // Single frames are the common case and cost a histogram sample each: count only
        // the batches that show the writer catching up.
        HOT_PATH.batch_frames.record(frames as f64);
    }
}

pub(crate) fn deliveries(count: usize) {
    HOT_PATH.deliveries.increment(count as u64);
}

pub(crate) fn rate_limited() {
    counter!("palisade_rate_limited_total").increment(1);
}

pub(crate) fn store_write(elapsed: Duration) {
    histogram!("palisade_store_write_seconds").record(elapsed.as_secs_f64());
}

/// One committed batch: how many appends shared its fsync (one sample per commit).
pub(crate) fn store_batch(messages: usize) {
    histogram!("palisade_store_batch_messages").record(messages as f64);
}

/// A connection closed at accept because too many HTTP connections (not upgraded) were open.
pub(crate) fn connection_refused(reason: &'static str) {
    counter!("palisade_connections_refused_total", "reason" => reason).increment(1);
}

/// Bytes waiting in all outbound queues, against `--outbound-total-bytes`: read when
/// `/metrics` is rendered rather than kept up to date on every frame.
pub(crate) fn outbound_queued(bytes: usize) {
    gauge!("palisade_outbound_queued_bytes").set(bytes as f64);
}

/// HTTP connections open: accepted and not upgraded, idle keep-alive ones included.
pub(crate) fn pending_connections(change: f64) {
    gauge!("palisade_connections_pending").increment(change);
}
