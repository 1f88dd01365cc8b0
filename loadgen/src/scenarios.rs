//! The scenarios and their report.

mod big_room;
mod ingest;
mod light_load;
mod register;

use crate::client::{self, Sink, Stream, body, now_micros, scheduled_time, send_frame};
use crate::proc_stats::{ServicesCpu, rss_kib};
use crate::{Args, Arrivals, Protocol, Scenario};
use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use serde::Serialize;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::task::JoinSet;
use tokio::time::{Instant, sleep_until};
use tokio_tungstenite::tungstenite::Message;

/// Connections opened at once: enough to be quick, few enough not to flood the backlog.
const CONNECT_BATCH: usize = 250;
/// How long subscribers keep reading after the last message was sent.
const DRAIN: Duration = Duration::from_secs(3);

#[derive(Default)]
pub struct Report {
    server: String,
    scenario: String,
    params: String,
    sent: u64,
    expected: u64,
    delivered: u64,
    seconds: f64,
    cpu_seconds: Option<f64>,
    /// The wall-clock time `cpu_seconds` was measured over, where known (else 0).
    cpu_wall_seconds: f64,
    latency_ms: Option<[f64; 3]>,
    /// Scenario-specific figures: (label, value).
    extra: Vec<(&'static str, f64)>,
}

impl Report {
    fn per_second(&self) -> f64 {
        if self.seconds > 0.0 {
            self.delivered as f64 / self.seconds
        } else {
            0.0
        }
    }

    fn ratio(&self) -> f64 {
        if self.expected > 0 {
            100.0 * self.delivered as f64 / self.expected as f64
        } else {
            100.0
        }
    }

    /// How busy the server's core was: its CPU time over the wall-clock time.
    fn cpu_percent(&self) -> Option<f64> {
        let cpu = self.cpu_seconds?;
        (self.cpu_wall_seconds > 0.0).then(|| 100.0 * cpu / self.cpu_wall_seconds)
    }

    fn cpu_us_per_delivery(&self) -> Option<f64> {
        let cpu = self.cpu_seconds?;
        (self.delivered > 0).then(|| cpu * 1e6 / self.delivered as f64)
    }

    pub fn markdown_row(&self) -> String {
        let latency = self
            .latency_ms
            .map_or("–|–|–".to_owned(), |[p50, p99, p999]| {
                format!("{p50:.2}|{p99:.2}|{p999:.2}")
            });
        let cpu = self
            .cpu_us_per_delivery()
            .map_or("–".to_owned(), |us| format!("{us:.2}"));
        let extra = self
            .extra
            .iter()
            .map(|(label, value)| format!("{label} {value:.1}"))
            .collect::<Vec<_>>()
            .join(", ");
        format!(
            "| {} | {} | {} | {:.0} | {:.2} | {} | {} | {} |",
            self.server,
            self.scenario,
            self.params,
            self.per_second(),
            self.ratio(),
            latency.replace('|', " | "),
            cpu,
            extra
        )
    }

    pub fn json(&self) -> String {
        let line = JsonLine {
            server: &self.server,
            scenario: &self.scenario,
            params: &self.params,
            sent: self.sent,
            expected: self.expected,
            delivered: self.delivered,
            seconds: self.seconds,
            per_second: self.per_second(),
            delivered_percent: self.ratio(),
            server_cpu_seconds: self.cpu_seconds,
            server_cpu_us_per_delivery: self.cpu_us_per_delivery(),
            server_cpu_percent: self.cpu_percent(),
            latency_ms: self
                .latency_ms
                .map(|[p50, p99, p999]| Latency { p50, p99, p999 }),
            extra: (!self.extra.is_empty()).then_some(Extra(&self.extra)),
        };
        serde_json::to_string(&line).expect("a report serialises")
    }
}

/// A report as a JSON line: a struct rather than `json!`, whose objects sort their keys,
/// so the scenario-specific figures keep the order they are given in.
#[derive(Serialize)]
struct JsonLine<'a> {
    server: &'a str,
    scenario: &'a str,
    params: &'a str,
    sent: u64,
    expected: u64,
    delivered: u64,
    seconds: f64,
    per_second: f64,
    delivered_percent: f64,
    server_cpu_seconds: Option<f64>,
    server_cpu_us_per_delivery: Option<f64>,
    server_cpu_percent: Option<f64>,
    latency_ms: Option<Latency>,
    extra: Option<Extra<'a>>,
}

#[derive(Serialize)]
struct Latency {
    p50: f64,
    p99: f64,
    p999: f64,
}

