//! `room-ingest`: P publishers joined to ONE room send acked, durable messages; how many
//! acks a second and how late.
//!
//! Open loop (`--rate R`): the publishers together send R messages a second on a fixed
//! schedule, whatever the acks do, and latency runs from each send's *scheduled* time to
//! its ack. Closed loop (`--rate 0`): each publisher keeps `--window` sends unacked and
//! sends the next one as each ack (or error) comes back, which finds the highest rate the
//! room takes. Every send carries an id and a nonce; its body is `--body-bytes` long.
//!
//! After the sending stops, publishers keep reading for at most [`DRAIN`] until their
//! last send is answered. The rate is acks over the time from the first send to the last
//! ack, so a server that falls behind is not credited for acks it had not yet given.
//! Publishers are members of the room, so each also reads every message of the others.

use super::{Report, new_histogram, open_many, services_extra};
use crate::client::{body, now_micros};
use crate::proc_stats::ServicesCpu;
use crate::{Args, Protocol};
use futures_util::{SinkExt, StreamExt};
use std::collections::{BTreeMap, HashMap};
use std::time::Duration;
use tokio::task::JoinSet;
use tokio::time::{Instant, sleep_until};
use tokio_tungstenite::tungstenite::Message;

/// How long publishers wait for the acks of their last sends.
const DRAIN: Duration = Duration::from_secs(10);
const ROOM: &str = "ingest-room";

/// What one publisher saw.
struct Tally {
    sent: u64,
    acked: u64,
    errors: BTreeMap<String, u64>,
    last_ack: Option<Instant>,
    histogram: hdrhistogram::Histogram<u64>,
}

/// The number after `"key":` in a frame, without a full JSON parse.
fn number_after(text: &str, key: &str) -> Option<u64> {
    let rest = text.split(key).nth(1)?;
    rest.split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()
}

fn code_of(text: &str) -> String {
    text.split(r#""code":""#)
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .unwrap_or("unknown")
        .to_owned()
}

pub async fn run(
    args: &Args,
    publishers: usize,
    rate: u64,
    window: usize,
    duration: u64,
    body_bytes: usize,
) -> Report {
    assert_eq!(
        args.protocol,
        Protocol::Palisade,
        "room-ingest needs palisade's acks"
    );
    let mode = if rate > 0 {
        format!("{rate} msg/s open loop")
    } else {
        format!("closed loop, {window} in flight each")
    };
    eprintln!("{}: {publishers} publishers in one room, {mode}", args.name);
    let pubs = open_many(args, 0, publishers, |_| ROOM.to_owned()).await;
    let start = Instant::now() + Duration::from_millis(500);
    let start_micros = now_micros() + 500_000;
    let stop_sending = start + Duration::from_secs(duration);
    let give_up = stop_sending + DRAIN;
    let run_id = start_micros % 1_000_000_000;
    let cpu_before = args.server_cpu();
    let services = ServicesCpu::start(&args.services);
    let mut tasks = JoinSet::new();
    for (p, (mut sink, mut stream, _)) in pubs.into_iter().enumerate() {
        tasks.spawn(async move {
            let period =
                (rate > 0).then(|| Duration::from_secs_f64(publishers as f64 / rate as f64));
            let offset = period.map_or(Duration::ZERO, |period| {
                period.mul_f64(p as f64 / publishers as f64)
            });
            let mut tally = Tally {
                sent: 0,
                acked: 0,
                errors: BTreeMap::new(),
                last_ack: None,
                histogram: new_histogram(),
            };
            // id -> the send's scheduled time (µs since the epoch).
            let mut in_flight: HashMap<u64, u64> = HashMap::new();
            let mut credit = if rate > 0 { 0 } else { window };
            sleep_until(start).await;
            loop {
                let due = period.map_or(start, |period| {
                    start + offset + period.mul_f64(tally.sent as f64)
                });
                let sending = Instant::now() < stop_sending && due < stop_sending;
                if !sending && in_flight.is_empty() {
                    break;
                }
                if sending && (credit > 0 || period.is_some() && Instant::now() >= due) {
                    let scheduled = match period {
                        Some(_) => start_micros + (due - start).as_micros() as u64,
                        None => now_micros(),
                    };
                    let id = tally.sent + 1;
                    let frame = serde_json::json!({
                        "type": "send", "id": id, "room": ROOM,
                        "body": body(scheduled, body_bytes),
                        "nonce": format!("{run_id}-{p}-{id}"),
                    })
                    .to_string();
                    if sink.send(Message::text(frame)).await.is_err() {
                        *tally.errors.entry("closed".into()).or_default() += 1;
                        break;
                    }
                    tally.sent = id;
                    in_flight.insert(id, scheduled);
                    credit = credit.saturating_sub(1);
                    continue;
                }
                let wake = if sending && period.is_some() {
                    due
                } else {
                    give_up
                };
                let next = tokio::select! {
                    () = sleep_until(wake) => {
                        if wake == give_up {
                            break;
                        }
                        continue;
                    }
                    next = stream.next() => next,
                };
                let text = match next {
                    Some(Ok(Message::Text(text))) => text,
                    Some(Ok(_)) => continue,
                    _ => {
                        *tally.errors.entry("closed".into()).or_default() += 1;
                        break;
                    }
                };
                let answered = if text.contains(r#""type":"ack""#) {
                    let sent_at =
                        number_after(&text, r#""id":"#).and_then(|id| in_flight.remove(&id));
                    if let Some(sent_at) = sent_at {
                        tally.acked += 1;
                        tally.last_ack = Some(Instant::now());
                        let _ = tally
                            .histogram
                            .record(now_micros().saturating_sub(sent_at).max(1));
                    }
                    true
                } else if text.contains(r#""type":"error""#) {
                    if let Some(id) = number_after(&text, r#""id":"#) {
                        in_flight.remove(&id);
                    }
                    *tally.errors.entry(code_of(&text)).or_default() += 1;
                    true
                } else {
                    false
                };
                if answered && period.is_none() {
                    credit += 1;
                }
            }
            let lost = in_flight.len() as u64;
            if lost > 0 {
                *tally.errors.entry("no answer".into()).or_default() += lost;
            }
            (tally, sink, stream)
        });
    }
    let mut histogram = new_histogram();
    let (mut sent, mut acked) = (0, 0);
    let mut errors: BTreeMap<String, u64> = BTreeMap::new();
    let mut last_ack = start;
    let mut connections = Vec::new();
    for (tally, sink, stream) in tasks.join_all().await {
        sent += tally.sent;
        acked += tally.acked;
        for (code, count) in tally.errors {
            *errors.entry(code).or_default() += count;
        }
        last_ack = last_ack.max(tally.last_ack.unwrap_or(start));
        histogram.add(tally.histogram).expect("merge histograms");
        connections.push((sink, stream));
    }
    let cpu_after = args.server_cpu();
    let services_cpu = services.seconds();
    drop(connections);
    let seconds = (last_ack - start).as_secs_f64();
    let error_count: u64 = errors.values().sum();
    let ms = |q: f64| histogram.value_at_quantile(q) as f64 / 1000.0;
    eprintln!(
        "  sent {sent}, acked {acked} in {seconds:.2} s = {:.0}/s; ack p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms; errors {errors:?}",
        acked as f64 / seconds.max(f64::MIN_POSITIVE),
        ms(0.5),
        ms(0.99),
        histogram.max() as f64 / 1000.0,
    );
    Report {
        scenario: "room-ingest".into(),
        params: format!("1 room, {publishers} pubs, {mode}"),
        sent,
        expected: sent,
        delivered: acked,
        seconds,
        cpu_seconds: cpu_before.zip(cpu_after).map(|(a, b)| b - a),
        latency_ms: (acked > 0).then(|| [ms(0.5), ms(0.99), ms(0.999)]),
        extra: [
            vec![
                ("max ms", histogram.max() as f64 / 1000.0),
                ("errors", error_count as f64),
            ],
            services_extra(services_cpu, acked),
        ]
        .concat(),
        ..Report::default()
    }
}