/// The (label, value) figures as one JSON object, in their order.
struct Extra<'a>(&'a [(&'static str, f64)]);

impl Serialize for Extra<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_map(self.0.iter().map(|(label, value)| (label, value)))
    }
}

pub async fn run(args: &Args) -> Report {
    let mut report = match args.scenario.clone() {
        Scenario::Fanout {
            subscribers,
            rate,
            publishers,
            duration,
            body_bytes,
        } => {
            let load = Load {
                rooms: 1,
                subscribers,
                publishers,
                rate,
                arrivals: Arrivals::Even,
                duration,
                body_bytes,
            };
            let mut report = broadcast(args, &load).await;
            report.scenario = "fanout".into();
            report.params = format!("{subscribers} subs, {rate} msg/s");
            report
        }
        Scenario::Rooms {
            rooms,
            members,
            rate,
            duration,
        } => {
            let load = Load {
                rooms,
                subscribers: rooms * members,
                publishers: rooms,
                rate,
                arrivals: Arrivals::Even,
                duration,
                body_bytes: 64,
            };
            let mut report = broadcast(args, &load).await;
            report.scenario = "rooms".into();
            report.params = format!("{rooms} rooms × {members}, {rate} msg/s");
            report
        }
        Scenario::Ingest {
            connections,
            window,
            duration,
        } => ingest(args, connections, window, duration).await,
        Scenario::Idle { connections } => idle(args, connections).await,
        Scenario::BigRoom { members } => big_room::run(args, members).await,
        Scenario::RoomIngest {
            publishers,
            rate,
            window,
            duration,
            body_bytes,
        } => ingest::run(args, publishers, rate, window, duration, body_bytes).await,
        Scenario::LightLoad {
            members,
            rate,
            publishers,
            arrivals,
            duration,
        } => {
            let load = Load {
                rooms: 1,
                subscribers: members,
                publishers,
                rate,
                arrivals,
                duration,
                body_bytes: 64,
            };
            light_load::run(args, &load).await
        }
        Scenario::Register {
            accounts,
            concurrency,
            idle,
        } => register::run(args, accounts, concurrency, idle).await,
    };
    report.server = args.name.clone();
    report
}

/// Opens `count` connections (ids from `first`), room chosen by `room_of`.
async fn open_many(
    args: &Args,
    first: usize,
    count: usize,
    room_of: impl Fn(usize) -> String,
) -> Vec<(Sink, Stream, String)> {
    let mut connections = Vec::with_capacity(count);
    let args = Arc::new(args_clone(args));
    for batch_start in (0..count).step_by(CONNECT_BATCH) {
        let mut batch = JoinSet::new();
        for i in batch_start..(batch_start + CONNECT_BATCH).min(count) {
            let args = Arc::clone(&args);
            let room = room_of(i);
            batch.spawn(async move {
                let (sink, stream) = client::connect(&args, first + i, &room).await;
                (i, sink, stream, room)
            });
        }
        let mut opened: Vec<_> = batch.join_all().await;
        opened.sort_by_key(|(i, ..)| *i);
        connections.extend(
            opened
                .into_iter()
                .map(|(_, sink, stream, room)| (sink, stream, room)),
        );
        eprint!("\r  connected {}/{count}", connections.len());
    }
    eprintln!();
    connections
}

fn args_clone(args: &Args) -> Args {
    Args {
        url: args.url.clone(),
        protocol: args.protocol,
        name: args.name.clone(),
        jwt_secret: args.jwt_secret.clone(),
        server_pid: args.server_pid.clone(),
        services: args.services.clone(),
        json: None,
        scenario: args.scenario.clone(),
    }
}

fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 120_000_000, 3).expect("histogram bounds")
}

/// What [`broadcast`] sends: `publishers` connections send `rate` messages a second in
/// total for `duration` seconds into `rooms` rooms, spread in time as `arrivals` says;
/// `subscribers` connections (spread over the rooms) count what they receive.
struct Load {
    rooms: usize,
    subscribers: usize,
    publishers: usize,
    rate: u64,
    arrivals: Arrivals,
    duration: u64,
    body_bytes: usize,
}

/// The times, from the start, at which publisher `p` of `publishers` sends, for a total
/// of `rate` a second: evenly spaced and staggered inside one period, or a Poisson
/// process of `rate / publishers` (so all of them together are one of `rate`).
fn send_times(
    arrivals: Arrivals,
    p: usize,
    publishers: usize,
    rate: u64,
) -> impl Iterator<Item = Duration> {
    let period = Duration::from_secs_f64(publishers as f64 / rate as f64);
    let offset = period.mul_f64(p as f64 / publishers as f64);
    // A fixed seed per publisher: every run (and every server) gets the same schedule.
    let mut random = SplitMix64(0x5eed_0000 + p as u64);
    let mut at = Duration::ZERO;
    (0u64..).map(move |k| match arrivals {
        Arrivals::Even => offset + period.mul_f64(k as f64),
        Arrivals::Poisson => {
            // Exponential gaps of mean `period`, from a uniform draw in (0, 1].
            at += period.mul_f64(-random.unit().ln());
            at
        }
    })
}

/// A small, seedable pseudo-random generator (SplitMix64): enough for send times.
struct SplitMix64(u64);

impl SplitMix64 {
    /// Uniform in (0, 1].
    fn unit(&mut self) -> f64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        ((z >> 11) + 1) as f64 / (1u64 << 53) as f64
    }
}

/// Runs a [`Load`]: what was delivered, how late (from each send's scheduled time), and
/// the server's CPU time over the run.
async fn broadcast(args: &Args, load: &Load) -> Report {
    let &Load {
        rooms,
        subscribers,
        publishers,
        rate,
        arrivals,
        duration,
        body_bytes,
    } = load;
    let room_name = |r: usize| format!("bench-{r}");
    eprintln!(
        "{}: {subscribers} subscribers in {rooms} room(s), {publishers} publishers",
        args.name
    );
    let subs = open_many(args, 0, subscribers, |i| room_name(i % rooms)).await;
    let pubs = open_many(args, subscribers, publishers, |i| room_name(i % rooms)).await;

    let start = Instant::now() + Duration::from_millis(500);
    let stop_sending = start + Duration::from_secs(duration);
    let stop_reading = stop_sending + DRAIN;

    let mut readers = JoinSet::new();
    for (sink, mut stream, _) in subs {
        readers.spawn(async move {
            let _keep_open = sink;
            let mut histogram = new_histogram();
            let mut received = 0u64;
            loop {
                tokio::select! {
                    () = sleep_until(stop_reading) => break,
                    next = stream.next() => match next {
                        Some(Ok(Message::Text(text))) => {
                            if let Some(scheduled) = scheduled_time(&text) {
                                let late = now_micros().saturating_sub(scheduled).max(1);
                                let _ = histogram.record(late);
                                received += 1;
                            }
                        }
                        Some(Ok(_)) => {}
                        _ => break,
                    }
                }
            }
            (received, histogram)
        });
    }

    let sent = Arc::new(AtomicU64::new(0));
    let protocol = args.protocol;
    let cpu_before = args.server_cpu();
    let services = ServicesCpu::start(&args.services);
    let cpu_since = Instant::now();
    let start_micros = now_micros() + 500_000;
    let mut senders = JoinSet::new();
    for (p, (mut sink, mut stream, room)) in pubs.into_iter().enumerate() {
        let sent = Arc::clone(&sent);
        // Publishers read (and drop) what comes back, or the server would see slow consumers.
        tokio::spawn(async move { while let Some(Ok(_)) = stream.next().await {} });
        senders.spawn(async move {
            for at in send_times(arrivals, p, publishers, rate) {
                let due = start + at;
                if due >= stop_sending {
                    break;
                }
                sleep_until(due).await;
                let scheduled = start_micros + (due - start).as_micros() as u64;
                let frame = send_frame(protocol, &room, &body(scheduled, body_bytes), None);
                if sink.send(Message::text(frame)).await.is_err() {
                    break;
                }
                sent.fetch_add(1, Ordering::Relaxed);
            }
            sink
        });
    }
    let _sinks = senders.join_all().await;
    let cpu_after_send = args.server_cpu();
    let mut histogram = new_histogram();
    let mut delivered = 0;
    for (received, part) in readers.join_all().await {
        delivered += received;
        histogram.add(part).expect("merge histograms");
    }
    let cpu_after = args.server_cpu().or(cpu_after_send);
    let services_cpu = services.seconds();
    let cpu_wall_seconds = cpu_since.elapsed().as_secs_f64();
    let sent = sent.load(Ordering::Relaxed);
    let subscribers_per_room = subscribers / rooms;
    Report {
        sent,
        expected: sent * subscribers_per_room as u64,
        delivered,
        seconds: duration as f64,
        cpu_seconds: cpu_before.zip(cpu_after).map(|(a, b)| b - a),
        cpu_wall_seconds,
        latency_ms: (delivered > 0)
            .then(|| [0.5, 0.99, 0.999].map(|q| histogram.value_at_quantile(q) as f64 / 1000.0)),
        extra: services_extra(services_cpu, delivered),
        ..Report::default()
    }
}

/// The services' CPU per delivered (or acked) message, in µs, when they were measured.
fn services_extra(cpu_seconds: Option<f64>, count: u64) -> Vec<(&'static str, f64)> {
    match cpu_seconds {
        Some(cpu) if count > 0 => vec![
            ("services cpu µs/msg", cpu * 1e6 / count as f64),
            ("services cpu s", cpu),
        ],
        _ => Vec::new(),
    }
}

/// Each connection keeps `window` sends in flight to its own room and counts acks.
async fn ingest(args: &Args, connections: usize, window: usize, duration: u64) -> Report {
    assert_eq!(
        args.protocol,
        Protocol::Palisade,
        "ingest needs palisade's acks"
    );
    eprintln!(
        "{}: {connections} connections × {window} in flight",
        args.name
    );
    let conns = open_many(args, 0, connections, |i| format!("ingest-{i}")).await;
    let stop = Instant::now() + Duration::from_secs(duration);
    let cpu_before = args.server_cpu();
    let mut tasks = JoinSet::new();
    for (mut sink, mut stream, room) in conns {
        tasks.spawn(async move {
            let mut next_id = 0u64;
            let mut acked = 0u64;
            let mut histogram = new_histogram();
            let mut in_flight = std::collections::HashMap::new();
            for _ in 0..window {
                next_id += 1;
                in_flight.insert(next_id, now_micros());
                let frame = send_frame(Protocol::Palisade, &room, &body(now_micros(), 64), Some(next_id));
                if sink.send(Message::text(frame)).await.is_err() {
                    return (acked, histogram);
                }
            }
            loop {
                tokio::select! {
                    () = sleep_until(stop) => break,
                    next = stream.next() => match next {
                        Some(Ok(Message::Text(text))) if text.contains(r#""type":"ack""#) => {
                            acked += 1;
                            let id = text.split(r#""id":"#).nth(1).and_then(|rest| {
                                rest.split(|c: char| !c.is_ascii_digit()).next()?.parse::<u64>().ok()
                            });
                            if let Some(sent_at) = id.and_then(|id| in_flight.remove(&id)) {
                                let _ = histogram.record(now_micros().saturating_sub(sent_at).max(1));
                            }
                            next_id += 1;
                            in_flight.insert(next_id, now_micros());
                            let frame = send_frame(Protocol::Palisade, &room, &body(now_micros(), 64), Some(next_id));
                            if sink.send(Message::text(frame)).await.is_err() {
                                break;
                            }
                        }
                        Some(Ok(_)) => {}
                        _ => break,
                    }
                }
            }
            (acked, histogram)
        });
    }
    let mut acked = 0;
    let mut histogram = new_histogram();
    for (count, part) in tasks.join_all().await {
        acked += count;
        histogram.add(part).expect("merge histograms");
    }
    let cpu_after = args.server_cpu();
    Report {
        scenario: "ingest".into(),
        params: format!("{connections} conns × {window} in flight"),
        sent: acked,
        expected: acked,
        delivered: acked,
        seconds: duration as f64,
        cpu_seconds: cpu_before.zip(cpu_after).map(|(a, b)| b - a),
        latency_ms: (acked > 0)
            .then(|| [0.5, 0.99, 0.999].map(|q| histogram.value_at_quantile(q) as f64 / 1000.0)),
        ..Report::default()
    }
}

/// Opens `connections` joined connections and reads the server's memory per connection.
async fn idle(args: &Args, connections: usize) -> Report {
    let pid = args.the_server_pid().expect("idle needs --server-pid");
    let before = rss_kib(pid).unwrap_or(0);
    eprintln!(
        "{}: {connections} idle connections (server RSS {before} KiB before)",
        args.name
    );
    let conns = open_many(args, 0, connections, |i| format!("idle-{}", i % 100)).await;
    // Let the server settle what the joins allocated, then read.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = rss_kib(pid).unwrap_or(0);
    drop(conns);
    let per_connection = after.saturating_sub(before) as f64 / connections as f64;
    Report {
        scenario: "idle".into(),
        params: format!("{connections} joined conns"),
        extra: vec![("KiB/conn", per_connection)],
        ..Report::default()
    }
}
